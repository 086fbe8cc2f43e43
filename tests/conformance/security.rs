//! Browser security, the same on every model: a page on another site cannot use the
//! chat's streams or change anything through a visitor's browser (its `Origin` is refused
//! with 403), the server's own pages and clients that send no `Origin` can, origins named
//! by `--allow-origin` can; and the page tells the browser to run only its own script
//! (Content-Security-Policy), not to sniff types, and to keep referrers on this site. A
//! client that posts faster than `--post-rate` is refused on every post route.

use std::net::Ipv4Addr;

use crate::support::sse::whatwg_events;
use crate::support::ws_frames::{Closed, Frame, RawWs};
use crate::support::*;

const FOREIGN: &str = "http://evil.example";

/// The routes a foreign page must not use: (what, request).
fn guarded(xsrf: &Xsrf) -> Vec<(&'static str, Request)> {
    vec![
        ("the WebSocket upgrade", websocket_upgrade()),
        ("the event stream", Request::get("/api/rooms/main/events")),
        ("the native long-poll", Request::get("/api/rooms/main/messages?after=0&wait=0")),
        ("the native post", Request::post("/api/rooms/main/messages").json(&json!({"body": "from afar"}))),
        ("Tornado's post", tornado_post_request(xsrf, "from afar")),
        ("Tornado's long-poll", updates_request(xsrf, None)),
        ("the rooms list", Request::get("/api/rooms")),
        ("a bank account", Request::post("/api/bank/accounts").json(&json!({"id": "eve", "balance": 100}))),
        ("a bank transfer", Request::post("/api/bank/transfers").json(&json!({"from": "a", "to": "b", "amount": 1}))),
    ]
}

fn websocket_upgrade() -> Request {
    Request::get("/api/rooms/main/ws")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Version", "13")
}

/// Every streaming and state-changing route answers a foreign `Origin` (and `null`) 403,
/// and nothing is stored.
pub fn a_foreign_origin_is_403_on_every_stream_and_post(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    for origin in [FOREIGN, "null", "http://127.0.0.1:1"] {
        for (what, request) in guarded(&xsrf) {
            let reply = request.header("Origin", origin).send(port);
            assert_eq!(reply.status, 403, "{what} with Origin {origin}:\n{reply}");
            assert!(reply.text().contains("--allow-origin"), "{what}: the refusal says how to allow it:\n{reply}");
        }
    }
    assert_eq!(api_messages(port, "main", "")["last_id"], 0, "nothing was posted from afar");
}

/// The server's own origin, and no `Origin` at all, pass on the same routes; the page, its
/// assets and the health route are open to every origin (a link from anywhere works).
pub fn the_servers_own_origin_and_no_origin_pass(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let own = format!("http://127.0.0.1:{port}");
    let post = Request::post("/api/rooms/main/messages").json(&json!({"body": "at home"}));
    post.clone().header("Origin", &own).send(port).assert_status(201);
    post.send(port).assert_status(201);
    Request::get("/api/rooms/main/messages?after=0&wait=0").header("Origin", &own).send(port).assert_status(200);
    let mut conn = Conn::open(port);
    conn.send_request(&websocket_upgrade().header("Origin", &own));
    let upgraded = conn.read_head();
    assert_eq!(upgraded.status, 101, "{upgraded}");
    for path in ["/", "/static/chat.js", "/healthz"] {
        Request::get(path).header("Origin", FOREIGN).send(port).assert_status(200);
    }
}

/// An origin named with `--allow-origin` passes; others still do not.
pub fn an_origin_named_by_allow_origin_passes(model: Model) {
    let server = Server::start_with_args(model, &["--allow-origin", "https://app.example.org"]);
    let port = server.port();
    let post = Request::post("/api/rooms/main/messages").json(&json!({"body": "from the app"}));
    post.clone().header("Origin", "https://app.example.org").send(port).assert_status(201);
    post.header("Origin", FOREIGN).send(port).assert_status(403);
}

