//! The server's metrics, in one place.
//!
//! [`Metrics`] holds one `prometheus_client` registry and a handle on every metric in
//! it. The server makes one at start and hands it (an `Arc`) to what records into it:
//! the API (requests, their latency, refusals), the dispatcher (dispatch latency, the
//! group-commit writer, refused agents), the listener (connections closed or refused,
//! requests hyper could not parse) and the retention task (purged records). `/metrics`
//! answers [`Metrics::encode`]: the Prometheus text format, version 0.0.4.
//!
//! Every label value comes from a fixed set, so no client can make a new series:
//! - `action`: the name of an action the router serves (`&'static str` from its
//!   `Endpoint`), or `unknown` for a request that named none (a bad action or
//!   version, a refusal before the action was read, a path nothing serves);
//! - `code`: the wire code of the API's error enum (every one a static string or a
//!   static prefix and a static name), `OK` for a success; the family is capped at
//!   [`MAX_REQUEST_SERIES`] besides, past which new codes count as `other`;
//! - `reason`: [`Reason`];
//! - `kind`, `status`, `record`: the domain's enums, as static strings.
//!
//! What is known only at scrape time (agents connected now, tasks and invocations by
//! status) is passed to [`Metrics::encode`] in a [`Snapshot`].

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A counter, as [`Metrics::rejected`] hands one out.
pub use prometheus_client::metrics::counter::Counter;

/// The `Content-Type` of what [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The most `(action, code)` series of `oca_api_requests_total`; past it, a code not
/// seen yet counts as `other`. Far more than the actions times the codes each answers
/// (a safety net: codes are static strings already).
pub const MAX_REQUEST_SERIES: usize = 2048;

/// The `action` label of a request that named no action the server serves.
pub const UNKNOWN_ACTION: &str = "unknown";

/// The `code` label of a successful request.
pub const OK_CODE: &str = "OK";

/// Why a request or a connection was refused (the `reason` label of
/// `oca_rejected_total`). Refusals that protect the server, not every error: a
/// missing parameter is the caller's mistake and only shows in
/// `oca_api_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The listener closed an idle connection to make room for a new one.
    ConnectionEvicted,
    /// The listener closed a new connection at once: every one in its way was busy.
    ConnectionRefused,
    /// A request line and headers over the limit (hyper's 431/414, answered `I413UL`).
    HeadTooLarge,
    /// A request hyper could not parse as HTTP/1.1 (answered `I400HD`).
    MalformedHttp,
    /// A query string over the limit (`I413UL`).
    UrlTooLarge,
    /// A body over the limit (`I413RL`).
    BodyTooLarge,
    /// A body that did not arrive whole or in time (`I400BD`).
    BodyIncomplete,
    /// More entries of a list, or more names, than any action takes: parsing stopped.
    ParseLimit,
    /// A malformed or repeated parameter name.
    ParameterName,
    /// A path nothing serves (`InvalidApi.NotFound`).
    UnknownPath,
    /// A method the API does not take (`UnsupportedHTTPMethod`).
    MethodNotAllowed,
    /// A signature missing, malformed or not the server's.
    Signature,
    /// An access key unknown or disabled.
    AccessKey,
    /// A request stamped too far from the server's time, or with a malformed stamp.
    Timestamp,
    /// A nonce used before (or stamped before the server started, or too long).
    Replay,
    /// An agent registration or connection with a wrong secret (counted against its
    /// address by the throttle).
    AgentAuthFailed,
    /// An agent registration or connection refused as throttled (`Throttling.User`).
    AgentThrottled,
    /// An agent message or frame over the limit: the connection was ended (1009).
    AgentMessageTooBig,
    /// A registration body or field over its limit.
    AgentRegisterTooLarge,
}

