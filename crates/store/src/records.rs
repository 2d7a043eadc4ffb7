//! The records the store keeps.

use oca_domain::command::RepeatMode;
use oca_domain::status::{InvokeStatus, OverallStatus, StatusCounts};
use oca_domain::task::TaskState;
use oca_domain::time::Millis;

/// A tenant: everything it owns carries its `account_id`; its access keys work only
/// while it is enabled.
///
/// A deleted account stays as a tombstone (`deleted` set, `enabled` false): its id is
/// never given to another tenant, it can have no key, and its agents are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub account_id: String,
    /// A human-readable name (the id when none was given).
    pub name: String,
    pub created: Millis,
    pub enabled: bool,
    /// When the account was deleted; `None` while it lives.
    pub deleted: Option<Millis>,
}

impl AccountRecord {
    /// Its keys work and its agents may register: enabled and not deleted.
    pub fn is_active(&self) -> bool {
        self.enabled && self.deleted.is_none()
    }
}

/// The nonce of a signed request that changed something, kept until no request
/// carrying it could pass the time check, so that the request never runs twice,
/// restart or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceRecord {
    pub access_key_id: String,
    /// A digest of the nonce (fixed size, whatever the nonce's length).
    pub digest: Vec<u8>,
    pub expires: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    /// The secret, sealed with the server's master key (never stored in the clear).
    pub secret_sealed: Vec<u8>,
    pub account_id: String,
    pub enabled: bool,
    pub created: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub command_id: String,
    pub account_id: String,
    pub region_id: String,
    pub name: String,
    pub description: String,
    /// A `CommandType` wire value.
    pub command_type: String,
    /// The script, decoded.
    pub content: Vec<u8>,
    pub working_dir: String,
    pub timeout_secs: i64,
    pub enable_parameter: bool,
    pub parameter_names: Vec<String>,
    pub created: Millis,
    pub invoke_times: i64,
    /// False for the command a RunCommand creates without KeepCommand: it is not listed.
    pub visible: bool,
    /// The resource group (`ResourceGroupId`) it was created in; empty: none.
    pub resource_group_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter {
    pub command_id: Option<String>,
    /// Exact name.
    pub name: Option<String>,
    pub description: Option<String>,
    pub command_type: Option<String>,
    /// Commands of this resource group.
    pub resource_group_id: Option<String>,
    /// Commands carrying every one of these tags (an empty value matches any value).
    pub tags: Vec<Tag>,
}

/// What an invocation does on its instances. Each kind is listed and counted on its
/// own: a file delivery is never one of `DescribeInvocations`' records, nor a command
/// run one of `DescribeSendFileResults`'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum InvocationKind {
    /// Runs a command (RunCommand, InvokeCommand).
    #[default]
    Command,
    /// Writes a file (SendFile).
    File,
}

impl InvocationKind {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationKind::Command => "command",
            InvocationKind::File => "file",
        }
    }
}

/// How a file delivery writes its file. The file's name, description and content are
/// the invocation's `command_name`, `command_description` and `command_content`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSpec {
    /// Absolute directory, created when missing.
    pub target_dir: String,
    /// `PlainText` or `Base64`: how the caller sent the content (it is stored decoded).
    pub content_type: String,
    /// Empty: root.
    pub owner: String,
    /// Empty: root.
    pub group: String,
    /// Octal, e.g. `0644`; empty: `0644`.
    pub mode: String,
    pub overwrite: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationRecord {
    pub invoke_id: String,
    pub account_id: String,
    pub region_id: String,
    pub command_id: String,
    pub command_name: String,
    pub command_description: String,
    pub command_type: String,
    /// The script as the command had it (placeholders not filled in).
    pub command_content: Vec<u8>,
    pub enable_parameter: bool,
    /// The `Parameters` JSON object, `{}` when none.
    pub parameters: String,
    pub working_dir: String,
    pub username: String,
    pub timeout_secs: i64,
    /// `Once`, `Period`, `NextRebootOnly`, `EveryReboot`.
    pub repeat_mode: String,
    pub timed: bool,
    pub frequency: String,
    pub termination_mode: String,
    pub created: Millis,
    pub stopped_by_hand: bool,
    /// Instances per fine status; kept in step by the store.
    pub counts: StatusCounts,
    /// Set for a file delivery (SendFile), `None` for a command run.
    pub file: Option<FileSpec>,
    /// Bumped by each ModifyInvocationAttribute; agents keep the revision they run.
    pub revision: u64,
    /// The resource group (`ResourceGroupId`) the invocation was made in; empty: none.
    /// Its tasks are in the same group, and so were its instances when it was made.
    pub resource_group_id: String,
}

