//! The executor against real processes.

use oca_agent::exec::{execute, Observer};
use oca_agent::proc;
use oca_agent::spool::TaskDir;
use oca_domain::command::{decode_base64, CommandType};
use oca_domain::status::InvocationStatus as S;
use oca_domain::task_error::TaskError;
use oca_domain::time::Millis;
use oca_proto::{Task, TaskResult};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn task(script: &str) -> Task {
    Task {
        invoke_id: "t-test".into(),
        command_id: "c-test".into(),
        command_type: CommandType::RunShellScript,
        script: script.into(),
        working_dir: String::new(),
        username: String::new(),
        timeout_secs: 30,
        output_cap: 1 << 20,
        termination_mode: Default::default(),
        file: None,
        repeat: None,
        revision: 0,
    }
}

struct Ran {
    result: TaskResult,
    /// The 24 KB view.
    view: Vec<u8>,
    /// The spool's output file.
    spooled: Vec<u8>,
    marker: String,
    _tmp: tempfile::TempDir,
}

async fn run_with(
    task: Task,
    stop: impl std::future::Future<Output = ()> + Send,
    observer: &dyn Observer,
) -> Ran {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TaskDir::at(tmp.path().join(&task.invoke_id)).unwrap();
    let marker = format!("{:032x}", rand::random::<u128>());
    let result = execute(&task, &dir, &marker, None, stop, observer).await;
    let view = decode_base64(&result.output).unwrap();
    let spooled = std::fs::read(dir.output_path()).unwrap_or_default();
    Ran {
        result,
        view,
        spooled,
        marker,
        _tmp: tmp,
    }
}

async fn run(task: Task) -> Ran {
    run_with(task, std::future::pending(), &()).await
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// No live (non-zombie) process carries the marker.
fn marked_alive(marker: &str) -> Vec<i32> {
    proc::task_processes(None, marker)
}

/// Waits until `/proc/<pid>` is gone: the process is dead and reaped.
fn reaped_within(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[tokio::test]
async fn success_with_output() {
    let r = run(task("echo hello")).await;
    assert_eq!(r.result.status, S::Success);
    assert_eq!(r.result.exit_code, Some(0));
    assert_eq!(r.result.error, None);
    assert_eq!(r.view, b"hello\n");
    assert_eq!(r.spooled, b"hello\n");
    assert_eq!(r.result.output_len, 6);
    assert_eq!(r.result.dropped, 0);
    let start = r.result.start_time.expect("a start time");
    assert!(start <= r.result.finish_time);
    assert_eq!(r.result.invoke_id, "t-test");
}

#[tokio::test]
async fn nonzero_exit_is_failed() {
    let r = run(task("echo before; exit 3")).await;
    assert_eq!(r.result.status, S::Failed);
    assert_eq!(r.result.exit_code, Some(3));
    assert_eq!(r.result.error, Some(TaskError::ExitCodeNonzero));
    assert_eq!(r.view, b"before\n");
}

#[tokio::test]
async fn killed_by_a_signal_is_failed_with_minus_one() {
    let r = run(task("echo x; kill -9 $$")).await;
    assert_eq!(r.result.status, S::Failed);
    assert_eq!(r.result.exit_code, Some(-1));
    assert_eq!(r.result.error, Some(TaskError::ExitCodeNonzero));
}

#[tokio::test]
async fn stdout_and_stderr_interleave_in_order() {
    let r = run(task("echo a; echo b >&2; echo c; echo d 1>&2")).await;
    assert_eq!(r.view, b"a\nb\nc\nd\n");
    let r = run(task(
        "for i in 1 2 3 4 5 6 7 8; do echo out$i; echo err$i >&2; done",
    ))
    .await;
    let expected: String = (1..=8).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(String::from_utf8(r.view).unwrap(), expected);
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_kept() {
    let r = run(task(r"printf 'a\377b\000c\200'")).await;
    assert_eq!(r.result.status, S::Success);
    assert_eq!(r.view, b"a\xffb\x00c\x80");
    assert_eq!(r.spooled, b"a\xffb\x00c\x80");
}

#[tokio::test]
async fn long_output_keeps_head_and_tail_and_spools_up_to_the_cap() {
    let script = "printf HEAD; head -c 100000 /dev/zero | tr '\\0' x; echo; echo END";
    let r = run(task(script)).await;
    let total = 4 + 100_000 + 1 + 4;
    assert_eq!(r.view.len(), 24 * 1024);
    assert_eq!(r.result.dropped as usize + r.view.len(), total);
    assert!(r.view.starts_with(b"HEADxxx"));
    assert!(r.view.ends_with(b"x\nEND\n"));
    assert_eq!(r.result.output_len as usize, total);
    assert_eq!(r.spooled.len(), total);

    let mut capped = task(script);
    capped.output_cap = 1000;
    let r = run(capped).await;
    assert_eq!(r.result.output_len, 1000);
    assert_eq!(r.spooled.len(), 1000);
    assert!(r.spooled.starts_with(b"HEADxxx"));
    // The view still covers the whole output.
    assert!(r.view.ends_with(b"x\nEND\n"));
    assert_eq!(r.result.dropped as usize + r.view.len(), total);
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let p1 = tmp.path().join("setsid.pid");
    let p2 = tmp.path().join("double.pid");
    let script = format!(
        "setsid sleep 1000 & echo $! > {p1}\n\
         (sleep 1000 & echo $! > {p2})\n\
         (setsid sh -c 'sleep 1000' &)\n\
         echo started\n\
         sleep 1000\n",
        p1 = p1.display(),
        p2 = p2.display()
    );
    let mut t = task(&script);
    t.timeout_secs = 1;
    let began = Instant::now();
    let r = run(t).await;
    assert!(
        began.elapsed() < Duration::from_secs(8),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(r.result.status, S::Timeout);
    assert_eq!(r.result.error, Some(TaskError::ExecutionTimeout));
    assert_eq!(r.result.exit_code, Some(1));
    assert_eq!(r.view, b"started\n");
    assert!(r.result.start_time.is_some());
    assert!(
        marked_alive(&r.marker).is_empty(),
        "marked processes survive"
    );
    for f in [&p1, &p2] {
        let pid: i32 = std::fs::read_to_string(f).unwrap().trim().parse().unwrap();
        // Killed, and reaped by the agent (a subreaper): no zombie left either.
        assert!(
            reaped_within(pid, Duration::from_secs(3)),
            "{pid} from {} is still there",
            f.display()
        );
    }
}

#[tokio::test]
async fn process_mode_kills_only_the_script() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("child.pid");
    let script = format!(
        "sleep 1000 & echo $! > {p}\necho started\nsleep 1000\n",
        p = pidfile.display()
    );
    let mut t = task(&script);
    t.timeout_secs = 1;
    t.termination_mode = oca_domain::command::TerminationMode::Process;
    let r = run(t).await;
    assert_eq!(r.result.status, S::Timeout);
    assert_eq!(r.view, b"started\n");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = marked_alive(&r.marker);
    // Clean up before asserting, so a failure leaves nothing behind.
    proc::kill_tree(None, &r.marker, Duration::from_secs(3)).await;
    assert!(
        alive.contains(&pid),
        "the child {pid} was killed too: {alive:?}"
    );
}

#[tokio::test]
async fn stop_terminates_the_tree() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let started = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = tx.send(());
    });
    let stop = async move {
        let _ = rx.await;
    };
    let r = run_with(task("echo going; (sleep 1000 &); sleep 1000"), stop, &()).await;
    started.await.unwrap();
    assert_eq!(r.result.status, S::Terminated);
    assert_eq!(r.result.error, None);
    assert_eq!(r.result.exit_code, Some(-1));
    assert_eq!(r.view, b"going\n");
    assert!(
        marked_alive(&r.marker).is_empty(),
        "marked processes survive"
    );
}

