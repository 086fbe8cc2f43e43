//! How several c10k processes share rooms: the [`Bus`] trait, and the local relay that
//! connects the worker processes of one machine with no service to install.
//!
//! Each process keeps its own hub (rooms, history, waiting readers). A message is stored
//! by the process that received the post; the store gives it its id. The bus then tells
//! the other processes, which publish it into their hubs. [`attach`] wires a bus to an
//! application in both directions.
//!
//! # Ordering and exactly-once
//! The bus promises neither order nor completeness, and needs neither: ids per room are
//! contiguous and come from the store, so a process that receives message 7 while its
//! newest is 5 reads 6 from the store first
//! ([`c10k_core::gaps::publish_filling_gaps`]), and a message it already has is dropped.
//! Every subscriber on every process therefore sees each message of its room once, in id
//! order. What the bus buys is speed: without it, a message would reach other processes
//! only when a later one revealed the gap.
//!
//! # The local relay (`--workers N`, `prefork`)
//! A star with the master process at its centre, over one `socketpair(2)` per worker:
//!
//! - **Who sends what.** The master makes the pair before it forks the worker; the worker
//!   keeps one end ([`LocalRelay`]), the master the other ([`Switchboard`]). A worker whose
//!   store call succeeded writes the message to its end, after the store has it and after
//!   it is published in its own hub (the [`c10k_core::chat::App::set_on_stored`] hook).
//!   The master reads it and copies it to every *other* worker; it never parses it. A
//!   worker's receiving thread reads what the master forwards, publishes it (filling gaps
//!   from the store) and answers `ack`. When every other worker has acknowledged a
//!   message, the master tells its sender `done N` (N counts the sender's messages), and
//!   only then does the sender answer its poster (at most [`DELIVERY_TIMEOUT`] later):
//!   a client that got its acknowledgement can read the message back from any worker,
//!   as it could from a single process. Besides messages, a worker sends `ready` when it
//!   has loaded the history and is about to serve; the master waits for it before
//!   printing the `listening` line.
//! - **Wire format.** Lines. A message is the native API's JSON object (`{"id": 7,
//!   "room": "main", "body": ..., "from": ..., "time": ...}`, which never contains a raw
//!   newline); the others are `ready` and `ack` (worker to master) and `done N` (master to
//!   worker), and presence reports, `P {json}` ([`c10k_core::presence`]), which the master
//!   copies to every other worker as it copies messages, but which nobody acknowledges or
//!   waits for (a lost one is repeated by the next heartbeat). On Redis and NATS a report
//!   is a payload `P {json}` on the rooms' channel or subject.
//! - **Ordering.** Lines from one worker reach each other worker in the order sent; lines
//!   from two workers interleave arbitrarily, and two offload threads of one worker may
//!   send in either order. Gap filling makes that harmless.
//! - **Back-pressure.** The master never blocks on a worker: it queues what a worker has
//!   not yet read, up to [`Switchboard::MAX_QUEUED`] bytes, and drops lines for a worker
//!   that falls that far behind (logged, and not waited for). The next message of the
//!   room reveals the gap, which that worker then fills from the store. A worker that
//!   reads but is slow to acknowledge (wedged, or still loading its history) delays
//!   every post by up to [`DELIVERY_TIMEOUT`]; one that exits is no longer waited for.
//! - **A worker restarted.** A new worker loads each room's history from the store
//!   before it reads the relay. Its end exists from the moment it is forked, so a message
//!   stored before the fork is in the store, and one stored after it is relayed (and is a
//!   duplicate, dropped, if history already had it): nothing is missed.
//! - **The master gone.** Workers exit (they ask the kernel for SIGTERM when their parent
//!   dies); the relay has no state worth keeping.
//!
//! # Between nodes: Redis and NATS (`--bus redis://HOST:PORT`, `--bus nats://HOST:PORT`)
//! Independent `c10k serve` processes (each with its own port and master) on one MySQL or
//! PostgreSQL store share rooms through [`RedisBus`] (Redis pub/sub) or [`NatsBus`] (core
//! NATS). Every message goes, as the wire line below, to one channel or subject (`c10k`
//! unless the URL's path names another), which every node subscribes to; a node's own
//! echo arrives too and is dropped as a duplicate.
//!
//! Why the fire-and-forget flavours, not Redis Streams or JetStream: the store already is
//! the durable, ordered log (ids come from it), and gap filling reads it. A second log in
//! the bus would be a second source of truth to keep in step, with its own retention and
//! its own failure modes, and would still not spare the store reads after a node restart.
//! What the bus must give is only a prompt "message N of room R exists"; what it loses,
//! the store supplies:
//!
//! - **A gap revealed** by a later message is filled before delivery ([`attach`]).
//! - **Catch-up** ([`Node::catch_up`]): whenever the subscription is (re)made, and every
//!   `resync_every` ([`Options`]) while it runs, each room the store or the hub knows is
//!   read from the store after the hub's newest id. So a message whose only announcement
//!   was lost in an outage arrives even when no later message reveals the gap.
//! - **Heads** ([`Node::heads`]): on every (re)connection a node publishes the newest
//!   message of each room it holds, so that the others learn of messages it stored while
//!   its publishes were failing, or that its previous process stored and died before
//!   announcing (`kill -9`).
//! - **Publishing never blocks a poster**: [`Bus::publish`] queues the message for the
//!   bus's own thread and returns. While the bus is down the queue keeps at most the
//!   newest message of each room (one announcement is enough to reveal the rest), so an
//!   outage costs bounded memory.
//!
//! An outage is logged once when it starts and once when it ends; connections are retried
//! with exponential back-off ([`RETRY_MIN`] to [`RETRY_MAX`]). A bus unreachable at start
//! does not stop the node: it serves its own subscribers from the store, retries, and
//! catches up when the bus comes (a refusal would make the bus a single point of failure
//! of every node's start, for a component that is only a speed-up).
//!
//! # `--workers N` with a network bus
//! Both: the local relay still connects the workers of one master (and keeps
//! read-your-writes between them), and each worker is also a node on the network bus with
//! its own connection ([`Both`]). A message reaches a sibling worker twice (relay and
//! network); the second is a duplicate, dropped.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod local;
mod nats;
mod outage;
mod redis;
mod switchboard;

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use c10k_core::chat::render::Rendered;
use c10k_core::chat::App;
use c10k_core::gaps::publish_filling_gaps;
use c10k_core::hub::{Cursor, Published};
use c10k_core::metrics::BusMetrics;
use c10k_core::store::{Message, MessageId, Store, StoreError};
use tracing::warn;

