//! The checker of `c10k ledger-check`: given what every client sent and was answered, and
//! when, is there a serial order of the operations that explains every answer?
//!
//! In the spirit of Jepsen's bank test. A full linearizability search (Knossos, Porcupine)
//! is exponential in the concurrency; this checks conditions every linearizable bank must
//! meet, each cheap and each a proof when it fails (no false alarms):
//!
//! 1. no balance reported anywhere (an answer, an audit, the final state) is below 0;
//! 2. per account, the debits accepted are no more than its starting balance plus every
//!    credit that may have happened (John cannot pay out 5000 from 2500);
//! 3. the final balances are exactly what the accepted operations leave, per account and
//!    in total (a lost update shows here as money created or vanished);
//! 4. each audit saw a total, and per-account balances, that some point of its own
//!    interval allows: between what the operations certainly done before it left and what
//!    those possibly done by its end left (audits must always see the conserved total);
//! 5. each withdrawal or transfer answered "insufficient funds" asked for more than the
//!    account could have held at some point of its interval, and each accepted one for no
//!    more than it could have held.
//!
//! "Certainly before" an operation means answered before it was sent; "possibly" means
//! sent before it was answered. An operation without an answer (a dropped connection) may
//! or may not have happened, and counts as both.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Nanoseconds since the check began, on one monotonic clock for every client.
pub type Nanos = u64;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Take `amount` out of `account`.
    Withdraw {
        /// The account.
        account: String,
        /// Cents.
        amount: i64,
    },
    /// Move `amount` from `from` to `to`.
    Transfer {
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// Cents.
        amount: i64,
    },
    /// Read every balance.
    Audit,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Done; the balances the answer reported (the accounts after, or the audit's).
    Ok(Vec<(String, i64)>),
    /// Refused for insufficient funds: nothing changed.
    Insufficient,
    /// Refused for another reason that certainly changed nothing (503 busy).
    NotApplied(String),
    /// An answer the checker did not expect (a 404 for an account it created): reported.
    Unexpected(String),
    /// No answer (connection lost, timeout): may or may not have happened.
    Unknown(String),
}

/// One operation, from sending it to reading its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When the request was sent.
    pub start: Nanos,
    /// When the answer was read in full; `None` if it never came.
    pub end: Option<Nanos>,
    /// What was asked.
    pub op: Op,
    /// What came back.
    pub answer: Answer,
}

/// Everything a run saw.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every account and the balance it was created with, before any concurrent operation.
    pub initial: BTreeMap<String, i64>,
    /// The concurrent operations, in any order.
    pub events: Vec<Event>,
    /// The balances read once every operation was answered.
    pub final_balances: Option<BTreeMap<String, i64>>,
}

/// Whether an operation took effect: certainly, possibly, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Took {
    Yes,
    Maybe,
    No,
}

impl Event {
    fn took(&self) -> Took {
        match self.answer {
            Answer::Ok(_) => Took::Yes,
            Answer::Unknown(_) => Took::Maybe,
            Answer::Insufficient | Answer::NotApplied(_) | Answer::Unexpected(_) => Took::No,
        }
    }

    fn end_or_never(&self) -> Nanos {
        self.end.unwrap_or(Nanos::MAX)
    }

    /// What the operation would do to `account`: minus for a debit, plus for a credit.
    fn effect_on(&self, account: &str) -> i64 {
        match &self.op {
            Op::Withdraw { account: a, amount } if a == account => -amount,
            Op::Transfer { from, amount, .. } if from == account => -amount,
            Op::Transfer { to, amount, .. } if to == account => *amount,
            _ => 0,
        }
    }

    /// What the operation would do to the bank's total.
    fn effect_on_total(&self) -> i64 {
        match &self.op {
            Op::Withdraw { amount, .. } => -amount,
            _ => 0,
        }
    }

    fn describe(&self) -> String {
        match &self.op {
            Op::Withdraw { account, amount } => format!("withdrawal of {amount} from {account}"),
            Op::Transfer { from, to, amount } => format!("transfer of {amount} from {from} to {to}"),
            Op::Audit => "audit".to_string(),
        }
    }
}

fn seconds(at: Nanos) -> String {
    format!("{:.3} s", at as f64 / 1e9)
}

