//! The schema and its migrations.
//!
//! `PRAGMA user_version` is the number of migrations applied. The list only grows: a
//! later version appends a migration (`ALTER TABLE … ADD COLUMN`, a new index, …) and
//! never edits one that has shipped. All pending migrations run in one transaction.

use crate::{Result, StoreError};
use rusqlite::{Connection, TransactionBehavior};

/// Version 1. Column order puts large blobs last so reading the other columns never
/// touches their overflow pages.
const V1: &str = r#"
CREATE TABLE access_keys (
    access_key_id TEXT NOT NULL PRIMARY KEY,
    account_id    TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    created       INTEGER NOT NULL,
    secret_sealed BLOB NOT NULL
);
CREATE INDEX access_keys_account ON access_keys (account_id, created);

CREATE TABLE commands (
    command_id       TEXT NOT NULL PRIMARY KEY,
    account_id       TEXT NOT NULL,
    region_id        TEXT NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    command_type     TEXT NOT NULL,
    working_dir      TEXT NOT NULL,
    timeout_secs     INTEGER NOT NULL,
    enable_parameter INTEGER NOT NULL,
    parameter_names  TEXT NOT NULL,   -- JSON array
    created          INTEGER NOT NULL,
    invoke_times     INTEGER NOT NULL,
    visible          INTEGER NOT NULL,
    content          BLOB NOT NULL
);
CREATE INDEX commands_scope ON commands (account_id, region_id, visible, created DESC, command_id);
CREATE INDEX commands_name ON commands (account_id, region_id, name);
CREATE INDEX commands_type ON commands (account_id, region_id, command_type);
CREATE INDEX commands_description ON commands (account_id, region_id, description);

CREATE TABLE invocations (
    invoke_id           TEXT NOT NULL PRIMARY KEY,
    account_id          TEXT NOT NULL,
    region_id           TEXT NOT NULL,
    command_id          TEXT NOT NULL,
    command_name        TEXT NOT NULL,
    command_description TEXT NOT NULL,
    command_type        TEXT NOT NULL,
    enable_parameter    INTEGER NOT NULL,
    parameters          TEXT NOT NULL,
    working_dir         TEXT NOT NULL,
    username            TEXT NOT NULL,
    timeout_secs        INTEGER NOT NULL,
    repeat_mode         TEXT NOT NULL,
    timed               INTEGER NOT NULL,
    frequency           TEXT NOT NULL,
    termination_mode    TEXT NOT NULL,
    created             INTEGER NOT NULL,
    stopped_by_hand     INTEGER NOT NULL,
    counts              TEXT NOT NULL,  -- JSON object: fine status -> instances
    invoke_status       TEXT NOT NULL,  -- derived from counts, timed, stopped_by_hand
    overall_status      TEXT NOT NULL,  -- derived from counts
    command_content     BLOB NOT NULL
);
CREATE INDEX invocations_scope ON invocations (account_id, region_id, created DESC, invoke_id);
CREATE INDEX invocations_command ON invocations (account_id, region_id, command_id, created DESC, invoke_id);
CREATE INDEX invocations_name ON invocations (account_id, region_id, command_name, created DESC, invoke_id);
CREATE INDEX invocations_type ON invocations (account_id, region_id, command_type, created DESC, invoke_id);
CREATE INDEX invocations_status ON invocations (account_id, region_id, invoke_status, created DESC, invoke_id);
CREATE INDEX invocations_timed ON invocations (account_id, region_id, timed, created DESC, invoke_id);
CREATE INDEX invocations_repeat ON invocations (account_id, region_id, repeat_mode, created DESC, invoke_id);

