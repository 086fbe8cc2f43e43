//! The talk's database claim on the real drivers: "if you block while talking to a
//! database, you block all the requests, not just yours". The database itself is the
//! gate: the test holds the row lock of room `main`'s id counter in a transaction of its
//! own, so the server's next append to `main` waits *in the database* (seen there, in
//! `pg_stat_activity` / `INNODB_TRX`). While it waits, an unrelated `GET /healthz` is sent:
//!
//! - `offload` (Twisted's threads) and `native` (an async driver awaited by the task, or a
//!   green coroutine parked on its own database socket): healthz is answered while the
//!   post still waits;
//! - `inline` on a model with one serving thread: that thread is the one waiting, so
//!   healthz is answered only after the test releases the lock and the post is done.
//!
//! Order is decided by what has arrived when, never by how long anything took: a server
//! that must answer healthz is given the whole read timeout, and one that must not is
//! caught if it answers within the window while the post is held.
//!
//! Runs on scratch databases of the test servers (skipped, and said so, when none is
//! given, except in CI).

mod support;

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use support::*;

/// How long healthz is given while the post is held, where it must NOT arrive.
const STALLED_WINDOW: Duration = Duration::from_secs(1);
/// How long the post may take to reach the database's lock.
const REACH_LOCK: Duration = Duration::from_secs(20);

/// Waits up to `timeout` for any of `streams` to be readable; the indices of those that are.
fn readable(streams: &[&TcpStream], timeout: Duration) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> =
        streams.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `fds` is a live array of fds.len() pollfd entries over sockets we own.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll failed: {}", std::io::Error::last_os_error());
    fds.iter().enumerate().filter(|(_, f)| f.revents != 0).map(|(i, _)| i).collect()
}

fn request(port: u16, raw: &str) -> Conn {
    let mut conn = Conn::open(port);
    conn.send(raw.as_bytes());
    conn
}

/// Which of a held post and an unrelated healthz was answered first.
fn completion_order(model: Model, healthz_must_wait: bool) -> [&'static str; 2] {
    // A database timeout longer than any wait here: the held post must never give up
    // (a stalled server then shows up as the wrong order, not as a 503).
    let server = Server::start_with_args(model, &["--db-timeout", "60"]);
    let port = server.port();
    api_post(port, "main", "the counter row exists now");
    let database = server.database().expect("a --db mysql|postgres model");
    let held = database.hold_room("main");

    let body = r#"{"body":"held in the database","from":"test"}"#;
    let mut post = request(
        port,
        &format!(
            "POST /api/rooms/main/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(database.someone_waits_for_a_lock(REACH_LOCK), "the post never reached the database's lock");

    // The post is in flight, waiting in the database. Now an unrelated request:
    let mut health = request(port, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let window = if healthz_must_wait { STALLED_WINDOW } else { support::http::READ_TIMEOUT };
    let order = if readable(&[health.stream()], window) == [0] {
        held.release();
        ["healthz", "post"]
    } else {
        held.release();
        match readable(&[post.stream(), health.stream()], support::http::READ_TIMEOUT).as_slice() {
            [1] => ["healthz", "post"],
            [] => panic!("neither response arrived within {:?}", support::http::READ_TIMEOUT),
            _ => ["post", "healthz"],
        }
    };
    assert_eq!(health.read_response().status, 200);
    assert_eq!(post.read_response().status, 201);
    order
}

fn not_stalled(model: Model) {
    if !support::server::skipped_without_database(model) {
        assert_eq!(completion_order(model, false), ["healthz", "post"], "{}", model.join(" "));
    }
}

fn stalled(model: Model) {
    if !support::server::skipped_without_database(model) {
        assert_eq!(completion_order(model, true), ["post", "healthz"], "{}", model.join(" "));
    }
}

#[test]
fn postgres_green_native_parks_the_coroutine_not_the_loop() {
    not_stalled(&["--model", "green", "--db", "postgres", "--db-mode", "native"]);
}

#[test]
fn postgres_green_inline_stalls_the_loop() {
    stalled(&["--model", "green", "--db", "postgres", "--db-mode", "inline"]);
}

#[test]
fn postgres_reactor_offload_keeps_serving() {
    not_stalled(&["--model", "reactor", "--db", "postgres"]);
}

#[test]
fn postgres_reactor_inline_stalls_the_loop() {
    stalled(&["--model", "reactor", "--db", "postgres", "--db-mode", "inline"]);
}

#[test]
fn postgres_async_native_on_one_thread_keeps_serving() {
    not_stalled(&["--model", "async", "--threads", "1", "--db", "postgres", "--db-mode", "native"]);
}

#[test]
fn mysql_async_native_on_one_thread_keeps_serving() {
    not_stalled(&["--model", "async", "--threads", "1", "--db", "mysql", "--db-mode", "native"]);
}

#[test]
fn mysql_async_inline_on_one_thread_stalls_it() {
    stalled(&["--model", "async", "--threads", "1", "--db", "mysql", "--db-mode", "inline"]);
}

#[test]
fn mysql_green_offload_keeps_serving() {
    not_stalled(&["--model", "green", "--db", "mysql"]);
}

#[test]
fn mysql_reactor_inline_stalls_the_loop() {
    stalled(&["--model", "reactor", "--db", "mysql", "--db-mode", "inline"]);
}

#[test]
fn mysql_threads_native_blocks_only_its_own_thread() {
    not_stalled(&["--model", "threads", "--db", "mysql", "--db-mode", "native"]);
}
