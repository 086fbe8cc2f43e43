//! The admin view (`--admin-token`): what an operator asks of a running cluster. Which
//! nodes are up, what each serves (model, connections by transport, the bus), the rooms
//! with their members and message rates, and the last errors; as JSON at `GET /api/admin`
//! (what `c10k admin` prints) and as a page at `GET /admin` (no build step, like the chat
//! page). Both need `Authorization: Bearer ADMIN_TOKEN`; the page asks for the token and
//! keeps it for its tab.
//!
//! Nodes: every process sends a summary of itself on the bus every [`NODE_REPORT_EVERY`]
//! (a `P {"summary": ...}` line, beside presence reports), so each one's view lists the
//! others too; a node not heard of for [`NODE_TTL`] is dropped from it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::render::to_json;

/// How often a process tells the others what it serves.
pub const NODE_REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long a node's summary counts without being renewed.
pub const NODE_TTL: Duration = Duration::from_secs(20);
/// How many errors the view keeps (the newest).
pub const KEPT_ERRORS: usize = 50;

/// One logged warning or error.
#[derive(Debug, Clone)]
pub struct LoggedError {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// Where it was logged (the module path).
    pub target: String,
    /// What it said.
    pub message: String,
}

/// The newest warnings and errors of this process, for the admin view. The binary's log
/// writes into it (the core logs nothing itself); shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct ErrorLog {
    entries: Mutex<VecDeque<LoggedError>>,
    total: std::sync::atomic::AtomicU64,
}

impl ErrorLog {
    /// Keeps `error`, dropping the oldest beyond [`KEPT_ERRORS`].
    pub fn push(&self, error: LoggedError) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= KEPT_ERRORS {
            entries.pop_front();
        }
        entries.push_back(error);
        self.total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The errors kept, newest first.
    pub fn recent(&self) -> Vec<LoggedError> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
    }

    /// How many were logged since the start.
    pub fn total(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What this process knows of the other nodes: their last summaries.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    others: Mutex<HashMap<String, (Value, Instant)>>,
    last_report: Mutex<Option<Instant>>,
}

impl Nodes {
    /// Keeps another node's summary, received at `now`. A node not heard of before is
    /// sent this one's summary at the next tick, so that a node that starts learns of the
    /// others at once rather than at their next report.
    pub(crate) fn heard(&self, node: String, summary: Value, now: Instant) {
        let new = self.others.lock().unwrap_or_else(|p| p.into_inner()).insert(node, (summary, now + NODE_TTL)).is_none();
        if new {
            *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// The others' summaries still fresh at `now`, by node id.
    pub(crate) fn fresh(&self, now: Instant) -> Vec<Value> {
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        others.retain(|_, (_, expires)| *expires > now);
        let mut list: Vec<(String, Value)> = others.iter().map(|(node, (summary, _))| (node.clone(), summary.clone())).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.into_iter().map(|(_, summary)| summary).collect()
    }

    /// Whether this process's summary is due at `now` (and, if so, counts it as sent).
    pub(crate) fn report_due(&self, now: Instant) -> bool {
        let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| now.saturating_duration_since(at) >= NODE_REPORT_EVERY);
        if due {
            *last = Some(now);
        }
        due
    }
}

/// A bus line with this process's `summary`.
pub(crate) fn summary_line(node: &str, summary: &Value) -> Vec<u8> {
    let mut line = b"P ".to_vec();
    line.extend_from_slice(to_json(&json!({ "node": node, "summary": summary })).as_bytes());
    line.push(b'\n');
    line
}

/// The errors as the view shows them.
pub(crate) fn errors_json(errors: &[LoggedError]) -> Value {
    errors
        .iter()
        .map(|e| json!({"time": e.time_ms, "level": e.level, "target": e.target, "message": e.message}))
        .collect()
}

/// Whether `given` is the admin token, compared in time that does not depend on where they
/// differ.
pub(crate) fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut difference = u8::from(a.len() != b.len());
    for (i, byte) in b.iter().enumerate() {
        difference |= a.get(i).copied().unwrap_or(0) ^ byte;
    }
    difference == 0
}
