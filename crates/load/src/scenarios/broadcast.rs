//! Fan-out, shared by the three broadcast scenarios and idle-capacity: a poster that
//! posts numbered, timestamped messages, groups of subscribers that receive them, and the
//! tally that proves each subscriber got every acknowledged message exactly once, in order.
//!
//! A message body is `"SEQ SENT_US"`: its number in this run and the poster's wall clock
//! (µs since the epoch) when it was sent. Wall clock, not `Instant`, because idle-capacity
//! subscribers live in other processes; every process reads the same clock. A subscriber
//! keeps one bit per message number, so a second copy is a duplicate however late it
//! comes, and a message whose id is below one already received is out of order.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::client::feed::{Feed, FeedEvent, FeedSpec};
use crate::client::http::{get, post_json, Conn};
use crate::client::ClientError;
use crate::progress::Progress;
use crate::report::{DeliveryStats, ErrorLog, Recorder, RequestStats, SharedHistogram};
use crate::LoadError;

use super::{unix_micros, BroadcastConfig, Ctx, Findings, Via};

/// The `from` of every message the generator posts.
const FROM: &str = "c10k-load";

/// One bit per message number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    len: u64,
}

impl Bitset {
    pub(crate) fn new(len: u64) -> Bitset {
        Bitset { words: vec![0; len.div_ceil(64) as usize], len }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    pub(crate) fn set(&mut self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Bits set in both.
    pub(crate) fn count_common(&self, other: &Bitset) -> u64 {
        self.words.iter().zip(&other.words).map(|(a, b)| u64::from((a & b).count_ones())).sum()
    }

    /// Every bit of `other` is set here too.
    pub(crate) fn contains_all(&self, other: &Bitset) -> bool {
        other.words.iter().enumerate().all(|(i, w)| w & !self.words.get(i).copied().unwrap_or(0) == 0)
    }
}

/// What subscribers learn once posting is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Posted {
    /// The message numbers the server acknowledged: these must all arrive.
    pub acked: Bitset,
    /// When the first post was sent, µs since the epoch.
    pub first_post_unix_us: u64,
    /// How long subscribers keep waiting for what is missing, ms.
    pub drain_ms: u64,
}

/// A group of subscribers to open.
#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    pub feed: FeedSpec,
    pub count: usize,
    /// Source addresses to spread over (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    /// Index of this group's first subscriber among all groups (for source round-robin).
    pub first_index: usize,
    pub open_concurrency: usize,
    /// Message numbers are below this.
    pub messages: u64,
    pub hard_at: Instant,
}

/// A group's subscribers, counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupResult {
    pub subscribers: usize,
    pub subscribed: usize,
    pub delivered: u64,
    pub misses: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub resets: u64,
    /// Messages not from this run (another client posting in the room).
    pub foreign: u64,
    pub subscriber_errors: u64,
    /// The last delivery, µs since the epoch (0: none).
    pub last_delivery_unix_us: u64,
    /// Subscribers were still waiting at the hard deadline.
    pub timed_out: bool,
}

/// One subscriber's record.
#[derive(Debug)]
struct Tally {
    seen: Bitset,
    last_id: u64,
    duplicates: u64,
    out_of_order: u64,
    resets: u64,
    foreign: u64,
    failed: bool,
    timed_out: bool,
    last_delivery_unix_us: u64,
    latency: Recorder,
    delivered: Arc<AtomicU64>,
}

