//! The `green` model's hazard, as tests: scheduling is cooperative, so a coroutine that
//! does not park wedges every other one ("if one program gets wedged, then the whole
//! system is wedged"), and the watchdog says which coroutine it was and what it served.
//! And the cure for the store: `--db-mode offload` runs the blocking call on the pool and
//! resumes the coroutine through its waker, so the loop goes on meanwhile.
//!
//! The server runs in a thread of this process, so that a test can hand it a store that
//! is slow (a sleep before each append) or held at a gate the test opens. Order is decided
//! by what has arrived when, never by how long anything took.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use c10k_core::chat::{App, Config};
use c10k_core::store::{Message, MessageId, NewMessage, RoomId, Store, StoreError};
use c10k_models::green::GreenModel;
use c10k_models::event::PollerKind;
use c10k_models::{Context, DbMode, Model, Shutdown};
use c10k_store::{OffloadPool, SqliteStore};

/// How long any read waits for the server before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn an_inline_store_call_that_holds_the_loop_is_logged_with_its_route_and_counted() {
    // A store call that takes at least 200 ms, inline, under a 50 ms watchdog.
    let store = HookedStore::shared(|| thread::sleep(Duration::from_millis(200)));
    let server = Green::start(PollerKind::Poll, DbMode::Inline, Some(Duration::from_millis(50)), store);
    assert_eq!(send(server.port, &post_request("slow")).status, 201);

    assert!(metric(server.port, "c10k_slow_callbacks_total") >= 1, "not counted; log:\n{}", server.log());
    let report = server.slow_report();
    assert!(
        report.contains("coroutine") && report.contains("POST /api/rooms/main/messages") && report.contains("inline"),
        "the report must name the coroutine, its route and the inline store call: {report}"
    );
    let took: u64 = field(&report, "took_ms").parse().unwrap();
    assert!(took >= 200, "the report must say how long it held the loop: {report}");
}