impl Reason {
    pub const ALL: [Reason; 19] = [
        Reason::ConnectionEvicted,
        Reason::ConnectionRefused,
        Reason::HeadTooLarge,
        Reason::MalformedHttp,
        Reason::UrlTooLarge,
        Reason::BodyTooLarge,
        Reason::BodyIncomplete,
        Reason::ParseLimit,
        Reason::ParameterName,
        Reason::UnknownPath,
        Reason::MethodNotAllowed,
        Reason::Signature,
        Reason::AccessKey,
        Reason::Timestamp,
        Reason::Replay,
        Reason::AgentAuthFailed,
        Reason::AgentThrottled,
        Reason::AgentMessageTooBig,
        Reason::AgentRegisterTooLarge,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            ConnectionEvicted => "connection_evicted",
            ConnectionRefused => "connection_refused",
            HeadTooLarge => "head_too_large",
            MalformedHttp => "malformed_http",
            UrlTooLarge => "url_too_large",
            BodyTooLarge => "body_too_large",
            BodyIncomplete => "body_incomplete",
            ParseLimit => "parse_limit",
            ParameterName => "parameter_name",
            UnknownPath => "unknown_path",
            MethodNotAllowed => "method_not_allowed",
            Signature => "signature",
            AccessKey => "access_key",
            Timestamp => "timestamp",
            Replay => "replay",
            AgentAuthFailed => "agent_auth_failed",
            AgentThrottled => "agent_throttled",
            AgentMessageTooBig => "agent_message_too_big",
            AgentRegisterTooLarge => "agent_register_too_large",
        }
    }
}

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    kind: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RecordLabels {
    record: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Seconds, from 0.5 ms to 10 s: an API request.
fn request_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Seconds, from 100 µs to 5 s: a task from its store to its agent's socket, a commit.
fn fast_buckets() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ])
}

/// What `/metrics` reports that only the store and the dispatcher know, read as it is
/// scraped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Agents with a live connection now.
    pub agents_connected: u64,
    /// The store's tallies; `None` when it could not be read (the gauges are then
    /// left out of the answer rather than shown stale).
    pub tallies: Option<Tallies>,
}

/// Records by status, all accounts and regions together.
#[derive(Debug, Clone, Default)]
pub struct Tallies {
    /// Tasks (one per invocation and instance) by kind (`command`, `file`) and coarse
    /// status (`Running`, `Finished`, `Failed`, `Stopped`).
    pub tasks: Vec<(&'static str, &'static str, u64)>,
    /// Invocations by kind and `InvokeStatus`.
    pub invocations: Vec<(&'static str, &'static str, u64)>,
    /// Tasks stored and not yet delivered to their agent (fine status `Pending`).
    pub tasks_pending: u64,
}

/// The registry and every metric's handle. See the crate's documentation.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Held while a scrape sets the gauges and encodes, so that two scrapes do not
    /// interleave.
    scrape: Mutex<()>,
    api_requests: Family<RequestLabels, Counter>,
    /// Series of `api_requests` made so far.
    request_series: AtomicUsize,
    api_duration: Family<ActionLabels, Histogram, fn() -> Histogram>,
    rejected: Family<ReasonLabels, Counter>,
    agents_connected: Gauge,
    tasks: Family<StatusLabels, Gauge>,
    tasks_pending: Gauge,
    invocations: Family<StatusLabels, Gauge>,
    dispatch_latency: Histogram,
    writer_batch: Histogram,
    writer_commit: Histogram,
    writer_failures: Counter,
    retention_purged: Family<RecordLabels, Counter>,
    retention_failures: Counter,
}

