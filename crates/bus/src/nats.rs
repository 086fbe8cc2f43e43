//! [`NatsBus`]: nodes share rooms through one core NATS subject (see the crate docs for
//! why core NATS and not JetStream, and for what covers what it loses).
//!
//! One thread runs a small tokio runtime with the async-nats client, which reconnects by
//! itself (with this crate's back-off) and resubscribes; its events drive the catch-up. A
//! second thread delivers to the node, because delivering may read the store and must not
//! stall the client's runtime. Publishing waits for nothing: messages queued while the
//! connection is down stay queued (coalesced) until it is up.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{ConnectOptions, Event};
use c10k_core::metrics::BusMetrics;
use c10k_core::store::Message;
use futures_util::StreamExt;
use tokio::sync::mpsc as tokio_mpsc;
use tracing::warn;

use crate::outage::{backoff, Outage, Outbox, Reports};
use crate::{wire, Bus, BusError, Node, Options};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the client pings the server, to notice one that stopped answering.
const PING_EVERY: Duration = Duration::from_secs(1);

/// A node's connection to the other nodes through core NATS.
pub struct NatsBus {
    shared: Arc<Shared>,
}

struct Shared {
    addr: String,
    subject: String,
    outbox: Outbox,
    reports: Reports,
    metrics: BusMetrics,
    options: Options,
    node: OnceLock<Arc<dyn Node>>,
    /// Wakes the client's loop when something is queued.
    wake: OnceLock<tokio_mpsc::UnboundedSender<()>>,
}

/// What the delivering thread does next.
enum Work {
    Deliver(Message),
    CatchUp,
    /// Catch up, then queue this node's heads for the others (after a (re)connection).
    Reconnected,
}

impl NatsBus {
    /// A bus on the NATS server at `addr` (`HOST:PORT`), subject `subject`. Connects in
    /// the background once [`Bus::subscribe`] is called.
    pub fn new(addr: &str, subject: &str, metrics: BusMetrics, options: Options) -> NatsBus {
        let shared = Shared {
            addr: addr.into(),
            subject: subject.into(),
            outbox: Outbox::default(),
            reports: Reports::default(),
            metrics,
            options,
            node: OnceLock::new(),
            wake: OnceLock::new(),
        };
        NatsBus { shared: Arc::new(shared) }
    }
}

impl Bus for NatsBus {
    fn name(&self) -> &'static str {
        "nats"
    }

    /// Queues the message for the client's thread; never waits for NATS.
    fn publish(&self, message: &Message) -> Result<(), BusError> {
        self.shared.outbox.push(message.clone());
        if let Some(wake) = self.shared.wake.get() {
            let _ = wake.send(());
        }
        Ok(())
    }

    /// Queues the report for the client's thread, on the rooms' subject.
    fn publish_presence(&self, line: &[u8]) {
        self.shared.reports.push(line);
        if let Some(wake) = self.shared.wake.get() {
            let _ = wake.send(());
        }
    }

    fn subscribe(&self, node: Arc<dyn Node>) -> Result<(), BusError> {
        self.shared.node.set(node).map_err(|_| BusError::AlreadySubscribed)?;
        let (wake_tx, wake_rx) = tokio_mpsc::unbounded_channel();
        let _ = self.shared.wake.set(wake_tx);
        let (work_tx, work_rx) = mpsc::channel();
        let delivering = Arc::clone(&self.shared);
        thread::Builder::new().name("c10k-nats-deliver".into()).spawn(move || delivering.deliver_forever(work_rx))?;
        let client = Arc::clone(&self.shared);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        thread::Builder::new()
            .name("c10k-nats".into())
            .spawn(move || runtime.block_on(client.run(work_tx, wake_rx)))?;
        Ok(())
    }
}

impl Shared {
    fn node(&self) -> &Arc<dyn Node> {
        self.node.get().expect("the threads start after subscribe sets the node")
    }

