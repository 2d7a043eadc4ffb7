//! OCA's storage. [`Store`] is the one interface the rest of the server uses; no SQL
//! lives outside this crate. [`sqlite::SqliteStore`] is the embedded default; a
//! PostgreSQL implementation can follow behind the same trait.
//!
//! Everything a tenant owns is read and written through a [`Scope`] (account and
//! region), so one tenant's ids are invisible to another: a lookup outside the scope
//! answers `None`, exactly like a missing id.

pub mod audit;
pub mod records;
pub mod sqlite;

pub use records::*;

use async_trait::async_trait;
use oca_domain::task::TaskEvent;
use oca_domain::time::Millis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The tenant and region a request acts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub account_id: String,
    pub region_id: String,
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return at most.
    pub limit: u64,
}

/// One page of a listing and the number of rows over all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub total: u64,
    pub items: Vec<T>,
    /// For the listings that page by position (invocations and results, through their
    /// filter's `after`): where the next page starts, `None` when this one is the last.
    pub next: Option<Cursor>,
}

/// A position in the invocation and result listings (keyset paging): the sort key of
/// the last row of a page. A page that starts after it is the same however many rows
/// were added at the head meanwhile, and costs the same however deep it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The invocation's creation.
    pub created: Millis,
    pub invoke_id: String,
    /// Empty for an invocation listing.
    pub instance_id: String,
}

impl Cursor {
    /// A compact token: `<created>.<invoke id>.<instance id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.created, self.invoke_id, self.instance_id)
    }

    /// The position [`Self::encode`] wrote, if `s` is one.
    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(3, '.');
        let created = parts.next()?.parse::<Millis>().ok()?;
        let invoke_id = parts.next()?;
        let instance_id = parts.next()?;
        let id_like = |v: &str| {
            v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (created >= 0 && !invoke_id.is_empty() && id_like(invoke_id) && id_like(instance_id)).then(
            || Cursor {
                created,
                invoke_id: invoke_id.to_string(),
                instance_id: instance_id.to_string(),
            },
        )
    }
}

/// Everything [`Store::create_invocation`] stores at once.
#[derive(Debug, Clone, Copy)]
pub struct NewInvocation<'a> {
    /// The command a RunCommand makes; `None` for a saved one.
    pub command: Option<&'a CommandRecord>,
    pub invocation: &'a InvocationRecord,
    pub tasks: &'a [TaskRecord],
    pub client_token: Option<&'a ClientToken>,
    pub tags: &'a [Tag],
}

/// One write of [`Store::apply_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// [`Store::apply_task_event`].
    Event {
        invoke_id: String,
        instance_id: String,
        event: TaskEvent,
    },
    /// [`Store::append_output`].
    Output {
        invoke_id: String,
        instance_id: String,
        offset: u64,
        data: Vec<u8>,
        cap: u64,
    },
    /// [`Store::touch_instance`]: an agent was seen (connected, heartbeat, left), with
    /// what it says of itself.
    Seen {
        instance_id: String,
        at: Millis,
        agent_version: String,
        hostname: String,
        os_type: String,
        task_isolation: String,
    },
}

/// What one [`WriteOp`] did.
// Outcomes live briefly, in one Vec per batch: boxing the large variant would add an
// allocation per write to save a few hundred bytes per batch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Task(Option<TaskRecord>),
    Output(OutputAppend),
    /// A [`WriteOp::Seen`] was stored.
    Seen,
}