/// The page forbids inline script, framing and foreign requests, and says nosniff and a
/// referrer policy; its assets and JSON answers say nosniff too.
pub fn the_page_sends_a_strict_content_security_policy(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let page = get(port, "/");
    page.assert_status(200);
    let csp = page.header("Content-Security-Policy").unwrap_or_else(|| panic!("no CSP:\n{page}"));
    for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert!(!page.text().contains("<script>"), "the page has no inline script");
    assert_eq!(page.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(page.header("Referrer-Policy"), Some("same-origin"));
    for path in ["/static/chat.js", "/static/chat.css", "/api/rooms"] {
        assert_eq!(get(port, path).header("X-Content-Type-Options"), Some("nosniff"), "{path}");
    }
}

/// The processes that serve a model line (`--workers N`; 1 without it).
fn processes(model: Model) -> usize {
    workers_of(model).unwrap_or(1)
}

/// `--post-rate 3/1h`: a client may post three times, then every post route refuses it (429
/// with `Retry-After`; over WebSocket, close 1008) and stores nothing, while a client from
/// another address still posts. (One token comes back every 20 minutes: none does during
/// the test, so no clock is raced.) Each worker process counts on its own (documented at
/// `--post-rate`): with several, no worker admits a fourth post of the client, and once
/// one refuses, the rest of the checks need one process.
pub fn a_client_over_post_rate_gets_429_or_1008_and_others_still_post(model: Model) {
    let server = Server::start_with_args(model, &["--post-rate", "3/1h"]);
    let port = server.port();
    let post = |body: &str| Request::post("/api/rooms/main/messages").json(&json!({ "body": body }));
    let mut admitted: std::collections::HashMap<String, usize> = Default::default();
    let mut accepted = Vec::new();
    let refused = loop {
        let body = format!("within the limit {}", accepted.len() + 1);
        let reply = post(&body).send(port);
        if reply.status == 429 {
            break reply;
        }
        reply.assert_status(201);
        let worker = reply.header("X-C10k-Worker").unwrap_or("the only process").to_string();
        let count = admitted.entry(worker.clone()).or_default();
        *count += 1;
        assert!(*count <= 3, "{worker} admitted post {count} of a client limited to 3");
        accepted.push(body);
        assert!(accepted.len() <= 3 * processes(model), "{} posts admitted with {} processes", accepted.len(), processes(model));
    };
    if processes(model) == 1 {
        assert_eq!(accepted.len(), 3, "the fourth post of a burst of 3 is the refused one");
    }
    let retry: u64 = refused.header("Retry-After").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no Retry-After seconds:\n{refused}"));
    assert!((1..=1200).contains(&retry), "a token is back within 20 minutes, not {retry} s:\n{refused}");
    assert!(refused.text().contains("posting too fast"), "the refusal says why:\n{refused}");

    if processes(model) == 1 {
        let xsrf = Xsrf::fetch(port);
        let tornado = tornado_post_request(&xsrf, "through the form").send(port);
        assert_eq!(tornado.status, 429, "Tornado's post route counts against the same client:\n{tornado}");
        let mut ws = RawWs::connect(port, "/api/rooms/main/ws");
        ws.send(&[Frame::text(json!({"type": "post", "body": "over the socket"}).to_string())]).expect("writing the post frame");
        match ws.closed() {
            Closed::Code(1008, reason) => assert!(reason.contains("posting too fast"), "{reason:?}"),
            other => panic!("a WebSocket post over the limit is closed with 1008, not {other:?}; frames: {:#?}", ws.seen),
        }
    }
    post("from next door").send_from(port, Ipv4Addr::new(127, 0, 0, 2)).assert_status(201);
    accepted.push("from next door".to_string());
    let stored: Vec<Value> = api_messages(port, "main", "")["messages"].as_array().expect("messages").iter().map(|m| m["body"].clone()).collect();
    assert_eq!(stored, accepted, "nothing refused was stored");
}

/// Behind a proxy named by `--trusted-proxy`, the client is the address the proxy
/// forwarded (`X-Forwarded-For`, its last entry): posts the proxy forwards for different
/// clients all pass, one client's second is refused (by any one process). Anyone else's
/// `X-Forwarded-For` is the client's own claim and changes nothing: a new claim each time
/// does not earn a new token.
pub fn behind_a_trusted_proxy_the_client_is_the_forwarded_address(model: Model) {
    let proxy = Ipv4Addr::new(127, 0, 0, 3);
    let stranger = Ipv4Addr::new(127, 0, 0, 4);
    let server = Server::start_with_args(model, &["--post-rate", "1/1h", "--trusted-proxy", "127.0.0.3"]);
    let port = server.port();
    let post = |forwarded: &str, from: Ipv4Addr| {
        let request = Request::post("/api/rooms/main/messages").json(&json!({ "body": "hi" }));
        request.header("X-Forwarded-For", forwarded).send_from(port, from)
    };
    for client in 1..=2 * processes(model) {
        let forwarded = format!("203.0.113.50, 198.51.100.{client}");
        post(&forwarded, proxy).assert_status(201);
    }
    // Until a refusal, each process admits the client once at most.
    let refused_after = |what: &str, forwarded: &dyn Fn(usize) -> String, from: Ipv4Addr| {
        let mut admitted = std::collections::HashSet::new();
        for attempt in 0..=processes(model) {
            let reply = post(&forwarded(attempt), from);
            if reply.status == 429 {
                return;
            }
            reply.assert_status(201);
            let worker = reply.header("X-C10k-Worker").unwrap_or("the only process").to_string();
            assert!(admitted.insert(worker.clone()), "{what}: {worker} admitted a second post from one client");
        }
        panic!("{what}: {} posts from one client, none refused", processes(model) + 1);
    };
    refused_after("one forwarded client", &|_| "198.51.100.200".to_string(), proxy);
    refused_after("a stranger's X-Forwarded-For", &|attempt| format!("192.0.2.{attempt}"), stranger);
}

/// `--connect-rate 2/1h`: a client may open two streams (SSE or WebSocket), then the next
/// is refused before it starts (429 with `Retry-After`, and for WebSocket no 101), while a
/// client from another address still connects and long-polls, which are not streams, are
/// still answered. Each worker process counts on its own, as for `--post-rate`.
pub fn a_client_over_connect_rate_is_refused_new_streams_and_still_long_polls(model: Model) {
    let server = Server::start_with_args(model, &["--connect-rate", "2/1h"]);
    let port = server.port();
    let events = || Request::get("/api/rooms/main/events").header("Accept", "text/event-stream");
    let mut admitted: std::collections::HashMap<String, usize> = Default::default();
    // Each stream is closed once it opened: it counted when it started (and prefork has a
    // process per open stream only).
    let mut opened = 0;
    let refused = loop {
        let mut conn = Conn::open(port);
        conn.send_request(&events());
        let head = conn.read_head();
        if head.status == 429 {
            break head;
        }
        assert_eq!(head.status, 200, "a stream within the limit opens:\n{head}");
        assert!(head.is_event_stream(), "{head}");
        let worker = head.header("X-C10k-Worker").unwrap_or("the only process").to_string();
        let count = admitted.entry(worker.clone()).or_default();
        *count += 1;
        assert!(*count <= 2, "{worker} opened stream {count} of a client limited to 2");
        opened += 1;
        assert!(opened <= 2 * processes(model), "{opened} streams opened with {} processes", processes(model));
    };
    if processes(model) == 1 {
        assert_eq!(opened, 2, "the third stream of a burst of 2 is the refused one");
    }
    let retry: u64 = refused.header("Retry-After").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no Retry-After seconds:\n{refused}"));
    assert!((1..=1800).contains(&retry), "a token is back within 30 minutes, not {retry} s:\n{refused}");

    if processes(model) == 1 {
        let mut conn = Conn::open(port);
        let upgrade = conn.request(&websocket_upgrade());
        assert_eq!(upgrade.status, 429, "a WebSocket over the limit gets no 101:\n{upgrade}");
        assert!(upgrade.text().contains("connecting too fast"), "the refusal says why:\n{upgrade}");
        let posted = api_post(port, "main", "posts are not streams");
        let after = posted["id"].as_u64().expect("an id") - 1;
        let polled = api_messages(port, "main", &format!("?after={after}"));
        assert_eq!(polled["messages"][0]["body"], "posts are not streams", "a long-poll is answered: {polled}");
        let metrics = get(port, "/metrics").text();
        assert!(metrics.contains("route=\"connect_limited\""), "/metrics counts the refusals:\n{metrics}");
    }
    let mut next_door = Conn::open_from(port, Ipv4Addr::new(127, 0, 0, 2));
    next_door.send_request(&events());
    let head = next_door.read_head();
    assert_eq!(head.status, 200, "another client still connects:\n{head}");
}

/// `--connection-post-rate 2/1h`: a WebSocket connection may post twice, then its third post
/// closes it with 1008 and stores nothing; a new connection from the same address has its
/// own bucket and posts again (no `--post-rate` here).
pub fn a_websocket_over_connection_post_rate_is_closed_1008_and_a_new_one_posts(model: Model) {
    let server = Server::start_with_args(model, &["--connection-post-rate", "2/1h"]);
    let port = server.port();
    let post = |ws: &mut Ws, body: &str| {
        ws.send_json(&json!({"type": "post", "body": body, "ref": body}));
        loop {
            let frame = ws.next_frame();
            if frame["type"] == "ack" {
                assert_eq!(frame["ref"], body, "{frame}");
                break;
            }
        }
    };
    let mut ws = Ws::connect(port, "/api/rooms/main/ws");
    post(&mut ws, "one");
    post(&mut ws, "two");
    let mut raw = RawWs::connect(port, "/api/rooms/main/ws");
    for body in ["three", "four", "five"] {
        raw.send(&[Frame::text(json!({"type": "post", "body": body}).to_string())]).expect("writing a post frame");
    }
    // The raw connection has a bucket of its own: three posts, the third over it.
    match raw.closed() {
        Closed::Code(1008, reason) => {
            assert!(reason.contains("posting too fast") && reason.contains("on this connection"), "{reason:?}")
        }
        other => panic!("the third post on one connection is closed with 1008, not {other:?}; frames: {:#?}", raw.seen),
    }
    let mut again = Ws::connect(port, "/api/rooms/main/ws");
    post(&mut again, "six");
    let stored: Vec<Value> = api_messages(port, "main", "")["messages"].as_array().expect("messages").iter().map(|m| m["body"].clone()).collect();
    assert_eq!(stored, ["one", "two", "three", "four", "six"], "nothing refused was stored");
}

/// Message text a browser must show as text: (what it is, the body, the link targets its
/// HTML may have). Posted as is on both post routes, so none starts or ends with white
/// space (Tornado's route strips it); the exact `html` of a `<script>` body is pinned in
/// `new_message::escapes_html_in_the_body_and_lt_slash_in_the_json`.
const HOSTILE_BODIES: &[(&str, &str, &[&str])] = &[
    ("a script element", "<script>alert(1)</script>", &[]),
    ("an img with an onerror handler", "<img src=x onerror=alert(1)>", &[]),
    ("a quote that would end an attribute", "x\" onmouseover=\"alert(1)' onfocus='alert(2)", &[]),
    ("a javascript: URL", "javascript:alert(1)", &[]),
    ("a javascript: URL beside a real one", "JavaScript:alert(1)//http://example.com/ok", &["http://example.com/ok"]),
    ("a right-to-left override", "abc\u{202e}fed", &[]),
    ("CR, LF and CRLF", "one\rtwo\nthree\r\nfour", &[]),
    ("an SSE event in the body", "hi\r\n\r\nevent: x\ndata: y\n\nid: 99\r\rdata: z", &[]),
];

/// The sender of the native posts: markup too, shown on the page.
const HOSTILE_FROM: &str = "<b onclick=alert(3)>eve</b>";

/// Reads an HTML fragment the server made of message text as a browser would, and returns
/// its text and its link targets. Fails unless the only markup in it is `<a href="...">`
/// and `</a>` with an `http(s)://` target, and every `"`, `'` and `>` of the text is
/// escaped (so that the text can end neither an element nor an attribute).
fn read_inert_html(fragment: &str, what: &str) -> (String, Vec<String>) {
    let unescape = |s: &str| {
        let raw = ['<', '>', '"', '\''];
        assert!(!s.contains(raw), "{what}: unescaped markup characters in {s:?} (fragment {fragment:?})");
        s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
    };
    let (mut text, mut links) = (String::new(), Vec::new());
    let mut rest = fragment;
    while let Some(at) = rest.find('<') {
        text.push_str(&unescape(&rest[..at]));
        rest = &rest[at..];
        if let Some(anchor) = rest.strip_prefix("<a href=\"") {
            let (href, after) = anchor.split_once("\">").unwrap_or_else(|| panic!("{what}: an unclosed <a> in {fragment:?}"));
            let href = unescape(href);
            assert!(href.starts_with("http://") || href.starts_with("https://"), "{what}: a link to {href:?} in {fragment:?}");
            links.push(href);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("</a>") {
            rest = after;
        } else {
            panic!("{what}: markup other than a link in a message: {fragment:?}");
        }
    }
    text.push_str(&unescape(rest));
    (text, links)
}

/// The part of `text` between `prefix` and the `suffix` that follows it.
fn between<'a>(text: &'a str, prefix: &str, suffix: &str, what: &str) -> &'a str {
    let start = text.find(prefix).unwrap_or_else(|| panic!("{what}: no {prefix:?} in:\n{text}")) + prefix.len();
    let len = text[start..].find(suffix).unwrap_or_else(|| panic!("{what}: no {suffix:?} after {prefix:?} in:\n{text}"));
    &text[start..start + len]
}

