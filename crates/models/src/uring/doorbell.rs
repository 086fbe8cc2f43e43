//! How other threads reach the loop: the hub's wakers and the offload pool's results.
//!
//! Both push onto one mutex-protected inbox and ring an eventfd when it goes from empty to
//! non-empty, as the reactor's loop does; what differs is how the loop hears the bell. The
//! reactor registers the eventfd with its poller. Here the loop keeps one `read` of the
//! eventfd in flight on the ring, so the bell is just one more completion, and the loop's
//! single wait (`io_uring_enter`) covers sockets, deadlines and other threads alike. The
//! loop takes the whole inbox under the lock once per tick and handles it after dropping
//! the lock, so no callback runs with it held.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::Waker;

pub(crate) use crate::event::inbox::{Inbox, Remote};
use crate::event::inbox::Mailbox;
use crate::event::Token;
use crate::sys::EventFd;

/// The loop's side: makes wakers and remotes, and takes the inbox (the shared
/// [`Mailbox`], on a blocking eventfd whose read the ring keeps in flight).
pub(crate) struct Doorbell<M> {
    mailbox: Mailbox<M>,
}

impl<M: Send + 'static> Doorbell<M> {
    /// A doorbell with an empty inbox.
    pub(crate) fn new() -> std::io::Result<Doorbell<M>> {
        Ok(Doorbell { mailbox: Mailbox::new(Arc::new(EventFd::blocking()?)) })
    }

    /// The eventfd the loop keeps a read in flight on.
    pub(crate) fn fd(&self) -> RawFd {
        self.mailbox.bell().as_raw_fd()
    }

    /// Takes everything in the inbox.
    pub(crate) fn take(&self) -> Inbox<M> {
        self.mailbox.take()
    }

    /// A waker that puts `token` in the inbox, from any thread.
    pub(crate) fn waker(&self, token: Token) -> Waker {
        self.mailbox.waker(token)
    }

    /// A handle that posts results to tokens, from any thread.
    pub(crate) fn remote(&self) -> Remote<M> {
        self.mailbox.remote()
    }
}
