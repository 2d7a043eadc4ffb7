//! End to end: the SWAS-OPEN `2020-06-01` Cloud Assistant actions against a real
//! server and a real agent, over the same records as the ECS API.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const SWAS: &str = "2020-06-01";
const WAIT: Duration = Duration::from_secs(30);

fn ok(c: &Client, action: &str, params: &[(&str, &str)]) -> Value {
    let a = c.call_version(SWAS, action, params);
    assert_eq!(a.status, 200, "{action} failed: {}", a.body);
    a.json()
}

fn err(c: &Client, action: &str, params: &[(&str, &str)], code: &str, status: u16) {
    let a = c.call_version(SWAS, action, params);
    assert_eq!(
        (a.json()["Code"].as_str().unwrap_or(""), a.status),
        (code, status),
        "{action}: {}",
        a.body
    );
}

/// DescribeInvocationResult until the run is no longer Running.
fn result(c: &Client, invoke_id: &str, instance_id: &str) -> Value {
    wait_for(WAIT, || {
        let r = ok(
            c,
            "DescribeInvocationResult",
            &[("InvokeId", invoke_id), ("InstanceId", instance_id)],
        )["InvocationResult"]
            .clone();
        (r["InvokeRecordStatus"] != "Running").then_some(r)
    })
    .unwrap_or_else(|| panic!("{invoke_id} did not finish"))
}

