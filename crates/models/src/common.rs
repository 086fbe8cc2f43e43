//! Small pieces every model shares: the clock reading, the Date header cache, the
//! connection count, the worker tag, the connection machine made with both.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use c10k_core::chat::{App, Now};
use c10k_core::http::{http_date, Response};

/// Reads the clocks once, for one request.
pub(crate) fn now() -> Now {
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Now { instant: Instant::now(), unix_ms }
}

thread_local! {
    static DATE: RefCell<(u64, Rc<str>)> = RefCell::new((u64::MAX, Rc::from("")));
}

/// The `Date` header value for now, formatted at most once a second per thread. A shared
/// string: each response takes a reference count, not a copy.
pub(crate) fn date() -> Rc<str> {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            *cache = (secs, Rc::from(http_date(now)));
        }
        Rc::clone(&cache.1)
    })
}

/// The connections a model has open, counted against the cap by [`ConnectionSlot`]s; a
/// draining model waits for it to reach zero ([`Open::poll_empty`]).
#[derive(Debug, Default)]
pub(crate) struct Open {
    count: AtomicUsize,
    /// Woken (and forgotten) when the count reaches zero.
    empty: Mutex<Vec<Waker>>,
}

impl Open {
    /// How many are open.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// `Ready` when none is open; otherwise `waker` is woken when the last one closes.
    pub(crate) fn poll_empty(&self, waker: &Waker) -> Poll<()> {
        if self.count() == 0 {
            return Poll::Ready(());
        }
        let mut empty = self.empty.lock().unwrap_or_else(|p| p.into_inner());
        // Again under the lock: the last slot's drop takes the list under it.
        if self.count() == 0 {
            return Poll::Ready(());
        }
        if !empty.iter().any(|w| w.will_wake(waker)) {
            empty.push(waker.clone());
        }
        Poll::Pending
    }
}

/// Counts open connections against the cap; dropping it closes the count.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    open: Arc<Open>,
    app: Arc<App>,
}

impl ConnectionSlot {
    /// Takes a slot, or `None` at the cap (the caller answers 503 and closes).
    pub(crate) fn take(open: &Arc<Open>, app: &Arc<App>) -> Option<ConnectionSlot> {
        app.metrics().connections_accepted.inc();
        let cap = app.limits().max_connections;
        let taken = open.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1));
        if taken.is_err() {
            app.metrics().connections_refused.inc();
            return None;
        }
        app.metrics().connections_open.inc();
        Some(ConnectionSlot { open: Arc::clone(open), app: Arc::clone(app) })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let was = self.open.count.fetch_sub(1, Ordering::AcqRel);
        self.app.metrics().connections_open.dec();
        if was == 1 {
            let waiting = std::mem::take(&mut *self.open.empty.lock().unwrap_or_else(|p| p.into_inner()));
            for waker in waiting {
                waker.wake();
            }
        }
    }
}

/// Whether an accept error means the process is out of file descriptors (or the system
/// is): the listener stays readable, so retrying at once would spin. Back off instead.
pub(crate) fn is_fd_exhaustion(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM))
}

/// This process's id, when it is one worker of several (`--workers N`, `prefork`).
static WORKER_TAG: OnceLock<String> = OnceLock::new();

/// Marks this process as worker `pid`: from now on every response says so.
pub(crate) fn set_worker_tag(pid: u32) {
    let _ = WORKER_TAG.set(pid.to_string());
}

/// This process's worker tag, if it is one worker of several (see [`tagged`]).
pub(crate) fn worker_tag() -> Option<&'static str> {
    WORKER_TAG.get().map(String::as_str)
}

/// The connection machine for a connection from `peer` accepted now, woken through
/// `waker`, tagging its responses as [`tagged`] does.
pub(crate) fn connection(app: &Arc<App>, waker: std::task::Waker, peer: Option<std::net::IpAddr>) -> c10k_core::conn::Connection {
    c10k_core::conn::Connection::new(Arc::clone(app), waker, now()).tagged(worker_tag()).from_peer(peer)
}

/// The address a connected socket's client came from (for the post rate limit), or `None`
/// when the kernel cannot say (the client is already gone).
pub(crate) fn peer_of(socket: &impl std::os::fd::AsFd) -> Option<std::net::IpAddr> {
    socket2::SockRef::from(socket).peer_addr().ok()?.as_socket().map(|address| address.ip())
}

/// The response as this process sends it: in a worker process, with `X-C10k-Worker: PID`,
/// so that a client (and the tests) can tell which worker served it. Every model encodes
/// through this; a single process sends the response untouched, without copying it.
pub(crate) fn tagged(response: &Response) -> Cow<'_, Response> {
    match WORKER_TAG.get() {
        Some(pid) => Cow::Owned(response.clone().header("X-C10k-Worker", pid.clone())),
        None => Cow::Borrowed(response),
    }
}

/// Hands `call` to the offload pool, which posts the result to `token` of an event loop
/// through `remote` (the reactor's and the proactor's `--db-mode offload`). False when the
/// pool's queue is full: the caller tells its connection the store is busy.
pub(crate) fn offload_to_token(
    context: &crate::Context,
    remote: crate::event::inbox::Remote<c10k_core::chat::StoreDone>,
    token: crate::event::Token,
    call: c10k_core::chat::StoreCall,
) -> bool {
    let store = Arc::clone(&context.store);
    let job = Box::new(move || remote.post(token, call.run(&*store)));
    match context.offload.submit(job) {
        Ok(()) => true,
        Err(busy) => {
            tracing::debug!("{busy}");
            false
        }
    }
}
