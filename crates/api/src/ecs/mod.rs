//! The ECS `2014-05-26` Cloud Assistant actions, one file per family:
//! [`commands`] (saved scripts), [`invocations`] (running them and reading results),
//! [`activations`] (how hosts join), [`instances`] (the hosts that joined: their
//! agents' status, renaming, deregistering), [`tags`] (tags, which `ResourceTag`
//! targets), [`files`] (SendFile).

pub mod activations;
pub mod commands;
pub mod files;
pub mod instances;
pub mod invocations;
pub mod output;
pub mod tags;

use crate::error::ApiError;
use crate::params::Params;
use crate::router::Endpoint;
use crate::{Api, Ctx};
use axum::response::Response;

pub async fn handle(api: &Api, ctx: Ctx) -> Result<Response, ApiError> {
    use Endpoint::*;
    match ctx.endpoint {
        CreateCommand => commands::create(api, &ctx).await,
        DescribeCommands => commands::describe(api, &ctx).await,
        ModifyCommand => commands::modify(api, &ctx).await,
        DeleteCommand => commands::delete(api, &ctx).await,
        InvokeCommand => invocations::invoke(api, &ctx).await,
        RunCommand => invocations::run(api, &ctx).await,
        StopInvocation => invocations::stop(api, &ctx).await,
        ModifyInvocationAttribute => invocations::modify(api, &ctx).await,
        DescribeInvocations => invocations::describe(api, &ctx).await,
        DescribeInvocationResults => invocations::results(api, &ctx).await,
        DescribeInvocationOutput => output::output(api, &ctx).await,
        DescribeCloudAssistantStatus => instances::status(api, &ctx).await,
        CreateActivation => activations::create(api, &ctx).await,
        DescribeActivations => activations::describe(api, &ctx).await,
        DisableActivation => activations::disable(api, &ctx).await,
        DeleteActivation => activations::delete(api, &ctx).await,
        DescribeManagedInstances => instances::describe_managed(api, &ctx).await,
        ModifyManagedInstance => instances::modify_managed(api, &ctx).await,
        DeregisterManagedInstance => instances::deregister_managed(api, &ctx).await,
        TagResources => tags::tag(api, &ctx).await,
        UntagResources => tags::untag(api, &ctx).await,
        ListTagResources => tags::list(api, &ctx).await,
        SendFile => files::send_file(api, &ctx).await,
        DescribeSendFileResults => files::describe_results(api, &ctx).await,
        Swas(action) => crate::swas::handle(api, ctx, action).await,
    }
}

/// The longest `ResourceGroupId`.
const MAX_RESOURCE_GROUP_ID_LEN: usize = 64;

/// `ResourceGroupId`, when given (empty counts as absent). This server keeps no list of
/// resource groups: any id of the vendor's shape names one (`rg-…`, but only 1 to 64
/// letters, digits, `-` and `_` are required); anything else is a group that cannot
/// exist, `InvalidResourceGroup.NotFound` as the vendor answers for an unknown group.
pub fn resource_group(params: &Params) -> Result<Option<String>, ApiError> {
    match params.non_empty("ResourceGroupId") {
        None => Ok(None),
        Some(id)
            if id.len() <= MAX_RESOURCE_GROUP_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(Some(id.to_string()))
        }
        Some(_) => Err(ApiError::InvalidResourceGroupNotFound),
    }
}

/// The empty answer of actions that return only a request id.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Empty {
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_group_ids_are_checked_loosely() {
        let group = |v: &str| resource_group(&Params::parse(&format!("ResourceGroupId={v}"), None));
        assert_eq!(
            group("rg-acfmxazb4ph_6aiy").unwrap().as_deref(),
            Some("rg-acfmxazb4ph_6aiy")
        );
        assert_eq!(group("").unwrap(), None, "empty is absent");
        assert_eq!(resource_group(&Params::default()).unwrap(), None);
        assert!(group(&"g".repeat(64)).unwrap().is_some());
        for bad in [
            "g".repeat(65),
            "rg%20a".into(),
            "rg/a".into(),
            "rg.a".into(),
            "%C3%A9".into(),
        ] {
            let e = group(&bad).unwrap_err();
            assert_eq!(
                (e.code().as_str(), e.status()),
                ("InvalidResourceGroup.NotFound", 404),
                "{bad}"
            );
        }
    }
}
