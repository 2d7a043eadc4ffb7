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
//! Repeating tasks (`Task.repeat`) are kept on the schedule ([`crate::schedule`]) and
//! run by the agent when they are due, connected or not: a `Run` with a repeat is
//! answered `Scheduled`, each run is spooled under its own number and reported
//! `Started`/`Finished` with it (no `Output` chunks), and acknowledged run by run. Timers
//! sleep until the next due slot; while disconnected (connecting, or pausing between
//! attempts) the agent keeps recording run events and firing due tasks
//! (`Agent::offline`).
//!
//! Output goes out batched: when 32 KiB are waiting, or 200 ms after the first unsent
//! byte, in `Output` messages of at most 64 KiB read back from the spool file (so a
//! `Resend` is the same code path).
//!
//! Parts: `register.rs` (the identity and the backoff), `startup.rs` (what the agent
//! takes up from its state dir at start), `repeating.rs` (schedules, timers, runs of
//! repeating tasks).

mod register;
mod repeating;
mod startup;

use register::{local_hostname, register, Backoff};
pub use register::{register_once, Identity};
use repeating::{Armed, Firing};

use crate::exec::{self, Observer};
use crate::isolation::{Isolation, Mode};
use crate::proc;
use crate::schedule::{host_zone, read_boot_id, ScheduleStore, BOOT_ID_PATH};
use crate::spool::{self, Spool, TaskDir, TaskFile};
use crate::url::ServerUrl;
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use oca_domain::frequency::Zone;
use oca_domain::status::InvocationStatus;
use oca_domain::task_error::TaskError;
use oca_domain::time::{now_millis, Millis};
use oca_proto::{AgentMsg, KnownTask, ServerMsg, Task, TaskResult, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::future::Future;
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
/// A connection that lasted this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);
/// The most an agent waits before it reconnects to a server that said it restarts.
const RESTART_SPREAD: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://host:port` (or `http://…`).
    pub server: String,
    /// What to trust of an `https://` server, if told now (else what registration kept,
    /// else the system's roots).
    pub trust: Option<oca_tls::Trust>,
    pub state_dir: PathBuf,
    /// Needed only when the state dir has no identity yet.
    pub activation_id: Option<String>,
    pub activation_code: Option<String>,
    /// The host name reported to the server; default: the kernel's.
    pub hostname: Option<String>,
    /// Where this boot's id is read (reboot tasks fire on a new one); default
    /// [`BOOT_ID_PATH`]. Tests point it at a file of their own.
    pub boot_id_file: Option<PathBuf>,
    /// How runs' processes are kept together ([`crate::isolation`]).
    pub task_isolation: Mode,
}

/// The agent's umask: what it writes is its own.
pub const AGENT_UMASK: libc::mode_t = 0o077;

