//! `c10k queue-check`: a total-queue check (after Jepsen's) of rooms shared by several
//! nodes. Publishers post to rooms through random nodes; subscribers spread over the nodes
//! and the three transports (long-poll, SSE, WebSocket) read them, dropping their
//! connection now and then and resuming from their last id on a random node. At the end
//! every subscriber's sequence is compared with the stored order of its room, read from
//! the store itself (`--db`), and every acknowledged post is looked up there
//! ([`verdict`]): lost, doubled, reordered and phantom messages are counted and listed.
//!
//! A run, bounded in count and time:
//! 1. the subscribers subscribe (rooms are fresh, unique to the run);
//! 2. `--publishers` post `--messages` each, at `--rate` per second each; a post that
//!    fails (a node down, 503) is retried on another node with a new body;
//! 3. once the posts are done, the stored order of each room is read, and the subscribers
//!    are given `--drain` seconds to reach its newest id (the catch-up time is reported);
//! 4. the verdict.
//!
//! Exit 0 when nothing is lost, doubled, reordered or invented and every acknowledged post
//! is stored; 1 (each fault listed) otherwise; 2 when the run could not be carried out.

pub mod verdict;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;
use tokio::sync::watch;

use crate::client::feed::{Feed, FeedSpec};
use crate::client::http::{post_json, Conn};
use crate::ledger::Random;
use crate::scenarios::Via;
use crate::target::parse_target;
use crate::LoadError;
use verdict::{judge, missing_acked, Acked, Faults, Seen, Subscriber};

/// The most ids printed per kind of fault and subscriber.
const MAX_LISTED: usize = 10;
/// How long one post may take before it counts as unanswered.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a post is tried (on different nodes) before it is given up.
const POST_ATTEMPTS: u32 = 50;
/// The pause between two attempts at a post, or at (re)subscribing.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// `c10k queue-check`'s flags.
#[derive(Args, Debug, Clone)]
pub struct QueueCheckArgs {
    /// A node: HOST:PORT or the URL `c10k serve` prints; repeat it for each node. Loopback
    /// (or this machine's own network namespaces' addresses) only.
    #[arg(long = "target", required = true, value_name = "ADDR")]
    pub targets: Vec<String>,
    /// Publishers post only through these nodes (repeatable; default: every `--target`),
    /// e.g. to make the others depend on the bus alone.
    #[arg(long = "publish-via", value_name = "ADDR")]
    pub publish_via: Vec<String>,
    /// The store the nodes share (the same `--db` they were given): the stored order is
    /// read from it.
    #[arg(long, value_name = "URL")]
    pub db: String,
    /// Publishers, each posting through random nodes.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub publishers: usize,
    /// Messages each publisher posts.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub messages: usize,
    /// Posts per second of each publisher.
    #[arg(long, default_value_t = 50.0, value_name = "N")]
    pub rate: f64,
    /// Subscribers, spread over the nodes and the three transports in turn.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub subscribers: usize,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub rooms: usize,
    /// Each subscriber drops its connection after a random 1 to 2×N messages and resumes
    /// from its last id on a random node; 0: never.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub disconnect_every: u64,
    /// Seconds the subscribers are given, after the last post, to reach each room's newest id.
    #[arg(long, default_value_t = 30.0, value_name = "DURATION", value_parser = crate::cli::parse_seconds)]
    pub drain: f64,
    /// Seconds the posting phase may take at most.
    #[arg(long, default_value_t = 120.0, value_name = "DURATION", value_parser = crate::cli::parse_seconds)]
    pub timeout: f64,
    /// Seed of the random choices (default: from the clock).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct QueueReport {
    /// Messages stored in the run's rooms.
    pub stored: usize,
    /// Posts acknowledged (201).
    pub acked: usize,
    /// Posts that got no answer (they may or may not be stored).
    pub unanswered: usize,
    /// Messages delivered, over all subscribers (duplicates included).
    pub delivered: usize,
    /// Subscriber resumptions (deliberate disconnects and connections that failed).
    pub resumes: usize,
    /// Totals over all subscribers.
    pub lost: usize,
    /// Ids seen twice or more.
    pub doubled: usize,
    /// Ids seen after a larger one.
    pub reordered: usize,
    /// Ids the store lacks.
    pub phantom: usize,
    /// Resets the subscribers were sent, and the ids they skipped.
    pub resets: usize,
    /// Ids skipped across resets (allowed, counted).
    pub skipped_by_reset: usize,
    /// Acknowledged posts the store does not hold as acknowledged.
    pub acked_missing: Vec<Acked>,
    /// From the last post's answer until every subscriber had its room's newest id
    /// (`None`: not every subscriber got there within `--drain`).
    pub catch_up: Option<Duration>,
    /// One line per fault found (subscriber, kind, first ids).
    pub faults: Vec<String>,
}

