//! The status rules of seeds 000 and 001, in one place.
//!
//! Three layers:
//! - [`InvocationStatus`]: the fine-grained status of one instance's run.
//! - [`InstanceInvokeStatus`]: the coarse per-instance status the API also calls
//!   `InvokeRecordStatus` (Running, Finished, Failed, Stopped), derived from the fine one.
//! - the whole invocation: the legacy [`InvokeStatus`] and the newer overall
//!   [`OverallStatus`] (returned as the invocation's `InvocationStatus`), both derived
//!   from the instances' fine statuses.
//!
//! Nothing here is stored: the store keeps the fine status per instance and these
//! functions derive the rest, so the layers can never disagree.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as it is written on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Parses the wire value, ignoring ASCII case (the cloud's own examples mix
        /// `running` and `Running`).
        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or(())
            }
        }
    };
}

wire_enum!(
    /// The fine-grained status of one instance's run (seed 001, `InvocationStatus`).
    InvocationStatus {
        Pending,
        Invalid,
        Aborted,
        Running,
        Success,
        Failed,
        Error,
        Timeout,
        Cancelled,
        Stopping,
        Terminated,
        Scheduled,
    }
);

wire_enum!(
    /// The coarse per-instance status: `InstanceInvokeStatus` in DescribeInvocations,
    /// `InvokeRecordStatus` in DescribeInvocationResults.
    InstanceInvokeStatus { Running, Finished, Failed, Stopped }
);

wire_enum!(
    /// The legacy status of a whole invocation (seed 000, `InvokeStatus`).
    InvokeStatus { Running, Finished, Failed, PartialFailed, Stopped }
);

wire_enum!(
    /// The newer overall status of a whole invocation, returned as the invocation's
    /// `InvocationStatus`.
    OverallStatus {
        Pending,
        Scheduled,
        Running,
        Success,
        Failed,
        PartialFailed,
        Stopping,
        Stopped,
    }
);

impl InvocationStatus {
    /// The statuses of a run that is not over: every other one is terminal.
    pub const LIVE: [InvocationStatus; 4] = [
        Self::Pending,
        Self::Running,
        Self::Stopping,
        Self::Scheduled,
    ];

    /// A run in this status will not change any more (for a one-time task).
    pub fn is_terminal(self) -> bool {
        !Self::LIVE.contains(&self)
    }

    /// Ended by a person's StopInvocation.
    pub fn is_stopped(self) -> bool {
        matches!(self, Self::Cancelled | Self::Terminated)
    }

    /// Ended and counted as a failure of the run.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Self::Invalid | Self::Aborted | Self::Failed | Self::Error | Self::Timeout
        )
    }

    /// The coarse status (`InstanceInvokeStatus` / `InvokeRecordStatus`).
    ///
    /// `Finished` only says the process finished: a non-zero exit is `Failed` here
    /// in the fine status but `Finished` in the coarse one (seed 000). A timeout, an
    /// error or a failed delivery is coarse `Failed`; a stop is `Stopped`.
    pub fn coarse(self) -> InstanceInvokeStatus {
        use InvocationStatus::*;
        match self {
            Pending | Running | Stopping | Scheduled => InstanceInvokeStatus::Running,
            Success | Failed => InstanceInvokeStatus::Finished,
            Invalid | Aborted | Error | Timeout => InstanceInvokeStatus::Failed,
            Cancelled | Terminated => InstanceInvokeStatus::Stopped,
        }
    }

    /// What a StopInvocation turns this status into, or `None` if it no longer stops.
    /// A run not yet started is cancelled; a started one is terminated once the agent
    /// confirms, and is `Stopping` until then.
    pub fn on_stop_requested(self) -> Option<InvocationStatus> {
        use InvocationStatus::*;
        match self {
            Pending | Scheduled => Some(Cancelled),
            Running => Some(Stopping),
            _ => None,
        }
    }
}

/// How many instances of an invocation are in each fine status. The store keeps this
/// per invocation and updates it as runs change, so the whole-invocation status is
/// derived in constant time however many instances there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusCounts(pub [u64; 12]);

