//! TLS end to end: the server makes its private CA and speaks HTTPS by default; signed
//! calls over HTTPS; agents that trust the CA file or its pinned fingerprint (kept
//! for later starts), and one with a wrong fingerprint that never gets in; a server
//! certificate made again for new names without the agents noticing; plain HTTP at
//! the TLS port gets the vendor's NeedSsl error.

mod common;

use common::*;
use std::time::Duration;

fn online(c: &Client, name: &str) -> Option<String> {
    let body = c.ok(
        "DescribeManagedInstances",
        &[("InstanceName", name), ("PageSize", "50")],
    );
    body["Instances"]
        .as_array()?
        .iter()
        .find(|i| i["InstanceName"] == name && i["Connected"] == true)
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
}

#[test]
fn the_server_speaks_https_with_its_own_ca_by_default() {
    let server = Server::start_tls(&[]);
    assert!(server.url().starts_with("https://"));
    // The fingerprint it printed is its CA's.
    let ca = oca_tls::read_certificates(&server.ca_file()).unwrap();
    let printed = server.fingerprint.clone().expect("a fingerprint line");
    assert_eq!(
        oca_tls::Fingerprint::parse(&printed).unwrap(),
        oca_tls::Fingerprint::of(&ca[0])
    );
    let c = server.client();
    c.ok("DescribeCommands", &[]);
    server
        .client()
        .with_sig(Sig::V1)
        .ok("DescribeCommands", &[]);

    // Plain HTTP at the TLS port: the vendor's error for it, as a document.
    let a = http_get(&server.client().host(), "/?Action=DescribeCommands", &[]);
    let body = a.json();
    assert_eq!(
        (a.status, body["Code"].as_str()),
        (404, Some("InvalidProtocol.NeedSsl"))
    );
    assert!(body["RequestId"].as_str().is_some_and(|r| !r.is_empty()));

    // A client that trusts something else: the handshake fails.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["other".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let wrong =
        std::sync::Arc::new(oca_tls::client_config(&oca_tls::Trust::CaFile(other_ca)).unwrap());
    let a = https_send(&c.host(), wrong, "GET", "/", &[], b"");
    assert_eq!(a.status, 0, "a client trusting another CA got an answer");
}

#[test]
fn agents_trust_the_ca_file_or_its_pinned_fingerprint() {
    let server = Server::start_tls(&[]);
    let c = server.client();
    // By the CA file (what the harness gives every agent of a TLS server).
    let by_file = server.agent("tls-file");
    let id = c.run("echo over tls", &[&by_file.instance_id], &[]);
    let r = c.wait(&id, Duration::from_secs(30));
    assert_eq!(b64(&r[0]["Output"]), "over tls\n");

    // By the fingerprint, given once at registration: kept in the state dir.
    let fp = server.fingerprint.clone().unwrap();
    let act = c.ok(
        "CreateActivation",
        &[("InstanceName", "tls-pin"), ("InstanceCount", "1")],
    );
    let state = tempfile::tempdir().unwrap();
    let spawn = |extra: &[&str]| {
        std::process::Command::new(agent_bin())
            .args(["--server", &server.url(), "--state-dir"])
            .arg(state.path())
            .args(["--hostname", "tls-pin"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap()
    };
    let mut pinned = spawn(&[
        "--fingerprint",
        &fp,
        "--activation-id",
        act["ActivationId"].as_str().unwrap(),
        "--activation-code",
        act["ActivationCode"].as_str().unwrap(),
    ]);
    let id = wait_for(Duration::from_secs(20), || online(&c, "tls-pin")).expect("pinned agent");
    let kept = std::fs::read_to_string(state.path().join("tls.json")).unwrap();
    assert!(kept.contains(fp.trim_start_matches("sha256:")), "{kept}");
    pinned.kill().unwrap();
    pinned.wait().unwrap();
    wait_for(Duration::from_secs(10), || {
        online(&c, "tls-pin").is_none().then_some(())
    });
    // Started again with no flag at all: it trusts what it kept.
    let mut again = spawn(&[]);
    let back = wait_for(Duration::from_secs(20), || online(&c, "tls-pin"));
    assert_eq!(back.as_deref(), Some(id.as_str()));
    again.kill().unwrap();
    again.wait().unwrap();

    // A wrong fingerprint: never registers.
    let act = c.ok(
        "CreateActivation",
        &[("InstanceName", "tls-wrong"), ("InstanceCount", "1")],
    );
    let wrong_state = tempfile::tempdir().unwrap();
    let wrong_fp = oca_tls::Fingerprint::of(b"not the CA").to_string();
    let mut wrong = std::process::Command::new(agent_bin())
        .args(["--server", &server.url(), "--state-dir"])
        .arg(wrong_state.path())
        .args(["--hostname", "tls-wrong", "--fingerprint", &wrong_fp])
        .args(["--activation-id", act["ActivationId"].as_str().unwrap()])
        .args(["--activation-code", act["ActivationCode"].as_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let listed = c.ok("DescribeManagedInstances", &[("InstanceName", "tls-wrong")]);
    assert_eq!(listed["TotalCount"], 0, "{listed}");
    assert!(!wrong_state.path().join("identity.json").exists());
    wrong.kill().unwrap();
    wrong.wait().unwrap();
}

#[test]
fn a_new_server_certificate_needs_nothing_of_the_agents() {
    let mut server = Server::start_tls(&[]);
    let c = server.client();
    let fp = server.fingerprint.clone().unwrap();
    let mut agent = server.agent_with("tls-renew", &["--fingerprint", &fp]);
    let leaf_before = std::fs::read(server.dir.path().join("tls/server.pem")).unwrap();
    // Restarted with another name to advertise: a new server certificate, same CA.
    server.set_extra_args(&["--advertise", "oca.example.test"]);
    server.crash_and_restart();
    let leaf_after = std::fs::read(server.dir.path().join("tls/server.pem")).unwrap();
    assert_ne!(
        leaf_before, leaf_after,
        "the server certificate was made again"
    );
    assert_eq!(server.fingerprint.as_deref(), Some(fp.as_str()), "same CA");
    let names = std::fs::read_to_string(server.dir.path().join("tls/server.names")).unwrap();
    assert!(names.contains("oca.example.test"), "{names}");
    let back = wait_for(Duration::from_secs(30), || online(&c, "tls-renew"));
    assert_eq!(back.as_deref(), Some(agent.instance_id.as_str()));
    let id = c.run("echo renewed", &[&agent.instance_id], &[]);
    assert_eq!(
        b64(&c.wait(&id, Duration::from_secs(30))[0]["Output"]),
        "renewed\n"
    );
    agent.kill9();
}
