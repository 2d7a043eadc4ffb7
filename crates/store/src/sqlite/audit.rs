//! The audit trail: appended in batches, listed newest first, purged oldest first.

use crate::{AuditFilter, AuditPurged, AuditRecord, Result};
use oca_domain::time::Millis;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Appends entries in one transaction.
///
/// With `sync` false the commit does not wait for the disk (`synchronous=NORMAL` for
/// this transaction only): the entries are in the write-ahead log, so a crash of the
/// process loses none of them, and they reach the disk with the next synced commit
/// (any change, nonce or agent report) or checkpoint; a power loss before that loses
/// them. The caller decides (see `oca_store::audit`).
pub(super) fn record(c: &mut Connection, entries: &[AuditRecord], sync: bool) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    if !sync {
        c.pragma_update(None, "synchronous", "NORMAL")?;
    }
    let written = insert(c, entries);
    if !sync {
        c.pragma_update(None, "synchronous", "FULL")?;
    }
    written
}

fn insert(c: &mut Connection, entries: &[AuditRecord]) -> Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (at, account_id, access_key_id, source, action, targets, \
             omitted, result, http_status, request_id, authenticated) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        for e in entries {
            let targets = serde_json::to_string(&e.targets)
                .map_err(|err| crate::StoreError::Backend(err.to_string()))?;
            insert.execute(params![
                e.at,
                e.account_id,
                e.access_key_id,
                e.source,
                e.action,
                targets,
                i64::try_from(e.omitted).unwrap_or(i64::MAX),
                e.result,
                e.http_status,
                e.request_id,
                e.authenticated,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The newest `filter.limit` entries that match, oldest first. `since` walks the time
/// index; the other filters are checked row by row (an offline operator's query).
pub(super) fn list(c: &Connection, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let mut sql = String::from(
        "SELECT at, account_id, access_key_id, source, action, targets, omitted, result, \
         http_status, request_id, authenticated FROM audit WHERE at >= ?1",
    );
    if filter.action.is_some() {
        sql.push_str(" AND action = ?2");
    }
    if filter.account_id.is_some() {
        sql.push_str(" AND account_id = ?3");
    }
    sql.push_str(" ORDER BY at DESC, seq DESC LIMIT ?4");
    let mut stmt = c.prepare(&sql)?;
    let mut rows = Vec::new();
    let mut query = stmt.query(params![
        filter.since.unwrap_or(Millis::MIN),
        filter.action.as_deref().unwrap_or(""),
        filter.account_id.as_deref().unwrap_or(""),
        i64::try_from(filter.limit).unwrap_or(i64::MAX),
    ])?;
    while let Some(r) = query.next()? {
        let targets: String = r.get(5)?;
        rows.push(AuditRecord {
            at: r.get(0)?,
            account_id: r.get(1)?,
            access_key_id: r.get(2)?,
            source: r.get(3)?,
            action: r.get(4)?,
            targets: serde_json::from_str(&targets).unwrap_or_default(),
            omitted: r.get::<_, i64>(6)?.max(0) as u64,
            result: r.get(7)?,
            http_status: r.get(8)?,
            request_id: r.get(9)?,
            authenticated: r.get(10)?,
        });
    }
    rows.reverse();
    Ok(rows)
}

/// Deletes, in one transaction, at most `batch` entries: those older than
/// `older_than`, those beyond the newest `max_entries`, and the unauthenticated ones
/// beyond the newest `max_unauthenticated` of them, oldest first.
pub(super) fn purge(
    c: &mut Connection,
    older_than: Millis,
    max_entries: u64,
    max_unauthenticated: u64,
    batch: u64,
) -> Result<AuditPurged> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let batch_i = i64::try_from(batch).unwrap_or(i64::MAX);
    let mut deleted = tx
        .prepare_cached(
            "DELETE FROM audit WHERE seq IN \
             (SELECT seq FROM audit WHERE at < ? ORDER BY at LIMIT ?)",
        )?
        .execute(params![older_than, batch_i])? as u64;
    // `seq` only grows and rows go oldest first, so the newest `max_entries` rows are
    // those above `MAX(seq) - max_entries` (fewer where the age purge made holes).
    let newest: Option<i64> = tx
        .prepare_cached("SELECT MAX(seq) FROM audit")?
        .query_row([], |r| r.get(0))?;
    if let Some(newest) = newest {
        let keep_above = newest.saturating_sub(i64::try_from(max_entries).unwrap_or(i64::MAX));
        let room = batch_i - deleted as i64;
        if keep_above > 0 && room > 0 {
            deleted += tx
                .prepare_cached(
                    "DELETE FROM audit WHERE seq IN \
                     (SELECT seq FROM audit WHERE seq <= ? ORDER BY seq LIMIT ?)",
                )?
                .execute(params![keep_above, room])? as u64;
        }
    }
    // The unauthenticated entries have an index of their own: the newest
    // `max_unauthenticated` are found by walking it from the top.
    let room = batch_i - deleted as i64;
    if room > 0 {
        let boundary: Option<i64> = tx
            .prepare_cached(
                "SELECT seq FROM audit WHERE authenticated = 0 \
                 ORDER BY seq DESC LIMIT 1 OFFSET ?",
            )?
            .query_row(
                params![i64::try_from(max_unauthenticated).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(boundary) = boundary {
            deleted += tx
                .prepare_cached(
                    "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit \
                     WHERE authenticated = 0 AND seq <= ? ORDER BY seq LIMIT ?)",
                )?
                .execute(params![boundary, room])? as u64;
        }
    }
    tx.commit()?;
    Ok(AuditPurged {
        entries: deleted,
        more: deleted >= batch,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{disk_store, memory_store, on_both_stores};
    use crate::sqlite::SqliteStore;
    use crate::{AuditFilter, AuditRecord, Store};

    fn entry(at: i64, action: &str, account: &str, authenticated: bool) -> AuditRecord {
        AuditRecord {
            at,
            account_id: account.into(),
            access_key_id: "LTAI-key".into(),
            source: "127.0.0.1".into(),
            action: action.into(),
            targets: vec!["t-1".into(), "mi-2".into()],
            omitted: 3,
            result: "Success".into(),
            http_status: 200,
            request_id: format!("req-{at}"),
            authenticated,
        }
    }

    fn all() -> AuditFilter {
        AuditFilter {
            limit: u64::MAX,
            ..AuditFilter::default()
        }
    }

    fn count(s: &SqliteStore, sql: &str) -> i64 {
        s.inner
            .writer
            .lock()
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    on_both_stores!(entries_are_listed_and_filtered, entries_are_purged);

    async fn entries_are_listed_and_filtered(s: &SqliteStore) {
        let entries = vec![
            entry(10, "RunCommand", "a", true),
            entry(20, "CreateCommand", "b", true),
            entry(30, "RunCommand", "", false),
            entry(40, "RunCommand", "a", true),
        ];
        s.record_audit(entries.clone(), true).await.unwrap();
        s.record_audit(vec![], false).await.unwrap();
        assert_eq!(s.list_audit(&all()).await.unwrap(), entries, "oldest first");
        let listed = |f: AuditFilter| async move {
            s.list_audit(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.at)
                .collect::<Vec<_>>()
        };
        let f = AuditFilter {
            action: Some("RunCommand".into()),
            ..all()
        };
        assert_eq!(listed(f).await, vec![10, 30, 40]);
        let f = AuditFilter {
            account_id: Some("a".into()),
            since: Some(20),
            ..all()
        };
        assert_eq!(listed(f).await, vec![40]);
        let f = AuditFilter { limit: 2, ..all() };
        assert_eq!(listed(f).await, vec![30, 40], "the newest, in order");
    }

    async fn entries_are_purged(s: &SqliteStore) {
        // 10 entries, every third one unauthenticated.
        let entries: Vec<_> = (0..10)
            .map(|n| entry(100 + n, "RunCommand", "a", n % 3 != 0))
            .collect();
        s.record_audit(entries, false).await.unwrap();
        // Too old: before 102. Batches of 1 come back full.
        let p = s.purge_audit(102, 100, 100, 1).await.unwrap();
        assert_eq!((p.entries, p.more), (1, true));
        let p = s.purge_audit(102, 100, 100, 1).await.unwrap();
        assert_eq!((p.entries, p.more), (1, true));
        let p = s.purge_audit(102, 100, 100, 10).await.unwrap();
        assert_eq!((p.entries, p.more), (0, false));
        assert_eq!(count(s, "SELECT MIN(at) FROM audit"), 102);
        // At most 6 in all: 102 and 103 go.
        let p = s.purge_audit(0, 6, 100, 10).await.unwrap();
        assert_eq!(p.entries, 2);
        assert_eq!(count(s, "SELECT MIN(at) FROM audit"), 104);
        // At most one unauthenticated (of 106 and 109): 106 goes.
        let p = s.purge_audit(0, 100, 1, 10).await.unwrap();
        assert_eq!(p.entries, 1);
        let kept: Vec<i64> = s
            .list_audit(&all())
            .await
            .unwrap()
            .iter()
            .map(|e| e.at)
            .collect();
        assert_eq!(kept, vec![104, 105, 107, 108, 109]);
        assert_eq!(s.purge_audit(0, 100, 1, 10).await.unwrap().entries, 0);
    }

    #[test]
    fn the_purge_walks_the_indexes() {
        let s = SqliteStore::open_in_memory().unwrap();
        let c = s.inner.writer.lock().unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows.join("; ")
        };
        let p = plan("SELECT seq FROM audit WHERE at < 5 ORDER BY at LIMIT 10");
        assert!(p.contains("audit_at"), "{p}");
        let p = plan(
            "SELECT seq FROM audit WHERE authenticated = 0 ORDER BY seq DESC LIMIT 1 OFFSET 5",
        );
        assert!(p.contains("audit_unauthenticated"), "{p}");
        let p = plan("SELECT at FROM audit WHERE at >= 5 ORDER BY at DESC, seq DESC LIMIT 10");
        assert!(p.contains("audit_at") && !p.contains("TEMP B-TREE"), "{p}");
    }
}
