//! A signed OpenAPI client (V3, `ACS3-HMAC-SHA256`) over one pooled HTTP client.

use anyhow::{anyhow, bail, Context, Result};
use oca_api::signature::{encode_pairs, sign_v3};
use serde_json::Value;
use std::time::Duration;

pub const REGION: &str = "cn-hangzhou";
pub const VERSION: &str = "2014-05-26";

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    host: String,
    key_id: String,
    secret: String,
}

/// A signed request, ready to send ([`ApiClient::sign`]).
#[derive(Debug, Clone)]
pub struct Signed {
    action: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// How the parameters travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// In the query string.
    Get,
    /// As an `application/x-www-form-urlencoded` body (for long parameter lists).
    PostForm,
}

impl ApiClient {
    /// A client of `server`, over TLS when it speaks TLS.
    pub fn of(server: &crate::server::Server) -> Result<ApiClient> {
        Self::new(
            server.port,
            server.client_tls()?,
            &server.data.key_id,
            &server.data.secret,
        )
    }

    pub fn new(
        port: u16,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        key_id: &str,
        secret: &str,
    ) -> Result<ApiClient> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64);
        let scheme = match tls {
            Some(config) => {
                builder = builder.use_preconfigured_tls((*config).clone());
                "https"
            }
            None => "http",
        };
        Ok(ApiClient {
            http: builder.build()?,
            base: format!("{scheme}://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            key_id: key_id.to_string(),
            secret: secret.to_string(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `action` in the bench's region; answers the JSON body of a 200, else an
    /// error with the server's answer.
    pub async fn call(
        &self,
        method: Method,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<Value> {
        let mut all: Vec<(String, String)> = Vec::with_capacity(params.len() + 1);
        all.push(("RegionId".into(), REGION.into()));
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.call_owned(method, action, &all).await
    }

    /// Like [`call`](Self::call) with exactly these parameters (RegionId included).
    pub async fn call_owned(
        &self,
        method: Method,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value> {
        let (status, text) = self.send(method, action, params).await?;
        if !status.is_success() {
            bail!("{action} answered HTTP {status}: {}", clip(&text));
        }
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("{action}: answer is not JSON ({e}): {}", clip(&text)))
    }

    /// Signs and sends a call; the HTTP status and the body.
    async fn send(
        &self,
        method: Method,
        action: &str,
        params: &[(String, String)],
    ) -> Result<(reqwest::StatusCode, String)> {
        self.send_signed(&self.sign(method, action, params)).await
    }

    /// A signed request, ready to send (again and again: for requests refused before
    /// their nonce is looked at, so that the bench's own signing does not compete with
    /// the server for the CPU).
    pub fn sign(&self, method: Method, action: &str, params: &[(String, String)]) -> Signed {
        let now = oca_domain::time::now_millis();
        let nonce = oca_domain::ids::new_secret(24);
        match method {
            Method::Get => {
                let headers = sign_v3(
                    "GET",
                    "/",
                    params,
                    b"",
                    action,
                    VERSION,
                    &self.host,
                    &self.key_id,
                    &self.secret,
                    now,
                    &nonce,
                );
                Signed {
                    action: action.to_string(),
                    method,
                    url: format!("{}/?{}", self.base, encode_pairs(params)),
                    headers,
                    body: Vec::new(),
                }
            }
            Method::PostForm => {
                let body = encode_pairs(params).into_bytes();
                let headers = sign_v3(
                    "POST",
                    "/",
                    &[],
                    &body,
                    action,
                    VERSION,
                    &self.host,
                    &self.key_id,
                    &self.secret,
                    now,
                    &nonce,
                );
                Signed {
                    action: action.to_string(),
                    method,
                    url: format!("{}/", self.base),
                    headers,
                    body,
                }
            }
        }
    }

    /// Sends a signed request; the HTTP status and the body.
    pub async fn send_signed(&self, signed: &Signed) -> Result<(reqwest::StatusCode, String)> {
        let action = &signed.action;
        let request = match signed.method {
            Method::Get => with_headers(self.http.get(&signed.url), signed.headers.clone()),
            Method::PostForm => with_headers(self.http.post(&signed.url), signed.headers.clone())
                .body(signed.body.clone()),
        };
        let resp = request
            .send()
            .await
            .with_context(|| format!("{action}: request failed"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{action}: reading the answer"))?;
        Ok((status, text))
    }

    /// Like [`call_owned`](Self::call_owned) for a request that should be refused:
    /// the HTTP status and the error's `Code`.
    pub async fn call_refused(
        &self,
        method: Method,
        action: &str,
        params: &[(String, String)],
    ) -> Result<(u16, String)> {
        self.refused(&self.sign(method, action, params)).await
    }

    /// [`call_refused`](Self::call_refused) of a request signed before.
    pub async fn refused(&self, signed: &Signed) -> Result<(u16, String)> {
        let action = &signed.action;
        let (status, text) = self.send_signed(signed).await?;
        if status.is_success() {
            bail!("{action} was not refused");
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{action}: answer is not JSON ({e}): {}", clip(&text)))?;
        Ok((
            status.as_u16(),
            body["Code"].as_str().unwrap_or("").to_string(),
        ))
    }

    /// CreateActivation for `count` (≤ 1000) instances: (ActivationId, ActivationCode).
    pub async fn create_activation(&self, name: &str, count: usize) -> Result<(String, String)> {
        let count = count.to_string();
        let body = self
            .call(
                Method::Get,
                "CreateActivation",
                &[("InstanceName", name), ("InstanceCount", &count)],
            )
            .await?;
        let id = str_field(&body, "ActivationId")?;
        let code = str_field(&body, "ActivationCode")?;
        Ok((id, code))
    }

    /// RunCommand of a shell script on these instances (as a form body); the InvokeId.
    pub async fn run_command(&self, script: &str, instance_ids: &[String]) -> Result<String> {
        let mut params: Vec<(String, String)> = Vec::with_capacity(instance_ids.len() + 4);
        params.push(("RegionId".into(), REGION.into()));
        params.push(("Type".into(), "RunShellScript".into()));
        params.push(("CommandContent".into(), script.into()));
        params.push(("ContentEncoding".into(), "PlainText".into()));
        for (n, id) in instance_ids.iter().enumerate() {
            params.push((format!("InstanceId.{}", n + 1), id.clone()));
        }
        let body = self
            .call_owned(Method::PostForm, "RunCommand", &params)
            .await?;
        str_field(&body, "InvokeId")
    }
}

fn with_headers(
    mut builder: reqwest::RequestBuilder,
    headers: Vec<(String, String)>,
) -> reqwest::RequestBuilder {
    for (k, v) in headers {
        // reqwest writes Host itself, with the same value.
        if !k.eq_ignore_ascii_case("host") {
            builder = builder.header(k, v);
        }
    }
    builder
}

pub fn str_field(body: &Value, name: &str) -> Result<String> {
    body[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no {name} in {}", clip(&body.to_string())))
}

fn clip(s: &str) -> String {
    if s.len() <= 600 {
        s.to_string()
    } else {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}
