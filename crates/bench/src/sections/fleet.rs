//! 2. Fan-out and 4. server memory per connected agent: one server, a fleet of
//!    simulated agents grown step by step; at each size the server's RSS, then one
//!    RunCommand to the whole fleet.

use super::{since, start_server};
use crate::api::{ApiClient, Method};
use crate::fleet::Fleet;
use crate::report::{count, kib, ms, percentile, secs, FanoutOutcome, Row};
use crate::{targets, Config, Section};
use anyhow::{anyhow, Result};
use std::time::{Duration, Instant};

/// Time for the server to settle (allocator, idle tasks) before RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

pub async fn run(
    config: &Config,
    fanout: bool,
    outcomes: &mut Vec<FanoutOutcome>,
) -> Result<Vec<Row>> {
    let (server, api) = start_server(config)?;
    // One API call so the baseline includes a warmed-up API path.
    api.call(Method::Get, "DescribeInvocations", &[]).await?;
    tokio::time::sleep(SETTLE).await;
    let baseline = server
        .rss_kb()
        .ok_or_else(|| anyhow!("no RSS for the server"))?;
    let bench_baseline = crate::sys::rss_kb(std::process::id()).unwrap_or(0);
    let mut rows = Vec::new();
    let m = Section::Memory;
    rows.push(Row::info(
        m,
        "server RSS, no agent connected",
        kib(baseline),
    ));

    let mut fleet = Fleet::new(&server)?;
    let mut measured: Vec<(usize, u64)> = Vec::new();
    let mut sizes = config.fanout_sizes.clone();
    sizes.sort();
    sizes.dedup();
    for &n in &sizes {
        eprintln!("  connecting simulated agents: {} → {n}", fleet.len());
        let t = Instant::now();
        let limit = Duration::from_secs(60 + n as u64 / 50);
        fleet.grow_to(&api, n, limit).await?;
        let connect_time = t.elapsed();
        tokio::time::sleep(SETTLE).await;
        let rss = server
            .rss_kb()
            .ok_or_else(|| anyhow!("no RSS for the server"))?;
        measured.push((n, rss));
        let bench_rss = crate::sys::rss_kb(std::process::id()).unwrap_or(0);
        rows.push(Row::info(
            m,
            format!("server RSS, {} agents connected", count(n)),
            format!(
                "{} (threads: {})",
                kib(rss),
                crate::sys::threads(server.pid).unwrap_or(0)
            ),
        ));
        rows.push(Row::info(
            m,
            format!("bench process per simulated agent ({} agents)", count(n)),
            format!(
                "{:.1} KiB",
                bench_rss.saturating_sub(bench_baseline) as f64 / n as f64
            ),
        ));
        if fanout {
            rows.push(Row::info(
                Section::Fanout,
                format!("register + connect agents up to {}", count(n)),
                secs(connect_time),
            ));
            let (r, outcome) = fan_out(&api, &fleet, n, server.pid).await?;
            rows.extend(r);
            outcomes.push(outcome);
        }
    }

    // Memory per connected agent, at the largest fleet.
    if let Some(&(n, rss)) = measured.last() {
        let per_agent = rss.saturating_sub(baseline) as f64 / n as f64;
        let judged = n >= 1000;
        let target = format!("≤ {} KiB", targets::SERVER_KB_PER_AGENT);
        let measure = format!(
            "server memory per connected agent ((RSS@{} − RSS@0) / {})",
            count(n),
            count(n)
        );
        let value = format!("{per_agent:.1} KiB");
        rows.push(if judged {
            Row::target(
                m,
                measure,
                value,
                target,
                per_agent <= targets::SERVER_KB_PER_AGENT,
            )
        } else {
            Row::info(m, measure, value)
        });
        if let [.., (n1, r1), (n2, r2)] = measured[..] {
            rows.push(Row::info(
                m,
                format!(
                    "server memory per added agent ({} → {})",
                    count(n1),
                    count(n2)
                ),
                format!("{:.1} KiB", r2.saturating_sub(r1) as f64 / (n2 - n1) as f64),
            ));
        }
    }
    if fanout {
        if let Some(peak) = crate::sys::peak_rss_kb(server.pid) {
            rows.push(Row::info(
                m,
                "server peak RSS (VmHWM) over the fan-outs",
                kib(peak),
            ));
        }
    }
    let t = fleet.tracker();
    use std::sync::atomic::Ordering::Relaxed;
    rows.push(Row::info(
        Section::Fanout,
        "protocol events: duplicate Runs / Resends / stray Acks / reconnects",
        format!(
            "{} / {} / {} / {}",
            t.duplicate_runs.load(Relaxed),
            t.resends.load(Relaxed),
            t.stray_acks.load(Relaxed),
            t.reconnects.load(Relaxed)
        ),
    ));
    let server = if fanout {
        eprintln!("  restarting the server under {} agents", fleet.len());
        let (r, server) = restart(config, server, &fleet).await?;
        rows.extend(r);
        server
    } else {
        server
    };
    eprintln!("  disconnecting {} agents", fleet.len());
    fleet.shutdown().await;
    drop(server);
    Ok(rows)
}

