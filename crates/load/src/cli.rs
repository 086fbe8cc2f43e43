//! `c10k load`'s flags ([`LoadArgs`]) and what the binary does with them ([`run`]):
//! build a [`LoadConfig`], run it, print the report (text, or JSON with `--json`).
//!
//! The exit status says whether the numbers can be trusted: 0 for a sound run, 1 when
//! the report lists problems (lost or doubled messages, a hard timeout, nothing
//! answered), 2 when the run could not be carried out at all.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::scenarios::{BroadcastConfig, CpuConfig, DbStallConfig, IdleConfig, PlaintextConfig, Via};
use crate::{LoadConfig, Scenario};

/// `c10k load`: put load on a c10k server on this machine and report what it did.
#[derive(Args, Debug)]
#[command(subcommand_required = false, arg_required_else_help = true)]
pub struct LoadArgs {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Option<ScenarioArgs>,

    #[command(flatten)]
    /// Flags every scenario takes.
    pub common: CommonArgs,

    /// Run as a worker process of another `c10k load` (job on stdin, reports on stdout).
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Flags every scenario takes (they may come before or after the scenario name).
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// The server: HOST:PORT or the URL `c10k serve` prints. Loopback only (127.0.0.0/8, ::1).
    #[arg(long, global = true, default_value = "127.0.0.1:8888", value_name = "ADDR")]
    pub target: String,

    /// Seconds of load (request loops stop then; posters stop posting then).
    #[arg(long, global = true, default_value_t = 10.0, value_name = "DURATION", value_parser = parse_seconds)]
    pub duration: f64,

    /// Hard limit on the whole run in seconds, setup and draining included
    /// (default: duration + 60).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_seconds)]
    pub timeout: Option<f64>,

    /// Client runtime threads (0: one per core; 1: a single-threaded runtime).
    #[arg(long, global = true, default_value_t = 0, value_name = "N")]
    pub client_threads: usize,

