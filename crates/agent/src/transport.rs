//! How the agent reaches its server: plain HTTP/WebSocket for an `http://` server, TLS
//! (`https://`, `wss://`) trusting what it was told — a CA file, a pinned
//! fingerprint, or the system's roots ([`oca_tls::Trust`]).
//!
//! What it was told at registration is kept in `<state-dir>/tls.json`, so a host
//! installed with `--fingerprint` goes on trusting that certificate when it restarts
//! without the flag; a flag given later replaces what is kept.

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

/// The trust in force: the one given now (kept for next time), else the one kept,
/// else the system's roots.
pub fn trust(given: Option<Trust>, state_dir: &Path) -> anyhow::Result<Trust> {
    let path = kept_path(state_dir);
    if let Some(trust) = given {
        let kept = match &trust {
            Trust::CaFile(p) => Some(Kept::CaFile(
                std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            )),
            Trust::Pinned(fp) => Some(Kept::Fingerprint(fp.to_string())),
            Trust::SystemRoots => None,
        };
        match kept {
            Some(k) => spool::write_atomic(&path, &serde_json::to_vec_pretty(&k)?, 0o600)
                .context("keeping the TLS trust")?,
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        return Ok(trust);
    }
    match std::fs::read(&path) {
        Ok(bytes) => {
            let kept: Kept = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(match kept {
                Kept::CaFile(p) => Trust::CaFile(p),
                Kept::Fingerprint(fp) => Trust::Pinned(Fingerprint::parse(&fp)?),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Trust::SystemRoots),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
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
}