impl Tally {
    fn record(&mut self, batch: FeedEvent<'_>) {
        if batch.reset {
            self.resets += 1;
        }
        let mut now = None;
        for (id, body) in batch.messages() {
            let now = *now.get_or_insert_with(unix_micros);
            let Some((seq, sent_us)) = parse_body(body).filter(|(seq, _)| *seq < self.seen.len()) else {
                self.foreign += 1;
                continue;
            };
            if self.seen.get(seq) {
                self.duplicates += 1;
                continue;
            }
            if id < self.last_id {
                self.out_of_order += 1;
            }
            self.last_id = self.last_id.max(id);
            self.seen.set(seq);
            self.latency.record(now.saturating_sub(sent_us));
            self.last_delivery_unix_us = now;
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `"SEQ SENT_US"`, and after another space the padding of `--body-bytes`, if any.
fn parse_body(body: &str) -> Option<(u64, u64)> {
    let mut fields = body.splitn(3, ' ');
    let (seq, sent) = (fields.next()?, fields.next()?);
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

/// Subscribers that are open and receiving.
pub(crate) struct Group {
    tasks: Vec<JoinHandle<Option<Tally>>>,
    posted_tx: watch::Sender<Option<Arc<Posted>>>,
    /// Subscribers the server accepted.
    pub subscribed: usize,
    /// Subscribers that could not subscribe (counted in the error log).
    pub failed: usize,
}

impl Group {
    /// Opens `spec.count` subscribers, `spec.open_concurrency` at a time, and returns once
    /// every one has subscribed or failed. They receive from then on.
    pub(crate) async fn open(
        spec: GroupSpec,
        errors: ErrorLog,
        latency: SharedHistogram,
        delivered: Arc<AtomicU64>,
    ) -> Group {
        let (posted_tx, posted_rx) = watch::channel(None);
        let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(spec.open_concurrency.max(1)));
        let feed = Arc::new(spec.feed.clone());
        let mut tasks = Vec::with_capacity(spec.count);
        for i in 0..spec.count {
            let source = match spec.sources.len() {
                0 => None,
                n => Some(spec.sources[(spec.first_index + i) % n]),
            };
            let tally = Tally {
                seen: Bitset::new(spec.messages),
                last_id: 0,
                duplicates: 0,
                out_of_order: 0,
                resets: 0,
                foreign: 0,
                failed: false,
                timed_out: false,
                last_delivery_unix_us: 0,
                latency: latency.recorder(),
                delivered: Arc::clone(&delivered),
            };
            tasks.push(tokio::spawn(subscriber(
                Arc::clone(&feed),
                source,
                Arc::clone(&gate),
                opened_tx.clone(),
                posted_rx.clone(),
                tally,
                spec.hard_at,
                errors.clone(),
            )));
        }
        drop(opened_tx);
        let (mut subscribed, mut failed) = (0, 0);
        // Every task reports exactly once, unless it panicked: then the channel closes.
        while let Some(ok) = opened_rx.recv().await {
            if ok {
                subscribed += 1;
            } else {
                failed += 1;
            }
        }
        Group { tasks, posted_tx, subscribed, failed }
    }

    /// Tells the subscribers what was posted; they finish once they have all of it, or
    /// after the drain time.
    pub(crate) fn posted(&self, posted: Posted) {
        let _ = self.posted_tx.send(Some(Arc::new(posted)));
    }

    /// Waits for every subscriber to finish and checks each against `acked`.
    pub(crate) async fn finish(self, acked: &Bitset) -> GroupResult {
        let mut result = GroupResult { subscribers: self.tasks.len(), ..GroupResult::default() };
        let expected = acked.count();
        for task in self.tasks {
            let Ok(Some(mut tally)) = task.await else { continue };
            tally.latency.flush();
            let got = tally.seen.count_common(acked);
            result.subscribed += 1;
            result.delivered += got;
            result.misses += expected - got;
            result.duplicates += tally.duplicates;
            result.out_of_order += tally.out_of_order;
            result.resets += tally.resets;
            result.foreign += tally.foreign + (tally.seen.count() - got);
            result.subscriber_errors += u64::from(tally.failed);
            result.timed_out |= tally.timed_out;
            result.last_delivery_unix_us = result.last_delivery_unix_us.max(tally.last_delivery_unix_us);
        }
        result
    }
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    spec: Arc<FeedSpec>,
    source: Option<IpAddr>,
    gate: Arc<Semaphore>,
    opened: mpsc::UnboundedSender<bool>,
    mut posted_rx: watch::Receiver<Option<Arc<Posted>>>,
    mut tally: Tally,
    hard_at: Instant,
    errors: ErrorLog,
) -> Option<Tally> {
    let permit = gate.acquire_owned().await.ok();
    let mut feed = match tokio::time::timeout_at(hard_at.into(), Feed::open(&spec, source)).await {
        Ok(Ok(feed)) => feed,
        Ok(Err(e)) => {
            errors.count(format!("subscribe: {}", e.kind()));
            let _ = opened.send(false);
            return None;
        }
        Err(_) => {
            errors.count(format!("subscribe: {}", ClientError::Timeout.kind()));
            let _ = opened.send(false);
            return None;
        }
    };
    drop(permit);
    let _ = opened.send(true);
    drop(opened);

    let mut stop_at = hard_at;
    let mut posted: Option<Arc<Posted>> = None;
    'receive: loop {
        if posted.as_ref().is_some_and(|p| tally.seen.contains_all(&p.acked)) {
            break;
        }
        // One `next` call stays alive until it completes: a long-poll's re-issue must not
        // be cut in half by the other branches.
        let next = feed.next();
        tokio::pin!(next);
        loop {
            tokio::select! {
                result = &mut next => match result {
                    Ok(batch) => {
                        tally.record(batch);
                        continue 'receive;
                    }
                    Err(e) => {
                        errors.count(format!("subscriber: {}", e.kind()));
                        tally.failed = true;
                        break 'receive;
                    }
                },
                changed = posted_rx.changed(), if posted.is_none() => {
                    if changed.is_err() {
                        break 'receive; // the group was dropped
                    }
                    posted = posted_rx.borrow().clone();
                    if let Some(p) = &posted {
                        stop_at = hard_at.min(Instant::now() + Duration::from_millis(p.drain_ms));
                        if tally.seen.contains_all(&p.acked) {
                            break 'receive;
                        }
                    }
                }
                () = tokio::time::sleep_until(stop_at.into()) => {
                    tally.timed_out = stop_at == hard_at;
                    break 'receive;
                }
            }
        }
    }
    Some(tally)
}

/// The receive buffer a stalled subscriber asks for (Linux doubles it).
const STALLED_RECEIVE_BUFFER: u32 = 4096;

/// Opens `count` subscribers of `room` over `via` that read their answer's head and then
/// nothing more (see [`BroadcastConfig::stalled`]); they are held until dropped.
async fn open_stalled(ctx: &Ctx, via: Via, room: &str, count: usize) -> Result<Vec<tokio::net::TcpStream>, LoadError> {
    let request = match via {
        Via::Sse => format!("GET /api/rooms/{room}/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n", ctx.host),
        Via::Ws => format!(
            "GET /api/rooms/{room}/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ctx.host
        ),
        Via::LongPoll if count > 0 => {
            return Err(LoadError::Config("--stalled needs ws-broadcast or sse-broadcast: a long-poll reads each answer".into()))
        }
        Via::LongPoll => return Ok(Vec::new()),
    };
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        match ctx.bounded(open_one_stalled(ctx.addr, &request)).await {
            Ok(stream) => held.push(stream),
            Err(e) => ctx.errors.count(format!("stalled subscriber: {}", e.kind())),
        }
    }
    Ok(held)
}

/// One stalled subscriber: a small receive buffer, the request, the answer's head (the
/// history may come with it: it stays unread like the rest).
async fn open_one_stalled(addr: std::net::SocketAddr, request: &str) -> Result<tokio::net::TcpStream, ClientError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(ClientError::Connect)?;
    socket.set_recv_buffer_size(STALLED_RECEIVE_BUFFER).map_err(ClientError::Connect)?;
    let mut stream = socket.connect(addr).await.map_err(ClientError::Connect)?;
    stream.write_all(request.as_bytes()).await.map_err(ClientError::Io)?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.map_err(ClientError::Io)? == 0 {
            return Err(ClientError::Closed);
        }
        head.push(byte[0]);
    }
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 101") {
        Ok(stream)
    } else {
        let status = String::from_utf8_lossy(&head).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Err(ClientError::Status(status))
    }
}

