//! The connection pool of the blocking network stores (MySQL, PostgreSQL).
//!
//! A connection is checked out for one store call and given back after it. The pool
//! differs from SQLite's (`sqlite.rs`) in what a network brings:
//!
//! - **A broken connection is thrown away**, with every idle one (after a database
//!   restart they are all stale). When it was found closed ([`Failure::Stale`]) on a
//!   connection that had sat idle, the call is tried once more on a fresh one: nothing
//!   was done, so nothing can be stored twice. Any other break ([`Failure::Broken`]: no
//!   answer in time, a close during a commit) is not retried, and the database is taken
//!   as unreachable.
//! - **Every wait is bounded**: connecting (the driver's connect timeout), each query
//!   (the driver's read/write timeouts), and waiting for a free connection (the same
//!   timeout), so a call returns an error instead of hanging.
//! - **A database that is down fails fast** through the shared [`Circuit`].

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use c10k_core::store::StoreError;

use crate::circuit::Circuit;

/// How a store call on a pooled connection went wrong.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database answered with an error; the connection is fine and goes back.
    Query(StoreError),
    /// The connection was closed (by the server, or a restart) before the call did
    /// anything: it is thrown away, and the call may be tried again on a fresh one.
    Stale(StoreError),
    /// The connection broke in a way that rules out trying again: no answer within the
    /// timeout, or a close while a commit was on its way (the error says the data may or
    /// may not be stored).
    Broken(StoreError),
}

/// Blocking connections of type `C` to one database, at most `max` at a time.
pub(crate) struct Pool<C> {
    connect: Box<dyn Fn() -> Result<C, StoreError> + Send + Sync>,
    circuit: Circuit,
    max: usize,
    timeout: Duration,
    state: Mutex<State<C>>,
    returned: Condvar,
}

struct State<C> {
    idle: Vec<C>,
    /// Connections in existence: idle plus checked out.
    open: usize,
}

impl<C> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("database", &self.circuit.what()).field("max", &self.max).finish_non_exhaustive()
    }
}

impl<C> Pool<C> {
    /// A pool that opens connections with `connect` (which must itself give up within
    /// `timeout`), at most `max` at once, for the database `circuit` describes.
    pub(crate) fn new(
        circuit: Circuit,
        max: usize,
        timeout: Duration,
        connect: impl Fn() -> Result<C, StoreError> + Send + Sync + 'static,
    ) -> Pool<C> {
        Pool {
            connect: Box::new(connect),
            circuit,
            max: max.max(1),
            timeout,
            state: Mutex::new(State { idle: Vec::new(), open: 0 }),
            returned: Condvar::new(),
        }
    }

    /// Puts a connection made elsewhere (the one start-up used) into the pool.
    pub(crate) fn seed(&self, conn: C) {
        let mut state = self.lock();
        state.open += 1;
        state.idle.push(conn);
    }

