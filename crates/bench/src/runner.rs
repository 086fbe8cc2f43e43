//! Runs cells: start the server, pin, warm up, repeat, sample memory, stop. Each cell is
//! bounded: every load run has a hard timeout, the holder gives up at its deadline, and a
//! server that does not start or stop in time is killed.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use c10k_load::ledger::{CheckArgs, CheckReport};
use c10k_load::scenarios::{IdleConfig, PlaintextConfig};
use c10k_load::{LoadConfig, Report, Scenario};

use crate::holder::Holder;
use c10k_store::testing::{ScratchDatabase, ServerKind};

use crate::matrix::{Action, Cell, Database, DbServer, Subject, LEDGER_SEED};
use crate::procfs::{self, Peaks, Sampler};
use crate::results::{CellResult, Sample, WrkRun};
use crate::server::{self, Programs, Server};
use crate::syscalls::{self, Counter, SyscallCount};

/// How the runner behaves, from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Warm-up seconds before a load cell's repeats.
    pub warmup: f64,
    /// No pinning even where possible.
    pub no_pin: bool,
    /// Let run.sh install missing peers (else they are skipped).
    pub install_peers: bool,
    /// Profile cells marked for it with perf during an extra run.
    pub perf: bool,
    /// Raise kernel.pid_max and vm.max_map_count for cells that need them (root only).
    pub sysctl: bool,
    /// The MySQL/MariaDB server of the database cells (`--mysql`).
    pub mysql: String,
    /// The PostgreSQL server of the database cells (`--postgres`).
    pub postgres: String,
}

impl RunOptions {
    /// The URL of `database`'s server, as given on the command line.
    pub fn server_url(&self, database: Database) -> &str {
        match database {
            Database::Mysql => &self.mysql,
            Database::Postgres => &self.postgres,
        }
    }
}

/// The prefix of a skip that is the server refusing the cell's `--db-mode native`, with
/// its reason after it: the report shows these as refused, not as failures.
pub const REFUSED: &str = "refused: ";

/// A scratch database for a cell on a database server, and the server's name and version
/// (`MariaDB 10.11.19`); or why the cell cannot be measured.
fn scratch_for(cell: &Cell, server: DbServer, options: &RunOptions) -> Result<(ScratchDatabase, String), String> {
    let url = options.server_url(server.database);
    let kind = match server.database {
        Database::Mysql => ServerKind::MySql,
        Database::Postgres => ServerKind::Postgres,
    };
    let not_measured = |e: String| {
        format!(
            "not measured: no scratch database on the {} server ({e}); give its URL with --{}",
            server.database.title(),
            server.database.id()
        )
    };
    let scratch = ScratchDatabase::on(kind, url, &format!("bench_{}", cell.id)).map_err(not_measured)?;
    let version = scratch.server_version().map_err(not_measured)?;
    Ok((scratch, product_version(server.database, &version)))
}

/// `MariaDB 10.11.19` from `10.11.19-MariaDB-0+deb12u1`, `MySQL 8.0.36` from `8.0.36`,
/// `PostgreSQL 15.20` from `PostgreSQL 15.20 (Debian ...) on x86_64-pc-linux-gnu, ...`.
pub fn product_version(database: Database, version: &str) -> String {
    let number = |s: &str| s.split(|c: char| !(c.is_ascii_digit() || c == '.')).next().unwrap_or("").to_string();
    match database {
        Database::Mysql if version.contains("MariaDB") => format!("MariaDB {}", number(version)),
        Database::Mysql => format!("MySQL {}", number(version)),
        Database::Postgres => {
            format!("PostgreSQL {}", number(version.trim_start_matches("PostgreSQL").trim_start()))
        }
    }
}

/// The server's own reason for refusing `--db-mode native`, from its log, if that is why
/// it did not start.
fn refusal(error: &str) -> Option<String> {
    let at = error.rfind("--db-mode native: ")? + "--db-mode native: ".len();
    Some(error[at..].lines().next().unwrap_or("").trim().to_string())
}

