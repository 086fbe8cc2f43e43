//! The server shell of the models that run on the event loop (`reactor`, `green`): what
//! they do alike, written once.
//!
//! - **Start-up**: the listener made non-blocking, a reserve descriptor kept for 503s when
//!   the process runs out of them, the poller opened (a clear error when it cannot be),
//!   the watchdog counting into `c10k_slow_callbacks_total`, the listener and the
//!   shutdown waker registered.
//! - **Accepting**: a batch per readable callback ([`Loop::accept_batch`], which answers
//!   503 from the reserve when out of descriptors and pauses), each connection made
//!   non-blocking with `TCP_NODELAY`, a slot under `--max-connections` taken (else 503),
//!   then handed to the model; a connection the model cannot take (the poller refuses its
//!   descriptor, no coroutine stack) is answered 503, logged the first time and every
//!   1,024th after, and closed.
//! - **Shutdown**: a drain. When the process's shutdown fires, the listener is
//!   deregistered and closed, the model tells each connection ([`Connections::on_shutdown`]),
//!   a timer is set for the drain deadline, and the loop stops when the last connection is
//!   gone or that timer fires, whichever is first.
//!
//! What differs, the model supplies as [`Connections`]: how a connection is started and
//! how its events are handled (a state machine per connection, or a coroutine).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use c10k_core::chat::App;
use tracing::{debug, error, warn};

use super::event_loop::{Handler, Loop, Watchdog};
use super::{Event, Interest, PollerKind, Token};
use crate::acceptor::refuse;
use crate::common::{ConnectionSlot, Open};
use crate::Shutdown;

/// The listening socket's token (readable: accept; timer: resume accepting after EMFILE).
pub(crate) const LISTENER: Token = Token(0);
/// The shutdown signal's waker.
pub(crate) const SHUTDOWN: Token = Token(1);
/// The first token the model may give its connections (numbers are never reused).
pub(crate) const FIRST_CONNECTION: usize = 2;

/// A connection the model could not take: answered 503 with `why` and closed.
pub(crate) struct Refused {
    /// The connection, to answer.
    pub(crate) stream: TcpStream,
    /// What went wrong, for the log.
    pub(crate) error: io::Error,
    /// What the client is told.
    pub(crate) why: &'static str,
}

/// What an event-loop model supplies to the shell: its connections and their events.
pub(crate) trait Connections {
    /// What its store calls post back to the loop.
    type Message: Send + 'static;

    /// Starts serving `stream` (non-blocking, counted by `slot` until it is dropped).
    fn start(&mut self, lp: &mut Loop<Self::Message>, stream: TcpStream, slot: ConnectionSlot) -> Result<(), Refused>;
    /// A connection's descriptor is ready.
    fn on_ready(&mut self, lp: &mut Loop<Self::Message>, event: Event);
    /// A connection's timer expired.
    fn on_timer(&mut self, lp: &mut Loop<Self::Message>, token: Token);
    /// A connection's waker was woken.
    fn on_woken(&mut self, lp: &mut Loop<Self::Message>, token: Token);
    /// Work posted to a connection (a store call's result).
    fn on_message(&mut self, lp: &mut Loop<Self::Message>, token: Token, message: Self::Message);
    /// The process is stopping: tell every connection (each then drains and ends).
    fn on_shutdown(&mut self, lp: &mut Loop<Self::Message>);
    /// Connections still open: the drain ends when there are none.
    fn open(&self) -> usize;
}

/// Serves `listener` on a loop over `poller` until `shutdown` fires. `connections` makes
/// the model's side once the loop exists; `started` logs the model's banner.
pub(crate) fn serve<C: Connections>(
    model: &'static str,
    poller: PollerKind,
    watchdog: Option<Duration>,
    listener: TcpListener,
    app: Arc<App>,
    shutdown: Shutdown,
    connections: impl FnOnce(&mut Loop<C::Message>) -> io::Result<C>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    crate::acceptor::keep_reserve_descriptor();
    let poller = poller
        .open()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open the {poller} poller: {e}")))?;
    let slow = Arc::clone(&app);
    let watchdog = Watchdog::new(watchdog, move |_| {
        slow.metrics().slow_callbacks.inc();
    });
    let mut lp: Loop<C::Message> = Loop::new(poller, watchdog);
    lp.register(listener.as_raw_fd(), LISTENER, Interest::READABLE)?;
    let shutdown_waker = lp.waker(SHUTDOWN);
    if shutdown.poll(&shutdown_waker).is_ready() {
        return Ok(());
    }
    let connections = connections(&mut lp)?;
    let mut shell = Shell {
        model,
        app,
        shutdown,
        shutdown_waker,
        listener: Some(listener),
        open: Arc::new(Open::default()),
        refusals: 0,
        connections,
    };
    lp.run(&mut shell)?;
    match shell.connections.open() {
        0 => tracing::info!("{model} model: stopped; every connection has drained"),
        open => warn!(open, "{model} model: the drain deadline passed; closing the connections still open"),
    }
    Ok(())
}