/// Asserts that raw JSON the server wrote has no `</` (it could close a `<script>`).
fn assert_no_lt_slash(raw: &str, what: &str) {
    assert!(!raw.contains("</"), "{what}: the raw JSON must write every `</` as `<\\/`:\n{raw}");
}

/// Every hostile body, posted by the native API and by Tornado's form, comes back intact
/// as text from every output: the native JSON answer and history, Tornado's JSON (its
/// `html` escaped and linkified to `http(s)` targets only, `</` written `<\/`) and
/// long-poll, the page loaded after the posts, the event stream and the WebSocket. The
/// event stream, read as the WHATWG standard reads it (a lone CR ends a line), carries
/// each message as exactly one `message` event: CR and LF in a body are escaped in its
/// JSON and cannot end a `data:` line, let alone start an event of their own.
pub fn hostile_text_comes_back_as_text_from_every_output(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    // (id, body, links, sender) of every post, in id order.
    let mut posted: Vec<(u64, &str, &[&str], &str)> = Vec::new();
    for &(what, body, links) in HOSTILE_BODIES {
        let reply = Request::post("/api/rooms/main/messages").json(&json!({"body": body, "from": HOSTILE_FROM})).send(port);
        reply.assert_status(201);
        assert_no_lt_slash(&reply.text(), what);
        let message = reply.json();
        assert_eq!((message["body"].as_str(), message["from"].as_str()), (Some(body), Some(HOSTILE_FROM)), "{what}: {reply}");
        posted.push((message["id"].as_u64().expect("a numeric id"), body, links, HOSTILE_FROM));

        let reply = tornado_post_request(&xsrf, body).send(port);
        reply.assert_status(200);
        assert_no_lt_slash(&reply.text(), what);
        let message = reply.json();
        assert_eq!(message["body"], body, "{what}: {reply}");
        let id = message["id"].as_str().expect("a string id").to_string();
        let html = message["html"].as_str().expect("html");
        let inner = between(html, &format!("<div class=\"message\" id=\"m{id}\">"), "</div>\n", what);
        assert!(html.ends_with(&format!("{inner}</div>\n")), "{what}: one element: {html:?}");
        assert_eq!(read_inert_html(inner, what), (body.to_string(), links.iter().map(|l| l.to_string()).collect()), "{what}");
        posted.push((id.parse().expect("a numeric string id"), body, links, ""));
    }
    let bodies: Vec<&str> = posted.iter().map(|p| p.1).collect();

    let history = Request::get("/api/rooms/main/messages").send(port);
    assert_no_lt_slash(&history.text(), "the native history");
    let stored: Vec<Value> = history.json()["messages"].as_array().expect("messages").iter().map(|m| m["body"].clone()).collect();
    assert_eq!(stored, bodies, "the native history");

    let updates = updates_request(&xsrf, None).send(port);
    assert_no_lt_slash(&updates.text(), "Tornado's long-poll");
    let cached: Vec<Value> = updates_messages(&updates).iter().map(|m| m["body"].clone()).collect();
    assert_eq!(cached, bodies, "Tornado's long-poll");

    let page = get(port, "/");
    page.assert_status(200);
    let page = page.text();
    for &(id, body, links, from) in &posted {
        let what = format!("message {id} on the page");
        let element = between(&page, &format!("<div class=\"message\" id=\"m{id}\">"), "</p></div>\n", &what);
        let shown_from = between(element, "<span class=\"from\" dir=\"auto\">", "</span>", &what);
        let expected_from = if from.is_empty() { "anonymous" } else { from };
        assert_eq!(read_inert_html(shown_from, &what), (expected_from.to_string(), Vec::new()), "{what}: the sender");
        // The body is a paragraph of its own with `dir="auto"`: a bidirectional override
        // in it ends with the paragraph (Unicode's bidi algorithm) and cannot reorder the
        // page around it.
        let (_, shown_body) = element.split_once("<p class=\"body\" dir=\"auto\">").unwrap_or_else(|| panic!("{what}: no body paragraph: {element}"));
        let links = links.iter().map(|l| l.to_string()).collect();
        assert_eq!(read_inert_html(shown_body, &what), (body.to_string(), links), "{what}: the body");
    }

    let mut events = EventStream::open(port, "/api/rooms/main/events", None);
    let streamed: Vec<Value> = (0..posted.len()).map(|_| events.next_message()["body"].clone()).collect();
    assert_eq!(streamed, bodies, "the event stream");
    let transcript = String::from_utf8_lossy(events.transcript()).into_owned();
    assert_no_lt_slash(&transcript, "the event stream");
    let dispatched = whatwg_events(events.transcript());
    let read: Vec<(String, String, Value)> = dispatched
        .iter()
        .map(|e| {
            let message: Value = serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("an event whose data is not one message ({err}): {e:?}\nstream: {transcript:?}"));
            (e.event_type.clone(), e.last_event_id.clone(), message["body"].clone())
        })
        .collect();
    let expected: Vec<(String, String, Value)> =
        posted.iter().map(|&(id, body, ..)| ("message".to_string(), id.to_string(), json!(body))).collect();
    assert_eq!(read, expected, "an EventSource sees one message event per post, body intact; stream: {transcript:?}");

    let mut ws = Ws::connect(port, "/api/rooms/main/ws");
    let sent: Vec<Value> = (0..posted.len()).map(|_| ws.next_message()["body"].clone()).collect();
    assert_eq!(sent, bodies, "the WebSocket");
}

