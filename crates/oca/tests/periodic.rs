//! Periodic and boot-time invocations end to end, with real agents and second-scale
//! cron frequencies (the server accepts them with the test-only
//! `--min-cron-interval-secs`): Scheduled between runs, Repeats, history, stop,
//! modification, skipped overlapping runs, no run twice across agent and server
//! restarts, reboot modes by boot id. Nothing here waits for minutes.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn server() -> Server {
    Server::start_with(&["--min-cron-interval-secs", "1"])
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// RunCommand with a repeat mode; returns the invoke id.
fn repeat(c: &Client, instance: &str, script: &str, extra: &[(&str, &str)]) -> String {
    c.run(script, &[instance], extra)
}

fn history(c: &Client, invoke_id: &str) -> Vec<Value> {
    let body = c.ok(
        "DescribeInvocationResults",
        &[
            ("InvokeId", invoke_id),
            ("IncludeHistory", "true"),
            ("PageSize", "50"),
        ],
    );
    body["Invocation"]["InvocationResults"]["InvocationResult"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn repeats_of(runs: &[Value]) -> Vec<u64> {
    let mut v: Vec<u64> = runs
        .iter()
        .map(|r| r["Repeats"].as_u64().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_periodic_invocation_runs_on_schedule_until_stopped() {
    let server = server();
    let agent = server.agent("cron");
    let c = server.client();
    let dir = scratch_dir();
    let log = dir.join("runs");
    let script = format!(
        "echo run >> {}; echo out-$(wc -l < {})",
        log.display(),
        log.display()
    );
    let id = repeat(
        &c,
        &agent.instance_id,
        &script,
        &[
            ("RepeatMode", "Period"),
            ("Frequency", "*/1 * * * * ?"),
            ("Timeout", "10"),
        ],
    );
    let inv = c.invocation(&id);
    assert_eq!(inv["RepeatMode"], "Period");
    assert_eq!(inv["Timed"], true);
    assert_eq!(inv["Frequency"], "*/1 * * * * ?");
    // Runs come, one per second, each recorded once.
    let runs = wait_for(WAIT, || {
        let h = history(&c, &id);
        (h.len() >= 3).then_some(h)
    })
    .expect("three runs");
    let numbers = repeats_of(&runs);
    let mut distinct = numbers.clone();
    distinct.dedup();
    assert_eq!(numbers, distinct, "no run twice: {runs:?}");
    assert_eq!(numbers[..3], [1, 2, 3]);
    for r in &runs {
        assert_eq!(r["InvocationStatus"], "Success", "{r}");
        assert_eq!(r["ExitCode"], 0);
        assert!(b64(&r["Output"]).starts_with("out-"), "{r}");
    }
    // Between runs the task is Scheduled (or Running during one); the whole invocation
    // stays Running in the legacy status.
    let inv = c.invocation(&id);
    assert_eq!(inv["InvokeStatus"], "Running", "{inv}");
    let one = &inv["InvokeInstances"]["InvokeInstance"][0];
    assert!(
        matches!(
            one["InvocationStatus"].as_str(),
            Some("Scheduled" | "Running")
        ),
        "{inv}"
    );
    assert!(one["Repeats"].as_u64().unwrap() >= 3, "{inv}");
    // The plain result is the latest run.
    let latest = c.results(&id);
    assert_eq!(latest.len(), 1);
    assert!(latest[0]["Repeats"].as_u64().unwrap() >= 3);

    c.ok("StopInvocation", &[("InvokeId", &id)]);
    let stopped = wait_for(WAIT, || {
        let inv = c.invocation(&id);
        (inv["InvokeStatus"] == "Stopped").then_some(inv)
    })
    .expect("stopped");
    assert_eq!(stopped["InvocationStatus"], "Stopped", "{stopped}");
    // No run after the stop.
    let after_stop = lines(&log).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines(&log).len(), after_stop, "runs went on after the stop");
    let recorded = history(&c, &id).len();
    assert_eq!(recorded, after_stop, "every run is in the history, once");
}

fn run_params<'a>(instance: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("Type", "RunShellScript"),
        ("CommandContent", "true"),
        ("ContentEncoding", "PlainText"),
        ("InstanceId.1", instance),
    ];
    p.extend_from_slice(extra);
    p
}

#[test]
fn repeat_modes_are_checked_at_the_api() {
    let server = Server::start();
    let agent = server.agent("checks");
    let c = server.client();
    let instance = agent.instance_id.as_str();
    let run = |extra: &[(&'static str, &'static str)]| run_params(instance, extra);
    c.err(
        "RunCommand",
        &run(&[("RepeatMode", "Period")]),
        "MissingParam.Frequency",
        400,
    );
    c.err(
        "RunCommand",
        &run(&[("Timed", "true")]),
        "MissingParam.Frequency",
        400,
    );
    c.err(
        "RunCommand",
        &run(&[("RepeatMode", "Weekly")]),
        "InvalidRepeatMode.NotFound",
        404,
    );
    for bad in [
        "rate(30s)",
        "rate(8d)",
        "rate(1m)",
        "*/1 * * * * ?",
        "0 0 0 30 2 ?",
        "0 0 25 * * ?",
        "at(2001-01-01 00:00:00)",
        "0 0 12 * * ? Mars/Olympus",
        "every day",
    ] {
        let body = c.err(
            "RunCommand",
            &run(&[("RepeatMode", "Period"), ("Frequency", bad)]),
            "InvalidParam.Frequency",
            400,
        );
        assert!(
            body["Message"].as_str().unwrap().contains("frequency"),
            "{bad}: {body}"
        );
    }
    // DryRun checks everything and runs nothing.
    let before = c.ok("DescribeInvocations", &[])["TotalCount"].clone();
    let dry = c.ok("RunCommand", &run(&[("RepeatMode", "DryRun")]));
    assert_eq!(dry["InvokeId"], "", "{dry}");
    c.err(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "true"),
            ("ContentEncoding", "PlainText"),
            ("InstanceId.1", "mi-nosuchinstance"),
            ("RepeatMode", "DryRun"),
        ],
        "InvalidInstance.NotFound",
        404,
    );
    assert_eq!(c.ok("DescribeInvocations", &[])["TotalCount"], before);
    // History and modification need a repeating invocation.
    let once = c.run("true", &[&agent.instance_id], &[]);
    c.err(
        "DescribeInvocationResults",
        &[("InvokeId", &once), ("IncludeHistory", "true")],
        "InvalidParameter",
        400,
    );
    c.err(
        "ModifyInvocationAttribute",
        &[
            ("InvokeId", &once),
            ("CommandContent", "echo x"),
            ("ContentEncoding", "PlainText"),
        ],
        "InvalidParameter",
        400,
    );
    c.err(
        "ModifyInvocationAttribute",
        &[
            ("InvokeId", "t-nosuchinvocation"),
            ("CommandContent", "eA=="),
        ],
        "InvalidInvokeId.NotFound",
        404,
    );
    // A valid one far in the future is accepted and waits, Scheduled.
    let later = c.run(
        "true",
        &[&agent.instance_id],
        &[("RepeatMode", "Period"), ("Frequency", "0 0 12 1 1 ? 2098")],
    );
    let scheduled = wait_for(WAIT, || {
        let inv = c.invocation(&later);
        (inv["InvocationStatus"] == "Scheduled").then_some(inv)
    });
    assert!(scheduled.is_some(), "{}", c.invocation(&later));
}

