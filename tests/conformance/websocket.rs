//! `GET /api/rooms/{room}/ws`: the WebSocket, JSON text frames both ways.

use tungstenite::{Bytes, Message};

use crate::support::ws_frames::{op, Closed, Frame, RawWs};
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
/// ref when the frame had one; a text frame that is not JSON is told it is "not valid
/// JSON"), nothing is stored, and the socket stays open.
pub fn a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut ws = Ws::connect(port, WS);

    ws.send_text("this is not JSON");
    let error = ws.next_frame();
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("not valid JSON")),
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
        json!({"type": "reset", "room": "main", "last_id": 2, "epoch": store_epoch(port)})
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
            json!({"type": "reset", "room": "main", "last_id": 5, "epoch": store_epoch(port)})
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

/// The largest message the server takes from a client (64 KiB), as in crates/core/src/conn.rs.
const MAX_MESSAGE: usize = 64 * 1024;

/// Opens a socket on `room`, writes `frames` as they are, and asserts that the server closes
/// it with `code` (RFC 6455 7.4.1) and then hangs up.
fn assert_closed_with(port: u16, room: &str, what: &str, frames: &[Frame], code: u16) {
    assert_closed_with_on(port, &format!("/api/rooms/{room}/ws"), what, frames, code);
}

/// [`assert_closed_with`] on any WebSocket path.
fn assert_closed_with_on(port: u16, path: &str, what: &str, frames: &[Frame], code: u16) {
    let mut ws = RawWs::connect(port, path);
    ws.send(frames).unwrap_or_else(|e| panic!("{what}: writing the frames failed: {e}"));
    match ws.closed() {
        Closed::Code(got, reason) => assert_eq!(got, code, "{what}: closed with {got} ({reason:?}), not {code}"),
        other => panic!("{what}: expected a close frame with {code}, got {other:?}; frames: {:#?}", ws.seen),
    }
}

/// A message over the server's limit, in one frame or in fragments, is refused with 1009
/// ("a message that is too big for it to process", RFC 6455 7.4.1), as soon as its size
/// is known.
pub fn an_oversized_message_is_closed_with_1009(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    assert_closed_with(port, "big", "one frame of 64 KiB + 1", &[Frame::text(vec![b'x'; MAX_MESSAGE + 1])], 1009);
    let fragment = vec![b'x'; MAX_MESSAGE / 2];
    let fragments = [
        Frame::text(fragment.clone()).more(),
        Frame::new(op::CONTINUATION, fragment.clone()).more(),
        Frame::new(op::CONTINUATION, fragment).more(),
    ];
    assert_closed_with(port, "big", "three fragments of 32 KiB", &fragments, 1009);
    let binary = [Frame::new(op::BINARY, vec![0; MAX_MESSAGE + 1])];
    assert_closed_with(port, "big", "a binary frame of 64 KiB + 1", &binary, 1009);
    assert_eq!(get(port, "/healthz").status, 200, "the server still serves");
}

/// RFC 6455 5.1: "The server MUST close the connection upon receiving a frame that is not
/// masked ... a server MAY send a Close frame with a status code of 1002 (protocol error)."
/// It does, for data and control frames alike.
pub fn an_unmasked_client_frame_is_closed_with_1002(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let post = json!({"type": "post", "body": "unmasked"}).to_string();
    assert_closed_with(port, "main", "an unmasked text frame", &[Frame::text(post).unmasked()], 1002);
    assert_closed_with(port, "main", "an unmasked ping", &[Frame::new(op::PING, "hi").unmasked()], 1002);
    assert_eq!(api_messages(port, "main", "")["last_id"], 0, "nothing is stored from an unmasked frame");
}

