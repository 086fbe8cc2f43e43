//! What the database-server stores (MySQL/MariaDB, PostgreSQL, blocking, native and
//! cooperative) share: the schema version and its check, and the checks on what they
//! read back.

use c10k_core::store::{Message, MessageId, NewMessage, RoomId, StoreError};

/// The schema version this build writes; an older database is migrated to it.
pub(crate) const VERSION: u32 = 1;

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

/// The message as stored under `id`.
pub(crate) fn stored(room: &RoomId, message: &NewMessage, id: u64) -> Message {
    Message {
        id: MessageId(id),
        room: room.clone(),
        body: message.body.clone(),
        from: message.from.clone(),
        time_ms: message.time_ms,
    }
}

