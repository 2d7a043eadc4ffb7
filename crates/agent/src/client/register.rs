//! Registration (the activation code for an identity, kept in the state dir) and the
//! reconnection backoff.

use super::{Config, AGENT_VERSION, OS_TYPE};
use crate::spool;
use crate::url::ServerUrl;
use anyhow::{bail, Context};
use oca_proto::{RegisterError, RegisterRequest, RegisterResponse};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// What registration gave the agent, kept in `<state_dir>/identity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub instance_id: String,
    pub token: String,
}

impl Identity {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("identity.json")
    }

    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Identity>> {
        let path = Identity::path(state_dir);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        spool::write_atomic(
            &Identity::path(state_dir),
            &serde_json::to_vec_pretty(self)?,
            0o600,
        )
        .context("saving the identity")
    }
}

/// Registers with the activation code; retries while the server cannot be reached or
/// throttles this address (for at most `patience`, when given), gives up when it
/// refuses. The identity is the caller's to keep.
pub(super) async fn register(
    config: &Config,
    url: &ServerUrl,
    transport: &crate::transport::Transport,
    hostname: &str,
    patience: Option<Duration>,
) -> anyhow::Result<Identity> {
    let (Some(activation_id), Some(activation_code)) =
        (config.activation_id.clone(), config.activation_code.clone())
    else {
        bail!(
            "{} does not exist: the agent is not registered; give --activation-id and --activation-code",
            Identity::path(&config.state_dir).display()
        );
    };
    let request = RegisterRequest {
        activation_id,
        activation_code,
        hostname: hostname.to_string(),
        os_type: OS_TYPE.to_string(),
        agent_version: AGENT_VERSION.to_string(),
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    };
    let client = &transport.http;
    let deadline = patience.map(|p| std::time::Instant::now() + p);
    let mut backoff = Backoff::new();
    loop {
        let failure = match client.post(url.register_url()).json(&request).send().await {
            Ok(resp) if resp.status().is_success() => {
                let r: RegisterResponse = resp.json().await.context("the register answer")?;
                tracing::info!(instance_id = %r.instance_id, "registered");
                return Ok(Identity {
                    instance_id: r.instance_id,
                    token: r.token,
                });
            }
            Ok(resp) if resp.status().is_client_error() => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                match serde_json::from_str::<RegisterError>(&body) {
                    // The server throttles this address (too many failed attempts from
                    // it, perhaps a neighbour's behind the same NAT): not a refusal of
                    // this code. Wait and try again.
                    Ok(e) if e.code == oca_domain::throttle::THROTTLING_CODE => {
                        format!("registration throttled ({status}): {}", e.message)
                    }
                    Ok(e) => bail!("registration refused ({status}): {}: {}", e.code, e.message),
                    Err(_) => bail!("registration refused ({status}): {body}"),
                }
            }
            Ok(resp) => format!("registration failed: {}", resp.status()),
            Err(e) => format!(
                "registration failed: {:#}",
                anyhow::Error::from(e).context(format!("reaching {url}"))
            ),
        };
        tracing::warn!("{failure}");
        let pause = backoff.next();
        if deadline.is_some_and(|d| std::time::Instant::now() + pause > d) {
            bail!("{failure}");
        }
        tokio::time::sleep(pause).await;
    }
}

/// Registers as `oca-agent install` does, before it writes anything: trusting only
/// what `config` gives (else the system's roots), trying for at most `patience`.
/// Nothing is kept: the identity is the caller's to save.
pub async fn register_once(config: &Config, patience: Duration) -> anyhow::Result<Identity> {
    let url = ServerUrl::parse(&config.server)?;
    let trust = config.trust.clone().unwrap_or(oca_tls::Trust::SystemRoots);
    let transport =
        crate::transport::Transport::new(&url, &trust, patience.min(super::CONNECT_TIMEOUT))?;
    let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
    register(config, &url, &transport, &hostname, Some(patience)).await
}

pub(super) fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Exponential backoff with jitter.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// A pause between half and all of the current step; the step doubles.
    pub(super) fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(BACKOFF_CAP);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= BACKOFF_START / 2 && first <= BACKOFF_START);
        for _ in 0..20 {
            assert!(b.next() <= BACKOFF_CAP);
        }
        assert_eq!(b.next, BACKOFF_CAP);
        let late = b.next();
        assert!(late >= BACKOFF_CAP / 2);
        b.reset();
        assert!(b.next() <= BACKOFF_START);
    }
}
