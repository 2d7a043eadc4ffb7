//! Resource groups end to end: agents registered with activations of two groups,
//! RunCommand, InvokeCommand and SendFile confined to a group (an instance outside it
//! is not found), and every listing filtered by group; DescribeCommands by group and
//! by tag.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// A listing's ids (`field` of each item) and its TotalCount.
fn listed(body: &Value, items: &[&str], field: &str) -> (u64, Vec<String>) {
    let mut v = &body[items[0]];
    for key in &items[1..] {
        v = &v[key];
    }
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("no {items:?} in {body}"))
        .iter()
        .map(|x| x[field].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let total = body["TotalCount"]
        .as_u64()
        .or_else(|| body["Invocation"]["TotalCount"].as_u64())
        .unwrap();
    (total, ids)
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn a_resource_group_confines_runs_and_filters_every_listing() {
    let server = Server::start();
    let red = server.agent_in_group("red", "rg-red");
    let blue = server.agent_in_group("blue", "rg-blue");
    let plain = server.agent("plain");
    let c = server.client();
    let (r, b, p) = (
        red.instance_id.as_str(),
        blue.instance_id.as_str(),
        plain.instance_id.as_str(),
    );

    // Managed instances belong to their activation's group.
    let managed = |extra: &[(&str, &str)]| {
        let mut params = vec![("PageSize", "50")];
        params.extend_from_slice(extra);
        c.ok("DescribeManagedInstances", &params)
    };
    let all = managed(&[]);
    for i in all["Instances"].as_array().unwrap() {
        let expected = match i["InstanceName"].as_str().unwrap() {
            "red" => "rg-red",
            "blue" => "rg-blue",
            _ => "",
        };
        assert_eq!(i["ResourceGroupId"], expected, "{i}");
    }
    assert_eq!(
        listed(
            &managed(&[("ResourceGroupId", "rg-red")]),
            &["Instances"],
            "InstanceId"
        ),
        (1, sorted(&[r]))
    );
    assert_eq!(
        listed(
            &managed(&[("ResourceGroupId", "rg-none")]),
            &["Instances"],
            "InstanceId"
        ),
        (0, vec![])
    );

    // RunCommand in rg-red: on red it runs; blue and the ungrouped instance are not
    // found there, alone or alongside red, and nothing runs.
    let in_red = [("ResourceGroupId", "rg-red"), ("KeepCommand", "true")];
    let run_red = c.run("echo red", &[r], &in_red);
    let results = c.wait(&run_red, Duration::from_secs(30));
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["InvocationStatus"], "Success", "{:?}", results);
    assert_eq!(b64(&results[0]["Output"]), "red\n");
    let before = c.ok("DescribeInvocations", &[])["TotalCount"].clone();
    for targets in [vec![b], vec![p], vec![r, b]] {
        let mut params: Vec<(String, String)> = vec![
            ("Type".into(), "RunShellScript".into()),
            ("CommandContent".into(), "echo nope".into()),
            ("ContentEncoding".into(), "PlainText".into()),
            ("ResourceGroupId".into(), "rg-red".into()),
        ];
        for (n, id) in targets.iter().enumerate() {
            params.push((format!("InstanceId.{}", n + 1), id.to_string()));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let refused = c.err("RunCommand", &params, "InvalidInstance.NotFound", 404);
        let outside = if targets.contains(&b) { b } else { p };
        assert!(
            refused["Message"].as_str().unwrap().contains(outside),
            "{refused}"
        );
    }
    assert_eq!(
        c.ok("DescribeInvocations", &[])["TotalCount"],
        before,
        "a refused run stores nothing"
    );
    // Without a group, any instance of the account may be named.
    let anywhere = c.run("echo anywhere", &[r, b, p], &[]);
    assert_eq!(c.wait(&anywhere, Duration::from_secs(30)).len(), 3);

    // ResourceTag in a group picks the tagged instances of that group only.
    c.ok(
        "TagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", r),
            ("ResourceId.2", b),
            ("ResourceId.3", p),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "prod"),
        ],
    );
    let tagged_blue = c.ok(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "echo tagged"),
            ("ContentEncoding", "PlainText"),
            ("ResourceTag.1.Key", "env"),
            ("ResourceGroupId", "rg-blue"),
        ],
    )["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    let results = c.wait(&tagged_blue, Duration::from_secs(30));
    assert_eq!(listed_ids(&results), sorted(&[b]));
    c.err(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "echo nothing"),
            ("ContentEncoding", "PlainText"),
            ("ResourceTag.1.Key", "env"),
            ("ResourceGroupId", "rg-empty"),
        ],
        "InvalidResourceTag.InstanceNotFound",
        400,
    );

    // A saved command of rg-blue, tagged, invoked in rg-blue on blue; refused on red.
    let created = c.ok(
        "CreateCommand",
        &[
            ("Name", "blue-job"),
            ("Type", "RunShellScript"),
            ("CommandContent", "ZWNobyBibHVl"), // echo blue
            ("ResourceGroupId", "rg-blue"),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "blue"),
            ("Tag.2.Key", "tier"),
            ("Tag.2.Value", "1"),
        ],
    );
    let blue_cmd = created["CommandId"].as_str().unwrap().to_string();
    let invoked = c.ok(
        "InvokeCommand",
        &[
            ("CommandId", &blue_cmd),
            ("InstanceId.1", b),
            ("ResourceGroupId", "rg-blue"),
        ],
    )["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    let results = c.wait(&invoked, Duration::from_secs(30));
    assert_eq!(b64(&results[0]["Output"]), "blue\n");
    c.err(
        "InvokeCommand",
        &[
            ("CommandId", &blue_cmd),
            ("InstanceId.1", r),
            ("ResourceGroupId", "rg-blue"),
        ],
        "InvalidInstance.NotFound",
        404,
    );

    // SendFile in rg-blue.
    let scratch = scratch_dir();
    let dir = scratch.to_str().unwrap();
    let sent = c.ok(
        "SendFile",
        &[
            ("InstanceId.1", b),
            ("Name", "blue.txt"),
            ("TargetDir", dir),
            ("Content", "blue\n"),
            ("ResourceGroupId", "rg-blue"),
        ],
    )["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();
    c.err(
        "SendFile",
        &[
            ("InstanceId.1", r),
            ("Name", "red.txt"),
            ("TargetDir", dir),
            ("Content", "red\n"),
            ("ResourceGroupId", "rg-blue"),
        ],
        "InvalidInstance.NotFound",
        404,
    );
    let delivered = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(scratch.join("blue.txt")).ok()
    });
    assert_eq!(delivered.as_deref(), Some("blue\n"));

    // DescribeInvocations by group: each group's own runs, no file delivery.
    let invocations = |group: &str| {
        listed(
            &c.ok(
                "DescribeInvocations",
                &[("ResourceGroupId", group), ("PageSize", "50")],
            ),
            &["Invocations", "Invocation"],
            "InvokeId",
        )
    };
    assert_eq!(invocations("rg-red"), (1, sorted(&[&run_red])));
    assert_eq!(
        invocations("rg-blue"),
        (2, sorted(&[&tagged_blue, &invoked]))
    );
    assert_eq!(invocations("rg-none"), (0, vec![]));
    let red_on_blue = c.ok(
        "DescribeInvocations",
        &[("ResourceGroupId", "rg-red"), ("InstanceId", b)],
    );
    assert_eq!(red_on_blue["TotalCount"], 0);

    // DescribeInvocationResults by group.
    let results = |extra: &[(&str, &str)]| {
        let mut params = vec![("PageSize", "50")];
        params.extend_from_slice(extra);
        let body = c.ok("DescribeInvocationResults", &params);
        listed(
            &body,
            &["Invocation", "InvocationResults", "InvocationResult"],
            "InvokeId",
        )
    };
    assert_eq!(
        results(&[("ResourceGroupId", "rg-red")]),
        (1, sorted(&[&run_red]))
    );
    assert_eq!(
        results(&[("ResourceGroupId", "rg-blue")]),
        (2, sorted(&[&tagged_blue, &invoked]))
    );
    assert_eq!(
        results(&[("ResourceGroupId", "rg-blue"), ("InstanceId", r)]),
        (0, vec![])
    );
    assert_eq!(
        results(&[("ResourceGroupId", "rg-red"), ("InvokeId", &invoked)]),
        (0, vec![]),
        "an invocation of another group has no results in this one"
    );
    assert_eq!(
        results(&[("ResourceGroupId", "rg-blue"), ("InvokeId", &invoked)]),
        (1, sorted(&[&invoked]))
    );

    // DescribeSendFileResults by group.
    let files = |group: &str| {
        listed(
            &c.ok("DescribeSendFileResults", &[("ResourceGroupId", group)]),
            &["Invocations", "Invocation"],
            "InvokeId",
        )
    };
    assert_eq!(files("rg-blue"), (1, sorted(&[&sent])));
    assert_eq!(files("rg-red"), (0, vec![]));

    // DescribeCommands by group (the RunCommand kept in rg-red is there) and by tag.
    let commands = |extra: &[(&str, &str)]| {
        let body = c.ok("DescribeCommands", extra);
        for cmd in body["Commands"]["Command"].as_array().unwrap() {
            if let Some((_, group)) = extra.iter().find(|(k, _)| *k == "ResourceGroupId") {
                assert_eq!(cmd["ResourceGroupId"], *group, "{cmd}");
            }
        }
        listed(&body, &["Commands", "Command"], "Name")
    };
    let red_cmds = commands(&[("ResourceGroupId", "rg-red")]);
    assert_eq!(red_cmds.0, 1);
    assert!(red_cmds.1[0].starts_with("RunCommand-"), "{red_cmds:?}");
    assert_eq!(
        commands(&[("ResourceGroupId", "rg-blue")]),
        (1, sorted(&["blue-job"]))
    );
    c.ok(
        "CreateCommand",
        &[
            ("Name", "red-job"),
            ("Type", "RunShellScript"),
            ("CommandContent", "ZWNobyByZWQ="),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "red"),
        ],
    );
    assert_eq!(
        commands(&[("Tag.1.Key", "team"), ("Tag.1.Value", "blue")]),
        (1, sorted(&["blue-job"]))
    );
    assert_eq!(
        commands(&[("Tag.1.Key", "team")]),
        (2, sorted(&["blue-job", "red-job"])),
        "a key alone matches any value"
    );
    assert_eq!(
        commands(&[
            ("Tag.1.Key", "team"),
            ("Tag.2.Key", "tier"),
            ("Tag.2.Value", "1"),
        ]),
        (1, sorted(&["blue-job"])),
        "every tag must match"
    );
    assert_eq!(
        commands(&[
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "red"),
            ("ResourceGroupId", "rg-blue"),
        ]),
        (0, vec![])
    );

    // A ResourceGroupId that cannot be one.
    let long = "g".repeat(65);
    for bad in ["rg red", "rg/red", long.as_str()] {
        c.err(
            "DescribeInvocations",
            &[("ResourceGroupId", bad)],
            "InvalidResourceGroup.NotFound",
            404,
        );
        c.err(
            "RunCommand",
            &[
                ("Type", "RunShellScript"),
                ("CommandContent", "x"),
                ("ContentEncoding", "PlainText"),
                ("InstanceId.1", r),
                ("ResourceGroupId", bad),
            ],
            "InvalidResourceGroup.NotFound",
            404,
        );
    }
    c.err(
        "CreateActivation",
        &[("ResourceGroupId", "rg!")],
        "InvalidResourceGroup.NotFound",
        404,
    );
}

fn listed_ids(results: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = results
        .iter()
        .map(|r| r["InstanceId"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}
