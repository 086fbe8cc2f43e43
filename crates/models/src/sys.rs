//! The few raw system calls the hand-written models make, fenced in one place.
//!
//! [`syscall!`] turns the C convention (`-1` and `errno`) into `io::Result` (after mio).
//! [`EventFd`] is the cross-thread wake-up: any thread writes to it, and the thread that
//! sleeps in `poll(2)` on it wakes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// Calls a libc function and maps `-1` to the thread's `errno` as an `io::Error`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        // SAFETY: each call site passes arguments that satisfy the named function's
        // contract; the call site's own SAFETY comment says which.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// A counter file descriptor used as a doorbell (`eventfd(2)`).
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes plain integers and returns a new descriptor or -1.
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// A blocking, close-on-exec eventfd, for a reader that never blocks on it itself: an
    /// io_uring read, which waits by polling it. (On a non-blocking one, a kernel may end
    /// such a read with `EAGAIN` at once instead of waiting.) Ringing it never blocks either:
    /// the counter would have to reach 2^64 - 1.
    pub(crate) fn blocking() -> io::Result<EventFd> {
        // SAFETY: eventfd takes plain integers and returns a new descriptor or -1.
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC))?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Rings the bell. Never blocks; ringing an already-rung bell is a no-op in effect.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        let _ = syscall!(write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8));
    }

    /// Silences the bell (reads the counter back to zero). Returns whether it had rung.
    pub(crate) fn drain(&self) -> bool {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from a descriptor we own.
        let res = syscall!(read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8));
        matches!(res, Ok(8))
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Milliseconds to wait until `deadline`, rounded up so a wake-up never comes early;
/// -1 (forever) for no deadline. Capped so it fits `poll`'s `int`.
pub(crate) fn poll_timeout_ms(deadline: Option<Instant>) -> libc::c_int {
    match deadline {
        None => -1,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000);
            ms.min(i32::MAX as u128) as libc::c_int
        }
    }
}
