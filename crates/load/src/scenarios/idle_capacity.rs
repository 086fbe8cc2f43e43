//! `idle-capacity`: opens as many idle subscribers (SSE, long-poll or WebSocket) as asked,
//! counts how many the server holds, reads the server's resident memory before and after
//! (`/proc/PID/status` VmRSS, with `--server-pid`), then posts one message and times its
//! delivery to every one of them: "you can't have 10,000 threads", measured.
//!
//! Two client-side limits are in the way of big numbers, and both are handled here:
//! open files per process (20,000 on this machine): past `per_process`, the connections are
//! held by worker processes (`c10k load --worker`, see `worker.rs`); and ephemeral ports
//! per source address (about 28,000 for one server address): connections are spread over
//! 127.0.0.1, 127.0.0.2, ... by binding before connecting.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::client::feed::FeedSpec;
use crate::report::{CapacityStats, SharedHistogram};
use crate::worker::{FromWorker, ToWorker, WorkerJob};
use crate::LoadError;

use super::broadcast::{self, Bitset, GroupResult, Posted};
use super::{Ctx, Findings, Group, GroupSpec, IdleConfig};

/// Files a client process keeps for itself (runtime, stdio, the poster).
const FD_RESERVE: u64 = 100;
/// Connections per source address when `--source-addrs` is not given: below the ~28,000
/// ephemeral ports Linux has for one (source address, server address) pair.
const PER_SOURCE: usize = 20_000;
/// Time for the server to finish accepting before its memory is read.
const SETTLE: Duration = Duration::from_millis(500);

pub(crate) async fn run(ctx: &Ctx, config: &IdleConfig) -> Result<Findings, LoadError> {
    let room = ctx.room(&config.room);
    let after = broadcast::last_id(ctx, &room).await?;
    // Before the subscribers: a server at its connection cap must still take the post.
    let poster = broadcast::open_poster(ctx).await?;
    let files = c10k_sys::raise_open_files_limit().unwrap_or(1024);
    let per_process = config.per_process.unwrap_or(files.saturating_sub(FD_RESERVE).max(1) as usize);
    let source_count = config.source_addrs.unwrap_or(config.connections.div_ceil(PER_SOURCE)).max(1);
    let sources: Vec<IpAddr> = if source_count > 1 {
        if !ctx.addr.is_ipv4() {
            return Err(LoadError::Config(
                "spreading over source addresses needs an IPv4 target (e.g. 127.0.0.1:PORT)".into(),
            ));
        }
        (1..=source_count as u8).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect()
    } else {
        Vec::new()
    };
    let rss = |when: &str| {
        config.server_pid.and_then(|pid| match crate::sys::vm_rss_kib(pid) {
            Ok(kib) => Some(kib),
            Err(e) => {
                ctx.errors.count(format!("reading VmRSS of pid {pid} {when}: {e}"));
                None
            }
        })
    };
    let rss_before = rss("before");
    let feed = FeedSpec { via: config.via, addr: ctx.addr, room: room.clone(), after, presence: config.presence };
    let latency = SharedHistogram::new();

    let opening = Instant::now();
    let mut holders = if config.connections <= per_process {
        let spec = GroupSpec {
            feed,
            count: config.connections,
            sources: sources.clone(),
            first_index: 0,
            open_concurrency: config.open_concurrency,
            messages: 1,
            hard_at: ctx.hard_at,
        };
        Holders::Local(Group::open(spec, ctx.errors.clone(), latency.clone(), Arc::new(AtomicU64::new(0))).await)
    } else {
        Holders::Workers(start_workers(ctx, config, &feed, &sources, per_process).await?)
    };
    let open_secs = opening.elapsed().as_secs_f64();
    let (held, failed, processes) = holders.counts();
    tokio::time::sleep(SETTLE).await;
    let rss_after = rss("after");

    let posts = broadcast::post_messages(ctx, Some(poster), &room, 1, 0.0, 0, ctx.hard_at).await;
    let posted = Posted {
        acked: posts.acked.clone(),
        first_post_unix_us: posts.first_post_unix_us,
        drain_ms: (config.drain_secs * 1000.0) as u64,
    };
    let result = holders.finish(ctx, posted, &latency).await;
    if result.timed_out {
        ctx.note_timeout();
    }
    let delivery = broadcast::delivery_stats(config.via, &room, &result, &posts, &latency);
    let capacity = CapacityStats {
        asked: config.connections,
        held,
        failed,
        processes,
        source_addrs: source_count,
        open_secs,
        server_rss_before_kib: rss_before,
        server_rss_after_kib: rss_after,
        rss_per_connection_bytes: match (rss_before, rss_after) {
            (Some(b), Some(a)) if held > 0 => Some((a as f64 - b as f64) * 1024.0 / held as f64),
            _ => None,
        },
        broadcast_secs: delivery.spread_secs,
    };
    Ok(Findings {
        measured: opening.elapsed(),
        requests: Vec::new(),
        delivery: Some(delivery),
        capacity: Some(capacity),
    })
}

/// Who holds the subscribers: this process, or workers.
enum Holders {
    Local(Group),
    Workers(Vec<Worker>),
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    count: usize,
    subscribed: usize,
    failed: usize,
    /// It stopped answering; its subscribers count as failed.
    lost: bool,
}

impl Holders {
    /// (held, failed, processes)
    fn counts(&self) -> (usize, usize, usize) {
        match self {
            Holders::Local(g) => (g.subscribed, g.failed, 1),
            Holders::Workers(ws) => (
                ws.iter().map(|w| w.subscribed).sum(),
                ws.iter().map(|w| if w.lost { w.count } else { w.failed }).sum(),
                ws.len(),
            ),
        }
    }

