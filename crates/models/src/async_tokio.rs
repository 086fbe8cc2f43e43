//! `async`: stackless coroutines (Rust `async`/`await`) on tokio's multi-threaded scheduler.
//!
//! Each connection is a task; a task that must wait returns `Pending` and its worker thread
//! runs another. This is the talk's generator coroutines, scheduled the way Erlang maps
//! green threads onto OS threads: M tasks on N threads, so it uses every core.
//! Where it blocks: nowhere, unless a task calls blocking code (`--db-mode inline` does
//! exactly that on purpose). Cost: the task, the core's connection machine and the socket
//! per idle connection: the machine holds no buffer while a connection sleeps, and reads go
//! through one 8 KiB buffer per worker thread.
//! Hazard: a task that computes or blocks without awaiting holds its worker thread; with
//! few workers that stalls every connection queued behind it.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{Shutdown, TcpListener as StdListener};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use c10k_core::chat::{StoreCall, StoreDone};
use c10k_core::conn::Action;
use c10k_core::http::Response;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, Sleep};
use tracing::{debug, info, warn};

use crate::acceptor::{keep_reserve_descriptor, refuse_with_reserve, Reserve};
use crate::common::{connection, date, is_fd_exhaustion, now, tagged, ConnectionSlot, Open};
use crate::{Context, DbMode, Model, Subscription};

/// Bytes read from a socket at a time, into the worker thread's scratch buffer (see
/// [`read_into`]). Sized for a typical request head.
const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    /// One read buffer per worker thread, not per connection: a read copies what arrived
    /// into the connection's decoder at once, so no connection keeps 8 KiB while it waits
    /// (with 100,000 idle connections that was most of the model's memory).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_CHUNK].into());
}

/// The `async` model.
#[derive(Debug)]
pub struct AsyncModel {
    threads: usize,
}

impl AsyncModel {
    /// A model running `threads` tokio worker threads (0: one per core).
    pub fn new(threads: usize) -> AsyncModel {
        AsyncModel { threads }
    }
}

impl Model for AsyncModel {
    fn name(&self) -> &'static str {
        "async"
    }

    fn flags(&self) -> &'static [crate::Flag] {
        &[crate::Flag::Threads]
    }

    /// `mysql_async` / `tokio-postgres`, awaited by the connection's task.
    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Ok(crate::NativeDb::Async)
    }

    fn serve(&self, listener: StdListener, context: Context) -> io::Result<()> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if self.threads > 0 {
            builder.worker_threads(self.threads);
        }
        let runtime = builder.enable_all().thread_name("c10k-async").build()?;
        let result = runtime.block_on(accept_loop(listener, context));
        // Tasks still running past the drain deadline are dropped: their clients reconnect.
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

async fn accept_loop(listener: StdListener, context: Context) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    keep_reserve_descriptor();
    let open = Arc::new(Open::default());
    loop {
        let accepted = tokio::select! {
            _ = context.shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                match ConnectionSlot::take(&open, &context.app) {
                    Some(slot) => {
                        let context = context.clone();
                        tokio::spawn(async move {
                            let _slot = slot;
                            if let Err(e) = Connection::new(stream, context).run().await {
                                debug!("connection ended: {e}");
                            }
                        });
                    }
                    None => {
                        let response = context.app.busy("too many connections; try again shortly");
                        tokio::spawn(refuse(stream, response));
                    }
                }
            }
            // Answer the waiting ones 503 with the reserve descriptor while it lasts; the
            // listener stays readable, so the next accept comes back here if more wait.
            Err(e) if is_fd_exhaustion(&e) => match refuse_with_reserve(listener.as_raw_fd(), &context.app) {
                Reserve::Refused | Reserve::Drained => {}
                Reserve::Unavailable => {
                    warn!("accept: {e}; pausing accepts for 100 ms (raise the file limit or lower --max-connections)");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Err(e) => debug!("accept: {e}"),
        }
    }
    drop(listener);
    let deadline = context.shutdown.drain_deadline().unwrap_or_else(std::time::Instant::now);
    info!(open = open.count(), "async model: stopped accepting; draining the open connections");
    let drained = poll_fn(|cx| open.poll_empty(cx.waker()));
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), drained).await {
        Ok(()) => info!("every connection has drained"),
        Err(_) => warn!(open = open.count(), "the drain deadline passed; closing the connections still open"),
    }
    Ok(())
}

