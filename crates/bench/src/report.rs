//! RESULTS.md: the talk's claims with a verdict each, the goals (met or missed, and what
//! limits them), one table per suite with ratios to a named baseline, the plots, the
//! machine, and the exact command of every cell. Written from [`Results`] alone, so it can
//! be regenerated from results.json at any time.
//!
//! Hand-written analysis survives regeneration: whatever stands between the
//! `<!-- notes -->` and `<!-- /notes -->` lines of the existing RESULTS.md is carried over.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::results::{CellResult, Results, SuiteRun};
use crate::BenchError;

const NOTES_OPEN: &str = "<!-- notes -->";
const NOTES_CLOSE: &str = "<!-- /notes -->";

/// Writes RESULTS.md and the plots into `out`; returns the paths written.
pub fn write_all(results: &Results, out: &Path, baseline: &str) -> Result<Vec<PathBuf>, BenchError> {
    let mut written = crate::plots::write_all(results, &out.join("plots"))?;
    let path = out.join("RESULTS.md");
    let notes = std::fs::read_to_string(&path).ok().and_then(|t| {
        let start = t.find(NOTES_OPEN)? + NOTES_OPEN.len();
        let end = t[start..].find(NOTES_CLOSE)? + start;
        Some(t[start..end].trim().to_string())
    });
    let plots: Vec<String> = written
        .iter()
        .filter_map(|p| p.file_name().map(|f| format!("plots/{}", f.to_string_lossy())))
        .collect();
    let text = render(results, baseline, notes.as_deref(), &plots);
    std::fs::write(&path, text).map_err(|e| BenchError::Setup(format!("cannot write {}: {e}", path.display())))?;
    written.push(path);
    Ok(written)
}

// --- formatting ------------------------------------------------------------------------

/// `1234567` as `1,234,567`.
#[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; the workspace says 1.80
pub fn thousands(n: f64) -> String {
    if !n.is_finite() {
        return "–".into();
    }
    let neg = n < 0.0;
    let digits = (n.abs().round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg {
        format!("−{out}")
    } else {
        out
    }
}

/// Microseconds for a person: `850 µs`, `4.2 ms`, `1.30 s`.
pub fn us(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v < 1000.0 {
        format!("{v:.0} µs")
    } else if v < 1_000_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{:.2} s", v / 1_000_000.0)
    }
}

/// Bytes for a person: `980 B`, `1.9 KiB`, `3.4 MiB`.
pub fn bytes(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v < 1024.0 {
        format!("{v:.0} B")
    } else if v < 1024.0 * 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else if v < 1024.0 * 1048576.0 {
        format!("{:.1} MiB", v / 1048576.0)
    } else {
        format!("{:.1} GiB", v / 1073741824.0)
    }
}

/// CPU time as percent of one core: `97%`, `183%` (two cores).
fn pct(v: f64) -> String {
    format!("{v:.0}%")
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fx(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}×"))
}

fn med(c: &CellResult, metric: &str, f: fn(f64) -> String) -> String {
    c.median(metric).map_or("–".into(), f)
}

/// The spread of `metric` as `±N%` (half the range over the median).
fn spread(c: &CellResult, metric: &str) -> String {
    if c.samples.len() < 2 {
        return "n=1".into();
    }
    crate::stats::spread(&c.values(metric)).map_or("–".into(), |s| format!("±{:.1}%", s * 50.0))
}

