//! Group commit for what agents report.
//!
//! Every connection hands its task events and output chunks to one writer task, which
//! commits whatever has queued up in a single transaction (`Store::apply_batch`), then
//! answers each caller. While one commit syncs to disk the next batch gathers, so under
//! load thousands of results share one sync, and an idle server commits a lone event
//! at once (no timer, no added latency). Callers still see their own write's outcome
//! and acknowledge an agent only after its result is durable.

use oca_domain::task::TaskEvent;
use oca_store::{OutputAppend, Store, TaskRecord, WriteOp, WriteOutcome};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most writes one transaction takes, so one commit never holds the lock for long.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<WriteOutcome, String>>;

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<(WriteOp, Reply)>,
    /// Writes handed over and not yet answered.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Writer {
    /// Starts the writer task.
    pub fn spawn(store: Arc<dyn Store>) -> Writer {
        let (tx, mut rx) = mpsc::unbounded_channel::<(WriteOp, Reply)>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = batch.drain(..).unzip();
                match store.apply_batch(ops).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(msg.clone()));
                        }
                    }
                }
            }
        });
        Writer {
            tx,
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, String> {
        use std::sync::atomic::Ordering;
        let (reply, answer) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.send((op, reply));
        let outcome = match sent {
            Ok(()) => answer
                .await
                .map_err(|_| "the writer has stopped".to_string())
                .and_then(|r| r),
            Err(_) => Err("the writer has stopped".to_string()),
        };
        self.pending.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    /// Waits until every write handed over so far is committed and answered (or
    /// `deadline` passes).
    pub async fn flush(&self, deadline: tokio::time::Instant) {
        while self.pending.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// `Store::apply_task_event`, committed with whatever else is waiting.
    pub async fn event(
        &self,
        invoke_id: &str,
        instance_id: &str,
        event: TaskEvent,
    ) -> Result<Option<TaskRecord>, String> {
        let op = WriteOp::Event {
            invoke_id: invoke_id.to_string(),
            instance_id: instance_id.to_string(),
            event,
        };
        match self.submit(op).await? {
            WriteOutcome::Task(t) => Ok(t),
            _ => Err("the store answered an event with something else".into()),
        }
    }

    /// `Store::append_output`, committed with whatever else is waiting.
    pub async fn output(
        &self,
        invoke_id: &str,
        instance_id: &str,
        offset: u64,
        data: Vec<u8>,
        cap: u64,
    ) -> Result<OutputAppend, String> {
        let op = WriteOp::Output {
            invoke_id: invoke_id.to_string(),
            instance_id: instance_id.to_string(),
            offset,
            data,
            cap,
        };
        match self.submit(op).await? {
            WriteOutcome::Output(a) => Ok(a),
            _ => Err("the store answered an append with something else".into()),
        }
    }

    /// `Store::touch_instance`, committed with whatever else is waiting: thousands of
    /// agents connecting at once (a server restart) share a few syncs.
    pub async fn seen(&self, instance: &oca_store::InstanceRecord, at: i64) -> Result<(), String> {
        let op = WriteOp::Seen {
            instance_id: instance.instance_id.clone(),
            at,
            agent_version: instance.agent_version.clone(),
            hostname: instance.hostname.clone(),
            os_type: instance.os_type.clone(),
            task_isolation: instance.task_isolation.clone(),
        };
        self.submit(op).await.map(|_| ())
    }
}
