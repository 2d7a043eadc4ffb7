//! Task isolation against real processes: what a timeout or a stop reaches under each
//! method, and across an agent restart.
//!
//! The escaping process of these tests leaves its session (`setsid`), its parent (the
//! subshell that started it exits) and its environment marker (`env -i`): the
//! process-tree method cannot find it, a cgroup holds it. The cgroup cases need root
//! and cgroup v2 with `cgroup.kill`; elsewhere they say so and check the fallback only.

mod common;

use common::*;
use oca_agent::exec::{execute, Observer};
use oca_agent::isolation::{self, Isolation, Mode};
use oca_agent::spool::TaskDir;
use oca_domain::command::{decode_base64, TerminationMode};
use oca_domain::status::InvocationStatus as S;
use oca_domain::task_error::TaskError;
use oca_proto::{AgentMsg, ServerMsg, Task, TaskResult};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A number of seconds no other process sleeps for: finds our sleeps in /proc.
fn unique_secs() -> String {
    (100_000 + rand::random::<u32>() % 800_000).to_string()
}

/// Live (not zombie) processes whose command line is `…sleep <secs>`.
fn sleeping(secs: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true);
            args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == secs.as_bytes() && !zombie
        })
        .collect()
}

/// Waits until no live process sleeps `secs`.
async fn none_sleeping_within(secs: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if sleeping(secs).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill_sleeping(secs: &str) {
    for pid in sleeping(secs) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Whether this host should give cgroups: root, a cgroup2 mount, Linux 5.14 or later.
fn cgroups_expected() -> bool {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - cgroup2 ")));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    nix::unistd::geteuid().is_root() && mounted && (major, minor) >= (5, 14)
}

/// Cgroup isolation for an agent whose state is `state`; `None` (said) where the host
/// cannot give it.
async fn cgroups(state: &Path) -> Option<Isolation> {
    match Isolation::detect(Mode::Cgroup, state).await {
        Ok(i) => {
            assert_eq!(i.name(), isolation::CGROUP);
            Some(i)
        }
        Err(why) => {
            assert!(
                !cgroups_expected(),
                "this host should allow cgroup isolation: {why}"
            );
            eprintln!("no cgroup isolation here ({why}): cgroup cases not run");
            None
        }
    }
}

fn task(script: &str) -> Task {
    Task {
        invoke_id: "t-iso".into(),
        timeout_secs: 2,
        ..common::task("t-iso", script)
    }
}

/// A directory anyone may write (the sudo-like daemon runs as nobody).
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// A script that starts `sleep <escaping>` out of its session, parent and environment
/// (it writes its pid to `<dir>/escaped.pid`), then, when `setpriv` is there, a daemon
/// as `sudo` would start it (`sleep <daemon>` as nobody, clean environment, double
/// fork, own session, descriptors closed; `<dir>/daemon.pid`); waits until both run,
/// says `started` and sleeps.
fn escaping_script(dir: &Path, escaping: &str, daemon: &str) -> String {
    let d = dir.display();
    let daemon_sh = dir.join("daemon.sh");
    std::fs::write(
        &daemon_sh,
        format!(
            "exec </dev/null >/dev/null 2>&1\necho $$ > {d}/daemon.pid\nexec /bin/sleep {daemon}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&daemon_sh, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sudo_like = if Path::new("/usr/bin/setpriv").exists() {
        format!(
            "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups env -i \
             /bin/sh -c '( setsid /bin/sh {d}/daemon.sh & )'\n\
             while [ ! -s {d}/daemon.pid ]; do sleep 0.02; done\n"
        )
    } else {
        eprintln!("setpriv is not installed: no sudo-like daemon");
        String::new()
    };
    format!(
        "( setsid env -i /bin/sh -c 'echo $$ > {d}/escaped.pid; exec /bin/sleep {escaping}' & )\n\
         while [ ! -s {d}/escaped.pid ]; do sleep 0.02; done\n\
         {sudo_like}\
         echo started\n\
         sleep 1000\n"
    )
}

struct Ran {
    result: TaskResult,
    view: Vec<u8>,
    marker: String,
}

/// Says when the first output is spooled.
struct FirstOutput(Mutex<Option<oneshot::Sender<()>>>);

impl Observer for FirstOutput {
    fn output(&self, _spooled: u64) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// Runs `task` in `cgroup` (if any); stops it at its first output when `stop_on_output`.
async fn run(task: Task, cgroup: Option<&Path>, stop_on_output: bool) -> Ran {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TaskDir::at(tmp.path().join("run")).unwrap();
    let marker = format!("{:032x}", rand::random::<u128>());
    let (tx, rx) = oneshot::channel();
    let observer = FirstOutput(Mutex::new(Some(tx)));
    let stop = async move {
        if !stop_on_output || rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = execute(&task, &dir, &marker, cgroup, stop, &observer).await;
    let view = decode_base64(&result.output).unwrap();
    Ran {
        result,
        view,
        marker,
    }
}

fn pid_in(dir: &Path, file: &str) -> Option<i32> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn under_cgroup_a_timeout_kills_what_left_session_parent_and_marker() {
    let state = tempfile::tempdir().unwrap();
    let Some(iso) = cgroups(state.path()).await else {
        return;
    };
    let dir = open_dir();
    let (escaping, daemon) = (unique_secs(), unique_secs());
    let cgroup = iso.cgroup_for("t-iso", 0).unwrap();
    let began = Instant::now();
    let r = run(
        task(&escaping_script(dir.path(), &escaping, &daemon)),
        Some(&cgroup),
        false,
    )
    .await;
    let (escaping_ok, daemon_ok) = (
        none_sleeping_within(&escaping, Duration::from_secs(3)).await,
        none_sleeping_within(&daemon, Duration::from_secs(3)).await,
    );
    kill_sleeping(&escaping);
    kill_sleeping(&daemon);
    assert_eq!(
        r.result.status,
        S::Timeout,
        "{}",
        String::from_utf8_lossy(&r.view)
    );
    assert_eq!(r.result.error, Some(TaskError::ExecutionTimeout));
    assert_eq!(r.view, b"started\n");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert!(pid_in(dir.path(), "escaped.pid").is_some());
    assert!(escaping_ok, "sleep {escaping} escaped the timeout");
    assert!(
        daemon_ok,
        "the sudo-like daemon (sleep {daemon}) escaped the timeout"
    );
    assert!(!cgroup.exists(), "the run's cgroup is removed");
    assert!(oca_agent::proc::task_processes(None, &r.marker).is_empty());
}

#[tokio::test]
async fn under_cgroup_a_stop_kills_what_left_session_parent_and_marker() {
    let state = tempfile::tempdir().unwrap();
    let Some(iso) = cgroups(state.path()).await else {
        return;
    };
    let dir = open_dir();
    let (escaping, daemon) = (unique_secs(), unique_secs());
    let cgroup = iso.cgroup_for("t-iso", 0).unwrap();
    let mut t = task(&escaping_script(dir.path(), &escaping, &daemon));
    t.timeout_secs = 600;
    let r = run(t, Some(&cgroup), true).await;
    let ok = none_sleeping_within(&escaping, Duration::from_secs(3)).await
        && none_sleeping_within(&daemon, Duration::from_secs(3)).await;
    kill_sleeping(&escaping);
    kill_sleeping(&daemon);
    assert_eq!(r.result.status, S::Terminated);
    assert_eq!(r.view, b"started\n");
    assert!(ok, "a process escaped the stop");
    assert!(!cgroup.exists(), "the run's cgroup is removed");
}

/// The fallback kills what it always killed (a child in its own session, a
/// double-forked child, both with the marker) and, honestly, not a process that left
/// session, parent and marker.
#[tokio::test]
async fn the_process_tree_fallback_kills_what_it_did_and_cannot_reach_the_rest() {
    let state = tempfile::tempdir().unwrap();
    let iso = Isolation::detect(Mode::ProcessTree, state.path())
        .await
        .unwrap();
    assert_eq!(iso.name(), isolation::PROCESS_TREE);
    assert_eq!(iso.cgroup_for("t-iso", 0), None);
    let dir = open_dir();
    let (own_session, double_fork, escaping) = (unique_secs(), unique_secs(), unique_secs());
    let script = format!(
        "setsid /bin/sleep {own_session} &\n( /bin/sleep {double_fork} & )\n{}",
        escaping_script(dir.path(), &escaping, &unique_secs())
    );
    let r = run(task(&script), None, false).await;
    let caught = none_sleeping_within(&own_session, Duration::from_secs(3)).await
        && none_sleeping_within(&double_fork, Duration::from_secs(3)).await;
    let escaped = sleeping(&escaping);
    kill_sleeping(&escaping);
    if let Some(pid) = pid_in(dir.path(), "daemon.pid") {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(r.result.status, S::Timeout);
    assert!(caught, "the process tree's own processes survive");
    assert_eq!(
        escaped.len(),
        1,
        "the limit of process-tree: sleep {escaping} is out of its reach"
    );
}

#[tokio::test]
async fn under_cgroup_termination_mode_process_kills_only_the_script() {
    let state = tempfile::tempdir().unwrap();
    let Some(iso) = cgroups(state.path()).await else {
        return;
    };
    let (child, foreground) = (unique_secs(), unique_secs());
    let cgroup = iso.cgroup_for("t-iso", 0).unwrap();
    let mut t = task(&format!(
        "/bin/sleep {child} &\necho started\n/bin/sleep {foreground}\n"
    ));
    t.timeout_secs = 1;
    t.termination_mode = TerminationMode::Process;
    let r = run(t, Some(&cgroup), false).await;
    let alive = (sleeping(&child), sleeping(&foreground));
    let kept = cgroup.exists();
    kill_sleeping(&child);
    kill_sleeping(&foreground);
    assert_eq!(r.result.status, S::Timeout);
    assert_eq!(
        (alive.0.len(), alive.1.len()),
        (1, 1),
        "the script's children are left running"
    );
    assert!(kept, "its cgroup stays while they run");
    // Once they are gone, a tidy removes the cgroup.
    assert!(none_sleeping_within(&child, Duration::from_secs(3)).await);
    assert!(none_sleeping_within(&foreground, Duration::from_secs(3)).await);
    let deadline = Instant::now() + Duration::from_secs(3);
    while isolation::populated(&cgroup) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    iso.tidy();
    assert!(!cgroup.exists(), "an empty cgroup is tidied away");
}

#[tokio::test]
async fn under_cgroup_a_run_that_ends_leaves_its_daemons_and_no_empty_cgroup() {
    let state = tempfile::tempdir().unwrap();
    let Some(iso) = cgroups(state.path()).await else {
        return;
    };
    let cgroup = iso.cgroup_for("t-iso", 0).unwrap();
    let r = run(task("echo hi"), Some(&cgroup), false).await;
    assert_eq!(
        (r.result.status, r.view.as_slice()),
        (S::Success, &b"hi\n"[..])
    );
    assert!(!cgroup.exists(), "the run's cgroup is removed");

    // A script's daemon keeps running after the script exits, as it always did.
    let daemon = unique_secs();
    let r = run(
        task(&format!("/bin/sleep {daemon} >/dev/null 2>&1 &\necho done")),
        Some(&cgroup),
        false,
    )
    .await;
    let alive = sleeping(&daemon);
    let kept = isolation::populated(&cgroup);
    kill_sleeping(&daemon);
    assert_eq!(r.result.status, S::Success);
    assert_eq!(alive.len(), 1, "the daemon was killed with its run");
    assert!(kept, "the daemon is in the run's cgroup");
    assert!(none_sleeping_within(&daemon, Duration::from_secs(3)).await);
    let deadline = Instant::now() + Duration::from_secs(3);
    while isolation::populated(&cgroup) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    iso.tidy();
    assert!(!cgroup.exists(), "an empty cgroup is tidied away");
}

/// A run still going when its agent dies is killed when the agent starts again,
/// escaping processes included, and reported interrupted.
#[tokio::test]
async fn a_restarted_agent_kills_the_cgroup_of_a_run_it_did_not_see_end() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let Some(_) = cgroups(state.path()).await else {
        return;
    };
    registered(state.path());
    let dir = open_dir();
    let (escaping, daemon) = (unique_secs(), unique_secs());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _, reported) = server.welcome_hello(30).await;
    assert_eq!(reported, isolation::CGROUP);
    let mut t = task(&escaping_script(dir.path(), &escaping, &daemon));
    t.timeout_secs = 600;
    c.send(ServerMsg::Run(t)).await;
    loop {
        if let AgentMsg::Output { .. } = c.recv().await {
            break;
        }
    }
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(spool_dir(state.path(), "t-iso").join("task.json")).unwrap(),
    )
    .unwrap();
    let cgroup = PathBuf::from(
        file["cgroup"]
            .as_str()
            .expect("the run's cgroup is spooled"),
    );
    assert!(isolation::populated(&cgroup));
    // The agent dies mid-run; its processes go on.
    agent.abort();
    let _ = agent.await;
    drop(c);
    assert_eq!(sleeping(&escaping).len(), 1);

    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let (_, r) = c.until_finished("t-iso").await;
    let ok = none_sleeping_within(&escaping, Duration::from_secs(3)).await
        && none_sleeping_within(&daemon, Duration::from_secs(3)).await;
    kill_sleeping(&escaping);
    kill_sleeping(&daemon);
    agent.abort();
    assert_eq!(r.error, Some(TaskError::ExecutionInterrupted));
    assert!(ok, "a process of the lost run survived the restart");
    assert!(!cgroup.exists(), "the lost run's cgroup is removed");
}

#[tokio::test]
async fn the_hello_says_which_isolation_is_in_force() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let cfg = oca_agent::Config {
        task_isolation: Mode::ProcessTree,
        ..agent_config(&server.url, state.path(), false)
    };
    let agent = tokio::spawn(oca_agent::run(cfg));
    let (_c, _, reported) = server.welcome_hello(30).await;
    agent.abort();
    assert_eq!(reported, isolation::PROCESS_TREE);

    let agent = start_agent(&server.url, state.path(), false);
    let (_c, _, reported) = server.welcome_hello(30).await;
    agent.abort();
    let expected = if cgroups_expected() {
        isolation::CGROUP
    } else {
        isolation::PROCESS_TREE
    };
    assert_eq!(reported, expected, "auto");
}
