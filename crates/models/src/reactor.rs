//! `reactor`: one thread, an event loop over select, poll or epoll, and callbacks (nginx, Twisted, Tornado 1.x).
//! Each connection is a small state machine the loop calls back when its socket is ready, its timer expires,
//! the hub wakes it, or the store answers; a store call carries its continuation, as a Twisted Deferred does.
//! Where it blocks: only in the poller's wait. Cost: no thread or stack per connection, only its buffers
//! (one shared read buffer for all), and one core. Hazard: any callback that blocks stalls every connection
//! ("if you block while talking to a database, you block all the requests": `--db-mode inline`); the watchdog names it.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::mem;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use c10k_core::chat::{EventStream, LongPoll, Outcome, StoreCall, StoreDone, StreamStatus, WsAction, WsSession};
use c10k_core::http::{Encoding, Event, ProtocolError, Request, RequestDecoder, Response, StatusCode};
use tracing::{debug, info, warn};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketContext};
use tungstenite::Message as WsMessage;

use crate::common::{date, now, tagged, websocket_config, ConnectionSlot, ReplyShape};
use crate::event::event_loop::{Loop, TimerKey};
use crate::event::shell::{self, Connections, Refused, FIRST_CONNECTION};
use crate::event::{self, Interest, PollerKind, Token};
use crate::{Context, DbMode, Model};


/// One read buffer for the whole loop: only one callback runs at a time.
const READ_BUFFER: usize = 64 * 1024;
/// Reads per readable callback; the poller is level-triggered, so what is left is
/// reported again on the next tick, after the other connections have had their turn.
const READS_PER_CALLBACK: usize = 4;
/// How long a closing connection may take to take its last response and hang up.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// WebSocket frames handled per callback before yielding to the other connections.
const WS_FRAMES_PER_CALLBACK: usize = 64;
/// An output buffer grown past this by one large response is given back once written.
const KEEP_OUT_CAPACITY: usize = 64 * 1024;

const STORE_BUSY: &str = "the store is busy; try again shortly";

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

/// What a connection's callbacks get besides the connection: the loop, the application,
/// and the loop's read buffer.
struct Cx<'a> {
    lp: &'a mut Loop<StoreDone>,
    context: &'a Context,
    buf: &'a mut [u8],
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
        self.conns.insert(token, Conn::new(token, stream, fd, slot, &self.context));
        // Only arm the idle timer: the request is read in a callback of its own when the
        // poller reports it, so that the watchdog times (and names) each connection's
        // work apart from the accept loop's.
        self.with_conn(lp, token, |conn, cx| conn.parse(cx));
        Ok(())
    }

    fn on_ready(&mut self, lp: &mut Loop<StoreDone>, event: event::Event) {
        self.with_conn(lp, event.token, |conn, cx| conn.on_ready(cx, event));
    }

    fn on_timer(&mut self, lp: &mut Loop<StoreDone>, token: Token) {
        self.with_conn(lp, token, |conn, cx| conn.on_timer(cx));
    }

    fn on_woken(&mut self, lp: &mut Loop<StoreDone>, token: Token) {
        self.with_conn(lp, token, |conn, cx| conn.on_woken(cx));
    }

    fn on_message(&mut self, lp: &mut Loop<StoreDone>, token: Token, done: StoreDone) {
        // A connection that closed meanwhile is simply gone: its message is stored and
        // published all the same (inside `StoreCall::run`).
        self.with_conn(lp, token, |conn, cx| conn.on_store_done(cx, done));
    }

    fn open(&self) -> usize {
        self.conns.len()
    }
}

