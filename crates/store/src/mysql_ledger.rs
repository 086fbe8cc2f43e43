//! `--locking db` on MySQL / MariaDB: the `c10k_accounts` table, one InnoDB transaction
//! per operation.
//!
//! - **Withdraw: a conditional `UPDATE`** (`... SET balance = balance - ? WHERE id = ? AND
//!   balance >= ?`), as on SQLite: InnoDB's `UPDATE` is a locking read, so it waits for a
//!   concurrent writer of the row and re-checks the condition on the newest version; the
//!   check and the write cannot be separated. The balance after is read back in the same
//!   transaction (MySQL has no `UPDATE ... RETURNING`); when no row changed, the same read
//!   says why (no such account, or how much it held).
//! - **Transfer: `SELECT ... FOR UPDATE` of both rows first**, in name order (one
//!   statement, `ORDER BY id`, which InnoDB locks in primary-key order), then the checks
//!   and the two `UPDATE`s. Two opposite transfers therefore take their row locks in the
//!   same order and cannot deadlock each other; a deadlock InnoDB reports anyway (with
//!   some other writer) rolls the transfer back whole, and it is tried again.
//! - **Create:** the bank's total must stay under [`MAX_TOTAL`], so creates are
//!   serialised on the schema row (`SELECT ... FOR UPDATE`) around the sum and the insert.
//! - **Audit:** one `SELECT`, one consistent snapshot: every transfer is seen whole.
//! - The table's `CHECK (balance >= 0)` is the second line (MariaDB 10.2+, MySQL 8.0.16+).

use c10k_core::ledger::{AccountId, Cents, LedgerError, LedgerStore, MAX_TOTAL};
use c10k_core::store::StoreError;
use mysql::prelude::Queryable;
use mysql::Conn;

use crate::mysql::{classify, sql, MySqlStore};
use crate::pool::Failure;

const BALANCE: &str = "SELECT balance FROM c10k_accounts WHERE id = ?";
const DEBIT: &str = "UPDATE c10k_accounts SET balance = balance - ? WHERE id = ? AND balance >= ?";
const CREDIT: &str = "UPDATE c10k_accounts SET balance = balance + ? WHERE id = ?";
const LOCK_TWO: &str = "SELECT id, balance FROM c10k_accounts WHERE id IN (?, ?) ORDER BY id FOR UPDATE";
const LOCK_CREATES: &str = "SELECT version FROM c10k_schema WHERE id = 1 FOR UPDATE";
const TOTAL: &str = "SELECT CAST(COALESCE(SUM(balance), 0) AS SIGNED) FROM c10k_accounts";
const INSERT: &str = "INSERT INTO c10k_accounts (id, balance) VALUES (?, ?) ON DUPLICATE KEY UPDATE id = id";
const AUDIT: &str = "SELECT id, balance FROM c10k_accounts ORDER BY id";
const OVERWRITE: &str = "UPDATE c10k_accounts SET balance = ? WHERE id = ?";

/// A ledger answer inside a store call: the bank's own refusals are `Ok(Err(..))`, so
/// that they neither trip the circuit nor throw the connection away.
type Answer<T> = Result<Result<T, LedgerError>, Failure>;

impl MySqlStore {
    /// Runs `work` in a transaction, committing when it answers `Ok(Ok(_))` and rolling
    /// back otherwise; a deadlock rolls back and tries again.
    fn transaction<T>(&self, mut work: impl FnMut(&mut Conn) -> Answer<T>) -> Result<T, LedgerError> {
        let answer = self.pool.run(|conn| {
            let mut attempt = 1;
            loop {
                conn.query_drop(sql::BEGIN).map_err(classify)?;
                match work(conn) {
                    Ok(Ok(value)) => {
                        conn.query_drop(sql::COMMIT).map_err(|e| crate::mysql::ambiguous(classify(e)))?;
                        return Ok(Ok(value));
                    }
                    Ok(Err(refused)) => {
                        conn.query_drop(sql::ROLLBACK).map_err(classify)?;
                        return Ok(Err(refused));
                    }
                    Err(Failure::Query(e)) if attempt < sql::ATTEMPTS && is_deadlock(&e) => {
                        let _ = conn.query_drop(sql::ROLLBACK);
                        attempt += 1;
                    }
                    Err(Failure::Query(e)) => {
                        let _ = conn.query_drop(sql::ROLLBACK);
                        return Err(Failure::Query(e));
                    }
                    Err(broken) => return Err(broken),
                }
            }
        });
        answer.map_err(LedgerError::Store)?
    }

