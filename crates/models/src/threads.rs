//! `threads`: one OS thread per connection, blocking I/O (Apache 2's threads, minus the pool).
//!
//! The accept loop spawns a thread for each connection; the thread reads, answers, and
//! for a long-poll parks in `ppoll(2)` on its socket until the hub's signal wakes it
//! (`thread_wait.rs`: one descriptor per connection, the socket).
//! Where it blocks: everywhere, and that is fine, since nobody else runs on the thread.
//! Cost: a stack per connection (`--stack-size`, 256 KiB by default, mostly untouched
//! virtual memory) and a kernel thread; the talk's "you can't have 10,000 threads" is the
//! number of these the machine allows. Hazard: shared state needs locks (`--giant-lock`
//! puts one around everything, to measure what that costs), and a thread burst under
//! load can exhaust memory or the thread limit (new connections then get 503).

use std::io;
use std::net::TcpListener;

use tracing::{debug, warn};

use crate::acceptor::{accept_loop, refuse};
use crate::blocking::{serve_connection, Giant};
use crate::thread_wait::ThreadWait;
use crate::{Context, Model};

/// The `threads` model.
#[derive(Debug)]
pub struct ThreadsModel {
    stack_size: usize,
    giant: Giant,
}

impl ThreadsModel {
    /// Threads with `stack_size` bytes of stack each, optionally under one giant lock.
    pub fn new(stack_size: usize, giant_lock: bool) -> ThreadsModel {
        ThreadsModel { stack_size, giant: Giant::new(giant_lock) }
    }
}

impl Model for ThreadsModel {
    fn name(&self) -> &'static str {
        "threads"
    }

    fn flags(&self) -> &'static [crate::Flag] {
        &[crate::Flag::StackSize, crate::Flag::GiantLock]
    }

    /// A connection's own thread blocks in the driver, as it blocks in `read`.
    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Ok(crate::NativeDb::OwnThread)
    }

    fn serve(&self, listener: TcpListener, context: Context) -> io::Result<()> {
        accept_loop(listener, &context, |stream, slot| {
            let app = std::sync::Arc::clone(&context.app);
            let context = context.clone();
            let giant = self.giant.clone();
            // A second handle, to answer 503 if the thread cannot start (the closure that
            // owns `stream` is dropped with the error).
            let peer = stream.try_clone();
            let spawned = std::thread::Builder::new()
                .name("c10k-conn".into())
                .stack_size(self.stack_size)
                .spawn(move || {
                    let _slot = slot;
                    let result = ThreadWait::new().and_then(|wait| serve_connection(stream, None, &wait, &context, &giant));
                    if let Err(e) = result {
                        debug!("connection ended: {e}");
                    }
                });
            if let Err(e) = spawned {
                warn!("cannot start a thread for a connection: {e}; answering 503");
                if let Ok(peer) = peer {
                    refuse(peer, &app.busy("out of threads; try again shortly"));
                }
            }
        })
    }
}