impl QueueReport {
    /// Whether the run found nothing wrong.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.doubled == 0 && self.reordered == 0 && self.phantom == 0 && self.acked_missing.is_empty()
    }
}

/// Runs the check and prints the report; the exit status says the verdict.
pub fn run_cli(args: QueueCheckArgs) -> ExitCode {
    match run(&args) {
        Ok(report) => {
            print!("{}", render(&report));
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("queue-check: {e}");
            ExitCode::from(2)
        }
    }
}

/// The report as text: one summary line, the figures, then each fault.
pub fn render(report: &QueueReport) -> String {
    let mut out = format!(
        "queue-check: {} stored, {} acknowledged, {} unanswered; {} delivered over {} resumes\n\
         lost {}, doubled {}, reordered {}, phantom {}, acknowledged but not stored {}; resets {} (skipping {})\n",
        report.stored,
        report.acked,
        report.unanswered,
        report.delivered,
        report.resumes,
        report.lost,
        report.doubled,
        report.reordered,
        report.phantom,
        report.acked_missing.len(),
        report.resets,
        report.skipped_by_reset,
    );
    match report.catch_up {
        Some(t) => out += &format!("catch-up: every subscriber had its room's newest id {:.2} s after the last post\n", t.as_secs_f64()),
        None => out += "catch-up: some subscribers never reached their room's newest id within --drain\n",
    }
    for line in &report.faults {
        out += &format!("  {line}\n");
    }
    for a in report.acked_missing.iter().take(MAX_LISTED) {
        out += &format!("  acknowledged {} #{} ({:?}) is not in the store\n", a.room, a.id, a.body);
    }
    out += if report.passed() { "ok: every subscriber saw its room's stored order, once\n" } else { "FAILED\n" };
    out
}

/// Runs one check (see the module docs). Blocks; builds its own runtime.
pub fn run(args: &QueueCheckArgs) -> Result<QueueReport, LoadError> {
    let targets = args.targets.iter().map(|t| parse_target(t)).collect::<Result<Vec<_>, _>>()?;
    let via = args.publish_via.iter().map(|t| parse_target(t)).collect::<Result<Vec<_>, _>>()?;
    let publish_via = if via.is_empty() { targets.clone() } else { via };
    if args.publishers == 0 || args.messages == 0 || args.subscribers == 0 || args.rooms == 0 {
        return Err(LoadError::Config("--publishers, --messages, --subscribers and --rooms must be at least 1".into()));
    }
    if !(args.rate > 0.0 && args.drain >= 0.0 && args.timeout > 0.0) {
        return Err(LoadError::Config("--rate and --timeout must be more than 0, --drain at least 0".into()));
    }
    let store = c10k_store::open_with(&args.db, &c10k_store::StoreOptions::default())
        .map_err(|e| LoadError::Setup(format!("--db {}: {e}", args.db)))?;
    let runtime = crate::build_runtime(0)?;
    runtime.block_on(check(targets, publish_via, store, args.clone()))
}

