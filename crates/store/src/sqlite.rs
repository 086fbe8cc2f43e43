//! The SQLite store: one file, WAL mode, safe for several threads and several processes
//! (`--workers N`) writing at once.
//!
//! How each promise of the [`Store`] contract is kept:
//! - **Durable across `kill -9`.** `append` returns after `COMMIT` returns. In WAL mode the
//!   commit has then been written into the `-wal` file with `write(2)`; the data sits in the
//!   kernel's page cache, which outlives the process. `synchronous=NORMAL` skips the fsync
//!   per commit, which only matters if the *kernel* dies (power loss, panic): then the last
//!   commits may be lost, but the file stays consistent. [`Durability::Full`] adds the fsync
//!   per commit for that case, at the price of one disk flush per message.
//! - **Ids 1, 2, 3... with no gap and no duplicate.** The id is chosen as `max(id) + 1`
//!   inside a `BEGIN IMMEDIATE` transaction. `IMMEDIATE` takes the database's single write
//!   lock *before* reading the max, so no other connection (in this process or another)
//!   can read the same max until we commit; `(room, id)` is the primary key, so a bug here
//!   would fail loudly instead of storing a duplicate. A rolled-back append leaves no hole,
//!   because nothing is reserved before the insert.
//! - **Several processes.** SQLite's own file locks serialise writers; `busy_timeout` makes
//!   a writer wait for the lock instead of failing at once. Within one process, appends
//!   also queue in a line of their own first, so they wait their turn on a condition
//!   variable rather than in SQLite's sleep-and-retry busy handler; only other processes
//!   contend there.
//! - **One deadline for a post's whole wait.** Each wait of an append (its turn in the
//!   line, a free connection, the write lock, whose busy timeout is set to what is left)
//!   ends at the message's deadline (`--db-post-timeout` after the request arrived; without
//!   one, [`BUSY_TIMEOUT`] after the append began), and the deadline is checked once more
//!   inside the transaction, after the insert and before `COMMIT`: an append past it
//!   rolls back and fails, so a post answered 503 is never stored afterwards. Without
//!   this, posts queued behind a lock held elsewhere each waited their own busy timeout in
//!   turn, one after the other, and a post could be stored long after its client gave up.
//!
//! Connections: a small checkout pool (at most [`POOL_SIZE`]), because a rusqlite
//! `Connection` may move between threads but not be shared. With WAL, readers on their own
//! connections proceed while one writer commits.
//!
//! **A file that cannot be written** (read-only, on a read-only mount, a directory where
//! the `-wal` and `-shm` files cannot be made, a full disk) says so, and recovers by
//! itself (`health.rs`):
//! - at open, a probe (a write in a transaction rolled back) warns with what to do, and
//!   the store serves reads meanwhile;
//! - each class of write failure is logged once, then at most once a minute with how many
//!   there were, and once when writes work again;
//! - after a write failure that is not a passing lock wait, the connection is thrown away
//!   with every idle one: SQLite opens a file it cannot write read-only and never looks
//!   again, so only a fresh connection sees a file made writable. Before connecting, a
//!   `-wal` or `-shm` file left without write permission while the database file has it
//!   (SQLite creates them with the database's mode, so a server started on a read-only
//!   file leaves a read-only `-shm` behind) is given the database's mode;
//! - [`Store::readiness`] (`GET /readyz`) runs the same probe on a connection.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use c10k_core::store::{Appended, Message, MessageId, NewMessage, RoomId, Store, StoreError};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use crate::past_deadline;

mod health;
mod ledger;

use health::{FailureClass, Health};

/// The most connections one [`SqliteStore`] opens. More callers than this wait their turn.
/// SQLite writes one transaction at a time anyway; the extra connections are for readers.
pub const POOL_SIZE: usize = 4;

