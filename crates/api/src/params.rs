//! Request parameters: the query string and a form body merged, with typed getters
//! that answer the vendor's errors for absent or malformed values.

use crate::error::ApiError;
use std::collections::BTreeMap;

/// The decoded parameters of one request, in arrival order (query first, then body).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
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

fn decode_token(token: &str) -> Option<u64> {
    if token.is_empty() || token.len() > 16 {
        return None;
    }
    u64::from_str_radix(token, 16).ok()
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

impl Params {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Params { pairs }
    }

    /// Parses a raw query string and (when the body is a form) the body.
    pub fn parse(raw_query: &str, form_body: Option<&[u8]>) -> Self {
        let mut pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect();
        if let Some(body) = form_body {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params { pairs }
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The last value given for `name` (a value in the body wins over the query).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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
    /// itself is accepted too, as some SDK styles send). Empty values are skipped.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let prefix = format!("{name}.");
        let mut indexed: BTreeMap<u64, String> = BTreeMap::new();
        for (k, v) in &self.pairs {
            if let Some(idx) = k.strip_prefix(&prefix) {
                let n: u64 = idx.parse().map_err(|_| {
                    ApiError::InvalidParameter(k.clone(), "the list index is not a number".into())
                })?;
                if !v.is_empty() {
                    indexed.insert(n, v.clone());
                }
            }
        }
        let mut out: Vec<String> = indexed.into_values().collect();
        if let Some(v) = self.non_empty(name) {
            match serde_json::from_str::<Vec<String>>(v) {
                Ok(list) => out.extend(list.into_iter().filter(|s| !s.is_empty())),
                Err(_) => out.push(v.to_string()),
            }
        }
        Ok(out)
    }

    /// A repeated list of tags `Name.N.Key` / `Name.N.Value`, in index order. Entries
    /// with neither key nor value are skipped; a value without a key is an error
    /// (`missing`). At most `max`; keys at most 128 characters, values 128, each key
    /// once.
    pub fn tags(
        &self,
        name: &str,
        max: usize,
        errors: TagErrors,
    ) -> Result<Vec<oca_store::Tag>, ApiError> {
        let prefix = format!("{name}.");
        let mut indexed: BTreeMap<u64, (Option<String>, Option<String>)> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let Some((idx, field)) = rest.split_once('.') else {
                continue;
            };
            let n: u64 = idx.parse().map_err(|_| {
                ApiError::InvalidParameter(k.clone(), "the list index is not a number".into())
            })?;
            let entry = indexed.entry(n).or_default();
            match field {
                "Key" => entry.0 = Some(v.clone()),
                "Value" => entry.1 = Some(v.clone()),
                _ => {}
            }
        }
        let mut tags: Vec<oca_store::Tag> = Vec::new();
        for (_, (key, value)) in indexed {
            let key = match key.filter(|k| !k.is_empty()) {
                Some(k) => k,
                None if value.as_deref().unwrap_or("").is_empty() => continue,
                None => return Err((errors.missing_key)()),
            };
            let value = value.unwrap_or_default();
            if key.chars().count() > 128 || key.starts_with("aliyun") || key.starts_with("acs:") {
                return Err((errors.bad_key)());
            }
            if value.chars().count() > 128 {
                return Err((errors.bad_value)());
            }
            if tags.iter().any(|t| t.key == key) {
                return Err((errors.duplicate)());
            }
            tags.push(oca_store::Tag { key, value });
        }
        if tags.len() > max {
            return Err((errors.too_many)());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Params {
        Params::parse(q, None)
    }

    #[test]
    fn lists_come_in_index_order() {
        let params = p("InstanceId.2=b&InstanceId.1=a&InstanceId.10=c&Other=x");
        assert_eq!(params.list("InstanceId").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(
            p("InstanceId=%5B%22a%22%5D").list("InstanceId").unwrap(),
            vec!["a"]
        );
        assert!(p("InstanceId.x=a").list("InstanceId").is_err());
    }

    #[test]
    fn body_values_win_and_are_merged() {
        let params = Params::parse("A=1&B=2", Some(b"B=3&C=%20x"));
        assert_eq!(params.get("A"), Some("1"));
        assert_eq!(params.get("B"), Some("3"));
        assert_eq!(params.get("C"), Some(" x"));
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