impl Server {
    /// Runs one callback of connection `token`, then lets it write what it can, updates
    /// its interest, and closes it if it is finished.
    fn with_conn(&mut self, lp: &mut Loop<StoreDone>, token: Token, callback: impl FnOnce(&mut Conn, &mut Cx<'_>)) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let mut cx = Cx { lp, context: &self.context, buf: &mut self.buf };
        cx.lp.doing(conn.state.name());
        callback(conn, &mut cx);
        conn.settle(&mut cx);
        if conn.done {
            if let Some(conn) = self.conns.remove(&token) {
                conn.close(lp);
            }
        }
    }
}

/// Runs once a store call is done (or could not be queued: `None`), with the connection
/// that started it. The continuation of "start store call".
type Continuation = Box<dyn FnOnce(&mut Conn, &mut Cx<'_>, Option<StoreDone>)>;

/// Where a connection is in its life; each variant holds what its next callback needs.
enum State {
    /// Reading and answering requests. `head_deadline` is set once a request's first
    /// byte has arrived (10 s to finish, then 408); otherwise the idle timeout runs.
    Reading { head_deadline: Option<Instant> },
    /// A store call runs on the offload pool; the continuation takes its result.
    Storing(Continuation),
    /// A long-poll waits for the hub (woken), its deadline (timer) or the client leaving.
    LongPolling { poll: LongPoll, shape: ReplyShape },
    /// An event stream; `stalled` when it stopped polling because its output is full.
    Streaming { events: EventStream, stalled: bool },
    /// A 101 response is being written; then the connection speaks WebSocket.
    Upgrading { session: WsSession },
    /// Speaking WebSocket (`unflushed`: tungstenite holds bytes the socket did not take;
    /// `readable`: a read may find something, false from a read that met `WouldBlock`
    /// until the poller reports the socket readable, so that a wake-up by the hub costs
    /// one `send` and no futile reads).
    WebSocket { session: WsSession, unflushed: bool, readable: bool },
    /// A close frame is being written.
    WsClosing,
    /// The last response is being written (then `lingering`: our side is shut, and what the
    /// client still sends is read and dropped until it hangs up, so that closing with
    /// unread input does not reset the connection before it read our answer).
    Closing { lingering: bool },
}

impl State {
    /// What a callback in this state is doing, for the watchdog.
    fn name(&self) -> &'static str {
        match self {
            State::Reading { .. } => "reading a request",
            State::Storing(_) => "resuming after a store call",
            State::LongPolling { .. } => "long-poll",
            State::Streaming { .. } => "event stream",
            State::Upgrading { .. } => "WebSocket upgrade",
            State::WebSocket { .. } => "WebSocket",
            State::WsClosing => "closing a WebSocket",
            State::Closing { .. } => "closing",
        }
    }
}

/// What one non-blocking read gave.
enum ReadResult {
    Data(usize),
    Eof,
    Blocked,
    Failed(io::Error),
}

fn read_once(mut stream: &TcpStream, buf: &mut [u8]) -> ReadResult {
    loop {
        return match stream.read(buf) {
            Ok(0) => ReadResult::Eof,
            Ok(n) => ReadResult::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadResult::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => ReadResult::Failed(e),
        };
    }
}

/// What one turn of the WebSocket pump did.
enum WsTurn {
    Progress,
    Idle,
    Store(StoreCall),
    Close(&'static str),
    Gone,
}

/// One client connection.
struct Conn {
    token: Token,
    stream: TcpStream,
    fd: RawFd,
    decoder: RequestDecoder,
    /// Bytes to send; `out[written..]` is what the socket has not taken yet.
    out: Vec<u8>,
    written: usize,
    state: State,
    /// The WebSocket protocol state, once upgraded (it reads and writes `stream`).
    ws: Option<Box<WebSocketContext>>,
    /// What the poller is asked to report now.
    registered: Interest,
    /// The connection's one pending timer (head, idle, long-poll, heartbeat or close).
    timer: Option<TimerKey>,
    /// Made on the first wait, kept for the connection's life.
    waker: Option<Waker>,
    /// Finished: the server closes it after this callback.
    done: bool,
    _slot: ConnectionSlot,
}

impl Conn {
    fn new(token: Token, stream: TcpStream, fd: RawFd, slot: ConnectionSlot, context: &Context) -> Conn {
        Conn {
            token,
            stream,
            fd,
            decoder: RequestDecoder::new(context.app.limits()),
            out: Vec::new(),
            written: 0,
            state: State::Reading { head_deadline: None },
            ws: None,
            registered: Interest::READABLE,
            timer: None,
            waker: None,
            done: false,
            _slot: slot,
        }
    }

    // ---- The callbacks the server dispatches to -------------------------------------------

