//! `publish_filling_gaps`: a message that arrives before its predecessors (from a bus, or
//! from a faster offload thread) is released only after them, each exactly once, the
//! missing ones read from the store.

use std::sync::{Arc, Mutex};

use c10k_core::chat::render::Rendered;
use c10k_core::gaps::publish_filling_gaps;
use c10k_core::hub::{Cursor, Hub, Published};
use c10k_core::store::{Message, MessageId, NewMessage, RoomId, Store, StoreError};

/// A store holding messages 1..=n of room `r`, counting the reads it serves.
struct Fake {
    messages: Vec<Message>,
    reads: Mutex<usize>,
}

fn message(id: u64) -> Message {
    Message { id: MessageId(id), room: room(), body: format!("m{id}"), from: String::new(), time_ms: 0 }
}

fn room() -> RoomId {
    RoomId::new("r").unwrap()
}

fn rendered(id: u64) -> Arc<Rendered> {
    Arc::new(Rendered::new(message(id)))
}

impl Fake {
    fn holding(n: u64) -> Fake {
        Fake { messages: (1..=n).map(message).collect(), reads: Mutex::new(0) }
    }

    fn reads(&self) -> usize {
        *self.reads.lock().unwrap()
    }
}

impl Store for Fake {
    fn append(&self, _: &RoomId, _: &NewMessage) -> Result<c10k_core::store::Appended, StoreError> {
        unreachable!("filling gaps never writes")
    }

    fn after(&self, _: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError> {
        *self.reads.lock().unwrap() += 1;
        Ok(self.messages.iter().filter(|m| m.id > after).take(limit).cloned().collect())
    }

    fn recent(&self, _: &RoomId, _: usize) -> Result<Vec<Message>, StoreError> {
        unreachable!()
    }

    fn before(&self, _: &RoomId, _: Option<MessageId>, _: usize) -> Result<Vec<Message>, StoreError> {
        unreachable!()
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        unreachable!()
    }
}

fn ids(hub: &Hub) -> Vec<u64> {
    hub.read(&room(), &Cursor::Start).messages.iter().map(|m| m.message.id.0).collect()
}

#[test]
fn a_message_in_order_is_released_without_reading_the_store() {
    let (hub, store) = (Hub::new(100), Fake::holding(2));
    assert_eq!(publish_filling_gaps(&hub, &store, rendered(1)), Ok(Published::Released));
    assert_eq!(publish_filling_gaps(&hub, &store, rendered(2)), Ok(Published::Released));
    assert_eq!(store.reads(), 0);
    assert_eq!(ids(&hub), [1, 2]);
}

#[test]
fn a_message_after_a_gap_is_released_after_the_missing_ones_read_from_the_store() {
    let (hub, store) = (Hub::new(100), Fake::holding(5));
    hub.preload(&room(), vec![message(1)]);
    assert_eq!(publish_filling_gaps(&hub, &store, rendered(5)), Ok(Published::Released));
    assert_eq!(ids(&hub), [1, 2, 3, 4, 5]);
}

#[test]
fn a_room_this_node_never_saw_is_filled_from_its_first_message() {
    let (hub, store) = (Hub::new(100), Fake::holding(3));
    assert_eq!(publish_filling_gaps(&hub, &store, rendered(3)), Ok(Published::Released));
    assert_eq!(ids(&hub), [1, 2, 3]);
}

#[test]
fn two_gaps_around_a_held_message_are_both_filled() {
    let (hub, store) = (Hub::new(100), Fake::holding(9));
    hub.preload(&room(), vec![message(1), message(2), message(3), message(4)]);
    // 7 arrives alone and is held (as if the store could not be read at that moment).
    assert!(matches!(hub.publish(rendered(7)), Published::Held { .. }));
    assert_eq!(publish_filling_gaps(&hub, &store, rendered(9)), Ok(Published::Released));
    assert_eq!(ids(&hub), (1..=9).collect::<Vec<_>>());
}

#[test]
fn the_late_original_of_a_filled_message_is_a_duplicate() {
    let (hub, store) = (Hub::new(100), Fake::holding(3));
    publish_filling_gaps(&hub, &store, rendered(3)).unwrap();
    assert_eq!(publish_filling_gaps(&hub, &store, rendered(2)), Ok(Published::Duplicate));
    assert_eq!(ids(&hub), [1, 2, 3]);
}

#[test]
fn a_gap_the_store_cannot_fill_leaves_the_message_held_without_spinning() {
    // The store lacks 2 (a broken no-gap contract): the call ends, the message stays held.
    let (hub, store) = (Hub::new(100), Fake { messages: vec![message(1)], reads: Mutex::new(0) });
    hub.preload(&room(), vec![message(1)]);
    let outcome = publish_filling_gaps(&hub, &store, rendered(3));
    assert_eq!(outcome, Ok(Published::Held { missing_from: MessageId(2), missing_to: MessageId(2) }));
    assert_eq!(store.reads(), 1);
    assert_eq!(ids(&hub), [1]);
}