/// Kernel limits raised for thread- and process-count cells, restored on drop.
pub struct Sysctl {
    saved: Vec<(&'static str, String)>,
    /// What was raised, for the report.
    pub note: Option<String>,
}

const RAISE: [(&str, u64); 2] = [
    ("/proc/sys/kernel/pid_max", 4_194_304),
    ("/proc/sys/vm/max_map_count", 1_048_576),
];

impl Sysctl {
    /// Raises the limits if they are lower (root only); says what it did.
    pub fn raise() -> Sysctl {
        let mut saved = Vec::new();
        let mut said = Vec::new();
        for (path, want) in RAISE {
            let Ok(old) = fs::read_to_string(path) else { continue };
            let old = old.trim().to_string();
            if old.parse::<u64>().map_or(true, |v| v >= want) {
                continue;
            }
            if fs::write(path, want.to_string()).is_ok() {
                let name = path.trim_start_matches("/proc/sys/").replace('/', ".");
                eprintln!("c10k bench: raised {name} from {old} to {want} (sysctl, as root) for the thread- and process-count cells; restored afterwards");
                said.push(format!("{name} {old} → {want}"));
                saved.push((path, old));
            }
        }
        let note = (!said.is_empty())
            .then(|| format!("raised with sysctl for this cell: {} (restored after)", said.join(", ")));
        Sysctl { saved, note }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        for (path, old) in &self.saved {
            let _ = fs::write(path, old);
        }
    }
}

/// The ephemeral port range, widened for the whole run and restored on drop.
pub struct PortRange {
    saved: Option<String>,
    /// What was done, for the report.
    pub note: Option<String>,
}

const PORT_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

impl PortRange {
    /// Widens net.ipv4.ip_local_port_range to 1024-65535 (when `allowed`, as root): a
    /// fan-out cell opens 10,000 connections per repeat from one address, and the ports
    /// of the repeat before are still in TIME_WAIT for 60 s.
    pub fn widen(allowed: bool) -> PortRange {
        let none = PortRange { saved: None, note: None };
        if !allowed {
            return none;
        }
        let Ok(old) = fs::read_to_string(PORT_RANGE) else { return none };
        let old = old.split_whitespace().collect::<Vec<_>>().join(" ");
        if old == "1024 65535" || fs::write(PORT_RANGE, "1024 65535").is_err() {
            return none;
        }
        let note = format!(
            "net.ipv4.ip_local_port_range raised from {old} to 1024 65535 with sysctl for the run (restored after): \
             repeats of 10,000-connection cells otherwise run out of ports held in TIME_WAIT"
        );
        eprintln!("c10k bench: {note}");
        PortRange { saved: Some(old), note: Some(note) }
    }
}

impl Drop for PortRange {
    fn drop(&mut self) {
        if let Some(old) = &self.saved {
            let _ = fs::write(PORT_RANGE, old);
        }
    }
}

/// CPUs for (server, client): server on CPU 0, client on the rest, when the machine has
/// two or more CPUs, taskset is there, and the cell wants it.
pub fn placement(cell: &Cell, programs: &Programs, options: &RunOptions) -> (Option<String>, Option<String>) {
    let n = crate::machine::cpus();
    if !cell.pinned || options.no_pin || programs.taskset.is_none() || n < 2 {
        return (None, None);
    }
    let client = if n == 2 {
        "1".to_string()
    } else {
        format!("1-{}", n - 1)
    };
    (Some("0".into()), Some(client))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs one cell to completion (or to a recorded skip).
pub fn run_cell(cell: &Cell, programs: &Programs, options: &RunOptions) -> CellResult {
    let (server_cpus, client_cpus) = placement(cell, programs, options);
    let mut result = CellResult {
        cell: cell.clone(),
        server_command: None,
        load_command: None,
        server_cpus: server_cpus.clone(),
        client_cpus: client_cpus.clone(),
        skipped: None,
        samples: Vec::new(),
        notes: Vec::new(),
        profile: Vec::new(),
        loadavg: procfs::loadavg(),
        started_unix_ms: now_ms(),
        wrk: None,
        database: None,
        syscalls: None,
    };
    if let Subject::Peer { name, .. } = &cell.subject {
        if !options.install_peers && !server::peer_installed(name, programs) {
            result.skipped = Some(format!("peer {name} is not installed (bench/baselines/run.sh install)"));
            return result;
        }
    }
    let _sysctl = if cell.needs_sysctl && options.sysctl {
        let s = Sysctl::raise();
        if let Some(n) = &s.note {
            result.notes.push(n.clone());
        }
        Some(s)
    } else {
        None
    };
    // A database cell's scratch database outlives its server (declared first, dropped last).
    let scratch = match &cell.subject {
        Subject::Model { db_server: Some(d), .. } => match scratch_for(cell, *d, options) {
            Ok((scratch, name)) => {
                result.database = Some(name);
                Some(scratch)
            }
            Err(why) => {
                result.skipped = Some(why);
                return result;
            }
        },
        _ => None,
    };
    let mut server = match Server::start(&cell.subject, server_cpus.as_deref(), programs, scratch.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            let e = e.to_string();
            result.skipped = Some(match refusal(&e) {
                Some(why) => format!("{REFUSED}{why}"),
                None => format!("the server did not start: {e}"),
            });
            return result;
        }
    };
    result.server_command = Some(server.command.clone());
    if let Some(n) = &server.note {
        result.notes.push(n.clone());
    }
    let single_client_cpu = client_cpus
        .as_deref()
        .is_some_and(|c| !c.contains('-') && !c.contains(','));
    let client_threads = if single_client_cpu { 1 } else { 0 };
    let target = format!("http://{}/", server.addr);
    let single_process = matches!(&cell.subject, Subject::Model { model, args, .. }
        if model != "prefork" && !args.iter().any(|a| a == "--workers"));
    result.load_command = Some(cell.action.load_command(
        &target,
        client_threads,
        client_cpus.as_deref(),
        single_process.then_some(server.pid),
    ));
    server::pin_self(client_cpus.as_deref(), programs);

    let ctx = Ctx {
        addr: server.addr,
        pid: server.root_pid(),
        client_threads,
        c10k: programs.c10k.clone(),
        single_process,
        locking: cell.subject.flag("--locking").map(str::to_string),
    };
    if matches!(cell.action, Action::Load { .. } | Action::Wakeup { .. } | Action::Ledger { .. }) && options.warmup > 0.0 {
        warm_up(&ctx, options.warmup);
    }
    for repeat in 0..cell.repeats.max(1) {
        let sample = run_action(&cell.action, &ctx, repeat);
        let fatal = sample.problems.iter().any(|p| p.starts_with("the load generator could not run"));
        result.samples.push(sample);
        if !server.alive() {
            result.notes.push(format!(
                "the server exited during the cell; its log ends:\n{}",
                server.log_tail()
            ));
            break;
        }
        if fatal {
            break;
        }
    }
    if cell.wrk {
        result.wrk = cross_check(cell, &ctx, &mut server, programs, client_cpus.as_deref());
    }
    if cell.syscalls && server.alive() {
        // One run past the measured ones, so that counting cannot slow a measured repeat.
        result.syscalls = Some(count_syscalls(&cell.action, &ctx, &server));
    }
    if options.perf && cell.profile && server.alive() {
        // One run past the measured ones (a ledger run's seed names its accounts).
        match profile(&cell.action, &ctx, &server, cell.repeats.max(1)) {
            Ok(lines) => result.profile = lines,
            Err(e) => result.notes.push(format!("perf: {e}")),
        }
    }
    server.stop();
    server::pin_self(None, programs);
    result
}

/// wrk once against the cell's server, with the client's pinning and the cell's
/// connections and duration (`None` for a cell that is not plaintext load).
fn cross_check(
    cell: &Cell,
    ctx: &Ctx,
    server: &mut Server,
    programs: &Programs,
    client_cpus: Option<&str>,
) -> Option<WrkRun> {
    let (connections, duration) = crate::wrk::plan(&cell.action)?;
    let url = format!("http://{}/plaintext", ctx.addr);
    let wrk = programs.wrk.as_deref().unwrap_or(std::path::Path::new("wrk"));
    let inv = crate::wrk::invocation(wrk, programs.taskset.as_deref(), client_cpus, connections, duration, &url);
    let not_run = |why: String| WrkRun {
        command: inv.shown.clone(),
        problems: vec![why],
        ..WrkRun::default()
    };
    if let Err(e) = &programs.wrk {
        return Some(not_run(e.clone()));
    }
    if !server.alive() {
        return Some(not_run("wrk did not run: the server had exited".into()));
    }
    let (server0, client0, t0) = (procfs::tree_cpu_secs(ctx.pid), procfs::reaped_children_cpu_secs(), Instant::now());
    let mut run = crate::wrk::run(&inv);
    let wall = t0.elapsed().as_secs_f64().max(1e-3);
    if run.metrics.contains_key("rps") {
        run.metrics.insert("server_cpu_pct".into(), (procfs::tree_cpu_secs(ctx.pid) - server0) / wall * 100.0);
        // wrk has exited and been waited for: its CPU is in this process's children's.
        run.metrics.insert("client_cpu_pct".into(), (procfs::reaped_children_cpu_secs() - client0) / wall * 100.0);
    }
    Some(run)
}

/// What an action needs to know about its server.
struct Ctx {
    addr: std::net::SocketAddr,
    pid: u32,
    client_threads: usize,
    c10k: PathBuf,
    single_process: bool,
    /// The server's `--locking`, for a ledger cell: whether the checker's findings are the
    /// race it was started to show (`none`) or a broken strategy.
    locking: Option<String>,
}

fn config(ctx: &Ctx, scenario: Scenario, duration: f64, timeout: f64) -> LoadConfig {
    let mut c = LoadConfig::new(ctx.addr, scenario);
    c.duration = Duration::from_secs_f64(duration);
    c.timeout = Duration::from_secs_f64(timeout.max(duration));
    c.client_threads = ctx.client_threads;
    c.progress = false;
    c.worker_program = Some(ctx.c10k.clone());
    c
}

fn warm_up(ctx: &Ctx, secs: f64) {
    let scenario = Scenario::Plaintext(PlaintextConfig {
        connections: 8,
        requests: None,
        pipeline: 1,
    });
    let _ = c10k_load::run(&config(ctx, scenario, secs, secs + 10.0));
}

/// Runs `action` once, with the CPU both sides used meanwhile, as percent of one core
/// (`server_cpu_pct`, `client_cpu_pct`): what tells a server-bound run from a client-bound one.
fn run_action(action: &Action, ctx: &Ctx, repeat: usize) -> Sample {
    let (server0, client0, t0) = (procfs::tree_cpu_secs(ctx.pid), procfs::self_cpu_secs(), Instant::now());
    let mut sample = run_action_once(action, ctx, repeat);
    let wall = t0.elapsed().as_secs_f64().max(1e-3);
    sample.metrics.insert("server_cpu_pct".into(), (procfs::tree_cpu_secs(ctx.pid) - server0) / wall * 100.0);
    sample.metrics.insert("client_cpu_pct".into(), (procfs::self_cpu_secs() - client0) / wall * 100.0);
    sample
}

fn run_action_once(action: &Action, ctx: &Ctx, repeat: usize) -> Sample {
    match action {
        &Action::Ledger { connections, ops, accounts, timeout } => {
            let args = CheckArgs {
                target: ctx.addr.to_string(),
                connections,
                ops,
                accounts,
                balance: LEDGER_BALANCE,
                timeout,
                seed: Some(LEDGER_SEED + repeat as u64),
            };
            ledger_sample(c10k_load::ledger::run(&args), ctx.locking.as_deref() == Some("none"))
        }
        Action::Load {
            scenario,
            duration,
            timeout,
        } => {
            let outcome = c10k_load::run(&config(ctx, scenario.clone(), *duration, *timeout));
            sample_of(outcome, load_metrics)
        }
        Action::Capacity {
            connections,
            via,
            timeout,
            presence,
        } => {
            let sampler = Sampler::start(ctx.pid, Duration::from_millis(500));
            let scenario = Scenario::IdleCapacity(IdleConfig {
                connections: *connections,
                via: *via,
                server_pid: ctx.single_process.then_some(ctx.pid),
                per_process: None,
                // Bind-before-connect makes the kernel search a free port on the source
                // address; with 20,000 taken that search dominates the run (minutes of
                // system time at 100,000). 2,000 per address keeps it short.
                source_addrs: (*connections > 20_000).then(|| connections.div_ceil(2_000).min(254)),
                room: None,
                open_concurrency: 512,
                drain_secs: 30.0,
                presence: *presence,
            });
            let outcome = c10k_load::run(&config(ctx, scenario, timeout * 0.8, *timeout));
            let peaks = sampler.finish();
            sample_of(outcome, |r, m| {
                if let Some(c) = &r.capacity {
                    m.insert("asked".into(), c.asked as f64);
                    m.insert("held".into(), c.held as f64);
                    m.insert("failed".into(), c.failed as f64);
                    m.insert("open_secs".into(), c.open_secs);
                    m.insert("broadcast_secs".into(), c.broadcast_secs);
                    m.insert("client_processes".into(), c.processes as f64);
                    if let Some(b) = c.rss_per_connection_bytes {
                        m.insert("vmrss_per_conn_bytes".into(), b);
                    }
                }
                if let Some(d) = &r.delivery {
                    m.insert("delivered".into(), d.delivered as f64);
                    m.insert("broadcast_p99_us".into(), d.latency.p99_us as f64);
                }
                let held = m.get("held").copied().unwrap_or(0.0);
                memory_metrics(&peaks, held, m);
            })
        }
        Action::IdleKeepAlive { connections } => {
            let sampler = Sampler::start(ctx.pid, Duration::from_millis(500));
            let mut sample = Sample::default();
            // Long enough to open 10,000 on a slow server; a server that stopped
            // answering (Apache prefork past its processes) costs the whole wait.
            let within = Duration::from_secs_f64(10.0 + *connections as f64 / 1000.0);
            match Holder::open(ctx.addr, *connections, within) {
                Ok(mut holder) => {
                    std::thread::sleep(Duration::from_millis(500));
                    let opened = holder.held();
                    let held = holder.probe(Duration::from_secs(5));
                    let peaks = sampler.finish();
                    let m = &mut sample.metrics;
                    m.insert("asked".into(), *connections as f64);
                    m.insert("answered_first".into(), opened as f64);
                    m.insert("held".into(), held as f64);
                    m.insert("open_secs".into(), holder.open_secs);
                    memory_metrics(&peaks, held as f64, m);
                    sample.errors = holder.errors.clone();
                    drop(holder);
                }
                Err(e) => {
                    sampler.finish();
                    sample.problems.push(e);
                }
            }
            sample
        }
        Action::Wakeup { idle, duration } => {
            let holder = if *idle > 0 {
                match Holder::open(ctx.addr, *idle, Duration::from_secs(30)) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        return Sample {
                            problems: vec![e],
                            ..Sample::default()
                        }
                    }
                }
            } else {
                None
            };
            let held = holder.as_ref().map_or(0, Holder::held);
            let scenario = Scenario::Plaintext(PlaintextConfig {
                connections: 1,
                requests: None,
                pipeline: 1,
            });
            let outcome = c10k_load::run(&config(ctx, scenario, *duration, duration + 30.0));
            let mut sample = sample_of(outcome, load_metrics);
            sample.metrics.insert("idle_held".into(), held as f64);
            if held < *idle {
                sample
                    .problems
                    .push(format!("only {held} of {idle} idle connections were held"));
            }
            if let Some(h) = &holder {
                for (k, v) in &h.errors {
                    *sample.errors.entry(format!("idle {k}")).or_insert(0) += v;
                }
            }
            drop(holder);
            sample
        }
    }
}

