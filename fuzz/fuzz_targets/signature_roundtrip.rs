//! Client and server agree: parameters signed with `sign_v3` / `sign_v1` (the client
//! side), sent as a query string and a form body, read by the server (`Params::parse`,
//! `check`, `claim`, `verify`).
//!
//! Properties, for any parameters whose names pass `Params::check`:
//! - the server reads back exactly the parameters sent, and the signature verifies,
//!   however the client encodes them (`+` or `%20` for a space, escapes in either case,
//!   unreserved characters escaped or not, pairs in any order; for V1, split between
//!   query and body in any way);
//! - with another secret, or with one value changed, it does not;
//! - two queries that pass `check` and share a V3 canonical query (or a V1 string to
//!   sign) have the same parameters. The second query is the first one edited
//!   byte by byte with the characters that matter to the encodings, which is how two
//!   encodings would collide if they could.
#![no_main]

use arbitrary::Arbitrary;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use oca_api::params::{is_parameter_name, Params};
use oca_api::signature::{self, RequestParts, Scheme, SignatureError};
use oca_fuzz::{assert_v1_string_to_sign_is_injective, assert_v3_canonical_is_injective, sorted};
use std::collections::HashSet;

const AK: &str = "LTAI5tFuzzAccessKeyId";
const SECRET: &str = "FuzzSecret+/=0123456789abcdef";

#[derive(Arbitrary, Debug)]
struct Input {
    pairs: Vec<(String, String)>,
    /// Make names parameter names (keep their allowed characters) rather than send
    /// them as they are.
    sanitize: bool,
    v1: bool,
    post: bool,
    /// How many pairs go to the query; the rest to the body.
    in_query: u8,
    /// Seconds since 1970, up to 2106.
    now_secs: u32,
    millis: u16,
    nonce: u128,
    /// How the client encodes each byte (see `encode`).
    style: Vec<u8>,
    rotate: u8,
    edits: Vec<(u16, u8)>,
}

/// The characters that matter to the encodings.
const EDIT_CHARS: &[u8] = b"%+=& 2AFaf0.~*-_\x00\xff";

/// Encodes `s` for a query string another way than `encode_pairs`: each byte, by the
/// next style byte, as `%XX`, `%xx`, itself when unreserved, `+` for a space.
fn encode(s: &str, style: &mut impl Iterator<Item = u8>) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        match style.next().unwrap_or(0) % 4 {
            0 if unreserved => out.push(b as char),
            1 if b == b' ' => out.push('+'),
            2 => out.push_str(&format!("%{b:02x}")),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn encode_all(pairs: &[(String, String)], style: &mut impl Iterator<Item = u8>) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k, style), encode(v, style)))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("sign_v3 names headers well"),
            HeaderValue::from_str(v).expect("sign_v3 writes valid header values"),
        );
    }
    map
}

/// The server reads exactly the pairs sent when their names are parameter names, each
/// once (there are too few to reach the parse limits); otherwise it refuses them,
/// having read no further than the first bad one.
fn reads_what_was_sent(params: &Params, sent: &[(String, String)]) {
    let mut seen = HashSet::new();
    if sent
        .iter()
        .all(|(k, _)| is_parameter_name(k) && seen.insert(k.as_str()))
    {
        params.check().expect("well-named parameters pass");
        assert_eq!(params.pairs(), sent, "the server reads what was sent");
    } else {
        assert!(params.check().is_err());
        assert!(
            sent.starts_with(params.pairs()),
            "the server reads what was sent"
        );
    }
}

