//! The memory goal: 100,000 concurrent subscribers, each costing little user-space memory,
//! and how far toward 1,000,000 the models went.

use super::{Goal, Outcome, Verdict};
use crate::report::{bytes, thousands};
use crate::results::{CellResult, Results};

/// Subscribers one server must hold...
const SUBSCRIBERS: f64 = 100_000.0;
/// ...at most this much PSS each (KiB).
const PSS_KIB: f64 = 2.0;
/// How far the c1m suite's ladder tries to go.
const TOWARD: f64 = 1_000_000.0;

/// 100,000 subscribers at ≤ 2 KiB each, judged on the c100k cell that held the most (the
/// least memory among equals); the c1m ladder says how far beyond it went.
pub(super) fn c100k_goal(r: &Results) -> Goal {
    let goal = format!(
        "{} concurrent subscribers at ≤ {PSS_KIB} KiB of user-space memory each; how far toward {}",
        thousands(SUBSCRIBERS),
        thousands(TOWARD)
    );
    let c100 = r.cells("c100k");
    let pss = |c: &CellResult| c.median("pss_per_conn_bytes").unwrap_or(f64::INFINITY);
    let best = c100
        .iter()
        .filter_map(|c| Some((*c, c.median("held")?)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(pss(b.0).total_cmp(&pss(a.0))));
    let Some((c, held)) = best else {
        return Goal::not_measured(goal, "the c100k suite");
    };
    let furthest = r
        .cells("c1m")
        .into_iter()
        .chain(c100.iter().copied())
        .filter_map(|c| Some((c, c.median("held")?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let small = |per: f64| per <= PSS_KIB * 1024.0;
    let met = held >= SUBSCRIBERS && small(pss(c));
    let each: Vec<String> = c100
        .iter()
        .map(|x| {
            format!(
                "{} {} at {}",
                x.cell.series,
                x.median("held").map_or("?".into(), thousands),
                x.median("pss_per_conn_bytes").map_or("?".into(), bytes)
            )
        })
        .collect();
    // Per model: short of the count (and why), or over the memory.
    let mut limits = Vec::new();
    for x in &c100 {
        let (Some(h), Some(p)) = (x.median("held"), x.median("pss_per_conn_bytes")) else { continue };
        if h < SUBSCRIBERS {
            let why: Vec<String> = x
                .samples
                .iter()
                .flat_map(|s| s.errors.iter().map(|(k, v)| format!("{} {k}", thousands(*v as f64))))
                .collect();
            limits.push(format!(
                "{} held {} ({}): refused or failed connections, see the c100k table",
                x.cell.series,
                thousands(h),
                why.join(", ")
            ));
        }
        if !small(p) {
            limits.push(format!("{} keeps {} per idle connection (see the analysis for where)", x.cell.series, bytes(p)));
        }
    }
    // Where each model's c1m ladder stopped short (a skipped step names why).
    let stops: Vec<String> = r
        .suites
        .get("c1m")
        .map(|s| {
            s.cells
                .iter()
                .filter_map(|x| Some(format!("{} stopped before {}: {}", x.cell.series, x.cell.id, x.skipped.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    if !stops.is_empty() {
        limits.push(format!("toward 1M: {}", stops.join("; ")));
    }
    Goal {
        goal,
        measured: format!(
            "{}; furthest: {}",
            each.join(", "),
            furthest.map_or("?".into(), |(f, h)| format!(
                "{} held {} ({} PSS, {} whole machine each)",
                f.cell.series,
                thousands(h),
                f.median("pss_per_conn_bytes").map_or("?".into(), bytes),
                f.median("total_per_conn_bytes").map_or("?".into(), bytes)
            ))
        ),
        verdict: if met {
            Verdict::scoped(Outcome::Met, format!("({})", c.cell.series))
        } else {
            Verdict::new(Outcome::Missed)
        },
        limits: limits.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{add, results, run};
    use super::*;

    const KIB: f64 = 1024.0;

    /// The c100k suite: (model, held, PSS per connection in bytes).
    fn c100k(ran: &[(&str, f64, f64)]) -> Results {
        let cells = ran
            .iter()
            .map(|&(model, held, pss)| run(&format!("{model}@100000"), &[("held", held), ("pss_per_conn_bytes", pss)]))
            .collect();
        results("c100k", cells)
    }

    #[test]
    fn every_subscriber_held_at_the_memory_bound_is_met_by_the_model_that_did_it() {
        let g = c100k_goal(&c100k(&[("async", SUBSCRIBERS, 4.3 * KIB), ("reactor", SUBSCRIBERS, PSS_KIB * KIB)]));
        assert_eq!(
            g.goal,
            "100,000 concurrent subscribers at ≤ 2 KiB of user-space memory each; how far toward 1,000,000"
        );
        assert_eq!(g.verdict.markdown(), "**met** (reactor)");
        assert_eq!(
            g.measured,
            "async 100,000 at 4.3 KiB, reactor 100,000 at 2.0 KiB; furthest: reactor held 100,000 (2.0 KiB PSS, ? whole \
             machine each)"
        );
        assert_eq!(g.limits, "async keeps 4.3 KiB per idle connection (see the analysis for where)");
    }

    #[test]
    fn a_byte_over_the_memory_bound_misses() {
        let g = c100k_goal(&c100k(&[("reactor", SUBSCRIBERS, PSS_KIB * KIB + 1.0)]));
        assert_eq!(g.verdict, Verdict::new(Outcome::Missed));
        assert_eq!(g.limits, "reactor keeps 2.0 KiB per idle connection (see the analysis for where)");
    }

    #[test]
    fn a_connection_short_of_the_count_misses_and_names_the_errors() {
        let r = results(
            "c100k",
            vec![run("reactor@100000", &[("held", SUBSCRIBERS - 1.0), ("pss_per_conn_bytes", 1_000.0)]).errors("refused", 1)],
        );
        let g = c100k_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::Missed);
        assert_eq!(g.limits, "reactor held 99,999 (1 refused): refused or failed connections, see the c100k table");
    }

    #[test]
    fn the_furthest_comes_from_the_c1m_ladder_and_its_stops_are_named() {
        let mut r = c100k(&[("reactor", SUBSCRIBERS, 1_600.0)]);
        add(
            &mut r,
            "c1m",
            vec![
                run("reactor@1000000", &[("held", TOWARD), ("pss_per_conn_bytes", 1_843.0), ("total_per_conn_bytes", 16_077.0)]),
                run("async@1000000", &[]).skipped("would need 17.0 GiB"),
            ],
        );
        let g = c100k_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::Met);
        assert!(g.measured.ends_with("furthest: reactor held 1,000,000 (1.8 KiB PSS, 15.7 KiB whole machine each)"), "{}", g.measured);
        assert_eq!(g.limits, "toward 1M: async stopped before async@1000000: would need 17.0 GiB");
    }

    #[test]
    fn without_the_c100k_suite_the_memory_goal_is_not_measured() {
        let g = c100k_goal(&Results::default());
        assert_eq!(g.verdict.outcome, Outcome::NotMeasured);
        assert_eq!(g.measured, "not measured: run the c100k suite");
        assert!(g.goal.starts_with("100,000 concurrent subscribers at ≤ 2 KiB"), "the same goal as when it ran: {}", g.goal);
        // The c1m ladder alone does not make up for it.
        let r = results("c1m", vec![run("reactor@1000000", &[("held", TOWARD), ("pss_per_conn_bytes", 1_000.0)])]);
        assert_eq!(c100k_goal(&r).verdict.outcome, Outcome::NotMeasured);
    }
}