/// A JSON string with a lone surrogate escape (`"\ud800"`, `"\udc00"`, a high one before
/// a non-surrogate) names no Unicode character: the native API answers 400 saying the
/// JSON is not valid, the WebSocket an error frame saying so, and nothing is stored. A
/// surrogate pair is one character and is stored. Tornado's form has no escapes: bytes
/// that are not UTF-8 (the surrogate's would-be bytes `%ED%A0%80`) are decoded as a
/// browser decodes a form, each maximal bad sequence a U+FFFD, and stored so.
pub fn a_lone_surrogate_escape_is_refused_and_bad_utf8_in_a_form_is_stored_as_u_fffd(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    for escaped in [r"a\ud800b", r"\udc00", r"\ud800\u0041", r"a\ud800"] {
        let raw = format!(r#"{{"body": "{escaped}", "from": "x"}}"#);
        let reply = Request::post("/api/rooms/main/messages").body("application/json", raw.clone()).send(port);
        assert_eq!(reply.status, 400, "{raw}:\n{reply}");
        let error = reply.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("not valid JSON") && error.contains("escape"), "{raw}: the refusal says why: {error:?}");
    }
    let mut ws = Ws::connect(port, "/api/rooms/main/ws");
    ws.send_text(r#"{"type": "post", "body": "a\ud800b", "ref": 1}"#);
    let error = ws.next_frame();
    assert_eq!(error["type"], "error", "{error}");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("not valid JSON") && e.contains("escape")), "{error}");
    assert_eq!(api_messages(port, "main", "")["last_id"], 0, "nothing with a lone surrogate was stored");

    let pair = Request::post("/api/rooms/main/messages").body("application/json", r#"{"body": "a\ud83d\ude00b"}"#).send(port);
    pair.assert_status(201);
    assert_eq!(pair.json()["body"], "a\u{1f600}b", "{pair}");
    let xsrf = Xsrf::fetch(port);
    let form = format!("body=a%ED%A0%80b&_xsrf={}", crate::support::http::percent_encode(&xsrf.field));
    let reply = Request::post("/a/message/new").cookie(&xsrf.cookie_header()).body("application/x-www-form-urlencoded", form).send(port);
    reply.assert_status(200);
    assert_eq!(reply.json()["body"], "a\u{fffd}\u{fffd}\u{fffd}b", "{reply}");
    let stored: Vec<Value> = api_messages(port, "main", "")["messages"].as_array().expect("messages").iter().map(|m| m["body"].clone()).collect();
    assert_eq!(stored, [json!("a\u{1f600}b"), json!("a\u{fffd}\u{fffd}\u{fffd}b")]);
}

