//! The API surface against a real server: signatures, regions, routing, paging,
//! XML, validation. No agent is needed except where a run is.

mod common;

use common::*;
use oca_domain::time::now_millis;

fn signed(c: &Client, action: &str, now: i64, nonce: &str) -> Answer {
    c.raw(action, vec![("RegionId".into(), REGION.into())], now, nonce)
}

#[test]
fn both_signature_schemes_are_verified() {
    let server = Server::start();
    for sig in [Sig::V3, Sig::V1] {
        let c = server.client().with_sig(sig);
        c.ok("DescribeCommands", &[]);

        let bad = server.client().with_sig(sig).with_secret("wrong-secret");
        bad.err("DescribeCommands", &[], "SignatureDoesNotMatch", 400);

        let unknown = server.client().with_sig(sig).with_key("LTAInotakey");
        unknown.err("DescribeCommands", &[], "InvalidAccessKeyId.NotFound", 404);

        // A timestamp 20 minutes old is refused.
        let stale = signed(
            &c,
            "DescribeCommands",
            now_millis() - 20 * 60 * 1000,
            "stale-nonce",
        );
        assert_eq!(stale.status, 400, "{}", stale.body);
        assert_eq!(
            stale.json()["Code"],
            "InvalidTimeStamp.Expired",
            "{sig:?}: {}",
            stale.body
        );

        // A nonce used once is refused the second time.
        let nonce = format!("nonce-{sig:?}-{}", now_millis());
        let first = signed(&c, "DescribeCommands", now_millis(), &nonce);
        assert_eq!(first.status, 200, "{}", first.body);
        let replay = signed(&c, "DescribeCommands", now_millis(), &nonce);
        assert_eq!(replay.status, 400, "{}", replay.body);
        assert_eq!(
            replay.json()["Code"],
            "SignatureNonceUsed",
            "{}",
            replay.body
        );
    }
    // No signature at all.
    let a = http_get(
        &format!("127.0.0.1:{}", server.port),
        "/?Action=DescribeCommands&Version=2014-05-26&RegionId=cn-hangzhou",
        &[],
    );
    assert!(
        a.status == 400 || a.status == 403 || a.status == 404,
        "{}",
        a.body
    );
    assert!(a.json()["Code"].as_str().is_some_and(|c| !c.is_empty()));
}

/// Nonces are remembered in memory only; a request stamped before the server started
/// is refused, so one captured before a restart cannot be replayed after it.
#[test]
fn a_request_served_before_a_restart_cannot_be_replayed_after_it() {
    let mut server = Server::start();
    let mut sent = Vec::new();
    for sig in [Sig::V3, Sig::V1] {
        let c = server.client().with_sig(sig);
        let (now, nonce) = (now_millis(), format!("restart-{sig:?}-{}", now_millis()));
        let first = signed(&c, "DescribeCommands", now, &nonce);
        assert_eq!(first.status, 200, "{}", first.body);
        sent.push((sig, now, nonce));
    }
    // (Stamps have whole seconds: a replay within the second of the restart itself is
    // the one window left.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.crash_and_restart();
    for (sig, now, nonce) in sent {
        let c = server.client().with_sig(sig);
        let replay = signed(&c, "DescribeCommands", now, &nonce);
        assert_eq!(
            (replay.status, replay.json()["Code"].as_str()),
            (400, Some("SignatureNonceUsed")),
            "{sig:?}: {}",
            replay.body
        );
        assert!(replay.json()["Message"]
            .as_str()
            .unwrap()
            .contains("before the server started"));
        c.ok("DescribeCommands", &[]);
    }
}

