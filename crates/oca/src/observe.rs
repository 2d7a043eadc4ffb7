//! `GET /metrics`, `/healthz` and `/readyz`: what operators and their monitoring ask of
//! a running server. Unauthenticated, like any Prometheus target: served on the API's
//! listener by default, or alone on `--metrics-listen` (then the API's listener
//! answers them with its error document, like any other unknown path). Put whichever
//! port serves them behind the firewall.
//!
//! - `/metrics`: [`oca_metrics::Metrics::encode`], with what only the dispatcher and
//!   the store know read at scrape time: the agents connected now (the connection
//!   map's length) and the records by status (`Store::tallies`: the per-scope tallies
//!   summed, and the `Pending` tasks counted on their partial index).
//! - `/healthz`: the process answers (200 `ok`).
//! - `/readyz`: the store answers a read and its database file is still the one in use
//!   (`Store::ping`): 200 `ok`, else 503 (the reason is logged, not answered).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use oca_dispatch::Dispatcher;
use oca_metrics::{Metrics, Snapshot, Tallies};
use oca_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` and the store's part of `/metrics` wait for the store.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints read.
pub struct Observed {
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn Store>,
    pub dispatcher: Arc<Dispatcher>,
}

/// The three endpoints (GET and HEAD).
pub fn routes(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(observed)
}

async fn metrics(State(o): State<Arc<Observed>>) -> Response {
    let tallies = match tokio::time::timeout(STORE_TIMEOUT, o.store.tallies()).await {
        Ok(Ok(t)) => Some(labelled(t)),
        Ok(Err(e)) => {
            tracing::warn!("/metrics: the store's tallies could not be read: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("/metrics: the store's tallies did not come within {STORE_TIMEOUT:?}");
            None
        }
    };
    let snapshot = Snapshot {
        agents_connected: o.dispatcher.connected_count() as u64,
        tallies,
    };
    let body = o.metrics.encode(&snapshot);
    ([(header::CONTENT_TYPE, oca_metrics::CONTENT_TYPE)], body).into_response()
}

/// The store's tallies as label values.
fn labelled(t: oca_store::Tallies) -> Tallies {
    Tallies {
        tasks: t
            .tasks
            .into_iter()
            .map(|(kind, status, n)| (kind.as_str(), status.as_str(), n))
            .collect(),
        invocations: t
            .invocations
            .into_iter()
            .map(|(kind, status, n)| (kind.as_str(), status.as_str(), n))
            .collect(),
        tasks_pending: t.tasks_pending,
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(o): State<Arc<Observed>>) -> Response {
    match tokio::time::timeout(STORE_TIMEOUT, o.store.ping()).await {
        Ok(Ok(())) => text(StatusCode::OK, "ok\n"),
        Ok(Err(e)) => {
            tracing::warn!("/readyz: not ready: {e}");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the store is unreachable\n",
            )
        }
        Err(_) => {
            tracing::warn!("/readyz: not ready: the store did not answer within {STORE_TIMEOUT:?}");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the store is unreachable\n",
            )
        }
    }
}

/// The answer of the metrics listener to anything else.
pub async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: this address serves /metrics, /healthz and /readyz\n",
    )
}
