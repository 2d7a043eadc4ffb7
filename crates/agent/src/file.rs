//! File delivery (SendFile): write one file on the host, atomically, with the owner,
//! group and mode asked for.
//!
//! What is refused before anything is written ends `Invalid` with the official
//! agent's codes (FileNameInvalid, FileExist, EmptyFile, InvalidFileContent,
//! InvalidFileMode, FileOwnerNotExist, FileGroupNotExist); a failure while writing ends
//! `Failed`. A mode with the setuid, setgid or sticky bit is refused (InvalidFileMode):
//! the API refuses them too, this is the host's own check. The file is written to a
//! short temporary name in the target directory (`.oca-<12 hex digits>`, so that any
//! name the file system accepts, up to 255 bytes, can be delivered), given its owner
//! and mode, synced, and renamed over the target, then the directory is synced: a
//! reader sees the old file or the whole new one, never a part. Directories it creates
//! are 0755 (whatever the agent's own umask, 077).

use nix::unistd::{Group, User};
use oca_domain::command::decode_base64;
use oca_domain::status::InvocationStatus;
use oca_domain::task_error::TaskError;
use oca_domain::time::now_millis;
use oca_proto::{FileDelivery, Task, TaskResult};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default mode of a delivered file.
const DEFAULT_MODE: u32 = 0o644;
/// The mode of the directories a delivery creates.
const DIR_MODE: u32 = 0o755;
/// The setuid, setgid and sticky bits: refused.
const SPECIAL_BITS: u32 = 0o7000;

/// Writes the task's file and reports how it went.
pub fn deliver(task: &Task, file: &FileDelivery) -> TaskResult {
    let start = now_millis();
    let (status, error) = match write(file) {
        Ok(()) => (InvocationStatus::Success, None),
        Err(e) => (e.status(), Some(e)),
    };
    TaskResult {
        invoke_id: task.invoke_id.clone(),
        status,
        exit_code: None,
        error,
        start_time: Some(start),
        finish_time: now_millis(),
        output: String::new(),
        dropped: 0,
        output_len: 0,
        run: 0,
        more: false,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
}

fn parse_mode(mode: &str) -> Option<u32> {
    if mode.is_empty() {
        return Some(DEFAULT_MODE);
    }
    if mode.len() > 4 || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| m & SPECIAL_BITS == 0)
}

/// Creates `dir` and its missing parents with mode [`DIR_MODE`].
fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn write(f: &FileDelivery) -> Result<(), TaskError> {
    let dir = Path::new(&f.target_dir);
    if !valid_name(&f.name) || !dir.is_absolute() {
        return Err(TaskError::FileNameInvalid);
    }
    let content = decode_base64(&f.content).ok_or(TaskError::InvalidFileContent)?;
    if content.is_empty() {
        return Err(TaskError::EmptyFile);
    }
    let mode = parse_mode(&f.mode).ok_or(TaskError::InvalidFileMode)?;
    let uid = match f.owner.as_str() {
        "" => None,
        name => Some(
            User::from_name(name)
                .ok()
                .flatten()
                .ok_or(TaskError::FileOwnerNotExist)?
                .uid,
        ),
    };
    let gid = match f.group.as_str() {
        "" => None,
        name => Some(
            Group::from_name(name)
                .ok()
                .flatten()
                .ok_or(TaskError::FileGroupNotExist)?
                .gid,
        ),
    };
    let target = dir.join(&f.name);
    if target.symlink_metadata().is_ok() && !f.overwrite {
        return Err(TaskError::FileExist);
    }
    create_dirs(dir).map_err(|_| TaskError::DirectoryCreateFailed)?;

    let tmp: PathBuf = dir.join(format!(".oca-{:012x}", rand::random::<u64>() >> 16));
    let result = (|| {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|_| TaskError::FileCreateFailed)?;
        out.write_all(&content)
            .map_err(|_| TaskError::FileCreateFailed)?;
        if uid.is_some() || gid.is_some() {
            nix::unistd::fchown(&out, uid, gid).map_err(|_| TaskError::FileChownFailed)?;
        }
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|_| TaskError::FileChmodFailed)?;
        out.sync_all().map_err(|_| TaskError::FileCreateFailed)?;
        std::fs::rename(&tmp, &target).map_err(|_| TaskError::FileCreateFailed)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_modes() {
        assert!(valid_name("a.txt"));
        for bad in ["", ".", "..", "a/b", "x\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(parse_mode(""), Some(0o644));
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("rwx"), None);
        assert_eq!(parse_mode("07777"), None);
        for special in ["4755", "2755", "1777", "6755", "7777"] {
            assert_eq!(parse_mode(special), None, "{special}");
        }
        assert_eq!(parse_mode("0777"), Some(0o777));
    }
}