/// Runs the agent until a fatal error (registration refused, state dir unusable,
/// `--task-isolation cgroup` where cgroups cannot be used).
pub async fn run(config: Config) -> anyhow::Result<()> {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(AGENT_UMASK) };
    proc::init();
    let url = ServerUrl::parse(&config.server)?;
    let spool = Spool::open(&config.state_dir)
        .with_context(|| format!("opening the state dir {}", config.state_dir.display()))?;
    let isolation = Isolation::detect(config.task_isolation, &config.state_dir)
        .await
        .map_err(|why| anyhow::anyhow!("--task-isolation cgroup: {why}"))?;
    let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
    let trust = crate::transport::trust(config.trust.clone(), &config.state_dir)?;
    let transport = crate::transport::Transport::new(&url, &trust, CONNECT_TIMEOUT)?;
    if url.is_tls() {
        tracing::info!("TLS: trusting {trust}");
    }
    let identity = match Identity::load(&config.state_dir)? {
        Some(i) => i,
        None => {
            let identity = register(&config, &url, &transport, &hostname, None).await?;
            identity.save(&config.state_dir)?;
            identity
        }
    };
    let store = ScheduleStore::open(&config.state_dir)
        .with_context(|| format!("opening the state dir {}", config.state_dir.display()))?;
    // What an agent with a looser umask left readable.
    for path in [
        Identity::path(&config.state_dir).as_path(),
        spool.root(),
        store.root(),
    ] {
        match spool::tighten(path) {
            Ok(0) => {}
            Ok(n) => tracing::info!(path = %path.display(), "{n} entries made private"),
            Err(e) => tracing::warn!(path = %path.display(), "cannot make private: {e}"),
        }
    }
    let boot_id = read_boot_id(
        config
            .boot_id_file
            .as_deref()
            .unwrap_or(Path::new(BOOT_ID_PATH)),
    );
    tracing::info!(
        instance_id = %identity.instance_id,
        server = %url,
        %boot_id,
        task_isolation = isolation.name(),
        "agent starting"
    );
    let mut agent = Agent::new(spool, store, hostname, boot_id, host_zone(), isolation);
    agent.load().await;
    let mut backoff = Backoff::new();
    loop {
        let began = Instant::now();
        match agent.session(&url, &transport, &identity).await {
            Ok(()) => tracing::info!("disconnected from the server"),
            Err(e) if is_unauthorized(&e) => {
                tracing::warn!("connection to {url} refused: {e:#}");
                agent.refused();
            }
            Err(e) => tracing::warn!("connection to {url} failed: {e:#}"),
        }
        if agent.welcomed && began.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        let pause = if std::mem::take(&mut agent.server_restarting) {
            // Every agent of the server heard this at once: a random pause spreads
            // their return over a few seconds; then the usual backoff, from its start.
            backoff.reset();
            RESTART_SPREAD.mul_f64(rand::random::<f64>())
        } else {
            backoff.next()
        };
        tracing::debug!(?pause, "reconnecting");
        agent.offline(tokio::time::sleep(pause)).await;
    }
}

/// Whether the server refused the agent's credentials (HTTP 401 on connect). A
/// throttled address is answered 400 (`Throttling.User`): not a refusal, the agent
/// retries after its backoff like after any other failure.
fn is_unauthorized(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
            Some(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == 401
        )
    })
}

/// A run: the task's invoke id and the run's number (0 for a one-time task).
type RunKey = (String, u64);

/// What a running task tells the connection.
enum Event {
    Started { key: RunKey, at: Millis },
    Output { key: RunKey },
    Finished(TaskResult),
}

/// Shared between a running task and the agent: how much output is spooled.
struct Progress {
    key: RunKey,
    spooled: AtomicU64,
    /// An `Output` event is waiting to be handled (at most one per task).
    notified: AtomicBool,
    events: mpsc::UnboundedSender<Event>,
}

impl Observer for Progress {
    fn started(&self, at: Millis) {
        let _ = self.events.send(Event::Started {
            key: self.key.clone(),
            at,
        });
    }

    fn output(&self, spooled: u64) {
        self.spooled.store(spooled, Ordering::Release);
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = self.events.send(Event::Output {
                key: self.key.clone(),
            });
        }
    }
}

/// A run the agent knows: going, or ended with its result waiting for an ack.
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
    store: ScheduleStore,
    hostname: String,
    /// This boot (reboot tasks fire on another one).
    boot_id: String,
    /// The host's zone, for cron expressions without one.
    zone: Zone,
    /// How runs' processes are kept together.
    isolation: Isolation,
    tasks: BTreeMap<RunKey, Entry>,
    schedules: BTreeMap<String, Armed>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    running: JoinSet<()>,
    /// The current connection was welcomed.
    welcomed: bool,
    /// The server closed the connection because it is restarting.
    server_restarting: bool,
}

impl Agent {
    fn new(
        spool: Spool,
        store: ScheduleStore,
        hostname: String,
        boot_id: String,
        zone: Zone,
        isolation: Isolation,
    ) -> Agent {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Agent {
            spool,
            store,
            hostname,
            boot_id,
            zone,
            isolation,
            tasks: BTreeMap::new(),
            schedules: BTreeMap::new(),
            events_tx,
            events_rx,
            running: JoinSet::new(),
            welcomed: false,
            server_restarting: false,
        }
    }

    fn progress(&self, key: &RunKey, spooled: u64) -> Arc<Progress> {
        Arc::new(Progress {
            key: key.clone(),
            spooled: AtomicU64::new(spooled),
            notified: AtomicBool::new(false),
            events: self.events_tx.clone(),
        })
    }

