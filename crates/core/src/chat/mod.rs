//! The chat application: routes in, [`Outcome`]s out.
//!
//! [`App::handle_request`] turns one parsed request into an [`Outcome`]: a response to
//! write now, a store call to run (then [`App::finish_store`] gives the response), a
//! long-poll, an event stream or a WebSocket session to drive. The routes and shapes are
//! those of `docs/protocol.md`; the Tornado-compatible ones follow Tornado's chat demo
//! (`demos/chat/chatdemo.py`) to the byte where a client could tell.
//!
//! Every model drives the same outcomes; that is the whole contract between the
//! application and the concurrency models.

pub mod admin;
pub mod auth;
pub mod form;
mod idempotency;
pub mod origin;
pub mod rate;
mod page;
pub mod render;
mod stream;
pub mod text;
pub mod xsrf;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde_json::json;

use crate::http::{Method, ProtocolError, Request, Response, StatusCode};
use crate::gaps::{publish_filling_gaps, publish_filling_gaps_async, publish_filling_gaps_local};
use crate::hub::{Cursor, Hub};
use crate::ledger::routes::LedgerCall;
use crate::ledger::{self, Ledger, LedgerError, Locking};
use crate::limits::Limits;
use crate::metrics::{Format, Metrics, ProcessSampler, ServerInfo};
use crate::presence::Presence;
use crate::store::{AsyncStore, Appended, LocalStore, Message, MessageId, NewMessage, RoomId, Store, StoreError};

use form::{cookie, media_type, Args};
use render::{to_json, Rendered};
use idempotency::{Begin, Claim, Replays};
use stream::{batch_response, PollStyle};
pub use idempotency::{MAX_KEYS as MAX_IDEMPOTENCY_KEYS, MAX_KEY_LEN as MAX_IDEMPOTENCY_KEY_LEN};
pub use stream::{EventStream, LongPoll, StreamStatus, WsAction, WsSession};
pub(crate) use stream::error_frame;

