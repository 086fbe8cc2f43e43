//! Rooms, bounded history, cursors, and the one wake-up mechanism every model waits through.
//!
//! The hub holds, per room, the last `history` messages in id order, and the wakers of
//! everyone waiting for the next one. Nothing in it blocks or sleeps: a reader either gets
//! messages at once or leaves a [`std::task::Waker`] and is told "not yet". Each
//! concurrency model brings its own waker (a thread unpark, a token on the reactor's ready
//! list plus an eventfd poke, a coroutine resume, a tokio task), so the hub never knows
//! which model it serves.
//!
//! Order and exactly-once: ids come from the store, one per message with no gaps. Messages
//! may reach [`Hub::publish`] out of order (two offload threads finish in either order);
//! the hub holds a message whose predecessor has not arrived yet and releases both in
//! order, and it drops a message it already has. Readers therefore see every message of
//! their room once, in id order.
//!
//! Locking: one mutex around the rooms. Wakers are collected under it and woken after it
//! is released, so a waker that re-enters the hub (as the thread models' do) never
//! deadlocks, and no model's code runs inside the critical section.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crate::chat::render::Rendered;
use crate::presence::PresenceUpdate;
use crate::store::{Message, MessageId, RoomId};

/// The shared rooms. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    history: usize,
    /// A cursor beyond the newest id waits instead of resetting ([`Hub::wait_for_ahead_cursors`]).
    ahead_waits: AtomicBool,
    /// The store's epoch, which the histories held here belong to ([`Hub::set_epoch`]).
    epoch: std::sync::OnceLock<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<RoomId, Room>,
    next_waiter: u64,
}

#[derive(Debug, Default)]
struct Room {
    /// The last messages, contiguous ids, oldest first.
    history: VecDeque<Arc<Rendered>>,
    /// The newest id released to readers (0: none yet).
    last_id: MessageId,
    /// Messages that arrived before their predecessor, by id.
    early: BTreeMap<MessageId, Arc<Rendered>>,
    /// Who waits for the next message, by waiter id.
    waiters: HashMap<u64, Waker>,
    /// The newest presence update ([`crate::presence`]).
    presence: Option<Arc<PresenceUpdate>>,
}

/// Where a reader stands in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Everything the history holds, then what comes.
    Start,
    /// Everything after this id. If the history no longer reaches back to it (or it lies
    /// beyond the newest id), the read says `reset` and starts from the oldest held.
    After(MessageId),
    /// Tornado's rule: everything after the message with this id if the cache holds it,
    /// otherwise the whole cache. Any string is accepted (Tornado's ids were uuids).
    Tornado(Option<String>),
    /// A position given in another epoch of the store (a client that last read before the
    /// database was replaced or restored): it says nothing about this history, so the read
    /// says `reset` and starts from the oldest held, whatever the id was.
    OtherEpoch,
}

impl Cursor {
    /// Whether a read from here that cannot continue must say so: a client that has read
    /// something (a numeric cursor past 0) or that read in another epoch.
    fn claims_a_position(&self) -> bool {
        matches!(self, Cursor::After(id) if id.0 > 0) || matches!(self, Cursor::OtherEpoch)
    }
}

/// What one read returns.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The messages, in id order.
    pub messages: Vec<Arc<Rendered>>,
    /// True when the messages do not continue from the cursor: some were evicted, or the
    /// cursor was beyond the newest id. The reader must start afresh from this batch.
    pub reset: bool,
    /// The room's newest id when the read was made.
    pub last_id: MessageId,
    /// A presence event to send after the messages (subscriptions that asked for them,
    /// [`Hub::subscribe_with_presence`]): its JSON.
    pub presence: Option<Arc<str>>,
}

/// What [`Hub::publish`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Released to readers, with any held successors.
    Released,
    /// Held until its predecessors arrive; these ids are missing (inclusive range).
    /// A node that receives messages from elsewhere must fetch them from the store.
    Held {
        /// The first missing id.
        missing_from: MessageId,
        /// The last missing id.
        missing_to: MessageId,
    },
    /// Already seen: dropped, so that delivery stays exactly-once.
    Duplicate,
}

