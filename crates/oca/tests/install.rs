//! Installing an agent in one line, in a temporary root where systemd does not run (as
//! on this machine; a stand-in `systemctl` checks what would be asked of a running
//! one): CreateActivation's `InstallCommand` and `oca activations create` print the
//! line; `oca-agent install` registers, writes the state dir, the binary and the unit,
//! and the agent installed comes online from them; install again changes nothing,
//! `--force` registers again, `uninstall` keeps or purges the state dir. The unit files
//! (the agent's and `packaging/oca.service`) are checked with `systemd-analyze verify`
//! where it exists.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

const UNIT: &str = "etc/systemd/system/oca-agent.service";
const BINARY: &str = "usr/local/bin/oca-agent";
const STATE: &str = "var/lib/oca-agent";

/// The words of an install line after `oca-agent` (the line quotes nothing here).
fn words(line: &str) -> Vec<String> {
    assert!(!line.contains('\''), "{line}");
    let mut w = line.split_whitespace().map(str::to_string);
    assert_eq!(w.next().as_deref(), Some("oca-agent"));
    w.collect()
}

fn agent_cmd(args: &[String], extra: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("oca-agent")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file under `root` (paths relative to it), systemd's own units aside.
fn files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.starts_with(root.join("usr/lib/systemd")) {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `systemd-analyze verify` of the unit `name` installed in `root`, with the system's
/// own units copied in (it resolves the unit's dependencies and checks that `ExecStart`
/// exists, both in the root). Skipped, saying so, where it cannot run.
fn verify(root: &Path, name: &str) {
    let system_units = Path::new("/usr/lib/systemd/system");
    let has_analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_analyze || !system_units.is_dir() {
        eprintln!("note: systemd-analyze or /usr/lib/systemd/system missing: {name} not verified");
        return;
    }
    let copy = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&copy).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(system_units)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(name)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only what it says of this unit matters (not of the system's own).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(name) || l.contains(root.to_str().unwrap()))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {name}: {}\n{stderr}",
        out.status
    );
    std::fs::remove_dir_all(&copy).unwrap();
    eprintln!("systemd-analyze verify {name}: ok");
}

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

fn registered_count(c: &Client, activation_id: &str) -> i64 {
    let body = c.ok("DescribeActivations", &[("ActivationId", activation_id)]);
    body["ActivationList"][0]["RegisteredCount"]
        .as_i64()
        .unwrap()
}

/// The agent installed in `root`, started as its unit would start it (its paths in
/// the root).
struct Running(Child);

impl Running {
    fn start(root: &Path, binary: &str, server: &str) -> Running {
        Running(
            Command::new(root.join(binary))
                .args(["--server", server, "--state-dir"])
                .arg(root.join(STATE))
                .env("RUST_LOG", "warn")
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn install_and_uninstall_in_a_root_without_systemd() {
    let server = Server::start_tls(&[]);
    let c = server.client();
    let fp = server.fingerprint.clone().unwrap();
    let act = c.ok(
        "CreateActivation",
        &[("InstanceCount", "2"), ("InstanceName", "installed")],
    );
    let activation_id = act["ActivationId"].as_str().unwrap();
    let code = act["ActivationCode"].as_str().unwrap();
    let line = act["InstallCommand"].as_str().expect("an InstallCommand");
    assert_eq!(
        line,
        format!(
            "oca-agent install --server {} --activation-id {activation_id} \
             --activation-code {code} --fingerprint {fp}",
            server.url()
        )
    );
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let at_root = ["--root", root.to_str().unwrap()];

    // A wrong code: refused, nothing written.
    let wrong = words(&line.replace(code, "not-the-code"));
    let out = agent_cmd(&wrong, &at_root);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registration refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files(root), Vec::<String>::new());

    // The line, in the root: registered, written, not started (no systemd here).
    let stdout = ok(agent_cmd(&words(line), &at_root));
    assert!(stdout.contains("Not started"), "{stdout}");
    assert_eq!(
        files(root),
        [
            UNIT.to_string(),
            BINARY.to_string(),
            format!("{STATE}/identity.json"),
            format!("{STATE}/tls.json"),
        ]
    );
    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();
    assert!(stdout.contains(&unit), "the unit is printed:\n{stdout}");
    let exec = format!(
        "ExecStart=/usr/local/bin/oca-agent --server {} --state-dir /var/lib/oca-agent",
        server.url()
    );
    for wanted in [
        exec.as_str(),
        "Restart=always",
        "Delegate=yes",
        "KillMode=control-group",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == wanted), "{wanted} in\n{unit}");
    }
    assert_eq!(mode(&root.join(UNIT)), 0o644);
    assert_eq!(mode(&root.join(BINARY)), 0o755);
    assert_eq!(mode(&root.join(STATE)), 0o700);
    assert_eq!(mode(&root.join(STATE).join("identity.json")), 0o600);
    assert_eq!(
        std::fs::read(root.join(BINARY)).unwrap(),
        std::fs::read(agent_bin()).unwrap()
    );
    // The code was used once: it is in no file and not on the screen.
    for f in [
        UNIT.to_string(),
        format!("{STATE}/identity.json"),
        format!("{STATE}/tls.json"),
    ] {
        let text = std::fs::read_to_string(root.join(&f)).unwrap();
        assert!(!text.contains(code), "the code is in {f}");
    }
    assert!(!stdout.contains(code));
    let tls = std::fs::read_to_string(root.join(STATE).join("tls.json")).unwrap();
    assert!(tls.contains(&fp), "{tls}");
    verify(root, "oca-agent.service");

    // Registered; online once started as the unit starts it.
    assert_eq!(registered_count(&c, activation_id), 1);
    let identity = std::fs::read_to_string(root.join(STATE).join("identity.json")).unwrap();
    let agent = Running::start(root, BINARY, &server.url());
    let id = wait_for(Duration::from_secs(20), || online(&c, "installed")).expect("online");
    assert!(identity.contains(&id));
    let run = c.run("echo installed", &[&id], &[]);
    assert_eq!(
        b64(&c.wait(&run, Duration::from_secs(30))[0]["Output"]),
        "installed\n"
    );
    drop(agent);

    // Again: installed already, nothing changed, no registration.
    let stdout = ok(agent_cmd(&words(line), &at_root));
    assert!(stdout.contains("already installed"), "{stdout}");
    assert_eq!(registered_count(&c, activation_id), 1);
    assert_eq!(std::fs::read_to_string(root.join(UNIT)).unwrap(), unit);

    // --force: a new registration, a new identity.
    ok(agent_cmd(
        &words(line),
        &[at_root[0], at_root[1], "--force"],
    ));
    assert_eq!(registered_count(&c, activation_id), 2);
    let forced = std::fs::read_to_string(root.join(STATE).join("identity.json")).unwrap();
    assert_ne!(forced, identity);
    assert_eq!(files(root).len(), 4, "{:?}", files(root));
    let state_dirs: Vec<_> = std::fs::read_dir(root.join("var/lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(state_dirs, ["oca-agent"], "nothing left aside");

    // Uninstall: the unit and the binary go, the state dir stays.
    let stdout = ok(agent_cmd(&["uninstall".into()], &at_root));
    assert!(stdout.contains("Kept the state dir"), "{stdout}");
    assert_eq!(
        files(root),
        [
            format!("{STATE}/identity.json"),
            format!("{STATE}/tls.json")
        ]
    );
    let stdout = ok(agent_cmd(&["uninstall".into()], &at_root));
    assert!(stdout.contains("not installed"), "{stdout}");

    // Installed again with the same line (its two uses are spent): the identity kept
    // is taken up, nothing registers.
    let stdout = ok(agent_cmd(&words(line), &at_root));
    assert!(stdout.contains("kept"), "{stdout}");
    assert_eq!(registered_count(&c, activation_id), 2);
    assert_eq!(
        std::fs::read_to_string(root.join(STATE).join("identity.json")).unwrap(),
        forced
    );
    let agent = Running::start(root, BINARY, &server.url());
    wait_for(Duration::from_secs(20), || {
        online(&c, "installed").filter(|i| forced.contains(i.as_str()))
    })
    .expect("the forced identity online");
    drop(agent);

    // Purged: nothing left.
    let stdout = ok(agent_cmd(&["uninstall".into(), "--purge".into()], &at_root));
    assert!(stdout.contains("stays registered"), "{stdout}");
    assert_eq!(files(root), Vec::<String>::new());
}

/// A stand-in for `systemctl` that logs its arguments and answers `status`.
fn fake_systemctl(dir: &Path, name: &str, status: i32) -> (PathBuf, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexit {status}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

#[test]
fn a_ca_file_a_given_binary_and_a_running_systemd() {
    let server = Server::start_tls(&[]);
    let c = server.client();
    let act = c.ok(
        "CreateActivation",
        &[("InstanceCount", "1"), ("InstanceName", "by-ca-file")],
    );
    let root_dir = tempfile::tempdir().unwrap();
    let root = root_dir.path();
    let tools = tempfile::tempdir().unwrap();
    let (systemctl, log) = fake_systemctl(tools.path(), "systemctl", 0);
    let (failing, failing_log) = fake_systemctl(tools.path(), "failing", 1);
    // An agent binary already in place (a package's), which the unit runs as it is.
    let opt = root.join("opt/oca");
    std::fs::create_dir_all(&opt).unwrap();
    std::fs::copy(agent_bin(), opt.join("oca-agent")).unwrap();
    let install: Vec<String> = [
        "install",
        "--server",
        &server.url(),
        "--activation-id",
        act["ActivationId"].as_str().unwrap(),
        "--activation-code",
        act["ActivationCode"].as_str().unwrap(),
        "--ca-file",
        server.ca_file().to_str().unwrap(),
        "--binary",
        "/opt/oca/oca-agent",
        "--task-isolation",
        "process-tree",
        "--root",
        root.to_str().unwrap(),
        "--systemctl",
        systemctl.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stdout = ok(agent_cmd(&install, &[]));
    assert!(stdout.contains("Started"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "daemon-reload\nenable oca-agent.service\nrestart oca-agent.service\n"
    );
    // The CA file is copied into the state dir and trusted there.
    assert_eq!(
        std::fs::read(root.join(STATE).join("ca.pem")).unwrap(),
        std::fs::read(server.ca_file()).unwrap()
    );
    let tls = std::fs::read_to_string(root.join(STATE).join("tls.json")).unwrap();
    assert!(tls.contains("\"ca.pem\""), "{tls}");
    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();
    assert!(
        unit.contains(&format!(
            "\nExecStart=/opt/oca/oca-agent --server {} --state-dir /var/lib/oca-agent \
             --task-isolation process-tree\n",
            server.url()
        )),
        "{unit}"
    );
    assert!(!unit.contains("X-OcaInstalledBinary"), "{unit}");
    assert!(!root.join(BINARY).exists());
    verify(root, "oca-agent.service");
    let agent = Running::start(root, "opt/oca/oca-agent", &server.url());
    wait_for(Duration::from_secs(20), || online(&c, "by-ca-file")).expect("online");
    drop(agent);

    // systemctl fails to stop it: nothing is removed.
    let uninstall = |ctl: &Path, purge: bool| {
        let mut args = vec![
            "uninstall".to_string(),
            "--root".into(),
            root.display().to_string(),
            "--systemctl".into(),
            ctl.display().to_string(),
        ];
        if purge {
            args.push("--purge".into());
        }
        agent_cmd(&args, &[])
    };
    let before = files(root);
    assert!(!uninstall(&failing, true).status.success());
    assert_eq!(
        std::fs::read_to_string(&failing_log).unwrap(),
        "disable --now oca-agent.service\n"
    );
    assert_eq!(files(root), before);

    std::fs::remove_file(&log).unwrap();
    ok(uninstall(&systemctl, true));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "disable --now oca-agent.service\ndaemon-reload\n"
    );
    // The binary was not ours: it stays.
    assert_eq!(files(root), ["opt/oca/oca-agent"]);
}

#[test]
fn oca_activations_create_prints_the_line() {
    let server = Server::start_tls(&["--advertise", "oca.example.test"]);
    let creds = server.dir.path().join("cli.json");
    std::fs::write(
        &creds,
        serde_json::json!({
            "endpoint": server.url(),
            "region_id": REGION,
            "access_key_id": server.key_id,
            "access_key_secret": server.secret,
            "ca_file": server.ca_file(),
        })
        .to_string(),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        Command::new(oca_bin())
            .args(args)
            .arg("--config")
            .arg(&creds)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let fp = server.fingerprint.clone().unwrap();
    let port = server.port;

    // The line alone on stdout, with the advertised name.
    let stdout = ok(cli(&[
        "activations",
        "create",
        "--count",
        "20",
        "--name",
        "web",
    ]));
    let line = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        line.starts_with(&format!(
            "oca-agent install --server https://oca.example.test:{port} --activation-id act-"
        )),
        "{line}"
    );
    assert!(line.ends_with(&format!("--fingerprint {fp}")), "{line}");
    let w = words(line);
    let id = &w[w.iter().position(|x| x == "--activation-id").unwrap() + 1];

    // --server-url for the hosts; JSON with the API's fields.
    let json: serde_json::Value = serde_json::from_str(&ok(cli(&[
        "activations",
        "create",
        "--server-url",
        &server.url(),
        "-o",
        "json",
    ])))
    .unwrap();
    let line = json["InstallCommand"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("oca-agent install --server {} ", server.url())),
        "{line}"
    );
    assert!(line.contains(json["ActivationCode"].as_str().unwrap()));

    // Listed, disabled: the line no longer installs, and nothing is written.
    let listing = ok(cli(&["activations", "list"]));
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(id.as_str()) && l.contains("web")),
        "{listing}"
    );
    ok(cli(&["activations", "disable", id]));
    assert!(ok(cli(&["activations", "list"]))
        .lines()
        .any(|l| l.starts_with(id.as_str()) && l.contains("disabled")));
    let root = tempfile::tempdir().unwrap();
    let out = agent_cmd(
        &words(&stdout.replace(&format!("https://oca.example.test:{port}"), &server.url())),
        &["--root", root.path().to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert_eq!(files(root.path()), Vec::<String>::new());
}

#[test]
fn the_server_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/oca.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for wanted in [
        "User=oca",
        "StateDirectory=oca",
        "ExecStart=/usr/local/bin/oca serve",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(text.lines().any(|l| l == wanted), "{wanted}");
    }
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::copy(&unit, root.join("etc/systemd/system/oca.service")).unwrap();
    std::fs::copy(oca_bin(), root.join("usr/local/bin/oca")).unwrap();
    verify(root, "oca.service");
}
