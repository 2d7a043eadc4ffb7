//! The table of figures and the statistics behind it.

use crate::sys::Machine;
use crate::Section;
use std::fmt::Write as _;
use std::time::Duration;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: Section,
    pub measure: String,
    pub value: String,
    /// Empty when the figure has no target.
    pub target: String,
    /// PASS (true) / MISS (false) against the target; `None` without one.
    pub pass: Option<bool>,
}

impl Row {
    pub fn info(section: Section, measure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            section,
            measure: measure.into(),
            value: value.into(),
            target: String::new(),
            pass: None,
        }
    }

    pub fn target(
        section: Section,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        pass: bool,
    ) -> Row {
        Row {
            section,
            measure: measure.into(),
            value: value.into(),
            target: target.into(),
            pass: Some(pass),
        }
    }
}

/// What one fan-out saw (the smoke test checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutOutcome {
    pub agents: usize,
    /// Agents that received the `Run`.
    pub runs: usize,
    /// Agents that received the `Ack` (their result stored).
    pub acks: usize,
    /// DescribeInvocations showed Finished / Success with every instance.
    pub verified: bool,
}

/// Everything a bench run produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub machine: Machine,
    pub sections: Vec<Section>,
    pub rows: Vec<Row>,
    pub fanouts: Vec<FanoutOutcome>,
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn has_section_rows(&self, section: Section) -> bool {
        self.rows.iter().any(|r| r.section == section)
    }

    /// The table, as Markdown.
    pub fn table(&self) -> String {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| r.section as u8);
        let mut out = String::new();
        out.push_str("| Section | Measure | Value | Target | |\n");
        out.push_str("|---|---|---|---|---|\n");
        let mut last = None;
        for r in rows {
            let section = if last == Some(r.section) {
                String::new()
            } else {
                format!("{}. {}", r.section as u8, r.section.title())
            };
            last = Some(r.section);
            let verdict = match r.pass {
                Some(true) => "PASS",
                Some(false) => "**MISS**",
                None => "",
            };
            let _ = writeln!(
                out,
                "| {section} | {} | {} | {} | {verdict} |",
                r.measure, r.value, r.target
            );
        }
        out
    }
}

/// The nearest-rank percentile `p` (0–100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Seconds with two decimals.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// KiB as MiB with one decimal when large.
pub fn kib(kb: u64) -> String {
    if kb >= 10 * 1024 {
        format!("{:.1} MiB", kb as f64 / 1024.0)
    } else {
        format!("{kb} KiB")
    }
}

/// A whole number with thousands separators.
pub fn count(n: usize) -> String {
    let s = n.to_string();
    let head = s.len() % 3;
    let mut groups: Vec<&str> = Vec::new();
    if head > 0 {
        groups.push(&s[..head]);
    }
    let mut rest = &s[head..];
    while !rest.is_empty() {
        groups.push(&rest[..3]);
        rest = &rest[3..];
    }
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(100000), "100,000");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
    }
}
