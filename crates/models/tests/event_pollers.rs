//! The poller contract of `event/mod.rs`, checked on each poller: one function per
//! promise, run once per poller by `poller_contract!` (as ripgrep's `rgtest!` runs a test
//! once per regex engine). Sockets are Unix socket pairs: no network at all.
//!
//! "Nothing is reported" is checked with a short wait that a correct poller always
//! sits out; "something is reported" with a long bound a correct poller never reaches.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use c10k_models::event::{Epoll, Event, Interest, PollPoller, Poller, Select, Token};

/// Long enough that only a broken poller reaches it.
const BOUND: Duration = Duration::from_secs(10);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_millis(50);

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// One wait with `timeout`; the events it reported.
fn wait(poller: &mut dyn Poller, timeout: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    poller.wait(&mut events, Some(timeout)).unwrap();
    events
}

/// Waits (within [`BOUND`]) until something is reported.
fn wait_for_events(poller: &mut dyn Poller) -> Vec<Event> {
    let deadline = Instant::now() + BOUND;
    loop {
        let events = wait(poller, deadline.saturating_duration_since(Instant::now()));
        if !events.is_empty() {
            return events;
        }
        assert!(Instant::now() < deadline, "nothing was reported within {BOUND:?}");
    }
}

pub fn a_registered_socket_with_data_is_reported_readable_with_its_token(poller: &mut dyn Poller) {
    let (ours, mut theirs) = pair();
    poller.register(ours.as_raw_fd(), Token(42), Interest::READABLE).unwrap();
    assert_eq!(wait(poller, QUIET), [], "nothing was sent yet");
    theirs.write_all(b"x").unwrap();
    assert_eq!(wait_for_events(poller), [Event { token: Token(42), readable: true, writable: false }]);
}

