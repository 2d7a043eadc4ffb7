//! A guesser: a thousand wrong activation codes, five hundred wrong agent tokens, as
//! fast as loopback goes. After a burst its address is throttled (`Throttling.User`),
//! a right secret included, until its failures drain; a real agent behind the same
//! address waits and gets in.

use crate::common::{wait_for, Server};
use crate::figures::{self, Case};
use crate::wire;
use std::time::{Duration, Instant};

pub const CASES: &[Case] = &[
    (
        "guessing::wrong_activation_codes_are_throttled",
        wrong_activation_codes_are_throttled,
    ),
    (
        "guessing::wrong_agent_tokens_are_throttled",
        wrong_agent_tokens_are_throttled,
    ),
];

/// Failures allowed at once, and the interval after which one is forgiven.
const BURST: u64 = 10;
const FORGIVE_MS: u64 = 3000;

fn start() -> Server {
    Server::start_logged(&[
        "--agent-auth-burst",
        &BURST.to_string(),
        "--agent-auth-forgive-ms",
        &FORGIVE_MS.to_string(),
    ])
}

/// Runs `n` attempts on 4 threads as fast as they go; each answer's status and code,
/// and how long it took.
fn flood(
    n: usize,
    attempt: impl Fn(usize) -> (u16, String) + Sync,
) -> (Vec<(u16, String)>, Duration) {
    let started = Instant::now();
    let answers = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let attempt = &attempt;
                s.spawn(move || (t..n).step_by(4).map(attempt).collect::<Vec<_>>())
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    (answers, started.elapsed())
}

/// How many of the answers are the vendor's throttling error.
fn throttled(answers: &[(u16, String)]) -> usize {
    answers
        .iter()
        .filter(|(status, code)| *status == 400 && code == "Throttling.User")
        .count()
}

/// The most failures that may be let in over `elapsed`: the burst, one more per
/// interval, and the attempts in flight on the other threads when the burst ran out.
fn let_in_at_most(elapsed: Duration) -> usize {
    (BURST + elapsed.as_millis() as u64 / FORGIVE_MS + 4) as usize
}

fn wrong_activation_codes_are_throttled() {
    let server = start();
    let (act, code) = wire::activation(&server.client(), 5, &[]);
    let (answers, elapsed) = flood(1000, |n| {
        let (status, body) = wire::register(&server, &act, &format!("guess-{n}"), "guesser");
        (status, body["code"].as_str().unwrap_or("").to_string())
    });
    let refused = answers
        .iter()
        .filter(|(status, code)| *status == 403 && code == "InvalidActivation")
        .count();
    let throttled = throttled(&answers);
    figures::note(format!(
        "1,000 wrong activation codes in {:.2} s: {refused} checked, {throttled} throttled",
        elapsed.as_secs_f64()
    ));
    assert_eq!(refused + throttled, 1000, "other answers: {answers:?}");
    assert!(
        refused <= let_in_at_most(elapsed),
        "{refused} wrong codes were checked in {elapsed:?}"
    );

    // While throttled, the right code is refused too (else guessing would go on).
    let (status, body) = wire::register(&server, &act, &code, "honest");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("Throttling.User")),
        "{body}"
    );
    assert_eq!(
        body["message"], "Request was denied due to user flow control.",
        "{body}"
    );

    // A real agent on the same address (a neighbour behind the same NAT) is throttled
    // at first, waits, and gets in once a failure has drained.
    let agent = server.spawn_agent_with("patient", &act, &code);
    let online = wait_for(Duration::from_secs(30), || {
        let body = server
            .client()
            .ok("DescribeManagedInstances", &[("Connected", "true")]);
        (body["TotalCount"] == 1).then_some(())
    });
    assert!(online.is_some(), "the agent never got in");
    drop(agent);

    // And once the failures drain, the right code is taken again.
    std::thread::sleep(Duration::from_millis(FORGIVE_MS + 200));
    let (status, body) = wire::register(&server, &act, &code, "honest");
    assert_eq!(status, 200, "{body}");
    assert!(server
        .log_text()
        .contains("too many failed authentications"));
}

fn wrong_agent_tokens_are_throttled() {
    let server = start();
    let c = server.client();
    let (act, code) = wire::activation(&c, 2, &[]);
    // A real agent, and an instance of the test's own to check the throttle with.
    let mut agent = server.agent_registered_with(&c, "steady", &act, &code);
    let (id, token) = wire::registered(&server, &act, &code, "probe");

    let (answers, elapsed) = flood(500, |n| {
        match wire::connect(&server, &id, &format!("wrong-{n}")) {
            Ok(_) => (101, String::new()),
            Err((status, body)) => {
                let code = serde_json::from_str::<serde_json::Value>(&body)
                    .map(|v| v["code"].as_str().unwrap_or("").to_string())
                    .unwrap_or_default();
                (status, code)
            }
        }
    });
    let refused = answers.iter().filter(|(status, _)| *status == 401).count();
    let throttled = throttled(&answers);
    figures::note(format!(
        "500 wrong agent tokens in {:.2} s: {refused} checked, {throttled} throttled",
        elapsed.as_secs_f64()
    ));
    assert_eq!(refused + throttled, 500, "other answers: {answers:?}");
    assert!(
        refused <= let_in_at_most(elapsed),
        "{refused} wrong tokens were checked in {elapsed:?}"
    );

    // While throttled, the right token is refused too, with the throttling error (not
    // 401: an agent takes that for "deregistered" and drops its schedules).
    match wire::connect(&server, &id, &token) {
        Err((status, body)) => {
            assert_eq!(status, 400, "{body}");
            let e: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(e["code"], "Throttling.User", "{body}");
        }
        Ok(_) => panic!("the right token got in while its address was throttled"),
    }

    // The real agent, restarted meanwhile, is throttled, retries, and comes back.
    agent.restart();
    let back = wait_for(Duration::from_secs(30), || {
        let body = c.ok(
            "DescribeManagedInstances",
            &[("InstanceId.1", agent.instance_id.as_str())],
        );
        (body["Instances"][0]["Connected"] == true).then_some(())
    });
    assert!(back.is_some(), "the agent did not come back");

    // And once the failures drain, the right token is taken.
    std::thread::sleep(Duration::from_millis(FORGIVE_MS + 200));
    let mut ws = wire::welcomed(&server, &id, &token, "probe");
    let _ = ws.close(None);
}
