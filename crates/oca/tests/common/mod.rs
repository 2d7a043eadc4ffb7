//! The end-to-end harness: a real `oca serve` and real `oca-agent` processes talking
//! over 127.0.0.1, and a signed API client. Everything is torn down on drop.
#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "cn-hangzhou";
pub const VERSION: &str = "2014-05-26";

/// The `oca` binary under test. `OCA_TEST_BIN_DIR` points the suites at binaries
/// built elsewhere (an older commit, to measure "before" figures).
pub fn oca_bin() -> &'static str {
    bin_in_dir("oca").unwrap_or(env!("CARGO_BIN_EXE_oca"))
}

pub fn agent_bin() -> &'static str {
    bin_in_dir("oca-agent").unwrap_or(env!("CARGO_BIN_EXE_oca-agent"))
}

fn bin_in_dir(name: &str) -> Option<&'static str> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let dir = DIR
        .get_or_init(|| std::env::var_os("OCA_TEST_BIN_DIR").map(PathBuf::from))
        .as_ref()?;
    Some(Box::leak(
        dir.join(name)
            .to_string_lossy()
            .into_owned()
            .into_boxed_str(),
    ))
}

/// What every request of this test binary met, for suites that print their figures.
pub mod tally {
    use std::sync::atomic::{AtomicU64, Ordering};
    pub static REQUESTS: AtomicU64 = AtomicU64::new(0);
    pub static SERVER_ERRORS: AtomicU64 = AtomicU64::new(0);
    /// Servers started, the highest peak memory of any (read as each is stopped), and
    /// the panics their logs show (servers started with `Server::start_logged`).
    pub static SERVERS: AtomicU64 = AtomicU64::new(0);
    pub static PEAK_RSS: AtomicU64 = AtomicU64::new(0);
    pub static SERVER_PANICS: AtomicU64 = AtomicU64::new(0);

