//! `Frequency` expressions: parsing, the API's and the instance's checks, and the
//! next fire times.
//!
//! Input: `expression|after|instance zone|anchor|timeout`, every part after the
//! expression optional (`after` and `anchor` in Unix milliseconds; the zone as an
//! instance reports it). `|` never occurs in a frequency.
//!
//! Properties: nothing panics; what parses prints back (`Display`, and JSON) to an
//! equal value; from any instant the next few fire times come quickly (libFuzzer's
//! `-timeout` catches a slow one) and each is strictly after the one before; nothing
//! fires in between (the first fire time after any instant between two of them is
//! the later one); rates fire every interval from their anchor; `at` fires once; a
//! cron expression fires at whole seconds, never after 2099 in its zone, and at times
//! that match its fields wherever the zone has no daylight-saving changes.
#![no_main]

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use libfuzzer_sys::fuzz_target;
use oca_domain::frequency::{Frequency, FrequencyKind, Zone};

/// How many fire times to follow.
const RUNS: usize = 4;

fn instant(s: Option<&str>, default: DateTime<Utc>) -> DateTime<Utc> {
    s.and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or(default)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('|');
    let expr = parts.next().unwrap_or("");
    let default = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let after = instant(parts.next(), default);
    let zone_text = parts.next();
    let instance_zone = zone_text
        .and_then(Zone::parse_instance)
        .unwrap_or(Zone::Utc);
    if let Some(z) = zone_text.and_then(Zone::parse_instance) {
        // An instance's zone prints as something it reads back.
        assert_eq!(Zone::parse_instance(&z.to_string()), Some(z));
    }
    let anchor = instant(parts.next(), after);
    let timeout: u64 = parts
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(60);

    let Ok(f) = Frequency::parse(expr) else {
        return;
    };
    // Display reads back to an equal value, and so does JSON.
    let shown = f.to_string();
    assert_eq!(
        Frequency::parse(&shown).as_ref(),
        Ok(&f),
        "{expr:?} → {shown:?}"
    );
    let json = serde_json::to_string(&f).unwrap();
    assert_eq!(serde_json::from_str::<Frequency>(&json).unwrap(), f);
    if let Some(z) = f.explicit_zone() {
        assert_eq!(Zone::parse(&z.to_string()), Ok(z));
    }

    let _ = f.validate(timeout, after);
    let _ = f.check_on_instance(after, instance_zone);
    if let Frequency::Cron(c) = &f {
        let _ = c.min_interval_secs(after.year() - 1);
    }

    let zone = f.explicit_zone().unwrap_or(instance_zone);
    let mut runs = Vec::new();
    let mut last = after;
    while runs.len() < RUNS {
        let Some(next) = f.next_after(last, anchor, instance_zone) else {
            break;
        };
        assert!(next > last, "{f}: {next} is not after {last}");
        runs.push(next);
        last = next;
    }

    // Nothing fires in between: from any instant between two fire times, the next one
    // is the later (a second before it, a nanosecond before it, half-way).
    let mut prev = after;
    for &next in &runs {
        let gap = next - prev;
        for probe in [
            next - Duration::seconds(1),
            next - Duration::nanoseconds(1),
            prev + gap / 2,
        ] {
            if probe >= prev && probe < next {
                assert_eq!(
                    f.next_after(probe, anchor, instance_zone),
                    Some(next),
                    "{f} from {probe}: fires at {next} after {prev} (zone {zone})"
                );
            }
        }
        prev = next;
    }

    match &f {
        Frequency::Rate(r) => {
            let period = Duration::seconds(r.interval_secs() as i64);
            for &t in &runs {
                let since = t - anchor;
                assert!(
                    since >= period,
                    "{f}: {t} is before anchor {anchor} + period"
                );
                assert_eq!(
                    since.num_milliseconds() % period.num_milliseconds(),
                    0,
                    "{f}: {t} is not anchor {anchor} + k·period"
                );
            }
            for w in runs.windows(2) {
                assert_eq!(w[1] - w[0], period, "{f}");
            }
        }
        Frequency::At(_) => assert!(runs.len() <= 1, "{f} fires {runs:?}"),
        Frequency::Cron(c) => {
            assert_eq!(f.kind(), FrequencyKind::Cron);
            for &t in &runs {
                assert_eq!(t.nanosecond(), 0, "{f}: {t}");
                let local = zone.to_local(t);
                assert!(local.year() <= 2100, "{f}: {t} ({local} in {zone})");
                if matches!(zone, Zone::Utc | Zone::Fixed(_)) {
                    assert!(
                        c.matches(local),
                        "{f}: {t} ({local} in {zone}) does not match"
                    );
                    assert!(local.year() <= 2099, "{f}: {t} ({local} in {zone})");
                }
            }
        }
    }
});
