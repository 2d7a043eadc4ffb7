//! Task isolation: keeping every process a run starts where its timeout or its stop
//! can reach it.
//!
//! The method is chosen once, at agent start (`--task-isolation`, [`Mode`]), reported
//! to the server in `Hello` ([`Isolation::name`]) and logged:
//!
//! - **cgroup** (Linux cgroup v2 with `cgroup.kill`, kernel 5.14 or later): each run
//!   gets a cgroup of its own, `<the agent's cgroup>/oca-tasks/<key>.<run>`. `<key>`
//!   names the agent (a hash of its state directory: several agents on one host never
//!   share a name) and `<run>` is the run's spool name (`<invoke_id>`,
//!   `<invoke_id>@<n>`). The script's process enters it in the forked child before it
//!   execs (a write of `0` to the cgroup's `cgroup.procs`, through a descriptor opened
//!   before the fork: nothing allocates after the fork), so every process the script
//!   starts is born inside, whatever it does with its session, its environment or its
//!   parent. A timeout or a stop (TerminationMode ProcessTree) writes `cgroup.kill`,
//!   waits (bounded) until `cgroup.events` says `populated 0`, and removes the cgroup.
//!   No controller is enabled anywhere, so the no-internal-processes rule never applies
//!   (the agent may live in the cgroup it creates children in, as a systemd service
//!   with `Delegate=yes` does).
//! - **process-tree** (the fallback, and the method before cgroups): the session, the
//!   process group, the descendants and the environment marker
//!   ([`crate::proc::kill_tree`]). It cannot reach a process that left the session,
//!   lost its parent (a double fork: re-parented to the agent, a subreaper) and cleared
//!   its environment: `( setsid env -i sleep 100 & )`, or a daemon started through
//!   `sudo` (which resets the environment) that double-forks and calls `setsid`.
//!
//! Under cgroup the process-tree sweep still runs after `cgroup.kill`: a script running
//! as root can move itself out of its cgroup (nothing stops root), and the sweep still
//! catches what kept the session or the marker. A script running as another user
//! cannot leave: moving a process needs write access to the `cgroup.procs` of the
//! common ancestor, which is root's.
//!
//! `auto` (the default) uses cgroup when [`Isolation::detect`]'s probe works (the
//! cgroup2 mount from `/proc/self/mountinfo`, the agent's cgroup from the `0::` line of
//! `/proc/self/cgroup`, a child cgroup created, a process put in it, `cgroup.kill`
//! written, the child removed), else process-tree with a warning saying why (not root,
//! no cgroup2, read-only, kernel too old). `cgroup` refuses to start without it.
//!
//! ## Lifetime of the cgroups
//! A run's cgroup goes when its run ends, unless processes are left in it (what a
//! script that exited left running, as such processes always were, or what
//! TerminationMode Process does not kill): it then stays and [`Isolation::tidy`] (after
//! each run, and at start) removes it once empty. At start, the agent kills the cgroups
//! of the runs its spool says it did not see end, as it kills their marked processes:
//! a run cannot survive its agent's restart, and is reported `ExecutionInterrupted`
//! (by the agent from its spool, or by the server when the spool is lost).

use crate::proc::{self, Exit};
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// [`Isolation::name`] under cgroup.
pub const CGROUP: &str = "cgroup";
/// [`Isolation::name`] under process-tree.
pub const PROCESS_TREE: &str = "process-tree";
/// The directory, in the agent's own cgroup, that holds the runs' cgroups.
pub const TASKS_CGROUP: &str = "oca-tasks";

/// What `--task-isolation` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// cgroup when it works here, else process-tree (with a warning saying why).
    #[default]
    Auto,
    /// cgroup, or the agent does not start.
    Cgroup,
    /// The session, process group, descendants and environment marker only.
    ProcessTree,
}

/// The method in force.
#[derive(Debug, Clone)]
pub struct Isolation {
    cgroups: Option<Arc<Cgroups>>,
}

/// Where this agent's runs get their cgroups.
#[derive(Debug)]
struct Cgroups {
    /// `<the agent's cgroup>/oca-tasks`.
    base: PathBuf,
    /// This agent's prefix of the names in `base`.
    key: String,
}

