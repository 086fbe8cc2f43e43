//! The `Store` contract, checked on every back-end: a SQLite file, SQLite in memory, a
//! MySQL/MariaDB database and a PostgreSQL one (those two when their test servers are
//! given: see `c10k_store::testing`). Ids start at 1 and have no gaps, per room; `after`
//! and `recent` return id order and respect limits; `rooms` lists every room with a
//! message; text comes back exactly as stored.

mod common;

use c10k_core::store::{MessageId, NewMessage, Store};
use c10k_store::testing::{ScratchDatabase, ServerKind};
use c10k_store::{SqliteStore, StoreOptions};
use common::{keyed, msg, room, ScratchDir};

/// Runs a test once per back-end. A server back-end whose test server is not given
/// skips (and says so), unless C10K_E2E_REQUIRED=1.
macro_rules! store_test {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            use super::*;

            #[test]
            fn on_a_file() {
                let dir = ScratchDir::new(stringify!($name));
                let $store = SqliteStore::open(&dir.db()).expect("open");
                $body
            }

            #[test]
            fn in_memory() {
                let $store = SqliteStore::open_memory().expect("open");
                $body
            }

            #[test]
            fn on_mysql() {
                let Some(db) = ScratchDatabase::create(ServerKind::MySql, stringify!($name)) else { return };
                let $store = c10k_store::MySqlStore::open(db.url(), &StoreOptions::default()).expect("open");
                $body
            }

            #[test]
            fn on_postgres() {
                let Some(db) = ScratchDatabase::create(ServerKind::Postgres, stringify!($name)) else { return };
                let $store = c10k_store::PostgresStore::open(db.url(), &StoreOptions::default()).expect("open");
                $body
            }
        }
    };
}

fn ids(messages: &[c10k_core::store::Message]) -> Vec<u64> {
    messages.iter().map(|m| m.id.0).collect()
}

store_test!(ids_start_at_one_and_have_no_gaps, |store| {
    let main = room("main");
    for expected in 1..=50 {
        let stored = store.append(&main, &msg(&format!("m{expected}"))).unwrap().message;
        assert_eq!(stored.id, MessageId(expected));
    }
    assert_eq!(
        ids(&store.after(&main, MessageId(0), usize::MAX).unwrap()),
        (1..=50).collect::<Vec<_>>()
    );
});

store_test!(each_room_counts_its_own_ids, |store| {
    let (a, b) = (room("a"), room("b"));
    assert_eq!(store.append(&a, &msg("a1")).unwrap().message.id, MessageId(1));
    assert_eq!(store.append(&a, &msg("a2")).unwrap().message.id, MessageId(2));
    assert_eq!(store.append(&b, &msg("b1")).unwrap().message.id, MessageId(1));
    assert_eq!(store.append(&a, &msg("a3")).unwrap().message.id, MessageId(3));
    assert_eq!(store.append(&b, &msg("b2")).unwrap().message.id, MessageId(2));
});

store_test!(
    append_returns_the_stored_message_and_reads_give_it_back,
    |store| {
        let main = room("main");
        let new = NewMessage {
            body: "<b>it's \"quoted\" & ünïcode 🎉</b>".to_string(),
            from: "bob".to_string(),
            time_ms: 1_234_567_890_123,
            deadline: None,
            key: None,
        };
        let stored = store.append(&main, &new).unwrap().message;
        assert_eq!(stored.room, main);
        assert_eq!(stored.body, new.body);
        assert_eq!(stored.from, new.from);
        assert_eq!(stored.time_ms, new.time_ms);
        assert_eq!(
            store.after(&main, MessageId(0), 10).unwrap(),
            vec![stored.clone()]
        );
        assert_eq!(store.recent(&main, 10).unwrap(), vec![stored]);
    }
);

