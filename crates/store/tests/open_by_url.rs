//! `c10k_store::open` turns a `--db` value into a store, and explains the ones it cannot.

mod common;

use c10k_core::store::MessageId;
use common::{msg, room, ScratchDir};

#[test]
fn a_plain_path_opens_sqlite() {
    let dir = ScratchDir::new("plain");
    let store = c10k_store::open(dir.db().to_str().unwrap()).unwrap();
    assert_eq!(
        store.append(&room("main"), &msg("hi")).unwrap().message.id,
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
        again.append(&room("main"), &msg("2")).unwrap().message.id,
        MessageId(2)
    );
}

#[test]
fn memory_is_available_for_tests() {
    for spec in [":memory:", "sqlite::memory:"] {
        let store = c10k_store::open(spec).unwrap();
        assert_eq!(
            store.append(&room("main"), &msg("hi")).unwrap().message.id,
            MessageId(1)
        );
    }
}

#[test]
fn an_unreachable_database_server_is_named_with_its_address_and_what_to_check() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let options = c10k_store::StoreOptions { timeout: std::time::Duration::from_secs(2), ..Default::default() };
    for (url, named) in [
        ("mysql://root@127.0.0.1:1/chat", "MySQL at 127.0.0.1:1/chat"),
        ("mariadb://root@127.0.0.1:1/chat", "MySQL at 127.0.0.1:1/chat"),
        ("postgres://postgres@127.0.0.1:1/chat", "PostgreSQL at 127.0.0.1:1/chat"),
        ("postgresql://postgres@127.0.0.1:1/chat", "PostgreSQL at 127.0.0.1:1/chat"),
    ] {
        let began = std::time::Instant::now();
        let err = c10k_store::open_with(url, &options).err().expect("nothing listens there").to_string();
        assert!(err.contains(&format!("cannot connect to {named}")), "{url}: {err}");
        assert!(err.contains("check that the database is running"), "{url}: {err}");
        assert!(began.elapsed() < std::time::Duration::from_secs(4), "{url}: took {:?}", began.elapsed());
    }
}

#[test]
fn a_malformed_server_url_says_how_to_write_one() {
    for (url, shape) in [
        ("mysql://root@127.0.0.1:notaport/test", "mysql://USER[:PASSWORD]@HOST:PORT/DATABASE"),
        ("mysql://root@127.0.0.1:3306", "names no database"),
        ("postgres://postgres@127.0.0.1:notaport/test", "postgres://USER[:PASSWORD]@HOST:PORT/DATABASE"),
    ] {
        let err = c10k_store::open(url).err().expect("refused").to_string();
        assert!(err.contains(shape), "{url}: {err}");
    }
}

#[test]
fn a_server_sleep_is_refused_for_sqlite_with_what_to_use() {
    let dir = ScratchDir::new("sleep");
    let options = c10k_store::StoreOptions { server_sleep: Some(std::time::Duration::from_millis(5)), ..Default::default() };
    let err = c10k_store::open_with(dir.db().to_str().unwrap(), &options).err().expect("refused").to_string();
    assert!(err.contains("slow:MILLIS:PATH"), "{err}");
}

#[test]
fn native_mode_is_refused_for_sqlite_with_what_to_use() {
    let err = c10k_store::open_native("c10k.sqlite3", &Default::default()).err().expect("refused").to_string();
    assert!(err.contains("--db-mode offload or inline"), "{err}");
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
    assert_eq!(store.append(&room("main"), &msg("hi")).unwrap().message.id, MessageId(1));
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
