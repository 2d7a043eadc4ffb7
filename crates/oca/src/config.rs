//! Where OCA keeps things on disk, and the credentials file the CLI reads.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_ACCOUNT: &str = "default";

/// `--data-dir`, else `$OCA_HOME`, else `~/.oca`.
pub fn data_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("OCA_HOME").map(PathBuf::from))
        .unwrap_or_else(default_data_dir)
}

/// `~/.oca`, where every command looks when told nothing else.
pub fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".oca")
}

/// What the CLI needs to call the API; written by `oca up` with mode 0600.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub endpoint: String,
    pub region_id: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    /// The CA to trust for an `https://` endpoint (the server's private CA); without
    /// it, the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials.json")
}

/// Writes a file readable by its owner only, atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl Credentials {
    /// `--config`, else `$OCA_CONFIG`, else the credentials file in the data directory.
    pub fn load(explicit: Option<&Path>) -> Result<Credentials> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("OCA_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| credentials_path(&data_dir(None)));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no credentials at {} (start a server with `oca up`, or pass --config)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a credentials file", path.display()))
    }
}
