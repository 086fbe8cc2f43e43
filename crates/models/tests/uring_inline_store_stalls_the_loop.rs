//! The proactor is one thread too, and the talk's claim holds for it as for the reactor:
//! a store call run on the loop thread (`--db-mode inline`) holds every connection, while
//! one run on the offload pool, its result delivered through the ring's doorbell, holds
//! none; and the watchdog names the callback that held the loop.

mod support;

use std::thread;
use std::time::Duration;

use c10k_models::uring::UringModel;
use c10k_models::{DbMode, Model};
use support::{completion_order, metric, post_request, send, HookedStore, InProcess};

fn uring(watchdog: Option<Duration>) -> Box<dyn Model + Send> {
    Box::new(UringModel::new(watchdog))
}

#[test]
fn with_db_mode_offload_an_unrelated_request_is_answered_while_a_slow_store_call_runs() {
    assert_eq!(completion_order(uring(None), DbMode::Offload, support::READ_TIMEOUT), ["healthz", "post"]);
}

#[test]
fn with_db_mode_inline_an_unrelated_request_waits_until_the_slow_store_call_is_done() {
    assert_eq!(completion_order(uring(None), DbMode::Inline, Duration::from_secs(1)), ["post", "healthz"]);
}

#[test]
fn the_watchdog_names_and_counts_a_store_call_that_held_the_loop() {
    let store = HookedStore::shared(|| thread::sleep(Duration::from_millis(200)));
    let server = InProcess::serve(uring(Some(Duration::from_millis(50))), DbMode::Inline, store);
    assert_eq!(send(server.port, &post_request("slow")).status, 201);

    assert!(metric(server.port, "c10k_slow_callbacks_total") >= 1, "log:\n{}", server.log.lines().join("\n"));
    let log = server.log.lines();
    let report = log
        .iter()
        .find(|l| l.contains("slow callback"))
        .unwrap_or_else(|| panic!("the watchdog must log the slow callback; the log was:\n{}", log.join("\n")));
    assert!(report.starts_with("WARN"), "{report}");
    assert!(
        report.contains("POST /api/rooms/main/messages") && report.contains("inline"),
        "the report must say what the callback was doing: {report}"
    );
}
