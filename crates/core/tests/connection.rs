//! The connection machine (`c10k_core::conn`), driven on byte buffers with a made-up clock:
//! what every model's connection does, proved once, with no socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use c10k_core::chat::{App, Config, Now};
use c10k_core::conn::{Action, Connection, Interest, CLOSE_GRACE};
use c10k_core::metrics::Format;
use c10k_core::store::{MemoryStore, MessageId, RoomId, Store};
use tungstenite::protocol::{Role, WebSocketContext};
use tungstenite::Message as WsMessage;

/// Counts its wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// An application, a store, a clock that moves only when told.
struct World {
    app: Arc<App>,
    store: MemoryStore,
    start: Instant,
}

impl World {
    fn new() -> World {
        World::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut Config)) -> World {
        let mut config = Config::with_seed([7; 32]);
        tune(&mut config);
        World { app: Arc::new(App::new(config)), store: MemoryStore::default(), start: Instant::now() }
    }

    fn at(&self, secs: f64) -> Now {
        Now { instant: self.start + Duration::from_secs_f64(secs), unix_ms: 1_700_000_000_000 + (secs * 1000.0) as u64 }
    }

    /// A connection accepted at time 0, and the counter behind its waker.
    fn connect(&self) -> (Connection, Arc<Counter>) {
        let counter = Arc::new(Counter::default());
        let connection = Connection::new(Arc::clone(&self.app), Waker::from(Arc::clone(&counter)), self.at(0.0));
        (connection, counter)
    }

    /// Runs the actions a driver would (store calls inline), and says which ran.
    fn settle(&self, connection: &mut Connection, now: Now) -> Vec<&'static str> {
        let mut ran = Vec::new();
        while let Some(action) = connection.poll_action() {
            match action {
                Action::Store(call) => {
                    ran.push("store");
                    connection.handle_store_done(call.run(&self.store), now);
                }
                Action::ShutdownWrite => ran.push("shutdown"),
                Action::Close => {
                    ran.push("close");
                    break;
                }
            }
        }
        ran
    }
}

/// Takes everything the connection has to send at `now`, as a socket that takes it all would.
fn drain(connection: &mut Connection, now: Instant) -> String {
    String::from_utf8_lossy(&drain_bytes(connection, now)).into_owned()
}

fn drain_bytes(connection: &mut Connection, now: Instant) -> Vec<u8> {
    let bytes = connection.transmit(now).to_vec();
    connection.consume(bytes.len());
    bytes
}

fn post(room: &str, body: &str) -> String {
    let json = format!(r#"{{"body":"{body}"}}"#);
    format!(
        "POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
}

#[test]
fn keep_alive_answers_and_waits_for_the_next_request_with_the_idle_deadline() {
    let world = World::new();
    let (mut c, _) = world.connect();
    assert_eq!(c.poll_timeout(), Some(world.at(0.0).instant + Duration::from_secs(75)));
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.0));
    assert!(world.settle(&mut c, world.at(1.0)).is_empty());
    assert_eq!(c.interest(), Interest { read: false, write: true }, "no reading while an answer is unwritten");
    let reply = drain(&mut c, world.at(1.0).instant);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\nok"), "{reply}");
    assert!(!reply.contains("Connection: close"), "{reply}");
    assert_eq!(c.interest(), Interest { read: true, write: false });
    assert_eq!(c.poll_timeout(), Some(world.at(1.0).instant + Duration::from_secs(75)));

    c.handle_timeout(world.at(75.0));
    assert!(world.settle(&mut c, world.at(75.0)).is_empty(), "a timer before the deadline does nothing");
    c.handle_timeout(world.at(76.0));
    assert_eq!(drain(&mut c, world.at(76.0).instant), "", "an idle connection is closed without a word");
    assert_eq!(world.settle(&mut c, world.at(76.0)), ["shutdown"]);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_close_request_ends_the_connection() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        world.at(0.5),
    );
    let replies = drain(&mut c, world.at(0.5).instant);
    let statuses: Vec<&str> = replies.match_indices("HTTP/1.1 ").map(|(at, _)| &replies[at + 9..at + 12]).collect();
    assert_eq!(statuses, ["200", "404", "200"], "the request after the closing one is not answered: {replies}");
    assert!(replies.ends_with("Hello, World!"), "{replies}");
    assert_eq!(world.settle(&mut c, world.at(0.5)), ["shutdown"]);
}

