//! `green`: stackful coroutines on the reactor's event loop (gevent, eventlet, Stackless: "custom thread libraries: I/O-based schedulers").
//! Each connection is a coroutine running the same straight-line blocking driver as `threads`, over a socket that parks it on `WouldBlock`.
//! Where it blocks: a coroutine parks on its socket, a deadline or its waker; the thread blocks only in the poller's wait.
//! Cost: a `--stack-size` mapping per connection (only the touched pages are resident; a guard page below it), a stack switch per resume, and one core.
//! Hazard: scheduling is cooperative: a coroutine that computes or calls the store inline (`--db-mode inline`) wedges every other one; the watchdog names it.
//!
//! The pieces: `coroutine.rs` switches stacks (corosensei) and nothing else; `scheduler.rs`
//! parks and resumes coroutines from the event loop's callbacks; `io.rs` is the stream and
//! the sleep the blocking driver runs on. This file accepts connections and starts a
//! coroutine for each, as `reactor.rs` does a state machine.
#![forbid(unsafe_code)]

mod coroutine;
mod io;
mod scheduler;

use std::io as stdio;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use c10k_store::CooperativePostgres;

use tracing::{debug, error, info, warn};

use self::coroutine::Stacks;
use self::io::{GreenStream, GreenWait};
use self::scheduler::{Park, Resumed, Scheduler};
use crate::acceptor::refuse;
use crate::blocking::{serve_connection, Giant};
use crate::common::ConnectionSlot;
use crate::event::event_loop::{Handler, Loop, Watchdog};
use crate::event::{self, Interest, PollerKind, Token};
use crate::{Context, Model};

/// The listening socket's token (readable: accept; timer: resume accepting after EMFILE).
const LISTENER: Token = Token(0);
/// The shutdown signal's waker.
const SHUTDOWN: Token = Token(1);
/// Coroutines are numbered from here, and numbers are never reused.
const FIRST_COROUTINE: usize = 2;
/// Stacks of finished coroutines kept for the next connections.
const SPARE_STACKS: usize = 64;

/// The `green` model.
#[derive(Debug)]
pub struct GreenModel {
    poller: PollerKind,
    watchdog: Option<Duration>,
    stack_size: usize,
}

impl GreenModel {
    /// Coroutines with `stack_size` usable bytes of stack each (plus a guard page), on an
    /// event loop over `poller`, reporting any resume that holds the loop longer than
    /// `watchdog` (`None`: no watchdog).
    pub fn new(poller: PollerKind, watchdog: Option<Duration>, stack_size: usize) -> GreenModel {
        GreenModel { poller, watchdog, stack_size }
    }
}

impl Model for GreenModel {
    fn name(&self) -> &'static str {
        "green"
    }

    /// gevent's monkey patching for the database: each coroutine drives a PostgreSQL
    /// connection over a non-blocking socket and parks on it (`c10k_store::CooperativePostgres`;
    /// MySQL has no driver that can be given its socket, so it is refused at start).
    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Ok(crate::NativeDb::Cooperative)
    }

    fn serve(&self, listener: TcpListener, context: Context) -> stdio::Result<()> {
        listener.set_nonblocking(true)?;
        crate::acceptor::keep_reserve_descriptor();
        let poller = self
            .poller
            .open()
            .map_err(|e| stdio::Error::new(e.kind(), format!("cannot open the {} poller: {e}", self.poller)))?;
        let app = Arc::clone(&context.app);
        let watchdog = Watchdog::new(self.watchdog, move |_| {
            app.metrics().slow_callbacks.inc();
        });
        let mut lp: Loop<()> = Loop::new(poller, watchdog);
        lp.register(listener.as_raw_fd(), LISTENER, Interest::READABLE)?;
        let shutdown_waker = lp.waker(SHUTDOWN);
        if context.shutdown.poll(&shutdown_waker).is_ready() {
            return Ok(());
        }
        info!(
            poller = lp.capabilities().name,
            stack_size = self.stack_size,
            db_mode = ?context.db_mode,
            watchdog_ms = self.watchdog.map(|w| w.as_millis() as u64),
            "green model: one thread, a coroutine per connection"
        );
        let native = match (&context.db_mode, &context.native) {
            (crate::DbMode::Native, Some(crate::NativeDriver::Cooperative { url, options })) => Some(Rc::new(
                CooperativePostgres::new(url, options).map_err(|e| stdio::Error::other(e.to_string()))?,
            )),
            _ => None,
        };
        let mut server = Server {
            native,
            context: Rc::new(context),
            listener,
            scheduler: Scheduler::new(FIRST_COROUTINE, Stacks::new(self.stack_size, SPARE_STACKS)),
            open: Arc::new(AtomicUsize::new(0)),
            shutdown_waker,
            refusals: 0,
        };
        lp.run(&mut server)?;
        info!(open = server.scheduler.len(), "green model: stopped; unwinding the open connections");
        Ok(())
    }
}

