//! The schedule: the repeating tasks the agent keeps, on disk, and when each runs next.
//!
//! ```text
//! <state_dir>/schedule/<invoke_id>.json    one repeating task: a [`Kept`]
//! ```
//!
//! A repeating task (`Task.repeat`, see `oca_proto`) is run by the agent itself, on its
//! schedule, whether or not the server is reachable; so the schedule lives next to the
//! spool and survives restarts. Each file is written atomically (temporary file, fsync,
//! rename, fsync of the directory) **before** a run starts: the run number and the slot
//! (or boot) it fired for are on disk first, so after a crash, a restart or a reconnect
//! no run happens twice and the numbers keep counting. (A crash between that write and
//! the run's start loses the run, never repeats it.) Each run is then spooled like a
//! one-time task ([`crate::spool`], `<invoke_id>@<run>`).
//!
//! When a task runs ([`Kept::next`], [`Kept::fires_on_boot`]):
//! - **Period, `rate(…)` / cron**: the first slot after now (and after the last slot
//!   fired): slots missed while the agent was down are not caught up. A cron expression
//!   without a zone is read in the host's zone ([`host_zone`]).
//! - **Period, `at(…)`**: its one instant; an `at` that has not fired yet fires even if
//!   its time passed while the agent was down (late rather than never). Then the task is
//!   done.
//! - **NextRebootOnly**: once, at the first agent start on a boot ([`read_boot_id`])
//!   other than the one it was registered on. Then the task is done.
//! - **EveryReboot**: at every agent start on a boot other than the one it last fired
//!   (or was registered) on.
//!
//! A task that is done stays on disk until its last run has ended, so that `Hello` still
//! lists it meanwhile and a restart in between does not run it again.

use crate::spool::{dir_name, ensure_private_dir, write_atomic};
use chrono::{DateTime, Utc};
use oca_domain::command::RepeatMode;
use oca_domain::frequency::{Frequency, FrequencyError, Schedule, Zone};
use oca_domain::time::Millis;
use oca_proto::Task;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the kernel says which boot this is.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// One repeating task as the agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The task as last received (its `repeat` is set; its `revision` is the schedule's).
    pub task: Task,
    /// The boot the task was registered on, or last fired on (reboot modes).
    pub boot_id: String,
    /// The number of the last run started (0: none yet).
    pub last_run: u64,
    /// The slot the last run fired for, ms since the epoch (Period).
    pub last_slot: Option<Millis>,
    /// The last run has been started: the task is forgotten once that run ends.
    pub done: bool,
}

/// When a kept task runs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// At this instant (which may have passed: then now).
    At(DateTime<Utc>),
    /// Not on a clock: a reboot mode, or a task that is done.
    Never,
    /// It has no run left on this host (or its frequency cannot be read): the task ends,
    /// `Invalid` / `BadCronExpression`.
    Over(String),
}

impl Kept {
    /// A task just received, registered on boot `boot_id`.
    pub fn new(task: Task, boot_id: &str) -> Kept {
        Kept {
            task,
            boot_id: boot_id.to_string(),
            last_run: 0,
            last_slot: None,
            done: false,
        }
    }

    pub fn invoke_id(&self) -> &str {
        &self.task.invoke_id
    }

    pub fn revision(&self) -> u64 {
        self.task.revision
    }

    pub fn mode(&self) -> RepeatMode {
        self.task
            .repeat
            .as_ref()
            .map_or(RepeatMode::Once, |r| r.mode)
    }

    /// Takes a newer revision of the task. The run count and the boot stay; a changed
    /// frequency or mode starts its slots afresh.
    pub fn replace(&mut self, task: Task) {
        if task.repeat != self.task.repeat {
            self.last_slot = None;
            self.done = false;
        }
        self.task = task;
    }

    /// Whether the task fires at an agent start on boot `boot_id`.
    pub fn fires_on_boot(&self, boot_id: &str) -> bool {
        matches!(
            self.mode(),
            RepeatMode::NextRebootOnly | RepeatMode::EveryReboot
        ) && !self.done
            && !boot_id.is_empty()
            && boot_id != self.boot_id
    }

