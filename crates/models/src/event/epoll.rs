//! The `epoll(7)` poller (Linux 2.6, 2003): the interest set lives in the kernel.
//!
//! Registrations are made once with `epoll_ctl` and kept by the kernel; a wait returns only
//! the ready descriptors, so its cost grows with activity, not with the number of idle
//! connections. This is what lets one thread hold ten thousand mostly idle long-polls,
//! where select and poll would scan all of them on every tick.
//!
//! Used level-triggered (no `EPOLLET`), like the other two, so the same handlers work on
//! all three. One wrinkle: the kernel reports `EPOLLHUP` and `EPOLLERR` even for a
//! descriptor registered with no events, which under level triggering would report a
//! paused, hung-up connection on every wait (a busy loop). So a pause ([`Interest::NONE`])
//! takes the descriptor out of the kernel's set (`EPOLL_CTL_DEL`) and remembers it here;
//! asking again puts it back (`EPOLL_CTL_ADD`).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{
    already_registered, not_registered, timeout_ms, Capabilities, Event, Interest, Notifier, Poller, Token, WaitCost,
};
use crate::sys::syscall;

/// Events fetched per `epoll_wait`; more ready ones wait for the next tick (level
/// triggering keeps them reported).
const BATCH: usize = 1024;

/// The `epoll(7)` poller.
#[derive(Debug)]
pub struct Epoll {
    epfd: OwnedFd,
    /// Every registration: its token, interest, and whether it is in the kernel's set
    /// (false while paused).
    registered: HashMap<RawFd, (Token, Interest, bool)>,
    buffer: Vec<libc::epoll_event>,
    notifier: Notifier,
}

fn flags(interest: Interest) -> u32 {
    let mut events = 0;
    if interest.readable {
        events |= libc::EPOLLIN as u32;
    }
    if interest.writable {
        events |= libc::EPOLLOUT as u32;
    }
    events
}

/// The event's user data: the token, with the interest in the two top bits so that a
/// hang-up can be reported in the asked-for directions only without a lookup.
const READ_BIT: u64 = 1 << 63;
const WRITE_BIT: u64 = 1 << 62;
/// Tokens must stay below this to leave the two bits free.
const TOKEN_LIMIT: u64 = 1 << 62;
/// The notifier's user data: both bits and every token bit, which no registration makes.
const NOTIFIER_DATA: u64 = u64::MAX;

fn data(token: Token, interest: Interest) -> u64 {
    if token == super::NOTIFIER_TOKEN {
        return NOTIFIER_DATA;
    }
    let mut data = token.0 as u64;
    if interest.readable {
        data |= READ_BIT;
    }
    if interest.writable {
        data |= WRITE_BIT;
    }
    data
}

impl Epoll {
    fn ctl(&self, op: libc::c_int, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if token != super::NOTIFIER_TOKEN && token.0 as u64 >= TOKEN_LIMIT - 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("token {} is too large for the epoll poller (tokens must be below 2^62 - 1)", token.0),
            ));
        }
        let mut event = libc::epoll_event { events: flags(interest), u64: data(token, interest) };
        // SAFETY: `epfd` is our open epoll instance; `event` is a live epoll_event the kernel
        // only reads (and ignores for EPOLL_CTL_DEL, where Linux >= 2.6.9 accepts it anyway).
        syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event))?;
        Ok(())
    }
}

impl Poller for Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flag word and returns a new descriptor or -1.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let notifier = Notifier::new()?;
        let mut poller = Epoll { epfd, registered: HashMap::new(), buffer: Vec::with_capacity(BATCH), notifier };
        let bell = poller.notifier.fd();
        poller.register(bell, super::NOTIFIER_TOKEN, Interest::READABLE)?;
        Ok(poller)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "epoll",
            max_fd: None,
            edge_triggered: false,
            cost: WaitCost::PerReady,
            timeout_resolution: Duration::from_millis(1),
        }
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if self.registered.contains_key(&fd) {
            return Err(already_registered(fd));
        }
        let in_kernel = !interest.is_none();
        if in_kernel {
            self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)?;
        }
        self.registered.insert(fd, (token, interest, in_kernel));
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let &(_, _, in_kernel) = self.registered.get(&fd).ok_or_else(|| not_registered(fd))?;
        let wanted = !interest.is_none();
        match (in_kernel, wanted) {
            (true, true) => self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)?,
            (true, false) => self.ctl(libc::EPOLL_CTL_DEL, fd, token, interest)?,
            (false, true) => self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)?,
            (false, false) => {}
        }
        self.registered.insert(fd, (token, interest, wanted));
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let (token, interest, in_kernel) = self.registered.remove(&fd).ok_or_else(|| not_registered(fd))?;
        if in_kernel {
            self.ctl(libc::EPOLL_CTL_DEL, fd, token, interest)?;
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        self.buffer.clear();
        // SAFETY: `buffer` has capacity for BATCH events and the kernel writes at most
        // BATCH entries into its spare capacity; `epfd` is our open epoll instance.
        let n = match syscall!(epoll_wait(
            self.epfd.as_raw_fd(),
            self.buffer.as_mut_ptr(),
            BATCH as libc::c_int,
            timeout_ms(timeout)
        )) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        // SAFETY: epoll_wait initialised the first `n` (<= BATCH <= capacity) entries.
        unsafe { self.buffer.set_len(n) };
        for event in &self.buffer {
            let data = event.u64;
            if data == NOTIFIER_DATA {
                self.notifier.drain();
                continue;
            }
            let token = Token((data & !(READ_BIT | WRITE_BIT)) as usize);
            let bits = event.events;
            // Hang-up and error come whatever was asked; report them as the asked-for
            // readiness, so the next read or write finds out which it was.
            let broken = bits & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
            let readable = data & READ_BIT != 0 && (broken || bits & libc::EPOLLIN as u32 != 0);
            let writable = data & WRITE_BIT != 0 && (broken || bits & libc::EPOLLOUT as u32 != 0);
            if readable || writable {
                events.push(Event { token, readable, writable });
            }
        }
        Ok(())
    }

    fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }
}
