//! What `/readyz` and `/metrics` ask of the store: whether it answers, and its records
//! by status.

use super::invocations::{invocations_tally, tasks_tally};
use crate::{InvocationKind, Result, StoreError, Tallies};
use oca_domain::status::{InstanceInvokeStatus, InvokeStatus};
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::Path;

/// The identity of a file (device and inode), to tell whether the file at a path is
/// still the one a connection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId(u64, u64);

impl FileId {
    pub fn of(path: &Path) -> Option<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path)
                .ok()
                .map(|m| FileId(m.dev(), m.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }
}

/// Whether the file at `path` is still the one the store opened (`opened`).
pub fn same_file(path: Option<&Path>, opened: Option<FileId>) -> Result<()> {
    match (path, opened) {
        (Some(path), Some(opened)) if FileId::of(path) != Some(opened) => {
            Err(StoreError::Backend(format!(
                "the database file {} was removed or replaced while the server runs",
                path.display()
            )))
        }
        _ => Ok(()),
    }
}

/// A read through `c`.
pub fn ping(c: &Connection) -> Result<()> {
    c.prepare_cached("SELECT COUNT(*) FROM sqlite_master")?
        .query_row([], |r| r.get::<_, i64>(0))?;
    Ok(())
}

/// The `scope_counts` tallies summed over scopes (a row per scope and name: a few
/// dozen per account and region), and a count of the `Pending` tasks on their partial
/// index (`tasks_pending`, as many entries as tasks wait for delivery).
pub fn tallies(c: &Connection) -> Result<Tallies> {
    let kinds = [InvocationKind::Command, InvocationKind::File];
    let mut task_names = HashMap::new();
    let mut invocation_names = HashMap::new();
    for kind in kinds {
        for &s in InstanceInvokeStatus::ALL {
            task_names.insert(tasks_tally(kind, Some(s)), (kind, s));
        }
        for &s in InvokeStatus::ALL {
            invocation_names.insert(invocations_tally(kind, Some(s)), (kind, s));
        }
    }
    let tx = c.unchecked_transaction()?;
    let mut out = Tallies::default();
    {
        let mut sums = tx.prepare_cached("SELECT name, SUM(n) FROM scope_counts GROUP BY name")?;
        let rows = sums.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, n) = row?;
            let n = u64::try_from(n).unwrap_or(0);
            if n == 0 {
                continue;
            }
            if let Some(&(kind, status)) = task_names.get(&name) {
                out.tasks.push((kind, status, n));
            } else if let Some(&(kind, status)) = invocation_names.get(&name) {
                out.invocations.push((kind, status, n));
            }
        }
    }
    let pending: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM tasks WHERE status = 'Pending'")?
        .query_row([], |r| r.get(0))?;
    out.tasks_pending = u64::try_from(pending).unwrap_or(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        assert_tallies_consistent, disk_store, event, finished, home, invocation, memory_store,
        on_both_stores, put, sc, started,
    };
    use super::super::{lock, SqliteStore};
    use crate::*;
    use oca_domain::status::{InstanceInvokeStatus as Coarse, InvocationStatus as S, InvokeStatus};

    on_both_stores!(tallies_sum_every_scope);

    async fn tallies_sum_every_scope(s: &SqliteStore) {
        assert_eq!(s.tallies().await.unwrap(), Tallies::default());
        put(s, &invocation("t-a", &home(), 1), &["mi-1", "mi-2"]).await;
        put(
            s,
            &invocation("t-b", &sc("acct-2", "cn-hangzhou"), 2),
            &["mi-3"],
        )
        .await;
        let file = InvocationRecord {
            file: Some(FileSpec {
                target_dir: "/tmp".into(),
                content_type: "PlainText".into(),
                owner: String::new(),
                group: String::new(),
                mode: String::new(),
                overwrite: true,
            }),
            ..invocation("f-c", &sc("acct-1", "cn-shanghai"), 3)
        };
        put(s, &file, &["mi-1"]).await;
        event(s, "t-a", "mi-1", started(5)).await;
        event(s, "t-a", "mi-1", finished(S::Success, b"ok")).await;
        let mut t = s.tallies().await.unwrap();
        t.tasks.sort_by_key(|(k, st, _)| (k.as_str(), st.as_str()));
        t.invocations
            .sort_by_key(|(k, st, _)| (k.as_str(), st.as_str()));
        use InvocationKind::{Command, File};
        assert_eq!(
            t,
            Tallies {
                tasks: vec![
                    (Command, Coarse::Finished, 1),
                    (Command, Coarse::Running, 2),
                    (File, Coarse::Running, 1),
                ],
                invocations: vec![
                    (Command, InvokeStatus::Running, 2),
                    (File, InvokeStatus::Running, 1)
                ],
                tasks_pending: 3,
            }
        );
        assert_tallies_consistent(s);
    }

    #[test]
    fn pending_tasks_are_counted_on_their_partial_index() {
        let s = memory_store();
        let c = lock(&s.inner.writer);
        let plan: Vec<String> = c
            .prepare("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM tasks WHERE status = 'Pending'")
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            plan.iter().any(|step| step.contains("tasks_pending")),
            "{plan:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_fails_once_the_database_file_is_removed_or_replaced() {
        memory_store().ping().await.unwrap();
        let (dir, s) = disk_store();
        let path = dir.path().join("oca.db");
        s.ping().await.unwrap();
        // Moved aside and another file put in its place: not the database in use.
        std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
        let e = s.ping().await.unwrap_err().to_string();
        assert!(e.contains("removed or replaced"), "{e}");
        std::fs::write(&path, b"").unwrap();
        assert!(s.ping().await.is_err());
        // Put back: the same file again.
        std::fs::rename(dir.path().join("moved.db"), &path).unwrap();
        s.ping().await.unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(s.ping().await.is_err());
    }
}