#[tokio::test]
async fn unknown_user_is_account_not_exists() {
    let mut t = task("id");
    t.username = "no-such-user-oca".into();
    let r = run(t).await;
    assert_eq!(r.result.status, S::Invalid);
    assert_eq!(r.result.error, Some(TaskError::AccountNotExists));
    assert_eq!(r.result.exit_code, None);
    assert_eq!(r.result.start_time, None);
    assert!(r.view.is_empty());
}

#[tokio::test]
async fn missing_directory_is_directory_not_exists() {
    let mut t = task("pwd");
    t.working_dir = "/no/such/dir".into();
    let r = run(t).await;
    assert_eq!(r.result.status, S::Invalid);
    assert_eq!(r.result.error, Some(TaskError::DirectoryNotExists));
    assert!(r.view.is_empty());
}

#[tokio::test]
async fn working_directory_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let mut t = task("pwd; touch here");
    t.working_dir = dir.to_string_lossy().into_owned();
    let r = run(t).await;
    assert_eq!(r.view, format!("{}\n", dir.display()).as_bytes());
    assert!(dir.join("here").exists());
}

#[tokio::test]
async fn default_directory_is_home_and_environment_is_set() {
    let r = run(task(
        "pwd; echo \"$HOME|$USER|$LOGNAME|$PATH|$OCA_TASK_MARKER\"",
    ))
    .await;
    let out = String::from_utf8(r.view).unwrap();
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap();
    let home = user.dir.to_string_lossy().into_owned();
    let mut lines = out.lines();
    assert_eq!(lines.next().unwrap(), home);
    let env: Vec<&str> = lines.next().unwrap().split('|').collect();
    assert_eq!(env[0], home);
    assert_eq!(env[1], user.name);
    assert_eq!(env[2], user.name);
    assert!(env[3].contains("/usr/bin"), "{}", env[3]);
    assert_eq!(env[4], r.marker);
}

