//! The agent against a small in-test server on 127.0.0.1 playing the server's part.

mod common;

use common::*;
use oca_agent::{Config, Identity};
use oca_domain::command::decode_base64;
use oca_domain::status::InvocationStatus as S;
use oca_domain::task_error::TaskError;
use oca_proto::{AgentMsg, KnownTask, ServerMsg};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn registers_runs_streams_and_forgets_on_ack() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let agent = start_agent(&server.url, state.path(), true);

    let reg = tokio::time::timeout(WAIT, server.registrations.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reg.hostname, "testhost");
    assert_eq!(reg.os_type, "linux");
    let (mut c, known) = server.welcome(30).await;
    assert!(known.is_empty());
    let id_path = Identity::path(state.path());
    assert_eq!(
        Identity::load(state.path()).unwrap().unwrap(),
        Identity {
            instance_id: INSTANCE.into(),
            token: TOKEN.into()
        }
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&id_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    c.send(ServerMsg::Run(task("t-1", "echo hi; echo there >&2")))
        .await;
    let started = c.recv().await;
    let AgentMsg::Started {
        invoke_id,
        start_time,
        run: 0,
    } = started
    else {
        panic!("expected Started, got {started:?}");
    };
    assert_eq!(invoke_id, "t-1");
    let (msgs, r) = c.until_finished("t-1").await;
    assert_eq!(joined(&chunks(&msgs, "t-1")), b"hi\nthere\n");
    assert_eq!(r.status, S::Success);
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.start_time, Some(start_time));
    assert_eq!(r.output_len, 9);
    assert_eq!(decode_base64(&r.output).unwrap(), b"hi\nthere\n");

    // Spooled until acknowledged.
    let dir = spool_dir(state.path(), "t-1");
    assert!(dir.join("result.json").exists());
    assert!(dir.join("task.json").exists());
    c.send(ServerMsg::Ack {
        invoke_id: "t-1".into(),
        run: 0,
    })
    .await;
    assert!(
        gone_within(&dir, Duration::from_secs(3)).await,
        "the spool is removed on Ack"
    );
    agent.abort();

    // A second start reuses the identity (a wrong activation code would be refused).
    let again = start_agent(&server.url, state.path(), false);
    let (_c, known) = server.welcome(30).await;
    assert!(known.is_empty());
    assert!(
        server.registrations.try_recv().is_err(),
        "no second registration"
    );
    again.abort();
}

#[tokio::test]
async fn a_refused_registration_stops_the_agent() {
    let server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = Config {
        server: server.url.clone(),
        trust: None,
        state_dir: state.path().to_path_buf(),
        activation_id: Some("act-1".into()),
        activation_code: Some("wrong".into()),
        hostname: Some("testhost".into()),
        boot_id_file: None,
        task_isolation: Default::default(),
    };
    let err = tokio::time::timeout(WAIT, oca_agent::run(cfg))
        .await
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("InvalidActivation"), "{err:#}");
    assert!(!Identity::path(state.path()).exists());
}

#[tokio::test]
async fn output_is_batched_not_sent_per_line() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;

    c.send(ServerMsg::Run(task(
        "t-lines",
        "for i in $(seq 1 300); do echo line $i; done",
    )))
    .await;
    let (msgs, r) = c.until_finished("t-lines").await;
    let outs = chunks(&msgs, "t-lines");
    let expected: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(joined(&outs), expected.as_bytes());
    assert!(
        outs.len() <= 3,
        "{} Output messages for 300 quick lines",
        outs.len()
    );
    assert_eq!(r.output_len as usize, expected.len());

    // Much output: chunks of at most 64 KiB, end to end.
    c.send(ServerMsg::Run(task(
        "t-big",
        "head -c 300000 /dev/zero | tr '\\0' y",
    )))
    .await;
    let (msgs, r) = c.until_finished("t-big").await;
    let outs = chunks(&msgs, "t-big");
    assert!(outs.values().all(|d| d.len() <= 64 * 1024));
    assert_eq!(joined(&outs), vec![b'y'; 300_000]);
    assert_eq!(r.output_len, 300_000);
    assert_eq!(decode_base64(&r.output).unwrap().len(), 24 * 1024);
    assert_eq!(r.dropped, 300_000 - 24 * 1024);
    agent.abort();
}

