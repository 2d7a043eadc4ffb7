//! Invocations, their tasks and the tasks' whole output.

use super::rows::{
    self, counts_to_text, json_list, page_args, to_i64, Where, INVOCATION_COLS, TASK_COLS,
    TASK_COLS_NO_OUTPUT, TASK_N,
};
use crate::{
    ClientToken, CommandRecord, Cursor, DispatchItem, InvocationChange, InvocationFilter,
    InvocationKind, InvocationRecord, InvocationView, Listing, OutputAppend, Page, PriorInvocation,
    Result, ResultFilter, RunRecord, Scope, StoreError, Tag, TagResource, TaskRecord, WriteOp,
    WriteOutcome,
};
use oca_domain::status::{InstanceInvokeStatus, InvocationStatus, InvokeStatus, StatusCounts};
use oca_domain::task::TaskEvent;
use oca_domain::time::{now_millis, Millis};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;

// ---- scope counts -----------------------------------------------------------------------

/// The `scope_counts` name of the invocations of a kind in a scope (with that legacy
/// status).
fn invocations_tally(kind: InvocationKind, status: Option<InvokeStatus>) -> String {
    let base = match kind {
        InvocationKind::Command => "invocations",
        InvocationKind::File => "files",
    };
    match status {
        None => base.to_string(),
        Some(s) => format!("{base}/{s}"),
    }
}

/// The `scope_counts` name of the tasks of a kind in a scope (with that coarse status).
fn tasks_tally(kind: InvocationKind, status: Option<InstanceInvokeStatus>) -> String {
    let base = match kind {
        InvocationKind::Command => "tasks",
        InvocationKind::File => "file-tasks",
    };
    match status {
        None => base.to_string(),
        Some(s) => format!("{base}/{s}"),
    }
}

/// Changes to one scope's `scope_counts`, gathered during a transaction and written
/// before it commits.
#[derive(Default)]
struct Tally(BTreeMap<String, i64>);

impl Tally {
    fn add(&mut self, name: String, delta: i64) {
        *self.0.entry(name).or_default() += delta;
    }

    fn task_moved(&mut self, kind: InvocationKind, from: InvocationStatus, to: InvocationStatus) {
        let (from, to) = (from.coarse(), to.coarse());
        if from != to {
            self.add(tasks_tally(kind, Some(from)), -1);
            self.add(tasks_tally(kind, Some(to)), 1);
        }
    }

    fn invocation_moved(&mut self, kind: InvocationKind, from: InvokeStatus, to: InvokeStatus) {
        if from != to {
            self.add(invocations_tally(kind, Some(from)), -1);
            self.add(invocations_tally(kind, Some(to)), 1);
        }
    }

    fn write(self, c: &Connection, account_id: &str, region_id: &str) -> Result<()> {
        let mut upsert = c.prepare_cached(
            "INSERT INTO scope_counts (account_id, region_id, name, n) VALUES (?, ?, ?, ?)              ON CONFLICT (account_id, region_id, name) DO UPDATE SET n = n + excluded.n",
        )?;
        for (name, delta) in self.0 {
            if delta != 0 {
                upsert.execute(params![account_id, region_id, name, delta])?;
            }
        }
        Ok(())
    }
}

