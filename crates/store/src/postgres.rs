//! The PostgreSQL store: [`PostgresStore`] blocks its caller (for the offload pool, or
//! inline), [`PostgresNativeStore`] is awaited on the async model's tokio runtime
//! (`--db-mode native`). Both run the same SQL through `tokio-postgres`.
//!
//! **Why one driver for both.** The `postgres` crate, the blocking driver, is
//! `tokio-postgres` on a private single-threaded runtime per connection, driven with
//! `block_on`. [`PostgresStore`] is exactly that construction, plus what the `postgres`
//! crate does not offer: a timeout around every call, so that a database that stopped
//! answering (not closed: stopped, or cut off by the network) fails the call in
//! `--db-timeout` instead of hanging its thread forever. The calling thread blocks just
//! as it would in the C driver of the talk.
//!
//! How each promise of the [`Store`] contract is kept:
//! - **Ids 1, 2, 3... per room, across processes and machines.** One statement:
//!   `WITH next AS (INSERT INTO c10k_rooms ... ON CONFLICT (room) DO UPDATE SET last_id =
//!   last_id + 1 RETURNING last_id) INSERT INTO c10k_messages SELECT ... FROM next`. A
//!   statement is its own transaction, the upsert takes the room row's lock until it
//!   commits, and a concurrent one waits, then bumps the committed value (`ON CONFLICT DO
//!   UPDATE` under READ COMMITTED always inserts or updates, never fails on the race): no
//!   id twice, and none skipped, since a failed statement rolls its bump back.
//! - **Durable.** With the default `synchronous_commit = on`, a statement returns after
//!   its commit record is flushed to disk.
//! - **Bounded waits and broken connections**: as for MySQL (`pool.rs`, `circuit.rs`). A
//!   failure after the append was sent is reported as "may or may not be stored" and not
//!   tried again.
//!
//! The schema is created or migrated at start, inside a transaction holding an advisory
//! lock, so several workers starting together do it once.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use c10k_core::store::{AsyncStore, Appended, Message, MessageId, NewMessage, RoomId, Store, StoreError, StoreFuture};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls, Statement};

use crate::circuit::Circuit;
use crate::server::{check_version, key_vanished, room as checked_room, stored, VERSION};
use crate::pool::{Failure, Pool};
use crate::{past_deadline, StoreOptions};

