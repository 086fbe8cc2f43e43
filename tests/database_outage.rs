//! A database server that goes down, or hangs, while c10k serves: requests that need it
//! get 503 within a bounded time (`--db-timeout`), never a hang or a crash; everything
//! that does not need it (the page, health, reads served from memory, open event
//! streams) goes on; and once the database is back, service resumes by itself, with no
//! message lost and no id skipped. The database is reached through a loopback proxy
//! ([`support::proxy::Proxy`]) that the test cuts or freezes.
//!
//! Runs per database server and model, on scratch databases (skipped, and said so, when
//! no test server is given, except in CI).

mod support;

use std::time::{Duration, Instant};

use support::proxy::{target, through, Proxy};
use support::*;

/// `--db-timeout` of these servers, in seconds.
const DB_TIMEOUT_SECS: u64 = 1;
/// The longest a request that needs the database may take while it is down or hung:
/// one timeout (the failing call), plus scheduling slack on a busy 2-core machine.
const BOUND: Duration = Duration::from_secs(DB_TIMEOUT_SECS + 2);
/// How long the database may take to be used again once it is back: the circuit's
/// retry period (1 s) and a fresh connection, with slack.
const RECOVERY: Duration = Duration::from_secs(15);

/// Starts `model` on its scratch database through a proxy.
fn start(model: Model) -> (Server, Proxy) {
    let mut proxy = None;
    let server = Server::start_via(model, &["--db-timeout", &DB_TIMEOUT_SECS.to_string()], |url| {
        let started = Proxy::start(target(url));
        let url = through(url, started.addr());
        proxy = Some(started);
        url
    });
    (server, proxy.expect("the proxy started"))
}

/// A native post, timed: its status, body and how long it took.
fn timed_post(port: u16, body: &str) -> (u16, Value, Duration) {
    let began = Instant::now();
    let reply = Request::post("/api/rooms/main/messages").json(&json!({"body": body, "from": "test"})).send(port);
    (reply.status, reply.json(), began.elapsed())
}

/// What must hold while the database cannot be used: posts get 503 within the bound and
/// say why; the rest of the server answers as usual.
fn while_unusable(server: &Server) {
    let port = server.port();
    let (status, body, took) = timed_post(port, "while the database is away");
    assert_eq!(status, 503, "a post needs the database: {body}");
    assert!(took <= BOUND, "the post was answered after {took:?}, more than {BOUND:?}: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("not stored")), "{body}");
    let (status, _, took) = timed_post(port, "and again");
    assert_eq!(status, 503);
    assert!(took <= BOUND, "the second post took {took:?}");

    get(port, "/healthz").assert_status(200);
    let ready = get(port, "/readyz");
    assert_eq!(ready.status, 503, "not ready while posts cannot be stored:\n{ready}");
    get(port, "/").assert_status(200);
    let held = api_messages(port, "main", "?after=0");
    assert_eq!(api_ids(&held["messages"]), [1], "reads are served from memory meanwhile");
}

/// Posts until one is stored (bounded by [`RECOVERY`]); returns it.
fn post_until_stored(port: u16) -> Value {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let (status, body, _) = timed_post(port, "after the database came back");
        if status == 201 {
            return body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "still 503 {RECOVERY:?} after the database came back: {body}");
        // Poll again after a moment: the circuit retries every second by design.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The database goes down (connections closed, new ones refused), then comes back.
fn a_database_that_goes_down_gives_503_in_bounded_time_and_service_resumes(model: Model) {
    let (server, proxy) = start(model);
    let port = server.port();
    let first = api_post(port, "main", "before");
    let mut stream = EventStream::open(port, "/api/rooms/main/events", None);
    assert_eq!(stream.next_message(), first);

    proxy.cut();
    while_unusable(&server);

    proxy.restore();
    let stored = post_until_stored(port);
    assert_eq!(stored["id"], 2, "no id skipped or given twice by the failed posts");
    assert_eq!(stream.next_message(), stored, "an open stream got the next message, nothing lost");
}

/// The database hangs (connections open, no answer), then comes back.
fn a_database_that_hangs_gives_503_in_bounded_time_and_service_resumes(model: Model) {
    let (server, proxy) = start(model);
    let port = server.port();
    api_post(port, "main", "before");

    proxy.freeze();
    while_unusable(&server);

    proxy.restore();
    let stored = post_until_stored(port);
    // A post that timed out may still have been committed by the database (it may or
    // may not be stored, as its 503 said): ids stay contiguous either way.
    let ids = api_ids(&api_messages(port, "main", "?after=0")["messages"]);
    let newest = stored["id"].as_u64().unwrap();
    assert_eq!(ids, (1..=newest).collect::<Vec<_>>(), "no id skipped");
}

macro_rules! outage {
    ($($name:ident: $args:expr;)*) => {
        $(
            mod $name {
                const MODEL: crate::support::Model = $args;

                #[test]
                fn a_database_that_goes_down_gives_503_in_bounded_time_and_service_resumes() {
                    if !crate::support::server::skipped_without_database(MODEL) {
                        crate::a_database_that_goes_down_gives_503_in_bounded_time_and_service_resumes(MODEL)
                    }
                }

                #[test]
                fn a_database_that_hangs_gives_503_in_bounded_time_and_service_resumes() {
                    if !crate::support::server::skipped_without_database(MODEL) {
                        crate::a_database_that_hangs_gives_503_in_bounded_time_and_service_resumes(MODEL)
                    }
                }
            }
        )*
    };
}

outage! {
    mysql_reactor: &["--model", "reactor", "--db", "mysql"];
    mysql_async_native: &["--model", "async", "--db", "mysql", "--db-mode", "native"];
    mysql_threads: &["--model", "threads", "--db", "mysql"];
    postgres_green: &["--model", "green", "--db", "postgres"];
    postgres_green_native: &["--model", "green", "--db", "postgres", "--db-mode", "native"];
    postgres_async_native: &["--model", "async", "--db", "postgres", "--db-mode", "native"];
    postgres_pool_inline: &["--model", "pool", "--db", "postgres", "--db-mode", "inline"];
}