/// A listing's total (the per-scope `tally` when one covers the filter, else a count
/// of the matching rows, the keyset position left out), the keys of the page's rows in
/// `order` (from the query's position when it has one), and whether more rows follow.
fn count_and_page<K: rusqlite::types::FromSql>(
    tx: &Connection,
    scope: &Scope,
    tally: Option<&str>,
    q: &Query,
    page: Page,
) -> Result<(i64, Vec<K>, bool)> {
    let total = match tally {
        Some(name) => read_tally(tx, scope, name)?,
        None => tx
            .prepare_cached(&count_sql(q.from, &q.w))?
            .query_row(params_from_iter(&q.w.args), |r| r.get(0))?,
    };
    if page.limit == 0 || (q.after.is_none() && (page.offset as i128) >= total as i128) {
        return Ok((total, Vec::new(), false));
    }
    let mut w = Where::new();
    w.and_all(&q.w.sql(), q.w.args.clone());
    if let Some((cond, args)) = &q.after {
        w.and_all(cond, args.clone());
    }
    // One row more than the page says whether another page follows.
    let look_ahead = Page {
        offset: page.offset,
        limit: page.limit.saturating_add(1),
    };
    let mut keys: Vec<K> = tx
        .prepare_cached(&page_sql(q.from, q.key, q.order, &w))?
        .query_map(
            params_from_iter(w.args.iter().chain(page_args(look_ahead).iter())),
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let more = keys.len() as u64 > page.limit;
    keys.truncate(page.limit as usize);
    Ok((total, keys, more))
}

/// The keyset condition "after `c`" for a listing in `created DESC, invoke_id` order
/// (then `instance_id` when `instance` names its column), written as a range on the
/// creation column so that the listing's index seeks to it.
fn after_cond(
    created: &str,
    invoke_id: &str,
    instance: Option<&str>,
    c: &Cursor,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut args: Vec<rusqlite::types::Value> = vec![
        c.created.into(),
        c.created.into(),
        c.invoke_id.clone().into(),
    ];
    let cond = match instance {
        None => format!("{created} <= ? AND NOT ({created} = ? AND {invoke_id} <= ?)"),
        Some(instance) => {
            args.push(c.invoke_id.clone().into());
            args.push(c.instance_id.clone().into());
            format!(
                "{created} <= ? AND NOT ({created} = ? AND ({invoke_id} < ? \
                 OR ({invoke_id} = ? AND {instance} <= ?)))"
            )
        }
    };
    (cond, args)
}

/// The statement that counts a listing's rows.
pub(super) fn count_sql(from: &str, w: &Where) -> String {
    format!("SELECT COUNT(*) FROM {from} WHERE {}", w.sql())
}

/// The statement that reads the keys of a listing's page (`LIMIT ? OFFSET ?` last).
pub(super) fn page_sql(from: &str, key: &str, order: &str, w: &Where) -> String {
    format!(
        "SELECT {key} FROM {from} WHERE {} ORDER BY {order} LIMIT ? OFFSET ?",
        w.sql()
    )
}

fn read_tally(c: &Connection, scope: &Scope, name: &str) -> Result<i64> {
    let n: Option<i64> = c
        .prepare_cached(
            "SELECT n FROM scope_counts WHERE account_id = ? AND region_id = ? AND name = ?",
        )?
        .query_row(params![scope.account_id, scope.region_id, name], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(n.unwrap_or(0))
}

// ---- writing --------------------------------------------------------------------------

const INSERT_TASK: &str = "INSERT INTO tasks (invoke_id, instance_id, account_id, region_id, \
     command_id, username, timed, created, updated, inv_created, status, coarse, exit_code, \
     error_code, start_time, finish_time, stop_time, repeats, dropped, output_len, output, kind, \
     resource_group_id) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Stores the invocation and its tasks. The stored counts are those of the tasks'
/// statuses (whatever `inv.counts` says).
pub(super) fn insert_invocation(
    c: &mut Connection,
    command: Option<&CommandRecord>,
    inv: &InvocationRecord,
    tasks: &[TaskRecord],
) -> Result<()> {
    insert_invocation_once(c, command, inv, tasks, None, &[]).map(|_| ())
}

/// Inserts the invocation unless `token` already made one (then returns that one and
/// stores nothing). The token row is written in the same transaction.
pub(super) fn insert_invocation_once(
    c: &mut Connection,
    command: Option<&CommandRecord>,
    inv: &InvocationRecord,
    tasks: &[TaskRecord],
    token: Option<&ClientToken>,
    tags: &[Tag],
) -> Result<Option<PriorInvocation>> {
    if let Some(t) = tasks.iter().find(|t| {
        t.invoke_id != inv.invoke_id
            || t.account_id != inv.account_id
            || t.region_id != inv.region_id
            || t.resource_group_id != inv.resource_group_id
    }) {
        return Err(StoreError::Backend(format!(
            "task {}/{} ({}, {}, group {:?}) does not belong to invocation {} ({}, {}, group {:?})",
            t.invoke_id,
            t.instance_id,
            t.account_id,
            t.region_id,
            t.resource_group_id,
            inv.invoke_id,
            inv.account_id,
            inv.region_id,
            inv.resource_group_id
        )));
    }
    let mut inv = inv.clone();
    inv.counts = tasks
        .iter()
        .map(|t| t.state.status)
        .collect::<StatusCounts>();

    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(token) = token {
        let scope = Scope {
            account_id: inv.account_id.clone(),
            region_id: inv.region_id.clone(),
        };
        if let Some(prior) = find_client_token(&tx, &scope, &token.token)? {
            return Ok(Some(prior));
        }
        tx.prepare_cached(
            "INSERT INTO client_tokens (account_id, region_id, token, digest, invoke_id, \
             command_id, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            inv.account_id,
            inv.region_id,
            token.token,
            token.digest,
            inv.invoke_id,
            inv.command_id,
            inv.created
        ])?;
    }
    if let Some(command) = command {
        super::catalog::insert_command(&tx, command)?;
    }
    tx.prepare_cached(
        "INSERT INTO invocations (invoke_id, account_id, region_id, command_id, command_name, \
         command_description, command_type, command_content, enable_parameter, parameters, \
         working_dir, username, timeout_secs, repeat_mode, timed, frequency, termination_mode, \
         created, stopped_by_hand, counts, invoke_status, overall_status, kind, file_spec, \
         revision, resource_group_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        inv.invoke_id,
        inv.account_id,
        inv.region_id,
        inv.command_id,
        inv.command_name,
        inv.command_description,
        inv.command_type,
        inv.command_content,
        inv.enable_parameter,
        inv.parameters,
        inv.working_dir,
        inv.username,
        inv.timeout_secs,
        inv.repeat_mode,
        inv.timed,
        inv.frequency,
        inv.termination_mode,
        inv.created,
        inv.stopped_by_hand,
        counts_to_text(&inv.counts),
        inv.invoke_status().as_str(),
        inv.overall_status().as_str(),
        inv.kind().as_str(),
        rows::file_spec_to_text(&inv.file),
        to_i64(inv.revision),
        inv.resource_group_id,
    ])?;
    {
        let mut insert = tx.prepare_cached(INSERT_TASK)?;
        for t in tasks {
            let s = &t.state;
            insert.execute(params![
                t.invoke_id,
                t.instance_id,
                t.account_id,
                t.region_id,
                t.command_id,
                t.username,
                t.timed,
                t.created,
                t.updated,
                inv.created,
                s.status.as_str(),
                s.status.coarse().as_str(),
                s.exit_code,
                s.error.map(|e| e.code()),
                s.start_time,
                s.finish_time,
                s.stop_time,
                to_i64(s.repeats),
                to_i64(s.dropped),
                to_i64(t.output_len),
                s.output,
                inv.kind().as_str(),
                t.resource_group_id,
            ])?;
        }
    }
    let kind = inv.kind();
    let mut tally = Tally::default();
    tally.add(invocations_tally(kind, None), 1);
    tally.add(invocations_tally(kind, Some(inv.invoke_status())), 1);
    tally.add(tasks_tally(kind, None), tasks.len() as i64);
    for t in tasks {
        tally.add(tasks_tally(kind, Some(t.state.status.coarse())), 1);
    }
    tally.write(&tx, &inv.account_id, &inv.region_id)?;
    // A command's InvokeTimes and an instance's InvocationCount count command runs.
    if kind == InvocationKind::Command {
        tx.prepare_cached(
            "UPDATE commands SET invoke_times = invoke_times + 1 \
             WHERE command_id = ? AND account_id = ? AND region_id = ?",
        )?
        .execute(params![inv.command_id, inv.account_id, inv.region_id])?;
        let instance_ids: Vec<String> = tasks.iter().map(|t| t.instance_id.clone()).collect();
        super::instances::note_invoked(&tx, &instance_ids, inv.created)?;
    }
    if !tags.is_empty() {
        let scope = Scope {
            account_id: inv.account_id.clone(),
            region_id: inv.region_id.clone(),
        };
        let ids = [inv.invoke_id.clone()];
        super::tags::tag_in(&tx, &scope, TagResource::Invocation, &ids, tags)?;
        if let Some(command) = command {
            let ids = [command.command_id.clone()];
            super::tags::tag_in(&tx, &scope, TagResource::Command, &ids, tags)?;
        }
    }
    tx.commit()?;
    Ok(None)
}

