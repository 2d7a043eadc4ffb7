//! Observability end to end: a real server and agent on 127.0.0.1; `/metrics` scraped
//! and parsed (a small parser of the Prometheus text format, version 0.0.4, below)
//! before and after served and refused calls; `/healthz` and `/readyz`; metrics on
//! their own address; JSON logs carrying the request's and the connection's span.

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

// ---- the text format --------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One scrape, parsed; parsing checks the format as it goes (panics on a bad line).
#[derive(Debug, Default)]
struct Scrape {
    /// Family → its `# TYPE`.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `{k="v",…}` at the start of `s`: the labels and what follows the `}`.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').expect("labels open with {");
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, after) = rest.split_once("=\"").expect("a label is key=\"value\"");
        assert!(is_label_name(key), "label name {key:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a label value is closed") {
                (_, '\\') => match chars.next().expect("an escape is complete").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("unknown escape \\{c}"),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        assert!(
            labels.insert(key.to_string(), value).is_none(),
            "label {key} twice"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap_or_else(|_| panic!("not a value: {v:?}")),
    }
}

fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let mut helped = HashSet::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words.next().expect("HELP names a family");
                    assert!(is_metric_name(name), "{line}");
                    assert!(helped.insert(name.to_string()), "HELP twice: {line}");
                }
                Some("TYPE") => {
                    let name = words.next().expect("TYPE names a family");
                    let kind = words.next().expect("TYPE gives a type");
                    assert!(is_metric_name(name), "{line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    let earlier = scrape.types.insert(name.to_string(), kind.to_string());
                    assert!(earlier.is_none(), "TYPE twice: {line}");
                }
                _ => {} // another comment
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..name_end];
        assert!(is_metric_name(name), "{line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().expect("a sample has a value"));
        if let Some(timestamp) = fields.next() {
            timestamp.parse::<i64>().expect("a timestamp is an integer");
        }
        assert!(fields.next().is_none(), "{line}");
        // The sample belongs to a family whose TYPE came before it.
        let family = [
            name,
            name.trim_end_matches("_bucket"),
            name.trim_end_matches("_sum"),
        ]
        .into_iter()
        .chain([name.trim_end_matches("_count")])
        .find(|f| scrape.types.contains_key(*f))
        .unwrap_or_else(|| panic!("no TYPE before {line}"));
        if scrape.types[family] == "histogram" && name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "{line}");
        }
        scrape.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    scrape
}

/// A histogram bucket: its upper bound and its cumulative count.
type Bucket = (f64, f64);

impl Scrape {
    /// The sample with exactly these labels, if any.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// The sample's value; 0 when there is none (a series not made yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// Every histogram: buckets never decrease as `le` grows, and `+Inf` is `_count`.
    fn check_histograms(&self) {
        for (family, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            // Labels but `le` → (le, cumulative count) of each bucket.
            let mut series: BTreeMap<Vec<(String, String)>, Vec<Bucket>> = BTreeMap::new();
            for s in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
            {
                let mut key: Vec<_> = s.labels.clone().into_iter().collect();
                key.retain(|(k, _)| k != "le");
                series
                    .entry(key)
                    .or_default()
                    .push((parse_value(&s.labels["le"]), s.value));
            }
            for (key, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                assert!(
                    buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                    "{family} {key:?}: {buckets:?}"
                );
                let labels: Vec<(&str, &str)> =
                    key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let count = self
                    .find(&format!("{family}_count"), &labels)
                    .unwrap_or_else(|| panic!("no {family}_count {key:?}"));
                let last = buckets.last().expect("a +Inf bucket");
                assert!(last.0.is_infinite(), "{family}: no +Inf bucket");
                assert_eq!(last.1, count, "{family} {key:?}: +Inf is the count");
            }
        }
    }
}

#[test]
fn the_parser_reads_the_format() {
    let s = parse(
        "# HELP x_total A counter.\n# TYPE x_total counter\nx_total{a=\"q\\\"uo\\\\te\\n\",b=\"\"} 3 1700000000000\n\
         # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n",
    );
    assert_eq!(s.get("x_total", &[("a", "q\"uo\\te\n"), ("b", "")]), 3.0);
    assert_eq!(s.get("h_sum", &[]), 3.5);
    s.check_histograms();
}

// ---- the server -------------------------------------------------------------------

fn host(server: &Server) -> String {
    server.url().trim_start_matches("http://").to_string()
}

fn scrape_at(host: &str) -> Scrape {
    let a = http_get(host, "/metrics", &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    let s = parse(&a.body);
    s.check_histograms();
    s
}

/// `bytes` sent as they are: the response's head (status line and headers) and body.
fn raw_exchange(host: &str, bytes: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(host).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(bytes).unwrap();
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.to_string(), body.to_string())
}

/// A GET by hand: the response's head and body.
fn raw_get(host: &str, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw_exchange(host, request.as_bytes())
}