impl Metrics {
    /// A registry with every metric of the server; `version` goes in `oca_build_info`.
    pub fn new(version: &'static str) -> Arc<Metrics> {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("oca");
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info.get_or_create(&VersionLabels { version }).set(1);
        registry.register(
            "build_info",
            "The server's version (the value is always 1)",
            build_info,
        );
        let m = Metrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            api_requests: Family::default(),
            request_series: AtomicUsize::new(0),
            api_duration: Family::new_with_constructor(request_buckets as fn() -> Histogram),
            rejected: Family::default(),
            agents_connected: Gauge::default(),
            tasks: Family::default(),
            tasks_pending: Gauge::default(),
            invocations: Family::default(),
            dispatch_latency: fast_buckets(),
            writer_batch: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
            ]),
            writer_commit: fast_buckets(),
            writer_failures: Counter::default(),
            retention_purged: Family::default(),
            retention_failures: Counter::default(),
        };
        // Every reason from the start, so that a rate is defined before the first one.
        for reason in Reason::ALL {
            let _ = m.rejected.get_or_create(&ReasonLabels { reason });
        }
        for record in ["invocations", "tasks", "commands"] {
            let _ = m.retention_purged.get_or_create(&RecordLabels { record });
        }
        registry.register(
            "api_requests",
            "API requests answered, by action and wire code (OK for a success)",
            m.api_requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Time to answer an API request, from its head to its answer, by action",
            m.api_duration.clone(),
        );
        registry.register(
            "rejected",
            "Requests and connections refused to protect the server, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "agents_connected",
            "Agents with a live connection",
            m.agents_connected.clone(),
        );
        registry.register(
            "tasks",
            "Tasks (one per invocation and instance) stored, by kind and coarse status \
             (InvokeRecordStatus; Running includes Pending, Scheduled and Stopping)",
            m.tasks.clone(),
        );
        registry.register(
            "tasks_pending",
            "Tasks stored and not yet delivered to their agent",
            m.tasks_pending.clone(),
        );
        registry.register(
            "invocations",
            "Invocations stored, by kind and InvokeStatus",
            m.invocations.clone(),
        );
        registry.register(
            "dispatch_latency_seconds",
            "From an invocation stored by the API to its task written to a connected \
             agent's socket",
            m.dispatch_latency.clone(),
        );
        registry.register(
            "writer_batch_size",
            "Agent reports (task events, output chunks) committed per transaction",
            m.writer_batch.clone(),
        );
        registry.register(
            "writer_commit_seconds",
            "Time to commit one batch of agent reports",
            m.writer_commit.clone(),
        );
        registry.register(
            "writer_failed_commits",
            "Batches of agent reports the store refused (their agents are not acknowledged \
             and send again)",
            m.writer_failures.clone(),
        );
        registry.register(
            "retention_purged",
            "Records purged by retention, by record (invocations, tasks, hidden commands)",
            m.retention_purged.clone(),
        );
        registry.register(
            "retention_failed_purges",
            "Retention purges the store refused",
            m.retention_failures.clone(),
        );
        Arc::new(Metrics {
            registry: root,
            ..m
        })
    }

    /// Counts an answered API request and its latency. `action`: the endpoint's name,
    /// or [`UNKNOWN_ACTION`]; `code`: the error's wire code, or [`OK_CODE`].
    pub fn api_request(&self, action: &'static str, code: &str, elapsed: Duration) {
        let mut labels = RequestLabels {
            action,
            code: code.to_string(),
        };
        // A series not seen yet: counted (two requests racing to make the same one may
        // both count it, which only reaches the cap a little early).
        if self.api_requests.get(&labels).is_none()
            && self.request_series.fetch_add(1, Ordering::Relaxed) >= MAX_REQUEST_SERIES
        {
            labels.code = "other".to_string();
        }
        self.api_requests.get_or_create(&labels).inc();
        self.api_duration
            .get_or_create(&ActionLabels { action })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a refusal.
    pub fn reject(&self, reason: Reason) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The counter of one reason's refusals (for a component that keeps it at hand).
    pub fn rejected(&self, reason: Reason) -> Counter {
        self.rejected.get_or_create_owned(&ReasonLabels { reason })
    }

    /// A task written to its agent's socket `elapsed` after its invocation was stored.
    pub fn dispatched(&self, elapsed: Duration) {
        self.dispatch_latency.observe(elapsed.as_secs_f64());
    }

    /// A batch of `writes` agent reports committed (or refused) in `elapsed`.
    pub fn writer_commit(&self, writes: usize, elapsed: Duration, ok: bool) {
        self.writer_batch.observe(writes as f64);
        self.writer_commit.observe(elapsed.as_secs_f64());
        if !ok {
            self.writer_failures.inc();
        }
    }

    /// Records purged by one retention call.
    pub fn retention_purged(&self, invocations: u64, tasks: u64, commands: u64) {
        for (record, n) in [
            ("invocations", invocations),
            ("tasks", tasks),
            ("commands", commands),
        ] {
            if n > 0 {
                self.retention_purged
                    .get_or_create(&RecordLabels { record })
                    .inc_by(n);
            }
        }
    }

    /// A retention purge the store refused.
    pub fn retention_failed(&self) {
        self.retention_failures.inc();
    }

    /// Everything, in the Prometheus text format, with the scrape-time values of
    /// `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.agents_connected
            .set(i64::try_from(snapshot.agents_connected).unwrap_or(i64::MAX));
        self.tasks.clear();
        self.invocations.clear();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(t) = &snapshot.tallies {
            for &(kind, status, n) in &t.tasks {
                self.tasks
                    .get_or_create(&StatusLabels { kind, status })
                    .set(gauge(n));
            }
            for &(kind, status, n) in &t.invocations {
                self.invocations
                    .get_or_create(&StatusLabels { kind, status })
                    .set(gauge(n));
            }
            self.tasks_pending.set(gauge(t.tasks_pending));
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        if snapshot.tallies.is_none() {
            out = without_family(&out, "oca_tasks_pending");
        }
        out
    }
}

