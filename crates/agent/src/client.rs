//! The agent's side of the protocol (`oca_proto`): registration, the WebSocket, tasks.
//!
//! [`run`] registers once (`identity.json`, mode 0600, is reused on later starts), then
//! keeps one WebSocket to the server, reconnecting with exponential backoff and jitter
//! (200 ms doubling to 30 s, reset after a connection that lasted). Tasks run
//! concurrently and keep running while the agent is disconnected; their output and
//! results wait in the spool ([`crate::spool`]) and go out when the agent is back:
//! `Hello` lists every task the agent knows, running tasks are announced `Started` again
//! (idempotent), unsent output is sent, and every unacknowledged result is sent again.
//!
//! Output goes out batched: when 32 KiB are waiting, or 200 ms after the first unsent
//! byte, in `Output` messages of at most 64 KiB read back from the spool file (so a
//! `Resend` is the same code path).

use crate::exec::{self, Observer};
use crate::proc;
use crate::spool::{self, Spool, TaskDir, TaskFile};
use crate::url::ServerUrl;
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use oca_domain::task_error::TaskError;
use oca_domain::time::{now_millis, Millis};
use oca_proto::{
    AgentMsg, KnownTask, RegisterError, RegisterRequest, RegisterResponse, ServerMsg, Task,
    TaskResult, PROTOCOL_VERSION,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
pub const OS_TYPE: &str = "linux";
/// Output waiting this long is sent even if the batch is small.
pub const FLUSH_DELAY: Duration = Duration::from_millis(200);
/// Output waiting beyond this much is sent at once.
pub const FLUSH_BYTES: u64 = 32 * 1024;
/// The most output bytes in one `Output` message.
pub const CHUNK_BYTES: u64 = 64 * 1024;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct Config {
    /// `http://host:port`.
    pub server: String,
    pub state_dir: PathBuf,
    /// Needed only when the state dir has no identity yet.
    pub activation_id: Option<String>,
    pub activation_code: Option<String>,
    /// The host name reported to the server; default: the kernel's.
    pub hostname: Option<String>,
}

/// What registration gave the agent, kept in `<state_dir>/identity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub instance_id: String,
    pub token: String,
}

impl Identity {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("identity.json")
    }

    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Identity>> {
        let path = Identity::path(state_dir);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        spool::write_atomic(
            &Identity::path(state_dir),
            &serde_json::to_vec_pretty(self)?,
            0o600,
        )
        .context("saving the identity")
    }
}

/// Runs the agent until a fatal error (registration refused, state dir unusable).
pub async fn run(config: Config) -> anyhow::Result<()> {
    proc::init();
    let url = ServerUrl::parse(&config.server)?;
    let spool = Spool::open(&config.state_dir)
        .with_context(|| format!("opening the state dir {}", config.state_dir.display()))?;
    let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
    let identity = match Identity::load(&config.state_dir)? {
        Some(i) => i,
        None => register(&config, &url, &hostname).await?,
    };
    tracing::info!(instance_id = %identity.instance_id, server = %url, "agent starting");
    let mut agent = Agent::new(spool, hostname);
    agent.load_spool().await;
    let mut backoff = Backoff::new();
    loop {
        let began = Instant::now();
        match agent.session(&url, &identity).await {
            Ok(()) => tracing::info!("disconnected from the server"),
            Err(e) => tracing::warn!("connection to {url} failed: {e:#}"),
        }
        if agent.welcomed && began.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        let pause = backoff.next();
        tracing::debug!(?pause, "reconnecting");
        tokio::time::sleep(pause).await;
    }
}

