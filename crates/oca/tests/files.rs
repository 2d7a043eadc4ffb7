//! SendFile end to end: a real agent writes the file with the owner, mode and content
//! asked for; a second send without Overwrite fails as the vendor documents; results
//! through DescribeSendFileResults, apart from command runs.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

/// The delivery as DescribeSendFileResults shows it, once every instance has ended.
fn wait_delivery(c: &Client, invoke_id: &str) -> Value {
    wait_for(Duration::from_secs(20), || {
        let body = c.ok("DescribeSendFileResults", &[("InvokeId", invoke_id)]);
        let inv = body["Invocations"]["Invocation"][0].clone();
        let ended = inv["InvokeInstances"]["InvokeInstance"]
            .as_array()?
            .iter()
            .all(|i| !matches!(i["InvocationStatus"].as_str(), Some("Pending" | "Running")));
        ended.then_some(inv)
    })
    .unwrap_or_else(|| panic!("{invoke_id} did not end"))
}

fn send(c: &Client, instance: &str, dir: &str, content: &str, extra: &[(&str, &str)]) -> String {
    let mut p = vec![
        ("InstanceId.1", instance),
        ("Name", "app.conf"),
        ("TargetDir", dir),
        ("Content", content),
    ];
    p.extend_from_slice(extra);
    let id = c.ok("SendFile", &p)["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("f-"), "{id}");
    id
}

#[test]
fn a_file_is_written_with_its_owner_and_mode_and_not_overwritten_unless_asked() {
    let server = Server::start();
    let agent = server.agent("files");
    let c = server.client();
    let scratch = scratch_dir();
    // A directory that does not exist yet: the agent creates it.
    let dir = scratch.join("etc/app");
    let dir_s = dir.to_str().unwrap();
    let path = dir.join("app.conf");

    let first = send(
        &c,
        &agent.instance_id,
        dir_s,
        "key=value\n",
        &[
            ("FileOwner", "nobody"),
            ("FileMode", "0600"),
            ("Description", "the app's settings"),
            ("Tag.1.Key", "change"),
            ("Tag.1.Value", "CR-7"),
        ],
    );
    let inv = wait_delivery(&c, &first);
    let one = &inv["InvokeInstances"]["InvokeInstance"][0];
    assert_eq!(one["InvocationStatus"], "Success", "{inv}");
    assert_eq!(one["InstanceId"], agent.instance_id.as_str());
    assert_eq!(
        (one["ErrorCode"].as_str(), one["ErrorInfo"].as_str()),
        (Some(""), Some(""))
    );
    assert!(!one["StartTime"].as_str().unwrap().is_empty());
    assert!(!one["FinishTime"].as_str().unwrap().is_empty());
    assert_eq!(inv["InvocationStatus"], "Success");
    assert_eq!(inv["Name"], "app.conf");
    assert_eq!(inv["Description"], "the app's settings");
    assert_eq!(inv["Content"], "key=value\n");
    assert_eq!(inv["ContentType"], "PlainText");
    assert_eq!(inv["TargetDir"], dir_s);
    assert_eq!(
        (
            inv["FileOwner"].as_str(),
            inv["FileGroup"].as_str(),
            inv["FileMode"].as_str()
        ),
        (Some("nobody"), Some("root"), Some("0600"))
    );
    assert_eq!(inv["Overwrite"], "false");
    assert_eq!(inv["VmCount"], 1);
    assert_eq!(inv["Tags"]["Tag"][0]["TagKey"], "change");

    assert_eq!(std::fs::read(&path).unwrap(), b"key=value\n");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(meta.uid(), nobody.uid.as_raw());
    assert_eq!(meta.gid(), 0);

    // Again without Overwrite: refused on the host, the file untouched.
    let second = send(&c, &agent.instance_id, dir_s, "other\n", &[]);
    let inv = wait_delivery(&c, &second);
    let one = &inv["InvokeInstances"]["InvokeInstance"][0];
    assert_eq!(one["InvocationStatus"], "Invalid", "{inv}");
    assert_eq!(one["ErrorCode"], "FileExist");
    assert!(!one["ErrorInfo"].as_str().unwrap().is_empty());
    assert_eq!(inv["InvocationStatus"], "Failed");
    assert_eq!(std::fs::read(&path).unwrap(), b"key=value\n");

    // With Overwrite, and Base64 content: replaced, with the default mode and owner.
    let third = send(
        &c,
        &agent.instance_id,
        dir_s,
        "AAEC/w==",
        &[("Overwrite", "true"), ("ContentType", "Base64")],
    );
    let inv = wait_delivery(&c, &third);
    assert_eq!(inv["InvocationStatus"], "Success", "{inv}");
    assert_eq!(inv["Content"], "AAEC/w==");
    assert_eq!(inv["Overwrite"], "true");
    assert_eq!(std::fs::read(&path).unwrap(), [0u8, 1, 2, 255]);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.permissions().mode() & 0o7777, meta.uid()), (0o644, 0));

    // What the host refuses ends Invalid with the agent's code.
    for (extra, code) in [
        (vec![("FileOwner", "no-such-user-oca")], "FileOwnerNotExist"),
        (
            vec![("FileGroup", "no-such-group-oca")],
            "FileGroupNotExist",
        ),
        (vec![("FileMode", "999")], "InvalidFileMode"),
    ] {
        let mut extra = extra;
        extra.push(("Overwrite", "true"));
        let id = send(&c, &agent.instance_id, dir_s, "x", &extra);
        let inv = wait_delivery(&c, &id);
        let one = &inv["InvokeInstances"]["InvokeInstance"][0];
        assert_eq!(
            (one["InvocationStatus"].as_str(), one["ErrorCode"].as_str()),
            (Some("Invalid"), Some(code)),
            "{inv}"
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), [0u8, 1, 2, 255]);

    // Listing and filters: newest first; by name, instance, status and tag.
    let list = |params: &[(&str, &str)]| -> (u64, Vec<String>) {
        let body = c.ok("DescribeSendFileResults", params);
        let ids = body["Invocations"]["Invocation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["InvokeId"].as_str().unwrap().to_string())
            .collect();
        (body["TotalCount"].as_u64().unwrap(), ids)
    };
    let (total, ids) = list(&[("PageSize", "3")]);
    assert_eq!(total, 6);
    assert_eq!(ids.len(), 3);
    assert_eq!(list(&[("Name", "app.conf")]).0, 6);
    assert_eq!(list(&[("Name", "other.conf")]).0, 0);
    assert_eq!(list(&[("InstanceId", &agent.instance_id)]).0, 6);
    assert_eq!(
        list(&[("InvocationStatus", "Success")]).1,
        vec![third.clone(), first.clone()]
    );
    assert_eq!(
        list(&[("Tag.1.Key", "change"), ("Tag.1.Value", "CR-7")]).1,
        vec![first.clone()]
    );
    c.err(
        "DescribeSendFileResults",
        &[("InvocationStatus", "Finished")],
        "InvalidParameter",
        400,
    );

    // A file delivery is not a command run, and a command run is not a delivery.
    let run = c.run("true", &[&agent.instance_id], &[]);
    let body = c.ok("DescribeInvocations", &[("InvokeId", &first)]);
    assert_eq!(body["TotalCount"], 0);
    let body = c.ok("DescribeInvocations", &[]);
    assert_eq!(body["TotalCount"], 1);
    let body = c.ok("DescribeInvocationResults", &[("InvokeId", &first)]);
    assert_eq!(body["Invocation"]["TotalCount"], 0);
    assert_eq!(list(&[("InvokeId", &run)]).0, 0);
    c.err(
        "StopInvocation",
        &[("InvokeId", &first)],
        "InvalidInvokeId.NotFound",
        404,
    );
    // Sending files does not count as running commands on the instance.
    let status = c.ok(
        "DescribeCloudAssistantStatus",
        &[("InstanceId.1", &agent.instance_id)],
    );
    let count = &status["InstanceCloudAssistantStatusSet"]["InstanceCloudAssistantStatus"][0]
        ["InvocationCount"];
    assert_eq!(count, 1, "{status}");

    // XML renders the same document.
    let a = c.call(
        "DescribeSendFileResults",
        &[("InvokeId", &first), ("Format", "XML")],
    );
    assert_eq!(a.status, 200);
    assert!(a.body.contains("<TargetDir>"), "{}", a.body);
}

