//! Throttling failed authentications per source address.
//!
//! Whoever guesses secrets (activation codes, agent tokens, and later API signatures)
//! fails, over and over, from a few addresses. [`FailureLimiter`] lets each source
//! fail a burst of times, then refuses it (whatever it sends, a right secret
//! included, or guessing would simply go on) until its failures have drained: one is
//! forgiven every `forgive_ms`. After the burst an address therefore gets one more
//! try per interval at most, so a steady guesser makes `1 / forgive_ms` guesses a
//! second however fast it sends, and each refusal costs a map lookup, no store read.
//!
//! - Successes change nothing: they neither count nor wipe the history. A host that
//!   holds one valid secret (its own agent's token) could otherwise interleave it with
//!   guesses to start every burst afresh.
//! - Only failures count, so many hosts behind one NAT that all hold their secrets are
//!   never throttled, however many connect at once (a fleet reconnecting after a
//!   server restart); a misbehaving neighbour behind the same NAT throttles them
//!   only while it keeps failing, and they get in once its failures have drained.
//! - A source is an IPv4 address or an IPv6 /64: a single IPv6 host commonly holds a
//!   whole /64 and could otherwise start afresh from each of its 2^64 addresses.
//! - Memory is bounded: at most `max_sources` sources are tracked. Sources whose
//!   failures have drained are forgotten (they behave exactly like unknown ones); when
//!   the table is full of live ones, the one closest to drained goes first, so an
//!   attacker spraying fresh addresses evicts the least suspicious history, never the
//!   sources it is itself throttled on.
//!
//! The limiter is pure: every call takes the time (`now`), so it is tested without a
//! clock, and callers share one behind a lock.
//!
//! How it counts (the "generic cell rate algorithm"): each source keeps one number,
//! the time at which its failures will have drained to none (`clear_at`). A failure
//! moves it `forgive_ms` later (from now, if it had passed); the source is throttled
//! while more than `burst - 1` failures are still counted, i.e. while
//! `clear_at - now > (burst - 1) * forgive_ms`.

use crate::time::Millis;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// The vendor's error for a throttled request: `Throttling.User`, "Request was denied
/// due to user flow control.", HTTP 400. Alibaba Cloud's documentation lists this
/// code with this message (e.g. the RAM FAQ "Are there API request limits for STS?",
/// and the DTS API error codes, which give it HTTP status 400), and its client error
/// table gives the throttling family HTTP 400 ("Throttling | Request was denied due
/// to request throttling. | 400", help.aliyun.com/document_detail/51132.html).
pub const THROTTLING_CODE: &str = "Throttling.User";
/// See [`THROTTLING_CODE`].
pub const THROTTLING_MESSAGE: &str = "Request was denied due to user flow control.";
/// See [`THROTTLING_CODE`].
pub const THROTTLING_HTTP_STATUS: u16 = 400;

/// Where failures are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 address (an IPv4-mapped IPv6 address counts as its IPv4 address).
    V4(u32),
    /// The /64 network an IPv6 address is in (its first 64 bits).
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// How many failures a source may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Failures a source may make at once before it is throttled (at least 1).
    pub burst: u32,
    /// One counted failure is forgiven every this many milliseconds (at least 1).
    pub forgive_ms: i64,
    /// The most sources tracked at once (at least 1).
    pub max_sources: usize,
}

/// A source is throttled: it may try again in `retry_after_ms` (at most `forgive_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_ms: i64,
}

/// Counts failures per source; see the module documentation.
#[derive(Debug, Clone)]
pub struct FailureLimiter {
    limits: FailureLimits,
    /// Per source, when its counted failures will have drained to none.
    clear_at: HashMap<Source, Millis>,
    /// The same entries ordered by `clear_at`: the stalest first.
    by_clear: BTreeSet<(Millis, Source)>,
}

impl FailureLimiter {
    pub fn new(limits: FailureLimits) -> Self {
        let limits = FailureLimits {
            burst: limits.burst.max(1),
            forgive_ms: limits.forgive_ms.max(1),
            max_sources: limits.max_sources.max(1),
        };
        FailureLimiter {
            limits,
            clear_at: HashMap::new(),
            by_clear: BTreeSet::new(),
        }
    }

