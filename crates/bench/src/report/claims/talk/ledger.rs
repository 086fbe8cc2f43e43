//! "Fine grained has some real benefits, but can be hard and expensive", judged per model
//! on the ledger suite: the benefit is fine-grained locking's throughput over the giant
//! lock's where operations spread over many accounts; the expense is what is left of it
//! where they all want the same two. "Hard" is not a number: the shuttle model checks
//! show it (a transfer that locks `from` before `to` deadlocks), and the claim says where.

use crate::matrix::{HOT_ACCOUNTS, MANY_ACCOUNTS};
use crate::report::claims::{Claim, Outcome, Verdict};
use crate::report::ledger::{find, key};
use crate::report::thousands;
use crate::results::{CellResult, Results};

/// Fine-grained locking has a real benefit on a model when it does at least this many
/// times the giant lock's operations per second there; below it, the locks cost as much
/// as the one they replace. One line for both sides of the claim: the benefit must reach
/// it on many accounts, and the expense is that it falls short of it on two hot ones.
pub(super) const FINE_BENEFIT: f64 = 1.5;

/// Where the "hard" part is shown, for the claim's remark.
const HARD_SHOWN_IN: &str = "crates/core/src/ledger/model_check.rs";

/// Fine's operations per second over giant's on one model: on many accounts, on two hot ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Gains {
    /// On [`MANY_ACCOUNTS`].
    pub many: f64,
    /// On [`HOT_ACCOUNTS`].
    pub hot: f64,
}

/// What one model's gains say about the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FineFared {
    /// A real benefit on many accounts, gone on the hot ones: the claim, both halves.
    BenefitThatContentionTakes,
    /// A real benefit even on the hot ones: the expense did not show.
    BenefitEverywhere,
    /// No real benefit even on many accounts.
    NoBenefit,
}

/// The verdict on one model, from its [`Gains`] and [`FINE_BENEFIT`].
pub(super) fn fared(g: Gains) -> FineFared {
    match (g.many >= FINE_BENEFIT, g.hot >= FINE_BENEFIT) {
        (true, false) => FineFared::BenefitThatContentionTakes,
        (true, true) => FineFared::BenefitEverywhere,
        (false, _) => FineFared::NoBenefit,
    }
}

/// `2.31×` for one, `2.31–2.52×` for several.
fn span(values: &[f64]) -> String {
    let lo = values.iter().copied().fold(f64::MAX, f64::min);
    let hi = values.iter().copied().fold(f64::MIN, f64::max);
    if format!("{lo:.2}") == format!("{hi:.2}") {
        format!("{lo:.2}×")
    } else {
        format!("{lo:.2}–{hi:.2}×")
    }
}

