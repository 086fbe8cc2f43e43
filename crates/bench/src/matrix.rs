//! The matrix: named suites, each a list of cells. A cell is one server (a c10k model
//! with its flags, or a peer) under one kind of load at one size. [`suites`] builds them
//! for a full or a `--quick` run; the runner filters them with `--only` and `--models`.
//!
//! | suite | what it measures | talk claim or goal |
//! |---|---|---|
//! | `plaintext` | keep-alive GET /plaintext req/s, every model and every peer; wrk once per server as a cross-check; then 16 pipelined requests per connection for the event-loop models, nginx, hyper and raw; the server's system calls per request in one extra run of each | nginx vs Apache; plaintext goal (judged pipelined); generators agree; uring against reactor and async |
//! | `fanout` | long-poll fan-out: deliveries/s and latency against subscribers | fan-out goal, vs Tornado |
//! | `ws` | WebSocket broadcast deliveries/s | 1M deliveries/s goal |
//! | `capacity` | idle SSE subscribers held, memory per connection, threads | "10,000 threads or processes" |
//! | `idle` | idle keep-alive connections held by models and by nginx and Apache | nginx vs Apache, idle |
//! | `c100k` | 100,000 idle subscribers on several worker processes | 100k goal |
//! | `c1m` | how far past 100,000 the async, reactor and uring models get, bounded by free memory | toward 1,000,000 |
//! | `wakeup` | one connection's latency with K idle ones, per poller | select/poll vs epoll |
//! | `dbstall` | unrelated requests' p99 and posts stored per second with a slow store: SQLite sleeping in c10k, and MariaDB/MySQL and PostgreSQL whose every store call waits on a 50 ms query; inline vs offload vs native | "block on the database" |
//! | `ledger` | the bank's operations per second and p99 per `--locking` strategy, on many accounts and on two hot ones, per model, each run checked by `c10k ledger-check` | "fine grained has some real benefits, but can be hard and expensive" |
//! | `cpu` | CPU-bound requests beside plaintext: giant lock, wedging, cores | GIL, wedging, green threads |

use std::time::Duration;

use c10k_load::scenarios::{BroadcastConfig, CpuConfig, DbStallConfig, PlaintextConfig, Via};
use c10k_load::Scenario;
use serde::{Deserialize, Serialize};

/// What serves a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Subject {
    /// `c10k serve --model MODEL ARGS...`.
    Model {
        /// `--model`.
        model: String,
        /// Further flags.
        args: Vec<String>,
        /// A slow store, `--db slow:MILLIS:PATH` (db-stall).
        db_slow_ms: Option<u64>,
        /// A database server's store on a scratch database of the cell's own, slowed down
        /// on the server (db-stall); its URL comes from `c10k bench --mysql/--postgres`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        db_server: Option<DbServer>,
    },
    /// `bench/baselines/run.sh NAME 0 [WORKERS]`.
    Peer {
        /// The peer.
        name: String,
        /// run.sh's WORKERS.
        workers: Option<usize>,
    },
}

impl Subject {
    fn model(model: &str, args: &[&str]) -> Subject {
        Subject::Model {
            model: model.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            db_slow_ms: None,
            db_server: None,
        }
    }

    fn peer(name: &str, workers: Option<usize>) -> Subject {
        Subject::Peer {
            name: name.into(),
            workers,
        }
    }

    /// The `--model` name, or the peer's name.
    pub fn name(&self) -> &str {
        match self {
            Subject::Model { model, .. } => model,
            Subject::Peer { name, .. } => name,
        }
    }

    /// What serves the cell, as a person reads it (`c10k bench --list`):
    /// `c10k serve --model async --threads 1`, `c10k serve --model green --db slow:50ms`,
    /// `peer nginx, 1 worker`.
    pub fn describe(&self) -> String {
        match self {
            Subject::Model { model, args, db_slow_ms, db_server } => {
                let mut line = format!("c10k serve --model {model}");
                for arg in args {
                    line += " ";
                    line += arg;
                }
                if let Some(ms) = db_slow_ms {
                    line += &format!(" --db slow:{ms}:<scratch file>");
                }
                if let Some(server) = db_server {
                    line += &format!(
                        " --db <scratch {} database> --db-sleep-ms {}",
                        server.database.title(),
                        server.sleep_ms
                    );
                }
                line
            }
            Subject::Peer { name, workers: None } => format!("peer {name}"),
            Subject::Peer { name, workers: Some(1) } => format!("peer {name}, 1 worker"),
            Subject::Peer { name, workers: Some(n) } => format!("peer {name}, {n} workers"),
        }
    }

