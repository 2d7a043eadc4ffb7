#![allow(dead_code)]
//! Raw agent-protocol clients for the hostile cases: registration as bare HTTP and the
//! agent WebSocket with a blocking tungstenite client, over 127.0.0.1 only, so a case
//! can send what no real agent would.

use crate::common::{Client, Server};
use crate::figures;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

pub type Ws = tungstenite::WebSocket<TcpStream>;

fn host(server: &Server) -> String {
    format!("127.0.0.1:{}", server.port)
}

/// An activation of `c`'s account for `count` instances: its id and code.
pub fn activation(c: &Client, count: u32, extra: &[(&str, &str)]) -> (String, String) {
    let n = count.to_string();
    let mut params = vec![("InstanceCount", n.as_str())];
    params.extend_from_slice(extra);
    let a = c.ok("CreateActivation", &params);
    (
        a["ActivationId"].as_str().unwrap().to_string(),
        a["ActivationCode"].as_str().unwrap().to_string(),
    )
}

/// `POST path` with `body`; the HTTP status (0 when no answer came) and the body.
pub fn post(server: &Server, path: &str, body: &[u8]) -> (u16, String) {
    let answer = post_untallied(server, path, body);
    figures::count_answer(answer.0);
    answer
}

fn post_untallied(server: &Server, path: &str, body: &[u8]) -> (u16, String) {
    let host = host(server);
    let Ok(mut stream) = TcpStream::connect(&host) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The server may answer (and close) before reading a body it refuses: a failed
    // write is not the end, its answer may be waiting.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A registration request as the agent sends it.
pub fn registration(activation_id: &str, code: &str, hostname: &str) -> Vec<u8> {
    json!({
        "activation_id": activation_id,
        "activation_code": code,
        "hostname": hostname,
        "os_type": "linux",
        "agent_version": "hostile",
        "machine_id": "",
    })
    .to_string()
    .into_bytes()
}

/// `POST /agent/v1/register`; the status and the JSON answer (`Null` if not JSON).
pub fn register(server: &Server, activation_id: &str, code: &str, hostname: &str) -> (u16, Value) {
    let (status, body) = post(
        server,
        "/agent/v1/register",
        &registration(activation_id, code, hostname),
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Registers and returns the instance id and token.
pub fn registered(
    server: &Server,
    activation_id: &str,
    code: &str,
    hostname: &str,
) -> (String, String) {
    let (status, body) = register(server, activation_id, code, hostname);
    assert_eq!(status, 200, "registration: {body}");
    (
        body["instance_id"].as_str().unwrap().to_string(),
        body["token"].as_str().unwrap().to_string(),
    )
}

/// Opens the agent WebSocket with these credentials; the refusal's status and body
/// otherwise.
pub fn connect(server: &Server, instance_id: &str, token: &str) -> Result<Ws, (u16, String)> {
    let stream = TcpStream::connect(host(server)).map_err(|e| (0, e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("ws://{}/agent/v1/connect", host(server))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {instance_id}:{token}").parse().unwrap(),
    );
    match tungstenite::client::client(request, stream) {
        Ok((ws, _)) => {
            figures::count_answer(101);
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            figures::count_answer(status);
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(e) => {
            figures::count_answer(0);
            Err((0, e.to_string()))
        }
    }
}

/// A `Hello` as an agent that knows nothing sends it.
pub fn hello(hostname: &str) -> String {
    json!({
        "type": "hello",
        "protocol": 1,
        "agent_version": "hostile",
        "hostname": hostname,
        "os_type": "linux",
        "known": [],
    })
    .to_string()
}

/// Reads until the server's `Welcome`.
pub fn expect_welcome(ws: &mut Ws) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) if t.contains(r#""type":"welcome""#) => return,
            Ok(_) => {}
            Err(e) => panic!("no Welcome: {e}"),
        }
    }
    panic!("no Welcome within 10 s");
}

/// Connects, says hello as `hostname`, waits for the `Welcome`.
pub fn welcomed(server: &Server, instance_id: &str, token: &str, hostname: &str) -> Ws {
    let mut ws = connect(server, instance_id, token)
        .unwrap_or_else(|(status, body)| panic!("connect: {status} {body}"));
    ws.send(Message::text(hello(hostname))).unwrap();
    expect_welcome(&mut ws);
    ws
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A Close frame with this code.
    Closed(u16),
    /// The socket ended without one (reset or end of stream).
    Dropped(String),
    /// Still open after the wait.
    Open,
}

/// Reads (and drops) whatever comes until the connection ends, for at most `limit`.
pub fn wait_end(ws: &mut Ws, limit: Duration) -> Ended {
    let deadline = Instant::now() + limit;
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                return Ended::Closed(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Ended::Dropped(e.to_string()),
        }
    }
    Ended::Open
}
