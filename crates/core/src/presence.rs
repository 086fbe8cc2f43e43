//! Who is in a room: presence, shared by every process and node of a room, with a bounded
//! cost however large the room.
//!
//! ## Who counts
//!
//! A streaming subscriber (an SSE stream or a WebSocket of the room) is present from the
//! moment it subscribes until its connection ends, under its token's name
//! ([`crate::chat::auth`]), else the `nick` it gave (`?nick=`), else anonymously (counted,
//! not named). A long-poll client is not counted: it has no connection between two polls,
//! and its comings and goings would be noise.
//!
//! ## Coalesced updates
//!
//! A join or a leave only marks the room changed. [`Presence::tick`], which the server
//! calls a few times a second, flushes each changed room at most once per
//! [`FLUSH_INTERVAL`] (less often in rooms of more than [`EVENTS_PER_SECOND`] users, so
//! that a room costs about that many events a second whatever its size): it computes the
//! room's view (the members of this process and those
//! the other processes reported), and hands the hub one update for the room, which every
//! streaming subscriber of the room is sent once, whatever happened in between: in a room
//! of 100,000 members where someone comes or goes every millisecond, each subscriber gets
//! one presence event a second, not a thousand. An update is a diff against the previous
//! one (who joined, who left, the totals) when it can name everyone who came or went (at
//! most [`MAX_NAMES_PER_UPDATE`] each way, in a room of at most [`LARGE_ROOM`] users). A
//! subscriber that has not seen the previous update (it just subscribed, or it was slow and
//! the hub kept only the newest), or any subscriber when there is no diff, is sent the
//! snapshot instead: the totals and the first [`MAX_LISTED_IN_EVENTS`] members, none above
//! [`LARGE_ROOM`] (`GET .../presence` lists up to [`MAX_LISTED`]). So a client that applies
//! every event it is sent, in order, holds the right view.
//!
//! ## Across processes and nodes
//!
//! Each process reports its own members of each room on the bus ([`Presence::tick`]'s
//! lines, `P {json}`): when they changed (at most once per [`FLUSH_INTERVAL`]) and every
//! [`HEARTBEAT`] anyway. What another process reported is kept for [`REMOTE_TTL`]: a
//! process that dies (`kill -9`) stops reporting, and its members leave the others' views
//! within that time. A report replaces the previous one of its process for that room, so a
//! lost or reordered report is repaired by the next.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::chat::render::to_json;
use crate::store::RoomId;

/// The shortest time between two updates of one room.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Rooms larger than this many users are updated less often: every [`FLUSH_INTERVAL`]
/// times users / this, so that a room's updates cost about this many events a second
/// however large it is (measured at 100,000 members on 8 workers, `c10k bench --only
/// presence`: an update a second to each of them slowed their joining tenfold).
pub const EVENTS_PER_SECOND: u64 = 10_000;
/// How often a process reports its members of a room even when nothing changed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long another process's report counts without being renewed.
pub const REMOTE_TTL: Duration = Duration::from_secs(30);
/// The most members `GET .../presence` (and a process's report) names.
pub const MAX_LISTED: usize = 1000;
/// The most members a snapshot sent to a subscriber names: it goes to every new subscriber
/// of the room, so it is kept small (measured: listing 1,000 made each of 10,000 joining
/// subscribers cost 59 KiB more at the peak, `c10k bench --only presence`); the rest are
/// counted in its `more`, and `GET .../presence` lists them.
pub const MAX_LISTED_IN_EVENTS: usize = 100;
/// The most names an update lists as joined, and as left.
pub const MAX_NAMES_PER_UPDATE: usize = 50;
/// Above this many users, updates carry the totals only.
pub const LARGE_ROOM: usize = 1000;
/// The longest name kept (longer ones are cut, on a character boundary).
const MAX_NAME_CHARS: usize = 64;

