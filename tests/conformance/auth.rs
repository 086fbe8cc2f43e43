//! Tokens and private rooms (`--auth-secret`, `--private-room`; docs/protocol.md,
//! "Tokens"), the same on every model: a private room refuses every transport without a
//! token that grants it (401, or 403 for a token without the permission) and stores
//! nothing it refused; a token's holder reads there and posts under the token's name; a
//! stream ends when its token expires, and a fresh token resumes it from the last id
//! without a gap. Open rooms stay open.

use c10k_core::chat::auth::{mint, NewToken};

use crate::support::ws_frames::{Closed, RawWs};
use crate::support::*;

/// The secret every server of this file checks tokens with.
const SECRET: &str = "conformance-secret-of-32-bytes-or-more";

/// `--auth-secret` with room `staff` private.
fn start(model: Model) -> Server {
    Server::start_with_args(model, &["--auth-secret", SECRET, "--private-room", "staff"])
}

/// A token for `sub` with `rooms` (pattern, permissions), valid for `seconds`.
fn token(sub: &str, rooms: &[(&str, &[&str])], seconds: u64) -> String {
    let rooms = rooms.iter().map(|(room, perms)| (room.to_string(), perms.iter().map(|p| p.to_string()).collect())).collect();
    let new = NewToken { sub: sub.into(), name: Some(format!("{sub} (verified)")), rooms, expires_s: now_ms() / 1000 + seconds, audience: None };
    mint(SECRET.as_bytes(), &new).expect("a token")
}

fn bearer(request: Request, token: &str) -> Request {
    request.header("Authorization", &format!("Bearer {token}"))
}

fn ws_upgrade(path: &str) -> Request {
    Request::get(path)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13")
}

/// Without a token, with a token signed by another secret, and with `alg: none`, every
/// route of a private room is 401 with a Bearer challenge, nothing is stored, and the room
/// is not listed; the open room `main` serves the same clients as before.
pub fn a_private_room_refuses_every_transport_without_a_good_token(model: Model) {
    let server = start(model);
    let port = server.port();
    let forged = {
        let new = NewToken { sub: "eve".into(), rooms: [("staff".to_string(), vec!["read".to_string(), "post".to_string()])].into(), expires_s: now_ms() / 1000 + 600, ..NewToken::default() };
        mint(b"another-secret-of-thirty-two-bytes!!", &new).expect("a token")
    };
    // {"alg":"none"} . {"sub":"eve","exp":...,"rooms":{"staff":["read","post"]}} . (no signature)
    let unsigned = {
        use std::fmt::Write as _;
        let b64 = |s: &str| {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = s.as_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    let _ = write!(out, "{}", ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        };
        let claims = json!({"sub": "eve", "exp": now_ms() / 1000 + 600, "rooms": {"staff": ["read", "post"]}});
        format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims.to_string()))
    };
    let routes = |t: Option<&str>| {
        let q = t.map(|t| format!("access_token={t}")).unwrap_or_default();
        let with = |r: Request| match t {
            Some(t) => bearer(r, t),
            None => r,
        };
        vec![
            ("the long-poll", with(Request::get("/api/rooms/staff/messages?after=0&wait=0"))),
            ("a page of history", with(Request::get("/api/rooms/staff/messages?before=10&limit=5"))),
            ("the post", with(Request::post("/api/rooms/staff/messages").json(&json!({"body": "let me in"})))),
            ("the event stream (query token)", Request::get(&format!("/api/rooms/staff/events?{q}"))),
            ("the WebSocket upgrade (query token)", ws_upgrade(&format!("/api/rooms/staff/ws?{q}"))),
        ]
    };
    for (token, what) in [(None, "no token"), (Some(forged.as_str()), "a forged token"), (Some(unsigned.as_str()), "alg none")] {
        for (route, request) in routes(token) {
            let response = request.send(port);
            assert_eq!(response.status, 401, "{route} with {what} is 401:\n{response}");
            let challenge = response.header("WWW-Authenticate").unwrap_or_else(|| panic!("no challenge on {route}:\n{response}"));
            assert!(challenge.starts_with("Bearer realm=\"c10k\""), "{challenge}");
            if token.is_some() {
                assert!(challenge.contains("error=\"invalid_token\""), "{route} with {what}: {challenge}");
            }
            assert!(response.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "the reason is given:\n{response}");
        }
    }
    let rooms = get(port, "/api/rooms").json();
    assert!(rooms["rooms"].as_array().expect("a list").iter().all(|r| r["room"] != "staff"), "{rooms}");
    let posted = api_post(port, "main", "main is open");
    assert_eq!(posted["from"], "test", "an open room takes posts without a token, under the name they give: {posted}");
    let good = token("alice", &[("staff", &["read"])], 600);
    let staff = bearer(Request::get("/api/rooms/staff/messages?after=0"), &good).send(port);
    assert_eq!(staff.json()["messages"], json!([]), "nothing refused was stored:\n{staff}");
    let metrics = get(port, "/metrics").text();
    assert!(metrics.contains("route=\"auth_refused\""), "/metrics counts the refusals");
}

