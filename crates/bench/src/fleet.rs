//! Simulated agents: many per process, each a tokio task holding a real WebSocket to
//! the server and speaking the real protocol (`oca_proto`).
//!
//! A simulated agent "runs" every task at once: `Started`, one `Output` chunk
//! (`hi\n`, as `echo hi` prints), `Finished` with exit code 0. It behaves as the
//! protocol asks: a `Run` for a task it knows is ignored, it keeps each result until the
//! server's `Ack` and sends it again after a reconnect (listing it in `Hello`), and it
//! answers `Resend` with the output from the offset asked and `Finished` again. It sends
//! a `Heartbeat` every `heartbeat_secs` of the `Welcome`.
//!
//! Every agent records in a shared [`Tracker`] when each `Run` and each `Ack` arrived,
//! which is what the bench measures.

use crate::api::ApiClient;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use oca_domain::status::InvocationStatus;
use oca_domain::time::now_millis;
use oca_proto::{AgentMsg, KnownTask, RegisterRequest, RegisterResponse, ServerMsg, TaskResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// What every simulated run prints.
pub const OUTPUT: &[u8] = b"hi\n";
/// The most connections one simulated agent opens (the first and its reconnects: a
/// server restart, and the attempts while it is down, take a few).
const MAX_SESSIONS: usize = 40;
/// The most a simulated agent waits before it reconnects to a server that said it
/// restarts (Close 1012), as the real agent does.
const RESTART_SPREAD: Duration = Duration::from_secs(3);
/// Handshakes in flight at once over the whole fleet (keeps the listen backlog sane).
const CONNECT_CONCURRENCY: usize = 128;
/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 32;
/// Limit for one connect + Hello/Welcome exchange.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most instances one activation may register.
const PER_ACTIVATION: usize = 1000;

/// When `Run` and `Ack` messages of each invocation arrived, over all agents.
#[derive(Default)]
pub struct Tracker {
    by_invoke: Mutex<HashMap<String, Track>>,
    changed: Notify,
    /// `Run`s for a task the agent already knew (ignored, as the protocol asks).
    pub duplicate_runs: AtomicU64,
    /// `Ack`s for a task the agent did not hold (ignored).
    pub stray_acks: AtomicU64,
    /// `Resend`s answered.
    pub resends: AtomicU64,
    /// Connections re-opened after a drop.
    pub reconnects: AtomicU64,
    /// Agents that gave up after [`MAX_SESSIONS`] connections.
    pub gave_up: AtomicU64,
    /// Agents that have had their first `Welcome`.
    online: AtomicUsize,
    /// Every `Welcome`, first connections and reconnections.
    pub welcomes: AtomicUsize,
    /// Connection attempts that failed (refused, reset, timed out).
    pub failed_connects: AtomicU64,
    /// Sessions the server ended with Close 1012 (it restarts).
    pub told_restarting: AtomicU64,
    /// The last error an agent met (for messages).
    last_error: Mutex<Option<String>>,
}

/// One invocation's arrivals, one entry per agent.
#[derive(Debug, Default, Clone)]
pub struct Track {
    pub runs: Vec<Instant>,
    pub acks: Vec<Instant>,
}

impl Tracker {
    fn record(&self, invoke_id: &str, ack: bool, at: Instant) {
        {
            let mut map = self.by_invoke.lock().unwrap_or_else(|p| p.into_inner());
            let t = map.entry(invoke_id.to_string()).or_default();
            if ack {
                t.acks.push(at);
            } else {
                t.runs.push(at);
            }
        }
        self.changed.notify_waiters();
    }

    fn error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn online(&self) -> usize {
        self.online.load(Ordering::Relaxed)
    }

    /// Counts (runs, acks) seen so far for an invocation.
    pub fn counts(&self, invoke_id: &str) -> (usize, usize) {
        let map = self.by_invoke.lock().unwrap_or_else(|p| p.into_inner());
        map.get(invoke_id)
            .map(|t| (t.runs.len(), t.acks.len()))
            .unwrap_or((0, 0))
    }

    /// A copy of an invocation's arrivals.
    pub fn track(&self, invoke_id: &str) -> Track {
        let map = self.by_invoke.lock().unwrap_or_else(|p| p.into_inner());
        map.get(invoke_id).cloned().unwrap_or_default()
    }

    /// Forgets an invocation (keeps the map small over many dispatches).
    pub fn forget(&self, invoke_id: &str) {
        let mut map = self.by_invoke.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(invoke_id);
    }

    /// Waits until `done` holds or `deadline` passes; answers whether it held.
    pub async fn wait_until(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&Tracker) -> bool,
    ) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Wake at least every 100 ms in case a change raced past us.
            let nap = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }
}