/// The schema, version 1 (see `mysql.rs` for the same tables in MySQL's dialect).
const SCHEMA_V1: &str = "
    CREATE TABLE IF NOT EXISTS c10k_schema (
        id      SMALLINT PRIMARY KEY CHECK (id = 1),
        version INTEGER  NOT NULL
    );
    CREATE TABLE IF NOT EXISTS c10k_rooms (
        room    TEXT COLLATE \"C\" PRIMARY KEY,
        last_id BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS c10k_messages (
        room    TEXT COLLATE \"C\" NOT NULL,
        id      BIGINT NOT NULL,
        body    TEXT   NOT NULL,
        sender  TEXT   NOT NULL,
        time_ms BIGINT NOT NULL,
        PRIMARY KEY (room, id)
    );
    CREATE TABLE IF NOT EXISTS c10k_accounts (
        id      TEXT COLLATE \"C\" PRIMARY KEY,
        balance BIGINT NOT NULL CHECK (balance >= 0)
    );
";
/// Version 2: each message may keep its poster's idempotency key, unique in its room (a
/// unique index holds any number of NULLs: messages without a key).
const SCHEMA_V2: &str = "
    ALTER TABLE c10k_messages ADD COLUMN IF NOT EXISTS idem_key TEXT COLLATE \"C\";
    CREATE UNIQUE INDEX IF NOT EXISTS c10k_messages_idem_key ON c10k_messages (room, idem_key);
";
/// The store's epoch (`Store::epoch`), made with the tables or, for tables an older build
/// made, at the first start of this one (no schema version needed: older builds never read
/// it).
const META: &str = "
    CREATE TABLE IF NOT EXISTS c10k_meta (
        name  TEXT COLLATE \"C\" PRIMARY KEY,
        value TEXT NOT NULL
    );
";
const INSERT_EPOCH: &str = "INSERT INTO c10k_meta (name, value) VALUES ('epoch', $1) ON CONFLICT (name) DO NOTHING";
const READ_EPOCH: &str = "SELECT value FROM c10k_meta WHERE name = 'epoch'";
const WRITE_EPOCH: &str =
    "INSERT INTO c10k_meta (name, value) VALUES ('epoch', $1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value";
/// The unique index of version 2, as a violation names it.
const KEY_INDEX: &str = "c10k_messages_idem_key";
/// Serialises migrations of one database (any fixed number: it names the lock).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7310010001)";
const READ_VERSION: &str = "SELECT version FROM c10k_schema WHERE id = 1";
const WRITE_VERSION: &str =
    "INSERT INTO c10k_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version";

/// The append (see the module docs). `$5` is how long it may wait for the room's row lock
/// (`'850ms'`), set as this statement's own `lock_timeout` (`set_config(..., true)` lasts
/// for the transaction, which is the statement) before the upsert takes the lock: an
/// append that would wait longer fails with `lock_not_available` and stores nothing.
pub(crate) const APPEND: &str = "
    WITH next AS (
        INSERT INTO c10k_rooms AS r (room, last_id)
        SELECT $1, 1 FROM (SELECT set_config('lock_timeout', $5, true)) AS budget
        ON CONFLICT (room) DO UPDATE SET last_id = r.last_id + 1
        RETURNING last_id
    )
    INSERT INTO c10k_messages (room, id, body, sender, time_ms, idem_key)
    SELECT $1, last_id, $2, $3, $4, $6 FROM next
    RETURNING id";
/// The message stored under an idempotency key.
pub(crate) const BY_KEY: &str = "SELECT id, body, sender, time_ms FROM c10k_messages WHERE room = $1 AND idem_key = $2";
pub(crate) const AFTER: &str = "SELECT id, body, sender, time_ms FROM c10k_messages
     WHERE room = $1 AND id > $2 ORDER BY id ASC LIMIT $3";
const RECENT: &str = "SELECT id, body, sender, time_ms FROM c10k_messages
     WHERE room = $1 ORDER BY id DESC LIMIT $2";
const BEFORE: &str = "SELECT id, body, sender, time_ms FROM c10k_messages
     WHERE room = $1 AND id < $2 ORDER BY id DESC LIMIT $3";
const ROOMS: &str = "SELECT room FROM c10k_rooms ORDER BY room";
pub(crate) const SLEEP: &str = "SELECT pg_sleep($1)";

/// A connected client and its prepared statements.
pub(crate) struct Live {
    pub(crate) client: Client,
    append: Statement,
    after: Statement,
    recent: Statement,
    before: Statement,
    by_key: Statement,
    rooms: Statement,
    sleep: Statement,
    /// The ledger's statements (`postgres_ledger.rs`).
    pub(crate) ledger: crate::postgres_ledger::Statements,
}

/// The driver's configuration for a `postgres://` URL, and a description for messages
/// that never shows the password.
pub(crate) fn parse_url(url: &str, options: &StoreOptions) -> Result<(Config, String), StoreError> {
    let mut config = Config::from_str(url).map_err(|e| {
        StoreError(format!(
            "cannot read the PostgreSQL URL: {e}; write postgres://USER[:PASSWORD]@HOST:PORT/DATABASE, \
             for instance postgres://postgres@127.0.0.1:5432/test"
        ))
    })?;
    config.connect_timeout(options.timeout);
    if config.get_application_name().is_none() {
        config.application_name("c10k");
    }
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    let what = format!("PostgreSQL at {host}:{port}/{db}");
    Ok((config, what))
}

/// Connects (within the timeout, whatever the network does), runs the connection's task
/// with `spawn`, runs `before_prepare` (the migration, on the first connection), and
/// prepares the statements.
async fn connect(
    config: &Config,
    what: &str,
    timeout: Duration,
    spawn: impl FnOnce(tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>),
    migrate_first: bool,
) -> Result<Live, StoreError> {
    let (client, connection) = within(timeout, config.connect(NoTls)).await.map_err(|e| {
        StoreError(format!(
            "cannot connect to {what}: {e}; check that the database is running and the URL's user and \
             database are right"
        ))
    })?;
    spawn(connection);
    if migrate_first {
        migrate(&client, what, timeout).await?;
    }
    let prepare = |sql: &'static str, types: &'static [Type]| {
        let client = &client;
        async move {
            within(timeout, client.prepare_typed(sql, types)).await.map_err(|e| {
                StoreError(format!(
                    "cannot prepare c10k's queries on {what}: {e}; if the tables are missing, start one c10k \
                     with --db-mode offload first to create them"
                ))
            })
        }
    };
    Ok(Live {
        append: prepare(APPEND, &[Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT]).await?,
        by_key: prepare(BY_KEY, &[Type::TEXT, Type::TEXT]).await?,
        after: prepare(AFTER, &[Type::TEXT, Type::INT8, Type::INT8]).await?,
        recent: prepare(RECENT, &[Type::TEXT, Type::INT8]).await?,
        before: prepare(BEFORE, &[Type::TEXT, Type::INT8, Type::INT8]).await?,
        rooms: prepare(ROOMS, &[]).await?,
        sleep: prepare(SLEEP, &[Type::FLOAT8]).await?,
        ledger: crate::postgres_ledger::Statements::prepare(&prepare).await?,
        client,
    })
}

/// A driver call that did not finish in time.
#[derive(Debug)]
pub(crate) enum CallError {
    Driver(tokio_postgres::Error),
    TimedOut(Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Driver(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
                None => e.fmt(f),
            },
            CallError::TimedOut(after) => write!(f, "no answer within {:.1} s (--db-timeout)", after.as_secs_f64()),
        }
    }
}

