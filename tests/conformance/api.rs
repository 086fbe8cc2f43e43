//! The native JSON API, any room: `POST` and `GET /api/rooms/{room}/messages`.

use std::time::{Duration, Instant};

use crate::support::*;

const QUIET: Duration = Duration::from_millis(500);

fn messages_path(room: &str) -> String {
    format!("/api/rooms/{room}/messages")
}

/// A native-API error: the status, and a body `{"error": "what was wrong"}`.
#[track_caller]
fn assert_api_error(reply: &Response, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}:\n{reply}");
    let error = reply.json();
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: the body must be {{\"error\": \"what was wrong\"}}:\n{reply}"
    );
}

/// A post answers 201 with the stored message: a numeric id, the room, the body,
/// `from`, and `time` in milliseconds since the epoch. The JSON escapes `</` as `<\/`.
pub fn post_answers_201_with_the_stored_message(model: Model) {
    let server = Server::start(model);
    let before = now_ms();
    let reply = Request::post(&messages_path("main"))
        .json(&json!({"body": "hello <b>there</b>", "from": "ann"}))
        .send(server.port());
    let after = now_ms();
    reply.assert_status(201);
    assert!(
        reply.content_type().starts_with("application/json"),
        "{reply}"
    );
    assert!(
        !reply.text().contains("</"),
        "the JSON must escape `</` as `<\\/`:\n{reply}"
    );

    let message = reply.json();
    let time = message["time"]
        .as_u64()
        .unwrap_or_else(|| panic!("time must be a number: {reply}"));
    assert!(
        before.saturating_sub(5_000) <= time && time <= after + 5_000,
        "time must be milliseconds since the epoch, about {before}: {reply}"
    );
    assert_eq!(
        message,
        json!({"id": 1, "room": "main", "body": "hello <b>there</b>", "from": "ann", "time": time}),
        "{reply}"
    );
    assert_eq!(api_post(server.port(), "main", "again")["id"], 2);
}

/// `from` may be left out.
pub fn post_without_from_is_accepted(model: Model) {
    let server = Server::start(model);
    let reply = Request::post(&messages_path("main"))
        .json(&json!({"body": "anonymous"}))
        .send(server.port());
    reply.assert_status(201);
    assert_eq!(reply.json()["body"], "anonymous", "{reply}");
    assert_eq!(reply.json()["id"], 1, "{reply}");
}

/// `body` must be a non-empty string of at most 4096 characters, in a JSON object:
/// anything else is 400 with a JSON error, and nothing is stored.
pub fn post_with_a_missing_empty_or_too_long_body_is_400(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let too_long = "x".repeat(4097);
    let bad_bodies: Vec<(&str, String)> = vec![
        ("an object without body", json!({"from": "ann"}).to_string()),
        ("an empty body", json!({"body": ""}).to_string()),
        ("a body that is a number", json!({"body": 5}).to_string()),
        ("a body that is null", json!({"body": null}).to_string()),
        (
            "a body of 4097 characters",
            json!({"body": too_long}).to_string(),
        ),
        ("a JSON array", "[]".to_string()),
        ("truncated JSON", "{\"body\": \"hi".to_string()),
        ("no bytes at all", String::new()),
    ];
    for (what, bytes) in bad_bodies {
        let reply = Request::post(&messages_path("main"))
            .body("application/json", bytes)
            .send(port);
        assert_api_error(&reply, 400, what);
    }
    assert_eq!(
        api_messages(port, "main", "")["last_id"],
        0,
        "nothing may be stored"
    );

    let longest = "y".repeat(4096);
    assert_eq!(
        api_post(port, "main", &longest)["body"],
        longest,
        "4096 characters are allowed"
    );
}

