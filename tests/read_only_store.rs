//! A SQLite file that cannot be written says so and recovers without a restart. Started
//! on a read-only database file, the server warns at once with what to do, serves what
//! the file holds, answers posts 503 (logging the failure class once, not once per post)
//! and `GET /readyz` 503 while `GET /healthz` stays 200; once the file is writable again,
//! the next post is stored (a fresh connection replaces the read-only ones, and a `-shm`
//! left read-only beside it is given the file's permissions), `/readyz` is 200 and the log
//! says writes work again. Runs on every model.
//!
//! How the file is made read-only: `chmod 0444` as an ordinary user; as root, which file
//! modes do not stop, `chattr +i` (the immutable attribute). Where neither can be used,
//! the test says so and skips (fails under C10K_E2E_REQUIRED=1).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// How long the log may take to show a line the server wrote.
const LOG_WAIT: Duration = Duration::from_secs(5);

/// A directory of its own holding a database made with one message, removed when dropped
/// (made writable first).
struct Scratch {
    dir: PathBuf,
    as_root: bool,
}

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("c10k-read-only-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let store = c10k_store::SqliteStore::open(&dir.join("chat.sqlite3")).expect("create the database");
        let message = c10k_core::store::NewMessage {
            body: "stored before".into(),
            from: "test".into(),
            time_ms: 1_700_000_000_000,
            deadline: None,
            key: None,
        };
        c10k_core::store::Store::append(&store, &c10k_core::store::RoomId::main(), &message).expect("a first message");
        drop(store);
        // /proc/self belongs to the process's effective user.
        let as_root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self")) == 0;
        Scratch { dir, as_root }
    }

    fn db(&self) -> PathBuf {
        self.dir.join("chat.sqlite3")
    }

    /// Makes the database file read-only for the server; false (after saying why) when
    /// this machine cannot.
    fn make_read_only(&self) -> bool {
        if self.as_root {
            match Command::new("chattr").arg("+i").arg(self.db()).status() {
                Ok(status) if status.success() => true,
                other => {
                    let why = format!("`chattr +i` failed ({other:?}): as root, file modes cannot make it read-only");
                    if c10k_store::testing::required() {
                        panic!("{why}");
                    }
                    eprintln!("skipped: {why}");
                    false
                }
            }
        } else {
            set_mode(&self.db(), 0o444);
            true
        }
    }

    fn make_writable(&self) {
        if self.as_root {
            let status = Command::new("chattr").arg("-i").arg(self.db()).status().expect("chattr");
            assert!(status.success(), "chattr -i failed");
        } else {
            set_mode(&self.db(), 0o644);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.as_root {
            let _ = Command::new("chattr").arg("-i").arg(self.db()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Waits (bounded) until the server's log has a line containing `text`; how many it has.
fn wait_for_log(server: &Server, text: &str) -> usize {
    let until = Instant::now() + LOG_WAIT;
    loop {
        let count = server.stderr().lines().filter(|line| line.contains(text)).count();
        if count > 0 || Instant::now() >= until {
            return count;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(port: u16, body: &str) -> Response {
    Request::post("/api/rooms/main/messages").json(&json!({"body": body, "from": "test"})).send(port)
}

fn a_read_only_file_is_reported_and_writes_resume_without_a_restart(model: Model, label: &str) {
    let scratch = Scratch::new(label);
    if !scratch.make_read_only() {
        return;
    }
    let server = Server::start_sharing(model, &[], scratch.db().to_str().expect("a UTF-8 path"));
    let port = server.port();
    assert!(wait_for_log(&server, "the database cannot be written") > 0, "a warning at start:\n{}", server.stderr());
    assert!(server.stderr().contains("writable"), "the warning says what to do:\n{}", server.stderr());

    get(port, "/healthz").assert_status(200);
    let ready = get(port, "/readyz");
    assert_eq!(ready.status, 503, "not ready while the file cannot be written:\n{ready}");
    assert!(ready.text().contains("not ready"), "{ready}");
    let held = api_messages(port, "main", "?after=0");
    assert_eq!(api_ids(&held["messages"]), [1], "what the file holds is served: {held}");
    for i in 0..10 {
        let reply = post(port, &format!("refused {i}"));
        assert_eq!(reply.status, 503, "{reply}");
        assert!(reply.header("retry-after").is_some(), "{reply}");
    }
    let logged = server.stderr().lines().filter(|l| l.contains("a database write failed")).count();
    assert!(logged <= 1, "ten refused posts, one class: logged at most once, not {logged} times:\n{}", server.stderr());

    scratch.make_writable();
    let stored = post(port, "after it was made writable");
    stored.assert_status(201);
    assert_eq!(stored.json()["id"], 2, "the refused posts took no id: {}", stored.text());
    get(port, "/readyz").assert_status(200);
    assert!(wait_for_log(&server, "can be written again") > 0, "the recovery is logged:\n{}", server.stderr());
}

macro_rules! read_only_tests {
    ($($name:ident: $model:expr,)*) => {$(
        #[test]
        fn $name() {
            a_read_only_file_is_reported_and_writes_resume_without_a_restart($model, stringify!($name));
        }
    )*};
}

read_only_tests! {
    async_model: &["--model", "async"],
    async_inline_db: &["--model", "async", "--db-mode", "inline"],
    threads: &["--model", "threads"],
    pool: &["--model", "pool"],
    reactor: &["--model", "reactor"],
    green: &["--model", "green"],
    uring: &["--model", "uring"],
    threads_workers_2: &["--model", "threads", "--workers", "2"],
}
