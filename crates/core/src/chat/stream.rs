//! The three ways a reader waits for messages: long-poll, Server-Sent Events, WebSocket.
//!
//! Each is a small state machine over a [`Subscription`]. The model polls it with its own
//! waker, writes what it returns, and calls the timeout when its timer fires; none of them
//! touches a socket or a clock.

use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;

use super::render::{to_json, Rendered};
use super::{json_response, App, Now, StoreCall, StoreDone};
use crate::http::{Response, StatusCode};
use crate::hub::{Batch, Subscription};
use crate::presence::Membership;
use crate::store::RoomId;

/// A gauge held up for as long as a subscriber lives.
#[derive(Debug)]
struct Held(Gauge);

impl Held {
    fn new(gauge: Gauge) -> Held {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Which route's shapes a long-poll answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollStyle {
    /// `/a/message/updates`: `{"messages": [...]}`, `{}` on timeout.
    Tornado,
    /// `/api/rooms/{room}/messages`: `{"room", "messages", "reset", "last_id"}`.
    Native,
}

impl PollStyle {
    /// The route's name in the metrics.
    fn route(self) -> &'static str {
        match self {
            PollStyle::Tornado => "tornado_updates",
            PollStyle::Native => "api_poll",
        }
    }
}

/// A long-poll: answers as soon as there is something to send, or at its deadline.
///
/// Order: [`LongPoll::poll`] with your waker until it is `Ready`; if your timer reaches
/// [`LongPoll::deadline`] first, call [`LongPoll::timeout`]. If the client disconnects,
/// drop it: that unregisters the waker at once.
#[derive(Debug)]
pub struct LongPoll {
    subscription: Subscription,
    deadline: Instant,
    style: PollStyle,
    _held: Held,
}

impl LongPoll {
    pub(crate) fn new(app: &App, subscription: Subscription, deadline: Instant, style: PollStyle) -> LongPoll {
        LongPoll { subscription, deadline, style, _held: Held::new(app.metrics.subscriber_gauge("longpoll")) }
    }

    /// When to give up and call [`LongPoll::timeout`].
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The response, once there is something to send.
    pub fn poll(&mut self, waker: &Waker) -> Poll<Response> {
        let route = self.style.route();
        self.subscription
            .poll_next(waker)
            .map(|batch| batch_response(self.style, self.subscription.room(), &batch, self.subscription.epoch()).timed(route))
    }

    /// The response when the deadline passed with nothing to send.
    pub fn timeout(self) -> Response {
        let route = self.style.route();
        let response = match self.style {
            // Tornado's chat.js throws on an empty list and backs off: send no list.
            PollStyle::Tornado => json_response(StatusCode::OK, "{}".to_string()),
            PollStyle::Native => {
                let last_id = self.subscription.hub_last_id();
                batch_response(
                    PollStyle::Native,
                    self.subscription.room(),
                    &Batch { messages: Vec::new(), reset: false, last_id, presence: None },
                    self.subscription.epoch(),
                )
            }
        };
        response.timed(route)
    }
}

/// The response for one batch in a long-poll's shape; a native one says the store's epoch
/// in `X-C10k-Epoch`, if it keeps one.
pub(crate) fn batch_response(style: PollStyle, room: &RoomId, batch: &Batch, epoch: Option<&str>) -> Response {
    let mut body = String::with_capacity(64 + batch.messages.iter().map(|m| m.json.len() + 1).sum::<usize>());
    match style {
        PollStyle::Tornado => {
            body.push_str("{\"messages\":[");
            join(&mut body, &batch.messages, |m| &m.tornado_json);
            body.push_str("]}");
        }
        PollStyle::Native => {
            body.push_str("{\"room\":");
            body.push_str(&to_json(room.as_str()));
            body.push_str(",\"messages\":[");
            join(&mut body, &batch.messages, |m| &m.json);
            body.push_str(&format!("],\"reset\":{},\"last_id\":{}", batch.reset, batch.last_id));
            if let Some(presence) = &batch.presence {
                body.push_str(",\"presence\":");
                body.push_str(presence);
            }
            body.push('}');
        }
    }
    let response = json_response(StatusCode::OK, body);
    match (style, epoch) {
        (PollStyle::Native, Some(epoch)) => response.header("X-C10k-Epoch", epoch),
        _ => response,
    }
}

fn join(out: &mut String, messages: &[Arc<Rendered>], form: impl Fn(&Rendered) -> &str) {
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(form(m));
    }
}

