//! 3. DescribeInvocations and DescribeInvocationResults over many stored records:
//!    latency (sequential requests) and throughput (concurrent clients, bounded time).

use super::start_on;
use crate::api::{ApiClient, Method, REGION};
use crate::report::{count, ms, percentile, secs, Row};
use crate::seed::{self, Seeded};
use crate::server::DataDir;
use crate::{targets, Config, Section};
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests per query before measuring.
const WARM_UP: usize = 10;

/// One query the section measures.
struct Query {
    action: &'static str,
    label: String,
    params: Vec<(String, String)>,
}

pub async fn run(config: &Config) -> Result<Vec<Row>> {
    let s = Section::Api;
    let data = DataDir::create(&config.oca_bin)?;
    eprintln!("  seeding {} invocations", config.records);
    let seeded = seed::seed(&data, config.records).await?;
    let mut rows = vec![Row::info(
        s,
        format!(
            "seed {} invocations (1 instance each) through the Store trait",
            count(seeded.records)
        ),
        match seeded.tmpfs_rate {
            Some(t) => format!(
                "{} ({:.0}/s on the data disk for the first 1,000, fsync each; {:.0}/s on tmpfs for the rest)",
                secs(seeded.elapsed),
                seeded.on_disk_rate,
                t
            ),
            None => format!(
                "{} ({:.0}/s on the data disk, fsync each)",
                secs(seeded.elapsed),
                seeded.on_disk_rate
            ),
        },
    )];

    let (server, api) = start_on(config, data)?;
    // The seeded records are what the API sees.
    let first = api.call(Method::Get, "DescribeInvocations", &[]).await?;
    let total = first["TotalCount"].as_u64().unwrap_or(0);
    rows.push(Row::target(
        s,
        "DescribeInvocations TotalCount",
        count(total as usize),
        count(seeded.records),
        total == seeded.records as u64,
    ));

    let judged = seeded.records >= targets::DESCRIBE_RECORDS;
    for q in queries(&seeded) {
        eprintln!("  {} {}", q.action, q.label);
        // Warm the path (and check the query is accepted) before measuring: enough
        // sequential requests to reach each of the store's pooled read connections,
        // whose page caches are their own.
        let mut cold = Duration::ZERO;
        for _ in 0..WARM_UP {
            let t = Instant::now();
            api.call_owned(Method::Get, q.action, &q.params).await?;
            cold = cold.max(t.elapsed());
        }
        let mut lat = Vec::with_capacity(config.api_requests);
        for _ in 0..config.api_requests {
            let t = Instant::now();
            api.call_owned(Method::Get, q.action, &q.params).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        let (done, failed) = throughput(&api, &q, config.api_clients, config.api_throughput).await;
        if failed > 0 {
            bail!(
                "{} {}: {failed} requests failed under load",
                q.action,
                q.label
            );
        }
        let p99 = percentile(&lat, 99.0);
        let measure = format!("{} {}", q.action, q.label);
        let value = format!(
            "p50 {} · p99 {} · {:.0} req/s ({} clients) · cold max {}",
            ms(percentile(&lat, 50.0)),
            ms(p99),
            done as f64 / config.api_throughput.as_secs_f64(),
            config.api_clients,
            ms(cold)
        );
        let target = format!("p99 ≤ {}", ms(targets::DESCRIBE_P99));
        rows.push(if judged {
            Row::target(s, measure, value, target, p99 <= targets::DESCRIBE_P99)
        } else {
            Row::info(s, measure, value)
        });
    }
    drop(server);
    Ok(rows)
}

fn queries(seeded: &Seeded) -> Vec<Query> {
    let page_size = 50;
    let deep = (seeded.records / page_size).clamp(1, 1000);
    let deep_label = format!(
        "PageNumber={deep}, PageSize={page_size} (rows {}–{})",
        count((deep - 1) * page_size + 1),
        count(deep * page_size)
    );
    let instance = seeded.instance_ids[0].clone();
    let command = seeded.command_ids[0].clone();
    let invoke = seeded.sample_invoke_id.clone();
    let per_instance = seeded.records.div_ceil(seeded.instance_ids.len());
    let per_command = seeded.records.div_ceil(seeded.command_ids.len());
    let q = |action: &'static str, label: String, params: &[(&str, String)]| {
        let mut all = vec![("RegionId".to_string(), REGION.to_string())];
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Query {
            action,
            label,
            params: all,
        }
    };
    let mut out = Vec::new();
    for action in ["DescribeInvocations", "DescribeInvocationResults"] {
        out.push(q(action, "first page".into(), &[]));
        out.push(q(
            action,
            "PageSize=50".into(),
            &[("PageSize", page_size.to_string())],
        ));
        out.push(q(
            action,
            deep_label.clone(),
            &[
                ("PageNumber", deep.to_string()),
                ("PageSize", page_size.to_string()),
            ],
        ));
        out.push(q(
            action,
            format!("InstanceId= (~{} rows)", count(per_instance)),
            &[("InstanceId", instance.clone())],
        ));
        out.push(q(
            action,
            format!("CommandId= (~{} rows)", count(per_command)),
            &[("CommandId", command.clone())],
        ));
        out.push(q(
            action,
            "InvokeId= (1 row)".into(),
            &[("InvokeId", invoke.clone())],
        ));
        if action == "DescribeInvocations" {
            out.push(q(
                action,
                "InvokeStatus=Finished (~90% of rows)".into(),
                &[("InvokeStatus", "Finished".into())],
            ));
        } else {
            out.push(q(
                action,
                "InvokeRecordStatus=Finished (all rows)".into(),
                &[("InvokeRecordStatus", "Finished".into())],
            ));
        }
    }
    out
}

/// Requests completed (and failed) by `clients` concurrent loops in `time`.
async fn throughput(api: &ApiClient, q: &Query, clients: usize, time: Duration) -> (u64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + time;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let api = api.clone();
        let params = q.params.clone();
        let action = q.action;
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match api.call_owned(Method::Get, action, &params).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}
