//! Repeating tasks (Period, NextRebootOnly, EveryReboot) against the in-test server:
//! second-scale cron expressions and rates, fake boot ids.

mod common;

use common::*;
use oca_domain::command::{decode_base64, RepeatMode};
use oca_domain::status::InvocationStatus as S;
use oca_domain::task_error::TaskError;
use oca_proto::{AgentMsg, KnownTask, Repeat, ServerMsg, Task, TaskResult};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Every second.
const EVERY_SECOND: &str = "* * * * * ?";

fn repeating(invoke_id: &str, script: &str, mode: RepeatMode, frequency: &str) -> Task {
    Task {
        repeat: Some(Repeat {
            mode,
            frequency: frequency.into(),
            anchor: oca_domain::time::now_millis(),
        }),
        revision: 1,
        ..task(invoke_id, script)
    }
}

fn schedule_file(state: &Path, invoke_id: &str) -> std::path::PathBuf {
    state.join("schedule").join(format!("{invoke_id}.json"))
}

fn run_dir(state: &Path, invoke_id: &str, run: u64) -> std::path::PathBuf {
    state.join("tasks").join(format!("{invoke_id}@{run}"))
}

fn output(r: &TaskResult) -> String {
    String::from_utf8(decode_base64(&r.output).unwrap()).unwrap()
}

/// The next message other than a heartbeat.
async fn next(c: &mut Conn) -> AgentMsg {
    loop {
        match c.recv().await {
            AgentMsg::Heartbeat { .. } => {}
            m => return m,
        }
    }
}

/// Messages other than heartbeats for `limit`.
async fn quiet_for(c: &mut Conn, limit: Duration) -> Vec<AgentMsg> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Some(AgentMsg::Heartbeat { .. }) => {}
            Some(m) => seen.push(m),
            None => return seen,
        }
    }
}

/// Messages up to the `Finished` of run `run` of `invoke_id`, heartbeats aside.
async fn until_run(c: &mut Conn, invoke_id: &str, run: u64) -> (Vec<AgentMsg>, TaskResult) {
    let mut seen = Vec::new();
    loop {
        match next(c).await {
            AgentMsg::Finished(r) if r.invoke_id == invoke_id && r.run == run => return (seen, r),
            m => seen.push(m),
        }
    }
}

async fn ack(c: &mut Conn, invoke_id: &str, run: u64) {
    c.send(ServerMsg::Ack {
        invoke_id: invoke_id.into(),
        run,
    })
    .await;
}

async fn stop(agent: JoinHandle<anyhow::Result<()>>) {
    agent.abort();
    let _ = agent.await;
}

