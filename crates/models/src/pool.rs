//! `pool`: a fixed pool of worker threads fed by a bounded queue of accepted connections
//! (Apache 2's worker MPM).
//!
//! The accept loop puts each connection on a queue of `--queue` places; `--threads`
//! workers take one each and serve it to the end with the same blocking code as
//! `threads`. Where it blocks: a worker blocks for as long as its connection lasts,
//! including a whole long-poll; when every worker is held, new connections wait in the
//! queue, and when the queue is full they get 503 at once (never a silent hang).
//! Cost: fixed (N stacks). Hazard: long-lived connections (long-poll, SSE, WebSocket)
//! exhaust the pool quickly: N workers serve N waiting clients and nobody else.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{debug, warn};

use crate::acceptor::{accept_loop, refuse};
use crate::blocking::{serve_connection, Giant};
use crate::common::ConnectionSlot;
use crate::thread_wait::ThreadWait;
use crate::{Context, Model};

/// The `pool` model.
#[derive(Debug)]
pub struct PoolModel {
    threads: usize,
    queue: usize,
    stack_size: usize,
    giant: Giant,
}

impl PoolModel {
    /// `threads` workers (0: 64), `queue` waiting connections at most.
    pub fn new(threads: usize, queue: usize, stack_size: usize, giant_lock: bool) -> PoolModel {
        let threads = if threads == 0 { 64 } else { threads };
        PoolModel { threads, queue, stack_size, giant: Giant::new(giant_lock) }
    }
}

/// Accepted connections waiting for a worker, with when each was accepted (its first
/// request's head deadline counts from then: `Connection::queued_since`).
type Queue = Arc<Mutex<Receiver<(TcpStream, ConnectionSlot, Instant)>>>;

impl Model for PoolModel {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn flags(&self) -> &'static [crate::Flag] {
        &[crate::Flag::Threads, crate::Flag::Queue, crate::Flag::StackSize, crate::Flag::GiantLock]
    }

    /// A connection's own thread blocks in the driver, as it blocks in `read`.
    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Ok(crate::NativeDb::OwnThread)
    }

    fn serve(&self, listener: TcpListener, context: Context) -> io::Result<()> {
        let (sender, receiver) = sync_channel::<(TcpStream, ConnectionSlot, Instant)>(self.queue);
        let receiver: Queue = Arc::new(Mutex::new(receiver));
        for i in 0..self.threads {
            let receiver = Arc::clone(&receiver);
            let context = context.clone();
            let giant = self.giant.clone();
            std::thread::Builder::new()
                .name(format!("c10k-pool-{i}"))
                .stack_size(self.stack_size)
                .spawn(move || worker(receiver, context, giant))?;
        }
        accept_loop(listener, &context, |stream, slot| match sender.try_send((stream, slot, Instant::now())) {
            Ok(()) => {}
            Err(TrySendError::Full((stream, _slot, _)) | TrySendError::Disconnected((stream, _slot, _))) => {
                warn!("every worker is busy and the queue is full; answering 503");
                refuse(stream, &context.app.busy("every worker is busy; try again shortly"));
            }
        })
    }
}

fn worker(queue: Queue, context: Context, giant: Giant) {
    let wait = match ThreadWait::new() {
        Ok(w) => w,
        Err(e) => {
            warn!("pool worker cannot start: {e}");
            return;
        }
    };
    loop {
        // The lock is held only while taking one connection off the queue.
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((stream, slot, accepted)) = next else { return };
        if let Err(e) = serve_connection(stream, Some(accepted), &wait, &context, &giant) {
            debug!("connection ended: {e}");
        }
        drop(slot);
    }
}
