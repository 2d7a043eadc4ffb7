//! SendFile and DescribeSendFileResults: a file written on instances by their agents.
//!
//! A file delivery is an invocation of its own kind (`InvocationKind::File`, ids
//! `f-…`): stored in one transaction with a task per instance, pushed to the connected
//! agents, its results reported and acknowledged like a command run's. The agent checks
//! what only the host can (the name, the mode, that the owner and group exist, that the
//! file is not there unless `Overwrite`) and reports the official agent's error codes.

use super::invocations::{error_pair, instances_in_group, new_tasks, send};
use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::command::{self as cmd, ContentEncoding};
use oca_domain::status::OverallStatus;
use oca_domain::time::{format_api, format_api_opt, now_millis};
use oca_store::{FileSpec, InvocationFilter, InvocationKind, InvocationRecord, NewInvocation};
use serde::Serialize;

/// The longest file name and description, in characters (the vendor's SendFile
/// reference: Name "不得超过255个字符", Description 512, TargetDir 255). A file name
/// is also at most 255 *bytes*, and so is each directory of TargetDir: what Linux file
/// systems take (NAME_MAX), so that a name the API takes is one the host can write.
const MAX_NAME_LEN: usize = 255;
const MAX_NAME_BYTES: usize = 255;
const MAX_DESCRIPTION_LEN: usize = 512;
/// The longest target directory, owner and group.
const MAX_TARGET_DIR_LEN: usize = 255;
const MAX_OWNER_LEN: usize = 64;
/// The most instances one SendFile writes to.
const MAX_INSTANCES: usize = 100;
/// A file's content, Base64-encoded, is at most 32 KB.
const MAX_CONTENT_BASE64_LEN: usize = 32 * 1024;
/// Timeouts below this are raised to it, as the vendor does; the default is 60 s.
const MIN_TIMEOUT_SECS: i64 = 10;
const DEFAULT_TIMEOUT_SECS: i64 = 60;

/// Whether an octal `FileMode` (as the host reads it, e.g. `4755`, `06755`) sets the
/// setuid or setgid bit. A mode that is not octal is left to the host, which refuses
/// it with the official agent's `InvalidFileMode`.
fn setuid_or_setgid(mode: &str) -> bool {
    u32::from_str_radix(mode.trim(), 8).is_ok_and(|m| m & 0o6000 != 0)
}

fn invalid(name: &str, why: &str) -> ApiError {
    ApiError::InvalidParameter(name.into(), why.into())
}

