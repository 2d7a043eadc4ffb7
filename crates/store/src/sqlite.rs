//! The embedded SQLite store.
//!
//! # Durability
//! The database runs in WAL mode with `synchronous=FULL`: every commit fsyncs the WAL
//! before the call returns, so neither a `kill -9` of the server nor a power loss
//! loses a write that returned `Ok` (on macOS `fullfsync` is on as well). Foreign keys
//! are enforced and a busy timeout covers a second process (e.g. the CLI) holding the
//! write lock. Every method that writes more than one row does so in one
//! `BEGIN IMMEDIATE` transaction.
//!
//! # Threading
//! SQLite calls block, so none runs on a tokio worker: each trait method moves its
//! work into [`tokio::task::spawn_blocking`].
//! - Writes go through the one writer [`Connection`], behind a [`std::sync::Mutex`];
//!   writes are therefore serialized inside the process (SQLite allows one writer at a
//!   time anyway) and no two of our transactions can deadlock.
//! - Reads (`get_*`, `list_*`, `full_output`, …) use a small fixed pool of read-only
//!   connections, opened lazily, each behind its own mutex. WAL lets them read a
//!   consistent snapshot while a write is in progress. Every read method runs in one
//!   read transaction, so a listing's total and its rows agree.
//! - An in-memory store (tests) has no pool: reads share the writer connection.
//!
//! # Schema
//! Versioned with `PRAGMA user_version` and the list of migrations in `schema.rs`
//! (append-only: a later version adds a migration, never edits an old one).
//! - `tasks` has one row per invocation × instance with the [`TaskState`] fields as
//!   columns, the 24 KB output view in a BLOB column, `output_len`, and two
//!   denormalized columns: `inv_created` (its invocation's creation time, for ordering
//!   results without a join) and `coarse` (the coarse status, for `record_status`).
//!   A task's account and region are always its invocation's.
//! - `output_chunks` holds a run's whole output as `(invoke_id, instance_id, pos,
//!   data)` rows so an append never rewrites a growing blob.
//! - `invocations` keeps its [`StatusCounts`] as a JSON object (status name → count)
//!   and the derived `invoke_status` and `overall_status` as indexed text columns,
//!   recomputed from the counts in the same transaction as every task change.
//! - `scope_counts` keeps, per scope, the number of invocations (in all and per
//!   `invoke_status`) and of tasks (in all and per coarse status), in step in the same
//!   transactions, so the total of an unfiltered or status-only listing is a lookup
//!   rather than a count of every row in the scope. Other filters (a resource group
//!   among them) count their (small) index range.
//! - Listings page newest first on `(account_id, region_id, <filter>, created DESC,
//!   id)` indexes, in two steps: the page's keys from the index, then the rows
//!   themselves (so no sort ever carries output blobs). Where one filter is far more
//!   selective than the scope (an invocation, an instance), the query is written so
//!   that SQLite, which keeps no statistics here, must drive from that filter's index.
//!
//! Only [`TaskState::apply`] decides a status transition; the store loads the state,
//! applies the event and writes back what changed.
//!
//! [`TaskState`]: oca_domain::task::TaskState
//! [`TaskState::apply`]: oca_domain::task::TaskState::apply
//! [`StatusCounts`]: oca_domain::status::StatusCounts

mod accounts;
mod audit;
mod catalog;
mod instances;
mod invocations;
mod nonces;
mod retention;
mod rows;
mod schema;
mod tags;
#[cfg(test)]
mod tests;

use crate::{
    AccessKeyRecord, AccountRecord, ActivationFilter, ActivationRecord, AuditFilter, AuditPurged,
    AuditRecord, CommandFilter, CommandRecord, DispatchItem, InstanceFilter, InstanceRecord,
    InvocationChange, InvocationFilter, InvocationRecord, InvocationView, Listing, NewInvocation,
    NonceRecord, OutputAppend, Page, PriorInvocation, Result, ResultFilter, RunRecord, Scope,
    Store, StoreError, Tag, TagResource, TaskRecord, WriteOp, WriteOutcome,
};
use async_trait::async_trait;
use oca_domain::status::InvocationStatus;
use oca_domain::task::TaskEvent;
use oca_domain::time::Millis;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How many read-only connections a file-backed store keeps.
const READERS: usize = 4;
/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                StoreError::Conflict(format!("already exists ({e})"))
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