pub(crate) async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(CallError::Driver),
        Err(_) => Err(CallError::TimedOut(timeout)),
    }
}

/// Sorts a failed call into the pool's classes. `sent_append`: the failed call was an
/// append that may have reached the server, so a closed connection leaves it unknown.
pub(crate) fn classify(e: CallError, sent_append: bool) -> Failure {
    let closed = match &e {
        CallError::TimedOut(_) => return Failure::Broken(StoreError(format!("PostgreSQL gave no answer: {e}"))),
        CallError::Driver(driver) => match driver.code() {
            // The server is shutting down or was told to end this session.
            Some(code) => [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW]
                .contains(code),
            None => true,
        },
    };
    match (closed, sent_append) {
        (false, _) => Failure::Query(StoreError(format!("PostgreSQL refused a query: {e}"))),
        (true, false) => Failure::Stale(StoreError(format!("the PostgreSQL connection was closed: {e}"))),
        (true, true) => Failure::Broken(StoreError(format!(
            "the PostgreSQL connection was closed during an append ({e}), so the message may or may not be stored"
        ))),
    }
}

/// How long the server may wait for the room's row lock before the append gives up
/// (`$5` of [`APPEND`], as a `lock_timeout`): what is left of the post's deadline, and
/// never more than nine tenths of `--db-timeout`, so that the server gives up (and stores
/// nothing, which it says) before this side stops waiting for its answer (which would
/// leave the outcome unknown). A deadline already past stores nothing.
pub(crate) fn lock_budget(message: &NewMessage, timeout: Duration) -> Result<String, Failure> {
    let server_bound = timeout - timeout / 10;
    let left = match message.deadline {
        None => server_bound,
        Some(deadline) => deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| Failure::Query(past_deadline("its turn on the offload pool")))?
            .min(server_bound),
    };
    // 0 would mean "no limit": at least 1 ms.
    Ok(format!("{}ms", left.as_millis().max(1)))
}

