//! The time zone a frequency is read in.
//!
//! The vendor accepts three spellings of a zone after an `at(…)` time or a cron
//! expression, and the official agent parses exactly these:
//! - a tz database name, recognised by its `/` (`Asia/Shanghai`, `America/Los_Angeles`,
//!   `Etc/GMT-8`); names are case-sensitive, as the agent's `time.LoadLocation` is;
//! - an offset from GMT with no leading zero in the hour: `GMT+8:00`, `GMT-7:00`,
//!   `GMT+5:45`; hours 0–14, minutes 00–59;
//! - the abbreviations `UTC` and `GMT`, both meaning UTC.
//!
//! [`Zone::parse`] takes only those. [`Zone::parse_instance`] reads the zone an instance
//! reports for itself, which is either a tz name or the agent's `GMT±H:MM` fallback, and
//! forgives a few more spellings (`GMT+08:00`, `UTC+8`, `+08:00`, `Z`).
//!
//! ## Local times that do not exist, or exist twice
//! [`Zone::resolve`] turns a wall-clock time into an instant:
//! - a time skipped by a forward change (02:30 on the day New York springs forward) is read
//!   with the offset in force *before* the change, so it lands as far after the change as
//!   it was after its start: 02:30 becomes 03:30 EDT. This is what Quartz (lenient
//!   calendars) and Go's `time.Date` do;
//! - a time repeated by a backward change (01:30 on the day New York falls back) is the
//!   *first* of its two instants (01:30 EDT); the second one is never used, so nothing
//!   scheduled at a wall-clock time runs twice.

use chrono::{DateTime, Duration, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

use super::FrequencyError;

/// The most a zone may be away from UTC, as the agent's `GMT±H:MM` pattern allows.
pub const MAX_OFFSET_SECS: i32 = 14 * 3600;

/// A time zone: UTC, a fixed offset, or a zone of the tz database.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    /// `UTC` (also spelled `GMT`).
    Utc,
    /// A fixed offset east of UTC, a whole number of minutes, at most 14 hours either way;
    /// written `GMT+8:00`.
    Fixed(FixedOffset),
    /// A zone of the tz database, with its daylight-saving rules.
    Named(Tz),
}

impl Zone {
    /// Parses a zone as the vendor writes it in a frequency (see the module docs).
    pub fn parse(s: &str) -> Result<Zone, FrequencyError> {
        let bad = || FrequencyError::UnknownZone(s.to_string());
        if s.contains('/') {
            return Tz::from_str(s).map(Zone::Named).map_err(|_| bad());
        }
        if s == "UTC" || s == "GMT" {
            return Ok(Zone::Utc);
        }
        let rest = s.strip_prefix("GMT").ok_or_else(bad)?;
        parse_signed_offset(rest, false).ok_or_else(bad)
    }

    /// Reads the zone an instance reports for itself: anything [`Zone::parse`] takes, plus
    /// `GMT+08:00`, `UTC+8`, `UTC+08:00`, `+08:00`, `+0800`, `+8` and `Z`. `None` if it is
    /// none of these.
    pub fn parse_instance(s: &str) -> Option<Zone> {
        let s = s.trim();
        if let Ok(z) = Zone::parse(s) {
            return Some(z);
        }
        if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("gmt") || s == "Z" {
            return Some(Zone::Utc);
        }
        let rest = match s.get(..3) {
            Some(p)
                if s.len() > 3
                    && (p.eq_ignore_ascii_case("gmt") || p.eq_ignore_ascii_case("utc")) =>
            {
                &s[3..]
            }
            _ => s,
        };
        parse_signed_offset(rest, true)
    }

    /// A fixed offset of `secs` east of UTC; `None` beyond ±14 hours or off whole minutes.
    pub fn from_offset_secs(secs: i32) -> Option<Zone> {
        if secs.abs() > MAX_OFFSET_SECS || secs % 60 != 0 {
            return None;
        }
        FixedOffset::east_opt(secs).map(Zone::Fixed)
    }

