//! A reconnect storm: 2,000 Server-Sent Events clients of one room resume at once (a node
//! restarted, a proxy reloaded, a network blip), each from its own `Last-Event-ID`. Every
//! one gets exactly what it missed, in order, or the explicit reset when its cursor is
//! older than the history the server holds, and none of that costs a store call: resumes
//! are served from the hub's cache of the newest messages (`c10k_store_calls_total` does
//! not move). The time the storm took is printed, not asserted (bench/ is for speed).
//!
//! 2,000 clients are 2,000 threads and descriptors of this test process and of the
//! server: under the 20,000 per-process limit, one model at a time.

mod support;

use std::sync::Barrier;
use std::time::Instant;

use support::*;

/// Clients in the storm.
const CLIENTS: usize = 2_000;
/// Messages in the room before the storm: more than the 200 the server keeps in memory.
const POSTED: u64 = 300;
/// The oldest id the server's cache still holds (`--history 200`).
const OLDEST_HELD: u64 = POSTED - 200 + 1;

fn storm(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let mut poster = Conn::open(port);
    for i in 1..=POSTED {
        let post = Request::post("/api/rooms/storm/messages").json(&json!({ "body": format!("before the storm {i}") }));
        poster.request(&post).assert_status(201);
    }
    let calls_before = metric_total(&get(port, "/metrics").text(), "c10k_store_calls_total");

    let everyone = Barrier::new(CLIENTS + 1);
    let began = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let everyone = &everyone;
                // Most clients missed the last few messages; one in 20 resumes from a
                // cursor older than the cache (from 0 up).
                let cursor = if i % 20 == 0 { (i / 20) as u64 % OLDEST_HELD } else { POSTED - 1 - (i as u64 % 20) };
                std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn_scoped(scope, move || {
                        let conn = Conn::open(port);
                        everyone.wait();
                        let mut stream = EventStream::open_at(conn, "/api/rooms/storm/events", Some(&cursor.to_string()));
                        let first = if cursor + 1 < OLDEST_HELD {
                            let reset = stream.next_event();
                            assert_eq!(reset.event.as_deref(), Some("reset"), "cursor {cursor} is older than the cache: {reset:?}");
                            OLDEST_HELD
                        } else {
                            cursor + 1
                        };
                        let ids = stream.next_ids((POSTED + 1 - first) as usize);
                        let expected: Vec<u64> = (first..=POSTED).collect();
                        assert_eq!(ids, expected, "the client resuming after {cursor} got what it missed, in order, once");
                    })
                    .expect("a client thread")
            })
            .collect();
        everyone.wait();
        let began = Instant::now();
        for client in clients {
            client.join().expect("a client of the storm");
        }
        began
    });
    eprintln!("{model:?}: {CLIENTS} clients resumed and caught up in {:?}", began.elapsed());

    let calls_after = metric_total(&get(port, "/metrics").text(), "c10k_store_calls_total");
    assert_eq!(calls_after, calls_before, "the storm of resumes made {} store calls", calls_after - calls_before);
    // And the room goes on: one more post reaches a new subscriber.
    let mut late = EventStream::open(port, "/api/rooms/storm/events", Some(&POSTED.to_string()));
    poster.request(&Request::post("/api/rooms/storm/messages").json(&json!({ "body": "after" }))).assert_status(201);
    assert_eq!(late.next_ids(1), [POSTED + 1]);
}

/// One model after another: each storm is 2,000 threads here and 2,000 descriptors on
/// both sides.
#[test]
fn a_reconnect_storm_is_served_from_the_cache_on_every_model() {
    for model in [&["--model", "async"][..], &["--model", "reactor"], &["--model", "green"], &["--model", "threads"], &["--model", "uring"]] {
        storm(model);
    }
}
