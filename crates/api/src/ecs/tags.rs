//! TagResources, UntagResources, ListTagResources: tags on instances, commands,
//! invocations and activations. Tags on instances are what `ResourceTag.N` targets in
//! RunCommand and InvokeCommand.

use super::Empty;
use crate::error::ApiError;
use crate::params::TagErrors;
use crate::render;
use crate::{Api, Ctx};
use axum::response::Response;
use oca_store::{Tag, TagResource};
use serde::Serialize;

/// The most tags one request may set, and resources one request may name.
const MAX_TAGS: usize = 20;
const MAX_RESOURCES: usize = 50;

/// The vendor's errors for `Tag.N`.
pub const TAG_ERRORS: TagErrors = TagErrors {
    missing_key: || {
        ApiError::Tagging(
            "MissingParameter.TagKey",
            "You must specify Tag.N.Key.",
            400,
        )
    },
    bad_key: || {
        ApiError::Tagging(
            "InvalidTagKey.Malformed",
            "The specified Tag.N.Key is not valid.",
            400,
        )
    },
    bad_value: || {
        ApiError::Tagging(
            "InvalidTagValue.Malformed",
            "The specified Tag.N.Value is not valid.",
            400,
        )
    },
    duplicate: || {
        ApiError::Tagging(
            "Duplicate.TagKey",
            "The Tag.N.Key contains duplicate keys.",
            400,
        )
    },
    too_many: || {
        ApiError::Tagging(
            "NumberExceed.Tags",
            "The maximum number of Tags is exceeded.",
            400,
        )
    },
};

/// `Tags: {Tag: [{TagKey, TagValue}]}`, as commands and invocations carry them.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct WireTags {
    tag: Vec<WireTag>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireTag {
    tag_key: String,
    tag_value: String,
}

impl WireTags {
    pub fn from(tags: Option<&Vec<Tag>>) -> WireTags {
        WireTags {
            tag: tags
                .into_iter()
                .flatten()
                .map(|t| WireTag {
                    tag_key: t.key.clone(),
                    tag_value: t.value.clone(),
                })
                .collect(),
        }
    }
}

fn resource_type(ctx: &Ctx) -> Result<TagResource, ApiError> {
    match ctx
        .params
        .required("ResourceType")?
        .to_ascii_lowercase()
        .as_str()
    {
        "instance" | "managedinstance" => Ok(TagResource::Instance),
        "command" => Ok(TagResource::Command),
        "invocation" => Ok(TagResource::Invocation),
        "activation" => Ok(TagResource::Activation),
        _ => Err(ApiError::Tagging(
            "InvalidResourceType.NotFound",
            "The specified ResourceType does not exist: use instance, command, invocation or activation.",
            404,
        )),
    }
}

fn resource_ids(ctx: &Ctx) -> Result<Vec<String>, ApiError> {
    ctx.params.list("ResourceId", MAX_RESOURCES, || {
        ApiError::Tagging(
            "NumberExceed.ResourceIds",
            "The maximum number of ResourceIds is exceeded.",
            400,
        )
    })
}

/// Every resource must exist in the caller's scope; elsewhere it is simply not found.
async fn check_exist(
    api: &Api,
    ctx: &Ctx,
    kind: TagResource,
    ids: &[String],
) -> Result<(), ApiError> {
    let not_found = || {
        ApiError::Tagging(
            "InvalidResourceId.NotFound",
            "The specified ResourceIds are not found in our records.",
            404,
        )
    };
    match kind {
        TagResource::Instance => {
            let found = api.store.get_instances(&ctx.scope, ids).await?;
            if found.len() != ids.len() {
                return Err(not_found());
            }
        }
        TagResource::Command => {
            for id in ids {
                let visible = api
                    .store
                    .get_command(&ctx.scope, id)
                    .await?
                    .is_some_and(|c| c.visible);
                if !visible {
                    return Err(not_found());
                }
            }
        }
        TagResource::Invocation => {
            for id in ids {
                if api.store.get_invocation(&ctx.scope, id).await?.is_none() {
                    return Err(not_found());
                }
            }
        }
        TagResource::Activation => {
            let filter = oca_store::ActivationFilter {
                activation_ids: Some(ids.to_vec()),
                ..Default::default()
            };
            let all = oca_store::Page {
                offset: 0,
                limit: ids.len() as u64,
            };
            let found = api.store.list_activations(&ctx.scope, &filter, all).await?;
            if !ids
                .iter()
                .all(|id| found.items.iter().any(|a| &a.activation_id == id))
            {
                return Err(not_found());
            }
        }
    }
    Ok(())
}

