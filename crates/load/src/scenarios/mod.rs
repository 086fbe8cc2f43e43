//! The scenarios, one file each, and what they share: the [`Scenario`] enum with every
//! scenario's parameters, the run context, and dispatch.
//!
//! Shared machinery lives beside them: `requests.rs` (closed or paced keep-alive request
//! loops: plaintext, cpu, db-stall), `broadcast.rs` (a poster, subscriber groups, and the
//! exactly-once-in-order tally: the three broadcast scenarios and idle-capacity).

mod broadcast;
mod cpu;
mod db_stall;
mod idle_capacity;
mod longpoll_fanout;
mod plaintext;
mod requests;
mod sse_broadcast;
mod ws_broadcast;

pub(crate) use broadcast::{Group, GroupResult, GroupSpec, Posted};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::http::{get, Conn};
use crate::client::ClientError;
use crate::report::{CapacityStats, DeliveryStats, ErrorLog, Report, RequestStats};
use crate::{LoadConfig, LoadError};

/// How a subscriber receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `GET /api/rooms/{room}/messages?after=ID&wait=30`, re-issued after each answer.
    #[value(name = "longpoll")]
    LongPoll,
    /// `GET /api/rooms/{room}/events` (Server-Sent Events).
    Sse,
    /// `GET /api/rooms/{room}/ws` (WebSocket).
    Ws,
}

impl Via {
    /// The name used in reports and flags.
    pub fn name(self) -> &'static str {
        match self {
            Via::LongPoll => "longpoll",
            Via::Sse => "sse",
            Via::Ws => "ws",
        }
    }
}

/// What to run, with its parameters. Serialised with a `"name"` field (`"plaintext"`,
/// `"longpoll-fanout"`, ...) beside the parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Scenario {
    /// Keep-alive `GET /plaintext` at a fixed concurrency, one request or a pipelined batch
    /// in flight per connection: requests per second, latency.
    Plaintext(PlaintextConfig),
    /// Long-poll subscribers in one room, a poster posting: delivery latency, exactly-once.
    LongpollFanout(BroadcastConfig),
    /// The same over WebSocket.
    WsBroadcast(BroadcastConfig),
    /// The same over Server-Sent Events.
    SseBroadcast(BroadcastConfig),
    /// As many idle subscribers as asked: how many the server holds, its memory per
    /// connection, and one broadcast to all of them.
    IdleCapacity(IdleConfig),
    /// Posts (slow store calls) at a rate, with `GET /healthz` probes at a rate: the
    /// probes' latency shows whether a slow store stalls unrelated requests.
    DbStall(DbStallConfig),
    /// `GET /cpu?cost=N` mixed with `GET /plaintext`: how plaintext degrades.
    Cpu(CpuConfig),
}

impl Scenario {
    /// The scenario's name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Plaintext(_) => "plaintext",
            Scenario::LongpollFanout(_) => "longpoll-fanout",
            Scenario::WsBroadcast(_) => "ws-broadcast",
            Scenario::SseBroadcast(_) => "sse-broadcast",
            Scenario::IdleCapacity(_) => "idle-capacity",
            Scenario::DbStall(_) => "db-stall",
            Scenario::Cpu(_) => "cpu",
        }
    }

    /// Checks the parameters, saying which flag is wrong.
    pub fn validate(&self) -> Result<(), LoadError> {
        let positive = |what: &str, n: usize| {
            if n == 0 {
                Err(LoadError::Config(format!("--{what} must be at least 1")))
            } else {
                Ok(())
            }
        };
        let rate = |what: &str, r: f64| {
            if r.is_finite() && r >= 0.0 {
                Ok(())
            } else {
                Err(LoadError::Config(format!("--{what} must be a number >= 0, not {r}")))
            }
        };
        let room = |r: &Option<String>| match r {
            Some(r)
                if r.is_empty()
                    || r.len() > 64
                    || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Err(LoadError::Config(format!("--room {r:?}: 1-64 characters of A-Z a-z 0-9 _ -")))
            }
            _ => Ok(()),
        };
        match self {
            Scenario::Plaintext(c) => {
                positive("connections", c.connections)?;
                if !(1..=MAX_PIPELINE).contains(&c.pipeline) {
                    return Err(LoadError::Config(format!(
                        "--pipeline must be 1 to {MAX_PIPELINE} (the answers to one batch must fit in the socket buffers), not {}",
                        c.pipeline
                    )));
                }
                Ok(())
            }
            Scenario::LongpollFanout(c) | Scenario::WsBroadcast(c) | Scenario::SseBroadcast(c) => {
                positive("subscribers", c.subscribers)?;
                if c.messages == 0 {
                    return Err(LoadError::Config("--messages must be at least 1".into()));
                }
                rate("rate", c.rate)?;
                rate("drain", c.drain_secs)?;
                room(&c.room)
            }
            Scenario::IdleCapacity(c) => {
                positive("connections", c.connections)?;
                positive("open-concurrency", c.open_concurrency)?;
                if c.per_process == Some(0) {
                    return Err(LoadError::Config("--per-process must be at least 1".into()));
                }
                if matches!(c.source_addrs, Some(n) if n == 0 || n > 254) {
                    return Err(LoadError::Config("--source-addrs must be 1 to 254 (127.0.0.1 to 127.0.0.254)".into()));
                }
                rate("drain", c.drain_secs)?;
                room(&c.room)
            }
            Scenario::DbStall(c) => {
                positive("connections", c.connections)?;
                positive("posters", c.posters)?;
                rate("probe-rate", c.probe_rate)?;
                rate("post-rate", c.post_rate)?;
                if c.probe_rate == 0.0 || c.post_rate == 0.0 {
                    return Err(LoadError::Config("db-stall paces both probes and posts: give rates above 0".into()));
                }
                room(&c.room)
            }
            Scenario::Cpu(c) => {
                positive("connections", c.connections)?;
                positive("cpu-connections", c.cpu_connections)
            }
        }
    }
}