    fn on_ready(&mut self, cx: &mut Cx<'_>, event: event::Event) {
        if let State::WebSocket { readable, .. } = &mut self.state {
            // One pump for both directions.
            *readable |= event.readable;
            return self.ws_pump(cx);
        }
        // Plain output is written in `settle`, after every callback.
        if event.writable && matches!(self.state, State::WsClosing) {
            self.ws_flush_close(cx);
        }
        if event.readable && !self.done {
            self.on_readable(cx);
        }
    }

    fn on_readable(&mut self, cx: &mut Cx<'_>) {
        match self.state {
            State::Reading { .. } => self.read_requests(cx),
            State::LongPolling { .. } | State::Streaming { .. } => self.read_while_waiting(cx),
            State::Closing { lingering: true } => self.discard_input(cx),
            // `on_ready` pumps a WebSocket itself.
            State::WebSocket { .. } => {}
            // Not asked for: a stale report.
            State::Storing(_) | State::Upgrading { .. } | State::WsClosing | State::Closing { lingering: false } => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>) {
        // Only the connection's current timer counts; anything else is stale.
        match self.timer {
            Some(key) if key.at() <= Instant::now() => self.timer = None,
            _ => return,
        }
        match &self.state {
            State::Reading { .. } if self.decoder.is_idle() => {
                debug!(token = self.token.0, "idle keep-alive connection timed out");
                self.done = true;
            }
            State::Reading { .. } => {
                let error = ProtocolError::new(StatusCode::REQUEST_TIMEOUT, "request head not received in time");
                self.refuse(cx, &error);
            }
            State::LongPolling { .. } => {
                let State::LongPolling { poll, shape } = mem::replace(&mut self.state, State::Reading { head_deadline: None })
                else {
                    unreachable!("matched above")
                };
                self.reply(cx, &poll.timeout(), shape);
                self.resume(cx);
            }
            State::Streaming { .. } => {
                self.out.extend_from_slice(EventStream::HEARTBEAT);
                self.set_timer(cx, Instant::now() + EventStream::HEARTBEAT_INTERVAL);
            }
            State::Closing { .. } | State::WsClosing => self.done = true,
            State::Storing(_) | State::Upgrading { .. } | State::WebSocket { .. } => {}
        }
    }

    fn on_woken(&mut self, cx: &mut Cx<'_>) {
        match self.state {
            State::LongPolling { .. } => {
                self.poll_longpoll(cx);
                self.resume(cx);
            }
            State::Streaming { .. } => self.pump_events(cx),
            State::WebSocket { .. } => self.ws_pump(cx),
            // A late or duplicate wake: nothing waits for it.
            _ => {}
        }
    }

    fn on_store_done(&mut self, cx: &mut Cx<'_>, done: StoreDone) {
        if !matches!(self.state, State::Storing(_)) {
            debug!(token = self.token.0, "a store result for a connection that no longer waits for one");
            return;
        }
        let State::Storing(then) = mem::replace(&mut self.state, State::Reading { head_deadline: None }) else {
            unreachable!("checked above")
        };
        then(self, cx, Some(done));
        self.resume(cx);
    }

    // ---- HTTP: on_readable -> parse -> on_request -> reply | store | wait -------------------

    fn read_requests(&mut self, cx: &mut Cx<'_>) {
        let mut eof = false;
        for _ in 0..READS_PER_CALLBACK {
            match read_once(&self.stream, cx.buf) {
                ReadResult::Data(n) => {
                    self.decoder.receive(&cx.buf[..n]);
                    if n < cx.buf.len() {
                        break;
                    }
                }
                ReadResult::Eof => {
                    eof = true;
                    break;
                }
                ReadResult::Blocked => break,
                ReadResult::Failed(e) => {
                    debug!(token = self.token.0, "read: {e}");
                    self.done = true;
                    return;
                }
            }
        }
        // Answer every complete request first: a client may send its requests and then
        // shut down its side while it waits for the answers.
        self.parse(cx);
        if eof && matches!(self.state, State::Reading { .. }) {
            if let Err(e) = self.decoder.receive_eof() {
                debug!(token = self.token.0, "peer closed mid-request: {e}");
            }
            self.close_after_flush(cx);
        }
    }

    /// Decodes and answers buffered requests until one has to wait or more bytes are needed.
    fn parse(&mut self, cx: &mut Cx<'_>) {
        while matches!(self.state, State::Reading { .. }) && !self.done {
            match self.decoder.next_event() {
                Ok(Event::Request(request)) => {
                    self.state = State::Reading { head_deadline: None };
                    self.on_request(cx, request);
                }
                Ok(Event::Continue) => self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
                Ok(Event::NeedData) => {
                    let limits = cx.context.app.limits();
                    let idle = self.decoder.is_idle();
                    let State::Reading { head_deadline } = &mut self.state else { unreachable!("loop condition") };
                    let deadline = if idle {
                        *head_deadline = None;
                        Instant::now() + limits.idle_timeout
                    } else {
                        *head_deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout)
                    };
                    self.set_timer(cx, deadline);
                    return;
                }
                Err(error) => self.refuse(cx, &error),
            }
        }
    }

