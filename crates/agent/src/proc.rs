//! Processes: spawning a task's process so its exit is never missed, reaping every
//! child (the agent is a child subreaper, so orphaned descendants of tasks come back to
//! it), and killing a task's whole process tree.
//!
//! ## Reaping
//! The agent sets `PR_SET_CHILD_SUBREAPER`, so a task's daemonized or double-forked
//! descendants are re-parented to the agent rather than to init. One dedicated thread
//! reaps every child of the process: it blocks in `waitid(P_ALL, WEXITED | WNOWAIT)`
//! (no polling), then reaps the child with `waitpid` under the registry lock and hands
//! the status to whoever spawned it (or drops it for an adopted orphan). When the
//! process has no children at all the thread sleeps on a condition variable until the
//! next spawn. Spawns hold the same lock, so a child that exits at once is never reaped
//! before it is registered.
//!
//! Consequence: this module owns the children of the whole process. Code in the same
//! process must not wait for children of its own (the agent binary has none; the
//! tests spawn processes only through this module).
//!
//! ## Killing a tree
//! [`kill_tree`] repeatedly, until nothing is left, SIGKILLs every process that is in
//! the task's process group or session, descends from the task's root process, or
//! carries the task's marker in its environment (`OCA_TASK_MARKER=<random>`, inherited
//! by every descendant, even one that called `setsid()` or was double-forked and so left
//! both the group and the parent chain).

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The environment variable that marks every process of a task.
pub const MARKER_ENV: &str = "OCA_TASK_MARKER";

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

struct Registry {
    waiters: BTreeMap<i32, oneshot::Sender<Exit>>,
    /// False only when the reaper saw that the process has no children at all.
    may_have_children: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    waiters: BTreeMap::new(),
    may_have_children: true,
});
static WAKE: Condvar = Condvar::new();
static INIT: Once = Once::new();

/// Makes this process a child subreaper and starts the reaper thread (once).
pub fn init() {
    INIT.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!("could not become a child subreaper: {e}");
        }
        std::thread::Builder::new()
            .name("oca-reaper".into())
            .stack_size(64 * 1024)
            .spawn(reaper_loop)
            .expect("the reaper thread starts");
    });
}

fn reaper_loop() {
    loop {
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let mut reg = REGISTRY.lock().expect("reaper lock");
                // The child may have been reaped by a failed `spawn` meanwhile (ECHILD).
                if let Ok(ws) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    let exit = match ws {
                        WaitStatus::Exited(_, code) => Some(Exit::Code(code)),
                        WaitStatus::Signaled(_, sig, _) => Some(Exit::Signal(sig as i32)),
                        _ => None,
                    };
                    if let Some(exit) = exit {
                        if let Some(tx) = reg.waiters.remove(&pid.as_raw()) {
                            let _ = tx.send(exit);
                        }
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                let mut reg = REGISTRY.lock().expect("reaper lock");
                // Spawns happen under the lock: check again before sleeping.
                let none = matches!(
                    waitid(
                        Id::All,
                        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
                    ),
                    Err(Errno::ECHILD)
                );
                if none {
                    reg.may_have_children = false;
                    while !reg.may_have_children {
                        reg = WAKE.wait(reg).expect("reaper lock");
                    }
                }
            }
            Err(e) => {
                tracing::error!("waitid failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Spawns `cmd` and returns its pid and a receiver for its exit.
pub fn spawn(cmd: &mut Command) -> std::io::Result<(i32, oneshot::Receiver<Exit>)> {
    init();
    let mut reg = REGISTRY.lock().expect("reaper lock");
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = oneshot::channel();
    reg.waiters.insert(pid, tx);
    reg.may_have_children = true;
    WAKE.notify_all();
    drop(reg);
    // Dropping a std `Child` neither waits nor kills; the reaper owns it now.
    drop(child);
    Ok((pid, rx))
}

/// One line of `/proc/<pid>/stat`, the fields we need.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Zombie or dead: nothing left to kill.
    pub gone: bool,
}

fn parse_stat(s: &str) -> Option<ProcStat> {
    let pid = s.split_whitespace().next()?.parse().ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        ppid,
        pgrp,
        session,
        gone: matches!(state, "Z" | "X" | "x"),
    })
}

/// Every process visible in `/proc`.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parse_stat(&std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?)
    })
    .collect()
}

/// Whether the process's environment carries `OCA_TASK_MARKER=<marker>`.
pub fn has_marker(pid: i32, marker: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{MARKER_ENV}={marker}");
    env.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

/// The live processes that belong to a task: in the session or group of `root` (the
/// task's process, a session leader), descended from it, or carrying the marker.
pub fn task_processes(root: Option<i32>, marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let procs = all_processes();
    let mut members: HashSet<i32> = HashSet::new();
    if let Some(root) = root {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in &procs {
            children.entry(p.ppid).or_default().push(p.pid);
            if p.pgrp == root || p.session == root {
                members.insert(p.pid);
            }
        }
        // The root is a session leader; a process that reused its pid is not ours.
        let root_is_ours = procs
            .iter()
            .find(|p| p.pid == root)
            .is_none_or(|p| p.session == root);
        let mut seen = HashSet::new();
        let mut stack = if root_is_ours { vec![root] } else { Vec::new() };
        while let Some(p) = stack.pop() {
            if seen.insert(p) {
                members.insert(p);
                if let Some(c) = children.get(&p) {
                    stack.extend(c.iter().copied());
                }
            }
        }
    }
    procs
        .iter()
        .filter(|p| !p.gone && p.pid != me)
        .filter(|p| members.contains(&p.pid) || has_marker(p.pid, marker))
        .map(|p| p.pid)
        .collect()
}

/// Kills a task's whole process tree and returns once no process of it is left (or
/// after `limit`, for processes stuck in the kernel).
pub async fn kill_tree(root: Option<i32>, marker: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    if let Some(root) = root {
        let _ = killpg(Pid::from_raw(root), Signal::SIGKILL);
    }
    loop {
        let victims = task_processes(root, marker);
        if victims.is_empty() {
            return;
        }
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if Instant::now() >= deadline {
            tracing::warn!(?victims, "processes of the task survive SIGKILL");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let s = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 1 0";
        let p = parse_stat(s).unwrap();
        assert_eq!(
            (p.pid, p.ppid, p.pgrp, p.session, p.gone),
            (1234, 1, 1234, 1234, false)
        );
        let z = parse_stat("9 (x) Z 1 9 9 0").unwrap();
        assert!(z.gone);
    }

    #[test]
    fn this_process_is_listed() {
        let me = std::process::id() as i32;
        assert!(all_processes().iter().any(|p| p.pid == me));
    }
}
