//! The ledger: the talk's "canonical race condition" (John's $25, seen by two processes and
//! deducted twice) served over HTTP, with each locking strategy of the talk's "Locking"
//! half behind `--locking`.
//!
//! - [`routes`]: `/api/bank/...`, the JSON shapes, and amount validation;
//! - [`strategies`]: `none`, `giant`, `fine`, `atomic` (in memory) and `db` (the store);
//! - [`LedgerStore`]: what `--locking db` needs from a store (SQLite implements it in
//!   `c10k-store`; MariaDB and PostgreSQL can, with the same conditional `UPDATE`).
//!
//! Every ledger operation is a blocking call: the route hands it to the model as an
//! [`Outcome::Store`](crate::chat::Outcome::Store), exactly like a chat post, and the model
//! runs it on its offload pool or inline (`--db-mode`). So the strategies' locks are only
//! ever taken on the OS thread that runs the call, never across a coroutine switch or an
//! `await`, and no model needs ledger-specific code.
//!
//! Money is whole cents in an `i64`. The bank as a whole holds at most [`MAX_TOTAL`] cents,
//! so no balance and no sum of balances can overflow, whatever the operations.

pub(crate) mod routes;
pub mod strategies;
mod sync;

#[cfg(test)]
mod model_check;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::store::{Store, StoreError};

pub use strategies::Ledger;

/// The most cents one amount (a balance, a withdrawal, a transfer) may be: 10^15, ten
/// trillion dollars.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// The most cents the whole bank may hold at once. Equal to [`MAX_AMOUNT`], so that
/// every balance, and the sum of them all, fits an `i64` many times over.
pub const MAX_TOTAL: i64 = MAX_AMOUNT;

