//! Request parameters: the query string and a form body merged, with typed getters
//! that answer the vendor's errors for absent or malformed values.

use crate::error::ApiError;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The decoded parameters of one request, in arrival order (query first, then body).
///
/// Every name is checked once at parse time ([`Params::check`]): a name is letters,
/// digits, `.`, `_` and `-`, and appears once. Both rules keep a signed request from
/// being altered in transit: the V3 canonical query (as the SDKs build it) does not
/// encode names, so `Username%3Dnobody%26WorkingDir=%2Ftmp` (one odd name) and
/// `Username=nobody&WorkingDir=%2Ftmp` (two parameters) sign alike; and the canonical
/// forms sort repeated names, so swapping two values of one name would keep the
/// signature while changing which value counts.
///
/// What is kept is bounded ([`ParseLimits`]): a repeated parameter past what any
/// action takes, or more names than any action has, ends the parse there and the
/// request is refused (with that parameter's count error), so a 2 MB body of 100,000
/// `Tag.N` costs a scan, not 100,000 allocations. Lookups are by an index built in the
/// same pass.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// Name → position in `pairs` of its (only) value.
    index: HashMap<String, usize>,
    /// Entries of each repeated parameter (`Tag` for `Tag.3.Key`), and plain names.
    families: HashMap<String, usize>,
    /// The first thing that breaks the rules.
    problem: Option<Problem>,
}

/// Why a request's parameters are refused before anything else is done with them.
#[derive(Debug, Clone)]
enum Problem {
    /// A malformed or repeated name (quoted), and why.
    Name(String, &'static str),
    /// More entries of one repeated parameter than any action takes.
    TooMany { family: String, max: usize },
    /// More names than any action has.
    TooManyNames(usize),
}

/// How much of a request [`Params`] keeps.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// The most entries of one repeated parameter (`InstanceId.N`, `Tag.N.Key` and
    /// `Tag.N.Value`, …): more than the largest list any action takes.
    pub max_list_entries: usize,
    /// The most distinct names (repeated parameters counted once).
    pub max_names: usize,
}

impl ParseLimits {
    /// The limits for a server taking `max_instances` instances per invocation: the
    /// longest list is that, or 20 tags of two entries each.
    pub fn for_instances(max_instances: usize) -> ParseLimits {
        ParseLimits {
            max_list_entries: max_instances.max(2 * 20) + 1,
            // Every action takes fewer than 50 names (RunCommand, the largest, about
            // 40 with the signing ones): past 256 a request is not any action's.
            max_names: 256,
        }
    }
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits::for_instances(500)
    }
}

/// The repeated parameter a name belongs to: `Tag` for `Tag.3.Key`, `InstanceId` for
/// `InstanceId.12`; `None` for a plain name.
fn family(name: &str) -> Option<&str> {
    let (head, rest) = name.split_once('.')?;
    let index = rest.split('.').next().unwrap_or("");
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(head)
}

/// How many rows per page, and which page.
///
/// `NextToken` is one of two kinds. The invocation and result listings answer a
/// position token (`k` and the last row's sort key, see [`oca_store::Cursor`]): the
/// next page starts after that row, whatever was added at the head meanwhile, and
/// costs the same however deep. Other listings answer an offset (hex). Either is
/// accepted by any listing (a position token only by those that page by position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// The page number to report (1 for token paging).
    pub page_number: u64,
    pub page_size: u64,
    /// First row of the page (0 with a position).
    pub offset: u64,
    /// Set when the caller pages with MaxResults/NextToken.
    pub token_mode: bool,
    /// The position a position token names.
    pub after: Option<oca_store::Cursor>,
}

/// The prefix of position tokens.
const POSITION_TOKEN: &str = "k";

pub const DEFAULT_PAGE_SIZE: u64 = 10;
pub const MAX_PAGE_SIZE: u64 = 50;

