//! CreateActivation, DescribeActivations, DisableActivation, DeleteActivation: the
//! activation codes hosts register with (`oca-agent --activation-id … --activation-code
//! …`; the registration itself is the dispatcher's, `oca_dispatch::register`).
//!
//! - CreateActivation also answers `InstallCommand` (an OCA extension; the SDKs ignore
//!   fields their models lack): the line that installs an agent on a host,
//!   `oca-agent install --server … --activation-id … --activation-code …
//!   [--fingerprint …]` ([`oca_proto::install::InstallLine`]), with the server's
//!   advertised URL and its private CA's fingerprint. Like the code, it is shown once:
//!   neither is logged nor stored (only the code's digest is).
//! - An activation counts its registrations (`RegisteredCount`, each a use of
//!   `InstanceCount`) and, of those, the instances deregistered since
//!   (`DeregisteredCount`); a deregistration does not give the use back.
//! - DisableActivation refuses further registrations; instances already registered
//!   are not affected. Disabling twice is not an error.
//! - DeleteActivation refuses (`ActivationId.InUse`) while an instance registered with
//!   it is still registered; once deleted its id is `ActivationId.NotFound`.
//! - Another account's (or region's) activation answers exactly as a missing one.

use super::instances::FlatTag;
use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::time::{format_api, now_millis};
use oca_store::{ActivationFilter, ActivationRecord, StoreError, Tag, TagResource};
use serde::Serialize;

/// The most tags an activation carries, and `Tag.N` filters a listing takes.
const MAX_TAGS: usize = 20;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateActivationResponse {
    request_id: String,
    activation_id: String,
    activation_code: String,
    /// OCA's: the line to run on a host.
    #[serde(skip_serializing_if = "Option::is_none")]
    install_command: Option<String>,
}

pub async fn create(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let instance_count = match p.int("InstanceCount")? {
        None => 10,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::InvalidParameter(
                "InstanceCount".into(),
                "it must be between 1 and 1000".into(),
            ))
        }
    };
    let ttl_hours = match p.int("TimeToLiveInHours")? {
        None => 4,
        Some(n) if (1..=876_000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::InvalidParameter(
                "TimeToLiveInHours".into(),
                "it must be between 1 and 876000".into(),
            ))
        }
    };
    let tags = p.tags("Tag", MAX_TAGS, super::tags::TAG_ERRORS)?;
    // Registration is refused from outside this range (checked on the peer's address).
    let ip_range = p
        .non_empty("IpAddressRange")
        .unwrap_or("0.0.0.0/0")
        .trim()
        .to_string();
    if !oca_dispatch::ip_range_is_valid(&ip_range) {
        return Err(ApiError::InvalidParameter(
            "IpAddressRange".into(),
            "it must be an IPv4 or IPv6 address or CIDR block, e.g. 10.0.0.0/8".into(),
        ));
    }
    let instance_name = p
        .string_max("InstanceName", 128, || {
            ApiError::InvalidParameterNamed("InstanceName")
        })?
        .unwrap_or_default();
    crate::params::check_text("InstanceName", &instance_name, false)?;
    let description = p
        .string_max("Description", 100, || {
            ApiError::InvalidParameterNamed("Description")
        })?
        .unwrap_or_default();
    crate::params::check_text("Description", &description, true)?;
    let code = oca_domain::ids::new_secret(40);
    let now = now_millis();
    let activation = ActivationRecord {
        activation_id: oca_domain::ids::new_activation_id(),
        account_id: ctx.scope.account_id.clone(),
        region_id: ctx.scope.region_id.clone(),
        code_hash: oca_dispatch::digest(&code),
        instance_name,
        description,
        instance_count,
        registered_count: 0,
        deregistered_count: 0,
        ip_address_range: ip_range,
        created: now,
        expires: now + ttl_hours * 3_600_000,
        disabled: false,
        resource_group_id: super::resource_group(p)?.unwrap_or_default(),
    };
    api.store.create_activation(&activation, &tags).await?;
    ctx.created(&activation.activation_id);
    let install_command = api.config.agent_install.as_ref().map(|i| {
        oca_proto::install::InstallLine {
            server: &i.server_url,
            activation_id: &activation.activation_id,
            activation_code: &code,
            fingerprint: i.fingerprint.as_deref(),
        }
        .to_string()
    });
    Ok(render::ok(
        "CreateActivation",
        &CreateActivationResponse {
            request_id: ctx.request_id.clone(),
            activation_id: activation.activation_id,
            activation_code: code,
            install_command,
        },
        ctx.format,
    ))
}