/// The run number and start time of each `Started` for `invoke_id`.
fn starts(msgs: &[AgentMsg], invoke_id: &str) -> Vec<(u64, i64)> {
    msgs.iter()
        .filter_map(|m| match m {
            AgentMsg::Started {
                invoke_id: id,
                start_time,
                run,
            } if id == invoke_id => Some((*run, *start_time)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_cron_task_runs_each_second_numbered_and_acked_run_by_run() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;

    // The server's cap is ignored: a repeating run sends no Output chunks.
    let t = repeating("t-cron", "echo tick", RepeatMode::Period, EVERY_SECOND);
    c.send(ServerMsg::Run(t)).await;
    assert_eq!(
        next(&mut c).await,
        AgentMsg::Scheduled {
            invoke_id: "t-cron".into(),
            revision: 1
        }
    );
    assert!(schedule_file(state.path(), "t-cron").exists());
    let (msgs1, r1) = until_run(&mut c, "t-cron", 1).await;
    let (msgs2, r2) = until_run(&mut c, "t-cron", 2).await;
    for m in msgs1.iter().chain(&msgs2) {
        assert!(
            matches!(m, AgentMsg::Started { .. }),
            "only Started and Finished: {m:?}"
        );
    }
    let s1 = starts(&msgs1, "t-cron");
    let s2 = starts(&msgs2, "t-cron");
    assert_eq!(s1.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1]);
    assert_eq!(s2.iter().map(|s| s.0).collect::<Vec<_>>(), vec![2]);
    let gap = s2[0].1 - s1[0].1;
    assert!((500..2000).contains(&gap), "runs {gap} ms apart");
    for (r, n) in [(&r1, 1), (&r2, 2)] {
        assert_eq!((r.run, r.more, r.status), (n, true, S::Success));
        assert_eq!(output(r), "tick\n");
        assert_eq!(r.output_len, 0);
    }

    // Each run waits for its own ack.
    assert!(run_dir(state.path(), "t-cron", 1).exists());
    ack(&mut c, "t-cron", 2).await;
    assert!(gone_within(&run_dir(state.path(), "t-cron", 2), Duration::from_secs(3)).await);
    assert!(run_dir(state.path(), "t-cron", 1)
        .join("result.json")
        .exists());
    // An ack for the one-time task of that id (run 0) is not one for run 1.
    ack(&mut c, "t-cron", 0).await;
    ack(&mut c, "t-cron", 1).await;
    assert!(gone_within(&run_dir(state.path(), "t-cron", 1), Duration::from_secs(3)).await);
    assert!(schedule_file(state.path(), "t-cron").exists());
    stop(agent).await;
}

#[tokio::test]
async fn a_rate_fires_at_its_anchor_plus_whole_intervals() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let mut t = repeating("t-rate", "true", RepeatMode::Period, "rate(1s)");
    let anchor = oca_domain::time::now_millis() - 700;
    t.repeat.as_mut().unwrap().anchor = anchor;
    c.send(ServerMsg::Run(t)).await;
    let (msgs, _) = until_run(&mut c, "t-rate", 2).await;
    let s = starts(&msgs, "t-rate");
    assert_eq!(s.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
    for (_, at) in s {
        let into_interval = (at - anchor) % 1000;
        assert!(
            into_interval < 500, // anchored on receipt instead, it would be ~700
            "started {into_interval} ms into an interval"
        );
    }
    stop(agent).await;
}

#[tokio::test]
async fn run_numbers_go_on_across_a_restart_and_no_run_happens_twice() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(repeating(
        "t-count",
        "echo n",
        RepeatMode::Period,
        EVERY_SECOND,
    )))
    .await;
    let (mut before, _) = until_run(&mut c, "t-count", 2).await;
    ack(&mut c, "t-count", 2).await;
    // Run 1 stays unacknowledged.
    stop(agent).await;
    drop(c);
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(schedule_file(state.path(), "t-count")).unwrap())
            .unwrap();
    let last = kept["last_run"].as_u64().unwrap();
    assert!(last >= 2);

    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-count".into(),
            finished: false,
            repeating: Some(1)
        }]
    );
    let (after, _) = until_run(&mut c, "t-count", last + 2).await;
    // The unacknowledged result came again.
    assert!(after
        .iter()
        .any(|m| matches!(m, AgentMsg::Finished(r) if r.run == 1)));
    // Every run number started at one time only, and the new runs follow the old ones.
    before.extend(after);
    let mut at: BTreeMap<u64, i64> = BTreeMap::new();
    for (run, start) in starts(&before, "t-count") {
        assert_eq!(
            *at.entry(run).or_insert(start),
            start,
            "run {run} ran twice"
        );
    }
    let runs: Vec<u64> = at.keys().copied().collect();
    assert!(
        runs.contains(&(last + 1)) && runs.contains(&(last + 2)),
        "{runs:?}"
    );
    stop(agent).await;
}