fn problems(c: &CellResult) -> String {
    let mut p = c.problems();
    if let Some(s) = &c.skipped {
        p.insert(0, format!("skipped: {s}"));
    }
    p.extend(c.notes.iter().filter(|n| !n.starts_with("raised with sysctl")).cloned());
    if let Some(w) = &c.wrk {
        // wrk's own parser already names it; a missing wrk or a failed run does not.
        p.extend(w.problems.iter().map(|s| if s.starts_with("wrk") { s.clone() } else { format!("wrk: {s}") }));
    }
    if p.is_empty() {
        String::new()
    } else {
        p.iter()
            .map(|s| s.lines().next().unwrap_or("").replace('|', "\\|"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One line saying what a cell found, for the progress output.
pub fn one_line(c: &CellResult) -> String {
    if let Some(s) = &c.skipped {
        return format!("{} skipped: {}", c.cell.id, s.lines().next().unwrap_or(""));
    }
    let mut parts = Vec::new();
    for (metric, name, f) in [
        ("rps", "req/s", thousands as fn(f64) -> String),
        ("cpu_rps", "cpu req/s", thousands),
        ("deliveries_per_s", "deliveries/s", thousands),
        ("post_rps", "posts/s", |v| format!("{v:.1}")),
        ("ops_per_s", "ops/s", thousands),
        ("held", "held", thousands),
        ("p50_us", "p50", us),
        ("p99_us", "p99", us),
        ("pss_per_conn_bytes", "PSS/conn", bytes),
        ("threads_peak", "threads", thousands),
        ("violations", "violations", thousands),
    ] {
        if let Some(v) = c.median(metric) {
            parts.push(format!("{name} {}", f(v)));
        }
    }
    let mut p = c.problems();
    if let Some(w) = &c.wrk {
        if let Some(v) = w.metric("rps") {
            parts.push(format!("wrk req/s {}", thousands(v)));
        }
        p.extend(w.problems.iter().cloned());
    }
    if !p.is_empty() {
        parts.push(format!("PROBLEMS: {}", p.join("; ")));
    }
    format!("{}: {}", c.cell.id, parts.join(", "))
}

struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "| {} |", self.head.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(self.head.len()));
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        out.push('\n');
    }
}

// --- the document ----------------------------------------------------------------------

fn render(results: &Results, baseline: &str, notes: Option<&str>, plots: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# c10k benchmark results\n");
    let _ = writeln!(
        out,
        "Written by `c10k bench` from [`results.json`](results.json) (regenerate with `c10k bench --report-only`). \
         Every number is the median of the repeats, with the spread (± half the range over the median) where \
         there were several; every cell ran against a fresh server. Ratios are to **{baseline}** unless said otherwise. \
         The exact commands of every cell are under each suite; the machine is described at the end.\n"
    );
    if let Some(m) = results.suites.values().map(|s| &s.machine).next() {
        // The load average before the first cell is other people's work; during the run
        // it is mostly the bench's own servers (a 10,000-thread server puts up to 10,000
        // runnable threads on the run queue at every broadcast).
        let starts: Vec<f64> = results.suites.values().filter_map(|s| s.machine.loadavg_start).collect();
        let first = results
            .suites
            .values()
            .flat_map(|s| s.cells.iter())
            .filter(|c| c.started_unix_ms > 0)
            .min_by_key(|c| c.started_unix_ms)
            .and_then(|c| c.loadavg);
        let loads: Vec<f64> = results.suites.values().flat_map(|s| s.cells.iter().filter_map(|c| c.loadavg)).collect();
        let (lo, hi) = crate::stats::range(&loads).unwrap_or((0.0, 0.0));
        let before = first.or_else(|| starts.iter().copied().reduce(f64::min)).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "Machine: {} × {}, {} memory, {}. Load average (1 min) before the first cell: {before:.2}{}; \
             when later cells started: {lo:.2} to {hi:.2}, mostly the bench's own servers (a thread-per-connection \
             server with 10,000 threads puts thousands of runnable threads on the run queue at each broadcast, and \
             the 1-minute average carries that into the next cells).\n",
            m.cpus,
            m.cpu_model,
            bytes(m.mem_total_kib as f64 * 1024.0),
            m.uname,
            if before > 0.5 {
                " — **the machine was shared and busy** (other work was running), so absolute numbers are lower and noisier than on a quiet machine"
            } else {
                " (quiet)"
            }
        );
    }
    if results.suites.values().any(|s| s.quick) {
        let quick: Vec<&str> = results
            .suites
            .values()
            .filter(|s| s.quick)
            .map(|s| s.suite.as_str())
            .collect();
        let _ = writeln!(
            out,
            "**Smoke sizes (`--quick`) in: {}.** Those numbers only show that the bench runs.\n",
            quick.join(", ")
        );
    }

    let _ = writeln!(out, "## The talk's claims\n");
    let mut t = Table::new(&["claim", "measured here", "verdict", "reproduce"]);
    for c in crate::report::claims::all(results) {
        let verdict = c.verdict_markdown();
        t.row(vec![c.claim, c.measured, verdict, c.reproduce]);
    }
    t.render(&mut out);

    let _ = writeln!(out, "## Goals\n");
    let mut t = Table::new(&["goal", "measured", "met?", "what limits it"]);
    for g in crate::report::claims::goals(results, baseline) {
        t.row(vec![g.goal, g.measured, g.verdict.markdown(), g.limits]);
    }
    t.render(&mut out);
    let profiled: Vec<&CellResult> = results
        .suites
        .values()
        .flat_map(|s| s.cells.iter())
        .filter(|c| !c.profile.is_empty())
        .collect();
    if !profiled.is_empty() {
        let _ = writeln!(out, "### Where the time goes (perf)\n");
        let _ = writeln!(
            out,
            "`perf record -F 499 -g` on the server's processes during one extra, unmeasured run of the cell; \
             the hottest symbols (self time, `perf report --no-children --sort dso,symbol`):\n"
        );
        for c in profiled {
            let _ = writeln!(
                out,
                "**{} {}** (`{}`):\n\n```",
                c.cell.suite,
                c.cell.id,
                c.server_command.as_deref().unwrap_or("")
            );
            for l in &c.profile {
                let _ = writeln!(out, "{l}");
            }
            let _ = writeln!(out, "```\n");
        }
    }

    let _ = writeln!(out, "## Analysis\n");
    let _ = writeln!(out, "{NOTES_OPEN}");
    let _ = writeln!(
        out,
        "{}",
        notes.unwrap_or("(Hand-written notes go here; `c10k bench` keeps them when it rewrites this file.)")
    );
    let _ = writeln!(out, "{NOTES_CLOSE}\n");

    if !plots.is_empty() {
        let _ = writeln!(out, "## Plots\n");
        for p in plots {
            let _ = writeln!(out, "![{p}]({p})\n");
        }
    }

    for suite in crate::matrix::SUITE_NAMES {
        if let Some(run) = results.suites.get(*suite) {
            suite_section(&mut out, run, results, baseline);
        }
    }

    let _ = writeln!(out, "## Machine\n");
    for run in results.suites.values() {
        let m = &run.machine;
        let _ = writeln!(out, "Suite `{}` ran on:\n", run.suite);
        let _ = writeln!(out, "- CPU: {} × {}", m.cpus, m.cpu_model);
        let _ = writeln!(out, "- kernel: {}", m.uname);
        let _ = writeln!(out, "- memory: {}", bytes(m.mem_total_kib as f64 * 1024.0));
        let _ = writeln!(
            out,
            "- load average (1 min): {} at the start, {} at the end",
            m.loadavg_start.map_or("?".into(), |l| format!("{l:.2}")),
            m.loadavg_end.map_or("?".into(), |l| format!("{l:.2}"))
        );
        let _ = writeln!(
            out,
            "- pinning: {}",
            if m.taskset {
                "taskset present (server on CPU 0, client on the others, where a cell pins)"
            } else {
                "no taskset: nothing pinned"
            }
        );
        for (k, v) in &m.limits {
            let _ = writeln!(out, "- {k}: {v}");
        }
        for r in &m.raised {
            let _ = writeln!(out, "- changed by the bench: {r}");
        }
        if !m.versions.is_empty() {
            let _ = writeln!(out, "- versions: {}", m.versions.join("; "));
        }
        let _ = writeln!(out, "- bench command: `{}`\n", run.command);
        // One machine block is enough when every suite ran on the same machine.
        if results
            .suites
            .values()
            .all(|s| s.machine.cpu_model == m.cpu_model && s.machine.uname == m.uname)
        {
            let _ = writeln!(
                out,
                "(Every suite ran on this machine; the load averages of the others are in each suite's table notes.)\n"
            );
            break;
        }
    }
    out
}