#[test]
fn expect_100_continue_is_answered_before_the_body_arrives() {
    let world = World::new();
    let (mut c, _) = world.connect();
    let body = r#"{"body":"hi"}"#;
    let head = format!(
        "POST /api/rooms/r/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.handle_bytes(head.as_bytes(), world.at(0.1));
    assert_eq!(drain(&mut c, world.at(0.1).instant), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(c.poll_timeout(), Some(world.at(0.1).instant + Duration::from_secs(10)), "the head deadline runs meanwhile");
    c.handle_bytes(body.as_bytes(), world.at(0.2));
    assert_eq!(world.settle(&mut c, world.at(0.3)), ["store"]);
    let reply = drain(&mut c, world.at(0.3).instant);
    assert!(reply.starts_with("HTTP/1.1 201 Created\r\n") && reply.contains(r#""body":"hi""#), "{reply}");
}

#[test]
fn a_head_that_does_not_arrive_in_time_is_408() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\n", world.at(1.0));
    assert_eq!(c.poll_timeout(), Some(world.at(11.0).instant));
    c.handle_timeout(world.at(11.0));
    assert!(drain(&mut c, world.at(11.0).instant).starts_with("HTTP/1.1 408 "));
    assert_eq!(world.settle(&mut c, world.at(11.0)), ["shutdown"]);
}

#[test]
fn a_connection_that_waited_in_a_queue_has_its_first_head_deadline_from_its_accept() {
    let world = World::new();
    // Accepted at 0, taken by a worker at 6: what it sent is an unfinished head.
    let (c, _) = world.connect();
    let mut c = c.queued_since(world.at(0.0).instant);
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\n", world.at(6.0));
    assert_eq!(c.poll_timeout(), Some(world.at(10.0).instant), "10 s from the accept, not from the worker");
    c.handle_timeout(world.at(10.0));
    assert!(drain(&mut c, world.at(10.0).instant).starts_with("HTTP/1.1 408 "));

    // One whose request is whole when the worker takes it, however late, is served; its
    // next request's deadline counts from that request's own first byte.
    let (c, _) = world.connect();
    let mut c = c.queued_since(world.at(0.0).instant);
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", world.at(12.0));
    assert!(drain(&mut c, world.at(12.0).instant).starts_with("HTTP/1.1 200 "));
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\n", world.at(13.0));
    assert_eq!(c.poll_timeout(), Some(world.at(23.0).instant));
}

#[test]
fn a_long_poll_waits_holding_no_buffer_and_answers_when_the_hub_wakes_it() {
    let world = World::new();
    let (mut poller, woken) = world.connect();
    poller.handle_bytes(b"GET /api/rooms/r/messages?after=0&wait=20 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.0));
    assert_eq!(drain(&mut poller, world.at(1.0).instant), "", "nothing to send yet: it waits");
    assert_eq!(poller.poll_timeout(), Some(world.at(21.0).instant));
    assert_eq!(poller.interest(), Interest { read: true, write: false }, "read, to see the client leave");
    assert_eq!(poller.held_bytes(), 0, "a waiting long-poll holds no buffer");

    let (mut poster, _) = world.connect();
    poster.handle_bytes(post("r", "hello").as_bytes(), world.at(2.0));
    assert_eq!(world.settle(&mut poster, world.at(2.0)), ["store"]);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the store's publish woke the waiting poller");

    poller.handle_wake(world.at(2.1));
    let reply = drain(&mut poller, world.at(2.1).instant);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.contains(r#""body":"hello""#), "{reply}");
    assert_eq!(poller.poll_timeout(), Some(world.at(2.1).instant + Duration::from_secs(75)), "back to keep-alive");
}

#[test]
fn a_long_poll_times_out_with_an_empty_answer_and_then_serves_the_request_pipelined_behind_it() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/messages?after=0&wait=5 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(0.0));
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.0));
    c.handle_wake(world.at(2.0));
    assert_eq!(drain(&mut c, world.at(2.0).instant), "", "a spurious wake-up sends nothing");
    c.handle_timeout(world.at(5.0));
    let replies = drain(&mut c, world.at(5.0).instant);
    assert!(replies.contains(r#""messages":[]"#) && replies.ends_with("\r\n\r\nok"), "{replies}");
}

#[test]
fn a_long_poll_client_that_leaves_is_forgotten() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/messages?after=0&wait=5 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(0.0));
    assert_eq!(world.app.hub().waiting(), 1);
    c.handle_eof(world.at(1.0));
    assert_eq!(world.app.hub().waiting(), 0, "its waker is unregistered at once");
    assert_eq!(world.settle(&mut c, world.at(1.0)), ["shutdown", "close"]);
}

#[test]
fn an_event_stream_sends_a_heartbeat_when_idle_and_events_when_woken() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/events HTTP/1.1\r\nHost: x\r\n\r\n", world.at(0.0));
    let head = drain(&mut c, world.at(0.0).instant);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("text/event-stream"), "{head}");
    assert_eq!(c.poll_timeout(), Some(world.at(15.0).instant));
    c.handle_timeout(world.at(15.0));
    assert_eq!(drain(&mut c, world.at(15.0).instant), ": heartbeat\n\n");
    assert_eq!(c.poll_timeout(), Some(world.at(30.0).instant));

    let (mut poster, _) = world.connect();
    poster.handle_bytes(post("r", "event!").as_bytes(), world.at(16.0));
    world.settle(&mut poster, world.at(16.0));
    c.handle_wake(world.at(16.0));
    let event = drain(&mut c, world.at(16.0).instant);
    assert!(event.starts_with("id: 1\nevent: message\ndata: {") && event.contains("event!"), "{event}");
    assert_eq!(c.poll_timeout(), Some(world.at(31.0).instant), "an event puts the heartbeat off");
}

