//! Writing the audit trail ([`AuditRecord`]) off the request path.
//!
//! Callers hand entries to [`AuditLog::record`], which queues them; one task commits
//! whatever has queued in one transaction (group commit, like the nonce and result
//! writers), so a burst of calls shares a commit and no request waits for one. The
//! commits do not wait for the disk themselves (`Store::record_audit` with `sync`
//! false): an entry is in the write-ahead log within milliseconds of its call, so a
//! crash of the server process loses none that was committed, and it reaches the disk
//! with the next synced commit of anything else (every change, every nonce of a
//! change, every agent report is one) or checkpoint. What a power loss can take is the
//! last few milliseconds of entries, like the changes whose answers had not gone out.
//! [`AuditLog::flush`] waits until everything queued so far is committed (the server
//! calls it as it stops).
//!
//! Bounds, so a hostile caller cannot fill the disk or the memory through the trail:
//! - every field a caller chose is cut to [`MAX_FIELD_BYTES`] (ids) and anything but
//!   printable ASCII becomes `?` (`clean`); at most [`MAX_TARGETS`] ids per entry, the
//!   rest counted in `omitted` ([`Targets`]): an entry is well under 2 KiB;
//! - the queue holds [`QUEUE`] entries. An unauthenticated entry (a refusal by
//!   signature, a wrong activation code) is dropped while the queue is half full, and
//!   the drops are counted in an `AuditOverflow` entry (`omitted` = how many); an
//!   authenticated one waits for room, so a flood of refusals never costs an entry of
//!   a caller who proved a secret;
//! - retention purges entries by age and caps them, the unauthenticated ones apart
//!   (`Store::purge_audit`).

use crate::{AuditRecord, Store};
use oca_domain::time::now_millis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most ids one entry keeps.
pub const MAX_TARGETS: usize = 16;
/// The longest id or other caller-chosen field kept, in bytes (a longer one is cut).
pub const MAX_FIELD_BYTES: usize = 64;
/// Entries queued at most.
pub const QUEUE: usize = 16_384;
/// Entries committed per transaction at most.
const BATCH: usize = 2_048;

/// The action of the entry that counts dropped unauthenticated entries.
pub const OVERFLOW_ACTION: &str = "AuditOverflow";

/// `s` made safe to keep and to print: printable ASCII only (anything else becomes
/// `?`), at most `max` bytes (a longer value is cut and ends in `...`).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.truncate(max.saturating_sub(3));
            out.push_str("...");
            break;
        }
        out.push(if c.is_ascii_graphic() { c } else { '?' });
    }
    out
}

/// The ids an entry names, bounded as they are added: empty ones and repeats are
/// skipped, each is [`clean`]ed, and past [`MAX_TARGETS`] they are only counted (a
/// repeat past the cap is counted again: remembering them all would be unbounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    pub ids: Vec<String>,
    pub omitted: u64,
}

impl Targets {
    pub fn add(&mut self, id: &str) {
        if id.is_empty() {
            return;
        }
        let id = clean(id, MAX_FIELD_BYTES);
        if self.ids.contains(&id) {
            return;
        }
        if self.ids.len() < MAX_TARGETS {
            self.ids.push(id);
        } else {
            self.omitted += 1;
        }
    }
}

enum Msg {
    Entry(AuditRecord),
    Flush(oneshot::Sender<()>),
}