/// The cgroups of runs under way in this process (a [`TaskCgroup`] each), which
/// [`Isolation::tidy`] must not remove between their creation and their first process.
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

impl Isolation {
    /// The fallback: no cgroups.
    pub fn process_tree() -> Isolation {
        Isolation { cgroups: None }
    }

    /// The method `mode` gives on this host for the agent of `state_dir`, logged. Fails
    /// only for [`Mode::Cgroup`] when cgroups cannot be used, saying why.
    pub async fn detect(mode: Mode, state_dir: &Path) -> Result<Isolation, String> {
        if mode == Mode::ProcessTree {
            tracing::info!("task isolation: {PROCESS_TREE} (as asked)");
            return Ok(Isolation::process_tree());
        }
        match probe(state_dir).await {
            Ok(c) => {
                tracing::info!(cgroups = %c.base.display(), "task isolation: {CGROUP}");
                Ok(Isolation {
                    cgroups: Some(Arc::new(c)),
                })
            }
            Err(why) if mode == Mode::Auto => {
                tracing::warn!(
                    "task isolation: {PROCESS_TREE}, as cgroups cannot be used: {why}; \
                     a process that leaves the session, its parent and its environment \
                     marker escapes a timeout or a stop"
                );
                Ok(Isolation::process_tree())
            }
            Err(why) => Err(why),
        }
    }

    /// `cgroup` or `process-tree`, as reported to the server.
    pub fn name(&self) -> &'static str {
        match self.cgroups {
            Some(_) => CGROUP,
            None => PROCESS_TREE,
        }
    }

    /// The cgroup of a run (named like its spool directory), `None` under process-tree.
    pub fn cgroup_for(&self, invoke_id: &str, run: u64) -> Option<PathBuf> {
        let c = self.cgroups.as_ref()?;
        let name = format!("{}.{}", c.key, crate::spool::run_name(invoke_id, run));
        Some(c.base.join(name))
    }

    /// Removes the run cgroups in `oca-tasks` that are empty and that no run uses:
    /// this agent's that are not in use, and other agents' (whose state dir may be
    /// gone) once [`STALE_AFTER`] old, as a run's cgroup takes its first process
    /// within moments of its creation.
    pub fn tidy(&self) {
        let Some(c) = &self.cgroups else { return };
        let Ok(entries) = fs::read_dir(&c.base) else {
            return;
        };
        let prefix = format!("{}.", c.key);
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            let ours = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix));
            let stale = || {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= STALE_AFTER)
            };
            if !ours && !stale() {
                continue;
            }
            let live = LIVE.lock().expect("cgroup registry");
            if !live.contains(&path) {
                // Fails (EBUSY) while processes remain in it: it stays for a later tidy.
                let _ = remove(&path);
            }
        }
    }
}

/// How old another agent's empty run cgroup must be for [`Isolation::tidy`] to remove
/// it.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// A run's cgroup, while the run is under way. Dropping it removes the cgroup unless
/// processes remain in it.
#[derive(Debug)]
pub struct TaskCgroup {
    path: PathBuf,
    /// `cgroup.procs`, opened (close-on-exec) before the fork so that the child enters
    /// with a plain `write`.
    procs: fs::File,
}