#[test]
fn metrics_move_with_served_and_refused_calls() {
    let server = Server::start();
    let host = host(&server);
    let c = server.client();
    let agent = server.agent("metrics-1");

    let (head, body) = raw_get(&host, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE oca_api_requests_total counter"),
        "{body}"
    );
    let before = scrape_at(&host);
    assert_eq!(before.get("oca_agents_connected", &[]), 1.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.find("oca_build_info", &[("version", version)]),
        Some(1.0)
    );
    // Every reason is there from the start, at zero or more.
    for reason in ["connection_evicted", "head_too_large", "agent_throttled"] {
        assert!(
            before
                .find("oca_rejected_total", &[("reason", reason)])
                .is_some(),
            "{reason}"
        );
    }

    // Served.
    let invoke_id = c.run("echo hi", &[&agent.instance_id], &[]);
    let results = c.wait(&invoke_id, Duration::from_secs(30));
    assert_eq!(results[0]["InvocationStatus"], "Success");
    c.ok("DescribeInvocations", &[]);

    // Refused, each for a reason of its own.
    c.err("Nope", &[], "InvalidAction.NotFound", 404);
    let wrong = server.client().with_secret("not-the-secret");
    let a = wrong.call("DescribeInvocations", &[]);
    assert_eq!(a.json()["Code"], "SignatureDoesNotMatch", "{}", a.body);
    let now = oca_domain::time::now_millis();
    let region = vec![("RegionId".to_string(), REGION.to_string())];
    assert_eq!(
        c.raw("DescribeCommands", region.clone(), now, "metrics-nonce-1")
            .status,
        200
    );
    let a = c.raw("DescribeCommands", region, now, "metrics-nonce-1");
    assert_eq!(a.json()["Code"], "SignatureNonceUsed", "{}", a.body);
    let names: Vec<(String, String)> = (0..300).map(|n| (format!("X{n}"), "1".into())).collect();
    let names: Vec<(&str, &str)> = names
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let a = c.call("DescribeCommands", &names);
    assert_eq!(a.json()["Code"], "InvalidParameter", "{}", a.body);
    let form = [(
        "content-type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    let a = http_send(&host, "POST", "/", &form, &vec![b'a'; 3 << 20]);
    assert_eq!((a.status, a.json()["Code"].as_str()), (413, Some("I413RL")));
    let a = http_get(&host, "/nothing-here", &[]);
    assert_eq!(a.json()["Code"], "InvalidApi.NotFound", "{}", a.body);
    // The observability paths take GET only; another method answers the API's error
    // document, as any path does.
    let a = http_send(&host, "POST", "/metrics", &[], b"x");
    assert_eq!(
        (a.status, a.json()["Code"].as_str()),
        (400, Some("UnsupportedHTTPMethod"))
    );
    // What hyper refuses by itself: a request line over the limit, and no HTTP at all.
    let a = http_get(&host, &format!("/?X={}", "q".repeat(70_000)), &[]);
    assert_eq!((a.status, a.json()["Code"].as_str()), (414, Some("I413UL")));
    let (head, body) = raw_exchange(&host, b"BLAH\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("I400HD"), "{body}");
    let json = [("content-type".to_string(), "application/json".to_string())];
    let body = br#"{"activation_id":"act-nope","activation_code":"nope","hostname":"h","os_type":"linux","agent_version":"x"}"#;
    let a = http_send(&host, "POST", "/agent/v1/register", &json, body);
    assert_eq!(a.status, 403, "{}", a.body);

    let after = scrape_at(&host);
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let requests = "oca_api_requests_total";
    assert_eq!(
        delta(requests, &[("action", "RunCommand"), ("code", "OK")]),
        1.0
    );
    assert!(
        delta(
            requests,
            &[("action", "DescribeInvocationResults"), ("code", "OK")]
        ) >= 1.0
    );
    assert_eq!(
        delta(
            requests,
            &[("action", "unknown"), ("code", "InvalidAction.NotFound")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            requests,
            &[
                ("action", "DescribeInvocations"),
                ("code", "SignatureDoesNotMatch")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            requests,
            &[
                ("action", "DescribeCommands"),
                ("code", "SignatureNonceUsed")
            ]
        ),
        1.0
    );
    for code in ["I413RL", "InvalidApi.NotFound", "UnsupportedHTTPMethod"] {
        assert_eq!(
            delta(requests, &[("action", "unknown"), ("code", code)]),
            1.0,
            "{code}"
        );
    }
    assert_eq!(
        delta(
            "oca_api_request_duration_seconds_count",
            &[("action", "RunCommand")]
        ),
        1.0
    );
    let rejected = |reason: &str| delta("oca_rejected_total", &[("reason", reason)]);
    for reason in [
        "signature",
        "replay",
        "parse_limit",
        "body_too_large",
        "unknown_path",
        "method_not_allowed",
        "agent_auth_failed",
        "head_too_large",
        "malformed_http",
    ] {
        assert_eq!(rejected(reason), 1.0, "{reason}");
    }
    for reason in [
        "connection_evicted",
        "connection_refused",
        "agent_throttled",
        "access_key",
    ] {
        assert_eq!(rejected(reason), 0.0, "{reason}");
    }
    // The task went to the agent's socket once; its Started and Finished (and output)
    // were committed.
    assert_eq!(delta("oca_dispatch_latency_seconds_count", &[]), 1.0);
    assert!(delta("oca_writer_batch_size_sum", &[]) >= 2.0);
    assert!(delta("oca_writer_commit_seconds_count", &[]) >= 1.0);
    // The records, from the store's tallies.
    assert_eq!(
        after.get("oca_tasks", &[("kind", "command"), ("status", "Finished")]),
        1.0
    );
    assert_eq!(
        after.get(
            "oca_invocations",
            &[("kind", "command"), ("status", "Finished")]
        ),
        1.0
    );
    assert_eq!(after.find("oca_tasks_pending", &[]), Some(0.0));
    assert_eq!(after.get("oca_agents_connected", &[]), 1.0);

    // The agent goes: the gauge follows.
    drop(agent);
    let gone = wait_for(Duration::from_secs(10), || {
        (scrape_at(&host).get("oca_agents_connected", &[]) == 0.0).then_some(())
    });
    assert!(gone.is_some(), "the agent is still counted as connected");
}

#[test]
fn health_and_readiness() {
    let server = Server::start();
    let host = host(&server);
    let a = http_get(&host, "/healthz", &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    let a = http_get(&host, "/readyz", &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    // The database file goes from under the server: whatever it writes now is lost at
    // its next start. Alive, not ready.
    std::fs::remove_file(data_path(&server).join("oca.db")).unwrap();
    let a = http_get(&host, "/readyz", &[]);
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("not ready"), "{}", a.body);
    assert_eq!(http_get(&host, "/healthz", &[]).status, 200);
    assert_eq!(http_get(&host, "/metrics", &[]).status, 200);
}

#[test]
fn metrics_can_have_an_address_of_their_own() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let apart = format!("127.0.0.1:{port}");
    let server = Server::start_with(&["--metrics-listen", &apart]);
    // The API's listener no longer serves them: an unknown path's error document.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let a = http_get(&host(&server), path, &[]);
        assert_eq!(
            (a.status, a.json()["Code"].as_str()),
            (404, Some("InvalidApi.NotFound")),
            "{path}"
        );
    }
    let s = scrape_at(&apart);
    assert_eq!(s.get("oca_agents_connected", &[]), 0.0);
    // The API's refusal above was counted by the same registry.
    assert_eq!(
        s.get(
            "oca_api_requests_total",
            &[("action", "unknown"), ("code", "InvalidApi.NotFound")]
        ),
        3.0
    );
    assert_eq!(http_get(&apart, "/readyz", &[]).status, 200);
    assert_eq!(http_get(&apart, "/healthz", &[]).status, 200);
    assert_eq!(http_get(&apart, "/", &[]).status, 404);
}

#[test]
fn json_logs_carry_the_request_and_the_agent_connection() {
    let server = Server::start_logged_at(&["--log-format", "json"], "info");
    let c = server.client();
    let agent = server.agent("json-logs");
    let a = c.call("StopInvocation", &[("InvokeId", "t-0123456789abcdef")]);
    assert_ne!(a.status, 200, "{}", a.body);
    let request_id = a.json()["RequestId"].as_str().unwrap().to_string();
    let lines = || -> Vec<serde_json::Value> {
        server
            .log_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    // The refusal, inside its request's span.
    let refusal = wait_for(Duration::from_secs(5), || {
        lines()
            .into_iter()
            .find(|l| l["span"]["request_id"] == request_id.as_str())
    })
    .unwrap_or_else(|| panic!("no line of request {request_id}:\n{}", server.log_text()));
    assert_eq!(refusal["fields"]["message"], "request refused", "{refusal}");
    assert_eq!(refusal["span"]["name"], "request", "{refusal}");
    assert_eq!(refusal["span"]["action"], "StopInvocation", "{refusal}");
    assert_eq!(refusal["span"]["account"], "default", "{refusal}");
    assert_eq!(refusal["fields"]["code"], a.json()["Code"], "{refusal}");
    // The agent's connection, inside its span.
    let connected = lines()
        .into_iter()
        .find(|l| l["fields"]["message"] == "agent connected")
        .unwrap_or_else(|| panic!("no connection logged:\n{}", server.log_text()));
    assert_eq!(connected["span"]["name"], "agent", "{connected}");
    assert_eq!(
        connected["span"]["instance_id"],
        agent.instance_id.as_str(),
        "{connected}"
    );
}
