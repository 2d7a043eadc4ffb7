//! `Frequency`: when a periodic invocation (`RepeatMode=Period`) runs.
//!
//! The vendor's `RunCommand` / `InvokeCommand` take three forms in `Frequency`:
//!
//! - **rate** — `rate(<n><unit>)`, unit `s`, `m`, `h` or `d` (`rate(5m)`): every `n` units,
//!   counted from the moment the task was created; the first run is one interval after
//!   creation, never at creation. The interval is 60 seconds to 7 days and must be longer
//!   than the command's timeout. The agent also takes `RATE (5 M)`-style spacing and case.
//! - **at** — `at(yyyy-MM-dd HH:mm:ss <time zone>)`: one run at that time. Without a zone
//!   the time is **UTC** (not the instance's zone).
//! - **cron** — `<sec> <min> <hour> <day-of-month> <month> <day-of-week> [<year>] [<time zone>]`
//!   (`0 */20 * * * ?`, `0 15 10 ? * * 2022 Asia/Shanghai`), dialect in [`cron`]. Without a
//!   zone the fields are read in the **instance's** own zone. Two fire times are at least
//!   10 seconds apart, and no closer than the command's timeout.
//!
//! Zones are spelled as in [`zone`]: `Asia/Shanghai`, `GMT+8:00`, `UTC`.
//!
//! ## Errors, and who finds them
//! A malformed `Frequency`, or one breaking a limit above, is refused by the API with
//! `InvalidParam.Frequency` ([`ErrorSide::Api`]). What only the instance can know — that a
//! cron expression without a zone has no run left in the instance's zone, or that an
//! `at(…)` time has passed by the instance's clock when the task reaches it — ends that
//! instance's run `Invalid` with `BadCronExpression` ([`ErrorSide::Instance`]). An empty or
//! missing `Frequency` for a periodic task is `MissingParam.Frequency`: the caller's check,
//! made before parsing. Two choices of ours where the vendor's documents are silent: an
//! `at(…)` time not after `now` is refused by the API already (the agent refuses it too), and
//! so is a cron expression that has no run left in any zone (`0 0 0 30 2 ?`, a past year).
//!
//! ## Time
//! Nothing here reads a clock: every function takes `now` / `after` / `anchor`.
//! [`Frequency::next_after`] gives the first run strictly after a time; [`Schedule`] ties a
//! frequency to its anchor (the creation time, which only rates use).

pub mod cron;
pub mod zone;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

use crate::task_error::TaskError;
pub use cron::Cron;
pub use zone::Zone;

/// The shortest interval of a rate, in seconds.
pub const RATE_MIN_SECS: u64 = 60;
/// The longest interval of a rate: 7 days, in seconds.
pub const RATE_MAX_SECS: u64 = 7 * 86_400;
/// The shortest time between two runs of a cron expression, in seconds.
pub const CRON_MIN_INTERVAL_SECS: u64 = 10;

/// The three forms of a frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrequencyKind {
    Rate,
    At,
    Cron,
}

/// A parsed `Frequency`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frequency {
    Rate(Rate),
    At(At),
    Cron(Cron),
}

/// The unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl RateUnit {
    pub fn secs(self) -> u64 {
        match self {
            RateUnit::Seconds => 1,
            RateUnit::Minutes => 60,
            RateUnit::Hours => 3600,
            RateUnit::Days => 86_400,
        }
    }

    pub fn letter(self) -> char {
        match self {
            RateUnit::Seconds => 's',
            RateUnit::Minutes => 'm',
            RateUnit::Hours => 'h',
            RateUnit::Days => 'd',
        }
    }

    fn from_letter(c: char) -> Option<RateUnit> {
        match c.to_ascii_lowercase() {
            's' => Some(RateUnit::Seconds),
            'm' => Some(RateUnit::Minutes),
            'h' => Some(RateUnit::Hours),
            'd' => Some(RateUnit::Days),
            _ => None,
        }
    }
}

/// `rate(<n><unit>)`: every `n` units from the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    value: u64,
    unit: RateUnit,
}

