//! What the chat needs from durable storage, as a trait the core calls but never implements.
//!
//! Implementations (SQLite, MySQL, PostgreSQL) live in `c10k-store` and block: they are
//! ordinary driver calls. The concurrency model decides where they run: on the offload
//! pool (the default, so a slow query stalls nobody) or inline on the serving thread
//! (`--db-mode inline`, to show what that costs).
//!
//! The contract every implementation keeps:
//! - `append` returns only after the message is durable (it survives `kill -9` of the
//!   server), with its id;
//! - ids are per room, start at 1 and increase by exactly 1 per message, so a gap in what a
//!   node has seen always means a message it must still fetch;
//! - `after` returns messages in id order, `before` newest first;
//! - a message whose `deadline` has passed is not committed: the store checks it inside
//!   the append's transaction, after its last wait and before its commit.
//!
//! [`AsyncStore`] is the same contract for drivers that cooperate with an async runtime
//! instead of blocking (`--db-mode native`: `tokio-postgres`, `mysql_async`). The core
//! only names the futures; the model that awaits them owns the runtime.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use serde::Serialize;

/// A room's name: 1 to 64 characters of `A-Z a-z 0-9 _ -`, so that it is safe in a URL
/// path, a file name, a SQL parameter and a bus subject alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomId(String);

impl RoomId {
    /// The most characters a room name may have.
    pub const MAX_LEN: usize = 64;

    /// Validates a room name.
    pub fn new(name: &str) -> Result<RoomId, InvalidRoom> {
        if is_safe_name(name, Self::MAX_LEN) {
            Ok(RoomId(name.to_string()))
        } else {
            Err(InvalidRoom)
        }
    }

