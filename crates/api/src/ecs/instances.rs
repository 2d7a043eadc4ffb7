//! DescribeCloudAssistantStatus, DescribeManagedInstances, ModifyManagedInstance,
//! DeregisterManagedInstance: the hosts that run the agent (how they join is
//! [`super::activations`]).
//!
//! A deregistered instance is gone: its row and tags are deleted (so its agent's
//! token no longer authenticates), its live connection is dropped, its live tasks end,
//! it is listed nowhere and no invocation can name it (`InvalidInstance.NotFound`); its
//! past results stay readable and its activation counts it in `DeregisteredCount`.
//!
//! OCA extension: DescribeCloudAssistantStatus and DescribeManagedInstances return each
//! instance's `TaskIsolation`, how its agent keeps a run's processes together so that a
//! timeout or a stop ends them all: `cgroup`, `process-tree`, or `""` when its agent
//! never said (an older agent, or none connected yet). The official SDKs ignore
//! fields they do not know.

use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::time::{format_api, format_api_opt};
use oca_store::{InstanceFilter, InstanceRecord, Tag, TagResource};
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
    /// OCA extension (ECS only; SWAS's DescribeCloudAssistantAttributes leaves it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    task_isolation: Option<String>,
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
    let ids = ctx.params.list("InstanceId", MAX_STATUS_IDS, || {
        ApiError::InstanceIdsExceedLimit(MAX_STATUS_IDS)
    })?;
    Ok(InstanceFilter {
        instance_ids: (!ids.is_empty()).then_some(ids),
        os_type: ctx
            .params
            .non_empty(os_param)
            .map(|s| s.to_ascii_lowercase()),
        ..Default::default()
    })
}

/// One page of instances with their agent's status: what SWAS
/// DescribeCloudAssistantAttributes lists.
pub(crate) async fn status_items(
    api: &Api,
    ctx: &Ctx,
    filter: &InstanceFilter,
    paging: &crate::params::Paging,
) -> Result<(u64, Vec<StatusItem>), ApiError> {
    status_page(api, ctx, filter, paging, false).await
}

/// [`status_items`]; with `extensions`, OCA's own fields too (ECS
/// DescribeCloudAssistantStatus).
async fn status_page(
    api: &Api,
    ctx: &Ctx,
    filter: &InstanceFilter,
    paging: &crate::params::Paging,
    extensions: bool,
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
                task_isolation: extensions.then_some(i.task_isolation),
                instance_id: i.instance_id,
            }
        })
        .collect();
    Ok((listing.total, items))
}

pub async fn status(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let paging = ctx.params.paging()?;
    let filter = instance_filter(ctx, "OSType")?;
    let (total, items) = status_page(api, ctx, &filter, &paging, true).await?;
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
    tags: Vec<FlatTag>,
    /// OCA extension.
    task_isolation: String,
}

/// A tag in a flat list (`Tags: [{TagKey, TagValue}]`), as managed instances and
/// activations carry them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct FlatTag {
    pub tag_key: String,
    pub tag_value: String,
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
            .map(|t| FlatTag {
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
        task_isolation: i.task_isolation,
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

/// ModifyManagedInstance's rule for a name (`oca_domain::instance`, which registration
/// shares), as the API's errors.
fn check_instance_name(name: &str) -> Result<(), ApiError> {
    use oca_domain::instance::InstanceNameError as E;
    oca_domain::instance::check_instance_name(name).map_err(|e| match e {
        E::ExceedLimit => ApiError::InstanceNameExceedLimit,
        E::InvalidPattern => ApiError::InstanceNameInvalidPattern,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RenamedInstance {
    instance_id: String,
    instance_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ModifyManagedInstanceResponse {
    request_id: String,
    instance: RenamedInstance,
}

pub async fn modify_managed(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let instance_id = p.required("InstanceId")?;
    let name = p.required("InstanceName")?;
    check_instance_name(name)?;
    let instance = api
        .store
        .rename_instance(&ctx.scope, instance_id, name)
        .await?
        .ok_or_else(|| ApiError::InvalidInstanceNotFound(instance_id.to_string()))?;
    api.dispatcher
        .renamed(&instance.instance_id, &instance.name);
    let body = ModifyManagedInstanceResponse {
        request_id: ctx.request_id.clone(),
        instance: RenamedInstance {
            instance_id: instance.instance_id,
            instance_name: instance.name,
        },
    };
    Ok(render::ok("ModifyManagedInstance", &body, ctx.format))
}

/// The instance as it was when deregistered (the vendor's model; this server records
/// no IP addresses nor OS version, as DescribeManagedInstances shows).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeregisteredInstance {
    instance_id: String,
    instance_name: String,
    hostname: String,
    activation_id: String,
    agent_version: String,
    os_type: String,
    machine_id: String,
    registration_time: String,
    invocation_count: i64,
    last_invoked_time: String,
    resource_group_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeregisterManagedInstanceResponse {
    request_id: String,
    instance: DeregisteredInstance,
}

pub async fn deregister_managed(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let instance_id = ctx.params.required("InstanceId")?;
    let i = api
        .store
        .deregister_instance(&ctx.scope, instance_id)
        .await?
        .ok_or_else(|| ApiError::InvalidInstanceNotFound(instance_id.to_string()))?;
    // The token is no longer valid in the store: now cut the live connection and end
    // what the instance had under way.
    api.dispatcher
        .deregistered(&i.account_id, &i.instance_id, &ctx.request_id)
        .await;
    tracing::info!(instance = %i.instance_id, "instance deregistered");
    let body = DeregisterManagedInstanceResponse {
        request_id: ctx.request_id.clone(),
        instance: DeregisteredInstance {
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
        },
    };
    Ok(render::ok("DeregisterManagedInstance", &body, ctx.format))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule itself is `oca_domain::instance`'s (tested there); here, its wire codes.
    #[test]
    fn instance_name_errors_have_the_vendor_codes() {
        assert!(check_instance_name("web-01").is_ok());
        let code = |name: &str| check_instance_name(name).unwrap_err().code();
        assert_eq!(code(&"a".repeat(129)), "InstanceName.ExceedLimit");
        assert_eq!(code("web server"), "InstanceName.InvalidPattern");
    }
}