#[tokio::test]
async fn runs_as_nobody() {
    if !is_root() {
        eprintln!("not root: running as nobody is not tested");
        return;
    }
    let mut t = task("id -un; id -u; pwd; echo \"$HOME $USER\"");
    t.username = "nobody".into();
    t.working_dir = "/tmp".into();
    let r = run(t).await;
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        r.result.status,
        S::Success,
        "{}",
        String::from_utf8_lossy(&r.view)
    );
    assert_eq!(
        String::from_utf8(r.view).unwrap(),
        format!(
            "nobody\n{}\n/tmp\n{} nobody\n",
            nobody.uid,
            nobody.dir.display()
        )
    );

    // nobody's home does not exist: without a directory there is none to run in.
    if !nobody.dir.is_dir() {
        let mut t = task("pwd");
        t.username = "nobody".into();
        let r = run(t).await;
        assert_eq!(r.result.error, Some(TaskError::DirectoryNotExists));
    }

    // A directory nobody cannot enter: the run cannot start.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut t = task("pwd");
    t.username = "nobody".into();
    t.working_dir = tmp.path().to_string_lossy().into_owned();
    let r = run(t).await;
    assert_eq!(r.result.status, S::Error);
    assert_eq!(r.result.error, Some(TaskError::ExecutionException));
    assert!(
        String::from_utf8_lossy(&r.view).contains("ermission denied"),
        "{}",
        String::from_utf8_lossy(&r.view)
    );
}

#[tokio::test]
async fn bat_scripts_do_not_apply_and_powershell_needs_pwsh() {
    let mut t = task("echo hi");
    t.command_type = CommandType::RunBatScript;
    let r = run(t).await;
    assert_eq!(r.result.status, S::Invalid);
    assert_eq!(r.result.error, Some(TaskError::CommandNotApplicable));

    let has_pwsh = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(oca_agent::exec::SCRIPT_PATH.split(':'))
        .any(|d| Path::new(d).join("pwsh").is_file());
    let mut t = task("Write-Output hi");
    t.command_type = CommandType::RunPowerShellScript;
    let r = run(t).await;
    if has_pwsh {
        assert_eq!(r.result.status, S::Success);
        assert_eq!(r.view, b"hi\n");
    } else {
        eprintln!("pwsh is not installed: PowerShell is CommandNotApplicable");
        assert_eq!(r.result.status, S::Invalid);
        assert_eq!(r.result.error, Some(TaskError::CommandNotApplicable));
    }
}

#[tokio::test]
async fn shebang_lines_choose_the_interpreter() {
    let r = run(task("#!/bin/sh -e\necho one\nfalse\necho not reached\n")).await;
    assert_eq!(r.result.status, S::Failed);
    assert_eq!(r.result.exit_code, Some(1));
    assert_eq!(r.view, b"one\n");

    let r = run(task("#!/no/such/interpreter\necho hi\n")).await;
    assert_eq!(r.result.status, S::Failed);
    assert_eq!(r.result.exit_code, Some(127));
    assert!(String::from_utf8_lossy(&r.view).contains("/no/such/interpreter"));
}

#[tokio::test]
async fn the_observer_hears_the_start_and_the_output() {
    #[derive(Default)]
    struct Seen(Mutex<(Option<Millis>, Vec<u64>)>);
    impl Observer for Seen {
        fn started(&self, at: Millis) {
            self.0.lock().unwrap().0 = Some(at);
        }
        fn output(&self, spooled: u64) {
            self.0.lock().unwrap().1.push(spooled);
        }
    }
    let seen = Seen::default();
    let r = run_with(
        task("echo one; sleep 0.2; echo two"),
        std::future::pending(),
        &seen,
    )
    .await;
    let (start, progress) = seen.0.into_inner().unwrap();
    assert_eq!(start, r.result.start_time);
    assert_eq!(progress, vec![4, 8]);
}

#[tokio::test]
async fn background_children_do_not_hold_the_run() {
    let began = Instant::now();
    let r = run(task("sleep 30 & echo done")).await;
    assert_eq!(r.result.status, S::Success);
    assert_eq!(r.view, b"done\n");
    assert!(began.elapsed() < Duration::from_secs(5));
    // Left running, as a script's daemon should be; clean up.
    proc::kill_tree(None, &r.marker, Duration::from_secs(5)).await;
    assert!(marked_alive(&r.marker).is_empty());
}

fn file_task(dir: &Path, name: &str, content: &[u8], overwrite: bool) -> Task {
    let mut t = task("");
    t.file = Some(Box::new(oca_proto::FileDelivery {
        name: name.into(),
        target_dir: dir.display().to_string(),
        content: oca_domain::command::encode_base64(content),
        owner: String::new(),
        group: String::new(),
        mode: "0640".into(),
        overwrite,
    }));
    t
}

