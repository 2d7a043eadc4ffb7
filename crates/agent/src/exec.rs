//! The executor: runs one [`Task`] and says how it ended.
//!
//! - **Script.** The script is written to a file and run by its interpreter, the way the
//!   kernel would run an executable script: a first line `#!/bin/bash -e` runs
//!   `/bin/bash -e <file>`, a script without `#!` runs as `/bin/sh <file>`. (The official
//!   agent also writes a file and runs `sh -c <file>`, so a `#!` line is honoured;
//!   running the interpreter ourselves needs only read permission on the file, so a
//!   `noexec` /tmp does not matter, and keeps the script out of `ps`.) PowerShell runs as
//!   `pwsh -NoLogo -NoProfile -NonInteractive -File <file>.ps1` when `pwsh` is on the
//!   PATH; otherwise, and for Bat scripts, the run is `Invalid` / `CommandNotApplicable`.
//!   The file lives in the task's spool directory when the script runs as the agent's
//!   own user; for another user, in a fresh private directory under the system temp dir
//!   (0700, owned by that user, as the official agent uses /tmp then), removed after the
//!   run.
//! - **User.** `task.username` (empty: the agent's own user) is looked up in the user
//!   database; unknown: `Invalid` / `AccountNotExists`. The child takes its uid, gid and
//!   supplementary groups and `HOME`, `USER`, `LOGNAME`, `SHELL` and a standard `PATH`
//!   (`LANG`, `LC_*` and `TZ` pass through from the agent), and the umask 022 of a
//!   normal login (the agent's own, 077, keeps its files private: not the scripts').
//! - **Directory.** `task.working_dir` (relative: from the home directory; empty: the home
//!   directory, or `/` for the agent's own user without one); missing:
//!   `Invalid` / `DirectoryNotExists` (as the official agent does, a named user whose home
//!   directory is missing has no default directory either).
//! - **Output.** stdout and stderr are one pipe, so their order is kept; bytes are bytes.
//!   Every byte goes into the 24 KB head-and-tail view; the first `output_cap` bytes go to
//!   the spool's output file, and the [`Observer`] hears how many are there.
//! - **End.** The run ends when the script's process exits (output still in the pipe is
//!   read until it stops arriving; descendants left running keep running, their later
//!   output is read and discarded). On timeout or stop the whole process tree is killed:
//!   the run's cgroup when the agent isolates runs with cgroups, then the session, the
//!   group, the descendants and the marker ([`crate::isolation`],
//!   [`crate::proc::kill_tree`]); TerminationMode Process kills the script's process
//!   only.
//!
//! | how it ended                     | status     | exit code | error              |
//! |----------------------------------|------------|-----------|--------------------|
//! | exit 0                           | Success    | 0         | —                  |
//! | exit n ≠ 0                       | Failed     | n         | ExitCodeNonzero    |
//! | killed by a signal (not by us)   | Failed     | -1        | ExitCodeNonzero    |
//! | timeout                          | Timeout    | 1         | ExecutionTimeout   |
//! | stopped                          | Terminated | -1        | —                  |
//! | `#!` interpreter missing         | Failed     | 127       | ExitCodeNonzero    |
//! | could not start                  | Error      | —         | ExecutionException |
//! | unknown user / directory / type  | Invalid    | —         | AccountNotExists … |
//!
//! The official agent reports exit code 1 on a timeout (it sets it explicitly) and the
//! Go exit code of the process otherwise, which is -1 for a process killed by a signal.

use crate::isolation::{self, TaskCgroup};
use crate::proc::{self, Exit, MARKER_ENV};
use crate::spool::TaskDir;
use oca_domain::command::{encode_base64, CommandType, TerminationMode};
use oca_domain::output::HeadTail;
use oca_domain::status::InvocationStatus;
use oca_domain::task_error::TaskError;
use oca_domain::time::{now_millis, Millis};
use oca_proto::{Task, TaskResult};
use std::ffi::{CString, OsString};
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// The umask a script starts with (the agent's own is 077).
pub const SCRIPT_UMASK: libc::mode_t = 0o022;
/// The PATH a script gets.
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The exit code reported for a run that timed out (as the official agent does).
pub const TIMEOUT_EXIT_CODE: i64 = 1;
/// The exit code reported for a run killed by a signal, a stop included.
pub const SIGNALED_EXIT_CODE: i64 = -1;
/// How long a tree kill may take before the agent gives up on processes stuck in the
/// kernel.
const KILL_LIMIT: Duration = Duration::from_secs(10);