#[test]
fn an_overlapping_run_is_skipped_and_a_modification_takes_effect() {
    let server = server();
    let agent = server.agent("slow");
    let c = server.client();
    let dir = scratch_dir();
    let (log, lock) = (dir.join("log"), dir.join("lock"));
    // Each run takes 2.5 s on a 1 s schedule: runs must not overlap.
    let script = format!(
        "[ -e {lock} ] && echo overlap >> {log}; touch {lock}; echo start >> {log}; sleep 2.5; rm -f {lock}",
        lock = lock.display(),
        log = log.display()
    );
    let id = repeat(
        &c,
        &agent.instance_id,
        &script,
        &[
            ("RepeatMode", "Period"),
            ("Frequency", "*/1 * * * * ?"),
            ("Timeout", "10"),
        ],
    );
    wait_for(WAIT, || (history(&c, &id).len() >= 2).then_some(())).expect("two runs");
    let log_lines = lines(&log);
    assert!(!log_lines.iter().any(|l| l == "overlap"), "{log_lines:?}");

    // Modify the content: later runs run the new script.
    let marker = dir.join("modified");
    c.ok(
        "ModifyInvocationAttribute",
        &[
            ("InvokeId", &id),
            (
                "CommandContent",
                &format!("echo new >> {}", marker.display()),
            ),
            ("ContentEncoding", "PlainText"),
        ],
    );
    wait_for(WAIT, || (lines(&marker).len() >= 2).then_some(())).expect("the modified script runs");
    let inv = c.invocation(&id);
    assert!(b64(&inv["CommandContent"]).starts_with("echo new"), "{inv}");
    c.ok("StopInvocation", &[("InvokeId", &id)]);
}

