//! A NUL (U+0000) in a message never reaches a store (regression: PostgreSQL cannot keep
//! one in `text`, and a post holding one made a `--db postgres://...` server answer 503
//! forever). The native API and the WebSocket refuse it saying why; Tornado's form route
//! maps it, with the other control characters Tornado maps, to a space. The store here
//! refuses a NUL as PostgreSQL does, so a NUL that slipped through would fail the test
//! with that store's error instead of passing unnoticed.

use std::time::Instant;

use c10k_core::chat::text::{NUL_IN_BODY, NUL_IN_FROM};
use c10k_core::chat::{App, Config, Now, Outcome, WsAction, WsEndpoint, WsSession};
use c10k_core::http::{Headers, Method, Request, Response};
use c10k_core::store::{Appended, MemoryStore, Message, MessageId, NewMessage, RoomId, Store, StoreError};
use serde_json::{json, Value};

/// A [`MemoryStore`] that refuses text holding U+0000 the way PostgreSQL does.
#[derive(Default)]
struct RefusesNulLikePostgres(MemoryStore);

impl Store for RefusesNulLikePostgres {
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<Appended, StoreError> {
        if message.body.contains('\0') || message.from.contains('\0') {
            return Err(StoreError("invalid byte sequence for encoding \"UTF8\": 0x00".into()));
        }
        self.0.append(room, message)
    }

    fn after(&self, room: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.0.after(room, after, limit)
    }

    fn recent(&self, room: &RoomId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.0.recent(room, limit)
    }

    fn before(&self, room: &RoomId, before: Option<MessageId>, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.0.before(room, before, limit)
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        self.0.rooms()
    }
}

/// The plain hex form of an XSRF token, valid as both cookie and field.
const XSRF: &str = "000102030405060708090a0b0c0d0e0f";

fn now() -> Now {
    Now { instant: Instant::now(), unix_ms: 1_764_140_000_000 }
}

fn request(method: Method, target: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request {
    let mut fields = Headers::new();
    fields.push("Host", "127.0.0.1:8888");
    for (name, value) in headers {
        fields.push(*name, value.as_bytes().to_vec());
    }
    Request { method, target: target.into(), version_minor: 1, headers: fields, body, keep_alive: true, peer: None }
}

/// Handles `request` to its response, running a store call (if any) on `store`.
fn answer(app: &App, store: &dyn Store, request: Request) -> Response {
    match app.handle_request(request, now()) {
        Outcome::Reply(response) => response,
        Outcome::Store(call) => app.finish_store(call.run(store)),
        other => panic!("expected a reply or a store call, got {other:?}"),
    }
}

fn json_body(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&response.body)))
}

fn native_post(app: &App, store: &dyn Store, post: &Value) -> Response {
    let headers = [("Content-Type", "application/json")];
    answer(app, store, request(Method::Post, "/api/rooms/main/messages", &headers, post.to_string().into_bytes()))
}

fn websocket(app: &App) -> WsSession {
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    match app.handle_request(request(Method::Get, "/api/rooms/main/ws", &headers, Vec::new()), now()) {
        Outcome::WebSocket(accept) => match accept.endpoint {
            WsEndpoint::Chat(session) => session,
            WsEndpoint::Echo => panic!("the room's endpoint is the chat"),
        },
        other => panic!("expected a WebSocket, got {other:?}"),
    }
}

/// The error frame a WebSocket client is sent for `text`, which must not be stored.
fn ws_error(app: &App, session: &mut WsSession, text: &str) -> Value {
    match session.handle_text(app, text, now()) {
        WsAction::Reply(frame) => {
            let frame: Value = serde_json::from_str(&frame).unwrap();
            assert_eq!(frame["type"], "error", "for {text:?}: {frame}");
            frame
        }
        other => panic!("{text:?} must be answered with an error frame, not {other:?}"),
    }
}

