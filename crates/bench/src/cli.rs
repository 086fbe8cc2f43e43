//! `c10k bench`'s flags ([`BenchArgs`]) and the run ([`run`]): pick the cells, run them
//! suite by suite (saving `results.json` after each suite, so an interrupted run keeps
//! what it measured), then write RESULTS.md and the plots from everything recorded.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use crate::machine::Machine;
use crate::matrix::{self, Cell, Scale, SUITE_NAMES};
use crate::results::{CellResult, Results, SuiteRun};
use crate::runner::{self, RunOptions};
use crate::server::Programs;
use crate::{procfs, BenchError};

/// `c10k bench`: run the benchmark matrix and write bench/RESULTS.md, plots and results.json.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Suites to run, comma-separated (default: all): plaintext, wakeup, dbstall, ledger, cpu,
    /// fanout, ws, idle, capacity, c100k, presence, c1m.
    #[arg(long, value_delimiter = ',', value_name = "SUITE[,SUITE]")]
    pub only: Vec<String>,

    /// Models to run, comma-separated (default: all): async, threads, pool, prefork,
    /// reactor, green, uring. Peers are chosen with --peers.
    #[arg(long, value_delimiter = ',', value_name = "MODEL[,MODEL]")]
    pub models: Vec<String>,

    /// Peers to run, comma-separated (default: all; `none` for none): nginx,
    /// apache-prefork, apache-event, tornado, gevent, hyper, raw.
    #[arg(long, value_delimiter = ',', value_name = "PEER[,PEER]")]
    pub peers: Vec<String>,

    /// A tiny smoke run: small sizes, short runs, one repeat (seconds, not minutes).
    #[arg(long)]
    pub quick: bool,

    /// Measured repeats of each load cell (default 3; --quick: 1).
    #[arg(long, value_name = "N")]
    pub repeats: Option<usize>,

    /// Seconds of each measured repeat (default 5; --quick: 0.5).
    #[arg(long, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    pub duration: Option<f64>,

    /// Seconds of warm-up before a load cell's repeats (default 1; --quick: 0.2).
    #[arg(long, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    pub warmup: Option<f64>,

    /// Where RESULTS.md, results.json and plots/ go.
    #[arg(long, default_value = "bench", value_name = "DIR")]
    pub out: PathBuf,

    /// The peer (or model) that ratios are given against.
    #[arg(long, default_value = "nginx", value_name = "NAME")]
    pub baseline: String,

    /// Run nothing: write RESULTS.md and the plots again from results.json.
    #[arg(long)]
    pub report_only: bool,

    /// Print the cells that would run, with their servers, and exit.
    #[arg(long)]
    pub list: bool,

    /// Do not pin server and client to different CPUs.
    #[arg(long)]
    pub no_pin: bool,

    /// Skip peers that are not installed instead of letting run.sh install them (and do
    /// not install wrk either: the plaintext cells then say it is missing).
    #[arg(long)]
    pub no_install: bool,

    /// Profile the cells behind the goals with perf (an extra, unmeasured run each).
    #[arg(long)]
    pub perf: bool,

    /// Do not raise kernel.pid_max and vm.max_map_count for the thread- and process-count
    /// cells (they are raised only as root, and restored afterwards).
    #[arg(long)]
    pub no_sysctl: bool,

    /// The MySQL or MariaDB server of the dbstall suite's database cells; each cell makes
    /// a scratch database there (CREATE DATABASE) and drops it after. Unreachable: those
    /// cells are recorded as not measured, with the reason.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/test", value_name = "URL")]
    pub mysql: String,

    /// The PostgreSQL server of the dbstall suite's database cells; each cell makes a
    /// scratch schema there (CREATE SCHEMA) and drops it after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test", value_name = "URL")]
    pub postgres: String,
}

impl BenchArgs {
    fn scale(&self) -> Scale {
        Scale {
            quick: self.quick,
            duration: self.duration.unwrap_or(if self.quick { 0.5 } else { 5.0 }),
            repeats: self.repeats.unwrap_or(if self.quick { 1 } else { 3 }).max(1),
        }
    }

