//! `plaintext`: keep-alive `GET /plaintext` (`Hello, World!`) on a fixed number of
//! connections, back to back: the raw request rate of a model, and its latency.
//!
//! With `pipeline` N above 1, each connection writes N requests in one write, then reads
//! the N answers, and repeats (HTTP/1.1 pipelining, TechEmpower's plaintext method). One
//! request in flight costs the client a write and a read per request, and with client and
//! server on one core each the client runs out first; a batch of 16 costs it one write and
//! a few reads, so the server's own cost per request sets the rate. Every answer is
//! checked (status 200, body `Hello, World!`); a short or malformed one breaks the
//! connection's framing, so the rest of its batch counts as failed and the connection is
//! opened again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::client::http::{get, Conn, Reply};
use crate::client::ClientError;
use crate::progress::Progress;
use crate::report::{RequestStats, SharedHistogram};

use super::requests::{connect, gather, plaintext_loops, run_loops, Connect};
use super::{Ctx, Findings, PlaintextConfig};

/// What every c10k model and every benchmark peer answers to `GET /plaintext`.
const BODY: &[u8] = b"Hello, World!";

pub(crate) async fn run(ctx: &Ctx, config: &PlaintextConfig) -> Findings {
    let answered = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        ctx.config.progress,
        "plaintext",
        Arc::clone(&answered),
        "req",
        config.requests,
        ctx.config.duration,
    );
    let began = Instant::now();
    let stats = if config.pipeline <= 1 {
        run_loops(ctx, plaintext_loops(ctx, config.connections, config.requests), answered).await
    } else {
        run_pipelined(ctx, config, answered).await
    };
    progress.finish();
    Findings { measured: began.elapsed(), requests: vec![stats], ..Findings::default() }
}

/// One batch's worth of requests, written at once.
#[derive(Debug)]
struct Batch {
    /// `depth` copies of the request, back to back.
    bytes: Vec<u8>,
    /// The length of one request.
    each: usize,
    depth: usize,
}

impl Batch {
    /// The first `n` requests of the batch (a count-bounded run's last batch is short).
    fn first(&self, n: usize) -> &[u8] {
        &self.bytes[..n * self.each]
    }
}

/// The pipelined loops: like [`run_loops`]'s closed loop, a batch at a time.
async fn run_pipelined(ctx: &Ctx, config: &PlaintextConfig, answered: Arc<AtomicU64>) -> RequestStats {
    let request = get("/plaintext", &ctx.host);
    let batch = Arc::new(Batch { bytes: request.repeat(config.pipeline), each: request.len(), depth: config.pipeline });
    let latency = SharedHistogram::new();
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(config.connections);
    for _ in 0..config.connections {
        let ctx = ctx.clone();
        let batch = Arc::clone(&batch);
        let latency = latency.clone();
        let issued = Arc::clone(&issued);
        let answered = Arc::clone(&answered);
        let limit = config.requests;
        tasks.push(tokio::spawn(
            async move { pipelined_connection(&ctx, &batch, limit, latency, issued, answered).await },
        ));
    }
    gather("plaintext", config.connections, start, &latency, tasks).await
}