pub(super) fn find_client_token(
    c: &Connection,
    scope: &Scope,
    token: &str,
) -> Result<Option<PriorInvocation>> {
    Ok(c.prepare_cached(
        "SELECT invoke_id, command_id, digest FROM client_tokens \
         WHERE account_id = ? AND region_id = ? AND token = ?",
    )?
    .query_row(params![scope.account_id, scope.region_id, token], |r| {
        Ok(PriorInvocation {
            invoke_id: r.get(0)?,
            command_id: r.get(1)?,
            digest: r.get(2)?,
        })
    })
    .optional()?)
}

/// Writes a task's state (the output view only when `with_output`, as it is the one
/// large column and most events leave it as it was).
fn write_task(c: &Connection, t: &TaskRecord, with_output: bool) -> Result<()> {
    let s = &t.state;
    let state = params![
        t.updated,
        s.status.as_str(),
        s.status.coarse().as_str(),
        s.exit_code,
        s.error.map(|e| e.code()),
        s.start_time,
        s.finish_time,
        s.stop_time,
        to_i64(s.repeats),
        to_i64(s.dropped),
    ];
    const SET: &str = "UPDATE tasks SET updated = ?, status = ?, coarse = ?, exit_code = ?, \
         error_code = ?, start_time = ?, finish_time = ?, stop_time = ?, repeats = ?, dropped = ?";
    let n = if with_output {
        let sql = format!("{SET}, output = ? WHERE invoke_id = ? AND instance_id = ?");
        let rest = params![s.output, t.invoke_id, t.instance_id];
        c.prepare_cached(&sql)?
            .execute(params_from_iter(state.iter().chain(rest.iter())))?
    } else {
        let sql = format!("{SET} WHERE invoke_id = ? AND instance_id = ?");
        let rest = params![t.invoke_id, t.instance_id];
        c.prepare_cached(&sql)?
            .execute(params_from_iter(state.iter().chain(rest.iter())))?
    };
    if n != 1 {
        return Err(StoreError::Backend(format!(
            "task {}/{} vanished while being updated",
            t.invoke_id, t.instance_id
        )));
    }
    Ok(())
}

/// Writes an invocation's counts, stop flag and the statuses derived from them, and
/// tallies the change of its legacy status from `was`.
fn write_counts(
    c: &Connection,
    inv: &InvocationRecord,
    was: InvokeStatus,
    tally: &mut Tally,
) -> Result<()> {
    tally.invocation_moved(inv.kind(), was, inv.invoke_status());
    c.prepare_cached(
        "UPDATE invocations SET counts = ?, stopped_by_hand = ?, invoke_status = ?, \
         overall_status = ? WHERE invoke_id = ?",
    )?
    .execute(params![
        counts_to_text(&inv.counts),
        inv.stopped_by_hand,
        inv.invoke_status().as_str(),
        inv.overall_status().as_str(),
        inv.invoke_id,
    ])?;
    Ok(())
}

