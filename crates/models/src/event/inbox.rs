//! How other threads reach an event loop's thread: the hub's wakers and the offload pool's
//! results. Shared by the readiness loop ([`super::event_loop`]) and the completion loop
//! (`uring`): what differs between them is only how the loop hears the bell.
//!
//! Both kinds push onto one mutex-protected [`Inbox`] and ring an eventfd when it goes from
//! empty to non-empty. The reactor registers that eventfd with its poller; the proactor
//! keeps one `read` of it in flight on the ring. Either way the loop takes the whole inbox
//! under the lock once per tick and handles it after dropping the lock, so no callback
//! runs with it held.

use std::mem;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use super::Token;
use crate::sys::EventFd;

/// What other threads handed the loop since it last looked.
pub(crate) struct Inbox<M> {
    /// Tokens whose waker was woken, in that order (duplicates possible).
    pub(crate) woken: Vec<Token>,
    /// Results posted to tokens.
    pub(crate) posted: Vec<(Token, M)>,
}

impl<M> Inbox<M> {
    fn is_empty(&self) -> bool {
        self.woken.is_empty() && self.posted.is_empty()
    }
}

struct Shared<M> {
    inbox: Mutex<Inbox<M>>,
    bell: Arc<EventFd>,
}

impl<M> Shared<M> {
    /// Adds to the inbox, ringing only on empty -> non-empty: a non-empty inbox means a ring
    /// is pending, or the loop has not taken this tick's inbox yet.
    fn push(&self, add: impl FnOnce(&mut Inbox<M>)) {
        let was_empty = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
            let was_empty = inbox.is_empty();
            add(&mut inbox);
            was_empty
        };
        if was_empty {
            self.bell.ring();
        }
    }
}

/// The loop's side: makes wakers and remotes, and takes the inbox.
pub(crate) struct Mailbox<M> {
    shared: Arc<Shared<M>>,
}

impl<M: Send + 'static> Mailbox<M> {
    /// An empty inbox that rings `bell`.
    pub(crate) fn new(bell: Arc<EventFd>) -> Mailbox<M> {
        let inbox = Inbox { woken: Vec::new(), posted: Vec::new() };
        Mailbox { shared: Arc::new(Shared { inbox: Mutex::new(inbox), bell }) }
    }

    /// The eventfd that rings when the inbox fills.
    pub(crate) fn bell(&self) -> &EventFd {
        &self.shared.bell
    }

    /// Takes everything in the inbox.
    pub(crate) fn take(&self) -> Inbox<M> {
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        Inbox { woken: mem::take(&mut inbox.woken), posted: mem::take(&mut inbox.posted) }
    }

    /// A waker that puts `token` in the inbox, from any thread.
    pub(crate) fn waker(&self, token: Token) -> Waker {
        Waker::from(Arc::new(TokenWaker { token, shared: Arc::clone(&self.shared) }))
    }

    /// A handle that posts results to tokens, from any thread.
    pub(crate) fn remote(&self) -> Remote<M> {
        Remote { shared: Arc::clone(&self.shared) }
    }
}

/// A thread-safe handle for posting results to a token of a loop. If the loop has stopped,
/// the result is dropped with it.
pub(crate) struct Remote<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for Remote<M> {
    fn clone(&self) -> Self {
        Remote { shared: Arc::clone(&self.shared) }
    }
}

impl<M: Send + 'static> Remote<M> {
    /// Delivers `message` to `token` on the loop thread.
    pub(crate) fn post(&self, token: Token, message: M) {
        self.shared.push(|inbox| inbox.posted.push((token, message)));
    }
}

/// The waker of one token: pushes it onto the inbox and rings the loop.
struct TokenWaker<M> {
    token: Token,
    shared: Arc<Shared<M>>,
}

impl<M: Send + 'static> Wake for TokenWaker<M> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let token = self.token;
        self.shared.push(|inbox| inbox.woken.push(token));
    }
}
