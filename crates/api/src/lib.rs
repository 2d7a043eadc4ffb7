//! The Cloud Assistant OpenAPI over HTTP.
//!
//! One request flows top to bottom through [`handle`]: parameters are parsed
//! ([`params`]), the version and action become an [`router::Endpoint`], the signature
//! is checked ([`auth`], [`signature`]), the region is checked, and the action family's
//! handler ([`ecs`]) answers with a typed response struct that [`render`] writes as
//! JSON or XML. Every failure is an [`error::ApiError`] that knows its wire code and
//! HTTP status.

pub mod audit;
pub mod auth;
pub mod ecs;
pub mod error;
pub mod params;
pub mod render;
pub mod replay;
pub mod router;
pub mod signature;
pub mod swas;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method};
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
    /// The largest request body read; larger ones are refused unread (413).
    pub max_body_bytes: usize,
    /// The longest query string served; longer ones are refused (413). Large
    /// parameters (a SendFile's content) fit in a form body.
    pub max_query_bytes: usize,
    /// How long a request's body may take to arrive (a body trickled in a byte at a
    /// time would hold its connection and memory forever).
    pub body_read_timeout: std::time::Duration,
    /// How hosts reach this server, for the line CreateActivation answers
    /// (`InstallCommand`); `None`: no line.
    pub agent_install: Option<AgentInstall>,
}

/// What a host's install line says about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInstall {
    /// `https://host:port` as other hosts reach it (`--advertise`).
    pub server_url: String,
    /// The fingerprint of the server's private CA (`sha256:…`), when it has one.
    pub fingerprint: Option<String>,
}

/// Requests larger than this (query and body together) are parsed and their signature
/// checked off the async workers, a few at a time (see [`Api::heavy`]), so that a
/// flood of 2 MB requests cannot stall the small ones of everybody else.
pub const HEAVY_REQUEST_BYTES: usize = 64 * 1024;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            regions: vec!["cn-hangzhou".to_string()],
            host_id: "oca".to_string(),
            max_skew_ms: 15 * 60 * 1000,
            max_instances_per_invocation: 500,
            min_cron_interval_secs: None,
            max_body_bytes: 2 << 20,
            // What the `http` crate takes in a URI (its `MAX_LEN`, u16::MAX - 1): the
            // listener answers a longer one with this same error (414).
            max_query_bytes: 65_534,
            body_read_timeout: std::time::Duration::from_secs(60),
            agent_install: None,
        }
    }
}

/// Everything a handler can reach.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub dispatcher: Arc<Dispatcher>,
    pub auth: auth::Authenticator,
    pub config: ApiConfig,
    /// Permits for CPU-heavy request work ([`HEAVY_REQUEST_BYTES`]): one less than the
    /// cores (at least one), so a core stays free for everything else.
    heavy: tokio::sync::Semaphore,
    /// How much of a request's parameters is read.
    parse_limits: params::ParseLimits,
}

/// One authenticated request, as handlers see it.
pub struct Ctx {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub scope: Scope,
    pub params: Params,
    pub format: Format,
    /// The ids the request creates, for the audit trail ([`Ctx::created`]).
    pub created: audit::Created,
}

impl Ctx {
    /// Notes an id the request created (an invocation, a command, an activation), for
    /// the audit trail.
    pub fn created(&self, id: &str) {
        self.created.note(id);
    }
}

impl Api {
    pub fn new(
        store: Arc<dyn Store>,
        dispatcher: Arc<Dispatcher>,
        auth: auth::Authenticator,
        config: ApiConfig,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Api {
            store,
            dispatcher,
            auth,
            parse_limits: params::ParseLimits::for_instances(config.max_instances_per_invocation),
            config,
            heavy: tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1)),
        }
    }

    /// The API's routes: `/`, GET and POST. Everything else a client can reach on the
    /// listener answers an error document too: see [`Api::not_found`].
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", any(handle))
            .with_state(self.clone())
    }

    /// The answer to a request for a path nothing serves, or with a method a path does
    /// not take: the vendor's error document, in the requested format.
    pub fn not_found(&self, method: &Method, path: &str, raw_query: &str) -> Response {
        let e = ApiError::InvalidApi(format!("{method} {}", shorten(path, 256)));
        self.refuse_request(e, raw_query)
    }

    /// The answer to a request with a method its path does not take.
    pub fn method_not_allowed(&self, method: &Method, raw_query: &str) -> Response {
        let e = ApiError::UnsupportedHttpMethod(shorten(method.as_str(), 32));
        self.refuse_request(e, raw_query)
    }

    fn refuse_request(&self, e: ApiError, raw_query: &str) -> Response {
        let request_id = oca_domain::ids::new_request_id();
        let format = Format::from_raw_query(raw_query);
        tracing::info!(request_id, code = %e.code(), "request refused");
        render::error(&e, &request_id, &self.config.host_id, format)
    }

    /// Runs CPU-heavy work (parsing or signing a large request) holding one of a few
    /// permits, on a thread the async workers can spare.
    async fn heavy<T>(&self, f: impl FnOnce() -> T) -> T {
        let _permit = self.heavy.acquire().await;
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }
}

