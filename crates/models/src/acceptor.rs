//! The accept loop of the blocking models (`threads`, `pool`, `prefork` workers).
//!
//! One thread waits for the listener to become readable or the shutdown to fire, accepts,
//! takes a connection slot (or answers 503 at the cap), and hands the stream on. When the
//! process runs out of file descriptors it pauses instead of spinning on a listener that
//! stays readable.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_core::http::{Encoding, Response};
use tracing::{debug, warn};

use crate::blocking::{Interest, Wait};
use crate::common::{date, is_fd_exhaustion, tagged, ConnectionSlot};
use crate::thread_wait::ThreadWait;
use crate::Context;

/// Accepts until shutdown, calling `hand_off` with each stream and its slot.
pub(crate) fn accept_loop(
    listener: &TcpListener,
    context: &Context,
    mut hand_off: impl FnMut(TcpStream, ConnectionSlot),
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let wait = ThreadWait::new()?;
    let waker = wait.waker();
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        if context.shutdown.poll(&waker).is_ready() {
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
            Err(e) if is_fd_exhaustion(&e) => {
                warn!("accept: {e}; pausing accepts for 100 ms (raise the file limit or lower --max-connections)");
                wait.wait(None, Some(Instant::now() + Duration::from_millis(100)))?;
            }
            Err(e) => debug!("accept: {e}"),
        }
    }
}

/// Writes a short response to a connection that will not be served, without blocking the
/// caller (a fresh socket's send buffer always has room for it), and closes it.
pub(crate) fn refuse(stream: TcpStream, response: &Response) {
    let mut out = Vec::new();
    tagged(response).encode(&Encoding { keep_alive: false, head_only: false, http10: false, date: &date() }, &mut out);
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&out);
}