/// Posts 1000-character messages to room `r` until `c` stops streaming (at most 20).
fn post_until_not_streaming(world: &World, c: &mut Connection, at: f64) -> Vec<String> {
    let (mut poster, _) = world.connect();
    let mut bodies = Vec::new();
    while c.doing() != "closing" && bodies.len() < 20 {
        let body = format!("{} {}", bodies.len(), "x".repeat(1000));
        poster.handle_bytes(post("r", &body).as_bytes(), world.at(at));
        world.settle(&mut poster, world.at(at));
        drain(&mut poster, world.at(at).instant);
        c.handle_wake(world.at(at));
        bodies.push(body);
    }
    bodies
}

/// Six 1000-character messages in room `r`, at time 0: a history longer than a 4 KiB cap.
fn post_a_history_of_six_thousand_bytes(world: &World) {
    let (mut poster, _) = world.connect();
    for _ in 0..6 {
        poster.handle_bytes(post("r", &"h".repeat(1000)).as_bytes(), world.at(0.0));
        world.settle(&mut poster, world.at(0.0));
        drain(&mut poster, world.at(0.0).instant);
    }
}

#[test]
fn an_event_stream_that_leaves_the_cap_unread_is_disconnected_with_a_reason_by_the_next_message() {
    let world = World::with(|config| config.limits.max_outgoing_bytes = 4096);
    // A history longer than the cap: a new subscriber is sent all of it, and the cap counts
    // what comes after it.
    post_a_history_of_six_thousand_bytes(&world);
    let (mut c, woken) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/events HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.0));
    let history = String::from_utf8_lossy(c.transmit(world.at(1.0).instant)).into_owned();
    assert_eq!(history.matches("event: message").count(), 6, "the whole history, past the cap: {history}");
    assert!(history.len() > 4096);

    // The client reads none of it. Four more messages fit under the cap; the one that
    // finds it full is not sent, and the stream ends saying why.
    let bodies = post_until_not_streaming(&world, &mut c, 2.0);
    assert_eq!(bodies.len(), 5, "closed by the first message past the cap");
    assert!(woken.0.load(Ordering::SeqCst) >= 5, "the stream over its cap still waits on the hub");
    let all = String::from_utf8_lossy(c.transmit(world.at(2.0).instant)).into_owned();
    assert_eq!(all.matches("event: message").count(), 6 + 4, "{all}");
    assert!(!all.contains(&bodies[4]), "the message that found the buffer full is not sent");
    assert!(
        all.ends_with("event: error\ndata: {\"error\":\"subscriber too slow: its outgoing buffer is full\"}\n\n"),
        "the last event says why: {}",
        &all[all.len().saturating_sub(200)..]
    );
    assert_eq!(world.app.hub().waiting(), 0, "its subscription is gone");
    c.handle_timeout(world.at(2.0 + CLOSE_GRACE.as_secs_f64()));
    assert_eq!(world.settle(&mut c, world.at(8.0)), ["close"], "unread past the grace: closed");
}

