//! `GET /api/rooms/{room}/events`: Server-Sent Events, resumable by `Last-Event-ID` or
//! `?after=`.

use crate::support::*;

const EVENTS: &str = "/api/rooms/main/events";

/// A subscriber that reconnects with `Last-Event-ID` gets exactly the messages it missed,
/// in order, once, and then the live ones. Each event is
/// `id: ID`, `event: message`, `data: {message JSON}`.
pub fn resume_with_last_event_id_gives_the_missed_messages_once_then_live_ones(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let posted: Vec<Value> = ["one", "two", "three", "four"]
        .iter()
        .map(|b| api_post(port, "main", b))
        .collect();

    let mut stream = EventStream::open(port, EVENTS, Some("1"));
    for missed in &posted[1..] {
        assert_eq!(&stream.next_message(), missed);
    }
    let live = api_post(port, "main", "five");
    assert_eq!(
        stream.next_message(),
        live,
        "after the missed ones, the live one (and nothing twice)"
    );
    // A second live message comes next: nothing was sent twice in between.
    let next = api_post(port, "main", "six");
    assert_eq!(stream.next_message(), next, "no message twice");
}

/// With neither `Last-Event-ID` nor `after`: the whole history, then the live messages.
pub fn without_a_cursor_stream_the_whole_history_then_live_ones(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    api_post(port, "main", "one");
    api_post(port, "main", "two");

    let mut stream = EventStream::open(port, EVENTS, None);
    assert_eq!(stream.next_ids(2), [1, 2]);
    api_post(port, "main", "three");
    let xsrf = Xsrf::fetch(port);
    tornado_post(port, &xsrf, "four, through the Tornado route");
    assert_eq!(
        stream.next_ids(2),
        [3, 4],
        "messages from either route reach the stream"
    );
}

/// `?after=ID` resumes too; when both are given, the `Last-Event-ID` header wins.
pub fn after_resumes_and_last_event_id_wins_over_it(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    for body in ["one", "two", "three"] {
        api_post(port, "main", body);
    }

    let mut by_query = EventStream::open(port, &format!("{EVENTS}?after=1"), None);
    assert_eq!(by_query.next_ids(2), [2, 3]);

    let mut both = EventStream::open(port, &format!("{EVENTS}?after=0"), Some("2"));
    assert_eq!(both.next_ids(1), [3], "Last-Event-ID: 2 wins over ?after=0");
    api_post(port, "main", "four");
    assert_eq!(both.next_ids(1), [4]);
    assert_eq!(by_query.next_ids(1), [4]);
}

/// A cursor beyond the newest id cannot be resumed from: an `event: reset` with
/// `{"room": "main", "last_id": N}` comes first, then the history held, then live ones.
pub fn a_cursor_beyond_the_newest_id_starts_with_a_reset_event(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    api_post(port, "main", "one");
    api_post(port, "main", "two");

    let mut stream = EventStream::open(port, EVENTS, Some("99"));
    let reset = stream.next_event();
    assert_eq!(
        reset.event.as_deref(),
        Some("reset"),
        "the first event must be the reset: {reset:?}"
    );
    assert_eq!(
        reset.json(),
        json!({"room": "main", "last_id": 2, "epoch": store_epoch(port)}),
        "{reset:?}"
    );
    assert_eq!(
        stream.next_ids(2),
        [1, 2],
        "after the reset, the history held"
    );
    api_post(port, "main", "three");
    assert_eq!(stream.next_ids(1), [3]);
}

/// A room's stream carries that room's messages only.
pub fn a_stream_carries_only_its_rooms_messages(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut stream = EventStream::open(port, "/api/rooms/quiet/events", None);
    api_post(port, "noisy", "not for quiet");
    let posted = api_post(port, "quiet", "for quiet");
    assert_eq!(stream.next_message(), posted);
}

/// A resume from an id the server no longer holds (here `--history 3` after five posts)
/// never skips silently: either a `reset` event comes first, followed by the held
/// messages up to the newest, or every message after the cursor comes. Then live ones.
pub fn a_cursor_no_longer_held_never_skips_silently(model: Model) {
    let server = Server::start_with_args(model, &["--history", "3"]);
    let port = server.port();
    for n in 1..=5 {
        api_post(port, "main", &format!("message {n}"));
    }

    let mut stream = EventStream::open(port, EVENTS, Some("1"));
    let first = stream.next_event();
    let mut ids = Vec::new();
    if first.event.as_deref() == Some("reset") {
        assert_eq!(
            first.json(),
            json!({"room": "main", "last_id": 5, "epoch": store_epoch(port)}),
            "{first:?}"
        );
        let first_held = stream.next_message()["id"].as_u64().unwrap();
        ids.push(first_held);
        ids.extend(stream.next_ids((5 - first_held) as usize));
        assert_eq!(
            ids,
            (first_held..=5).collect::<Vec<_>>(),
            "after a reset, the held messages"
        );
    } else {
        assert_eq!(first.event.as_deref(), Some("message"), "{first:?}");
        ids.push(first.json()["id"].as_u64().unwrap());
        ids.extend(stream.next_ids(3));
        assert_eq!(ids, [2, 3, 4, 5], "without a reset nothing may be missing");
    }
    api_post(port, "main", "live");
    assert_eq!(stream.next_ids(1), [6]);
}