/// The audit trail's writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the writer task (on the current tokio runtime).
    pub fn spawn(store: Arc<dyn Store>) -> AuditLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write(store, rx, dropped.clone()));
        AuditLog { tx, dropped }
    }

    /// Queues an entry; its caller-chosen fields are bounded here. Returns at once
    /// unless the queue is full and the entry is authenticated (then it waits for
    /// room); an unauthenticated entry is dropped, and counted, while the queue is
    /// half full.
    pub async fn record(&self, mut entry: AuditRecord) {
        entry.account_id = clean(&entry.account_id, MAX_FIELD_BYTES);
        entry.access_key_id = clean(&entry.access_key_id, MAX_FIELD_BYTES);
        entry.source = clean(&entry.source, MAX_FIELD_BYTES);
        entry.action = clean(&entry.action, MAX_FIELD_BYTES);
        entry.result = clean(&entry.result, MAX_FIELD_BYTES);
        entry.request_id = clean(&entry.request_id, MAX_FIELD_BYTES);
        if entry.targets.len() > MAX_TARGETS
            || entry.targets.iter().any(|t| t.len() > MAX_FIELD_BYTES)
        {
            let mut bounded = Targets::default();
            for t in &entry.targets {
                bounded.add(t);
            }
            entry.omitted += bounded.omitted;
            entry.targets = bounded.ids;
        }
        if entry.authenticated {
            // Fails only once the writer is gone (the runtime is stopping).
            let _ = self.tx.send(Msg::Entry(entry)).await;
        } else if self.tx.capacity() <= QUEUE / 2 || self.tx.try_send(Msg::Entry(entry)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every entry queued before the call is committed (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>, dropped: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut entries = Vec::with_capacity(batch.len() + 1);
        let mut flushes = Vec::new();
        for msg in batch.drain(..) {
            match msg {
                Msg::Entry(e) => entries.push(e),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(
                dropped = lost,
                "audit: unauthenticated refusals came faster than they could be recorded; \
                 an AuditOverflow entry counts the ones left out"
            );
            entries.push(AuditRecord {
                at: now_millis(),
                account_id: String::new(),
                access_key_id: String::new(),
                source: String::new(),
                action: OVERFLOW_ACTION.to_string(),
                targets: Vec::new(),
                omitted: lost,
                result: "Dropped".to_string(),
                http_status: 0,
                request_id: String::new(),
                authenticated: true,
            });
        }
        let n = entries.len();
        if let Err(e) = store.record_audit(entries, false).await {
            tracing::error!(entries = n, "audit: could not record entries: {e}");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::AuditFilter;

    fn entry(n: i64, authenticated: bool) -> AuditRecord {
        AuditRecord {
            at: n,
            account_id: "a".into(),
            access_key_id: "k".into(),
            source: "127.0.0.1".into(),
            action: "RunCommand".into(),
            targets: vec![],
            omitted: 0,
            result: "Success".into(),
            http_status: 200,
            request_id: format!("r-{n}"),
            authenticated,
        }
    }

    #[test]
    fn fields_are_cleaned_and_cut() {
        assert_eq!(clean("mi-123", 64), "mi-123");
        assert_eq!(clean("a\u{1b}[31mb c\u{e9}", 64), "a?[31mb?c?");
        assert_eq!(clean(&"x".repeat(100), 10), "xxxxxxx...");
        assert_eq!(clean("", 10), "");
        let mut t = Targets::default();
        for n in 0..20 {
            t.add(&format!("mi-{n}"));
            t.add(&format!("mi-{n}"));
        }
        t.add("");
        assert_eq!((t.ids.len(), t.omitted), (MAX_TARGETS, 8));
        assert_eq!(t.ids[0], "mi-0");
    }

    #[tokio::test]
    async fn entries_are_bounded_committed_and_flushed() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let log = AuditLog::spawn(store.clone());
        let mut big = entry(1, true);
        big.access_key_id = "k".repeat(10_000);
        big.targets = (0..1000)
            .map(|n| format!("{n}-{}", "i".repeat(100)))
            .collect();
        log.record(big).await;
        log.record(entry(2, false)).await;
        log.flush().await;
        let listed = store
            .list_audit(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].access_key_id.len(), MAX_FIELD_BYTES);
        assert_eq!(listed[0].targets.len(), MAX_TARGETS);
        assert!(listed[0].targets.iter().all(|t| t.len() == MAX_FIELD_BYTES));
        assert_eq!(listed[0].omitted, 1000 - MAX_TARGETS as u64);
        assert!(!listed[1].authenticated);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unauthenticated_entries_give_way_when_the_queue_fills() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let log = AuditLog::spawn(store.clone());
        // On one thread the writer cannot run until this task yields: the queue fills.
        for n in 0..QUEUE as i64 {
            log.record(entry(n, false)).await;
        }
        let kept = QUEUE / 2;
        assert_eq!(log.dropped.load(Ordering::Relaxed), (QUEUE - kept) as u64);
        // An authenticated entry still gets in (it waits for room).
        log.record(entry(-1, true)).await;
        log.flush().await;
        let listed = store
            .list_audit(&AuditFilter {
                limit: u64::MAX,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let overflow: Vec<_> = listed
            .iter()
            .filter(|e| e.action == OVERFLOW_ACTION)
            .collect();
        assert_eq!(overflow.len(), 1);
        assert_eq!(overflow[0].omitted, (QUEUE - kept) as u64);
        assert_eq!(listed.iter().filter(|e| !e.authenticated).count(), kept);
        assert!(listed.iter().any(|e| e.at == -1));
    }
}