    /// Whether this is a peer.
    pub fn is_peer(&self) -> bool {
        matches!(self, Subject::Peer { .. })
    }

    /// The value a c10k model is given for `flag` (`--locking` → `fine`), if it is given one.
    pub fn flag(&self, flag: &str) -> Option<&str> {
        match self {
            Subject::Model { args, .. } => {
                args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(String::as_str)
            }
            Subject::Peer { .. } => None,
        }
    }
}

/// A database server a cell's store lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// MySQL or MariaDB (`c10k bench --mysql`).
    Mysql,
    /// PostgreSQL (`c10k bench --postgres`).
    Postgres,
}

impl Database {
    /// Both, in the order the suite runs them.
    pub const ALL: [Database; 2] = [Database::Mysql, Database::Postgres];

    /// The name in cell ids: `mysql`, `postgres`.
    pub fn id(self) -> &'static str {
        match self {
            Database::Mysql => "mysql",
            Database::Postgres => "postgres",
        }
    }

    /// What to call it before its version is known: `MySQL/MariaDB`, `PostgreSQL`.
    pub fn title(self) -> &'static str {
        match self {
            Database::Mysql => "MySQL/MariaDB",
            Database::Postgres => "PostgreSQL",
        }
    }
}

/// A store on a database server, made slow on the server: before each store read and
/// append, `c10k serve --db-sleep-ms MS` runs a query that takes MS there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbServer {
    /// Which server.
    pub database: Database,
    /// `--db-sleep-ms`.
    pub sleep_ms: u64,
}

/// How long the database cells' query takes on the server (`--db-sleep-ms`): slow enough
/// that one serving thread can store at most 20 posts a second inline.
pub const DB_SLEEP_MS: u64 = 50;

/// The `--db-mode`s of the database cells. Every model gets all three: those without a
/// native driver refuse it at start, and their native cells record the server's reason.
const DB_MODES: [&str; 3] = ["offload", "inline", "native"];

/// What a cell does to its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// One run of the load generator per repeat.
    Load {
        /// The scenario.
        scenario: Scenario,
        /// Seconds of load.
        duration: f64,
        /// Hard limit in seconds.
        timeout: f64,
    },
    /// idle-capacity: idle subscribers held, with the server's process tree sampled.
    Capacity {
        /// Subscribers to open.
        connections: usize,
        /// How they subscribe.
        via: Via,
        /// Hard limit in seconds.
        timeout: f64,
        /// Each a named member of the room that asks for presence events.
        #[serde(default)]
        presence: bool,
    },
    /// Idle keep-alive connections (one GET /plaintext each), then one more request on
    /// every one of them: how many the server still holds. Works on any peer.
    IdleKeepAlive {
        /// Connections to open.
        connections: usize,
    },
    /// K idle keep-alive connections held while one more connection runs plaintext.
    Wakeup {
        /// Idle connections.
        idle: usize,
        /// Seconds of plaintext.
        duration: f64,
    },
    /// One `c10k ledger-check` per repeat: the canonical race, then `ops` random transfers,
    /// withdrawals and audits from each of `connections`, over `accounts` accounts; timed
    /// and checked. A fixed number of operations, not a duration: the checker needs the
    /// whole history, and every strategy then does the same work.
    Ledger {
        /// Client connections firing at once.
        connections: usize,
        /// Random operations per connection after the race.
        ops: usize,
        /// Accounts the operations spread over (2: John and Jane, both hot).
        accounts: usize,
        /// Hard limit in seconds.
        timeout: f64,
    },
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The suite it belongs to.
    pub suite: String,
    /// Unique within the suite, e.g. `async@10000`.
    pub id: String,
    /// The series it belongs to in tables and plots (`async`, `reactor/poll`, `nginx`, `threads+giant-lock`).
    pub series: String,
    /// The size: subscribers, connections, idle connections (when the suite varies one).
    pub x: Option<f64>,
    /// What serves it.
    pub subject: Subject,
    /// What is done to it.
    pub action: Action,
    /// Whether server and client are pinned to different CPUs (when the machine allows).
    pub pinned: bool,
    /// Measured repeats (capacity cells: 1).
    pub repeats: usize,
    /// Whether it needs raised kernel limits (kernel.pid_max, vm.max_map_count).
    pub needs_sysctl: bool,
    /// Profile the server with perf during one extra run, when `--perf` is given.
    pub profile: bool,
    /// Run wrk once against the server after the repeats, to cross-check c10k load
    /// (the plaintext suite).
    #[serde(default)]
    pub wrk: bool,
    /// Count the server's system calls during one extra, unmeasured run (the plaintext
    /// suite): system calls per request, readiness against completion.
    #[serde(default)]
    pub syscalls: bool,
}

