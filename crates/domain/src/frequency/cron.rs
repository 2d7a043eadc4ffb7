//! Cron expressions as the vendor reads them.
//!
//! `<sec> <min> <hour> <day-of-month> <month> <day-of-week> [<year>] [<time zone>]`.
//!
//! Written by hand, not with a cron crate. `croner` comes closest (seconds, years, `L`, `W`,
//! `#`, POSIX weekday numbering that happens to match the vendor's), but it takes other
//! strings than the vendor does (years 1–5000, any number of leading zeros, no year-or-zone
//! 7th field) and moves a run skipped by DST to the end of the gap (02:30 → 03:00), where
//! Quartz and Go's `time.Date` (under the agent's cron library) shift it by the gap
//! (→ 03:30). `cron` numbers weekdays 1 = SUN and has no `L`/`W`/`#`; `saffron` has no
//! seconds. We need our own grammar anyway
//! (the API must accept exactly the vendor's strings) and the parsed sets (for the
//! minimum-interval rule), and what is left — finding the next matching second — is small.
//! The dialect is the official agent's (it runs the schedule): weekdays 1 = MON … 7 = SUN
//! (0 = SUN too, which the agent accepts), day-of-month and day-of-week ORed when both
//! are restricted, `?` a wildcard, both day fields starred allowed (`0 */20 * * * *`).
//!
//! ## The fields
//! | field | values | special |
//! | --- | --- | --- |
//! | seconds | 0–59 | `* , - /` |
//! | minutes | 0–59 | `* , - /` |
//! | hours | 0–23 | `* , - /` |
//! | day-of-month | 1–31 | `* , - / ? L LW nW` |
//! | month | 1–12, `JAN`–`DEC` | `* , - /` |
//! | day-of-week | 1–7 = `MON`–`SUN`, 0 = `SUN` | `* , - / ? nL n#k` |
//! | year (optional) | 1970–2099 | `* , - / ?` |
//!
//! - Numbers take at most one leading zero (`08` yes, `008` no); names any case, in their
//!   three-letter or full form (`MON`, `monday`, `Jan`).
//! - `a-b` needs `a ≤ b`; `*/n` steps over the whole field, `a/n` from `a` to the field's
//!   end, `a-b/n` within the range; `n` is 1 to the field's largest value. In the
//!   day-of-week field `*` and `a/n` run over 0–6 (SUN–SAT), as the agent's do.
//! - `L` is the last day of the month, `LW` its last weekday (Mon–Fri), `15W` the weekday
//!   nearest the 15th without leaving the month (a Saturday 1st gives Monday the 3rd, a
//!   Sunday 31st Friday the 29th); a `W` day past the month's end does not fire.
//! - `5L` is the month's last Friday, `5#3` its third Friday (`#` 1–5; a month without a
//!   fifth one does not fire). A bare `L` in day-of-week is refused, as the agent refuses it.
//! - `*` and `?` leave a day field unrestricted. With one day field restricted, it decides;
//!   with both, a day matching either fires (the agent's, and Vixie cron's, rule).
//! - A 7th field is the year when it is `*`, `?`, `*/n` or starts with a digit, otherwise
//!   the time zone; with 8 fields, the 7th is the year and the 8th the zone.
//! - Nothing fires after 2099, the last year the dialect has.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use std::fmt;

use super::zone::{Zone, MAX_OFFSET_SECS};
use super::FrequencyError;

/// The first and last year a cron expression can name or fire in.
pub const FIRST_YEAR: i32 = 1970;
pub const LAST_YEAR: i32 = 2099;

/// How many wall-clock candidates one search looks at, at most: enough to step over a
/// repeated hour or a skipped day of a busy expression, and a guarantee that no search
/// loops for ever.
const MAX_CANDIDATES: usize = 200_000;

