//! One module per part of the table. Each starts its own server on a fresh data
//! directory and stops it before returning.

pub mod agent;
pub mod api;
pub mod dispatch;
pub mod fleet;
pub mod hostile;

use crate::api::ApiClient;
use crate::server::{DataDir, Server};
use anyhow::Result;
use std::time::Duration;

/// A fresh server and a client with its key.
pub(crate) fn start_server(oca_bin: &std::path::Path) -> Result<(Server, ApiClient)> {
    let data = DataDir::create(oca_bin)?;
    start_on(oca_bin, data)
}

pub(crate) fn start_on(oca_bin: &std::path::Path, data: DataDir) -> Result<(Server, ApiClient)> {
    let key = (data.key_id.clone(), data.secret.clone());
    let server = Server::start(oca_bin, data)?;
    let api = ApiClient::new(server.port, &key.0, &key.1)?;
    Ok((server, api))
}

/// Duration between two instants, zero if `later` is earlier.
pub(crate) fn since(earlier: std::time::Instant, later: std::time::Instant) -> Duration {
    later.saturating_duration_since(earlier)
}