#[tokio::test]
async fn a_slot_due_while_the_previous_run_goes_on_is_skipped() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(repeating(
        "t-slow",
        "sleep 1.5",
        RepeatMode::Period,
        EVERY_SECOND,
    )))
    .await;
    let (msgs1, r1) = until_run(&mut c, "t-slow", 1).await;
    let s1 = starts(&msgs1, "t-slow");
    assert_eq!(s1.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1]);
    assert_eq!(r1.status, S::Success);
    // Run 2 is the first slot after run 1 ended: the slot in between was not stacked,
    // nor counted.
    let AgentMsg::Started {
        run, start_time, ..
    } = next(&mut c).await
    else {
        panic!("expected Started");
    };
    assert_eq!(run, 2);
    assert!(start_time >= r1.finish_time, "runs overlap");
    assert!(start_time - s1[0].1 >= 1500);
    // (Slack for a loaded machine: the point is that it is not late by a whole
    // run, as a stacked run would be.)
    assert!(start_time - r1.finish_time <= 2500);
    stop(agent).await;
}

#[tokio::test]
async fn stop_ends_the_schedule_and_the_current_run() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let marker = state.path().join("begun");
    let t = repeating(
        "t-stop",
        &format!("echo begun; touch {}; sleep 30", marker.display()),
        RepeatMode::Period,
        EVERY_SECOND,
    );
    c.send(ServerMsg::Run(t.clone())).await;
    assert!(matches!(next(&mut c).await, AgentMsg::Scheduled { .. }));
    assert!(matches!(
        next(&mut c).await,
        AgentMsg::Started { run: 1, .. }
    ));
    // Stop once the script has surely printed (a loaded machine may take a moment).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !marker.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.send(ServerMsg::Stop {
        invoke_id: "t-stop".into(),
    })
    .await;
    let (_, r) = until_run(&mut c, "t-stop", 1).await;
    assert_eq!((r.status, r.more), (S::Terminated, false));
    assert_eq!(output(&r), "begun\n");
    assert!(!schedule_file(state.path(), "t-stop").exists());

    // Stopped while idle: nothing to send, the schedule is gone.
    let idle = repeating(
        "t-idle",
        "echo never",
        RepeatMode::Period,
        "0 0 0 1 1 ? 2099",
    );
    c.send(ServerMsg::Run(idle)).await;
    assert!(matches!(next(&mut c).await, AgentMsg::Scheduled { .. }));
    assert!(schedule_file(state.path(), "t-idle").exists());
    c.send(ServerMsg::Stop {
        invoke_id: "t-idle".into(),
    })
    .await;
    // A stale Run for the stopped task (its last result not yet acknowledged) changes
    // nothing; no slot fires either.
    c.send(ServerMsg::Run(t)).await;
    assert_eq!(quiet_for(&mut c, Duration::from_millis(1500)).await, vec![]);
    assert!(!schedule_file(state.path(), "t-idle").exists());
    assert!(!schedule_file(state.path(), "t-stop").exists());

    // Hello lists neither as repeating; the unacknowledged run is still known.
    stop(agent).await;
    drop(c);
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-stop".into(),
            finished: true,
            repeating: None
        }]
    );
    let (_, again) = until_run(&mut c, "t-stop", 1).await;
    assert_eq!(again, r);
    stop(agent).await;
}

#[tokio::test]
async fn a_higher_revision_replaces_the_task_a_lower_one_changes_nothing() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let v1 = repeating("t-rev", "echo v1", RepeatMode::Period, EVERY_SECOND);
    c.send(ServerMsg::Run(v1.clone())).await;
    assert!(matches!(
        next(&mut c).await,
        AgentMsg::Scheduled { revision: 1, .. }
    ));
    let (_, r1) = until_run(&mut c, "t-rev", 1).await;
    assert_eq!(output(&r1), "v1\n");

    let v2 = Task {
        script: "echo v2".into(),
        revision: 2,
        ..v1.clone()
    };
    c.send(ServerMsg::Run(v2)).await;
    let mut run = 1;
    let mut replaced = false;
    loop {
        match next(&mut c).await {
            AgentMsg::Scheduled { revision, .. } => {
                assert_eq!(revision, 2);
                replaced = true;
            }
            AgentMsg::Started { run: n, .. } => {
                assert_eq!(n, run + 1, "numbers go on");
                run = n;
            }
            AgentMsg::Finished(r) if output(&r) == "v2\n" => {
                assert!(replaced);
                break;
            }
            AgentMsg::Finished(r) => assert_eq!(output(&r), "v1\n"),
            m => panic!("{m:?}"),
        }
    }
    let stale = Task {
        script: "echo v0".into(),
        revision: 1,
        ..v1
    };
    c.send(ServerMsg::Run(stale)).await;
    loop {
        match next(&mut c).await {
            AgentMsg::Scheduled { revision, .. } => {
                assert_eq!(revision, 2);
                break;
            }
            AgentMsg::Started { .. } => {}
            AgentMsg::Finished(r) => assert_eq!(output(&r), "v2\n"),
            m => panic!("{m:?}"),
        }
    }
    let (_, later) = until_run(&mut c, "t-rev", run + 2).await;
    assert_eq!(output(&later), "v2\n");
    stop(agent).await;
}

