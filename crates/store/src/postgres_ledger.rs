//! `--locking db` on PostgreSQL: the `c10k_accounts` table, one transaction per
//! operation, on the blocking [`PostgresStore`].
//!
//! - **Withdraw: one conditional `UPDATE ... WHERE balance >= $2 RETURNING balance`.** A
//!   statement is its own transaction; under READ COMMITTED, an `UPDATE` that finds the
//!   row locked by a concurrent writer waits, then re-evaluates its `WHERE` on the newest
//!   version, so the check and the write cannot be separated. Only when no row changed
//!   does a `SELECT` say why.
//! - **Transfer: `SELECT ... ORDER BY id FOR UPDATE` of both rows**, then the checks and
//!   the two `UPDATE`s, in one transaction: both row locks are taken in name order, so two
//!   opposite transfers cannot deadlock (a deadlock PostgreSQL reports anyway rolls the
//!   transfer back whole, and it is tried again).
//! - **Create:** serialised by a transaction-scoped advisory lock around the sum (the
//!   bank's total stays under [`MAX_TOTAL`]) and the insert.
//! - **Audit:** one `SELECT`, one snapshot: every transfer is seen whole.

use std::future::Future;

use c10k_core::ledger::{AccountId, Cents, LedgerError, LedgerStore, MAX_TOTAL};
use c10k_core::store::StoreError;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Statement;

use crate::pool::Failure;
use crate::postgres::{classify, within, CallError, Live, PostgresStore};

/// The ledger's prepared statements on one connection.
pub(crate) struct Statements {
    balance: Statement,
    debit: Statement,
    credit: Statement,
    lock_two: Statement,
    total: Statement,
    insert: Statement,
    audit: Statement,
    overwrite: Statement,
    pub(crate) select_one: Statement,
}

impl Statements {
    /// Prepares them with the connection's `prepare`.
    pub(crate) async fn prepare<F, Fut>(prepare: &F) -> Result<Statements, StoreError>
    where
        F: Fn(&'static str, &'static [Type]) -> Fut,
        Fut: Future<Output = Result<Statement, StoreError>>,
    {
        Ok(Statements {
            balance: prepare("SELECT balance FROM c10k_accounts WHERE id = $1", &[Type::TEXT]).await?,
            debit: prepare(
                "UPDATE c10k_accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2 RETURNING balance",
                &[Type::TEXT, Type::INT8],
            )
            .await?,
            credit: prepare(
                "UPDATE c10k_accounts SET balance = balance + $2 WHERE id = $1 RETURNING balance",
                &[Type::TEXT, Type::INT8],
            )
            .await?,
            lock_two: prepare(
                "SELECT id, balance FROM c10k_accounts WHERE id = $1 OR id = $2 ORDER BY id FOR UPDATE",
                &[Type::TEXT, Type::TEXT],
            )
            .await?,
            total: prepare("SELECT COALESCE(SUM(balance), 0)::BIGINT FROM c10k_accounts", &[]).await?,
            insert: prepare(
                "INSERT INTO c10k_accounts (id, balance) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[Type::TEXT, Type::INT8],
            )
            .await?,
            audit: prepare("SELECT id, balance FROM c10k_accounts ORDER BY id", &[]).await?,
            overwrite: prepare("UPDATE c10k_accounts SET balance = $2 WHERE id = $1", &[Type::TEXT, Type::INT8])
                .await?,
            select_one: prepare("SELECT 1", &[]).await?,
        })
    }
}

/// Serialises creates (any fixed number: it names the lock).
const LOCK_CREATES: &str = "SELECT pg_advisory_xact_lock(7310010002)";
/// How many times a transaction that PostgreSQL rolled back for a deadlock is tried.
const ATTEMPTS: usize = 3;

/// A ledger answer inside a store call: the bank's own refusals are `Ok(Err(..))`.
type Answer<T> = Result<Result<T, LedgerError>, Failure>;

fn failed(e: CallError) -> Failure {
    classify(e, false)
}

