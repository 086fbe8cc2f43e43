//! [`RedisBus`]: nodes share rooms through one Redis pub/sub channel (see the crate docs for
//! why pub/sub and not Streams, and for what covers what it loses).
//!
//! Two threads, each with its own blocking connection (a subscribed Redis connection can
//! do nothing else): the publisher sends what [`Bus::publish`] queued, pipelined; the
//! subscriber reads the channel, hands each message to the node, and pings the server when
//! the channel has been quiet for [`QUIET`], so that a Redis that stopped answering
//! (`SIGSTOP`, a partition) is noticed and the node catches up once it is back.

use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use c10k_core::metrics::BusMetrics;
use c10k_core::store::Message;
use redis::{Client, Connection};
use tracing::{debug, warn};

use crate::outage::{backoff, Outage, Outbox, Reports};
use crate::{wire, Bus, BusError, Node, Options};

/// How long connecting, one command's reply, and writing may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A channel quiet this long is pinged.
const QUIET: Duration = Duration::from_secs(1);

/// A node's connection to the other nodes through Redis pub/sub.
pub struct RedisBus {
    shared: Arc<Shared>,
}

struct Shared {
    addr: String,
    channel: String,
    client: Option<Client>,
    outbox: Outbox,
    reports: Reports,
    metrics: BusMetrics,
    options: Options,
    node: OnceLock<Arc<dyn Node>>,
}

impl RedisBus {
    /// A bus on the Redis at `addr` (`HOST:PORT`), channel `channel`. Connects in the
    /// background once [`Bus::subscribe`] is called.
    pub fn new(addr: &str, channel: &str, metrics: BusMetrics, options: Options) -> RedisBus {
        let client = Client::open(format!("redis://{addr}/")).ok();
        let shared = Shared {
            addr: addr.into(),
            channel: channel.into(),
            client,
            outbox: Outbox::default(),
            reports: Reports::default(),
            metrics,
            options,
            node: OnceLock::new(),
        };
        RedisBus { shared: Arc::new(shared) }
    }
}

impl Bus for RedisBus {
    fn name(&self) -> &'static str {
        "redis"
    }

    /// Queues the message for the publishing thread; never waits for Redis.
    fn publish(&self, message: &Message) -> Result<(), BusError> {
        self.shared.outbox.push(message.clone());
        Ok(())
    }

    /// Queues the report for the publishing thread, on the rooms' channel.
    fn publish_presence(&self, line: &[u8]) {
        self.shared.reports.push(line);
        self.shared.outbox.wake();
    }

    fn subscribe(&self, node: Arc<dyn Node>) -> Result<(), BusError> {
        self.shared.node.set(node).map_err(|_| BusError::AlreadySubscribed)?;
        if self.shared.client.is_none() {
            return Err(BusError::Url(format!("redis://{}", self.shared.addr)));
        }
        let (publisher, subscriber) = (Arc::clone(&self.shared), Arc::clone(&self.shared));
        thread::Builder::new().name("c10k-redis-pub".into()).spawn(move || publisher.publish_forever())?;
        thread::Builder::new().name("c10k-redis-sub".into()).spawn(move || subscriber.subscribe_forever())?;
        Ok(())
    }
}

impl Shared {
    fn node(&self) -> &Arc<dyn Node> {
        self.node.get().expect("the threads start after subscribe sets the node")
    }

    fn connection(&self) -> Result<Connection, redis::RedisError> {
        let client = self.client.as_ref().expect("checked in subscribe");
        let connection = client.get_connection_with_timeout(TIMEOUT)?;
        connection.set_write_timeout(Some(TIMEOUT))?;
        connection.set_read_timeout(Some(TIMEOUT))?;
        Ok(connection)
    }

    /// The publishing thread: sends what is queued, one pipeline per batch; on failure
    /// puts it back (coalesced) and reconnects after a back-off. Its failures are logged
    /// at debug: the subscriber's [`Outage`] speaks for the bus.
    fn publish_forever(&self) {
        let mut connection: Option<Connection> = None;
        let mut failures = 0u32;
        loop {
            let batch = self.outbox.take(Duration::from_secs(1));
            let reports = self.reports.take();
            if batch.is_empty() && reports.is_empty() {
                continue;
            }
            if connection.is_none() {
                match self.connection() {
                    Ok(c) => connection = Some(c),
                    Err(e) => {
                        debug!("redis: cannot connect to publish: {e}");
                        self.outbox.put_back(batch);
                        failures += 1;
                        thread::sleep(backoff(failures)); // back-off between attempts
                        continue;
                    }
                }
            }
            let mut pipe = redis::pipe();
            for message in &batch {
                pipe.cmd("PUBLISH").arg(&self.channel).arg(trimmed(&wire::encode(message))).ignore();
            }
            // Reports that fail are not put back: the next heartbeat repeats them.
            for report in &reports {
                pipe.cmd("PUBLISH").arg(&self.channel).arg(report).ignore();
            }
            let conn = connection.as_mut().expect("connected above");
            match pipe.query::<()>(conn) {
                Ok(()) => {
                    failures = 0;
                    self.metrics.published.inc_by(batch.len() as u64);
                }
                Err(e) => {
                    debug!("redis: publishing {} messages failed: {e}; kept for the next connection", batch.len());
                    self.outbox.put_back(batch);
                    connection = None;
                    failures += 1;
                    thread::sleep(backoff(failures)); // back-off between attempts
                }
            }
        }
    }

    /// The subscribing thread: (re)subscribes, catches up from the store and announces this
    /// node's heads after each (re)connection, then delivers what arrives.
    fn subscribe_forever(&self) {
        let mut outage = Outage::new("redis", &self.addr, self.metrics.clone());
        loop {
            if let Err(e) = self.subscribed(&mut outage) {
                outage.failed(&e);
                thread::sleep(outage.backoff()); // back-off between attempts
            }
        }
    }

    /// One subscribed connection, until it fails.
    fn subscribed(&self, outage: &mut Outage) -> Result<(), redis::RedisError> {
        let mut connection = self.connection()?;
        connection.set_read_timeout(Some(QUIET))?;
        let mut pubsub = connection.as_pubsub();
        pubsub.subscribe(&self.channel)?;
        outage.connected();
        self.caught_up();
        let mut swept = Instant::now();
        loop {
            match pubsub.get_message() {
                Ok(message) => match message.get_payload_bytes() {
                    [b'P', b' ', report @ ..] => self.node().presence(report),
                    payload => match wire::decode(payload) {
                        Ok(message) => self.node().deliver(message),
                        Err(e) => warn!("redis: {e}"),
                    },
                },
                Err(e) if e.is_timeout() => {
                    pubsub.set_read_timeout(Some(TIMEOUT))?;
                    let pong: redis::RedisResult<String> = pubsub.ping();
                    pubsub.set_read_timeout(Some(QUIET))?;
                    pong?;
                }
                Err(e) => return Err(e),
            }
            if let Some(every) = self.options.resync_every {
                if swept.elapsed() >= every {
                    swept = Instant::now();
                    self.catch_up();
                }
            }
        }
    }

    /// After a (re)subscription: what the store has that the hub lacks, then this node's
    /// newest messages for the others.
    fn caught_up(&self) {
        self.catch_up();
        let heads = self.node().heads();
        if !heads.is_empty() {
            self.outbox.put_back(heads);
        }
    }

    fn catch_up(&self) {
        if let Err(e) = self.node().catch_up() {
            warn!("redis: cannot catch up from the store: {e}; trying again at the next sweep or message");
        }
    }
}

/// The line without its `\n` (a pub/sub payload is framed already).
fn trimmed(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}