    /// Seconds east of UTC in force at `instant`.
    pub fn offset_secs_at(&self, instant: DateTime<Utc>) -> i32 {
        match self {
            Zone::Utc => 0,
            Zone::Fixed(o) => o.local_minus_utc(),
            Zone::Named(tz) => tz
                .offset_from_utc_datetime(&instant.naive_utc())
                .fix()
                .local_minus_utc(),
        }
    }

    /// The wall-clock reading of `instant` in this zone.
    /// (At the very edges of chrono's range, where that reading does not exist, the UTC one.)
    pub fn to_local(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        let utc = instant.naive_utc();
        utc.checked_add_signed(Duration::seconds(i64::from(self.offset_secs_at(instant))))
            .unwrap_or(utc)
    }

    /// The instant of a wall-clock time in this zone: a skipped time is read with the
    /// offset before the change, a repeated one is its first instant (see the module docs).
    /// `None` only at the edges of chrono's range.
    pub fn resolve(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Utc => Some(Utc.from_utc_datetime(&local)),
            Zone::Fixed(o) => local
                .checked_sub_signed(Duration::seconds(i64::from(o.local_minus_utc())))
                .map(|n| Utc.from_utc_datetime(&n)),
            Zone::Named(tz) => match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, second) => {
                    Some(first.min(second).with_timezone(&Utc))
                }
                LocalResult::None => {
                    // A day earlier, read as UTC, is before the change whatever the offset.
                    let probe = local.checked_sub_signed(Duration::days(1))?;
                    let before = tz.offset_from_utc_datetime(&probe).fix().local_minus_utc();
                    local
                        .checked_sub_signed(Duration::seconds(i64::from(before)))
                        .map(|n| Utc.from_utc_datetime(&n))
                }
            },
        }
    }

    /// If the clocks went forward shortly before `instant` (less than the jump ago), the
    /// size of the jump in seconds; otherwise 0. Wall-clock times in that skipped span
    /// resolve to instants at or after the change, so a search from `instant` must look
    /// back that far in wall-clock time.
    pub(crate) fn recent_forward_jump(&self, instant: DateTime<Utc>) -> i64 {
        if !matches!(self, Zone::Named(_)) {
            return 0;
        }
        let now = i64::from(self.offset_secs_at(instant));
        let Some(earlier) = instant.checked_sub_signed(Duration::hours(26)) else {
            return 0;
        };
        let day_before = i64::from(self.offset_secs_at(earlier));
        let jump = now - day_before;
        if jump <= 0 {
            return 0;
        }
        let just_before = i64::from(self.offset_secs_at(instant - Duration::seconds(jump)));
        if now > just_before {
            now - just_before
        } else {
            0
        }
    }
}

/// `+8:00`, `-7:00`; with `lenient`, also `+08:00`, `+0800`, `+8`, `+08`.
fn parse_signed_offset(s: &str, lenient: bool) -> Option<Zone> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if !rest.is_ascii() {
        return None;
    }
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if lenient && rest.len() == 4 => (&rest[..2], &rest[2..]),
        None if lenient => (rest, "00"),
        None => return None,
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) || m.len() != 2 || h.len() > 2 {
        return None;
    }
    if !lenient && h.len() == 2 && h.starts_with('0') {
        return None; // the vendor: no leading zero in the hour
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 || (h == 14 && m > 0) {
        return None;
    }
    Zone::from_offset_secs(sign * (h * 3600 + m * 60))
}

impl fmt::Display for Zone {
    /// `UTC`, `GMT+8:00` / `GMT-5:30`, or the tz name; [`Zone::parse`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Utc => f.write_str("UTC"),
            Zone::Fixed(o) => {
                let secs = o.local_minus_utc();
                let sign = if secs < 0 { '-' } else { '+' };
                let abs = secs.abs();
                write!(f, "GMT{sign}{}:{:02}", abs / 3600, abs % 3600 / 60)
            }
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({self})")
    }
}

impl FromStr for Zone {
    type Err = FrequencyError;
    fn from_str(s: &str) -> Result<Zone, FrequencyError> {
        Zone::parse(s)
    }
}