/// A parameter of at most `max` characters.
fn bounded<'a>(ctx: &'a Ctx, name: &'static str, max: usize) -> Result<Option<&'a str>, ApiError> {
    match ctx.params.non_empty(name) {
        Some(v) if v.chars().count() > max => Err(invalid(
            name,
            &format!("it is longer than {max} characters"),
        )),
        v => Ok(v),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendFileResponse {
    request_id: String,
    invoke_id: String,
}

pub async fn send_file(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let name = p.required("Name")?;
    if name.chars().count() > MAX_NAME_LEN || name.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "Name",
            &format!(
                "it is longer than {MAX_NAME_LEN} characters or {MAX_NAME_BYTES} bytes (UTF-8)"
            ),
        ));
    }
    crate::params::check_text("Name", name, false)?;
    let description = bounded(ctx, "Description", MAX_DESCRIPTION_LEN)?.unwrap_or_default();
    crate::params::check_text("Description", description, true)?;
    let target_dir = p.required("TargetDir")?;
    if !target_dir.starts_with('/') || target_dir.chars().count() > MAX_TARGET_DIR_LEN {
        return Err(invalid(
            "TargetDir",
            &format!("it must be an absolute directory (starting with /) of at most {MAX_TARGET_DIR_LEN} characters"),
        ));
    }
    if target_dir.split('/').any(|d| d.len() > MAX_NAME_BYTES) {
        return Err(invalid(
            "TargetDir",
            &format!("a directory name in it is longer than {MAX_NAME_BYTES} bytes (UTF-8)"),
        ));
    }
    crate::params::check_text("TargetDir", target_dir, false)?;
    let content_type = match p.non_empty("ContentType") {
        None => ContentEncoding::PlainText,
        Some(t) => ContentEncoding::parse(t)
            .ok_or_else(|| invalid("ContentType", "use PlainText or Base64"))?,
    };
    let raw = p.required("Content")?;
    let content = match content_type {
        ContentEncoding::PlainText => raw.as_bytes().to_vec(),
        ContentEncoding::Base64 => cmd::decode_base64(raw).ok_or_else(|| {
            invalid(
                "Content",
                "it is not valid Base64 (set ContentType=PlainText to send plain text)",
            )
        })?,
    };
    if cmd::base64_len(content.len()) > MAX_CONTENT_BASE64_LEN {
        return Err(invalid(
            "Content",
            "the file is larger than 32 KB once Base64-encoded",
        ));
    }
    let owner = bounded(ctx, "FileOwner", MAX_OWNER_LEN)?.unwrap_or_default();
    let group = bounded(ctx, "FileGroup", MAX_OWNER_LEN)?.unwrap_or_default();
    let mode = bounded(ctx, "FileMode", 8)?.unwrap_or_default();
    if setuid_or_setgid(mode) {
        return Err(invalid(
            "FileMode",
            "setuid and setgid modes (4000, 2000) are not taken: a file sent as root must not run as root",
        ));
    }
    let timeout_secs = match p.int("Timeout")? {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) if t > cmd::MAX_TIMEOUT_SECS => return Err(ApiError::InvalidTimeout),
        Some(t) => t.max(MIN_TIMEOUT_SECS),
    };
    let max = MAX_INSTANCES.min(api.config.max_instances_per_invocation);
    let mut seen = std::collections::HashSet::new();
    let instance_ids: Vec<String> = p
        .list("InstanceId", max, || ApiError::InstanceIdsExceedLimit(max))?
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    if instance_ids.is_empty() {
        return Err(ApiError::MissingParam("InstanceId"));
    }
    if instance_ids.len() > max {
        return Err(ApiError::InstanceIdsExceedLimit(max));
    }
    let tags = p.tags("Tag", 20, super::tags::TAG_ERRORS)?;
    let resource_group = super::resource_group(p)?;
    let instances = instances_in_group(api, ctx, &instance_ids, resource_group.as_deref()).await?;

    let now = now_millis();
    let invoke_id = oca_domain::ids::new_file_invoke_id();
    let resource_group_id = resource_group.unwrap_or_default();
    let mut tasks = new_tasks(api, ctx, &invoke_id, "", "", &instances, now);
    for t in &mut tasks {
        t.resource_group_id = resource_group_id.clone();
    }
    let invocation = InvocationRecord {
        invoke_id: invoke_id.clone(),
        account_id: ctx.scope.account_id.clone(),
        region_id: ctx.scope.region_id.clone(),
        command_id: String::new(),
        command_name: name.to_string(),
        command_description: description.to_string(),
        command_type: String::new(),
        command_content: content,
        enable_parameter: false,
        parameters: "{}".into(),
        working_dir: String::new(),
        username: String::new(),
        timeout_secs,
        repeat_mode: "Once".into(),
        timed: false,
        frequency: String::new(),
        termination_mode: cmd::TerminationMode::default().as_str().to_string(),
        created: now,
        stopped_by_hand: false,
        counts: tasks.iter().map(|t| t.state.status).collect(),
        file: Some(FileSpec {
            target_dir: target_dir.to_string(),
            content_type: match content_type {
                ContentEncoding::PlainText => "PlainText",
                ContentEncoding::Base64 => "Base64",
            }
            .to_string(),
            owner: owner.to_string(),
            group: group.to_string(),
            mode: mode.to_string(),
            overwrite: p.bool("Overwrite")?.unwrap_or(false),
        }),
        revision: 0,
        resource_group_id,
    };
    api.store
        .create_invocation(NewInvocation {
            command: None,
            invocation: &invocation,
            tasks: &tasks,
            client_token: None,
            tags: &tags,
        })
        .await?;
    ctx.created(&invoke_id);
    send(api, &invocation, &tasks);
    tracing::info!(invoke_id, instances = tasks.len(), "file delivery started");
    Ok(render::ok(
        "SendFile",
        &SendFileResponse {
            request_id: ctx.request_id.clone(),
            invoke_id,
        },
        ctx.format,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvokeInstance {
    instance_id: String,
    invocation_status: String,
    error_code: String,
    error_info: String,
    creation_time: String,
    start_time: String,
    finish_time: String,
    update_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InvokeInstances {
    invoke_instance: Vec<InvokeInstance>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Invocation {
    invoke_id: String,
    name: String,
    description: String,
    content: String,
    content_type: String,
    target_dir: String,
    file_owner: String,
    file_group: String,
    file_mode: String,
    /// `"true"` or `"false"`: the SDK reads a string.
    overwrite: String,
    invocation_status: String,
    creation_time: String,
    vm_count: u64,
    invoke_instances: InvokeInstances,
    tags: super::tags::WireTags,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Invocations {
    invocation: Vec<Invocation>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeSendFileResultsResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    next_token: String,
    invocations: Invocations,
}

/// File deliveries newest first, each with every instance's state; filtered by
/// invoke id, file name, instance, overall status and tags.
pub async fn describe_results(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let paging = p.paging()?;
    let filter = InvocationFilter {
        after: paging.after.clone(),
        kind: InvocationKind::File,
        invoke_id: p.non_empty("InvokeId").map(str::to_string),
        command_name: p.non_empty("Name").map(str::to_string),
        instance_id: p.non_empty("InstanceId").map(str::to_string),
        overall_status: p.wire_enum::<OverallStatus>(
            "InvocationStatus",
            "Pending, Running, Success, Failed, PartialFailed, Stopping or Stopped",
        )?,
        tags: p.tags("Tag", 20, super::tags::TAG_ERRORS)?,
        resource_group_id: super::resource_group(p)?,
        ..Default::default()
    };
    let listing = api
        .store
        .list_invocations(&ctx.scope, &filter, paging.page(), false)
        .await?;
    let tags = super::invocations::tags_of_listed(api, ctx, &listing.items).await?;
    let invocation = listing
        .items
        .into_iter()
        .map(|view| {
            let inv = view.invocation;
            let spec = inv.file.clone().unwrap_or_else(|| FileSpec {
                target_dir: String::new(),
                content_type: "PlainText".into(),
                owner: String::new(),
                group: String::new(),
                mode: String::new(),
                overwrite: false,
            });
            let encoding = ContentEncoding::parse(&spec.content_type).unwrap_or_default();
            Invocation {
                tags: super::tags::WireTags::from(tags.get(&inv.invoke_id)),
                invocation_status: inv.overall_status().as_str().to_string(),
                vm_count: view.tasks.len() as u64,
                invoke_instances: InvokeInstances {
                    invoke_instance: view
                        .tasks
                        .iter()
                        .map(|t| {
                            let (error_code, error_info) = error_pair(t);
                            InvokeInstance {
                                instance_id: t.instance_id.clone(),
                                invocation_status: t.state.status.as_str().to_string(),
                                error_code,
                                error_info,
                                creation_time: format_api(t.created),
                                start_time: format_api_opt(t.state.start_time),
                                finish_time: format_api_opt(t.state.finish_time),
                                update_time: format_api(t.updated),
                            }
                        })
                        .collect(),
                },
                content: encoding.render(&inv.command_content),
                content_type: spec.content_type,
                target_dir: spec.target_dir,
                file_owner: or(spec.owner, "root"),
                file_group: or(spec.group, "root"),
                file_mode: or(spec.mode, "0644"),
                overwrite: spec.overwrite.to_string(),
                creation_time: format_api(inv.created),
                invoke_id: inv.invoke_id,
                name: inv.command_name,
                description: inv.command_description,
            }
        })
        .collect();
    let body = DescribeSendFileResultsResponse {
        request_id: ctx.request_id.clone(),
        total_count: listing.total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        next_token: paging.next_position(listing.next.as_ref()),
        invocations: Invocations { invocation },
    };
    Ok(render::ok("DescribeSendFileResults", &body, ctx.format))
}

/// `value`, or what an empty one means.
fn or(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value
    }
}
