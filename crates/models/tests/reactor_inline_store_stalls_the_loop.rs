//! The talk's claim, as tests: "if you block while talking to a database, you block *all*
//! the requests, not just yours" — and the cure, Twisted's "putting the MySQL connection
//! in its own thread". And the watchdog that names the callback that blocked.
//!
//! A store whose append is held at a gate (opened by the test) stands in for a slow
//! database. While a post is held there, an unrelated `GET /healthz` is sent:
//! - `--db-mode offload`: the healthz answer arrives while the post is still held;
//! - `--db-mode inline`: the loop itself is held, so healthz is answered only after the post.
//!
//! Order is decided by what has arrived when, never by how long anything took.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use c10k_models::event::PollerKind;
use c10k_models::DbMode;
use support::{connect, get_request, metric, post_request, read_response, send, Gate, HookedStore, InProcess};

/// How long the gate holds a store call at most (only a failing test gets there).
const GATE_LIMIT: Duration = Duration::from_secs(30);

/// Waits up to `timeout` for any of `streams` to be readable; the indices of those that are.
fn readable(streams: &[&TcpStream], timeout: Duration) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> =
        streams.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `fds` is a live array of fds.len() pollfd entries over sockets we own.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
    fds.iter().enumerate().filter(|(_, f)| f.revents != 0).map(|(i, _)| i).collect()
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
        held.pass(GATE_LIMIT);
    });
    let server = InProcess::start(PollerKind::Epoll, db_mode, None, store);

    let mut post = connect(server.port);
    post.write_all(post_request("held at the gate").as_bytes()).unwrap();
    started_rx.recv_timeout(support::READ_TIMEOUT).expect("the post never reached the store");

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
        match readable(&[&post, &health], support::READ_TIMEOUT).as_slice() {
            [1] => ["healthz", "post"],
            [] => panic!("neither response arrived within {:?}", support::READ_TIMEOUT),
            _ => ["post", "healthz"],
        }
    };
    gate.open();
    assert_eq!(read_response(&mut health).status, 200);
    assert_eq!(read_response(&mut post).status, 201);
    order
}

#[test]
fn with_db_mode_offload_an_unrelated_request_is_answered_while_a_slow_store_call_runs() {
    assert_eq!(completion_order(DbMode::Offload, support::READ_TIMEOUT), ["healthz", "post"]);
}

#[test]
fn with_db_mode_inline_an_unrelated_request_waits_until_the_slow_store_call_is_done() {
    assert_eq!(completion_order(DbMode::Inline, Duration::from_secs(1)), ["post", "healthz"]);
}

#[test]
fn the_watchdog_names_and_counts_a_store_call_that_held_the_loop() {
    // A store call that takes at least 200 ms, inline, under a 50 ms watchdog.
    let store = HookedStore::shared(|| thread::sleep(Duration::from_millis(200)));
    let server = InProcess::start(PollerKind::Poll, DbMode::Inline, Some(Duration::from_millis(50)), store);
    assert_eq!(send(server.port, &post_request("slow")).status, 201);

    assert!(
        metric(server.port, "c10k_slow_callbacks_total") >= 1,
        "the watchdog must count the slow callback in c10k_slow_callbacks_total; log:\n{}",
        server.log.lines().join("\n")
    );
    let log = server.log.lines();
    let report = log.iter().find(|l| l.contains("slow callback")).unwrap_or_else(|| {
        panic!("the watchdog must log the slow callback; the log was:\n{}", log.join("\n"))
    });
    assert!(report.starts_with("WARN"), "{report}");
    assert!(
        report.contains("POST /api/rooms/main/messages") && report.contains("inline"),
        "the report must say what the callback was doing: {report}"
    );
}

#[test]
fn without_the_watchdog_nothing_is_counted() {
    let store = HookedStore::shared(|| thread::sleep(Duration::from_millis(100)));
    let server = InProcess::start(PollerKind::Epoll, DbMode::Inline, None, store);
    assert_eq!(send(server.port, &post_request("slow")).status, 201);
    assert_eq!(metric(server.port, "c10k_slow_callbacks_total"), 0);
}
