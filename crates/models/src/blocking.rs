//! One connection served by straight-line blocking code, for every model that has a stack
//! per connection: `threads`, `pool`, `prefork` (an OS thread or process blocks) and
//! `green` (a coroutine "blocks" by yielding to its scheduler).
//!
//! The connection itself is the core's machine (`c10k_core::conn`); this is its driver for
//! a handler that owns a stack: write what the machine has, read what the socket has, and
//! sleep until one of them or the hub or a deadline can move it. What differs between the
//! models is hidden behind two small traits:
//! - [`Conn`]: the byte stream (a `TcpStream`, or a green stream over the same
//!   non-blocking socket), used in non-blocking mode;
//! - [`Wait`]: how the handler sleeps until the hub wakes it, its socket becomes ready,
//!   or a deadline passes (a `ppoll(2)` on the socket, woken by a signal, for OS threads; a
//!   yield for green threads).
//!
//! Both end in the same `std::task::Waker` the hub uses, so the application cannot tell
//! which model serves it.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use c10k_core::chat::{StoreCall, StoreDone};
use c10k_core::conn::Action;

use crate::common::{connection, now};
use crate::{Context, DbMode};

const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    /// The buffer every connection served on this thread reads into, handing the bytes
    /// to its machine at once (which keeps what it needs, and nothing while idle). One per
    /// thread rather than one per connection: a green thread's idle connection would
    /// otherwise keep 8 KiB of it resident, half of its whole cost. The OS-thread models
    /// have one connection per thread, so for them nothing changes.
    static READ_BUFFER: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_CHUNK].into());
}

/// A byte stream a blocking handler can drive.
pub(crate) trait Conn: Read + Write {
    /// The socket, for readiness waits.
    fn fd(&self) -> RawFd;
    /// In non-blocking mode, reads and writes that cannot proceed return `WouldBlock`.
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()>;
    /// Shuts down the sending side (a FIN after what was written).
    fn shutdown_write(&self) -> io::Result<()>;
    /// Where the client came from, if the kernel can say.
    fn peer(&self) -> Option<std::net::IpAddr>;
}

/// Which readiness of a socket to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Readable, or hung up.
    Read,
    /// Writable, or hung up.
    Write,
    /// Readable, writable, or hung up.
    ReadWrite,
}

/// Why a wait ended. Any of them may be spurious: re-check and wait again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The waker was woken.
    Waker,
    /// The socket is ready for the interest given.
    Ready,
    /// The deadline passed.
    Deadline,
}

/// How a blocking-style handler sleeps.
pub(crate) trait Wait {
    /// A waker that ends the current (or the next) wait.
    fn waker(&self) -> Waker;
    /// Sleeps until woken, until `socket` is ready, or until `deadline`.
    fn wait(&self, socket: Option<(RawFd, Interest)>, deadline: Option<Instant>) -> io::Result<Woke>;

    /// A cooperative scheduler's chance to run the others, between two steps of the
    /// driver (never while it holds the thread's read buffer). OS threads are preempted:
    /// the default does nothing.
    fn pause(&self) {}

    /// Says what the handler is serving now (a request's method and path), for a model
    /// that reports handlers holding a shared thread too long (`green`'s watchdog). The
    /// OS-thread models have nothing to report: the default ignores it.
    fn doing(&self, _what: std::fmt::Arguments<'_>) {}

    /// Adds a note to [`Wait::doing`] until the next request (an inline store call).
    fn doing_also(&self, _note: &'static str) {}

    /// `--db-mode native`: what this way of waiting does with a store call. The OS-thread
    /// models' default is the blocking driver on the connection's own thread.
    fn run_native(&self, call: StoreCall, store: &dyn c10k_core::store::Store) -> NativeRun {
        self.doing_also(" (store call on the connection's own thread)");
        NativeRun::Done(call.run(store))
    }
}

/// What [`Wait::run_native`] did with a store call.
pub(crate) enum NativeRun {
    /// Ran it to the end.
    Done(StoreDone),
    /// Stored and published it; telling the other workers may block: not on this thread.
    Announce(c10k_core::chat::Stored),
    /// It has no native form here: run it on the offload pool.
    Offload(StoreCall),
}

impl Conn for std::net::TcpStream {
    fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, nonblocking)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    fn peer(&self) -> Option<std::net::IpAddr> {
        self.peer_addr().ok().map(|address| address.ip())
    }
}

/// One global lock around all application handling (`--giant-lock`): the GIL, or FreeBSD
/// 4's "giant" kernel lock. Present only to measure what it costs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Giant(Option<Arc<Mutex<()>>>);

impl Giant {
    /// A giant lock if `enabled`, else a no-op.
    pub(crate) fn new(enabled: bool) -> Giant {
        Giant(enabled.then(|| Arc::new(Mutex::new(()))))
    }

