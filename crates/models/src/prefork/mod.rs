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
//! several sockets). The other models wait for a socket with `poll(2)`/`epoll` and accept
//! without blocking: on a shared socket every waiting process would be woken for one
//! connection, one would win the `accept` and the others get `EAGAIN`, which is why they
//! do not share one (next paragraph).
//!
//! **One listener per worker, for every model but prefork.** With one shared listener the
//! kernel gives each connection to whichever process wins the race to `accept`, and the
//! winners are uneven: under a burst, one busy worker reached its `--max-connections` cap
//! and answered 503 while the others had room (the bench's 100,000-subscriber run held
//! 99,290). So for `--workers N` the caller binds N listeners to the same address with
//! `SO_REUSEPORT` (one per worker slot, as nginx's `listen ... reuseport`): the kernel
//! spreads connections over them by a hash of the peer's address and port, evenly and
//! with no herd at all. The cost is that a connection is bound to its worker when it
//! arrives: if that worker is busy or restarting, it waits even when another is idle.
//! The master keeps every listener open, so a dead worker's queued connections wait for
//! its replacement (which takes over the slot) instead of being reset. `prefork` keeps
//! one shared listener: a worker there serves one connection at a time, and a queue per
//! worker would strand clients behind a long-poll while other workers sit idle.
//! Caveat of `SO_REUSEPORT`: another process of the same user may bind the same port and
//! take a share of the connections.
//!
//! **Stopping.** SIGTERM to the master is a drain: the master closes its copies of the
//! listeners and relays SIGTERM to the workers; each drains its connections (every model:
//! see `Connection::handle_shutdown`) and exits, by its `--drain-timeout` at the latest; the
//! master kills any still running a few seconds after that. A prefork worker cannot be woken
//! out of a blocking `accept`: one waiting there exits at once (it holds no connection), one
//! serving drains its connection first (`worker::serve` explains the hand-over).
//! Clients resume with `after` / `Last-Event-ID` and lose nothing.
//!
//! **Several processes, one chat.** Each worker has its own hub. A message stored by one
//! is relayed by the master to the others (see `c10k_bus`), and each worker fills any gap
//! from the store, so a subscriber on any worker sees every message once, in order. The
//! poster is answered once every worker has the message (at most 2 s later), so it can
//! read it back from any of them.
//! Responses carry `X-C10k-Worker: PID` so that clients and tests can tell who served them.

mod backlog;
mod master;
mod worker;

use std::io;
use std::net::TcpListener;
use std::time::Duration;

pub use master::{run_master, WorkerMain};

use crate::{Context, Model};

/// Workers `prefork` starts when `--workers` is not given. Apache's prefork forks up to
/// 256 (`MaxRequestWorkers`) as load demands; these are forked at start and stay, so fewer:
/// about ten browser tabs at once (each holds a stream, and briefly a page and a post
/// connection), a few MiB of private memory each.
pub const DEFAULT_WORKERS: usize = 32;

/// How long `prefork` keeps an idle keep-alive connection when `--idle-timeout` is not
/// given: Apache's `KeepAliveTimeout` (5 s), not nginx's 75 s, because here an idle
/// connection holds a whole worker process that no other client can use meanwhile.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// A connection's own thread blocks in the driver, as it blocks in `read`.
    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Ok(crate::NativeDb::OwnThread)
    }

    /// Serves one connection at a time until told to stop, then exits the process.
    fn serve(&self, listener: TcpListener, context: Context) -> io::Result<()> {
        worker::serve(listener, context)
    }

    fn forks(&self) -> bool {
        true
    }
}
