//! PostgreSQL driven by the caller's own scheduler: the green model's `--db-mode native`,
//! gevent's monkey patching done for a database.
//!
//! A green coroutine calls the store as blocking code would; the driver underneath runs
//! `tokio-postgres` (which is runtime-agnostic when given its socket through
//! `connect_raw`) over a non-blocking socket, polled by a tiny executor *inside the
//! coroutine*: poll the query, poll the connection, and when neither can go on, park the
//! coroutine on the socket through the caller's [`Parker`] (the green scheduler
//! registers the descriptor with the event loop for the length of the park). The loop
//! serves everybody else meanwhile; no thread, no runtime, no offload hop.
//!
//! Connections are kept per event loop ([`CooperativePostgres`] is neither `Send` nor
//! `Sync`, like everything a coroutine owns), at most `--db-connections`; a coroutine that
//! finds them all in use yields until one is free or its timeout passes. Each call is
//! bounded by `--db-timeout`, and the same [`Circuit`] as the other stores makes calls
//! fail fast while the database is unreachable. MySQL has no such driver (both `mysql`
//! and `mysql_async` open their own sockets), so `green` refuses native for it.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use c10k_core::store::{Appended, LocalStore, Message, MessageId, NewMessage, RoomId, StoreError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, Connection, NoTls, Statement};

use crate::circuit::Circuit;
use crate::pool::Failure;
use crate::postgres::{
    appended, classify, classify_append, is_duplicate_key, limit, lock_budget, parse_url, replayed, to_i64, to_message,
    CallError, AFTER, APPEND, BY_KEY, SLEEP,
};
use crate::StoreOptions;

/// How a driver running inside a coroutine waits: the caller's scheduler.
pub trait Parker {
    /// Suspends the caller until `fd` is readable (or writable, with `writable`), or
    /// `deadline` passes, or spuriously. The caller re-checks.
    fn park(&self, fd: RawFd, writable: bool, deadline: Instant);

    /// Lets the scheduler run the others once, then resumes the caller.
    fn yield_now(&self);
}

/// A non-blocking socket for `tokio-postgres`: `WouldBlock` becomes `Pending`, and the
/// executor (not a waker) knows to park on the descriptor; a write that would block is
/// remembered so that the park asks for writability.
struct Socket {
    stream: TcpStream,
    wants_write: Arc<AtomicBool>,
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match (&self.stream).read(buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match (&self.stream).write(buf) {
            Ok(n) => {
                self.wants_write.store(false, Ordering::Relaxed);
                Poll::Ready(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.wants_write.store(true, Ordering::Relaxed);
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is buffered here
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(std::net::Shutdown::Write))
    }
}

/// One connection: the client, the connection's future (polled by [`drive`]), and the
/// prepared statements.
struct Conn {
    client: Client,
    connection: Pin<Box<Connection<Socket, NoTlsStream>>>,
    fd: RawFd,
    wants_write: Arc<AtomicBool>,
    append: Statement,
    by_key: Statement,
    after: Statement,
    sleep: Statement,
}

/// Polls `call` and the connection until `call` is done, parking on the socket in
/// between; gives up at `deadline`.
fn drive<T>(
    connection: &mut Pin<Box<Connection<Socket, NoTlsStream>>>,
    fd: RawFd,
    wants_write: &AtomicBool,
    parker: &dyn Parker,
    deadline: Instant,
    timeout: Duration,
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, CallError> {
    let mut call = std::pin::pin!(call);
    let mut cx = Context::from_waker(Waker::noop());
    let mut connection_done = false;
    loop {
        if let Poll::Ready(result) = call.as_mut().poll(&mut cx) {
            return result.map_err(CallError::Driver);
        }
        if !connection_done {
            // The connection writes the queued request, reads answers and hands them to
            // the call; it ends when the socket closes (the call then fails as closed).
            if connection.as_mut().poll(&mut cx).is_ready() {
                connection_done = true;
            }
            if let Poll::Ready(result) = call.as_mut().poll(&mut cx) {
                return result.map_err(CallError::Driver);
            }
        }
        if Instant::now() >= deadline {
            return Err(CallError::TimedOut(timeout));
        }
        parker.park(fd, wants_write.load(Ordering::Relaxed), deadline);
    }
}

/// PostgreSQL for the coroutines of one event loop; see the module docs.
pub struct CooperativePostgres {
    config: Config,
    circuit: Circuit,
    timeout: Duration,
    sleep: Option<Duration>,
    max: usize,
    idle: RefCell<Vec<Conn>>,
    open: std::cell::Cell<usize>,
}

impl std::fmt::Debug for CooperativePostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CooperativePostgres").field("database", &self.circuit.what()).finish_non_exhaustive()
    }
}

impl CooperativePostgres {
    /// A driver for the database `url` names (a `postgres://` URL), connecting on first
    /// use. The schema must exist: the server opens the blocking store first.
    pub fn new(url: &str, options: &StoreOptions) -> Result<CooperativePostgres, StoreError> {
        let lower = url.trim().to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Err(StoreError(format!(
                "green's native driver is PostgreSQL's (tokio-postgres driven over green sockets), and {url:?} \
                 is not a postgres:// URL: MySQL's drivers open their own sockets, so green has no native \
                 way to talk to it; use --db-mode offload, or inline to see the stall"
            )));
        }
        let (config, what) = parse_url(url, options)?;
        Ok(CooperativePostgres {
            config,
            circuit: Circuit::new(what),
            timeout: options.timeout,
            sleep: options.server_sleep,
            max: options.connections.max(1),
            idle: RefCell::new(Vec::new()),
            open: std::cell::Cell::new(0),
        })
    }