/// The API takes only `Content-Type: application/json` (a cross-site form cannot send it
/// without a CORS preflight): any other type, or none, is 415. A `charset` parameter
/// does not change the media type.
pub fn post_with_another_content_type_is_415(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let json_bytes = json!({"body": "hi"}).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let reply = Request::post(&messages_path("main"))
            .body(content_type, json_bytes.clone())
            .send(port);
        assert_api_error(&reply, 415, content_type);
    }
    let untyped = Request::post(&messages_path("main"))
        .raw_body(json_bytes.clone())
        .send(port);
    assert_api_error(&untyped, 415, "no Content-Type");
    assert_eq!(
        api_messages(port, "main", "")["last_id"],
        0,
        "nothing may be stored"
    );

    let with_charset = Request::post(&messages_path("main"))
        .body("application/json; charset=utf-8", json_bytes)
        .send(port);
    with_charset.assert_status(201);
}

/// A room name is 1 to 64 of `A-Z a-z 0-9 _ -`; any other is 400 on every room route.
pub fn a_bad_room_name_is_400(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let too_long = "r".repeat(65);
    for room in [
        "bad.room",
        "sp%20ace",
        "caf%C3%A9",
        "a+b",
        too_long.as_str(),
    ] {
        let post = Request::post(&messages_path(room))
            .json(&json!({"body": "hi"}))
            .send(port);
        assert_api_error(&post, 400, &format!("POST to room {room:?}"));
        let list = Request::get(&messages_path(room)).send(port);
        assert_api_error(&list, 400, &format!("GET messages of room {room:?}"));
        let events = Request::get(&format!("/api/rooms/{room}/events")).send(port);
        assert_eq!(events.status, 400, "events of room {room:?}:\n{events}");
    }

    let longest = "r".repeat(64);
    for room in ["Az09_-", longest.as_str()] {
        assert_eq!(api_post(port, room, "fine")["room"], room);
    }
}

/// Ids are per room: every room starts at 1 and counts up on its own.
pub fn ids_are_per_room_and_start_at_1(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    assert_eq!(api_post(port, "main", "m1")["id"], 1);
    assert_eq!(api_post(port, "main", "m2")["id"], 2);
    assert_eq!(api_post(port, "other", "o1")["id"], 1);
    assert_eq!(api_post(port, "main", "m3")["id"], 3);
    assert_eq!(api_post(port, "other", "o2")["id"], 2);
}

/// `GET` without `after` (or with `after=0`) answers the whole history; with `after=ID`,
/// the messages after ID; with the newest id, none (at once: `wait` defaults to 0).
/// `last_id` is the room's newest id and `reset` is false throughout.
pub fn get_messages_after_an_id_answers_the_later_ones(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let posted: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| api_post(port, "main", b))
        .collect();

    for (query, expected) in [
        ("", &posted[..]),
        ("?after=0", &posted[..]),
        ("?after=1", &posted[1..]),
        ("?after=3", &posted[3..]),
    ] {
        let answer = api_messages(port, "main", query);
        assert_eq!(
            answer,
            json!({"room": "main", "messages": expected, "reset": false, "last_id": 3}),
            "GET {}{query}",
            messages_path("main")
        );
    }
}

/// An empty room has no messages, and `last_id` 0.
pub fn get_messages_of_an_empty_room(model: Model) {
    let server = Server::start(model);
    assert_eq!(
        api_messages(server.port(), "empty", ""),
        json!({"room": "empty", "messages": [], "reset": false, "last_id": 0})
    );
}

/// With `wait`, a GET with nothing to send waits, and answers as soon as a message is
/// posted.
pub fn get_with_wait_returns_when_a_message_is_posted(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    api_post(port, "main", "before");

    let mut poll = start_request(
        port,
        &Request::get(&format!("{}?after=1&wait=20", messages_path("main"))),
    );
    poll.expect_no_response_within(QUIET, "a GET with wait and nothing after `after` must wait");
    let posted = api_post(port, "main", "after");
    let reply = poll.read_response();
    reply.assert_status(200);
    assert_eq!(
        reply.json(),
        json!({"room": "main", "messages": [posted], "reset": false, "last_id": 2}),
        "{reply}"
    );
}

