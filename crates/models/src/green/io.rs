//! The cooperative socket and sleep: gevent's monkey patching, done with traits.
//!
//! [`GreenStream`] implements `std::io::Read` and `Write` over a non-blocking socket, in
//! may's shape (`socket_read.rs`): try the system call; on `WouldBlock`, park the coroutine
//! on the socket's readiness (and the read deadline) and retry when resumed. Code written
//! for a blocking `TcpStream` (the connection driver in `blocking.rs`, tungstenite, the
//! store calls) therefore runs on it unchanged, and "blocks" only its own coroutine. In
//! non-blocking mode (the WebSocket phase) it returns `WouldBlock` like any non-blocking
//! socket, and the driver parks through [`GreenWait`] instead.
//!
//! [`GreenWait`] is the driver's sleep: park on (optionally) the socket, a deadline, and
//! the coroutine's waker, and say which of them ended the park.
//!
//! **Fairness.** A coroutine whose socket operations never block (a client that pipelines
//! without pause) must still let the others run: after 64 operations in a row without a
//! park it yields for one tick. In blocking mode that yield happens inside the operation;
//! in non-blocking mode (the driver's) it waits for the driver's next [`Wait::pause`],
//! because the driver reads into one buffer shared by every coroutine of the thread and
//! must not be parked while it holds it.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use c10k_core::chat::StoreCall;
use c10k_store::{CooperativePostgres, Parker};

use super::scheduler::{Fiber, Park, Resumed};
use crate::blocking::{self, Conn, NativeRun, Wait, Woke};
use crate::event::Interest;

/// A socket whose blocking operations park the calling coroutine instead of the thread.
/// The socket itself is always in `O_NONBLOCK` mode.
pub(crate) struct GreenStream<'f, S> {
    socket: Rc<S>,
    fiber: &'f Fiber<'f>,
    nonblocking: bool,
}

impl<'f, S> GreenStream<'f, S>
where
    S: AsRawFd,
    for<'s> &'s S: Read + Write,
{
    /// A stream over `socket` (already non-blocking) for the coroutine of `fiber`.
    pub(crate) fn new(socket: Rc<S>, fiber: &'f Fiber<'f>) -> GreenStream<'f, S> {
        debug_assert_eq!(socket.as_raw_fd(), fiber.fd(), "a coroutine parks on its own socket only");
        GreenStream { socket, fiber, nonblocking: false }
    }

    /// Runs `op` until it does not return `WouldBlock` (or, in non-blocking mode, once),
    /// parking on `interest` in between. `deadline` bounds the parking (reads only).
    fn cooperate<T>(
        &mut self,
        interest: Interest,
        deadline: Option<Instant>,
        mut op: impl FnMut(&S) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            match op(&self.socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.nonblocking {
                        return Err(e);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    // Ready, deadline or a stray wake-up: the retry (and the deadline check
                    // above) decides what it meant.
                    self.fiber.park(Park { socket: interest, other: None, deadline, wakeable: false });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result if self.nonblocking => {
                    // The driver may be reading into its thread's shared buffer: no park
                    // here; it yields between steps ([`Wait::pause`]).
                    self.fiber.count();
                    return result;
                }
                result => {
                    self.fiber.spend();
                    return result;
                }
            }
        }
    }
}

impl<S> Read for GreenStream<'_, S>
where
    S: AsRawFd,
    for<'s> &'s S: Read + Write,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Deadlines are the driver's (it parks with the machine's), so none here.
        self.cooperate(Interest::READABLE, None, |mut socket| socket.read(buf))
    }
}

impl<S> Write for GreenStream<'_, S>
where
    S: AsRawFd,
    for<'s> &'s S: Read + Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // No write deadline, as for the OS-thread models' blocking sockets: a client that
        // stops reading holds only its own coroutine (and its memory) until it hangs up.
        self.cooperate(Interest::WRITABLE, None, |mut socket| socket.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered here
    }
}

