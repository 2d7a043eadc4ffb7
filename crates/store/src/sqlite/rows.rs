//! Rows to records and back, and the small SQL builder the listings share.

use crate::{AccessKeyRecord, ActivationRecord, CommandRecord, InstanceRecord, InvocationRecord};
use crate::{FileSpec, Page, RunRecord, Scope, TaskRecord};
use oca_domain::status::{InvocationStatus, StatusCounts};
use oca_domain::task::TaskState;
use oca_domain::task_error::TaskError;
use rusqlite::types::{Type, Value};
use rusqlite::Row;
use std::fmt;

/// A value in the database this build cannot read.
#[derive(Debug)]
struct BadValue(String);

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadValue {}

fn bad(idx: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(BadValue(what)))
}

/// Integers the records keep unsigned are stored as SQLite's signed 64-bit integers.
pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn get_u64(r: &Row, idx: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(idx)?.max(0) as u64)
}

/// `LIMIT ? OFFSET ?` values of a page.
pub(super) fn page_args(page: Page) -> [Value; 2] {
    [
        Value::Integer(to_i64(page.limit)),
        Value::Integer(to_i64(page.offset)),
    ]
}

// ---- statuses and counts ------------------------------------------------------------

fn status_at(r: &Row, idx: usize) -> rusqlite::Result<InvocationStatus> {
    let s: String = r.get(idx)?;
    s.parse()
        .map_err(|_| bad(idx, format!("unknown status {s:?}")))
}

fn error_at(r: &Row, idx: usize) -> rusqlite::Result<Option<TaskError>> {
    match r.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(code) => TaskError::from_code(&code)
            .map(Some)
            .ok_or_else(|| bad(idx, format!("unknown error code {code:?}"))),
    }
}

/// The counts as a JSON object of the non-zero entries, keyed by status name (so a
/// status added later does not shift the others).
pub(super) fn counts_to_text(counts: &StatusCounts) -> String {
    let map: serde_json::Map<String, serde_json::Value> = InvocationStatus::ALL
        .iter()
        .filter(|s| counts.get(**s) > 0)
        .map(|s| (s.as_str().to_string(), counts.get(*s).into()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

pub(super) fn counts_at(r: &Row, idx: usize) -> rusqlite::Result<StatusCounts> {
    let text: String = r.get(idx)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| bad(idx, format!("counts {text:?}: {e}")))?;
    let mut counts = StatusCounts::default();
    for (name, n) in map {
        let status: InvocationStatus = name
            .parse()
            .map_err(|_| bad(idx, format!("unknown status {name:?} in counts")))?;
        let n = n
            .as_u64()
            .ok_or_else(|| bad(idx, format!("count {n} of {name}")))?;
        let i = InvocationStatus::ALL
            .iter()
            .position(|s| *s == status)
            .expect("parsed statuses are in ALL");
        counts.0[i] = n;
    }
    Ok(counts)
}

// ---- tasks ----------------------------------------------------------------------------

/// The task columns up to (not including) the output view, for a table aliased `t`.
macro_rules! task_head {
    () => {
        "t.invoke_id, t.instance_id, t.account_id, t.region_id, t.command_id, t.username, \
         t.timed, t.created, t.updated, t.status, t.exit_code, t.error_code, t.start_time, \
         t.finish_time, t.stop_time, t.repeats, t.dropped, t.output_len, t.resource_group_id"
    };
}

/// Every task column.
pub(super) const TASK_COLS: &str = concat!(task_head!(), ", t.output");
/// Every task column, the output view left empty.
pub(super) const TASK_COLS_NO_OUTPUT: &str = concat!(task_head!(), ", X''");
/// How many columns `TASK_COLS` has.
pub(super) const TASK_N: usize = 20;

/// Reads a task from columns `o..o + TASK_N`.
pub(super) fn task_at(r: &Row, o: usize) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        invoke_id: r.get(o)?,
        instance_id: r.get(o + 1)?,
        account_id: r.get(o + 2)?,
        region_id: r.get(o + 3)?,
        command_id: r.get(o + 4)?,
        username: r.get(o + 5)?,
        timed: r.get(o + 6)?,
        created: r.get(o + 7)?,
        updated: r.get(o + 8)?,
        state: TaskState {
            status: status_at(r, o + 9)?,
            exit_code: r.get(o + 10)?,
            error: error_at(r, o + 11)?,
            start_time: r.get(o + 12)?,
            finish_time: r.get(o + 13)?,
            stop_time: r.get(o + 14)?,
            repeats: get_u64(r, o + 15)?,
            dropped: get_u64(r, o + 16)?,
            output: r.get(o + 19)?,
        },
        output_len: get_u64(r, o + 17)?,
        resource_group_id: r.get(o + 18)?,
    })
}