/// What a room's subscribers are sent: the newest update, and the snapshot for those who
/// missed the one before.
#[derive(Debug)]
pub struct PresenceUpdate {
    /// The update's version: the Unix milliseconds of its flush, or one more than the
    /// previous version if that is later. Versions grow within a process and are unlikely to
    /// coincide across processes, so a reader that moves to another worker or node and gives
    /// the version it saw is sent a snapshot there, not another process's diff.
    pub version: u64,
    /// The version of the update before (0: none).
    pub previous: u64,
    /// The diff against the previous update, as JSON (`{"type": "presence", ...}`); `None`
    /// when a diff would not name everyone who came or went (more than
    /// [`MAX_NAMES_PER_UPDATE`] either way, or a room of more than [`LARGE_ROOM`] users):
    /// then everyone is sent the snapshot, so that applying updates in order is right.
    pub diff: Option<Arc<str>>,
    /// The whole view, as JSON (`{"type": "presence", "members": [...], ...}`).
    pub snapshot: Arc<str>,
}

impl PresenceUpdate {
    /// What a subscriber that last saw version `seen` (0: none) is sent.
    pub fn for_seen(&self, seen: u64) -> &Arc<str> {
        match &self.diff {
            Some(diff) if seen == self.previous && seen != 0 => diff,
            _ => &self.snapshot,
        }
    }
}

/// One process's members of one room, as it reports them on the bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Report {
    node: String,
    room: String,
    /// (name, connections, since in Unix ms), at most [`MAX_LISTED`].
    members: Vec<(String, u32, u64)>,
    /// Connections without a name.
    #[serde(default)]
    anonymous: u32,
    /// Named users, listed or not.
    #[serde(default)]
    users: u64,
    /// Named connections, listed or not.
    #[serde(default)]
    connections: u64,
}

#[derive(Debug, Clone, Copy)]
struct Local {
    connections: u32,
    since_ms: u64,
}

#[derive(Debug)]
struct Remote {
    report: Report,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Room {
    local: HashMap<String, Local>,
    local_anonymous: u32,
    /// Local members changed since this process last reported them.
    local_changed: bool,
    remote: HashMap<String, Remote>,
    /// The view may have changed since the last update.
    changed: bool,
    /// The names of the last update's view, with their `since`.
    published: BTreeMap<String, u64>,
    last_flush: Option<Instant>,
    last_report: Option<Instant>,
    version: u64,
    /// Users at the last update, which sets the time to the next ([`EVENTS_PER_SECOND`]).
    users: u64,
}

impl Room {
    /// The time between two updates of this room.
    fn flush_interval(&self) -> Duration {
        FLUSH_INTERVAL * u32::try_from((self.users / EVENTS_PER_SECOND).max(1)).unwrap_or(u32::MAX)
    }
}

/// What one [`Presence::tick`] produced.
#[derive(Debug, Default)]
pub struct Tick {
    /// An update per room whose view changed, for the hub.
    pub updates: Vec<(RoomId, Arc<PresenceUpdate>)>,
    /// Lines for the bus (each `P {json}\n`).
    pub reports: Vec<Vec<u8>>,
}

/// The presence of every room this process knows. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Presence {
    node: String,
    rooms: Mutex<HashMap<RoomId, Room>>,
}

/// A member's place in a room: held by its subscriber, dropped when it leaves.
#[derive(Debug)]
pub struct Membership {
    presence: Arc<Presence>,
    room: RoomId,
    name: Option<String>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.presence.leave(&self.room, self.name.as_deref());
    }
}

impl Presence {
    /// The presence of a process that calls itself `node` on the bus.
    pub fn new(node: String) -> Presence {
        Presence { node, rooms: Mutex::new(HashMap::new()) }
    }

    /// This process's name on the bus.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, Room>> {
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `name` (or someone anonymous) is in `room` from `now_ms`, until the membership drops.
    pub fn join(self: &Arc<Self>, room: &RoomId, name: Option<&str>, now_ms: u64) -> Membership {
        let name = name.map(clean_name).filter(|n| !n.is_empty());
        let mut rooms = self.lock();
        let entry = rooms.entry(room.clone()).or_default();
        match &name {
            Some(name) => {
                let local = entry.local.entry(name.clone()).or_insert(Local { connections: 0, since_ms: now_ms });
                local.connections += 1;
            }
            None => entry.local_anonymous += 1,
        }
        entry.local_changed = true;
        entry.changed = true;
        drop(rooms);
        Membership { presence: Arc::clone(self), room: room.clone(), name }
    }

