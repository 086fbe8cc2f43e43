//! One "stop now" signal that every model can wait on in its own way, and the drain that
//! follows it.
//!
//! The binary turns SIGINT and SIGTERM into [`Shutdown::trigger`]. A model waits through a
//! [`std::task::Waker`] (the same mechanism as the hub), so threads, reactors and tasks all
//! learn of it without polling a flag in a loop.
//!
//! Stopping is a drain, not a drop: the accept loop stops accepting and closes its
//! listener; every open connection is told once (`Connection::handle_shutdown`), through a
//! [`Subscription`] its driver holds (or, on the event loops, by the loop itself), and ends
//! the way its client can resume from; the process exits when the last one is gone or at
//! [`Shutdown::drain_deadline`] (`--drain-timeout`), whichever comes first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// How long open connections may take to finish after the signal when `--drain-timeout`
/// is not given.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A cloneable handle to the process's stop signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggered: AtomicBool,
    /// When the signal fired plus the drain timeout: set once, by the first trigger.
    deadline: OnceLock<Instant>,
    drain_timeout: Duration,
    /// Waiters of [`Shutdown::poll`]: woken once, and forgotten.
    wakers: Mutex<Vec<Waker>>,
    /// The connections' subscriptions, by id: each leaves when its connection ends, so a
    /// server that runs for months does not keep a waker per connection it ever served.
    subscribers: Mutex<Subscribers>,
}

#[derive(Debug, Default)]
struct Subscribers {
    next: u64,
    wakers: HashMap<u64, Waker>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::with_drain_timeout(DEFAULT_DRAIN_TIMEOUT)
    }
}

impl Shutdown {
    /// A signal that has not fired, with the default drain timeout.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A signal that has not fired; once it does, connections have `drain_timeout` to
    /// finish.
    pub fn with_drain_timeout(drain_timeout: Duration) -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                deadline: OnceLock::new(),
                drain_timeout,
                wakers: Mutex::new(Vec::new()),
                subscribers: Mutex::new(Subscribers::default()),
            }),
        }
    }

    /// Fires the signal and wakes everyone waiting and every subscribed connection.
    /// Idempotent: the drain deadline is counted from the first call.
    pub fn trigger(&self) {
        let _ = self.inner.deadline.set(Instant::now() + self.inner.drain_timeout);
        self.inner.triggered.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in wakers {
            waker.wake();
        }
        // Taken under the lock, woken after it: a waker may run code that subscribes.
        let subscribers = std::mem::take(&mut self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner()).wakers);
        for waker in subscribers.into_values() {
            waker.wake();
        }
    }

    /// Whether it has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// When the drain ends regardless of the connections still open (`None` before the
    /// signal).
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.is_triggered().then(|| self.inner.deadline.get().copied()).flatten()
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

    /// A connection's standing registration: `waker` is woken when the signal fires, and
    /// forgotten when the subscription is dropped.
    pub fn subscribe(&self, waker: &Waker) -> Subscription {
        let mut subscribers = self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let id = subscribers.next;
        subscribers.next += 1;
        // After a trigger the map stays empty: `poll` answers from the flag.
        if !self.is_triggered() {
            subscribers.wakers.insert(id, waker.clone());
        }
        Subscription { inner: Arc::clone(&self.inner), id, waker: waker.clone() }
    }
}

/// One connection's registration with the [`Shutdown`] (see [`Shutdown::subscribe`]).
#[derive(Debug)]
pub struct Subscription {
    inner: Arc<Inner>,
    id: u64,
    /// The waker registered, to tell without the lock whether a new one must replace it.
    waker: Waker,
}

impl Subscription {
    /// `Ready` once the signal has fired; otherwise `waker` (which replaces the one given
    /// before, if it differs) will be woken when it fires.
    pub fn poll(&mut self, waker: &Waker) -> Poll<()> {
        if self.inner.triggered.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if !self.waker.will_wake(waker) {
            let mut subscribers = self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            if self.inner.triggered.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            subscribers.wakers.insert(self.id, waker.clone());
            self.waker = waker.clone();
        }
        Poll::Pending
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.subscribers.lock().unwrap_or_else(|p| p.into_inner()).wakers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_subscription_is_woken_once_by_the_trigger_and_forgotten_when_dropped() {
        let shutdown = Shutdown::with_drain_timeout(Duration::from_secs(3));
        let (kept, dropped) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut subscription = shutdown.subscribe(&Waker::from(Arc::clone(&kept)));
        let gone = shutdown.subscribe(&Waker::from(Arc::clone(&dropped)));
        assert!(subscription.poll(&Waker::from(Arc::clone(&kept))).is_pending());
        drop(gone);
        assert_eq!(shutdown.inner.subscribers.lock().unwrap().wakers.len(), 1, "a dropped one leaves no waker behind");
        assert_eq!(shutdown.drain_deadline(), None);
        let before = Instant::now();
        shutdown.trigger();
        shutdown.trigger();
        assert_eq!(kept.0.load(Ordering::SeqCst), 1);
        assert_eq!(dropped.0.load(Ordering::SeqCst), 0);
        assert!(subscription.poll(&Waker::noop().clone()).is_ready());
        let deadline = shutdown.drain_deadline().expect("set by the trigger");
        assert!(deadline >= before + Duration::from_secs(3) && deadline <= Instant::now() + Duration::from_secs(3));
        assert!(shutdown.subscribe(&Waker::noop().clone()).poll(&Waker::noop().clone()).is_ready(), "a late one is ready at once");
    }
}
