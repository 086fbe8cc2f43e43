//! The worker's end of the local relay: writes the messages it stored and waits until the
//! other workers have them; reads the ones the master forwards and acknowledges each (see
//! the crate docs for the protocol).

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use c10k_core::store::Message;
use tracing::{debug, warn};

use crate::{wire, Bus, BusError, Node};

/// How long a publish may wait for the master to make room for its line. The master
/// reads all the time, so this only bites when it is wedged.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a publish waits for every other worker to have the message. Past it the
/// poster is answered anyway (and a warning logged): a wedged worker must not stop the
/// chat, it only loses read-your-writes until it catches up.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker's end of the socket pair the master made for it before forking.
#[derive(Debug)]
pub struct LocalRelay {
    writer: Arc<Mutex<Writer>>,
    reader: Mutex<Option<UnixStream>>,
    /// Sequence numbers of this worker's messages not yet `done`.
    pending: Arc<(Mutex<HashSet<u64>>, Condvar)>,
}

#[derive(Debug)]
struct Writer {
    stream: UnixStream,
    /// Message lines written so far: the sequence number of the last (the master counts
    /// them the same way, and answers `done SEQ`).
    seq: u64,
}

impl LocalRelay {
    /// Wraps the worker's end of the pair (blocking mode).
    pub fn new(stream: UnixStream) -> io::Result<LocalRelay> {
        stream.set_nonblocking(false)?;
        let reader = stream.try_clone()?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(LocalRelay {
            writer: Arc::new(Mutex::new(Writer { stream, seq: 0 })),
            reader: Mutex::new(Some(reader)),
            pending: Arc::default(),
        })
    }

    /// Tells the master this worker has loaded its history and is about to serve.
    pub fn announce_ready(&self) -> io::Result<()> {
        lock(&self.writer).stream.write_all(b"ready\n")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus for LocalRelay {
    fn name(&self) -> &'static str {
        "local"
    }

    /// Sends the message to the master, then waits (up to [`DELIVERY_TIMEOUT`]) until every
    /// other worker has published it: a poster answered after this can read its message
    /// back from any worker. Without [`Bus::subscribe`] first nobody reads the `done`, so
    /// it does not wait.
    fn publish(&self, message: &Message) -> Result<(), BusError> {
        let line = wire::encode(message);
        let seq = {
            // One lock per line, so lines from several offload threads never interleave
            // and their sequence numbers follow the order on the wire.
            let mut writer = lock(&self.writer);
            writer.seq += 1;
            let seq = writer.seq;
            lock(&self.pending.0).insert(seq);
            if let Err(e) = writer.stream.write_all(&line) {
                lock(&self.pending.0).remove(&seq);
                return Err(e.into());
            }
            seq
        };
        if lock(&self.reader).is_some() {
            lock(&self.pending.0).remove(&seq);
            return Ok(());
        }
        let (set, delivered) = &*self.pending;
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        let mut waiting = lock(set);
        while waiting.contains(&seq) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                waiting.remove(&seq);
                warn!(room = %message.room, id = %message.id, "relay: not every worker had this message after {DELIVERY_TIMEOUT:?}; answering the poster anyway");
                return Ok(());
            }
            waiting = delivered.wait_timeout(waiting, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(())
    }

    /// Sends a presence line to the master, which copies it to the other workers. A line
    /// that cannot be written at once is dropped (the next heartbeat repeats it).
    fn publish_presence(&self, line: &[u8]) {
        if let Err(e) = lock(&self.writer).stream.write_all(line) {
            debug!("relay: a presence report was not sent: {e}");
        }
    }

    /// Starts the relay thread: it publishes each forwarded message through `node`,
    /// then acknowledges it, and wakes the publishes whose message every worker has.
    fn subscribe(&self, node: Arc<dyn Node>) -> Result<(), BusError> {
        let reader = lock(&self.reader).take().ok_or(BusError::AlreadySubscribed)?;
        let (writer, pending) = (Arc::clone(&self.writer), Arc::clone(&self.pending));
        std::thread::Builder::new().name("c10k-relay".into()).spawn(move || {
            for line in BufReader::new(reader).split(b'\n') {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        warn!("relay: {e}; no more messages from other workers");
                        break;
                    }
                };
                if let Some(seq) = line.strip_prefix(b"done ") {
                    match std::str::from_utf8(seq).ok().and_then(|s| s.parse::<u64>().ok()) {
                        Some(seq) => {
                            lock(&pending.0).remove(&seq);
                            pending.1.notify_all();
                        }
                        None => warn!("relay: a malformed `done` line"),
                    }
                    continue;
                }
                if let Some(report) = line.strip_prefix(b"P ") {
                    // Presence is not acknowledged: nobody waits for it.
                    node.presence(report);
                    continue;
                }
                match wire::decode(&line) {
                    Ok(message) => node.deliver(message),
                    Err(e) => warn!("{e}"),
                }
                // Acknowledged even when malformed: the master counts one ack per line.
                if let Err(e) = lock(&writer).stream.write_all(b"ack\n") {
                    warn!("relay: cannot acknowledge to the master: {e}");
                }
            }
            // The master closed its end: it is exiting, and so will this worker. Nobody
            // will say `done` any more: release the waiting publishes.
            debug!("relay: the master closed the relay");
            lock(&pending.0).clear();
            pending.1.notify_all();
        })?;
        Ok(())
    }
}