/// Sorts a failed append: its lock wait running out of budget stored nothing (the
/// statement was its own transaction, and it was cancelled).
pub(crate) fn classify_append(e: CallError) -> Failure {
    match &e {
        CallError::Driver(driver) if driver.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            Failure::Query(past_deadline("the room's row lock (another connection holds it)"))
        }
        _ => classify(e, true),
    }
}

/// Whether an append failed for a key its room holds already.
pub(crate) fn is_duplicate_key(e: &CallError) -> bool {
    match e {
        CallError::Driver(driver) => driver
            .as_db_error()
            .is_some_and(|db| *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(KEY_INDEX)),
        CallError::TimedOut(_) => false,
    }
}

/// What [`BY_KEY`] found after a duplicate key: the message stored the first time.
pub(crate) fn replayed(room: &RoomId, row: Option<tokio_postgres::Row>) -> Result<Appended, Failure> {
    let row = row.ok_or_else(|| Failure::Query(key_vanished(room)))?;
    Ok(Appended { message: to_message(room, &row)?, replayed: true })
}

/// What [`APPEND`] returned: the stored id.
pub(crate) fn appended(room: &RoomId, message: &NewMessage, row: Option<tokio_postgres::Row>) -> Result<Appended, Failure> {
    match row {
        Some(row) => Ok(stored(room, message, row.get::<_, i64>(0) as u64)),
        None => Err(Failure::Query(StoreError(format!(
            "PostgreSQL stored no row for an append to room {room}; check the database"
        )))),
    }
}

pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, Failure> {
    i64::try_from(value).map_err(|_| Failure::Query(StoreError(format!("{what} {value} is too large to store"))))
}

pub(crate) fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) fn to_message(room: &RoomId, row: &tokio_postgres::Row) -> Result<Message, Failure> {
    let unsigned = |value: i64, what: &str| {
        u64::try_from(value).map_err(|_| {
            Failure::Query(StoreError(format!(
                "the database holds a negative {what} ({value}); it was not written by c10k: point --db at a \
                 database of c10k's own"
            )))
        })
    };
    Ok(Message {
        id: MessageId(unsigned(row.get(0), "message id")?),
        room: room.clone(),
        body: row.get(1),
        from: row.get(2),
        time_ms: unsigned(row.get(3), "time")?,
    })
}

impl Live {
    async fn sleep(&self, sleep: Option<Duration>, timeout: Duration) -> Result<(), Failure> {
        match sleep {
            Some(d) => within(timeout, self.client.execute(&self.sleep, &[&d.as_secs_f64()]))
                .await
                .map(drop)
                .map_err(|e| classify(e, false)),
            None => Ok(()),
        }
    }