impl Rate {
    pub fn new(value: u64, unit: RateUnit) -> Option<Rate> {
        (value > 0
            && value
                .checked_mul(unit.secs())
                .is_some_and(|s| s <= i64::MAX as u64 / 1000))
        .then_some(Rate { value, unit })
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    pub fn unit(&self) -> RateUnit {
        self.unit
    }

    /// The interval in seconds.
    pub fn interval_secs(&self) -> u64 {
        self.value * self.unit.secs()
    }

    /// The runs are `anchor + k·interval` for k = 1, 2, …; the first strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let period = self.interval_secs() as i64;
        if after < anchor {
            return anchor.checked_add_signed(Duration::seconds(period));
        }
        let elapsed = after - anchor;
        let elapsed_ns =
            i128::from(elapsed.num_seconds()) * 1_000_000_000 + i128::from(elapsed.subsec_nanos());
        let k = elapsed_ns / (i128::from(period) * 1_000_000_000) + 1;
        let offset = i64::try_from(k * i128::from(period)).ok()?;
        anchor.checked_add_signed(Duration::try_seconds(offset)?)
    }

    fn parse(s: &str) -> Result<Rate, FrequencyError> {
        // `rate`, spaces, `(`, digits, spaces, unit letter, `)`: the agent's own pattern.
        let bad =
            || FrequencyError::Syntax(format!("\"{s}\" is not a rate expression like rate(5m)"));
        let rest = s.get(4..).ok_or_else(bad)?.trim_start();
        let inner = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(bad)?;
        let digits_end = inner
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(inner.len());
        let (digits, tail) = inner.split_at(digits_end);
        let mut tail = tail.trim_start().chars();
        let unit = tail
            .next()
            .and_then(RateUnit::from_letter)
            .ok_or_else(bad)?;
        if digits.is_empty() || tail.next().is_some() {
            return Err(bad());
        }
        let value: u64 = digits
            .parse()
            .map_err(|_| FrequencyError::Syntax(format!("the interval of \"{s}\" is too large")))?;
        if value == 0 {
            return Err(FrequencyError::Syntax(
                "the interval of a rate must be positive".to_string(),
            ));
        }
        Rate::new(value, unit)
            .ok_or_else(|| FrequencyError::Syntax(format!("the interval of \"{s}\" is too large")))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate({}{})", self.value, self.unit.letter())
    }
}

/// `at(yyyy-MM-dd HH:mm:ss [zone])`: one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct At {
    local: NaiveDateTime,
    zone: Option<Zone>,
}

impl At {
    pub fn new(local: NaiveDateTime, zone: Option<Zone>) -> At {
        At { local, zone }
    }

    /// The wall-clock time as written.
    pub fn local(&self) -> NaiveDateTime {
        self.local
    }

    /// The zone as written, if any.
    pub fn zone(&self) -> Option<Zone> {
        self.zone
    }

    /// The instant of the run: the time read in its zone, or in UTC without one (a
    /// skipped local time moves forward by the jump, a repeated one is its first instant).
    pub fn instant(&self) -> Option<DateTime<Utc>> {
        self.zone.unwrap_or(Zone::Utc).resolve(self.local)
    }

    fn parse(s: &str) -> Result<At, FrequencyError> {
        let bad = || {
            FrequencyError::Syntax(format!(
                "\"{s}\" is not an at expression like at(2022-06-06 13:15:30 Asia/Shanghai)"
            ))
        };
        let inner = s
            .get(3..)
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(bad)?
            .trim();
        let (when, zone) = match (inner.get(..19), inner.get(19..)) {
            (Some(when), Some(rest)) => (when, rest),
            _ => return Err(bad()),
        };
        let local = parse_wall_time(when).ok_or_else(bad)?;
        let zone = match zone {
            "" => None,
            z if z.starts_with(char::is_whitespace) => Some(Zone::parse(z.trim_start())?),
            _ => return Err(bad()),
        };
        Ok(At { local, zone })
    }
}

/// `yyyy-MM-dd HH:mm:ss`, every part zero-padded.
fn parse_wall_time(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    let shape = b.len() == 19
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b' ',
            13 | 16 => c == b':',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    NaiveDate::from_ymd_opt(n(0..4)? as i32, n(5..7)?, n(8..10)?)?.and_hms_opt(
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    )
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at({}", self.local.format("%Y-%m-%d %H:%M:%S"))?;
        if let Some(z) = self.zone {
            write!(f, " {z}")?;
        }
        f.write_str(")")
    }
}

