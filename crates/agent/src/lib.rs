//! The OCA agent: connects to the server, runs scripts, streams output, never loses a
//! result.
//!
//! - [`exec`]: runs one task (user, directory, one pipe for stdout and stderr, the 24 KB
//!   head-and-tail view, timeout and stop that kill the whole process tree); its module
//!   documentation has the status / exit code / error table.
//! - [`isolation`]: what keeps a run's processes where its timeout or stop reaches
//!   them: a cgroup (v2) per run when the agent can, else the process tree
//!   (`--task-isolation auto|cgroup|process-tree`); the method in force is logged at
//!   start and reported to the server.
//! - [`file`]: file delivery (SendFile), written atomically with owner, group, mode.
//! - [`proc`]: spawning, reaping (the agent is a child subreaper) and tree kills.
//! - [`spool`]: the on-disk state, one directory per task (per run of a repeating task),
//!   kept until the server acks. The agent runs with umask 077: all its state is
//!   private (0700 directories, 0600 files); its scripts start with umask 022.
//! - [`schedule`]: the repeating tasks (Period, NextRebootOnly, EveryReboot), kept in
//!   `<state_dir>/schedule/` next to the spool: the agent runs them itself, connected or
//!   not, so their state (run numbers, last slot, boot id) must survive restarts; it is
//!   written before each run starts, so no run happens twice.
//! - [`client`]: registration and the WebSocket conversation of `oca_proto`.
//! - [`url`]: the server URL (`http` → `ws`).
//! - [`install`]: `oca-agent install` (register, state dir, binary, systemd unit,
//!   started where systemd runs) and `oca-agent uninstall`.
//! - [`cli`]: the `oca-agent` binary's flags; `crates/oca/src/bin/oca-agent.rs` calls
//!   [`cli_main`].
//!
//! ```text
//! oca-agent --server http://127.0.0.1:8080 --state-dir /var/lib/oca-agent \
//!           [--activation-id ID --activation-code CODE] [--hostname NAME] \
//!           [--boot-id-file /proc/sys/kernel/random/boot_id] \
//!           [--task-isolation auto|cgroup|process-tree]
//! oca-agent install --server https://oca.example.com:7070 --activation-id ID \
//!           --activation-code CODE --fingerprint sha256:… [--root /] [--force]
//! oca-agent uninstall [--purge] [--root /]
//! ```
//! Each flag has an environment variable: `OCA_SERVER`, `OCA_STATE_DIR`,
//! `OCA_ACTIVATION_ID`, `OCA_ACTIVATION_CODE`, `OCA_HOSTNAME`, `OCA_BOOT_ID_FILE`,
//! `OCA_TASK_ISOLATION`; logs
//! follow `RUST_LOG`. Cron expressions without a zone are read in the host's zone (`TZ`,
//! else `/etc/localtime`).

pub mod cli;
pub mod client;
pub mod exec;
pub mod file;
pub mod install;
pub mod isolation;
pub mod proc;
pub mod schedule;
pub mod spool;
pub mod transport;
pub mod url;

pub use cli::cli_main;
pub use client::{run, Config, Identity};
