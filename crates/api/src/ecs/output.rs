//! OCA's own DescribeInvocationOutput: the whole stored output of one run, a page at
//! a time.

use super::commands::content_encoding;
use super::invocations::require_invocation;
use crate::error::ApiError;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_domain::command::ContentEncoding;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInvocationOutputResponse {
    request_id: String,
    invoke_id: String,
    instance_id: String,
    /// The bytes from `Offset` on (at most `Length`).
    output: String,
    /// Where this page starts.
    offset: u64,
    /// Bytes in this page.
    length: u64,
    /// Where the next page starts (= `OutputLength` once everything is read).
    next_offset: u64,
    /// Bytes stored for the run in all.
    output_length: u64,
}

/// The most bytes of output one DescribeInvocationOutput answers with, and its
/// default: a page costs the server a few times this in memory however large the
/// output is (16 MiB by default), so many readers at once stay cheap.
pub const MAX_OUTPUT_PAGE: u64 = 1 << 20;

/// OCA's own action: the whole stored output of one run (up to the server's cap),
/// where `DescribeInvocationResults` keeps 24 KB, a page at a time: `Offset` (bytes,
/// default 0) and `Length` (at most and by default [`MAX_OUTPUT_PAGE`]). With
/// `ContentEncoding=PlainText` a page may end inside a UTF-8 character; Base64 pages
/// join back byte for byte.
pub async fn output(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let p = &ctx.params;
    let invoke_id = p.required("InvokeId")?;
    let instance_id = p.required("InstanceId")?;
    let encoding = content_encoding(p, ContentEncoding::Base64)?;
    let offset = match p.int("Offset")? {
        None => 0,
        Some(o) if o >= 0 => o as u64,
        Some(_) => {
            return Err(ApiError::InvalidParameter(
                "Offset".into(),
                "it must be 0 or more".into(),
            ))
        }
    };
    let length = match p.int("Length")? {
        None => MAX_OUTPUT_PAGE,
        Some(l) if (1..=MAX_OUTPUT_PAGE as i64).contains(&l) => l as u64,
        Some(_) => {
            return Err(ApiError::InvalidParameter(
                "Length".into(),
                format!("it must be between 1 and {MAX_OUTPUT_PAGE}"),
            ))
        }
    };
    require_invocation(api, ctx, invoke_id).await?;
    let (total, bytes) = api
        .store
        .output_range(invoke_id, instance_id, offset, length)
        .await?
        .ok_or_else(|| ApiError::InvalidInstanceNotFound(instance_id.to_string()))?;
    let length = bytes.len() as u64;
    Ok(render::ok(
        "DescribeInvocationOutput",
        &DescribeInvocationOutputResponse {
            request_id: ctx.request_id.clone(),
            invoke_id: invoke_id.to_string(),
            instance_id: instance_id.to_string(),
            output: encoding.render(&bytes),
            offset,
            length,
            next_offset: offset + length,
            output_length: total,
        },
        ctx.format,
    ))
}