/// The listener and the coroutines of one loop.
struct Server {
    /// This loop's database driver for `--db-mode native`.
    native: Option<Rc<CooperativePostgres>>,
    context: Rc<Context>,
    listener: TcpListener,
    scheduler: Scheduler,
    open: Arc<AtomicUsize>,
    shutdown_waker: Waker,
    /// Connections that got no coroutine (no stack, or the poller refused), for the log.
    refusals: u64,
}

impl Handler for Server {
    type Message = ();

    fn on_ready(&mut self, lp: &mut Loop<()>, event: event::Event) {
        match event.token {
            LISTENER => self.on_acceptable(lp),
            _ => self.scheduler.on_ready(lp, event),
        }
    }

    fn on_timer(&mut self, lp: &mut Loop<()>, token: Token) {
        match token {
            LISTENER => {
                if let Err(e) = lp.reregister(self.listener.as_raw_fd(), LISTENER, Interest::READABLE) {
                    warn!("cannot resume accepting: {e}");
                }
                self.on_acceptable(lp);
            }
            _ => self.scheduler.on_timer(lp, token),
        }
    }

    fn on_woken(&mut self, lp: &mut Loop<()>, token: Token) {
        match token {
            SHUTDOWN => {
                if self.context.shutdown.poll(&self.shutdown_waker).is_ready() {
                    lp.stop();
                }
            }
            _ => self.scheduler.on_woken(lp, token),
        }
    }

    fn on_message(&mut self, _: &mut Loop<()>, _: Token, (): ()) {
        // Nothing is posted: store results come back through the coroutine's waker.
    }
}

impl Server {
    fn on_acceptable(&mut self, lp: &mut Loop<()>) {
        for stream in lp.accept_batch(&self.listener, LISTENER, &self.context.app) {
            self.on_accepted(lp, stream);
        }
    }

    /// Starts a coroutine for `stream`, parked until its first bytes arrive or it has been
    /// idle too long; answers 503 at the connection cap or when it cannot have one.
    fn on_accepted(&mut self, lp: &mut Loop<()>, stream: TcpStream) {
        if let Err(e) = stream.set_nonblocking(true) {
            debug!("cannot make an accepted socket non-blocking: {e}");
            return;
        }
        let _ = stream.set_nodelay(true);
        let Some(slot) = ConnectionSlot::take(&self.open, &self.context.app) else {
            refuse(stream, &self.context.app.busy("too many connections; try again shortly"));
            return;
        };
        let socket = Rc::new(stream);
        let first = Park {
            socket: Interest::READABLE,
            other: None,
            deadline: Some(Instant::now() + self.context.app.limits().idle_timeout),
            wakeable: false,
        };
        let context = Rc::clone(&self.context);
        let native = self.native.clone();
        let conn = Rc::clone(&socket);
        let spawned = self.scheduler.spawn(lp, &socket, first, move |fiber, why| {
            let _slot = slot;
            if why == Resumed::Deadline {
                return; // connected, never said a word: the idle timeout
            }
            let wait = GreenWait::new(fiber).with_native(native);
            let stream = GreenStream::new(conn, fiber);
            if let Err(e) = serve_connection(stream, &wait, &context, &Giant::new(false)) {
                debug!("connection ended: {e}");
            }
        });
        if let Err(e) = spawned {
            // The body was dropped unrun, so this is the only handle left.
            self.refusals += 1;
            if self.refusals == 1 || self.refusals.trailing_zeros() >= 10 {
                error!(
                    poller = lp.capabilities().name,
                    stack_size = self.scheduler.stack_size(),
                    refused_so_far = self.refusals,
                    "cannot start a coroutine for a new connection: {e}; answered it 503 and closed it"
                );
            }
            if let Ok(stream) = Rc::try_unwrap(socket) {
                refuse(stream, &self.context.app.busy("this server cannot take more connections; try again shortly"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