/// A registered simulated agent.
#[derive(Debug, Clone)]
struct Identity {
    instance_id: String,
    token: String,
    hostname: String,
}

/// A simulated run, kept until the server acknowledges its result.
struct SimTask {
    result: TaskResult,
}

/// Things every agent of a fleet shares.
struct Shared {
    tracker: Arc<Tracker>,
    connect_gate: Semaphore,
    ws_url: String,
    /// TLS for a `wss://` server.
    connector: Option<tokio_tungstenite::Connector>,
}

/// Many simulated agents connected to one server.
pub struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    pub instance_ids: Vec<String>,
}

impl Fleet {
    /// A fleet of `server`'s agents (over TLS when it speaks TLS).
    pub fn new(server: &crate::server::Server) -> Result<Fleet> {
        let (stop, _) = watch::channel(false);
        let tls = server.client_tls()?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        Ok(Fleet {
            shared: Arc::new(Shared {
                tracker: Arc::new(Tracker::default()),
                connect_gate: Semaphore::new(CONNECT_CONCURRENCY),
                ws_url: format!(
                    "{scheme}://127.0.0.1:{}{}",
                    server.port,
                    oca_proto::CONNECT_PATH
                ),
                connector: tls.map(tokio_tungstenite::Connector::Rustls),
            }),
            stop,
            handles: Vec::new(),
            instance_ids: Vec::new(),
        })
    }

    pub fn tracker(&self) -> &Arc<Tracker> {
        &self.shared.tracker
    }

    pub fn len(&self) -> usize {
        self.instance_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instance_ids.is_empty()
    }

    /// Registers and connects agents until the fleet has `target` of them, all past
    /// their `Welcome`, within `limit`.
    pub async fn grow_to(&mut self, api: &ApiClient, target: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let need = target.saturating_sub(self.len());
        if need == 0 {
            return Ok(());
        }
        // Activations: at most 1000 instances each.
        let mut creds: Vec<(String, String)> = Vec::new();
        let mut left = need;
        while left > 0 {
            let n = left.min(PER_ACTIVATION);
            creds.push(api.create_activation("bench-sim", n).await?);
            left -= n;
        }
        let register_url = format!("{}{}", api.base(), oca_proto::REGISTER_PATH);
        let first = self.len();
        let registrations = futures_util::stream::iter(0..need)
            .map(|i| {
                let (act_id, act_code) = creds[i / PER_ACTIVATION].clone();
                let http = api.http().clone();
                let url = register_url.clone();
                let hostname = format!("sim-{:05}", first + i);
                async move { register(&http, &url, act_id, act_code, hostname).await }
            })
            .buffer_unordered(REGISTER_CONCURRENCY);
        tokio::pin!(registrations);
        while let Some(identity) = registrations.next().await {
            let identity = identity?;
            if Instant::now() > deadline {
                bail!("registering {need} agents took longer than {limit:?}");
            }
            self.instance_ids.push(identity.instance_id.clone());
            let shared = self.shared.clone();
            let stop = self.stop.subscribe();
            self.handles
                .push(tokio::spawn(agent_main(identity, shared, stop)));
        }
        let tracker = self.tracker().clone();
        let total = self.len();
        let all_online = tracker
            .wait_until(deadline, |t| {
                t.online() >= total || t.gave_up.load(Ordering::Relaxed) > 0
            })
            .await;
        let gave_up = tracker.gave_up.load(Ordering::Relaxed);
        if !all_online || gave_up > 0 {
            bail!(
                "{} of {total} agents online after {limit:?} ({gave_up} gave up; last error: {})",
                tracker.online(),
                tracker.last_error().unwrap_or_else(|| "none".into())
            );
        }
        Ok(())
    }

    /// Tells every agent to close its socket and waits (bounded) for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        for h in self.handles.drain(..) {
            if tokio::time::timeout_at(deadline, h).await.is_err() {
                break;
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for h in &self.handles {
            h.abort();
        }
    }
}

