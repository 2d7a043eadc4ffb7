//! How the agent reaches its server: plain HTTP/WebSocket for an `http://` server, TLS
//! (`https://`, `wss://`) trusting what it was told — a CA file, a pinned
//! fingerprint, or the system's roots ([`oca_tls::Trust`]).
//!
//! What it was told at registration is kept in `<state-dir>/tls.json`, so a host
//! installed with `--fingerprint` goes on trusting that certificate when it restarts
//! without the flag; a flag given later replaces what is kept. `oca-agent install
//! --ca-file` keeps a copy of the file in the state dir (`ca.pem`), named relative to it.

use crate::spool;
use crate::url::ServerUrl;
use anyhow::Context;
use oca_tls::{Fingerprint, Trust};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::Connector;

/// What `tls.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kept {
    CaFile(PathBuf),
    Fingerprint(String),
}

fn kept_path(state_dir: &Path) -> PathBuf {
    state_dir.join("tls.json")
}

/// The name, in the state dir, of the copy of a CA file that `oca-agent install` keeps.
pub const CA_COPY: &str = "ca.pem";

/// The trust in force: the one given now (kept for next time), else the one kept,
/// else the system's roots.
pub fn trust(given: Option<Trust>, state_dir: &Path) -> anyhow::Result<Trust> {
    if let Some(trust) = given {
        keep(&trust, state_dir)?;
        return Ok(trust);
    }
    let path = kept_path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let kept: Kept = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(match kept {
                // A relative path is the state dir's own copy.
                Kept::CaFile(p) => Trust::CaFile(state_dir.join(p)),
                Kept::Fingerprint(fp) => Trust::Pinned(Fingerprint::parse(&fp)?),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Trust::SystemRoots),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Keeps `trust` in the state dir for later starts (the system's roots: nothing kept).
pub fn keep(trust: &Trust, state_dir: &Path) -> anyhow::Result<()> {
    let path = kept_path(state_dir);
    let kept = match trust {
        Trust::CaFile(p) => Kept::CaFile(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        Trust::Pinned(fp) => Kept::Fingerprint(fp.to_string()),
        Trust::SystemRoots => {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
    };
    write_kept(&path, &kept)
}

/// Keeps a copy of the CA file `source` in the state dir ([`CA_COPY`]) and trusts it
/// there, by a path relative to the state dir: the agent no longer depends on the file
/// it was given, and the state dir may be written under another root (`oca-agent
/// install --root`) or moved.
pub fn keep_ca_copy(source: &Path, state_dir: &Path) -> anyhow::Result<()> {
    oca_tls::read_certificates(source)?;
    let pem = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    spool::write_atomic(&state_dir.join(CA_COPY), &pem, 0o600)
        .context("keeping a copy of the CA file")?;
    write_kept(&kept_path(state_dir), &Kept::CaFile(PathBuf::from(CA_COPY)))
}

fn write_kept(path: &Path, kept: &Kept) -> anyhow::Result<()> {
    spool::write_atomic(path, &serde_json::to_vec_pretty(kept)?, 0o600)
        .context("keeping the TLS trust")
}

/// An HTTP client and a WebSocket connector for one server.
#[derive(Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    ws: Option<Connector>,
}

impl Transport {
    /// For `url`: TLS with `trust` when the URL is `https://`, plain otherwise.
    pub fn new(url: &ServerUrl, trust: &Trust, timeout: Duration) -> anyhow::Result<Transport> {
        let builder = reqwest::Client::builder().timeout(timeout);
        if !url.is_tls() {
            return Ok(Transport {
                http: builder.build()?,
                ws: None,
            });
        }
        let config =
            oca_tls::client_config(trust).with_context(|| format!("trusting {trust} for {url}"))?;
        Ok(Transport {
            http: builder.use_preconfigured_tls(config.clone()).build()?,
            ws: Some(Connector::Rustls(Arc::new(config))),
        })
    }

    /// The WebSocket connector (`None`: plain).
    pub fn ws_connector(&self) -> Option<Connector> {
        self.ws.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_trust_is_kept_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(trust(None, dir.path()).unwrap(), Trust::SystemRoots);
        let fp = Fingerprint::of(b"ca");
        assert_eq!(
            trust(Some(Trust::Pinned(fp)), dir.path()).unwrap(),
            Trust::Pinned(fp)
        );
        assert_eq!(trust(None, dir.path()).unwrap(), Trust::Pinned(fp));
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        trust(Some(Trust::CaFile(ca.clone())), dir.path()).unwrap();
        assert_eq!(
            trust(None, dir.path()).unwrap(),
            Trust::CaFile(std::fs::canonicalize(&ca).unwrap())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_kept_copy_of_the_ca_is_found_relative_to_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let given = dir.path().join("given.pem");
        std::fs::write(&given, "not a certificate").unwrap();
        assert!(keep_ca_copy(&given, &state).is_err());
        assert!(!state.join("tls.json").exists());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&given, cert.pem()).unwrap();
        keep_ca_copy(&given, &state).unwrap();
        std::fs::remove_file(&given).unwrap();
        // Moved elsewhere: still found.
        let moved = dir.path().join("moved");
        std::fs::rename(&state, &moved).unwrap();
        assert_eq!(
            trust(None, &moved).unwrap(),
            Trust::CaFile(moved.join(CA_COPY))
        );
        assert_eq!(
            std::fs::read_to_string(moved.join(CA_COPY)).unwrap(),
            cert.pem()
        );
    }
}