    /// Fires at an agent start on boot `boot_id`: counts the run and records the boot.
    /// Returns whether the schedule goes on after this run.
    pub fn fire_on_boot(&mut self, boot_id: &str) -> bool {
        self.last_run += 1;
        self.boot_id = boot_id.to_string();
        let more = self.mode() == RepeatMode::EveryReboot;
        self.done = !more;
        more
    }

    /// When the task runs next, seen at `now` on a host in `zone`.
    pub fn next(&self, now: DateTime<Utc>, zone: Zone) -> Next {
        if self.done || self.mode() != RepeatMode::Period {
            return Next::Never;
        }
        let schedule = match self.schedule() {
            Ok(s) => s,
            Err(e) => return Next::Over(e.to_string()),
        };
        match &schedule.frequency {
            Frequency::At(at) => match (self.last_slot, at.instant()) {
                (Some(_), _) => Next::Never,
                (None, Some(t)) => Next::At(t),
                (None, None) => Next::Over(format!("{at} has no instant")),
            },
            _ => {
                let after = match self.last_slot.and_then(DateTime::from_timestamp_millis) {
                    Some(last) => last.max(now),
                    None => now,
                };
                match schedule.next_after(after, zone) {
                    Some(t) => Next::At(t),
                    None => Next::Over(format!("no run left after {after} in the zone {zone}")),
                }
            }
        }
    }

    /// Fires for `slot` (Period): counts the run and records the slot. Returns whether
    /// the schedule goes on after this run (an `at` or a last cron slot: no).
    pub fn fire_slot(&mut self, slot: DateTime<Utc>, zone: Zone) -> bool {
        self.last_run += 1;
        self.last_slot = Some(slot.timestamp_millis());
        let more = match self.schedule() {
            Ok(s) => match s.frequency {
                Frequency::At(_) => false,
                _ => s.next_after(slot, zone).is_some(),
            },
            Err(_) => false,
        };
        self.done = !more;
        more
    }

    /// The parsed frequency and its anchor.
    fn schedule(&self) -> Result<Schedule, FrequencyError> {
        let repeat = self.task.repeat.as_ref().ok_or(FrequencyError::Empty)?;
        let frequency = Frequency::parse(&repeat.frequency)?;
        let anchor = DateTime::from_timestamp_millis(repeat.anchor).unwrap_or_default();
        Ok(Schedule::new(frequency, anchor))
    }
}

/// The host's checks of a repeating task as it arrives at `now`: a Period frequency must
/// parse and have a run left here (an `at(…)` already past has none).
pub fn check(task: &Task, now: DateTime<Utc>, zone: Zone) -> Result<(), FrequencyError> {
    match &task.repeat {
        Some(r) if r.mode == RepeatMode::Period => {
            Frequency::parse(&r.frequency)?.check_on_instance(now, zone)
        }
        _ => Ok(()),
    }
}

/// The `schedule/` directory of the state dir.
#[derive(Debug, Clone)]
pub struct ScheduleStore {
    root: PathBuf,
}

impl ScheduleStore {
    pub fn open(state_dir: &Path) -> io::Result<ScheduleStore> {
        let root = state_dir.join("schedule");
        ensure_private_dir(&root)?;
        Ok(ScheduleStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, invoke_id: &str) -> PathBuf {
        self.root.join(format!("{}.json", dir_name(invoke_id)))
    }

    /// Every kept task. Unreadable files (which an atomic write never leaves) are
    /// reported and set aside as `<name>.bad`.
    pub fn load(&self) -> Vec<Kept> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.root) else {
            return out;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let kept = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Kept>(&b).ok())
                .filter(|k| k.task.repeat.is_some());
            match kept {
                Some(k) => out.push(k),
                None => {
                    tracing::error!(file = %path.display(), "unreadable schedule: set aside");
                    let _ = fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
        out.sort_by(|a, b| a.task.invoke_id.cmp(&b.task.invoke_id));
        out
    }

    /// Writes a kept task, atomically and durably.
    pub fn save(&self, kept: &Kept) -> io::Result<()> {
        write_atomic(
            &self.path(kept.invoke_id()),
            &serde_json::to_vec_pretty(kept).map_err(io::Error::other)?,
            0o600,
        )
    }

    /// Forgets a task.
    pub fn remove(&self, invoke_id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(invoke_id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(()) => fs::File::open(&self.root)?.sync_all(),
        }
    }
}

/// This boot's id: the first line of `path` (normally [`BOOT_ID_PATH`]); empty, with a
/// warning, if it cannot be read (then reboot tasks never fire).
pub fn read_boot_id(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().to_string(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot read the boot id: {e}; reboot tasks will not fire");
            String::new()
        }
    }
}

