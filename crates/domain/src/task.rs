//! How one instance's run of an invocation moves between statuses.
//!
//! The dispatcher turns what happens (the agent started the run, finished it, a person
//! asked to stop it, delivery failed) into a [`TaskEvent`]; [`TaskState::apply`] decides
//! what that does to the run. The store applies it inside a transaction. Every event is
//! idempotent and a run that has ended never changes again, so duplicates and races
//! (a result arriving after a stop, a replayed result after a reconnect) are harmless.

use crate::status::InvocationStatus;
use crate::task_error::TaskError;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// The mutable part of one instance's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    pub status: InvocationStatus,
    pub exit_code: Option<i64>,
    pub error: Option<TaskError>,
    pub start_time: Option<Millis>,
    pub finish_time: Option<Millis>,
    pub stop_time: Option<Millis>,
    pub repeats: u64,
    /// The 24 KB head-and-tail view of the output.
    pub output: Vec<u8>,
    pub dropped: u64,
}

impl TaskState {
    pub fn pending() -> Self {
        TaskState {
            status: InvocationStatus::Pending,
            exit_code: None,
            error: None,
            start_time: None,
            finish_time: None,
            stop_time: None,
            repeats: 0,
            output: Vec::new(),
            dropped: 0,
        }
    }

    /// A run that ended before it was sent (e.g. the instance's agent is not running).
    pub fn failed_at_once(error: TaskError, at: Millis) -> Self {
        let mut t = Self::pending();
        t.apply(TaskEvent::Aborted { error, at });
        t
    }
}

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskEvent {
    /// The agent started the process.
    Started { at: Millis },
    /// The agent reports the run's outcome.
    Finished {
        status: InvocationStatus,
        exit_code: Option<i64>,
        error: Option<TaskError>,
        start_time: Option<Millis>,
        finish_time: Millis,
        output: Vec<u8>,
        dropped: u64,
    },
    /// StopInvocation reached this run.
    StopRequested { at: Millis },
    /// The run could not be delivered or was lost with its agent.
    Aborted { error: TaskError, at: Millis },
    /// A repeating task is on its agent's schedule, waiting for its next run.
    Scheduled,
    /// The agent started run `run` (1, 2, …) of a repeating task.
    RunStarted { run: u64, at: Millis },
    /// Run `run` of a repeating task ended; `more`: its schedule goes on.
    RunFinished {
        run: u64,
        more: bool,
        status: InvocationStatus,
        exit_code: Option<i64>,
        error: Option<TaskError>,
        start_time: Option<Millis>,
        finish_time: Millis,
        output: Vec<u8>,
        dropped: u64,
    },
}