impl TaskCgroup {
    /// Creates the cgroup at `path` (an existing one is taken as it is).
    pub fn create(path: &Path) -> io::Result<TaskCgroup> {
        LIVE.lock()
            .expect("cgroup registry")
            .insert(path.to_path_buf());
        let made = match fs::create_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
        .and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .open(path.join("cgroup.procs"))
        });
        match made {
            Ok(procs) => Ok(TaskCgroup {
                path: path.to_path_buf(),
                procs,
            }),
            Err(e) => {
                LIVE.lock().expect("cgroup registry").remove(path);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor [`enter_in_child`] writes to.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Kills every process in the cgroup and waits, at most `limit`, until none is
    /// left; false if some remain (stuck in the kernel).
    pub async fn kill(&self, limit: Duration) -> bool {
        kill(&self.path, limit).await
    }
}

impl Drop for TaskCgroup {
    fn drop(&mut self) {
        let _ = remove(&self.path);
        LIVE.lock().expect("cgroup registry").remove(&self.path);
    }
}

/// Puts the calling process into the cgroup whose `cgroup.procs` is open as `fd`. For
/// a forked child before it execs: one `write` system call, no allocation.
pub fn enter_in_child(fd: RawFd) -> io::Result<()> {
    // SAFETY: writes one byte from a static buffer to a descriptor the caller owns.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kills every process in the cgroup at `path` (`cgroup.kill`) and waits, at most
/// `limit`, until `cgroup.events` says it is empty. True when it is empty (or gone).
pub async fn kill(path: &Path, limit: Duration) -> bool {
    let written = fs::OpenOptions::new()
        .write(true)
        .open(path.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
        Err(e) => tracing::warn!(cgroup = %path.display(), "cannot write cgroup.kill: {e}"),
    }
    let deadline = Instant::now() + limit;
    loop {
        if !populated(path) {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(cgroup = %path.display(), "processes survive cgroup.kill");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether processes are in the cgroup at `path` (`populated 1` in `cgroup.events`); a
/// cgroup that cannot be read (gone) has none.
pub fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// Removes the cgroup at `path` and the cgroups a script made in it, deepest first;
/// fails while processes remain.
fn remove(path: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = remove(&e.path());
            }
        }
    }
    fs::remove_dir(path)
}

/// Kills a run's leftover cgroup (a run the agent did not see end) and removes it.
pub async fn kill_leftover(path: &Path) {
    if !path.is_dir() {
        return;
    }
    if kill(path, Duration::from_secs(5)).await {
        if let Err(e) = remove(path) {
            tracing::warn!(cgroup = %path.display(), "cannot remove the cgroup: {e}");
        }
    }
}

/// Whether cgroups work here for the agent of `state_dir`: the base directory exists
/// (created if needed), a probe cgroup can be created, take a process, be killed and be
/// removed. The error says why not.
async fn probe(state_dir: &Path) -> Result<Cgroups, String> {
    let own = own_cgroup_dir()?;
    let base = own.join(TASKS_CGROUP);
    match fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", base.display())),
    }
    let c = Cgroups {
        base,
        key: agent_key(state_dir),
    };
    let path = c.base.join(format!("{}.probe", c.key));
    let _ = remove(&path);
    let cg =
        TaskCgroup::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    if !path.join("cgroup.kill").exists() {
        return Err(format!(
            "{} has no cgroup.kill (Linux 5.14 or later is needed)",
            path.display()
        ));
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "exit 0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fd = cg.procs_fd();
    // SAFETY: runs in the forked child before exec; one write system call.
    unsafe {
        cmd.pre_exec(move || enter_in_child(fd));
    }
    let (_, exit) = proc::spawn(&mut cmd)
        .map_err(|e| format!("cannot put a process into {}: {e}", path.display()))?;
    match tokio::time::timeout(Duration::from_secs(10), exit).await {
        Ok(Ok(Exit::Code(0))) => {}
        other => {
            return Err(format!(
                "the probe process in {} failed: {other:?}",
                path.display()
            ))
        }
    }
    if !cg.kill(Duration::from_secs(5)).await {
        return Err(format!("{} could not be emptied", path.display()));
    }
    drop(cg);
    if path.exists() {
        return Err(format!("{} could not be removed", path.display()));
    }
    Ok(c)
}

/// The agent's own cgroup, as a directory of the mounted cgroup2 file system.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let cgroup = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = unified_path(&cgroup)
        .ok_or("the agent is in no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)")?;
    let mounts = cgroup2_mounts(&mountinfo);
    if mounts.is_empty() {
        return Err("no cgroup2 file system is mounted".into());
    }
    mounts
        .iter()
        .find_map(|(root, point)| cgroup_dir(root, point, &path))
        .ok_or_else(|| format!("the agent's cgroup {path} is under no cgroup2 mount"))
}

/// The cgroup v2 path of the `0::` line of `/proc/<pid>/cgroup`.
fn unified_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
        .filter(|p| p.starts_with('/'))
}