/// One RunCommand to the first `n` agents of the fleet.
async fn fan_out(
    api: &ApiClient,
    fleet: &Fleet,
    n: usize,
    server_pid: u32,
) -> Result<(Vec<Row>, FanoutOutcome)> {
    let s = Section::Fanout;
    let ids = fleet.instance_ids[..n].to_vec();
    let tracker = fleet.tracker();
    eprintln!("  RunCommand to {n} agents");
    let cpu = || {
        (
            crate::sys::cpu_ticks(server_pid).unwrap_or(0),
            crate::sys::cpu_ticks(std::process::id()).unwrap_or(0),
        )
    };
    let cpu0 = cpu();
    let t0 = Instant::now();
    let invoke_id = api.run_command("echo hi", &ids).await?;
    let answered = t0.elapsed();
    let deadline = t0 + Duration::from_secs(30 + n as u64 / 100);
    let all_runs = tracker
        .wait_until(deadline, |t| t.counts(&invoke_id).0 >= n)
        .await;
    let mut last_report = Instant::now();
    let all_acks = tracker
        .wait_until(deadline, |t| {
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("    {} of {n} results stored", t.counts(&invoke_id).1);
            }
            t.counts(&invoke_id).1 >= n
        })
        .await;
    let wall = t0.elapsed();
    let cpu1 = cpu();
    let track = tracker.track(&invoke_id);
    let (runs, acks) = (track.runs.len(), track.acks.len());
    let mut to_run: Vec<Duration> = track.runs.iter().map(|&at| since(t0, at)).collect();
    let mut to_ack: Vec<Duration> = track.acks.iter().map(|&at| since(t0, at)).collect();
    to_run.sort();
    to_ack.sort();
    let n_s = count(n);
    let mut rows = vec![Row::info(
        s,
        format!("{n_s} agents: RunCommand answered"),
        ms(answered),
    )];
    rows.push(if all_runs {
        Row::info(
            s,
            format!("{n_s} agents: request sent → every agent has Run"),
            format!(
                "{} (median {})",
                secs(*to_run.last().unwrap_or(&Duration::ZERO)),
                ms(percentile(&to_run, 50.0))
            ),
        )
    } else {
        Row::target(
            s,
            format!("{n_s} agents: request sent → every agent has Run"),
            format!("only {runs} of {n} within the limit"),
            "all",
            false,
        )
    });
    let complete = *to_ack.last().unwrap_or(&Duration::ZERO);
    let measure = format!("{n_s} agents: request sent → every result stored (Ack)");
    let value = if all_acks {
        format!(
            "{} (median {}; {:.0} results/s)",
            secs(complete),
            secs(percentile(&to_ack, 50.0)),
            n as f64 / complete.as_secs_f64().max(1e-9)
        )
    } else {
        format!("only {acks} of {n} within the limit")
    };
    let judged = n >= targets::FANOUT_AGENTS;
    rows.push(if judged || !all_acks {
        Row::target(
            s,
            measure,
            value,
            if judged {
                format!("≤ {}", secs(targets::FANOUT_COMPLETE))
            } else {
                "all".into()
            },
            all_acks && (!judged || complete <= targets::FANOUT_COMPLETE),
        )
    } else {
        Row::info(s, measure, value)
    });

    let hz = crate::sys::clock_ticks_per_sec() as f64;
    rows.push(Row::info(
        s,
        format!("{n_s} agents: CPU used until the last Ack, server / bench"),
        format!(
            "{:.2} s / {:.2} s in {} wall ({} CPUs)",
            (cpu1.0 - cpu0.0) as f64 / hz,
            (cpu1.1 - cpu0.1) as f64 / hz,
            secs(wall),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        ),
    ));

    // What the API says of it.
    let t = Instant::now();
    let body = api
        .call(
            Method::Get,
            "DescribeInvocations",
            &[("InvokeId", &invoke_id)],
        )
        .await?;
    let describe_time = t.elapsed();
    let inv = &body["Invocations"]["Invocation"][0];
    let instances = inv["InvokeInstances"]["InvokeInstance"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    let (invoke_status, invocation_status) = (
        inv["InvokeStatus"].as_str().unwrap_or("?"),
        inv["InvocationStatus"].as_str().unwrap_or("?"),
    );
    let verified = invoke_status == "Finished" && invocation_status == "Success" && instances == n;
    rows.push(Row::target(
        s,
        format!("{n_s} agents: DescribeInvocations of it"),
        format!(
            "InvokeStatus {invoke_status}, InvocationStatus {invocation_status}, {} InvokeInstances ({})",
            count(instances),
            ms(describe_time)
        ),
        format!("Finished, Success, {n_s}"),
        verified,
    ));
    tracker.forget(&invoke_id);
    Ok((
        rows,
        FanoutOutcome {
            agents: n,
            runs,
            acks,
            verified,
        },
    ))
}