pub use local::{LocalRelay, DELIVERY_TIMEOUT};
pub use nats::NatsBus;
pub use outage::{RETRY_MAX, RETRY_MIN};
pub use redis::RedisBus;
pub use switchboard::{Notice, Switchboard};

/// What goes wrong on a bus. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The connection to the rest of the bus failed.
    #[error("bus: {0}; other processes will see this message when a later one reveals the gap")]
    Io(#[from] io::Error),
    /// A line received was not a message (a bug in whoever sent it).
    #[error("bus: a line that is not a message ({0}); the sender is out of step with this version")]
    Malformed(String),
    /// `subscribe` was called twice.
    #[error("bus: already subscribed; call subscribe once per process")]
    AlreadySubscribed,
    /// `--bus` names no bus c10k has.
    #[error("--bus {0:?}: not a bus URL; give redis://HOST:PORT[/CHANNEL] or nats://HOST:PORT[/SUBJECT]")]
    Url(String),
}

/// What a bus needs from the process it serves: somewhere to hand the messages other
/// processes published, and (network buses) the store-backed catch-up. Called on threads
/// of the bus's own; each may block (they read the store).
pub trait Node: Send + Sync {
    /// Publishes a message from the bus into this process's hub (filling any gap first).
    fn deliver(&self, message: Message);

    /// Reads from the store what this process may have missed: for each room, the
    /// messages after the hub's newest. A network bus calls it after each (re)connection.
    fn catch_up(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The newest message of each room this process holds, to announce on (re)connection.
    fn heads(&self) -> Vec<Message> {
        Vec::new()
    }

    /// Takes in another process's presence report (the JSON after a `P ` line's prefix).
    fn presence(&self, _report: &[u8]) {}
}

impl<F: Fn(Message) + Send + Sync> Node for F {
    fn deliver(&self, message: Message) {
        self(message)
    }
}

/// A way for processes to tell each other about stored messages.
pub trait Bus: Send + Sync {
    /// A short name for logs (`local`, `redis`, `nats`).
    fn name(&self) -> &'static str;

    /// Tells the other processes about a message this process has stored. Called on the
    /// thread that ran the store call, before the poster is answered. It may wait, boundedly,
    /// until the others have the message (the local relay does, for read-your-writes);
    /// past its bound it gives up and says so: the next message of the room lets the
    /// others fill the gap.
    fn publish(&self, message: &Message) -> Result<(), BusError>;

