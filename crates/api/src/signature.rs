//! Request signatures of the vendor's RPC-style OpenAPI: checking them (server) and
//! making them (client), plus the replay cache.
//!
//! Two schemes are in use by the official SDKs for `Version=2014-05-26` calls:
//!
//! * **V1** (`SignatureVersion=1.0`, `SignatureMethod=HMAC-SHA1`): everything travels
//!   as parameters (query string and/or `application/x-www-form-urlencoded` body).
//!   `StringToSign = METHOD + "&%2F&" + enc(k1=v1&k2=v2...)` over all parameters but
//!   `Signature`, sorted by name, names and values encoded with [`percent_encode`];
//!   the signature is `base64(hmac_sha1(secret + "&", StringToSign))`. The SDKs send
//!   this when configured with `signature_algorithm = "v2"` (sic).
//! * **V3** (`ACS3-HMAC-SHA256`, the SDKs' default): the action, version, time and
//!   nonce travel in `x-acs-*` headers, the business parameters in the query string
//!   (and/or a form body), and `Authorization: ACS3-HMAC-SHA256
//!   Credential=<id>,SignedHeaders=<a;b;c>,Signature=<hex>`. The canonical request is
//!   `METHOD\nURI\nQUERY\nHEADERS\nSIGNED_HEADERS\nhex(sha256(body))`; the signature is
//!   `hex(hmac_sha256(secret, "ACS3-HMAC-SHA256\n" + hex(sha256(canonical request))))`.
//!
//! The server calls [`claim`] (which scheme, which access key, which nonce, what time:
//! no secret needed), looks the key up, calls [`verify`], and finally records the nonce
//! in a [`NonceCache`]. The client side is [`sign_v1`] and [`sign_v3`].
//!
//! Error codes, messages and HTTP statuses are the vendor's; see [`SignatureError`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

/// The V3 algorithm name, as it opens the `Authorization` header.
pub const ACS3_HMAC_SHA256: &str = "ACS3-HMAC-SHA256";
/// The only V1 `SignatureMethod`.
pub const HMAC_SHA1: &str = "HMAC-SHA1";
/// The only V1 `SignatureVersion`.
pub const SIGNATURE_VERSION_1: &str = "1.0";
/// The longest `SignatureNonce` / `x-acs-signature-nonce` taken, in bytes. The SDKs
/// send a UUID (36 characters) or 32 hex digits; a nonce is remembered for half an hour,
/// so its size is what a caller can make the server keep.
pub const MAX_NONCE_LEN: usize = 128;
/// The vendor's limit on the distance between a request's time and the server's.
pub const DEFAULT_MAX_SKEW_MS: i64 = 15 * 60 * 1000;
/// `hex(sha256(""))`, the `x-acs-content-sha256` of an empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The V3 headers this module reads.
pub const H_ACTION: &str = "x-acs-action";
pub const H_VERSION: &str = "x-acs-version";
pub const H_DATE: &str = "x-acs-date";
pub const H_NONCE: &str = "x-acs-signature-nonce";
pub const H_CONTENT_SHA256: &str = "x-acs-content-sha256";

/// Headers that, when present in a V3 request, must be covered by its signature,
/// because the server acts on them (the vendor's rule is stricter: every common
/// header present must be signed; the SDKs sign every header they set).
const MUST_SIGN_IF_PRESENT: [&str; 7] = [
    H_ACTION,
    H_VERSION,
    H_DATE,
    H_NONCE,
    H_CONTENT_SHA256,
    "x-acs-security-token",
    "x-acs-accesskey-id",
];

/// RFC 3986 unreserved characters stay, every other byte becomes `%XX` (upper-case
/// hex): so space is `%20`, `*` is `%2A`, `~` stays, `/` is `%2F`. This is what the
/// SDKs' `quote(s, safe='~')` produces.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Everything about an HTTP request the schemes look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `"GET"` / `"POST"`.
    pub method: &'a str,
    /// The raw path, e.g. `"/"`.
    pub path: &'a str,
    /// The raw (still percent-encoded) query string, `""` if none.
    pub raw_query: &'a str,
    pub headers: &'a axum::http::HeaderMap,
    pub body: &'a [u8],
}

/// Which scheme signed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `SignatureVersion=1.0`, `HMAC-SHA1` over the parameters.
    V1,
    /// `ACS3-HMAC-SHA256` in the `Authorization` header.
    V3,
}

/// Who claims to have signed a request, and when; learnt without the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub scheme: Scheme,
    pub access_key_id: String,
    pub nonce: String,
    /// The request's `Timestamp` / `x-acs-date`, in Unix milliseconds.
    pub timestamp_ms: i64,
}

/// Why a request's signature is refused. Each variant knows the vendor's `Code`,
/// a `Message` in the vendor's words (with details that help the caller), and the
/// HTTP status.
///
/// Sources for codes, messages and statuses:
/// * the vendor's "client common error codes" table for control-plane OpenAPIs
///   (developer.aliyun.com/ask/278265): `Missing{ParameterName}` /
///   "{ParameterName} is mandatory for this action." 400,
///   `InvalidAccessKeyId.NotFound` / "Specified access key is not found." 404,
///   `InvalidAccessKeyId.Inactive` / "Specified access key is disabled." 400,
///   `InvalidTimeStamp.Format` / "Specified time stamp or date value is not well
///   formatted." 400, `InvalidTimeStamp.Expired` / "Specified time stamp or date value
///   is expired." 400, `SignatureNonceUsed` / "Specified signature nonce was used
///   already." 400, `InvalidSignatureMethod` / "Specified signature method is not
///   valid." 400, `SignatureDoesNotMatch` / "Specified signature is not matched with
///   our calculation." 400, `Invalid{ParameterName}` / "Specified parameter
///   {ParameterName} is not valid." 400;
/// * real gateway answers quoted in SDK issues and tests: `SignatureDoesNotMatch`
///   messages end in " server string to sign is:<StringToSign>"; `IncompleteSignature`
///   is "The request signature does not conform to Aliyun standards. ..." (400, also in
///   the vendor's PolarDB client error table); `MissingTimestamp` / "Timestamp is
///   mandatory for this action." (an STS answer quoted in aliyun/credentials-python#27).
///
/// `InvalidSignatureNonce` (a nonce longer than [`MAX_NONCE_LEN`]) follows the same
/// `Invalid{ParameterName}` pattern.
///
/// Guessed (no vendor source found): the code for an absent V3 *header*; we use the
/// generic `MissingParameter` (400) with the vendor's generic "The input parameter
/// ... is not supplied." wording. `InvalidSignatureVersion` follows the documented
/// `Invalid{ParameterName}` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// A V1 parameter is absent (`AccessKeyId`, `Signature`, `SignatureNonce`,
    /// `Timestamp`): code `Missing{Name}`.
    MissingParameter(&'static str),
    /// A V3 header is absent (`x-acs-date`, `x-acs-signature-nonce`): code
    /// `MissingParameter`.
    MissingHeader(&'static str),
    /// The signature material is malformed (e.g. an `Authorization` header that does
    /// not parse, or a header the server acts on is left unsigned); says what.
    IncompleteSignature(String),
    /// A `SignatureMethod` / V3 algorithm other than HMAC-SHA1 / ACS3-HMAC-SHA256.
    InvalidSignatureMethod(String),
    /// A `SignatureVersion` other than `1.0`.
    InvalidSignatureVersion(String),
    /// `Timestamp` / `x-acs-date` does not parse; holds the value.
    InvalidTimeStampFormat(String),
    /// The request's time is too far from the server's.
    InvalidTimeStampExpired {
        timestamp: String,
        server_time: String,
        max_skew_ms: i64,
    },
    /// The nonce is longer than [`MAX_NONCE_LEN`] bytes.
    InvalidSignatureNonce(usize),
    /// The nonce was seen for this access key within the replay window.
    SignatureNonceUsed,
    /// The request is stamped before the server started: its nonce may have been used
    /// with the previous process, whose memory of nonces is gone. (Same code.)
    SignedBeforeStart,
    /// No such access key.
    InvalidAccessKeyIdNotFound,
    /// The access key exists but is disabled.
    InvalidAccessKeyIdInactive,
    /// The signature is not the server's; carries the server's string to sign (and, for
    /// V3, the canonical request, for logs; it is not part of the wire message).
    SignatureDoesNotMatch {
        string_to_sign: String,
        canonical_request: Option<String>,
    },
}

impl SignatureError {
    /// The vendor's error `Code`.
    pub fn code(&self) -> &'static str {
        use SignatureError::*;
        match self {
            MissingParameter(name) => match *name {
                "AccessKeyId" => "MissingAccessKeyId",
                "Signature" => "MissingSignature",
                "SignatureNonce" => "MissingSignatureNonce",
                "Timestamp" => "MissingTimestamp",
                "SignatureMethod" => "MissingSignatureMethod",
                "SignatureVersion" => "MissingSignatureVersion",
                _ => "MissingParameter",
            },
            MissingHeader(_) => "MissingParameter",
            IncompleteSignature(_) => "IncompleteSignature",
            InvalidSignatureMethod(_) => "InvalidSignatureMethod",
            InvalidSignatureVersion(_) => "InvalidSignatureVersion",
            InvalidTimeStampFormat(_) => "InvalidTimeStamp.Format",
            InvalidTimeStampExpired { .. } => "InvalidTimeStamp.Expired",
            InvalidSignatureNonce(_) => "InvalidSignatureNonce",
            SignatureNonceUsed | SignedBeforeStart => "SignatureNonceUsed",
            InvalidAccessKeyIdNotFound => "InvalidAccessKeyId.NotFound",
            InvalidAccessKeyIdInactive => "InvalidAccessKeyId.Inactive",
            SignatureDoesNotMatch { .. } => "SignatureDoesNotMatch",
        }
    }

    /// The wire `Message`: the vendor's sentence, then what helps the caller.
    pub fn message(&self) -> String {
        use SignatureError::*;
        match self {
            MissingParameter(name) => format!("{name} is mandatory for this action."),
            MissingHeader(name) => format!(
                "The input parameter \u{201c}{name}\u{201d} that is mandatory for processing this request is not supplied."
            ),
            IncompleteSignature(why) => {
                format!("The request signature does not conform to Aliyun standards. {why}")
            }
            InvalidSignatureMethod(got) => format!(
                "Specified signature method is not valid. Use {HMAC_SHA1} (SignatureVersion {SIGNATURE_VERSION_1}) or {ACS3_HMAC_SHA256}; got \u{201c}{got}\u{201d}."
            ),
            InvalidSignatureVersion(got) => format!(
                "Specified parameter SignatureVersion is not valid. Use {SIGNATURE_VERSION_1}; got \u{201c}{got}\u{201d}."
            ),
            InvalidTimeStampFormat(got) => format!(
                "Specified time stamp or date value is not well formatted. Use UTC ISO 8601, e.g. 2018-01-01T12:00:00Z; got \u{201c}{got}\u{201d}."
            ),
            InvalidTimeStampExpired {
                timestamp,
                server_time,
                max_skew_ms,
            } => format!(
                "Specified time stamp or date value is expired. The request time {timestamp} is more than {} seconds away from the server time {server_time}; check the client's clock.",
                max_skew_ms / 1000
            ),
            InvalidSignatureNonce(len) => format!(
                "Specified parameter SignatureNonce is not valid: it has {len} bytes, at most {MAX_NONCE_LEN} are taken (a UUID, as the SDKs send, has 36)."
            ),
            SignatureNonceUsed => "Specified signature nonce was used already.".to_string(),
            SignedBeforeStart => "Specified signature nonce was used already, or may have been: the request is stamped before the server started, and nonces used before then are not remembered. Sign the request again (and check the client's clock if this persists).".to_string(),
            InvalidAccessKeyIdNotFound => "Specified access key is not found.".to_string(),
            InvalidAccessKeyIdInactive => "Specified access key is disabled.".to_string(),
            SignatureDoesNotMatch { string_to_sign, .. } => format!(
                "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
            ),
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            SignatureError::InvalidAccessKeyIdNotFound => 404,
            _ => 400,
        }
    }

    /// For V3 mismatches, the server's canonical request (worth logging at debug level;
    /// the client can print its own to compare).
    pub fn canonical_request(&self) -> Option<&str> {
        match self {
            SignatureError::SignatureDoesNotMatch {
                canonical_request, ..
            } => canonical_request.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for SignatureError {}

// ---------------------------------------------------------------------------------
// Encoding helpers
// ---------------------------------------------------------------------------------

/// The vendor's percent-encoding of a name or value (UTF-8 bytes; RFC 3986 unreserved
/// kept; space `%20`, `*` `%2A`, `~` kept).
pub fn percent_encode(s: &str) -> String {
    percent_encode_bytes(s.as_bytes())
}

fn percent_encode_bytes(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, UNRESERVED).to_string()
}

/// `k=v&k=v` with [`percent_encode`]d names and values, in the given order: a query
/// string or form body that decodes back to exactly `pairs`.
pub fn encode_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Decodes one `application/x-www-form-urlencoded` component to bytes: `+` is a
/// space, `%XX` a byte, a malformed `%` stays literal.
fn form_decode(s: &str) -> Vec<u8> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).collect()
}

