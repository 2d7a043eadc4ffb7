//! Throttling the agent endpoints: a source address that keeps failing to
//! authenticate (wrong activation codes, wrong tokens) is refused for a while, a right
//! secret included, with the vendor's throttling error. The counting is
//! `oca_domain::throttle`'s; this holds it and answers.
//!
//! What counts as a failure is a secret that does not match: an unknown activation or
//! instance, a wrong code or token, a malformed `Authorization`. A right secret that is
//! refused for another reason (the activation is used up or disabled, the host is
//! outside its `IpAddressRange`, the account is deleted) does not count: its sender is
//! not guessing, and many such hosts behind one NAT must not throttle the others.
//!
//! Requests without a peer address (in-process tests) are never throttled.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oca_domain::throttle::{
    FailureLimiter, FailureLimits, Source, THROTTLING_CODE, THROTTLING_HTTP_STATUS,
    THROTTLING_MESSAGE,
};
use oca_proto::RegisterError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// At most one log line about throttled requests per this many milliseconds.
const REPORT_EVERY_MS: i64 = 10_000;

pub struct Guard {
    limiter: Mutex<FailureLimiter>,
    /// The limiter's clock: monotonic, so a wall clock set back does not lengthen a
    /// throttle.
    epoch: Instant,
    /// Requests refused as throttled since the last report, and when it was.
    refused: AtomicU64,
    reported: AtomicI64,
}

impl Guard {
    pub fn new(limits: FailureLimits) -> Guard {
        Guard {
            limiter: Mutex::new(FailureLimiter::new(limits)),
            epoch: Instant::now(),
            refused: AtomicU64::new(0),
            reported: AtomicI64::new(-REPORT_EVERY_MS),
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        // The limiter is left consistent by every call: a panic elsewhere while the
        // lock was held changes nothing.
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to send when `peer` is throttled; `None` when it may go on.
    pub fn refusal(&self, peer: Option<SocketAddr>) -> Option<Response> {
        self.throttled(peer).then(throttled)
    }

    /// Whether `peer` is throttled now (then it is counted for the report).
    pub fn throttled(&self, peer: Option<SocketAddr>) -> bool {
        let Some(peer) = peer else { return false };
        let now = self.now();
        let verdict = self.lock().check(Source::of(peer.ip()), now);
        let Err(throttled_for) = verdict else {
            return false;
        };
        tracing::debug!(%peer, retry_after_ms = throttled_for.retry_after_ms, "agent endpoint throttled");
        self.report(peer, now);
        true
    }

    /// Counts a failed authentication of `peer`.
    pub fn failed(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        let now = self.now();
        self.lock().failed(Source::of(peer.ip()), now);
    }

    /// Logs the throttled requests, at most once per [`REPORT_EVERY_MS`] however many
    /// a flood brings.
    fn report(&self, peer: SocketAddr, now: i64) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.reported.load(Ordering::Relaxed);
        if now - last >= REPORT_EVERY_MS
            && self
                .reported
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused.fetch_sub(refused, Ordering::Relaxed);
            tracing::warn!(
                refused,
                last_from = %peer,
                "agent registrations or connections throttled since the last report: too many failed authentications from their address"
            );
        }
    }
}

/// The vendor's throttling error (`oca_domain::throttle::THROTTLING_CODE`), in the
/// shape the register endpoint answers every error with.
pub fn throttled() -> Response {
    let status =
        StatusCode::from_u16(THROTTLING_HTTP_STATUS).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    (
        status,
        Json(RegisterError {
            code: THROTTLING_CODE.to_string(),
            message: THROTTLING_MESSAGE.to_string(),
        }),
    )
        .into_response()
}
