//! The agent against a small in-test server on 127.0.0.1 playing the server's part.

use futures_util::{SinkExt, StreamExt};
use oca_agent::{Config, Identity};
use oca_domain::command::{decode_base64, CommandType};
use oca_domain::status::InvocationStatus as S;
use oca_domain::task_error::TaskError;
use oca_proto::{
    AgentMsg, KnownTask, RegisterRequest, RegisterResponse, ServerMsg, Task, TaskResult,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const INSTANCE: &str = "mi-test";
const TOKEN: &str = "secret-token";
const WAIT: Duration = Duration::from_secs(10);

/// The server's part: registers with `act-1`/`code-1`, accepts WebSockets that bear the
/// right token and hands them to the test.
struct FakeServer {
    url: String,
    /// While set, WebSocket handshakes are refused (503).
    refuse: Arc<AtomicBool>,
    conns: mpsc::UnboundedReceiver<Conn>,
    registrations: mpsc::UnboundedReceiver<RegisterRequest>,
}

struct Conn {
    ws: WebSocketStream<TcpStream>,
}

impl FakeServer {
    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, conns) = mpsc::unbounded_channel();
        let (reg_tx, registrations) = mpsc::unbounded_channel();
        let refuse = Arc::new(AtomicBool::new(false));
        let refusing = refuse.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let refusing = refusing.load(Ordering::SeqCst);
                let tx = tx.clone();
                let reg_tx = reg_tx.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 5];
                    let n = stream.peek(&mut head).await.unwrap_or(0);
                    if &head[..n] == b"POST " {
                        register(stream, reg_tx).await;
                        return;
                    }
                    let check =
                        move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                            if refusing {
                                let mut r = ErrorResponse::new(Some("busy".into()));
                                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                                return Err(r);
                            }
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok());
                            if req.uri().path() == "/agent/v1/connect"
                                && auth == Some(&format!("Bearer {INSTANCE}:{TOKEN}"))
                            {
                                Ok(resp)
                            } else {
                                let mut r =
                                    ErrorResponse::new(Some("invalid agent credentials".into()));
                                *r.status_mut() = StatusCode::UNAUTHORIZED;
                                Err(r)
                            }
                        };
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
                        let _ = tx.send(Conn { ws });
                    }
                });
            }
        });
        FakeServer {
            url,
            refuse,
            conns,
            registrations,
        }
    }

    async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the agent connects")
            .unwrap()
    }

    /// The next connection, after its Hello; answers Welcome.
    async fn welcome(&mut self, heartbeat_secs: u64) -> (Conn, Vec<KnownTask>) {
        let mut c = self.next_conn().await;
        let known = match c.recv().await {
            AgentMsg::Hello {
                protocol,
                known,
                os_type,
                hostname,
                ..
            } => {
                assert_eq!(protocol, oca_proto::PROTOCOL_VERSION);
                assert_eq!(os_type, "linux");
                assert_eq!(hostname, "testhost");
                known
            }
            other => panic!("expected Hello, got {other:?}"),
        };
        c.send(ServerMsg::Welcome {
            instance_id: INSTANCE.into(),
            heartbeat_secs,
            server_time: 0,
        })
        .await;
        (c, known)
    }
}