    /// One statement outside a transaction.
    fn single<T>(&self, mut work: impl FnMut(&mut Conn) -> Answer<T>) -> Result<T, LedgerError> {
        self.pool.run(|conn| work(conn)).map_err(LedgerError::Store)?
    }
}

/// The driver keeps the server's error number in its text: `ERROR 1213 (40001)`.
fn is_deadlock(e: &StoreError) -> bool {
    e.0.contains("ERROR 1213") || e.0.contains("ERROR 1205")
}

fn balance_of(conn: &mut Conn, account: &AccountId) -> Result<Option<i64>, Failure> {
    conn.exec_first(BALANCE, (account.as_str(),)).map_err(classify)
}

/// The conditional debit and the balance after, or why not.
fn debit(conn: &mut Conn, account: &AccountId, amount: Cents) -> Answer<Cents> {
    conn.exec_drop(DEBIT, (amount.0, account.as_str(), amount.0)).map_err(classify)?;
    let changed = conn.affected_rows();
    Ok(match (changed, balance_of(conn, account)?) {
        (1, Some(after)) => Ok(Cents(after)),
        (_, None) => Err(LedgerError::UnknownAccount(account.clone())),
        (_, Some(balance)) => Err(LedgerError::InsufficientFunds { account: account.clone(), balance: Cents(balance), amount }),
    })
}

fn checked_id(name: String) -> Result<AccountId, LedgerError> {
    AccountId::new(&name).map_err(|_| {
        LedgerError::Store(StoreError(format!(
            "the database holds an account named {name:?}, which c10k never writes; point --db at a database \
             of c10k's own"
        )))
    })
}

impl LedgerStore for MySqlStore {
    fn create(&self, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        self.transaction(|conn| {
            conn.query_drop(LOCK_CREATES).map_err(classify)?;
            let total: i64 = conn.query_first(TOTAL).map_err(classify)?.unwrap_or(0);
            if total.checked_add(balance.0).is_none_or(|t| t > MAX_TOTAL) {
                return Ok(Err(LedgerError::BankFull));
            }
            conn.exec_drop(INSERT, (account.as_str(), balance.0)).map_err(classify)?;
            Ok(match conn.affected_rows() {
                0 => Err(LedgerError::AccountExists(account.clone())),
                _ => Ok(balance),
            })
        })
    }

    fn balance(&self, account: &AccountId) -> Result<Cents, LedgerError> {
        self.single(|conn| {
            Ok(balance_of(conn, account)?.map(Cents).ok_or_else(|| LedgerError::UnknownAccount(account.clone())))
        })
    }

    fn withdraw(&self, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        self.transaction(|conn| debit(conn, account, amount))
    }

    fn transfer(&self, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        self.transaction(|conn| {
            let locked: Vec<(String, i64)> = conn.exec(LOCK_TWO, (from.as_str(), to.as_str())).map_err(classify)?;
            let held = |account: &AccountId| locked.iter().find(|(id, _)| id == account.as_str()).map(|(_, b)| *b);
            let (Some(balance), Some(_)) = (held(from), held(to)) else {
                let missing = if held(from).is_none() { from } else { to };
                return Ok(Err(LedgerError::UnknownAccount(missing.clone())));
            };
            if balance < amount.0 {
                return Ok(Err(LedgerError::InsufficientFunds { account: from.clone(), balance: Cents(balance), amount }));
            }
            let debited = match debit(conn, from, amount)? {
                Ok(after) => after,
                Err(refused) => return Ok(Err(refused)),
            };
            conn.exec_drop(CREDIT, (amount.0, to.as_str())).map_err(classify)?;
            let credited = balance_of(conn, to)?.unwrap_or_default();
            Ok(Ok((debited, Cents(credited))))
        })
    }

    fn audit(&self) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        let rows: Vec<(String, i64)> = self.single(|conn| Ok(Ok(conn.query(AUDIT).map_err(classify)?)))?;
        rows.into_iter().map(|(name, balance)| Ok((checked_id(name)?, Cents(balance)))).collect()
    }

    fn overwrite(&self, account: &AccountId, balance: Cents) -> Result<(), LedgerError> {
        self.single(|conn| {
            conn.exec_drop(OVERWRITE, (balance.0, account.as_str())).map_err(classify)?;
            Ok(match conn.affected_rows() {
                0 if balance_of(conn, account)?.is_none() => Err(LedgerError::UnknownAccount(account.clone())),
                _ => Ok(()),
            })
        })
    }
}