fn suite_section(out: &mut String, run: &SuiteRun, results: &Results, baseline: &str) {
    let cells: Vec<&CellResult> = run.cells.iter().collect();
    let _ = writeln!(out, "## Suite `{}`\n", run.suite);
    let ledger_about: String;
    let about = match run.suite.as_str() {
        "plaintext" => "Keep-alive `GET /plaintext`, 64 connections with one request in flight each, closed loop; every model and peer on one core (CPU 0) with the client on the other. \
             **wrk** cross-checks c10k load: it runs **once per server** (not per repeat, which would double the suite's time), \
             right after c10k load's repeats, against the same server with the same pinning, connections and duration \
             (rounded up to whole seconds: wrk takes no fractions); its exact command is with each cell's below. \
             `c10k load / wrk` is c10k load's median req/s over wrk's; wrk's req/s counts every response, \
             so any that was not 2xx or 3xx is listed under problems. \
             **Pipelined** cells (their own table, below the first) keep the same connections, pinning, warm-up and \
             repeats but have 16 requests in flight on each (`c10k load plaintext --pipeline 16`: 16 requests in one \
             write, then their 16 answers, each checked), as TechEmpower's plaintext test does: with one request in \
             flight the client pays a write and a read per request and its core saturates first, so the first table \
             measures the client as much as the server; pipelined, the server's own cost per request sets the rate. \
             wrk does not run on them (it cannot pipeline without a Lua script). \
             **System calls per request**: after the repeats (and wrk), one more unmeasured run of the same load \
             with the server's system calls counted by `perf stat -e raw_syscalls:sys_enter` and one \
             `syscalls:sys_enter_NAME` tracepoint per common call (`strace -c -f` where perf is missing, which \
             slows the server; the column then says so), divided by the requests that run answered; `other` is \
             every call not counted by name. The server's calls only, not the client's.",
        "wakeup" => "The reactor on each poller with K idle keep-alive connections (each served one request, then left idle) while one more connection runs plaintext back to back: what each wake-up costs as idle connections grow. `select` cannot watch descriptors past 1024 (FD_SETSIZE): the server refuses those connections.",
        "dbstall" => "Posts (store calls, made slow) at a fixed rate beside `GET /healthz` probes at a fixed rate; the probes touch no store, and their latency is measured from when each was due (no coordinated omission). `inline` runs the store call on the serving thread, `offload` on the store's pool of 4 threads, `native` on a driver that cooperates with the model (async: mysql_async or tokio-postgres awaited by its tasks; green: each coroutine drives its own PostgreSQL connection over a green socket, and MySQL, which has no driver that takes a socket, is refused; threads: the blocking driver on the connection's own thread; the reactor has none and refuses it). First the SQLite store sleeping in c10k; then one table per database server, every store call first waiting on a query that takes 50 ms there (`--db-sleep-ms 50`), each cell on a scratch database of its own, dropped after. On the servers the posters (32) outnumber the 16 connections a server keeps to the database and offer more than those can store, so posts stored per second is the server's ceiling: about 20/s for one thread blocking inline, 80/s for offload's 4 threads, up to 320/s for 16 connections.",
        "ledger" => {
            ledger_about = ledger::about(&cells);
            &ledger_about
        }
        "cpu" => "`GET /cpu?cost=N` (CPU-bound, about 4 ms each at full size) on 4 connections beside `GET /plaintext` on one other (its latency is what the other clients see); server and client unpinned (the server may use both cores: the giant-lock and green-threads claims are about using several).",
        "fanout" => "Long-poll subscribers in one room while a poster posts back to back (and a paced run at the top size); every delivery is checked exactly-once and in order. Latency is from the post being sent to each subscriber receiving it.",
        "ws" => "WebSocket subscribers in one room while a poster posts back to back.",
        "idle" => "Idle keep-alive connections: each sends one `GET /plaintext`, then sits idle; afterwards one more request on each: **held** counts those that answered. Memory is the server's process tree (PSS, so pages shared between forked workers count once) at its peak less before, per held connection; kernel memory is system-wide (both ends of each loopback connection).",
        "capacity" => "Idle SSE subscribers on one server process (the open-files limit is 20,000 per process), then one broadcast to all of them; memory as in `idle`. prefork holds one connection per process, so it runs with as many workers as connections.",
        "c100k" => "100,000 idle SSE subscribers on 8 worker processes (each with its own `SO_REUSEPORT` listener, about 12,500 connections each, 19,000 at most), from several client processes and source addresses; then one broadcast to all. `total/conn` is the drop of the machine's MemAvailable per connection: both ends, kernel and user space.",
        "presence" => "What presence costs: idle WebSocket subscribers of one room, plain (`plain`), then each a named member that asks for presence events (`members`: `?presence=1&nick=...`, so that each join is a change the server coalesces into at most one update a second, sent to every subscriber); 10,000 on one async process, 100,000 on 8 async workers that share presence over the relay. Then one broadcast to all of them: its p99 and how long it took to reach the last one.",
        "c1m" => "The async, reactor and uring models past 100,000 subscribers, a step at a time; a step is skipped when the one before did not hold everyone, or when its projected memory (from the step before) would not fit in 70% of what is available.",
        _ => "",
    };
    let _ = writeln!(out, "{about}\n");
    match run.suite.as_str() {
        "plaintext" => {
            let (pipelined, cells): (Vec<&CellResult>, Vec<&CellResult>) =
                cells.iter().copied().partition(|c| c.cell.pipeline() > 1);
            let base = cells
                .iter()
                .find(|c| c.cell.series == baseline)
                .and_then(|c| c.median("rps"));
            let raw = cells
                .iter()
                .find(|c| c.cell.series == "raw")
                .and_then(|c| c.median("rps"));
            let mut t = Table::new(&[
                "server",
                "req/s",
                "spread",
                "p50",
                "p99",
                &format!("× {baseline}"),
                "× raw",
                "server CPU",
                "client CPU",
                "wrk req/s",
                "wrk p50 / p99",
                "wrk server / client CPU",
                "c10k load / wrk",
                "syscalls / request",
                "commonest syscalls / request",
                "problems",
            ]);
            for c in &cells {
                let w = |metric: &str, f: fn(f64) -> String| {
                    c.wrk.as_ref().and_then(|w| w.metric(metric)).map_or("–".into(), f)
                };
                t.row(vec![
                    label(c),
                    med(c, "rps", thousands),
                    spread(c, "rps"),
                    med(c, "p50_us", us),
                    med(c, "p99_us", us),
                    fx(ratio(c.median("rps"), base)),
                    fx(ratio(c.median("rps"), raw)),
                    med(c, "server_cpu_pct", pct),
                    med(c, "client_cpu_pct", pct),
                    if c.wrk.is_none() && c.ran() { "not run".into() } else { w("rps", thousands) },
                    format!("{} / {}", w("p50_us", us), w("p99_us", us)),
                    format!("{} / {}", w("server_cpu_pct", pct), w("client_cpu_pct", pct)),
                    fx(ratio(c.median("rps"), c.wrk.as_ref().and_then(|w| w.metric("rps")))),
                    syscalls_per_request(c),
                    commonest_syscalls(c),
                    problems(c),
                ]);
            }
            t.render(out);
            pipelined_table(out, &pipelined, &cells, baseline);
        }
        "wakeup" => {
            let mut t = Table::new(&[
                "poller",
                "idle connections",
                "idle held",
                "req/s",
                "spread",
                "µs per request",
                "p50",
                "p99",
                "extra per request vs 0 idle",
                "problems",
            ]);
            for c in &cells {
                let zero = cells
                    .iter()
                    .find(|z| z.cell.series == c.cell.series && z.cell.x == Some(0.0))
                    .and_then(|z| z.median("rps"));
                let per = c.median("rps").filter(|r| *r > 0.0).map(|r| 1e6 / r);
                let extra = match (per, zero) {
                    (Some(p), Some(z)) if z > 0.0 => us(p - 1e6 / z),
                    _ => "–".into(),
                };
                t.row(vec![
                    label(c),
                    thousands(c.cell.x.unwrap_or(0.0)),
                    med(c, "idle_held", thousands),
                    med(c, "rps", thousands),
                    spread(c, "rps"),
                    per.map_or("–".into(), |p| format!("{p:.1} µs")),
                    med(c, "p50_us", us),
                    med(c, "p99_us", us),
                    extra,
                    problems(c),
                ]);
            }
            t.render(out);
        }
        "dbstall" => dbstall_tables(out, &cells),
        "ledger" => ledger::tables(out, &cells),
        "cpu" => {
            let mut t = Table::new(&[
                "server",
                "cpu req/s",
                "spread",
                "plaintext req/s",
                "plaintext p50",
                "plaintext p99",
                "cpu p99",
                "server CPU",
                "client CPU",
                "problems",
            ]);
            for c in &cells {
                t.row(vec![
                    label(c),
                    med(c, "cpu_rps", |v| format!("{v:.0}")),
                    spread(c, "cpu_rps"),
                    med(c, "rps", thousands),
                    med(c, "p50_us", us),
                    med(c, "p99_us", us),
                    med(c, "cpu_p99_us", us),
                    med(c, "server_cpu_pct", pct),
                    med(c, "client_cpu_pct", pct),
                    problems(c),
                ]);
            }
            t.render(out);
        }
        "fanout" | "ws" => {
            let tornado = |n: Option<f64>| {
                cells
                    .iter()
                    .find(|c| c.cell.series == "tornado" && c.cell.x == n && !c.cell.id.ends_with("/paced"))
                    .and_then(|c| c.median("deliveries_per_s"))
            };
            let mut t = Table::new(&[
                "server",
                "subscribers",
                "messages",
                "delivered / expected",
                "deliveries/s",
                "spread",
                "p50",
                "p99",
                "max",
                "× tornado",
                "server CPU",
                "client CPU",
                "problems",
            ]);
            for c in &cells {
                t.row(vec![
                    label(c),
                    c.cell.x.map_or("–".into(), thousands),
                    med(c, "messages", thousands),
                    format!("{} / {}", med(c, "delivered", thousands), med(c, "expected", thousands)),
                    med(c, "deliveries_per_s", thousands),
                    spread(c, "deliveries_per_s"),
                    med(c, "p50_us", us),
                    med(c, "p99_us", us),
                    med(c, "max_us", us),
                    if run.suite == "fanout" && !c.cell.id.ends_with("/paced") {
                        fx(ratio(c.median("deliveries_per_s"), tornado(c.cell.x)))
                    } else {
                        "–".into()
                    },
                    med(c, "server_cpu_pct", pct),
                    med(c, "client_cpu_pct", pct),
                    problems(c),
                ]);
            }
            t.render(out);
        }
        "presence" => memory_table(
            out,
            &cells,
            &[
                ("subscribers", label),
                ("size", size),
                ("held", |c| med(c, "held", thousands)),
                ("PSS / connection", |c| med(c, "pss_per_conn_bytes", bytes)),
                ("total / connection (MemAvailable)", |c| med(c, "total_per_conn_bytes", bytes)),
                ("opened in", |c| med(c, "open_secs", |v| format!("{v:.1} s"))),
                ("broadcast p99", |c| med(c, "broadcast_p99_us", us)),
                ("broadcast reached all in", |c| med(c, "broadcast_secs", |v| format!("{v:.2} s"))),
                ("problems", problems),
            ],
        ),
        "idle" | "capacity" | "c100k" | "c1m" => memory_table(
            out,
            &cells,
            &[
                ("server", label),
                ("asked", size),
                ("held", |c| med(c, "held", thousands)),
                ("PSS / connection", |c| med(c, "pss_per_conn_bytes", bytes)),
                ("VmRSS / connection", |c| med(c, "rss_per_conn_bytes", bytes)),
                ("threads (peak)", |c| med(c, "threads_peak", thousands)),
                ("processes", |c| med(c, "processes_peak", thousands)),
                ("kernel / connection (both ends)", |c| med(c, "kernel_per_conn_bytes", bytes)),
                ("total / connection (MemAvailable)", |c| med(c, "total_per_conn_bytes", bytes)),
                ("opened in", |c| med(c, "open_secs", |v| format!("{v:.1} s"))),
                ("problems", problems),
            ],
        ),
        _ => {}
    }
    let _ = results;
    let _ = writeln!(
        out,
        "<details><summary>Commands of every cell ({})</summary>\n",
        cells.len()
    );
    for c in &cells {
        let pin = match (&c.server_cpus, &c.client_cpus) {
            (Some(s), Some(cl)) => format!("server on CPU {s}, client on CPU {cl}"),
            _ => "unpinned".into(),
        };
        let _ = writeln!(
            out,
            "- **{}** ({pin}; {} repeat{}{}):  \n  server: `{}`  \n  load: `{}`{}",
            c.cell.id,
            c.samples.len(),
            if c.samples.len() == 1 { "" } else { "s" },
            c.loadavg.map_or(String::new(), |l| format!("; load average {l:.2}")),
            c.server_command.as_deref().unwrap_or("(not started)"),
            c.load_command.as_deref().unwrap_or("–"),
            c.wrk.as_ref().map_or(String::new(), |w| format!(
                "  \n  wrk, once after the repeats: `{}`{}",
                w.command,
                if w.metric("rps").is_some() { "" } else { " (gave no figure: see the problems column)" }
            ))
        );
        if let Some(s) = c.syscalls.as_ref().filter(|s| !s.command.is_empty()) {
            let _ = writeln!(
                out,
                "  system calls, one extra run after the repeats ({} req/s while counted): `{}`",
                thousands(s.rps),
                s.command
            );
        }
        for n in &c.notes {
            let _ = writeln!(out, "  note: {}", n.lines().next().unwrap_or(""));
        }
    }
    let _ = writeln!(out, "\n</details>\n");
}

