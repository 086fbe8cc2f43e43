//! Durable message storage for c10k, and the pool that keeps its blocking calls off the
//! serving threads.
//!
//! - [`SqliteStore`] (`sqlite.rs`) implements [`c10k_core::store::Store`] on one SQLite
//!   file: the default back-end, with no service to install. Several threads and several
//!   processes (`--workers N`) may write the same file at once.
//! - [`OffloadPool`] (`offload.rs`) runs blocking jobs on a few named OS threads behind a
//!   bounded queue, so an event loop can hand a store call away and keep serving; a full
//!   queue answers [`Busy`] at once instead of blocking the loop.
//! - [`open`] turns a `--db` value into a store.
//!
//! **The durability promise.** `append` returns only once the message would survive
//! `kill -9` of the server, with its id; ids per room are 1, 2, 3... with no gap and no
//! duplicate, even with many writers. By default a commit is not fsynced: surviving the
//! death of the *process* needs only that the data reached the kernel. Ask for
//! [`Durability::Full`] to survive power loss too. The reasoning is in `sqlite.rs`.
//!
//! **Why an offload pool.** rusqlite (like the `mysql` and `postgres` crates) blocks the
//! calling thread. On a thread-per-connection model that is fine; on an event loop one slow
//! commit would stall every connection the loop serves. So event-loop models submit store
//! calls to an [`OffloadPool`], as Twisted put its MySQL connection in its own thread, and
//! `--db-mode inline` calls the store on the loop instead to show what that costs.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod offload;
mod slow;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use c10k_core::store::{Store, StoreError};

pub use offload::{Busy, Job, OffloadPool};
pub use slow::SlowStore;
pub use sqlite::{Durability, SqliteStore, BUSY_TIMEOUT, POOL_SIZE};

/// Opens the store a `--db` value names, with the default [`Durability::Process`]:
///
/// - `PATH` or `sqlite:PATH` (also `sqlite://PATH`): the SQLite file at `PATH`, created if
///   missing;
/// - `:memory:` or `sqlite::memory:`: a private in-memory database (for tests; nothing
///   survives the process);
/// - `mysql://...`, `postgres://...`: not built yet; the error says to use a SQLite path;
/// - `slow:MILLIS:REST`: the store `REST` names, with every call delayed by MILLIS
///   milliseconds on the calling thread ([`SlowStore`], for the db-stall benchmark).
pub fn open(url_or_path: &str) -> Result<Arc<dyn Store>, StoreError> {
    let target = url_or_path.trim();
    if let Some(rest) = target.strip_prefix("slow:") {
        let (millis, inner) = rest.split_once(':').ok_or_else(|| {
            StoreError(format!("{target:?}: write slow:MILLIS:PATH, for instance slow:20:c10k.sqlite3"))
        })?;
        let millis: u64 = millis.parse().map_err(|_| {
            StoreError(format!("{target:?}: {millis:?} is not a number of milliseconds; write slow:MILLIS:PATH"))
        })?;
        return Ok(Arc::new(SlowStore::new(open(inner)?, std::time::Duration::from_millis(millis))));
    }
    if target.is_empty() {
        return Err(StoreError(
            "no database given; pass --db with a file path such as c10k.sqlite3".to_string(),
        ));
    }
    let lower = target.to_ascii_lowercase();
    for scheme in ["mysql:", "mariadb:", "postgres:", "postgresql:"] {
        if lower.starts_with(scheme) {
            return Err(StoreError(format!(
                "the {} back-end is not built yet; pass --db with a SQLite file path such as \
                 c10k.sqlite3 (several --workers can share one file)",
                scheme.trim_end_matches(':')
            )));
        }
    }
    let path = if lower.starts_with("sqlite:") {
        let rest = &target["sqlite:".len()..];
        rest.strip_prefix("//").unwrap_or(rest)
    } else if let Some((scheme, _)) = target.split_once("://") {
        return Err(StoreError(format!(
            "unknown database scheme {scheme:?} in {target:?}; pass --db with a SQLite file path \
             such as c10k.sqlite3, or sqlite:PATH"
        )));
    } else {
        target
    };
    if path.is_empty() {
        return Err(StoreError(format!(
            "{target:?} names no file; write sqlite:PATH, for instance sqlite:c10k.sqlite3"
        )));
    }
    if path == ":memory:" {
        return Ok(Arc::new(SqliteStore::open_memory()?));
    }
    Ok(Arc::new(SqliteStore::open(Path::new(path))?))
}