/// What the subscribers are waiting for: each room's newest stored id, once the posts are done.
type Goal = Option<BTreeMap<String, u64>>;

async fn check(
    targets: Vec<SocketAddr>,
    publish_via: Vec<SocketAddr>,
    store: Arc<dyn c10k_core::store::Store>,
    args: QueueCheckArgs,
) -> Result<QueueReport, LoadError> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let rooms: Vec<String> = (0..args.rooms).map(|r| format!("qc{:x}{:x}r{r}", std::process::id(), seed & 0xFF_FFFF)).collect();
    let (goal_tx, goal_rx) = watch::channel::<Goal>(None);
    let drain = Duration::from_secs_f64(args.drain);
    let done_at: Arc<Mutex<Vec<Instant>>> = Arc::default();

    // 1. Subscribers first: they start from 0 in fresh rooms.
    let vias = [Via::LongPoll, Via::Sse, Via::Ws];
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        let spec = FeedSpec {
            via: vias[i % 3],
            addr: targets[i % targets.len()],
            room: rooms[i % rooms.len()].clone(),
            after: 0,
            presence: false,
        };
        let name = format!("sub{i} {:?} first @{}", spec.via, spec.addr);
        let feed = open_until(&spec, &targets, &mut Random(seed ^ i as u64), Instant::now() + Duration::from_secs(10))
            .await
            .map_err(|e| LoadError::Server(format!("{name}: cannot subscribe: {e}")))?;
        let (goal, done_at) = (goal_rx.clone(), Arc::clone(&done_at));
        let (targets, every) = (targets.clone(), args.disconnect_every);
        let random = Random(seed.wrapping_mul(31) ^ i as u64);
        subscribers.push(tokio::spawn(subscribe(name, spec, feed, targets, every, random, goal, drain, done_at)));
    }

    // 2. Publishers.
    let posting_deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let (targets, rooms) = (publish_via.clone(), rooms.clone());
        let (messages, pause) = (args.messages, Duration::from_secs_f64(1.0 / args.rate));
        let random = Random(seed.wrapping_add(0x51ED) ^ (p as u64) << 20);
        publishers.push(tokio::spawn(publish(p, targets, rooms, messages, pause, random, posting_deadline)));
    }
    let (mut acked, mut unanswered) = (Vec::new(), 0);
    for publisher in publishers {
        let (mut a, u) = publisher.await.map_err(|e| LoadError::Setup(format!("a publisher panicked: {e}")))?;
        acked.append(&mut a);
        unanswered += u;
    }
    let posted_at = Instant::now();

    // 3. The stored order, then the drain.
    let stored = read_stored(&store, &rooms).await?;
    let goal: BTreeMap<String, u64> =
        stored.iter().map(|(room, ids)| (room.clone(), ids.keys().next_back().copied().unwrap_or(0))).collect();
    let _ = goal_tx.send(Some(goal));
    let mut seen = Vec::new();
    let mut resumes = 0;
    for subscriber in subscribers {
        let (s, r) = subscriber.await.map_err(|e| LoadError::Setup(format!("a subscriber panicked: {e}")))?;
        seen.push(s);
        resumes += r;
    }
    let done = done_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let catch_up = (done.len() == seen.len()).then(|| done.iter().max().map_or(Duration::ZERO, |t| t.saturating_duration_since(posted_at)));

    // 4. The verdict.
    let mut report = QueueReport {
        stored: stored.values().map(|r| r.len()).sum(),
        acked: acked.len(),
        unanswered,
        resumes,
        catch_up,
        acked_missing: missing_acked(&acked, &stored),
        ..QueueReport::default()
    };
    for subscriber in &seen {
        let order: Vec<u64> = stored.get(&subscriber.room).map(|r| r.keys().copied().collect()).unwrap_or_default();
        let faults = judge(subscriber, &order);
        report.delivered += subscriber.seen.iter().filter(|s| matches!(s, Seen::Message(_))).count();
        report.resets += subscriber.seen.iter().filter(|s| matches!(s, Seen::Reset)).count();
        tally(&mut report, &subscriber.name, &faults);
    }
    Ok(report)
}

