//! The `select(2)` poller: the oldest one (4.2BSD, 1983), and the one the talk lists first.
//!
//! Every wait hands the kernel two bitmaps (`fd_set`s), one bit per descriptor number up to
//! the highest registered, and gets them back with the ready bits left set; both are
//! rebuilt from the registrations on each call, because `select` overwrites them. The cost
//! of a wait is therefore proportional to the highest descriptor number, busy or idle.
//!
//! Its hard limit: an `fd_set` is a fixed array of `FD_SETSIZE` (1024) bits. `FD_SET` on a
//! descriptor of 1024 or more writes past the end of it, which is the classic select
//! buffer overflow. This poller refuses to register such a descriptor (`InvalidInput`, with
//! a message saying to use poll or epoll), so no bit is ever set out of range; the model
//! answers that connection 503 and closes it.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{already_registered, not_registered, Capabilities, Event, Interest, Notifier, Poller, Token, WaitCost};
use crate::sys::syscall;

/// `FD_SETSIZE` as a descriptor number: the first one `select` cannot watch.
const LIMIT: RawFd = libc::FD_SETSIZE as RawFd;

/// The `select(2)` poller. Descriptors 0..1024 only.
#[derive(Debug)]
pub struct Select {
    /// Indexed by descriptor number (all below [`LIMIT`]).
    slots: Vec<Option<(Token, Interest)>>,
    /// The highest registered descriptor, the notifier's included.
    highest: RawFd,
    notifier: Notifier,
}

/// An `fd_set` with every bit clear.
fn empty_set() -> libc::fd_set {
    let mut set = MaybeUninit::<libc::fd_set>::uninit();
    // SAFETY: FD_ZERO writes every word of the set it is given; `set` points to storage for
    // one fd_set, which is fully initialised afterwards, so assume_init is sound.
    unsafe {
        libc::FD_ZERO(set.as_mut_ptr());
        set.assume_init()
    }
}

/// Sets `fd`'s bit.
///
/// # Safety
/// `fd` must be in `0..FD_SETSIZE`; libc's `FD_SET` indexes the array with it (the libc
/// crate bounds-checks and panics, C's macro does not).
unsafe fn set_bit(fd: RawFd, set: &mut libc::fd_set) {
    debug_assert!((0..LIMIT).contains(&fd));
    // SAFETY: the caller guarantees fd < FD_SETSIZE; `set` is a live, initialised fd_set.
    unsafe { libc::FD_SET(fd, set) }
}

/// Whether `fd`'s bit is set.
///
/// # Safety
/// As for [`set_bit`].
unsafe fn is_set(fd: RawFd, set: &libc::fd_set) -> bool {
    debug_assert!((0..LIMIT).contains(&fd));
    // SAFETY: the caller guarantees fd < FD_SETSIZE; `set` is a live, initialised fd_set.
    unsafe { libc::FD_ISSET(fd, set) }
}

impl Select {
    fn check_range(fd: RawFd) -> io::Result<()> {
        if (0..LIMIT).contains(&fd) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {fd} is at or above FD_SETSIZE ({LIMIT}): select(2) cannot watch it (its \
                     fd_set has {LIMIT} bits); use --poller poll or --poller epoll to serve more \
                     connections"
                ),
            ))
        }
    }

    fn slot(&mut self, fd: RawFd) -> io::Result<&mut Option<(Token, Interest)>> {
        Self::check_range(fd)?;
        Ok(&mut self.slots[fd as usize])
    }
}

impl Poller for Select {
    fn new() -> io::Result<Select> {
        let notifier = Notifier::new()?;
        let bell = notifier.fd();
        // The eventfd is normally one of the first descriptors a process opens; if even it
        // is out of range, this process cannot use select at all.
        Self::check_range(bell)?;
        let mut slots = vec![None; LIMIT as usize];
        slots[bell as usize] = Some((super::NOTIFIER_TOKEN, Interest::READABLE));
        Ok(Select { slots, highest: bell, notifier })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "select",
            max_fd: Some(LIMIT),
            edge_triggered: false,
            cost: WaitCost::PerRegistered,
            timeout_resolution: Duration::from_micros(1),
        }
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let slot = self.slot(fd)?;
        if slot.is_some() {
            return Err(already_registered(fd));
        }
        *slot = Some((token, interest));
        self.highest = self.highest.max(fd);
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        match self.slot(fd)? {
            Some(entry) => {
                *entry = (token, interest);
                Ok(())
            }
            None => Err(not_registered(fd)),
        }
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let slot = self.slot(fd)?;
        if slot.take().is_none() {
            return Err(not_registered(fd));
        }
        if fd == self.highest {
            // The notifier is always registered, so this finds something.
            while self.highest > 0 && self.slots[self.highest as usize].is_none() {
                self.highest -= 1;
            }
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let mut read = empty_set();
        let mut write = empty_set();
        for fd in 0..=self.highest {
            if let Some((_, interest)) = self.slots[fd as usize] {
                // SAFETY: fd <= highest < FD_SETSIZE: only in-range descriptors get a slot.
                unsafe {
                    if interest.readable {
                        set_bit(fd, &mut read);
                    }
                    if interest.writable {
                        set_bit(fd, &mut write);
                    }
                }
            }
        }
        let mut tv = timeout.map(|t| {
            // Whole microseconds, rounded up, capped at about 68 years.
            let micros = t.as_nanos().div_ceil(1000).min(i64::MAX as u128 / 2) as i64;
            libc::timeval { tv_sec: micros / 1_000_000, tv_usec: (micros % 1_000_000) as libc::suseconds_t }
        });
        let tv_ptr = tv.as_mut().map_or(std::ptr::null_mut(), |tv| tv as *mut libc::timeval);
        // SAFETY: both sets are live, initialised fd_sets whose set bits are all below
        // highest + 1 <= FD_SETSIZE; the except set may be null; `tv_ptr` is null or points
        // to a live timeval that select may modify.
        let ready = match syscall!(select(self.highest + 1, &mut read, &mut write, std::ptr::null_mut(), tv_ptr)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        if ready == 0 {
            return Ok(());
        }
        for fd in 0..=self.highest {
            let Some((token, _)) = self.slots[fd as usize] else { continue };
            // SAFETY: fd <= highest < FD_SETSIZE, and both sets are initialised.
            let (readable, writable) = unsafe { (is_set(fd, &read), is_set(fd, &write)) };
            if !readable && !writable {
                continue;
            }
            if token == super::NOTIFIER_TOKEN {
                self.notifier.drain();
                continue;
            }
            events.push(Event { token, readable, writable });
        }
        Ok(())
    }

    fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }
}
