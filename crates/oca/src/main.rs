//! `oca`: the OCA server and its command line.
//!
//! - `oca up` — server with embedded storage plus a local agent, on 127.0.0.1.
//! - `oca serve` — the server alone.
//! - `oca run`, `oca invocations`, `oca results`, `oca instances`, `oca deregister` —
//!   the everyday CLI, talking to the API with the credentials `oca up` saved.
//! - `oca activations …` — the codes hosts join with; `create` prints the line that
//!   installs an agent on a host.
//! - `oca keys …`, `oca accounts …` — access keys and accounts (teams), offline
//!   against the data directory.
//! - `oca audit` — the audit trail (every change and registration), offline.

mod activations;
mod admin;
mod cli;
mod client;
mod config;
mod listener;
mod retention;
mod server;
mod settings;
mod tls;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "oca",
    version,
    about = "Open Cloud Assistant: run scripts on a fleet and query every run"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server with embedded storage and a local agent (Ctrl-C stops both).
    Up(server::UpArgs),
    /// Start the server only.
    Serve(server::ServeArgs),
    /// Run a shell script on instances, wait, and print each instance's result.
    Run(cli::RunArgs),
    /// List recent invocations.
    Invocations(cli::ListArgs),
    /// Show the per-instance results of an invocation.
    Results(cli::ResultsArgs),
    /// Stop an invocation: its runs in progress, and a schedule's future runs.
    Stop(cli::ResultsArgs),
    /// List instances and whether their agent is online.
    Instances(cli::ListArgs),
    /// Deregister an instance (`oca deregister mi-…`): its agent is cut off at once and
    /// cannot come back with its old token; its past results stay.
    Deregister(cli::DeregisterArgs),
    /// Set tags on an instance (`oca tag mi-… env=prod`); `oca run --tag env=prod` targets them.
    Tag(cli::TagArgs),
    /// Remove tags from an instance (`oca untag mi-… env`).
    Untag(cli::UntagArgs),
    /// Activations, the codes hosts join with: `oca activations create --count 20`
    /// prints the line to run on each host.
    Activations {
        #[command(subcommand)]
        command: activations::ActivationsCommand,
    },
    /// Manage access keys (offline, against a data directory).
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Manage accounts, one per team (offline, against a data directory).
    Accounts {
        #[command(subcommand)]
        command: admin::AccountsCommand,
    },
    /// List the audit trail: every call that changed something or tried to, every agent
    /// registration (offline, against a data directory).
    Audit(admin::AuditArgs),
}

fn main() -> ExitCode {
    // Everything this program writes (the database, its journal, the master key,
    // credentials) is private to its user, whatever umask it was started with.
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
    // `oca serve` and `oca up` take their settings from a file too (`settings.rs`).
    let matches = match settings::matches(Args::command(), std::env::args_os().collect()) {
        Ok(Some(m)) => m,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match args.command {
            Command::Up(a) => server::up(a).await,
            Command::Serve(a) => server::serve(a).await,
            Command::Run(a) => cli::run(a).await,
            Command::Invocations(a) => cli::invocations(a).await,
            Command::Results(a) => cli::results(a).await,
            Command::Stop(a) => cli::stop(a).await,
            Command::Instances(a) => cli::instances(a).await,
            Command::Deregister(a) => cli::deregister(a).await,
            Command::Tag(a) => cli::tag(a).await,
            Command::Untag(a) => cli::untag(a).await,
            Command::Activations { command } => activations::activations(command).await,
            Command::Keys { command } => admin::keys(command).await,
            Command::Accounts { command } => admin::accounts(command).await,
            Command::Audit(a) => admin::audit(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
