//! The MySQL / MariaDB store, through the blocking `mysql` driver (the talk's "coping with
//! MySQL": a driver that blocks its thread, so event loops run it on the offload pool).
//!
//! How each promise of the [`Store`] contract is kept (the SQL is in [`sql`], shared with
//! the `mysql_async` store of `--db-mode native` in `mysql_native.rs`):
//! - **Ids 1, 2, 3... per room, across processes and machines.** A row per room in
//!   `c10k_rooms` holds its last id. An append is one InnoDB transaction: bump the row
//!   (`INSERT ... ON DUPLICATE KEY UPDATE last_id = last_id + 1`, which takes the row's
//!   exclusive lock), read it back, insert the message, commit. A second poster to the
//!   same room waits on that row lock until the first commits, then bumps the committed
//!   value; a rolled-back append rolls the counter back with it, so no id is skipped
//!   and no id is given twice. A deadlock or lock-wait timeout rolls the whole
//!   transaction back, and it is tried again (at most [`sql::ATTEMPTS`] times).
//! - **Durable.** InnoDB's default (`innodb_flush_log_at_trx_commit=1`) makes `COMMIT`
//!   return after the redo log is on disk: a message acknowledged survives a crash of the
//!   server or of the database.
//! - **Room names are case-sensitive**, as in SQLite: the room column is `ascii_bin`, not
//!   the server's default case-insensitive collation (where `Main` and `main` would share
//!   one counter).
//! - **Bounded waits.** Connect, read and write timeouts are the store's timeout
//!   (`--db-timeout`); a call never hangs on a database that stopped answering.
//!
//! The schema is created, or migrated, at start (`c10k_schema` holds its version), under
//! a named lock so that several workers starting together do it once.

use std::time::Duration;

use c10k_core::store::{Appended, Message, MessageId, NewMessage, RoomId, Store, StoreError};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};

use crate::circuit::Circuit;
use crate::pool::{Failure, Pool};
use crate::server::{self, stored};
use crate::{past_deadline, StoreOptions};

/// The SQL and the rules shared by the blocking and the native MySQL stores.
pub(crate) mod sql {
    use std::time::{Duration, Instant};

    use c10k_core::store::{Message, MessageId, NewMessage, RoomId, StoreError};

    /// How many times an append is tried when InnoDB rolls it back for a deadlock or a
    /// lock-wait timeout (nothing was stored; trying again is safe).
    pub const ATTEMPTS: usize = 3;

    /// Taken around the migration, so that workers starting together run it once.
    pub const MIGRATION_LOCK: &str = "SELECT GET_LOCK('c10k_schema_migration', ?)";
    /// Released after the migration.
    pub const MIGRATION_UNLOCK: &str = "SELECT RELEASE_LOCK('c10k_schema_migration')";

