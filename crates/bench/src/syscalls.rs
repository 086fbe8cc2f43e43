//! System calls per request: the server's system calls counted over one extra, unmeasured
//! run of a cell (the plaintext suite's), divided by the requests that run answered. What
//! tells readiness from completion: epoll pays a wait plus a call per read and per write,
//! io_uring one `io_uring_enter` for a whole tick's operations.
//!
//! Counted with `perf stat -e raw_syscalls:sys_enter` (every system call) and one
//! `syscalls:sys_enter_NAME` tracepoint per call in [`NAMED`] (which calls they were), on
//! the server's processes; a counter in the kernel, so the server runs at nearly its usual
//! speed. Without perf (or when it cannot attach), `strace -c -f`, which stops the server at
//! every call and so slows it many times: its counts per request are still counts, but
//! batching may differ, and the row says which tool counted. Without either the cell says
//! plainly that it was not measured, and why; it never fails for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The system calls counted by name; the rest are counted in the total only (`other`).
/// Every call a server of this bench makes on its hot path, on any model or peer.
pub const NAMED: &[&str] = &[
    "read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg", "epoll_wait", "epoll_pwait",
    "epoll_pwait2", "epoll_ctl", "poll", "ppoll", "select", "pselect6", "accept", "accept4", "close", "shutdown",
    "io_uring_enter", "futex", "sched_yield", "clock_gettime", "clock_nanosleep", "nanosleep", "mmap", "munmap",
    "madvise", "mprotect", "brk", "setsockopt", "getsockopt", "getpeername", "ioctl", "fcntl", "getrandom",
    "sendfile64",
];

/// Where the kernel lists its syscall tracepoints (tracefs, or under debugfs on older systems).
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing/events/syscalls", "/sys/kernel/debug/tracing/events/syscalls"];

/// The calls of [`NAMED`] this kernel has a tracepoint for: perf refuses to start on an
/// unknown event (`sendfile` is `sendfile64` on x86-64, `select` is missing on arm64).
/// Where tracefs cannot be read, all of them.
fn tracepoints() -> Vec<&'static str> {
    let Some(dir) = TRACEFS.iter().map(Path::new).find(|d| d.is_dir()) else { return NAMED.to_vec() };
    NAMED.iter().copied().filter(|n| dir.join(format!("sys_enter_{n}")).is_dir()).collect()
}

/// How many of the commonest calls a cell's row names.
pub const TOP: usize = 4;

/// ...of those that are at least this share of all the calls.
const MENTIONED: f64 = 0.005;

/// A count per request as the tables show it: two decimals, three below 0.01 (a pipelined
/// uring makes a few system calls per thousand requests).
pub fn per_request_text(v: f64) -> String {
    if v < 0.01 { format!("{v:.3}") } else { format!("{v:.2}") }
}

/// How long perf may take to attach before the run starts anyway (it says so).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// The prefix of every count that could not be made: the report shows it as it is.
pub const NOT_MEASURED: &str = "not measured: ";

/// One count of a server's system calls over one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyscallCount {
    /// `perf` or `strace`, and the command that counted (temporary paths as `$TMP`).
    pub tool: String,
    /// The exact command.
    pub command: String,
    /// Every system call of the server's processes in the window.
    pub total: f64,
    /// Calls by name, the non-zero ones (`other` for those not in [`NAMED`], with perf).
    pub by_name: BTreeMap<String, f64>,
    /// Requests answered in the run (the load generator's count).
    pub requests: f64,
    /// The run's req/s, to compare with the measured repeats' (counting slows a server a little with perf, a lot with strace).
    pub rps: f64,
    /// Why the count is missing or not to be trusted (`not measured: ...`).
    pub problems: Vec<String>,
}

impl SyscallCount {
    /// A count that could not be made, and why (after [`NOT_MEASURED`]).
    pub fn not_measured(why: impl Into<String>) -> SyscallCount {
        SyscallCount { problems: vec![format!("{NOT_MEASURED}{}", why.into())], ..SyscallCount::default() }
    }

    /// System calls per request, when both were counted.
    pub fn per_request(&self) -> Option<f64> {
        (self.total > 0.0 && self.requests > 0.0).then(|| self.total / self.requests)
    }

    /// The `n` commonest calls, most first, each per request: `io_uring_enter 0.06`.
    pub fn top(&self, n: usize) -> Vec<(String, f64)> {
        // Calls made once per connection (accept, setsockopt) are a sliver of the total: left out.
        let floor = MENTIONED * self.total;
        let mut calls: Vec<(String, f64)> =
            self.by_name.iter().filter(|(_, v)| **v > 0.0 && **v >= floor).map(|(k, v)| (k.clone(), *v)).collect();
        calls.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        calls.truncate(n);
        let per = self.requests.max(1.0);
        calls.into_iter().map(|(k, v)| (k, v / per)).collect()
    }
}

