//! Many writers at once never produce a duplicate id or a gap: threads sharing one store,
//! two stores on one file (as two workers would have), and two real processes.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;

use c10k_core::store::{MessageId, RoomId, Store};
use c10k_store::SqliteStore;
use common::{msg, room, ScratchDir};

/// Checks that `room` holds exactly ids 1..=count, in order, each body once.
fn assert_complete(store: &dyn Store, room: &RoomId, count: u64) {
    let stored = store.after(room, MessageId(0), usize::MAX).unwrap();
    let ids: Vec<u64> = stored.iter().map(|m| m.id.0).collect();
    assert_eq!(
        ids,
        (1..=count).collect::<Vec<_>>(),
        "room {room}: ids are not exactly 1..={count}"
    );
    let bodies: BTreeSet<&str> = stored.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies.len() as u64,
        count,
        "room {room}: a message was stored twice or lost"
    );
}

/// `writers` threads, each appending `per_writer` messages alternately to rooms a and b
/// through the store `pick(writer)` gives it, all starting together. Returns the ids each
/// append acknowledged, per room.
fn hammer(stores: &[Arc<SqliteStore>], writers: usize, per_writer: usize) -> (Vec<u64>, Vec<u64>) {
    let start = Arc::new(Barrier::new(writers));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(&stores[w % stores.len()]);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let (a, b) = (room("a"), room("b"));
                let mut acked = (Vec::new(), Vec::new());
                start.wait();
                for i in 0..per_writer {
                    let body = format!("w{w}-{i}");
                    if i % 2 == 0 {
                        acked.0.push(store.append(&a, &msg(&body)).unwrap().message.id.0);
                    } else {
                        acked.1.push(store.append(&b, &msg(&body)).unwrap().message.id.0);
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = (Vec::new(), Vec::new());
    for handle in handles {
        let (a, b) = handle.join().expect("a writer panicked");
        acked.0.extend(a);
        acked.1.extend(b);
    }
    acked.0.sort_unstable();
    acked.1.sort_unstable();
    acked
}

#[test]
fn eight_threads_appending_200_each_into_two_rooms_get_ids_1_to_800_per_room() {
    let dir = ScratchDir::new("threads");
    let store = Arc::new(SqliteStore::open(&dir.db()).unwrap());
    // 8 x 200 = 1600 appends, alternating rooms: 800 per room.
    let (a, b) = hammer(&[Arc::clone(&store)], 8, 200);
    assert_eq!(
        a,
        (1..=800).collect::<Vec<_>>(),
        "room a acknowledged a duplicate or skipped an id"
    );
    assert_eq!(
        b,
        (1..=800).collect::<Vec<_>>(),
        "room b acknowledged a duplicate or skipped an id"
    );
    assert_complete(&*store, &room("a"), 800);
    assert_complete(&*store, &room("b"), 800);
}

#[test]
fn two_stores_on_one_file_appending_at_once_get_no_gap_and_no_duplicate() {
    let dir = ScratchDir::new("two-stores");
    // Separate stores share no mutex or connection, only the file: like two processes.
    let first = Arc::new(SqliteStore::open(&dir.db()).unwrap());
    let second = Arc::new(SqliteStore::open(&dir.db()).unwrap());
    let (a, b) = hammer(&[Arc::clone(&first), Arc::clone(&second)], 4, 200);
    assert_eq!(a, (1..=400).collect::<Vec<_>>());
    assert_eq!(b, (1..=400).collect::<Vec<_>>());
    // Each store sees the other's writes.
    assert_complete(&*first, &room("a"), 400);
    assert_complete(&*second, &room("b"), 400);
}

/// Set in the environment of the children of `processes_opening_...`: the fresh file.
const OPEN_CHILD_DB: &str = "C10K_STORE_TEST_OPEN_DB";

/// In a child: say `ready`, wait for `go`, open the store, say `opened` or the error.
#[test]
fn processes_opening_child() {
    let Ok(db) = std::env::var(OPEN_CHILD_DB) else {
        return;
    };
    common::child_watchdog(60);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    match SqliteStore::open(db.as_ref()) {
        Ok(_) => writeln!(out, "opened").unwrap(),
        Err(e) => writeln!(out, "failed {e}").unwrap(),
    }
    out.flush().unwrap();
}

/// Regression: two `--workers` opening a fresh file at the same moment both tried to
/// switch it to WAL, and the loser failed at once with "database is locked" (SQLite does
/// not call the busy handler there). Several rounds, since it is a race.
#[test]
fn processes_opening_one_fresh_file_at_once_all_open() {
    for round in 0..4 {
        let dir = ScratchDir::new(&format!("fresh-open-{round}"));
        let mut children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["processes_opening_child", "--exact", "--nocapture", "--test-threads=1"])
                    .env(OPEN_CHILD_DB, dir.db())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("start a child test process")
            })
            .collect();
        let mut outputs: Vec<_> =
            children.iter_mut().map(|c| BufReader::new(c.stdout.take().unwrap()).lines()).collect();
        for lines in &mut outputs {
            let ready = lines.find(|line| line.as_deref().map_or(true, |l| l.ends_with("ready")));
            assert!(matches!(ready, Some(Ok(_))), "a child died before it was ready");
        }
        for child in &mut children {
            writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
        }
        for lines in outputs {
            // Read to the end: the child's test harness still writes after the verdict.
            let lines: Vec<String> = lines.map(|l| l.unwrap()).collect();
            let verdict = lines
                .iter()
                .find_map(|l| {
                    common::after_marker(l, "opened")
                        .map(|_| Ok(()))
                        .or_else(|| common::after_marker(l, "failed ").map(|e| Err(e.to_string())))
                })
                .expect("a child said neither opened nor failed");
            assert_eq!(verdict, Ok(()), "round {round}: a process could not open a fresh file others were opening");
        }
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
    }
}

