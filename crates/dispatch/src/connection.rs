//! One agent's WebSocket, top to bottom: authenticate, wait for `Hello`, reconcile
//! what the agent knows with what the store says, then serve messages until the
//! socket closes.

use crate::register::{digest, digests_equal};
use crate::{Conn, Dispatcher};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use oca_domain::status::InvocationStatus as S;
use oca_domain::task::TaskEvent;
use oca_domain::task_error::TaskError;
use oca_domain::time::now_millis;
use oca_proto::{AgentMsg, KnownTask, ServerMsg, TaskResult};
use oca_store::InstanceRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub async fn connect(
    State(d): State<Arc<Dispatcher>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let instance = match authenticate(&d, &headers).await {
        Some(i) => i,
        None => return (StatusCode::UNAUTHORIZED, "invalid agent credentials").into_response(),
    };
    // Buffers sized for thousands of idle agents per server: tungstenite's defaults
    // (128 KiB each way per socket) would cost more than a gigabyte at 10,000 agents.
    // Larger messages still arrive whole; the read buffer grows for them. Every
    // message is flushed as it is sent, so no write buffering is lost.
    ws.max_message_size(64 << 20)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(d, instance, socket))
}

async fn authenticate(d: &Dispatcher, headers: &HeaderMap) -> Option<InstanceRecord> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (instance_id, token) = value.strip_prefix("Bearer ")?.split_once(':')?;
    let instance = d.store.get_instance(instance_id).await.ok()??;
    digests_equal(&instance.token_hash, &digest(token)).then_some(instance)
}

async fn serve(d: Arc<Dispatcher>, instance: InstanceRecord, socket: WebSocket) {
    let instance_id = instance.instance_id.clone();
    let (mut sink, mut stream) = socket.split();
    let heartbeat = Duration::from_secs(d.config.heartbeat_secs.max(1));
    // An agent that says nothing for three heartbeats is gone.
    let silence_limit = heartbeat * 3;

    // 1. Hello.
    let hello = match tokio::time::timeout(silence_limit, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<AgentMsg>(&t).ok(),
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
    let task_isolation = stored_isolation(task_isolation);
    let now = now_millis();
    if let Err(e) = d
        .store
        .touch_instance(
            &instance_id,
            now,
            &agent_version,
            &hostname,
            &os_type,
            &task_isolation,
        )
        .await
    {
        tracing::error!(instance = %instance_id, "could not record the agent: {e}");
        return;
    }

    // 2. Register the connection; a newer connection replaces an older one.
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
    let generation = d.next_generation.fetch_add(1, Ordering::Relaxed);
    let (closing, mut closing_rx) = watch::channel(false);
    let conn = Arc::new(Conn {
        generation,
        tx: tx.clone(),
        name: RwLock::new(instance.name.clone()),
        instance: InstanceRecord {
            last_heartbeat: Some(now),
            agent_version,
            hostname,
            os_type,
            task_isolation,
            ..instance
        },
        last_heartbeat: AtomicI64::new(now),
        stored_heartbeat: AtomicI64::new(now),
        active_tasks: AtomicU32::new(0),
        closing,
    });
    d.conns
        .write()
        .expect("connection map lock")
        .insert(instance_id.clone(), conn.clone());
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
            forget_if_current(&d, &instance_id, generation);
            let _ = sink.send(deregistered_close()).await;
            tracing::info!(instance = %instance_id, "agent refused: the instance is deregistered");
            return;
        }
    }
    tracing::info!(instance = %instance_id, "agent connected");

    let _ = tx.send(ServerMsg::Welcome {
        instance_id: instance_id.clone(),
        heartbeat_secs: d.config.heartbeat_secs,
        server_time: now,
    });
    reconcile(&d, &conn, &known).await;

    // 3. Writer: everything for this agent goes through the channel.
    let mut writer_closing = closing_rx.clone();
    let mut writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = closed(&mut writer_closing) => {
                    // Dropped by the server: what is queued (stops) goes first.
                    while let Ok(msg) = rx.try_recv() {
                        if sink.send(Message::Text(msg.to_json().into())).await.is_err() {
                            return;
                        }
                    }
                    let _ = sink.send(deregistered_close()).await;
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
    let mut dropped = false;
    loop {
        let next = tokio::select! {
            biased;
            _ = closed(&mut closing_rx) => {
                dropped = true;
                break;
            }
            next = tokio::time::timeout(silence_limit, stream.next()) => next,
        };
        let msg = match next {
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => continue, // pings and pongs are answered by the library
            Err(_) => {
                tracing::warn!(instance = %instance_id, "agent silent for too long");
                break;
            }
        };
        match serde_json::from_str::<AgentMsg>(&msg) {
            Ok(m) => handle(&d, &conn, m).await,
            Err(e) => tracing::warn!(instance = %instance_id, "bad message from agent: {e}"),
        }
    }

    // 5. Gone: forget the connection unless a newer one replaced it.
    forget_if_current(&d, &instance_id, generation);
    if dropped {
        // Let the writer flush the stops and the Close frame.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
    }
    writer.abort();
    let last = conn.last_heartbeat.load(Ordering::Relaxed);
    let i = &conn.instance;
    let _ = d
        .store
        .touch_instance(
            &instance_id,
            last,
            &i.agent_version,
            &i.hostname,
            &i.os_type,
            &i.task_isolation,
        )
        .await;
    tracing::info!(instance = %instance_id, "agent disconnected");
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

/// Removes the connection from the map unless a newer one replaced it.
fn forget_if_current(d: &Dispatcher, instance_id: &str, generation: u64) {
    let mut conns = d.conns.write().expect("connection map lock");
    if conns.get(instance_id).map(|c| c.generation) == Some(generation) {
        conns.remove(instance_id);
    }
}

/// Resolves once the server drops the connection ([`Dispatcher::forget`]).
async fn closed(closing: &mut watch::Receiver<bool>) {
    // An error means the connection itself is gone: closed too.
    let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
}

/// The Close frame of a connection the server drops: the instance was deregistered
/// (policy violation: its credentials are no longer valid).
fn deregistered_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::POLICY,
        reason: "the instance is deregistered".into(),
    }))
}

/// Brings the agent and the store into agreement after a (re)connect.
async fn reconcile(d: &Dispatcher, conn: &Conn, known: &[KnownTask]) {
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
            S::Running | S::Stopping if !agent_has_it => {
                // The agent lost the run (its state was wiped, or it died before
                // spooling): the run is interrupted.
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
            let i = &conn.instance;
            if let Err(e) = d
                .store
                .touch_instance(
                    instance_id,
                    now,
                    &i.agent_version,
                    &i.hostname,
                    &i.os_type,
                    &i.task_isolation,
                )
                .await
            {
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
    let run = result.run;
    let event = if run == 0 {
        TaskEvent::Finished {
            status: result.status,
            exit_code: result.exit_code,
            error: result.error,
            start_time: result.start_time,
            finish_time: result.finish_time,
            output,
            dropped: result.dropped,
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
            dropped: result.dropped,
        }
    };
    match d.writer.event(&invoke_id, instance_id, event).await {
        Ok(_) => {
            let _ = conn.tx.send(ServerMsg::Ack { invoke_id, run });
        }
        Err(e) => tracing::warn!(instance = %instance_id, "result not stored: {e}"),
    }
}