/// What a stream asks of the model after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStatus {
    /// Bytes (or frames) were added: write them, then poll again.
    Open,
    /// Write what was added, then close the connection: the subscriber fell behind.
    Close(&'static str),
}

/// A stream subscriber's view of its subscription: a reset on the first read is a resume
/// that cannot continue (tell the client and go on); a reset later means the subscriber
/// fell behind the history (disconnect it).
#[derive(Debug)]
struct Feed {
    subscription: Subscription,
    started: bool,
}

enum FeedItem {
    /// Messages to send, preceded by a reset notice if `reset`.
    Batch(Batch),
    /// The history moved past this subscriber's position.
    FellBehind,
}

impl Feed {
    fn new(subscription: Subscription) -> Feed {
        Feed { subscription, started: false }
    }

    fn poll(&mut self, waker: &Waker) -> Poll<FeedItem> {
        let Poll::Ready(batch) = self.subscription.poll_next(waker) else {
            return Poll::Pending;
        };
        let first = !std::mem::replace(&mut self.started, true);
        if batch.reset && !first {
            return Poll::Ready(FeedItem::FellBehind);
        }
        Poll::Ready(FeedItem::Batch(batch))
    }

    fn room(&self) -> &RoomId {
        self.subscription.room()
    }
}

/// What a reset says (an SSE `reset` event's data, a WebSocket `reset` frame with its
/// `type`): the room, its newest id, and the store's epoch when it keeps one, which the
/// client gives back as `?epoch=` when it resumes.
fn reset_payload(frame_type: Option<&str>, room: &RoomId, last_id: crate::store::MessageId, epoch: Option<&str>) -> serde_json::Value {
    let mut payload = serde_json::Map::new();
    if let Some(frame_type) = frame_type {
        payload.insert("type".into(), frame_type.into());
    }
    payload.insert("room".into(), room.as_str().into());
    payload.insert("last_id".into(), last_id.0.into());
    if let Some(epoch) = epoch {
        payload.insert("epoch".into(), epoch.into());
    }
    serde_json::Value::Object(payload)
}

const TOO_SLOW: &str = "subscriber too slow: the room's history moved past its position; reconnect to resume";

/// A Server-Sent Events stream (WHATWG HTML, "Server-sent events").
///
/// Order: write [`EventStream::head`]; then loop: [`EventStream::poll_events`] with your
/// waker, write what it appended; every [`EventStream::HEARTBEAT_INTERVAL`] without
/// events, write [`EventStream::HEARTBEAT`]. Stop when the client goes away or the status
/// says close.
#[derive(Debug)]
pub struct EventStream {
    feed: Feed,
    head: Response,
    /// When the client's token expires, if it gave one ([`super::auth`]).
    expires: Option<Instant>,
    _member: Membership,
    _held: Held,
}

impl EventStream {
    /// A comment line that keeps proxies and the browser from timing the stream out.
    pub const HEARTBEAT: &'static [u8] = b": heartbeat\n\n";
    /// How often to send [`EventStream::HEARTBEAT`] when idle.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

    pub(crate) fn new(app: &App, subscription: Subscription, expires: Option<Instant>, member: Membership) -> EventStream {
        let head = Response::new(StatusCode::OK)
            .header("Content-Type", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .header("X-Accel-Buffering", "no")
            .header("Connection", "close");
        let head = app.with_epoch(head);
        let _held = Held::new(app.metrics.subscriber_gauge("sse"));
        EventStream { feed: Feed::new(subscription), head, expires, _member: member, _held }
    }

    /// When the stream must end because the client's token expires: then write
    /// [`EventStream::write_error`] with [`super::auth::TOKEN_EXPIRED`] and close.
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }

    /// The response head to write first (with `Response::encode_head`): the stream has no
    /// length and ends when the connection closes.
    pub fn head(&self) -> &Response {
        &self.head
    }

