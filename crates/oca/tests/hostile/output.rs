//! What comes back out: XML that always parses, whole output read in bounded pages,
//! SendFile names the host can write and modes it must not, files kept private.

use crate::common::*;
use crate::figures::{self, Case};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

pub const CASES: &[Case] = &[
    (
        "output::xml_is_always_well_formed",
        xml_is_always_well_formed,
    ),
    (
        "output::reading_whole_output_is_bounded",
        reading_whole_output_is_bounded,
    ),
    (
        "output::send_file_names_and_modes",
        send_file_names_and_modes,
    ),
    (
        "output::the_data_directory_is_private",
        the_data_directory_is_private,
    ),
];

/// Parses `xml` as a strict XML 1.0 parser does (roxmltree refuses characters XML
/// forbids).
fn assert_well_formed(xml: &str, what: &str) {
    if let Err(e) = roxmltree::Document::parse(xml) {
        panic!(
            "{what}: not well-formed XML ({e}): {:?}",
            &xml[..xml.len().min(600)]
        );
    }
}

/// Item 9: control characters are refused in names and descriptions at creation, and
/// answers stay well-formed XML whatever a field holds (output with NUL bytes).
fn xml_is_always_well_formed() {
    let server = Server::start_logged(&[]);
    let agent = server.agent("xml");
    let c = server.client();
    for (param, value) in [
        ("Name", "a\u{1}b"),
        ("Name", "tab\tname"),
        ("Description", "nul \u{0} here"),
        ("Description", "esc \u{1b}[31m"),
    ] {
        let mut p = vec![
            ("Type", "RunShellScript"),
            ("CommandContent", "dHJ1ZQ=="),
            ("Name", "ok"),
        ];
        p.retain(|(k, _)| *k != param);
        p.push((param, value));
        c.err("CreateCommand", &p, "InvalidParameter", 400);
        let mut run = vec![
            ("Type", "RunShellScript"),
            ("CommandContent", "true"),
            ("ContentEncoding", "PlainText"),
            ("InstanceId.1", &agent.instance_id),
        ];
        run.push((param, value));
        c.err("RunCommand", &run, "InvalidParameter", 400);
    }
    c.err(
        "CreateActivation",
        &[("Description", "bell \u{7}")],
        "InvalidParameter",
        400,
    );
    // Multi-line descriptions are fine.
    c.ok(
        "CreateCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "dHJ1ZQ=="),
            ("Name", "multi"),
            ("Description", "line 1\n\tline 2"),
        ],
    );

    let id = c.run("printf 'a\\000b\\001c\\033[0m'", &[&agent.instance_id], &[]);
    c.wait(&id, Duration::from_secs(30));
    for (action, extra) in [
        ("DescribeInvocationResults", vec![("InvokeId", id.as_str())]),
        (
            "DescribeInvocations",
            vec![("InvokeId", id.as_str()), ("IncludeOutput", "true")],
        ),
        ("DescribeCommands", vec![]),
    ] {
        let mut p = extra.clone();
        p.extend([("Format", "XML"), ("ContentEncoding", "PlainText")]);
        let a = c.call(action, &p);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_well_formed(&a.body, action);
    }
    let a = c.call(
        "DescribeInvocationResults",
        &[
            ("InvokeId", &id),
            ("Format", "XML"),
            ("ContentEncoding", "PlainText"),
        ],
    );
    assert!(
        a.body.contains("a\u{FFFD}b\u{FFFD}c\u{FFFD}[0m"),
        "{}",
        a.body
    );
    // Error documents too (the message quotes the caller's parameter name).
    let a = c.call(
        "DescribeCommands",
        &[("Format", "XML"), ("PageSize", "\u{1}")],
    );
    assert_well_formed(&a.body, "an error");
}