/// One activation as the vendor shows it. DescribeActivations has every field;
/// DisableActivation's model has no `ResourceGroupId` nor `Tags`, DeleteActivation's
/// not `Disabled` either: those are left out (`None`) where the model has no place for
/// them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ActivationView {
    activation_id: String,
    instance_name: String,
    description: String,
    instance_count: i64,
    registered_count: i64,
    deregistered_count: i64,
    ip_address_range: String,
    time_to_live_in_hours: i64,
    creation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_group_id: Option<String>,
    /// A flat list (`Tags: [{TagKey, TagValue}]`), as managed instances carry them.
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<FlatTag>>,
}

impl ActivationView {
    fn of(a: ActivationRecord) -> ActivationView {
        ActivationView {
            time_to_live_in_hours: (a.expires - a.created).max(0) / 3_600_000,
            creation_time: format_api(a.created),
            disabled: Some(a.disabled),
            resource_group_id: Some(a.resource_group_id),
            tags: None,
            activation_id: a.activation_id,
            instance_name: a.instance_name,
            description: a.description,
            instance_count: a.instance_count,
            registered_count: a.registered_count,
            deregistered_count: a.deregistered_count,
            ip_address_range: a.ip_address_range,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeActivationsResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    next_token: String,
    activation_list: Vec<ActivationView>,
}

/// DescribeActivations spells its paging errors its own way (400, and
/// `InvalidParameter.*` for the token pair), unlike DescribeInvocations (403).
fn paging_error(e: ApiError) -> ApiError {
    const INVALID: &str = "The specified parameter is invalid.";
    match e {
        ApiError::InvalidPageNumber => ApiError::Listed("InvalidParam.PageNumber", INVALID, 400),
        ApiError::InvalidPageSize => ApiError::Listed("InvalidParam.PageSize", INVALID, 400),
        ApiError::InvalidMaxResults => ApiError::Listed(
            "InvalidParameter.MaxResults",
            "The specified parameter MaxResults is not valid.",
            400,
        ),
        ApiError::InvalidNextToken => ApiError::Listed(
            "InvalidParameter.NextToken",
            "The specified parameter NextToken is not valid.",
            400,
        ),
        other => other,
    }
}

pub async fn describe(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let paging = p.paging().map_err(paging_error)?;
    let filter = ActivationFilter {
        activation_ids: p.non_empty("ActivationId").map(|id| vec![id.to_string()]),
        instance_name: p.non_empty("InstanceName").map(str::to_string),
        resource_group_id: super::resource_group(p)?,
        tags: p.tags("Tag", MAX_TAGS, super::tags::TAG_ERRORS)?,
    };
    let listing = api
        .store
        .list_activations(&ctx.scope, &filter, paging.page())
        .await?;
    let ids: Vec<String> = listing
        .items
        .iter()
        .map(|a| a.activation_id.clone())
        .collect();
    let mut tags = api
        .store
        .tags_of(&ctx.scope, TagResource::Activation, &ids)
        .await?;
    let body = DescribeActivationsResponse {
        request_id: ctx.request_id.clone(),
        total_count: listing.total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        next_token: paging.next_token(listing.total),
        activation_list: listing
            .items
            .into_iter()
            .map(|a| {
                let t = tags.remove(&a.activation_id).unwrap_or_default();
                ActivationView {
                    tags: Some(t.into_iter().map(FlatTag::from).collect()),
                    ..ActivationView::of(a)
                }
            })
            .collect(),
    };
    Ok(render::ok("DescribeActivations", &body, ctx.format))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ActivationResponse {
    request_id: String,
    activation: ActivationView,
}

pub async fn disable(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let id = ctx.params.required("ActivationId")?;
    let activation = api
        .store
        .disable_activation(&ctx.scope, id)
        .await?
        .ok_or(ApiError::ActivationIdNotFound)?;
    let body = ActivationResponse {
        request_id: ctx.request_id.clone(),
        activation: ActivationView {
            resource_group_id: None,
            ..ActivationView::of(activation)
        },
    };
    Ok(render::ok("DisableActivation", &body, ctx.format))
}

pub async fn delete(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let id = ctx.params.required("ActivationId")?;
    let activation = match api.store.delete_activation(&ctx.scope, id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Err(ApiError::ActivationIdNotFound),
        Err(StoreError::Conflict(_)) => return Err(ApiError::ActivationIdInUse),
        Err(e) => return Err(e.into()),
    };
    let body = ActivationResponse {
        request_id: ctx.request_id.clone(),
        activation: ActivationView {
            disabled: None,
            resource_group_id: None,
            ..ActivationView::of(activation)
        },
    };
    Ok(render::ok("DeleteActivation", &body, ctx.format))
}

impl From<Tag> for FlatTag {
    fn from(t: Tag) -> FlatTag {
        FlatTag {
            tag_key: t.key,
            tag_value: t.value,
        }
    }
}
