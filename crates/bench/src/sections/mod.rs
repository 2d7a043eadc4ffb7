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

/// `GET /metrics`, `n` times one after the other (after a few to warm up): the sorted
/// times of the answers, read whole, and the last body.
pub(crate) async fn scrape_metrics(api: &ApiClient, n: usize) -> Result<(Vec<Duration>, String)> {
    let url = format!("{}/metrics", api.base());
    let mut times = Vec::with_capacity(n);
    let mut body = String::new();
    for i in 0..n + 3 {
        let t = std::time::Instant::now();
        let answer = api.http().get(&url).send().await?;
        let status = answer.status();
        body = answer.text().await?;
        let took = t.elapsed();
        if !status.is_success() {
            anyhow::bail!("GET /metrics answered {status}: {body}");
        }
        if i >= 3 {
            times.push(took);
        }
    }
    times.sort();
    Ok((times, body))
}

/// The value of one sample of a scrape (`series`: the name and labels as written).
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
