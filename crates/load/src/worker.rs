//! Worker processes for idle-capacity: one process may hold only as many connections as
//! its open-files limit allows (20,000 here), so past that the generator re-executes
//! itself as `c10k load --worker` and gives each worker a share.
//!
//! The conversation, one JSON object per line:
//!
//! ```text
//! parent -> worker   stdin   WorkerJob                  what to open
//! worker -> parent   stdout  {"ready": {...}}           all opened (or failed)
//! parent -> worker   stdin   {"posted": {...}}          the broadcast went out
//! worker -> parent   stdout  {"done": {...}}            deliveries, latencies, errors
//! parent closes stdin: the worker exits (so a parent that dies takes its workers along)
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::client::feed::FeedSpec;
use crate::report::{ErrorLog, SharedHistogram};
use crate::scenarios::{Group, GroupResult, GroupSpec, Posted, Via};

/// What one worker opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerJob {
    pub target: SocketAddr,
    pub via: Via,
    pub room: String,
    pub after: u64,
    pub count: usize,
    pub sources: Vec<IpAddr>,
    pub first_index: usize,
    pub open_concurrency: usize,
    pub messages: u64,
    /// The worker gives up after this long, whatever happens.
    pub timeout_ms: u64,
    pub client_threads: usize,
    /// The subscribers are named members asking for presence events.
    #[serde(default)]
    pub presence: bool,
}

/// Parent to worker, after the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ToWorker {
    /// The broadcast went out: wait for it.
    Posted(Posted),
}

/// Worker to parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FromWorker {
    /// Every subscriber has subscribed or failed.
    Ready { subscribed: usize, failed: usize, errors: BTreeMap<String, u64> },
    /// Subscribers are done (errors: those since `ready`).
    Done { result: GroupResult, latency: Vec<(u64, u64)>, errors: BTreeMap<String, u64> },
    /// The worker could not do its job.
    Failed { error: String },
}

/// `c10k load --worker`: reads a job on stdin, reports on stdout (see the module doc).
pub fn main() -> ExitCode {
    // Lines from stdin arrive through a plain thread: tokio's stdin would hold up the
    // runtime's shutdown while it blocks in read.
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut rx = rx;
    let Some(first) = rx.blocking_recv() else {
        eprintln!("c10k load --worker: no job on standard input (this mode is for c10k load itself)");
        return ExitCode::from(2);
    };
    let job: WorkerJob = match serde_json::from_str(&first) {
        Ok(job) => job,
        Err(e) => return fail(format!("bad job line: {e}")),
    };
    if let Err(e) = crate::target::check_loopback(job.target.ip()) {
        return fail(e.to_string());
    }
    c10k_sys::raise_open_files_limit();
    let runtime = match crate::build_runtime(job.client_threads) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let outcome = runtime.block_on(work(job, rx));
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(error: String) -> ExitCode {
    send(&FromWorker::Failed { error: error.clone() });
    eprintln!("c10k load --worker: {error}");
    ExitCode::from(1)
}

fn send(message: &FromWorker) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, message);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

async fn work(job: WorkerJob, mut lines: mpsc::UnboundedReceiver<String>) -> Result<(), String> {
    let hard_at = Instant::now() + Duration::from_millis(job.timeout_ms);
    let errors = ErrorLog::default();
    let latency = SharedHistogram::new();
    let spec = GroupSpec {
        feed: FeedSpec { via: job.via, addr: job.target, room: job.room.clone(), after: job.after, presence: job.presence },
        count: job.count,
        sources: job.sources.clone(),
        first_index: job.first_index,
        open_concurrency: job.open_concurrency,
        messages: job.messages,
        hard_at,
    };
    let group = Group::open(spec, errors.clone(), latency.clone(), Arc::new(AtomicU64::new(0))).await;
    send(&FromWorker::Ready { subscribed: group.subscribed, failed: group.failed, errors: errors.take() });
    let line = match tokio::time::timeout_at(hard_at.into(), lines.recv()).await {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(()), // the parent is gone or gave up: nothing to report to
        Err(_) => return Err("no broadcast announced before the timeout".into()),
    };
    let ToWorker::Posted(posted) = serde_json::from_str(&line).map_err(|e| format!("bad line from parent: {e}"))?;
    let acked = posted.acked.clone();
    group.posted(posted);
    let result = group.finish(&acked).await;
    send(&FromWorker::Done { result, latency: latency.pairs(), errors: errors.take() });
    // Wait for the parent to close stdin, so every worker lets go at the same time.
    let _ = tokio::time::timeout_at(hard_at.into(), async { while lines.recv().await.is_some() {} }).await;
    Ok(())
}