store_test!(
    anonymous_posters_and_empty_bodies_are_stored_as_given,
    |store| {
        let main = room("main");
        let new = NewMessage {
            body: String::new(),
            from: String::new(),
            time_ms: 0,
            deadline: None,
            key: None,
        };
        let stored = store.append(&main, &new).unwrap().message;
        assert_eq!(
            (stored.body.as_str(), stored.from.as_str(), stored.time_ms),
            ("", "", 0)
        );
        assert_eq!(store.recent(&main, 1).unwrap(), vec![stored]);
    }
);

store_test!(
    after_returns_later_messages_in_id_order_up_to_the_limit,
    |store| {
        let main = room("main");
        for i in 1..=10 {
            store.append(&main, &msg(&format!("m{i}"))).unwrap();
        }
        assert_eq!(
            ids(&store.after(&main, MessageId(0), 3).unwrap()),
            [1, 2, 3]
        );
        assert_eq!(
            ids(&store.after(&main, MessageId(4), 3).unwrap()),
            [5, 6, 7]
        );
        assert_eq!(
            ids(&store.after(&main, MessageId(8), 100).unwrap()),
            [9, 10]
        );
        assert_eq!(
            ids(&store.after(&main, MessageId(10), 100).unwrap()),
            [0u64; 0]
        );
        assert_eq!(
            ids(&store.after(&main, MessageId(999), 100).unwrap()),
            [0u64; 0]
        );
        assert_eq!(
            ids(&store.after(&main, MessageId(0), 0).unwrap()),
            [0u64; 0]
        );
        let bodies: Vec<String> = store
            .after(&main, MessageId(7), 2)
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        assert_eq!(bodies, ["m8", "m9"]);
    }
);

