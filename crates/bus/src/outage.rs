//! What the network buses share: the queue of messages waiting for the bus, the back-off
//! between connection attempts, and logging an outage once when it starts and once when
//! it ends (not once per attempt).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use c10k_core::metrics::BusMetrics;
use c10k_core::store::Message;
use tracing::{info, warn};

/// The first wait before connecting again after a failure.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two connection attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// Messages queued beyond this are coalesced to the newest of each room: one announcement
/// is enough for the other nodes to fill the rest from the store.
const MAX_QUEUED: usize = 10_000;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Messages stored here and not yet accepted by the bus.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Message>>,
    ready: Condvar,
}

impl Outbox {
    /// Queues a message and wakes the publishing thread.
    pub(crate) fn push(&self, message: Message) {
        let mut queue = lock(&self.queue);
        queue.push_back(message);
        if queue.len() > MAX_QUEUED {
            coalesce(&mut queue);
        }
        drop(queue);
        self.ready.notify_one();
    }

    /// Everything queued, waiting up to `wait` for something to be (empty if nothing came).
    pub(crate) fn take(&self, wait: Duration) -> Vec<Message> {
        let mut queue = lock(&self.queue);
        if queue.is_empty() {
            queue = self.ready.wait_timeout(queue, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
        queue.drain(..).collect()
    }

    /// Wakes the publishing thread without a message (a presence report is queued).
    pub(crate) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Puts back messages the bus did not accept, ahead of newer ones; only the newest of
    /// each room is kept (it reveals the others).
    pub(crate) fn put_back(&self, failed: Vec<Message>) {
        let mut queue = lock(&self.queue);
        let newer: Vec<Message> = queue.drain(..).collect();
        queue.extend(failed);
        queue.extend(newer);
        coalesce(&mut queue);
    }
}

/// Keeps the newest message of each room, in room order.
fn coalesce(queue: &mut VecDeque<Message>) {
    let mut newest: BTreeMap<_, Message> = BTreeMap::new();
    for message in queue.drain(..) {
        match newest.get(&message.room) {
            Some(kept) if kept.id >= message.id => {}
            _ => {
                newest.insert(message.room.clone(), message);
            }
        }
    }
    queue.extend(newest.into_values());
}

/// Presence reports waiting for the bus (`P {json}` lines): the newest ones only, since
/// each replaces its process's previous one for its room, and a report lost while the bus
/// is down is sent again with the next heartbeat ([`c10k_core::presence`]).
#[derive(Debug, Default)]
pub(crate) struct Reports {
    queue: Mutex<VecDeque<Vec<u8>>>,
}

/// The most presence reports kept for the bus; older ones are dropped.
const MAX_REPORTS: usize = 1000;

impl Reports {
    /// Queues a report line (with its `\n`).
    pub(crate) fn push(&self, line: &[u8]) {
        let mut queue = lock(&self.queue);
        if queue.len() >= MAX_REPORTS {
            queue.pop_front();
        }
        queue.push_back(line.strip_suffix(b"\n").unwrap_or(line).to_vec());
    }

    /// Every report queued, as pub/sub payloads (no `\n`).
    pub(crate) fn take(&self) -> Vec<Vec<u8>> {
        lock(&self.queue).drain(..).collect()
    }
}

/// The wait after `failures` failures in a row: doubling from [`RETRY_MIN`] up to [`RETRY_MAX`].
pub(crate) fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (RETRY_MIN * 2u32.pow(doublings)).min(RETRY_MAX)
}

/// The state of one bus connection, for logging and the back-off.
#[derive(Debug)]
pub(crate) struct Outage {
    bus: &'static str,
    addr: String,
    metrics: BusMetrics,
    /// When the current outage began; `None` while connected.
    since: Option<Instant>,
    /// Whether a connection was ever made (the first one is not a reconnect).
    ever_connected: bool,
    failures: u32,
}

impl Outage {
    pub(crate) fn new(bus: &'static str, addr: &str, metrics: BusMetrics) -> Outage {
        metrics.set_outage(Some(format!("not yet connected to {bus} at {addr}")));
        Outage { bus, addr: addr.into(), metrics, since: Some(Instant::now()), ever_connected: false, failures: 0 }
    }

    /// A connection attempt, or an established connection, failed: logs once per outage.
    pub(crate) fn failed(&mut self, why: &dyn std::fmt::Display) {
        self.metrics.connected.set(0);
        let what = if self.ever_connected { "lost" } else { "cannot reach" };
        self.metrics.set_outage(Some(format!("{what} {} at {}: {why}", self.bus, self.addr)));
        self.failures = self.failures.saturating_add(1);
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        if self.failures == 1 {
            let what = if self.ever_connected { "lost" } else { "cannot reach" };
            warn!(
                bus = self.bus,
                "{what} {} at {}: {why}; serving this node's own subscribers meanwhile, retrying \
                 (every {RETRY_MAX:?} at most), catching up from the store once it is back",
                self.bus,
                self.addr
            );
        }
    }

    /// The wait before the next attempt: doubling from [`RETRY_MIN`] up to [`RETRY_MAX`].
    pub(crate) fn backoff(&self) -> Duration {
        backoff(self.failures)
    }

    /// Connected (again): logs the end of an outage, counts a reconnect.
    pub(crate) fn connected(&mut self) {
        self.metrics.connected.set(1);
        self.metrics.set_outage(None);
        let since = self.since.take();
        if self.ever_connected {
            self.metrics.reconnects.inc();
        } else if self.failures > 0 {
            self.metrics.reconnects.inc(); // unreachable at start, reached later
        }
        match (since, self.failures) {
            (Some(since), 1..) => info!(
                bus = self.bus,
                "{} at {} is back after {:.1} s; catching up from the store",
                self.bus,
                self.addr,
                since.elapsed().as_secs_f64()
            ),
            _ => info!(bus = self.bus, "connected to {} at {}", self.bus, self.addr),
        }
        self.ever_connected = true;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10k_core::store::{MessageId, RoomId};

    fn message(room: &str, id: u64) -> Message {
        Message { id: MessageId(id), room: RoomId::new(room).unwrap(), body: String::new(), from: String::new(), time_ms: 0 }
    }

    #[test]
    fn messages_put_back_keep_only_the_newest_of_each_room_ahead_of_newer_ones() {
        let outbox = Outbox::default();
        outbox.push(message("b", 9));
        outbox.put_back(vec![message("a", 1), message("a", 3), message("b", 2)]);
        let ids: Vec<_> = outbox.take(Duration::ZERO).iter().map(|m| (m.room.to_string(), m.id.0)).collect();
        assert_eq!(ids, [("a".to_string(), 3), ("b".to_string(), 9)]);
    }

    #[test]
    fn the_back_off_doubles_up_to_its_ceiling() {
        let mut outage = Outage::new("redis", "127.0.0.1:1", BusMetrics::default());
        let waits: Vec<_> = (0..8).map(|_| {
            outage.failed(&"refused");
            outage.backoff()
        }).collect();
        assert_eq!(waits[0], RETRY_MIN);
        assert_eq!(waits[1], RETRY_MIN * 2);
        assert_eq!(*waits.last().unwrap(), RETRY_MAX);
        outage.connected();
        assert_eq!(outage.metrics.reconnects.get(), 1, "reached after failing at start counts once");
    }
}