/// A parsed cron expression, with its time zone if it names one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cron {
    /// The six or seven fields, upper-cased, as written.
    fields: Vec<String>,
    zone: Option<Zone>,
    spec: Spec,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Spec {
    seconds: u64,
    minutes: u64,
    hours: u64,
    dom: DaySpec,
    /// Bits 1–12.
    months: u64,
    dow: WeekSpec,
    years: YearSet,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
struct DaySpec {
    restricted: bool,
    /// Bits 1–31.
    days: u64,
    last: bool,
    last_weekday: bool,
    /// `nW`: bits 1–31.
    nearest_weekday: u64,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
struct WeekSpec {
    restricted: bool,
    /// Bits 0–6, 0 = Sunday.
    days: u64,
    /// `nL`: bits 0–6.
    last: u64,
    /// `n#k`: for each weekday 0–6, bits 1–5 of the wanted occurrences.
    nth: [u8; 7],
}

/// Years 1970–2099 as bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
struct YearSet([u64; 3]);

impl YearSet {
    fn insert(&mut self, y: u32) {
        let i = (y as i32 - FIRST_YEAR) as usize;
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn contains(&self, y: i32) -> bool {
        if !(FIRST_YEAR..=LAST_YEAR).contains(&y) {
            return false;
        }
        let i = (y - FIRST_YEAR) as usize;
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn next_at_or_after(&self, y: i32) -> Option<i32> {
        (y.max(FIRST_YEAR)..=LAST_YEAR).find(|&y| self.contains(y))
    }
}

/// What a field takes.
struct FieldDesc {
    name: &'static str,
    min: u32,
    max: u32,
    /// Where `*` and `a/n` end (the day-of-week field's run over 0–6 only).
    wild_max: u32,
    step_max: u32,
    names: &'static [(&'static str, u32)],
    question: bool,
    four_digits: bool,
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("JAN", 1),
    ("FEB", 2),
    ("MAR", 3),
    ("APR", 4),
    ("MAY", 5),
    ("JUN", 6),
    ("JUL", 7),
    ("AUG", 8),
    ("SEP", 9),
    ("OCT", 10),
    ("NOV", 11),
    ("DEC", 12),
    ("JANUARY", 1),
    ("FEBRUARY", 2),
    ("MARCH", 3),
    ("APRIL", 4),
    ("JUNE", 6),
    ("JULY", 7),
    ("AUGUST", 8),
    ("SEPTEMBER", 9),
    ("OCTOBER", 10),
    ("NOVEMBER", 11),
    ("DECEMBER", 12),
];

const DAY_NAMES: &[(&str, u32)] = &[
    ("SUN", 0),
    ("MON", 1),
    ("TUE", 2),
    ("WED", 3),
    ("THU", 4),
    ("FRI", 5),
    ("SAT", 6),
    ("SUNDAY", 0),
    ("MONDAY", 1),
    ("TUESDAY", 2),
    ("WEDNESDAY", 3),
    ("THURSDAY", 4),
    ("FRIDAY", 5),
    ("SATURDAY", 6),
];

const fn plain(name: &'static str, min: u32, max: u32) -> FieldDesc {
    FieldDesc {
        name,
        min,
        max,
        wild_max: max,
        step_max: max,
        names: &[],
        question: false,
        four_digits: false,
    }
}

const SECONDS: FieldDesc = plain("seconds", 0, 59);
const MINUTES: FieldDesc = plain("minutes", 0, 59);
const HOURS: FieldDesc = plain("hours", 0, 23);
const DAY_OF_MONTH: FieldDesc = FieldDesc {
    question: true,
    ..plain("day-of-month", 1, 31)
};
const MONTH: FieldDesc = FieldDesc {
    names: MONTH_NAMES,
    ..plain("month", 1, 12)
};
const DAY_OF_WEEK: FieldDesc = FieldDesc {
    name: "day-of-week",
    min: 0,
    max: 7,
    wild_max: 6,
    step_max: 6,
    names: DAY_NAMES,
    question: true,
    four_digits: false,
};
const YEAR: FieldDesc = FieldDesc {
    question: true,
    four_digits: true,
    ..plain("year", FIRST_YEAR as u32, LAST_YEAR as u32)
};

fn syntax(desc: &FieldDesc, what: String) -> FrequencyError {
    FrequencyError::Syntax(format!(
        "{what} in the {} field of the cron expression",
        desc.name
    ))
}

impl FieldDesc {
    fn value(&self, tok: &str) -> Result<u32, FrequencyError> {
        if let Some(&(_, v)) = self.names.iter().find(|(n, _)| n.eq_ignore_ascii_case(tok)) {
            return Ok(v);
        }
        let digits = !tok.is_empty() && tok.bytes().all(|b| b.is_ascii_digit());
        let shape_ok = if self.four_digits {
            tok.len() == 4
        } else {
            tok.len() <= 2
        };
        if !digits || !shape_ok {
            return Err(syntax(self, format!("\"{tok}\" is not a valid value")));
        }
        let v: u32 = tok
            .parse()
            .map_err(|_| syntax(self, format!("\"{tok}\" is not a valid value")))?;
        if v < self.min || v > self.max {
            return Err(syntax(
                self,
                format!("{v} is outside {}–{}", self.min, self.max),
            ));
        }
        Ok(v)
    }

    fn step(&self, tok: &str) -> Result<u32, FrequencyError> {
        let bad = || {
            syntax(
                self,
                format!("\"/{tok}\" is not a valid increment (1–{})", self.step_max),
            )
        };
        if tok.is_empty() || tok.len() > 4 || !tok.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u32 = tok.parse().map_err(|_| bad())?;
        if n == 0 || n > self.step_max {
            return Err(bad());
        }
        Ok(n)
    }

    /// One list item without the field's special forms: `None` for `*` / `?`.
    fn expand(&self, item: &str) -> Result<Option<Vec<u32>>, FrequencyError> {
        if item == "*" || (self.question && item == "?") {
            return Ok(None);
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(self.step(s)?)),
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (self.min, self.wild_max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (self.value(a)?, self.value(b)?);
            if a > b {
                return Err(syntax(
                    self,
                    format!("the range \"{range}\" runs backwards"),
                ));
            }
            (a, b)
        } else {
            let a = self.value(range)?;
            if step.is_some() {
                (a, self.wild_max.max(a))
            } else {
                (a, a)
            }
        };
        Ok(Some(
            (lo..=hi).step_by(step.unwrap_or(1) as usize).collect(),
        ))
    }

    /// The items of a comma list, each offered to `special` first (which returns whether it
    /// took the item). Returns whether a `*` / `?` was among them, and the other values.
    fn list(
        &self,
        text: &str,
        mut special: impl FnMut(&str) -> Result<bool, FrequencyError>,
    ) -> Result<(bool, Vec<u32>), FrequencyError> {
        let mut all = false;
        let mut values = Vec::new();
        for item in text.split(',') {
            if item.is_empty() {
                return Err(syntax(self, format!("\"{text}\" has an empty list item")));
            }
            if special(item)? {
                continue;
            }
            match self.expand(item)? {
                None => all = true,
                Some(v) => values.extend(v),
            }
        }
        Ok((all, values))
    }

    /// A field without special forms, as bits; `*` / `?` give every value.
    fn bits(&self, text: &str) -> Result<u64, FrequencyError> {
        let (all, values) = self.list(text, |_| Ok(false))?;
        if all {
            return Ok((self.min..=self.wild_max).fold(0, |m, v| m | 1 << v));
        }
        Ok(values.iter().fold(0, |m, v| m | 1 << v))
    }
}

fn parse_dom(text: &str) -> Result<DaySpec, FrequencyError> {
    let d = &DAY_OF_MONTH;
    let mut spec = DaySpec::default();
    let (all, values) = d.list(text, |item| {
        if item.eq_ignore_ascii_case("L") {
            spec.last = true;
        } else if item.eq_ignore_ascii_case("LW") {
            spec.last_weekday = true;
        } else if let Some(n) = item.strip_suffix(['W', 'w']) {
            spec.nearest_weekday |= 1 << d.value(n)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    spec.restricted = !all;
    spec.days = values.iter().fold(0, |m, v| m | 1 << v);
    Ok(spec)
}

fn parse_dow(text: &str) -> Result<WeekSpec, FrequencyError> {
    let d = &DAY_OF_WEEK;
    let mut spec = WeekSpec::default();
    let (all, values) = d.list(text, |item| {
        if let Some((day, k)) = item.split_once('#') {
            let day = d.value(day)? % 7;
            let k = match k.as_bytes() {
                [c @ b'1'..=b'5'] => c - b'0',
                _ => return Err(syntax(d, format!("\"#{k}\" must be #1 to #5"))),
            };
            spec.nth[day as usize] |= 1 << k;
        } else if item.eq_ignore_ascii_case("L") {
            return Err(syntax(
                d,
                "a bare \"L\" is not accepted; name the day, as in 5L".to_string(),
            ));
        } else if let Some(day) = item.strip_suffix(['L', 'l']) {
            spec.last |= 1 << (d.value(day)? % 7);
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    spec.restricted = !all;
    spec.days = values.iter().fold(0, |m, v| m | 1 << (v % 7));
    Ok(spec)
}

fn parse_years(text: &str) -> Result<YearSet, FrequencyError> {
    let (all, values) = YEAR.list(text, |_| Ok(false))?;
    let mut set = YearSet::default();
    if all {
        (FIRST_YEAR as u32..=LAST_YEAR as u32).for_each(|y| set.insert(y));
    } else {
        values.into_iter().for_each(|y| set.insert(y));
    }
    Ok(set)
}

/// Whether the 7th of 7 fields is a year (the agent's test) rather than a time zone.
fn looks_like_year(tok: &str) -> bool {
    tok == "*"
        || tok == "?"
        || tok.starts_with("*/")
        || tok.starts_with(|c: char| c.is_ascii_digit())
}

fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = mask & (u64::MAX << from);
    (m != 0).then(|| m.trailing_zeros())
}

fn first_bit(mask: u64) -> u32 {
    mask.trailing_zeros()
}

fn last_bit(mask: u64) -> u32 {
    63 - mask.leading_zeros()
}

/// The smallest distance between two set bits, if two are set.
fn min_diff(mask: u64) -> Option<u64> {
    let mut best = None;
    let mut prev = None;
    let mut m = mask;
    while m != 0 {
        let b = m.trailing_zeros();
        if let Some(p) = prev {
            let d = u64::from(b - p);
            best = Some(best.map_or(d, |x: u64| x.min(d)));
        }
        prev = Some(b);
        m &= m - 1;
    }
    best
}

pub(crate) fn days_in_month(y: i32, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    match (
        NaiveDate::from_ymd_opt(ny, nm, 1),
        NaiveDate::from_ymd_opt(y, m, 1),
    ) {
        (Some(next), Some(this)) => (next - this).num_days() as u32,
        _ => 31,
    }
}

/// The weekday (Mon–Fri) nearest day `n`, not leaving the month; `wd` is `n`'s weekday,
/// 0 = Sunday.
fn nearest_weekday(n: u32, last: u32, wd: u32) -> u32 {
    match wd {
        6 if n > 1 => n - 1,
        6 => n + 2,
        0 if n < last => n + 1,
        0 => n - 2,
        _ => n,
    }
}

impl Cron {
    /// Parses a cron expression with its optional year and time zone.
    pub fn parse(s: &str) -> Result<Cron, FrequencyError> {
        let tokens: Vec<&str> = s.split_whitespace().collect();
        let (year, zone) = match tokens.len() {
            6 => (None, None),
            7 if looks_like_year(tokens[6]) => (Some(tokens[6]), None),
            7 => (None, Some(tokens[6])),
            8 => (Some(tokens[6]), Some(tokens[7])),
            n => {
                return Err(FrequencyError::Syntax(format!(
                    "a cron expression has 6 fields (seconds minutes hours day-of-month month \
                     day-of-week), then an optional year and time zone; this one has {n}"
                )))
            }
        };
        let spec = Spec {
            seconds: SECONDS.bits(tokens[0])?,
            minutes: MINUTES.bits(tokens[1])?,
            hours: HOURS.bits(tokens[2])?,
            dom: parse_dom(tokens[3])?,
            months: MONTH.bits(tokens[4])?,
            dow: parse_dow(tokens[5])?,
            years: match year {
                Some(y) => parse_years(y)?,
                None => parse_years("*")?,
            },
        };
        let zone = zone.map(Zone::parse).transpose()?;
        let mut fields: Vec<String> = tokens[..6].iter().map(|t| t.to_ascii_uppercase()).collect();
        fields.extend(year.map(str::to_ascii_uppercase));
        Ok(Cron { fields, zone, spec })
    }

    /// The time zone the expression names, if any.
    pub fn zone(&self) -> Option<Zone> {
        self.zone
    }

    /// Whether the expression has a year field.
    pub fn has_year(&self) -> bool {
        self.fields.len() == 7
    }

    /// The days of month `m` of year `y` that fire, as bits 1–31.
    fn day_mask(&self, y: i32, m: u32) -> u64 {
        let last = days_in_month(y, m);
        let valid = ((1u64 << (last + 1)) - 1) & !1;
        let (dom, dow) = (&self.spec.dom, &self.spec.dow);
        if !dom.restricted && !dow.restricted {
            return valid;
        }
        let first_wd =
            NaiveDate::from_ymd_opt(y, m, 1).map_or(0, |d| d.weekday().num_days_from_sunday());
        let wd = |d: u32| (first_wd + d - 1) % 7;
        let mut mask = 0u64;
        if dom.restricted {
            mask |= dom.days & valid;
            if dom.last {
                mask |= 1 << last;
            }
            if dom.last_weekday {
                mask |= 1 << nearest_weekday(last, last, wd(last));
            }
            let mut w = dom.nearest_weekday & valid;
            while w != 0 {
                let n = w.trailing_zeros();
                mask |= 1 << nearest_weekday(n, last, wd(n));
                w &= w - 1;
            }
        }
        if dow.restricted {
            for d in 1..=last {
                if dow.days & (1 << wd(d)) != 0 {
                    mask |= 1 << d;
                }
            }
            for day in 0..7u32 {
                if dow.last & (1 << day) != 0 {
                    mask |= 1 << (last - (wd(last) + 7 - day) % 7);
                }
                let first = 1 + (day + 7 - first_wd) % 7;
                for k in 1..=5u32 {
                    let d = first + 7 * (k - 1);
                    if dow.nth[day as usize] & (1 << k) != 0 && d <= last {
                        mask |= 1 << d;
                    }
                }
            }
        }
        mask
    }

    /// The first second of the day at or after `from` (seconds since midnight) that fires.
    fn next_time_of_day(&self, from: u32) -> Option<NaiveTime> {
        let s = &self.spec;
        let (h0, m0, s0) = (from / 3600, from / 60 % 60, from % 60);
        let mut h_from = h0;
        while let Some(h) = next_bit(s.hours, h_from) {
            let mut m_from = if h == h0 { m0 } else { 0 };
            while let Some(m) = next_bit(s.minutes, m_from) {
                let s_from = if h == h0 && m == m0 { s0 } else { 0 };
                if let Some(sec) = next_bit(s.seconds, s_from) {
                    return NaiveTime::from_hms_opt(h, m, sec);
                }
                m_from = m + 1;
            }
            h_from = h + 1;
        }
        None
    }

    /// The first wall-clock second at or after `from` that the fields match (sub-seconds
    /// of `from` are ignored), or `None` if there is none up to the end of 2099.
    pub(crate) fn next_match(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let from = if from.year() < FIRST_YEAR {
            NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1)?.and_hms_opt(0, 0, 0)?
        } else {
            from
        };
        let (fy, fm, fd) = (from.year(), from.month(), from.day());
        let ftod = from.num_seconds_from_midnight();
        let mut y = self.spec.years.next_at_or_after(fy)?;
        loop {
            let mut m_from = if y == fy { fm } else { 1 };
            while let Some(m) = next_bit(self.spec.months, m_from) {
                let same_month = y == fy && m == fm;
                let mask = self.day_mask(y, m);
                let mut d_from = if same_month { fd } else { 1 };
                while let Some(d) = next_bit(mask, d_from) {
                    let tod = if same_month && d == fd { ftod } else { 0 };
                    if let Some(t) = self.next_time_of_day(tod) {
                        return Some(NaiveDate::from_ymd_opt(y, m, d)?.and_time(t));
                    }
                    d_from = d + 1;
                }
                m_from = m + 1;
            }
            y = self.spec.years.next_at_or_after(y + 1)?;
        }
    }

    /// Whether the wall-clock time `t` (whole seconds) matches every field.
    pub fn matches(&self, t: NaiveDateTime) -> bool {
        let s = &self.spec;
        s.years.contains(t.year())
            && s.months & (1 << t.month()) != 0
            && self.day_mask(t.year(), t.month()) & (1 << t.day()) != 0
            && s.hours & (1 << t.hour()) != 0
            && s.minutes & (1 << t.minute()) != 0
            && s.seconds & (1 << t.second()) != 0
    }

    /// The first fire time strictly after `after`, reading the fields in `zone`.
    ///
    /// Every matching wall-clock time fires once, at [`Zone::resolve`]'s instant for it: a
    /// time skipped by a forward change fires as far after the change as it was after its
    /// start, a repeated time fires at its first occurrence only. The search is bounded:
    /// by 2099, and by a fixed number of wall-clock candidates.
    pub fn next_after(&self, after: DateTime<Utc>, zone: Zone) -> Option<DateTime<Utc>> {
        // Nothing fires outside 1970–2099 local time, so far-off instants are cut down to
        // a day beyond those years, well inside chrono's range.
        if after.year() > LAST_YEAR + 1 {
            return None;
        }
        let earliest = NaiveDate::from_ymd_opt(FIRST_YEAR - 1, 12, 30)?
            .and_hms_opt(0, 0, 0)?
            .and_utc();
        let after = after.max(earliest);
        let wall = zone.to_local(after).with_nanosecond(0)?;
        // Times in a span just skipped by the clocks resolve to instants after the change:
        // start that far back in wall-clock time.
        let mut cursor = wall + Duration::seconds(1 - zone.recent_forward_jump(after));
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        for _ in 0..MAX_CANDIDATES {
            let Some(cand) = self.next_match(cursor) else {
                break;
            };
            if let Some((_, best_wall)) = best {
                // Later wall-clock times resolve to later instants than `best`.
                if cand >= best_wall {
                    break;
                }
            }
            if let Some(at) = zone.resolve(cand) {
                if at > after && best.is_none_or(|(b, _)| at < b) {
                    best = Some((at, zone.to_local(at)));
                }
            }
            cursor = cand + Duration::seconds(1);
        }
        best.map(|(at, _)| at)
    }

    /// Whether it fires after `now` in some zone (offsets up to ±14 hours).
    pub(crate) fn fires_after_in_some_zone(&self, now: DateTime<Utc>) -> bool {
        let from = now
            .naive_utc()
            .with_nanosecond(0)
            .and_then(|n| n.checked_sub_signed(Duration::seconds(i64::from(MAX_OFFSET_SECS) - 1)));
        match from {
            Some(from) => self.next_match(from).is_some(),
            None => self.next_match(NaiveDateTime::MIN).is_some(),
        }
    }

    /// Whether two consecutive calendar days both fire, in the years from `from_year` on.
    fn has_consecutive_days(&self, from_year: i32) -> bool {
        let mut prev_last = false;
        for y in from_year.max(FIRST_YEAR)..=LAST_YEAR {
            for m in 1..=12 {
                let mask = if self.spec.years.contains(y) && self.spec.months & (1 << m) != 0 {
                    self.day_mask(y, m)
                } else {
                    0
                };
                if mask & (mask >> 1) != 0 || (prev_last && mask & 2 != 0) {
                    return true;
                }
                prev_last = mask & (1 << days_in_month(y, m)) != 0;
            }
        }
        false
    }

    /// The shortest time between two consecutive fire times, in seconds, reading the
    /// fields on a plain 24-hour clock (DST ignored) in the years from `from_year` on;
    /// `None` if no two fire times can be consecutive within a day or across midnight.
    pub fn min_interval_secs(&self, from_year: i32) -> Option<u64> {
        let s = &self.spec;
        let tod = |h: u32, m: u32, sec: u32| u64::from(h * 3600 + m * 60 + sec);
        let (s0, s1) = (first_bit(s.seconds), last_bit(s.seconds));
        let (m0, m1) = (first_bit(s.minutes), last_bit(s.minutes));
        let (h0, h1) = (first_bit(s.hours), last_bit(s.hours));
        let mut best: Option<u64> = None;
        let mut consider = |g: u64| best = Some(best.map_or(g, |b| b.min(g)));
        if let Some(d) = min_diff(s.seconds) {
            consider(d);
        }
        if let Some(d) = min_diff(s.minutes) {
            consider(d * 60 - u64::from(s1 - s0));
        }
        if let Some(d) = min_diff(s.hours) {
            consider(d * 3600 - (tod(0, m1, s1) - tod(0, m0, s0)));
        }
        if self.has_consecutive_days(from_year) {
            consider(86_400 - (tod(h1, m1, s1) - tod(h0, m0, s0)));
        }
        best
    }
}

impl fmt::Display for Cron {
    /// The fields upper-cased and single-spaced, then the zone in its canonical spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fields.join(" "))?;
        if let Some(z) = self.zone {
            write!(f, " {z}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({self})")
    }
}