/// The range an amount (a balance, the total) can have at some point of `[start, end]`:
/// `effect` says what each other event does to it.
fn range_during(
    events: &[Event],
    skip: usize,
    start: Nanos,
    end: Nanos,
    base: i64,
    effect: impl Fn(&Event) -> i64,
) -> (i64, i64) {
    let (mut low, mut high) = (base, base);
    for (i, e) in events.iter().enumerate() {
        let delta = effect(e);
        if i == skip || delta == 0 {
            continue;
        }
        let certainly_before = e.took() == Took::Yes && e.end_or_never() < start;
        let possibly_before = e.took() != Took::No && e.start < end;
        if certainly_before {
            low += delta;
            high += delta;
        } else if possibly_before {
            if delta < 0 {
                low += delta;
            } else {
                high += delta;
            }
        }
    }
    (low, high)
}

fn created_or_vanished(seen: i64, low: i64, high: i64) -> Option<String> {
    if seen > high {
        Some(format!("{} created from nothing", seen - high))
    } else if seen < low {
        Some(format!("{} vanished", low - seen))
    } else {
        None
    }
}

/// Every violation of the conditions in the module docs, one line each, most telling
/// first (overdrafts and final balances, then audits, then single answers).
pub fn check(history: &History) -> Vec<String> {
    let mut found = Vec::new();
    let events = &history.events;
    let accounts: Vec<&String> = history.initial.keys().collect();

    // 1. Nothing below zero.
    for e in events {
        if let Answer::Ok(balances) = &e.answer {
            for (account, balance) in balances.iter().filter(|(_, b)| *b < 0) {
                found.push(format!(
                    "account {account}: balance {balance} reported by the {} answered at {}",
                    e.describe(),
                    seconds(e.end_or_never())
                ));
            }
        }
        if let Answer::Unexpected(what) = &e.answer {
            found.push(format!("the {} sent at {} was answered {what}", e.describe(), seconds(e.start)));
        }
    }
    if let Some(finals) = &history.final_balances {
        for (account, balance) in finals.iter().filter(|(_, b)| **b < 0) {
            found.push(format!("account {account}: ends with a balance of {balance}"));
        }
    }

    // 2. No overdraft, whatever the order.
    for account in &accounts {
        let initial = history.initial[*account];
        let debits: Vec<&Event> =
            events.iter().filter(|e| e.took() == Took::Yes && e.effect_on(account) < 0).collect();
        let paid: i64 = debits.iter().map(|e| -e.effect_on(account)).sum();
        let credits: i64 =
            events.iter().filter(|e| e.took() != Took::No).map(|e| e.effect_on(account).max(0)).sum();
        if paid > initial + credits {
            let amounts: Vec<i64> = debits.iter().map(|e| -e.effect_on(account)).collect();
            let withdrawals = debits.iter().all(|e| matches!(e.op, Op::Withdraw { .. }));
            let mut line = format!("account {account}: ");
            if withdrawals && amounts.iter().all(|a| *a == amounts[0]) {
                let _ = write!(line, "{} withdrawals of {}", amounts.len(), amounts[0]);
            } else {
                let _ = write!(line, "{} debits totalling {paid}", amounts.len());
            }
            let _ = write!(line, " accepted from {initial}");
            if credits > 0 {
                let _ = write!(line, " plus at most {credits} credited");
            }
            let _ = write!(line, ": {} created from nothing", paid - initial - credits);
            found.push(line);
        }
    }

    // 3. The final state is what the accepted operations leave.
    if let Some(finals) = &history.final_balances {
        for account in &accounts {
            let initial = history.initial[*account];
            let Some(&seen) = finals.get(*account) else {
                found.push(format!("account {account}: missing from the final audit"));
                continue;
            };
            let (low, high) = range_during(events, usize::MAX, Nanos::MAX, Nanos::MAX, initial, |e| e.effect_on(account));
            if let Some(what) = created_or_vanished(seen, low, high) {
                let leave = if low == high { format!("{low}") } else { format!("{low} to {high}") };
                found.push(format!("account {account}: ends with {seen}, but the accepted operations leave {leave}: {what}"));
            }
        }
        let initial: i64 = history.initial.values().sum();
        let seen: i64 = history.initial.keys().filter_map(|a| finals.get(a)).sum();
        let (low, high) = range_during(events, usize::MAX, Nanos::MAX, Nanos::MAX, initial, Event::effect_on_total);
        if let Some(what) = created_or_vanished(seen, low, high) {
            let paid = if low == high { format!("{}", initial - high) } else { format!("{} to {}", initial - high, initial - low) };
            found.push(format!("total: the bank ends with {seen}, but started with {initial} and paid out {paid}: {what}"));
        }
    }

    // 4. Every audit saw a state some moment of its interval allows.
    let initial_total: i64 = history.initial.values().sum();
    for (i, e) in events.iter().enumerate() {
        let (Op::Audit, Answer::Ok(balances)) = (&e.op, &e.answer) else { continue };
        let (start, end) = (e.start, e.end_or_never());
        let seen: BTreeMap<&str, i64> = balances.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        let total: i64 = accounts.iter().filter_map(|a| seen.get(a.as_str())).sum();
        let (low, high) = range_during(events, i, start, end, initial_total, Event::effect_on_total);
        if let Some(what) = created_or_vanished(total, low, high) {
            let allowed = if low == high { format!("{low}") } else { format!("{low} to {high}") };
            found.push(format!("audit at {}: saw a total of {total} where the operations allow {allowed}: {what}", seconds(start)));
        }
        for account in &accounts {
            let Some(&balance) = seen.get(account.as_str()) else {
                found.push(format!("audit at {}: account {account} is missing", seconds(start)));
                continue;
            };
            let initial = history.initial[*account];
            let (low, high) = range_during(events, i, start, end, initial, |e| e.effect_on(account));
            if let Some(what) = created_or_vanished(balance, low, high) {
                found.push(format!(
                    "audit at {}: account {account} held {balance} where the operations allow {low} to {high}: {what}",
                    seconds(start)
                ));
            }
        }
    }

    // 5. Each single answer fits the balance the account could have had.
    for (i, e) in events.iter().enumerate() {
        let (account, amount) = match &e.op {
            Op::Withdraw { account, amount } => (account, *amount),
            Op::Transfer { from, amount, .. } => (from, *amount),
            Op::Audit => continue,
        };
        let Some(&initial) = history.initial.get(account) else { continue };
        let (low, high) = range_during(events, i, e.start, e.end_or_never(), initial, |o| o.effect_on(account));
        match e.answer {
            Answer::Insufficient if low >= amount => found.push(format!(
                "the {} sent at {} was refused for insufficient funds, but {account} held at least {low} throughout",
                e.describe(),
                seconds(e.start)
            )),
            Answer::Ok(_) if high < amount => found.push(format!(
                "the {} sent at {} was accepted, but {account} held at most {high}: {} created from nothing",
                e.describe(),
                seconds(e.start),
                amount - high
            )),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn withdraw(start: Nanos, end: Nanos, account: &str, amount: i64, answer: Answer) -> Event {
        Event { start, end: Some(end), op: Op::Withdraw { account: account.into(), amount }, answer }
    }

    fn transfer(start: Nanos, end: Nanos, from: &str, to: &str, amount: i64, answer: Answer) -> Event {
        Event { start, end: Some(end), op: Op::Transfer { from: from.into(), to: to.into(), amount }, answer }
    }

    fn audit(start: Nanos, end: Nanos, balances: &[(&str, i64)]) -> Event {
        Event {
            start,
            end: Some(end),
            op: Op::Audit,
            answer: Answer::Ok(balances.iter().map(|(a, b)| (a.to_string(), *b)).collect()),
        }
    }

    fn ok(balances: &[(&str, i64)]) -> Answer {
        Answer::Ok(balances.iter().map(|(a, b)| (a.to_string(), *b)).collect())
    }

    fn history(initial: &[(&str, i64)], events: Vec<Event>, finals: &[(&str, i64)]) -> History {
        History {
            initial: initial.iter().map(|(a, b)| (a.to_string(), *b)).collect(),
            events,
            final_balances: Some(finals.iter().map(|(a, b)| (a.to_string(), *b)).collect()),
        }
    }

    #[test]
    fn the_talks_race_two_withdrawals_of_johns_whole_balance_is_found() {
        // Process A and B both see $25, both deduct it, both set the balance to $0.
        let h = history(
            &[("john", 2500)],
            vec![
                withdraw(0, 10, "john", 2500, ok(&[("john", 0)])),
                withdraw(1, 11, "john", 2500, ok(&[("john", 0)])),
            ],
            &[("john", 0)],
        );
        let found = check(&h);
        assert_eq!(found[0], "account john: 2 withdrawals of 2500 accepted from 2500: 2500 created from nothing");
        assert!(found.iter().any(|v| v.contains("ends with 0, but the accepted operations leave -2500")), "{found:?}");
    }

    #[test]
    fn a_lost_update_between_two_transfers_is_found_in_the_final_balances() {
        // Both transfers read jane at 2500 and write back 2500 + their amount.
        let h = history(
            &[("john", 2500), ("jane", 2500)],
            vec![
                transfer(0, 10, "john", "jane", 100, ok(&[("john", 2400), ("jane", 2600)])),
                transfer(1, 11, "john", "jane", 200, ok(&[("john", 2200), ("jane", 2700)])),
            ],
            &[("john", 2200), ("jane", 2700)],
        );
        let found = check(&h);
        assert_eq!(
            found,
            vec![
                "account jane: ends with 2700, but the accepted operations leave 2800: 100 vanished",
                "total: the bank ends with 4900, but started with 5000 and paid out 0: 100 vanished",
            ]
        );
    }

    #[test]
    fn a_correct_concurrent_history_passes() {
        // One of two concurrent withdrawals of the whole balance wins; a transfer refills
        // John; audits see 5000 then 2500 (the withdrawal may or may not be in the first).
        let h = history(
            &[("john", 2500), ("jane", 2500)],
            vec![
                withdraw(0, 10, "john", 2500, ok(&[("john", 0)])),
                withdraw(1, 12, "john", 2500, Answer::Insufficient),
                audit(5, 8, &[("john", 2500), ("jane", 2500)]),
                transfer(20, 30, "jane", "john", 1000, ok(&[("jane", 1500), ("john", 1000)])),
                audit(25, 28, &[("john", 0), ("jane", 2500)]),
                audit(31, 40, &[("john", 1000), ("jane", 1500)]),
                transfer(41, 50, "john", "jane", 1001, Answer::Insufficient),
            ],
            &[("john", 1000), ("jane", 1500)],
        );
        assert_eq!(check(&h), Vec::<String>::new());
    }

    #[test]
    fn an_audit_that_sees_a_transfer_half_done_is_found() {
        let h = history(
            &[("john", 2500), ("jane", 2500)],
            vec![
                transfer(0, 10, "john", "jane", 1000, ok(&[("john", 1500), ("jane", 3500)])),
                audit(2, 8, &[("john", 1500), ("jane", 2500)]),
            ],
            &[("john", 1500), ("jane", 3500)],
        );
        let found = check(&h);
        assert_eq!(found, vec!["audit at 0.000 s: saw a total of 4000 where the operations allow 5000: 1000 vanished"]);
    }

    #[test]
    fn an_insufficient_funds_answer_while_the_account_held_enough_throughout_is_found() {
        let h = history(&[("john", 2500)], vec![withdraw(0, 10, "john", 100, Answer::Insufficient)], &[("john", 2500)]);
        let found = check(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("refused for insufficient funds, but john held at least 2500 throughout"), "{found:?}");
    }

    #[test]
    fn an_unanswered_operation_may_or_may_not_have_happened() {
        let mut lost = withdraw(0, 0, "john", 500, Answer::Unknown("connection closed".into()));
        lost.end = None;
        for final_balance in [2500, 2000] {
            let h = history(&[("john", 2500)], vec![lost.clone()], &[("john", final_balance)]);
            assert_eq!(check(&h), Vec::<String>::new(), "final {final_balance}");
        }
        let h = history(&[("john", 2500)], vec![lost], &[("john", 1500)]);
        assert_eq!(
            check(&h),
            vec![
                "account john: ends with 1500, but the accepted operations leave 2000 to 2500: 500 vanished",
                "total: the bank ends with 1500, but started with 2500 and paid out 0 to 500: 500 vanished",
            ]
        );
    }

    #[test]
    fn a_negative_balance_in_an_answer_is_found() {
        let h = history(&[("john", 2500)], vec![withdraw(0, 10, "john", 100, ok(&[("john", -1)]))], &[("john", 2400)]);
        assert!(check(&h).iter().any(|v| v.contains("account john: balance -1 reported")));
    }
}
