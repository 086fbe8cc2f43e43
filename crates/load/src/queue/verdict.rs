//! The total-queue check (after Jepsen's `total-queue`), on sequences already collected:
//! what each subscriber saw, against the stored order of its room, and what the posters
//! were told, against what the store holds. No I/O, so it is tested on hand-made sequences.

use std::collections::{BTreeMap, BTreeSet};

/// What one subscriber saw, in the order it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A message, by id.
    Message(u64),
    /// The server's explicit reset: it could not resume from the subscriber's position.
    Reset,
}

/// One subscriber's whole run.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// A name for the report (`sub3 ws @node1`).
    pub name: String,
    /// Its room.
    pub room: String,
    /// It asked for messages after this id.
    pub after: u64,
    /// What it saw, across all its reconnections.
    pub seen: Vec<Seen>,
}

/// What is wrong with one subscriber's sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Stored ids after its start that it never saw (and that no reset excused).
    pub lost: Vec<u64>,
    /// Ids it saw more than once.
    pub doubled: Vec<u64>,
    /// Ids it saw after a larger one.
    pub reordered: Vec<u64>,
    /// Ids it saw that the store does not hold.
    pub phantom: Vec<u64>,
    /// Ids skipped across an explicit reset (allowed, but counted).
    pub skipped_by_reset: usize,
}

impl Faults {
    /// Whether the sequence is exactly the stored order (resets aside).
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.doubled.is_empty() && self.reordered.is_empty() && self.phantom.is_empty()
    }
}

/// Compares what a subscriber saw with `stored`, its room's ids in the store's order.
///
/// The rule: after `after`, it must see every stored id once, in increasing order. A
/// [`Seen::Reset`] excuses the stored ids between the message before it and the one after
/// it (the server said it skipped them); nothing else does.
pub fn judge(subscriber: &Subscriber, stored: &[u64]) -> Faults {
    let known: BTreeSet<u64> = stored.iter().copied().collect();
    let mut faults = Faults::default();
    let mut seen_once = BTreeSet::new();
    let mut newest = subscriber.after;
    let mut excused = BTreeSet::new();
    let mut reset_pending = false;
    for seen in &subscriber.seen {
        let id = match seen {
            Seen::Reset => {
                reset_pending = true;
                continue;
            }
            Seen::Message(id) => *id,
        };
        if !known.contains(&id) {
            faults.phantom.push(id);
            continue;
        }
        if !seen_once.insert(id) {
            faults.doubled.push(id);
            continue;
        }
        if reset_pending {
            let skipped: Vec<u64> = known.range(newest + 1..id).copied().filter(|i| !seen_once.contains(i)).collect();
            faults.skipped_by_reset += skipped.len();
            excused.extend(skipped);
            reset_pending = false;
        }
        if id < newest {
            faults.reordered.push(id);
        } else {
            newest = id;
        }
    }
    faults.lost = stored
        .iter()
        .copied()
        .filter(|id| *id > subscriber.after && !seen_once.contains(id) && !excused.contains(id))
        .collect();
    faults
}

/// A post a publisher was told was stored (201), with the id and body it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The room it was posted to.
    pub room: String,
    /// The id in the answer.
    pub id: u64,
    /// The body sent.
    pub body: String,
}

/// Acknowledged posts that the store does not hold with that id and body.
pub fn missing_acked(acked: &[Acked], stored: &BTreeMap<String, BTreeMap<u64, String>>) -> Vec<Acked> {
    acked
        .iter()
        .filter(|a| stored.get(&a.room).and_then(|room| room.get(&a.id)) != Some(&a.body))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(after: u64, seen: &[Seen]) -> Subscriber {
        Subscriber { name: "s".into(), room: "r".into(), after, seen: seen.to_vec() }
    }

    fn ids(list: &[u64]) -> Vec<Seen> {
        list.iter().map(|id| Seen::Message(*id)).collect()
    }

    #[test]
    fn the_stored_order_exactly_is_clean() {
        assert!(judge(&sub(0, &ids(&[1, 2, 3, 4])), &[1, 2, 3, 4]).is_clean());
        assert!(judge(&sub(2, &ids(&[3, 4])), &[1, 2, 3, 4]).is_clean(), "starting after 2");
    }

    #[test]
    fn a_missing_message_is_lost_and_listed() {
        let faults = judge(&sub(0, &ids(&[1, 2, 4, 6])), &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(faults.lost, [3, 5, 7]);
        assert!(faults.doubled.is_empty() && faults.reordered.is_empty());
    }

    #[test]
    fn a_message_seen_twice_is_doubled() {
        let faults = judge(&sub(0, &ids(&[1, 2, 2, 3, 1])), &[1, 2, 3]);
        assert_eq!(faults.doubled, [2, 1]);
        assert!(faults.lost.is_empty());
    }

    #[test]
    fn a_message_after_a_larger_one_is_reordered() {
        let faults = judge(&sub(0, &ids(&[1, 3, 2, 4])), &[1, 2, 3, 4]);
        assert_eq!(faults.reordered, [2]);
        assert!(faults.lost.is_empty() && faults.doubled.is_empty());
    }

    #[test]
    fn an_id_the_store_lacks_is_a_phantom() {
        assert_eq!(judge(&sub(0, &ids(&[1, 9])), &[1]).phantom, [9]);
    }

    #[test]
    fn an_explicit_reset_excuses_what_it_skipped_and_nothing_else() {
        let mut seen = ids(&[1, 2]);
        seen.push(Seen::Reset);
        seen.extend(ids(&[6, 7]));
        let faults = judge(&sub(0, &seen), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(faults.skipped_by_reset, 3);
        assert_eq!(faults.lost, [8], "the reset excuses 3 to 5, not the last one");
    }

    #[test]
    fn acknowledged_posts_missing_from_the_store_or_with_another_body_are_listed() {
        let stored = BTreeMap::from([("r".to_string(), BTreeMap::from([(1, "a".to_string()), (2, "b".to_string())]))]);
        let acked = [("r", 1, "a"), ("r", 2, "x"), ("r", 3, "c"), ("q", 1, "a")]
            .map(|(room, id, body)| Acked { room: room.into(), id, body: body.into() });
        let missing: Vec<u64> = missing_acked(&acked, &stored).iter().map(|a| a.id).collect();
        assert_eq!(missing, [2, 3, 1]);
    }
}
