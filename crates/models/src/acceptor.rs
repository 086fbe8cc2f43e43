//! The accept loop of the blocking models (`threads`, `pool`, `prefork` workers).
//!
//! One thread waits for the listener to become readable or the shutdown to fire, accepts,
//! takes a connection slot (or answers 503 at the cap), and hands the stream on.
//!
//! Also here, for every model: [`refuse`], and the reserve descriptor that lets a process
//! out of file descriptors still answer 503 ([`refuse_with_reserve`]). When even that
//! fails, the accept loops pause instead of spinning on a listener that stays readable.

use std::fs::File;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use c10k_core::chat::App;
use c10k_core::http::{Encoding, Response};
use tracing::{debug, info, warn};

use crate::blocking::{Interest, Wait};
use crate::common::{date, is_fd_exhaustion, tagged, ConnectionSlot, Open};
use crate::sys::syscall;
use crate::thread_wait::ThreadWait;
use crate::Context;

/// Accepts until shutdown, calling `hand_off` with each stream and its slot; then closes
/// the listener and waits for the connections handed off to end (they drain, each on its
/// own thread), or for the drain deadline.
pub(crate) fn accept_loop(
    listener: TcpListener,
    context: &Context,
    mut hand_off: impl FnMut(TcpStream, ConnectionSlot),
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    keep_reserve_descriptor();
    let wait = ThreadWait::new()?;
    let waker = wait.waker();
    let open = Arc::new(Open::default());
    loop {
        if context.shutdown.poll(&waker).is_ready() {
            drop(listener);
            wait_drained(&open, &wait, context);
            return Ok(());
        }
        match listener.accept() {
            Ok((stream, _peer)) => {
                // Accepted sockets do not inherit O_NONBLOCK on Linux, but be explicit.
                stream.set_nonblocking(false)?;
                let _ = stream.set_nodelay(true);
                match ConnectionSlot::take(&open, &context.app) {
                    Some(slot) => hand_off(stream, slot),
                    None => refuse(stream, &context.app.busy("too many connections; try again shortly")),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait.wait(Some((listener.as_raw_fd(), Interest::Read)), None)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_fd_exhaustion(&e) => match refuse_with_reserve(listener.as_raw_fd(), &context.app) {
                Reserve::Refused => {}
                Reserve::Drained => wait.wait(Some((listener.as_raw_fd(), Interest::Read)), None).map(drop)?,
                Reserve::Unavailable => {
                    warn!("accept: {e}; pausing accepts for 100 ms (raise the file limit or lower --max-connections)");
                    wait.wait(None, Some(Instant::now() + Duration::from_millis(100)))?;
                }
            },
            Err(e) => debug!("accept: {e}"),
        }
    }
}

/// Waits until `open` has no connection left or the drain deadline passes.
fn wait_drained(open: &Open, wait: &ThreadWait, context: &Context) {
    let deadline = context.shutdown.drain_deadline().unwrap_or_else(Instant::now);
    info!(open = open.count(), "stopped accepting; draining the open connections");
    while open.poll_empty(&wait.waker()).is_pending() {
        if Instant::now() >= deadline {
            warn!(open = open.count(), "the drain deadline passed; closing the connections still open");
            return;
        }
        if let Err(e) = wait.wait(None, Some(deadline)) {
            warn!("cannot wait for the connections to drain: {e}");
            return;
        }
    }
    info!("every connection has drained");
}

/// Writes a short response to a connection that will not be served, without blocking the
/// caller (a fresh socket's send buffer always has room for it), and closes it.
pub(crate) fn refuse(stream: TcpStream, response: &Response) {
    let mut out = Vec::new();
    tagged(response).encode(&Encoding { keep_alive: false, head_only: false, http10: false, date: &date() }, &mut out);
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&out);
}

/// A descriptor kept open in reserve (on `/dev/null`), one per process: when `accept`
/// fails for want of descriptors (EMFILE), it is closed, a waiting connection accepted in
/// its place, answered 503 and closed, and the reserve opened again. This is libev's and
/// libuv's "EMFILE trick": without it, the connections queued in the backlog would wait
/// unanswered until some descriptor frees up, and their clients could not tell a full
/// server from a dead one.
static RESERVE: Mutex<Option<File>> = Mutex::new(None);

/// Opens the reserve descriptor (once per process; later calls keep the one there is).
/// Called by every model before it accepts.
pub(crate) fn keep_reserve_descriptor() {
    let mut reserve = RESERVE.lock().unwrap_or_else(|p| p.into_inner());
    if reserve.is_none() {
        match File::open("/dev/null") {
            Ok(file) => *reserve = Some(file),
            Err(e) => warn!("cannot keep a reserve descriptor: {e}; out of descriptors, accepts will pause, not answer 503"),
        }
    }
}

/// What [`refuse_with_reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// A waiting connection was answered 503 and closed; there may be more.
    Refused,
    /// No connection was waiting: wait for the listener again.
    Drained,
    /// No reserve to spend (not opened, or taken back by another thread's file): pause.
    Unavailable,
}

/// Out of descriptors: answers one waiting connection on `listener` with 503, using the
/// reserve descriptor (see [`RESERVE`]).
pub(crate) fn refuse_with_reserve(listener: RawFd, app: &App) -> Reserve {
    let mut reserve = RESERVE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(spare) = reserve.take() else { return Reserve::Unavailable };
    drop(spare);
    // SAFETY: accept4 takes the listener's descriptor and null address pointers (the peer
    // address is not wanted); it returns a new descriptor or -1.
    let accepted = syscall!(accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC));
    let outcome = match accepted {
        Ok(fd) => {
            // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
            let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            app.metrics().connections_accepted.inc();
            app.metrics().connections_refused.inc();
            refuse(stream, &app.busy("out of file descriptors; try again shortly"));
            Reserve::Refused
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Reserve::Drained,
        Err(e) => {
            debug!("accept with the reserve descriptor: {e}");
            Reserve::Unavailable
        }
    };
    // The descriptor just closed is the lowest free one: reopening takes it back, unless
    // another thread's open got it first (then the next exhaustion pauses instead).
    *reserve = File::open("/dev/null").ok();
    if reserve.is_none() && outcome == Reserve::Refused {
        return Reserve::Unavailable;
    }
    outcome
}