impl StatusCounts {
    fn index(s: InvocationStatus) -> usize {
        InvocationStatus::ALL
            .iter()
            .position(|x| *x == s)
            .expect("every status is in ALL")
    }

    pub fn add(&mut self, s: InvocationStatus) {
        self.0[Self::index(s)] += 1;
    }

    /// Counts one instance moving from `from` to `to`.
    pub fn moved(&mut self, from: InvocationStatus, to: InvocationStatus) {
        let i = Self::index(from);
        self.0[i] = self.0[i].saturating_sub(1);
        self.add(to);
    }

    pub fn get(&self, s: InvocationStatus) -> u64 {
        self.0[Self::index(s)]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn count(&self, f: impl Fn(InvocationStatus) -> bool) -> u64 {
        InvocationStatus::ALL
            .iter()
            .filter(|s| f(**s))
            .map(|s| self.get(*s))
            .sum()
    }
}

impl FromIterator<InvocationStatus> for StatusCounts {
    fn from_iter<I: IntoIterator<Item = InvocationStatus>>(iter: I) -> Self {
        let mut c = StatusCounts::default();
        for s in iter {
            c.add(s);
        }
        c
    }
}

/// The legacy `InvokeStatus` of a whole invocation (seed 000):
/// - periodic: `Running` until stopped by hand and every run has ended, then `Stopped`;
/// - once: `Running` while any instance runs; otherwise, setting stopped instances
///   aside, `Finished` if all finished, `Failed` if all failed, `PartialFailed` if
///   some failed; `Stopped` if every instance was stopped.
pub fn invoke_status(counts: &StatusCounts, periodic: bool, stopped_by_hand: bool) -> InvokeStatus {
    let by = |c: InstanceInvokeStatus| counts.count(|s| s.coarse() == c);
    let running = by(InstanceInvokeStatus::Running);
    if periodic {
        return if stopped_by_hand && running == 0 {
            InvokeStatus::Stopped
        } else {
            InvokeStatus::Running
        };
    }
    let finished = by(InstanceInvokeStatus::Finished);
    let failed = by(InstanceInvokeStatus::Failed);
    let stopped = by(InstanceInvokeStatus::Stopped);
    if running > 0 {
        InvokeStatus::Running
    } else if finished == 0 && failed == 0 {
        if stopped > 0 {
            InvokeStatus::Stopped
        } else {
            InvokeStatus::Finished
        }
    } else if failed == 0 {
        InvokeStatus::Finished
    } else if finished == 0 {
        InvokeStatus::Failed
    } else {
        InvokeStatus::PartialFailed
    }
}

/// The newer overall `InvocationStatus` of a whole invocation:
/// `Stopping` while a stop is in progress, `Running` while any instance runs (or some
/// have ended and others not yet started), `Pending` while none has started,
/// `Scheduled` while a periodic task waits for its next run; once all have ended,
/// setting stopped ones aside, `Success`, `Failed` or `PartialFailed` by the runs'
/// outcome, and `Stopped` if every instance was stopped.
pub fn overall_status(counts: &StatusCounts) -> OverallStatus {
    use InvocationStatus as S;
    if counts.get(S::Stopping) > 0 {
        return OverallStatus::Stopping;
    }
    if counts.get(S::Running) > 0 {
        return OverallStatus::Running;
    }
    let pending = counts.get(S::Pending);
    let scheduled = counts.get(S::Scheduled);
    let ended_not_stopped = counts.count(|s| s.is_terminal() && !s.is_stopped());
    if pending > 0 {
        return if ended_not_stopped > 0 || scheduled > 0 {
            OverallStatus::Running
        } else {
            OverallStatus::Pending
        };
    }
    if scheduled > 0 {
        return OverallStatus::Scheduled;
    }
    if ended_not_stopped == 0 {
        return if counts.total() == 0 {
            OverallStatus::Success
        } else {
            OverallStatus::Stopped
        };
    }
    let failures = counts.count(|s| s.is_failure());
    if failures == 0 {
        OverallStatus::Success
    } else if failures == ended_not_stopped {
        OverallStatus::Failed
    } else {
        OverallStatus::PartialFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use InvocationStatus as S;

    fn c(v: &[S]) -> StatusCounts {
        v.iter().copied().collect()
    }

    #[test]
    fn wire_names_round_trip_ignoring_case() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>(), Ok(*s));
            assert_eq!(s.as_str().to_lowercase().parse::<S>(), Ok(*s));
        }
        assert!("Done".parse::<S>().is_err());
        assert_eq!("partialfailed".parse(), Ok(InvokeStatus::PartialFailed));
    }

    #[test]
    fn coarse_status_of_every_fine_status() {
        use InstanceInvokeStatus as C;
        let expected = [
            (S::Pending, C::Running),
            (S::Invalid, C::Failed),
            (S::Aborted, C::Failed),
            (S::Running, C::Running),
            (S::Success, C::Finished),
            (S::Failed, C::Finished),
            (S::Error, C::Failed),
            (S::Timeout, C::Failed),
            (S::Cancelled, C::Stopped),
            (S::Stopping, C::Running),
            (S::Terminated, C::Stopped),
            (S::Scheduled, C::Running),
        ];
        assert_eq!(expected.len(), S::ALL.len());
        for (fine, coarse) in expected {
            assert_eq!(fine.coarse(), coarse, "{fine}");
        }
    }

    #[test]
    fn nonzero_exit_is_finished_not_failed_in_the_legacy_status() {
        assert_eq!(
            invoke_status(&c(&[S::Failed]), false, false),
            InvokeStatus::Finished
        );
        assert_eq!(overall_status(&c(&[S::Failed])), OverallStatus::Failed);
    }

    #[test]
    fn legacy_status_examples_from_seed_000() {
        use InvokeStatus as I;
        assert_eq!(
            invoke_status(&c(&[S::Success, S::Running]), false, false),
            I::Running
        );
        assert_eq!(
            invoke_status(&c(&[S::Success, S::Success]), false, false),
            I::Finished
        );
        assert_eq!(
            invoke_status(&c(&[S::Timeout, S::Error]), false, false),
            I::Failed
        );
        assert_eq!(
            invoke_status(&c(&[S::Success, S::Timeout]), false, false),
            I::PartialFailed
        );
        // Some stopped by hand, the rest finished: Finished.
        assert_eq!(
            invoke_status(&c(&[S::Terminated, S::Success]), true, false),
            I::Running
        );
        assert_eq!(
            invoke_status(&c(&[S::Terminated, S::Success]), false, true),
            I::Finished
        );
        assert_eq!(
            invoke_status(&c(&[S::Terminated, S::Cancelled]), false, true),
            I::Stopped
        );
        // Periodic: Running until stopped.
        assert_eq!(
            invoke_status(&c(&[S::Failed, S::Scheduled]), true, false),
            I::Running
        );
        assert_eq!(invoke_status(&c(&[S::Timeout]), true, false), I::Running);
        assert_eq!(
            invoke_status(&c(&[S::Cancelled, S::Terminated]), true, true),
            I::Stopped
        );
        assert_eq!(invoke_status(&c(&[S::Stopping]), true, true), I::Running);
    }

    #[test]
    fn overall_status_examples() {
        use OverallStatus as O;
        assert_eq!(overall_status(&c(&[S::Pending, S::Pending])), O::Pending);
        assert_eq!(overall_status(&c(&[S::Pending, S::Success])), O::Running);
        assert_eq!(
            overall_status(&c(&[S::Scheduled, S::Scheduled])),
            O::Scheduled
        );
        assert_eq!(overall_status(&c(&[S::Scheduled, S::Running])), O::Running);
        assert_eq!(overall_status(&c(&[S::Stopping, S::Running])), O::Stopping);
        assert_eq!(overall_status(&c(&[S::Success, S::Success])), O::Success);
        assert_eq!(
            overall_status(&c(&[S::Success, S::Failed])),
            O::PartialFailed
        );
        assert_eq!(overall_status(&c(&[S::Aborted, S::Invalid])), O::Failed);
        assert_eq!(overall_status(&c(&[S::Terminated, S::Success])), O::Success);
        assert_eq!(
            overall_status(&c(&[S::Terminated, S::Cancelled])),
            O::Stopped
        );
    }

    fn any_status() -> impl Strategy<Value = S> {
        prop::sample::select(S::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn legacy_running_iff_any_instance_running(
            v in prop::collection::vec(any_status(), 1..40)
        ) {
            let running = v.iter().any(|s| s.coarse() == InstanceInvokeStatus::Running);
            prop_assert_eq!(
                invoke_status(&c(&v), false, false) == InvokeStatus::Running,
                running
            );
        }

        #[test]
        fn order_of_instances_never_matters(
            mut v in prop::collection::vec(any_status(), 1..40),
            periodic: bool,
            stopped: bool,
        ) {
            let a = (invoke_status(&c(&v), periodic, stopped), overall_status(&c(&v)));
            v.reverse();
            prop_assert_eq!(a, (invoke_status(&c(&v), periodic, stopped), overall_status(&c(&v))));
        }

        #[test]
        fn stopped_instances_never_change_a_finished_outcome(
            v in prop::collection::vec(any_status(), 1..40),
            extra in prop::collection::vec(prop::sample::select(vec![S::Cancelled, S::Terminated]), 1..5),
        ) {
            let before = invoke_status(&c(&v), false, false);
            let mut w = v.clone();
            w.extend(extra);
            let after = invoke_status(&c(&w), false, true);
            prop_assert_eq!(before, after);
            let (ob, oa) = (overall_status(&c(&v)), overall_status(&c(&w)));
            if ob != OverallStatus::Pending {
                prop_assert_eq!(ob, oa);
            }
        }

        #[test]
        fn failed_partial_and_success_agree_with_counts(
            v in prop::collection::vec(any_status(), 1..40)
        ) {
            let all_ended = v.iter().all(|s| s.is_terminal());
            let counted: Vec<_> = v.iter().filter(|s| !s.is_stopped()).collect();
            let failures = counted.iter().filter(|s| s.is_failure()).count();
            let overall = overall_status(&c(&v));
            if all_ended && !counted.is_empty() {
                let expected = if failures == 0 {
                    OverallStatus::Success
                } else if failures == counted.len() {
                    OverallStatus::Failed
                } else {
                    OverallStatus::PartialFailed
                };
                prop_assert_eq!(overall, expected);
            } else if all_ended {
                prop_assert_eq!(overall, OverallStatus::Stopped);
            } else {
                prop_assert!(matches!(
                    overall,
                    OverallStatus::Pending
                        | OverallStatus::Running
                        | OverallStatus::Scheduled
                        | OverallStatus::Stopping
                ));
            }
        }

        #[test]
        fn periodic_tasks_are_running_or_stopped(
            v in prop::collection::vec(any_status(), 1..40),
            stopped: bool,
        ) {
            let s = invoke_status(&c(&v), true, stopped);
            prop_assert!(matches!(s, InvokeStatus::Running | InvokeStatus::Stopped));
            if !stopped {
                prop_assert_eq!(s, InvokeStatus::Running);
            }
        }

        #[test]
        fn counts_follow_moves(v in prop::collection::vec((any_status(), any_status()), 0..40)) {
            let mut counts: StatusCounts = v.iter().map(|(a, _)| *a).collect();
            for (a, b) in &v {
                counts.moved(*a, *b);
            }
            let expected: StatusCounts = v.iter().map(|(_, b)| *b).collect();
            prop_assert_eq!(counts, expected);
            prop_assert_eq!(counts.total(), v.len() as u64);
        }

        #[test]
        fn stop_requests_only_touch_live_runs(s in any_status()) {
            match s.on_stop_requested() {
                Some(next) => {
                    prop_assert!(!s.is_terminal());
                    prop_assert!(next.is_stopped() || next == S::Stopping);
                }
                None => prop_assert!(s.is_terminal() || s == S::Stopping),
            }
        }
    }
}
