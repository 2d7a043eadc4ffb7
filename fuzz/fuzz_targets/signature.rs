//! Raw requests → the server's signature checks (`claim`, `verify`) and the V1 and V3
//! canonical forms.
//!
//! Input: a request written as on the wire, which keeps the seeds readable:
//!
//! ```text
//! POST /?RegionId=cn-hangzhou&InstanceId.1=i-1
//! x-acs-date: 2026-11-23T08:50:10Z
//! authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…
//!
//! CommandContent=ls
//! ```
//!
//! Properties: nothing panics, whatever the method, path, query, headers and body;
//! a claim holds a nonce of at most `MAX_NONCE_LEN` bytes and an access key; and for
//! every query (and every set of parameters) that passes `Params::check`, the V3
//! canonical query and the V1 string to sign decode back to exactly its parameters,
//! so no two different requests share a canonical form.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use oca_api::params::Params;
use oca_api::signature::{self, RequestParts, MAX_NONCE_LEN};
use oca_fuzz::{assert_v1_string_to_sign_is_injective, assert_v3_canonical_is_injective};

/// The secret of the SDK captures in `signature.rs`' tests (the seeds are those
/// captures, so they verify and the fuzzer starts from the paths that succeed).
const SECRET: &str = "TestSecret+/=0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split('\n');
    let request_line = lines.next().unwrap_or("");
    let (method, target) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    if axum::http::Method::from_bytes(method.as_bytes()).is_err() {
        return; // hyper refuses it before the API sees it
    }
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }

    // As the server reads a request (`oca_api::handle`).
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let params = Params::parse(raw_query, is_form.then_some(body));
    let parts = RequestParts {
        method,
        path,
        raw_query,
        headers: &headers,
        body,
    };
    let _ = params.check();
    let _ = signature::check_authorization(&parts);
    let _ = signature::action_and_version(&parts, params.pairs());
    if let Ok(claim) = signature::claim(&parts, params.pairs()) {
        assert!(claim.nonce.len() <= MAX_NONCE_LEN);
        assert!(!claim.nonce.is_empty() && !claim.access_key_id.is_empty());
        for secret in [SECRET, ""] {
            let r = signature::verify(
                &parts,
                params.pairs(),
                &claim,
                secret,
                claim.timestamp_ms,
                signature::DEFAULT_MAX_SKEW_MS,
            );
            if let Err(e) = r {
                // Every refusal is one the vendor's error table knows.
                assert!(!e.code().is_empty() && !e.message().is_empty());
                assert!(matches!(e.http_status(), 400 | 404));
            }
        }
        // Out of the window, never accepted.
        let late = claim
            .timestamp_ms
            .saturating_add(signature::DEFAULT_MAX_SKEW_MS + 1);
        assert!(signature::verify(
            &parts,
            params.pairs(),
            &claim,
            SECRET,
            late,
            signature::DEFAULT_MAX_SKEW_MS
        )
        .is_err());
    }

    // One canonical form, one set of parameters.
    assert_v3_canonical_is_injective(raw_query);
    // The V1 string to sign starts with the method, unencoded: a method with a `&` (a
    // character HTTP allows in one, which no signer uses) would blur where the
    // parameters start. A request signed with a method without one has exactly two
    // `&` in its string to sign, so it cannot share it with such a request.
    if !method.contains('&') {
        assert_v1_string_to_sign_is_injective(method, &params);
        assert_v1_string_to_sign_is_injective(method, &Params::parse(raw_query, None));
    }
});