impl TaskState {
    /// Applies `event`; returns whether anything changed.
    pub fn apply(&mut self, event: TaskEvent) -> bool {
        use InvocationStatus as S;
        if self.status.is_terminal() {
            return false;
        }
        let before = self.clone();
        match event {
            TaskEvent::Started { at } => {
                if self.status == S::Pending || self.status == S::Scheduled {
                    self.status = S::Running;
                }
                self.start_time.get_or_insert(at);
            }
            TaskEvent::Finished {
                status,
                exit_code,
                error,
                start_time,
                finish_time,
                output,
                dropped,
            } => {
                // A result must end the run; an agent that says otherwise is wrong and
                // the run is recorded as an exception rather than left hanging.
                let (status, error) = if status.is_terminal() {
                    (status, error)
                } else {
                    (S::Error, Some(TaskError::ExecutionException))
                };
                self.status = status;
                self.exit_code = exit_code;
                self.error = error;
                if let Some(t) = start_time {
                    self.start_time = Some(t);
                }
                self.finish_time = Some(finish_time);
                self.repeats += 1;
                self.output = output;
                self.dropped = dropped;
            }
            TaskEvent::StopRequested { at } => {
                if let Some(next) = self.status.on_stop_requested() {
                    self.status = next;
                    self.stop_time = Some(at);
                    if next.is_terminal() {
                        self.finish_time = Some(at);
                    }
                }
            }
            TaskEvent::Aborted { error, at } => {
                // A run that had started and was lost is interrupted, whatever the cause.
                let error = if self.status == S::Running || self.status == S::Stopping {
                    TaskError::ExecutionInterrupted
                } else {
                    error
                };
                self.status = error.status();
                self.error = Some(error);
                self.finish_time = Some(at);
            }
            TaskEvent::Scheduled => {
                if self.status == S::Pending {
                    self.status = S::Scheduled;
                }
            }
            TaskEvent::RunStarted { run, at } => {
                // Runs are numbered by the agent; a report of a run already ended (a
                // replay after a reconnect) changes nothing.
                if run > self.repeats && matches!(self.status, S::Pending | S::Scheduled) {
                    self.status = S::Running;
                    self.start_time = Some(at);
                }
            }
            TaskEvent::RunFinished {
                run,
                more,
                status,
                exit_code,
                error,
                start_time,
                finish_time,
                output,
                dropped,
            } => {
                if run <= self.repeats {
                    return false;
                }
                let stopping = self.status == S::Stopping;
                self.apply(TaskEvent::Finished {
                    status,
                    exit_code,
                    error,
                    start_time,
                    finish_time,
                    output,
                    dropped,
                });
                self.repeats = run;
                if more {
                    // The run's outcome stays readable; the task waits for the next.
                    self.status = if stopping { S::Stopping } else { S::Scheduled };
                    self.finish_time = Some(finish_time);
                }
            }
        }
        *self != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use InvocationStatus as S;

    fn finished(status: S, code: i64) -> TaskEvent {
        TaskEvent::Finished {
            status,
            exit_code: Some(code),
            error: (code != 0).then_some(TaskError::ExitCodeNonzero),
            start_time: Some(10),
            finish_time: 20,
            output: b"out".to_vec(),
            dropped: 0,
        }
    }

    #[test]
    fn a_run_from_pending_to_success() {
        let mut t = TaskState::pending();
        assert!(t.apply(TaskEvent::Started { at: 10 }));
        assert_eq!(t.status, S::Running);
        assert!(!t.apply(TaskEvent::Started { at: 11 }), "idempotent");
        assert_eq!(t.start_time, Some(10));
        assert!(t.apply(finished(S::Success, 0)));
        assert_eq!((t.status, t.exit_code, t.repeats), (S::Success, Some(0), 1));
        assert_eq!(t.output, b"out");
        assert!(
            !t.apply(finished(S::Failed, 1)),
            "an ended run never changes"
        );
    }

    #[test]
    fn stop_cancels_pending_and_stops_running() {
        let mut t = TaskState::pending();
        t.apply(TaskEvent::StopRequested { at: 5 });
        assert_eq!(
            (t.status, t.stop_time, t.finish_time),
            (S::Cancelled, Some(5), Some(5))
        );

        let mut t = TaskState::pending();
        t.apply(TaskEvent::Started { at: 1 });
        t.apply(TaskEvent::StopRequested { at: 5 });
        assert_eq!((t.status, t.stop_time), (S::Stopping, Some(5)));
        t.apply(TaskEvent::Finished {
            status: S::Terminated,
            exit_code: Some(-1),
            error: None,
            start_time: Some(1),
            finish_time: 6,
            output: vec![],
            dropped: 0,
        });
        assert_eq!(t.status, S::Terminated);
        assert_eq!(t.stop_time, Some(5));
    }

    #[test]
    fn a_lost_run_is_interrupted_and_an_undelivered_one_aborted() {
        let t = TaskState::failed_at_once(TaskError::ClientNotRunning, 3);
        assert_eq!(
            (t.status, t.error),
            (S::Aborted, Some(TaskError::ClientNotRunning))
        );

        let mut t = TaskState::pending();
        t.apply(TaskEvent::Started { at: 1 });
        t.apply(TaskEvent::Aborted {
            error: TaskError::ClientNotRunning,
            at: 2,
        });
        assert_eq!(
            (t.status, t.error),
            (S::Error, Some(TaskError::ExecutionInterrupted))
        );
    }

    #[test]
    fn a_result_that_does_not_end_the_run_is_an_exception() {
        let mut t = TaskState::pending();
        t.apply(finished(S::Running, 0));
        assert_eq!(
            (t.status, t.error),
            (S::Error, Some(TaskError::ExecutionException))
        );
    }

    fn run_finished(run: u64, more: bool, status: S) -> TaskEvent {
        TaskEvent::RunFinished {
            run,
            more,
            status,
            exit_code: Some(0),
            error: None,
            start_time: Some(run as i64 * 10),
            finish_time: run as i64 * 10 + 1,
            output: format!("run {run}").into_bytes(),
            dropped: 0,
        }
    }

    #[test]
    fn a_repeating_task_is_scheduled_between_runs_and_counts_them() {
        let mut t = TaskState::pending();
        assert!(t.apply(TaskEvent::Scheduled));
        assert_eq!(t.status, S::Scheduled);
        assert!(t.apply(TaskEvent::RunStarted { run: 1, at: 10 }));
        assert_eq!((t.status, t.start_time), (S::Running, Some(10)));
        assert!(t.apply(run_finished(1, true, S::Success)));
        assert_eq!((t.status, t.repeats), (S::Scheduled, 1));
        assert_eq!(t.output, b"run 1");
        // Replays of run 1 change nothing.
        assert!(!t.apply(TaskEvent::RunStarted { run: 1, at: 10 }));
        assert!(!t.apply(run_finished(1, true, S::Failed)));
        assert_eq!(t.status, S::Scheduled);
        // Run 3 after 2 was skipped on the agent (runs are numbered when they start).
        t.apply(TaskEvent::RunStarted { run: 2, at: 20 });
        t.apply(run_finished(2, true, S::Failed));
        assert_eq!(
            (t.status, t.repeats, t.exit_code),
            (S::Scheduled, 2, Some(0))
        );
        assert_eq!(t.start_time, Some(20));
        // A last run (at(…), NextRebootOnly) ends the task with its own outcome.
        t.apply(run_finished(3, false, S::Success));
        assert_eq!((t.status, t.repeats), (S::Success, 3));
        assert!(!t.apply(TaskEvent::Scheduled));
    }

    #[test]
    fn stopping_a_repeating_task() {
        // Between runs: cancelled at once.
        let mut t = TaskState::pending();
        t.apply(TaskEvent::Scheduled);
        t.apply(TaskEvent::StopRequested { at: 5 });
        assert_eq!(t.status, S::Cancelled);
        // During a run: stopping, then the run's end (more=false) ends it.
        let mut t = TaskState::pending();
        t.apply(TaskEvent::Scheduled);
        t.apply(TaskEvent::RunStarted { run: 1, at: 10 });
        t.apply(TaskEvent::StopRequested { at: 12 });
        assert_eq!(t.status, S::Stopping);
        t.apply(run_finished(1, true, S::Success));
        assert_eq!(
            t.status,
            S::Stopping,
            "a stop is not undone by a late result"
        );
        t.apply(TaskEvent::RunFinished {
            run: 2,
            more: false,
            status: S::Terminated,
            exit_code: None,
            error: None,
            start_time: Some(13),
            finish_time: 14,
            output: vec![],
            dropped: 0,
        });
        assert_eq!((t.status, t.stop_time), (S::Terminated, Some(12)));
    }

    fn any_event() -> impl Strategy<Value = TaskEvent> {
        prop_oneof![
            (0i64..100).prop_map(|at| TaskEvent::Started { at }),
            (prop::sample::select(S::ALL.to_vec()), -1i64..3).prop_map(|(s, c)| finished(s, c)),
            (0i64..100).prop_map(|at| TaskEvent::StopRequested { at }),
            (prop::sample::select(TaskError::ALL.to_vec()), 0i64..100)
                .prop_map(|(error, at)| TaskEvent::Aborted { error, at }),
        ]
    }

    proptest! {
        #[test]
        fn ended_runs_never_change_and_repeats_at_most_one(
            events in prop::collection::vec(any_event(), 0..20)
        ) {
            let mut t = TaskState::pending();
            let mut ended: Option<TaskState> = None;
            for e in events {
                t.apply(e);
                if let Some(ref snapshot) = ended {
                    prop_assert_eq!(&t, snapshot);
                } else if t.status.is_terminal() {
                    ended = Some(t.clone());
                }
                prop_assert!(t.repeats <= 1);
                if t.status.is_terminal() {
                    prop_assert!(t.finish_time.is_some());
                }
            }
        }
    }
}
