//! The Cloud Assistant OpenAPI over HTTP.
//!
//! One request flows top to bottom through [`handle`]: parameters are parsed
//! ([`params`]), the version and action become an [`router::Endpoint`], the signature
//! is checked ([`auth`], [`signature`]), the region is checked, and the action family's
//! handler ([`ecs`]) answers with a typed response struct that [`render`] writes as
//! JSON or XML. Every failure is an [`error::ApiError`] that knows its wire code and
//! HTTP status.

pub mod auth;
pub mod ecs;
pub mod error;
pub mod params;
pub mod render;
pub mod router;
pub mod signature;
pub mod swas;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use error::ApiError;
use oca_dispatch::Dispatcher;
use oca_store::{Scope, Store};
use params::Params;
use render::Format;
use router::Endpoint;
use std::sync::Arc;

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The regions this server serves; others are `InvalidRegionId.NotFound`.
    pub regions: Vec<String>,
    /// `HostId` in error answers.
    pub host_id: String,
    /// How far a signed request's time may be from the server's.
    pub max_skew_ms: i64,
    /// The most instances one invocation may name.
    pub max_instances_per_invocation: usize,
    /// For tests only: cron frequencies whose runs are at least this many seconds apart
    /// are accepted whatever the vendor's minimum (10 s, and the timeout) says.
    pub min_cron_interval_secs: Option<u64>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            regions: vec!["cn-hangzhou".to_string()],
            host_id: "oca".to_string(),
            max_skew_ms: 15 * 60 * 1000,
            max_instances_per_invocation: 500,
            min_cron_interval_secs: None,
        }
    }
}

/// Everything a handler can reach.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub dispatcher: Arc<Dispatcher>,
    pub auth: auth::Authenticator,
    pub config: ApiConfig,
}

/// One authenticated request, as handlers see it.
pub struct Ctx {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub scope: Scope,
    pub params: Params,
    pub format: Format,
}

impl Api {
    /// The API's routes: every method on `/`.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", any(handle))
            .with_state(self.clone())
    }
}

async fn handle(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = oca_domain::ids::new_request_id();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let raw_query = uri.query().unwrap_or("");
    let params = Params::parse(raw_query, is_form.then_some(&body[..]));
    let format = Format::from_param(params.get("Format"));
    let parts = signature::RequestParts {
        method: method.as_str(),
        path: uri.path(),
        raw_query,
        headers: &headers,
        body: &body,
    };
    match serve(&api, &parts, params, &request_id, format).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(request_id, code = %e.code(), "request failed: {e:?}");
            } else {
                tracing::info!(request_id, code = %e.code(), "request refused");
            }
            render::error(&e, &request_id, &api.config.host_id, format)
        }
    }
}

async fn serve(
    api: &Api,
    parts: &signature::RequestParts<'_>,
    params: Params,
    request_id: &str,
    format: Format,
) -> Result<Response, ApiError> {
    // V3 names the action and version in (signed) headers; V1 in parameters. Headers
    // are only trusted when a V3 signature covers them.
    let (action, version) = signature::action_and_version(parts, params.pairs());
    let endpoint = Endpoint::route(version.as_deref(), action.as_deref())?;
    let principal = api.auth.authenticate(parts, params.pairs()).await?;
    let region_id = params
        .non_empty("RegionId")
        .ok_or(ApiError::MissingRegionId)?;
    if !api.config.regions.iter().any(|r| r == region_id) {
        return Err(ApiError::InvalidRegionId);
    }
    let ctx = Ctx {
        request_id: request_id.to_string(),
        endpoint,
        scope: Scope {
            account_id: principal.account_id,
            region_id: region_id.to_string(),
        },
        params,
        format,
    };
    ecs::handle(api, ctx).await
}
