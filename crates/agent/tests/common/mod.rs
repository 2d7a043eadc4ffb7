//! The server's part, played in the tests: a small server on 127.0.0.1 that registers
//! agents and hands their WebSockets to the test.
#![allow(dead_code)] // each test file uses its own part

use futures_util::{SinkExt, StreamExt};
use oca_agent::{Config, Identity};
use oca_domain::command::{decode_base64, CommandType};
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

pub const INSTANCE: &str = "mi-test";
pub const TOKEN: &str = "secret-token";
pub const WAIT: Duration = Duration::from_secs(10);

/// The server's part: registers with `act-1`/`code-1`, accepts WebSockets that bear the
/// right token and hands them to the test.
pub struct FakeServer {
    pub url: String,
    /// While set, WebSocket handshakes are refused (503).
    pub refuse: Arc<AtomicBool>,
    pub conns: mpsc::UnboundedReceiver<Conn>,
    pub registrations: mpsc::UnboundedReceiver<RegisterRequest>,
}

pub struct Conn {
    pub ws: WebSocketStream<TcpStream>,
}

impl FakeServer {
    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    pub async fn start() -> FakeServer {
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

    pub async fn next_conn(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the agent connects")
            .unwrap()
    }

    /// The next connection, after its Hello; answers Welcome.
    pub async fn welcome(&mut self, heartbeat_secs: u64) -> (Conn, Vec<KnownTask>) {
        let (c, known, _) = self.welcome_hello(heartbeat_secs).await;
        (c, known)
    }

    /// [`Self::welcome`], with the task isolation the Hello reported.
    pub async fn welcome_hello(&mut self, heartbeat_secs: u64) -> (Conn, Vec<KnownTask>, String) {
        let mut c = self.next_conn().await;
        let (known, task_isolation) = match c.recv().await {
            AgentMsg::Hello {
                protocol,
                known,
                os_type,
                hostname,
                task_isolation,
                ..
            } => {
                assert_eq!(protocol, oca_proto::PROTOCOL_VERSION);
                assert_eq!(os_type, "linux");
                assert_eq!(hostname, "testhost");
                (known, task_isolation)
            }
            other => panic!("expected Hello, got {other:?}"),
        };
        c.send(ServerMsg::Welcome {
            instance_id: INSTANCE.into(),
            heartbeat_secs,
            server_time: 0,
        })
        .await;
        (c, known, task_isolation)
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
    pub async fn send(&mut self, msg: ServerMsg) {
        self.ws
            .send(Message::Text(msg.to_json().into()))
            .await
            .unwrap();
    }

    /// The next protocol message (heartbeats included), or `None` if none came within
    /// `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Option<AgentMsg> {
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

    pub async fn recv(&mut self) -> AgentMsg {
        self.try_recv(WAIT).await.expect("a message from the agent")
    }

    /// Messages up to and including the `Finished` of `invoke_id`, heartbeats aside.
    pub async fn until_finished(&mut self, invoke_id: &str) -> (Vec<AgentMsg>, TaskResult) {
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

pub fn task(invoke_id: &str, script: &str) -> Task {
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
        repeat: None,
        revision: 0,
    }
}

pub fn start_agent(url: &str, state: &Path, activation: bool) -> JoinHandle<anyhow::Result<()>> {
    start_agent_on_boot(url, state, activation, None)
}

/// An agent that reads its boot id from `boot_id_file`.
pub fn start_agent_on_boot(
    url: &str,
    state: &Path,
    activation: bool,
    boot_id_file: Option<&Path>,
) -> JoinHandle<anyhow::Result<()>> {
    let cfg = Config {
        boot_id_file: boot_id_file.map(Path::to_path_buf),
        ..agent_config(url, state, activation)
    };
    tokio::spawn(oca_agent::run(cfg))
}

/// How the tests' agents run (task isolation `auto`).
pub fn agent_config(url: &str, state: &Path, activation: bool) -> Config {
    Config {
        server: url.to_string(),
        trust: None,
        state_dir: state.to_path_buf(),
        activation_id: activation.then(|| "act-1".to_string()),
        activation_code: activation.then(|| "code-1".to_string()),
        hostname: Some("testhost".into()),
        boot_id_file: None,
        task_isolation: Default::default(),
    }
}

pub fn registered(state: &Path) {
    Identity {
        instance_id: INSTANCE.into(),
        token: TOKEN.into(),
    }
    .save(state)
    .unwrap();
}

/// Output chunks for `invoke_id`, by offset.
pub fn chunks(msgs: &[AgentMsg], invoke_id: &str) -> BTreeMap<u64, Vec<u8>> {
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
pub fn joined(chunks: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
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

pub fn spool_dir(state: &Path, invoke_id: &str) -> std::path::PathBuf {
    state.join("tasks").join(invoke_id)
}

pub async fn gone_within(path: &Path, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