    /// The store as a coroutine of `parker`'s scheduler sees it.
    pub fn on<'a>(&'a self, parker: &'a dyn Parker) -> impl LocalStore + 'a {
        Calls { pg: self, parker }
    }

    /// A free connection, a new one, or (all in use) the first given back before the
    /// deadline.
    fn checkout(&self, parker: &dyn Parker, deadline: Instant) -> Result<Conn, StoreError> {
        loop {
            if let Some(conn) = self.idle.borrow_mut().pop() {
                return Ok(conn);
            }
            if self.open.get() < self.max {
                self.circuit.admit()?;
                self.open.set(self.open.get() + 1);
                return self.connect(parker, deadline).inspect_err(|e| {
                    self.open.set(self.open.get() - 1);
                    self.circuit.trip(e);
                });
            }
            if Instant::now() >= deadline {
                return Err(StoreError(format!(
                    "all {} connections to {} stayed busy for {:.1} s (--db-connections)",
                    self.max,
                    self.circuit.what(),
                    self.timeout.as_secs_f64()
                )));
            }
            parker.yield_now();
        }
    }

    fn connect(&self, parker: &dyn Parker, deadline: Instant) -> Result<Conn, StoreError> {
        let what = self.circuit.what();
        let refused = |e: &dyn std::fmt::Display| {
            StoreError(format!(
                "cannot connect to {what}: {e}; check that the database is running and the URL's user and \
                 database are right"
            ))
        };
        let stream = connect_tcp(&self.config, parker, deadline).map_err(|e| refused(&e))?;
        let fd = stream.as_raw_fd();
        let wants_write = Arc::new(AtomicBool::new(false));
        let socket = Socket { stream, wants_write: Arc::clone(&wants_write) };
        // The handshake's own future owns the socket until it hands the connection over.
        let mut handshake = std::pin::pin!(self.config.connect_raw(socket, NoTls));
        let mut cx = Context::from_waker(Waker::noop());
        let (client, connection) = loop {
            match handshake.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(pair)) => break pair,
                Poll::Ready(Err(e)) => return Err(refused(&e)),
                Poll::Pending if Instant::now() >= deadline => return Err(refused(&"no answer within --db-timeout")),
                Poll::Pending => parker.park(fd, wants_write.load(Ordering::Relaxed), deadline),
            }
        };
        let mut connection = Box::pin(connection);
        let mut prepare = |sql: &str, types: &[Type]| {
            drive(&mut connection, fd, &wants_write, parker, deadline, self.timeout, client.prepare_typed(sql, types))
                .map_err(|e| refused(&e))
        };
        let append = prepare(APPEND, &[Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT])?;
        let by_key = prepare(BY_KEY, &[Type::TEXT, Type::TEXT])?;
        let after = prepare(AFTER, &[Type::TEXT, Type::INT8, Type::INT8])?;
        let sleep = prepare(SLEEP, &[Type::FLOAT8])?;
        Ok(Conn { client, connection, fd, wants_write, append, by_key, after, sleep })
    }

    /// Runs `call` on a connection and settles it: back to the pool, or thrown away (and
    /// the circuit opened) when it broke.
    fn run<T>(
        &self,
        parker: &dyn Parker,
        call: impl FnOnce(&mut Conn, Instant) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.checkout(parker, deadline)?;
        let result = call(&mut conn, deadline);
        let mut conn = Some(conn);
        let settled = self.circuit.settle(result, || {
            drop(conn.take()); // broken: thrown away
            self.open.set(self.open.get() - 1);
        });
        if let Some(conn) = conn {
            self.idle.borrow_mut().push(conn);
        }
        settled
    }
}