    async fn append(&self, room: &RoomId, message: &NewMessage, timeout: Duration) -> Result<Appended, Failure> {
        let time_ms = to_i64(message.time_ms, "time")?;
        let budget = lock_budget(message, timeout)?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&room.as_str(), &message.body, &message.from, &time_ms, &budget, &message.key];
        match within(timeout, self.client.query_opt(&self.append, &params)).await {
            Ok(row) => appended(room, message, row),
            Err(e) if is_duplicate_key(&e) => {
                // The statement was rolled back; the message stored with this key is the answer.
                let key = message.key.as_deref().unwrap_or_default();
                let found = within(timeout, self.client.query_opt(&self.by_key, &[&room.as_str(), &key]))
                    .await
                    .map_err(|e| classify(e, false))?;
                replayed(room, found)
            }
            Err(e) => Err(classify_append(e)),
        }
    }

    async fn after(&self, room: &RoomId, after: MessageId, count: usize, timeout: Duration) -> Result<Vec<Message>, Failure> {
        let after = to_i64(after.0, "message id")?;
        let rows = within(timeout, self.client.query(&self.after, &[&room.as_str(), &after, &limit(count)]))
            .await
            .map_err(|e| classify(e, false))?;
        rows.iter().map(|row| to_message(room, row)).collect()
    }

    async fn recent(&self, room: &RoomId, count: usize, timeout: Duration) -> Result<Vec<Message>, Failure> {
        let rows = within(timeout, self.client.query(&self.recent, &[&room.as_str(), &limit(count)]))
            .await
            .map_err(|e| classify(e, false))?;
        rows.iter().rev().map(|row| to_message(room, row)).collect()
    }

    async fn before(
        &self,
        room: &RoomId,
        before: Option<MessageId>,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, Failure> {
        // No `before`: from the newest. An id past i64 is past every stored one too.
        let before = before.map_or(i64::MAX, |id| i64::try_from(id.0).unwrap_or(i64::MAX));
        let rows = within(timeout, self.client.query(&self.before, &[&room.as_str(), &before, &limit(count)]))
            .await
            .map_err(|e| classify(e, false))?;
        rows.iter().map(|row| to_message(room, row)).collect()
    }

    async fn rooms(&self, timeout: Duration) -> Result<Vec<String>, Failure> {
        let rows = within(timeout, self.client.query(&self.rooms, &[])).await.map_err(|e| classify(e, false))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

/// Creates the tables, or brings them to [`VERSION`], in one transaction under the
/// migration lock.
async fn migrate(client: &Client, what: &str, timeout: Duration) -> Result<(), StoreError> {
    let fail = |e: CallError| {
        StoreError(format!("cannot create c10k's tables in {what}: {e}; the URL's user needs CREATE rights"))
    };
    within(timeout, client.batch_execute("BEGIN")).await.map_err(fail)?;
    let result = async {
        within(timeout, client.batch_execute(MIGRATION_LOCK)).await.map_err(fail)?;
        within(timeout, client.batch_execute(SCHEMA_V1)).await.map_err(fail)?;
        within(timeout, client.batch_execute(SCHEMA_V2)).await.map_err(fail)?;
        within(timeout, client.batch_execute(META)).await.map_err(fail)?;
        within(timeout, client.execute(INSERT_EPOCH, &[&crate::fresh_epoch()])).await.map_err(fail)?;
        let found: Option<i32> =
            within(timeout, client.query_opt(READ_VERSION, &[])).await.map_err(fail)?.map(|row| row.get(0));
        let found = found.map(|v| v.max(0) as u32);
        check_version(found, what)?;
        if found != Some(VERSION) {
            within(timeout, client.execute(WRITE_VERSION, &[&(VERSION as i32)])).await.map_err(fail)?;
        }
        within(timeout, client.batch_execute("COMMIT")).await.map_err(fail)
    }
    .await;
    if result.is_err() {
        let _ = within(timeout, client.batch_execute("ROLLBACK")).await;
    }
    result
}

/// One blocking connection: a private runtime that drives it, as the `postgres` crate does.
pub(crate) struct BlockingConn {
    /// `None` only in drop.
    runtime: Option<tokio::runtime::Runtime>,
    live: Live,
}

impl Drop for BlockingConn {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its tasks end, which tokio forbids on a thread
        // that runs another runtime (the last handle to a store may go in an async task).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl BlockingConn {
    fn open(config: &Config, what: &str, timeout: Duration, migrate_first: bool) -> Result<BlockingConn, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("cannot start the PostgreSQL driver's runtime: {e}")))?;
        let spawn = |connection| {
            // Runs whenever this connection's runtime is inside block_on, i.e. during a call.
            tokio::spawn(connection);
        };
        let live = off_any_runtime(|| runtime.block_on(connect(config, what, timeout, spawn, migrate_first)));
        match live {
            Ok(live) => Ok(BlockingConn { runtime: Some(runtime), live }),
            Err(e) => {
                runtime.shutdown_background(); // see Drop
                Err(e)
            }
        }
    }

    /// Runs `call` on this connection's runtime. First lets the connection's task read
    /// what arrived while the connection sat idle (it runs only inside `block_on`): a
    /// server that went away has closed it, and then nothing is sent, so a fresh
    /// connection can be tried safely.
    ///
    /// Called from a thread that runs a tokio runtime (the async model with `--db-mode
    /// inline`), where tokio forbids starting another, the call runs on a short-lived
    /// thread while the caller waits for it: the caller still blocks, as inline means.
    pub(crate) fn call<T: Send>(&self, call: impl AsyncFnOnce(&Live) -> Result<T, Failure> + Send) -> Result<T, Failure> {
        off_any_runtime(|| self.call_here(call))
    }

    fn call_here<T>(&self, call: impl AsyncFnOnce(&Live) -> Result<T, Failure>) -> Result<T, Failure> {
        let runtime = self.runtime.as_ref().expect("present until drop");
        runtime.block_on(async {
            // Two yields: the first lets the runtime poll its I/O driver, which wakes the
            // connection's task if bytes or an EOF arrived; the second lets that task run.
            // Best effort: if the close is missed, the call fails as "may or may not be
            // stored", never wrongly.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            if self.live.client.is_closed() {
                return Err(Failure::Stale(StoreError("the PostgreSQL connection was closed while idle".into())));
            }
            call(&self.live).await
        })
    }
}

