//! One "stop now" signal that every model can wait on in its own way.
//!
//! The binary turns SIGINT and SIGTERM into [`Shutdown::trigger`]. A model waits through a
//! [`std::task::Waker`] (the same mechanism as the hub), so threads, reactors and tasks all
//! learn of it without polling a flag in a loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// A cloneable handle to the process's stop signal.
#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default, Debug)]
struct Inner {
    triggered: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Fires the signal and wakes everyone waiting. Idempotent.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether it has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// `Ready` once fired; otherwise `waker` will be woken when it fires.
    pub fn poll(&self, waker: &Waker) -> Poll<()> {
        if self.is_triggered() {
            return Poll::Ready(());
        }
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: a trigger between the first check and here has
        // already drained the list, so it would never wake us.
        if self.is_triggered() {
            return Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        Poll::Pending
    }

    /// Waits for the signal (for async code).
    pub async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll(cx.waker())).await
    }
}