impl Paging {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn page(&self) -> oca_store::Page {
        oca_store::Page {
            offset: self.offset(),
            limit: self.page_size,
        }
    }

    /// The `NextToken` of a listing that pages by position: empty on the last page.
    pub fn next_position(&self, next: Option<&oca_store::Cursor>) -> String {
        match next {
            Some(c) => format!("{POSITION_TOKEN}{}", c.encode()),
            None => String::new(),
        }
    }

    /// The `NextToken` to return: empty when there are no more rows.
    pub fn next_token(&self, total: u64) -> String {
        let next = self.offset() + self.page_size;
        if next < total {
            encode_token(next)
        } else {
            String::new()
        }
    }
}

fn encode_token(offset: u64) -> String {
    format!("{offset:x}")
}

/// The furthest row a listing can start at: tables count their rows in an `i64`, so
/// no total, and no offset token we answer, is larger. Refusing larger offsets keeps
/// the page number and the next offset from overflowing.
const MAX_OFFSET: u64 = i64::MAX as u64;

fn decode_token(token: &str) -> Option<u64> {
    if token.is_empty() || token.len() > 16 {
        return None;
    }
    u64::from_str_radix(token, 16)
        .ok()
        .filter(|&offset| offset <= MAX_OFFSET)
}

/// The errors [`Params::tags`] answers with; `Tag.N` and `ResourceTag.N` have their
/// own vendor codes.
pub struct TagErrors {
    pub missing_key: fn() -> ApiError,
    pub bad_key: fn() -> ApiError,
    pub bad_value: fn() -> ApiError,
    pub duplicate: fn() -> ApiError,
    pub too_many: fn() -> ApiError,
}