    /// Starts handing messages from the other processes to `node`, on a thread the bus
    /// starts. Called once.
    fn subscribe(&self, node: Arc<dyn Node>) -> Result<(), BusError>;

    /// Tells the other processes this one's presence in a room: a `P {json}\n` line made by
    /// [`c10k_core::presence::Presence::tick`]. Never waits; a report the bus cannot take
    /// now is dropped (the next heartbeat repeats it).
    fn publish_presence(&self, _line: &[u8]) {}
}

/// How a network bus behaves, beside its URL.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a connected node catches up from the store anyway (a message whose
    /// announcement was lost while the connection looked healthy, e.g. its publisher died
    /// between the store and the bus and was not restarted). `None`: only on (re)connection.
    pub resync_every: Option<Duration>,
    /// Test-only: drop every Nth message received and never fill a gap or catch up, so
    /// that a checker can be shown to catch a bus that loses messages. `None` in service.
    pub drop_every: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options { resync_every: Some(Duration::from_secs(30)), drop_every: None }
    }
}

/// The bus a `--bus` URL names: `redis://HOST:PORT[/CHANNEL]` or `nats://HOST:PORT[/SUBJECT]`.
/// It connects in the background (see the crate docs: a bus unreachable at start is
/// retried, not fatal).
pub fn connect(url: &str, metrics: BusMetrics, options: &Options) -> Result<Arc<dyn Bus>, BusError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| BusError::Url(url.into()))?;
    let (addr, channel) = match rest.split_once('/') {
        Some((addr, channel)) if !channel.is_empty() => (addr, channel),
        Some((addr, _)) => (addr, "c10k"),
        None => (rest, "c10k"),
    };
    if addr.is_empty() || !addr.contains(':') || channel.contains(char::is_whitespace) {
        return Err(BusError::Url(url.into()));
    }
    match scheme {
        "redis" => Ok(Arc::new(RedisBus::new(addr, channel, metrics, options.clone()))),
        "nats" => Ok(Arc::new(NatsBus::new(addr, channel, metrics, options.clone()))),
        _ => Err(BusError::Url(url.into())),
    }
}

/// Two buses as one (`--workers N` with a network bus): publishes go to both, in order
/// (the local relay first, which waits for the sibling workers), and both deliver to the
/// same node.
pub struct Both(pub Arc<dyn Bus>, pub Arc<dyn Bus>);

impl Bus for Both {
    fn name(&self) -> &'static str {
        self.1.name()
    }

    fn publish(&self, message: &Message) -> Result<(), BusError> {
        let first = self.0.publish(message);
        self.1.publish(message)?;
        first
    }

    fn subscribe(&self, node: Arc<dyn Node>) -> Result<(), BusError> {
        self.0.subscribe(Arc::clone(&node))?;
        self.1.subscribe(node)
    }

    fn publish_presence(&self, line: &[u8]) {
        self.0.publish_presence(line);
        self.1.publish_presence(line);
    }
}

/// The [`Node`] of an application: the hub it publishes into and the store it fills from.
struct AppNode {
    app: Arc<App>,
    store: Arc<dyn Store>,
    metrics: BusMetrics,
    drop_every: Option<u64>,
    received: AtomicU64,
}

/// The most messages one catch-up read asks the store for.
const CATCH_UP_PAGE: usize = 1000;

impl AppNode {
    /// Counts what a fill brought, and a reset when it outran the room's history.
    fn filled(&self, count: u64) {
        self.metrics.gaps_filled.inc_by(count);
        if count > self.app.hub().history_len() as u64 {
            self.metrics.resets.inc();
        }
    }
}