/// The host's time zone: `TZ` if it names a zone, else the zone `/etc/localtime` links
/// to (`…/zoneinfo/<name>`), else `/etc/timezone`, else UTC.
pub fn host_zone() -> Zone {
    zone_from(
        std::env::var("TZ").ok().as_deref(),
        fs::read_link("/etc/localtime").ok().as_deref(),
        fs::read_to_string("/etc/timezone").ok().as_deref(),
    )
}

/// [`host_zone`] from what it reads: the `TZ` variable, the target of the
/// `/etc/localtime` link, the content of `/etc/timezone`.
pub fn zone_from(tz: Option<&str>, localtime: Option<&Path>, etc_timezone: Option<&str>) -> Zone {
    if let Some(tz) = tz {
        let tz = tz.strip_prefix(':').unwrap_or(tz).trim();
        if tz.is_empty() {
            return Zone::Utc;
        }
        let found = if tz.starts_with('/') {
            zone_of_path(Path::new(tz))
        } else {
            zone_named(tz)
        };
        if let Some(z) = found {
            return z;
        }
    }
    localtime
        .and_then(zone_of_path)
        .or_else(|| etc_timezone.and_then(zone_named))
        .unwrap_or(Zone::Utc)
}

/// `Europe/Paris`, `UTC`, `GMT+8:00`, `Japan`, …
fn zone_named(name: &str) -> Option<Zone> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Zone::parse_instance(name).or_else(|| chrono_tz::Tz::from_str(name).ok().map(Zone::Named))
}