    /// Counts one answer with HTTP status `status` (0: none came).
    pub fn answer(status: u16) {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        if status >= 500 || status == 0 {
            SERVER_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How a request is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    V1,
    V3,
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub key_id: String,
    pub secret: String,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Where the server's stderr goes (appended across restarts); `None`: inherited.
    pub log: Option<PathBuf>,
    /// Whether the server speaks TLS ([`Self::start_tls`]); the suites but the TLS
    /// ones run it with `--plain-http` (allowed quietly on loopback).
    pub tls: bool,
    /// The private CA's fingerprint a TLS server printed.
    pub fingerprint: Option<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with short heartbeats and delivery timeout (tests must not wait
    /// for production timeouts) plus `extra` flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(oca_bin())
            .args(["keys", "create", "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("oca keys create");
        assert!(
            out.status.success(),
            "keys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .trim()
                .to_string()
        };
        let mut server = Server {
            key_id: field("AccessKeyId:"),
            secret: field("AccessKeySecret:"),
            dir,
            port: 0,
            child: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            log: None,
            tls: false,
            fingerprint: None,
        };
        server.spawn();
        server
    }

    /// [`Self::start_logged`], speaking TLS with the private CA it makes in its data
    /// directory (`ca_file`).
    pub fn start_tls(extra: &[&str]) -> Server {
        let mut server = Self::start_with(extra);
        server.kill9();
        server.tls = true;
        server.log = Some(server.dir.path().join("server.log"));
        server.spawn();
        server
    }

    /// What an agent of this server is told to trust (its CA file, when it speaks TLS).
    fn agent_trust(&self) -> Vec<String> {
        if self.tls {
            vec!["--ca-file".into(), self.ca_file().display().to_string()]
        } else {
            vec![]
        }
    }

    /// The flags given at the next (re)start, in place of those given so far.
    pub fn set_extra_args(&mut self, extra: &[&str]) {
        self.extra_args = extra.iter().map(|s| s.to_string()).collect();
    }

    /// A TLS server's private CA.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    /// A TLS client configuration that trusts this server's private CA.
    pub fn tls_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        std::sync::Arc::new(
            oca_tls::client_config(&oca_tls::Trust::CaFile(self.ca_file())).expect("the CA"),
        )
    }

    /// [`Self::start_with`], with the server's stderr kept in `server.log` in its data
    /// directory (see [`Self::log_text`]).
    pub fn start_logged(extra: &[&str]) -> Server {
        let mut server = Self::start_with(extra);
        server.kill9();
        server.log = Some(server.dir.path().join("server.log"));
        server.spawn();
        server
    }

    /// What the server wrote to its log so far (empty when not logged).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The server's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmHWM:").map(|k| k * 1024)
    }

    /// The server's resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmRSS:").map(|k| k * 1024)
    }

    fn spawn(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("server log"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(oca_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .args([
                "--listen",
                &listen,
                "--heartbeat-secs",
                "1",
                "--delivery-timeout-ms",
                "3000",
            ])
            .args(if self.tls {
                &[][..]
            } else {
                &["--plain-http"][..]
            })
            .args(&self.extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("oca serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("server printed nothing").unwrap();
        let addr = line
            .strip_prefix("OCA listening on http://")
            .or_else(|| line.strip_prefix("OCA listening on https://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        if self.tls {
            let line = lines.next().expect("no TLS line").unwrap();
            self.fingerprint = line
                .rsplit("--fingerprint ")
                .next()
                .map(|s| s.trim().to_string());
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `kill -9` the server, then start it again on the same port and data.
    pub fn crash_and_restart(&mut self) {
        self.kill9();
        // The port may take a moment to free.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok()
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    /// Stops the server as an operator does (SIGTERM) and waits for it to exit, at most
    /// `limit`; its exit status and how long it took.
    pub fn terminate(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        if let Some(peak) = self.peak_rss() {
            tally::PEAK_RSS.fetch_max(peak, std::sync::atomic::Ordering::Relaxed);
        }
        let child = self.child.as_mut()?;
        let began = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .ok()?;
        let status = wait_for(limit, || child.try_wait().ok().flatten())?;
        self.child = None;
        Some((status, began.elapsed()))
    }

    /// Starts the server again (after [`Self::terminate`]) on the same port and data.
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    pub fn kill9(&mut self) {
        if let Some(peak) = self.peak_rss() {
            tally::PEAK_RSS.fetch_max(peak, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client {
            url: self.url(),
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
            sig: Sig::V3,
            tls: self.tls.then(|| self.tls_config()),
        }
    }

    /// Runs `oca <args> --data-dir <this server's data directory>` (the offline
    /// `keys` and `accounts` commands); returns its output, successful or not.
    pub fn oca(&self, args: &[&str]) -> std::process::Output {
        Command::new(oca_bin())
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("oca")
    }

    /// Like [`Self::oca`], and expects success; returns stdout.
    pub fn oca_ok(&self, args: &[&str]) -> String {
        let out = self.oca(args);
        assert!(
            out.status.success(),
            "oca {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates an access key of `account` (`oca keys create --account`); a client
    /// signing with it.
    pub fn key_client(&self, account: &str) -> Client {
        let text = self.oca_ok(&["keys", "create", "--account", account]);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .trim()
                .to_string()
        };
        Client {
            url: self.url(),
            key_id: field("AccessKeyId:"),
            secret: field("AccessKeySecret:"),
            sig: Sig::V3,
            tls: self.tls.then(|| self.tls_config()),
        }
    }

    /// Creates the account `account` (`oca accounts create`) and a key of it; a client
    /// signing with that key.
    pub fn account_client(&self, account: &str) -> Client {
        self.oca_ok(&["accounts", "create", account]);
        self.key_client(account)
    }

    /// Registers and starts an agent named `name`; waits until it is online.
    pub fn agent(&self, name: &str) -> Agent {
        self.agent_of(&self.client(), name)
    }

    /// [`Self::agent`] with extra `oca-agent` flags, kept for its restarts.
    pub fn agent_with(&self, name: &str, extra: &[&str]) -> Agent {
        self.agent_full(&self.client(), name, extra, &[])
    }

    /// [`Self::agent`] with an activation made by `c` (so in `c`'s account).
    pub fn agent_of(&self, c: &Client, name: &str) -> Agent {
        self.agent_full(c, name, &[], &[])
    }

    /// [`Self::agent`] registered with an activation of resource group `group` (so in
    /// that group).
    pub fn agent_in_group(&self, name: &str, group: &str) -> Agent {
        self.agent_full(&self.client(), name, &[], &[("ResourceGroupId", group)])
    }

    /// Starts an agent named `name` (its host name) that registers with an existing
    /// activation; does not wait for it (see [`Self::agent_registered_with`]).
    pub fn spawn_agent_with(&self, name: &str, activation_id: &str, code: &str) -> Agent {
        let mut agent = Agent {
            name: name.to_string(),
            instance_id: String::new(),
            state: tempfile::tempdir().expect("tempdir"),
            server_url: self.url(),
            child: None,
            extra_args: self.agent_trust(),
        };
        agent.spawn(&["--activation-id", activation_id, "--activation-code", code]);
        agent
    }

    /// [`Self::spawn_agent_with`], then waits until an instance with host name `name`
    /// is online in `c`'s account.
    pub fn agent_registered_with(
        &self,
        c: &Client,
        name: &str,
        activation_id: &str,
        code: &str,
    ) -> Agent {
        let mut agent = self.spawn_agent_with(name, activation_id, code);
        agent.instance_id = wait_for(Duration::from_secs(20), || {
            let body = c.ok("DescribeManagedInstances", &[("PageSize", "50")]);
            body["Instances"]
                .as_array()?
                .iter()
                .find(|i| i["Hostname"] == name && i["Connected"] == true)
                .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("agent {name} did not come online"));
        agent
    }

    fn agent_full(
        &self,
        c: &Client,
        name: &str,
        extra: &[&str],
        activation: &[(&str, &str)],
    ) -> Agent {
        let mut params = vec![("InstanceName", name), ("InstanceCount", "1")];
        params.extend_from_slice(activation);
        let act = c.ok("CreateActivation", &params);
        let state = tempfile::tempdir().expect("tempdir");
        let mut agent = Agent {
            name: name.to_string(),
            instance_id: String::new(),
            state,
            server_url: self.url(),
            child: None,
            extra_args: if extra.contains(&"--fingerprint") {
                extra.iter().map(|s| s.to_string()).collect()
            } else {
                self.agent_trust()
                    .into_iter()
                    .chain(extra.iter().map(|s| s.to_string()))
                    .collect()
            },
        };
        agent.spawn(&[
            "--activation-id",
            act["ActivationId"].as_str().unwrap(),
            "--activation-code",
            act["ActivationCode"].as_str().unwrap(),
        ]);
        agent.instance_id = wait_for(Duration::from_secs(20), || {
            let body = c.ok(
                "DescribeManagedInstances",
                &[("InstanceName", name), ("PageSize", "50")],
            );
            body["Instances"]
                .as_array()?
                .iter()
                .find(|i| i["InstanceName"] == name && i["Connected"] == true)
                .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("agent {name} did not come online"));
        agent
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        use std::sync::atomic::Ordering::Relaxed;
        tally::SERVERS.fetch_add(1, Relaxed);
        let panics = self.log_text().matches("panicked").count() as u64;
        tally::SERVER_PANICS.fetch_add(panics, Relaxed);
    }
}

pub struct Agent {
    pub name: String,
    pub instance_id: String,
    pub state: tempfile::TempDir,
    server_url: String,
    child: Option<Child>,
    /// Flags given at every start.
    extra_args: Vec<String>,
}

impl Agent {
    fn spawn(&mut self, extra: &[&str]) {
        let child = Command::new(agent_bin())
            .args(["--server", &self.server_url, "--state-dir"])
            .arg(self.state.path())
            .args(["--hostname", &self.name])
            .args(&self.extra_args)
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("oca-agent");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the agent again with its saved identity.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn(&[]);
    }

    /// Waits at most `limit` for the agent process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_for(limit, || child.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Client {
    pub url: String,
    pub key_id: String,
    pub secret: String,
    pub sig: Sig,
    /// For a TLS server: what the client trusts.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// A signed request as it goes on the wire ([`Client::sign`]).
#[derive(Debug, Clone)]
pub struct Signed {
    pub host: String,
    pub method: String,
    /// The raw query string (without `?`).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An answer: HTTP status and JSON (or raw text for XML).
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn rfc3986(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn with_sig(mut self, sig: Sig) -> Self {
        self.sig = sig;
        self
    }

    pub fn with_secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_string();
        self
    }

    pub fn with_key(mut self, key: &str) -> Self {
        self.key_id = key.to_string();
        self
    }

    /// Calls an action in the default region.
    pub fn call(&self, action: &str, params: &[(&str, &str)]) -> Answer {
        let mut all: Vec<(String, String)> = vec![("RegionId".into(), REGION.into())];
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.raw(
            action,
            all,
            oca_domain::time::now_millis(),
            &oca_domain::ids::new_secret(24),
        )
    }

    /// Calls an action of another API version (e.g. SWAS `2020-06-01`) in the default
    /// region.
    pub fn call_version(&self, version: &str, action: &str, params: &[(&str, &str)]) -> Answer {
        let mut all: Vec<(String, String)> = vec![("RegionId".into(), REGION.into())];
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.raw_version(
            version,
            action,
            all,
            oca_domain::time::now_millis(),
            &oca_domain::ids::new_secret(24),
        )
    }

    /// Calls with exactly these parameters (no RegionId added), signing time and nonce.
    pub fn raw(
        &self,
        action: &str,
        params: Vec<(String, String)>,
        now_ms: i64,
        nonce: &str,
    ) -> Answer {
        self.raw_version(VERSION, action, params, now_ms, nonce)
    }

    /// [`Self::raw`] with another API version.
    pub fn raw_version(
        &self,
        version: &str,
        action: &str,
        mut params: Vec<(String, String)>,
        now_ms: i64,
        nonce: &str,
    ) -> Answer {
        let host = self.host();
        let headers: Vec<(String, String)> = match self.sig {
            Sig::V3 => oca_api::signature::sign_v3(
                "GET",
                "/",
                &params,
                b"",
                action,
                version,
                &host,
                &self.key_id,
                &self.secret,
                now_ms,
                nonce,
            ),
            Sig::V1 => {
                params.push(("Action".into(), action.into()));
                params.push(("Version".into(), version.into()));
                oca_api::signature::sign_v1(
                    "GET",
                    &mut params,
                    &self.key_id,
                    &self.secret,
                    now_ms,
                    nonce,
                );
                vec![]
            }
        };
        let qs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
            .collect();
        self.exchange("GET", &format!("/?{}", qs.join("&")), &headers, b"")
    }

    /// A signed request, not sent: exactly what [`Self::send`] puts on the wire, for
    /// tests that tamper with it. With `in_body`, the parameters travel in a form body
    /// (POST); else in the query string (GET).
    pub fn sign(
        &self,
        action: &str,
        mut params: Vec<(String, String)>,
        in_body: bool,
        now_ms: i64,
        nonce: &str,
    ) -> Signed {
        let host = self.host();
        let method = if in_body { "POST" } else { "GET" };
        let encode = |params: &[(String, String)]| -> String {
            params
                .iter()
                .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let (query, body, headers) = match self.sig {
            Sig::V3 => {
                let body = if in_body {
                    encode(&params)
                } else {
                    String::new()
                };
                let query = if in_body { vec![] } else { params.clone() };
                let headers = oca_api::signature::sign_v3(
                    method,
                    "/",
                    &query,
                    body.as_bytes(),
                    action,
                    VERSION,
                    &host,
                    &self.key_id,
                    &self.secret,
                    now_ms,
                    nonce,
                );
                (encode(&query), body, headers)
            }
            Sig::V1 => {
                params.push(("Action".into(), action.into()));
                params.push(("Version".into(), VERSION.into()));
                oca_api::signature::sign_v1(
                    method,
                    &mut params,
                    &self.key_id,
                    &self.secret,
                    now_ms,
                    nonce,
                );
                let headers = if in_body {
                    vec![(
                        "content-type".to_string(),
                        "application/x-www-form-urlencoded".to_string(),
                    )]
                } else {
                    vec![]
                };
                if in_body {
                    (String::new(), encode(&params), headers)
                } else {
                    (encode(&params), String::new(), headers)
                }
            }
        };
        Signed {
            host,
            method: method.to_string(),
            query,
            headers,
            body: body.into_bytes(),
        }
    }

    /// Sends a signed request (as signed, or as a test changed it).
    pub fn send(&self, s: &Signed) -> Answer {
        self.exchange(&s.method, &format!("/?{}", s.query), &s.headers, &s.body)
    }

    /// `127.0.0.1:port` of the server.
    pub fn host(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    }

    /// One request to the server, over TLS when it speaks TLS.
    pub fn exchange(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Answer {
        match &self.tls {
            None => http_send(&self.host(), method, path_and_query, headers, body),
            Some(config) => https_send(
                &self.host(),
                config.clone(),
                method,
                path_and_query,
                headers,
                body,
            ),
        }
    }

    /// Calls and expects success; returns the JSON answer.
    pub fn ok(&self, action: &str, params: &[(&str, &str)]) -> Value {
        let a = self.call(action, params);
        assert_eq!(a.status, 200, "{action} failed: {}", a.body);
        a.json()
    }

    /// Calls and expects the error `code` with HTTP `status`.
    pub fn err(&self, action: &str, params: &[(&str, &str)], code: &str, status: u16) -> Value {
        let a = self.call(action, params);
        let body = a.json();
        assert_eq!(
            (body["Code"].as_str().unwrap_or(""), a.status),
            (code, status),
            "{action}: {}",
            a.body
        );
        assert!(
            body["RequestId"].as_str().is_some_and(|r| !r.is_empty()),
            "no RequestId: {}",
            a.body
        );
        assert!(
            body["HostId"].is_string() && body["Message"].is_string(),
            "{}",
            a.body
        );
        body
    }

    /// RunCommand of a shell script on instances; returns the invoke id.
    pub fn run(&self, script: &str, instances: &[&str], extra: &[(&str, &str)]) -> String {
        let keys: Vec<String> = (1..=instances.len())
            .map(|n| format!("InstanceId.{n}"))
            .collect();
        let mut params: Vec<(&str, &str)> = vec![
            ("Type", "RunShellScript"),
            ("CommandContent", script),
            ("ContentEncoding", "PlainText"),
        ];
        for (k, v) in keys.iter().zip(instances) {
            params.push((k.as_str(), v));
        }
        params.extend_from_slice(extra);
        self.ok("RunCommand", &params)["InvokeId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Per-instance results of an invocation, sorted by instance id.
    pub fn results(&self, invoke_id: &str) -> Vec<Value> {
        let body = self.ok(
            "DescribeInvocationResults",
            &[("InvokeId", invoke_id), ("PageSize", "50")],
        );
        let mut v = body["Invocation"]["InvocationResults"]["InvocationResult"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        v.sort_by(|a, b| a["InstanceId"].as_str().cmp(&b["InstanceId"].as_str()));
        v
    }

    /// Waits until no instance of the invocation is Running (coarse); returns results.
    pub fn wait(&self, invoke_id: &str, limit: Duration) -> Vec<Value> {
        wait_for(limit, || {
            let r = self.results(invoke_id);
            (!r.is_empty() && r.iter().all(|x| x["InvokeRecordStatus"] != "Running")).then_some(r)
        })
        .unwrap_or_else(|| panic!("{invoke_id} did not finish: {:?}", self.results(invoke_id)))
    }

    /// The invocation as DescribeInvocations shows it.
    pub fn invocation(&self, invoke_id: &str) -> Value {
        let body = self.ok(
            "DescribeInvocations",
            &[("InvokeId", invoke_id), ("IncludeOutput", "true")],
        );
        body["Invocations"]["Invocation"][0].clone()
    }
}

/// Decodes a Base64 `Output`.
pub fn b64(s: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap_or(""))
        .expect("Output is Base64");
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn b64_bytes(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap_or(""))
        .expect("Output is Base64")
}

/// A minimal HTTP/1.1 GET over a std TcpStream (loopback only), so the tests need
/// no async runtime.
pub fn http_get(host: &str, path_and_query: &str, headers: &[(String, String)]) -> Answer {
    assert!(
        host.starts_with("127.0.0.1:"),
        "tests talk to loopback only"
    );
    let answer = http_get_untallied(host, path_and_query, headers);
    tally::answer(answer.status);
    answer
}

fn http_get_untallied(host: &str, path_and_query: &str, headers: &[(String, String)]) -> Answer {
    http_send_untallied(host, "GET", path_and_query, headers, b"")
}

/// [`http_get`] with any method and a body (sent with its Content-Length). The server
/// may answer before reading the whole body; the answer is read all the same.
pub fn http_send(
    host: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    assert!(
        host.starts_with("127.0.0.1:"),
        "tests talk to loopback only"
    );
    let answer = http_send_untallied(host, method, path_and_query, headers, body);
    tally::answer(answer.status);
    answer
}

fn http_send_untallied(
    host: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    let stream = std::net::TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    exchange_on(stream, host, method, path_and_query, headers, body)
}

/// [`http_send`] over TLS, trusting what `config` trusts (the server is named by its
/// address, `127.0.0.1`).
pub fn https_send(
    host: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    assert!(
        host.starts_with("127.0.0.1:"),
        "tests talk to loopback only"
    );
    let tcp = std::net::TcpStream::connect(host).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
    let answer = exchange_on(
        rustls::StreamOwned::new(conn, tcp),
        host,
        method,
        path_and_query,
        headers,
        body,
    );
    tally::answer(answer.status);
    answer
}

/// One HTTP/1.1 exchange on a connected stream (`Connection: close`).
fn exchange_on(
    mut stream: impl std::io::Read + std::io::Write,
    host: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    let mut req =
        format!("{method} {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("host") {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // A refusal may come (and the socket close) before all of it is sent.
    let _ = stream.write_all(&bytes);
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn data_path(s: &Server) -> &Path {
    s.dir.path()
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn proc_alive(pid: u32) -> bool {
    // A zombie has been killed; only a live process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A directory that outlives the test's handles (agents write into it as other users).
pub fn scratch_dir() -> PathBuf {
    let d = tempfile::tempdir().unwrap().keep();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    d
}
