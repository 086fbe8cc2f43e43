//! Persistence, black-box: a message acknowledged to its poster survives a crash
//! (SIGKILL of the server and everything it started) and a clean stop, with its id; ids
//! continue where they stopped; a subscriber that resumes across the restart gets exactly
//! what it missed. Run once per model, like the conformance suite, and on the database
//! servers.

mod support;

use support::*;

/// Acknowledged native-API messages survive `kill -9` with their ids, in every room, and
/// each room's ids continue from there.
fn acknowledged_messages_survive_kill_9_with_their_ids(model: Model) {
    let mut server = Server::start(model);
    let main: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();
    let other = api_post(server.port(), "other", "elsewhere");

    server.kill_9();
    server.restart();
    let port = server.port();

    assert_eq!(
        api_messages(port, "main", ""),
        json!({"room": "main", "messages": main, "reset": false, "last_id": 3}),
        "every acknowledged message is still there, unchanged"
    );
    assert_eq!(api_messages(port, "other", "")["messages"], json!([other]));
    assert_eq!(
        api_post(port, "main", "four")["id"],
        4,
        "ids continue after the last stored one"
    );
    assert_eq!(api_post(port, "other", "again")["id"], 2, "in every room");
}

/// A clean stop (SIGTERM, status 0) keeps every message as well.
fn a_clean_stop_keeps_every_message(model: Model) {
    let mut server = Server::start(model);
    let posted: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();

    let status = server.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must stop the server with status 0, got {status}"
    );
    server.restart();

    assert_eq!(
        api_messages(server.port(), "main", "")["messages"],
        json!(posted)
    );
    assert_eq!(api_post(server.port(), "main", "four")["id"], 4);
}

/// An SSE subscriber that had seen message 1 when the server was killed resumes with
/// `Last-Event-ID: 1` and gets exactly 2 and 3, in order, once; then the live ones.
fn an_event_stream_resumes_across_kill_9_with_exactly_the_missed_messages(model: Model) {
    let mut server = Server::start(model);
    let first = api_post(server.port(), "main", "seen before the crash");
    let mut stream = EventStream::open(server.port(), "/api/rooms/main/events", None);
    assert_eq!(stream.next_message(), first);
    let missed: Vec<Value> = ["missed", "missed too"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();

    server.kill_9();
    drop(stream);
    server.restart();
    let port = server.port();

    let mut resumed = EventStream::open(port, "/api/rooms/main/events", Some("1"));
    assert_eq!(resumed.next_message(), missed[0]);
    assert_eq!(resumed.next_message(), missed[1]);
    let live = api_post(port, "main", "after the restart");
    assert_eq!(live["id"], 4);
    assert_eq!(
        resumed.next_message(),
        live,
        "then the live one, and nothing twice"
    );
    let next = api_post(port, "main", "and one more");
    assert_eq!(resumed.next_message(), next, "no message twice");
}

/// A WebSocket client resumes across `kill -9` with `?after=` the same way.
fn a_websocket_resumes_across_kill_9_with_exactly_the_missed_messages(model: Model) {
    let mut server = Server::start(model);
    let posted: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| api_post(server.port(), "main", b))
        .collect();

    server.kill_9();
    server.restart();
    let port = server.port();

    let mut ws = Ws::connect(port, "/api/rooms/main/ws?after=1");
    assert_eq!(ws.next_message(), posted[1]);
    assert_eq!(ws.next_message(), posted[2]);
    api_post(port, "main", "four");
    assert_eq!(ws.next_ids(1), [4]);
}

