//! The reasons a run did not succeed: the `ErrorCode` / `ErrorInfo` pairs of seed 001,
//! verbatim, and the fine status each one leaves a run in; then the codes of a file
//! delivery (SendFile), named as the official agent reports them.

use crate::status::InvocationStatus;
use serde::{Deserialize, Serialize};

macro_rules! task_errors {
    ($($code:ident => $info:literal, $status:ident;)+) => {
        /// An `ErrorCode` of seed 001.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum TaskError { $($code),+ }

        impl TaskError {
            pub const ALL: &'static [TaskError] = &[$(TaskError::$code),+];

            /// The `ErrorCode` as written on the wire.
            pub fn code(self) -> &'static str {
                match self { $(TaskError::$code => stringify!($code)),+ }
            }

            /// The `ErrorInfo` that goes with the code, verbatim from seed 001.
            pub fn info(self) -> &'static str {
                match self { $(TaskError::$code => $info),+ }
            }

            /// The fine status a run ends in for this reason.
            pub fn status(self) -> InvocationStatus {
                match self { $(TaskError::$code => InvocationStatus::$status),+ }
            }

            pub fn from_code(code: &str) -> Option<TaskError> {
                TaskError::ALL.iter().copied().find(|e| e.code() == code)
            }
        }
    };
}

task_errors! {
    InstanceNotExists => "the specified instance does not exists", Aborted;
    InstanceReleased => "the instance has released when create task", Aborted;
    InstanceNotRunning => "the instance is not running when create task", Aborted;
    CommandNotApplicable => "the command is not applicable", Invalid;
    AccountNotExists => "the specified account does not exists", Invalid;
    DirectoryNotExists => "the specified directory does not exists", Invalid;
    BadCronExpression => "the cron job expression is invalid", Invalid;
    ClientNotRunning => "the aliyun service is not running on the instance", Aborted;
    ClientNotResponse => "the aliyun service in the instance does not response", Aborted;
    ClientIsUpgrading => "the aliyun service in the instance is upgrading now", Aborted;
    ClientNeedUpgrade => "the aliyun service in the instance need upgrade", Aborted;
    DeliveryTimeout => "the command delivery has been timeout", Aborted;
    ExecutionTimeout => "the command execution has been timeout", Timeout;
    ExecutionException => "the command execution got an exception", Error;
    ExecutionInterrupted => "the command execution has been interrupted", Error;
    ExitCodeNonzero => "the command execution exit code is not zero", Failed;
    // SendFile: refused before writing (the official agent's "invalid task" keys) ...
    FileNameInvalid => "the file name is not valid", Invalid;
    FileExist => "the file already exists and Overwrite is false", Invalid;
    EmptyFile => "the file content is empty", Invalid;
    InvalidFileContent => "the file content cannot be decoded", Invalid;
    InvalidFileMode => "the file mode is not valid", Invalid;
    FileOwnerNotExist => "the file owner does not exist", Invalid;
    FileGroupNotExist => "the file group does not exist", Invalid;
    // ... and failures while writing.
    DirectoryCreateFailed => "the target directory could not be created", Failed;
    FileCreateFailed => "the file could not be written", Failed;
    FileChownFailed => "the file owner or group could not be set", Failed;
    FileChmodFailed => "the file mode could not be set", Failed;
}

/// How many codes come from seed 001 (the first ones of [`TaskError::ALL`]).
pub const SEED_CODES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_infos_are_verbatim() {
        assert_eq!(TaskError::ALL[SEED_CODES - 1], TaskError::ExitCodeNonzero);
        assert_eq!(TaskError::FileExist.status(), InvocationStatus::Invalid);
        assert_eq!(
            TaskError::FileCreateFailed.status(),
            InvocationStatus::Failed
        );
        for e in TaskError::ALL {
            assert_eq!(TaskError::from_code(e.code()), Some(*e));
            assert!(!e.info().is_empty());
            assert!(e.status().is_terminal());
        }
        assert_eq!(
            TaskError::ExitCodeNonzero.info(),
            "the command execution exit code is not zero"
        );
        assert_eq!(
            TaskError::ClientNotRunning.info(),
            "the aliyun service is not running on the instance"
        );
        assert_eq!(
            TaskError::ExecutionTimeout.status(),
            InvocationStatus::Timeout
        );
        assert_eq!(
            TaskError::ClientNotRunning.status(),
            InvocationStatus::Aborted
        );
        assert_eq!(TaskError::from_code("Nope"), None);
    }
}
