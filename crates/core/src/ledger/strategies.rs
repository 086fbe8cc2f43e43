//! The five `--locking` strategies, each the talk's slide made code.
//!
//! Every operation of the in-memory strategies has the same shape: **read** the balance,
//! **yield** (one store round trip, [`Store::round_trip`]: a real scheduling point on the
//! thread that runs the call, where other store calls run meanwhile), then **write** back.
//! What differs is what keeps another operation out of that window:
//!
//! - `none`: nothing. Two withdrawals of John's $25 both read 2500, both write 0: John got
//!   a free $25. Kept on purpose, so that the checker can be seen to catch it. With several
//!   worker processes it races in the shared store instead (`SELECT`, round trip,
//!   `UPDATE`): literally the talk's "process A sees... process B sees...".
//! - `giant`: one mutex around all accounts, held across the window (`with lock:`; FreeBSD
//!   4's giant lock, Python's GIL). Simple and correct; every operation waits for every
//!   other, even on unrelated accounts.
//! - `fine`: a mutex per account. A transfer takes its two locks **in name order**,
//!   whichever way the money moves, and an audit takes all of them in that same order, so
//!   no two operations ever wait for each other in a cycle: no deadlock. Operations on
//!   unrelated accounts run in parallel.
//! - `atomic`: no lock. Each balance is an `AtomicI64`; a write is a compare-and-swap of the
//!   value read, retried from the read when another write got in first (so a stale read
//!   can never be written back). The transfer protocol is below.
//! - `db`: one transaction per operation in the store ([`LedgerStore`]); works across
//!   processes.
//!
//! **`atomic`'s transfer protocol.** A transfer is two steps on two words: a CAS that
//! debits `from`, then an add that credits `to`. Between them the money is *in flight*,
//! and a reader summing balances would see it vanish. So:
//! 1. every write raises `in_flight` before its first step and lowers it after its last,
//!    and bumps `epoch` when it changed anything;
//! 2. every read (a balance, an audit, and the read step of a withdrawal or transfer) is
//!    taken only at a *quiet* moment: it reads `epoch`, checks `in_flight` is 0, reads the
//!    balances, then checks `in_flight` is still 0 and `epoch` unchanged, and otherwise
//!    retries (at most [`QUIET_TRIES`] times, then answers 503 busy);
//! 3. a CAS writes only the value read at a quiet moment minus the amount, and fails if
//!    anything changed the account since.
//!
//! With sequentially consistent atomics, a read accepted by (2) overlapped no write step at
//! all (a write that began before the read's `in_flight` check would still be counted;
//! one that began after it either is still counted at the second check or has bumped
//! `epoch`), so it sees a state in which every transfer is whole: the conserved total.
//! Money never appears, because the debit is a CAS that refuses a stale balance, and never
//! vanishes, because the credit always follows a successful debit. The price: every write
//! touches two bank-wide counters, and a reader can be starved by a stream of writes
//! (obstruction-free reads, lock-free writes), which the benchmark shows.
//!
//! A labelled shortcut: the directory of accounts (name to balance) sits behind a
//! read-write lock in every in-memory strategy, taken briefly to find an account and
//! exclusively to create one; `atomic` is lock-free on balances, not on account creation.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::sync::{lock, AtomicI64, AtomicU64, Mutex, Ordering, RwLock};
use super::{ledger_of, AccountId, Cents, LedgerError, Locking, MAX_TOTAL};
use crate::store::Store;

/// How many times an `atomic` read waits for a quiet moment, or a CAS is retried, before
/// the operation gives up with [`LedgerError::Busy`].
pub const QUIET_TRIES: u32 = 100_000;

/// The accounts of one process (or, for `db` and `none` across processes, of the store),
/// under the strategy `--locking` chose.
pub struct Ledger {
    book: Book,
    think: Option<Arc<Think>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("locking", &self.locking()).field("where", &self.describe()).finish()
    }
}

enum Book {
    Racy(Racy),
    RacyInStore,
    Giant(Giant),
    Fine(Fine),
    Atomic(Atomic),
    Db,
}