pub(super) fn task(r: &Row) -> rusqlite::Result<TaskRecord> {
    task_at(r, 0)
}

/// A run of a repeating task: invoke_id, instance_id, run, status, exit_code,
/// error_code, start_time, finish_time, output, dropped.
pub(super) fn run(r: &Row) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        invoke_id: r.get(0)?,
        instance_id: r.get(1)?,
        run: get_u64(r, 2)?,
        status: status_at(r, 3)?,
        exit_code: r.get(4)?,
        error: error_at(r, 5)?,
        start_time: r.get(6)?,
        finish_time: r.get(7)?,
        output: r.get(8)?,
        dropped: get_u64(r, 9)?,
    })
}

// ---- invocations ------------------------------------------------------------------------

pub(super) const INVOCATION_COLS: &str = "i.invoke_id, i.account_id, i.region_id, i.command_id, \
     i.command_name, i.command_description, i.command_type, i.command_content, \
     i.enable_parameter, i.parameters, i.working_dir, i.username, i.timeout_secs, \
     i.repeat_mode, i.timed, i.frequency, i.termination_mode, i.created, i.stopped_by_hand, \
     i.counts, i.file_spec, i.revision, i.resource_group_id";

pub(super) fn invocation_at(r: &Row, o: usize) -> rusqlite::Result<InvocationRecord> {
    Ok(InvocationRecord {
        invoke_id: r.get(o)?,
        account_id: r.get(o + 1)?,
        region_id: r.get(o + 2)?,
        command_id: r.get(o + 3)?,
        command_name: r.get(o + 4)?,
        command_description: r.get(o + 5)?,
        command_type: r.get(o + 6)?,
        command_content: r.get(o + 7)?,
        enable_parameter: r.get(o + 8)?,
        parameters: r.get(o + 9)?,
        working_dir: r.get(o + 10)?,
        username: r.get(o + 11)?,
        timeout_secs: r.get(o + 12)?,
        repeat_mode: r.get(o + 13)?,
        timed: r.get(o + 14)?,
        frequency: r.get(o + 15)?,
        termination_mode: r.get(o + 16)?,
        created: r.get(o + 17)?,
        stopped_by_hand: r.get(o + 18)?,
        counts: counts_at(r, o + 19)?,
        file: file_spec_at(r, o + 20)?,
        revision: get_u64(r, o + 21)?,
        resource_group_id: r.get(o + 22)?,
    })
}

/// A file delivery's spec as stored (JSON), `None` for a command run.
pub(super) fn file_spec_to_text(spec: &Option<FileSpec>) -> Option<String> {
    spec.as_ref()
        .map(|s| serde_json::to_string(s).expect("a file spec serializes"))
}

fn file_spec_at(r: &Row, idx: usize) -> rusqlite::Result<Option<FileSpec>> {
    match r.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| bad(idx, format!("file spec {text:?}: {e}"))),
    }
}

pub(super) fn invocation(r: &Row) -> rusqlite::Result<InvocationRecord> {
    invocation_at(r, 0)
}

// ---- the rest -------------------------------------------------------------------------

pub(super) const ACCESS_KEY_COLS: &str =
    "access_key_id, secret_sealed, account_id, enabled, created";

pub(super) fn access_key(r: &Row) -> rusqlite::Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        access_key_id: r.get(0)?,
        secret_sealed: r.get(1)?,
        account_id: r.get(2)?,
        enabled: r.get(3)?,
        created: r.get(4)?,
    })
}

pub(super) const COMMAND_COLS: &str = "command_id, account_id, region_id, name, description, \
     command_type, content, working_dir, timeout_secs, enable_parameter, parameter_names, \
     created, invoke_times, visible, resource_group_id";

pub(super) fn command(r: &Row) -> rusqlite::Result<CommandRecord> {
    let names: String = r.get(10)?;
    Ok(CommandRecord {
        command_id: r.get(0)?,
        account_id: r.get(1)?,
        region_id: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        command_type: r.get(5)?,
        content: r.get(6)?,
        working_dir: r.get(7)?,
        timeout_secs: r.get(8)?,
        enable_parameter: r.get(9)?,
        parameter_names: serde_json::from_str(&names)
            .map_err(|e| bad(10, format!("parameter names {names:?}: {e}")))?,
        created: r.get(11)?,
        invoke_times: r.get(12)?,
        visible: r.get(13)?,
        resource_group_id: r.get(14)?,
    })
}

pub(super) fn names_to_text(names: &[String]) -> String {
    serde_json::to_string(names).expect("strings serialize")
}

