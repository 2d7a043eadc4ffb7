//! The dispatcher: the server's side of the agent protocol (`oca_proto`).
//!
//! - [`Dispatcher::routes`] serves agent registration and the agent WebSocket.
//! - Live connections are kept in a map from instance id to a channel into that
//!   connection's writer task, so the API can push a task to an agent the moment it is
//!   stored ([`Dispatcher::send_run`]) without waiting on the socket.
//! - What agents report goes to the store as `TaskEvent`s through one group-commit
//!   writer (`writer.rs`); a result is acknowledged only once it and all of its output
//!   are stored.
//! - A sweeper ends tasks that could not be delivered in time, and cuts off the agents
//!   of deleted accounts.
//! - What agents send is bounded (`oca_proto::limits`, `limits.rs`), and a source
//!   address that keeps failing to authenticate is throttled (`guard.rs`).
//!
//! Reading order: `lib.rs` (state and the API-facing calls), `connection.rs` (one
//! agent's socket, top to bottom), `writer.rs` (group commit), `register.rs`,
//! `guard.rs` (throttling), `limits.rs`, `task.rs` (building a `Task`).

mod connection;
mod guard;
mod limits;
mod register;
mod task;
mod writer;

use axum::routing::{get, post};
use axum::Router;
use oca_domain::task::{TaskEvent, TaskState};
use oca_domain::task_error::TaskError;
use oca_domain::throttle::FailureLimits;
use oca_domain::time::{now_millis, Millis};
use oca_proto::ServerMsg;
use oca_store::audit::{AuditLog, Targets};
use oca_store::{AuditRecord, InstanceRecord, InvocationRecord, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub use register::{digest, ip_range_is_valid};
pub use task::build_task;

/// An address as the audit trail keeps it: an IPv4 peer seen as an IPv6-mapped address
/// is its IPv4 address.
pub fn audit_ip(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(ip, std::net::IpAddr::V4)
            .to_string(),
        v4 => v4.to_string(),
    }
}

/// How the dispatcher behaves; the defaults are the production ones.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// How often agents send heartbeats.
    pub heartbeat_secs: u64,
    /// How long a task may wait for its instance's agent before it is aborted; also how
    /// long an agent that was just seen counts as coming back.
    pub delivery_timeout_ms: i64,
    /// The most whole-output bytes kept per run.
    pub output_cap: u64,
    /// How long past a started run's timeout its agent may stay away before the run
    /// is ended as interrupted. Generous: a returning agent may hold the real result,
    /// which an early end would discard.
    pub lost_run_grace_ms: i64,
    /// Failed registrations and agent authentications allowed per source address
    /// before it is throttled (`oca_domain::throttle`).
    pub auth_failures: FailureLimits,
}

/// The default of [`DispatchConfig::auth_failures`]: 60 failures at once, then one
/// every half second (so a guesser makes at most two guesses a second, against
/// secrets of 40 and 48 random characters); room for dozens of deregistered agents
/// behind one NAT that keep retrying their dead tokens (every 30 s at most) without
/// throttling their live neighbours. 65,536 sources tracked at most (a few MB).
pub const DEFAULT_AUTH_FAILURES: FailureLimits = FailureLimits {
    burst: 60,
    forgive_ms: 500,
    max_sources: 65_536,
};

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            heartbeat_secs: 30,
            delivery_timeout_ms: 60_000,
            output_cap: 16 << 20,
            lost_run_grace_ms: 10 * 60 * 1000,
            auth_failures: DEFAULT_AUTH_FAILURES,
        }
    }
}

/// One live agent connection.
struct Conn {
    generation: u64,
    /// The agent's address (`None` in in-process tests), for the audit trail.
    peer: Option<std::net::SocketAddr>,
    tx: mpsc::UnboundedSender<ServerMsg>,
    instance: InstanceRecord,
    /// The instance's name now (ModifyManagedInstance renames it while connected), for
    /// `{{ACS::InstanceName}}`.
    name: RwLock<String>,
    last_heartbeat: AtomicI64,
    /// The heartbeat last written to the store.
    stored_heartbeat: AtomicI64,
    active_tasks: AtomicU32,
    /// Set when the server ends the connection, with why: the writer sends what is
    /// queued, then a Close frame, and the reader stops.
    closing: watch::Sender<Option<Ending>>,
}

/// Why the server ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A newer connection of the same instance replaced it.
    Replaced,
    /// The instance was deregistered.
    Deregistered,
    /// The instance's account was deleted.
    AccountDeleted,
    /// The agent sent a message past `oca_proto::limits::MAX_MESSAGE_BYTES`.
    TooBig,
    /// The server stops (and is, most likely, restarting).
    Restarting,
}

