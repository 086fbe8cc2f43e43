//! `--locking db` on SQLite: each `LedgerStore` operation is one transaction that keeps
//! the bank's rules (no balance below 0, a transfer all or nothing), also when many
//! threads withdraw John's whole balance at once.

mod common;

use std::sync::Arc;

use c10k_core::ledger::{AccountId, Cents, LedgerError, LedgerStore, MAX_TOTAL};
use c10k_core::store::Store;
use c10k_store::SqliteStore;
use common::ScratchDir;

fn id(name: &str) -> AccountId {
    AccountId::new(name).unwrap()
}

fn bank(store: &SqliteStore) -> &dyn LedgerStore {
    store.ledger().expect("SQLite keeps the ledger tables")
}

#[test]
fn withdrawals_and_transfers_keep_the_rules() {
    let dir = ScratchDir::new("ledger_rules");
    let store = SqliteStore::open(&dir.db()).unwrap();
    let bank = bank(&store);
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
    // The debit of a transfer to an unknown account is rolled back.
    assert_eq!(bank.transfer(&john, &id("nobody"), Cents(100)), Err(LedgerError::UnknownAccount(id("nobody"))));
    assert_eq!(bank.balance(&john), Ok(Cents(500)));
    assert_eq!(bank.audit(), Ok(vec![(jane.clone(), Cents(1500)), (john.clone(), Cents(500))]));

    bank.overwrite(&john, Cents(7)).unwrap();
    assert_eq!(bank.balance(&john), Ok(Cents(7)));
}

#[test]
fn of_many_threads_withdrawing_johns_whole_balance_at_once_exactly_one_wins() {
    let dir = ScratchDir::new("ledger_race");
    let store = Arc::new(SqliteStore::open(&dir.db()).unwrap());
    bank(&store).create(&id("john"), Cents(2500)).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || bank(&store).withdraw(&id("john"), Cents(2500)))
        })
        .collect();
    let won = threads.into_iter().map(|t| t.join().unwrap()).filter(Result::is_ok).count();
    assert_eq!(won, 1);
    assert_eq!(bank(&store).balance(&id("john")), Ok(Cents(0)));
}
