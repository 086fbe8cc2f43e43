//! General HTTP/1.1 behaviour, the same on every route: framing, keep-alive and
//! pipelining, and the limits that protect the server, each answered with its status and
//! a closed connection.

use std::io::Write;
use std::thread;

use crate::support::*;

/// Sends raw bytes on a new connection, reads one response, and asserts its status and
/// that the server then closes the connection.
#[track_caller]
fn assert_refused_and_closed(port: u16, request: &[u8], status: u16, what: &str) {
    let mut conn = Conn::open(port);
    conn.send(request);
    let reply = conn.read_response();
    assert_eq!(reply.status, status, "{what}:\n{reply}");
    conn.expect_closed(&format!("a {status} for {what}"));
}

/// Every response carries `Date` and `Content-Length`, successes and errors alike.
pub fn every_response_has_date_and_content_length(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let requests = [
        Request::get("/"),
        Request::get("/healthz"),
        Request::get("/metrics"),
        Request::get("/static/chat.js"),
        Request::get("/api/rooms/main/messages"),
        Request::post("/api/rooms/main/messages").json(&json!({"body": "hi"})),
        Request::post("/api/rooms/main/messages").body("text/plain", "hi"),
        Request::post("/a/message/new").form(&[("body", "hi")]),
        Request::get("/no/such/page"),
        Request::new("DELETE", "/healthz"),
    ];
    for request in requests {
        let reply = request.send(port);
        assert!(
            reply.header("Content-Length").is_some(),
            "no Content-Length:\n{reply}"
        );
        let date = reply
            .header("Date")
            .unwrap_or_else(|| panic!("no Date:\n{reply}"));
        assert!(
            date.ends_with(" GMT"),
            "Date must be an HTTP date: {date:?}\n{reply}"
        );
    }
}

/// An unknown path is 404.
pub fn an_unknown_path_is_404(model: Model) {
    let server = Server::start(model);
    for path in [
        "/no/such/page",
        "/api/rooms/main/nothing",
        "/a/message/old",
        "/static/nothing.js",
        "/api/nothing",
    ] {
        let reply = get(server.port(), path);
        assert_eq!(reply.status, 404, "GET {path}:\n{reply}");
    }
}

/// A known path with the wrong method is 405, with `Allow` naming the methods it takes.
pub fn a_known_path_with_the_wrong_method_is_405_with_allow(model: Model) {
    let server = Server::start(model);
    let cases = [
        (Request::get("/a/message/new"), &["POST"][..]),
        (Request::get("/a/message/updates"), &["POST"][..]),
        (
            Request::new("DELETE", "/api/rooms/main/messages"),
            &["GET", "POST"][..],
        ),
        (Request::post("/healthz"), &["GET"][..]),
    ];
    for (request, allowed) in cases {
        let reply = request.send(server.port());
        reply.assert_status(405);
        let allow = reply
            .header("Allow")
            .unwrap_or_else(|| panic!("a 405 needs Allow:\n{reply}"));
        let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
        for method in allowed {
            assert!(
                methods.contains(method),
                "Allow must name {method}:\n{reply}"
            );
        }
    }
}

/// A request that is not HTTP is 400, and the connection is closed after it.
pub fn a_malformed_request_is_400_and_closes_the_connection(model: Model) {
    let server = Server::start(model);
    let cases: [(&[u8], &str); 4] = [
        (b"GARBAGE\r\n\r\n", "a request line of one word"),
        (
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "a method that is not a token",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
            "a header line without a colon",
        ),
        (
            b"POST /api/rooms/main/messages HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
            "a Content-Length that is not a number",
        ),
    ];
    for (request, what) in cases {
        assert_refused_and_closed(server.port(), request, 400, what);
    }
}

/// A header field over 8 KiB, or a head over 32 KiB, is 431 and closes the connection;
/// a 7 KiB field in a 29 KiB head is served.
pub fn a_field_over_8_kib_or_a_head_over_32_kib_is_431(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut fits = Request::get("/healthz");
    for i in 0..4 {
        fits = fits.header(&format!("X-Big-{i}"), &"a".repeat(7 * 1024));
    }
    fits.send(port).assert_status(200);

    let long_field = Request::get("/healthz").header("X-Big", &"a".repeat(9 * 1024)).to_bytes(port);
    assert_refused_and_closed(port, &long_field, 431, "a 9 KiB header field");
    let mut big_head = Request::get("/healthz");
    for i in 0..5 {
        big_head = big_head.header(&format!("X-Big-{i}"), &"a".repeat(7 * 1024));
    }
    assert_refused_and_closed(port, &big_head.to_bytes(port), 431, "a 35 KiB head of 7 KiB fields");
}

