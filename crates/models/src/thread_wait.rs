//! How an OS thread sleeps in the blocking models: `ppoll(2)` on its socket, woken by a
//! signal sent to that one thread.
//!
//! The kernel wakes the thread when its socket becomes ready (so a long-poll client that
//! hangs up is noticed at once) or when the deadline passes; the hub wakes it by setting
//! a flag and sending [`WAKE_SIGNAL`] to the thread with `pthread_kill`. The signal stays
//! blocked in the thread except inside `ppoll`, which unblocks it atomically for the
//! duration of the sleep: a wake-up sent before the thread goes to sleep stays pending and
//! ends the `ppoll` at once (`EINTR`), so none is lost. This is the classic race-free
//! "wait for a descriptor or a signal" of `pselect(2)`'s rationale.
//!
//! Why not an eventfd per thread (the first design): it costs a second descriptor per
//! connection, so a process stopped near 10,000 connections under the 20,000 open-files
//! limit, and a thread that could not get its eventfd dropped its client (lost long-poll
//! deliveries at 10,000 subscribers). A signal costs no descriptor at all.
//!
//! Why `SIGURG`: its default action is to be ignored, so a stray one harms no one, and no
//! other part of c10k uses it (Go's runtime picked it for its goroutine preemption for the
//! same reasons). The handler does nothing: interrupting `ppoll` is its whole job.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Wake, Waker};
use std::time::Instant;

use crate::blocking::{Interest, Wait, Woke};
use crate::sys::syscall;

/// The signal that wakes a sleeping thread.
const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

extern "C" fn on_wake_signal(_signal: libc::c_int) {
    // Nothing to do: the signal's delivery has already ended the thread's ppoll.
}

/// Installs the do-nothing handler once per process (a handler, not SIG_IGN: an ignored
/// signal would not interrupt `ppoll`).
fn install_handler() -> io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // SAFETY: sigaction is plain data, zeroed then filled; sa_mask is emptied by
        // sigemptyset before use.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_wake_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid, exclusively borrowed sigset_t.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is initialised; a null old-action pointer is allowed.
        result = syscall!(sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut())).map(drop);
    });
    result
}

/// What a waker shares with its thread.
struct Doorbell {
    /// Set by a wake-up, cleared by the thread when it sees it.
    rung: AtomicBool,
    /// The thread to signal; `None` once it stopped waiting (its `ThreadWait` dropped), so
    /// a late wake-up never signals a thread id that may have been reused. The lock is
    /// held across `pthread_kill`, so the thread cannot finish in the middle of one.
    thread: Mutex<Option<libc::pthread_t>>,
}

impl Wake for Doorbell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A bell already rung and not yet seen needs no second signal.
        if self.rung.swap(true, Ordering::AcqRel) {
            return;
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(thread) = *thread {
            // SAFETY: `thread` is a live thread: it clears this field (under the same lock)
            // before it stops waiting. ESRCH cannot happen; any error is ignored, the flag
            // is set and the thread sees it before its next sleep.
            unsafe { libc::pthread_kill(thread, WAKE_SIGNAL) };
        }
    }
}

/// The [`Wait`] of one OS thread: made on the thread that waits, and never sent to another
/// (`!Send`), since the signal goes to the thread that made it.
pub(crate) struct ThreadWait {
    doorbell: Arc<Doorbell>,
    waker: Waker,
    /// The thread's signal mask from before, restored on drop.
    old_mask: libc::sigset_t,
    /// The mask `ppoll` sleeps with: the old one without [`WAKE_SIGNAL`].
    sleep_mask: libc::sigset_t,
    _not_send: PhantomData<*const ()>,
}

impl ThreadWait {
    /// A doorbell for the calling thread. Blocks [`WAKE_SIGNAL`] in this thread until the
    /// returned value is dropped.
    pub(crate) fn new() -> io::Result<ThreadWait> {
        install_handler()?;
        // SAFETY: sigset_t is plain data, initialised by sigemptyset/pthread_sigmask
        // before it is read.
        let mut block: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid and exclusively borrowed.
        let rc = unsafe {
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, WAKE_SIGNAL);
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old_mask)
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let mut sleep_mask = old_mask;
        // SAFETY: `sleep_mask` is an initialised sigset_t (a copy of the old mask).
        unsafe { libc::sigdelset(&mut sleep_mask, WAKE_SIGNAL) };
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let doorbell = Arc::new(Doorbell { rung: AtomicBool::new(false), thread: Mutex::new(Some(me)) });
        let waker = Waker::from(Arc::clone(&doorbell));
        Ok(ThreadWait { doorbell, waker, old_mask, sleep_mask, _not_send: PhantomData })
    }
}