/// Runs `work`, which blocks on a private runtime, here; or, when this thread runs a tokio
/// runtime already (where tokio forbids starting another), on a short-lived thread while
/// this one waits for it.
fn off_any_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    std::thread::scope(|scope| scope.spawn(work).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// Messages in a PostgreSQL database, through blocking calls; see the module docs.
pub struct PostgresStore {
    pub(crate) pool: Pool<BlockingConn>,
    pub(crate) timeout: Duration,
    sleep: Option<Duration>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database `url` names, creating or migrating c10k's tables. Fails,
    /// saying where and why, if it cannot be reached within `options.timeout`.
    pub fn open(url: &str, options: &StoreOptions) -> Result<PostgresStore, StoreError> {
        let (config, what) = parse_url(url, options)?;
        let timeout = options.timeout;
        let first = BlockingConn::open(&config, &what, timeout, true)?;
        let connect = {
            let what = what.clone();
            move || BlockingConn::open(&config, &what, timeout, false)
        };
        let pool = Pool::new(Circuit::new(what), options.connections, timeout, connect);
        pool.seed(first);
        Ok(PostgresStore { pool, timeout, sleep: options.server_sleep })
    }
}

impl Store for PostgresStore {
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError> {
        let (timeout, sleep) = (self.timeout, self.sleep);
        self.pool.run(|conn| {
            conn.call(async |live| {
                live.sleep(sleep, timeout).await?;
                live.append(room, message, timeout).await
            })
        })
    }

    fn after(&self, room: &RoomId, after: MessageId, count: usize) -> Result<Vec<Message>, StoreError> {
        let (timeout, sleep) = (self.timeout, self.sleep);
        self.pool.run(|conn| {
            conn.call(async |live| {
                live.sleep(sleep, timeout).await?;
                live.after(room, after, count, timeout).await
            })
        })
    }

    fn recent(&self, room: &RoomId, count: usize) -> Result<Vec<Message>, StoreError> {
        self.pool.run(|conn| conn.call(async |live| live.recent(room, count, self.timeout).await))
    }

    fn before(&self, room: &RoomId, before: Option<MessageId>, count: usize) -> Result<Vec<Message>, StoreError> {
        let (timeout, sleep) = (self.timeout, self.sleep);
        self.pool.run(|conn| {
            conn.call(async |live| {
                live.sleep(sleep, timeout).await?;
                live.before(room, before, count, timeout).await
            })
        })
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        let names = self.pool.run(|conn| conn.call(async |live| live.rooms(self.timeout).await))?;
        names.into_iter().map(checked_room).collect()
    }

    fn ledger(&self) -> Option<&dyn c10k_core::ledger::LedgerStore> {
        Some(self)
    }

    fn round_trip(&self) -> Result<(), StoreError> {
        let timeout = self.timeout;
        self.pool.run(|conn| {
            conn.call(async |live| {
                within(timeout, live.client.execute(&live.ledger.select_one, &[])).await.map(drop).map_err(|e| classify(e, false))
            })
        })
    }

    fn epoch(&self) -> Result<Option<String>, StoreError> {
        let timeout = self.timeout;
        self.pool.run(|conn| {
            conn.call(async |live| {
                let row = within(timeout, live.client.query_opt(READ_EPOCH, &[])).await.map_err(|e| classify(e, false))?;
                Ok(row.map(|row| row.get(0)))
            })
        })
    }

    fn set_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        let timeout = self.timeout;
        self.pool.run(|conn| {
            conn.call(async |live| {
                within(timeout, live.client.execute(WRITE_EPOCH, &[&epoch])).await.map(drop).map_err(|e| classify(e, false))
            })
        })
    }
}