impl InvocationRecord {
    /// The `RepeatMode` (Once for a value this build does not know).
    pub fn repeat(&self) -> RepeatMode {
        RepeatMode::parse(&self.repeat_mode).unwrap_or_default()
    }

    pub fn kind(&self) -> InvocationKind {
        match self.file {
            Some(_) => InvocationKind::File,
            None => InvocationKind::Command,
        }
    }

    pub fn periodic(&self) -> bool {
        self.timed
    }

    /// The legacy `InvokeStatus`.
    pub fn invoke_status(&self) -> InvokeStatus {
        oca_domain::status::invoke_status(&self.counts, self.periodic(), self.stopped_by_hand)
    }

    /// The overall `InvocationStatus`.
    pub fn overall_status(&self) -> OverallStatus {
        oca_domain::status::overall_status(&self.counts)
    }
}

/// One instance's run of an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub invoke_id: String,
    pub instance_id: String,
    pub account_id: String,
    pub region_id: String,
    pub command_id: String,
    pub username: String,
    pub timed: bool,
    pub created: Millis,
    pub updated: Millis,
    pub state: TaskState,
    /// Bytes of whole output stored.
    pub output_len: u64,
    /// Always its invocation's resource group (as its account and region are).
    pub resource_group_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationView {
    pub invocation: InvocationRecord,
    pub tasks: Vec<TaskRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationFilter {
    /// Command runs (the default) or file deliveries.
    pub kind: InvocationKind,
    /// Keyset paging: only rows after this position (the page's offset is then 0).
    pub after: Option<crate::Cursor>,
    pub invoke_id: Option<String>,
    pub command_id: Option<String>,
    /// Exact name (a file delivery's file name).
    pub command_name: Option<String>,
    pub command_type: Option<String>,
    pub timed: Option<bool>,
    pub invoke_status: Option<InvokeStatus>,
    /// Invocations that include this instance.
    pub instance_id: Option<String>,
    pub repeat_mode: Option<String>,
    /// The overall `InvocationStatus`.
    pub overall_status: Option<OverallStatus>,
    /// Invocations carrying every one of these tags (an empty value matches any value).
    pub tags: Vec<Tag>,
    /// Invocations made in this resource group.
    pub resource_group_id: Option<String>,
}

/// One run of a repeating task (`IncludeHistory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub invoke_id: String,
    pub instance_id: String,
    /// 1, 2, … as the agent numbered them.
    pub run: u64,
    pub status: oca_domain::status::InvocationStatus,
    pub exit_code: Option<i64>,
    pub error: Option<oca_domain::task_error::TaskError>,
    pub start_time: Option<Millis>,
    pub finish_time: Option<Millis>,
    pub output: Vec<u8>,
    pub dropped: u64,
}

/// What ModifyInvocationAttribute changes (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationChange {
    pub command_content: Option<Vec<u8>>,
    pub enable_parameter: Option<bool>,
    /// The `Parameters` JSON object.
    pub parameters: Option<String>,
    pub frequency: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultFilter {
    /// Command runs (the default) or file deliveries.
    pub kind: InvocationKind,
    /// Keyset paging: only rows after this position (the page's offset is then 0).
    pub after: Option<crate::Cursor>,
    pub invoke_id: Option<String>,
    pub instance_id: Option<String>,
    pub command_id: Option<String>,
    /// Coarse status (`InvokeRecordStatus`).
    pub record_status: Option<oca_domain::status::InstanceInvokeStatus>,
    /// Tasks of invocations made in this resource group.
    pub resource_group_id: Option<String>,
}

