//! End to end: a real server and three real agents on 127.0.0.1, driven through the
//! signed API. Each test owns its server and agents.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn fleet() -> (Server, Vec<Agent>) {
    let server = Server::start();
    let agents = vec![
        server.agent("alpha"),
        server.agent("beta"),
        server.agent("gamma"),
    ];
    (server, agents)
}

fn ids(agents: &[Agent]) -> Vec<&str> {
    agents.iter().map(|a| a.instance_id.as_str()).collect()
}

#[test]
fn success_on_three_agents_with_interleaved_output() {
    let (server, agents) = fleet();
    let c = server.client();
    let invoke = c.run("echo out1; echo err1 >&2; echo out2", &ids(&agents), &[]);
    let results = c.wait(&invoke, WAIT);
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r["InvocationStatus"], "Success", "{r}");
        assert_eq!(r["InvokeRecordStatus"], "Finished");
        assert_eq!(r["ExitCode"], 0);
        assert_eq!(r["ErrorCode"], "");
        assert_eq!(
            b64(&r["Output"]),
            "out1\nerr1\nout2\n",
            "stdout and stderr in order"
        );
        assert_eq!(r["Dropped"], 0);
        assert_eq!(r["Repeats"], 1);
        assert!(!r["StartTime"].as_str().unwrap().is_empty());
        assert!(!r["FinishedTime"].as_str().unwrap().is_empty());
    }
    let inv = c.invocation(&invoke);
    assert_eq!(inv["InvokeStatus"], "Finished");
    assert_eq!(inv["InvocationStatus"], "Success");
    assert_eq!(inv["CommandType"], "RunShellScript");
    let instances = inv["InvokeInstances"]["InvokeInstance"].as_array().unwrap();
    assert_eq!(instances.len(), 3);
    assert!(instances
        .iter()
        .all(|i| i["InstanceInvokeStatus"] == "Finished"));

    // PlainText results.
    let body = c.ok(
        "DescribeInvocationResults",
        &[
            ("InvokeId", &invoke),
            ("ContentEncoding", "PlainText"),
            ("InstanceId", agents[0].instance_id.as_str()),
        ],
    );
    let list = body["Invocation"]["InvocationResults"]["InvocationResult"]
        .as_array()
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["Output"], "out1\nerr1\nout2\n");

    // The agents report as online.
    let status = c.ok(
        "DescribeCloudAssistantStatus",
        &[("InstanceId.1", agents[1].instance_id.as_str())],
    );
    let s = &status["InstanceCloudAssistantStatusSet"]["InstanceCloudAssistantStatus"][0];
    assert_eq!(s["CloudAssistantStatus"], "true");
    assert_eq!(s["InvocationCount"], 1);
    assert!(!s["LastHeartbeatTime"].as_str().unwrap().is_empty());
}

#[test]
fn nonzero_exit_is_failed_with_exit_code_nonzero() {
    let server = Server::start();
    let a = server.agent("solo");
    let c = server.client();
    let invoke = c.run("echo before; exit 3", &[&a.instance_id], &[]);
    let r = &c.wait(&invoke, WAIT)[0];
    assert_eq!(r["InvocationStatus"], "Failed");
    assert_eq!(r["InvokeRecordStatus"], "Finished", "the process finished");
    assert_eq!(r["ExitCode"], 3);
    assert_eq!(r["ErrorCode"], "ExitCodeNonzero");
    assert_eq!(
        r["ErrorInfo"],
        "the command execution exit code is not zero"
    );
    assert_eq!(b64(&r["Output"]), "before\n");
    let inv = c.invocation(&invoke);
    assert_eq!(
        inv["InvokeStatus"], "Finished",
        "legacy status: processes finished"
    );
    assert_eq!(inv["InvocationStatus"], "Failed");
}

#[test]
fn timeout_kills_the_whole_tree() {
    let server = Server::start();
    let a = server.agent("slow");
    let c = server.client();
    let dir = scratch_dir();
    let pidfile = dir.join("pid");
    let script = format!(
        "setsid sleep 1000 & echo $! > {p}; (sleep 1000 &) ; echo started; sleep 1000",
        p = pidfile.display()
    );
    let invoke = c.run(&script, &[&a.instance_id], &[("Timeout", "10")]);
    let r = &c.wait(&invoke, Duration::from_secs(40))[0];
    assert_eq!(r["InvocationStatus"], "Timeout", "{r}");
    assert_eq!(r["InvokeRecordStatus"], "Failed");
    assert_eq!(r["ErrorCode"], "ExecutionTimeout");
    assert_eq!(r["ErrorInfo"], "the command execution has been timeout");
    assert_eq!(b64(&r["Output"]), "started\n");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || (!proc_alive(pid)).then_some(())).is_some(),
        "the setsid child {pid} survived the timeout"
    );
    assert_eq!(c.invocation(&invoke)["InvokeStatus"], "Failed");
}

