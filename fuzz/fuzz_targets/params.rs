//! Query string and form body → `Params`: parsing, `check` and every typed getter.
//!
//! Input: the raw query, then (after the first line feed, if any) the form body.
//!
//! Properties: nothing panics; `check` passes only when every name is a parameter name
//! given once, and then nothing was dropped (the parameters are every pair of query and
//! body, in order); it refuses a request with a bad or repeated name, and one past the
//! parse limits (more distinct names, or entries of one repeated parameter, than
//! `ParseLimits` takes: checked with the defaults and with small limits), and only
//! those; what is kept stays within the limits; `get` answers the first value; `list`
//! and `tags` never return more than the most they are given, and nothing they promise
//! to leave out; `paging` stays within its bounds and the `NextToken` it answers reads
//! back as the next page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oca_api::ecs::tags::TAG_ERRORS;
use oca_api::error::ApiError;
use oca_api::params::{self, Params, ParseLimits, MAX_PAGE_SIZE};
use oca_api::render::Format;
use std::collections::{HashMap, HashSet};

const LIST_NAMES: [&str; 4] = ["InstanceId", "ResourceId", "TagKey", "InstanceIds"];
const TAG_NAMES: [&str; 2] = ["Tag", "ResourceTag"];
const MAXES: [usize; 6] = [0, 1, 2, 3, 20, 100];
const SCALARS: [&str; 8] = [
    "Timeout",
    "PageNumber",
    "PageSize",
    "MaxResults",
    "NextToken",
    "KeepCommand",
    "Name",
    "Format",
];

fn too_many() -> ApiError {
    ApiError::InstanceIdsExceedLimit(0)
}

/// The repeated parameter a name belongs to (`Tag` for `Tag.3.Key`, `InstanceId` for
/// `InstanceId.12`), else the name itself: what `ParseLimits` counts.
fn family(name: &str) -> &str {
    match name.split_once('.') {
        Some((head, rest)) => {
            let index = rest.split('.').next().unwrap_or("");
            if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) {
                head
            } else {
                name
            }
        }
        None => name,
    }
}

/// Whether `pairs` fit `limits`.
fn within(pairs: &[(String, String)], limits: &ParseLimits) -> bool {
    let mut families: HashMap<&str, usize> = HashMap::new();
    for (k, _) in pairs {
        *families.entry(family(k)).or_default() += 1;
    }
    families.len() <= limits.max_names && families.values().all(|&n| n <= limits.max_list_entries)
}

/// `check`'s verdict on `p`, parsed from `all` under `limits`.
fn check_parse(p: &Params, all: &[(String, String)], limits: &ParseLimits) {
    let mut seen = HashSet::new();
    let names_ok = all
        .iter()
        .all(|(k, _)| params::is_parameter_name(k) && seen.insert(k.as_str()));
    let fits = within(all, limits);
    assert_eq!(
        p.check().is_ok(),
        names_ok && fits,
        "names ok: {names_ok}, within {limits:?}: {fits}: {all:?}"
    );
    if p.check().is_ok() {
        assert_eq!(p.pairs(), all, "a checked request keeps every pair");
    } else {
        // Reading stopped at the first problem: what is kept is a prefix of the
        // request, within the limits.
        assert!(all.starts_with(p.pairs()));
        assert!(within(p.pairs(), limits), "{limits:?}: {:?}", p.pairs());
    }
}

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let query = String::from_utf8_lossy(query);
    let p = Params::parse(&query, body);
    let _ = Format::from_raw_query(&query);

    // Every pair of the query and the body, as a form decodes them.
    let all: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .chain(form_urlencoded::parse(body.unwrap_or(b"")))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    check_parse(&p, &all, &ParseLimits::default());
    let small = ParseLimits {
        max_list_entries: 1 + data.len() % 5,
        max_names: 1 + data.len() / 5 % 9,
    };
    check_parse(&Params::parse_bounded(&query, body, &small), &all, &small);

    // get: the first value of a name.
    for (k, _) in p.pairs() {
        let first = p
            .pairs()
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str());
        assert_eq!(p.get(k), first);
    }

    // Names worth asking for: the usual ones, and the stems of those given.
    let mut stems: Vec<String> = LIST_NAMES.iter().map(|s| s.to_string()).collect();
    stems.extend(
        p.pairs()
            .iter()
            .take(4)
            .map(|(k, _)| k.split('.').next().unwrap_or("").to_string()),
    );

    for name in &stems {
        for max in MAXES {
            if let Ok(list) = p.list(name, max, too_many) {
                assert!(
                    list.len() <= max,
                    "list({name:?}, {max}) answered {} items: {list:?}",
                    list.len()
                );
                assert!(list.iter().all(|s| !s.is_empty()), "{list:?}");
            }
        }
    }
    for name in TAG_NAMES
        .iter()
        .copied()
        .chain(stems.iter().map(|s| s.as_str()))
    {
        for max in MAXES {
            if let Ok(tags) = p.tags(name, max, TAG_ERRORS) {
                assert!(tags.len() <= max, "tags({name:?}, {max}): {}", tags.len());
                let mut keys = HashSet::new();
                for t in &tags {
                    assert!(!t.key.is_empty());
                    assert!(t.key.chars().count() <= 128 && t.value.chars().count() <= 128);
                    assert!(keys.insert(t.key.as_str()), "key {:?} twice", t.key);
                }
            }
        }
    }

    // Scalars: never a panic; parsed values are what was given.
    for name in SCALARS
        .iter()
        .copied()
        .chain(stems.iter().map(|s| s.as_str()))
    {
        if let Ok(Some(n)) = p.int(name) {
            assert_eq!(
                p.non_empty(name).map(|v| v.trim().parse::<i64>().ok()),
                Some(Some(n))
            );
        }
        if let Ok(Some(b)) = p.bool(name) {
            assert!(p
                .non_empty(name)
                .unwrap()
                .eq_ignore_ascii_case(&b.to_string()));
        }
        let _ = p.string_max(name, 8, too_many);
        let _ = p.wire_enum::<oca_domain::status::InvocationStatus>(name, "a status");
        if let Some(v) = p.get(name) {
            let _ = params::check_text(name, v, false);
            let _ = params::check_text(name, v, true);
        }
    }
    let _ = p.required("RegionId");

    // Paging.
    if let Ok(paging) = p.paging() {
        assert!(
            (1..=MAX_PAGE_SIZE).contains(&paging.page_size),
            "{paging:?}"
        );
        assert!(paging.page_number >= 1, "{paging:?}");
        if !paging.token_mode {
            assert_eq!(
                paging.offset,
                (paging.page_number - 1) * paging.page_size,
                "{paging:?}"
            );
        }
        let page = paging.page();
        assert_eq!((page.offset, page.limit), (paging.offset, paging.page_size));
        // Totals are row counts, which tables keep in an i64.
        let most = i64::MAX as u64;
        for total in [0, 1, paging.offset, paging.offset.saturating_add(1), most] {
            let token = paging.next_token(total);
            if token.is_empty() {
                continue;
            }
            // The token reads back as the next page.
            let next = Params::from_pairs(vec![
                ("MaxResults".into(), paging.page_size.to_string()),
                ("NextToken".into(), token.clone()),
            ])
            .paging()
            .unwrap_or_else(|e| panic!("our own NextToken {token:?} is refused: {e:?}"));
            assert_eq!(next.offset, paging.offset + paging.page_size, "{token:?}");
            assert!(next.offset < total);
        }
        let _ = paging.next_position(None);
    }
});