/// Set in the environment of the children of `two_processes_...`: the database to append to.
const CHILD_DB: &str = "C10K_STORE_TEST_PROCESSES_DB";
const PER_PROCESS: u64 = 300;

/// In a child: say `ready`, wait for `go` on stdin, then append `PER_PROCESS` messages
/// alternately to rooms a and b, printing `ack ROOM ID` for each. In a normal test run:
/// does nothing.
#[test]
fn two_processes_child() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    common::child_watchdog(120);
    let store = SqliteStore::open(db.as_ref()).unwrap();
    let (a, b) = (room("a"), room("b"));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    for i in 0..PER_PROCESS {
        let target = if i % 2 == 0 { &a } else { &b };
        let stored = store
            .append(target, &msg(&format!("p{}-{i}", std::process::id())))
            .unwrap();
        writeln!(out, "ack {target} {}", stored.message.id).unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn two_processes_appending_at_once_get_no_gap_and_no_duplicate() {
    let dir = ScratchDir::new("two-processes");
    // Create the file first so that the children race on appends, not on the schema.
    drop(SqliteStore::open(&dir.db()).unwrap());
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "two_processes_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DB, dir.db())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start a child test process")
        })
        .collect();
    let mut outputs: Vec<_> = children
        .iter_mut()
        .map(|child| BufReader::new(child.stdout.take().unwrap()).lines())
        .collect();
    // Both children have opened the store before either starts appending.
    for lines in &mut outputs {
        let ready = lines.find(|line| line.as_deref().map_or(true, |l| l.ends_with("ready")));
        assert!(
            matches!(ready, Some(Ok(_))),
            "a child died before it was ready"
        );
    }
    for child in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut acked = (Vec::new(), Vec::new());
    for lines in outputs {
        for line in lines {
            let line = line.unwrap();
            let Some(rest) = common::after_marker(&line, "ack ") else {
                continue;
            };
            let (room_name, id) = rest.split_once(' ').unwrap();
            let id: u64 = id.parse().unwrap();
            if room_name == "a" {
                acked.0.push(id)
            } else {
                acked.1.push(id)
            }
        }
    }
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child process failed");
    }
    acked.0.sort_unstable();
    acked.1.sort_unstable();
    assert_eq!(
        acked.0,
        (1..=PER_PROCESS).collect::<Vec<_>>(),
        "room a: duplicate or gap across processes"
    );
    assert_eq!(
        acked.1,
        (1..=PER_PROCESS).collect::<Vec<_>>(),
        "room b: duplicate or gap across processes"
    );
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_complete(&store, &room("a"), PER_PROCESS);
    assert_complete(&store, &room("b"), PER_PROCESS);
}
