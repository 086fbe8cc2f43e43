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
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_store::CooperativePostgres;
use tracing::{debug, info};

use self::coroutine::Stacks;
use self::io::{GreenStream, GreenWait};
use self::scheduler::{Park, Resumed, Scheduler};
use crate::blocking::{serve_connection, Giant};
use crate::common::ConnectionSlot;
use crate::event::event_loop::Loop;
use crate::event::shell::{self, Connections, Refused, FIRST_CONNECTION};
use crate::event::{self, Interest, PollerKind, Token};
use crate::{Context, Model};

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

    fn flags(&self) -> &'static [crate::Flag] {
        &[crate::Flag::Poller, crate::Flag::WatchdogMs, crate::Flag::StackSize]
    }

    /// gevent's monkey patching for the database: each coroutine drives a PostgreSQL
    /// connection over a non-blocking socket and parks on it (`c10k_store::CooperativePostgres`;
    /// MySQL has no driver that can be given its socket, so it is refused at start).
    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Ok(crate::NativeDb::Cooperative)
    }

    fn serve(&self, listener: TcpListener, context: Context) -> stdio::Result<()> {
        let (app, shutdown) = (Arc::clone(&context.app), context.shutdown.clone());
        let (watchdog, stack_size) = (self.watchdog, self.stack_size);
        shell::serve("green", self.poller, watchdog, listener, app, shutdown, |lp| {
            info!(
                poller = lp.capabilities().name,
                stack_size,
                db_mode = ?context.db_mode,
                watchdog_ms = watchdog.map(|w| w.as_millis() as u64),
                "green model: one thread, a coroutine per connection"
            );
            let native = match (&context.db_mode, &context.native) {
                (crate::DbMode::Native, Some(crate::NativeDriver::Cooperative { url, options })) => Some(Rc::new(
                    CooperativePostgres::new(url, options).map_err(|e| stdio::Error::other(e.to_string()))?,
                )),
                _ => None,
            };
            Ok(Server {
                native,
                context: Rc::new(context),
                scheduler: Scheduler::new(FIRST_CONNECTION, Stacks::new(stack_size, SPARE_STACKS)),
            })
        })
    }
}

/// The coroutines of one loop.
struct Server {
    /// This loop's database driver for `--db-mode native`.
    native: Option<Rc<CooperativePostgres>>,
    context: Rc<Context>,
    scheduler: Scheduler,
}

impl Connections for Server {
    type Message = ();

    /// Starts a coroutine for `stream`, parked until its first bytes arrive, it has been
    /// idle too long, or (woken) the process stops: then the driver takes the stop in.
    fn start(&mut self, lp: &mut Loop<()>, stream: TcpStream, slot: ConnectionSlot) -> Result<(), Refused> {
        let socket = Rc::new(stream);
        let first = Park {
            socket: Interest::READABLE,
            other: None,
            deadline: Some(Instant::now() + self.context.app.limits().idle_timeout),
            wakeable: true,
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
            if let Err(e) = serve_connection(stream, None, &wait, &context, &Giant::new(false)) {
                debug!("connection ended: {e}");
            }
        });
        let Err(error) = spawned else { return Ok(()) };
        // The body was dropped unrun, so this is the only handle left.
        let stream = Rc::try_unwrap(socket).map_err(|_| ()).expect("the unrun coroutine held no other handle");
        let error = stdio::Error::new(
            error.kind(),
            format!("no coroutine (stack of {} bytes): {error}", self.scheduler.stack_size()),
        );
        Err(Refused { stream, error, why: "this server cannot take more connections; try again shortly" })
    }

    fn on_ready(&mut self, lp: &mut Loop<()>, event: event::Event) {
        self.scheduler.on_ready(lp, event);
    }

    fn on_timer(&mut self, lp: &mut Loop<()>, token: Token) {
        self.scheduler.on_timer(lp, token);
    }

    fn on_woken(&mut self, lp: &mut Loop<()>, token: Token) {
        self.scheduler.on_woken(lp, token);
    }

    fn on_message(&mut self, _: &mut Loop<()>, _: Token, (): ()) {
        // Nothing is posted: store results come back through the coroutine's waker.
    }

    /// Each coroutine in the blocking driver learns of the stop through its own shutdown
    /// subscription; one still parked on its first bytes has none yet, so every one is
    /// woken here (a spurious wake is harmless to the others).
    fn on_shutdown(&mut self, lp: &mut Loop<()>) {
        self.scheduler.wake_all(lp);
    }

    fn open(&self) -> usize {
        self.scheduler.len()
    }
}

#[cfg(test)]
mod tests;