fn empty(ctx: &Ctx) -> Empty {
    Empty {
        request_id: ctx.request_id.clone(),
    }
}

pub async fn tag(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let kind = resource_type(ctx)?;
    let ids = resource_ids(ctx)?;
    if ids.is_empty() {
        return Err(ApiError::MissingParameter("ResourceId"));
    }
    let tags = ctx.params.tags("Tag", MAX_TAGS, TAG_ERRORS)?;
    if tags.is_empty() {
        return Err(ApiError::MissingParameter("Tag"));
    }
    check_exist(api, ctx, kind, &ids).await?;
    api.store.tag(&ctx.scope, kind, &ids, &tags).await?;
    Ok(render::ok("TagResources", &empty(ctx), ctx.format))
}

pub async fn untag(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let kind = resource_type(ctx)?;
    let ids = resource_ids(ctx)?;
    if ids.is_empty() {
        return Err(ApiError::MissingParameter("ResourceId"));
    }
    // UntagResources takes TagKey.1 … TagKey.20, as many as a resource can carry.
    let keys = ctx.params.list("TagKey", MAX_TAGS, TAG_ERRORS.too_many)?;
    let all = ctx.params.bool("All")?.unwrap_or(false);
    if keys.is_empty() && !all {
        return Err(ApiError::MissingParameter("TagKey"));
    }
    check_exist(api, ctx, kind, &ids).await?;
    let keys = (!all).then_some(keys.as_slice());
    api.store.untag(&ctx.scope, kind, &ids, keys).await?;
    Ok(render::ok("UntagResources", &empty(ctx), ctx.format))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagResourceItem {
    resource_id: String,
    resource_type: String,
    tag_key: String,
    tag_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagResourceSet {
    tag_resource: Vec<TagResourceItem>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListTagResourcesResponse {
    request_id: String,
    next_token: String,
    tag_resources: TagResourceSet,
}

pub async fn list(api: &Api, ctx: &Ctx) -> Result<Response, ApiError> {
    let kind = resource_type(ctx)?;
    let mut ids = resource_ids(ctx)?;
    let filter = ctx.params.tags("Tag", MAX_TAGS, TAG_ERRORS)?;
    if !filter.is_empty() {
        let tagged = api.store.tagged(&ctx.scope, kind, &filter).await?;
        ids = if ids.is_empty() {
            tagged
        } else {
            ids.into_iter().filter(|id| tagged.contains(id)).collect()
        };
    } else if ids.is_empty() {
        return Err(ApiError::MissingParameter("ResourceId"));
    }
    let tags = api.store.tags_of(&ctx.scope, kind, &ids).await?;
    let mut items = Vec::new();
    for id in &ids {
        for Tag { key, value } in tags.get(id).into_iter().flatten() {
            items.push(TagResourceItem {
                resource_id: id.clone(),
                resource_type: kind.as_str().to_string(),
                tag_key: key.clone(),
                tag_value: value.clone(),
            });
        }
    }
    let body = ListTagResourcesResponse {
        request_id: ctx.request_id.clone(),
        next_token: String::new(),
        tag_resources: TagResourceSet {
            tag_resource: items,
        },
    };
    Ok(render::ok("ListTagResources", &body, ctx.format))
}