/// A quiet restart under the whole fleet: SIGTERM (the server tells every agent it
/// restarts and exits), start again on the same port and data, until every agent has
/// been welcomed again.
async fn restart(
    config: &Config,
    server: crate::server::Server,
    fleet: &Fleet,
) -> Result<(Vec<Row>, crate::server::Server)> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = Section::Fanout;
    let t = fleet.tracker().clone();
    let n = fleet.len();
    let welcomed = t.welcomes.load(Relaxed);
    let failed = t.failed_connects.load(Relaxed);
    let told = t.told_restarting.load(Relaxed);
    let gave_up = t.gave_up.load(Relaxed);
    let began = Instant::now();
    let oca_bin = config.oca_bin.clone();
    let (stop_took, server) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut server = server;
        let took = server.terminate(Duration::from_secs(30))?;
        Ok((took, server.restart(&oca_bin)?))
    })
    .await??;
    let up_after = began.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let all_back = t
        .wait_until(deadline, |t| t.welcomes.load(Relaxed) >= welcomed + n)
        .await;
    let total = began.elapsed();
    let back = t.welcomes.load(Relaxed) - welcomed;
    let new_gave_up = t.gave_up.load(Relaxed) - gave_up;
    let mut rows = vec![Row::info(
        s,
        format!(
            "restart under {} agents: SIGTERM → exit / → serving again",
            count(n)
        ),
        format!("{} / {}", secs(stop_took), secs(up_after)),
    )];
    rows.push(Row::target(
        s,
        format!(
            "restart under {} agents: SIGTERM → every agent welcomed again ({} told Close 1012; {} failed connection attempts while it was down; {} gave up)",
            count(n),
            count((t.told_restarting.load(Relaxed) - told) as usize),
            count((t.failed_connects.load(Relaxed) - failed) as usize),
            new_gave_up
        ),
        if all_back {
            secs(total)
        } else {
            format!("{} of {} back after {}", count(back), count(n), secs(total))
        },
        format!("≤ {}", secs(targets::RESTART_ALL_BACK)),
        all_back && new_gave_up == 0 && total <= targets::RESTART_ALL_BACK,
    ));
    Ok((rows, server))
}