/// `yyyy-MM-ddTHH:mm:ssZ`, the vendor's time format.
pub fn format_timestamp(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses the vendor's `yyyy-MM-ddTHH:mm:ssZ`; also accepts any RFC 3339 time (with
/// fractional seconds or an offset) as the vendor's gateway does for ISO 8601.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ") {
        return Some(t.and_utc().timestamp_millis());
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The first non-empty value of a parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// A header's value as text: UTF-8 if it is, else Latin-1 (what Python clients put on
/// the wire for non-ASCII text).
fn header_text(v: &axum::http::HeaderValue) -> String {
    let b = v.as_bytes();
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.iter().map(|&c| c as char).collect(),
    }
}

fn header_first(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(header_text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The action and version a request names: V1 in the `Action` / `Version`
/// parameters, V3 in the `x-acs-action` / `x-acs-version` headers (the SDKs send no
/// `Action` parameter in V3). Parameters win when both are present. The headers are
/// read only when the request carries a V3 `Authorization`, because only V3 signs them:
/// in a V1 request an `x-acs-action` header could be changed by anyone.
pub fn action_and_version(
    parts: &RequestParts,
    params: &[(String, String)],
) -> (Option<String>, Option<String>) {
    let v3 = matches!(parse_v3_authorization(parts.headers), Ok(Some(_)));
    let from_header = |name: &str| {
        if v3 {
            header_first(parts.headers, name)
        } else {
            None
        }
    };
    let action = param(params, "Action")
        .map(str::to_string)
        .or_else(|| from_header(H_ACTION));
    let version = param(params, "Version")
        .map(str::to_string)
        .or_else(|| from_header(H_VERSION));
    (action, version)
}

// ---------------------------------------------------------------------------------
// Claim and verify
// ---------------------------------------------------------------------------------

/// The parsed `Authorization: ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct V3Authorization {
    credential: String,
    /// Lower-cased, in the order given.
    signed_headers: Vec<String>,
    signature: String,
}

/// Parses the `Authorization` header if it is a V3 one. `Ok(None)`: no
/// `Authorization`, or one that does not look like the vendor's.
fn parse_v3_authorization(
    headers: &axum::http::HeaderMap,
) -> Result<Option<V3Authorization>, SignatureError> {
    let Some(raw) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let raw = header_text(raw);
    let raw = raw.trim();
    let (algorithm, rest) = match raw.split_once(char::is_whitespace) {
        Some((a, r)) => (a, r.trim()),
        None => (raw, ""),
    };
    if !algorithm.starts_with("ACS3-") {
        return Ok(None);
    }
    if algorithm != ACS3_HMAC_SHA256 {
        return Err(SignatureError::InvalidSignatureMethod(
            algorithm.to_string(),
        ));
    }
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for item in rest.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(SignatureError::IncompleteSignature(format!(
                "The Authorization header item \u{201c}{item}\u{201d} is not of the form Name=Value."
            )));
        };
        let slot = match k.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        if slot.is_some() {
            return Err(SignatureError::IncompleteSignature(format!(
                "The Authorization header names {} twice.",
                k.trim()
            )));
        }
        *slot = Some(v.trim().to_string());
    }
    let need = |v: Option<String>, what: &str| {
        v.filter(|s| !s.is_empty()).ok_or_else(|| {
            SignatureError::IncompleteSignature(format!(
                "The Authorization header has no {what}; expected \u{201c}{ACS3_HMAC_SHA256} Credential=<AccessKeyId>,SignedHeaders=<h1;h2>,Signature=<hex>\u{201d}."
            ))
        })
    };
    let credential = need(credential, "Credential")?;
    let signed = need(signed_headers, "SignedHeaders")?;
    let signature = need(signature, "Signature")?;
    let mut signed_headers: Vec<String> = Vec::new();
    for h in signed.split(';') {
        let h = h.trim().to_ascii_lowercase();
        if h.is_empty() {
            continue;
        }
        if signed_headers.contains(&h) {
            return Err(SignatureError::IncompleteSignature(format!(
                "SignedHeaders names {h} twice."
            )));
        }
        signed_headers.push(h);
    }
    Ok(Some(V3Authorization {
        credential,
        signed_headers,
        signature,
    }))
}

/// Finds which scheme signed the request and who claims to have signed it, without the
/// secret. `params` are the decoded request parameters (query and form body merged).
pub fn claim(parts: &RequestParts, params: &[(String, String)]) -> Result<Claim, SignatureError> {
    if let Some(auth) = parse_v3_authorization(parts.headers)? {
        return claim_v3(parts, &auth);
    }
    let has_v1 = [
        "Signature",
        "AccessKeyId",
        "SignatureNonce",
        "SignatureMethod",
    ]
    .iter()
    .any(|name| params.iter().any(|(k, _)| k == name));
    if has_v1 {
        return claim_v1(params);
    }
    if let Some(raw) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let raw = header_text(raw);
        let algorithm = raw.split_whitespace().next().unwrap_or("").to_string();
        return Err(SignatureError::InvalidSignatureMethod(algorithm));
    }
    Err(SignatureError::MissingParameter("AccessKeyId"))
}

fn check_nonce(nonce: &str) -> Result<(), SignatureError> {
    if nonce.len() > MAX_NONCE_LEN {
        return Err(SignatureError::InvalidSignatureNonce(nonce.len()));
    }
    Ok(())
}

/// Refuses an `Authorization` header of the V3 family that cannot be read (an unknown
/// `ACS3-` algorithm, missing items): what is wrong with the signature comes before
/// anything read from the headers it should sign, such as the action.
pub fn check_authorization(parts: &RequestParts) -> Result<(), SignatureError> {
    parse_v3_authorization(parts.headers).map(|_| ())
}

