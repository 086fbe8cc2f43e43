//! `async`: stackless coroutines (Rust `async`/`await`) on tokio's multi-threaded scheduler.
//!
//! Each connection is a task; a task that must wait returns `Pending` and its worker thread
//! runs another. This is the talk's generator coroutines, scheduled the way Erlang maps
//! green threads onto OS threads: M tasks on N threads, so it uses every core.
//! Where it blocks: nowhere, unless a task calls blocking code (`--db-mode inline` does
//! exactly that on purpose). Cost: the task (~1.7 KiB), the decoder and the socket per idle
//! connection: no buffer is held while a connection sleeps (one 8 KiB read buffer per worker
//! thread, output buffers freed after each flush), ~3.5-4.5 KiB in all measured.
//! Hazard: a task that computes or blocks without awaiting holds its worker thread; with
//! few workers that stalls every connection queued behind it.

use std::future::poll_fn;
use std::io;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_core::chat::{Outcome, StoreCall, StoreDone, StreamStatus, WebSocketAccept, WsAction, WsSession};
use c10k_core::http::{Event, ProtocolError, RequestDecoder, Response, StatusCode};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use crate::acceptor::{keep_reserve_descriptor, refuse_with_reserve, Reserve};
use crate::common::{date, is_fd_exhaustion, now, tagged, websocket_config, ConnectionSlot, ReplyShape};
use crate::{Context, DbMode, Model};

/// Bytes read from a socket at a time, into the worker thread's scratch buffer (see
/// [`read_into`]). Sized for a typical request head.
const READ_CHUNK: usize = 8 * 1024;
/// Room made in a connection's output buffer when it has none (it is freed while the
/// connection sleeps).
const OUT_CHUNK: usize = 1024;

thread_local! {
    /// One read buffer per worker thread, not per connection: a read copies what arrived
    /// into the connection's decoder at once, so no connection keeps 8 KiB while it waits
    /// (with 100,000 idle connections that was most of the model's memory).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_CHUNK].into());
}

/// Waits until `stream` is readable, reads what is there into this thread's scratch
/// buffer and hands it to `decoder` (or drops it, with `None`). Returns the bytes read;
/// 0 is the peer's end of stream. Cancel-safe: nothing is lost if the future is dropped
/// while it waits, since nothing is read before the synchronous `try_read`.
async fn read_into(stream: &TcpStream, mut decoder: Option<&mut RequestDecoder>) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        let read = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = stream.try_read(&mut scratch)?;
            if let Some(decoder) = decoder.as_deref_mut() {
                decoder.receive(&scratch[..n]);
            }
            Ok::<usize, io::Error>(n)
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
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
        // Tasks still running (long-polls, streams) are dropped: their clients reconnect.
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

async fn accept_loop(listener: StdListener, context: Context) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    keep_reserve_descriptor();
    let open = Arc::new(AtomicUsize::new(0));
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
    info!("async model: stopped accepting");
    Ok(())
}