fuzz_target!(|input: Input| {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut names = HashSet::new();
    for (k, v) in input.pairs.into_iter().take(64) {
        let k = if input.sanitize {
            k.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect()
        } else {
            k
        };
        if input.sanitize && (!is_parameter_name(&k) || names.contains(&k)) {
            continue;
        }
        names.insert(k.clone());
        pairs.push((k, v));
    }
    let method = if input.post { "POST" } else { "GET" };
    let now_ms = i64::from(input.now_secs) * 1000 + i64::from(input.millis % 1000);
    let nonce = format!("{:032x}", input.nonce);
    let split = usize::from(input.in_query).min(pairs.len());
    let mut style = input.style.iter().copied().cycle();

    if input.v1 {
        let mut signed = pairs.clone();
        signature::sign_v1(method, &mut signed, AK, SECRET, now_ms, &nonce);
        let split = split.min(signed.len());
        let (q, b) = signed.split_at(split);
        let raw_query = signature::encode_pairs(q);
        let body = signature::encode_pairs(b);
        let headers = HeaderMap::new();
        let parts = RequestParts {
            method,
            path: "/",
            raw_query: &raw_query,
            headers: &headers,
            body: body.as_bytes(),
        };
        let params = Params::parse(&raw_query, Some(body.as_bytes()));
        reads_what_was_sent(&params, &signed);
        assert_v1_string_to_sign_is_injective(method, &params);
        if params.check().is_err() {
            return;
        }
        let claim = signature::claim(&parts, params.pairs());
        if signed
            .iter()
            .any(|(k, v)| k == "SignatureType" && !v.is_empty())
        {
            assert!(matches!(
                claim,
                Err(SignatureError::InvalidSignatureMethod(_))
            ));
            return;
        }
        let claim = claim.unwrap_or_else(|e| panic!("{e}: {signed:?}"));
        assert_eq!(claim.scheme, Scheme::V1);
        assert_eq!(
            (claim.access_key_id.as_str(), claim.nonce.as_str()),
            (AK, &*nonce)
        );
        assert_eq!(claim.timestamp_ms, now_ms - now_ms % 1000);
        let verify = |params: &Params, parts: &RequestParts, secret: &str| {
            signature::verify(
                parts,
                params.pairs(),
                &claim,
                secret,
                now_ms,
                signature::DEFAULT_MAX_SKEW_MS,
            )
        };
        verify(&params, &parts, SECRET).unwrap_or_else(|e| panic!("{e}: {signed:?}"));
        assert!(verify(&params, &parts, "another secret").is_err());

        // Another encoding, another order, another split: still the same request.
        let mut shuffled = signed.clone();
        let n = shuffled.len();
        shuffled.rotate_left(usize::from(input.rotate) % n.max(1));
        let split2 = usize::from(input.rotate) % (n + 1);
        let q2 = encode_all(&shuffled[..split2], &mut style);
        let b2 = encode_all(&shuffled[split2..], &mut style);
        let params2 = Params::parse(&q2, Some(b2.as_bytes()));
        assert_eq!(sorted(params2.pairs().to_vec()), sorted(signed.clone()));
        let parts2 = RequestParts {
            raw_query: &q2,
            body: b2.as_bytes(),
            ..parts
        };
        verify(&params2, &parts2, SECRET).unwrap_or_else(|e| panic!("{e}: {q2:?} {b2:?}"));

        // One value changed: refused.
        if let Some(i) = (!signed.is_empty()).then(|| usize::from(input.rotate) % signed.len()) {
            if signed[i].0 != "Signature" {
                let mut altered = signed.clone();
                altered[i].1.push('x');
                let q3 = signature::encode_pairs(&altered);
                let params3 = Params::parse(&q3, None);
                let parts3 = RequestParts {
                    raw_query: &q3,
                    body: b"",
                    ..parts
                };
                assert!(verify(&params3, &parts3, SECRET).is_err(), "{altered:?}");
            }
        }
    } else {
        let (q, b) = pairs.split_at(split);
        let body = signature::encode_pairs(b);
        let headers = signature::sign_v3(
            method,
            "/",
            q,
            body.as_bytes(),
            "RunCommand",
            "2014-05-26",
            "127.0.0.1:7070",
            AK,
            SECRET,
            now_ms,
            &nonce,
        );
        let headers = header_map(&headers);
        let raw_query = signature::encode_pairs(q);
        let params = Params::parse(&raw_query, (!body.is_empty()).then_some(body.as_bytes()));
        reads_what_was_sent(&params, &pairs);
        assert_v3_canonical_is_injective(&raw_query);
        if params.check().is_err() {
            return;
        }
        let parts = RequestParts {
            method,
            path: "/",
            raw_query: &raw_query,
            headers: &headers,
            body: body.as_bytes(),
        };
        let (action, version) = signature::action_and_version(&parts, params.pairs());
        if !names.contains("Action") {
            assert_eq!(action.as_deref(), Some("RunCommand"));
        }
        if !names.contains("Version") {
            assert_eq!(version.as_deref(), Some("2014-05-26"));
        }
        let claim = signature::claim(&parts, params.pairs()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claim.scheme, Scheme::V3);
        assert_eq!(
            (claim.access_key_id.as_str(), claim.nonce.as_str()),
            (AK, &*nonce)
        );
        assert_eq!(claim.timestamp_ms, now_ms - now_ms % 1000);
        let verify = |parts: &RequestParts, secret: &str| {
            signature::verify(
                parts,
                &[],
                &claim,
                secret,
                now_ms,
                signature::DEFAULT_MAX_SKEW_MS,
            )
        };
        verify(&parts, SECRET).unwrap_or_else(|e| panic!("{e}: {pairs:?}"));
        assert!(verify(&parts, "another secret").is_err());

        // Another encoding and order of the query: still the same request.
        let mut shuffled = q.to_vec();
        shuffled.rotate_left(usize::from(input.rotate) % q.len().max(1));
        let q2 = encode_all(&shuffled, &mut style);
        assert_eq!(
            sorted(Params::parse(&q2, None).pairs().to_vec()),
            sorted(q.to_vec())
        );
        verify(
            &RequestParts {
                raw_query: &q2,
                ..parts
            },
            SECRET,
        )
        .unwrap_or_else(|e| panic!("{e}: {q2:?}"));

        // One value changed, in the query or in the body: refused.
        if !pairs.is_empty() {
            let i = usize::from(input.rotate) % pairs.len();
            let mut altered = pairs.clone();
            altered[i].1.push('x');
            let (q3, b3) = altered.split_at(split);
            let q3 = signature::encode_pairs(q3);
            let b3 = signature::encode_pairs(b3);
            let parts3 = RequestParts {
                raw_query: &q3,
                body: b3.as_bytes(),
                ..parts
            };
            assert!(verify(&parts3, SECRET).is_err(), "{altered:?}");
        }

        // Collisions: an edited query that passes `check` and has the same canonical
        // query must have the same parameters.
        let mut edited = raw_query.clone().into_bytes();
        for (at, c) in input.edits.iter().take(8) {
            let (op, c) = (
                usize::from(*c) / EDIT_CHARS.len() % 3,
                EDIT_CHARS[usize::from(*c) % EDIT_CHARS.len()],
            );
            let at = usize::from(*at) % (edited.len() + 1);
            match op {
                0 if at < edited.len() => {
                    edited.remove(at);
                }
                1 if at < edited.len() => edited[at] = c,
                _ => edited.insert(at, c),
            }
        }
        let edited = String::from_utf8_lossy(&edited).into_owned();
        assert_v3_canonical_is_injective(&edited);
        let params2 = Params::parse(&edited, None);
        if params2.check().is_ok()
            && signature::v3_canonical_query_of(&edited, true)
                == signature::v3_canonical_query_of(&raw_query, true)
        {
            assert_eq!(
                sorted(params2.pairs().to_vec()),
                sorted(Params::parse(&raw_query, None).pairs().to_vec()),
                "{raw_query:?} and {edited:?} sign alike"
            );
        }
    }
});
