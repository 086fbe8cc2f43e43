//! The idle holder: K keep-alive connections, each having sent one `GET /plaintext` and
//! read its answer, then left idle. It is what an idle browser tab costs a server in its
//! simplest form, and unlike the load generator's subscribers it works against any HTTP
//! server (nginx and Apache serve no chat routes).
//!
//! Two uses: the `idle` suite ([`Holder::probe`] sends one more request on every held
//! connection, and the ones that answer are the ones the server really held), and the
//! `wakeup` suite (the connections sit idle in the server's poller while one more
//! connection is measured). A server that stops accepting (Apache prefork past its
//! processes: the rest wait in the listen backlog) is detected by unanswered requests
//! and connects that time out; after 64 connect timeouts the holder stops opening.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Connections per source address (below the ~28,000 ephemeral ports of one pair).
const PER_SOURCE: usize = 20_000;
/// Connections being opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect timeouts after which the server is taken as no longer accepting.
const GIVE_UP_AFTER: usize = 64;

/// Held connections and what happened to the others.
pub struct Holder {
    // Before the runtime: fields drop in order, and the sockets go first.
    conns: Vec<TcpStream>,
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    /// Connections asked for.
    pub asked: usize,
    /// Errors by class.
    pub errors: BTreeMap<String, u64>,
    /// Seconds the opening took.
    pub open_secs: f64,
}

fn request(addr: SocketAddr) -> Vec<u8> {
    format!("GET /plaintext HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes()
}

/// Reads one HTTP response (head and Content-Length body); returns its status.
async fn read_response(stream: &mut TcpStream) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("a malformed status line")?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed mid-body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed by the server".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends one request and reads its answer before `deadline`.
async fn exchange(stream: &mut TcpStream, req: &[u8], deadline: Instant) -> Result<(), String> {
    let work = async {
        stream.write_all(req).await.map_err(|e| e.to_string())?;
        match read_response(stream).await? {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    };
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(r) => r,
        Err(_) => Err("no answer in time".into()),
    }
}

fn source(i: usize, count: usize) -> Option<IpAddr> {
    (count > PER_SOURCE).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, (1 + i / PER_SOURCE).min(254) as u8)))
}

impl Holder {
    /// Opens `count` connections to `addr` and has each exchange one request, within
    /// `within`. The ones that did are held.
    pub fn open(addr: SocketAddr, count: usize, within: Duration) -> Result<Holder, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the holder's runtime: {e}"))?;
        let started = Instant::now();
        let deadline = started + within;
        let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
        let timeouts = Arc::new(AtomicUsize::new(0));
        let conns = runtime.block_on(async {
            let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
            let req: Arc<[u8]> = request(addr).into();
            let mut tasks = Vec::with_capacity(count);
            for i in 0..count {
                let (gate, errors, timeouts, req) = (
                    Arc::clone(&gate),
                    Arc::clone(&errors),
                    Arc::clone(&timeouts),
                    Arc::clone(&req),
                );
                let note =
                    move |e: String| *errors.lock().unwrap_or_else(|p| p.into_inner()).entry(e).or_insert(0) += 1;
                tasks.push(tokio::spawn(async move {
                    let permit = gate.acquire_owned().await.ok()?;
                    if timeouts.load(Ordering::Relaxed) >= GIVE_UP_AFTER {
                        note("not opened: the server stopped accepting".into());
                        return None;
                    }
                    let socket = TcpSocket::new_v4().ok()?;
                    if let Some(src) = source(i, count) {
                        if let Err(e) = socket.bind(SocketAddr::new(src, 0)) {
                            note(format!("bind: {e}"));
                            return None;
                        }
                    }
                    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            note(format!("connect: {}", e.kind()));
                            return None;
                        }
                        Err(_) => {
                            timeouts.fetch_add(1, Ordering::Relaxed);
                            note("connect: timed out".into());
                            return None;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    // The permit covers the connect only: answers are waited for in parallel.
                    drop(permit);
                    match exchange(&mut stream, &req, deadline).await {
                        Ok(()) => Some(stream),
                        Err(e) => {
                            note(format!("first request: {e}"));
                            None
                        }
                    }
                }));
            }
            let mut conns = Vec::with_capacity(count);
            for t in tasks {
                if let Ok(Some(s)) = t.await {
                    conns.push(s);
                }
            }
            conns
        });
        let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Holder {
            runtime,
            addr,
            conns,
            asked: count,
            errors,
            open_secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Connections held (they answered their request).
    pub fn held(&self) -> usize {
        self.conns.len()
    }

    /// One more request on every held connection; returns how many answered within `within`.
    pub fn probe(&mut self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let req: Arc<[u8]> = request(self.addr).into();
        let conns = std::mem::take(&mut self.conns);
        let (answered, errors) = self.runtime.block_on(async {
            let mut tasks = Vec::with_capacity(conns.len());
            for mut s in conns {
                let req = Arc::clone(&req);
                tasks.push(tokio::spawn(async move {
                    exchange(&mut s, &req, deadline).await.map(|_| s)
                }));
            }
            let mut answered = Vec::new();
            let mut errors = BTreeMap::new();
            for t in tasks {
                match t.await {
                    Ok(Ok(s)) => answered.push(s),
                    Ok(Err(e)) => *errors.entry(format!("probe: {e}")).or_insert(0) += 1,
                    Err(_) => *errors.entry("probe: task failed".to_string()).or_insert(0) += 1,
                }
            }
            (answered, errors)
        });
        for (k, v) in errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        let n = answered.len();
        self.conns = answered;
        n
    }
}