#[test]
fn stop_terminates_a_running_invocation() {
    let server = Server::start();
    let a = server.agent("stoppable");
    let c = server.client();
    let invoke = c.run(
        "echo going; sleep 1000",
        &[&a.instance_id],
        &[("Timeout", "600")],
    );
    wait_for(WAIT, || {
        (c.results(&invoke)[0]["InvocationStatus"] == "Running").then_some(())
    })
    .expect("the run started");
    c.ok("StopInvocation", &[("InvokeId", &invoke)]);
    let r = &c.wait(&invoke, WAIT)[0];
    assert_eq!(r["InvocationStatus"], "Terminated", "{r}");
    assert_eq!(r["InvokeRecordStatus"], "Stopped");
    assert!(!r["StopTime"].as_str().unwrap().is_empty());
    let inv = c.invocation(&invoke);
    assert_eq!(inv["InvokeStatus"], "Stopped");
    assert_eq!(inv["InvocationStatus"], "Stopped");
    // Stopping an unknown invocation is NotFound.
    c.err(
        "StopInvocation",
        &[("InvokeId", "t-doesnotexist")],
        "InvalidInvokeId.NotFound",
        404,
    );
}

#[test]
fn an_offline_agent_makes_a_partial_failure() {
    let (server, mut agents) = fleet();
    let c = server.client();
    agents[2].kill9();
    wait_for(WAIT, || {
        let s = c.ok(
            "DescribeCloudAssistantStatus",
            &[("InstanceId.1", agents[2].instance_id.as_str())],
        );
        (s["InstanceCloudAssistantStatusSet"]["InstanceCloudAssistantStatus"][0]
            ["CloudAssistantStatus"]
            == "false")
            .then_some(())
    })
    .expect("the killed agent is seen offline");
    let invoke = c.run("echo hi", &ids(&agents), &[]);
    let results = c.wait(&invoke, WAIT);
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r["InstanceId"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id(&agents[0].instance_id)["InvocationStatus"], "Success");
    let dead = by_id(&agents[2].instance_id);
    assert_eq!(dead["InvocationStatus"], "Aborted", "{dead}");
    assert_eq!(dead["InvokeRecordStatus"], "Failed");
    assert_eq!(dead["ErrorCode"], "ClientNotRunning");
    assert_eq!(
        dead["ErrorInfo"],
        "the aliyun service is not running on the instance"
    );
    let inv = c.invocation(&invoke);
    assert_eq!(inv["InvokeStatus"], "PartialFailed");
    assert_eq!(inv["InvocationStatus"], "PartialFailed");
}

