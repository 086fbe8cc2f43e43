//! Publishing a message when its predecessors may not have reached this node yet.
//!
//! Ids come from the store, one per message with no gaps ([`crate::store`]), so a node
//! that receives message 7 of a room whose newest id it knows is 4 knows exactly what it
//! lacks: 5 and 6, which the store already holds (the store gave out 7 after them). When
//! [`Hub::publish`] answers [`Published::Held`], [`publish_filling_gaps`] reads the missing
//! ids from the store and publishes them first, so every subscriber sees every message of
//! the room once and in id order, however the messages travelled: two offload threads
//! finishing in either order, a relay between worker processes, Redis, NATS.
//!
//! It blocks (store reads), so it runs where store calls run: on the offload pool, inline
//! under `--db-mode inline`, or on a bus's receiving thread. Most calls never touch the
//! store: a message that follows the room's newest id is released at once.

use std::sync::Arc;

use crate::chat::render::Rendered;
use crate::hub::{Hub, Published};
use crate::store::{AsyncStore, LocalStore, Message, MessageId, RoomId, Store, StoreError};

/// The most messages read from the store in one call while filling a gap.
const PAGE: u64 = 1000;

/// Publishes `message`, first fetching from `store` any messages of its room with smaller
/// ids that the hub has not seen. Returns what finally happened to `message`:
/// [`Published::Released`] (with everything before it), [`Published::Duplicate`] (already
/// seen), or [`Published::Held`] if the store could not supply the missing ids (the hub
/// keeps it, and the next message of the room tries again).
pub fn publish_filling_gaps(hub: &Hub, store: &dyn Store, message: Arc<Rendered>) -> Result<Published, StoreError> {
    publish_filling_gaps_with(hub, message, |room, after, limit| store.after(room, after, limit))
}

/// [`publish_filling_gaps`] with a driver bound to the calling thread (a coroutine's).
pub fn publish_filling_gaps_local(
    hub: &Hub,
    store: &dyn LocalStore,
    message: Arc<Rendered>,
) -> Result<Published, StoreError> {
    publish_filling_gaps_with(hub, message, |room, after, limit| store.after(room, after, limit))
}

fn publish_filling_gaps_with(
    hub: &Hub,
    message: Arc<Rendered>,
    mut fetch: impl FnMut(&RoomId, MessageId, usize) -> Result<Vec<Message>, StoreError>,
) -> Result<Published, StoreError> {
    let (mut fill, mut step) = GapFill::start(hub, message);
    loop {
        match step {
            GapStep::Done(outcome) => return Ok(outcome),
            GapStep::Fetch { after, limit } => step = fill.fetched(hub, fetch(&fill.room, after, limit)?),
        }
    }
}

/// [`publish_filling_gaps`] through a driver that is awaited instead of blocking.
pub async fn publish_filling_gaps_async(
    hub: &Hub,
    store: &dyn AsyncStore,
    message: Arc<Rendered>,
) -> Result<Published, StoreError> {
    let (mut fill, mut step) = GapFill::start(hub, message);
    loop {
        match step {
            GapStep::Done(outcome) => return Ok(outcome),
            GapStep::Fetch { after, limit } => step = fill.fetched(hub, store.after(&fill.room, after, limit).await?),
        }
    }
}

/// The gap-filling loop with the store read taken out (sans-IO), so that a blocking and an
/// awaiting driver share it: [`GapFill::start`] publishes, then each [`GapStep::Fetch`]
/// asks the driver for messages, handed back with [`GapFill::fetched`], until
/// [`GapStep::Done`].
struct GapFill {
    room: RoomId,
    id: MessageId,
    /// The hub's newest id when the last fetch was asked for.
    asked_after: MessageId,
}

/// What [`GapFill`] needs next.
enum GapStep {
    /// Read up to `limit` messages of the room after `after` and hand them back.
    Fetch { after: MessageId, limit: usize },
    /// Finished: what happened to the message.
    Done(Published),
}

impl GapFill {
    fn start(hub: &Hub, message: Arc<Rendered>) -> (GapFill, GapStep) {
        let id = message.message.id;
        let room = message.message.room.clone();
        let outcome = hub.publish(message);
        let mut fill = GapFill { room, id, asked_after: MessageId(0) };
        let step = fill.next(hub, outcome);
        (fill, step)
    }

    fn fetched(&mut self, hub: &Hub, missing: Vec<Message>) -> GapStep {
        let mut progressed = false;
        for stored in missing.into_iter().take_while(|m| m.id < self.id) {
            if hub.publish(Arc::new(Rendered::new(stored))) != Published::Duplicate {
                progressed = true;
            }
        }
        let newest = hub.last_id(&self.room);
        if newest >= self.id {
            return GapStep::Done(Published::Released);
        }
        if !progressed && newest == self.asked_after {
            // The store has nothing between what the hub has and this message: leave it
            // held rather than spin (a store breaking its no-gap contract would do this).
            let missing_from = MessageId(newest.0 + 1);
            return GapStep::Done(Published::Held { missing_from, missing_to: MessageId(self.id.0 - 1) });
        }
        self.next(hub, Published::Held { missing_from: newest.next(), missing_to: MessageId(self.id.0 - 1) })
    }

    fn next(&mut self, hub: &Hub, outcome: Published) -> GapStep {
        let Published::Held { .. } = outcome else { return GapStep::Done(outcome) };
        // Read from the hub's newest id rather than `missing_from`: filling one gap may
        // reveal the next (messages 5 and 9 held while 4 is the newest: 6 to 8 are missing
        // too), and another thread may be filling the same gap meanwhile.
        let newest = hub.last_id(&self.room);
        if newest >= self.id {
            return GapStep::Done(Published::Released);
        }
        self.asked_after = newest;
        GapStep::Fetch { after: newest, limit: (self.id.0 - newest.0 - 1).min(PAGE) as usize }
    }
}
