//! Fleet management with real agents: activations listed, disabled and deleted;
//! managed instances renamed and deregistered. A deregistered instance's agent is cut
//! off at once (its WebSocket gets a Close frame after a Stop for each of its live
//! tasks) and cannot come back with its old token; its past results stay readable.
//!
//! A "raw" agent (a WebSocket spoken by hand over a TcpStream) shows exactly what the
//! server sends; real `oca-agent` processes show the rest.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn host(server: &Server) -> String {
    format!("127.0.0.1:{}", server.port)
}

/// POSTs JSON (the agent registration endpoint); status and body.
fn http_post_json(host: &str, path: &str, body: &Value) -> Answer {
    let body = body.to_string();
    let mut stream = TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        body: body.to_string(),
    }
}

/// Registers as an agent would; the answer (instance id and token, or the refusal).
fn register(server: &Server, activation_id: &str, code: &str, hostname: &str) -> Answer {
    http_post_json(
        &host(server),
        "/agent/v1/register",
        &json!({
            "activation_id": activation_id,
            "activation_code": code,
            "hostname": hostname,
            "os_type": "linux",
            "agent_version": "raw",
        }),
    )
}

/// An agent WebSocket spoken by hand.
struct RawWs {
    stream: TcpStream,
}

/// Opens the agent WebSocket with `Bearer <instance_id>:<token>`: the HTTP status of
/// the answer (101 when upgraded) and, when upgraded, the socket.
fn ws_open(server: &Server, instance_id: &str, token: &str) -> (u16, Option<RawWs>) {
    let host = host(server);
    let mut stream = TcpStream::connect(&host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "GET /agent/v1/connect HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {instance_id}:{token}\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, (status == 101).then_some(RawWs { stream }))
}

impl RawWs {
    /// Sends a text frame (masked, as a client must).
    fn send(&mut self, msg: &Value) {
        let payload = msg.to_string().into_bytes();
        let mask = [0x5a, 0x17, 0xc3, 0x08];
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    /// The next frame from the server: opcode and payload; `None` once the connection
    /// has ended without one.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.stream.read_exact(&mut h).ok()?;
        let mut len = (h[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            self.stream.read_exact(&mut b).ok()?;
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.stream.read_exact(&mut b).ok()?;
            len = u64::from_be_bytes(b);
        }
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let mut payload = vec![0u8; len as usize];
        self.stream.read_exact(&mut payload).ok()?;
        Some((h[0] & 0x0f, payload))
    }

    /// The next text message, as JSON (pings skipped); `None` at a Close frame or the
    /// end of the connection.
    fn next_text(&mut self) -> Option<Value> {
        loop {
            match self.read()? {
                (0x1, p) => return Some(serde_json::from_slice(&p).unwrap()),
                (0x8, _) => return None,
                _ => continue,
            }
        }
    }

    /// Says hello as a new agent would; returns the Welcome.
    fn hello(&mut self) -> Value {
        self.send(&json!({
            "type": "hello",
            "protocol": 1,
            "agent_version": "raw",
            "hostname": "raw-host",
            "os_type": "linux",
            "known": [],
        }));
        let welcome = self.next_text().expect("a Welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        self.send(&json!({"type": "heartbeat", "active_tasks": 0}));
        welcome
    }
}

/// One activation as DescribeActivations shows it.
fn activation(c: &Client, id: &str) -> Value {
    let body = c.ok("DescribeActivations", &[("ActivationId", id)]);
    assert_eq!(body["TotalCount"], 1, "{body}");
    body["ActivationList"][0].clone()
}

fn listed_instances(c: &Client) -> Vec<String> {
    c.ok("DescribeManagedInstances", &[("PageSize", "50")])["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect()
}

fn result_of(c: &Client, invoke_id: &str, instance_id: &str) -> Value {
    c.results(invoke_id)
        .into_iter()
        .find(|r| r["InstanceId"] == instance_id)
        .unwrap_or_else(|| panic!("no result of {instance_id} in {invoke_id}"))
}

#[test]
fn a_deregistered_instance_is_cut_off_and_stays_out() {
    let server = Server::start();
    let c = server.client();
    let act = c.ok(
        "CreateActivation",
        &[("InstanceCount", "3"), ("Description", "the fleet")],
    );
    let (act_id, code) = (
        act["ActivationId"].as_str().unwrap(),
        act["ActivationCode"].as_str().unwrap(),
    );
    let mut a = server.agent_registered_with(&c, "fleet-a", act_id, code);
    let b = server.agent_registered_with(&c, "fleet-b", act_id, code);
    let (ia, ib) = (a.instance_id.clone(), b.instance_id.clone());

    // A raw agent with the third use of the activation.
    let reg = register(&server, act_id, code, "raw-host");
    assert_eq!(reg.status, 200, "{}", reg.body);
    let reg = reg.json();
    let (raw_id, raw_token) = (
        reg["instance_id"].as_str().unwrap().to_string(),
        reg["token"].as_str().unwrap().to_string(),
    );
    let a_ = activation(&c, act_id);
    assert_eq!(
        (&a_["RegisteredCount"], &a_["DeregisteredCount"]),
        (&json!(3), &json!(0))
    );

    // History on a and b, and a run under way on a.
    let before = c.run("echo before", &[&ia, &ib], &[]);
    c.wait(&before, WAIT);
    let dir = scratch_dir();
    let marker = dir.join("finished");
    let long = c.run(
        &format!("sleep 4; touch {}", marker.display()),
        &[&ia],
        &[("Timeout", "60")],
    );
    wait_for(WAIT, || {
        (result_of(&c, &long, &ia)["InvocationStatus"] == "Running").then_some(())
    })
    .expect("the long run started");

    // Deregistered: answered with the instance as it was.
    let gone = c.ok("DeregisterManagedInstance", &[("InstanceId", &ia)]);
    let i = &gone["Instance"];
    assert_eq!(i["InstanceId"], ia.as_str(), "{gone}");
    assert_eq!(
        (&i["Hostname"], &i["ActivationId"], &i["InstanceName"]),
        (&json!("fleet-a"), &json!(act_id), &json!("fleet-a"))
    );
    assert_eq!(i["InvocationCount"], 2, "{gone}");
    assert!(i["RegistrationTime"].as_str().unwrap().ends_with('Z'));
    assert!(gone["RequestId"].is_string());

    // Listed nowhere, at once.
    assert_eq!(listed_instances(&c), vec![raw_id.clone(), ib.clone()]);
    let status = c.ok("DescribeCloudAssistantStatus", &[("InstanceId.1", &ia)]);
    assert_eq!(status["TotalCount"], 0, "{status}");
    // Nothing can be sent to it.
    c.err(
        "RunCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "echo no"),
            ("ContentEncoding", "PlainText"),
            ("InstanceId.1", &ia),
        ],
        "InvalidInstance.NotFound",
        404,
    );
    c.err(
        "SendFile",
        &[
            ("Name", "no.txt"),
            ("TargetDir", dir.to_str().unwrap()),
            ("Content", "no"),
            ("InstanceId.1", &ia),
        ],
        "InvalidInstance.NotFound",
        404,
    );
    for action in ["DeregisterManagedInstance", "ModifyManagedInstance"] {
        c.err(
            action,
            &[("InstanceId", &ia), ("InstanceName", "again")],
            "InvalidInstance.NotFound",
            404,
        );
    }
    // Its run under way is ended (and was stopped on the host: the marker never comes).
    let r = result_of(&c, &long, &ia);
    assert_eq!(
        (&r["InvocationStatus"], &r["ErrorCode"]),
        (&json!("Error"), &json!("ExecutionInterrupted")),
        "{r}"
    );
    // Its past results stay readable.
    let r = result_of(&c, &before, &ia);
    assert_eq!(
        (&r["InvocationStatus"], b64(&r["Output"]).as_str()),
        (&json!("Success"), "before\n")
    );
    let out = c.ok(
        "DescribeInvocationOutput",
        &[
            ("InvokeId", &before),
            ("InstanceId", &ia),
            ("ContentEncoding", "PlainText"),
        ],
    );
    assert_eq!(out["Output"], "before\n", "{out}");
    let by_instance = c.ok("DescribeInvocationResults", &[("InstanceId", &ia)]);
    assert_eq!(by_instance["Invocation"]["TotalCount"], 2, "{by_instance}");

    // Its token is refused (the agent keeps trying: refused each time).
    let identity: Value =
        serde_json::from_slice(&std::fs::read(a.state.path().join("identity.json")).unwrap())
            .unwrap();
    assert_eq!(identity["instance_id"], ia.as_str());
    let (status, _) = ws_open(&server, &ia, identity["token"].as_str().unwrap());
    assert_eq!(status, 401);
    let deregistered_at = std::time::Instant::now();
    // The instance b is untouched.
    let run = c.run("echo still", &[&ib], &[]);
    assert_eq!(b64(&c.wait(&run, WAIT)[0]["Output"]), "still\n");

    // The raw agent, connected with a task pending: it gets a Stop for that task, then
    // its socket is closed (1008), and its token is refused from then on. (It sends one
    // heartbeat only: all of this takes well under the server's 3 s of silence.)
    let (status, ws) = ws_open(&server, &raw_id, &raw_token);
    assert_eq!(status, 101);
    let mut ws = ws.unwrap();
    assert_eq!(ws.hello()["instance_id"], raw_id.as_str());
    let pending = c.run("sleep 30", &[&raw_id], &[("Timeout", "60")]);
    let run = ws.next_text().expect("the task");
    assert_eq!(
        (&run["type"], &run["invoke_id"]),
        (&json!("run"), &json!(pending))
    );
    c.ok("DeregisterManagedInstance", &[("InstanceId", &raw_id)]);
    let stop = ws.next_text().expect("a Stop");
    assert_eq!(
        (&stop["type"], &stop["invoke_id"]),
        (&json!("stop"), &json!(pending)),
        "{stop}"
    );
    let close = loop {
        match ws.read() {
            Some((0x8, payload)) => break payload,
            Some((0x1, p)) => panic!("after the Stop: {}", String::from_utf8_lossy(&p)),
            Some(_) => continue,
            None => panic!("the connection ended without a Close frame"),
        }
    };
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);
    assert!(String::from_utf8_lossy(&close[2..]).contains("deregistered"));
    let (status, _) = ws_open(&server, &raw_id, &raw_token);
    assert_eq!(status, 401);
    let r = result_of(&c, &pending, &raw_id);
    assert_eq!(
        (&r["InvocationStatus"], &r["ErrorCode"]),
        (&json!("Aborted"), &json!("InstanceReleased")),
        "{r}"
    );
    assert_eq!(listed_instances(&c), vec![ib.clone()]);

    // The activation counts both; its uses are not given back.
    let a_ = activation(&c, act_id);
    assert_eq!(
        (&a_["RegisteredCount"], &a_["DeregisteredCount"]),
        (&json!(3), &json!(2)),
        "{a_}"
    );
    let refused = register(&server, act_id, code, "one-more");
    assert_eq!(refused.status, 403, "{}", refused.body);

    // The run that a's agent was told to stop never finished on the host (its agent
    // still runs, refused).
    std::thread::sleep(Duration::from_secs(6).saturating_sub(deregistered_at.elapsed()));
    assert!(!marker.exists(), "the stopped run went on");
    assert!(
        a.wait_exit(Duration::ZERO).is_none(),
        "the agent still runs"
    );
    // Restarted, it is still refused: never listed again.
    a.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!listed_instances(&c).contains(&ia));
}

#[test]
fn activations_are_listed_disabled_and_deleted() {
    let server = Server::start();
    let c = server.client();
    let web = c.ok(
        "CreateActivation",
        &[
            ("InstanceName", "web"),
            ("Description", "web servers"),
            ("InstanceCount", "2"),
            ("TimeToLiveInHours", "8"),
            ("IpAddressRange", "127.0.0.0/8"), // the agents here register from 127.0.0.1
            ("ResourceGroupId", "rg-fleet"),
            ("Tag.1.Key", "env"),
            ("Tag.1.Value", "prod"),
        ],
    );
    let (web_id, web_code) = (
        web["ActivationId"].as_str().unwrap().to_string(),
        web["ActivationCode"].as_str().unwrap().to_string(),
    );
    let spare = c.ok("CreateActivation", &[]);
    let spare_id = spare["ActivationId"].as_str().unwrap().to_string();

    // Listed newest first, with every field of the model.
    let all = c.ok("DescribeActivations", &[]);
    assert_eq!(
        (&all["TotalCount"], &all["PageNumber"], &all["PageSize"]),
        (&json!(2), &json!(1), &json!(10)),
        "{all}"
    );
    let ids: Vec<&str> = all["ActivationList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ActivationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![spare_id.as_str(), web_id.as_str()]);
    let a = activation(&c, &web_id);
    assert_eq!(a["InstanceName"], "web");
    assert_eq!(a["Description"], "web servers");
    assert_eq!(a["InstanceCount"], 2);
    assert_eq!(a["RegisteredCount"], 0);
    assert_eq!(a["DeregisteredCount"], 0);
    assert_eq!(a["IpAddressRange"], "127.0.0.0/8");
    assert_eq!(a["TimeToLiveInHours"], 8);
    assert_eq!(a["Disabled"], false);
    assert_eq!(a["ResourceGroupId"], "rg-fleet");
    assert_eq!(a["Tags"], json!([{"TagKey": "env", "TagValue": "prod"}]));
    let created = a["CreationTime"].as_str().unwrap();
    assert!(created.len() == 20 && created.ends_with('Z'), "{created}");
    let s = activation(&c, &spare_id);
    assert_eq!(
        (&s["InstanceCount"], &s["TimeToLiveInHours"], &s["Tags"]),
        (&json!(10), &json!(4), &json!([]))
    );

    // Filters and paging.
    let total = |params: &[(&str, &str)]| c.ok("DescribeActivations", params)["TotalCount"].clone();
    assert_eq!(total(&[("InstanceName", "web")]), 1);
    assert_eq!(total(&[("InstanceName", "we")]), 0);
    assert_eq!(total(&[("ResourceGroupId", "rg-fleet")]), 1);
    assert_eq!(total(&[("Tag.1.Key", "env")]), 1);
    assert_eq!(total(&[("Tag.1.Key", "env"), ("Tag.1.Value", "dev")]), 0);
    let page2 = c.ok(
        "DescribeActivations",
        &[("PageSize", "1"), ("PageNumber", "2")],
    );
    assert_eq!(page2["ActivationList"][0]["ActivationId"], web_id.as_str());
    let first = c.ok("DescribeActivations", &[("MaxResults", "1")]);
    let token = first["NextToken"].as_str().unwrap();
    assert!(!token.is_empty());
    let next = c.ok(
        "DescribeActivations",
        &[("MaxResults", "1"), ("NextToken", token)],
    );
    assert_eq!(next["ActivationList"][0]["ActivationId"], web_id.as_str());
    assert_eq!(next["NextToken"], "");
    c.err(
        "DescribeActivations",
        &[("PageSize", "51")],
        "InvalidParam.PageSize",
        400,
    );
    c.err(
        "DescribeActivations",
        &[("NextToken", "not a token")],
        "InvalidParameter.NextToken",
        400,
    );
    c.err(
        "DescribeActivations",
        &[("ResourceGroupId", "no such/group")],
        "InvalidResourceGroup.NotFound",
        404,
    );

    // Tags on activations.
    c.ok(
        "TagResources",
        &[
            ("ResourceType", "activation"),
            ("ResourceId.1", &spare_id),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "ops"),
        ],
    );
    let listed = c.ok(
        "ListTagResources",
        &[("ResourceType", "activation"), ("ResourceId.1", &spare_id)],
    );
    let t = &listed["TagResources"]["TagResource"][0];
    assert_eq!(
        (&t["ResourceType"], &t["TagKey"], &t["TagValue"]),
        (&json!("activation"), &json!("team"), &json!("ops"))
    );
    assert_eq!(total(&[("Tag.1.Key", "team")]), 1);

    // An agent registers with it: named after it, in its group.
    let agent = server.agent_registered_with(&c, "web-host", &web_id, &web_code);
    let id = agent.instance_id.clone();
    let i = &c.ok("DescribeManagedInstances", &[("InstanceId.1", &id)])["Instances"][0];
    assert_eq!(
        (
            &i["InstanceName"],
            &i["ActivationId"],
            &i["ResourceGroupId"]
        ),
        (&json!("web"), &json!(web_id), &json!("rg-fleet"))
    );
    assert_eq!(activation(&c, &web_id)["RegisteredCount"], 1);

    // Not deleted while the instance is registered.
    c.err(
        "DeleteActivation",
        &[("ActivationId", &web_id)],
        "ActivationId.InUse",
        403,
    );

    // Disabled: answered with the activation; no new registration, the instance stays.
    let disabled = c.ok("DisableActivation", &[("ActivationId", &web_id)]);
    let d = &disabled["Activation"];
    assert_eq!(
        (&d["ActivationId"], &d["Disabled"], &d["RegisteredCount"]),
        (&json!(web_id), &json!(true), &json!(1)),
        "{disabled}"
    );
    c.ok("DisableActivation", &[("ActivationId", &web_id)]);
    assert_eq!(activation(&c, &web_id)["Disabled"], true);
    let refused = register(&server, &web_id, &web_code, "late-host");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["code"], "ActivationUnavailable");
    let mut late = server.spawn_agent_with("late-host", &web_id, &web_code);
    let exit = late.wait_exit(WAIT).expect("the refused agent exits");
    assert!(!exit.success());
    let run = c.run("echo still-here", &[&id], &[]);
    assert_eq!(b64(&c.wait(&run, WAIT)[0]["Output"]), "still-here\n");

    // Renamed: listed under the new name, and its tasks see it.
    c.err(
        "ModifyManagedInstance",
        &[
            ("InstanceId", &id),
            ("InstanceName", "1-starts-with-a-digit"),
        ],
        "InstanceName.InvalidPattern",
        400,
    );
    c.err(
        "ModifyManagedInstance",
        &[("InstanceId", &id), ("InstanceName", &"n".repeat(129))],
        "InstanceName.ExceedLimit",
        400,
    );
    c.err(
        "ModifyManagedInstance",
        &[("InstanceId", &id)],
        "MissingParameter",
        400,
    );
    let renamed = c.ok(
        "ModifyManagedInstance",
        &[("InstanceId", &id), ("InstanceName", "web-primary")],
    );
    assert_eq!(
        renamed["Instance"],
        json!({"InstanceId": id, "InstanceName": "web-primary"})
    );
    let by_name = c.ok(
        "DescribeManagedInstances",
        &[("InstanceName", "web-primary")],
    );
    assert_eq!(
        by_name["Instances"][0]["InstanceId"],
        id.as_str(),
        "{by_name}"
    );
    assert_eq!(
        c.ok("DescribeManagedInstances", &[("InstanceName", "web")])["TotalCount"],
        0
    );
    let named = c.run(
        "echo {{ACS::InstanceName}}",
        &[&id],
        &[("EnableParameter", "true")],
    );
    assert_eq!(b64(&c.wait(&named, WAIT)[0]["Output"]), "web-primary\n");

    // Deregistered, then the activation goes: answered as it was, then not found.
    c.ok("DeregisterManagedInstance", &[("InstanceId", &id)]);
    let deleted = c.ok("DeleteActivation", &[("ActivationId", &web_id)]);
    let d = &deleted["Activation"];
    assert_eq!(
        (
            &d["ActivationId"],
            &d["RegisteredCount"],
            &d["DeregisteredCount"],
            &d["InstanceName"]
        ),
        (&json!(web_id), &json!(1), &json!(1), &json!("web")),
        "{deleted}"
    );
    assert_eq!(total(&[("ActivationId", &web_id)]), 0);
    for action in ["DisableActivation", "DeleteActivation"] {
        c.err(
            action,
            &[("ActivationId", &web_id)],
            "ActivationId.NotFound",
            404,
        );
    }
    c.err("DeleteActivation", &[], "MissingParameter", 400);
    let gone = register(&server, &web_id, &web_code, "after-delete");
    assert_eq!(gone.status, 403, "{}", gone.body);
    // One never used is deleted at once; nothing is left.
    c.ok("DeleteActivation", &[("ActivationId", &spare_id)]);
    assert_eq!(total(&[]), 0);
    c.err(
        "TagResources",
        &[
            ("ResourceType", "activation"),
            ("ResourceId.1", &spare_id),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "ops"),
        ],
        "InvalidResourceId.NotFound",
        404,
    );
}

