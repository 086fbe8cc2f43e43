//! wrk, a second load generator that shares no code with c10k load: the plaintext suite
//! runs it once per server, after c10k load's repeats, against the same server with the
//! same pinning and connection count, so that a number c10k load reports can be checked
//! against one it did not produce. Here: finding wrk (and installing Debian's package),
//! its command line, one bounded run, and reading its `--latency` output.
//!
//! wrk takes whole seconds only (`-d 5s`; `-d 0.5s` is a usage error), so a fractional
//! duration (`--quick`'s 0.5 s) is rounded up, and the command shown says so by itself.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use c10k_load::Scenario;

use crate::matrix::Action;
use crate::results::WrkRun;

/// What the report says when wrk is not there: what is missing and how to get it.
pub const NOT_INSTALLED: &str = "wrk not installed: apt-get install wrk";

/// How long wrk may run past its duration before it is killed (its own socket timeout is
/// 2 s; connecting 64 sockets to a server that stopped answering is what this bounds).
const GRACE: Duration = Duration::from_secs(30);

/// `wrk` on `PATH`, if it is there and executable.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("wrk")).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Installs Debian's `wrk` the way the peers' packages are installed: `run.sh
/// install-wrk` (its `apt_install`: non-interactive, `--no-install-recommends`, the
/// package list refreshed once if the first try fails). Root only.
pub fn install(run_sh: &Path) -> Result<PathBuf, String> {
    if !crate::cli::is_root() {
        return Err(format!("{NOT_INSTALLED} (the bench installs it only when run as root)"));
    }
    eprintln!("c10k bench: installing wrk ({} install-wrk)", run_sh.display());
    let installed = Command::new(run_sh)
        .arg("install-wrk")
        .stdin(Stdio::null())
        // run.sh and apt report on standard error; keep ours for results.
        .stdout(std::io::stderr())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        return Err(format!("{NOT_INSTALLED} (`run.sh install-wrk` failed; see its output above)"));
    }
    find().ok_or_else(|| format!("{NOT_INSTALLED} (run.sh install-wrk succeeded but no wrk is on PATH)"))
}

/// Connections and seconds of wrk's run for a cell that cross-checks with it: those of the
/// cell's plaintext load (`None` for any other action, and for pipelined plaintext: wrk
/// sends one request at a time per connection unless a Lua script pipelines for it, so
/// its figure would not be the same measurement).
pub fn plan(action: &Action) -> Option<(usize, f64)> {
    match action {
        Action::Load {
            scenario: Scenario::Plaintext(c),
            duration,
            ..
        } if c.pipeline <= 1 => Some((c.connections, *duration)),
        _ => None,
    }
}

/// One wrk run to make: the argument vector and the command as RESULTS.md shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// What is executed (`taskset`'s and wrk's full paths).
    pub argv: Vec<String>,
    /// The same, with bare program names.
    pub shown: String,
    /// The whole seconds wrk runs.
    pub secs: u64,
}

/// `taskset -c CPUS wrk -tT -cC -dDs --latency URL`: one wrk thread per client CPU (all
/// CPUs when unpinned), never more threads than connections, `duration` rounded up to
/// whole seconds.
pub fn invocation(
    wrk: &Path,
    taskset: Option<&Path>,
    client_cpus: Option<&str>,
    connections: usize,
    duration: f64,
    url: &str,
) -> Invocation {
    let cpus = client_cpus
        .and_then(crate::machine::parse_cpu_list)
        .unwrap_or_else(crate::machine::cpus);
    let threads = cpus.min(connections).max(1);
    let secs = duration.ceil().max(1.0) as u64;
    let args = [
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--latency".to_string(),
        url.to_string(),
    ];
    let mut argv = Vec::new();
    let mut shown = Vec::new();
    if let (Some(cpus), Some(taskset)) = (client_cpus, taskset) {
        argv.extend([taskset.display().to_string(), "-c".into(), cpus.to_string()]);
        shown.extend(["taskset".to_string(), "-c".into(), cpus.to_string()]);
    }
    argv.push(wrk.display().to_string());
    shown.push("wrk".into());
    argv.extend(args.iter().cloned());
    shown.extend(args);
    Invocation {
        argv,
        shown: shown.join(" "),
        secs,
    }
}