fn load_task(c: &Connection, invoke_id: &str, instance_id: &str) -> Result<Option<TaskRecord>> {
    let sql =
        format!("SELECT {TASK_COLS} FROM tasks t WHERE t.invoke_id = ? AND t.instance_id = ?");
    Ok(c.prepare_cached(&sql)?
        .query_row([invoke_id, instance_id], rows::task)
        .optional()?)
}

fn load_invocation(c: &Connection, invoke_id: &str) -> Result<InvocationRecord> {
    let sql = format!("SELECT {INVOCATION_COLS} FROM invocations i WHERE i.invoke_id = ?");
    c.prepare_cached(&sql)?
        .query_row([invoke_id], rows::invocation)
        .optional()?
        .ok_or_else(|| StoreError::Backend(format!("invocation {invoke_id} is missing")))
}

pub(super) fn apply_task_event(
    c: &mut Connection,
    invoke_id: &str,
    instance_id: &str,
    event: TaskEvent,
) -> Result<Option<TaskRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let task = apply_event_in(&tx, invoke_id, instance_id, event)?;
    tx.commit()?;
    Ok(task)
}

/// Applies many events and appends in one transaction.
pub(super) fn apply_batch(c: &mut Connection, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        out.push(match op {
            WriteOp::Event {
                invoke_id,
                instance_id,
                event,
            } => WriteOutcome::Task(apply_event_in(&tx, &invoke_id, &instance_id, event)?),
            WriteOp::Output {
                invoke_id,
                instance_id,
                offset,
                data,
                cap,
            } => WriteOutcome::Output(append_output_in(
                &tx,
                &invoke_id,
                &instance_id,
                offset,
                &data,
                cap,
            )?),
            WriteOp::Seen {
                instance_id,
                at,
                agent_version,
                hostname,
                os_type,
                task_isolation,
            } => {
                super::instances::touch_instance(
                    &tx,
                    &instance_id,
                    at,
                    &agent_version,
                    &hostname,
                    &os_type,
                    &task_isolation,
                )?;
                WriteOutcome::Seen
            }
        });
    }
    tx.commit()?;
    Ok(out)
}

/// One event inside the caller's transaction.
fn apply_event_in(
    tx: &Connection,
    invoke_id: &str,
    instance_id: &str,
    event: TaskEvent,
) -> Result<Option<TaskRecord>> {
    let Some(mut task) = load_task(tx, invoke_id, instance_id)? else {
        return Ok(None);
    };
    let before = task.state.clone();
    // A repeating task's run is kept in its history, even when the task has ended
    // since (a run made while the server was away, reported after a stop): it happened.
    if let TaskEvent::RunFinished {
        run,
        status,
        exit_code,
        error,
        start_time,
        finish_time,
        output,
        dropped,
        ..
    } = &event
    {
        let (status, error) = if status.is_terminal() {
            (*status, *error)
        } else {
            (
                InvocationStatus::Error,
                Some(oca_domain::task_error::TaskError::ExecutionException),
            )
        };
        tx.prepare_cached(
            "INSERT OR IGNORE INTO task_runs (invoke_id, instance_id, run, status, exit_code, \
             error_code, start_time, finish_time, dropped, output) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            invoke_id,
            instance_id,
            to_i64(*run),
            status.as_str(),
            exit_code,
            error.map(|e| e.code()),
            start_time,
            finish_time,
            to_i64(*dropped),
            output,
        ])?;
    }
    if !task.state.apply(event) {
        return Ok(Some(task));
    }
    task.updated = now_millis();
    write_task(tx, &task, task.state.output != before.output)?;
    if task.state.status != before.status {
        let mut inv = load_invocation(tx, invoke_id)?;
        let was = inv.invoke_status();
        inv.counts.moved(before.status, task.state.status);
        let mut tally = Tally::default();
        tally.task_moved(inv.kind(), before.status, task.state.status);
        write_counts(tx, &inv, was, &mut tally)?;
        tally.write(tx, &inv.account_id, &inv.region_id)?;
    }
    Ok(Some(task))
}

/// The runs of a repeating invocation (of one instance when `instance_id` is set),
/// newest first, then by instance.
pub(super) fn list_runs(
    c: &Connection,
    scope: &Scope,
    invoke_id: &str,
    instance_id: Option<&str>,
    page: Page,
) -> Result<Listing<RunRecord>> {
    let tx = c.unchecked_transaction()?;
    if get_invocation(&tx, scope, invoke_id)?.is_none() {
        return Ok(Listing {
            total: 0,
            items: Vec::new(),
            next: None,
        });
    }
    let mut w = Where::new();
    w.and("r.invoke_id = ?", invoke_id.to_string());
    if let Some(i) = instance_id {
        w.and("r.instance_id = ?", i.to_string());
    }
    let listing = rows::listing(
        &tx,
        "r.invoke_id, r.instance_id, r.run, r.status, r.exit_code, r.error_code, \
         r.start_time, r.finish_time, r.output, r.dropped",
        "task_runs r",
        &w,
        "r.run DESC, r.instance_id",
        page,
        rows::run,
    )?;
    tx.commit()?;
    Ok(listing)
}

