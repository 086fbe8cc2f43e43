//! The offload pool: a few OS threads that run blocking work (store calls) for serving
//! threads that must never block, such as an event loop.
//!
//! This is what the talk describes for Twisted: "putting the MySQL connection in its own
//! thread". The loop submits a job that does the blocking call and then hands the result
//! back (typically through a channel plus the loop's waker); the loop carries on meanwhile.
//!
//! Both ends are bounded. `threads` caps how many blocking calls run at once; `queue` caps
//! how many wait. When the queue is full, [`OffloadPool::submit`] says [`Busy`] at once
//! rather than blocking the loop or growing without limit: the caller sheds load (answers
//! 503) instead of stalling every other connection it serves.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// A unit of blocking work.
pub type Job = Box<dyn FnOnce() + Send>;

/// The pool's queue is full: the job was not accepted (and has been dropped). Shed load,
/// for instance by answering 503 Service Unavailable, and let the client retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the store's offload queue is full; the database is slower than the request rate: answer \
     503 and let the client retry, or start the server with more store threads or a longer queue"
)]
pub struct Busy;

/// A fixed set of threads named `c10k-store-0`, `c10k-store-1`, ... fed by a bounded queue.
///
/// Dropping the pool stops accepting work, lets the threads finish every job already
/// queued, and joins them.
pub struct OffloadPool {
    /// `None` only during drop: dropping the sender is what tells the threads to stop.
    sender: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    queue: usize,
}

impl std::fmt::Debug for OffloadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadPool")
            .field("threads", &self.workers.len())
            .field("queue", &self.queue)
            .finish()
    }
}

impl OffloadPool {
    /// Starts `threads` threads (at least 1) sharing a queue of `queue` waiting jobs (at
    /// least 1; jobs being run do not count).
    ///
    /// # Panics
    /// If the operating system refuses to start a thread, as `std::thread::spawn` does.
    pub fn new(threads: usize, queue: usize) -> OffloadPool {
        let threads = threads.max(1);
        // A zero-capacity sync_channel would only accept a job while a thread happens to be
        // parked in recv(), and report Busy spuriously otherwise; one slot avoids that.
        let queue = queue.max(1);
        let (sender, receiver) = mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = (0..threads)
            .map(|index| {
                let receiver = Arc::clone(&receiver);
                thread::Builder::new()
                    .name(format!("c10k-store-{index}"))
                    .spawn(move || work(&receiver))
                    .unwrap_or_else(|e| {
                        panic!("cannot start store thread c10k-store-{index}: {e}; ask for fewer store threads or raise the process's thread limit (ulimit -u)")
                    })
            })
            .collect();
        OffloadPool {
            sender: Some(sender),
            workers,
            queue,
        }
    }

    /// Queues `job` to run on one of the pool's threads. Never blocks: if `queue` jobs are
    /// already waiting, returns [`Busy`] at once and drops `job`.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let sender = self.sender.as_ref().expect("the sender lives until drop");
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Busy),
            // Every worker is gone, which only happens if one died outside a job (it
            // catches job panics). Refusing is the honest answer.
            Err(TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    /// How many threads run jobs.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// How many jobs may wait for a thread before [`OffloadPool::submit`] reports [`Busy`].
    pub fn queue_capacity(&self) -> usize {
        self.queue
    }
}

/// A worker's life: take a job, run it, repeat until the pool is dropped and the queue is
/// empty (`recv` keeps returning buffered jobs after the sender is gone, so drop drains).
fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for a job, never while running one, so one
        // slow job does not stop the other threads from taking the next.
        let next = receiver
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        let Ok(job) = next else { return };
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(job)) {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_string());
            tracing::error!(
                thread = thread::current().name().unwrap_or("c10k-store"),
                panic = %message,
                "a store job panicked; the thread carries on with the next job"
            );
        }
    }
}

impl Drop for OffloadPool {
    fn drop(&mut self) {
        drop(self.sender.take());
        let me = thread::current().id();
        for worker in self.workers.drain(..) {
            // If a job dropped the last handle to its own pool, we are on one of the pool's
            // threads: joining it would wait forever. It exits by itself after this job.
            if worker.thread().id() == me {
                continue;
            }
            // A worker only ends by panicking outside a job; nothing more to report then.
            let _ = worker.join();
        }
    }
}