/// The longest message body accepted, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4096;
/// The longest nickname accepted, in characters.
pub const MAX_NICK_CHARS: usize = 64;
/// The most messages one page of history (`GET .../messages?before=ID&limit=N`) holds:
/// a bound, so that one request cannot make the store read a whole room.
pub const MAX_PAGE: usize = 200;
/// The messages a page of history holds when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// How the application is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Protocol limits and timeouts.
    pub limits: Limits,
    /// Messages kept in memory per room (Tornado's cache size: 200).
    pub history: usize,
    /// Entropy for XSRF tokens, from the caller (the core reads no entropy source).
    pub seed: [u8; 32],
    /// The bank of `/api/bank` and its `--locking` strategy (see [`Ledger::new`]).
    pub ledger: Arc<Ledger>,
    /// What the info metric `c10k_server_info` names (model, poller, store).
    pub server: ServerInfo,
    /// Reads the process's CPU, memory and descriptors for `/metrics` (the binary's; the
    /// core does no I/O). `None`: no `process_*` metrics.
    pub process: Option<Arc<dyn ProcessSampler>>,
    /// Web origins allowed besides the request's own (`--allow-origin`; see [`origin`]).
    pub allowed_origins: origin::AllowedOrigins,
    /// The per-client post rate limit (`--post-rate`; `None`: none; see [`rate`]).
    pub post_rate: Option<rate::Rate>,
    /// The per-connection post rate limit of a WebSocket (`--connection-post-rate`).
    pub connection_post_rate: Option<rate::Rate>,
    /// The per-client limit on new SSE and WebSocket streams (`--connect-rate`).
    pub connect_rate: Option<rate::Rate>,
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`).
    pub trusted_proxies: Vec<core::net::IpAddr>,
    /// Serve the WebSocket echo endpoint `GET /ws/echo` (`--websocket-echo`; see
    /// [`WsEndpoint::Echo`]). Off by default: a public server has no use for it.
    pub websocket_echo: bool,
    /// Tokens and private rooms (`--auth-secret`, `--auth-jwks`, `--private-room`; see
    /// [`auth`]). `None`: every room is open and tokens are not read.
    pub auth: Option<Arc<auth::Auth>>,
    /// The admin view's token (`--admin-token`; see [`admin`]). `None`: no admin view.
    pub admin_token: Option<String>,
    /// Where the binary's log keeps its warnings and errors, for the admin view.
    pub errors: Option<Arc<admin::ErrorLog>>,
}

impl Config {
    /// The documented defaults, with the given entropy (and an in-memory ledger with a lock
    /// per account).
    pub fn with_seed(seed: [u8; 32]) -> Config {
        Config {
            limits: Limits::default(),
            history: 200,
            seed,
            ledger: Arc::new(Ledger::in_memory(Locking::Fine)),
            server: ServerInfo::default(),
            process: None,
            allowed_origins: origin::AllowedOrigins::default(),
            post_rate: None,
            connection_post_rate: None,
            connect_rate: None,
            trusted_proxies: Vec::new(),
            websocket_echo: false,
            auth: None,
            admin_token: None,
            errors: None,
        }
    }
}

/// The time, as the model read it when the request arrived.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For deadlines.
    pub instant: Instant,
    /// Wall-clock milliseconds since the Unix epoch, for message times and XSRF stamps.
    pub unix_ms: u64,
}

/// What the model must do to answer a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write this response.
    Reply(Response),
    /// Run this (blocking) store call, then write [`App::finish_store`]'s response.
    Store(StoreCall),
    /// Wait, then write the long-poll's response (see [`LongPoll`]).
    LongPoll(LongPoll),
    /// Write the stream's head, then its events until the client leaves (see [`EventStream`]).
    Events(EventStream),
    /// Write the 101 response head, then speak WebSocket (see [`WsEndpoint`]).
    WebSocket(WebSocketAccept),
}

/// An accepted WebSocket handshake.
#[derive(Debug)]
pub struct WebSocketAccept {
    /// The 101 response; write it with `Response::encode_head`.
    pub response: Response,
    /// What answers the client's messages once the protocol is switched.
    pub endpoint: WsEndpoint,
}

/// What answers a WebSocket's messages.
#[derive(Debug)]
pub enum WsEndpoint {
    /// A room's chat session: its messages out, the client's posts in (docs/protocol.md).
    Chat(WsSession),
    /// `GET /ws/echo` (only with [`Config::websocket_echo`]): every text and binary message
    /// comes back as it was sent. It exists for conformance tools, the Autobahn TestSuite
    /// first: they assume an echo server, and through it they test c10k's framing (the
    /// same connection machine, limits and close handling as the chat's endpoint) case by
    /// case, binary and fragmented messages included, where the chat answers each message
    /// with a JSON frame of its own.
    Echo,
}

/// What happens with a stored message once the store has it.
#[derive(Debug, Clone)]
pub(crate) enum AfterStore {
    /// Tornado's `/a/message/new`: the message JSON, or a redirect to `next`.
    TornadoNew { redirect: Option<String> },
    /// `POST /api/rooms/{room}/messages`: 201 and the message.
    NativePost,
    /// A WebSocket post: an ack frame.
    WebSocketAck { reference: Option<serde_json::Value> },
}

/// A blocking call for the store's side of the model: a message to store, a page of
/// history to read, or a ledger operation (which may wait on a lock, yield, or run a
/// transaction). Running it is blocking and the model decides where: on the offload pool
/// (default) or inline (`--db-mode inline`). The model never needs to know which kind it
/// runs.
#[derive(Debug)]
pub struct StoreCall(Job);

#[derive(Debug)]
enum Job {
    Append(Append),
    History(HistoryPage),
    /// `GET /readyz`: whether the store can take posts now.
    Ready,
    Ledger(LedgerCall),
}

/// The answer to `GET /readyz`: 200 when the store can take posts, else 503 saying why.
fn readiness(store: &dyn Store) -> Response {
    match store.readiness() {
        Ok(()) => Response::text(StatusCode::OK, "ready\n"),
        Err(e) => not_ready(&e.to_string()),
    }
}

fn not_ready(why: &str) -> Response {
    Response::text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).header("Retry-After", "1")
}

/// A page of a room's history, read from the store (the cache holds only the newest
/// messages): `GET /api/rooms/{room}/messages?before=ID&limit=N`.
#[derive(Debug)]
struct HistoryPage {
    room: RoomId,
    /// Messages with smaller ids than this; `None`: from the newest.
    before: Option<MessageId>,
    /// At most this many, 1 to [`MAX_PAGE`].
    limit: usize,
}

impl HistoryPage {
    /// Reads one more than asked, to tell the client whether older messages remain.
    fn run(self, store: &dyn Store) -> Response {
        match store.before(&self.room, self.before, self.limit + 1) {
            Ok(mut messages) => {
                let more = messages.len() > self.limit;
                messages.truncate(self.limit);
                let next_before = if more { messages.last().map(|m| m.id) } else { None };
                let mut body = String::with_capacity(64 + messages.len() * 128);
                body.push_str("{\"room\":");
                body.push_str(&to_json(self.room.as_str()));
                body.push_str(",\"messages\":[");
                for (i, message) in messages.into_iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    body.push_str(&Rendered::new(message).json);
                }
                body.push_str(&format!("],\"next_before\":{}}}", to_json(&next_before)));
                json_response(StatusCode::OK, body).timed("api_history")
            }
            Err(e) => api_error(StatusCode::SERVICE_UNAVAILABLE, &format!("history not read ({e}); try again"))
                .header("Retry-After", "1")
                .timed("api_history"),
        }
    }
}

/// A chat message to store, then publish.
#[derive(Debug)]
struct Append {
    room: RoomId,
    message: NewMessage,
    hub: Arc<Hub>,
    posted: Counter,
    replayed: Counter,
    on_stored: Option<OnStored>,
    then: AfterStore,
    /// The post's idempotency key, claimed: told the outcome once the append has run.
    claim: Option<Claim>,
}

impl StoreCall {
    pub(crate) fn append(
        app: &App,
        room: RoomId,
        message: NewMessage,
        then: AfterStore,
        claim: Option<Claim>,
    ) -> StoreCall {
        let posted = app.metrics.messages_posted.clone();
        let replayed = app.metrics.posts_replayed.clone();
        let on_stored = app.on_stored.get().cloned();
        let hub = Arc::clone(&app.hub);
        app.metrics.store_call("append");
        StoreCall(Job::Append(Append { room, message, hub, posted, replayed, on_stored, then, claim }))
    }

    /// Runs the call. Blocks for as long as the store (or a ledger lock) does.
    ///
    /// A chat message is stored and, once it is durable, published to the room's readers.
    /// Publishing happens here, not when the poster gets its answer, so a poster that
    /// disconnects meanwhile cannot hold up the room.
    pub fn run(self, store: &dyn Store) -> StoreDone {
        match self.0 {
            Job::Append(append) => append.run(store),
            Job::History(page) => StoreDone(Done::Reply(page.run(store))),
            Job::Ready => StoreDone(Done::Reply(readiness(store).timed("readyz"))),
            Job::Ledger(call) => {
                let route = call.route();
                StoreDone(Done::Ledger(call.run(store).timed(route)))
            }
        }
    }

    /// [`StoreCall::run`] through a driver that cooperates with the caller's async runtime
    /// (`--db-mode native`): a chat append and any gap-filling reads are awaited, and what
    /// is left is [`Stored::announce`], which may block (briefly and boundedly: a bus
    /// telling the other processes), so the caller decides where to run it. A call with no
    /// native form (a ledger operation: its locks and transactions are blocking; a page of
    /// history, read rarely enough that the blocking driver serves it) comes back unrun,
    /// for [`StoreCall::run`] where blocking is allowed.
    pub async fn run_native(self, store: &dyn AsyncStore) -> Result<Stored, StoreCall> {
        match self.0 {
            Job::Append(append) => Ok(append.run_native(store).await),
            other => Err(StoreCall(other)),
        }
    }

    /// [`StoreCall::run_native`] through a driver bound to the calling thread (a green
    /// coroutine's own database connection): it blocks the caller, i.e. parks the
    /// coroutine. A ledger operation or a page of history comes back unrun, as there.
    // The error is the call itself, handed back unrun (and moved, never copied).
    #[allow(clippy::result_large_err)]
    pub fn run_local(self, store: &dyn LocalStore) -> Result<Stored, StoreCall> {
        match self.0 {
            Job::Append(append) => {
                let result = store.append(&append.room, &append.message).map(|a| append.posted(a));
                if let Ok(Posted::New(rendered)) = &result {
                    let _ = publish_filling_gaps_local(&append.hub, store, Arc::clone(rendered));
                }
                Ok(append.stored(result))
            }
            other => Err(StoreCall(other)),
        }
    }
}

impl Append {
    fn run(self, store: &dyn Store) -> StoreDone {
        let result = store.append(&self.room, &self.message).map(|a| self.posted(a));
        if let Ok(Posted::New(rendered)) = &result {
            // A smaller id still on its way (another offload thread, another worker) is
            // read from the store; on a failed read the hub holds this one until then.
            let _ = publish_filling_gaps(&self.hub, store, Arc::clone(rendered));
        }
        self.stored(result).announce()
    }

    async fn run_native(self, store: &dyn AsyncStore) -> Stored {
        let result = store.append(&self.room, &self.message).await.map(|a| self.posted(a));
        if let Ok(Posted::New(rendered)) = &result {
            let _ = publish_filling_gaps_async(&self.hub, store, Arc::clone(rendered)).await;
        }
        self.stored(result)
    }

    /// What the store's answer means for the poster. A replay (its key was stored
    /// before, by this process or another, before a restart or not) is published nowhere:
    /// the room had it already.
    fn posted(&self, appended: Appended) -> Posted {
        let rendered = Arc::new(Rendered::new(appended.message));
        let same = rendered.message.body == self.message.body && rendered.message.from == self.message.from;
        match (appended.replayed, same) {
            (false, _) => Posted::New(rendered),
            (true, true) => Posted::Replayed(rendered),
            (true, false) => Posted::KeyReused,
        }
    }

    fn stored(self, result: Result<Posted, StoreError>) -> Stored {
        // Recorded as soon as it is durable and published here, before the poster is
        // answered: a retry that overtakes the answer finds it. On an error the claim is
        // dropped, which releases the key for a retry.
        if let (Some(claim), Ok(Posted::New(rendered) | Posted::Replayed(rendered))) = (self.claim, &result) {
            claim.stored(rendered);
        }
        if let Ok(Posted::Replayed(_)) = &result {
            self.replayed.inc();
        }
        Stored { result, posted: self.posted, on_stored: self.on_stored, then: self.then }
    }
}

/// What became of a post once the store ran.
#[derive(Debug)]
pub(crate) enum Posted {
    /// Stored now, as this message.
    New(Arc<Rendered>),
    /// Its idempotency key was stored before, with the same body and sender, as this
    /// message: nothing was stored now.
    Replayed(Arc<Rendered>),
    /// Its idempotency key was stored before for another message: nothing was stored.
    KeyReused,
}

/// A store call whose append has run and whose message is published here, before the
/// other processes are told ([`Stored::announce`]).
#[derive(Debug)]
pub struct Stored {
    result: Result<Posted, StoreError>,
    posted: Counter,
    on_stored: Option<OnStored>,
    then: AfterStore,
}

impl Stored {
    /// Whether [`Stored::announce`] may block: a bus is attached (`--workers N`) and the
    /// message was stored. Without one it returns at once.
    pub fn announce_may_block(&self) -> bool {
        self.on_stored.is_some() && matches!(self.result, Ok(Posted::New(_)))
    }

    /// Tells the other processes (the bus hook, which may wait boundedly for them) and
    /// counts the post; gives what the poster's answer is made from.
    pub fn announce(self) -> StoreDone {
        if let Ok(Posted::New(rendered)) = &self.result {
            if let Some(OnStored(hook)) = &self.on_stored {
                hook(&rendered.message);
            }
            self.posted.inc();
        }
        StoreDone(Done::Append { result: self.result, then: self.then })
    }
}

/// What [`App::set_on_stored`] registers: called with each message this process stored.
#[derive(Clone)]
struct OnStored(Arc<dyn Fn(&Message) + Send + Sync>);

impl std::fmt::Debug for OnStored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStored(..)")
    }
}

/// What [`App::set_on_presence`] registers: called with each presence report to send.
struct OnPresence(Box<dyn Fn(&[u8]) + Send + Sync>);

impl std::fmt::Debug for OnPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnPresence(..)")
    }
}

/// A store call that has run.
#[derive(Debug)]
pub struct StoreDone(pub(crate) Done);

#[derive(Debug)]
pub(crate) enum Done {
    Append { result: Result<Posted, StoreError>, then: AfterStore },
    /// A ledger operation's answer, rendered.
    Ledger(Response),
    /// Any other call's answer (a page of history), rendered.
    Reply(Response),
}

impl StoreDone {
    /// The store could not be reached at all (its queue is full, or it is shutting down).
    /// `call` is given back unrun.
    pub fn unavailable(call: StoreCall, why: &str) -> StoreDone {
        let error = StoreError(why.to_string());
        StoreDone(match call.0 {
            Job::Append(append) => Done::Append { result: Err(error), then: append.then },
            Job::Ready => Done::Reply(not_ready(why)),
            Job::History(_) => Done::Reply(
                api_error(StatusCode::SERVICE_UNAVAILABLE, &format!("history not read ({why}); try again"))
                    .header("Retry-After", "1"),
            ),
            Job::Ledger(_) => Done::Ledger(ledger::routes::error_response(&LedgerError::Store(error))),
        })
    }
}

/// The chat application shared by every connection of a process.
#[derive(Debug)]
pub struct App {
    hub: Arc<Hub>,
    xsrf: xsrf::Xsrf,
    metrics: Metrics,
    config: Config,
    on_stored: OnceLock<OnStored>,
    replays: Arc<Replays>,
    posts: rate::RateLimiter,
    connects: rate::RateLimiter,
    presence: Arc<Presence>,
    /// Sends this process's presence reports to the other processes (the bus's).
    on_presence: OnceLock<OnPresence>,
    /// The other nodes, as their summaries said (the admin view).
    nodes: admin::Nodes,
}

/// Why a keyed post is answered without a store call.
#[derive(Debug)]
pub(crate) enum NotStored {
    /// The key is not 1 to 128 visible ASCII characters.
    BadKey,
    /// A post with this key is being stored right now.
    InFlight,
    /// The key was used for another message.
    Mismatch,
    /// Stored before as this message (a replay).
    Replay(Arc<Rendered>),
}

impl NotStored {
    /// What the client is told (for the error cases).
    pub(crate) fn why(&self) -> &'static str {
        match self {
            NotStored::BadKey => "the idempotency key must be 1 to 128 visible ASCII characters (a UUID, say)",
            NotStored::InFlight => "a post with this idempotency key is being stored right now; retry in a moment",
            NotStored::Mismatch => "this idempotency key was used for another message; use a new key for a new message",
            NotStored::Replay(_) => "already stored",
        }
    }
}

/// The members of a native post's JSON object that the chat reads; any other is ignored.
struct NativePost {
    body: Option<serde_json::Value>,
    from: Option<serde_json::Value>,
    /// The idempotency key, when not in the `Idempotency-Key` header.
    key: Option<serde_json::Value>,
}

impl From<serde_json::Map<String, serde_json::Value>> for NativePost {
    fn from(mut object: serde_json::Map<String, serde_json::Value>) -> NativePost {
        NativePost { body: object.remove("body"), from: object.remove("from"), key: object.remove("key") }
    }
}

impl App {
    /// A new application with empty rooms (see [`App::load_history`]).
    pub fn new(config: Config) -> App {
        let seed = config.seed;
        App {
            hub: Arc::new(Hub::new(config.history)),
            xsrf: xsrf::Xsrf::new(config.seed),
            metrics: Metrics::new(config.server.clone(), config.process.clone()),
            posts: rate::RateLimiter::new(rate::Limited::Posts, config.post_rate, config.trusted_proxies.clone()),
            connects: rate::RateLimiter::new(rate::Limited::Connects, config.connect_rate, config.trusted_proxies.clone()),
            config,
            on_stored: OnceLock::new(),
            replays: Arc::default(),
            presence: Arc::new(Presence::new(presence_node(&seed))),
            on_presence: OnceLock::new(),
            nodes: admin::Nodes::default(),
        }
    }

    /// Who is in which room ([`crate::presence`]).
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// Registers what sends this process's presence reports to the others (a bus); once.
    pub fn set_on_presence(&self, hook: Box<dyn Fn(&[u8]) + Send + Sync>) -> bool {
        self.on_presence.set(OnPresence(hook)).is_ok()
    }

    /// Flushes presence (see [`Presence::tick`]): the rooms' updates to their subscribers,
    /// this process's reports to the bus. Call it a few times a second (the server runs a
    /// thread for it); `now` is the model's clock.
    pub fn presence_tick(&self, now: Now) {
        let tick = self.presence.tick(now.instant, now.unix_ms);
        for (room, update) in tick.updates {
            self.metrics.request("presence_update");
            self.hub.publish_presence(&room, update);
        }
        if let Some(OnPresence(send)) = self.on_presence.get() {
            for report in tick.reports {
                send(&report);
            }
            if self.nodes.report_due(now.instant) {
                send(&admin::summary_line(self.presence.node(), &self.node_summary()));
            }
        }
    }

    /// Takes in another process's report from the bus (the JSON of a `P ` line): its
    /// presence in a room, or its summary for the admin view.
    pub fn apply_report(&self, report: &[u8], now: Instant) -> Result<(), String> {
        #[derive(serde::Deserialize)]
        struct Summary {
            node: String,
            summary: serde_json::Value,
        }
        if let Ok(Summary { node, summary }) = serde_json::from_slice::<Summary>(report) {
            if node != self.presence.node() {
                self.nodes.heard(node, summary, now);
            }
            return Ok(());
        }
        self.presence.apply_report(report, now)
    }

    /// What this process serves, as the admin view shows a node.
    fn node_summary(&self) -> serde_json::Value {
        let info = &self.config.server;
        let gauge = |kind| self.metrics.subscriber_gauge(kind).get();
        json!({
            "node": self.presence.node(),
            "model": info.model, "poller": info.poller, "store": info.store,
            "pid": std::process::id(),
            "connections": self.metrics.connections_open.get(),
            "subscribers": {"ws": gauge("ws"), "sse": gauge("sse"), "longpoll": gauge("longpoll")},
            "rooms": self.hub.rooms().len(),
            "bus": {"connected": self.metrics.bus.connected.get() > 0, "outage": self.metrics.bus.outage()},
            "errors": self.config.errors.as_ref().map_or(0, |e| e.total()),
        })
    }

    /// `GET /api/admin`: the nodes, the rooms and the last errors, for the admin token only.
    fn admin_view(&self, request: &Request, now: Now) -> Response {
        if let Some(refused) = self.admin_refusal(request) {
            return refused;
        }
        let mut nodes = vec![self.node_summary()];
        nodes.extend(self.nodes.fresh(now.instant));
        let minute_ago = now.unix_ms.saturating_sub(60_000);
        let rooms: Vec<_> = self
            .hub
            .rooms()
            .into_iter()
            .map(|(room, last_id)| {
                let presence: serde_json::Value = serde_json::from_str(&self.presence.snapshot(&room)).unwrap_or_default();
                json!({
                    "room": room, "last_id": last_id,
                    "private": self.config.auth.as_ref().is_some_and(|a| a.is_private(room.as_str())),
                    "users": presence["users"], "connections": presence["connections"],
                    "messages_last_minute": self.hub.count_since(&room, minute_ago),
                })
            })
            .collect();
        let errors = self.config.errors.as_ref().map(|e| e.recent()).unwrap_or_default();
        let body = json!({ "nodes": nodes, "rooms": rooms, "errors": admin::errors_json(&errors), "time": now.unix_ms });
        json_response(StatusCode::OK, to_json(&body)).header("Cache-Control", "no-store")
    }

    /// 404 without `--admin-token`, 401 without the token or with another: the reason to
    /// refuse an admin request, if any.
    fn admin_refusal(&self, request: &Request) -> Option<Response> {
        let Some(expected) = &self.config.admin_token else {
            return Some(api_error(StatusCode::NOT_FOUND, "the admin view is off: start the server with --admin-token (or C10K_ADMIN_TOKEN)"));
        };
        let given = request.headers.get("authorization").and_then(|f| f.trim().strip_prefix("Bearer ")).map(str::trim);
        if given.is_some_and(|given| admin::token_matches(given, expected)) {
            return None;
        }
        self.metrics.request("admin_refused");
        Some(
            api_error(StatusCode::UNAUTHORIZED, "the admin view needs 'Authorization: Bearer ADMIN_TOKEN' (the server's --admin-token)")
                .header("WWW-Authenticate", "Bearer realm=\"c10k-admin\""),
        )
    }

    /// The epoch of the store this process serves, if it keeps one: what the native routes
    /// send as `X-C10k-Epoch` and in their reset payloads, and what a resuming client's
    /// `?epoch=` is compared with (docs/protocol.md, "Epochs").
    pub fn epoch(&self) -> Option<&str> {
        self.hub.epoch()
    }

    /// Where a resuming client stands: its cursor, unless it says it read in another epoch
    /// than the store's (`?epoch=`), in which case its id means nothing here
    /// ([`Cursor::OtherEpoch`]: the explicit reset, then the history held). A client that
    /// gives no epoch, or a store that keeps none, is taken at its word.
    fn in_epoch(&self, cursor: Cursor, args: &Args) -> Cursor {
        let theirs = args.get("epoch").map(str::trim).filter(|e| !e.is_empty());
        match (&cursor, theirs, self.epoch()) {
            (Cursor::After(id), Some(theirs), Some(ours)) if id.0 > 0 && theirs != ours => Cursor::OtherEpoch,
            _ => cursor,
        }
    }

    /// `response` with the store's epoch in `X-C10k-Epoch`, if it keeps one.
    pub(crate) fn with_epoch(&self, response: Response) -> Response {
        match self.epoch() {
            Some(epoch) => response.header("X-C10k-Epoch", epoch),
            None => response,
        }
    }

    /// Registers `hook`, called with every message this process stores, right after it is
    /// durable and published here (on the thread that ran the store call). A bus uses it
    /// to tell the other processes. Set once, before serving; a second call is ignored
    /// and returns false.
    pub fn set_on_stored(&self, hook: Box<dyn Fn(&Message) + Send + Sync>) -> bool {
        self.on_stored.set(OnStored(Arc::from(hook))).is_ok()
    }

    /// Reads the store's epoch and fills every room's history from the store. Blocking;
    /// call before serving.
    pub fn load_history(&self, store: &dyn Store) -> Result<(), StoreError> {
        if let Some(epoch) = store.epoch()? {
            self.hub.set_epoch(&epoch);
        }
        for room in store.rooms()? {
            let recent = store.recent(&room, self.config.history)?;
            self.hub.preload(&room, recent);
        }
        Ok(())
    }

    /// The rooms and their readers.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The process's metrics (the models count connections here).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// The response to a request that broke HTTP (counted, then closed by the caller).
    pub fn refuse(&self, error: &ProtocolError) -> Response {
        self.metrics.protocol_error(error.status.0);
        error.response()
    }

    /// The response to a connection refused at the connection cap, or a request refused
    /// because the store's queue is full.
    pub fn busy(&self, why: &str) -> Response {
        Response::text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
            .header("Retry-After", "1")
            .close()
    }

    /// Decides what to do with one request.
    pub fn handle_request(&self, request: Request, now: Now) -> Outcome {
        let path = request.path();
        let get = matches!(request.method, Method::Get | Method::Head);
        let post = request.method == Method::Post;
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let open_to_all = matches!(segments.as_slice(), [""] | ["static", ..] | ["healthz" | "readyz" | "metrics" | "plaintext" | "cpu"]);
        if !open_to_all && !self.config.allowed_origins.permits(request.headers.get("origin"), request.headers.get("host")) {
            self.metrics.request("foreign_origin");
            return Outcome::Reply(api_error(
                StatusCode::FORBIDDEN,
                "this request comes from a page on another site (its Origin is not this server's); \
                 the server allows others with --allow-origin",
            ));
        }
        match segments.as_slice() {
            [""] if get => self.reply("page", self.page(&request, now)),
            ["static", "chat.js"] if get => self.reply("static", page::asset(page::CHAT_JS)),
            ["static", "chat.css"] if get => self.reply("static", page::asset(page::CHAT_CSS)),
            ["static", "admin.js"] if get => self.reply("static", page::asset(page::ADMIN_JS)),
            ["admin"] if get => match self.config.admin_token {
                // The page holds no data: it asks for the token, then reads /api/admin.
                Some(_) => self.reply("admin", page::admin()),
                None => self.reply("admin", api_error(StatusCode::NOT_FOUND, "the admin view is off: start the server with --admin-token")),
            },
            ["api", "admin"] if get => self.reply("api_admin", self.admin_view(&request, now)),
            ["healthz"] if get => self.reply("healthz", Response::text(StatusCode::OK, "ok")),
            ["readyz"] if get => {
                self.metrics.request("readyz");
                // Cut off from the other nodes, this one still serves its own subscribers
                // but misses what is posted elsewhere until the bus is back: not ready, so
                // that a load balancer sends new clients to a node that is connected.
                match self.metrics.bus.outage() {
                    Some(why) => Outcome::Reply(not_ready(&format!(
                        "the bus: {why} (other nodes' messages arrive once it is back)"
                    ))),
                    None => {
                        self.metrics.store_call("ready");
                        Outcome::Store(StoreCall(Job::Ready))
                    }
                }
            }
            ["plaintext"] if get => self.reply("plaintext", Response::text(StatusCode::OK, "Hello, World!")),
            ["ws", "echo"] if get && self.config.websocket_echo => {
                self.metrics.request("ws_echo");
                match upgrade_response(&request) {
                    Ok(response) => Outcome::WebSocket(WebSocketAccept { response, endpoint: WsEndpoint::Echo }),
                    Err(refusal) => Outcome::Reply(refusal),
                }
            }
            ["cpu"] if get => self.reply("cpu", cpu_response(&request)),
            ["metrics"] if get => {
                let format = Format::negotiate(request.headers.get("accept"));
                let body = self.metrics.render(self.hub.waiting(), format);
                self.reply(
                    "metrics",
                    Response::with_body(StatusCode::OK, format.content_type(), body).header("Vary", "Accept"),
                )
            }
            ["a", "message", "new"] if post => self.routed("tornado_new", self.tornado_new(&request, now)),
            ["a", "message", "updates"] if post => self.routed("tornado_updates", self.tornado_updates(&request, now)),
            ["api", "rooms"] if get => {
                // Only the rooms the client may read: a private room's name is its own.
                let grant = match self.verified_token(&request, now) {
                    Ok(grant) => grant,
                    Err(refused) => return Outcome::Reply(refused),
                };
                let readable = |room: &RoomId| match &self.config.auth {
                    Some(auth) => auth.permits(grant.as_ref(), room, auth::Access::Read).is_ok(),
                    None => true,
                };
                let rooms: Vec<_> = self
                    .hub
                    .rooms()
                    .into_iter()
                    .filter(|(r, _)| readable(r))
                    .map(|(r, last)| json!({"room": r, "last_id": last}))
                    .collect();
                let body = match self.epoch() {
                    Some(epoch) => json!({ "rooms": rooms, "epoch": epoch }),
                    None => json!({ "rooms": rooms }),
                };
                self.reply("rooms", self.with_epoch(json_response(StatusCode::OK, to_json(&body))))
            }
            ["api", "rooms", room, rest] => {
                let room = match RoomId::new(room) {
                    Ok(r) => r,
                    Err(e) => return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, &e.to_string())),
                };
                let access = if post { auth::Access::Post } else { auth::Access::Read };
                let grant = match self.authorize(&request, &room, access, now) {
                    Ok(grant) => grant,
                    Err(refused) => return Outcome::Reply(refused),
                };
                match (*rest, get, post) {
                    ("messages", true, _) => {
                        let args = Args::query(&request);
                        if args.get("before").is_some() || args.get("limit").is_some() {
                            self.routed("api_history", self.history_page(&args, room))
                        } else {
                            self.routed("api_poll", self.native_poll(&request, room, grant.as_ref(), now))
                        }
                    }
                    ("messages", _, true) => self.routed("api_post", self.native_post(&request, room, grant.as_ref(), now)),
                    ("events", true, _) => {
                        self.metrics.request("api_events");
                        self.events(&request, room, grant.as_ref(), now)
                    }
                    ("ws", true, _) => {
                        self.metrics.request("api_ws");
                        self.websocket(&request, room, grant, now)
                    }
                    ("presence", true, _) => {
                        self.metrics.request("api_presence");
                        self.reply("api_presence", json_response(StatusCode::OK, self.presence.snapshot(&room)))
                    }
                    ("messages", _, _) => Outcome::Reply(not_allowed("GET, HEAD, POST")),
                    ("events" | "ws" | "presence", _, _) => Outcome::Reply(not_allowed("GET, HEAD")),
                    _ => Outcome::Reply(api_error(StatusCode::NOT_FOUND, "no such route; see docs/protocol.md")),
                }
            }
            [""]
            | ["static", "chat.js" | "chat.css" | "admin.js"]
            | ["admin"]
            | ["api", "admin"]
            | ["healthz" | "readyz" | "plaintext" | "metrics" | "cpu"]
            | ["api", "rooms"] => {
                Outcome::Reply(not_allowed("GET, HEAD"))
            }
            ["a", "message", "new" | "updates"] => Outcome::Reply(not_allowed("POST")),
            ["api", "bank", rest @ ..] => match ledger::routes::parse(&request, rest) {
                Ok(operation) => {
                    self.metrics.request(operation.route());
                    let call = LedgerCall::new(Arc::clone(&self.config.ledger), operation);
                    self.metrics.store_call("ledger");
                    Outcome::Store(StoreCall(Job::Ledger(call)))
                }
                Err(refused) => self.reply("bank_refused", refused),
            },
            _ => {
                self.metrics.request("not_found");
                Outcome::Reply(Response::text(StatusCode::NOT_FOUND, "not found\n"))
            }
        }
    }

    /// The response once a store call has run (for the HTTP routes; WebSocket posts use
    /// [`WsSession::finish_post`]).
    pub fn finish_store(&self, done: StoreDone) -> Response {
        let (result, then) = match done.0 {
            Done::Append { result, then } => (result, then),
            Done::Ledger(response) | Done::Reply(response) => return response,
        };
        let route = match then {
            AfterStore::TornadoNew { .. } => "tornado_new",
            _ => "api_post",
        };
        match result {
            Ok(Posted::New(posted)) => answer_post(&then, &posted, false).timed(route),
            Ok(Posted::Replayed(posted)) => answer_post(&then, &posted, true).timed(route),
            Ok(Posted::KeyReused) => not_stored(&then, &NotStored::Mismatch).timed(route),
            Err(e) => api_error(StatusCode::SERVICE_UNAVAILABLE, &format!("message not stored ({e}); try again"))
                .header("Retry-After", "1")
                .timed(route),
        }
    }

    fn reply(&self, route: &'static str, response: Response) -> Outcome {
        self.metrics.request(route);
        Outcome::Reply(response.timed(route))
    }

    /// Counts a request to `route`; an immediate answer is timed under its name (a store
    /// call's or a long-poll's answer is named where it is made).
    fn routed(&self, route: &'static str, outcome: Outcome) -> Outcome {
        self.metrics.request(route);
        match outcome {
            Outcome::Reply(response) => Outcome::Reply(response.timed(route)),
            other => other,
        }
    }

    /// Claims a post's idempotency key (if it has one): `Ok` means store it (with the
    /// claim), `Err` answer without storing.
    pub(crate) fn claim_key(
        &self,
        room: &RoomId,
        key: Option<&str>,
        message: &NewMessage,
    ) -> Result<Option<Claim>, NotStored> {
        let Some(key) = key else { return Ok(None) };
        if !idempotency::valid_key(key) {
            return Err(NotStored::BadKey);
        }
        match self.replays.begin(room, key, message) {
            Begin::New(claim) => Ok(Some(claim)),
            Begin::InFlight => Err(NotStored::InFlight),
            Begin::Mismatch => Err(NotStored::Mismatch),
            Begin::Stored(rendered) => {
                self.metrics.posts_replayed.inc();
                Err(NotStored::Replay(rendered))
            }
        }
    }

    /// Validates a post's fields into a message to store. `arrived`: when the request
    /// did, if the model said (the post's deadline counts from it).
    pub(crate) fn validate_post(
        &self,
        body: String,
        from: String,
        now_ms: u64,
        arrived: Option<Instant>,
    ) -> Result<NewMessage, &'static str> {
        if body.trim().is_empty() {
            return Err("'body' must be a non-empty string");
        }
        if body.chars().count() > MAX_MESSAGE_CHARS {
            return Err("'body' is longer than 4096 characters");
        }
        // Refused here, before any store sees it: PostgreSQL cannot hold it (see [`text`]).
        if text::has_nul(&body) {
            return Err(text::NUL_IN_BODY);
        }
        if from.chars().count() > MAX_NICK_CHARS {
            return Err("'from' is longer than 64 characters");
        }
        if text::has_nul(&from) {
            return Err(text::NUL_IN_FROM);
        }
        let deadline = arrived.map(|at| at + self.config.limits.post_timeout);
        Ok(NewMessage { body, from, time_ms: now_ms, deadline, key: None })
    }

    fn page(&self, request: &Request, now: Now) -> Response {
        let existing = cookie(request, "_xsrf").and_then(xsrf::decode);
        let (token, set_cookie) = match existing {
            Some(token) => (token, false),
            None => (self.xsrf.new_token().to_vec(), true),
        };
        let masked = self.xsrf.mask(&token, now.unix_ms / 1000);
        // Room main's history, unless it is private and the request brings no token for it:
        // the page itself is public, and its script asks for the token.
        let messages = match self.authorize(request, &RoomId::main(), auth::Access::Read, now) {
            Ok(_) => self.hub.read(&RoomId::main(), &Cursor::Start).messages,
            Err(_) => Vec::new(),
        };
        let mut response = page::render(&masked, self.epoch(), &messages);
        if set_cookie {
            response = response.header("Set-Cookie", format!("_xsrf={masked}; Path=/; SameSite=Lax"));
        }
        response
    }

    fn check_xsrf(&self, request: &Request, form: &Args) -> Result<(), Response> {
        let submitted = form
            .get("_xsrf")
            .or_else(|| request.headers.get("x-xsrftoken"))
            .or_else(|| request.headers.get("x-csrftoken"));
        xsrf::check(cookie(request, "_xsrf"), submitted)
            .map_err(|e| Response::text(StatusCode::FORBIDDEN, format!("{}\n", e.message())))
    }

    fn tornado_new(&self, request: &Request, now: Now) -> Outcome {
        let form = Args::form(request);
        if let Err(refused) = self.check_xsrf(request, &form) {
            return Outcome::Reply(refused);
        }
        let grant = match self.authorize(request, &RoomId::main(), auth::Access::Post, now) {
            Ok(grant) => grant,
            Err(refused) => return Outcome::Reply(refused),
        };
        // Tornado's get_argument maps control characters to spaces (so no NUL reaches a
        // store, see [`text`]), strips white space and accepts an empty value.
        let Some(body) = form.get("body").map(text::tornado_argument) else {
            return Outcome::Reply(Response::text(StatusCode::BAD_REQUEST, "Missing argument body\n"));
        };
        if body.chars().count() > MAX_MESSAGE_CHARS {
            return Outcome::Reply(Response::text(StatusCode::BAD_REQUEST, "'body' is longer than 4096 characters\n"));
        }
        let redirect = match form.get("next") {
            None | Some("") => None,
            Some(next) if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") => {
                Some(next.to_string())
            }
            Some(_) => {
                return Outcome::Reply(Response::text(
                    StatusCode::BAD_REQUEST,
                    "'next' must be a path on this site (start with '/', not '//')\n",
                ))
            }
        };
        let deadline = Some(now.instant + self.config.limits.post_timeout);
        let from = grant.as_ref().map(|g| g.name.clone()).unwrap_or_default();
        let message = NewMessage { body, from, time_ms: now.unix_ms, deadline, key: None };
        // Tornado's client sends no key; a client of ours may, as a header or a form field.
        let key = request.headers.get("idempotency-key").or_else(|| form.get("key")).map(str::to_string);
        if let Some(refused) = self.over_rate(self.post_client(request, grant.as_ref()), now.instant) {
            return Outcome::Reply(refused);
        }
        self.keyed_post(RoomId::main(), key, message, AfterStore::TornadoNew { redirect })
    }

    fn tornado_updates(&self, request: &Request, now: Now) -> Outcome {
        let form = Args::form(request);
        if let Err(refused) = self.check_xsrf(request, &form) {
            return Outcome::Reply(refused);
        }
        let room = RoomId::main();
        let grant = match self.authorize(request, &room, auth::Access::Read, now) {
            Ok(grant) => grant,
            Err(refused) => return Outcome::Reply(refused),
        };
        let cursor = Cursor::Tornado(form.get("cursor").map(str::to_string));
        let batch = self.hub.read(&room, &cursor);
        if !batch.messages.is_empty() {
            return Outcome::Reply(batch_response(PollStyle::Tornado, &room, &batch, None));
        }
        let deadline = until_expiry(now.instant + self.config.limits.longpoll_wait, grant.as_ref(), now);
        Outcome::LongPoll(LongPoll::new(self, self.hub.subscribe(room, cursor), deadline, PollStyle::Tornado))
    }

    fn native_poll(&self, request: &Request, room: RoomId, grant: Option<&auth::Grant>, now: Now) -> Outcome {
        let args = Args::query(request);
        let cursor = match parse_after(args.get("after")) {
            Ok(c) => c,
            Err(e) => return Outcome::Reply(e),
        };
        let wait = match args.get("wait").map(str::parse::<f64>) {
            None => Duration::ZERO,
            Some(Ok(s)) if s.is_finite() && s >= 0.0 => {
                Duration::from_secs_f64(s.min(self.config.limits.longpoll_wait.as_secs_f64()))
            }
            Some(_) => {
                return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, "'wait' must be a number of seconds >= 0"))
            }
        };
        // `?presence=VERSION`: the answer carries the room's presence when it is newer (0:
        // none seen yet), and a presence update answers the wait.
        let presence_seen = match args.get("presence").map(str::parse::<u64>) {
            None => None,
            Some(Ok(seen)) => Some(seen),
            Some(Err(_)) => {
                return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, "'presence' must be the presence version last seen (0 at first)"))
            }
        };
        let cursor = self.in_epoch(cursor, &args);
        let mut batch = self.hub.read(&room, &cursor);
        if let (Some(seen), Some(update)) = (presence_seen, self.hub.presence(&room)) {
            if update.version != seen {
                batch.presence = Some(Arc::clone(update.for_seen(seen)));
            }
        }
        if !batch.messages.is_empty() || batch.reset || batch.presence.is_some() || wait.is_zero() {
            return Outcome::Reply(batch_response(PollStyle::Native, &room, &batch, self.epoch()));
        }
        let subscription = match presence_seen {
            Some(seen) => self.hub.subscribe_after_presence(room, cursor, seen),
            None => self.hub.subscribe(room, cursor),
        };
        Outcome::LongPoll(LongPoll::new(self, subscription, until_expiry(now.instant + wait, grant, now), PollStyle::Native))
    }

    /// `?before=ID&limit=N`: a page of history from the store, newest first. Paging and
    /// polling do not mix: `after` or `wait` with it is refused.
    fn history_page(&self, args: &Args, room: RoomId) -> Outcome {
        if args.get("after").is_some() || args.get("wait").is_some() {
            return Outcome::Reply(api_error(
                StatusCode::BAD_REQUEST,
                "'before' and 'limit' page back through history; 'after' and 'wait' poll for new messages: \
                 use one or the other",
            ));
        }
        let before = match args.get("before").map(str::trim) {
            None | Some("") => None,
            Some(s) => match s.parse::<u64>() {
                Ok(id) if id >= 1 => Some(MessageId(id)),
                _ => {
                    return Outcome::Reply(api_error(
                        StatusCode::BAD_REQUEST,
                        "'before' must be a message id (a whole number of at least 1)",
                    ))
                }
            },
        };
        let limit = match args.get("limit").map(str::trim) {
            None | Some("") => DEFAULT_PAGE,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Outcome::Reply(api_error(
                        StatusCode::BAD_REQUEST,
                        &format!("'limit' must be a whole number from 1 to {MAX_PAGE}"),
                    ))
                }
            },
        };
        self.metrics.store_call("history");
        Outcome::Store(StoreCall(Job::History(HistoryPage { room, before, limit })))
    }

    fn native_post(&self, request: &Request, room: RoomId, grant: Option<&auth::Grant>, now: Now) -> Outcome {
        let content_type = request.headers.get("content-type").map(media_type).unwrap_or_default();
        if content_type != "application/json" {
            return Outcome::Reply(api_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the message as JSON with 'Content-Type: application/json'",
            ));
        }
        // Read as a JSON object first, not straight into the struct: serde's derived
        // `Deserialize` would take `["body", "from"]` for the struct, and would not check
        // the UTF-8 of a member it skips (both found by the fuzzer, fuzz/README.md).
        let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&request.body) {
            Ok(object) => object,
            Err(e) => {
                let what = if e.is_data() { "body must be a JSON object" } else { "body is not valid JSON" };
                return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, &format!("{what}: {e}")));
            }
        };
        let post = NativePost::from(object);
        let Some(serde_json::Value::String(body)) = post.body else {
            return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, "'body' must be a non-empty string"));
        };
        let from = match post.from {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, "'from' must be a string")),
        };
        // A token's holder posts under the token's name, whatever it says it is.
        let from = grant.map_or(from, |g| g.name.clone());
        let key = match (request.headers.get("idempotency-key"), post.key) {
            (Some(header), _) => Some(header.to_string()),
            (None, None | Some(serde_json::Value::Null)) => None,
            (None, Some(serde_json::Value::String(key))) => Some(key),
            (None, Some(_)) => return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, "'key' must be a string")),
        };
        let message = match self.validate_post(body, from, now.unix_ms, Some(now.instant)) {
            Ok(message) => message,
            Err(why) => return Outcome::Reply(api_error(StatusCode::BAD_REQUEST, why)),
        };
        if let Some(refused) = self.over_rate(self.post_client(request, grant), now.instant) {
            return Outcome::Reply(refused);
        }
        self.keyed_post(room, key, message, AfterStore::NativePost)
    }

    /// A stream's subscription: with the room's presence events when it asks (`?presence=1`;
    /// every stream is counted as present, but only those that ask are sent presence).
    fn stream_subscription(&self, room: RoomId, cursor: Cursor, args: &Args) -> crate::hub::Subscription {
        match args.get("presence") {
            Some(_) => self.hub.subscribe_with_presence(room, cursor),
            None => self.hub.subscribe(room, cursor),
        }
    }

    /// Who sent `request`, for the rate limits ([`rate`]): the token's user, or else the
    /// address.
    fn post_client(&self, request: &Request, grant: Option<&auth::Grant>) -> Option<rate::ClientKey> {
        match grant {
            Some(grant) => Some(rate::ClientKey::User(grant.user_hash(&self.config.seed))),
            None => self.posts.client(request.peer, request.headers.get("x-forwarded-for")),
        }
    }

    /// The token `request` carries, verified (`Ok(None)`: none, or auth is off), or the 401
    /// that refuses a bad one.
    fn verified_token(&self, request: &Request, now: Now) -> Result<Option<auth::Grant>, Response> {
        let Some(auth) = &self.config.auth else { return Ok(None) };
        let token = auth::bearer_token(request).map_err(|refusal| self.auth_refused(&refusal))?;
        token.map(|token| auth.verify(&token, now.unix_ms)).transpose().map_err(|refusal| self.auth_refused(&refusal))
    }

    /// [`App::verified_token`], and whether it lets its holder do `access` in `room`: the
    /// grant (`None` without a token), or the 401 or 403 that refuses the request.
    fn authorize(&self, request: &Request, room: &RoomId, access: auth::Access, now: Now) -> Result<Option<auth::Grant>, Response> {
        let grant = self.verified_token(request, now)?;
        match &self.config.auth {
            Some(auth) => auth.permits(grant.as_ref(), room, access).map(|()| grant).map_err(|refusal| self.auth_refused(&refusal)),
            None => Ok(grant),
        }
    }

    /// A frame's permission check for a WebSocket's post: the reason it may not, if not.
    pub(crate) fn post_refusal(&self, grant: Option<&auth::Grant>, room: &RoomId) -> Option<String> {
        let auth = self.config.auth.as_ref()?;
        let refusal = auth.permits(grant, room, auth::Access::Post).err()?;
        self.metrics.request("auth_forbidden");
        Some(refusal.why().to_string())
    }

    /// The answer to a refused token, counted: 401 or 403 with a `WWW-Authenticate`
    /// challenge (RFC 6750 3) and the reason.
    fn auth_refused(&self, refusal: &auth::Refusal) -> Response {
        self.metrics.request(match refusal {
            auth::Refusal::Forbidden(_) => "auth_forbidden",
            auth::Refusal::NoToken(_) | auth::Refusal::BadToken(_) => "auth_refused",
        });
        api_error(refusal.status(), refusal.why()).header("WWW-Authenticate", refusal.challenge())
    }

    /// Takes a post token of `client` at `now`; when it has none, why, for the client: a
    /// 429 with `Retry-After`, the whole seconds until a token is back (RFC 9110 10.2.3).
    fn over_rate(&self, client: Option<rate::ClientKey>, now: Instant) -> Option<Response> {
        self.rate_refusal(client, now).map(|(why, wait)| too_many(&why, wait))
    }

    /// `over_rate` for any transport: the reason and the wait, or `None` to go on.
    pub(crate) fn rate_refusal(&self, client: Option<rate::ClientKey>, now: Instant) -> Option<(String, std::time::Duration)> {
        self.admit(&self.posts, client, now, ("rate_untracked", "rate_limited"))
    }

    /// A connect token of `client` (for a new SSE or WebSocket stream) at `now`, or the 429
    /// that refuses the stream before it starts.
    fn over_connect_rate(&self, client: Option<rate::ClientKey>, now: Instant) -> Option<Response> {
        self.admit(&self.connects, client, now, ("connect_untracked", "connect_limited")).map(|(why, wait)| too_many(&why, wait))
    }

    /// Takes a token of `client` from `limiter`, counting an untracked client or a
    /// refusal under the two names given.
    fn admit(
        &self,
        limiter: &rate::RateLimiter,
        client: Option<rate::ClientKey>,
        now: Instant,
        (untracked, refused): (&'static str, &'static str),
    ) -> Option<(String, std::time::Duration)> {
        match limiter.admit(client, now) {
            rate::Admission::Admit => None,
            rate::Admission::Untracked => {
                self.metrics.request(untracked);
                None
            }
            rate::Admission::Refuse(wait) => {
                self.metrics.request(refused);
                Some((limiter.refusal(wait), wait))
            }
        }
    }

    /// A WebSocket connection's own post bucket (`--connection-post-rate`), full; `None`
    /// without the flag.
    pub(crate) fn connection_post_bucket(&self, now: Instant) -> Option<rate::Bucket> {
        self.config.connection_post_rate.map(|rate| rate::Bucket::full(rate, now))
    }

    /// Takes a post token of a connection's own `bucket` at `now`; when it has none, counts
    /// the refusal and says why, for the 1008 close.
    pub(crate) fn connection_rate_refusal(&self, bucket: &mut rate::Bucket, now: Instant) -> Option<String> {
        let rate = self.config.connection_post_rate?;
        let wait = bucket.take(rate, now).err()?;
        self.metrics.request("connection_rate_limited");
        Some(format!("{} (on this connection)", rate::Limited::Posts.refusal(Some(rate), wait)))
    }

    /// Stores a post under its idempotency key, if it has one, or answers it at once
    /// (a replay this process remembers, a key being stored right now, a bad key).
    fn keyed_post(&self, room: RoomId, key: Option<String>, mut message: NewMessage, then: AfterStore) -> Outcome {
        match self.claim_key(&room, key.as_deref(), &message) {
            Ok(claim) => {
                message.key = key;
                Outcome::Store(StoreCall::append(self, room, message, then, claim))
            }
            Err(refused) => Outcome::Reply(not_stored(&then, &refused)),
        }
    }

    fn events(&self, request: &Request, room: RoomId, grant: Option<&auth::Grant>, now: Now) -> Outcome {
        // Last-Event-ID, sent by a reconnecting EventSource, wins over `?after=`.
        let args = Args::query(request);
        let cursor = match request.headers.get("last-event-id") {
            Some(id) if !id.is_empty() => parse_after(Some(id)),
            _ => parse_after(args.get("after")),
        };
        match cursor {
            Ok(cursor) => {
                if let Some(refused) = self.over_connect_rate(self.post_client(request, grant), now.instant) {
                    return Outcome::Reply(refused);
                }
                let cursor = self.in_epoch(cursor, &args);
                let expires = grant.map(|g| token_expiry(g, now));
                let member = self.presence.join(&room, member_name(grant, &args).as_deref(), now.unix_ms);
                let subscription = self.stream_subscription(room, cursor, &args);
                Outcome::Events(EventStream::new(self, subscription, expires, member))
            }
            Err(e) => Outcome::Reply(e),
        }
    }

    fn websocket(&self, request: &Request, room: RoomId, grant: Option<auth::Grant>, now: Now) -> Outcome {
        let response = match upgrade_response(request) {
            Ok(response) => response,
            Err(refusal) => return Outcome::Reply(refusal),
        };
        let args = Args::query(request);
        let cursor = match parse_after(args.get("after")) {
            Ok(c) => self.in_epoch(c, &args),
            Err(e) => return Outcome::Reply(e),
        };
        let client = self.post_client(request, grant.as_ref());
        if let Some(refused) = self.over_connect_rate(client, now.instant) {
            return Outcome::Reply(refused);
        }
        let response = self.with_epoch(response);
        let expires = grant.as_ref().map(|g| token_expiry(g, now));
        let member = self.presence.join(&room, member_name(grant.as_ref(), &args).as_deref(), now.unix_ms);
        let subscription = self.stream_subscription(room.clone(), cursor, &args);
        let session = WsSession::new(self, room, subscription, client, grant, expires, now.instant, member);
        Outcome::WebSocket(WebSocketAccept { response, endpoint: WsEndpoint::Chat(session) })
    }
}

/// The name a streaming subscriber is present under: its token's, else its `?nick=`.
fn member_name(grant: Option<&auth::Grant>, args: &Args) -> Option<String> {
    match grant {
        Some(grant) => Some(grant.name.clone()),
        None => args.get("nick").map(str::to_string),
    }
}

/// When a token's `exp` comes, on the model's monotonic clock.
fn token_expiry(grant: &auth::Grant, now: Now) -> Instant {
    now.instant + Duration::from_millis(grant.expires_ms.saturating_sub(now.unix_ms))
}

/// `deadline`, or the token's expiry if that comes first: a long-poll answers at `exp` as
/// at its deadline, and the client's next poll is told its token expired.
fn until_expiry(deadline: Instant, grant: Option<&auth::Grant>, now: Now) -> Instant {
    grant.map_or(deadline, |g| deadline.min(token_expiry(g, now)))
}

/// This process's name on the bus for presence: a hash of its seed (not the seed, which
/// keys its XSRF tokens).
fn presence_node(seed: &[u8; 32]) -> String {
    use std::hash::{Hash, Hasher};
    let mut state = std::hash::DefaultHasher::new();
    ("presence", seed).hash(&mut state);
    format!("{:016x}", state.finish())
}

/// The 101 answer to a WebSocket opening handshake (RFC 6455 4.2.2), or the refusal of a
/// request that is not one a version-13 server can accept.
fn upgrade_response(request: &Request) -> Result<Response, Response> {
    if !request.is_websocket_upgrade() {
        return Err(api_error(StatusCode::UPGRADE_REQUIRED, "this route speaks WebSocket only (RFC 6455)")
            .header("Upgrade", "websocket"));
    }
    if request.headers.get("sec-websocket-version") != Some("13") {
        return Err(api_error(StatusCode::UPGRADE_REQUIRED, "only WebSocket version 13 is supported")
            .header("Sec-WebSocket-Version", "13"));
    }
    let Some(key) = request.headers.get("sec-websocket-key").filter(|k| !k.is_empty()) else {
        return Err(api_error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
    };
    Ok(Response::new(StatusCode::SWITCHING_PROTOCOLS)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", tungstenite::handshake::derive_accept_key(key.as_bytes())))
}

/// The answer to a post (HTTP routes) stored as `posted`, now or, for a `replay`, before.
fn answer_post(then: &AfterStore, posted: &Rendered, replay: bool) -> Response {
    let response = match then {
        AfterStore::TornadoNew { redirect: Some(next) } => Response::new(StatusCode::FOUND).header("Location", next.clone()),
        AfterStore::TornadoNew { redirect: None } => json_response(StatusCode::OK, posted.tornado_json.clone()),
        AfterStore::NativePost => json_response(StatusCode::CREATED, posted.json.clone()),
        AfterStore::WebSocketAck { .. } => {
            return api_error(StatusCode::INTERNAL_SERVER_ERROR, "a WebSocket post was answered as HTTP")
        }
    };
    if replay {
        response.header("Idempotent-Replayed", "true")
    } else {
        response
    }
}

/// The answer to a keyed post answered without storing it (HTTP routes).
fn not_stored(then: &AfterStore, refused: &NotStored) -> Response {
    match refused {
        NotStored::Replay(stored) => answer_post(then, stored, true),
        NotStored::BadKey => api_error(StatusCode::BAD_REQUEST, refused.why()),
        NotStored::InFlight => api_error(StatusCode::CONFLICT, refused.why()).header("Retry-After", "1"),
        NotStored::Mismatch => api_error(StatusCode::UNPROCESSABLE_ENTITY, refused.why()),
    }
}

fn parse_after(after: Option<&str>) -> Result<Cursor, Response> {
    match after {
        None | Some("") => Ok(Cursor::Start),
        Some(s) => s
            .trim()
            .parse::<u64>()
            .map(|id| Cursor::After(MessageId(id)))
            .map_err(|_| api_error(StatusCode::BAD_REQUEST, "'after' must be a message id (a whole number)")),
    }
}

/// A JSON response with Tornado's content type.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    Response::with_body(status, "application/json; charset=UTF-8", body).header("X-Content-Type-Options", "nosniff")
}

fn api_error(status: StatusCode, error: &str) -> Response {
    json_response(status, to_json(&json!({ "error": error })))
}

/// 429 with `Retry-After`, the whole seconds until a token is back (RFC 9110 10.2.3, RFC
/// 6585 4).
fn too_many(why: &str, wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    api_error(StatusCode::TOO_MANY_REQUESTS, why).header("Retry-After", seconds.to_string())
}

fn not_allowed(allow: &'static str) -> Response {
    api_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route").header("Allow", allow)
}

/// The largest `cost` of `GET /cpu` (some tens of milliseconds of work): a bound, so one
/// request cannot hold a serving thread for minutes.
pub const MAX_CPU_COST: u64 = 10_000_000;

/// `GET /cpu?cost=N` (default 1000): N rounds of [`cpu_work`], answered as 16 hex digits
/// and a newline. The CPU-bound route of the benchmark's `cpu` scenario.
fn cpu_response(request: &Request) -> Response {
    let cost = match Args::query(request).get("cost").map(str::parse::<u64>) {
        None => 1000,
        Some(Ok(cost)) if cost <= MAX_CPU_COST => cost,
        Some(_) => {
            return api_error(StatusCode::BAD_REQUEST, &format!("'cost' must be a whole number from 0 to {MAX_CPU_COST}"))
        }
    };
    Response::text(StatusCode::OK, format!("{:016x}\n", cpu_work(cost)))
}

/// `rounds` rounds of a 64-bit integer mix (SplitMix64's finaliser) over one state: pure
/// computation, about 4 ns a round (10,000,000 rounds: 37 ms on the CI machine), that the
/// compiler cannot skip (`black_box`) or vectorise (each round needs the previous one).
pub fn cpu_work(rounds: u64) -> u64 {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rounds {
        let mut z = std::hint::black_box(state ^ i);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}
