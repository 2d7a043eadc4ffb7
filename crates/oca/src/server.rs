//! Assembling and running the server: storage, dispatcher and API on one listener.

use crate::config::{self, Credentials};
use anyhow::{bail, Context, Result};
use oca_api::auth::{Authenticator, SecretBox};
use oca_api::{Api, ApiConfig};
use oca_dispatch::{DispatchConfig, Dispatcher};
use oca_domain::time::now_millis;
use oca_store::sqlite::SqliteStore;
use oca_store::{ActivationRecord, Scope, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The configuration file: TOML, its keys the long names of these flags
    /// (`heartbeat-secs = 30`); the environment (`OCA_<FLAG>`) overrides it and flags
    /// override both [default: /etc/oca/oca.toml when it exists].
    #[arg(long, env = "OCA_CONFIG_FILE", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file < environment < flags) as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Where the database, the master key and the credentials live [default: ~/.oca].
    #[arg(long, env = "OCA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (API and agents). Port 0 picks a free port.
    #[arg(long, env = "OCA_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Regions this server serves, comma-separated.
    #[arg(
        long,
        env = "OCA_REGIONS",
        value_delimiter = ',',
        default_value = "cn-hangzhou"
    )]
    pub regions: Vec<String>,
    /// Seconds between agent heartbeats.
    #[arg(long, env = "OCA_HEARTBEAT_SECS", default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// How long a task waits for its agent before it is aborted, in milliseconds.
    #[arg(long, env = "OCA_DELIVERY_TIMEOUT_MS", default_value_t = 60_000)]
    pub delivery_timeout_ms: i64,
    /// How long past a run's timeout its agent may stay away before the run is ended
    /// as interrupted, in milliseconds.
    #[arg(long, env = "OCA_LOST_RUN_GRACE_MS", default_value_t = 600_000)]
    pub lost_run_grace_ms: i64,
    /// The most bytes of whole output kept per run.
    #[arg(long, env = "OCA_OUTPUT_CAP", default_value_t = 16 << 20)]
    pub output_cap: u64,
    /// The most instances one invocation may name.
    #[arg(long, env = "OCA_MAX_INSTANCES", default_value_t = 500)]
    pub max_instances: usize,
    /// Days an invocation record is kept: older ones are purged in the background once
    /// they have ended (a periodic invocation lives until it is stopped).
    #[arg(long, env = "OCA_RETENTION_DAYS", default_value_t = 14, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_days: u64,
    /// The most invocation records kept per account and region (command runs and file
    /// deliveries counted apart); ended ones beyond it are purged, however recent.
    #[arg(long, env = "OCA_RETENTION_MAX_RECORDS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_max_records: u64,
    /// The most audit entries kept (the oldest go first; those of callers who proved no
    /// secret are held to a tenth of it). Entries older than --retention-days go too.
    #[arg(long, env = "OCA_AUDIT_MAX_RECORDS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_max_records: u64,
    /// Milliseconds between retention sweeps (a sweep goes on at once while its batches
    /// come back full).
    #[arg(
        long,
        env = "OCA_RETENTION_INTERVAL_MS",
        default_value_t = 60_000,
        hide = true
    )]
    pub retention_interval_ms: u64,
    /// Invocations purged per write transaction at most.
    #[arg(long, env = "OCA_RETENTION_BATCH", default_value_t = 500, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_batch: u64,
    /// Failed agent registrations and connections (wrong activation codes, wrong
    /// tokens) a source address (an IPv4 address, an IPv6 /64) may make at once; then
    /// it is throttled (`Throttling.User`), even with a right secret, until they drain.
    #[arg(long, env = "OCA_AGENT_AUTH_BURST", default_value_t = oca_dispatch::DEFAULT_AUTH_FAILURES.burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub agent_auth_burst: u32,
    /// Milliseconds after which one failure of an address is forgiven: once throttled,
    /// an address gets one more try per interval.
    #[arg(long, env = "OCA_AGENT_AUTH_FORGIVE_MS", default_value_t = oca_dispatch::DEFAULT_AUTH_FAILURES.forgive_ms as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub agent_auth_forgive_ms: u64,
    /// Source addresses whose failures are tracked at most (the stalest go first).
    #[arg(long, env = "OCA_AGENT_AUTH_TRACKED", default_value_t = oca_dispatch::DEFAULT_AUTH_FAILURES.max_sources,
          hide = true)]
    pub agent_auth_tracked: usize,
    /// Tests only: accept cron frequencies whose runs are this many seconds apart (the
    /// vendor's minimum is 10 s and no less than the timeout).
    #[arg(long, env = "OCA_MIN_CRON_INTERVAL_SECS", hide = true)]
    pub min_cron_interval_secs: Option<u64>,
    /// Seconds a client has to send a request's headers; a connection idle between
    /// requests is closed after as long.
    #[arg(long, env = "OCA_HEADER_READ_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// The most HTTP connections from one address (an IPv6 /64); more make room by
    /// closing that address's longest-idle one. Agents' WebSockets are not counted.
    #[arg(long, env = "OCA_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_address: u64,
    /// The most HTTP connections in all [default: half the open-file limit].
    #[arg(long, env = "OCA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// The server's certificate chain (PEM). Without it (and --tls-key) the server
    /// makes a private CA and a certificate in the data directory on first start.
    #[arg(long, env = "OCA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "OCA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Names and addresses hosts reach this server by (comma-separated, e.g.
    /// oca.example.com,10.0.0.5): the generated certificate is made for them (with the
    /// listen address and localhost), and agent install lines use the first.
    #[arg(long, env = "OCA_ADVERTISE", value_delimiter = ',')]
    pub advertise: Vec<String>,
    /// Serve plain HTTP, without TLS: every signature, agent token, script and output
    /// crosses the network in clear. For a loopback address or behind a TLS proxy only.
    #[arg(long, env = "OCA_PLAIN_HTTP", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub plain_http: bool,
    /// On SIGTERM or Ctrl-C: how long the requests under way may take to finish, and
    /// the agents to be told, before the server exits anyway.
    #[arg(long, env = "OCA_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// The most signature nonces remembered in memory per access key (older ones of
    /// the same key are forgotten first; nonces of changes are also kept on disk).
    #[arg(long, env = "OCA_NONCES_PER_KEY", default_value_t = oca_api::replay::NonceCache::DEFAULT_PER_KEY, hide = true)]
    pub nonces_per_key: usize,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Do not start a local agent.
    #[arg(long, env = "OCA_NO_AGENT")]
    pub no_agent: bool,
}

