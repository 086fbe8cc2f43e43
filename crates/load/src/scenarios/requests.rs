//! Keep-alive request loops, the engine of plaintext, cpu and db-stall: N connections,
//! one request in flight on each, either back to back (closed loop) or paced at a rate.
//!
//! Paced loops measure a request that goes out late, because the previous answer on its
//! connection came late, from when it was *due*: if the server stalls for 500 ms, the
//! requests that should have been sent meanwhile count as up to 500 ms late instead of
//! never being sent (what wrk2 calls coordinated omission). Closed loops measure
//! throughput, and their latency is per request sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::http::Conn;
use crate::report::{RequestStats, SharedHistogram};

use super::Ctx;

/// One class of requests.
#[derive(Debug, Clone)]
pub(crate) struct LoopSpec {
    /// The name in the report.
    pub name: &'static str,
    /// The request, ready to write.
    pub request: Arc<[u8]>,
    /// The status that counts as success.
    pub expect: u16,
    pub connections: usize,
    /// Requests in all, across connections.
    pub limit: Option<u64>,
    /// Requests per second in all; `None`: closed loop.
    pub rate: Option<f64>,
}

/// Runs the loops until the measured phase ends (or the limit is reached); `answered`
/// counts successes as they happen (for the progress bar).
pub(crate) async fn run_loops(ctx: &Ctx, spec: LoopSpec, answered: Arc<AtomicU64>) -> RequestStats {
    let latency = SharedHistogram::new();
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let interval = spec.rate.map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    let mut tasks = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        let ctx = ctx.clone();
        let spec = spec.clone();
        let latency = latency.clone();
        let issued = Arc::clone(&issued);
        let answered = Arc::clone(&answered);
        // Paced connections start spread over one interval, not all at once.
        let first_due = start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / spec.connections as f64));
        tasks.push(tokio::spawn(async move {
            one_connection(&ctx, &spec, latency, issued, answered, first_due, interval).await
        }));
    }
    gather(spec.name, spec.connections, start, &latency, tasks).await
}

/// Waits for every connection's task (each returns its error count) and sums up the run
/// that began at `start`: requests answered, errors, rate and latency.
pub(crate) async fn gather(
    name: &str,
    connections: usize,
    start: Instant,
    latency: &SharedHistogram,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
) -> RequestStats {
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap_or(0);
    }
    let measured = start.elapsed().as_secs_f64().max(1e-9);
    let latency = latency.summary();
    RequestStats {
        name: name.to_string(),
        connections,
        requests: latency.count,
        errors,
        per_second: latency.count as f64 / measured,
        latency,
    }
}

/// The keep-alive `GET /plaintext` loops of the `plaintext` and `cpu` scenarios.
pub(crate) fn plaintext_loops(ctx: &Ctx, connections: usize, limit: Option<u64>) -> LoopSpec {
    LoopSpec {
        name: "plaintext",
        request: crate::client::http::get("/plaintext", &ctx.host).into(),
        expect: 200,
        connections,
        limit,
        rate: None,
    }
}

/// One connection's loop; returns its error count.
async fn one_connection(
    ctx: &Ctx,
    spec: &LoopSpec,
    latency: SharedHistogram,
    issued: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    mut due: Instant,
    interval: Option<Duration>,
) -> u64 {
    let mut recorder = latency.recorder();
    let mut conn: Option<Conn> = None;
    let mut errors = 0;
    loop {
        // When the request starts, for its latency: if this connection is behind its
        // schedule (the previous answer came late), from when it was due; otherwise from
        // when it goes out, so the timer's own lateness (tokio's wheel ticks in
        // milliseconds) is not charged to the server.
        let began = match interval {
            Some(iv) => {
                if due >= ctx.stop_at {
                    break;
                }
                let began = if Instant::now() >= due {
                    due
                } else {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                };
                due += iv;
                began
            }
            None if Instant::now() >= ctx.stop_at => break,
            None => Instant::now(),
        };
        if spec.limit.is_some_and(|limit| issued.fetch_add(1, Ordering::Relaxed) >= limit) {
            break;
        }
        if conn.is_none() {
            match connect(ctx, &mut errors).await {
                Connect::Open(c) => conn = Some(c),
                Connect::Retry => continue,
                Connect::Stop => break,
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match ctx.bounded(c.request(&spec.request)).await {
            Ok(reply) => {
                if reply.status == spec.expect {
                    recorder.record(began.elapsed().as_micros() as u64);
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    ctx.errors.count(format!("{}: status {}", spec.name, reply.status));
                    errors += 1;
                }
                if reply.close {
                    conn = None;
                }
            }
            Err(e) => {
                ctx.errors.count(format!("{}: {}", spec.name, e.kind()));
                errors += 1;
                conn = None;
                if matches!(e, crate::client::ClientError::Timeout) {
                    break;
                }
            }
        }
    }
    errors
}

/// What [`connect`] gives a request loop.
pub(crate) enum Connect {
    Open(Conn),
    /// The connection failed (counted) and a short back-off has passed: try again.
    Retry,
    /// The run's hard deadline passed: stop.
    Stop,
}

/// Opens a connection for a request loop; a failure is counted in the run's errors and in
/// `errors`, then backed off from (not spinning on a refusing server).
pub(crate) async fn connect(ctx: &Ctx, errors: &mut u64) -> Connect {
    match ctx.bounded(Conn::open(ctx.addr, None)).await {
        Ok(c) => Connect::Open(c),
        Err(e) => {
            ctx.errors.count(e.kind());
            *errors += 1;
            if matches!(e, crate::client::ClientError::Timeout) {
                return Connect::Stop;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            Connect::Retry
        }
    }
}
