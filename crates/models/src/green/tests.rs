//! The scheduler's promises, with coroutines over socket pairs on one thread: blocking-style
//! code parks instead of blocking, a wake-up from another thread or one that came early is
//! never lost, non-blocking mode does not park, and the watchdog names a slow coroutine.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::coroutine::Stacks;
use super::io::{GreenStream, GreenWait};
use super::scheduler::{Fiber, Park, Resumed, Scheduler};
use crate::blocking::{Conn, Wait, Woke};
use crate::event::event_loop::{Handler, Loop, SlowCallback, Watchdog};
use crate::event::{Event, PollerKind, Token};

/// Runs the scheduler's coroutines on a loop until all of them have ended.
struct Harness {
    scheduler: Scheduler,
}

impl Harness {
    fn stop_when_done(&self, lp: &mut Loop<()>) {
        if self.scheduler.len() == 0 {
            lp.stop();
        }
    }
}

impl Handler for Harness {
    type Message = ();
    fn on_ready(&mut self, lp: &mut Loop<()>, event: Event) {
        self.scheduler.on_ready(lp, event);
        self.stop_when_done(lp);
    }
    fn on_timer(&mut self, lp: &mut Loop<()>, token: Token) {
        self.scheduler.on_timer(lp, token);
        self.stop_when_done(lp);
    }
    fn on_woken(&mut self, lp: &mut Loop<()>, token: Token) {
        self.scheduler.on_woken(lp, token);
        self.stop_when_done(lp);
    }
    fn on_message(&mut self, _: &mut Loop<()>, _: Token, (): ()) {}
}

fn new_loop(poller: PollerKind, watchdog: Watchdog) -> (Loop<()>, Harness) {
    let lp = Loop::new(poller.open().unwrap(), watchdog);
    (lp, Harness { scheduler: Scheduler::new(1, Stacks::new(256 * 1024, 4)) })
}

fn pair() -> (Rc<UnixStream>, Rc<UnixStream>) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (Rc::new(a), Rc::new(b))
}

/// Starts `body` on `socket`, runnable on the loop's first tick.
fn spawn(
    lp: &mut Loop<()>,
    harness: &mut Harness,
    socket: &Rc<UnixStream>,
    body: impl FnOnce(&Fiber<'_>, GreenStream<'_, UnixStream>) + 'static,
) {
    let conn = Rc::clone(socket);
    harness
        .scheduler
        .spawn(lp, socket, Park::yield_now(), move |fiber, _| body(fiber, GreenStream::new(conn, fiber)))
        .unwrap();
}

fn read_line(stream: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the peer hung up mid-line");
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap().trim_end().to_string()
}

#[test]
fn two_coroutines_play_ping_pong_over_a_socket_pair_on_one_thread() {
    const ROUNDS: usize = 200;
    let (mut lp, mut harness) = new_loop(PollerKind::Epoll, Watchdog::new(None, |_| {}));
    let (a, b) = pair();
    let transcript = Rc::new(RefCell::new(Vec::new()));

    let log = Rc::clone(&transcript);
    spawn(&mut lp, &mut harness, &a, move |_, mut stream| {
        for i in 0..ROUNDS {
            stream.write_all(format!("ping {i}\n").as_bytes()).unwrap();
            log.borrow_mut().push(format!("a sent ping {i}"));
            let answer = read_line(&mut stream); // parks until b has answered
            log.borrow_mut().push(format!("a got {answer}"));
        }
    });
    let log = Rc::clone(&transcript);
    spawn(&mut lp, &mut harness, &b, move |_, mut stream| {
        for _ in 0..ROUNDS {
            let question = read_line(&mut stream); // parks until a has asked
            log.borrow_mut().push(format!("b got {question}"));
            let answer = question.replace("ping", "pong");
            stream.write_all(format!("{answer}\n").as_bytes()).unwrap();
            log.borrow_mut().push(format!("b sent {answer}"));
        }
    });
    lp.run(&mut harness).unwrap();

    let expected: Vec<String> = (0..ROUNDS)
        .flat_map(|i| {
            [format!("a sent ping {i}"), format!("b got ping {i}"), format!("b sent pong {i}"), format!("a got pong {i}")]
        })
        .collect();
    assert_eq!(*transcript.borrow(), expected);
}

#[test]
fn a_waker_woken_on_another_thread_resumes_a_coroutine_waiting_for_it() {
    // The shape of an offloaded store call: hand the waker to another thread, sleep until
    // it has put the result in place and woken us.
    let (mut lp, mut harness) = new_loop(PollerKind::Poll, Watchdog::new(None, |_| {}));
    let (a, _b) = pair();
    let result = Arc::new(Mutex::new(None::<u32>));
    let woke = Rc::new(RefCell::new(Vec::new()));
    let (to_worker, jobs) = mpsc::channel::<std::task::Waker>();
    let slot = Arc::clone(&result);
    let worker = thread::spawn(move || {
        let waker = jobs.recv().unwrap();
        *slot.lock().unwrap() = Some(42);
        waker.wake();
    });
    let seen = Rc::clone(&woke);
    let answer = Arc::clone(&result);
    spawn(&mut lp, &mut harness, &a, move |fiber, _| {
        let wait = GreenWait::new(fiber);
        to_worker.send(wait.waker()).unwrap();
        loop {
            if answer.lock().unwrap().is_some() {
                return;
            }
            seen.borrow_mut().push(wait.wait(None, None).unwrap());
        }
    });
    lp.run(&mut harness).unwrap();
    worker.join().unwrap();
    assert_eq!(*result.lock().unwrap(), Some(42));
    assert!(woke.borrow().iter().all(|w| *w == Woke::Waker), "{:?}", woke.borrow());
}

