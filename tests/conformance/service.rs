//! The service around the chat: health, metrics, the page's assets, and a clean stop.

use std::time::Duration;

use crate::support::*;

/// `GET /healthz` is 200 with the body `ok`.
pub fn healthz_is_ok(model: Model) {
    let server = Server::start(model);
    let reply = get(server.port(), "/healthz");
    reply.assert_status(200);
    assert_eq!(reply.text(), "ok", "{reply}");
}

/// `GET /readyz` asks the store whether it can take posts: 200 `ready` on a store that
/// can (tests/read_only_store.rs and tests/database_outage.rs show the 503); `POST` is 405.
pub fn readyz_asks_the_store(model: Model) {
    let server = Server::start(model);
    let reply = get(server.port(), "/readyz");
    reply.assert_status(200);
    assert_eq!(reply.text(), "ready\n", "{reply}");
    let post = Request::post("/readyz").body("text/plain", "x").send(server.port());
    assert_eq!(post.status, 405, "{post}");
}

/// `GET /metrics` is in Prometheus's text exposition format: `# TYPE name kind` lines,
/// other comments, and samples `name{labels} value`, each value a number.
pub fn metrics_are_in_the_prometheus_text_format(model: Model) {
    let server = Server::start(model);
    // Some traffic first, so that counters have something to count.
    api_post(server.port(), "main", "counted");
    let reply = get(server.port(), "/metrics");
    reply.assert_status(200);
    let text = reply.text();
    assert!(text.contains("# TYPE "), "no `# TYPE` line:\n{reply}");

    let mut samples = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(kind_line) = line.strip_prefix("# TYPE ") {
            let kind = kind_line.split_whitespace().nth(1).unwrap_or("");
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "untyped",
                    "unknown",
                    "info",
                    "stateset",
                    "gaugehistogram"
                ]
                .contains(&kind),
                "a # TYPE line with an unknown kind: {line:?}"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "a bad metric name in {line:?}"
        );
        let after_labels = match line[name_end..].starts_with('{') {
            true => {
                &line[line
                    .rfind('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"))
                    + 1..]
            }
            false => &line[name_end..],
        };
        let value = after_labels.split_whitespace().next().unwrap_or("");
        assert!(
            value.parse::<f64>().is_ok(),
            "a sample whose value is not a number: {line:?}"
        );
        samples += 1;
    }
    assert!(samples > 0, "no samples at all:\n{reply}");
}

/// A request whose answer takes real work (`GET /cpu?cost=N`, hashing in the handler) is
/// timed by that work in the latency histogram: not 0, and no longer than the client
/// waited. Regression: once the connection machine read no clock, a reply computed within
/// the read that brought its request was timed 0. One keep-alive connection, so that with
/// several worker processes the scrape reads the worker that did the work.
pub fn a_cpu_heavy_request_is_timed_by_its_work(model: Model) {
    let server = Server::start(model);
    let mut conn = Conn::open(server.port());
    let asked = std::time::Instant::now();
    conn.request(&Request::get("/cpu?cost=200000")).assert_status(200);
    let waited = asked.elapsed().as_secs_f64();
    let metrics = conn.request(&Request::get("/metrics"));
    metrics.assert_status(200);
    let text = metrics.text();
    let sample = |name: &str| -> f64 {
        let prefix = format!("c10k_http_request_duration_seconds_{name}{{route=\"cpu\"}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
        let line = line.unwrap_or_else(|| panic!("no {prefix}sample in:\n{text}"));
        line.parse().unwrap_or_else(|e| panic!("{prefix}{line}: {e}"))
    };
    assert_eq!(sample("count"), 1.0, "{text}");
    let timed = sample("sum");
    assert!(timed > 0.0 && timed <= waited, "timed {timed} s, the client waited {waited} s:\n{text}");
}

/// The page's assets, `/static/chat.js` and `/static/chat.css`, are served.
pub fn the_page_assets_are_served(model: Model) {
    let server = Server::start(model);
    for path in ["/static/chat.js", "/static/chat.css"] {
        let reply = get(server.port(), path);
        reply.assert_status(200);
        assert!(!reply.body.is_empty(), "GET {path} is empty:\n{reply}");
    }
}

/// SIGTERM stops the server cleanly, exit status 0, even with a long-poll waiting, an
/// event stream and a WebSocket open.
pub fn sigterm_stops_the_server_with_exit_status_0(model: Model) {
    let mut server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    let mut poll = start_request(port, &updates_request(&xsrf, None));
    poll.expect_no_response_within(
        Duration::from_millis(200),
        "a poll on an empty cache must wait",
    );
    let _stream = EventStream::open(port, "/api/rooms/main/events", None);
    let _ws = Ws::connect(port, "/api/rooms/main/ws");
    let _idle = Conn::open(port);

    let status = server.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must stop the server with status 0, got {status}"
    );
}

