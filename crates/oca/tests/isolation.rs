//! Tenants: two accounts on one server, each with a key and an agent. Account B
//! tries every ECS action on account A's ids and must get exactly the answer a
//! made-up id of the same shape gets (or an empty listing), and A's records must be
//! untouched. Disabling a key or an account refuses its next request.

mod common;

use common::*;
use oca_domain::ids;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// An answer with what differs between two calls removed (the request id), and the
/// ids a call was made with replaced by the ones the other call used.
fn normalized(a: &Answer, swaps: &[(&str, &str)]) -> (u16, String) {
    let mut body: Value = a.json();
    if let Some(o) = body.as_object_mut() {
        o.remove("RequestId");
    }
    let mut text = body.to_string();
    for (from, to) in swaps {
        text = text.replace(from, to);
    }
    (a.status, text)
}

/// Calls `action` with `params` (which name some of A's ids), then again with each of
/// those ids replaced by a made-up one of the same shape; the two answers must be the
/// same. Returns the answer (status and JSON).
fn as_if_missing(
    c: &Client,
    action: &str,
    params: &[(&str, &str)],
    swaps: &[(&str, &str)],
) -> (u16, Value) {
    let real = c.call(action, params);
    let faked: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| {
            let mut v = v.to_string();
            for (from, to) in swaps {
                v = v.replace(from, to);
            }
            (k.to_string(), v)
        })
        .collect();
    let faked: Vec<(&str, &str)> = faked
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let fake = c.call(action, &faked);
    assert_eq!(
        normalized(&real, swaps),
        normalized(&fake, &[]),
        "{action} {params:?}: another account's ids must look missing\n  real: {}\n  fake: {}",
        real.body,
        fake.body
    );
    (real.status, real.json())
}

fn assert_error(answer: &(u16, Value), code: &str) {
    assert_eq!(answer.1["Code"], code, "{}", answer.1);
    assert!(answer.0 >= 400, "{}", answer.1);
}

fn strip_request_id(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("RequestId");
    }
    v
}

