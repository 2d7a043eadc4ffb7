use super::cron::days_in_month;
use super::*;
use chrono::{Datelike, FixedOffset, SecondsFormat, TimeZone, Timelike};
use proptest::prelude::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn z(s: &str) -> Zone {
    Zone::parse(s).unwrap()
}

fn f(s: &str) -> Frequency {
    Frequency::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn cron(s: &str) -> Cron {
    Cron::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn fmt_utc(x: DateTime<Utc>) -> String {
    x.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A wall-clock reading with its offset, e.g. `2025-03-09T03:30:00-04:00`.
fn fmt_in(x: DateTime<Utc>, zone: Zone) -> String {
    let off = FixedOffset::east_opt(zone.offset_secs_at(x)).unwrap();
    x.with_timezone(&off)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The first `n` runs of a cron expression after `after`, read in `zone`.
fn runs(expr: &str, after: &str, zone: &str, n: usize) -> Vec<String> {
    let (c, zone) = (cron(expr), z(zone));
    let sched = Schedule::new(Frequency::Cron(c), t(after));
    sched
        .runs_after(t(after), zone)
        .take(n)
        .map(|x| fmt_in(x, zone))
        .collect()
}

fn dates(expr: &str, after: &str, n: usize) -> Vec<String> {
    let (c, zone) = (cron(expr), Zone::Utc);
    Schedule::new(Frequency::Cron(c), t(after))
        .runs_after(t(after), zone)
        .take(n)
        .map(|x| x.format("%Y-%m-%d").to_string())
        .collect()
}

// ---------------------------------------------------------------- parsing and display

#[test]
fn kinds_and_canonical_display() {
    let cases = [
        ("rate(5m)", FrequencyKind::Rate, "rate(5m)"),
        ("RATE (05 M)", FrequencyKind::Rate, "rate(5m)"),
        ("rate(30s)", FrequencyKind::Rate, "rate(30s)"),
        ("rate(2d)", FrequencyKind::Rate, "rate(2d)"),
        (
            "at(2022-06-06 13:15:30 Asia/Shanghai)",
            FrequencyKind::At,
            "at(2022-06-06 13:15:30 Asia/Shanghai)",
        ),
        (
            "AT(2022-06-06 13:15:30)",
            FrequencyKind::At,
            "at(2022-06-06 13:15:30)",
        ),
        (
            "at(2022-06-06 13:15:30 GMT-7:00)",
            FrequencyKind::At,
            "at(2022-06-06 13:15:30 GMT-7:00)",
        ),
        ("0 */20 * * * ?", FrequencyKind::Cron, "0 */20 * * * ?"),
        (
            "  0  15   10 ?  *  mon-fri  ",
            FrequencyKind::Cron,
            "0 15 10 ? * MON-FRI",
        ),
        (
            "0 15 10 ? * * 2022 Asia/Shanghai",
            FrequencyKind::Cron,
            "0 15 10 ? * * 2022 Asia/Shanghai",
        ),
        (
            "0 0/30 10-11 * * ? 2022 GMT+8:00",
            FrequencyKind::Cron,
            "0 0/30 10-11 * * ? 2022 GMT+8:00",
        ),
        (
            "0 0/5 14 * 10 ? 2022/2 UTC",
            FrequencyKind::Cron,
            "0 0/5 14 * 10 ? 2022/2 UTC",
        ),
        ("0 0 12 * * ? GMT", FrequencyKind::Cron, "0 0 12 * * ? UTC"),
        ("0 15 10 l * ?", FrequencyKind::Cron, "0 15 10 L * ?"),
        ("0 15 10 ? jan 5l", FrequencyKind::Cron, "0 15 10 ? JAN 5L"),
    ];
    for (input, kind, canonical) in cases {
        let freq = f(input);
        assert_eq!(freq.kind(), kind, "{input}");
        assert_eq!(freq.to_string(), canonical, "{input}");
        assert_eq!(f(canonical), freq, "{input} round trip");
        assert_eq!(input.parse::<Frequency>().unwrap(), freq);
    }
}

#[test]
fn the_seeds_and_the_vendor_docs_examples_parse() {
    for s in [
        "0 */20 * * * *",
        "0 */15 * * * *",
        "0 15 10 ? * *",
        "0 15 10 * * ?",
        "0 0 10,14,16 * * ?",
        "0 0/30 9-17 * * ?",
        "0 0-5 14 * * ?",
        "0 0/5 14,18 * * ?",
        "0 0 12 ? * WED",
        "0 15 10 15 * ?",
        "0 15 10 L * ?",
        "0 15 10 ? * 6L",
        "0 15 10 ? * 6#3",
        "0 10,44 14 ? 3 WED",
        "0 15 8 ? * * 2022",
        "0 15 08 ? * * 2022",
    ] {
        assert_eq!(f(s).kind(), FrequencyKind::Cron, "{s}");
    }
}

#[test]
fn explicit_zones() {
    assert_eq!(f("rate(5m)").explicit_zone(), None);
    assert_eq!(f("at(2022-06-06 13:15:30)").explicit_zone(), None);
    assert_eq!(
        f("at(2022-06-06 13:15:30 UTC)").explicit_zone(),
        Some(Zone::Utc)
    );
    assert_eq!(f("0 0 12 * * ?").explicit_zone(), None);
    assert_eq!(f("0 0 12 * * ? 2030").explicit_zone(), None);
    assert_eq!(
        f("0 0 12 * * ? Europe/Berlin").explicit_zone(),
        Some(z("Europe/Berlin"))
    );
    assert_eq!(
        f("0 0 12 * * ? * Europe/Berlin").explicit_zone(),
        Some(z("Europe/Berlin"))
    );
    assert!(cron("0 0 12 * * ? */2").has_year());
    assert!(!cron("0 0 12 * * ? UTC").has_year());
}

#[test]
fn invalid_expressions_are_api_errors() {
    let cases: &[&str] = &[
        "rate(0m)",
        "rate(5x)",
        "rate(5)",
        "rate(m)",
        "rate(5m",
        "rate( 5m)",
        "rate(5.5m)",
        "rate(-5m)",
        "rate(99999999999999999999999s)",
        "at(2022-13-01 00:00:00)",
        "at(2022-02-30 00:00:00)",
        "at(2022-06-06 13:15)",
        "at(2022-6-6 13:15:30)",
        "at(2022-06-06T13:15:30)",
        "at(2022-06-06 13:15:30",
        "at(2022-06-06 24:00:00)",
        "at(2022-06-06 13:15:30UTC)",
        "0 0 12 * *",
        "0 0 12 * * ? 2022 UTC extra",
        "@daily",
        "60 * * * * ?",
        "0 60 * * * ?",
        "0 0 24 * * ?",
        "0 0 0 0 * ?",
        "0 0 0 32 * ?",
        "0 0 0 * 0 ?",
        "0 0 0 * 13 ?",
        "0 0 0 ? * 8",
        "0 0 0 ? * L",
        "0 0 0 ? * 5#6",
        "0 0 0 ? * 5#0",
        "0 0 0 ? * 5#",
        "0 0 0 1 1 ? 1969",
        "0 0 0 1 1 ? 2100",
        "0 0 0 1 1 ? 22",
        "000 0 0 * * ?",
        "0 0 008 * * ?",
        "? 0 0 * * ?",
        "0 ? 0 * * ?",
        "0 0 0 * ? ?",
        "0 0 0 L-3 * ?",
        "0 0 0 W * ?",
        "0 0 0 32W * ?",
        "0 0 0 15L * ?",
        "0 0 0 ? * 5W",
        "*/0 * * * * ?",
        "*/60 * * * * ?",
        "0 50-10 * * * ?",
        "0 0 0 ? * FRI-MON",
        "0 0 0 1,,2 * ?",
        "0 0 0 1, * ?",
        "0 0 0 ? * ?/2",
        "0 0 0 * FOO ?",
        "0 0 0 * * MO",
        "a b c d e f",
    ];
    for s in cases {
        let e = Frequency::parse(s).expect_err(s);
        assert!(matches!(e, FrequencyError::Syntax(_)), "{s}: {e:?}");
        assert_eq!(e.side(), ErrorSide::Api, "{s}");
        assert_eq!(e.code(), "InvalidParam.Frequency", "{s}");
        assert!(
            e.to_string()
                .starts_with("The specified frequency is invalid: "),
            "{e}"
        );
        assert_eq!(e.task_error(), None);
    }
    assert_eq!(Frequency::parse("   "), Err(FrequencyError::Empty));
    for s in [
        "at(2022-06-06 13:15:30 Mars/Olympus)",
        "at(2022-06-06 13:15:30 GMT+08:00)",
        "at(2022-06-06 13:15:30 GMT-7)",
        "0 0 0 * * ? EST",
        "0 0 0 * * ? asia/shanghai",
        "0 0 0 * * ? GMT+15:00",
        "0 0 0 * * ? UTC+8:00",
        "0 0 0 * * ? 2030 CST",
    ] {
        let e = Frequency::parse(s).expect_err(s);
        assert!(matches!(e, FrequencyError::UnknownZone(_)), "{s}: {e:?}");
        assert_eq!(e.code(), "InvalidParam.Frequency");
    }
}

#[test]
fn error_messages_say_what_is_wrong() {
    let msg = Frequency::parse("0 0 25 * * ?").unwrap_err().to_string();
    assert!(msg.contains("hours") && msg.contains("25"), "{msg}");
    let msg = Frequency::parse("0 0 0 ? * FRI-MON")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("backwards") && msg.contains("day-of-week"),
        "{msg}"
    );
    let msg = Frequency::parse("0 0 12 * *").unwrap_err().to_string();
    assert!(msg.contains("has 5"), "{msg}");
}

// ---------------------------------------------------------------- zones

#[test]
fn zones_parse_as_the_vendor_spells_them() {
    assert_eq!(z("UTC"), Zone::Utc);
    assert_eq!(z("GMT"), Zone::Utc);
    assert_eq!(
        z("GMT+8:00").offset_secs_at(t("2025-01-01T00:00:00Z")),
        8 * 3600
    );
    assert_eq!(
        z("GMT-7:00").offset_secs_at(t("2025-01-01T00:00:00Z")),
        -7 * 3600
    );
    assert_eq!(
        z("GMT+5:45").offset_secs_at(t("2025-01-01T00:00:00Z")),
        5 * 3600 + 45 * 60
    );
    assert_eq!(
        z("GMT+14:00").offset_secs_at(t("2025-01-01T00:00:00Z")),
        14 * 3600
    );
    assert_eq!(z("GMT-14:00").to_string(), "GMT-14:00");
    assert_eq!(
        z("Etc/GMT-8").offset_secs_at(t("2025-01-01T00:00:00Z")),
        8 * 3600
    );
    assert_eq!(z("Asia/Shanghai").to_string(), "Asia/Shanghai");
    assert_eq!(z("GMT-0:00").to_string(), "GMT+0:00");
    for bad in [
        "",
        "gmt+8:00",
        "GMT+08:00",
        "GMT+8",
        "GMT+14:30",
        "GMT+8:60",
        "UTC+8",
        "+08:00",
        "Asia/Nowhere",
        "CST",
        "utc",
    ] {
        assert!(Zone::parse(bad).is_err(), "{bad}");
    }
    for s in [
        "UTC",
        "GMT+8:00",
        "GMT-5:30",
        "America/New_York",
        "Etc/GMT+3",
    ] {
        assert_eq!(z(s).to_string(), s);
        assert_eq!(z(&z(s).to_string()), z(s));
    }
}

#[test]
fn the_instance_zone_is_read_leniently() {
    let off =
        |s: &str| Zone::parse_instance(s).map(|z| z.offset_secs_at(t("2025-01-01T00:00:00Z")));
    assert_eq!(off("Asia/Shanghai"), Some(8 * 3600));
    assert_eq!(off("GMT+8:00"), Some(8 * 3600));
    assert_eq!(off("GMT+08:00"), Some(8 * 3600));
    assert_eq!(off("UTC+8"), Some(8 * 3600));
    assert_eq!(off("utc-05:30"), Some(-(5 * 3600 + 1800)));
    assert_eq!(off("+0545"), Some(5 * 3600 + 45 * 60));
    assert_eq!(off("-3"), Some(-3 * 3600));
    assert_eq!(off(" utc "), Some(0));
    assert_eq!(off("Z"), Some(0));
    assert_eq!(off("Europe/Nowhere"), None);
    assert_eq!(off("+15:00"), None);
    assert_eq!(off("ÄÖÜ+1"), None);
    assert_eq!(Zone::from_offset_secs(3600 + 1), None);
    assert_eq!(Zone::from_offset_secs(15 * 3600), None);
}

#[test]
fn resolving_skipped_and_repeated_wall_clock_times() {
    let local = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
    let ny = z("America/New_York");
    // Spring forward: 02:30 does not exist; it is read with EST, i.e. 03:30 EDT.
    assert_eq!(
        fmt_utc(ny.resolve(local("2025-03-09 02:30:00")).unwrap()),
        "2025-03-09T07:30:00Z"
    );
    // Fall back: 01:30 happens twice; the first (EDT) is taken.
    assert_eq!(
        fmt_utc(ny.resolve(local("2025-11-02 01:30:00")).unwrap()),
        "2025-11-02T05:30:00Z"
    );
    let berlin = z("Europe/Berlin");
    assert_eq!(
        fmt_utc(berlin.resolve(local("2025-03-30 02:30:00")).unwrap()),
        "2025-03-30T01:30:00Z"
    );
    assert_eq!(
        fmt_utc(berlin.resolve(local("2025-10-26 02:30:00")).unwrap()),
        "2025-10-26T00:30:00Z"
    );
    // Samoa skipped 30 December 2011 entirely.
    let apia = z("Pacific/Apia");
    assert_eq!(
        fmt_in(apia.resolve(local("2011-12-30 12:00:00")).unwrap(), apia),
        "2011-12-31T12:00:00+14:00"
    );
}

// ---------------------------------------------------------------- cron fields

#[test]
fn seconds_minutes_hours() {
    assert_eq!(
        runs("*/20 * * * * ?", "2025-01-01T00:00:00Z", "UTC", 3),
        [
            "2025-01-01T00:00:20+00:00",
            "2025-01-01T00:00:40+00:00",
            "2025-01-01T00:01:00+00:00"
        ]
    );
    assert_eq!(
        runs("5,35 0-1 9 * * ?", "2025-01-01T09:00:10Z", "UTC", 4),
        [
            "2025-01-01T09:00:35+00:00",
            "2025-01-01T09:01:05+00:00",
            "2025-01-01T09:01:35+00:00",
            "2025-01-02T09:00:05+00:00"
        ]
    );
    assert_eq!(
        runs("0 0 0/8 * * ?", "2025-01-01T01:00:00Z", "UTC", 3),
        [
            "2025-01-01T08:00:00+00:00",
            "2025-01-01T16:00:00+00:00",
            "2025-01-02T00:00:00+00:00"
        ]
    );
    assert_eq!(
        runs("0 10-40/15 * * * ?", "2025-01-01T00:00:00Z", "UTC", 4),
        [
            "2025-01-01T00:10:00+00:00",
            "2025-01-01T00:25:00+00:00",
            "2025-01-01T00:40:00+00:00",
            "2025-01-01T01:10:00+00:00"
        ]
    );
    assert_eq!(
        runs("59 59 23 * * ?", "2025-12-31T23:59:58Z", "UTC", 1),
        ["2025-12-31T23:59:59+00:00"]
    );
    assert_eq!(
        runs("59 59 23 * * ?", "2025-12-31T23:59:59Z", "UTC", 1),
        ["2026-01-01T23:59:59+00:00"]
    );
}

#[test]
fn months_and_names() {
    assert_eq!(
        dates("0 0 0 1 JAN-MAR,dec ?", "2025-01-15T00:00:00Z", 4),
        ["2025-02-01", "2025-03-01", "2025-12-01", "2026-01-01"]
    );
    assert_eq!(
        dates("0 0 0 1 */4 ?", "2025-01-15T00:00:00Z", 3),
        ["2025-05-01", "2025-09-01", "2026-01-01"]
    );
    assert_eq!(
        dates("0 0 0 1 february ?", "2025-01-15T00:00:00Z", 1),
        ["2025-02-01"]
    );
    assert_eq!(
        dates("0 0 0 1 02 ?", "2025-01-15T00:00:00Z", 1),
        ["2025-02-01"]
    );
}

#[test]
fn weekdays_are_numbered_monday_1_to_sunday_7() {
    // 2025-01-01 is a Wednesday.
    assert_eq!(
        dates("0 0 12 ? * 1", "2025-01-01T00:00:00Z", 1),
        ["2025-01-06"]
    ); // Monday
    assert_eq!(
        dates("0 0 12 ? * 7", "2025-01-01T00:00:00Z", 1),
        ["2025-01-05"]
    ); // Sunday
    assert_eq!(
        dates("0 0 12 ? * 0", "2025-01-01T00:00:00Z", 1),
        ["2025-01-05"]
    ); // Sunday too
    assert_eq!(
        dates("0 0 12 ? * SUN", "2025-01-01T00:00:00Z", 1),
        ["2025-01-05"]
    );
    assert_eq!(
        dates("0 0 12 ? * 6", "2025-01-01T00:00:00Z", 1),
        ["2025-01-04"]
    ); // Saturday
    assert_eq!(
        dates("0 0 12 ? * WED", "2025-01-01T00:00:00Z", 1),
        ["2025-01-01"]
    );
    assert_eq!(
        dates("0 0 12 ? * MON-FRI", "2025-01-03T13:00:00Z", 3),
        ["2025-01-06", "2025-01-07", "2025-01-08"]
    );
    assert_eq!(
        dates("0 0 12 ? * 5-7", "2025-01-01T00:00:00Z", 3),
        ["2025-01-03", "2025-01-04", "2025-01-05"]
    );
    // `*` and `a/n` run over SUN(0)–SAT(6), as the agent's do.
    assert_eq!(
        dates("0 0 12 ? * */3", "2025-01-01T00:00:00Z", 3),
        ["2025-01-01", "2025-01-04", "2025-01-05"]
    );
    assert_eq!(
        dates("0 0 12 ? * 5/1", "2025-01-01T00:00:00Z", 3),
        ["2025-01-03", "2025-01-04", "2025-01-10"]
    );
}

#[test]
fn day_of_month_and_day_of_week_are_ored_when_both_restricted() {
    // June 2025: the 13th is a Friday; Fridays are 6, 13, 20, 27.
    assert_eq!(
        dates("0 0 0 10 JUN FRI", "2025-06-01T00:00:00Z", 5),
        [
            "2025-06-06",
            "2025-06-10",
            "2025-06-13",
            "2025-06-20",
            "2025-06-27"
        ]
    );
    // `*` or `?` in one of them leaves the other to decide.
    assert_eq!(
        dates("0 0 0 10 JUN *", "2025-06-01T00:00:00Z", 1),
        ["2025-06-10"]
    );
    assert_eq!(
        dates("0 0 0 * JUN FRI", "2025-06-01T00:00:00Z", 1),
        ["2025-06-06"]
    );
    assert_eq!(
        dates("0 0 0 ? JUN ?", "2025-05-31T12:00:00Z", 2),
        ["2025-06-01", "2025-06-02"]
    );
}

#[test]
fn last_day_and_leap_years() {
    assert_eq!(
        dates("0 0 0 L * ?", "2028-01-15T00:00:00Z", 4),
        ["2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30"]
    );
    assert_eq!(
        dates("0 0 0 L 2 ?", "2025-01-01T00:00:00Z", 4),
        ["2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"]
    );
    assert_eq!(
        dates("0 0 0 29 2 ?", "2025-01-01T00:00:00Z", 3),
        ["2028-02-29", "2032-02-29", "2036-02-29"]
    );
    assert_eq!(
        dates("0 0 0 31 * ?", "2025-01-31T12:00:00Z", 3),
        ["2025-03-31", "2025-05-31", "2025-07-31"]
    );
    assert_eq!(days_in_month(2000, 2), 29);
    assert_eq!(days_in_month(2100, 2), 28);
    assert_eq!(days_in_month(2096, 2), 29);
    // The last 29 February the dialect can reach.
    assert_eq!(
        dates("0 0 0 29 2 ?", "2096-03-01T00:00:00Z", 1),
        Vec::<String>::new()
    );
    assert_eq!(
        dates("0 0 0 29 2 ?", "2095-03-01T00:00:00Z", 1),
        ["2096-02-29"]
    );
}

#[test]
fn nearest_weekday() {
    // 15 Feb 2025 is a Saturday: Friday the 14th. 15 June 2025 is a Sunday: Monday the 16th.
    assert_eq!(
        dates("0 0 0 15W * ?", "2025-02-01T00:00:00Z", 1),
        ["2025-02-14"]
    );
    assert_eq!(
        dates("0 0 0 15W * ?", "2025-06-01T00:00:00Z", 1),
        ["2025-06-16"]
    );
    assert_eq!(
        dates("0 0 0 15W * ?", "2025-07-01T00:00:00Z", 1),
        ["2025-07-15"]
    ); // a Tuesday
       // 1 Feb 2025 is a Saturday: not back into January but on to Monday the 3rd.
    assert_eq!(
        dates("0 0 0 1W 2 ?", "2025-01-01T00:00:00Z", 1),
        ["2025-02-03"]
    );
    // 31 Aug 2025 is a Sunday: not on into September but back to Friday the 29th.
    assert_eq!(
        dates("0 0 0 31W 8 ?", "2025-01-01T00:00:00Z", 1),
        ["2025-08-29"]
    );
    // No 31st in a 30-day month, so no nearest weekday either.
    assert_eq!(
        dates("0 0 0 31W * ?", "2025-04-01T00:00:00Z", 1),
        ["2025-05-30"]
    ); // 31 May is a Saturday
       // LW: 31 May 2025 is a Saturday, 31 Aug a Sunday.
    assert_eq!(
        dates("0 0 0 LW 5,8 ?", "2025-01-01T00:00:00Z", 2),
        ["2025-05-30", "2025-08-29"]
    );
    assert_eq!(
        dates("0 0 0 LW 2 ?", "2028-01-01T00:00:00Z", 1),
        ["2028-02-29"]
    ); // a Tuesday
}

#[test]
fn last_and_nth_weekday_of_the_month() {
    assert_eq!(
        dates("0 0 0 ? 2 5L", "2028-01-01T00:00:00Z", 1),
        ["2028-02-25"]
    );
    assert_eq!(
        dates("0 0 0 ? * FRIL", "2025-06-01T00:00:00Z", 2),
        ["2025-06-27", "2025-07-25"]
    );
    assert_eq!(
        dates("0 0 0 ? * 7L", "2025-08-01T00:00:00Z", 1),
        ["2025-08-31"]
    );
    // 6#3: the third Saturday (6 = SAT here).
    assert_eq!(
        dates("0 0 0 ? 3 6#3", "2026-01-01T00:00:00Z", 1),
        ["2026-03-21"]
    );
    // 1#5: fifth Mondays only exist in some months.
    assert_eq!(
        dates("0 0 0 ? * MON#5 2026", "2026-01-01T00:00:00Z", 5),
        ["2026-03-30", "2026-06-29", "2026-08-31", "2026-11-30"]
    );
    assert_eq!(
        dates("0 0 0 ? * 1#1,5L", "2025-06-01T00:00:00Z", 2),
        ["2025-06-02", "2025-06-27"]
    );
}

#[test]
fn year_field() {
    assert_eq!(
        dates("0 0 0 1 1 ? 2030-2032", "2025-06-01T00:00:00Z", 4),
        ["2030-01-01", "2031-01-01", "2032-01-01"]
    );
    assert_eq!(
        dates("0 0 0 1 1 ? 2025/10", "2025-06-01T00:00:00Z", 3),
        ["2035-01-01", "2045-01-01", "2055-01-01"]
    );
    assert_eq!(
        dates("0 0 0 1 1 ? 2026,2028 UTC", "2025-06-01T00:00:00Z", 3),
        ["2026-01-01", "2028-01-01"]
    );
    assert_eq!(
        dates("0 0 0 1 1 ? ?", "2098-06-01T00:00:00Z", 3),
        ["2099-01-01"]
    );
    assert_eq!(
        dates("0 0 0 1 1 ? */50", "2000-06-01T00:00:00Z", 3),
        ["2020-01-01", "2070-01-01"]
    );
    assert_eq!(
        dates("0 0 0 1 1 ? 2020", "2025-06-01T00:00:00Z", 1),
        Vec::<String>::new()
    );
}

#[test]
fn impossible_dates_end_quickly() {
    let start = std::time::Instant::now();
    for s in [
        "0 0 0 30 2 ?",
        "0 0 0 31 4,6,9,11 ?",
        "0 0 0 31 2 ?",
        "0 0 0 30W 2 ?",
        "* * * 30 2 ? *",
    ] {
        assert_eq!(
            cron(s).next_after(t("1970-01-01T00:00:00Z"), Zone::Utc),
            None,
            "{s}"
        );
        assert_eq!(
            cron(s).next_after(t("2025-01-01T00:00:00Z"), z("America/New_York")),
            None,
            "{s}"
        );
    }
    assert_eq!(
        cron("* * * * * ?").next_after(t("2099-12-31T23:59:59Z"), Zone::Utc),
        None
    );
    assert_eq!(
        cron("* * * * * ?").next_after(t("2150-01-01T00:00:00Z"), Zone::Utc),
        None
    );
    assert!(start.elapsed() < std::time::Duration::from_millis(500));
    // Before 1970 the search starts at 1970.
    assert_eq!(
        fmt_utc(
            cron("0 0 0 1 1 ?")
                .next_after(t("1900-05-05T00:00:00Z"), Zone::Utc)
                .unwrap()
        ),
        "1970-01-01T00:00:00Z"
    );
}

// ---------------------------------------------------------------- zones and DST in cron

#[test]
fn cron_is_read_in_its_own_zone_else_the_instance_zone() {
    let at = t("2025-01-01T00:00:00Z");
    let anchor = at;
    let sh = f("0 0 9 * * ? Asia/Shanghai");
    assert_eq!(
        fmt_utc(sh.next_after(at, anchor, z("America/New_York")).unwrap()),
        "2025-01-01T01:00:00Z"
    );
    let plain = f("0 0 9 * * ?");
    assert_eq!(
        fmt_utc(plain.next_after(at, anchor, z("Asia/Shanghai")).unwrap()),
        "2025-01-01T01:00:00Z"
    );
    assert_eq!(
        fmt_utc(plain.next_after(at, anchor, Zone::Utc).unwrap()),
        "2025-01-01T09:00:00Z"
    );
    assert_eq!(
        fmt_utc(plain.next_after(at, anchor, z("GMT-5:30")).unwrap()),
        "2025-01-01T14:30:00Z"
    );
    let fixed = f("0 0 9 * * ? GMT+8:00");
    assert_eq!(
        fmt_utc(fixed.next_after(at, anchor, Zone::Utc).unwrap()),
        "2025-01-01T01:00:00Z"
    );
    let etc = f("0 0 9 * * ? Etc/GMT-8");
    assert_eq!(
        fmt_utc(etc.next_after(at, anchor, Zone::Utc).unwrap()),
        "2025-01-01T01:00:00Z"
    );
}

#[test]
fn new_york_spring_forward() {
    // 2025-03-09: 02:00 EST becomes 03:00 EDT.
    assert_eq!(
        runs(
            "0 30 2 * * ?",
            "2025-03-08T12:00:00Z",
            "America/New_York",
            3
        ),
        [
            "2025-03-09T03:30:00-04:00",
            "2025-03-10T02:30:00-04:00",
            "2025-03-11T02:30:00-04:00"
        ]
    );
    assert_eq!(
        runs(
            "0 0/30 * * * ?",
            "2025-03-09T05:45:00Z",
            "America/New_York",
            4
        ),
        [
            "2025-03-09T01:00:00-05:00",
            "2025-03-09T01:30:00-05:00",
            "2025-03-09T03:00:00-04:00",
            "2025-03-09T03:30:00-04:00"
        ]
    );
    // Asked just after the change, the skipped 02:30 is still ahead (03:30 EDT).
    let c = cron("0 30 2 * * ?");
    assert_eq!(
        fmt_utc(
            c.next_after(t("2025-03-09T07:10:00Z"), z("America/New_York"))
                .unwrap()
        ),
        "2025-03-09T07:30:00Z"
    );
    assert_eq!(
        fmt_utc(
            c.next_after(t("2025-03-09T07:30:00Z"), z("America/New_York"))
                .unwrap()
        ),
        "2025-03-10T06:30:00Z"
    );
}

#[test]
fn new_york_fall_back() {
    // 2025-11-02: 02:00 EDT becomes 01:00 EST; 01:xx happens twice and runs once.
    assert_eq!(
        runs(
            "0 30 1 * * ?",
            "2025-11-01T12:00:00Z",
            "America/New_York",
            3
        ),
        [
            "2025-11-02T01:30:00-04:00",
            "2025-11-03T01:30:00-05:00",
            "2025-11-04T01:30:00-05:00"
        ]
    );
    assert_eq!(
        runs(
            "0 0/30 * * * ?",
            "2025-11-02T04:15:00Z",
            "America/New_York",
            5
        ),
        [
            "2025-11-02T00:30:00-04:00",
            "2025-11-02T01:00:00-04:00",
            "2025-11-02T01:30:00-04:00",
            "2025-11-02T02:00:00-05:00",
            "2025-11-02T02:30:00-05:00"
        ]
    );
    // From inside the repeated hour, the day's 01:45 has already run (at 01:45 EDT).
    let c = cron("0 45 1 * * ?");
    assert_eq!(
        fmt_utc(
            c.next_after(t("2025-11-02T06:15:00Z"), z("America/New_York"))
                .unwrap()
        ),
        "2025-11-03T06:45:00Z"
    );
    // Every second: a pause of an hour, no second run of any wall-clock second.
    let every = cron("* * * * * ?");
    assert_eq!(
        fmt_utc(
            every
                .next_after(t("2025-11-02T05:59:59Z"), z("America/New_York"))
                .unwrap()
        ),
        "2025-11-02T07:00:00Z"
    );
    assert_eq!(
        fmt_utc(
            every
                .next_after(t("2025-11-02T06:30:00Z"), z("America/New_York"))
                .unwrap()
        ),
        "2025-11-02T07:00:00Z"
    );
}

#[test]
fn berlin_both_ways() {
    assert_eq!(
        runs("0 30 2 * * ?", "2025-03-29T12:00:00Z", "Europe/Berlin", 2),
        ["2025-03-30T03:30:00+02:00", "2025-03-31T02:30:00+02:00"]
    );
    assert_eq!(
        runs("0 30 2 * * ?", "2025-10-25T12:00:00Z", "Europe/Berlin", 2),
        ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]
    );
    assert_eq!(
        runs(
            "0 0 * * * ? Europe/Berlin",
            "2025-10-25T23:30:00Z",
            "UTC",
            4
        ),
        [
            "2025-10-26T00:00:00+00:00",
            "2025-10-26T02:00:00+00:00",
            "2025-10-26T03:00:00+00:00",
            "2025-10-26T04:00:00+00:00"
        ]
    );
    let c = cron("0 0 * * * ? Europe/Berlin");
    let berlin = z("Europe/Berlin");
    let shown: Vec<String> = Schedule::new(Frequency::Cron(c), t("2025-10-25T23:30:00Z"))
        .runs_after(t("2025-10-25T23:30:00Z"), Zone::Utc)
        .take(4)
        .map(|x| fmt_in(x, berlin))
        .collect();
    // 02:00 CEST runs, 02:00 CET (the repeat) does not, 03:00 CET does.
    assert_eq!(
        shown,
        [
            "2025-10-26T02:00:00+02:00",
            "2025-10-26T03:00:00+01:00",
            "2025-10-26T04:00:00+01:00",
            "2025-10-26T05:00:00+01:00"
        ]
    );
}

// ---------------------------------------------------------------- at and rate

#[test]
fn at_with_and_without_zone() {
    let anchor = t("2020-01-01T00:00:00Z");
    let sh = f("at(2022-06-06 13:15:30 Asia/Shanghai)");
    assert_eq!(
        fmt_utc(
            sh.next_after(t("2022-06-06T00:00:00Z"), anchor, Zone::Utc)
                .unwrap()
        ),
        "2022-06-06T05:15:30Z"
    );
    assert_eq!(
        sh.next_after(t("2022-06-06T05:15:30Z"), anchor, Zone::Utc),
        None
    );
    // Without a zone, UTC — whatever the instance's zone.
    let plain = f("at(2022-06-06 13:15:30)");
    assert_eq!(
        fmt_utc(
            plain
                .next_after(t("2022-06-06T00:00:00Z"), anchor, z("Asia/Tokyo"))
                .unwrap()
        ),
        "2022-06-06T13:15:30Z"
    );
    let west = f("at(2022-06-06 13:15:30 GMT-7:00)");
    assert_eq!(
        fmt_utc(
            west.next_after(t("2022-06-06T00:00:00Z"), anchor, Zone::Utc)
                .unwrap()
        ),
        "2022-06-06T20:15:30Z"
    );
    let gap = f("at(2025-03-09 02:30:00 America/New_York)");
    assert_eq!(
        fmt_utc(
            gap.next_after(t("2025-01-01T00:00:00Z"), anchor, Zone::Utc)
                .unwrap()
        ),
        "2025-03-09T07:30:00Z"
    );
    let twice = f("at(2025-11-02 01:30:00 America/New_York)");
    assert_eq!(
        fmt_utc(
            twice
                .next_after(t("2025-01-01T00:00:00Z"), anchor, Zone::Utc)
                .unwrap()
        ),
        "2025-11-02T05:30:00Z"
    );
    assert_eq!(
        twice.next_after(t("2025-11-02T05:30:00Z"), anchor, Zone::Utc),
        None
    );
    let Frequency::At(a) = sh else { unreachable!() };
    assert_eq!(a.zone(), Some(z("Asia/Shanghai")));
    assert_eq!(a.local().to_string(), "2022-06-06 13:15:30");
}

#[test]
fn rate_is_anchored_at_creation() {
    let anchor = t("2025-01-01T00:00:00.500Z");
    let sched = Schedule::new(f("rate(5m)"), anchor);
    let next = |s: &str| {
        sched
            .next_after(t(s), Zone::Utc)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    // Not at creation: one interval after it.
    assert_eq!(next("2025-01-01T00:00:00.500Z"), "2025-01-01T00:05:00.500Z");
    assert_eq!(next("2024-12-01T00:00:00Z"), "2025-01-01T00:05:00.500Z");
    assert_eq!(next("2025-01-01T00:05:00.499Z"), "2025-01-01T00:05:00.500Z");
    assert_eq!(next("2025-01-01T00:05:00.500Z"), "2025-01-01T00:10:00.500Z");
    assert_eq!(next("2025-01-01T10:07:00Z"), "2025-01-01T10:10:00.500Z");
    let runs: Vec<_> = sched
        .runs_after(anchor, Zone::Utc)
        .take(3)
        .map(|x| (x - anchor).num_seconds())
        .collect();
    assert_eq!(runs, [300, 600, 900]);
    // The zone plays no part.
    assert_eq!(
        sched.next_after(t("2025-03-09T07:00:00Z"), z("America/New_York")),
        Some(t("2025-03-09T07:00:00.500Z"))
    );
    let Frequency::Rate(r) = f("rate(2h)") else {
        unreachable!()
    };
    assert_eq!(
        (r.value(), r.unit(), r.interval_secs()),
        (2, RateUnit::Hours, 7200)
    );
    assert_eq!(Rate::new(0, RateUnit::Seconds), None);
    assert_eq!(Rate::new(u64::MAX, RateUnit::Days), None);
}

// ---------------------------------------------------------------- validation

#[test]
fn rate_limits() {
    let now = t("2025-01-01T00:00:00Z");
    let check = |s: &str, timeout| f(s).validate(timeout, now);
    assert_eq!(
        check("rate(59s)", 10),
        Err(FrequencyError::RateOutOfRange { interval_secs: 59 })
    );
    assert_eq!(check("rate(60s)", 59), Ok(()));
    assert_eq!(
        check("rate(1m)", 60),
        Err(FrequencyError::RateNotLongerThanTimeout {
            interval_secs: 60,
            timeout_secs: 60
        })
    );
    assert_eq!(check("rate(7d)", 86_400), Ok(()));
    assert_eq!(check("rate(168h)", 60), Ok(()));
    assert_eq!(
        check("rate(604801s)", 60),
        Err(FrequencyError::RateOutOfRange {
            interval_secs: 604_801
        })
    );
    assert_eq!(
        check("rate(8d)", 60),
        Err(FrequencyError::RateOutOfRange {
            interval_secs: 691_200
        })
    );
    let e = check("rate(2m)", 300).unwrap_err();
    assert_eq!(e.code(), "InvalidParam.Frequency");
    assert!(
        e.to_string()
            .contains("longer than the timeout of 300 seconds"),
        "{e}"
    );
}

#[test]
fn cron_interval_limits() {
    let now = t("2025-01-01T00:00:00Z");
    let check = |s: &str, timeout| f(s).validate(timeout, now);
    let too = |gap_secs, min_secs| Err(FrequencyError::CronTooFrequent { gap_secs, min_secs });
    assert_eq!(check("*/5 * * * * ?", 1), too(5, 10));
    assert_eq!(check("*/10 * * * * ?", 10), Ok(()));
    assert_eq!(check("*/10 * * * * ?", 60), too(10, 60));
    assert_eq!(check("0 */20 * * * *", 60), Ok(()));
    assert_eq!(check("0,50 * * * * ?", 10), Ok(())); // 50 s then 10 s
    assert_eq!(check("0,55 * * * * ?", 1), too(5, 10)); // 00:55 → 01:00
    assert_eq!(check("0 0,59 * * * ?", 60), Ok(()));
    assert_eq!(check("30 0,59 * * * ?", 61), too(60, 61));
    assert_eq!(check("0,59 0,59 0,23 * * ?", 1), too(1, 10)); // 23:59:59 → 00:00:00 next day
    assert_eq!(check("0 0 0,23 * * ?", 3600), Ok(()));
    assert_eq!(check("0 0 0,23 * * ?", 3601), too(3600, 3601));
    // Only on the last day of the month: never two days running.
    assert_eq!(check("0 0 0,23 L * ?", 82_800), Ok(()));
    assert_eq!(check("0 0 0,23 L * ?", 86_400), too(82_800, 86_400));
    // The last and the first of the month are two days running.
    assert_eq!(check("0 0 0,23 L,1 * ?", 3600), Ok(()));
    assert_eq!(check("0 0 0,23 L,1 * ?", 3601), too(3600, 3601));
    // Once a day at most.
    assert_eq!(check("0 0 0 * * ?", 86_400), Ok(()));
    assert_eq!(check("0 0 0 1 1 ? 2030", 86_400), Ok(()));
    assert_eq!(cron("0 0 0 1 1 ? 2030").min_interval_secs(2024), None);
}

#[test]
fn cron_that_can_never_run() {
    let now = t("2026-01-01T00:00:00Z");
    assert_eq!(
        f("0 0 0 30 2 ?").validate(60, now),
        Err(FrequencyError::NeverFires)
    );
    assert_eq!(
        f("0 0 0 1 1 ? 2020").validate(60, now),
        Err(FrequencyError::NeverFires)
    );
    assert_eq!(
        f("0 0 0 1 1 ? 2020-2025 UTC").validate(60, now),
        Err(FrequencyError::NeverFires)
    );
    // Midnight of 1 Jan 2026 in Shanghai was 16:00 UTC the day before: gone.
    assert_eq!(
        f("0 0 0 1 1 ? 2026 Asia/Shanghai").validate(60, now),
        Err(FrequencyError::NeverFires)
    );
    // Without a zone it is still ahead somewhere west of UTC: the API takes it, and the
    // instance decides in its own zone.
    let plain = f("0 0 0 1 1 ? 2026");
    assert_eq!(plain.validate(60, now), Ok(()));
    let e = plain
        .check_on_instance(now, z("Asia/Shanghai"))
        .unwrap_err();
    assert_eq!(
        e,
        FrequencyError::NoNextRun {
            zone: "Asia/Shanghai".into()
        }
    );
    assert_eq!(
        (e.side(), e.code(), e.task_error()),
        (
            ErrorSide::Instance,
            "BadCronExpression",
            Some(TaskError::BadCronExpression)
        )
    );
    assert_eq!(plain.check_on_instance(now, z("GMT-5:00")), Ok(()));
    assert_eq!(
        f("0 0 0 1 1 ? 2026 America/New_York").validate(60, now),
        Ok(())
    );
    assert_eq!(f("rate(5m)").check_on_instance(now, Zone::Utc), Ok(()));
}

#[test]
fn at_in_the_past() {
    let now = t("2025-06-01T00:00:00Z");
    let past = f("at(2025-05-31 23:59:59)");
    let e = past.validate(60, now).unwrap_err();
    assert_eq!(
        e,
        FrequencyError::AtInThePast {
            at: "at(2025-05-31 23:59:59)".into()
        }
    );
    assert_eq!(e.side(), ErrorSide::Api);
    assert_eq!(
        f("at(2025-06-01 00:00:00)")
            .validate(60, now)
            .map_err(|e| e.side()),
        Err(ErrorSide::Api)
    );
    assert_eq!(f("at(2025-06-01 00:00:01)").validate(86_400, now), Ok(()));
    assert!(f("at(2025-06-01 08:00:00 Asia/Shanghai)")
        .validate(60, now)
        .is_err());
    assert_eq!(
        f("at(2025-06-01 08:00:01 Asia/Shanghai)").validate(60, now),
        Ok(())
    );
    let e = past.check_on_instance(now, Zone::Utc).unwrap_err();
    assert_eq!(
        (e.clone(), e.code()),
        (FrequencyError::AtExpired, "BadCronExpression")
    );
}

#[test]
fn serde_uses_the_canonical_string() {
    use serde::de::value::{Error as DeError, StrDeserializer};
    use serde::de::IntoDeserializer;
    let d: StrDeserializer<'_, DeError> = "0  0 12 * * mon".into_deserializer();
    let freq = Frequency::deserialize(d).unwrap();
    assert_eq!(freq.to_string(), "0 0 12 * * MON");
    let d: StrDeserializer<'_, DeError> = "rate(0m)".into_deserializer();
    assert!(Frequency::deserialize(d).is_err());
}

// ---------------------------------------------------------------- properties

const SECONDS: &[&str] = &["0", "*/15", "5,35", "0-10/5", "30", "*", "59"];
const MINUTES: &[&str] = &["0", "*/20", "15,45", "*", "0-5", "30/10"];
const HOURS: &[&str] = &["*", "0", "2", "1-3", "*/6", "9,17", "23"];
const DOMS: &[&str] = &[
    "*", "?", "1", "15", "L", "LW", "15W", "1W", "29", "31", "1-10/3", "L,1",
];
const MONTHS: &[&str] = &["*", "2", "FEB,AUG", "*/3", "JAN-MAR", "DEC", "3,11"];
const DOWS: &[&str] = &[
    "?", "*", "MON", "1-5", "5L", "6#3", "SUN", "7", "0,3", "MON#5",
];
const YEARS: &[&str] = &["", "", "*", "2024-2030", "*/3", "2027"];
const ZONES: &[&str] = &[
    "UTC",
    "GMT+8:00",
    "GMT-5:30",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Shanghai",
    "Australia/Lord_Howe",
    "Pacific/Apia",
];

fn expr_strategy() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SECONDS),
        prop::sample::select(MINUTES),
        prop::sample::select(HOURS),
        prop::sample::select(DOMS),
        prop::sample::select(MONTHS),
        prop::sample::select(DOWS),
        prop::sample::select(YEARS),
    )
        .prop_map(|(s, mi, h, d, mo, w, y)| {
            format!("{s} {mi} {h} {d} {mo} {w} {y}")
                .trim_end()
                .to_string()
        })
}

