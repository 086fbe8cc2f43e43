//! The MySQL / MariaDB store for `--db-mode native`: `mysql_async`, awaited on the async
//! model's tokio runtime, so a slow query parks a task instead of a thread.
//!
//! The SQL, the id rule and the error classes are `mysql.rs`'s ([`sql`]); this file only
//! awaits them. `mysql_async` has no read timeout of its own, so every call is wrapped
//! in the store's timeout, and the same [`Circuit`] makes calls fail fast while the
//! database is unreachable.

use std::time::Duration;

use c10k_core::store::{Appended, AsyncStore, Message, MessageId, NewMessage, RoomId, StoreError, StoreFuture};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts};

use crate::circuit::Circuit;
use crate::mysql::{ambiguous, sql};
use crate::server::{key_vanished, stored};
use crate::pool::Failure;
use crate::{past_deadline, StoreOptions};

/// Messages in a MySQL or MariaDB database, awaited (`--db-mode native`). The schema must
/// exist: open the blocking [`crate::MySqlStore`] first (the server does, to load the
/// history).
pub struct MySqlNativeStore {
    pool: Pool,
    circuit: Circuit,
    timeout: Duration,
    sleep: Option<Duration>,
}

impl std::fmt::Debug for MySqlNativeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlNativeStore").field("database", &self.circuit.what()).finish_non_exhaustive()
    }
}

impl MySqlNativeStore {
    /// A store for the database `url` names, with at most `options.connections`
    /// connections, made when first needed (inside the runtime).
    pub fn new(url: &str, options: &StoreOptions) -> Result<MySqlNativeStore, StoreError> {
        // The blocking driver's parser reads the URL and says what is wrong with it; the
        // async driver then gets the same URL, with the same overrides.
        let (_, what) = crate::mysql::parse_url(url, options)?;
        let opts = Opts::from_url(&crate::mysql::as_mysql_url(url)).map_err(|e| StoreError(format!("cannot read the MySQL URL: {e}")))?;
        let constraints = PoolConstraints::new(0, options.connections.max(1)).unwrap_or_default();
        let opts = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        Ok(MySqlNativeStore {
            pool: Pool::new(opts),
            circuit: Circuit::new(what),
            timeout: options.timeout,
            sleep: options.server_sleep,
        })
    }

    /// Runs `call` on a pooled connection within the timeout, keeping the circuit.
    async fn run<T>(&self, call: impl AsyncFnOnce(&mut Conn) -> Result<T, Failure>) -> Result<T, StoreError> {
        self.circuit.admit()?;
        let attempt = async {
            let mut conn = self.pool.get_conn().await.map_err(|e| {
                Failure::Broken(StoreError(format!("cannot connect to {}: {e}", self.circuit.what())))
            })?;
            call(&mut conn).await
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Broken(StoreError(format!(
                "{} gave no answer within {:.1} s (--db-timeout); an append may or may not be stored",
                self.circuit.what(),
                self.timeout.as_secs_f64()
            )))),
        };
        // mysql_async's pool checks a connection that comes back after an error itself.
        self.circuit.settle(result, || {})
    }

    async fn sleep(&self, conn: &mut Conn) -> Result<(), Failure> {
        match self.sleep {
            Some(d) => conn.exec_drop(sql::SLEEP, (d.as_secs_f64(),)).await.map_err(classify),
            None => Ok(()),
        }
    }
}

/// Sorts a driver error into the pool's classes (as `mysql.rs` does for the blocking one).
fn classify(e: mysql_async::Error) -> Failure {
    match &e {
        mysql_async::Error::Server(server) if !sql::is_connection_gone(server.code) => {
            Failure::Query(StoreError(format!("MySQL refused a query: {e}")))
        }
        _ => Failure::Stale(StoreError(format!("the MySQL connection was closed: {e}"))),
    }
}

/// One try at the append transaction (the rule is in `mysql.rs`): the stored id (`None`:
/// the message's deadline passed before `COMMIT`, so it was rolled back), or the error
/// and whether it came at `COMMIT`.
async fn append_once(
    conn: &mut Conn,
    room: &RoomId,
    message: &NewMessage,
) -> Result<Option<u64>, (bool, mysql_async::Error)> {
    let before = |e| (false, e);
    let mut tx = conn.start_transaction(TxOpts::default()).await.map_err(before)?;
    tx.exec_drop(sql::BUMP, (room.as_str(),)).await.map_err(before)?;
    let id: Option<u64> = tx.exec_first(sql::LAST_ID, (room.as_str(),)).await.map_err(before)?;
    let Some(id) = id else {
        return Err((false, mysql_async::Error::Other(sql::no_counter(room).0.into())));
    };
    tx.exec_drop(sql::INSERT, (room.as_str(), id, &message.body, &message.from, message.time_ms, &message.key))
        .await
        .map_err(before)?;
    if sql::late(message) {
        // The poster is told 503: nothing may stay.
        let _ = tx.rollback().await;
        return Ok(None);
    }
    tx.commit().await.map_err(|e| (true, e))?;
    Ok(Some(id))
}

impl AsyncStore for MySqlNativeStore {
    fn append<'a>(&'a self, room: &'a RoomId, message: &'a NewMessage) -> StoreFuture<'a, Appended> {
        Box::pin(self.run(async |conn| {
            self.sleep(conn).await?;
            let mut attempt = 1;
            loop {
                let late = || Failure::Query(past_deadline("the room's row lock (another connection holds it)"));
                let lock_wait = sql::lock_wait_secs(message, self.timeout).ok_or_else(late)?;
                conn.exec_drop(sql::LOCK_WAIT, (lock_wait,)).await.map_err(classify)?;
                match append_once(conn, room, message).await {
                    Ok(Some(id)) => return Ok(stored(room, message, id)),
                    Ok(None) => return Err(late()),
                    Err((false, mysql_async::Error::Server(e))) if sql::is_retryable(e.code) && sql::late(message) => {
                        return Err(late())
                    }
                    Err((false, mysql_async::Error::Server(e))) if sql::is_duplicate_key(e.code, &e.message) => {
                        // Rolled back (the transaction was dropped); the message stored
                        // with this key is the answer.
                        let key = message.key.as_deref().unwrap_or_default();
                        let row: Option<(u64, String, String, u64)> =
                            conn.exec_first(sql::BY_KEY, (room.as_str(), key)).await.map_err(classify)?;
                        let found = row.ok_or_else(|| Failure::Query(key_vanished(room)))?;
                        return Ok(Appended { message: sql::message(room, found), replayed: true });
                    }
                    Err((false, mysql_async::Error::Server(e))) if sql::is_retryable(e.code) && attempt < sql::ATTEMPTS => {
                        attempt += 1
                    }
                    Err((false, e)) => return Err(classify(e)),
                    Err((true, e)) => return Err(ambiguous(classify(e))),
                }
            }
        }))
    }

    fn after<'a>(&'a self, room: &'a RoomId, after: MessageId, limit: usize) -> StoreFuture<'a, Vec<Message>> {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        Box::pin(self.run(async move |conn| {
            self.sleep(conn).await?;
            let rows: Vec<(u64, String, String, u64)> =
                conn.exec(sql::AFTER, (room.as_str(), after.0, limit)).await.map_err(classify)?;
            Ok(rows.into_iter().map(|row| sql::message(room, row)).collect())
        }))
    }
}
