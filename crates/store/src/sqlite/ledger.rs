//! `--locking db` on SQLite: the `accounts` table, one transaction per operation.
//!
//! **A conditional `UPDATE`, not `SELECT ... FOR UPDATE`.** A withdrawal is
//! `UPDATE accounts SET balance = balance - :amount WHERE id = :id AND balance >= :amount`:
//! the check and the write are one statement, so no other writer can get between them,
//! whatever the isolation level. SQLite has no `FOR UPDATE` (it has one writer at a time),
//! and on MariaDB/InnoDB and PostgreSQL the same statement row-locks the account and
//! re-checks the condition on the newest version after waiting for a concurrent writer
//! (InnoDB's locking read, PostgreSQL's re-evaluation under READ COMMITTED), in one round
//! trip where `SELECT ... FOR UPDATE` then `UPDATE` takes two. Only when the `UPDATE`
//! changes no row does a `SELECT` in the same transaction say why (no such account, or
//! how much it held).
//!
//! Every write transaction is `BEGIN IMMEDIATE`, queued first on the store's in-process
//! writer mutex (as appends are): the database's write lock is taken before the first
//! read, so the explanation read sees the state the `UPDATE` saw. A transfer debits with
//! the conditional `UPDATE`, credits with a plain one, and commits both or neither. (On a
//! server with row locks, update the two rows in name order, or retry on deadlock: two
//! opposite transfers lock the rows in opposite orders.) The `CHECK (balance >= 0)` of
//! the table is a second line: a bug here would fail loudly, never store a negative.
//!
//! An audit is one `SELECT`: in WAL mode one statement reads one snapshot, so it sees
//! every transfer whole.

use c10k_core::ledger::{AccountId, Cents, LedgerError, LedgerStore, MAX_TOTAL};
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{sql_error, SqliteStore};

impl SqliteStore {
    /// Runs `work` in a `BEGIN IMMEDIATE` transaction, committing if it returns `Ok`.
    fn write<R>(
        &self,
        what: &str,
        work: impl FnOnce(&Transaction<'_>) -> Result<R, LedgerError>,
    ) -> Result<R, LedgerError> {
        // In line with the appends, for as long as SQLite would wait for the write lock.
        let _turn = self
            .writer
            .enter(std::time::Instant::now() + super::BUSY_TIMEOUT)
            .ok_or_else(|| {
                c10k_core::store::StoreError(format!(
                    "waited {} s for the appends and ledger operations before it; nothing was changed, retry",
                    super::BUSY_TIMEOUT.as_secs()
                ))
            })?;
        let mut conn = self.checkout()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_error(&format!("cannot start to {what}"), e))?;
        let result = work(&tx)?;
        tx.commit().map_err(|e| sql_error(&format!("cannot commit to {what}"), e))?;
        Ok(result)
    }
}

fn balance_in(tx: &rusqlite::Connection, account: &AccountId) -> Result<Option<i64>, LedgerError> {
    tx.prepare_cached("SELECT balance FROM accounts WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([account.as_str()], |row| row.get(0)).optional())
        .map_err(|e| LedgerError::Store(sql_error(&format!("cannot read account {account}"), e)))
}

/// The conditional debit: the balance after, or why not.
fn debit(tx: &Transaction<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
    let after: Option<i64> = tx
        .prepare_cached("UPDATE accounts SET balance = balance - ?2 WHERE id = ?1 AND balance >= ?2 RETURNING balance")
        .and_then(|mut stmt| stmt.query_row(params![account.as_str(), amount.0], |row| row.get(0)).optional())
        .map_err(|e| sql_error(&format!("cannot debit account {account}"), e))?;
    match after {
        Some(after) => Ok(Cents(after)),
        None => Err(match balance_in(tx, account)? {
            None => LedgerError::UnknownAccount(account.clone()),
            Some(balance) => LedgerError::InsufficientFunds { account: account.clone(), balance: Cents(balance), amount },
        }),
    }
}

impl LedgerStore for SqliteStore {
    fn create(&self, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        self.write("create an account", |tx| {
            let total: i64 = tx
                .prepare_cached("SELECT COALESCE(SUM(balance), 0) FROM accounts")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
                .map_err(|e| sql_error("cannot sum the balances", e))?;
            if total.checked_add(balance.0).is_none_or(|t| t > MAX_TOTAL) {
                return Err(LedgerError::BankFull);
            }
            let inserted = tx
                .prepare_cached("INSERT INTO accounts (id, balance) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")
                .and_then(|mut stmt| stmt.execute(params![account.as_str(), balance.0]))
                .map_err(|e| sql_error(&format!("cannot create account {account}"), e))?;
            if inserted == 0 {
                return Err(LedgerError::AccountExists(account.clone()));
            }
            Ok(balance)
        })
    }

    fn balance(&self, account: &AccountId) -> Result<Cents, LedgerError> {
        let conn = self.checkout()?;
        balance_in(&conn, account)?.map(Cents).ok_or_else(|| LedgerError::UnknownAccount(account.clone()))
    }

    fn withdraw(&self, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        self.write("withdraw", |tx| debit(tx, account, amount))
    }

    fn transfer(&self, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        // Any Err returns before commit: the transaction rolls back on drop, debit included.
        self.write("transfer", |tx| {
            let debited = debit(tx, from, amount)?;
            let credited: Option<i64> = tx
                .prepare_cached("UPDATE accounts SET balance = balance + ?2 WHERE id = ?1 RETURNING balance")
                .and_then(|mut stmt| stmt.query_row(params![to.as_str(), amount.0], |row| row.get(0)).optional())
                .map_err(|e| sql_error(&format!("cannot credit account {to}"), e))?;
            let credited = credited.ok_or_else(|| LedgerError::UnknownAccount(to.clone()))?;
            Ok((debited, Cents(credited)))
        })
    }

    fn audit(&self) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        let conn = self.checkout()?;
        let fail = |e| LedgerError::Store(sql_error("cannot read the accounts", e));
        let mut stmt = conn.prepare_cached("SELECT id, balance FROM accounts ORDER BY id").map_err(fail)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(fail)?;
        rows.into_iter()
            .map(|(name, balance)| {
                let id = AccountId::new(&name).map_err(|_| {
                    LedgerError::Store(c10k_core::store::StoreError(format!(
                        "the database holds an account named {name:?}, which c10k never writes; \
                         move the file aside or pass --db with another path"
                    )))
                })?;
                Ok((id, Cents(balance)))
            })
            .collect()
    }

    fn overwrite(&self, account: &AccountId, balance: Cents) -> Result<(), LedgerError> {
        let conn = self.checkout()?;
        let changed = conn
            .prepare_cached("UPDATE accounts SET balance = ?2 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![account.as_str(), balance.0]))
            .map_err(|e| sql_error(&format!("cannot write account {account}"), e))?;
        if changed == 0 {
            return Err(LedgerError::UnknownAccount(account.clone()));
        }
        Ok(())
    }
}