/// Hostile and malformed requests, table-driven on raw sockets: each gets its status and
/// a closed connection, with exactly one response (a request smuggled behind one whose
/// framing is ambiguous is never answered, so never run), and nothing is stored.
pub fn hostile_requests_get_their_status_one_response_and_a_close(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let post = "POST /api/rooms/main/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let chunked = format!("{post}Transfer-Encoding: chunked\r\n");
    let cases: Vec<(String, u16, &str)> = vec![
        ("GET /healthz HTTP/1.1\r\n\r\n".into(), 400, "HTTP/1.1 without Host"),
        ("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400, "two Host fields"),
        ("GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n".into(), 400, "a Host with a space"),
        (format!("{post}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400, "CL then TE, a request smuggled in the body"),
        (format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"), 400, "TE then CL, a request smuggled in the body"),
        (format!("{post}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}"), 400, "Content-Length twice"),
        (format!("{post}Content-Length: 2, 2\r\n\r\n{{}}"), 400, "a Content-Length list"),
        (format!("{post}Content-Length: +5\r\n\r\n{{\"a\"}}"), 400, "Content-Length +5"),
        (format!("{post}Content-Length: -1\r\n\r\n"), 400, "Content-Length -1"),
        (format!("{post}Content-Length: 0x10\r\n\r\n"), 400, "Content-Length 0x10"),
        (format!("{post}Content-Length: 12345678901234567890\r\n\r\n"), 413, "a 20-digit Content-Length"),
        (format!("{post}Transfer-Encoding: gzip\r\n\r\n"), 501, "Transfer-Encoding gzip"),
        ("POST /api/rooms/main/messages HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400, "Transfer-Encoding on HTTP/1.0"),
        (format!("{post}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, "Transfer-Encoding repeated"),
        (format!("{post}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"), 400, "a space before the colon"),
        (format!("{chunked}\r\nzz\r\n{{}}\r\n0\r\n\r\n"), 400, "a chunk size that is not hex"),
        (format!("{chunked}\r\n2;{}\r\n{{}}\r\n0\r\n\r\n", "e".repeat(5000)), 400, "a chunk extension over 4 KiB"),
        (format!("{chunked}\r\n1\r\n{{}}\r\n0\r\n\r\n"), 400, "more chunk data than declared"),
        ("GET /healthz HTTP/1.1\r\nHost: x\rX: y\r\n\r\n".into(), 400, "a bare CR"),
        ("GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n".into(), 400, "a NUL in a value"),
        ("GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n".into(), 400, "obs-fold"),
        ("GET /healthz HTTP/1.1\r\n Host: x\r\n\r\n".into(), 400, "white space before the first header"),
        (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9 * 1024)), 414, "a request line over 8 KiB"),
        (format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(9 * 1024)), 431, "a header over 8 KiB"),
        (format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..101).map(|i| format!("X-{i}: y\r\n")).collect::<String>()), 431, "more than 100 headers"),
        (format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..5).map(|i| format!("X-{i}: {}\r\n", "a".repeat(7 * 1024))).collect::<String>()), 431, "a head over 32 KiB"),
        (format!("{post}Content-Length: 2000000\r\n\r\n"), 413, "a body over the limit, refused from its head"),
        (format!("{post}Expect: 100-continue\r\nContent-Length: 2000000\r\n\r\n"), 413, "a body over the limit with Expect: 100-continue, refused before the 100"),
    ];
    for (request, status, what) in &cases {
        assert_refused_and_closed(port, request.as_bytes(), *status, what);
    }
    assert_eq!(api_messages(port, "main", "")["last_id"], 0, "no hostile request stored a message");
}

