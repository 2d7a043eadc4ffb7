//! 5. Hostile requests: a request with 100,000 `Tag.N` (1.6 MB) must be refused
//!    fast, and must not slow anybody else: DescribeInvocations latency while four
//!    such requests are in flight all the time. Then what a flood of signed requests
//!    costs the replay cache.

use super::start_server;
use crate::api::{Method, REGION};
use crate::report::{count, ms, percentile, Row};
use crate::{targets, Config, Section};
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RunCommand with `n` `Tag.N.Key` parameters (one more than any limit).
fn flood(n: usize) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = vec![
        ("RegionId".into(), REGION.into()),
        ("Type".into(), "RunShellScript".into()),
        ("CommandContent".into(), "true".into()),
        ("ContentEncoding".into(), "PlainText".into()),
        ("InstanceId.1".into(), "mi-0123456789abcdef0".into()),
    ];
    params.extend((1..=n).map(|i| (format!("Tag.{i}.Key"), "k".to_string())));
    params
}

pub async fn run(config: &Config) -> Result<Vec<Row>> {
    let s = Section::Hostile;
    let (server, api) = start_server(config)?;
    let mut rows = Vec::new();
    // Some records for DescribeInvocations to list (RunCommands to no agent: they
    // are stored, then abort as undelivered).
    for _ in 0..20 {
        api.call(
            Method::Get,
            "CreateCommand",
            &[
                ("Name", "bench"),
                ("Type", "RunShellScript"),
                ("CommandContent", "dHJ1ZQ=="),
            ],
        )
        .await?;
    }

    let params = flood(config.flood_tags);
    let mut lat = Vec::new();
    for _ in 0..config.flood_requests {
        // Signed before the clock starts: the server's time is measured.
        let signed = api.sign(Method::PostForm, "RunCommand", &params);
        let t = Instant::now();
        let (status, code) = api.refused(&signed).await?;
        lat.push(t.elapsed());
        if (status, code.as_str()) != (400, "NumberExceed.Tags") {
            bail!(
                "RunCommand with {} tags answered {status} {code}",
                config.flood_tags
            );
        }
    }
    lat.sort();
    let worst = *lat.last().unwrap_or(&Duration::ZERO);
    rows.push(Row::target(
        s,
        format!(
            "RunCommand with {} Tag.N (form body) → NumberExceed.Tags, slowest of {}",
            count(config.flood_tags),
            config.flood_requests
        ),
        format!("{} (p50 {})", ms(worst), ms(percentile(&lat, 50.0))),
        format!("< {}", ms(targets::FLOOD_ANSWER)),
        worst < targets::FLOOD_ANSWER,
    ));

    // Four flooders, all the time; DescribeInvocations from another client meanwhile.
    // Their request is signed once: past the parse limits it is refused before its
    // nonce is looked at (under them, the repeats are refused as replays, also cheap),
    // and signing 1.6 MB again and again would make the bench compete with the server
    // for the CPU.
    let signed = Arc::new(api.sign(Method::PostForm, "RunCommand", &params));
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (api, signed, stop) = (api.clone(), signed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut sent = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    api.refused(&signed).await?;
                    sent += 1;
                }
                anyhow::Ok(sent)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut lat = Vec::with_capacity(config.api_requests);
    for _ in 0..config.api_requests {
        let t = Instant::now();
        api.call(Method::Get, "DescribeInvocations", &[]).await?;
        lat.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut floods = 0;
    for f in flooders {
        floods += f.await??;
    }
    lat.sort();
    let p99 = percentile(&lat, 99.0);
    rows.push(Row::target(
        s,
        format!(
            "DescribeInvocations p99 while 4 such requests run ({} calls; {} floods answered meanwhile)",
            lat.len(),
            floods
        ),
        format!("{} (p50 {})", ms(p99), ms(percentile(&lat, 50.0))),
        format!("< {}", ms(targets::DESCRIBE_UNDER_FLOOD_P99)),
        p99 < targets::DESCRIBE_UNDER_FLOOD_P99,
    ));

    // The replay cache: many signed requests from one key cost a bounded, small amount.
    let before = server.rss_kb().unwrap_or(0);
    let started = Instant::now();
    let clients = 8;
    let per_client = config.nonce_flood / clients;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    api.call(Method::Get, "DescribeCommands", &[("PageSize", "1")])
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let after = server.rss_kb().unwrap_or(0);
    rows.push(Row::info(
        s,
        format!(
            "server RSS across {} signed requests from one key (replay cache: ≤ 100,000 nonces per key)",
            count(per_client * clients)
        ),
        format!(
            "{} → {} MiB in {:.1} s",
            before / 1024,
            after / 1024,
            started.elapsed().as_secs_f64()
        ),
    ));
    drop(server);
    Ok(rows)
}
