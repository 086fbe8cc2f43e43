//! What a run found: the [`Report`] (serde-serialisable, printed by `--json`), its parts,
//! the HDR histogram summaries behind every latency, and the plain-text rendering.
//!
//! All latencies are in microseconds. Percentiles come from HDR histograms with three
//! significant digits (a reported 1,234 µs is within 0.1% of the true value).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::scenarios::Scenario;

/// A latency distribution, summarised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest, µs.
    pub min_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            min_us: histogram.min(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// One class of requests (e.g. `plaintext`, `healthz`, `post`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestStats {
    /// The class: the route it hits.
    pub name: String,
    /// Connections that sent these requests.
    pub connections: usize,
    /// Requests answered with the expected status.
    pub requests: u64,
    /// Requests that failed (any error or unexpected status; classes in [`Report::errors`]).
    pub errors: u64,
    /// Answered requests per second over the measured phase.
    pub per_second: f64,
    /// Latency of the answered requests. For paced classes (`db-stall`) it is measured
    /// from when the request was due, not when it was sent, so a stalled server cannot
    /// hide the requests it delayed (no coordinated omission). For pipelined plaintext it
    /// is from the write of the request's batch to the arrival of its own answer.
    pub latency: LatencySummary,
}

/// Fan-out of messages to subscribers, and whether every one arrived exactly once, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStats {
    /// How subscribers received: `longpoll`, `sse` or `ws`.
    pub via: String,
    /// The room used.
    pub room: String,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Subscribers that subscribed successfully (the others are counted in errors).
    pub subscribed: usize,
    /// Messages the poster had acknowledged (201).
    pub messages: u64,
    /// Posts that failed (their messages are not expected).
    pub post_failures: u64,
    /// subscribed × messages.
    pub expected: u64,
    /// Acknowledged messages received, counted once per subscriber.
    pub delivered: u64,
    /// Expected deliveries that never arrived.
    pub misses: u64,
    /// Messages received again by a subscriber that already had them.
    pub duplicates: u64,
    /// Messages received after one with a higher id.
    pub out_of_order: u64,
    /// Resets the server sent (history no longer held).
    pub resets: u64,
    /// Subscribers that ended with an error before receiving everything.
    pub subscriber_errors: u64,
    /// Deliveries per second, from the first post to the last delivery.
    pub per_second: f64,
    /// Seconds from the first post to the last delivery.
    pub spread_secs: f64,
    /// Latency from a post being sent to each subscriber receiving it.
    pub latency: LatencySummary,
}

/// How many idle subscribers the server held, and at what memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityStats {
    /// Subscribers asked for.
    pub asked: usize,
    /// Subscribers the server accepted and held until the broadcast.
    pub held: usize,
    /// Subscribers that could not be opened (refused, failed to connect; see errors).
    pub failed: usize,
    /// Client processes used (this one, or the workers).
    pub processes: usize,
    /// Source addresses spread over (127.0.0.1, 127.0.0.2, ...).
    pub source_addrs: usize,
    /// Seconds to open them all.
    pub open_secs: f64,
    /// Server VmRSS before opening, KiB (with `--server-pid`).
    pub server_rss_before_kib: Option<u64>,
    /// Server VmRSS with all of them held, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// (after − before) / held, bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// Seconds from posting the broadcast to its last delivery.
    pub broadcast_secs: f64,
}

/// Everything a run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario and its parameters.
    pub scenario: Scenario,
    /// The server loaded.
    pub target: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Seconds the run took, setup and draining included.
    pub elapsed_secs: f64,
    /// Seconds of the measured phase (what rates are divided by).
    pub measured_secs: f64,
    /// Client runtime threads.
    pub client_threads: usize,
    /// The hard timeout cut the run short.
    pub timed_out: bool,
    /// Request classes (empty for pure fan-out scenarios).
    pub requests: Vec<RequestStats>,
    /// Message fan-out, for the broadcast scenarios and idle-capacity's broadcast.
    pub delivery: Option<DeliveryStats>,
    /// Idle-capacity's findings.
    pub capacity: Option<CapacityStats>,
    /// Errors by class (`connect: connection refused`, `status 503`, ...).
    pub errors: BTreeMap<String, u64>,
    /// What makes these numbers untrustworthy, in sentences (lost or doubled messages,
    /// a hard timeout, nothing answered). Empty when the run is sound.
    pub problems: Vec<String>,
}

