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
use crate::store::{MessageId, Store, StoreError};

/// The most messages read from the store in one call while filling a gap.
const PAGE: u64 = 1000;

/// Publishes `message`, first fetching from `store` any messages of its room with smaller
/// ids that the hub has not seen. Returns what finally happened to `message`:
/// [`Published::Released`] (with everything before it), [`Published::Duplicate`] (already
/// seen), or [`Published::Held`] if the store could not supply the missing ids (the hub
/// keeps it, and the next message of the room tries again).
pub fn publish_filling_gaps(hub: &Hub, store: &dyn Store, message: Arc<Rendered>) -> Result<Published, StoreError> {
    let id = message.message.id;
    let room = message.message.room.clone();
    let mut outcome = hub.publish(message);
    while let Published::Held { .. } = outcome {
        // Read from the hub's newest id rather than `missing_from`: filling one gap may
        // reveal the next (messages 5 and 9 held while 4 is the newest: 6 to 8 are missing
        // too), and another thread may be filling the same gap meanwhile.
        let newest = hub.last_id(&room);
        if newest >= id {
            outcome = Published::Released;
            break;
        }
        let wanted = (id.0 - newest.0 - 1).min(PAGE) as usize;
        let missing = store.after(&room, newest, wanted)?;
        let mut progressed = false;
        for stored in missing.into_iter().take_while(|m| m.id < id) {
            if hub.publish(Arc::new(Rendered::new(stored))) != Published::Duplicate {
                progressed = true;
            }
        }
        if !progressed && hub.last_id(&room) == newest {
            // The store has nothing between what the hub has and this message: leave it
            // held rather than spin (a store breaking its no-gap contract would do this).
            let missing_from = MessageId(newest.0 + 1);
            outcome = Published::Held { missing_from, missing_to: MessageId(id.0 - 1) };
            break;
        }
        if hub.last_id(&room) >= id {
            outcome = Published::Released;
        }
    }
    Ok(outcome)
}
