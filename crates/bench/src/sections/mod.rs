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

/// A fresh server (over TLS unless the bench runs `--plain-http`) and a client with
/// its key.
pub(crate) fn start_server(config: &crate::Config) -> Result<(Server, ApiClient)> {
    let data = DataDir::create(&config.oca_bin)?;
    start_on(config, data)
}

pub(crate) fn start_on(config: &crate::Config, data: DataDir) -> Result<(Server, ApiClient)> {
    let server = Server::start(&config.oca_bin, data, config.tls)?;
    let api = ApiClient::of(&server)?;
    Ok((server, api))
}

/// Duration between two instants, zero if `later` is earlier.
pub(crate) fn since(earlier: std::time::Instant, later: std::time::Instant) -> Duration {
    later.saturating_duration_since(earlier)
}