async fn register(
    http: &reqwest::Client,
    url: &str,
    activation_id: String,
    activation_code: String,
    hostname: String,
) -> Result<Identity> {
    let req = RegisterRequest {
        activation_id,
        activation_code,
        hostname: hostname.clone(),
        os_type: "linux".into(),
        agent_version: concat!("oca-bench/", env!("CARGO_PKG_VERSION")).into(),
        machine_id: String::new(),
    };
    let resp = http
        .post(url)
        .json(&req)
        .send()
        .await
        .context("register: request failed")?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!("register answered HTTP {status}: {text}");
    }
    let r: RegisterResponse = resp.json().await.context("register: bad answer")?;
    Ok(Identity {
        instance_id: r.instance_id,
        token: r.token,
        hostname,
    })
}

/// How a session ended.
enum Ended {
    /// The bench asked the agent to stop.
    Stopped,
    /// The server said it restarts: come back after a short random pause.
    Restarting,
    /// The connection dropped; the agent may reconnect.
    Dropped(String),
}

async fn agent_main(id: Identity, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Tasks known and not yet acknowledged, by invoke id.
    let mut tasks: HashMap<String, SimTask> = HashMap::new();
    let mut welcomed_before = false;
    // The pause before the next attempt: as the real agent, a random one within
    // RESTART_SPREAD after the server said it restarts, else a backoff from 200 ms
    // doubling (with jitter) up to 2 s.
    let mut pause = Duration::ZERO;
    let mut step = Duration::from_millis(200);
    for session_no in 0..MAX_SESSIONS {
        if *stop.borrow() {
            return;
        }
        if session_no > 0 {
            shared.tracker.reconnects.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
        }
        match session(&id, &shared, &mut stop, &mut tasks, &mut welcomed_before).await {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Restarting) => {
                shared
                    .tracker
                    .told_restarting
                    .fetch_add(1, Ordering::Relaxed);
                step = Duration::from_millis(200);
                pause = RESTART_SPREAD.mul_f64(rand::random::<f64>());
                continue;
            }
            Ok(Ended::Dropped(why)) => shared.tracker.error(format!("{}: {why}", id.instance_id)),
            Err(e) => {
                shared
                    .tracker
                    .failed_connects
                    .fetch_add(1, Ordering::Relaxed);
                shared.tracker.error(format!("{}: {e:#}", id.instance_id))
            }
        }
        pause = step / 2 + (step / 2).mul_f64(rand::random::<f64>());
        step = (step * 2).min(Duration::from_secs(2));
    }
    if !*stop.borrow() {
        shared.tracker.gave_up.fetch_add(1, Ordering::Relaxed);
        shared.tracker.changed.notify_waiters();
    }
}

async fn session(
    id: &Identity,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    tasks: &mut HashMap<String, SimTask>,
    welcomed_before: &mut bool,
) -> Result<Ended> {
    let tracker = &shared.tracker;
    let (mut sink, mut stream, heartbeat_secs) = {
        let _permit = shared
            .connect_gate
            .acquire()
            .await
            .map_err(|_| anyhow!("connect gate closed"))?;
        let mut request = shared.ws_url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}:{}", id.instance_id, id.token))?,
        );
        // Small buffers: thousands of these live in one process.
        // (The write buffer grows only as needed; `feed` + `flush` batch a reply.)
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let (ws, _) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(
                request,
                Some(config),
                true,
                shared.connector.clone(),
            ),
        )
        .await
        .context("connect timed out")?
        .context("connect")?;
        let (mut sink, mut stream) = ws.split();
        let hello = AgentMsg::Hello {
            protocol: oca_proto::PROTOCOL_VERSION,
            agent_version: concat!("oca-bench/", env!("CARGO_PKG_VERSION")).into(),
            hostname: id.hostname.clone(),
            os_type: "linux".into(),
            known: tasks
                .keys()
                .map(|k| KnownTask {
                    invoke_id: k.clone(),
                    finished: true,
                    repeating: None,
                })
                .collect(),
            // Simulated agents run no processes.
            task_isolation: String::new(),
        };
        sink.send(Message::Text(hello.to_json().into())).await?;
        let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.next())
            .await
            .context("no Welcome in time")?;
        let heartbeat_secs = match welcome {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(t.as_str()) {
                Ok(ServerMsg::Welcome { heartbeat_secs, .. }) => heartbeat_secs,
                other => bail!("expected Welcome, got {other:?}"),
            },
            other => bail!("expected Welcome, got {other:?}"),
        };
        (sink, stream, heartbeat_secs)
    };
    tracker.welcomes.fetch_add(1, Ordering::Relaxed);
    if !*welcomed_before {
        *welcomed_before = true;
        tracker.online.fetch_add(1, Ordering::Relaxed);
    }
    tracker.changed.notify_waiters();
    // Results still waiting for an Ack go again.
    for t in tasks.values() {
        sink.feed(text(&AgentMsg::Finished(t.result.clone())))
            .await?;
    }
    sink.flush().await?;

    let period = Duration::from_secs(heartbeat_secs.max(1));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                    return Ok(Ended::Stopped);
                }
            }
            _ = heartbeat.tick() => {
                if let Err(e) = sink.send(text(&AgentMsg::Heartbeat { active_tasks: 0 })).await {
                    return Ok(Ended::Dropped(format!("heartbeat: {e}")));
                }
            }
            next = stream.next() => {
                let at = Instant::now();
                let msg = match next {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(Some(frame))))
                        if u16::from(frame.code) == oca_proto::CLOSE_RESTARTING =>
                    {
                        return Ok(Ended::Restarting)
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(Ended::Dropped("closed".into())),
                    Some(Err(e)) => return Ok(Ended::Dropped(e.to_string())),
                    Some(Ok(_)) => continue,
                };
                let msg: ServerMsg = match serde_json::from_str(msg.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        tracker.error(format!("bad message from the server: {e}"));
                        continue;
                    }
                };
                if let Err(e) = handle(msg, at, tracker, tasks, &mut sink).await {
                    return Ok(Ended::Dropped(format!("send: {e}")));
                }
            }
        }
    }
}

