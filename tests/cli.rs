//! The command line as a new user meets it: the address forms `--listen` takes, and the
//! flags that must be refused with a message saying what to write instead of being taken
//! silently (`--max-connections 0`, `c10k bench --peers nosuch`, `--repeats 0`,
//! `--report-only` with nothing to report), and `c10k epoch`. `c10k load`'s durations are tested beside its
//! scenarios (tests/load_scenarios.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

const C10K: &str = env!("CARGO_BIN_EXE_c10k");

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("c10k-cli-{}-{}", std::process::id(), NEXT_DIR.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}

/// Starts `c10k serve ARGS --db DIR/chat.sqlite3` (no C10K_* token in its environment)
/// and returns it with the first line it printed (empty if none within 20 s).
fn serve(args: &[&str], dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(C10K)
        .arg("serve")
        .args(args)
        .arg("--db")
        .arg(dir.join("chat.sqlite3"))
        .env_remove("C10K_ADMIN_TOKEN")
        .env_remove("C10K_AUTH_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("c10k serve starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    (child, line)
}

/// Starts `c10k serve --listen LISTEN`, waits for the address it prints, checks /healthz
/// answers 200 there, stops it; returns the printed URL.
fn serve_and_probe(listen: &str) -> String {
    let dir = fresh_dir();
    let (mut child, line) = serve(&["--listen", listen], &dir);
    let url = line.trim().strip_prefix("c10k listening on ").map(str::to_string);
    let answer = url.as_deref().and_then(|url| {
        let host = url.strip_prefix("http://")?.trim_end_matches('/');
        let mut conn = TcpStream::connect(host).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        Some(text)
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let url = url.unwrap_or_else(|| panic!("--listen {listen}: no address printed ({line:?})"));
    let answer = answer.unwrap_or_else(|| panic!("--listen {listen}: nothing answered at {url}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "--listen {listen}: /healthz at {url} answered {answer:?}");
    url
}

fn run(args: &[&str]) -> Output {
    Command::new(C10K).args(args).output().expect("c10k runs")
}

/// The command exits 2 and its standard error says `hint`.
fn refused(args: &[&str], hint: &str) -> String {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "c10k {args:?} should be refused; it said: {stderr}");
    assert!(stderr.contains(hint), "c10k {args:?} should say {hint:?}; it said: {stderr}");
    stderr
}

#[test]
fn listen_takes_a_host_name_or_a_bare_port() {
    for listen in ["localhost:0", ":0", "0", "127.0.0.1:0", "[::1]:0"] {
        let url = serve_and_probe(listen);
        let expected = if listen.starts_with('[') { "http://[::1]:" } else { "http://127.0.0.1:" };
        assert!(url.starts_with(expected), "--listen {listen} listens on {url}");
    }
}

#[test]
fn a_listen_address_that_cannot_be_used_says_what_to_write() {
    refused(&["serve", "--listen", "99999"], "a port is 0 to 65535");
    refused(&["serve", "--listen", "127.0.0.1"], "write IP:PORT");
    refused(&["serve", "--listen", "localhost:http-ish"], "write IP:PORT");
}

#[test]
fn zero_connections_is_refused_not_taken_as_the_default() {
    refused(&["serve", "--listen", "127.0.0.1:0", "--max-connections", "0"], "leave the flag out");
}

#[test]
fn bench_list_names_each_cells_server_as_a_command() {
    let output = run(&["bench", "--list", "--only", "plaintext,dbstall"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("Model {") && !stdout.contains("Peer {"), "debug structs in --list:\n{stdout}");
    assert!(stdout.lines().any(|l| l.contains("c10k serve --model async --threads 1")), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("peer nginx, 1 worker")), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("--db-mode inline")), "{stdout}");
}

#[test]
fn bench_flags_that_would_measure_nothing_are_refused() {
    refused(&["bench", "--list", "--peers", "nosuch"], "unknown peer \"nosuch\"; choose from: apache-event");
    refused(&["bench", "--list", "--repeats", "0"], "--repeats 0 would measure nothing");
    refused(&["bench", "--list", "--duration", "0"], "--duration 0 would measure nothing");
    let out = fresh_dir().join("nothing-here");
    let out_arg = out.to_string_lossy().into_owned();
    refused(&["bench", "--report-only", "--out", &out_arg], "run c10k bench without --report-only first");
    assert!(!out.join("RESULTS.md").exists(), "no empty RESULTS.md is written");
}

#[test]
fn epoch_prints_the_stores_epoch_and_rotate_replaces_it() {
    let db = fresh_dir().join("chat.sqlite3");
    let db = db.to_str().expect("a UTF-8 path");
    let read = |args: &[&str]| {
        let out = run(args);
        assert!(out.status.success(), "c10k {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let epoch = String::from_utf8(out.stdout).expect("UTF-8").trim().to_string();
        assert!(epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit()), "an epoch: {epoch:?}");
        epoch
    };
    let first = read(&["epoch", "--db", db]);
    assert_eq!(read(&["epoch", "--db", db]), first, "kept with the database");
    let rotated = read(&["epoch", "--db", db, "--rotate"]);
    assert_ne!(rotated, first);
    assert_eq!(read(&["epoch", "--db", db]), rotated);
}

#[test]
fn epoch_of_a_database_that_cannot_be_opened_says_why() {
    let out = run(&["epoch", "--db", "/nonexistent-dir/chat.sqlite3"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c10k epoch:") && err.contains("check the directory exists"), "{err}");
}

#[test]
fn auth_flags_that_cannot_work_are_refused_with_what_to_do() {
    let refused_without_secret = |args: &[&str], hint: &str| {
        let output = Command::new(C10K).args(args).env_remove("C10K_AUTH_SECRET").output().expect("c10k runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "c10k {args:?} should be refused; it said: {stderr}");
        assert!(stderr.contains(hint), "c10k {args:?} should say {hint:?}; it said: {stderr}");
    };
    let dir = fresh_dir();
    let db = dir.join("chat.sqlite3");
    let db = db.to_str().expect("a UTF-8 path");
    refused_without_secret(&["serve", "--listen", "127.0.0.1:0", "--db", db, "--private-room", "staff"], "--auth-secret");
    refused_without_secret(&["serve", "--listen", "127.0.0.1:0", "--db", db, "--auth-secret", "short"], "openssl rand");
    refused_without_secret(&["serve", "--listen", "127.0.0.1:0", "--db", db, "--private-room", "a b", "--auth-secret", "x"], "no room pattern");
    let jwks = dir.join("keys.json");
    std::fs::write(&jwks, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).expect("a file");
    refused_without_secret(&["serve", "--listen", "127.0.0.1:0", "--db", db, "--auth-jwks", jwks.to_str().unwrap()], "public keys");
    refused_without_secret(&["token", "--auth-secret", "short", "--sub", "x"], "at least 32");
    refused_without_secret(&["token", "--auth-secret", "0123456789abcdef0123456789abcdef", "--sub", "x", "--room", "staff=write"], "unknown permission");
    let minted = Command::new(C10K)
        .args(["token", "--sub", "dana", "--room", "staff=read,post", "--ttl", "10m"])
        .env("C10K_AUTH_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .expect("c10k runs");
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).expect("UTF-8");
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn admin_prints_the_view_of_a_server_and_refuses_a_wrong_token() {
    const TOKEN: &str = "cli-admin-token-0123456";
    let dir = fresh_dir();
    // A bus nobody answers on: its outage is logged, and the view lists the warning.
    let (mut child, line) = serve(&["--listen", "127.0.0.1:0", "--admin-token", TOKEN, "--bus", "redis://127.0.0.1:1"], &dir);
    let url = line.trim().strip_prefix("c10k listening on ").unwrap_or_else(|| panic!("no URL printed: {line:?}")).to_string();
    let admin = |token: &str, json: bool| {
        let mut args = vec!["admin", "--url", url.as_str(), "--admin-token", token];
        if json {
            args.push("--json");
        }
        Command::new(C10K).args(&args).env_remove("C10K_ADMIN_TOKEN").output().expect("c10k admin runs")
    };
    let tables = admin(TOKEN, false);
    let text = String::from_utf8_lossy(&tables.stdout).into_owned();
    assert!(tables.status.success(), "{}", String::from_utf8_lossy(&tables.stderr));
    assert!(text.contains("nodes (1):") && text.contains("async") && text.contains("rooms ("), "{text}");
    let json = admin(TOKEN, true);
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(1), "{view}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let logged = loop {
        let view: serde_json::Value = serde_json::from_slice(&admin(TOKEN, true).stdout).expect("JSON");
        if let Some(first) = view["errors"].as_array().and_then(|e| e.first()).cloned() {
            break first;
        }
        assert!(std::time::Instant::now() < deadline, "the bus outage's warning never showed in the view: {view}");
    };
    assert_eq!(logged["level"], "WARN", "{logged}");
    assert!(logged["message"].as_str().is_some_and(|m| m.contains("redis")), "{logged}");
    let wrong = admin("not-the-admin-token", false);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"), "{}", String::from_utf8_lossy(&wrong.stderr));
    let _ = child.kill();
    let _ = child.wait();
    refused(&["serve", "--listen", "127.0.0.1:0", "--admin-token", "short"], "at least 16 characters");
    let _ = std::fs::remove_dir_all(&dir);
}
