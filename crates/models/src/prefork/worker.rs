//! The worker side of prefork: what a child does right after `fork`, and the prefork
//! model's serving loop (blocking accept, one connection, accept again).

use std::io;
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::acceptor::refuse;
use crate::blocking::{serve_connection, Giant};
use crate::common::{is_fd_exhaustion, set_worker_tag, ConnectionSlot};
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

/// Ends the process when the stop signal fires (see "Stopping" in `mod.rs`).
struct ExitAtOnce;

impl Wake for ExitAtOnce {
    fn wake(self: Arc<Self>) {
        info!("prefork worker stopping");
        // SAFETY: _exit may be called from any thread at any time. It runs no destructors
        // and no atexit handlers, so no other thread's half-done work is unwound under
        // it; the kernel closes the sockets, and the store's file is crash-safe.
        unsafe { libc::_exit(0) }
    }
}

/// The prefork worker: blocking `accept`, serve that one connection to its end, repeat.
/// Returns only if the stop signal had fired before it started.
pub(super) fn serve(listener: TcpListener, context: Context) -> io::Result<()> {
    // O_NONBLOCK belongs to the open socket shared by every worker; all of them run this
    // model, so all of them want it off.
    listener.set_nonblocking(false)?;
    if context.shutdown.poll(&Waker::from(Arc::new(ExitAtOnce))).is_ready() {
        return Ok(());
    }
    let wait = ThreadWait::new()?;
    let giant = Giant::new(false);
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                match ConnectionSlot::take(&open, &context.app) {
                    Some(slot) => {
                        if let Err(e) = serve_connection(stream, &wait, &context, &giant) {
                            debug!("connection ended: {e}");
                        }
                        drop(slot);
                    }
                    None => refuse(stream, &context.app.busy("too many connections; try again shortly")),
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