    fn on_request(&mut self, cx: &mut Cx<'_>, request: Request) {
        let (shape, now) = ReplyShape::of(&request);
        cx.lp.doing(format!("{} {}", request.method.as_str(), request.path()));
        self.clear_timer(cx);
        match cx.context.app.handle_request(request, now) {
            Outcome::Reply(response) => self.reply(cx, &response, shape),
            Outcome::Store(call) => {
                let then: Continuation = Box::new(move |conn, cx, done| {
                    let response = match done {
                        Some(done) => cx.context.app.finish_store(done),
                        None => cx.context.app.busy(STORE_BUSY),
                    };
                    conn.state = State::Reading { head_deadline: None };
                    conn.reply(cx, &response, shape);
                });
                self.start_store(cx, call, then);
            }
            Outcome::LongPoll(poll) => {
                self.state = State::LongPolling { poll, shape };
                self.poll_longpoll(cx);
            }
            Outcome::Events(events) => {
                tagged(events.head()).encode_head(&date(), &mut self.out);
                self.state = State::Streaming { events, stalled: false };
                self.set_timer(cx, Instant::now() + EventStream::HEARTBEAT_INTERVAL);
                self.pump_events(cx);
            }
            Outcome::WebSocket(accept) => {
                tagged(&accept.response).encode_head(&date(), &mut self.out);
                self.state = State::Upgrading { session: accept.session };
            }
        }
    }

    /// Runs a store call where `--db-mode` says, then `then` with its result: at once on
    /// this thread (inline: the loop stalls for as long as the store takes), or when the
    /// offload pool posts the result back to this connection's token.
    fn start_store(&mut self, cx: &mut Cx<'_>, call: StoreCall, then: Continuation) {
        match cx.context.db_mode {
            // Native is refused for this model at start (`native_db`); inline is the nearest.
            DbMode::Inline | DbMode::Native => {
                cx.lp.doing_also(" (store call inline, on the loop thread)");
                let done = call.run(&*cx.context.store);
                then(self, cx, Some(done));
            }
            DbMode::Offload => {
                let remote = cx.lp.remote();
                let token = self.token;
                let store = Arc::clone(&cx.context.store);
                let job = Box::new(move || remote.post(token, call.run(&*store)));
                match cx.context.offload.submit(job) {
                    Ok(()) => self.state = State::Storing(then),
                    Err(busy) => {
                        debug!("{busy}");
                        then(self, cx, None);
                    }
                }
            }
        }
    }

    /// After a wait ended: answer the requests that were pipelined behind it, or go on
    /// moving WebSocket frames.
    fn resume(&mut self, cx: &mut Cx<'_>) {
        match self.state {
            State::Reading { .. } => self.parse(cx),
            State::WebSocket { .. } => self.ws_pump(cx),
            _ => {}
        }
    }

    fn reply(&mut self, cx: &mut Cx<'_>, response: &Response, shape: ReplyShape) {
        shape.observe(&cx.context.app, response);
        if !tagged(response).encode(&shape.encoding(&date()), &mut self.out) {
            self.close_after_flush(cx);
        }
    }

    /// Answers a request that broke the protocol, then closes.
    fn refuse(&mut self, cx: &mut Cx<'_>, error: &ProtocolError) {
        let response = cx.context.app.refuse(error);
        tagged(&response).encode(&Encoding { keep_alive: false, head_only: false, http10: false, date: &date() }, &mut self.out);
        self.close_after_flush(cx);
    }