    /// Version 1: the schema's own version, the per-room counters and the messages.
    pub const SCHEMA_V1: &[&str] = &[
        "CREATE TABLE IF NOT EXISTS c10k_schema (
            id      TINYINT UNSIGNED NOT NULL PRIMARY KEY,
            version INT UNSIGNED     NOT NULL
        ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS c10k_rooms (
            room    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
            last_id BIGINT UNSIGNED NOT NULL
        ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS c10k_messages (
            room    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
            id      BIGINT UNSIGNED NOT NULL,
            body    TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            sender  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            time_ms BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (room, id)
        ) ENGINE=InnoDB",
        // The ledger's accounts (`--locking db`, see `mysql_ledger.rs`).
        "CREATE TABLE IF NOT EXISTS c10k_accounts (
            id      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
            balance BIGINT NOT NULL CHECK (balance >= 0)
        ) ENGINE=InnoDB",
    ];
    /// The store's epoch (`Store::epoch`), made with the tables or, for tables an older
    /// build made, at the first start of this one (no schema version needed: older builds
    /// never read it).
    pub const META: &str = "CREATE TABLE IF NOT EXISTS c10k_meta (
            name  VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
            value VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL
        ) ENGINE=InnoDB";
    /// Gives a store without an epoch its first one.
    pub const INSERT_EPOCH: &str = "INSERT IGNORE INTO c10k_meta (name, value) VALUES ('epoch', ?)";
    /// The epoch.
    pub const READ_EPOCH: &str = "SELECT value FROM c10k_meta WHERE name = 'epoch'";
    /// Replaces it (`c10k epoch --rotate`).
    pub const WRITE_EPOCH: &str =
        "INSERT INTO c10k_meta (name, value) VALUES ('epoch', ?) ON DUPLICATE KEY UPDATE value = VALUES(value)";
    /// Whether version 2's column exists (it may, if a migration stopped before recording
    /// its version: MySQL commits each `ALTER TABLE` on its own).
    pub const HAS_KEY_COLUMN: &str = "SELECT COUNT(*) FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'c10k_messages' AND COLUMN_NAME = 'idem_key'";
    /// Version 2: each message may keep its poster's idempotency key, unique in its room
    /// (a unique index holds any number of NULLs: messages without a key).
    pub const SCHEMA_V2: &str = "ALTER TABLE c10k_messages
         ADD COLUMN idem_key VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NULL,
         ADD UNIQUE KEY c10k_messages_idem_key (room, idem_key)";
    /// The version recorded; `None` before the first migration.
    pub const READ_VERSION: &str = "SELECT version FROM c10k_schema WHERE id = 1";
    /// Records the version.
    pub const WRITE_VERSION: &str =
        "INSERT INTO c10k_schema (id, version) VALUES (1, ?) ON DUPLICATE KEY UPDATE version = VALUES(version)";

    /// How long this connection's next lock waits may take, in whole seconds (InnoDB's
    /// unit): set before each append to what is left of the post's deadline.
    pub const LOCK_WAIT: &str = "SET SESSION innodb_lock_wait_timeout = ?";
    /// Opens an append's transaction.
    pub const BEGIN: &str = "START TRANSACTION";
    /// Ends it.
    pub const COMMIT: &str = "COMMIT";
    /// Undoes it, when a statement failed on a connection that still answers.
    pub const ROLLBACK: &str = "ROLLBACK";
    /// Bumps the room's counter (creating it at 1), taking the row's lock until commit.
    pub const BUMP: &str =
        "INSERT INTO c10k_rooms (room, last_id) VALUES (?, 1) ON DUPLICATE KEY UPDATE last_id = last_id + 1";
    /// The counter just bumped, as this transaction sees it.
    pub const LAST_ID: &str = "SELECT last_id FROM c10k_rooms WHERE room = ?";
    /// The message, under the id just taken.
    pub const INSERT: &str =
        "INSERT INTO c10k_messages (room, id, body, sender, time_ms, idem_key) VALUES (?, ?, ?, ?, ?, ?)";
    /// The message stored under an idempotency key.
    pub const BY_KEY: &str = "SELECT id, body, sender, time_ms FROM c10k_messages WHERE room = ? AND idem_key = ?";
    /// Messages after an id, oldest first.
    pub const AFTER: &str = "SELECT id, body, sender, time_ms FROM c10k_messages
         WHERE room = ? AND id > ? ORDER BY id ASC LIMIT ?";
    /// The newest messages, newest first (reversed by the caller).
    pub const RECENT: &str = "SELECT id, body, sender, time_ms FROM c10k_messages
         WHERE room = ? ORDER BY id DESC LIMIT ?";
    /// A page of history: the messages before an id, newest first.
    pub const BEFORE: &str = "SELECT id, body, sender, time_ms FROM c10k_messages
         WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?";
    /// Every room with a message (a counter row exists only once one was committed).
    pub const ROOMS: &str = "SELECT room FROM c10k_rooms ORDER BY room";
    /// `--db-sleep-ms`: a query that takes that long on the server.
    pub const SLEEP: &str = "SELECT SLEEP(?)";

    /// [`LOCK_WAIT`]'s value for an append of `message`: what is left of its deadline,
    /// rounded up to a second, and at most nine tenths of `--db-timeout` (so that InnoDB
    /// gives up, storing nothing, before this side stops waiting for an answer); `None`
    /// when the deadline has passed already.
    pub fn lock_wait_secs(message: &NewMessage, timeout: Duration) -> Option<u64> {
        let bound = timeout - timeout / 10;
        let left = match message.deadline {
            None => bound,
            Some(deadline) => deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?.min(bound),
        };
        Some(left.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Whether `message`'s deadline has passed.
    pub fn late(message: &NewMessage) -> bool {
        message.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// MySQL's error numbers for "rolled back, try again".
    pub fn is_retryable(code: u16) -> bool {
        // 1213 ER_LOCK_DEADLOCK, 1205 ER_LOCK_WAIT_TIMEOUT.
        matches!(code, 1213 | 1205)
    }

    /// Whether an error is the insert of a key the room holds already (1062 ER_DUP_ENTRY
    /// on the key's index): the statement did nothing, the message is stored already.
    pub fn is_duplicate_key(code: u16, message: &str) -> bool {
        code == 1062 && message.contains("c10k_messages_idem_key")
    }

    /// MySQL's error numbers that mean this connection is finished.
    pub fn is_connection_gone(code: u16) -> bool {
        // 1053 ER_SERVER_SHUTDOWN, 1927 ER_CONNECTION_KILLED, 2006 CR_SERVER_GONE_ERROR,
        // 2013 CR_SERVER_LOST, 4031 ER_CLIENT_INTERACTION_TIMEOUT.
        matches!(code, 1053 | 1927 | 2006 | 2013 | 4031)
    }

    /// A stored row back into a message.
    pub fn message(room: &RoomId, (id, body, from, time_ms): (u64, String, String, u64)) -> Message {
        Message { id: MessageId(id), room: room.clone(), body, from, time_ms }
    }

    /// The error for a counter row that its own transaction cannot read back.
    pub fn no_counter(room: &RoomId) -> StoreError {
        StoreError(format!("room {room}'s counter vanished inside its own transaction; check the database"))
    }

}

/// Messages in a MySQL or MariaDB database. Cheap to share behind an `Arc`; every method
/// blocks (for at most the store's timeout per round trip).
#[derive(Debug)]
pub struct MySqlStore {
    pub(crate) pool: Pool<Conn>,
    sleep: Option<Duration>,
    timeout: Duration,
}

/// The driver's options for a `mysql://` URL (a `mariadb://` one is read the same), with
/// the store's timeouts, and a description for messages that never shows the password.
pub(crate) fn parse_url(url: &str, options: &StoreOptions) -> Result<(Opts, String), StoreError> {
    let url = as_mysql_url(url);
    let opts = Opts::from_url(&url).map_err(|e| {
        StoreError(format!(
            "cannot read the MySQL URL: {e}; write mysql://USER[:PASSWORD]@HOST:PORT/DATABASE, for \
             instance mysql://root@127.0.0.1:3306/test"
        ))
    })?;
    let Some(db) = opts.get_db_name().map(str::to_string) else {
        return Err(StoreError(
            "the MySQL URL names no database; add one after the port, for instance \
             mysql://root@127.0.0.1:3306/test"
                .into(),
        ));
    };
    let what = format!("MySQL at {}:{}/{db}", opts.get_ip_or_hostname(), opts.get_tcp_port());
    let opts = OptsBuilder::from_opts(opts)
        // Exactly the address given: the driver would otherwise switch to a local socket.
        .prefer_socket(false)
        .tcp_connect_timeout(Some(options.timeout))
        .read_timeout(Some(options.timeout))
        .write_timeout(Some(options.timeout))
        .into();
    Ok((opts, what))
}

/// The URL with a `mariadb://` scheme read as `mysql://`, which both drivers understand.
pub(crate) fn as_mysql_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql://{rest}"),
        _ => url.to_string(),
    }
}