/// Which counter is on this machine: perf first (a kernel counter), strace second.
#[derive(Debug, Clone)]
pub enum Counter {
    /// `perf stat` with the syscall tracepoints.
    Perf(PathBuf),
    /// `strace -c -f` (slow: ptrace stops the server at every call).
    Strace(PathBuf),
    /// Neither installed.
    Missing,
}

impl Counter {
    /// perf if installed, else strace, else [`Counter::Missing`].
    pub fn find() -> Counter {
        let perf = ["/usr/bin/perf", "/usr/local/bin/perf"].iter().map(PathBuf::from).find(|p| p.exists());
        match perf {
            Some(p) => Counter::Perf(p),
            None => Counter::find_strace().unwrap_or(Counter::Missing),
        }
    }

    /// strace, if installed (when perf is there but cannot attach).
    pub fn find_strace() -> Option<Counter> {
        ["/usr/bin/strace", "/usr/local/bin/strace", "/bin/strace"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .map(Counter::Strace)
    }
}

/// A count running in the background while the cell's extra run goes; [`Running::finish`]
/// stops it and reads what it counted.
pub struct Running {
    child: Child,
    out: PathBuf,
    tool: &'static str,
    command: String,
}

/// Starts counting the system calls of `pids` with `counter`; returns once it is attached
/// (or after [`ATTACH_TIMEOUT`]).
pub fn start(counter: &Counter, pids: &[u32]) -> Result<Running, String> {
    let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = std::env::temp_dir().join(format!("c10k-bench-syscalls-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let (tool, mut cmd) = match counter {
        Counter::Missing => return Err("perf and strace missing (apt-get install linux-perf strace)".into()),
        Counter::Perf(perf) => {
            let mut c = Command::new(perf);
            c.args(["stat", "-x,", "-o"]).arg(&out).args(["-e", "raw_syscalls:sys_enter"]);
            for name in tracepoints() {
                c.args(["-e", &format!("syscalls:sys_enter_{name}")]);
            }
            // Counts until told to stop (SIGINT), at most ten minutes.
            c.args(["-p", &list, "--", "sleep", "600"]);
            ("perf", c)
        }
        Counter::Strace(strace) => {
            let mut c = Command::new(strace);
            c.args(["-c", "-f", "-q", "-o"]).arg(&out);
            for p in pids {
                c.args(["-p", &p.to_string()]);
            }
            ("strace", c)
        }
    };
    let command = shown(&cmd, &out);
    let err_path = out.with_extension("err");
    let stderr = std::fs::File::create(&err_path).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {tool}: {e}"))?;
    // What the tool said when it would not start: its first line.
    let said = || {
        let text = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&err_path);
        text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("it said nothing").to_string()
    };
    let mut running = Running { child, out, tool, command };
    // perf writes its header once the counters are open; strace says nothing: give it a moment.
    let t0 = Instant::now();
    match tool {
        "perf" => {
            while t0.elapsed() < ATTACH_TIMEOUT && std::fs::metadata(&running.out).map_or(true, |m| m.len() == 0) {
                if let Ok(Some(status)) = running.child.try_wait() {
                    return Err(format!(
                        "perf stat exited at once ({status}: {}); it needs root or a lower kernel.perf_event_paranoid",
                        said()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        _ => std::thread::sleep(Duration::from_millis(500)),
    }
    if let Ok(Some(status)) = running.child.try_wait() {
        return Err(format!("{} exited before the run ({status}: {})", running.tool, said()));
    }
    let _ = std::fs::remove_file(&err_path);
    Ok(running)
}

fn shown(cmd: &Command, out: &Path) -> String {
    let tmp = out.to_string_lossy().to_string();
    let mut parts = vec![cmd.get_program().to_string_lossy().to_string()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().replace(&tmp, "$TMP/syscalls.txt")));
    // The per-call tracepoints make a long line: name them once.
    let joined = parts.join(" ");
    let names = tracepoints();
    match names.first().and_then(|n| joined.find(&format!("-e syscalls:sys_enter_{n}"))) {
        Some(at) => {
            let rest_at = joined.find(" -p ").unwrap_or(joined.len());
            format!("{}-e syscalls:sys_enter_{{{}}}{}", &joined[..at], names.join(","), &joined[rest_at..])
        }
        None => joined,
    }
}

impl Running {
    /// Stops the count and reads it, with the run's requests and req/s. perf stops when its
    /// workload (`sleep`) ends, so that is what is ended (perf stat with a workload does not
    /// stop on SIGINT before it does); strace stops on SIGINT, as on ^C. Both then write
    /// their summary.
    pub fn finish(mut self, requests: f64, rps: f64) -> SyscallCount {
        let me = self.child.id();
        let (signal, targets): (&str, Vec<u32>) = match self.tool {
            "perf" => ("-TERM", crate::procfs::tree(me).into_iter().filter(|p| *p != me).collect()),
            _ => ("-INT", vec![me]),
        };
        for pid in targets {
            let _ = Command::new("kill").args([signal, &pid.to_string()]).stderr(Stdio::null()).status();
        }
        let t0 = Instant::now();
        let mut exited = false;
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let parsed = match self.tool {
            "perf" => parse_perf(&text),
            _ => parse_strace(&text),
        };
        let mut count = SyscallCount {
            tool: self.tool.to_string(),
            command: self.command.clone(),
            requests,
            rps,
            ..SyscallCount::default()
        };
        match parsed {
            Some((total, by_name)) => {
                count.total = total;
                count.by_name = by_name;
                if self.tool == "strace" {
                    count.problems.push(
                        "counted with strace: ptrace stops the server at every call, so it ran slower and may have \
                         batched differently"
                            .into(),
                    );
                }
            }
            None => count.problems.push(format!(
                "{NOT_MEASURED}{} gave no counts ({})",
                self.tool,
                text.lines().find(|l| !l.trim().is_empty() && !l.starts_with('#')).unwrap_or("empty output")
            )),
        }
        if requests <= 0.0 {
            count.problems.push(format!("{NOT_MEASURED}the counted run answered no requests"));
        }
        count
    }
}

/// `perf stat -x,` output: `COUNT,,EVENT,RUNTIME,PCT,,` per event. The total is
/// `raw_syscalls:sys_enter`; the named ones, and `other` for the rest of the total.
pub fn parse_perf(text: &str) -> Option<(f64, BTreeMap<String, f64>)> {
    let mut total = None;
    let mut by_name = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else { continue };
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        if *event == "raw_syscalls:sys_enter" {
            total = Some(v);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            if v > 0.0 {
                by_name.insert(name.to_string(), v);
            }
        }
    }
    let total = total?;
    let named: f64 = by_name.values().sum();
    if total - named > 0.0 {
        by_name.insert("other".into(), total - named);
    }
    Some((total, by_name))
}

/// `strace -c` output: a table of `% time, seconds, usecs/call, calls, [errors,] syscall`
/// rows and a `total` row.
pub fn parse_strace(text: &str) -> Option<(f64, BTreeMap<String, f64>)> {
    let mut total = None;
    let mut by_name = BTreeMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 5 || t[0].starts_with('%') || t[0].starts_with('-') {
            continue;
        }
        let (Ok(calls), Some(name)) = (t[3].parse::<f64>(), t.last()) else { continue };
        if *name == "total" {
            total = Some(calls);
        } else {
            by_name.insert(name.to_string(), calls);
        }
    }
    Some((total?, by_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_stat_csv_gives_the_total_and_the_named_calls_and_the_rest_as_other() {
        let text = "# started on Thu Dec  3 13:54:31 2026\n\n\
                    700,,raw_syscalls:sys_enter,13163787,100.00,,\n\
                    100,,syscalls:sys_enter_recvfrom,13163787,100.00,,\n\
                    50,,syscalls:sys_enter_sendto,13163787,100.00,,\n\
                    0,,syscalls:sys_enter_read,13163787,100.00,,\n\
                    <not counted>,,syscalls:sys_enter_write,0,100.00,,\n\
                    500,,syscalls:sys_enter_epoll_wait,13163787,100.00,,\n";
        let (total, by) = parse_perf(text).expect("parsed");
        assert_eq!(total, 700.0);
        assert_eq!(by.get("recvfrom"), Some(&100.0));
        assert_eq!(by.get("other"), Some(&50.0));
        assert!(!by.contains_key("read") && !by.contains_key("write"), "zero and uncounted calls are left out: {by:?}");
        // No total: no count at all.
        assert_eq!(parse_perf("<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n"), None);
    }

    #[test]
    fn strace_c_tables_give_calls_with_or_without_an_errors_column() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    \x2052.00    0.005200          52       100           recvfrom\n\
                    \x2030.00    0.003000          60        50        10 accept4\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.010000          66       150        10 total\n";
        let (total, by) = parse_strace(text).expect("parsed");
        assert_eq!(total, 150.0);
        assert_eq!(by.get("recvfrom"), Some(&100.0));
        assert_eq!(by.get("accept4"), Some(&50.0));
        assert_eq!(parse_strace("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n"), None);
    }

    #[test]
    fn per_request_and_the_top_calls_are_per_answered_request() {
        let c = SyscallCount {
            total: 300.0,
            requests: 100.0,
            by_name: [("recvfrom", 100.0), ("sendto", 100.0), ("epoll_wait", 90.0), ("other", 10.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..SyscallCount::default()
        };
        assert_eq!(c.per_request(), Some(3.0));
        assert_eq!(c.top(2), vec![("recvfrom".to_string(), 1.0), ("sendto".to_string(), 1.0)]);
        assert_eq!(SyscallCount { requests: 0.0, ..c.clone() }.per_request(), None);
        let missing = SyscallCount::not_measured("perf and strace missing");
        assert_eq!(missing.problems, vec!["not measured: perf and strace missing".to_string()]);
        assert_eq!(missing.per_request(), None);
    }
}
