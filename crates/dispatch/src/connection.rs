//! One agent's WebSocket, top to bottom: authenticate, wait for `Hello`, list the
//! connection (ending an older one of the instance), reconcile what the agent knows
//! with what the store says, then serve messages until the socket closes.
//!
//! A connection the server ends ([`Ending`]: replaced by a newer one, deregistered,
//! account deleted, message too big) stops reading at once (what it has not read is
//! never handled), sends what was queued for it and a Close frame, and leaves the
//! instance's record to whichever connection is current.

use crate::register::{digest, digests_equal};
use crate::{limits, Conn, Dispatcher, Ending};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use oca_domain::status::InvocationStatus as S;
use oca_domain::task::TaskEvent;
use oca_domain::task_error::TaskError;
use oca_domain::time::now_millis;
use oca_proto::limits::{
    MAX_AGENT_VERSION, MAX_HOSTNAME, MAX_ID, MAX_KNOWN_TASKS, MAX_MESSAGE_BYTES, MAX_OS_TYPE,
};
use oca_proto::{AgentMsg, KnownTask, ServerMsg, TaskResult};
use oca_store::InstanceRecord;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub async fn connect(
    State(d): State<Arc<Dispatcher>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    // A throttled address is refused before its credentials are even looked at.
    if let Some(answer) = d.guard.refusal(peer) {
        return answer;
    }
    let instance = match authenticate(&d, &headers).await {
        Authenticated::Yes(i) => i,
        Authenticated::No => {
            d.guard.failed(peer);
            return (StatusCode::UNAUTHORIZED, "invalid agent credentials").into_response();
        }
        Authenticated::AccountDeleted(i) => {
            tracing::warn!(instance = %i.instance_id, account = %i.account_id, "agent refused: its account is deleted");
            return (
                StatusCode::UNAUTHORIZED,
                "the instance's account is deleted",
            )
                .into_response();
        }
        Authenticated::Unknown(e) => {
            // Not a refusal: the agent must not take it for one (and drop its work).
            tracing::error!("could not authenticate an agent: {e}");
            return (StatusCode::SERVICE_UNAVAILABLE, "storage error").into_response();
        }
    };
    // Buffers sized for thousands of idle agents per server: tungstenite's defaults
    // (128 KiB each way per socket) would cost more than a gigabyte at 10,000 agents.
    // Larger messages still arrive whole, up to the limit; the read buffer grows for
    // them. A frame announcing more than the limit ends the connection as its header
    // arrives, a message gathered from frames as soon as it passes the limit: the
    // server never holds more than the limit for a host. Every message is flushed as
    // it is sent, so no write buffering is lost.
    ws.max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(d, instance, peer, socket))
}

enum Authenticated {
    Yes(InstanceRecord),
    /// No such instance, or not its token: counts as a failure.
    No,
    /// The right token of an instance whose account was deleted: refused, not counted.
    AccountDeleted(InstanceRecord),
    /// The store could not say.
    Unknown(String),
}

async fn authenticate(d: &Dispatcher, headers: &HeaderMap) -> Authenticated {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|v| v.split_once(':'));
    let Some((instance_id, token)) = credentials else {
        return Authenticated::No;
    };
    if instance_id.len() > MAX_ID {
        return Authenticated::No;
    }
    let instance = match d.store.get_instance(instance_id).await {
        Ok(Some(i)) => i,
        Ok(None) => return Authenticated::No,
        Err(e) => return Authenticated::Unknown(e.to_string()),
    };
    if !digests_equal(&instance.token_hash, &digest(token)) {
        return Authenticated::No;
    }
    // A disabled account's agents still connect: disabling is undone by enabling, and
    // meanwhile they report what they already run. A deleted account's never do.
    match d.store.get_account(&instance.account_id).await {
        Ok(Some(a)) if a.deleted.is_some() => Authenticated::AccountDeleted(instance),
        Ok(_) => Authenticated::Yes(instance),
        Err(e) => Authenticated::Unknown(e.to_string()),
    }
}