/// Every suite name, in running order.
pub const SUITE_NAMES: &[&str] = &[
    "plaintext",
    "wakeup",
    "dbstall",
    "ledger",
    "cpu",
    "fanout",
    "ws",
    "idle",
    "capacity",
    "c100k",
    "presence",
    "c1m",
];

/// Sizes and durations for a full or a quick (smoke) run.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// A tiny smoke run.
    pub quick: bool,
    /// Measured seconds per repeat of a load cell.
    pub duration: f64,
    /// Repeats of a load cell.
    pub repeats: usize,
}

impl Scale {
    fn pick<T: Clone>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// The models every "all models" suite runs, with the flags that make them comparable on
/// one core (`async --threads 1`; `prefork` with enough workers for 64 connections).
fn plaintext_models() -> Vec<(&'static str, Subject)> {
    vec![
        ("async", Subject::model("async", &["--threads", "1"])),
        ("threads", Subject::model("threads", &[])),
        ("pool", Subject::model("pool", &[])),
        ("prefork", Subject::model("prefork", &["--workers", "64"])),
        ("reactor", Subject::model("reactor", &["--poller", "epoll"])),
        ("green", Subject::model("green", &["--poller", "epoll"])),
        ("uring", Subject::model("uring", &[])),
    ]
}

/// The models of the dbstall suite: the four with one serving thread (async on one
/// worker), and threads, whose connections each have their own.
fn dbstall_models() -> [(&'static str, &'static str, &'static [&'static str]); 5] {
    [
        ("async", "async", &["--threads", "1"]),
        ("threads", "threads", &[]),
        ("reactor", "reactor", &[]),
        ("green", "green", &[]),
        ("uring", "uring", &[]),
    ]
}

/// A dbstall cell's server (`model` with `extra` flags and `--db-mode mode`, its store
/// still to be chosen) and load: the probes, and (posters, posts per second).
fn dbstall_load(scale: Scale, model: &str, extra: &[&str], mode: &str, (posters, post_rate): (usize, f64)) -> (Subject, Scenario) {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--db-mode", mode]);
    let scenario = Scenario::DbStall(DbStallConfig {
        connections: scale.pick(8, 2),
        probe_rate: scale.pick(500.0, 100.0),
        posters,
        post_rate,
        room: None,
    });
    (Subject::model(model, &args), scenario)
}

/// Posting connections of the database cells: more than the 16 connections to the
/// database a server keeps (`--db-connections`), so that native and threads can use them all.
pub const DB_POSTERS: usize = 32;
/// Posts offered per second, in all, by the database cells: more than 16 connections can
/// store with a 50 ms query each (320/s).
pub const DB_POST_RATE: f64 = 400.0;

/// The ledger suite's strategies (`--locking`), in the talk's order: the race, the coarse
/// lock, the fine ones, the lockless one, then the database's transaction.
pub const LEDGER_LOCKINGS: [&str; 5] = ["none", "giant", "fine", "atomic", "db"];
/// Accounts of the ledger suite's high-contention cells: John and Jane, every operation on them.
pub const HOT_ACCOUNTS: usize = 2;
/// Accounts of its low-contention cells: two operations rarely want the same one.
pub const MANY_ACCOUNTS: usize = 64;
/// The first seed of the ledger cells' random operations; repeat `i` uses this plus `i`, so
/// that every cell runs the same operations in the same order and a run can be repeated.
pub const LEDGER_SEED: u64 = 1;