#[test]
fn a_websocket_subscriber_is_sent_a_history_longer_than_the_cap_whole() {
    let world = World::with(|config| config.limits.max_outgoing_bytes = 4096);
    post_a_history_of_six_thousand_bytes(&world);
    let (mut c, _) = world.connect();
    c.handle_bytes(UPGRADE, world.at(1.0));
    assert_eq!(c.doing(), "WebSocket", "not closed for a history longer than the cap");
    let sent = c.transmit(world.at(1.0).instant).to_vec();
    let frames_at = sent.windows(4).position(|w| w == b"\r\n\r\n").expect("the 101 head") + 4;
    let history = Client(WebSocketContext::new(Role::Client, None)).messages(&sent[frames_at..]);
    assert_eq!(history.len(), 6, "{history:?}");
    assert!(sent.len() > 4096);
    // Still unread: four more messages fit under the cap, the fifth closes it.
    let bodies = post_until_not_streaming(&world, &mut c, 2.0);
    assert_eq!(bodies.len(), 5, "closed by the first message past the cap, the history aside");
}

#[test]
fn an_event_stream_that_reads_in_time_gets_every_message() {
    let world = World::with(|config| config.limits.max_outgoing_bytes = 4096);
    let (mut poster, _) = world.connect();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/events HTTP/1.1\r\nHost: x\r\n\r\n", world.at(0.0));
    drain(&mut c, world.at(0.0).instant);
    let body = "x".repeat(1000);
    let mut received = 0;
    for i in 0..20 {
        poster.handle_bytes(post("r", &body).as_bytes(), world.at(1.0));
        world.settle(&mut poster, world.at(1.0));
        drain(&mut poster, world.at(1.0).instant);
        c.handle_wake(world.at(1.0));
        // It reads every other message: never more than two unread, under the cap.
        if i % 2 == 1 {
            received += drain(&mut c, world.at(1.0).instant).matches("event: message").count();
        }
    }
    assert_eq!(received, 20);
    assert_eq!(c.doing(), "event stream");
}

/// The client's half of a WebSocket, on buffers.
struct Client(WebSocketContext);

/// A stream over two buffers for the client's framing.
struct Buffers<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl std::io::Read for Buffers<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.input.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl std::io::Write for Buffers<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Client {
    fn frame(&mut self, message: WsMessage) -> Vec<u8> {
        let mut output = Vec::new();
        let mut stream = Buffers { input: &[], output: &mut output };
        self.0.write(&mut stream, message).unwrap();
        self.0.flush(&mut stream).unwrap();
        output
    }

    fn messages(&mut self, bytes: &[u8]) -> Vec<WsMessage> {
        let mut output = Vec::new();
        let mut stream = Buffers { input: bytes, output: &mut output };
        let mut messages = Vec::new();
        while let Ok(message) = self.0.read(&mut stream) {
            messages.push(message);
        }
        messages
    }
}

const UPGRADE: &[u8] = b"GET /api/rooms/r/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn upgraded(world: &World) -> (Connection, Client) {
    let (mut c, _) = world.connect();
    c.handle_bytes(UPGRADE, world.at(0.0));
    let head = drain(&mut c, world.at(0.0).instant);
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    (c, Client(WebSocketContext::new(Role::Client, None)))
}