/// One connection's batches until the measured phase ends, the count is reached or the
/// hard deadline passes; returns its error count (one per request that failed).
async fn pipelined_connection(
    ctx: &Ctx,
    batch: &Batch,
    limit: Option<u64>,
    latency: SharedHistogram,
    issued: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
) -> u64 {
    let mut recorder = latency.recorder();
    let mut conn: Option<Conn> = None;
    let mut errors = 0;
    // Each pass writes a batch or fails to connect: bounded by the measured phase.
    while Instant::now() < ctx.stop_at {
        if conn.is_none() {
            match connect(ctx, &mut errors).await {
                Connect::Open(c) => conn = Some(c),
                Connect::Retry => continue,
                Connect::Stop => break,
            }
        }
        // Claim this batch's requests from the run's count, as the one-in-flight loops do
        // one request at a time.
        let n = match limit {
            None => batch.depth,
            Some(limit) => {
                let before = issued.fetch_add(batch.depth as u64, Ordering::Relaxed);
                if before >= limit {
                    break;
                }
                (limit - before).min(batch.depth as u64) as usize
            }
        };
        let Some(c) = conn.as_mut() else { continue };
        let began = Instant::now();
        let mut seen = 0;
        let outcome = ctx
            .bounded(async {
                Ok(exchange(c, batch.first(n), n, |reply| {
                    seen += 1;
                    match check(&reply) {
                        Ok(()) => {
                            recorder.record(began.elapsed().as_micros() as u64);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(kind) => {
                            ctx.errors.count(kind);
                            errors += 1;
                        }
                    }
                })
                .await)
            })
            .await;
        let broken = match outcome {
            Ok(Exchange::Complete { close }) => {
                if close {
                    conn = None;
                }
                continue;
            }
            Ok(Exchange::Broken { error }) => error,
            // The hard deadline, mid-batch.
            Err(error) => error,
        };
        let unanswered = (n - seen) as u64;
        ctx.errors.count_n(format!("plaintext: {}", broken.kind()), unanswered);
        errors += unanswered;
        conn = None;
        if matches!(broken, ClientError::Timeout) {
            break;
        }
    }
    errors
}

/// How a batch's exchange ended.
#[derive(Debug)]
enum Exchange {
    /// Every request was answered; `close`: the last answer said `Connection: close`.
    Complete { close: bool },
    /// The connection broke before every request was answered (short or malformed
    /// answer, closed, reset): the ones not handed on are lost.
    Broken { error: ClientError },
}

/// Writes `requests` (`n` of them) in one write and reads `n` answers, handing each to
/// `each` as it arrives (several may come in one read; one may span several).
async fn exchange(conn: &mut Conn, requests: &[u8], n: usize, mut each: impl FnMut(Reply)) -> Exchange {
    if let Err(error) = conn.send(requests).await {
        return Exchange::Broken { error };
    }
    for got in 1..=n {
        match conn.reply().await {
            Ok(reply) => {
                let close = reply.close;
                each(reply);
                if close {
                    // The server closes after this answer: the rest of the batch is lost.
                    return if got == n {
                        Exchange::Complete { close: true }
                    } else {
                        Exchange::Broken { error: ClientError::Closed }
                    };
                }
            }
            Err(error) => return Exchange::Broken { error },
        }
    }
    Exchange::Complete { close: false }
}

/// Whether an answer is the one `GET /plaintext` must get; if not, the error class.
fn check(reply: &Reply) -> Result<(), String> {
    if reply.status != 200 {
        Err(format!("plaintext: status {}", reply.status))
    } else if reply.body != BODY {
        // The class names the body, cut short: a server that answers wrongly answers the
        // same wrong thing, so the classes stay few.
        let shown: String = String::from_utf8_lossy(&reply.body).chars().take(40).collect();
        Err(format!("plaintext: body {shown:?}, not \"Hello, World!\""))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 13\r\n\r\nHello, World!";

    /// A one-connection server that reads `requests` request heads, then writes `answer`
    /// in pieces of `piece` bytes and closes.
    async fn server(requests: usize, answer: Vec<u8>, piece: usize) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < requests {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending its batch");
                got.extend_from_slice(&buf[..n]);
            }
            for chunk in answer.chunks(piece) {
                socket.write_all(chunk).await.unwrap();
                socket.flush().await.unwrap();
            }
        });
        addr
    }

    fn batch(depth: usize) -> Batch {
        let request = get("/plaintext", "t");
        Batch { bytes: request.repeat(depth), each: request.len(), depth }
    }

    #[tokio::test]
    async fn a_batch_of_sixteen_gets_sixteen_checked_answers_however_they_are_cut() {
        for piece in [1, 7, 64, HELLO.len(), 16 * HELLO.len()] {
            let addr = server(16, HELLO.repeat(16), piece).await;
            let mut conn = Conn::open(addr, None).await.unwrap();
            let mut answers = Vec::new();
            let batch = batch(16);
            let end = exchange(&mut conn, batch.first(16), 16, |r| answers.push(check(&r))).await;
            assert!(matches!(end, Exchange::Complete { close: false }), "pieces of {piece}: {end:?}");
            assert_eq!(answers, vec![Ok(()); 16], "pieces of {piece}");
        }
    }

    #[tokio::test]
    async fn a_short_answer_breaks_the_batch_and_says_how_many_came() {
        let mut answer = HELLO.repeat(5);
        answer.extend_from_slice(&HELLO[..30]);
        let addr = server(8, answer, 100).await;
        let mut conn = Conn::open(addr, None).await.unwrap();
        let mut answered = 0;
        let batch = batch(8);
        let end = exchange(&mut conn, batch.first(8), 8, |r| {
            assert_eq!(check(&r), Ok(()));
            answered += 1;
        })
        .await;
        assert!(matches!(end, Exchange::Broken { error: ClientError::Closed }), "{end:?}");
        assert_eq!(answered, 5, "the five whole answers are handed on, the cut one is not");
    }

    #[tokio::test]
    async fn a_malformed_answer_breaks_the_batch() {
        let mut answer = HELLO.repeat(2);
        answer.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n");
        let addr = server(4, answer, 1000).await;
        let mut conn = Conn::open(addr, None).await.unwrap();
        let mut answered = 0;
        let batch = batch(4);
        let end = exchange(&mut conn, batch.first(4), 4, |_| answered += 1).await;
        assert!(matches!(end, Exchange::Broken { error: ClientError::Protocol(_) }), "{end:?}");
        assert_eq!(answered, 2);
    }

    #[test]
    fn only_status_200_with_hello_world_passes() {
        let reply = |status, body: &[u8]| Reply { status, body: body.to_vec(), close: false };
        assert_eq!(check(&reply(200, b"Hello, World!")), Ok(()));
        assert_eq!(check(&reply(503, b"Hello, World!")), Err("plaintext: status 503".to_string()));
        assert_eq!(check(&reply(200, b"Hello")), Err("plaintext: body \"Hello\", not \"Hello, World!\"".to_string()));
    }

    #[test]
    fn a_short_last_batch_writes_only_its_requests() {
        let b = batch(16);
        assert_eq!(b.first(16).len(), b.bytes.len());
        assert_eq!(b.first(3), &get("/plaintext", "t").repeat(3)[..]);
    }
}
