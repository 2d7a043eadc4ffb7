//! Group commit for what agents report.
//!
//! Every connection hands its task events and output chunks to one writer task, which
//! commits whatever has queued up in a single transaction (`Store::apply_batch`), then
//! answers each caller. While one commit syncs to disk the next batch gathers, so under
//! load thousands of results share one sync, and an idle server commits a lone event
//! at once (no timer, no added latency). Callers still see their own write's outcome
//! and acknowledge an agent only after its result is durable.

use oca_domain::task::TaskEvent;
use oca_metrics::Metrics;
use oca_store::{OutputAppend, Store, TaskRecord, WriteOp, WriteOutcome};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The most writes one transaction takes, so one commit never holds the lock for long.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<WriteOutcome, String>>;

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<(WriteOp, Reply)>,
}

impl Writer {
    /// Starts the writer task; each commit's size and time go to `metrics`
    /// (`oca_writer_batch_size`, `oca_writer_commit_seconds`).
    pub fn spawn(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Writer {
        let (tx, mut rx) = mpsc::unbounded_channel::<(WriteOp, Reply)>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = batch.drain(..).unzip();
                let (writes, started) = (ops.len(), Instant::now());
                let committed = store.apply_batch(ops).await;
                metrics.writer_commit(writes, started.elapsed(), committed.is_ok());
                match committed {
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
        Writer { tx }
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((op, reply))
            .map_err(|_| "the writer has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the writer has stopped".to_string())?
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
            WriteOutcome::Output(_) => Err("the store answered an event with an append".into()),
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
            WriteOutcome::Task(_) => Err("the store answered an append with an event".into()),
        }
    }
}