impl Frequency {
    /// Parses the wire string. Only the syntax is checked here; the vendor's limits, which
    /// depend on the timeout and the time, are [`Frequency::validate`]'s.
    pub fn parse(s: &str) -> Result<Frequency, FrequencyError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(FrequencyError::Empty);
        }
        let starts = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        if starts("rate") && s[4..].trim_start().starts_with('(') {
            Rate::parse(s).map(Frequency::Rate)
        } else if starts("at(") {
            At::parse(s).map(Frequency::At)
        } else {
            Cron::parse(s).map(Frequency::Cron)
        }
    }

    pub fn kind(&self) -> FrequencyKind {
        match self {
            Frequency::Rate(_) => FrequencyKind::Rate,
            Frequency::At(_) => FrequencyKind::At,
            Frequency::Cron(_) => FrequencyKind::Cron,
        }
    }

    /// The zone the expression names, if any (rates have none).
    pub fn explicit_zone(&self) -> Option<Zone> {
        match self {
            Frequency::Rate(_) => None,
            Frequency::At(a) => a.zone,
            Frequency::Cron(c) => c.zone(),
        }
    }

    /// The first run strictly after `after`.
    ///
    /// - rate: `anchor + k·interval`, k ≥ 1 (`anchor` is when the task was created);
    /// - at: its one instant, if later than `after` (zone as written, else UTC);
    /// - cron: read in its own zone if it names one, else in `instance_zone`; `None` once
    ///   nothing is left (at the latest after 2099).
    ///
    /// `anchor` is used by rates only, `instance_zone` by cron expressions without a zone.
    pub fn next_after(
        &self,
        after: DateTime<Utc>,
        anchor: DateTime<Utc>,
        instance_zone: Zone,
    ) -> Option<DateTime<Utc>> {
        match self {
            Frequency::Rate(r) => r.next_after(after, anchor),
            Frequency::At(a) => a.instant().filter(|&t| t > after),
            Frequency::Cron(c) => c.next_after(after, c.zone().unwrap_or(instance_zone)),
        }
    }

    /// The API's checks (`InvalidParam.Frequency`), for a command with `timeout_secs`,
    /// at `now`:
    /// - rate: 60 s ≤ interval ≤ 7 days, and interval > timeout;
    /// - at: its time is after `now`;
    /// - cron: no two runs closer than 10 s or than the timeout (read on a plain 24-hour
    ///   clock), and some run left after `now` — in its own zone if it names one, else in
    ///   at least one zone (which zone is the instance's to know; see
    ///   [`Frequency::check_on_instance`]).
    pub fn validate(&self, timeout_secs: u64, now: DateTime<Utc>) -> Result<(), FrequencyError> {
        match self {
            Frequency::Rate(r) => {
                let interval_secs = r.interval_secs();
                if !(RATE_MIN_SECS..=RATE_MAX_SECS).contains(&interval_secs) {
                    return Err(FrequencyError::RateOutOfRange { interval_secs });
                }
                if interval_secs <= timeout_secs {
                    return Err(FrequencyError::RateNotLongerThanTimeout {
                        interval_secs,
                        timeout_secs,
                    });
                }
                Ok(())
            }
            Frequency::At(a) => match a.instant() {
                Some(at) if at > now => Ok(()),
                _ => Err(FrequencyError::AtInThePast { at: a.to_string() }),
            },
            Frequency::Cron(c) => {
                let min_secs = timeout_secs.max(CRON_MIN_INTERVAL_SECS);
                let from_year = now.year() - 1;
                if let Some(gap_secs) = c.min_interval_secs(from_year) {
                    if gap_secs < min_secs {
                        return Err(FrequencyError::CronTooFrequent { gap_secs, min_secs });
                    }
                }
                let fires = match c.zone() {
                    Some(z) => c.next_after(now, z).is_some(),
                    None => c.fires_after_in_some_zone(now),
                };
                if !fires {
                    return Err(FrequencyError::NeverFires);
                }
                Ok(())
            }
        }
    }

    /// The instance's checks when the task reaches it at `now` (its clock, its zone):
    /// a cron expression with no run left, or an `at(…)` time already past, is
    /// `BadCronExpression`.
    pub fn check_on_instance(
        &self,
        now: DateTime<Utc>,
        instance_zone: Zone,
    ) -> Result<(), FrequencyError> {
        match self {
            Frequency::Rate(_) => Ok(()),
            Frequency::At(a) => match a.instant() {
                Some(at) if at > now => Ok(()),
                _ => Err(FrequencyError::AtExpired),
            },
            Frequency::Cron(c) => {
                let zone = c.zone().unwrap_or(instance_zone);
                match c.next_after(now, zone) {
                    Some(_) => Ok(()),
                    None => Err(FrequencyError::NoNextRun {
                        zone: zone.to_string(),
                    }),
                }
            }
        }
    }
}