impl Hub {
    /// An empty hub keeping the last `history` messages of each room (at least 1).
    pub fn new(history: usize) -> Hub {
        Hub {
            state: Mutex::new(State::default()),
            history: history.max(1),
            ahead_waits: AtomicBool::new(false),
            epoch: std::sync::OnceLock::new(),
        }
    }

    /// Names the store's epoch (see `Store::epoch`), once, at start-up: the ids of every
    /// room here are ids in it. A second call is ignored.
    pub fn set_epoch(&self, epoch: &str) {
        let _ = self.epoch.set(Arc::from(epoch));
    }

    /// The store's epoch, if it keeps one.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.get().map(|epoch| &**epoch)
    }

    /// From now on, a reader whose cursor lies beyond a room's newest id waits for the room
    /// to reach it instead of being told `reset`. For nodes sharing rooms over a network
    /// bus: a client that moves from a node to another that has not heard of its newest
    /// message yet must not be sent the history again. (A cursor beyond the store's newest
    /// id then waits until such a message exists.)
    pub fn wait_for_ahead_cursors(&self) {
        self.ahead_waits.store(true, Ordering::Relaxed);
    }

    fn ahead_waits(&self) -> bool {
        self.ahead_waits.load(Ordering::Relaxed)
    }

    /// How many messages each room keeps.
    pub fn history_len(&self) -> usize {
        self.history
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a room half-updated in a way that
        // breaks the invariants more than losing the update would; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads a room's history at start-up (from the store). Messages must be contiguous
    /// and in id order; the room's newest id becomes the last one given.
    pub fn preload(&self, room: &RoomId, messages: Vec<Message>) {
        let mut state = self.lock();
        let entry = state.rooms.entry(room.clone()).or_default();
        for message in messages {
            if message.id > entry.last_id {
                entry.last_id = message.id;
                entry.history.push_back(Arc::new(Rendered::new(message)));
            }
        }
        while entry.history.len() > self.history {
            entry.history.pop_front();
        }
    }

    /// Makes a stored message visible to readers, in id order, once. Wakes every waiter
    /// of the room (after releasing the lock) when anything was released.
    pub fn publish(&self, message: Arc<Rendered>) -> Published {
        let id = message.message.id;
        let (outcome, wakers) = {
            let mut state = self.lock();
            let room = state.rooms.entry(message.message.room.clone()).or_default();
            if id <= room.last_id || room.early.contains_key(&id) {
                return Published::Duplicate;
            }
            let rendered = message;
            if id != room.last_id.next() {
                let missing_from = room.last_id.next();
                room.early.insert(id, rendered);
                let missing_to = MessageId(room.early.keys().next().map_or(id.0, |k| k.0) - 1);
                return Published::Held { missing_from, missing_to };
            }
            room.release(rendered, self.history);
            while let Some(entry) = room.early.first_entry() {
                if *entry.key() != room.last_id.next() {
                    break;
                }
                let next = entry.remove();
                room.release(next, self.history);
            }
            let wakers: Vec<Waker> = room.waiters.drain().map(|(_, w)| w).collect();
            (Published::Released, wakers)
        };
        for waker in wakers {
            waker.wake();
        }
        outcome
    }

    /// Reads at once, without waiting: the messages after `cursor` (possibly none).
    pub fn read(&self, room: &RoomId, cursor: &Cursor) -> Batch {
        let state = self.lock();
        match state.rooms.get(room) {
            Some(r) => r.read(cursor, self.ahead_waits()),
            None => Batch {
                messages: Vec::new(),
                reset: cursor.claims_a_position() && (!self.ahead_waits() || *cursor == Cursor::OtherEpoch),
                last_id: MessageId(0),
                presence: None,
            },
        }
    }

    /// The newest id of a room (0 if it has none).
    pub fn last_id(&self, room: &RoomId) -> MessageId {
        self.lock().rooms.get(room).map_or(MessageId(0), |r| r.last_id)
    }

    /// The rooms the hub knows, with their newest ids, sorted by name.
    pub fn rooms(&self) -> Vec<(RoomId, MessageId)> {
        let state = self.lock();
        let mut rooms: Vec<_> = state.rooms.iter().map(|(k, r)| (k.clone(), r.last_id)).collect();
        rooms.sort();
        rooms
    }

    /// How many readers are waiting, over all rooms (for `/metrics`).
    pub fn waiting(&self) -> usize {
        self.lock().rooms.values().map(|r| r.waiters.len()).sum()
    }

    /// Starts reading `room` from `cursor`; see [`Subscription::poll_next`].
    pub fn subscribe(self: &Arc<Self>, room: RoomId, cursor: Cursor) -> Subscription {
        Subscription { hub: Arc::clone(self), room, cursor, waiter: None, started: false, presence_seen: None }
    }

    /// [`Hub::subscribe`], and the room's presence updates too, in its batches.
    pub fn subscribe_with_presence(self: &Arc<Self>, room: RoomId, cursor: Cursor) -> Subscription {
        self.subscribe_after_presence(room, cursor, 0)
    }

    /// [`Hub::subscribe_with_presence`] for a reader that has seen presence version `seen`
    /// (a long-poll's `?presence=`): a newer update answers it.
    pub fn subscribe_after_presence(self: &Arc<Self>, room: RoomId, cursor: Cursor, seen: u64) -> Subscription {
        let mut subscription = self.subscribe(room, cursor);
        subscription.presence_seen = Some(seen);
        subscription
    }

    /// Makes `update` the room's newest presence, and wakes its waiters (long-polls too:
    /// they find no message and wait again).
    pub fn publish_presence(&self, room: &RoomId, update: Arc<PresenceUpdate>) {
        let wakers: Vec<Waker> = {
            let mut state = self.lock();
            let entry = state.rooms.entry(room.clone()).or_default();
            entry.presence = Some(update);
            entry.waiters.drain().map(|(_, w)| w).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// How many of the messages the room holds were posted at or after `since_ms` (Unix
    /// ms): a rate, for the admin view (at most the history's length).
    pub fn count_since(&self, room: &RoomId, since_ms: u64) -> usize {
        let state = self.lock();
        state.rooms.get(room).map_or(0, |r| r.history.iter().rev().take_while(|m| m.message.time_ms >= since_ms).count())
    }

    /// The room's newest presence update, if it has had one.
    pub fn presence(&self, room: &RoomId) -> Option<Arc<PresenceUpdate>> {
        self.lock().rooms.get(room).and_then(|r| r.presence.clone())
    }
}

impl Room {
    fn release(&mut self, message: Arc<Rendered>, keep: usize) {
        self.last_id = message.message.id;
        self.history.push_back(message);
        if self.history.len() > keep {
            self.history.pop_front();
        }
    }

    fn read(&self, cursor: &Cursor, ahead_waits: bool) -> Batch {
        let all = || self.history.iter().cloned().collect::<Vec<_>>();
        let (messages, reset) = match cursor {
            Cursor::Start => (all(), false),
            Cursor::OtherEpoch => (all(), true),
            Cursor::After(after) => {
                let oldest = self.history.front().map_or(self.last_id.next(), |m| m.message.id);
                if *after > self.last_id && ahead_waits {
                    (Vec::new(), false)
                } else if *after > self.last_id || after.next() < oldest {
                    (all(), true)
                } else {
                    // Ids are contiguous: the message after `after` sits at a known offset.
                    let skip = (after.0 + 1 - oldest.0) as usize;
                    (self.history.iter().skip(skip).cloned().collect(), false)
                }
            }
            Cursor::Tornado(cursor) => {
                let position = cursor.as_deref().and_then(|c| {
                    self.history.iter().rposition(|m| m.tornado_id() == c)
                });
                match position {
                    Some(i) => (self.history.iter().skip(i + 1).cloned().collect(), false),
                    None => (all(), false),
                }
            }
        };
        Batch { messages, reset, last_id: self.last_id, presence: None }
    }
}

/// One reader's place in a room, and its registration as a waiter. Dropping it forgets the
/// waiter at once (a long-poll client that disconnects leaves nothing behind).
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    room: RoomId,
    cursor: Cursor,
    waiter: Option<u64>,
    started: bool,
    /// The presence version this reader was last sent; `None`: it wants none.
    presence_seen: Option<u64>,
}

impl Subscription {
    /// The room read.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// The epoch the room's ids are in ([`Hub::epoch`]).
    pub fn epoch(&self) -> Option<&str> {
        self.hub.epoch()
    }

    /// The room's newest id now.
    pub fn hub_last_id(&self) -> MessageId {
        self.hub.last_id(&self.room)
    }

    /// Returns the next batch if there is one (messages, or a reset), advancing the cursor
    /// past it; otherwise registers `waker` to be woken by the next message of the room
    /// and returns `Pending`. The first poll returns an empty batch as well when the
    /// cursor cannot resume (a reset with nothing held), so the reader learns of it.
    ///
    /// Spurious wake-ups are possible: poll again and you may get `Pending` again.
    pub fn poll_next(&mut self, waker: &Waker) -> Poll<Batch> {
        let mut state = self.hub.lock();
        let first_poll = !self.started;
        self.started = true;
        let ahead_waits = self.hub.ahead_waits();
        let mut batch = match state.rooms.get(&self.room) {
            Some(room) => room.read(&self.cursor, ahead_waits),
            None => Batch {
                messages: Vec::new(),
                reset: self.cursor.claims_a_position() && (!ahead_waits || self.cursor == Cursor::OtherEpoch),
                last_id: MessageId(0),
                presence: None,
            },
        };
        if let (Some(seen), Some(update)) = (self.presence_seen, state.rooms.get(&self.room).and_then(|r| r.presence.as_ref())) {
            if update.version != seen {
                batch.presence = Some(Arc::clone(update.for_seen(seen)));
                self.presence_seen = Some(update.version);
            }
        }
        let presence_only = batch.presence.is_some() && batch.messages.is_empty() && !batch.reset;
        if presence_only {
            // Only presence: the cursor stays where it is (it may be ahead of the room).
            if let Some(id) = self.waiter.take() {
                if let Some(room) = state.rooms.get_mut(&self.room) {
                    room.waiters.remove(&id);
                }
            }
            return Poll::Ready(batch);
        }
        if !batch.messages.is_empty() || (batch.reset && first_poll) {
            if let Some(last) = batch.messages.last() {
                self.cursor = Cursor::After(last.message.id);
            } else {
                self.cursor = Cursor::After(batch.last_id);
            }
            if let Some(id) = self.waiter.take() {
                if let Some(room) = state.rooms.get_mut(&self.room) {
                    room.waiters.remove(&id);
                }
            }
            return Poll::Ready(batch);
        }
        if batch.reset {
            // Fell behind (the history moved past our cursor) after the first read, and
            // nothing new: report it, the stream decides what to do.
            return Poll::Ready(batch);
        }
        // Nothing yet. A Tornado cursor that matched nothing in an empty room stays as is;
        // once messages exist the cursor is numeric.
        if let Cursor::Tornado(_) = self.cursor {
            // Keep Tornado semantics until the first message arrives.
        } else if let Cursor::Start = self.cursor {
            self.cursor = Cursor::After(batch.last_id);
        }
        let State { rooms, next_waiter } = &mut *state;
        let room = rooms.entry(self.room.clone()).or_default();
        let id = *self.waiter.get_or_insert_with(|| {
            *next_waiter += 1;
            *next_waiter
        });
        room.waiters.insert(id, waker.clone());
        Poll::Pending
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(id) = self.waiter.take() {
            if let Some(room) = self.hub.lock().rooms.get_mut(&self.room) {
                room.waiters.remove(&id);
            }
        }
    }
}
