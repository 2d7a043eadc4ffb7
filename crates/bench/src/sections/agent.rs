//! 4. (continued) A real `oca-agent`, connected and idle: its resident memory, the CPU
//!    time it uses and how often it wakes up.

use super::start_server;
use crate::api::Method;
use crate::report::{kib, Row};
use crate::server::RealAgent;
use crate::sys;
use crate::{targets, Config, Section};
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

const NAME: &str = "bench-real-agent";
/// Time after it connects before the watch starts (start-up work is not idle).
const SETTLE: Duration = Duration::from_secs(1);

pub async fn run(config: &Config) -> Result<Vec<Row>> {
    let (server, api) = start_server(config)?;
    let (act_id, act_code) = api.create_activation(NAME, 1).await?;
    let agent = RealAgent::start(&config.agent_bin, &server, NAME, &act_id, &act_code)?;

    // Wait until the server shows it connected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = api
            .call(
                Method::Get,
                "DescribeManagedInstances",
                &[("InstanceName", NAME)],
            )
            .await?;
        let connected = body["Instances"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["Connected"] == true));
        if connected {
            break;
        }
        if Instant::now() > deadline {
            bail!("the real agent did not come online within 30 s");
        }
        if !std::path::Path::new(&format!("/proc/{}", agent.pid)).exists() {
            bail!("the real agent exited");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SETTLE).await;

    let pid = agent.pid;
    let read = || -> Result<(u64, u64)> {
        Ok((
            sys::cpu_ticks(pid).context("agent CPU time")?,
            sys::context_switches(pid).context("agent context switches")?,
        ))
    };
    let (ticks0, switches0) = read()?;
    let t = Instant::now();
    tokio::time::sleep(config.agent_idle).await;
    let (ticks1, switches1) = read()?;
    let elapsed = t.elapsed().as_secs_f64();
    let rss = sys::rss_kb(pid).context("agent RSS")?;
    let threads = sys::threads(pid).unwrap_or(0);
    drop(agent);
    drop(server);

    let hz = sys::clock_ticks_per_sec() as f64;
    let cpu_secs = (ticks1 - ticks0) as f64 / hz;
    let cpu_pct = cpu_secs / elapsed * 100.0;
    let wakeups = (switches1 - switches0) as f64 / elapsed;
    let s = Section::Memory;
    let idle = format!("{:.0} s", elapsed);
    Ok(vec![
        Row::target(
            s,
            format!("real oca-agent RSS, connected and idle ({threads} threads)"),
            kib(rss),
            format!("≤ {}", kib(targets::AGENT_RSS_KB)),
            rss <= targets::AGENT_RSS_KB,
        ),
        Row::target(
            s,
            format!("real oca-agent CPU over {idle} idle (utime+stime)"),
            format!("{:.0} ms = {cpu_pct:.2} % of a core", cpu_secs * 1000.0),
            format!("≤ {} % (no busy polling)", targets::AGENT_IDLE_CPU_PCT),
            cpu_pct <= targets::AGENT_IDLE_CPU_PCT,
        ),
        Row::target(
            s,
            format!("real oca-agent wake-ups over {idle} idle (context switches)"),
            format!("{:.1}/s", wakeups),
            format!("≤ {}/s", targets::AGENT_IDLE_WAKEUPS),
            wakeups <= targets::AGENT_IDLE_WAKEUPS,
        ),
    ])
}
