//! The hub's promises: cursor rules, wake-ups, eviction, order and exactly-once delivery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};

use c10k_core::chat::render::Rendered;
use c10k_core::hub::{Batch, Cursor, Hub, Published};
use c10k_core::store::{Message, MessageId, RoomId};

/// A waker that counts how often it was woken.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter::default());
    (counter.clone(), Waker::from(counter))
}

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

fn msg(room_name: &str, id: u64) -> Arc<Rendered> {
    Arc::new(Rendered::new(Message {
        id: MessageId(id),
        room: room(room_name),
        body: format!("message {id}"),
        from: String::new(),
        time_ms: id,
    }))
}

fn ids(batch: &Batch) -> Vec<u64> {
    batch.messages.iter().map(|m| m.message.id.0).collect()
}

fn hub_with(history: usize, count: u64) -> Arc<Hub> {
    let hub = Arc::new(Hub::new(history));
    for id in 1..=count {
        assert_eq!(hub.publish(msg("r", id)), Published::Released);
    }
    hub
}

#[test]
fn start_cursor_reads_the_whole_history() {
    let hub = hub_with(10, 3);
    let batch = hub.read(&room("r"), &Cursor::Start);
    assert_eq!(ids(&batch), [1, 2, 3]);
    assert!(!batch.reset);
    assert_eq!(batch.last_id, MessageId(3));
}

#[test]
fn after_cursor_reads_exactly_the_later_messages() {
    let hub = hub_with(10, 5);
    assert_eq!(ids(&hub.read(&room("r"), &Cursor::After(MessageId(0)))), [1, 2, 3, 4, 5]);
    assert_eq!(ids(&hub.read(&room("r"), &Cursor::After(MessageId(3)))), [4, 5]);
    let at_end = hub.read(&room("r"), &Cursor::After(MessageId(5)));
    assert!(at_end.messages.is_empty() && !at_end.reset);
}

#[test]
fn history_is_bounded_and_an_evicted_cursor_resets() {
    let hub = hub_with(3, 10);
    let all = hub.read(&room("r"), &Cursor::Start);
    assert_eq!(ids(&all), [8, 9, 10]);
    // 7 is the last evicted: resuming from it loses nothing.
    let from_7 = hub.read(&room("r"), &Cursor::After(MessageId(7)));
    assert_eq!((ids(&from_7), from_7.reset), (vec![8, 9, 10], false));
    // 6 is too old: 7 is gone, so the reader must be told.
    let from_6 = hub.read(&room("r"), &Cursor::After(MessageId(6)));
    assert_eq!((ids(&from_6), from_6.reset), (vec![8, 9, 10], true));
}

#[test]
fn a_cursor_beyond_the_newest_id_resets() {
    let hub = hub_with(10, 2);
    let batch = hub.read(&room("r"), &Cursor::After(MessageId(9)));
    assert_eq!((ids(&batch), batch.reset), (vec![1, 2], true));
    let empty_room = hub.read(&room("nobody"), &Cursor::After(MessageId(4)));
    assert!(empty_room.reset && empty_room.messages.is_empty());
}

#[test]
fn tornado_cursor_rules() {
    let hub = hub_with(10, 4);
    let read = |c: Option<&str>| ids(&hub.read(&room("r"), &Cursor::Tornado(c.map(str::to_string))));
    assert_eq!(read(None), [1, 2, 3, 4], "absent cursor: the whole cache");
    assert_eq!(read(Some("2")), [3, 4]);
    assert_eq!(read(Some("4")), Vec::<u64>::new(), "the newest id: nothing yet");
    assert_eq!(read(Some("a2a2c3f0-uuid")), [1, 2, 3, 4], "unknown cursor: the whole cache");
    assert_eq!(read(Some("02")), [1, 2, 3, 4], "ids compare as strings, as in Tornado");
}

#[test]
fn a_waiting_reader_is_woken_once_by_the_next_message_and_reads_it() {
    let hub = hub_with(10, 2);
    let (count, waker) = waker();
    let mut sub = hub.subscribe(room("r"), Cursor::After(MessageId(2)));
    assert!(sub.poll_next(&waker).is_pending());
    assert!(sub.poll_next(&waker).is_pending(), "polling again re-registers, no duplicate");
    assert_eq!(hub.waiting(), 1);
    hub.publish(msg("r", 3));
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    let Poll::Ready(batch) = sub.poll_next(&waker) else { panic!("woken but nothing to read") };
    assert_eq!(ids(&batch), [3]);
    assert!(sub.poll_next(&waker).is_pending(), "the cursor advanced past 3");
}

#[test]
fn messages_in_another_room_do_not_wake() {
    let hub = hub_with(10, 1);
    let (count, waker) = waker();
    let mut sub = hub.subscribe(room("r"), Cursor::After(MessageId(1)));
    assert!(sub.poll_next(&waker).is_pending());
    hub.publish(msg("other", 1));
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
}