/// On the Tornado routes too: after `kill -9` the page and the long-poll show the same
/// messages with the same ids and html, the next id follows on, and the browser's old
/// XSRF cookie still works (tokens are checked by unmasking, not remembered).
fn the_tornado_routes_keep_ids_and_html_across_kill_9(model: Model) {
    let mut server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let posted: Vec<Value> = ["one", "<two>"]
        .iter()
        .map(|b| tornado_post(server.port(), &xsrf, b))
        .collect();

    server.kill_9();
    server.restart();
    let port = server.port();

    let page = Request::get("/").cookie(&xsrf.cookie_header()).send(port);
    page.assert_status(200);
    // The page renders each message in its own markup (sender, time, body); Tornado's
    // `html` fragment is what its routes return, checked below.
    for (message, body) in posted.iter().zip(["one", "&lt;two&gt;"]) {
        let id = message["id"].as_str().unwrap();
        let text = page.text();
        let at = text
            .find(&format!(r#"<div class="message" id="m{id}">"#))
            .unwrap_or_else(|| panic!("the page must still show message {id}:\n{page}"));
        assert!(
            text[at..].contains(&format!(r#"<p class="body" dir="auto">{body}</p>"#)),
            "message {id} must still read {body:?}:\n{page}"
        );
    }
    let reply = updates_request(&xsrf, None).send(port);
    assert_eq!(updates_messages(&reply), posted, "{reply}");

    let next = tornado_post(port, &xsrf, "three");
    assert_eq!(
        next,
        json!({"id": "3", "body": "three", "html": "<div class=\"message\" id=\"m3\">three</div>\n"})
    );
}

macro_rules! persistence {
    ($model:ident, $args:expr) => {
        persistence!(@expand $model, $args, [
            acknowledged_messages_survive_kill_9_with_their_ids,
            a_clean_stop_keeps_every_message,
            an_event_stream_resumes_across_kill_9_with_exactly_the_missed_messages,
            a_websocket_resumes_across_kill_9_with_exactly_the_missed_messages,
            the_tornado_routes_keep_ids_and_html_across_kill_9,
        ]);
    };
    (@expand $model:ident, $args:expr, [ $( $behaviour:ident ),* $(,)? ]) => {
        mod $model {
            const MODEL: crate::support::Model = $args;
            $(
                #[test]
                fn $behaviour() {
                    if crate::support::server::skipped_without_database(MODEL) {
                        return;
                    }
                    crate::$behaviour(MODEL)
                }
            )*
        }
    };
}

persistence!(async_model, &["--model", "async"]);
// The database servers keep the same promises across a kill -9 of the server (each on
// a scratch database; skipped, and said so, when no test server is given, except in CI).
persistence!(mysql_reactor, &["--model", "reactor", "--db", "mysql"]);
persistence!(mysql_async_native, &["--model", "async", "--db", "mysql", "--db-mode", "native"]);
persistence!(postgres_threads, &["--model", "threads", "--db", "postgres"]);
persistence!(postgres_async_native, &["--model", "async", "--db", "postgres", "--db-mode", "native"]);
// Several processes on one database: ids come from the database, so workers agree.
persistence!(postgres_green_workers_2, &["--model", "green", "--workers", "2", "--db", "postgres"]);
persistence!(mysql_async_workers_2, &["--model", "async", "--workers", "2", "--db", "mysql", "--db-mode", "native"]);

// ---------------------------------------------------------------------------------------
// kill -9 at random points under post load (SQLite)

mod crash_points {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use crate::support::*;

    /// Crashes per run: each at a random number of acknowledged posts, so at a random
    /// point of the posters' requests (mid-transaction, mid-answer, between two).
    const CRASHES: usize = 50;
    /// Posters at once, each on its own keep-alive connection.
    const POSTERS: usize = 4;
    /// The most acknowledged posts before a crash (the fewest is 1).
    const MAX_ACKS_BEFORE_CRASH: u64 = 24;
    /// The whole run's bound, so that CI stays bounded even on a slow machine.
    const RUN_BOUND: Duration = Duration::from_secs(90);
    const ROOM: &str = "crash";

    /// A post as the poster saw it acknowledged: its id and its body.
    type Ack = (u64, String);

    /// xorshift64*: enough randomness to pick crash points, seeded so that a failing
    /// run can be replayed with `C10K_CRASH_SEED`.
    struct Points(u64);

    impl Points {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
        }
    }

    /// Posts `body` on `stream` and reads the answer; `None` if the server went away
    /// before the whole answer arrived (then the post is not acknowledged).
    fn post_once(stream: &mut TcpStream, port: u16, body: &str) -> Option<u64> {
        let request = Request::post(&format!("/api/rooms/{ROOM}/messages")).json(&json!({"body": body, "from": "crash"}));
        stream.write_all(&request.to_bytes(port)).ok()?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, length) = loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 201"), "a post that is answered is answered 201:\n{head}");
                let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok())?;
                break (end + 4, length);
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        };
        while got.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let message: Value = serde_json::from_slice(&got[head_end..head_end + length]).ok()?;
        assert_eq!(message["body"], body, "the acknowledgement is of this post: {message}");
        message["id"].as_u64()
    }

    /// Posts until the server goes away, sending each acknowledgement to `acks`.
    fn poster(port: u16, round: usize, which: usize, acks: mpsc::Sender<Ack>) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        for seq in 0.. {
            let body = format!("round {round} poster {which} post {seq}");
            let Some(id) = post_once(&mut stream, port, &body) else { return };
            if acks.send((id, body)).is_err() {
                return;
            }
        }
    }

    /// Opens the database file the way the next process would and checks it: integrity,
    /// and every message of the room by id.
    fn read_back(path: &std::path::Path) -> BTreeMap<u64, String> {
        let db = rusqlite::Connection::open(path).expect("open the crashed database");
        let integrity: String = db.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check");
        assert_eq!(integrity, "ok", "PRAGMA integrity_check after kill -9");
        let duplicates: i64 = db
            .query_row("SELECT COUNT(*) FROM (SELECT id FROM messages WHERE room = ?1 GROUP BY id HAVING COUNT(*) > 1)", [ROOM], |row| row.get(0))
            .expect("count duplicate ids");
        assert_eq!(duplicates, 0, "no id is stored twice");
        let mut query = db.prepare("SELECT id, body FROM messages WHERE room = ?1").expect("prepare");
        let rows = query.query_map([ROOM], |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?))).expect("query");
        rows.map(|row| row.expect("a row")).collect()
    }

    /// Under post load from several clients, the server is killed with SIGKILL at 50
    /// random points and restarted on the same SQLite file each time. After every crash:
    /// `PRAGMA integrity_check` is ok, no id is stored twice, and every post that was
    /// acknowledged is there with the id its poster was given; no id was given twice.
    /// At the end the server gives the next id after the highest stored.
    #[test]
    fn async_kill_9_at_50_random_points_under_post_load_loses_no_acknowledged_message() {
        kill_9_at_random_points(&["--model", "async"]);
    }

    #[test]
    fn reactor_kill_9_at_50_random_points_under_post_load_loses_no_acknowledged_message() {
        kill_9_at_random_points(&["--model", "reactor"]);
    }

    #[test]
    fn threads_kill_9_at_50_random_points_under_post_load_loses_no_acknowledged_message() {
        kill_9_at_random_points(&["--model", "threads"]);
    }

    fn kill_9_at_random_points(model: Model) {
        let seed = std::env::var("C10K_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
        });
        eprintln!("crash points seeded with C10K_CRASH_SEED={seed}");
        let mut points = Points(seed);
        let started = Instant::now();
        let mut server = Server::start(model);
        let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
        for round in 0..CRASHES {
            assert!(started.elapsed() < RUN_BOUND, "{round} crashes took {:?}", started.elapsed());
            let port = server.port();
            let (tx, rx) = mpsc::channel();
            let posters: Vec<_> = (0..POSTERS)
                .map(|which| {
                    let tx = tx.clone();
                    thread::spawn(move || poster(port, round, which, tx))
                })
                .collect();
            drop(tx);
            let crash_after = 1 + points.next(MAX_ACKS_BEFORE_CRASH);
            let mut round_acks = Vec::new();
            while (round_acks.len() as u64) < crash_after {
                match rx.recv_timeout(Duration::from_secs(10)) {
                    Ok(ack) => round_acks.push(ack),
                    Err(e) => panic!("round {round}: no acknowledgement for 10 s ({e}); stderr:\n{}", server.stderr()),
                }
            }
            server.kill_9();
            for poster in posters {
                poster.join().expect("a poster thread");
            }
            round_acks.extend(rx.try_iter());
            for (id, body) in round_acks {
                if let Some(earlier) = acknowledged.insert(id, body.clone()) {
                    panic!("id {id} was acknowledged twice: to {earlier:?} and to {body:?}");
                }
            }
            let stored = read_back(&server.db_path());
            for (id, body) in &acknowledged {
                assert_eq!(stored.get(id), Some(body), "round {round}: acknowledged message {id} after kill -9 (seed {seed})");
            }
            server.restart();
        }
        let stored: BTreeSet<u64> = read_back(&server.db_path()).into_keys().collect();
        let highest = stored.last().copied().unwrap_or(0);
        assert_eq!(api_post(server.port(), ROOM, "after the crashes")["id"], highest + 1, "ids go on after the highest stored");
        eprintln!("{CRASHES} crashes, {} acknowledged posts, {} stored, in {:?}", acknowledged.len(), stored.len(), started.elapsed());
    }
}
