//! SWAS invocations: RunCommand and InvokeCommand are the ECS operations under other
//! parameter names; DescribeInvocations (the flat `Invocations[]` of seed 002) and
//! DescribeInvocationResult (one instance's run) read the same records.

use super::renamed;
use crate::ecs::invocations::error_pair;
use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::command::ContentEncoding;
use oca_domain::status::{InvokeStatus, OverallStatus};
use oca_domain::time::{format_api, format_api_opt};
use oca_store::{InvocationFilter, Page, ResultFilter};
use serde::Serialize;

/// RunCommand: `InstanceId` (one), `WorkingUser` (ECS `Username`), `Name` required.
pub async fn run(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    ctx.params.required("Name")?;
    ctx.params.required("InstanceId")?;
    let ecs = renamed(ctx, &[("WorkingUser", "Username")]);
    let started = crate::ecs::invocations::run_or_replay(api, &ecs).await?;
    Ok(render::ok(
        "RunCommand",
        &RunCommandResponse {
            request_id: ctx.request_id.clone(),
            invoke_id: started.invoke_id,
        },
        ctx.format,
    ))
}

/// SWAS RunCommand answers with the invocation only (no CommandId).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunCommandResponse {
    request_id: String,
    invoke_id: String,
}

/// InvokeCommand: `InstanceIds` is one string, a JSON array of ids.
pub async fn invoke(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    ctx.params.required("InstanceIds")?;
    let ecs = renamed(ctx, &[("InstanceIds", "InstanceId")]);
    crate::ecs::invocations::invoke(api, &ecs).await
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Invocation {
    creation_time: String,
    invocation_status: String,
    command_type: String,
    command_content: String,
    parameters: serde_json::Value,
    invoke_status: String,
    invoke_id: String,
    command_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInvocationsResponse {
    request_id: String,
    page_size: u64,
    page_number: u64,
    total_count: u64,
    invocations: Vec<Invocation>,
}

/// `InstanceId` is required (SDK metadata); `InvokeStatus` filters on the legacy status.
pub async fn describe(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let instance_id = p.required("InstanceId")?;
    let paging = p.paging()?;
    let invoke_status =
        p.wire_enum::<InvokeStatus>("InvokeStatus", "Running, Finished or Failed")?;
    let filter = InvocationFilter {
        invoke_status,
        instance_id: Some(instance_id.to_string()),
        ..Default::default()
    };
    let listing = api
        .store
        .list_invocations(&ctx.scope, &filter, paging.page(), false)
        .await?;
    let body = DescribeInvocationsResponse {
        request_id: ctx.request_id.clone(),
        page_size: paging.page_size,
        page_number: paging.page_number,
        total_count: listing.total,
        invocations: listing
            .items
            .into_iter()
            .map(|view| {
                let inv = view.invocation;
                Invocation {
                    creation_time: format_api(inv.created),
                    invocation_status: inv.overall_status().as_str().to_string(),
                    command_type: inv.command_type.clone(),
                    command_content: ContentEncoding::Base64.render(&inv.command_content),
                    parameters: serde_json::from_str(&inv.parameters)
                        .unwrap_or_else(|_| serde_json::json!({})),
                    invoke_status: inv.invoke_status().as_str().to_string(),
                    invoke_id: inv.invoke_id,
                    command_name: inv.command_name,
                }
            })
            .collect(),
    };
    Ok(render::ok("DescribeInvocations", &body, ctx.format))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvocationResult {
    invoke_id: String,
    instance_id: String,
    invocation_status: String,
    invoke_record_status: String,
    /// Always present, as the vendor's are: 0 until a run ends with one (the official
    /// agent reports 0 with a run it refused or that failed before it started:
    /// `SendError` sends its `exit_code`, still 0, in aliyun_assist_client's
    /// agent/taskengine/basetask.go).
    exit_code: i64,
    error_code: String,
    error_info: String,
    output: String,
    start_time: String,
    finished_time: String,
    invoke_user: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInvocationResultResponse {
    request_id: String,
    invocation_result: InvocationResult,
}

/// One instance's run of one invocation; its output in Base64.
pub async fn result(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let invoke_id = p.required("InvokeId")?;
    let instance_id = p.required("InstanceId")?;
    let filter = ResultFilter {
        invoke_id: Some(invoke_id.to_string()),
        instance_id: Some(instance_id.to_string()),
        ..Default::default()
    };
    let listing = api
        .store
        .list_results(
            &ctx.scope,
            &filter,
            Page {
                offset: 0,
                limit: 1,
            },
        )
        .await?;
    let t = listing
        .items
        .into_iter()
        .next()
        .ok_or(ApiError::InvalidInvokeIdNotFound)?;
    let (error_code, error_info) = error_pair(&t);
    let s = t.state;
    let body = DescribeInvocationResultResponse {
        request_id: ctx.request_id.clone(),
        invocation_result: InvocationResult {
            invocation_status: s.status.as_str().to_string(),
            invoke_record_status: s.status.coarse().as_str().to_string(),
            exit_code: s.exit_code.unwrap_or(0),
            error_code,
            error_info,
            output: ContentEncoding::Base64.render(&s.output),
            start_time: format_api_opt(s.start_time),
            finished_time: format_api_opt(s.finish_time),
            invoke_id: t.invoke_id,
            instance_id: t.instance_id,
            invoke_user: if t.username.is_empty() {
                "root".to_string()
            } else {
                t.username
            },
        },
    };
    Ok(render::ok("DescribeInvocationResult", &body, ctx.format))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvokeInstance {
    instance_id: String,
    invocation_status: String,
    /// Always present, as the vendor's are: 0 until a run ends with one (the official
    /// agent reports 0 with a run it refused or that failed before it started:
    /// `SendError` sends its `exit_code`, still 0, in aliyun_assist_client's
    /// agent/taskengine/basetask.go).
    exit_code: i64,
    error_code: String,
    error_info: String,
    output: String,
    start_time: String,
    finish_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CommandInvocation {
    invoke_id: String,
    command_id: String,
    command_name: String,
    command_description: String,
    command_type: String,
    command_content: String,
    /// A JSON text here (a map in DescribeInvocations), as the SDK's model says.
    parameters: String,
    invocation_status: String,
    creation_time: String,
    timeout: i64,
    username: String,
    working_dir: String,
    invoke_instances: Vec<InvokeInstance>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeCommandInvocationsResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    command_invocations: Vec<CommandInvocation>,
}

/// Invocations with their instances (output included, Base64), filtered by
/// instance, command, invocation, command name and type, and overall
/// `InvocationStatus`.
pub async fn describe_command_invocations(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let paging = p.paging()?;
    let command_type = p.non_empty("CommandType");
    if let Some(t) = command_type {
        oca_domain::command::CommandType::parse(t).ok_or(ApiError::InvalidCmdType)?;
    }
    let wanted_status = p.wire_enum::<OverallStatus>(
        "InvocationStatus",
        "Pending, Running, Success, Failed, PartialFailed, Stopping or Stopped",
    )?;
    let filter = InvocationFilter {
        invoke_id: p.non_empty("InvokeId").map(str::to_string),
        command_id: p.non_empty("CommandId").map(str::to_string),
        command_name: p.non_empty("CommandName").map(str::to_string),
        command_type: command_type.map(str::to_string),
        instance_id: p.non_empty("InstanceId").map(str::to_string),
        overall_status: wanted_status,
        ..Default::default()
    };
    let listing = api
        .store
        .list_invocations(&ctx.scope, &filter, paging.page(), true)
        .await?;
    let items: Vec<CommandInvocation> = listing
        .items
        .into_iter()
        .map(|view| {
            let inv = view.invocation;
            CommandInvocation {
                invocation_status: inv.overall_status().as_str().to_string(),
                creation_time: format_api(inv.created),
                command_content: ContentEncoding::Base64.render(&inv.command_content),
                invoke_instances: view
                    .tasks
                    .iter()
                    .map(|t| {
                        let (error_code, error_info) = error_pair(t);
                        let s = &t.state;
                        InvokeInstance {
                            instance_id: t.instance_id.clone(),
                            invocation_status: s.status.as_str().to_string(),
                            exit_code: s.exit_code.unwrap_or(0),
                            error_code,
                            error_info,
                            output: ContentEncoding::Base64.render(&s.output),
                            start_time: format_api_opt(s.start_time),
                            finish_time: format_api_opt(s.finish_time),
                        }
                    })
                    .collect(),
                invoke_id: inv.invoke_id,
                command_id: inv.command_id,
                command_name: inv.command_name,
                command_description: inv.command_description,
                command_type: inv.command_type,
                parameters: inv.parameters,
                timeout: inv.timeout_secs,
                username: inv.username,
                working_dir: inv.working_dir,
            }
        })
        .collect();
    let total = listing.total;
    let body = DescribeCommandInvocationsResponse {
        request_id: ctx.request_id.clone(),
        total_count: total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        command_invocations: items,
    };
    Ok(render::ok("DescribeCommandInvocations", &body, ctx.format))
}