/// A sample from a load run: its metrics, problems and errors, or the error that stopped it.
fn sample_of(
    outcome: Result<Report, c10k_load::LoadError>,
    metrics: impl FnOnce(&Report, &mut BTreeMap<String, f64>),
) -> Sample {
    match outcome {
        Ok(report) => {
            let mut s = Sample::default();
            metrics(&report, &mut s.metrics);
            s.problems = report.problems.clone();
            s.errors = report.errors.clone();
            s.report = Some(report);
            s
        }
        Err(e) => Sample {
            problems: vec![format!("the load generator could not run: {e}")],
            ..Sample::default()
        },
    }
}

/// Cents each ledger account starts with: ledger-check's default, John's $25 of the talk.
const LEDGER_BALANCE: i64 = 2500;

/// Violations quoted in a ledger sample's problems; the `violations` metric counts them all.
const VIOLATIONS_QUOTED: usize = 3;

/// A sample from one ledger-check: operations per second, latency, what was answered, and
/// what the checker found. Violations are the finding of a `racy` server (`--locking none`,
/// kept to show the checker sees the race), and a problem of any other: that strategy lost
/// or created money.
fn ledger_sample(outcome: Result<CheckReport, c10k_load::LoadError>, racy: bool) -> Sample {
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            return Sample {
                problems: vec![format!("the load generator could not run: ledger-check: {e}")],
                ..Sample::default()
            }
        }
    };
    let mut s = Sample::default();
    let [accepted, insufficient, unavailable, unanswered] = report.counts.map(|n| n as f64);
    let m = &mut s.metrics;
    m.insert("ops_per_s".into(), report.per_second);
    m.insert("operations".into(), report.operations as f64);
    m.insert("p50_us".into(), report.p50_p99.0.as_secs_f64() * 1e6);
    m.insert("p99_us".into(), report.p50_p99.1.as_secs_f64() * 1e6);
    m.insert("elapsed_secs".into(), report.elapsed.as_secs_f64());
    m.insert("accepted".into(), accepted);
    m.insert("insufficient".into(), insufficient);
    m.insert("unavailable".into(), unavailable);
    m.insert("unanswered".into(), unanswered);
    m.insert("race_won".into(), report.race_won as f64);
    m.insert("violations".into(), report.violations.len() as f64);
    if unavailable > 0.0 {
        s.errors.insert("unavailable (503 or unexpected)".into(), unavailable as u64);
    }
    if unanswered > 0.0 {
        s.errors.insert("unanswered".into(), unanswered as u64);
        s.problems.push(format!("{unanswered} operations were not answered within the run's timeout"));
    }
    if !racy && !report.violations.is_empty() {
        let quoted: Vec<&str> = report.violations.iter().take(VIOLATIONS_QUOTED).map(String::as_str).collect();
        s.problems.push(format!(
            "the checker found {} violations under --locking {}: {}",
            report.violations.len(),
            report.locking,
            quoted.join("; ")
        ));
    }
    s
}

