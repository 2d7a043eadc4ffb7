//! The server's TLS: a certificate the operator gives (`--tls-cert`/`--tls-key`), or,
//! with nothing to set up, a private CA and a server certificate made in the data
//! directory on first start (`tls/ca.pem`, `tls/server.pem` and their keys, 0600).
//!
//! Agents trust the private CA by its fingerprint (printed at start and put in the
//! install line) or by its file, never the server certificate itself, so the server
//! certificate can be made again — new names in `--advertise`, renewal before it
//! expires — without touching a single agent. Certificate files are read again when
//! they change (checked every 30 s), so an operator's renewed certificate takes effect
//! without a restart.

use anyhow::{bail, Context, Result};
use oca_tls::Fingerprint;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// A generated server certificate is made again when it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a generated server certificate is valid.
const SERVER_CERT_DAYS: i64 = 397;
/// How long the private CA is valid.
const CA_DAYS: i64 = 20 * 365;

/// The server's TLS configuration, swapped in place when its files change.
pub struct ServerTls {
    current: RwLock<Arc<ServerConfig>>,
    source: Source,
    /// The private CA, when the server made its own certificate.
    pub ca: Option<PrivateCa>,
}

/// Where the certificate comes from.
enum Source {
    /// The operator's files.
    Given { cert: PathBuf, key: PathBuf },
    /// Made here, for these names.
    Generated { dir: PathBuf, names: Vec<String> },
}

/// The private CA the server made.
#[derive(Debug, Clone)]
pub struct PrivateCa {
    pub cert_file: PathBuf,
    pub fingerprint: Fingerprint,
}

impl ServerTls {
    /// With the operator's certificate and key.
    pub fn given(cert: &Path, key: &Path) -> Result<ServerTls> {
        let config = load_config(cert, key)?;
        Ok(ServerTls {
            current: RwLock::new(Arc::new(config)),
            source: Source::Given {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            ca: None,
        })
    }

    /// With the private CA of `data_dir` (made on first use) and a server certificate
    /// for `names` (made again when the names change or it nears its end).
    pub fn generated(data_dir: &Path, names: Vec<String>) -> Result<ServerTls> {
        let dir = data_dir.join("tls");
        let ca = ensure_generated(&dir, &names)?;
        let config = load_config(&dir.join("server.pem"), &dir.join("server.key"))?;
        Ok(ServerTls {
            current: RwLock::new(Arc::new(config)),
            source: Source::Generated { dir, names },
            ca: Some(ca),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes or reads the certificate again if needed; answers whether it changed.
    fn refresh(&self, since: SystemTime) -> Result<bool> {
        let (cert, key) = match &self.source {
            Source::Given { cert, key } => (cert.clone(), key.clone()),
            Source::Generated { dir, names } => {
                ensure_generated(dir, names)?;
                (dir.join("server.pem"), dir.join("server.key"))
            }
        };
        let changed = [&cert, &key].iter().any(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > since)
        });
        if changed {
            let config = load_config(&cert, &key)?;
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        }
        Ok(changed)
    }

    /// Checks every 30 s whether the certificate files changed (or a generated
    /// certificate nears its end) and takes the new ones for the next handshakes.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut since = SystemTime::now();
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let now = SystemTime::now();
                match tls.refresh(since) {
                    Ok(true) => tracing::info!("TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => tracing::error!("TLS certificate not reloaded: {e:#}"),
                }
                since = now;
            }
        });
    }
}