impl Report {
    /// Lists the problems a report shows (called once the numbers are in).
    pub(crate) fn find_problems(&mut self) {
        let mut problems = Vec::new();
        if self.timed_out {
            problems.push("the hard timeout cut the run short; raise --timeout or lower the load".to_string());
        }
        for class in &self.requests {
            if class.requests == 0 {
                problems.push(format!("no {} request was answered", class.name));
            }
        }
        if let Some(d) = &self.delivery {
            // For idle-capacity, refusals are the finding (how many the server holds), not
            // a flaw of the run.
            if d.subscribed < d.subscribers && self.capacity.is_none() {
                problems.push(format!(
                    "{} of {} subscribers could not subscribe",
                    d.subscribers - d.subscribed,
                    d.subscribers
                ));
            }
            if d.messages == 0 {
                problems.push("no message was posted successfully".to_string());
            }
            if d.misses > 0 {
                problems.push(format!("{} of {} deliveries were missed", d.misses, d.expected));
            }
            if d.duplicates > 0 {
                problems.push(format!("{} deliveries were duplicates", d.duplicates));
            }
            if d.out_of_order > 0 {
                problems.push(format!("{} deliveries arrived out of order", d.out_of_order));
            }
            if d.resets > 0 {
                problems.push(format!(
                    "the server reset {} subscriptions (history no longer held): subscribers fell behind",
                    d.resets
                ));
            }
        }
        self.problems = problems;
    }

    /// The report as a few lines of text for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "c10k load {} -> {}  ({:.2} s measured, {:.2} s in all, {} client thread{})",
            self.scenario.name(),
            self.target,
            self.measured_secs,
            self.elapsed_secs,
            self.client_threads,
            if self.client_threads == 1 { "" } else { "s" }
        );
        for class in &self.requests {
            let pipelined = match &self.scenario {
                Scenario::Plaintext(c) if c.pipeline > 1 => format!(", {} requests pipelined on each", c.pipeline),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<10} {:>12} req/s  {} answered, {} errors, {} connections{pipelined}",
                class.name,
                thousands(class.per_second.round() as u64),
                thousands(class.requests),
                thousands(class.errors),
                class.connections
            );
            let _ = writeln!(out, "  {:<10} {}", "", latency_line(&class.latency));
        }
        if let Some(c) = &self.capacity {
            let _ = writeln!(
                out,
                "  held       {} of {} idle subscribers ({} failed) from {} process{} and {} source address{}, opened in {:.2} s",
                thousands(c.held as u64),
                thousands(c.asked as u64),
                thousands(c.failed as u64),
                c.processes,
                if c.processes == 1 { "" } else { "es" },
                c.source_addrs,
                if c.source_addrs == 1 { "" } else { "es" },
                c.open_secs
            );
            match (c.server_rss_before_kib, c.server_rss_after_kib, c.rss_per_connection_bytes) {
                (Some(before), Some(after), per) => {
                    let _ = writeln!(
                        out,
                        "  memory     server VmRSS {} KiB -> {} KiB{}",
                        thousands(before),
                        thousands(after),
                        per.map(|b| format!(", {} bytes per connection", thousands(b.round().max(0.0) as u64)))
                            .unwrap_or_default()
                    );
                }
                _ => {
                    let _ = writeln!(out, "  memory     not measured (give --server-pid PID)");
                }
            }
            match &self.delivery {
                Some(d) if d.messages > 0 => {
                    let _ = writeln!(out, "  broadcast  reached everyone in {:.3} s", c.broadcast_secs);
                }
                _ => {
                    let _ = writeln!(out, "  broadcast  not sent (the post failed; see errors)");
                }
            }
        }
        if let Some(d) = &self.delivery {
            let _ = writeln!(
                out,
                "  delivery   {} deliveries/s over {}: {} of {} delivered ({} subscribers x {} messages), {:.2} s spread",
                thousands(d.per_second.round() as u64),
                d.via,
                thousands(d.delivered),
                thousands(d.expected),
                thousands(d.subscribed as u64),
                thousands(d.messages),
                d.spread_secs
            );
            let _ = writeln!(
                out,
                "  verified   {} missed, {} duplicates, {} out of order, {} resets, {} failed posts, {} subscriber errors",
                d.misses, d.duplicates, d.out_of_order, d.resets, d.post_failures, d.subscriber_errors
            );
            let _ = writeln!(out, "  {:<10} {}", "", latency_line(&d.latency));
            if d.messages > 0 {
                // The server keeps what was posted, as it keeps every room: say where it went
                // rather than delete it behind the operator's back.
                let _ = writeln!(
                    out,
                    "  room       {}: its {} messages stay in the server's history (--room NAME posts to one room every run)",
                    d.room,
                    thousands(d.messages)
                );
            }
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            let _ = writeln!(out, "  errors     {}", list.join(", "));
        }
        for problem in &self.problems {
            let _ = writeln!(out, "  PROBLEM    {problem}");
        }
        out
    }
}