/// Hears about a run as it goes.
pub trait Observer: Send + Sync {
    /// The process started.
    fn started(&self, _at: Millis) {}
    /// `spooled` bytes of output are now in the spool's output file.
    fn output(&self, _spooled: u64) {}
}

impl Observer for () {}

/// Runs `task`, spooling its output and script in `dir`, its processes marked with
/// `marker` and, when `cgroup` names one ([`crate::isolation::Isolation::cgroup_for`]),
/// born in that cgroup (created now, removed when the run ends unless processes
/// remain). `stop` resolving ends the run as `Terminated`.
pub async fn execute(
    task: &Task,
    dir: &TaskDir,
    marker: &str,
    cgroup: Option<&Path>,
    stop: impl Future<Output = ()>,
    observer: &dyn Observer,
) -> TaskResult {
    if let Some(file) = &task.file {
        return crate::file::deliver(task, file);
    }
    proc::init();
    let mut out = OutputSink::new(dir, task.output_cap, observer);

    let pwsh = match task.command_type {
        CommandType::RunShellScript => None,
        CommandType::RunPowerShellScript => match find_in_path("pwsh") {
            Some(p) => Some(p),
            None => return invalid(task, TaskError::CommandNotApplicable),
        },
        CommandType::RunBatScript => return invalid(task, TaskError::CommandNotApplicable),
    };
    let account = match Account::resolve(&task.username) {
        Ok(a) => a,
        Err(AccountError::NotFound) => return invalid(task, TaskError::AccountNotExists),
        Err(AccountError::Other(msg)) => return out.exception(task, &msg),
    };
    let Some(cwd) = working_dir(&task.working_dir, &account, !task.username.is_empty()) else {
        return invalid(task, TaskError::DirectoryNotExists);
    };

    let extension = if pwsh.is_some() { "ps1" } else { "sh" };
    let script = match ScriptFile::write(task, dir, &account, extension) {
        Ok(s) => s,
        Err(e) => return out.exception(task, &format!("cannot write the script file: {e}")),
    };
    let (program, args) = match &pwsh {
        Some(p) => (
            p.clone(),
            ["-NoLogo", "-NoProfile", "-NonInteractive", "-File"]
                .iter()
                .map(OsString::from)
                .chain([script.path().as_os_str().to_owned()])
                .collect(),
        ),
        None => match interpreter(&task.script, script.path()) {
            Ok(cmd) => cmd,
            Err(missing) => {
                out.push(
                    format!("oca-agent: {missing}: bad interpreter: No such file or directory\n")
                        .as_bytes(),
                );
                let now = now_millis();
                return out.result(
                    task,
                    InvocationStatus::Failed,
                    Some(127),
                    Some(TaskError::ExitCodeNonzero),
                    Some(now),
                    now,
                );
            }
        },
    };

    let cgroup = cgroup.and_then(|path| match TaskCgroup::create(path) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                invoke_id = %task.invoke_id,
                cgroup = %path.display(),
                "cannot create the run's cgroup: {e}; its processes are tracked by session \
                 and marker only"
            );
            None
        }
    });
    let cgroup_fd = cgroup.as_ref().map(TaskCgroup::procs_fd);
    let spawned = spawn(&program, &args, &account, &cwd, marker, cgroup_fd);
    let (pid, exit_rx, reader) = match spawned {
        Ok(s) => s,
        Err(e) => {
            return out.exception(
                task,
                &format!(
                    "cannot start {} as {} in {}: {e}",
                    program.display(),
                    account.name,
                    cwd.display()
                ),
            )
        }
    };
    let start = now_millis();
    dir.write_started(start);
    observer.started(start);

    let mut exit_rx = exit_rx;
    let mut reader = Some(reader);
    let mut buf = vec![0u8; 64 * 1024];
    let timeout = async {
        match task.timeout_secs {
            0 => std::future::pending().await,
            s => tokio::time::sleep(Duration::from_secs(s)).await,
        }
    };
    tokio::pin!(timeout);
    tokio::pin!(stop);

    enum End {
        Exited(Exit),
        Timeout,
        Stopped,
    }
    let end = loop {
        tokio::select! {
            biased;
            exit = &mut exit_rx => break End::Exited(exit.unwrap_or(Exit::Signal(9))),
            _ = &mut stop => break End::Stopped,
            _ = &mut timeout => break End::Timeout,
            r = read_some(&mut reader, &mut buf) => match r {
                Some(n) => out.push(&buf[..n]),
                None => reader = None,
            },
        }
    };
    if matches!(end, End::Timeout | End::Stopped) {
        match task.termination_mode {
            TerminationMode::ProcessTree => {
                if let Some(cg) = &cgroup {
                    cg.kill(KILL_LIMIT).await;
                }
                // Also what a root script moved out of its cgroup, if it kept its session
                // or its marker.
                proc::kill_tree(Some(pid), marker, KILL_LIMIT).await
            }
            TerminationMode::Process => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut exit_rx)
            .await
            .is_err()
        {
            tracing::warn!(invoke_id = %task.invoke_id, pid, "the killed script did not exit");
        }
    }
    let finish = now_millis();
    drain(&mut reader, &mut buf, &mut out).await;
    if let Some(rest) = reader.take() {
        tokio::spawn(discard(rest));
    }
    drop(script);
    drop(cgroup);

    let (status, code, error) = match end {
        End::Exited(Exit::Code(0)) => (InvocationStatus::Success, 0, None),
        End::Exited(Exit::Code(c)) => (
            InvocationStatus::Failed,
            c as i64,
            Some(TaskError::ExitCodeNonzero),
        ),
        End::Exited(Exit::Signal(_)) => (
            InvocationStatus::Failed,
            SIGNALED_EXIT_CODE,
            Some(TaskError::ExitCodeNonzero),
        ),
        End::Timeout => (
            InvocationStatus::Timeout,
            TIMEOUT_EXIT_CODE,
            Some(TaskError::ExecutionTimeout),
        ),
        End::Stopped => (InvocationStatus::Terminated, SIGNALED_EXIT_CODE, None),
    };
    out.result(task, status, Some(code), error, Some(start), finish)
}

