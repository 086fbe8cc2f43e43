//! Idempotency keys of posts: a client that cannot tell whether its post was stored (the
//! connection broke before the answer) sends it again with the same key, and gets the
//! message stored the first time instead of a second copy.
//!
//! The promise is kept by the store: the key is stored with the message, unique in its
//! room, so a retry that reaches another worker, another machine or a restarted server is
//! answered from the database ([`crate::store::Appended::replayed`]). This table is the
//! process's memory in front of it, bounded to the [`MAX_KEYS`] most recent keys: a retry
//! that reaches the same process is answered without a store call, and one that arrives
//! while the first post with its key is still being stored here is told to wait (409)
//! rather than queued behind it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::render::Rendered;
use crate::store::{NewMessage, RoomId};

/// How many keys are remembered (per process); the oldest is forgotten first.
pub const MAX_KEYS: usize = 10_000;
/// The longest key accepted, in bytes (visible ASCII only).
pub const MAX_KEY_LEN: usize = 128;

type Key = (RoomId, String);

#[derive(Debug)]
enum Entry {
    /// A post with this key is being stored now.
    InFlight(u64),
    /// It was stored as this message.
    Stored(u64, Arc<Rendered>),
}

impl Entry {
    fn seq(&self) -> u64 {
        match self {
            Entry::InFlight(seq) | Entry::Stored(seq, _) => *seq,
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were first seen, with their sequence number: an entry
    /// removed and made again has a new number, so its old place here is skipped.
    order: VecDeque<(u64, Key)>,
    next: u64,
}

/// The keys seen recently and what became of their posts.
#[derive(Debug, Default)]
pub(crate) struct Replays(Mutex<Table>);

/// What to do with a post that carries a key.
#[derive(Debug)]
pub(crate) enum Begin {
    /// First seen: store it; the claim records the outcome.
    New(Claim),
    /// A post with this key is being stored right now: answer "try again shortly".
    InFlight,
    /// Already stored as this message: answer with it, store nothing.
    Stored(Arc<Rendered>),
    /// The key was used for a different message (body or sender).
    Mismatch,
}

/// Whether `key` is an acceptable idempotency key: 1 to [`MAX_KEY_LEN`] visible ASCII
/// characters (a UUID, for instance).
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

impl Replays {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding it leaves the table consistent (each step is one insert or
        // remove): go on with it.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks `key` up for a post of `message` to `room`; if it is new, claims it.
    pub(crate) fn begin(self: &Arc<Self>, room: &RoomId, key: &str, message: &NewMessage) -> Begin {
        let mut table = self.lock();
        let id = (room.clone(), key.to_string());
        match table.entries.get(&id) {
            Some(Entry::InFlight(_)) => return Begin::InFlight,
            Some(Entry::Stored(_, stored)) => {
                let same = stored.message.body == message.body && stored.message.from == message.from;
                return if same { Begin::Stored(Arc::clone(stored)) } else { Begin::Mismatch };
            }
            None => {}
        }
        let seq = table.next;
        table.next += 1;
        table.entries.insert(id.clone(), Entry::InFlight(seq));
        table.order.push_back((seq, id.clone()));
        while table.entries.len() > MAX_KEYS {
            let Some((seq, oldest)) = table.order.pop_front() else { break };
            if table.entries.get(&oldest).is_some_and(|e| e.seq() == seq) {
                table.entries.remove(&oldest);
            }
        }
        // Places of removed entries pile up only until they reach the front.
        if table.order.len() > 2 * MAX_KEYS {
            let Table { entries, order, .. } = &mut *table;
            order.retain(|(seq, key)| entries.get(key).is_some_and(|e| e.seq() == *seq));
        }
        Begin::New(Claim { replays: Arc::clone(self), key: id, seq, done: false })
    }
}

/// A key being stored. [`Claim::stored`] records the message; dropped without it (the
/// store failed, or the call never ran), the key is released so that a retry stores.
#[derive(Debug)]
pub(crate) struct Claim {
    replays: Arc<Replays>,
    key: Key,
    seq: u64,
    done: bool,
}

impl Claim {
    /// The post was stored as `message`: later posts with this key get it.
    pub(crate) fn stored(mut self, message: &Arc<Rendered>) {
        let mut table = self.replays.lock();
        if let Some(entry) = table.entries.get_mut(&self.key).filter(|e| e.seq() == self.seq) {
            *entry = Entry::Stored(self.seq, Arc::clone(message));
        }
        self.done = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut table = self.replays.lock();
        if matches!(table.entries.get(&self.key), Some(Entry::InFlight(seq)) if *seq == self.seq) {
            table.entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Message, MessageId};

    fn new(body: &str) -> NewMessage {
        NewMessage { body: body.into(), from: "ann".into(), time_ms: 1, deadline: None, key: None }
    }

    fn rendered(id: u64, body: &str) -> Arc<Rendered> {
        Arc::new(Rendered::new(Message {
            id: MessageId(id),
            room: RoomId::main(),
            body: body.into(),
            from: "ann".into(),
            time_ms: 1,
        }))
    }

    #[test]
    fn a_key_is_stored_once_then_answered_with_the_stored_message() {
        let replays = Arc::new(Replays::default());
        let room = RoomId::main();
        let Begin::New(claim) = replays.begin(&room, "k1", &new("hi")) else { panic!("first use") };
        assert!(matches!(replays.begin(&room, "k1", &new("hi")), Begin::InFlight));
        claim.stored(&rendered(7, "hi"));
        match replays.begin(&room, "k1", &new("hi")) {
            Begin::Stored(m) => assert_eq!(m.message.id, MessageId(7)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(replays.begin(&room, "k1", &new("other")), Begin::Mismatch));
        // Keys are per room.
        let other = RoomId::new("other").unwrap();
        assert!(matches!(replays.begin(&other, "k1", &new("hi")), Begin::New(_)));
    }

    #[test]
    fn a_failed_post_releases_its_key() {
        let replays = Arc::new(Replays::default());
        let room = RoomId::main();
        let Begin::New(claim) = replays.begin(&room, "k", &new("hi")) else { panic!() };
        drop(claim);
        assert!(matches!(replays.begin(&room, "k", &new("hi")), Begin::New(_)));
    }

    #[test]
    fn the_oldest_keys_are_forgotten_past_the_bound() {
        let replays = Arc::new(Replays::default());
        let room = RoomId::main();
        for i in 0..=MAX_KEYS {
            let Begin::New(claim) = replays.begin(&room, &format!("k{i}"), &new("hi")) else { panic!() };
            claim.stored(&rendered(i as u64 + 1, "hi"));
        }
        assert_eq!(replays.lock().entries.len(), MAX_KEYS);
        assert!(matches!(replays.begin(&room, "k0", &new("hi")), Begin::New(_)), "k0 was forgotten");
        assert!(matches!(replays.begin(&room, &format!("k{MAX_KEYS}"), &new("hi")), Begin::Stored(_)));
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(valid_key("4f1c6a0e-9b1d-4a57-8f0e-2b8d0c3a9e11"));
        for bad in ["", "has space", "é", &"x".repeat(MAX_KEY_LEN + 1)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }
}