#[test]
fn a_websocket_post_is_stored_acked_and_broadcast_and_a_binary_frame_gets_an_error_frame() {
    let world = World::new();
    let (mut c, mut client) = upgraded(&world);
    assert_eq!(c.poll_timeout(), None, "a WebSocket has no deadline of its own");

    let post = client.frame(WsMessage::text(r#"{"type":"post","body":"hi","ref":3}"#));
    let binary = client.frame(WsMessage::binary(vec![1, 2, 3]));
    let ping = client.frame(WsMessage::Ping(vec![9].into()));
    c.handle_bytes(&[post, binary, ping].concat(), world.at(1.0));
    assert!(!c.interest().read, "reading stops while the post's store call is out");
    assert_eq!(world.settle(&mut c, world.at(1.0)), ["store"]);
    c.handle_wake(world.at(1.0));

    let frames = client.messages(&drain_bytes(&mut c, world.at(1.0).instant));
    let texts: Vec<serde_json::Value> = frames
        .iter()
        .filter_map(|m| match m {
            WsMessage::Text(text) => Some(serde_json::from_str(text.as_str()).unwrap()),
            _ => None,
        })
        .collect();
    assert!(texts.iter().any(|f| f["type"] == "ack" && f["ref"] == 3), "{texts:?}");
    assert!(texts.iter().any(|f| f["type"] == "message" && f["message"]["body"] == "hi"), "{texts:?}");
    assert!(
        texts.iter().any(|f| f["type"] == "error" && f["error"] == "binary frames are not understood; send JSON text"),
        "{texts:?}"
    );
    assert!(frames.iter().any(|m| matches!(m, WsMessage::Pong(p) if p.as_ref() == [9])), "{frames:?}");
    assert!(c.interest().read, "the socket stays open");
}

#[test]
fn a_websocket_subscriber_gets_the_history_and_is_woken_for_each_later_post() {
    let world = World::new();
    let (mut poster, _) = world.connect();
    poster.handle_bytes(post("r", "before").as_bytes(), world.at(0.0));
    world.settle(&mut poster, world.at(0.0));
    drain(&mut poster, world.at(0.0).instant);
    let (mut c, woken) = world.connect();
    c.handle_bytes(UPGRADE, world.at(0.0));
    let mut client = Client(WebSocketContext::new(Role::Client, None));
    let bytes = drain_bytes(&mut c, world.at(0.0).instant);
    let history = client.messages(&bytes[bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..]);
    assert!(matches!(&history[..], [WsMessage::Text(t)] if t.contains("before")), "{history:?}");
    for body in ["after-1", "after-2"] {
        poster.handle_bytes(post("r", body).as_bytes(), world.at(1.0));
        world.settle(&mut poster, world.at(1.0));
        drain(&mut poster, world.at(1.0).instant);
        c.handle_wake(world.at(1.0));
        let live = client.messages(&drain_bytes(&mut c, world.at(1.0).instant));
        assert!(matches!(&live[..], [WsMessage::Text(t)] if t.contains(body)), "{live:?}");
    }
    assert_eq!(woken.0.load(Ordering::SeqCst), 2, "one wake-up per post");
}

#[test]
fn a_websocket_subscriber_that_leaves_the_cap_unread_is_closed_with_a_reason() {
    let world = World::with(|config| config.limits.max_outgoing_bytes = 4096);
    let (mut c, mut client) = upgraded(&world);
    let (mut poster, _) = world.connect();
    let body = "x".repeat(1000);
    let mut posts = 0;
    while c.doing() == "WebSocket" && posts < 20 {
        poster.handle_bytes(post("r", &body).as_bytes(), world.at(1.0));
        world.settle(&mut poster, world.at(1.0));
        drain(&mut poster, world.at(1.0).instant);
        c.handle_wake(world.at(1.0));
        posts += 1;
    }
    assert!(posts < 20, "never closed: {c:?} {:?}", c.interest());
    assert_eq!(c.doing(), "closing");
    let frames = client.messages(c.transmit(world.at(1.0).instant));
    let close = frames.iter().find_map(|m| match m {
        WsMessage::Close(Some(frame)) => Some(frame.reason.to_string()),
        _ => None,
    });
    assert_eq!(close.as_deref(), Some("subscriber too slow: its outgoing buffer is full"), "{frames:?}");
    assert_eq!(world.app.hub().waiting(), 0, "its subscription is gone");
    c.handle_timeout(world.at(1.0 + CLOSE_GRACE.as_secs_f64()));
    assert_eq!(world.settle(&mut c, world.at(7.0)), ["close"], "unread past the grace: closed");
}

#[test]
fn an_idle_connection_gives_its_buffers_back() {
    let world = World::new();
    let (mut c, _) = world.connect();
    // A request split over two reads leaves the decoder's buffer in use meanwhile.
    c.handle_bytes(b"GET /?x=", world.at(0.0));
    assert!(c.held_bytes() > 0);
    c.handle_bytes(b"1 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(0.1));
    assert!(c.held_bytes() > 0, "the page is queued");
    drain(&mut c, world.at(0.1).instant);
    assert_eq!(c.held_bytes(), 0, "answered and idle: nothing held");
}

#[test]
fn a_bad_request_is_answered_then_the_write_side_shut_and_the_rest_drained_until_the_client_leaves() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"BROKEN\r\n\r\nmore bytes the client keeps sending", world.at(0.0));
    assert_eq!(world.settle(&mut c, world.at(0.0)), Vec::<&str>::new(), "the answer is not written yet");
    assert_eq!(c.interest(), Interest { read: true, write: true }, "what the client sends is drained meanwhile");
    assert!(drain(&mut c, world.at(0.0).instant).starts_with("HTTP/1.1 400 "));
    assert_eq!(world.settle(&mut c, world.at(0.1)), ["shutdown"]);
    c.handle_bytes(&[b'x'; 4096], world.at(0.2));
    assert_eq!(drain(&mut c, world.at(0.2).instant), "", "drained, not answered");
    assert_eq!(c.interest(), Interest { read: true, write: false });
    assert_eq!(c.poll_timeout(), Some(world.at(0.0).instant + CLOSE_GRACE), "from the last input before the shutdown");
    c.handle_eof(world.at(0.3));
    assert_eq!(world.settle(&mut c, world.at(0.3)), ["close"]);
}

#[test]
fn a_client_that_never_hangs_up_after_the_answer_is_closed_after_the_grace() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /healthz HTTP/1.0\r\n\r\n", world.at(0.0));
    assert!(drain(&mut c, world.at(0.0).instant).starts_with("HTTP/1.1 200 "));
    assert_eq!(world.settle(&mut c, world.at(0.0)), ["shutdown"]);
    c.handle_timeout(world.at(4.9));
    assert!(world.settle(&mut c, world.at(4.9)).is_empty());
    c.handle_timeout(world.at(5.0));
    assert_eq!(world.settle(&mut c, world.at(5.0)), ["close"]);
    assert!(c.is_closed());
}