pub(super) fn fine_grained(r: &Results) -> Claim {
    let claim = "\"Fine grained has some real benefits, but can be hard and expensive\" (fine-grained against coarse \
                 locking)"
        .to_string();
    let reproduce = "`c10k bench --only ledger`".to_string();
    let cells = r.cells("ledger");
    if cells.is_empty() {
        return Claim::not_measured(claim, "the ledger suite", reproduce);
    }
    let mut models: Vec<&str> = Vec::new();
    for (model, _, _) in cells.iter().filter_map(|c| key(c)) {
        if !models.contains(&model) {
            models.push(model);
        }
    }
    let rps = |model: &str, locking: &str, accounts: usize| {
        find(&cells, model, locking, accounts).and_then(|c| c.median("ops_per_s")).filter(|v| *v > 0.0)
    };
    let mut measured = Vec::new();
    let mut judged: Vec<(&str, Gains, FineFared)> = Vec::new();
    let mut missing = Vec::new();
    for &model in &models {
        let four = (
            rps(model, "fine", MANY_ACCOUNTS),
            rps(model, "giant", MANY_ACCOUNTS),
            rps(model, "fine", HOT_ACCOUNTS),
            rps(model, "giant", HOT_ACCOUNTS),
        );
        let (Some(fm), Some(gm), Some(fh), Some(gh)) = four else {
            missing.push(model);
            continue;
        };
        let gains = Gains { many: fm / gm, hot: fh / gh };
        measured.push(format!(
            "{model}: {MANY_ACCOUNTS} accounts {} / {} ({:.2}×), {HOT_ACCOUNTS} hot {} / {} ({:.2}×)",
            thousands(fm),
            thousands(gm),
            gains.many,
            thousands(fh),
            thousands(gh),
            gains.hot
        ));
        judged.push((model, gains, fared(gains)));
    }
    if judged.is_empty() {
        return Claim {
            claim,
            measured: format!("not measured: the ledger suite has no fine and giant cells on both {HOT_ACCOUNTS} and {MANY_ACCOUNTS} accounts for any model"),
            verdicts: vec![Verdict::new(Outcome::Incomplete)],
            remarks: Vec::new(),
            reproduce,
        };
    }
    let of = |f: FineFared| -> (Vec<&str>, Vec<Gains>) {
        judged.iter().filter(|j| j.2 == f).map(|j| (j.0, j.1)).unzip()
    };
    let mut verdicts = Vec::new();
    let (names, gains) = of(FineFared::BenefitThatContentionTakes);
    if !names.is_empty() {
        verdicts.push(Verdict::scoped(Outcome::Confirmed, format!("for {}", names.join(", "))).and_because(format!(
            "on {MANY_ACCOUNTS} accounts fine does {} giant's operations per second (a real benefit: {FINE_BENEFIT}× or \
             more); on {HOT_ACCOUNTS} hot accounts {}, below {FINE_BENEFIT}×: every transfer still takes two locks and \
             waits behind the same two accounts, so the locks cost what the one giant lock did",
            span(&gains.iter().map(|g| g.many).collect::<Vec<_>>()),
            span(&gains.iter().map(|g| g.hot).collect::<Vec<_>>())
        )));
    }
    let (names, gains) = of(FineFared::BenefitEverywhere);
    if !names.is_empty() {
        verdicts.push(Verdict::scoped(Outcome::NotSeen, format!("for the expense on {}", names.join(", "))).and_because(
            format!(
                "fine kept {} giant's throughput even on {HOT_ACCOUNTS} hot accounts ({FINE_BENEFIT}× or more)",
                span(&gains.iter().map(|g| g.hot).collect::<Vec<_>>())
            ),
        ));
    }
    let (names, gains) = of(FineFared::NoBenefit);
    if !names.is_empty() {
        verdicts.push(Verdict::scoped(Outcome::NotSeen, format!("for the benefit on {}", names.join(", "))).and_because(
            format!(
                "fine did {} giant's throughput on {MANY_ACCOUNTS} accounts, below {FINE_BENEFIT}×",
                span(&gains.iter().map(|g| g.many).collect::<Vec<_>>())
            ),
        ));
    }
    if !missing.is_empty() {
        verdicts.push(Verdict::scoped(Outcome::Incomplete, format!("for {}", missing.join(", "))));
    }
    let mut remarks = vec![format!(
        "hard: not a number here; the shuttle model checks ({HARD_SHOWN_IN}) find the deadlock of two opposite \
         transfers when each takes its `from` lock first"
    )];
    let lockless: Vec<f64> = models
        .iter()
        .flat_map(|m| [MANY_ACCOUNTS, HOT_ACCOUNTS].map(|a| Some(rps(m, "atomic", a)? / rps(m, "fine", a)?)))
        .flatten()
        .collect();
    if !lockless.is_empty() {
        remarks.push(format!("the lockless `atomic` did {} fine's throughput", span(&lockless)));
    }
    remarks.push(checked(&cells));
    Claim { claim, measured: format!("fine / giant operations per second: {}", measured.join("; ")), verdicts, remarks, reproduce }
}

/// What the checker found across the suite: the race caught, and every other strategy clean
/// (or the cells where it was not).
fn checked(cells: &[&CellResult]) -> String {
    let found = |c: &CellResult| c.values("violations").iter().any(|v| *v > 0.0);
    let racy: Vec<&&CellResult> = cells.iter().filter(|c| key(c).is_some_and(|k| k.1 == "none")).collect();
    let caught = racy.iter().filter(|c| found(c)).count();
    let broken: Vec<&str> =
        cells.iter().filter(|c| key(c).is_some_and(|k| k.1 != "none") && found(c)).map(|c| c.cell.id.as_str()).collect();
    let others = cells.len() - racy.len();
    if broken.is_empty() {
        format!(
            "ledger-check caught `none` losing or creating money in {caught} of {} cells and no other strategy in any of {others}",
            racy.len()
        )
    } else {
        format!(
            "ledger-check caught `none` in {caught} of {} cells, and **found money lost or created** in {} (see the ledger table)",
            racy.len(),
            broken.join(", ")
        )
    }
}