/// Applies ModifyInvocationAttribute's changes and bumps the revision; the invocation
/// after the change, `None` if there is none in scope.
pub(super) fn modify_invocation(
    c: &mut Connection,
    scope: &Scope,
    invoke_id: &str,
    change: &InvocationChange,
) -> Result<Option<InvocationRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut inv) = get_invocation(&tx, scope, invoke_id)? else {
        return Ok(None);
    };
    if let Some(content) = &change.command_content {
        inv.command_content = content.clone();
    }
    if let Some(enable) = change.enable_parameter {
        inv.enable_parameter = enable;
    }
    if let Some(parameters) = &change.parameters {
        inv.parameters = parameters.clone();
    }
    if let Some(frequency) = &change.frequency {
        inv.frequency = frequency.clone();
    }
    inv.revision += 1;
    tx.prepare_cached(
        "UPDATE invocations SET command_content = ?, enable_parameter = ?, parameters = ?, \
         frequency = ?, revision = ? WHERE invoke_id = ?",
    )?
    .execute(params![
        inv.command_content,
        inv.enable_parameter,
        inv.parameters,
        inv.frequency,
        to_i64(inv.revision),
        inv.invoke_id,
    ])?;
    tx.commit()?;
    Ok(Some(inv))
}

/// Marks the invocation stopped by hand and applies `StopRequested` to the selected
/// tasks. Only runs that have not ended are loaded: an ended run never changes
/// (`TaskState::apply` ignores every event once `status.is_terminal()`).
pub(super) fn stop_invocation(
    c: &mut Connection,
    scope: &Scope,
    invoke_id: &str,
    only: Option<&[String]>,
    at: Millis,
) -> Result<Vec<TaskRecord>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(mut inv) = get_invocation(&tx, scope, invoke_id)? else {
        return Ok(Vec::new());
    };
    let live: Vec<&str> = InvocationStatus::LIVE.iter().map(|s| s.as_str()).collect();
    let tasks: Vec<TaskRecord> = match only {
        None => {
            let sql = format!(
                "SELECT {TASK_COLS} FROM tasks t WHERE t.invoke_id = ? \
                 AND t.status IN (SELECT value FROM json_each(?)) ORDER BY t.instance_id"
            );
            tx.prepare_cached(&sql)?
                .query_map(params![invoke_id, json_list(&live)], rows::task)?
                .collect::<rusqlite::Result<_>>()?
        }
        Some(ids) => {
            let sql = format!(
                "SELECT {TASK_COLS} FROM tasks t WHERE t.invoke_id = ? \
                 AND t.status IN (SELECT value FROM json_each(?)) \
                 AND t.instance_id IN (SELECT value FROM json_each(?)) ORDER BY t.instance_id"
            );
            tx.prepare_cached(&sql)?
                .query_map(
                    params![invoke_id, json_list(&live), json_list(ids)],
                    rows::task,
                )?
                .collect::<rusqlite::Result<_>>()?
        }
    };
    let was = inv.invoke_status();
    inv.stopped_by_hand = true;
    let mut tally = Tally::default();
    let mut changed = Vec::new();
    for mut task in tasks {
        let before = task.state.clone();
        if task.state.apply(TaskEvent::StopRequested { at }) {
            task.updated = at;
            write_task(&tx, &task, task.state.output != before.output)?;
            inv.counts.moved(before.status, task.state.status);
            tally.task_moved(inv.kind(), before.status, task.state.status);
            changed.push(task);
        }
    }
    write_counts(&tx, &inv, was, &mut tally)?;
    tally.write(&tx, &inv.account_id, &inv.region_id)?;
    tx.commit()?;
    Ok(changed)
}

/// Appends part of a run's whole output; see [`crate::Store::append_output`].
///
/// - a run that does not exist stores nothing and answers `stored_len: 0`;
/// - once `cap` bytes are stored nothing more is, and no gap is reported (there is
///   nothing left to resend for);
/// - a chunk starting past the stored bytes is a gap and stores nothing;
/// - bytes already stored are skipped, and only what fits under `cap` is kept.
pub(super) fn append_output(
    c: &mut Connection,
    invoke_id: &str,
    instance_id: &str,
    offset: u64,
    data: &[u8],
    cap: u64,
) -> Result<OutputAppend> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let appended = append_output_in(&tx, invoke_id, instance_id, offset, data, cap)?;
    tx.commit()?;
    Ok(appended)
}

/// One append inside the caller's transaction.
fn append_output_in(
    tx: &Connection,
    invoke_id: &str,
    instance_id: &str,
    offset: u64,
    data: &[u8],
    cap: u64,
) -> Result<OutputAppend> {
    let stored: Option<i64> = tx
        .prepare_cached("SELECT output_len FROM tasks WHERE invoke_id = ? AND instance_id = ?")?
        .query_row([invoke_id, instance_id], |r| r.get(0))
        .optional()?;
    let Some(stored) = stored else {
        return Ok(OutputAppend {
            stored_len: 0,
            gap: false,
        });
    };
    let stored = stored.max(0) as u64;
    let unchanged = |gap| {
        Ok(OutputAppend {
            stored_len: stored,
            gap,
        })
    };
    if stored >= cap {
        return unchanged(false);
    }
    if offset > stored {
        return unchanged(true);
    }
    // offset <= stored < cap: skip what is stored, keep what fits.
    let skip = usize::try_from(stored - offset).unwrap_or(usize::MAX);
    if skip >= data.len() {
        return unchanged(false);
    }
    let room = usize::try_from(cap - stored).unwrap_or(usize::MAX);
    let new = &data[skip..];
    let new = &new[..new.len().min(room)];
    let stored_len = stored + new.len() as u64;
    tx.prepare_cached(
        "INSERT INTO output_chunks (invoke_id, instance_id, pos, data) VALUES (?, ?, ?, ?)",
    )?
    .execute(params![invoke_id, instance_id, to_i64(stored), new])?;
    tx.prepare_cached("UPDATE tasks SET output_len = ? WHERE invoke_id = ? AND instance_id = ?")?
        .execute(params![to_i64(stored_len), invoke_id, instance_id])?;
    Ok(OutputAppend {
        stored_len,
        gap: false,
    })
}

