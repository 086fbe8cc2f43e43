//! One deadline for a post's whole wait (`--db-post-timeout`): while another connection
//! holds the database's write lock (SQLite's, or the room's counter row on MySQL and
//! PostgreSQL), posts that queue behind it are each answered 503 with `Retry-After` within
//! the deadline plus a small margin, never one after the other's full timeout; and once
//! the lock is released, none of the posts answered 503 is in the store (the store checks
//! the deadline inside its transaction, before committing). Runs on every model that
//! offloads its store calls or drives them natively.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// `--db-post-timeout` of these servers, in seconds.
const DEADLINE_SECS: u64 = 1;
/// How late past the deadline a 503 may come: scheduling slack on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// Posts sent at once while the lock is held.
const POSTS: usize = 6;

/// Who holds the write lock, until released.
enum Held {
    Sqlite(rusqlite::Connection),
    Server(c10k_store::testing::HeldRoom),
}

impl Held {
    /// Takes the lock that room `main`'s next append needs.
    fn take(server: &Server) -> Held {
        match server.database() {
            Some(database) => Held::Server(database.hold_room("main")),
            None => {
                let conn = rusqlite::Connection::open(server.db_path()).expect("open the server's SQLite file");
                conn.busy_timeout(Duration::from_secs(5)).expect("busy_timeout");
                // IMMEDIATE: SQLite's write lock, held until the transaction ends.
                conn.execute_batch("BEGIN IMMEDIATE").expect("take SQLite's write lock");
                Held::Sqlite(conn)
            }
        }
    }

    fn release(self) {
        match self {
            Held::Sqlite(conn) => conn.execute_batch("ROLLBACK").expect("release SQLite's write lock"),
            Held::Server(held) => held.release(),
        }
    }
}

/// Every message of room `main` as the store has it, oldest first (read through the
/// history route, which reads the store, not the cache).
fn stored_bodies(port: u16) -> Vec<String> {
    let page = api_messages(port, "main", "?limit=200");
    let mut bodies: Vec<String> =
        page["messages"].as_array().expect("messages").iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
    bodies.reverse();
    bodies
}

fn posts_past_the_deadline_get_503_in_time_and_are_never_stored(model: Model) {
    if support::server::skipped_without_database(model) {
        return;
    }
    let server = Server::start_with_args(model, &["--db-post-timeout", &DEADLINE_SECS.to_string()]);
    let port = server.port();
    api_post(port, "main", "before the lock");
    let held = Held::take(&server);

    let deadline = Duration::from_secs(DEADLINE_SECS);
    let answers: Vec<(usize, Response, Duration)> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..POSTS)
            .map(|i| {
                scope.spawn(move || {
                    let began = Instant::now();
                    let reply = Request::post("/api/rooms/main/messages")
                        .json(&json!({"body": format!("late {i}"), "from": "test"}))
                        .send(port);
                    (i, reply, began.elapsed())
                })
            })
            .collect();
        posts.into_iter().map(|p| p.join().expect("a post thread")).collect()
    });
    for (i, reply, took) in &answers {
        assert_eq!(reply.status, 503, "post {i} while the lock is held:\n{reply}");
        assert!(reply.header("retry-after").is_some(), "post {i}: 503 says when to retry:\n{reply}");
        assert!(
            reply.json()["error"].as_str().is_some_and(|e| e.contains("not stored") && e.contains("--db-post-timeout")),
            "post {i} says why:\n{reply}"
        );
        assert!(
            *took <= deadline + MARGIN,
            "post {i} was answered after {took:?}, past the deadline {deadline:?} + {MARGIN:?}"
        );
    }

    held.release();
    let after = api_post(port, "main", "after the lock");
    assert_eq!(after["id"], 2, "no id was taken by a post answered 503: {after}");
    assert_eq!(stored_bodies(port), ["before the lock", "after the lock"], "none of the posts answered 503 is stored");
}

macro_rules! deadline_tests {
    ($($name:ident: $model:expr,)*) => {$(
        #[test]
        fn $name() {
            posts_past_the_deadline_get_503_in_time_and_are_never_stored($model);
        }
    )*};
}