/// A token that grants `staff` reads it on every transport and posts there under the
/// token's name (not the `from` it sends); a read-only token is 403 on the HTTP post and
/// gets an error frame on the WebSocket, and what it tried is not stored.
pub fn a_token_reads_and_posts_where_it_is_granted_and_no_further(model: Model) {
    let server = start(model);
    let port = server.port();
    let writer = token("alice", &[("staff", &["read", "post"])], 600);
    let reader = token("bob", &[("sta*", &["read"])], 600);

    let posted = bearer(Request::post("/api/rooms/staff/messages"), &writer).json(&json!({"body": "one", "from": "mallory"})).send(port);
    assert_eq!(posted.status, 201, "{posted}");
    assert_eq!(posted.json()["from"], "alice (verified)", "posts carry the token's name:\n{posted}");

    let mut events = EventStream::open(port, &format!("/api/rooms/staff/events?access_token={reader}"), None);
    assert_eq!(events.next_message()["body"], "one");
    let mut ws = Ws::connect(port, &format!("/api/rooms/staff/ws?access_token={writer}"));
    assert_eq!(ws.next_message()["body"], "one");
    ws.send_json(&json!({"type": "post", "body": "two", "from": "mallory", "ref": 1}));
    let ack = loop {
        let frame = ws.next_frame();
        if frame["type"] == "ack" {
            break frame;
        }
    };
    assert_eq!(ack["message"]["from"], "alice (verified)", "{ack}");
    assert_eq!(events.next_message()["body"], "two");

    let refused = bearer(Request::post("/api/rooms/staff/messages"), &reader).json(&json!({"body": "not mine to say"})).send(port);
    assert_eq!(refused.status, 403, "a read-only token may not post:\n{refused}");
    assert!(refused.header("WWW-Authenticate").is_some_and(|c| c.contains("insufficient_scope")), "{refused}");
    let mut read_only = Ws::connect(port, &format!("/api/rooms/staff/ws?access_token={reader}"));
    read_only.send_json(&json!({"type": "post", "body": "nor here", "ref": 7}));
    let frame = loop {
        let frame = read_only.next_frame();
        if frame["type"] == "error" {
            break frame;
        }
        assert_ne!(frame["type"], "ack", "a read-only token's post was stored: {frame}");
    };
    assert_eq!(frame["ref"], 7, "{frame}");
    assert!(frame["error"].as_str().is_some_and(|e| e.contains("post")), "{frame}");

    let stored = bearer(Request::get("/api/rooms/staff/messages?after=0"), &reader).send(port).json();
    let bodies: Vec<&str> = stored["messages"].as_array().expect("messages").iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, ["one", "two"], "nothing refused was stored: {stored}");
    let listed = bearer(Request::get("/api/rooms"), &reader).send(port).json();
    assert!(listed["rooms"].as_array().expect("a list").iter().any(|r| r["room"] == "staff"), "a reader sees the room listed: {listed}");
}

/// A token that expires in 2 s: the WebSocket is closed with 4401 and the event stream
/// ends with an `error` event, both saying the token expired; a long-poll answers by then;
/// a fresh token resumes from the last id and gets what was posted meanwhile.
pub fn a_stream_ends_when_its_token_expires_and_a_fresh_token_resumes_it(model: Model) {
    let server = start(model);
    let port = server.port();
    let writer = token("alice", &[("staff", &["read", "post"])], 600);
    let short = token("carol", &[("staff", &["read"])], 2);
    let first = bearer(Request::post("/api/rooms/staff/messages"), &writer).json(&json!({"body": "before"})).send(port).json();
    let last_id = first["id"].as_u64().expect("an id");

    let mut ws = RawWs::connect(port, &format!("/api/rooms/staff/ws?access_token={short}"));
    let mut events = EventStream::open(port, &format!("/api/rooms/staff/events?access_token={short}"), None);
    let mut poll = start_request(port, &bearer(Request::get(&format!("/api/rooms/staff/messages?after={last_id}&wait=30")), &short));
    assert_eq!(events.next_message()["body"], "before");
    match ws.closed() {
        Closed::Code(4401, reason) => assert!(reason.contains("token expired"), "{reason:?}"),
        other => panic!("an expired token's WebSocket is closed with 4401, not {other:?}; frames: {:#?}", ws.seen),
    }
    let ended = events.rest_until_closed();
    let last = ended.last().unwrap_or_else(|| panic!("the stream ended without a last event"));
    assert_eq!(last.event.as_deref(), Some("error"), "{ended:?}");
    assert!(last.json()["error"].as_str().is_some_and(|e| e.contains("token expired")), "{last:?}");
    let answered = poll.read_response();
    assert_eq!(answered.status, 200, "the long-poll answers at the token's expiry, not after its 30 s:\n{answered}");

    let meanwhile = bearer(Request::post("/api/rooms/staff/messages"), &writer).json(&json!({"body": "meanwhile"})).send(port);
    assert_eq!(meanwhile.status, 201, "{meanwhile}");
    let stale = bearer(Request::get(&format!("/api/rooms/staff/messages?after={last_id}")), &short).send(port);
    assert_eq!(stale.status, 401, "the expired token is refused from now on:\n{stale}");
    assert!(stale.text().contains("expired"), "{stale}");
    let fresh = token("carol", &[("staff", &["read"])], 600);
    let mut resumed = Ws::connect(port, &format!("/api/rooms/staff/ws?after={last_id}&access_token={fresh}"));
    assert_eq!(resumed.next_message()["body"], "meanwhile", "the fresh token resumes where the old one stopped");
}