    fn leave(&self, room: &RoomId, name: Option<&str>) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else { return };
        match name {
            Some(name) => {
                if let Some(local) = entry.local.get_mut(name) {
                    local.connections -= 1;
                    if local.connections == 0 {
                        entry.local.remove(name);
                    }
                }
            }
            None => entry.local_anonymous = entry.local_anonymous.saturating_sub(1),
        }
        entry.local_changed = true;
        entry.changed = true;
    }

    /// Takes in another process's report (a bus line without its `P ` and `\n`), received
    /// at `now`. Its own reports, echoed by the bus, are ignored.
    pub fn apply_report(&self, json: &[u8], now: Instant) -> Result<(), String> {
        let report: Report = serde_json::from_slice(json).map_err(|e| format!("a presence report that is not one: {e}"))?;
        if report.node == self.node {
            return Ok(());
        }
        let room = RoomId::new(&report.room).map_err(|e| format!("a presence report for no room: {e}"))?;
        let mut rooms = self.lock();
        let entry = rooms.entry(room).or_default();
        let empty = report.members.is_empty() && report.anonymous == 0 && report.users == 0;
        let node = report.node.clone();
        let previous = if empty {
            entry.remote.remove(&node).map(|r| r.report)
        } else {
            entry.remote.insert(node, Remote { report: report.clone(), expires: now + REMOTE_TTL }).map(|r| r.report)
        };
        if previous.as_ref() != (!empty).then_some(&report) {
            entry.changed = true;
        }
        Ok(())
    }

    /// Flushes what is due at `now`: the rooms changed since their last update (at most
    /// one update per room per [`FLUSH_INTERVAL`]), this process's reports, and the
    /// expiry of the reports of processes that stopped reporting.
    pub fn tick(&self, now: Instant, now_ms: u64) -> Tick {
        let mut tick = Tick::default();
        let mut rooms = self.lock();
        for (room_id, room) in rooms.iter_mut() {
            let before = room.remote.len();
            room.remote.retain(|_, remote| remote.expires > now);
            if room.remote.len() != before {
                room.changed = true;
            }
            let due = |last: Option<Instant>, every: Duration| last.is_none_or(|at| now.saturating_duration_since(at) >= every);
            let has_local = !room.local.is_empty() || room.local_anonymous > 0;
            if (room.local_changed && due(room.last_report, FLUSH_INTERVAL)) || (has_local && due(room.last_report, HEARTBEAT)) {
                tick.reports.push(report_line(&self.node, room_id, room));
                room.local_changed = false;
                room.last_report = Some(now);
            }
            if room.changed && due(room.last_flush, room.flush_interval()) {
                room.changed = false;
                room.last_flush = Some(now);
                tick.updates.push((room_id.clone(), flush(room_id, room, now_ms)));
            }
        }
        // Rooms are kept, as the hub keeps them: a room's versions must only grow.
        tick
    }

    /// The room's view now, as the snapshot JSON (what `GET .../presence` answers).
    pub fn snapshot(&self, room: &RoomId) -> String {
        let rooms = self.lock();
        match rooms.get(room) {
            Some(entry) => {
                let view = View::of(entry);
                view.snapshot_json(room, None, MAX_LISTED)
            }
            None => View::default().snapshot_json(room, None, MAX_LISTED),
        }
    }
}

/// A process's report of its members of `room`, as a bus line.
fn report_line(node: &str, room_id: &RoomId, room: &Room) -> Vec<u8> {
    let mut members: Vec<(String, u32, u64)> =
        room.local.iter().map(|(name, local)| (name.clone(), local.connections, local.since_ms)).collect();
    members.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
    let users = members.len() as u64;
    let connections = members.iter().map(|m| u64::from(m.1)).sum();
    members.truncate(MAX_LISTED);
    let report = Report { node: node.to_string(), room: room_id.as_str().to_string(), members, anonymous: room.local_anonymous, users, connections };
    let mut line = b"P ".to_vec();
    line.extend_from_slice(to_json(&report).as_bytes());
    line.push(b'\n');
    line
}

/// A room's members as seen from here: this process's and the others' reports together.
#[derive(Debug, Default)]
struct View {
    /// name → (connections, since).
    named: BTreeMap<String, (u64, u64)>,
    /// Named users and connections the reports counted but did not list.
    unlisted_users: u64,
    unlisted_connections: u64,
    anonymous: u64,
}

