//! What the bench reads from the operating system: the machine, a process's memory and
//! CPU time from `/proc`, and the open-file limit.

use std::path::Path;

/// The machine the figures were taken on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_kb: u64,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            mem_total_kb: status_field(&meminfo, "MemTotal").unwrap_or(0),
            kernel,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {:.1} GiB memory, Linux {}",
            self.cpus,
            self.cpu_model,
            self.mem_total_kb as f64 / (1024.0 * 1024.0),
            self.kernel
        )
    }
}

/// A `Name:   123 kB` field of a `/proc` status-like file, in its unit (kB for sizes).
fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != name {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Resident memory of a process, in KiB (`VmRSS`).
pub fn rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&text, "VmRSS")
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&text, "VmHWM")
}

/// CPU time a process has used (user + system, all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come state (field 3) …; utime is field 14 and stime field 15 overall.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Context switches (voluntary + involuntary) summed over a process's threads: how
/// often it woke up.
pub fn context_switches(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for entry in dir.flatten() {
        let text = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        total += status_field(&text, "voluntary_ctxt_switches").unwrap_or(0);
        total += status_field(&text, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Some(total)
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&text, "Threads")
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

/// Raises the open-file limit: the soft limit to the hard one, and, when allowed (root),
/// the hard one to the kernel's `nr_open`. Child processes inherit the result. Returns
/// the soft limit now in force.
pub fn raise_nofile_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let nr_open: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(lim.rlim_max);
        if nr_open > lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: nr_open,
                rlim_max: nr_open,
            };
            // Fails without privilege; then the old hard limit stays.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return nr_open;
            }
        }
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// Copies an SQLite database (main file and any WAL) from one directory to another,
/// replacing what is there. Both must be closed.
pub fn copy_database(from_dir: &Path, to_dir: &Path, name: &str) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{name}{suffix}");
        let (src, dst) = (from_dir.join(&file), to_dir.join(&file));
        match std::fs::remove_file(&dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if src.exists() {
            std::fs::copy(&src, &dst)?;
        }
    }
    // Make the copy durable: the server runs on it with the same guarantees as ever.
    std::fs::File::open(to_dir.join(name))?.sync_all()?;
    std::fs::File::open(to_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        assert!(rss_kb(me).unwrap() > 0);
        assert!(cpu_ticks(me).is_some());
        assert!(context_switches(me).unwrap() > 0);
        assert!(Machine::probe().cpus >= 1);
    }
}
