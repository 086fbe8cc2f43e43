//! What only the database-server stores (MySQL/MariaDB, PostgreSQL) have to prove:
//! several independent stores (as several processes or machines would hold) appending at
//! once get ids 1..N per room with no gap and no duplicate; the native drivers of
//! `--db-mode native` keep the same contract and share the ids; a connection the server
//! ends is replaced without the caller seeing it; and the schema is created once and
//! reused. Each test runs on both servers, when their test servers are given (see
//! `c10k_store::testing`).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

use c10k_core::store::{AsyncStore, MessageId, Store};
use c10k_store::testing::{ScratchDatabase, ServerKind};
use c10k_store::StoreOptions;
use common::{keyed, msg, room};

macro_rules! server_test {
    ($name:ident, |$kind:ident, $db:ident| $body:block) => {
        mod $name {
            use super::*;

            #[test]
            fn on_mysql() {
                let $kind = ServerKind::MySql;
                let Some($db) = ScratchDatabase::create($kind, stringify!($name)) else { return };
                $body
            }

            #[test]
            fn on_postgres() {
                let $kind = ServerKind::Postgres;
                let Some($db) = ScratchDatabase::create($kind, stringify!($name)) else { return };
                $body
            }
        }
    };
}

fn open(db: &ScratchDatabase) -> Arc<dyn Store> {
    c10k_store::open(db.url()).expect("open the scratch database")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

server_test!(four_stores_of_four_writers_each_get_every_id_once_with_no_gap, |_kind, db| {
    const STORES: usize = 4;
    const WRITERS_PER_STORE: usize = 4;
    const PER_WRITER: usize = 25;
    let stores: Vec<Arc<dyn Store>> = (0..STORES).map(|_| open(&db)).collect();
    let start = Arc::new(Barrier::new(STORES * WRITERS_PER_STORE));
    let writers: Vec<_> = (0..STORES * WRITERS_PER_STORE)
        .map(|w| {
            let (store, start) = (Arc::clone(&stores[w % STORES]), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                (0..PER_WRITER)
                    .map(|i| {
                        let name = if i % 2 == 0 { "a" } else { "b" };
                        (name, store.append(&room(name), &msg(&format!("w{w}-{i}"))).unwrap().message.id.0)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acked: Vec<(&str, u64)> = writers.into_iter().flat_map(|w| w.join().expect("a writer panicked")).collect();
    for name in ["a", "b"] {
        let mut ids: Vec<u64> = acked.iter().filter(|(r, _)| *r == name).map(|(_, id)| *id).collect();
        let count = ids.len() as u64;
        ids.sort_unstable();
        assert_eq!(ids, (1..=count).collect::<Vec<_>>(), "room {name}: acknowledged ids are not exactly 1..={count}");
        let stored = stores[0].after(&room(name), MessageId(0), usize::MAX).unwrap();
        assert_eq!(stored.iter().map(|m| m.id.0).collect::<Vec<_>>(), ids, "room {name}: stored ids");
        let bodies: BTreeSet<&str> = stored.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies.len() as u64, count, "room {name}: a message stored twice or lost");
    }
});

server_test!(the_native_driver_keeps_the_contract_and_shares_the_ids, |_kind, db| {
    let blocking = open(&db);
    let native: Arc<dyn AsyncStore> = c10k_store::open_native(db.url(), &StoreOptions::default()).unwrap();
    let main = room("main");
    assert_eq!(blocking.append(&main, &msg("blocking 1")).unwrap().message.id, MessageId(1));
    runtime().block_on(async {
        assert_eq!(native.append(&main, &msg("native 2")).await.unwrap().message.id, MessageId(2));
        // Many tasks at once, on shared (pipelined or pooled) connections.
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let native = Arc::clone(&native);
                tokio::spawn(async move { native.append(&room("main"), &msg(&format!("t{i}"))).await.unwrap().message.id.0 })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        ids.sort_unstable();
        assert_eq!(ids, (3..=42).collect::<Vec<_>>());
        let after = native.after(&main, MessageId(40), 10).await.unwrap();
        assert_eq!(after.iter().map(|m| m.id.0).collect::<Vec<_>>(), [41, 42]);
        assert!(native.after(&room("empty"), MessageId(0), 10).await.unwrap().is_empty());
    });
    assert_eq!(blocking.append(&main, &msg("blocking 43")).unwrap().message.id, MessageId(43));
    assert_eq!(blocking.recent(&main, 1).unwrap()[0].body, "blocking 43");
});

server_test!(a_connection_the_server_ends_is_replaced_without_an_error, |_kind, db| {
    let store = open(&db);
    let main = room("main");
    store.append(&main, &msg("before")).unwrap();
    db.kill_connections();
    // The idle connection is stale now: the next call finds out and uses a new one.
    assert_eq!(store.after(&main, MessageId(0), 10).unwrap().len(), 1);
    db.kill_connections();
    assert_eq!(store.append(&main, &msg("after")).unwrap().message.id, MessageId(2));
});

server_test!(the_native_driver_replaces_a_connection_the_server_ended, |_kind, db| {
    let _schema = open(&db);
    let native = c10k_store::open_native(db.url(), &StoreOptions { connections: 1, ..Default::default() }).unwrap();
    let main = room("main");
    runtime().block_on(async {
        native.append(&main, &msg("before")).await.unwrap();
        db.kill_connections();
        // The first call after the kill may fail (it may have been on its way); the
        // store must not stay broken: within a few calls, a new connection serves.
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(native.after(&main, MessageId(0), 10).await.map(|m| m.len()));
            if matches!(answers.last(), Some(Ok(1))) {
                break;
            }
            // Let the circuit's retry period pass: a real wait for time, bounded.
            tokio::time::sleep(c10k_store::RETRY_EVERY).await;
        }
        assert!(matches!(answers.last(), Some(Ok(1))), "never recovered: {answers:?}");
    });
});

server_test!(reopening_keeps_the_schema_and_the_ids, |_kind, db| {
    let first = open(&db);
    first.append(&room("main"), &msg("one")).unwrap();
    drop(first);
    let again = open(&db);
    assert_eq!(again.append(&room("main"), &msg("two")).unwrap().message.id, MessageId(2));
    assert_eq!(again.rooms().unwrap(), [room("main")]);
});

server_test!(a_newer_schema_is_refused_with_what_to_do, |_kind, db| {
    drop(open(&db));
    db.execute("UPDATE c10k_schema SET version = 99");
    let err = c10k_store::open(db.url()).err().expect("refused").to_string();
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("upgrade c10k"), "{err}");
});

server_test!(a_version_1_database_is_migrated_and_keys_work_across_stores, |kind, db| {
    // Version 1's tables, as a c10k before idempotency keys left them.
    let (rooms, messages) = match kind {
        ServerKind::MySql => (
            "CREATE TABLE c10k_rooms (room VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
             last_id BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
            "CREATE TABLE c10k_messages (room VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
             id BIGINT UNSIGNED NOT NULL, body TEXT NOT NULL, sender VARCHAR(255) NOT NULL, \
             time_ms BIGINT UNSIGNED NOT NULL, PRIMARY KEY (room, id)) ENGINE=InnoDB",
        ),
        ServerKind::Postgres => (
            "CREATE TABLE c10k_rooms (room TEXT COLLATE \"C\" PRIMARY KEY, last_id BIGINT NOT NULL)",
            "CREATE TABLE c10k_messages (room TEXT COLLATE \"C\" NOT NULL, id BIGINT NOT NULL, body TEXT NOT NULL, \
             sender TEXT NOT NULL, time_ms BIGINT NOT NULL, PRIMARY KEY (room, id))",
        ),
    };
    db.execute("CREATE TABLE c10k_schema (id SMALLINT PRIMARY KEY, version INTEGER NOT NULL)");
    db.execute("INSERT INTO c10k_schema VALUES (1, 1)");
    db.execute(rooms);
    db.execute(messages);
    db.execute("INSERT INTO c10k_rooms VALUES ('main', 1)");
    db.execute("INSERT INTO c10k_messages VALUES ('main', 1, 'from version 1', 'ann', 1)");

    let (one, two) = (open(&db), open(&db));
    let main = room("main");
    assert_eq!(one.recent(&main, 10).unwrap()[0].body, "from version 1");
    let first = one.append(&main, &keyed("keyed", "k")).unwrap();
    assert_eq!((first.replayed, first.message.id), (false, MessageId(2)));
    let retry = two.append(&main, &keyed("keyed", "k")).unwrap();
    assert!(retry.replayed, "another store (another process) finds the key: {retry:?}");
    assert_eq!(retry.message, first.message);
    assert_eq!(two.append(&main, &msg("next")).unwrap().message.id, MessageId(3), "no id spent on the retry");
    runtime().block_on(async {
        let native = c10k_store::open_native(db.url(), &StoreOptions::default()).unwrap();
        let again = native.append(&main, &keyed("keyed", "k")).await.unwrap();
        assert!(again.replayed, "the native driver too: {again:?}");
        assert_eq!(again.message.id, MessageId(2));
    });
});