/// With `wait` and nothing posted, the answer comes after the wait with `"messages": []`;
/// `wait` is capped at the long-poll wait (here `--longpoll-wait 1`).
pub fn get_with_wait_answers_an_empty_list_when_nothing_is_posted(model: Model) {
    let server = Server::start_with_longpoll_wait(model, 1);
    let port = server.port();

    let started = Instant::now();
    let answer = api_messages(port, "main", "?after=0&wait=1");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "wait=1 must wait about a second, answered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        answer,
        json!({"room": "main", "messages": [], "reset": false, "last_id": 0})
    );

    // Far beyond the long-poll wait: answered after about a second all the same (the
    // client's read timeout is 20 s).
    let answer = api_messages(port, "main", "?wait=3600");
    assert_eq!(
        answer,
        json!({"room": "main", "messages": [], "reset": false, "last_id": 0})
    );
}

/// `after` beyond the newest id cannot be resumed from: `reset` is true, and the answer
/// is a fresh start, the history held.
pub fn get_after_an_id_beyond_the_newest_answers_a_reset(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let posted: Vec<Value> = ["one", "two"]
        .iter()
        .map(|b| api_post(port, "main", b))
        .collect();

    assert_eq!(
        api_messages(port, "main", "?after=99"),
        json!({"room": "main", "messages": posted, "reset": true, "last_id": 2})
    );
}

/// A resume from an id the server no longer holds (here `--history 3` after five posts)
/// never skips silently: either `reset` is true and the messages are the held ones, up
/// to the newest, or `reset` is false and every message after `after` is there. From an
/// id just before the oldest held, nothing is missing: no reset.
pub fn get_after_an_id_no_longer_held_never_skips_silently(model: Model) {
    let server = Server::start_with_args(model, &["--history", "3"]);
    let port = server.port();
    for n in 1..=5 {
        api_post(port, "main", &format!("message {n}"));
    }

    let answer = api_messages(port, "main", "?after=1");
    assert_eq!(answer["last_id"], 5, "{answer}");
    let ids = api_ids(&answer["messages"]);
    match answer["reset"].as_bool() {
        Some(false) => assert_eq!(
            ids,
            [2, 3, 4, 5],
            "without a reset nothing may be missing: {answer}"
        ),
        Some(true) => assert!(
            !ids.is_empty() && ids.windows(2).all(|w| w[1] == w[0] + 1) && ids.last() == Some(&5),
            "after a reset, the held messages up to the newest: {answer}"
        ),
        None => panic!("reset must be a boolean: {answer}"),
    }

    let answer = api_messages(port, "main", "?after=2");
    assert_eq!(answer["reset"], false, "{answer}");
    assert_eq!(api_ids(&answer["messages"]), [3, 4, 5], "{answer}");
}

/// A post sent again with the same `Idempotency-Key` (a client that lost the first
/// answer) is answered 201 with the message stored the first time, marked
/// `Idempotent-Replayed: true`, and stored once; the same key for another body is 422, a
/// malformed key 400; keys are per room.
pub fn a_post_retried_with_its_idempotency_key_is_stored_once(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let post = |room: &str, key: &str, body: &str| {
        Request::post(&format!("/api/rooms/{room}/messages"))
            .header("Idempotency-Key", key)
            .json(&json!({"body": body, "from": "ann"}))
            .send(port)
    };
    let first = post("main", "k-1", "once");
    first.assert_status(201);
    assert_eq!(first.header("idempotent-replayed"), None, "{first}");
    let again = post("main", "k-1", "once");
    again.assert_status(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again}");
    assert_eq!(again.json(), first.json(), "the same message, id and time included");
    assert_eq!(api_ids(&api_messages(port, "main", "")["messages"]), [1], "stored once");

    post("main", "k-1", "another body").assert_status(422);
    post("main", "has space", "x").assert_status(400);
    post("other", "k-1", "once").assert_status(201);
    let next = post("main", "k-2", "once");
    next.assert_status(201);
    assert_eq!(next.json()["id"], 2, "a new key is a new message");
}

