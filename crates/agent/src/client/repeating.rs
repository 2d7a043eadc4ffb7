//! The agent's side of repeating tasks: the schedule it keeps (see
//! [`crate::schedule`]), the timers, and each run started and ended.

use super::{send, Agent, Entry, Event, Sink};
use crate::schedule::{self, Kept, Next};
use crate::spool::TaskFile;
use chrono::{DateTime, Utc};
use oca_domain::task_error::TaskError;
use oca_domain::time::now_millis;
use oca_proto::{AgentMsg, Task, TaskResult};
use std::time::Duration;
use tokio::time::Instant;

/// A repeating task on the schedule, with its timer.
pub(super) struct Armed {
    pub(super) kept: Kept,
    /// When it fires next (Period); `None`: not on a clock, or waiting for its current
    /// run to end.
    pub(super) next: Option<DateTime<Utc>>,
}

/// Why a repeating task runs.
pub(super) enum Firing {
    /// Its slot came (Period).
    Slot(DateTime<Utc>),
    /// The agent started on another boot (reboot modes).
    Boot,
}

impl Agent {
    /// A run of a repeating task ended: a task whose last run it was is forgotten; one
    /// whose due time waited for the run to end is armed again.
    pub(super) fn after_run(&mut self, invoke_id: &str, run: u64) {
        match self.schedules.get(invoke_id) {
            Some(a) if a.kept.done && a.kept.last_run == run => {
                tracing::info!(%invoke_id, run, "the last run ended: schedule forgotten");
                self.forget_schedule(invoke_id);
            }
            Some(a) if a.next.is_none() => self.arm(invoke_id),
            _ => {}
        }
    }

    /// A repeating run's result says the schedule goes on only if the agent still has
    /// it (a `Stop` may have ended it while the run was finishing). Returns whether the
    /// result changed.
    pub(super) fn settle(&self, result: &mut TaskResult) -> bool {
        if result.run > 0 && result.more && !self.schedules.contains_key(&result.invoke_id) {
            result.more = false;
            return true;
        }
        false
    }

    /// A `Run` with a repeat: keep (or replace) the schedule and say so with `Scheduled`.
    pub(super) async fn on_repeating_run(
        &mut self,
        task: Task,
        sink: &mut Sink,
    ) -> anyhow::Result<()> {
        let id = task.invoke_id.clone();
        let existing = self.schedules.get(&id).map(|a| a.kept.clone());
        if let Some(kept) = &existing {
            if task.revision <= kept.revision() {
                tracing::debug!(invoke_id = %id, revision = task.revision, "already scheduled");
                return send(
                    sink,
                    &AgentMsg::Scheduled {
                        invoke_id: id,
                        revision: kept.revision(),
                    },
                )
                .await;
            }
        } else if self.ended_here(&id) {
            tracing::debug!(invoke_id = %id, "ended here, its last result not yet acknowledged: Run ignored");
            return Ok(());
        }
        let next_run = existing.as_ref().map_or(0, |k| k.last_run) + 1;
        let changed = existing
            .as_ref()
            .is_none_or(|k| k.task.repeat != task.repeat);
        if changed {
            if let Err(e) = schedule::check(&task, Utc::now(), self.zone) {
                tracing::warn!(invoke_id = %id, "the task cannot run here: {e}");
                self.forget_schedule(&id);
                let error = e.task_error().unwrap_or(TaskError::BadCronExpression);
                self.refuse(task, next_run, error);
                return Ok(());
            }
        }
        let kept = match existing {
            Some(mut kept) => {
                kept.replace(task);
                kept
            }
            None => Kept::new(task, &self.boot_id),
        };
        if let Err(e) = self.store.save(&kept) {
            tracing::error!(invoke_id = %id, "cannot keep the schedule: {e}");
            if !self.schedules.contains_key(&id) {
                self.refuse(kept.task, next_run, TaskError::ExecutionException);
            }
            return Ok(());
        }
        let revision = kept.revision();
        tracing::info!(invoke_id = %id, revision, "scheduled");
        self.schedules
            .insert(id.clone(), Armed { kept, next: None });
        self.arm(&id);
        send(
            sink,
            &AgentMsg::Scheduled {
                invoke_id: id,
                revision,
            },
        )
        .await
    }

    /// Whether a repeating task ended on this agent and its last result still waits for
    /// its ack (a `Run` for it then is a stale one).
    pub(super) fn ended_here(&self, invoke_id: &str) -> bool {
        let range = (invoke_id.to_string(), 1)..=(invoke_id.to_string(), u64::MAX);
        self.tasks
            .range(range)
            .any(|(_, e)| e.result.as_ref().is_some_and(|r| !r.more))
    }