/// How long a writer waits for another connection's (or process's) write lock before
/// `append` fails, at most (a message's deadline may cut it shorter). Commits take
/// microseconds to milliseconds, so reaching this means something is holding the lock far
/// too long.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Version 1 of the schema (before versions were recorded: `user_version` 0).
const SCHEMA_V1: &str = "
    CREATE TABLE IF NOT EXISTS messages (
        room    TEXT    NOT NULL,
        id      INTEGER NOT NULL,
        body    TEXT    NOT NULL,
        sender  TEXT    NOT NULL,
        time_ms INTEGER NOT NULL,
        PRIMARY KEY (room, id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS accounts (
        id      TEXT    NOT NULL PRIMARY KEY,
        balance INTEGER NOT NULL CHECK (balance >= 0)
    ) WITHOUT ROWID;
";

/// How hard a commit tries to reach the disk before `append` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a committed message survives the death of the process
    /// (`kill -9`, a panic, an OOM kill), which is what the store contract promises. After
    /// power loss or a kernel crash the last few commits may be missing; the file is still
    /// consistent. No fsync per message.
    #[default]
    Process,
    /// `synchronous=FULL`: every commit is fsynced before `append` returns, so a message
    /// also survives power loss. Costs one disk flush per message.
    Full,
}

impl Durability {
    fn pragma_value(self) -> &'static str {
        match self {
            Durability::Process => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// Where new connections come from.
#[derive(Debug)]
enum Source {
    File {
        path: PathBuf,
        durability: Durability,
    },
    /// A private in-memory database lives in exactly one connection, so the pool holds one.
    Memory,
}

/// Messages in an SQLite file. Cheap to share behind an `Arc`; every method blocks.
pub struct SqliteStore {
    source: Source,
    pool: Mutex<PoolState>,
    returned: Condvar,
    max_connections: usize,
    /// Whose turn it is to append; see the module docs.
    writer: WriterLine,
    /// Whether writes work, and what has been logged about it.
    health: Health,
}

/// The line appends of one process wait in, each until its deadline at most: a flag and a
/// condition variable, since a `Mutex` cannot be waited for with a timeout.
#[derive(Default)]
struct WriterLine {
    busy: Mutex<bool>,
    free: Condvar,
}

/// An append's turn; the next one's starts on drop.
struct WriterTurn<'a>(&'a WriterLine);

impl WriterLine {
    /// Waits for the turn until `until`; `None` if it did not come by then.
    fn enter(&self, until: Instant) -> Option<WriterTurn<'_>> {
        // A flag set or cleared in one statement: a panic cannot leave it half-changed.
        let mut busy = self.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while *busy {
            let left = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            busy = self.free.wait_timeout(busy, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
        *busy = true;
        Some(WriterTurn(self))
    }
}

impl Drop for WriterTurn<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
        self.0.free.notify_one();
    }
}

struct PoolState {
    idle: Vec<Connection>,
    /// Connections in existence: idle plus checked out.
    open: usize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("source", &self.source)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` with [`Durability::Process`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, Durability::Process)
    }

    /// Opens (creating if missing) the database at `path`, committing as `durability` says.
    ///
    /// Several `SqliteStore`s, in this process or others, may open the same file at once.
    pub fn open_with(path: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        let source = Source::File {
            path: path.to_path_buf(),
            durability,
        };
        health::repair_sidecar_modes(path);
        let first = source.connect()?;
        migrate(&first, &path.display().to_string())?;
        let store = SqliteStore::with_first(source, first, POOL_SIZE);
        if let Err((class, e)) = store.probe_write() {
            store.health.failed_at_open(path, class, &e);
        }
        Ok(store)
    }

    /// A private database in memory, gone when the store is dropped. For tests: it keeps
    /// every promise except surviving the process.
    pub fn open_memory() -> Result<SqliteStore, StoreError> {
        let source = Source::Memory;
        let first = source.connect()?;
        migrate(&first, "memory")?;
        Ok(SqliteStore::with_first(source, first, 1))
    }

    fn with_first(source: Source, first: Connection, max_connections: usize) -> SqliteStore {
        SqliteStore {
            source,
            pool: Mutex::new(PoolState {
                idle: vec![first],
                open: 1,
            }),
            returned: Condvar::new(),
            max_connections,
            writer: WriterLine::default(),
            health: Health::default(),
        }
    }

    /// The file this store writes, or `None` for [`SqliteStore::open_memory`].
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::File { path, .. } => Some(path),
            Source::Memory => None,
        }
    }

    /// Takes an idle connection, opens a new one if the pool is not full, or waits.
    fn checkout(&self) -> Result<Checkout<'_>, StoreError> {
        self.checkout_until(None)
    }

    /// [`SqliteStore::checkout`], waiting no later than `until` (then it fails).
    fn checkout_until(&self, until: Option<Instant>) -> Result<Checkout<'_>, StoreError> {
        let mut state = self.lock_pool();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(Checkout {
                    store: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max_connections {
                state.open += 1;
                drop(state); // opening a file takes a while; don't hold up the others
                return match self.source.connect() {
                    Ok(conn) => Ok(Checkout {
                        store: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.lock_pool().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            state = match until {
                None => self.returned.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(until) => {
                    let left = until
                        .checked_duration_since(Instant::now())
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| past_deadline("a free database connection"))?;
                    self.returned.wait_timeout(state, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0
                }
            };
        }
    }

    /// Writes in a transaction and rolls it back (`BEGIN IMMEDIATE`, the schema version
    /// set to what it is, `ROLLBACK`): whether this store can write now. The write is
    /// needed: SQLite grants the write lock of a WAL file it opened read-only, and refuses
    /// only the first page written. Another writer holding the lock counts as writable. A
    /// connection that cannot write is thrown away, with the idle ones, so that the next
    /// try opens the file afresh.
    fn probe_write(&self) -> Result<(), (FailureClass, StoreError)> {
        let conn = self.checkout().map_err(|e| (FailureClass::CannotOpen, e))?;
        let _ = conn.busy_timeout(Duration::from_millis(100));
        let tried =
            conn.execute_batch(&format!("BEGIN IMMEDIATE; PRAGMA user_version = {SCHEMA_VERSION}; ROLLBACK;"));
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
        match tried {
            Ok(()) => Ok(()),
            Err(e) => match FailureClass::of(&e) {
                FailureClass::Busy => Ok(()),
                class => {
                    let _ = conn.execute_batch("ROLLBACK");
                    conn.discard_all();
                    Err((class, sql_error("cannot write the database", e)))
                }
            },
        }
    }

    fn lock_pool(&self) -> MutexGuard<'_, PoolState> {
        // The pool's state is a Vec and a count updated in single statements: a panic
        // elsewhere cannot leave it half-changed, so a poisoned lock is still usable.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection on loan from the pool; goes back on drop, even during a panic (any open
/// transaction has been rolled back by then, since `Transaction` drops first).
struct Checkout<'a> {
    store: &'a SqliteStore,
    conn: Option<Connection>,
}

impl std::ops::Deref for Checkout<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for Checkout<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("present until drop")
    }
}

impl Checkout<'_> {
    /// Throws this connection away, and every idle one, instead of giving it back: after a
    /// failure that a fresh connection may not have (a file opened read-only, say).
    fn discard_all(mut self) {
        let mut state = self.store.lock_pool();
        if self.conn.take().is_some() {
            state.open -= 1;
        }
        state.open -= state.idle.len();
        state.idle.clear();
        drop(state);
        self.store.returned.notify_all();
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.store.lock_pool().idle.push(conn);
            self.store.returned.notify_one();
        }
    }
}

impl Source {
    fn connect(&self) -> Result<Connection, StoreError> {
        match self {
            Source::Memory => Connection::open_in_memory()
                .map_err(|e| sql_error("cannot open an in-memory database", e)),
            Source::File { path, durability } => {
                health::repair_sidecar_modes(path);
                let conn = Connection::open(path).map_err(|e| {
                    StoreError(format!(
                        "cannot open the database at {}: {e}; check the directory exists and is \
                         writable, or pass --db with another path",
                        path.display()
                    ))
                })?;
                configure(&conn, path, *durability)?;
                Ok(conn)
            }
        }
    }
}

fn configure(conn: &Connection, path: &Path, durability: Durability) -> Result<(), StoreError> {
    let context = |what: &str| format!("cannot {what} on {}", path.display());
    // First, so that the pragmas below wait for other processes too instead of failing.
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(&context("set busy_timeout"), e))?;
    // Switching a fresh file to WAL needs its exclusive lock, and SQLite answers BUSY at
    // once rather than calling the busy handler when another process is doing the same
    // (two `--workers` starting together). Retry with a short back-off, for as long as the
    // busy timeout would have waited.
    let started = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(5);
    let mode: String = loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Ok(mode) => break mode,
            Err(e)
                if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(sql_error(&context("switch to WAL mode"), e)),
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        // Still correct (rollback journals survive kill -9 too), only slower: readers then
        // wait for writers. Happens on file systems without shared memory, such as NFS.
        tracing::warn!(
            path = %path.display(),
            %mode,
            "SQLite refused WAL mode; readers will wait for writers. Put the database on a local disk"
        );
    }
    conn.pragma_update(None, "synchronous", durability.pragma_value())
        .map_err(|e| sql_error(&context("set synchronous"), e))?;
    Ok(())
}

/// The schema version this build writes (SQLite's `PRAGMA user_version`); an older file
/// is migrated to it at open, a newer one refused.
pub const SCHEMA_VERSION: i64 = 3;

/// Version 2: each message may keep its poster's idempotency key, unique in its room (a
/// partial index: messages without a key take no room in it).
const SCHEMA_V2: &str = "
    ALTER TABLE messages ADD COLUMN idem_key TEXT;
    CREATE UNIQUE INDEX IF NOT EXISTS messages_idem_key ON messages (room, idem_key) WHERE idem_key IS NOT NULL;
";

/// Version 3: the store's epoch (see [`Store::epoch`]), one random name made with the file
/// (or with its migration from version 2: its cursors were given without one).
const SCHEMA_V3: &str = "
    CREATE TABLE IF NOT EXISTS meta (
        name  TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
";
const INSERT_EPOCH: &str = "INSERT OR IGNORE INTO meta (name, value) VALUES ('epoch', ?1)";

/// Creates the tables or brings them to [`SCHEMA_VERSION`], in one `BEGIN IMMEDIATE`
/// transaction, so that workers opening the file together migrate it once. A file at the
/// current version is only read, so a read-only one opens.
fn migrate(conn: &Connection, what: &str) -> Result<(), StoreError> {
    let fail = |e| sql_error(&format!("cannot create or migrate the schema in {what}"), e);
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(fail)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "{what} has c10k schema version {version}, newer than this build understands ({SCHEMA_VERSION}); \
             upgrade c10k, or pass --db with another path"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
    let result = (|| {
        // Read again under the write lock: another process may have migrated meanwhile.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version < 2 {
            conn.execute_batch(SCHEMA_V1)?;
            conn.execute_batch(SCHEMA_V2)?;
        }
        if version < 3 {
            conn.execute_batch(SCHEMA_V3)?;
            conn.execute(INSERT_EPOCH, [crate::fresh_epoch()])?;
        }
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        conn.execute_batch("COMMIT")
    })();
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result.map_err(fail)
}

/// Turns a driver error into one that says what to do.
fn sql_error(what: &str, e: rusqlite::Error) -> StoreError {
    let advice = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "another connection or process held the write lock longer than the busy timeout; \
             retry, and look for a process keeping a transaction open on this file"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            "make the database file and its directory writable, or pass --db with another path"
        }
        Some(ErrorCode::CannotOpen) => {
            "check the directory exists and is writable, or pass --db with another path"
        }
        Some(ErrorCode::DiskFull) => "the disk is full; free some space",
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            "the file is not a c10k database or is damaged; move it aside or pass --db with \
             another path"
        }
        Some(ErrorCode::SystemIoFailure) => "the disk reported an I/O error; check it",
        _ => {
            "if the file was made by something else than c10k, move it aside or pass --db with \
             another path"
        }
    };
    StoreError(format!("{what}: {e}; {advice}"))
}

/// SQLite integers are i64; ids, times and limits are unsigned here.
fn to_sql_int(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError(format!("{what} {value} is too large to store")))
}

fn from_sql_int(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| {
        StoreError(format!(
            "the database holds a negative {what} ({value}); it was not written by c10k: move it \
             aside or pass --db with another path"
        ))
    })
}

/// A `LIMIT` that SQLite accepts: `usize::MAX` means "all".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

type Row = (i64, String, String, i64);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn to_message(room: &RoomId, (id, body, from, time_ms): Row) -> Result<Message, StoreError> {
    Ok(Message {
        id: MessageId(from_sql_int(id, "message id")?),
        room: room.clone(),
        body,
        from,
        time_ms: from_sql_int(time_ms, "time")?,
    })
}

/// A failed append: what kind of failure, and what to tell the poster.
struct WriteFailure {
    class: FailureClass,
    error: StoreError,
}

impl From<StoreError> for WriteFailure {
    /// An error that did not come from SQLite (a value out of range, say).
    fn from(error: StoreError) -> WriteFailure {
        WriteFailure { class: FailureClass::Other, error }
    }
}

/// The append's transaction: the message stored (or found stored under its key), or
/// nothing stored if `until` passed first (checked after the last statement, before
/// `COMMIT`).
fn append_before(
    conn: &mut Connection,
    room: &RoomId,
    message: &NewMessage,
    time_ms: i64,
    until: Instant,
) -> Result<Appended, WriteFailure> {
    let fail = |e: rusqlite::Error| {
        let class = FailureClass::of(&e);
        let error = if class == FailureClass::Busy && Instant::now() + Duration::from_millis(5) >= until {
            past_deadline("the database's write lock (another connection or process holds it)")
        } else {
            sql_error(&format!("cannot append to room {room}"), e)
        };
        WriteFailure { class, error }
    };
    // IMMEDIATE: take the write lock before reading max(id); see the module docs.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    if let Some(key) = &message.key {
        // Under the write lock: no other append can store this key between the look and
        // the insert (the unique index would refuse it anyway).
        let found = tx
            .prepare_cached("SELECT id, body, sender, time_ms FROM messages WHERE room = ?1 AND idem_key = ?2")
            .and_then(|mut stmt| stmt.query_row(params![room.as_str(), key], read_row).optional())
            .map_err(fail)?;
        if let Some(row) = found {
            return Ok(Appended { message: to_message(room, row)?, replayed: true });
        }
    }
    let id: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM messages WHERE room = ?1")
        .and_then(|mut stmt| stmt.query_row([room.as_str()], |row| row.get(0)))
        .map_err(fail)?;
    tx.prepare_cached(
        "INSERT INTO messages (room, id, body, sender, time_ms, idem_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            room.as_str(),
            id,
            message.body,
            message.from,
            time_ms,
            message.key
        ])
    })
    .map_err(fail)?;
    if Instant::now() >= until {
        // Dropping the transaction rolls it back: the poster is told 503, so nothing may stay.
        return Err(WriteFailure { class: FailureClass::Busy, error: past_deadline("the database") });
    }
    tx.commit().map_err(fail)?;
    Ok(Appended::new(Message {
        id: MessageId(from_sql_int(id, "message id")?),
        room: room.clone(),
        body: message.body.clone(),
        from: message.from.clone(),
        time_ms: message.time_ms,
    }))
}

impl Store for SqliteStore {
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError> {
        let time_ms = to_sql_int(message.time_ms, "time")?;
        let until = message.deadline.unwrap_or_else(|| Instant::now() + BUSY_TIMEOUT);
        let _turn = self
            .writer
            .enter(until)
            .ok_or_else(|| past_deadline("the appends before it in this process"))?;
        // Twice at most: a connection that cannot write (opened while the file could not
        // be written) is replaced by a fresh one, which sees the file as it is now. Nothing
        // was committed by the failed try: its transaction never began, or was rolled back.
        let mut tries = 0;
        loop {
            tries += 1;
            let mut conn = self.checkout_until(Some(until))?;
            let left = until
                .checked_duration_since(Instant::now())
                .ok_or_else(|| past_deadline("a free database connection"))?;
            // Wait for another process's write lock only as long as the deadline leaves.
            conn.busy_timeout(left.min(BUSY_TIMEOUT))
                .map_err(|e| sql_error("cannot set busy_timeout", e))?;
            let result = append_before(&mut conn, room, message, time_ms, until);
            // Back to the default for the readers that take this connection next.
            let _ = conn.busy_timeout(BUSY_TIMEOUT);
            match result {
                Ok(appended) => {
                    self.health.succeeded(self.path());
                    return Ok(appended);
                }
                Err(WriteFailure { class, error }) => {
                    if class.needs_fresh_connection() {
                        conn.discard_all();
                        if tries == 1 {
                            continue;
                        }
                    }
                    self.health.failed(self.path(), class, &error);
                    return Err(error);
                }
            }
        }
    }

    fn epoch(&self) -> Result<Option<String>, StoreError> {
        let conn = self.checkout()?;
        conn.query_row("SELECT value FROM meta WHERE name = 'epoch'", [], |row| row.get(0))
            .optional()
            .map_err(|e| sql_error("cannot read the store's epoch", e))
    }

    fn set_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        let conn = self.checkout()?;
        conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('epoch', ?1)", [epoch])
            .map(drop)
            .map_err(|e| sql_error("cannot set the store's epoch", e))
    }

    fn readiness(&self) -> Result<(), StoreError> {
        match self.probe_write() {
            Ok(()) => {
                self.health.succeeded(self.path());
                Ok(())
            }
            Err((class, error)) => {
                self.health.failed(self.path(), class, &error);
                Err(error)
            }
        }
    }

    fn after(
        &self,
        room: &RoomId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let fail = |e| sql_error(&format!("cannot read room {room}"), e);
        let after = to_sql_int(after.0, "message id")?;
        let conn = self.checkout()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, body, sender, time_ms FROM messages
                 WHERE room = ?1 AND id > ?2 ORDER BY id ASC LIMIT ?3",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map(params![room.as_str(), after, sql_limit(limit)], read_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Row>>>())
            .map_err(fail)?;
        rows.into_iter().map(|row| to_message(room, row)).collect()
    }

    fn recent(&self, room: &RoomId, limit: usize) -> Result<Vec<Message>, StoreError> {
        let fail = |e| sql_error(&format!("cannot read room {room}"), e);
        let conn = self.checkout()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, body, sender, time_ms FROM messages
                 WHERE room = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(fail)?;
        let mut rows = stmt
            .query_map(params![room.as_str(), sql_limit(limit)], read_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Row>>>())
            .map_err(fail)?;
        rows.reverse(); // newest-first from the index, oldest-first for the caller
        rows.into_iter().map(|row| to_message(room, row)).collect()
    }

    fn before(&self, room: &RoomId, before: Option<MessageId>, limit: usize) -> Result<Vec<Message>, StoreError> {
        let fail = |e| sql_error(&format!("cannot read room {room}"), e);
        // No `before`: from the newest. An id past i64 is past every stored one too.
        let before = before.map_or(i64::MAX, |id| i64::try_from(id.0).unwrap_or(i64::MAX));
        let conn = self.checkout()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, body, sender, time_ms FROM messages
                 WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map(params![room.as_str(), before, sql_limit(limit)], read_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Row>>>())
            .map_err(fail)?;
        rows.into_iter().map(|row| to_message(room, row)).collect()
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        let fail = |e| sql_error("cannot list the rooms", e);
        let conn = self.checkout()?;
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT room FROM messages ORDER BY room")
            .map_err(fail)?;
        let names = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(fail)?;
        names
            .into_iter()
            .map(|name| {
                RoomId::new(&name).map_err(|_| {
                    StoreError(format!(
                        "the database holds a room named {name:?}, which c10k never writes; \
                         move the file aside or pass --db with another path"
                    ))
                })
            })
            .collect()
    }

    fn ledger(&self) -> Option<&dyn c10k_core::ledger::LedgerStore> {
        Some(self)
    }

    fn round_trip(&self) -> Result<(), StoreError> {
        let conn = self.checkout()?;
        conn.prepare_cached("SELECT 1")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
            .map(drop)
            .map_err(|e| sql_error("cannot reach the database", e))
    }
}
