//! Retention end to end: a server that keeps the newest 3 records per account, a real
//! agent, and a sweep every 200 ms. Older records that have ended go; one still
//! running stays until it ends; file deliveries are counted apart from command runs.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// The invoke ids DescribeInvocations lists, newest first, and its TotalCount.
fn listed(c: &Client) -> (u64, Vec<String>) {
    let body = c.ok("DescribeInvocations", &[("PageSize", "50")]);
    let ids = body["Invocations"]["Invocation"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| i["InvokeId"].as_str().unwrap().to_string())
        .collect();
    (body["TotalCount"].as_u64().unwrap(), ids)
}

fn wait_listed(c: &Client, expected: &[&String]) {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    wait_for(Duration::from_secs(10), || {
        (listed(c) == (expected.len() as u64, expected.clone())).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "expected {expected:?}, DescribeInvocations has {:?}",
            listed(c)
        )
    });
}

#[test]
fn only_the_newest_records_are_kept_and_live_ones_wait_until_they_end() {
    let server = Server::start_with(&[
        "--retention-max-records",
        "3",
        "--retention-interval-ms",
        "200",
    ]);
    let agent = server.agent("keeper");
    let c = server.client();
    let inst = agent.instance_id.as_str();

    // The oldest record of all is a file delivery: it is counted apart, so it stays.
    let dir = scratch_dir();
    let file = c.ok(
        "SendFile",
        &[
            ("InstanceId.1", inst),
            ("Name", "kept.txt"),
            ("TargetDir", dir.to_str().unwrap()),
            ("Content", "kept"),
        ],
    )["InvokeId"]
        .as_str()
        .unwrap()
        .to_string();

    let mut runs = Vec::new();
    for n in 0..5 {
        let id = c.run(&format!("echo run {n}"), &[inst], &[]);
        assert_eq!(c.wait(&id, WAIT)[0]["InvocationStatus"], "Success");
        runs.push(id);
    }
    wait_listed(&c, &[&runs[4], &runs[3], &runs[2]]);
    // The purged ones are gone everywhere.
    for gone in &runs[..2] {
        assert!(c.results(gone).is_empty(), "{gone} still has results");
    }
    let files = c.ok("DescribeSendFileResults", &[("InvokeId", file.as_str())]);
    assert_eq!(files["TotalCount"], 1, "{files}");

    // A run still going is kept past the cap until it ends.
    let long = c.run("sleep 60", &[inst], &[("Timeout", "120")]);
    wait_for(WAIT, || {
        (c.results(&long)[0]["InvocationStatus"] == "Running").then_some(())
    })
    .expect("the long run started");
    let mut quick = Vec::new();
    for n in 0..3 {
        let id = c.run(&format!("echo quick {n}"), &[inst], &[]);
        c.wait(&id, WAIT);
        quick.push(id);
    }
    wait_listed(&c, &[&quick[2], &quick[1], &quick[0], &long]);
    // Several sweeps later it is still there.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(listed(&c).0, 4);

    c.ok("StopInvocation", &[("InvokeId", long.as_str())]);
    wait_listed(&c, &[&quick[2], &quick[1], &quick[0]]);
    assert!(c.results(&long).is_empty());
}