/// The room's newest id, where subscribers start from (so old history is not counted).
pub(crate) async fn last_id(ctx: &Ctx, room: &str) -> Result<u64, LoadError> {
    #[derive(Deserialize)]
    struct Answer {
        last_id: u64,
    }
    let fetch = async {
        let mut conn = Conn::open(ctx.addr, None).await?;
        let reply = conn.request(&get(&format!("/api/rooms/{room}/messages?after=0"), &ctx.host)).await?;
        if reply.status != 200 {
            return Err(ClientError::Status(reply.status));
        }
        serde_json::from_slice::<Answer>(&reply.body).map_err(|e| ClientError::Protocol(e.to_string()))
    };
    ctx.bounded(fetch)
        .await
        .map(|a| a.last_id)
        .map_err(|e| LoadError::Server(format!("cannot read room {room:?} from {}: {e}", ctx.addr)))
}

/// The poster's connection, opened before any subscriber.
pub(crate) async fn open_poster(ctx: &Ctx) -> Result<Conn, LoadError> {
    ctx.bounded(Conn::open(ctx.addr, None))
        .await
        .map_err(|e| LoadError::Server(format!("cannot connect the poster to {}: {e}", ctx.addr)))
}

/// What the poster did.
#[derive(Debug)]
pub(crate) struct PostRun {
    pub acked: Bitset,
    pub failures: u64,
    pub first_post_unix_us: u64,
    pub stats: RequestStats,
}