#[test]
fn a_cpu_bound_handler_is_named_by_the_watchdog() {
    // The largest cost is tens of milliseconds of work even optimised; the threshold is 1 ms.
    let server = Green::start(PollerKind::Epoll, DbMode::Offload, Some(Duration::from_millis(1)), memory_store());
    let reply = send(server.port, &get_request("/cpu?cost=10000000"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(metric(server.port, "c10k_slow_callbacks_total") >= 1, "not counted; log:\n{}", server.log());
    let report = server.slow_report();
    assert!(report.contains("GET /cpu"), "the report must name the route: {report}");
}

#[test]
fn without_the_watchdog_nothing_is_counted() {
    let store = HookedStore::shared(|| thread::sleep(Duration::from_millis(100)));
    let server = Green::start(PollerKind::Epoll, DbMode::Inline, None, store);
    assert_eq!(send(server.port, &post_request("slow")).status, 201);
    assert_eq!(metric(server.port, "c10k_slow_callbacks_total"), 0);
}

#[test]
fn with_db_mode_offload_an_unrelated_request_is_answered_while_a_slow_store_call_runs() {
    assert_eq!(completion_order(DbMode::Offload, READ_TIMEOUT), ["healthz", "post"]);
}

#[test]
fn with_db_mode_inline_an_unrelated_request_waits_until_the_slow_store_call_is_done() {
    assert_eq!(completion_order(DbMode::Inline, Duration::from_secs(1)), ["post", "healthz"]);
}

/// Holds a post in the store, sends `GET /healthz` meanwhile, and tells which of the two
/// responses arrived first. `window` is how long healthz is given to arrive while the post
/// is held: long where it must arrive, short where it must not (a correct server passes
/// whatever the machine's speed; only a wrong one is caught by the window).
fn completion_order(db_mode: DbMode, window: Duration) -> [&'static str; 2] {
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let gate = Arc::new(Gate::default());
    let held = Arc::clone(&gate);
    let store = HookedStore::shared(move || {
        let _ = started_tx.lock().unwrap().send(());
        held.pass(READ_TIMEOUT);
    });
    let server = Green::start(PollerKind::Epoll, db_mode, None, store);

    let mut post = connect(server.port);
    post.write_all(post_request("held at the gate").as_bytes()).unwrap();
    started_rx.recv_timeout(READ_TIMEOUT).expect("the post never reached the store");

    let mut health = connect(server.port);
    health.write_all(get_request("/healthz").as_bytes()).unwrap();
    let order = if readable(&[&health], window) == [0] {
        ["healthz", "post"]
    } else {
        gate.open();
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

// ---- The server under test ----------------------------------------------------------------

/// A `green` model serving in a thread of this process; stopped and joined when dropped.
struct Green {
    port: u16,
    log: LogCapture,
    shutdown: Shutdown,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Green {
    fn start(poller: PollerKind, db_mode: DbMode, watchdog: Option<Duration>, store: Arc<dyn Store>) -> Green {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let shutdown = Shutdown::new();
        let context = Context {
            app: Arc::new(App::new(Config::with_seed([7; 32]))),
            store,
            offload: Arc::new(OffloadPool::new(2, 64)),
            db_mode,
            native: None,
            shutdown: shutdown.clone(),
        };
        let log = LogCapture::default();
        let subscriber = log.clone();
        let thread = thread::Builder::new()
            .name("green-under-test".into())
            .spawn(move || {
                tracing::subscriber::with_default(subscriber, || {
                    GreenModel::new(poller, watchdog, 256 * 1024).serve(listener, context)
                })
            })
            .unwrap();
        Green { port, log, shutdown, thread: Some(thread) }
    }

    fn log(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    /// The watchdog's first report (a WARN line), or a failure showing the whole log.
    fn slow_report(&self) -> String {
        let lines = self.log.lines.lock().unwrap();
        let report = lines.iter().find(|l| l.contains("slow callback")).cloned();
        let report = report.unwrap_or_else(|| panic!("the watchdog logged nothing; the log was:\n{}", lines.join("\n")));
        assert!(report.starts_with("WARN"), "{report}");
        report
    }
}

impl Drop for Green {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !thread::panicking() {
                result.expect("the green thread panicked").expect("the green model failed");
            }
        }
    }
}

fn memory_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_memory().unwrap())
}

/// An in-memory SQLite store that calls `hook` before every append.
struct HookedStore {
    inner: SqliteStore,
    hook: Box<dyn Fn() + Send + Sync>,
}

impl HookedStore {
    fn shared(hook: impl Fn() + Send + Sync + 'static) -> Arc<dyn Store> {
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

/// Holds store calls until the test opens it (or `limit` passes, so a failing test ends).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn pass(&self, limit: Duration) {
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

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

// ---- A tiny HTTP/1.1 client ---------------------------------------------------------------

struct Response {
    status: u16,
    body: String,
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

fn post_request(body: &str) -> String {
    let json = format!(r#"{{"body":"{body}","from":"test"}}"#);
    format!(
        "POST /api/rooms/main/messages HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
}

fn read_response(stream: &mut TcpStream) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| panic!("reading a response head: {e}"));
        assert!(n > 0, "closed before a full head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no Content-Length: {head:?}"));
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).unwrap_or_else(|e| panic!("reading a response body: {e}"));
        assert!(n > 0, "closed in the middle of a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    Response { status, body: String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned() }
}

fn send(port: u16, request: &str) -> Response {
    let mut stream = connect(port);
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut stream)
}

/// The value of counter `name` at `/metrics`.
fn metric(port: u16, name: &str) -> u64 {
    let response = send(port, &get_request("/metrics"));
    assert_eq!(response.status, 200);
    response
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", response.body))
}

/// Waits up to `timeout` for any of `streams` to be readable; the indices of those that are.
fn readable(streams: &[&TcpStream], timeout: Duration) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> =
        streams.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `fds` is a live array of fds.len() pollfd entries over sockets we own.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
    fds.iter().enumerate().filter(|(_, f)| f.revents != 0).map(|(i, _)| i).collect()
}

/// The value of `name=` in a captured log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("no {name} in {line}")) + name.len() + 2;
    line[start..].split_whitespace().next().unwrap_or("")
}

// ---- The server thread's log --------------------------------------------------------------

/// Every log event of the server thread, one line each: level, then ` field=value`s.
#[derive(Clone, Default)]
struct LogCapture {
    lines: Arc<Mutex<Vec<String>>>,
    next_span: Arc<AtomicU64>,
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