struct Shell<C> {
    model: &'static str,
    app: Arc<App>,
    shutdown: Shutdown,
    shutdown_waker: Waker,
    /// `None` once the drain began.
    listener: Option<TcpListener>,
    open: Arc<Open>,
    /// Connections the model could not take, for the log.
    refusals: u64,
    connections: C,
}

impl<C: Connections> Handler for Shell<C> {
    type Message = C::Message;

    fn on_ready(&mut self, lp: &mut Loop<C::Message>, event: Event) {
        match event.token {
            LISTENER => self.on_acceptable(lp),
            _ => self.connections.on_ready(lp, event),
        }
        self.stop_when_drained(lp);
    }

    fn on_timer(&mut self, lp: &mut Loop<C::Message>, token: Token) {
        match token {
            LISTENER => {
                let Some(listener) = &self.listener else { return };
                if let Err(e) = lp.reregister(listener.as_raw_fd(), LISTENER, Interest::READABLE) {
                    warn!("cannot resume accepting: {e}");
                }
                self.on_acceptable(lp);
            }
            // The drain deadline.
            SHUTDOWN => lp.stop(),
            _ => self.connections.on_timer(lp, token),
        }
        self.stop_when_drained(lp);
    }

    fn on_woken(&mut self, lp: &mut Loop<C::Message>, token: Token) {
        match token {
            SHUTDOWN => {
                if self.listener.is_some() && self.shutdown.poll(&self.shutdown_waker).is_ready() {
                    self.start_draining(lp);
                }
            }
            _ => self.connections.on_woken(lp, token),
        }
        self.stop_when_drained(lp);
    }

    fn on_message(&mut self, lp: &mut Loop<C::Message>, token: Token, message: C::Message) {
        self.connections.on_message(lp, token, message);
        self.stop_when_drained(lp);
    }
}

impl<C: Connections> Shell<C> {
    /// Stops accepting (the listener is deregistered, then closed, as the poller contract
    /// asks), tells every connection, and sets the drain deadline's timer.
    fn start_draining(&mut self, lp: &mut Loop<C::Message>) {
        if let Some(listener) = self.listener.take() {
            if let Err(e) = lp.deregister(listener.as_raw_fd()) {
                debug!("deregister the listener: {e}");
            }
        }
        tracing::info!(open = self.connections.open(), "{} model: stopped accepting; draining the open connections", self.model);
        self.connections.on_shutdown(lp);
        let deadline = self.shutdown.drain_deadline().unwrap_or_else(std::time::Instant::now);
        lp.add_timer(deadline, SHUTDOWN);
    }

    /// Ends the loop once draining and no connection is left.
    fn stop_when_drained(&mut self, lp: &mut Loop<C::Message>) {
        if self.listener.is_none() && self.connections.open() == 0 {
            lp.stop();
        }
    }

    fn on_acceptable(&mut self, lp: &mut Loop<C::Message>) {
        let Some(listener) = &self.listener else { return };
        for stream in lp.accept_batch(listener, LISTENER, &self.app) {
            self.on_accepted(lp, stream);
        }
    }

    fn on_accepted(&mut self, lp: &mut Loop<C::Message>, stream: TcpStream) {
        if let Err(e) = stream.set_nonblocking(true) {
            debug!("cannot make an accepted socket non-blocking: {e}");
            return;
        }
        let _ = stream.set_nodelay(true);
        let Some(slot) = ConnectionSlot::take(&self.open, &self.app) else {
            refuse(stream, &self.app.busy("too many connections; try again shortly"));
            return;
        };
        let Err(Refused { stream, error, why }) = self.connections.start(lp, stream, slot) else { return };
        self.refusals += 1;
        // The first, then every 1024th: a flood of connections must not flood the log.
        if self.refusals == 1 || self.refusals.trailing_zeros() >= 10 {
            error!(
                model = self.model,
                poller = lp.capabilities().name,
                refused_so_far = self.refusals,
                "cannot serve a new connection: {error}; answered it 503 and closed it"
            );
        }
        refuse(stream, &self.app.busy(why));
    }
}