/// Runs wrk once and reads its output; killed if it runs [`GRACE`] past its duration.
/// Whatever goes wrong is a problem of the returned run, never a zero.
pub fn run(inv: &Invocation) -> WrkRun {
    let mut out = WrkRun {
        command: inv.shown.clone(),
        ..WrkRun::default()
    };
    let mut child = match Command::new(&inv.argv[0])
        .args(&inv.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            out.problems.push(format!("wrk could not start: {e}"));
            return out;
        }
    };
    let (tx, rx) = mpsc::channel();
    for (name, mut pipe) in [
        (
            "stdout",
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
        ),
        ("stderr", Box::new(child.stderr.take().expect("piped"))),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send((name, text));
        });
    }
    drop(tx);
    // Both pipes reach end of file when wrk exits (or is killed): that is the wait.
    let limit = Duration::from_secs(inv.secs) + GRACE;
    let deadline = std::time::Instant::now() + limit;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut timed_out = false;
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(("stdout", t)) => stdout = t,
            Ok((_, t)) => stderr = t,
            Err(_) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait();
    out.output = stdout.clone();
    if timed_out {
        out.problems
            .push(format!("wrk ran past {} s and was killed", limit.as_secs()));
        return out;
    }
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            let why = stderr
                .lines()
                .chain(stdout.lines())
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            out.problems.push(format!("wrk failed ({s}): {}", why.trim()));
            return out;
        }
        Err(e) => {
            out.problems.push(format!("wrk could not be waited for: {e}"));
            return out;
        }
    }
    match parse(&stdout) {
        Ok(p) => {
            out.metrics = p.metrics;
            out.errors = p.errors;
            out.problems.extend(p.problems);
        }
        Err(e) => out.problems.push(format!("wrk's output could not be read: {e}")),
    }
    out
}

/// What [`parse`] reads from wrk's output.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// `rps`, `requests`, `secs`, `mean_us`, `max_us`, `p50_us`, `p75_us`, `p90_us`,
    /// `p99_us`: named as c10k load's metrics are.
    pub metrics: BTreeMap<String, f64>,
    /// Socket errors by kind (`connect`, `read`, `write`, `timeout`) and `non-2xx-3xx`,
    /// the non-zero ones.
    pub errors: BTreeMap<String, u64>,
    /// What makes the numbers untrustworthy: errors, responses that were not 2xx or 3xx,
    /// no request at all.
    pub problems: Vec<String>,
}

/// Reads the output of `wrk --latency` (wrk 4.x):
///
/// ```text
///   Thread Stats   Avg      Stdev     Max   +/- Stdev
///     Latency   519.94us  178.04us   4.70ms   85.55%
///   Latency Distribution
///      50%  487.00us
///      ...
///   614113 requests in 5.00s, 77.31MB read
///   Socket errors: connect 0, read 0, write 0, timeout 12
///   Non-2xx or 3xx responses: 5
/// Requests/sec: 122812.34
/// ```
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            p.metrics.insert("rps".into(), number(v.trim())?);
        } else if words.first() == Some(&"Latency") && words.len() >= 4 && !in_distribution {
            p.metrics.insert("mean_us".into(), time_us(words[1])?);
            p.metrics.insert("max_us".into(), time_us(words[3])?);
        } else if line == "Latency Distribution" {
            in_distribution = true;
        } else if in_distribution && words.len() == 2 && words[0].ends_with('%') {
            let pct = words[0].trim_end_matches('%');
            let name = match pct {
                "50" => "p50_us",
                "75" => "p75_us",
                "90" => "p90_us",
                "99" => "p99_us",
                other => return Err(format!("an unexpected percentile {other}% in {line:?}")),
            };
            p.metrics.insert(name.into(), time_us(words[1])?);
        } else if words.len() >= 4 && words[1] == "requests" && words[2] == "in" {
            in_distribution = false;
            p.metrics.insert("requests".into(), number(words[0])?);
            p.metrics
                .insert("secs".into(), time_us(words[3].trim_end_matches(','))? / 1e6);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                let mut kv = part.split_whitespace();
                let (Some(kind), Some(n)) = (kv.next(), kv.next()) else {
                    return Err(format!("unreadable socket errors {line:?}"));
                };
                let n = n
                    .parse::<u64>()
                    .map_err(|_| format!("unreadable socket errors {line:?}"))?;
                if n > 0 {
                    p.errors.insert(kind.to_string(), n);
                }
            }
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            let n = n.trim().parse::<u64>().map_err(|_| format!("unreadable {line:?}"))?;
            if n > 0 {
                p.errors.insert("non-2xx-3xx".into(), n);
            }
        }
    }
    for needed in ["rps", "requests", "p50_us", "p99_us"] {
        if !p.metrics.contains_key(needed) {
            return Err(format!("no {needed} in wrk's output (was --latency given?)"));
        }
    }
    let socket: Vec<String> = ["connect", "read", "write", "timeout"]
        .iter()
        .filter_map(|k| p.errors.get(*k).map(|n| format!("{k} {n}")))
        .collect();
    if !socket.is_empty() {
        p.problems.push(format!("wrk: socket errors ({})", socket.join(", ")));
    }
    if let Some(n) = p.errors.get("non-2xx-3xx") {
        p.problems.push(format!(
            "wrk: {n} responses were not 2xx or 3xx (its req/s counts them)"
        ));
    }
    if p.metrics.get("requests") == Some(&0.0) {
        p.problems.push("wrk: no request completed".into());
    }
    Ok(p)
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{s:?} is not a number"))
}