impl Conn {
    /// Ends the connection (the first reason given wins).
    fn end(&self, ending: Ending) {
        self.closing.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(ending);
            }
            first
        });
    }

    /// Whether the server has ended the connection.
    fn ended(&self) -> bool {
        self.closing.borrow().is_some()
    }

    /// Stores that the agent was seen at `at`, with what it says of itself (through the
    /// writer: group-committed).
    async fn record_seen(&self, d: &Dispatcher, at: i64) -> Result<(), String> {
        d.writer.seen(&self.instance, at).await
    }

    /// The task this agent runs for `invocation`, with the instance's current name.
    fn task(&self, invocation: &InvocationRecord, output_cap: u64) -> oca_proto::Task {
        let name = self.name.read().expect("instance name lock");
        if *name == self.instance.name {
            build_task(invocation, &self.instance, output_cap)
        } else {
            let renamed = InstanceRecord {
                name: name.clone(),
                ..self.instance.clone()
            };
            build_task(invocation, &renamed, output_cap)
        }
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    writer: writer::Writer,
    config: DispatchConfig,
    conns: RwLock<HashMap<String, Arc<Conn>>>,
    next_generation: AtomicU64,
    guard: guard::Guard,
    audit: AuditLog,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, config: DispatchConfig) -> Arc<Self> {
        Arc::new(Dispatcher {
            writer: writer::Writer::spawn(store.clone()),
            audit: AuditLog::spawn(store.clone()),
            store,
            guard: guard::Guard::new(config.auth_failures),
            config,
            conns: RwLock::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
        })
    }

    pub fn config(&self) -> &DispatchConfig {
        &self.config
    }

    /// The server stops: every agent is told (Close 1012, "reconnect after a short
    /// random pause"); results being stored are committed and acknowledged first; then
    /// whatever the writer still holds is committed. Waits at most `grace`.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let conns: Vec<Arc<Conn>> = self
            .conns
            .read()
            .expect("connection map lock")
            .values()
            .cloned()
            .collect();
        let told = conns.len();
        for c in &conns {
            c.end(Ending::Restarting);
        }
        while !self.conns.read().expect("connection map lock").is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let left = self.conns.read().expect("connection map lock").len();
        self.writer.flush(deadline).await;
        tracing::info!(
            agents = told,
            still_connected = left,
            "agents told the server stops"
        );
    }

    /// The audit trail's writer, shared with the API (`oca_store::audit`).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// How stale the stored heartbeat of a connected agent may get. While an agent is
    /// connected its live heartbeat is served from memory; the stored one matters only
    /// after it disconnects (when it is written at once) or after a server crash, when
    /// it decides whether new tasks wait for the agent to come back
    /// ([`Self::initial_state`]): so it stays well within the delivery timeout.
    fn heartbeat_store_interval_ms(&self) -> i64 {
        (self.config.delivery_timeout_ms / 2).min(60_000)
    }

    /// The agent endpoints: registration (its body capped at
    /// `oca_proto::limits::MAX_REGISTER_BODY`) and the WebSocket.
    pub fn routes(self: &Arc<Self>) -> Router {
        let register = post(register::register).layer(axum::extract::DefaultBodyLimit::max(
            oca_proto::limits::MAX_REGISTER_BODY,
        ));
        Router::new()
            .route(oca_proto::REGISTER_PATH, register)
            .route(oca_proto::CONNECT_PATH, get(connection::connect))
            .with_state(self.clone())
    }

    /// Lists a new connection of its instance; an older one is ended
    /// ([`Ending::Replaced`]): one instance has one live connection.
    fn install(&self, conn: Arc<Conn>) {
        let instance_id = conn.instance.instance_id.clone();
        let older = self
            .conns
            .write()
            .expect("connection map lock")
            .insert(instance_id.clone(), conn);
        if let Some(older) = older {
            older.end(Ending::Replaced);
            tracing::info!(instance = %instance_id, "an older connection of the instance replaced");
        }
    }

    /// Removes the connection from the map unless a newer one replaced it; whether it
    /// was the current one.
    fn forget_if_current(&self, instance_id: &str, generation: u64) -> bool {
        let mut conns = self.conns.write().expect("connection map lock");
        let current = conns.get(instance_id).map(|c| c.generation) == Some(generation);
        if current {
            conns.remove(instance_id);
        }
        current
    }

    /// Ends the instance's live connection, if any, for `ending`; the connection it
    /// ended.
    fn drop_conn(&self, instance_id: &str, ending: Ending) -> Option<Arc<Conn>> {
        let conn = self
            .conns
            .write()
            .expect("connection map lock")
            .remove(instance_id)?;
        conn.end(ending);
        tracing::info!(instance = %instance_id, ?ending, "connection dropped by the server");
        Some(conn)
    }

    fn conn(&self, instance_id: &str) -> Option<Arc<Conn>> {
        self.conns
            .read()
            .expect("connection map lock")
            .get(instance_id)
            .cloned()
    }

    /// Whether the instance's agent is connected now.
    pub fn is_connected(&self, instance_id: &str) -> bool {
        self.conn(instance_id).is_some()
    }

    /// The instances whose agent is connected now (every account's).
    pub fn connected_ids(&self) -> Vec<String> {
        self.conns
            .read()
            .expect("connection map lock")
            .keys()
            .cloned()
            .collect()
    }

    /// The agent's last heartbeat as the live connection saw it.
    pub fn live_heartbeat(&self, instance_id: &str) -> Option<Millis> {
        self.conn(instance_id)
            .map(|c| c.last_heartbeat.load(Ordering::Relaxed))
    }

    /// Tasks the agent said it is running at its last heartbeat.
    pub fn active_tasks(&self, instance_id: &str) -> u32 {
        self.conn(instance_id)
            .map(|c| c.active_tasks.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// How a new task for `instance` starts: waiting for delivery if its agent is
    /// connected or was seen within the delivery timeout (it is likely reconnecting),
    /// aborted with ClientNotRunning otherwise.
    pub fn initial_state(&self, instance: &InstanceRecord, now: Millis) -> TaskState {
        if self.is_connected(&instance.instance_id) {
            return TaskState::pending();
        }
        let recently_seen = instance
            .last_heartbeat
            .is_some_and(|t| now - t < self.config.delivery_timeout_ms);
        if recently_seen {
            TaskState::pending()
        } else {
            TaskState::failed_at_once(TaskError::ClientNotRunning, now)
        }
    }

    /// Pushes a stored task to its agent if connected. Returns whether it was sent;
    /// a task not sent now is sent when the agent connects.
    pub fn send_run(&self, invocation: &InvocationRecord, instance_id: &str) -> bool {
        match self.conn(instance_id) {
            Some(conn) => {
                let task = conn.task(invocation, self.config.output_cap);
                conn.tx.send(ServerMsg::Run(task)).is_ok()
            }
            None => false,
        }
    }

    /// Drops the instance's live connection, if any: its socket is closed (a Close
    /// frame follows whatever was already queued for it) and it is no longer
    /// connected. Returns whether it was. The caller has already made the instance's
    /// token invalid in the store (a connection that was being set up re-reads the
    /// instance once it is listed, so it cannot slip in after this).
    pub fn forget(&self, instance_id: &str) -> bool {
        self.drop_conn(instance_id, Ending::Deregistered).is_some()
    }

    /// Cuts off the live connections of deleted accounts' instances (accounts are
    /// deleted offline, by `oca accounts delete`, so the server learns of it here; a
    /// new connection of theirs is refused when it authenticates). Returns how many.
    pub async fn cut_deleted_accounts(&self) -> usize {
        let deleted: std::collections::HashSet<String> = match self.store.list_accounts().await {
            Ok(accounts) => accounts
                .into_iter()
                .filter(|a| a.deleted.is_some())
                .map(|a| a.account_id)
                .collect(),
            Err(e) => {
                tracing::warn!("sweeper could not read the accounts: {e}");
                return 0;
            }
        };
        if deleted.is_empty() {
            return 0;
        }
        let doomed: Vec<String> = self
            .conns
            .read()
            .expect("connection map lock")
            .iter()
            .filter(|(_, c)| deleted.contains(&c.instance.account_id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &doomed {
            if let Some(conn) = self.drop_conn(id, Ending::AccountDeleted) {
                tracing::warn!(instance = %id, "agent cut off: its account is deleted");
                let mut targets = Targets::default();
                targets.add(id);
                self.audit_cut_off(
                    &conn.instance.account_id,
                    conn.peer,
                    targets,
                    "AccountDeleted",
                    "",
                )
                .await;
            }
        }
        doomed.len()
    }

    /// After DeregisterManagedInstance (the instance is gone from the store): each of
    /// its live tasks ends (`Aborted`, `InstanceReleased`; a run under way is recorded
    /// `ExecutionInterrupted`), a connected agent is told to stop them (runs under way
    /// and schedules alike, so nothing the service started goes on on the host), and
    /// its connection is dropped ([`Self::forget`]).
    ///
    /// Recorded in the audit trail (`CutOffAgent`, `Deregistered`, with the instance and
    /// the invocations whose tasks it ended) under `request_id`, the deregistration's.
    pub async fn deregistered(&self, account_id: &str, instance_id: &str, request_id: &str) {
        use oca_domain::status::InvocationStatus as S;
        let live = match self.store.tasks_for_instance(instance_id, &S::LIVE).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(instance = %instance_id, "could not read the tasks of a deregistered instance: {e}");
                Vec::new()
            }
        };
        let conn = self.conn(instance_id);
        if let Some(conn) = &conn {
            for item in &live {
                let _ = conn.tx.send(ServerMsg::Stop {
                    invoke_id: item.task.invoke_id.clone(),
                });
            }
        }
        self.forget(instance_id);
        let mut targets = Targets::default();
        targets.add(instance_id);
        for item in &live {
            targets.add(&item.task.invoke_id);
        }
        let peer = conn.and_then(|c| c.peer);
        self.audit_cut_off(account_id, peer, targets, "Deregistered", request_id)
            .await;
        let now = now_millis();
        // One group commit for them all rather than one sync each.
        let ends = live.iter().map(|item| {
            let event = TaskEvent::Aborted {
                error: TaskError::InstanceReleased,
                at: now,
            };
            self.writer.event(&item.task.invoke_id, instance_id, event)
        });
        for (item, ended) in live.iter().zip(futures_util::future::join_all(ends).await) {
            if let Err(e) = ended {
                tracing::warn!(invoke_id = %item.task.invoke_id, instance = %instance_id, "could not end the task of a deregistered instance: {e}");
            }
        }
    }

    /// Records that an instance's agent was cut off (its address: where it was
    /// connected from, empty when it was not connected).
    async fn audit_cut_off(
        &self,
        account_id: &str,
        peer: Option<std::net::SocketAddr>,
        targets: Targets,
        why: &str,
        request_id: &str,
    ) {
        self.audit
            .record(AuditRecord {
                at: now_millis(),
                account_id: account_id.to_string(),
                access_key_id: String::new(),
                source: peer.map(|p| audit_ip(p.ip())).unwrap_or_default(),
                action: "CutOffAgent".to_string(),
                targets: targets.ids,
                omitted: targets.omitted,
                result: why.to_string(),
                http_status: 0,
                request_id: request_id.to_string(),
                authenticated: true,
            })
            .await;
    }

    /// After ModifyManagedInstance: a connected agent's next tasks carry the new name
    /// in `{{ACS::InstanceName}}`.
    pub fn renamed(&self, instance_id: &str, name: &str) {
        if let Some(conn) = self.conn(instance_id) {
            *conn.name.write().expect("instance name lock") = name.to_string();
        }
    }

    /// Asks the agent to stop a task, if connected; otherwise the stop is sent when it
    /// connects (the task stays `Stopping`).
    pub fn send_stop(&self, invoke_id: &str, instance_id: &str) {
        if let Some(conn) = self.conn(instance_id) {
            let _ = conn.tx.send(ServerMsg::Stop {
                invoke_id: invoke_id.to_string(),
            });
        }
    }

    /// Ends tasks that waited for delivery longer than the delivery timeout.
    pub async fn sweep_once(&self) {
        let now = now_millis();
        let before = now - self.config.delivery_timeout_ms;
        let stale = match self.store.pending_tasks_before(before, 1000).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("sweeper could not read pending tasks: {e}");
                return;
            }
        };
        for task in stale {
            let error = if self.is_connected(&task.instance_id) {
                TaskError::DeliveryTimeout
            } else {
                TaskError::ClientNotRunning
            };
            let event = TaskEvent::Aborted { error, at: now };
            if let Err(e) = self
                .store
                .apply_task_event(&task.invoke_id, &task.instance_id, event)
                .await
            {
                tracing::warn!("sweeper could not abort {}: {e}", task.invoke_id);
            }
        }
    }

    /// Ends started runs whose agent has been away since their timeout plus the grace:
    /// they are interrupted (`ExecutionInterrupted`) rather than left Running forever.
    /// Runs whose agent is connected are left to it: it enforces the timeout itself.
    pub async fn sweep_lost_runs(&self) {
        let now = now_millis();
        let overdue = match self
            .store
            .overdue_tasks(now, self.config.lost_run_grace_ms, 1000)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("sweeper could not read started tasks: {e}");
                return;
            }
        };
        for task in overdue
            .iter()
            .filter(|t| !self.is_connected(&t.instance_id))
        {
            let event = TaskEvent::Aborted {
                error: TaskError::ExecutionInterrupted,
                at: now,
            };
            tracing::warn!(invoke_id = %task.invoke_id, instance = %task.instance_id, "run lost with its agent");
            if let Err(e) = self
                .writer
                .event(&task.invoke_id, &task.instance_id, event)
                .await
            {
                tracing::warn!("sweeper could not end {}: {e}", task.invoke_id);
            }
        }
    }

    /// Runs [`Self::sweep_once`] in the background, several times per timeout.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let period =
            Duration::from_millis((self.config.delivery_timeout_ms / 4).clamp(200, 5000) as u64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.sweep_once().await;
                this.sweep_lost_runs().await;
                this.cut_deleted_accounts().await;
            }
        })
    }
}
