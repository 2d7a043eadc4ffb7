//! Quiet restarts: SIGTERM stops taking connections, answers the request under way,
//! tells the agents (Close 1012) and commits what they reported; the agents come back
//! to the restarted server on their own, after a short random pause, and nothing of a
//! run going on meanwhile is lost or counted twice.

mod common;

use common::*;
use oca_domain::time::now_millis;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn sigterm_answers_the_request_under_way_and_agents_come_back() {
    let mut server = Server::start_logged(&[]);
    let agents: Vec<Agent> = (0..3)
        .map(|n| server.agent(&format!("restart-{n}")))
        .collect();
    let ids: Vec<&str> = agents.iter().map(|a| a.instance_id.as_str()).collect();
    let c = server.client();
    // A run that goes on across the restart.
    let long = c.run("sleep 3; echo finished", &ids, &[("Timeout", "60")]);
    std::thread::sleep(Duration::from_millis(500));

    // A request under way: its head sent, half its body still to come.
    let signed = c.sign(
        "DescribeCommands",
        vec![
            ("RegionId".into(), REGION.into()),
            ("PageSize".into(), "5".into()),
        ],
        true,
        now_millis(),
        &oca_domain::ids::new_secret(24),
    );
    let mut tcp = std::net::TcpStream::connect(c.host()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("POST / HTTP/1.1\r\nHost: {}\r\n", c.host());
    for (k, v) in &signed.headers {
        if !k.eq_ignore_ascii_case("host") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", signed.body.len()));
    tcp.write_all(head.as_bytes()).unwrap();
    let half = signed.body.len() / 2;
    tcp.write_all(&signed.body[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // SIGTERM; the rest of the body arrives while the server stops.
    let pid = server.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    tcp.write_all(&signed.body[half..]).unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"Commands\""), "{answer}");
    // New connections are no longer taken.
    assert!(
        wait_for(Duration::from_secs(5), || {
            std::net::TcpStream::connect(c.host())
                .is_err()
                .then_some(())
        })
        .is_some(),
        "the server still takes connections"
    );
    let (status, took) = server
        .terminate(Duration::from_secs(15))
        .expect("it exited");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(12), "{took:?}");

    // Back up: every agent returns by itself within the spread, the run that went on
    // across the restart is stored once per host.
    server.start_again();
    let c = server.client();
    let back = wait_for(Duration::from_secs(15), || {
        let body = c.ok("DescribeCloudAssistantStatus", &[]);
        let all = body["InstanceCloudAssistantStatusSet"]["InstanceCloudAssistantStatus"]
            .as_array()?
            .iter()
            .filter(|s| s["CloudAssistantStatus"] == "true")
            .count();
        (all == 3).then_some(())
    });
    assert!(back.is_some(), "not every agent came back");
    let results = c.wait(&long, Duration::from_secs(30));
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r["InvocationStatus"], "Success", "{r}");
        assert_eq!(b64(&r["Output"]), "finished\n");
    }
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
    drop(agents);
}
