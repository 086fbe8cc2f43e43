//! The `process_*` metrics of `/metrics`, read from `/proc/self` at each scrape: the one
//! place that reads them, for every model (the core does no I/O; the binary hands this to
//! the application). Linux only; a value that cannot be read is left out, never guessed.

use std::fs;

use c10k_core::metrics::{ProcessSample, ProcessSampler};

/// Reads `/proc/self/stat`, `/proc/self/fd` and `/proc/self/limits`.
#[derive(Debug)]
pub struct ProcSelf {
    /// Clock ticks per second of `stat`'s times.
    ticks: f64,
    /// Bytes per page of `stat`'s resident set.
    page: u64,
    /// When the process started, seconds since the epoch (it does not change).
    start: Option<f64>,
}

impl Default for ProcSelf {
    fn default() -> Self {
        ProcSelf::new()
    }
}

impl ProcSelf {
    /// Reads the constants once: clock ticks, page size, the start time.
    pub fn new() -> ProcSelf {
        // SAFETY: sysconf(3) reads a configuration value; it has no memory preconditions.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
        let page = if page > 0 { page as u64 } else { 4096 };
        let start = (|| {
            let started_ticks: f64 = stat_field(&fs::read_to_string("/proc/self/stat").ok()?, 22)?.parse().ok()?;
            let stat = fs::read_to_string("/proc/stat").ok()?;
            let boot: f64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
            Some(boot + started_ticks / ticks)
        })();
        ProcSelf { ticks, page, start }
    }
}

/// Field `n` (1-based, as proc(5) numbers them) of a `/proc/PID/stat` line. The command
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(n.checked_sub(3)?)
}

impl ProcessSampler for ProcSelf {
    fn sample(&self) -> ProcessSample {
        let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let number = |n: usize| stat_field(&stat, n).and_then(|v| v.parse::<u64>().ok());
        let cpu = number(14).zip(number(15)).map(|(user, system)| (user + system) as f64 / self.ticks);
        let open_fds = fs::read_dir("/proc/self/fd").ok().map(|dir| {
            // Less the descriptor read_dir itself holds open while listing.
            (dir.count() as u64).saturating_sub(1)
        });
        let max_fds = fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line["Max open files".len()..].split_whitespace().next()?.parse().ok()
        });
        ProcessSample {
            cpu_seconds: cpu,
            resident_bytes: number(24).map(|pages| pages * self.page),
            virtual_bytes: number(23),
            open_fds,
            max_fds,
            start_time_seconds: self.start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = ProcSelf::new().sample();
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        assert!(s.resident_bytes.is_some_and(|r| r > 1024 * 1024), "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "stdin, stdout, stderr at least: {s:?}");
        assert!(s.max_fds >= s.open_fds, "{s:?}");
        assert!(s.start_time_seconds.is_some_and(|t| t > 1.6e9), "{s:?}");
    }

    #[test]
    fn a_command_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 555 1000 25";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 14), Some("7"));
        assert_eq!(stat_field(stat, 22), Some("555"));
        assert_eq!(stat_field(stat, 24), Some("25"));
    }
}