#[tokio::test]
async fn reboot_tasks_fire_once_per_new_boot() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let boot = state.path().join("boot_id");
    std::fs::write(&boot, "boot-a\n").unwrap();
    let url = server.url.clone();
    let start = || start_agent_on_boot(&url, state.path(), false, Some(&boot));

    let agent = start();
    let (mut c, _) = server.welcome(30).await;
    for (id, mode) in [
        ("t-next", RepeatMode::NextRebootOnly),
        ("t-every", RepeatMode::EveryReboot),
    ] {
        c.send(ServerMsg::Run(repeating(
            id,
            &format!("echo {id}"),
            mode,
            "",
        )))
        .await;
        assert!(matches!(next(&mut c).await, AgentMsg::Scheduled { .. }));
    }
    assert_eq!(quiet_for(&mut c, Duration::from_millis(700)).await, vec![]);

    // A restart on the same boot fires nothing.
    stop(agent).await;
    drop(c);
    let agent = start();
    let (mut c, known) = server.welcome(30).await;
    let repeating_tasks = |ids: &[&str]| -> Vec<KnownTask> {
        ids.iter()
            .map(|id| KnownTask {
                invoke_id: id.to_string(),
                finished: false,
                repeating: Some(1),
            })
            .collect()
    };
    assert_eq!(known, repeating_tasks(&["t-every", "t-next"]));
    assert_eq!(quiet_for(&mut c, Duration::from_millis(700)).await, vec![]);

    // Another boot: each fires once.
    stop(agent).await;
    drop(c);
    std::fs::write(&boot, "boot-b\n").unwrap();
    let agent = start();
    let (mut c, _) = server.welcome(30).await;
    let mut results = BTreeMap::new();
    while results.len() < 2 {
        if let AgentMsg::Finished(r) = next(&mut c).await {
            results.insert(r.invoke_id.clone(), r);
        }
    }
    let (next_r, every_r) = (&results["t-next"], &results["t-every"]);
    assert_eq!((next_r.run, next_r.more), (1, false));
    assert_eq!((every_r.run, every_r.more), (1, true));
    assert_eq!(output(next_r), "t-next\n");
    ack(&mut c, "t-next", 1).await;
    ack(&mut c, "t-every", 1).await;
    assert!(
        gone_within(
            &schedule_file(state.path(), "t-next"),
            Duration::from_secs(3)
        )
        .await
    );
    assert!(gone_within(&run_dir(state.path(), "t-every", 1), Duration::from_secs(3)).await);
    assert_eq!(quiet_for(&mut c, Duration::from_millis(500)).await, vec![]);

    // Restarted on that boot again: nothing; NextRebootOnly is gone.
    stop(agent).await;
    drop(c);
    let agent = start();
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(known, repeating_tasks(&["t-every"]));
    assert_eq!(quiet_for(&mut c, Duration::from_millis(700)).await, vec![]);

    // A third boot: EveryReboot again, run 2.
    stop(agent).await;
    drop(c);
    std::fs::write(&boot, "boot-c\n").unwrap();
    let agent = start();
    let (mut c, _) = server.welcome(30).await;
    let (msgs, r) = until_run(&mut c, "t-every", 2).await;
    assert!(r.more);
    assert!(msgs
        .iter()
        .all(|m| matches!(m, AgentMsg::Started { run: 2, .. })));
    stop(agent).await;
}

