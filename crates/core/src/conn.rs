//! One client connection as a state machine with no I/O: everything a connection does
//! around the application, in one file (after quinn-proto's `Connection` and h11's
//! `_state.py`, where "everything that affects the state machine lives in this file").
//!
//! The application decides what a request means ([`App::handle_request`] returns an
//! [`Outcome`]); this file decides what the connection does about it: the head and idle
//! deadlines, `100 Continue`, keep-alive and pipelining, where a long-poll waits, the
//! Server-Sent Events heartbeat, the switch to WebSocket and every frame after it, the cap
//! on output a slow client may leave unread, buffers given back while a connection sleeps,
//! every error frame, and the one close sequence. Each concurrency model's driver only
//! moves bytes, time and wake-ups between a [`Connection`] and its way of waiting.
//!
//! # The methods, sorted
//! - Inputs (`handle_*`), each with the time the driver read just before:
//!   [`handle_bytes`](Connection::handle_bytes) (what a read gave),
//!   [`handle_eof`](Connection::handle_eof) (a read gave 0),
//!   [`handle_timeout`](Connection::handle_timeout) (the time of
//!   [`poll_timeout`](Connection::poll_timeout) came; a spurious call is harmless),
//!   [`handle_wake`](Connection::handle_wake) (the waker given to [`Connection::new`] was
//!   woken: the hub has news; spurious calls are harmless too),
//!   [`handle_store_done`](Connection::handle_store_done) and
//!   [`handle_store_busy`](Connection::handle_store_busy) (what became of an
//!   [`Action::Store`]),
//!   [`handle_shutdown`](Connection::handle_shutdown) (the process is stopping: drain; see
//!   "Draining" below).
//! - Outputs (`poll_*` and the send buffer): [`poll_action`](Connection::poll_action) (run a
//!   store call, shut down the write side, close), [`transmit`](Connection::transmit) and
//!   [`consume`](Connection::consume) (bytes to write, and how many the socket took;
//!   `transmit` takes the time too: see "The latency clock" below),
//!   [`poll_timeout`](Connection::poll_timeout) (when to call `handle_timeout`),
//!   [`interest`](Connection::interest) (which readiness to wait for).
//! - Getters: [`is_closed`](Connection::is_closed), [`doing`](Connection::doing) and
//!   [`serving`](Connection::serving) (for the watchdogs), [`held_bytes`](Connection::held_bytes).
//! - Set-up, once after [`Connection::new`]: [`tagged`](Connection::tagged) (a worker
//!   process's mark) and [`from_peer`](Connection::from_peer) (the client's address).
//! - Mutator: [`set_waker`](Connection::set_waker), for a driver whose waker can change (a
//!   future's).
//!
//! # The order a driver calls them in
//! After [`Connection::new`] and after every input:
//! 1. [`poll_action`](Connection::poll_action) until `None`, doing each action (a store call
//!    ends in `handle_store_done` or `handle_store_busy`, at once or later; `Close` ends the
//!    connection: drop the socket and the machine);
//! 2. write [`transmit`](Connection::transmit) as far as the socket takes it (reading the
//!    clock for it just before), telling [`consume`](Connection::consume) how much went, then
//!    step 1 again (a flush can finish a close sequence);
//! 3. wait for [`interest`](Connection::interest) on the socket, for
//!    [`poll_timeout`](Connection::poll_timeout), and for the waker, then give the machine
//!    whichever came.
//!
//! # The latency clock
//! The per-route latency histogram in `/metrics` times a request from its decoding to its
//! response ready to write (docs/protocol.md). The first end is the time of the input that
//! completed the request; the second cannot be an input's time, since an answer computed
//! within one input (a `GET /cpu?cost=N`, a page) would then measure 0 however long the
//! handler ran. So a reply with a route is kept aside, untimed, until the driver next calls
//! [`transmit`](Connection::transmit), which it does right after every input to write what
//! the input produced: the `now` it passes is when the response was ready to write, and
//! every reply queued since the last call is timed with it. Why there and not elsewhere:
//! - not a clock function given at construction: the core would read a clock after all,
//!   hidden behind a pointer, and a test would have to fake it as a callback (here it is an
//!   argument, like every other time the machine sees);
//! - not [`consume`](Connection::consume): that would time the socket write too, and the
//!   wait for a client that reads slowly, which the histogram leaves out (nginx's
//!   `$request_time` counts to the last byte sent; ours counts the server's own work);
//! - not a new `handle_*` call: every driver already calls `transmit` at exactly the moment
//!   that counts, so no driver can forget it. The cost is one monotonic clock read per write
//!   attempt (a vDSO call: tens of nanoseconds beside the write's system call).
//!
//! With pipelined requests answered in one input, every reply of the batch is ready when
//! the last one is, and is timed so: none of them leaves before.
//!
//! # States
//! `Http` (reading and answering requests) → `Storing` (a store call out) / `LongPoll` (the
//! hub or the deadline) → `Http` again, or → `Events` (SSE) / `WebSocket`, until `Closing`:
//! flush what is queued, then [`Action::ShutdownWrite`], then read and drop what the client
//! still sends until it hangs up or [`CLOSE_GRACE`] passes, then [`Action::Close`]. A client
//! that sent more than we read therefore gets our last answer and a clean FIN, never a reset
//! that destroys the answer before it is read (RFC 9112 9.6, "tear-down").
//!
//! # Draining
//! [`handle_shutdown`](Connection::handle_shutdown) is given once, when the process is told
//! to stop (SIGTERM). From then on every response says `Connection: close`, and each state
//! ends the way its client can resume from, losing nothing that was acknowledged:
//! - `Http` between requests (an idle keep-alive): closed at once, without a word (RFC 9112
//!   9.5); a request half received is read to its end, answered, and closed;
//! - `Storing`: the store call is finished and answered (the message is stored: its poster
//!   must hear so), then closed;
//! - `LongPoll`: answered at once with its empty answer (`{}` for Tornado's route, an empty
//!   list for the native one), then closed: the client polls again, elsewhere or later;
//! - `Events`: one last event, [`SHUTDOWN_EVENT`] (`retry:` and a named `shutdown` event,
//!   with no `id:`, so that the browser's `Last-Event-ID` stays the last message's), then
//!   closed: `EventSource` reconnects by itself after the `retry:` delay and resumes;
//! - `WebSocket`: a post in flight is acknowledged first; then close code 1001 (going away,
//!   RFC 6455 7.4.1) with [`SHUTTING_DOWN`], and the close sequence.
//!
//! A request that arrives on a draining connection (the rest of a half-received head) is
//! treated the same way once decoded. The driver enforces the process's hard deadline; the
//! machine only sees to it that nothing is waited for that it could answer now.

