//! The server's address, in one place: `http://host:port` (a path prefix is kept) gives
//! the register URL and, with `ws://`, the WebSocket URL; `https://` maps to `wss://`
//! (see `transport.rs` for what is trusted).

use oca_proto::{CONNECT_PATH, REGISTER_PATH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    http: String,
    ws: String,
}

impl ServerUrl {
    pub fn parse(s: &str) -> anyhow::Result<ServerUrl> {
        let s = s.trim().trim_end_matches('/');
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            anyhow::anyhow!("the server URL {s:?} has no scheme (http://host:port)")
        })?;
        let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => "ws",
            "https" => "wss",
            other => anyhow::bail!("the server URL scheme {other:?} is not http or https"),
        };
        if rest.is_empty() || rest.starts_with('/') {
            anyhow::bail!("the server URL {s:?} has no host");
        }
        Ok(ServerUrl {
            http: format!("{}://{rest}", scheme.to_ascii_lowercase()),
            ws: format!("{ws_scheme}://{rest}"),
        })
    }

    /// Whether the server is reached over TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.http.starts_with("https://")
    }

    /// `POST` here to register.
    pub fn register_url(&self) -> String {
        format!("{}{REGISTER_PATH}", self.http)
    }

    /// The agent's WebSocket.
    pub fn connect_url(&self) -> String {
        format!("{}{CONNECT_PATH}", self.ws)
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_maps_to_ws_and_https_to_wss() {
        let u = ServerUrl::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(u.register_url(), "http://127.0.0.1:8080/agent/v1/register");
        assert_eq!(u.connect_url(), "ws://127.0.0.1:8080/agent/v1/connect");
        let u = ServerUrl::parse("HTTPS://oca.example/prefix").unwrap();
        assert_eq!(u.connect_url(), "wss://oca.example/prefix/agent/v1/connect");
        assert!(ServerUrl::parse("127.0.0.1:8080").is_err());
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("http://").is_err());
    }
}
