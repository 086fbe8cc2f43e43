//! `async`: stackless coroutines (Rust `async`/`await`) on tokio's multi-threaded scheduler.
//!
//! Each connection is a task; a task that must wait returns `Pending` and its worker thread
//! runs another. This is the talk's generator coroutines, scheduled the way Erlang maps
//! green threads onto OS threads: M tasks on N threads, so it uses every core.
//! Where it blocks: nowhere, unless a task calls blocking code (`--db-mode inline` does
//! exactly that on purpose). Cost: a few hundred bytes per idle connection plus buffers.
//! Hazard: a task that computes or blocks without awaiting holds its worker thread; with
//! few workers that stalls every connection queued behind it.

use std::future::poll_fn;
use std::io;
use std::net::TcpListener as StdListener;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_core::chat::{Outcome, StoreCall, StoreDone, StreamStatus, WebSocketAccept, WsAction, WsSession};
use c10k_core::http::{Event, ProtocolError, RequestDecoder, Response, StatusCode};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use crate::common::{date, is_fd_exhaustion, now, tagged, websocket_config, ConnectionSlot, ReplyShape};
use crate::{Context, DbMode, Model};

/// Read buffer per connection while it is read from. Sized for a typical request head.
const READ_CHUNK: usize = 8 * 1024;

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
            Err(e) if is_fd_exhaustion(&e) => {
                warn!("accept: {e}; pausing accepts for 100 ms (raise the file limit or lower --max-connections)");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
    out: Vec<u8>,
    buf: Box<[u8]>,
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
        Connection { stream, context, decoder, out: Vec::with_capacity(1024), buf: vec![0; READ_CHUNK].into() }
    }

    async fn run(mut self) -> io::Result<()> {
        let limits = self.context.app.limits().clone();
        let mut head_deadline: Option<Instant> = None;
        loop {
            match self.decoder.next_event() {
                Ok(Event::Request(request)) => {
                    head_deadline = None;
                    let shape = ReplyShape::of(&request);
                    let outcome = self.context.app.handle_request(request, now());
                    match self.drive(outcome, shape).await? {
                        Next::KeepGoing => {}
                        Next::Close => {
                            self.flush().await?;
                            return Ok(());
                        }
                        Next::WebSocket(accept) => return self.websocket(accept).await,
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
                    let read = timeout_at(deadline.into(), self.stream.read(&mut self.buf)).await;
                    match read {
                        Err(_elapsed) if self.decoder.is_idle() => return Ok(()),
                        Err(_elapsed) => {
                            let error = ProtocolError::new(StatusCode::REQUEST_TIMEOUT, "request head not received in time");
                            return self.refuse(&error).await;
                        }
                        Ok(Ok(0)) => {
                            if let Err(error) = self.decoder.receive_eof() {
                                debug!("peer closed mid-request: {error}");
                            }
                            return Ok(());
                        }
                        Ok(Ok(n)) => self.decoder.receive(&self.buf[..n]),
                        Ok(Err(e)) => return Err(e),
                    }
                }
                Err(error) => return self.refuse(&error).await,
            }
        }
    }

    /// Answers a request that broke the protocol, then closes.
    async fn refuse(&mut self, error: &ProtocolError) -> io::Result<()> {
        let response = self.context.app.refuse(error);
        let how = c10k_core::http::Encoding { keep_alive: false, head_only: false, http10: false, date: &date() };
        tagged(&response).encode(&how, &mut self.out);
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
            Outcome::LongPoll(mut poll) => {
                self.flush().await?;
                let response = loop {
                    let deadline = poll.deadline();
                    tokio::select! {
                        response = poll_fn(|cx| poll.poll(cx.waker())) => break response,
                        _ = sleep_until(deadline.into()) => break poll.timeout(),
                        read = self.stream.read(&mut self.buf) => match read {
                            // The client left: drop the poll, which forgets its waker.
                            Ok(0) | Err(_) => return Ok(Next::Close),
                            Ok(n) => {
                                self.decoder.receive(&self.buf[..n]);
                                if self.decoder.buffered().len() > self.context.app.limits().max_head_bytes {
                                    return Ok(Next::Close);
                                }
                            }
                        },
                    }
                };
                Ok(self.queue(&response, shape))
            }
            Outcome::Events(mut events) => {
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
                            if let StreamStatus::Close(why) = status {
                                debug!("event stream closed: {why}");
                                return Ok(Next::Close);
                            }
                        }
                        _ = heartbeat.tick() => {
                            self.stream.write_all(c10k_core::chat::EventStream::HEARTBEAT).await?;
                        }
                        read = self.stream.read(&mut self.buf) => match read {
                            Ok(0) | Err(_) => return Ok(Next::Close),
                            Ok(_) => {} // Nothing is expected from an event-stream client.
                        },
                    }
                }
            }
            Outcome::WebSocket(accept) => Ok(Next::WebSocket(accept)),
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

/// Runs a store call where `--db-mode` says. `None` when the offload queue is full.
async fn run_store(context: &Context, call: StoreCall) -> Option<StoreDone> {
    match context.db_mode {
        DbMode::Inline => Some(call.run(&*context.store)),
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
