//! Browser security, the same on every model: a page on another site cannot use the
//! chat's streams or change anything through a visitor's browser (its `Origin` is refused
//! with 403), the server's own pages and clients that send no `Origin` can, origins named
//! by `--allow-origin` can; and the page tells the browser to run only its own script
//! (Content-Security-Policy), not to sniff types, and to keep referrers on this site. A
//! client that posts faster than `--post-rate` is refused on every post route.

use std::net::Ipv4Addr;

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