impl fmt::Display for Frequency {
    /// The canonical spelling: `rate(5m)`, `at(2022-06-06 13:15:30 Asia/Shanghai)`,
    /// `0 */20 * * * ? GMT+8:00`. [`Frequency::parse`] reads it back to an equal value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frequency::Rate(r) => r.fmt(f),
            Frequency::At(a) => a.fmt(f),
            Frequency::Cron(c) => c.fmt(f),
        }
    }
}

impl FromStr for Frequency {
    type Err = FrequencyError;
    fn from_str(s: &str) -> Result<Frequency, FrequencyError> {
        Frequency::parse(s)
    }
}

impl Serialize for Frequency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Frequency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Frequency, D::Error> {
        let s = String::deserialize(d)?;
        Frequency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A frequency with its anchor: the time the periodic task was created, from which a rate
/// counts its intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub frequency: Frequency,
    pub anchor: DateTime<Utc>,
}

impl Schedule {
    pub fn new(frequency: Frequency, anchor: DateTime<Utc>) -> Schedule {
        Schedule { frequency, anchor }
    }

    /// See [`Frequency::next_after`].
    pub fn next_after(&self, after: DateTime<Utc>, instance_zone: Zone) -> Option<DateTime<Utc>> {
        self.frequency.next_after(after, self.anchor, instance_zone)
    }

    /// The runs strictly after `after`, in order. Finite for `at` and cron; callers take
    /// what they need from a rate's.
    pub fn runs_after(
        &self,
        after: DateTime<Utc>,
        instance_zone: Zone,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut last = after;
        std::iter::from_fn(move || {
            let next = self.next_after(last, instance_zone)?;
            last = next;
            Some(next)
        })
    }
}

/// Which side finds a frequency error, and so how it is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorSide {
    /// The API refuses the request: `InvalidParam.Frequency`.
    Api,
    /// The instance refuses the task: the run ends `Invalid` with `BadCronExpression`.
    Instance,
}

/// Why a frequency is refused. `Display` is a sentence for the API's `Message` (API-side
/// errors) or for logs (instance-side ones, whose `ErrorInfo` is the fixed text of
/// [`TaskError::BadCronExpression`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrequencyError {
    #[error("The specified frequency is invalid: it is empty.")]
    Empty,
    #[error("The specified frequency is invalid: {0}.")]
    Syntax(String),
    #[error(
        "The specified frequency is invalid: unknown time zone \"{0}\" (use a name such as Asia/Shanghai, \
         an offset such as GMT+8:00, or UTC)."
    )]
    UnknownZone(String),
    #[error("The specified frequency is invalid: the interval of a rate must be from 60 seconds to 7 days, not {interval_secs} seconds.")]
    RateOutOfRange { interval_secs: u64 },
    #[error(
        "The specified frequency is invalid: the interval of {interval_secs} seconds must be longer than the \
         timeout of {timeout_secs} seconds."
    )]
    RateNotLongerThanTimeout {
        interval_secs: u64,
        timeout_secs: u64,
    },
    #[error(
        "The specified frequency is invalid: runs of the cron expression can be {gap_secs} seconds apart; \
         they must be at least {min_secs} seconds apart (10 seconds, and no less than the timeout)."
    )]
    CronTooFrequent { gap_secs: u64, min_secs: u64 },
    #[error("The specified frequency is invalid: the time of {at} has already passed.")]
    AtInThePast { at: String },
    #[error("The specified frequency is invalid: the cron expression has no run left.")]
    NeverFires,
    #[error("the cron job expression is invalid: it has no run left in the time zone {zone}")]
    NoNextRun { zone: String },
    #[error("the cron job expression is invalid: the time of at() has passed on the instance")]
    AtExpired,
}

impl FrequencyError {
    pub fn side(&self) -> ErrorSide {
        match self {
            FrequencyError::NoNextRun { .. } | FrequencyError::AtExpired => ErrorSide::Instance,
            _ => ErrorSide::Api,
        }
    }

    /// `InvalidParam.Frequency` (API) or `BadCronExpression` (instance).
    pub fn code(&self) -> &'static str {
        match self.side() {
            ErrorSide::Api => "InvalidParam.Frequency",
            ErrorSide::Instance => TaskError::BadCronExpression.code(),
        }
    }

    /// The run's `ErrorCode` for an instance-side error.
    pub fn task_error(&self) -> Option<TaskError> {
        (self.side() == ErrorSide::Instance).then_some(TaskError::BadCronExpression)
    }
}