/// `?before=ID&limit=N` pages back through history from the store, newest first, past
/// what the server holds in memory (here `--history 3` after eight posts): each page
/// names the `next_before` of the next older one, `null` on the last. Bad values are 400.
pub fn get_messages_before_an_id_pages_back_past_the_cache_newest_first(model: Model) {
    let server = Server::start_with_args(model, &["--history", "3"]);
    let port = server.port();
    for n in 1..=8 {
        api_post(port, "main", &format!("message {n}"));
    }
    api_post(port, "other", "not in main");
    let held = api_messages(port, "main", "");
    assert_eq!(api_ids(&held["messages"]), [6, 7, 8], "the cache holds the newest three: {held}");

    let page = api_messages(port, "main", "?before=6&limit=3");
    assert_eq!(api_ids(&page["messages"]), [5, 4, 3], "{page}");
    assert_eq!(page["room"], "main", "{page}");
    assert_eq!(page["messages"][0]["body"], "message 5", "{page}");
    assert_eq!(page["next_before"], 3, "{page}");
    let last = api_messages(port, "main", "?before=3&limit=3");
    assert_eq!(api_ids(&last["messages"]), [2, 1], "{last}");
    assert_eq!(last["next_before"], Value::Null, "the oldest message is on this page: {last}");
    let newest = api_messages(port, "main", "?limit=2");
    assert_eq!(api_ids(&newest["messages"]), [8, 7], "no 'before': from the newest: {newest}");
    let default_limit = api_messages(port, "main", "?before=9");
    assert_eq!(api_ids(&default_limit["messages"]), (1..=8).rev().collect::<Vec<_>>(), "{default_limit}");
    let empty = api_messages(port, "nobody-here", "?before=5");
    assert_eq!(api_ids(&empty["messages"]), [0u64; 0], "{empty}");
    assert_eq!(empty["next_before"], Value::Null, "{empty}");

    for bad in ["?before=0", "?before=x", "?before=-1", "?limit=0", "?limit=201", "?before=4&limit=z", "?before=4&after=1", "?before=4&wait=1"] {
        let reply = Request::get(&format!("{}{bad}", messages_path("main"))).send(port);
        assert_api_error(&reply, 400, bad);
    }
    api_messages(port, "main", "?before=4&limit=200");
}

/// The key is kept with the message in the store: a retry after the server was killed
/// (`kill -9`) and restarted (and,
/// with `--workers N`, on whichever worker it lands) is answered with the message stored
/// the first time and stores nothing. The key may also come as a JSON field `key`, and on
/// Tornado's form route as a header or a form field `key`.
pub fn a_retry_after_a_restart_gets_the_stored_message(model: Model) {
    let mut server = Server::start(model);
    let post = |port: u16, key: &str, body: &str| {
        Request::post("/api/rooms/main/messages").json(&json!({"body": body, "from": "ann", "key": key})).send(port)
    };
    let first = post(server.port(), "k-durable", "kept");
    first.assert_status(201);
    // As a crash between the commit and the answer would leave it.
    server.kill_9();
    server.restart();
    let port = server.port();
    // Several tries: with several workers each may answer one.
    for _ in 0..4 {
        let again = post(port, "k-durable", "kept");
        again.assert_status(201);
        assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again}");
        assert_eq!(again.json(), first.json(), "the stored message, id and time included");
    }
    post(port, "k-durable", "another body").assert_status(422);
    let held = api_messages(port, "main", "?limit=10");
    assert_eq!(api_ids(&held["messages"]), [1], "stored once: {held}");

    let xsrf = Xsrf::fetch(port);
    let tornado = |key: &str| {
        Request::post("/a/message/new")
            .cookie(&xsrf.cookie_header())
            .form(&[("body", "by form"), ("_xsrf", &xsrf.field), ("key", key)])
            .send(port)
    };
    let stored = tornado("k-form");
    stored.assert_status(200);
    let again = tornado("k-form");
    again.assert_status(200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "{again}");
    assert_eq!(again.json(), stored.json());
    assert_eq!(api_ids(&api_messages(port, "main", "?limit=10")["messages"]), [2, 1], "the form post once");
}