/// The dbstall tables: the SQLite store sleeping in c10k, then one per database server.
fn dbstall_tables(out: &mut String, cells: &[&CellResult]) {
    let on_server = |c: &CellResult| match &c.cell.subject {
        crate::matrix::Subject::Model { db_server, .. } => *db_server,
        _ => None,
    };
    let sqlite: Vec<&CellResult> = cells.iter().copied().filter(|c| on_server(c).is_none()).collect();
    if !sqlite.is_empty() {
        let _ = writeln!(out, "**SQLite, sleeping in c10k** (`--db slow:MILLIS:PATH`):\n");
        let mut t = Table::new(&[
            "model / store calls",
            "healthz p50",
            "p99",
            "spread (p99)",
            "p99.9",
            "max",
            "posts/s",
            "post p99",
            "problems",
        ]);
        for c in &sqlite {
            t.row(vec![
                label(c),
                med(c, "p50_us", us),
                med(c, "p99_us", us),
                spread(c, "p99_us"),
                med(c, "p999_us", us),
                med(c, "max_us", us),
                med(c, "post_rps", |v| format!("{v:.1}")),
                med(c, "post_p99_us", us),
                problems(c),
            ]);
        }
        t.render(out);
    }
    for database in crate::matrix::Database::ALL {
        let ran: Vec<&CellResult> =
            cells.iter().copied().filter(|c| on_server(c).is_some_and(|d| d.database == database)).collect();
        let Some(server) = ran.first().and_then(|c| on_server(c)) else { continue };
        let name = ran.iter().find_map(|c| c.database.clone()).unwrap_or_else(|| database.title().to_string());
        let _ = writeln!(
            out,
            "**{name}**, every store call waiting on a {} ms query there (`--db {}://... --db-sleep-ms {}`):\n",
            server.sleep_ms,
            database.id(),
            server.sleep_ms
        );
        let mut t = Table::new(&[
            "model",
            "--db-mode",
            "healthz p50",
            "healthz p99",
            "spread (p99)",
            "posts/s offered",
            "posts/s stored",
            "post p99",
            "errors (healthz / post)",
            "problems",
        ]);
        for c in &ran {
            // `mysql/async/inline`: the model, with its flags but the mode, and the mode.
            let mode = c.cell.id.rsplit('/').next().unwrap_or("").to_string();
            let model = match &c.cell.subject {
                crate::matrix::Subject::Model { model, args, .. } => {
                    let flags: Vec<&str> = args.iter().map(String::as_str).take_while(|a| *a != "--db-mode").collect();
                    if flags.is_empty() { model.clone() } else { format!("{model} <sub>{}</sub>", flags.join(" ")) }
                }
                _ => c.cell.series.clone(),
            };
            let offered = match &c.cell.action {
                crate::matrix::Action::Load { scenario: c10k_load::Scenario::DbStall(s), .. } => {
                    format!("{:.0} ({} posters)", s.post_rate, s.posters)
                }
                _ => "–".into(),
            };
            let why = match &c.skipped {
                Some(s) => s.lines().next().unwrap_or("").replace('|', "\\|"),
                None => problems(c),
            };
            t.row(vec![
                model,
                mode,
                med(c, "p50_us", us),
                med(c, "p99_us", us),
                if c.ran() { spread(c, "p99_us") } else { "–".into() },
                offered,
                med(c, "post_rps", |v| format!("{v:.1}")),
                med(c, "post_p99_us", us),
                if c.ran() {
                    format!("{} / {}", med(c, "errors", thousands), med(c, "post_errors", thousands))
                } else {
                    "–".into()
                },
                why,
            ]);
        }
        t.render(out);
    }
}