#[tokio::test]
async fn a_dropped_connection_mid_run_reconnects_and_delivers() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;

    c.send(ServerMsg::Run(task(
        "t-drop",
        "echo one; sleep 2; echo two",
    )))
    .await;
    let mut first = Vec::new();
    loop {
        let m = c.recv().await;
        let done = matches!(&m, AgentMsg::Output { .. });
        first.push(m);
        if done {
            break;
        }
    }
    assert!(matches!(first[0], AgentMsg::Started { .. }));
    // The server goes away with the task running.
    drop(c);

    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-drop".into(),
            finished: false,
            repeating: None,
        }]
    );
    let (msgs, r) = c.until_finished("t-drop").await;
    assert!(
        msgs.iter()
            .any(|m| matches!(m, AgentMsg::Started { invoke_id, .. } if invoke_id == "t-drop")),
        "a running task is announced again"
    );
    let mut all = chunks(&first, "t-drop");
    all.extend(chunks(&msgs, "t-drop"));
    assert_eq!(joined(&all), b"one\ntwo\n");
    assert_eq!(r.status, S::Success);
    assert_eq!(decode_base64(&r.output).unwrap(), b"one\ntwo\n");
    agent.abort();
}

#[tokio::test]
async fn a_finished_result_waits_for_the_next_connection() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-away", "echo a; sleep 1; echo b")))
        .await;
    assert!(matches!(c.recv().await, AgentMsg::Started { .. }));
    // The server is away until the run is over.
    server.refuse.store(true, Ordering::SeqCst);
    drop(c);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.refuse.store(false, Ordering::SeqCst);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-away".into(),
            finished: true,
            repeating: None,
        }]
    );
    let (msgs, r) = c.until_finished("t-away").await;
    assert_eq!(r.status, S::Success);
    assert_eq!(joined(&chunks(&msgs, "t-away"))[..], b"a\nb\n"[..]);
    agent.abort();
}

#[tokio::test]
async fn resend_sends_the_output_again_then_the_result() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-re", "echo 0123456789")))
        .await;
    let (_, first) = c.until_finished("t-re").await;

    c.send(ServerMsg::Resend {
        invoke_id: "t-re".into(),
        offset: 4,
    })
    .await;
    let (msgs, again) = c.until_finished("t-re").await;
    assert_eq!(again, first);
    let outs = chunks(&msgs, "t-re");
    assert_eq!(outs.keys().copied().collect::<Vec<_>>(), vec![4]);
    assert_eq!(outs[&4], b"456789\n");
    agent.abort();
}

#[tokio::test]
async fn a_duplicate_run_is_ignored() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    let t = task("t-dup", "echo once; sleep 0.3");
    c.send(ServerMsg::Run(t.clone())).await;
    c.send(ServerMsg::Run(t.clone())).await;
    let (msgs, r) = c.until_finished("t-dup").await;
    let starts = msgs
        .iter()
        .filter(|m| matches!(m, AgentMsg::Started { .. }))
        .count();
    assert_eq!(starts, 1);
    assert_eq!(joined(&chunks(&msgs, "t-dup")), b"once\n");
    assert_eq!(r.output_len, 5);
    // Finished but not acknowledged: still known, still ignored.
    c.send(ServerMsg::Run(t)).await;
    assert_eq!(c.try_recv(Duration::from_millis(700)).await, None);
    assert_eq!(
        std::fs::read(spool_dir(state.path(), "t-dup").join("output")).unwrap(),
        b"once\n"
    );
    agent.abort();
}

