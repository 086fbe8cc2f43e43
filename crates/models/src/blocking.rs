//! One connection served by straight-line blocking code, for every model that has a stack
//! per connection: `threads`, `pool`, `prefork` (an OS thread or process blocks) and
//! `green` (a coroutine "blocks" by yielding to its scheduler).
//!
//! The code reads like a thread-per-connection server of the 1990s: read, parse, answer,
//! wait. What differs between the models is hidden behind two small traits:
//! - [`Conn`]: the byte stream (a `TcpStream`, or a green stream that yields on
//!   `WouldBlock`), with deadlines and a non-blocking mode for WebSocket;
//! - [`Wait`]: how the handler sleeps until the hub wakes it, its socket becomes ready,
//!   or a deadline passes (a `ppoll(2)` on the socket, woken by a signal, for OS threads; a
//!   yield for green threads).
//!
//! Both end in the same `std::task::Waker` the hub uses, so the application cannot tell
//! which model serves it.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Instant;

use c10k_core::chat::{EventStream, Outcome, StoreCall, StoreDone, StreamStatus, WebSocketAccept, WsAction, WsSession};
use c10k_core::http::{Encoding, Event, ProtocolError, RequestDecoder, Response, StatusCode};
use tracing::debug;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role};
use tungstenite::{Message as WsMessage, WebSocket};

use crate::common::{date, now, tagged, websocket_config, ReplyShape};
use crate::{Context, DbMode};

const READ_CHUNK: usize = 8 * 1024;

/// A byte stream a blocking handler can drive.
pub(crate) trait Conn: Read + Write {
    /// The socket, for readiness waits.
    fn fd(&self) -> RawFd;
    /// Reads after `deadline` fail with `TimedOut` or `WouldBlock` (`None`: no deadline).
    fn set_read_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()>;
    /// In non-blocking mode, reads and writes that cannot proceed return `WouldBlock`.
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()>;
}

/// Which readiness of a socket to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Readable, or hung up.
    Read,
    /// Readable, writable, or hung up.
    ReadWrite,
}

/// Why a wait ended. Any of them may be spurious: re-check and wait again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The waker was woken.
    Waker,
    /// The socket is ready for the interest given.
    Ready,
    /// The deadline passed.
    Deadline,
}

/// How a blocking-style handler sleeps.
pub(crate) trait Wait {
    /// A waker that ends the current (or the next) wait.
    fn waker(&self) -> Waker;
    /// Sleeps until woken, until `socket` is ready, or until `deadline`.
    fn wait(&self, socket: Option<(RawFd, Interest)>, deadline: Option<Instant>) -> io::Result<Woke>;

    /// Says what the handler is serving now (a request's method and path), for a model
    /// that reports handlers holding a shared thread too long (`green`'s watchdog). The
    /// OS-thread models have nothing to report: the default ignores it.
    fn doing(&self, _what: std::fmt::Arguments<'_>) {}

    /// Adds a note to [`Wait::doing`] until the next request (an inline store call).
    fn doing_also(&self, _note: &'static str) {}

    /// `--db-mode native`: what this way of waiting does with a store call. The OS-thread
    /// models' default is the blocking driver on the connection's own thread.
    fn run_native(&self, call: StoreCall, store: &dyn c10k_core::store::Store) -> NativeRun {
        self.doing_also(" (store call on the connection's own thread)");
        NativeRun::Done(call.run(store))
    }
}

/// What [`Wait::run_native`] did with a store call.
pub(crate) enum NativeRun {
    /// Ran it to the end.
    Done(StoreDone),
    /// Stored and published it; telling the other workers may block: not on this thread.
    Announce(c10k_core::chat::Stored),
    /// It has no native form here: run it on the offload pool.
    Offload(StoreCall),
}

impl Conn for std::net::TcpStream {
    fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }

    fn set_read_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        let timeout = deadline.map(|d| {
            // A zero timeout means "none" to the socket API: use the smallest real one.
            d.saturating_duration_since(Instant::now()).max(std::time::Duration::from_millis(1))
        });
        self.set_read_timeout(timeout)
    }

    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, nonblocking)
    }
}

/// One global lock around all application handling (`--giant-lock`): the GIL, or FreeBSD
/// 4's "giant" kernel lock. Present only to measure what it costs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Giant(Option<Arc<Mutex<()>>>);