deadline_tests! {
    sqlite_async: &["--model", "async"],
    sqlite_threads: &["--model", "threads"],
    sqlite_pool: &["--model", "pool"],
    sqlite_reactor: &["--model", "reactor"],
    sqlite_green: &["--model", "green"],
    sqlite_uring: &["--model", "uring"],
    sqlite_async_workers_2: &["--model", "async", "--workers", "2"],
    sqlite_prefork: &["--model", "prefork", "--workers", "8"],
    mysql_async: &["--model", "async", "--db", "mysql"],
    mysql_async_native: &["--model", "async", "--db", "mysql", "--db-mode", "native"],
    mysql_reactor: &["--model", "reactor", "--db", "mysql"],
    mysql_uring: &["--model", "uring", "--db", "mysql"],
    postgres_async: &["--model", "async", "--db", "postgres"],
    postgres_async_native: &["--model", "async", "--db", "postgres", "--db-mode", "native"],
    postgres_green_native: &["--model", "green", "--db", "postgres", "--db-mode", "native"],
    postgres_threads_native: &["--model", "threads", "--db", "postgres", "--db-mode", "native"],
}

/// A stalled store does not pile work up: the offload queue is bounded (`--store-threads`
/// running, `--store-queue` waiting), so while another process holds SQLite's write lock
/// the posts beyond those places are answered 503 at once ("the store is busy"), only the
/// few admitted wait (and get their 503 at the deadline), routes that need no store call
/// go on answering at once, and the first post after the lock is released is stored.
fn a_stalled_store_sheds_the_posts_beyond_its_bounded_queue_at_once(model: Model) {
    const THREADS: usize = 1;
    const QUEUE: usize = 2;
    const FLOOD: usize = 12;
    let server = Server::start_with_args(
        model,
        &["--store-threads", &THREADS.to_string(), "--store-queue", &QUEUE.to_string(), "--db-post-timeout", "3"],
    );
    let port = server.port();
    api_post(port, "main", "before the lock");
    let held = Held::take(&server);

    let answers: Vec<(Response, Duration)> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..FLOOD)
            .map(|i| {
                scope.spawn(move || {
                    let began = Instant::now();
                    let reply = Request::post("/api/rooms/main/messages")
                        .json(&json!({"body": format!("flood {i}"), "from": "test"}))
                        .send(port);
                    (reply, began.elapsed())
                })
            })
            .collect();
        // While the store is stalled and its queue full, what needs no store call is served.
        let began = Instant::now();
        get(port, "/healthz").assert_status(200);
        assert!(began.elapsed() < Duration::from_secs(1), "/healthz waited {:?} behind the stalled store", began.elapsed());
        posts.into_iter().map(|p| p.join().expect("a post thread")).collect()
    });
    let shed: Vec<&(Response, Duration)> = answers
        .iter()
        .filter(|(reply, _)| reply.text().contains("the store is busy"))
        .collect();
    for (reply, _) in &answers {
        assert_eq!(reply.status, 503, "every post while the lock is held:\n{reply}");
    }
    assert!(shed.len() >= FLOOD - THREADS - QUEUE - 1, "the flood beyond the queue is shed: {} of {FLOOD}", shed.len());
    assert!(
        answers.len() - shed.len() <= THREADS + QUEUE,
        "at most {THREADS} running and {QUEUE} queued store calls are admitted; {} were: {:#?}",
        answers.len() - shed.len(),
        answers.iter().map(|(r, t)| (r.text(), *t)).collect::<Vec<_>>()
    );
    for (reply, took) in &shed {
        assert!(*took < Duration::from_secs(2), "a post beyond the queue is shed at once, not after {took:?}:\n{reply}");
        assert!(reply.header("retry-after").is_some(), "a shed post says when to retry:\n{reply}");
    }

    held.release();
    let after = api_post(port, "main", "after the lock");
    assert_eq!(after["id"], 2, "service resumes, and no post answered 503 took an id: {after}");
    assert_eq!(stored_bodies(port), ["before the lock", "after the lock"]);
}

#[test]
fn sqlite_async_sheds_posts_beyond_the_bounded_queue() {
    a_stalled_store_sheds_the_posts_beyond_its_bounded_queue_at_once(&["--model", "async"]);
}

#[test]
fn sqlite_reactor_sheds_posts_beyond_the_bounded_queue() {
    a_stalled_store_sheds_the_posts_beyond_its_bounded_queue_at_once(&["--model", "reactor"]);
}

#[test]
fn sqlite_uring_sheds_posts_beyond_the_bounded_queue() {
    a_stalled_store_sheds_the_posts_beyond_its_bounded_queue_at_once(&["--model", "uring"]);
}

#[test]
fn sqlite_threads_sheds_posts_beyond_the_bounded_queue() {
    a_stalled_store_sheds_the_posts_beyond_its_bounded_queue_at_once(&["--model", "threads"]);
}