pub fn readiness_is_level_triggered_until_the_data_is_read(poller: &mut dyn Poller) {
    let (mut ours, mut theirs) = pair();
    poller.register(ours.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    theirs.write_all(b"xy").unwrap();
    for _ in 0..3 {
        assert_eq!(wait_for_events(poller), [Event { token: Token(1), readable: true, writable: false }]);
    }
    let mut buf = [0u8; 8];
    assert_eq!(ours.read(&mut buf).unwrap(), 2);
    assert_eq!(wait(poller, QUIET), [], "drained: no longer readable");
}

pub fn a_socket_with_room_to_write_is_reported_writable(poller: &mut dyn Poller) {
    let (ours, _theirs) = pair();
    poller.register(ours.as_raw_fd(), Token(7), Interest::WRITABLE).unwrap();
    assert_eq!(wait_for_events(poller), [Event { token: Token(7), readable: false, writable: true }]);
    poller.reregister(ours.as_raw_fd(), Token(8), Interest::READABLE).unwrap();
    assert_eq!(wait(poller, QUIET), [], "no longer asked for writable, and nothing to read");
}

pub fn a_hang_up_is_reported_as_readable_and_read_returns_zero(poller: &mut dyn Poller) {
    let (mut ours, theirs) = pair();
    poller.register(ours.as_raw_fd(), Token(3), Interest::READABLE).unwrap();
    drop(theirs);
    assert_eq!(wait_for_events(poller), [Event { token: Token(3), readable: true, writable: false }]);
    assert_eq!(ours.read(&mut [0u8; 8]).unwrap(), 0);
}

pub fn interest_none_reports_nothing_not_even_a_hang_up_until_asked_again(poller: &mut dyn Poller) {
    let (ours, mut theirs) = pair();
    poller.register(ours.as_raw_fd(), Token(5), Interest::READABLE).unwrap();
    poller.reregister(ours.as_raw_fd(), Token(5), Interest::NONE).unwrap();
    theirs.write_all(b"x").unwrap();
    drop(theirs);
    let started = Instant::now();
    assert_eq!(wait(poller, QUIET), [], "paused: neither the data nor the hang-up is reported");
    // Not even as an early return with nothing in it, which a loop would turn into a spin.
    assert!(started.elapsed() >= QUIET, "the paused socket ended the wait after {:?}", started.elapsed());
    poller.reregister(ours.as_raw_fd(), Token(5), Interest::READABLE).unwrap();
    assert_eq!(wait_for_events(poller), [Event { token: Token(5), readable: true, writable: false }]);
}

pub fn a_deregistered_socket_is_not_reported(poller: &mut dyn Poller) {
    let (ours, mut theirs) = pair();
    poller.register(ours.as_raw_fd(), Token(9), Interest::READABLE).unwrap();
    poller.deregister(ours.as_raw_fd()).unwrap();
    theirs.write_all(b"x").unwrap();
    assert_eq!(wait(poller, QUIET), []);
    // And it can be registered again afterwards, under another token.
    poller.register(ours.as_raw_fd(), Token(10), Interest::READABLE).unwrap();
    assert_eq!(wait_for_events(poller), [Event { token: Token(10), readable: true, writable: false }]);
}

pub fn registration_mistakes_are_errors_not_silence(poller: &mut dyn Poller) {
    let (ours, _theirs) = pair();
    let fd = ours.as_raw_fd();
    assert_eq!(poller.reregister(fd, Token(1), Interest::READABLE).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(poller.deregister(fd).unwrap_err().kind(), io::ErrorKind::NotFound);
    poller.register(fd, Token(1), Interest::READABLE).unwrap();
    assert_eq!(poller.register(fd, Token(2), Interest::READABLE).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
}

pub fn a_wait_with_nothing_ready_lasts_at_least_its_timeout(poller: &mut dyn Poller) {
    let (ours, _theirs) = pair();
    poller.register(ours.as_raw_fd(), Token(1), Interest::READABLE).unwrap();
    let timeout = Duration::from_millis(30);
    let started = Instant::now();
    assert_eq!(wait(poller, timeout), []);
    // Timeouts round up: a timer due at the end of the wait is due when it returns.
    assert!(started.elapsed() >= timeout, "returned after {:?}, before its {timeout:?}", started.elapsed());
}

pub fn a_wake_from_another_thread_ends_the_wait_and_reports_no_event(poller: &mut dyn Poller) {
    let notifier = poller.notifier();
    let (ready, go) = mpsc::channel::<()>();
    let waker = thread::spawn(move || {
        go.recv().unwrap();
        notifier.wake();
    });
    // Whether the wake lands before or during the wait, the wait must end early.
    ready.send(()).unwrap();
    let started = Instant::now();
    let mut events = Vec::new();
    poller.wait(&mut events, Some(BOUND)).unwrap();
    waker.join().unwrap();
    assert!(started.elapsed() < BOUND, "the wake did not end the wait");
    assert_eq!(events, [], "the notifier is never reported as an event");
}

pub fn wakes_coalesce_and_the_notifier_is_drained(poller: &mut dyn Poller) {
    let notifier = poller.notifier();
    for _ in 0..10 {
        notifier.wake();
    }
    let started = Instant::now();
    assert_eq!(wait(poller, BOUND), []);
    assert!(started.elapsed() < BOUND, "the wakes did not end the wait");
    let started = Instant::now();
    assert_eq!(wait(poller, QUIET), []);
    assert!(started.elapsed() >= QUIET, "ten wakes must cost one early return, not ten");
}

macro_rules! poller_contract {
    ($poller:ident: $new:expr, { $($promise:ident),* $(,)? }) => {
        mod $poller {
            use super::*;
            $(
                #[test]
                fn $promise() {
                    let mut poller: Box<dyn Poller> = Box::new($new);
                    super::$promise(&mut *poller);
                }
            )*
        }
    };
}

macro_rules! every_poller {
    ($($promise:ident),* $(,)?) => {
        poller_contract!(select: Select::new().unwrap(), { $($promise),* });
        poller_contract!(poll: PollPoller::new().unwrap(), { $($promise),* });
        poller_contract!(epoll: Epoll::new().unwrap(), { $($promise),* });
    };
}

every_poller!(
    a_registered_socket_with_data_is_reported_readable_with_its_token,
    readiness_is_level_triggered_until_the_data_is_read,
    a_socket_with_room_to_write_is_reported_writable,
    a_hang_up_is_reported_as_readable_and_read_returns_zero,
    interest_none_reports_nothing_not_even_a_hang_up_until_asked_again,
    a_deregistered_socket_is_not_reported,
    registration_mistakes_are_errors_not_silence,
    a_wait_with_nothing_ready_lasts_at_least_its_timeout,
    a_wake_from_another_thread_ends_the_wait_and_reports_no_event,
    wakes_coalesce_and_the_notifier_is_drained,
);

#[test]
fn capabilities_are_declared_select_stops_at_fd_setsize() {
    assert_eq!(Select::new().unwrap().capabilities().max_fd, Some(1024));
    assert_eq!(PollPoller::new().unwrap().capabilities().max_fd, None);
    assert_eq!(Epoll::new().unwrap().capabilities().max_fd, None);
    for caps in [
        Select::new().unwrap().capabilities(),
        PollPoller::new().unwrap().capabilities(),
        Epoll::new().unwrap().capabilities(),
    ] {
        assert!(!caps.edge_triggered, "{}: the handlers rely on level triggering", caps.name);
    }
}