store_test!(recent_returns_the_last_messages_oldest_first, |store| {
    let main = room("main");
    for i in 1..=10 {
        store.append(&main, &msg(&format!("m{i}"))).unwrap();
    }
    assert_eq!(ids(&store.recent(&main, 3).unwrap()), [8, 9, 10]);
    assert_eq!(ids(&store.recent(&main, 1).unwrap()), [10]);
    assert_eq!(
        ids(&store.recent(&main, 100).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(&store.recent(&main, usize::MAX).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(ids(&store.recent(&main, 0).unwrap()), [0u64; 0]);
});

store_test!(before_pages_back_newest_first_past_any_cache, |store| {
    let (main, other) = (room("main"), room("other"));
    for i in 1..=10 {
        store.append(&main, &msg(&format!("m{i}"))).unwrap();
    }
    store.append(&other, &msg("elsewhere")).unwrap();
    assert_eq!(ids(&store.before(&main, None, 3).unwrap()), [10, 9, 8]);
    assert_eq!(ids(&store.before(&main, Some(MessageId(8)), 3).unwrap()), [7, 6, 5]);
    assert_eq!(ids(&store.before(&main, Some(MessageId(3)), 100).unwrap()), [2, 1]);
    assert_eq!(ids(&store.before(&main, Some(MessageId(1)), 100).unwrap()), [0u64; 0]);
    assert_eq!(ids(&store.before(&main, Some(MessageId(999)), 2).unwrap()), [10, 9]);
    assert_eq!(ids(&store.before(&main, Some(MessageId(u64::MAX)), 1).unwrap()), [10]);
    assert_eq!(ids(&store.before(&main, None, 0).unwrap()), [0u64; 0]);
    let page = store.before(&main, Some(MessageId(5)), 2).unwrap();
    assert!(page.iter().all(|m| m.room == main), "{page:?}");
    assert_eq!(page.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["m4", "m3"]);
    assert!(store.before(&room("nobody-here"), None, 10).unwrap().is_empty());
});

store_test!(a_keyed_message_is_stored_once_and_a_retry_gets_the_first, |store| {
    let (main, other) = (room("main"), room("other"));
    let first = store.append(&main, &keyed("hello", "k-1")).unwrap();
    assert!(!first.replayed);
    assert_eq!(first.message.id, MessageId(1));
    let later = NewMessage { time_ms: 1_800_000_000_000, ..keyed("hello", "k-1") };
    let retry = store.append(&main, &later).unwrap();
    assert!(retry.replayed, "{retry:?}");
    assert_eq!(retry.message, first.message, "the first message, its time included");
    // Another body under the same key: nothing stored, the first message comes back
    // (the caller compares and refuses).
    let reused = store.append(&main, &keyed("another body", "k-1")).unwrap();
    assert!(reused.replayed);
    assert_eq!(reused.message.body, "hello");
    // Keys are per room; messages without a key are never replays.
    assert!(!store.append(&other, &keyed("hello", "k-1")).unwrap().replayed);
    for _ in 0..2 {
        assert!(!store.append(&main, &msg("no key")).unwrap().replayed);
    }
    let next = store.append(&main, &keyed("hello", "k-2")).unwrap();
    assert_eq!((next.replayed, next.message.id), (false, MessageId(4)));
    assert_eq!(ids(&store.after(&main, MessageId(0), 100).unwrap()), [1, 2, 3, 4], "stored once, no gap");
});

store_test!(keyed_retries_racing_each_other_store_one_message, |store| {
    let main = room("main");
    store.append(&main, &msg("the room exists")).unwrap();
    let barrier = std::sync::Barrier::new(4);
    let answers: Vec<_> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    store.append(&main, &keyed("raced", "same-key")).unwrap()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.message.id == MessageId(2)), "{answers:?}");
    assert_eq!(ids(&store.after(&main, MessageId(0), 100).unwrap()), [1, 2]);
});

store_test!(reads_see_only_their_own_room, |store| {
    let (a, b) = (room("a"), room("b"));
    store.append(&a, &msg("for a")).unwrap();
    store.append(&b, &msg("for b")).unwrap();
    store.append(&b, &msg("for b again")).unwrap();
    assert!(store
        .after(&a, MessageId(0), 10)
        .unwrap()
        .iter()
        .all(|m| m.room == a && m.body == "for a"));
    assert_eq!(store.recent(&b, 10).unwrap().len(), 2);
    assert!(store.recent(&b, 10).unwrap().iter().all(|m| m.room == b));
});

store_test!(room_names_differ_by_case, |store| {
    assert_eq!(store.append(&room("main"), &msg("lower")).unwrap().message.id, MessageId(1));
    assert_eq!(store.append(&room("Main"), &msg("upper")).unwrap().message.id, MessageId(1));
    assert_eq!(store.recent(&room("Main"), 10).unwrap()[0].body, "upper");
    assert_eq!(store.rooms().unwrap().len(), 2);
});

store_test!(long_bodies_and_four_byte_characters_come_back_exactly, |store| {
    let main = room("main");
    let body = "🎉é<&>\"'\\".repeat(512); // 4,096 characters, 6,656 bytes
    let new = NewMessage { body: body.clone(), from: "ünï 🎉".repeat(8), time_ms: u64::from(u32::MAX) * 1000, deadline: None, key: None };
    let stored = store.append(&main, &new).unwrap().message;
    let read = store.after(&main, MessageId(0), 1).unwrap();
    assert_eq!(read, vec![stored]);
    assert_eq!(read[0].body, body);
    assert_eq!(read[0].time_ms, new.time_ms);
});

store_test!(an_unknown_room_is_empty_not_an_error, |store| {
    let nobody = room("nobody-here");
    assert!(store.after(&nobody, MessageId(0), 10).unwrap().is_empty());
    assert!(store.recent(&nobody, 10).unwrap().is_empty());
});

store_test!(rooms_lists_each_room_with_a_message_once, |store| {
    assert!(store.rooms().unwrap().is_empty());
    store.append(&room("main"), &msg("1")).unwrap();
    store.append(&room("games"), &msg("2")).unwrap();
    store.append(&room("main"), &msg("3")).unwrap();
    let mut rooms = store.rooms().unwrap();
    rooms.sort();
    assert_eq!(rooms, [room("games"), room("main")]);
});

store_test!(the_epoch_is_made_once_kept_and_replaced_when_asked, |store| {
    let epoch = store.epoch().unwrap().expect("a store made by this build has an epoch");
    assert_eq!(epoch.len(), 16, "{epoch}");
    assert!(epoch.bytes().all(|b| b.is_ascii_hexdigit()), "{epoch}");
    store.append(&room("main"), &msg("1")).unwrap();
    assert_eq!(store.epoch().unwrap().as_deref(), Some(epoch.as_str()), "posting leaves it");
    let next = c10k_store::fresh_epoch();
    assert_ne!(next, epoch);
    store.set_epoch(&next).unwrap();
    assert_eq!(store.epoch().unwrap(), Some(next));
});

/// The epoch belongs to the database, not to a process: a second store on the same file
/// (a restart, another worker) reads the same one, until it is rotated.
#[test]
fn the_epoch_outlives_the_store_that_made_it() {
    let dir = ScratchDir::new("epoch-reopened");
    let first = SqliteStore::open(&dir.db()).unwrap().epoch().unwrap();
    assert!(first.is_some());
    assert_eq!(SqliteStore::open(&dir.db()).unwrap().epoch().unwrap(), first);
    let other = ScratchDir::new("epoch-other");
    assert_ne!(SqliteStore::open(&other.db()).unwrap().epoch().unwrap(), first, "a new database, a new epoch");
}

#[test]
fn open_explains_what_to_do_when_the_directory_is_missing() {
    let dir = ScratchDir::new("missing-dir");
    let path = dir.path().join("no/such/dir/chat.sqlite3");
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("check the directory exists"), "{err}");
    assert!(err.contains("--db"), "{err}");
}

