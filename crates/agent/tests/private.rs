//! The agent's files are private (0700 directories, 0600 files), and its scripts still
//! start with the umask of a normal login (022).

mod common;

use common::*;
use oca_domain::command::{decode_base64, RepeatMode};
use oca_domain::status::InvocationStatus as S;
use oca_proto::{Repeat, ServerMsg, Task};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every entry under `dir` (itself included) with its permission bits.
fn modes(dir: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        out.push((
            p.display().to_string(),
            meta.is_dir(),
            meta.permissions().mode() & 0o7777,
        ));
    }
    out
}

#[tokio::test]
async fn the_state_dir_is_private_and_scripts_get_umask_022() {
    let mut server = FakeServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    // As an agent with umask 022 left it.
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    registered(&state);
    let identity = state.join("identity.json");
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let boot = tmp.path().join("boot_id");
    std::fs::write(&boot, "boot-1\n").unwrap();

    let agent = start_agent_on_boot(&server.url, &state, false, Some(&boot));
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-umask", "umask; echo secret")))
        .await;
    let (_, r) = c.until_finished("t-umask").await;
    // A repeating task, kept on the schedule.
    let kept = Task {
        repeat: Some(Repeat {
            mode: RepeatMode::NextRebootOnly,
            frequency: String::new(),
            anchor: oca_domain::time::now_millis(),
        }),
        revision: 1,
        ..task("t-kept", "true")
    };
    c.send(ServerMsg::Run(kept)).await;
    loop {
        if let oca_proto::AgentMsg::Scheduled { .. } = c.recv().await {
            break;
        }
    }
    // The result is not acknowledged: it stays spooled.
    agent.abort();
    let _ = agent.await;

    assert_eq!(r.status, S::Success);
    assert_eq!(decode_base64(&r.output).unwrap(), b"0022\nsecret\n");
    let all = modes(&state);
    let names: Vec<&str> = all.iter().map(|(p, _, _)| p.as_str()).collect();
    for wanted in [
        "result.json",
        "output",
        "started",
        "task.json",
        "t-kept.json",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(wanted)),
            "no {wanted} in {names:?}"
        );
    }
    let open: Vec<_> = all
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, _, mode)| format!("{p} {mode:o}"))
        .collect();
    assert!(open.is_empty(), "not private: {open:?}");
}

#[test]
fn tighten_closes_files_and_directories_and_leaves_links() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tasks");
    std::fs::create_dir_all(root.join("t-1")).unwrap();
    std::fs::write(root.join("t-1/output"), b"x").unwrap();
    std::fs::write(tmp.path().join("outside"), b"x").unwrap();
    for (p, m) in [
        (root.clone(), 0o755),
        (root.join("t-1"), 0o775),
        (root.join("t-1/output"), 0o664),
        (tmp.path().join("outside"), 0o644),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("link")).unwrap();
    assert_eq!(oca_agent::spool::tighten(&root).unwrap(), 3);
    assert_eq!(oca_agent::spool::tighten(&root).unwrap(), 0);
    assert_eq!(
        oca_agent::spool::tighten(&tmp.path().join("none")).unwrap(),
        0
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("t-1")), 0o700);
    assert_eq!(mode(&root.join("t-1/output")), 0o600);
    assert_eq!(
        mode(&tmp.path().join("outside")),
        0o644,
        "links are not followed"
    );
}

/// The agent's umask (077) does not reach what SendFile creates: new directories are
/// 0755, the file has the mode asked for.
#[tokio::test]
async fn delivered_files_and_their_new_directories_are_not_the_agents_private_ones() {
    // SAFETY: sets the process's file mode creation mask, as the agent does.
    unsafe { libc::umask(oca_agent::client::AGENT_UMASK) };
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("etc/app");
    let mut t = task("f-1", "");
    t.file = Some(Box::new(oca_proto::FileDelivery {
        name: "app.conf".into(),
        target_dir: target.display().to_string(),
        content: oca_domain::command::encode_base64(b"k=v\n"),
        owner: String::new(),
        group: String::new(),
        mode: "0644".into(),
        overwrite: false,
    }));
    let spool = tempfile::tempdir().unwrap();
    let dir = oca_agent::spool::TaskDir::at(spool.path().join("f-1")).unwrap();
    let r = oca_agent::exec::execute(&t, &dir, "m", None, std::future::pending(), &()).await;
    assert_eq!(r.status, S::Success, "{r:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&tmp.path().join("etc")), 0o755);
    assert_eq!(mode(&target), 0o755);
    assert_eq!(mode(&target.join("app.conf")), 0o644);
}
