//! A subscription to a room, over any of the three ways c10k delivers messages: the
//! native long-poll (re-issued from the last id after every answer), Server-Sent Events,
//! or WebSocket. A scenario reads all three the same way: [`Feed::next`] gives the next
//! batch of messages, in the order the server sent them.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::http::{get, Conn};
use super::sse::SseParser;
use super::ws::WsConn;
use super::ClientError;
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

/// A message borrowed from the frame that carried it (a body without escapes is not
/// copied).
#[derive(Debug, Deserialize)]
pub(crate) struct MessageRef<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub body: Cow<'a, str>,
}

/// What a subscription produced: messages (in the order received), a reset, both, or
/// (a WebSocket frame of another type) neither. Borrowed from the feed until its next call.
#[derive(Debug, Default)]
pub(crate) struct FeedEvent<'a> {
    /// The server said it could not resume from our position (`reset`): messages were
    /// skipped.
    pub reset: bool,
    /// Messages decoded from a long-poll answer or SSE events.
    decoded: Vec<WireMessage>,
    /// The message of one WebSocket frame, read in place.
    framed: Option<MessageRef<'a>>,
}

impl FeedEvent<'_> {
    /// A batch of decoded messages.
    pub(crate) fn new(reset: bool, messages: Vec<WireMessage>) -> FeedEvent<'static> {
        FeedEvent { reset, decoded: messages, framed: None }
    }

    /// The messages as `(id, body)`, in the order received.
    pub(crate) fn messages(&self) -> impl Iterator<Item = (u64, &str)> {
        let decoded = self.decoded.iter().map(|m| (m.id, m.body.as_str()));
        decoded.chain(self.framed.iter().map(|m| (m.id, &*m.body)))
    }
}

/// Where to subscribe.
#[derive(Debug, Clone)]
pub(crate) struct FeedSpec {
    pub via: Via,
    pub addr: SocketAddr,
    pub room: String,
    /// Receive messages with ids after this one.
    pub after: u64,
    /// Ask for the room's presence events (`?presence=1`), each stream under a name of its
    /// own (`m{pid}-{n}`), so that every subscriber is a member.
    pub presence: bool,
}

/// Numbers this process's named subscribers.
static NEXT_MEMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a stream's path adds for presence: `&presence=1&nick=...`, or nothing.
fn presence_query(spec: &FeedSpec) -> String {
    if !spec.presence {
        return String::new();
    }
    let n = NEXT_MEMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("&presence=1&nick=m{}-{n}", std::process::id())
}

/// One subscriber's connection.
#[derive(Debug)]
pub(crate) enum Feed {
    /// `GET /api/rooms/{room}/messages?after=ID&wait=30`, re-issued after each answer.
    LongPoll { conn: Conn, host: String, room: String, after: u64, in_flight: bool },
    /// `GET /api/rooms/{room}/events?after=ID`, read until the server closes it.
    Sse { conn: Conn, parser: SseParser },
    /// `GET /api/rooms/{room}/ws?after=ID`, JSON text frames.
    Ws(WsConn),
}

#[derive(Deserialize)]
struct PollAnswer {
    messages: Vec<WireMessage>,
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    last_id: u64,
}

/// A server frame, `{"type": ..., ...}`: the fields a subscriber uses, borrowed.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<MessageRef<'a>>,
    error: Option<String>,
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
                let path = format!("/api/rooms/{room}/events?after={}{}", spec.after, presence_query(spec));
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
                let path = format!("/api/rooms/{room}/ws?after={}{}", spec.after, presence_query(spec));
                Ok(Feed::Ws(WsConn::open(spec.addr, source, &path).await?))
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
    pub(crate) async fn next(&mut self) -> Result<FeedEvent<'_>, ClientError> {
        // A WebSocket's event borrows the frame: it is read outside the loop below, whose
        // other arms loop again (and so reborrow the feed).
        if let Feed::Ws(ws) = self {
            return next_frame(ws).await;
        }
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
                        return Ok(FeedEvent::new(answer.reset, answer.messages));
                    }
                    // An empty answer at the server's wait: ask again.
                }
                Feed::Sse { conn, parser } => {
                    // Everything already buffered goes out as one batch.
                    let mut batch = FeedEvent::default();
                    while let Some(event) = parser.next_event(conn.buffer()) {
                        match event.event.as_str() {
                            "message" => batch.decoded.push(
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
                    if batch.reset || !batch.decoded.is_empty() {
                        return Ok(batch);
                    }
                    conn.fill().await?;
                }
                Feed::Ws(_) => unreachable!("read above"),
            }
        }
    }
}

/// The next frame of a WebSocket: its message, its reset, or (an ack, a type this client
/// does not know) an empty event.
async fn next_frame(ws: &mut WsConn) -> Result<FeedEvent<'_>, ClientError> {
    let text = ws.next_text().await?;
    let frame: Frame<'_> =
        serde_json::from_str(text).map_err(|e| ClientError::Protocol(format!("WebSocket frame: {e}")))?;
    match &*frame.kind {
        "message" => match frame.message {
            Some(message) => Ok(FeedEvent { reset: false, decoded: Vec::new(), framed: Some(message) }),
            None => Err(ClientError::Protocol("a message frame without its message".into())),
        },
        "reset" => Ok(FeedEvent::new(true, Vec::new())),
        "error" => Err(ClientError::Protocol(format!("server error frame: {}", frame.error.unwrap_or_default()))),
        _ => Ok(FeedEvent::default()),
    }
}
