//! Results for the claims' and goals' tests: cells of the real matrix (full scale) with
//! the medians a test names, pinned like the bench pins them (server on CPU 0, client on 1),
//! on a machine with two CPUs.

use std::collections::BTreeMap;

use crate::machine::Machine;
use crate::matrix::{suites, Scale};
use crate::results::{CellResult, Results, Sample, SuiteRun, WrkRun};
use crate::syscalls::SyscallCount;

/// One cell as a test wants it to have run.
pub(super) struct Run {
    id: String,
    metrics: Vec<(String, f64)>,
    errors: BTreeMap<String, u64>,
    skipped: Option<String>,
    wrk: Option<WrkRun>,
    database: Option<String>,
    syscalls: Option<SyscallCount>,
}

/// The cell `id` with one repeat of these metrics.
pub(super) fn run(id: &str, metrics: &[(&str, f64)]) -> Run {
    Run {
        id: id.into(),
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        errors: BTreeMap::new(),
        skipped: None,
        wrk: None,
        database: None,
        syscalls: None,
    }
}

impl Run {
    /// wrk's run after the repeats, with these metrics.
    pub(super) fn wrk(mut self, metrics: &[(&str, f64)]) -> Run {
        let metrics = metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        self.wrk = Some(WrkRun { metrics, ..WrkRun::default() });
        self
    }

    /// wrk's run gave no figure, for this reason.
    pub(super) fn wrk_failed(mut self, problem: &str) -> Run {
        self.wrk = Some(WrkRun { problems: vec![problem.into()], ..WrkRun::default() });
        self
    }

    /// `n` errors of class `kind` in its repeat.
    pub(super) fn errors(mut self, kind: &str, n: u64) -> Run {
        self.errors.insert(kind.into(), n);
        self
    }

    /// Its store was on this database server (`MariaDB 10.11.19`).
    pub(super) fn on(mut self, database: &str) -> Run {
        self.database = Some(database.into());
        self
    }

    /// Its extra run made `total` system calls for `requests` requests, these the commonest.
    pub(super) fn syscalls(mut self, total: f64, requests: f64, by_name: &[(&str, f64)]) -> Run {
        self.syscalls = Some(SyscallCount {
            tool: "perf".into(),
            total,
            requests,
            by_name: by_name.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..SyscallCount::default()
        });
        self
    }

    /// It did not run, for this reason.
    pub(super) fn skipped(mut self, why: &str) -> Run {
        self.skipped = Some(why.into());
        self
    }
}

/// `suite` with these cells run, and no other suite.
pub(super) fn results(suite: &str, runs: Vec<Run>) -> Results {
    let mut r = Results::default();
    add(&mut r, suite, runs);
    r
}

/// Adds `suite` with these cells run to `r`.
pub(super) fn add(r: &mut Results, suite: &str, runs: Vec<Run>) {
    let matrix = suites(Scale { quick: false, duration: 5.0, repeats: 3 });
    let cells = runs
        .into_iter()
        .map(|run| {
            let cell = matrix
                .iter()
                .find(|c| c.suite == suite && c.id == run.id)
                .unwrap_or_else(|| panic!("no cell {suite}/{} in the matrix", run.id))
                .clone();
            let sample = Sample {
                metrics: run.metrics.into_iter().collect(),
                problems: Vec::new(),
                errors: run.errors,
                report: None,
            };
            CellResult {
                cell,
                server_command: None,
                load_command: None,
                server_cpus: Some("0".into()),
                client_cpus: Some("1".into()),
                samples: if run.skipped.is_some() { Vec::new() } else { vec![sample] },
                skipped: run.skipped,
                notes: Vec::new(),
                profile: Vec::new(),
                loadavg: None,
                started_unix_ms: 0,
                wrk: run.wrk,
                database: run.database,
                syscalls: run.syscalls,
            }
        })
        .collect();
    r.merge(SuiteRun {
        suite: suite.into(),
        quick: false,
        machine: Machine { cpus: 2, ..Machine::default() },
        command: String::new(),
        cells,
    });
}
