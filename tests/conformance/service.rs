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