fn is_deadlock(e: &CallError) -> bool {
    matches!(e, CallError::Driver(d) if d.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
}

async fn balance_of(live: &Live, account: &AccountId, timeout: std::time::Duration) -> Result<Option<i64>, CallError> {
    let row = within(timeout, live.client.query_opt(&live.ledger.balance, &[&account.as_str()])).await?;
    Ok(row.map(|row| row.get(0)))
}

/// The conditional debit: the balance after, or why not.
async fn debit(live: &Live, account: &AccountId, amount: Cents, timeout: std::time::Duration) -> Answer<Cents> {
    let after = within(timeout, live.client.query_opt(&live.ledger.debit, &[&account.as_str(), &amount.0]))
        .await
        .map_err(failed)?;
    if let Some(row) = after {
        return Ok(Ok(Cents(row.get(0))));
    }
    Ok(Err(match balance_of(live, account, timeout).await.map_err(failed)? {
        None => LedgerError::UnknownAccount(account.clone()),
        Some(balance) => LedgerError::InsufficientFunds { account: account.clone(), balance: Cents(balance), amount },
    }))
}

/// The transfer's statements, inside its transaction.
async fn transfer_in(live: &Live, from: &AccountId, to: &AccountId, amount: Cents, timeout: std::time::Duration) -> Result<Result<(Cents, Cents), LedgerError>, CallError> {
    let locked = within(timeout, live.client.query(&live.ledger.lock_two, &[&from.as_str(), &to.as_str()])).await?;
    let held = |account: &AccountId| {
        locked.iter().find(|row| row.get::<_, &str>(0) == account.as_str()).map(|row| row.get::<_, i64>(1))
    };
    let (Some(balance), Some(_)) = (held(from), held(to)) else {
        let missing = if held(from).is_none() { from } else { to };
        return Ok(Err(LedgerError::UnknownAccount(missing.clone())));
    };
    if balance < amount.0 {
        return Ok(Err(LedgerError::InsufficientFunds { account: from.clone(), balance: Cents(balance), amount }));
    }
    let debited: i64 =
        within(timeout, live.client.query_one(&live.ledger.debit, &[&from.as_str(), &amount.0])).await?.get(0);
    let credited: i64 =
        within(timeout, live.client.query_one(&live.ledger.credit, &[&to.as_str(), &amount.0])).await?.get(0);
    Ok(Ok((Cents(debited), Cents(credited))))
}

/// The create's statements, inside its transaction.
async fn create_in(live: &Live, account: &AccountId, balance: Cents, timeout: std::time::Duration) -> Result<Result<Cents, LedgerError>, CallError> {
    within(timeout, live.client.batch_execute(LOCK_CREATES)).await?;
    let total: i64 = within(timeout, live.client.query_one(&live.ledger.total, &[])).await?.get(0);
    if total.checked_add(balance.0).is_none_or(|t| t > MAX_TOTAL) {
        return Ok(Err(LedgerError::BankFull));
    }
    let inserted = within(timeout, live.client.execute(&live.ledger.insert, &[&account.as_str(), &balance.0])).await?;
    Ok(if inserted == 0 { Err(LedgerError::AccountExists(account.clone())) } else { Ok(balance) })
}

impl PostgresStore {
    fn ledger_call<T: Send>(&self, call: impl AsyncFn(&Live) -> Answer<T> + Send + Sync) -> Result<T, LedgerError> {
        self.pool.run(|conn| conn.call(async |live| call(live).await)).map_err(LedgerError::Store)?
    }
}

/// Runs `work` between `BEGIN` and `COMMIT` (or `ROLLBACK` when it refuses or fails),
/// trying again after a deadlock.
async fn in_transaction<T>(
    live: &Live,
    timeout: std::time::Duration,
    work: impl AsyncFn(&Live) -> Result<Result<T, LedgerError>, CallError>,
) -> Answer<T> {
    let mut attempt = 1;
    loop {
        within(timeout, live.client.batch_execute("BEGIN")).await.map_err(failed)?;
        match work(live).await {
            Ok(Ok(value)) => {
                within(timeout, live.client.batch_execute("COMMIT")).await.map_err(|e| classify(e, true))?;
                return Ok(Ok(value));
            }
            Ok(Err(refused)) => {
                within(timeout, live.client.batch_execute("ROLLBACK")).await.map_err(failed)?;
                return Ok(Err(refused));
            }
            Err(e) => {
                let deadlock = is_deadlock(&e);
                let failure = failed(e);
                if let Failure::Query(_) = failure {
                    let _ = within(timeout, live.client.batch_execute("ROLLBACK")).await;
                    if deadlock && attempt < ATTEMPTS {
                        attempt += 1;
                        continue;
                    }
                }
                return Err(failure);
            }
        }
    }
}

fn checked_id(name: &str) -> Result<AccountId, LedgerError> {
    AccountId::new(name).map_err(|_| {
        LedgerError::Store(StoreError(format!(
            "the database holds an account named {name:?}, which c10k never writes; point --db at a database \
             of c10k's own"
        )))
    })
}

impl LedgerStore for PostgresStore {
    fn create(&self, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        let timeout = self.timeout;
        self.ledger_call(async |live| in_transaction(live, timeout, async |live| create_in(live, account, balance, timeout).await).await)
    }

    fn balance(&self, account: &AccountId) -> Result<Cents, LedgerError> {
        let timeout = self.timeout;
        self.ledger_call(async |live| {
            let balance = balance_of(live, account, timeout).await.map_err(failed)?;
            Ok(balance.map(Cents).ok_or_else(|| LedgerError::UnknownAccount(account.clone())))
        })
    }

    fn withdraw(&self, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        let timeout = self.timeout;
        self.ledger_call(async |live| debit(live, account, amount, timeout).await)
    }

    fn transfer(&self, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        let timeout = self.timeout;
        self.ledger_call(async |live| {
            in_transaction(live, timeout, async |live| transfer_in(live, from, to, amount, timeout).await).await
        })
    }

    fn audit(&self) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        let timeout = self.timeout;
        let rows: Vec<(String, i64)> = self.ledger_call(async |live| {
            let rows = within(timeout, live.client.query(&live.ledger.audit, &[])).await.map_err(failed)?;
            Ok(Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect()))
        })?;
        rows.into_iter().map(|(name, balance)| Ok((checked_id(&name)?, Cents(balance)))).collect()
    }

    fn overwrite(&self, account: &AccountId, balance: Cents) -> Result<(), LedgerError> {
        let timeout = self.timeout;
        self.ledger_call(async |live| {
            let changed = within(timeout, live.client.execute(&live.ledger.overwrite, &[&account.as_str(), &balance.0]))
                .await
                .map_err(failed)?;
            Ok(if changed == 0 { Err(LedgerError::UnknownAccount(account.clone())) } else { Ok(()) })
        })
    }
}