/// A minimal HTTP answer to `POST /agent/v1/register`.
async fn register(mut stream: TcpStream, seen: mpsc::UnboundedSender<RegisterRequest>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let body_start = loop {
        let n = stream.read(&mut tmp).await.unwrap();
        assert!(n > 0, "request cut short");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_start]).to_lowercase();
    assert!(head.starts_with("post /agent/v1/register "), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < body_start + len {
        let n = stream.read(&mut tmp).await.unwrap();
        buf.extend_from_slice(&tmp[..n]);
    }
    let req: RegisterRequest = serde_json::from_slice(&buf[body_start..body_start + len]).unwrap();
    let ok = req.activation_id == "act-1" && req.activation_code == "code-1";
    let _ = seen.send(req);
    let (status, body) = if ok {
        (
            "200 OK",
            serde_json::to_string(&RegisterResponse {
                instance_id: INSTANCE.into(),
                token: TOKEN.into(),
            })
            .unwrap(),
        )
    } else {
        (
            "403 Forbidden",
            r#"{"code":"InvalidActivation","message":"wrong code"}"#.to_string(),
        )
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await.unwrap();
    let _ = stream.shutdown().await;
}

impl Conn {
    async fn send(&mut self, msg: ServerMsg) {
        self.ws
            .send(Message::Text(msg.to_json().into()))
            .await
            .unwrap();
    }

    /// The next protocol message (heartbeats included), or `None` if none came within
    /// `limit`.
    async fn try_recv(&mut self, limit: Duration) -> Option<AgentMsg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn recv(&mut self) -> AgentMsg {
        self.try_recv(WAIT).await.expect("a message from the agent")
    }

    /// Messages up to and including the `Finished` of `invoke_id`, heartbeats aside.
    async fn until_finished(&mut self, invoke_id: &str) -> (Vec<AgentMsg>, TaskResult) {
        let mut seen = Vec::new();
        loop {
            match self.recv().await {
                AgentMsg::Finished(r) if r.invoke_id == invoke_id => return (seen, r),
                AgentMsg::Heartbeat { .. } => {}
                m => seen.push(m),
            }
        }
    }
}

fn task(invoke_id: &str, script: &str) -> Task {
    Task {
        invoke_id: invoke_id.into(),
        command_id: "c-1".into(),
        command_type: CommandType::RunShellScript,
        script: script.into(),
        working_dir: String::new(),
        username: String::new(),
        timeout_secs: 60,
        output_cap: 16 << 20,
        termination_mode: Default::default(),
        file: None,
    }
}

fn start_agent(url: &str, state: &Path, activation: bool) -> JoinHandle<anyhow::Result<()>> {
    let cfg = Config {
        server: url.to_string(),
        state_dir: state.to_path_buf(),
        activation_id: activation.then(|| "act-1".to_string()),
        activation_code: activation.then(|| "code-1".to_string()),
        hostname: Some("testhost".into()),
    };
    tokio::spawn(oca_agent::run(cfg))
}

fn registered(state: &Path) {
    Identity {
        instance_id: INSTANCE.into(),
        token: TOKEN.into(),
    }
    .save(state)
    .unwrap();
}

/// Output chunks for `invoke_id`, by offset.
fn chunks(msgs: &[AgentMsg], invoke_id: &str) -> BTreeMap<u64, Vec<u8>> {
    msgs.iter()
        .filter_map(|m| match m {
            AgentMsg::Output {
                invoke_id: id,
                offset,
                data,
            } if id == invoke_id => Some((*offset, decode_base64(data).unwrap())),
            _ => None,
        })
        .collect()
}

/// Chunks laid end to end; panics on a gap.
fn joined(chunks: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (off, data) in chunks {
        assert!(*off as usize <= out.len(), "gap before offset {off}");
        let skip = out.len() - *off as usize;
        if skip < data.len() {
            out.extend_from_slice(&data[skip..]);
        }
    }
    out
}

fn spool_dir(state: &Path, invoke_id: &str) -> std::path::PathBuf {
    state.join("tasks").join(invoke_id)
}

async fn gone_within(path: &Path, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn registers_runs_streams_and_forgets_on_ack() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let agent = start_agent(&server.url, state.path(), true);

    let reg = tokio::time::timeout(WAIT, server.registrations.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reg.hostname, "testhost");
    assert_eq!(reg.os_type, "linux");
    let (mut c, known) = server.welcome(30).await;
    assert!(known.is_empty());
    let id_path = Identity::path(state.path());
    assert_eq!(
        Identity::load(state.path()).unwrap().unwrap(),
        Identity {
            instance_id: INSTANCE.into(),
            token: TOKEN.into()
        }
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&id_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    c.send(ServerMsg::Run(task("t-1", "echo hi; echo there >&2")))
        .await;
    let started = c.recv().await;
    let AgentMsg::Started {
        invoke_id,
        start_time,
    } = started
    else {
        panic!("expected Started, got {started:?}");
    };
    assert_eq!(invoke_id, "t-1");
    let (msgs, r) = c.until_finished("t-1").await;
    assert_eq!(joined(&chunks(&msgs, "t-1")), b"hi\nthere\n");
    assert_eq!(r.status, S::Success);
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.start_time, Some(start_time));
    assert_eq!(r.output_len, 9);
    assert_eq!(decode_base64(&r.output).unwrap(), b"hi\nthere\n");

    // Spooled until acknowledged.
    let dir = spool_dir(state.path(), "t-1");
    assert!(dir.join("result.json").exists());
    assert!(dir.join("task.json").exists());
    c.send(ServerMsg::Ack {
        invoke_id: "t-1".into(),
    })
    .await;
    assert!(
        gone_within(&dir, Duration::from_secs(3)).await,
        "the spool is removed on Ack"
    );
    agent.abort();

    // A second start reuses the identity (a wrong activation code would be refused).
    let again = start_agent(&server.url, state.path(), false);
    let (_c, known) = server.welcome(30).await;
    assert!(known.is_empty());
    assert!(
        server.registrations.try_recv().is_err(),
        "no second registration"
    );
    again.abort();
}

#[tokio::test]
async fn a_refused_registration_stops_the_agent() {
    let server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = Config {
        server: server.url.clone(),
        state_dir: state.path().to_path_buf(),
        activation_id: Some("act-1".into()),
        activation_code: Some("wrong".into()),
        hostname: Some("testhost".into()),
    };
    let err = tokio::time::timeout(WAIT, oca_agent::run(cfg))
        .await
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("InvalidActivation"), "{err:#}");
    assert!(!Identity::path(state.path()).exists());
}