    /// Print the report as JSON on standard output.
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// The scenarios.
#[derive(Subcommand, Debug)]
pub enum ScenarioArgs {
    /// Keep-alive GET /plaintext at a fixed concurrency (--pipeline N: N requests in flight
    /// per connection): requests per second, latency.
    Plaintext(PlaintextArgs),
    /// Long-poll subscribers in one room while a poster posts: delivery latency, exactly-once check.
    LongpollFanout(BroadcastArgs),
    /// WebSocket subscribers in one room while a poster posts.
    WsBroadcast(BroadcastArgs),
    /// Server-Sent Events subscribers in one room while a poster posts.
    SseBroadcast(BroadcastArgs),
    /// As many idle subscribers as asked: how many the server holds, its memory per
    /// connection, one broadcast to all.
    IdleCapacity(IdleArgs),
    /// Posts (store calls) at a rate with GET /healthz probes at a rate: the probes' p99.
    DbStall(DbStallArgs),
    /// GET /cpu?cost=N mixed with GET /plaintext: how plaintext degrades.
    Cpu(CpuArgs),
}

/// Flags of `plaintext`.
#[derive(Args, Debug)]
pub struct PlaintextArgs {
    /// Keep-alive connections, each with --pipeline requests in flight.
    #[arg(long, short = 'c', default_value_t = 64, value_name = "N")]
    pub connections: usize,
    /// Stop after this many requests, if --duration has not run out first.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Requests in flight per connection (HTTP/1.1 pipelining, 1 to 256): each connection
    /// writes N requests in one write, then reads the N answers, and repeats. A request's
    /// latency runs from its batch's write to its own answer. 1: one request, one answer.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pipeline: usize,
}

/// Flags of the broadcast scenarios.
#[derive(Args, Debug)]
pub struct BroadcastArgs {
    /// Subscribers in the room.
    #[arg(long, short = 'n', default_value_t = 100, value_name = "N")]
    pub subscribers: usize,
    /// Messages to post (fewer if --duration runs out first).
    #[arg(long, short = 'm', default_value_t = 100, value_name = "M")]
    pub messages: u64,
    /// Posts per second (0: each as soon as the previous one is acknowledged).
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    pub rate: f64,
    /// Room to use (default: a fresh one per run, `load-PID-MILLIS`; what is posted stays in
    /// the server's history, like any room's).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,
    /// Seconds subscribers wait for missing messages after the last post.
    #[arg(long, default_value_t = 5.0, value_name = "DURATION", value_parser = parse_seconds)]
    pub drain: f64,
    /// Also open this many subscribers that read nothing after subscribing (ws-broadcast and
    /// sse-broadcast): compare the others' latency with a run without them.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub stalled: usize,
    /// Pad each message's body to this many bytes (at most 4000, the server's limit is 4096
    /// characters).
    #[arg(long, default_value_t = 0, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(0..=4000))]
    pub body_bytes: u16,
}

/// Flags of `idle-capacity`.
#[derive(Args, Debug)]
pub struct IdleArgs {
    /// Idle subscribers to open.
    #[arg(long, short = 'c', default_value_t = 1000, value_name = "N")]
    pub connections: usize,
    /// How they subscribe.
    #[arg(long, value_enum, default_value_t = Via::Sse)]
    pub via: Via,
    /// The server's process id: its VmRSS is read before and after.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Connections per client process; beyond it, worker processes (default: the
    /// open-files limit less 100).
    #[arg(long, value_name = "N")]
    pub per_process: Option<usize>,
    /// Spread connections over 127.0.0.1..=127.0.0.N (default: one per 20,000).
    #[arg(long, value_name = "N")]
    pub source_addrs: Option<usize>,
    /// Room to use (default: a fresh one per run, `load-PID-MILLIS`; what is posted stays in
    /// the server's history, like any room's).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub open_concurrency: usize,
    /// Seconds to wait for the broadcast to reach everyone.
    #[arg(long, default_value_t = 10.0, value_name = "DURATION", value_parser = parse_seconds)]
    pub drain: f64,
    /// Make every subscriber a named member of the room that asks for presence events
    /// (SSE and WebSocket: `?presence=1&nick=...`): what presence costs, against a run
    /// without.
    #[arg(long)]
    pub presence: bool,
}

/// Flags of `db-stall`.
#[derive(Args, Debug)]
pub struct DbStallArgs {
    /// Connections sending GET /healthz probes.
    #[arg(long, short = 'c', default_value_t = 16, value_name = "N")]
    pub connections: usize,
    /// Probes per second, in all.
    #[arg(long, default_value_t = 1000.0, value_name = "PER_SEC")]
    pub probe_rate: f64,
    /// Connections posting messages.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub posters: usize,
    /// Posts per second, in all.
    #[arg(long, default_value_t = 50.0, value_name = "PER_SEC")]
    pub post_rate: f64,
    /// Room to post to (default: a fresh one per run, `load-PID-MILLIS`; what is posted
    /// stays in the server's history, like any room's).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,
}

/// Flags of `cpu`.
#[derive(Args, Debug)]
pub struct CpuArgs {
    /// Connections sending GET /plaintext.
    #[arg(long, short = 'c', default_value_t = 32, value_name = "N")]
    pub connections: usize,
    /// Connections sending GET /cpu?cost=N.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub cpu_connections: usize,
    /// Hash rounds per CPU request.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub cost: u64,
    /// Stop each class after this many requests, if --duration has not run out first.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
}

impl ScenarioArgs {
    fn into_scenario(self) -> Scenario {
        let broadcast = |a: BroadcastArgs| BroadcastConfig {
            subscribers: a.subscribers,
            messages: a.messages,
            rate: a.rate,
            room: a.room,
            drain_secs: a.drain,
            stalled: a.stalled,
            body_bytes: usize::from(a.body_bytes),
        };
        match self {
            ScenarioArgs::Plaintext(a) => Scenario::Plaintext(PlaintextConfig {
                connections: a.connections,
                requests: a.requests,
                pipeline: a.pipeline,
            }),
            ScenarioArgs::LongpollFanout(a) => Scenario::LongpollFanout(broadcast(a)),
            ScenarioArgs::WsBroadcast(a) => Scenario::WsBroadcast(broadcast(a)),
            ScenarioArgs::SseBroadcast(a) => Scenario::SseBroadcast(broadcast(a)),
            ScenarioArgs::IdleCapacity(a) => Scenario::IdleCapacity(IdleConfig {
                connections: a.connections,
                via: a.via,
                server_pid: a.server_pid,
                per_process: a.per_process,
                source_addrs: a.source_addrs,
                room: a.room,
                open_concurrency: a.open_concurrency,
                drain_secs: a.drain,
                presence: a.presence,
            }),
            ScenarioArgs::DbStall(a) => Scenario::DbStall(DbStallConfig {
                connections: a.connections,
                probe_rate: a.probe_rate,
                posters: a.posters,
                post_rate: a.post_rate,
                room: a.room,
            }),
            ScenarioArgs::Cpu(a) => Scenario::Cpu(CpuConfig {
                connections: a.connections,
                cpu_connections: a.cpu_connections,
                cost: a.cost,
                requests: a.requests,
            }),
        }
    }
}

/// Parses a span of time as wrk and nginx write it, for clap's `value_parser`: `3s`,
/// `500ms`, `2m`, `1h`, or a plain number of seconds (`10`, `2.5`). Returns seconds.
/// Shared by every subcommand's time flags (serve, load, bench, the checkers).
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; write e.g. 3s, 500ms, 2m, 1h or plain seconds")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 3s, 500ms, 2m, 1h or plain seconds"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?}: a duration must be 0 or more (e.g. 3s, 500ms, 2m)"));
    }
    Ok(value * scale)
}