/// `text` without the lines of the family `name` (its `# HELP`, `# TYPE` and samples).
fn without_family(text: &str, name: &str) -> String {
    text.lines()
        .filter(|line| {
            let rest = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            let sample = rest.strip_prefix(name);
            !sample.is_some_and(|s| s.is_empty() || s.starts_with([' ', '{']))
        })
        .fold(String::with_capacity(text.len()), |mut out, line| {
            out.push_str(line);
            out.push('\n');
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `series` (name and labels as written) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn samples_are_named_and_labelled_as_documented() {
        let m = Metrics::new("1.2.3");
        m.api_request("RunCommand", OK_CODE, Duration::from_millis(3));
        m.api_request("RunCommand", "InvalidParameter", Duration::from_millis(1));
        m.api_request(UNKNOWN_ACTION, "InvalidAction.NotFound", Duration::ZERO);
        m.reject(Reason::BodyTooLarge);
        m.reject(Reason::BodyTooLarge);
        m.dispatched(Duration::from_micros(300));
        m.writer_commit(3, Duration::from_millis(2), true);
        m.writer_commit(1, Duration::from_millis(2), false);
        m.retention_purged(2, 5, 0);
        let text = m.encode(&Snapshot {
            agents_connected: 7,
            tallies: Some(Tallies {
                tasks: vec![("command", "Finished", 4), ("file", "Running", 1)],
                invocations: vec![("command", "Finished", 2)],
                tasks_pending: 1,
            }),
        });
        let v = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        assert_eq!(v(r#"oca_build_info{version="1.2.3"}"#), 1.0);
        assert_eq!(
            v(r#"oca_api_requests_total{action="RunCommand",code="OK"}"#),
            1.0
        );
        assert_eq!(
            v(r#"oca_api_requests_total{action="unknown",code="InvalidAction.NotFound"}"#),
            1.0
        );
        assert_eq!(
            v(r#"oca_api_request_duration_seconds_count{action="RunCommand"}"#),
            2.0
        );
        assert_eq!(
            v(r#"oca_api_request_duration_seconds_bucket{action="RunCommand",le="0.005"}"#),
            2.0
        );
        assert_eq!(v(r#"oca_rejected_total{reason="body_too_large"}"#), 2.0);
        assert_eq!(v(r#"oca_rejected_total{reason="agent_throttled"}"#), 0.0);
        assert_eq!(v("oca_agents_connected"), 7.0);
        assert_eq!(v(r#"oca_tasks{kind="command",status="Finished"}"#), 4.0);
        assert_eq!(
            v(r#"oca_invocations{kind="command",status="Finished"}"#),
            2.0
        );
        assert_eq!(v("oca_tasks_pending"), 1.0);
        assert_eq!(v("oca_dispatch_latency_seconds_count"), 1.0);
        assert_eq!(v(r#"oca_writer_batch_size_bucket{le="4"}"#), 2.0);
        assert_eq!(v("oca_writer_batch_size_sum"), 4.0);
        assert_eq!(v("oca_writer_failed_commits_total"), 1.0);
        assert_eq!(v(r#"oca_retention_purged_total{record="tasks"}"#), 5.0);
        assert_eq!(v(r#"oca_retention_purged_total{record="commands"}"#), 0.0);
    }

    #[test]
    fn gauges_the_store_could_not_give_are_left_out() {
        let m = Metrics::new("0");
        let full = Snapshot {
            agents_connected: 1,
            tallies: Some(Tallies {
                tasks: vec![("command", "Running", 3)],
                invocations: vec![],
                tasks_pending: 2,
            }),
        };
        assert!(m.encode(&full).contains("oca_tasks{"));
        let text = m.encode(&Snapshot {
            agents_connected: 1,
            tallies: None,
        });
        assert!(!text.contains("oca_tasks{"), "{text}");
        assert!(!text.contains("oca_tasks_pending"), "{text}");
        assert!(text.contains("oca_agents_connected 1"), "{text}");
    }

    #[test]
    fn request_series_are_capped() {
        let m = Metrics::new("0");
        for n in 0..MAX_REQUEST_SERIES + 10 {
            // Codes are static in the server; this stands for a bug that would leak.
            m.api_request("RunCommand", &format!("Code{n}"), Duration::ZERO);
        }
        let text = m.encode(&Snapshot::default());
        let series = text
            .lines()
            .filter(|l| l.starts_with("oca_api_requests_total{"))
            .count();
        assert_eq!(series, MAX_REQUEST_SERIES + 1, "the cap and one `other`");
        assert_eq!(
            sample(
                &text,
                r#"oca_api_requests_total{action="RunCommand",code="other"}"#
            ),
            Some(10.0)
        );
    }
}