    pub fn limits(&self) -> FailureLimits {
        self.limits
    }

    /// The most time a source's counted failures may reach: `burst` of them.
    fn window(&self) -> i64 {
        i64::from(self.limits.burst).saturating_mul(self.limits.forgive_ms)
    }

    /// Whether `source` may try now. Call before looking at what it sent; when it
    /// fails, call [`Self::failed`].
    pub fn check(&self, source: Source, now: Millis) -> Result<(), Throttled> {
        let Some(&clear_at) = self.clear_at.get(&source) else {
            return Ok(());
        };
        // Time still counted beyond what `burst - 1` failures take.
        let over = clear_at
            .saturating_sub(now)
            .saturating_sub(self.window() - self.limits.forgive_ms);
        if over > 0 {
            Err(Throttled {
                retry_after_ms: over,
            })
        } else {
            Ok(())
        }
    }

    /// Counts one failure of `source`. The count never exceeds `burst` failures (so a
    /// source throttled by failures that raced past [`Self::check`] waits no longer
    /// than one that was refused in turn).
    pub fn failed(&mut self, source: Source, now: Millis) {
        self.forget_drained(now);
        let old = self.clear_at.get(&source).copied();
        let from = old.map_or(now, |t| t.max(now));
        let clear_at = from
            .saturating_add(self.limits.forgive_ms)
            .min(now.saturating_add(self.window()));
        match old {
            Some(t) => {
                self.by_clear.remove(&(t, source));
            }
            None => {
                if self.clear_at.len() >= self.limits.max_sources {
                    self.evict_stalest();
                }
            }
        }
        self.clear_at.insert(source, clear_at);
        self.by_clear.insert((clear_at, source));
    }

    /// Sources tracked now (drained ones may linger until the next failure).
    pub fn tracked(&self) -> usize {
        self.clear_at.len()
    }

    /// Forgets the sources whose failures have all drained: they are as if unknown.
    fn forget_drained(&mut self, now: Millis) {
        while let Some(&(t, source)) = self.by_clear.first() {
            if t > now {
                break;
            }
            self.by_clear.pop_first();
            self.clear_at.remove(&source);
        }
    }

