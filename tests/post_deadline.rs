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