/// `/usr/share/zoneinfo/Europe/Paris` (or `posix/…`, `right/…`) → `Europe/Paris`.
fn zone_of_path(path: &Path) -> Option<Zone> {
    let s = path.to_str()?;
    let (_, name) = s.rsplit_once("zoneinfo/")?;
    let name = name
        .strip_prefix("posix/")
        .or_else(|| name.strip_prefix("right/"))
        .unwrap_or(name);
    zone_named(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oca_domain::command::CommandType;
    use oca_proto::Repeat;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn task(mode: RepeatMode, frequency: &str, anchor: &str) -> Task {
        Task {
            invoke_id: "t-rep".into(),
            command_id: "c-1".into(),
            command_type: CommandType::RunShellScript,
            script: "echo hi".into(),
            working_dir: String::new(),
            username: String::new(),
            timeout_secs: 60,
            output_cap: 0,
            termination_mode: Default::default(),
            file: None,
            repeat: Some(Repeat {
                mode,
                frequency: frequency.into(),
                anchor: t(anchor).timestamp_millis(),
            }),
            revision: 1,
        }
    }

    #[test]
    fn a_rate_fires_from_its_anchor_and_never_catches_up() {
        let mut k = Kept::new(
            task(RepeatMode::Period, "rate(5m)", "2024-01-01T00:00:00Z"),
            "b1",
        );
        let now = t("2024-01-01T00:07:00Z");
        assert_eq!(k.next(now, Zone::Utc), Next::At(t("2024-01-01T00:10:00Z")));
        assert!(k.fire_slot(t("2024-01-01T00:10:00Z"), Zone::Utc));
        assert_eq!((k.last_run, k.done), (1, false));
        // Down for an hour: the next slot after now, not the missed ones.
        let later = t("2024-01-01T01:02:00Z");
        assert_eq!(
            k.next(later, Zone::Utc),
            Next::At(t("2024-01-01T01:05:00Z"))
        );
        // A clock set back does not fire the last slot again.
        let back = t("2024-01-01T00:09:00Z");
        assert_eq!(k.next(back, Zone::Utc), Next::At(t("2024-01-01T00:15:00Z")));
    }

    #[test]
    fn a_cron_without_a_zone_is_read_in_the_hosts_zone() {
        let k = Kept::new(
            task(RepeatMode::Period, "0 0 9 * * ?", "2024-01-01T00:00:00Z"),
            "b1",
        );
        let now = t("2024-06-01T00:00:00Z");
        let paris = zone_named("Europe/Paris").unwrap();
        assert_eq!(k.next(now, Zone::Utc), Next::At(t("2024-06-01T09:00:00Z")));
        assert_eq!(k.next(now, paris), Next::At(t("2024-06-01T07:00:00Z")));
    }

    #[test]
    fn an_at_fires_once_even_late() {
        let mut k = Kept::new(
            task(
                RepeatMode::Period,
                "at(2024-01-01 12:00:00)",
                "2024-01-01T00:00:00Z",
            ),
            "b1",
        );
        let at = t("2024-01-01T12:00:00Z");
        assert_eq!(k.next(t("2024-01-01T11:00:00Z"), Zone::Utc), Next::At(at));
        // The agent was down at noon: it still fires (at once).
        assert_eq!(k.next(t("2024-01-02T00:00:00Z"), Zone::Utc), Next::At(at));
        assert!(!k.fire_slot(at, Zone::Utc));
        assert!(k.done);
        assert_eq!(k.next(t("2024-01-02T00:00:00Z"), Zone::Utc), Next::Never);
        // On arrival, an at() already past is refused.
        let late = check(&k.task, t("2024-01-02T00:00:00Z"), Zone::Utc).unwrap_err();
        assert_eq!(
            late.task_error(),
            Some(oca_domain::task_error::TaskError::BadCronExpression)
        );
        assert!(check(&k.task, t("2024-01-01T11:00:00Z"), Zone::Utc).is_ok());
    }

    #[test]
    fn a_cron_with_no_run_left_is_over() {
        let mut k = Kept::new(
            task(
                RepeatMode::Period,
                "0 0 12 1 1 ? 2024",
                "2024-01-01T00:00:00Z",
            ),
            "b1",
        );
        let noon = t("2024-01-01T12:00:00Z");
        assert_eq!(k.next(t("2024-01-01T00:00:00Z"), Zone::Utc), Next::At(noon));
        // Its last slot: the schedule does not go on.
        assert!(!k.fire_slot(noon, Zone::Utc));
        assert_eq!(k.next(noon, Zone::Utc), Next::Never);
        // Missed while down: nothing left.
        let missed = Kept::new(k.task.clone(), "b1");
        assert!(matches!(
            missed.next(t("2025-01-01T00:00:00Z"), Zone::Utc),
            Next::Over(_)
        ));
        let garbage = Kept::new(
            task(RepeatMode::Period, "every day", "2024-01-01T00:00:00Z"),
            "b1",
        );
        assert!(matches!(garbage.next(noon, Zone::Utc), Next::Over(_)));
        assert!(check(&garbage.task, noon, Zone::Utc).is_err());
    }

    #[test]
    fn reboot_modes_fire_on_other_boots() {
        let mut next = Kept::new(
            task(RepeatMode::NextRebootOnly, "", "2024-01-01T00:00:00Z"),
            "b1",
        );
        assert!(!next.fires_on_boot("b1"));
        assert!(!next.fires_on_boot(""), "an unknown boot fires nothing");
        assert_eq!(next.next(Utc::now(), Zone::Utc), Next::Never);
        assert!(next.fires_on_boot("b2"));
        assert!(!next.fire_on_boot("b2"));
        assert!(next.done);
        assert!(!next.fires_on_boot("b3"));

        let mut every = Kept::new(
            task(RepeatMode::EveryReboot, "", "2024-01-01T00:00:00Z"),
            "b1",
        );
        assert!(every.fire_on_boot("b2"));
        assert!(!every.fires_on_boot("b2"));
        assert!(every.fires_on_boot("b3"));
        assert!(every.fire_on_boot("b3"));
        assert_eq!((every.last_run, every.boot_id.as_str()), (2, "b3"));
    }

    #[test]
    fn a_newer_revision_keeps_the_count_and_restarts_changed_slots() {
        let mut k = Kept::new(
            task(
                RepeatMode::Period,
                "at(2024-01-01 12:00:00)",
                "2024-01-01T00:00:00Z",
            ),
            "b1",
        );
        k.fire_slot(t("2024-01-01T12:00:00Z"), Zone::Utc);
        let mut same = k.task.clone();
        same.revision = 2;
        same.script = "echo v2".into();
        let mut k2 = k.clone();
        k2.replace(same);
        assert!(k2.done, "the same at() does not fire again");
        let mut other = k.task.clone();
        other.revision = 3;
        other.repeat.as_mut().unwrap().frequency = "at(2024-01-02 12:00:00)".into();
        k.replace(other);
        assert_eq!((k.last_run, k.done, k.revision()), (1, false, 3));
        assert_eq!(
            k.next(t("2024-01-01T13:00:00Z"), Zone::Utc),
            Next::At(t("2024-01-02T12:00:00Z"))
        );
    }

    #[test]
    fn the_store_writes_reads_and_forgets() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ScheduleStore::open(tmp.path()).unwrap();
        let mut k = Kept::new(
            task(RepeatMode::EveryReboot, "", "2024-01-01T00:00:00Z"),
            "b1",
        );
        k.task.invoke_id = "../odd".into();
        store.save(&k).unwrap();
        assert_eq!(store.path("../odd").parent(), Some(store.root()));
        k.last_run = 4;
        store.save(&k).unwrap();
        fs::write(store.root().join("t-broken.json"), b"{").unwrap();
        assert_eq!(store.load(), vec![k.clone()]);
        assert!(store.root().join("t-broken.bad").exists());
        store.remove("../odd").unwrap();
        store.remove("../odd").unwrap();
        assert!(store.load().is_empty());
    }

    #[test]
    fn the_host_zone_comes_from_tz_then_localtime() {
        let paris = Path::new("/usr/share/zoneinfo/Europe/Paris");
        let named = |n: &str| Zone::Named(chrono_tz::Tz::from_str(n).unwrap());
        assert_eq!(
            zone_from(Some("Asia/Shanghai"), Some(paris), None),
            named("Asia/Shanghai")
        );
        assert_eq!(zone_from(Some(":Japan"), None, None), named("Japan"));
        assert_eq!(zone_from(Some(""), Some(paris), None), Zone::Utc);
        assert_eq!(
            zone_from(Some("not a zone"), Some(paris), None),
            named("Europe/Paris")
        );
        assert_eq!(zone_from(None, Some(paris), None), named("Europe/Paris"));
        assert_eq!(
            zone_from(
                None,
                Some(Path::new("../usr/share/zoneinfo/posix/America/New_York")),
                None
            ),
            named("America/New_York")
        );
        assert_eq!(
            zone_from(None, None, Some("Europe/Berlin\n")),
            named("Europe/Berlin")
        );
        assert_eq!(
            zone_from(None, Some(Path::new("/etc/other")), None),
            Zone::Utc
        );
        assert_eq!(zone_from(None, None, None), Zone::Utc);
        assert_eq!(zone_from(Some("UTC"), Some(paris), None), Zone::Utc);
    }

    #[test]
    fn the_boot_id_is_read_from_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("boot_id");
        fs::write(&f, "abc-123\n").unwrap();
        assert_eq!(read_boot_id(&f), "abc-123");
        assert_eq!(read_boot_id(&tmp.path().join("none")), "");
    }
}