/// Every cgroup2 mount in a `mountinfo`: (root of the mount in the hierarchy, mount
/// point).
fn cgroup2_mounts(mountinfo: &str) -> Vec<(String, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut f = left.split_whitespace();
            let root = unescape(f.nth(3)?);
            let point = unescape(f.next()?);
            Some((root, PathBuf::from(point)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` under a cgroup2 mount of `root` at `point`; `None`
/// when the mount does not show it.
fn cgroup_dir(root: &str, point: &Path, path: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        path
    } else if path == root {
        ""
    } else {
        let rest = path.strip_prefix(root)?;
        if !rest.starts_with('/') {
            return None;
        }
        rest
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        point.to_path_buf()
    } else {
        point.join(rel)
    })
}

/// This agent's prefix in `oca-tasks`: 12 hex digits of a hash (64-bit FNV-1a, stable
/// across builds) of its state directory's canonical path.
fn agent_key(state_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let path = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_cgroup2_mount_is_found_in_hybrid_and_unified_layouts() {
        assert_eq!(
            cgroup2_mounts(HYBRID),
            vec![("/".to_string(), PathBuf::from("/sys/fs/cgroup/unified"))]
        );
        let unified =
            "25 19 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mounts(unified),
            vec![("/".to_string(), PathBuf::from("/sys/fs/cgroup"))]
        );
        let spaced = "25 19 0:22 /a\\040b /mnt/c\\040g rw - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_mounts(spaced),
            vec![("/a b".to_string(), PathBuf::from("/mnt/c g"))]
        );
        assert!(
            cgroup2_mounts("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n")
                .is_empty()
        );
    }

    #[test]
    fn the_agents_cgroup_is_the_0_line() {
        let v1 = "9:name=systemd:/\n4:memory:/x\n";
        assert_eq!(unified_path(v1), None);
        assert_eq!(unified_path(&format!("{v1}0::/\n")), Some("/".into()));
        assert_eq!(
            unified_path("0::/system.slice/oca-agent.service\n"),
            Some("/system.slice/oca-agent.service".into())
        );
    }

    #[test]
    fn the_cgroup_directory_is_relative_to_the_mounts_root() {
        let point = Path::new("/sys/fs/cgroup");
        assert_eq!(cgroup_dir("/", point, "/"), Some(point.to_path_buf()));
        assert_eq!(
            cgroup_dir("/", point, "/system.slice/a.service"),
            Some(point.join("system.slice/a.service"))
        );
        assert_eq!(
            cgroup_dir("/docker/abc", point, "/docker/abc/sub"),
            Some(point.join("sub"))
        );
        assert_eq!(
            cgroup_dir("/docker/abc", point, "/docker/abc"),
            Some(point.to_path_buf())
        );
        assert_eq!(cgroup_dir("/docker/abc", point, "/docker/abcd"), None);
        assert_eq!(cgroup_dir("/docker/abc", point, "/other"), None);
    }

    #[test]
    fn agents_get_distinct_stable_keys() {
        let a = agent_key(Path::new("/no/such/state-a"));
        assert_eq!(a, agent_key(Path::new("/no/such/state-a")));
        assert_ne!(a, agent_key(Path::new("/no/such/state-b")));
        assert_eq!(a.len(), 12);
        let iso = Isolation {
            cgroups: Some(Arc::new(Cgroups {
                base: "/cg/oca-tasks".into(),
                key: "k".into(),
            })),
        };
        assert_eq!(
            iso.cgroup_for("t-1", 0),
            Some(PathBuf::from("/cg/oca-tasks/k.t-1"))
        );
        assert_eq!(
            iso.cgroup_for("t-1", 3),
            Some(PathBuf::from("/cg/oca-tasks/k.t-1@3"))
        );
        assert_eq!(iso.name(), CGROUP);
        assert_eq!(Isolation::process_tree().cgroup_for("t-1", 0), None);
        assert_eq!(Isolation::process_tree().name(), PROCESS_TREE);
    }
}