#[test]
fn regions_and_actions() {
    let server = Server::start();
    let c = server.client();
    let a = c.raw(
        "DescribeInvocations",
        vec![],
        now_millis(),
        "n-missing-region",
    );
    assert_eq!(a.status, 400);
    let body = a.json();
    assert_eq!(body["Code"], "MissingParameter.RegionId");
    assert_eq!(
        body["Message"],
        "The input parameter \u{201c}RegionId\u{201d} that is mandatory for processing this request is not supplied."
    );
    let a = c.raw(
        "DescribeInvocations",
        vec![("RegionId".into(), "mars-1".into())],
        now_millis(),
        "n-bad-region",
    );
    assert_eq!(
        (a.status, a.json()["Code"].as_str().unwrap()),
        (404, "InvalidRegionId.NotFound")
    );
    c.err("NoSuchAction", &[], "InvalidAction.NotFound", 404);
}

#[test]
fn paging_and_its_errors() {
    let server = Server::start();
    let c = server.client();
    for n in 0..12 {
        c.ok(
            "CreateCommand",
            &[
                ("Name", &format!("cmd{n}")),
                ("Type", "RunShellScript"),
                ("CommandContent", "ZWNobyBoaQ=="),
            ],
        );
    }
    let p1 = c.ok("DescribeCommands", &[("PageSize", "5")]);
    assert_eq!(
        (
            p1["TotalCount"].as_u64(),
            p1["PageNumber"].as_u64(),
            p1["PageSize"].as_u64()
        ),
        (Some(12), Some(1), Some(5))
    );
    assert_eq!(p1["Commands"]["Command"].as_array().unwrap().len(), 5);
    let p3 = c.ok(
        "DescribeCommands",
        &[("PageSize", "5"), ("PageNumber", "3")],
    );
    assert_eq!(p3["Commands"]["Command"].as_array().unwrap().len(), 2);
    let d = c.ok("DescribeCommands", &[]);
    assert_eq!(d["PageSize"], 10, "the default page size");

    // Every row exactly once across pages, newest first.
    let mut names = vec![];
    for page in 1..=3 {
        let b = c.ok(
            "DescribeCommands",
            &[("PageSize", "5"), ("PageNumber", &page.to_string())],
        );
        for cmd in b["Commands"]["Command"].as_array().unwrap() {
            names.push(cmd["Name"].as_str().unwrap().to_string());
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 12);

    // MaxResults / NextToken walk the same rows.
    let mut token = String::new();
    let mut walked = 0;
    loop {
        let mut params = vec![("MaxResults", "5")];
        if !token.is_empty() {
            params.push(("NextToken", token.as_str()));
        }
        let b = c.ok("DescribeCommands", &params);
        walked += b["Commands"]["Command"].as_array().unwrap().len();
        token = b["NextToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(walked, 12);

    for action in [
        "DescribeCommands",
        "DescribeInvocations",
        "DescribeInvocationResults",
    ] {
        c.err(action, &[("PageSize", "51")], "InvalidParam.PageSize", 403);
        c.err(action, &[("PageSize", "0")], "InvalidParam.PageSize", 403);
        c.err(
            action,
            &[("PageNumber", "0")],
            "InvalidParam.PageNumber",
            403,
        );
        c.err(
            action,
            &[("PageNumber", "x")],
            "InvalidParam.PageNumber",
            403,
        );
    }
}

#[test]
fn xml_format_nests_like_the_seeds() {
    let server = Server::start();
    let a = server.agent("xmlhost");
    let c = server.client();
    let invoke = c.run("echo xml", &[&a.instance_id], &[]);
    c.wait(&invoke, std::time::Duration::from_secs(30));
    let x = c.call(
        "DescribeInvocations",
        &[("Format", "XML"), ("InvokeId", &invoke)],
    );
    assert_eq!(x.status, 200);
    let doc = x.body;
    assert!(doc.contains("<DescribeInvocationsResponse>"), "{doc}");
    assert!(doc.contains("<Invocations><Invocation>"), "{doc}");
    assert!(
        doc.contains("<InvokeInstances><InvokeInstance><InstanceId>"),
        "{doc}"
    );
    assert!(
        doc.contains(&format!("<InvokeId>{invoke}</InvokeId>")),
        "{doc}"
    );
    assert!(doc.contains("<TotalCount>1</TotalCount>"), "{doc}");
    assert!(doc.contains("<RequestId>"), "{doc}");
    let x = c.call(
        "DescribeInvocationResults",
        &[("Format", "XML"), ("InvokeId", &invoke)],
    );
    assert!(
        x.body
            .contains("<Invocation><InvocationResults><InvocationResult>"),
        "{}",
        x.body
    );
    assert!(
        x.body
            .contains("<InvocationStatus>Success</InvocationStatus>"),
        "{}",
        x.body
    );
    // Errors in XML too.
    let e = c.call(
        "DescribeInvocations",
        &[("Format", "XML"), ("PageSize", "99")],
    );
    assert_eq!(e.status, 403);
    assert!(
        e.body.contains("<Error>") && e.body.contains("<Code>InvalidParam.PageSize</Code>"),
        "{}",
        e.body
    );
    assert!(
        e.body.contains("<RequestId>") && e.body.contains("<HostId>"),
        "{}",
        e.body
    );
}

#[test]
fn command_validation_and_lifecycle() {
    let server = Server::start();
    let c = server.client();
    c.err(
        "CreateCommand",
        &[
            ("Name", "x"),
            ("Type", "RunPythonScript"),
            ("CommandContent", "ZQ=="),
        ],
        "InvalidCmdType.NotFound",
        404,
    );
    c.err(
        "CreateCommand",
        &[("Type", "RunShellScript"), ("CommandContent", "ZQ==")],
        "MissingParameter",
        400,
    );
    let big = "x".repeat(14 * 1024);
    c.err(
        "CreateCommand",
        &[
            ("Name", "big"),
            ("Type", "RunShellScript"),
            ("CommandContent", &big),
            ("ContentEncoding", "PlainText"),
        ],
        "CmdContent.ExceedLimit",
        403,
    );
    c.err(
        "CreateCommand",
        &[
            ("Name", "t"),
            ("Type", "RunShellScript"),
            ("CommandContent", "ZQ=="),
            ("Timeout", "5"),
        ],
        "InvalidParameter.Timeout",
        400,
    );
    c.err(
        "RunCommand",
        &[("Type", "RunShellScript"), ("CommandContent", "echo")],
        "MissingParam.InstanceId",
        400,
    );

    let id = c.ok(
        "CreateCommand",
        &[
            ("Name", "life"),
            ("Type", "RunShellScript"),
            ("CommandContent", "ZWNobyAx"),
            ("Timeout", "120"),
        ],
    )["CommandId"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(
        "ModifyCommand",
        &[
            ("CommandId", &id),
            ("Name", "life2"),
            ("CommandContent", "ZWNobyAy"),
        ],
    );
    let got = c.ok(
        "DescribeCommands",
        &[("CommandId", &id), ("ContentEncoding", "PlainText")],
    );
    let cmd = &got["Commands"]["Command"][0];
    assert_eq!(
        (
            cmd["Name"].as_str(),
            cmd["CommandContent"].as_str(),
            cmd["Timeout"].as_i64()
        ),
        (Some("life2"), Some("echo 2"), Some(120))
    );
    let by_name = c.ok("DescribeCommands", &[("Name", "life2")]);
    assert_eq!(by_name["TotalCount"], 1);
    c.ok("DeleteCommand", &[("CommandId", &id)]);
    c.err(
        "DeleteCommand",
        &[("CommandId", &id)],
        "InvalidCmdId.NotFound",
        404,
    );
    c.err(
        "ModifyCommand",
        &[("CommandId", &id), ("Name", "x")],
        "InvalidCmdId.NotFound",
        404,
    );
    assert_eq!(
        c.ok("DescribeCommands", &[("CommandId", &id)])["TotalCount"],
        0
    );
}

#[test]
fn invocation_filters() {
    let server = Server::start();
    let a = server.agent("filterhost");
    let c = server.client();
    let ok = c.run("true", &[&a.instance_id], &[("Name", "good")]);
    let bad = c.run("false", &[&a.instance_id], &[("Name", "bad")]);
    c.wait(&ok, std::time::Duration::from_secs(30));
    c.wait(&bad, std::time::Duration::from_secs(30));
    let by_name = c.ok("DescribeInvocations", &[("CommandName", "bad")]);
    assert_eq!(by_name["TotalCount"], 1);
    assert_eq!(
        by_name["Invocations"]["Invocation"][0]["InvokeId"],
        bad.as_str()
    );
    let by_instance = c.ok("DescribeInvocations", &[("InstanceId", &a.instance_id)]);
    assert_eq!(by_instance["TotalCount"], 2);
    let finished = c.ok("DescribeInvocations", &[("InvokeStatus", "Finished")]);
    assert_eq!(
        finished["TotalCount"], 2,
        "a non-zero exit still Finished (legacy)"
    );
    let running = c.ok("DescribeInvocations", &[("InvokeStatus", "Running")]);
    assert_eq!(running["TotalCount"], 0);
    let typed = c.ok("DescribeInvocations", &[("CommandType", "RunShellScript")]);
    assert_eq!(typed["TotalCount"], 2);
    let finished = c.ok(
        "DescribeInvocationResults",
        &[
            ("InvokeRecordStatus", "Finished"),
            ("InstanceId", &a.instance_id),
        ],
    );
    assert_eq!(finished["Invocation"]["TotalCount"], 2);
    let failed = c.ok(
        "DescribeInvocationResults",
        &[("InvokeRecordStatus", "Failed")],
    );
    assert_eq!(failed["Invocation"]["TotalCount"], 0);
    c.err(
        "DescribeInvocationResults",
        &[("IncludeHistory", "true")],
        "InvalidParameter",
        400,
    );
}

/// NextToken of the invocation and result listings is a position: a walk that goes on
/// while new invocations arrive sees every earlier row once, none twice.
#[test]
fn next_token_walks_hold_while_runs_are_added() {
    let server = Server::start();
    let agent = server.agent("pager");
    let c = server.client();
    let mut first_ids = Vec::new();
    for n in 0..12 {
        first_ids.push(c.run(&format!("echo {n}"), &[&agent.instance_id], &[]));
    }
    for (action, list, id_of) in [
        (
            "DescribeInvocations",
            "/Invocations/Invocation",
            "/InvokeId",
        ),
        (
            "DescribeInvocationResults",
            "/Invocation/InvocationResults/InvocationResult",
            "/InvokeId",
        ),
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let mut params = vec![("MaxResults", "5")];
            if !token.is_empty() {
                params.push(("NextToken", token.as_str()));
            }
            let b = c.ok(action, &params);
            for row in b.pointer(list).unwrap().as_array().unwrap() {
                seen.push(row.pointer(id_of).unwrap().as_str().unwrap().to_string());
            }
            pages += 1;
            // New runs land at the head of the listing after the first page.
            if pages == 1 {
                for n in 0..3 {
                    c.run(&format!("echo late {n}"), &[&agent.instance_id], &[]);
                }
            }
            let next = b
                .pointer("/NextToken")
                .or_else(|| b.pointer("/Invocation/NextToken"))
                .and_then(|t| t.as_str())
                .unwrap()
                .to_string();
            if next.is_empty() {
                break;
            }
            token = next;
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{action}: a row twice: {seen:?}");
        for id in &first_ids {
            assert!(seen.contains(id), "{action}: {id} missed");
        }
    }
    c.err(
        "DescribeInvocations",
        &[("NextToken", "knot-a-position")],
        "InvalidParam.NextToken",
        403,
    );
}