/// A NUL (U+0000) never reaches the store, whatever the store (PostgreSQL cannot keep one
/// in `text`; on `--db postgres` a post holding one was answered 503 forever): the native
/// API answers 400 and the WebSocket an error frame (with the post's `ref`), both saying
/// the message contains a NUL character; Tornado's form, as Tornado does, turns it (and
/// U+0001-U+0008, U+000E-U+001F) into a space. Later posts are stored as ever.
pub fn a_nul_is_refused_by_the_api_and_the_websocket_and_a_space_on_tornados_form(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    for post in [json!({"body": "a\u{0}b"}), json!({"body": "hi", "from": "e\u{0}ve"})] {
        let reply = Request::post("/api/rooms/main/messages").json(&post).send(port);
        assert_eq!(reply.status, 400, "{post}:\n{reply}");
        assert!(reply.json()["error"].as_str().is_some_and(|e| e.contains("contains a NUL character")), "{post}: says why:\n{reply}");
    }
    let mut ws = Ws::connect(port, "/api/rooms/main/ws");
    ws.send_json(&json!({"type": "post", "body": "a\u{0}b", "ref": "nul"}));
    let error = ws.next_frame();
    assert_eq!((&error["type"], &error["ref"]), (&json!("error"), &json!("nul")), "{error}");
    assert!(error["error"].as_str().is_some_and(|e| e.contains("message body contains a NUL character")), "{error}");

    let xsrf = Xsrf::fetch(port);
    let message = tornado_post(port, &xsrf, "a\u{0}b\u{1}c\u{1f}d\te");
    assert_eq!(message["body"], "a b c d\te", "{message}");
    api_post(port, "main", "after");
    let stored: Vec<Value> = api_messages(port, "main", "")["messages"].as_array().expect("messages").iter().map(|m| m["body"].clone()).collect();
    assert_eq!(stored, [json!("a b c d\te"), json!("after")], "only the mapped message and the later one were stored");
}
