//! The real `oca` server as a child process on 127.0.0.1, and a real `oca-agent`.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Children still running, so that a watchdog can end them if the bench overruns.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn track(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

fn untrack(pid: u32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
}

/// SIGKILLs every child this process started and has not ended yet.
pub fn kill_all_children() {
    for pid in CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        // SAFETY: kill(2) on a pid this process spawned and still tracks.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// A data directory with an access key in it (made by `oca keys create`).
pub struct DataDir {
    pub dir: tempfile::TempDir,
    pub key_id: String,
    pub secret: String,
}

impl DataDir {
    pub fn create(oca_bin: &Path) -> Result<DataDir> {
        let dir = tempfile::Builder::new()
            .prefix("oca-bench-")
            .tempdir()
            .context("creating a data directory")?;
        let out = Command::new(oca_bin)
            .args(["keys", "create", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("running {} keys create", oca_bin.display()))?;
        if !out.status.success() {
            bail!(
                "oca keys create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .ok_or_else(|| anyhow!("no {name} in the output of oca keys create: {text}"))
        };
        Ok(DataDir {
            key_id: field("AccessKeyId:")?,
            secret: field("AccessKeySecret:")?,
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("oca.db")
    }
}

/// A running `oca serve`. Killed on drop.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub port: u16,
    pub data: DataDir,
    /// Whether it speaks TLS (with the private CA it makes in its data directory).
    pub tls: bool,
    /// The last lines the server wrote to stderr (for error messages).
    log_tail: Arc<Mutex<VecDeque<String>>>,
}

const LOG_TAIL_LINES: usize = 40;

impl Server {
    /// Starts `oca serve` on a free port; over TLS unless `tls` is false.
    pub fn start(oca_bin: &Path, data: DataDir, tls: bool) -> Result<Server> {
        Self::start_at(oca_bin, data, tls, 0)
    }

    /// [`Self::start`] on `port` (0: a free one).
    pub fn start_at(oca_bin: &Path, data: DataDir, tls: bool, port: u16) -> Result<Server> {
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(oca_bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--listen",
                &listen,
                "--max-instances",
                "10000",
                "--heartbeat-secs",
                "30",
            ])
            .args(if tls { &[][..] } else { &["--plain-http"][..] })
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", oca_bin.display()))?;
        let pid = child.id();
        track(pid);
        let log_tail = Arc::new(Mutex::new(VecDeque::new()));
        {
            let stderr = child.stderr.take().expect("piped");
            let tail = log_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() == LOG_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        // The first stdout line names the port; read it on a thread so a server that
        // never prints cannot hang the bench.
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server {
            child: Some(child),
            pid,
            port: 0,
            data,
            tls,
            log_tail,
        };
        let first = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            _ => bail!(
                "oca serve printed no address within 30 s; its log:\n{}",
                server.log_tail()
            ),
        };
        let addr = first
            .strip_prefix("OCA listening on http://")
            .or_else(|| first.strip_prefix("OCA listening on https://"))
            .ok_or_else(|| anyhow!("unexpected first line from oca serve: {first:?}"))?;
        if !addr.starts_with("127.0.0.1:") {
            bail!("the server listens on {addr}, not on loopback");
        }
        server.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("no port in {first:?}"))?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The private CA a TLS server made.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls
            .then(|| self.data.path().join("tls").join("ca.pem"))
    }

    /// A TLS client configuration trusting this server (`None`: plain HTTP).
    pub fn client_tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        match self.ca_file() {
            None => Ok(None),
            Some(ca) => Ok(Some(Arc::new(oca_tls::client_config(
                &oca_tls::Trust::CaFile(ca),
            )?))),
        }
    }

    /// Stops the server as an operator does (SIGTERM), waits (at most `limit`) for it
    /// to exit; how long it took. The data directory is kept: see [`Self::restart`].
    pub fn terminate(&mut self, limit: Duration) -> Result<Duration> {
        let began = std::time::Instant::now();
        let Some(mut child) = self.child.take() else {
            bail!("the server is not running");
        };
        // SAFETY: kill(2) on a pid this process spawned and still waits for.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        loop {
            if child.try_wait()?.is_some() {
                untrack(self.pid);
                return Ok(began.elapsed());
            }
            if began.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                untrack(self.pid);
                bail!("the server did not stop within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same port and data (after [`Self::terminate`]).
    pub fn restart(self, oca_bin: &Path) -> Result<Server> {
        let mut this = self;
        let (port, tls) = (this.port, this.tls);
        this.stop();
        // The data directory moves to the new server.
        let data = std::mem::replace(
            &mut this.data,
            DataDir {
                dir: tempfile::tempdir()?,
                key_id: String::new(),
                secret: String::new(),
            },
        );
        Self::start_at(oca_bin, data, tls, port)
    }

    pub fn rss_kb(&self) -> Option<u64> {
        crate::sys::rss_kb(self.pid)
    }

    pub fn log_tail(&self) -> String {
        let t = self.log_tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            untrack(self.pid);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running real `oca-agent`. Killed on drop.
pub struct RealAgent {
    child: Option<Child>,
    pub pid: u32,
    _state: tempfile::TempDir,
}

impl RealAgent {
    pub fn start(
        agent_bin: &Path,
        server: &Server,
        hostname: &str,
        activation_id: &str,
        activation_code: &str,
    ) -> Result<RealAgent> {
        let state = tempfile::Builder::new()
            .prefix("oca-bench-agent-")
            .tempdir()?;
        let mut command = Command::new(agent_bin);
        command
            .args(["--server", &server.url(), "--state-dir"])
            .arg(state.path());
        if let Some(ca) = server.ca_file() {
            command.arg("--ca-file").arg(ca);
        }
        let child = command
            .args([
                "--hostname",
                hostname,
                "--activation-id",
                activation_id,
                "--activation-code",
                activation_code,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", agent_bin.display()))?;
        let pid = child.id();
        track(pid);
        Ok(RealAgent {
            child: Some(child),
            pid,
            _state: state,
        })
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            untrack(self.pid);
        }
    }
}