/// Three pipelined requests, the middle one a chunked POST, in one write: answered in
/// order on the same connection.
pub fn three_pipelined_requests_with_a_chunked_post_are_answered_in_order(model: Model) {
    let server = Server::start(model);
    let mut conn = Conn::open(server.port());
    conn.send(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /api/rooms/main/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n7\r\n{\"body\"\r\n8\r\n: \"pipe\"\r\n1\r\n}\r\n0\r\n\r\n\
          GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    conn.read_response().assert_status(200);
    let posted = conn.read_response();
    posted.assert_status(201);
    assert_eq!(posted.json()["body"], "pipe", "{posted}");
    let plain = conn.read_response();
    plain.assert_status(200);
    assert_eq!(plain.text(), "Hello, World!");
}

/// More than 100 header fields is 431 and closes the connection; 100 are served.
pub fn more_than_100_header_fields_is_431(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    // `Host` is the first field; 99 more make 100.
    let with_fields = |n: usize| {
        (0..n).fold(Request::get("/healthz"), |r, i| {
            r.header(&format!("X-Field-{i}"), "v")
        })
    };
    with_fields(99).send(port).assert_status(200);
    assert_refused_and_closed(
        port,
        &with_fields(100).to_bytes(port),
        431,
        "101 header fields",
    );
}

/// A request target over 8 KiB is 414 and closes the connection; under it, the request
/// is routed as usual.
pub fn a_request_target_over_8_kib_is_414(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    get(port, &format!("/no/such/page/{}", "a".repeat(7 * 1024))).assert_status(404);
    let too_long = Request::get(&format!("/{}", "a".repeat(9 * 1024))).to_bytes(port);
    assert_refused_and_closed(port, &too_long, 414, "a 9 KiB request target");
}

/// A body over 1 MiB is 413 and closes the connection, and nothing is stored. (The body
/// is written from another thread, so the test passes whether the server answers as
/// soon as it reads `Content-Length` or after reading the body.)
pub fn a_body_over_1_mib_is_413(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let size = 1024 * 1024 + 1;
    let mut conn = Conn::open(port);
    conn.send(
        format!(
            "POST /api/rooms/main/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut writer = conn.stream().try_clone().unwrap();
    thread::spawn(move || {
        // Fails with EPIPE or a reset when the server answers early and closes: fine.
        let _ = writer.write_all(&vec![b' '; size]);
    });
    let reply = conn.read_response();
    reply.assert_status(413);
    conn.expect_closed("a 413");
    assert_eq!(api_messages(port, "main", "")["last_id"], 0);
}

/// A `Transfer-Encoding` other than chunked is 501 and closes the connection.
pub fn an_unsupported_transfer_encoding_is_501(model: Model) {
    let server = Server::start(model);
    let request =
        b"POST /api/rooms/main/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    assert_refused_and_closed(
        server.port(),
        request,
        501,
        "Transfer-Encoding: gzip, chunked",
    );
}

/// A chunked request body is de-chunked.
pub fn a_chunked_request_body_is_accepted(model: Model) {
    let server = Server::start(model);
    let reply = Request::post("/api/rooms/main/messages")
        .header("Content-Type", "application/json")
        .header("Transfer-Encoding", "chunked")
        .raw_body("9\r\n{\"body\": \r\nb\r\n\"in chunks\"\r\n1\r\n}\r\n0\r\n\r\n")
        .send(server.port());
    reply.assert_status(201);
    assert_eq!(reply.json()["body"], "in chunks", "{reply}");
}

/// An HTTP version other than 1.0 and 1.1 is 505 and closes the connection.
pub fn an_http_version_other_than_1_0_or_1_1_is_505(model: Model) {
    let server = Server::start(model);
    for version in ["HTTP/2.0", "HTTP/0.9", "HTTP/3.0"] {
        let request = format!("GET /healthz {version}\r\nHost: x\r\n\r\n");
        assert_refused_and_closed(server.port(), request.as_bytes(), 505, version);
    }
}

/// Keep-alive: requests sent back to back in one write are answered in order, on the
/// same connection, which stays open for more.
pub fn pipelined_requests_are_answered_in_order(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut conn = Conn::open(port);
    let mut burst = Vec::new();
    burst.extend(Request::get("/healthz").to_bytes(port));
    burst.extend(Request::get("/no/such/page").to_bytes(port));
    burst.extend(
        Request::post("/api/rooms/main/messages")
            .json(&json!({"body": "piped"}))
            .to_bytes(port),
    );
    burst.extend(Request::get("/api/rooms/main/messages").to_bytes(port));
    conn.send(&burst);

    conn.read_response().assert_status(200);
    conn.read_response().assert_status(404);
    let posted = conn.read_response();
    posted.assert_status(201);
    assert_eq!(posted.json()["body"], "piped", "{posted}");
    let listed = conn.read_response();
    listed.assert_status(200);
    assert_eq!(
        listed.json()["messages"],
        json!([posted.json()]),
        "{listed}"
    );

    conn.request(&Request::get("/healthz")).assert_status(200);
}

/// HTTP/1.0 closes the connection after the response, unless the request says
/// `Connection: keep-alive`.
pub fn http_1_0_closes_unless_keep_alive_is_asked_for(model: Model) {
    let server = Server::start(model);
    let port = server.port();

    let mut plain = Conn::open(port);
    plain
        .request(&Request::get("/healthz").version("HTTP/1.0"))
        .assert_status(200);
    plain.expect_closed("an HTTP/1.0 response without keep-alive");

    let mut kept = Conn::open(port);
    let keep_alive = Request::get("/healthz")
        .version("HTTP/1.0")
        .header("Connection", "keep-alive");
    kept.request(&keep_alive).assert_status(200);
    kept.request(&keep_alive).assert_status(200);
}

/// Clients that send garbage, half a head or half a body do not stop the others from
/// being served; each is dealt with on its own.
pub fn a_client_sending_garbage_does_not_stop_the_others(model: Model) {
    let server = Server::start(model);
    let port = server.port();

    // A whole request of garbage: answered 400 and closed, read at the end.
    let mut garbage = Conn::open(port);
    garbage.send(b"\xff\xfe\x00\x01 garbage \x7f\r\n\r\n");
    // Requests that stop half-way: the server must wait for the rest without blocking.
    let mut half_head = Conn::open(port);
    half_head.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ");
    let mut half_body = Conn::open(port);
    half_body.send(
        b"POST /api/rooms/main/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 16\r\n\r\n{\"body\": ",
    );

    get(port, "/healthz").assert_status(200);
    assert_eq!(api_post(port, "main", "from a good client")["id"], 1);
    let mut ws = Ws::connect(port, "/api/rooms/main/ws");
    assert_eq!(ws.next_ids(1), [1]);

    let reply = garbage.read_response();
    reply.assert_status(400);
    garbage.expect_closed("a 400 for garbage");

    half_head.send(b"done\r\n\r\n");
    half_head.read_response().assert_status(200);
    half_body.send(b"\"slow\"}");
    let slow = half_body.read_response();
    slow.assert_status(201);
    assert_eq!(slow.json()["id"], 2, "{slow}");
    assert_eq!(ws.next_ids(1), [2]);
}

/// At the connection cap (here `--max-connections 4`) a new connection gets 503 and is
/// closed; the connections already open are still served.
pub fn a_connection_over_the_cap_gets_503_and_is_closed(model: Model) {
    if model.contains(&"prefork") {
        return prefork_queues_connections_beyond_its_workers(model);
    }
    if let Some(workers) = workers_of(model) {
        return over_the_cap_with_workers(model, workers);
    }
    let server = Server::start_with_args(model, &["--max-connections", "4"]);
    let port = server.port();
    // Each connection is known to be accepted once it has been answered.
    let mut open: Vec<Conn> = (0..4).map(|_| Conn::open(port)).collect();
    for conn in &mut open {
        conn.request(&Request::get("/healthz")).assert_status(200);
    }

    let mut over = Conn::open(port);
    let reply = over.read_response();
    reply.assert_status(503);
    over.expect_closed("a 503 at the connection cap");

    for conn in &mut open {
        conn.request(&Request::get("/healthz")).assert_status(200);
    }
}

/// Prefork's cap is its worker count, as in Apache 1 (MaxClients): each worker holds one
/// connection, and one more connection is not refused but waits in the listen backlog
/// until a worker is free. With every worker held by a kept-alive connection, a new
/// client gets no answer; once one of them leaves, it is served.
fn prefork_queues_connections_beyond_its_workers(model: Model) {
    let workers = workers_of(model).unwrap_or(1);
    let server = Server::start(model);
    let port = server.port();
    // Each worker holds one kept-alive connection once it has answered on it.
    let mut held: Vec<Conn> = (0..workers).map(|_| Conn::open(port)).collect();
    for conn in &mut held {
        conn.request(&Request::get("/healthz")).assert_status(200);
    }
    let mut waiting = Conn::open(port);
    waiting.send_request(&Request::get("/healthz"));
    waiting.expect_no_response_within(
        std::time::Duration::from_millis(500),
        "every prefork worker is held by a connection: the next one waits in the backlog",
    );
    drop(held.pop());
    waiting.read_response().assert_status(200);
}

/// The cap is per process, and the kernel chooses which worker accepts each connection:
/// with N workers of 4 the first refusal may come anywhere up to connection 4N + 1, and
/// must have come by then. Each connection is probed with a request; a refused one is
/// answered 503 at once (its request unread: the 503 still arrives before the reset).
fn over_the_cap_with_workers(model: Model, workers: usize) {
    let server = Server::start_with_args(model, &["--max-connections", "4"]);
    let port = server.port();
    let mut open: Vec<Conn> = Vec::new();
    loop {
        let mut conn = Conn::open(port);
        let reply = conn.request(&Request::get("/healthz"));
        if reply.status == 503 {
            conn.expect_closed("a 503 at the connection cap");
            break;
        }
        reply.assert_status(200);
        open.push(conn);
        assert!(
            open.len() <= 4 * workers,
            "{} connections served by {workers} workers capped at 4 each",
            open.len()
        );
    }
    for conn in &mut open {
        conn.request(&Request::get("/healthz")).assert_status(200);
    }
}

/// Out of file descriptors (a process limit of 256 here, with a connection cap far above
/// it), a new connection still gets 503 and is closed, at once: the server answers it
/// with a descriptor kept in reserve instead of leaving it unanswered in the backlog.
/// The connections already open are still served, and once some close, new ones are too.
pub fn out_of_file_descriptors_a_new_connection_gets_503_not_silence(model: Model) {
    if model.contains(&"prefork") || model.contains(&"pool") {
        // prefork holds one connection per worker process, pool one per pool thread (the
        // rest wait in its queue): neither holds enough connections to run out.
        return;
    }
    const LIMIT: u64 = 256;
    const REFUSALS: usize = 10;
    let server = Server::start_with_file_limit(model, LIMIT, &["--max-connections", "100000"]);
    let port = server.port();
    let processes = workers_of(model).unwrap_or(1);
    let mut open: Vec<Conn> = Vec::new();
    let mut refused = 0;
    // A read that times out panics (Conn's read timeout): silence fails the test.
    while refused < REFUSALS {
        let mut conn = Conn::open(port);
        let reply = conn.request(&Request::get("/healthz"));
        if reply.status == 503 {
            conn.expect_closed("a 503 when out of file descriptors");
            refused += 1;
            continue;
        }
        reply.assert_status(200);
        open.push(conn);
        assert!(
            open.len() as u64 <= LIMIT * processes as u64,
            "{} connections served under an open-files limit of {LIMIT} per process",
            open.len()
        );
    }
    assert!(!open.is_empty(), "connections up to the limit must be served");
    for conn in open.iter_mut().take(10) {
        conn.request(&Request::get("/healthz")).assert_status(200);
    }
    // Close every connection; the server notices each close and frees its descriptor, so
    // a new connection is served again (polled with a deadline: the closes are noticed
    // asynchronously).
    drop(open);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut conn = Conn::open(port);
        let reply = conn.request(&Request::get("/healthz"));
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503, "only 200 or 503 are expected");
        assert!(std::time::Instant::now() < deadline, "no connection served 10 s after the others closed");
    }
}

/// The close sequence, the same on every model: a client that sends a bad request and then
/// goes on sending gets the 400 and a clean end of stream (our FIN after the answer, its
/// bytes drained meanwhile), not a reset that would destroy the answer before it is read.
pub fn a_bad_request_followed_by_more_bytes_gets_the_400_then_a_clean_close(model: Model) {
    use std::io::Read;
    let server = Server::start(model);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream.set_read_timeout(Some(crate::support::http::READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(crate::support::http::READ_TIMEOUT)).unwrap();
    stream.write_all(b"BROKEN\r\n\r\n").unwrap();
    let more = vec![b'x'; 64 * 1024];
    for n in 0..8 {
        stream.write_all(&more).unwrap_or_else(|e| panic!("chunk {n} after the bad request: {e} (the server reset the connection)"));
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let end = stream.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(end.is_ok(), "the stream must end cleanly, not with {end:?}; got {text:?}");
    assert!(text.starts_with("HTTP/1.1 400 "), "{text:?}");
}