fn claim_v1(params: &[(String, String)]) -> Result<Claim, SignatureError> {
    let access_key_id =
        param(params, "AccessKeyId").ok_or(SignatureError::MissingParameter("AccessKeyId"))?;
    param(params, "Signature").ok_or(SignatureError::MissingParameter("Signature"))?;
    // The vendor defaults an absent SignatureMethod / SignatureVersion.
    if let Some(m) = params.iter().find(|(k, _)| k == "SignatureMethod") {
        if m.1 != HMAC_SHA1 {
            return Err(SignatureError::InvalidSignatureMethod(m.1.clone()));
        }
    }
    if let Some(v) = params.iter().find(|(k, _)| k == "SignatureVersion") {
        if v.1 != SIGNATURE_VERSION_1 {
            return Err(SignatureError::InvalidSignatureVersion(v.1.clone()));
        }
    }
    // `SignatureType=BEARERTOKEN` is a bearer-token call, which this server does not take.
    if let Some(t) = param(params, "SignatureType") {
        return Err(SignatureError::InvalidSignatureMethod(format!(
            "SignatureType={t}"
        )));
    }
    let nonce = param(params, "SignatureNonce")
        .ok_or(SignatureError::MissingParameter("SignatureNonce"))?;
    check_nonce(nonce)?;
    let ts = param(params, "Timestamp").ok_or(SignatureError::MissingParameter("Timestamp"))?;
    let timestamp_ms = parse_timestamp(ts)
        .ok_or_else(|| SignatureError::InvalidTimeStampFormat(ts.to_string()))?;
    Ok(Claim {
        scheme: Scheme::V1,
        access_key_id: access_key_id.to_string(),
        nonce: nonce.to_string(),
        timestamp_ms,
    })
}

fn claim_v3(parts: &RequestParts, auth: &V3Authorization) -> Result<Claim, SignatureError> {
    let date = header_first(parts.headers, H_DATE).ok_or(SignatureError::MissingHeader(H_DATE))?;
    let nonce =
        header_first(parts.headers, H_NONCE).ok_or(SignatureError::MissingHeader(H_NONCE))?;
    check_nonce(&nonce)?;
    for name in MUST_SIGN_IF_PRESENT {
        if parts.headers.contains_key(name) && !auth.signed_headers.iter().any(|h| h == name) {
            return Err(SignatureError::IncompleteSignature(format!(
                "The header {name} is present but not in SignedHeaders; it must be signed."
            )));
        }
    }
    if !parts.body.is_empty()
        && parts.headers.contains_key(axum::http::header::CONTENT_TYPE)
        && !auth.signed_headers.iter().any(|h| h == "content-type")
    {
        return Err(SignatureError::IncompleteSignature(
            "The request has a body but content-type is not in SignedHeaders; it must be signed."
                .to_string(),
        ));
    }
    let timestamp_ms =
        parse_timestamp(&date).ok_or(SignatureError::InvalidTimeStampFormat(date))?;
    Ok(Claim {
        scheme: Scheme::V3,
        access_key_id: auth.credential.clone(),
        nonce,
        timestamp_ms,
    })
}

/// Checks the signature with the key's secret, and the timestamp against `now_ms`
/// (at most `max_skew_ms` either way). Does not touch the nonce cache.
pub fn verify(
    parts: &RequestParts,
    params: &[(String, String)],
    claim: &Claim,
    secret: &str,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<(), SignatureError> {
    match claim.scheme {
        Scheme::V1 => verify_v1(parts, params, secret)?,
        Scheme::V3 => verify_v3(parts, secret)?,
    }
    if (now_ms - claim.timestamp_ms).abs() > max_skew_ms {
        return Err(SignatureError::InvalidTimeStampExpired {
            timestamp: format_timestamp(claim.timestamp_ms),
            server_time: format_timestamp(now_ms),
            max_skew_ms,
        });
    }
    Ok(())
}

/// The V1 string to sign over `params` (the `Signature` parameter is left out).
pub fn v1_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    // Sorted by the raw names' bytes (the SDKs sort their names as strings, which is
    // the same order), then by value should a name repeat.
    let mut sorted: Vec<&(String, String)> =
        params.iter().filter(|(k, _)| k != "Signature").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    let canonical = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode("/"),
        percent_encode(&canonical)
    )
}

/// The V1 signature: `base64(hmac_sha1(secret + "&", string_to_sign))`.
pub fn v1_signature(secret: &str, string_to_sign: &str) -> String {
    BASE64.encode(hmac_sha1(
        format!("{secret}&").as_bytes(),
        string_to_sign.as_bytes(),
    ))
}

fn verify_v1(
    parts: &RequestParts,
    params: &[(String, String)],
    secret: &str,
) -> Result<(), SignatureError> {
    let string_to_sign = v1_string_to_sign(parts.method, params);
    let mismatch = || SignatureError::SignatureDoesNotMatch {
        string_to_sign: string_to_sign.clone(),
        canonical_request: None,
    };
    let given = param(params, "Signature").ok_or(SignatureError::MissingParameter("Signature"))?;
    // A `+` a client forgot to escape arrives as a space.
    let given = BASE64
        .decode(given.trim())
        .or_else(|_| BASE64.decode(given.trim().replace(' ', "+")))
        .map_err(|_| mismatch())?;
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&given).map_err(|_| mismatch())
}

/// One query parameter, decoded to bytes.
type RawPair = (Vec<u8>, Vec<u8>);

fn decode_query(raw_query: &str) -> Vec<RawPair> {
    raw_query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(item), Vec::new()),
        })
        .collect()
}

