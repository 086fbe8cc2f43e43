//! `c10k bench`: runs the benchmark matrix — every concurrency model, poller, scenario and
//! size, plus the peers (nginx, Apache prefork and event, Tornado, gevent, hyper, the raw
//! epoll floor) — with c10k's own load generator, and writes what it found:
//! `bench/RESULTS.md` (the talk's claims with their verdicts, the goals, a table per suite
//! with ratios to a named baseline, the machine, and the exact command of every cell),
//! SVG plots in `bench/plots/`, and every raw number in `bench/results.json`, from which
//! the report can be written again (`--report-only`). The plaintext suite also runs wrk
//! against every server, so that the generator's own numbers are checked by another.
//!
//! Method: one fresh server per cell (`c10k serve --listen 127.0.0.1:0` on a fresh
//! database, or `bench/baselines/run.sh`), server and client pinned to different CPUs
//! with taskset where the machine allows, a warm-up, N repeats (3 by default), the median
//! and the whole range reported. Every run is bounded in count and time and loopback only.
//!
//! Layout: [`matrix`] (suites and cells), [`server`] (lifecycle, pinning), [`runner`]
//! (one cell), [`holder`] (idle keep-alive connections for any server), [`procfs`]
//! (memory and threads of a process tree), [`wrk`] (the second load generator, a
//! cross-check on plaintext), [`results`] (the JSON), [`report`] (Markdown), [`plots`]
//! (SVG), [`syscalls`] (the server's system calls per request, plaintext), [`cli`] (flags).
#![deny(missing_docs)]
// Only server.rs sends signals with libc::kill; it says why at the block.
#![deny(unsafe_code)]

pub mod cli;
pub mod holder;
pub mod machine;
pub mod matrix;
pub mod plots;
pub mod procfs;
pub mod report;
pub mod results;
pub mod runner;
pub mod server;
pub mod stats;
pub mod syscalls;
pub mod wrk;

/// Why the bench could not do what it was asked. What goes wrong inside a cell is not an
/// error: it is recorded in the cell (skipped, problems, notes).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// Files, programs or the machine are not as needed.
    #[error("{0}")]
    Setup(String),
    /// A server would not start.
    #[error("{0}")]
    Server(String),
}