#[test]
fn another_account_cannot_reach_an_accounts_records() {
    let server = Server::start();
    let a = server.client();
    let b = server.account_client("team-b");
    let agent_a = server.agent_of(&a, "alpha");
    let agent_b = server.agent_of(&b, "bravo");
    let (inst_a, inst_b) = (agent_a.instance_id.as_str(), agent_b.instance_id.as_str());

    // Agents join the account of their activation.
    let listed = |c: &Client| -> Vec<String> {
        c.ok("DescribeManagedInstances", &[("PageSize", "50")])["Instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["InstanceId"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&a), vec![inst_a.to_string()]);
    assert_eq!(listed(&b), vec![inst_b.to_string()]);

    // A's records: a saved command and a run still going while B tries.
    let cmd_a = a.ok(
        "CreateCommand",
        &[
            ("Name", "a-cmd"),
            ("Type", "RunShellScript"),
            ("CommandContent", "echo a-saved"),
            ("ContentEncoding", "PlainText"),
        ],
    )["CommandId"]
        .as_str()
        .unwrap()
        .to_string();
    let token = "shared-client-token-1";
    let run_a = a.run(
        "sleep 3; echo done-a",
        &[inst_a],
        &[("ClientToken", token), ("Timeout", "60")],
    );
    let cmd_b = b.ok(
        "CreateCommand",
        &[
            ("Name", "b-cmd"),
            ("Type", "RunShellScript"),
            ("CommandContent", "echo b-saved"),
            ("ContentEncoding", "PlainText"),
        ],
    )["CommandId"]
        .as_str()
        .unwrap()
        .to_string();
    let a_command = || {
        strip_request_id(a.ok(
            "DescribeCommands",
            &[("CommandId", &cmd_a), ("ContentEncoding", "PlainText")],
        ))
    };
    let a_instance =
        || strip_request_id(a.ok("DescribeManagedInstances", &[("InstanceId.1", inst_a)]));
    let command_before = a_command();
    assert_eq!(
        command_before["Commands"]["Command"][0]["CommandId"], cmd_a,
        "{command_before}"
    );

    let fake_cmd = ids::new_command_id();
    let fake_inst = ids::new_managed_instance_id();
    let fake_run = ids::new_invoke_id();
    let c_swap = [(cmd_a.as_str(), fake_cmd.as_str())];
    let i_swap = [(inst_a, fake_inst.as_str())];
    let r_swap = [(run_a.as_str(), fake_run.as_str())];

    // Commands.
    let r = as_if_missing(&b, "DescribeCommands", &[("CommandId", &cmd_a)], &c_swap);
    assert_eq!(r.0, 200);
    assert_eq!(r.1["TotalCount"], 0, "{}", r.1);
    let r = as_if_missing(
        &b,
        "ModifyCommand",
        &[
            ("CommandId", &cmd_a),
            ("Name", "pwned"),
            ("CommandContent", "echo pwned"),
            ("ContentEncoding", "PlainText"),
        ],
        &c_swap,
    );
    assert_error(&r, "InvalidCmdId.NotFound");
    let r = as_if_missing(&b, "DeleteCommand", &[("CommandId", &cmd_a)], &c_swap);
    assert_error(&r, "InvalidCmdId.NotFound");
    let r = as_if_missing(
        &b,
        "InvokeCommand",
        &[("CommandId", &cmd_a), ("InstanceId.1", inst_b)],
        &c_swap,
    );
    assert_error(&r, "InvalidCmdId.NotFound");

    // Instances.
    let r = as_if_missing(
        &b,
        "InvokeCommand",
        &[("CommandId", &cmd_b), ("InstanceId.1", inst_a)],
        &i_swap,
    );
    assert_error(&r, "InvalidInstance.NotFound");
    let r = as_if_missing(
        &b,
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "echo pwned"),
            ("ContentEncoding", "PlainText"),
            ("InstanceId.1", inst_a),
        ],
        &i_swap,
    );
    assert_error(&r, "InvalidInstance.NotFound");
    // Naming one's own instance too changes nothing.
    let r = as_if_missing(
        &b,
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "echo pwned"),
            ("ContentEncoding", "PlainText"),
            ("InstanceId.1", inst_b),
            ("InstanceId.2", inst_a),
        ],
        &i_swap,
    );
    assert_error(&r, "InvalidInstance.NotFound");
    for action in ["DescribeCloudAssistantStatus", "DescribeManagedInstances"] {
        let r = as_if_missing(&b, action, &[("InstanceId.1", inst_a)], &i_swap);
        assert_eq!(r.0, 200, "{action}: {}", r.1);
        assert_eq!(r.1["TotalCount"], 0, "{action}: {}", r.1);
    }
    let r = as_if_missing(
        &b,
        "ModifyManagedInstance",
        &[("InstanceId", inst_a), ("InstanceName", "pwned")],
        &i_swap,
    );
    assert_error(&r, "InvalidInstance.NotFound");
    let r = as_if_missing(
        &b,
        "DeregisterManagedInstance",
        &[("InstanceId", inst_a)],
        &i_swap,
    );
    assert_error(&r, "InvalidInstance.NotFound");

    // Activations.
    let act_a = a_instance()["Instances"][0]["ActivationId"]
        .as_str()
        .unwrap()
        .to_string();
    let fake_act = ids::new_activation_id();
    let a_swap = [(act_a.as_str(), fake_act.as_str())];
    let r = as_if_missing(
        &b,
        "DescribeActivations",
        &[("ActivationId", &act_a)],
        &a_swap,
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["TotalCount"], 0, "{}", r.1);
    for action in ["DisableActivation", "DeleteActivation"] {
        let r = as_if_missing(&b, action, &[("ActivationId", &act_a)], &a_swap);
        assert_error(&r, "ActivationId.NotFound");
    }
    let r = as_if_missing(
        &b,
        "TagResources",
        &[
            ("ResourceType", "activation"),
            ("ResourceId.1", &act_a),
            ("Tag.1.Key", "pwned"),
            ("Tag.1.Value", "yes"),
        ],
        &a_swap,
    );
    assert_error(&r, "InvalidResourceId.NotFound");

    // Files: B cannot send to A's instance, nor see A's deliveries.
    let file_dir = scratch_dir();
    let file_dir = file_dir.to_str().unwrap();
    let r = as_if_missing(
        &b,
        "SendFile",
        &[
            ("Name", "pwned.txt"),
            ("TargetDir", file_dir),
            ("Content", "pwned"),
            ("InstanceId.1", inst_a),
        ],
        &i_swap,
    );
    assert_error(&r, "InvalidInstance.NotFound");
    let file_a = a.ok(
        "SendFile",
        &[
            ("Name", "a.txt"),
            ("TargetDir", file_dir),
            ("Content", "a's file"),
            ("InstanceId.1", inst_a),
        ],
    )["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    let fake_file = ids::new_file_invoke_id();
    for (name, value, swap) in [
        (
            "InvokeId",
            file_a.as_str(),
            (file_a.as_str(), fake_file.as_str()),
        ),
        ("InstanceId", inst_a, i_swap[0]),
    ] {
        let r = as_if_missing(&b, "DescribeSendFileResults", &[(name, value)], &[swap]);
        assert_eq!(r.0, 200, "{name}: {}", r.1);
        assert_eq!(r.1["TotalCount"], 0, "{name}: {}", r.1);
    }
    let text = b
        .ok("DescribeSendFileResults", &[("PageSize", "50")])
        .to_string();
    assert!(!text.contains(&file_a), "{text}");
    assert!(!std::path::Path::new(file_dir).join("pwned.txt").exists());

    // Invocations.
    let r = as_if_missing(&b, "StopInvocation", &[("InvokeId", &run_a)], &r_swap);
    assert_error(&r, "InvalidInvokeId.NotFound");
    let r = as_if_missing(
        &b,
        "StopInvocation",
        &[("InvokeId", &run_a), ("InstanceId.1", inst_a)],
        &[r_swap[0], i_swap[0]],
    );
    assert_error(&r, "InvalidInvokeId.NotFound");
    for (name, value, swap) in [
        ("InvokeId", run_a.as_str(), r_swap[0]),
        ("InstanceId", inst_a, i_swap[0]),
        ("CommandId", cmd_a.as_str(), c_swap[0]),
    ] {
        for action in ["DescribeInvocations", "DescribeInvocationResults"] {
            let r = as_if_missing(&b, action, &[(name, value)], &[swap]);
            assert_eq!(r.0, 200, "{action} {name}: {}", r.1);
            assert!(
                !r.1.to_string().contains(value) || name == "InvokeId",
                "{action} {name}: {}",
                r.1
            );
            let total = r.1["TotalCount"]
                .as_u64()
                .or_else(|| r.1["Invocation"]["TotalCount"].as_u64());
            assert_eq!(total, Some(0), "{action} {name}: {}", r.1);
        }
    }
    let r = as_if_missing(
        &b,
        "DescribeInvocationOutput",
        &[("InvokeId", &run_a), ("InstanceId", inst_a)],
        &[r_swap[0], i_swap[0]],
    );
    assert_error(&r, "InvalidInvokeId.NotFound");

    // The same ClientToken in another account makes a new invocation, not A's.
    let run_b = b.run(
        "echo done-b",
        &[inst_b],
        &[("ClientToken", token), ("Timeout", "60")],
    );
    assert_ne!(run_b, run_a);
    let results_b = b.wait(&run_b, WAIT);
    assert_eq!(b64(&results_b[0]["Output"]), "done-b\n");

    // B's own invocation with A's instance.
    let r = as_if_missing(
        &b,
        "DescribeInvocationOutput",
        &[("InvokeId", &run_b), ("InstanceId", inst_a)],
        &i_swap,
    );
    assert_error(&r, "InvalidInstance.NotFound");
    let r = as_if_missing(
        &b,
        "DescribeInvocationResults",
        &[("InvokeId", &run_b), ("InstanceId", inst_a)],
        &i_swap,
    );
    assert_eq!(r.1["Invocation"]["TotalCount"], 0, "{}", r.1);
    as_if_missing(
        &b,
        "StopInvocation",
        &[("InvokeId", &run_b), ("InstanceId.1", inst_a)],
        &i_swap,
    );

    // B's unfiltered listings show nothing of A's.
    for action in [
        "DescribeCommands",
        "DescribeInvocations",
        "DescribeInvocationResults",
        "DescribeManagedInstances",
        "DescribeCloudAssistantStatus",
        "DescribeActivations",
    ] {
        let text = b.ok(action, &[("PageSize", "50")]).to_string();
        for id in [cmd_a.as_str(), run_a.as_str(), inst_a, act_a.as_str()] {
            assert!(!text.contains(id), "{action} shows {id} to B: {text}");
        }
    }

    // A's records are as they were: the run completes, the command is unchanged.
    let results = a.wait(&run_a, WAIT);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["InvocationStatus"], "Success", "{}", results[0]);
    assert_eq!(b64(&results[0]["Output"]), "done-a\n");
    assert_eq!(a_command(), command_before);
    let instance = a_instance();
    assert_eq!(
        instance["Instances"][0]["InvocationCount"], 1,
        "only A's run counts on A's instance: {instance}"
    );
    // Still registered, connected, named as before; its activation untouched.
    let i = &instance["Instances"][0];
    assert_eq!(
        (&i["InstanceName"], &i["Connected"]),
        (&serde_json::json!("alpha"), &serde_json::json!(true)),
        "{instance}"
    );
    let act = a.ok("DescribeActivations", &[("ActivationId", &act_a)]);
    let act = &act["ActivationList"][0];
    assert_eq!(
        (&act["Disabled"], &act["DeregisteredCount"], &act["Tags"]),
        (
            &serde_json::json!(false),
            &serde_json::json!(0),
            &serde_json::json!([])
        ),
        "{act}"
    );
    // A's ClientToken still answers with A's run.
    let again = a.run(
        "sleep 3; echo done-a",
        &[inst_a],
        &[("ClientToken", token), ("Timeout", "60")],
    );
    assert_eq!(again, run_a);
}