/// `--private-room main`: Tornado's routes are room main's and are guarded the same (its
/// post takes the token's name as `from`); the page still loads, but with main's history
/// only for a request that brings a token for it.
pub fn a_private_main_guards_tornados_routes_and_the_pages_history(model: Model) {
    let server = Server::start_with_args(model, &["--auth-secret", SECRET, "--private-room", "main"]);
    let port = server.port();
    let writer = token("alice", &[("main", &["read", "post"])], 600);
    let xsrf = Xsrf::fetch(port);
    for (what, request) in [("Tornado's post", tornado_post_request(&xsrf, "unsigned")), ("Tornado's long-poll", updates_request(&xsrf, None))] {
        let refused = request.send(port);
        assert_eq!(refused.status, 401, "{what} of a private main needs a token:\n{refused}");
    }
    let posted = bearer(tornado_post_request(&xsrf, "signed history"), &writer).send(port);
    assert_eq!(posted.status, 200, "{posted}");
    let stored = bearer(Request::get("/api/rooms/main/messages?after=0"), &writer).send(port).json();
    assert_eq!(stored["messages"][0]["from"], "alice (verified)", "Tornado's shape has no sender; the store has: {stored}");
    let polled = bearer(updates_request(&xsrf, None), &writer).send(port);
    assert_eq!(updates_messages(&polled).len(), 1, "{polled}");

    let page = get(port, "/");
    assert_eq!(page.status, 200, "the page itself is public:\n{page}");
    assert!(!page.text().contains("signed history"), "the page shows a private main's history to no one without a token");
    let with_token = get(port, &format!("/?access_token={writer}"));
    assert!(with_token.text().contains("signed history"), "and to a request with one:\n{with_token}");
}

/// `--post-rate 2/1h` with tokens: the limit counts per user (the token's `sub`), not per
/// address. A third post of one user is 429 from any address, while another user posts
/// from the same address; a client with no token is counted by its address, apart.
pub fn the_post_rate_limit_counts_a_tokens_user_not_its_address(model: Model) {
    if skipped_with_several_processes(model, "the post rate limit") {
        return;
    }
    let server = Server::start_with_args(model, &["--auth-secret", SECRET, "--post-rate", "2/1h"]);
    let port = server.port();
    let (alice, bob) = (token("alice", &[], 600), token("bob", &[], 600));
    let post = |token: Option<&str>, from: std::net::Ipv4Addr, body: &str| {
        let request = Request::post("/api/rooms/open/messages").json(&json!({ "body": body }));
        let request = match token {
            Some(t) => bearer(request, t),
            None => request,
        };
        request.send_from(port, from).status
    };
    let (here, there) = (std::net::Ipv4Addr::new(127, 0, 0, 1), std::net::Ipv4Addr::new(127, 0, 0, 3));
    assert_eq!(post(Some(&alice), here, "a1"), 201);
    assert_eq!(post(Some(&alice), there, "a2"), 201, "alice from another address: her second post");
    assert_eq!(post(Some(&alice), here, "a3"), 429, "alice's third, wherever from");
    assert_eq!(post(Some(&alice), std::net::Ipv4Addr::new(127, 0, 0, 4), "a4"), 429);
    assert_eq!(post(Some(&bob), here, "b1"), 201, "bob, from alice's address, has his own bucket");
    assert_eq!(post(None, here, "anonymous 1"), 201, "no token: counted by address, apart from the users");
    assert_eq!(post(None, here, "anonymous 2"), 201);
    assert_eq!(post(None, here, "anonymous 3"), 429);
}
