//! Presence (`c10k_core::presence`) with a clock of the test's: coalescing, the bounds on
//! what an update names, reports between processes and their expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use c10k_core::presence::{
    Presence, EVENTS_PER_SECOND, FLUSH_INTERVAL, HEARTBEAT, LARGE_ROOM, MAX_LISTED, MAX_LISTED_IN_EVENTS, MAX_NAMES_PER_UPDATE, REMOTE_TTL,
};
use c10k_core::store::RoomId;
use serde_json::Value;

const T0_MS: u64 = 1_796_083_200_000;

fn room() -> RoomId {
    RoomId::new("lobby").unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON")
}

fn names(snapshot: &Value) -> Vec<String> {
    snapshot["members"].as_array().expect("members").iter().map(|m| m["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn joins_within_an_interval_make_one_update_and_leaves_the_next() {
    let presence = Arc::new(Presence::new("a".into()));
    let t0 = Instant::now();
    let ann = presence.join(&room(), Some("ann"), T0_MS);
    let tick = presence.tick(t0, T0_MS);
    assert_eq!(tick.updates.len(), 1, "the first change flushes at once");
    let first = Arc::clone(&tick.updates[0].1);
    assert_eq!(names(&json(&first.snapshot)), ["ann"]);

    // A burst of comings and goings within the interval: nothing until it has passed.
    let mut burst = Vec::new();
    for i in 0..100 {
        burst.push(presence.join(&room(), Some(&format!("guest-{i}")), T0_MS + 10));
    }
    let bob = presence.join(&room(), Some("bob"), T0_MS + 20);
    drop(burst);
    assert!(presence.tick(t0 + FLUSH_INTERVAL / 2, T0_MS + 500).updates.is_empty(), "coalesced until the interval passes");
    let tick = presence.tick(t0 + FLUSH_INTERVAL, T0_MS + 1000);
    assert_eq!(tick.updates.len(), 1, "one update for the whole burst");
    let second = &tick.updates[0].1;
    let diff = json(second.diff.as_ref().expect("a diff: two names at most came or went"));
    assert_eq!(diff["previous"], first.version, "{diff}");
    assert_eq!(diff["joined"].as_array().unwrap().len(), 1, "the guests came and went within it: only bob joined: {diff}");
    assert_eq!(diff["joined"][0]["name"], "bob");
    assert_eq!(diff["left"], serde_json::json!([]));
    assert_eq!((diff["users"].as_u64(), diff["connections"].as_u64()), (Some(2), Some(2)));
    assert!(second.version > first.version);
    assert!(Arc::ptr_eq(second.for_seen(first.version), second.diff.as_ref().unwrap()), "who saw the last update gets the diff");
    assert!(Arc::ptr_eq(second.for_seen(0), &second.snapshot), "a new subscriber gets the snapshot");
    assert!(Arc::ptr_eq(second.for_seen(first.version - 1), &second.snapshot), "one that missed an update too");

    drop(ann);
    drop(bob);
    let tick = presence.tick(t0 + 2 * FLUSH_INTERVAL, T0_MS + 2000);
    let diff = json(tick.updates[0].1.diff.as_ref().unwrap());
    assert_eq!(diff["left"], serde_json::json!(["ann", "bob"]), "{diff}");
    assert!(presence.tick(t0 + 3 * FLUSH_INTERVAL, T0_MS + 3000).updates.is_empty(), "nothing changed: no update");
}

#[test]
fn a_large_room_sends_totals_and_a_bounded_snapshot() {
    let presence = Arc::new(Presence::new("a".into()));
    let t0 = Instant::now();
    let mut members: Vec<_> = (0..50).map(|i| presence.join(&room(), Some(&format!("early-{i:03}")), T0_MS)).collect();
    presence.tick(t0, T0_MS);
    members.extend((0..LARGE_ROOM + 500).map(|i| presence.join(&room(), Some(&format!("user-{i:05}")), T0_MS + 1)));
    let tick = presence.tick(t0 + FLUSH_INTERVAL, T0_MS + 1000);
    let update = &tick.updates[0].1;
    assert!(update.diff.is_none(), "above LARGE_ROOM no diff: everyone gets the snapshot's totals");
    assert!(Arc::ptr_eq(update.for_seen(update.previous), &update.snapshot));
    let snapshot = json(&update.snapshot);
    assert_eq!(snapshot["users"].as_u64(), Some(LARGE_ROOM as u64 + 550));
    assert_eq!(names(&snapshot).len(), 0, "above LARGE_ROOM a subscriber's snapshot names nobody either");
    assert_eq!(snapshot["more"].as_u64(), Some((LARGE_ROOM + 550) as u64));
    assert!(update.snapshot.len() < 1024, "and is small: {} bytes", update.snapshot.len());
    let listed = json(&presence.snapshot(&room()));
    assert_eq!(names(&listed).len(), MAX_LISTED, "GET .../presence names at most MAX_LISTED");
    assert_eq!(listed["more"].as_u64(), Some(550));
    assert_eq!(names(&listed)[0], "early-000", "the longest present first");

    // Above EVENTS_PER_SECOND users, updates come less often: every users / that seconds.
    let huge = Arc::new(Presence::new("h".into()));
    let _crowd: Vec<_> = (0..3 * EVENTS_PER_SECOND).map(|i| huge.join(&room(), Some(&format!("c{i}")), T0_MS)).collect();
    assert_eq!(huge.tick(t0, T0_MS).updates.len(), 1);
    let _late = huge.join(&room(), Some("late"), T0_MS + 1);
    for s in 1..3 {
        assert!(huge.tick(t0 + FLUSH_INTERVAL * s, T0_MS + 1000 * u64::from(s)).updates.is_empty(), "{s} s: not yet");
    }
    assert_eq!(huge.tick(t0 + FLUSH_INTERVAL * 3, T0_MS + 3000).updates.len(), 1, "30,000 users: an update every 3 s");

    // In a small room, more than MAX_NAMES_PER_UPDATE comings in one update: no diff (it
    // could not name them all), the snapshot for everyone.
    let small = Arc::new(Presence::new("b".into()));
    let _one = small.join(&room(), Some("first"), T0_MS);
    small.tick(t0, T0_MS);
    let _held: Vec<_> = (0..MAX_NAMES_PER_UPDATE + 6).map(|i| small.join(&room(), Some(&format!("n{i}")), T0_MS)).collect();
    let burst = small.tick(t0 + FLUSH_INTERVAL / 2 + FLUSH_INTERVAL / 2, T0_MS + 1000).updates.remove(0).1;
    assert!(burst.diff.is_none(), "{} joined at once: the snapshot instead of a diff", MAX_NAMES_PER_UPDATE + 6);
    assert_eq!(names(&json(&burst.snapshot)).len(), MAX_NAMES_PER_UPDATE + 7);
    // A small room's snapshot names up to MAX_LISTED_IN_EVENTS.
    let _more: Vec<_> = (0..MAX_LISTED_IN_EVENTS).map(|i| small.join(&room(), Some(&format!("x{i}")), T0_MS + 1)).collect();
    let second = small.tick(t0 + 2 * FLUSH_INTERVAL, T0_MS + 2000).updates.remove(0).1;
    let snapshot = json(&second.snapshot);
    assert_eq!(names(&snapshot).len(), MAX_LISTED_IN_EVENTS);
    assert_eq!(snapshot["more"].as_u64(), Some((MAX_NAMES_PER_UPDATE + 7) as u64));
}

#[test]
fn another_processs_members_count_until_its_reports_stop() {
    let here = Arc::new(Presence::new("here".into()));
    let there = Arc::new(Presence::new("there".into()));
    let t0 = Instant::now();
    let _ann = here.join(&room(), Some("ann"), T0_MS);
    let _anonymous = there.join(&room(), None, T0_MS);
    let bob = there.join(&room(), Some("bob"), T0_MS + 5);
    let _bob_again = there.join(&room(), Some("bob"), T0_MS + 6);
    let reports = there.tick(t0, T0_MS).reports;
    assert_eq!(reports.len(), 1);
    let line = &reports[0];
    assert!(line.starts_with(b"P ") && line.ends_with(b"\n"), "{}", String::from_utf8_lossy(line));
    here.apply_report(&line[2..line.len() - 1], t0).expect("a report");
    let first_tick = here.tick(t0, T0_MS);
    assert_eq!(first_tick.updates.len(), 1, "the report changed the view");
    let here_reports = first_tick.reports;
    here.apply_report(&line[2..line.len() - 1], t0 + FLUSH_INTERVAL).expect("the same report again");
    assert!(here.tick(t0 + FLUSH_INTERVAL, T0_MS + 1000).updates.is_empty(), "the same report again changes nothing");
    let snapshot = json(&here.snapshot(&room()));
    assert!(snapshot.get("version").is_none(), "a listing is no update: it has no version to resume from: {snapshot}");
    assert_eq!(names(&snapshot), ["ann", "bob"], "{snapshot}");
    assert_eq!((snapshot["users"].as_u64(), snapshot["connections"].as_u64(), snapshot["anonymous"].as_u64()), (Some(2), Some(4), Some(1)));
    assert_eq!(snapshot["members"][1]["connections"], 2, "bob's two connections: {snapshot}");
    assert!(here.apply_report(b"{\"not\": \"a report\"}", t0).is_err());

    // Its own report, echoed by a bus, is not another process's (else ann's connection
    // would count twice).
    let own = here_reports;
    here.apply_report(&own[0][2..own[0].len() - 1], t0).unwrap();
    assert_eq!(json(&here.snapshot(&room()))["connections"], 4);

    // A leave there is reported within the interval; a heartbeat repeats the view.
    drop(bob);
    assert!(there.tick(t0 + FLUSH_INTERVAL / 2, T0_MS + 500).reports.is_empty());
    assert_eq!(there.tick(t0 + FLUSH_INTERVAL, T0_MS + 1000).reports.len(), 1);
    assert!(there.tick(t0 + HEARTBEAT / 2, T0_MS + 5000).reports.is_empty(), "nothing changed: no report before the heartbeat");
    assert_eq!(there.tick(t0 + FLUSH_INTERVAL + HEARTBEAT, T0_MS + 11_000).reports.len(), 1, "the heartbeat");

    // "there" stops reporting (killed): its members leave this view REMOTE_TTL after its
    // last report here (the repeat at t0 + FLUSH_INTERVAL).
    let last_heard = t0 + FLUSH_INTERVAL;
    here.tick(last_heard + REMOTE_TTL - Duration::from_millis(1), T0_MS + 30_999);
    assert_eq!(names(&json(&here.snapshot(&room()))), ["ann", "bob"]);
    let tick = here.tick(last_heard + REMOTE_TTL, T0_MS + 31_000);
    assert_eq!(names(&json(&here.snapshot(&room()))), ["ann"]);
    let diff = json(tick.updates.last().expect("an update when they expire").1.diff.as_ref().expect("a diff"));
    assert_eq!(diff["left"], serde_json::json!(["bob"]), "{diff}");
}