/// Flat metrics of a load report, named by what the tables show.
fn load_metrics(r: &Report, m: &mut BTreeMap<String, f64>) {
    for (i, class) in r.requests.iter().enumerate() {
        // The first class is the one the scenario is about (plaintext, healthz); others prefixed.
        let prefix = if i == 0 {
            String::new()
        } else {
            format!("{}_", class.name)
        };
        m.insert(format!("{prefix}rps"), class.per_second);
        m.insert(format!("{prefix}requests"), class.requests as f64);
        m.insert(format!("{prefix}errors"), class.errors as f64);
        m.insert(format!("{prefix}p50_us"), class.latency.p50_us as f64);
        m.insert(format!("{prefix}p99_us"), class.latency.p99_us as f64);
        m.insert(format!("{prefix}p999_us"), class.latency.p999_us as f64);
        m.insert(format!("{prefix}max_us"), class.latency.max_us as f64);
        m.insert(format!("{prefix}mean_us"), class.latency.mean_us);
    }
    if let Some(d) = &r.delivery {
        m.insert("deliveries_per_s".into(), d.per_second);
        m.insert("delivered".into(), d.delivered as f64);
        m.insert("expected".into(), d.expected as f64);
        m.insert("misses".into(), d.misses as f64);
        m.insert("subscribed".into(), d.subscribed as f64);
        m.insert("messages".into(), d.messages as f64);
        m.insert("p50_us".into(), d.latency.p50_us as f64);
        m.insert("p99_us".into(), d.latency.p99_us as f64);
        m.insert("max_us".into(), d.latency.max_us as f64);
    }
}