impl Ledger {
    /// The ledger `--locking locking` asks for in a server of `processes` worker processes
    /// on `store`, or why it cannot be: in-process locks cannot span processes, so with more
    /// than one, `giant`, `fine` and `atomic` are refused and `none` races in the store.
    pub fn new(locking: Locking, processes: usize, store: &dyn Store) -> Result<Ledger, String> {
        Ledger::check(locking, processes)?;
        let shared = processes > 1;
        let book = match locking {
            Locking::None if shared => Book::RacyInStore,
            Locking::None => Book::Racy(Racy::default()),
            Locking::Giant => Book::Giant(Giant::default()),
            Locking::Fine => Book::Fine(Fine::default()),
            Locking::Atomic => Book::Atomic(Atomic::default()),
            Locking::Db => Book::Db,
        };
        if matches!(book, Book::Db | Book::RacyInStore) && store.ledger().is_none() {
            return Err(format!(
                "--locking {locking}{} keeps the accounts in the store, and this store has no ledger \
                 tables; use an SQLite, MySQL or PostgreSQL --db, or an in-memory strategy with --workers 1",
                if shared { " with several workers" } else { "" }
            ));
        }
        Ok(Ledger { book, think: None })
    }

    /// Whether `locking` can serve `processes` worker processes (see [`Ledger::new`]); a
    /// master calls it before it forks.
    pub fn check(locking: Locking, processes: usize) -> Result<(), String> {
        if processes > 1 && matches!(locking, Locking::Giant | Locking::Fine | Locking::Atomic) {
            return Err(format!(
                "--locking {locking} keeps its accounts and locks in one process's memory, and the \
                 {processes} worker processes share no memory: each would have accounts of its own. \
                 Use --locking db (a transaction in the shared store), or --workers 1 (prefork \
                 then serves one connection at a time)"
            ));
        }
        Ok(())
    }

    /// An in-memory ledger (for `db`: the store's), for one process.
    pub fn in_memory(locking: Locking) -> Ledger {
        let book = match locking {
            Locking::None => Book::Racy(Racy::default()),
            Locking::Giant => Book::Giant(Giant::default()),
            Locking::Fine => Book::Fine(Fine::default()),
            Locking::Atomic => Book::Atomic(Atomic::default()),
            Locking::Db => Book::Db,
        };
        Ledger { book, think: None }
    }

    /// Installs `think`, run in every operation's window between its read and its write,
    /// after the store round trip: `c10k serve --ledger-think-us` sleeps there, so that the
    /// window is long enough for `none`'s race to show on every model (and the lock-based
    /// strategies are seen to hold their locks across a real pause).
    pub fn with_think(mut self, think: Arc<Think>) -> Ledger {
        self.think = Some(think);
        self
    }

    fn env<'a>(&'a self, store: &'a dyn Store) -> Env<'a> {
        Env { store, think: self.think.as_deref() }
    }

    /// The strategy.
    pub fn locking(&self) -> Locking {
        match self.book {
            Book::Racy(_) | Book::RacyInStore => Locking::None,
            Book::Giant(_) => Locking::Giant,
            Book::Fine(_) => Locking::Fine,
            Book::Atomic(_) => Locking::Atomic,
            Book::Db => Locking::Db,
        }
    }

    /// Where the balances live, in a few words (for the log and the audit).
    pub fn describe(&self) -> &'static str {
        match self.book {
            Book::RacyInStore | Book::Db => "in the store",
            _ => "in this process's memory",
        }
    }

    fn strategy(&self) -> &dyn Strategy {
        match &self.book {
            Book::Racy(s) => s,
            Book::RacyInStore => &RacyInStore,
            Book::Giant(s) => s,
            Book::Fine(s) => s,
            Book::Atomic(s) => s,
            Book::Db => &Db,
        }
    }

    /// Creates `account` holding `balance`.
    pub fn create(&self, store: &dyn Store, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        self.strategy().create(&self.env(store), account, balance)
    }

    /// The balance of `account`.
    pub fn balance(&self, store: &dyn Store, account: &AccountId) -> Result<Cents, LedgerError> {
        self.strategy().balance(&self.env(store), account)
    }

    /// Takes `amount` out of `account` if it holds that much; the balance after.
    pub fn withdraw(&self, store: &dyn Store, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        self.strategy().withdraw(&self.env(store), account, amount)
    }

    /// Moves `amount` from `from` to `to`; both balances after.
    pub fn transfer(
        &self,
        store: &dyn Store,
        from: &AccountId,
        to: &AccountId,
        amount: Cents,
    ) -> Result<(Cents, Cents), LedgerError> {
        if from == to {
            return Err(LedgerError::SameAccount(from.clone()));
        }
        self.strategy().transfer(&self.env(store), from, to, amount)
    }

    /// Every account and its balance, in name order.
    pub fn audit(&self, store: &dyn Store) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        self.strategy().audit(&self.env(store))
    }

    /// A ledger with a flaw planted on purpose, for the model check.
    #[cfg(test)]
    pub(crate) fn flawed(locking: Locking, flaw: Flaw) -> Ledger {
        let mut ledger = Ledger::in_memory(locking);
        match &mut ledger.book {
            Book::Fine(s) => s.flaw = flaw,
            Book::Atomic(s) => s.flaw = flaw,
            _ => {}
        }
        ledger
    }
}

