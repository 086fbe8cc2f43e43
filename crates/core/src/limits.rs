//! The limits the README lists under "Flags" (request head and headers, target, body, head
//! deadline, idle keep-alive, ...), in one place, all configurable.

use std::time::Duration;

/// Every bound the server enforces on its peers. `Limits::default()` gives the documented
/// defaults; the binary exposes each one as a flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes; beyond it: 431.
    pub max_head_bytes: usize,
    /// Longest single header field line (name, colon, value) in bytes; beyond it: 431.
    pub max_field_bytes: usize,
    /// Most header fields in one request; beyond it: 431.
    pub max_headers: usize,
    /// Longest request target in bytes; beyond it: 414.
    pub max_target_bytes: usize,
    /// Largest request body (after de-chunking) in bytes; beyond it: 413.
    pub max_body_bytes: usize,
    /// The whole request, head and body, must arrive within this time of its first byte;
    /// else 408 (slowloris, or a body that stops short).
    pub head_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// A long-poll with nothing to send answers after this (`{}` on the Tornado route).
    pub longpoll_wait: Duration,
    /// A streaming subscriber (SSE, WebSocket) may have at most this many bytes written
    /// but not yet accepted by its socket; beyond that it is disconnected with a reason.
    pub max_outgoing_bytes: usize,
    /// Most open connections per process; the next one gets 503 and is closed.
    pub max_connections: usize,
    /// The whole wait of a post, from its request to its commit (`--db-post-timeout`):
    /// past it the post is not stored and gets 503 with `Retry-After`.
    pub post_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // nginx's large_client_header_buffers (4 x 8k): a field up to 8 KiB, a head up to
            // 32 KiB.
            max_head_bytes: 32 * 1024,
            max_field_bytes: 8 * 1024,
            max_headers: 100,
            max_target_bytes: 8 * 1024,
            max_body_bytes: 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            longpoll_wait: Duration::from_secs(30),
            max_outgoing_bytes: 1024 * 1024,
            // The machine's hard limit is 20,000 files per process: keep headroom for the
            // listener, the store, the wake-up fd and the logs.
            max_connections: 19_000,
            post_timeout: Duration::from_secs(10),
        }
    }
}