impl View {
    fn of(room: &Room) -> View {
        let mut view = View::default();
        for (name, local) in &room.local {
            view.add(name, u64::from(local.connections), local.since_ms);
        }
        view.anonymous += u64::from(room.local_anonymous);
        for remote in room.remote.values() {
            let report = &remote.report;
            let mut listed_connections = 0;
            for (name, connections, since) in &report.members {
                view.add(name, u64::from(*connections), *since);
                listed_connections += u64::from(*connections);
            }
            view.unlisted_users += report.users.saturating_sub(report.members.len() as u64);
            view.unlisted_connections += report.connections.saturating_sub(listed_connections);
            view.anonymous += u64::from(report.anonymous);
        }
        view
    }

    fn add(&mut self, name: &str, connections: u64, since: u64) {
        let entry = self.named.entry(name.to_string()).or_insert((0, since));
        entry.0 += connections;
        entry.1 = entry.1.min(since);
    }

    fn users(&self) -> u64 {
        self.named.len() as u64 + self.unlisted_users
    }

    fn connections(&self) -> u64 {
        self.named.values().map(|(c, _)| c).sum::<u64>() + self.unlisted_connections + self.anonymous
    }

    /// The view as a snapshot naming at most `limit` members, the longest present first;
    /// `version` is the update's, if it is one (a listing has none: it is the view now,
    /// which the next update's diff does not follow).
    fn snapshot_json(&self, room: &RoomId, version: Option<u64>, limit: usize) -> String {
        let mut members: Vec<(&String, &(u64, u64))> = self.named.iter().collect();
        members.sort_by(|a, b| (a.1).1.cmp(&(b.1).1).then_with(|| a.0.cmp(b.0)));
        let listed: Vec<_> = members
            .iter()
            .take(limit)
            .map(|(name, (connections, since))| json!({"name": name, "connections": connections, "since": since}))
            .collect();
        let more = self.users() - listed.len() as u64;
        let mut snapshot = json!({
            "type": "presence", "room": room.as_str(),
            "users": self.users(), "connections": self.connections(), "anonymous": self.anonymous,
            "members": listed, "more": more,
        });
        if let Some(version) = version {
            snapshot["version"] = version.into();
        }
        to_json(&snapshot)
    }
}

/// The room's next update (its view changed since the last one).
fn flush(room_id: &RoomId, room: &mut Room, now_ms: u64) -> Arc<PresenceUpdate> {
    let view = View::of(room);
    room.users = view.users();
    let now_named: BTreeMap<String, u64> = view.named.iter().map(|(name, (_, since))| (name.clone(), *since)).collect();
    let joined: Vec<(&String, &u64)> = now_named.iter().filter(|(name, _)| !room.published.contains_key(*name)).collect();
    let left: Vec<&String> = room.published.keys().filter(|name| !now_named.contains_key(*name)).collect();
    let previous = room.version;
    room.version = (room.version + 1).max(now_ms);
    let large = view.users() as usize > LARGE_ROOM;
    let complete = !large && joined.len() <= MAX_NAMES_PER_UPDATE && left.len() <= MAX_NAMES_PER_UPDATE;
    let diff = complete.then(|| {
        to_json(&json!({
            "type": "presence", "room": room_id.as_str(), "version": room.version, "previous": previous,
            "users": view.users(), "connections": view.connections(), "anonymous": view.anonymous,
            "joined": joined.iter().map(|(name, since)| json!({"name": name, "since": since})).collect::<Vec<_>>(),
            "left": left,
        }))
        .into()
    });
    // A large room's snapshot names nobody either: it goes to each of its many joiners.
    let snapshot = view.snapshot_json(room_id, Some(room.version), if large { 0 } else { MAX_LISTED_IN_EVENTS });
    room.published = now_named;
    Arc::new(PresenceUpdate { version: room.version, previous, diff, snapshot: snapshot.into() })
}

/// A name as presence keeps it: trimmed, control characters out, at most 64 characters.
fn clean_name(name: &str) -> String {
    name.trim().chars().filter(|c| !c.is_control()).take(MAX_NAME_CHARS).collect()
}