    /// Appends the last event of a stream the server ends: `event: error` with
    /// `{"error": why}`.
    pub fn write_error(out: &mut Vec<u8>, why: &str) {
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(to_json(&json!({ "error": why })).as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// Appends the events that are ready to `out`.
    pub fn poll_events(&mut self, waker: &Waker, out: &mut Vec<u8>) -> Poll<StreamStatus> {
        let batch = match self.feed.poll(waker) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(FeedItem::FellBehind) => {
                EventStream::write_error(out, TOO_SLOW);
                return Poll::Ready(StreamStatus::Close(TOO_SLOW));
            }
            Poll::Ready(FeedItem::Batch(batch)) => batch,
        };
        if batch.reset {
            out.extend_from_slice(b"event: reset\ndata: ");
            let reset = reset_payload(None, self.feed.room(), batch.last_id, self.feed.subscription.epoch());
            out.extend_from_slice(to_json(&reset).as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        for m in &batch.messages {
            out.extend_from_slice(format!("id: {}\nevent: message\ndata: ", m.message.id).as_bytes());
            out.extend_from_slice(m.json.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        if let Some(presence) = &batch.presence {
            out.extend_from_slice(b"event: presence\ndata: ");
            out.extend_from_slice(presence.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        Poll::Ready(StreamStatus::Open)
    }
}

/// What to do with a frame a WebSocket client sent.
#[derive(Debug)]
pub enum WsAction {
    /// Send this text frame back (an error report, or the ack of a post already stored
    /// under the frame's idempotency key); the socket stays open.
    Reply(String),
    /// Run this store call (as for any post), then send [`WsSession::finish_post`]'s frame.
    Store(StoreCall),
    /// Close the connection with 1008 (policy violation) and this reason: the client posts
    /// faster than `--post-rate` allows (a frame has no status to refuse it with).
    Close(String),
}

/// One WebSocket client of a room, between frames. The model owns the framing
/// (tungstenite); this owns what the frames mean.
///
/// Order: after writing the 101 response, loop: [`WsSession::poll_outgoing`] with your
/// waker, send each text frame it appended; for each text frame received, call
/// [`WsSession::handle_text`] and do what it says.
#[derive(Debug)]
pub struct WsSession {
    feed: Feed,
    room: RoomId,
    /// Who is on the other end, for the post rate limit.
    client: Option<super::rate::ClientKey>,
    /// This connection's own post bucket (`--connection-post-rate`), if it has one.
    own_posts: Option<super::rate::Bucket>,
    /// The client's token, if it gave one: what it may post, and under which name.
    grant: Option<super::auth::Grant>,
    /// When that token expires.
    expires: Option<Instant>,
    _member: Membership,
    _held: Held,
}

impl WsSession {
    pub(crate) fn new(
        app: &App,
        room: RoomId,
        subscription: Subscription,
        client: Option<super::rate::ClientKey>,
        grant: Option<super::auth::Grant>,
        expires: Option<Instant>,
        now: Instant,
        member: Membership,
    ) -> WsSession {
        let own_posts = app.connection_post_bucket(now);
        let _held = Held::new(app.metrics.subscriber_gauge("ws"));
        WsSession { feed: Feed::new(subscription), room, client, own_posts, grant, expires, _member: member, _held }
    }

    /// When the session must end because the client's token expires: then close with
    /// [`super::auth::TOKEN_EXPIRED_CLOSE`] and [`super::auth::TOKEN_EXPIRED`].
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }

    /// Appends the frames that are ready (one per message, after a reset frame if any).
    pub fn poll_outgoing(&mut self, waker: &Waker, out: &mut Vec<String>) -> Poll<StreamStatus> {
        let batch = match self.feed.poll(waker) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(FeedItem::FellBehind) => return Poll::Ready(StreamStatus::Close(TOO_SLOW)),
            Poll::Ready(FeedItem::Batch(batch)) => batch,
        };
        if batch.reset {
            out.push(to_json(&reset_payload(Some("reset"), &self.room, batch.last_id, self.feed.subscription.epoch())));
        }
        for m in &batch.messages {
            out.push(message_frame(m));
        }
        if let Some(presence) = &batch.presence {
            out.push(presence.to_string());
        }
        Poll::Ready(StreamStatus::Open)
    }

    /// Interprets a text frame from the client.
    pub fn handle_text(&mut self, app: &App, text: &str, now: Now) -> WsAction {
        let now_ms = now.unix_ms;
        // Fields are read one by one from a JSON object, so that whatever is wrong with a
        // frame, its `ref` (if any) is echoed in the error and the client can match it.
        let frame: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => return WsAction::Reply(error_frame(&not_a_frame(&e), None)),
        };
        let reference = frame.get("ref").cloned();
        let text_field = |name: &str| match frame.get(name) {
            None | Some(serde_json::Value::Null) => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("'{name}' must be a string")),
        };
        match frame.get("type").and_then(|t| t.as_str()) {
            Some("post") => {}
            other => {
                let why = format!("unknown frame type {other:?}; the only client frame is \"post\"");
                return WsAction::Reply(error_frame(&why, reference));
            }
        }
        let (body, from) = match (text_field("body"), text_field("from")) {
            (Ok(body), Ok(from)) => (body, from),
            (Err(why), _) | (_, Err(why)) => return WsAction::Reply(error_frame(&why, reference)),
        };
        let key = match frame.get("key") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(key)) => Some(key.as_str()),
            Some(_) => return WsAction::Reply(error_frame("'key' must be a string", reference)),
        };
        if let Some(why) = app.post_refusal(self.grant.as_ref(), &self.room) {
            return WsAction::Reply(error_frame(&why, reference));
        }
        // A token's holder posts under the token's name, whatever it says it is.
        let from = self.grant.as_ref().map_or(from, |grant| grant.name.clone());
        // A frame comes with no monotonic clock reading: the store bounds its wait itself.
        let mut message = match app.validate_post(body, from, now_ms, None) {
            Ok(message) => message,
            Err(why) => return WsAction::Reply(error_frame(why, reference)),
        };
        if let Some(why) = self.own_posts.as_mut().and_then(|bucket| app.connection_rate_refusal(bucket, now.instant)) {
            return WsAction::Close(why);
        }
        if let Some((why, _)) = app.rate_refusal(self.client, now.instant) {
            return WsAction::Close(why);
        }
        match app.claim_key(&self.room, key, &message) {
            Ok(claim) => {
                message.key = key.map(str::to_string);
                WsAction::Store(StoreCall::append(
                    app,
                    self.room.clone(),
                    message,
                    super::AfterStore::WebSocketAck { reference },
                    claim,
                ))
            }
            Err(super::NotStored::Replay(stored)) => WsAction::Reply(ack_frame(&reference, &stored)),
            Err(refused @ super::NotStored::InFlight) => {
                let mut frame = json!({ "type": "error", "error": refused.why(), "retry": true });
                if let Some(r) = reference {
                    frame["ref"] = r;
                }
                WsAction::Reply(to_json(&frame))
            }
            Err(refused) => WsAction::Reply(error_frame(refused.why(), reference)),
        }
    }

    /// The frame that answers a post once the store has run.
    pub fn finish_post(done: StoreDone) -> String {
        let (result, then) = match done.0 {
            super::Done::Append { result, then } => (result, then),
            super::Done::Ledger(_) | super::Done::Reply(_) => {
                return error_frame("an HTTP answer was sent as a WebSocket ack", None)
            }
        };
        let reference = match then {
            super::AfterStore::WebSocketAck { reference } => reference,
            _ => None,
        };
        match result {
            Ok(super::Posted::New(posted) | super::Posted::Replayed(posted)) => ack_frame(&reference, &posted),
            Ok(super::Posted::KeyReused) => error_frame(super::NotStored::Mismatch.why(), reference),
            Err(e) => error_frame(&format!("not stored: {e}; try again"), reference),
        }
    }
}

/// Why a text frame is no client frame: it is not JSON at all (say so, and where, a
/// lone surrogate escape such as `\ud800` included), or JSON but not an object.
fn not_a_frame(e: &serde_json::Error) -> String {
    const SHAPE: &str = r#"send a JSON object such as {"type": "post", "body": "hi"}"#;
    if e.is_data() {
        format!("the frame must be a JSON object ({e}); {SHAPE}")
    } else {
        format!("the frame is not valid JSON ({e}); {SHAPE}")
    }
}

fn ack_frame(reference: &Option<serde_json::Value>, posted: &Rendered) -> String {
    let mut frame = String::from("{\"type\":\"ack\",\"ref\":");
    frame.push_str(&to_json(reference));
    frame.push_str(",\"message\":");
    frame.push_str(&posted.json);
    frame.push('}');
    frame
}

fn message_frame(m: &Rendered) -> String {
    let mut frame = String::with_capacity(m.json.len() + 32);
    frame.push_str("{\"type\":\"message\",\"message\":");
    frame.push_str(&m.json);
    frame.push('}');
    frame
}

/// A `{"type": "error"}` frame, with the client's `ref` when it sent one: every error a WebSocket
/// client is told is made here.
pub(crate) fn error_frame(error: &str, reference: Option<serde_json::Value>) -> String {
    match reference {
        Some(r) => to_json(&json!({ "type": "error", "error": error, "ref": r })),
        None => to_json(&json!({ "type": "error", "error": error })),
    }
}