/// A non-blocking TCP connect to the configured host, parked on until it completes.
fn connect_tcp(config: &Config, parker: &dyn Parker, deadline: Instant) -> io::Result<TcpStream> {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        _ => return Err(io::Error::new(io::ErrorKind::Unsupported, "a Unix-socket host; give HOST:PORT")),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    // A name is resolved by the system's resolver, which blocks; give an address to avoid it.
    let address = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&address.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => loop {
            parker.park(socket.as_raw_fd(), true, deadline);
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
            match socket.peer_addr() {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            }
        },
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// [`CooperativePostgres`] seen from one coroutine.
struct Calls<'a> {
    pg: &'a CooperativePostgres,
    parker: &'a dyn Parker,
}

impl Calls<'_> {
    fn sleep(&self, conn: &mut Conn, deadline: Instant) -> Result<(), Failure> {
        let Some(d) = self.pg.sleep else { return Ok(()) };
        let seconds = d.as_secs_f64();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&seconds];
        let call = conn.client.execute(&conn.sleep, &params);
        drive(&mut conn.connection, conn.fd, &conn.wants_write, self.parker, deadline, self.pg.timeout, call)
            .map(drop)
            .map_err(|e| classify(e, false))
    }
}

impl LocalStore for Calls<'_> {
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError> {
        self.pg.run(self.parker, |conn, deadline| {
            self.sleep(conn, deadline)?;
            let time_ms = to_i64(message.time_ms, "time")?;
            let budget = lock_budget(message, self.pg.timeout)?;
            let name = room.as_str();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&name, &message.body, &message.from, &time_ms, &budget, &message.key];
            let call = conn.client.query_opt(&conn.append, &params);
            match drive(&mut conn.connection, conn.fd, &conn.wants_write, self.parker, deadline, self.pg.timeout, call) {
                Ok(row) => appended(room, message, row),
                Err(e) if is_duplicate_key(&e) => {
                    // Rolled back; the message stored with this key is the answer.
                    let key = message.key.as_deref().unwrap_or_default();
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&name, &key];
                    let call = conn.client.query_opt(&conn.by_key, &params);
                    let found =
                        drive(&mut conn.connection, conn.fd, &conn.wants_write, self.parker, deadline, self.pg.timeout, call)
                            .map_err(|e| classify(e, false))?;
                    replayed(room, found)
                }
                Err(e) => Err(classify_append(e)),
            }
        })
    }

    fn after(&self, room: &RoomId, after: MessageId, count: usize) -> Result<Vec<Message>, StoreError> {
        self.pg.run(self.parker, |conn, deadline| {
            self.sleep(conn, deadline)?;
            let after = to_i64(after.0, "message id")?;
            let (name, count) = (room.as_str(), limit(count));
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&name, &after, &count];
            let call = conn.client.query(&conn.after, &params);
            let rows = drive(&mut conn.connection, conn.fd, &conn.wants_write, self.parker, deadline, self.pg.timeout, call)
                .map_err(|e| classify(e, false))?;
            rows.iter().map(|row| to_message(room, row)).collect()
        })
    }
}
