//! What tests/soak.rs and tests/slowloris.rs share: finding wrk and slowhttptest (a test
//! without its tool says `skipped`, and fails in CI), running them against a [`Server`]
//! on loopback with a bounded length, reading a server's open descriptors and anonymous
//! memory from /proc, and waiting for a condition with a deadline instead of a sleep.
//!
//! [`Server`]: crate::support::Server
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// One measured run at a time in a test binary: the harness runs tests on parallel
/// threads, and two soaks sharing the machine's 2 cores would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the machine for one model's run (a failed run before it does not poison it).
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a missing tool must fail the test: in CI (`CI=true`, or `C10K_E2E_REQUIRED=1`,
/// which .ci/run sets there), as for the browser and bus tests.
fn required() -> bool {
    std::env::var("C10K_E2E_REQUIRED").is_ok_and(|v| v == "1") || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of `binary` on PATH; `None` (after saying `skipped`) when it is not there,
/// and a panic instead when the tool is [`required`]. `.ci/run` installs both tools.
pub fn tool(binary: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file());
    if found.is_none() {
        let hint = format!("install it: apt-get install {binary}");
        if required() {
            panic!("{test}: {binary} is not on PATH, and this is CI (CI=true or C10K_E2E_REQUIRED=1); {hint}");
        }
        eprintln!("skipped: {test} needs {binary}, which is not on PATH; {hint}");
    }
    found
}

/// Polls `done` every `every` until it returns `Some`, or `None` once `deadline` has passed.
pub fn poll_until<T>(deadline: Duration, every: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let give_up = Instant::now() + deadline;
    loop {
        if let Some(value) = done() {
            return Some(value);
        }
        if Instant::now() >= give_up {
            return None;
        }
        thread::sleep(every);
    }
}

/// How many descriptors process `pid` has open (its entries in /proc/PID/fd).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .count()
}

/// What each open descriptor of `pid` is (`3 -> socket:[1234]`), to show a leak.
pub fn describe_fds(pid: u32) -> Vec<String> {
    let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
                    Some((n, target))
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds.into_iter().map(|(n, target)| format!("{n} -> {target}")).collect()
}

/// The anonymous resident memory of `pid` in KiB (`RssAnon` of /proc/PID/status): the
/// heap, thread stacks and other private mappings actually touched, not the binary or
/// the file cache, so that it follows what the server allocates.
pub fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RssAnon line in /proc/{pid}/status:\n{status}"))
}

/// A wrk run: what it was asked, and what it printed.
#[derive(Debug, Clone)]
pub struct WrkRun {
    pub command: String,
    pub requests: u64,
    pub per_second: f64,
    /// `Socket errors: connect C, read R, write W, timeout T`, all zero when the line is absent.
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    /// `Non-2xx or 3xx responses: N`.
    pub non_2xx_3xx: u64,
    pub output: String,
}

impl WrkRun {
    /// Every socket error wrk counted.
    pub fn socket_errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }
}

/// The Lua script that makes wrk alternate between `paths`, one per request.
fn mix_script(dir: &Path, paths: &[&str]) -> PathBuf {
    let list = paths.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ");
    let script = format!(
        "-- written by tests/load_tools: one request to each path in turn\n\
         local paths = {{ {list} }}\n\
         local n = 0\n\
         request = function()\n  n = n + 1\n  return wrk.format(\"GET\", paths[(n % #paths) + 1])\nend\n"
    );
    let path = dir.join("mix.lua");
    std::fs::write(&path, script).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// Runs `wrk -t2 -cCONNECTIONS -dSECONDSs` against 127.0.0.1:`port`, alternating between
/// `paths`, and parses its summary. wrk stops by itself at its duration; the run is killed
/// if it has not exited 30 s after that.
pub fn wrk(wrk: &Path, port: u16, connections: usize, seconds: u64, paths: &[&str], scratch: &Path) -> WrkRun {
    let script = mix_script(scratch, paths);
    let args = [
        "-t2".to_string(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--timeout".into(),
        "5s".into(),
        "-s".into(),
        script.display().to_string(),
        format!("http://127.0.0.1:{port}/"),
    ];
    let command = format!("wrk {}", args.join(" "));
    let child = Command::new(wrk)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let output = wait_output(child, Duration::from_secs(seconds + 30), &command);
    parse_wrk(command, output)
}

/// Waits for `child` to exit within `limit` (killing it past that) and returns its
/// standard output and error together.
fn wait_output(mut child: Child, limit: Duration, command: &str) -> String {
    let exited = poll_until(limit, Duration::from_millis(50), || child.try_wait().expect("waitpid").map(|_| ()));
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command} did not exit within {limit:?}");
    }
    let output = child.wait_with_output().expect("the tool's output");
    assert!(output.status.success(), "{command} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn parse_wrk(command: String, output: String) -> WrkRun {
    let number_after = |prefix: &str| -> Option<f64> {
        output.lines().find_map(|line| line.trim().strip_prefix(prefix)).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse().ok())
    };
    let requests = output
        .lines()
        .find(|line| line.contains(" requests in "))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `N requests in` line from {command}:\n{output}"));
    let per_second = number_after("Requests/sec:").unwrap_or_else(|| panic!("no Requests/sec from {command}:\n{output}"));
    let mut run = WrkRun {
        requests,
        per_second,
        connect_errors: 0,
        read_errors: 0,
        write_errors: 0,
        timeouts: 0,
        non_2xx_3xx: number_after("Non-2xx or 3xx responses:").map_or(0, |n| n as u64),
        command,
        output: String::new(),
    };
    if let Some(errors) = run_output_line(&output, "Socket errors:") {
        for part in errors.split(',') {
            let mut words = part.split_whitespace();
            let (Some(kind), Some(n)) = (words.next(), words.next().and_then(|n| n.parse().ok())) else { continue };
            match kind {
                "connect" => run.connect_errors = n,
                "read" => run.read_errors = n,
                "write" => run.write_errors = n,
                "timeout" => run.timeouts = n,
                _ => {}
            }
        }
    }
    run.output = output;
    run
}