    /// Waits for `fut` while keeping up the agent's own work, as when disconnected: run
    /// events are recorded (they go out on the next connection) and due tasks run.
    async fn offline<F: Future>(&mut self, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                out = &mut fut => return out,
                Some(ev) = self.events_rx.recv() => {
                    self.apply(ev);
                }
                _ = sleep_until(wake), if wake.is_some() => self.fire_due(),
                Some(joined) = self.running.join_next(), if !self.running.is_empty() => {
                    log_join(joined);
                }
            }
        }
    }

    /// One connection, from connect to disconnect (`self.welcomed` says whether the
    /// server welcomed it).
    async fn session(
        &mut self,
        url: &ServerUrl,
        transport: &crate::transport::Transport,
        identity: &Identity,
    ) -> anyhow::Result<()> {
        self.welcomed = false;
        let mut request = url.connect_url().into_client_request()?;
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!(
                "Bearer {}:{}",
                identity.instance_id, identity.token
            ))?,
        );
        let (ws, _) = self
            .offline(tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_tungstenite::connect_async_tls_with_config(
                    request,
                    None,
                    true,
                    transport.ws_connector(),
                ),
            ))
            .await
            .context("connect timed out")??;
        tracing::info!("connected to {url}");
        let (mut sink, mut stream) = ws.split();

        // What happened while disconnected.
        while let Ok(ev) = self.events_rx.try_recv() {
            self.apply(ev);
        }
        send(
            &mut sink,
            &AgentMsg::Hello {
                protocol: PROTOCOL_VERSION,
                agent_version: AGENT_VERSION.to_string(),
                hostname: self.hostname.clone(),
                os_type: OS_TYPE.to_string(),
                known: self.known(),
                task_isolation: self.isolation.name().to_string(),
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
            let wake = self.next_wake();
            tokio::select! {
                frame = stream.next() => {
                    last_heard = Instant::now();
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(frame))) => {
                            self.server_restarting = frame
                                .is_some_and(|f| u16::from(f.code) == oca_proto::CLOSE_RESTARTING);
                            return Ok(());
                        }
                        None => return Ok(()),
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
                        self.on_server_msg(msg, &mut sink).await?;
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
                    let keys: Vec<RunKey> = self
                        .tasks
                        .iter()
                        .filter(|(_, e)| e.due.is_some_and(|d| d <= now))
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in keys {
                        self.flush(&key, &mut sink).await?;
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => self.fire_due(),
                Some(joined) = self.running.join_next(), if !self.running.is_empty() => {
                    log_join(joined);
                }
            }
        }
    }

    /// What `Hello` lists: per invoke id, its runs (`finished` once all of them have
    /// ended) and, for a task on the schedule, its revision (`finished` is then false:
    /// the task goes on).
    fn known(&self) -> Vec<KnownTask> {
        let mut known: BTreeMap<&str, KnownTask> = BTreeMap::new();
        for ((id, _), e) in &self.tasks {
            let k = known.entry(id).or_insert_with(|| KnownTask {
                invoke_id: id.clone(),
                finished: true,
                repeating: None,
            });
            k.finished &= e.result.is_some();
        }
        for (id, a) in &self.schedules {
            let k = known.entry(id).or_insert_with(|| KnownTask {
                invoke_id: id.clone(),
                finished: false,
                repeating: None,
            });
            k.finished = false;
            k.repeating = Some(a.kept.revision());
        }
        known.into_values().collect()
    }

    /// Records an event; returns what it asks to send.
    fn apply(&mut self, ev: Event) -> Option<Event> {
        match ev {
            Event::Started { key, at } => {
                let e = self.tasks.get_mut(&key)?;
                e.start_time = Some(at);
                Some(Event::Started { key, at })
            }
            Event::Output { key } => {
                let e = self.tasks.get_mut(&key)?;
                e.progress.notified.store(false, Ordering::Release);
                if e.spooled() > e.sent && e.due.is_none() {
                    e.due = Some(Instant::now() + FLUSH_DELAY);
                }
                Some(Event::Output { key })
            }
            Event::Finished(mut result) => {
                let key = (result.invoke_id.clone(), result.run);
                let settled = self.settle(&mut result);
                let e = self.tasks.get_mut(&key)?;
                if settled {
                    if let Err(err) = e.dir.write_result(&result) {
                        tracing::error!(invoke_id = %key.0, run = key.1, "cannot spool the result: {err}");
                    }
                }
                e.stop = None;
                e.result = Some(result.clone());
                if key.1 > 0 {
                    self.after_run(&key.0, key.1);
                }
                self.isolation.tidy();
                Some(Event::Finished(result))
            }
        }
    }

    /// Sends what an event asks for, on a live connection.
    async fn send_event(&mut self, ev: Event, sink: &mut Sink) -> anyhow::Result<()> {
        match ev {
            Event::Started { key, at } => {
                send(
                    sink,
                    &AgentMsg::Started {
                        invoke_id: key.0,
                        start_time: at,
                        run: key.1,
                    },
                )
                .await
            }
            Event::Output { key } => {
                match self.tasks.get(&key) {
                    Some(e) if e.spooled() >= e.sent + FLUSH_BYTES => {
                        self.flush(&key, sink).await?
                    }
                    _ => {}
                }
                Ok(())
            }
            Event::Finished(result) => {
                self.flush(&(result.invoke_id.clone(), result.run), sink)
                    .await?;
                tracing::info!(invoke_id = %result.invoke_id, run = result.run, status = %result.status, "finished");
                send(sink, &AgentMsg::Finished(result)).await
            }
        }
    }

    /// After `Welcome`: announce running tasks again, send unsent output and every
    /// result not yet acknowledged.
    async fn catch_up(&mut self, sink: &mut Sink) -> anyhow::Result<()> {
        let keys: Vec<RunKey> = self.tasks.keys().cloned().collect();
        for key in keys {
            let e = &self.tasks[&key];
            if e.result.is_none() {
                if let Some(at) = e.start_time {
                    send(
                        sink,
                        &AgentMsg::Started {
                            invoke_id: key.0.clone(),
                            start_time: at,
                            run: key.1,
                        },
                    )
                    .await?;
                }
            }
            self.flush(&key, sink).await?;
            if let Some(result) = self.tasks[&key].result.clone() {
                send(sink, &AgentMsg::Finished(result)).await?;
            }
        }
        Ok(())
    }

    /// Ends a task: its schedule (if it repeats) and its run in progress (if any).
    fn stop(&mut self, invoke_id: &str) {
        if self.schedules.contains_key(invoke_id) {
            tracing::info!(%invoke_id, "schedule ended by Stop");
            self.forget_schedule(invoke_id);
        }
        let mut known = false;
        for (_, e) in self.runs_mut(invoke_id) {
            known = true;
            if let Some(stop) = e.stop.take() {
                tracing::info!(%invoke_id, "stopping");
                let _ = stop.send(());
            }
        }
        if !known {
            tracing::debug!(%invoke_id, "Stop for a task without a run");
        }
    }

    /// The server no longer knows this instance (it was deregistered while the agent
    /// was away): nothing it scheduled may run on, so every schedule and run ends.
    fn refused(&mut self) {
        let ids: Vec<String> = self.schedules.keys().cloned().collect();
        if !ids.is_empty() {
            tracing::error!(
                schedules = ids.len(),
                "the server refuses this instance's credentials (deregistered?): \
                 dropping its schedules; register again with a new activation"
            );
        }
        for id in ids {
            self.stop(&id);
        }
    }

    async fn on_server_msg(&mut self, msg: ServerMsg, sink: &mut Sink) -> anyhow::Result<()> {
        match msg {
            ServerMsg::Welcome { .. } => {}
            ServerMsg::Run(task) => match &task.repeat {
                Some(r) if r.mode.repeats() => self.on_repeating_run(task, sink).await?,
                _ => {
                    let id = &task.invoke_id;
                    if self.tasks.contains_key(&(id.clone(), 0)) || self.schedules.contains_key(id)
                    {
                        tracing::debug!(invoke_id = %id, "already known: Run ignored");
                    } else {
                        self.start(task, 0, false);
                    }
                }
            },
            ServerMsg::Stop { invoke_id } => self.stop(&invoke_id),
            ServerMsg::Ack { invoke_id, run } => {
                let key = (invoke_id, run);
                if self.tasks.get(&key).is_some_and(|e| e.result.is_some()) {
                    self.tasks.remove(&key);
                    if let Err(e) = self.spool.remove(&key.0, key.1) {
                        tracing::error!(invoke_id = %key.0, run, "cannot remove the spooled task: {e}");
                    }
                    tracing::debug!(invoke_id = %key.0, run, "acknowledged");
                } else {
                    tracing::debug!(invoke_id = %key.0, run, "Ack for a run without a result: ignored");
                }
            }
            ServerMsg::Resend { invoke_id, offset } => {
                let key = (invoke_id.clone(), 0);
                if let Some(e) = self.tasks.get_mut(&key) {
                    tracing::debug!(%invoke_id, offset, "resending output");
                    e.sent = offset.min(e.spooled());
                    self.flush(&key, sink).await?;
                }
                // Runs of a repeating task have no output chunks: their results again.
                let results: Vec<TaskResult> = self
                    .runs_mut(&invoke_id)
                    .filter_map(|(_, e)| e.result.clone())
                    .collect();
                if results.is_empty() && !self.tasks.contains_key(&key) {
                    tracing::debug!(%invoke_id, "Resend for an unknown task");
                }
                for result in results {
                    send(sink, &AgentMsg::Finished(result)).await?;
                }
            }
        }
        Ok(())
    }

    /// The runs of a task (one for a one-time task).
    fn runs_mut<'a>(
        &'a mut self,
        invoke_id: &str,
    ) -> impl Iterator<Item = (&'a RunKey, &'a mut Entry)> + 'a {
        let range = (invoke_id.to_string(), 0)..=(invoke_id.to_string(), u64::MAX);
        self.tasks.range_mut(range)
    }

    /// Spools a run and starts it. `more`: the schedule goes on after this run (unless
    /// a `Stop` ends it).
    fn start(&mut self, task: Task, run: u64, more: bool) {
        let key = (task.invoke_id.clone(), run);
        let file = TaskFile {
            cgroup: self.isolation.cgroup_for(&task.invoke_id, run),
            task,
            run,
            marker: format!("{:032x}", rand::random::<u128>()),
            received_at: now_millis(),
        };
        let dir = match self.spool.create(&file) {
            Ok(d) => d,
            Err(e) => {
                // Without a spool the run cannot keep its promises: do not start it.
                tracing::error!(invoke_id = %key.0, run, "cannot spool the task: {e}");
                let result = TaskResult::not_started(
                    &key.0,
                    run,
                    TaskError::ExecutionException,
                    now_millis(),
                );
                let progress = self.progress(&key, 0);
                self.tasks.insert(
                    key.clone(),
                    Entry {
                        dir: self.spool.dir(&key.0, run),
                        progress,
                        stop: None,
                        start_time: None,
                        result: Some(result.clone()),
                        sent: 0,
                        due: None,
                    },
                );
                let _ = self.events_tx.send(Event::Finished(result));
                return;
            }
        };
        tracing::info!(invoke_id = %key.0, run, "running");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let progress = self.progress(&key, 0);
        self.tasks.insert(
            key,
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
            let mut result = exec::execute(
                &file.task,
                &dir,
                &file.marker,
                file.cgroup.as_deref(),
                stop,
                &*progress,
            )
            .await;
            result.run = run;
            result.more = more && result.status != InvocationStatus::Terminated;
            if let Err(e) = dir.write_result(&result) {
                tracing::error!(invoke_id = %file.task.invoke_id, run, "cannot spool the result: {e}");
            }
            let _ = events.send(Event::Finished(result));
        });
    }

    /// Sends a run's unsent spooled output (runs of repeating tasks have none).
    async fn flush(&mut self, key: &RunKey, sink: &mut Sink) -> anyhow::Result<()> {
        let Some(e) = self.tasks.get_mut(key) else {
            return Ok(());
        };
        e.due = None;
        if key.1 > 0 {
            return Ok(());
        }
        let invoke_id = &key.0;
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

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            tracing::error!("a task runner panicked: {e}");
        }
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
