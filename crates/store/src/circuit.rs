//! A database that is down: fail fast, say so once, try again now and then.
//!
//! Without this, every store call would wait its own connect timeout against a database
//! that is gone, and the offload queue behind them would make a post wait for many such
//! timeouts in a row. A [`Circuit`] (the circuit-breaker of Nygard's *Release It!*) is
//! shared by all connections to one database:
//!
//! - **closed** (the normal state): calls go through;
//! - **open**: a connection could not be made, or one broke. Calls fail at once with the
//!   last error and how long the database has been unreachable, until the retry time;
//! - **probing**: once [`RETRY_EVERY`] has passed, one call is let through to try; its
//!   success closes the circuit, its failure opens it again for another period.
//!
//! It logs once when the database becomes unreachable and once when it is back, not once
//! per failed request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use c10k_core::store::StoreError;

/// How long an unreachable database is left alone before one call tries it again.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Whether calls to one database may go through; see the module docs.
#[derive(Debug)]
pub(crate) struct Circuit {
    /// What the database is, for messages: `MySQL at 127.0.0.1:3306/test`.
    what: String,
    state: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    since: Instant,
    next_try: Instant,
    error: StoreError,
}

impl Circuit {
    /// A closed circuit for the database described by `what`.
    pub(crate) fn new(what: String) -> Circuit {
        Circuit { what, state: Mutex::new(None) }
    }

    /// What the database is, for messages.
    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Ok when a call may try the database: the circuit is closed, or it is time for one
    /// call to probe (the next probe is then pushed a period further, so only this one
    /// goes). Otherwise the error to answer at once.
    pub(crate) fn admit(&self) -> Result<(), StoreError> {
        let mut state = self.lock();
        let Some(open) = state.as_mut() else { return Ok(()) };
        let now = Instant::now();
        if now >= open.next_try {
            open.next_try = now + RETRY_EVERY;
            return Ok(());
        }
        Err(StoreError(format!(
            "{} has been unreachable for {:.1} s ({}); retrying every {} s",
            self.what,
            now.duration_since(open.since).as_secs_f64(),
            open.error.0.trim_start_matches("store: "),
            RETRY_EVERY.as_secs()
        )))
    }

    /// A connection could not be made, or broke: open the circuit (log when it was closed).
    pub(crate) fn trip(&self, error: &StoreError) {
        let mut state = self.lock();
        let now = Instant::now();
        match state.as_mut() {
            Some(open) => {
                open.error = error.clone();
                open.next_try = now + RETRY_EVERY;
            }
            None => {
                tracing::warn!(
                    database = %self.what,
                    "{error}; store calls fail at once (503) until it answers again, tried every {} s",
                    RETRY_EVERY.as_secs()
                );
                *state = Some(Open { since: now, next_try: now + RETRY_EVERY, error: error.clone() });
            }
        }
    }

    /// A call succeeded: close the circuit (log when it was open).
    pub(crate) fn reset(&self) {
        let mut state = self.lock();
        if let Some(open) = state.take() {
            tracing::info!(
                database = %self.what,
                "the database answers again after {:.1} s unreachable",
                open.since.elapsed().as_secs_f64()
            );
        }
    }

    /// What a call's result means for the circuit: a success closes it, a broken
    /// connection opens it (after `on_broken`, which throws the connection away); a query
    /// error (the database answered) leaves it as it is.
    pub(crate) fn settle<T>(
        &self,
        result: Result<T, crate::pool::Failure>,
        on_broken: impl FnOnce(),
    ) -> Result<T, StoreError> {
        use crate::pool::Failure;
        match result {
            Ok(value) => {
                self.reset();
                Ok(value)
            }
            Err(Failure::Query(e)) => Err(e),
            Err(Failure::Stale(e) | Failure::Broken(e)) => {
                on_broken();
                self.trip(&e);
                Err(e)
            }
        }
    }

    /// Whether the circuit is open (the database was unreachable at the last try).
    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        // Each update is one assignment: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> StoreError {
        StoreError(text.to_string())
    }

    #[test]
    fn a_closed_circuit_admits_every_call() {
        let circuit = Circuit::new("db".into());
        for _ in 0..3 {
            assert!(circuit.admit().is_ok());
        }
        assert!(!circuit.is_open());
    }

    #[test]
    fn an_open_circuit_refuses_at_once_with_the_last_error_and_what_the_database_is() {
        let circuit = Circuit::new("MySQL at 127.0.0.1:1/test".into());
        circuit.trip(&error("connection refused"));
        let refused = circuit.admit().unwrap_err().0;
        assert!(refused.contains("MySQL at 127.0.0.1:1/test"), "{refused}");
        assert!(refused.contains("connection refused"), "{refused}");
        assert!(refused.contains("unreachable"), "{refused}");
        circuit.trip(&error("timed out"));
        assert!(circuit.admit().unwrap_err().0.contains("timed out"));
    }

    #[test]
    fn after_the_retry_period_one_call_probes_and_the_others_still_fail_fast() {
        let circuit = Circuit::new("db".into());
        circuit.trip(&error("down"));
        // As if the period had passed: move the next try into the past.
        circuit.lock().as_mut().unwrap().next_try = Instant::now() - Duration::from_millis(1);
        assert!(circuit.admit().is_ok(), "the probe goes through");
        assert!(circuit.admit().is_err(), "a second caller does not");
    }

    #[test]
    fn a_success_closes_the_circuit() {
        let circuit = Circuit::new("db".into());
        circuit.trip(&error("down"));
        circuit.reset();
        assert!(!circuit.is_open());
        assert!(circuit.admit().is_ok());
    }
}