#[test]
fn dropping_a_subscription_forgets_its_waker_at_once() {
    let hub = hub_with(10, 1);
    let (count, waker) = waker();
    let mut sub = hub.subscribe(room("r"), Cursor::After(MessageId(1)));
    assert!(sub.poll_next(&waker).is_pending());
    drop(sub);
    assert_eq!(hub.waiting(), 0);
    hub.publish(msg("r", 2));
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
}

#[test]
fn out_of_order_publishes_are_released_in_id_order() {
    let hub = hub_with(10, 1);
    let (count, waker) = waker();
    let mut sub = hub.subscribe(room("r"), Cursor::After(MessageId(1)));
    assert!(sub.poll_next(&waker).is_pending());
    assert_eq!(
        hub.publish(msg("r", 3)),
        Published::Held { missing_from: MessageId(2), missing_to: MessageId(2) }
    );
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "3 must wait for 2");
    assert!(sub.poll_next(&waker).is_pending());
    assert_eq!(hub.publish(msg("r", 2)), Published::Released);
    let Poll::Ready(batch) = sub.poll_next(&waker) else { panic!("2 and 3 should be readable") };
    assert_eq!(ids(&batch), [2, 3]);
}

#[test]
fn duplicates_are_dropped() {
    let hub = hub_with(10, 3);
    assert_eq!(hub.publish(msg("r", 2)), Published::Duplicate);
    assert_eq!(hub.publish(msg("r", 5)), Published::Held { missing_from: MessageId(4), missing_to: MessageId(4) });
    assert_eq!(hub.publish(msg("r", 5)), Published::Duplicate);
    assert_eq!(ids(&hub.read(&room("r"), &Cursor::Start)), [1, 2, 3]);
}

#[test]
fn a_resume_that_cannot_continue_is_reported_on_the_first_poll() {
    let hub = hub_with(2, 5);
    let (_, waker) = waker();
    let mut sub = hub.subscribe(room("r"), Cursor::After(MessageId(1)));
    let Poll::Ready(batch) = sub.poll_next(&waker) else { panic!("a reset is news") };
    assert!(batch.reset);
    assert_eq!(ids(&batch), [4, 5]);
}

#[test]
fn a_reader_that_falls_behind_the_history_is_told() {
    let hub = hub_with(3, 1);
    let (_, waker) = waker();
    let mut sub = hub.subscribe(room("r"), Cursor::Start);
    assert!(matches!(sub.poll_next(&waker), Poll::Ready(b) if ids(&b) == [1]));
    for id in 2..=6 {
        hub.publish(msg("r", id));
    }
    let Poll::Ready(batch) = sub.poll_next(&waker) else { panic!("news expected") };
    assert!(batch.reset, "messages 2 and 3 were evicted before this reader saw them");
}

#[test]
fn preload_sets_the_newest_id() {
    let hub = Arc::new(Hub::new(2));
    let messages = (1..=4).map(|id| msg("r", id).message.clone()).collect();
    hub.preload(&room("r"), messages);
    assert_eq!(hub.last_id(&room("r")), MessageId(4));
    assert_eq!(ids(&hub.read(&room("r"), &Cursor::Start)), [3, 4]);
    assert_eq!(hub.publish(msg("r", 5)), Published::Released);
}

/// Nodes sharing rooms over a network bus: a client that resumes on a node that has not
/// heard of its newest message yet waits for it there, instead of being sent the history
/// again with a reset.
#[test]
fn with_ahead_cursors_waiting_a_cursor_beyond_the_newest_id_waits_for_it() {
    let hub = Arc::new(Hub::new(10));
    hub.publish(msg("main", 1));
    assert!(hub.read(&room("main"), &Cursor::After(MessageId(3))).reset, "by default: a reset");
    hub.wait_for_ahead_cursors();
    let ahead = hub.read(&room("main"), &Cursor::After(MessageId(3)));
    assert!(ahead.messages.is_empty() && !ahead.reset);
    assert!(!hub.read(&room("elsewhere"), &Cursor::After(MessageId(3))).reset, "an unknown room too");

    let mut subscription = hub.subscribe(room("main"), Cursor::After(MessageId(3)));
    let (woken, waker) = waker();
    assert!(subscription.poll_next(&waker).is_pending());
    for id in 2..=4 {
        hub.publish(msg("main", id));
    }
    assert!(woken.0.load(Ordering::SeqCst) > 0);
    match subscription.poll_next(&waker) {
        Poll::Ready(batch) => assert_eq!((ids(&batch), batch.reset), (vec![4], false)),
        Poll::Pending => panic!("message 4 follows the cursor"),
    }
}