/// A result for a task that could not run as asked.
fn invalid(task: &Task, error: TaskError) -> TaskResult {
    TaskResult::not_started(&task.invoke_id, 0, error, now_millis())
}

async fn read_some(reader: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> Option<usize> {
    match reader {
        Some(r) => match r.read(buf).await {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("reading script output: {e}");
                None
            }
        },
        None => std::future::pending().await,
    }
}

/// Reads what is left in the pipe once the script ended: until end of file, 100 ms
/// without output, or 2 s in all.
async fn drain(reader: &mut Option<pipe::Receiver>, buf: &mut [u8], out: &mut OutputSink<'_>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while reader.is_some() {
        tokio::select! {
            r = read_some(reader, buf) => match r {
                Some(n) => out.push(&buf[..n]),
                None => *reader = None,
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => return,
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Reads and drops the output of descendants that outlive the script, so they never
/// get SIGPIPE for writing to their inherited stdout.
async fn discard(mut reader: pipe::Receiver) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Where output goes: the head-and-tail view and the spool file.
struct OutputSink<'a> {
    view: HeadTail,
    file: Option<File>,
    cap: u64,
    spooled: u64,
    observer: &'a dyn Observer,
}

impl<'a> OutputSink<'a> {
    fn new(dir: &TaskDir, cap: u64, observer: &'a dyn Observer) -> Self {
        let file = match dir.create_output() {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(dir = %dir.path().display(), "cannot create the output file: {e}");
                None
            }
        };
        OutputSink {
            view: HeadTail::default(),
            file,
            cap,
            spooled: 0,
            observer,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.view.push(bytes);
        let room = self.cap.saturating_sub(self.spooled);
        let n = room.min(bytes.len() as u64) as usize;
        if n == 0 {
            return;
        }
        if let Some(f) = &mut self.file {
            match f.write_all(&bytes[..n]) {
                Ok(()) => {
                    self.spooled += n as u64;
                    self.observer.output(self.spooled);
                }
                Err(e) => {
                    tracing::error!("cannot spool output: {e}");
                    self.file = None;
                }
            }
        }
    }

    fn result(
        self,
        task: &Task,
        status: InvocationStatus,
        exit_code: Option<i64>,
        error: Option<TaskError>,
        start_time: Option<Millis>,
        finish_time: Millis,
    ) -> TaskResult {
        if let Some(f) = &self.file {
            if let Err(e) = f.sync_data() {
                tracing::warn!("cannot sync the output file: {e}");
            }
        }
        let (view, dropped) = self.view.finish();
        TaskResult {
            invoke_id: task.invoke_id.clone(),
            status,
            exit_code,
            error,
            start_time,
            finish_time,
            output: encode_base64(&view),
            dropped,
            output_len: self.spooled,
            run: 0,
            more: false,
        }
    }

    /// The run could not start: `Error` / `ExecutionException`, the reason in the output.
    fn exception(mut self, task: &Task, message: &str) -> TaskResult {
        tracing::warn!(invoke_id = %task.invoke_id, "{message}");
        self.push(format!("oca-agent: {message}\n").as_bytes());
        self.result(
            task,
            InvocationStatus::Error,
            None,
            Some(TaskError::ExecutionException),
            None,
            now_millis(),
        )
    }
}

/// The user a script runs as.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Whether the child must change its credentials.
    pub switch: bool,
}

#[derive(Debug)]
pub enum AccountError {
    NotFound,
    Other(String),
}

impl Account {
    /// The account for `username`; empty: the agent's own.
    pub fn resolve(username: &str) -> Result<Account, AccountError> {
        use nix::unistd::{getegid, geteuid, getgrouplist, User};
        if username.is_empty() {
            let uid = geteuid();
            let user = User::from_uid(uid).ok().flatten();
            let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
            return Ok(match user {
                Some(u) => Account {
                    name: u.name,
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                    groups: Vec::new(),
                    home: u.dir,
                    shell: u.shell,
                    switch: false,
                },
                None => Account {
                    name: env("USER")
                        .map(|v| v.to_string_lossy().into_owned())
                        .unwrap_or_else(|| uid.to_string()),
                    uid: uid.as_raw(),
                    gid: getegid().as_raw(),
                    groups: Vec::new(),
                    home: env("HOME")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| PathBuf::from("/")),
                    shell: PathBuf::from("/bin/sh"),
                    switch: false,
                },
            });
        }
        let user = match User::from_name(username) {
            Ok(Some(u)) => u,
            Ok(None) => return Err(AccountError::NotFound),
            Err(nix::errno::Errno::EINVAL) => return Err(AccountError::NotFound),
            Err(e) => {
                return Err(AccountError::Other(format!(
                    "cannot look up user {username}: {e}"
                )))
            }
        };
        let switch = user.uid != geteuid() || user.gid != getegid();
        if switch && !geteuid().is_root() {
            return Err(AccountError::Other(format!(
                "the agent runs as uid {} and cannot run scripts as {username}",
                geteuid()
            )));
        }
        let groups = CString::new(user.name.as_bytes())
            .ok()
            .and_then(|n| getgrouplist(&n, user.gid).ok())
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![user.gid.as_raw()]);
        Ok(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
            shell: user.shell,
            switch,
        })
    }
}