use core::net::IpAddr;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, UNIX_EPOCH};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use crate::chat::{error_frame, App, EventStream, LongPoll, Now, Outcome, StoreCall, StoreDone, StreamStatus};
use crate::chat::{WebSocketAccept, WsAction, WsEndpoint, WsSession};
use crate::chat::auth::{TOKEN_EXPIRED, TOKEN_EXPIRED_CLOSE};
use crate::http::{http_date, Encoding, Event, ProtocolError, Request, RequestDecoder, Response, StatusCode};

/// How long a closing connection may take to have its last bytes taken, and then how long
/// it may go on sending before it hangs up (each phase), before it is closed regardless.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The interim response to `Expect: 100-continue` (RFC 9110 10.1.1).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// What a client is told when its store call could not even be queued.
const STORE_BUSY: &str = "the store is busy; try again shortly";
/// Why a subscriber (WebSocket or event stream) that leaves too much unread is closed.
const OUTGOING_FULL: &str = "subscriber too slow: its outgoing buffer is full";
/// The answer to a binary frame (the protocol is JSON text frames).
const BINARY_NOT_UNDERSTOOD: &str = "binary frames are not understood; send JSON text";
/// The longest reason a close frame can carry: 125 bytes of control frame payload, less the
/// two of the code (RFC 6455 5.5, 5.5.1).
const MAX_CLOSE_REASON: usize = 123;
/// The longest request description kept for the watchdogs.
const MAX_SERVING: usize = 96;

/// Why a draining connection's WebSocket is closed (code 1001, going away).
pub const SHUTTING_DOWN: &str = "server shutting down";
/// The last event of a Server-Sent Events stream when the server stops: `retry:` asks the
/// browser to reconnect after one second (to a restarted server or another node), and the
/// named `shutdown` event says why to a client that listens for it. It carries no `id:`, so
/// the reconnection resumes from the last message's id (WHATWG HTML 9.2.6: the last event
/// ID buffer is only set by an `id` field).
pub const SHUTDOWN_EVENT: &[u8] = b"retry: 1000\nevent: shutdown\ndata: {\"reason\":\"server shutting down\"}\n\n";

/// The largest WebSocket message (and frame) accepted from a client.
const MAX_WS_MESSAGE: usize = 64 * 1024;
/// What tungstenite reads at most per call, and the read buffer it starts with. Clients send
/// small JSON frames; a larger one grows the buffer to fit. Kept small because tungstenite
/// zero-fills this much before every read: at its 128 KiB default, that memset was 37% of
/// an async server's time in a WebSocket broadcast.
const WS_READ_BUFFER: usize = 4 * 1024;

/// Which readiness of its socket a connection needs reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// Reading would find something: bytes, or the end of the stream.
    pub read: bool,
    /// Writing would take something ([`Connection::transmit`] has bytes).
    pub write: bool,
}

/// What the driver must do for the connection.
#[derive(Debug)]
pub enum Action {
    /// Run this blocking store call where `--db-mode` says, then give its result to
    /// [`Connection::handle_store_done`], or call [`Connection::handle_store_busy`] if it
    /// could not be queued.
    Store(StoreCall),
    /// Everything queued has been written: shut down the socket's write side (FIN) and go on
    /// reading, so that what the client still sends is drained rather than reset.
    ShutdownWrite,
    /// Close the socket and drop the connection.
    Close,
}

/// How a request wants its response framed, and when it was decoded (the latency
/// histogram's start: see the module doc).
#[derive(Debug, Clone, Copy)]
struct Shape {
    keep_alive: bool,
    head_only: bool,
    http10: bool,
    decoded: Instant,
}

impl Shape {
    fn of(request: &Request, now: Instant) -> Shape {
        let probe = Encoding::for_request(request, "");
        Shape { keep_alive: probe.keep_alive, head_only: probe.head_only, http10: probe.http10, decoded: now }
    }
}

/// Reading requests: `deadline` is the idle timeout's, or (`head`) the head's, counted from
/// the first byte of a request.
#[derive(Debug)]
struct Http {
    deadline: Instant,
    head: bool,
}

/// A long-poll waiting for the hub or its deadline.
#[derive(Debug)]
struct Waiting {
    poll: LongPoll,
    shape: Shape,
}

/// An event stream and its next heartbeat.
#[derive(Debug)]
struct Streaming {
    events: EventStream,
    heartbeat: Instant,
}

