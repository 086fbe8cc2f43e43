//! What the event-loop models' black-box tests share: a model served in this process on an
//! ephemeral loopback port (so a test can hand it a store of its own making), a store
//! that runs a hook before each append (slow or gated on purpose), a capture of the
//! server thread's log, and a tiny HTTP/1.1 client. Every read has a timeout, so a broken
//! server fails a test instead of hanging it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use c10k_core::chat::{App, Config};
use c10k_core::store::{Message, MessageId, NewMessage, RoomId, Store, StoreError};
use c10k_models::event::PollerKind;
use c10k_models::reactor::ReactorModel;
use c10k_models::{Context, DbMode, Model, Shutdown};
use c10k_store::{OffloadPool, SqliteStore};

/// How long any read waits for the server before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A model (the `reactor` unless said otherwise) serving in a thread of this process.
/// Stops (and joins) when dropped.
pub struct InProcess {
    pub port: u16,
    pub log: LogCapture,
    shutdown: Shutdown,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    /// Starts the reactor on `poller` with `db_mode`, a watchdog of `watchdog`, and `store`.
    pub fn start(poller: PollerKind, db_mode: DbMode, watchdog: Option<Duration>, store: Arc<dyn Store>) -> InProcess {
        InProcess::serve(Box::new(ReactorModel::new(poller, watchdog)), db_mode, store)
    }

    /// Starts `model` with `db_mode` and `store`.
    pub fn serve(model: Box<dyn Model + Send>, db_mode: DbMode, store: Arc<dyn Store>) -> InProcess {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let app = Arc::new(App::new(Config::with_seed([7; 32])));
        let shutdown = Shutdown::new();
        let context = Context {
            app,
            store,
            offload: Arc::new(OffloadPool::new(2, 64)),
            db_mode,
            native: None,
            shutdown: shutdown.clone(),
        };
        let log = LogCapture::default();
        let subscriber = log.clone();
        let thread = thread::Builder::new()
            .name(format!("{}-under-test", model.name()))
            .spawn(move || tracing::subscriber::with_default(subscriber, || model.serve(listener, context)))
            .unwrap();
        InProcess { port, log, shutdown, thread: Some(thread) }
    }

    /// Starts the reactor on a fresh in-memory SQLite store.
    pub fn start_plain(poller: PollerKind) -> InProcess {
        InProcess::start(poller, DbMode::Offload, None, Arc::new(SqliteStore::open_memory().unwrap()))
    }
}

/// Waits up to `timeout` for any of `streams` to be readable; the indices of those that are.
pub fn readable(streams: &[&TcpStream], timeout: Duration) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> =
        streams.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `fds` is a live array of fds.len() pollfd entries over sockets we own.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
    fds.iter().enumerate().filter(|(_, f)| f.revents != 0).map(|(i, _)| i).collect()
}

/// How long the gate holds a store call at most (only a failing test gets there).
const GATE_LIMIT: Duration = Duration::from_secs(30);

