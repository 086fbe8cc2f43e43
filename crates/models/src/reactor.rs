//! `reactor`: one thread, an event loop over select, poll or epoll, and callbacks (nginx, Twisted, Tornado 1.x).
//! Each connection is the core's state machine (`c10k_core::conn`), called back when its socket is ready, its
//! timer expires, the hub wakes it, or the store answers (posted back to its token, as a Twisted Deferred fires).
//! Where it blocks: only in the poller's wait. Cost: no thread or stack per connection, only its buffers
//! (one shared read buffer for all), and one core. Hazard: any callback that blocks stalls every connection
//! ("if you block while talking to a database, you block all the requests": `--db-mode inline`); the watchdog names it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_core::chat::StoreDone;
use c10k_core::conn::{Action, Connection};
use tracing::{debug, info, warn};

use crate::common::{connection, now, offload_to_token, peer_of, ConnectionSlot};
use crate::event::event_loop::{Loop, TimerKey};
use crate::event::shell::{self, Connections, Refused, FIRST_CONNECTION};
use crate::event::{self, Interest, PollerKind, Token};
use crate::{Context, DbMode, Model};

/// One read buffer for the whole loop: only one callback runs at a time.
const READ_BUFFER: usize = 64 * 1024;
/// Reads per readable callback; the poller is level-triggered, so what is left is
/// reported again on the next tick, after the other connections have had their turn.
const READS_PER_CALLBACK: usize = 4;

/// The `reactor` model.
#[derive(Debug)]
pub struct ReactorModel {
    poller: PollerKind,
    watchdog: Option<Duration>,
}

impl ReactorModel {
    /// A reactor over `poller`, reporting callbacks that hold the loop longer than
    /// `watchdog` (`None`: no watchdog).
    pub fn new(poller: PollerKind, watchdog: Option<Duration>) -> ReactorModel {
        ReactorModel { poller, watchdog }
    }
}

impl Model for ReactorModel {
    fn name(&self) -> &'static str {
        "reactor"
    }

    fn flags(&self) -> &'static [crate::Flag] {
        &[crate::Flag::Poller, crate::Flag::WatchdogMs]
    }

    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Err("the reactor has no database driver written as callbacks on its loop (Twisted's answer was \
             the same: put the blocking driver on threads); use --db-mode offload, or inline to see the stall"
            .into())
    }

    fn serve(&self, listener: TcpListener, context: Context) -> io::Result<()> {
        let (app, shutdown) = (Arc::clone(&context.app), context.shutdown.clone());
        let watchdog = self.watchdog;
        shell::serve("reactor", self.poller, watchdog, listener, app, shutdown, |lp| {
            let caps = lp.capabilities();
            info!(
                poller = caps.name,
                max_fd = ?caps.max_fd,
                db_mode = ?context.db_mode,
                watchdog_ms = watchdog.map(|w| w.as_millis() as u64),
                "reactor model: one thread, callbacks on readiness"
            );
            Ok(Server {
                context,
                conns: HashMap::new(),
                next_token: FIRST_CONNECTION,
                buf: vec![0; READ_BUFFER].into_boxed_slice(),
            })
        })
    }
}

/// The connections the loop serves, by token.
struct Server {
    context: Context,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    buf: Box<[u8]>,
}

impl Connections for Server {
    type Message = StoreDone;

    fn start(&mut self, lp: &mut Loop<StoreDone>, stream: TcpStream, slot: ConnectionSlot) -> Result<(), Refused> {
        let fd = stream.as_raw_fd();
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(error) = lp.register(fd, token, Interest::READABLE) {
            // select(2) past FD_SETSIZE: never write past the fd_set; answer and close.
            return Err(Refused { stream, error, why: "this server cannot watch more connections; try again shortly" });
        }
        let machine = connection(&self.context.app, lp.waker(token), peer_of(&stream));
        let conn = Conn { token, stream, fd, machine, registered: Interest::READABLE, write_ready: true, timer: None, _slot: slot };
        self.conns.insert(token, conn);
        // Only arm the idle timer: the request is read in a callback of its own when the
        // poller reports it, so that the watchdog times (and names) each connection's
        // work apart from the accept loop's.
        self.with_conn(lp, token, |_, _| {});
        Ok(())
    }

    fn on_ready(&mut self, lp: &mut Loop<StoreDone>, event: event::Event) {
        // Writing is `settle`'s, after every callback.
        self.with_conn(lp, event.token, |conn, cx| {
            conn.write_ready |= event.writable;
            if event.readable {
                conn.read(cx);
            }
        });
    }

    fn on_timer(&mut self, lp: &mut Loop<StoreDone>, token: Token) {
        self.with_conn(lp, token, |conn, _| {
            // Only the connection's current timer counts; anything else is stale.
            if conn.timer.is_some_and(|key| key.at() <= Instant::now()) {
                conn.timer = None;
                conn.machine.handle_timeout(now());
            }
        });
    }

    fn on_woken(&mut self, lp: &mut Loop<StoreDone>, token: Token) {
        self.with_conn(lp, token, |conn, _| conn.machine.handle_wake(now()));
    }

    fn on_message(&mut self, lp: &mut Loop<StoreDone>, token: Token, done: StoreDone) {
        // A connection that closed meanwhile is simply gone: its message is stored and
        // published all the same (inside `StoreCall::run`).
        self.with_conn(lp, token, |conn, _| conn.machine.handle_store_done(done, now()));
    }