    /// The cells these flags select, in running order.
    pub fn cells(&self) -> Result<Vec<Cell>, BenchError> {
        if self.repeats == Some(0) {
            return Err(BenchError::Usage("--repeats 0 would measure nothing; give at least 1".into()));
        }
        if self.duration == Some(0.0) {
            return Err(BenchError::Usage("--duration 0 would measure nothing; give e.g. 5s".into()));
        }
        for s in &self.only {
            if !SUITE_NAMES.contains(&s.as_str()) {
                return Err(BenchError::Usage(format!(
                    "unknown suite {s:?}; choose from: {}",
                    SUITE_NAMES.join(", ")
                )));
            }
        }
        for m in &self.models {
            if !c10k_models_names().contains(&m.as_str()) {
                return Err(BenchError::Usage(format!(
                    "unknown model {m:?}; choose from: {}",
                    c10k_models_names().join(", ")
                )));
            }
        }
        let all = matrix::suites(self.scale());
        let peers: Vec<&str> = {
            let mut names: Vec<&str> = all.iter().filter(|c| c.subject.is_peer()).map(|c| c.subject.name()).collect();
            names.sort_unstable();
            names.dedup();
            names
        };
        for p in &self.peers {
            if p != "none" && !peers.contains(&p.as_str()) {
                return Err(BenchError::Usage(format!(
                    "unknown peer {p:?}; choose from: {}, or none",
                    peers.join(", ")
                )));
            }
        }
        let mut out = Vec::new();
        for suite in SUITE_NAMES {
            if !self.only.is_empty() && !self.only.iter().any(|s| s == suite) {
                continue;
            }
            for cell in all.iter().filter(|c| c.suite == *suite) {
                let keep = if cell.subject.is_peer() {
                    self.peers.is_empty() || self.peers.iter().any(|p| p == cell.subject.name())
                } else {
                    self.models.is_empty() || self.models.iter().any(|m| m == cell.subject.name())
                };
                if keep {
                    out.push(cell.clone());
                }
            }
        }
        Ok(out)
    }
}

fn c10k_models_names() -> &'static [&'static str] {
    &["async", "threads", "pool", "prefork", "reactor", "green", "uring"]
}