/// What `Hello` says, held to the limits.
struct Hello {
    agent_version: String,
    hostname: String,
    os_type: String,
    known: Vec<KnownTask>,
    /// False when the agent listed more than [`MAX_KNOWN_TASKS`]: the server then does
    /// not know all it holds.
    complete: bool,
}

impl Hello {
    fn bounded(
        instance_id: &str,
        agent_version: String,
        hostname: String,
        os_type: String,
        mut known: Vec<KnownTask>,
    ) -> Hello {
        let (agent_version, a) = limits::cut(agent_version, MAX_AGENT_VERSION);
        let (hostname, b) = limits::cut(hostname, MAX_HOSTNAME);
        let (os_type, c) = limits::cut(os_type, MAX_OS_TYPE);
        if a || b || c {
            tracing::warn!(instance = %instance_id, "Hello: fields past their limits were cut");
        }
        let complete = known.len() <= MAX_KNOWN_TASKS;
        if !complete {
            tracing::warn!(instance = %instance_id, listed = known.len(), "Hello: more known tasks than the limit; the rest are ignored");
            known.truncate(MAX_KNOWN_TASKS);
        }
        known.retain(|k| k.invoke_id.len() <= MAX_ID);
        Hello {
            agent_version,
            hostname,
            os_type,
            known,
            complete,
        }
    }
}

/// Whether a read failed because the agent sent more than the limit (tungstenite's
/// capacity error; the connection ends either way, this only names why).
fn too_big(e: &axum::Error) -> bool {
    e.to_string().contains("Message too long")
}

