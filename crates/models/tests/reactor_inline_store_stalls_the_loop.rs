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

use std::thread;
use std::time::Duration;

use c10k_models::event::PollerKind;
use c10k_models::reactor::ReactorModel;
use c10k_models::{DbMode, Model};
use support::{completion_order, metric, post_request, send, HookedStore, InProcess};

fn reactor() -> Box<dyn Model + Send> {
    Box::new(ReactorModel::new(PollerKind::Epoll, None))
}

#[test]
fn with_db_mode_offload_an_unrelated_request_is_answered_while_a_slow_store_call_runs() {
    assert_eq!(completion_order(reactor(), DbMode::Offload, support::READ_TIMEOUT), ["healthz", "post"]);
}

#[test]
fn with_db_mode_inline_an_unrelated_request_waits_until_the_slow_store_call_is_done() {
    assert_eq!(completion_order(reactor(), DbMode::Inline, Duration::from_secs(1)), ["post", "healthz"]);
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
