//! `--locking db` on every store that keeps the ledger's tables (SQLite, MySQL/MariaDB,
//! PostgreSQL; the servers when their test servers are given): each `LedgerStore`
//! operation is one transaction that keeps the bank's rules (no balance below 0, a
//! transfer all or nothing), also when many threads withdraw John's whole balance at
//! once, and when opposite transfers cross (no deadlock, money conserved).

mod common;

use std::sync::Arc;

use c10k_core::ledger::{AccountId, Cents, LedgerError, LedgerStore, MAX_TOTAL};
use c10k_core::store::Store;
use c10k_store::testing::{ScratchDatabase, ServerKind};
use c10k_store::SqliteStore;
use common::ScratchDir;

fn id(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

fn bank(store: &dyn Store) -> &dyn LedgerStore {
    store.ledger().expect("this store keeps the ledger tables")
}

/// Runs a test once per store; `$store` is an `Arc<dyn Store>`.
macro_rules! ledger_test {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            use super::*;

            #[test]
            fn on_sqlite() {
                let dir = ScratchDir::new(stringify!($name));
                let $store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.db()).unwrap());
                $body
            }

            #[test]
            fn on_mysql() {
                let Some(db) = ScratchDatabase::create(ServerKind::MySql, stringify!($name)) else { return };
                let $store = c10k_store::open(db.url()).unwrap();
                $body
            }

            #[test]
            fn on_postgres() {
                let Some(db) = ScratchDatabase::create(ServerKind::Postgres, stringify!($name)) else { return };
                let $store = c10k_store::open(db.url()).unwrap();
                $body
            }
        }
    };
}

ledger_test!(withdrawals_and_transfers_keep_the_rules, |store| {
    let bank = bank(&*store);
    let (john, jane) = (id("john"), id("jane"));
    assert_eq!(bank.create(&john, Cents(2500)), Ok(Cents(2500)));
    assert_eq!(bank.create(&jane, Cents(0)), Ok(Cents(0)));
    assert_eq!(bank.create(&john, Cents(1)), Err(LedgerError::AccountExists(john.clone())));
    assert_eq!(bank.create(&id("rich"), Cents(MAX_TOTAL)), Err(LedgerError::BankFull));

    assert_eq!(bank.withdraw(&john, Cents(500)), Ok(Cents(2000)));
    assert_eq!(
        bank.withdraw(&john, Cents(2001)),
        Err(LedgerError::InsufficientFunds { account: john.clone(), balance: Cents(2000), amount: Cents(2001) })
    );
    assert_eq!(bank.withdraw(&id("nobody"), Cents(1)), Err(LedgerError::UnknownAccount(id("nobody"))));

    assert_eq!(bank.transfer(&john, &jane, Cents(1500)), Ok((Cents(500), Cents(1500))));
    // A transfer to an unknown account, or beyond the balance, changes nothing.
    assert_eq!(bank.transfer(&john, &id("nobody"), Cents(100)), Err(LedgerError::UnknownAccount(id("nobody"))));
    assert_eq!(
        bank.transfer(&john, &jane, Cents(501)),
        Err(LedgerError::InsufficientFunds { account: john.clone(), balance: Cents(500), amount: Cents(501) })
    );
    assert_eq!(bank.balance(&john), Ok(Cents(500)));
    assert_eq!(bank.audit(), Ok(vec![(jane.clone(), Cents(1500)), (john.clone(), Cents(500))]));

    bank.overwrite(&john, Cents(7)).unwrap();
    assert_eq!(bank.balance(&john), Ok(Cents(7)));
    assert_eq!(bank.overwrite(&id("nobody"), Cents(7)), Err(LedgerError::UnknownAccount(id("nobody"))));
    store.round_trip().unwrap();
});

ledger_test!(of_many_threads_withdrawing_johns_whole_balance_at_once_exactly_one_wins, |store| {
    bank(&*store).create(&id("john"), Cents(2500)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || bank(&*store).withdraw(&id("john"), Cents(2500)))
        })
        .collect();
    let won = threads.into_iter().map(|t| t.join().unwrap()).filter(Result::is_ok).count();
    assert_eq!(won, 1);
    assert_eq!(bank(&*store).balance(&id("john")), Ok(Cents(0)));
});

ledger_test!(opposite_transfers_crossing_neither_deadlock_nor_lose_money, |store| {
    bank(&*store).create(&id("a"), Cents(1000)).unwrap();
    bank(&*store).create(&id("b"), Cents(1000)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let (from, to) = if t % 2 == 0 { (id("a"), id("b")) } else { (id("b"), id("a")) };
                (0..25).filter(|_| bank(&*store).transfer(&from, &to, Cents(10)).is_ok()).count()
            })
        })
        .collect();
    let moved: usize = threads.into_iter().map(|t| t.join().expect("no transfer panicked")).sum();
    assert!(moved > 0);
    let audit = bank(&*store).audit().unwrap();
    assert_eq!(audit.iter().map(|(_, c)| c.0).sum::<i64>(), 2000, "money conserved: {audit:?}");
    assert!(audit.iter().all(|(_, c)| c.0 >= 0));
});
