//! `c10k_store::open` turns a `--db` value into a store, and explains the ones it cannot.

mod common;

use c10k_core::store::MessageId;
use common::{msg, room, ScratchDir};

#[test]
fn a_plain_path_opens_sqlite() {
    let dir = ScratchDir::new("plain");
    let store = c10k_store::open(dir.db().to_str().unwrap()).unwrap();
    assert_eq!(
        store.append(&room("main"), &msg("hi")).unwrap().id,
        MessageId(1)
    );
    assert!(dir.db().exists());
}

#[test]
fn sqlite_prefixed_paths_open_the_same_file() {
    let dir = ScratchDir::new("prefixed");
    let path = dir.db();
    let path = path.to_str().unwrap();
    c10k_store::open(&format!("sqlite:{path}"))
        .unwrap()
        .append(&room("main"), &msg("1"))
        .unwrap();
    let again = c10k_store::open(&format!("sqlite://{path}")).unwrap();
    assert_eq!(
        again.append(&room("main"), &msg("2")).unwrap().id,
        MessageId(2)
    );
}

#[test]
fn memory_is_available_for_tests() {
    for spec in [":memory:", "sqlite::memory:"] {
        let store = c10k_store::open(spec).unwrap();
        assert_eq!(
            store.append(&room("main"), &msg("hi")).unwrap().id,
            MessageId(1)
        );
    }
}

#[test]
fn mysql_and_postgres_say_they_are_not_built_and_what_to_use() {
    for url in [
        "mysql://root@127.0.0.1/chat",
        "postgres://localhost/chat",
        "postgresql://x/y",
    ] {
        let err = c10k_store::open(url)
            .err()
            .expect("not built yet")
            .to_string();
        assert!(err.contains("not built yet"), "{err}");
        assert!(err.contains("SQLite file path"), "{err}");
    }
}

#[test]
fn unknown_schemes_and_empty_values_are_refused_with_advice() {
    for spec in ["redis://localhost", "", "sqlite:"] {
        let err = c10k_store::open(spec).err().expect("refused").to_string();
        assert!(
            err.contains("--db") || err.contains("sqlite:PATH"),
            "{spec:?}: {err}"
        );
    }
}

#[test]
fn slow_delays_every_call_and_keeps_the_store_behind_it() {
    let dir = ScratchDir::new("slow");
    let path = dir.db();
    let store = c10k_store::open(&format!("slow:30:{}", path.to_str().unwrap())).unwrap();
    let began = std::time::Instant::now();
    assert_eq!(store.append(&room("main"), &msg("hi")).unwrap().id, MessageId(1));
    assert!(began.elapsed() >= std::time::Duration::from_millis(30));
    // The same file, opened plainly, has the message.
    let plain = c10k_store::open(path.to_str().unwrap()).unwrap();
    assert_eq!(plain.recent(&room("main"), 10).unwrap().len(), 1);
}

#[test]
fn slow_without_milliseconds_says_how_to_write_it() {
    for spec in ["slow:abc:x.sqlite3", "slow:20"] {
        let err = c10k_store::open(spec).err().expect("refused").to_string();
        assert!(err.contains("slow:MILLIS:PATH"), "{err}");
    }
}
