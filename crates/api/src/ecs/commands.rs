//! CreateCommand, DescribeCommands, ModifyCommand, DeleteCommand, and the validation
//! of a command's fields that RunCommand shares.

use super::Empty;
use crate::error::ApiError;
use crate::params::Params;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::command::{self as cmd, CommandType, ContentEncoding};
use oca_domain::params::{parameter_names, ParamError, MAX_NAME_LEN as MAX_PARAM_NAME_LEN};
use oca_domain::time::{format_api, now_millis};
use oca_store::{CommandFilter, CommandRecord};
use serde::Serialize;

/// The longest working directory.
pub const MAX_WORKING_DIR_LEN: usize = 200;

/// `ContentEncoding`, with the action's default when absent.
pub fn content_encoding(
    params: &Params,
    default: ContentEncoding,
) -> Result<ContentEncoding, ApiError> {
    match params.non_empty("ContentEncoding") {
        None => Ok(default),
        Some(v) => ContentEncoding::parse(v).ok_or(ApiError::InvalidContentEncoding),
    }
}

/// Decodes `CommandContent` and checks it against the 18 KB limit (counted Base64-encoded).
pub fn command_content(raw: &str, encoding: ContentEncoding) -> Result<Vec<u8>, ApiError> {
    let bytes = match encoding {
        ContentEncoding::PlainText => raw.as_bytes().to_vec(),
        ContentEncoding::Base64 => cmd::decode_base64(raw).ok_or_else(|| {
            ApiError::InvalidParameter(
                "CommandContent".into(),
                "it is not valid Base64 (set ContentEncoding=PlainText to send plain text)".into(),
            )
        })?,
    };
    if cmd::base64_len(bytes.len()) > cmd::MAX_CONTENT_BASE64_LEN {
        return Err(ApiError::CmdContentExceedLimit);
    }
    Ok(bytes)
}

pub fn command_type(params: &Params) -> Result<CommandType, ApiError> {
    let t = params.required("Type")?;
    CommandType::parse(t).ok_or(ApiError::InvalidCmdType)
}

pub fn timeout(params: &Params) -> Result<Option<i64>, ApiError> {
    match params.int("Timeout")? {
        None => Ok(None),
        Some(t) if (cmd::MIN_TIMEOUT_SECS..=cmd::MAX_TIMEOUT_SECS).contains(&t) => Ok(Some(t)),
        Some(_) => Err(ApiError::InvalidTimeout),
    }
}

pub fn working_dir(params: &Params) -> Result<Option<String>, ApiError> {
    params.string_max("WorkingDir", MAX_WORKING_DIR_LEN, || {
        ApiError::InvalidParameterNamed("WorkingDir")
    })
}

pub fn name(params: &Params) -> Result<Option<String>, ApiError> {
    let name = params.string_max("Name", cmd::MAX_NAME_LEN, || ApiError::CmdNameExceedLimit)?;
    if let Some(n) = &name {
        crate::params::check_text("Name", n, false)?;
    }
    Ok(name)
}

pub fn description(params: &Params) -> Result<Option<String>, ApiError> {
    let description = params.string_max("Description", cmd::MAX_DESCRIPTION_LEN, || {
        ApiError::CmdDescExceedLimit
    })?;
    if let Some(d) = &description {
        crate::params::check_text("Description", d, true)?;
    }
    Ok(description)
}