/// Registers with the activation code; retries while the server cannot be reached,
/// gives up when it refuses.
async fn register(config: &Config, url: &ServerUrl, hostname: &str) -> anyhow::Result<Identity> {
    let (Some(activation_id), Some(activation_code)) =
        (config.activation_id.clone(), config.activation_code.clone())
    else {
        bail!(
            "{} does not exist: the agent is not registered; give --activation-id and --activation-code",
            Identity::path(&config.state_dir).display()
        );
    };
    let request = RegisterRequest {
        activation_id,
        activation_code,
        hostname: hostname.to_string(),
        os_type: OS_TYPE.to_string(),
        agent_version: AGENT_VERSION.to_string(),
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    };
    let client = reqwest::Client::builder()
        .timeout(CONNECT_TIMEOUT)
        .build()?;
    let mut backoff = Backoff::new();
    loop {
        match client.post(url.register_url()).json(&request).send().await {
            Ok(resp) if resp.status().is_success() => {
                let r: RegisterResponse = resp.json().await.context("the register answer")?;
                let identity = Identity {
                    instance_id: r.instance_id,
                    token: r.token,
                };
                identity.save(&config.state_dir)?;
                tracing::info!(instance_id = %identity.instance_id, "registered");
                return Ok(identity);
            }
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                match serde_json::from_str::<RegisterError>(&body) {
                    Ok(e) => bail!("registration refused ({status}): {}: {}", e.code, e.message),
                    Err(_) => bail!("registration refused ({status}): {body}"),
                }
            }
            Ok(resp) => tracing::warn!("registration failed: {}", resp.status()),
            Err(e) => tracing::warn!("registration failed: {e}"),
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Exponential backoff with jitter.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// A pause between half and all of the current step; the step doubles.
    fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(BACKOFF_CAP);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// What a running task tells the connection.
enum Event {
    Started { invoke_id: String, at: Millis },
    Output { invoke_id: String },
    Finished(TaskResult),
}

/// Shared between a running task and the agent: how much output is spooled.
struct Progress {
    invoke_id: String,
    spooled: AtomicU64,
    /// An `Output` event is waiting to be handled (at most one per task).
    notified: AtomicBool,
    events: mpsc::UnboundedSender<Event>,
}

impl Observer for Progress {
    fn started(&self, at: Millis) {
        let _ = self.events.send(Event::Started {
            invoke_id: self.invoke_id.clone(),
            at,
        });
    }

    fn output(&self, spooled: u64) {
        self.spooled.store(spooled, Ordering::Release);
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = self.events.send(Event::Output {
                invoke_id: self.invoke_id.clone(),
            });
        }
    }
}

struct Entry {
    dir: TaskDir,
    progress: Arc<Progress>,
    stop: Option<oneshot::Sender<()>>,
    start_time: Option<Millis>,
    result: Option<TaskResult>,
    /// Output bytes sent on the current connection (or assumed sent).
    sent: u64,
    /// When the unsent output must go out.
    due: Option<Instant>,
}

impl Entry {
    fn spooled(&self) -> u64 {
        self.progress.spooled.load(Ordering::Acquire)
    }
}

type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

struct Agent {
    spool: Spool,
    hostname: String,
    tasks: BTreeMap<String, Entry>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    running: JoinSet<()>,
    /// The current connection was welcomed.
    welcomed: bool,
}

impl Agent {
    fn new(spool: Spool, hostname: String) -> Agent {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Agent {
            spool,
            hostname,
            tasks: BTreeMap::new(),
            events_tx,
            events_rx,
            running: JoinSet::new(),
            welcomed: false,
        }
    }

    fn progress(&self, invoke_id: &str, spooled: u64) -> Arc<Progress> {
        Arc::new(Progress {
            invoke_id: invoke_id.to_string(),
            spooled: AtomicU64::new(spooled),
            notified: AtomicBool::new(false),
            events: self.events_tx.clone(),
        })
    }

    /// Takes up the spool: results waiting for an ack, and runs the agent did not see
    /// end (it died meanwhile), which are finished now as interrupted, their leftover
    /// processes killed.
    async fn load_spool(&mut self) {
        for s in self.spool.load() {
            let invoke_id = s.file.task.invoke_id.clone();
            let result = match s.result {
                Some(r) => r,
                None => {
                    tracing::warn!(%invoke_id, "the agent stopped during this run: interrupted");
                    proc::kill_tree(None, &s.file.marker, Duration::from_secs(5)).await;
                    let r = s.dir.interrupted_result(&s.file.task);
                    if let Err(e) = s.dir.write_result(&r) {
                        tracing::error!(%invoke_id, "cannot spool the result: {e}");
                    }
                    r
                }
            };
            let progress = self.progress(&invoke_id, result.output_len);
            self.tasks.insert(
                invoke_id,
                Entry {
                    dir: s.dir,
                    progress,
                    stop: None,
                    start_time: result.start_time,
                    sent: result.output_len,
                    result: Some(result),
                    due: None,
                },
            );
        }
    }

    /// One connection, from connect to disconnect (`self.welcomed` says whether the
    /// server welcomed it).
    async fn session(&mut self, url: &ServerUrl, identity: &Identity) -> anyhow::Result<()> {
        self.welcomed = false;
        let mut request = url.connect_url().into_client_request()?;
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!(
                "Bearer {}:{}",
                identity.instance_id, identity.token
            ))?,
        );
        let (ws, _) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .context("connect timed out")??;
        tracing::info!("connected to {url}");
        let (mut sink, mut stream) = ws.split();

        // What happened while disconnected.
        while let Ok(ev) = self.events_rx.try_recv() {
            self.apply(ev);
        }
        let known = self
            .tasks
            .iter()
            .map(|(id, e)| KnownTask {
                invoke_id: id.clone(),
                finished: e.result.is_some(),
            })
            .collect();
        send(
            &mut sink,
            &AgentMsg::Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: AGENT_VERSION.to_string(),
                hostname: self.hostname.clone(),
                os_type: OS_TYPE.to_string(),
                known,
            },
        )
        .await?;

        let mut welcomed = false;
        let welcome_deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut heartbeat: Option<tokio::time::Interval> = None;
        let mut silence_limit = Duration::from_secs(3600);
        let mut last_heard = Instant::now();
        loop {
            let due = self.tasks.values().filter_map(|e| e.due).min();
            tokio::select! {
                frame = stream.next() => {
                    last_heard = Instant::now();
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None => return Ok(()),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(e.into()),
                    };
                    let msg = match serde_json::from_str::<ServerMsg>(&text) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("unknown message from the server: {e}");
                            continue;
                        }
                    };
                    if let ServerMsg::Welcome { heartbeat_secs, instance_id, .. } = &msg {
                        tracing::info!(%instance_id, heartbeat_secs, "welcomed");
                        let period = Duration::from_secs((*heartbeat_secs).max(1));
                        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        heartbeat = Some(tick);
                        silence_limit = period * 3 + Duration::from_secs(10);
                        welcomed = true;
                        self.welcomed = true;
                        self.catch_up(&mut sink).await?;
                    } else {
                        self.on_server_msg(msg, &mut sink, welcomed).await?;
                    }
                }
                Some(ev) = self.events_rx.recv() => {
                    if let Some(ev) = self.apply(ev) {
                        if welcomed {
                            self.send_event(ev, &mut sink).await?;
                        }
                    }
                }
                _ = tokio::time::sleep_until(welcome_deadline), if !welcomed => {
                    bail!("the server did not answer Hello");
                }
                _ = tick(&mut heartbeat) => {
                    if last_heard.elapsed() > silence_limit {
                        bail!("the server has been silent for {:?}", last_heard.elapsed());
                    }
                    let active_tasks = self.tasks.values().filter(|e| e.result.is_none()).count() as u32;
                    send(&mut sink, &AgentMsg::Heartbeat { active_tasks }).await?;
                    sink.send(Message::Ping(Default::default())).await?;
                }
                _ = sleep_until(due), if welcomed && due.is_some() => {
                    let now = Instant::now();
                    let ids: Vec<String> = self
                        .tasks
                        .iter()
                        .filter(|(_, e)| e.due.is_some_and(|d| d <= now))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in ids {
                        self.flush(&id, &mut sink).await?;
                    }
                }
                Some(joined) = self.running.join_next(), if !self.running.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            tracing::error!("a task runner panicked: {e}");
                        }
                    }
                }
            }
        }
    }

    /// Records an event; returns what it asks to send.
    fn apply(&mut self, ev: Event) -> Option<Event> {
        match ev {
            Event::Started { invoke_id, at } => {
                let e = self.tasks.get_mut(&invoke_id)?;
                e.start_time = Some(at);
                Some(Event::Started { invoke_id, at })
            }
            Event::Output { invoke_id } => {
                let e = self.tasks.get_mut(&invoke_id)?;
                e.progress.notified.store(false, Ordering::Release);
                if e.spooled() > e.sent && e.due.is_none() {
                    e.due = Some(Instant::now() + FLUSH_DELAY);
                }
                Some(Event::Output { invoke_id })
            }
            Event::Finished(result) => {
                let e = self.tasks.get_mut(&result.invoke_id)?;
                e.stop = None;
                e.result = Some(result.clone());
                Some(Event::Finished(result))
            }
        }
    }

    /// Sends what an event asks for, on a live connection.
    async fn send_event(&mut self, ev: Event, sink: &mut Sink) -> anyhow::Result<()> {
        match ev {
            Event::Started { invoke_id, at } => {
                send(
                    sink,
                    &AgentMsg::Started {
                        invoke_id,
                        start_time: at,
                    },
                )
                .await
            }
            Event::Output { invoke_id } => {
                match self.tasks.get(&invoke_id) {
                    Some(e) if e.spooled() >= e.sent + FLUSH_BYTES => {
                        self.flush(&invoke_id, sink).await?
                    }
                    _ => {}
                }
                Ok(())
            }
            Event::Finished(result) => {
                self.flush(&result.invoke_id, sink).await?;
                tracing::info!(invoke_id = %result.invoke_id, status = %result.status, "finished");
                send(sink, &AgentMsg::Finished(result)).await
            }
        }
    }

    /// After `Welcome`: announce running tasks again, send unsent output and every
    /// result not yet acknowledged.
    async fn catch_up(&mut self, sink: &mut Sink) -> anyhow::Result<()> {
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let e = &self.tasks[&id];
            if e.result.is_none() {
                if let Some(at) = e.start_time {
                    send(
                        sink,
                        &AgentMsg::Started {
                            invoke_id: id.clone(),
                            start_time: at,
                        },
                    )
                    .await?;
                }
            }
            self.flush(&id, sink).await?;
            if let Some(result) = self.tasks[&id].result.clone() {
                send(sink, &AgentMsg::Finished(result)).await?;
            }
        }
        Ok(())
    }

    async fn on_server_msg(
        &mut self,
        msg: ServerMsg,
        sink: &mut Sink,
        welcomed: bool,
    ) -> anyhow::Result<()> {
        match msg {
            ServerMsg::Welcome { .. } => {}
            ServerMsg::Run(task) => {
                if self.tasks.contains_key(&task.invoke_id) {
                    tracing::debug!(invoke_id = %task.invoke_id, "already known: Run ignored");
                } else {
                    let invoke_id = task.invoke_id.clone();
                    self.start(task);
                    // A task that could not even be spooled ends at once.
                    let failed = self.tasks.get(&invoke_id).and_then(|e| e.result.clone());
                    if let (true, Some(result)) = (welcomed, failed) {
                        send(sink, &AgentMsg::Finished(result)).await?;
                    }
                }
            }
            ServerMsg::Stop { invoke_id } => match self.tasks.get_mut(&invoke_id) {
                Some(e) => {
                    if let Some(stop) = e.stop.take() {
                        tracing::info!(%invoke_id, "stopping");
                        let _ = stop.send(());
                    }
                }
                None => tracing::debug!(%invoke_id, "Stop for an unknown task"),
            },
            ServerMsg::Ack { invoke_id } => {
                if self
                    .tasks
                    .get(&invoke_id)
                    .is_some_and(|e| e.result.is_some())
                {
                    self.tasks.remove(&invoke_id);
                    if let Err(e) = self.spool.remove(&invoke_id) {
                        tracing::error!(%invoke_id, "cannot remove the spooled task: {e}");
                    }
                    tracing::debug!(%invoke_id, "acknowledged");
                } else {
                    tracing::debug!(%invoke_id, "Ack for a task without a result: ignored");
                }
            }
            ServerMsg::Resend { invoke_id, offset } => {
                let Some(e) = self.tasks.get_mut(&invoke_id) else {
                    tracing::debug!(%invoke_id, "Resend for an unknown task");
                    return Ok(());
                };
                tracing::debug!(%invoke_id, offset, "resending output");
                e.sent = offset.min(e.spooled());
                self.flush(&invoke_id, sink).await?;
                if let Some(result) = self.tasks[&invoke_id].result.clone() {
                    send(sink, &AgentMsg::Finished(result)).await?;
                }
            }
        }
        Ok(())
    }

    /// Spools a new task and starts it.
    fn start(&mut self, task: Task) {
        let invoke_id = task.invoke_id.clone();
        let marker = format!("{:032x}", rand::random::<u128>());
        let file = TaskFile {
            task,
            marker,
            received_at: now_millis(),
        };
        let progress = self.progress(&invoke_id, 0);
        let dir = match self.spool.create(&file) {
            Ok(d) => d,
            Err(e) => {
                // Without a spool the run cannot keep its promises: do not start it.
                tracing::error!(%invoke_id, "cannot spool the task: {e}");
                let now = now_millis();
                self.tasks.insert(
                    invoke_id.clone(),
                    Entry {
                        dir: self.spool.dir(&invoke_id),
                        progress,
                        stop: None,
                        start_time: None,
                        result: Some(TaskResult {
                            invoke_id,
                            status: TaskError::ExecutionException.status(),
                            exit_code: None,
                            error: Some(TaskError::ExecutionException),
                            start_time: None,
                            finish_time: now,
                            output: String::new(),
                            dropped: 0,
                            output_len: 0,
                        }),
                        sent: 0,
                        due: None,
                    },
                );
                return;
            }
        };
        tracing::info!(%invoke_id, "running");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        self.tasks.insert(
            invoke_id.clone(),
            Entry {
                dir: dir.clone(),
                progress: progress.clone(),
                stop: Some(stop_tx),
                start_time: None,
                result: None,
                sent: 0,
                due: None,
            },
        );
        let events = self.events_tx.clone();
        self.running.spawn(async move {
            let stop = async move {
                if stop_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let result = exec::execute(&file.task, &dir, &file.marker, stop, &*progress).await;
            if let Err(e) = dir.write_result(&result) {
                tracing::error!(invoke_id = %file.task.invoke_id, "cannot spool the result: {e}");
            }
            let _ = events.send(Event::Finished(result));
        });
    }

    /// Sends a task's unsent spooled output.
    async fn flush(&mut self, invoke_id: &str, sink: &mut Sink) -> anyhow::Result<()> {
        let Some(e) = self.tasks.get_mut(invoke_id) else {
            return Ok(());
        };
        e.due = None;
        let end = e.spooled();
        while e.sent < end {
            let want = (end - e.sent).min(CHUNK_BYTES) as usize;
            let data = match e.dir.read_output(e.sent, want) {
                Ok(d) if !d.is_empty() => d,
                Ok(_) => break,
                Err(err) => {
                    tracing::error!(%invoke_id, "cannot read spooled output: {err}");
                    break;
                }
            };
            let offset = e.sent;
            e.sent += data.len() as u64;
            send(
                sink,
                &AgentMsg::Output {
                    invoke_id: invoke_id.to_string(),
                    offset,
                    data: oca_domain::command::encode_base64(&data),
                },
            )
            .await?;
        }
        Ok(())
    }
}

async fn send(sink: &mut Sink, msg: &AgentMsg) -> anyhow::Result<()> {
    sink.send(Message::Text(msg.to_json().into())).await?;
    Ok(())
}

async fn tick(heartbeat: &mut Option<tokio::time::Interval>) {
    match heartbeat {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= BACKOFF_START / 2 && first <= BACKOFF_START);
        for _ in 0..20 {
            assert!(b.next() <= BACKOFF_CAP);
        }
        assert_eq!(b.next, BACKOFF_CAP);
        let late = b.next();
        assert!(late >= BACKOFF_CAP / 2);
        b.reset();
        assert!(b.next() <= BACKOFF_START);
    }
}
