//! Deleted accounts stay dead: `oca accounts delete team-c` then `oca accounts create
//! team-c` must not hand the new team the old team's commands, invocations and
//! instances.

use crate::common::{wait_for, Server};
use crate::figures::Case;
use crate::wire;
use std::time::Duration;

pub const CASES: &[Case] = &[(
    "accounts::a_deleted_account_stays_dead",
    a_deleted_account_stays_dead,
)];

/// The agent's saved identity: its instance id and token.
fn identity(agent: &crate::common::Agent) -> (String, String) {
    let text = std::fs::read_to_string(agent.state.path().join("identity.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        v["instance_id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

fn a_deleted_account_stays_dead() {
    let server = Server::start_logged(&[]);
    // team-c has a command, an agent, and a spare activation.
    let team_c = server.account_client("team-c");
    let command = team_c.ok(
        "CreateCommand",
        &[
            ("Name", "team-c-secret"),
            ("Type", "RunShellScript"),
            ("CommandContent", "ZWNobyBzZWNyZXQ="),
        ],
    )["CommandId"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = server.agent_of(&team_c, "team-c-host");
    let (instance_id, token) = identity(&agent);
    let (spare_act, spare_code) = wire::activation(&team_c, 1, &[]);

    // The team goes: its key, then the account.
    server.oca_ok(&["keys", "delete", &team_c.key_id]);
    server.oca_ok(&["accounts", "delete", "team-c"]);

    // Its agent is cut off within seconds, and refused when it tries again.
    let cut = wait_for(Duration::from_secs(10), || {
        server
            .log_text()
            .contains("agent cut off: its account is deleted")
            .then_some(())
    });
    assert!(cut.is_some(), "the deleted account's agent was not cut off");
    match wire::connect(&server, &instance_id, &token) {
        Err((status, _)) => assert_eq!(status, 401),
        Ok(_) => panic!("the deleted account's agent connected"),
    }
    // Its activation registers nobody.
    let (status, body) = wire::register(&server, &spare_act, &spare_code, "late-host");
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("ActivationUnavailable")),
        "{body}"
    );

    // The id is never created again, and can get no key.
    let out = server.oca(&["accounts", "create", "team-c"]);
    assert!(!out.status.success(), "team-c was created again");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was deleted"), "{err}");
    let out = server.oca(&["keys", "create", "--account", "team-c"]);
    assert!(!out.status.success(), "a deleted account got a key");
    let listing = server.oca_ok(&["accounts", "list"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("team-c") && l.contains("deleted")),
        "{listing}"
    );

    // Nobody else sees what it left: not a new team, not the default account.
    let team_d = server.account_client("team-d");
    for c in [&team_d, &server.client()] {
        let found = c.ok("DescribeCommands", &[("CommandId", &command)]);
        assert_eq!(found["TotalCount"], 0, "{found}");
        let found = c.ok(
            "DescribeManagedInstances",
            &[("InstanceId.1", &instance_id)],
        );
        assert_eq!(found["TotalCount"], 0, "{found}");
    }
    drop(agent);
}