#[tokio::test]
async fn an_at_runs_once_even_when_its_time_passed_while_the_agent_was_down() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let at = format!("at({})", soon.format("%Y-%m-%d %H:%M:%S"));
    c.send(ServerMsg::Run(repeating(
        "t-live",
        "echo live",
        RepeatMode::Period,
        &at,
    )))
    .await;
    c.send(ServerMsg::Run(repeating(
        "t-late",
        "echo late",
        RepeatMode::Period,
        &at,
    )))
    .await;
    assert!(matches!(next(&mut c).await, AgentMsg::Scheduled { .. }));
    assert!(matches!(next(&mut c).await, AgentMsg::Scheduled { .. }));
    // t-late: the agent is down at that time (t-live rides along).
    stop(agent).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let mut results = BTreeMap::new();
    while results.len() < 2 {
        if let AgentMsg::Finished(r) = next(&mut c).await {
            results.insert(r.invoke_id.clone(), r);
        }
    }
    for (id, out) in [("t-late", "late\n"), ("t-live", "live\n")] {
        let r = &results[id];
        assert_eq!((r.run, r.more, r.status), (1, false, S::Success));
        assert_eq!(output(r), out);
        assert!(gone_within(&schedule_file(state.path(), id), Duration::from_secs(3)).await);
    }
    ack(&mut c, "t-late", 1).await;
    ack(&mut c, "t-live", 1).await;
    assert_eq!(quiet_for(&mut c, Duration::from_millis(500)).await, vec![]);
    stop(agent).await;
    drop(c);
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(known, vec![]);
    assert_eq!(quiet_for(&mut c, Duration::from_millis(500)).await, vec![]);
    stop(agent).await;
}

#[tokio::test]
async fn a_frequency_that_cannot_fire_here_ends_the_task() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    for (id, frequency) in [
        ("t-garbage", "every other day"),
        ("t-past", "at(2020-01-01 00:00:00)"),
        ("t-over", "0 0 0 1 1 ? 2021"),
    ] {
        c.send(ServerMsg::Run(repeating(
            id,
            "echo never",
            RepeatMode::Period,
            frequency,
        )))
        .await;
        match next(&mut c).await {
            AgentMsg::Finished(r) => {
                assert_eq!(r.invoke_id, id);
                assert_eq!((r.run, r.more), (1, false));
                assert_eq!(r.status, S::Invalid);
                assert_eq!(r.error, Some(TaskError::BadCronExpression));
                assert_eq!(r.start_time, None);
            }
            m => panic!("{id}: {m:?}"),
        }
        assert!(!schedule_file(state.path(), id).exists());
        ack(&mut c, id, 1).await;
        assert!(gone_within(&run_dir(state.path(), id, 1), Duration::from_secs(3)).await);
    }
    stop(agent).await;
}

#[tokio::test]
async fn runs_go_on_while_the_server_is_away_and_their_results_follow() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(repeating(
        "t-away",
        "echo away",
        RepeatMode::Period,
        EVERY_SECOND,
    )))
    .await;
    let (_, r1) = until_run(&mut c, "t-away", 1).await;
    ack(&mut c, "t-away", 1).await;
    // The server goes away for a while.
    server
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    drop(c);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    server
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].repeating, Some(1));
    // The runs made meanwhile: each reported, in order, from run 2 on.
    let mut results = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline || results.len() < 2 {
        if let AgentMsg::Finished(r) = next(&mut c).await {
            assert!(r.start_time > r1.start_time);
            results.insert(r.run, r);
        }
    }
    let runs: Vec<u64> = results.keys().copied().collect();
    assert_eq!(runs, (2..2 + runs.len() as u64).collect::<Vec<_>>());
    assert!(runs.len() >= 3, "runs while away: {runs:?}");
    stop(agent).await;
}