/// Adds one subscriber's faults to the report.
fn tally(report: &mut QueueReport, name: &str, faults: &Faults) {
    report.lost += faults.lost.len();
    report.doubled += faults.doubled.len();
    report.reordered += faults.reordered.len();
    report.phantom += faults.phantom.len();
    report.skipped_by_reset += faults.skipped_by_reset;
    for (kind, ids) in [("lost", &faults.lost), ("doubled", &faults.doubled), ("reordered", &faults.reordered), ("phantom", &faults.phantom)] {
        if !ids.is_empty() {
            let listed: Vec<String> = ids.iter().take(MAX_LISTED).map(u64::to_string).collect();
            let more = if ids.len() > MAX_LISTED { format!(" and {} more", ids.len() - MAX_LISTED) } else { String::new() };
            report.faults.push(format!("{name}: {kind} {} ({}{more})", ids.len(), listed.join(", ")));
        }
    }
}

/// Each room's stored messages, id to body, read from the store in pages.
async fn read_stored(
    store: &Arc<dyn c10k_core::store::Store>,
    rooms: &[String],
) -> Result<BTreeMap<String, BTreeMap<u64, String>>, LoadError> {
    let (store, rooms) = (Arc::clone(store), rooms.to_vec());
    tokio::task::spawn_blocking(move || {
        use c10k_core::store::{MessageId, RoomId};
        let mut all = BTreeMap::new();
        for name in rooms {
            let room = RoomId::new(&name).map_err(|e| LoadError::Setup(format!("room {name}: {e:?}")))?;
            let mut messages = BTreeMap::new();
            let mut after = MessageId(0);
            loop {
                let page = store.after(&room, after, 1000).map_err(|e| LoadError::Server(format!("reading the store: {e}")))?;
                let Some(last) = page.last().map(|m| m.id) else { break };
                messages.extend(page.into_iter().map(|m| (m.id.0, m.body)));
                after = last;
            }
            all.insert(name, messages);
        }
        Ok(all)
    })
    .await
    .map_err(|e| LoadError::Setup(format!("reading the store panicked: {e}")))?
}

/// A native post's answer (the fields the check needs).
#[derive(Deserialize)]
struct Posted {
    id: u64,
}

/// One publisher: `messages` posts, each to a random room through a random node, retried
/// elsewhere when a node does not answer. Returns the acknowledged posts and how many got
/// no answer at all.
async fn publish(
    index: usize,
    targets: Vec<SocketAddr>,
    rooms: Vec<String>,
    messages: usize,
    pause: Duration,
    mut random: Random,
    deadline: Instant,
) -> (Vec<Acked>, usize) {
    let (mut acked, mut unanswered) = (Vec::new(), 0);
    for n in 0..messages {
        let room = &rooms[random.below(rooms.len() as u64) as usize];
        for attempt in 0..POST_ATTEMPTS {
            if Instant::now() >= deadline {
                return (acked, unanswered);
            }
            let addr = targets[random.below(targets.len() as u64) as usize];
            let body = format!("p{index}-{n}-a{attempt}");
            let json = serde_json::json!({"body": body, "from": format!("p{index}")}).to_string();
            let request = post_json(&format!("/api/rooms/{room}/messages"), &addr.to_string(), &json);
            let answer = tokio::time::timeout(POST_TIMEOUT, async {
                let mut conn = Conn::open(addr, None).await?;
                conn.request(&request).await
            })
            .await;
            match answer {
                Ok(Ok(reply)) if reply.status == 201 => {
                    if let Ok(posted) = serde_json::from_slice::<Posted>(&reply.body) {
                        acked.push(Acked { room: room.clone(), id: posted.id, body });
                    }
                    break;
                }
                // Refused before it was sent, or 503: not stored (or, 503 after a commit
                // broke, maybe stored: the store is the judge either way).
                Ok(Ok(_)) | Ok(Err(crate::client::ClientError::Connect(_))) => {}
                _ => unanswered += 1,
            }
            tokio::time::sleep(RETRY_PAUSE).await; // pacing between attempts, not synchronisation
        }
        tokio::time::sleep(pause).await; // the publisher's rate
    }
    (acked, unanswered)
}

