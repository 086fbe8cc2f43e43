//! Durable message storage for c10k, and the pool that keeps its blocking calls off the
//! serving threads.
//!
//! - [`SqliteStore`] (`sqlite.rs`) implements [`c10k_core::store::Store`] on one SQLite
//!   file: the default back-end, with no service to install. Several threads and several
//!   processes (`--workers N`) may write the same file at once.
//! - [`OffloadPool`] (`offload.rs`) runs blocking jobs on a few named OS threads behind a
//!   bounded queue, so an event loop can hand a store call away and keep serving; a full
//!   queue answers [`Busy`] at once instead of blocking the loop.
//! - [`MySqlStore`] (`mysql.rs`) and [`PostgresStore`] (`postgres.rs`) keep the same
//!   contract on a MySQL/MariaDB or PostgreSQL server, through blocking drivers, behind a
//!   pool (`pool.rs`) that throws broken connections away and a circuit breaker
//!   (`circuit.rs`) that makes calls fail fast while the database is unreachable.
//! - [`open_native`] gives the same databases through drivers that cooperate with tokio
//!   (`mysql_native.rs` on `mysql_async`, and `tokio-postgres` in `postgres.rs`), for
//!   `--db-mode native`.
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

mod circuit;
mod cooperative;
mod mysql;
mod mysql_ledger;
mod mysql_native;
mod offload;
mod pool;
mod postgres;
mod postgres_ledger;
mod server;
mod slow;
mod sqlite;
pub mod testing;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use c10k_core::store::{AsyncStore, Store, StoreError};

pub use circuit::RETRY_EVERY;
pub use cooperative::{CooperativePostgres, Parker};
pub use mysql::MySqlStore;
pub use mysql_native::MySqlNativeStore;
pub use offload::{Busy, Job, OffloadPool};
pub use postgres::{PostgresNativeStore, PostgresStore};
pub use slow::SlowStore;
pub use sqlite::{Durability, SqliteStore, BUSY_TIMEOUT, POOL_SIZE, SCHEMA_VERSION as SQLITE_SCHEMA_VERSION};

/// The error of an append whose message's deadline (`--db-post-timeout`) passed before it
/// could commit, while it waited for `what`: nothing was stored, and trying again later is
/// safe.
pub(crate) fn past_deadline(what: &str) -> StoreError {
    StoreError(format!(
        "the post's wait reached its deadline (--db-post-timeout) while waiting for {what}; nothing \
         was stored"
    ))
}

/// How a store talks to a database server (MySQL, PostgreSQL); SQLite takes none of it.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The longest any one wait may take: connecting, one query's round trip, waiting for
    /// a free connection (`--db-timeout`). A database that does not answer within it is
    /// taken as unreachable, and calls fail fast until it answers again.
    pub timeout: Duration,
    /// Connections a store keeps open at most (`--db-connections`).
    pub connections: usize,
    /// A demonstration: before each read and append, a query that keeps the server busy
    /// this long (`SELECT SLEEP` / `pg_sleep`), so that the database itself is slow
    /// (`--db-sleep-ms`). Not for production.
    pub server_sleep: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions { timeout: Duration::from_secs(5), connections: 16, server_sleep: None }
    }
}

/// Which server a `--db` URL names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    MySql,
    Postgres,
}

/// A new epoch for a store (see [`Store::epoch`]): 64 random bits from `/dev/urandom` as 16
/// hex digits. Should that device be unreadable, the clock's nanoseconds and the process id
/// stand in: an epoch must differ from the last one, not be secret.
pub fn fresh_epoch() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let bits = match random {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            (nanos as u64) ^ (u64::from(std::process::id()) << 40)
        }
    };
    format!("{bits:016x}")
}

/// The kind of store a `--db` value names, as the info metric shows it: `mysql`,
/// `postgres` or `sqlite` (a `slow:MILLIS:` prefix names the store behind it).
pub fn kind_of(url_or_path: &str) -> &'static str {
    let target = url_or_path.trim();
    if let Some((_, inner)) = target.strip_prefix("slow:").and_then(|rest| rest.split_once(':')) {
        return kind_of(inner);
    }
    match server_of(target) {
        Some(Server::MySql) => "mysql",
        Some(Server::Postgres) => "postgres",
        None => "sqlite",
    }
}