impl Giant {
    /// A giant lock if `enabled`, else a no-op.
    pub(crate) fn new(enabled: bool) -> Giant {
        Giant(enabled.then(|| Arc::new(Mutex::new(()))))
    }

    fn hold(&self) -> Option<MutexGuard<'_, ()>> {
        self.0.as_ref().map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Serves one connection until it closes. Never panics on peer input.
pub(crate) fn serve_connection<C: Conn, W: Wait>(conn: C, wait: &W, context: &Context, giant: &Giant) -> io::Result<()> {
    let decoder = RequestDecoder::new(context.app.limits());
    let mut driver = Driver { conn, wait, context, giant, decoder, out: Vec::with_capacity(1024), buf: vec![0; READ_CHUNK] };
    driver.run()
}

struct Driver<'a, C: Conn, W: Wait> {
    conn: C,
    wait: &'a W,
    context: &'a Context,
    giant: &'a Giant,
    decoder: RequestDecoder,
    out: Vec<u8>,
    buf: Vec<u8>,
}

enum Next {
    KeepGoing,
    Close,
    WebSocket(WebSocketAccept),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl<'a, C: Conn, W: Wait> Driver<'a, C, W> {
    fn run(&mut self) -> io::Result<()> {
        let limits = self.context.app.limits().clone();
        let mut head_deadline: Option<Instant> = None;
        loop {
            match self.decoder.next_event() {
                Ok(Event::Request(request)) => {
                    head_deadline = None;
                    self.wait.doing(format_args!("{} {}", request.method.as_str(), request.path()));
                    let (shape, now) = ReplyShape::of(&request);
                    let outcome = {
                        let _giant = self.giant.hold();
                        self.context.app.handle_request(request, now)
                    };
                    match self.drive(outcome, shape)? {
                        Next::KeepGoing => {}
                        Next::Close => return self.flush(),
                        Next::WebSocket(accept) => return self.websocket(accept),
                    }
                }
                Ok(Event::Continue) => self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
                Ok(Event::NeedData) => {
                    self.flush()?;
                    let deadline = if self.decoder.is_idle() {
                        head_deadline = None;
                        Instant::now() + limits.idle_timeout
                    } else {
                        *head_deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout)
                    };
                    self.conn.set_read_deadline(Some(deadline))?;
                    match self.conn.read(&mut self.buf) {
                        Ok(0) => {
                            if let Err(e) = self.decoder.receive_eof() {
                                debug!("peer closed mid-request: {e}");
                            }
                            return Ok(());
                        }
                        Ok(n) => self.decoder.receive(&self.buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if is_timeout(&e) && self.decoder.is_idle() => return Ok(()),
                        Err(e) if is_timeout(&e) => {
                            let error = ProtocolError::new(StatusCode::REQUEST_TIMEOUT, "request head not received in time");
                            return self.refuse(&error);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(error) => return self.refuse(&error),
            }
        }
    }

    fn refuse(&mut self, error: &ProtocolError) -> io::Result<()> {
        let response = self.context.app.refuse(error);
        tagged(&response).encode(&Encoding { keep_alive: false, head_only: false, http10: false, date: &date() }, &mut self.out);
        self.flush()?;
        let _ = self.conn.flush();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.conn.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    fn queue(&mut self, response: &Response, shape: ReplyShape) -> Next {
        shape.observe(&self.context.app, response);
        if tagged(response).encode(&shape.encoding(&date()), &mut self.out) {
            Next::KeepGoing
        } else {
            Next::Close
        }
    }

    fn drive(&mut self, outcome: Outcome, shape: ReplyShape) -> io::Result<Next> {
        match outcome {
            Outcome::Reply(response) => Ok(self.queue(&response, shape)),
            Outcome::Store(call) => {
                let response = match self.run_store(call)? {
                    Some(done) => {
                        let _giant = self.giant.hold();
                        self.context.app.finish_store(done)
                    }
                    None => self.context.app.busy("the store is busy; try again shortly"),
                };
                Ok(self.queue(&response, shape))
            }
            Outcome::LongPoll(mut poll) => {
                self.flush()?;
                let waker = self.wait.waker();
                let response = loop {
                    let ready = {
                        let _giant = self.giant.hold();
                        poll.poll(&waker)
                    };
                    if let Poll::Ready(response) = ready {
                        break response;
                    }
                    match self.wait.wait(Some((self.conn.fd(), Interest::Read)), Some(poll.deadline()))? {
                        Woke::Deadline if Instant::now() >= poll.deadline() => break poll.timeout(),
                        Woke::Ready => {
                            if !self.read_while_waiting()? {
                                // The client left: dropping the poll forgets its waker.
                                return Ok(Next::Close);
                            }
                        }
                        _ => {}
                    }
                };
                Ok(self.queue(&response, shape))
            }
            Outcome::Events(events) => {
                self.event_stream(events)?;
                Ok(Next::Close)
            }
            Outcome::WebSocket(accept) => Ok(Next::WebSocket(accept)),
        }
    }

    /// Reads what a client sent while it should be waiting (a pipelined request, or the
    /// end of the connection). Returns false when the client has gone.
    fn read_while_waiting(&mut self) -> io::Result<bool> {
        self.conn.set_nonblocking(true)?;
        let read = self.conn.read(&mut self.buf);
        self.conn.set_nonblocking(false)?;
        match read {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.decoder.receive(&self.buf[..n]);
                Ok(self.decoder.buffered().len() <= self.context.app.limits().max_head_bytes)
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(_) => Ok(false),
        }
    }

    fn event_stream(&mut self, mut events: EventStream) -> io::Result<()> {
        self.flush()?;
        tagged(events.head()).encode_head(&date(), &mut self.out);
        self.flush()?;
        let waker = self.wait.waker();
        let mut next_heartbeat = Instant::now() + EventStream::HEARTBEAT_INTERVAL;
        loop {
            let status = {
                let _giant = self.giant.hold();
                events.poll_events(&waker, &mut self.out)
            };
            if let Poll::Ready(status) = status {
                self.flush()?;
                next_heartbeat = Instant::now() + EventStream::HEARTBEAT_INTERVAL;
                if let StreamStatus::Close(why) = status {
                    debug!("event stream closed: {why}");
                    return Ok(());
                }
                continue;
            }
            match self.wait.wait(Some((self.conn.fd(), Interest::Read)), Some(next_heartbeat))? {
                Woke::Deadline if Instant::now() >= next_heartbeat => {
                    self.conn.write_all(EventStream::HEARTBEAT)?;
                    next_heartbeat = Instant::now() + EventStream::HEARTBEAT_INTERVAL;
                }
                Woke::Ready => {
                    // Nothing is expected from an event-stream client but its leaving.
                    if !self.read_while_waiting()? {
                        return Ok(());
                    }
                    self.decoder.take_buffered();
                }
                _ => {}
            }
        }
    }

    /// Runs a store call where `--db-mode` says. `None` when the offload queue is full.
    fn run_store(&mut self, call: StoreCall) -> io::Result<Option<StoreDone>> {
        run_store(call, self.wait, self.context)
    }

    fn websocket(&mut self, accept: WebSocketAccept) -> io::Result<()> {
        let WebSocketAccept { response, session } = accept;
        self.flush()?;
        tagged(&response).encode_head(&date(), &mut self.out);
        self.flush()?;
        let early = self.decoder.take_buffered();
        self.conn.set_read_deadline(None)?;
        self.conn.set_nonblocking(true)?;
        let mut config = websocket_config();
        config.max_write_buffer_size = self.context.app.limits().max_outgoing_bytes;
        let fd = self.conn.fd();
        let mut ws = WebSocket::from_partially_read(&mut self.conn, early, Role::Server, Some(config));
        let result = ws_loop(&mut ws, fd, session, self.wait, self.context, self.giant);
        let _ = ws.flush();
        result
    }
}

/// The WebSocket phase over a non-blocking stream: send what the room has, read what the
/// client sends, and sleep when neither can proceed.
fn ws_loop<W: Wait, S: Read + Write>(
    ws: &mut WebSocket<S>,
    fd: RawFd,
    mut session: WsSession,
    wait: &W,
    context: &Context,
    giant: &Giant,
) -> io::Result<()> {
    let waker = wait.waker();
    let mut frames = Vec::new();
    let mut unflushed = false;
    // Whether a read may find something: false once one met `WouldBlock` (tungstenite
    // holds no whole frame and the socket is empty), true again when the wait says the
    // socket is ready. A wake-up by the hub then costs one `send`, not two futile reads.
    let mut readable = true;
    loop {
        let mut progressed = false;
        let outgoing = {
            let _giant = giant.hold();
            session.poll_outgoing(&waker, &mut frames)
        };
        if let Poll::Ready(status) = outgoing {
            progressed = true;
            for frame in frames.drain(..) {
                match ws.write(WsMessage::text(frame)) {
                    Ok(()) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(tungstenite::Error::WriteBufferFull(_)) => {
                        close_ws(ws, "subscriber too slow: its outgoing buffer is full");
                        return Ok(());
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            unflushed = true;
            if let StreamStatus::Close(why) = status {
                close_ws(ws, why);
                return Ok(());
            }
        }
        if unflushed {
            match ws.flush() {
                Ok(()) => unflushed = false,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        if readable {
            match ws.read() {
                Ok(WsMessage::Text(text)) => {
                    progressed = true;
                    let action = {
                        let _giant = giant.hold();
                        session.handle_text(&context.app, text.as_str(), now().unix_ms)
                    };
                    let reply = match action {
                        WsAction::Reply(frame) => frame,
                        WsAction::Store(call) => match run_store(call, wait, context)? {
                            Some(done) => WsSession::finish_post(done),
                            None => r#"{"type":"error","error":"the store is busy; try again shortly"}"#.to_string(),
                        },
                    };
                    match ws.write(WsMessage::text(reply)) {
                        Ok(()) => unflushed = true,
                        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => unflushed = true,
                        Err(e) => return Err(io::Error::other(e)),
                    }
                }
                Ok(WsMessage::Binary(_)) => {
                    progressed = true;
                    let reply = r#"{"type":"error","error":"binary frames are not understood; send JSON text"}"#;
                    let _ = ws.write(WsMessage::text(reply));
                    unflushed = true;
                }
                Ok(WsMessage::Ping(_)) => {
                    // tungstenite queued the pong; it goes out with the next flush.
                    progressed = true;
                    unflushed = true;
                }
                Ok(_) => progressed = true,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => readable = false,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Ok(()),
                Err(e) => {
                    debug!("websocket: {e}");
                    return Ok(());
                }
            }
        }
        if !progressed {
            let interest = if unflushed { Interest::ReadWrite } else { Interest::Read };
            readable = wait.wait(Some((fd, interest)), None)? == Woke::Ready;
        }
    }
}

fn close_ws<S: Read + Write>(ws: &mut WebSocket<S>, why: &'static str) {
    let _ = ws.close(Some(CloseFrame { code: CloseCode::Policy, reason: why.into() }));
    let _ = ws.flush();
}

/// Runs a store call where `--db-mode` says: inline, natively ([`Wait::run_native`]), or
/// on the offload pool while this handler sleeps until the pool's job wakes it. `None`
/// when the offload queue is full.
fn run_store<W: Wait>(call: StoreCall, wait: &W, context: &Context) -> io::Result<Option<StoreDone>> {
    let job: Box<dyn FnOnce() -> StoreDone + Send> = match context.db_mode {
        DbMode::Inline => {
            wait.doing_also(" (store call inline, on the serving thread)");
            return Ok(Some(call.run(&*context.store)));
        }
        DbMode::Native => match wait.run_native(call, &*context.store) {
            NativeRun::Done(done) => return Ok(Some(done)),
            NativeRun::Announce(stored) => Box::new(move || stored.announce()),
            NativeRun::Offload(call) => {
                let store = Arc::clone(&context.store);
                Box::new(move || call.run(&*store))
            }
        },
        DbMode::Offload => {
            let store = Arc::clone(&context.store);
            Box::new(move || call.run(&*store))
        }
    };
    offload(job, wait, context)
}

/// Runs `job` on the offload pool while this handler sleeps until the job wakes it.
/// `None` when the pool's queue is full.
fn offload<W: Wait>(job: Box<dyn FnOnce() -> StoreDone + Send>, wait: &W, context: &Context) -> io::Result<Option<StoreDone>> {
    let slot: Arc<Mutex<Option<StoreDone>>> = Arc::default();
    let waker = wait.waker();
    let job = {
        let slot = Arc::clone(&slot);
        Box::new(move || {
            let done = job();
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
            waker.wake();
        })
    };
    if context.offload.submit(job).is_err() {
        return Ok(None);
    }
    loop {
        if let Some(done) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Ok(Some(done));
        }
        // Only the pool's waker can end this wait; the client's bytes wait meanwhile.
        wait.wait(None, None)?;
    }
}