/// Serves `model` with `db_mode`, holds a post in the store, sends `GET /healthz`
/// meanwhile, and tells which of the two responses arrived first. `window` is how long
/// healthz is given to arrive while the post is held: long where it must arrive, short
/// where it must not (a correct server passes whatever the machine's speed; only a wrong
/// one is caught by the window).
pub fn completion_order(model: Box<dyn Model + Send>, db_mode: DbMode, window: Duration) -> [&'static str; 2] {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let gate = Arc::new(Gate::default());
    let held = Arc::clone(&gate);
    let store = HookedStore::shared(move || {
        let _ = started_tx.lock().unwrap().send(());
        held.pass(GATE_LIMIT);
    });
    let server = InProcess::serve(model, db_mode, store);

    let mut post = connect(server.port);
    post.write_all(post_request("held at the gate").as_bytes()).unwrap();
    started_rx.recv_timeout(READ_TIMEOUT).expect("the post never reached the store");

    // The post is in flight, held in the store. Now an unrelated request:
    let mut health = connect(server.port);
    health.write_all(get_request("/healthz").as_bytes()).unwrap();
    let order = if readable(&[&health], window) == [0] {
        // Answered while the post was still held.
        ["healthz", "post"]
    } else {
        gate.open();
        // Whichever arrives first; both at once means the post was written first (the
        // loop answers healthz only after it has read it, on a later callback).
        match readable(&[&post, &health], READ_TIMEOUT).as_slice() {
            [1] => ["healthz", "post"],
            [] => panic!("neither response arrived within {READ_TIMEOUT:?}"),
            _ => ["post", "healthz"],
        }
    };
    gate.open();
    assert_eq!(read_response(&mut health).status, 200);
    assert_eq!(read_response(&mut post).status, 201);
    order
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !thread::panicking() {
                result.expect("the model's thread panicked").expect("the model failed");
            }
        }
    }
}

/// A store that calls `hook` before every append (to make it slow, or to hold it until
/// the test lets it go), then appends to an in-memory SQLite database.
pub struct HookedStore {
    inner: SqliteStore,
    hook: Box<dyn Fn() + Send + Sync>,
}

impl HookedStore {
    pub fn shared(hook: impl Fn() + Send + Sync + 'static) -> Arc<dyn Store> {
        Arc::new(HookedStore { inner: SqliteStore::open_memory().unwrap(), hook: Box::new(hook) })
    }
}

impl Store for HookedStore {
    fn append(&self, room: &RoomId, message: &NewMessage) -> Result<c10k_core::store::Appended, StoreError> {
        (self.hook)();
        self.inner.append(room, message)
    }

    fn after(&self, room: &RoomId, after: MessageId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.inner.after(room, after, limit)
    }

    fn recent(&self, room: &RoomId, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.inner.recent(room, limit)
    }

    fn before(&self, room: &RoomId, before: Option<MessageId>, limit: usize) -> Result<Vec<Message>, StoreError> {
        self.inner.before(room, before, limit)
    }

    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        self.inner.rooms()
    }
}

/// A gate a store call can be held at until the test opens it.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    /// Waits until opened, or `limit` passes (so that a failing test still ends).
    pub fn pass(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut open = self.open.lock().unwrap();
        while !*open {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            open = self.changed.wait_timeout(open, left).unwrap().0;
        }
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Opens a connection with read and write timeouts.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// `GET path`, one request on a new connection.
pub fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// `POST /api/rooms/main/messages` with `body` as the message.
pub fn post_request(body: &str) -> String {
    let json = format!(r#"{{"body":"{body}","from":"test"}}"#);
    format!(
        "POST /api/rooms/main/messages HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
}

/// Reads one response (head, then `Content-Length` bytes of body).
pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| panic!("reading a response head: {e}; got {buf:?}"));
        assert!(n > 0, "the server closed the connection before a full head; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).unwrap_or_else(|e| panic!("reading a response body: {e}"));
        assert!(n > 0, "the server closed the connection in the middle of a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Response { status, head, body }
}

/// Sends `request` on a new connection and reads the response.
pub fn send(port: u16, request: &str) -> Response {
    let mut stream = connect(port);
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut stream)
}

/// The value of the counter `name` (e.g. `c10k_slow_callbacks_total`) at `/metrics`.
pub fn metric(port: u16, name: &str) -> u64 {
    let response = send(port, &get_request("/metrics"));
    assert_eq!(response.status, 200);
    response
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", response.body))
}

/// Every log event of the server thread, one line each (level, message, fields).
#[derive(Clone, Default)]
pub struct LogCapture {
    lines: Arc<Mutex<Vec<String>>>,
    next_span: Arc<AtomicU64>,
}

impl LogCapture {
    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!("{}", event.metadata().level()));
        event.record(&mut fields);
        self.lines.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