/// SIGTERM drains (docs/protocol.md, "Stopping"): each kind of connection gets its final
/// answer, the process exits 0 within `--drain-timeout`, and a message posted just before
/// the signal is there after a restart. A waiting Tornado long-poll is answered at once
/// with `{}` and `Connection: close`; an event stream gets a `retry:` and a `shutdown`
/// event (no `id:`, so `Last-Event-ID` stays the last message's), then its end; a WebSocket
/// gets close 1001; an idle keep-alive connection is closed without a word; a request half
/// sent is read to its end, answered (the post stored), and the connection closed.
pub fn sigterm_drains_every_connection_with_its_final_answer(model: Model) {
    const DRAIN: Duration = Duration::from_secs(6);
    let mut server = Server::start_with_args(model, &["--drain-timeout", "6"]);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    let last = tornado_post(port, &xsrf, "posted just before SIGTERM");
    let cursor = last["id"].as_str().expect("a Tornado message id").to_string();

    let mut poll = start_request(port, &updates_request(&xsrf, Some(&cursor)));
    poll.expect_no_response_within(Duration::from_millis(200), "a poll at the newest cursor must wait");
    let mut stream = EventStream::open(port, "/api/rooms/main/events", None);
    let seen = stream.next_message();
    assert_eq!(seen["body"], "posted just before SIGTERM", "{seen}");
    let mut ws = Ws::connect(port, "/api/rooms/main/ws");
    assert_eq!(ws.next_message()["body"], "posted just before SIGTERM");
    let mut idle = Conn::open(port);
    idle.request(&Request::get("/healthz")).assert_status(200);
    let posted = Request::post("/api/rooms/drain/messages").json(&json!({"body": "in flight", "from": "test"}));
    let bytes = posted.to_bytes(port);
    let split = bytes.len() - 4;
    let mut half = Conn::open(port);
    half.send(&bytes[..split]);
    half.expect_no_response_within(Duration::from_millis(100), "half a request is not answered");

    let signalled = std::time::Instant::now();
    server.send_sigterm();

    let answer = poll.read_response();
    answer.assert_status(200);
    assert_eq!(answer.text(), "{}", "a waiting long-poll gets its empty answer at once:\n{answer}");
    assert_eq!(answer.header("Connection"), Some("close"), "{answer}");
    poll.expect_closed("the long-poll's last answer");

    let event = stream.next_event();
    assert_eq!(event.event.as_deref(), Some("shutdown"), "the stream's last event: {:#?}", stream.seen());
    assert_eq!(event.id, None, "the last event leaves Last-Event-ID as it was: {event:?}");

    let close = loop {
        match ws.next_raw() {
            tungstenite::Message::Close(frame) => break frame,
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("expected the close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001, "going away: {close:?}");
    assert_eq!(close.reason.as_str(), "server shutting down");

    idle.expect_closed("SIGTERM, on an idle keep-alive connection");

    half.send(&bytes[split..]);
    let stored = half.read_response();
    stored.assert_status(201);
    half.expect_closed("the answer to the request in flight");

    drop((poll, stream, ws, idle, half));
    let status = server.wait_exit();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "a drained server exits 0, got {status}");
    assert!(took < DRAIN, "every connection had ended: the exit must not wait for the deadline ({took:?})");

    server.restart();
    let port = server.port();
    let messages = api_messages(port, "main", "?after=0");
    assert!(
        messages["messages"].as_array().is_some_and(|all| all.iter().any(|m| m["body"] == "posted just before SIGTERM")),
        "the message posted before SIGTERM survives the stop: {messages}"
    );
    let in_flight = api_messages(port, "drain", "?after=0");
    assert_eq!(api_ids(&in_flight["messages"]), [1], "the post answered during the drain is stored, once: {in_flight}");
}

/// The drain has a hard deadline: a client that keeps a connection open and never reads
/// (a stalled event stream, a request head never finished) cannot hold the process past
/// `--drain-timeout`.
pub fn sigterm_exits_by_the_drain_deadline_whatever_the_clients_do(model: Model) {
    let mut server = Server::start_with_args(model, &["--drain-timeout", "1"]);
    let port = server.port();
    let mut stalled = Conn::open(port);
    // One answered request first: the server has accepted this connection for sure (on a
    // loaded machine it may not have within the quiet time below, and a connection still in
    // the backlog when the listener closes is no connection to drain).
    stalled.request(&Request::get("/healthz")).assert_status(200);
    stalled.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    stalled.expect_no_response_within(Duration::from_millis(100), "half a head is not answered");
    let signalled = std::time::Instant::now();
    server.send_sigterm();
    let status = server.wait_exit();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status after the deadline: {status}");
    assert!(took >= Duration::from_millis(900), "the half-sent request was waited for until the deadline ({took:?})");
    assert!(took < Duration::from_secs(5), "the drain deadline (1 s) ends the process ({took:?})");
    drop(stalled);
}

/// Python's `prometheus_client` parsers, the reference readers of both formats, read
/// `/metrics` as what it is: without `Accept`, the 0.0.4 text format
/// (`text/plain; version=0.0.4`), and with `Accept: application/openmetrics-text`,
/// OpenMetrics 1.0 (its own content type, ending in `# EOF`). In both, every counter is a
/// counter (not an empty counter beside an unknown `..._total` family, as a 0.0.4 parser
/// read the OpenMetrics body once served as 0.0.4), and there are the latency histogram of
/// the route just used, the info metric naming model, poller and store, and the process
/// metrics. Skipped (said so) without python3 and prometheus_client, unless
/// `C10K_E2E_REQUIRED=1`.
pub fn metrics_are_read_correctly_by_prometheus_clients_parsers(model: Model) {
    if !python_prometheus_client_available() {
        return;
    }
    let server = Server::start(model);
    // One keep-alive connection for the post and every scrape: with several worker
    // processes (each with its own metrics) a connection stays with one of them.
    let mut conn = Conn::open(server.port());
    conn.request(&Request::post("/api/rooms/main/messages").json(&json!({"body": "counted", "from": "test"})))
        .assert_status(201);
    // A second scrape, so that /metrics itself has been answered (and timed) once.
    conn.request(&Request::get("/metrics")).assert_status(200);

    let cases = [
        (None, "text/plain; version=0.0.4; charset=utf-8", "parser", ("c10k_server_info", "gauge")),
        (
            Some("application/openmetrics-text; version=1.0.0"),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            "openmetrics.parser",
            ("c10k_server", "info"),
        ),
    ];
    for (accept, content_type, parser, (info_name, info_type)) in cases {
        let mut request = Request::get("/metrics");
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let reply = conn.request(&request);
        reply.assert_status(200);
        assert_eq!(reply.header("content-type"), Some(content_type), "Accept: {accept:?}\n{reply}");
        let families = parse_with_prometheus_client(parser, &reply.text());
        let family = |name: &str| {
            families.get(name).unwrap_or_else(|| panic!("{parser}: no family {name} in {families:#}"))
        };
        for (name, kind) in families.as_object().unwrap() {
            assert!(
                !["unknown", "untyped"].contains(&kind["type"].as_str().unwrap_or("")),
                "{parser}: family {name} has no type: {kind}"
            );
        }
        let requests = family("c10k_http_requests");
        assert_eq!(requests["type"], "counter", "{parser}: {requests}");
        let posted = requests["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["labels"]["route"] == "api_post")
            .unwrap_or_else(|| panic!("{parser}: no api_post sample in {requests}"));
        assert_eq!(posted["name"], "c10k_http_requests_total");
        assert_eq!(posted["value"], 1.0);
        assert_eq!(family("c10k_messages_posted")["type"], "counter");

        let latency = family("c10k_http_request_duration_seconds");
        assert_eq!(latency["type"], "histogram", "{parser}: {latency}");
        for route in ["api_post", "metrics"] {
            let count = latency["samples"].as_array().unwrap().iter().find(|s| {
                s["name"] == "c10k_http_request_duration_seconds_count" && s["labels"]["route"] == route
            });
            assert!(
                count.is_some_and(|c| c["value"].as_f64() >= Some(1.0)),
                "{parser}: no latency observed for {route}: {latency}"
            );
        }

        let info = family(info_name);
        assert_eq!(info["type"], info_type, "{parser}: {info}");
        let labels = &info["samples"][0]["labels"];
        let model_name = model[model.iter().position(|a| *a == "--model").unwrap() + 1];
        assert_eq!(labels["model"], model_name, "{parser}: {info}");
        let store = ["mysql", "postgres"].into_iter().find(|db| model.contains(db)).unwrap_or("sqlite");
        assert_eq!(labels["store"], store, "{parser}: {info}");
        let event_loop = matches!(model_name, "reactor" | "green");
        assert_eq!(labels["poller"] != "none", event_loop, "{parser}: {info}");

        assert_eq!(family("process_cpu_seconds")["type"], "counter");
        for gauge in ["process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
            let g = family(gauge);
            assert_eq!(g["type"], "gauge", "{parser}: {g}");
            assert!(g["samples"][0]["value"].as_f64().is_some_and(|v| v > 0.0), "{parser}: {g}");
        }
    }
}

/// Whether `python3 -c "import prometheus_client"` works; if not, says `skipped: ...`
/// (or fails, with `C10K_E2E_REQUIRED=1`).
fn python_prometheus_client_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import prometheus_client.parser, prometheus_client.openmetrics.parser"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let what = "python3 with prometheus_client (pip install prometheus_client)";
        if std::env::var("C10K_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("{what} not found, and C10K_E2E_REQUIRED=1");
        }
        eprintln!("skipped: the metrics parser test: {what} not found");
    }
    ok
}

/// The families `prometheus_client.<parser>` reads from `text`, as JSON:
/// `{name: {"type": ..., "samples": [{"name", "labels", "value"}]}}`. A parse error fails.
fn parse_with_prometheus_client(parser: &str, text: &str) -> Value {
    use std::io::Write;
    let script = format!(
        "import json, sys\n\
         from prometheus_client.{parser} import text_string_to_metric_families\n\
         out = {{}}\n\
         for f in text_string_to_metric_families(sys.stdin.read()):\n\
         \x20   assert f.name not in out, 'family twice: ' + f.name\n\
         \x20   out[f.name] = {{'type': f.type, 'samples': [{{'name': s.name, 'labels': s.labels, 'value': s.value}} for s in f.samples]}}\n\
         print(json.dumps(out))\n"
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client.{parser} refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script's JSON")
}
