//! Tests of the SQLite store. Most checks run twice: against an in-memory store and
//! against a file-backed one (which reads through its pool of read-only connections).

use super::{lock, schema, SqliteStore};
use crate::*;
use oca_domain::status::{
    InstanceInvokeStatus, InvocationStatus as S, InvokeStatus, OverallStatus, StatusCounts,
};
use oca_domain::task::{TaskEvent, TaskState};
use oca_domain::task_error::TaskError;
use oca_domain::time::Millis;
use std::time::Duration;
use tempfile::TempDir;

// ---- fixtures (shared with the other store test modules) -----------------------------

pub(super) fn sc(account: &str, region: &str) -> Scope {
    Scope {
        account_id: account.into(),
        region_id: region.into(),
    }
}

pub(super) fn home() -> Scope {
    sc("acct-1", "cn-hangzhou")
}

/// Another account in the same region and the same account in another region.
fn outsiders() -> [Scope; 2] {
    [sc("acct-2", "cn-hangzhou"), sc("acct-1", "cn-shanghai")]
}

pub(super) fn memory_store() -> SqliteStore {
    SqliteStore::open_in_memory().unwrap()
}

pub(super) fn disk_store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("oca.db")).unwrap();
    (dir, store)
}

/// Runs each named `async fn(&SqliteStore)` against both kinds of store (the calling
/// module must have `memory_store` and `disk_store` in scope).
macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_memory() {
                super::$check(&super::memory_store()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_disk() {
                let (_dir, store) = super::disk_store();
                super::$check(&store).await
            }
        }
    )*};
}
pub(super) use on_both_stores;

on_both_stores!(
    access_keys,
    commands,
    invocations_and_scoping,
    invocation_listing,
    result_listing,
    task_events,
    stopping,
    dispatch_queries,
    whole_output,
    activations_and_instances,
    invocation_with_its_command,
    batches,
    client_tokens,
    tags,
    overdue,
    file_deliveries,
    repeating_runs,
    keyset_pages,
    resource_groups,
    commands_by_group_and_tag,
    group_filters_stay_on_an_index,
    activation_listing,
    disabling_and_deleting_activations,
    deregistration,
    renaming,
    agents_seen_in_a_batch,
);

