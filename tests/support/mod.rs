//! What every black-box test needs to talk to a real `c10k` process: the [`Server`] guard,
//! a raw HTTP/1.1 client, the XSRF dance of the Tornado routes, a Server-Sent Events
//! reader and a WebSocket client. Everything here reads with a timeout, so a broken
//! server fails a test with a message instead of hanging it.
//!
//! Shared by several test crates, each of which uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod bus;
pub mod chat;
pub mod http;
pub mod nginx;
pub mod proxy;
pub mod server;
pub mod sse;
pub mod ws;
pub mod ws_frames;
pub mod xsrf;

pub use chat::*;
pub use http::{get, Conn, Request, Response};
pub use server::Server;
pub use sse::{Event, EventStream};
pub use ws::Ws;
pub use xsrf::Xsrf;

pub use serde_json::{json, Value};

/// How a model is chosen on the command line, e.g. `&["--model", "async"]`, plus any
/// extra arguments that model takes (`&["--model", "reactor", "--poller", "epoll"]`).
pub type Model = &'static [&'static str];

/// The worker processes of a model line (`--workers N`), if it has more than one.
pub fn workers_of(model: Model) -> Option<usize> {
    let at = model.iter().position(|a| *a == "--workers")?;
    let workers: usize = model.get(at + 1)?.parse().ok()?;
    (workers > 1).then_some(workers)
}

/// Whether the model runs as several processes (`--workers N`, `prefork`), each with its
/// own memory, where what is kept per process (idempotency keys, a shortcut documented
/// in docs/protocol.md) does not hold; if so, says the test is skipped.
pub fn skipped_with_several_processes(model: Model, what: &str) -> bool {
    let several = model.iter().any(|a| *a == "--workers" || *a == "prefork");
    if several {
        eprintln!("skipped: {what} is kept per process, and {model:?} runs several");
    }
    several
}
