//! The core stays sans-IO (point 1 of the house style, shared/STYLE.md beside the
//! repository): no source file under `crates/core/src` names a socket, a thread, the file
//! system, an async runtime, libc, a clock read or `unsafe`.
//!
//! A shortcut, labelled as one: this is a line grep. Lines whose first non-blank characters
//! are `//` (comments and docs) are skipped, and a word must stand alone (so
//! `#![forbid(unsafe_code)]` is not `unsafe`). `use std::{net, ..}` would slip through;
//! review is expected to catch that.

use std::path::{Path, PathBuf};

/// What the core must not use, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::net", "sockets belong to the concurrency models"),
    ("std::thread", "threads belong to the concurrency models"),
    ("std::fs", "files belong to the store and the binary"),
    ("tokio", "the async runtime belongs to its model"),
    ("libc", "system calls belong to the reactors"),
    ("Instant::now", "time comes in as an argument"),
    ("SystemTime::now", "time comes in as an argument"),
    ("unsafe", "the core is #![forbid(unsafe_code)]"),
];

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every forbidden word on a line of code, standing alone (not inside a longer identifier).
fn offences(line: &str) -> Vec<&'static str> {
    if line.trim_start().starts_with("//") {
        return Vec::new();
    }
    let bytes = line.as_bytes();
    FORBIDDEN
        .iter()
        .filter(|(word, _)| {
            line.match_indices(word).any(|(at, _)| {
                let before = at.checked_sub(1).map(|i| bytes[i]);
                let after = bytes.get(at + word.len()).copied();
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
        .map(|(word, _)| *word)
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_sources_do_no_io_read_no_clock_and_hold_no_unsafe() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 3, "expected the core sources under {}", src.display());

    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            for word in offences(line) {
                let why = FORBIDDEN.iter().find(|(w, _)| *w == word).map(|(_, why)| *why).unwrap_or_default();
                found.push(format!("{}:{}: `{word}` ({why}): {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "the core must stay sans-IO:\n{}", found.join("\n"));
}

#[test]
fn the_grep_catches_what_it_should_and_only_that() {
    assert_eq!(offences("use std::net::TcpStream;"), ["std::net"]);
    assert_eq!(offences("    let t = std::time::Instant::now();"), ["Instant::now"]);
    assert_eq!(offences("let n = SystemTime::now();"), ["SystemTime::now"]);
    assert_eq!(offences("std::thread::spawn(f);"), ["std::thread"]);
    assert_eq!(offences("use std::fs;"), ["std::fs"]);
    assert_eq!(offences("tokio::spawn(async {});"), ["tokio"]);
    assert_eq!(offences("unsafe { libc::close(fd) };"), ["libc", "unsafe"]);
    assert!(offences("#![forbid(unsafe_code)]").is_empty());
    assert!(offences("// unsafe is mentioned in a comment").is_empty());
    assert!(offences("    //! std::net is named in a doc").is_empty());
    assert!(offences("let tokio_like = 1; let not_libcrate = 2;").is_empty());
}
