//! The raw results (`bench/results.json`): every cell's every repeat, with the load
//! generator's whole report, so that RESULTS.md and the plots can be written again from
//! them (`c10k bench --report-only`). A partial run merges into the file: a cell replaces
//! the cell of the same suite and id, everything else is kept.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::matrix::Cell;
use crate::stats;
use crate::syscalls::SyscallCount;
use crate::BenchError;

/// The version of this file's layout.
pub const FORMAT: u32 = 1;

/// Everything recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// [`FORMAT`].
    pub format: u32,
    /// Per suite.
    pub suites: BTreeMap<String, SuiteRun>,
}

/// One suite's latest results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteRun {
    /// The suite.
    pub suite: String,
    /// A `--quick` (smoke) run.
    pub quick: bool,
    /// The machine it last ran on.
    pub machine: Machine,
    /// The `c10k bench ...` command that last ran (part of) it.
    pub command: String,
    /// Cells, in matrix order.
    pub cells: Vec<CellResult>,
}

/// One cell: its definition, how it was run, and its repeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// The server's command line (temporary paths as `$TMP`).
    pub server_command: Option<String>,
    /// The equivalent `c10k load` command of one repeat.
    pub load_command: Option<String>,
    /// CPUs the server was pinned to (`None`: all).
    pub server_cpus: Option<String>,
    /// CPUs the client was pinned to (`None`: all).
    pub client_cpus: Option<String>,
    /// Why the cell did not run, if it did not.
    pub skipped: Option<String>,
    /// Measured repeats.
    pub samples: Vec<Sample>,
    /// Remarks (a workaround at start, a sysctl raised, ...).
    pub notes: Vec<String>,
    /// perf's hottest symbols in the server during an extra, unmeasured run (`--perf`).
    pub profile: Vec<String>,
    /// The 1-minute load average when the cell started.
    pub loadavg: Option<f64>,
    /// Wall-clock start, ms since the epoch.
    pub started_unix_ms: u64,
    /// wrk's run against the same server, for cells that cross-check with it (plaintext).
    #[serde(default)]
    pub wrk: Option<WrkRun>,
    /// The database server a cell's store was on, as it names itself (`MariaDB
    /// 10.11.19`, `PostgreSQL 15.20`), for the cells on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The server's system calls over one extra, unmeasured run (cells with
    /// [`Cell::syscalls`]): per request, and which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<SyscallCount>,
}

/// One run of wrk against a cell's server, after c10k load's repeats (see [`crate::wrk`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WrkRun {
    /// The exact command (or, when wrk is missing, the one that would have run).
    pub command: String,
    /// `rps`, `requests`, `secs`, `mean_us`, `max_us`, `p50_us`, `p75_us`, `p90_us`,
    /// `p99_us`, and `server_cpu_pct` / `client_cpu_pct` (percent of one core) meanwhile.
    pub metrics: BTreeMap<String, f64>,
    /// Socket errors by kind and responses that were not 2xx or 3xx, the non-zero ones.
    pub errors: BTreeMap<String, u64>,
    /// What makes the run untrustworthy, or why it did not run (wrk not installed).
    pub problems: Vec<String>,
    /// wrk's standard output, as it printed it.
    pub output: String,
}

impl WrkRun {
    /// A metric of the run.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied().filter(|v| v.is_finite())
    }
}

/// One repeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Flat metrics (`rps`, `p99_us`, `held`, `pss_per_conn_bytes`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// What makes this repeat's numbers untrustworthy.
    pub problems: Vec<String>,
    /// Errors by class.
    pub errors: BTreeMap<String, u64>,
    /// The load generator's whole report, when it ran.
    pub report: Option<c10k_load::Report>,
}

impl CellResult {
    /// The median of `metric` over the repeats that have it.
    pub fn median(&self, metric: &str) -> Option<f64> {
        stats::median(&self.values(metric))
    }

    /// (min, max) of `metric` over the repeats.
    pub fn range(&self, metric: &str) -> Option<(f64, f64)> {
        stats::range(&self.values(metric))
    }

