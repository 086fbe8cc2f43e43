//! The worker side of prefork: what a child does right after `fork`, and the prefork
//! model's serving loop (blocking accept, one connection, accept again).

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::acceptor::refuse;
use crate::blocking::{serve_connection, Giant};
use crate::common::{is_fd_exhaustion, set_worker_tag, ConnectionSlot, Open};
use crate::sys::syscall;
use crate::thread_wait::ThreadWait;
use crate::Context;

/// Runs first in every child, before it starts any thread.
///
/// 1. Ask the kernel for SIGTERM when the master dies, then check it has not died
///    already (between `fork` and `prctl`), in which case nobody would send it.
/// 2. Unblock SIGCHLD, which the master blocked for its signalfd. SIGTERM and SIGINT stay
///    blocked: the worker's signal thread (`signals::forward_to` in the binary) waits for
///    them with `sigwait`, and one arriving before that thread exists stays pending
///    rather than killing the worker half-started. SIGHUP stays blocked too: reloading is
///    the master's business (a terminal hang-up reaches the whole process group).
/// 3. Tag every response with this process's id.
pub(super) fn after_fork(master: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes the signal number as an unsigned long and
    // reads no memory.
    syscall!(prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong))?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != master {
        return Err(io::Error::other("the master exited while this worker was starting"));
    }
    let mut unblock = empty_sigset();
    // SAFETY: `unblock` is an initialised sigset_t, exclusively borrowed.
    unsafe { libc::sigaddset(&mut unblock, libc::SIGCHLD) };
    // SAFETY: `unblock` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    set_worker_tag(std::process::id());
    Ok(())
}

/// An empty signal set.
pub(super) fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    set
}

/// Where the prefork worker is, for the stop signal: it cannot interrupt a blocking
/// `accept`, so it exits the process itself when the worker waits there, and otherwise
/// leaves the connection to drain (see [`serve`]).
#[derive(Debug, Default)]
struct Phase(AtomicU8);

/// In `accept`: nothing to lose.
const ACCEPTING: u8 = 0;
/// Serving one connection: it drains, then the worker returns.
const SERVING: u8 = 1;
/// The stop came while accepting: the process is exiting.
const EXITING: u8 = 2;

/// Woken by the stop signal (on the signal thread).
struct ExitWhenAccepting(Arc<Phase>);

impl Wake for ExitWhenAccepting {
    fn wake(self: Arc<Self>) {
        if self.0 .0.compare_exchange(ACCEPTING, EXITING, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            info!("prefork worker stopping (it was waiting in accept)");
            // SAFETY: _exit may be called from any thread at any time. It runs no
            // destructors and no atexit handlers, so no other thread's half-done work is
            // unwound under it; the worker holds no connection (it is in accept), the
            // kernel closes the listener's copy, and the store's file is crash-safe.
            unsafe { libc::_exit(0) }
        }
        // Serving: the connection's own shutdown subscription has woken it too, and it
        // drains; the loop in `serve` sees the stop once it is done.
    }
}

/// The prefork worker: blocking `accept`, serve that one connection to its end, repeat.
///
/// **Stopping.** A blocking `accept` cannot be woken, and the listener is shared with the
/// other workers (and with the next generation after a SIGHUP), so it must not be shut
/// down either. So the stop is taken where the worker is: a [`Phase`] says whether it is
/// accepting or serving, and the stop signal's waker exits the process at once when it is
/// accepting (nothing is lost: no connection is held); when it is serving, the
/// connection drains like any other model's (`Connection::handle_shutdown`, through the
/// connection's subscription) and this returns as soon as it ends, or at the drain
/// deadline. The phase is switched with compare-and-swap, and the stop flag is set before
/// any waker runs, so a worker that finishes its connection just as the signal arrives
/// either sees the flag or is exited by the waker: never both missed.
pub(super) fn serve(listener: TcpListener, context: Context) -> io::Result<()> {
    // O_NONBLOCK belongs to the open socket shared by every worker; all of them run this
    // model, so all of them want it off.
    listener.set_nonblocking(false)?;
    let phase = Arc::new(Phase::default());
    if context.shutdown.poll(&Waker::from(Arc::new(ExitWhenAccepting(Arc::clone(&phase))))).is_ready() {
        return Ok(());
    }
    let wait = ThreadWait::new()?;
    let giant = Giant::new(false);
    let open = Arc::new(Open::default());
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                if phase.0.compare_exchange(ACCEPTING, SERVING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                    return Ok(()); // the waker is exiting the process
                }
                let _ = stream.set_nodelay(true);
                match ConnectionSlot::take(&open, &context.app) {
                    Some(slot) => {
                        if let Err(e) = serve_connection(stream, None, &wait, &context, &giant) {
                            debug!("connection ended: {e}");
                        }
                        drop(slot);
                    }
                    None => refuse(stream, &context.app.busy("too many connections; try again shortly")),
                }
                phase.0.store(ACCEPTING, Ordering::SeqCst);
                if context.shutdown.is_triggered() {
                    info!("prefork worker stopping (its connection has drained)");
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_fd_exhaustion(&e) => {
                warn!("accept: {e}; pausing accepts for 100 ms (raise the file limit)");
                // Nothing else runs on this thread: sleeping is the whole of waiting here.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => debug!("accept: {e}"),
        }
    }
}