    /// Sets a task's timer from its schedule; a task with no run left ends now.
    pub(super) fn arm(&mut self, invoke_id: &str) {
        let Some(a) = self.schedules.get_mut(invoke_id) else {
            return;
        };
        match a.kept.next(Utc::now(), self.zone) {
            Next::At(t) => a.next = Some(t),
            Next::Never => a.next = None,
            Next::Over(why) => {
                tracing::warn!(%invoke_id, "the schedule is over: {why}");
                let kept = a.kept.clone();
                self.forget_schedule(invoke_id);
                self.refuse(kept.task, kept.last_run + 1, TaskError::BadCronExpression);
            }
        }
    }

    /// The earliest timer, as a monotonic instant.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let next = self.schedules.values().filter_map(|a| a.next).min()?;
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        // A millisecond over, so that the wall clock has passed the slot on waking.
        Some(Instant::now() + wait + Duration::from_millis(1))
    }

    /// Runs every task whose slot has come, unless its previous run is still going
    /// (then the slot is skipped: not stacked, not counted).
    pub(super) fn fire_due(&mut self) {
        let now = Utc::now();
        let due: Vec<(String, DateTime<Utc>)> = self
            .schedules
            .iter()
            .filter_map(|(id, a)| Some((id.clone(), a.next.filter(|t| *t <= now)?)))
            .collect();
        for (id, slot) in due {
            if let Some(a) = self.schedules.get_mut(&id) {
                a.next = None;
            }
            let busy = self.runs_mut(&id).any(|(_, e)| e.result.is_none());
            if busy {
                tracing::info!(invoke_id = %id, %slot, "the previous run is still going: slot skipped");
            } else {
                self.fire(&id, Firing::Slot(slot));
            }
            self.arm(&id);
            // A time already past (an at() whose slot was skipped) waits for the run to
            // end.
            if let Some(a) = self.schedules.get_mut(&id) {
                if a.next.is_some_and(|t| t <= now) {
                    a.next = None;
                }
            }
        }
    }

    /// Starts a run of a repeating task: its number and slot (or boot) are on disk
    /// before it starts.
    pub(super) fn fire(&mut self, invoke_id: &str, how: Firing) {
        let Some(a) = self.schedules.get_mut(invoke_id) else {
            return;
        };
        let mut kept = a.kept.clone();
        let more = match how {
            Firing::Slot(slot) => kept.fire_slot(slot, self.zone),
            Firing::Boot => kept.fire_on_boot(&self.boot_id),
        };
        if let Err(e) = self.store.save(&kept) {
            tracing::error!(%invoke_id, "cannot record the run: {e}; not run");
            return;
        }
        a.kept = kept;
        let mut task = a.kept.task.clone();
        let run = a.kept.last_run;
        // A repeating run's result is its 24 KB view: no output chunks.
        task.output_cap = 0;
        self.start(task, run, more);
    }

    /// Forgets a repeating task's schedule (its runs stay until acknowledged).
    pub(super) fn forget_schedule(&mut self, invoke_id: &str) {
        self.schedules.remove(invoke_id);
        if let Err(e) = self.store.remove(invoke_id) {
            tracing::error!(%invoke_id, "cannot remove the schedule: {e}");
        }
    }

    /// Ends a run before it starts: spools `error`'s result (`more: false`) for the run
    /// and reports it like any other.
    pub(super) fn refuse(&mut self, task: Task, run: u64, error: TaskError) {
        let key = (task.invoke_id.clone(), run);
        let result = TaskResult::not_started(&task.invoke_id, run, error, now_millis());
        let file = TaskFile {
            task,
            run,
            marker: String::new(),
            cgroup: None,
            received_at: now_millis(),
        };
        let dir = match self.spool.create(&file) {
            Ok(dir) => {
                if let Err(e) = dir.write_result(&result) {
                    tracing::error!(invoke_id = %key.0, run, "cannot spool the result: {e}");
                }
                dir
            }
            Err(e) => {
                tracing::error!(invoke_id = %key.0, run, "cannot spool the task: {e}");
                self.spool.dir(&key.0, run)
            }
        };
        let progress = self.progress(&key, 0);
        self.tasks.insert(
            key,
            Entry {
                dir,
                progress,
                stop: None,
                start_time: None,
                result: Some(result.clone()),
                sent: 0,
                due: None,
            },
        );
        let _ = self.events_tx.send(Event::Finished(result));
    }
}
