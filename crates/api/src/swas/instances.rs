//! SWAS Cloud Assistant status (installed or not) and attributes of instances.

use crate::ecs::instances::{status_items, StatusItem};
use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_store::InstanceFilter;
use serde::Serialize;

/// The most instance ids one query may name (the SDK metadata's maxItems).
const MAX_IDS: usize = 50;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    instance_id: String,
    status: bool,
}

/// `InstanceIds`: required, at most [`MAX_IDS`].
fn instance_ids(p: &crate::params::Params) -> Result<Vec<String>, ApiError> {
    let ids = p.list("InstanceIds", MAX_IDS, || {
        ApiError::InstanceIdsExceedLimit(MAX_IDS)
    })?;
    if ids.is_empty() {
        return Err(ApiError::MissingParameter("InstanceIds"));
    }
    Ok(ids)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeCloudAssistantStatusResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    cloud_assistant_status: Vec<Status>,
}

/// `InstanceIds` (a JSON array): whether each instance's agent is installed, that
/// is, whether the instance is registered here.
pub async fn status(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let ids = instance_ids(p)?;
    let paging = p.paging()?;
    let found = api.store.get_instances(&ctx.scope, &ids).await?;
    let known: std::collections::HashSet<&str> =
        found.iter().map(|i| i.instance_id.as_str()).collect();
    let statuses: Vec<Status> = ids
        .iter()
        .map(|id| Status {
            instance_id: id.clone(),
            status: known.contains(id.as_str()),
        })
        .collect();
    let body = DescribeCloudAssistantStatusResponse {
        request_id: ctx.request_id.clone(),
        total_count: statuses.len() as u64,
        page_number: paging.page_number,
        page_size: paging.page_size,
        cloud_assistant_status: statuses
            .into_iter()
            .skip(paging.offset() as usize)
            .take(paging.page_size as usize)
            .collect(),
    };
    Ok(render::ok(
        "DescribeCloudAssistantStatus",
        &body,
        ctx.format,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeCloudAssistantAttributesResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    cloud_assistant: Vec<StatusItem>,
}

/// `InstanceIds` (a JSON array, at most 50): each registered instance's agent, as
/// ECS DescribeCloudAssistantStatus reports it (`CloudAssistantStatus` "true"/"false").
pub async fn attributes(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let ids = instance_ids(p)?;
    let paging = p.paging()?;
    let filter = InstanceFilter {
        instance_ids: Some(ids),
        os_type: None,
        ..Default::default()
    };
    let (total, items) = status_items(api, ctx, &filter, &paging).await?;
    let body = DescribeCloudAssistantAttributesResponse {
        request_id: ctx.request_id.clone(),
        total_count: total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        cloud_assistant: items,
    };
    Ok(render::ok(
        "DescribeCloudAssistantAttributes",
        &body,
        ctx.format,
    ))
}

/// `InstanceIds` (a JSON array, at most 50). An instance is here only once its agent has
/// registered, so every instance this account can name already has Cloud Assistant:
/// the install succeeds at once for all of them; an id that is not (or not this
/// account's) is not found, and nothing is done for the others.
pub async fn install(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let ids = instance_ids(&ctx.params)?;
    crate::ecs::invocations::instances_in_scope(api, ctx, &ids).await?;
    Ok(render::ok(
        "InstallCloudAssistant",
        &crate::ecs::Empty {
            request_id: ctx.request_id.clone(),
        },
        ctx.format,
    ))
}