    fn close_after_flush(&mut self, cx: &mut Cx<'_>) {
        self.state = State::Closing { lingering: false };
        self.set_timer(cx, Instant::now() + CLOSE_GRACE);
    }

    // ---- Waiting: long-poll and event stream -------------------------------------------

    fn poll_longpoll(&mut self, cx: &mut Cx<'_>) {
        let State::LongPolling { poll, shape } = &mut self.state else { return };
        let waker = self.waker.get_or_insert_with(|| cx.lp.waker(self.token));
        match poll.poll(waker) {
            Poll::Ready(response) => {
                let shape = *shape;
                self.clear_timer(cx);
                self.state = State::Reading { head_deadline: None };
                self.reply(cx, &response, shape);
            }
            Poll::Pending => {
                let deadline = poll.deadline();
                self.set_timer(cx, deadline);
            }
        }
    }

    /// Writes the events that are ready; stops polling (and so lets the hub's bounded
    /// history catch a subscriber that cannot keep up) while the output is full.
    fn pump_events(&mut self, cx: &mut Cx<'_>) {
        let max = cx.context.app.limits().max_outgoing_bytes;
        let State::Streaming { events, stalled } = &mut self.state else { return };
        let waker = self.waker.get_or_insert_with(|| cx.lp.waker(self.token));
        let mut wrote = false;
        let mut close = None;
        loop {
            if self.out.len() - self.written >= max {
                *stalled = true;
                break;
            }
            *stalled = false;
            match events.poll_events(waker, &mut self.out) {
                Poll::Pending => break,
                Poll::Ready(StreamStatus::Open) => wrote = true,
                Poll::Ready(StreamStatus::Close(why)) => {
                    close = Some(why);
                    break;
                }
            }
        }
        if let Some(why) = close {
            debug!(token = self.token.0, "event stream closed: {why}");
            self.close_after_flush(cx);
        } else if wrote {
            self.set_timer(cx, Instant::now() + EventStream::HEARTBEAT_INTERVAL);
        }
    }

    /// Reads what a waiting client sends: a pipelined request (kept for later, within the
    /// head limit), or its hanging up, which ends the wait (and forgets its waker).
    fn read_while_waiting(&mut self, cx: &mut Cx<'_>) {
        match read_once(&self.stream, cx.buf) {
            ReadResult::Data(n) => {
                if let State::LongPolling { .. } = self.state {
                    self.decoder.receive(&cx.buf[..n]);
                    if self.decoder.buffered().len() > cx.context.app.limits().max_head_bytes {
                        self.done = true;
                    }
                }
                // Nothing is expected from an event-stream client: dropped.
            }
            ReadResult::Blocked => {}
            ReadResult::Eof | ReadResult::Failed(_) => self.done = true,
        }
    }

    fn discard_input(&mut self, cx: &mut Cx<'_>) {
        for _ in 0..READS_PER_CALLBACK {
            match read_once(&self.stream, cx.buf) {
                ReadResult::Data(_) => {}
                ReadResult::Blocked => return,
                ReadResult::Eof | ReadResult::Failed(_) => {
                    self.done = true;
                    return;
                }
            }
        }
    }

    // ---- WebSocket ------------------------------------------------------------------------

    fn switch_to_websocket(&mut self, cx: &mut Cx<'_>) {
        let State::Upgrading { session } = mem::replace(&mut self.state, State::WsClosing) else { return };
        self.clear_timer(cx);
        let max_out = cx.context.app.limits().max_outgoing_bytes;
        let mut config = websocket_config();
        // tungstenite insists that the cap exceeds the size at which it starts writing.
        config.write_buffer_size = config.write_buffer_size.min(max_out / 2);
        config.max_write_buffer_size = max_out.max(config.write_buffer_size + 1);
        let early = self.decoder.take_buffered();
        self.ws = Some(Box::new(WebSocketContext::from_partially_read(early, Role::Server, Some(config))));
        // `early` may hold whole frames: read before waiting for the poller.
        self.state = State::WebSocket { session, unflushed: false, readable: true };
        self.ws_pump(cx);
    }