/// The models of the ledger suite, each with the flags that put it on one core as in the
/// other suites. Every ledger operation runs where the model runs store calls: the offload
/// pool for all five (`--db-mode offload`, the default), so the locks are real OS-thread locks.
fn ledger_models() -> [(&'static str, &'static [&'static str]); 5] {
    [("async", &["--threads", "1"]), ("threads", &[]), ("reactor", &[]), ("green", &[]), ("uring", &[])]
}

/// The peers of the plaintext suite, each on one worker (one core) where it has a choice.
fn plaintext_peers() -> Vec<(&'static str, Subject)> {
    vec![
        ("nginx", Subject::peer("nginx", Some(1))),
        ("apache-prefork", Subject::peer("apache-prefork", None)),
        ("apache-event", Subject::peer("apache-event", Some(1))),
        ("tornado", Subject::peer("tornado", Some(1))),
        ("gevent", Subject::peer("gevent", Some(1))),
        ("hyper", Subject::peer("hyper", Some(1))),
        ("raw", Subject::peer("raw", Some(1))),
    ]
}

/// Requests in flight per connection in the plaintext suite's pipelined cells (what
/// TechEmpower's plaintext test uses).
pub const PIPELINE: usize = 16;

/// The servers of the plaintext suite's pipelined cells: the models a pipelined batch
/// suits (one thread serving many connections) and the peers the goal is judged against.
/// Tornado and gevent are not among them: no goal or claim compares them on plaintext.
fn pipelined_servers() -> Vec<(&'static str, Subject)> {
    vec![
        ("reactor", Subject::model("reactor", &["--poller", "epoll"])),
        ("uring", Subject::model("uring", &[])),
        ("async", Subject::model("async", &["--threads", "1"])),
        ("green", Subject::model("green", &["--poller", "epoll"])),
        ("nginx", Subject::peer("nginx", Some(1))),
        ("hyper", Subject::peer("hyper", Some(1))),
        ("raw", Subject::peer("raw", Some(1))),
    ]
}

/// The series of a server's pipelined plaintext cell: `reactor (pipelined 16)`.
pub fn pipelined_series(server: &str) -> String {
    format!("{server} (pipelined {PIPELINE})")
}

impl Cell {
    /// Requests in flight per connection: the plaintext scenario's pipeline depth, 1 for
    /// every other cell.
    pub fn pipeline(&self) -> usize {
        match &self.action {
            Action::Load {
                scenario: Scenario::Plaintext(c),
                ..
            } => c.pipeline,
            _ => 1,
        }
    }
}

/// Builds every suite at `scale`.
pub fn suites(scale: Scale) -> Vec<Cell> {
    let mut cells = Vec::new();
    let d = scale.duration;
    let reps = scale.repeats;
    let cell = |suite: &str, id: String, series: &str, x: Option<f64>, subject: Subject, action: Action| Cell {
        suite: suite.into(),
        id,
        series: series.into(),
        x,
        subject,
        action,
        pinned: true,
        repeats: reps,
        needs_sysctl: false,
        profile: false,
        wrk: false,
        syscalls: false,
    };

    // plaintext: every model and every peer, one core each, 64 keep-alive connections;
    // then wrk once with the same connections, to cross-check the load generator.
    let conns = scale.pick(64, 8);
    for (series, subject) in plaintext_models().into_iter().chain(plaintext_peers()) {
        let scenario = Scenario::Plaintext(PlaintextConfig {
            connections: conns,
            requests: None,
            pipeline: 1,
        });
        let mut c = cell("plaintext", series.into(), series, None, subject, load(scenario, d));
        c.profile = series == "async";
        c.wrk = true;
        c.syscalls = true;
        cells.push(c);
    }
    // The same connections with 16 requests in flight on each: the client's system calls
    // per request shrink sixteenfold, so the server's cost, not the client's, sets the
    // rate (one in flight, the client's core saturates first). No wrk: it cannot pipeline
    // without a Lua script.
    for (server, subject) in pipelined_servers() {
        let scenario = Scenario::Plaintext(PlaintextConfig {
            connections: conns,
            requests: None,
            pipeline: PIPELINE,
        });
        let id = format!("{server}/pipelined{PIPELINE}");
        let mut c = cell("plaintext", id, &pipelined_series(server), None, subject, load(scenario, d));
        // The plaintext goal is judged on these, on whichever model is best: profile each.
        c.profile = !c.subject.is_peer();
        c.syscalls = true;
        cells.push(c);
    }

    // wakeup: reactor on each poller, K idle keep-alive connections, one busy one.
    for poller in ["select", "poll", "epoll"] {
        for idle in scale.pick(vec![0, 1000, 5000, 10000], vec![0, 20]) {
            let subject = Subject::model("reactor", &["--poller", poller]);
            let action = Action::Wakeup {
                idle,
                duration: scale.pick(3.0, d),
            };
            cells.push(cell(
                "wakeup",
                format!("{poller}@{idle}"),
                &format!("reactor/{poller}"),
                Some(idle as f64),
                subject,
                action,
            ));
        }
    }

    // dbstall: a slow store, inline against offload.
    let slow = 20;
    for (series, model, extra) in dbstall_models() {
        for mode in ["offload", "inline"] {
            let (mut subject, scenario) = dbstall_load(scale, model, extra, mode, scale.pick((4, 20.0), (1, 10.0)));
            if let Subject::Model { db_slow_ms, .. } = &mut subject {
                *db_slow_ms = Some(slow);
            }
            cells.push(cell(
                "dbstall",
                format!("{series}/{mode}"),
                &format!("{series}/{mode}"),
                None,
                subject,
                load(scenario, d),
            ));
        }
    }
    // The same on the database servers, each store call waiting on a 50 ms query there,
    // and with native drivers too. Posters outnumber the 16 connections a server process
    // keeps, and offer more than 16 of them can store (16 / 50 ms = 320/s), so the rate
    // stored is the server's: inline on one thread ~20/s, offload's 4 threads ~80/s.
    for database in Database::ALL {
        for (series, model, extra) in dbstall_models() {
            for mode in DB_MODES {
                let posts = scale.pick((DB_POSTERS, DB_POST_RATE), (2, 20.0));
                let (mut subject, scenario) = dbstall_load(scale, model, extra, mode, posts);
                if let Subject::Model { db_server, .. } = &mut subject {
                    *db_server = Some(DbServer { database, sleep_ms: DB_SLEEP_MS });
                }
                let id = format!("{}/{series}/{mode}", database.id());
                cells.push(cell("dbstall", id.clone(), &id, None, subject, load(scenario, d)));
            }
        }
    }

    // ledger: every strategy on every model, on many accounts and on two hot ones. 16
    // connections of 400 operations: a couple of seconds for the slowest strategy (giant,
    // about 4,000 a second), long enough that the p99 has a few dozen operations above it.
    for (model, extra) in ledger_models() {
        for accounts in [HOT_ACCOUNTS, MANY_ACCOUNTS] {
            for locking in LEDGER_LOCKINGS {
                let mut args = extra.to_vec();
                args.extend(["--locking", locking]);
                let action = Action::Ledger {
                    connections: scale.pick(16, 4),
                    ops: scale.pick(400, 20),
                    accounts,
                    timeout: 60.0,
                };
                cells.push(cell(
                    "ledger",
                    format!("{model}/{locking}@{accounts}"),
                    &format!("{model}/{locking}"),
                    Some(accounts as f64),
                    Subject::model(model, &args),
                    action,
                ));
            }
        }
    }

    // cpu: GET /cpu beside GET /plaintext; the server may use every core (the giant lock
    // and the green-threads claims are about using several).
    for (series, subject) in [
        ("threads", Subject::model("threads", &[])),
        ("threads+giant-lock", Subject::model("threads", &["--giant-lock"])),
        ("reactor", Subject::model("reactor", &[])),
        ("green", Subject::model("green", &[])),
        ("green×2", Subject::model("green", &["--workers", "2"])),
        ("async", Subject::model("async", &["--threads", "2"])),
    ] {
        // One plaintext connection: enough to see the other clients' latency, light
        // enough that the hashing can have both cores. Eight hashing connections: with
        // `--workers 2` each worker has its own listener and the kernel picks one by a hash
        // of the client's port, so with four all of them landed on one worker one time in
        // eight (green×2 then measured one core); with eight, one time in 128.
        let scenario = Scenario::Cpu(CpuConfig {
            connections: 1,
            cpu_connections: scale.pick(8, 2),
            cost: scale.pick(1_000_000, 100_000),
            requests: None,
        });
        let mut c = cell("cpu", series.into(), series, None, subject, load(scenario, d));
        c.pinned = false;
        cells.push(c);
    }

    // fanout: long-poll subscribers against a back-to-back poster, and a paced one at the top size.
    let fan_models = [
        ("async", Subject::model("async", &["--threads", "1"])),
        ("threads", Subject::model("threads", &[])),
        ("reactor", Subject::model("reactor", &[])),
        ("uring", Subject::model("uring", &[])),
        ("green", Subject::model("green", &[])),
        ("tornado", Subject::peer("tornado", Some(1))),
        ("gevent", Subject::peer("gevent", Some(1))),
    ];
    let sizes: Vec<(usize, u64)> = scale.pick(vec![(100, 200), (1000, 50), (10000, 20)], vec![(10, 5)]);
    for (series, subject) in &fan_models {
        for &(n, m) in &sizes {
            // The Python peers deliver a few thousand a second: fewer messages at the top
            // size keep a repeat under a minute (deliveries per second is a rate either way).
            let m = if subject.is_peer() && n >= 10_000 { m.min(5) } else { m };
            let scenario = Scenario::LongpollFanout(BroadcastConfig {
                subscribers: n,
                messages: m,
                rate: 0.0,
                room: None,
                drain_secs: 10.0,
                ..BroadcastConfig::default()
            });
            let mut c = cell(
                "fanout",
                format!("{series}@{n}"),
                series,
                Some(n as f64),
                subject.clone(),
                load(scenario, 30.0),
            );
            c.profile = *series == "async" && n == 10000;
            cells.push(c);
        }
        let top = sizes.last().map_or(10, |s| s.0);
        let scenario = Scenario::LongpollFanout(BroadcastConfig {
            subscribers: top,
            messages: scale.pick(10, 3),
            rate: scale.pick(2.0, 10.0),
            room: None,
            drain_secs: 10.0,
            ..BroadcastConfig::default()
        });
        let mut paced = cell(
            "fanout",
            format!("{series}@{top}/paced"),
            &format!("{series} (paced)"),
            Some(top as f64),
            subject.clone(),
            load(scenario, 30.0),
        );
        // The goal names whichever of our models has the lowest paced p99: profile each.
        paced.profile = !subject.is_peer();
        cells.push(paced);
    }

    // ws: WebSocket broadcast, back to back.
    for (series, subject) in [
        ("async", Subject::model("async", &["--threads", "1"])),
        ("reactor", Subject::model("reactor", &[])),
        ("uring", Subject::model("uring", &[])),
        ("green", Subject::model("green", &[])),
        ("threads", Subject::model("threads", &[])),
    ] {
        for (n, m) in scale.pick(vec![(1000, 500), (10000, 50)], vec![(10, 20)]) {
            let scenario = Scenario::WsBroadcast(BroadcastConfig {
                subscribers: n,
                messages: m,
                rate: 0.0,
                room: None,
                drain_secs: 10.0,
                ..BroadcastConfig::default()
            });
            let mut c = cell(
                "ws",
                format!("{series}@{n}"),
                series,
                Some(n as f64),
                subject.clone(),
                load(scenario, 30.0),
            );
            c.profile = series == "async" && n == 1000;
            cells.push(c);
        }
        // Subscribers that stop reading (issue 12 D): the same readers and 4 KB messages
        // without and with 20 stalled subscribers in the room, side by side. The stalled
        // ones fill their socket buffers and then the server's cap (`--max-outgoing`, 1 MiB)
        // and are disconnected; the readers' p99 should not move.
        let (readers, messages) = scale.pick((100, 1500), (5, 20));
        for stalled in [0, scale.pick(20, 2)] {
            let scenario = Scenario::WsBroadcast(BroadcastConfig {
                subscribers: readers,
                messages,
                drain_secs: 10.0,
                stalled,
                body_bytes: 4000,
                ..BroadcastConfig::default()
            });
            let (id, name) = match stalled {
                0 => (format!("{series}@{readers}/4KB"), format!("{series} (4 KB bodies)")),
                k => (format!("{series}@{readers}/4KB+{k}stalled"), format!("{series} (4 KB bodies, {k} stalled)")),
            };
            cells.push(cell("ws", id, &name, Some(readers as f64), subject.clone(), load(scenario, 60.0)));
        }
    }

    // idle: idle keep-alive connections, our models against nginx and Apache.
    for (series, subject) in [
        ("async", Subject::model("async", &["--threads", "1"])),
        ("threads", Subject::model("threads", &[])),
        ("prefork", Subject::model("prefork", &["--workers", "256"])),
        ("reactor", Subject::model("reactor", &[])),
        ("uring", Subject::model("uring", &[])),
        ("green", Subject::model("green", &[])),
        ("nginx", Subject::peer("nginx", Some(1))),
        ("apache-prefork", Subject::peer("apache-prefork", None)),
        ("apache-event", Subject::peer("apache-event", Some(1))),
    ] {
        for k in scale.pick(vec![1000, 10000], vec![20]) {
            let mut c = cell(
                "idle",
                format!("{series}@{k}"),
                series,
                Some(k as f64),
                subject.clone(),
                Action::IdleKeepAlive { connections: k },
            );
            c.repeats = 1;
            cells.push(c);
        }
    }

    // capacity: idle SSE subscribers on one process; prefork with as many workers as connections.
    for (series, model, args) in [
        ("async", "async", vec!["--threads", "1"]),
        ("threads", "threads", vec![]),
        ("reactor", "reactor", vec![]),
        ("uring", "uring", vec![]),
        ("green", "green", vec![]),
    ] {
        // 18,000 is near the 19,000 cap that the 20,000 open-files limit leaves (every
        // model, threads included, spends one descriptor per connection).
        for k in scale.pick(vec![1000, 5000, 9000, 18000], vec![20]) {
            let mut c = cell(
                "capacity",
                format!("{series}@{k}"),
                series,
                Some(k as f64),
                Subject::model(model, &args),
                capacity(k, 40.0),
            );
            c.repeats = 1;
            c.needs_sysctl = series == "threads";
            cells.push(c);
        }
    }
    for k in scale.pick(vec![250, 1000, 2000], vec![4]) {
        // One process per subscriber, and one more for the poster (which connects first).
        let workers = (k + 2).to_string();
        let mut c = cell(
            "capacity",
            format!("prefork@{k}"),
            "prefork",
            Some(k as f64),
            Subject::model("prefork", &["--workers", &workers, "--history", "20"]),
            capacity(k, 90.0),
        );
        c.repeats = 1;
        c.needs_sysctl = true;
        cells.push(c);
    }

    // c100k: 100,000 idle subscribers over several worker processes (19,000 each at most:
    // the open-files limit is 20,000 per process and cannot be raised).
    let (k, workers) = scale.pick((100_000, 8), (40, 2));
    for (series, model) in [
        ("async", "async"),
        ("reactor", "reactor"),
        ("uring", "uring"),
        ("green", "green"),
        ("threads", "threads"),
    ] {
        // 12,500 a worker: each worker has its own SO_REUSEPORT listener, so the kernel
        // spreads the connections evenly, well under the 19,000 cap of each.
        let w = workers.to_string();
        let mut c = cell(
            "c100k",
            format!("{series}@{k}"),
            series,
            Some(k as f64),
            Subject::model(model, &["--workers", &w]),
            capacity(k, 240.0),
        );
        c.repeats = 1;
        c.pinned = false;
        c.needs_sysctl = true;
        c.profile = series == "async";
        cells.push(c);
    }

    // presence: what presence costs. The same idle WebSocket subscribers twice: plain, and
    // each a named member of the room that asks for presence events (so every join is a
    // change to flush, and every flush goes to every subscriber), at 10,000 on one process
    // and at 100,000 on 8 workers that share it over the relay.
    for (k, workers) in scale.pick(vec![(10_000usize, 1usize), (100_000, 8)], vec![(20, 1), (40, 2)]) {
        for (series, presence) in [("plain", false), ("members", true)] {
            let w = workers.to_string();
            let args: Vec<&str> = if workers > 1 { vec!["--workers", &w] } else { vec!["--threads", "1"] };
            let action = Action::Capacity { connections: k, via: Via::Ws, timeout: if workers > 1 { 240.0 } else { 60.0 }, presence };
            let mut c = cell("presence", format!("{series}@{k}"), series, Some(k as f64), Subject::model("async", &args), action);
            c.repeats = 1;
            c.pinned = workers == 1;
            c.needs_sysctl = workers > 1;
            cells.push(c);
        }
    }

    // c1m: the async model past 100,000, a step at a time; the runner stops at the first
    // step that fails or that would not fit in the memory left.
    // The reactor too: it keeps the least per connection; and uring, whose idle connections
    // hold no read buffer, against it.
    for (series, extra) in [("async", vec!["--threads", "1"]), ("reactor", vec![]), ("uring", vec![])] {
        for k in scale.pick(vec![200_000usize, 400_000, 700_000, 1_000_000], vec![60]) {
            // 10,000 a worker: evenly spread (SO_REUSEPORT), with room under the 19,000
            // cap for the hash's unevenness.
            let w = k.div_ceil(10_000).max(2).to_string();
            let mut args = vec!["--workers", w.as_str()];
            args.extend(extra.iter().copied());
            let mut c = cell(
                "c1m",
                format!("{series}@{k}"),
                series,
                Some(k as f64),
                Subject::model(series, &args),
                capacity(k, 420.0),
            );
            c.repeats = 1;
            c.pinned = false;
            c.needs_sysctl = true;
            cells.push(c);
        }
    }

    // Opening 100,000 subscribers takes longer than the 75 s keep-alive timeout, and the
    // load generator opens its poster first: keep idle connections for 15 minutes.
    for c in cells.iter_mut().filter(|c| matches!(c.action, Action::Capacity { .. })) {
        if let Subject::Model { args, .. } = &mut c.subject {
            args.extend(["--idle-timeout".to_string(), "900".to_string()]);
        }
    }
    cells
}

fn load(scenario: Scenario, duration: f64) -> Action {
    let timeout = duration + 60.0;
    Action::Load {
        scenario,
        duration,
        timeout,
    }
}

fn capacity(connections: usize, timeout: f64) -> Action {
    Action::Capacity {
        connections,
        via: Via::Sse,
        timeout,
        presence: false,
    }
}

impl Action {
    /// The `c10k load ...` command that does what one repeat of this cell does.
    pub fn load_command(
        &self,
        target: &str,
        client_threads: usize,
        client_cpus: Option<&str>,
        server_pid: Option<u32>,
    ) -> String {
        let pin = client_cpus.map(|c| format!("taskset -c {c} ")).unwrap_or_default();
        let common = format!("--target {target} --client-threads {client_threads}");
        match self {
            Action::Load { scenario, duration, timeout } => {
                let args = match scenario {
                    Scenario::Plaintext(c) if c.pipeline > 1 => {
                        format!("plaintext -c {} --pipeline {}", c.connections, c.pipeline)
                    }
                    Scenario::Plaintext(c) => format!("plaintext -c {}", c.connections),
                    Scenario::LongpollFanout(c) | Scenario::WsBroadcast(c) | Scenario::SseBroadcast(c) => format!(
                        "{} -n {} -m {} --rate {} --drain {}",
                        scenario.name(),
                        c.subscribers,
                        c.messages,
                        c.rate,
                        c.drain_secs
                    ),
                    Scenario::IdleCapacity(c) => format!("idle-capacity -c {} --via {}", c.connections, c.via.name()),
                    Scenario::DbStall(c) => format!(
                        "db-stall -c {} --probe-rate {} --posters {} --post-rate {}",
                        c.connections, c.probe_rate, c.posters, c.post_rate
                    ),
                    Scenario::Cpu(c) => format!("cpu -c {} --cpu-connections {} --cost {}", c.connections, c.cpu_connections, c.cost),
                };
                format!("{pin}c10k load {args} {common} --duration {duration} --timeout {timeout}")
            }
            Action::Capacity { connections, via, timeout, presence } => format!(
                "{pin}c10k load idle-capacity -c {connections} --via {}{}{} {common} --timeout {timeout}",
                via.name(),
                if *presence { " --presence" } else { "" },
                server_pid.map(|p| format!(" --server-pid {p}")).unwrap_or_default()
            ),
            Action::IdleKeepAlive { connections } => format!(
                "{pin}c10k bench's idle holder: {connections} keep-alive connections to {target}, one GET /plaintext each, \
                 then one more on each (no c10k load equivalent)"
            ),
            Action::Wakeup { idle, duration } => format!(
                "{pin}c10k bench's idle holder ({idle} keep-alive connections), then c10k load plaintext -c 1 {common} --duration {duration}"
            ),
            Action::Ledger { connections, ops, accounts, timeout } => format!(
                "{pin}c10k ledger-check --target {target} --connections {connections} --ops {ops} --accounts {accounts} \
                 --timeout {timeout} --seed {LEDGER_SEED} (repeat i: --seed {LEDGER_SEED}+i)"
            ),
        }
    }

    /// An upper bound on one repeat's wall time, for the plan.
    pub fn bound(&self) -> Duration {
        Duration::from_secs_f64(match self {
            Action::Load { timeout, .. } | Action::Capacity { timeout, .. } | Action::Ledger { timeout, .. } => *timeout,
            Action::IdleKeepAlive { .. } => 60.0,
            Action::Wakeup { duration, .. } => duration + 60.0,
        })
    }
}