/// The custom parameter names of content with `EnableParameter=true`.
pub fn names_of(content: &[u8], enable_parameter: bool) -> Result<Vec<String>, ApiError> {
    if !enable_parameter {
        return Ok(Vec::new());
    }
    parameter_names(&String::from_utf8_lossy(content)).map_err(|e| match e {
        ParamError::TooMany(_) => ApiError::ParameterCountExceedLimit,
        ParamError::BadName(ref n) if n.len() > MAX_PARAM_NAME_LEN => {
            ApiError::ParameterKeyExceedLimit
        }
        other => ApiError::InvalidParameter("CommandContent".into(), other.to_string()),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateCommandResponse {
    request_id: String,
    command_id: String,
}

pub async fn create(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let name = name(p)?
        .filter(|n| !n.is_empty())
        .ok_or(ApiError::MissingParameter("Name"))?;
    let command_type = command_type(p)?;
    let encoding = content_encoding(p, ContentEncoding::Base64)?;
    let content = command_content(p.required("CommandContent")?, encoding)?;
    let enable_parameter = p.bool("EnableParameter")?.unwrap_or(false);
    let tags = p.tags("Tag", 20, super::tags::TAG_ERRORS)?;
    let resource_group_id = super::resource_group(p)?.unwrap_or_default();
    let record = CommandRecord {
        command_id: oca_domain::ids::new_command_id(),
        account_id: ctx.scope.account_id.clone(),
        region_id: ctx.scope.region_id.clone(),
        name,
        description: description(p)?.unwrap_or_default(),
        command_type: command_type.as_str().to_string(),
        parameter_names: names_of(&content, enable_parameter)?,
        content,
        working_dir: working_dir(p)?.unwrap_or_default(),
        timeout_secs: timeout(p)?.unwrap_or(cmd::DEFAULT_TIMEOUT_SECS),
        enable_parameter,
        created: now_millis(),
        invoke_times: 0,
        visible: true,
        resource_group_id,
    };
    api.store.insert_command(&record).await?;
    ctx.created(&record.command_id);
    if !tags.is_empty() {
        let ids = [record.command_id.clone()];
        api.store
            .tag(&ctx.scope, oca_store::TagResource::Command, &ids, &tags)
            .await?;
    }
    Ok(render::ok(
        "CreateCommand",
        &CreateCommandResponse {
            request_id: ctx.request_id.clone(),
            command_id: record.command_id,
        },
        ctx.format,
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterNames {
    parameter_name: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CommandItem {
    command_id: String,
    name: String,
    description: String,
    #[serde(rename = "Type")]
    command_type: String,
    command_content: String,
    working_dir: String,
    timeout: i64,
    enable_parameter: bool,
    parameter_names: ParameterNames,
    creation_time: String,
    invoke_times: i64,
    latest: bool,
    version: i64,
    provider: String,
    category: String,
    resource_group_id: String,
    tags: super::tags::WireTags,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Commands {
    command: Vec<CommandItem>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeCommandsResponse {
    request_id: String,
    total_count: u64,
    page_number: u64,
    page_size: u64,
    next_token: String,
    commands: Commands,
}

pub async fn describe(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let paging = p.paging()?;
    let encoding = content_encoding(p, ContentEncoding::Base64)?;
    if let Some(t) = p.non_empty("Type") {
        CommandType::parse(t).ok_or(ApiError::InvalidCmdType)?;
    }
    let filter = CommandFilter {
        command_id: p.non_empty("CommandId").map(str::to_string),
        name: p.non_empty("Name").map(str::to_string),
        description: p.non_empty("Description").map(str::to_string),
        command_type: p.non_empty("Type").map(str::to_string),
        resource_group_id: super::resource_group(p)?,
        tags: p.tags("Tag", 20, super::tags::TAG_ERRORS)?,
    };
    // Public (provider) commands are the cloud's own; this server has none.
    let listing = if p.non_empty("Provider").is_some() {
        oca_store::Listing {
            total: 0,
            items: vec![],
            next: None,
        }
    } else {
        api.store
            .list_commands(&ctx.scope, &filter, paging.page())
            .await?
    };
    let ids: Vec<String> = listing.items.iter().map(|c| c.command_id.clone()).collect();
    let tags = api
        .store
        .tags_of(&ctx.scope, oca_store::TagResource::Command, &ids)
        .await?;
    let body = DescribeCommandsResponse {
        request_id: ctx.request_id.clone(),
        total_count: listing.total,
        page_number: paging.page_number,
        page_size: paging.page_size,
        next_token: paging.next_token(listing.total),
        commands: Commands {
            command: listing
                .items
                .into_iter()
                .map(|c| CommandItem {
                    tags: super::tags::WireTags::from(tags.get(&c.command_id)),
                    command_content: encoding.render(&c.content),
                    command_id: c.command_id,
                    name: c.name,
                    description: c.description,
                    command_type: c.command_type,
                    working_dir: c.working_dir,
                    timeout: c.timeout_secs,
                    enable_parameter: c.enable_parameter,
                    parameter_names: ParameterNames {
                        parameter_name: c.parameter_names,
                    },
                    creation_time: format_api(c.created),
                    invoke_times: c.invoke_times,
                    latest: true,
                    version: 1,
                    provider: String::new(),
                    category: String::new(),
                    resource_group_id: c.resource_group_id,
                })
                .collect(),
        },
    };
    Ok(render::ok("DescribeCommands", &body, ctx.format))
}

pub async fn modify(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let command_id = p.required("CommandId")?;
    let mut command = api
        .store
        .get_command(&ctx.scope, command_id)
        .await?
        .filter(|c| c.visible)
        .ok_or(ApiError::InvalidCmdIdNotFound)?;
    if let Some(n) = name(p)?.filter(|n| !n.is_empty()) {
        command.name = n;
    }
    if let Some(d) = description(p)? {
        command.description = d;
    }
    if let Some(raw) = p.non_empty("CommandContent") {
        let encoding = content_encoding(p, ContentEncoding::Base64)?;
        command.content = command_content(raw, encoding)?;
        command.parameter_names = names_of(&command.content, command.enable_parameter)?;
    }
    if let Some(w) = working_dir(p)? {
        command.working_dir = w;
    }
    if let Some(t) = timeout(p)? {
        command.timeout_secs = t;
    }
    if !api.store.update_command(&ctx.scope, &command).await? {
        return Err(ApiError::InvalidCmdIdNotFound);
    }
    Ok(render::ok(
        "ModifyCommand",
        &Empty {
            request_id: ctx.request_id.clone(),
        },
        ctx.format,
    ))
}

pub async fn delete(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let command_id = ctx.params.required("CommandId")?;
    let visible = api
        .store
        .get_command(&ctx.scope, command_id)
        .await?
        .is_some_and(|c| c.visible);
    if !visible || !api.store.delete_command(&ctx.scope, command_id).await? {
        return Err(ApiError::InvalidCmdIdNotFound);
    }
    Ok(render::ok(
        "DeleteCommand",
        &Empty {
            request_id: ctx.request_id.clone(),
        },
        ctx.format,
    ))
}
