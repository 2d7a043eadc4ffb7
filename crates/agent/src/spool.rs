//! The spool: everything the agent must not lose, on disk, one directory per task.
//!
//! ```text
//! <state_dir>/identity.json             instance id + token
//! <state_dir>/tasks/<invoke_id>/           a one-time task
//! <state_dir>/tasks/<invoke_id>@<run>/     run number <run> of a repeating task
//!     task.json      the task, its run number, its process marker and its cgroup,
//!                    written when the Run arrives (when the run is due, for a
//!                    repeating task)
//!     started        the start time (ms since the epoch), once the process started
//!     output         the first `output_cap` bytes of output, as the script printed them
//!     script.sh      the script (`script.ps1` for PowerShell) when run as the agent's user
//!     result.json    the TaskResult, once the task ended
//! ```
//!
//! Everything here is private: directories are 0700 and files 0600, created so (the
//! agent also runs with umask 077), and [`tighten`] takes back a state dir an older
//! agent or an operator left more open.
//!
//! `task.json` and `result.json` are written atomically (temporary file, fsync, rename,
//! fsync of the directory). A task's directory is removed only when the server
//! acknowledges its result. A directory with a task but no result belongs to a run the
//! agent did not see end (it died meanwhile): on start, the agent finishes it as
//! `Error` / `ExecutionInterrupted` with whatever output it has.
//!
//! Repeating tasks keep their schedule elsewhere ([`crate::schedule`]); each of their
//! runs is spooled here like a one-time task, under its own directory, so that several
//! results can wait for their acks at once.

use oca_domain::output::HeadTail;
use oca_domain::task_error::TaskError;
use oca_domain::time::{now_millis, Millis};
use oca_proto::{Task, TaskResult};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const TASK_FILE: &str = "task.json";
const STARTED_FILE: &str = "started";
const OUTPUT_FILE: &str = "output";
const RESULT_FILE: &str = "result.json";

/// What `task.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskFile {
    pub task: Task,
    /// The run's number for a repeating task (1, 2, …); 0 for a one-time task.
    #[serde(default)]
    pub run: u64,
    /// The value of `OCA_TASK_MARKER` in the task's processes.
    pub marker: String,
    /// The run's cgroup when the agent isolates tasks with cgroups
    /// ([`crate::isolation`]); absent under process-tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    pub received_at: Millis,
}

/// A task found in the spool.
#[derive(Debug)]
pub struct Spooled {
    pub file: TaskFile,
    pub dir: TaskDir,
    pub result: Option<TaskResult>,
}