/// The latency histogram's samples for `route`: (`le` bound, cumulative count) per bucket,
/// then the sum and the count.
fn latency(world: &World, route: &str) -> (Vec<(String, u64)>, f64, u64) {
    let text = world.app.metrics().render(0, Format::Prometheus);
    let mut buckets = Vec::new();
    let (mut sum, mut count) = (f64::NAN, u64::MAX);
    let bucket = format!("c10k_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"");
    let sum_name = format!("c10k_http_request_duration_seconds_sum{{route=\"{route}\"}} ");
    let count_name = format!("c10k_http_request_duration_seconds_count{{route=\"{route}\"}} ");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&bucket) {
            let (le, n) = rest.split_once("\"} ").unwrap_or_else(|| panic!("{line}"));
            buckets.push((le.to_string(), n.parse().unwrap()));
        } else if let Some(v) = line.strip_prefix(&sum_name) {
            sum = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix(&count_name) {
            count = v.parse().unwrap();
        }
    }
    assert!(!buckets.is_empty(), "no latency histogram for {route}:\n{text}");
    (buckets, sum, count)
}

/// The cumulative count of the bucket whose bound is `le`.
fn at_most(buckets: &[(String, u64)], le: &str) -> u64 {
    buckets.iter().find(|(bound, _)| bound == le).unwrap_or_else(|| panic!("no bucket {le} in {buckets:?}")).1
}

/// Regression: once the machine read no clock, a reply computed within the input that
/// brought its request was timed from that input's time to the same time, 0 however long
/// the handler ran. It is timed to when the driver takes the bytes to write.
#[test]
fn a_cpu_heavy_reply_is_timed_until_the_driver_takes_it_to_write() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /cpu?cost=1000 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.0));
    assert!(world.settle(&mut c, world.at(1.0)).is_empty());
    // The handler ran from 1.0 s; the driver reads 1.3 s when it comes to write.
    let reply = drain(&mut c, world.at(1.3).instant);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    let (buckets, sum, count) = latency(&world, "cpu");
    assert_eq!(count, 1);
    assert!((sum - 0.3).abs() < 1e-6, "timed {sum} s, not 0.3 s");
    assert_eq!((at_most(&buckets, "0.25"), at_most(&buckets, "0.5")), (0, 1), "{buckets:?}");

    // A second write call has nothing new to time.
    assert_eq!(drain(&mut c, world.at(9.0).instant), "");
    assert_eq!(latency(&world, "cpu").2, 1);
}

