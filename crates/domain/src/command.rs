//! What a command is: its type, how its content is encoded, and its limits.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The most a command's content may be, Base64-encoded: 18 KB.
pub const MAX_CONTENT_BASE64_LEN: usize = 18 * 1024;
/// The default run timeout in seconds.
pub const DEFAULT_TIMEOUT_SECS: i64 = 60;
/// The shortest and longest run timeouts the API accepts, in seconds.
pub const MIN_TIMEOUT_SECS: i64 = 10;
pub const MAX_TIMEOUT_SECS: i64 = 86_400;
/// The longest command name and description.
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_DESCRIPTION_LEN: usize = 512;

/// The kind of script a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandType {
    RunShellScript,
    RunPowerShellScript,
    RunBatScript,
}

impl CommandType {
    pub const ALL: &'static [CommandType] = &[
        CommandType::RunShellScript,
        CommandType::RunPowerShellScript,
        CommandType::RunBatScript,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::RunShellScript => "RunShellScript",
            CommandType::RunPowerShellScript => "RunPowerShellScript",
            CommandType::RunBatScript => "RunBatScript",
        }
    }

    /// Parses a wire value exactly, as the cloud does (`InvalidCmdType.NotFound` else).
    pub fn parse(s: &str) -> Option<CommandType> {
        CommandType::ALL.iter().copied().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for CommandType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stop or a timeout kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TerminationMode {
    /// The script's own process; what it started keeps running.
    Process,
    /// The script and everything it started, daemons and new sessions included.
    #[default]
    ProcessTree,
}

impl TerminationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationMode::Process => "Process",
            TerminationMode::ProcessTree => "ProcessTree",
        }
    }

    /// Parses a wire value exactly (`InvalidTerminationMode.NotFound` else).
    pub fn parse(s: &str) -> Option<TerminationMode> {
        [TerminationMode::Process, TerminationMode::ProcessTree]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// When an invocation runs (`RepeatMode`). `DryRun` is the API's alone: it checks the
/// request and runs nothing, so it never reaches a store or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RepeatMode {
    /// Now, once.
    #[default]
    Once,
    /// On the schedule of its `Frequency`, until stopped (`at(…)`: once, then).
    Period,
    /// Once, when the instance next starts after a reboot.
    NextRebootOnly,
    /// Every time the instance starts after a reboot, until stopped.
    EveryReboot,
    /// Checks the request, runs nothing.
    DryRun,
}

impl RepeatMode {
    pub const ALL: [RepeatMode; 5] = [
        RepeatMode::Once,
        RepeatMode::Period,
        RepeatMode::NextRebootOnly,
        RepeatMode::EveryReboot,
        RepeatMode::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RepeatMode::Once => "Once",
            RepeatMode::Period => "Period",
            RepeatMode::NextRebootOnly => "NextRebootOnly",
            RepeatMode::EveryReboot => "EveryReboot",
            RepeatMode::DryRun => "DryRun",
        }
    }

    /// Parses a wire value exactly (`InvalidRepeatMode.NotFound` else).
    pub fn parse(s: &str) -> Option<RepeatMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// True when the invocation stays on its instances after a run (legacy `Timed`).
    pub fn repeats(self) -> bool {
        matches!(
            self,
            RepeatMode::Period | RepeatMode::NextRebootOnly | RepeatMode::EveryReboot
        )
    }
}

/// How `CommandContent` arrives in a request and how `Output` and `CommandContent` are
/// returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentEncoding {
    PlainText,
    #[default]
    Base64,
}

impl ContentEncoding {
    /// Parses `PlainText` or `Base64`, ignoring case.
    pub fn parse(s: &str) -> Option<ContentEncoding> {
        if s.eq_ignore_ascii_case("PlainText") {
            Some(ContentEncoding::PlainText)
        } else if s.eq_ignore_ascii_case("Base64") {
            Some(ContentEncoding::Base64)
        } else {
            None
        }
    }

    /// Renders bytes for the wire: Base64, or text (bytes that are not UTF-8 become
    /// U+FFFD, since JSON and XML carry text only).
    pub fn render(self, bytes: &[u8]) -> String {
        match self {
            ContentEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
            ContentEncoding::PlainText => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

/// Decodes Base64 `CommandContent`, accepting missing padding as the cloud does.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('='))
        })
        .ok()
}

pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The length content has once Base64-encoded, which is what the 18 KB limit counts.
pub fn base64_len(raw_len: usize) -> usize {
    raw_len.div_ceil(3) * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_exactly() {
        for t in CommandType::ALL {
            assert_eq!(CommandType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(CommandType::parse("runshellscript"), None);
    }

    #[test]
    fn termination_modes() {
        assert_eq!(
            TerminationMode::parse("Process"),
            Some(TerminationMode::Process)
        );
        assert_eq!(
            TerminationMode::parse("ProcessTree"),
            Some(TerminationMode::ProcessTree)
        );
        assert_eq!(TerminationMode::parse("processtree"), None);
        assert_eq!(TerminationMode::default(), TerminationMode::ProcessTree);
    }

    #[test]
    fn encodings() {
        assert_eq!(
            ContentEncoding::parse("plaintext"),
            Some(ContentEncoding::PlainText)
        );
        assert_eq!(
            ContentEncoding::parse("BASE64"),
            Some(ContentEncoding::Base64)
        );
        assert_eq!(ContentEncoding::parse("hex"), None);
        assert_eq!(ContentEncoding::Base64.render(b"ls"), "bHM=");
        assert_eq!(ContentEncoding::PlainText.render(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(decode_base64("bHM=").unwrap(), b"ls");
        assert_eq!(decode_base64("bHM").unwrap(), b"ls");
        assert_eq!(decode_base64("!!"), None);
        assert_eq!(base64_len(2), 4);
        assert_eq!(base64_len(3), 4);
        assert_eq!(base64_len(4), 8);
    }
}