/// The directory a script runs in, or `None` when it does not exist.
fn working_dir(asked: &str, account: &Account, named_user: bool) -> Option<PathBuf> {
    if !asked.is_empty() {
        let p = account.home.join(asked); // an absolute `asked` replaces the home
        return p.is_dir().then_some(p);
    }
    if account.home.is_dir() {
        Some(account.home.clone())
    } else if named_user {
        None
    } else {
        Some(PathBuf::from("/"))
    }
}

/// The script on disk; a private directory is removed when this is dropped.
struct ScriptFile {
    path: PathBuf,
    private_dir: Option<PathBuf>,
}

impl ScriptFile {
    fn write(
        task: &Task,
        dir: &TaskDir,
        account: &Account,
        extension: &str,
    ) -> io::Result<ScriptFile> {
        let write = |path: &Path| -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(task.script.as_bytes())?;
            f.sync_all()
        };
        if !account.switch {
            let path = dir.script_path(extension);
            let _ = fs::remove_file(&path);
            write(&path)?;
            return Ok(ScriptFile {
                path,
                private_dir: None,
            });
        }
        let suffix: u64 = rand::random();
        let private = std::env::temp_dir().join(format!("oca-script-{suffix:016x}"));
        fs::DirBuilder::new().mode(0o700).create(&private)?;
        let file = ScriptFile {
            path: private.join(format!("script.{extension}")),
            private_dir: Some(private.clone()),
        };
        write(&file.path)?;
        std::os::unix::fs::chown(&file.path, Some(account.uid), Some(account.gid))?;
        std::os::unix::fs::chown(&private, Some(account.uid), Some(account.gid))?;
        Ok(file)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        if let Some(d) = &self.private_dir {
            if let Err(e) = fs::remove_dir_all(d) {
                tracing::warn!(dir = %d.display(), "cannot remove the script directory: {e}");
            }
        }
    }
}