#[test]
fn pipelined_replies_are_each_timed_once_when_the_batch_is_ready_to_write() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /cpu?cost=10 HTTP/1.1\r\nHost: x\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n\r\nGET /cpu?cost=20 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(2.0));
    // A socket that takes a few bytes at a time: the first call times the whole batch.
    let first = c.transmit(world.at(2.02).instant).len();
    c.consume(10);
    assert!(first > 10);
    let rest = drain(&mut c, world.at(5.0).instant);
    assert_eq!(rest.matches("HTTP/1.1 200 OK").count(), 2, "the first status line went in the first 10 bytes: {rest}");
    let (_, cpu_sum, cpu_count) = latency(&world, "cpu");
    assert_eq!(cpu_count, 2);
    assert!((cpu_sum - 0.04).abs() < 1e-6, "two replies of 0.02 s each, timed {cpu_sum} s");
    let (_, plain_sum, plain_count) = latency(&world, "plaintext");
    assert_eq!(plain_count, 1);
    assert!((plain_sum - 0.02).abs() < 1e-6, "{plain_sum}");
}

#[test]
fn a_post_is_timed_from_its_request_through_the_store_call_to_its_answer() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(post("r", "timed").as_bytes(), world.at(1.0));
    let Some(Action::Store(call)) = c.poll_action() else { panic!("a post runs a store call") };
    // The store call comes back half a second later; the answer is written just after.
    c.handle_store_done(call.run(&world.store), world.at(1.5));
    assert!(world.settle(&mut c, world.at(1.5)).is_empty());
    assert!(drain(&mut c, world.at(1.501).instant).starts_with("HTTP/1.1 201 "));
    let (buckets, sum, count) = latency(&world, "api_post");
    assert_eq!(count, 1);
    assert!((sum - 0.501).abs() < 1e-6, "{sum}");
    assert_eq!((at_most(&buckets, "0.5"), at_most(&buckets, "1")), (0, 1), "{buckets:?}");
}

// ---- Draining (SIGTERM): `handle_shutdown` ---------------------------------------------

/// Takes what the machine sends and runs its actions, as a driver after an input does.
fn flush_and_settle(world: &World, c: &mut Connection, now: Now) -> (String, Vec<&'static str>) {
    let mut sent = String::new();
    let mut ran = Vec::new();
    loop {
        let before = (sent.len(), ran.len());
        ran.extend(world.settle(c, now));
        sent.push_str(&drain(c, now.instant));
        if (sent.len(), ran.len()) == before || ran.last() == Some(&"close") {
            return (sent, ran);
        }
    }
}

#[test]
fn draining_closes_an_idle_keep_alive_connection_at_once_without_a_word() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.0));
    assert!(!drain(&mut c, world.at(9.0).instant).contains("Connection: close"));
    c.handle_shutdown(world.at(2.0));
    let (sent, ran) = flush_and_settle(&world, &mut c, world.at(2.0));
    assert_eq!(sent, "", "nothing is said to an idle connection");
    assert_eq!(ran, ["shutdown"], "its write side is shut at once");
    c.handle_eof(world.at(2.1));
    assert_eq!(world.settle(&mut c, world.at(2.1)), ["close"]);
}

#[test]
fn draining_finishes_a_store_call_in_flight_and_answers_it_with_connection_close() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(post("r", "last words").as_bytes(), world.at(1.0));
    let Some(Action::Store(call)) = c.poll_action() else { panic!("a post makes a store call") };
    c.handle_shutdown(world.at(1.1));
    assert_eq!(drain(&mut c, world.at(9.0).instant), "", "nothing is answered before the store has the message");
    assert!(c.poll_action().is_none(), "the connection waits for its store call");
    c.handle_store_done(call.run(&world.store), world.at(1.2));
    let (reply, ran) = flush_and_settle(&world, &mut c, world.at(1.2));
    assert!(reply.starts_with("HTTP/1.1 201 Created\r\n") && reply.contains("last words"), "{reply}");
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
    assert_eq!(ran, ["shutdown"]);
    let stored = world.store.after(&RoomId::new("r").expect("a room"), MessageId(0), 10).expect("the memory store");
    assert_eq!(stored.len(), 1, "the acknowledged message is stored");
}

