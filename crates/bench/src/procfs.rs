//! What the bench reads from `/proc`: a server's process tree, its memory (PSS, so that
//! pages shared between forked workers count once) and threads, the kernel's own memory,
//! the load average. Linux only; on a read error the value is `None`, never a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `pid` and every process below it (children, grandchildren, ...).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_of(child) {
                children.entry(ppid).or_default().push(child);
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        out.push(p);
        if let Some(kids) = children.get(&p) {
            stack.extend(kids);
        }
    }
    out
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the command's closing paren).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// A `Key:   1234 kB` line of a `/proc` file, in KiB (or the bare number for counts).
fn field(text: &str, key: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// Memory and threads of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeUsage {
    /// Processes in the tree.
    pub processes: u64,
    /// Threads, summed over the tree.
    pub threads: u64,
    /// Proportional set size, KiB, summed (shared pages divided among their sharers).
    pub pss_kib: u64,
    /// Resident set size, KiB, summed (shared pages counted once per process).
    pub rss_kib: u64,
}

/// What the tree under `pid` uses now.
pub fn usage(pid: u32) -> TreeUsage {
    let mut u = TreeUsage::default();
    for p in tree(pid) {
        let Ok(status) = fs::read_to_string(format!("/proc/{p}/status")) else {
            continue;
        };
        u.processes += 1;
        u.threads += field(&status, "Threads").unwrap_or(0);
        let rss = field(&status, "VmRSS").unwrap_or(0);
        u.rss_kib += rss;
        u.pss_kib += fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|s| field(&s, "Pss"))
            .unwrap_or(rss);
    }
    u
}

/// Clock ticks per second of `/proc/PID/stat`'s times (USER_HZ: 100 on every Linux
/// architecture this runs on).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) used so far by one process, all its threads.
fn cpu_of(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = rest.nth(11)?.parse().ok()?;
    let stime: f64 = rest.next()?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// CPU seconds used so far by the tree under `pid` (processes alive now).
pub fn tree_cpu_secs(pid: u32) -> f64 {
    tree(pid).iter().filter_map(|p| cpu_of(&p.to_string())).sum()
}

/// CPU seconds used so far by this process (every thread; not its children).
pub fn self_cpu_secs() -> f64 {
    cpu_of("self").unwrap_or(0.0)
}

/// CPU seconds used so far by this process's children that have exited and been waited
/// for (`cutime` + `cstime`): the difference across one child's run and wait is that
/// child's CPU, as long as no other child is reaped meanwhile.
pub fn reaped_children_cpu_secs() -> f64 {
    (|| {
        let stat = fs::read_to_string("/proc/self/stat").ok()?;
        let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
        // After the command: state is field 3; cutime and cstime are fields 16 and 17.
        let cutime: f64 = rest.nth(13)?.parse().ok()?;
        let cstime: f64 = rest.next()?.parse().ok()?;
        Some((cutime + cstime) / TICKS)
    })()
    .unwrap_or(0.0)
}

/// Kernel memory that grows with connections and threads (system-wide, so both ends of a
/// loopback connection count): slab (sockets, dentries), kernel stacks, page tables. KiB.
pub fn kernel_kib() -> Option<u64> {
    let m = fs::read_to_string("/proc/meminfo").ok()?;
    Some(field(&m, "Slab")? + field(&m, "KernelStack")? + field(&m, "PageTables")?)
}

/// `MemAvailable`, KiB.
pub fn mem_available_kib() -> Option<u64> {
    field(&fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable")
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The peaks a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Peaks {
    /// The tree's usage before the sampler started.
    pub before: TreeUsage,
    /// The largest of each field while it ran (fields may peak at different moments).
    pub peak: TreeUsage,
    /// Kernel memory before, KiB.
    pub kernel_before_kib: u64,
    /// Kernel memory at its largest, KiB.
    pub kernel_peak_kib: u64,
    /// MemAvailable before, KiB.
    pub available_before_kib: u64,
    /// MemAvailable at its lowest, KiB: the drop is what the whole machine paid, both
    /// ends of every connection included.
    pub available_min_kib: u64,
}

/// Samples a process tree on a thread until stopped, keeping the peaks.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<Peaks>>,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Reads the tree once now (the "before"), then every `every` until [`Sampler::finish`].
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let before = usage(pid);
        let kernel_before = kernel_kib().unwrap_or(0);
        let available = mem_available_kib().unwrap_or(0);
        let peaks = Arc::new(Mutex::new(Peaks {
            before,
            peak: before,
            kernel_before_kib: kernel_before,
            kernel_peak_kib: kernel_before,
            available_before_kib: available,
            available_min_kib: available,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (stop, peaks) = (Arc::clone(&stop), Arc::clone(&peaks));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let u = usage(pid);
                    let k = kernel_kib().unwrap_or(0);
                    let a = mem_available_kib();
                    let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                    p.peak.processes = p.peak.processes.max(u.processes);
                    p.peak.threads = p.peak.threads.max(u.threads);
                    p.peak.pss_kib = p.peak.pss_kib.max(u.pss_kib);
                    p.peak.rss_kib = p.peak.rss_kib.max(u.rss_kib);
                    p.kernel_peak_kib = p.kernel_peak_kib.max(k);
                    if let Some(a) = a {
                        p.available_min_kib = p.available_min_kib.min(a);
                    }
                    drop(p);
                    // Sleep in slices so that finish() does not wait a whole period.
                    let mut slept = Duration::ZERO;
                    while slept < every && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                        slept += Duration::from_millis(50);
                    }
                }
            })
        };
        Sampler {
            stop,
            peaks,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns the peaks.
    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        *self.peaks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let u = usage(std::process::id());
        assert!(
            u.processes >= 1 && u.threads >= 1 && u.pss_kib > 0 && u.rss_kib > 0,
            "{u:?}"
        );
        assert!(kernel_kib().unwrap() > 0);
        assert!(loadavg().is_some());
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(self_cpu_secs() > 0.0 && tree_cpu_secs(std::process::id()) > 0.0);
    }

    #[test]
    fn fields_parse() {
        assert_eq!(field("Name:\tx\nThreads:\t7\nVmRSS:\t  12 kB\n", "Threads"), Some(7));
        assert_eq!(field("VmRSS:\t  12 kB\n", "VmRSS"), Some(12));
        assert_eq!(field("VmRSSX:\t  12 kB\n", "VmRSS"), None);
    }
}