/// Opens a feed on `spec.addr`, or on other nodes in turn if it cannot, until `deadline`.
async fn open_until(
    spec: &FeedSpec,
    targets: &[SocketAddr],
    random: &mut Random,
    deadline: Instant,
) -> Result<Feed, crate::client::ClientError> {
    let mut spec = spec.clone();
    loop {
        match tokio::time::timeout(POST_TIMEOUT, Feed::open(&spec, None)).await {
            Ok(Ok(feed)) => return Ok(feed),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
            Err(_) if Instant::now() >= deadline => return Err(crate::client::ClientError::Timeout),
            _ => {}
        }
        spec.addr = targets[random.below(targets.len() as u64) as usize];
        tokio::time::sleep(RETRY_PAUSE).await; // pacing between attempts
    }
}

/// One subscriber: reads until it has its room's newest stored id (once the goal is
/// known) or the drain runs out, resuming from its last id on a random node after a
/// random number of messages and whenever its connection fails.
#[allow(clippy::too_many_arguments)]
async fn subscribe(
    name: String,
    mut spec: FeedSpec,
    feed: Feed,
    targets: Vec<SocketAddr>,
    disconnect_every: u64,
    mut random: Random,
    mut goal: watch::Receiver<Goal>,
    drain: Duration,
    done_at: Arc<Mutex<Vec<Instant>>>,
) -> (Subscriber, usize) {
    let mut seen = Vec::new();
    let mut feed = Some(feed);
    let mut newest = 0u64;
    let mut resumes = 0;
    let mut until_drop = next_drop(&mut random, disconnect_every);
    let mut drain_deadline: Option<Instant> = None;
    // Whether the next resume goes to a random node (after a deliberate disconnect or a
    // failure) or back to the same one (after a read the checker itself interrupted).
    let mut move_node = false;
    loop {
        let target = goal.borrow().as_ref().map(|g| g.get(&spec.room).copied().unwrap_or(0));
        if let Some(target) = target {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
            if newest >= target {
                done_at.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let Some(current) = feed.as_mut() else {
            spec.after = newest;
            if move_node {
                spec.addr = targets[random.below(targets.len() as u64) as usize];
            }
            resumes += 1;
            feed = open_until(&spec, &targets, &mut random, Instant::now() + Duration::from_secs(5)).await.ok();
            continue;
        };
        let wait = drain_deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
        tokio::select! {
            event = current.next() => match event {
                Ok(event) => {
                    if event.reset {
                        seen.push(Seen::Reset);
                    }
                    for (id, _) in event.messages() {
                        seen.push(Seen::Message(id));
                        newest = newest.max(id);
                        until_drop = until_drop.saturating_sub(1);
                    }
                    if disconnect_every > 0 && until_drop == 0 {
                        (feed, move_node) = (None, true); // a deliberate disconnect: resume from `newest`
                        until_drop = next_drop(&mut random, disconnect_every);
                    }
                }
                Err(_) => (feed, move_node) = (None, true),
            },
            // The goal became known, or the drain ran out: a dropped long-poll read leaves
            // its feed unusable, so resume afresh, on the same node.
            _ = goal.changed() => (feed, move_node) = (None, false),
            _ = tokio::time::sleep(wait) => (feed, move_node) = (None, false),
        }
    }
    let subscriber = Subscriber { name, room: spec.room.clone(), after: 0, seen };
    (subscriber, resumes)
}

fn next_drop(random: &mut Random, every: u64) -> u64 {
    if every == 0 {
        u64::MAX
    } else {
        1 + random.below(2 * every)
    }
}