/// Whether `name` may name a parameter: letters, digits, `.`, `_`, `-` (every name the
/// vendor's APIs define: `InstanceId.1`, `Tag.2.Key`, `x-acs-…` are all of these).
pub fn is_parameter_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a name or description may hold `c`: no control character (names take none,
/// descriptions take tab and line breaks), and nothing XML 1.0 cannot carry, so that
/// what is stored can be shown in every format and every terminal.
fn text_char_ok(c: char, multiline: bool) -> bool {
    if multiline && matches!(c, '\t' | '\n' | '\r') {
        return true;
    }
    !c.is_control() && !crate::render::forbidden_in_xml(c)
}

/// Refuses a name (`multiline = false`) or description (`true`) holding a character
/// it may not: `InvalidParameter` naming the parameter and the character.
pub fn check_text(param: &str, value: &str, multiline: bool) -> Result<(), ApiError> {
    match value.chars().find(|&c| !text_char_ok(c, multiline)) {
        None => Ok(()),
        Some(c) => Err(ApiError::InvalidParameter(
            param.to_string(),
            format!(
                "it contains the control character U+{:04X}; {}",
                c as u32,
                if multiline {
                    "only tab and line breaks are taken"
                } else {
                    "a name takes none"
                }
            ),
        )),
    }
}

/// A name as quoted in an error message: at most 64 characters, escaped.
fn quoted(name: &str) -> String {
    let mut short: String = name.chars().take(64).collect();
    if short.len() < name.len() {
        short.push('…');
    }
    format!("{short:?}")
}

impl Params {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut params = Params {
            pairs: Vec::with_capacity(pairs.len()),
            ..Params::default()
        };
        for (k, v) in pairs {
            params.push(k, v);
        }
        params
    }

    /// Keeps a pair (the problem, if any, is only noted: see [`Self::admit`]).
    fn push(&mut self, name: String, value: String) {
        if self.problem.is_none() {
            if !is_parameter_name(&name) {
                self.problem = Some(Problem::Name(
                    quoted(&name),
                    "a parameter name is made of letters, digits, \".\", \"_\" and \"-\"",
                ));
            } else if self.index.contains_key(&name) {
                self.problem = Some(Problem::Name(name.clone(), "it is given more than once"));
            }
        }
        self.index.entry(name.clone()).or_insert(self.pairs.len());
        self.pairs.push((name, value));
    }

    /// Whether a pair named `name` may be kept under `limits`; notes the problem and
    /// answers false when it may not (the parse then stops).
    fn admit(&mut self, name: &str, limits: &ParseLimits) -> bool {
        if self.problem.is_some() {
            return false;
        }
        let key = family(name).unwrap_or(name);
        let known = self.families.len();
        match self.families.get_mut(key) {
            Some(n) => {
                *n += 1;
                if *n > limits.max_list_entries {
                    self.problem = Some(Problem::TooMany {
                        family: key.to_string(),
                        max: limits.max_list_entries,
                    });
                    return false;
                }
            }
            None if known >= limits.max_names => {
                self.problem = Some(Problem::TooManyNames(limits.max_names));
                return false;
            }
            None => {
                self.families.insert(key.to_string(), 1);
            }
        }
        true
    }

    /// Parses a raw query string and (when the body is a form) the body, with the
    /// default [`ParseLimits`].
    pub fn parse(raw_query: &str, form_body: Option<&[u8]>) -> Self {
        Self::parse_bounded(raw_query, form_body, &ParseLimits::default())
    }

    /// Parses a raw query string and (when the body is a form) the body, keeping at
    /// most what `limits` allow: past them, or at the first malformed or repeated name,
    /// reading stops and [`Self::check`] refuses the request (the pairs read so far
    /// stay, so that the error can be written in the requested `Format`).
    pub fn parse_bounded(raw_query: &str, form_body: Option<&[u8]>, limits: &ParseLimits) -> Self {
        let mut params = Params::default();
        let body = form_body.unwrap_or(b"");
        let pairs =
            form_urlencoded::parse(raw_query.as_bytes()).chain(form_urlencoded::parse(body));
        for (k, v) in pairs {
            if !params.admit(&k, limits) {
                break;
            }
            params.push(k.into_owned(), v.into_owned());
            if params.problem.is_some() {
                break;
            }
        }
        params
    }

    /// Refuses a request with a malformed or repeated parameter name, or past the
    /// parse limits: a repeated parameter answers its own count error (`Tag` →
    /// `NumberExceed.Tags`, `InstanceId` → `InstanceIds.ExceedLimit`, …).
    pub fn check(&self) -> Result<(), ApiError> {
        match &self.problem {
            None => Ok(()),
            Some(Problem::Name(name, why)) => {
                Err(ApiError::InvalidParameter(name.clone(), why.to_string()))
            }
            Some(Problem::TooMany { family, max }) => Err(match family.as_str() {
                "Tag" | "TagKey" => (crate::ecs::tags::TAG_ERRORS.too_many)(),
                "ResourceTag" => (crate::ecs::invocations::RESOURCE_TAG_ERRORS.too_many)(),
                "InstanceId" | "InstanceIds" => ApiError::InstanceIdsExceedLimit(*max - 1),
                other => ApiError::InvalidParameter(
                    format!("{}.N", quoted(other)),
                    format!("more than {} entries are not taken", *max - 1),
                ),
            }),
            Some(Problem::TooManyNames(max)) => Err(ApiError::InvalidParameter(
                "(request)".into(),
                format!("more than {max} parameter names are not taken: no action has as many"),
            )),
        }
    }

    /// Whether [`Self::check`] refuses the request for going past the parse limits
    /// (rather than for a malformed or repeated name).
    pub fn over_limits(&self) -> bool {
        matches!(
            self.problem,
            Some(Problem::TooMany { .. } | Problem::TooManyNames(_))
        )
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value given for `name` (the first, should a malformed request repeat it).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.pairs[i].1.as_str())
    }

    /// A value that is present and not empty.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.non_empty(name).ok_or(ApiError::MissingParameter(name))
    }

    /// A string no longer than `max` characters.
    pub fn string_max(
        &self,
        name: &str,
        max: usize,
        too_long: impl FnOnce() -> ApiError,
    ) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            Some(v) if v.chars().count() > max => Err(too_long()),
            Some(v) => Ok(Some(v.to_string())),
            None => Ok(None),
        }
    }

    /// `true`/`false`, any case; absent or empty is `None`.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.non_empty(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::InvalidParameter(
                name.to_string(),
                format!("{v:?} is not a boolean (true or false)"),
            )),
        }
    }

    /// A wire enum (a status), parsed as its type parses it; absent or empty is
    /// `None`, anything else is `InvalidParameter` saying which values are accepted.
    pub fn wire_enum<T: std::str::FromStr>(
        &self,
        name: &str,
        accepted: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.non_empty(name) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|_| {
                ApiError::InvalidParameter(name.to_string(), format!("use {accepted}"))
            }),
        }
    }

    /// A whole number; absent or empty is `None`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.non_empty(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::InvalidParameter(name.to_string(), format!("{v:?} is not a whole number"))
            }),
        }
    }

    /// A repeated list `Name.1`, `Name.2`, … in index order (a JSON array in `Name`
    /// itself is accepted too, as some SDK styles send). Empty values are skipped. More
    /// than `max` entries is `too_many()`, found as soon as entry `max + 1` is read.
    pub fn list(
        &self,
        name: &str,
        max: usize,
        too_many: impl Fn() -> ApiError,
    ) -> Result<Vec<String>, ApiError> {
        let prefix = format!("{name}.");
        let mut indexed: Vec<(u64, &str)> = Vec::new();
        for (k, v) in &self.pairs {
            let Some(idx) = k.strip_prefix(&prefix) else {
                continue;
            };
            let n: u64 = idx.parse().map_err(|_| {
                ApiError::InvalidParameter(k.clone(), "the list index is not a number".into())
            })?;
            if indexed.len() == max {
                return Err(too_many());
            }
            indexed.push((n, v));
        }
        indexed.sort_unstable_by_key(|(n, _)| *n);
        let mut out: Vec<String> = indexed
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(_, v)| v.to_string())
            .collect();
        if let Some(v) = self.non_empty(name) {
            match bounded_json_strings(v, max.saturating_sub(out.len())) {
                JsonList::Strings(list) => out.extend(list.into_iter().filter(|s| !s.is_empty())),
                JsonList::TooMany => return Err(too_many()),
                JsonList::NotAList if out.len() == max => return Err(too_many()),
                JsonList::NotAList => out.push(v.to_string()),
            }
        }
        Ok(out)
    }

    /// A repeated list of tags `Name.N.Key` / `Name.N.Value`, in index order. Entries
    /// with neither key nor value are skipped; a value without a key is an error
    /// (`missing`). At most `max` (`too_many` as soon as tag `max + 1` is read); keys at
    /// most 128 characters, values 128, each key once.
    pub fn tags(
        &self,
        name: &str,
        max: usize,
        errors: TagErrors,
    ) -> Result<Vec<oca_store::Tag>, ApiError> {
        let prefix = format!("{name}.");
        let mut indexed: BTreeMap<u64, (Option<&str>, Option<&str>)> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let Some((idx, field)) = rest.split_once('.') else {
                continue;
            };
            if field != "Key" && field != "Value" {
                continue;
            }
            let n: u64 = idx.parse().map_err(|_| {
                ApiError::InvalidParameter(k.clone(), "the list index is not a number".into())
            })?;
            if !indexed.contains_key(&n) && indexed.len() == max {
                return Err((errors.too_many)());
            }
            let entry = indexed.entry(n).or_default();
            if field == "Key" {
                entry.0 = Some(v);
            } else {
                entry.1 = Some(v);
            }
        }
        let mut tags: Vec<oca_store::Tag> = Vec::new();
        let mut keys: HashSet<&str> = HashSet::new();
        for (_, (key, value)) in indexed {
            let key = match key.filter(|k| !k.is_empty()) {
                Some(k) => k,
                None if value.unwrap_or("").is_empty() => continue,
                None => return Err((errors.missing_key)()),
            };
            let value = value.unwrap_or_default();
            if key.chars().count() > 128 || key.starts_with("aliyun") || key.starts_with("acs:") {
                return Err((errors.bad_key)());
            }
            if value.chars().count() > 128 {
                return Err((errors.bad_value)());
            }
            if !keys.insert(key) {
                return Err((errors.duplicate)());
            }
            tags.push(oca_store::Tag {
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        Ok(tags)
    }

    /// `PageNumber` / `PageSize`, or `MaxResults` / `NextToken` when either is given.
    pub fn paging(&self) -> Result<Paging, ApiError> {
        let max_results = self.non_empty("MaxResults");
        let next_token = self.non_empty("NextToken");
        if max_results.is_some() || next_token.is_some() {
            let size = match max_results {
                None => DEFAULT_PAGE_SIZE,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                    _ => return Err(ApiError::InvalidMaxResults),
                },
            };
            let (offset, after) = match next_token {
                None => (0, None),
                Some(t) => match t.strip_prefix(POSITION_TOKEN) {
                    Some(position) => (
                        0,
                        Some(
                            oca_store::Cursor::decode(position)
                                .ok_or(ApiError::InvalidNextToken)?,
                        ),
                    ),
                    None => (decode_token(t).ok_or(ApiError::InvalidNextToken)?, None),
                },
            };
            return Ok(Paging {
                page_number: offset / size + 1,
                page_size: size,
                offset,
                token_mode: true,
                after,
            });
        }
        let page_number = match self.non_empty("PageNumber") {
            None => 1,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 && n <= u32::MAX as u64 => n,
                _ => return Err(ApiError::InvalidPageNumber),
            },
        };
        let page_size = match self.non_empty("PageSize") {
            None => DEFAULT_PAGE_SIZE,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => return Err(ApiError::InvalidPageSize),
            },
        };
        Ok(Paging {
            page_number,
            page_size,
            offset: (page_number - 1) * page_size,
            token_mode: false,
            after: None,
        })
    }
}