#[tokio::test]
async fn output_is_batched_not_sent_per_line() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;

    c.send(ServerMsg::Run(task(
        "t-lines",
        "for i in $(seq 1 300); do echo line $i; done",
    )))
    .await;
    let (msgs, r) = c.until_finished("t-lines").await;
    let outs = chunks(&msgs, "t-lines");
    let expected: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(joined(&outs), expected.as_bytes());
    assert!(
        outs.len() <= 3,
        "{} Output messages for 300 quick lines",
        outs.len()
    );
    assert_eq!(r.output_len as usize, expected.len());

    // Much output: chunks of at most 64 KiB, end to end.
    c.send(ServerMsg::Run(task(
        "t-big",
        "head -c 300000 /dev/zero | tr '\\0' y",
    )))
    .await;
    let (msgs, r) = c.until_finished("t-big").await;
    let outs = chunks(&msgs, "t-big");
    assert!(outs.values().all(|d| d.len() <= 64 * 1024));
    assert_eq!(joined(&outs), vec![b'y'; 300_000]);
    assert_eq!(r.output_len, 300_000);
    assert_eq!(decode_base64(&r.output).unwrap().len(), 24 * 1024);
    assert_eq!(r.dropped, 300_000 - 24 * 1024);
    agent.abort();
}

#[tokio::test]
async fn a_dropped_connection_mid_run_reconnects_and_delivers() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;

    c.send(ServerMsg::Run(task(
        "t-drop",
        "echo one; sleep 2; echo two",
    )))
    .await;
    let mut first = Vec::new();
    loop {
        let m = c.recv().await;
        let done = matches!(&m, AgentMsg::Output { .. });
        first.push(m);
        if done {
            break;
        }
    }
    assert!(matches!(first[0], AgentMsg::Started { .. }));
    // The server goes away with the task running.
    drop(c);

    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-drop".into(),
            finished: false
        }]
    );
    let (msgs, r) = c.until_finished("t-drop").await;
    assert!(
        msgs.iter()
            .any(|m| matches!(m, AgentMsg::Started { invoke_id, .. } if invoke_id == "t-drop")),
        "a running task is announced again"
    );
    let mut all = chunks(&first, "t-drop");
    all.extend(chunks(&msgs, "t-drop"));
    assert_eq!(joined(&all), b"one\ntwo\n");
    assert_eq!(r.status, S::Success);
    assert_eq!(decode_base64(&r.output).unwrap(), b"one\ntwo\n");
    agent.abort();
}

#[tokio::test]
async fn a_finished_result_waits_for_the_next_connection() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-away", "echo a; sleep 1; echo b")))
        .await;
    assert!(matches!(c.recv().await, AgentMsg::Started { .. }));
    // The server is away until the run is over.
    server.refuse.store(true, Ordering::SeqCst);
    drop(c);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.refuse.store(false, Ordering::SeqCst);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-away".into(),
            finished: true
        }]
    );
    let (msgs, r) = c.until_finished("t-away").await;
    assert_eq!(r.status, S::Success);
    assert_eq!(joined(&chunks(&msgs, "t-away"))[..], b"a\nb\n"[..]);
    agent.abort();
}

#[tokio::test]
async fn resend_sends_the_output_again_then_the_result() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-re", "echo 0123456789")))
        .await;
    let (_, first) = c.until_finished("t-re").await;

    c.send(ServerMsg::Resend {
        invoke_id: "t-re".into(),
        offset: 4,
    })
    .await;
    let (msgs, again) = c.until_finished("t-re").await;
    assert_eq!(again, first);
    let outs = chunks(&msgs, "t-re");
    assert_eq!(outs.keys().copied().collect::<Vec<_>>(), vec![4]);
    assert_eq!(outs[&4], b"456789\n");
    agent.abort();
}