/// A text message or close reason that is not UTF-8 is refused with 1007 ("data within a
/// message that was not consistent with the type of the message (e.g., non-UTF-8 data
/// within a text message)", RFC 6455 7.4.1), whether it comes in one frame or is split
/// inside a code point across fragments.
pub fn invalid_utf8_in_a_text_message_is_closed_with_1007(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let cases: [(&str, Vec<Frame>); 5] = [
        ("a lone continuation byte", vec![Frame::text(b"\x80".to_vec())]),
        ("a surrogate encoded in UTF-8", vec![Frame::text(b"\xed\xa0\x80".to_vec())]),
        ("a code point above U+10FFFF", vec![Frame::text(b"\xf4\x90\x80\x80".to_vec())]),
        (
            "valid fragments, then a bad one",
            vec![Frame::text("κό".as_bytes()).more(), Frame::new(op::CONTINUATION, b"\xce\xba\xff".to_vec())],
        ),
        ("a close reason that is not UTF-8", vec![Frame::close(1000, b"\xce\xba\xe1\xbd")]),
    ];
    for (what, frames) in cases {
        assert_closed_with(port, "utf8", what, &frames, 1007);
    }
    // The same split at a code point boundary is fine: it is one valid message.
    let mut ws = RawWs::connect(port, "/api/rooms/utf8/ws");
    let post = json!({"type": "post", "body": "κόσμε", "ref": 1}).to_string().into_bytes();
    let split = post.iter().position(|&b| b == 0xce).unwrap() + 1;
    ws.send(&[Frame::text(&post[..split]).more(), Frame::new(op::CONTINUATION, &post[split..])]).unwrap();
    let ack = loop {
        let frame = ws.next_frame().unwrap().unwrap_or_else(|| panic!("closed; frames: {:#?}", ws.seen));
        let value: Value = serde_json::from_slice(&frame.payload).unwrap_or(Value::Null);
        if value["type"] == "ack" {
            break value;
        }
    };
    assert_eq!(ack["message"]["body"], "κόσμε", "a code point split across fragments is joined");
}

/// Every other way of breaking RFC 6455's framing is refused with 1002 (protocol error):
/// reserved bits with no extension negotiated (5.2), reserved opcodes (5.2), fragmented or
/// oversized control frames (5.5), continuations of nothing and new messages inside a
/// fragmented one (5.4), close codes no endpoint may send (7.4.1, 7.4.2).
pub fn every_other_framing_violation_is_closed_with_1002(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let post = || Frame::text(json!({"type": "post", "body": "x"}).to_string());
    let cases: Vec<(&str, Vec<Frame>)> = vec![
        ("RSV1 set with no extension", vec![post().rsv(0b100)]),
        ("RSV2 set", vec![post().rsv(0b010)]),
        ("RSV3 on a ping", vec![Frame::new(op::PING, "p").rsv(0b001)]),
        ("reserved data opcode 3", vec![Frame::new(3, "x")]),
        ("reserved data opcode 7", vec![Frame::new(7, "x")]),
        ("reserved control opcode 0xB", vec![Frame::new(0xB, "x")]),
        ("reserved control opcode 0xF", vec![Frame::new(0xF, "x")]),
        ("a fragmented ping", vec![Frame::new(op::PING, "p").more(), Frame::new(op::CONTINUATION, "q")]),
        ("a ping of 126 bytes", vec![Frame::new(op::PING, vec![b'p'; 126])]),
        ("a continuation with nothing to continue", vec![Frame::new(op::CONTINUATION, "x")]),
        ("a new text message inside a fragmented one", vec![Frame::text("a").more(), Frame::text("b")]),
        ("a close frame with a one-byte payload", vec![Frame::new(op::CLOSE, vec![0x03])]),
        ("close code 999", vec![Frame::close(999, b"")]),
        ("close code 1004 (reserved)", vec![Frame::close(1004, b"")]),
        ("close code 1005 (never sent)", vec![Frame::close(1005, b"")]),
        ("close code 1006 (never sent)", vec![Frame::close(1006, b"")]),
        ("close code 1015 (never sent)", vec![Frame::close(1015, b"")]),
        ("close code 2999 (unassigned)", vec![Frame::close(2999, b"")]),
    ];
    for (what, frames) in cases {
        assert_closed_with(port, "broken", what, &frames, 1002);
    }
    assert_eq!(api_messages(port, "broken", "")["last_id"], 0, "no broken frame stored anything");
}

/// A client's close is echoed with its own code (RFC 6455 5.5.1: "the endpoint typically
/// echos the status code it received"), an empty one with an empty one, and a frame after
/// the close is not answered.
pub fn a_close_is_echoed_with_its_code(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    for code in [1000, 1001, 3000, 4999] {
        assert_closed_with(port, "bye", &format!("a close with {code}"), &[Frame::close(code, b"bye")], code);
    }
    let mut ws = RawWs::connect(port, "/api/rooms/bye/ws");
    ws.send(&[Frame::new(op::CLOSE, Vec::new()), Frame::new(op::PING, "after")]).unwrap();
    assert_eq!(ws.closed(), Closed::NoCode, "an empty close is echoed empty, and the ping after it is not answered");
    assert!(
        ws.seen.iter().all(|f| f.opcode != op::PONG),
        "no pong after the close: {:#?}",
        ws.seen
    );
}