fn instant_strategy() -> impl Strategy<Value = DateTime<Utc>> {
    // 2023 … 2031, to the millisecond.
    (1_672_531_200_000i64..1_956_528_000_000i64)
        .prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

/// Whether `fire` is a proper run of `c` in `zone`: its wall-clock reading matches, or it
/// is the resolution of a matching wall-clock time that the zone skipped.
fn is_proper_run(c: &Cron, zone: Zone, fire: DateTime<Utc>) -> bool {
    let wall = zone.to_local(fire);
    if c.matches(wall) && zone.resolve(wall) == Some(fire) {
        return true;
    }
    // A skipped wall-clock time: it lies up to a day before the reading, does not exist,
    // and resolves to `fire`.
    (60..=86_400).step_by(60).chain(1..60).any(|back| {
        let w = wall - Duration::seconds(back);
        c.matches(w) && zone.resolve(w) == Some(fire) && zone.to_local(fire) != w
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn display_round_trips(expr in expr_strategy(), zone in prop::sample::select(ZONES), with_zone: bool) {
        let s = if with_zone { format!("{expr} {zone}") } else { expr };
        let freq = Frequency::parse(&s).unwrap();
        let shown = freq.to_string();
        prop_assert_eq!(Frequency::parse(&shown).unwrap(), freq);
        prop_assert_eq!(Frequency::parse(&shown).unwrap().to_string(), shown);
    }

    #[test]
    fn cron_runs_are_strictly_later_ordered_and_match(
        expr in expr_strategy(),
        zone in prop::sample::select(ZONES),
        after in instant_strategy(),
    ) {
        let c = Cron::parse(&expr).unwrap();
        let zone = z(zone);
        let mut last = after;
        for _ in 0..4 {
            let Some(next) = c.next_after(last, zone) else { break };
            prop_assert!(next > last, "{} not after {}", next, last);
            prop_assert!(is_proper_run(&c, zone, next), "{} is no run of {} in {}", fmt_in(next, zone), expr, zone);
            prop_assert_eq!(next.timestamp_subsec_nanos(), 0);
            // Asking from anywhere between gives the same next run.
            let mid = last + (next - last) / 2;
            prop_assert_eq!(c.next_after(mid, zone), Some(next));
            prop_assert_eq!(c.next_after(next - Duration::milliseconds(1), zone), Some(next));
            last = next;
        }
    }

    #[test]
    fn cron_next_is_monotone(
        expr in expr_strategy(),
        zone in prop::sample::select(ZONES),
        a in instant_strategy(),
        b in instant_strategy(),
    ) {
        let c = Cron::parse(&expr).unwrap();
        let zone = z(zone);
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        match (c.next_after(a, zone), c.next_after(b, zone)) {
            (Some(x), Some(y)) => prop_assert!(x <= y),
            (None, Some(_)) => prop_assert!(false, "a later time has a run, an earlier one none"),
            _ => {}
        }
    }

    #[test]
    fn cron_in_utc_skips_no_second(expr in expr_strategy(), after in instant_strategy()) {
        let c = Cron::parse(&expr).unwrap();
        let after = after.with_nanosecond(0).unwrap();
        if let Some(next) = c.next_after(after, Zone::Utc) {
            let gap = (next - after).num_seconds();
            if gap <= 6 * 3600 {
                for s in 1..gap {
                    let w = (after + Duration::seconds(s)).naive_utc();
                    prop_assert!(!c.matches(w), "{} matches before {}", w, next);
                }
            }
        }
    }

    #[test]
    fn rate_runs_are_anchor_plus_k_intervals(
        value in 1u64..2000,
        unit in prop::sample::select(&[RateUnit::Seconds, RateUnit::Minutes, RateUnit::Hours, RateUnit::Days][..]),
        anchor in instant_strategy(),
        after in instant_strategy(),
    ) {
        let r = Rate::new(value, unit).unwrap();
        let next = r.next_after(after, anchor).unwrap();
        let period = Duration::seconds(r.interval_secs() as i64);
        prop_assert!(next > after);
        prop_assert!(next > anchor);
        let k = (next - anchor).num_milliseconds() / period.num_milliseconds();
        prop_assert!(k >= 1);
        prop_assert_eq!(anchor + period * (k as i32), next);
        // The one before it is not after `after` (or is the anchor itself).
        prop_assert!(next - period <= after || next - period == anchor);
        let parsed = Frequency::parse(&r.to_string()).unwrap();
        prop_assert_eq!(parsed, Frequency::Rate(r));
    }

    #[test]
    fn at_runs_once(after in instant_strategy(), when in instant_strategy(), zone in prop::sample::select(ZONES)) {
        let zone = z(zone);
        let wall = zone.to_local(when).with_nanosecond(0).unwrap();
        let freq = Frequency::parse(&format!("at({} {zone})", wall.format("%Y-%m-%d %H:%M:%S"))).unwrap();
        let Frequency::At(a) = &freq else { unreachable!() };
        let instant = a.instant().unwrap();
        prop_assert_eq!(freq.next_after(after, after, Zone::Utc), (instant > after).then_some(instant));
        prop_assert_eq!(freq.validate(60, after).is_ok(), instant > after);
    }

    #[test]
    fn fixed_zones_round_trip(mins in -(14 * 60)..=(14 * 60)) {
        let zone = Zone::from_offset_secs(mins * 60).unwrap();
        prop_assert_eq!(Zone::parse(&zone.to_string()).unwrap(), zone);
        prop_assert_eq!(Zone::parse_instance(&zone.to_string()).unwrap(), zone);
    }
}

#[test]
fn validation_accepts_what_the_generators_make_or_says_why() {
    // Every generated expression is either accepted, or refused by the API with a reason.
    let now = t("2025-01-01T00:00:00Z");
    for s in SECONDS {
        for d in DOMS {
            let expr = format!("{s} 0 9 {d} * ?");
            match f(&expr).validate(10, now) {
                Ok(()) => {}
                Err(e) => assert_eq!(e.side(), ErrorSide::Api, "{expr}: {e}"),
            }
        }
    }
}

#[test]
fn a_year_is_told_apart_from_a_zone() {
    assert!(cron("0 0 0 * * ? 2030").has_year());
    assert!(cron("0 0 0 * * ? *").has_year());
    assert!(cron("0 0 0 * * ? ?").has_year());
    assert!(cron("0 0 0 * * ? */2").has_year());
    assert!(cron("0 0 0 * * ? 2030-2040").has_year());
    assert_eq!(cron("0 0 0 * * ? UTC").zone(), Some(Zone::Utc));
    assert_eq!(cron("0 0 0 * * ? GMT+8:00").zone(), Some(z("GMT+8:00")));
    assert_eq!(
        cron("0 0 0 * * ? 2030 GMT-7:00").zone(),
        Some(z("GMT-7:00"))
    );
    assert_eq!(
        cron("0 0 0 1 1 ? 2030")
            .next_after(t("2025-01-01T00:00:00Z"), Zone::Utc)
            .map(|x| x.year()),
        Some(2030)
    );
}

// ---------------------------------------------------------------- around DST changes

/// Instants of DST changes (UTC) with their zone: both directions, whole and half hours.
const CHANGES: &[(&str, &str)] = &[
    ("America/New_York", "2025-03-09T07:00:00Z"),
    ("America/New_York", "2025-11-02T06:00:00Z"),
    ("Europe/Berlin", "2025-03-30T01:00:00Z"),
    ("Europe/Berlin", "2025-10-26T01:00:00Z"),
    ("Australia/Lord_Howe", "2025-04-05T15:00:00Z"),
    ("Australia/Lord_Howe", "2025-10-04T15:30:00Z"),
];

const SPARSE_SECONDS: &[&str] = &["0", "30", "15,45"];
const SPARSE_MINUTES: &[&str] = &["0", "*/20", "15,45", "30", "0-5"];
const DENSE_HOURS: &[&str] = &["*", "1,2", "2", "1-3", "0/2", "3"];

fn near_change() -> impl Strategy<Value = (Zone, DateTime<Utc>)> {
    let offset = prop_oneof![-36 * 3600i64..36 * 3600, -2 * 3600i64..2 * 3600];
    (prop::sample::select(CHANGES), offset, 0i64..1000).prop_map(|((zone, at), secs, ms)| {
        (
            z(zone),
            t(at) + Duration::seconds(secs) + Duration::milliseconds(ms),
        )
    })
}

fn sparse_expr() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SPARSE_SECONDS),
        prop::sample::select(SPARSE_MINUTES),
        prop::sample::select(DENSE_HOURS),
        prop::sample::select(&["*", "?", "L", "1-15"][..]),
        prop::sample::select(&["?", "*", "SUN", "1-5"][..]),
    )
        .prop_map(|(s, m, h, d, w)| format!("{s} {m} {h} {d} * {w}"))
}