/// Posts messages `0..messages` one after another on one keep-alive connection (`conn`,
/// opened before the subscribers so that a server at its connection cap still takes the
/// posts; a new one if it breaks), at `rate` per second (0: each as soon as the previous
/// one is acknowledged), starting no post after `until`; each body is padded to
/// `body_bytes` (0: not padded).
pub(crate) async fn post_messages(
    ctx: &Ctx,
    conn: Option<Conn>,
    room: &str,
    messages: u64,
    rate: f64,
    body_bytes: usize,
    until: Instant,
) -> PostRun {
    let path = format!("/api/rooms/{room}/messages");
    let latency = SharedHistogram::new();
    let mut recorder = latency.recorder();
    let mut acked = Bitset::new(messages);
    let mut failures = 0;
    let mut first_post_unix_us = 0;
    let mut conn = conn;
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let began = Instant::now();
    let mut due = began;
    for seq in 0..messages {
        if Instant::now() >= until {
            break;
        }
        if let Some(iv) = interval {
            tokio::time::sleep_until(due.into()).await;
            due += iv;
        }
        if conn.is_none() {
            match ctx.bounded(Conn::open(ctx.addr, None)).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    ctx.errors.count(format!("post: {}", e.kind()));
                    failures += 1;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let sent = unix_micros();
        if seq == 0 {
            first_post_unix_us = sent;
        }
        let mut text = format!("{seq} {sent}");
        if body_bytes > text.len() + 1 {
            text.push(' ');
            text.extend(std::iter::repeat_n('x', body_bytes - text.len()));
        }
        let body = serde_json::json!({ "body": text, "from": FROM }).to_string();
        let started = Instant::now();
        match ctx.bounded(c.request(&post_json(&path, &ctx.host, &body))).await {
            Ok(reply) if reply.status == 201 => {
                acked.set(seq);
                recorder.record(started.elapsed().as_micros() as u64);
                if reply.close {
                    conn = None;
                }
            }
            Ok(reply) => {
                ctx.errors.count(format!("post: status {}", reply.status));
                failures += 1;
                if reply.close {
                    conn = None;
                }
            }
            Err(e) => {
                ctx.errors.count(format!("post: {}", e.kind()));
                failures += 1;
                conn = None;
                if matches!(e, ClientError::Timeout) {
                    break;
                }
            }
        }
    }
    recorder.flush();
    let summary = latency.summary();
    let stats = RequestStats {
        name: "post".into(),
        connections: 1,
        requests: summary.count,
        errors: failures,
        per_second: summary.count as f64 / began.elapsed().as_secs_f64().max(1e-9),
        latency: summary,
    };
    PostRun { acked, failures, first_post_unix_us, stats }
}

/// How long to let long-poll requests reach the server before posting: they give no sign
/// of having arrived (WebSocket and SSE subscribers have, once open).
pub(crate) fn settle_time(via: Via, subscribers: usize) -> Duration {
    match via {
        Via::LongPoll => Duration::from_millis(50) + Duration::from_micros(20 * subscribers as u64),
        Via::Sse | Via::Ws => Duration::ZERO,
    }
}

/// Fills a [`DeliveryStats`] from a group's result and the poster's.
pub(crate) fn delivery_stats(
    via: Via,
    room: &str,
    result: &GroupResult,
    posts: &PostRun,
    latency: &SharedHistogram,
) -> DeliveryStats {
    let spread_secs = if result.last_delivery_unix_us > posts.first_post_unix_us && posts.first_post_unix_us > 0 {
        (result.last_delivery_unix_us - posts.first_post_unix_us) as f64 / 1e6
    } else {
        0.0
    };
    let messages = posts.acked.count();
    DeliveryStats {
        via: via.name().to_string(),
        room: room.to_string(),
        subscribers: result.subscribers,
        subscribed: result.subscribed,
        messages,
        post_failures: posts.failures,
        expected: result.subscribed as u64 * messages,
        delivered: result.delivered,
        misses: result.misses,
        duplicates: result.duplicates,
        out_of_order: result.out_of_order,
        resets: result.resets,
        subscriber_errors: result.subscriber_errors,
        per_second: if spread_secs > 0.0 { result.delivered as f64 / spread_secs } else { 0.0 },
        spread_secs,
        latency: latency.summary(),
    }
}

/// The three broadcast scenarios: `config.subscribers` subscribers over `via`, one poster.
pub(crate) async fn run(ctx: &Ctx, via: Via, config: &BroadcastConfig) -> Result<Findings, LoadError> {
    let room = ctx.room(&config.room);
    let after = last_id(ctx, &room).await?;
    let poster = open_poster(ctx).await?;
    let latency = SharedHistogram::new();
    let delivered = Arc::new(AtomicU64::new(0));
    let total = config.subscribers as u64 * config.messages;
    let progress = Progress::start(
        ctx.config.progress,
        &format!("{} {}", via.name(), room),
        Arc::clone(&delivered),
        "deliveries",
        Some(total),
        ctx.config.duration,
    );
    let spec = GroupSpec {
        feed: FeedSpec { via, addr: ctx.addr, room: room.clone(), after, presence: false },
        count: config.subscribers,
        sources: Vec::new(),
        first_index: 0,
        open_concurrency: 256,
        messages: config.messages,
        hard_at: ctx.hard_at,
    };
    let group = Group::open(spec, ctx.errors.clone(), latency.clone(), delivered).await;
    let stalled = open_stalled(ctx, via, &room, config.stalled).await?;
    tokio::time::sleep(settle_time(via, group.subscribed)).await;
    let began = Instant::now();
    let posts =
        post_messages(ctx, Some(poster), &room, config.messages, config.rate, config.body_bytes, ctx.stop_at).await;
    drop(stalled);
    group.posted(Posted {
        acked: posts.acked.clone(),
        first_post_unix_us: posts.first_post_unix_us,
        drain_ms: (config.drain_secs * 1000.0) as u64,
    });
    let result = group.finish(&posts.acked).await;
    progress.finish();
    if result.timed_out {
        ctx.note_timeout();
    }
    let delivery = delivery_stats(via, &room, &result, &posts, &latency);
    Ok(Findings { measured: began.elapsed(), requests: vec![posts.stats], delivery: Some(delivery), capacity: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitset_counts_and_compares() {
        let mut acked = Bitset::new(130);
        let mut seen = Bitset::new(130);
        for i in [0, 63, 64, 129] {
            acked.set(i);
        }
        for i in [0, 63, 64] {
            seen.set(i);
        }
        seen.set(5);
        assert_eq!(acked.count(), 4);
        assert_eq!(seen.count_common(&acked), 3);
        assert!(!seen.contains_all(&acked));
        seen.set(129);
        assert!(seen.contains_all(&acked));
        seen.set(500); // out of range: ignored
        assert!(!seen.get(500));
    }

    #[test]
    fn tally_finds_duplicates_and_disorder() {
        use crate::client::feed::WireMessage;
        let histogram = SharedHistogram::new();
        let mut tally = Tally {
            seen: Bitset::new(4),
            last_id: 0,
            duplicates: 0,
            out_of_order: 0,
            resets: 0,
            foreign: 0,
            failed: false,
            timed_out: false,
            last_delivery_unix_us: 0,
            latency: histogram.recorder(),
            delivered: Arc::new(AtomicU64::new(0)),
        };
        let m = |id, body: &str| WireMessage { id, body: body.to_string() };
        let now = unix_micros();
        tally.record(FeedEvent::new(false, vec![m(10, &format!("0 {now}")), m(12, &format!("2 {now}"))]));
        tally.record(FeedEvent::new(true, vec![m(11, &format!("1 {now}")), m(12, &format!("2 {now}"))]));
        tally.record(FeedEvent::new(false, vec![m(13, "hello"), m(14, &format!("9 {now}"))]));
        assert_eq!((tally.duplicates, tally.out_of_order, tally.resets, tally.foreign), (1, 1, 1, 2));
        assert_eq!(tally.seen.count(), 3);
        assert_eq!(tally.delivered.load(Ordering::Relaxed), 3);
    }
}