#[test]
fn open_refuses_a_file_that_is_not_a_database() {
    let dir = ScratchDir::new("not-a-db");
    std::fs::write(
        dir.db(),
        b"this is a text file, not SQLite, and long enough to have a header",
    )
    .unwrap();
    let err = SqliteStore::open(&dir.db()).unwrap_err().to_string();
    assert!(err.contains("--db"), "{err}");
}

#[test]
fn a_key_outlives_the_store_that_stored_it() {
    let dir = ScratchDir::new("key-reopened");
    let main = room("main");
    let first = SqliteStore::open(&dir.db()).unwrap().append(&main, &keyed("once", "k")).unwrap();
    let again = SqliteStore::open(&dir.db()).unwrap().append(&main, &keyed("once", "k")).unwrap();
    assert!(again.replayed);
    assert_eq!(again.message, first.message);
}

/// A file written before schema versions were recorded (version 1: no key column,
/// `user_version` 0) is migrated at open: its messages stay, keys work, and the version
/// is recorded; a file of a newer version is refused.
#[test]
fn a_version_1_file_is_migrated_and_a_newer_one_refused() {
    let dir = ScratchDir::new("migrate-v1");
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "CREATE TABLE messages (room TEXT NOT NULL, id INTEGER NOT NULL, body TEXT NOT NULL,
                 sender TEXT NOT NULL, time_ms INTEGER NOT NULL, PRIMARY KEY (room, id)) WITHOUT ROWID;
             CREATE TABLE accounts (id TEXT NOT NULL PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0)) WITHOUT ROWID;
             INSERT INTO messages VALUES ('main', 1, 'from version 1', 'ann', 1);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&dir.db()).unwrap();
    let main = room("main");
    assert_eq!(store.recent(&main, 10).unwrap()[0].body, "from version 1");
    let keyed_now = store.append(&main, &keyed("keyed", "k")).unwrap();
    assert_eq!((keyed_now.replayed, keyed_now.message.id), (false, MessageId(2)));
    assert!(store.append(&main, &keyed("keyed", "k")).unwrap().replayed);
    assert!(store.epoch().unwrap().is_some(), "version 3 gave it an epoch");
    drop(store);
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
    assert_eq!(version, c10k_store::SQLITE_SCHEMA_VERSION);
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = SqliteStore::open(&dir.db()).unwrap_err().to_string();
    assert!(err.contains("schema version 99") && err.contains("upgrade c10k"), "{err}");
}