#[test]
fn a_disabled_key_is_refused_at_once() {
    let server = Server::start();
    let a = server.client();
    let other = server.key_client("default");
    a.ok("DescribeCommands", &[]);
    other.ok("DescribeCommands", &[]);

    let listed = server.oca_ok(&["keys", "list"]);
    assert!(
        listed.contains(&a.key_id) && listed.contains(&other.key_id),
        "{listed}"
    );
    assert!(
        !listed.contains(&a.secret) && !listed.contains(&other.secret),
        "keys list never prints secrets: {listed}"
    );

    // Disabled while the server runs: the very next call is refused.
    server.oca_ok(&["keys", "disable", &a.key_id]);
    a.err("DescribeCommands", &[], "InvalidAccessKeyId.Inactive", 400);
    other.ok("DescribeCommands", &[]);
    assert!(server
        .oca_ok(&["keys", "list"])
        .lines()
        .any(|l| l.contains(&a.key_id) && l.contains("disabled")));

    server.oca_ok(&["keys", "enable", &a.key_id]);
    a.ok("DescribeCommands", &[]);

    server.oca_ok(&["keys", "delete", &a.key_id]);
    a.err("DescribeCommands", &[], "InvalidAccessKeyId.NotFound", 404);
    other.ok("DescribeCommands", &[]);
    let out = server.oca(&["keys", "disable", &a.key_id]);
    assert!(!out.status.success(), "no such key any more");

    // A wrong secret for a disabled key says nothing about the key's state.
    server.oca_ok(&["keys", "disable", &other.key_id]);
    Client {
        url: other.url.clone(),
        key_id: other.key_id.clone(),
        secret: "wrong".into(),
        sig: Sig::V3,
        tls: None,
    }
    .err("DescribeCommands", &[], "SignatureDoesNotMatch", 400);
}

