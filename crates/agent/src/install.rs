//! `oca-agent install` and `oca-agent uninstall`: an agent as a systemd service, in one
//! line (the line `oca activations create` and CreateActivation print).
//!
//! `install` takes the flags of a running agent plus `--root` (default `/`: where
//! `/etc/systemd/system`, `/var/lib` and `/usr/local/bin` are; an image being built, or
//! a test's directory) and:
//!
//! 1. checks what it can before anything happens: the flags, the trust (a CA file is
//!    read, a fingerprint parsed), the directories it will write;
//! 2. registers with the activation (so a wrong or used-up code fails the install
//!    before anything is written);
//! 3. writes the state dir (`/var/lib/oca-agent`: the identity, and what to trust —
//!    a copy of `--ca-file` as `ca.pem`, or the fingerprint — in `tls.json`);
//! 4. copies this executable to `/usr/local/bin/oca-agent`, so the unit never runs a
//!    file from a download directory (`--binary PATH` runs an agent already installed
//!    there instead, e.g. from a package, and copies nothing);
//! 5. writes `/etc/systemd/system/oca-agent.service` ([`AgentUnit`]);
//! 6. where systemd runs (`/run/systemd/system` exists, and the root is `/`):
//!    `systemctl daemon-reload`, `enable`, `restart`; elsewhere prints the unit and how
//!    to start it.
//!
//! Install again on an installed host changes nothing and says so; `--force` registers
//! anew (a new instance) and replaces the state dir, binary and unit (the old state
//! dir's unacknowledged results and schedules go with the old instance). A state dir
//! that already holds an identity without a unit (an install stopped midway, an
//! `uninstall` without `--purge`, an agent run by hand) is taken up as it is, without
//! registering again.
//!
//! `uninstall` stops and disables the service, then removes the binary it installed
//! and the unit, last: an uninstall stopped midway leaves the unit, and running it
//! again finishes. The state dir stays (its identity lets `install` take the host up
//! again) unless `--purge`; the instance stays registered on the server until someone
//! deregisters it (`oca deregister mi-…`).
//!
//! The activation code is used once, to register: it is in no file and no unit.

use crate::cli::Args;
use crate::client::{self, Config, Identity};
use crate::isolation::Mode;
use crate::spool;
use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The unit's name.
pub const UNIT_NAME: &str = "oca-agent.service";
/// Where the unit is written (in the root).
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// Where this executable is copied (in the root) unless `--binary` is given.
pub const DEFAULT_BINARY: &str = "/usr/local/bin/oca-agent";
/// Where `systemctl enable` puts its link (removed by `uninstall` where systemd does
/// not run).
const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
/// How long the install tries to reach the server.
const REGISTER_PATIENCE: Duration = Duration::from_secs(30);
/// The unit's own keys (systemd ignores `X-` keys): the state dir, and the binary
/// `install` copied (and `uninstall` removes).
const KEY_STATE_DIR: &str = "X-OcaStateDir";
const KEY_INSTALLED_BINARY: &str = "X-OcaInstalledBinary";
/// The range of the unit's `RestartSec`, in milliseconds: each install draws its own,
/// so a fleet whose agents all stop at once does not come back all at once.
const RESTART_MS: std::ops::Range<u64> = 3_000..8_000;

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub agent: Args,
    /// The root to install under: the unit goes to ROOT/etc/systemd/system, the state
    /// dir and the binary under ROOT too, and the unit names them as seen from ROOT.
    /// Other than `/`, nothing is started.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// The agent binary the unit runs (a path in the root), used where it is: nothing
    /// is copied [default: this executable, copied to /usr/local/bin/oca-agent].
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Install over an installed agent: register anew (a new instance) and replace its
    /// state dir (unacknowledged results and schedules included), binary and unit.
    #[arg(long)]
    pub force: bool,
    /// Tests only: call this as `systemctl`, as if systemd ran here.
    #[arg(long, hide = true)]
    pub systemctl: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// The root the agent was installed under.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Also remove the state dir (the instance's identity, unacknowledged results,
    /// schedules). Without it, `oca-agent install` takes the host up again as the same
    /// instance.
    #[arg(long)]
    pub purge: bool,
    /// The state dir, when the unit does not name it (the unit's is used otherwise).
    #[arg(long, default_value = "/var/lib/oca-agent")]
    pub state_dir: PathBuf,
    /// Tests only: call this as `systemctl`, as if systemd ran here.
    #[arg(long, hide = true)]
    pub systemctl: Option<PathBuf>,
}