    fn on_shutdown(&mut self, lp: &mut Loop<StoreDone>) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            self.with_conn(lp, token, |conn, _| conn.machine.handle_shutdown(now()));
        }
    }

    fn open(&self) -> usize {
        self.conns.len()
    }
}

/// What a connection's callbacks get besides the connection: the loop, the application,
/// and the loop's read buffer.
struct Cx<'a> {
    lp: &'a mut Loop<StoreDone>,
    context: &'a Context,
    buf: &'a mut [u8],
}

impl Server {
    /// Runs one callback of connection `token`, then does what its machine asks (store
    /// calls, writes, shutdown), updates its interest and timer, and closes it if it is over.
    fn with_conn(&mut self, lp: &mut Loop<StoreDone>, token: Token, callback: impl FnOnce(&mut Conn, &mut Cx<'_>)) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let mut cx = Cx { lp, context: &self.context, buf: &mut self.buf };
        cx.lp.doing(conn.machine.doing());
        callback(conn, &mut cx);
        if !conn.machine.serving().is_empty() {
            cx.lp.doing(conn.machine.serving().to_string());
        }
        if !conn.settle(&mut cx) {
            if let Some(conn) = self.conns.remove(&token) {
                conn.close(lp);
            }
        }
    }
}

/// One client connection: its socket, its machine, and what the loop knows of it.
struct Conn {
    token: Token,
    stream: TcpStream,
    fd: RawFd,
    machine: Connection,
    /// What the poller is asked to report now.
    registered: Interest,
    /// False from a write that would have blocked until the poller reports the socket
    /// writable (nginx's `wev->ready`): a subscriber that stopped reading gets every
    /// message queued in its machine (which cuts it at `--max-outgoing`) without a
    /// `write` that fails with `EAGAIN` for each one.
    write_ready: bool,
    /// The loop timer for the machine's deadline.
    timer: Option<TimerKey>,
    _slot: ConnectionSlot,
}

impl Conn {
    /// Reads what the socket has (a few reads at most) into the machine.
    fn read(&mut self, cx: &mut Cx<'_>) {
        for _ in 0..READS_PER_CALLBACK {
            if !self.machine.interest().read {
                return; // a stale report
            }
            match (&self.stream).read(cx.buf) {
                Ok(0) => return self.machine.handle_eof(now()),
                Ok(n) => {
                    self.machine.handle_bytes(&cx.buf[..n], now());
                    if n < cx.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(token = self.token.0, "read: {e}");
                    return self.machine.handle_eof(now());
                }
            }
        }
    }

    /// Does what the machine asks until it waits; false when the connection is over.
    fn settle(&mut self, cx: &mut Cx<'_>) -> bool {
        loop {
            while let Some(action) = self.machine.poll_action() {
                match action {
                    Action::Store(call) => self.start_store(cx, call),
                    Action::ShutdownWrite => {
                        let _ = self.stream.shutdown(Shutdown::Write);
                    }
                    Action::Close => return false,
                }
            }
            // Called even when the write is skipped: it times the replies made ready.
            let pending = self.machine.transmit(Instant::now());
            if pending.is_empty() {
                break;
            }
            // Not writable since the last `EAGAIN`, and the poller will say when it is (it
            // is level-triggered, so a socket that became writable meanwhile is reported
            // at the next wait): skip the write. Without write interest registered, try.
            if !self.write_ready && self.registered.writable {
                break;
            }
            match (&self.stream).write(pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.machine.consume(n);
                    self.write_ready = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_ready = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(token = self.token.0, "write: {e}");
                    return false;
                }
            }
        }
        let wanted = self.machine.interest();
        let wanted = Interest { readable: wanted.read, writable: wanted.write };
        if wanted != self.registered {
            match cx.lp.reregister(self.fd, self.token, wanted) {
                Ok(()) => self.registered = wanted,
                Err(e) => {
                    warn!(token = self.token.0, "cannot change what the poller watches: {e}");
                    return false;
                }
            }
        }
        let deadline = self.machine.poll_timeout();
        if self.timer.map(TimerKey::at) != deadline {
            if let Some(key) = self.timer.take() {
                cx.lp.cancel_timer(key);
            }
            self.timer = deadline.map(|at| cx.lp.add_timer(at, self.token));
        }
        true
    }

    /// Runs a store call where `--db-mode` says: at once on this thread (inline: the loop
    /// stalls for as long as the store takes), or on the offload pool, which posts the
    /// result back to this connection's token (`on_message`).
    fn start_store(&mut self, cx: &mut Cx<'_>, call: c10k_core::chat::StoreCall) {
        match cx.context.db_mode {
            // Native is refused for this model at start (`native_db`); inline is the nearest.
            DbMode::Inline | DbMode::Native => {
                cx.lp.doing_also(" (store call inline, on the loop thread)");
                let done = call.run(&*cx.context.store);
                self.machine.handle_store_done(done, now());
            }
            DbMode::Offload => {
                if !offload_to_token(cx.context, cx.lp.remote(), self.token, call) {
                    self.machine.handle_store_busy(now());
                }
            }
        }
    }

    /// Forgets the connection: its timer, its registration (before the descriptor is
    /// closed, as the poller contract asks), then the socket.
    fn close(mut self, lp: &mut Loop<StoreDone>) {
        if let Some(key) = self.timer.take() {
            lp.cancel_timer(key);
        }
        if let Err(e) = lp.deregister(self.fd) {
            debug!(token = self.token.0, "deregister: {e}");
        }
    }
}
