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
//!   worker).
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
//! Later implementations (Redis pub/sub, NATS) implement the same trait: publish to a
//! subject per room, deliver what arrives, and rely on the same gap filling.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod local;
mod switchboard;

use std::io;
use std::sync::Arc;

use c10k_core::chat::render::Rendered;
use c10k_core::chat::App;
use c10k_core::gaps::publish_filling_gaps;
use c10k_core::hub::Published;
use c10k_core::store::{Message, Store};
use tracing::warn;

pub use local::{LocalRelay, DELIVERY_TIMEOUT};
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
}

/// Where a bus hands the messages other processes published. Called on a thread of the
/// bus's own, one message at a time; it may block (it reads the store to fill gaps).
pub type Deliver = Box<dyn Fn(Message) + Send + 'static>;

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

    /// Starts handing messages from the other processes to `deliver`, on a thread the bus
    /// starts. Called once.
    fn subscribe(&self, deliver: Deliver) -> Result<(), BusError>;
}

/// Connects `app` to `bus` both ways: messages this process stores are published on the
/// bus, and messages from the bus are published into the app's hub, gaps filled from
/// `store`. Call it after `App::load_history` and before serving.
pub fn attach(app: &Arc<App>, store: &Arc<dyn Store>, bus: Arc<dyn Bus>) -> Result<(), BusError> {
    let (hub_app, store) = (Arc::clone(app), Arc::clone(store));
    bus.subscribe(Box::new(move |message| {
        let (room, id) = (message.room.clone(), message.id);
        match publish_filling_gaps(hub_app.hub(), &*store, Arc::new(Rendered::new(message))) {
            Ok(Published::Released | Published::Duplicate) => {}
            Ok(Published::Held { missing_from, missing_to }) => {
                warn!(%room, %id, %missing_from, %missing_to, "the store lacks messages before this one; holding it")
            }
            Err(e) => warn!(%room, %id, "cannot fill the gap before this message: {e}; holding it"),
        }
    }))?;
    let name = bus.name();
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