/// Memory per held connection from the sampler's peaks.
fn memory_metrics(p: &Peaks, held: f64, m: &mut BTreeMap<String, f64>) {
    m.insert("threads_peak".into(), p.peak.threads as f64);
    m.insert("processes_peak".into(), p.peak.processes as f64);
    m.insert("pss_before_kib".into(), p.before.pss_kib as f64);
    m.insert("pss_peak_kib".into(), p.peak.pss_kib as f64);
    m.insert(
        "kernel_delta_kib".into(),
        p.kernel_peak_kib.saturating_sub(p.kernel_before_kib) as f64,
    );
    m.insert(
        "mem_available_drop_kib".into(),
        p.available_before_kib.saturating_sub(p.available_min_kib) as f64,
    );
    if held > 0.0 {
        let per = |kib: u64| kib as f64 * 1024.0 / held;
        m.insert(
            "pss_per_conn_bytes".into(),
            per(p.peak.pss_kib.saturating_sub(p.before.pss_kib)),
        );
        // prefork's processes exist before their connections: its cost is the whole tree.
        m.insert("pss_total_per_conn_bytes".into(), per(p.peak.pss_kib));
        m.insert(
            "rss_per_conn_bytes".into(),
            per(p.peak.rss_kib.saturating_sub(p.before.rss_kib)),
        );
        m.insert(
            "kernel_per_conn_bytes".into(),
            per(p.kernel_peak_kib.saturating_sub(p.kernel_before_kib)),
        );
        m.insert(
            "total_per_conn_bytes".into(),
            per(p.available_before_kib.saturating_sub(p.available_min_kib)),
        );
    }
}

