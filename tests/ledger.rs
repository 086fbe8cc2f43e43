//! The ledger (`/api/bank`, `--locking`), against real `c10k serve` processes.
//!
//! The claim of issue 11: `c10k ledger-check` catches `--locking none` losing money on
//! every model (each with its default `--db-mode offload`), and never catches `giant`,
//! `fine`, `atomic` or `db`. One `#[test]` per model and strategy, named
//! `MODEL::STRATEGY`, so `cargo test --test ledger reactor_epoll` runs one model.
//!
//! Every check is bounded: 16 connections of 40 operations each, a 60 s `--timeout`, and
//! a 90 s limit on the checker process (then it is killed and the test fails).

mod support;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{json, Request, Server};

/// How long one `c10k ledger-check` may run before the test gives up on it.
const CHECK_LIMIT: Duration = Duration::from_secs(90);

/// Runs `c10k ledger-check` against `server`; its exit code and standard output.
fn ledger_check(server: &Server, connections: usize) -> (i32, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["ledger-check", "--target", &server.addr().to_string()])
        .args(["--connections", &connections.to_string(), "--ops", "40", "--timeout", "60", "--seed", "11"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start c10k ledger-check");
    let pid = child.id() as libc::pid_t;
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(output) = finished.recv_timeout(CHECK_LIMIT) else {
        // SAFETY: kill(2) on the checker we started; at worst the pid is already gone.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("c10k ledger-check ran for more than {CHECK_LIMIT:?}");
    };
    let Output { status, stdout, stderr } = output.expect("the checker's output");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let code = status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "ledger-check could not run (exit {code}):\n{stdout}\n{}", String::from_utf8_lossy(&stderr));
    (code, stdout)
}

/// Connections the checker opens: 16, or 6 for prefork, whose 8 workers serve one
/// connection each (more would wait in the backlog for the whole run).
fn connections(model: support::Model) -> usize {
    if model.contains(&"prefork") {
        6
    } else {
        16
    }
}

/// `none` loses money, and the checker says how.
fn none_is_caught(model: support::Model) {
    if support::server::skipped_without_database(model) {
        return;
    }
    let server = Server::start_with_args(model, &["--locking", "none"]);
    let (code, out) = ledger_check(&server, connections(model));
    assert_eq!(code, 1, "the checker must catch --locking none:\n{out}");
    assert!(out.contains("VIOLATION "), "{out}");
    assert!(out.contains("created from nothing") || out.contains("vanished"), "{out}");
}

/// A locking strategy that keeps the money right: the checker finds nothing.
fn never_caught(model: support::Model, locking: &str) {
    if support::server::skipped_without_database(model) {
        return;
    }
    let server = Server::start_with_args(model, &["--locking", locking]);
    let n = connections(model);
    let (code, out) = ledger_check(&server, n);
    assert_eq!(code, 0, "--locking {locking} must never be caught:\n{out}\n{}", server.stderr());
    assert!(out.contains(&format!("the canonical race: {n} withdrawals of john's whole 2500 at once, 1 accepted")), "{out}");
}

/// In-process locks cannot span worker processes: refused with a message saying what to do.
fn refused_with_workers(model: support::Model, locking: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_c10k"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db", ":memory:", "--locking", locking])
        .args(model)
        .output()
        .expect("run c10k serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("share no memory") && stderr.contains("Use --locking db"), "{stderr}");
}

macro_rules! ledger {
    ($model:ident, $args:expr, in_memory: true) => {
        mod $model {
            const MODEL: crate::support::Model = $args;
            #[test]
            fn none() {
                crate::none_is_caught(MODEL)
            }
            #[test]
            fn giant() {
                crate::never_caught(MODEL, "giant")
            }
            #[test]
            fn fine() {
                crate::never_caught(MODEL, "fine")
            }
            #[test]
            fn atomic() {
                crate::never_caught(MODEL, "atomic")
            }
            #[test]
            fn db() {
                crate::never_caught(MODEL, "db")
            }
        }
    };
    ($model:ident, $args:expr, db_server) => {
        mod $model {
            const MODEL: crate::support::Model = $args;
            #[test]
            fn none() {
                crate::none_is_caught(MODEL)
            }
            #[test]
            fn db() {
                crate::never_caught(MODEL, "db")
            }
        }
    };
    ($model:ident, $args:expr, in_memory: false) => {
        mod $model {
            const MODEL: crate::support::Model = $args;
            #[test]
            fn none_races_in_the_shared_store() {
                crate::none_is_caught(MODEL)
            }
            #[test]
            fn db() {
                crate::never_caught(MODEL, "db")
            }
            #[test]
            fn giant_fine_and_atomic_are_refused() {
                for locking in ["giant", "fine", "atomic"] {
                    crate::refused_with_workers(MODEL, locking);
                }
            }
        }
    };
}