// ---- reading --------------------------------------------------------------------------

pub(super) fn get_invocation(
    c: &Connection,
    scope: &Scope,
    invoke_id: &str,
) -> Result<Option<InvocationRecord>> {
    let sql = format!(
        "SELECT {INVOCATION_COLS} FROM invocations i \
         WHERE i.invoke_id = ? AND i.account_id = ? AND i.region_id = ?"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(
            params![invoke_id, scope.account_id, scope.region_id],
            rows::invocation,
        )
        .optional()?)
}

pub(super) fn get_task(
    c: &Connection,
    invoke_id: &str,
    instance_id: &str,
) -> Result<Option<TaskRecord>> {
    load_task(c, invoke_id, instance_id)
}

/// How a listing is read: its conditions, the tables, the key of a row and the order,
/// spelled so that SQLite drives the page from the intended index (the tests ask
/// SQLite for the plan of each).
pub(super) struct Query {
    pub(super) w: Where,
    pub(super) from: &'static str,
    pub(super) key: &'static str,
    pub(super) order: &'static str,
    /// The keyset position (a condition and its arguments), for the page only: the
    /// total counts every row.
    pub(super) after: Option<(String, Vec<rusqlite::types::Value>)>,
}

/// The query of [`list_invocations`].
///
/// With an instance, it walks that instance's tasks: the `tasks_instance` index has
/// them in order, with their scope (a task's scope is its invocation's). The
/// invocations are joined only when a filter needs them; CROSS JOIN keeps SQLite from
/// reordering the join, so every other condition (the resource group included) is
/// checked on the joined invocation rather than choosing the index. Without an
/// instance, the invocations' own indexes serve, each starting with the scope and the
/// kind: `invocations_group` for a resource group.
pub(super) fn invocations_query(scope: &Scope, f: &InvocationFilter) -> Query {
    let kind = f.kind.as_str().to_string();
    let (mut w, from, key, order) = match &f.instance_id {
        Some(instance_id) => {
            let mut w = Where::scope("t", scope);
            w.and("t.kind = ?", kind);
            w.and("t.instance_id = ?", instance_id.clone());
            let instance_only = InvocationFilter {
                kind: f.kind,
                instance_id: f.instance_id.clone(),
                after: f.after.clone(),
                ..Default::default()
            };
            let from = if *f == instance_only {
                "tasks t"
            } else {
                "tasks t CROSS JOIN invocations i ON i.invoke_id = t.invoke_id"
            };
            (w, from, "t.invoke_id", "t.inv_created DESC, t.invoke_id")
        }
        None => {
            let mut w = Where::scope("i", scope);
            w.and("i.kind = ?", kind);
            (
                w,
                "invocations i",
                "i.invoke_id",
                "i.created DESC, i.invoke_id",
            )
        }
    };
    w.eq_opt("i.invoke_id", &f.invoke_id);
    w.eq_opt("i.command_id", &f.command_id);
    w.eq_opt("i.command_name", &f.command_name);
    w.eq_opt("i.command_type", &f.command_type);
    if let Some(timed) = f.timed {
        w.and("i.timed = ?", timed);
    }
    if let Some(s) = f.invoke_status {
        w.and("i.invoke_status = ?", s.as_str().to_string());
    }
    if let Some(s) = f.overall_status {
        w.and("i.overall_status = ?", s.as_str().to_string());
    }
    w.eq_opt("i.repeat_mode", &f.repeat_mode);
    w.eq_opt("i.resource_group_id", &f.resource_group_id);
    for tag in &f.tags {
        super::tags::carries(&mut w, "i.invoke_id", scope, TagResource::Invocation, tag);
    }
    let after = f.after.as_ref().map(|c| match f.instance_id {
        Some(_) => after_cond("t.inv_created", "t.invoke_id", None, c),
        None => after_cond("i.created", "i.invoke_id", None, c),
    });
    Query {
        w,
        from,
        key,
        order,
        after,
    }
}