/// A WebSocket: the framing (tungstenite, driven on buffers), what answers its messages
/// (the chat session, or the echo), and the client's bytes not read yet (kept while a
/// post's store call is out, so that acks go in order).
struct Ws {
    framing: WebSocketContext,
    endpoint: WsEndpoint,
    inbox: VecDeque<u8>,
    storing: bool,
}

impl Ws {
    /// When the chat session's token expires, if it has one.
    fn expires(&self) -> Option<Instant> {
        match &self.endpoint {
            WsEndpoint::Chat(session) => session.expires(),
            WsEndpoint::Echo => None,
        }
    }
}

/// Where a connection is in its life; each variant holds what its next input needs.
enum State {
    Http(Http),
    /// A store call is out; its answer is the next HTTP response.
    Storing(Shape),
    LongPoll(Box<Waiting>),
    Events(Box<Streaming>),
    WebSocket(Box<Ws>),
    /// The close sequence: flushing until `lingering`, then draining until the client hangs
    /// up; either phase ends at `until`.
    Closing { lingering: bool, until: Instant },
    Closed,
}

/// A reply queued with its route and the time its request was decoded, waiting for the
/// time it is ready to write (see "The latency clock" in the module doc).
#[derive(Debug, Clone, Copy)]
struct Untimed {
    route: &'static str,
    decoded: Instant,
}

/// The replies queued since the driver last took the bytes to write, oldest first. The
/// first sits inline: only a pipelining client has more than one at a time, so answering
/// a request allocates nothing here, and an idle connection holds nothing.
#[derive(Debug, Default)]
struct Untimeds {
    first: Option<Untimed>,
    rest: Vec<Untimed>,
}

impl Untimeds {
    fn push(&mut self, reply: Untimed) {
        if self.first.is_none() {
            self.first = Some(reply);
        } else {
            self.rest.push(reply);
        }
    }

    /// Records each reply's latency as ending at `ready`, and forgets them.
    fn time(&mut self, ready: Instant, app: &App) {
        let Some(first) = self.first.take() else { return };
        let metrics = app.metrics();
        metrics.observe_latency(first.route, ready.saturating_duration_since(first.decoded));
        for reply in std::mem::take(&mut self.rest) {
            metrics.observe_latency(reply.route, ready.saturating_duration_since(reply.decoded));
        }
    }
}

/// The `Date` field, formatted at most once a second per connection, held inline.
struct DateCache {
    secs: u64,
    text: [u8; 29],
}

impl DateCache {
    fn at(&mut self, unix_ms: u64) -> &str {
        let secs = unix_ms / 1000;
        if secs != self.secs {
            let formatted = http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if formatted.len() == self.text.len() {
                self.text.copy_from_slice(formatted.as_bytes());
                self.secs = secs;
            }
        }
        std::str::from_utf8(&self.text).unwrap_or("")
    }
}

/// One client connection, from its accept to its close. See the module doc for the order
/// of calls.
pub struct Connection {
    app: Arc<App>,
    /// `X-C10k-Worker` on every response, in a worker process.
    worker: Option<&'static str>,
    /// Where the connection came from, stamped on each request ([`Request::peer`]).
    peer: Option<IpAddr>,
    waker: Waker,
    decoder: RequestDecoder,
    /// Bytes for the client; `out[sent..]` is what the driver has not written yet.
    out: Vec<u8>,
    sent: usize,
    /// Of `out[sent..]`, how many bytes are the history a subscriber was sent on subscribing
    /// (and the response head): they are written whole, whatever their size, and the cap on
    /// what a subscriber may leave unread counts only what comes after them (see
    /// [`Connection::unread_allowed`]).
    history_unread: usize,
    state: State,
    /// Replies whose latency is not recorded yet (see "The latency clock").
    untimed: Untimeds,
    /// A store call for the driver to run ([`Action::Store`]). Boxed: a store call is some
    /// 260 bytes, and kept inline every connection would carry them while it waits (an idle
    /// subscriber, most of the connections of a big server) for nothing.
    store_call: Option<Box<StoreCall>>,
    /// The client closed its sending side.
    eof: bool,
    /// The time the latest input brought.
    now: Now,
    date: DateCache,
    serving: String,
    /// [`Connection::handle_shutdown`] was given: every answer closes the connection.
    draining: bool,
    /// When a connection that waited for this machine (in a worker pool's queue) was
    /// accepted: the bytes its first request finds may have come as early as that, so that
    /// request's head deadline counts from it ([`Connection::queued_since`]).
    queued_since: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("state", &self.doing()).field("pending", &(self.out.len() - self.sent)).finish()
    }
}

impl Connection {
    /// A connection just accepted at `now`. `waker` is what the hub and the store wake when
    /// the connection has news ([`Connection::handle_wake`]).
    pub fn new(app: Arc<App>, waker: Waker, now: Now) -> Connection {
        let decoder = RequestDecoder::new(app.limits());
        let deadline = now.instant + app.limits().idle_timeout;
        Connection {
            app,
            worker: None,
            peer: None,
            waker,
            decoder,
            out: Vec::new(),
            sent: 0,
            history_unread: 0,
            state: State::Http(Http { deadline, head: false }),
            untimed: Untimeds::default(),
            store_call: None,
            eof: false,
            now,
            date: DateCache { secs: u64::MAX, text: [b' '; 29] },
            serving: String::new(),
            draining: false,
            queued_since: None,
        }
    }

