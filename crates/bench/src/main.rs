//! `oca-bench [--quick] [--only SECTION]…`: benchmarks the release `oca` server found
//! next to this executable and prints a Markdown table. Progress goes to stderr.

use oca_bench::{Config, Section};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: oca-bench [--quick] [--only SECTION]... [--oca PATH] [--agent PATH]

Starts the `oca` server next to this executable on 127.0.0.1 with many simulated
agents and a real `oca-agent`, and prints a table of figures against their targets.

  --quick          smaller counts (1,000 agents, 10,000 records, 50 dispatches)
  --plain-http     the server without TLS (it speaks HTTPS by default)
  --only SECTION   run only this section (repeatable): dispatch, fanout, api, memory,
                   hostile
  --oca PATH       the oca binary (default: next to oca-bench)
  --agent PATH     the oca-agent binary (default: next to oca-bench)";

fn main() -> ExitCode {
    let mut quick = false;
    let mut plain_http = false;
    let mut only: Vec<Section> = Vec::new();
    let mut oca: Option<PathBuf> = None;
    let mut agent: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--plain-http" => plain_http = true,
            "--only" => match args.next().as_deref().and_then(Section::parse) {
                Some(s) => only.push(s),
                None => return usage("--only needs one of dispatch, fanout, api, memory, hostile"),
            },
            "--oca" => match args.next() {
                Some(p) => oca = Some(p.into()),
                None => return usage("--oca needs a path"),
            },
            "--agent" => match args.next() {
                Some(p) => agent = Some(p.into()),
                None => return usage("--agent needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_default();
    let oca = oca.unwrap_or_else(|| here.join("oca"));
    let agent = agent.unwrap_or_else(|| here.join("oca-agent"));
    for bin in [&oca, &agent] {
        if !bin.is_file() {
            eprintln!(
                "error: {} not found; build it first: cargo build --release --workspace --bins",
                bin.display()
            );
            return ExitCode::from(2);
        }
    }
    let mut config = if quick {
        Config::quick(oca, agent)
    } else {
        Config::full(oca, agent)
    };
    config.tls = !plain_http;
    if !only.is_empty() {
        only.sort();
        only.dedup();
        config.sections = only;
    }

    let nofile = oca_bench::sys::raise_nofile_limit();
    let machine = oca_bench::sys::Machine::probe();
    eprintln!("machine: {}; open files: {nofile}", machine.describe());

    // The bench stops by itself even if something hangs.
    let limit = config.time_limit();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("error: the bench ran longer than {limit:?}; stopping");
        oca_bench::server::kill_all_children();
        std::process::exit(3);
    });

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = runtime.block_on(oca_bench::run(&config));
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    oca_bench::server::kill_all_children();

    let mode = if quick { "--quick" } else { "full" };
    println!("# oca-bench ({mode})\n");
    println!("Machine: {}\n", report.machine.describe());
    println!(
        "Transport: {}\n",
        if config.tls {
            "HTTPS / WSS (TLS 1.3, the server's private CA), as the server runs by default"
        } else {
            "plain HTTP / WS (--plain-http)"
        }
    );
    print!("{}", report.table());
    println!("\nTotal time: {:.0} s", report.elapsed.as_secs_f64());
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{} section(s) failed", report.errors.len());
        ExitCode::from(1)
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}