#[test]
fn the_native_api_refuses_a_nul_in_the_body_or_sender_with_400_saying_why() {
    let app = App::new(Config::with_seed([3; 32]));
    let store = RefusesNulLikePostgres::default();
    for (post, why) in [
        (json!({"body": "a\u{0}b"}), NUL_IN_BODY),
        (json!({"body": "\u{0}"}), NUL_IN_BODY),
        (json!({"body": "hi", "from": "ann\u{0}"}), NUL_IN_FROM),
    ] {
        let response = native_post(&app, &store, &post);
        assert_eq!(response.status.0, 400, "{post}: {response:?}");
        assert_eq!(json_body(&response)["error"], why, "{post}");
    }
    assert!(NUL_IN_BODY.contains("message body contains a NUL character"), "{NUL_IN_BODY}");
    assert_eq!(store.after(&RoomId::main(), MessageId(0), 10).unwrap(), [], "nothing was stored");
    // The other control characters are text, stored as sent.
    let response = native_post(&app, &store, &json!({"body": "bell\u{7} tab\t"}));
    assert_eq!(response.status.0, 201, "{response:?}");
    assert_eq!(json_body(&response)["body"], "bell\u{7} tab\t");
}

#[test]
fn a_websocket_post_with_a_nul_gets_an_error_frame_with_its_ref() {
    let app = App::new(Config::with_seed([3; 32]));
    let mut session = websocket(&app);
    let frame = ws_error(&app, &mut session, &json!({"type": "post", "body": "a\u{0}b", "ref": 7}).to_string());
    assert_eq!(frame["error"], NUL_IN_BODY, "{frame}");
    assert_eq!(frame["ref"], 7, "{frame}");
    let frame = ws_error(&app, &mut session, &json!({"type": "post", "body": "hi", "from": "\u{0}"}).to_string());
    assert_eq!(frame["error"], NUL_IN_FROM, "{frame}");
}

#[test]
fn tornados_form_route_maps_control_characters_to_spaces_as_tornado_does() {
    let app = App::new(Config::with_seed([3; 32]));
    let store = RefusesNulLikePostgres::default();
    let cookie = format!("_xsrf={XSRF}");
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", cookie.as_str())];
    // NUL, SOH, BS, SO, US and DEL, then TAB, LF, VT, FF, CR, which are kept; the NUL at
    // each end becomes a space, stripped with the rest of the surrounding white space.
    let form = format!("_xsrf={XSRF}&body=%00a%00b%01c%08d%0Ee%1Ff%7Fg%09h%0Ai%0Bj%0Ck%0Dl%00");
    let response = answer(&app, &store, request(Method::Post, "/a/message/new", &headers, form.into_bytes()));
    assert_eq!(response.status.0, 200, "{response:?}");
    let expected = "a b c d e f\u{7f}g\th\ni\u{b}j\u{c}k\rl";
    assert_eq!(json_body(&response)["body"], expected);
    let stored = store.after(&RoomId::main(), MessageId(0), 10).unwrap();
    assert_eq!(stored.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), [expected], "stored as answered");
}

#[test]
fn a_websocket_text_frame_that_is_not_json_is_told_so() {
    let app = App::new(Config::with_seed([3; 32]));
    let mut session = websocket(&app);
    for not_json in ["this is not JSON", "{\"type\": \"post\", \"body\": \"\\ud800\"}", "{\"type\":"] {
        let frame = ws_error(&app, &mut session, not_json);
        let error = frame["error"].as_str().unwrap_or_default();
        assert!(error.contains("not valid JSON"), "{not_json:?}: {frame}");
        assert!(error.contains(r#"{"type": "post", "body": "hi"}"#), "it says what to send: {frame}");
    }
    for not_an_object in ["[1, 2]", "\"post\"", "42"] {
        let frame = ws_error(&app, &mut session, not_an_object);
        let error = frame["error"].as_str().unwrap_or_default();
        assert!(error.contains("must be a JSON object"), "{not_an_object:?}: {frame}");
    }
}