#[test]
fn parameters_and_builtins_are_filled_in() {
    let server = Server::start();
    let a = server.agent("paramhost");
    let c = server.client();
    let content = "echo {{greeting}}, {{ACS::InstanceName}} {{ACS::InstanceId}} {{ACS::RegionId}}";
    let created = c.ok(
        "CreateCommand",
        &[
            ("Name", "greet"),
            ("Type", "RunShellScript"),
            ("CommandContent", content),
            ("ContentEncoding", "PlainText"),
            ("EnableParameter", "true"),
        ],
    );
    let cmd = created["CommandId"].as_str().unwrap();
    let listed = c.ok("DescribeCommands", &[("CommandId", cmd)]);
    let command = &listed["Commands"]["Command"][0];
    assert_eq!(command["ParameterNames"]["ParameterName"][0], "greeting");
    assert_eq!(b64(&command["CommandContent"]), content);

    let invoke = c.ok(
        "InvokeCommand",
        &[
            ("CommandId", cmd),
            ("InstanceId.1", &a.instance_id),
            ("Parameters", r#"{"greeting":"hello"}"#),
        ],
    )["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = &c.wait(&invoke, WAIT)[0];
    assert_eq!(
        b64(&r["Output"]),
        format!("hello, paramhost {} {}\n", a.instance_id, REGION)
    );
    assert_eq!(
        c.invocation(&invoke)["Parameters"],
        r#"{"greeting":"hello"}"#
    );

    c.err(
        "InvokeCommand",
        &[("CommandId", cmd), ("InstanceId.1", &a.instance_id)],
        "Parameter.MissingValue",
        400,
    );
    c.err(
        "InvokeCommand",
        &[
            ("CommandId", cmd),
            ("InstanceId.1", &a.instance_id),
            ("Parameters", r#"{"greeting":"a","x":"b"}"#),
        ],
        "Parameter.NotMatched",
        403,
    );
    c.err(
        "InvokeCommand",
        &[
            ("CommandId", cmd),
            ("InstanceId.1", &a.instance_id),
            ("Parameters", "[1,2]"),
        ],
        "InvalidParameter.Parameters",
        400,
    );
    c.err(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "echo {{x}}"),
            ("ContentEncoding", "PlainText"),
            ("InstanceId.1", &a.instance_id),
            ("Parameters", r#"{"x":"1"}"#),
        ],
        "Parameter.Disabled",
        400,
    );
    c.err(
        "InvokeCommand",
        &[("CommandId", "c-nope"), ("InstanceId.1", &a.instance_id)],
        "InvalidCmdId.NotFound",
        404,
    );
    c.err(
        "InvokeCommand",
        &[
            ("CommandId", cmd),
            ("InstanceId.1", "mi-nope"),
            ("Parameters", r#"{"greeting":"x"}"#),
        ],
        "InvalidInstance.NotFound",
        404,
    );
}

#[test]
fn user_directory_and_long_output() {
    let server = Server::start();
    let a = server.agent("userhost");
    let c = server.client();
    let id = a.instance_id.as_str();

    let invoke = c.run("id -un; pwd", &[id], &[("WorkingDir", "/tmp")]);
    let r = &c.wait(&invoke, WAIT)[0];
    let out = b64(&r["Output"]);
    assert!(out.ends_with("/tmp\n"), "{out}");

    let invoke = c.run("pwd", &[id], &[("WorkingDir", "/no/such/dir")]);
    let r = &c.wait(&invoke, WAIT)[0];
    assert_eq!(r["ErrorCode"], "DirectoryNotExists", "{r}");
    assert_eq!(r["ErrorInfo"], "the specified directory does not exists");

    let invoke = c.run("id", &[id], &[("Username", "no-such-user-oca")]);
    let r = &c.wait(&invoke, WAIT)[0];
    assert_eq!(r["ErrorCode"], "AccountNotExists", "{r}");

    if nix_is_root() {
        let invoke = c.run(
            "id -un",
            &[id],
            &[("Username", "nobody"), ("WorkingDir", "/tmp")],
        );
        let r = &c.wait(&invoke, WAIT)[0];
        assert_eq!(b64(&r["Output"]), "nobody\n", "{r}");
        assert_eq!(r["Username"], "nobody");
    } else {
        eprintln!("not root: the run-as-user check is skipped");
    }

    // 100,000 bytes of output: 24 KB kept (head and tail), the rest counted in Dropped,
    // the whole output kept by the server.
    let invoke = c.run(
        "head -c 100000 /dev/zero | tr '\\0' x; echo; echo END",
        &[id],
        &[],
    );
    let r = &c.wait(&invoke, WAIT)[0];
    let kept = b64_bytes(&r["Output"]);
    assert_eq!(kept.len(), 24 * 1024);
    assert_eq!(
        r["Dropped"].as_u64().unwrap() as usize + kept.len(),
        100_005
    );
    assert!(kept.ends_with(b"x\nEND\n"));
    let full = c.ok(
        "DescribeInvocationOutput",
        &[("InvokeId", &invoke), ("InstanceId", id)],
    );
    assert_eq!(b64_bytes(&full["Output"]).len(), 100_005);

    // Bytes that are not UTF-8 survive.
    let invoke = c.run("printf 'a\\377b'", &[id], &[]);
    let r = &c.wait(&invoke, WAIT)[0];
    assert_eq!(b64_bytes(&r["Output"]), b"a\xffb");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn a_server_crash_loses_nothing() {
    let (mut server, agents) = fleet();
    let c = server.client();
    let done = c.run("echo first", &ids(&agents), &[]);
    let before = c.wait(&done, WAIT);
    // A run in flight while the server dies.
    let inflight = c.run("sleep 3; echo survived", &ids(&agents), &[]);
    wait_for(WAIT, || {
        c.results(&inflight)
            .iter()
            .all(|r| r["InvocationStatus"] == "Running")
            .then_some(())
    })
    .expect("the run started everywhere");
    server.crash_and_restart();
    let c = server.client();
    // Every record acknowledged before the crash is there, unchanged.
    assert_eq!(c.results(&done), before);
    let after = c.wait(&inflight, WAIT);
    for r in &after {
        assert_eq!(r["InvocationStatus"], "Success", "{r}");
        assert_eq!(b64(&r["Output"]), "survived\n");
    }
    // The agents are back online.
    for a in &agents {
        let s = c.ok(
            "DescribeCloudAssistantStatus",
            &[("InstanceId.1", a.instance_id.as_str())],
        );
        assert_eq!(
            s["InstanceCloudAssistantStatusSet"]["InstanceCloudAssistantStatus"][0]
                ["CloudAssistantStatus"],
            "true"
        );
    }
}

#[test]
fn an_agent_restart_mid_run_delivers_its_result_or_says_it_was_interrupted() {
    let server = Server::start();
    let mut a = server.agent("restarter");
    let c = server.client();
    let invoke = c.run("sleep 2; echo late", &[&a.instance_id], &[]);
    wait_for(WAIT, || {
        (c.results(&invoke)[0]["InvocationStatus"] == "Running").then_some(())
    })
    .expect("started");
    a.restart();
    let r = &c.wait(&invoke, WAIT)[0];
    // The run's process died with its agent: the result must say so, not hang.
    assert!(
        r["InvocationStatus"] == "Success" || r["ErrorCode"] == "ExecutionInterrupted",
        "{r}"
    );
}

#[test]
fn a_client_token_runs_once_and_replays_the_first_answer() {
    let server = Server::start();
    let a = server.agent("idem");
    let c = server.client();
    let dir = scratch_dir();
    let log = dir.join("runs");
    let script = format!("echo ran >> {}", log.display());
    let params = |token: &str, script: &str| -> Vec<(String, String)> {
        vec![
            ("RegionId".into(), REGION.into()),
            ("Type".into(), "RunShellScript".into()),
            ("CommandContent".into(), script.into()),
            ("ContentEncoding".into(), "PlainText".into()),
            ("InstanceId.1".into(), a.instance_id.clone()),
            ("ClientToken".into(), token.into()),
        ]
    };
    let call = |p: Vec<(String, String)>| {
        c.raw(
            "RunCommand",
            p,
            oca_domain::time::now_millis(),
            &oca_domain::ids::new_secret(24),
        )
    };
    let first = call(params("retry-1", &script)).json();
    let invoke = first["InvokeId"].as_str().unwrap().to_string();
    c.wait(&invoke, WAIT);
    // A retry (new nonce, new timestamp, same request) gets the first answer.
    let second = call(params("retry-1", &script)).json();
    assert_eq!(second["InvokeId"], first["InvokeId"]);
    assert_eq!(second["CommandId"], first["CommandId"]);
    assert_ne!(second["RequestId"], first["RequestId"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "ran\n",
        "the script ran once"
    );
    assert_eq!(
        c.ok(
            "DescribeInvocations",
            &[("InstanceId", a.instance_id.as_str())]
        )["TotalCount"],
        1
    );

    // The same token asking for something else is refused.
    let other = call(params("retry-1", "echo something else"));
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(other.json()["Code"], "IdempotentParameterMismatch");
    // A malformed token.
    let bad = call(params(&"x".repeat(65), &script));
    assert_eq!(
        (bad.status, bad.json()["Code"].as_str().unwrap()),
        (400, "InvalidClientToken.Malformed")
    );
    // Another token runs again.
    let third = call(params("retry-2", &script)).json();
    assert_ne!(third["InvokeId"], first["InvokeId"]);
    c.wait(third["InvokeId"].as_str().unwrap(), WAIT);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\nran\n");
}

#[test]
fn a_run_whose_agent_never_returns_ends_interrupted() {
    let server = Server::start_with(&["--lost-run-grace-ms", "1000"]);
    let mut a = server.agent("vanishing");
    let c = server.client();
    let invoke = c.run("sleep 25", &[&a.instance_id], &[("Timeout", "10")]);
    wait_for(WAIT, || {
        (c.results(&invoke)[0]["InvocationStatus"] == "Running").then_some(())
    })
    .expect("started");
    a.kill9();
    // Timeout (10 s) + grace (1 s) after the start, the run is ended, not left Running.
    let r = &c.wait(&invoke, Duration::from_secs(40))[0];
    assert_eq!(r["InvocationStatus"], "Error", "{r}");
    assert_eq!(r["ErrorCode"], "ExecutionInterrupted");
    assert_eq!(r["ErrorInfo"], "the command execution has been interrupted");
    assert_eq!(c.invocation(&invoke)["InvokeStatus"], "Failed");
}