/// An account's name: 1 to 64 characters of `A-Z a-z 0-9 _ -` (the rule of room names,
/// for the same reasons: safe in a URL path and a SQL parameter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    /// The most characters an account name may have.
    pub const MAX_LEN: usize = 64;

    /// Validates an account name.
    pub fn new(name: &str) -> Result<AccountId, LedgerError> {
        if crate::store::is_safe_name(name, Self::MAX_LEN) {
            Ok(AccountId(name.to_string()))
        } else {
            Err(LedgerError::BadAccountName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money in whole cents ($25 is `Cents(2500)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct Cents(pub i64);

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `--locking`: how the ledger keeps two concurrent operations on one account apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locking {
    /// No locking: read, yield, write back. The race on purpose, so the checker can be
    /// seen to catch it.
    None,
    /// One lock around all accounts (FreeBSD 4's giant lock, Python's GIL).
    Giant,
    /// A lock per account; a transfer takes its two in a fixed order (by account name).
    Fine,
    /// No lock: compare-and-swap per account (see [`strategies`] for the transfer protocol).
    Atomic,
    /// One transaction per operation in the store (a conditional `UPDATE`).
    Db,
}

impl Locking {
    /// Every strategy, in the order the docs and the benchmark list them.
    pub const ALL: [Locking; 5] = [Locking::None, Locking::Giant, Locking::Fine, Locking::Atomic, Locking::Db];

    /// The `--locking` value.
    pub fn name(self) -> &'static str {
        match self {
            Locking::None => "none",
            Locking::Giant => "giant",
            Locking::Fine => "fine",
            Locking::Atomic => "atomic",
            Locking::Db => "db",
        }
    }

    /// Parses a `--locking` value.
    pub fn parse(name: &str) -> Result<Locking, String> {
        Locking::ALL.into_iter().find(|l| l.name() == name).ok_or_else(|| {
            format!("unknown locking strategy {name:?}; choose one of: none, giant, fine, atomic, db")
        })
    }

    /// Whether the strategy keeps its accounts in this process's memory.
    pub fn in_memory(self) -> bool {
        self != Locking::Db
    }
}

impl fmt::Display for Locking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a ledger operation was refused. Each maps to one status and one `code` in the JSON
/// error (see `docs/protocol.md`, "The ledger").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The name breaks the rule of [`AccountId`].
    #[error("an account name is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    BadAccountName,
    /// An amount that is not a whole number of cents from 1 (0 for a new balance) to
    /// [`MAX_AMOUNT`].
    #[error("{0}")]
    BadAmount(String),
    /// The body is not the JSON object the route takes.
    #[error("{0}")]
    BadRequest(String),
    /// A transfer from an account to itself.
    #[error("a transfer needs two different accounts; 'from' and 'to' are both {0:?}")]
    SameAccount(AccountId),
    /// No account has this name.
    #[error("no account named {0:?}; create it first with POST /api/bank/accounts")]
    UnknownAccount(AccountId),
    /// An account with this name exists already.
    #[error("an account named {0:?} exists already; pick another name")]
    AccountExists(AccountId),
    /// The account holds less than asked for.
    #[error("insufficient funds: account {account:?} holds {balance} cents, {amount} asked for")]
    InsufficientFunds {
        /// The account.
        account: AccountId,
        /// What it held when the operation looked.
        balance: Cents,
        /// What was asked for.
        amount: Cents,
    },
    /// Creating the account would take the bank past [`MAX_TOTAL`].
    #[error("the bank holds at most {MAX_TOTAL} cents in all; create the account with less")]
    BankFull,
    /// A lock-free read kept meeting writes in flight and gave up (`atomic` only); retry.
    #[error("the ledger is too busy to read a consistent state ({0} tries); try again")]
    Busy(u32),
    /// The store failed; retry once it is back.
    #[error("{0}; try again")]
    Store(StoreError),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> LedgerError {
        LedgerError::Store(e)
    }
}

impl LedgerError {
    /// The machine-readable `code` of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::BadAccountName => "bad_account",
            LedgerError::BadAmount(_) => "bad_amount",
            LedgerError::BadRequest(_) => "bad_request",
            LedgerError::SameAccount(_) => "same_account",
            LedgerError::UnknownAccount(_) => "unknown_account",
            LedgerError::AccountExists(_) => "account_exists",
            LedgerError::InsufficientFunds { .. } => "insufficient_funds",
            LedgerError::BankFull => "bank_full",
            LedgerError::Busy(_) => "busy",
            LedgerError::Store(_) => "store_unavailable",
        }
    }
}

/// What `--locking db` needs from a store: one transaction per operation, each keeping the
/// rules of the in-memory strategies (no balance below 0, money conserved). Blocking.
///
/// Implementations say in their docs how they keep them; SQLite's (`c10k-store`) uses a
/// conditional `UPDATE ... WHERE balance >= amount` inside `BEGIN IMMEDIATE`.
pub trait LedgerStore: Send + Sync {
    /// Creates `account` holding `balance`; [`LedgerError::AccountExists`] if it exists,
    /// [`LedgerError::BankFull`] if the bank's total would pass [`MAX_TOTAL`].
    fn create(&self, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError>;

    /// The balance of `account`.
    fn balance(&self, account: &AccountId) -> Result<Cents, LedgerError>;

    /// Takes `amount` out of `account` if it holds that much; the balance after.
    fn withdraw(&self, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError>;

    /// Moves `amount` from `from` to `to`, all or nothing; both balances after.
    fn transfer(&self, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError>;

    /// Every account and its balance, in name order, as of one moment.
    fn audit(&self) -> Result<Vec<(AccountId, Cents)>, LedgerError>;

    /// Sets `account`'s balance to `balance`, unconditionally. Only `--locking none` across
    /// several processes uses it: the "write back" of its read, yield, write back.
    fn overwrite(&self, account: &AccountId, balance: Cents) -> Result<(), LedgerError>;
}

/// What the ledger needs from a store, whatever the strategy: its ledger tables (for `db`,
/// and for `none` across processes) and a round trip (the yield of `none`, and the work
/// every lock-based strategy does while it holds its lock).
pub(crate) fn ledger_of(store: &dyn Store) -> Result<&dyn LedgerStore, LedgerError> {
    store.ledger().ok_or_else(|| {
        LedgerError::Store(StoreError(
            "this store keeps no ledger tables; start the server with an SQLite, MySQL or PostgreSQL --db".to_string(),
        ))
    })
}

/// The ledger an application serves, shared by every connection of a process.
pub type SharedLedger = Arc<Ledger>;