#[tokio::test]
async fn a_duplicate_run_is_ignored() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let t = task("t-dup", "echo once; sleep 0.3");
    c.send(ServerMsg::Run(t.clone())).await;
    c.send(ServerMsg::Run(t.clone())).await;
    let (msgs, r) = c.until_finished("t-dup").await;
    let starts = msgs
        .iter()
        .filter(|m| matches!(m, AgentMsg::Started { .. }))
        .count();
    assert_eq!(starts, 1);
    assert_eq!(joined(&chunks(&msgs, "t-dup")), b"once\n");
    assert_eq!(r.output_len, 5);
    // Finished but not acknowledged: still known, still ignored.
    c.send(ServerMsg::Run(t)).await;
    assert_eq!(c.try_recv(Duration::from_millis(700)).await, None);
    assert_eq!(
        std::fs::read(spool_dir(state.path(), "t-dup").join("output")).unwrap(),
        b"once\n"
    );
    agent.abort();
}

#[tokio::test]
async fn stop_and_heartbeats() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(1).await;
    c.send(ServerMsg::Run(task("t-stop", "echo going; sleep 1000")))
        .await;
    assert!(matches!(c.recv().await, AgentMsg::Started { .. }));
    // A heartbeat within about a second counts the running task.
    loop {
        match c.recv().await {
            AgentMsg::Heartbeat { active_tasks } => {
                assert_eq!(active_tasks, 1);
                break;
            }
            AgentMsg::Output { .. } => {}
            m => panic!("unexpected {m:?}"),
        }
    }
    c.send(ServerMsg::Stop {
        invoke_id: "t-stop".into(),
    })
    .await;
    let (_, r) = c.until_finished("t-stop").await;
    assert_eq!(r.status, S::Terminated);
    assert_eq!(r.error, None);
    assert_eq!(decode_base64(&r.output).unwrap(), b"going\n");
    c.send(ServerMsg::Ack {
        invoke_id: "t-stop".into(),
    })
    .await;
    loop {
        if let AgentMsg::Heartbeat { active_tasks } = c.recv().await {
            assert_eq!(active_tasks, 0);
            break;
        }
    }
    agent.abort();
}

#[tokio::test]
async fn a_restarted_agent_resends_its_unacknowledged_result() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-keep", "echo kept"))).await;
    let (_, r) = c.until_finished("t-keep").await;
    // The agent dies before the server acknowledged.
    agent.abort();
    let _ = agent.await;
    drop(c);

    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-keep".into(),
            finished: true
        }]
    );
    let (msgs, again) = c.until_finished("t-keep").await;
    assert_eq!(again, r);
    assert!(
        chunks(&msgs, "t-keep").is_empty(),
        "output goes again only on Resend"
    );
    c.send(ServerMsg::Ack {
        invoke_id: "t-keep".into(),
    })
    .await;
    assert!(gone_within(&spool_dir(state.path(), "t-keep"), Duration::from_secs(3)).await);
    agent.abort();
}

#[tokio::test]
async fn a_run_the_agent_did_not_see_end_is_interrupted() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-lost", "echo begun; sleep 1000")))
        .await;
    loop {
        if let AgentMsg::Output { .. } = c.recv().await {
            break;
        }
    }
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(spool_dir(state.path(), "t-lost").join("task.json")).unwrap(),
    )
    .unwrap();
    let marker = file["marker"].as_str().unwrap().to_string();
    assert!(!oca_agent::proc::task_processes(None, &marker).is_empty());
    // The agent dies mid-run (its script keeps running).
    agent.abort();
    let _ = agent.await;
    drop(c);

    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-lost".into(),
            finished: true
        }]
    );
    let (_, r) = c.until_finished("t-lost").await;
    assert_eq!(r.status, S::Error);
    assert_eq!(r.error, Some(TaskError::ExecutionInterrupted));
    assert_eq!(decode_base64(&r.output).unwrap(), b"begun\n");
    assert!(r.start_time.is_some());
    assert!(
        oca_agent::proc::task_processes(None, &marker).is_empty(),
        "the orphaned script is killed"
    );
    agent.abort();
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_retried() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    Identity {
        instance_id: INSTANCE.into(),
        token: "wrong".into(),
    }
    .save(state.path())
    .unwrap();
    let agent = start_agent(&server.url, state.path(), false);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), server.conns.recv())
            .await
            .is_err(),
        "no connection is accepted with a wrong token"
    );
    assert!(!agent.is_finished(), "the agent keeps trying");
    agent.abort();
}