/// One of the native store's connections, shared by every task that uses it: the driver
/// pipelines their queries on it.
#[derive(Default)]
struct Slot {
    live: Mutex<Option<Arc<Live>>>,
    /// Held while (re)connecting, so that the tasks that find the slot empty connect once.
    connecting: tokio::sync::Mutex<()>,
}

/// Messages in a PostgreSQL database, awaited on the caller's tokio runtime
/// (`--db-mode native`): a few connections, each shared by every task, its queries
/// pipelined. Connects on first use; a connection found closed is made again.
pub struct PostgresNativeStore {
    config: Config,
    circuit: Circuit,
    timeout: Duration,
    sleep: Option<Duration>,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

impl std::fmt::Debug for PostgresNativeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresNativeStore").field("database", &self.circuit.what()).finish_non_exhaustive()
    }
}

impl PostgresNativeStore {
    /// A store for the database `url` names, with `options.connections` connections made
    /// when first needed. The schema must exist: open the blocking [`PostgresStore`]
    /// first (the server does, to load the history).
    pub fn new(url: &str, options: &StoreOptions) -> Result<PostgresNativeStore, StoreError> {
        let (config, what) = parse_url(url, options)?;
        Ok(PostgresNativeStore {
            config,
            circuit: Circuit::new(what),
            timeout: options.timeout,
            sleep: options.server_sleep,
            slots: (0..options.connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// The next slot's connection, made if it has none or it was closed.
    async fn live(&self) -> Result<(&Slot, Arc<Live>), StoreError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let current = || slot.live.lock().unwrap_or_else(|p| p.into_inner()).clone().filter(|l| !l.client.is_closed());
        if let Some(live) = current() {
            return Ok((slot, live));
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(live) = current() {
            return Ok((slot, live));
        }
        self.circuit.admit()?;
        let spawn = |connection| {
            tokio::spawn(connection);
        };
        let live = connect(&self.config, self.circuit.what(), self.timeout, spawn, false)
            .await
        .inspect_err(|e| self.circuit.trip(e))?;
        let live = Arc::new(live);
        *slot.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&live));
        Ok((slot, live))
    }

    /// What a call's result means for its connection and the circuit.
    fn settle<T>(&self, slot: &Slot, live: &Arc<Live>, result: Result<T, Failure>) -> Result<T, StoreError> {
        self.circuit.settle(result, || {
            let mut held = slot.live.lock().unwrap_or_else(|p| p.into_inner());
            if held.as_ref().is_some_and(|h| Arc::ptr_eq(h, live)) {
                *held = None;
            }
        })
    }
}

impl AsyncStore for PostgresNativeStore {
    fn append<'a>(&'a self, room: &'a RoomId, message: &'a NewMessage) -> StoreFuture<'a, Appended> {
        Box::pin(async move {
            let (slot, live) = self.live().await?;
            let result = async {
                live.sleep(self.sleep, self.timeout).await?;
                live.append(room, message, self.timeout).await
            }
            .await;
            self.settle(slot, &live, result)
        })
    }

    fn after<'a>(&'a self, room: &'a RoomId, after: MessageId, count: usize) -> StoreFuture<'a, Vec<Message>> {
        Box::pin(async move {
            let (slot, live) = self.live().await?;
            let result = async {
                live.sleep(self.sleep, self.timeout).await?;
                live.after(room, after, count, self.timeout).await
            }
            .await;
            self.settle(slot, &live, result)
        })
    }
}