async fn agents_seen_in_a_batch(s: &SqliteStore) {
    s.insert_activation(&activation("act-s", 2)).await.unwrap();
    s.register_instance(&instance("mi-s1", "act-s", 10))
        .await
        .unwrap();
    s.register_instance(&instance("mi-s2", "act-s", 10))
        .await
        .unwrap();
    let seen = |id: &str, at: Millis| WriteOp::Seen {
        instance_id: id.into(),
        at,
        agent_version: "9.9".into(),
        hostname: format!("host-{id}"),
        os_type: "linux".into(),
        task_isolation: "cgroup".into(),
    };
    let out = s
        .apply_batch(vec![
            seen("mi-s1", 50),
            seen("mi-s2", 60),
            seen("mi-gone", 70),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![WriteOutcome::Seen; 3],
        "a missing instance changes nothing"
    );
    for (id, at) in [("mi-s1", 50), ("mi-s2", 60)] {
        let i = s.get_instance(id).await.unwrap().unwrap();
        assert_eq!(i.last_heartbeat, Some(at));
        assert_eq!(
            (
                i.agent_version.as_str(),
                i.hostname.as_str(),
                i.task_isolation.as_str()
            ),
            ("9.9", format!("host-{id}").as_str(), "cgroup")
        );
    }
}

fn command(id: &str, scope: &Scope, created: Millis) -> CommandRecord {
    CommandRecord {
        command_id: id.into(),
        account_id: scope.account_id.clone(),
        region_id: scope.region_id.clone(),
        name: format!("name-{id}"),
        description: format!("about {id}"),
        command_type: "RunShellScript".into(),
        content: b"echo hi".to_vec(),
        working_dir: "/tmp".into(),
        timeout_secs: 60,
        enable_parameter: false,
        parameter_names: vec!["a".into(), "b".into()],
        created,
        invoke_times: 0,
        visible: true,
        resource_group_id: String::new(),
    }
}

fn invocation(id: &str, scope: &Scope, created: Millis) -> InvocationRecord {
    InvocationRecord {
        invoke_id: id.into(),
        account_id: scope.account_id.clone(),
        region_id: scope.region_id.clone(),
        command_id: "c-1".into(),
        command_name: "alpha".into(),
        command_description: "the first".into(),
        command_type: "RunShellScript".into(),
        command_content: b"echo {{a}}".to_vec(),
        enable_parameter: true,
        parameters: r#"{"a":"1"}"#.into(),
        working_dir: "/root".into(),
        username: "root".into(),
        timeout_secs: 60,
        repeat_mode: "Once".into(),
        timed: false,
        frequency: String::new(),
        termination_mode: "Process".into(),
        created,
        stopped_by_hand: false,
        counts: StatusCounts::default(),
        file: None,
        revision: 0,
        resource_group_id: String::new(),
    }
}

fn task(inv: &InvocationRecord, instance_id: &str) -> TaskRecord {
    TaskRecord {
        invoke_id: inv.invoke_id.clone(),
        instance_id: instance_id.into(),
        account_id: inv.account_id.clone(),
        region_id: inv.region_id.clone(),
        command_id: inv.command_id.clone(),
        username: inv.username.clone(),
        timed: inv.timed,
        created: inv.created,
        updated: inv.created,
        state: TaskState::pending(),
        output_len: 0,
        resource_group_id: inv.resource_group_id.clone(),
    }
}

/// Stores `inv` with a pending task per instance.
async fn put(s: &SqliteStore, inv: &InvocationRecord, instances: &[&str]) {
    let tasks: Vec<_> = instances.iter().map(|i| task(inv, i)).collect();
    s.insert_invocation(None, inv, &tasks).await.unwrap();
}

fn started(at: Millis) -> TaskEvent {
    TaskEvent::Started { at }
}

fn finished(status: S, output: &[u8]) -> TaskEvent {
    TaskEvent::Finished {
        status,
        exit_code: Some(if status == S::Success { 0 } else { 1 }),
        error: (status == S::Failed).then_some(TaskError::ExitCodeNonzero),
        start_time: Some(1),
        finish_time: 2,
        output: output.to_vec(),
        dropped: 0,
    }
}

fn aborted() -> TaskEvent {
    TaskEvent::Aborted {
        error: TaskError::ClientNotRunning,
        at: 3,
    }
}

fn all() -> Page {
    Page {
        offset: 0,
        limit: 1000,
    }
}

fn page(offset: u64, limit: u64) -> Page {
    Page { offset, limit }
}

async fn event(s: &SqliteStore, inv: &str, inst: &str, e: TaskEvent) -> TaskRecord {
    s.apply_task_event(inv, inst, e).await.unwrap().unwrap()
}

async fn inv_ids(
    s: &SqliteStore,
    scope: &Scope,
    f: InvocationFilter,
    p: Page,
) -> (u64, Vec<String>) {
    let l = s.list_invocations(scope, &f, p, false).await.unwrap();
    let ids = l
        .items
        .into_iter()
        .map(|v| v.invocation.invoke_id)
        .collect();
    (l.total, ids)
}

async fn result_keys(
    s: &SqliteStore,
    scope: &Scope,
    f: ResultFilter,
    p: Page,
) -> (u64, Vec<String>) {
    let l = s.list_results(scope, &f, p).await.unwrap();
    let keys = l
        .items
        .into_iter()
        .map(|t| format!("{}/{}", t.invoke_id, t.instance_id))
        .collect();
    (l.total, keys)
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The derived status columns as stored.
fn derived_columns(s: &SqliteStore, invoke_id: &str) -> (String, String, String) {
    lock(&s.inner.writer)
        .query_row(
            "SELECT invoke_status, overall_status, counts FROM invocations WHERE invoke_id = ?",
            [invoke_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

/// The invocation's counts, and its stored derived statuses, equal a recount of its
/// tasks.
async fn assert_counts_consistent(s: &SqliteStore, scope: &Scope, invoke_id: &str) {
    let inv = s.get_invocation(scope, invoke_id).await.unwrap().unwrap();
    let f = ResultFilter {
        kind: inv.kind(),
        invoke_id: Some(invoke_id.into()),
        ..Default::default()
    };
    let tasks = s.list_results(scope, &f, all()).await.unwrap().items;
    let recount: StatusCounts = tasks.iter().map(|t| t.state.status).collect();
    assert_eq!(inv.counts, recount, "counts of {invoke_id}");
    let mut fresh = inv.clone();
    fresh.counts = recount;
    let (invoke, overall, _) = derived_columns(s, invoke_id);
    assert_eq!(
        invoke,
        fresh.invoke_status().as_str(),
        "invoke_status of {invoke_id}"
    );
    assert_eq!(
        overall,
        fresh.overall_status().as_str(),
        "overall_status of {invoke_id}"
    );
    let filter = InvocationFilter {
        kind: inv.kind(),
        invoke_id: Some(invoke_id.into()),
        invoke_status: Some(fresh.invoke_status()),
        ..Default::default()
    };
    assert_eq!(inv_ids(s, scope, filter, all()).await.0, 1);
}

/// `scope_counts` equals a count of the rows, and each task's `coarse` column is the
/// coarse status of its status.
pub(super) fn assert_tallies_consistent(s: &SqliteStore) {
    type Tallies = std::collections::BTreeMap<(String, String, String), i64>;
    let c = lock(&s.inner.writer);
    let tallies = |sql: &str| -> Tallies {
        let mut stmt = c.prepare(sql).unwrap();
        let rows = stmt
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)))
            .unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    let stored = tallies("SELECT account_id, region_id, name, n FROM scope_counts WHERE n != 0");
    let counted = tallies(
        "SELECT account_id, region_id, \
           CASE kind WHEN 'file' THEN 'files' ELSE 'invocations' END, COUNT(*) \
           FROM invocations GROUP BY 1, 2, 3 \
         UNION ALL SELECT account_id, region_id, \
           CASE kind WHEN 'file' THEN 'files/' ELSE 'invocations/' END || invoke_status, \
           COUNT(*) FROM invocations GROUP BY 1, 2, 3 \
         UNION ALL SELECT account_id, region_id, \
           CASE kind WHEN 'file' THEN 'file-tasks' ELSE 'tasks' END, COUNT(*) \
           FROM tasks GROUP BY 1, 2, 3 \
         UNION ALL SELECT account_id, region_id, \
           CASE kind WHEN 'file' THEN 'file-tasks/' ELSE 'tasks/' END || coarse, COUNT(*) \
           FROM tasks GROUP BY 1, 2, 3",
    );
    assert_eq!(stored, counted, "scope_counts");
    assert!(
        stored.values().all(|n| *n > 0),
        "no tally below zero: {stored:?}"
    );
    let mut stmt = c
        .prepare("SELECT DISTINCT status, coarse FROM tasks")
        .unwrap();
    let pairs = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for pair in pairs {
        let (status, coarse) = pair.unwrap();
        assert_eq!(status.parse::<S>().unwrap().coarse().as_str(), coarse);
    }
}

// ---- access keys and commands -----------------------------------------------------------

async fn access_keys(s: &SqliteStore) {
    let k1 = AccessKeyRecord {
        access_key_id: "LTAI-1".into(),
        secret_sealed: vec![1, 2, 3],
        account_id: "acct-1".into(),
        enabled: true,
        created: 5,
    };
    let k2 = AccessKeyRecord {
        access_key_id: "LTAI-2".into(),
        account_id: "acct-2".into(),
        created: 6,
        ..k1.clone()
    };
    s.insert_access_key(&k1).await.unwrap();
    s.insert_access_key(&k2).await.unwrap();
    assert!(matches!(
        s.insert_access_key(&k1).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_access_key("LTAI-1").await.unwrap(), Some(k1.clone()));
    assert_eq!(s.get_access_key("nope").await.unwrap(), None);
    assert_eq!(
        s.list_access_keys(None).await.unwrap(),
        vec![k1.clone(), k2.clone()]
    );
    assert_eq!(
        s.list_access_keys(Some("acct-2")).await.unwrap(),
        vec![k2.clone()]
    );
    assert_eq!(s.list_access_keys(Some("acct-9")).await.unwrap(), vec![]);

    assert!(s.set_access_key_enabled("LTAI-1", false).await.unwrap());
    assert!(!s.get_access_key("LTAI-1").await.unwrap().unwrap().enabled);
    assert!(s.set_access_key_enabled("LTAI-1", true).await.unwrap());
    assert!(s.get_access_key("LTAI-1").await.unwrap().unwrap().enabled);
    assert!(!s.set_access_key_enabled("nope", true).await.unwrap());

    assert!(s.delete_access_key("LTAI-1").await.unwrap());
    assert!(!s.delete_access_key("LTAI-1").await.unwrap());
    assert_eq!(s.get_access_key("LTAI-1").await.unwrap(), None);
    assert_eq!(s.list_access_keys(None).await.unwrap(), vec![k2]);
}

async fn commands(s: &SqliteStore) {
    let h = home();
    let c1 = command("c-1", &h, 1);
    let c2 = command("c-2", &h, 2);
    let hidden = CommandRecord {
        visible: false,
        ..command("c-3", &h, 3)
    };
    let c4 = CommandRecord {
        command_type: "RunPowerShellScript".into(),
        ..command("c-4", &h, 4)
    };
    for c in [&c1, &c2, &hidden, &c4] {
        s.insert_command(c).await.unwrap();
    }
    for (i, o) in outsiders().iter().enumerate() {
        s.insert_command(&command(&format!("c-out-{i}"), o, 10))
            .await
            .unwrap();
    }
    assert!(matches!(
        s.insert_command(&c1).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(s.get_command(&h, "c-1").await.unwrap(), Some(c1.clone()));
    assert_eq!(
        s.get_command(&h, "c-3").await.unwrap(),
        Some(hidden.clone())
    );
    for o in outsiders() {
        assert_eq!(s.get_command(&o, "c-1").await.unwrap(), None);
        assert_eq!(s.get_command(&o, "c-3").await.unwrap(), None);
    }

    // Listing: visible only, newest first, paged.
    let ids = |l: Listing<CommandRecord>| {
        (
            l.total,
            l.items
                .into_iter()
                .map(|c| c.command_id)
                .collect::<Vec<_>>(),
        )
    };
    let none = CommandFilter::default();
    assert_eq!(
        ids(s.list_commands(&h, &none, all()).await.unwrap()),
        (3, strs(&["c-4", "c-2", "c-1"]))
    );
    assert_eq!(
        ids(s.list_commands(&h, &none, page(1, 1)).await.unwrap()),
        (3, strs(&["c-2"]))
    );
    assert_eq!(
        ids(s.list_commands(&h, &none, page(5, 1)).await.unwrap()),
        (3, vec![])
    );
    assert_eq!(
        ids(s.list_commands(&h, &none, page(0, 0)).await.unwrap()),
        (3, vec![])
    );
    for o in outsiders() {
        assert_eq!(s.list_commands(&o, &none, all()).await.unwrap().total, 1);
    }
    let f =
        |f: CommandFilter| async move { ids(s.list_commands(&home(), &f, all()).await.unwrap()) };
    let by_id = CommandFilter {
        command_id: Some("c-2".into()),
        ..Default::default()
    };
    assert_eq!(f(by_id).await, (1, strs(&["c-2"])));
    let hidden_id = CommandFilter {
        command_id: Some("c-3".into()),
        ..Default::default()
    };
    assert_eq!(f(hidden_id).await, (0, vec![]));
    let foreign = CommandFilter {
        command_id: Some("c-out-0".into()),
        ..Default::default()
    };
    assert_eq!(f(foreign).await, (0, vec![]));
    let by_name = CommandFilter {
        name: Some("name-c-1".into()),
        ..Default::default()
    };
    assert_eq!(f(by_name).await, (1, strs(&["c-1"])));
    let by_desc = CommandFilter {
        description: Some("about c-4".into()),
        ..Default::default()
    };
    assert_eq!(f(by_desc).await, (1, strs(&["c-4"])));
    let by_type = CommandFilter {
        command_type: Some("RunShellScript".into()),
        ..Default::default()
    };
    assert_eq!(f(by_type).await, (2, strs(&["c-2", "c-1"])));
    let both = CommandFilter {
        command_type: Some("RunShellScript".into()),
        name: Some("name-c-4".into()),
        ..Default::default()
    };
    assert_eq!(f(both).await, (0, vec![]));

    // Update: only in scope, only the mutable fields.
    let changed = CommandRecord {
        name: "renamed".into(),
        description: "new".into(),
        content: b"echo bye".to_vec(),
        working_dir: "/srv".into(),
        timeout_secs: 5,
        enable_parameter: true,
        parameter_names: vec!["x".into()],
        command_type: "RunBatScript".into(),
        created: 99,
        invoke_times: 42,
        visible: false,
        ..c1.clone()
    };
    for o in outsiders() {
        assert!(!s.update_command(&o, &changed).await.unwrap());
    }
    assert_eq!(s.get_command(&h, "c-1").await.unwrap(), Some(c1.clone()));
    assert!(s.update_command(&h, &changed).await.unwrap());
    let expected = CommandRecord {
        command_type: c1.command_type.clone(),
        created: c1.created,
        invoke_times: c1.invoke_times,
        visible: c1.visible,
        ..changed.clone()
    };
    assert_eq!(s.get_command(&h, "c-1").await.unwrap(), Some(expected));
    let missing = CommandRecord {
        command_id: "c-none".into(),
        ..changed
    };
    assert!(!s.update_command(&h, &missing).await.unwrap());

    // Delete: only in scope.
    for o in outsiders() {
        assert!(!s.delete_command(&o, "c-2").await.unwrap());
    }
    assert!(s.delete_command(&h, "c-2").await.unwrap());
    assert!(!s.delete_command(&h, "c-2").await.unwrap());
    assert_eq!(s.get_command(&h, "c-2").await.unwrap(), None);
    assert_eq!(s.list_commands(&h, &none, all()).await.unwrap().total, 2);
}

// ---- invocations ------------------------------------------------------------------------

async fn invocations_and_scoping(s: &SqliteStore) {
    let h = home();
    s.insert_command(&command("c-1", &h, 1)).await.unwrap();
    let inv = invocation("t-1", &h, 10);
    let mut lost = task(&inv, "i-1");
    lost.state = TaskState::failed_at_once(TaskError::ClientNotRunning, 10);
    // Given out of order, and with counts the store must ignore.
    let tasks = vec![task(&inv, "i-2"), lost];
    let bogus = InvocationRecord {
        counts: [S::Success].into_iter().collect(),
        ..inv.clone()
    };
    s.insert_invocation(None, &bogus, &tasks).await.unwrap();
    let got = s.get_invocation(&h, "t-1").await.unwrap().unwrap();
    let expected = InvocationRecord {
        counts: [S::Pending, S::Aborted].into_iter().collect(),
        ..inv.clone()
    };
    assert_eq!(got, expected);
    assert_eq!(got.invoke_status(), InvokeStatus::Running);
    assert_eq!(
        s.get_command(&h, "c-1")
            .await
            .unwrap()
            .unwrap()
            .invoke_times,
        1
    );
    assert_counts_consistent(s, &h, "t-1").await;

    let mut t = s.get_task("t-1", "i-1").await.unwrap().unwrap();
    assert_eq!(t.state.status, S::Aborted);
    assert_eq!(t.state.error, Some(TaskError::ClientNotRunning));
    t.state = tasks[1].state.clone();
    assert_eq!(t, tasks[1]);
    assert_eq!(s.get_task("t-1", "i-9").await.unwrap(), None);
    assert_eq!(s.get_task("t-9", "i-1").await.unwrap(), None);

    // Duplicates conflict and change nothing.
    let again = s.insert_invocation(None, &inv, &[task(&inv, "i-3")]).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let dup_task = invocation("t-dup", &h, 11);
    let r = s
        .insert_invocation(
            None,
            &dup_task,
            &[task(&dup_task, "i-1"), task(&dup_task, "i-1")],
        )
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(s.get_invocation(&h, "t-dup").await.unwrap(), None);
    assert_eq!(
        s.get_command(&h, "c-1")
            .await
            .unwrap()
            .unwrap()
            .invoke_times,
        1
    );

    // A task from elsewhere is refused.
    let mixed = invocation("t-mixed", &h, 12);
    let mut stray = task(&mixed, "i-1");
    stray.account_id = "acct-2".into();
    assert!(s.insert_invocation(None, &mixed, &[stray]).await.is_err());
    assert_eq!(s.get_invocation(&h, "t-mixed").await.unwrap(), None);

    // The command may be gone; an invocation of no instances is fine too.
    let orphan = InvocationRecord {
        command_id: "c-gone".into(),
        ..invocation("t-2", &h, 20)
    };
    s.insert_invocation(None, &orphan, &[]).await.unwrap();
    let got = s.get_invocation(&h, "t-2").await.unwrap().unwrap();
    assert_eq!(got.counts, StatusCounts::default());

    // Outside the scope the invocation does not exist.
    for o in outsiders() {
        assert_eq!(s.get_invocation(&o, "t-1").await.unwrap(), None);
        assert_eq!(
            s.stop_invocation(&o, "t-1", None, 50).await.unwrap(),
            vec![]
        );
        assert_eq!(
            inv_ids(s, &o, InvocationFilter::default(), all()).await,
            (0, vec![])
        );
        let f = InvocationFilter {
            instance_id: Some("i-2".into()),
            ..Default::default()
        };
        assert_eq!(inv_ids(s, &o, f, all()).await, (0, vec![]));
        assert_eq!(
            result_keys(s, &o, ResultFilter::default(), all()).await,
            (0, vec![])
        );
        let f = ResultFilter {
            invoke_id: Some("t-1".into()),
            ..Default::default()
        };
        assert_eq!(result_keys(s, &o, f, all()).await, (0, vec![]));
    }
    let got = s.get_invocation(&h, "t-1").await.unwrap().unwrap();
    assert!(!got.stopped_by_hand, "an outsider's stop changed nothing");
    assert_eq!(
        s.get_task("t-1", "i-2")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        S::Pending
    );
    assert_tallies_consistent(s);
}

/// t-d (300), t-b (200), t-c (200), t-a (100), plus an outsider on i-1.
async fn seed_listing(s: &SqliteStore) {
    let h = home();
    let a = invocation("t-a", &h, 100);
    put(s, &a, &["i-2", "i-1"]).await;
    let b = InvocationRecord {
        command_id: "c-2".into(),
        command_name: "beta".into(),
        command_type: "RunPowerShellScript".into(),
        timed: true,
        repeat_mode: "Period".into(),
        frequency: "0 */5 * * * *".into(),
        ..invocation("t-b", &h, 200)
    };
    put(s, &b, &["i-2"]).await;
    put(s, &invocation("t-c", &h, 200), &["i-3"]).await;
    put(s, &invocation("t-d", &h, 300), &["i-1"]).await;
    event(s, "t-d", "i-1", started(1)).await;
    event(s, "t-d", "i-1", finished(S::Success, b"hello")).await;
    event(s, "t-c", "i-3", aborted()).await;
    for (n, o) in outsiders().iter().enumerate() {
        put(s, &invocation(&format!("t-out-{n}"), o, 400), &["i-1"]).await;
    }
}

async fn invocation_listing(s: &SqliteStore) {
    seed_listing(s).await;
    let h = home();
    let none = InvocationFilter::default;
    assert_eq!(
        inv_ids(s, &h, none(), all()).await,
        (4, strs(&["t-d", "t-b", "t-c", "t-a"]))
    );
    assert_eq!(
        inv_ids(s, &h, none(), page(1, 2)).await,
        (4, strs(&["t-b", "t-c"]))
    );
    assert_eq!(
        inv_ids(s, &h, none(), page(3, 5)).await,
        (4, strs(&["t-a"]))
    );
    assert_eq!(inv_ids(s, &h, none(), page(4, 5)).await, (4, vec![]));
    assert_eq!(inv_ids(s, &h, none(), page(0, 0)).await, (4, vec![]));
    assert_eq!(
        inv_ids(s, &h, none(), page(u64::MAX, u64::MAX)).await,
        (4, vec![])
    );
    assert_eq!(inv_ids(s, &h, none(), page(1, u64::MAX)).await.1.len(), 3);

    let cases: Vec<(InvocationFilter, &[&str])> = vec![
        (
            InvocationFilter {
                invoke_id: Some("t-c".into()),
                ..none()
            },
            &["t-c"],
        ),
        (
            InvocationFilter {
                invoke_id: Some("t-out-0".into()),
                ..none()
            },
            &[],
        ),
        (
            InvocationFilter {
                command_id: Some("c-1".into()),
                ..none()
            },
            &["t-d", "t-c", "t-a"],
        ),
        (
            InvocationFilter {
                command_name: Some("beta".into()),
                ..none()
            },
            &["t-b"],
        ),
        (
            InvocationFilter {
                command_type: Some("RunPowerShellScript".into()),
                ..none()
            },
            &["t-b"],
        ),
        (
            InvocationFilter {
                timed: Some(true),
                ..none()
            },
            &["t-b"],
        ),
        (
            InvocationFilter {
                timed: Some(false),
                ..none()
            },
            &["t-d", "t-c", "t-a"],
        ),
        (
            InvocationFilter {
                repeat_mode: Some("Period".into()),
                ..none()
            },
            &["t-b"],
        ),
        (
            InvocationFilter {
                repeat_mode: Some("Once".into()),
                ..none()
            },
            &["t-d", "t-c", "t-a"],
        ),
        (
            InvocationFilter {
                instance_id: Some("i-1".into()),
                ..none()
            },
            &["t-d", "t-a"],
        ),
        (
            InvocationFilter {
                instance_id: Some("i-2".into()),
                ..none()
            },
            &["t-b", "t-a"],
        ),
        (
            InvocationFilter {
                instance_id: Some("i-9".into()),
                ..none()
            },
            &[],
        ),
        (
            InvocationFilter {
                invoke_status: Some(InvokeStatus::Finished),
                ..none()
            },
            &["t-d"],
        ),
        (
            InvocationFilter {
                invoke_status: Some(InvokeStatus::Failed),
                ..none()
            },
            &["t-c"],
        ),
        (
            InvocationFilter {
                invoke_status: Some(InvokeStatus::Running),
                ..none()
            },
            &["t-b", "t-a"],
        ),
        (
            InvocationFilter {
                invoke_status: Some(InvokeStatus::Stopped),
                ..none()
            },
            &[],
        ),
        (
            InvocationFilter {
                command_id: Some("c-1".into()),
                instance_id: Some("i-1".into()),
                ..none()
            },
            &["t-d", "t-a"],
        ),
        (
            InvocationFilter {
                command_id: Some("c-1".into()),
                invoke_status: Some(InvokeStatus::Running),
                ..none()
            },
            &["t-a"],
        ),
        (
            InvocationFilter {
                instance_id: Some("i-2".into()),
                timed: Some(true),
                ..none()
            },
            &["t-b"],
        ),
    ];
    for (f, expected) in cases {
        let got = inv_ids(s, &h, f.clone(), all()).await;
        assert_eq!(got, (expected.len() as u64, strs(expected)), "{f:?}");
    }
    let by_instance = InvocationFilter {
        instance_id: Some("i-1".into()),
        ..none()
    };
    assert_eq!(
        inv_ids(s, &h, by_instance, page(1, 1)).await,
        (2, strs(&["t-a"]))
    );

    // Tasks come with each invocation, by instance id; output only when asked.
    let l = s.list_invocations(&h, &none(), all(), true).await.unwrap();
    let a = &l.items[3];
    assert_eq!(
        a.invocation,
        s.get_invocation(&h, "t-a").await.unwrap().unwrap()
    );
    let instances: Vec<_> = a.tasks.iter().map(|t| t.instance_id.as_str()).collect();
    assert_eq!(instances, ["i-1", "i-2"]);
    let d = &l.items[0];
    assert_eq!(d.tasks.len(), 1);
    assert_eq!(d.tasks[0].state.output, b"hello");
    assert_eq!(d.tasks[0], s.get_task("t-d", "i-1").await.unwrap().unwrap());
    let l = s.list_invocations(&h, &none(), all(), false).await.unwrap();
    let mut bare = l.items[0].tasks[0].clone();
    assert!(bare.state.output.is_empty());
    bare.state.output = b"hello".to_vec();
    assert_eq!(bare, d.tasks[0]);
    for (n, o) in outsiders().iter().enumerate() {
        assert_eq!(
            inv_ids(s, o, none(), all()).await,
            (1, vec![format!("t-out-{n}")])
        );
    }
    assert_tallies_consistent(s);
}

async fn result_listing(s: &SqliteStore) {
    seed_listing(s).await;
    let h = home();
    let none = ResultFilter::default;
    let everything = ["t-d/i-1", "t-b/i-2", "t-c/i-3", "t-a/i-1", "t-a/i-2"];
    assert_eq!(
        result_keys(s, &h, none(), all()).await,
        (5, strs(&everything))
    );
    assert_eq!(
        result_keys(s, &h, none(), page(2, 2)).await,
        (5, strs(&everything[2..4]))
    );
    assert_eq!(result_keys(s, &h, none(), page(5, 2)).await, (5, vec![]));
    assert_eq!(result_keys(s, &h, none(), page(0, 0)).await, (5, vec![]));
    let cases: Vec<(ResultFilter, &[&str])> = vec![
        (
            ResultFilter {
                invoke_id: Some("t-a".into()),
                ..none()
            },
            &["t-a/i-1", "t-a/i-2"],
        ),
        (
            ResultFilter {
                invoke_id: Some("t-out-0".into()),
                ..none()
            },
            &[],
        ),
        (
            ResultFilter {
                instance_id: Some("i-2".into()),
                ..none()
            },
            &["t-b/i-2", "t-a/i-2"],
        ),
        (
            ResultFilter {
                instance_id: Some("i-1".into()),
                ..none()
            },
            &["t-d/i-1", "t-a/i-1"],
        ),
        (
            ResultFilter {
                command_id: Some("c-2".into()),
                ..none()
            },
            &["t-b/i-2"],
        ),
        (
            ResultFilter {
                record_status: Some(InstanceInvokeStatus::Finished),
                ..none()
            },
            &["t-d/i-1"],
        ),
        (
            ResultFilter {
                record_status: Some(InstanceInvokeStatus::Failed),
                ..none()
            },
            &["t-c/i-3"],
        ),
        (
            ResultFilter {
                record_status: Some(InstanceInvokeStatus::Running),
                ..none()
            },
            &["t-b/i-2", "t-a/i-1", "t-a/i-2"],
        ),
        (
            ResultFilter {
                record_status: Some(InstanceInvokeStatus::Stopped),
                ..none()
            },
            &[],
        ),
        (
            ResultFilter {
                instance_id: Some("i-1".into()),
                record_status: Some(InstanceInvokeStatus::Running),
                ..none()
            },
            &["t-a/i-1"],
        ),
        (
            ResultFilter {
                kind: InvocationKind::Command,
                invoke_id: Some("t-a".into()),
                instance_id: Some("i-2".into()),
                command_id: Some("c-1".into()),
                record_status: Some(InstanceInvokeStatus::Running),
                resource_group_id: None,
                after: None,
            },
            &["t-a/i-2"],
        ),
    ];
    for (f, expected) in cases {
        let got = result_keys(s, &h, f.clone(), all()).await;
        assert_eq!(got, (expected.len() as u64, strs(expected)), "{f:?}");
    }
    // Results carry the output view.
    let l = s.list_results(&h, &none(), page(0, 1)).await.unwrap();
    assert_eq!(l.items[0].state.output, b"hello");
    assert_eq!(l.items[0], s.get_task("t-d", "i-1").await.unwrap().unwrap());
    // A coarse status matches all its fine statuses.
    event(s, "t-a", "i-1", started(5)).await;
    let running = ResultFilter {
        record_status: Some(InstanceInvokeStatus::Running),
        ..none()
    };
    assert_eq!(result_keys(s, &h, running, all()).await.0, 3);
    event(s, "t-a", "i-1", finished(S::Failed, b"")).await;
    let finished = ResultFilter {
        record_status: Some(InstanceInvokeStatus::Finished),
        ..none()
    };
    assert_eq!(
        result_keys(s, &h, finished, all()).await,
        (2, strs(&["t-d/i-1", "t-a/i-1"]))
    );
    for (n, o) in outsiders().iter().enumerate() {
        assert_eq!(
            result_keys(s, o, none(), all()).await,
            (1, vec![format!("t-out-{n}/i-1")])
        );
    }
    assert_tallies_consistent(s);
}

async fn task_events(s: &SqliteStore) {
    let h = home();
    put(s, &invocation("t-1", &h, 10), &["i-1", "i-2"]).await;
    assert_eq!(derived_columns(s, "t-1").0, "Running");
    assert_eq!(derived_columns(s, "t-1").1, "Pending");

    let t = event(s, "t-1", "i-1", started(11)).await;
    assert_eq!((t.state.status, t.state.start_time), (S::Running, Some(11)));
    assert_eq!(t, s.get_task("t-1", "i-1").await.unwrap().unwrap());
    let inv = s.get_invocation(&h, "t-1").await.unwrap().unwrap();
    assert_eq!(inv.counts, [S::Running, S::Pending].into_iter().collect());
    assert_eq!(inv.overall_status(), OverallStatus::Running);
    assert_counts_consistent(s, &h, "t-1").await;

    // An event that changes nothing returns the task as it is.
    let same = event(s, "t-1", "i-1", started(12)).await;
    assert_eq!(same, t);

    // No such task.
    assert_eq!(
        s.apply_task_event("t-1", "i-9", started(1)).await.unwrap(),
        None
    );
    assert_eq!(
        s.apply_task_event("t-9", "i-1", started(1)).await.unwrap(),
        None
    );

    let t = event(s, "t-1", "i-1", finished(S::Success, b"out")).await;
    assert_eq!((t.state.status, t.state.repeats), (S::Success, 1));
    assert_eq!(t.state.output, b"out");
    assert_eq!(s.get_task("t-1", "i-1").await.unwrap().unwrap(), t);
    assert_counts_consistent(s, &h, "t-1").await;

    let t2 = event(s, "t-1", "i-2", aborted()).await;
    assert_eq!(
        (t2.state.status, t2.state.error),
        (S::Aborted, Some(TaskError::ClientNotRunning))
    );
    let inv = s.get_invocation(&h, "t-1").await.unwrap().unwrap();
    assert_eq!(inv.invoke_status(), InvokeStatus::PartialFailed);
    assert_eq!(inv.overall_status(), OverallStatus::PartialFailed);
    assert_eq!(derived_columns(s, "t-1").0, "PartialFailed");
    assert_eq!(derived_columns(s, "t-1").1, "PartialFailed");
    assert_counts_consistent(s, &h, "t-1").await;

    // Ended runs never change.
    let after = event(s, "t-1", "i-1", finished(S::Failed, b"late")).await;
    assert_eq!(after, t);
    assert_eq!(s.get_invocation(&h, "t-1").await.unwrap().unwrap(), inv);
    assert_tallies_consistent(s);
}

async fn stopping(s: &SqliteStore) {
    let h = home();
    put(s, &invocation("t-1", &h, 10), &["i-1", "i-2", "i-3", "i-4"]).await;
    event(s, "t-1", "i-2", started(11)).await;
    event(s, "t-1", "i-3", started(11)).await;
    event(s, "t-1", "i-3", finished(S::Success, b"")).await;

    // Only the selected instances, unknown ones ignored, ended ones unchanged.
    let only = strs(&["i-1", "i-3", "i-unknown"]);
    let changed = s.stop_invocation(&h, "t-1", Some(&only), 50).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].instance_id, "i-1");
    assert_eq!(changed[0].state.status, S::Cancelled);
    assert_eq!(changed[0].state.stop_time, Some(50));
    assert_eq!(changed[0], s.get_task("t-1", "i-1").await.unwrap().unwrap());
    assert!(
        s.get_invocation(&h, "t-1")
            .await
            .unwrap()
            .unwrap()
            .stopped_by_hand
    );
    assert_eq!(
        s.get_task("t-1", "i-2")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        S::Running
    );
    assert_eq!(
        s.get_task("t-1", "i-4")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        S::Pending
    );
    assert_counts_consistent(s, &h, "t-1").await;

    // All the rest.
    let changed = s.stop_invocation(&h, "t-1", None, 60).await.unwrap();
    let got: Vec<_> = changed
        .iter()
        .map(|t| (t.instance_id.as_str(), t.state.status))
        .collect();
    assert_eq!(got, [("i-2", S::Stopping), ("i-4", S::Cancelled)]);
    let inv = s.get_invocation(&h, "t-1").await.unwrap().unwrap();
    assert_eq!(
        inv.counts,
        [S::Cancelled, S::Stopping, S::Success, S::Cancelled]
            .into_iter()
            .collect()
    );
    assert_eq!(inv.invoke_status(), InvokeStatus::Running);
    assert_eq!(inv.overall_status(), OverallStatus::Stopping);
    assert_counts_consistent(s, &h, "t-1").await;
    assert_eq!(
        s.stop_invocation(&h, "t-1", None, 70).await.unwrap(),
        vec![]
    );

    let t = event(s, "t-1", "i-2", finished(S::Terminated, b"")).await;
    assert_eq!(
        (t.state.status, t.state.stop_time),
        (S::Terminated, Some(60))
    );
    let inv = s.get_invocation(&h, "t-1").await.unwrap().unwrap();
    assert_eq!(inv.invoke_status(), InvokeStatus::Finished);
    assert_eq!(inv.overall_status(), OverallStatus::Success);
    assert_counts_consistent(s, &h, "t-1").await;

    // A periodic invocation is Running until stopped by hand and every run has ended.
    let periodic = InvocationRecord {
        timed: true,
        repeat_mode: "Period".into(),
        ..invocation("t-2", &h, 20)
    };
    put(s, &periodic, &["i-1"]).await;
    event(s, "t-2", "i-1", started(21)).await;
    let changed = s.stop_invocation(&h, "t-2", None, 30).await.unwrap();
    assert_eq!(changed[0].state.status, S::Stopping);
    assert_eq!(derived_columns(s, "t-2").0, "Running");
    event(s, "t-2", "i-1", finished(S::Terminated, b"")).await;
    assert_eq!(derived_columns(s, "t-2").0, "Stopped");
    let stopped = InvocationFilter {
        invoke_status: Some(InvokeStatus::Stopped),
        ..Default::default()
    };
    assert_eq!(inv_ids(s, &h, stopped, all()).await, (1, strs(&["t-2"])));
    assert_counts_consistent(s, &h, "t-2").await;

    // An invocation that does not exist.
    assert_eq!(
        s.stop_invocation(&h, "t-9", None, 30).await.unwrap(),
        vec![]
    );
    assert_tallies_consistent(s);
}

async fn dispatch_queries(s: &SqliteStore) {
    let h = home();
    put(s, &invocation("t-1", &h, 10), &["i-1", "i-2"]).await;
    put(s, &invocation("t-2", &h, 20), &["i-1", "i-3"]).await;
    event(s, "t-2", "i-1", started(21)).await;
    let inv3 = invocation("t-3", &h, 30);
    let mut lost = task(&inv3, "i-1");
    lost.state = TaskState::failed_at_once(TaskError::ClientNotRunning, 30);
    s.insert_invocation(None, &inv3, &[lost]).await.unwrap();
    let o = &outsiders()[0];
    put(s, &invocation("t-out", o, 40), &["i-1"]).await;

    let live = [S::Pending, S::Running, S::Stopping];
    let items = s.tasks_for_instance("i-1", &live).await.unwrap();
    let keys: Vec<_> = items
        .iter()
        .map(|d| (d.task.invoke_id.as_str(), d.task.state.status))
        .collect();
    // Not scoped: the instance's tasks wherever they are (ids are unique).
    assert_eq!(
        keys,
        [
            ("t-1", S::Pending),
            ("t-2", S::Running),
            ("t-out", S::Pending)
        ]
    );
    assert_eq!(
        items[1].invocation,
        s.get_invocation(&h, "t-2").await.unwrap().unwrap()
    );
    assert_eq!(
        items[1].task,
        s.get_task("t-2", "i-1").await.unwrap().unwrap()
    );
    let pending = s.tasks_for_instance("i-1", &[S::Pending]).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(
        s.tasks_for_instance("i-1", &[S::Aborted]).await.unwrap()[0]
            .task
            .invoke_id,
        "t-3"
    );
    assert_eq!(s.tasks_for_instance("i-1", &[]).await.unwrap(), vec![]);
    assert_eq!(s.tasks_for_instance("i-9", &live).await.unwrap(), vec![]);

    let keys = |v: Vec<TaskRecord>| {
        v.into_iter()
            .map(|t| format!("{}/{}", t.invoke_id, t.instance_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(s.pending_tasks_before(15, 10).await.unwrap()),
        ["t-1/i-1", "t-1/i-2"]
    );
    assert_eq!(
        keys(s.pending_tasks_before(10, 10).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        keys(s.pending_tasks_before(25, 10).await.unwrap()),
        ["t-1/i-1", "t-1/i-2", "t-2/i-3"]
    );
    assert_eq!(s.pending_tasks_before(25, 1).await.unwrap().len(), 1);
    assert_eq!(s.pending_tasks_before(100, 10).await.unwrap().len(), 4);
    assert_tallies_consistent(s);
}

async fn whole_output(s: &SqliteStore) {
    let h = home();
    put(s, &invocation("t-1", &h, 10), &["i-1", "i-2"]).await;
    let cap = 10;
    let append = |offset: u64, data: &'static [u8]| async move {
        let a = s
            .append_output("t-1", "i-1", offset, data, cap)
            .await
            .unwrap();
        (a.stored_len, a.gap)
    };
    let full = || async { s.full_output("t-1", "i-1").await.unwrap().unwrap() };

    assert_eq!(full().await, b"");
    assert_eq!(append(0, b"abc").await, (3, false));
    assert_eq!(append(3, b"d").await, (4, false));
    assert_eq!(full().await, b"abcd");
    // Replays, whole or overlapping.
    assert_eq!(append(0, b"abc").await, (4, false));
    assert_eq!(append(2, b"cdef").await, (6, false));
    assert_eq!(full().await, b"abcdef");
    assert_eq!(append(6, b"").await, (6, false));
    // A gap stores nothing.
    assert_eq!(append(8, b"xy").await, (6, true));
    assert_eq!(full().await, b"abcdef");
    // The cap.
    assert_eq!(append(6, b"ghijklmn").await, (10, false));
    assert_eq!(full().await, b"abcdefghij");
    assert_eq!(append(10, b"zz").await, (10, false));
    assert_eq!(
        append(12, b"zz").await,
        (10, false),
        "past the cap there is nothing to resend"
    );
    assert_eq!(full().await, b"abcdefghij");
    // Any range of it, read from the chunks it overlaps (stored as abc|d|ef|ghij).
    let whole = b"abcdefghij";
    for offset in 0..12u64 {
        for max in [0u64, 1, 2, 3, 5, 10, u64::MAX] {
            let (len, data) = s
                .output_range("t-1", "i-1", offset, max)
                .await
                .unwrap()
                .unwrap();
            let from = (offset as usize).min(10);
            let to = (offset.saturating_add(max) as usize).min(10);
            assert_eq!(len, 10);
            assert_eq!(
                data,
                &whole[from..to.max(from)],
                "offset {offset}, max {max}"
            );
        }
    }
    assert_eq!(s.output_range("t-9", "i-1", 0, 5).await.unwrap(), None);
    let t = s.get_task("t-1", "i-1").await.unwrap().unwrap();
    assert_eq!(t.output_len, 10);
    assert!(
        t.state.output.is_empty(),
        "the view is the agent's, not the chunks"
    );

    // Runs are separate; a missing run stores nothing.
    assert_eq!(s.full_output("t-1", "i-2").await.unwrap(), Some(vec![]));
    let a = s.append_output("t-1", "i-2", 0, b"12345", 3).await.unwrap();
    assert_eq!((a.stored_len, a.gap), (3, false));
    assert_eq!(
        s.full_output("t-1", "i-2").await.unwrap(),
        Some(b"123".to_vec())
    );
    let a = s.append_output("t-9", "i-1", 0, b"x", cap).await.unwrap();
    assert_eq!((a.stored_len, a.gap), (0, false));
    assert_eq!(s.full_output("t-9", "i-1").await.unwrap(), None);

    // Output still arriving after the run ended is kept.
    event(s, "t-1", "i-2", finished(S::Success, b"123")).await;
    let a = s.append_output("t-1", "i-2", 3, b"4", 100).await.unwrap();
    assert_eq!(a.stored_len, 4);
    assert_eq!(
        s.get_task("t-1", "i-2").await.unwrap().unwrap().output_len,
        4
    );
}

fn activation(id: &str, count: i64) -> ActivationRecord {
    let h = home();
    ActivationRecord {
        activation_id: id.into(),
        account_id: h.account_id,
        region_id: h.region_id,
        code_hash: "ab".repeat(32),
        instance_name: "web".into(),
        description: "test".into(),
        instance_count: count,
        registered_count: 0,
        deregistered_count: 0,
        ip_address_range: "0.0.0.0/0".into(),
        created: 1,
        expires: 1000,
        disabled: false,
        resource_group_id: String::new(),
    }
}

fn instance(id: &str, activation_id: &str, registered: Millis) -> InstanceRecord {
    let h = home();
    InstanceRecord {
        instance_id: id.into(),
        account_id: h.account_id,
        region_id: h.region_id,
        name: "web".into(),
        hostname: format!("host-{id}"),
        os_type: "linux".into(),
        agent_version: "1.0".into(),
        machine_id: format!("m-{id}"),
        activation_id: activation_id.into(),
        token_hash: "cd".repeat(32),
        registered,
        last_heartbeat: None,
        last_invoked: None,
        invocation_count: 0,
        resource_group_id: String::new(),
        task_isolation: String::new(),
    }
}

fn is_conflict(r: Result<()>, words: &str) -> bool {
    matches!(r, Err(StoreError::Conflict(m)) if m.contains(words))
}

async fn activations_and_instances(s: &SqliteStore) {
    let h = home();
    s.insert_activation(&activation("act-1", 2)).await.unwrap();
    assert!(matches!(
        s.insert_activation(&activation("act-1", 2)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_activation("act-1").await.unwrap(),
        Some(activation("act-1", 2))
    );
    assert_eq!(s.get_activation("act-9").await.unwrap(), None);

    let i1 = instance("mi-1", "act-1", 10);
    s.register_instance(&i1).await.unwrap();
    assert_eq!(
        s.get_activation("act-1")
            .await
            .unwrap()
            .unwrap()
            .registered_count,
        1
    );
    assert_eq!(s.get_instance("mi-1").await.unwrap(), Some(i1.clone()));
    // The same instance twice: refused, and the use is not counted.
    assert!(matches!(
        s.register_instance(&i1).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_activation("act-1")
            .await
            .unwrap()
            .unwrap()
            .registered_count,
        1
    );
    let i2 = InstanceRecord {
        os_type: "windows".into(),
        ..instance("mi-2", "act-1", 20)
    };
    s.register_instance(&i2).await.unwrap();
    assert!(is_conflict(
        s.register_instance(&instance("mi-3", "act-1", 30)).await,
        "no registrations left"
    ));
    assert_eq!(
        s.get_activation("act-1")
            .await
            .unwrap()
            .unwrap()
            .registered_count,
        2
    );
    assert_eq!(s.get_instance("mi-3").await.unwrap(), None);

    let disabled = ActivationRecord {
        disabled: true,
        ..activation("act-2", 5)
    };
    s.insert_activation(&disabled).await.unwrap();
    assert!(is_conflict(
        s.register_instance(&instance("mi-4", "act-2", 30)).await,
        "disabled"
    ));
    s.insert_activation(&activation("act-3", 5)).await.unwrap();
    assert!(is_conflict(
        s.register_instance(&instance("mi-5", "act-3", 1000)).await,
        "expired"
    ));
    s.register_instance(&instance("mi-5", "act-3", 999))
        .await
        .unwrap();
    assert!(is_conflict(
        s.register_instance(&instance("mi-6", "act-9", 30)).await,
        "does not exist"
    ));

    // Lookups.
    let ids = strs(&["mi-2", "mi-x", "mi-1", "mi-2"]);
    assert_eq!(
        s.get_instances(&h, &ids).await.unwrap(),
        vec![i2.clone(), i1.clone()]
    );
    for o in outsiders() {
        assert_eq!(s.get_instances(&o, &ids).await.unwrap(), vec![]);
        assert_eq!(
            s.list_instances(&o, &InstanceFilter::default(), all())
                .await
                .unwrap()
                .total,
            0
        );
    }
    let list = |f: InstanceFilter, p: Page| async move {
        let l = s.list_instances(&home(), &f, p).await.unwrap();
        (
            l.total,
            l.items
                .into_iter()
                .map(|i| i.instance_id)
                .collect::<Vec<_>>(),
        )
    };
    let none = InstanceFilter::default;
    assert_eq!(
        list(none(), all()).await,
        (3, strs(&["mi-5", "mi-2", "mi-1"]))
    );
    assert_eq!(list(none(), page(1, 1)).await, (3, strs(&["mi-2"])));
    let by_ids = InstanceFilter {
        instance_ids: Some(strs(&["mi-1", "mi-5", "mi-x"])),
        ..none()
    };
    assert_eq!(list(by_ids, all()).await, (2, strs(&["mi-5", "mi-1"])));
    let by_os = InstanceFilter {
        os_type: Some("windows".into()),
        ..none()
    };
    assert_eq!(list(by_os, all()).await, (1, strs(&["mi-2"])));
    let no_ids = InstanceFilter {
        instance_ids: Some(vec![]),
        ..none()
    };
    assert_eq!(list(no_ids, all()).await, (0, vec![]));

    // Heartbeats and invocation counts.
    s.touch_instance("mi-1", 500, "2.0", "new-host", "linux", "cgroup")
        .await
        .unwrap();
    s.touch_instance("mi-x", 500, "2.0", "new-host", "linux", "cgroup")
        .await
        .unwrap();
    let got = s.get_instance("mi-1").await.unwrap().unwrap();
    assert_eq!(
        (
            got.last_heartbeat,
            got.agent_version.as_str(),
            got.hostname.as_str(),
            got.task_isolation.as_str()
        ),
        (Some(500), "2.0", "new-host", "cgroup")
    );
    // Invocations count on their instances (each instance once per invocation).
    let inv_a = invocation("t-n1", &h, 600);
    let tasks_a: Vec<_> = ["mi-1", "mi-2", "mi-x"]
        .iter()
        .map(|i| task(&inv_a, i))
        .collect();
    s.insert_invocation(None, &inv_a, &tasks_a).await.unwrap();
    let inv_b = invocation("t-n2", &h, 700);
    s.insert_invocation(None, &inv_b, &[task(&inv_b, "mi-1")])
        .await
        .unwrap();
    let got = s.get_instance("mi-1").await.unwrap().unwrap();
    assert_eq!((got.invocation_count, got.last_invoked), (2, Some(700)));
    let got = s.get_instance("mi-2").await.unwrap().unwrap();
    assert_eq!((got.invocation_count, got.last_invoked), (1, Some(600)));
    assert_eq!(
        s.get_instance("mi-5")
            .await
            .unwrap()
            .unwrap()
            .invocation_count,
        0
    );
}

// ---- concurrency and durability ---------------------------------------------------------

async fn race_registrations(stores: &[SqliteStore], attempts: usize, allowed: i64) {
    stores[0]
        .insert_activation(&activation("act-race", allowed))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for n in 0..attempts {
        let s = stores[n % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            s.register_instance(&instance(&format!("mi-{n}"), "act-race", 10))
                .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, refused), (allowed, attempts as i64 - allowed));
    for s in stores {
        let a = s.get_activation("act-race").await.unwrap().unwrap();
        assert_eq!(a.registered_count, allowed);
        let l = s
            .list_instances(&home(), &InstanceFilter::default(), all())
            .await
            .unwrap();
        assert_eq!(l.total, allowed as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_respect_the_instance_count() {
    race_registrations(&[memory_store()], 40, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_through_two_connections_to_one_file() {
    // Two stores on one file are two writers: SQLite's own lock serializes them.
    let (dir, a) = disk_store();
    let b = SqliteStore::open(&dir.path().join("oca.db")).unwrap();
    race_registrations(&[a, b], 40, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_proceed_while_a_write_is_in_progress() {
    let (_dir, s) = disk_store();
    let h = home();
    put(&s, &invocation("t-1", &h, 10), &["i-1"]).await;
    // Hold the writer in the middle of a transaction that has written a row.
    let writer = s.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut conn = lock(&writer.inner.writer);
        let tx = conn.transaction().unwrap();
        tx.execute("UPDATE invocations SET command_name = 'changed'", [])
            .unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        drop(tx); // rolled back
    });
    locked_rx.recv().unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), s.get_invocation(&h, "t-1"))
        .await
        .expect("a read does not wait for the writer")
        .unwrap()
        .unwrap();
    assert_eq!(read.command_name, "alpha", "and sees only committed data");
    let listed = tokio::time::timeout(
        Duration::from_secs(5),
        s.list_invocations(&h, &InvocationFilter::default(), all(), true),
    )
    .await
    .expect("listing does not wait either")
    .unwrap();
    assert_eq!(listed.total, 1);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
}

#[tokio::test]
async fn data_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oca.db");
    let h = home();
    {
        let s = SqliteStore::open(&path).unwrap();
        s.insert_command(&command("c-1", &h, 1)).await.unwrap();
        put(&s, &invocation("t-1", &h, 10), &["i-1", "i-2"]).await;
        event(&s, "t-1", "i-1", started(11)).await;
        s.append_output("t-1", "i-1", 0, b"partial", 100)
            .await
            .unwrap();
        s.insert_activation(&activation("act-1", 3)).await.unwrap();
        s.register_instance(&instance("mi-1", "act-1", 5))
            .await
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let inv = s.get_invocation(&h, "t-1").await.unwrap().unwrap();
    assert_eq!(inv.counts, [S::Running, S::Pending].into_iter().collect());
    assert_eq!(
        s.get_command(&h, "c-1")
            .await
            .unwrap()
            .unwrap()
            .invoke_times,
        1
    );
    assert_eq!(
        s.full_output("t-1", "i-1").await.unwrap().unwrap(),
        b"partial"
    );
    assert_eq!(
        s.get_task("t-1", "i-1").await.unwrap().unwrap().output_len,
        7
    );
    assert_eq!(
        s.get_activation("act-1")
            .await
            .unwrap()
            .unwrap()
            .registered_count,
        1
    );
    assert!(s.get_instance("mi-1").await.unwrap().is_some());
    assert_counts_consistent(&s, &h, "t-1").await;
    assert_tallies_consistent(&s);
    let version: i64 = lock(&s.inner.writer)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, schema::VERSION);
    let (mode, sync): (String, i64) = {
        let c = lock(&s.inner.writer);
        (
            c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap(),
            c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap(),
        )
    };
    assert_eq!(
        (mode.as_str(), sync),
        ("wal", 2),
        "WAL with synchronous=FULL"
    );
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash() {
    // What a `kill -9` leaves: the database and its WAL as they are while the store is
    // open (nothing checkpointed, no clean close). Copy them aside and open the copy.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oca.db");
    let h = home();
    let s = SqliteStore::open(&path).unwrap();
    put(&s, &invocation("t-1", &h, 10), &["i-1"]).await;
    event(&s, "t-1", "i-1", started(11)).await;
    s.append_output("t-1", "i-1", 0, b"so far", 100)
        .await
        .unwrap();
    let crashed = tempfile::tempdir().unwrap();
    for name in ["oca.db", "oca.db-wal"] {
        std::fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
    }
    let wal = std::fs::metadata(crashed.path().join("oca.db-wal"))
        .unwrap()
        .len();
    assert!(wal > 0, "the writes are in the WAL, not yet checkpointed");
    let recovered = SqliteStore::open(&crashed.path().join("oca.db")).unwrap();
    let t = recovered.get_task("t-1", "i-1").await.unwrap().unwrap();
    assert_eq!(t.state.status, S::Running);
    assert_eq!(
        recovered.full_output("t-1", "i-1").await.unwrap().unwrap(),
        b"so far"
    );
    assert_counts_consistent(&recovered, &h, "t-1").await;
    drop(s);
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oca.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::Backend(m)) => assert!(m.contains("newer"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn the_pending_index_literal_is_the_status_name() {
    assert_eq!(S::Pending.as_str(), "Pending");
}

// ---- property: counts always equal a recount ----------------------------------------

mod counts_property {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Event {
            inv: usize,
            instance: usize,
            event: TaskEvent,
        },
        Stop {
            inv: usize,
            only: Option<Vec<usize>>,
            at: Millis,
        },
    }

    fn any_event() -> impl Strategy<Value = TaskEvent> {
        prop_oneof![
            (0i64..100).prop_map(|at| TaskEvent::Started { at }),
            (
                prop::sample::select(S::ALL.to_vec()),
                -1i64..3,
                any::<bool>()
            )
                .prop_map(|(status, code, out)| TaskEvent::Finished {
                    status,
                    exit_code: Some(code),
                    error: (code != 0).then_some(TaskError::ExitCodeNonzero),
                    start_time: Some(5),
                    finish_time: 50,
                    output: if out { b"out".to_vec() } else { vec![] },
                    dropped: 0,
                }),
            (0i64..100).prop_map(|at| TaskEvent::StopRequested { at }),
            (prop::sample::select(TaskError::ALL.to_vec()), 0i64..100)
                .prop_map(|(error, at)| TaskEvent::Aborted { error, at }),
        ]
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..3, 0usize..6, any_event())
                .prop_map(|(inv, instance, event)| Op::Event { inv, instance, event }),
            1 => (0usize..3, prop::option::of(prop::collection::vec(0usize..6, 0..4)), 0i64..100)
                .prop_map(|(inv, only, at)| Op::Stop { inv, only, at }),
        ]
    }

    /// Per invocation: periodic or not, and the initial state of each instance's task
    /// (`Some(error)` = ended at once).
    fn any_setup() -> impl Strategy<Value = Vec<(bool, Vec<Option<TaskError>>)>> {
        let task = prop::option::weighted(0.2, prop::sample::select(TaskError::ALL.to_vec()));
        prop::collection::vec((any::<bool>(), prop::collection::vec(task, 1..5)), 3)
    }

    fn inv_id(n: usize) -> String {
        format!("t-{n}")
    }

    fn inst_id(n: usize) -> String {
        format!("i-{n}")
    }

    async fn run(setup: Vec<(bool, Vec<Option<TaskError>>)>, ops: Vec<Op>) {
        let s = memory_store();
        let h = home();
        let mut model: BTreeMap<(usize, usize), TaskState> = BTreeMap::new();
        for (n, (timed, tasks)) in setup.iter().enumerate() {
            let inv = InvocationRecord {
                timed: *timed,
                ..invocation(&inv_id(n), &h, n as i64)
            };
            let records: Vec<_> = tasks
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    let mut t = task(&inv, &inst_id(k));
                    if let Some(e) = e {
                        t.state = TaskState::failed_at_once(*e, 1);
                    }
                    model.insert((n, k), t.state.clone());
                    t
                })
                .collect();
            s.insert_invocation(None, &inv, &records).await.unwrap();
        }
        for op in ops {
            match op {
                Op::Event {
                    inv,
                    instance,
                    event,
                } => {
                    let got = s
                        .apply_task_event(&inv_id(inv), &inst_id(instance), event.clone())
                        .await
                        .unwrap();
                    match model.get_mut(&(inv, instance)) {
                        None => assert_eq!(got, None),
                        Some(state) => {
                            state.apply(event);
                            assert_eq!(&got.unwrap().state, state);
                        }
                    }
                }
                Op::Stop { inv, only, at } => {
                    let ids = only
                        .as_ref()
                        .map(|v| v.iter().map(|k| inst_id(*k)).collect::<Vec<_>>());
                    let changed = s
                        .stop_invocation(&h, &inv_id(inv), ids.as_deref(), at)
                        .await
                        .unwrap();
                    let mut expected = Vec::new();
                    for ((n, k), state) in model.iter_mut() {
                        let selected = only.as_ref().is_none_or(|v| v.contains(k));
                        if *n == inv && selected && state.apply(TaskEvent::StopRequested { at }) {
                            expected.push((inst_id(*k), state.clone()));
                        }
                    }
                    let got: Vec<_> = changed
                        .into_iter()
                        .map(|t| (t.instance_id, t.state))
                        .collect();
                    assert_eq!(got, expected);
                }
            }
        }
        for (n, _) in setup.iter().enumerate() {
            assert_counts_consistent(&s, &h, &inv_id(n)).await;
            let expected: StatusCounts = model
                .iter()
                .filter(|((i, _), _)| *i == n)
                .map(|(_, st)| st.status)
                .collect();
            let inv = s.get_invocation(&h, &inv_id(n)).await.unwrap().unwrap();
            assert_eq!(inv.counts, expected);
        }
        assert_tallies_consistent(&s);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn counts_and_derived_statuses_equal_a_recount(
            setup in any_setup(),
            ops in prop::collection::vec(any_op(), 0..40),
        ) {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run(setup, ops));
        }
    }
}

// ---- timings (not assertions) -----------------------------------------------------------

/// `cargo test -p oca-store --release -- --ignored --nocapture timings`
/// (`OCA_BENCH_INVOCATIONS` sets how many invocations to list over; 20,000 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn timings() {
    use std::time::Instant;
    let (_dir, s) = disk_store();
    let h = home();
    let n: usize = std::env::var("OCA_BENCH_INVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);

    let big = invocation("t-big", &h, 0);
    let tasks: Vec<_> = (0..10_000)
        .map(|k| task(&big, &format!("i-{k:05}")))
        .collect();
    let t0 = Instant::now();
    s.insert_invocation(None, &big, &tasks).await.unwrap();
    println!("insert_invocation with 10,000 tasks: {:?}", t0.elapsed());
    let t0 = Instant::now();
    let changed = s.stop_invocation(&h, "t-big", None, 5).await.unwrap();
    println!(
        "stop_invocation of 10,000 tasks: {:?} ({} changed)",
        t0.elapsed(),
        changed.len()
    );

    // Seed `n` invocations of 2 tasks each (fsync off for the seeding only).
    let t0 = Instant::now();
    {
        let mut c = lock(&s.inner.writer);
        c.pragma_update(None, "synchronous", "OFF").unwrap();
        for k in 0..n {
            let inv = InvocationRecord {
                command_id: format!("c-{}", k % 50),
                timed: k % 10 == 0,
                ..invocation(&format!("t-{k:06}"), &h, 1_000 + k as i64)
            };
            let mut a = task(&inv, &format!("i-{:03}", k % 200));
            let b = task(&inv, &format!("i-{:03}", (k + 1) % 200));
            if k % 3 == 0 {
                a.state = TaskState::failed_at_once(TaskError::ClientNotRunning, 1);
                a.state.output = vec![b'x'; 2000];
            }
            super::invocations::insert_invocation(&mut c, None, &inv, &[a, b]).unwrap();
        }
        c.pragma_update(None, "synchronous", "FULL").unwrap();
    }
    println!("seeded {n} invocations in {:?}", t0.elapsed());

    let mut durable = Vec::new();
    for k in 0..100 {
        let inv = invocation(&format!("t-durable-{k}"), &h, 10_000_000 + k);
        let t0 = Instant::now();
        put(&s, &inv, &["i-001"]).await;
        durable.push(t0.elapsed());
    }
    report("insert_invocation (1 task, fsync)", durable);
    let mut events = Vec::new();
    for k in 0..100 {
        let t0 = Instant::now();
        event(&s, &format!("t-durable-{k}"), "i-001", started(1)).await;
        events.push(t0.elapsed());
    }
    report("apply_task_event (fsync)", events);

    let f = InvocationFilter::default;
    let r = ResultFilter::default;
    macro_rules! time {
        ($label:expr, $call:expr) => {{
            let mut v = Vec::new();
            for _ in 0..200 {
                let t0 = Instant::now();
                let l = $call.await.unwrap();
                v.push(t0.elapsed());
                std::hint::black_box(l);
            }
            report($label, v);
        }};
    }
    time!(
        "list_invocations page 1 (size 10)",
        s.list_invocations(&h, &f(), page(0, 10), false)
    );
    time!(
        "list_invocations page 1 (size 50, output)",
        s.list_invocations(&h, &f(), page(0, 50), true)
    );
    time!(
        "list_invocations page at offset 10,000",
        s.list_invocations(&h, &f(), page(10_000, 10), false)
    );
    time!(
        "list_invocations by invoke_status=Failed",
        s.list_invocations(
            &h,
            &InvocationFilter {
                invoke_status: Some(InvokeStatus::Failed),
                ..f()
            },
            page(0, 10),
            false
        )
    );
    time!(
        "list_invocations by instance",
        s.list_invocations(
            &h,
            &InvocationFilter {
                instance_id: Some("i-007".into()),
                ..f()
            },
            page(0, 10),
            false
        )
    );
    time!(
        "list_invocations by command",
        s.list_invocations(
            &h,
            &InvocationFilter {
                command_id: Some("c-7".into()),
                ..f()
            },
            page(0, 10),
            false
        )
    );
    time!(
        "list_invocations by timed=false (count scans)",
        s.list_invocations(
            &h,
            &InvocationFilter {
                timed: Some(false),
                ..f()
            },
            page(0, 10),
            false
        )
    );
    time!(
        "list_results page 1 (size 10)",
        s.list_results(&h, &r(), page(0, 10))
    );
    time!(
        "list_results by command",
        s.list_results(
            &h,
            &ResultFilter {
                command_id: Some("c-7".into()),
                ..r()
            },
            page(0, 10)
        )
    );
    time!(
        "list_results page 1 (size 50)",
        s.list_results(&h, &r(), page(0, 50))
    );
    time!(
        "list_results page at offset 10,000",
        s.list_results(&h, &r(), page(10_000, 10))
    );
    time!(
        "list_results by record_status=Failed",
        s.list_results(
            &h,
            &ResultFilter {
                record_status: Some(InstanceInvokeStatus::Failed),
                ..r()
            },
            page(0, 10)
        )
    );
    time!(
        "list_results by instance",
        s.list_results(
            &h,
            &ResultFilter {
                instance_id: Some("i-007".into()),
                ..r()
            },
            page(0, 10)
        )
    );
    time!(
        "list_results of one invocation",
        s.list_results(
            &h,
            &ResultFilter {
                invoke_id: Some("t-000123".into()),
                ..r()
            },
            page(0, 10)
        )
    );
    time!(
        "list_results of the 10,000-task invocation, page 2",
        s.list_results(
            &h,
            &ResultFilter {
                invoke_id: Some("t-big".into()),
                ..r()
            },
            page(10, 10)
        )
    );
    time!(
        "tasks_for_instance",
        s.tasks_for_instance("i-007", &[S::Pending, S::Running, S::Stopping])
    );
    time!(
        "pending_tasks_before",
        s.pending_tasks_before(i64::MAX, 1000)
    );
}

fn report(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    println!("{label:55} p50 {:>10.3?}  p99 {:>10.3?}", at(0.5), at(0.99));
}

// ---- one transaction per invocation, one per batch -------------------------------------

async fn invocation_with_its_command(s: &SqliteStore) {
    let h = home();
    let mut cmd = command("c-run", &h, 5);
    cmd.visible = false;
    let mut inv = invocation("t-run", &h, 5);
    inv.command_id = cmd.command_id.clone();
    let tasks = vec![task(&inv, "mi-a"), task(&inv, "mi-b")];
    s.insert_invocation(Some(&cmd), &inv, &tasks).await.unwrap();
    let stored = s.get_command(&h, "c-run").await.unwrap().unwrap();
    assert_eq!(
        stored.invoke_times, 1,
        "the invocation counts on its new command"
    );
    assert!(!stored.visible);
    assert!(s.get_invocation(&h, "t-run").await.unwrap().is_some());
    // A failed insert leaves nothing behind: not the command either.
    let mut dup = invocation("t-run", &h, 6);
    let cmd2 = command("c-other", &h, 6);
    dup.command_id = cmd2.command_id.clone();
    assert!(s
        .insert_invocation(Some(&cmd2), &dup, &[task(&dup, "mi-a")])
        .await
        .is_err());
    assert_eq!(s.get_command(&h, "c-other").await.unwrap(), None);
}

async fn batches(s: &SqliteStore) {
    let h = home();
    let inv = invocation("t-b", &h, 1);
    put(s, &inv, &["i-1", "i-2"]).await;
    let ev = |inst: &str, event: TaskEvent| WriteOp::Event {
        invoke_id: "t-b".into(),
        instance_id: inst.into(),
        event,
    };
    let out = |inst: &str, offset: u64, data: &[u8]| WriteOp::Output {
        invoke_id: "t-b".into(),
        instance_id: inst.into(),
        offset,
        data: data.to_vec(),
        cap: 100,
    };
    let finished = TaskEvent::Finished {
        status: S::Success,
        exit_code: Some(0),
        error: None,
        start_time: Some(2),
        finish_time: 3,
        output: b"hi".to_vec(),
        dropped: 0,
    };
    let outcomes = s
        .apply_batch(vec![
            ev("i-1", started(2)),
            out("i-1", 0, b"hi"),
            out("i-1", 5, b"gap"),
            ev("i-1", finished.clone()),
            ev("i-2", started(2)),
            ev("i-9", started(2)),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 6);
    let status = |o: &WriteOutcome| match o {
        WriteOutcome::Task(t) => t.as_ref().map(|t| t.state.status),
        WriteOutcome::Output(_) | WriteOutcome::Seen => None,
    };
    assert_eq!(status(&outcomes[0]), Some(S::Running));
    assert_eq!(
        outcomes[1],
        WriteOutcome::Output(OutputAppend {
            stored_len: 2,
            gap: false
        })
    );
    assert_eq!(
        outcomes[2],
        WriteOutcome::Output(OutputAppend {
            stored_len: 2,
            gap: true
        })
    );
    assert_eq!(status(&outcomes[3]), Some(S::Success));
    assert_eq!(status(&outcomes[4]), Some(S::Running));
    assert_eq!(outcomes[5], WriteOutcome::Task(None), "an unknown task");
    // The counts moved with the batch.
    let stored = s.get_invocation(&h, "t-b").await.unwrap().unwrap();
    assert_eq!(stored.counts.get(S::Success), 1);
    assert_eq!(stored.counts.get(S::Running), 1);
    assert_eq!(s.full_output("t-b", "i-1").await.unwrap().unwrap(), b"hi");
}

async fn client_tokens(s: &SqliteStore) {
    let h = home();
    let token = ClientToken {
        token: "tok-1".into(),
        digest: "d1".into(),
    };
    let first = invocation("t-c1", &h, 1);
    let made = s
        .create_invocation(NewInvocation {
            command: None,
            invocation: &first,
            tasks: &[task(&first, "i-1")],
            client_token: Some(&token),
            tags: &[],
        })
        .await
        .unwrap();
    assert_eq!(made, None, "a new token makes the invocation");
    let second = invocation("t-c2", &h, 2);
    let again = s
        .create_invocation(NewInvocation {
            command: None,
            invocation: &second,
            tasks: &[task(&second, "i-1")],
            client_token: Some(&token),
            tags: &[],
        })
        .await
        .unwrap();
    let prior = again.expect("the token was used");
    assert_eq!(
        (prior.invoke_id.as_str(), prior.digest.as_str()),
        ("t-c1", "d1")
    );
    assert_eq!(
        s.get_invocation(&h, "t-c2").await.unwrap(),
        None,
        "nothing stored twice"
    );
    assert_eq!(s.find_client_token(&h, "tok-1").await.unwrap(), Some(prior));
    // Tokens belong to their scope.
    let other = Scope {
        account_id: "someone-else".into(),
        region_id: h.region_id.clone(),
    };
    assert_eq!(s.find_client_token(&other, "tok-1").await.unwrap(), None);
    let theirs = invocation("t-c3", &other, 3);
    let made = s
        .create_invocation(NewInvocation {
            command: None,
            invocation: &theirs,
            tasks: &[task(&theirs, "i-1")],
            client_token: Some(&token),
            tags: &[],
        })
        .await
        .unwrap();
    assert_eq!(made, None);
}

async fn tags(s: &SqliteStore) {
    let h = home();
    let t = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    let ids = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let kind = TagResource::Instance;
    s.tag(&h, kind, &ids(&["mi-1", "mi-2"]), &[t("env", "prod")])
        .await
        .unwrap();
    s.tag(
        &h,
        kind,
        &ids(&["mi-3"]),
        &[t("env", "dev"), t("team", "db")],
    )
    .await
    .unwrap();
    s.tag(&h, kind, &ids(&["mi-2"]), &[t("team", "db")])
        .await
        .unwrap();
    assert_eq!(
        s.tagged(&h, kind, &[t("env", "prod")]).await.unwrap(),
        ids(&["mi-1", "mi-2"])
    );
    assert_eq!(
        s.tagged(&h, kind, &[t("env", "prod"), t("team", "db")])
            .await
            .unwrap(),
        ids(&["mi-2"]),
        "every tag must match"
    );
    assert_eq!(
        s.tagged(&h, kind, &[t("env", "")]).await.unwrap(),
        ids(&["mi-1", "mi-2", "mi-3"]),
        "an empty value matches any"
    );
    assert!(s
        .tagged(&h, TagResource::Command, &[t("env", "prod")])
        .await
        .unwrap()
        .is_empty());
    // A new value replaces the old one.
    s.tag(&h, kind, &ids(&["mi-1"]), &[t("env", "staging")])
        .await
        .unwrap();
    let of = s
        .tags_of(&h, kind, &ids(&["mi-1", "mi-2", "mi-9"]))
        .await
        .unwrap();
    assert_eq!(of["mi-1"], vec![t("env", "staging")]);
    assert_eq!(of["mi-2"], vec![t("env", "prod"), t("team", "db")]);
    assert!(!of.contains_key("mi-9"));
    // Untag one key, then all.
    s.untag(&h, kind, &ids(&["mi-2"]), Some(&ids(&["team"])))
        .await
        .unwrap();
    assert_eq!(
        s.tags_of(&h, kind, &ids(&["mi-2"])).await.unwrap()["mi-2"],
        vec![t("env", "prod")]
    );
    s.untag(&h, kind, &ids(&["mi-3"]), None).await.unwrap();
    assert!(s
        .tags_of(&h, kind, &ids(&["mi-3"]))
        .await
        .unwrap()
        .is_empty());
    // Another scope sees none of it.
    let other = Scope {
        account_id: "other".into(),
        region_id: h.region_id.clone(),
    };
    assert!(s
        .tagged(&other, kind, &[t("env", "")])
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .tags_of(&other, kind, &ids(&["mi-1"]))
        .await
        .unwrap()
        .is_empty());
}

async fn overdue(s: &SqliteStore) {
    let h = home();
    let inv = invocation("t-o", &h, 1); // timeout 60 s
    put(s, &inv, &["i-run", "i-pend", "i-done", "i-stop"]).await;
    for i in ["i-run", "i-done", "i-stop"] {
        s.apply_task_event("t-o", i, started(1_000)).await.unwrap();
    }
    s.stop_invocation(&h, "t-o", Some(&["i-stop".to_string()]), 2_000)
        .await
        .unwrap();
    s.apply_task_event(
        "t-o",
        "i-done",
        TaskEvent::Finished {
            status: S::Success,
            exit_code: Some(0),
            error: None,
            start_time: Some(1_000),
            finish_time: 3_000,
            output: vec![],
            dropped: 0,
        },
    )
    .await
    .unwrap();
    let ids = |v: Vec<TaskRecord>| v.into_iter().map(|t| t.instance_id).collect::<Vec<_>>();
    // Deadline: start 1 s + timeout 60 s + grace 5 s = 66 s.
    assert!(s.overdue_tasks(66_000, 5_000, 10).await.unwrap().is_empty());
    let mut late = ids(s.overdue_tasks(66_001, 5_000, 10).await.unwrap());
    late.sort();
    assert_eq!(late, vec!["i-run", "i-stop"], "started and live only");
}

async fn result_total(s: &SqliteStore, scope: &Scope, f: ResultFilter) -> u64 {
    s.list_results(scope, &f, all()).await.unwrap().total
}

/// A file delivery is an invocation of its own kind: stored with its spec, listed,
/// filtered and counted apart from command runs, and not counted as a run of its
/// instances.
async fn file_deliveries(s: &SqliteStore) {
    let h = home();
    s.insert_activation(&activation("a-1", 5)).await.unwrap();
    s.register_instance(&instance("i-1", "a-1", 1))
        .await
        .unwrap();
    let run = invocation("t-run", &h, 10);
    put(s, &run, &["i-1", "i-2"]).await;
    let spec = FileSpec {
        target_dir: "/etc/app".into(),
        content_type: "PlainText".into(),
        owner: "nobody".into(),
        group: "nogroup".into(),
        mode: "0600".into(),
        overwrite: true,
    };
    let file = InvocationRecord {
        command_id: String::new(),
        command_name: "app.conf".into(),
        command_content: b"key=value".to_vec(),
        file: Some(spec.clone()),
        ..invocation("f-send", &h, 20)
    };
    put(s, &file, &["i-1"]).await;
    let got = s.get_invocation(&h, "f-send").await.unwrap().unwrap();
    assert_eq!(got.file, Some(spec));
    assert_eq!(got.kind(), InvocationKind::File);
    assert_eq!(got.command_content, b"key=value");

    // Each kind lists only its own, with and without an instance.
    let files = |f: InvocationFilter| InvocationFilter {
        kind: InvocationKind::File,
        ..f
    };
    let none = InvocationFilter::default;
    assert_eq!(inv_ids(s, &h, none(), all()).await, (1, strs(&["t-run"])));
    assert_eq!(
        inv_ids(s, &h, files(none()), all()).await,
        (1, strs(&["f-send"]))
    );
    let on_i1 = || InvocationFilter {
        instance_id: Some("i-1".into()),
        ..Default::default()
    };
    assert_eq!(inv_ids(s, &h, on_i1(), all()).await, (1, strs(&["t-run"])));
    assert_eq!(
        inv_ids(s, &h, files(on_i1()), all()).await,
        (1, strs(&["f-send"]))
    );
    let named = || InvocationFilter {
        command_name: Some("app.conf".into()),
        ..Default::default()
    };
    assert_eq!(inv_ids(s, &h, named(), all()).await.0, 0);
    assert_eq!(inv_ids(s, &h, files(named()), all()).await.0, 1);
    // An invoke id of the other kind is not found by either listing.
    let by_id = |id: &str| InvocationFilter {
        invoke_id: Some(id.into()),
        ..Default::default()
    };
    assert_eq!(inv_ids(s, &h, by_id("f-send"), all()).await.0, 0);
    assert_eq!(inv_ids(s, &h, files(by_id("t-run")), all()).await.0, 0);
    let results = |kind, invoke_id: Option<&str>| ResultFilter {
        kind,
        invoke_id: invoke_id.map(str::to_string),
        ..Default::default()
    };
    assert_eq!(
        result_total(s, &h, results(InvocationKind::Command, None)).await,
        2
    );
    assert_eq!(
        result_total(s, &h, results(InvocationKind::File, None)).await,
        1
    );
    assert_eq!(
        result_total(s, &h, results(InvocationKind::Command, Some("f-send"))).await,
        0
    );
    assert_eq!(
        result_total(s, &h, results(InvocationKind::File, Some("f-send"))).await,
        1
    );

    // The overall status filters, and follows the task.
    let overall = |st| {
        files(InvocationFilter {
            overall_status: Some(st),
            ..Default::default()
        })
    };
    assert_eq!(
        inv_ids(s, &h, overall(OverallStatus::Pending), all())
            .await
            .0,
        1
    );
    event(s, "f-send", "i-1", started(21)).await;
    event(s, "f-send", "i-1", finished(S::Success, b"")).await;
    assert_eq!(
        inv_ids(s, &h, overall(OverallStatus::Pending), all())
            .await
            .0,
        0
    );
    assert_eq!(
        inv_ids(s, &h, overall(OverallStatus::Success), all()).await,
        (1, strs(&["f-send"]))
    );
    assert_counts_consistent(s, &h, "f-send").await;
    assert_counts_consistent(s, &h, "t-run").await;
    assert_tallies_consistent(s);

    // Tag filters: every tag must be carried; an empty value matches any value.
    let tag = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    let ids = strs(&["f-send"]);
    s.tag(
        &h,
        TagResource::Invocation,
        &ids,
        &[tag("env", "prod"), tag("team", "ops")],
    )
    .await
    .unwrap();
    let tagged = |tags: Vec<Tag>| {
        files(InvocationFilter {
            tags,
            ..Default::default()
        })
    };
    for (tags, n) in [
        (vec![tag("env", "prod")], 1),
        (vec![tag("env", "")], 1),
        (vec![tag("env", "prod"), tag("team", "ops")], 1),
        (vec![tag("env", "dev")], 0),
        (vec![tag("env", "prod"), tag("team", "dev")], 0),
        (vec![tag("owner", "")], 0),
    ] {
        assert_eq!(
            inv_ids(s, &h, tagged(tags.clone()), all()).await.0,
            n,
            "{tags:?}"
        );
    }
    for other in outsiders() {
        assert_eq!(
            inv_ids(s, &other, tagged(vec![tag("env", "prod")]), all())
                .await
                .0,
            0
        );
    }

    // Sending a file is not a run of the instance's: only t-run counts.
    let i = s.get_instance("i-1").await.unwrap().unwrap();
    assert_eq!((i.invocation_count, i.last_invoked), (1, Some(10)));
}

/// A repeating task keeps one history row per run (replays ignored), shows Scheduled
/// between runs, and ModifyInvocationAttribute bumps the revision.
async fn repeating_runs(s: &SqliteStore) {
    let h = home();
    let inv = InvocationRecord {
        repeat_mode: "Period".into(),
        timed: true,
        frequency: "0 */5 * * * ?".into(),
        ..invocation("t-rep", &h, 10)
    };
    put(s, &inv, &["i-1", "i-2"]).await;
    let ran = |run: u64, more: bool, status: S| TaskEvent::RunFinished {
        run,
        more,
        status,
        exit_code: Some(if status == S::Success { 0 } else { 1 }),
        error: (status == S::Failed).then_some(TaskError::ExitCodeNonzero),
        start_time: Some(run as i64 * 100),
        finish_time: run as i64 * 100 + 5,
        output: format!("run {run}").into_bytes(),
        dropped: 0,
    };
    for i in ["i-1", "i-2"] {
        event(s, "t-rep", i, TaskEvent::Scheduled).await;
    }
    let got = s.get_invocation(&h, "t-rep").await.unwrap().unwrap();
    assert_eq!(got.overall_status(), OverallStatus::Scheduled);
    assert_eq!(got.invoke_status(), InvokeStatus::Running);
    event(s, "t-rep", "i-1", TaskEvent::RunStarted { run: 1, at: 100 }).await;
    let t = event(s, "t-rep", "i-1", ran(1, true, S::Success)).await;
    assert_eq!((t.state.status, t.state.repeats), (S::Scheduled, 1));
    // A replay of run 1 is not a second run.
    event(s, "t-rep", "i-1", ran(1, true, S::Failed)).await;
    event(s, "t-rep", "i-1", ran(2, true, S::Failed)).await;
    event(s, "t-rep", "i-2", ran(1, true, S::Success)).await;
    let all_runs = s.list_runs(&h, "t-rep", None, all()).await.unwrap();
    let keys: Vec<(String, u64, S)> = all_runs
        .items
        .iter()
        .map(|r| (r.instance_id.clone(), r.run, r.status))
        .collect();
    assert_eq!(all_runs.total, 3);
    assert_eq!(
        keys,
        vec![
            ("i-1".to_string(), 2, S::Failed),
            ("i-1".to_string(), 1, S::Success),
            ("i-2".to_string(), 1, S::Success),
        ]
    );
    assert_eq!(all_runs.items[1].output, b"run 1");
    assert_eq!(all_runs.items[0].error, Some(TaskError::ExitCodeNonzero));
    let one = s.list_runs(&h, "t-rep", Some("i-2"), all()).await.unwrap();
    assert_eq!(one.total, 1);
    assert_eq!(
        s.list_runs(&h, "t-rep", None, page(1, 1))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    for other in outsiders() {
        assert_eq!(
            s.list_runs(&other, "t-rep", None, all())
                .await
                .unwrap()
                .total,
            0
        );
    }
    assert_counts_consistent(s, &h, "t-rep").await;
    assert_tallies_consistent(s);

    let change = InvocationChange {
        command_content: Some(b"echo new".to_vec()),
        frequency: Some("0 */10 * * * ?".into()),
        ..Default::default()
    };
    let changed = s
        .modify_invocation(&h, "t-rep", &change)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.revision, 1);
    let got = s.get_invocation(&h, "t-rep").await.unwrap().unwrap();
    assert_eq!(got, changed);
    assert_eq!(
        (
            got.command_content.as_slice(),
            got.frequency.as_str(),
            got.parameters.as_str()
        ),
        (&b"echo new"[..], "0 */10 * * * ?", inv.parameters.as_str())
    );
    for other in outsiders() {
        assert!(s
            .modify_invocation(&other, "t-rep", &change)
            .await
            .unwrap()
            .is_none());
    }
}

// ---- resource groups --------------------------------------------------------------------

/// An invocation made in a resource group, with a pending task per instance (in its
/// group).
async fn put_in_group(s: &SqliteStore, inv: InvocationRecord, group: &str, instances: &[&str]) {
    let inv = InvocationRecord {
        resource_group_id: group.into(),
        ..inv
    };
    put(s, &inv, instances).await;
}

async fn resource_groups(s: &SqliteStore) {
    let h = home();
    let group = |g: &str| Some(g.to_string());

    // Activations and the instances that register with them.
    s.insert_activation(&ActivationRecord {
        resource_group_id: "rg-a".into(),
        ..activation("act-a", 5)
    })
    .await
    .unwrap();
    s.insert_activation(&activation("act-none", 5))
        .await
        .unwrap();
    assert_eq!(
        s.get_activation("act-a")
            .await
            .unwrap()
            .unwrap()
            .resource_group_id,
        "rg-a"
    );
    for (id, act, g, at) in [
        ("mi-a1", "act-a", "rg-a", 1),
        ("mi-a2", "act-a", "rg-a", 2),
        ("mi-n", "act-none", "", 3),
    ] {
        let i = InstanceRecord {
            resource_group_id: g.into(),
            ..instance(id, act, at)
        };
        s.register_instance(&i).await.unwrap();
    }
    assert_eq!(
        s.get_instance("mi-a1")
            .await
            .unwrap()
            .unwrap()
            .resource_group_id,
        "rg-a"
    );
    let hr = &h;
    let instance_ids = |f: InstanceFilter| async move {
        let l = s.list_instances(hr, &f, all()).await.unwrap();
        let ids: Vec<String> = l.items.into_iter().map(|i| i.instance_id).collect();
        (l.total, ids)
    };
    assert_eq!(
        instance_ids(InstanceFilter {
            resource_group_id: group("rg-a"),
            ..Default::default()
        })
        .await,
        (2, strs(&["mi-a2", "mi-a1"]))
    );
    assert_eq!(
        instance_ids(InstanceFilter {
            resource_group_id: group("rg-a"),
            instance_ids: Some(strs(&["mi-a1", "mi-n"])),
            ..Default::default()
        })
        .await,
        (1, strs(&["mi-a1"]))
    );
    assert_eq!(
        instance_ids(InstanceFilter {
            resource_group_id: group("rg-b"),
            ..Default::default()
        })
        .await,
        (0, vec![])
    );
    assert_eq!(instance_ids(InstanceFilter::default()).await.0, 3);
    for o in outsiders() {
        let l = s
            .list_instances(
                &o,
                &InstanceFilter {
                    resource_group_id: group("rg-a"),
                    ..Default::default()
                },
                all(),
            )
            .await
            .unwrap();
        assert_eq!(l.total, 0);
    }

    // Invocations: command runs in rg-a, rg-b and none; a file delivery in rg-a; one in
    // another account's rg-a.
    put_in_group(s, invocation("t-a", &h, 10), "rg-a", &["i-1", "i-2"]).await;
    put_in_group(s, invocation("t-b", &h, 20), "rg-b", &["i-1"]).await;
    put_in_group(s, invocation("t-n", &h, 30), "", &["i-2"]).await;
    let file = InvocationRecord {
        file: Some(FileSpec {
            target_dir: "/tmp".into(),
            content_type: "PlainText".into(),
            owner: String::new(),
            group: String::new(),
            mode: String::new(),
            overwrite: false,
        }),
        ..invocation("f-a", &h, 40)
    };
    put_in_group(s, file, "rg-a", &["i-1"]).await;
    let [other, _] = outsiders();
    put_in_group(s, invocation("t-x", &other, 50), "rg-a", &["i-9"]).await;

    let inv = s.get_invocation(&h, "t-a").await.unwrap().unwrap();
    assert_eq!(inv.resource_group_id, "rg-a");
    let first = s.get_task("t-a", "i-1").await.unwrap().unwrap();
    assert_eq!(
        first.resource_group_id, "rg-a",
        "a task is in its invocation's group"
    );

    let invs = |f: InvocationFilter| inv_ids(s, &h, f, all());
    let in_group = |g: &str| InvocationFilter {
        resource_group_id: group(g),
        ..Default::default()
    };
    assert_eq!(invs(in_group("rg-a")).await, (1, strs(&["t-a"])));
    assert_eq!(invs(in_group("rg-b")).await, (1, strs(&["t-b"])));
    assert_eq!(invs(in_group("rg-c")).await, (0, vec![]));
    assert_eq!(invs(InvocationFilter::default()).await.0, 3);
    assert_eq!(
        invs(InvocationFilter {
            instance_id: Some("i-1".into()),
            ..in_group("rg-a")
        })
        .await,
        (1, strs(&["t-a"]))
    );
    assert_eq!(
        invs(InvocationFilter {
            instance_id: Some("i-2".into()),
            ..in_group("rg-b")
        })
        .await,
        (0, vec![])
    );
    assert_eq!(
        invs(InvocationFilter {
            kind: InvocationKind::File,
            ..in_group("rg-a")
        })
        .await,
        (1, strs(&["f-a"])),
        "file deliveries are filtered by group too, apart from command runs"
    );
    // A group with a status is counted, not answered from the scope's tally.
    let running = inv.invoke_status();
    let status_only = invs(InvocationFilter {
        invoke_status: Some(running),
        ..Default::default()
    })
    .await;
    assert_eq!(status_only.0, 3);
    assert_eq!(
        invs(InvocationFilter {
            invoke_status: Some(running),
            ..in_group("rg-a")
        })
        .await,
        (1, strs(&["t-a"]))
    );
    // Paging within a group.
    put_in_group(s, invocation("t-a2", &h, 60), "rg-a", &["i-3"]).await;
    assert_eq!(
        inv_ids(s, &h, in_group("rg-a"), page(1, 1)).await,
        (2, strs(&["t-a"]))
    );

    // Results.
    let results = |f: ResultFilter| result_keys(s, &h, f, all());
    let tasks_in = |g: &str| ResultFilter {
        resource_group_id: group(g),
        ..Default::default()
    };
    assert_eq!(
        results(tasks_in("rg-a")).await,
        (3, strs(&["t-a2/i-3", "t-a/i-1", "t-a/i-2"]))
    );
    assert_eq!(results(tasks_in("rg-b")).await, (1, strs(&["t-b/i-1"])));
    assert_eq!(
        results(ResultFilter {
            instance_id: Some("i-1".into()),
            ..tasks_in("rg-a")
        })
        .await,
        (1, strs(&["t-a/i-1"]))
    );
    assert_eq!(
        results(ResultFilter {
            invoke_id: Some("t-a".into()),
            ..tasks_in("rg-a")
        })
        .await
        .0,
        2
    );
    assert_eq!(
        results(ResultFilter {
            invoke_id: Some("t-a".into()),
            ..tasks_in("rg-b")
        })
        .await,
        (0, vec![]),
        "an invocation of another group has no results in this one"
    );
    assert_eq!(
        results(ResultFilter {
            kind: InvocationKind::File,
            ..tasks_in("rg-a")
        })
        .await,
        (1, strs(&["f-a/i-1"]))
    );
    let coarse = first.state.status.coarse();
    assert_eq!(
        results(ResultFilter {
            record_status: Some(coarse),
            ..Default::default()
        })
        .await
        .0,
        5,
        "the scope's tally"
    );
    assert_eq!(
        results(ResultFilter {
            record_status: Some(coarse),
            ..tasks_in("rg-a")
        })
        .await
        .0,
        3,
        "a group is counted"
    );
    assert_eq!(results(tasks_in("rg-a")).await.0, 3);
    assert_eq!(
        result_keys(s, &other, tasks_in("rg-a"), all()).await,
        (1, strs(&["t-x/i-9"]))
    );

    // A task outside its invocation's group is refused.
    let inv = InvocationRecord {
        resource_group_id: "rg-a".into(),
        ..invocation("t-bad", &h, 70)
    };
    let stray = TaskRecord {
        resource_group_id: "rg-b".into(),
        ..task(&inv, "i-1")
    };
    assert!(s.insert_invocation(None, &inv, &[stray]).await.is_err());
    assert!(s.get_invocation(&h, "t-bad").await.unwrap().is_none());
    assert_tallies_consistent(s);
}

/// DescribeCommands by resource group and by tags.
async fn commands_by_group_and_tag(s: &SqliteStore) {
    let h = home();
    let t = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    for (id, g, at, visible) in [
        ("c-a", "rg-a", 1, true),
        ("c-a2", "rg-a", 2, true),
        ("c-b", "rg-b", 3, true),
        ("c-n", "", 4, true),
        ("c-hidden", "rg-a", 5, false),
    ] {
        let c = CommandRecord {
            resource_group_id: g.into(),
            visible,
            ..command(id, &h, at)
        };
        s.insert_command(&c).await.unwrap();
    }
    let kind = TagResource::Command;
    s.tag(&h, kind, &strs(&["c-a", "c-hidden"]), &[t("team", "red")])
        .await
        .unwrap();
    s.tag(
        &h,
        kind,
        &strs(&["c-b"]),
        &[t("team", "blue"), t("tier", "1")],
    )
    .await
    .unwrap();
    s.tag(&h, kind, &strs(&["c-a2"]), &[t("tier", "1")])
        .await
        .unwrap();
    assert_eq!(
        s.get_command(&h, "c-a")
            .await
            .unwrap()
            .unwrap()
            .resource_group_id,
        "rg-a"
    );
    let hr = &h;
    let ids = |f: CommandFilter| async move {
        let l = s.list_commands(hr, &f, all()).await.unwrap();
        let ids: Vec<String> = l.items.into_iter().map(|c| c.command_id).collect();
        (l.total, ids)
    };
    let in_group = |g: &str| CommandFilter {
        resource_group_id: Some(g.into()),
        ..Default::default()
    };
    let tagged = |tags: Vec<Tag>| CommandFilter {
        tags,
        ..Default::default()
    };
    assert_eq!(
        ids(in_group("rg-a")).await,
        (2, strs(&["c-a2", "c-a"])),
        "hidden commands are never listed"
    );
    assert_eq!(ids(in_group("rg-b")).await, (1, strs(&["c-b"])));
    assert_eq!(ids(in_group("rg-c")).await, (0, vec![]));
    assert_eq!(ids(CommandFilter::default()).await.0, 4);
    assert_eq!(
        ids(tagged(vec![t("team", "red")])).await,
        (1, strs(&["c-a"]))
    );
    assert_eq!(
        ids(tagged(vec![t("team", "")])).await,
        (2, strs(&["c-b", "c-a"])),
        "an empty value matches any"
    );
    assert_eq!(
        ids(tagged(vec![t("team", ""), t("tier", "1")])).await,
        (1, strs(&["c-b"])),
        "every tag must match"
    );
    assert_eq!(
        ids(CommandFilter {
            tags: vec![t("tier", "1")],
            ..in_group("rg-a")
        })
        .await,
        (1, strs(&["c-a2"]))
    );
    assert_eq!(
        ids(CommandFilter {
            tags: vec![t("team", "red")],
            ..in_group("rg-b")
        })
        .await,
        (0, vec![])
    );
    assert_eq!(ids(tagged(vec![t("nope", "")])).await, (0, vec![]));
    for o in outsiders() {
        let l = s
            .list_commands(&o, &tagged(vec![t("team", "")]), all())
            .await
            .unwrap();
        assert_eq!(l.total, 0, "another scope's tags match nothing here");
    }
}

/// The query plans SQLite makes (it keeps no statistics here, so the plan does not
/// depend on the data): a group filter stays on an index, in the listing's order, and
/// an instance or an invocation still drives when given.
async fn group_filters_stay_on_an_index(s: &SqliteStore) {
    use super::invocations::{count_sql, invocations_query, page_sql, results_query, Query};
    let h = home();
    let plan = |sql: String, args: Vec<rusqlite::types::Value>| -> String {
        let c = lock(&s.inner.writer);
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
    };
    let page_plan = |q: &Query| {
        let mut args = q.w.args.clone();
        args.extend(super::rows::page_args(all()));
        plan(page_sql(q.from, q.key, q.order, &q.w), args)
    };
    let count_plan = |q: &Query| plan(count_sql(q.from, &q.w), q.w.args.clone());
    let pages_on = |q: &Query, index: &str, what: &str| {
        let p = page_plan(q);
        assert!(p.contains(&format!("INDEX {index} ")), "{what}: {p}");
        assert!(!p.contains("TEMP B-TREE"), "{what} needs no sort: {p}");
    };
    // A filtered listing is counted (no tally covers it) on the same index range.
    let drives = |q: Query, index: &str, what: &str| {
        pages_on(&q, index, what);
        let p = count_plan(&q);
        assert!(
            p.contains(&format!("INDEX {index} ")),
            "{what}, counted: {p}"
        );
    };
    let group = Some("rg-a".to_string());
    let inv = |f: InvocationFilter| invocations_query(&h, &f);
    let res = |f: ResultFilter| results_query(&h, &f);

    // Unfiltered listings are counted by the tallies: only their pages are read here.
    pages_on(
        &inv(InvocationFilter::default()),
        "invocations_scope",
        "invocations",
    );
    drives(
        inv(InvocationFilter {
            resource_group_id: group.clone(),
            ..Default::default()
        }),
        "invocations_group",
        "invocations by group",
    );
    drives(
        inv(InvocationFilter {
            kind: InvocationKind::File,
            resource_group_id: group.clone(),
            ..Default::default()
        }),
        "invocations_group",
        "file deliveries by group",
    );
    drives(
        inv(InvocationFilter {
            instance_id: Some("i-1".into()),
            resource_group_id: group.clone(),
            ..Default::default()
        }),
        "tasks_instance",
        "invocations by instance and group",
    );
    pages_on(&res(ResultFilter::default()), "tasks_scope", "results");
    drives(
        res(ResultFilter {
            resource_group_id: group.clone(),
            ..Default::default()
        }),
        "tasks_group",
        "results by group",
    );
    drives(
        res(ResultFilter {
            instance_id: Some("i-1".into()),
            resource_group_id: group.clone(),
            record_status: Some(InstanceInvokeStatus::Finished),
            ..Default::default()
        }),
        "tasks_instance",
        "results by instance, status and group",
    );
    drives(
        res(ResultFilter {
            command_id: Some("c-1".into()),
            ..Default::default()
        }),
        "tasks_command",
        "results by command",
    );
    let by_invocation = res(ResultFilter {
        invoke_id: Some("t-1".into()),
        resource_group_id: group.clone(),
        ..Default::default()
    });
    let p = page_plan(&by_invocation);
    assert!(
        p.contains("INDEX sqlite_autoindex_tasks_1 (invoke_id=?)"),
        "results of one invocation: {p}"
    );
}

/// A database from before resource groups: every row is in none, and listings by
/// group find nothing.
#[tokio::test]
async fn the_migration_puts_existing_rows_in_no_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oca.db");
    let h = home();
    {
        let before = schema::MIGRATIONS
            .iter()
            .position(|m| *m == schema::RESOURCE_GROUPS)
            .unwrap();
        let mut c = rusqlite::Connection::open(&path).unwrap();
        schema::migrate_to(&mut c, before).unwrap();
        c.execute_batch(
            "INSERT INTO commands (command_id, account_id, region_id, name, description, \
               command_type, working_dir, timeout_secs, enable_parameter, parameter_names, \
               created, invoke_times, visible, content) \
             VALUES ('c-old', 'acct-1', 'cn-hangzhou', 'old', '', 'RunShellScript', '', 60, \
               0, '[]', 1, 0, 1, X'00'); \
             INSERT INTO invocations (invoke_id, account_id, region_id, command_id, \
               command_name, command_description, command_type, enable_parameter, parameters, \
               working_dir, username, timeout_secs, repeat_mode, timed, frequency, \
               termination_mode, created, stopped_by_hand, counts, invoke_status, \
               overall_status, command_content) \
             VALUES ('t-old', 'acct-1', 'cn-hangzhou', 'c-old', 'old', '', 'RunShellScript', 0, \
               '{}', '', '', 60, 'Once', 0, '', 'ProcessTree', 1, 0, '{\"Success\":1}', \
               'Finished', 'Success', X'00'); \
             INSERT INTO tasks (invoke_id, instance_id, account_id, region_id, command_id, \
               username, timed, created, updated, inv_created, status, coarse, repeats, \
               dropped, output_len, output) \
             VALUES ('t-old', 'mi-old', 'acct-1', 'cn-hangzhou', 'c-old', '', 0, 1, 1, 1, \
               'Success', 'Finished', 1, 0, 0, X''); \
             INSERT INTO scope_counts (account_id, region_id, name, n) VALUES \
               ('acct-1', 'cn-hangzhou', 'invocations', 1), \
               ('acct-1', 'cn-hangzhou', 'invocations/Finished', 1), \
               ('acct-1', 'cn-hangzhou', 'tasks', 1), \
               ('acct-1', 'cn-hangzhou', 'tasks/Finished', 1);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let c = s.get_command(&h, "c-old").await.unwrap().unwrap();
    assert_eq!(c.resource_group_id, "");
    let inv = s.get_invocation(&h, "t-old").await.unwrap().unwrap();
    assert_eq!(inv.resource_group_id, "");
    let t = s.get_task("t-old", "mi-old").await.unwrap().unwrap();
    assert_eq!(t.resource_group_id, "");
    let by_group = InvocationFilter {
        resource_group_id: Some("rg-a".into()),
        ..Default::default()
    };
    assert_eq!(inv_ids(&s, &h, by_group, all()).await.0, 0);
    let results = ResultFilter {
        resource_group_id: Some("rg-a".into()),
        ..Default::default()
    };
    assert_eq!(result_keys(&s, &h, results, all()).await.0, 0);
    let everything = result_keys(&s, &h, ResultFilter::default(), all()).await;
    assert_eq!(everything, (1, strs(&["t-old/mi-old"])));
    assert_tallies_consistent(&s);
}

/// Paging by position gives the same rows as one big page, in the same order, for every
/// driving index (ties in creation time included), and rows added at the head between
/// two pages neither repeat nor push rows out.
async fn keyset_pages(s: &SqliteStore) {
    let h = home();
    // 12 invocations; creation times collide in pairs; 1–3 instances each.
    for n in 0..12u32 {
        let inv = invocation(&format!("t-{n:02}"), &h, 100 + (n / 2) as i64);
        let instances: Vec<String> = (0..=(n % 3)).map(|i| format!("i-{i}")).collect();
        let refs: Vec<&str> = instances.iter().map(String::as_str).collect();
        put(s, &inv, &refs).await;
    }
    let page_all = Page {
        offset: 0,
        limit: 1000,
    };
    let inv_filters = [
        InvocationFilter::default(),
        InvocationFilter {
            instance_id: Some("i-1".into()),
            ..Default::default()
        },
        InvocationFilter {
            command_id: Some("c-1".into()),
            ..Default::default()
        },
    ];
    for f in inv_filters {
        let whole = s.list_invocations(&h, &f, page_all, false).await.unwrap();
        assert!(whole.next.is_none());
        for size in [1, 2, 5] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let f = InvocationFilter {
                    after: after.clone(),
                    ..f.clone()
                };
                let l = s
                    .list_invocations(&h, &f, page(0, size), false)
                    .await
                    .unwrap();
                assert_eq!(l.total, whole.total, "{f:?}");
                got.extend(l.items.into_iter().map(|v| v.invocation.invoke_id));
                match l.next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            let expected: Vec<String> = whole
                .items
                .iter()
                .map(|v| v.invocation.invoke_id.clone())
                .collect();
            assert_eq!(got, expected, "size {size}, {f:?}");
        }
    }
    let result_filters = [
        ResultFilter::default(),
        ResultFilter {
            instance_id: Some("i-0".into()),
            ..Default::default()
        },
        ResultFilter {
            invoke_id: Some("t-05".into()),
            ..Default::default()
        },
    ];
    for f in result_filters {
        let whole = s.list_results(&h, &f, page_all).await.unwrap();
        let key = |t: &TaskRecord| format!("{}/{}", t.invoke_id, t.instance_id);
        let expected: Vec<String> = whole.items.iter().map(key).collect();
        for size in [1, 2, 7] {
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let f = ResultFilter {
                    after: after.clone(),
                    ..f.clone()
                };
                let l = s.list_results(&h, &f, page(0, size)).await.unwrap();
                assert_eq!(l.total, whole.total);
                got.extend(l.items.iter().map(key));
                match l.next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            assert_eq!(got, expected, "size {size}, {f:?}");
        }
    }
    // Rows added at the head between pages: the next page goes on where it was.
    let first = s
        .list_invocations(&h, &InvocationFilter::default(), page(0, 4), false)
        .await
        .unwrap();
    put(s, &invocation("t-new", &h, 1_000), &["i-0"]).await;
    let second = s
        .list_invocations(
            &h,
            &InvocationFilter {
                after: first.next.clone(),
                ..Default::default()
            },
            page(0, 4),
            false,
        )
        .await
        .unwrap();
    let ids = |l: &Listing<InvocationView>| -> Vec<String> {
        l.items
            .iter()
            .map(|v| v.invocation.invoke_id.clone())
            .collect()
    };
    assert_eq!(ids(&first), strs(&["t-10", "t-11", "t-08", "t-09"]));
    assert_eq!(ids(&second), strs(&["t-06", "t-07", "t-04", "t-05"]));
    assert_eq!(second.total, 13);
    // The cursor round-trips as a token; junk is not one.
    let c = first.next.unwrap();
    assert_eq!(Cursor::decode(&c.encode()), Some(c));
    for junk in ["", "x", "1.2", "-5.t-1.", "12.t 1.", "12..i-1"] {
        assert_eq!(Cursor::decode(junk), None, "{junk}");
    }
}

// ---- fleet management: activations listed, disabled, deleted; instances renamed and
// deregistered ----------------------------------------------------------------------------

fn tag(k: &str, v: &str) -> Tag {
    Tag {
        key: k.into(),
        value: v.into(),
    }
}

async fn activation_ids(
    s: &SqliteStore,
    scope: &Scope,
    f: ActivationFilter,
    p: Page,
) -> (u64, Vec<String>) {
    let l = s.list_activations(scope, &f, p).await.unwrap();
    (
        l.total,
        l.items.into_iter().map(|a| a.activation_id).collect(),
    )
}

async fn activation_listing(s: &SqliteStore) {
    let h = home();
    for (id, created, name, group, tags) in [
        ("act-a", 10, "web", "", vec![tag("env", "prod")]),
        (
            "act-b",
            20,
            "db",
            "rg-1",
            vec![tag("env", "dev"), tag("team", "db")],
        ),
        ("act-c", 30, "web", "rg-1", vec![]),
    ] {
        let a = ActivationRecord {
            created,
            instance_name: name.into(),
            resource_group_id: group.into(),
            ..activation(id, 5)
        };
        s.create_activation(&a, &tags).await.unwrap();
    }
    // Created with its tags, in one go.
    let tags = s
        .tags_of(&h, TagResource::Activation, &strs(&["act-b"]))
        .await
        .unwrap();
    assert_eq!(tags["act-b"], vec![tag("env", "dev"), tag("team", "db")]);
    assert_eq!(
        s.get_activation("act-a")
            .await
            .unwrap()
            .unwrap()
            .deregistered_count,
        0
    );

    let none = ActivationFilter::default;
    assert_eq!(
        activation_ids(s, &h, none(), all()).await,
        (3, strs(&["act-c", "act-b", "act-a"])),
        "newest first"
    );
    assert_eq!(
        activation_ids(s, &h, none(), page(1, 1)).await,
        (3, strs(&["act-b"]))
    );
    let by = |f: ActivationFilter| activation_ids(s, &h, f, all());
    assert_eq!(
        by(ActivationFilter {
            activation_ids: Some(strs(&["act-a", "act-x"])),
            ..none()
        })
        .await,
        (1, strs(&["act-a"]))
    );
    assert_eq!(
        by(ActivationFilter {
            instance_name: Some("web".into()),
            ..none()
        })
        .await,
        (2, strs(&["act-c", "act-a"]))
    );
    assert_eq!(
        by(ActivationFilter {
            resource_group_id: Some("rg-1".into()),
            ..none()
        })
        .await,
        (2, strs(&["act-c", "act-b"]))
    );
    assert_eq!(
        by(ActivationFilter {
            tags: vec![tag("env", "")],
            ..none()
        })
        .await,
        (2, strs(&["act-b", "act-a"])),
        "an empty value matches any"
    );
    assert_eq!(
        by(ActivationFilter {
            tags: vec![tag("env", "dev"), tag("team", "db")],
            resource_group_id: Some("rg-1".into()),
            ..none()
        })
        .await,
        (1, strs(&["act-b"]))
    );
    assert_eq!(
        by(ActivationFilter {
            tags: vec![tag("env", "prod"), tag("team", "db")],
            ..none()
        })
        .await,
        (0, vec![])
    );
    // Tags of the same id on another kind of resource do not count.
    s.tag(
        &h,
        TagResource::Instance,
        &strs(&["act-c"]),
        &[tag("env", "prod")],
    )
    .await
    .unwrap();
    assert_eq!(
        by(ActivationFilter {
            tags: vec![tag("env", "prod")],
            ..none()
        })
        .await,
        (1, strs(&["act-a"]))
    );
    for o in outsiders() {
        assert_eq!(activation_ids(s, &o, none(), all()).await, (0, vec![]));
        let ids = ActivationFilter {
            activation_ids: Some(strs(&["act-a"])),
            ..none()
        };
        assert_eq!(activation_ids(s, &o, ids, all()).await, (0, vec![]));
    }
}

async fn disabling_and_deleting_activations(s: &SqliteStore) {
    let h = home();
    s.create_activation(&activation("act-1", 5), &[tag("env", "prod")])
        .await
        .unwrap();
    s.insert_activation(&activation("act-2", 5)).await.unwrap();
    s.register_instance(&instance("mi-1", "act-1", 10))
        .await
        .unwrap();

    // Outside the scope: as missing, and nothing changes.
    for o in outsiders() {
        assert_eq!(s.disable_activation(&o, "act-1").await.unwrap(), None);
        assert_eq!(s.delete_activation(&o, "act-2").await.unwrap(), None);
    }
    assert_eq!(s.disable_activation(&h, "act-9").await.unwrap(), None);
    assert_eq!(s.delete_activation(&h, "act-9").await.unwrap(), None);
    assert!(!s.get_activation("act-1").await.unwrap().unwrap().disabled);

    // Disabled: no new registration; the registered instance stays. Twice is fine.
    let disabled = s.disable_activation(&h, "act-1").await.unwrap().unwrap();
    assert!(disabled.disabled);
    assert_eq!(disabled.registered_count, 1);
    assert_eq!(
        s.disable_activation(&h, "act-1").await.unwrap(),
        Some(disabled.clone())
    );
    assert_eq!(s.get_activation("act-1").await.unwrap(), Some(disabled));
    assert!(is_conflict(
        s.register_instance(&instance("mi-2", "act-1", 20)).await,
        "disabled"
    ));
    assert!(s.get_instance("mi-1").await.unwrap().is_some());

    // Not deleted while an instance registered with it is registered.
    assert!(matches!(
        s.delete_activation(&h, "act-1").await,
        Err(StoreError::Conflict(m)) if m.contains("registered")
    ));
    assert!(s.get_activation("act-1").await.unwrap().is_some());
    // Once it is deregistered, the activation goes, with its tags.
    s.deregister_instance(&h, "mi-1").await.unwrap().unwrap();
    let gone = s.delete_activation(&h, "act-1").await.unwrap().unwrap();
    assert_eq!(
        (
            gone.activation_id.as_str(),
            gone.registered_count,
            gone.deregistered_count
        ),
        ("act-1", 1, 1)
    );
    assert_eq!(s.get_activation("act-1").await.unwrap(), None);
    assert_eq!(s.delete_activation(&h, "act-1").await.unwrap(), None);
    assert!(s
        .tags_of(&h, TagResource::Activation, &strs(&["act-1"]))
        .await
        .unwrap()
        .is_empty());
    assert!(is_conflict(
        s.register_instance(&instance("mi-3", "act-1", 30)).await,
        "does not exist"
    ));
    // One never used goes at once.
    assert!(s.delete_activation(&h, "act-2").await.unwrap().is_some());
    assert_eq!(
        activation_ids(s, &h, ActivationFilter::default(), all()).await,
        (0, vec![])
    );
}

async fn deregistration(s: &SqliteStore) {
    let h = home();
    s.insert_activation(&activation("act-1", 3)).await.unwrap();
    for (id, at) in [("mi-1", 10), ("mi-2", 20)] {
        s.register_instance(&instance(id, "act-1", at))
            .await
            .unwrap();
    }
    s.tag(
        &h,
        TagResource::Instance,
        &strs(&["mi-1", "mi-2"]),
        &[tag("env", "prod")],
    )
    .await
    .unwrap();
    // mi-1 has a finished run, a pending one and a schedule.
    put(s, &invocation("t-done", &h, 100), &["mi-1", "mi-2"]).await;
    event(s, "t-done", "mi-1", finished(S::Success, b"hi")).await;
    put(s, &invocation("t-live", &h, 200), &["mi-1"]).await;

    for o in outsiders() {
        assert_eq!(s.deregister_instance(&o, "mi-1").await.unwrap(), None);
    }
    assert_eq!(s.deregister_instance(&h, "mi-9").await.unwrap(), None);
    assert!(s.get_instance("mi-1").await.unwrap().is_some());

    let before = s.get_instance("mi-1").await.unwrap().unwrap();
    let gone = s.deregister_instance(&h, "mi-1").await.unwrap().unwrap();
    assert_eq!(gone, before, "answered as it was");
    // Gone: no lookup finds it (so its token authenticates no more), no listing shows
    // it, its tags went with it.
    assert_eq!(s.get_instance("mi-1").await.unwrap(), None);
    assert_eq!(
        s.get_instances(&h, &strs(&["mi-1", "mi-2"]))
            .await
            .unwrap()
            .len(),
        1
    );
    let listed = s
        .list_instances(&h, &InstanceFilter::default(), all())
        .await
        .unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|i| i.instance_id.as_str())
            .collect::<Vec<_>>(),
        vec!["mi-2"]
    );
    assert_eq!(
        s.tagged(&h, TagResource::Instance, &[tag("env", "prod")])
            .await
            .unwrap(),
        strs(&["mi-2"])
    );
    // Counted on its activation; the use is not given back.
    let a = s.get_activation("act-1").await.unwrap().unwrap();
    assert_eq!((a.registered_count, a.deregistered_count), (2, 1));
    s.register_instance(&instance("mi-3", "act-1", 30))
        .await
        .unwrap();
    assert!(is_conflict(
        s.register_instance(&instance("mi-4", "act-1", 40)).await,
        "no registrations left"
    ));
    // Its records stay readable.
    let t = s.get_task("t-done", "mi-1").await.unwrap().unwrap();
    assert_eq!(t.state.status, S::Success);
    assert_eq!(
        result_keys(
            s,
            &h,
            ResultFilter {
                instance_id: Some("mi-1".into()),
                ..Default::default()
            },
            all()
        )
        .await
        .0,
        2
    );
    assert_eq!(s.full_output("t-done", "mi-1").await.unwrap(), Some(vec![]));
    // Its live task is still there for the dispatcher to end.
    assert_eq!(
        s.tasks_for_instance("mi-1", &[S::Pending])
            .await
            .unwrap()
            .len(),
        1
    );
    // Twice: the second finds nothing, and counts nothing.
    assert_eq!(s.deregister_instance(&h, "mi-1").await.unwrap(), None);
    assert_eq!(
        s.get_activation("act-1")
            .await
            .unwrap()
            .unwrap()
            .deregistered_count,
        1
    );
    // A heartbeat of the gone instance changes nothing.
    s.touch_instance("mi-1", 500, "2.0", "h", "linux", "cgroup")
        .await
        .unwrap();
    assert_eq!(s.get_instance("mi-1").await.unwrap(), None);
}

async fn renaming(s: &SqliteStore) {
    let h = home();
    s.insert_activation(&activation("act-1", 3)).await.unwrap();
    s.register_instance(&instance("mi-1", "act-1", 10))
        .await
        .unwrap();
    for o in outsiders() {
        assert_eq!(s.rename_instance(&o, "mi-1", "pwned").await.unwrap(), None);
    }
    assert_eq!(s.rename_instance(&h, "mi-9", "x").await.unwrap(), None);
    assert_eq!(s.get_instance("mi-1").await.unwrap().unwrap().name, "web");
    let renamed = s
        .rename_instance(&h, "mi-1", "db-primary")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "db-primary");
    assert_eq!(s.get_instance("mi-1").await.unwrap(), Some(renamed));
    let by_name = InstanceFilter {
        name: Some("db-primary".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_instances(&h, &by_name, all()).await.unwrap().total,
        1
    );
}

/// A database from before fleet management: its activations have no deregistrations.
#[tokio::test]
async fn the_fleet_migration_counts_no_deregistration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oca.db");
    {
        let before = schema::MIGRATIONS
            .iter()
            .position(|m| *m == schema::FLEET)
            .unwrap();
        let mut c = rusqlite::Connection::open(&path).unwrap();
        schema::migrate_to(&mut c, before).unwrap();
        c.execute_batch(
            "INSERT INTO activations (activation_id, account_id, region_id, code_hash, \
               instance_name, description, instance_count, registered_count, \
               ip_address_range, created, expires, disabled) \
             VALUES ('act-old', 'acct-1', 'cn-hangzhou', 'ab', 'web', '', 5, 2, \
               '0.0.0.0/0', 1, 1000, 0);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let a = s.get_activation("act-old").await.unwrap().unwrap();
    assert_eq!((a.registered_count, a.deregistered_count), (2, 0));
    assert_eq!(
        activation_ids(&s, &home(), ActivationFilter::default(), all()).await,
        (1, strs(&["act-old"]))
    );
}

/// A database from before task isolation was reported: its instances read '' until
/// their agent says.
#[tokio::test]
async fn the_task_isolation_migration_reads_empty_until_an_agent_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oca.db");
    {
        let before = schema::MIGRATIONS
            .iter()
            .position(|m| *m == schema::TASK_ISOLATION)
            .unwrap();
        let mut c = rusqlite::Connection::open(&path).unwrap();
        schema::migrate_to(&mut c, before).unwrap();
        c.execute_batch(
            "INSERT INTO instances (instance_id, account_id, region_id, name, hostname, \
               os_type, agent_version, machine_id, activation_id, token_hash, registered, \
               last_heartbeat, last_invoked, invocation_count) \
             VALUES ('mi-old', 'acct-1', 'cn-hangzhou', 'web', 'h', 'linux', '1.0', '', \
               'act-old', 'ab', 1, NULL, NULL, 0);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let i = s.get_instance("mi-old").await.unwrap().unwrap();
    assert_eq!(i.task_isolation, "");
    s.touch_instance("mi-old", 5, "2.0", "h", "linux", "process-tree")
        .await
        .unwrap();
    let i = s.get_instance("mi-old").await.unwrap().unwrap();
    assert_eq!(i.task_isolation, "process-tree");
}
