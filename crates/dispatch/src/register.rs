//! `POST /agent/v1/register`: an agent trades an activation id and code for an
//! instance id and a token.

use crate::Dispatcher;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oca_domain::ids;
use oca_domain::time::now_millis;
use oca_proto::{RegisterError, RegisterRequest, RegisterResponse};
use oca_store::{InstanceRecord, StoreError};
use std::sync::Arc;

/// SHA-256 hex, for activation codes and agent tokens (both long random secrets).
pub fn digest(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two digests without an early exit.
pub fn digests_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(RegisterError {
            code: code.to_string(),
            message: message.to_string(),
        }),
    )
        .into_response()
}

pub async fn register(
    State(d): State<Arc<Dispatcher>>,
    Json(req): Json<RegisterRequest>,
) -> Response {
    let activation = match d.store.get_activation(&req.activation_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "InvalidActivation",
                "the activation id or code is not valid",
            )
        }
        Err(e) => {
            tracing::error!("register: {e}");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "storage error",
            );
        }
    };
    if !digests_equal(&activation.code_hash, &digest(&req.activation_code)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "InvalidActivation",
            "the activation id or code is not valid",
        );
    }
    let token = ids::new_secret(48);
    let now = now_millis();
    let name = if activation.instance_name.is_empty() {
        req.hostname.clone()
    } else {
        activation.instance_name.clone()
    };
    let instance = InstanceRecord {
        instance_id: ids::new_managed_instance_id(),
        account_id: activation.account_id.clone(),
        region_id: activation.region_id.clone(),
        name,
        hostname: req.hostname.clone(),
        os_type: req.os_type.clone(),
        agent_version: req.agent_version.clone(),
        machine_id: req.machine_id.clone(),
        activation_id: activation.activation_id.clone(),
        token_hash: digest(&token),
        registered: now,
        last_heartbeat: None,
        last_invoked: None,
        invocation_count: 0,
        // An instance belongs to its activation's resource group.
        resource_group_id: activation.resource_group_id.clone(),
    };
    match d.store.register_instance(&instance).await {
        Ok(()) => {
            tracing::info!(instance = %instance.instance_id, host = %req.hostname, "agent registered");
            Json(RegisterResponse {
                instance_id: instance.instance_id,
                token,
            })
            .into_response()
        }
        Err(StoreError::Conflict(why)) => {
            refuse(StatusCode::FORBIDDEN, "ActivationUnavailable", &why)
        }
        Err(e) => {
            tracing::error!("register: {e}");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "storage error",
            )
        }
    }
}