/// Paths in the root.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Result<Layout> {
        if !root.is_dir() {
            bail!("--root {} is not a directory", root.display());
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    /// `p` (absolute, as seen from the root) on this system.
    fn at(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    fn unit(&self) -> PathBuf {
        self.at(Path::new(UNIT_DIR)).join(UNIT_NAME)
    }

    /// Whether the root is this system's.
    fn is_system(&self) -> bool {
        fs::canonicalize(&self.root).is_ok_and(|r| r == Path::new("/"))
    }

    /// `p` as the user should read it: with the root when it is not `/`.
    fn show(&self, p: &Path) -> String {
        if self.is_system() {
            p.display().to_string()
        } else {
            format!("{} (in {})", p.display(), self.root.display())
        }
    }
}

/// Whether systemd manages services here.
enum Systemd {
    /// Yes: this is its `systemctl`.
    Running(PathBuf),
    /// No, for this reason.
    Absent(String),
}

impl Systemd {
    /// systemd runs when `/run/systemd/system` exists (what `sd_booted()` checks), and
    /// installs in another root are never started.
    fn detect(layout: &Layout, given: Option<&Path>) -> Systemd {
        if let Some(ctl) = given {
            return Systemd::Running(ctl.to_path_buf());
        }
        if !layout.is_system() {
            return Systemd::Absent(format!(
                "the root {} is not this system's",
                layout.root.display()
            ));
        }
        if Path::new("/run/systemd/system").is_dir() {
            Systemd::Running(PathBuf::from("systemctl"))
        } else {
            Systemd::Absent("systemd is not running here (no /run/systemd/system)".into())
        }
    }
}

fn systemctl(ctl: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(ctl)
        .args(args)
        .output()
        .with_context(|| format!("running {}", ctl.display()))?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The unit `install` writes.
#[derive(Debug, Clone)]
pub struct AgentUnit {
    /// What `ExecStart` runs (a path in the root).
    pub binary: PathBuf,
    /// Its flags.
    pub args: Vec<String>,
    pub state_dir: PathBuf,
    pub restart_ms: u64,
    /// Whether `install` copied the binary (so that `uninstall` removes it).
    pub installed_binary: bool,
}

impl AgentUnit {
    /// The unit file. Fails on a value systemd could not be given (a control
    /// character, surrounding blanks).
    pub fn render(&self) -> Result<String> {
        let mut exec = exec_word(&self.binary.to_string_lossy())?;
        for a in &self.args {
            exec.push(' ');
            exec.push_str(&exec_word(a)?);
        }
        let state_dir = key_value(&self.state_dir.to_string_lossy())?;
        let installed = if self.installed_binary {
            format!(
                "{KEY_INSTALLED_BINARY}={}\n",
                key_value(&self.binary.to_string_lossy())?
            )
        } else {
            String::new()
        };
        Ok(format!(
            "\
# Written by `oca-agent install`; `oca-agent uninstall` removes it.
[Unit]
Description=OCA agent: runs the scripts of an OCA server on this host
Wants=network-online.target
After=network-online.target
# Restarted however often it stops.
StartLimitIntervalSec=0

[Service]
Type=exec
ExecStart={exec}
# The agent reconnects by itself; this restarts it when it exits. The delay is drawn
# at install, so a fleet whose agents stop at once does not come back at once.
Restart=always
RestartSec={restart}ms
# Each run gets a cgroup of its own under the agent's (--task-isolation).
Delegate=yes
# A stop or a restart ends the runs under way with the agent (SIGTERM, then SIGKILL
# to every process of the unit); the agent reports them interrupted when it starts
# again, as after any restart. Nothing a run started outlives the service.
KillMode=control-group
# The fleet's scripts run in this unit: no cap on their processes but the system's.
TasksMax=infinity
# For `oca-agent uninstall`.
{KEY_STATE_DIR}={state_dir}
{installed}
[Install]
WantedBy=multi-user.target
",
            restart = self.restart_ms,
        ))
    }
}

/// The value of the unit's key `key`.
fn unit_key(unit: &str, key: &str) -> Option<String> {
    unit.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// `s` as one word of an `ExecStart=` line: as it is when plain, else in double quotes;
/// `%` (specifiers) and `$` (variables) are doubled either way.
fn exec_word(s: &str) -> Result<String> {
    if s.chars().any(char::is_control) {
        bail!("{s:?} holds a control character: it cannot go into a unit");
    }
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:,=+@-".contains(&b));
    let escaped = s.replace('%', "%%").replace('$', "$$");
    Ok(if plain {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    })
}

/// `s` as the value of one of the unit's own keys (read back by [`unit_key`]).
fn key_value(s: &str) -> Result<String> {
    if s.chars().any(char::is_control) || s.trim() != s || s.is_empty() {
        bail!("{s:?} cannot be the value of a unit's key");
    }
    Ok(s.to_string())
}

fn absolute(p: &Path, flag: &str) -> Result<PathBuf> {
    if !p.is_absolute() {
        bail!("{flag} {} must be an absolute path", p.display());
    }
    Ok(p.to_path_buf())
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Fails unless this process may write in `dir` (or, if it does not exist yet, in
/// its nearest existing ancestor).
fn check_writable(dir: &Path) -> Result<()> {
    let mut p = dir;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK)
        .with_context(|| format!("cannot write in {} (run the install as root)", p.display()))
}

/// The flags `ExecStart` gives the agent: where the server is and the state dir (the
/// rest, identity and trust, is in the state dir), and what the install was told
/// that a running agent needs.
fn run_flags(a: &Args, state_dir: &Path) -> Vec<String> {
    let mut flags = vec![
        "--server".to_string(),
        a.server.clone(),
        "--state-dir".to_string(),
        state_dir.display().to_string(),
    ];
    if let Some(h) = &a.hostname {
        flags.extend(["--hostname".to_string(), h.clone()]);
    }
    if a.task_isolation != Mode::Auto {
        if let Some(v) = a.task_isolation.to_possible_value() {
            flags.extend(["--task-isolation".to_string(), v.get_name().to_string()]);
        }
    }
    if a.boot_id_file != Path::new(crate::schedule::BOOT_ID_PATH) {
        flags.extend([
            "--boot-id-file".to_string(),
            a.boot_id_file.display().to_string(),
        ]);
    }
    flags
}

/// Whether `a` and `b` are the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Copies this executable to `target` (0755, atomically). False when it already runs
/// from there.
fn install_binary(target: &Path) -> Result<bool> {
    let source = std::env::current_exe().context("finding this executable")?;
    if same_file(&source, target) {
        return Ok(false);
    }
    let dir = target.parent().context("the binary's directory")?;
    fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".oca-agent.install.tmp");
    let copy = || -> io::Result<()> {
        fs::copy(&source, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::File::open(&tmp)?.sync_all()?;
        // A running agent's binary is replaced, not written over (ETXTBSY).
        fs::rename(&tmp, target)
    };
    copy().with_context(|| {
        let _ = fs::remove_file(&tmp);
        format!("copying {} to {}", source.display(), target.display())
    })?;
    Ok(true)
}

/// `<parent>/.<name><suffix>`, next to `dir`.
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no name", dir.display()))?;
    Ok(dir.with_file_name(format!(".{}{suffix}", name.to_string_lossy())))
}

/// Writes the state dir: the identity (when new) and the trust (when given). With
/// `replace`, a whole new state dir takes the place of the old one (written aside, then
/// swapped in), so a failure leaves the old one as it was.
fn write_state(
    dir: &Path,
    identity: Option<&Identity>,
    trust: Option<&oca_tls::Trust>,
    replace: bool,
) -> Result<()> {
    let target = if replace {
        let staging = sibling(dir, ".install")?;
        ignore_missing(fs::remove_dir_all(&staging))?;
        staging
    } else {
        dir.to_path_buf()
    };
    let write = || -> Result<()> {
        // Missing parents get the usual mode; only the state dir is private.
        if let Some(parent) = target.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        spool::ensure_private_dir(&target)
            .with_context(|| format!("creating {}", target.display()))?;
        if let Some(i) = identity {
            i.save(&target)?;
        }
        match trust {
            Some(oca_tls::Trust::CaFile(p)) => crate::transport::keep_ca_copy(p, &target)?,
            Some(t) => crate::transport::keep(t, &target)?,
            None => {}
        }
        Ok(())
    };
    if let Err(e) = write() {
        if replace {
            let _ = fs::remove_dir_all(&target);
        }
        return Err(e);
    }
    if replace {
        let old = sibling(dir, ".old")?;
        ignore_missing(fs::remove_dir_all(&old))?;
        let had_old = dir.exists();
        if had_old {
            fs::rename(dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
        }
        if let Err(e) = fs::rename(&target, dir) {
            if had_old {
                let _ = fs::rename(&old, dir);
            }
            let _ = fs::remove_dir_all(&target);
            return Err(e).with_context(|| format!("replacing {}", dir.display()));
        }
        if had_old {
            if let Err(e) = fs::remove_dir_all(&old) {
                eprintln!(
                    "warning: cannot remove the old state dir {}: {e}",
                    old.display()
                );
            }
        }
    }
    Ok(())
}

/// Writes `text` to `path` (mode 0644, atomically), creating the directory.
fn write_unit(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("the unit's directory")?;
    fs::DirBuilder::new()
        .recursive(true)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    spool::write_atomic(path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

/// `oca-agent install`.
pub async fn install(a: InstallArgs) -> Result<()> {
    let layout = Layout::new(&a.root)?;
    let state_dir = absolute(&a.agent.state_dir, "--state-dir")?;
    let binary = absolute(
        a.binary.as_deref().unwrap_or(Path::new(DEFAULT_BINARY)),
        "--binary",
    )?;
    crate::url::ServerUrl::parse(&a.agent.server)?;
    let mut config = Config::try_from(a.agent.clone())?;
    config.state_dir = layout.at(&state_dir);
    if let Some(oca_tls::Trust::CaFile(p)) = &config.trust {
        oca_tls::read_certificates(p)?;
    }
    let unit_path = layout.unit();
    let old_unit = read_optional(&unit_path)?;
    let kept = Identity::load(&config.state_dir)?;
    if old_unit.is_some() && !a.force {
        let instance = kept
            .map(|i| format!(" as {}", i.instance_id))
            .unwrap_or_default();
        println!(
            "oca-agent is already installed here{instance}: {} exists. Nothing changed; \
             `oca-agent install --force` registers it again, `oca-agent uninstall` removes it.",
            layout.show(Path::new(UNIT_DIR).join(UNIT_NAME).as_path())
        );
        return Ok(());
    }
    let mut unit = AgentUnit {
        binary: binary.clone(),
        args: run_flags(&a.agent, &state_dir),
        state_dir: state_dir.clone(),
        restart_ms: rand::random_range(RESTART_MS),
        installed_binary: false,
    };
    unit.render()?;
    if a.binary.is_some() && !layout.at(&binary).is_file() {
        bail!("--binary {} does not exist", layout.show(&binary));
    }
    let mut writes = vec![layout.at(Path::new(UNIT_DIR))];
    writes.extend(config.state_dir.parent().map(Path::to_path_buf));
    if a.binary.is_none() {
        writes.extend(layout.at(&binary).parent().map(Path::to_path_buf));
    }
    for dir in &writes {
        check_writable(dir)?;
    }

    // Register first: a wrong, disabled or used-up code stops here, with nothing
    // written.
    let new_identity = match kept {
        Some(i) if !a.force => {
            println!(
                "The state dir {} already holds the identity of {}: kept (`--force` registers again).",
                layout.show(&state_dir),
                i.instance_id
            );
            None
        }
        _ => {
            if config.activation_id.is_none() || config.activation_code.is_none() {
                bail!("give --activation-id and --activation-code (oca activations create prints them)");
            }
            let i = client::register_once(&config, REGISTER_PATIENCE).await?;
            println!("Registered with {} as {}.", a.agent.server, i.instance_id);
            Some(i)
        }
    };
    let systemd = Systemd::detect(&layout, a.systemctl.as_deref());
    if old_unit.is_some() {
        if let Systemd::Running(ctl) = &systemd {
            systemctl(ctl, &["stop", UNIT_NAME])?;
        }
    }
    let replace = a.force && config.state_dir.exists();
    write_state(
        &config.state_dir,
        new_identity.as_ref(),
        config.trust.as_ref(),
        replace,
    )?;
    unit.installed_binary = match &a.binary {
        Some(_) => false,
        None => {
            let copied = install_binary(&layout.at(&binary))?;
            // Installed again from the copy an earlier install made: still ours.
            copied
                || old_unit
                    .as_deref()
                    .and_then(|u| unit_key(u, KEY_INSTALLED_BINARY))
                    == Some(binary.display().to_string())
        }
    };
    let text = unit.render()?;
    write_unit(&unit_path, &text)?;
    println!(
        "Wrote the state dir {}, the unit {}{}.",
        layout.show(&state_dir),
        layout.show(Path::new(UNIT_DIR).join(UNIT_NAME).as_path()),
        if unit.installed_binary {
            format!(" and the binary {}", layout.show(&binary))
        } else {
            String::new()
        }
    );
    match systemd {
        Systemd::Running(ctl) => {
            systemctl(&ctl, &["daemon-reload"])?;
            systemctl(&ctl, &["enable", UNIT_NAME])?;
            systemctl(&ctl, &["restart", UNIT_NAME]).context(
                "the unit is installed but did not start: see `journalctl -u oca-agent`",
            )?;
            println!("Started and enabled {UNIT_NAME}: `systemctl status oca-agent`, `journalctl -u oca-agent`.");
        }
        Systemd::Absent(why) => {
            let mut run = vec![binary.display().to_string()];
            run.extend(unit.args.iter().cloned());
            let run: Vec<String> = run
                .iter()
                .map(|w| oca_proto::install::shell_quote(w).into_owned())
                .collect();
            println!("Not started: {why}. The unit:\n");
            print!("{text}");
            println!(
                "\nWhere systemd runs: systemctl daemon-reload && systemctl enable --now oca-agent\n\
                 Or run the agent as it is: {}",
                run.join(" ")
            );
        }
    }
    Ok(())
}

/// `oca-agent uninstall`.
pub fn uninstall(a: UninstallArgs) -> Result<()> {
    let layout = Layout::new(&a.root)?;
    let unit_path = layout.unit();
    let unit = read_optional(&unit_path)?;
    let state_dir = match unit.as_deref().and_then(|u| unit_key(u, KEY_STATE_DIR)) {
        Some(d) => PathBuf::from(d),
        None => absolute(&a.state_dir, "--state-dir")?,
    };
    let state_path = layout.at(&state_dir);
    let identity = Identity::load(&state_path).ok().flatten();
    let Some(unit) = unit else {
        if a.purge && state_path.exists() {
            fs::remove_dir_all(&state_path)
                .with_context(|| format!("removing {}", state_path.display()))?;
            println!(
                "oca-agent is not installed here; removed the state dir {}.",
                layout.show(&state_dir)
            );
            print_still_registered(identity.as_ref());
        } else {
            println!(
                "oca-agent is not installed here: no {}. Nothing to do.",
                layout.show(Path::new(UNIT_DIR).join(UNIT_NAME).as_path())
            );
        }
        return Ok(());
    };
    let systemd = Systemd::detect(&layout, a.systemctl.as_deref());
    match &systemd {
        Systemd::Running(ctl) => systemctl(ctl, &["disable", "--now", UNIT_NAME])
            .context("stopping the agent; nothing was removed")?,
        Systemd::Absent(_) => {
            // A link `systemctl enable` made while systemd did not run (`--root`).
            let link = layout.at(Path::new(WANTS_DIR)).join(UNIT_NAME);
            if fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
            }
        }
    }
    let installed_binary = unit_key(&unit, KEY_INSTALLED_BINARY).map(PathBuf::from);
    // The unit goes last: until then, `uninstall` again finishes the job.
    let remove = || -> Result<()> {
        if a.purge {
            ignore_missing(fs::remove_dir_all(&state_path))
                .with_context(|| format!("removing {}", state_path.display()))?;
        }
        if let Some(bin) = &installed_binary {
            let path = layout.at(bin);
            ignore_missing(fs::remove_file(&path))
                .with_context(|| format!("removing {}", path.display()))?;
        }
        fs::remove_file(&unit_path).with_context(|| format!("removing {}", unit_path.display()))
    };
    remove().context("the uninstall stopped midway, the unit still in place: run it again")?;
    if let Systemd::Running(ctl) = &systemd {
        if let Err(e) = systemctl(ctl, &["daemon-reload"]) {
            eprintln!("warning: {e:#}");
        }
    }
    println!(
        "Removed {}{}.",
        layout.show(Path::new(UNIT_DIR).join(UNIT_NAME).as_path()),
        installed_binary
            .map(|b| format!(" and {}", layout.show(&b)))
            .unwrap_or_default()
    );
    if a.purge {
        println!("Removed the state dir {}.", layout.show(&state_dir));
        print_still_registered(identity.as_ref());
    } else if let Some(i) = identity {
        println!(
            "Kept the state dir {}, with the identity of {}: `oca-agent install` takes it up \
             again, `oca-agent uninstall --purge` removes it.",
            layout.show(&state_dir),
            i.instance_id
        );
    }
    Ok(())
}

fn print_still_registered(identity: Option<&Identity>) {
    if let Some(i) = identity {
        println!(
            "{} stays registered on the server: `oca deregister {}` there removes it.",
            i.instance_id, i.instance_id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        assert_eq!(exec_word("https://h:7070").unwrap(), "https://h:7070");
        assert_eq!(exec_word("/var/lib/a b").unwrap(), "\"/var/lib/a b\"");
        assert_eq!(exec_word("50%").unwrap(), "\"50%%\"");
        assert_eq!(exec_word("$HOME").unwrap(), "\"$$HOME\"");
        assert_eq!(exec_word(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert_eq!(exec_word("").unwrap(), "\"\"");
        assert!(exec_word("a\nb").is_err());
    }

    #[test]
    fn the_unit_names_what_uninstall_needs() {
        let unit = AgentUnit {
            binary: PathBuf::from(DEFAULT_BINARY),
            args: vec![
                "--server".into(),
                "https://oca.example:7070".into(),
                "--state-dir".into(),
                "/var/lib/oca agent".into(),
            ],
            state_dir: PathBuf::from("/var/lib/oca agent"),
            restart_ms: 4321,
            installed_binary: true,
        };
        let text = unit.render().unwrap();
        assert!(text.contains(
            "\nExecStart=/usr/local/bin/oca-agent --server https://oca.example:7070 \
             --state-dir \"/var/lib/oca agent\"\n"
        ));
        for line in [
            "Restart=always",
            "RestartSec=4321ms",
            "Delegate=yes",
            "KillMode=control-group",
            "WantedBy=multi-user.target",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(
            unit_key(&text, KEY_STATE_DIR).as_deref(),
            Some("/var/lib/oca agent")
        );
        assert_eq!(
            unit_key(&text, KEY_INSTALLED_BINARY).as_deref(),
            Some(DEFAULT_BINARY)
        );
        let not_ours = AgentUnit {
            installed_binary: false,
            ..unit
        };
        assert_eq!(
            unit_key(&not_ours.render().unwrap(), KEY_INSTALLED_BINARY),
            None
        );
    }

    #[test]
    fn the_line_the_server_prints_is_an_install() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let line = oca_proto::install::InstallLine {
            server: "https://oca.example:7070",
            activation_id: "act-1",
            activation_code: "Code",
            fingerprint: Some("sha256:abcd"),
        }
        .to_string();
        let cli = Cli::try_parse_from(line.split(' ')).unwrap();
        let Some(Command::Install(a)) = cli.command else {
            panic!("not an install: {cli:?}")
        };
        assert_eq!(a.agent.server, "https://oca.example:7070");
        assert_eq!(a.agent.activation_id.as_deref(), Some("act-1"));
        assert_eq!(a.agent.activation_code.as_deref(), Some("Code"));
        assert_eq!(a.agent.fingerprint.as_deref(), Some("sha256:abcd"));
        assert_eq!(a.root, Path::new("/"));
        assert_eq!(a.agent.state_dir, Path::new("/var/lib/oca-agent"));
        // Running the agent is as before.
        let cli = Cli::try_parse_from(["oca-agent", "--server", "https://h"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.unwrap().server, "https://h");
    }
}