/// Newest first (`created` desc, then `invoke_id`). The page is chosen on the indexes
/// (keys only), then its rows are read one by one.
pub(super) fn list_invocations(
    c: &Connection,
    scope: &Scope,
    f: &InvocationFilter,
    page: Page,
    with_output: bool,
) -> Result<Listing<InvocationView>> {
    let tx = c.unchecked_transaction()?;
    let q = invocations_query(scope, f);
    // The tallies count a whole scope and kind (per legacy status): they answer only a
    // listing with no other filter (a resource group is one: it is counted).
    let status_only = InvocationFilter {
        kind: f.kind,
        invoke_status: f.invoke_status,
        after: f.after.clone(),
        ..Default::default()
    };
    let tally = (*f == status_only).then(|| invocations_tally(f.kind, f.invoke_status));
    let (total, ids, more): (i64, Vec<String>, bool) =
        count_and_page(&tx, scope, tally.as_deref(), &q, page)?;
    let mut items = Vec::new();
    if !ids.is_empty() {
        let mut inv_stmt = tx.prepare_cached(&format!(
            "SELECT {INVOCATION_COLS} FROM invocations i WHERE i.invoke_id = ?"
        ))?;
        let cols = if with_output {
            TASK_COLS
        } else {
            TASK_COLS_NO_OUTPUT
        };
        let mut task_stmt = tx.prepare_cached(&format!(
            "SELECT {cols} FROM tasks t WHERE t.invoke_id = ? ORDER BY t.instance_id"
        ))?;
        for id in ids {
            let invocation = inv_stmt.query_row([id], rows::invocation)?;
            let tasks = task_stmt
                .query_map([&invocation.invoke_id], rows::task)?
                .collect::<rusqlite::Result<_>>()?;
            items.push(InvocationView { invocation, tasks });
        }
    }
    tx.commit()?;
    let next = items.last().filter(|_| more).map(|v| Cursor {
        created: v.invocation.created,
        invoke_id: v.invocation.invoke_id.clone(),
        instance_id: String::new(),
    });
    Ok(Listing {
        total: total as u64,
        items,
        next,
    })
}

/// The query of [`list_results`] (with an invoke id, the caller has checked that the
/// invocation is in scope and of the kind).
///
/// It drives from the smallest index range: one invocation's tasks (the primary key;
/// their scope is the invocation's), else one instance's tasks (the other conditions,
/// the resource group included, then written with a unary `+` so that SQLite, which
/// has no statistics, does not prefer a command's, a status's or a group's tasks),
/// else the scope's: `tasks_scope`, or the index of the one filter given
/// (`tasks_command`, `tasks_coarse`, `tasks_group`). The order is the same in every
/// case (newest invocation, then invoke id, then instance id), spelled so that the
/// chosen index already has it.
pub(super) fn results_query(scope: &Scope, f: &ResultFilter) -> Query {
    let kind = f.kind.as_str().to_string();
    let (mut w, order, secondary) = if let Some(invoke_id) = &f.invoke_id {
        let mut w = Where::new();
        w.and("t.invoke_id = ?", invoke_id.clone());
        (w, "t.instance_id", "")
    } else if f.instance_id.is_some() {
        let mut w = Where::scope("t", scope);
        w.and("t.kind = ?", kind);
        (w, "t.inv_created DESC, t.invoke_id", "+")
    } else {
        let mut w = Where::scope("t", scope);
        w.and("t.kind = ?", kind);
        (w, "t.inv_created DESC, t.invoke_id, t.instance_id", "")
    };
    w.eq_opt("t.instance_id", &f.instance_id);
    w.eq_opt(&format!("{secondary}t.command_id"), &f.command_id);
    if let Some(s) = f.record_status {
        w.and(&format!("{secondary}t.coarse = ?"), s.as_str().to_string());
    }
    w.eq_opt(
        &format!("{secondary}t.resource_group_id"),
        &f.resource_group_id,
    );
    let after = f.after.as_ref().map(|c| {
        if f.invoke_id.is_some() {
            (
                "t.instance_id > ?".to_string(),
                vec![c.instance_id.clone().into()],
            )
        } else if f.instance_id.is_some() {
            after_cond("t.inv_created", "t.invoke_id", None, c)
        } else {
            after_cond("t.inv_created", "t.invoke_id", Some("t.instance_id"), c)
        }
    });
    Query {
        w,
        from: "tasks t",
        key: "t.rowid",
        order,
        after,
    }
}

/// Tasks in scope, newest invocation first (`created` desc, then `invoke_id`), then by
/// instance id.
pub(super) fn list_results(
    c: &Connection,
    scope: &Scope,
    f: &ResultFilter,
    page: Page,
) -> Result<Listing<TaskRecord>> {
    let tx = c.unchecked_transaction()?;
    if let Some(invoke_id) = &f.invoke_id {
        match get_invocation(&tx, scope, invoke_id)? {
            Some(inv) if inv.kind() == f.kind => {}
            _ => {
                return Ok(Listing {
                    total: 0,
                    items: Vec::new(),
                    next: None,
                })
            }
        }
    }
    let q = results_query(scope, f);
    // As for invocations: the tallies count a whole scope and kind (per coarse status),
    // so any other filter, a resource group included, is counted.
    let status_only = ResultFilter {
        kind: f.kind,
        record_status: f.record_status,
        after: f.after.clone(),
        ..Default::default()
    };
    let tally = (*f == status_only).then(|| tasks_tally(f.kind, f.record_status));
    let (total, ids, more): (i64, Vec<i64>, bool) =
        count_and_page(&tx, scope, tally.as_deref(), &q, page)?;
    let mut items = Vec::new();
    let mut next = None;
    if !ids.is_empty() {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {TASK_COLS} FROM tasks t WHERE t.rowid = ?"
        ))?;
        for id in &ids {
            items.push(stmt.query_row([id], rows::task)?);
        }
        if more {
            let last = ids[ids.len() - 1];
            next = Some(
                tx.prepare_cached(
                    "SELECT inv_created, invoke_id, instance_id FROM tasks WHERE rowid = ?",
                )?
                .query_row([last], |r| {
                    Ok(Cursor {
                        created: r.get(0)?,
                        invoke_id: r.get(1)?,
                        instance_id: r.get(2)?,
                    })
                })?,
            );
        }
    }
    tx.commit()?;
    Ok(Listing {
        total: total as u64,
        items,
        next,
    })
}