fn run_output_line<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output.lines().find_map(|line| line.trim().strip_prefix(prefix))
}

/// A slowhttptest run in the background; killed if still running when dropped.
pub struct SlowHttpTest {
    child: Option<Child>,
    pub command: String,
    csv: PathBuf,
    /// Its standard output, which ends with why it stopped.
    log: PathBuf,
}

/// What slowhttptest saw, at its end.
#[derive(Debug, Clone)]
pub struct SlowOutcome {
    /// Its statistics, one row a second.
    pub stats: Vec<SlowStats>,
    /// Why it stopped (its `Exit status:` line): `No open connections left` when the
    /// server closed every connection before the test's length was up.
    pub exit_status: String,
}

/// One row of slowhttptest's statistics (`-g`): its state of the connections, second by second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStats {
    pub second: u64,
    pub closed: u64,
    pub pending: u64,
    pub connected: u64,
}

impl SlowHttpTest {
    /// Starts `slowhttptest -H` (slowloris: a request head that never ends, one more
    /// header line every `interval_secs`) with `connections` connections opened at
    /// `rate` per second against 127.0.0.1:`port`, for `length_secs`, writing its
    /// statistics under `scratch`.
    pub fn slowloris(tool: &Path, port: u16, connections: usize, rate: usize, interval_secs: u64, length_secs: u64, scratch: &Path) -> SlowHttpTest {
        let prefix = scratch.join("slowloris");
        let args = [
            "-H".to_string(),
            "-c".into(),
            connections.to_string(),
            "-r".into(),
            rate.to_string(),
            "-i".into(),
            interval_secs.to_string(),
            "-l".into(),
            length_secs.to_string(),
            "-x".into(),
            "24".into(),
            "-p".into(),
            "2".into(),
            "-u".into(),
            format!("http://127.0.0.1:{port}/api/rooms/main/messages"),
            "-g".into(),
            "-o".into(),
            prefix.display().to_string(),
        ];
        let command = format!("slowhttptest {}", args.join(" "));
        let log = scratch.join("slowhttptest.out");
        let stdout = std::fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        SlowHttpTest { child: Some(child), command, csv: prefix.with_extension("csv"), log }
    }

    /// Whether it has exited.
    pub fn finished(&mut self) -> bool {
        self.child.as_mut().map_or(true, |c| c.try_wait().expect("waitpid").is_some())
    }

    /// Waits (at most `limit`) for it to end, and returns what it saw.
    pub fn finish(mut self, limit: Duration) -> SlowOutcome {
        let exited = poll_until(limit, Duration::from_millis(50), || self.finished().then_some(()));
        assert!(exited.is_some(), "{} did not exit within {limit:?}", self.command);
        self.child = None;
        let csv = std::fs::read_to_string(&self.csv).unwrap_or_else(|e| panic!("no statistics from {} ({}): {e}", self.command, self.csv.display()));
        let log = std::fs::read(&self.log).unwrap_or_default();
        let exit_status = strip_ansi(&String::from_utf8_lossy(&log))
            .lines()
            .find_map(|line| line.trim().strip_prefix("Exit status:"))
            .map(|status| status.trim().to_string())
            .unwrap_or_else(|| "(none printed)".into());
        // Seconds,Closed,Pending,Connected,Service Available
        let stats = csv
            .lines()
            .skip(1)
            .filter_map(|line| {
                let cells: Vec<u64> = line.split(',').take(4).map(|c| c.trim().parse().ok()).collect::<Option<_>>()?;
                (cells.len() == 4).then(|| SlowStats { second: cells[0], closed: cells[1], pending: cells[2], connected: cells[3] })
            })
            .collect();
        SlowOutcome { stats, exit_status }
    }
}

/// `text` without its terminal colour sequences (`ESC [ ... m`), which slowhttptest
/// prints even into a file.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for SlowHttpTest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
