//! The agent protocol: how the OCA server and its agents talk.
//!
//! ## Transport
//! - `POST /agent/v1/register` with a JSON [`RegisterRequest`] (an activation id and code)
//!   answers a [`RegisterResponse`]: the instance id and a token the agent keeps.
//! - `GET /agent/v1/connect` with `Authorization: Bearer <instance_id>:<token>` upgrades to
//!   a WebSocket. Each text frame is one JSON message: [`AgentMsg`] from the agent,
//!   [`ServerMsg`] from the server. The server pushes work the moment it exists.
//!
//! ## Conversation
//! 1. The agent sends [`AgentMsg::Hello`] with every task it still knows (running, or
//!    finished with a result not yet acknowledged). The server answers
//!    [`ServerMsg::Welcome`], then sends [`ServerMsg::Run`] for every task of this
//!    instance still waiting for delivery, and [`ServerMsg::Stop`] for every task a
//!    person asked to stop. A task the server believes started but the agent no longer
//!    knows ended with the agent (ExecutionInterrupted).
//! 2. Per task: `Started`, then `Output` chunks (the whole output, in order, with their
//!    byte offset, up to the cap the task names), then `Finished`.
//! 3. The server answers `Finished` with [`ServerMsg::Ack`] once the result and all of the
//!    output are stored; the agent keeps the task's spooled result until then and sends
//!    it again after a reconnect. If the server is missing output (chunks lost with a
//!    dropped connection), it answers [`ServerMsg::Resend`] with the offset it has; the
//!    agent sends the output from there and `Finished` again.
//! 4. The agent sends [`AgentMsg::Heartbeat`] every `heartbeat_secs` of the `Welcome`.
//!
//! One instance has one live connection: a newer one replaces the older, which the
//! server closes ([`CLOSE_REPLACED`]).
//!
//! Every step is idempotent: a `Run` for a task the agent already knows is ignored, a
//! second `Finished` for a stored result is acknowledged again, output already stored is
//! not appended twice.
//!
//! ## Repeating tasks (RepeatMode Period, NextRebootOnly, EveryReboot)
//! A [`Task`] with a [`Repeat`] is kept by the agent, on disk, and run on its schedule
//! by the agent itself, so the schedule holds while the server is unreachable.
//! - On `Run` the agent stores the schedule and answers [`AgentMsg::Scheduled`]. A `Run`
//!   with a higher `revision` (ModifyInvocationAttribute) replaces the schedule; one with
//!   the same or a lower revision is answered `Scheduled` again and changes nothing.
//! - Each run is numbered (`run` = 1, 2, …, counted by the agent, stored before the run
//!   starts so that no run happens twice across restarts). `Started` and `Finished`
//!   carry the number; `more` in the result says whether the schedule continues (false
//!   after an `at(…)` run, a NextRebootOnly run, or a run ended by `Stop`). The server
//!   acknowledges each run with `Ack { run }`; results of several runs may wait for
//!   their acks at once. Repeating runs send no `Output` chunks: a run's result is its
//!   24 KB view.
//! - A run that comes due while the previous one is still going is skipped, not
//!   stacked. Reboot modes fire when the agent starts on a boot (boot id) other than
//!   the one the task was registered or last fired on.
//! - `Stop` ends the schedule (and the current run, if any). In `Hello`, the agent
//!   lists its repeating tasks with their revision: the server sends `Run` for a stale
//!   revision and `Stop` for a task it has ended.
//!
//! ## Limits
//! What an agent sends is bounded ([`limits`]): a message larger than
//! [`limits::MAX_MESSAGE_BYTES`] ends the connection ([`CLOSE_TOO_BIG`]) before the
//! server has read it; a registration with a field past its cap is refused
//! ([`RegisterError`] `InvalidParameter`); a `Hello` field past its cap is cut to it.
//! A source address that keeps failing to authenticate (wrong activation codes, wrong
//! tokens) is throttled for a while: registration and connection alike answer HTTP 400
//! with the [`RegisterError`] `Throttling.User` (`oca_domain::throttle`), even to a
//! right secret; the agent waits and tries again.