/// The plaintext suite's pipelined cells, with ratios to the pipelined baseline and raw
/// floor (the same measurement) and to the server's own one-in-flight cell.
fn pipelined_table(out: &mut String, pipelined: &[&CellResult], single: &[&CellResult], baseline: &str) {
    let Some(depth) = pipelined.first().map(|c| c.cell.pipeline()) else { return };
    let find = |series: &str| pipelined.iter().find(|c| c.cell.series == series).and_then(|c| c.median("rps"));
    let base = find(&crate::matrix::pipelined_series(baseline));
    let raw = find(&crate::matrix::pipelined_series("raw"));
    let _ = writeln!(
        out,
        "**Pipelined {depth}** (the same connections, {depth} requests in flight on each; \
         ratios to the pipelined {baseline} and raw):\n"
    );
    let mut t = Table::new(&[
        "server",
        "req/s",
        "spread",
        "p50",
        "p99",
        &format!("× {baseline} (pipelined)"),
        "× raw (pipelined)",
        "× its one-in-flight req/s",
        "server CPU",
        "client CPU",
        "syscalls / request",
        "commonest syscalls / request",
        "problems",
    ]);
    for c in pipelined {
        // Its one-in-flight cell: `reactor` for `reactor/pipelined16`.
        let server = c.cell.id.split('/').next().unwrap_or("");
        let one = single.iter().find(|s| s.cell.id == server).and_then(|s| s.median("rps"));
        t.row(vec![
            label(c),
            med(c, "rps", thousands),
            spread(c, "rps"),
            med(c, "p50_us", us),
            med(c, "p99_us", us),
            fx(ratio(c.median("rps"), base)),
            fx(ratio(c.median("rps"), raw)),
            fx(ratio(c.median("rps"), one)),
            med(c, "server_cpu_pct", pct),
            med(c, "client_cpu_pct", pct),
            syscalls_per_request(c),
            commonest_syscalls(c),
            problems(c),
        ]);
    }
    t.render(out);
}

