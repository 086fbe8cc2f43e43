//! The local relay, master and workers in one test process: what one worker publishes
//! reaches every other worker once, never itself; `ready` and a closed end are reported
//! to the master; a worker that stops reading never blocks the master.

use std::sync::mpsc;
use std::time::Duration;

use c10k_bus::{Bus, LocalRelay, Notice, Switchboard};
use c10k_core::store::{Message, MessageId, RoomId};

const WAIT: Duration = Duration::from_secs(10);

fn message(id: u64, body: &str) -> Message {
    Message { id: MessageId(id), room: RoomId::new("main").unwrap(), body: body.into(), from: "ann".into(), time_ms: 1764140000000 }
}

/// A worker end that hands what it receives to a channel.
fn worker(board: &mut Switchboard, key: u32) -> (LocalRelay, mpsc::Receiver<Message>) {
    let (master_end, worker_end) = Switchboard::pair().unwrap();
    board.add(key, master_end).unwrap();
    let relay = LocalRelay::new(worker_end).unwrap();
    let (tx, rx) = mpsc::channel();
    relay.subscribe(Box::new(move |m| tx.send(m).unwrap())).unwrap();
    (relay, rx)
}

#[test]
fn a_message_published_by_one_worker_reaches_every_other_worker_once() {
    let mut board = Switchboard::new();
    let (a, from_a) = worker(&mut board, 1);
    let (_b, at_b) = worker(&mut board, 2);
    let (_c, at_c) = worker(&mut board, 3);

    let sent = message(7, "hello </script> \n \"world\" ✓");
    a.publish(&sent).unwrap();
    // The line is in the master's socket buffer once publish returns.
    assert_eq!(board.readable(1), vec![]);

    assert_eq!(at_b.recv_timeout(WAIT).unwrap(), sent);
    assert_eq!(at_c.recv_timeout(WAIT).unwrap(), sent);
    // The sender hears nothing back: it published the message itself.
    drop(board);
    assert!(from_a.recv_timeout(WAIT).is_err(), "the sender must not receive its own message");
    assert!(at_b.try_recv().is_err() && at_c.try_recv().is_err(), "each worker receives it once");
}

#[test]
fn lines_from_one_worker_arrive_in_the_order_sent() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    let (_b, at_b) = worker(&mut board, 2);
    for id in 1..=100 {
        a.publish(&message(id, "x")).unwrap();
    }
    board.readable(1);
    let ids: Vec<u64> = (0..100).map(|_| at_b.recv_timeout(WAIT).unwrap().id.0).collect();
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
}

#[test]
fn ready_is_reported_to_the_master_and_not_relayed() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    let (_b, at_b) = worker(&mut board, 2);
    a.announce_ready().unwrap();
    assert_eq!(board.readable(1), vec![Notice::Ready(1)]);
    drop(board);
    assert!(at_b.recv_timeout(WAIT).is_err(), "`ready` is for the master only");
}

#[test]
fn a_worker_that_exits_is_reported_closed() {
    let mut board = Switchboard::new();
    let (master_end, worker_end) = Switchboard::pair().unwrap();
    board.add(1, master_end).unwrap();
    // The process exits: every descriptor of its end closes.
    drop(LocalRelay::new(worker_end).unwrap());
    assert_eq!(board.readable(1), vec![Notice::Closed(1)]);
    assert!(board.is_empty());
}

#[test]
fn a_worker_that_never_reads_does_not_block_the_master_or_the_others() {
    let mut board = Switchboard::new();
    let (a, _) = worker(&mut board, 1);
    // Worker 2 never reads: no subscriber thread.
    let (master_end, _silent) = Switchboard::pair().unwrap();
    board.add(2, master_end).unwrap();
    let (_c, at_c) = worker(&mut board, 3);

    let body = "y".repeat(4000);
    let count = Switchboard::MAX_QUEUED / 4000 + 200;
    for id in 1..=count as u64 {
        a.publish(&message(id, &body)).unwrap();
        board.readable(1);
    }
    // The reading worker got everything, in order; the master never blocked.
    for id in 1..=count as u64 {
        assert_eq!(at_c.recv_timeout(WAIT).unwrap().id.0, id);
    }
    let (_, _, wants_write) = board.interests().into_iter().find(|(k, _, _)| *k == 2).unwrap();
    assert!(wants_write, "what the silent worker has not read stays queued");
}