#[test]
fn a_disabled_accounts_keys_are_refused() {
    let server = Server::start();
    let a = server.client();
    let b = server.account_client("team-b");
    let b2 = server.key_client("team-b");
    b.ok("DescribeCommands", &[]);

    // Keys only for accounts that exist.
    let out = server.oca(&["keys", "create", "--account", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("accounts create"));
    // Account ids are unique.
    assert!(!server
        .oca(&["accounts", "create", "team-b"])
        .status
        .success());

    server.oca_ok(&["accounts", "disable", "team-b"]);
    for c in [&b, &b2] {
        c.err("DescribeCommands", &[], "InvalidAccessKeyId.Inactive", 400);
    }
    a.ok("DescribeCommands", &[]);
    let listed = server.oca_ok(&["accounts", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("team-b ") && l.contains("disabled")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("default ") && l.contains("enabled")),
        "{listed}"
    );

    server.oca_ok(&["accounts", "enable", "team-b"]);
    b.ok("DescribeCommands", &[]);

    // An account with keys is not deleted; without, it is.
    let out = server.oca(&["accounts", "delete", "team-b"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("access keys"));
    b.ok("DescribeCommands", &[]);
    server.oca_ok(&["keys", "delete", &b.key_id]);
    server.oca_ok(&["keys", "delete", &b2.key_id]);
    server.oca_ok(&["accounts", "delete", "team-b"]);
    // A deleted account stays listed, as deleted (a tombstone: its id is never reused).
    assert!(server
        .oca_ok(&["accounts", "list"])
        .lines()
        .any(|l| l.starts_with("team-b ") && l.contains("deleted")));
    a.ok("DescribeCommands", &[]);
}