use oca_domain::command::{CommandType, RepeatMode, TerminationMode};
use oca_domain::status::InvocationStatus;
use oca_domain::task_error::TaskError;
use oca_domain::time::Millis;
use serde::{Deserialize, Serialize};

pub mod install;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

pub const REGISTER_PATH: &str = "/agent/v1/register";
pub const CONNECT_PATH: &str = "/agent/v1/connect";

/// The Close code of a connection replaced by a newer one of the same instance (a code
/// of the private range, 4000–4999, of RFC 6455).
pub const CLOSE_REPLACED: u16 = 4001;
/// The Close code of a connection whose instance no longer exists for the server: it
/// was deregistered, or its account was deleted (1008, policy violation).
pub const CLOSE_GONE: u16 = 1008;
/// The Close code of every connection when the server stops (1012, service restart,
/// in IANA's WebSocket close code registry): the agent reconnects after a short random
/// pause, so a restarted server is not met by all its agents at once.
pub const CLOSE_RESTARTING: u16 = 1012;
/// The Close code of a connection that sent a message past
/// [`limits::MAX_MESSAGE_BYTES`] (1009, message too big).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The bounds on what an agent sends (what a legitimate agent sends stays far below
/// each).
pub mod limits {
    /// The largest WebSocket message (and frame) the server reads from an agent.
    ///
    /// What a legitimate agent sends at most:
    /// - `Output`: at most 64 KiB of output (`oca_agent`'s `CHUNK_BYTES`), which is
    ///   87,384 bytes of Base64, plus a ~100-byte envelope;
    /// - `Finished`: the 24 KB head-and-tail view (`oca_domain::output::OUTPUT_LIMIT`),
    ///   32,768 bytes of Base64, plus a ~300-byte envelope;
    /// - `Hello`: ~90 bytes per known task (an invoke id of 22 characters), so
    ///   [`MAX_KNOWN_TASKS`] of them take ~370 KB, and ~540 KB with ids of
    ///   [`MAX_ID`] characters.
    ///
    /// 1 MiB is twelve times the largest message of the steady state, and room for a
    /// full `Hello`; a host that sends more is cut off before the server has read it
    /// (the limit applies to each frame as its header arrives, and to the message as
    /// its frames are gathered), where the default of 64 MiB let one host push the
    /// server past 500 MB.
    pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
    /// The most tasks a `Hello` lists that the server takes into account: beyond, the
    /// rest are ignored and the server, not knowing all the agent holds, does not end
    /// runs as lost on that connection.
    pub const MAX_KNOWN_TASKS: usize = 4096;
    /// The longest id (invoke ids are 22 characters); an agent message about a longer
    /// one is ignored.
    pub const MAX_ID: usize = 64;
    /// The longest host name (a fully qualified domain name has at most 253
    /// characters; Linux's own host name at most 64).
    pub const MAX_HOSTNAME: usize = 255;
    /// The longest `os_type` (`linux`, `windows`).
    pub const MAX_OS_TYPE: usize = 32;
    /// The longest agent version.
    pub const MAX_AGENT_VERSION: usize = 64;
    /// The longest machine id (`/etc/machine-id` holds 32 hexadecimal digits, a
    /// Windows MachineGuid 36 characters).
    pub const MAX_MACHINE_ID: usize = 128;
    /// The longest activation id (`act-` and 20 characters) worth looking up.
    pub const MAX_ACTIVATION_ID: usize = 64;
    /// The longest activation code worth checking (they have 40 characters).
    pub const MAX_ACTIVATION_CODE: usize = 256;
    /// The largest registration request body (a legitimate one has ~300 bytes).
    pub const MAX_REGISTER_BODY: usize = 16 * 1024;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub activation_id: String,
    pub activation_code: String,
    pub hostname: String,
    /// `linux`, `windows`, …
    pub os_type: String,
    pub agent_version: String,
    /// `/etc/machine-id` where there is one.
    #[serde(default)]
    pub machine_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub instance_id: String,
    pub token: String,
}

/// An error the register endpoint answers with (HTTP 4xx), as JSON; the connect
/// endpoint answers with it too when the agent's address is throttled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterError {
    pub code: String,
    pub message: String,
}