    /// Marks every response with `X-C10k-Worker: worker` (a worker process of several).
    pub fn tagged(mut self, worker: Option<&'static str>) -> Connection {
        self.worker = worker;
        self
    }

    /// Says where the connection came from (the accepted socket's peer address), for the
    /// post rate limit. A driver that cannot tell leaves it out: that client is not limited.
    pub fn from_peer(mut self, peer: Option<IpAddr>) -> Connection {
        self.peer = peer;
        self
    }

    /// Says the connection was accepted at `accepted` and waited (in a queue for a free
    /// worker) before this machine was made for it: its first request must be whole by
    /// `accepted` + the head timeout, as if it had been read from the start. Otherwise a
    /// slow client's deadline would begin only when a worker took it, and a pool kept busy
    /// by slow heads would close them in waves, each a deadline late.
    pub fn queued_since(mut self, accepted: Instant) -> Connection {
        self.queued_since = Some(accepted);
        self
    }

    /// Replaces the waker (a future's may change between polls).
    pub fn set_waker(&mut self, waker: &Waker) {
        if !self.waker.will_wake(waker) {
            self.waker = waker.clone();
        }
    }

    // ---- Inputs ---------------------------------------------------------------------------

    /// Bytes the client sent.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Now) {
        self.now = now;
        // A client that keeps its socket readable may starve the timer of a blocking model:
        // the token's expiry is checked on every input too.
        if self.end_if_token_expired() {
            return;
        }
        match &self.state {
            State::Http(_) => {
                self.decoder.receive(bytes);
                self.advance();
            }
            // A request pipelined behind a wait is kept for later, within the head limit.
            State::Storing(_) | State::LongPoll(_) => {
                self.decoder.receive(bytes);
                if self.decoder.buffered().len() > self.app.limits().max_head_bytes {
                    self.close();
                }
            }
            State::WebSocket(_) => self.ws_pump(bytes),
            // Nothing is expected from an event-stream client but its leaving; a closing
            // connection drains what it gets.
            State::Events(_) | State::Closing { .. } | State::Closed => {}
        }
    }

    /// The client closed its sending side (a read gave 0 bytes).
    pub fn handle_eof(&mut self, now: Now) {
        self.now = now;
        self.eof = true;
        match &self.state {
            // Every complete request is answered first: a client may send its requests
            // and shut down its side while it waits for the answers.
            State::Http(_) => self.advance(),
            // Answered, then closed (`advance` sees the end).
            State::Storing(_) => {}
            // The client left: dropping its subscription forgets its waker.
            State::LongPoll(_) | State::Events(_) => self.close(),
            State::WebSocket(_) => self.ws_pump(&[]),
            State::Closing { lingering: true, .. } => self.state = State::Closed,
            // The client may still read what is queued: go on flushing.
            State::Closing { lingering: false, .. } | State::Closed => {}
        }
    }

    /// The time [`Connection::poll_timeout`] named has come (or not: then nothing happens).
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        let at = now.instant;
        if self.end_if_token_expired() {
            return;
        }
        match &mut self.state {
            State::Http(http) if at >= http.deadline => {
                if http.head {
                    let error = ProtocolError::new(StatusCode::REQUEST_TIMEOUT, "request not received in time (its head and body must arrive within --head-timeout of its first byte)");
                    self.refuse(&error);
                } else {
                    // An idle keep-alive connection: closed without a word (RFC 9112 9.5).
                    self.close();
                }
            }
            State::LongPoll(waiting) if at >= waiting.poll.deadline() => {
                let State::LongPoll(waiting) = std::mem::replace(&mut self.state, State::Closed) else {
                    unreachable!("matched above")
                };
                let Waiting { poll, shape } = *waiting;
                self.reply(&poll.timeout(), shape);
                self.advance();
            }
            State::Events(streaming) if at >= streaming.heartbeat => {
                self.out.extend_from_slice(EventStream::HEARTBEAT);
                streaming.heartbeat = at + EventStream::HEARTBEAT_INTERVAL;
            }
            State::Closing { until, .. } if at >= *until => self.state = State::Closed,
            _ => {}
        }
    }

    /// The waker was woken: the hub may have messages for a waiting reader.
    pub fn handle_wake(&mut self, now: Now) {
        self.now = now;
        match &self.state {
            State::LongPoll(_) => self.poll_longpoll(),
            State::Events(_) => self.pump_events(),
            State::WebSocket(_) => self.ws_pump(&[]),
            // A late or duplicate wake: nothing waits for it.
            _ => {}
        }
    }

    /// The store call of the last [`Action::Store`] has run.
    pub fn handle_store_done(&mut self, done: StoreDone, now: Now) {
        self.now = now;
        match &mut self.state {
            State::Storing(shape) => {
                let shape = *shape;
                let response = self.app.finish_store(done);
                self.reply(&response, shape);
                self.advance();
            }
            State::WebSocket(ws) if ws.storing => {
                ws.storing = false;
                self.ws_send(WsSession::finish_post(done));
                self.ws_pump(&[]);
            }
            // The connection closed meanwhile: the message is stored and published all the
            // same (inside `StoreCall::run`).
            _ => {}
        }
        self.drain_if_stopping();
    }

    /// The store call of the last [`Action::Store`] could not be queued (the offload pool is
    /// full): the client is told to try again.
    pub fn handle_store_busy(&mut self, now: Now) {
        self.now = now;
        match &mut self.state {
            State::Storing(shape) => {
                let shape = *shape;
                let response = self.app.busy(STORE_BUSY);
                self.reply(&response, shape);
                self.advance();
            }
            State::WebSocket(ws) if ws.storing => {
                ws.storing = false;
                self.ws_send(error_frame(STORE_BUSY, None));
                self.ws_pump(&[]);
            }
            _ => {}
        }
        self.drain_if_stopping();
    }

    /// The process is stopping: finish what is in flight, answer what waits, and close
    /// (see "Draining" in the module doc). Given once; later calls change nothing.
    pub fn handle_shutdown(&mut self, now: Now) {
        self.now = now;
        if !self.draining {
            self.draining = true;
            self.drain_if_stopping();
        }
    }

    // ---- Outputs --------------------------------------------------------------------------

    /// The next thing the driver must do, if any. Call until `None` after every input and
    /// every [`Connection::consume`].
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(call) = self.store_call.take() {
            return Some(Action::Store(*call));
        }
        match self.state {
            State::Closing { lingering: false, .. } if self.sent == self.out.len() => {
                self.state = State::Closing { lingering: true, until: self.now.instant + CLOSE_GRACE };
                Some(Action::ShutdownWrite)
            }
            State::Closing { lingering: true, .. } if self.eof => {
                self.state = State::Closed;
                Some(Action::Close)
            }
            State::Closed => Some(Action::Close),
            _ => None,
        }
    }

    /// The bytes to write now (empty: nothing to write). `now` is the clock read just before:
    /// the replies queued since the last call were ready to write then, and their routes'
    /// latencies are recorded with it (see "The latency clock" in the module doc).
    pub fn transmit(&mut self, now: Instant) -> &[u8] {
        self.untimed.time(now, &self.app);
        &self.out[self.sent..]
    }

    /// The socket took the first `n` bytes of [`Connection::transmit`].
    pub fn consume(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        self.history_unread = self.history_unread.saturating_sub(n);
        if self.sent == self.out.len() {
            // All written: give the buffer back, since the next bytes may be minutes away
            // (an idle keep-alive, a long-poll), and with many thousands of connections a
            // buffer kept for each is most of their memory.
            self.out = Vec::new();
            self.sent = 0;
        }
    }

    /// When to call [`Connection::handle_timeout`] (`None`: no deadline runs).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Http(http) => Some(http.deadline),
            State::LongPoll(waiting) => Some(waiting.poll.deadline()),
            State::Events(streaming) => {
                Some(streaming.events.expires().map_or(streaming.heartbeat, |expires| expires.min(streaming.heartbeat)))
            }
            // Its token's expiry, once no post of its is being stored (its ack goes first).
            State::WebSocket(ws) if !ws.storing => ws.expires(),
            State::Closing { until, .. } => Some(*until),
            State::Storing(_) | State::WebSocket(_) | State::Closed => None,
        }
    }

    /// Which readiness of the socket to wait for.
    pub fn interest(&self) -> Interest {
        let pending = self.sent < self.out.len();
        let read = !self.eof
            && match &self.state {
                // While an answer is unwritten, read no more requests: a client that
                // pipelines without reading cannot make us buffer without bound.
                State::Http(_) => !pending,
                State::Storing(_) | State::Closed => false,
                State::WebSocket(ws) => !ws.storing,
                // Waiting readers are read to see them leave; a closing one is drained.
                State::LongPoll(_) | State::Events(_) | State::Closing { .. } => true,
            };
        Interest { read, write: pending }
    }

    // ---- Getters --------------------------------------------------------------------------

    /// Whether the connection is over ([`Action::Close`] was or will be given).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// What the connection is doing, for a watchdog's report.
    pub fn doing(&self) -> &'static str {
        match &self.state {
            State::Http(_) => "reading a request",
            State::Storing(_) => "waiting for a store call",
            State::LongPoll(_) => "long-poll",
            State::Events(_) => "event stream",
            State::WebSocket(_) => "WebSocket",
            State::Closing { .. } => "closing",
            State::Closed => "closed",
        }
    }

    /// The method and path of the last request handled ("" before the first), for a
    /// watchdog's report.
    pub fn serving(&self) -> &str {
        &self.serving
    }

    /// The bytes of buffer memory the connection holds besides its own struct: the
    /// request decoder's, the output's and the untimed replies' (the WebSocket framing's is
    /// not counted).
    pub fn held_bytes(&self) -> usize {
        self.decoder.held_capacity()
            + self.out.capacity()
            + self.untimed.rest.capacity() * std::mem::size_of::<Untimed>()
    }

    // ---- HTTP -----------------------------------------------------------------------------

    /// Decodes and answers buffered requests until one has to wait or more bytes are needed.
    fn advance(&mut self) {
        while let State::Http(_) = self.state {
            match self.decoder.next_event() {
                Ok(Event::Request(request)) => self.on_request(request),
                Ok(Event::Continue) => self.out.extend_from_slice(CONTINUE),
                Ok(Event::NeedData) => {
                    if self.eof {
                        // A request cut short by the end of the stream cannot be answered.
                        let _cut_short = self.decoder.receive_eof();
                        return self.close();
                    }
                    let limits = self.app.limits();
                    let idle = self.decoder.is_idle();
                    let State::Http(http) = &mut self.state else { unreachable!("loop condition") };
                    if idle {
                        *http = Http { deadline: self.now.instant + limits.idle_timeout, head: false };
                        // Between requests, perhaps for long: hold no buffer meanwhile.
                        self.decoder.release_idle_buffer();
                    } else if !http.head {
                        let began = self.queued_since.take().map_or(self.now.instant, |at| at.min(self.now.instant));
                        *http = Http { deadline: began + limits.head_timeout, head: true };
                    }
                    return;
                }
                Err(error) => self.refuse(&error),
            }
        }
    }

    fn on_request(&mut self, mut request: Request) {
        self.queued_since = None;
        request.peer = self.peer;
        let shape = Shape::of(&request, self.now.instant);
        self.serving.clear();
        let _ = write!(self.serving, "{} {}", request.method.as_str(), request.path());
        if self.serving.len() > MAX_SERVING {
            let mut end = MAX_SERVING;
            while !self.serving.is_char_boundary(end) {
                end -= 1;
            }
            self.serving.truncate(end);
        }
        match self.app.handle_request(request, self.now) {
            Outcome::Reply(response) => self.reply(&response, shape),
            Outcome::Store(call) => {
                self.state = State::Storing(shape);
                self.store_call = Some(Box::new(call));
            }
            Outcome::LongPoll(poll) => {
                // The wait may last minutes: hold no buffer meanwhile.
                self.decoder.release_idle_buffer();
                self.state = State::LongPoll(Box::new(Waiting { poll, shape }));
                self.poll_longpoll();
            }
            Outcome::Events(events) => {
                self.decoder.release_idle_buffer();
                self.encode_head(events.head());
                let heartbeat = self.now.instant + EventStream::HEARTBEAT_INTERVAL;
                self.state = State::Events(Box::new(Streaming { events, heartbeat }));
                self.send_history(Connection::pump_events);
            }
            Outcome::WebSocket(accept) => self.upgrade(accept),
        }
        self.drain_if_stopping();
    }

    /// Queues a response; the connection reads requests again, or closes if the response
    /// or the request says so.
    fn reply(&mut self, response: &Response, shape: Shape) {
        if let Some(route) = response.route {
            self.untimed.push(Untimed { route, decoded: shape.decoded });
        }
        let how = Encoding {
            keep_alive: shape.keep_alive && !self.draining,
            head_only: shape.head_only,
            http10: shape.http10,
            date: self.date.at(self.now.unix_ms),
        };
        let keep_alive = match self.worker {
            Some(pid) => response.clone().header("X-C10k-Worker", pid).encode(&how, &mut self.out),
            None => response.encode(&how, &mut self.out),
        };
        self.state = State::Http(Http { deadline: self.now.instant + self.app.limits().idle_timeout, head: false });
        if !keep_alive {
            self.close();
        }
    }

    /// Answers a request that broke the protocol, then closes.
    fn refuse(&mut self, error: &ProtocolError) {
        let response = self.app.refuse(error);
        let how = Encoding { keep_alive: false, head_only: false, http10: false, date: self.date.at(self.now.unix_ms) };
        match self.worker {
            Some(pid) => response.header("X-C10k-Worker", pid).encode(&how, &mut self.out),
            None => response.encode(&how, &mut self.out),
        };
        self.close();
    }

    /// Writes the head of a response whose body is a stream (SSE, the 101 of WebSocket).
    fn encode_head(&mut self, head: &Response) {
        let date = self.date.at(self.now.unix_ms);
        match self.worker {
            Some(pid) => head.clone().header("X-C10k-Worker", pid).encode_head(date, &mut self.out),
            None => head.encode_head(date, &mut self.out),
        }
    }

    /// Starts the close sequence (see the module doc); what the old state held (a
    /// subscription, a session) is dropped now, which forgets its waker.
    fn close(&mut self) {
        if !matches!(self.state, State::Closing { .. } | State::Closed) {
            self.state = State::Closing { lingering: false, until: self.now.instant + CLOSE_GRACE };
        }
    }

    // ---- Draining -------------------------------------------------------------------------

    /// While draining, ends the current state the way the module doc's "Draining" says;
    /// what must finish first (a store call, a half-received request) is left to finish,
    /// and this runs again when it has.
    fn drain_if_stopping(&mut self) {
        if !self.draining {
            return;
        }
        match &self.state {
            State::Http(_) if self.decoder.is_idle() => self.close(),
            State::LongPoll(_) => {
                let State::LongPoll(waiting) = std::mem::replace(&mut self.state, State::Closed) else {
                    unreachable!("matched above")
                };
                let Waiting { poll, shape } = *waiting;
                // `reply` sees `draining`: the answer says `Connection: close` and closes.
                self.reply(&poll.timeout(), shape);
            }
            State::Events(_) => {
                self.out.extend_from_slice(SHUTDOWN_EVENT);
                self.close();
            }
            State::WebSocket(ws) if !ws.storing => self.ws_going_away(),
            State::Http(_) | State::Storing(_) | State::WebSocket(_) | State::Closing { .. } | State::Closed => {}
        }
    }

    /// Sends a close frame with code 1001 (going away) and [`SHUTTING_DOWN`], then closes.
    fn ws_going_away(&mut self) {
        if let State::WebSocket(ws) = &mut self.state {
            let frame = CloseFrame { code: CloseCode::Away, reason: SHUTTING_DOWN.into() };
            let _ = ws.framing.close(&mut Sink(&mut self.out), Some(frame));
            let _ = ws.framing.flush(&mut Sink(&mut self.out));
        }
        self.close();
    }

    // ---- Waiting readers: long-poll and event stream -------------------------------------

    fn poll_longpoll(&mut self) {
        let State::LongPoll(waiting) = &mut self.state else { return };
        if let Poll::Ready(response) = waiting.poll.poll(&self.waker) {
            let shape = waiting.shape;
            self.reply(&response, shape);
            self.advance();
        }
    }

    /// Writes the events that are ready, unless the client has left
    /// [`Limits::max_outgoing_bytes`](crate::limits::Limits) unread: then the next message
    /// for it disconnects it, with an `error` event that says why (the rule of the WebSocket
    /// endpoint too, and Centrifugo's `client_queue_max_size`). What is unread is bounded
    /// by the cap and one batch, whatever the room does; a batch is always written whole,
    /// so that the history a new subscriber is sent may be longer than the cap. The client
    /// resumes from its `Last-Event-ID` (a browser's `EventSource` does it by itself).
    fn pump_events(&mut self) {
        if self.end_if_token_expired() {
            return;
        }
        let allowed = self.unread_allowed();
        let State::Events(streaming) = &mut self.state else { return };
        let mut wrote = false;
        let mut close = false;
        loop {
            if self.out.len() - self.sent >= allowed {
                // Polled only to learn whether a message is ready (and to leave the waker
                // with the hub if none is): what it writes is dropped with the subscriber.
                let mut dropped = Vec::new();
                if let Poll::Ready(_) = streaming.events.poll_events(&self.waker, &mut dropped) {
                    EventStream::write_error(&mut self.out, OUTGOING_FULL);
                    close = true;
                }
                break;
            }
            match streaming.events.poll_events(&self.waker, &mut self.out) {
                Poll::Pending => break,
                Poll::Ready(StreamStatus::Open) => wrote = true,
                Poll::Ready(StreamStatus::Close(_why)) => {
                    close = true;
                    break;
                }
            }
        }
        if wrote {
            streaming.heartbeat = self.now.instant + EventStream::HEARTBEAT_INTERVAL;
        }
        if close {
            self.close();
        }
    }

    /// How many bytes a subscriber may have left unread when its next message is ready:
    /// [`Limits::max_outgoing_bytes`](crate::limits::Limits) on top of what is left of the
    /// history it was sent on subscribing.
    fn unread_allowed(&self) -> usize {
        self.app.limits().max_outgoing_bytes.saturating_add(self.history_unread)
    }

    /// Runs a subscriber's first pump, which writes the response head and the history the
    /// hub holds for it, with no cap: a new subscriber is sent all of it, however long (a
    /// room's 200 messages may pass the cap). What it wrote is then counted apart from the
    /// cap until the socket has taken it.
    fn send_history(&mut self, first_pump: impl FnOnce(&mut Connection)) {
        self.history_unread = usize::MAX;
        first_pump(self);
        self.history_unread = self.out.len() - self.sent;
    }

    // ---- WebSocket ------------------------------------------------------------------------

    fn upgrade(&mut self, accept: WebSocketAccept) {
        let WebSocketAccept { response, endpoint } = accept;
        self.encode_head(&response);
        // The first frames may have come with the upgrade request.
        let early = self.decoder.take_buffered();
        let config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .max_message_size(Some(MAX_WS_MESSAGE))
            .max_frame_size(Some(MAX_WS_MESSAGE))
            // Frames go straight to `out`, which is the one buffer, and the one capped.
            .write_buffer_size(0);
        let framing = WebSocketContext::from_partially_read(early, Role::Server, Some(config));
        self.state = State::WebSocket(Box::new(Ws { framing, endpoint, inbox: VecDeque::new(), storing: false }));
        self.send_history(|c| c.ws_pump(&[]));
    }

    /// Moves frames both ways until neither can proceed: the room's messages out, the
    /// client's frames (first the inbox, then `input`) in and answered. A post's store
    /// call stops the reading until it is answered; what is unread then waits in the inbox.
    fn ws_pump(&mut self, mut input: &[u8]) {
        // Before any frame is read: no post of an expired token is taken, however many it
        // pipelined before its expiry.
        if self.end_if_token_expired() {
            return;
        }
        enum End {
            Wait,
            Close(&'static str),
            /// The client broke RFC 6455: tell it how, then close.
            Fail(CloseCode, String),
            Gone,
        }
        let allowed = self.unread_allowed();
        let Connection { state, out, sent, app, waker, store_call, now, eof, .. } = self;
        let State::WebSocket(ws) = state else { return };
        let mut frames = Vec::new();
        let end = 'pump: loop {
            // Until `Pending`, which is what leaves the waker with the hub. A message ready
            // while the client leaves more than it may unread is not sent: the client is
            // disconnected, as an event stream is (see `pump_events`).
            if let WsEndpoint::Chat(session) = &mut ws.endpoint {
                while let Poll::Ready(status) = session.poll_outgoing(waker, &mut frames) {
                    if out.len() - *sent >= allowed {
                        frames.clear();
                        break 'pump End::Close(OUTGOING_FULL);
                    }
                    for frame in frames.drain(..) {
                        let _ = ws.framing.write(&mut Sink(out), Message::text(frame));
                    }
                    if let StreamStatus::Close(why) = status {
                        break 'pump End::Close(why);
                    }
                }
            }
            // A client that sends more (pings, posts) while leaving past the cap unread
            // what they are answered with is closed too, before its next frame is read.
            let more_from_the_client = !input.is_empty() || !ws.inbox.is_empty();
            if more_from_the_client && out.len() - *sent > allowed {
                break End::Close(OUTGOING_FULL);
            }
            if ws.storing {
                break End::Wait;
            }
            let mut pipe = Pipe { inbox: &mut ws.inbox, input: &mut input, eof: *eof, out };
            match ws.framing.read(&mut pipe) {
                Ok(Message::Text(text)) => match &mut ws.endpoint {
                    WsEndpoint::Chat(session) => match session.handle_text(app, text.as_str(), *now) {
                        WsAction::Reply(frame) => {
                            let _ = ws.framing.write(&mut Sink(out), Message::text(frame));
                        }
                        WsAction::Store(call) => {
                            ws.storing = true;
                            *store_call = Some(Box::new(call));
                        }
                        WsAction::Close(why) => break End::Fail(CloseCode::Policy, why),
                    },
                    WsEndpoint::Echo => {
                        let _ = ws.framing.write(&mut Sink(out), Message::Text(text));
                    }
                },
                Ok(Message::Binary(data)) => {
                    let answer = match ws.endpoint {
                        WsEndpoint::Chat(_) => Message::text(error_frame(BINARY_NOT_UNDERSTOOD, None)),
                        WsEndpoint::Echo => Message::Binary(data),
                    };
                    let _ = ws.framing.write(&mut Sink(out), answer);
                }
                // A ping's pong is queued, and flushed below; a close is echoed, and the
                // next read ends the connection.
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break End::Wait,
                Err(error) => match failure(&error) {
                    Some((code, why)) => break End::Fail(code, why),
                    // The client closed, with or without the closing handshake, and
                    // tungstenite has queued the echo of its close frame if it sent one.
                    None => break End::Gone,
                },
            }
        };
        let _ = ws.framing.flush(&mut Sink(out));
        ws.inbox.extend(input);
        if ws.inbox.is_empty() && ws.inbox.capacity() > 0 {
            ws.inbox = VecDeque::new();
        }
        match end {
            End::Wait => {}
            End::Close(why) => self.ws_close(CloseCode::Policy, why.into()),
            End::Fail(code, why) => self.ws_close(code, why),
            End::Gone => self.close(),
        }
    }

    /// Queues one text frame for the client.
    fn ws_send(&mut self, frame: String) {
        if let State::WebSocket(ws) = &mut self.state {
            let _ = ws.framing.write(&mut Sink(&mut self.out), Message::text(frame));
            let _ = ws.framing.flush(&mut Sink(&mut self.out));
        }
    }

    /// Ends a stream whose token has expired by now ([`crate::chat::auth`]): an event
    /// stream with an `error` event, a WebSocket with close [`TOKEN_EXPIRED_CLOSE`] (once
    /// its post being stored has been answered). Whether it did.
    fn end_if_token_expired(&mut self) -> bool {
        let at = self.now.instant;
        match &self.state {
            State::Events(streaming) if streaming.events.expires().is_some_and(|expires| at >= expires) => {
                EventStream::write_error(&mut self.out, TOKEN_EXPIRED);
                self.close();
                true
            }
            State::WebSocket(ws) if !ws.storing && ws.expires().is_some_and(|expires| at >= expires) => {
                self.ws_close(CloseCode::from(TOKEN_EXPIRED_CLOSE), TOKEN_EXPIRED.to_string());
                true
            }
            _ => false,
        }
    }

    /// Sends a close frame with `code` and `why`, then closes.
    fn ws_close(&mut self, code: CloseCode, why: String) {
        if let State::WebSocket(ws) = &mut self.state {
            let frame = CloseFrame { code, reason: why.into() };
            let _ = ws.framing.close(&mut Sink(&mut self.out), Some(frame));
        }
        self.close();
    }
}