fn load_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = oca_tls::read_certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .with_context(|| format!("{} does not go with its key", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The names a generated certificate is for: `--advertise` (host names and
/// addresses), the listen address when it is a specific one, and `localhost`,
/// `127.0.0.1` and `::1` (so that `oca up`'s own agent and CLI on this host can
/// reach it).
pub fn certificate_names(advertise: &[String], listen: SocketAddr) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: String| {
        let n = n
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    for a in advertise {
        add(host_of(a));
    }
    if !listen.ip().is_unspecified() {
        add(listen.ip().to_string());
    }
    for local in ["localhost", "127.0.0.1", "::1"] {
        add(local.to_string());
    }
    names
}

/// The host of `https://host:port/…`, `host:port` or `host`.
fn host_of(text: &str) -> String {
    let t = text.trim();
    let t = t.split_once("://").map_or(t, |(_, rest)| rest);
    let t = t.split('/').next().unwrap_or(t);
    if let Some(v6) = t.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    if t.parse::<IpAddr>().is_ok() {
        return t.to_string();
    }
    t.rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(t, |(host, _)| host)
        .to_string()
}

/// Makes what is missing in `dir`: the CA (once), and a server certificate for `names`
/// unless one for exactly these names is there and not near its end.
fn ensure_generated(dir: &Path, names: &[String]) -> Result<PrivateCa> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    if !ca_cert_path.exists() || !ca_key_path.exists() {
        let (cert_pem, key_pem) = make_ca()?;
        crate::config::write_private(&ca_key_path, key_pem.as_bytes())?;
        crate::config::write_private(&ca_cert_path, cert_pem.as_bytes())?;
        tracing::info!("made a private CA in {}", dir.display());
    }
    let ca_pem = std::fs::read_to_string(&ca_cert_path)
        .with_context(|| format!("reading {}", ca_cert_path.display()))?;
    let ca_der = oca_tls::read_certificates(&ca_cert_path)?
        .into_iter()
        .next()
        .expect("read_certificates answers at least one");
    let fingerprint = Fingerprint::of(&ca_der);
    let names_path = dir.join("server.names");
    let wanted = names.join("\n");
    let have = std::fs::read_to_string(&names_path).unwrap_or_default();
    let fresh = std::fs::metadata(dir.join("server.pem"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|made| made.elapsed().ok())
        .is_some_and(|age| {
            age + RENEW_BEFORE < Duration::from_secs(SERVER_CERT_DAYS as u64 * 24 * 3600)
        });
    if have != wanted || !fresh || !dir.join("server.key").exists() {
        let ca_key = std::fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?;
        let (cert_pem, key_pem) = make_server_cert(&ca_pem, &ca_key, names)?;
        crate::config::write_private(&dir.join("server.key"), key_pem.as_bytes())?;
        // The chain: the server's certificate, then the CA's (an agent that pins the
        // CA's fingerprint finds it there).
        crate::config::write_private(
            &dir.join("server.pem"),
            format!("{cert_pem}{ca_pem}").as_bytes(),
        )?;
        crate::config::write_private(&names_path, wanted.as_bytes())?;
        tracing::info!("made a server certificate for {}", names.join(", "));
    }
    Ok(PrivateCa {
        cert_file: ca_cert_path,
        fingerprint,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn make_ca() -> Result<(String, String)> {
    let key = KeyPair::generate().context("making the CA's key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "OCA");
    dn.push(
        DnType::CommonName,
        format!("OCA private CA ({})", hostname()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).context("making the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn make_server_cert(ca_pem: &str, ca_key_pem: &str, names: &[String]) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("reading the CA's key")?;
    let ca_params =
        CertificateParams::from_ca_cert_pem(ca_pem).context("reading the CA's certificate")?;
    let ca = ca_params
        .self_signed(&ca_key)
        .context("loading the CA to sign with")?;
    if names.is_empty() {
        bail!("a server certificate needs at least one name");
    }
    let key = KeyPair::generate().context("making the server's key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .with_context(|| format!("{n:?} is not a host name")),
        })
        .collect::<Result<_>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(SERVER_CERT_DAYS);
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .context("signing the server certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_what_operators_write() {
        assert_eq!(host_of("https://oca.example:7070/x"), "oca.example");
        assert_eq!(host_of("oca.example:7070"), "oca.example");
        assert_eq!(host_of("10.0.0.5"), "10.0.0.5");
        assert_eq!(host_of("[2001:db8::1]:7070"), "2001:db8::1");
        assert_eq!(host_of("2001:db8::1"), "2001:db8::1");
        let names = certificate_names(
            &["oca.example".into(), "https://10.0.0.5:7070".into()],
            "0.0.0.0:7070".parse().unwrap(),
        );
        assert_eq!(
            names,
            vec!["oca.example", "10.0.0.5", "localhost", "127.0.0.1", "::1"]
        );
    }

    #[test]
    fn a_generated_certificate_is_kept_until_the_names_change_and_the_ca_stays() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = ensure_generated(dir.path(), &names).unwrap();
        let leaf = std::fs::read(dir.path().join("server.pem")).unwrap();
        let again = ensure_generated(dir.path(), &names).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(std::fs::read(dir.path().join("server.pem")).unwrap(), leaf);
        let more = vec!["oca.example".to_string(), "localhost".to_string()];
        let third = ensure_generated(dir.path(), &more).unwrap();
        assert_eq!(first.fingerprint, third.fingerprint, "the CA is kept");
        assert_ne!(std::fs::read(dir.path().join("server.pem")).unwrap(), leaf);
        load_config(
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.pem", "ca.key", "server.pem", "server.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
}