async fn serve(
    d: Arc<Dispatcher>,
    instance: InstanceRecord,
    peer: Option<SocketAddr>,
    socket: WebSocket,
) {
    let instance_id = instance.instance_id.clone();
    let (mut sink, mut stream) = socket.split();
    let heartbeat = Duration::from_secs(d.config.heartbeat_secs.max(1));
    // An agent that says nothing for three heartbeats is gone.
    let silence_limit = heartbeat * 3;

    // 1. Hello.
    let hello = match tokio::time::timeout(silence_limit, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<AgentMsg>(&t).ok(),
        Ok(Some(Err(e))) if too_big(&e) => {
            tracing::warn!(instance = %instance_id, "agent disconnected: {e}");
            let _ = sink.send(close_frame(Ending::TooBig)).await;
            return;
        }
        _ => None,
    };
    let Some(AgentMsg::Hello {
        agent_version,
        hostname,
        os_type,
        known,
        task_isolation,
        ..
    }) = hello
    else {
        tracing::warn!(instance = %instance_id, "agent did not say hello");
        return;
    };
    let hello = Hello::bounded(&instance_id, agent_version, hostname, os_type, known);
    let task_isolation = stored_isolation(task_isolation);
    let now = now_millis();

    // 2. List the connection; it replaces (and ends) an older one of the instance.
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
    let generation = d.next_generation.fetch_add(1, Ordering::Relaxed);
    let (closing, mut closing_rx) = watch::channel(None);
    let conn = Arc::new(Conn {
        generation,
        peer,
        tx: tx.clone(),
        name: RwLock::new(instance.name.clone()),
        instance: InstanceRecord {
            last_heartbeat: Some(now),
            agent_version: hello.agent_version,
            hostname: hello.hostname,
            os_type: hello.os_type,
            task_isolation,
            ..instance
        },
        last_heartbeat: AtomicI64::new(now),
        stored_heartbeat: AtomicI64::new(now),
        active_tasks: AtomicU32::new(0),
        closing,
    });
    d.install(conn.clone());
    // The instance may have been deregistered (or renamed) since it authenticated.
    // Read again now that the connection is listed: a deregistration that committed
    // before this read is seen here, one that commits after it finds the connection
    // listed and drops it (`Dispatcher::forget`).
    match d.store.get_instance(&instance_id).await {
        Ok(Some(current)) => *conn.name.write().expect("instance name lock") = current.name,
        found => {
            if let Err(e) = found {
                tracing::error!(instance = %instance_id, "could not read the instance: {e}");
            }
            d.forget_if_current(&instance_id, generation);
            let _ = sink.send(close_frame(Ending::Deregistered)).await;
            tracing::info!(instance = %instance_id, "agent refused: the instance is deregistered");
            return;
        }
    }
    // What the agent says of itself, unless a newer connection already took over.
    let recorded = if conn.ended() {
        Ok(())
    } else {
        conn.record_seen(&d, now).await
    };
    if let Err(e) = recorded {
        tracing::error!(instance = %instance_id, "could not record the agent: {e}");
        d.forget_if_current(&instance_id, generation);
        return;
    }
    tracing::info!(instance = %instance_id, "agent connected");

    let _ = tx.send(ServerMsg::Welcome {
        instance_id: instance_id.clone(),
        heartbeat_secs: d.config.heartbeat_secs,
        server_time: now,
    });
    reconcile(&d, &conn, &hello.known, hello.complete).await;

    // 3. Writer: everything for this agent goes through the channel.
    let mut writer_closing = closing_rx.clone();
    let mut writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                ending = ended(&mut writer_closing) => {
                    // Ended by the server: what is queued (stops) goes first.
                    while let Ok(msg) = rx.try_recv() {
                        if sink.send(Message::Text(msg.to_json().into())).await.is_err() {
                            return;
                        }
                    }
                    let _ = sink.send(close_frame(ending)).await;
                    break;
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    if sink
                        .send(Message::Text(msg.to_json().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });

    // 4. Reader.
    loop {
        let next = tokio::select! {
            biased;
            _ = ended(&mut closing_rx) => break,
            next = tokio::time::timeout(silence_limit, stream.next()) => next,
        };
        let msg = match next {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Err(e))) => {
                if too_big(&e) {
                    tracing::warn!(instance = %instance_id, "agent disconnected: {e}");
                    conn.end(Ending::TooBig);
                }
                break;
            }
            Ok(Some(Ok(_))) => continue, // pings and pongs are answered by the library
            Err(_) => {
                tracing::warn!(instance = %instance_id, "agent silent for too long");
                break;
            }
        };
        let msg = match serde_json::from_str::<AgentMsg>(&msg) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(instance = %instance_id, "bad message from agent: {e}");
                continue;
            }
        };
        if limits::invoke_id(&msg).is_some_and(|id| id.len() > MAX_ID) {
            tracing::warn!(instance = %instance_id, "message about an invoke id past the limit: ignored");
            continue;
        }
        handle(&d, &conn, msg).await;
    }

    // 5. Gone: forget the connection unless a newer one replaced it; only the current
    // one records the agent's last heartbeat.
    let current = d.forget_if_current(&instance_id, generation);
    if conn.ended() {
        // Let the writer flush the stops and the Close frame.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
    }
    writer.abort();
    if current {
        let last = conn.last_heartbeat.load(Ordering::Relaxed);
        let _ = conn.record_seen(&d, last).await;
    }
    tracing::info!(instance = %instance_id, "agent disconnected");
}

/// Resolves once the server ends the connection, with why.
async fn ended(closing: &mut watch::Receiver<Option<Ending>>) -> Ending {
    match closing.wait_for(Option::is_some).await {
        Ok(ending) => ending.unwrap_or(Ending::Deregistered),
        // The connection itself is gone: as good as ended.
        Err(_) => Ending::Deregistered,
    }
}

/// What an agent said of its task isolation, as stored: a short word (`cgroup`,
/// `process-tree`, or what a later agent calls its method), else nothing.
fn stored_isolation(said: String) -> String {
    let word = said.len() <= 32
        && said
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if word {
        said
    } else {
        String::new()
    }
}