/// What a JSON-array list parameter held.
enum JsonList {
    Strings(Vec<String>),
    /// More than the most allowed: reading stopped there.
    TooMany,
    /// Not a JSON array of strings: the value is one item.
    NotAList,
}

/// Reads `text` as a JSON array of at most `max` strings, stopping at string `max + 1`.
fn bounded_json_strings(text: &str, max: usize) -> JsonList {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    const TOO_MANY: &str = "oca: too many items";
    struct Bounded(usize);
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(TOO_MANY));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match de
        .deserialize_seq(Bounded(max))
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(list) => JsonList::Strings(list),
        Err(e) if e.to_string().starts_with(TOO_MANY) => JsonList::TooMany,
        Err(_) => JsonList::NotAList,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        Params::parse(q, None)
    }

    fn too_many() -> ApiError {
        ApiError::InstanceIdsExceedLimit(3)
    }

    #[test]
    fn lists_come_in_index_order() {
        let params = p("InstanceId.2=b&InstanceId.1=a&InstanceId.10=c&Other=x");
        assert_eq!(
            params.list("InstanceId", 3, too_many).unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            p("InstanceId=%5B%22a%22%5D")
                .list("InstanceId", 3, too_many)
                .unwrap(),
            vec!["a"]
        );
        assert!(p("InstanceId.x=a").list("InstanceId", 3, too_many).is_err());
    }

    #[test]
    fn lists_stop_at_their_limit() {
        let four = p("InstanceId.1=a&InstanceId.2=b&InstanceId.3=c&InstanceId.4=d");
        let e = four.list("InstanceId", 3, too_many).unwrap_err();
        assert_eq!(e.code(), "InstanceIds.ExceedLimit");
        let json = p("InstanceId=%5B%22a%22%2C%22b%22%2C%22c%22%2C%22d%22%5D");
        let e = json.list("InstanceId", 3, too_many).unwrap_err();
        assert_eq!(e.code(), "InstanceIds.ExceedLimit");
        // Both forms count together.
        let mixed = p("InstanceId.1=a&InstanceId.2=b&InstanceId=%5B%22c%22%2C%22d%22%5D");
        assert!(mixed.list("InstanceId", 3, too_many).is_err());
        assert_eq!(mixed.list("InstanceId", 4, too_many).unwrap().len(), 4);
    }

    #[test]
    fn a_plain_value_counts_towards_the_limit() {
        // Found by the `params` fuzz target: `Name` itself, when not a JSON array, is
        // one more item, and it too must stop at the limit.
        let full = p("InstanceId.1=a&InstanceId.2=b&InstanceId.3=c&InstanceId=d");
        let e = full.list("InstanceId", 3, too_many).unwrap_err();
        assert_eq!(e.code(), "InstanceIds.ExceedLimit");
        assert_eq!(
            full.list("InstanceId", 4, too_many).unwrap(),
            vec!["a", "b", "c", "d"]
        );
        assert!(p("InstanceId=a").list("InstanceId", 0, too_many).is_err());
        // Empty entries are not items.
        assert_eq!(
            p("InstanceId.1=&InstanceId=d")
                .list("InstanceId", 1, too_many)
                .unwrap(),
            vec!["d"]
        );
    }

    #[test]
    fn query_and_body_are_merged() {
        let params = Params::parse("A=1&B=2", Some(b"C=%20x"));
        params.check().unwrap();
        assert_eq!(params.get("A"), Some("1"));
        assert_eq!(params.get("B"), Some("2"));
        assert_eq!(params.get("C"), Some(" x"));
    }

    #[test]
    fn names_are_plain_and_given_once() {
        // The rewrite that would otherwise keep a V3 signature: one odd name.
        let odd = p("Username%3Dnobody%26WorkingDir=%2Ftmp");
        assert_eq!(odd.pairs().len(), 1);
        let e = odd.check().unwrap_err();
        assert_eq!((e.code().as_str(), e.status()), ("InvalidParameter", 400));
        assert!(
            e.message().contains("Username=nobody&WorkingDir"),
            "{}",
            e.message()
        );
        for bad in ["a%20b=1", "=1", "a%00=1", "%E4%B8%AD=1", "a+b=1", "a%2Fb=1"] {
            assert!(p(bad).check().is_err(), "{bad}");
        }
        // A name given twice, in the query, or in the query and the body.
        assert!(p("A=1&A=2").check().is_err());
        assert!(Params::parse("A=1", Some(b"A=2")).check().is_err());
        for good in ["InstanceId.1=x", "Tag.20.Key=k", "x-acs-a_b.c=1", "A="] {
            p(good).check().unwrap();
        }
        // A long name is quoted short.
        let long = format!("{}%3D=1", "n".repeat(10_000));
        let e = p(&long).check().unwrap_err();
        assert!(e.message().len() < 400, "{}", e.message());
    }

    #[test]
    fn names_and_descriptions_take_no_control_characters() {
        check_text("Name", "deploy web-1 (中文)", false).unwrap();
        check_text("Description", "line 1\n\tline 2\r\n", true).unwrap();
        for bad in [
            "a\u{1}",
            "nul\u{0}",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
            "\u{FFFF}",
        ] {
            let e = check_text("Description", bad, true).unwrap_err();
            assert_eq!(
                (e.code().as_str(), e.status()),
                ("InvalidParameter", 400),
                "{bad:?}"
            );
            assert!(check_text("Name", bad, false).is_err(), "{bad:?}");
        }
        assert!(check_text("Name", "two\nlines", false).is_err());
        assert!(check_text("Name", "tab\t", false).is_err());
    }

    #[test]
    fn repeated_parameters_stop_at_their_limit_at_parse_time() {
        use crate::ecs::tags::TAG_ERRORS;
        let flood = |name: &dyn Fn(usize) -> String| -> String {
            (1..=100_000).map(|n| format!("{}=k&", name(n))).collect()
        };
        let t = std::time::Instant::now();
        // 100,000 Tag.N: reading stops past the longest list any action takes.
        let tags = p(&flood(&|n| format!("Tag.{n}.Key")));
        assert!(
            tags.pairs().len() <= 502,
            "{} pairs kept",
            tags.pairs().len()
        );
        assert_eq!(tags.check().unwrap_err().code(), "NumberExceed.Tags");
        let ids = p(&flood(&|n| format!("InstanceId.{n}")));
        let e = ids.check().unwrap_err();
        assert_eq!(
            (e.code().as_str(), e.status()),
            ("InstanceIds.ExceedLimit", 403)
        );
        let rtags = p(&flood(&|n| format!("ResourceTag.{n}.Key")));
        assert_eq!(
            rtags.check().unwrap_err().code(),
            "NumberExceed.ResourceTags"
        );
        let other = p(&flood(&|n| format!("Foo.{n}")));
        assert_eq!(other.check().unwrap_err().code(), "InvalidParameter");
        // 100,000 names of their own (or of as many lists).
        let names = p(&flood(&|n| format!("N{n}")));
        assert!(names.pairs().len() <= 256);
        assert_eq!(names.check().unwrap_err().code(), "InvalidParameter");
        let lists = p(&flood(&|n| format!("L{n}.1")));
        assert!(lists.pairs().len() <= 256);
        assert!(lists.check().is_err());
        // Generous: the point is that it is linear and stops early (80,000 tags took
        // 21 s before).
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );

        // Under the parse limits, the action's own limit answers (the handler's path).
        let thirty: String = (1..=30).map(|n| format!("Tag.{n}.Key=k{n}&")).collect();
        let params = p(&thirty);
        params.check().unwrap();
        assert_eq!(
            params.tags("Tag", 20, TAG_ERRORS).unwrap_err().code(),
            "NumberExceed.Tags"
        );
        let twenty: String = (1..=20).map(|n| format!("Tag.{n}.Key=k{n}&")).collect();
        assert_eq!(p(&twenty).tags("Tag", 20, TAG_ERRORS).unwrap().len(), 20);
        let dup = p("Tag.1.Key=a&Tag.2.Key=a");
        assert_eq!(
            dup.tags("Tag", 20, TAG_ERRORS).unwrap_err().code(),
            "Duplicate.TagKey"
        );
        // A larger server takes longer lists.
        let big = ParseLimits::for_instances(2_000);
        let many: String = (1..=1_500)
            .map(|n| format!("InstanceId.{n}=i-{n}&"))
            .collect();
        Params::parse_bounded(&many, None, &big).check().unwrap();
        assert!(p(&many).check().is_err());
    }

    #[test]
    fn families() {
        assert_eq!(family("Tag.3.Key"), Some("Tag"));
        assert_eq!(family("InstanceId.12"), Some("InstanceId"));
        assert_eq!(family("InstanceId"), None);
        assert_eq!(family("x-acs-a.b"), None);
        assert_eq!(family("A.1x"), None);
        assert_eq!(family("A."), None);
    }

    #[test]
    fn paging_defaults_limits_and_errors() {
        let d = p("").paging().unwrap();
        assert_eq!((d.page_number, d.page_size, d.offset()), (1, 10, 0));
        let x = p("PageNumber=3&PageSize=50").paging().unwrap();
        assert_eq!(x.offset(), 100);
        assert_eq!(
            p("PageSize=51").paging().unwrap_err().code(),
            "InvalidParam.PageSize"
        );
        assert_eq!(
            p("PageSize=0").paging().unwrap_err().code(),
            "InvalidParam.PageSize"
        );
        assert_eq!(
            p("PageSize=abc").paging().unwrap_err().code(),
            "InvalidParam.PageSize"
        );
        assert_eq!(
            p("PageNumber=0").paging().unwrap_err().code(),
            "InvalidParam.PageNumber"
        );
        assert_eq!(
            p("PageNumber=-1").paging().unwrap_err().code(),
            "InvalidParam.PageNumber"
        );
        assert_eq!(p("PageNumber=").paging().unwrap().page_number, 1);
    }

    #[test]
    fn tokens_walk_every_row_once() {
        let total = 23;
        let mut seen = vec![];
        let mut q = "MaxResults=5".to_string();
        loop {
            let pg = p(&q).paging().unwrap();
            assert!(pg.token_mode);
            seen.extend(pg.offset()..(pg.offset() + pg.page_size).min(total));
            let next = pg.next_token(total);
            if next.is_empty() {
                break;
            }
            q = format!("MaxResults=5&NextToken={next}");
        }
        assert_eq!(seen, (0..total).collect::<Vec<_>>());
        // A token from a walk with another page size starts exactly where it says.
        assert_eq!(p("MaxResults=4&NextToken=5").paging().unwrap().offset(), 5);
        assert_eq!(
            p("NextToken=zz").paging().unwrap_err().code(),
            "InvalidParam.NextToken"
        );
        assert_eq!(
            p("MaxResults=99").paging().unwrap_err().code(),
            "InvalidParam.MaxResults"
        );
    }

    #[test]
    fn offset_tokens_past_any_row_are_refused() {
        // Found while writing the `params` fuzz target's paging property: an offset
        // near u64::MAX overflowed computing the page number and the next token.
        for q in [
            "NextToken=ffffffffffffffff",
            "MaxResults=1&NextToken=ffffffffffffffff",
            "MaxResults=50&NextToken=ffffffffffffffce",
            "NextToken=8000000000000000",
        ] {
            assert_eq!(
                p(q).paging().unwrap_err().code(),
                "InvalidParam.NextToken",
                "{q}"
            );
        }
        // The furthest offset a table can have still reads, as the last page.
        let pg = p("MaxResults=50&NextToken=7fffffffffffffff")
            .paging()
            .unwrap();
        assert_eq!(pg.offset(), MAX_OFFSET);
        assert_eq!(pg.page_number, MAX_OFFSET / 50 + 1);
        assert_eq!(pg.next_token(MAX_OFFSET), "");
    }

    #[test]
    fn wire_enums_parse_or_say_what_is_accepted() {
        use oca_domain::status::InvokeStatus;
        let params = p("S=finished&Bad=Done");
        assert_eq!(
            params.wire_enum::<InvokeStatus>("S", "x").unwrap(),
            Some(InvokeStatus::Finished)
        );
        assert_eq!(
            params.wire_enum::<InvokeStatus>("Missing", "x").unwrap(),
            None
        );
        let e = params
            .wire_enum::<InvokeStatus>("Bad", "Running or Finished")
            .unwrap_err();
        assert_eq!((e.code().as_str(), e.status()), ("InvalidParameter", 400));
        assert!(
            e.message().contains("Running or Finished"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn typed_getters() {
        let params = p("T=True&F=false&N=12&Bad=x");
        assert_eq!(params.bool("T").unwrap(), Some(true));
        assert_eq!(params.bool("F").unwrap(), Some(false));
        assert_eq!(params.bool("Missing").unwrap(), None);
        assert!(params.bool("Bad").is_err());
        assert_eq!(params.int("N").unwrap(), Some(12));
        assert!(params.int("Bad").is_err());
        assert_eq!(params.required("N").unwrap(), "12");
        assert_eq!(
            params.required("Nope").unwrap_err().code(),
            "MissingParameter"
        );
    }
}
