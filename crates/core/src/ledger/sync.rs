//! The synchronisation primitives of the in-memory strategies: `std::sync` in the server,
//! shuttle's in this crate's unit tests, so that `model_check.rs` can explore their
//! interleavings (the way tokio swaps in loom's under `cfg(loom)`).
//!
//! Every ledger unit test therefore runs inside `shuttle::check_*`; the crate's integration
//! tests (`tests/ledger.rs`) and the server get `std`'s.

#[cfg(not(test))]
pub(crate) use std::sync::{
    atomic::{AtomicI64, AtomicU64},
    Mutex, MutexGuard, RwLock,
};

#[cfg(test)]
pub(crate) use shuttle::sync::{
    atomic::{AtomicI64, AtomicU64},
    Mutex, MutexGuard, RwLock,
};

pub(crate) use std::sync::atomic::Ordering;

/// Takes `mutex`, ignoring poisoning: every critical section of the ledger changes its
/// balances in single assignments after all its checks, so a panic cannot leave one
/// half-changed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
