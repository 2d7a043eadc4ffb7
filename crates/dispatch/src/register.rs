//! `POST /agent/v1/register`: an agent trades an activation id and code for an
//! instance id and a token.
//!
//! The body is at most `MAX_REGISTER_BODY` bytes and each field has its cap
//! (`oca_proto::limits`): a request past one is refused (`InvalidParameter`), never
//! cut, so what is stored is what the host said. A wrong activation id or code counts
//! against the sender's address (`guard.rs`).

use crate::Dispatcher;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oca_domain::ids;
use oca_domain::throttle::{THROTTLING_CODE, THROTTLING_HTTP_STATUS, THROTTLING_MESSAGE};
use oca_domain::time::now_millis;
use oca_proto::limits::{
    MAX_ACTIVATION_CODE, MAX_ACTIVATION_ID, MAX_AGENT_VERSION, MAX_HOSTNAME, MAX_MACHINE_ID,
    MAX_OS_TYPE, MAX_REGISTER_BODY,
};
use oca_proto::{RegisterError, RegisterRequest, RegisterResponse};
use oca_store::audit::Targets;
use oca_store::{AuditRecord, InstanceRecord, StoreError};
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

/// A refused registration: what the agent is answered, and the audit trail records.
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(RegisterError {
                code: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

/// Whether `addr` may use an activation limited to `range` (a CIDR block or one address,
/// IPv4 or IPv6; empty = any). An IPv4 peer seen as an IPv6-mapped address counts as
/// its IPv4 address.
pub fn allowed_by(range: &str, addr: std::net::IpAddr) -> bool {
    let addr = match addr {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
        v4 => v4,
    };
    let range = range.trim();
    if range.is_empty() {
        return true;
    }
    match range.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&addr),
        Err(_) => range.parse::<std::net::IpAddr>() == Ok(addr),
    }
}

/// Whether `range` is an `IpAddressRange` [`allowed_by`] understands.
pub fn ip_range_is_valid(range: &str) -> bool {
    let range = range.trim();
    range.parse::<ipnet::IpNet>().is_ok() || range.parse::<std::net::IpAddr>().is_ok()
}

/// An activation id or code that matches nothing.
fn invalid_activation() -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        "InvalidActivation",
        "the activation id or code is not valid",
    )
}

fn storage_error(e: impl std::fmt::Display) -> Refusal {
    tracing::error!("register: {e}");
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "storage error",
    )
}

/// A field of the request past its cap: refused, naming it.
fn too_long(field: &str, max: usize) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "InvalidParameter",
        format!("{field} is longer than {max} bytes"),
    )
}

/// The name a newly registered instance gets: the activation's `InstanceName`, else
/// the host's name, else (neither obeys the instance name rule that
/// ModifyManagedInstance enforces, `oca_domain::instance`) the instance id, which
/// does.
pub fn instance_name(activation_name: &str, hostname: &str, instance_id: &str) -> String {
    [activation_name, hostname]
        .into_iter()
        .find(|n| oca_domain::instance::check_instance_name(n).is_ok())
        .unwrap_or(instance_id)
        .to_string()
}

/// What a registration showed of itself, for the audit trail: never the code, the
/// token or what the host said of itself, only ids.
#[derive(Default)]
struct Seen {
    /// The activation it named.
    activation_id: String,
    /// The activation's account, once the activation is found.
    account_id: String,
    /// The activation code matched.
    authenticated: bool,
    /// The instance it became.
    instance_id: String,
}

