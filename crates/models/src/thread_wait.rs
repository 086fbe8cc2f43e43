//! How an OS thread sleeps in the blocking models: `poll(2)` on its socket and an eventfd.
//!
//! The hub wakes a waiting thread by ringing its eventfd; the kernel wakes it when its
//! socket becomes ready (so a long-poll client that hangs up is noticed at once) or when
//! the deadline passes. One eventfd per thread, made the first time the thread waits and
//! kept for its life, so short requests that never wait cost nothing extra.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Instant;

use crate::blocking::{Interest, Wait, Woke};
use crate::sys::{poll_timeout_ms, syscall, EventFd};

struct Bell(EventFd);

impl Wake for Bell {
    fn wake(self: Arc<Self>) {
        self.0.ring();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.ring();
    }
}

/// The [`Wait`] of one OS thread. Not shared between threads: each makes its own.
pub(crate) struct ThreadWait {
    // The waker holds the eventfd alive (an `Arc`), so a late wake after this thread has
    // moved on rings a still-open descriptor, never a reused number.
    bell: Arc<Bell>,
    waker: Waker,
}

impl ThreadWait {
    /// A new doorbell for the calling thread.
    pub(crate) fn new() -> io::Result<ThreadWait> {
        let bell = Arc::new(Bell(EventFd::new()?));
        let waker = Waker::from(Arc::clone(&bell));
        Ok(ThreadWait { bell, waker })
    }
}

impl Wait for ThreadWait {
    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn wait(&self, socket: Option<(RawFd, Interest)>, deadline: Option<Instant>) -> io::Result<Woke> {
        let bell_fd = self.bell.0.as_raw_fd();
        let mut fds = [
            libc::pollfd { fd: bell_fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: -1, events: 0, revents: 0 },
        ];
        if let Some((fd, interest)) = socket {
            fds[1].fd = fd;
            fds[1].events = match interest {
                Interest::Read => libc::POLLIN,
                Interest::ReadWrite => libc::POLLIN | libc::POLLOUT,
            };
        }
        let timeout = poll_timeout_ms(deadline);
        // SAFETY: `fds` is a live array of two pollfd; poll ignores entries with fd -1.
        let ready = match syscall!(poll(fds.as_mut_ptr(), 2, timeout)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Woke::Waker),
            Err(e) => return Err(e),
        };
        if ready == 0 {
            return Ok(Woke::Deadline);
        }
        if fds[0].revents != 0 {
            self.bell.0.drain();
            return Ok(Woke::Waker);
        }
        Ok(Woke::Ready)
    }
}