impl Node for AppNode {
    fn deliver(&self, message: Message) {
        self.metrics.received.inc();
        let hub = self.app.hub();
        let (room, id) = (message.room.clone(), message.id);
        if let Some(every) = self.drop_every {
            // The deliberate fault: lose every Nth message and never look at the store.
            if self.received.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
                return;
            }
            hub.publish(Arc::new(Rendered::new(message)));
            return;
        }
        let before = hub.last_id(&room);
        match publish_filling_gaps(hub, &*self.store, Arc::new(Rendered::new(message))) {
            Ok(Published::Released) => {
                let fetched = id.0.saturating_sub(before.0 + 1);
                if fetched > 0 {
                    self.filled(fetched);
                }
            }
            Ok(Published::Duplicate) => {}
            Ok(Published::Held { missing_from, missing_to }) => {
                self.metrics.held.inc();
                warn!(%room, %id, %missing_from, %missing_to, "the store lacks messages before this one; holding it")
            }
            Err(e) => {
                self.metrics.held.inc();
                warn!(%room, %id, "cannot fill the gap before this message: {e}; holding it until the next catch-up")
            }
        }
    }

    fn catch_up(&self) -> Result<(), StoreError> {
        if self.drop_every.is_some() {
            return Ok(());
        }
        let hub = self.app.hub();
        let mut rooms: BTreeSet<_> = self.store.rooms()?.into_iter().collect();
        rooms.extend(hub.rooms().into_iter().map(|(room, _)| room));
        for room in rooms {
            let mut brought = 0;
            loop {
                let newest = hub.last_id(&room);
                let missing = self.store.after(&room, newest, CATCH_UP_PAGE)?;
                let Some(last) = missing.last().map(|m| m.id) else { break };
                for message in missing {
                    if hub.publish(Arc::new(Rendered::new(message))) != Published::Duplicate {
                        brought += 1;
                    }
                }
                if hub.last_id(&room) < last {
                    break; // the store broke its no-gap contract: do not spin
                }
            }
            if brought > 0 {
                self.filled(brought);
            }
        }
        Ok(())
    }

    fn presence(&self, report: &[u8]) {
        if let Err(e) = self.app.apply_report(report, std::time::Instant::now()) {
            warn!("bus: {e}");
        }
    }

    fn heads(&self) -> Vec<Message> {
        if self.drop_every.is_some() {
            return Vec::new();
        }
        let hub = self.app.hub();
        let newest_of = |(room, last): (_, MessageId)| {
            let before = MessageId(last.0.saturating_sub(1));
            hub.read(&room, &Cursor::After(before)).messages.last().map(|m| m.message.clone())
        };
        hub.rooms().into_iter().filter(|(_, last)| last.0 > 0).filter_map(newest_of).collect()
    }
}

/// Connects `app` to `bus` both ways: messages this process stores are published on the
/// bus, and messages from the bus are published into the app's hub, gaps filled from
/// `store`. Call it after `App::load_history` and before serving.
pub fn attach(app: &Arc<App>, store: &Arc<dyn Store>, bus: Arc<dyn Bus>) -> Result<(), BusError> {
    attach_with(app, store, bus, None)
}

/// [`attach`], with the test-only deliberate fault of [`Options::drop_every`].
pub fn attach_with(
    app: &Arc<App>,
    store: &Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    drop_every: Option<u64>,
) -> Result<(), BusError> {
    let metrics = app.metrics().bus.clone();
    if bus.name() != "local" {
        // Across nodes a resuming client may be a few messages ahead of the node it lands on.
        app.hub().wait_for_ahead_cursors();
    }
    let node = AppNode {
        app: Arc::clone(app),
        store: Arc::clone(store),
        metrics,
        drop_every: drop_every.filter(|n| *n > 0),
        received: AtomicU64::new(0),
    };
    bus.subscribe(Arc::new(node))?;
    let name = bus.name();
    let presence_bus = Arc::clone(&bus);
    app.set_on_presence(Box::new(move |line| presence_bus.publish_presence(line)));
    app.set_on_stored(Box::new(move |message| {
        if let Err(e) = bus.publish(message) {
            warn!(bus = name, room = %message.room, id = %message.id, "{e}");
        }
    }));
    Ok(())
}

/// The wire form of a message: the native API's JSON object on one line.
pub(crate) mod wire {
    use c10k_core::store::{Message, MessageId, RoomId};
    use serde::Deserialize;

    use crate::BusError;

    #[derive(Deserialize)]
    struct Wire {
        id: u64,
        room: String,
        body: String,
        #[serde(default)]
        from: String,
        #[serde(default)]
        time: u64,
    }

    /// The message as one line, `\n` included.
    pub(crate) fn encode(message: &Message) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        let mut line = serde_json::to_vec(message).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// A line (without its `\n`) back into a message.
    pub(crate) fn decode(line: &[u8]) -> Result<Message, BusError> {
        let bad = |why: String| BusError::Malformed(why);
        let wire: Wire = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        let room = RoomId::new(&wire.room).map_err(|e| bad(e.to_string()))?;
        Ok(Message { id: MessageId(wire.id), room, body: wire.body, from: wire.from, time_ms: wire.time })
    }
}
