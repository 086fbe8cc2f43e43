//! Browser security, the same on every model: a page on another site cannot use the
//! chat's streams or change anything through a visitor's browser (its `Origin` is refused
//! with 403), the server's own pages and clients that send no `Origin` can, origins named
//! by `--allow-origin` can; and the page tells the browser to run only its own script
//! (Content-Security-Policy), not to sniff types, and to keep referrers on this site.

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
