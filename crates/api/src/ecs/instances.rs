//! DescribeCloudAssistantStatus, CreateActivation, DescribeManagedInstances: the hosts
//! that run the agent and how they join.

use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::time::{format_api, format_api_opt, now_millis};
use oca_store::{ActivationRecord, InstanceFilter, InstanceRecord, Tag, TagResource};
use serde::Serialize;

/// The most instance ids one status query may name.
const MAX_STATUS_IDS: usize = 100;

fn os_type_label(os: &str) -> String {
    match os.to_ascii_lowercase().as_str() {
        "linux" => "Linux".into(),
        "windows" => "Windows".into(),
        "" => String::new(),
        other => other.to_string(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StatusItem {
    instance_id: String,
    /// "true" or "false", a string on the wire.
    cloud_assistant_status: String,
    cloud_assistant_version: String,
    last_heartbeat_time: String,
    #[serde(rename = "OSType")]
    os_type: String,
    active_task_count: u32,
    invocation_count: i64,
    last_invoked_time: String,
    support_session_manager: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatusSet {
    instance_cloud_assistant_status: Vec<StatusItem>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeCloudAssistantStatusResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    next_token: String,
    instance_cloud_assistant_status_set: StatusSet,
}

fn instance_filter(ctx: &Ctx, os_param: &str) -> Result<InstanceFilter, ApiError> {
    let ids = ctx.params.list("InstanceId")?;
    if ids.len() > MAX_STATUS_IDS {
        return Err(ApiError::InstanceIdsExceedLimit(MAX_STATUS_IDS));
    }
    Ok(InstanceFilter {
        instance_ids: (!ids.is_empty()).then_some(ids),
        os_type: ctx
            .params
            .non_empty(os_param)
            .map(|s| s.to_ascii_lowercase()),
        ..Default::default()
    })
}

/// One page of instances with their agent's status: what ECS
/// DescribeCloudAssistantStatus and SWAS DescribeCloudAssistantAttributes list.
pub(crate) async fn status_items(
    api: &Api,
    ctx: &Ctx,
    filter: &InstanceFilter,
    paging: &crate::params::Paging,
) -> Result<(u64, Vec<StatusItem>), ApiError> {
    let listing = api
        .store
        .list_instances(&ctx.scope, filter, paging.page())
        .await?;
    let items = listing
        .items
        .into_iter()
        .map(|i| {
            let online = api.dispatcher.is_connected(&i.instance_id);
            let heartbeat = api
                .dispatcher
                .live_heartbeat(&i.instance_id)
                .or(i.last_heartbeat);
            StatusItem {
                cloud_assistant_status: online.to_string(),
                cloud_assistant_version: i.agent_version.clone(),
                last_heartbeat_time: format_api_opt(heartbeat),
                os_type: os_type_label(&i.os_type),
                active_task_count: api.dispatcher.active_tasks(&i.instance_id),
                invocation_count: i.invocation_count,
                last_invoked_time: format_api_opt(i.last_invoked),
                support_session_manager: false,
                instance_id: i.instance_id,
            }
        })
        .collect();
    Ok((listing.total, items))
}

pub async fn status(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let paging = ctx.params.paging()?;
    let filter = instance_filter(ctx, "OSType")?;
    let (total, items) = status_items(api, ctx, &filter, &paging).await?;
    let body = DescribeCloudAssistantStatusResponse {
        request_id: ctx.request_id.clone(),
        total_count: total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        next_token: paging.next_token(total),
        instance_cloud_assistant_status_set: StatusSet {
            instance_cloud_assistant_status: items,
        },
    };
    Ok(render::ok(
        "DescribeCloudAssistantStatus",
        &body,
        ctx.format,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateActivationResponse {
    request_id: String,
    activation_id: String,
    activation_code: String,
}

pub async fn create_activation(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
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
    let code = oca_domain::ids::new_secret(40);
    let now = now_millis();
    let activation = ActivationRecord {
        activation_id: oca_domain::ids::new_activation_id(),
        account_id: ctx.scope.account_id.clone(),
        region_id: ctx.scope.region_id.clone(),
        code_hash: oca_dispatch::digest(&code),
        instance_name: p
            .string_max("InstanceName", 128, || {
                ApiError::InvalidParameterNamed("InstanceName")
            })?
            .unwrap_or_default(),
        description: p
            .string_max("Description", 100, || {
                ApiError::InvalidParameterNamed("Description")
            })?
            .unwrap_or_default(),
        instance_count,
        registered_count: 0,
        ip_address_range: p.get("IpAddressRange").unwrap_or("0.0.0.0/0").to_string(),
        created: now,
        expires: now + ttl_hours * 3_600_000,
        disabled: false,
        resource_group_id: super::resource_group(p)?.unwrap_or_default(),
    };
    api.store.insert_activation(&activation).await?;
    Ok(render::ok(
        "CreateActivation",
        &CreateActivationResponse {
            request_id: ctx.request_id.clone(),
            activation_id: activation.activation_id,
            activation_code: code,
        },
        ctx.format,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManagedInstance {
    instance_id: String,
    instance_name: String,
    hostname: String,
    activation_id: String,
    agent_version: String,
    connected: bool,
    os_type: String,
    machine_id: String,
    registration_time: String,
    invocation_count: i64,
    last_invoked_time: String,
    resource_group_id: String,
    /// A flat list here (`Tags: [{TagKey, TagValue}]`), unlike commands' `Tags.Tag`.
    tags: Vec<InstanceTag>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceTag {
    tag_key: String,
    tag_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeManagedInstancesResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    next_token: String,
    instances: Vec<ManagedInstance>,
}

fn managed(api: &Api, i: InstanceRecord, tags: Option<&Vec<Tag>>) -> ManagedInstance {
    ManagedInstance {
        tags: tags
            .into_iter()
            .flatten()
            .map(|t| InstanceTag {
                tag_key: t.key.clone(),
                tag_value: t.value.clone(),
            })
            .collect(),
        connected: api.dispatcher.is_connected(&i.instance_id),
        os_type: os_type_label(&i.os_type),
        registration_time: format_api(i.registered),
        last_invoked_time: format_api_opt(i.last_invoked),
        instance_id: i.instance_id,
        instance_name: i.name,
        hostname: i.hostname,
        activation_id: i.activation_id,
        agent_version: i.agent_version,
        machine_id: i.machine_id,
        invocation_count: i.invocation_count,
        resource_group_id: i.resource_group_id,
    }
}

pub async fn describe_managed(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let paging = ctx.params.paging()?;
    let p = &ctx.params;
    let mut filter = InstanceFilter {
        resource_group_id: super::resource_group(p)?,
        name: p.non_empty("InstanceName").map(str::to_string),
        activation_id: p.non_empty("ActivationId").map(str::to_string),
        machine_id: p.non_empty("MachineId").map(str::to_string),
        tags: p.tags("Tag", 20, super::tags::TAG_ERRORS)?,
        ..instance_filter(ctx, "OsType")?
    };
    // Whether an agent is connected is the dispatcher's to know, not the store's.
    match p.bool("Connected")? {
        None => {}
        Some(true) => {
            let live = api.dispatcher.connected_ids();
            filter.instance_ids = Some(match filter.instance_ids.take() {
                None => live,
                Some(ids) => ids.into_iter().filter(|id| live.contains(id)).collect(),
            });
        }
        Some(false) => filter.exclude_ids = Some(api.dispatcher.connected_ids()),
    }
    if p.non_empty("InstanceIp").is_some() {
        return Err(ApiError::InvalidParameter(
            "InstanceIp".into(),
            "this server does not record instances' addresses; filter by InstanceId, \
             InstanceName or MachineId"
                .into(),
        ));
    }
    let listing = api
        .store
        .list_instances(&ctx.scope, &filter, paging.page())
        .await?;
    let ids: Vec<String> = listing
        .items
        .iter()
        .map(|i| i.instance_id.clone())
        .collect();
    let tags = api
        .store
        .tags_of(&ctx.scope, TagResource::Instance, &ids)
        .await?;
    let body = DescribeManagedInstancesResponse {
        request_id: ctx.request_id.clone(),
        total_count: listing.total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        next_token: paging.next_token(listing.total),
        instances: listing
            .items
            .into_iter()
            .map(|i| {
                let t = tags.get(&i.instance_id);
                managed(api, i, t)
            })
            .collect(),
    };
    Ok(render::ok("DescribeManagedInstances", &body, ctx.format))
}
