//! The audit trail end to end: every call that changes something (or tries to) and
//! every agent registration and cut-off is recorded with its time, account, key,
//! address, action, ids, result and request id; reads are not; nothing secret is;
//! `oca audit` lists and filters it.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// The whole trail as `oca audit -o json` prints it, with `extra` filters.
fn trail(s: &Server, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "-o", "json"];
    if !extra.contains(&"--limit") {
        args.extend(["--limit", "100000"]);
    }
    args.extend_from_slice(extra);
    let out = s.oca_ok(&args);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
        .as_array()
        .cloned()
        .unwrap()
}

/// The entry of API request `request_id`, once it is written (the trail is written off
/// the request path, within milliseconds). (An agent cut off by a deregistration is
/// recorded under the deregistration's request id too.)
fn entry(s: &Server, request_id: &str) -> Value {
    wait_for(Duration::from_secs(10), || {
        trail(s, &[])
            .into_iter()
            .find(|e| e["request_id"] == request_id && e["action"] != "CutOffAgent")
    })
    .unwrap_or_else(|| panic!("no audit entry for {request_id}: {:#?}", trail(s, &[])))
}

/// Entries of `action` once at least `n` are written.
fn entries_of(s: &Server, action: &str, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(10), || {
        let found = trail(s, &["--action", action]);
        (found.len() >= n).then_some(found)
    })
    .unwrap_or_else(|| panic!("fewer than {n} {action} entries: {:#?}", trail(s, &[])))
}