impl LoadArgs {
    /// The run these flags describe.
    pub fn to_config(self) -> Result<LoadConfig, String> {
        let Some(scenario) = self.scenario else {
            return Err("name a scenario: plaintext, longpoll-fanout, ws-broadcast, sse-broadcast, \
                        idle-capacity, db-stall or cpu (c10k load --help)"
                .into());
        };
        let c = self.common;
        let target = crate::target::parse_target(&c.target).map_err(|e| e.to_string())?;
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("--{name} must be more than 0 (e.g. 3s, 500ms, 2m), not {v}"))
            }
        };
        let duration = secs("duration", c.duration)?;
        let timeout = match c.timeout {
            Some(t) => secs("timeout", t)?,
            None => duration + Duration::from_secs(60),
        };
        Ok(LoadConfig {
            target,
            scenario: scenario.into_scenario(),
            duration,
            timeout,
            client_threads: c.client_threads,
            progress: !c.quiet && !c.json && std::io::stderr().is_terminal(),
            worker_program: None::<PathBuf>,
        })
    }
}

/// Runs `c10k load` with these flags: prints the report, returns the exit status.
pub fn run(args: LoadArgs) -> ExitCode {
    if args.worker {
        return crate::worker::main();
    }
    let json = args.common.json;
    let config = match args.to_config() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("c10k load: {message}");
            return ExitCode::from(2);
        }
    };
    let report = match crate::run(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("c10k load: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("a report is serialisable"));
    } else {
        print!("{}", report.to_text());
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for problem in &report.problems {
            eprintln!("c10k load: {problem}");
        }
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn durations_take_wrk_units_and_plain_seconds() {
        for (text, secs) in [("3", 3.0), ("2.5", 2.5), ("3s", 3.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), (" 10S ", 10.0), ("0", 0.0)] {
            assert_eq!(parse_seconds(text), Ok(secs), "{text:?}");
        }
        for text in ["", "s", "3x", "-1", "-2s", "inf", "NaN", "1.5.2s", "ms500"] {
            let err = parse_seconds(text).expect_err(text);
            assert!(err.contains("3s, 500ms, 2m") || err.contains("0 or more"), "{text:?}: {err}");
        }
    }
}