/// One run to carry out on the agent's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub invoke_id: String,
    pub command_id: String,
    pub command_type: CommandType,
    /// The script, parameters already filled in.
    pub script: String,
    /// Empty: the user's home directory.
    pub working_dir: String,
    /// Empty: the agent's own user (root).
    pub username: String,
    pub timeout_secs: u64,
    /// The most output bytes to send in `Output` chunks; beyond, output is only counted
    /// (and kept in the 24 KB head-and-tail view).
    pub output_cap: u64,
    /// What a stop or a timeout kills (absent from older servers: the whole tree).
    #[serde(default)]
    pub termination_mode: TerminationMode,
    /// Set for a file delivery (SendFile): the agent writes this file instead of
    /// running a script, and reports like a run (Success, or Invalid/Failed with the
    /// file's error code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Box<FileDelivery>>,
    /// Set for a repeating task: when to run. Absent: run once, now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
    /// Bumped each time the invocation is modified (ModifyInvocationAttribute).
    #[serde(default)]
    pub revision: u64,
}

/// When a repeating task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeat {
    /// Period, NextRebootOnly or EveryReboot.
    pub mode: RepeatMode,
    /// For Period: `rate(…)`, `at(…)` or a cron expression (see
    /// `oca_domain::frequency`); without a zone, the host's own zone applies.
    #[serde(default)]
    pub frequency: String,
    /// The invocation's creation: a `rate(…)` fires at anchor + k × interval.
    pub anchor: Millis,
}

/// A file to write on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDelivery {
    /// The file's name (no directory part).
    pub name: String,
    /// An absolute directory; created (with its parents) when missing.
    pub target_dir: String,
    /// The content, Base64.
    pub content: String,
    /// Owner and group names; empty = root.
    pub owner: String,
    pub group: String,
    /// Octal mode, e.g. `0644`; empty = `0644`.
    pub mode: String,
    pub overwrite: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        instance_id: String,
        heartbeat_secs: u64,
        server_time: Millis,
    },
    Run(Task),
    /// End the task's process tree; the task finishes `Terminated`.
    Stop {
        invoke_id: String,
    },
    /// The result of this task (of run `run` of a repeating task) is stored: forget it.
    Ack {
        invoke_id: String,
        #[serde(default)]
        run: u64,
    },
    /// Output from `offset` on is missing: send it again, then `Finished` again.
    Resend {
        invoke_id: String,
        offset: u64,
    },
}

/// What the agent knows of a task when it (re)connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownTask {
    pub invoke_id: String,
    /// True when the task has ended and its result waits for an `Ack`.
    pub finished: bool,
    /// Set for a repeating task the agent keeps: the revision it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeating: Option<u64>,
}

/// The outcome of a run, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub invoke_id: String,
    pub status: InvocationStatus,
    pub exit_code: Option<i64>,
    pub error: Option<TaskError>,
    pub start_time: Option<Millis>,
    pub finish_time: Millis,
    /// Base64 of the 24 KB head-and-tail view of the output.
    pub output: String,
    /// Bytes cut from between head and tail.
    pub dropped: u64,
    /// Bytes of output sent (or to be sent) as `Output` chunks: min(total, output_cap).
    pub output_len: u64,
    /// The run's number for a repeating task (1, 2, …); 0 for a one-time task.
    #[serde(default)]
    pub run: u64,
    /// For a repeating task: the schedule goes on after this run.
    #[serde(default)]
    pub more: bool,
}

