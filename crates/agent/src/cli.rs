//! The `oca-agent` command line.

use crate::client::{self, Config};
use crate::isolation::Mode;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// The OCA agent: runs the server's scripts on this host.
#[derive(Debug, Parser)]
#[command(name = "oca-agent", version)]
pub struct Args {
    /// The server, `http://host:port`.
    #[arg(long, env = "OCA_SERVER")]
    pub server: String,
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
    /// How the agent logs to stderr: `text`, or `json` (one object per line).
    #[arg(long, env = "OCA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl From<Args> for Config {
    fn from(a: Args) -> Config {
        Config {
            server: a.server,
            state_dir: a.state_dir,
            activation_id: a.activation_id,
            activation_code: a.activation_code,
            hostname: a.hostname,
            boot_id_file: Some(a.boot_id_file),
            task_isolation: a.task_isolation,
        }
    }
}

/// The whole `oca-agent` program: flags, logging (`RUST_LOG`, default `info`; text or
/// JSON), a current-thread runtime, [`client::run`].
pub fn cli_main() -> ExitCode {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
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
    match runtime.block_on(client::run(args.into())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("oca-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