    fn deliver_forever(&self, work: mpsc::Receiver<Work>) {
        for item in work {
            let node = self.node();
            match item {
                Work::Deliver(message) => node.deliver(message),
                Work::CatchUp | Work::Reconnected => {
                    if let Err(e) = node.catch_up() {
                        warn!("nats: cannot catch up from the store: {e}; trying again at the next sweep or message");
                    }
                    if matches!(item, Work::Reconnected) {
                        let heads = node.heads();
                        if !heads.is_empty() {
                            self.outbox.put_back(heads);
                            if let Some(wake) = self.wake.get() {
                                let _ = wake.send(());
                            }
                        }
                    }
                }
            }
        }
    }

    /// The client's loop: connection events, messages received, messages to publish, and
    /// the periodic sweep.
    async fn run(self: Arc<Self>, work: mpsc::Sender<Work>, mut wake: tokio_mpsc::UnboundedReceiver<()>) {
        let (events_tx, mut events) = tokio_mpsc::unbounded_channel();
        let options = ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(CONNECT_TIMEOUT)
            .ping_interval(PING_EVERY)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| backoff(attempts as u32))
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    let _ = events_tx.send(event);
                }
            });
        let mut outage = Outage::new("nats", &self.addr, self.metrics.clone());
        let client = match options.connect(self.addr.as_str()).await {
            Ok(client) => client,
            Err(e) => {
                warn!("nats: {e}; check --bus (nats://HOST:PORT); this node shares no rooms with others");
                return;
            }
        };
        let mut subscriber = match client.subscribe(self.subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                warn!("nats: cannot subscribe to {}: {e}; this node shares no rooms with others", self.subject);
                return;
            }
        };
        let sweep_every = self.options.resync_every.unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let mut sweep = tokio::time::interval(sweep_every);
        sweep.tick().await; // the first tick is immediate: the hub was just loaded
        let mut failing_to_publish = false;
        loop {
            tokio::select! {
                Some(event) = events.recv() => match event {
                    Event::Connected => {
                        // The client resubscribes before anything queued after this flush,
                        // so once the server answers it, nothing published from now on is
                        // missed: then read the store for what was.
                        if client.flush().await.is_ok() {
                            outage.connected();
                            let _ = work.send(Work::Reconnected);
                        }
                        self.publish_queued(&client, &mut failing_to_publish).await;
                    }
                    Event::Disconnected => outage.failed(&"connection lost"),
                    Event::SlowConsumer(_) => {
                        // The client dropped messages it could not hand us in time.
                        let _ = work.send(Work::CatchUp);
                    }
                    Event::ClientError(e) if outage_is_open(&client) => outage.failed(&e),
                    _ => {}
                },
                Some(message) = subscriber.next() => match &message.payload[..] {
                    [b'P', b' ', report @ ..] => self.node().presence(report),
                    payload => match wire::decode(payload) {
                        Ok(message) => {
                            let _ = work.send(Work::Deliver(message));
                        }
                        Err(e) => warn!("nats: {e}"),
                    },
                },
                Some(()) = wake.recv() => self.publish_queued(&client, &mut failing_to_publish).await,
                _ = sweep.tick(), if self.options.resync_every.is_some() => {
                    let _ = work.send(Work::CatchUp);
                }
            }
        }
    }

    /// Publishes everything queued while connected; leaves it queued otherwise.
    async fn publish_queued(&self, client: &async_nats::Client, failing: &mut bool) {
        if client.connection_state() != State::Connected {
            return;
        }
        let batch = self.outbox.take(Duration::ZERO);
        let mut sent = 0;
        for (at, message) in batch.iter().enumerate() {
            let line = wire::encode(message);
            let payload = line.strip_suffix(b"\n").unwrap_or(&line).to_vec();
            if let Err(e) = client.publish(self.subject.clone(), payload.into()).await {
                if !*failing {
                    warn!("nats: publishing failed: {e}; kept for the next connection");
                }
                *failing = true;
                self.outbox.put_back(batch[at..].to_vec());
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            *failing = false;
            self.metrics.published.inc_by(sent);
        }
        // Reports that fail are dropped: the next heartbeat repeats them.
        for report in self.reports.take() {
            if client.publish(self.subject.clone(), report.into()).await.is_err() {
                break;
            }
        }
    }
}

/// Whether the client is not connected now (a client error then belongs to an outage).
fn outage_is_open(client: &async_nats::Client) -> bool {
    client.connection_state() != State::Connected
}