/// A task with what the dispatcher needs to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchItem {
    pub invocation: InvocationRecord,
    pub task: TaskRecord,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationRecord {
    pub activation_id: String,
    pub account_id: String,
    pub region_id: String,
    /// SHA-256 hex of the activation code.
    pub code_hash: String,
    pub instance_name: String,
    pub description: String,
    pub instance_count: i64,
    /// Registrations made with it (each counts against `instance_count`).
    pub registered_count: i64,
    /// Of those, the instances deregistered since (DeregisterManagedInstance); a
    /// deregistration does not give the use back.
    pub deregistered_count: i64,
    pub ip_address_range: String,
    pub created: Millis,
    pub expires: Millis,
    /// DisableActivation: no more registrations with it.
    pub disabled: bool,
    /// The resource group (`ResourceGroupId`) of the activation and of the instances
    /// that register with it; empty: none.
    pub resource_group_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub account_id: String,
    pub region_id: String,
    /// The instance's name (the activation's InstanceName, else the hostname).
    pub name: String,
    pub hostname: String,
    pub os_type: String,
    pub agent_version: String,
    pub machine_id: String,
    pub activation_id: String,
    /// SHA-256 hex of the agent's token.
    pub token_hash: String,
    pub registered: Millis,
    pub last_heartbeat: Option<Millis>,
    pub last_invoked: Option<Millis>,
    pub invocation_count: i64,
    /// Its activation's resource group; empty: none.
    pub resource_group_id: String,
    /// How its agent keeps a run's processes together, as its `Hello` said:
    /// `cgroup`, `process-tree`; empty until an agent that says so connects.
    pub task_isolation: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    pub instance_ids: Option<Vec<String>>,
    /// Instances other than these.
    pub exclude_ids: Option<Vec<String>>,
    pub os_type: Option<String>,
    /// Instances of this resource group.
    pub resource_group_id: Option<String>,
    /// Exact name.
    pub name: Option<String>,
    pub activation_id: Option<String>,
    pub machine_id: Option<String>,
    /// Instances carrying every one of these tags (an empty value matches any value).
    pub tags: Vec<Tag>,
}

/// Which activations DescribeActivations lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivationFilter {
    pub activation_ids: Option<Vec<String>>,
    /// Exact default instance name.
    pub instance_name: Option<String>,
    pub resource_group_id: Option<String>,
    /// Activations carrying every one of these tags (an empty value matches any value).
    pub tags: Vec<Tag>,
}

/// A caller's `ClientToken` and a digest of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    pub token: String,
    pub digest: String,
}

/// The invocation a `ClientToken` already made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorInvocation {
    pub invoke_id: String,
    pub command_id: String,
    /// The digest of the request that made it.
    pub digest: String,
}

/// What a tag is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagResource {
    Instance,
    Command,
    Invocation,
    /// A managed instance activation code.
    Activation,
}

impl TagResource {
    /// The `ResourceType` wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            TagResource::Instance => "instance",
            TagResource::Command => "command",
            TagResource::Invocation => "invocation",
            TagResource::Activation => "activation",
        }
    }
}

/// One tag: a key and its value (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// One entry of the audit trail: a call that changed something or tried to (every API
/// action but `Describe…`/`List…`, refusals included), an agent registration, an
/// agent cut off by a deregistration, or a change made offline (`oca keys`, `oca
/// accounts`: source `local`). Operators' data: no API action reads it.
///
/// Nothing secret is kept: no command content, no parameter values, no activation
/// code, token or secret; only ids. What a caller sent is bounded before it gets here
/// (see `oca_store::audit`): ids are cut to 64 bytes, at most 16 of them per entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    /// When the call was answered (Unix ms).
    pub at: Millis,
    /// The account the call acted for; for a refusal, the account of the access key
    /// or activation it named, if that exists; else empty.
    pub account_id: String,
    /// The access key the request claimed (empty when it named none, and for agents).
    pub access_key_id: String,
    /// The caller's IP address (the TCP peer's); `local` for a change made offline.
    pub source: String,
    /// The API action (`RunCommand`, …) or agent event (`RegisterAgent`, `AgentCutOff`).
    pub action: String,
    /// The ids the call named or created, at most 16.
    pub targets: Vec<String>,
    /// Ids left out past the cap (for `AuditOverflow`: the entries left out).
    pub omitted: u64,
    /// `Success`, or the error code answered.
    pub result: String,
    /// The HTTP status answered.
    pub http_status: u16,
    pub request_id: String,
    /// Whether the caller proved a secret: a signature verified and admitted (a fresh
    /// nonce, an enabled key), an activation code or an agent token that matched.
    /// Entries that did not are capped apart, so a flood of refusals cannot push the
    /// others out.
    pub authenticated: bool,
}

/// Which audit entries [`crate::Store::list_audit`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Entries at or after this time.
    pub since: Option<Millis>,
    pub action: Option<String>,
    pub account_id: Option<String>,
    /// The newest this many at most.
    pub limit: u64,
}

/// What one [`crate::Store::purge_audit`] call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditPurged {
    pub entries: u64,
    /// The call stopped at its batch: call again.
    pub more: bool,
}