/// wrk's times (`519.94us`, `4.70ms`, `1.10s`, `2.00m`, `1.00h`) in microseconds.
fn time_us(s: &str) -> Result<f64, String> {
    for (unit, scale) in [("us", 1.0), ("ms", 1e3), ("s", 1e6), ("m", 60e6), ("h", 3600e6)] {
        if let Some(v) = s.strip_suffix(unit) {
            return Ok(number(v)? * scale);
        }
    }
    Err(format!("{s:?} is not a wrk time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Running 5s test @ http://127.0.0.1:40000/plaintext
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   519.94us  178.04us   4.70ms   85.55%
    Req/Sec   123.45k     5.23k  130.00k    70.00%
  Latency Distribution
     50%  487.00us
     75%  555.00us
     90%  659.00us
     99%    1.13ms
  614113 requests in 5.00s, 77.31MB read
Requests/sec: 122812.34
Transfer/sec:     15.46MB
";

    #[test]
    fn a_clean_run_gives_rate_and_percentiles_in_microseconds_and_no_problem() {
        let p = parse(CLEAN).unwrap();
        let m = |k: &str| p.metrics[k];
        assert_eq!(m("rps"), 122812.34);
        assert_eq!(m("requests"), 614113.0);
        assert_eq!(m("secs"), 5.0);
        assert_eq!(m("mean_us"), 519.94);
        assert_eq!(m("max_us"), 4700.0);
        assert_eq!(m("p50_us"), 487.0);
        assert_eq!(m("p75_us"), 555.0);
        assert_eq!(m("p90_us"), 659.0);
        assert_eq!(m("p99_us"), 1130.0);
        assert!(p.errors.is_empty() && p.problems.is_empty(), "{p:?}");
    }

    #[test]
    fn socket_errors_and_non_2xx_responses_are_problems() {
        let text = CLEAN.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 3, write 0, timeout 12\n  Non-2xx or 3xx responses: 5\nRequests/sec:",
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.errors.get("read"), Some(&3));
        assert_eq!(p.errors.get("timeout"), Some(&12));
        assert_eq!(p.errors.get("connect"), None, "zero counts are not errors");
        assert_eq!(p.errors.get("non-2xx-3xx"), Some(&5));
        assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
        assert!(p.problems[0].contains("read 3, timeout 12"));
        assert!(p.problems[1].contains("5 responses were not 2xx or 3xx"));
    }

    #[test]
    fn output_without_the_latency_distribution_is_refused_not_zeroed() {
        let text: String = CLEAN
            .lines()
            .filter(|l| !l.contains('%') || l.contains("Latency "))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = parse(&text.replace("Latency Distribution\n", "")).unwrap_err();
        assert!(err.contains("p50_us"), "{err}");
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn wrk_times_in_every_unit() {
        assert_eq!(time_us("519.94us"), Ok(519.94));
        assert_eq!(time_us("4.70ms"), Ok(4700.0));
        assert_eq!(time_us("1.10s"), Ok(1_100_000.0));
        assert_eq!(time_us("2.00m"), Ok(120_000_000.0));
        assert!(time_us("-nanus").is_err());
        assert!(time_us("12").is_err());
    }

    #[test]
    fn wrk_cross_checks_one_in_flight_plaintext_only() {
        let cells = crate::matrix::suites(crate::matrix::Scale {
            quick: false,
            duration: 5.0,
            repeats: 3,
        });
        let plaintext: Vec<_> = cells.iter().filter(|c| c.suite == "plaintext").collect();
        assert!(plaintext.iter().any(|c| c.pipeline() > 1), "the suite has pipelined cells");
        for c in plaintext {
            if c.pipeline() > 1 {
                assert!(!c.wrk && plan(&c.action).is_none(), "{}: wrk cannot pipeline", c.id);
            } else {
                assert!(c.wrk && plan(&c.action) == Some((64, 5.0)), "{}", c.id);
            }
        }
    }

    #[test]
    fn the_command_is_pinned_like_the_client_with_whole_seconds() {
        let inv = invocation(
            Path::new("/usr/bin/wrk"),
            Some(Path::new("/usr/bin/taskset")),
            Some("1"),
            64,
            5.0,
            "http://127.0.0.1:4000/plaintext",
        );
        assert_eq!(
            inv.shown,
            "taskset -c 1 wrk -t1 -c64 -d5s --latency http://127.0.0.1:4000/plaintext"
        );
        assert_eq!(inv.argv[0], "/usr/bin/taskset");
        assert_eq!(inv.argv[3], "/usr/bin/wrk");
        let quick = invocation(Path::new("wrk"), None, Some("1-3"), 8, 0.5, "http://h/plaintext");
        assert_eq!(
            quick.shown, "wrk -t3 -c8 -d1s --latency http://h/plaintext",
            "unpinned without taskset; 0.5 s → 1 s"
        );
        assert_eq!(quick.secs, 1);
        let few = invocation(Path::new("wrk"), None, Some("1-7"), 2, 3.2, "u");
        assert_eq!(
            few.shown, "wrk -t2 -c2 -d4s --latency u",
            "no more threads than connections"
        );
    }
}
