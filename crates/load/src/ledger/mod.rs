//! `c10k ledger-check`: fires concurrent withdrawals, transfers and audits at a c10k
//! server's `/api/bank` from many connections, then checks the answers ([`history`]).
//!
//! A run, bounded in count and time:
//! 1. creates its own accounts (`john`, `jane`, then `acct2`, `acct3`... with `--accounts`),
//!    each holding `--balance` cents, under a prefix unique to the run;
//! 2. **the canonical race**: every connection withdraws John's whole balance at once
//!    (they are released together by a barrier); exactly one may be accepted;
//! 3. **the mix**: each connection sends `--ops` random operations: transfers between two
//!    accounts (70%), small withdrawals (20%) and audits (10%);
//! 4. reads the final balances, and checks the whole history.
//!
//! It exits 0 when no violation is found, 1 with each violation printed when one is, and
//! 2 when the run could not be carried out.

pub mod history;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::client::http::{get, post_json, Conn, Reply};
use crate::target::parse_target;
use crate::LoadError;
use history::{Answer, Event, History, Nanos, Op};

/// The server's largest amount (`c10k_core::ledger::MAX_AMOUNT`; this crate only speaks
/// HTTP to the server, so it repeats the number).
const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// The most violations printed; the count says how many more there were.
const MAX_PRINTED: usize = 20;

/// `c10k ledger-check`'s flags.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The server: HOST:PORT or the URL `c10k serve` prints. Loopback only.
    #[arg(long, default_value = "127.0.0.1:8888", value_name = "ADDR")]
    pub target: String,
    /// Client connections firing at once (against prefork: fewer than its workers, which
    /// serve one connection each).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub connections: usize,
    /// Random operations per connection after the canonical race.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub ops: usize,
    /// Accounts (at least 2: john and jane; more spread the contention).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub accounts: usize,
    /// Cents each account starts with.
    #[arg(long, default_value_t = 2500, value_name = "CENTS")]
    pub balance: i64,
    /// Seconds the whole run may take; unanswered requests then count as unknown.
    #[arg(long, default_value_t = 60.0, value_name = "DURATION", value_parser = crate::cli::parse_seconds)]
    pub timeout: f64,
    /// Seed of the random operations (default: from the clock).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The server's `--locking`, as its audit says.
    pub locking: String,
    /// Concurrent operations sent.
    pub operations: usize,
    /// Accepted, refused for insufficient funds, unavailable (503), unanswered.
    pub counts: [usize; 4],
    /// How many of the canonical race's withdrawals of John's whole balance were accepted
    /// (1 when the ledger is right).
    pub race_won: usize,
    /// Every violation found, one line each.
    pub violations: Vec<String>,
    /// How long the concurrent phases took.
    pub elapsed: Duration,
    /// Answered operations per second over the concurrent phases.
    pub per_second: f64,
    /// Median and 99th-percentile latency of the answered operations.
    pub p50_p99: (Duration, Duration),
}

