//! The SWAS-OPEN `2020-06-01` Cloud Assistant actions, served from the same store and
//! dispatcher as the ECS ones. Where an action is the ECS operation under other
//! parameter names, the request is renamed ([`renamed`]) and the ECS handler answers;
//! where the answer has another shape, the family file builds it.

pub mod commands;
pub mod instances;
pub mod invocations;

use crate::error::ApiError;
use crate::params::Params;
use crate::router::SwasAction;
use crate::{Api, Ctx};
use axum::response::Response;

pub async fn handle(api: &Api, ctx: Ctx, action: SwasAction) -> Result<Response, ApiError> {
    use SwasAction::*;
    match action {
        RunCommand => invocations::run(api, &ctx).await,
        InvokeCommand => invocations::invoke(api, &ctx).await,
        DescribeInvocations => invocations::describe(api, &ctx).await,
        DescribeInvocationResult => invocations::result(api, &ctx).await,
        CreateCommand => crate::ecs::commands::create(api, &ctx).await,
        DeleteCommand => crate::ecs::commands::delete(api, &ctx).await,
        UpdateCommandAttribute => commands::update(api, &ctx).await,
        DescribeCommands => commands::describe(api, &ctx).await,
        DescribeCommandInvocations => invocations::describe_command_invocations(api, &ctx).await,
        DescribeCloudAssistantAttributes => instances::attributes(api, &ctx).await,
        DescribeCloudAssistantStatus => instances::status(api, &ctx).await,
        InstallCloudAssistant => instances::install(api, &ctx).await,
    }
}

/// The same request with its parameters renamed (`from` → `to`); others are kept.
pub(crate) fn renamed(ctx: &Ctx, names: &[(&str, &str)]) -> Ctx {
    let pairs = ctx
        .params
        .pairs()
        .iter()
        .map(|(k, v)| {
            let k = names
                .iter()
                .find(|(from, _)| from == k)
                .map_or_else(|| k.clone(), |(_, to)| to.to_string());
            (k, v.clone())
        })
        .collect();
    Ctx {
        request_id: ctx.request_id.clone(),
        endpoint: ctx.endpoint,
        scope: ctx.scope.clone(),
        params: Params::from_pairs(pairs),
        format: ctx.format,
        created: ctx.created.clone(),
    }
}