/// The `tasks/` directory of the state dir.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    pub fn open(state_dir: &Path) -> io::Result<Spool> {
        ensure_private_dir(state_dir)?;
        let root = state_dir.join("tasks");
        ensure_private_dir(&root)?;
        Ok(Spool { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a run (it may not exist): `<invoke_id>` for a one-time task (run
    /// 0), `<invoke_id>@<run>` for a run of a repeating task (`@` never appears in the
    /// name of an invoke id, which is the id itself or `x` and its hex).
    pub fn dir(&self, invoke_id: &str, run: u64) -> TaskDir {
        TaskDir {
            path: self.root.join(run_name(invoke_id, run)),
        }
    }

    /// Records a task (a run) that just arrived.
    pub fn create(&self, file: &TaskFile) -> io::Result<TaskDir> {
        let dir = self.dir(&file.task.invoke_id, file.run);
        create_private_dir(&dir.path)?;
        write_atomic(
            &dir.path.join(TASK_FILE),
            &serde_json::to_vec_pretty(file).map_err(io::Error::other)?,
            0o600,
        )?;
        Ok(dir)
    }

    /// Forgets a task (a run).
    pub fn remove(&self, invoke_id: &str, run: u64) -> io::Result<()> {
        match fs::remove_dir_all(self.dir(invoke_id, run).path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Every task in the spool. Directories without a readable task file (the agent
    /// died while creating them) are removed.
    pub fn load(&self) -> Vec<Spooled> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&self.root) else {
            return out;
        };
        for e in entries.flatten() {
            let path = e.path();
            if !path.is_dir() {
                continue;
            }
            let dir = TaskDir { path };
            let file = fs::read(dir.path.join(TASK_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<TaskFile>(&b).ok());
            let Some(file) = file else {
                tracing::warn!(dir = %dir.path.display(), "spooled task without a task file: removed");
                let _ = fs::remove_dir_all(&dir.path);
                continue;
            };
            let result = dir.read_result();
            out.push(Spooled { file, dir, result });
        }
        out.sort_by_key(|s| s.file.received_at);
        out
    }
}

/// One task's spool directory.
#[derive(Debug, Clone)]
pub struct TaskDir {
    path: PathBuf,
}

impl TaskDir {
    /// A task directory at `path` (created if missing), outside any [`Spool`].
    pub fn at(path: impl Into<PathBuf>) -> io::Result<TaskDir> {
        let path = path.into();
        create_private_dir(&path)?;
        Ok(TaskDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn output_path(&self) -> PathBuf {
        self.path.join(OUTPUT_FILE)
    }

    pub fn script_path(&self, extension: &str) -> PathBuf {
        self.path.join(format!("script.{extension}"))
    }

    /// Creates (truncates) the output file.
    pub fn create_output(&self) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(self.output_path())
    }

    /// Bytes of output in the spool.
    pub fn output_len(&self) -> u64 {
        fs::metadata(self.output_path())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Up to `max` bytes of spooled output from `offset`.
    pub fn read_output(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let f = File::open(self.output_path())?;
        let mut buf = vec![0u8; max];
        let mut n = 0;
        while n < max {
            let k = f.read_at(&mut buf[n..], offset + n as u64)?;
            if k == 0 {
                break;
            }
            n += k;
        }
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write_started(&self, at: Millis) {
        let written = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(self.path.join(STARTED_FILE))
            .and_then(|mut f| f.write_all(at.to_string().as_bytes()));
        if let Err(e) = written {
            tracing::warn!(dir = %self.path.display(), "start time not spooled: {e}");
        }
    }

    pub fn read_started(&self) -> Option<Millis> {
        fs::read_to_string(self.path.join(STARTED_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn write_result(&self, result: &TaskResult) -> io::Result<()> {
        write_atomic(
            &self.path.join(RESULT_FILE),
            &serde_json::to_vec_pretty(result).map_err(io::Error::other)?,
            0o600,
        )
    }

    pub fn read_result(&self) -> Option<TaskResult> {
        let bytes = fs::read(self.path.join(RESULT_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The result of a run the agent did not see end: `Error` / `ExecutionInterrupted`
    /// with the output spooled so far.
    pub fn interrupted_result(&self, task: &Task) -> TaskResult {
        let mut view = HeadTail::default();
        let mut len = 0u64;
        if let Ok(mut f) = File::open(self.output_path()) {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                view.push(&buf[..n]);
                len += n as u64;
            }
        }
        let (output, dropped) = view.finish();
        let error = TaskError::ExecutionInterrupted;
        TaskResult {
            invoke_id: task.invoke_id.clone(),
            status: error.status(),
            exit_code: None,
            error: Some(error),
            start_time: self.read_started(),
            finish_time: now_millis(),
            output: oca_domain::command::encode_base64(&output),
            dropped,
            output_len: len,
            run: 0,
            more: false,
        }
    }
}

/// The name of a run's spool directory (and of its cgroup): `<invoke_id>` for a
/// one-time task (run 0), `<invoke_id>@<run>` for a run of a repeating task, the invoke
/// id as [`dir_name`] writes it.
pub(crate) fn run_name(invoke_id: &str, run: u64) -> String {
    match run {
        0 => dir_name(invoke_id),
        n => format!("{}@{n}", dir_name(invoke_id)),
    }
}

/// A file or directory name for an invoke id: the id itself when it is a plain name,
/// else `x` and its hex.
pub(crate) fn dir_name(invoke_id: &str) -> String {
    let plain = !invoke_id.is_empty()
        && invoke_id.len() <= 128
        && !invoke_id.starts_with('.')
        && invoke_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain && !invoke_id.starts_with('x') {
        invoke_id.to_string()
    } else {
        let hex: String = invoke_id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x{hex}")
    }
}

/// Creates `dir` if needed with mode 0700; an existing `dir` open to its group or to
/// others is closed to them (0700).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if !dir.is_dir() {
        create_private_dir(dir)?;
    }
    let mode = fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), "mode {:o} tightened to 0700", mode & 0o7777);
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates `dir` (and missing parents) with mode 0700, whatever the umask.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Closes `path` (a file, or a directory and everything under it) to group and others:
/// directories become 0700 and files lose their group and other bits (so 0600).
/// Symbolic links are left alone and not followed; a missing `path` is nothing to do.
/// Returns how many entries changed. For the parts of a state dir written by an agent
/// that ran with a looser umask (only the agent's own entries: the state dir may not be
/// the agent's alone).
pub fn tighten(path: &Path) -> io::Result<u64> {
    let mut changed = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() {
            for e in fs::read_dir(&p)?.flatten() {
                stack.push(e.path());
            }
            0o700
        } else if meta.is_file() {
            mode & !0o077
        } else {
            continue;
        };
        if mode != wanted {
            fs::set_permissions(&p, fs::Permissions::from_mode(wanted))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the
/// directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oca_domain::command::CommandType;
    use oca_domain::status::InvocationStatus;

    fn task(id: &str) -> Task {
        Task {
            invoke_id: id.into(),
            command_id: "c-1".into(),
            command_type: CommandType::RunShellScript,
            script: "echo hi".into(),
            working_dir: String::new(),
            username: String::new(),
            timeout_secs: 60,
            output_cap: 1 << 20,
            termination_mode: Default::default(),
            file: None,
            repeat: None,
            revision: 0,
        }
    }

    #[test]
    fn odd_invoke_ids_get_safe_directory_names() {
        assert_eq!(dir_name("t-abc123"), "t-abc123");
        assert_eq!(dir_name("../etc"), "x2e2e2f657463");
        assert_eq!(dir_name(""), "x");
        assert_ne!(
            dir_name("x41"),
            "x41",
            "cannot collide with an encoded name"
        );
    }

    #[test]
    fn tasks_results_and_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        let file = TaskFile {
            task: task("t-1"),
            run: 0,
            marker: "m".into(),
            cgroup: None,
            received_at: 1,
        };
        let dir = spool.create(&file).unwrap();
        dir.create_output().unwrap().write_all(b"partial").unwrap();
        dir.write_started(5);
        // Half-created directory: removed on load.
        fs::create_dir_all(spool.root().join("t-broken")).unwrap();

        let loaded = spool.load();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].file.task, file.task);
        assert!(loaded[0].result.is_none());
        assert!(!spool.root().join("t-broken").exists());

        let r = dir.interrupted_result(&file.task);
        assert_eq!(r.status, InvocationStatus::Error);
        assert_eq!(r.error, Some(TaskError::ExecutionInterrupted));
        assert_eq!(r.start_time, Some(5));
        assert_eq!(r.output_len, 7);
        assert_eq!(
            oca_domain::command::decode_base64(&r.output).unwrap(),
            b"partial"
        );
        dir.write_result(&r).unwrap();
        assert_eq!(spool.load()[0].result.as_ref(), Some(&r));
        assert_eq!(dir.read_output(2, 3).unwrap(), b"rti");
        assert_eq!(dir.read_output(7, 10).unwrap(), b"");

        // A run of a repeating task has a directory of its own.
        let run = TaskFile {
            run: 3,
            ..file.clone()
        };
        let run_dir = spool.create(&run).unwrap();
        assert_eq!(run_dir.path(), spool.root().join("t-1@3"));
        assert_eq!(spool.load().len(), 2);

        spool.remove("t-1", 0).unwrap();
        spool.remove("t-1", 0).unwrap();
        let left = spool.load();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].file.run, 3);
        spool.remove("t-1", 3).unwrap();
        assert!(spool.load().is_empty());
    }
}