/// The close code and reason for a client whose frames tungstenite refused, or `None` when
/// the error only says the client has gone. RFC 6455 7.1.7: "If _The WebSocket Connection
/// is Established_ ... the endpoint MUST _Fail the WebSocket Connection_ ... An endpoint MAY
/// send a Close frame"; we do, so the client learns why, with the code of 7.4.1:
///
/// > 1002 indicates that an endpoint is terminating the connection due to a protocol error.
/// > 1007 ... because it has received data within a message that was not consistent with
/// > the type of the message (e.g., non-UTF-8 [RFC3629] data within a text message).
/// > 1009 ... because it has received a message that is too big for it to process.
fn failure(error: &tungstenite::Error) -> Option<(CloseCode, String)> {
    use tungstenite::error::ProtocolError as Broken;
    let code = match error {
        // The stream ended without a close frame: nobody is left to tell.
        tungstenite::Error::Protocol(Broken::ResetWithoutClosingHandshake) => return None,
        tungstenite::Error::Protocol(_) => CloseCode::Protocol,
        tungstenite::Error::Utf8(_) => CloseCode::Invalid,
        tungstenite::Error::Capacity(_) => CloseCode::Size,
        _ => return None,
    };
    // A close frame's payload is at most 125 bytes, two of them the code (RFC 6455 5.5).
    let mut why = error.to_string();
    let mut end = why.len().min(MAX_CLOSE_REASON);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    why.truncate(end);
    Some((code, why))
}

/// The stream tungstenite writes frames to: the connection's output buffer, which takes
/// everything (the cap is checked on it, not here). Reading finds nothing yet.
struct Sink<'a>(&'a mut Vec<u8>);

impl Read for Sink<'_> {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The stream tungstenite reads frames from: the inbox, then the bytes just received; then
/// `WouldBlock`, or the end of the stream once the client closed its side. Its writes (a
/// pong, a close echo) go to the output buffer.
struct Pipe<'a, 'b> {
    inbox: &'a mut VecDeque<u8>,
    input: &'a mut &'b [u8],
    eof: bool,
    out: &'a mut Vec<u8>,
}

impl Read for Pipe<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.inbox.is_empty() {
            return self.inbox.read(buf);
        }
        if !self.input.is_empty() {
            return self.input.read(buf);
        }
        if self.eof {
            Ok(0)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

impl Write for Pipe<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