#[test]
fn send_file_checks_its_parameters() {
    let server = Server::start();
    let agent = server.agent("checks");
    let c = server.client();
    let id = agent.instance_id.as_str();
    let target = scratch_dir().join("check");
    let target_s = target.to_str().unwrap().to_string();
    let base = |skip: &str, extra: &[(&'static str, String)]| -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = [
            ("InstanceId.1", id.to_string()),
            ("Name", "f.txt".to_string()),
            ("TargetDir", target_s.clone()),
            ("Content", "x".to_string()),
        ]
        .into_iter()
        .filter(|(k, _)| *k != skip)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        p
    };
    let err = |p: Vec<(String, String)>, code: &str, status: u16| {
        let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        c.err("SendFile", &refs, code, status);
    };
    err(base("Name", &[]), "MissingParameter", 400);
    err(base("TargetDir", &[]), "MissingParameter", 400);
    err(base("Content", &[]), "MissingParameter", 400);
    err(base("InstanceId.1", &[]), "MissingParam.InstanceId", 400);
    err(
        base("TargetDir", &[("TargetDir", "relative/dir".into())]),
        "InvalidParameter",
        400,
    );
    err(
        base("", &[("ContentType", "Gzip".into())]),
        "InvalidParameter",
        400,
    );
    err(
        base(
            "",
            &[("ContentType", "Base64".into()), ("Content", "%%%".into())],
        ),
        "InvalidParameter",
        400,
    );
    // 24 KiB of text is 32 KiB in Base64: the most allowed.
    let fits = "a".repeat(24 * 1024);
    let too_big = "a".repeat(24 * 1024 + 1);
    err(
        base("Content", &[("Content", too_big)]),
        "InvalidParameter",
        400,
    );
    err(
        base("Name", &[("Name", "n".repeat(256))]),
        "InvalidParameter",
        400,
    );
    err(
        base("", &[("Timeout", "86401".into())]),
        "InvalidParameter.Timeout",
        400,
    );
    err(
        base(
            "InstanceId.1",
            &[("InstanceId.1", "mi-nosuchinstance".into())],
        ),
        "InvalidInstance.NotFound",
        404,
    );
    let many: Vec<(&'static str, String)> = Vec::new();
    let mut p = base("InstanceId.1", &many);
    for n in 1..=101 {
        p.push((format!("InstanceId.{n}"), format!("mi-{n}")));
    }
    err(p, "InstanceIds.ExceedLimit", 403);

    // The largest file is accepted, and a Timeout under 10 s is raised to 10 s.
    let p = base(
        "Content",
        &[
            ("Content", fits),
            ("Timeout", "1".into()),
            ("Overwrite", "true".into()),
        ],
    );
    let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let invoke_id = c.ok("SendFile", &refs)["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    let inv = wait_delivery(&c, &invoke_id);
    assert_eq!(inv["InvocationStatus"], "Success", "{inv}");
    assert_eq!(
        std::fs::metadata(target.join("f.txt")).unwrap().len(),
        24 * 1024
    );
}

#[test]
fn a_file_for_an_offline_agent_is_delivered_when_it_returns() {
    let server = Server::start();
    let mut agent = server.agent("away");
    let c = server.client();
    let dir = scratch_dir();
    agent.kill9();
    let id = send(
        &c,
        &agent.instance_id,
        dir.to_str().unwrap(),
        "later\n",
        &[],
    );
    agent.restart();
    let inv = wait_delivery(&c, &id);
    assert_eq!(inv["InvocationStatus"], "Success", "{inv}");
    assert_eq!(std::fs::read(dir.join("app.conf")).unwrap(), b"later\n");
}
