//! Tags end to end: instances tagged through the API, RunCommand targeting them with
//! ResourceTag, tags on invocations, and the tag actions' errors.

mod common;

use common::*;
use std::time::Duration;

fn instance_ids(results: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = results
        .iter()
        .map(|r| r["InstanceId"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn resource_tags_pick_exactly_the_tagged_instances() {
    let server = Server::start();
    let (a, b, g) = (
        server.agent("alpha"),
        server.agent("beta"),
        server.agent("gamma"),
    );
    let c = server.client();
    let tag = |id: &str, value: &str| {
        c.ok(
            "TagResources",
            &[
                ("ResourceType", "instance"),
                ("ResourceId.1", id),
                ("Tag.1.Key", "env"),
                ("Tag.1.Value", value),
            ],
        );
    };
    tag(&a.instance_id, "prod");
    tag(&b.instance_id, "prod");
    tag(&g.instance_id, "dev");
    let listed = c.ok(
        "ListTagResources",
        &[
            ("ResourceType", "instance"),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "prod"),
        ],
    );
    let mut ids: Vec<String> = listed["TagResources"]["TagResource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(
                (t["TagKey"].as_str(), t["TagValue"].as_str()),
                (Some("env"), Some("prod"))
            );
            t["ResourceId"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    let mut prod = vec![a.instance_id.clone(), b.instance_id.clone()];
    prod.sort();
    assert_eq!(ids, prod);

    let run = |extra: &[(&str, &str)]| {
        let mut p: Vec<(&str, &str)> = vec![
            ("Type", "RunShellScript"),
            ("CommandContent", "echo hi"),
            ("ContentEncoding", "PlainText"),
        ];
        p.extend_from_slice(extra);
        c.call("RunCommand", &p)
    };
    let ok = run(&[
        ("ResourceTag.1.Key", "env"),
        ("ResourceTag.1.Value", "prod"),
        ("Tag.1.Key", "change"),
        ("Tag.1.Value", "CR-42"),
    ]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let invoke = ok.json()["InvokeId"].as_str().unwrap().to_string();
    assert_eq!(
        instance_ids(&c.wait(&invoke, Duration::from_secs(30))),
        prod,
        "exactly the prod instances"
    );

    // A key alone matches every value of it.
    let all = run(&[("ResourceTag.1.Key", "env")]).json();
    let results = c.wait(all["InvokeId"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!(results.len(), 3);

    // The invocation carries its tag.
    let t = c.ok(
        "ListTagResources",
        &[("ResourceType", "invocation"), ("ResourceId.1", &invoke)],
    );
    assert_eq!(t["TagResources"]["TagResource"][0]["TagValue"], "CR-42");
    let tags = &c.invocation(&invoke)["Tags"]["Tag"][0];
    assert_eq!(
        (tags["TagKey"].as_str(), tags["TagValue"].as_str()),
        (Some("change"), Some("CR-42"))
    );

    // Errors.
    c.err(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "x"),
            ("ContentEncoding", "PlainText"),
            ("ResourceTag.1.Key", "env"),
            ("ResourceTag.1.Value", "nowhere"),
        ],
        "InvalidResourceTag.InstanceNotFound",
        400,
    );
    c.err(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "x"),
            ("ContentEncoding", "PlainText"),
            ("ResourceTag.1.Key", "env"),
            ("InstanceId.1", a.instance_id.as_str()),
        ],
        "InvalidResourceTag.ConflictWithInstanceIds",
        400,
    );
    c.err(
        "TagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", "mi-nope"),
            ("Tag.1.Key", "k"),
        ],
        "InvalidResourceId.NotFound",
        404,
    );
    c.err(
        "TagResources",
        &[
            ("ResourceType", "planet"),
            ("ResourceId.1", "x"),
            ("Tag.1.Key", "k"),
        ],
        "InvalidResourceType.NotFound",
        404,
    );
    c.err(
        "TagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", a.instance_id.as_str()),
            ("Tag.1.Key", "k"),
            ("Tag.2.Key", "k"),
        ],
        "Duplicate.TagKey",
        400,
    );

    // Untagging takes an instance out of the target set.
    c.ok(
        "UntagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", b.instance_id.as_str()),
            ("TagKey.1", "env"),
        ],
    );
    let one = run(&[
        ("ResourceTag.1.Key", "env"),
        ("ResourceTag.1.Value", "prod"),
    ])
    .json();
    let results = c.wait(one["InvokeId"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!(instance_ids(&results), vec![a.instance_id.clone()]);

    // Another account can neither see nor tag these instances.
    let other = server.account_client("other-team");
    other.err(
        "TagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", a.instance_id.as_str()),
            ("Tag.1.Key", "k"),
        ],
        "InvalidResourceId.NotFound",
        404,
    );
    let theirs = other.call(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "x"),
            ("ContentEncoding", "PlainText"),
            ("ResourceTag.1.Key", "env"),
        ],
    );
    assert_eq!(theirs.json()["Code"], "InvalidResourceTag.InstanceNotFound");
}

#[test]
fn managed_instances_filter_by_name_activation_connection_and_tag() {
    let server = Server::start();
    let (a, mut b) = (server.agent("alpha"), server.agent("beta"));
    let c = server.client();
    let listed = |params: &[(&str, &str)]| -> Vec<String> {
        let mut p = vec![("PageSize", "50")];
        p.extend_from_slice(params);
        let mut ids: Vec<String> = c.ok("DescribeManagedInstances", &p)["Instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["InstanceId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let both = {
        let mut v = vec![a.instance_id.clone(), b.instance_id.clone()];
        v.sort();
        v
    };
    assert_eq!(listed(&[]), both);
    assert_eq!(
        listed(&[("InstanceName", "alpha")]),
        vec![a.instance_id.clone()]
    );
    assert_eq!(listed(&[("InstanceName", "gamma")]), Vec::<String>::new());
    let activation = c.ok(
        "DescribeManagedInstances",
        &[("InstanceId.1", &b.instance_id)],
    )["Instances"][0]["ActivationId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        listed(&[("ActivationId", &activation)]),
        vec![b.instance_id.clone()]
    );
    c.ok(
        "TagResources",
        &[
            ("ResourceType", "instance"),
            ("ResourceId.1", &a.instance_id),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "prod"),
        ],
    );
    assert_eq!(
        listed(&[("Tag.1.Key", "env"), ("Tag.1.Value", "prod")]),
        vec![a.instance_id.clone()]
    );
    assert_eq!(listed(&[("Tag.1.Key", "env")]), vec![a.instance_id.clone()]);
    let shown = c.ok(
        "DescribeManagedInstances",
        &[("InstanceId.1", &a.instance_id)],
    );
    assert_eq!(
        shown["Instances"][0]["Tags"],
        serde_json::json!([{"TagKey": "env", "TagValue": "prod"}]),
        "{shown}"
    );
    assert_eq!(listed(&[("Connected", "true")]), both);
    b.kill9();
    let offline = wait_for(Duration::from_secs(20), || {
        let l = listed(&[("Connected", "false")]);
        (l == vec![b.instance_id.clone()]).then_some(l)
    });
    assert!(offline.is_some(), "{:?}", listed(&[("Connected", "false")]));
    assert_eq!(
        listed(&[("Connected", "true")]),
        vec![a.instance_id.clone()]
    );
    assert_eq!(
        listed(&[("Connected", "true"), ("InstanceId.1", &b.instance_id)]),
        Vec::<String>::new()
    );
    c.err(
        "DescribeManagedInstances",
        &[("InstanceIp", "10.0.0.1")],
        "InvalidParameter",
        400,
    );
}