/// One extra, unmeasured run of `action` with the server's system calls counted (perf, else
/// strace; see [`crate::syscalls`]); a count that cannot be made says why instead.
fn count_syscalls(action: &Action, ctx: &Ctx, server: &Server) -> SyscallCount {
    let pids = procfs::tree(server.root_pid());
    let counter = Counter::find();
    let mut fell_back = None;
    let running = match syscalls::start(&counter, &pids) {
        Ok(r) => Ok(r),
        // perf present but unable to attach: strace may still attach.
        Err(perf) if matches!(counter, Counter::Perf(_)) => match Counter::find_strace() {
            Some(strace) => {
                fell_back = Some(format!("perf could not count ({perf}), so strace did"));
                syscalls::start(&strace, &pids).map_err(|e| format!("{perf}; then {e}"))
            }
            None => Err(format!("{perf}; strace missing")),
        },
        Err(e) => Err(e),
    };
    let running = match running {
        Ok(r) => r,
        Err(e) => return SyscallCount::not_measured(e),
    };
    let sample = run_action(action, ctx, 0);
    let metric = |k: &str| sample.metrics.get(k).copied().unwrap_or(0.0);
    let mut count = running.finish(metric("requests"), metric("rps"));
    count.problems.extend(fell_back);
    count.problems.extend(sample.problems);
    count
}

