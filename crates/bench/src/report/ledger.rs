//! The ledger suite's tables: a summary per contention (models down, strategies across),
//! then every cell with its checker's finding. A cell is found by model, `--locking` and
//! accounts, which [`key`] reads from the cell itself, not from its id.

use std::fmt::Write as _;

use super::{fx, med, pct, problems, ratio, spread, thousands, us, Table};
use crate::matrix::{Action, HOT_ACCOUNTS, LEDGER_LOCKINGS, LEDGER_SEED, MANY_ACCOUNTS};
use crate::results::CellResult;

/// (model, `--locking`, accounts) of a ledger cell.
pub(crate) fn key(c: &CellResult) -> Option<(&str, &str, usize)> {
    let locking = c.cell.subject.flag("--locking")?;
    Some((c.cell.subject.name(), locking, c.cell.x? as usize))
}

/// The ledger cell of `model` with `locking` on `accounts`, if it ran.
pub(crate) fn find<'a>(cells: &[&'a CellResult], model: &str, locking: &str, accounts: usize) -> Option<&'a CellResult> {
    cells.iter().copied().find(|c| c.ran() && key(c) == Some((model, locking, accounts)))
}

/// How many accounts, for a person: `2 hot accounts`, `64 accounts`.
pub(crate) fn contention(accounts: usize) -> String {
    if accounts <= HOT_ACCOUNTS {
        format!("{accounts} hot accounts")
    } else {
        format!("{accounts} accounts")
    }
}

/// What the checker found over a cell's repeats: `caught in 3 of 3` for the race it was
/// started to show, `ok in 3 of 3` for a strategy that kept the money, `VIOLATED in 1 of 3`.
pub(crate) fn checker(c: &CellResult, locking: &str) -> String {
    let found = c.values("violations");
    let caught = found.iter().filter(|v| **v > 0.0).count();
    let n = found.len();
    match (locking, caught) {
        (_, _) if n == 0 => "–".into(),
        ("none", 0) => format!("not caught (0 of {n})"),
        ("none", k) => format!("caught in {k} of {n}"),
        (_, 0) => format!("ok in {n} of {n}"),
        (_, k) => format!("**VIOLATED** in {k} of {n}"),
    }
}

/// The ledger section's text: what a cell does, with the sizes its cells ran at.
pub(super) fn about(cells: &[&CellResult]) -> String {
    let (connections, ops) = cells
        .iter()
        .find_map(|c| match c.cell.action {
            Action::Ledger { connections, ops, .. } => Some((connections, ops)),
            _ => None,
        })
        .unwrap_or((0, 0));
    format!(
        "The bank of the talk's canonical race, one fresh server per model and `--locking` strategy, each with the \
         flags that put it on one core (server on CPU 0, client on CPU 1). Each repeat is one `c10k ledger-check`: \
         {connections} connections withdraw John's whole $25 at once (the canonical race: exactly one may win), then \
         send {ops} random operations each (70% transfers, 20% small withdrawals, 10% audits) over {HOT_ACCOUNTS} \
         accounts (John and Jane: every operation contends) or {MANY_ACCOUNTS} (two operations rarely meet), and the \
         whole history is checked. Operations per second count every answered operation over the concurrent phases; \
         the latency is each operation's, sent to answered. Every in-memory strategy holds its lock across the read, \
         a store round trip and `--ledger-think-us 200` (the yield that lets `none` race), on the offload pool's 4 \
         threads; `db` is one SQLite transaction, with no think time inside. Every cell runs the same operations in \
         the same order (seed {LEDGER_SEED} for the first repeat, one more for each next). The checker column says \
         whether money was created or lost: `none` is there to be caught; any other strategy caught is a bug, and its \
         violations are listed under problems. The first tables are the medians at a glance; `× giant` is against \
         the giant lock on the same model and accounts."
    )
}

/// The ledger section's tables, after its text.
pub(super) fn tables(out: &mut String, cells: &[&CellResult]) {
    let mut models: Vec<&str> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    for (model, _, accounts) in cells.iter().filter_map(|c| key(c)) {
        if !models.contains(&model) {
            models.push(model);
        }
        if !sizes.contains(&accounts) {
            sizes.push(accounts);
        }
    }
    sizes.sort_unstable();
    for &accounts in &sizes {
        let _ = writeln!(out, "**{}**: operations per second (p99):\n", contention(accounts));
        let mut head = vec!["model"];
        head.extend(LEDGER_LOCKINGS);
        head.extend(["fine × giant", "atomic × fine", "db × fine"]);
        let mut t = Table::new(&head);
        for &model in &models {
            let rps = |locking: &str| find(cells, model, locking, accounts).and_then(|c| c.median("ops_per_s"));
            let mut row = vec![model.to_string()];
            for locking in LEDGER_LOCKINGS {
                row.push(match find(cells, model, locking, accounts) {
                    Some(c) => format!("{} ({})", med(c, "ops_per_s", thousands), med(c, "p99_us", us)),
                    None => "–".into(),
                });
            }
            row.push(fx(ratio(rps("fine"), rps("giant"))));
            row.push(fx(ratio(rps("atomic"), rps("fine"))));
            row.push(fx(ratio(rps("db"), rps("fine"))));
            t.row(row);
        }
        t.render(out);
    }
    let _ = writeln!(out, "Every cell:\n");
    let mut t = Table::new(&[
        "model",
        "accounts",
        "--locking",
        "ops/s",
        "spread",
        "p50",
        "p99",
        "× giant",
        "checker",
        "race won (of the connections)",
        "server CPU",
        "client CPU",
        "problems",
    ]);
    for c in cells {
        let Some((model, locking, accounts)) = key(c) else { continue };
        let giant = find(cells, model, "giant", accounts).and_then(|g| g.median("ops_per_s"));
        let connections = match c.cell.action {
            Action::Ledger { connections, .. } => connections.to_string(),
            _ => "?".into(),
        };
        t.row(vec![
            model.to_string(),
            thousands(accounts as f64),
            format!("`{locking}`"),
            med(c, "ops_per_s", thousands),
            spread(c, "ops_per_s"),
            med(c, "p50_us", us),
            med(c, "p99_us", us),
            fx(ratio(c.median("ops_per_s"), giant)),
            checker(c, locking),
            format!("{} of {connections}", med(c, "race_won", thousands)),
            med(c, "server_cpu_pct", pct),
            med(c, "client_cpu_pct", pct),
            problems(c),
        ]);
    }
    t.render(out);
}
