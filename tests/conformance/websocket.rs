//! `GET /api/rooms/{room}/ws`: the WebSocket, JSON text frames both ways.

use tungstenite::{Bytes, Message};

use crate::support::*;

const WS: &str = "/api/rooms/main/ws";

/// On connect: the history, in id order; then each message someone else posts, once.
pub fn sends_the_history_then_messages_posted_by_others(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let history: Vec<Value> = ["one", "two"]
        .iter()
        .map(|b| api_post(port, "main", b))
        .collect();

    let mut ws = Ws::connect(port, WS);
    assert_eq!(ws.next_message(), history[0]);
    assert_eq!(ws.next_message(), history[1]);

    let live = api_post(port, "main", "three");
    assert_eq!(ws.next_message(), live);
    let xsrf = Xsrf::fetch(port);
    tornado_post(port, &xsrf, "four, through the Tornado route");
    let message = ws.next_message();
    assert_eq!(
        (message["id"].clone(), message["body"].clone()),
        (json!(4), json!("four, through the Tornado route"))
    );
}

/// A post over the socket is stored and answered with `{"type": "ack", "ref": R,
/// "message": {...}}`, `ref` echoed whatever JSON it is. The poster also gets the
/// `message` frame every subscriber gets (in either order with the ack); so does
/// everyone else.
pub fn a_post_gets_an_ack_with_its_ref_and_is_broadcast(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut poster = Ws::connect(port, WS);
    let mut listener = Ws::connect(port, WS);

    for (n, reference) in [json!({"n": [1, "x"]}), json!(7)].into_iter().enumerate() {
        let body = format!("post {n}");
        poster.send_json(&json!({"type": "post", "body": body, "from": "ann", "ref": reference}));
        let (first, second) = (poster.next_frame(), poster.next_frame());
        let (ack, broadcast) = if first["type"] == "ack" {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(
            ack["type"],
            "ack",
            "one of the two frames must be the ack: {:#?}",
            poster.seen()
        );
        assert_eq!(ack["ref"], reference, "the ack echoes the ref: {ack}");
        assert_eq!(
            broadcast["type"],
            "message",
            "the other must be the message: {:#?}",
            poster.seen()
        );

        let message = &ack["message"];
        assert_eq!(message["id"], n as u64 + 1, "{ack}");
        assert_eq!(
            (&message["room"], &message["body"], &message["from"]),
            (&json!("main"), &json!(body), &json!("ann"))
        );
        assert_eq!(
            &broadcast["message"], message,
            "the broadcast carries the stored message"
        );
        assert_eq!(
            &listener.next_message(),
            message,
            "every subscriber gets it"
        );
    }
    assert_eq!(
        api_messages(port, "main", "")["last_id"],
        2,
        "both posts are stored"
    );
}

/// A frame the server cannot use gets `{"type": "error", "error": "...", "ref": R}` (the
/// ref when the frame had one), nothing is stored, and the socket stays open.
pub fn a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut ws = Ws::connect(port, WS);

    ws.send_text("this is not JSON");
    let error = ws.next_frame();
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the error says what was wrong: {error}"
    );

    for (bad, reference) in [
        (json!({"type": "post", "ref": "no body"}), json!("no body")),
        (json!({"type": "post", "body": 42, "ref": 2}), json!(2)),
        (
            json!({"type": "shout", "body": "hi", "ref": [3]}),
            json!([3]),
        ),
    ] {
        ws.send_json(&bad);
        let error = ws.next_frame();
        assert_eq!(error["type"], "error", "for {bad}: {error}");
        assert_eq!(error["ref"], reference, "for {bad}: {error}");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "for {bad}: {error}"
        );
    }

    ws.send_json(&json!({"type": "post", "body": "still here", "ref": "ok"}));
    let frames = [ws.next_frame(), ws.next_frame()];
    let ack = frames
        .iter()
        .find(|f| f["type"] == "ack")
        .unwrap_or_else(|| panic!("no ack: {frames:#?}"));
    assert_eq!(
        ack["message"]["id"], 1,
        "the bad frames stored nothing: {ack}"
    );
}

/// `?after=ID` resumes: only the messages after ID, then the live ones.
pub fn after_resumes_with_only_the_later_messages(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    for body in ["one", "two", "three"] {
        api_post(port, "main", body);
    }
    let mut ws = Ws::connect(port, &format!("{WS}?after=2"));
    assert_eq!(ws.next_ids(1), [3]);
    api_post(port, "main", "four");
    assert_eq!(
        ws.next_ids(1),
        [4],
        "after the missed one, the live one (and nothing twice)"
    );
    // A second live message comes next: nothing was sent twice in between.
    api_post(port, "main", "five");
    assert_eq!(ws.next_ids(1), [5], "no message twice");
}

/// `?after=` beyond the newest id: `{"type": "reset", "room": "main", "last_id": N}`
/// first, then the history held.
pub fn after_beyond_the_newest_id_starts_with_a_reset_frame(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    api_post(port, "main", "one");
    api_post(port, "main", "two");

    let mut ws = Ws::connect(port, &format!("{WS}?after=99"));
    assert_eq!(
        ws.next_frame(),
        json!({"type": "reset", "room": "main", "last_id": 2})
    );
    assert_eq!(ws.next_ids(2), [1, 2], "after the reset, the history held");
}