/// The program and arguments that run a shell script file, honouring a `#!` line; the
/// error is an interpreter that does not exist.
fn interpreter(script: &str, path: &Path) -> Result<(PathBuf, Vec<OsString>), String> {
    let first = script
        .as_bytes()
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or(b"");
    let first = &first[..first.len().min(255)];
    if let Some(rest) = first.strip_prefix(b"#!") {
        let rest = String::from_utf8_lossy(rest);
        let rest = rest.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
        if !rest.is_empty() {
            let (interp, arg) = match rest.find([' ', '\t']) {
                Some(i) => (&rest[..i], rest[i..].trim_matches([' ', '\t'])),
                None => (rest, ""),
            };
            if !Path::new(interp).is_file() {
                return Err(interp.to_string());
            }
            let mut args = Vec::new();
            if !arg.is_empty() {
                args.push(OsString::from(arg));
            }
            args.push(path.as_os_str().to_owned());
            return Ok((PathBuf::from(interp), args));
        }
    }
    Ok((PathBuf::from("/bin/sh"), vec![path.as_os_str().to_owned()]))
}

/// `name` in the agent's PATH or the standard one.
fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let agent_path = std::env::var("PATH").unwrap_or_default();
    agent_path
        .split(':')
        .chain(SCRIPT_PATH.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The environment of a script.
fn environment(account: &Account, marker: &str) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.as_bytes();
            k == b"LANG" || k == b"LANGUAGE" || k == b"TZ" || k.starts_with(b"LC_")
        })
        .collect();
    let name = OsString::from(&account.name);
    env.extend([
        ("HOME".into(), account.home.clone().into_os_string()),
        ("USER".into(), name.clone()),
        ("LOGNAME".into(), name),
        ("SHELL".into(), account.shell.clone().into_os_string()),
        ("PATH".into(), SCRIPT_PATH.into()),
        (MARKER_ENV.into(), marker.into()),
    ]);
    env
}

/// Starts the script's process: in the cgroup whose `cgroup.procs` is open as
/// `cgroup_fd` if any, its own session, umask 022, the account's credentials, the
/// working directory, stdin from /dev/null, stdout and stderr on one pipe.
fn spawn(
    program: &Path,
    args: &[OsString],
    account: &Account,
    cwd: &Path,
    marker: &str,
    cgroup_fd: Option<RawFd>,
) -> io::Result<(i32, tokio::sync::oneshot::Receiver<Exit>, pipe::Receiver)> {
    let (reader, writer) = io::pipe()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(environment(account, marker))
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let cwd = CString::new(cwd.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let (switch, uid, gid) = (account.switch, account.uid, account.gid);
    let groups: Vec<libc::gid_t> = account.groups.clone();
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == -1 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // First, so that everything the script starts is born in the cgroup.
            if let Some(fd) = cgroup_fd {
                isolation::enter_in_child(fd)?;
            }
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            libc::umask(SCRIPT_UMASK);
            if switch {
                check(libc::setgroups(groups.len() as _, groups.as_ptr()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            check(libc::chdir(cwd.as_ptr()))
        });
    }
    let (pid, exit) = proc::spawn(&mut cmd)?;
    drop(cmd); // closes our copies of the pipe's write end
    let reader = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    Ok((pid, exit, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines_pick_the_interpreter() {
        let p = Path::new("/s");
        let (prog, args) = interpreter("echo hi", p).unwrap();
        assert_eq!(
            (prog, args),
            (PathBuf::from("/bin/sh"), vec![OsString::from("/s")])
        );
        let (prog, args) = interpreter("#!/bin/sh -e\r\necho", p).unwrap();
        assert_eq!(prog, PathBuf::from("/bin/sh"));
        assert_eq!(args, vec![OsString::from("-e"), OsString::from("/s")]);
        let (prog, _) = interpreter("#! /bin/sh\n", p).unwrap();
        assert_eq!(prog, PathBuf::from("/bin/sh"));
        assert_eq!(
            interpreter("#!/no/such/shell\n", p).unwrap_err(),
            "/no/such/shell"
        );
        let (prog, _) = interpreter("#!\necho", p).unwrap();
        assert_eq!(prog, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn relative_and_missing_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let acct = Account {
            name: "x".into(),
            uid: 0,
            gid: 0,
            groups: vec![],
            home: tmp.path().to_path_buf(),
            shell: "/bin/sh".into(),
            switch: false,
        };
        fs::create_dir(tmp.path().join("sub")).unwrap();
        assert_eq!(
            working_dir("sub", &acct, true),
            Some(tmp.path().join("sub"))
        );
        assert_eq!(
            working_dir("/tmp", &acct, true),
            Some(PathBuf::from("/tmp"))
        );
        assert_eq!(working_dir("", &acct, true), Some(tmp.path().to_path_buf()));
        assert_eq!(working_dir("nope", &acct, true), None);
        let homeless = Account {
            home: "/no/such/home".into(),
            ..acct
        };
        assert_eq!(working_dir("", &homeless, true), None);
        assert_eq!(working_dir("", &homeless, false), Some(PathBuf::from("/")));
    }
}
