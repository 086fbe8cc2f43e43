//! Counters, gauges and histograms exposed at `/metrics`, in either text format a scraper
//! asks for: the Prometheus text format 0.0.4 (the default) or OpenMetrics 1.0 (when the
//! `Accept` header names `application/openmetrics-text`).
//!
//! The models count connections; the application counts requests, posts and streams, and
//! times each answered request (from the model's clock readings, passed in). All of them
//! are atomics: counting never takes a lock on the hot path. Process metrics (CPU, memory,
//! descriptors) are read from outside the core through a [`ProcessSampler`] the binary
//! supplies, when a scrape renders them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// The upper bounds (seconds) of the request latency buckets: from half a millisecond (a
/// cached read) to 30 s (a long-poll that waited its whole default wait).
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

/// What a process sampler read about this process at one moment; a value it could not
/// read is `None` and is left out of the exposition (never a guess).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// User and system CPU time used so far, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads the serving process's own resource use (on Linux, from `/proc/self`); called once
/// per scrape. Supplied by the binary ([`crate::chat::Config::process`]), since reading it
/// is I/O the core does not do.
pub trait ProcessSampler: std::fmt::Debug + Send + Sync {
    /// The values now.
    fn sample(&self) -> ProcessSample;
}

/// What the info metric `c10k_server_info` names: how this server is built to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The concurrency model (`--model`).
    pub model: String,
    /// The event loop's poller (`--poller`), or `none` for a model without one.
    pub poller: String,
    /// The store's kind: `sqlite`, `mysql` or `postgres`.
    pub store: String,
}

impl Default for ServerInfo {
    fn default() -> Self {
        ServerInfo { model: "unknown".into(), poller: "none".into(), store: "unknown".into() }
    }
}

/// The two exposition formats of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: counters are named `..._total` in their
    /// `# TYPE` line, the info metric is a gauge, and there is no `# EOF`.
    Prometheus,
    /// OpenMetrics 1.0: counter families without `_total`, samples with it, `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) with a quality at
    /// least that of every other range it accepts; else the 0.0.4 text format, which is
    /// also the answer to no header at all (RFC 9110 §12.5.1).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Prometheus };
        let (mut openmetrics, mut other) = (0.0f64, 0.0f64);
        for range in accept.split(',') {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or("").to_ascii_lowercase();
            let (mut q, mut version_ok) = (1.0f64, true);
            for param in params {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version_ok = matches!(value, "1.0.0" | "0.0.1"),
                    _ => {}
                }
            }
            if media == "application/openmetrics-text" {
                if version_ok {
                    openmetrics = openmetrics.max(q);
                }
            } else if !media.is_empty() {
                other = other.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics >= other {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }
}

impl std::fmt::Debug for LatencyBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyBuckets")
    }
}

/// Every metric of one server process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route.
    pub requests: Family<Labels, Counter>,
    /// Time from a request parsed to its response ready to write, by route.
    latency: Family<Labels, Histogram, LatencyBuckets>,
    /// Requests refused for breaking the protocol, by status.
    pub protocol_errors: Family<Labels, Counter>,
    /// Messages stored and published.
    pub messages_posted: Counter,
    /// Posts answered from the idempotency table instead of being stored again.
    pub posts_replayed: Counter,
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
    /// Why this node is cut off from the other nodes, while it is (a network bus that is
    /// down or not yet reached): what `/readyz` says. `None` without a network bus.
    pub outage: Arc<Mutex<Option<String>>>,
}

impl BusMetrics {
    /// Records why the bus is unreachable now (`None`: it is connected again).
    pub fn set_outage(&self, why: Option<String>) {
        *self.outage.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Why the bus is unreachable now, if it is.
    pub fn outage(&self) -> Option<String> {
        self.outage.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(ServerInfo::default(), None)
    }
}

impl Metrics {
    /// Registers every metric: the server's under the `c10k_` prefix, and, given a
    /// sampler, the usual `process_*` ones (named as every Prometheus client names them).
    pub fn new(info: ServerInfo, process: Option<Arc<dyn ProcessSampler>>) -> Metrics {
        let mut root = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(LatencyBuckets),
            protocol_errors: Family::default(),
            messages_posted: Counter::default(),
            posts_replayed: Counter::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            connections_open: Gauge::default(),
            slow_callbacks: Counter::default(),
            subscribers: Family::default(),
            bus: BusMetrics::default(),
            waiting: Gauge::default(),
            registry: Registry::default(),
        };
        let registry = root.sub_registry_with_prefix("c10k");
        let ServerInfo { model, poller, store } = info;
        registry.register(
            "server",
            "How this server serves: concurrency model, event-loop poller, store",
            Info::new(vec![("model", model), ("poller", poller), ("store", store)]),
        );
        registry.register("http_requests", "HTTP requests answered, by route", m.requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from a request parsed to its response ready to write (store calls and long-poll waits \
             included, the socket write not), by route",
            m.latency.clone(),
        );
        registry.register(
            "http_protocol_errors",
            "Requests refused for breaking HTTP, by status",
            m.protocol_errors.clone(),
        );
        registry.register("messages_posted", "Messages stored and published", m.messages_posted.clone());
        registry.register(
            "posts_replayed",
            "Posts whose Idempotency-Key was seen before, answered with the stored message",
            m.posts_replayed.clone(),
        );
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
        if let Some(sampler) = process {
            root.register_collector(Box::new(ProcessCollector(sampler)));
        }
        Metrics { registry: root, ..m }
    }

