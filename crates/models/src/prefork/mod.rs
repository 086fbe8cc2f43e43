//! `prefork`: a master process forks `--workers N` processes that share the listening
//! socket; each serves one connection at a time (Apache 1's prefork MPM).
//! Where it blocks: a worker blocks in `accept(2)`, then in its one connection's reads and
//! waits, long-polls included, so N workers serve N clients at once and the rest queue.
//! Cost: a process per concurrent client (its own copy of the history, a store connection).
//! Hazard: long-lived clients (long-poll, SSE, WebSocket) hold a whole worker each;
//! `--workers` must exceed them, or new connections wait in the listen backlog.
//!
//! The same master runs `--workers N` for every other model ("mix processes and
//! threads"): each worker process then runs that model (threads, a pool, tokio) on the
//! shared socket. Master and worker are separate files, as in nginx's
//! `ngx_process_cycle.c`:
//!
//! - `master.rs` binds nothing and serves nothing: it forks the workers while it is still
//!   single-threaded, reaps them (SIGCHLD), starts a replacement for one that dies (with a
//!   back-off when they die in a loop), relays SIGTERM/SIGINT (stop) to them, replaces
//!   them all on SIGHUP, relays chat messages between them (`c10k_bus::Switchboard`), and
//!   exits with status 0 once they have all exited.
//! - `worker.rs` is what runs in the child right after `fork`: it arranges to die with the
//!   master, and serves (for `prefork`, the blocking accept loop below).
//!
//! **The accept herd.** All workers block in `accept(2)` on the same socket. Linux puts
//! blocked accepters on the socket's wait queue as *exclusive* waiters, so one incoming
//! connection wakes exactly one of them: no thundering herd, and no accept lock is needed
//! (Apache 1 needed one, `AcceptMutex`, because its children sat in `select(2)` over
//! several sockets). The other models wait for the socket with `poll(2)`/`epoll` instead
//! and accept without blocking: there every waiting process may be woken for one
//! connection, one wins the `accept`, and the others get `EAGAIN` and wait again. That
//! costs a few wasted wake-ups per connection with a handful of workers, which is why
//! `--workers` is meant to be about the number of cores, not hundreds.
//! (`EPOLLEXCLUSIVE` or `SO_REUSEPORT` would remove it; neither is used yet.)
//!
//! **Stopping.** A prefork worker cannot be woken out of a blocking `accept`, so when it
//! is told to stop it exits at once (`_exit(0)`), closing the one connection it may be
//! serving, as the other models' processes drop their connections when they return.
//! Clients resume with `after` / `Last-Event-ID` and lose nothing.
//!
//! **Several processes, one chat.** Each worker has its own hub. A message stored by one
//! is relayed by the master to the others (see `c10k_bus`), and each worker fills any gap
//! from the store, so a subscriber on any worker sees every message once, in order. The
//! poster is answered once every worker has the message (at most 2 s later), so it can
//! read it back from any of them.
//! Responses carry `X-C10k-Worker: PID` so that clients and tests can tell who served them.

mod master;
mod worker;

use std::io;
use std::net::TcpListener;

pub use master::{run_master, WorkerMain};

use crate::{Context, Model};

/// Workers `prefork` starts when `--workers` is not given.
pub const DEFAULT_WORKERS: usize = 8;

/// The `prefork` model: what each worker process runs.
#[derive(Debug, Default)]
pub struct PreforkModel;

impl PreforkModel {
    /// The prefork worker's serving loop.
    pub fn new() -> PreforkModel {
        PreforkModel
    }
}

impl Model for PreforkModel {
    fn name(&self) -> &'static str {
        "prefork"
    }

    /// Serves one connection at a time until told to stop, then exits the process.
    fn serve(&self, listener: TcpListener, context: Context) -> io::Result<()> {
        worker::serve(listener, context)
    }

    fn forks(&self) -> bool {
        true
    }
}