ledger!(async_model, &["--model", "async"], in_memory: true);
ledger!(threads, &["--model", "threads"], in_memory: true);
ledger!(pool, &["--model", "pool"], in_memory: true);
ledger!(reactor_epoll, &["--model", "reactor", "--poller", "epoll"], in_memory: true);
ledger!(green, &["--model", "green"], in_memory: true);
ledger!(uring, &["--model", "uring"], in_memory: true);
ledger!(prefork_8, &["--model", "prefork", "--workers", "8"], in_memory: false);
ledger!(async_workers_2, &["--model", "async", "--workers", "2"], in_memory: false);
// The database servers: `db` is a transaction in MariaDB/PostgreSQL, shared by the
// workers; `none` across workers races in the same tables (read, yield, write back).
ledger!(mysql_async_workers_2, &["--model", "async", "--workers", "2", "--db", "mysql"], db_server);
ledger!(mysql_reactor, &["--model", "reactor", "--db", "mysql"], db_server);
ledger!(postgres_threads_workers_2, &["--model", "threads", "--workers", "2", "--db", "postgres"], db_server);
ledger!(postgres_green, &["--model", "green", "--db", "postgres"], db_server);
ledger!(postgres_green_native, &["--model", "green", "--db", "postgres", "--db-mode", "native"], db_server);

/// Where a model cannot race: one thread runs every ledger call to its end before the
/// next (`reactor` with `--db-mode inline`), so even `none` never interleaves. The checker
/// then finds nothing, and that is the truth, not a blind spot.
#[test]
fn none_on_the_single_threaded_reactor_with_inline_store_calls_cannot_race() {
    let server = Server::start_with_args(&["--model", "reactor", "--db-mode", "inline"], &["--locking", "none"]);
    let (code, out) = ledger_check(&server, 16);
    assert_eq!(code, 0, "{out}");
}

// ---- the routes -------------------------------------------------------------------------

fn post(server: &Server, path: &str, body: &str) -> support::Response {
    Request::post(path).body("application/json", body).send(server.port())
}

#[test]
fn routes_answer_the_documented_shapes_and_refuse_bad_amounts_and_unknown_accounts() {
    let server = Server::start_with_args(&["--model", "async"], &["--locking", "fine"]);
    let created = post(&server, "/api/bank/accounts", r#"{"id":"john","balance":2500}"#);
    assert_eq!(created.assert_status(201).json(), json!({"id": "john", "balance": 2500}));
    post(&server, "/api/bank/accounts", r#"{"id":"jane","balance":0}"#).assert_status(201);
    let again = post(&server, "/api/bank/accounts", r#"{"id":"john","balance":1}"#);
    assert_eq!(again.assert_status(409).json()["code"], "account_exists");

    for (amount, why) in [
        ("0", "must be 1 or more"),
        ("-2500", "must be 1 or more"),
        ("25.5", "whole number"),
        ("2500.0", "whole number"),
        ("\"2500\"", "whole number"),
        ("1000000000000001", "too large"),
        ("99999999999999999999", "too large"),
        ("1e30", "too large"),
    ] {
        let refused = post(&server, "/api/bank/accounts/john/withdraw", &format!(r#"{{"amount":{amount}}}"#));
        let body = refused.assert_status(400).json();
        assert_eq!(body["code"], "bad_amount", "{amount}: {body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{amount}: {body}");
    }
    let missing = post(&server, "/api/bank/accounts/nobody/withdraw", r#"{"amount":1}"#);
    assert_eq!(missing.assert_status(404).json()["code"], "unknown_account");
    let untyped = Request::post("/api/bank/accounts/john/withdraw").body("text/plain", r#"{"amount":1}"#);
    untyped.send(server.port()).assert_status(415);

    let withdrawn = post(&server, "/api/bank/accounts/john/withdraw", r#"{"amount":2500}"#);
    assert_eq!(withdrawn.assert_status(200).json(), json!({"id": "john", "balance": 0}));
    let broke = post(&server, "/api/bank/accounts/john/withdraw", r#"{"amount":2500}"#);
    let body = broke.assert_status(422).json();
    assert_eq!(
        (body["code"].as_str(), body["balance"].as_i64(), body["amount"].as_i64()),
        (Some("insufficient_funds"), Some(0), Some(2500)),
        "{body}"
    );

    let same = post(&server, "/api/bank/transfers", r#"{"from":"jane","to":"jane","amount":1}"#);
    assert_eq!(same.assert_status(400).json()["code"], "same_account");
    post(&server, "/api/bank/accounts", r#"{"id":"ann","balance":100}"#).assert_status(201);
    let moved = post(&server, "/api/bank/transfers", r#"{"from":"ann","to":"jane","amount":40}"#);
    assert_eq!(
        moved.assert_status(200).json(),
        json!({"from": {"id": "ann", "balance": 60}, "to": {"id": "jane", "balance": 40}, "amount": 40})
    );
    let balance = Request::get("/api/bank/accounts/jane").send(server.port());
    assert_eq!(balance.assert_status(200).json(), json!({"id": "jane", "balance": 40}));
    let audit = Request::get("/api/bank/audit").send(server.port());
    assert_eq!(
        audit.assert_status(200).json(),
        json!({
            "locking": "fine",
            "accounts": [{"id": "ann", "balance": 60}, {"id": "jane", "balance": 40}, {"id": "john", "balance": 0}],
            "total": 100
        })
    );
}