#[test]
fn no_run_is_lost_or_repeated_across_agent_and_server_restarts() {
    let mut server = server();
    let mut agent = server.agent("steady");
    let c = server.client();
    let dir = scratch_dir();
    let log = dir.join("runs");
    let id = repeat(
        &c,
        &agent.instance_id,
        &format!("echo run >> {}", log.display()),
        &[
            ("RepeatMode", "Period"),
            ("Frequency", "*/1 * * * * ?"),
            ("Timeout", "10"),
        ],
    );
    wait_for(WAIT, || (history(&c, &id).len() >= 2).then_some(())).expect("first runs");

    // The agent restarts: the schedule goes on, numbers continue.
    agent.restart();
    let before = lines(&log).len();
    wait_for(WAIT, || (lines(&log).len() >= before + 2).then_some(()))
        .expect("runs after the agent's restart");

    // The server goes away: the agent keeps running the schedule; the results arrive
    // once the server is back.
    server.kill9();
    let during = lines(&log).len();
    wait_for(WAIT, || (lines(&log).len() >= during + 2).then_some(()))
        .expect("runs while the server is down");
    server.crash_and_restart();
    c.ok("StopInvocation", &[("InvokeId", &id)]);
    // Every run the host saw is recorded exactly once, numbered 1..n.
    let runs = wait_for(WAIT, || {
        let n = lines(&log).len();
        let h = history(&c, &id);
        (h.len() == n).then_some(h)
    })
    .unwrap_or_else(|| {
        panic!(
            "history {} runs, host {} runs",
            history(&c, &id).len(),
            lines(&log).len()
        )
    });
    let numbers = repeats_of(&runs);
    assert_eq!(numbers, (1..=runs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn reboot_modes_fire_once_per_boot_not_per_restart() {
    let server = server();
    let dir = scratch_dir();
    let boot = dir.join("boot_id");
    std::fs::write(&boot, "boot-1\n").unwrap();
    let boot_flag = boot.to_str().unwrap().to_string();
    let mut agent = server.agent_with("reboots", &["--boot-id-file", &boot_flag]);
    let c = server.client();
    let (every, next) = (dir.join("every"), dir.join("next"));
    let every_id = repeat(
        &c,
        &agent.instance_id,
        &format!("echo boot >> {}", every.display()),
        &[("RepeatMode", "EveryReboot")],
    );
    let next_id = repeat(
        &c,
        &agent.instance_id,
        &format!("echo boot >> {}", next.display()),
        &[("RepeatMode", "NextRebootOnly")],
    );
    for id in [&every_id, &next_id] {
        wait_for(WAIT, || {
            (c.invocation(id)["InvocationStatus"] == "Scheduled").then_some(())
        })
        .unwrap_or_else(|| panic!("{}", c.invocation(id)));
    }
    // A restart on the same boot fires nothing.
    agent.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert!(lines(&every).is_empty() && lines(&next).is_empty());

    // A new boot: both fire once.
    std::fs::write(&boot, "boot-2\n").unwrap();
    agent.restart();
    wait_for(WAIT, || (history(&c, &every_id).len() == 1).then_some(())).expect("EveryReboot ran");
    let next_done = wait_for(WAIT, || {
        let inv = c.invocation(&next_id);
        (inv["InvocationStatus"] == "Success").then_some(inv)
    })
    .unwrap_or_else(|| panic!("{}", c.invocation(&next_id)));
    assert_eq!(next_done["InvokeStatus"], "Finished", "{next_done}");
    assert_eq!(lines(&next).len(), 1);
    assert_eq!(lines(&every).len(), 1);
    assert_eq!(
        c.invocation(&every_id)["InvokeInstances"]["InvokeInstance"][0]["InvocationStatus"],
        "Scheduled"
    );

    // Another boot: EveryReboot again, NextRebootOnly never again.
    std::fs::write(&boot, "boot-3\n").unwrap();
    agent.restart();
    wait_for(WAIT, || (lines(&every).len() == 2).then_some(())).expect("second boot");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lines(&next).len(), 1);
    wait_for(WAIT, || (history(&c, &every_id).len() == 2).then_some(()))
        .expect("both boots recorded");
}

#[test]
fn the_cli_schedules_and_stops() {
    let server = server();
    let agent = server.agent("cli");
    let c = server.client();
    let dir = scratch_dir();
    let creds = dir.join("credentials.json");
    let json = serde_json::json!({
        "endpoint": server.url(),
        "region_id": "cn-hangzhou",
        "access_key_id": c.key_id,
        "access_key_secret": c.secret,
    });
    std::fs::write(&creds, json.to_string()).unwrap();
    let oca = |args: &[&str]| {
        let out = std::process::Command::new(oca_bin())
            .args(args)
            .arg("--config")
            .arg(&creds)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let log = dir.join("runs");
    let out = oca(&[
        "run",
        "--instance",
        &agent.instance_id,
        "--timeout",
        "10",
        "--every",
        "*/1 * * * * ?",
        &format!("echo run >> {}", log.display()),
    ]);
    let id = out.trim().to_string();
    assert!(id.starts_with("t-"), "{out}");
    wait_for(WAIT, || (lines(&log).len() >= 2).then_some(())).expect("scheduled runs");
    oca(&["stop", &id]);
    wait_for(WAIT, || {
        (c.invocation(&id)["InvokeStatus"] == "Stopped").then_some(())
    })
    .expect("stopped");
}

#[test]
fn a_saved_command_invoked_periodically_stops_on_the_listed_instances_only() {
    let server = server();
    let (a, b) = (server.agent("left"), server.agent("right"));
    let c = server.client();
    let dir = scratch_dir();
    let command_id = c.ok(
        "CreateCommand",
        &[
            ("Name", "tick"),
            ("Type", "RunShellScript"),
            (
                "CommandContent",
                &format!("echo tick >> {}/{{{{ACS::InstanceId}}}}", dir.display()),
            ),
            ("ContentEncoding", "PlainText"),
            ("EnableParameter", "true"),
            ("Timeout", "10"),
        ],
    )["CommandId"]
        .as_str()
        .unwrap()
        .to_string();
    let id = c.ok(
        "InvokeCommand",
        &[
            ("CommandId", &command_id),
            ("InstanceId.1", &a.instance_id),
            ("InstanceId.2", &b.instance_id),
            ("RepeatMode", "Period"),
            ("Frequency", "*/1 * * * * ?"),
        ],
    )["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    let runs_on = |instance: &str| lines(&dir.join(instance)).len();
    let (left_id, right_id) = (a.instance_id.as_str(), b.instance_id.as_str());
    wait_for(WAIT, || {
        (runs_on(left_id) >= 1 && runs_on(right_id) >= 1).then_some(())
    })
    .expect("both run");
    c.ok(
        "StopInvocation",
        &[("InvokeId", &id), ("InstanceId.1", &a.instance_id)],
    );
    let status_of = |instance: &str| -> String {
        let inv = c.invocation(&id);
        inv["InvokeInstances"]["InvokeInstance"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["InstanceId"] == instance)
            .map(|i| i["InvocationStatus"].as_str().unwrap().to_string())
            .unwrap()
    };
    wait_for(WAIT, || {
        matches!(
            status_of(&a.instance_id).as_str(),
            "Cancelled" | "Terminated"
        )
        .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", c.invocation(&id)));
    std::thread::sleep(Duration::from_millis(500));
    let (left, right) = (runs_on(left_id), runs_on(right_id));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runs_on(left_id), left, "the stopped instance ran again");
    assert!(runs_on(right_id) > right, "the other instance stopped too");
    assert_eq!(c.invocation(&id)["InvokeStatus"], "Running");
    c.ok("StopInvocation", &[("InvokeId", &id)]);
    wait_for(WAIT, || {
        (c.invocation(&id)["InvokeStatus"] == "Stopped").then_some(())
    })
    .expect("all stopped");
}