/// Item 10: a 16 MiB output read whole by ten readers at once, a page at a time: the
/// pages join back byte for byte, and the server stays small.
fn reading_whole_output_is_bounded() {
    let server = Server::start_logged(&[]);
    let agent = server.agent("big-output");
    let c = server.client();
    let total: usize = 16 << 20;
    let id = c.run(
        &format!("yes 0123456789abcdef | head -c {total}"),
        &[&agent.instance_id],
        &[("Timeout", "300")],
    );
    c.wait(&id, Duration::from_secs(300));
    let expected: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(total)
        .collect();
    // Parameter checks.
    for (k, v) in [("Length", "0"), ("Length", "1048577"), ("Offset", "-1")] {
        c.err(
            "DescribeInvocationOutput",
            &[
                ("InvokeId", &id),
                ("InstanceId", &agent.instance_id),
                (k, v),
            ],
            "InvalidParameter",
            400,
        );
    }
    let rss_before = server.rss().unwrap_or(0);
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let c = server.client();
            let (id, instance) = (id.clone(), agent.instance_id.clone());
            std::thread::spawn(move || {
                let mut whole = Vec::new();
                let mut pages = 0;
                loop {
                    let offset = whole.len().to_string();
                    let page = c.ok(
                        "DescribeInvocationOutput",
                        &[
                            ("InvokeId", &id),
                            ("InstanceId", &instance),
                            ("Offset", &offset),
                        ],
                    );
                    pages += 1;
                    whole.extend(b64_bytes(&page["Output"]));
                    assert_eq!(page["NextOffset"].as_u64().unwrap(), whole.len() as u64);
                    if whole.len() as u64 >= page["OutputLength"].as_u64().unwrap() {
                        break;
                    }
                }
                (whole, pages)
            })
        })
        .collect();
    for r in readers {
        let (whole, pages) = r.join().unwrap();
        assert_eq!(whole.len(), expected.len());
        assert!(whole == expected, "the pages join back byte for byte");
        assert_eq!(pages, 16);
    }
    let peak = server.peak_rss().unwrap_or(0);
    figures::note(format!(
        "ten readers of a 16 MiB output, 1 MiB pages: server RSS {} MiB before, peak {} MiB (was 509 MB)",
        rss_before >> 20,
        peak >> 20
    ));
    assert!(peak < 100 << 20, "peak RSS {} MiB", peak >> 20);
}

/// Item 11: SendFile names are counted in bytes as the host's file system does, and
/// setuid/setgid modes are refused.
fn send_file_names_and_modes() {
    let server = Server::start_logged(&[]);
    let agent = server.agent("send-file");
    let c = server.client();
    let dir = scratch_dir();
    let dir_s = dir.to_str().unwrap();
    let send = |name: &str, mode: &str| {
        c.call(
            "SendFile",
            &[
                ("InstanceId.1", &agent.instance_id),
                ("Name", name),
                ("TargetDir", dir_s),
                ("Content", "x"),
                ("FileMode", mode),
            ],
        )
    };
    // 100 characters of 中 are 300 bytes: more than a file name can have.
    let a = send(&"中".repeat(100), "0644");
    assert_eq!(
        (a.status, a.json()["Code"].as_str()),
        (400, Some("InvalidParameter")),
        "{}",
        a.body
    );
    for mode in ["4755", "2755", "6755", "04755", "7777"] {
        let a = send("setuid", mode);
        assert_eq!(
            (a.status, a.json()["Code"].as_str()),
            (400, Some("InvalidParameter")),
            "{mode}: {}",
            a.body
        );
        assert!(!dir.join("setuid").exists());
    }
    // The longest names a file system takes are written (255 bytes: ASCII, and 85 × 中).
    for name in ["n".repeat(255), "中".repeat(85)] {
        let a = send(&name, "0755");
        assert_eq!(a.status, 200, "{}", a.body);
        let id = a.json()["InvokeId"].as_str().unwrap().to_string();
        let inv = wait_for(Duration::from_secs(30), || {
            let body = c.ok("DescribeSendFileResults", &[("InvokeId", &id)]);
            let inv = body["Invocations"]["Invocation"][0].clone();
            (inv["InvocationStatus"] != "Pending" && inv["InvocationStatus"] != "Running")
                .then_some(inv)
        })
        .expect("the delivery ended");
        assert_eq!(inv["InvocationStatus"], "Success", "{inv}");
        let meta = std::fs::metadata(dir.join(&name)).expect("written");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    }
}

/// Item 13: what the server writes is private, and an existing data directory left
/// open (mode 755, files 644) is closed at start.
fn the_data_directory_is_private() {
    let mut server = Server::start_with(&[]);
    let c = server.client();
    c.ok(
        "CreateCommand",
        &[
            ("Type", "RunShellScript"),
            ("CommandContent", "c2VjcmV0"),
            ("Name", "secret"),
        ],
    );
    let dir = data_path(&server).to_path_buf();
    let check = |when: &str| {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{when}: the data directory");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            if entry.file_type().unwrap().is_file() {
                assert_eq!(mode, 0o600, "{when}: {name}");
                seen.push(name);
            }
        }
        for must in ["oca.db", "oca.db-wal", "oca.db-shm", "master.key"] {
            assert!(seen.iter().any(|n| n == must), "{when}: {must} in {seen:?}");
        }
    };
    check("fresh");
    // Opened up by hand (or by an older version): closed again at the next start.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    server.crash_and_restart();
    server.client().ok("DescribeCommands", &[]);
    check("after a restart");
}
