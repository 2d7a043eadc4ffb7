//! The pure domain of OCA: everything the Cloud Assistant contract says about commands,
//! invocations and their statuses that needs no I/O.
//!
//! - [`ids`]: resource ids (`c-…`, `t-…`, `mi-…`, request ids).
//! - [`instance`]: the rule a managed instance's name obeys.
//! - [`status`]: the per-instance and whole-invocation status rules of the seeds.
//! - [`task`]: how one instance's run moves between statuses.
//! - [`task_error`]: the `ErrorCode` / `ErrorInfo` pairs of seed 001, verbatim.
//! - [`output`]: the 24 KB head-and-tail view of a run's output and its `Dropped` count.
//! - [`params`]: `{{name}}` parameters and the `ACS::` built-ins.
//! - [`command`]: command types, content encoding and the limits of a command.
//! - [`time`]: the wire's time format.
//! - [`throttle`]: failed authentications counted per source address.
//! - [`frequency`]: `Frequency` of periodic invocations: rate, at and cron, zones, next run.

pub mod command;
pub mod frequency;
pub mod ids;
pub mod instance;
pub mod output;
pub mod params;
pub mod status;
pub mod task;
pub mod task_error;
pub mod throttle;
pub mod time;