    /// The room that Tornado's routes (`/a/message/...`) use.
    pub fn main() -> RoomId {
        RoomId("main".to_string())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rule of room and account names: 1 to `max` characters of `A-Z a-z 0-9 _ -`.
pub(crate) fn is_safe_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A room name that breaks the rule of [`RoomId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a room name is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidRoom;

/// A message's id within its room: 1, 2, 3... with no gaps. 0 means "before the first".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct MessageId(pub u64);

impl MessageId {
    /// The id after this one.
    pub fn next(self) -> MessageId {
        MessageId(self.0 + 1)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A message as posted, before the store gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The text, as the poster typed it (never HTML: it is escaped on the way out). It
    /// never holds U+0000, which the routes refuse or map before a store sees it
    /// (PostgreSQL cannot keep one; see `chat::text`).
    pub body: String,
    /// The poster's nickname; empty when anonymous. Never holds U+0000 either.
    pub from: String,
    /// When the server accepted it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The latest moment the store may commit it (`--db-post-timeout` after the request
    /// arrived): the whole of the post's wait, in the offload queue, for a connection and
    /// for the database's write lock, must fit before it. Past it the store commits
    /// nothing and `append` fails saying so, so a poster told 503 never finds its message
    /// stored later. `None`: only the store's own bounds apply.
    pub deadline: Option<Instant>,
    /// The poster's idempotency key (1 to 128 visible ASCII characters), stored with the
    /// message: a second append with the same key in the same room stores nothing and
    /// gives back the message stored the first time ([`Appended::replayed`]), across
    /// restarts, processes and machines sharing the database.
    pub key: Option<String>,
}

/// What [`Store::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The message as stored, with its id.
    pub message: Message,
    /// True when the message's key was stored in the room before: nothing was stored now,
    /// and `message` is the one stored then (whose body may differ: the caller compares).
    pub replayed: bool,
}

impl Appended {
    /// A message stored now.
    pub fn new(message: Message) -> Appended {
        Appended { message, replayed: false }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Its id within the room.
    pub id: MessageId,
    /// Its room.
    pub room: RoomId,
    /// The text.
    pub body: String,
    /// The poster's nickname.
    pub from: String,
    /// When the server accepted it, in milliseconds since the Unix epoch.
    #[serde(rename = "time")]
    pub time_ms: u64,
}

/// A store call that failed. The message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Durable storage for messages. Blocking; see the module docs for the contract.
pub trait Store: Send + Sync {
    /// Stores a message in `room`, giving it the room's next id. Returns once durable. A
    /// message whose key the room holds already is not stored again (see
    /// [`NewMessage::key`]).
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError>;

    /// Up to `limit` messages of `room` with ids greater than `after`, in id order.
    fn after(&self, room: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError>;

    /// The last `limit` messages of `room`, in id order.
    fn recent(&self, room: &RoomId, limit: usize) -> Result<Vec<Message>, StoreError>;

    /// Up to `limit` messages of `room` with ids less than `before` (all of them when
    /// `None`), **newest first**: one page of history, reaching back past what the
    /// server keeps in memory.
    fn before(&self, room: &RoomId, before: Option<MessageId>, limit: usize) -> Result<Vec<Message>, StoreError>;

    /// Every room that has at least one message.
    fn rooms(&self) -> Result<Vec<RoomId>, StoreError>;

    /// The ledger's tables in this store (`--locking db`), if it keeps them. A store without
    /// them serves the in-memory strategies only.
    fn ledger(&self) -> Option<&dyn crate::ledger::LedgerStore> {
        None
    }

    /// Whether the store can take posts now (`GET /readyz`): a store that serves reads but
    /// cannot write (a read-only file, a database that is down) says why. The default is
    /// [`Store::round_trip`]; a store that can check its writes more closely overrides it.
    fn readiness(&self) -> Result<(), StoreError> {
        self.round_trip()
    }

    /// The store's epoch: a random name its history got when it was created, kept with it,
    /// and changed (by `c10k epoch --rotate`) when the history can no longer be trusted to
    /// continue the one clients have seen: a restored backup, a truncated table. A resume
    /// cursor is an id *in an epoch*; a client that resumes with another epoch is sent the
    /// explicit reset (docs/protocol.md). `None`: this store keeps no epoch (the memory
    /// store of the core's tests), and cursors are taken as they come.
    fn epoch(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// Replaces the store's epoch with `epoch` (see [`Store::epoch`]); servers read it when
    /// they start.
    fn set_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        let _ = epoch;
        Err(StoreError("this store keeps no epoch".into()))
    }

    /// One round trip to the store that changes nothing (SQLite: `SELECT 1`): the real
    /// scheduling point that `--locking none` puts between its read and its write, and the
    /// work the lock-based strategies do while they hold their locks. The default asks for
    /// the rooms; override it with something cheaper.
    fn round_trip(&self) -> Result<(), StoreError> {
        self.rooms().map(drop)
    }
}

/// A boxed future that can move between threads, as [`AsyncStore`]'s methods return.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The two calls a server makes while serving, through a driver that cooperates with an
/// async runtime (`--db-mode native`). The contract is [`Store`]'s; start-up (history,
/// rooms) still goes through the blocking [`Store`] of the same database.
pub trait AsyncStore: Send + Sync {
    /// [`Store::append`], awaited instead of blocking.
    fn append<'a>(&'a self, room: &'a RoomId, message: &'a NewMessage) -> StoreFuture<'a, Appended>;

    /// [`Store::after`], awaited instead of blocking.
    fn after<'a>(&'a self, room: &'a RoomId, after: MessageId, limit: usize) -> StoreFuture<'a, Vec<Message>>;
}

/// The two calls a server makes while serving, through a driver bound to the calling
/// thread: a green coroutine drives its database connection itself (`--db-mode native`
/// on `green`), so the driver is neither `Send` nor `Sync`. The contract is [`Store`]'s;
/// it blocks its caller, which means: parks the coroutine.
pub trait LocalStore {
    /// [`Store::append`], on this thread's driver.
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError>;

    /// [`Store::after`], on this thread's driver.
    fn after(&self, room: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError>;
}

/// A [`Store`] kept in memory: ids per room from 1 and keys replayed, but neither durable
/// nor bound by deadlines (the core reads no clock, so it cannot tell one has passed). For
/// the core's own tests and the fuzz targets, which drive the connection machine with no
/// database; the server never uses it.
#[derive(Debug, Default)]
pub struct MemoryStore(std::sync::Mutex<Vec<(Message, Option<String>)>>);

impl Store for MemoryStore {
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError> {
        let mut all = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key) = &message.key {
            let earlier = all.iter().find(|(m, k)| &m.room == room && k.as_ref() == Some(key));
            if let Some((stored, _)) = earlier {
                return Ok(Appended { message: stored.clone(), replayed: true });
            }
        }
        let id = all.iter().filter(|(m, _)| &m.room == room).count() as u64 + 1;
        let stored = Message {
            id: MessageId(id),
            room: room.clone(),
            body: message.body.clone(),
            from: message.from.clone(),
            time_ms: message.time_ms,
        };
        all.push((stored.clone(), message.key.clone()));
        Ok(Appended::new(stored))
    }

    fn after(&self, room: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError> {
        let all = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let newer = all.iter().map(|(m, _)| m).filter(|m| &m.room == room && m.id > after);
        Ok(newer.take(limit).cloned().collect())
    }

    fn recent(&self, room: &RoomId, limit: usize) -> Result<Vec<Message>, StoreError> {
        let mut newest_first = self.before(room, None, limit)?;
        newest_first.reverse();
        Ok(newest_first)
    }

    fn before(&self, room: &RoomId, before: Option<MessageId>, limit: usize) -> Result<Vec<Message>, StoreError> {
        let all = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let older = all.iter().rev().map(|(m, _)| m);
        Ok(older.filter(|m| &m.room == room && before.is_none_or(|b| m.id < b)).take(limit).cloned().collect())
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        let all = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut rooms: Vec<RoomId> = Vec::new();
        for (m, _) in all.iter() {
            if !rooms.contains(&m.room) {
                rooms.push(m.room.clone());
            }
        }
        Ok(rooms)
    }
}