/// Parameters of `plaintext`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaintextConfig {
    /// Keep-alive connections.
    pub connections: usize,
    /// Stop after this many requests (in all), if the duration has not run out first.
    pub requests: Option<u64>,
    /// Requests in flight on each connection: 1 sends one and waits for its answer; N
    /// writes N in one write, then reads the N answers (HTTP/1.1 pipelining, as
    /// TechEmpower's plaintext test does with 16), so the client's system calls per
    /// request shrink and the server's own cost sets the rate. At most [`MAX_PIPELINE`].
    #[serde(default = "one")]
    pub pipeline: usize,
}

/// The deepest `--pipeline`: a batch is written whole before any answer is read, so the
/// answers to one batch (about 150 bytes each) must fit in the socket buffers, or client
/// and server would each wait for the other to read.
pub const MAX_PIPELINE: usize = 256;

fn one() -> usize {
    1
}

impl Default for PlaintextConfig {
    fn default() -> Self {
        PlaintextConfig { connections: 64, requests: None, pipeline: 1 }
    }
}

/// Parameters of the broadcast scenarios (`longpoll-fanout`, `ws-broadcast`, `sse-broadcast`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastConfig {
    /// Subscribers in the room.
    pub subscribers: usize,
    /// Messages to post (fewer if the duration runs out first).
    pub messages: u64,
    /// Posts per second; 0 posts each as soon as the previous one is acknowledged.
    pub rate: f64,
    /// The room; `None` makes a fresh one (`load-PID-MILLIS`), so ids start from its start.
    pub room: Option<String>,
    /// Seconds subscribers keep waiting for missing messages after the last post.
    pub drain_secs: f64,
    /// Subscribers of the same room (over the same transport; long-poll has none) that
    /// subscribe with a 4 KiB receive buffer and then read nothing, as a client that stopped
    /// reading does: what they cost the others is what the run measures beside a run
    /// without them. They are not counted in the deliveries.
    #[serde(default)]
    pub stalled: usize,
    /// Each message's body is padded with `x` to this many bytes (0: no padding), so that
    /// stalled subscribers fill their buffers, and the server's cap on them, sooner.
    #[serde(default)]
    pub body_bytes: usize,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        BroadcastConfig { subscribers: 100, messages: 100, rate: 0.0, room: None, drain_secs: 5.0, stalled: 0, body_bytes: 0 }
    }
}

/// Parameters of `idle-capacity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleConfig {
    /// Idle subscribers to open.
    pub connections: usize,
    /// How they subscribe.
    pub via: Via,
    /// The server's process id, to read its VmRSS before and after.
    pub server_pid: Option<u32>,
    /// Connections per client process; more than this uses worker processes. `None`:
    /// the open-files limit less a reserve.
    pub per_process: Option<usize>,
    /// Source addresses 127.0.0.1..=127.0.0.N to spread connections over (each gives
    /// about 28,000 ephemeral ports). `None`: one per 20,000 connections.
    pub source_addrs: Option<usize>,
    /// The room; `None` makes a fresh one.
    pub room: Option<String>,
    /// Connections being opened at once.
    pub open_concurrency: usize,
    /// Seconds to wait for the broadcast to reach everyone.
    pub drain_secs: f64,
    /// Every subscriber a named member of the room that asks for presence events (what
    /// presence costs the server: `c10k bench --only presence`).
    #[serde(default)]
    pub presence: bool,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            connections: 1000,
            via: Via::Sse,
            server_pid: None,
            per_process: None,
            source_addrs: None,
            room: None,
            open_concurrency: 256,
            drain_secs: 10.0,
            presence: false,
        }
    }
}

/// Parameters of `db-stall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbStallConfig {
    /// Connections sending `GET /healthz` probes.
    pub connections: usize,
    /// Probes per second, in all.
    pub probe_rate: f64,
    /// Connections posting messages (each post is a store call).
    pub posters: usize,
    /// Posts per second, in all.
    pub post_rate: f64,
    /// The room posted to; `None` makes a fresh one.
    pub room: Option<String>,
}