fn run_and_describe(c: &Client, instance: &str) {
    let run = ok(
        c,
        "RunCommand",
        &[
            ("InstanceId", instance),
            ("Name", "swas-hello"),
            ("Type", "RunShellScript"),
            ("CommandContent", "echo hello {{who}}"),
            ("EnableParameter", "true"),
            ("Parameters", r#"{"who":"swas"}"#),
            ("WorkingUser", "root"),
        ],
    );
    let invoke_id = run["InvokeId"].as_str().unwrap().to_string();
    assert!(run.get("CommandId").is_none(), "{run}");
    let r = result(c, &invoke_id, instance);
    assert_eq!(r["InvocationStatus"], "Success", "{r}");
    assert_eq!(r["InvokeRecordStatus"], "Finished");
    assert_eq!(r["ExitCode"], 0);
    assert_eq!(r["InvokeUser"], "root");
    assert_eq!(r["InstanceId"], instance);
    assert_eq!(b64(&r["Output"]), "hello swas\n");

    // The flat Invocations[] of seed 002, filtered by instance and InvokeStatus.
    let body = ok(
        c,
        "DescribeInvocations",
        &[("InstanceId", instance), ("InvokeStatus", "Finished")],
    );
    let list = body["Invocations"].as_array().expect("flat Invocations[]");
    let inv = list
        .iter()
        .find(|i| i["InvokeId"] == invoke_id.as_str())
        .expect("listed");
    assert_eq!(inv["InvokeStatus"], "Finished");
    assert_eq!(inv["InvocationStatus"], "Success");
    assert_eq!(inv["CommandType"], "RunShellScript");
    assert_eq!(inv["CommandName"], "swas-hello");
    assert_eq!(b64(&inv["CommandContent"]), "echo hello {{who}}");
    assert_eq!(inv["Parameters"], serde_json::json!({"who": "swas"}));
    assert!(!inv["CreationTime"].as_str().unwrap().is_empty());
    assert!(body["TotalCount"].as_u64().unwrap() >= 1);
    assert_eq!(body["PageNumber"], 1);
    let failed = ok(
        c,
        "DescribeInvocations",
        &[("InstanceId", instance), ("InvokeStatus", "Failed")],
    );
    assert!(failed["Invocations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["InvokeId"] != invoke_id.as_str()));
    // The same record through ECS.
    let ecs = c.invocation(&invoke_id);
    assert_eq!(ecs["InvokeStatus"], "Finished");
}

#[test]
fn run_command_then_result_v3_and_v1() {
    let server = Server::start();
    let agent = server.agent("swas-one");
    let c = server.client();
    run_and_describe(&c, &agent.instance_id);
    run_and_describe(&c.with_sig(Sig::V1), &agent.instance_id);
}

#[test]
fn saved_commands_shared_with_ecs() {
    let server = Server::start();
    let agent = server.agent("swas-two");
    let c = server.client();
    let id = agent.instance_id.as_str();
    let created = ok(
        &c,
        "CreateCommand",
        &[
            ("Name", "saved"),
            ("Type", "RunShellScript"),
            ("CommandContent", "ZWNobyBzYXZlZA=="), // echo saved
        ],
    );
    let command_id = created["CommandId"].as_str().unwrap().to_string();
    // Visible through ECS, and updated through SWAS.
    ok(
        &c,
        "UpdateCommandAttribute",
        &[("CommandId", &command_id), ("Name", "renamed")],
    );
    let ecs = c.ok("DescribeCommands", &[("CommandId", &command_id)]);
    assert_eq!(ecs["Commands"]["Command"][0]["Name"], "renamed", "{ecs}");

    let ids = serde_json::to_string(&[id]).unwrap();
    let invoked = ok(
        &c,
        "InvokeCommand",
        &[("CommandId", &command_id), ("InstanceIds", &ids)],
    );
    let invoke_id = invoked["InvokeId"].as_str().unwrap().to_string();
    let invoke_id = invoke_id.as_str();
    let r = result(&c, invoke_id, id);
    assert_eq!(b64(&r["Output"]), "saved\n");

    // DescribeCommands: a flat Commands[], Provider required.
    let listed = ok(
        &c,
        "DescribeCommands",
        &[("Provider", "User"), ("CommandId", &command_id)],
    );
    assert_eq!(listed["TotalCount"], 1, "{listed}");
    let cmd = &listed["Commands"][0];
    assert_eq!(cmd["Name"], "renamed");
    assert_eq!(cmd["Type"], "RunShellScript");
    assert_eq!(b64(&cmd["CommandContent"]), "echo saved");
    assert_eq!(cmd["Provider"], "User");
    assert!(cmd["ParameterNames"].is_array() && cmd["Tags"].is_array());
    let public = ok(&c, "DescribeCommands", &[("Provider", "AlibabaCloud")]);
    assert_eq!(public["TotalCount"], 0);
    err(&c, "DescribeCommands", &[], "MissingParameter", 400);

    // DescribeCommandInvocations: invocations with their instances and output.
    let body = ok(
        &c,
        "DescribeCommandInvocations",
        &[("CommandId", &command_id), ("InvocationStatus", "Success")],
    );
    assert_eq!(body["TotalCount"], 1, "{body}");
    let ci = &body["CommandInvocations"][0];
    assert_eq!(ci["InvokeId"], invoke_id);
    assert_eq!(ci["CommandName"], "renamed");
    assert_eq!(ci["InvocationStatus"], "Success");
    assert_eq!(ci["Parameters"], "{}");
    assert_eq!(ci["InvokeInstances"][0]["InstanceId"], id);
    assert_eq!(b64(&ci["InvokeInstances"][0]["Output"]), "saved\n");
    assert!(!ci["InvokeInstances"][0]["FinishTime"]
        .as_str()
        .unwrap()
        .is_empty());
    let none = ok(
        &c,
        "DescribeCommandInvocations",
        &[("CommandId", &command_id), ("InvocationStatus", "Failed")],
    );
    assert_eq!(none["TotalCount"], 0);
    assert_eq!(none["CommandInvocations"], serde_json::json!([]));

    // Attributes of the agent.
    let attrs = ok(
        &c,
        "DescribeCloudAssistantAttributes",
        &[("InstanceIds", &ids)],
    );
    let a = &attrs["CloudAssistant"][0];
    assert_eq!(a["InstanceId"], id);
    assert_eq!(a["CloudAssistantStatus"], "true");
    assert_eq!(a["OSType"], "Linux");
    assert!(a["InvocationCount"].as_i64().unwrap() >= 1);

    ok(&c, "DeleteCommand", &[("CommandId", &command_id)]);
    err(
        &c,
        "InvokeCommand",
        &[("CommandId", &command_id), ("InstanceIds", &ids)],
        "InvalidCmdId.NotFound",
        404,
    );

    // Cloud Assistant status: registered instances have it, others not.
    let ids2 = serde_json::to_string(&[id, "mi-nope"]).unwrap();
    let st = ok(
        &c,
        "DescribeCloudAssistantStatus",
        &[("InstanceIds", &ids2)],
    );
    let st = st["CloudAssistantStatus"].as_array().unwrap();
    assert_eq!(st[0]["InstanceId"], id);
    assert_eq!(st[0]["Status"], true);
    assert_eq!(st[1]["Status"], false);

    // Installing: a registered instance has the agent already; an unknown one is not
    // found (and nothing is done).
    let body = ok(&c, "InstallCloudAssistant", &[("InstanceIds", &ids)]);
    assert!(body["RequestId"].is_string());
    err(
        &c,
        "InstallCloudAssistant",
        &[("InstanceIds", &ids2)],
        "InvalidInstance.NotFound",
        404,
    );
    err(&c, "InstallCloudAssistant", &[], "MissingParameter", 400);
}

#[test]
fn swas_errors() {
    let server = Server::start();
    let c = server.client();
    err(
        &c,
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "true"),
            ("Name", "x"),
        ],
        "MissingParameter",
        400,
    );
    err(
        &c,
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "true"),
            ("Name", "x"),
            ("InstanceId", "mi-nope"),
        ],
        "InvalidInstance.NotFound",
        404,
    );
    err(
        &c,
        "DescribeInvocationResult",
        &[("InvokeId", "t-nope"), ("InstanceId", "mi-nope")],
        "InvalidInvokeId.NotFound",
        404,
    );
    err(&c, "StopInvocation", &[], "InvalidAction.NotFound", 404);
    err(
        &c,
        "DescribeCommandInvocations",
        &[("InvocationStatus", "Nope")],
        "InvalidParameter",
        400,
    );
    // XML keeps the flat list.
    err(&c, "DescribeInvocations", &[], "MissingParameter", 400);
    let a = c.call_version(
        SWAS,
        "DescribeInvocations",
        &[("Format", "XML"), ("InstanceId", "mi-none")],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.contains("<DescribeInvocationsResponse>"),
        "{}",
        a.body
    );
}
