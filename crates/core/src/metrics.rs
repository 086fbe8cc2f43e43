//! Counters and gauges exposed at `/metrics` in the Prometheus text format.
//!
//! The models count connections; the application counts requests, posts and streams.
//! All of them are atomics: counting never takes a lock on the hot path.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// Every metric of one server process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route.
    pub requests: Family<Labels, Counter>,
    /// Requests refused for breaking the protocol, by status.
    pub protocol_errors: Family<Labels, Counter>,
    /// Messages stored and published.
    pub messages_posted: Counter,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections refused at the connection cap.
    pub connections_refused: Counter,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Callbacks that held an event loop longer than its watchdog allows (`reactor`).
    pub slow_callbacks: Counter,
    /// Long-polls, event streams and WebSockets open now, by kind.
    pub subscribers: Family<Labels, Gauge>,
    /// What the bus between processes and nodes did (all zero without one).
    pub bus: BusMetrics,
    /// Readers registered with the hub, set when scraped.
    waiting: Gauge,
}

/// The bus's counters: what a node told the others and heard from them, and how often it
/// had to fall back on the store. Clones share the same counters.
#[derive(Debug, Clone, Default)]
pub struct BusMetrics {
    /// Messages this process handed to the bus and the bus accepted.
    pub published: Counter,
    /// Messages that arrived from the bus (this process's own echoes included).
    pub received: Counter,
    /// Messages read from the store because the bus had not brought them: gaps revealed
    /// by a later message, and catch-ups after a (re)connection or on the periodic sweep.
    pub gaps_filled: Counter,
    /// Catch-ups that brought more messages than a room's history keeps: a subscriber
    /// that was behind gets the explicit `reset`, not a silent skip.
    pub resets: Counter,
    /// Messages the bus delivered that the store could not yet place (held until a later
    /// catch-up fills what precedes them).
    pub held: Counter,
    /// Connections to the bus made again after one was lost (or never made at start).
    pub reconnects: Counter,
    /// 1 while the bus is connected, 0 while it is not (always 1 for the local relay).
    pub connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `c10k_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("c10k");
        let m = Metrics {
            requests: Family::default(),
            protocol_errors: Family::default(),
            messages_posted: Counter::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            connections_open: Gauge::default(),
            slow_callbacks: Counter::default(),
            subscribers: Family::default(),
            bus: BusMetrics::default(),
            waiting: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests answered, by route", m.requests.clone());
        registry.register(
            "http_protocol_errors",
            "Requests refused for breaking HTTP, by status",
            m.protocol_errors.clone(),
        );
        registry.register("messages_posted", "Messages stored and published", m.messages_posted.clone());
        registry.register("connections_accepted", "Connections accepted", m.connections_accepted.clone());
        registry.register(
            "connections_refused",
            "Connections refused with 503 at the connection cap",
            m.connections_refused.clone(),
        );
        registry.register("connections_open", "Connections open now", m.connections_open.clone());
        registry.register(
            "slow_callbacks",
            "Callbacks that held the event loop longer than the watchdog allows",
            m.slow_callbacks.clone(),
        );
        registry.register(
            "subscribers_open",
            "Long-polls, event streams and WebSockets open now, by kind",
            m.subscribers.clone(),
        );
        let bus = &m.bus;
        registry.register("bus_published", "Messages handed to the bus and accepted by it", bus.published.clone());
        registry.register("bus_received", "Messages received from the bus", bus.received.clone());
        registry.register(
            "bus_gaps_filled",
            "Messages read from the store because the bus had not brought them",
            bus.gaps_filled.clone(),
        );
        registry.register(
            "bus_resets",
            "Catch-ups longer than a room's history (behind subscribers got a reset)",
            bus.resets.clone(),
        );
        registry.register("bus_held", "Bus messages held because the store could not fill the gap before them", bus.held.clone());
        registry.register("bus_reconnects", "Connections to the bus made again after an outage", bus.reconnects.clone());
        registry.register("bus_connected", "1 while the bus is connected", bus.connected.clone());
        registry.register("hub_waiters", "Readers waiting in the hub for a message", m.waiting.clone());
        Metrics { registry, ..m }
    }

    /// Counts a request to `route`.
    pub fn request(&self, route: &'static str) {
        self.requests.get_or_create(&[("route", route)]).inc();
    }

    /// Counts a protocol error answered with `status`.
    pub fn protocol_error(&self, status: u16) {
        let label = match status {
            400 => "400",
            408 => "408",
            413 => "413",
            414 => "414",
            431 => "431",
            501 => "501",
            505 => "505",
            _ => "other",
        };
        self.protocol_errors.get_or_create(&[("status", label)]).inc();
    }

    /// The gauge of open subscribers of one kind (`longpoll`, `sse`, `ws`).
    pub fn subscriber_gauge(&self, kind: &'static str) -> Gauge {
        self.subscribers.get_or_create(&[("kind", kind)]).clone()
    }

    /// The text exposition, with `waiting` readers recorded just before.
    pub fn render(&self, waiting: usize) -> String {
        self.waiting.set(waiting as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}