/// A mistake planted on purpose so that `model_check.rs` can show it is found. The server
/// always runs with [`Flaw::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Flaw {
    /// As designed.
    #[default]
    None,
    /// `fine`: a transfer locks `from` then `to`, not in name order.
    #[cfg_attr(not(test), allow(dead_code))]
    UnorderedLocks,
    /// `atomic`: a write is a blind store of the value read minus the amount, not a CAS.
    #[cfg_attr(not(test), allow(dead_code))]
    BlindStore,
    /// `atomic`: a transfer lowers `in_flight` before its credit, not after.
    #[cfg_attr(not(test), allow(dead_code))]
    CreditOutsideInFlight,
}

/// One strategy's operations. Amounts are already valid (1 to `MAX_AMOUNT`; 0 allowed for
/// a new balance) and a transfer's accounts differ.
trait Strategy: Send + Sync {
    fn create(&self, env: &Env<'_>, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError>;
    fn balance(&self, env: &Env<'_>, account: &AccountId) -> Result<Cents, LedgerError>;
    fn withdraw(&self, env: &Env<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError>;
    fn transfer(&self, env: &Env<'_>, from: &AccountId, to: &AccountId, amount: Cents)
        -> Result<(Cents, Cents), LedgerError>;
    fn audit(&self, env: &Env<'_>) -> Result<Vec<(AccountId, Cents)>, LedgerError>;
}

/// What an operation runs with: the store, and the pause the binary asked for.
struct Env<'a> {
    store: &'a dyn Store,
    think: Option<&'a Think>,
}

impl Env<'_> {
    /// The yield between read and write: a store round trip, then the think time. Its
    /// result does not matter: it is only there so that other calls run meanwhile.
    fn pause(&self) {
        let _ = self.store.round_trip();
        if let Some(think) = self.think {
            think();
        }
    }
}

/// What [`Ledger::with_think`] installs: called in every operation's window between read
/// and write, after the store round trip (the binary sleeps there; the core cannot).
pub type Think = dyn Fn() + Send + Sync;

fn insufficient(account: &AccountId, balance: i64, amount: Cents) -> LedgerError {
    LedgerError::InsufficientFunds { account: account.clone(), balance: Cents(balance), amount }
}

// ---- shared by the in-memory strategies -----------------------------------------------

/// Name to account, behind a read-write lock (see the module docs' shortcut).
struct Directory<A> {
    accounts: RwLock<BTreeMap<AccountId, Arc<A>>>,
}

impl<A> Default for Directory<A> {
    fn default() -> Self {
        Directory { accounts: RwLock::new(BTreeMap::new()) }
    }
}

impl<A> Directory<A> {
    fn get(&self, account: &AccountId) -> Result<Arc<A>, LedgerError> {
        let accounts = self.accounts.read().unwrap_or_else(|p| p.into_inner());
        accounts.get(account).cloned().ok_or_else(|| LedgerError::UnknownAccount(account.clone()))
    }

    fn insert(&self, account: &AccountId, value: A) -> Result<(), LedgerError> {
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        if accounts.contains_key(account) {
            return Err(LedgerError::AccountExists(account.clone()));
        }
        accounts.insert(account.clone(), Arc::new(value));
        Ok(())
    }

    /// Every account, in name order: the lock order of `fine`.
    fn all(&self) -> Vec<(AccountId, Arc<A>)> {
        let accounts = self.accounts.read().unwrap_or_else(|p| p.into_inner());
        accounts.iter().map(|(id, a)| (id.clone(), Arc::clone(a))).collect()
    }
}

/// The bank's total, kept below [`MAX_TOTAL`] when accounts are created.
#[derive(Default)]
struct Supply(AtomicI64);

impl Supply {
    fn reserve(&self, amount: Cents) -> Result<(), LedgerError> {
        let mut current = self.0.load(Ordering::SeqCst);
        loop {
            let next = current.checked_add(amount.0).filter(|n| *n <= MAX_TOTAL).ok_or(LedgerError::BankFull)?;
            match self.0.compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    fn release(&self, amount: Cents) {
        self.0.fetch_sub(amount.0, Ordering::SeqCst);
    }

    fn create<A>(&self, directory: &Directory<A>, account: &AccountId, balance: Cents, value: A) -> Result<Cents, LedgerError> {
        self.reserve(balance)?;
        directory.insert(account, value).inspect_err(|_| self.release(balance))?;
        Ok(balance)
    }
}

// ---- none ------------------------------------------------------------------------------

/// `none`: balances as atomics only so that the race is a lost update, not undefined
/// behaviour; every read and write is a separate, unsynchronised step.
#[derive(Default)]
struct Racy {
    accounts: Directory<AtomicI64>,
    supply: Supply,
}

impl Strategy for Racy {
    fn create(&self, _: &Env<'_>, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        self.supply.create(&self.accounts, account, balance, AtomicI64::new(balance.0))
    }

    fn balance(&self, _: &Env<'_>, account: &AccountId) -> Result<Cents, LedgerError> {
        Ok(Cents(self.accounts.get(account)?.load(Ordering::Relaxed)))
    }

    fn withdraw(&self, env: &Env<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        let cell = self.accounts.get(account)?;
        let balance = cell.load(Ordering::Relaxed); // Process A sees John's balance is $25
        env.pause(); // ... and so does process B, meanwhile
        if balance < amount.0 {
            return Err(insufficient(account, balance, amount));
        }
        cell.store(balance - amount.0, Ordering::Relaxed); // both set it to $0
        self.supply.release(amount);
        Ok(Cents(balance - amount.0))
    }

    fn transfer(&self, env: &Env<'_>, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        let (source, target) = (self.accounts.get(from)?, self.accounts.get(to)?);
        let (debit, credit) = (source.load(Ordering::Relaxed), target.load(Ordering::Relaxed));
        env.pause();
        if debit < amount.0 {
            return Err(insufficient(from, debit, amount));
        }
        // Saturating: lost updates may inflate balances without bound; they must not wrap.
        let (debit, credit) = (debit - amount.0, credit.saturating_add(amount.0));
        source.store(debit, Ordering::Relaxed);
        target.store(credit, Ordering::Relaxed);
        Ok((Cents(debit), Cents(credit)))
    }

    fn audit(&self, _: &Env<'_>) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        Ok(self.accounts.all().into_iter().map(|(id, cell)| (id, Cents(cell.load(Ordering::Relaxed)))).collect())
    }
}

/// `none` across worker processes: the same read, yield, write back, on the store's rows.
struct RacyInStore;

/// Creating, reading and auditing are `db`'s; only withdrawals and transfers race.
impl Strategy for RacyInStore {
    fn create(&self, env: &Env<'_>, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        Db.create(env, account, balance)
    }

    fn balance(&self, env: &Env<'_>, account: &AccountId) -> Result<Cents, LedgerError> {
        Db.balance(env, account)
    }

    fn withdraw(&self, env: &Env<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        let rows = ledger_of(env.store)?;
        let balance = rows.balance(account)?.0;
        env.pause();
        if balance < amount.0 {
            return Err(insufficient(account, balance, amount));
        }
        rows.overwrite(account, Cents(balance - amount.0))?;
        Ok(Cents(balance - amount.0))
    }

    fn transfer(&self, env: &Env<'_>, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        let rows = ledger_of(env.store)?;
        let (debit, credit) = (rows.balance(from)?.0, rows.balance(to)?.0);
        env.pause();
        if debit < amount.0 {
            return Err(insufficient(from, debit, amount));
        }
        let (debit, credit) = (Cents(debit - amount.0), Cents(credit.saturating_add(amount.0)));
        rows.overwrite(from, debit)?;
        rows.overwrite(to, credit)?;
        Ok((debit, credit))
    }

    fn audit(&self, env: &Env<'_>) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        Db.audit(env)
    }
}

// ---- giant -----------------------------------------------------------------------------

#[derive(Default)]
struct Giant {
    state: Mutex<GiantState>,
}

#[derive(Default)]
struct GiantState {
    balances: BTreeMap<AccountId, i64>,
    total: i64,
}

impl GiantState {
    fn get(&self, account: &AccountId) -> Result<i64, LedgerError> {
        self.balances.get(account).copied().ok_or_else(|| LedgerError::UnknownAccount(account.clone()))
    }
}

impl Strategy for Giant {
    fn create(&self, _: &Env<'_>, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        let mut state = lock(&self.state);
        if state.balances.contains_key(account) {
            return Err(LedgerError::AccountExists(account.clone()));
        }
        state.total = state.total.checked_add(balance.0).filter(|t| *t <= MAX_TOTAL).ok_or(LedgerError::BankFull)?;
        state.balances.insert(account.clone(), balance.0);
        Ok(balance)
    }

    fn balance(&self, _: &Env<'_>, account: &AccountId) -> Result<Cents, LedgerError> {
        lock(&self.state).get(account).map(Cents)
    }

    fn withdraw(&self, env: &Env<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        let mut state = lock(&self.state); // with lock:
        let balance = state.get(account)?;
        env.pause();
        if balance < amount.0 {
            return Err(insufficient(account, balance, amount));
        }
        state.balances.insert(account.clone(), balance - amount.0);
        state.total -= amount.0;
        Ok(Cents(balance - amount.0))
    }

    fn transfer(&self, env: &Env<'_>, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        let mut state = lock(&self.state);
        let (debit, credit) = (state.get(from)?, state.get(to)?);
        env.pause();
        if debit < amount.0 {
            return Err(insufficient(from, debit, amount));
        }
        let (debit, credit) = (debit - amount.0, credit + amount.0);
        state.balances.insert(from.clone(), debit);
        state.balances.insert(to.clone(), credit);
        Ok((Cents(debit), Cents(credit)))
    }

    fn audit(&self, _: &Env<'_>) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        Ok(lock(&self.state).balances.iter().map(|(id, b)| (id.clone(), Cents(*b))).collect())
    }
}

// ---- fine ------------------------------------------------------------------------------

#[derive(Default)]
struct Fine {
    accounts: Directory<Mutex<i64>>,
    supply: Supply,
    flaw: Flaw,
}

impl Strategy for Fine {
    fn create(&self, _: &Env<'_>, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        self.supply.create(&self.accounts, account, balance, Mutex::new(balance.0))
    }

    fn balance(&self, _: &Env<'_>, account: &AccountId) -> Result<Cents, LedgerError> {
        Ok(Cents(*lock(&*self.accounts.get(account)?)))
    }

    fn withdraw(&self, env: &Env<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        let cell = self.accounts.get(account)?;
        let mut balance = lock(&*cell);
        let seen = *balance;
        env.pause();
        if seen < amount.0 {
            return Err(insufficient(account, seen, amount));
        }
        *balance = seen - amount.0;
        self.supply.release(amount);
        Ok(Cents(*balance))
    }

    fn transfer(&self, env: &Env<'_>, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        let (source, target) = (self.accounts.get(from)?, self.accounts.get(to)?);
        // The fixed order: by name, whichever way the money moves. Two opposite transfers
        // between John and Jane both lock Jane first, so neither can hold one lock while
        // waiting for the other's.
        let in_name_order = from < to || self.flaw == Flaw::UnorderedLocks;
        let (mut debit, mut credit) = if in_name_order {
            let debit = lock(&*source);
            (debit, lock(&*target))
        } else {
            let credit = lock(&*target);
            (lock(&*source), credit)
        };
        let seen = *debit;
        env.pause();
        if seen < amount.0 {
            return Err(insufficient(from, seen, amount));
        }
        *debit = seen - amount.0;
        *credit += amount.0;
        Ok((Cents(*debit), Cents(*credit)))
    }

    fn audit(&self, _: &Env<'_>) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        // All the locks, in name order (the directory's), held together: a snapshot in
        // which no transfer is half done.
        let accounts = self.accounts.all();
        let held: Vec<_> = accounts.iter().map(|(_, cell)| lock(&**cell)).collect();
        Ok(accounts.iter().zip(&held).map(|((id, _), balance)| (id.clone(), Cents(**balance))).collect())
    }
}

// ---- atomic ----------------------------------------------------------------------------

#[derive(Default)]
struct Atomic {
    accounts: Directory<AtomicI64>,
    supply: Supply,
    /// Writes between their first step and their last (see the module docs).
    in_flight: AtomicU64,
    /// Bumped by every write that changed a balance.
    epoch: AtomicU64,
    flaw: Flaw,
}

impl Atomic {
    /// Runs `read` at a quiet moment: no write step overlapped it.
    fn quiet<R>(&self, read: impl Fn() -> R) -> Result<R, LedgerError> {
        for _ in 0..QUIET_TRIES {
            let epoch = self.epoch.load(Ordering::SeqCst);
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                let seen = read();
                if self.in_flight.load(Ordering::SeqCst) == 0 && self.epoch.load(Ordering::SeqCst) == epoch {
                    return Ok(seen);
                }
            }
            std::hint::spin_loop();
        }
        Err(LedgerError::Busy(QUIET_TRIES))
    }

    /// Takes `amount` out of `cell` with the CAS loop of the module docs, then runs `rest`
    /// (a transfer's credit) before the write leaves flight; the balance after, and what
    /// `rest` gave.
    fn debit<R>(
        &self,
        env: &Env<'_>,
        cell: &AtomicI64,
        account: &AccountId,
        amount: Cents,
        rest: impl FnOnce() -> R,
    ) -> Result<(Cents, R), LedgerError> {
        for _ in 0..QUIET_TRIES {
            let seen = self.quiet(|| cell.load(Ordering::SeqCst))?;
            env.pause();
            if seen < amount.0 {
                return Err(insufficient(account, seen, amount));
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if !self.swap(cell, seen, seen - amount.0) {
                // Another write got in between the read and the CAS: start again from the read.
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            // In flight: a transfer is debited, not yet credited. No reader looks now.
            let early = self.flaw == Flaw::CreditOutsideInFlight;
            if early {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            let rest = rest();
            self.epoch.fetch_add(1, Ordering::SeqCst);
            if !early {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            return Ok((Cents(seen - amount.0), rest));
        }
        Err(LedgerError::Busy(QUIET_TRIES))
    }

    /// Replaces `seen` by `next` in `cell` if nothing changed it meanwhile.
    fn swap(&self, cell: &AtomicI64, seen: i64, next: i64) -> bool {
        if self.flaw == Flaw::BlindStore {
            cell.store(next, Ordering::SeqCst);
            return true;
        }
        cell.compare_exchange(seen, next, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

impl Strategy for Atomic {
    fn create(&self, _: &Env<'_>, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        self.supply.create(&self.accounts, account, balance, AtomicI64::new(balance.0))
    }

    fn balance(&self, _: &Env<'_>, account: &AccountId) -> Result<Cents, LedgerError> {
        let cell = self.accounts.get(account)?;
        self.quiet(|| Cents(cell.load(Ordering::SeqCst)))
    }

    fn withdraw(&self, env: &Env<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        let cell = self.accounts.get(account)?;
        let (after, ()) = self.debit(env, &cell, account, amount, || ())?;
        self.supply.release(amount);
        Ok(after)
    }

    fn transfer(&self, env: &Env<'_>, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        let (source, target) = (self.accounts.get(from)?, self.accounts.get(to)?);
        let credit = || Cents(target.fetch_add(amount.0, Ordering::SeqCst) + amount.0);
        self.debit(env, &source, from, amount, credit)
    }

    fn audit(&self, _: &Env<'_>) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        let accounts = self.accounts.all();
        let balances = self.quiet(|| accounts.iter().map(|(_, cell)| cell.load(Ordering::SeqCst)).collect::<Vec<_>>())?;
        Ok(accounts.into_iter().zip(balances).map(|((id, _), b)| (id, Cents(b))).collect())
    }
}

// ---- db --------------------------------------------------------------------------------

/// `db`: everything in the store, one transaction per operation.
struct Db;

impl Strategy for Db {
    fn create(&self, env: &Env<'_>, account: &AccountId, balance: Cents) -> Result<Cents, LedgerError> {
        ledger_of(env.store)?.create(account, balance)
    }

    fn balance(&self, env: &Env<'_>, account: &AccountId) -> Result<Cents, LedgerError> {
        ledger_of(env.store)?.balance(account)
    }

    fn withdraw(&self, env: &Env<'_>, account: &AccountId, amount: Cents) -> Result<Cents, LedgerError> {
        ledger_of(env.store)?.withdraw(account, amount)
    }

    fn transfer(&self, env: &Env<'_>, from: &AccountId, to: &AccountId, amount: Cents) -> Result<(Cents, Cents), LedgerError> {
        ledger_of(env.store)?.transfer(from, to, amount)
    }

    fn audit(&self, env: &Env<'_>) -> Result<Vec<(AccountId, Cents)>, LedgerError> {
        ledger_of(env.store)?.audit()
    }
}