/// The Close frame of a connection the server ends.
fn close_frame(ending: Ending) -> Message {
    let (code, reason) = match ending {
        Ending::Replaced => (
            oca_proto::CLOSE_REPLACED,
            "replaced by a newer connection of the instance",
        ),
        Ending::Deregistered => (oca_proto::CLOSE_GONE, "the instance is deregistered"),
        Ending::AccountDeleted => (oca_proto::CLOSE_GONE, "the instance's account is deleted"),
        Ending::TooBig => (oca_proto::CLOSE_TOO_BIG, "message too big"),
        Ending::Restarting => (
            oca_proto::CLOSE_RESTARTING,
            "the server is restarting: reconnect after a short random pause",
        ),
    };
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Brings the agent and the store into agreement after a (re)connect. When `known` is
/// not `complete` (the agent listed more than the limit), a run the agent did not list
/// is not taken for lost.
async fn reconcile(d: &Dispatcher, conn: &Conn, known: &[KnownTask], complete: bool) {
    let instance_id = &conn.instance.instance_id;
    // What the agent has of each task: a result waiting for its ack, a run going on,
    // and, for a repeating task it keeps, the revision of its schedule.
    let mut running: HashMap<&str, bool> = HashMap::new();
    let mut schedules: HashMap<&str, u64> = HashMap::new();
    for k in known {
        *running.entry(k.invoke_id.as_str()).or_default() |= !k.finished;
        if let Some(revision) = k.repeating {
            schedules.insert(k.invoke_id.as_str(), revision);
        }
    }
    let live = match d.store.tasks_for_instance(instance_id, &S::LIVE).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(instance = %instance_id, "could not read tasks: {e}");
            return;
        }
    };
    let now = now_millis();
    let mut live_ids = std::collections::HashSet::new();
    let send_run = |item: &oca_store::DispatchItem| {
        let task = conn.task(&item.invocation, d.config.output_cap);
        let _ = conn.tx.send(ServerMsg::Run(task));
    };
    let stop = |invoke_id: &str| {
        let _ = conn.tx.send(ServerMsg::Stop {
            invoke_id: invoke_id.to_string(),
        });
    };
    for item in live {
        let invoke_id = item.task.invoke_id.as_str();
        live_ids.insert(invoke_id.to_string());
        let status = item.task.state.status;
        if item.invocation.repeat().repeats() {
            match schedules.get(invoke_id) {
                _ if status == S::Stopping => stop(invoke_id),
                // A stale schedule (modified while the agent was away) is replaced.
                Some(&revision) if revision < item.invocation.revision => send_run(&item),
                Some(_) => {}
                // The agent lost it (its state was wiped): give it the schedule again.
                None => send_run(&item),
            }
            continue;
        }
        let agent_has_it = running.contains_key(invoke_id);
        match status {
            S::Pending if !agent_has_it => send_run(&item),
            S::Running | S::Stopping if !agent_has_it && !complete => {}
            S::Running | S::Stopping if !agent_has_it => {
                // The agent lost the run (its state was wiped, or it died before
                // spooling): the run is interrupted, unless a newer connection has
                // taken over meanwhile (its own Hello decides).
                if conn.ended() {
                    return;
                }
                let event = TaskEvent::Aborted {
                    error: TaskError::ExecutionInterrupted,
                    at: now,
                };
                let _ = d.writer.event(invoke_id, instance_id, event).await;
            }
            S::Stopping => stop(invoke_id),
            _ => {}
        }
    }
    // Tasks the agent runs or keeps on its schedule that the store has already ended
    // (stopped while the agent was away): stop them.
    for (invoke_id, busy) in running {
        if (busy || schedules.contains_key(invoke_id)) && !live_ids.contains(invoke_id) {
            stop(invoke_id);
        }
    }
}

