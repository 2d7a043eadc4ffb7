//! The `oca-agent` command line: the agent itself (`oca-agent --server …`), and
//! `oca-agent install` / `uninstall` ([`crate::install`]).

use crate::client::{self, Config};
use crate::install::{InstallArgs, UninstallArgs};
use crate::isolation::Mode;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The OCA agent: runs the server's scripts on this host. `oca-agent install …` makes
/// it a systemd service.
#[derive(Debug, Parser)]
#[command(
    name = "oca-agent",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a command: run the agent.
    #[command(flatten)]
    pub run: Option<Args>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register with an activation and install the agent as a systemd service
    /// (oca-agent.service); prints the unit where systemd does not run.
    Install(InstallArgs),
    /// Stop and remove the service (and, with --purge, the state dir).
    Uninstall(UninstallArgs),
}

/// How the agent runs (and what `oca-agent install` registers with).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The server, `https://host:port` (or `http://` for a server that serves plain
    /// HTTP).
    #[arg(long, env = "OCA_SERVER")]
    pub server: String,
    /// Trust the server's certificate if it leads to a certificate in this PEM file
    /// (e.g. the server's private CA, `tls/ca.pem` in its data directory). Kept in the
    /// state dir for later starts.
    #[arg(long, env = "OCA_CA_FILE", conflicts_with = "fingerprint")]
    pub ca_file: Option<PathBuf>,
    /// Trust the server if its certificate chain holds the certificate of this SHA-256
    /// fingerprint (the server prints its private CA's). Kept in the state dir for
    /// later starts. Without this or --ca-file (now or before): the system's roots.
    #[arg(long, env = "OCA_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Where the agent keeps its identity and its spool.
    #[arg(long, env = "OCA_STATE_DIR", default_value = "/var/lib/oca-agent")]
    pub state_dir: PathBuf,
    /// The activation id to register with (first start only).
    #[arg(long, env = "OCA_ACTIVATION_ID")]
    pub activation_id: Option<String>,
    /// The activation code to register with (first start only).
    #[arg(long, env = "OCA_ACTIVATION_CODE", hide_env_values = true)]
    pub activation_code: Option<String>,
    /// The host name to report (default: the kernel's).
    #[arg(long, env = "OCA_HOSTNAME")]
    pub hostname: Option<String>,
    /// The file holding this boot's id (reboot tasks run when it changes).
    #[arg(
        long,
        env = "OCA_BOOT_ID_FILE",
        default_value = crate::schedule::BOOT_ID_PATH
    )]
    pub boot_id_file: PathBuf,
    /// How a run's processes are kept together so that its timeout or stop ends them
    /// all: a cgroup per run (`cgroup`), the session, descendants and an environment
    /// marker (`process-tree`), or cgroup when it works here (`auto`).
    #[arg(long, env = "OCA_TASK_ISOLATION", value_enum, default_value_t = Mode::Auto)]
    pub task_isolation: Mode,
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Config> {
        let trust = match (a.ca_file, a.fingerprint) {
            (Some(path), _) => Some(oca_tls::Trust::CaFile(path)),
            (None, Some(fp)) => Some(oca_tls::Trust::Pinned(oca_tls::Fingerprint::parse(&fp)?)),
            (None, None) => None,
        };
        Ok(Config {
            server: a.server,
            trust,
            state_dir: a.state_dir,
            activation_id: a.activation_id,
            activation_code: a.activation_code,
            hostname: a.hostname,
            boot_id_file: Some(a.boot_id_file),
            task_isolation: a.task_isolation,
        })
    }
}

/// The whole `oca-agent` program: flags, logging (`RUST_LOG`, default `info`), a
/// current-thread runtime, [`client::run`].
pub fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("oca-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match (cli.command, cli.run) {
        (Some(Command::Install(a)), _) => runtime.block_on(crate::install::install(a)),
        (Some(Command::Uninstall(a)), _) => crate::install::uninstall(a),
        (None, Some(args)) => match Config::try_from(args) {
            Ok(config) => runtime.block_on(client::run(config)),
            Err(e) => {
                eprintln!("oca-agent: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => {
            use clap::CommandFactory;
            let _ = Cli::command().print_help();
            return ExitCode::FAILURE;
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("oca-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