CREATE TABLE tasks (
    invoke_id   TEXT NOT NULL REFERENCES invocations (invoke_id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    region_id   TEXT NOT NULL,
    command_id  TEXT NOT NULL,
    username    TEXT NOT NULL,
    timed       INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL,
    inv_created INTEGER NOT NULL,   -- the invocation's created, for ordering results
    status      TEXT NOT NULL,      -- fine InvocationStatus
    coarse      TEXT NOT NULL,      -- status.coarse(), for record_status
    exit_code   INTEGER,
    error_code  TEXT,
    start_time  INTEGER,
    finish_time INTEGER,
    stop_time   INTEGER,
    repeats     INTEGER NOT NULL,
    dropped     INTEGER NOT NULL,
    output_len  INTEGER NOT NULL,   -- bytes in output_chunks
    output      BLOB NOT NULL,      -- the 24 KB view
    PRIMARY KEY (invoke_id, instance_id)
);
CREATE INDEX tasks_scope ON tasks (account_id, region_id, inv_created DESC, invoke_id, instance_id);
CREATE INDEX tasks_command ON tasks (account_id, region_id, command_id, inv_created DESC, invoke_id, instance_id);
CREATE INDEX tasks_coarse ON tasks (account_id, region_id, coarse, inv_created DESC, invoke_id, instance_id);
CREATE INDEX tasks_instance ON tasks (instance_id, account_id, region_id, inv_created DESC, invoke_id);
CREATE INDEX tasks_instance_status ON tasks (instance_id, status);
CREATE INDEX tasks_pending ON tasks (created) WHERE status = 'Pending';

-- Rows per scope, kept in step with invocations and tasks in the same transactions, so
-- a listing's total without a filter (or with only a status filter) is one lookup
-- rather than a count of every row in the scope. Names: 'invocations',
-- 'invocations/<invoke_status>', 'tasks', 'tasks/<coarse>'.
CREATE TABLE scope_counts (
    account_id TEXT NOT NULL,
    region_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (account_id, region_id, name)
) WITHOUT ROWID;

CREATE TABLE output_chunks (
    invoke_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    pos         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (invoke_id, instance_id, pos),
    FOREIGN KEY (invoke_id, instance_id) REFERENCES tasks (invoke_id, instance_id) ON DELETE CASCADE
);

CREATE TABLE activations (
    activation_id     TEXT NOT NULL PRIMARY KEY,
    account_id        TEXT NOT NULL,
    region_id         TEXT NOT NULL,
    code_hash         TEXT NOT NULL,
    instance_name     TEXT NOT NULL,
    description       TEXT NOT NULL,
    instance_count    INTEGER NOT NULL,
    registered_count  INTEGER NOT NULL,
    ip_address_range  TEXT NOT NULL,
    created           INTEGER NOT NULL,
    expires           INTEGER NOT NULL,
    disabled          INTEGER NOT NULL
);
CREATE INDEX activations_scope ON activations (account_id, region_id, created DESC, activation_id);

CREATE TABLE instances (
    instance_id      TEXT NOT NULL PRIMARY KEY,
    account_id       TEXT NOT NULL,
    region_id        TEXT NOT NULL,
    name             TEXT NOT NULL,
    hostname         TEXT NOT NULL,
    os_type          TEXT NOT NULL,
    agent_version    TEXT NOT NULL,
    machine_id       TEXT NOT NULL,
    activation_id    TEXT NOT NULL,
    token_hash       TEXT NOT NULL,
    registered       INTEGER NOT NULL,
    last_heartbeat   INTEGER,
    last_invoked     INTEGER,
    invocation_count INTEGER NOT NULL
);
CREATE INDEX instances_scope ON instances (account_id, region_id, registered DESC, instance_id);
CREATE INDEX instances_os ON instances (account_id, region_id, os_type, registered DESC, instance_id);
CREATE INDEX instances_activation ON instances (activation_id);
"#;

/// ClientToken idempotency: which invocation a caller's token made, and a digest of
/// the request that made it.
const CLIENT_TOKENS: &str = r#"
CREATE TABLE client_tokens (
    account_id  TEXT NOT NULL,
    region_id   TEXT NOT NULL,
    token       TEXT NOT NULL,
    digest      TEXT NOT NULL,
    invoke_id   TEXT NOT NULL,
    command_id  TEXT NOT NULL,
    created     INTEGER NOT NULL,
    PRIMARY KEY (account_id, region_id, token)
);
CREATE INDEX client_tokens_invocation ON client_tokens (invoke_id);
"#;

/// Accounts (tenants) as rows of their own. Every account that already owns a key or
/// a record is created, enabled, named after its id.
pub(super) const ACCOUNTS: &str = r#"
CREATE TABLE accounts (
    account_id TEXT NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    enabled    INTEGER NOT NULL,
    created    INTEGER NOT NULL
);
INSERT OR IGNORE INTO accounts (account_id, name, enabled, created)
    SELECT account_id, account_id, 1, MIN(created) FROM (
        SELECT account_id, created FROM access_keys
        UNION ALL SELECT account_id, created FROM commands
        UNION ALL SELECT account_id, created FROM activations
        UNION ALL SELECT account_id, registered FROM instances
    ) GROUP BY account_id;
"#;

/// Tags on instances, commands and invocations.
const TAGS: &str = r#"
CREATE TABLE tags (
    account_id    TEXT NOT NULL,
    region_id     TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (account_id, region_id, resource_type, resource_id, key)
);
CREATE INDEX tags_by_key ON tags (account_id, region_id, resource_type, key, value, resource_id);
"#;

/// Started runs, for finding the ones whose agent never came back.
const TASKS_STARTED: &str = r#"
CREATE INDEX tasks_started ON tasks (start_time) WHERE status IN ('Running', 'Stopping');
"#;

/// File deliveries (SendFile) share the invocation and task tables with command runs:
/// dispatch, results, reconciliation and the spool work the same for both. `kind`
/// keeps them apart, so every listing index now starts with the scope and the kind;
/// `file_spec` (JSON, NULL for command runs) says how to write the file. The overall
/// status gets an index of its own for `InvocationStatus` filters.
const FILE_SENDS: &str = r#"
ALTER TABLE invocations ADD COLUMN kind TEXT NOT NULL DEFAULT 'command';
ALTER TABLE invocations ADD COLUMN file_spec TEXT;
ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'command';

DROP INDEX invocations_scope;
DROP INDEX invocations_command;
DROP INDEX invocations_name;
DROP INDEX invocations_type;
DROP INDEX invocations_status;
DROP INDEX invocations_timed;
DROP INDEX invocations_repeat;
CREATE INDEX invocations_scope ON invocations (account_id, region_id, kind, created DESC, invoke_id);
CREATE INDEX invocations_command ON invocations (account_id, region_id, kind, command_id, created DESC, invoke_id);
CREATE INDEX invocations_name ON invocations (account_id, region_id, kind, command_name, created DESC, invoke_id);
CREATE INDEX invocations_type ON invocations (account_id, region_id, kind, command_type, created DESC, invoke_id);
CREATE INDEX invocations_status ON invocations (account_id, region_id, kind, invoke_status, created DESC, invoke_id);
CREATE INDEX invocations_overall ON invocations (account_id, region_id, kind, overall_status, created DESC, invoke_id);
CREATE INDEX invocations_timed ON invocations (account_id, region_id, kind, timed, created DESC, invoke_id);
CREATE INDEX invocations_repeat ON invocations (account_id, region_id, kind, repeat_mode, created DESC, invoke_id);

DROP INDEX tasks_scope;
DROP INDEX tasks_command;
DROP INDEX tasks_coarse;
DROP INDEX tasks_instance;
CREATE INDEX tasks_scope ON tasks (account_id, region_id, kind, inv_created DESC, invoke_id, instance_id);
CREATE INDEX tasks_command ON tasks (account_id, region_id, kind, command_id, inv_created DESC, invoke_id, instance_id);
CREATE INDEX tasks_coarse ON tasks (account_id, region_id, kind, coarse, inv_created DESC, invoke_id, instance_id);
CREATE INDEX tasks_instance ON tasks (instance_id, account_id, region_id, kind, inv_created DESC, invoke_id);
"#;

/// Repeating invocations (Period, NextRebootOnly, EveryReboot): the revision an
/// invocation is at (ModifyInvocationAttribute bumps it and agents re-read the task),
/// and one row per run of a repeating task (`IncludeHistory`), written in the same
/// transaction as the run's result.
const REPEATING: &str = r#"
ALTER TABLE invocations ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
CREATE TABLE task_runs (
    invoke_id   TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    run         INTEGER NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    error_code  TEXT,
    start_time  INTEGER,
    finish_time INTEGER,
    dropped     INTEGER NOT NULL,
    output      BLOB NOT NULL,
    PRIMARY KEY (invoke_id, instance_id, run),
    FOREIGN KEY (invoke_id, instance_id) REFERENCES tasks (invoke_id, instance_id) ON DELETE CASCADE
);
"#;

/// Resource groups (`ResourceGroupId`): the group a command, an invocation (and its
/// tasks), an activation (and the instances that register with it) was made in; ''
/// for none, which is what every row made before this version gets. A group filter on
/// the invocation and result listings drives from an index of its own, in the
/// listings' order after the scope, the kind and the group (a listing by instance
/// still drives from `tasks_instance`); commands and instances get one too.
pub(super) const RESOURCE_GROUPS: &str = r#"
ALTER TABLE commands ADD COLUMN resource_group_id TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN resource_group_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN resource_group_id TEXT NOT NULL DEFAULT '';
ALTER TABLE activations ADD COLUMN resource_group_id TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN resource_group_id TEXT NOT NULL DEFAULT '';
CREATE INDEX invocations_group ON invocations (account_id, region_id, kind, resource_group_id, created DESC, invoke_id);
CREATE INDEX tasks_group ON tasks (account_id, region_id, kind, resource_group_id, inv_created DESC, invoke_id, instance_id);
CREATE INDEX commands_group ON commands (account_id, region_id, resource_group_id, visible, created DESC, command_id);
CREATE INDEX instances_group ON instances (account_id, region_id, resource_group_id, registered DESC, instance_id);
"#;

/// Fleet management (DescribeActivations, DeregisterManagedInstance): how many of an
/// activation's instances were deregistered. A deregistered instance's row goes (its
/// token with it), so this count is what remains of it on its activation; its tasks
/// stay. Tags on activations need nothing new (`tags.resource_type` 'activation').
pub(super) const FLEET: &str = r#"
ALTER TABLE activations ADD COLUMN deregistered_count INTEGER NOT NULL DEFAULT 0;
"#;

/// Replay protection: the nonces of signed requests that changed something, kept
/// until they expire (`expires`, Unix ms), so a captured request never runs twice,
/// even after a restart.
pub(super) const NONCES: &str = r#"
CREATE TABLE nonces (
    access_key_id TEXT NOT NULL,
    digest        BLOB NOT NULL,
    expires       INTEGER NOT NULL,
    PRIMARY KEY (access_key_id, digest)
) WITHOUT ROWID;
CREATE INDEX nonces_expires ON nonces (expires);
"#;

/// Deleted accounts become tombstones (`deleted`: when; `enabled` is 0) rather than
/// missing rows, so an account id is never given to another tenant: it would inherit
/// the commands, invocations and instances the deleted one left. Accounts deleted
/// before this version left no row: every account id that still owns records but has
/// neither a row nor a key is such a one, and becomes a tombstone now.
pub(super) const ACCOUNT_TOMBSTONES: &str = r#"
ALTER TABLE accounts ADD COLUMN deleted INTEGER;
INSERT OR IGNORE INTO accounts (account_id, name, enabled, created, deleted)
    SELECT account_id, account_id, 0, MIN(created),
           CAST(strftime('%s', 'now') AS INTEGER) * 1000
    FROM (
        SELECT account_id, created FROM commands
        UNION ALL SELECT account_id, created FROM invocations
        UNION ALL SELECT account_id, created FROM activations
        UNION ALL SELECT account_id, registered FROM instances
    )
    WHERE account_id NOT IN (SELECT account_id FROM access_keys)
    GROUP BY account_id;
"#;

/// How an instance's agent keeps a run's processes together (its `Hello`:
/// `cgroup`, `process-tree`; '' until an agent that says so connects).
pub(super) const TASK_ISOLATION: &str = r#"
ALTER TABLE instances ADD COLUMN task_isolation TEXT NOT NULL DEFAULT '';
"#;

/// The audit trail (`AuditRecord`): one row per call that changed something or tried
/// to, per agent registration and per agent cut off. `seq` only grows (rows go oldest
/// first), so the newest `n` rows are those with `seq > MAX(seq) - n`. `targets` is a
/// JSON array of ids. Entries whose caller proved no secret are indexed apart, to be
/// capped apart.
pub(super) const AUDIT: &str = r#"
CREATE TABLE audit (
    seq           INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    account_id    TEXT NOT NULL,
    access_key_id TEXT NOT NULL,
    source        TEXT NOT NULL,
    action        TEXT NOT NULL,
    targets       TEXT NOT NULL,
    omitted       INTEGER NOT NULL,
    result        TEXT NOT NULL,
    http_status   INTEGER NOT NULL,
    request_id    TEXT NOT NULL,
    authenticated INTEGER NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_unauthenticated ON audit (seq) WHERE authenticated = 0;
"#;

/// Every migration, in order. Index `i` brings the schema to version `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    V1,
    CLIENT_TOKENS,
    ACCOUNTS,
    TAGS,
    TASKS_STARTED,
    FILE_SENDS,
    REPEATING,
    RESOURCE_GROUPS,
    FLEET,
    NONCES,
    ACCOUNT_TOMBSTONES,
    TASK_ISOLATION,
    AUDIT,
];

/// The schema version this build writes.
pub(super) const VERSION: usize = MIGRATIONS.len();

/// Applies the migrations the database has not seen yet.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, VERSION)
}

/// Brings the database to schema version `target` (tests start older databases so).
pub(super) fn migrate_to(conn: &mut Connection, target: usize) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > VERSION {
        return Err(StoreError::Backend(format!(
            "the database has schema version {version}, newer than this server's {VERSION}; \
             upgrade the server"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tracing::info!("database schema migrated to version {}", i + 1);
    }
    tx.commit()?;
    Ok(())
}