/// At most `max` characters of `s`, for messages that quote the caller.
fn shorten(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    let request_id = oca_domain::ids::new_request_id();
    let (head, body) = request.into_parts();
    let raw_query = head.uri.query().unwrap_or("");
    // Refusals of the request as a whole: `Format` is read from the query alone.
    let refuse = |e: ApiError| {
        tracing::info!(request_id, code = %e.code(), "request refused");
        let format = Format::from_raw_query(raw_query);
        render::error(&e, &request_id, &api.config.host_id, format)
    };
    if head.method != Method::GET && head.method != Method::POST {
        return refuse(ApiError::UnsupportedHttpMethod(head.method.to_string()));
    }
    if raw_query.len() > api.config.max_query_bytes {
        return refuse(ApiError::UrlTooLarge(api.config.max_query_bytes));
    }
    let reading = read_body(body, &head.headers, api.config.max_body_bytes);
    let body = match tokio::time::timeout(api.config.body_read_timeout, reading).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return refuse(e),
        Err(_) => {
            return refuse(ApiError::IncompleteBody(format!(
                "the body did not arrive within {} s",
                api.config.body_read_timeout.as_secs()
            )))
        }
    };
    let is_form = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let heavy = raw_query.len() + body.len() > HEAVY_REQUEST_BYTES;
    let parse =
        || Params::parse_bounded(raw_query, is_form.then_some(&body[..]), &api.parse_limits);
    let params = if heavy {
        api.heavy(parse).await
    } else {
        parse()
    };
    let format = match params.get("Format") {
        Some(f) => Format::from_param(Some(f)),
        // Reading may have stopped short of it (a refused request).
        None => Format::from_raw_query(raw_query),
    };
    let parts = signature::RequestParts {
        method: head.method.as_str(),
        path: head.uri.path(),
        raw_query,
        headers: &head.headers,
        body: &body,
    };
    let mut seen = audit::Seen::default();
    let outcome = serve(&api, &parts, params, &request_id, format, heavy, &mut seen).await;
    let (status, result) = match &outcome {
        Ok(resp) => (resp.status().as_u16(), "Success".to_string()),
        Err(e) => (e.status(), e.code()),
    };
    if seen.recorded() {
        let peer = head
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| oca_dispatch::audit_ip(c.0.ip()))
            .unwrap_or_default();
        record(&api, seen, peer, &request_id, status, result).await;
    }
    match outcome {
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

/// Records an answered request in the audit trail (see [`audit`]).
async fn record(
    api: &Api,
    seen: audit::Seen,
    source: String,
    request_id: &str,
    http_status: u16,
    result: String,
) {
    let targets = seen.targets();
    let action = seen.endpoint.map(Endpoint::action).unwrap_or_default();
    api.dispatcher
        .audit()
        .record(oca_store::AuditRecord {
            at: oca_domain::time::now_millis(),
            account_id: seen.account_id,
            access_key_id: seen.access_key_id,
            source,
            action: action.to_string(),
            targets: targets.ids,
            omitted: targets.omitted,
            result,
            http_status,
            request_id: request_id.to_string(),
            authenticated: seen.authenticated,
        })
        .await;
}

/// The request body, refused unread when its declared length is over `max` and cut
/// off as soon as more than `max` bytes arrive.
async fn read_body(
    body: Body,
    headers: &axum::http::HeaderMap,
    max: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::BodyTooLarge(max));
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::BodyTooLarge(max);
            }
            source = s.source();
        }
        ApiError::IncompleteBody(e.to_string())
    })
}

async fn serve(
    api: &Api,
    parts: &signature::RequestParts<'_>,
    params: Params,
    request_id: &str,
    format: Format,
    heavy: bool,
    seen: &mut audit::Seen,
) -> Result<Response, ApiError> {
    params.check()?;
    // An Authorization header that claims the V3 family but cannot be read is refused
    // as such, before anything is read from the headers it would have to sign.
    signature::check_authorization(parts)?;
    // V3 names the action and version in (signed) headers; V1 in parameters. Headers
    // are only trusted when a V3 signature covers them.
    let (action, version) = signature::action_and_version(parts, params.pairs());
    let endpoint = Endpoint::route(version.as_deref(), action.as_deref())?;
    seen.endpoint = Some(endpoint);
    if seen.recorded() {
        seen.claimed(parts, params.pairs());
        // Linear in the request (a JSON list of ids is read item by item).
        if heavy {
            api.heavy(|| seen.named(params.pairs())).await;
        } else {
            seen.named(params.pairs());
        }
    }
    let claim = signature::claim(parts, params.pairs())?;
    let key = api.auth.key_of(&claim).await?;
    seen.account_id = key.account_id().to_string();
    if heavy {
        api.heavy(|| api.auth.verify(parts, params.pairs(), &claim, &key))
            .await?;
    } else {
        api.auth.verify(parts, params.pairs(), &claim, &key)?;
    }
    let principal = api.auth.admit(key, &claim, endpoint).await?;
    seen.authenticated = true;
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
        created: seen.created.clone(),
    };
    ecs::handle(api, ctx).await
}