fn text(msg: &AgentMsg) -> Message {
    Message::Text(msg.to_json().into())
}

async fn handle<S>(
    msg: ServerMsg,
    at: Instant,
    tracker: &Tracker,
    tasks: &mut HashMap<String, SimTask>,
    sink: &mut S,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    match msg {
        ServerMsg::Welcome { .. } | ServerMsg::Stop { .. } => {
            // Runs end at once here: nothing is left running to stop.
        }
        ServerMsg::Run(task) => {
            if tasks.contains_key(&task.invoke_id) {
                tracker.duplicate_runs.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            tracker.record(&task.invoke_id, false, at);
            let start = now_millis();
            let sent = &OUTPUT[..OUTPUT.len().min(task.output_cap as usize)];
            let result = TaskResult {
                invoke_id: task.invoke_id.clone(),
                status: InvocationStatus::Success,
                exit_code: Some(0),
                error: None,
                start_time: Some(start),
                finish_time: now_millis(),
                output: oca_domain::command::encode_base64(OUTPUT),
                dropped: 0,
                output_len: sent.len() as u64,
                run: 0,
                more: false,
            };
            sink.feed(text(&AgentMsg::Started {
                invoke_id: task.invoke_id.clone(),
                start_time: start,
                run: 0,
            }))
            .await?;
            if !sent.is_empty() {
                sink.feed(text(&AgentMsg::Output {
                    invoke_id: task.invoke_id.clone(),
                    offset: 0,
                    data: oca_domain::command::encode_base64(sent),
                }))
                .await?;
            }
            sink.feed(text(&AgentMsg::Finished(result.clone()))).await?;
            sink.flush().await?;
            tasks.insert(task.invoke_id, SimTask { result });
        }
        ServerMsg::Ack { invoke_id, .. } => {
            if tasks.remove(&invoke_id).is_some() {
                tracker.record(&invoke_id, true, at);
            } else {
                tracker.stray_acks.fetch_add(1, Ordering::Relaxed);
            }
        }
        ServerMsg::Resend { invoke_id, offset } => {
            let Some(t) = tasks.get(&invoke_id) else {
                return Ok(());
            };
            tracker.resends.fetch_add(1, Ordering::Relaxed);
            let len = t.result.output_len as usize;
            let from = (offset as usize).min(len);
            if from < len {
                sink.feed(text(&AgentMsg::Output {
                    invoke_id: invoke_id.clone(),
                    offset: from as u64,
                    data: oca_domain::command::encode_base64(&OUTPUT[from..len]),
                }))
                .await?;
            }
            sink.feed(text(&AgentMsg::Finished(t.result.clone())))
                .await?;
            sink.flush().await?;
        }
    }
    Ok(())
}