    /// Moves frames both ways until neither can proceed (see `blocking.rs`'s `ws_loop`,
    /// the same logic without the sleeping).
    fn ws_pump(&mut self, cx: &mut Cx<'_>) {
        for _ in 0..WS_FRAMES_PER_CALLBACK {
            match self.ws_turn(cx) {
                WsTurn::Progress => {}
                WsTurn::Idle => return,
                WsTurn::Close(why) => return self.ws_close(cx, why),
                WsTurn::Gone => {
                    self.done = true;
                    return;
                }
                WsTurn::Store(call) => {
                    let State::WebSocket { session, .. } = mem::replace(&mut self.state, State::WsClosing) else {
                        unreachable!("ws_turn runs in the WebSocket state")
                    };
                    let then: Continuation = Box::new(move |conn, cx, done| {
                        let frame = match done {
                            Some(done) => WsSession::finish_post(done),
                            None => busy_frame(),
                        };
                        // The client may have sent more meanwhile, and tungstenite may hold it.
                        conn.state = State::WebSocket { session, unflushed: true, readable: true };
                        match conn.ws_write(frame) {
                            WsTurn::Close(why) => conn.ws_close(cx, why),
                            WsTurn::Gone => conn.done = true,
                            // The pump goes on: this loop when inline, `resume` when offloaded.
                            _ => {}
                        }
                    });
                    self.start_store(cx, call, then);
                    if !matches!(self.state, State::WebSocket { .. }) {
                        return; // offloaded (or closed): `on_store_done` resumes the pump
                    }
                }
            }
        }
        // Budget spent with work left (tungstenite may hold whole frames that the poller
        // cannot see): come back after the other connections had their turn.
        if let Some(waker) = &self.waker {
            waker.wake_by_ref();
        }
    }

    fn ws_turn(&mut self, cx: &mut Cx<'_>) -> WsTurn {
        let (State::WebSocket { session, unflushed, readable }, Some(ws)) = (&mut self.state, self.ws.as_deref_mut())
        else {
            return WsTurn::Gone;
        };
        let mut stream = &self.stream;
        let waker = self.waker.get_or_insert_with(|| cx.lp.waker(self.token));
        let mut progressed = false;
        let mut frames = Vec::new();
        if let Poll::Ready(status) = session.poll_outgoing(waker, &mut frames) {
            progressed = true;
            for frame in frames {
                match ws.write(&mut stream, WsMessage::text(frame)) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(tungstenite::Error::WriteBufferFull(_)) => {
                        return WsTurn::Close("subscriber too slow: its outgoing buffer is full")
                    }
                    Err(e) => {
                        debug!("websocket write: {e}");
                        return WsTurn::Gone;
                    }
                }
            }
            *unflushed = true;
            if let StreamStatus::Close(why) = status {
                return WsTurn::Close(why);
            }
        }
        if *unflushed {
            match ws.flush(&mut stream) {
                Ok(()) => *unflushed = false,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    debug!("websocket flush: {e}");
                    return WsTurn::Gone;
                }
            }
        }
        if !*readable {
            return if progressed { WsTurn::Progress } else { WsTurn::Idle };
        }
        let reply = match ws.read(&mut stream) {
            Ok(WsMessage::Text(text)) => match session.handle_text(&cx.context.app, text.as_str(), now().unix_ms) {
                WsAction::Reply(frame) => frame,
                WsAction::Store(call) => return WsTurn::Store(call),
            },
            Ok(WsMessage::Binary(_)) => {
                r#"{"type":"error","error":"binary frames are not understood; send JSON text"}"#.to_string()
            }
            Ok(WsMessage::Ping(_)) => {
                // tungstenite queued the pong; the pump's next flush sends it.
                *unflushed = true;
                return WsTurn::Progress;
            }
            Ok(_) => return WsTurn::Progress,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return if progressed { WsTurn::Progress } else { WsTurn::Idle };
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return WsTurn::Gone,
            Err(e) => {
                debug!("websocket: {e}");
                return WsTurn::Gone;
            }
        };
        match self.ws_write(reply) {
            WsTurn::Idle => WsTurn::Progress,
            other => other,
        }
    }

