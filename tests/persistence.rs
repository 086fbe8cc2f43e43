//! Persistence, black-box: a message acknowledged to its poster survives a crash
//! (SIGKILL of the server and everything it started) and a clean stop, with its id; ids
//! continue where they stopped; a subscriber that resumes across the restart gets exactly
//! what it missed. Run once per model, like the conformance suite, and on the database
//! servers.

mod support;

use support::*;

/// Acknowledged native-API messages survive `kill -9` with their ids, in every room, and
/// each room's ids continue from there.
fn acknowledged_messages_survive_kill_9_with_their_ids(model: Model) {
    let mut server = Server::start(model);
    let main: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();
    let other = api_post(server.port(), "other", "elsewhere");

    server.kill_9();
    server.restart();
    let port = server.port();

    assert_eq!(
        api_messages(port, "main", ""),
        json!({"room": "main", "messages": main, "reset": false, "last_id": 3}),
        "every acknowledged message is still there, unchanged"
    );
    assert_eq!(api_messages(port, "other", "")["messages"], json!([other]));
    assert_eq!(
        api_post(port, "main", "four")["id"],
        4,
        "ids continue after the last stored one"
    );
    assert_eq!(api_post(port, "other", "again")["id"], 2, "in every room");
}

/// A clean stop (SIGTERM, status 0) keeps every message as well.
fn a_clean_stop_keeps_every_message(model: Model) {
    let mut server = Server::start(model);
    let posted: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();

    let status = server.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must stop the server with status 0, got {status}"
    );
    server.restart();

    assert_eq!(
        api_messages(server.port(), "main", "")["messages"],
        json!(posted)
    );
    assert_eq!(api_post(server.port(), "main", "four")["id"], 4);
}

/// An SSE subscriber that had seen message 1 when the server was killed resumes with
/// `Last-Event-ID: 1` and gets exactly 2 and 3, in order, once; then the live ones.
fn an_event_stream_resumes_across_kill_9_with_exactly_the_missed_messages(model: Model) {
    let mut server = Server::start(model);
    let first = api_post(server.port(), "main", "seen before the crash");
    let mut stream = EventStream::open(server.port(), "/api/rooms/main/events", None);
    assert_eq!(stream.next_message(), first);
    let missed: Vec<Value> = ["missed", "missed too"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();

    server.kill_9();
    drop(stream);
    server.restart();
    let port = server.port();

    let mut resumed = EventStream::open(port, "/api/rooms/main/events", Some("1"));
    assert_eq!(resumed.next_message(), missed[0]);
    assert_eq!(resumed.next_message(), missed[1]);
    let live = api_post(port, "main", "after the restart");
    assert_eq!(live["id"], 4);
    assert_eq!(
        resumed.next_message(),
        live,
        "then the live one, and nothing twice"
    );
    let next = api_post(port, "main", "and one more");
    assert_eq!(resumed.next_message(), next, "no message twice");
}

/// A WebSocket client resumes across `kill -9` with `?after=` the same way.
fn a_websocket_resumes_across_kill_9_with_exactly_the_missed_messages(model: Model) {
    let mut server = Server::start(model);
    let posted: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();

    server.kill_9();
    server.restart();
    let port = server.port();

    let mut ws = Ws::connect(port, "/api/rooms/main/ws?after=1");
    assert_eq!(ws.next_message(), posted[1]);
    assert_eq!(ws.next_message(), posted[2]);
    api_post(port, "main", "four");
    assert_eq!(ws.next_ids(1), [4]);
}

/// On the Tornado routes too: after `kill -9` the page and the long-poll show the same
/// messages with the same ids and html, the next id follows on, and the browser's old
/// XSRF cookie still works (tokens are checked by unmasking, not remembered).
fn the_tornado_routes_keep_ids_and_html_across_kill_9(model: Model) {
    let mut server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let posted: Vec<Value> = ["one", "<two>"]
        .iter()
        .map(|b| tornado_post(server.port(), &xsrf, b))
        .collect();

    server.kill_9();
    server.restart();
    let port = server.port();

    let page = Request::get("/").cookie(&xsrf.cookie_header()).send(port);
    page.assert_status(200);
    // The page renders each message in its own markup (sender, time, body); Tornado's
    // `html` fragment is what its routes return, checked below.
    for (message, body) in posted.iter().zip(["one", "&lt;two&gt;"]) {
        let id = message["id"].as_str().unwrap();
        let text = page.text();
        let at = text
            .find(&format!(r#"<div class="message" id="m{id}">"#))
            .unwrap_or_else(|| panic!("the page must still show message {id}:\n{page}"));
        assert!(
            text[at..].contains(&format!(r#"<p class="body" dir="auto">{body}</p>"#)),
            "message {id} must still read {body:?}:\n{page}"
        );
    }
    let reply = updates_request(&xsrf, None).send(port);
    assert_eq!(updates_messages(&reply), posted, "{reply}");

    let next = tornado_post(port, &xsrf, "three");
    assert_eq!(
        next,
        json!({"id": "3", "body": "three", "html": "<div class=\"message\" id=\"m3\">three</div>\n"})
    );
}

macro_rules! persistence {
    ($model:ident, $args:expr) => {
        persistence!(@expand $model, $args, [
            acknowledged_messages_survive_kill_9_with_their_ids,
            a_clean_stop_keeps_every_message,
            an_event_stream_resumes_across_kill_9_with_exactly_the_missed_messages,
            a_websocket_resumes_across_kill_9_with_exactly_the_missed_messages,
            the_tornado_routes_keep_ids_and_html_across_kill_9,
        ]);
    };
    (@expand $model:ident, $args:expr, [ $( $behaviour:ident ),* $(,)? ]) => {
        mod $model {
            const MODEL: crate::support::Model = $args;
            $(
                #[test]
                fn $behaviour() {
                    if crate::support::server::skipped_without_database(MODEL) {
                        return;
                    }
                    crate::$behaviour(MODEL)
                }
            )*
        }
    };
}

persistence!(async_model, &["--model", "async"]);
// The database servers keep the same promises across a kill -9 of the server (each on
// a scratch database; skipped, and said so, when no test server is given, except in CI).
persistence!(mysql_reactor, &["--model", "reactor", "--db", "mysql"]);
persistence!(mysql_async_native, &["--model", "async", "--db", "mysql", "--db-mode", "native"]);
persistence!(postgres_threads, &["--model", "threads", "--db", "postgres"]);
persistence!(postgres_async_native, &["--model", "async", "--db", "postgres", "--db-mode", "native"]);
// Several processes on one database: ids come from the database, so workers agree.
persistence!(postgres_green_workers_2, &["--model", "green", "--workers", "2", "--db", "postgres"]);
persistence!(mysql_async_workers_2, &["--model", "async", "--workers", "2", "--db", "mysql", "--db-mode", "native"]);