#[tokio::test]
async fn a_file_is_delivered_with_its_mode_into_a_new_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/nested");
    let r = run(file_task(&dir, "app.conf", b"key=value\n", false)).await;
    assert_eq!(r.result.status, S::Success, "{:?}", r.result);
    assert_eq!(r.result.error, None);
    let path = dir.join("app.conf");
    assert_eq!(std::fs::read(&path).unwrap(), b"key=value\n");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // Again without Overwrite: refused, the file unchanged.
    let r = run(file_task(&dir, "app.conf", b"other\n", false)).await;
    assert_eq!(
        (r.result.status, r.result.error),
        (S::Invalid, Some(TaskError::FileExist))
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"key=value\n");
    // With Overwrite: replaced.
    let r = run(file_task(&dir, "app.conf", b"other\n", true)).await;
    assert_eq!(r.result.status, S::Success);
    assert_eq!(std::fs::read(&path).unwrap(), b"other\n");

    if is_root() {
        let mut t = file_task(&dir, "owned", b"x", false);
        if let Some(f) = t.file.as_mut() {
            f.owner = "nobody".into();
        }
        let r = run(t).await;
        assert_eq!(r.result.status, S::Success, "{:?}", r.result);
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("owned")).unwrap().uid(),
            nobody.uid.as_raw()
        );
    }
}

/// Any name the file system takes (255 bytes) can be delivered: the temporary file's
/// name is short.
#[tokio::test]
async fn files_with_the_longest_names_are_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let ascii = "a".repeat(251) + ".txt";
    let wide = "中".repeat(85);
    for name in [ascii, wide] {
        assert_eq!(name.len(), 255);
        let r = run(file_task(tmp.path(), &name, b"long\n", false)).await;
        assert_eq!(r.result.status, S::Success, "{:?}", r.result);
        assert_eq!(std::fs::read(tmp.path().join(&name)).unwrap(), b"long\n");
        // Again, over it.
        let r = run(file_task(tmp.path(), &name, b"again\n", true)).await;
        assert_eq!(r.result.status, S::Success, "{:?}", r.result);
        assert_eq!(std::fs::read(tmp.path().join(&name)).unwrap(), b"again\n");
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        2,
        "no temporary file left"
    );
    // One byte more is no name at all.
    let r = run(file_task(tmp.path(), &"a".repeat(256), b"x", false)).await;
    assert_eq!(
        (r.result.status, r.result.error),
        (S::Invalid, Some(TaskError::FileNameInvalid))
    );
}

#[tokio::test]
async fn bad_file_deliveries_are_invalid_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let cases: Vec<(Task, TaskError)> = vec![
        (
            file_task(&dir, "../escape", b"x", false),
            TaskError::FileNameInvalid,
        ),
        (
            file_task(Path::new("relative"), "a", b"x", false),
            TaskError::FileNameInvalid,
        ),
        (file_task(&dir, "empty", b"", false), TaskError::EmptyFile),
        (
            {
                let mut t = file_task(&dir, "m", b"x", false);
                t.file.as_mut().unwrap().mode = "0999".into();
                t
            },
            TaskError::InvalidFileMode,
        ),
        (
            {
                let mut t = file_task(&dir, "setuid", b"x", false);
                t.file.as_mut().unwrap().mode = "4755".into();
                t
            },
            TaskError::InvalidFileMode,
        ),
        (
            {
                let mut t = file_task(&dir, "setgid", b"x", false);
                t.file.as_mut().unwrap().mode = "2755".into();
                t
            },
            TaskError::InvalidFileMode,
        ),
        (
            {
                let mut t = file_task(&dir, "sticky", b"x", false);
                t.file.as_mut().unwrap().mode = "1777".into();
                t
            },
            TaskError::InvalidFileMode,
        ),
        (
            {
                let mut t = file_task(&dir, "o", b"x", false);
                t.file.as_mut().unwrap().owner = "no-such-user-oca".into();
                t
            },
            TaskError::FileOwnerNotExist,
        ),
        (
            {
                let mut t = file_task(&dir, "g", b"x", false);
                t.file.as_mut().unwrap().group = "no-such-group-oca".into();
                t
            },
            TaskError::FileGroupNotExist,
        ),
        (
            {
                let mut t = file_task(&dir, "c", b"x", false);
                t.file.as_mut().unwrap().content = "!!not base64!!".into();
                t
            },
            TaskError::InvalidFileContent,
        ),
    ];
    for (t, expected) in cases {
        let r = run(t).await;
        assert_eq!(
            (r.result.status, r.result.error),
            (S::Invalid, Some(expected))
        );
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing was written"
    );
}