/// The V3 canonical query string: sorted by name (then value), each value encoded
/// with [`percent_encode`]. The vendor's documentation encodes the names too; the
/// Python SDK does not (`encode_names = false`); the two agree for every ordinary
/// parameter name (letters, digits, `.`, `-`, `_`).
fn v3_canonical_query(pairs: &[RawPair], encode_names: bool) -> String {
    let mut sorted: Vec<&RawPair> = pairs.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| {
            let name = if encode_names {
                percent_encode_bytes(k)
            } else {
                String::from_utf8_lossy(k).into_owned()
            };
            format!("{name}={}", percent_encode_bytes(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The V3 canonical query of a raw (still percent-encoded) query string, as [`verify`]
/// builds it: names encoded as the vendor documents (`encode_names`) or left as the
/// Python SDK leaves them. Public for the fuzz targets, which check that two queries
/// with one canonical form decode to the same parameters.
pub fn v3_canonical_query_of(raw_query: &str, encode_names: bool) -> String {
    v3_canonical_query(&decode_query(raw_query), encode_names)
}

/// `name:v1,v2\n` for each signed header, values trimmed and sorted.
fn v3_canonical_headers(headers: &axum::http::HeaderMap, signed: &[String]) -> String {
    let mut out = String::new();
    for name in signed {
        let mut values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| header_text(v).trim().to_string())
            .collect();
        values.sort();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

/// The V3 canonical request.
fn v3_canonical_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &[String],
    hashed_payload: &str,
) -> String {
    let uri = if path.is_empty() { "/" } else { path };
    format!(
        "{}\n{uri}\n{canonical_query}\n{canonical_headers}\n{}\n{hashed_payload}",
        method.to_ascii_uppercase(),
        signed_headers.join(";")
    )
}

fn v3_string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ACS3_HMAC_SHA256}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn verify_v3(parts: &RequestParts, secret: &str) -> Result<(), SignatureError> {
    let auth = parse_v3_authorization(parts.headers)?.ok_or_else(|| {
        SignatureError::IncompleteSignature(
            "The Authorization header is missing or not an ACS3 one.".to_string(),
        )
    })?;
    let given = hex::decode(auth.signature.to_ascii_lowercase()).ok();
    let query = decode_query(parts.raw_query);
    let headers = v3_canonical_headers(parts.headers, &auth.signed_headers);
    // The payload hash is always recomputed from the body that arrived, whatever
    // `x-acs-content-sha256` says: a changed body can never verify.
    let payload = sha256_hex(parts.body);
    let build = |encode_names: bool| {
        let cq = v3_canonical_query(&query, encode_names);
        v3_canonical_request(
            parts.method,
            parts.path,
            &cq,
            &headers,
            &auth.signed_headers,
            &payload,
        )
    };
    let documented = build(true);
    let mut candidates = vec![documented.clone()];
    let sdk_style = build(false);
    if sdk_style != documented {
        candidates.push(sdk_style);
    }
    if let Some(given) = &given {
        for canonical in &candidates {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes a key of any length");
            mac.update(v3_string_to_sign(canonical).as_bytes());
            if mac.verify_slice(given).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::SignatureDoesNotMatch {
        string_to_sign: v3_string_to_sign(&documented),
        canonical_request: Some(documented),
    })
}

// ---------------------------------------------------------------------------------
// Replay cache
// ---------------------------------------------------------------------------------

/// Remembers nonces per access key until they are older than the window; thread-safe.
///
/// Use a window of twice the allowed clock skew: a request stamped `t` passes the time
/// check from `t - skew` to `t + skew`, so a replay may come up to `2 * skew` after the
/// first use. Memory is bounded per key: a nonce is kept as a 128-bit digest (whatever
/// its length, itself capped at [`MAX_NONCE_LEN`]), entries older than the window go
/// as new ones come, and a key with more than `per_key` nonces in the window forgets
/// its own oldest — never another key's, so one busy (or hostile) tenant cannot make
/// the server forget another's nonces. Only keys whose signatures verified get here, so
/// the number of keys is the number of real keys. The server keeps the nonces of
/// requests that change something in its store as well (see `auth.rs`), so a forgotten
/// nonce can only replay a read.
pub struct NonceCache {
    window_ms: i64,
    per_key: usize,
    inner: Mutex<NonceInner>,
}

#[derive(Default)]
struct NonceInner {
    keys: HashMap<String, KeyNonces>,
    /// Inserts since the last sweep of idle keys.
    since_sweep: usize,
}

#[derive(Default)]
struct KeyNonces {
    /// Digest → when it was first seen.
    seen: HashMap<u128, i64>,
    /// The same entries, oldest first.
    order: VecDeque<(i64, u128)>,
}

impl KeyNonces {
    fn expire(&mut self, now_ms: i64, window_ms: i64) {
        while let Some(&(at, digest)) = self.order.front() {
            if now_ms - at < window_ms {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&digest) == Some(&at) {
                self.seen.remove(&digest);
            }
        }
    }
}

/// A nonce's digest: the first 128 bits of its SHA-256.
pub fn nonce_digest(nonce: &str) -> u128 {
    let d = Sha256::digest(nonce.as_bytes());
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}

impl NonceCache {
    /// The default cap on nonces remembered per key: at the vendor's 15-minute skew
    /// (a 30-minute window), 55 requests a second, sustained, from one key.
    pub const DEFAULT_PER_KEY: usize = 100_000;

    pub fn new(window_ms: i64) -> Self {
        Self::with_per_key(window_ms, Self::DEFAULT_PER_KEY)
    }

    pub fn with_per_key(window_ms: i64, per_key: usize) -> Self {
        NonceCache {
            window_ms,
            per_key: per_key.max(1),
            inner: Mutex::new(NonceInner::default()),
        }
    }

    /// Whether this nonce was seen for this key within the window (without
    /// remembering it).
    pub fn seen(&self, access_key_id: &str, nonce: &str, now_ms: i64) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .keys
            .get(access_key_id)
            .and_then(|k| k.seen.get(&nonce_digest(nonce)))
            .is_some_and(|&at| now_ms - at < self.window_ms)
    }

    /// `false` if this nonce was seen for this key within the window; otherwise
    /// remembers it and returns `true`.
    pub fn check_and_insert(&self, access_key_id: &str, nonce: &str, now_ms: i64) -> bool {
        let digest = nonce_digest(nonce);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.since_sweep += 1;
        if inner.since_sweep >= 4096 {
            // Keys that went quiet keep their old entries until they are used again;
            // now and then every key is swept, and emptied keys are dropped.
            inner.since_sweep = 0;
            let window = self.window_ms;
            inner.keys.retain(|_, k| {
                k.expire(now_ms, window);
                !k.order.is_empty()
            });
        }
        let key = inner.keys.entry(access_key_id.to_string()).or_default();
        key.expire(now_ms, self.window_ms);
        if let Some(&at) = key.seen.get(&digest) {
            if now_ms - at < self.window_ms {
                return false;
            }
        }
        key.seen.insert(digest, now_ms);
        key.order.push_back((now_ms, digest));
        if key.order.len() > self.per_key {
            let (at, old) = key.order.pop_front().expect("longer than the cap");
            if key.seen.get(&old) == Some(&at) {
                key.seen.remove(&old);
            }
        }
        true
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.keys.values().map(|k| k.seen.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An upper estimate of the memory the remembered nonces take, in bytes.
    pub fn approx_bytes(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .keys
            .iter()
            .map(|(id, k)| id.len() + 128 + k.seen.capacity() * 40 + k.order.capacity() * 32)
            .sum()
    }
}

// ---------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------

/// Signs an RPC call with V1: replaces any signing parameters in `params` with
/// `SignatureMethod`, `SignatureVersion`, `SignatureNonce`, `Timestamp`, `AccessKeyId`,
/// and appends `Signature`. Send `params` as the query string (see [`encode_pairs`])
/// or a form body, with the same HTTP `method`.
pub fn sign_v1(
    method: &str,
    params: &mut Vec<(String, String)>,
    access_key_id: &str,
    secret: &str,
    now_ms: i64,
    nonce: &str,
) {
    const OURS: [&str; 6] = [
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "AccessKeyId",
        "Signature",
    ];
    params.retain(|(k, _)| !OURS.contains(&k.as_str()));
    params.push(("SignatureMethod".into(), HMAC_SHA1.into()));
    params.push(("SignatureVersion".into(), SIGNATURE_VERSION_1.into()));
    params.push(("SignatureNonce".into(), nonce.into()));
    params.push(("Timestamp".into(), format_timestamp(now_ms)));
    params.push(("AccessKeyId".into(), access_key_id.into()));
    let sts = v1_string_to_sign(method, params);
    params.push(("Signature".into(), v1_signature(secret, &sts)));
}

/// Signs an RPC call with V3 and returns the headers to send: `host`, `x-acs-action`,
/// `x-acs-version`, `x-acs-date`, `x-acs-signature-nonce`, `x-acs-content-sha256`,
/// `content-type: application/x-www-form-urlencoded` when `body` is not empty, and
/// `authorization`; all of them signed. Send `query` as the query string, encoded with
/// [`encode_pairs`], and `body` byte for byte.
#[allow(clippy::too_many_arguments)]
pub fn sign_v3(
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    action: &str,
    version: &str,
    host: &str,
    access_key_id: &str,
    secret: &str,
    now_ms: i64,
    nonce: &str,
) -> Vec<(String, String)> {
    let payload = sha256_hex(body);
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.trim().into()),
        (H_ACTION.into(), action.trim().into()),
        (H_VERSION.into(), version.trim().into()),
        (H_DATE.into(), format_timestamp(now_ms)),
        (H_NONCE.into(), nonce.trim().into()),
        (H_CONTENT_SHA256.into(), payload.clone()),
    ];
    if !body.is_empty() {
        headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    let mut sorted: Vec<&(String, String)> = headers.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let signed: Vec<String> = sorted.iter().map(|(k, _)| k.clone()).collect();
    let canonical_headers: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let pairs: Vec<RawPair> = query
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    let canonical = v3_canonical_request(
        method,
        path,
        &v3_canonical_query(&pairs, true),
        &canonical_headers,
        &signed,
        &payload,
    );
    let signature = hex::encode(hmac_sha256(
        secret.as_bytes(),
        v3_string_to_sign(&canonical).as_bytes(),
    ));
    headers.push((
        "authorization".into(),
        format!(
            "{ACS3_HMAC_SHA256} Credential={access_key_id},SignedHeaders={},Signature={signature}",
            signed.join(";")
        ),
    ));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    /// A request as a local HTTP server saw it.
    struct Captured {
        now_ms: i64,
        method: &'static str,
        path: &'static str,
        raw_query: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
    }

    // Captured from the official Python SDK (alibabacloud_ecs20140526 7.11.8,
    // alibabacloud_tea_openapi 0.4.6, darabonba-core 1.0.9) pointed at a local server:
    // DescribeInvocations and RunCommand through the ECS client, then RunCommand with a
    // form body and DescribeInvocations with GET through the generic `call_api`; first
    // with the default V3 signature, then with `Config.signature_algorithm = "v2"` (V1).
    const SDK_ACCESS_KEY_ID: &str = "LTAI5tTestAccessKeyId";
    const SDK_SECRET: &str = "TestSecret+/=0123456789abcdef";
    const V3_DESCRIBE_INVOCATIONS: Captured = Captured {
        now_ms: 1795423810896,
        method: "POST",
        path: "/",
        raw_query: "CommandType=RunShellScript&IncludeOutput=True&InvokeStatus=Running&PageSize=10&RegionId=cn-hangzhou&Tag.1.Key=env&Tag.1.Value=prod+test",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "DescribeInvocations"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-date", "2026-11-23T08:50:10Z"),
            ("x-acs-signature-nonce", "6f6f0e6d3c24543a9890d7552e0c8335"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Authorization", "ACS3-HMAC-SHA256 Credential=LTAI5tTestAccessKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=7d10ae7cc473ca00326089ad6724fae33abce43b165ec8856a4d5e1cdfbef0db"),
            ("Content-Length", "0"),
        ],
        body: "",
    };
    const V3_RUN_COMMAND: Captured = Captured {
        now_ms: 1795423810899,
        method: "POST",
        path: "/",
        raw_query: "CommandContent=echo+%27a+b%2Ac~d%27+%26%26+echo+%E4%BD%A0%E5%A5%BD+%C3%A9+%7B%7Bname%7D%7D+%24HOME%2Fx%3Fy%3D1%26z&ContentEncoding=PlainText&EnableParameter=True&InstanceId.1=i-bp1aaaaaaaaaaaaaaaaa&InstanceId.2=i-bp1bbbbbbbbbbbbbbbbb&Name=test+cmd&Parameters=%7B%22name%22%3A%22w%C3%B6rld+%2A~%22%2C%22n%22%3A3%7D&RegionId=cn-hangzhou&Timeout=60&Type=RunShellScript",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "RunCommand"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-date", "2026-11-23T08:50:10Z"),
            ("x-acs-signature-nonce", "63e6757e205dc2681fd9177982d9f706"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Authorization", "ACS3-HMAC-SHA256 Credential=LTAI5tTestAccessKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=3a6b3b91d5cdfa521a3a81de0ddfdfa52cd65f1eb0bccbd12da5a8cec4e606fd"),
            ("Content-Length", "0"),
        ],
        body: "",
    };
    const V3_GENERIC_FORM_BODY: Captured = Captured {
        now_ms: 1795423810945,
        method: "POST",
        path: "/",
        raw_query: "RegionId=cn-hangzhou",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "RunCommand"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-date", "2026-11-23T08:50:10Z"),
            ("x-acs-signature-nonce", "bee425b43d9344572aec32fa0ee50f9b"),
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-acs-content-sha256", "735c9385b1bb4172366f2b9129f3298f4e73e062f6962b531f2479bce6fa61d2"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Authorization", "ACS3-HMAC-SHA256 Credential=LTAI5tTestAccessKeyId,SignedHeaders=accept;content-type;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=cf1711d9ee200bf08f3c03d517cb8bf4ef1fb6a313c3092203b11d01324ef88c"),
            ("Content-Length", "95"),
        ],
        body: "CommandContent=ls+-la+%2A+~%2F%C3%BC+%2Bx&InstanceId.1=i-1&InstanceId.2=i-2&Type=RunShellScript",
    };
    const V3_GENERIC_GET: Captured = Captured {
        now_ms: 1795423810989,
        method: "GET",
        path: "/",
        raw_query: "RegionId=cn-hangzhou&InvokeId=t-1+2%2A3~",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "DescribeInvocations"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-date", "2026-11-23T08:50:10Z"),
            ("x-acs-signature-nonce", "3fd844b29a5d2e3d071cdd3e3f96d681"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Authorization", "ACS3-HMAC-SHA256 Credential=LTAI5tTestAccessKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=bf38efef410d9611afeccc081e1e9ac17bc389d5bc34c6cf3baaf4be706ccff9"),
        ],
        body: "",
    };
    const V1_DESCRIBE_INVOCATIONS: Captured = Captured {
        now_ms: 1795423811033,
        method: "POST",
        path: "/",
        raw_query: "Action=DescribeInvocations&Format=json&Version=2014-05-26&Timestamp=2026-11-23T08%3A50%3A11Z&SignatureNonce=64f9caef6b447da3c2e79823c4d050f8&CommandType=RunShellScript&IncludeOutput=True&InvokeStatus=Running&PageSize=10&RegionId=cn-hangzhou&Tag.1.Key=env&Tag.1.Value=prod+test&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&AccessKeyId=LTAI5tTestAccessKeyId&Signature=kcYVncwtiguLX6tJkYYfIo49yQA%3D",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "DescribeInvocations"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Content-Length", "0"),
        ],
        body: "",
    };
    const V1_RUN_COMMAND: Captured = Captured {
        now_ms: 1795423811077,
        method: "POST",
        path: "/",
        raw_query: "Action=RunCommand&Format=json&Version=2014-05-26&Timestamp=2026-11-23T08%3A50%3A11Z&SignatureNonce=f864dca28e6fddaec3b8048168c95eb3&CommandContent=echo+%27a+b%2Ac~d%27+%26%26+echo+%E4%BD%A0%E5%A5%BD+%C3%A9+%7B%7Bname%7D%7D+%24HOME%2Fx%3Fy%3D1%26z&ContentEncoding=PlainText&EnableParameter=True&InstanceId.1=i-bp1aaaaaaaaaaaaaaaaa&InstanceId.2=i-bp1bbbbbbbbbbbbbbbbb&Name=test+cmd&Parameters=%7B%22name%22%3A%22w%C3%B6rld+%2A~%22%2C%22n%22%3A3%7D&RegionId=cn-hangzhou&Timeout=60&Type=RunShellScript&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&AccessKeyId=LTAI5tTestAccessKeyId&Signature=LwM3qDiOKfq51MNpTsIXRTU8sK8%3D",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "RunCommand"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Content-Length", "0"),
        ],
        body: "",
    };
    const V1_GENERIC_FORM_BODY: Captured = Captured {
        now_ms: 1795423811120,
        method: "POST",
        path: "/",
        raw_query: "Action=RunCommand&Format=json&Version=2014-05-26&Timestamp=2026-11-23T08%3A50%3A11Z&SignatureNonce=4936a6405cbdd76357e4b308fd60d48e&RegionId=cn-hangzhou&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&AccessKeyId=LTAI5tTestAccessKeyId&Signature=DNdUD%2F3WX%2BOdimtJCMe8RFRBhL0%3D",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "RunCommand"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-acs-credentials-provider", "static_ak"),
            ("Content-Length", "95"),
        ],
        body: "CommandContent=ls+-la+%2A+~%2F%C3%BC+%2Bx&InstanceId.1=i-1&InstanceId.2=i-2&Type=RunShellScript",
    };
    const V1_GENERIC_GET: Captured = Captured {
        now_ms: 1795423811164,
        method: "GET",
        path: "/",
        raw_query: "Action=DescribeInvocations&Format=json&Version=2014-05-26&Timestamp=2026-11-23T08%3A50%3A11Z&SignatureNonce=96e17103573268e1023999990af85577&RegionId=cn-hangzhou&InvokeId=t-1+2%2A3~&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&AccessKeyId=LTAI5tTestAccessKeyId&Signature=uIelqcxP7JwSWmEliey1jGv8li8%3D",
        headers: &[
            ("Accept-Encoding", "identity"),
            ("host", "127.0.0.1:33393"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-action", "DescribeInvocations"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-credentials-provider", "static_ak"),
        ],
        body: "",
    };

    const V3_VECTORS: [&Captured; 4] = [
        &V3_DESCRIBE_INVOCATIONS,
        &V3_RUN_COMMAND,
        &V3_GENERIC_FORM_BODY,
        &V3_GENERIC_GET,
    ];
    const V1_VECTORS: [&Captured; 4] = [
        &V1_DESCRIBE_INVOCATIONS,
        &V1_RUN_COMMAND,
        &V1_GENERIC_FORM_BODY,
        &V1_GENERIC_GET,
    ];

    const AK: &str = "LTAIoca0000000000001";
    const SECRET: &str = "s3cr3t/With+Odd=Chars~";
    const NOW: i64 = 1_795_420_800_000; // 2026-11-23T08:00:00Z

    /// An owned request, as the server would see it.
    #[derive(Clone)]
    struct Req {
        method: String,
        path: String,
        raw_query: String,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Req {
        fn parts(&self) -> RequestParts<'_> {
            RequestParts {
                method: &self.method,
                path: &self.path,
                raw_query: &self.raw_query,
                headers: &self.headers,
                body: &self.body,
            }
        }

        /// Query and form body merged and decoded, as the server's parameter parser does.
        fn params(&self) -> Vec<(String, String)> {
            let mut out: Vec<(String, String)> = form_urlencoded::parse(self.raw_query.as_bytes())
                .into_owned()
                .collect();
            let is_form = self
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if is_form {
                out.extend(form_urlencoded::parse(&self.body).into_owned());
            }
            out
        }

        /// What the server does: claim, look the key up (only `ak` exists, with
        /// `secret`), verify.
        fn check_with(&self, ak: &str, secret: &str, now_ms: i64) -> Result<Claim, SignatureError> {
            let params = self.params();
            let parts = self.parts();
            let c = claim(&parts, &params)?;
            if c.access_key_id != ak {
                return Err(SignatureError::InvalidAccessKeyIdNotFound);
            }
            verify(&parts, &params, &c, secret, now_ms, DEFAULT_MAX_SKEW_MS)?;
            Ok(c)
        }

        fn check(&self, secret: &str, now_ms: i64) -> Result<Claim, SignatureError> {
            self.check_with(AK, secret, now_ms)
        }

        fn set_header(&mut self, name: &str, value: &str) {
            self.headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
    }

    fn from_captured(c: &Captured) -> Req {
        let mut headers = HeaderMap::new();
        for (k, v) in c.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        Req {
            method: c.method.to_string(),
            path: c.path.to_string(),
            raw_query: c.raw_query.to_string(),
            headers,
            body: c.body.as_bytes().to_vec(),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Another character of the same kind, so the text stays well-formed but means
    /// something else.
    fn bump(c: u8) -> u8 {
        match c {
            b'0'..=b'8' | b'a'..=b'y' | b'A'..=b'Y' => c + 1,
            b'9' => b'0',
            b'z' => b'a',
            b'Z' => b'A',
            _ => c,
        }
    }

    fn bumped(s: &str, i: usize) -> Option<String> {
        let b = s.as_bytes();
        if !b[i].is_ascii_alphanumeric() {
            return None;
        }
        let mut v = b.to_vec();
        v[i] = bump(v[i]);
        String::from_utf8(v).ok()
    }

    fn v1_request(method: &str, params: Vec<(String, String)>) -> Req {
        Req {
            method: method.to_string(),
            path: "/".to_string(),
            raw_query: encode_pairs(&params),
            headers: HeaderMap::new(),
            body: Vec::new(),
        }
    }

    fn signed_v1(method: &str, business: &[(&str, &str)], now_ms: i64, nonce: &str) -> Req {
        let mut params = pairs(business);
        sign_v1(method, &mut params, AK, SECRET, now_ms, nonce);
        v1_request(method, params)
    }

    fn signed_v3(
        method: &str,
        query: &[(&str, &str)],
        body: &[u8],
        action: &str,
        now_ms: i64,
        nonce: &str,
    ) -> Req {
        let query = pairs(query);
        let hs = sign_v3(
            method,
            "/",
            &query,
            body,
            action,
            "2014-05-26",
            "oca.example:8443",
            AK,
            SECRET,
            now_ms,
            nonce,
        );
        let mut headers = HeaderMap::new();
        for (k, v) in &hs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Req {
            method: method.to_string(),
            path: "/".to_string(),
            raw_query: encode_pairs(&query),
            headers,
            body: body.to_vec(),
        }
    }

    fn is_mismatch(r: &Result<Claim, SignatureError>) -> bool {
        matches!(r, Err(SignatureError::SignatureDoesNotMatch { .. }))
    }

    // ---- the official SDK's requests -------------------------------------------

    #[test]
    fn sdk_v3_requests_verify() {
        for v in V3_VECTORS {
            let req = from_captured(v);
            let c = req
                .check_with(SDK_ACCESS_KEY_ID, SDK_SECRET, v.now_ms)
                .unwrap_or_else(|e| panic!("{} {}: {e}", v.method, v.raw_query));
            assert_eq!(c.scheme, Scheme::V3);
            assert_eq!(c.access_key_id, SDK_ACCESS_KEY_ID);
            assert_eq!(
                Some(c.nonce.as_str()),
                req.headers.get(H_NONCE).and_then(|h| h.to_str().ok())
            );
            assert!((c.timestamp_ms - v.now_ms).abs() < 2_000);
        }
    }

    #[test]
    fn sdk_v1_requests_verify() {
        for v in V1_VECTORS {
            let req = from_captured(v);
            let c = req
                .check_with(SDK_ACCESS_KEY_ID, SDK_SECRET, v.now_ms)
                .unwrap_or_else(|e| panic!("{} {}: {e}", v.method, v.raw_query));
            assert_eq!(c.scheme, Scheme::V1);
            assert_eq!(c.access_key_id, SDK_ACCESS_KEY_ID);
            let params = req.params();
            assert_eq!(Some(c.nonce.as_str()), param(&params, "SignatureNonce"));
        }
    }

    #[test]
    fn sdk_requests_name_their_action_and_version() {
        for v in V3_VECTORS.iter().chain(V1_VECTORS.iter()) {
            let req = from_captured(v);
            let params = req.params();
            let (action, version) = action_and_version(&req.parts(), &params);
            assert!(matches!(
                action.as_deref(),
                Some("DescribeInvocations" | "RunCommand")
            ));
            assert_eq!(version.as_deref(), Some("2014-05-26"));
        }
        // V3 puts them only in headers.
        let req = from_captured(&V3_RUN_COMMAND);
        assert!(param(&req.params(), "Action").is_none());
        // V1 does not sign headers, so an unsigned x-acs-action names nothing.
        let mut req = signed_v1("POST", &[("RegionId", "cn-hangzhou")], NOW, "n");
        req.set_header(H_ACTION, "RunCommand");
        req.set_header(H_VERSION, "2014-05-26");
        assert_eq!(
            action_and_version(&req.parts(), &req.params()),
            (None, None)
        );
    }

    #[test]
    fn sdk_requests_are_refused_with_any_byte_changed() {
        for v in V3_VECTORS.iter().chain(V1_VECTORS.iter()) {
            let good = from_captured(v);
            let check = |r: &Req| r.check_with(SDK_ACCESS_KEY_ID, SDK_SECRET, v.now_ms);
            let mut tried = 0;
            // Every letter and digit of the query string.
            for i in 0..v.raw_query.len() {
                if let Some(q) = bumped(v.raw_query, i) {
                    let mut r = good.clone();
                    r.raw_query = q;
                    assert!(
                        check(&r).is_err(),
                        "query byte {i} changed: {}",
                        r.raw_query
                    );
                    tried += 1;
                }
            }
            // Every letter and digit of the body.
            for i in 0..v.body.len() {
                if let Some(b) = bumped(v.body, i) {
                    let mut r = good.clone();
                    r.body = b.into_bytes();
                    assert!(check(&r).is_err(), "body byte {i} changed");
                    tried += 1;
                }
            }
            // Every letter and digit of every signed header (V3), and of the
            // Authorization header itself.
            let signed: Vec<String> = match parse_v3_authorization(&good.headers).unwrap() {
                Some(a) => a.signed_headers,
                None => Vec::new(),
            };
            for (name, value) in v.headers {
                let lname = name.to_ascii_lowercase();
                if !signed.contains(&lname) && lname != "authorization" {
                    continue;
                }
                for i in 0..value.len() {
                    if let Some(nv) = bumped(value, i) {
                        let mut r = good.clone();
                        r.set_header(name, &nv);
                        assert!(check(&r).is_err(), "header {name} byte {i} changed: {nv}");
                        tried += 1;
                    }
                }
            }
            // The method.
            let mut r = good.clone();
            r.method = if v.method == "GET" { "POST" } else { "GET" }.to_string();
            assert!(is_mismatch(&check(&r)), "method changed");
            assert!(tried > 50, "only {tried} changes tried");
            // And the untouched request still passes.
            check(&good).unwrap();
        }
    }

    #[test]
    fn sdk_requests_are_refused_with_a_wrong_secret_or_stale_clock() {
        for v in V3_VECTORS.iter().chain(V1_VECTORS.iter()) {
            let req = from_captured(v);
            let wrong =
                req.check_with(SDK_ACCESS_KEY_ID, "TestSecret+/=0123456789abcdeF", v.now_ms);
            let Err(SignatureError::SignatureDoesNotMatch { string_to_sign, .. }) = wrong else {
                panic!("expected SignatureDoesNotMatch, got {wrong:?}");
            };
            let later = v.now_ms + DEFAULT_MAX_SKEW_MS + 60_000;
            assert!(matches!(
                req.check_with(SDK_ACCESS_KEY_ID, SDK_SECRET, later),
                Err(SignatureError::InvalidTimeStampExpired { .. })
            ));
            let earlier = v.now_ms - DEFAULT_MAX_SKEW_MS - 60_000;
            assert!(matches!(
                req.check_with(SDK_ACCESS_KEY_ID, SDK_SECRET, earlier),
                Err(SignatureError::InvalidTimeStampExpired { .. })
            ));
            if v.headers.iter().any(|(k, _)| *k == "Authorization") {
                assert!(string_to_sign.starts_with("ACS3-HMAC-SHA256\n"));
            } else {
                assert!(string_to_sign.starts_with(&format!("{}&%2F&AccessKeyId%3D", v.method)));
            }
        }
    }

    #[test]
    fn sign_v1_reproduces_the_sdk_signature() {
        for v in V1_VECTORS {
            let req = from_captured(v);
            let sdk = req.params();
            let get = |k: &str| param(&sdk, k).unwrap().to_string();
            let mut ours: Vec<(String, String)> = sdk
                .iter()
                .filter(|(k, _)| {
                    !k.starts_with("Signature") && k != "Timestamp" && k != "AccessKeyId"
                })
                .cloned()
                .collect();
            let ts = parse_timestamp(&get("Timestamp")).unwrap();
            sign_v1(
                v.method,
                &mut ours,
                SDK_ACCESS_KEY_ID,
                SDK_SECRET,
                ts,
                &get("SignatureNonce"),
            );
            assert_eq!(param(&ours, "Signature").unwrap(), get("Signature"));
        }
    }

    #[test]
    fn the_v1_string_to_sign_is_the_vendors() {
        // RunCommand via the SDK: the string to sign a server reports must start with
        // the method and the encoded "/", and double-encode every value.
        let req = from_captured(&V1_RUN_COMMAND);
        let sts = v1_string_to_sign("POST", &req.params());
        assert!(sts.starts_with("POST&%2F&AccessKeyId%3DLTAI5tTestAccessKeyId%26Action%3DRunCommand%26CommandContent%3Decho%2520%2527a%2520b%252Ac~d%2527"));
        assert!(sts.contains("%26Timestamp%3D2026-11-23T08%253A50%253A11Z%26"));
        assert!(!sts.contains("Signature%3D"));
        assert!(sts.contains("SignatureNonce%3D"));
    }

    // ---- our own signing -------------------------------------------------------

    #[test]
    fn v1_round_trip_and_tampering() {
        let business = [
            ("Action", "RunCommand"),
            ("Version", "2014-05-26"),
            ("RegionId", "cn-hangzhou"),
            (
                "CommandContent",
                "echo 'a b*c~d' && echo \u{4f60}\u{597d} +x/y?z=1&w",
            ),
            ("InstanceId.1", "i-1"),
            ("InstanceId.2", "i-2"),
            ("Parameters", r#"{"name":"w\u00f6rld *~","n":3}"#),
        ];
        for method in ["GET", "POST"] {
            let req = signed_v1(method, &business, NOW, "nonce-1");
            let c = req.check(SECRET, NOW + 1_000).unwrap();
            assert_eq!(
                c,
                Claim {
                    scheme: Scheme::V1,
                    access_key_id: AK.to_string(),
                    nonce: "nonce-1".to_string(),
                    timestamp_ms: NOW,
                }
            );
            // Any parameter changed, added or removed.
            let params = req.params();
            for i in 0..params.len() {
                if params[i].0 == "Signature" {
                    continue;
                }
                let mut p = params.clone();
                p[i].1.push('x');
                let r = v1_request(method, p).check(SECRET, NOW);
                // The signing parameters fail their own checks first (format, method,
                // unknown key); everything else is a plain mismatch.
                let signing = [
                    "SignatureMethod",
                    "SignatureVersion",
                    "Timestamp",
                    "AccessKeyId",
                ];
                if signing.contains(&params[i].0.as_str()) {
                    assert!(r.is_err(), "{}", params[i].0);
                } else {
                    assert!(is_mismatch(&r), "{}: {r:?}", params[i].0);
                }
                let mut p = params.clone();
                let removed = p.remove(i);
                assert!(
                    v1_request(method, p).check(SECRET, NOW).is_err(),
                    "{} removed",
                    removed.0
                );
            }
            let mut p = params.clone();
            p.push(("Extra".into(), "1".into()));
            assert!(is_mismatch(&v1_request(method, p).check(SECRET, NOW)));
            // Wrong secret, stale and future timestamps.
            assert!(is_mismatch(&req.check("s3cr3t/With+Odd=Chars", NOW)));
            assert!(matches!(
                req.check(SECRET, NOW + DEFAULT_MAX_SKEW_MS + 1),
                Err(SignatureError::InvalidTimeStampExpired { .. })
            ));
            assert!(matches!(
                req.check(SECRET, NOW - DEFAULT_MAX_SKEW_MS - 1),
                Err(SignatureError::InvalidTimeStampExpired { .. })
            ));
            req.check(SECRET, NOW + DEFAULT_MAX_SKEW_MS).unwrap();
        }
    }

    #[test]
    fn v1_params_may_be_split_between_query_and_body() {
        let mut params = pairs(&[
            ("Action", "RunCommand"),
            ("Version", "2014-05-26"),
            ("CommandContent", "ls -la *"),
        ]);
        sign_v1("POST", &mut params, AK, SECRET, NOW, "n-split");
        let (body, query): (Vec<_>, Vec<_>) =
            params.into_iter().partition(|(k, _)| k == "CommandContent");
        let mut req = v1_request("POST", query);
        req.body = encode_pairs(&body).into_bytes();
        req.set_header("content-type", "application/x-www-form-urlencoded");
        req.check(SECRET, NOW).unwrap();
        req.body = b"CommandContent=ls+-la+%2B".to_vec();
        assert!(is_mismatch(&req.check(SECRET, NOW)));
    }

    #[test]
    fn v1_signature_with_an_unescaped_plus_still_verifies() {
        let mut params = pairs(&[("Action", "DescribeInvocations")]);
        // Find a nonce whose signature has a '+', then send it unescaped.
        for n in 0..200 {
            let mut p = params.clone();
            sign_v1("GET", &mut p, AK, SECRET, NOW, &format!("n{n}"));
            let sig = param(&p, "Signature").unwrap().to_string();
            if sig.contains('+') {
                let mut req = v1_request("GET", p);
                req.raw_query = req.raw_query.replace("%2B", "+");
                req.check(SECRET, NOW).unwrap();
                params.clear();
                break;
            }
        }
        assert!(params.is_empty(), "no signature with a '+' found");
    }

    #[test]
    fn v3_round_trip_and_tampering() {
        let query = [
            ("RegionId", "cn-hangzhou"),
            (
                "CommandContent",
                "echo 'a b*c~d' \u{4f60}\u{597d} +x/y?z=1&w",
            ),
            ("InstanceId.1", "i-1"),
            ("InstanceId.2", "i-2"),
        ];
        for (method, body) in [
            ("POST", &b""[..]),
            ("GET", &b""[..]),
            ("POST", &b"Name=n+1&Type=RunShellScript"[..]),
        ] {
            let req = signed_v3(method, &query, body, "RunCommand", NOW, "nonce-3");
            let c = req.check(SECRET, NOW - 1_000).unwrap();
            assert_eq!(
                c,
                Claim {
                    scheme: Scheme::V3,
                    access_key_id: AK.to_string(),
                    nonce: "nonce-3".to_string(),
                    timestamp_ms: NOW,
                }
            );
            assert_eq!(
                req.headers.get(H_CONTENT_SHA256).unwrap(),
                &sha256_hex(body)
            );
            // A query value, a query name, an extra parameter.
            let mut r = req.clone();
            r.raw_query = r.raw_query.replace("i-2", "i-3");
            assert!(is_mismatch(&r.check(SECRET, NOW)));
            let mut r = req.clone();
            r.raw_query = r.raw_query.replace("InstanceId.2", "InstanceId.3");
            assert!(is_mismatch(&r.check(SECRET, NOW)));
            let mut r = req.clone();
            r.raw_query.push_str("&Extra=1");
            assert!(is_mismatch(&r.check(SECRET, NOW)));
            // Every signed header.
            for name in [H_ACTION, H_VERSION, H_NONCE, H_CONTENT_SHA256, "host"] {
                let mut r = req.clone();
                let v = r.headers.get(name).unwrap().to_str().unwrap().to_string();
                r.set_header(name, &format!("{v}x"));
                assert!(is_mismatch(&r.check(SECRET, NOW)), "{name}");
            }
            let mut r = req.clone();
            r.set_header(H_DATE, &format_timestamp(NOW + 1_000));
            assert!(is_mismatch(&r.check(SECRET, NOW)));
            // The body.
            let mut r = req.clone();
            r.body.push(b'x');
            assert!(r.check(SECRET, NOW).is_err());
            if !body.is_empty() {
                let mut r = req.clone();
                r.body[0] ^= 1;
                assert!(is_mismatch(&r.check(SECRET, NOW)));
            }
            // The path and the method.
            let mut r = req.clone();
            r.path = "/x".into();
            assert!(is_mismatch(&r.check(SECRET, NOW)));
            let mut r = req.clone();
            r.method = if method == "GET" { "POST" } else { "GET" }.into();
            assert!(is_mismatch(&r.check(SECRET, NOW)));
            // The secret and the clock.
            assert!(is_mismatch(&req.check("s3cr3t", NOW)));
            assert!(matches!(
                req.check(SECRET, NOW + DEFAULT_MAX_SKEW_MS + 1),
                Err(SignatureError::InvalidTimeStampExpired { .. })
            ));
            assert!(matches!(
                req.check(SECRET, NOW - DEFAULT_MAX_SKEW_MS - 1),
                Err(SignatureError::InvalidTimeStampExpired { .. })
            ));
        }
    }

    #[test]
    fn v3_unsigned_headers_are_ignored_but_must_sign_ones_are_enforced() {
        let req = signed_v3(
            "POST",
            &[("RegionId", "cn-hangzhou")],
            b"",
            "RunCommand",
            NOW,
            "n",
        );
        let mut r = req.clone();
        r.set_header("user-agent", "anything");
        r.set_header("accept-encoding", "gzip");
        r.check(SECRET, NOW).unwrap();
        let mut r = req.clone();
        r.set_header("x-acs-security-token", "tok");
        assert!(matches!(
            r.check(SECRET, NOW),
            Err(SignatureError::IncompleteSignature(_))
        ));
        // A body with an unsigned content-type.
        let mut r = signed_v3("POST", &[], b"A=1", "RunCommand", NOW, "n");
        let auth = r.headers.get("authorization").unwrap().to_str().unwrap();
        let auth = auth.replace("content-type;", "");
        r.set_header("authorization", &auth);
        assert!(matches!(
            r.check(SECRET, NOW),
            Err(SignatureError::IncompleteSignature(_))
        ));
    }

    #[test]
    fn v3_canonical_request_matches_the_sdk_rules() {
        // Built by hand from the SDK's rules: values encoded (space %20, '*' %2A, '~'
        // kept), names sorted, header values trimmed, empty path "/".
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("h"));
        headers.insert("x-acs-action", HeaderValue::from_static("  RunCommand "));
        let signed = vec!["host".to_string(), "x-acs-action".to_string()];
        let q = decode_query("b=1+2*~&a=%E4%BD%A0&c");
        let cr = v3_canonical_request(
            "post",
            "",
            &v3_canonical_query(&q, true),
            &v3_canonical_headers(&headers, &signed),
            &signed,
            EMPTY_BODY_SHA256,
        );
        assert_eq!(
            cr,
            format!("POST\n/\na=%E4%BD%A0&b=1%202%2A~&c=\nhost:h\nx-acs-action:RunCommand\n\nhost;x-acs-action\n{EMPTY_BODY_SHA256}")
        );
        assert_eq!(sha256_hex(b""), EMPTY_BODY_SHA256);
    }

    // ---- missing and malformed pieces --------------------------------------------

    #[test]
    fn missing_v1_pieces_are_named() {
        let req = signed_v1("GET", &[("Action", "DescribeInvocations")], NOW, "n");
        let params = req.params();
        for (name, code) in [
            ("AccessKeyId", "MissingAccessKeyId"),
            ("Signature", "MissingSignature"),
            ("SignatureNonce", "MissingSignatureNonce"),
            ("Timestamp", "MissingTimestamp"),
        ] {
            let p: Vec<_> = params.iter().filter(|(k, _)| k != name).cloned().collect();
            let e = v1_request("GET", p).check(SECRET, NOW).unwrap_err();
            assert_eq!(e.code(), code);
            assert_eq!(e.http_status(), 400);
            assert_eq!(e.message(), format!("{name} is mandatory for this action."));
        }
        // No signature at all.
        let e = v1_request("GET", pairs(&[("Action", "X")]))
            .check(SECRET, NOW)
            .unwrap_err();
        assert_eq!(e.code(), "MissingAccessKeyId");
    }

    #[test]
    fn bad_v1_method_version_and_timestamp() {
        let req = signed_v1("GET", &[("Action", "DescribeInvocations")], NOW, "n");
        let with = |name: &str, value: &str| {
            let p: Vec<_> = req
                .params()
                .into_iter()
                .map(|(k, v)| {
                    if k == name {
                        (k, value.to_string())
                    } else {
                        (k, v)
                    }
                })
                .collect();
            v1_request("GET", p).check(SECRET, NOW).unwrap_err()
        };
        assert_eq!(
            with("SignatureMethod", "HMAC-SHA256").code(),
            "InvalidSignatureMethod"
        );
        assert_eq!(
            with("SignatureVersion", "2.0").code(),
            "InvalidSignatureVersion"
        );
        let e = with("Timestamp", "23/11/2026 08:00");
        assert_eq!(e.code(), "InvalidTimeStamp.Format");
        assert!(e.message().contains("23/11/2026 08:00"));
        let mut p = req.params();
        p.push(("SignatureType".into(), "BEARERTOKEN".into()));
        assert_eq!(
            v1_request("GET", p).check(SECRET, NOW).unwrap_err().code(),
            "InvalidSignatureMethod"
        );
        // An absent SignatureMethod / SignatureVersion defaults (the vendor's rule),
        // and an empty SignatureType (old SDKs send one) is no bearer token.
        let mut p: Vec<_> = pairs(&[("Action", "X"), ("SignatureType", "")]);
        p.push(("AccessKeyId".into(), AK.into()));
        p.push(("SignatureNonce".into(), "n".into()));
        p.push(("Timestamp".into(), format_timestamp(NOW)));
        let sts = v1_string_to_sign("GET", &p);
        p.push(("Signature".into(), v1_signature(SECRET, &sts)));
        v1_request("GET", p).check(SECRET, NOW).unwrap();
    }

    #[test]
    fn missing_and_malformed_v3_pieces() {
        let req = signed_v3(
            "POST",
            &[("RegionId", "cn-hangzhou")],
            b"",
            "RunCommand",
            NOW,
            "n",
        );
        for (name, code) in [(H_DATE, "MissingParameter"), (H_NONCE, "MissingParameter")] {
            let mut r = req.clone();
            r.headers.remove(name);
            let e = r.check(SECRET, NOW).unwrap_err();
            assert_eq!(e, SignatureError::MissingHeader(name));
            assert_eq!(e.code(), code);
            assert!(e.message().contains(name));
        }
        let auth = req
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let with_auth = |a: &str| {
            let mut r = req.clone();
            r.set_header("authorization", a);
            r.check(SECRET, NOW).unwrap_err()
        };
        assert_eq!(
            with_auth(&auth.replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3")).code(),
            "InvalidSignatureMethod"
        );
        assert_eq!(with_auth("Bearer abc").code(), "InvalidSignatureMethod");
        for broken in [
            "ACS3-HMAC-SHA256",
            "ACS3-HMAC-SHA256 Credential=x,SignedHeaders=host",
            "ACS3-HMAC-SHA256 Credential=x,SignedHeaders=host;host,Signature=00",
            "ACS3-HMAC-SHA256 Credential=x,Credential=y,SignedHeaders=host,Signature=00",
            "ACS3-HMAC-SHA256 Credential=x,junk,SignedHeaders=host,Signature=00",
        ] {
            let e = with_auth(broken);
            assert_eq!(e.code(), "IncompleteSignature", "{broken}");
            assert!(e
                .message()
                .starts_with("The request signature does not conform to Aliyun standards."));
        }
        // The required headers must be signed.
        let unsigned_date = auth.replace("x-acs-date;", "");
        assert_eq!(with_auth(&unsigned_date).code(), "IncompleteSignature");
        // A signature that is not hex is simply wrong.
        let not_hex = format!("{}zz", &auth[..auth.len() - 2]);
        assert_eq!(with_auth(&not_hex).code(), "SignatureDoesNotMatch");
        // A malformed date.
        let mut r = req.clone();
        r.set_header(H_DATE, "yesterday");
        assert_eq!(
            r.check(SECRET, NOW).unwrap_err().code(),
            "InvalidTimeStamp.Format"
        );
        // Spaces after the commas, as some hand-written clients send.
        let spaced = auth
            .replace(",SignedHeaders", ", SignedHeaders")
            .replace(",Signature=", ", Signature=");
        let mut r = req.clone();
        r.set_header("authorization", &spaced);
        r.check(SECRET, NOW).unwrap();
    }

    #[test]
    fn errors_know_their_codes_statuses_and_messages() {
        use SignatureError::*;
        let mismatch = SignatureDoesNotMatch {
            string_to_sign: "GET&%2F&A%3D1".into(),
            canonical_request: None,
        };
        let table: Vec<(SignatureError, &str, u16)> = vec![
            (
                InvalidAccessKeyIdNotFound,
                "InvalidAccessKeyId.NotFound",
                404,
            ),
            (
                InvalidAccessKeyIdInactive,
                "InvalidAccessKeyId.Inactive",
                400,
            ),
            (mismatch.clone(), "SignatureDoesNotMatch", 400),
            (
                InvalidTimeStampExpired {
                    timestamp: "a".into(),
                    server_time: "b".into(),
                    max_skew_ms: DEFAULT_MAX_SKEW_MS,
                },
                "InvalidTimeStamp.Expired",
                400,
            ),
            (
                InvalidTimeStampFormat("x".into()),
                "InvalidTimeStamp.Format",
                400,
            ),
            (SignatureNonceUsed, "SignatureNonceUsed", 400),
            (IncompleteSignature("x".into()), "IncompleteSignature", 400),
            (
                InvalidSignatureMethod("x".into()),
                "InvalidSignatureMethod",
                400,
            ),
            (
                InvalidSignatureVersion("x".into()),
                "InvalidSignatureVersion",
                400,
            ),
            (MissingParameter("Timestamp"), "MissingTimestamp", 400),
            (MissingHeader(H_DATE), "MissingParameter", 400),
        ];
        for (e, code, status) in table {
            assert_eq!(e.code(), code);
            assert_eq!(e.http_status(), status);
            assert!(!e.message().is_empty());
            assert_eq!(e.to_string(), format!("{code}: {}", e.message()));
        }
        assert_eq!(
            mismatch.message(),
            "Specified signature is not matched with our calculation. server string to sign is:GET&%2F&A%3D1"
        );
        assert_eq!(
            SignatureNonceUsed.message(),
            "Specified signature nonce was used already."
        );
        assert_eq!(
            InvalidAccessKeyIdNotFound.message(),
            "Specified access key is not found."
        );
        assert_eq!(
            InvalidAccessKeyIdInactive.message(),
            "Specified access key is disabled."
        );
    }

    #[test]
    fn v3_mismatch_reports_the_canonical_request_for_logs() {
        let req = signed_v3(
            "POST",
            &[("RegionId", "cn-hangzhou")],
            b"",
            "RunCommand",
            NOW,
            "n",
        );
        let e = req.check("wrong", NOW).unwrap_err();
        let cr = e.canonical_request().unwrap();
        assert!(cr.starts_with("POST\n/\nRegionId=cn-hangzhou\n"));
        assert!(e.message().contains(&format!(
            "server string to sign is:ACS3-HMAC-SHA256\n{}",
            sha256_hex(cr.as_bytes())
        )));
    }

    // ---- helpers -----------------------------------------------------------------

    #[test]
    fn percent_encoding_follows_the_vendor() {
        assert_eq!(percent_encode("a b*c~d-_.e"), "a%20b%2Ac~d-_.e");
        assert_eq!(percent_encode("/+=&%"), "%2F%2B%3D%26%25");
        assert_eq!(percent_encode("\u{e9}\u{4f60}"), "%C3%A9%E4%BD%A0");
        assert_eq!(
            decode_query("a=b+c%2A&d"),
            vec![(b"a".to_vec(), b"b c*".to_vec()), (b"d".to_vec(), vec![])]
        );
    }

    #[test]
    fn timestamps_parse_and_format() {
        assert_eq!(parse_timestamp("2026-11-23T08:00:00Z"), Some(NOW));
        assert_eq!(parse_timestamp("2026-11-23T08:00:00.250Z"), Some(NOW + 250));
        assert_eq!(parse_timestamp("2026-11-23T16:00:00+08:00"), Some(NOW));
        assert_eq!(parse_timestamp("2026-11-23 08:00:00"), None);
        assert_eq!(format_timestamp(NOW + 999), "2026-11-23T08:00:00Z");
    }

    // ---- the nonce cache -----------------------------------------------------------

    #[test]
    fn nonce_reuse_is_detected_per_key_within_the_window() {
        let cache = NonceCache::new(2 * DEFAULT_MAX_SKEW_MS);
        assert!(cache.check_and_insert("ak1", "n1", NOW));
        assert!(!cache.check_and_insert("ak1", "n1", NOW + 1));
        assert!(!cache.check_and_insert("ak1", "n1", NOW + 2 * DEFAULT_MAX_SKEW_MS - 1));
        assert!(
            cache.check_and_insert("ak2", "n1", NOW),
            "another key, another namespace"
        );
        assert!(cache.check_and_insert("ak1", "n2", NOW));
        // Once the window has passed, the nonce is forgotten (and may be used again).
        assert!(cache.check_and_insert("ak1", "n1", NOW + 2 * DEFAULT_MAX_SKEW_MS));
        assert!(!cache.check_and_insert("ak1", "n1", NOW + 2 * DEFAULT_MAX_SKEW_MS + 1));
    }

    #[test]
    fn nonce_cache_forgets_old_entries_as_it_goes() {
        let cache = NonceCache::new(1_000);
        for i in 0..10_000i64 {
            assert!(cache.check_and_insert("ak", &format!("n{i}"), NOW + i));
            assert!(cache.len() <= 1_000, "{} entries at {i}", cache.len());
        }
        let capped = NonceCache::with_per_key(1_000_000, 100);
        for i in 0..1_000i64 {
            assert!(capped.check_and_insert("ak", &format!("n{i}"), NOW));
        }
        assert_eq!(capped.len(), 100);
        assert!(!capped.check_and_insert("ak", "n999", NOW + 1));
    }

    #[test]
    fn one_key_cannot_make_the_cache_forget_another_keys_nonces() {
        let cache = NonceCache::with_per_key(1_000_000, 100);
        assert!(cache.check_and_insert("victim", "v1", NOW));
        for i in 0..10_000i64 {
            cache.check_and_insert("flooder", &format!("n{i}"), NOW + i);
        }
        assert!(!cache.check_and_insert("victim", "v1", NOW + 20_000));
        assert_eq!(cache.len(), 101, "the flooder keeps its own 100");
        assert!(cache.seen("victim", "v1", NOW + 20_000));
        assert!(!cache.seen("victim", "v2", NOW + 20_000));
    }

    #[test]
    fn nonce_cache_memory_is_bounded_whatever_the_nonces() {
        // 1 MB nonces are refused before the cache (MAX_NONCE_LEN); what the cache
        // keeps per nonce is a fixed-size digest.
        let cache = NonceCache::with_per_key(1_000_000, 10_000);
        let long = "x".repeat(MAX_NONCE_LEN - 8);
        for i in 0..10_000i64 {
            cache.check_and_insert("ak", &format!("{long}{i:08}"), NOW);
        }
        let bytes = cache.approx_bytes();
        assert!(bytes < 10_000 * 120, "{bytes} bytes for 10,000 nonces");
        // Idle keys are swept.
        for i in 0..5_000i64 {
            cache.check_and_insert(&format!("k{i}"), "n", NOW + 2_000_000 + i);
        }
        assert!(cache.len() <= 5_000, "{}", cache.len());
    }

    #[test]
    fn long_nonces_are_refused_before_anything_else() {
        let e = check_nonce(&"n".repeat(MAX_NONCE_LEN + 1)).unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("InvalidSignatureNonce", 400));
        check_nonce(&"n".repeat(MAX_NONCE_LEN)).unwrap();
    }

    #[test]
    fn nonce_cache_is_shared_across_threads() {
        let cache = std::sync::Arc::new(NonceCache::new(60_000));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|i| cache.check_and_insert("ak", &format!("n{i}"), NOW))
                        .count()
                })
            })
            .collect();
        let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(accepted, 200, "each nonce accepted exactly once");
    }
}