/// The database and the master key of a data directory.
pub(crate) struct DataDir {
    pub path: PathBuf,
    pub store: Arc<dyn Store>,
    pub secrets: SecretBox,
}

pub(crate) fn open_data_dir(path: &Path) -> Result<DataDir> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    make_private(path)?;
    let key_path = path.join("master.key");
    let key: [u8; 32] = match std::fs::read(&key_path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", key_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretBox::generate_key();
            config::write_private(&key_path, &key)?;
            key
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", key_path.display())),
    };
    let store = SqliteStore::open(&path.join("oca.db"))
        .with_context(|| format!("opening the database in {}", path.display()))?;
    Ok(DataDir {
        path: path.to_path_buf(),
        store: Arc::new(store),
        secrets: SecretBox::new(&key),
    })
}

/// Takes group and other permissions off the data directory and the files in it (a
/// directory made by hand with mode 755, files from an older version or another
/// umask): they hold the access keys' sealed secrets, the master key, every command and
/// every output.
fn make_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tighten = |p: &Path, mode: u32| -> Result<()> {
        let meta =
            std::fs::symlink_metadata(p).with_context(|| format!("reading {}", p.display()))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("making {} private", p.display()))?;
            tracing::warn!("{} was readable by others: made private", p.display());
        }
        Ok(())
    };
    tighten(dir, 0o700)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            tighten(&entry.path(), 0o600)?;
        } else if kind.is_dir() {
            tighten(&entry.path(), 0o700)?;
        }
    }
    Ok(())
}