#[test]
fn draining_answers_a_waiting_long_poll_at_once_with_its_empty_answer_and_connection_close() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/messages?after=0&wait=20 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.0));
    assert_eq!(drain(&mut c, world.at(9.0).instant), "", "it waits");
    assert_eq!(world.app.hub().waiting(), 1);
    c.handle_shutdown(world.at(2.0));
    let (reply, ran) = flush_and_settle(&world, &mut c, world.at(2.0));
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.contains(r#""messages":[]"#), "{reply}");
    assert!(reply.contains("Connection: close\r\n"), "{reply}");
    assert_eq!(ran, ["shutdown"]);
    assert_eq!(world.app.hub().waiting(), 0, "its waker is forgotten");
}

#[test]
fn draining_ends_an_event_stream_with_a_retry_and_a_shutdown_event_that_keeps_the_last_event_id() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/events HTTP/1.1\r\nHost: x\r\n\r\n", world.at(0.0));
    assert!(drain(&mut c, world.at(9.0).instant).contains("text/event-stream"));
    c.handle_shutdown(world.at(1.0));
    let (last, ran) = flush_and_settle(&world, &mut c, world.at(1.0));
    assert_eq!(last.as_bytes(), c10k_core::conn::SHUTDOWN_EVENT);
    assert!(last.starts_with("retry: ") && last.contains("event: shutdown\n") && !last.contains("id:"), "{last}");
    assert_eq!(ran, ["shutdown"]);
}

#[test]
fn draining_closes_a_websocket_with_1001_after_acknowledging_the_post_in_flight() {
    let world = World::new();
    let (mut c, mut client) = upgraded(&world);
    drain(&mut c, world.at(9.0).instant);
    c.handle_bytes(&client.frame(WsMessage::text(r#"{"type":"post","body":"hi","ref":8}"#)), world.at(1.0));
    let Some(Action::Store(call)) = c.poll_action() else { panic!("a post makes a store call") };
    c.handle_shutdown(world.at(1.1));
    assert_eq!(c.doing(), "WebSocket", "the post in flight is acknowledged first");
    c.handle_store_done(call.run(&world.store), world.at(1.2));
    let bytes = drain_bytes(&mut c, world.at(9.0).instant);
    let frames = client.messages(&bytes);
    let ack = frames.iter().position(|m| matches!(m, WsMessage::Text(t) if t.contains(r#""type":"ack""#)));
    let close = frames.iter().position(|m| {
        matches!(m, WsMessage::Close(Some(f)) if u16::from(f.code) == 1001 && f.reason == c10k_core::conn::SHUTTING_DOWN)
    });
    assert!(ack.is_some() && close.is_some() && ack < close, "the ack, then close 1001: {frames:?}");
    assert_eq!(world.settle(&mut c, world.at(1.2)), ["shutdown"]);
}

#[test]
fn draining_reads_a_half_received_request_to_its_end_and_answers_it_with_connection_close() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /healthz HTTP/1.1\r\nHo", world.at(1.0));
    c.handle_shutdown(world.at(1.1));
    assert!(world.settle(&mut c, world.at(1.1)).is_empty(), "the request is awaited");
    assert!(c.interest().read);
    c.handle_bytes(b"st: x\r\n\r\n", world.at(1.2));
    let (reply, ran) = flush_and_settle(&world, &mut c, world.at(1.2));
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.contains("Connection: close\r\n"), "{reply}");
    assert_eq!(ran, ["shutdown"]);
}

#[test]
fn a_request_arriving_while_draining_that_would_wait_is_answered_at_once() {
    let world = World::new();
    let (mut c, _) = world.connect();
    c.handle_bytes(b"GET /api/rooms/r/messages?after=0&wai", world.at(1.0));
    c.handle_shutdown(world.at(1.1));
    c.handle_bytes(b"t=20 HTTP/1.1\r\nHost: x\r\n\r\n", world.at(1.2));
    let (reply, ran) = flush_and_settle(&world, &mut c, world.at(1.2));
    assert!(reply.contains(r#""messages":[]"#) && reply.contains("Connection: close\r\n"), "{reply}");
    assert_eq!(ran, ["shutdown"]);
    assert_eq!(world.app.hub().waiting(), 0);
}