    /// Queues one text frame (flushed by the pump).
    fn ws_write(&mut self, frame: String) -> WsTurn {
        let (State::WebSocket { unflushed, .. }, Some(ws)) = (&mut self.state, self.ws.as_deref_mut()) else {
            return WsTurn::Gone;
        };
        *unflushed = true;
        match ws.write(&mut &self.stream, WsMessage::text(frame)) {
            Ok(()) => WsTurn::Idle,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => WsTurn::Idle,
            Err(tungstenite::Error::WriteBufferFull(_)) => WsTurn::Close("subscriber too slow: its outgoing buffer is full"),
            Err(e) => {
                debug!("websocket write: {e}");
                WsTurn::Gone
            }
        }
    }

    /// Sends a close frame with code 1008 (policy) and `why`, then closes.
    fn ws_close(&mut self, cx: &mut Cx<'_>, why: &'static str) {
        debug!(token = self.token.0, "closing WebSocket: {why}");
        self.state = State::WsClosing;
        self.set_timer(cx, Instant::now() + CLOSE_GRACE);
        if let Some(ws) = self.ws.as_deref_mut() {
            let frame = CloseFrame { code: CloseCode::Policy, reason: why.into() };
            // Queued even when the write would block; flushed below or when writable.
            let _ = ws.close(&mut &self.stream, Some(frame));
        }
        self.ws_flush_close(cx);
    }

    fn ws_flush_close(&mut self, cx: &mut Cx<'_>) {
        let Some(ws) = self.ws.as_deref_mut() else {
            self.done = true;
            return;
        };
        match ws.flush(&mut &self.stream) {
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Written (or the peer is gone): hang up once the client has read it.
            _ => {
                self.state = State::Closing { lingering: false };
                self.set_timer(cx, Instant::now() + CLOSE_GRACE);
            }
        }
    }

    // ---- After every callback: write, move on, and tell the poller what to report -------

    fn settle(&mut self, cx: &mut Cx<'_>) {
        for _ in 0..2 {
            if self.done {
                return;
            }
            if let Err(e) = self.flush() {
                debug!(token = self.token.0, "write: {e}");
                self.done = true;
                return;
            }
            if self.written < self.out.len() {
                break;
            }
            // Output drained: the states that were waiting for that move on.
            match self.state {
                State::Upgrading { .. } => self.switch_to_websocket(cx),
                State::Closing { lingering: false } => {
                    // Our side is finished; keep reading until the client hangs up.
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.state = State::Closing { lingering: true };
                    self.discard_input(cx);
                }
                State::Streaming { stalled: true, .. } => self.pump_events(cx),
                _ => break,
            }
        }
        if self.done {
            return;
        }
        let wanted = self.wanted();
        if wanted != self.registered {
            match cx.lp.reregister(self.fd, self.token, wanted) {
                Ok(()) => self.registered = wanted,
                Err(e) => {
                    warn!(token = self.token.0, "cannot change what the poller watches: {e}");
                    self.done = true;
                }
            }
        }
    }

    /// What the poller should report for this connection, given its state.
    fn wanted(&self) -> Interest {
        let pending = self.written < self.out.len();
        match &self.state {
            // While an answer is unwritten, stop reading: a client that pipelines without
            // reading cannot make us buffer without bound.
            State::Reading { .. } => {
                if pending {
                    Interest::WRITABLE
                } else {
                    Interest::READABLE
                }
            }
            State::Storing(_) | State::Upgrading { .. } | State::Closing { lingering: false } => {
                Interest { readable: false, writable: pending }
            }
            State::LongPolling { .. } | State::Streaming { .. } => Interest { readable: true, writable: pending },
            State::WebSocket { unflushed, .. } => Interest { readable: true, writable: *unflushed },
            State::WsClosing => Interest::WRITABLE,
            State::Closing { lingering: true } => Interest::READABLE,
        }
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match (&self.stream).write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.written = 0;
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Ok(())
    }

    fn set_timer(&mut self, cx: &mut Cx<'_>, at: Instant) {
        if self.timer.map(TimerKey::at) == Some(at) {
            return;
        }
        self.clear_timer(cx);
        self.timer = Some(cx.lp.add_timer(at, self.token));
    }

    fn clear_timer(&mut self, cx: &mut Cx<'_>) {
        if let Some(key) = self.timer.take() {
            cx.lp.cancel_timer(key);
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

fn busy_frame() -> String {
    format!(r#"{{"type":"error","error":"{STORE_BUSY}"}}"#)
}