struct Running {
    addr: SocketAddr,
    /// The TLS the server speaks (`None`: plain HTTP).
    tls: Option<Arc<crate::tls::ServerTls>>,
    api: Arc<Api>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(args: &ServeArgs, data: DataDir) -> Result<Running> {
    let dispatcher = Dispatcher::new(
        data.store.clone(),
        DispatchConfig {
            heartbeat_secs: args.heartbeat_secs,
            delivery_timeout_ms: args.delivery_timeout_ms,
            output_cap: args.output_cap,
            lost_run_grace_ms: args.lost_run_grace_ms,
            auth_failures: oca_domain::throttle::FailureLimits {
                burst: args.agent_auth_burst,
                forgive_ms: i64::try_from(args.agent_auth_forgive_ms).unwrap_or(i64::MAX),
                max_sources: args.agent_auth_tracked,
            },
        },
    );
    dispatcher.spawn_sweeper();
    crate::retention::spawn(
        data.store.clone(),
        crate::retention::RetentionConfig {
            days: args.retention_days,
            max_records: args.retention_max_records,
            interval: Duration::from_millis(args.retention_interval_ms),
            batch: args.retention_batch,
            audit_max_records: args.audit_max_records,
        },
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let tls = server_tls(args, &data.path, addr)?;
    let api_config = ApiConfig {
        regions: args.regions.clone(),
        max_instances_per_invocation: args.max_instances,
        min_cron_interval_secs: args.min_cron_interval_secs,
        agent_install: Some(agent_install(&args.advertise, addr, tls.as_deref())),
        ..ApiConfig::default()
    };
    let auth = Authenticator::with_nonces_per_key(
        data.store.clone(),
        data.secrets,
        api_config.max_skew_ms,
        args.nonces_per_key,
    );
    let host_id = api_config.host_id.clone();
    let max_head_bytes = api_config.max_query_bytes + 64 * 1024;
    let api = Arc::new(Api::new(
        data.store.clone(),
        dispatcher.clone(),
        auth,
        api_config,
    ));
    // Whatever path or method nothing serves answers the API's error document.
    let fallback_api = api.clone();
    let not_found = move |method: axum::http::Method, uri: axum::http::Uri| {
        let api = fallback_api.clone();
        async move { api.not_found(&method, uri.path(), uri.query().unwrap_or("")) }
    };
    let fallback_api = api.clone();
    let not_allowed = move |method: axum::http::Method, uri: axum::http::Uri| {
        let api = fallback_api.clone();
        async move { api.method_not_allowed(&method, uri.query().unwrap_or("")) }
    };
    let app = api
        .routes()
        .merge(dispatcher.routes())
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed);
    let open_files = raise_open_file_limit();
    let tracker = crate::listener::Tracker::new(crate::listener::Limits {
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        max_per_address: args.max_connections_per_address as usize,
        max_connections: args
            .max_connections
            .unwrap_or((open_files / 2).max(64) as usize),
        max_head_bytes,
    });
    let site = crate::listener::Site {
        app,
        host_id,
        tls: tls.clone(),
    };
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let stopping = dispatcher.clone();
    let server = tokio::spawn(async move {
        crate::listener::serve(listener, site, tracker.clone(), shutdown_signal()).await;
        // Quiet: no new connection is taken; the requests under way are answered, the
        // agents told to come back (after a short random pause each, so a restarted
        // server is not met by all at once), and what they reported is committed.
        tracing::info!("stopping: finishing the requests under way");
        let left = tracker.drain(grace).await;
        if left > 0 {
            tracing::warn!("{left} connections still open after {grace:?}");
        }
        stopping.shutdown(grace).await;
        tracing::info!("stopped");
        Ok(())
    });
    // Tests and scripts read this line to find the port.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("OCA listening on {scheme}://{addr}");
    if let Some(ca) = tls.as_ref().and_then(|t| t.ca.as_ref()) {
        println!(
            "TLS: private CA {} ({}); agents pin it with --fingerprint {}",
            ca.cert_file.display(),
            ca.fingerprint,
            ca.fingerprint
        );
    }
    Ok(Running {
        addr,
        tls,
        api,
        server,
    })
}

/// What a host's install line (CreateActivation's `InstallCommand`) says about this
/// server: the first `--advertise` (a URL as it is; a host, or host:port, with this
/// server's scheme and port), else the listen address — loopback when the server
/// listens on every address, as no name other hosts would use is known (nor in the
/// generated certificate); and the private CA's fingerprint, when it has one.
fn agent_install(
    advertise: &[String],
    addr: SocketAddr,
    tls: Option<&crate::tls::ServerTls>,
) -> oca_api::AgentInstall {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let port = addr.port();
    let server_url = match advertise.iter().map(|a| a.trim()).find(|a| !a.is_empty()) {
        Some(a) => {
            let a = a.trim_end_matches('/');
            let has_port = if let Some(v6) = a.strip_prefix('[') {
                v6.split_once("]:").is_some()
            } else {
                a.parse::<std::net::IpAddr>().is_err()
                    && a.rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            };
            if a.contains("://") {
                a.to_string()
            } else if has_port {
                format!("{scheme}://{a}")
            } else if let Ok(std::net::IpAddr::V6(v6)) = a.parse() {
                format!("{scheme}://[{v6}]:{port}")
            } else {
                format!("{scheme}://{a}:{port}")
            }
        }
        None => {
            let ip = match addr.ip() {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                    std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                }
                ip => ip,
            };
            format!("{scheme}://{}", SocketAddr::new(ip, port))
        }
    };
    oca_api::AgentInstall {
        server_url,
        fingerprint: tls
            .and_then(|t| t.ca.as_ref())
            .map(|ca| ca.fingerprint.to_string()),
    }
}