    async fn finish(&mut self, ctx: &Ctx, posted: Posted, latency: &SharedHistogram) -> GroupResult {
        let acked: Bitset = posted.acked.clone();
        match self {
            Holders::Local(_) => {
                let Holders::Local(group) = std::mem::replace(self, Holders::Workers(Vec::new())) else {
                    unreachable!()
                };
                group.posted(posted);
                group.finish(&acked).await
            }
            Holders::Workers(workers) => {
                let line = serde_json::to_string(&ToWorker::Posted(posted)).expect("serialisable") + "\n";
                for w in workers.iter_mut().filter(|w| !w.lost) {
                    let sent = match w.stdin.as_mut() {
                        Some(stdin) => stdin.write_all(line.as_bytes()).await.is_ok() && stdin.flush().await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        w.lost = true;
                        ctx.errors.count("worker: stopped listening");
                    }
                }
                let mut total = GroupResult::default();
                for w in workers.iter_mut() {
                    total.subscribers += w.count;
                    if w.lost {
                        continue;
                    }
                    match read(ctx, &mut w.stdout).await {
                        Ok(FromWorker::Done { result, latency: pairs, errors }) => {
                            latency.add_pairs(&pairs);
                            ctx.errors.merge(&errors);
                            add(&mut total, &result);
                        }
                        Ok(other) => {
                            ctx.errors.count(format!("worker: unexpected answer {other:?}"));
                            w.lost = true;
                        }
                        Err(e) => {
                            ctx.errors.count(format!("worker: {e}"));
                            w.lost = true;
                        }
                    }
                }
                // Closing stdin lets the workers go; any still there after 5 s is killed.
                for w in workers.iter_mut() {
                    w.stdin = None;
                }
                for w in workers.iter_mut() {
                    if tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await.is_err() {
                        let _ = w.child.kill().await;
                    }
                }
                total
            }
        }
    }
}

fn add(total: &mut GroupResult, r: &GroupResult) {
    total.subscribed += r.subscribed;
    total.delivered += r.delivered;
    total.misses += r.misses;
    total.duplicates += r.duplicates;
    total.out_of_order += r.out_of_order;
    total.resets += r.resets;
    total.foreign += r.foreign;
    total.subscriber_errors += r.subscriber_errors;
    total.last_delivery_unix_us = total.last_delivery_unix_us.max(r.last_delivery_unix_us);
    total.timed_out |= r.timed_out;
}

async fn read(ctx: &Ctx, stdout: &mut Lines<BufReader<ChildStdout>>) -> Result<FromWorker, String> {
    match tokio::time::timeout_at(ctx.hard_at.into(), stdout.next_line()).await {
        Err(_) => {
            ctx.note_timeout();
            Err("no answer before the hard timeout".into())
        }
        Ok(Err(e)) => Err(format!("cannot read its output: {e}")),
        Ok(Ok(None)) => Err("exited early (its standard error says why)".into()),
        Ok(Ok(Some(line))) => serde_json::from_str(&line).map_err(|e| format!("bad line {line:?}: {e}")),
    }
}

async fn start_workers(
    ctx: &Ctx,
    config: &IdleConfig,
    feed: &FeedSpec,
    sources: &[IpAddr],
    per_process: usize,
) -> Result<Vec<Worker>, LoadError> {
    let program = match &ctx.config.worker_program {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| LoadError::Setup(format!("cannot find this program to start workers: {e}")))?,
    };
    let processes = config.connections.div_ceil(per_process);
    // Even shares, so no worker is the one near its limit.
    let share = config.connections.div_ceil(processes);
    let remaining = ctx.hard_at.saturating_duration_since(Instant::now());
    let mut workers = Vec::with_capacity(processes);
    let mut first_index = 0;
    while first_index < config.connections {
        let count = share.min(config.connections - first_index);
        let job = WorkerJob {
            target: ctx.addr,
            via: feed.via,
            room: feed.room.clone(),
            after: feed.after,
            count,
            sources: sources.to_vec(),
            first_index,
            open_concurrency: config.open_concurrency,
            messages: 1,
            timeout_ms: remaining.as_millis() as u64,
            client_threads: 1,
            presence: feed.presence,
        };
        let mut child = Command::new(&program)
            .args(["load", "--worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                LoadError::Setup(format!(
                    "cannot start worker `{} load --worker`: {e} (library callers: set worker_program to the c10k binary)",
                    program.display()
                ))
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = serde_json::to_string(&job).expect("serialisable") + "\n";
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| LoadError::Setup(format!("cannot give worker {} its job: {e}", workers.len())))?;
        workers.push(Worker { child, stdin: Some(stdin), stdout, count, subscribed: 0, failed: 0, lost: false });
        first_index += count;
    }
    // They open in parallel; collect each one's `ready`.
    for (i, w) in workers.iter_mut().enumerate() {
        match read(ctx, &mut w.stdout).await {
            Ok(FromWorker::Ready { subscribed, failed, errors }) => {
                w.subscribed = subscribed;
                w.failed = failed;
                ctx.errors.merge(&errors);
            }
            Ok(FromWorker::Failed { error }) => {
                return Err(LoadError::Setup(format!("worker {i} failed: {error}")));
            }
            Ok(other) => return Err(LoadError::Setup(format!("worker {i} answered {other:?} instead of ready"))),
            Err(e) => return Err(LoadError::Setup(format!("worker {i}: {e}"))),
        }
    }
    Ok(workers)
}
