//! Retention: invocation records are not kept forever.
//!
//! [`purge_invocations`] deletes, in one short `BEGIN IMMEDIATE` transaction, at most
//! `batch` invocations (and at most about [`TASK_BUDGET`] of their tasks) that are
//! - created before `older_than`, or
//! - in their scope (account + region) and kind, beyond the newest `max_records`
//!   (command runs and file deliveries are counted apart: each kind is its own listing,
//!   DescribeInvocations or DescribeSendFileResults, with its own tallies, so a flood of
//!   deliveries never pushes command runs out, nor the other way round),
//!
//! and never one that is live: whose stored `invoke_status` is `Running` (a periodic
//! invocation is until it is stopped) or that has a task in a status that is not
//! terminal (Pending, Running, Stopping, Scheduled), whatever its age. A live
//! invocation still counts towards its scope's newest `max_records`; it is simply
//! kept, and goes in a later sweep once it has ended.
//!
//! "Newest" is the listings' order (`created DESC, invoke_id`), so exactly the first
//! `max_records` rows of an unfiltered listing stay. Candidates are found per scope
//! and kind by walking `invocations_scope` backwards (oldest first) and stopping at
//! the first row that is neither past the cap (its position, from the scope's tally)
//! nor too old; the scopes are those the `scope_counts` tallies name. No extra index
//! is needed.
//!
//! Deleting an invocation removes, in the same transaction: its tasks' output chunks,
//! its runs (`task_runs`), its tasks, its tags, its
//! `client_tokens` rows, the invocation, and the hidden command a RunCommand made
//! without KeepCommand (`visible = 0`) once no invocation refers to it any more (with
//! that command's tags). It takes the invocation and its tasks off the `scope_counts`
//! tallies. Saved (visible) commands stay, and so do the lifetime counters
//! (`commands.invoke_times`, `instances.invocation_count`): they count invokes, not
//! kept records.

use crate::{InvocationKind, Purged, Result};
use oca_domain::status::{InvocationStatus, InvokeStatus};
use oca_domain::time::Millis;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;

/// Tasks deleted per call, roughly: a call stops before the invocation that would
/// take it past this many (but always deletes at least one), so that a batch of wide
/// invocations still holds the write lock briefly. (On a laptop-class disk a task
/// costs ~12 µs to delete with its index entries and output, an invocation ~50 µs:
/// a call of 2,000 tasks or 500 single-instance invocations takes 25–50 ms; one
/// 10,000-instance invocation, which must go in one transaction, ~125 ms.)
pub(super) const TASK_BUDGET: u64 = 2_000;

/// Each kind and the `scope_counts` names of its invocations and its tasks.
const KINDS: [(InvocationKind, &str, &str); 2] = [
    (InvocationKind::Command, "invocations", "tasks"),
    (InvocationKind::File, "files", "file-tasks"),
];

/// The tally names of a stored `kind` (`None` for a kind this build does not know: such
/// records are left alone).
fn tallies_of_kind(kind: &str) -> Option<(&'static str, &'static str)> {
    KINDS
        .iter()
        .find(|(k, _, _)| k.as_str() == kind)
        .map(|(_, invocations, tasks)| (*invocations, *tasks))
}

/// The kind whose invocations a `scope_counts` name counts.
fn kind_of_tally(name: &str) -> Option<&'static str> {
    KINDS
        .iter()
        .find(|(_, invocations, _)| *invocations == name)
        .map(|(k, _, _)| k.as_str())
}

/// See the module documentation and [`crate::Store::purge_invocations`].
pub(super) fn purge_invocations(
    c: &mut Connection,
    older_than: Millis,
    max_records: u64,
    batch: u64,
) -> Result<Purged> {
    purge(c, older_than, max_records, batch, TASK_BUDGET)
}