/// The outcome of appending a chunk of a run's whole output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputAppend {
    /// Bytes stored for the run after this call.
    pub stored_len: u64,
    /// True when the chunk started past what is stored: the caller should ask the
    /// agent to resend from `stored_len`.
    pub gap: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- accounts -----------------------------------------------------------------
    /// `Conflict` if the account already exists, or existed and was deleted (an account
    /// id is never given to another tenant).
    async fn insert_account(&self, account: &AccountRecord) -> Result<()>;
    /// Inserts the account unless one with its id exists (deleted ones included); true
    /// if it was inserted.
    async fn ensure_account(&self, account: &AccountRecord) -> Result<bool>;
    /// The account, a deleted one included (its `deleted` is set).
    async fn get_account(&self, account_id: &str) -> Result<Option<AccountRecord>>;
    /// Every account, oldest first, deleted ones included.
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>>;
    /// Returns false if there is no such account; `Conflict` if it was deleted (it stays
    /// disabled). A disabled account's access keys are refused.
    async fn set_account_enabled(&self, account_id: &str, enabled: bool) -> Result<bool>;
    /// Deletes the account for good, leaving a tombstone: its id can never be created
    /// again, it can have no key, its agents are refused, and the records it owns stay,
    /// visible to no one. False if there is no such account or it was already deleted;
    /// `Conflict` if it still has access keys.
    async fn delete_account(&self, account_id: &str) -> Result<bool>;

    // ---- access keys ------------------------------------------------------------
    /// `Conflict` if the key's account was deleted.
    async fn insert_access_key(&self, key: &AccessKeyRecord) -> Result<()>;
    async fn get_access_key(&self, access_key_id: &str) -> Result<Option<AccessKeyRecord>>;
    async fn list_access_keys(&self, account_id: Option<&str>) -> Result<Vec<AccessKeyRecord>>;
    /// Returns false if there is no such key.
    async fn set_access_key_enabled(&self, access_key_id: &str, enabled: bool) -> Result<bool>;
    async fn delete_access_key(&self, access_key_id: &str) -> Result<bool>;

    // ---- commands ---------------------------------------------------------------
    async fn insert_command(&self, command: &CommandRecord) -> Result<()>;
    /// A command in scope, hidden ones (RunCommand without KeepCommand) included.
    async fn get_command(&self, scope: &Scope, command_id: &str) -> Result<Option<CommandRecord>>;
    /// Replaces the mutable fields (name, description, content, working dir, timeout,
    /// enable_parameter, parameter names) of a command in scope. False if absent.
    async fn update_command(&self, scope: &Scope, command: &CommandRecord) -> Result<bool>;
    /// False if absent. Invocations keep their own copy of the command.
    async fn delete_command(&self, scope: &Scope, command_id: &str) -> Result<bool>;
    /// Visible commands only, newest first.
    async fn list_commands(
        &self,
        scope: &Scope,
        filter: &CommandFilter,
        page: Page,
    ) -> Result<Listing<CommandRecord>>;

    // ---- invocations ------------------------------------------------------------
    /// Stores everything an invocation creates in one transaction, so it costs one
    /// sync before the tasks are sent: the command a RunCommand makes (`command`), the
    /// invocation with one task per instance, one more invoke on its command (if the
    /// command still exists), and one more invocation (InvocationCount,
    /// LastInvokedTime = the invocation's creation) on each task's instance. Tasks may
    /// already be ended (e.g. aborted because the instance's agent is not running).
    async fn insert_invocation(
        &self,
        command: Option<&CommandRecord>,
        invocation: &InvocationRecord,
        tasks: &[TaskRecord],
    ) -> Result<()>;
    /// [`Self::insert_invocation`] with what a request may add, in the same
    /// transaction: its `ClientToken` (if the token already made an invocation in this
    /// scope, nothing is stored and that one is returned) and its tags (set on the
    /// invocation and on the new command).
    async fn create_invocation(&self, new: NewInvocation<'_>) -> Result<Option<PriorInvocation>>;
    /// The invocation a `ClientToken` made in this scope, if any.
    async fn find_client_token(
        &self,
        scope: &Scope,
        token: &str,
    ) -> Result<Option<PriorInvocation>>;
    async fn get_invocation(
        &self,
        scope: &Scope,
        invoke_id: &str,
    ) -> Result<Option<InvocationRecord>>;
    /// Invocations newest first, each with its tasks (outputs included only when
    /// `with_output`).
    async fn list_invocations(
        &self,
        scope: &Scope,
        filter: &InvocationFilter,
        page: Page,
        with_output: bool,
    ) -> Result<Listing<InvocationView>>;
    /// Per-instance results, newest invocation first, then by instance id.
    async fn list_results(
        &self,
        scope: &Scope,
        filter: &ResultFilter,
        page: Page,
    ) -> Result<Listing<TaskRecord>>;
    async fn get_task(&self, invoke_id: &str, instance_id: &str) -> Result<Option<TaskRecord>>;
    /// The runs of a repeating invocation in scope (of one instance when given), newest
    /// first; empty when the invocation is not in scope.
    async fn list_runs(
        &self,
        scope: &Scope,
        invoke_id: &str,
        instance_id: Option<&str>,
        page: Page,
    ) -> Result<Listing<RunRecord>>;
    /// ModifyInvocationAttribute: applies the changes, bumps the revision; the
    /// invocation after the change, `None` when it is not in scope.
    async fn modify_invocation(
        &self,
        scope: &Scope,
        invoke_id: &str,
        change: &InvocationChange,
    ) -> Result<Option<InvocationRecord>>;
    /// Applies an event to one task (see `oca_domain::task`) and keeps the invocation's
    /// status counts and derived statuses in step, in one transaction. Returns the task
    /// after the event, or `None` if there is no such task.
    async fn apply_task_event(
        &self,
        invoke_id: &str,
        instance_id: &str,
        event: TaskEvent,
    ) -> Result<Option<TaskRecord>>;
    /// Applies many task events and output appends in one transaction (one sync),
    /// in order; the outcome of each, in the same order. This is how the dispatcher
    /// commits what thousands of agents report at once.
    async fn apply_batch(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteOutcome>>;

    /// Marks the invocation stopped by hand and applies `StopRequested` to its tasks on
    /// `instance_ids` (all when `None`), in one transaction. Returns the tasks that the
    /// stop changed.
    async fn stop_invocation(
        &self,
        scope: &Scope,
        invoke_id: &str,
        instance_ids: Option<&[String]>,
        at: Millis,
    ) -> Result<Vec<TaskRecord>>;
    /// Tasks of an instance in one of `statuses`, with what is needed to send them.
    async fn tasks_for_instance(
        &self,
        instance_id: &str,
        statuses: &[oca_domain::status::InvocationStatus],
    ) -> Result<Vec<DispatchItem>>;
    /// Pending tasks created before `before` (undelivered for too long).
    async fn pending_tasks_before(&self, before: Millis, limit: u64) -> Result<Vec<TaskRecord>>;
    /// Started one-time tasks (Running or Stopping) that should have ended more than
    /// `grace_ms` ago: start + the invocation's timeout + grace < `now`. (Repeating
    /// tasks are left to their agents, which report their runs when they return.)
    async fn overdue_tasks(
        &self,
        now: Millis,
        grace_ms: i64,
        limit: u64,
    ) -> Result<Vec<TaskRecord>>;

    // ---- whole output -----------------------------------------------------------
    /// Appends bytes `[offset, offset + data.len())` of a run's output, keeping at most
    /// `cap` bytes in all. Bytes already stored are not stored twice.
    async fn append_output(
        &self,
        invoke_id: &str,
        instance_id: &str,
        offset: u64,
        data: &[u8],
        cap: u64,
    ) -> Result<OutputAppend>;
    /// At most `max` bytes of a run's stored output from byte `offset` on, with how
    /// many bytes are stored in all; `None` if there is no such task. Reads only the
    /// chunks that overlap the range.
    async fn output_range(
        &self,
        invoke_id: &str,
        instance_id: &str,
        offset: u64,
        max: u64,
    ) -> Result<Option<(u64, Vec<u8>)>>;

    /// The whole stored output of a run.
    async fn full_output(&self, invoke_id: &str, instance_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .output_range(invoke_id, instance_id, 0, u64::MAX)
            .await?
            .map(|(_, data)| data))
    }

    // ---- tags -------------------------------------------------------------------
    /// Sets tags on resources in scope (a key already there gets the new value).
    /// Whether the resources exist is the caller's check.
    async fn tag(
        &self,
        scope: &Scope,
        kind: TagResource,
        ids: &[String],
        tags: &[Tag],
    ) -> Result<()>;
    /// Removes the tags with these keys (all tags when `keys` is `None`).
    async fn untag(
        &self,
        scope: &Scope,
        kind: TagResource,
        ids: &[String],
        keys: Option<&[String]>,
    ) -> Result<()>;
    /// The tags of each resource, by id, keys in order; resources without tags absent.
    async fn tags_of(
        &self,
        scope: &Scope,
        kind: TagResource,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<Tag>>>;
    /// The ids of the resources that carry every one of `tags` (a tag with an empty
    /// value matches any value of its key), in id order.
    async fn tagged(&self, scope: &Scope, kind: TagResource, tags: &[Tag]) -> Result<Vec<String>>;

    // ---- activations and instances ---------------------------------------------
    async fn insert_activation(&self, activation: &ActivationRecord) -> Result<()>;
    /// CreateActivation: the activation and its tags, in one transaction.
    async fn create_activation(&self, activation: &ActivationRecord, tags: &[Tag]) -> Result<()>;
    /// Any activation by id (for registration; not scoped).
    async fn get_activation(&self, activation_id: &str) -> Result<Option<ActivationRecord>>;
    /// DescribeActivations: activations in scope, newest first.
    async fn list_activations(
        &self,
        scope: &Scope,
        filter: &ActivationFilter,
        page: Page,
    ) -> Result<Listing<ActivationRecord>>;
    /// DisableActivation: no more registrations with it (instances already registered
    /// stay). The activation after the change; `None` when it is not in scope.
    async fn disable_activation(
        &self,
        scope: &Scope,
        activation_id: &str,
    ) -> Result<Option<ActivationRecord>>;
    /// DeleteActivation: the activation and its tags go; answers it as it was, `None`
    /// when it is not in scope. `Conflict` while an instance registered with it is
    /// still registered (deregistered ones do not count).
    async fn delete_activation(
        &self,
        scope: &Scope,
        activation_id: &str,
    ) -> Result<Option<ActivationRecord>>;
    /// Registers an instance under an activation, atomically checking and counting the
    /// activation's remaining uses. `Conflict` if it has none left or is disabled.
    async fn register_instance(&self, instance: &InstanceRecord) -> Result<()>;
    /// Any instance by id (for agent authentication; not scoped).
    async fn get_instance(&self, instance_id: &str) -> Result<Option<InstanceRecord>>;
    /// Instances in scope with these ids; ids that are absent or out of scope are
    /// simply missing from the answer.
    async fn get_instances(
        &self,
        scope: &Scope,
        instance_ids: &[String],
    ) -> Result<Vec<InstanceRecord>>;
    async fn list_instances(
        &self,
        scope: &Scope,
        filter: &InstanceFilter,
        page: Page,
    ) -> Result<Listing<InstanceRecord>>;
    /// DeregisterManagedInstance, in one transaction: the instance and its tags go
    /// (so its agent's token authenticates no more) and its activation counts one
    /// more deregistration. Its tasks stay, readable as before. Answers the instance
    /// as it was; `None` when it is not in scope.
    async fn deregister_instance(
        &self,
        scope: &Scope,
        instance_id: &str,
    ) -> Result<Option<InstanceRecord>>;
    /// ModifyManagedInstance: renames an instance in scope; the instance after the
    /// change, `None` when it is not in scope.
    async fn rename_instance(
        &self,
        scope: &Scope,
        instance_id: &str,
        name: &str,
    ) -> Result<Option<InstanceRecord>>;
    /// Records an agent's heartbeat and what it says of itself (its version, host name,
    /// OS and task isolation).
    async fn touch_instance(
        &self,
        instance_id: &str,
        at: Millis,
        agent_version: &str,
        hostname: &str,
        os_type: &str,
        task_isolation: &str,
    ) -> Result<()>;

    // ---- replay protection --------------------------------------------------------
    /// Keeps each nonce (one transaction for all of them); for each, whether it was
    /// new (`false`: the same key used it before and it has not expired, or it comes
    /// twice in `nonces`). Also forgets a bounded number of nonces expired by `now`.
    async fn record_nonces(&self, nonces: Vec<NonceRecord>, now: Millis) -> Result<Vec<bool>>;

    // ---- audit trail --------------------------------------------------------------
    /// Appends audit entries in one transaction. With `sync` false the commit does not
    /// wait for the disk: the entries survive a crash of the process at once, and a
    /// power loss once the next synced commit (of anything) or checkpoint has been
    /// made. (`audit::AuditLog` is how the server writes them.)
    async fn record_audit(&self, entries: Vec<AuditRecord>, sync: bool) -> Result<()>;
    /// The newest `filter.limit` audit entries that match, oldest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// Deletes, in one short write transaction, at most `batch` audit entries, oldest
    /// first: those made before `older_than`, those beyond the newest `max_entries`, and
    /// the unauthenticated ones beyond the newest `max_unauthenticated` of them.
    async fn purge_audit(
        &self,
        older_than: Millis,
        max_entries: u64,
        max_unauthenticated: u64,
        batch: u64,
    ) -> Result<AuditPurged>;

    // ---- retention --------------------------------------------------------------
    /// Deletes, in one short write transaction, at most `batch` invocations that have
    /// ended (none whose `InvokeStatus` is Running, none with a task Pending, Running,
    /// Stopping or Scheduled) and that were created before `older_than` or are, in
    /// their scope (account + region) and kind (command runs and file deliveries
    /// apart), beyond the newest `max_records`. Each goes with its tasks, their output
    /// and runs, its tags, its ClientToken and the hidden command a RunCommand made
    /// without KeepCommand (once nothing else refers to it), and leaves the tallies.
    /// `more` in the answer: the call stopped at its batch (or its task budget) and
    /// should be made again.
    async fn purge_invocations(
        &self,
        older_than: Millis,
        max_records: u64,
        batch: u64,
    ) -> Result<Purged>;
}

/// What one [`Store::purge_invocations`] call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub invocations: u64,
    /// Their tasks (one per instance).
    pub tasks: u64,
    /// Hidden commands (RunCommand without KeepCommand) that went with them.
    pub commands: u64,
    /// The call stopped before every candidate was examined: call again.
    pub more: bool,
}