/// The resident memory of the server and its worker processes, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let rss = |pid: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let mut total = rss(&pid.to_string());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else { continue };
        // The parent pid is the second field after the parenthesised command name.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if parent == Some(pid.to_string().as_str()) {
            total += rss(&name);
        }
    }
    total
}

/// A client that sends pings without ever reading the pongs cannot make the server hold
/// more than its output cap (1 MiB) for it: once that much waits unread, it is closed with
/// 1008, and the server's memory stays within a few MiB of where it was, after 16 MiB of
/// pings that ask for 16 MiB of pongs.
pub fn a_ping_flood_keeps_the_servers_memory_bounded(model: Model) {
    const FLOOD: usize = 16 * 1024 * 1024;
    const GROWTH: u64 = 6 * 1024 * 1024;
    let server = Server::start(model);
    let port = server.port();
    let mut ws = RawWs::connect(port, "/api/rooms/flood/ws");
    // Warm the server's paths for this socket before taking the baseline.
    ws.send(&[Frame::new(op::PING, "warm")]).unwrap();
    assert_eq!(ws.next_frame().unwrap().map(|f| f.opcode), Some(op::PONG));
    let before = resident_bytes(server.pid());

    let ping = Frame::new(op::PING, vec![b'p'; 125]).to_bytes();
    let batch = ping.repeat(1024);
    let mut writer = ws.stream().try_clone().unwrap();
    let mut sent = 0;
    while sent < FLOOD {
        // A write fails once the server has given up on us and its grace has passed.
        if std::io::Write::write_all(&mut writer, &batch).is_err() {
            break;
        }
        sent += batch.len();
    }
    let after = resident_bytes(server.pid());
    assert!(
        after.saturating_sub(before) < GROWTH,
        "after {sent} bytes of pings never answered the server grew from {before} to {after} bytes"
    );
    match ws.closed() {
        Closed::Code(1008, _) | Closed::Dropped => {}
        other => panic!("a client that never reads its pongs is closed with 1008, not {other:?}"),
    }
    let pongs = ws.seen.iter().filter(|f| f.opcode == op::PONG).count();
    assert!(pongs * 127 < FLOOD / 2, "the server stopped answering well before the flood ended: {pongs} pongs");
    assert_eq!(get(port, "/healthz").status, 200, "the server still serves");
}

/// `--websocket-echo` serves `GET /ws/echo`, which sends every message back as it came:
/// text and binary, whole or reassembled from fragments with a ping between them, through
/// the same framing and limits as the chat's endpoint (an oversized message is 1009 there
/// too). Without the flag the route does not exist.
pub fn the_echo_endpoint_sends_every_message_back_only_when_enabled(model: Model) {
    let plain = Server::start(model);
    assert_eq!(get(plain.port(), "/ws/echo").status, 404, "no echo endpoint without --websocket-echo");
    drop(plain);

    let server = Server::start_with_args(model, &["--websocket-echo"]);
    let port = server.port();
    let mut ws = RawWs::connect(port, "/ws/echo");
    let binary: Vec<u8> = (0..=255).collect();
    ws.send(&[
        Frame::text("hello, échos"),
        Frame::new(op::BINARY, binary.clone()),
        Frame::text("frag").more(),
        Frame::new(op::PING, "between"),
        Frame::new(op::CONTINUATION, "mented"),
    ])
    .expect("writing the frames");
    let mut next = |what: &str| ws.next_frame().unwrap_or_else(|e| panic!("{what}: {e}")).unwrap_or_else(|| panic!("{what}: the stream ended"));
    let text = next("the text echo");
    assert_eq!((text.opcode, text.payload.as_slice()), (op::TEXT, "hello, échos".as_bytes()));
    let echoed = next("the binary echo");
    assert_eq!((echoed.opcode, echoed.payload), (op::BINARY, binary));
    let pong = next("the pong of the ping between the fragments");
    assert_eq!((pong.opcode, pong.payload.as_slice()), (op::PONG, b"between".as_slice()));
    let whole = next("the reassembled message");
    assert_eq!((whole.opcode, whole.payload.as_slice(), whole.fin), (op::TEXT, b"fragmented".as_slice(), true));
    ws.send(&[Frame::close(1000, b"done")]).expect("writing the close");
    assert_eq!(ws.closed(), Closed::Code(1000, "done".into()), "the close is echoed");

    assert_closed_with_on(port, "/ws/echo", "a binary frame of 64 KiB + 1", &[Frame::new(op::BINARY, vec![0; MAX_MESSAGE + 1])], 1009);
}