async fn refuse(mut stream: TcpStream, response: Response) {
    let mut out = Vec::new();
    tagged(&response).encode(&c10k_core::http::Encoding { keep_alive: false, head_only: false, http10: false, date: &date() }, &mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// One client connection: the core's machine, its socket, its timer and its store call,
/// polled as one future (the task's). Each poll gives the machine what came (the hub's
/// news, a store result, bytes, the deadline) and does what it asks, until nothing moves.
struct Connection {
    stream: TcpStream,
    context: Context,
    machine: c10k_core::conn::Connection,
    /// The machine's deadline as a tokio timer; dropped while there is none.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A store call in flight: its answer goes back to the machine.
    store: Option<Pin<Box<dyn Future<Output = Option<StoreDone>> + Send>>>,
    /// Wakes the task when the process is told to stop.
    stop: Subscription,
    /// The machine has been told ([`c10k_core::conn::Connection::handle_shutdown`]).
    draining: bool,
}

impl Connection {
    fn new(stream: TcpStream, context: Context) -> Connection {
        // The task's waker replaces this one at the first poll, before anything waits.
        let peer = stream.peer_addr().ok().map(|address| address.ip());
        let machine = connection(&context.app, Waker::noop().clone(), peer);
        let stop = context.shutdown.subscribe(Waker::noop());
        Connection { stream, context, machine, sleep: None, store: None, stop, draining: false }
    }

    async fn run(mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.machine.set_waker(cx.waker());
        // The hub may be what woke the task; for a connection that waits on nothing this
        // costs nothing.
        self.machine.handle_wake(now());
        loop {
            while let Some(action) = self.machine.poll_action() {
                match action {
                    Action::Store(call) => self.store = Some(Box::pin(run_store(self.context.clone(), call))),
                    Action::ShutdownWrite => {
                        let _ = socket2::SockRef::from(&self.stream).shutdown(Shutdown::Write);
                    }
                    Action::Close => return Poll::Ready(Ok(())),
                }
            }
            let mut progressed = false;
            if let Some(Poll::Ready(done)) = self.store.as_mut().map(|store| store.as_mut().poll(cx)) {
                self.store = None;
                match done {
                    Some(done) => self.machine.handle_store_done(done, now()),
                    None => self.machine.handle_store_busy(now()),
                }
                progressed = true;
            }
            loop {
                let pending = self.machine.transmit(Instant::now());
                if pending.is_empty() {
                    break;
                }
                match Pin::new(&mut self.stream).poll_write(cx, pending) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.machine.consume(n);
                        progressed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if self.machine.interest().read {
                match self.stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        progressed = true;
                        match read_into(&self.stream, &mut self.machine) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            match self.machine.poll_timeout() {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    let sleep = self.sleep.get_or_insert_with(|| Box::pin(sleep_until(at)));
                    if sleep.deadline() != at {
                        sleep.as_mut().reset(at);
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        self.machine.handle_timeout(now());
                        if self.machine.poll_timeout() == Some(at.into_std()) {
                            // Woken a hair early for the machine's clock: wait a little more.
                            sleep.as_mut().reset(at + Duration::from_millis(1));
                        }
                        progressed = true;
                    }
                }
                None => self.sleep = None,
            }
            if !progressed {
                // About to wait: only now is a stop taken in, so that what the client
                // already sent is read and answered first.
                if !self.draining && self.stop.poll(cx.waker()).is_ready() {
                    self.draining = true;
                    self.machine.handle_shutdown(now());
                    continue;
                }
                return Poll::Pending;
            }
        }
    }
}

/// Reads what `stream` has into this thread's scratch buffer and gives it to `machine`
/// (0 bytes: the client's end of stream). `WouldBlock` clears tokio's readiness, so the next
/// `poll_read_ready` waits again.
fn read_into(stream: &TcpStream, machine: &mut c10k_core::conn::Connection) -> io::Result<()> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        match stream.try_read(&mut scratch)? {
            0 => machine.handle_eof(now()),
            n => machine.handle_bytes(&scratch[..n], now()),
        }
        Ok(())
    })
}

/// Runs a store call where `--db-mode` says. `None` when the offload queue is full (or,
/// never in practice, native mode without its driver).
async fn run_store(context: Context, call: StoreCall) -> Option<StoreDone> {
    match context.db_mode {
        DbMode::Inline => Some(call.run(&*context.store)),
        DbMode::Native => {
            let Some(crate::NativeDriver::Async(native)) = context.native.as_ref() else { return None };
            let stored = match call.run_native(&**native).await {
                Ok(stored) => stored,
                Err(blocking) => {
                    // No native form (a ledger operation): the blocking driver, off the workers.
                    let store = Arc::clone(&context.store);
                    return tokio::task::spawn_blocking(move || blocking.run(&*store)).await.ok();
                }
            };
            if stored.announce_may_block() {
                // The bus waits (boundedly) for the other workers: not on a worker thread.
                tokio::task::spawn_blocking(move || stored.announce()).await.ok()
            } else {
                Some(stored.announce())
            }
        }
        DbMode::Offload => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let store = Arc::clone(&context.store);
            let job = Box::new(move || {
                // The receiver may be gone (client left); the message is stored and
                // published regardless, inside `run`.
                let _ = tx.send(call.run(&*store));
            });
            context.offload.submit(job).ok()?;
            rx.await.ok()
        }
    }
}