    /// Runs `call` on a connection; see the module docs for what happens when it breaks.
    pub(crate) fn run<T>(&self, mut call: impl FnMut(&mut C) -> Result<T, Failure>) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let (mut conn, reused) = self.checkout()?;
            match call(&mut conn) {
                Ok(value) => {
                    self.give_back(conn);
                    self.circuit.reset();
                    return Ok(value);
                }
                Err(Failure::Query(error)) => {
                    self.give_back(conn);
                    return Err(error);
                }
                Err(Failure::Stale(error)) if reused && !retried => {
                    // Probably stale (the database restarted while it sat idle): so are
                    // the other idle ones. Try once on a fresh connection.
                    tracing::debug!(database = %self.circuit.what(), "{error}; retrying on a new connection");
                    self.discard(conn);
                    self.discard_idle();
                    retried = true;
                }
                Err(Failure::Stale(error) | Failure::Broken(error)) => {
                    self.discard(conn);
                    self.discard_idle();
                    self.circuit.trip(&error);
                    return Err(error);
                }
            }
        }
    }

    /// An idle connection (reused: true), a new one, or one given back within the
    /// timeout.
    fn checkout(&self) -> Result<(C, bool), StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok((conn, true));
            }
            if state.open < self.max {
                self.circuit.admit()?;
                state.open += 1;
                drop(state); // connecting takes a round trip or a timeout: not under the lock
                return match (self.connect)() {
                    Ok(conn) => Ok((conn, false)),
                    Err(error) => {
                        self.lock().open -= 1;
                        self.returned.notify_one();
                        self.circuit.trip(&error);
                        Err(error)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError(format!(
                    "all {} connections to {} stayed busy for {:.1} s; the database is slower than the \
                     request rate",
                    self.max,
                    self.circuit.what(),
                    self.timeout.as_secs_f64()
                )));
            }
            state = self.returned.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn give_back(&self, conn: C) {
        self.lock().idle.push(conn);
        self.returned.notify_one();
    }

    fn discard(&self, conn: C) {
        drop(conn);
        self.lock().open -= 1;
        self.returned.notify_one();
    }

    fn discard_idle(&self) {
        let stale = {
            let mut state = self.lock();
            state.open -= state.idle.len();
            std::mem::take(&mut state.idle)
        };
        drop(stale); // closing may write a goodbye to the socket: not under the lock
        self.returned.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // A Vec and a count, each changed in one statement: still consistent after a panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn error(text: &str) -> StoreError {
        StoreError(text.to_string())
    }

    /// A pool of numbered fake connections; `refuse` makes connecting fail.
    fn pool(max: usize, refuse: Arc<AtomicUsize>, made: Arc<AtomicUsize>) -> Pool<usize> {
        Pool::new(Circuit::new("fake".into()), max, Duration::from_millis(200), move || {
            if refuse.load(Ordering::SeqCst) > 0 {
                return Err(error("connection refused"));
            }
            Ok(made.fetch_add(1, Ordering::SeqCst))
        })
    }

    #[test]
    fn connections_are_reused() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = pool(4, Arc::default(), Arc::clone(&made));
        for _ in 0..5 {
            assert_eq!(pool.run(|conn| Ok(*conn)).unwrap(), 0);
        }
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stale_idle_connection_is_replaced_and_the_call_retried_once() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = pool(4, Arc::default(), Arc::clone(&made));
        pool.run(|_| Ok(())).unwrap();
        let answer = pool.run(|conn| if *conn == 0 { Err(Failure::Stale(error("reset"))) } else { Ok(*conn) });
        assert_eq!(answer.unwrap(), 1, "retried on connection 1");
    }

    #[test]
    fn a_broken_connection_is_not_retried() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = pool(4, Arc::default(), Arc::clone(&made));
        pool.run(|_| Ok(())).unwrap();
        let calls = AtomicUsize::new(0);
        let answer: Result<(), _> = pool.run(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure::Broken(error("no answer in time")))
        });
        assert!(answer.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_query_error_keeps_the_connection() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = pool(4, Arc::default(), Arc::clone(&made));
        let answer: Result<(), _> = pool.run(|_| Err(Failure::Query(error("syntax"))));
        assert_eq!(answer.unwrap_err().0, "syntax");
        pool.run(|_| Ok(())).unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_unreachable_database_fails_the_next_calls_at_once_without_connecting() {
        let (refuse, made) = (Arc::new(AtomicUsize::new(1)), Arc::new(AtomicUsize::new(0)));
        let pool = pool(4, Arc::clone(&refuse), Arc::clone(&made));
        assert!(pool.run(|_| Ok(())).unwrap_err().0.contains("refused"));
        refuse.store(0, Ordering::SeqCst);
        let fast = pool.run(|_| Ok(())).unwrap_err().0;
        assert!(fast.contains("unreachable"), "{fast}");
        assert_eq!(made.load(Ordering::SeqCst), 0, "no connection attempted while the circuit is open");
    }

    #[test]
    fn waiting_for_a_busy_pool_is_bounded() {
        let made = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(pool(1, Arc::default(), made));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                pool.run(|_| {
                    held_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
            })
        };
        held_rx.recv().unwrap();
        let busy = pool.run(|_| Ok(())).unwrap_err().0;
        assert!(busy.contains("stayed busy"), "{busy}");
        release_tx.send(()).unwrap();
        holder.join().unwrap().unwrap();
        pool.run(|_| Ok(())).unwrap();
    }
}