#[test]
fn the_fleet_answers_in_xml_too() {
    let server = Server::start();
    let c = server.client();
    let act = c.ok(
        "CreateActivation",
        &[("Tag.1.Key", "k"), ("Tag.1.Value", "v")],
    );
    let id = act["ActivationId"].as_str().unwrap();
    let xml = c.call("DescribeActivations", &[("Format", "XML")]);
    assert_eq!(xml.status, 200, "{}", xml.body);
    assert!(
        xml.body.contains("<DescribeActivationsResponse>"),
        "{}",
        xml.body
    );
    assert!(xml
        .body
        .contains(&format!("<ActivationId>{id}</ActivationId>")));
    assert!(xml.body.contains("<TagKey>k</TagKey>"), "{}", xml.body);
    let xml = c.call(
        "DisableActivation",
        &[("ActivationId", id), ("Format", "XML")],
    );
    assert!(
        xml.body.contains("<Disabled>true</Disabled>"),
        "{}",
        xml.body
    );
}

#[test]
fn the_cli_deregisters_an_instance() {
    let server = Server::start();
    let agent = server.agent("cli-host");
    let c = server.client();
    let dir = scratch_dir();
    let creds = dir.join("credentials.json");
    let json = json!({
        "endpoint": server.url(),
        "region_id": REGION,
        "access_key_id": c.key_id,
        "access_key_secret": c.secret,
    });
    std::fs::write(&creds, json.to_string()).unwrap();
    let oca = |args: &[&str]| {
        std::process::Command::new(oca_bin())
            .args(args)
            .arg("--config")
            .arg(&creds)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let listed = oca(&["instances"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&agent.instance_id));
    let out = oca(&["deregister", &agent.instance_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("deregistered"));
    assert!(listed_instances(&c).is_empty());
    let again = oca(&["deregister", &agent.instance_id]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("InvalidInstance.NotFound"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// An agent deregistered while it was away learns it when it reconnects (its
/// credentials are refused) and drops its schedules: a removed host runs nothing more.
#[test]
fn an_agent_deregistered_while_away_drops_its_schedules() {
    let server = Server::start_with(&["--min-cron-interval-secs", "1"]);
    let mut agent = server.agent("away");
    let c = server.client();
    let dir = scratch_dir();
    let log = dir.join("runs");
    let count = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    c.run(
        &format!("echo run >> {}", log.display()),
        &[&agent.instance_id],
        &[
            ("RepeatMode", "Period"),
            ("Frequency", "*/1 * * * * ?"),
            ("Timeout", "10"),
        ],
    );
    wait_for(Duration::from_secs(20), || (count() >= 2).then_some(())).expect("runs");
    agent.kill9();
    c.ok(
        "DeregisterManagedInstance",
        &[("InstanceId", &agent.instance_id)],
    );
    agent.restart();
    // The first connect is refused; give it a moment, then nothing more may run.
    std::thread::sleep(Duration::from_secs(3));
    let settled = count();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(),
        settled,
        "a deregistered host kept running its schedule"
    );
    let files = std::fs::read_dir(agent.state.path().join("schedule"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 0, "schedules left on disk");
}

/// An activation's IpAddressRange is enforced on the registering host's address.
#[test]
fn an_activation_only_registers_hosts_in_its_address_range() {
    let server = Server::start();
    let c = server.client();
    let create = |range: &str| {
        let a = c.ok(
            "CreateActivation",
            &[("InstanceCount", "2"), ("IpAddressRange", range)],
        );
        (
            a["ActivationId"].as_str().unwrap().to_string(),
            a["ActivationCode"].as_str().unwrap().to_string(),
        )
    };
    // This test's host registers from 127.0.0.1.
    for (range, allowed) in [
        ("10.0.0.0/8", false),
        ("127.0.0.2", false),
        ("127.0.0.0/8", true),
        ("127.0.0.1", true),
        ("0.0.0.0/0", true),
    ] {
        let (id, code) = create(range);
        let a = register(&server, &id, &code, "ranged");
        if allowed {
            assert_eq!(a.status, 200, "{range}: {}", a.body);
        } else {
            assert_eq!(a.status, 403, "{range}: {}", a.body);
            assert_eq!(a.json()["code"], "InvalidIpAddress", "{range}: {}", a.body);
            // Nothing was used up.
            assert_eq!(activation(&c, &id)["RegisteredCount"], 0);
        }
    }
    // A wrong code is refused as such, whatever the range says.
    let (id, _) = create("10.0.0.0/8");
    let a = register(&server, &id, "not-the-code", "ranged");
    assert_eq!(
        (a.status, a.json()["code"].as_str()),
        (403, Some("InvalidActivation"))
    );
    for bad in ["10.0.0.0/33", "ten", "10.0.0.0/8,11.0.0.0/8"] {
        c.err(
            "CreateActivation",
            &[("IpAddressRange", bad)],
            "InvalidParameter",
            400,
        );
    }
}
