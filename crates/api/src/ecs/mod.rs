//! The ECS `2014-05-26` Cloud Assistant actions, one file per family:
//! [`commands`] (saved scripts), [`invocations`] (running them and reading results),
//! [`instances`] (agents, activations, status), [`tags`] (tags, which `ResourceTag`
//! targets), [`files`] (SendFile).

pub mod commands;
pub mod files;
pub mod instances;
pub mod invocations;
pub mod tags;

use crate::error::ApiError;
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
        DescribeInvocationOutput => invocations::output(api, &ctx).await,
        DescribeCloudAssistantStatus => instances::status(api, &ctx).await,
        CreateActivation => instances::create_activation(api, &ctx).await,
        DescribeManagedInstances => instances::describe_managed(api, &ctx).await,
        TagResources => tags::tag(api, &ctx).await,
        UntagResources => tags::untag(api, &ctx).await,
        ListTagResources => tags::list(api, &ctx).await,
        SendFile => files::send_file(api, &ctx).await,
        DescribeSendFileResults => files::describe_results(api, &ctx).await,
        Swas(action) => crate::swas::handle(api, ctx, action).await,
    }
}

/// The empty answer of actions that return only a request id.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Empty {
    pub request_id: String,
}
