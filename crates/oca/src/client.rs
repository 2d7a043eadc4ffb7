//! A small signed client of the OCA API, for the CLI (ACS3-HMAC-SHA256, as the
//! official SDKs sign by default).

use crate::config::Credentials;
use anyhow::{Context, Result};
use oca_domain::time::now_millis;
use serde_json::Value;
use std::fmt;

pub const VERSION: &str = "2014-05-26";

/// An error the server answered with.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if !self.request_id.is_empty() {
            write!(f, " (HTTP {}, request {})", self.status, self.request_id)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

pub struct Client {
    http: reqwest::Client,
    creds: Credentials,
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RFC3986).to_string()
}

const RFC3986: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Client {
    pub fn new(creds: Credentials) -> Result<Client> {
        let mut builder = reqwest::Client::builder();
        if creds.endpoint.starts_with("https://") {
            let trust = match &creds.ca_file {
                Some(ca) => oca_tls::Trust::CaFile(ca.clone()),
                None => oca_tls::Trust::SystemRoots,
            };
            let config = oca_tls::client_config(&trust)
                .with_context(|| format!("trusting {trust} for {}", creds.endpoint))?;
            builder = builder.use_preconfigured_tls(config);
        }
        Ok(Client {
            http: builder.build()?,
            creds,
        })
    }

    /// Calls `action` with `params` (RegionId is added) and returns the JSON answer.
    pub async fn call(&self, action: &str, params: &[(&str, String)]) -> Result<Value> {
        let mut query: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        query.push(("RegionId".into(), self.creds.region_id.clone()));
        let url = reqwest::Url::parse(&self.creds.endpoint)
            .with_context(|| format!("bad endpoint {:?}", self.creds.endpoint))?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let nonce = oca_domain::ids::new_secret(32);
        let headers = oca_api::signature::sign_v3(
            "GET",
            "/",
            &query,
            b"",
            action,
            VERSION,
            &host,
            &self.creds.access_key_id,
            &self.creds.access_key_secret,
            now_millis(),
            &nonce,
        );
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let full = format!(
            "{}/?{}",
            self.creds.endpoint.trim_end_matches('/'),
            qs.join("&")
        );
        let mut req = self.http.get(&full);
        for (k, v) in headers {
            if !k.eq_ignore_ascii_case("host") {
                req = req.header(k, v);
            }
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the OCA server at {}", self.creds.endpoint))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .context("the server's answer is not JSON")?;
        if status >= 300 {
            let s = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            return Err(ApiFailure {
                status,
                code: s("Code"),
                message: s("Message"),
                request_id: s("RequestId"),
            }
            .into());
        }
        Ok(body)
    }
}