impl Drop for ThreadWait {
    fn drop(&mut self) {
        *self.doorbell.thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // A wake-up sent just before this point may be pending: unblocking runs the empty
        // handler for it, which is harmless.
        // SAFETY: `old_mask` is the initialised mask saved by `new`, on this same thread
        // (ThreadWait is !Send).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// `deadline` as the relative timeout `ppoll` takes; `None` waits forever.
fn timeout_until(deadline: Instant) -> libc::timespec {
    let left = deadline.saturating_duration_since(Instant::now());
    libc::timespec {
        tv_sec: left.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: left.subsec_nanos() as libc::c_long,
    }
}

impl Wait for ThreadWait {
    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn wait(&self, socket: Option<(RawFd, Interest)>, deadline: Option<Instant>) -> io::Result<Woke> {
        if self.doorbell.rung.swap(false, Ordering::AcqRel) {
            return Ok(Woke::Waker);
        }
        let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }];
        if let Some((fd, interest)) = socket {
            fds[0].fd = fd;
            fds[0].events = match interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
                Interest::ReadWrite => libc::POLLIN | libc::POLLOUT,
            };
        }
        let timeout = deadline.map(timeout_until);
        let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a live array of one pollfd (ignored when its fd is -1),
        // `timeout_ptr` is null or points at a live timespec, and `sleep_mask` is an
        // initialised sigset_t; all outlive the call.
        match syscall!(ppoll(fds.as_mut_ptr(), 1, timeout_ptr, &self.sleep_mask)) {
            // A signal (ours, or the harmless pending one of an earlier wake-up): the
            // caller re-checks what it waits for, so a spurious Waker is fine.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.doorbell.rung.swap(false, Ordering::AcqRel);
                Ok(Woke::Waker)
            }
            Err(e) => Err(e),
            Ok(0) if self.doorbell.rung.swap(false, Ordering::AcqRel) => Ok(Woke::Waker),
            Ok(0) => Ok(Woke::Deadline),
            Ok(_) => Ok(Woke::Ready),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_wake_before_the_wait_is_not_lost() {
        let wait = ThreadWait::new().unwrap();
        wait.waker().wake();
        // No deadline: if the wake-up were lost this would hang, and the test harness's
        // timeout would report it.
        assert_eq!(wait.wait(None, None).unwrap(), Woke::Waker);
    }

    #[test]
    fn a_wake_from_another_thread_ends_an_endless_wait() {
        let wait = ThreadWait::new().unwrap();
        let (tx, rx) = mpsc::channel();
        tx.send(wait.waker()).unwrap();
        let other = std::thread::spawn(move || rx.recv().unwrap().wake());
        let mut woke = wait.wait(None, None).unwrap();
        // A spurious Waker is allowed by the contract; the real one must end the loop.
        while woke != Woke::Waker {
            woke = wait.wait(None, None).unwrap();
        }
        other.join().unwrap();
    }

    #[test]
    fn a_ready_socket_and_a_passed_deadline_are_told_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let wait = ThreadWait::new().unwrap();
        let fd = server.as_raw_fd();
        assert_eq!(wait.wait(Some((fd, Interest::Read)), Some(Instant::now())).unwrap(), Woke::Deadline);
        drop(client); // a hang-up is readiness
        assert_eq!(wait.wait(Some((fd, Interest::Read)), Some(Instant::now() + Duration::from_secs(60))).unwrap(), Woke::Ready);
    }

    #[test]
    fn a_late_wake_after_the_thread_moved_on_is_harmless() {
        let waker = std::thread::spawn(|| ThreadWait::new().unwrap().waker()).join().unwrap();
        // The thread is gone: the waker must not signal its (possibly reused) id.
        waker.wake();
    }

    #[test]
    fn the_wake_signal_is_blocked_only_while_a_thread_wait_lives() {
        fn blocked() -> bool {
            let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) };
            unsafe { libc::sigismember(&mask, WAKE_SIGNAL) == 1 }
        }
        assert!(!blocked());
        let wait = ThreadWait::new().unwrap();
        assert!(blocked());
        drop(wait);
        assert!(!blocked());
    }
}