/// Epochs (docs/protocol.md): the store's epoch is said by `GET /api/rooms` and the page, and
/// in `X-C10k-Epoch` on the native poll, the event stream and the WebSocket upgrade. A
/// cursor given with another epoch (`?epoch=`) is answered with the explicit reset, then
/// the history held, on all three transports alike, whatever its id; with the store's own
/// epoch, or none, it resumes as usual.
pub fn a_cursor_from_another_epoch_is_reset_on_every_transport(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    for body in ["one", "two", "three"] {
        api_post(port, "epochs", body);
    }
    let ours = store_epoch(port);
    assert!(ours.len() == 16 && ours.bytes().all(|b| b.is_ascii_hexdigit()), "an epoch is 16 hex digits: {ours}");
    let theirs = if ours == "0123456789abcdef" { "fedcba9876543210" } else { "0123456789abcdef" };

    // Long-poll.
    let same = Request::get(&format!("{}?after=2&epoch={ours}", messages_path("epochs"))).send(port);
    same.assert_status(200);
    assert_eq!(same.header("X-C10k-Epoch"), Some(ours.as_str()));
    assert_eq!((api_ids(&same.json()["messages"]), same.json()["reset"].clone()), (vec![3], json!(false)));
    let other = api_messages(port, "epochs", &format!("?after=2&epoch={theirs}"));
    assert_eq!(other["reset"], true, "another epoch's cursor is reset: {other}");
    assert_eq!(api_ids(&other["messages"]), [1, 2, 3], "then the history held");
    let nothing_read = api_messages(port, "epochs", &format!("?after=0&epoch={theirs}"));
    assert_eq!((nothing_read["reset"].clone(), api_ids(&nothing_read["messages"])), (json!(false), vec![1, 2, 3]), "a cursor of 0 claims nothing");
    let no_epoch = api_messages(port, "epochs", "?after=2");
    assert_eq!((no_epoch["reset"].clone(), api_ids(&no_epoch["messages"])), (json!(false), vec![3]), "no epoch given: as before");

    // Server-Sent Events, resuming with Last-Event-ID.
    let reset = json!({"room": "epochs", "last_id": 3, "epoch": ours});
    let mut stream = EventStream::open(port, &format!("/api/rooms/epochs/events?epoch={theirs}"), Some("2"));
    assert_eq!(stream.head.header("X-C10k-Epoch"), Some(ours.as_str()));
    let first = stream.next_event();
    assert_eq!((first.event.as_deref(), first.json()), (Some("reset"), reset.clone()), "{first:?}");
    assert_eq!(stream.next_ids(3), [1, 2, 3]);
    let mut resumed = EventStream::open(port, &format!("/api/rooms/epochs/events?epoch={ours}"), Some("2"));
    assert_eq!(resumed.next_ids(1), [3], "the store's own epoch resumes");

    // WebSocket.
    let mut ws = Ws::connect(port, &format!("/api/rooms/epochs/ws?after=2&epoch={theirs}"));
    let mut frame_reset = reset.clone();
    frame_reset["type"] = json!("reset");
    assert_eq!(ws.next_frame(), frame_reset);
    assert_eq!(ws.next_ids(3), [1, 2, 3]);
    let mut ws_resumed = Ws::connect(port, &format!("/api/rooms/epochs/ws?after=2&epoch={ours}"));
    assert_eq!(ws_resumed.next_ids(1), [3]);

    // The page says it, for its script.
    let page = get(port, "/").text();
    assert!(page.contains(&format!("<meta name=\"c10k-epoch\" content=\"{ours}\">")), "the page names the epoch");
}

/// The reason epochs exist: a server restarted on a new database gives ids from 1 again,
/// and a client that resumes "after 2" with the old epoch must not take the new 3 for the
/// one after its old 2. It gets the reset, then the new history.
pub fn a_new_database_is_a_new_epoch_and_resuming_into_it_is_reset(model: Model) {
    let mut first = Server::start(model);
    let port = first.port();
    for body in ["old one", "old two"] {
        api_post(port, "epochs", body);
    }
    let old = store_epoch(port);
    first.stop();
    let second = Server::start(model);
    let port = second.port();
    for body in ["new one", "new two", "new three"] {
        api_post(port, "epochs", body);
    }
    assert_ne!(store_epoch(port), old, "a new database has a new epoch");
    let resumed = api_messages(port, "epochs", &format!("?after=2&epoch={old}"));
    assert_eq!(resumed["reset"], true, "{resumed}");
    let bodies: Vec<&str> = resumed["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["new one", "new two", "new three"]);
}