/// The first run after `after` by brute force: every matching wall-clock time within two
/// days either side, resolved, the smallest later one. `None` if none in that window.
fn reference_next(c: &Cron, zone: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let wall = zone.to_local(after);
    let (start, end) = (wall - Duration::days(2), wall + Duration::days(2));
    let mut cursor = start.with_nanosecond(0).unwrap();
    let mut best: Option<DateTime<Utc>> = None;
    while let Some(l) = c.next_match(cursor) {
        if l > end {
            break;
        }
        if let Some(i) = zone.resolve(l) {
            if i > after && best.is_none_or(|b| i < b) {
                best = Some(i);
            }
        }
        cursor = l + Duration::seconds(1);
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn near_dst_changes_next_after_is_the_smallest_later_run(expr in sparse_expr(), (zone, after) in near_change()) {
        let c = Cron::parse(&expr).unwrap();
        if let Some(expected) = reference_next(&c, zone, after) {
            prop_assert_eq!(c.next_after(after, zone), Some(expected), "{} in {} after {}", expr, zone, fmt_in(after, zone));
        }
    }

    #[test]
    fn near_dst_changes_runs_are_proper_ordered_and_monotone(
        expr in expr_strategy(),
        (zone, a) in near_change(),
        shift in 0i64..7200,
    ) {
        let c = Cron::parse(&expr).unwrap();
        let b = a + Duration::seconds(shift);
        let (x, y) = (c.next_after(a, zone), c.next_after(b, zone));
        if let (Some(x), Some(y)) = (x, y) {
            prop_assert!(x > a && y > b && x <= y);
            prop_assert!(is_proper_run(&c, zone, x), "{} is no run of {}", fmt_in(x, zone), expr);
            // No wall-clock time runs twice: the next run reads differently.
            if let Some(n) = c.next_after(x, zone) {
                prop_assert!(zone.to_local(n) != zone.to_local(x));
            }
        }
        prop_assert!(!(x.is_none() && y.is_some()));
    }
}

#[test]
fn the_edges_of_time_do_not_panic() {
    let (min, max) = (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
    for s in [
        "rate(5m)",
        "rate(7d)",
        "at(2022-06-06 13:15:30 Asia/Shanghai)",
        "0 0 0 1 1 ?",
        "* * * * * ? America/New_York",
        "0 0 0 1 1 ? 2099 GMT-14:00",
    ] {
        let freq = f(s);
        for zone in [Zone::Utc, z("GMT+14:00"), z("GMT-14:00"), z("Pacific/Apia")] {
            for (after, anchor) in [(min, min), (max, max), (min, max), (max, min)] {
                let _ = freq.next_after(after, anchor, zone);
                let _ = freq.check_on_instance(after, zone);
                let _ = zone.to_local(after);
            }
            let _ = freq.validate(60, min);
            let _ = freq.validate(60, max);
        }
    }
    assert_eq!(
        fmt_utc(cron("0 0 0 1 1 ?").next_after(min, Zone::Utc).unwrap()),
        "1970-01-01T00:00:00Z"
    );
    assert_eq!(
        fmt_utc(cron("0 0 0 1 1 ?").next_after(min, z("GMT+14:00")).unwrap()),
        "1969-12-31T10:00:00Z"
    );
    assert_eq!(cron("0 0 0 1 1 ?").next_after(max, Zone::Utc), None);
    assert_eq!(
        fmt_in(
            cron("59 59 23 31 12 ? 2099")
                .next_after(t("2099-12-31T00:00:00Z"), z("GMT-14:00"))
                .unwrap(),
            z("GMT-14:00")
        ),
        "2099-12-31T23:59:59-14:00"
    );
}