impl MySqlStore {
    /// Connects to the database `url` names, creating or migrating c10k's tables. Fails,
    /// saying where and why, if it cannot be reached within `options.timeout`.
    pub fn open(url: &str, options: &StoreOptions) -> Result<MySqlStore, StoreError> {
        let (opts, what) = parse_url(url, options)?;
        let connect = {
            let (opts, what) = (opts.clone(), what.clone());
            move || Conn::new(opts.clone()).map_err(|e| connect_error(&what, e))
        };
        let mut first = connect()?;
        migrate(&mut first, &what, options.timeout)?;
        let pool = Pool::new(Circuit::new(what), options.connections, options.timeout, connect);
        pool.seed(first);
        Ok(MySqlStore { pool, sleep: options.server_sleep, timeout: options.timeout })
    }

    /// `--db-sleep-ms`: a real query that keeps the server (and this connection) busy.
    fn sleep(&self, conn: &mut Conn) -> Result<(), Failure> {
        match self.sleep {
            Some(d) => conn.exec_drop(sql::SLEEP, (d.as_secs_f64(),)).map_err(classify),
            None => Ok(()),
        }
    }
}

fn connect_error(what: &str, e: mysql::Error) -> StoreError {
    StoreError(format!(
        "cannot connect to {what}: {e}; check that the database is running and the URL's user, \
         password and database are right"
    ))
}