/// The server's TLS: the operator's certificate, or the data directory's own; none
/// with `--plain-http` (said loudly unless the address is loopback).
fn server_tls(
    args: &ServeArgs,
    data_dir: &Path,
    addr: SocketAddr,
) -> Result<Option<Arc<crate::tls::ServerTls>>> {
    if args.plain_http {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                "serving PLAIN HTTP on {addr}: signatures, agent tokens, scripts and outputs \
                 cross the network in clear, and anyone on the path can change them; use it \
                 behind a TLS proxy only"
            );
        }
        return Ok(None);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => crate::tls::ServerTls::given(cert, key)?,
        _ => crate::tls::ServerTls::generated(
            data_dir,
            crate::tls::certificate_names(&args.advertise, addr),
        )?,
    };
    let tls = Arc::new(tls);
    tls.spawn_refresh();
    Ok(Some(tls))
}

/// Raises this process's soft limit on open files to its hard limit (every agent holds
/// a connection); the limit in force.
fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let data = open_data_dir(&config::data_dir(args.data_dir.clone()))?;
    let running = start(&args, data).await?;
    running.server.await??;
    // What the last requests left in the audit trail's queue.
    running.api.dispatcher.audit().flush().await;
    Ok(ExitCode::SUCCESS)
}

/// Makes sure the credentials file names a live key; creates one if not. Returns the
/// credentials and whether they are new (their secret is then printed once).
async fn ensure_credentials(
    api: &Api,
    data_dir: &Path,
    endpoint: &str,
    region: &str,
    ca_file: Option<&Path>,
) -> Result<(Credentials, bool)> {
    let path = config::credentials_path(data_dir);
    if let Ok(existing) = Credentials::load(Some(&path)) {
        if api
            .store
            .get_access_key(&existing.access_key_id)
            .await?
            .is_some()
        {
            let creds = Credentials {
                endpoint: endpoint.to_string(),
                region_id: region.to_string(),
                ca_file: ca_file.map(Path::to_path_buf),
                ..existing
            };
            config::write_private(&path, serde_json::to_string_pretty(&creds)?.as_bytes())?;
            return Ok((creds, false));
        }
    }
    let (key, secret) = api
        .auth
        .create_key(config::DEFAULT_ACCOUNT)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    crate::admin::record_local(
        api.store.as_ref(),
        "CreateAccessKey",
        &key.account_id,
        &key.access_key_id,
    )
    .await;
    let creds = Credentials {
        endpoint: endpoint.to_string(),
        region_id: region.to_string(),
        access_key_id: key.access_key_id,
        access_key_secret: secret,
        ca_file: ca_file.map(Path::to_path_buf),
    };
    config::write_private(&path, serde_json::to_string_pretty(&creds)?.as_bytes())?;
    Ok((creds, true))
}

fn agent_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("oca-agent");
    if sibling.exists() {
        Ok(sibling)
    } else {
        bail!("oca-agent was not found next to {}", exe.display())
    }
}

fn hostname() -> String {
    nix_hostname().unwrap_or_else(|| "localhost".to_string())
}

fn nix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Starts the local agent; registers it first if it has never run.
async fn start_local_agent(
    api: &Api,
    data_dir: &Path,
    endpoint: &str,
    region: &str,
    ca_file: Option<&Path>,
) -> Result<tokio::process::Child> {
    let state_dir = data_dir.join("agent");
    let mut cmd = tokio::process::Command::new(agent_binary()?);
    cmd.arg("--server")
        .arg(endpoint)
        .arg("--state-dir")
        .arg(&state_dir);
    if let Some(ca) = ca_file {
        cmd.arg("--ca-file").arg(ca);
    }
    if !state_dir.join("identity.json").exists() {
        let code = oca_domain::ids::new_secret(40);
        let now = now_millis();
        let activation = ActivationRecord {
            activation_id: oca_domain::ids::new_activation_id(),
            account_id: config::DEFAULT_ACCOUNT.to_string(),
            region_id: region.to_string(),
            code_hash: oca_dispatch::digest(&code),
            instance_name: hostname(),
            description: "the local agent of `oca up`".to_string(),
            instance_count: 1,
            registered_count: 0,
            deregistered_count: 0,
            ip_address_range: "127.0.0.1/32".to_string(),
            created: now,
            expires: now + 3_600_000,
            disabled: false,
            resource_group_id: String::new(),
        };
        api.store.insert_activation(&activation).await?;
        cmd.arg("--activation-id")
            .arg(&activation.activation_id)
            .arg("--activation-code")
            .arg(&code);
    }
    cmd.kill_on_drop(true);
    cmd.spawn().context("starting oca-agent")
}