fn server_of(target: &str) -> Option<Server> {
    let lower = target.to_ascii_lowercase();
    if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
        Some(Server::MySql)
    } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Some(Server::Postgres)
    } else {
        None
    }
}

/// Opens the store a `--db` value names, for `--db-mode native`: a driver awaited on the
/// caller's tokio runtime. Only the database servers have one; a SQLite path is refused
/// with what to use instead. Connects lazily, on first use, inside the runtime.
pub fn open_native(url: &str, options: &StoreOptions) -> Result<Arc<dyn AsyncStore>, StoreError> {
    match server_of(url.trim()) {
        Some(Server::MySql) => Ok(Arc::new(MySqlNativeStore::new(url.trim(), options)?)),
        Some(Server::Postgres) => Ok(Arc::new(PostgresNativeStore::new(url.trim(), options)?)),
        None => Err(StoreError(format!(
            "--db-mode native needs a database server with an async driver (mysql://... or \
             postgres://...), and {url:?} is not one: SQLite has no such driver; use --db-mode \
             offload or inline"
        ))),
    }
}

/// Opens the store a `--db` value names, with the default [`Durability::Process`]:
///
/// - `PATH` or `sqlite:PATH` (also `sqlite://PATH`): the SQLite file at `PATH`, created if
///   missing;
/// - `:memory:` or `sqlite::memory:`: a private in-memory database (for tests; nothing
///   survives the process);
/// - `mysql://USER[:PASS]@HOST:PORT/DB` (or `mariadb://`): [`MySqlStore`];
/// - `postgres://USER[:PASS]@HOST:PORT/DB` (or `postgresql://`): [`PostgresStore`];
/// - `slow:MILLIS:REST`: the store `REST` names, with every call delayed by MILLIS
///   milliseconds on the calling thread ([`SlowStore`], for the db-stall benchmark).
pub fn open(url_or_path: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url_or_path, &StoreOptions::default())
}

/// [`open`], with the options for a database server.
pub fn open_with(url_or_path: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    let target = url_or_path.trim();
    if let Some(rest) = target.strip_prefix("slow:") {
        let (millis, inner) = rest.split_once(':').ok_or_else(|| {
            StoreError(format!("{target:?}: write slow:MILLIS:PATH, for instance slow:20:c10k.sqlite3"))
        })?;
        let millis: u64 = millis.parse().map_err(|_| {
            StoreError(format!("{target:?}: {millis:?} is not a number of milliseconds; write slow:MILLIS:PATH"))
        })?;
        return Ok(Arc::new(SlowStore::new(open_with(inner, options)?, Duration::from_millis(millis))));
    }
    if target.is_empty() {
        return Err(StoreError(
            "no database given; pass --db with a file path such as c10k.sqlite3".to_string(),
        ));
    }
    match server_of(target) {
        Some(Server::MySql) => return Ok(Arc::new(MySqlStore::open(target, options)?)),
        Some(Server::Postgres) => return Ok(Arc::new(PostgresStore::open(target, options)?)),
        None => {}
    }
    if options.server_sleep.is_some() {
        return Err(StoreError(
            "--db-sleep-ms makes a database server sleep, and SQLite has none; use --db \
             slow:MILLIS:PATH for a slow SQLite store"
                .into(),
        ));
    }
    let lower = target.to_ascii_lowercase();
    let path = if lower.starts_with("sqlite:") {
        let rest = &target["sqlite:".len()..];
        rest.strip_prefix("//").unwrap_or(rest)
    } else if let Some((scheme, _)) = target.split_once("://") {
        return Err(StoreError(format!(
            "unknown database scheme {scheme:?} in {target:?}; pass --db with a SQLite file path \
             such as c10k.sqlite3 or sqlite:PATH, or a mysql:// or postgres:// URL"
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
