//! select(2)'s `fd_set` has 1024 bits: a descriptor of 1024 or more must be refused
//! cleanly (an error that says what to do, a 503 to the client), never written past the
//! end of the set. Both tests fill this process's descriptor table below 1024 with
//! duplicates of /dev/null, so they live in their own test binary and take turns.

mod support;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use c10k_models::event::{Interest, Poller, PollerKind, Select, Token};
use support::{connect, get_request, read_response, send, InProcess};

/// The tests below change the whole process's descriptor table: one at a time.
static FD_TABLE: Mutex<()> = Mutex::new(());

/// Duplicates /dev/null until a duplicate lands at or above `at_least`: then every
/// descriptor below it is taken, and the next socket this process opens is past it.
fn fill_fds_below(at_least: i32) -> Vec<File> {
    let mut held = vec![File::open("/dev/null").unwrap()];
    loop {
        let dup = held[0].try_clone().expect("dup /dev/null (is the open-files limit above 1100?)");
        let fd = dup.as_raw_fd();
        held.push(dup);
        if fd >= at_least {
            return held;
        }
    }
}

#[test]
fn the_select_poller_refuses_to_register_an_fd_at_or_above_fd_setsize() {
    let _turn = FD_TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let mut poller = Select::new().unwrap();
    let held = fill_fds_below(1024);
    let high = held.last().unwrap();
    assert!(high.as_raw_fd() >= 1024);
    let error = poller.register(high.as_raw_fd(), Token(1), Interest::READABLE).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let message = error.to_string();
    assert!(message.contains("FD_SETSIZE") && message.contains("--poller poll"), "unclear error: {message}");
    // Below the limit it is fine, and the poller still works after the refusal.
    let low = held.iter().find(|f| f.as_raw_fd() < 1024).unwrap();
    poller.register(low.as_raw_fd(), Token(2), Interest::READABLE).unwrap();
    let mut events = Vec::new();
    poller.wait(&mut events, Some(std::time::Duration::ZERO)).unwrap();
    assert_eq!(events.len(), 1, "/dev/null is always readable: {events:?}");
}

#[test]
fn a_connection_past_fd_setsize_gets_503_and_the_server_keeps_serving() {
    let _turn = FD_TABLE.lock().unwrap_or_else(|p| p.into_inner());
    // Started first, so that its listener and eventfd sit low in the table. The answer on
    // a connection kept open says it is ready; closing it would free a low descriptor.
    let server = InProcess::start_plain(PollerKind::Select);
    let mut ready = connect(server.port);
    ready.write_all(get_request("/healthz").as_bytes()).unwrap();
    assert_eq!(read_response(&mut ready).status, 200);

    let held = fill_fds_below(1024);
    // Our socket and the server's accepted socket both get numbers past 1023 now.
    let mut client = connect(server.port);
    assert!(client.as_raw_fd() >= 1024, "a descriptor below 1024 was freed meanwhile");
    client.write_all(get_request("/healthz").as_bytes()).unwrap();
    let refused = read_response(&mut client);
    assert_eq!(refused.status, 503, "a connection select cannot watch must get 503:\n{}", refused.head);
    // Closed: an end of stream, or a reset (the request it never read makes close send RST).
    let mut rest = Vec::new();
    match io::Read::read_to_end(&mut client, &mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("after the 503 the connection must be closed, got {other:?} {rest:?}"),
    }

    drop(held);
    assert_eq!(send(server.port, &get_request("/healthz")).status, 200, "the server must go on serving");
    ready.write_all(get_request("/healthz").as_bytes()).unwrap();
    assert_eq!(read_response(&mut ready).status, 200, "and its earlier connections too");
    let log = server.log.lines().join("\n");
    assert!(log.contains("FD_SETSIZE"), "the refusal must be logged clearly; the log was:\n{log}");
}