/// `c10k ledger-check`: runs, prints, and turns the outcome into the exit status.
pub fn run_cli(args: CheckArgs) -> ExitCode {
    use std::io::Write;
    match run(&args) {
        Ok(report) => {
            // A closed standard output (`| head`) ends the printing, not the process.
            let mut out = std::io::stdout().lock();
            let [ok, insufficient, unavailable, unknown] = report.counts;
            let _ = writeln!(
                out,
                "ledger-check: locking {}, {} operations from {} connections in {:.2} s: {ok} accepted, \
                 {insufficient} insufficient funds, {unavailable} unavailable, {unknown} unanswered",
                report.locking,
                report.operations,
                args.connections,
                report.elapsed.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "throughput {:.0} operations/s, latency p50 {:.2} ms, p99 {:.2} ms",
                report.per_second,
                report.p50_p99.0.as_secs_f64() * 1e3,
                report.p50_p99.1.as_secs_f64() * 1e3
            );
            let _ = writeln!(
                out,
                "the canonical race: {} withdrawals of john's whole {} at once, {} accepted",
                args.connections, args.balance, report.race_won
            );
            if report.violations.is_empty() {
                let _ = writeln!(out, "ok: no balance went negative, money was conserved, every answer fits a serial order");
                return ExitCode::SUCCESS;
            }
            for violation in report.violations.iter().take(MAX_PRINTED) {
                let _ = writeln!(out, "VIOLATION {violation}");
            }
            if report.violations.len() > MAX_PRINTED {
                let _ = writeln!(out, "... and {} more violations", report.violations.len() - MAX_PRINTED);
            }
            let _ = writeln!(out, "FAILED: {} violations: the server's ledger lost or created money", report.violations.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("c10k ledger-check: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs one check (see the module docs). Blocks; builds its own runtime.
pub fn run(args: &CheckArgs) -> Result<CheckReport, LoadError> {
    let target = parse_target(&args.target)?;
    if args.connections < 2 || args.accounts < 2 {
        return Err(LoadError::Config("--connections and --accounts must each be at least 2".into()));
    }
    if !(1..=MAX_AMOUNT).contains(&args.balance) {
        return Err(LoadError::Config(format!("--balance must be from 1 to {} cents", MAX_AMOUNT)));
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(LoadError::Config("--timeout must be a number of seconds above 0".into()));
    }
    let runtime = crate::build_runtime(0)?;
    runtime.block_on(check(target, args.clone()))
}


/// One client connection and the names it uses.
struct Client {
    target: SocketAddr,
    host: String,
    conn: Option<Conn>,
    deadline: Instant,
}

impl Client {
    /// Sends `op`, timing it on the run's clock.
    async fn run(&mut self, names: &Names, op: Op, since: impl Fn() -> Nanos) -> Event {
        let bytes = request(names, &self.host, &op);
        let start = since();
        let reply = self.send(&bytes).await;
        let end = reply.is_ok().then(&since);
        Event { start, end, answer: answer(names, reply), op }
    }

    fn new(target: SocketAddr, deadline: Instant) -> Client {
        Client { target, host: target.to_string(), conn: None, deadline }
    }

    /// One request; reconnects once if the kept-alive connection is gone.
    async fn send(&mut self, request: &[u8]) -> Result<Reply, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the run's --timeout passed first".into());
        }
        let attempt = async {
            if self.conn.is_none() {
                self.conn = Some(Conn::open(self.target, None).await.map_err(|e| e.to_string())?);
            }
            let conn = self.conn.as_mut().expect("just opened");
            let reply = conn.request(request).await.map_err(|e| e.to_string());
            if reply.as_ref().map_or(true, |r| r.close) {
                self.conn = None;
            }
            reply
        };
        match tokio::time::timeout(left, attempt).await {
            Ok(reply) => reply,
            Err(_) => {
                self.conn = None;
                Err("no answer before the run's --timeout".into())
            }
        }
    }
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
}

fn account_balance(value: &Value) -> Option<(String, i64)> {
    Some((value.get("id")?.as_str()?.to_string(), value.get("balance")?.as_i64()?))
}

/// The names a run gives its accounts on the server, and back.
struct Names {
    prefix: String,
}

impl Names {
    fn server(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    fn short<'a>(&self, server: &'a str) -> Option<&'a str> {
        server.strip_prefix(&self.prefix)?.strip_prefix('-')
    }

    /// The answer's balances, renamed to the run's short names (other runs' accounts dropped).
    fn balances(&self, reply: &Reply) -> Vec<(String, i64)> {
        let body = json(reply);
        let mut out = Vec::new();
        let mut take = |v: &Value| {
            if let Some((id, balance)) = account_balance(v) {
                if let Some(short) = self.short(&id) {
                    out.push((short.to_string(), balance));
                }
            }
        };
        if let Some(accounts) = body.get("accounts").and_then(Value::as_array) {
            accounts.iter().for_each(&mut take);
        } else if body.get("from").is_some() {
            take(&body["from"]);
            take(&body["to"]);
        } else {
            take(&body);
        }
        out
    }
}

fn answer(names: &Names, reply: Result<Reply, String>) -> Answer {
    match reply {
        Err(e) => Answer::Unknown(e),
        Ok(r) if r.status == 200 => Answer::Ok(names.balances(&r)),
        Ok(r) if r.status == 422 && json(&r)["code"] == "insufficient_funds" => Answer::Insufficient,
        Ok(r) if r.status == 503 => Answer::NotApplied(String::from_utf8_lossy(&r.body).into_owned()),
        Ok(r) => Answer::Unexpected(format!("{} {}", r.status, String::from_utf8_lossy(&r.body).trim())),
    }
}

fn request(names: &Names, host: &str, op: &Op) -> Vec<u8> {
    match op {
        Op::Withdraw { account, amount } => post_json(
            &format!("/api/bank/accounts/{}/withdraw", names.server(account)),
            host,
            &format!(r#"{{"amount":{amount}}}"#),
        ),
        Op::Transfer { from, to, amount } => post_json(
            "/api/bank/transfers",
            host,
            &format!(r#"{{"from":"{}","to":"{}","amount":{amount}}}"#, names.server(from), names.server(to)),
        ),
        Op::Audit => get("/api/bank/audit", host),
    }
}

/// SplitMix64: a few random numbers per operation, reproducible from `--seed`.
pub(crate) struct Random(pub(crate) u64);

impl Random {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_op(random: &mut Random, accounts: &[String], balance: i64) -> Op {
    let pick = |random: &mut Random| accounts[random.below(accounts.len() as u64) as usize].clone();
    match random.below(10) {
        0..=6 => {
            let from = pick(random);
            let mut to = pick(random);
            while to == from {
                to = pick(random);
            }
            Op::Transfer { from, to, amount: 1 + random.below((balance as u64 / 10).max(1)) as i64 }
        }
        // Small, so that the bank is not drained before the mix is over.
        7 | 8 => Op::Withdraw { account: pick(random), amount: 1 + random.below((balance as u64 / 250).max(1)) as i64 },
        _ => Op::Audit,
    }
}

async fn check(target: SocketAddr, args: CheckArgs) -> Result<CheckReport, LoadError> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let names = Arc::new(Names { prefix: format!("lc{:x}{:x}", std::process::id(), seed & 0xFF_FFFF) });
    let mut setup = Client::new(target, deadline);
    let server = |e: String| LoadError::Server(format!("cannot reach {target}: {e}; is `c10k serve` running there?"));

    // Which strategy, and whether the route is there at all.
    let audit = setup.send(&get("/api/bank/audit", &setup.host)).await.map_err(server)?;
    if audit.status != 200 {
        return Err(LoadError::Server(format!(
            "GET /api/bank/audit answered {}: {}; the target must be a c10k server with the ledger",
            audit.status,
            String::from_utf8_lossy(&audit.body).trim()
        )));
    }
    let locking = json(&audit)["locking"].as_str().unwrap_or("unknown").to_string();

    let mut accounts = vec!["john".to_string(), "jane".to_string()];
    accounts.extend((2..args.accounts).map(|i| format!("acct{i}")));
    let mut initial = BTreeMap::new();
    for account in &accounts {
        let body = format!(r#"{{"id":"{}","balance":{}}}"#, names.server(account), args.balance);
        let reply = setup.send(&post_json("/api/bank/accounts", &setup.host, &body)).await.map_err(server)?;
        if reply.status != 201 {
            return Err(LoadError::Server(format!(
                "creating account {account} answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body).trim()
            )));
        }
        initial.insert(account.clone(), args.balance);
    }

    // Closed during the concurrent phases: a prefork server serves one connection per
    // worker, and an idle one held here would keep a worker from the race.
    setup.conn = None;
    let started = Instant::now();
    let since = move || started.elapsed().as_nanos() as Nanos;
    let barrier = Arc::new(tokio::sync::Barrier::new(args.connections));
    let accounts = Arc::new(accounts);
    let tasks: Vec<_> = (0..args.connections)
        .map(|index| {
            let (names, barrier, accounts) = (Arc::clone(&names), Arc::clone(&barrier), Arc::clone(&accounts));
            let mut random = Random(seed ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let (ops, balance) = (args.ops, args.balance);
            tokio::spawn(async move {
                let mut client = Client::new(target, deadline);
                let mut events = Vec::with_capacity(ops + 1);
                // Open the connection before the barrier, so the race starts at once.
                let _ = client.send(&get("/healthz", &client.host)).await;
                barrier.wait().await;
                let race = Op::Withdraw { account: "john".into(), amount: balance };
                events.push(client.run(&names, race, since).await);
                // Every answer of the race is in before the mix begins, so that the race's
                // events are a history of their own, checked on their own.
                barrier.wait().await;
                for _ in 0..ops {
                    let op = random_op(&mut random, &accounts, balance);
                    events.push(client.run(&names, op, since).await);
                }
                events
            })
        })
        .collect();
    let mut events = Vec::new();
    for task in tasks {
        events.extend(task.await.map_err(|e| LoadError::Setup(format!("a client task failed: {e}")))?);
    }
    let elapsed = started.elapsed();

    let final_audit = setup.send(&get("/api/bank/audit", &setup.host)).await;
    let final_balances = match final_audit {
        Ok(reply) if reply.status == 200 => Some(names.balances(&reply).into_iter().collect()),
        Ok(reply) => {
            return Err(LoadError::Server(format!("the final audit answered {}; run the check again", reply.status)))
        }
        Err(e) => return Err(server(e)),
    };
    let race = History {
        initial: initial.clone(),
        events: events.iter().step_by(args.ops + 1).cloned().collect(),
        final_balances: None,
    };
    let race_won = race.events.iter().filter(|e| matches!(e.answer, Answer::Ok(_))).count();
    let history = History { initial, events, final_balances };
    let mut violations = history::check(&race);
    violations.extend(history::check(&history));
    violations.dedup();
    let mut counts = [0; 4];
    for e in &history.events {
        counts[match e.answer {
            Answer::Ok(_) => 0,
            Answer::Insufficient => 1,
            Answer::NotApplied(_) | Answer::Unexpected(_) => 2,
            Answer::Unknown(_) => 3,
        }] += 1;
    }
    let mut latencies: Vec<Nanos> = history.events.iter().filter_map(|e| Some(e.end? - e.start)).collect();
    latencies.sort_unstable();
    let at = |q: f64| Duration::from_nanos(latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0));
    let per_second = latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let p50_p99 = (at(0.50), at(0.99));
    Ok(CheckReport { locking, operations: history.events.len(), counts, race_won, violations, elapsed, per_second, p50_p99 })
}
