//! The few things the generator asks the operating system directly: the open-files limit
//! (which decides when idle-capacity needs more processes) and a process's resident memory.

use std::io;

/// Raises this process's soft open-files limit to its hard limit; returns the limit now
/// in force (`None` if it cannot be read).
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit; getrlimit only writes into it.
    #[allow(unsafe_code)]
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit read from above; setrlimit only reads it.
        #[allow(unsafe_code)]
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
        if set == 0 {
            return Some(raised.rlim_cur as u64);
        }
    }
    Some(limit.rlim_cur as u64)
}

/// The resident memory (`VmRSS`) of process `pid`, in KiB, from `/proc/PID/status`.
pub(crate) fn vm_rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_vm_rss() {
        assert_eq!(super::parse_vm_rss("Name:\tc10k\nVmRSS:\t   12345 kB\nThreads: 3\n"), Some(12345));
        assert_eq!(super::parse_vm_rss("Name:\tzombie\n"), None);
        assert!(super::vm_rss_kib(std::process::id()).unwrap() > 0);
    }
}
