//! The goals of the plaintext suite: our best model against the baseline and the raw
//! floor, and c10k load's req/s against wrk's on the same servers.

use super::limits::{cores, limit_text, machine_cpus, plural_core, saturates};
use super::{Goal, Outcome, Verdict};
use crate::report::thousands;
use crate::results::{CellResult, Results};

/// The best model's plaintext req/s must be at least this many times the baseline's...
const OVER_BASELINE: f64 = 1.2;
/// ...and at least this share of the raw epoll floor's (the same server with no HTTP
/// parsing or chat logic: what the machine allows).
const OF_RAW: f64 = 0.85;

/// One run's figures: the best model (its cell and req/s), the baseline's req/s and the
/// raw floor's.
type Figures<'a> = ((&'a CellResult, f64), f64, f64);

/// The plaintext goal, from two runs of the plaintext suite: one request in flight per
/// connection and pipelined batches. Judged on the pipelined run when there is one: with
/// one request in flight, the client's write and read per request saturate its core
/// before the server's (the raw floor then comes out below nginx), so that run measures
/// the generator; pipelined, the server's own cost per request sets the rate.
pub(super) fn plaintext_goal(r: &Results, baseline: &str) -> Goal {
    let goal = format!("plaintext ≥ {OVER_BASELINE}× {baseline} and ≥ {OF_RAW}× the raw floor");
    let cells = r.cells("plaintext");
    let figures = |pipelined: bool| -> Option<Figures> {
        let run: Vec<&CellResult> = cells.iter().copied().filter(|c| (c.cell.pipeline() > 1) == pipelined).collect();
        // The baseline is a peer (nginx by default), but --baseline may name a model.
        let server = |name: &str| run.iter().find(|c| c.cell.subject.name() == name).and_then(|c| c.median("rps"));
        let best = run
            .iter()
            .copied()
            .filter(|c| !c.cell.subject.is_peer())
            .filter_map(|c| Some((c, c.median("rps")?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Some((best?, server(baseline)?, server("raw")?))
    };
    let line = |((c, v), b, w): Figures| {
        format!(
            "best model {}: {} req/s = {:.2}× {baseline} ({}), {:.2}× raw ({})",
            c.cell.subject.name(),
            thousands(v),
            v / b,
            thousands(b),
            v / w,
            thousands(w)
        )
    };
    let meets = |((_, v), b, w): Figures| v >= OVER_BASELINE * b && v >= OF_RAW * w;
    match (figures(true), figures(false)) {
        (Some(p), one) => {
            let ((best, v), _, w) = p;
            let depth = best.cell.pipeline();
            let met = meets(p);
            let floor = floor_bound(&cells, machine_cpus(r, "plaintext"));
            let judged = format!(
                "judged on the pipelined run, where the server's cost, not the client's syscalls, sets the rate{}",
                match one {
                    Some(o) if meets(o) != met => {
                        format!(" (one in flight it would be {})", if meets(o) { "met" } else { "missed" })
                    }
                    _ => String::new(),
                }
            );
            // A raw figure below the floor's capacity cannot confirm the OF_RAW part.
            let verdict = match (met, floor.is_empty()) {
                (true, false) => Verdict::because(
                    Outcome::NotEstablished,
                    format!(
                        "{:.2}× raw, but the raw figure is below what the floor can serve (see what limits it); {judged}",
                        v / w
                    ),
                ),
                (true, true) => Verdict::because(Outcome::Met, judged),
                (false, _) => Verdict::because(Outcome::Missed, judged),
            };
            let one_text = one.map_or("not measured".to_string(), line);
            let one_limit = one.map_or(String::new(), |((c, _), _, _)| {
                format!("; one in flight ({}): {}", c.cell.id, limit_text(r, "plaintext", &c.cell.id))
            });
            Goal {
                goal,
                measured: format!(
                    "pipelined {depth} ({depth} requests in flight on each connection): {}; one in flight: {one_text}",
                    line(p)
                ),
                verdict,
                limits: format!(
                    "pipelined ({}): {}{floor}{one_limit}",
                    best.cell.id,
                    limit_text(r, "plaintext", &best.cell.id)
                ),
            }
        }
        (None, Some(o)) => {
            let ((best, _), _, _) = o;
            let met = meets(o);
            Goal {
                goal,
                measured: format!("one in flight: {} (no pipelined run: the client may be the limit)", line(o)),
                verdict: Verdict::met_if(met),
                limits: if met { String::new() } else { limit_text(r, "plaintext", &best.cell.id) },
            }
        }
        (None, None) => Goal::not_measured(goal, "the plaintext suite (with nginx and raw)"),
    }
}

/// When the pipelined raw floor did not saturate its server core, its figure is not what
/// the floor can serve (its client ran out of CPU, or other work had the machine), so the
/// ratio to it is an upper bound; said with the CPU figures that show it.
fn floor_bound(cells: &[&CellResult], cpus: usize) -> String {
    let Some(raw) = cells.iter().find(|c| c.cell.pipeline() > 1 && c.cell.subject.name() == "raw") else {
        return String::new();
    };
    let (Some(sv), Some(cl)) = (raw.median("server_cpu_pct"), raw.median("client_cpu_pct")) else {
        return String::new();
    };
    let (sc, cc) = (cores(&raw.server_cpus, cpus), cores(&raw.client_cpus, cpus));
    if raw.server_cpus.is_none() || saturates(sv, sc) {
        return String::new();
    }
    let why = if saturates(cl, cc) {
        "its client ran out of CPU first"
    } else {
        "neither side saturated its core: other work on the machine had it"
    };
    format!(
        "; the pipelined raw floor used only {sv:.0}% of its server core (client {cl:.0}% of {cc:.0}): {why}, so it \
         can serve more than measured and the ratio to raw is an upper bound"
    )
}

/// How far c10k load's plaintext req/s may be from wrk's and still count as agreeing: about
/// what the repeats of one generator move by on a shared machine.
const AGREE: f64 = 0.10;

/// Whether c10k load and wrk, run against the same plaintext servers with the same
/// pinning and connections, report the same req/s; where they do not, which one ran out
/// of client CPU, so that a disagreement names the generator that is the limit.
pub(super) fn generators_agree(r: &Results) -> Goal {
    let goal = format!(
        "c10k load's plaintext req/s within {:.0}% of wrk's on every server (the generator is not the limit)",
        AGREE * 100.0
    );
    let cells: Vec<&CellResult> = r.cells("plaintext").into_iter().filter(|c| c.wrk.is_some()).collect();
    let cpus = machine_cpus(r, "plaintext");
    if cells.is_empty() {
        return Goal::not_measured(goal, "the plaintext suite, which runs wrk against every server");
    }
    let mut pairs = Vec::new();
    let mut missing = Vec::new();
    for c in cells {
        let w = c.wrk.as_ref().expect("filtered on wrk");
        match (c.median("rps"), w.metric("rps")) {
            (Some(ours), Some(theirs)) if theirs > 0.0 => pairs.push((c, ours, theirs, ours / theirs)),
            _ => missing.push(format!(
                "{} ({})",
                c.cell.series,
                w.problems.first().map_or("no req/s from either generator", String::as_str)
            )),
        }
    }
    let missing_text = if missing.is_empty() {
        String::new()
    } else {
        format!("; no wrk figure for {}: {}", missing.len(), missing.join(", "))
    };
    let (Some(lo), Some(hi)) = (
        pairs.iter().min_by(|a, b| a.3.total_cmp(&b.3)),
        pairs.iter().max_by(|a, b| a.3.total_cmp(&b.3)),
    ) else {
        return Goal {
            goal,
            measured: format!("no server has both figures{missing_text}"),
            verdict: Verdict::new(Outcome::NotMeasured),
            limits: String::new(),
        };
    };
    let worst = pairs.iter().map(|p| (p.3 - 1.0).abs()).fold(0.0, f64::max);
    let apart: Vec<_> = pairs.iter().filter(|p| (p.3 - 1.0).abs() > AGREE).collect();
    let measured = format!(
        "c10k load within {:.0}% of wrk on every server{} ({}); c10k load / wrk from {:.2}× ({}: {} vs {} req/s) to {:.2}× ({}: {} vs {}){missing_text}",
        (worst * 100.0).ceil(),
        if missing.is_empty() { "" } else { " with both figures" },
        pairs.len(),
        lo.3,
        lo.0.cell.series,
        thousands(lo.1),
        thousands(lo.2),
        hi.3,
        hi.0.cell.series,
        thousands(hi.1),
        thousands(hi.2),
    );
    let verdict = match (apart.is_empty(), missing.is_empty()) {
        (true, true) => Verdict::new(Outcome::Met),
        (true, false) => Verdict::scoped(Outcome::Met, format!("on the {} servers with both figures", pairs.len())),
        (false, _) => Verdict::scoped(Outcome::Missed, format!("on {} of {}", apart.len(), pairs.len())),
    };
    let limits: Vec<String> = apart
        .iter()
        .map(|(c, ours, theirs, x)| {
            let w = c.wrk.as_ref().expect("filtered on wrk");
            let cc = cores(&c.client_cpus, cpus);
            let ours_cpu = c.median("client_cpu_pct");
            let wrk_cpu = w.metric("client_cpu_pct");
            let bound = |name: &str, v: Option<f64>| {
                v.filter(|v| saturates(*v, cc))
                    .map(|v| format!("; {name} was client-bound ({v:.0}% of {cc:.0} core{})", plural_core(cc)))
            };
            let which = if *x < 1.0 { bound("c10k load", ours_cpu) } else { bound("wrk", wrk_cpu) };
            // Neither ran out of its core: the difference is the machine's, not a generator's.
            let which = which.or_else(|| {
                c.loadavg.map(|l| format!("; neither generator was client-bound (load average {l:.2} when the cell started)"))
            });
            let pct_or = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0}%"));
            format!(
                "{}: c10k load {} vs wrk {} req/s ({x:.2}×); server CPU {} under c10k load, {} under wrk; client CPU {} vs {}{}",
                c.cell.series,
                thousands(*ours),
                thousands(*theirs),
                pct_or(c.median("server_cpu_pct")),
                pct_or(w.metric("server_cpu_pct")),
                pct_or(ours_cpu),
                pct_or(wrk_cpu),
                which.unwrap_or_default()
            )
        })
        .collect();
    Goal { goal, measured, verdict, limits: limits.join("; ") }
}


#[cfg(test)]
mod tests {
    use super::super::fixture::{results, run, Run};
    use super::*;

    /// Plaintext cells: (id, req/s, server CPU %, client CPU %).
    fn plaintext(ran: &[(&str, f64, f64, f64)]) -> Results {
        results("plaintext", ran.iter().map(|&(id, rps, s, c)| cpu_run(id, rps, s, c)).collect())
    }

    fn cpu_run(id: &str, rps: f64, server: f64, client: f64) -> Run {
        run(id, &[("rps", rps), ("server_cpu_pct", server), ("client_cpu_pct", client)])
    }

    /// The numbers of issue 5: one in flight, the client's core runs out first.
    const ONE_IN_FLIGHT: [(&str, f64, f64, f64); 4] = [
        ("reactor", 146_907.0, 80.0, 99.0),
        ("async", 140_000.0, 85.0, 99.0),
        ("nginx", 148_617.0, 75.0, 99.0),
        ("raw", 125_296.0, 40.0, 99.0),
    ];

    /// The goal against nginx from ONE_IN_FLIGHT and these pipelined cells.
    fn with_pipelined(cells: &[(&str, f64, f64, f64)]) -> Goal {
        let ran = [&ONE_IN_FLIGHT[..], cells].concat();
        plaintext_goal(&plaintext(&ran), "nginx")
    }

    /// A pipelined run with the best model at `model` req/s against nginx and raw, both
    /// servers saturated.
    fn pipelined(model: f64, nginx: f64, raw: f64) -> Goal {
        with_pipelined(&[
            ("reactor/pipelined16", model, 99.0, 60.0),
            ("nginx/pipelined16", nginx, 99.0, 30.0),
            ("raw/pipelined16", raw, 99.0, 70.0),
        ])
    }

    #[test]
    fn the_plaintext_goal_is_judged_on_the_pipelined_run_and_reports_both() {
        let g = with_pipelined(&[
            ("reactor/pipelined16", 600_000.0, 99.0, 60.0),
            ("async/pipelined16", 640_000.0, 99.0, 62.0),
            ("nginx/pipelined16", 250_000.0, 99.0, 30.0),
            ("raw/pipelined16", 700_000.0, 99.0, 70.0),
        ]);
        assert_eq!(g.goal, "plaintext ≥ 1.2× nginx and ≥ 0.85× the raw floor");
        assert!(
            g.measured.starts_with(
                "pipelined 16 (16 requests in flight on each connection): best model async: 640,000 req/s = \
                 2.56× nginx (250,000), 0.91× raw (700,000); one in flight: best model reactor: 146,907 req/s = \
                 0.99× nginx (148,617), 1.17× raw (125,296)"
            ),
            "{}",
            g.measured
        );
        assert_eq!(g.verdict.outcome, Outcome::Met);
        assert_eq!(
            g.verdict.markdown(),
            "**met**: judged on the pipelined run, where the server's cost, not the client's syscalls, sets the \
             rate (one in flight it would be missed)"
        );
        assert!(
            g.limits.starts_with("pipelined (async/pipelined16): server used 99% of 1 core, client 62% of 1: server-bound"),
            "{}",
            g.limits
        );
        assert!(
            g.limits.contains("one in flight (reactor): server used 80% of 1 core, client 99% of 1: client-bound"),
            "{}",
            g.limits
        );
        assert!(!g.limits.contains("raw floor used only"), "raw's server core was saturated: {}", g.limits);
    }

    #[test]
    fn the_pipelined_thresholds_are_the_constants() {
        // At both thresholds exactly: met.
        let (nginx, raw) = (500_000.0, 1_000_000.0);
        let at = (OVER_BASELINE * nginx).max(OF_RAW * raw);
        assert_eq!(at, 850_000.0, "the raw floor is the binding threshold here");
        assert_eq!(pipelined(at, nginx, raw).verdict.outcome, Outcome::Met);
        // Just short of the raw floor's share, far over the baseline's: missed.
        assert_eq!(pipelined(at - 1.0, nginx, raw).verdict.outcome, Outcome::Missed);
        // Over the raw floor's share, just short of the baseline's: missed.
        let nginx = 800_000.0;
        assert_eq!(pipelined(OVER_BASELINE * nginx, nginx, raw).verdict.outcome, Outcome::Met);
        assert_eq!(pipelined(OVER_BASELINE * nginx - 1.0, nginx, raw).verdict.outcome, Outcome::Missed);
    }

    #[test]
    fn a_pipelined_model_short_of_the_raw_floor_misses() {
        let g = with_pipelined(&[
            ("reactor/pipelined16", 600_000.0, 99.0, 60.0),
            ("nginx/pipelined16", 250_000.0, 99.0, 30.0),
            ("raw/pipelined16", 1_800_000.0, 70.0, 99.0),
        ]);
        assert!(
            g.measured.contains("best model reactor: 600,000 req/s = 2.40× nginx (250,000), 0.33× raw (1,800,000)"),
            "{}",
            g.measured
        );
        assert_eq!(g.verdict.outcome, Outcome::Missed);
        assert!(g.verdict.markdown().starts_with("**missed**: judged on the pipelined run"), "{}", g.verdict.markdown());
        assert!(
            g.limits.contains(
                "the pipelined raw floor used only 70% of its server core (client 99% of 1): its client ran out of \
                 CPU first, so it can serve more than measured and the ratio to raw is an upper bound"
            ),
            "{}",
            g.limits
        );
    }

    #[test]
    fn a_raw_floor_that_did_not_saturate_its_core_cannot_confirm_the_goal() {
        let g = with_pipelined(&[
            ("green/pipelined16", 1_026_023.0, 99.0, 66.0),
            ("nginx/pipelined16", 280_911.0, 99.0, 86.0),
            ("raw/pipelined16", 996_437.0, 45.0, 57.0),
        ]);
        assert_eq!(g.verdict.outcome, Outcome::NotEstablished);
        assert!(
            g.verdict.markdown().starts_with("**not established**: 1.03× raw, but the raw figure is below"),
            "{}",
            g.verdict.markdown()
        );
        assert!(g.limits.contains("other work on the machine had it"), "{}", g.limits);
    }

    #[test]
    fn without_a_pipelined_run_the_goal_falls_back_to_one_in_flight_and_says_so() {
        let g = plaintext_goal(&plaintext(&ONE_IN_FLIGHT), "nginx");
        assert!(g.measured.starts_with("one in flight: best model reactor: 146,907 req/s"), "{}", g.measured);
        assert!(g.measured.contains("no pipelined run"), "{}", g.measured);
        assert_eq!(g.verdict, Verdict::new(Outcome::Missed));
        assert!(g.limits.contains("client-bound"), "{}", g.limits);
        // Over both thresholds, one in flight: met, and nothing said to limit it.
        let g = plaintext_goal(&plaintext(&[("reactor", 200_000.0, 99.0, 90.0), ("nginx", 100_000.0, 99.0, 90.0), ("raw", 200_000.0, 99.0, 90.0)]), "nginx");
        assert_eq!((g.verdict.outcome, g.limits.as_str()), (Outcome::Met, ""));
    }

    #[test]
    fn without_the_baseline_or_the_raw_floor_the_plaintext_goal_is_not_measured() {
        assert_eq!(plaintext_goal(&Results::default(), "nginx").verdict.outcome, Outcome::NotMeasured);
        let no_raw = plaintext(&ONE_IN_FLIGHT[..3]);
        let g = plaintext_goal(&no_raw, "nginx");
        assert_eq!(g.verdict.outcome, Outcome::NotMeasured);
        assert_eq!(g.measured, "not measured: run the plaintext suite (with nginx and raw)");
        assert_eq!(plaintext_goal(&plaintext(&ONE_IN_FLIGHT), "hyper").verdict.outcome, Outcome::NotMeasured);
    }

    /// Plaintext cells with c10k load's and wrk's req/s and client CPU: (id, ours, wrk's).
    fn against_wrk(ran: &[(&str, f64, f64)]) -> Results {
        results(
            "plaintext",
            ran.iter()
                .map(|&(id, ours, theirs)| {
                    run(id, &[("rps", ours), ("client_cpu_pct", 99.0), ("server_cpu_pct", 70.0)])
                        .wrk(&[("rps", theirs), ("client_cpu_pct", 99.0), ("server_cpu_pct", 70.0)])
                })
                .collect(),
        )
    }

    #[test]
    fn the_generators_agree_within_the_constant() {
        let within = 1.0 + AGREE - 0.01;
        let g = generators_agree(&against_wrk(&[("reactor", 100_000.0 * within, 100_000.0), ("nginx", 90_000.0, 100_000.0)]));
        assert_eq!(g.goal, "c10k load's plaintext req/s within 10% of wrk's on every server (the generator is not the limit)");
        assert_eq!(g.verdict, Verdict::new(Outcome::Met));
        assert_eq!(
            g.measured,
            "c10k load within 10% of wrk on every server (2); c10k load / wrk from 0.90× (nginx: 90,000 vs 100,000 \
             req/s) to 1.09× (reactor: 109,000 vs 100,000)"
        );
        assert_eq!(g.limits, "");
    }

    #[test]
    fn generators_further_apart_than_the_constant_miss_and_name_the_client_bound_one() {
        let (over, under) = (1.0 + AGREE + 0.01, 1.0 - AGREE - 0.01);
        let g = generators_agree(&against_wrk(&[("reactor", 100_000.0 * over, 100_000.0), ("nginx", 100_000.0 * under, 100_000.0)]));
        assert_eq!(g.verdict.markdown(), "**missed** on 2 of 2");
        // c10k load faster: wrk ran out of its core; wrk faster: c10k load did.
        assert!(g.limits.contains("reactor: c10k load 111,000 vs wrk 100,000 req/s (1.11×)"), "{}", g.limits);
        assert!(g.limits.contains("(1.11×); server CPU 70% under c10k load, 70% under wrk; client CPU 99% vs 99%; wrk was client-bound (99% of 1 core)"), "{}", g.limits);
        assert!(g.limits.contains("nginx: c10k load 89,000 vs wrk 100,000 req/s (0.89×)"), "{}", g.limits);
        assert!(g.limits.ends_with("(0.89×); server CPU 70% under c10k load, 70% under wrk; client CPU 99% vs 99%; c10k load was client-bound (99% of 1 core)"), "{}", g.limits);
    }

    #[test]
    fn a_server_without_a_wrk_figure_is_named_and_the_rest_still_judged() {
        let mut r = against_wrk(&[("reactor", 100_000.0, 100_000.0)]);
        super::super::fixture::add(&mut r, "plaintext", vec![run("nginx", &[("rps", 1.0)]).wrk_failed("wrk not installed: apt-get install wrk")]);
        let g = generators_agree(&r);
        assert_eq!(g.verdict.markdown(), "**met** on the 1 servers with both figures");
        assert!(g.measured.ends_with("; no wrk figure for 1: nginx (wrk not installed: apt-get install wrk)"), "{}", g.measured);
        let r = results("plaintext", vec![run("nginx", &[("rps", 1.0)]).wrk_failed("wrk exited 1")]);
        let g = generators_agree(&r);
        assert_eq!((g.verdict.outcome, g.measured.as_str()), (Outcome::NotMeasured, "no server has both figures; no wrk figure for 1: nginx (wrk exited 1)"));
    }

    #[test]
    fn without_wrk_runs_the_generators_goal_is_not_measured() {
        let g = generators_agree(&plaintext(&ONE_IN_FLIGHT));
        assert_eq!(g.verdict.outcome, Outcome::NotMeasured);
        assert_eq!(g.measured, "not measured: run the plaintext suite, which runs wrk against every server");
    }
}