/// The instance's tasks in one of `statuses`, oldest invocation first. (The `+` in
/// the ORDER BY keeps SQLite on the `(instance_id, status)` index rather than walking
/// all of the instance's tasks in order.)
pub(super) fn tasks_for_instance(
    c: &Connection,
    instance_id: &str,
    statuses: &[InvocationStatus],
) -> Result<Vec<DispatchItem>> {
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let sql = format!(
        "SELECT {TASK_COLS}, {INVOCATION_COLS} FROM tasks t \
         JOIN invocations i ON i.invoke_id = t.invoke_id \
         WHERE t.instance_id = ? AND t.status IN (SELECT value FROM json_each(?)) \
         ORDER BY +t.inv_created, +t.invoke_id"
    );
    let tx = c.unchecked_transaction()?;
    let items = tx
        .prepare_cached(&sql)?
        .query_map(params![instance_id, json_list(&names)], |r| {
            Ok(DispatchItem {
                task: rows::task_at(r, 0)?,
                invocation: rows::invocation_at(r, TASK_N)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    tx.commit()?;
    Ok(items)
}

/// Pending tasks created before `before`, oldest first.
pub(super) fn pending_tasks_before(
    c: &Connection,
    before: Millis,
    limit: u64,
) -> Result<Vec<TaskRecord>> {
    // The literal 'Pending' matches the partial index `tasks_pending`.
    debug_assert_eq!(InvocationStatus::Pending.as_str(), "Pending");
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks t WHERE t.status = 'Pending' AND t.created < ? \
         ORDER BY t.created LIMIT ?"
    );
    let tasks = c
        .prepare_cached(&sql)?
        .query_map(params![before, to_i64(limit)], rows::task)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(tasks)
}

/// (A repeating task's agent keeps its schedule while away and reports its runs when
/// it returns: its runs are never declared lost.)
pub(super) fn overdue_tasks(
    c: &Connection,
    now: Millis,
    grace_ms: i64,
    limit: u64,
) -> Result<Vec<TaskRecord>> {
    // The status literals match the partial index `tasks_started`.
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks t JOIN invocations i ON i.invoke_id = t.invoke_id \
         WHERE t.status IN ('Running', 'Stopping') AND i.repeat_mode = 'Once' \
         AND t.start_time + i.timeout_secs * 1000 + ? < ? ORDER BY t.start_time LIMIT ?"
    );
    let tasks = c
        .prepare_cached(&sql)?
        .query_map(params![grace_ms, now, to_i64(limit)], rows::task)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(tasks)
}

pub(super) fn output_range(
    c: &Connection,
    invoke_id: &str,
    instance_id: &str,
    offset: u64,
    max: u64,
) -> Result<Option<(u64, Vec<u8>)>> {
    let tx = c.unchecked_transaction()?;
    let len: Option<i64> = tx
        .prepare_cached("SELECT output_len FROM tasks WHERE invoke_id = ? AND instance_id = ?")?
        .query_row([invoke_id, instance_id], |r| r.get(0))
        .optional()?;
    let Some(len) = len else {
        return Ok(None);
    };
    let len = len.max(0) as u64;
    let end = len.min(offset.saturating_add(max));
    if offset >= end {
        return Ok(Some((len, Vec::new())));
    }
    // Chunks are contiguous, each at its byte position: the range starts in the last
    // chunk that begins at or before `offset`.
    let first: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(MAX(pos), 0) FROM output_chunks              WHERE invoke_id = ? AND instance_id = ? AND pos <= ?",
        )?
        .query_row(params![invoke_id, instance_id, to_i64(offset)], |r| r.get(0))?;
    let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
    let mut stmt = tx.prepare_cached(
        "SELECT pos, data FROM output_chunks          WHERE invoke_id = ? AND instance_id = ? AND pos >= ? AND pos < ? ORDER BY pos",
    )?;
    let mut chunks = stmt.query(params![invoke_id, instance_id, first, to_i64(end)])?;
    while let Some(row) = chunks.next()? {
        let pos = row.get::<_, i64>(0)?.max(0) as u64;
        let data = row
            .get_ref(1)?
            .as_blob()
            .map_err(|e| StoreError::Backend(format!("output chunk: {e}")))?;
        let from = usize::try_from(offset.saturating_sub(pos)).unwrap_or(usize::MAX);
        let to = usize::try_from(end - pos).unwrap_or(usize::MAX);
        if from < data.len() {
            out.extend_from_slice(&data[from..to.min(data.len())]);
        }
    }
    drop(chunks);
    drop(stmt);
    tx.commit()?;
    Ok(Some((len, out)))
}