/// The SQLite implementation of [`Store`]. Cheap to clone (the clones share the
/// connections).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    /// Read-only connections of a file-backed store, opened on first use; empty for an
    /// in-memory store.
    readers: Vec<Mutex<Option<Connection>>>,
    next_reader: AtomicUsize,
    path: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the connection usable: any transaction it
    // had open was rolled back when the `Transaction` was dropped.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Self> {
        let existed = path.exists();
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{} could not be put in WAL mode (it is in {mode} mode)",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "fullfsync", true)?;
        conn.pragma_update(None, "checkpoint_fullfsync", true)?;
        schema::migrate(&mut conn)?;
        if !existed {
            sync_parent_dir(path);
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(conn),
                readers: (0..READERS).map(|_| Mutex::new(None)).collect(),
                next_reader: AtomicUsize::new(0),
                path: Some(path.to_path_buf()),
            }),
        })
    }

    /// A private, empty database in memory (for tests).
    pub fn open_in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(conn),
                readers: Vec::new(),
                next_reader: AtomicUsize::new(0),
                path: None,
            }),
        })
    }

    /// Runs `f` with the writer connection on a blocking thread.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.writer)))
            .await
            .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))?
    }

    /// Runs `f` with a read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))?
    }
}

impl Inner {
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let Some(path) = &self.path else {
            return f(&lock(&self.writer));
        };
        // Take a free connection if there is one, else wait for one in turn.
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let mut slot = None;
        for i in 0..n {
            if let Ok(guard) = self.readers[(start + i) % n].try_lock() {
                slot = Some(guard);
                break;
            }
        }
        let mut slot = match slot {
            Some(guard) => guard,
            None => lock(&self.readers[start % n]),
        };
        if slot.is_none() {
            *slot = Some(open_reader(path)?);
        }
        let conn = slot.as_ref().expect("just opened");
        f(conn)
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "cache_size", -16_000)?; // 16 MB
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Makes a newly created database file's directory entry durable.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!("could not sync {}: {e}", dir.display());
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[async_trait]
impl Store for SqliteStore {
    // ---- accounts -----------------------------------------------------------------

    async fn insert_account(&self, account: &AccountRecord) -> Result<()> {
        let account = account.clone();
        self.write(move |c| accounts::insert_account(c, &account))
            .await
    }

    async fn ensure_account(&self, account: &AccountRecord) -> Result<bool> {
        let account = account.clone();
        self.write(move |c| accounts::ensure_account(c, &account))
            .await
    }