    /// Counts a request to `route`.
    pub fn request(&self, route: &'static str) {
        self.requests.get_or_create(&[("route", route)]).inc();
    }

    /// Records how long a request to `route` took, from the model's clock readings: when
    /// the request was parsed and when its response was ready to write.
    pub fn observe_latency(&self, route: &'static str, took: Duration) {
        self.latency.get_or_create(&[("route", route)]).observe(took.as_secs_f64());
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

    /// The exposition in `format`, with `waiting` readers recorded just before (and the
    /// process sampled, if there is a sampler).
    pub fn render(&self, waiting: usize, format: Format) -> String {
        self.waiting.set(waiting as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        match format {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry),
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &self.registry),
        }
        .expect("encoding metrics into a String");
        out
    }
}

/// The `process_*` metrics, sampled at each scrape.
#[derive(Debug)]
struct ProcessCollector(Arc<dyn ProcessSampler>);

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.sample();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        let whole = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let counts: [(&str, &str, Option<i64>); 4] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", whole(s.resident_bytes)),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", whole(s.virtual_bytes)),
            ("process_open_fds", "Number of open file descriptors", whole(s.open_fds)),
            ("process_max_fds", "Maximum number of open file descriptors", whole(s.max_fds)),
        ];
        for (name, help, value) in counts {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(v) = s.start_time_seconds {
            let g = ConstGauge::new(v);
            let help = "Start time of the process since unix epoch in seconds";
            g.encode(encoder.encode_descriptor("process_start_time_seconds", help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_choose_the_format() {
        let cases = [
            (None, Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (Some("text/plain"), Format::Prometheus),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (Some("application/openmetrics-text; version=1.0.0; charset=utf-8"), Format::OpenMetrics),
            // What Prometheus 2.x sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                     text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Format::OpenMetrics,
            ),
            (Some("text/plain;version=0.0.4, application/openmetrics-text;q=0.5"), Format::Prometheus),
            (Some("application/openmetrics-text;version=2.0.0"), Format::Prometheus),
            (Some("application/openmetrics-text;q=0"), Format::Prometheus),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "Accept: {accept:?}");
        }
    }

    #[derive(Debug)]
    struct Fixed;
    impl ProcessSampler for Fixed {
        fn sample(&self) -> ProcessSample {
            ProcessSample { cpu_seconds: Some(1.5), open_fds: Some(7), ..ProcessSample::default() }
        }
    }

    #[test]
    fn each_format_has_its_own_counter_names_info_and_end() {
        let info = ServerInfo { model: "async".into(), poller: "none".into(), store: "sqlite".into() };
        let m = Metrics::new(info, Some(Arc::new(Fixed)));
        m.request("page");
        m.observe_latency("page", Duration::from_millis(3));
        let text = m.render(0, Format::Prometheus);
        assert!(text.contains("# TYPE c10k_http_requests_total counter\n"), "{text}");
        assert!(text.contains("c10k_http_requests_total{route=\"page\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE c10k_server_info gauge\n"), "{text}");
        assert!(text.contains("c10k_server_info{model=\"async\",poller=\"none\",store=\"sqlite\"} 1\n"), "{text}");
        assert!(text.contains("c10k_http_request_duration_seconds_bucket{route=\"page\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"), "{text}");
        assert!(text.contains("process_open_fds 7\n"), "{text}");
        assert!(!text.contains("process_resident_memory_bytes"), "a value not read is left out: {text}");
        assert!(!text.contains("# EOF"), "{text}");

        let text = m.render(0, Format::OpenMetrics);
        assert!(text.contains("# TYPE c10k_http_requests counter\n"), "{text}");
        assert!(text.contains("# TYPE c10k_server info\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