    fn hold(&self) -> Option<MutexGuard<'_, ()>> {
        self.0.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Serves one connection until it closes. Never panics on peer input.
///
/// When the process is told to stop, the connection learns it the next time it is about
/// to sleep (so that what the client already sent is read and answered first), through a
/// shutdown subscription woken with this handler's own waker; from then on it drains
/// (`Connection::handle_shutdown`), and is dropped if it is still open at the drain
/// deadline.
pub(crate) fn serve_connection<C: Conn, W: Wait>(
    mut conn: C,
    queued_since: Option<Instant>,
    wait: &W,
    context: &Context,
    giant: &Giant,
) -> io::Result<()> {
    conn.set_nonblocking(true)?;
    let mut machine = connection(&context.app, wait.waker(), conn.peer());
    if let Some(accepted) = queued_since {
        machine = machine.queued_since(accepted);
    }
    let stop = context.shutdown.subscribe(&wait.waker());
    let mut drain_deadline = None;
    // What the way of waiting was last told this connection serves (see `Wait::doing`).
    let mut described = String::new();
    loop {
        wait.pause();
        while let Some(action) = machine.poll_action() {
            match action {
                Action::Store(call) => {
                    let done = run_store(call, wait, context)?;
                    let _giant = giant.hold();
                    match done {
                        Some(done) => machine.handle_store_done(done, now()),
                        None => machine.handle_store_busy(now()),
                    }
                }
                Action::ShutdownWrite => {
                    let _ = conn.shutdown_write();
                }
                Action::Close => return Ok(()),
            }
        }
        let mut wrote = false;
        loop {
            let pending = machine.transmit(Instant::now());
            if pending.is_empty() {
                break;
            }
            match conn.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let _giant = giant.hold();
                    machine.consume(n);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if wrote {
            continue; // a flush may finish a close sequence, or unblock a stalled stream
        }
        let interest = machine.interest();
        if interest.read {
            // The read does not park (the socket is non-blocking), and the machine copies
            // what it keeps, so the thread's buffer is held for the two calls only.
            let read = READ_BUFFER.with(|buf| {
                let mut buf = buf.borrow_mut();
                let n = conn.read(&mut buf)?;
                let _giant = giant.hold();
                if n == 0 {
                    machine.handle_eof(now());
                } else {
                    machine.handle_bytes(&buf[..n], now());
                }
                Ok::<_, io::Error>(())
            });
            match read {
                Ok(()) => {
                    // Told on a new request only: a read that brings no request (the
                    // client's FIN after an inline store call) must not wipe the note that
                    // the watchdog reports for the callback that just ran.
                    if machine.serving() != described {
                        described.clear();
                        described.push_str(machine.serving());
                        wait.doing(format_args!("{described}"));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if drain_deadline.is_none() && stop.is_triggered() {
            let _giant = giant.hold();
            machine.handle_shutdown(now());
            drain_deadline = Some(context.shutdown.drain_deadline().unwrap_or_else(Instant::now));
            continue;
        }
        let socket = match (interest.read, interest.write) {
            (true, true) => Some(Interest::ReadWrite),
            (true, false) => Some(Interest::Read),
            (false, true) => Some(Interest::Write),
            (false, false) => None,
        };
        let deadline = match (machine.poll_timeout(), drain_deadline) {
            (Some(at), Some(drain)) => Some(at.min(drain)),
            (at, drain) => at.or(drain),
        };
        match wait.wait(socket.map(|interest| (conn.fd(), interest)), deadline)? {
            Woke::Waker => {
                let _giant = giant.hold();
                machine.handle_wake(now());
            }
            Woke::Deadline if drain_deadline.is_some_and(|drain| Instant::now() >= drain) => {
                // The hard deadline of the drain: the client resumes from its cursor.
                return Ok(());
            }
            Woke::Deadline => {
                let _giant = giant.hold();
                machine.handle_timeout(now());
            }
            Woke::Ready => {}
        }
    }
}

/// Runs a store call where `--db-mode` says: inline, natively ([`Wait::run_native`]), or
/// on the offload pool while this handler sleeps until the pool's job wakes it. `None`
/// when the offload queue is full.
fn run_store<W: Wait>(call: StoreCall, wait: &W, context: &Context) -> io::Result<Option<StoreDone>> {
    let job: Box<dyn FnOnce() -> StoreDone + Send> = match context.db_mode {
        DbMode::Inline => {
            wait.doing_also(" (store call inline, on the serving thread)");
            return Ok(Some(call.run(&*context.store)));
        }
        DbMode::Native => match wait.run_native(call, &*context.store) {
            NativeRun::Done(done) => return Ok(Some(done)),
            NativeRun::Announce(stored) => Box::new(move || stored.announce()),
            NativeRun::Offload(call) => {
                let store = Arc::clone(&context.store);
                Box::new(move || call.run(&*store))
            }
        },
        DbMode::Offload => {
            let store = Arc::clone(&context.store);
            Box::new(move || call.run(&*store))
        }
    };
    offload(job, wait, context)
}

/// Runs `job` on the offload pool while this handler sleeps until the job wakes it.
/// `None` when the pool's queue is full.
fn offload<W: Wait>(job: Box<dyn FnOnce() -> StoreDone + Send>, wait: &W, context: &Context) -> io::Result<Option<StoreDone>> {
    let slot: Arc<Mutex<Option<StoreDone>>> = Arc::default();
    let waker = wait.waker();
    let job = {
        let slot = Arc::clone(&slot);
        Box::new(move || {
            let done = job();
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
            waker.wake();
        })
    };
    if context.offload.submit(job).is_err() {
        return Ok(None);
    }
    loop {
        if let Some(done) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Ok(Some(done));
        }
        // Only the pool's waker can end this wait; the client's bytes wait meanwhile.
        wait.wait(None, None)?;
    }
}
