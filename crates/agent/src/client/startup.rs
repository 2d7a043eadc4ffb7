//! What the agent takes up from its state dir when it starts: its schedules, the
//! results waiting for an ack, and the runs it did not see end.

use super::{Agent, Armed, Entry, Firing};
use crate::isolation;
use crate::proc;
use std::time::Duration;

impl Agent {
    /// Takes up the state dir: the schedule, then the spool; forgets repeating tasks
    /// whose last run has ended; fires reboot tasks if this is another boot; arms the
    /// timers.
    pub(super) async fn load(&mut self) {
        for kept in self.store.load() {
            let id = kept.invoke_id().to_string();
            self.schedules.insert(id, Armed { kept, next: None });
        }
        self.load_spool().await;
        // The cgroups of runs that ended before a restart, once empty.
        self.isolation.tidy();
        let done: Vec<String> = self
            .schedules
            .iter()
            .filter(|(_, a)| a.kept.done)
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            self.forget_schedule(&id);
        }
        let ids: Vec<String> = self.schedules.keys().cloned().collect();
        for id in ids {
            if self.schedules[&id].kept.fires_on_boot(&self.boot_id) {
                tracing::info!(invoke_id = %id, boot_id = %self.boot_id, "a new boot: running the reboot task");
                self.fire(&id, Firing::Boot);
            } else {
                self.arm(&id);
            }
        }
        if !self.schedules.is_empty() {
            tracing::info!(
                tasks = self.schedules.len(),
                zone = %self.zone,
                "repeating tasks on the schedule"
            );
        }
    }

    /// Takes up the spool: results waiting for an ack, and runs the agent did not see
    /// end (it died meanwhile), which are finished now as interrupted, their leftover
    /// processes killed.
    pub(super) async fn load_spool(&mut self) {
        for s in self.spool.load() {
            let key = (s.file.task.invoke_id.clone(), s.file.run);
            let result = match s.result {
                Some(mut r) => {
                    if self.settle(&mut r) {
                        if let Err(e) = s.dir.write_result(&r) {
                            tracing::error!(invoke_id = %key.0, run = key.1, "cannot spool the result: {e}");
                        }
                    }
                    r
                }
                None => {
                    tracing::warn!(invoke_id = %key.0, run = key.1, "the agent stopped during this run: interrupted");
                    if let Some(cgroup) = &s.file.cgroup {
                        isolation::kill_leftover(cgroup).await;
                    }
                    proc::kill_tree(None, &s.file.marker, Duration::from_secs(5)).await;
                    let mut r = s.dir.interrupted_result(&s.file.task);
                    r.run = s.file.run;
                    // The schedule goes on unless this was its last run.
                    r.more = s.file.run > 0
                        && self
                            .schedules
                            .get(&key.0)
                            .is_some_and(|a| !(a.kept.done && a.kept.last_run == s.file.run));
                    if let Err(e) = s.dir.write_result(&r) {
                        tracing::error!(invoke_id = %key.0, run = key.1, "cannot spool the result: {e}");
                    }
                    r
                }
            };
            let progress = self.progress(&key, result.output_len);
            self.tasks.insert(
                key,
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
}