impl Default for DbStallConfig {
    fn default() -> Self {
        DbStallConfig { connections: 16, probe_rate: 1000.0, posters: 8, post_rate: 50.0, room: None }
    }
}

/// Parameters of `cpu`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuConfig {
    /// Connections sending `GET /plaintext`.
    pub connections: usize,
    /// Connections sending `GET /cpu?cost=N`.
    pub cpu_connections: usize,
    /// Rounds of the server's hash per CPU request (about 4 ns each: the default,
    /// 1,000,000, is about 4 ms of one core).
    pub cost: u64,
    /// Stop each class after this many requests, if the duration has not run out first.
    pub requests: Option<u64>,
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig { connections: 32, cpu_connections: 4, cost: 1_000_000, requests: None }
    }
}

/// What every scenario needs while it runs.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub config: LoadConfig,
    pub addr: SocketAddr,
    pub host: String,
    /// End of the measured phase.
    pub stop_at: Instant,
    /// The hard deadline.
    pub hard_at: Instant,
    pub errors: ErrorLog,
    timed_out: Arc<AtomicBool>,
}

impl Ctx {
    /// Runs `fut` unless the hard deadline passes first.
    pub(crate) async fn bounded<T>(&self, fut: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
        match tokio::time::timeout_at(self.hard_at.into(), fut).await {
            Ok(result) => result,
            Err(_) => {
                self.timed_out.store(true, Ordering::Relaxed);
                Err(ClientError::Timeout)
            }
        }
    }

    /// Notes that the hard deadline cut something short.
    pub(crate) fn note_timeout(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
    }

    /// A room for this run: the configured one or a fresh one.
    pub(crate) fn room(&self, configured: &Option<String>) -> String {
        configured.clone().unwrap_or_else(|| format!("load-{}-{}", std::process::id(), unix_micros() / 1000))
    }
}

/// What a scenario found; [`run`] wraps it into a [`Report`].
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub measured: Duration,
    pub requests: Vec<RequestStats>,
    pub delivery: Option<DeliveryStats>,
    pub capacity: Option<CapacityStats>,
}

/// Microseconds since the Unix epoch: the clock message bodies carry, comparable across
/// the processes of one machine.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Runs the configured scenario (inside the runtime [`crate::run`] built).
pub(crate) async fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    let start = Instant::now();
    let started_unix_ms = unix_micros() / 1000;
    let ctx = Ctx {
        config: config.clone(),
        addr: config.target,
        host: config.target.to_string(),
        stop_at: start + config.duration,
        hard_at: start + config.timeout,
        errors: ErrorLog::default(),
        timed_out: Arc::new(AtomicBool::new(false)),
    };
    check_server(&ctx).await?;
    let findings = match &config.scenario {
        Scenario::Plaintext(c) => plaintext::run(&ctx, c).await,
        Scenario::LongpollFanout(c) => longpoll_fanout::run(&ctx, c).await?,
        Scenario::WsBroadcast(c) => ws_broadcast::run(&ctx, c).await?,
        Scenario::SseBroadcast(c) => sse_broadcast::run(&ctx, c).await?,
        Scenario::IdleCapacity(c) => idle_capacity::run(&ctx, c).await?,
        Scenario::DbStall(c) => db_stall::run(&ctx, c).await,
        Scenario::Cpu(c) => cpu::run(&ctx, c).await,
    };
    let threads = match config.client_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut report = Report {
        scenario: config.scenario.clone(),
        target: config.target.to_string(),
        started_unix_ms,
        elapsed_secs: start.elapsed().as_secs_f64(),
        measured_secs: findings.measured.as_secs_f64(),
        client_threads: threads,
        timed_out: ctx.timed_out.load(Ordering::Relaxed),
        requests: findings.requests,
        delivery: findings.delivery,
        capacity: findings.capacity,
        errors: ctx.errors.snapshot(),
        problems: Vec::new(),
    };
    report.find_problems();
    Ok(report)
}

/// One `GET /healthz` first, so that a wrong port fails in a second with a plain
/// message, not as a report full of connection errors. A 404 passes too: the benchmark's
/// peers (nginx, Apache, Tornado, gevent) have no `/healthz`, and an HTTP answer is
/// what this check is after.
async fn check_server(ctx: &Ctx) -> Result<(), LoadError> {
    let probe = async {
        let mut conn = Conn::open(ctx.addr, None).await?;
        conn.request(&get("/healthz", &ctx.host)).await
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(reply)) if reply.status == 200 || reply.status == 404 => Ok(()),
        Ok(Ok(reply)) => Err(LoadError::Server(format!(
            "{} answered GET /healthz with status {}: is it a c10k server?",
            ctx.addr, reply.status
        ))),
        Ok(Err(e)) => Err(LoadError::Server(format!(
            "cannot reach a server at {} ({e}); start one with `c10k serve --listen {}`",
            ctx.addr, ctx.addr
        ))),
        Err(_) => Err(LoadError::Server(format!("{} did not answer GET /healthz within 5 s", ctx.addr))),
    }
}