/// Creates the tables, or brings them to [`server::VERSION`].
fn migrate(conn: &mut Conn, what: &str, timeout: Duration) -> Result<(), StoreError> {
    let fail = |e: mysql::Error| {
        StoreError(format!("cannot create c10k's tables in {what}: {e}; the URL's user needs CREATE rights"))
    };
    let locked: Option<Option<i64>> = conn.exec_first(sql::MIGRATION_LOCK, (timeout.as_secs(),)).map_err(fail)?;
    if locked.flatten() != Some(1) {
        return Err(StoreError(format!(
            "another c10k held {what}'s schema migration lock for {} s; retry, or look for a stuck process",
            timeout.as_secs()
        )));
    }
    let result = (|| {
        for statement in sql::SCHEMA_V1 {
            conn.query_drop(statement).map_err(fail)?;
        }
        conn.query_drop(sql::META).map_err(fail)?;
        conn.exec_drop(sql::INSERT_EPOCH, (crate::fresh_epoch(),)).map_err(fail)?;
        let found: Option<u32> = conn.query_first(sql::READ_VERSION).map_err(fail)?;
        server::check_version(found, what)?;
        if found.unwrap_or(0) < 2 {
            let has_column: Option<u64> = conn.query_first(sql::HAS_KEY_COLUMN).map_err(fail)?;
            if has_column.unwrap_or(0) == 0 {
                conn.query_drop(sql::SCHEMA_V2).map_err(fail)?;
            }
        }
        if found != Some(server::VERSION) {
            conn.exec_drop(sql::WRITE_VERSION, (server::VERSION,)).map_err(fail)?;
        }
        Ok(())
    })();
    let _ = conn.query_drop(sql::MIGRATION_UNLOCK);
    result
}

/// Sorts a driver error into the pool's classes.
pub(crate) fn classify(e: mysql::Error) -> Failure {
    match &e {
        mysql::Error::MySqlError(server) if !sql::is_connection_gone(server.code) => Failure::Query(query_error(e)),
        _ if timed_out(&e) => Failure::Broken(StoreError(format!("MySQL gave no answer within --db-timeout: {e}"))),
        _ if e.is_connectivity_error() || matches!(e, mysql::Error::MySqlError(_)) => {
            Failure::Stale(StoreError(format!("the MySQL connection was closed: {e}")))
        }
        _ => Failure::Query(query_error(e)),
    }
}

/// Whether a socket read or write ran out of time (a timed-out `SO_RCVTIMEO` read says
/// `WouldBlock`), directly or inside the packet codec.
fn timed_out(e: &mysql::Error) -> bool {
    use mysql_common::proto::codec::error::PacketCodecError;
    let io = match e {
        mysql::Error::IoError(io) | mysql::Error::CodecError(PacketCodecError::Io(io)) => io,
        _ => return false,
    };
    matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

fn query_error(e: mysql::Error) -> StoreError {
    StoreError(format!("MySQL refused a query: {e}"))
}

impl Store for MySqlStore {
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError> {
        self.pool.run(|conn| {
            self.sleep(conn)?;
            let mut attempt = 1;
            loop {
                let late = || Failure::Query(past_deadline("the room's row lock (another connection holds it)"));
                let lock_wait = sql::lock_wait_secs(message, self.timeout).ok_or_else(late)?;
                conn.exec_drop(sql::LOCK_WAIT, (lock_wait,)).map_err(classify)?;
                match append_once(conn, room, message) {
                    Ok(id) => return Ok(stored(room, message, id)),
                    Err(AppendFailed::Before(mysql::Error::MySqlError(e))) if sql::is_retryable(e.code) && sql::late(message) => {
                        return Err(late())
                    }
                    Err(AppendFailed::Before(mysql::Error::MySqlError(e))) if sql::is_duplicate_key(e.code, &e.message) => {
                        // Rolled back; the message stored with this key is the answer.
                        let key = message.key.as_deref().unwrap_or_default();
                        let row: Option<(u64, String, String, u64)> =
                            conn.exec_first(sql::BY_KEY, (room.as_str(), key)).map_err(classify)?;
                        let found = row.ok_or_else(|| Failure::Query(server::key_vanished(room)))?;
                        return Ok(Appended { message: sql::message(room, found), replayed: true });
                    }
                    Err(AppendFailed::Before(mysql::Error::MySqlError(e)))
                        if sql::is_retryable(e.code) && attempt < sql::ATTEMPTS =>
                    {
                        attempt += 1
                    }
                    Err(AppendFailed::Before(e)) => return Err(classify(e)),
                    Err(AppendFailed::AtCommit(e)) => return Err(ambiguous(classify(e))),
                    Err(AppendFailed::NoCounter) => return Err(Failure::Query(sql::no_counter(room))),
                    Err(AppendFailed::Late) => return Err(late()),
                }
            }
        })
    }

    fn after(&self, room: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.pool.run(|conn| {
            self.sleep(conn)?;
            let rows: Vec<(u64, String, String, u64)> =
                conn.exec(sql::AFTER, (room.as_str(), after.0, sql_limit(limit))).map_err(classify)?;
            Ok(rows.into_iter().map(|row| sql::message(room, row)).collect())
        })
    }

    fn recent(&self, room: &RoomId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.pool.run(|conn| {
            let mut rows: Vec<(u64, String, String, u64)> =
                conn.exec(sql::RECENT, (room.as_str(), sql_limit(limit))).map_err(classify)?;
            rows.reverse();
            Ok(rows.into_iter().map(|row| sql::message(room, row)).collect())
        })
    }

    fn before(&self, room: &RoomId, before: Option<MessageId>, limit: usize) -> Result<Vec<Message>, StoreError> {
        let before = before.map_or(u64::MAX, |id| id.0);
        self.pool.run(|conn| {
            self.sleep(conn)?;
            let rows: Vec<(u64, String, String, u64)> =
                conn.exec(sql::BEFORE, (room.as_str(), before, sql_limit(limit))).map_err(classify)?;
            Ok(rows.into_iter().map(|row| sql::message(room, row)).collect())
        })
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        let names: Vec<String> = self.pool.run(|conn| conn.query(sql::ROOMS).map_err(classify))?;
        names.into_iter().map(server::room).collect()
    }

    fn ledger(&self) -> Option<&dyn c10k_core::ledger::LedgerStore> {
        Some(self)
    }

    fn round_trip(&self) -> Result<(), StoreError> {
        self.pool.run(|conn| conn.query_drop("SELECT 1").map_err(classify))
    }

    fn epoch(&self) -> Result<Option<String>, StoreError> {
        self.pool.run(|conn| conn.query_first(sql::READ_EPOCH).map_err(classify))
    }

    fn set_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        self.pool.run(|conn| conn.exec_drop(sql::WRITE_EPOCH, (epoch,)).map_err(classify))
    }
}

