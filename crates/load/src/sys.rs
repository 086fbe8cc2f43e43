//! What the generator asks the operating system directly: a process's resident memory.
//! (The open-files limit, which decides when idle-capacity needs more processes, is
//! `c10k_sys::raise_open_files_limit`, shared with the server.)

use std::io;

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
