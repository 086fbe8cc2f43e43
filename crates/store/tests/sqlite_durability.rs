//! Acknowledged messages survive: closing and reopening the store, and `kill -9` of the
//! process that appended them.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use c10k_core::store::{MessageId, Store};
use c10k_store::{Durability, SqliteStore};
use common::{msg, room, ScratchDir};

#[test]
fn messages_and_numbering_survive_close_and_reopen() {
    let dir = ScratchDir::new("reopen");
    let main = room("main");
    {
        let store = SqliteStore::open(&dir.db()).unwrap();
        for i in 1..=5 {
            store.append(&main, &msg(&format!("m{i}"))).unwrap();
        }
    }
    let store = SqliteStore::open(&dir.db()).unwrap();
    let bodies: Vec<String> = store
        .after(&main, MessageId(0), 100)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(store.append(&main, &msg("m6")).unwrap().message.id, MessageId(6));
    assert_eq!(store.rooms().unwrap(), [main]);
}

#[test]
fn full_durability_keeps_the_same_contract() {
    let dir = ScratchDir::new("full");
    let main = room("main");
    {
        let store = SqliteStore::open_with(&dir.db(), Durability::Full).unwrap();
        assert_eq!(store.append(&main, &msg("one")).unwrap().message.id, MessageId(1));
    }
    let store = SqliteStore::open_with(&dir.db(), Durability::Full).unwrap();
    assert_eq!(store.append(&main, &msg("two")).unwrap().message.id, MessageId(2));
    assert_eq!(store.recent(&main, 10).unwrap().len(), 2);
}

/// Set in the environment of the child process that `kill_9_loses_no_acknowledged_message`
/// starts: the database it appends to.
const CHILD_DB: &str = "C10K_STORE_TEST_KILL9_DB";

/// In the child: append to "main" until killed, printing `ack ID` once `append` returned.
/// In a normal test run: does nothing.
#[test]
fn kill_9_child() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    common::child_watchdog(120);
    let store = SqliteStore::open(db.as_ref()).unwrap();
    let main = room("main");
    let mut out = std::io::stdout().lock();
    for i in 1..=100_000u64 {
        // Bounded so that an orphaned child stops by itself.
        let stored = store.append(&main, &msg(&format!("m{i}"))).unwrap().message;
        writeln!(out, "ack {}", stored.id).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_message() {
    let dir = ScratchDir::new("kill9");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill_9_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, dir.db())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child test process");
    let mut acked = 0u64;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(id) = common::after_marker(&line, "ack ") {
            let id: u64 = id.parse().unwrap();
            assert_eq!(id, acked + 1, "the child saw a gap");
            acked = id;
            if acked == 300 {
                break;
            }
        }
    }
    assert_eq!(
        acked, 300,
        "the child stopped before acknowledging 300 messages"
    );
    child.kill().expect("SIGKILL the child"); // Child::kill is SIGKILL on Unix
    child.wait().unwrap();

    let store = SqliteStore::open(&dir.db()).unwrap();
    let main = room("main");
    let stored = store.after(&main, MessageId(0), usize::MAX).unwrap();
    assert!(
        stored.len() as u64 >= acked,
        "only {} of {acked} acknowledged messages survived",
        stored.len()
    );
    for (i, m) in stored.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(m.id, MessageId(id), "gap or disorder after the kill");
        assert_eq!(m.body, format!("m{id}"));
    }
    // And numbering carries on from whatever the child managed to commit.
    let next = store.append(&main, &msg("after the crash")).unwrap().message;
    assert_eq!(next.id, MessageId(stored.len() as u64 + 1));
}