impl TaskResult {
    /// The result of a run that ended before it started (`error` says why: a user
    /// that does not exist, a spool that cannot be written, …): no exit code, no
    /// output, the schedule of a repeating task ends.
    pub fn not_started(invoke_id: &str, run: u64, error: TaskError, at: Millis) -> TaskResult {
        TaskResult {
            invoke_id: invoke_id.to_string(),
            status: error.status(),
            exit_code: None,
            error: Some(error),
            start_time: None,
            finish_time: at,
            output: String::new(),
            dropped: 0,
            output_len: 0,
            run,
            more: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMsg {
    Hello {
        protocol: u32,
        agent_version: String,
        hostname: String,
        os_type: String,
        known: Vec<KnownTask>,
        /// How the agent keeps a run's processes together so that its timeout or stop
        /// ends them all: `cgroup` or `process-tree` (empty from older agents).
        #[serde(default)]
        task_isolation: String,
    },
    Heartbeat {
        active_tasks: u32,
    },
    Started {
        invoke_id: String,
        start_time: Millis,
        /// The run's number for a repeating task; 0 for a one-time task.
        #[serde(default)]
        run: u64,
    },
    /// A repeating task is (still) on the agent's schedule, at this revision.
    Scheduled {
        invoke_id: String,
        revision: u64,
    },
    /// Output bytes `[offset, offset + len)` of the task, Base64.
    Output {
        invoke_id: String,
        offset: u64,
        data: String,
    },
    Finished(TaskResult),
}

impl ServerMsg {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

impl AgentMsg {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let run = ServerMsg::Run(Task {
            invoke_id: "t-1".into(),
            command_id: "c-1".into(),
            command_type: CommandType::RunShellScript,
            script: "echo hi".into(),
            working_dir: String::new(),
            username: String::new(),
            timeout_secs: 60,
            output_cap: 16 << 20,
            termination_mode: TerminationMode::Process,
            file: None,
            repeat: Some(Repeat {
                mode: RepeatMode::Period,
                frequency: "rate(5m)".into(),
                anchor: 7,
            }),
            revision: 2,
        });
        let json = run.to_json();
        assert!(json.contains(r#""type":"run""#), "{json}");
        assert_eq!(serde_json::from_str::<ServerMsg>(&json).unwrap(), run);

        let fin = AgentMsg::Finished(TaskResult {
            invoke_id: "t-1".into(),
            status: InvocationStatus::Failed,
            exit_code: Some(3),
            error: Some(TaskError::ExitCodeNonzero),
            start_time: Some(1),
            finish_time: 2,
            output: "aGk=".into(),
            dropped: 0,
            output_len: 2,
            run: 3,
            more: true,
        });
        let json = fin.to_json();
        assert!(json.contains(r#""type":"finished""#), "{json}");
        assert!(json.contains(r#""error":"ExitCodeNonzero""#), "{json}");
        assert_eq!(serde_json::from_str::<AgentMsg>(&json).unwrap(), fin);
    }

    #[test]
    fn a_task_without_termination_mode_kills_the_tree() {
        let json = r#"{"type":"run","invoke_id":"t-1","command_id":"c-1","command_type":"RunShellScript","script":"x","working_dir":"","username":"","timeout_secs":5,"output_cap":10}"#;
        match serde_json::from_str::<ServerMsg>(json).unwrap() {
            ServerMsg::Run(t) => assert_eq!(t.termination_mode, TerminationMode::ProcessTree),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_of_one_time_tasks_read_without_the_repeat_fields() {
        let json = r#"{"type":"ack","invoke_id":"t-1"}"#;
        assert_eq!(
            serde_json::from_str::<ServerMsg>(json).unwrap(),
            ServerMsg::Ack {
                invoke_id: "t-1".into(),
                run: 0
            }
        );
        // An older agent's Hello says nothing of its task isolation.
        let json = r#"{"type":"hello","protocol":1,"agent_version":"0.1","hostname":"h","os_type":"linux","known":[]}"#;
        match serde_json::from_str::<AgentMsg>(json).unwrap() {
            AgentMsg::Hello { task_isolation, .. } => assert_eq!(task_isolation, ""),
            other => panic!("{other:?}"),
        }
        let json = r#"{"type":"started","invoke_id":"t-1","start_time":5}"#;
        assert_eq!(
            serde_json::from_str::<AgentMsg>(json).unwrap(),
            AgentMsg::Started {
                invoke_id: "t-1".into(),
                start_time: 5,
                run: 0
            }
        );
    }

    #[test]
    fn unknown_messages_are_errors_not_panics() {
        assert!(serde_json::from_str::<AgentMsg>(r#"{"type":"bogus"}"#).is_err());
        assert!(serde_json::from_str::<ServerMsg>("not json").is_err());
    }
}
