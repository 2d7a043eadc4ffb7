//! Time on the wire: UTC, second precision, `2019-12-20T06:15:56Z`.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch; the store and the protocol keep times as this.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// Formats a time for the API (`2019-12-20T06:15:56Z`).
pub fn format_api(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => String::new(),
    }
}

/// Formats an optional time; absent times are the empty string on the wire.
pub fn format_api_opt(ms: Option<Millis>) -> String {
    ms.map(format_api).unwrap_or_default()
}

/// Parses `2019-12-20T06:15:56Z` (and any RFC 3339 time) into milliseconds.
pub fn parse_api(s: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_api("2019-12-20T06:15:56Z").unwrap();
        assert_eq!(format_api(ms), "2019-12-20T06:15:56Z");
        assert_eq!(format_api_opt(None), "");
        assert_eq!(parse_api("yesterday"), None);
    }
}
