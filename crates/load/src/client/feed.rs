//! A subscription to a room, over any of the three ways c10k delivers messages: the
//! native long-poll (re-issued from the last id after every answer), Server-Sent Events,
//! or WebSocket. A scenario reads all three the same way: [`Feed::next`] gives the next
//! batch of messages, in the order the server sent them.

use std::net::{IpAddr, SocketAddr};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::http::{get, Conn};
use super::sse::SseParser;
use super::{connect, ClientError};
use crate::scenarios::Via;

/// Seconds a long-poll asks the server to wait (the server caps it at its own
/// `--longpoll-wait`); an empty answer is simply re-issued.
const LONGPOLL_WAIT_SECS: u32 = 30;

/// A message as the native API, SSE and WebSocket carry it (the fields we need).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireMessage {
    pub id: u64,
    pub body: String,
}

/// What a subscription produced: messages (in the order received), a reset, or both.
#[derive(Debug, Default)]
pub(crate) struct FeedEvent {
    /// The server said it could not resume from our position (`reset`): messages were
    /// skipped.
    pub reset: bool,
    /// The messages, in the order received.
    pub messages: Vec<WireMessage>,
}

/// Where to subscribe.
#[derive(Debug, Clone)]
pub(crate) struct FeedSpec {
    pub via: Via,
    pub addr: SocketAddr,
    pub room: String,
    /// Receive messages with ids after this one.
    pub after: u64,
}

/// One subscriber's connection.
#[derive(Debug)]
pub(crate) enum Feed {
    /// `GET /api/rooms/{room}/messages?after=ID&wait=30`, re-issued after each answer.
    LongPoll { conn: Conn, host: String, room: String, after: u64, in_flight: bool },
    /// `GET /api/rooms/{room}/events?after=ID`, read until the server closes it.
    Sse { conn: Conn, parser: SseParser },
    /// `GET /api/rooms/{room}/ws?after=ID`, JSON text frames.
    Ws(Box<WebSocketStream<TcpStream>>),
}

#[derive(Deserialize)]
struct PollAnswer {
    messages: Vec<WireMessage>,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    last_id: u64,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Frame {
    Message {
        message: WireMessage,
    },
    Reset {},
    Error {
        error: String,
    },
    #[serde(other)]
    Other,
}

impl Feed {
    /// Subscribes. Returns once the server has the subscription: the WebSocket handshake
    /// or the SSE head is back; for long-poll, once the first request is written (the
    /// server gives no sign before it answers).
    pub(crate) async fn open(spec: &FeedSpec, source: Option<IpAddr>) -> Result<Feed, ClientError> {
        let host = spec.addr.to_string();
        let room = &spec.room;
        match spec.via {
            Via::LongPoll => {
                let conn = Conn::open(spec.addr, source).await?;
                let mut feed = Feed::LongPoll { conn, host, room: room.clone(), after: spec.after, in_flight: false };
                feed.issue_poll().await?;
                Ok(feed)
            }
            Via::Sse => {
                let mut conn = Conn::open(spec.addr, source).await?;
                let path = format!("/api/rooms/{room}/events?after={}", spec.after);
                conn.send(&get(&path, &host)).await?;
                let head = conn.head().await?;
                if head.status != 200 {
                    return Err(ClientError::Status(head.status));
                }
                if head.chunked {
                    return Err(ClientError::Protocol("chunked event stream (unsupported)".into()));
                }
                Ok(Feed::Sse { conn, parser: SseParser::default() })
            }
            Via::Ws => {
                let stream = connect(spec.addr, source).await?;
                let url = format!("ws://{host}/api/rooms/{room}/ws?after={}", spec.after);
                match tokio_tungstenite::client_async(url, stream).await {
                    Ok((ws, _)) => Ok(Feed::Ws(Box::new(ws))),
                    Err(tungstenite::Error::Http(response)) => Err(ClientError::Status(response.status().as_u16())),
                    Err(e) => Err(ws_error(e)),
                }
            }
        }
    }

    async fn issue_poll(&mut self) -> Result<(), ClientError> {
        if let Feed::LongPoll { conn, host, room, after, in_flight } = self {
            let path = format!("/api/rooms/{room}/messages?after={after}&wait={LONGPOLL_WAIT_SECS}");
            conn.send(&get(&path, host)).await?;
            *in_flight = true;
        }
        Ok(())
    }

    /// Waits for the next messages. Cancel-safe for SSE and WebSocket; for long-poll a
    /// call dropped while re-issuing its request leaves the feed unusable, so callers keep
    /// one call alive until it completes (or drop the feed).
    pub(crate) async fn next(&mut self) -> Result<FeedEvent, ClientError> {
        loop {
            match self {
                Feed::LongPoll { in_flight: false, .. } => self.issue_poll().await?,
                Feed::LongPoll { conn, after, in_flight, .. } => {
                    let reply = conn.reply().await?;
                    *in_flight = false;
                    if reply.status != 200 {
                        return Err(ClientError::Status(reply.status));
                    }
                    if reply.close {
                        return Err(ClientError::Closed);
                    }
                    let answer: PollAnswer = serde_json::from_slice(&reply.body)
                        .map_err(|e| ClientError::Protocol(format!("long-poll answer: {e}")))?;
                    match answer.messages.last() {
                        Some(last) => *after = last.id,
                        None if answer.reset => *after = answer.last_id,
                        None => {}
                    }
                    if answer.reset || !answer.messages.is_empty() {
                        return Ok(FeedEvent { reset: answer.reset, messages: answer.messages });
                    }
                    // An empty answer at the server's wait: ask again.
                }
                Feed::Sse { conn, parser } => {
                    // Everything already buffered goes out as one batch.
                    let mut batch = FeedEvent::default();
                    while let Some(event) = parser.next_event(conn.buffer()) {
                        match event.event.as_str() {
                            "message" => batch.messages.push(
                                serde_json::from_str(&event.data)
                                    .map_err(|e| ClientError::Protocol(format!("SSE message: {e}")))?,
                            ),
                            "reset" => batch.reset = true,
                            "error" => {
                                return Err(ClientError::Protocol(format!("server error event: {}", event.data)))
                            }
                            _ => {}
                        }
                    }
                    if batch.reset || !batch.messages.is_empty() {
                        return Ok(batch);
                    }
                    conn.fill().await?;
                }
                Feed::Ws(ws) => match ws.next().await {
                    None => return Err(ClientError::Closed),
                    Some(Err(e)) => return Err(ws_error(e)),
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<Frame>(text.as_str())
                            .map_err(|e| ClientError::Protocol(format!("WebSocket frame: {e}")))?
                        {
                            Frame::Message { message } => {
                                return Ok(FeedEvent { reset: false, messages: vec![message] })
                            }
                            Frame::Reset {} => return Ok(FeedEvent { reset: true, messages: Vec::new() }),
                            Frame::Error { error } => {
                                return Err(ClientError::Protocol(format!("server error frame: {error}")))
                            }
                            Frame::Other => {}
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                        return Err(ClientError::Protocol(format!("WebSocket closed by server {why}")));
                    }
                    Some(Ok(_)) => {} // pings are answered by tungstenite
                },
            }
        }
    }
}

fn ws_error(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Io(e) => ClientError::Io(e),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => ClientError::Closed,
        other => ClientError::Protocol(format!("WebSocket: {other}")),
    }
}