/// The server's system calls per request in the cell's counted run: `0.19`, or why there
/// is none (`not measured: perf and strace missing ...`), or `–` for a cell that counts none.
fn syscalls_per_request(c: &CellResult) -> String {
    let Some(s) = &c.syscalls else { return "–".into() };
    match s.per_request() {
        Some(v) if s.tool == "perf" => crate::syscalls::per_request_text(v),
        Some(v) => format!("{} ({})", crate::syscalls::per_request_text(v), s.tool),
        None => s.problems.first().map_or("not measured".into(), |p| p.replace('|', "\\|")),
    }
}

/// The commonest system calls of the counted run, per request: `recvfrom 1.00, sendto 1.00`.
fn commonest_syscalls(c: &CellResult) -> String {
    let Some(s) = c.syscalls.as_ref().filter(|s| s.per_request().is_some()) else { return "–".into() };
    s.top(crate::syscalls::TOP).iter().map(|(k, v)| format!("{k} {}", crate::syscalls::per_request_text(*v))).collect::<Vec<_>>().join(", ")
}

/// A column of a memory suite's table: its heading, and what a cell shows in it.
type Column = (&'static str, fn(&CellResult) -> String);

/// One row a cell, in `columns`.
fn memory_table(out: &mut String, cells: &[&CellResult], columns: &[Column]) {
    let heads: Vec<&str> = columns.iter().map(|(head, _)| *head).collect();
    let mut t = Table::new(&heads);
    for c in cells {
        t.row(columns.iter().map(|(_, show)| show(c)).collect());
    }
    t.render(out);
}

/// A cell's size (subscribers or connections asked for).
fn size(c: &CellResult) -> String {
    c.cell.x.map_or("–".into(), thousands)
}

fn label(c: &CellResult) -> String {
    let args = match &c.cell.subject {
        crate::matrix::Subject::Model { args, .. } if !args.is_empty() => format!(" <sub>{}</sub>", args.join(" ")),
        crate::matrix::Subject::Peer { workers: Some(w), .. } => {
            format!(" <sub>{w} worker{}</sub>", if *w == 1 { "" } else { "s" })
        }
        _ => String::new(),
    };
    format!("{}{args}", c.cell.series)
}

pub mod claims;
pub(crate) mod ledger;