#[test]
fn a_wake_that_comes_while_parked_on_the_socket_ends_the_next_wait_at_once() {
    let (mut lp, mut harness) = new_loop(PollerKind::Epoll, Watchdog::new(None, |_| {}));
    let (a, b) = pair();
    let (waker_tx, waker_rx) = std::sync::mpsc::channel();
    let outcome = Rc::new(RefCell::new(None));
    let seen = Rc::clone(&outcome);
    spawn(&mut lp, &mut harness, &a, move |fiber, mut stream| {
        let wait = GreenWait::new(fiber);
        waker_tx.send(wait.waker()).unwrap();
        // Parks on the socket (unwakeable); b wakes us, then writes.
        assert_eq!(read_line(&mut stream), "hello");
        let started = Instant::now();
        let woke = wait.wait(None, Some(started + Duration::from_secs(10))).unwrap();
        *seen.borrow_mut() = Some((woke, started.elapsed()));
    });
    spawn(&mut lp, &mut harness, &b, move |_, mut stream| {
        let waker: std::task::Waker = waker_rx.try_recv().expect("a runs first and hands over its waker");
        waker.wake();
        stream.write_all(b"hello\n").unwrap();
    });
    lp.run(&mut harness).unwrap();
    let (woke, took) = outcome.borrow_mut().take().expect("a finished");
    assert_eq!(woke, Woke::Waker, "the early wake-up was lost (waited {took:?})");
}

#[test]
fn in_non_blocking_mode_a_read_returns_would_block_instead_of_parking() {
    let (mut lp, mut harness) = new_loop(PollerKind::Epoll, Watchdog::new(None, |_| {}));
    let (a, _b) = pair();
    let result = Rc::new(RefCell::new(None));
    let seen = Rc::clone(&result);
    spawn(&mut lp, &mut harness, &a, move |_, mut stream| {
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        *seen.borrow_mut() = Some(stream.read(&mut buf).map_err(|e| e.kind()));
    });
    lp.run(&mut harness).unwrap();
    assert_eq!(*result.borrow(), Some(Err(std::io::ErrorKind::WouldBlock)));
}

#[test]
fn a_coroutine_whose_non_blocking_reads_never_block_yields_at_the_drivers_pause() {
    // The driver's shape: non-blocking reads (which never park, the buffer may be shared),
    // then `Wait::pause` between steps. A socket with plenty to read never blocks, so only
    // the budget lets the other coroutine run before the reader is done.
    const READS: usize = 300;
    let (mut lp, mut harness) = new_loop(PollerKind::Epoll, Watchdog::new(None, |_| {}));
    let (a, b) = pair();
    (&*b).write_all(&[b'x'; READS]).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let reads = Rc::clone(&log);
    spawn(&mut lp, &mut harness, &a, move |fiber, mut stream| {
        stream.set_nonblocking(true).unwrap();
        let wait = GreenWait::new(fiber);
        for _ in 0..READS {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).unwrap(), 1);
            reads.borrow_mut().push('r');
            wait.pause();
        }
    });
    let other = Rc::clone(&log);
    let (c, _d) = pair();
    spawn(&mut lp, &mut harness, &c, move |_, _| other.borrow_mut().push('o'));
    lp.run(&mut harness).unwrap();
    let log = log.borrow();
    let other_ran_after = log.iter().position(|&c| c == 'o').expect("the other coroutine ran");
    assert!(
        other_ran_after < READS,
        "the other coroutine ran only after all {READS} reads: the reader never yielded"
    );
}

#[test]
fn a_wait_on_a_quiet_socket_ends_at_its_deadline_and_says_so() {
    let (mut lp, mut harness) = new_loop(PollerKind::Select, Watchdog::new(None, |_| {}));
    let (a, _b) = pair();
    let result = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&result);
    spawn(&mut lp, &mut harness, &a, move |fiber, stream| {
        let deadline = Instant::now() + Duration::from_millis(20);
        let wait = GreenWait::new(fiber);
        let woke = wait.wait(Some((stream.fd(), crate::blocking::Interest::Read)), Some(deadline)).unwrap();
        assert!(Instant::now() >= deadline, "the wait gave up early");
        seen.borrow_mut().push(format!("{woke:?}"));
    });
    lp.run(&mut harness).unwrap();
    assert_eq!(*result.borrow(), ["Deadline"]);
}

#[test]
fn the_watchdog_names_the_route_of_a_coroutine_that_holds_the_loop() {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&reports);
    let watchdog = Watchdog::new(Some(Duration::from_millis(10)), move |slow: &SlowCallback| {
        sink.lock().unwrap().push(slow.doing.clone());
    });
    let (mut lp, mut harness) = new_loop(PollerKind::Poll, watchdog);
    let (a, _b) = pair();
    spawn(&mut lp, &mut harness, &a, move |fiber, _| {
        let wait = GreenWait::new(fiber);
        wait.doing(format_args!("GET {}", "/cpu"));
        // Holds the thread, as a CPU-bound handler or an inline query would.
        thread::sleep(Duration::from_millis(30));
        // Parks once, so that the slow stretch ends in a resume of its own.
        assert_eq!(fiber.park(Park::yield_now()), Resumed::Deadline);
    });
    lp.run(&mut harness).unwrap();
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("GET /cpu") && reports[0].contains("coroutine"), "{reports:?}");
}