impl<S> Conn for GreenStream<'_, S>
where
    S: AsRawFd + std::os::fd::AsFd,
    for<'s> &'s S: Read + Write,
{
    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        // The socket never leaves O_NONBLOCK; only what WouldBlock means to the caller changes.
        self.nonblocking = nonblocking;
        Ok(())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write)
    }

    fn peer(&self) -> Option<std::net::IpAddr> {
        crate::common::peer_of(&*self.socket)
    }
}

/// How the driver sleeps on a coroutine: a park on the socket, a deadline and the waker.
pub(crate) struct GreenWait<'f> {
    fiber: &'f Fiber<'f>,
    /// The loop's PostgreSQL driver for `--db-mode native`.
    native: Option<Rc<CooperativePostgres>>,
}

impl<'f> GreenWait<'f> {
    /// The sleep of the coroutine of `fiber`.
    pub(crate) fn new(fiber: &'f Fiber<'f>) -> GreenWait<'f> {
        GreenWait { fiber, native: None }
    }

    /// With the loop's database driver for `--db-mode native`.
    pub(crate) fn with_native(mut self, native: Option<Rc<CooperativePostgres>>) -> GreenWait<'f> {
        self.native = native;
        self
    }
}

/// The database driver's way to wait inside a coroutine: park on the driver's socket
/// (registered with the loop for the length of the park), or yield once.
struct FiberParker<'f>(&'f Fiber<'f>);

impl Parker for FiberParker<'_> {
    fn park(&self, fd: RawFd, writable: bool, deadline: Instant) {
        let interest = if writable { Interest::BOTH } else { Interest::READABLE };
        self.0.park(Park::other(fd, interest, deadline));
    }

    fn yield_now(&self) {
        self.0.park(Park::yield_now());
    }
}

impl Wait for GreenWait<'_> {
    fn waker(&self) -> Waker {
        self.fiber.waker().clone()
    }

    fn wait(&self, socket: Option<(RawFd, blocking::Interest)>, deadline: Option<Instant>) -> io::Result<Woke> {
        let interest = match socket {
            None => Interest::NONE,
            Some((fd, _)) if fd != self.fiber.fd() => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("a green thread can wait on its own socket only, not on fd {fd}"),
                ))
            }
            Some((_, blocking::Interest::Read)) => Interest::READABLE,
            Some((_, blocking::Interest::Write)) => Interest::WRITABLE,
            Some((_, blocking::Interest::ReadWrite)) => Interest::BOTH,
        };
        Ok(match self.fiber.park(Park { socket: interest, other: None, deadline, wakeable: true }) {
            Resumed::Ready => Woke::Ready,
            Resumed::Deadline => Woke::Deadline,
            Resumed::Woken => Woke::Waker,
        })
    }

    fn pause(&self) {
        self.fiber.yield_if_spent();
    }

    fn doing(&self, what: std::fmt::Arguments<'_>) {
        self.fiber.doing().set(what);
    }

    fn doing_also(&self, note: &'static str) {
        self.fiber.doing().note(note);
    }

    /// gevent's answer: the coroutine drives its own database connection over a
    /// non-blocking socket and parks on it; the loop serves the others meanwhile.
    fn run_native(&self, call: StoreCall, _store: &dyn c10k_core::store::Store) -> NativeRun {
        let Some(pg) = &self.native else { return NativeRun::Offload(call) };
        self.doing_also(" (store call on the coroutine's own database connection)");
        let parker = FiberParker(self.fiber);
        let local = pg.on(&parker);
        match call.run_local(&local) {
            Ok(stored) if stored.announce_may_block() => NativeRun::Announce(stored),
            Ok(stored) => NativeRun::Done(stored.announce()),
            // A ledger operation (locks, transactions) has no coroutine form.
            Err(call) => NativeRun::Offload(call),
        }
    }
}
