//! The claims of the talk and the project's goals, each turned into numbers from the
//! results and a [`Verdict`]. The rules are written out here, in code, so that a verdict
//! cannot drift from the numbers beside it: where a cell is missing, the row says so.
//! Every threshold is a named constant beside the rule that uses it, and the text that
//! states the threshold prints the same constant.
//!
//! Layout: [`verdict`] (the outcome as data, and its Markdown), `talk` (the talk's claims),
//! `plaintext`, `delivery`, `memory` and `uring` (one function per goal, with its tests), `limits`
//! (what limits a cell: which side ran out of CPU, the perf profile).

mod delivery;
mod limits;
mod memory;
mod plaintext;
mod talk;
mod uring;
pub mod verdict;

#[cfg(test)]
mod fixture;

pub use talk::all;
pub use verdict::{Outcome, Verdict};

use crate::results::{CellResult, Results};

/// One row of the claims table.
pub struct Claim {
    /// The claim, quoted or paraphrased.
    pub claim: String,
    /// The numbers.
    pub measured: String,
    /// One verdict per part of the claim the numbers decide.
    pub verdicts: Vec<Verdict>,
    /// Numbers beside the verdicts that decide nothing by themselves.
    pub remarks: Vec<String>,
    /// The bench command that reproduces it.
    pub reproduce: String,
}

impl Claim {
    /// A claim none of whose cells ran.
    fn not_measured(claim: String, suites: &str, reproduce: String) -> Claim {
        Claim {
            claim,
            measured: not_measured(suites),
            verdicts: vec![Verdict::new(Outcome::NotMeasured)],
            remarks: Vec::new(),
            reproduce,
        }
    }

    /// The verdict column, in Markdown.
    pub fn verdict_markdown(&self) -> String {
        verdict::markdown(&self.verdicts, &self.remarks)
    }
}

/// One row of the goals table.
pub struct Goal {
    /// The goal.
    pub goal: String,
    /// The numbers.
    pub measured: String,
    /// Met, missed, not measured.
    pub verdict: Verdict,
    /// What limits it (measured), when missed.
    pub limits: String,
}

impl Goal {
    /// A goal none of whose cells ran.
    fn not_measured(goal: String, suites: &str) -> Goal {
        Goal {
            goal,
            measured: not_measured(suites),
            verdict: Verdict::new(Outcome::NotMeasured),
            limits: String::new(),
        }
    }
}

/// The goals, each met or missed.
pub fn goals(r: &Results, baseline: &str) -> Vec<Goal> {
    vec![
        plaintext::plaintext_goal(r, baseline),
        plaintext::generators_agree(r),
        delivery::fanout_goal(r),
        delivery::ws_goal(r),
        memory::c100k_goal(r),
        uring::uring_syscalls_goal(r),
        uring::uring_rps_goal(r),
        uring::uring_idle_goal(r),
    ]
}

/// The median of `metric` in the cell `id` of `suite`, if it ran.
fn m(r: &Results, suite: &str, id: &str, metric: &str) -> Option<f64> {
    r.cell(suite, id)?.median(metric)
}

/// The cell of `series` in `suites` that held the most, with that number.
fn most_held<'a>(r: &'a Results, suites: &[&str], series: &str) -> Option<(&'a CellResult, f64)> {
    suites
        .iter()
        .flat_map(|s| r.cells(s))
        .filter(|c| c.cell.series == series)
        .filter_map(|c| Some((c, c.median("held")?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn not_measured(what: &str) -> String {
    format!("not measured: run {what}")
}