/// One extra, unmeasured run of `action` with `perf record` on the server's processes;
/// returns the hottest symbols.
fn profile(action: &Action, ctx: &Ctx, server: &Server, repeat: usize) -> Result<Vec<String>, String> {
    let perf = ["/usr/bin/perf", "/usr/local/bin/perf"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("perf is not installed (apt-get install linux-perf)")?;
    let pids: Vec<String> = procfs::tree(server.root_pid()).iter().map(u32::to_string).collect();
    let data = std::env::temp_dir().join(format!("c10k-bench-perf-{}.data", std::process::id()));
    let secs = match action {
        Action::Load { duration, .. } | Action::Wakeup { duration, .. } => duration.min(10.0),
        _ => 10.0,
    };
    let mut rec = Command::new(perf)
        .args(["record", "-F", "499", "-g", "-o"])
        .arg(&data)
        .args(["-p", &pids.join(","), "--", "sleep", &format!("{secs}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start perf record: {e}"))?;
    let _ = run_action(action, ctx, repeat);
    let _ = rec.wait();
    let report = |sort: &str, limit: &str, take: usize| -> Result<Vec<String>, String> {
        let out = Command::new(perf)
            .args(["report", "--stdio", "--no-children", "--sort", sort, "--percent-limit", limit, "-g", "none", "-q", "-i"])
            .arg(&data)
            .output()
            .map_err(|e| format!("cannot run perf report: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .take(take)
            .map(|l| l.split_whitespace().filter(|w| *w != "-").collect::<Vec<_>>().join(" "))
            .collect())
    };
    // Where the time goes by object (kernel, c10k, libc), then the hottest symbols.
    let dsos = report("dso", "1", 6)?;
    let symbols = report("dso,symbol", "1.5", 12)?;
    let _ = fs::remove_file(&data);
    if symbols.is_empty() {
        return Err("perf report gave nothing (was perf allowed to attach? check /proc/sys/kernel/perf_event_paranoid)".into());
    }
    let mut lines = vec![format!("by object: {}", dsos.join(", "))];
    lines.extend(symbols);
    Ok(lines)
}
