//! The `poll(2)` poller (System V, 1986): select without the 1024 limit.
//!
//! The interest set is an array of `pollfd` (descriptor, events asked, events returned)
//! kept between waits; the kernel scans the whole array on every call, so, like select, a
//! wait costs time in proportion to the registered descriptors, busy or idle. A paused
//! registration ([`Interest::NONE`]) keeps its entry with a negative descriptor, which
//! `poll` skips: it reports nothing for it, not even `POLLHUP`.
//!
//! Removal swaps the last entry into the hole, so register and deregister are O(1) with a
//! map from descriptor to index.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{
    already_registered, not_registered, timeout_ms, Capabilities, Event, Interest, Notifier, Poller, Token, WaitCost,
};
use crate::sys::syscall;

/// The `poll(2)` poller.
#[derive(Debug)]
pub struct PollPoller {
    /// Handed to the kernel as is. Entry 0 is the notifier.
    fds: Vec<libc::pollfd>,
    /// Parallel to `fds`: the real descriptor (an entry's `fd` is -1 while paused), its
    /// token and interest.
    entries: Vec<(RawFd, Token, Interest)>,
    /// Descriptor -> index in both vectors.
    index: HashMap<RawFd, usize>,
    notifier: Notifier,
}

fn pollfd(fd: RawFd, interest: Interest) -> libc::pollfd {
    let mut events = 0;
    if interest.readable {
        events |= libc::POLLIN;
    }
    if interest.writable {
        events |= libc::POLLOUT;
    }
    // poll ignores entries with a negative descriptor: that is how a pause reports nothing.
    let fd = if interest.is_none() { -1 } else { fd };
    libc::pollfd { fd, events, revents: 0 }
}

impl Poller for PollPoller {
    fn new() -> io::Result<PollPoller> {
        let notifier = Notifier::new()?;
        let bell = notifier.fd();
        let mut poller = PollPoller { fds: Vec::new(), entries: Vec::new(), index: HashMap::new(), notifier };
        poller.register(bell, super::NOTIFIER_TOKEN, Interest::READABLE)?;
        Ok(poller)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "poll",
            max_fd: None,
            edge_triggered: false,
            cost: WaitCost::PerRegistered,
            timeout_resolution: Duration::from_millis(1),
        }
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd} is not a descriptor")));
        }
        if self.index.contains_key(&fd) {
            return Err(already_registered(fd));
        }
        self.index.insert(fd, self.fds.len());
        self.fds.push(pollfd(fd, interest));
        self.entries.push((fd, token, interest));
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let &i = self.index.get(&fd).ok_or_else(|| not_registered(fd))?;
        self.fds[i] = pollfd(fd, interest);
        self.entries[i] = (fd, token, interest);
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self.index.remove(&fd).ok_or_else(|| not_registered(fd))?;
        self.fds.swap_remove(i);
        self.entries.swap_remove(i);
        if let Some(&(moved, _, _)) = self.entries.get(i) {
            self.index.insert(moved, i);
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        for pfd in &mut self.fds {
            pfd.revents = 0;
        }
        // SAFETY: `fds` is a live, initialised array of `fds.len()` pollfd entries that poll
        // may write `revents` into; nothing else touches it during the call.
        let ready = match syscall!(poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, timeout_ms(timeout))) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        if ready == 0 {
            return Ok(());
        }
        for (pfd, &(_, token, interest)) in self.fds.iter().zip(&self.entries) {
            let revents = pfd.revents;
            if revents == 0 {
                continue;
            }
            if token == super::NOTIFIER_TOKEN {
                self.notifier.drain();
                continue;
            }
            // Hang-up and error come whatever was asked; report them as the asked-for
            // readiness, so the next read or write finds out which it was.
            let broken = revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
            let readable = interest.readable && (broken || revents & libc::POLLIN != 0);
            let writable = interest.writable && (broken || revents & libc::POLLOUT != 0);
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