async fn handle(d: &Dispatcher, conn: &Conn, msg: AgentMsg) {
    // An ended connection (replaced by a newer one, above all) changes nothing more.
    if conn.ended() {
        return;
    }
    let instance_id = conn.instance.instance_id.as_str();
    match msg {
        AgentMsg::Hello { .. } => {}
        AgentMsg::Heartbeat { active_tasks } => {
            let now = now_millis();
            conn.last_heartbeat.store(now, Ordering::Relaxed);
            conn.active_tasks.store(active_tasks, Ordering::Relaxed);
            let stored = conn.stored_heartbeat.load(Ordering::Relaxed);
            if now - stored < d.heartbeat_store_interval_ms() {
                return;
            }
            conn.stored_heartbeat.store(now, Ordering::Relaxed);
            if let Err(e) = conn.record_seen(d, now).await {
                tracing::warn!(instance = %instance_id, "heartbeat not stored: {e}");
            }
        }
        AgentMsg::Started {
            invoke_id,
            start_time,
            run,
        } => {
            let event = if run == 0 {
                TaskEvent::Started { at: start_time }
            } else {
                TaskEvent::RunStarted {
                    run,
                    at: start_time,
                }
            };
            match d.writer.event(&invoke_id, instance_id, event).await {
                Ok(Some(task)) if task.state.status.is_stopped() => {
                    // Stopped before it started here: end it.
                    let _ = conn.tx.send(ServerMsg::Stop { invoke_id });
                }
                Ok(Some(task)) if task.state.status == S::Stopping => {
                    let _ = conn.tx.send(ServerMsg::Stop { invoke_id });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(instance = %instance_id, "start not stored: {e}"),
            }
        }
        AgentMsg::Output {
            invoke_id,
            offset,
            data,
        } => {
            let Some(bytes) = oca_domain::command::decode_base64(&data) else {
                tracing::warn!(instance = %instance_id, "output chunk is not Base64");
                return;
            };
            match d
                .writer
                .output(&invoke_id, instance_id, offset, bytes, d.config.output_cap)
                .await
            {
                Ok(a) if a.gap => {
                    let _ = conn.tx.send(ServerMsg::Resend {
                        invoke_id,
                        offset: a.stored_len,
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(instance = %instance_id, "output not stored: {e}"),
            }
        }
        AgentMsg::Finished(result) => finish(d, conn, result).await,
        AgentMsg::Scheduled { invoke_id, .. } => {
            match d
                .writer
                .event(&invoke_id, instance_id, TaskEvent::Scheduled)
                .await
            {
                // Ended while the agent was taking it on (stopped, or not known here):
                // the agent drops the schedule.
                Ok(Some(task)) if task.state.status.is_terminal() => {
                    let _ = conn.tx.send(ServerMsg::Stop { invoke_id });
                }
                Ok(None) => {
                    let _ = conn.tx.send(ServerMsg::Stop { invoke_id });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(instance = %instance_id, "schedule not stored: {e}"),
            }
        }
    }
}

async fn finish(d: &Dispatcher, conn: &Conn, result: TaskResult) {
    let instance_id = conn.instance.instance_id.as_str();
    let invoke_id = result.invoke_id.clone();
    // All of the output must be stored before the result is: ask again for what is
    // missing (chunks lost with a dropped connection).
    let expected = result.output_len.min(d.config.output_cap);
    if expected > 0 && result.run == 0 {
        match d.store.get_task(&invoke_id, instance_id).await {
            Ok(Some(task)) if task.output_len < expected && !task.state.status.is_terminal() => {
                let _ = conn.tx.send(ServerMsg::Resend {
                    invoke_id,
                    offset: task.output_len,
                });
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(instance = %instance_id, "result not stored: {e}");
                return;
            }
        }
    }
    let output = oca_domain::command::decode_base64(&result.output).unwrap_or_default();
    let (output, dropped) = limits::view(output, result.dropped);
    let run = result.run;
    let event = if run == 0 {
        TaskEvent::Finished {
            status: result.status,
            exit_code: result.exit_code,
            error: result.error,
            start_time: result.start_time,
            finish_time: result.finish_time,
            output,
            dropped,
        }
    } else {
        TaskEvent::RunFinished {
            run,
            more: result.more,
            status: result.status,
            exit_code: result.exit_code,
            error: result.error,
            start_time: result.start_time,
            finish_time: result.finish_time,
            output,
            dropped,
        }
    };
    match d.writer.event(&invoke_id, instance_id, event).await {
        Ok(_) => {
            let _ = conn.tx.send(ServerMsg::Ack { invoke_id, run });
        }
        Err(e) => tracing::warn!(instance = %instance_id, "result not stored: {e}"),
    }
}
