//! The sans-IO core of c10k: everything the chat server decides, nothing it waits for.
//!
//! This crate opens no socket, starts no thread, reads no clock and does no file I/O
//! (after quinn-proto and h11). Time comes in as an argument; randomness comes from a
//! seed the caller supplies; storage is reached through the [`store::Store`] trait, whose
//! implementations live in the `c10k-store` crate and are run by the concurrency model,
//! on an offload pool or inline. A test (`tests/sans_io.rs`) keeps this true.
//!
//! What lives here:
//! - [`http`]: the HTTP/1.1 codec on httparse, with body framing, pipelining and limits;
//! - [`hub`]: rooms, bounded history, per-room ids, cursors, and the one wake-up
//!   mechanism (a [`std::task::Waker`]) through which every model waits;
//! - [`chat`]: the routes (Tornado-compatible and native), XSRF, JSON shapes, the page;
//! - [`conn`]: one connection around the application, as a state machine (deadlines,
//!   keep-alive, long-poll waits, SSE, WebSocket framing, output caps, the close sequence);
//! - [`ledger`]: the bank of `/api/bank` and its `--locking` strategies (the talk's
//!   "canonical race condition");
//! - [`gaps`]: publishing a message that arrived before its predecessors (from a bus);
//! - [`limits`], [`metrics`], [`store`]: the shared vocabulary.
//!
//! Each concurrency model (in `c10k-models`) owns the sockets and moves bytes, time and
//! wake-ups between them and a [`conn::Connection`]; none of them holds protocol logic.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod chat;
pub mod conn;
pub mod gaps;
pub mod http;
pub mod hub;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod store;