    async fn get_account(&self, account_id: &str) -> Result<Option<AccountRecord>> {
        let id = account_id.to_string();
        self.read(move |c| accounts::get_account(c, &id)).await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>> {
        self.read(accounts::list_accounts).await
    }

    async fn set_account_enabled(&self, account_id: &str, enabled: bool) -> Result<bool> {
        let id = account_id.to_string();
        self.write(move |c| accounts::set_account_enabled(c, &id, enabled))
            .await
    }

    async fn delete_account(&self, account_id: &str) -> Result<bool> {
        let id = account_id.to_string();
        self.write(move |c| accounts::delete_account(c, &id)).await
    }

    // ---- replay protection ---------------------------------------------------------

    async fn record_nonces(&self, nonces: Vec<NonceRecord>, now: Millis) -> Result<Vec<bool>> {
        self.write(move |c| nonces::record(c, &nonces, now)).await
    }

    // ---- access keys ------------------------------------------------------------

    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<()> {
        let key = key.clone();
        self.write(move |c| catalog::insert_access_key(c, &key))
            .await
    }

    async fn get_access_key(&self, access_key_id: &str) -> Result<Option<AccessKeyRecord>> {
        let id = access_key_id.to_string();
        self.read(move |c| catalog::get_access_key(c, &id)).await
    }

    async fn list_access_keys(&self, account_id: Option<&str>) -> Result<Vec<AccessKeyRecord>> {
        let account = account_id.map(str::to_string);
        self.read(move |c| catalog::list_access_keys(c, account.as_deref()))
            .await
    }

    async fn set_access_key_enabled(&self, access_key_id: &str, enabled: bool) -> Result<bool> {
        let id = access_key_id.to_string();
        self.write(move |c| catalog::set_access_key_enabled(c, &id, enabled))
            .await
    }

    async fn delete_access_key(&self, access_key_id: &str) -> Result<bool> {
        let id = access_key_id.to_string();
        self.write(move |c| catalog::delete_access_key(c, &id))
            .await
    }

    // ---- commands ---------------------------------------------------------------

    async fn insert_command(&self, command: &CommandRecord) -> Result<()> {
        let command = command.clone();
        self.write(move |c| catalog::insert_command(c, &command))
            .await
    }

    async fn get_command(&self, scope: &Scope, command_id: &str) -> Result<Option<CommandRecord>> {
        let (scope, id) = (scope.clone(), command_id.to_string());
        self.read(move |c| catalog::get_command(c, &scope, &id))
            .await
    }

    async fn update_command(&self, scope: &Scope, command: &CommandRecord) -> Result<bool> {
        let (scope, command) = (scope.clone(), command.clone());
        self.write(move |c| catalog::update_command(c, &scope, &command))
            .await
    }

    async fn delete_command(&self, scope: &Scope, command_id: &str) -> Result<bool> {
        let (scope, id) = (scope.clone(), command_id.to_string());
        self.write(move |c| catalog::delete_command(c, &scope, &id))
            .await
    }

    async fn list_commands(
        &self,
        scope: &Scope,
        filter: &CommandFilter,
        page: Page,
    ) -> Result<Listing<CommandRecord>> {
        let (scope, filter) = (scope.clone(), filter.clone());
        self.read(move |c| catalog::list_commands(c, &scope, &filter, page))
            .await
    }

    // ---- invocations ------------------------------------------------------------

    async fn insert_invocation(
        &self,
        command: Option<&CommandRecord>,
        invocation: &InvocationRecord,
        tasks: &[TaskRecord],
    ) -> Result<()> {
        let (command, invocation, tasks) = (command.cloned(), invocation.clone(), tasks.to_vec());
        self.write(move |c| {
            invocations::insert_invocation(c, command.as_ref(), &invocation, &tasks)
        })
        .await
    }

    async fn create_invocation(&self, new: NewInvocation<'_>) -> Result<Option<PriorInvocation>> {
        let command = new.command.cloned();
        let invocation = new.invocation.clone();
        let tasks = new.tasks.to_vec();
        let token = new.client_token.cloned();
        let tags = new.tags.to_vec();
        self.write(move |c| {
            invocations::insert_invocation_once(
                c,
                command.as_ref(),
                &invocation,
                &tasks,
                token.as_ref(),
                &tags,
            )
        })
        .await
    }

    async fn find_client_token(
        &self,
        scope: &Scope,
        token: &str,
    ) -> Result<Option<PriorInvocation>> {
        let (scope, token) = (scope.clone(), token.to_string());
        self.read(move |c| invocations::find_client_token(c, &scope, &token))
            .await
    }

    async fn get_invocation(
        &self,
        scope: &Scope,
        invoke_id: &str,
    ) -> Result<Option<InvocationRecord>> {
        let (scope, id) = (scope.clone(), invoke_id.to_string());
        self.read(move |c| invocations::get_invocation(c, &scope, &id))
            .await
    }

    async fn list_invocations(
        &self,
        scope: &Scope,
        filter: &InvocationFilter,
        page: Page,
        with_output: bool,
    ) -> Result<Listing<InvocationView>> {
        let (scope, filter) = (scope.clone(), filter.clone());
        self.read(move |c| invocations::list_invocations(c, &scope, &filter, page, with_output))
            .await
    }

    async fn list_results(
        &self,
        scope: &Scope,
        filter: &ResultFilter,
        page: Page,
    ) -> Result<Listing<TaskRecord>> {
        let (scope, filter) = (scope.clone(), filter.clone());
        self.read(move |c| invocations::list_results(c, &scope, &filter, page))
            .await
    }

    async fn get_task(&self, invoke_id: &str, instance_id: &str) -> Result<Option<TaskRecord>> {
        let (inv, inst) = (invoke_id.to_string(), instance_id.to_string());
        self.read(move |c| invocations::get_task(c, &inv, &inst))
            .await
    }

    async fn list_runs(
        &self,
        scope: &Scope,
        invoke_id: &str,
        instance_id: Option<&str>,
        page: Page,
    ) -> Result<Listing<RunRecord>> {
        let (scope, inv) = (scope.clone(), invoke_id.to_string());
        let inst = instance_id.map(str::to_string);
        self.read(move |c| invocations::list_runs(c, &scope, &inv, inst.as_deref(), page))
            .await
    }

    async fn modify_invocation(
        &self,
        scope: &Scope,
        invoke_id: &str,
        change: &InvocationChange,
    ) -> Result<Option<InvocationRecord>> {
        let (scope, inv, change) = (scope.clone(), invoke_id.to_string(), change.clone());
        self.write(move |c| invocations::modify_invocation(c, &scope, &inv, &change))
            .await
    }

    async fn apply_task_event(
        &self,
        invoke_id: &str,
        instance_id: &str,
        event: TaskEvent,
    ) -> Result<Option<TaskRecord>> {
        let (inv, inst) = (invoke_id.to_string(), instance_id.to_string());
        self.write(move |c| invocations::apply_task_event(c, &inv, &inst, event))
            .await
    }

    async fn apply_batch(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>> {
        self.write(move |c| invocations::apply_batch(c, ops)).await
    }

    async fn stop_invocation(
        &self,
        scope: &Scope,
        invoke_id: &str,
        instance_ids: Option<&[String]>,
        at: Millis,
    ) -> Result<Vec<TaskRecord>> {
        let (scope, inv) = (scope.clone(), invoke_id.to_string());
        let only = instance_ids.map(<[String]>::to_vec);
        self.write(move |c| invocations::stop_invocation(c, &scope, &inv, only.as_deref(), at))
            .await
    }

    async fn tasks_for_instance(
        &self,
        instance_id: &str,
        statuses: &[InvocationStatus],
    ) -> Result<Vec<DispatchItem>> {
        let (inst, statuses) = (instance_id.to_string(), statuses.to_vec());
        self.read(move |c| invocations::tasks_for_instance(c, &inst, &statuses))
            .await
    }

    async fn overdue_tasks(
        &self,
        now: Millis,
        grace_ms: i64,
        limit: u64,
    ) -> Result<Vec<TaskRecord>> {
        self.read(move |c| invocations::overdue_tasks(c, now, grace_ms, limit))
            .await
    }

    async fn pending_tasks_before(&self, before: Millis, limit: u64) -> Result<Vec<TaskRecord>> {
        self.read(move |c| invocations::pending_tasks_before(c, before, limit))
            .await
    }

    // ---- whole output -----------------------------------------------------------

    async fn append_output(
        &self,
        invoke_id: &str,
        instance_id: &str,
        offset: u64,
        data: &[u8],
        cap: u64,
    ) -> Result<OutputAppend> {
        let (inv, inst, data) = (
            invoke_id.to_string(),
            instance_id.to_string(),
            data.to_vec(),
        );
        self.write(move |c| invocations::append_output(c, &inv, &inst, offset, &data, cap))
            .await
    }

    async fn output_range(
        &self,
        invoke_id: &str,
        instance_id: &str,
        offset: u64,
        max: u64,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        let (inv, inst) = (invoke_id.to_string(), instance_id.to_string());
        self.read(move |c| invocations::output_range(c, &inv, &inst, offset, max))
            .await
    }

    // ---- activations and instances ---------------------------------------------

    async fn tag(
        &self,
        scope: &Scope,
        kind: TagResource,
        ids: &[String],
        tags: &[Tag],
    ) -> Result<()> {
        let (scope, ids, tags) = (scope.clone(), ids.to_vec(), tags.to_vec());
        self.write(move |c| tags::tag(c, &scope, kind, &ids, &tags))
            .await
    }

    async fn untag(
        &self,
        scope: &Scope,
        kind: TagResource,
        ids: &[String],
        keys: Option<&[String]>,
    ) -> Result<()> {
        let (scope, ids, keys) = (scope.clone(), ids.to_vec(), keys.map(<[String]>::to_vec));
        self.write(move |c| tags::untag(c, &scope, kind, &ids, keys.as_deref()))
            .await
    }

    async fn tags_of(
        &self,
        scope: &Scope,
        kind: TagResource,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<Tag>>> {
        let (scope, ids) = (scope.clone(), ids.to_vec());
        self.read(move |c| tags::tags_of(c, &scope, kind, &ids))
            .await
    }

    async fn tagged(&self, scope: &Scope, kind: TagResource, tags: &[Tag]) -> Result<Vec<String>> {
        let (scope, tags) = (scope.clone(), tags.to_vec());
        self.read(move |c| tags::tagged(c, &scope, kind, &tags))
            .await
    }

    async fn insert_activation(&self, activation: &ActivationRecord) -> Result<()> {
        let activation = activation.clone();
        self.write(move |c| instances::insert_activation(c, &activation))
            .await
    }

    async fn create_activation(&self, activation: &ActivationRecord, tags: &[Tag]) -> Result<()> {
        let (activation, tags) = (activation.clone(), tags.to_vec());
        self.write(move |c| instances::create_activation(c, &activation, &tags))
            .await
    }

    async fn get_activation(&self, activation_id: &str) -> Result<Option<ActivationRecord>> {
        let id = activation_id.to_string();
        self.read(move |c| instances::get_activation(c, &id)).await
    }

    async fn list_activations(
        &self,
        scope: &Scope,
        filter: &ActivationFilter,
        page: Page,
    ) -> Result<Listing<ActivationRecord>> {
        let (scope, filter) = (scope.clone(), filter.clone());
        self.read(move |c| instances::list_activations(c, &scope, &filter, page))
            .await
    }

    async fn disable_activation(
        &self,
        scope: &Scope,
        activation_id: &str,
    ) -> Result<Option<ActivationRecord>> {
        let (scope, id) = (scope.clone(), activation_id.to_string());
        self.write(move |c| instances::disable_activation(c, &scope, &id))
            .await
    }

    async fn delete_activation(
        &self,
        scope: &Scope,
        activation_id: &str,
    ) -> Result<Option<ActivationRecord>> {
        let (scope, id) = (scope.clone(), activation_id.to_string());
        self.write(move |c| instances::delete_activation(c, &scope, &id))
            .await
    }

    async fn register_instance(&self, instance: &InstanceRecord) -> Result<()> {
        let instance = instance.clone();
        self.write(move |c| instances::register_instance(c, &instance))
            .await
    }

    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceRecord>> {
        let id = instance_id.to_string();
        self.read(move |c| instances::get_instance(c, &id)).await
    }

    async fn get_instances(
        &self,
        scope: &Scope,
        instance_ids: &[String],
    ) -> Result<Vec<InstanceRecord>> {
        let (scope, ids) = (scope.clone(), instance_ids.to_vec());
        self.read(move |c| instances::get_instances(c, &scope, &ids))
            .await
    }

    async fn list_instances(
        &self,
        scope: &Scope,
        filter: &InstanceFilter,
        page: Page,
    ) -> Result<Listing<InstanceRecord>> {
        let (scope, filter) = (scope.clone(), filter.clone());
        self.read(move |c| instances::list_instances(c, &scope, &filter, page))
            .await
    }

    async fn deregister_instance(
        &self,
        scope: &Scope,
        instance_id: &str,
    ) -> Result<Option<InstanceRecord>> {
        let (scope, id) = (scope.clone(), instance_id.to_string());
        self.write(move |c| instances::deregister_instance(c, &scope, &id))
            .await
    }

    async fn rename_instance(
        &self,
        scope: &Scope,
        instance_id: &str,
        name: &str,
    ) -> Result<Option<InstanceRecord>> {
        let (scope, id, name) = (scope.clone(), instance_id.to_string(), name.to_string());
        self.write(move |c| instances::rename_instance(c, &scope, &id, &name))
            .await
    }

    async fn touch_instance(
        &self,
        instance_id: &str,
        at: Millis,
        agent_version: &str,
        hostname: &str,
        os_type: &str,
        task_isolation: &str,
    ) -> Result<()> {
        let id = instance_id.to_string();
        let (v, h, o, t) = (
            agent_version.to_string(),
            hostname.to_string(),
            os_type.to_string(),
            task_isolation.to_string(),
        );
        self.write(move |c| instances::touch_instance(c, &id, at, &v, &h, &o, &t))
            .await
    }

    // ---- audit trail --------------------------------------------------------------

    async fn record_audit(&self, entries: Vec<AuditRecord>, sync: bool) -> Result<()> {
        self.write(move |c| audit::record(c, &entries, sync)).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        let filter = filter.clone();
        self.read(move |c| audit::list(c, &filter)).await
    }

    async fn purge_audit(
        &self,
        older_than: Millis,
        max_entries: u64,
        max_unauthenticated: u64,
        batch: u64,
    ) -> Result<AuditPurged> {
        self.write(move |c| audit::purge(c, older_than, max_entries, max_unauthenticated, batch))
            .await
    }

    // ---- retention --------------------------------------------------------------

    async fn purge_invocations(
        &self,
        older_than: Millis,
        max_records: u64,
        batch: u64,
    ) -> Result<crate::Purged> {
        self.write(move |c| retention::purge_invocations(c, older_than, max_records, batch))
            .await
    }
}