/// Waits until an instance of the account is connected; returns its id.
async fn wait_for_agent(api: &Api, region: &str) -> Option<String> {
    let scope = Scope {
        account_id: config::DEFAULT_ACCOUNT.to_string(),
        region_id: region.to_string(),
    };
    for _ in 0..100 {
        if let Ok(listing) = api
            .store
            .list_instances(
                &scope,
                &Default::default(),
                oca_store::Page {
                    offset: 0,
                    limit: 50,
                },
            )
            .await
        {
            if let Some(i) = listing
                .items
                .iter()
                .find(|i| api.dispatcher.is_connected(&i.instance_id))
            {
                return Some(i.instance_id.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub async fn up(args: UpArgs) -> Result<ExitCode> {
    let data_dir = config::data_dir(args.serve.data_dir.clone());
    let data = open_data_dir(&data_dir)?;
    data.store
        .ensure_account(&crate::admin::default_account())
        .await?;
    let data_path = data.path.clone();
    let running = start(&args.serve, data).await?;
    // This host's own clients (the CLI, the local agent) reach it on loopback.
    let local = match running.addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], running.addr.port()))
        }
        ip if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, running.addr.port()))
        }
        _ => running.addr,
    };
    let scheme = if running.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = format!("{scheme}://{local}");
    let ca_file = running
        .tls
        .as_ref()
        .and_then(|t| t.ca.as_ref())
        .map(|ca| ca.cert_file.clone());
    let region = args.serve.regions.first().cloned().unwrap_or_default();
    let (creds, new) = ensure_credentials(
        &running.api,
        &data_path,
        &endpoint,
        &region,
        ca_file.as_deref(),
    )
    .await?;
    let creds_path = config::credentials_path(&data_path);
    println!();
    println!("OCA is up.");
    println!("  API          {endpoint}   (region {region})");
    println!("  Data         {}", data_path.display());
    println!("  Credentials  {}", creds_path.display());
    if new {
        println!("  Access key   {}", creds.access_key_id);
        println!(
            "  Secret       {}   (shown once; it is in the credentials file)",
            creds.access_key_secret
        );
    }
    let _agent = if args.no_agent {
        None
    } else {
        let child = start_local_agent(
            &running.api,
            &data_path,
            &endpoint,
            &region,
            ca_file.as_deref(),
        )
        .await?;
        match wait_for_agent(&running.api, &region).await {
            Some(id) => println!("  Local agent  {id} (online)"),
            None => println!("  Local agent  started, not yet online (see its log above)"),
        }
        Some(child)
    };
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "oca".into());
    let home = if data_path == config::default_data_dir() {
        String::new()
    } else {
        format!("OCA_HOME={} ", data_path.display())
    };
    println!();
    println!("Run a first command from another terminal:");
    println!("  {home}{exe} run 'uname -a'");
    println!("Add hosts: `{home}{exe} activations create` prints the line to run on each.");
    if args.serve.advertise.is_empty() || running.addr.ip().is_loopback() {
        println!(
            "  (Other hosts reach this server once it listens where they are and advertises \
             the name they use: --listen 0.0.0.0:7070 --advertise NAME.)"
        );
    }
    println!("Stop with Ctrl-C.");
    running.server.await??;
    running.api.dispatcher.audit().flush().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_lines_name_the_advertised_server() {
        let url = |advertise: &[&str], listen: &str| {
            let advertise: Vec<String> = advertise.iter().map(|s| s.to_string()).collect();
            agent_install(&advertise, listen.parse().unwrap(), None).server_url
        };
        assert_eq!(
            url(&["oca.example.com", "10.0.0.5"], "0.0.0.0:7070"),
            "http://oca.example.com:7070"
        );
        assert_eq!(
            url(&["oca.example.com:443"], "0.0.0.0:7070"),
            "http://oca.example.com:443"
        );
        assert_eq!(
            url(&["https://oca.example.com/"], "0.0.0.0:7070"),
            "https://oca.example.com"
        );
        assert_eq!(url(&["10.0.0.5"], "0.0.0.0:7070"), "http://10.0.0.5:7070");
        assert_eq!(url(&["fd00::5"], "[::]:7070"), "http://[fd00::5]:7070");
        assert_eq!(
            url(&["[fd00::5]:8443"], "[::]:7070"),
            "http://[fd00::5]:8443"
        );
        assert_eq!(url(&[], "10.1.2.3:7070"), "http://10.1.2.3:7070");
        assert_eq!(url(&[], "0.0.0.0:7070"), "http://127.0.0.1:7070");
        assert_eq!(url(&[], "[::]:7070"), "http://[::1]:7070");
    }
}
