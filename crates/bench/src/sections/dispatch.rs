//! 1. Dispatch latency to one instance: sequential RunCommands of `echo hi` to one
//!    simulated agent.

use super::{since, start_server};
use crate::api::ApiClient;
use crate::fleet::Fleet;
use crate::report::{ms, percentile, Row};
use crate::{targets, Config, Section};
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

const WARM_UP: usize = 3;
const PER_RUN_LIMIT: Duration = Duration::from_secs(10);
/// The paced series: RunCommands this far apart (longer than a delayed ACK, 40 ms and
/// up on Linux), at most this many, to tell socket-level waits from server work.
const PACE: Duration = Duration::from_millis(100);
const PACED_MAX: usize = 50;

pub async fn run(config: &Config) -> Result<Vec<Row>> {
    let (server, api) = start_server(config)?;
    let mut fleet = Fleet::new(&server)?;
    fleet.grow_to(&api, 1, Duration::from_secs(60)).await?;
    let ids = vec![fleet.instance_ids[0].clone()];

    for _ in 0..WARM_UP {
        one(&api, &fleet, &ids).await?;
    }
    let mut to_run = Vec::with_capacity(config.dispatches);
    let mut to_ack = Vec::with_capacity(config.dispatches);
    let mut answered = Vec::with_capacity(config.dispatches);
    let mut last_report = Instant::now();
    for i in 0..config.dispatches {
        let (r, a, h) = one(&api, &fleet, &ids).await?;
        to_run.push(r);
        to_ack.push(a);
        answered.push(h);
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("  {} of {} dispatched", i + 1, config.dispatches);
        }
    }
    let paced_n = config.dispatches.min(PACED_MAX);
    let mut paced_run = Vec::with_capacity(paced_n);
    let mut paced_ack = Vec::with_capacity(paced_n);
    for _ in 0..paced_n {
        tokio::time::sleep(PACE).await;
        let (r, a, _) = one(&api, &fleet, &ids).await?;
        paced_run.push(r);
        paced_ack.push(a);
    }
    let duplicates = fleet
        .tracker()
        .duplicate_runs
        .load(std::sync::atomic::Ordering::Relaxed);
    fleet.shutdown().await;
    drop(server);

    for v in [
        &mut to_run,
        &mut to_ack,
        &mut answered,
        &mut paced_run,
        &mut paced_ack,
    ] {
        v.sort();
    }
    let s = Section::Dispatch;
    let n = config.dispatches;
    let p50_run = percentile(&to_run, 50.0);
    Ok(vec![
        Row::target(
            s,
            format!("request sent → agent has Run, p50 ({n} back-to-back RunCommands)"),
            ms(p50_run),
            format!("≤ {}", ms(targets::DISPATCH_P50)),
            p50_run <= targets::DISPATCH_P50,
        ),
        Row::info(
            s,
            "request sent → agent has Run, p99",
            ms(percentile(&to_run, 99.0)),
        ),
        Row::info(
            s,
            "request sent → agent has Ack (result stored), p50",
            ms(percentile(&to_ack, 50.0)),
        ),
        Row::info(
            s,
            "request sent → agent has Ack (result stored), p99",
            ms(percentile(&to_ack, 99.0)),
        ),
        Row::info(
            s,
            "request sent → RunCommand answered, p50 / p99",
            format!(
                "{} / {}",
                ms(percentile(&answered, 50.0)),
                ms(percentile(&answered, 99.0))
            ),
        ),
        Row::info(
            s,
            format!(
                "paced ({paced_n} RunCommands {} ms apart): request → Run p50 / p99",
                PACE.as_millis()
            ),
            format!(
                "{} / {}",
                ms(percentile(&paced_run, 50.0)),
                ms(percentile(&paced_run, 99.0))
            ),
        ),
        Row::info(
            s,
            "paced: request → Ack p50 / p99",
            format!(
                "{} / {}",
                ms(percentile(&paced_ack, 50.0)),
                ms(percentile(&paced_ack, 99.0))
            ),
        ),
        Row::info(s, "duplicate Runs received", duplicates.to_string()),
    ])
}

/// One RunCommand, waited for until its Ack: (to Run, to Ack, to the HTTP answer).
async fn one(
    api: &ApiClient,
    fleet: &Fleet,
    ids: &[String],
) -> Result<(Duration, Duration, Duration)> {
    let t0 = Instant::now();
    let invoke_id = api.run_command("echo hi", ids).await?;
    let answered = t0.elapsed();
    let tracker = fleet.tracker();
    let acked = tracker
        .wait_until(Instant::now() + PER_RUN_LIMIT, |t| {
            t.counts(&invoke_id).1 >= 1
        })
        .await;
    let track = tracker.track(&invoke_id);
    tracker.forget(&invoke_id);
    if !acked || track.runs.is_empty() {
        bail!(
            "{invoke_id}: no Ack within {PER_RUN_LIMIT:?} (Run received: {})",
            !track.runs.is_empty()
        );
    }
    Ok((since(t0, track.runs[0]), since(t0, track.acks[0]), answered))
}
