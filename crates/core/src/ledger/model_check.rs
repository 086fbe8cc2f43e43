//! Model checking `fine` and `atomic` with shuttle: many interleavings of a few threads,
//! each a different schedule of the strategies' locks and atomics (their primitives are
//! shuttle's in this crate's unit tests, see `sync.rs`), and at every yield between a read
//! and a write.
//!
//! Each property is checked twice: on the strategy as built (it must hold in every
//! schedule tried) and with a flaw planted on purpose (the check must find a schedule that
//! breaks it). A check that cannot find a planted bug would prove nothing.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use super::strategies::Flaw;
use super::{AccountId, Cents, Ledger, LedgerError, Locking};
use crate::store::{Message, MessageId, NewMessage, RoomId, Store, StoreError};

/// Schedules tried per property: enough to find each planted bug many times over.
const ITERATIONS: usize = 2_000;

/// A store whose only use is the yield: `round_trip` is a shuttle scheduling point.
struct Yielding;

impl Store for Yielding {
    fn append(&self, _: &RoomId, _: &NewMessage) -> Result<crate::store::Appended, StoreError> {
        unreachable!("the ledger never stores messages")
    }
    fn after(&self, _: &RoomId, _: MessageId, _: usize) -> Result<Vec<Message>, StoreError> {
        unreachable!("the ledger never reads messages")
    }
    fn recent(&self, _: &RoomId, _: usize) -> Result<Vec<Message>, StoreError> {
        unreachable!("the ledger never reads messages")
    }
    fn before(&self, _: &RoomId, _: Option<MessageId>, _: usize) -> Result<Vec<Message>, StoreError> {
        unreachable!("the ledger never reads messages")
    }
    fn rooms(&self) -> Result<Vec<RoomId>, StoreError> {
        unreachable!("the ledger never lists rooms")
    }
    fn round_trip(&self) -> Result<(), StoreError> {
        shuttle::thread::yield_now();
        Ok(())
    }
}

fn id(name: &str) -> AccountId {
    AccountId::new(name).expect("a valid name")
}

fn total(ledger: &Ledger) -> i64 {
    ledger.audit(&Yielding).expect("audit").iter().map(|(_, b)| b.0).sum()
}

/// John and Jane with $25 each; two opposite transfers of $10 and an audit race. Every
/// audit must see $50; both transfers must finish (no deadlock); John and Jane end with
/// $25 each again.
fn opposite_transfers_and_an_audit(ledger: Ledger) {
    let ledger = Arc::new(ledger);
    let (john, jane) = (id("john"), id("jane"));
    ledger.create(&Yielding, &john, Cents(2500)).unwrap();
    ledger.create(&Yielding, &jane, Cents(2500)).unwrap();
    let transfers: Vec<_> = [(john.clone(), jane.clone()), (jane.clone(), john.clone())]
        .into_iter()
        .map(|(from, to)| {
            let ledger = Arc::clone(&ledger);
            shuttle::thread::spawn(move || ledger.transfer(&Yielding, &from, &to, Cents(1000)).unwrap())
        })
        .collect();
    let auditor = {
        let ledger = Arc::clone(&ledger);
        shuttle::thread::spawn(move || {
            for _ in 0..2 {
                assert_eq!(total(&ledger), 5000, "an audit saw money vanish or appear");
            }
        })
    };
    for t in transfers {
        t.join().unwrap();
    }
    auditor.join().unwrap();
    assert_eq!(ledger.balance(&Yielding, &john).unwrap(), Cents(2500));
    assert_eq!(ledger.balance(&Yielding, &jane).unwrap(), Cents(2500));
}

/// The canonical race: two withdrawals of John's whole $25. Exactly one is accepted, and
/// John ends with $0.
fn two_withdrawals_of_the_whole_balance(ledger: Ledger) {
    let ledger = Arc::new(ledger);
    let john = id("john");
    ledger.create(&Yielding, &john, Cents(2500)).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (ledger, john) = (Arc::clone(&ledger), john.clone());
            shuttle::thread::spawn(move || ledger.withdraw(&Yielding, &john, Cents(2500)))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        results.iter().all(|r| matches!(r, Ok(_) | Err(LedgerError::InsufficientFunds { .. }))),
        "{results:?}"
    );
    assert_eq!(accepted, 1, "{accepted} withdrawals of 2500 accepted from 2500: {results:?}");
    assert_eq!(ledger.balance(&Yielding, &john).unwrap(), Cents(0));
}

/// Runs `test` on a fresh ledger under `ITERATIONS` random schedules; the panic message
/// of the first schedule that fails, if any.
fn explore(locking: Locking, flaw: Flaw, test: fn(Ledger)) -> Option<String> {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        shuttle::check_random(move || test(Ledger::flawed(locking, flaw)), ITERATIONS)
    }));
    outcome.err().map(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a non-string panic".to_string())
    })
}

#[test]
fn fine_transfers_never_deadlock_and_audits_see_the_whole_total() {
    assert_eq!(explore(Locking::Fine, Flaw::None, opposite_transfers_and_an_audit), None);
}

#[test]
fn fine_with_locks_taken_from_then_to_is_found_to_deadlock() {
    let found = explore(Locking::Fine, Flaw::UnorderedLocks, opposite_transfers_and_an_audit)
        .expect("shuttle must find the deadlock of two opposite transfers");
    assert!(found.to_lowercase().contains("deadlock"), "{found}");
}

#[test]
fn fine_accepts_exactly_one_of_two_withdrawals_of_the_whole_balance() {
    assert_eq!(explore(Locking::Fine, Flaw::None, two_withdrawals_of_the_whole_balance), None);
}

#[test]
fn atomic_accepts_exactly_one_of_two_withdrawals_of_the_whole_balance() {
    assert_eq!(explore(Locking::Atomic, Flaw::None, two_withdrawals_of_the_whole_balance), None);
}

#[test]
fn atomic_with_a_blind_store_instead_of_a_cas_is_found_to_create_money() {
    let found = explore(Locking::Atomic, Flaw::BlindStore, two_withdrawals_of_the_whole_balance)
        .expect("shuttle must find two withdrawals that both read 2500");
    assert!(found.contains("2 withdrawals of 2500 accepted"), "{found}");
}

#[test]
fn atomic_transfers_keep_the_total_in_every_audit() {
    assert_eq!(explore(Locking::Atomic, Flaw::None, opposite_transfers_and_an_audit), None);
}

#[test]
fn atomic_with_the_credit_outside_in_flight_is_found_to_show_money_vanishing() {
    let found = explore(Locking::Atomic, Flaw::CreditOutsideInFlight, opposite_transfers_and_an_audit)
        .expect("shuttle must find an audit between a debit and its credit");
    assert!(found.contains("an audit saw money vanish"), "{found}");
}

#[test]
fn none_is_found_to_accept_two_withdrawals_of_the_whole_balance() {
    let found = explore(Locking::None, Flaw::None, two_withdrawals_of_the_whole_balance)
        .expect("shuttle must find the canonical race");
    assert!(found.contains("2 withdrawals of 2500 accepted"), "{found}");
}

#[test]
fn giant_accepts_exactly_one_of_two_withdrawals_and_keeps_audits_whole() {
    assert_eq!(explore(Locking::Giant, Flaw::None, two_withdrawals_of_the_whole_balance), None);
    assert_eq!(explore(Locking::Giant, Flaw::None, opposite_transfers_and_an_audit), None);
}