pub(super) const ACTIVATION_COLS: &str = "activation_id, account_id, region_id, code_hash, \
     instance_name, description, instance_count, registered_count, ip_address_range, created, \
     expires, disabled, resource_group_id, deregistered_count";

pub(super) fn activation(r: &Row) -> rusqlite::Result<ActivationRecord> {
    Ok(ActivationRecord {
        activation_id: r.get(0)?,
        account_id: r.get(1)?,
        region_id: r.get(2)?,
        code_hash: r.get(3)?,
        instance_name: r.get(4)?,
        description: r.get(5)?,
        instance_count: r.get(6)?,
        registered_count: r.get(7)?,
        ip_address_range: r.get(8)?,
        created: r.get(9)?,
        expires: r.get(10)?,
        disabled: r.get(11)?,
        resource_group_id: r.get(12)?,
        deregistered_count: r.get(13)?,
    })
}

pub(super) const INSTANCE_COLS: &str = "instance_id, account_id, region_id, name, hostname, \
     os_type, agent_version, machine_id, activation_id, token_hash, registered, last_heartbeat, \
     last_invoked, invocation_count, resource_group_id, task_isolation";

pub(super) fn instance(r: &Row) -> rusqlite::Result<InstanceRecord> {
    Ok(InstanceRecord {
        instance_id: r.get(0)?,
        account_id: r.get(1)?,
        region_id: r.get(2)?,
        name: r.get(3)?,
        hostname: r.get(4)?,
        os_type: r.get(5)?,
        agent_version: r.get(6)?,
        machine_id: r.get(7)?,
        activation_id: r.get(8)?,
        token_hash: r.get(9)?,
        registered: r.get(10)?,
        last_heartbeat: r.get(11)?,
        last_invoked: r.get(12)?,
        invocation_count: r.get(13)?,
        resource_group_id: r.get(14)?,
        task_isolation: r.get(15)?,
    })
}

/// A list of strings as one JSON parameter, for `x IN (SELECT value FROM json_each(?))`:
/// one prepared statement whatever the list's length.
pub(super) fn json_list<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&v).expect("strings serialize")
}

// ---- simple listings --------------------------------------------------------------------

/// A listing read in two statements in the caller's transaction: the count of the rows
/// of `from` that `w` matches, and the page of them in `order`, read as `cols` by `row`.
pub(super) fn listing<T>(
    tx: &rusqlite::Connection,
    cols: &str,
    from: &str,
    w: &Where,
    order: &str,
    page: Page,
    row: fn(&Row) -> rusqlite::Result<T>,
) -> crate::Result<crate::Listing<T>> {
    let total: i64 = tx
        .prepare_cached(&format!("SELECT COUNT(*) FROM {from} WHERE {}", w.sql()))?
        .query_row(rusqlite::params_from_iter(&w.args), |r| r.get(0))?;
    let sql = format!(
        "SELECT {cols} FROM {from} WHERE {} ORDER BY {order} LIMIT ? OFFSET ?",
        w.sql()
    );
    let items = tx
        .prepare_cached(&sql)?
        .query_map(
            rusqlite::params_from_iter(w.args.iter().chain(page_args(page).iter())),
            row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(crate::Listing {
        total: total.max(0) as u64,
        items,
        next: None,
    })
}

// ---- WHERE builder ------------------------------------------------------------------

/// A conjunction of conditions and their positional arguments.
pub(super) struct Where {
    conds: Vec<String>,
    pub(super) args: Vec<Value>,
}

impl Where {
    /// No condition yet.
    pub(super) fn new() -> Self {
        Where {
            conds: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Starts with the scope condition on table alias `alias`.
    pub(super) fn scope(alias: &str, scope: &Scope) -> Self {
        let mut w = Where::new();
        w.and(&format!("{alias}.account_id = ?"), scope.account_id.clone());
        w.and(&format!("{alias}.region_id = ?"), scope.region_id.clone());
        w
    }

    /// Adds `cond` (with one `?`) and its argument.
    pub(super) fn and(&mut self, cond: &str, arg: impl Into<Value>) {
        self.conds.push(cond.to_string());
        self.args.push(arg.into());
    }

    /// Adds `cond` (with as many `?` as `args`) and its arguments.
    pub(super) fn and_all(&mut self, cond: &str, args: Vec<Value>) {
        self.conds.push(cond.to_string());
        self.args.extend(args);
    }

    /// Adds `col = ?` when the filter has a value.
    pub(super) fn eq_opt(&mut self, col: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.and(&format!("{col} = ?"), v.clone());
        }
    }

    pub(super) fn sql(&self) -> String {
        if self.conds.is_empty() {
            "1".to_string()
        } else {
            self.conds.join(" AND ")
        }
    }
}