pub(super) fn purge(
    c: &mut Connection,
    older_than: Millis,
    max_records: u64,
    batch: u64,
    task_budget: u64,
) -> Result<Purged> {
    let mut purged = Purged::default();
    if batch == 0 {
        return Ok(purged);
    }
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;

    // 1. The candidates, oldest first per scope and kind.
    let groups: Vec<(String, String, String, i64)> = tx
        .prepare_cached(
            "SELECT account_id, region_id, name, n FROM scope_counts \
             WHERE name IN (?, ?) AND n > 0 ORDER BY account_id, region_id, name",
        )?
        .query_map(params![KINDS[0].1, KINDS[1].1], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut ids = Vec::new();
    let mut stopped_early = false;
    for (account_id, region_id, name, n) in groups {
        let Some(kind) = kind_of_tally(&name) else {
            continue;
        };
        let excess = (n.max(0) as u64).saturating_sub(max_records);
        let room = batch - ids.len() as u64;
        if candidates(
            &tx,
            (&account_id, &region_id, kind),
            excess,
            older_than,
            room,
            &mut ids,
        )? {
            stopped_early = true;
            break;
        }
    }

    // 2. Delete them, one by one, within the task budget.
    let mut tally = Tally::default();
    for id in &ids {
        let Some(doomed) = inspect(&tx, id)? else {
            continue;
        };
        if purged.invocations > 0 && purged.tasks + doomed.tasks > task_budget {
            stopped_early = true;
            break;
        }
        purged.commands += delete(&tx, &doomed, &mut tally)?;
        purged.invocations += 1;
        purged.tasks += doomed.tasks;
    }
    tally.write(&tx)?;
    tx.commit()?;
    // Only worth calling again at once if this call made progress.
    purged.more = stopped_early && purged.invocations > 0;
    Ok(purged)
}

/// Appends to `out` the ids of the scope's invocations of `kind` that are past the
/// cap (the oldest `excess`) or created before `older_than`, and not live by their
/// stored status, oldest first; at most `room` of them. True when it stopped because
/// `room` was reached.
fn candidates(
    tx: &Connection,
    (account_id, region_id, kind): (&str, &str, &str),
    excess: u64,
    older_than: Millis,
    room: u64,
    out: &mut Vec<String>,
) -> Result<bool> {
    if room == 0 {
        return Ok(true);
    }
    // `invocations_scope` is (account_id, region_id, kind, created DESC, invoke_id):
    // this is that index walked backwards, oldest first.
    let mut stmt = tx.prepare_cached(SCAN)?;
    let mut rows = stmt.query(params![account_id, region_id, kind])?;
    let mut position = 0u64;
    let mut taken = 0u64;
    while let Some(r) = rows.next()? {
        let created: Millis = r.get(1)?;
        if position >= excess && created >= older_than {
            break;
        }
        position += 1;
        let invoke_status: String = r.get(2)?;
        if invoke_status == InvokeStatus::Running.as_str() {
            continue;
        }
        out.push(r.get(0)?);
        taken += 1;
        if taken == room {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A scope's invocations of a kind, oldest first (the reverse of the listings' order).
pub(super) const SCAN: &str = "SELECT invoke_id, created, invoke_status FROM invocations \
     WHERE account_id = ? AND region_id = ? AND kind = ? ORDER BY created, invoke_id DESC";

/// An invocation about to be deleted, with what its deletion takes off the tallies.
struct Doomed {
    invoke_id: String,
    account_id: String,
    region_id: String,
    kind: String,
    invoke_status: String,
    command_id: String,
    /// (task kind, coarse status, tasks).
    task_groups: Vec<(String, String, i64)>,
    tasks: u64,
}

/// The invocation, unless it is gone, live, or of a kind this build does not know.
fn inspect(tx: &Connection, invoke_id: &str) -> Result<Option<Doomed>> {
    let row: Option<(String, String, String, String, String)> = tx
        .prepare_cached(
            "SELECT account_id, region_id, kind, invoke_status, command_id FROM invocations \
             WHERE invoke_id = ?",
        )?
        .query_row([invoke_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((account_id, region_id, kind, invoke_status, command_id)) = row else {
        return Ok(None);
    };
    if invoke_status == InvokeStatus::Running.as_str() || tallies_of_kind(&kind).is_none() {
        return Ok(None);
    }
    let mut task_groups = Vec::new();
    let mut tasks = 0u64;
    let mut stmt = tx.prepare_cached(
        "SELECT kind, status, coarse, COUNT(*) FROM tasks WHERE invoke_id = ? \
         GROUP BY kind, status, coarse",
    )?;
    let mut rows = stmt.query([invoke_id])?;
    while let Some(r) = rows.next()? {
        let (task_kind, status, coarse, n): (String, String, String, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        // A task that has not ended (or whose status this build cannot read) keeps its
        // invocation, whatever the invocation's stored status says.
        let ended = status
            .parse::<InvocationStatus>()
            .is_ok_and(InvocationStatus::is_terminal);
        if !ended || tallies_of_kind(&task_kind).is_none() {
            tracing::warn!(
                invoke = %invoke_id,
                "retention: {invoke_status} invocation has a {status} task; kept"
            );
            return Ok(None);
        }
        tasks += n.max(0) as u64;
        task_groups.push((task_kind, coarse, n));
    }
    Ok(Some(Doomed {
        invoke_id: invoke_id.to_string(),
        account_id,
        region_id,
        kind,
        invoke_status,
        command_id,
        task_groups,
        tasks,
    }))
}

/// Deletes the invocation and everything that goes with it; returns how many hidden
/// commands went with it (0 or 1).
fn delete(tx: &Connection, d: &Doomed, tally: &mut Tally) -> Result<u64> {
    let id = d.invoke_id.as_str();
    // Children first, so nothing depends on the foreign keys' cascades.
    tx.prepare_cached("DELETE FROM output_chunks WHERE invoke_id = ?")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM task_runs WHERE invoke_id = ?")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM tasks WHERE invoke_id = ?")?
        .execute([id])?;
    tx.prepare_cached(
        "DELETE FROM tags WHERE account_id = ? AND region_id = ? \
         AND resource_type = 'invocation' AND resource_id = ?",
    )?
    .execute(params![d.account_id, d.region_id, id])?;
    tx.prepare_cached("DELETE FROM client_tokens WHERE invoke_id = ?")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM invocations WHERE invoke_id = ?")?
        .execute([id])?;

    let scope = (d.account_id.as_str(), d.region_id.as_str());
    let (invocations, _) = tallies_of_kind(&d.kind).expect("inspected");
    tally.add(scope, invocations.to_string(), -1);
    tally.add(scope, format!("{invocations}/{}", d.invoke_status), -1);
    for (task_kind, coarse, n) in &d.task_groups {
        let (_, tasks) = tallies_of_kind(task_kind).expect("inspected");
        tally.add(scope, tasks.to_string(), -n);
        tally.add(scope, format!("{tasks}/{coarse}"), -n);
    }

    // The hidden command of a RunCommand without KeepCommand, once nothing refers to
    // it (`invocations_command` answers that).
    if d.kind != InvocationKind::Command.as_str() || d.command_id.is_empty() {
        return Ok(0);
    }
    let gone = tx
        .prepare_cached(
            "DELETE FROM commands WHERE command_id = ?1 AND account_id = ?2 AND region_id = ?3 \
             AND visible = 0 AND NOT EXISTS (SELECT 1 FROM invocations i \
             WHERE i.account_id = ?2 AND i.region_id = ?3 AND i.kind = ?4 \
             AND i.command_id = ?1)",
        )?
        .execute(params![
            d.command_id,
            d.account_id,
            d.region_id,
            InvocationKind::Command.as_str()
        ])?;
    if gone > 0 {
        tx.prepare_cached(
            "DELETE FROM tags WHERE account_id = ? AND region_id = ? \
             AND resource_type = 'command' AND resource_id = ?",
        )?
        .execute(params![d.account_id, d.region_id, d.command_id])?;
    }
    Ok(gone as u64)
}

/// Changes to `scope_counts`, per scope and name, written before the commit.
#[derive(Default)]
struct Tally(BTreeMap<(String, String, String), i64>);

impl Tally {
    fn add(&mut self, (account_id, region_id): (&str, &str), name: String, delta: i64) {
        *self
            .0
            .entry((account_id.to_string(), region_id.to_string(), name))
            .or_default() += delta;
    }

    fn write(self, tx: &Connection) -> Result<()> {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO scope_counts (account_id, region_id, name, n) VALUES (?, ?, ?, ?) \
             ON CONFLICT (account_id, region_id, name) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((account_id, region_id, name), delta) in self.0 {
            if delta != 0 {
                upsert.execute(params![account_id, region_id, name, delta])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{lock, SqliteStore};
    use super::{purge, SCAN};
    use crate::*;
    use oca_domain::status::{InvocationStatus as S, StatusCounts};
    use oca_domain::task::{TaskEvent, TaskState};
    use oca_domain::time::Millis;
    use std::collections::BTreeSet;

    const DAY: Millis = 86_400_000;
    const NOW: Millis = 1_700_000_000_000;
    /// Records created before this are too old.
    const CUTOFF: Millis = NOW - 14 * DAY;
    const OLD: Millis = CUTOFF - DAY;
    const RECENT: Millis = NOW - DAY;
    const NO_CAP: u64 = u64::MAX;

    use super::super::tests::{
        assert_tallies_consistent, disk_store, home, memory_store, on_both_stores, sc,
    };

    on_both_stores!(
        old_records_go_recent_and_live_ones_stay,
        the_cap_keeps_the_newest_per_scope_and_kind,
        the_cap_keeps_live_records_beyond_it,
        what_goes_with_an_invocation,
        batches_are_bounded,
    );

    fn command(id: &str, scope: &Scope, visible: bool) -> CommandRecord {
        CommandRecord {
            command_id: id.into(),
            account_id: scope.account_id.clone(),
            region_id: scope.region_id.clone(),
            name: format!("name-{id}"),
            description: String::new(),
            command_type: "RunShellScript".into(),
            content: b"echo hi".to_vec(),
            working_dir: String::new(),
            timeout_secs: 60,
            enable_parameter: false,
            parameter_names: Vec::new(),
            created: OLD,
            invoke_times: 0,
            visible,
            resource_group_id: String::new(),
        }
    }

    fn invocation(id: &str, scope: &Scope, created: Millis) -> InvocationRecord {
        InvocationRecord {
            invoke_id: id.into(),
            account_id: scope.account_id.clone(),
            region_id: scope.region_id.clone(),
            command_id: "c-saved".into(),
            command_name: "alpha".into(),
            command_description: String::new(),
            command_type: "RunShellScript".into(),
            command_content: b"echo hi".to_vec(),
            enable_parameter: false,
            parameters: "{}".into(),
            working_dir: "/root".into(),
            username: "root".into(),
            timeout_secs: 60,
            repeat_mode: "Once".into(),
            timed: false,
            frequency: String::new(),
            termination_mode: "ProcessTree".into(),
            created,
            stopped_by_hand: false,
            counts: StatusCounts::default(),
            file: None,
            revision: 0,
            resource_group_id: String::new(),
        }
    }

    fn file_delivery(id: &str, scope: &Scope, created: Millis) -> InvocationRecord {
        InvocationRecord {
            command_id: String::new(),
            command_type: String::new(),
            file: Some(FileSpec {
                target_dir: "/tmp".into(),
                content_type: "PlainText".into(),
                owner: String::new(),
                group: String::new(),
                mode: String::new(),
                overwrite: true,
            }),
            ..invocation(id, scope, created)
        }
    }

    /// A periodic invocation (stopped by hand or not).
    fn periodic(id: &str, scope: &Scope, created: Millis, stopped: bool) -> InvocationRecord {
        InvocationRecord {
            repeat_mode: "Period".into(),
            timed: true,
            frequency: "rate(5m)".into(),
            stopped_by_hand: stopped,
            ..invocation(id, scope, created)
        }
    }

    fn tasks(inv: &InvocationRecord, statuses: &[S]) -> Vec<TaskRecord> {
        statuses
            .iter()
            .enumerate()
            .map(|(n, status)| TaskRecord {
                invoke_id: inv.invoke_id.clone(),
                instance_id: format!("mi-{n}"),
                account_id: inv.account_id.clone(),
                region_id: inv.region_id.clone(),
                command_id: inv.command_id.clone(),
                username: inv.username.clone(),
                timed: inv.timed,
                created: inv.created,
                updated: inv.created,
                state: TaskState {
                    status: *status,
                    ..TaskState::pending()
                },
                output_len: 0,
                resource_group_id: inv.resource_group_id.clone(),
            })
            .collect()
    }

    /// Stores `inv` with a task per status.
    async fn put(s: &SqliteStore, inv: &InvocationRecord, statuses: &[S]) {
        s.insert_invocation(None, inv, &tasks(inv, statuses))
            .await
            .unwrap();
    }

    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn stored_ids(s: &SqliteStore) -> BTreeSet<String> {
        let c = lock(&s.inner.writer);
        let mut stmt = c.prepare("SELECT invoke_id FROM invocations").unwrap();
        let ids = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        ids
    }

    fn count(s: &SqliteStore, sql: &str) -> i64 {
        lock(&s.inner.writer)
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    /// `scope_counts` equals a recount of the rows, and nothing is left that belonged
    /// to an invocation that is gone.
    fn assert_consistent(s: &SqliteStore) {
        assert_tallies_consistent(s);
        let orphans = [
            "SELECT COUNT(*) FROM tasks WHERE invoke_id NOT IN (SELECT invoke_id FROM invocations)",
            "SELECT COUNT(*) FROM output_chunks o WHERE NOT EXISTS (SELECT 1 FROM tasks t \
             WHERE t.invoke_id = o.invoke_id AND t.instance_id = o.instance_id)",
            "SELECT COUNT(*) FROM tags WHERE resource_type = 'invocation' \
             AND resource_id NOT IN (SELECT invoke_id FROM invocations)",
            "SELECT COUNT(*) FROM tags WHERE resource_type = 'command' \
             AND resource_id NOT IN (SELECT command_id FROM commands)",
            "SELECT COUNT(*) FROM client_tokens \
             WHERE invoke_id NOT IN (SELECT invoke_id FROM invocations)",
            "SELECT COUNT(*) FROM commands m WHERE m.visible = 0 AND NOT EXISTS \
             (SELECT 1 FROM invocations i WHERE i.command_id = m.command_id)",
        ];
        for sql in orphans {
            assert_eq!(count(s, sql), 0, "{sql}");
        }
        let sql = "SELECT COUNT(*) FROM task_runs \
                   WHERE invoke_id NOT IN (SELECT invoke_id FROM invocations)";
        assert_eq!(count(s, sql), 0, "{sql}");
    }

    async fn purge_once(s: &SqliteStore, older_than: Millis, cap: u64, batch: u64) -> Purged {
        let purged = s.purge_invocations(older_than, cap, batch).await.unwrap();
        assert_consistent(s);
        purged
    }

    /// The ids of an unfiltered listing of a kind in a scope, and its total.
    async fn listed(s: &SqliteStore, scope: &Scope, kind: InvocationKind) -> (u64, Vec<String>) {
        let f = InvocationFilter {
            kind,
            ..Default::default()
        };
        let page = Page {
            offset: 0,
            limit: 1000,
        };
        let l = s.list_invocations(scope, &f, page, false).await.unwrap();
        let ids = l
            .items
            .into_iter()
            .map(|v| v.invocation.invoke_id)
            .collect();
        (l.total, ids)
    }

    fn finished(status: S) -> TaskEvent {
        TaskEvent::Finished {
            status,
            exit_code: Some(0),
            error: None,
            start_time: Some(OLD),
            finish_time: OLD + 1,
            output: b"done".to_vec(),
            dropped: 0,
        }
    }

    // ---- the checks ---------------------------------------------------------------------

    async fn old_records_go_recent_and_live_ones_stay(s: &SqliteStore) {
        let h = home();
        // Ended and old: they go.
        put(
            s,
            &invocation("t-success", &h, OLD),
            &[S::Success, S::Failed],
        )
        .await;
        put(
            s,
            &invocation("t-aborted", &h, OLD - 30 * DAY),
            &[S::Aborted],
        )
        .await;
        put(s, &invocation("t-cancelled", &h, OLD), &[S::Cancelled]).await;
        put(s, &invocation("t-timeout", &h, CUTOFF - 1), &[S::Timeout]).await;
        put(
            s,
            &periodic("t-period-stopped", &h, OLD, true),
            &[S::Cancelled],
        )
        .await;
        put(s, &file_delivery("f-old", &h, OLD), &[S::Success]).await;
        // Live, however old: they stay.
        put(
            s,
            &invocation("t-pending", &h, OLD - 300 * DAY),
            &[S::Pending],
        )
        .await;
        put(s, &invocation("t-running", &h, OLD), &[S::Running]).await;
        put(s, &invocation("t-stopping", &h, OLD), &[S::Stopping]).await;
        put(s, &invocation("t-half", &h, OLD), &[S::Success, S::Running]).await;
        put(s, &periodic("t-scheduled", &h, OLD, false), &[S::Scheduled]).await;
        // A periodic invocation lives until it is stopped, even between runs.
        put(s, &periodic("t-period", &h, OLD, false), &[S::Success]).await;
        put(s, &file_delivery("f-pending", &h, OLD), &[S::Pending]).await;
        // Recent (or exactly at the cutoff): they stay.
        put(s, &invocation("t-recent", &h, RECENT), &[S::Success]).await;
        put(s, &invocation("t-cutoff", &h, CUTOFF), &[S::Failed]).await;
        assert_consistent(s);

        let purged = purge_once(s, CUTOFF, NO_CAP, 100).await;
        assert_eq!(
            purged,
            Purged {
                invocations: 6,
                tasks: 7,
                commands: 0,
                more: false
            }
        );
        let live = [
            "t-pending",
            "t-running",
            "t-stopping",
            "t-half",
            "t-scheduled",
            "t-period",
            "f-pending",
        ];
        let mut expected = ids(&live);
        expected.extend(ids(&["t-recent", "t-cutoff"]));
        assert_eq!(stored_ids(s), expected);
        assert_eq!(listed(s, &h, InvocationKind::Command).await.0, 8);
        assert_eq!(listed(s, &h, InvocationKind::File).await.0, 1);
        // Nothing more to do.
        assert_eq!(purge_once(s, CUTOFF, NO_CAP, 100).await, Purged::default());

        // Once they end, they go.
        s.apply_task_event("t-running", "mi-0", finished(S::Success))
            .await
            .unwrap()
            .unwrap();
        s.apply_task_event("t-half", "mi-1", finished(S::Failed))
            .await
            .unwrap()
            .unwrap();
        s.stop_invocation(&h, "t-period", None, NOW).await.unwrap();
        let purged = purge_once(s, CUTOFF, NO_CAP, 100).await;
        assert_eq!((purged.invocations, purged.tasks), (3, 4));
        assert!(!stored_ids(s).contains("t-running"));
        assert!(!stored_ids(s).contains("t-half"));
        assert!(!stored_ids(s).contains("t-period"));
        // Stopping a scheduled one cancels it at once: it goes too.
        s.stop_invocation(&h, "t-scheduled", None, NOW)
            .await
            .unwrap();
        assert_eq!(purge_once(s, CUTOFF, NO_CAP, 100).await.invocations, 1);
        let mut expected = ids(&["t-pending", "t-stopping", "f-pending"]);
        expected.extend(ids(&["t-recent", "t-cutoff"]));
        assert_eq!(stored_ids(s), expected);
    }

    async fn the_cap_keeps_the_newest_per_scope_and_kind(s: &SqliteStore) {
        let (a, b, c) = (
            home(),
            sc("acct-2", "cn-hangzhou"),
            sc("acct-1", "cn-shanghai"),
        );
        // Scope a: 7 command runs (two pairs created at the same millisecond, so the
        // invoke id breaks the tie as the listings do) and 5 file deliveries.
        for (n, created) in [1, 2, 3, 3, 4, 5, 5].iter().enumerate() {
            let id = format!("t-a{n}");
            put(s, &invocation(&id, &a, RECENT + created), &[S::Success]).await;
        }
        for n in 0..5 {
            let id = format!("f-a{n}");
            put(
                s,
                &file_delivery(&id, &a, RECENT + n),
                &[S::Success, S::Failed],
            )
            .await;
        }
        // Scope b, another account: 2 runs, under the cap.
        for n in 0..2 {
            let id = format!("t-b{n}");
            put(s, &invocation(&id, &b, RECENT + n), &[S::Success]).await;
        }
        // Scope c, the same account in another region: 5 runs.
        for n in 0..5 {
            let id = format!("t-c{n}");
            put(s, &invocation(&id, &c, RECENT + n), &[S::Aborted]).await;
        }
        let before_a = listed(s, &a, InvocationKind::Command).await.1;
        let before_files = listed(s, &a, InvocationKind::File).await.1;
        let before_b = listed(s, &b, InvocationKind::Command).await.1;
        let before_c = listed(s, &c, InvocationKind::Command).await.1;

        // Nothing is old: only the cap applies.
        let purged = purge_once(s, 0, 3, 100).await;
        assert_eq!(purged.invocations, 4 + 2 + 2);
        assert!(!purged.more);
        let (total, now_a) = listed(s, &a, InvocationKind::Command).await;
        assert_eq!((total, now_a.as_slice()), (3, &before_a[..3]));
        let (total, now_files) = listed(s, &a, InvocationKind::File).await;
        assert_eq!((total, now_files.as_slice()), (3, &before_files[..3]));
        assert_eq!(listed(s, &b, InvocationKind::Command).await, (2, before_b));
        let (total, now_c) = listed(s, &c, InvocationKind::Command).await;
        assert_eq!((total, now_c.as_slice()), (3, &before_c[..3]));
        // The ties were cut where the listing cuts them.
        assert_eq!(now_a, ["t-a5", "t-a6", "t-a4"]);

        assert_eq!(purge_once(s, 0, 3, 100).await, Purged::default());
        // A cap of one, then of none.
        assert_eq!(purge_once(s, 0, 1, 100).await.invocations, 2 + 2 + 1 + 2);
        assert_eq!(listed(s, &a, InvocationKind::Command).await.1, ["t-a5"]);
        assert_eq!(purge_once(s, 0, 0, 100).await.invocations, 4);
        assert!(stored_ids(s).is_empty());
    }

    async fn the_cap_keeps_live_records_beyond_it(s: &SqliteStore) {
        let h = home();
        put(s, &invocation("t-1", &h, RECENT + 1), &[S::Running]).await;
        put(s, &invocation("t-2", &h, RECENT + 2), &[S::Success]).await;
        put(s, &periodic("t-3", &h, RECENT + 3, false), &[S::Scheduled]).await;
        put(s, &invocation("t-4", &h, RECENT + 4), &[S::Success]).await;
        put(s, &invocation("t-5", &h, RECENT + 5), &[S::Success]).await;
        put(s, &invocation("t-6", &h, RECENT + 6), &[S::Success]).await;
        // The newest two stay; of the rest only what has ended goes.
        let purged = purge_once(s, 0, 2, 100).await;
        assert_eq!(purged.invocations, 2);
        assert_eq!(stored_ids(s), ids(&["t-1", "t-3", "t-5", "t-6"]));
        // Still over the cap, but what is left beyond it is live.
        assert_eq!(purge_once(s, 0, 2, 100).await, Purged::default());
        // Once t-1 has ended it goes; the newest two still stay.
        s.apply_task_event("t-1", "mi-0", finished(S::Failed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(purge_once(s, 0, 2, 100).await.invocations, 1);
        assert_eq!(stored_ids(s), ids(&["t-3", "t-5", "t-6"]));
    }

    async fn what_goes_with_an_invocation(s: &SqliteStore) {
        let h = home();
        let tag = |k: &str| Tag {
            key: k.into(),
            value: "v".into(),
        };
        let token = |t: &str| ClientToken {
            token: t.into(),
            digest: format!("digest-{t}"),
        };
        // A RunCommand without KeepCommand: its hidden command, a token, tags on both,
        // and whole output.
        let hidden = command("c-hidden", &h, false);
        let mut run = invocation("t-run", &h, OLD);
        run.command_id = hidden.command_id.clone();
        s.create_invocation(NewInvocation {
            command: Some(&hidden),
            invocation: &run,
            tasks: &tasks(&run, &[S::Success, S::Failed]),
            client_token: Some(&token("tok-run")),
            tags: &[tag("env"), tag("team")],
        })
        .await
        .unwrap();
        s.append_output("t-run", "mi-0", 0, b"first chunk ", 1 << 20)
            .await
            .unwrap();
        s.append_output("t-run", "mi-0", 12, b"second chunk", 1 << 20)
            .await
            .unwrap();
        lock(&s.inner.writer)
            .execute(
                "INSERT INTO task_runs (invoke_id, instance_id, run, status, dropped, output) \
                 VALUES ('t-run', 'mi-1', 1, 'Success', 0, x'')",
                [],
            )
            .unwrap();
        // A hidden command two invocations share (the second one recent).
        let shared = command("c-shared", &h, false);
        let mut old_shared = invocation("t-shared-old", &h, OLD);
        old_shared.command_id = shared.command_id.clone();
        s.insert_invocation(
            Some(&shared),
            &old_shared,
            &tasks(&old_shared, &[S::Success]),
        )
        .await
        .unwrap();
        let mut new_shared = invocation("t-shared-new", &h, RECENT);
        new_shared.command_id = shared.command_id.clone();
        put(s, &new_shared, &[S::Success]).await;
        // A saved command, with tags, and an old invocation of it.
        let saved = command("c-saved", &h, true);
        s.insert_command(&saved).await.unwrap();
        s.tag(
            &h,
            TagResource::Command,
            &["c-saved".into()],
            &[tag("keep")],
        )
        .await
        .unwrap();
        let of_saved = invocation("t-saved", &h, OLD);
        put(s, &of_saved, &[S::Success]).await;
        // A recent invocation with a token and tags: untouched.
        let recent = invocation("t-recent", &h, RECENT);
        s.create_invocation(NewInvocation {
            command: None,
            invocation: &recent,
            tasks: &tasks(&recent, &[S::Success]),
            client_token: Some(&token("tok-recent")),
            tags: &[tag("env")],
        })
        .await
        .unwrap();
        s.append_output("t-recent", "mi-0", 0, b"kept", 1 << 20)
            .await
            .unwrap();
        let invoke_times = s.get_command(&h, "c-saved").await.unwrap().unwrap();
        assert_consistent(s);

        let purged = purge_once(s, CUTOFF, NO_CAP, 100).await;
        assert_eq!(
            purged,
            Purged {
                invocations: 3,
                tasks: 4,
                commands: 1,
                more: false
            }
        );
        assert_eq!(
            stored_ids(s),
            ids(&["t-shared-new", "t-recent"]),
            "the old ones went"
        );
        // The run's tasks, output, token, tags and hidden command went with it.
        assert_eq!(s.get_task("t-run", "mi-0").await.unwrap(), None);
        assert_eq!(s.full_output("t-run", "mi-0").await.unwrap(), None);
        assert_eq!(count(s, "SELECT COUNT(*) FROM output_chunks"), 1);
        assert_eq!(s.find_client_token(&h, "tok-run").await.unwrap(), None);
        let ids_of = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let gone = s
            .tags_of(&h, TagResource::Invocation, &ids_of(&["t-run"]))
            .await
            .unwrap();
        assert!(gone.is_empty());
        assert_eq!(s.get_command(&h, "c-hidden").await.unwrap(), None);
        let gone = s
            .tags_of(&h, TagResource::Command, &ids_of(&["c-hidden"]))
            .await
            .unwrap();
        assert!(gone.is_empty());
        assert_eq!(count(s, "SELECT COUNT(*) FROM task_runs"), 0);
        // A hidden command another invocation still refers to stays; a saved one stays
        // as it was, tags and InvokeTimes included.
        assert!(s.get_command(&h, "c-shared").await.unwrap().is_some());
        assert_eq!(
            s.get_command(&h, "c-saved").await.unwrap(),
            Some(invoke_times)
        );
        let kept = s
            .tags_of(&h, TagResource::Command, &ids_of(&["c-saved"]))
            .await
            .unwrap();
        assert_eq!(kept["c-saved"], [tag("keep")]);
        // The recent one is whole.
        assert!(s
            .find_client_token(&h, "tok-recent")
            .await
            .unwrap()
            .is_some());
        let kept = s
            .tags_of(&h, TagResource::Invocation, &ids_of(&["t-recent"]))
            .await
            .unwrap();
        assert_eq!(kept["t-recent"], [tag("env")]);
        assert_eq!(
            s.full_output("t-recent", "mi-0").await.unwrap().as_deref(),
            Some(&b"kept"[..])
        );

        // When the last invocation of the shared hidden command goes, so does it.
        let purged = purge_once(s, CUTOFF, 0, 100).await;
        assert_eq!((purged.invocations, purged.commands), (2, 1));
        assert_eq!(s.get_command(&h, "c-shared").await.unwrap(), None);
        assert!(s.get_command(&h, "c-saved").await.unwrap().is_some());
        assert_eq!(count(s, "SELECT COUNT(*) FROM output_chunks"), 0);
        assert_eq!(count(s, "SELECT COUNT(*) FROM client_tokens"), 0);
    }

    async fn batches_are_bounded(s: &SqliteStore) {
        let (a, b) = (home(), sc("acct-2", "cn-hangzhou"));
        for n in 0..25 {
            let scope = if n % 2 == 0 { &a } else { &b };
            let id = format!("t-{n:02}");
            put(
                s,
                &invocation(&id, scope, OLD + n),
                &[S::Success, S::Failed],
            )
            .await;
        }
        put(s, &invocation("t-recent", &a, RECENT), &[S::Success]).await;
        assert_eq!(purge_once(s, CUTOFF, NO_CAP, 0).await, Purged::default());
        let mut calls = Vec::new();
        loop {
            let p = purge_once(s, CUTOFF, NO_CAP, 10).await;
            calls.push((p.invocations, p.tasks, p.more));
            if !p.more {
                break;
            }
        }
        assert_eq!(
            calls,
            [(10, 20, true), (10, 20, true), (5, 10, false)],
            "at most a batch per call, and `more` while a batch comes back full"
        );
        assert_eq!(stored_ids(s), ids(&["t-recent"]));
    }

    #[test]
    fn a_call_stays_within_its_task_budget() {
        let s = memory_store();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for n in 0..5 {
                let inv = invocation(&format!("t-{n}"), &home(), OLD + n);
                put(&s, &inv, &[S::Success, S::Success, S::Failed]).await;
            }
        });
        let call = |budget| {
            let p = purge(&mut lock(&s.inner.writer), CUTOFF, NO_CAP, 10, budget).unwrap();
            assert_consistent(&s);
            (p.invocations, p.tasks, p.more)
        };
        assert_eq!(call(7), (2, 6, true));
        // At least one invocation goes, however wide.
        assert_eq!(call(1), (1, 3, true));
        assert_eq!(call(100), (2, 6, false));
    }

    #[test]
    fn the_queries_walk_the_indexes() {
        let s = memory_store();
        let c = lock(&s.inner.writer);
        let plan = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> String {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt
                .query_map(args, |r| r.get::<_, String>(3))
                .unwrap()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>();
            rows.join("; ")
        };
        let scan = plan(SCAN, &[&"a", &"r", &"command"]);
        assert!(scan.contains("invocations_scope"), "{scan}");
        assert!(!scan.contains("TEMP B-TREE"), "{scan}");
        let orphan = plan(
            "SELECT 1 FROM invocations i WHERE i.account_id = ?2 AND i.region_id = ?3 \
             AND i.kind = ?4 AND i.command_id = ?1",
            &[&"c", &"a", &"r", &"command"],
        );
        assert!(orphan.contains("invocations_command"), "{orphan}");
        let tasks = plan(
            "SELECT kind, status, coarse, COUNT(*) FROM tasks WHERE invoke_id = ? \
             GROUP BY kind, status, coarse",
            &[&"t"],
        );
        assert!(
            tasks.contains("USING INDEX sqlite_autoindex_tasks"),
            "{tasks}"
        );
    }
}
