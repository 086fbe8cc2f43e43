//! Slow and silent clients, the same on every model: a connection that never sends a byte,
//! a head trickled a byte at a time (slowloris), a body that stops short. Each holds the
//! server's resources only until its deadline (`--idle-timeout`, `--head-timeout`, both
//! set to 1 s here), and while it waits everyone else is served.
//!
//! The deadlines are checked from both sides: not before (a deadline that fired at once
//! would also close slow clients "on time") and not long after (an upper bound of several
//! seconds, for a loaded machine: a deadline that never fires is what fails it).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

/// Both deadlines of these tests.
const DEADLINE: Duration = Duration::from_secs(1);
/// How late past its deadline a close may come on a busy machine.
const SLACK: Duration = Duration::from_secs(4);

fn start(model: Model) -> Server {
    Server::start_with_args(model, &["--idle-timeout", "1", "--head-timeout", "1"])
}

/// Asserts that `took`, from the client's last byte (or its connect) to the server's
/// answer or close, is the deadline: not before it, not long after.
fn on_time(what: &str, took: Duration) {
    assert!(took >= DEADLINE - Duration::from_millis(50), "{what}: closed after {took:?}, before its {DEADLINE:?} deadline");
    assert!(took <= DEADLINE + SLACK, "{what}: still open {took:?} after, past its {DEADLINE:?} deadline");
}

/// A connection that never sends a byte is closed without a word at the idle deadline;
/// meanwhile others are answered at once.
pub fn a_connection_that_never_sends_a_byte_is_closed_at_the_idle_deadline(model: Model) {
    let server = start(model);
    let port = server.port();
    let began = Instant::now();
    let mut silent = Conn::open(port);
    get(port, "/healthz").assert_status(200);
    silent.expect_closed("no request at all");
    on_time("a silent connection", began.elapsed());
    get(port, "/healthz").assert_status(200);
}

/// Slowloris: a head sent one byte every 100 ms, which would keep an idle timer that
/// restarts on every byte from ever firing, is answered 408 at the head deadline counted
/// from its first byte, and closed; while three such clients trickle, others are served.
pub fn a_head_trickled_byte_by_byte_is_408_at_the_head_deadline_while_others_are_served(model: Model) {
    let server = start(model);
    let port = server.port();
    let head = b"GET /api/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: slowly, slowly, slowly, slowly, slowly\r\n\r\n";
    let trickled = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(move || {
                    let mut conn = Conn::open(port);
                    let mut writer = conn.stream().try_clone().expect("a second handle on the socket");
                    let answered = std::sync::atomic::AtomicBool::new(false);
                    let began = Instant::now();
                    let answer = std::thread::scope(|trickle| {
                        trickle.spawn(|| {
                            for byte in head {
                                // Pacing the client, not waiting for the server: the
                                // server may answer after any byte, and then it stops.
                                if answered.load(std::sync::atomic::Ordering::SeqCst) || writer.write_all(&[*byte]).is_err() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        });
                        let reply = conn.read_response();
                        let took = began.elapsed();
                        answered.store(true, std::sync::atomic::Ordering::SeqCst);
                        (reply, took)
                    });
                    conn.expect_closed("the 408");
                    answer
                })
            })
            .collect();
        // The trickling clients hold the server's attention for a second: others are still
        // answered meanwhile.
        for _ in 0..5 {
            get(port, "/healthz").assert_status(200);
        }
        clients.into_iter().map(|client| client.join().expect("a trickling client")).collect::<Vec<_>>()
    });
    for (reply, took) in trickled {
        reply.assert_status(408);
        on_time("a trickled head", took);
    }
    get(port, "/healthz").assert_status(200);
}

/// A body that stops short of its `Content-Length` is answered 408 when the request's
/// deadline passes, and closed; nothing of it is stored.
pub fn a_body_that_stops_short_is_408_at_the_deadline_and_not_stored(model: Model) {
    let server = start(model);
    let port = server.port();
    let mut conn = Conn::open(port);
    let body = br#"{"body": "never finished"}"#;
    let head = format!(
        "POST /api/rooms/main/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len() + 10
    );
    let began = Instant::now();
    conn.send(&[head.as_bytes(), body].concat());
    let reply = conn.read_response();
    let took = began.elapsed();
    reply.assert_status(408);
    conn.expect_closed("the 408");
    on_time("a body cut short", took);
    assert_eq!(api_messages(port, "main", "")["last_id"], 0, "nothing of the cut post is stored");
}
