//! `c10k load`: the load generator that puts numbers on the claims of the C10K talk.
//!
//! A run is one [`Scenario`] against one c10k server on this machine, bounded in time and
//! count, and gives a [`Report`] (serde-serialisable; `--json` prints it). The scenarios:
//! keep-alive `plaintext` throughput (one request in flight per connection, or pipelined
//! batches), message fan-out to long-poll / WebSocket / SSE
//! subscribers with exactly-once, in-order verification, `idle-capacity` (how many idle
//! subscribers the server holds, at what memory), `db-stall` and `cpu` (what a slow store
//! or a CPU-bound route does to unrelated requests). [`ledger`] is `c10k ledger-check`, the
//! bank's race checker.
//!
//! It talks to the server only over the network, with a small hand-written HTTP/1.1 and
//! WebSocket client on tokio, and only to loopback addresses
//! (127.0.0.0/8, ::1): [`run`] refuses any other target.
//!
//! Library use (what `c10k bench` does):
//!
//! ```no_run
//! use std::time::Duration;
//! use c10k_load::{run, LoadConfig, Scenario, scenarios::PlaintextConfig};
//!
//! let mut config = LoadConfig::new("127.0.0.1:8888".parse().unwrap(),
//!                                  Scenario::Plaintext(PlaintextConfig::default()));
//! config.duration = Duration::from_secs(5);
//! let report = run(&config).expect("the run could not start");
//! println!("{} req/s", report.requests[0].per_second);
//! assert!(report.problems.is_empty(), "{:?}", report.problems);
//! ```
#![deny(missing_docs)]
// Only `sys.rs` (rlimit) needs unsafe; it says why at each block.
#![deny(unsafe_code)]

pub mod cli;
mod client;
mod error;
pub mod ledger;
mod progress;
pub mod queue;
pub mod report;
pub mod scenarios;
mod sys;
pub mod target;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::LoadError;
pub use report::Report;
pub use scenarios::Scenario;
/// Shared with the server binary (`c10k serve` raises its limit the same way).

/// Everything one run needs: where, what, and its bounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadConfig {
    /// The server. Must be a loopback address (127.0.0.0/8 or ::1).
    pub target: SocketAddr,
    /// What to do, with its own parameters.
    pub scenario: Scenario,
    /// How long the measured phase may last (request loops stop then; posters stop
    /// posting then even if they have messages left).
    pub duration: Duration,
    /// Hard limit on the whole run, setup and draining included: every wait is cut there
    /// and the report says `timed_out`.
    pub timeout: Duration,
    /// Client runtime threads: 1 runs a current-thread runtime, 0 one thread per core.
    pub client_threads: usize,
    /// Draw a progress bar on standard error (drawn only if it is a terminal).
    pub progress: bool,
    /// The program re-executed as `PROGRAM load --worker` when a scenario needs more
    /// client processes (idle-capacity past the open-files limit). `None`: this process's
    /// own executable, which is right for the `c10k` binary and wrong for anything else
    /// (a test binary, `cargo bench`): such callers must name the `c10k` binary.
    pub worker_program: Option<PathBuf>,
}

impl LoadConfig {
    /// A run of `scenario` against `target` with the default bounds: 10 s measured, a hard
    /// limit of 60 s more, one client thread per core, no progress bar.
    pub fn new(target: SocketAddr, scenario: Scenario) -> LoadConfig {
        LoadConfig {
            target,
            scenario,
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(70),
            client_threads: 0,
            progress: false,
            worker_program: None,
        }
    }
}

/// Runs one scenario to completion and returns its report.
///
/// Blocks the calling thread: it builds its own tokio runtime (so do not call it from
/// inside one). An `Err` means the run could not be carried out at all (bad target,
/// server unreachable, workers that would not start); what went wrong *during* a run
/// (errors, misses, duplicates, a hard timeout) is in the report, and
/// [`Report::problems`] lists what makes its numbers untrustworthy.
pub fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    target::check_loopback(config.target.ip())?;
    if config.duration.is_zero() {
        return Err(LoadError::Config("--duration must be more than 0 seconds".into()));
    }
    if config.timeout < config.duration {
        return Err(LoadError::Config(format!(
            "--timeout ({:.1} s) must be at least --duration ({:.1} s)",
            config.timeout.as_secs_f64(),
            config.duration.as_secs_f64()
        )));
    }
    config.scenario.validate()?;
    c10k_sys::raise_open_files_limit();
    let runtime = build_runtime(config.client_threads)?;
    runtime.block_on(scenarios::run(config))
}

/// A runtime with `threads` workers (1: current-thread, 0: one per core).
pub(crate) fn build_runtime(threads: usize) -> Result<tokio::runtime::Runtime, LoadError> {
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    let built = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    };
    built.map_err(|e| LoadError::Setup(format!("cannot start the client runtime: {e}")))
}