/// Runs `c10k bench` with these flags.
pub fn run(args: BenchArgs) -> ExitCode {
    match try_run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("c10k bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn try_run(args: &BenchArgs) -> Result<(), BenchError> {
    let cells = args.cells()?;
    let mut programs = Programs::find()?;
    let json_path = args.out.join("results.json");
    if args.list {
        for c in &cells {
            println!("{:<10} {:<28} {}", c.suite, c.id, c.subject.describe());
        }
        return Ok(());
    }
    if args.report_only && !json_path.exists() {
        return Err(BenchError::Usage(format!(
            "--report-only writes the report from {}, which does not exist; run c10k bench without \
             --report-only first (or give --out the directory that holds it)",
            json_path.display()
        )));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", args.out.display())))?;
    let mut results = Results::load(&json_path)?;
    if !args.report_only {
        if cells.is_empty() {
            return Err(BenchError::Usage("no cell matches --only/--models/--peers".into()));
        }
        if !programs.run_sh.exists() && cells.iter().any(|c| c.subject.is_peer()) {
            eprintln!(
                "c10k bench: {} not found; peer cells will be skipped",
                programs.run_sh.display()
            );
        }
        // wrk is installed like the peers' packages, unless told not to install anything.
        if programs.wrk.is_err() && cells.iter().any(|c| c.wrk) {
            programs.wrk = if args.no_install {
                Err(format!("{} (not installed by the bench: --no-install)", crate::wrk::NOT_INSTALLED))
            } else {
                crate::wrk::install(&programs.run_sh)
            };
            if let Err(e) = &programs.wrk {
                eprintln!("c10k bench: {e}; the plaintext cells will say so");
            }
        }
        let options = RunOptions {
            warmup: args.warmup.unwrap_or(if args.quick { 0.2 } else { 1.0 }),
            no_pin: args.no_pin,
            install_peers: !args.no_install,
            perf: args.perf,
            sysctl: !args.no_sysctl && is_root(),
            mysql: args.mysql.clone(),
            postgres: args.postgres.clone(),
        };
        let ports = runner::PortRange::widen(options.sysctl);
        let command = command_line();
        let started = Instant::now();
        let total = cells.len();
        let mut done = 0;
        for suite in SUITE_NAMES {
            let suite_cells: Vec<&Cell> = cells.iter().filter(|c| c.suite == *suite).collect();
            if suite_cells.is_empty() {
                continue;
            }
            let mut machine = Machine::describe(Some(&programs.run_sh), programs.taskset.is_some());
            machine.raised.extend(ports.note.clone());
            if options.sysctl {
                machine.raised.push(
                "kernel.pid_max and vm.max_map_count are raised (as root) for the thread- and process-count cells only; \
                 each such cell's commands say so"
                    .to_string(),
                );
            }
            let mut run = SuiteRun {
                suite: suite.to_string(),
                quick: args.quick,
                machine: Machine::default(),
                command: command.clone(),
                cells: Vec::new(),
            };
            for cell in suite_cells {
                done += 1;
                let result = match guard_ladder(cell, &run.cells, &results) {
                    Some(reason) => skipped(cell, reason),
                    None => {
                        eprintln!(
                            "c10k bench: [{done}/{total}, {:.0} s] {} {} (load average {:.2}) ...",
                            started.elapsed().as_secs_f64(),
                            cell.suite,
                            cell.id,
                            procfs::loadavg().unwrap_or(0.0)
                        );
                        runner::run_cell(cell, &programs, &options)
                    }
                };
                eprintln!("c10k bench:     {}", crate::report::one_line(&result));
                run.cells.push(result);
            }
            machine.loadavg_end = procfs::loadavg();
            run.machine = machine;
            results.merge(run);
            results.save(&json_path)?;
        }
        eprintln!(
            "c10k bench: {} cells in {:.0} s; raw results in {}",
            total,
            started.elapsed().as_secs_f64(),
            json_path.display()
        );
    }
    let written = crate::report::write_all(&results, &args.out, &args.baseline)?;
    for path in written {
        eprintln!("c10k bench: wrote {}", path.display());
    }
    Ok(())
}

fn skipped(cell: &Cell, reason: String) -> CellResult {
    CellResult {
        cell: cell.clone(),
        server_command: None,
        load_command: None,
        server_cpus: None,
        client_cpus: None,
        skipped: Some(reason),
        samples: Vec::new(),
        notes: Vec::new(),
        profile: Vec::new(),
        loadavg: procfs::loadavg(),
        started_unix_ms: 0,
        wrk: None,
        database: None,
        syscalls: None,
    }
}

/// The c1m ladder stops after a step that held less than 90% of what it asked, and skips a step
/// whose projected memory (from the step before, or from c100k) would not fit in 70% of
/// what is available now.
fn guard_ladder(cell: &Cell, earlier: &[CellResult], results: &Results) -> Option<String> {
    if cell.suite != "c1m" {
        return None;
    }
    let previous = earlier.iter().rev().find(|c| c.ran() && c.cell.series == cell.series);
    if let Some(p) = previous {
        let asked = p.median("asked").unwrap_or(0.0);
        let held = p.median("held").unwrap_or(0.0);
        // A few refusals may be one worker at its cap (the hash that spreads connections over
        // the workers is not perfectly even); only a step that lost a tenth says the server
        // itself is at its end.
        if held < asked * 0.9 {
            return Some(format!(
                "the step before ({}) held {held:.0} of {asked:.0}: the ladder stops there",
                p.cell.id
            ));
        }
    }
    let per_conn = previous.and_then(|p| p.median("total_per_conn_bytes")).or_else(|| {
        results
            .cells("c100k")
            .iter()
            .find(|c| c.cell.series == cell.series)
            .and_then(|c| c.median("total_per_conn_bytes"))
    })?;
    let k = cell.x.unwrap_or(0.0);
    let need_kib = per_conn * k / 1024.0;
    let avail = procfs::mem_available_kib().unwrap_or(0) as f64;
    (need_kib > avail * 0.7).then(|| {
        format!(
            "{k:.0} connections at {per_conn:.0} bytes each (the whole machine's cost per connection measured one step before) \
             would need {:.1} GiB; only {:.1} GiB is available, and the bench keeps 30% free",
            need_kib / 1048576.0,
            avail / 1048576.0
        )
    })
}

/// Whether the bench runs as root (it changes sysctls and installs packages only then).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("c10k {}", args.join(" "))
}
