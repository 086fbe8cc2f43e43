//! The chat's requests as one-liners, for tests whose subject is something else (a test
//! about the updates long-poll still has to post messages). Each one asserts the status
//! the contract promises, showing the whole response when it differs.

use serde_json::{json, Value};

use super::http::{Conn, Request, Response};
use super::xsrf::Xsrf;

/// `POST /a/message/new` with the form field `_xsrf`: the reply's JSON, asserted 200.
#[track_caller]
pub fn tornado_post(port: u16, xsrf: &Xsrf, body: &str) -> Value {
    let reply = tornado_post_request(xsrf, body).send(port);
    reply.assert_status(200);
    reply.json()
}

/// The request behind [`tornado_post`].
pub fn tornado_post_request(xsrf: &Xsrf, body: &str) -> Request {
    Request::post("/a/message/new")
        .cookie(&xsrf.cookie_header())
        .form(&[("body", body), ("_xsrf", &xsrf.field)])
}

/// The `POST /a/message/updates` long-poll, with or without a cursor.
pub fn updates_request(xsrf: &Xsrf, cursor: Option<&str>) -> Request {
    let mut fields = vec![("_xsrf", xsrf.field.as_str())];
    if let Some(cursor) = cursor {
        fields.push(("cursor", cursor));
    }
    Request::post("/a/message/updates")
        .cookie(&xsrf.cookie_header())
        .form(&fields)
}

/// A long-poll answer that must be `{"messages": [...]}`: the messages.
#[track_caller]
pub fn updates_messages(response: &Response) -> Vec<Value> {
    response.assert_status(200);
    match response.json().get("messages") {
        Some(Value::Array(messages)) => messages.clone(),
        _ => panic!("expected {{\"messages\": [...]}}, got:\n{response}"),
    }
}

/// The ids of Tornado-route messages (strings), for comparing lists at a glance.
pub fn tornado_ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m.get("id") {
            Some(Value::String(id)) => id.clone(),
            _ => panic!("a message without a string id: {m}"),
        })
        .collect()
}

/// `POST /api/rooms/{room}/messages`: the stored message, asserted 201.
#[track_caller]
pub fn api_post(port: u16, room: &str, body: &str) -> Value {
    let reply = Request::post(&format!("/api/rooms/{room}/messages"))
        .json(&json!({"body": body, "from": "test"}))
        .send(port);
    reply.assert_status(201);
    reply.json()
}

/// `GET /api/rooms/{room}/messages{query}` (query like `?after=2`): the JSON, asserted 200.
#[track_caller]
pub fn api_messages(port: u16, room: &str, query: &str) -> Value {
    let reply = Request::get(&format!("/api/rooms/{room}/messages{query}")).send(port);
    reply.assert_status(200);
    reply.json()
}

/// The store's epoch, as `GET /api/rooms` says it (a server on a store made by this build
/// always has one): what reset payloads carry and resuming clients give back.
#[track_caller]
pub fn store_epoch(port: u16) -> String {
    let reply = Request::get("/api/rooms").send(port);
    reply.assert_status(200);
    let epoch = reply.json()["epoch"].as_str().unwrap_or_else(|| panic!("GET /api/rooms gave no epoch: {}", reply.text())).to_string();
    assert_eq!(reply.header("X-C10k-Epoch"), Some(epoch.as_str()), "the header says the same epoch");
    epoch
}

/// The ids of native messages (numbers).
pub fn api_ids(messages: &Value) -> Vec<u64> {
    let Some(list) = messages.as_array() else {
        panic!("not a list of messages: {messages}")
    };
    list.iter()
        .map(|m| {
            m["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("a message without a numeric id: {m}"))
        })
        .collect()
}

/// A long-poll sent on its own connection, to be read later.
pub fn start_request(port: u16, request: &Request) -> Conn {
    let mut conn = Conn::open(port);
    conn.send_request(request);
    conn
}

/// Milliseconds since the epoch, to check a message's `time`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is before 1970")
        .as_millis() as u64
}

/// The sum of a family's samples in a `/metrics` text: `name value` or `name{labels} value`
/// (0 when absent).
pub fn metric_total(metrics: &str, name: &str) -> u64 {
    let samples = metrics.lines().filter_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once("} ")?.1,
            None => rest.strip_prefix(' ')?,
        };
        value.parse::<f64>().ok()
    });
    samples.sum::<f64>() as u64
}
