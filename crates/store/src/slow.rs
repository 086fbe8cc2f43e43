//! `slow:MILLIS:PATH`: a store that waits MILLIS before every call, then asks the real
//! one. It stands for a database that is far away or busy, so that the benchmark's
//! db-stall scenario can show what a blocking store call does to everything else the
//! serving thread had to do ("if you block while talking to a database, you block all
//! the requests"). Not for production: it only ever makes things slower.

use std::sync::Arc;
use std::time::Duration;

use c10k_core::store::{Appended, Message, MessageId, NewMessage, RoomId, Store, StoreError};

/// A store whose every call first sleeps for a fixed delay, on the calling thread.
pub struct SlowStore {
    inner: Arc<dyn Store>,
    delay: Duration,
}

impl SlowStore {
    /// Wraps `inner`; every call sleeps `delay` before it is made.
    pub fn new(inner: Arc<dyn Store>, delay: Duration) -> SlowStore {
        SlowStore { inner, delay }
    }

    fn wait(&self) {
        std::thread::sleep(self.delay);
    }
}

impl Store for SlowStore {
    fn epoch(&self) -> Result<Option<String>, StoreError> {
        self.inner.epoch()
    }

    fn set_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        self.inner.set_epoch(epoch)
    }

    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError> {
        self.wait();
        self.inner.append(room, message)
    }

    fn after(&self, room: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.wait();
        self.inner.after(room, after, limit)
    }

    fn recent(&self, room: &RoomId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.wait();
        self.inner.recent(room, limit)
    }

    fn before(&self, room: &RoomId, before: Option<MessageId>, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.wait();
        self.inner.before(room, before, limit)
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        self.wait();
        self.inner.rooms()
    }

    /// The inner store's ledger, undelayed (a shortcut: only the round trip is slowed,
    /// which is what widens `--locking none`'s window).
    fn ledger(&self) -> Option<&dyn c10k_core::ledger::LedgerStore> {
        self.inner.ledger()
    }

    fn round_trip(&self) -> Result<(), StoreError> {
        self.wait();
        self.inner.round_trip()
    }
}