#[tokio::test]
async fn stop_and_heartbeats() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(1).await;
    c.send(ServerMsg::Run(task("t-stop", "echo going; sleep 1000")))
        .await;
    assert!(matches!(c.recv().await, AgentMsg::Started { .. }));
    // A heartbeat within about a second counts the running task.
    loop {
        match c.recv().await {
            AgentMsg::Heartbeat { active_tasks } => {
                assert_eq!(active_tasks, 1);
                break;
            }
            AgentMsg::Output { .. } => {}
            m => panic!("unexpected {m:?}"),
        }
    }
    c.send(ServerMsg::Stop {
        invoke_id: "t-stop".into(),
    })
    .await;
    let (_, r) = c.until_finished("t-stop").await;
    assert_eq!(r.status, S::Terminated);
    assert_eq!(r.error, None);
    assert_eq!(decode_base64(&r.output).unwrap(), b"going\n");
    c.send(ServerMsg::Ack {
        invoke_id: "t-stop".into(),
        run: 0,
    })
    .await;
    loop {
        if let AgentMsg::Heartbeat { active_tasks } = c.recv().await {
            assert_eq!(active_tasks, 0);
            break;
        }
    }
    agent.abort();
}

#[tokio::test]
async fn a_restarted_agent_resends_its_unacknowledged_result() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-keep", "echo kept"))).await;
    let (_, r) = c.until_finished("t-keep").await;
    // The agent dies before the server acknowledged.
    agent.abort();
    let _ = agent.await;
    drop(c);

    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-keep".into(),
            finished: true,
            repeating: None,
        }]
    );
    let (msgs, again) = c.until_finished("t-keep").await;
    assert_eq!(again, r);
    assert!(
        chunks(&msgs, "t-keep").is_empty(),
        "output goes again only on Resend"
    );
    c.send(ServerMsg::Ack {
        invoke_id: "t-keep".into(),
        run: 0,
    })
    .await;
    assert!(gone_within(&spool_dir(state.path(), "t-keep"), Duration::from_secs(3)).await);
    agent.abort();
}

#[tokio::test]
async fn a_run_the_agent_did_not_see_end_is_interrupted() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    registered(state.path());
    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, _) = server.welcome(30).await;
    c.send(ServerMsg::Run(task("t-lost", "echo begun; sleep 1000")))
        .await;
    loop {
        if let AgentMsg::Output { .. } = c.recv().await {
            break;
        }
    }
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(spool_dir(state.path(), "t-lost").join("task.json")).unwrap(),
    )
    .unwrap();
    let marker = file["marker"].as_str().unwrap().to_string();
    assert!(!oca_agent::proc::task_processes(None, &marker).is_empty());
    // The agent dies mid-run (its script keeps running).
    agent.abort();
    let _ = agent.await;
    drop(c);

    let agent = start_agent(&server.url, state.path(), false);
    let (mut c, known) = server.welcome(30).await;
    assert_eq!(
        known,
        vec![KnownTask {
            invoke_id: "t-lost".into(),
            finished: true,
            repeating: None,
        }]
    );
    let (_, r) = c.until_finished("t-lost").await;
    assert_eq!(r.status, S::Error);
    assert_eq!(r.error, Some(TaskError::ExecutionInterrupted));
    assert_eq!(decode_base64(&r.output).unwrap(), b"begun\n");
    assert!(r.start_time.is_some());
    assert!(
        oca_agent::proc::task_processes(None, &marker).is_empty(),
        "the orphaned script is killed"
    );
    agent.abort();
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_retried() {
    let mut server = FakeServer::start().await;
    let state = tempfile::tempdir().unwrap();
    Identity {
        instance_id: INSTANCE.into(),
        token: "wrong".into(),
    }
    .save(state.path())
    .unwrap();
    let agent = start_agent(&server.url, state.path(), false);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), server.conns.recv())
            .await
            .is_err(),
        "no connection is accepted with a wrong token"
    );
    assert!(!agent.is_finished(), "the agent keeps trying");
    agent.abort();
}