    /// Every repeat's value of `metric`.
    pub fn values(&self, metric: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|s| s.metrics.get(metric).copied())
            .filter(|v| v.is_finite())
            .collect()
    }

    /// Every problem of every repeat, once each.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.samples.iter().flat_map(|s| &s.problems) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Whether it ran and has at least one repeat.
    pub fn ran(&self) -> bool {
        self.skipped.is_none() && !self.samples.is_empty()
    }
}

impl Results {
    /// Reads `path`, or an empty set if it does not exist.
    pub fn load(path: &Path) -> Result<Results, BenchError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                BenchError::Setup(format!(
                    "{} is not a results file this bench can read: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Results {
                format: FORMAT,
                suites: BTreeMap::new(),
            }),
            Err(e) => Err(BenchError::Setup(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes them to `path` (pretty JSON).
    pub fn save(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Setup(e.to_string()))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| BenchError::Setup(format!("cannot write {}: {e}", path.display())))
    }

    /// Merges a run of one suite in: a quick run replaces a full one (and the other way
    /// round) whole; otherwise cells replace the cells of the same id. When some earlier
    /// cells stay, the suite's command names both runs (`c10k bench ...; then c10k bench ...`).
    pub fn merge(&mut self, run: SuiteRun) {
        match self.suites.get_mut(&run.suite) {
            Some(old) if old.quick == run.quick => {
                let kept = old.cells.iter().any(|c| !run.cells.iter().any(|n| n.cell.id == c.cell.id));
                let command = if kept && !old.command.ends_with(&run.command) {
                    format!("{}; then {}", old.command, run.command)
                } else {
                    run.command.clone()
                };
                for cell in run.cells {
                    match old.cells.iter_mut().find(|c| c.cell.id == cell.cell.id) {
                        Some(slot) => *slot = cell,
                        None => old.cells.push(cell),
                    }
                }
                old.machine = run.machine;
                old.command = command;
            }
            _ => {
                self.suites.insert(run.suite.clone(), run);
            }
        }
    }

    /// A cell by suite and id, if it ran.
    pub fn cell(&self, suite: &str, id: &str) -> Option<&CellResult> {
        self.suites
            .get(suite)?
            .cells
            .iter()
            .find(|c| c.cell.id == id && c.ran())
    }

    /// The cells of a suite that ran.
    pub fn cells(&self, suite: &str) -> Vec<&CellResult> {
        self.suites
            .get(suite)
            .map(|s| s.cells.iter().filter(|c| c.ran()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{suites, Scale};

    fn run_of(command: &str, ids: &[&str]) -> SuiteRun {
        let matrix = suites(Scale { quick: false, duration: 5.0, repeats: 3 });
        let cells = ids
            .iter()
            .map(|id| {
                let cell = matrix.iter().find(|c| c.suite == "plaintext" && c.id == *id).expect("cell").clone();
                CellResult {
                    cell,
                    server_command: None,
                    load_command: None,
                    server_cpus: None,
                    client_cpus: None,
                    skipped: None,
                    samples: vec![Sample::default()],
                    notes: Vec::new(),
                    profile: Vec::new(),
                    loadavg: None,
                    started_unix_ms: 0,
                    wrk: None,
                    database: None,
                    syscalls: None,
                }
            })
            .collect();
        SuiteRun { suite: "plaintext".into(), quick: false, machine: Machine::default(), command: command.into(), cells }
    }

    #[test]
    fn a_partial_run_keeps_the_other_cells_and_names_both_commands() {
        let mut r = Results::default();
        r.merge(run_of("c10k bench", &["async", "nginx"]));
        r.merge(run_of("c10k bench --models uring,async", &["async", "uring"]));
        let s = &r.suites["plaintext"];
        let ids: Vec<&str> = s.cells.iter().map(|c| c.cell.id.as_str()).collect();
        assert_eq!(ids, ["async", "nginx", "uring"]);
        assert_eq!(s.command, "c10k bench; then c10k bench --models uring,async");
        // A run that replaces every cell is the suite's only command.
        r.merge(run_of("c10k bench --models uring,async,nginx", &["async", "nginx", "uring"]));
        assert_eq!(r.suites["plaintext"].command, "c10k bench --models uring,async,nginx");
    }
}