/// How one try at an append failed.
enum AppendFailed {
    /// Before `COMMIT`: nothing is stored.
    Before(mysql::Error),
    /// At `COMMIT`: the outcome is unknown.
    AtCommit(mysql::Error),
    /// The counter row just written was not there to read (never, on a sane database).
    NoCounter,
    /// The message's deadline passed before `COMMIT`: rolled back, nothing is stored.
    Late,
}

/// One try at the append transaction (see the module docs): the id it stored under.
///
/// Written with plain statements rather than the driver's `Transaction`, whose drop sends
/// a `ROLLBACK` and waits for its answer: on a connection that just timed out, that
/// would be a second full timeout before the caller hears anything. Here a failed
/// statement rolls back only when the connection still answers (a query error); a
/// broken connection is thrown away, and the server rolls back when it sees it go.
fn append_once(conn: &mut Conn, room: &RoomId, message: &NewMessage) -> Result<u64, AppendFailed> {
    conn.query_drop(sql::BEGIN).map_err(AppendFailed::Before)?;
    let statements = (|| {
        conn.exec_drop(sql::BUMP, (room.as_str(),))?;
        let id: Option<u64> = conn.exec_first(sql::LAST_ID, (room.as_str(),))?;
        if let Some(id) = id {
            conn.exec_drop(sql::INSERT, (room.as_str(), id, &message.body, &message.from, message.time_ms, &message.key))?;
        }
        Ok(id)
    })();
    match statements {
        Ok(Some(_)) if sql::late(message) => {
            // The poster is told 503: nothing may stay.
            let _ = conn.query_drop(sql::ROLLBACK);
            Err(AppendFailed::Late)
        }
        Ok(Some(id)) => {
            conn.query_drop(sql::COMMIT).map_err(AppendFailed::AtCommit)?;
            Ok(id)
        }
        Ok(None) => {
            let _ = conn.query_drop(sql::ROLLBACK);
            Err(AppendFailed::NoCounter)
        }
        Err(e) => {
            if let mysql::Error::MySqlError(_) = e {
                // The server answered (a deadlock, a lock-wait timeout): it still listens.
                let _ = conn.query_drop(sql::ROLLBACK);
            }
            Err(AppendFailed::Before(e))
        }
    }
}

/// A connection that broke during `COMMIT` leaves the outcome unknown: never retried.
pub(crate) fn ambiguous(failure: Failure) -> Failure {
    match failure {
        Failure::Stale(e) | Failure::Broken(e) => Failure::Broken(StoreError(format!(
            "{}; it broke during COMMIT, so the message may or may not be stored",
            e.0
        ))),
        other => other,
    }
}

/// A `LIMIT` MySQL accepts: `usize::MAX` means "all".
fn sql_limit(limit: usize) -> u64 {
    u64::try_from(limit).unwrap_or(u64::MAX)
}
