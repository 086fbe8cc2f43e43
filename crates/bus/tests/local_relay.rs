//! The local relay, master and workers in one test process: what one worker publishes
//! reaches every other worker once, never itself, and `publish` returns once they all have
//! it; `ready` and a closed end are reported to the master; a worker that stops reading
//! never blocks the master nor, past the delivery timeout, the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use c10k_bus::{Bus, LocalRelay, Notice, Switchboard, DELIVERY_TIMEOUT};
use c10k_core::store::{Message, MessageId, RoomId};

const WAIT: Duration = Duration::from_secs(10);

fn message(id: u64, body: &str) -> Message {
    Message { id: MessageId(id), room: RoomId::new("main").unwrap(), body: body.into(), from: "ann".into(), time_ms: 1764140000000 }
}

/// A worker end whose relay thread hands what it receives to a channel.
fn worker(board: &mut Switchboard, key: u32) -> (LocalRelay, mpsc::Receiver<Message>) {
    let (master_end, worker_end) = Switchboard::pair().unwrap();
    board.add(key, master_end).unwrap();
    let relay = LocalRelay::new(worker_end).unwrap();
    let (tx, rx) = mpsc::channel();
    relay.subscribe(Arc::new(move |m| {
        let _ = tx.send(m);
    }))
    .unwrap();
    (relay, rx)
}

/// The master's loop, reduced to the relay: poll(2) over the ends, on a thread, until
/// stopped; the notices go to a channel. Stopping gives the switchboard back.
struct Master {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Switchboard>,
    notices: mpsc::Receiver<Notice>,
}

impl Master {
    fn run(mut board: Switchboard) -> Master {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, notices) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let interests = board.interests();
                let mut fds: Vec<libc::pollfd> = interests
                    .iter()
                    .map(|&(_, fd, w)| libc::pollfd { fd, events: if w { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN }, revents: 0 })
                    .collect();
                // SAFETY: `fds` is a live array of `fds.len()` pollfd. The 20 ms timeout only
                // bounds how late the stop flag is seen.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
                for (&(key, _, _), p) in interests.iter().zip(&fds) {
                    if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                        board.readable(key).into_iter().for_each(|n| tx.send(n).unwrap());
                    }
                    if p.revents & libc::POLLOUT != 0 {
                        board.writable(key).into_iter().for_each(|n| tx.send(n).unwrap());
                    }
                }
            }
            board
        });
        Master { stop, thread, notices }
    }

    fn stop(self) -> Switchboard {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_message_published_by_one_worker_reaches_every_other_worker_once_before_publish_returns() {
    let mut board = Switchboard::new();
    let (a, from_a) = worker(&mut board, 1);
    let (_b, at_b) = worker(&mut board, 2);
    let (_c, at_c) = worker(&mut board, 3);
    let master = Master::run(board);

    let sent = message(7, "hello </script> \n \"world\" ✓");
    let started = Instant::now();
    a.publish(&sent).unwrap();
    assert!(started.elapsed() < DELIVERY_TIMEOUT, "publish returned on `done`, not on its timeout");
    // Both have it already: publish waited for their acknowledgements.
    assert_eq!(at_b.try_recv().unwrap(), sent);
    assert_eq!(at_c.try_recv().unwrap(), sent);

    master.stop();
    assert!(from_a.try_recv().is_err(), "the sender must not receive its own message");
    assert!(at_b.try_recv().is_err() && at_c.try_recv().is_err(), "each worker receives it once");
}

#[test]
fn a_lone_worker_is_done_at_once() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    let master = Master::run(board);
    let started = Instant::now();
    a.publish(&message(1, "alone")).unwrap();
    assert!(started.elapsed() < DELIVERY_TIMEOUT);
    master.stop();
}

#[test]
fn messages_from_one_worker_arrive_in_the_order_sent_even_from_several_threads() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    let (_b, at_b) = worker(&mut board, 2);
    let master = Master::run(board);
    let a = Arc::new(a);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let a = Arc::clone(&a);
            thread::spawn(move || (0..25).for_each(|i| a.publish(&message(t * 25 + i + 1, "x")).unwrap()))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let mut ids: Vec<u64> = (0..100).map(|_| at_b.recv_timeout(WAIT).unwrap().id.0).collect();
    // Each thread's own messages keep their order; all arrive, once.
    for t in 0..4 {
        let own: Vec<u64> = ids.iter().copied().filter(|id| (id - 1) / 25 == t).collect();
        assert_eq!(own, (t * 25 + 1..=t * 25 + 25).collect::<Vec<_>>());
    }
    ids.sort();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    master.stop();
}

#[test]
fn ready_is_reported_to_the_master_and_not_relayed() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    let (_b, at_b) = worker(&mut board, 2);
    let master = Master::run(board);
    a.announce_ready().unwrap();
    assert_eq!(master.notices.recv_timeout(WAIT).unwrap(), Notice::Ready(1));
    master.stop();
    assert!(at_b.try_recv().is_err(), "`ready` is for the master only");
}

#[test]
fn a_worker_that_exits_is_reported_closed_and_no_longer_waited_for() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    let (master_end, worker_end) = Switchboard::pair().unwrap();
    board.add(2, master_end).unwrap();
    // The process exits: every descriptor of its end closes.
    drop(LocalRelay::new(worker_end).unwrap());
    let master = Master::run(board);
    assert_eq!(master.notices.recv_timeout(WAIT).unwrap(), Notice::Closed(2));
    let started = Instant::now();
    a.publish(&message(1, "x")).unwrap();
    assert!(started.elapsed() < DELIVERY_TIMEOUT, "nobody left to wait for");
    assert!(master.stop().len() == 1);
}

#[test]
fn a_worker_that_never_reads_delays_publish_only_until_the_timeout_and_blocks_nobody_else() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    // Worker 2 never reads: no relay thread.
    let (master_end, _silent) = Switchboard::pair().unwrap();
    board.add(2, master_end).unwrap();
    let (_c, at_c) = worker(&mut board, 3);
    let master = Master::run(board);

    let started = Instant::now();
    a.publish(&message(1, "x")).unwrap();
    assert!(started.elapsed() >= DELIVERY_TIMEOUT, "the silent worker owes an ack");
    assert!(started.elapsed() < DELIVERY_TIMEOUT * 3, "but publish gives up");
    assert_eq!(at_c.recv_timeout(WAIT).unwrap().id.0, 1, "the reading worker got it meanwhile");
    master.stop();
}

#[test]
fn the_master_never_blocks_on_a_full_worker_and_drops_only_its_overflow() {
    let mut board = Switchboard::new();
    let (master_a, worker_a) = Switchboard::pair().unwrap();
    board.add(1, master_a).unwrap();
    let (master_silent, _silent) = Switchboard::pair().unwrap();
    board.add(2, master_silent).unwrap();
    // Worker 1 writes message lines directly (no waiting for `done`), far more than the
    // silent worker's queue holds; the master thread must keep up without blocking.
    let master = Master::run(board);
    let line = format!("{{\"id\":1,\"room\":\"main\",\"body\":\"{}\",\"from\":\"\",\"time\":0}}\n", "y".repeat(4000));
    let count = Switchboard::MAX_QUEUED / line.len() + 200;
    let mut writer = worker_a;
    for _ in 0..count {
        std::io::Write::write_all(&mut writer, line.as_bytes()).unwrap();
    }
    let board = master.stop();
    let (_, _, wants_write) = board.interests().into_iter().find(|(k, _, _)| *k == 2).unwrap();
    assert!(wants_write, "what the silent worker has not read stays queued, up to the cap");
}