/// A client frame larger than what the server reads at once (its WebSocket read buffer
/// is a few KiB) is assembled whole: a 4,096-character body of two-byte characters.
pub fn a_frame_larger_than_one_read_arrives_whole(model: Model) {
    let server = Server::start(model);
    let mut ws = Ws::connect(server.port(), "/api/rooms/big/ws");
    let body = "é".repeat(4096);
    ws.send_json(&json!({"type": "post", "body": body, "from": "ann", "ref": 1}));
    let (first, second) = (ws.next_frame(), ws.next_frame());
    let ack = if first["type"] == "ack" { first } else { second };
    assert_eq!(ack["type"], "ack", "frames: {:#?}", ws.seen());
    assert_eq!(ack["message"]["body"], json!(body), "the body arrives whole");
}

/// The server answers a ping with a pong carrying the same payload.
pub fn answers_pings(model: Model) {
    let server = Server::start(model);
    let mut ws = Ws::connect(server.port(), "/api/rooms/empty/ws");
    ws.send(Message::Ping(Bytes::from_static(b"are you there")));
    loop {
        match ws.next_raw() {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Message::Ping(_) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

/// A resume from an id the server no longer holds (here `--history 3` after five posts)
/// never skips silently: either a `reset` frame comes first, followed by the held
/// messages up to the newest, or every message after `after` comes. Then live ones.
pub fn after_an_id_no_longer_held_never_skips_silently(model: Model) {
    let server = Server::start_with_args(model, &["--history", "3"]);
    let port = server.port();
    for n in 1..=5 {
        api_post(port, "main", &format!("message {n}"));
    }

    let mut ws = Ws::connect(port, &format!("{WS}?after=1"));
    let first = ws.next_frame();
    let mut ids = Vec::new();
    if first["type"] == "reset" {
        assert_eq!(
            first,
            json!({"type": "reset", "room": "main", "last_id": 5})
        );
        let first_held = ws.next_message()["id"].as_u64().unwrap();
        ids.push(first_held);
        ids.extend(ws.next_ids((5 - first_held) as usize));
        assert_eq!(
            ids,
            (first_held..=5).collect::<Vec<_>>(),
            "after a reset, the held messages"
        );
    } else {
        assert_eq!(first["type"], "message", "{first}");
        ids.push(first["message"]["id"].as_u64().unwrap());
        ids.extend(ws.next_ids(3));
        assert_eq!(ids, [2, 3, 4, 5], "without a reset nothing may be missing");
    }
    api_post(port, "main", "live");
    assert_eq!(ws.next_ids(1), [6]);
}

/// A post frame sent again with the same `key` (on a new socket, as after a reconnect) is
/// acked with the message stored the first time, and not stored or broadcast again.
pub fn a_post_resent_with_its_key_is_stored_once(model: Model) {
    if skipped_with_several_processes(model, "the idempotency key table") {
        return;
    }
    let server = Server::start(model);
    let port = server.port();
    let frame = json!({"type": "post", "body": "once", "from": "ann", "ref": 1, "key": "ws-k"});
    let mut first = Ws::connect(port, WS);
    first.send_json(&frame);
    let ack = loop {
        let f = first.next_frame();
        if f["type"] == "ack" {
            break f;
        }
    };
    drop(first);
    let mut second = Ws::connect(port, WS);
    assert_eq!(second.next_message()["id"], 1, "the history");
    second.send_json(&json!({"type": "post", "body": "once", "from": "ann", "ref": 2, "key": "ws-k"}));
    let replay = second.next_frame();
    assert_eq!(replay["type"], "ack", "{replay}");
    assert_eq!(replay["ref"], 2);
    assert_eq!(replay["message"], ack["message"], "the message stored the first time");
    let marker = api_post(port, "main", "next");
    assert_eq!(marker["id"], 2, "nothing was stored in between");
    assert_eq!(second.next_message(), marker, "and nothing broadcast in between");
}

/// The output cap, the same on every model: a subscriber that never reads is disconnected
/// once more than the cap (1 MiB) waits unread for it, so that it cannot make the server
/// buffer without bound (its subscription is gone: `c10k_subscribers_open{kind="ws"}` drops).
pub fn a_subscriber_that_never_reads_is_closed_once_the_cap_is_exceeded(model: Model) {
    if crate::support::skipped_with_several_processes(model, "the subscriber gauge") {
        return;
    }
    let server = Server::start(model);
    let port = server.port();
    let _silent = Ws::connect(port, WS);
    let ws_open = |port| {
        let text = get(port, "/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix("c10k_subscribers_open{kind=\"ws\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(ws_open(port), 1.0);
    // Posts of 4 KiB each until the server gives up on the subscriber: 1 MiB of cap plus
    // what the two sockets' buffers hold, bounded well above both.
    let body = "x".repeat(4000);
    let mut posts = 0;
    while ws_open(port) > 0.0 {
        assert!(posts < 5000, "still subscribed after {posts} posts of 4 KB never read");
        for _ in 0..50 {
            api_post(port, "main", &body);
        }
        posts += 50;
    }
}