    fn evict_stalest(&mut self) {
        if let Some((_, source)) = self.by_clear.pop_first() {
            self.clear_at.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limiter(burst: u32, forgive_ms: i64, max_sources: usize) -> FailureLimiter {
        FailureLimiter::new(FailureLimits {
            burst,
            forgive_ms,
            max_sources,
        })
    }

    const A: Source = Source::V4(1);
    const B: Source = Source::V4(2);

    #[test]
    fn a_burst_then_one_try_per_interval() {
        let mut l = limiter(5, 1000, 100);
        for _ in 0..5 {
            assert_eq!(l.check(A, 0), Ok(()));
            l.failed(A, 0);
        }
        assert_eq!(
            l.check(A, 0),
            Err(Throttled {
                retry_after_ms: 1000
            })
        );
        assert_eq!(l.check(A, 999), Err(Throttled { retry_after_ms: 1 }));
        // Another source is not concerned.
        assert_eq!(l.check(B, 0), Ok(()));
        // One failure forgiven: one more try, then throttled again.
        assert_eq!(l.check(A, 1000), Ok(()));
        l.failed(A, 1000);
        assert!(l.check(A, 1000).is_err());
        // Fully drained after burst × interval: forgotten, a whole burst again.
        assert_eq!(l.check(A, 6000), Ok(()));
        l.failed(B, 6000);
        assert_eq!(l.tracked(), 1, "A was forgotten once drained");
    }

    #[test]
    fn successes_neither_count_nor_reset() {
        let mut l = limiter(3, 1000, 100);
        for _ in 0..3 {
            l.failed(A, 0);
        }
        // A success is merely not a failure: nothing to record, the throttle holds
        // (and a right secret sent now is refused like any other).
        assert!(l.check(A, 10).is_err());
    }

    #[test]
    fn failures_racing_past_the_check_wait_no_longer() {
        let mut l = limiter(3, 1000, 100);
        for _ in 0..50 {
            l.failed(A, 0);
        }
        assert_eq!(
            l.check(A, 0),
            Err(Throttled {
                retry_after_ms: 1000
            })
        );
        assert_eq!(l.check(A, 1000), Ok(()));
    }

    #[test]
    fn sources_are_addresses_and_ipv6_64s() {
        let v4 = |s: &str| Source::of(IpAddr::V4(s.parse::<Ipv4Addr>().unwrap()));
        let v6 = |s: &str| Source::of(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()));
        assert_eq!(v4("10.0.0.1"), v6("::ffff:10.0.0.1"));
        assert_ne!(v4("10.0.0.1"), v4("10.0.0.2"));
        assert_eq!(
            v6("2001:db8:1:2::1"),
            v6("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
    }

    #[test]
    fn a_full_table_evicts_the_stalest_and_keeps_the_worst() {
        let mut l = limiter(3, 1000, 2);
        for _ in 0..3 {
            l.failed(A, 0);
        }
        l.failed(B, 0);
        // A third source: B (one failure, the closest to drained) goes, A stays.
        l.failed(Source::V4(3), 0);
        assert_eq!(l.tracked(), 2);
        assert!(l.check(A, 0).is_err());
        // A spray of fresh sources never evicts A ahead of them.
        for i in 10..1000 {
            l.failed(Source::V4(i), 1);
            assert!(l.check(A, 1).is_err());
        }
        assert_eq!(l.tracked(), 2);
    }

    #[derive(Debug, Clone)]
    struct Step {
        source: u8,
        dt: i64,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (0u8..6, 0i64..400).prop_map(|(source, dt)| Step { source, dt }),
            1..400,
        )
    }

    proptest! {
        /// Whatever the timing, a source that fails every time it is let in makes at
        /// most `burst + span / forgive_ms` failures over any span; the table stays
        /// within its bound; a throttled source may try again once its wait is over.
        #[test]
        fn failures_are_bounded_and_throttles_end(
            burst in 1u32..8,
            forgive_ms in 1i64..500,
            max_sources in 1usize..8,
            steps in steps(),
        ) {
            let mut l = limiter(burst, forgive_ms, max_sources);
            let mut now = 0;
            let mut let_in: HashMap<u8, Vec<Millis>> = HashMap::new();
            for step in &steps {
                now += step.dt;
                let source = Source::V4(u32::from(step.source));
                match l.check(source, now) {
                    Ok(()) => {
                        l.failed(source, now);
                        let_in.entry(step.source).or_default().push(now);
                    }
                    Err(t) => {
                        prop_assert!(t.retry_after_ms >= 1 && t.retry_after_ms <= forgive_ms);
                        // Nothing else happens to this source meanwhile: it is let in
                        // once the wait is over.
                        let mut alone = l.clone();
                        prop_assert_eq!(alone.check(source, now + t.retry_after_ms), Ok(()));
                        alone.failed(Source::V6Net(7), now + t.retry_after_ms);
                        prop_assert_eq!(alone.check(source, now + t.retry_after_ms), Ok(()));
                    }
                }
                prop_assert!(l.tracked() <= max_sources);
            }
            // Eviction only ever forgets history, so the bound holds for the sources
            // that were never evicted; with room for every source it holds for all.
            if max_sources >= 6 {
                for times in let_in.values() {
                    for (i, first) in times.iter().enumerate() {
                        for (j, last) in times.iter().enumerate().skip(i) {
                            let n = (j - i + 1) as i64;
                            prop_assert!(
                                n <= i64::from(burst) + (last - first) / forgive_ms,
                                "{} failures in {} ms", n, last - first
                            );
                        }
                    }
                }
            }
        }

        /// A source that never failed is never throttled while there is room for it.
        #[test]
        fn the_innocent_are_let_in(steps in steps(), burst in 1u32..5) {
            let mut l = limiter(burst, 100, 8);
            let mut now = 0;
            for step in &steps {
                now += step.dt;
                l.failed(Source::V4(u32::from(step.source)), now);
                prop_assert_eq!(l.check(Source::V4(99), now), Ok(()));
                prop_assert_eq!(l.check(Source::V6Net(99), now), Ok(()));
            }
        }
    }
}
