//! Helpers shared by the store's tests: scratch directories and messages.

#![allow(dead_code)] // each test file uses a different part of this

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use c10k_core::store::{NewMessage, RoomId};

/// A fresh directory under the system's temp dir, removed (with the database, its -wal and
/// -shm files) when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "c10k-store-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("chat.sqlite3")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn room(name: &str) -> RoomId {
    RoomId::new(name).expect("a valid room name")
}

pub fn msg(body: &str) -> NewMessage {
    NewMessage {
        body: body.to_string(),
        from: "alice".to_string(),
        time_ms: 1_700_000_000_000,
        deadline: None,
        key: None,
    }
}

/// A message with an idempotency key.
pub fn keyed(body: &str, key: &str) -> NewMessage {
    NewMessage { key: Some(key.to_string()), ..msg(body) }
}

/// For a test that runs as a child process: exit after `seconds` whatever happens, so that
/// a broken test ends instead of hanging its parent.
pub fn child_watchdog(seconds: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(seconds));
        eprintln!("child test process still running after {seconds} s; exiting");
        std::process::exit(3);
    });
}

/// The text after `marker` in a line of a child's stdout. The test harness may have
/// printed `test NAME ... ` before it on the same line.
pub fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}