async fn refuse(mut stream: TcpStream, response: Response) {
    let mut out = Vec::new();
    tagged(&response).encode(&c10k_core::http::Encoding { keep_alive: false, head_only: false, http10: false, date: &date() }, &mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// One client connection: HTTP requests until it closes or switches protocol.
struct Connection {
    stream: TcpStream,
    context: Context,
    decoder: RequestDecoder,
    /// Responses encoded and not yet written; freed (capacity 0) while the connection
    /// sleeps, so an idle connection holds no buffer at all.
    out: Vec<u8>,
}

/// How a request ended for the connection.
enum Next {
    /// Read the next request.
    KeepGoing,
    /// Close the connection.
    Close,
    /// Switch the connection to WebSocket.
    WebSocket(WebSocketAccept),
}

impl Connection {
    fn new(stream: TcpStream, context: Context) -> Connection {
        let decoder = RequestDecoder::new(context.app.limits());
        Connection { stream, context, decoder, out: Vec::new() }
    }

    async fn run(mut self) -> io::Result<()> {
        let limits = self.context.app.limits().clone();
        let mut head_deadline: Option<Instant> = None;
        loop {
            match self.decoder.next_event() {
                Ok(Event::Request(request)) => {
                    head_deadline = None;
                    let (shape, now) = ReplyShape::of(&request);
                    let outcome = self.context.app.handle_request(request, now);
                    let next = match outcome {
                        // Most requests: answered at once, no future at all.
                        Outcome::Reply(response) => self.queue(&response, shape),
                        // The rest wait (a store call, a long-poll, a stream): boxed, so
                        // their large futures do not make every connection's task as big
                        // (it was 3.3 KiB per idle connection in place, 1 KiB boxed).
                        outcome => Box::pin(self.drive(outcome, shape)).await?,
                    };
                    match next {
                        Next::KeepGoing => {}
                        Next::Close => {
                            self.flush().await?;
                            return Ok(());
                        }
                        // Boxed, like `drive`: only a WebSocket connection pays for its future.
                        Next::WebSocket(accept) => return Box::pin(self.websocket(accept)).await,
                    }
                }
                Ok(Event::Continue) => self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n"),
                Ok(Event::NeedData) => {
                    // Everything decodable is answered: send the (pipelined) responses.
                    self.flush().await?;
                    let deadline = if self.decoder.is_idle() {
                        head_deadline = None;
                        Instant::now() + limits.idle_timeout
                    } else {
                        *head_deadline.get_or_insert_with(|| Instant::now() + limits.head_timeout)
                    };
                    if self.decoder.is_idle() {
                        // Between requests, perhaps for long: hold no buffers meanwhile.
                        self.decoder.release_idle_buffer();
                        self.out = Vec::new();
                    }
                    let read = timeout_at(deadline.into(), read_into(&self.stream, Some(&mut self.decoder))).await;
                    match read {
                        Err(_elapsed) if self.decoder.is_idle() => return Ok(()),
                        Err(_elapsed) => {
                            let error = ProtocolError::new(StatusCode::REQUEST_TIMEOUT, "request head not received in time");
                            return Box::pin(self.refuse(&error)).await;
                        }
                        Ok(Ok(0)) => {
                            if let Err(error) = self.decoder.receive_eof() {
                                debug!("peer closed mid-request: {error}");
                            }
                            return Ok(());
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e),
                    }
                }
                Err(error) => return Box::pin(self.refuse(&error)).await,
            }
        }
    }

    /// Answers a request that broke the protocol, then closes.
    async fn refuse(&mut self, error: &ProtocolError) -> io::Result<()> {
        let response = self.context.app.refuse(error);
        {
            // In a block: the date is a thread's shared string, not to be held across an await.
            let how = c10k_core::http::Encoding { keep_alive: false, head_only: false, http10: false, date: &date() };
            tagged(&response).encode(&how, &mut self.out);
        }
        self.flush().await?;
        self.stream.shutdown().await
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    fn queue(&mut self, response: &Response, shape: ReplyShape) -> Next {
        shape.observe(&self.context.app, response);
        if self.out.capacity() == 0 {
            self.out.reserve(OUT_CHUNK);
        }
        if tagged(response).encode(&shape.encoding(&date()), &mut self.out) {
            Next::KeepGoing
        } else {
            Next::Close
        }
    }

    async fn drive(&mut self, outcome: Outcome, shape: ReplyShape) -> io::Result<Next> {
        match outcome {
            Outcome::Reply(response) => Ok(self.queue(&response, shape)),
            Outcome::Store(call) => {
                let response = match run_store(&self.context, call).await {
                    Some(done) => self.context.app.finish_store(done),
                    None => self.context.app.busy("the store is busy; try again shortly"),
                };
                Ok(self.queue(&response, shape))
            }
            Outcome::LongPoll(poll) => self.long_poll(poll, shape).await,
            Outcome::Events(events) => self.event_stream(events).await,
            Outcome::WebSocket(accept) => Ok(Next::WebSocket(accept)),
        }
    }

    /// Holds a long-poll until a message, its deadline or the client's hang-up.
    async fn long_poll(&mut self, mut poll: c10k_core::chat::LongPoll, shape: ReplyShape) -> io::Result<Next> {
        self.flush().await?;
        // The wait may last minutes: hold no buffers meanwhile.
        self.out = Vec::new();
        self.decoder.release_idle_buffer();
        let response = loop {
            let deadline = poll.deadline();
            tokio::select! {
                response = poll_fn(|cx| poll.poll(cx.waker())) => break response,
                _ = sleep_until(deadline.into()) => break poll.timeout(),
                read = read_into(&self.stream, Some(&mut self.decoder)) => match read {
                    // The client left: drop the poll, which forgets its waker.
                    Ok(0) | Err(_) => return Ok(Next::Close),
                    Ok(_) => {
                        if self.decoder.buffered().len() > self.context.app.limits().max_head_bytes {
                            return Ok(Next::Close);
                        }
                    }
                },
            }
        };
        Ok(self.queue(&response, shape))
    }

    /// Streams Server-Sent Events until the client leaves or the stream must close.
    async fn event_stream(&mut self, mut events: c10k_core::chat::EventStream) -> io::Result<Next> {
        self.flush().await?;
        tagged(events.head()).encode_head(&date(), &mut self.out);
        self.flush().await?;
        let mut heartbeat = tokio::time::interval_at(
            tokio::time::Instant::now() + c10k_core::chat::EventStream::HEARTBEAT_INTERVAL,
            c10k_core::chat::EventStream::HEARTBEAT_INTERVAL,
        );
        loop {
            tokio::select! {
                status = poll_fn(|cx| events.poll_events(cx.waker(), &mut self.out)) => {
                    self.flush().await?;
                    // Idle until the next event: hold no buffer meanwhile.
                    self.out = Vec::new();
                    if let StreamStatus::Close(why) = status {
                        debug!("event stream closed: {why}");
                        return Ok(Next::Close);
                    }
                }
                _ = heartbeat.tick() => {
                    self.stream.write_all(c10k_core::chat::EventStream::HEARTBEAT).await?;
                }
                read = read_into(&self.stream, None) => match read {
                    Ok(0) | Err(_) => return Ok(Next::Close),
                    Ok(_) => {} // Nothing is expected from an event-stream client.
                },
            }
        }
    }

    async fn websocket(mut self, accept: WebSocketAccept) -> io::Result<()> {
        let WebSocketAccept { response, mut session } = accept;
        self.flush().await?;
        tagged(&response).encode_head(&date(), &mut self.out);
        self.flush().await?;
        let early = self.decoder.take_buffered();
        let stream = self.stream;
        let config = websocket_config();
        let mut ws = WebSocketStream::from_partially_read(stream, early, Role::Server, Some(config)).await;
        let mut frames: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                status = poll_fn(|cx| session.poll_outgoing(cx.waker(), &mut frames)) => {
                    for frame in frames.drain(..) {
                        ws.feed(WsMessage::text(frame)).await.map_err(ws_io)?;
                    }
                    ws.flush().await.map_err(ws_io)?;
                    if let StreamStatus::Close(why) = status {
                        let frame = CloseFrame { code: CloseCode::Policy, reason: why.into() };
                        let _ = ws.close(Some(frame)).await;
                        return Ok(());
                    }
                }
                incoming = ws.next() => match incoming {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        debug!("websocket: {e}");
                        return Ok(());
                    }
                    Some(Ok(WsMessage::Text(text))) => {
                        let reply = match session.handle_text(&self.context.app, text.as_str(), now().unix_ms) {
                            WsAction::Reply(frame) => frame,
                            WsAction::Store(call) => match run_store(&self.context, call).await {
                                Some(done) => WsSession::finish_post(done),
                                None => busy_frame(),
                            },
                        };
                        ws.send(WsMessage::text(reply)).await.map_err(ws_io)?;
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        let reply = r#"{"type":"error","error":"binary frames are not understood; send JSON text"}"#;
                        ws.send(WsMessage::text(reply)).await.map_err(ws_io)?;
                    }
                    // Pings are answered by tungstenite; a close is echoed, then `next` ends.
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

fn busy_frame() -> String {
    r#"{"type":"error","error":"the store is busy; try again shortly"}"#.to_string()
}

fn ws_io(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

/// Runs a store call where `--db-mode` says. `None` when the offload queue is full (or,
/// never in practice, native mode without its driver).
async fn run_store(context: &Context, call: StoreCall) -> Option<StoreDone> {
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