fn latency_line(l: &LatencySummary) -> String {
    format!(
        "latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0}, n={})",
        thousands(l.p50_us),
        thousands(l.p90_us),
        thousands(l.p99_us),
        thousands(l.p999_us),
        thousands(l.max_us),
        l.mean_us,
        thousands(l.count)
    )
}

/// `1234567` as `1,234,567`.
#[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; the workspace says 1.80
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A histogram of microseconds from 1 µs to an hour, three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

/// A histogram shared by many tasks, each recording through its own [`Recorder`].
#[derive(Debug, Clone)]
pub(crate) struct SharedHistogram(Arc<Mutex<Histogram<u64>>>);

impl SharedHistogram {
    pub(crate) fn new() -> SharedHistogram {
        SharedHistogram(Arc::new(Mutex::new(new_histogram())))
    }

    /// A recorder that takes the lock once per 256 values, not once per value.
    pub(crate) fn recorder(&self) -> Recorder {
        Recorder { shared: self.clone(), pending: Vec::with_capacity(256) }
    }

    /// Adds (value, count) pairs, as [`SharedHistogram::pairs`] gives them.
    pub(crate) fn add_pairs(&self, pairs: &[(u64, u64)]) {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for &(value, count) in pairs {
            h.saturating_record_n(value, count);
        }
    }

    /// The distribution as (value, count) pairs, to send between processes.
    pub(crate) fn pairs(&self) -> Vec<(u64, u64)> {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Buffers values for a [`SharedHistogram`]; flushes when full and when dropped.
#[derive(Debug)]
pub(crate) struct Recorder {
    shared: SharedHistogram,
    pending: Vec<u64>,
}

impl Recorder {
    pub(crate) fn record(&mut self, micros: u64) {
        self.pending.push(micros.max(1));
        if self.pending.len() == self.pending.capacity() {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut h = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
        for &v in &self.pending {
            h.saturating_record(v);
        }
        drop(h);
        self.pending.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Errors by class, shared by every task of a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorLog(Arc<Mutex<BTreeMap<String, u64>>>);

impl ErrorLog {
    pub(crate) fn count(&self, kind: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(kind.into()).or_insert(0) += 1;
    }

    /// Counts `n` errors of one class at once (the unanswered rest of a pipelined batch).
    pub(crate) fn count_n(&self, kind: impl Into<String>, n: u64) {
        if n > 0 {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(kind.into()).or_insert(0) += n;
        }
    }

    pub(crate) fn merge(&self, other: &BTreeMap<String, u64>) {
        let mut mine = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in other {
            *mine.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The counts so far, leaving the log empty (a worker reports each error once).
    pub(crate) fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn recorders_flush_into_the_shared_histogram() {
        let shared = SharedHistogram::new();
        {
            let mut a = shared.recorder();
            let mut b = shared.recorder();
            for v in 1..=1000 {
                a.record(v);
                b.record(v * 1000);
            }
        }
        let summary = shared.summary();
        assert_eq!(summary.count, 2000);
        assert_eq!(summary.min_us, 1);
        assert!(summary.max_us >= 999_000);
        let copy = SharedHistogram::new();
        copy.add_pairs(&shared.pairs());
        assert_eq!(copy.summary(), summary);
    }
}
