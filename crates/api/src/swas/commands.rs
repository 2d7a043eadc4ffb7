//! SWAS saved commands: CreateCommand and DeleteCommand are the ECS ones;
//! UpdateCommandAttribute is ECS ModifyCommand; DescribeCommands lists the same
//! records as a flat `Commands[]`.

use crate::ecs::Empty;
use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::command::{CommandType, ContentEncoding};
use oca_domain::time::format_api;
use oca_store::{CommandFilter, TagResource};
use serde::Serialize;

pub async fn update(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    crate::ecs::commands::modify(api, ctx).await?;
    Ok(render::ok(
        "UpdateCommandAttribute",
        &Empty {
            request_id: ctx.request_id.clone(),
        },
        ctx.format,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireTag {
    key: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Command {
    command_id: String,
    name: String,
    description: String,
    #[serde(rename = "Type")]
    command_type: String,
    command_content: String,
    working_dir: String,
    timeout: i64,
    enable_parameter: bool,
    parameter_names: Vec<String>,
    parameter_definitions: Vec<serde_json::Value>,
    creation_time: String,
    provider: String,
    resource_group_id: String,
    tags: Vec<WireTag>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeCommandsResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    commands: Vec<Command>,
}

/// `Provider` (required): `User` lists the caller's commands; `AlibabaCloud` (the
/// cloud's public commands) lists none here. A flat `Commands[]`.
pub async fn describe(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let provider = p.required("Provider")?;
    let paging = p.paging()?;
    if let Some(t) = p.non_empty("Type") {
        CommandType::parse(t).ok_or(ApiError::InvalidCmdType)?;
    }
    let filter = CommandFilter {
        command_id: p.non_empty("CommandId").map(str::to_string),
        name: p.non_empty("Name").map(str::to_string),
        description: None,
        command_type: p.non_empty("Type").map(str::to_string),
        ..Default::default()
    };
    let listing = if provider == "User" {
        api.store
            .list_commands(&ctx.scope, &filter, paging.page())
            .await?
    } else {
        oca_store::Listing {
            total: 0,
            items: vec![],
            next: None,
        }
    };
    let ids: Vec<String> = listing.items.iter().map(|c| c.command_id.clone()).collect();
    let mut tags = api
        .store
        .tags_of(&ctx.scope, TagResource::Command, &ids)
        .await?;
    let body = DescribeCommandsResponse {
        request_id: ctx.request_id.clone(),
        total_count: listing.total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        commands: listing
            .items
            .into_iter()
            .map(|c| Command {
                tags: tags
                    .remove(&c.command_id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| WireTag {
                        key: t.key,
                        value: t.value,
                    })
                    .collect(),
                command_content: ContentEncoding::Base64.render(&c.content),
                command_id: c.command_id,
                name: c.name,
                description: c.description,
                command_type: c.command_type,
                working_dir: c.working_dir,
                timeout: c.timeout_secs,
                enable_parameter: c.enable_parameter,
                parameter_names: c.parameter_names,
                parameter_definitions: vec![],
                creation_time: format_api(c.created),
                provider: "User".into(),
                resource_group_id: String::new(),
            })
            .collect(),
    };
    Ok(render::ok("DescribeCommands", &body, ctx.format))
}
