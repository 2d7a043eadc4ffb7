//! What the fuzz targets share: reading the canonical forms of the signature schemes
//! back into parameters, so that "one canonical form, one set of parameters" can be
//! checked on every input rather than only on the rare pair of inputs that collide.

use oca_api::params::Params;
use oca_api::signature;

/// Decodes `%XX` escapes strictly: the canonical forms escape every byte that is not
/// unreserved, so anything else (a `+`, a lone `%`) means the form is not what we think.
pub fn strict_percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).expect("a % escape has two hex digits");
                assert!(
                    hex.bytes()
                        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
                    "escapes are upper-case hex: {s:?}"
                );
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') => {
                out.push(c);
                i += 1;
            }
            c => panic!("byte {c:#04x} is not escaped in a canonical form: {s:?}"),
        }
    }
    out
}

/// The parameters a V3 canonical query (names encoded) stands for.
pub fn decode_v3_canonical(canonical: &str) -> Vec<(String, String)> {
    if canonical.is_empty() {
        return Vec::new();
    }
    canonical
        .split('&')
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .expect("every canonical item is name=value");
            (
                String::from_utf8_lossy(&strict_percent_decode(k)).into_owned(),
                String::from_utf8_lossy(&strict_percent_decode(v)).into_owned(),
            )
        })
        .collect()
}

/// The method and the parameters a V1 string to sign stands for.
pub fn decode_v1_string_to_sign(sts: &str) -> (String, Vec<(String, String)>) {
    let mut parts = sts.splitn(3, '&');
    let method = parts.next().expect("a method").to_string();
    assert_eq!(parts.next(), Some("%2F"), "the path is /: {sts:?}");
    let rest = parts.next().expect("the parameters");
    let canonical = String::from_utf8(strict_percent_decode(rest)).expect("UTF-8");
    if canonical.is_empty() {
        return (method, Vec::new());
    }
    let pairs = canonical
        .split('&')
        .map(|item| {
            let (k, v) = item.split_once('=').expect("name=value");
            (
                String::from_utf8(strict_percent_decode(k)).expect("UTF-8 name"),
                String::from_utf8(strict_percent_decode(v)).expect("UTF-8 value"),
            )
        })
        .collect();
    (method, pairs)
}

/// The pairs, sorted.
pub fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

/// For a raw query whose parameters pass [`Params::check`]: its V3 canonical query
/// is the same whether names are encoded or not (so [`signature::verify`] has one
/// candidate, not two), and it decodes back to exactly the parameters the server
/// acts on. Hence two such queries with one canonical query have the same
/// parameters: a signature made for one cannot carry the other.
pub fn assert_v3_canonical_is_injective(raw_query: &str) {
    let params = Params::parse(raw_query, None);
    let documented = signature::v3_canonical_query_of(raw_query, true);
    let sdk_style = signature::v3_canonical_query_of(raw_query, false);
    if params.check().is_err() {
        return;
    }
    assert_eq!(
        documented, sdk_style,
        "checked names need no encoding: {raw_query:?}"
    );
    assert_eq!(
        sorted(decode_v3_canonical(&documented)),
        sorted(params.pairs().to_vec()),
        "the canonical query {documented:?} does not stand for the parameters of {raw_query:?}"
    );
}

/// For parameters that pass [`Params::check`]: the V1 string to sign decodes back to
/// exactly them (`Signature` aside), so it, too, stands for one set of parameters.
pub fn assert_v1_string_to_sign_is_injective(method: &str, params: &Params) {
    if params.check().is_err() {
        return;
    }
    let sts = signature::v1_string_to_sign(method, params.pairs());
    let (m, pairs) = decode_v1_string_to_sign(&sts);
    assert_eq!(m, method.to_ascii_uppercase());
    let expected: Vec<(String, String)> = params
        .pairs()
        .iter()
        .filter(|(k, _)| k != "Signature")
        .cloned()
        .collect();
    assert_eq!(
        sorted(pairs),
        sorted(expected),
        "the V1 string to sign {sts:?} does not stand for its parameters"
    );
}
