//! The bench, end to end with tiny counts against the debug binaries, so it cannot
//! rot: every section must produce figures and the fan-out must see every result
//! stored. (The figures themselves are not judged here: debug builds are slow.)

use oca_bench::{Config, Section};
use std::path::PathBuf;
use std::time::Duration;

/// `target/debug`, from this test's executable (`target/debug/deps/smoke-…`).
fn debug_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("target/debug").to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = debug_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins, \
         or run the whole workspace's tests)",
        path.display()
    );
    path
}

#[test]
fn every_section_runs_with_tiny_counts() {
    oca_bench::sys::raise_nofile_limit();
    let config = Config {
        dispatches: 10,
        fanout_sizes: vec![5, 20],
        records: 200,
        api_requests: 5,
        api_clients: 2,
        api_throughput: Duration::from_millis(200),
        agent_idle: Duration::from_secs(1),
        flood_tags: 1_000,
        flood_requests: 2,
        nonce_flood: 40,
        ..Config::quick(binary("oca"), binary("oca-agent"))
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(oca_bench::run(&config));
    let table = report.table();
    eprintln!("{table}");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    for section in Section::ALL {
        assert!(
            report.has_section_rows(section),
            "no figures for {section:?}:\n{table}"
        );
    }
    assert_eq!(report.fanouts.len(), 2, "{:?}", report.fanouts);
    for f in &report.fanouts {
        assert_eq!(f.runs, f.agents, "every agent got its Run: {f:?}");
        assert_eq!(f.acks, f.agents, "every result was stored: {f:?}");
        assert!(f.verified, "DescribeInvocations agrees: {f:?}");
    }
    // The API section saw the seeded records.
    assert!(
        report
            .rows
            .iter()
            .any(|r| r.measure == "DescribeInvocations TotalCount" && r.pass == Some(true)),
        "{table}"
    );
    for needle in ["p50", "RSS", "every result stored", "InvokeStatus Finished"] {
        assert!(table.contains(needle), "no {needle:?} in\n{table}");
    }
}