fn targets(e: &Value) -> Vec<String> {
    e["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Checks a successful call's entry: who, from where, what, on what.
fn assert_success(s: &Server, answer: &Value, action: &str, ids: &[&str]) -> Value {
    let request_id = answer["RequestId"].as_str().unwrap();
    let e = entry(s, request_id);
    assert_eq!(e["action"], action, "{e}");
    assert_eq!(e["account_id"], "default", "{e}");
    assert_eq!(e["access_key_id"], s.key_id.as_str(), "{e}");
    assert_eq!(e["source"], "127.0.0.1", "{e}");
    assert_eq!(e["result"], "Success", "{e}");
    assert_eq!(e["http_status"], 200, "{e}");
    assert_eq!(e["authenticated"], true, "{e}");
    assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    let t = targets(&e);
    for id in ids {
        assert!(t.iter().any(|x| x == id), "{action}: {id} not in {t:?}");
    }
    e
}

#[test]
fn every_change_is_recorded_and_nothing_secret() {
    let s = Server::start();
    let c = s.client();
    let agent = s.agent("audited");
    let mi = agent.instance_id.clone();
    let secret_script = "echo TOP-SECRET-SCRIPT-71f3";
    let secret_value = "TOP-SECRET-PARAM-9c2e";
    let secret_file = "TOP-SECRET-FILE-4d81";

    // The agent's registration (by `Server::agent`): its activation and instance.
    let registered = entries_of(&s, "RegisterAgent", 1);
    let reg = registered.last().unwrap();
    assert_eq!(reg["result"], "Success", "{reg}");
    assert_eq!(reg["account_id"], "default", "{reg}");
    assert_eq!(reg["source"], "127.0.0.1", "{reg}");
    assert_eq!(reg["authenticated"], true, "{reg}");
    assert!(targets(reg).contains(&mi), "{reg}");
    let created_activation = entries_of(&s, "CreateActivation", 1);
    assert_eq!(targets(&created_activation[0])[0], targets(reg)[0]);

    // Commands.
    let a = c.ok(
        "CreateCommand",
        &[
            ("Name", "audited"),
            ("Type", "RunShellScript"),
            ("CommandContent", "echo {{greeting}}"),
            ("ContentEncoding", "PlainText"),
            ("EnableParameter", "true"),
        ],
    );
    let cmd = a["CommandId"].as_str().unwrap().to_string();
    assert_success(&s, &a, "CreateCommand", &[&cmd]);
    let a = c.ok(
        "ModifyCommand",
        &[("CommandId", &cmd), ("Name", "audited2")],
    );
    assert_success(&s, &a, "ModifyCommand", &[&cmd]);
    let params = format!(r#"{{"greeting":"{secret_value}"}}"#);
    let a = c.ok(
        "InvokeCommand",
        &[
            ("CommandId", &cmd),
            ("InstanceId.1", &mi),
            ("Parameters", &params),
        ],
    );
    let invoked = a["InvokeId"].as_str().unwrap().to_string();
    assert_success(&s, &a, "InvokeCommand", &[&invoked, &cmd, &mi]);

    // A run, stopped.
    let a = c.ok(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", &format!("{secret_script}; sleep 30")),
            ("ContentEncoding", "PlainText"),
            ("InstanceId.1", &mi),
        ],
    );
    let run = a["InvokeId"].as_str().unwrap().to_string();
    let run_cmd = a["CommandId"].as_str().unwrap().to_string();
    let e = assert_success(&s, &a, "RunCommand", &[&run, &run_cmd, &mi]);
    assert_eq!(targets(&e)[0], run, "the created ids come first");
    let a = c.ok(
        "StopInvocation",
        &[("InvokeId", &run), ("InstanceId.1", &mi)],
    );
    assert_success(&s, &a, "StopInvocation", &[&run, &mi]);

    // A file.
    let dir = scratch_dir();
    let a = c.ok(
        "SendFile",
        &[
            ("InstanceId.1", &mi),
            ("Name", "audited.conf"),
            ("TargetDir", dir.to_str().unwrap()),
            ("Content", secret_file),
        ],
    );
    let sent = a["InvokeId"].as_str().unwrap().to_string();
    assert_success(&s, &a, "SendFile", &[&sent, &mi]);

    // Tags, renaming, activations.
    let a = c.ok(
        "TagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", &mi),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", secret_value),
        ],
    );
    assert_success(&s, &a, "TagResources", &[&mi]);
    let a = c.ok(
        "UntagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", &mi),
            ("TagKey.1", "env"),
        ],
    );
    assert_success(&s, &a, "UntagResources", &[&mi]);
    let a = c.ok(
        "ModifyManagedInstance",
        &[("InstanceId", &mi), ("InstanceName", "renamed")],
    );
    assert_success(&s, &a, "ModifyManagedInstance", &[&mi]);
    let a = c.ok("CreateActivation", &[("InstanceCount", "1")]);
    let act = a["ActivationId"].as_str().unwrap().to_string();
    let code = a["ActivationCode"].as_str().unwrap().to_string();
    assert_success(&s, &a, "CreateActivation", &[&act]);
    let a = c.ok("DisableActivation", &[("ActivationId", &act)]);
    assert_success(&s, &a, "DisableActivation", &[&act]);
    let a = c.ok("DeleteActivation", &[("ActivationId", &act)]);
    assert_success(&s, &a, "DeleteActivation", &[&act]);

    // The same through SWAS: recorded under its own action names.
    let a = c.call_version(
        "2020-06-01",
        "InvokeCommand",
        &[
            ("CommandId", &cmd),
            ("InstanceIds", &format!(r#"["{mi}"]"#)),
            ("Parameters", &params),
        ],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let swas_invoked = a.json()["InvokeId"].as_str().unwrap().to_string();
    assert_success(&s, &a.json(), "InvokeCommand", &[&swas_invoked, &mi, &cmd]);

    // Deleting the command, deregistering the instance: its agent is cut off.
    let a = c.ok("DeleteCommand", &[("CommandId", &cmd)]);
    assert_success(&s, &a, "DeleteCommand", &[&cmd]);
    let identity = std::fs::read_to_string(agent.state.path().join("identity.json")).unwrap();
    let token = serde_json::from_str::<Value>(&identity).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = c.ok("DeregisterManagedInstance", &[("InstanceId", &mi)]);
    let dereg = assert_success(&s, &a, "DeregisterManagedInstance", &[&mi]);
    let cut = entries_of(&s, "CutOffAgent", 1);
    assert_eq!(cut.len(), 1, "{cut:#?}");
    let cut = &cut[0];
    assert_eq!(cut["result"], "Deregistered", "{cut}");
    assert_eq!(cut["account_id"], "default", "{cut}");
    assert_eq!(cut["request_id"], dereg["request_id"], "{cut}");
    assert_eq!(cut["source"], "127.0.0.1", "the agent was connected: {cut}");
    assert_eq!(targets(cut)[0], mi, "{cut}");

    // Reads are not recorded.
    c.ok("DescribeInvocations", &[]);
    c.ok("DescribeInvocationResults", &[("InvokeId", &invoked)]);
    c.ok("DescribeCommands", &[]);
    c.ok("DescribeManagedInstances", &[]);
    c.ok(
        "ListTagResources",
        &[("ResourceType", "instance"), ("ResourceId.1", &mi)],
    );
    c.ok("DescribeCloudAssistantStatus", &[]);
    let a = c.ok("DescribeActivations", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let all = trail(&s, &[]);
    assert!(
        all.iter().all(|e| e["request_id"] != a["RequestId"]),
        "{all:#?}"
    );
    for e in &all {
        let action = e["action"].as_str().unwrap();
        assert!(
            !action.starts_with("Describe") && !action.starts_with("List"),
            "a read recorded: {e}"
        );
    }

    // Nothing secret: no script, no parameter value, no file content, no tag value,
    // no activation code, no agent token, no access key secret.
    let text = s.oca_ok(&["audit", "-o", "json", "--limit", "100000"]);
    let table = s.oca_ok(&["audit", "--limit", "100000"]);
    for secret in [
        "TOP-SECRET",
        code.as_str(),
        token.as_str(),
        s.secret.as_str(),
        "greeting",
        "audited.conf",
    ] {
        assert!(!text.contains(secret), "{secret:?} is in the trail: {text}");
        assert!(
            !table.contains(secret),
            "{secret:?} is in the trail: {table}"
        );
    }
}

#[test]
fn refusals_are_recorded() {
    let s = Server::start();
    let c = s.client();

    // By signature: a wrong secret of a real key (its account is known) and a key that
    // does not exist (only the claim is). Neither authenticated.
    let a = s.client().with_secret("not-the-secret").call(
        "RunCommand",
        &[("Type", "RunShellScript"), ("CommandContent", "ZQ==")],
    );
    assert_ne!(a.status, 200, "{}", a.body);
    let e = entry(&s, a.json()["RequestId"].as_str().unwrap());
    assert_eq!(e["action"], "RunCommand", "{e}");
    assert_eq!(e["result"], a.json()["Code"], "{e}");
    assert_eq!(e["access_key_id"], s.key_id.as_str(), "{e}");
    assert_eq!(e["account_id"], "default", "{e}");
    assert_eq!(e["authenticated"], false, "{e}");
    assert_eq!(e["source"], "127.0.0.1", "{e}");
    // (V1: the key travels in a parameter, where any byte can be sent.)
    let a = s
        .client()
        .with_sig(Sig::V1)
        .with_secret("x")
        .with_key("LTAInosuchkey\u{1b}[31m")
        .call("DeleteCommand", &[("CommandId", "c-1")]);
    let body = a.json();
    assert_eq!(body["Code"], "InvalidAccessKeyId.NotFound", "{}", a.body);
    let e = entry(&s, body["RequestId"].as_str().unwrap());
    assert_eq!(e["access_key_id"], "LTAInosuchkey?[31m", "cleaned: {e}");
    assert_eq!(e["account_id"], "", "{e}");
    assert_eq!(targets(&e), vec!["c-1"], "{e}");
    assert_eq!(e["http_status"], a.status, "{e}");

    // By validation, and failed: authenticated, with the code answered.
    let body = c.err(
        "RunCommand",
        &[("Type", "RunPerlScript"), ("CommandContent", "ZQ==")],
        "InvalidCmdType.NotFound",
        404,
    );
    let e = entry(&s, body["RequestId"].as_str().unwrap());
    assert_eq!(
        (&e["result"], &e["http_status"], &e["authenticated"]),
        (
            &Value::from("InvalidCmdType.NotFound"),
            &Value::from(404),
            &Value::from(true)
        ),
        "{e}"
    );
    let body = c.err(
        "ModifyInvocationAttribute",
        &[
            ("InvokeId", "t-nosuchinvocation"),
            ("CommandContent", "eA=="),
        ],
        "InvalidInvokeId.NotFound",
        404,
    );
    let e = entry(&s, body["RequestId"].as_str().unwrap());
    assert_eq!(targets(&e), vec!["t-nosuchinvocation"], "{e}");

    // A hostile list of ids is cut to 16, the rest counted.
    let many: Vec<String> = (0..200).map(|n| format!("\"mi-{n:0>60}\"")).collect();
    let body = c.err(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "ZQ=="),
            ("InstanceId", &format!("[{}]", many.join(","))),
        ],
        "InvalidInstance.NotFound",
        404,
    );
    let e = entry(&s, body["RequestId"].as_str().unwrap());
    assert_eq!(targets(&e).len(), 16, "{e}");
    assert!(e["omitted"].as_u64().unwrap() >= 184, "{e}");

    // A registration with a wrong code: the activation it named, not the code.
    let act = c.ok("CreateActivation", &[("InstanceCount", "1")]);
    let act_id = act["ActivationId"].as_str().unwrap();
    let req = serde_json::json!({
        "activation_id": act_id,
        "activation_code": "WRONG-CODE-5e1b",
        "hostname": "h",
        "os_type": "linux",
        "agent_version": "1",
    });
    let host = s.url().trim_start_matches("http://").to_string();
    let answer = http_send(
        &host,
        "POST",
        "/agent/v1/register",
        &[("content-type".into(), "application/json".into())],
        req.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    let reg = entries_of(&s, "RegisterAgent", 1);
    let reg = &reg[0];
    assert_eq!(reg["result"], "InvalidActivation", "{reg}");
    assert_eq!(reg["http_status"], 403, "{reg}");
    assert_eq!(reg["authenticated"], false, "{reg}");
    assert_eq!(reg["account_id"], "default", "{reg}");
    assert_eq!(targets(reg), vec![act_id.to_string()], "{reg}");
    assert!(!reg["request_id"].as_str().unwrap().is_empty(), "{reg}");
    let text = s.oca_ok(&["audit", "-o", "json"]);
    assert!(!text.contains("WRONG-CODE"), "{text}");
}

#[test]
fn oca_audit_filters() {
    let s = Server::start();
    let c = s.client();
    let other = s.account_client("team-b");
    let mine = c.ok(
        "CreateCommand",
        &[
            ("Name", "a"),
            ("Type", "RunShellScript"),
            ("CommandContent", "ZQ=="),
        ],
    );
    let theirs = other.ok("CreateActivation", &[("InstanceCount", "1")]);
    entry(&s, theirs["RequestId"].as_str().unwrap());
    entry(&s, mine["RequestId"].as_str().unwrap());

    let actions = |extra: &[&str]| -> Vec<String> {
        trail(&s, extra)
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    };
    // The offline changes (`oca keys create`, `oca accounts create`) are there too,
    // from `local`.
    let team_b = trail(&s, &["--account", "team-b"]);
    assert_eq!(
        actions(&["--account", "team-b"]),
        vec!["CreateAccount", "CreateAccessKey", "CreateActivation"],
        "{team_b:#?}"
    );
    assert_eq!(team_b[0]["source"], "local");
    assert_eq!(targets(&team_b[0]), vec!["team-b"]);
    assert_eq!(targets(&team_b[1]), vec![other.key_id.clone()]);
    assert_eq!(team_b[1]["access_key_id"], "", "{team_b:#?}");
    assert_eq!(
        actions(&["--action", "CreateCommand"]),
        vec!["CreateCommand"]
    );
    assert_eq!(
        actions(&["--account", "default"]),
        vec!["CreateAccessKey", "CreateCommand"]
    );
    assert_eq!(actions(&["--since", "1h"]).len(), 5);
    assert!(actions(&["--since", "2999-01-01"]).is_empty());
    assert_eq!(
        actions(&["--limit", "1"]),
        vec!["CreateActivation"],
        "the newest"
    );

    let table = s.oca_ok(&["audit", "--action", "CreateActivation"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("TIME"), "{table}");
    assert!(
        lines[1].contains("team-b")
            && lines[1].contains("CreateActivation")
            && lines[1].contains("Success")
            && lines[1].contains(theirs["ActivationId"].as_str().unwrap()),
        "{table}"
    );
    let out = s.oca(&["audit", "--since", "yesterday"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither a duration"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every action of both APIs, called (mostly refused for what it lacks): exactly the
/// ones that are not `Describe…`/`List…` are recorded, each with the code answered.
#[test]
fn every_action_but_the_reads_is_recorded() {
    let s = Server::start();
    let c = s.client();
    let ecs = [
        "CreateCommand",
        "DescribeCommands",
        "ModifyCommand",
        "DeleteCommand",
        "InvokeCommand",
        "RunCommand",
        "StopInvocation",
        "DescribeInvocations",
        "DescribeInvocationResults",
        "DescribeCloudAssistantStatus",
        "CreateActivation",
        "DescribeActivations",
        "DisableActivation",
        "DeleteActivation",
        "DescribeManagedInstances",
        "ModifyManagedInstance",
        "DeregisterManagedInstance",
        "DescribeInvocationOutput",
        "TagResources",
        "UntagResources",
        "ListTagResources",
        "SendFile",
        "DescribeSendFileResults",
        "ModifyInvocationAttribute",
    ];
    let swas = [
        "RunCommand",
        "CreateCommand",
        "InvokeCommand",
        "DescribeCommands",
        "UpdateCommandAttribute",
        "DeleteCommand",
        "DescribeInvocations",
        "DescribeInvocationResult",
        "DescribeCommandInvocations",
        "DescribeCloudAssistantStatus",
        "DescribeCloudAssistantAttributes",
        "InstallCloudAssistant",
    ];
    let calls = ecs
        .iter()
        .map(|a| (VERSION, *a))
        .chain(swas.iter().map(|a| ("2020-06-01", *a)));
    let mut expected = Vec::new();
    let mut reads = Vec::new();
    for (version, action) in calls {
        let answer = c.call_version(version, action, &[]);
        let body = answer.json();
        let request_id = body["RequestId"].as_str().unwrap().to_string();
        let code = body["Code"].as_str().unwrap_or("Success").to_string();
        if action.starts_with("Describe") || action.starts_with("List") {
            reads.push(request_id);
        } else {
            expected.push((action, request_id, code, answer.status));
        }
    }
    for (action, request_id, code, status) in &expected {
        let e = entry(&s, request_id);
        assert_eq!(e["action"], *action, "{e}");
        assert_eq!(e["result"], code.as_str(), "{e}");
        assert_eq!(e["http_status"], *status, "{e}");
        assert_eq!(e["authenticated"], true, "{e}");
    }
    // Besides them, only the key the harness made offline.
    let all: Vec<Value> = trail(&s, &[])
        .into_iter()
        .filter(|e| e["source"] != "local")
        .collect();
    assert_eq!(all.len(), expected.len(), "{all:#?}");
    assert!(all
        .iter()
        .all(|e| !reads.contains(&e["request_id"].as_str().unwrap().to_string())));
}

/// An account deleted offline: its connected agent is cut off by the server, and that is
/// recorded (`CutOffAgent`, `AccountDeleted`, from where the agent was connected).
#[test]
fn an_agent_cut_off_with_its_account_is_recorded() {
    let s = Server::start();
    let c = s.account_client("team-c");
    let agent = s.agent_of(&c, "doomed");
    s.oca_ok(&["keys", "delete", &c.key_id]);
    s.oca_ok(&["accounts", "delete", "team-c"]);
    let cut = entries_of(&s, "CutOffAgent", 1);
    let cut = &cut[0];
    assert_eq!(cut["result"], "AccountDeleted", "{cut}");
    assert_eq!(cut["account_id"], "team-c", "{cut}");
    assert_eq!(cut["source"], "127.0.0.1", "{cut}");
    assert_eq!(targets(cut), vec![agent.instance_id.clone()], "{cut}");
    let offline: Vec<String> = trail(&s, &["--account", "team-c"])
        .iter()
        .filter(|e| e["source"] == "local")
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        offline,
        vec![
            "CreateAccount",
            "CreateAccessKey",
            "DeleteAccessKey",
            "DeleteAccount"
        ]
    );
}
