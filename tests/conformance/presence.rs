//! Presence (docs/protocol.md, "Presence"), the same on every model and across worker
//! processes: streaming subscribers are told who is in their room, as a snapshot first and
//! then as joins and leaves; a native long-poll that asks gets it in its answer; `GET
//! .../presence` answers the same view.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::*;

/// How long a view may take to settle: a flush a second, a report a second later from
/// another worker, and slack for a loaded machine.
const SETTLE: Duration = Duration::from_secs(15);

/// A client's idea of who is present, kept from the presence events it is sent.
#[derive(Default, Debug)]
struct View {
    names: BTreeSet<String>,
    users: u64,
    connections: u64,
    version: u64,
    joined: Vec<String>,
    left: Vec<String>,
}

impl View {
    fn apply(&mut self, event: &Value) {
        assert_eq!(event["type"], "presence", "{event}");
        let version = event["version"].as_u64().expect("a version");
        assert!(version > self.version, "versions only grow: {} then {event}", self.version);
        if event.get("members").is_none() {
            assert_eq!(event["previous"], self.version, "a diff follows the update this client saw: {event}");
        }
        self.version = version;
        self.users = event["users"].as_u64().expect("users");
        self.connections = event["connections"].as_u64().expect("connections");
        let name = |v: &Value| v.as_str().map(str::to_string).or_else(|| v["name"].as_str().map(str::to_string)).expect("a name");
        match event.get("members") {
            Some(members) => self.names = members.as_array().expect("a list").iter().map(name).collect(),
            None => {
                for joined in event["joined"].as_array().expect("joined") {
                    self.joined.push(name(joined));
                    self.names.insert(name(joined));
                }
                for left in event["left"].as_array().expect("left") {
                    self.left.push(name(left));
                    self.names.remove(&name(left));
                }
            }
        }
    }

    fn is(&self, names: &[&str]) -> bool {
        self.names.iter().map(String::as_str).eq(names.iter().copied())
    }
}

/// Reads `ws`'s frames into `view` until `done` holds for it.
fn ws_until(ws: &mut Ws, view: &mut View, what: &str, done: impl Fn(&View) -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done(view) {
        assert!(Instant::now() < deadline, "no presence with {what} within {SETTLE:?}: {view:?}; frames: {:#?}", ws.seen());
        let frame = ws.next_frame();
        if frame["type"] == "presence" {
            view.apply(&frame);
        }
    }
}

/// Two named WebSocket subscribers, a named event stream and an anonymous WebSocket: each
/// named one is told the others' names (the anonymous one is counted, not named); one that
/// joins later is announced as joined, and as left when it goes; the event stream gets
/// `presence` events, a long-poll with `?presence=0` the view in its answer, and `GET
/// .../presence` the same view.
pub fn subscribers_are_told_who_is_in_the_room_and_who_comes_and_goes(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut ann = Ws::connect(port, "/api/rooms/lobby/ws?nick=ann&presence=1");
    let mut bob = EventStream::open(port, "/api/rooms/lobby/events?nick=bob&presence=1", None);
    let _anonymous = Ws::connect(port, "/api/rooms/lobby/ws");
    let mut view = View::default();
    ws_until(&mut ann, &mut view, "ann and bob, and one anonymous", |v| v.is(&["ann", "bob"]) && v.connections == 3);
    assert_eq!(view.users, 2, "{view:?}");

    let carl = Ws::connect(port, "/api/rooms/lobby/ws?nick=carl");
    ws_until(&mut ann, &mut view, "carl", |v| v.is(&["ann", "bob", "carl"]));
    assert!(view.joined.contains(&"carl".to_string()), "carl came as a join, not only in a snapshot: {view:?}");
    drop(carl);
    ws_until(&mut ann, &mut view, "carl gone", |v| v.is(&["ann", "bob"]));
    assert!(view.left.contains(&"carl".to_string()), "carl went as a leave: {view:?}");

    let deadline = Instant::now() + SETTLE;
    let mut bobs = View::default();
    while !bobs.is(&["ann", "bob"]) {
        assert!(Instant::now() < deadline, "the event stream was not told who is there: {bobs:?}; events: {:#?}", bob.seen());
        let event = bob.next_event();
        if event.event.as_deref() == Some("presence") {
            bobs.apply(&event.json());
        }
    }

    let polled = api_messages(port, "lobby", "?presence=0");
    let presence = &polled["presence"];
    assert_eq!(presence["type"], "presence", "a long-poll that asks for presence gets it: {polled}");
    let deadline = Instant::now() + SETTLE;
    loop {
        let snapshot = get(port, "/api/rooms/lobby/presence").json();
        let names: Vec<&str> = snapshot["members"].as_array().expect("members").iter().filter_map(|m| m["name"].as_str()).collect();
        if names == ["ann", "bob"] && snapshot["connections"] == 3 {
            assert_eq!(snapshot["users"], 2, "{snapshot}");
            assert!(snapshot.get("version").is_none(), "a listing has no version to follow: {snapshot}");
            break;
        }
        assert!(Instant::now() < deadline, "GET .../presence did not settle on ann and bob: {snapshot}");
        // Until a newer presence (or 2 s): another worker hears of a change a report later.
        let seen = api_messages(port, "lobby", "?presence=0")["presence"]["version"].as_u64().unwrap_or(0);
        api_messages(port, "lobby", &format!("?after=0&wait=2&presence={seen}"));
    }
}