/// `POST /agent/v1/register`; every attempt, refused or not, is recorded in the audit
/// trail (`RegisterAgent`).
pub async fn register(
    State(d): State<Arc<Dispatcher>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(addr))| addr);
    let mut seen = Seen::default();
    let outcome = try_register(&d, peer, body, &mut seen).await;
    let (status, result) = match &outcome {
        Ok(_) => (StatusCode::OK, "Success"),
        Err(refusal) => (refusal.status, refusal.code),
    };
    let mut targets = Targets::default();
    targets.add(&seen.activation_id);
    targets.add(&seen.instance_id);
    let request_id = ids::new_request_id();
    if outcome.is_err() {
        tracing::info!(request_id, code = result, activation = %oca_store::audit::clean(&seen.activation_id, 64), "agent registration refused");
    }
    d.audit
        .record(AuditRecord {
            at: now_millis(),
            account_id: seen.account_id,
            access_key_id: String::new(),
            source: peer.map(|p| crate::audit_ip(p.ip())).unwrap_or_default(),
            action: "RegisterAgent".to_string(),
            targets: targets.ids,
            omitted: targets.omitted,
            result: result.to_string(),
            http_status: status.as_u16(),
            request_id,
            authenticated: seen.authenticated,
        })
        .await;
    match outcome {
        Ok(answer) => Json(answer).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn try_register(
    d: &Dispatcher,
    peer: Option<std::net::SocketAddr>,
    body: Result<Bytes, BytesRejection>,
    seen: &mut Seen,
) -> Result<RegisterResponse, Refusal> {
    // A throttled address is refused before anything it sent is looked at.
    if d.guard.throttled(peer) {
        return Err(Refusal::new(
            StatusCode::from_u16(THROTTLING_HTTP_STATUS).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            THROTTLING_CODE,
            THROTTLING_MESSAGE,
        ));
    }
    // The body is capped (`Dispatcher::routes`): a larger one is refused unread.
    let body = body.map_err(|rejection| {
        Refusal::new(
            rejection.status(),
            "InvalidParameter",
            format!(
                "the request body could not be read (at most {MAX_REGISTER_BODY} bytes): {}",
                rejection.body_text()
            ),
        )
    })?;
    let Ok(req) = serde_json::from_slice::<RegisterRequest>(&body) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "the request body is not a JSON registration request",
        ));
    };
    seen.activation_id = req.activation_id.clone();
    for (field, value, max) in [
        ("hostname", &req.hostname, MAX_HOSTNAME),
        ("os_type", &req.os_type, MAX_OS_TYPE),
        ("agent_version", &req.agent_version, MAX_AGENT_VERSION),
        ("machine_id", &req.machine_id, MAX_MACHINE_ID),
    ] {
        if value.len() > max {
            return Err(too_long(field, max));
        }
    }
    // Ids and codes longer than any real one match nothing: a failure, without a
    // lookup.
    if req.activation_id.len() > MAX_ACTIVATION_ID
        || req.activation_code.len() > MAX_ACTIVATION_CODE
    {
        d.guard.failed(peer);
        return Err(invalid_activation());
    }
    let activation = match d.store.get_activation(&req.activation_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            d.guard.failed(peer);
            return Err(invalid_activation());
        }
        Err(e) => return Err(storage_error(e)),
    };
    seen.account_id = activation.account_id.clone();
    if !digests_equal(&activation.code_hash, &digest(&req.activation_code)) {
        d.guard.failed(peer);
        return Err(invalid_activation());
    }
    seen.authenticated = true;
    // The activation's IpAddressRange: checked after the code, so that it says nothing
    // to whoever does not hold one. (Without a peer address, as in-process tests, it
    // cannot be checked; the server always has one.)
    if let Some(peer) = peer {
        if !allowed_by(&activation.ip_address_range, peer.ip()) {
            tracing::warn!(activation = %activation.activation_id, %peer, "registration from outside the activation's IpAddressRange");
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "InvalidIpAddress",
                "this host's address is outside the activation's IpAddressRange",
            ));
        }
    }
    // The activation's account must be live: a deleted one's activations are dead, a
    // disabled one's wait until it is enabled again.
    match d.store.get_account(&activation.account_id).await {
        Ok(Some(a)) if a.deleted.is_some() => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "ActivationUnavailable",
                "the activation's account is deleted",
            ))
        }
        Ok(Some(a)) if !a.enabled => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "ActivationUnavailable",
                "the activation's account is disabled",
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(storage_error(e)),
    }
    let token = ids::new_secret(48);
    let now = now_millis();
    let instance_id = ids::new_managed_instance_id();
    let instance = InstanceRecord {
        name: instance_name(&activation.instance_name, &req.hostname, &instance_id),
        instance_id,
        account_id: activation.account_id.clone(),
        region_id: activation.region_id.clone(),
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
        // Said by the agent when it connects.
        task_isolation: String::new(),
    };
    match d.store.register_instance(&instance).await {
        Ok(()) => {
            tracing::info!(instance = %instance.instance_id, host = %req.hostname, "agent registered");
            seen.instance_id = instance.instance_id.clone();
            Ok(RegisterResponse {
                instance_id: instance.instance_id,
                token,
            })
        }
        Err(StoreError::Conflict(why)) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "ActivationUnavailable",
            why,
        )),
        Err(e) => Err(storage_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_obey_the_rule() {
        let id = "mi-0123456789abcdefghij";
        assert_eq!(instance_name("web", "host-1", id), "web");
        assert_eq!(instance_name("", "host-1", id), "host-1");
        // An activation name that breaks the rule gives way to the host name, and a
        // host name that does to the instance id.
        assert_eq!(instance_name("web server", "host-1", id), "host-1");
        assert_eq!(instance_name("", "1host", id), id);
        assert_eq!(instance_name("", &"h".repeat(1 << 20), id), id);
        assert_eq!(instance_name("", "", id), id);
    }

    #[test]
    fn ip_address_ranges() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(allowed_by("0.0.0.0/0", ip("203.0.113.9")));
        assert!(allowed_by("", ip("203.0.113.9")));
        assert!(allowed_by("10.0.0.0/8", ip("10.1.2.3")));
        assert!(!allowed_by("10.0.0.0/8", ip("11.1.2.3")));
        assert!(allowed_by("192.168.1.7", ip("192.168.1.7")));
        assert!(!allowed_by("192.168.1.7", ip("192.168.1.8")));
        assert!(
            allowed_by("127.0.0.0/8", ip("::ffff:127.0.0.1")),
            "IPv4-mapped"
        );
        assert!(allowed_by("2001:db8::/32", ip("2001:db8::1")));
        assert!(!allowed_by("2001:db8::/32", ip("2001:db9::1")));
        assert!(!allowed_by("not a range", ip("10.0.0.1")));
        for good in [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "192.168.1.7",
            "2001:db8::/32",
            "::1",
        ] {
            assert!(ip_range_is_valid(good), "{good}");
        }
        for bad in ["", "10.0.0.0/33", "10.0.0", "x", "10.0.0.0/8,11.0.0.0/8"] {
            assert!(!ip_range_is_valid(bad), "{bad}");
        }
    }
}
