//! What the database-server stores (MySQL/MariaDB, PostgreSQL, blocking, native and
//! cooperative) share: the schema version and its check, and the checks on what they
//! read back.

use c10k_core::store::{Appended, Message, MessageId, NewMessage, RoomId, StoreError};

/// The schema version this build writes; an older database is migrated to it. Version 2
/// keeps each message's idempotency key (`idem_key`, unique per room).
pub(crate) const VERSION: u32 = 2;

/// Refuses a database written by a newer c10k.
pub(crate) fn check_version(found: Option<u32>, what: &str) -> Result<(), StoreError> {
    match found {
        Some(v) if v > VERSION => Err(StoreError(format!(
            "{what} has c10k schema version {v}, newer than this build understands ({VERSION}); \
             upgrade c10k, or point --db at another database"
        ))),
        _ => Ok(()),
    }
}

/// A room name read back, checked.
pub(crate) fn room(name: String) -> Result<RoomId, StoreError> {
    RoomId::new(&name).map_err(|_| {
        StoreError(format!(
            "the database holds a room named {name:?}, which c10k never writes; point --db at a \
             database of c10k's own"
        ))
    })
}

/// The message as stored now under `id`.
pub(crate) fn stored(room: &RoomId, message: &NewMessage, id: u64) -> Appended {
    Appended::new(Message {
        id: MessageId(id),
        room: room.clone(),
        body: message.body.clone(),
        from: message.from.clone(),
        time_ms: message.time_ms,
    })
}

/// The error for a key that the database refused as a duplicate but then did not find.
pub(crate) fn key_vanished(room: &RoomId) -> StoreError {
    StoreError(format!(
        "room {room}'s message with this idempotency key was refused as a duplicate and then not found; retry"
    ))
}

