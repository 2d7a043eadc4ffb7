//! The configuration file of `oca serve` end to end: file < environment < flags, as
//! `oca serve --print-config` shows it and as a real server runs with it; unknown keys
//! and values of the wrong type are refused, naming the key.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `oca <args>` with `env` and no other `OCA_*` variable of the test's environment.
fn oca(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(oca_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("OCA_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .output()
        .expect("oca")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `key = value  # source` lines of `--print-config`.
fn setting(printed: &str, key: &str) -> (String, String) {
    let line = printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {printed}"));
    let (value, source) = line[key.len() + 3..].split_once("  # ").unwrap();
    (value.to_string(), source.to_string())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_file_gives_way_to_the_environment_and_the_environment_to_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "oca.toml",
        r#"
# Every flag of `oca serve` by its long name.
heartbeat-secs = 11
delivery-timeout-ms = 22000
lost-run-grace-ms = 33000
regions = ["cn-a", "cn-b"]
data-dir = "/srv/oca"
"#,
    );
    let out = oca(
        &[
            "serve",
            "--config",
            &file,
            "--lost-run-grace-ms",
            "66000",
            "--print-config",
        ],
        &[
            ("OCA_DELIVERY_TIMEOUT_MS", "44000"),
            ("OCA_LOST_RUN_GRACE_MS", "55000"),
            ("OCA_MAX_INSTANCES", "77"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    let s = |k| setting(&printed, k);
    assert_eq!(s("heartbeat-secs"), ("11".into(), "file".into()));
    assert_eq!(
        s("delivery-timeout-ms"),
        ("44000".into(), "environment OCA_DELIVERY_TIMEOUT_MS".into())
    );
    assert_eq!(s("lost-run-grace-ms"), ("66000".into(), "flag".into()));
    assert_eq!(
        s("max-instances"),
        ("77".into(), "environment OCA_MAX_INSTANCES".into())
    );
    assert_eq!(s("regions"), (r#"["cn-a", "cn-b"]"#.into(), "file".into()));
    assert_eq!(s("data-dir"), (r#""/srv/oca""#.into(), "file".into()));
    assert_eq!(
        s("listen"),
        (r#""127.0.0.1:7070""#.into(), "default".into())
    );
    assert!(printed.contains("# max-connections: not set"), "{printed}");

    // What it prints is a configuration file that says the same.
    let again = write(dir.path(), "again.toml", &printed);
    let out = oca(&["serve", "--config", &again, "--print-config"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reprinted = String::from_utf8(out.stdout).unwrap();
    for key in [
        "heartbeat-secs",
        "delivery-timeout-ms",
        "lost-run-grace-ms",
        "max-instances",
        "regions",
        "listen",
    ] {
        assert_eq!(
            setting(&reprinted, key).0,
            setting(&printed, key).0,
            "{key}"
        );
    }

    // `oca up` reads the same file, and its own `no-agent` (which `oca serve` ignores).
    let up_file = write(
        dir.path(),
        "up.toml",
        "no-agent = true\nheartbeat-secs = 5\n",
    );
    let out = oca(&["up", "--config", &up_file, "--print-config"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        setting(&printed, "no-agent"),
        ("true".into(), "file".into())
    );
    let out = oca(&["serve", "--config", &up_file, "--print-config"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        setting(&String::from_utf8(out.stdout).unwrap(), "heartbeat-secs").0,
        "5"
    );
}

#[test]
fn a_server_runs_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = write(
        dir.path(),
        "oca.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\nregions = [\"cn-config\"]\n",
            data.display()
        ),
    );
    let mut child = Command::new(oca_bin())
        .args(["serve", "--config", &file])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("OCA listening on https://127.0.0.1:"),
        "{line}"
    );
    assert!(!line.contains(":7070"), "the file's port 0: {line}");
    assert!(data.join("oca.db").exists(), "the file's data directory");
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |text: &str, says: &[&str]| {
        let file = write(dir.path(), "bad.toml", text);
        let out = oca(&["serve", "--config", &file, "--print-config"], &[]);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{text}");
        let err = stderr(&out);
        assert!(err.contains(&file), "{text}: names the file: {err}");
        for s in says {
            assert!(err.contains(s), "{text}: {s:?} not in {err}");
        }
    };
    refused("no-such-flag = 1\n", &["unknown key `no-such-flag`"]);
    refused(
        "heartbeat_secs = 1\n",
        &["unknown key `heartbeat_secs`", "`heartbeat-secs`"],
    );
    refused("print-config = true\n", &["unknown key `print-config`"]);
    refused("config = \"/x\"\n", &["unknown key `config`"]);
    refused(
        "heartbeat-secs = \"thirty\"\n",
        &["`heartbeat-secs` must be an integer"],
    );
    refused(
        "heartbeat-secs = -4\n",
        &["`heartbeat-secs`", "invalid value '-4'"],
    );
    refused(
        "retention-days = 0\n",
        &["`retention-days`", "invalid value '0'"],
    );
    refused("listen = 7070\n", &["`listen` must be a string"]);
    refused(
        "listen = \"nowhere\"\n",
        &["`listen`", "invalid value 'nowhere'"],
    );
    refused(
        "regions = \"cn-a\"\n",
        &["`regions` must be an array of strings"],
    );
    refused(
        "regions = [1, 2]\n",
        &["`regions` must be an array of strings"],
    );
    refused(
        "no-agent = \"yes\"\n",
        &["`no-agent` must be true or false"],
    );
    refused("heartbeat-secs = [\n", &["TOML parse error"]);

    // A --config that names no file is an error; so is an environment that breaks.
    let out = oca(&["serve", "--config", "/nonexistent/oca.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/oca.toml does not exist"));
    let out = oca(
        &["serve", "--print-config"],
        &[("OCA_CONFIG_FILE", "/nonexistent/x.toml")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = oca(
        &["serve", "--print-config"],
        &[("OCA_HEARTBEAT_SECS", "soon")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--heartbeat-secs"),
        "{}",
        stderr(&out)
    );
}
