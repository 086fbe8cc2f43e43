//! The goals of delivery: long-poll fan-out (every subscriber gets every message, soon,
//! many times faster than Tornado) and WebSocket deliveries per second.

use super::limits::limit_text;
use super::{Goal, Outcome, Verdict};
use crate::report::{thousands, us};
use crate::results::{CellResult, Results};

/// The fan-out goal's size when the suite has not run (its top size otherwise).
const FANOUT_SUBSCRIBERS: f64 = 10_000.0;
/// The paced run's p99 from a post to each subscriber must be at most this.
const FANOUT_P99_MS: f64 = 30.0;
/// The fastest model back to back must deliver at least this many times Tornado's rate.
const OVER_TORNADO: f64 = 50.0;

fn fanout_text(subscribers: f64) -> String {
    format!(
        "long-poll fan-out to {} subscribers fully delivered, p99 ≤ {FANOUT_P99_MS} ms, ≥ {OVER_TORNADO}× Tornado's \
         deliveries/s",
        thousands(subscribers)
    )
}

/// Long-poll fan-out at the top size: judged on the best of our models' paced runs (the
/// lowest p99) for delivery and latency, and on the fastest back to back for the ratio to
/// Tornado.
pub(super) fn fanout_goal(r: &Results) -> Goal {
    let cells = r.cells("fanout");
    let top = cells.iter().filter_map(|c| c.cell.x).reduce(f64::max).unwrap_or(FANOUT_SUBSCRIBERS);
    let at_top = |c: &&CellResult| !c.cell.subject.is_peer() && c.cell.x == Some(top);
    let p99 = |c: &CellResult| c.median("p99_us").unwrap_or(f64::INFINITY);
    let Some(paced) = cells
        .iter()
        .copied()
        .filter(|c| c.cell.series.ends_with(" (paced)") && at_top(c))
        .filter(|c| c.median("p99_us").is_some())
        .min_by(|a, b| p99(a).total_cmp(&p99(b)))
    else {
        return Goal::not_measured(fanout_text(top), "the fanout suite");
    };
    let model = paced.cell.series.trim_end_matches(" (paced)").to_string();
    let rate = |c: &CellResult| c.median("deliveries_per_s").unwrap_or(0.0);
    let fastest = cells
        .iter()
        .copied()
        .filter(|c| !c.cell.series.ends_with(" (paced)") && at_top(c))
        .filter(|c| c.median("deliveries_per_s").is_some())
        .max_by(|a, b| rate(a).total_cmp(&rate(b)));
    let fastest_model = fastest.map_or(model.clone(), |c| c.cell.series.clone());
    let tornado = cells.iter().find(|c| c.cell.series == "tornado" && c.cell.x == Some(top));
    let complete = paced.median("misses") == Some(0.0) && paced.problems().is_empty();
    let p = p99(paced);
    let soon = p <= FANOUT_P99_MS * 1000.0;
    let speed = match (
        fastest.and_then(|c| c.median("deliveries_per_s")),
        tornado.and_then(|c| c.median("deliveries_per_s")),
    ) {
        (Some(a), Some(t)) if t > 0.0 => Some((a, t, a / t)),
        _ => None,
    };
    let mut limits = Vec::new();
    if !complete {
        limits.push(format!("not fully delivered: {}", paced.problems().join("; ")));
    }
    if !soon {
        let limit = limit_text(r, "fanout", &format!("{model}@{}/paced", top as u64));
        limits.push(format!("p99 {} > {FANOUT_P99_MS} ms: {}{limit}", us(p), cpu_floor(r, &model, top)));
    }
    if let Some((_, _, x)) = speed.filter(|s| s.2 < OVER_TORNADO) {
        limits.push(format!(
            "only {x:.1}× Tornado: {}",
            limit_text(r, "fanout", &format!("{fastest_model}@{}", top as u64))
        ));
    }
    let verdict = match speed {
        Some((_, _, x)) => Verdict::met_if(complete && soon && x >= OVER_TORNADO),
        // Short on what was measured: missed whatever Tornado does.
        None if !(complete && soon) => Verdict::new(Outcome::Missed),
        None => Verdict::because(Outcome::Incomplete, format!("no Tornado run at {} to compare with", thousands(top))),
    };
    Goal {
        goal: fanout_text(top),
        measured: format!(
            "best paced: {model}, {} of {} delivered, p99 {}; fastest back to back: {fastest_model}, {}",
            paced.median("delivered").map_or("?".into(), thousands),
            paced.median("expected").map_or("?".into(), thousands),
            us(p),
            speed.map_or("no Tornado figure".into(), |(a, t, x)| format!(
                "{} deliveries/s vs Tornado {} ({x:.0}×)",
                thousands(a),
                thousands(t)
            ))
        ),
        verdict,
        limits: limits.join("; "),
    }
}

/// The floor the server's CPU sets under a paced run's p99: a paced delivery is one HTTP
/// exchange on a kept-alive connection (the response, then the client's next poll), the
/// work of one plaintext request; the 99th percentile subscriber of a post waits behind
/// 99% of the round. The plaintext cell of the same model gives the CPU one exchange costs
/// (one request in flight per connection, server saturated). Empty without that cell.
fn cpu_floor(r: &Results, model: &str, subscribers: f64) -> String {
    let floor = r.cells("plaintext").into_iter().find(|c| c.cell.series == model).and_then(|c| {
        let cpu = c.median("server_cpu_pct")? / 100.0;
        let rate = c.median("rps")?;
        (rate > 0.0).then(|| (cpu / rate * 1e6, cpu / rate * 0.99 * subscribers * 1e6))
    });
    floor.map_or(String::new(), |(each, round)| {
        format!(
            "a paced delivery is one HTTP exchange (a response, then the next poll), and one exchange costs \
             {model} {each:.1} µs of server CPU (its plaintext run), so the 99th percentile subscriber of one post \
             waits behind at least {} of server work{}; ",
            us(round),
            if round > FANOUT_P99_MS * 1000.0 { ", more than the goal by itself" } else { "" }
        )
    })
}

/// WebSocket deliveries per second the best cell must reach.
const WS_DELIVERIES_PER_S: f64 = 1_000_000.0;

/// WebSocket deliveries per second, judged on the best cell of the ws suite.
pub(super) fn ws_goal(r: &Results) -> Goal {
    let goal = format!("≥ {} WebSocket deliveries per second", thousands(WS_DELIVERIES_PER_S));
    let best = r
        .cells("ws")
        .into_iter()
        .filter_map(|c| Some((c, c.median("deliveries_per_s")?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((c, v)) = best else {
        return Goal::not_measured(goal, "the ws suite");
    };
    let met = v >= WS_DELIVERIES_PER_S;
    Goal {
        goal,
        measured: format!(
            "best: {} with {} subscribers, {} deliveries/s (p99 {})",
            c.cell.series,
            thousands(c.cell.x.unwrap_or(0.0)),
            thousands(v),
            c.median("p99_us").map_or("?".into(), us)
        ),
        verdict: Verdict::met_if(met),
        limits: if met { String::new() } else { limit_text(r, "ws", &c.cell.id) },
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{add, results, run, Run};
    use super::*;

    /// A fan-out cell at 10,000 subscribers: deliveries/s and p99 (µs), every message delivered.
    fn fan(id: &str, rate: f64, p99: f64) -> Run {
        let m = [("deliveries_per_s", rate), ("p99_us", p99), ("misses", 0.0), ("delivered", 100_000.0), ("expected", 100_000.0)];
        run(id, &[&m[..], &[("server_cpu_pct", 99.0), ("client_cpu_pct", 50.0)]].concat())
    }

    /// The fanout suite: reactor's paced p99, reactor's rate back to back, Tornado's rate.
    fn fanout(paced_p99: f64, reactor: f64, tornado: f64) -> Results {
        results(
            "fanout",
            vec![
                fan("reactor@10000/paced", 10_000.0, paced_p99),
                fan("async@10000/paced", 10_000.0, paced_p99 * 2.0),
                fan("reactor@10000", reactor, 90_000.0),
                fan("async@10000", reactor / 2.0, 90_000.0),
                fan("tornado@10000", tornado, 500_000.0),
                fan("reactor@1000", reactor * 10.0, 1_000.0),
            ],
        )
    }

    const P99_US: f64 = FANOUT_P99_MS * 1000.0;

    #[test]
    fn fan_out_at_the_p99_and_the_tornado_ratio_is_met() {
        let g = fanout_goal(&fanout(P99_US, OVER_TORNADO * 1_000.0, 1_000.0));
        assert_eq!(g.goal, "long-poll fan-out to 10,000 subscribers fully delivered, p99 ≤ 30 ms, ≥ 50× Tornado's deliveries/s");
        assert_eq!(g.verdict, Verdict::new(Outcome::Met));
        assert_eq!(
            g.measured,
            "best paced: reactor, 100,000 of 100,000 delivered, p99 30.0 ms; fastest back to back: reactor, 50,000 \
             deliveries/s vs Tornado 1,000 (50×)"
        );
        assert_eq!(g.limits, "");
    }

    #[test]
    fn fan_out_over_the_p99_misses_and_says_what_one_exchange_costs() {
        let mut r = fanout(P99_US + 1_000.0, 100_000.0, 1_000.0);
        // 50% of a core for 100,000 req/s: 5 µs an exchange, 49.5 ms for 99% of 10,000.
        add(&mut r, "plaintext", vec![run("reactor", &[("rps", 100_000.0), ("server_cpu_pct", 50.0), ("client_cpu_pct", 99.0)])]);
        let g = fanout_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::Missed);
        assert!(g.limits.starts_with("p99 31.0 ms > 30 ms: a paced delivery is one HTTP exchange"), "{}", g.limits);
        assert!(
            g.limits.contains("costs reactor 5.0 µs of server CPU (its plaintext run), so the 99th percentile subscriber of one post waits behind at least 49.5 ms of server work, more than the goal by itself; "),
            "{}",
            g.limits
        );
        assert!(g.limits.ends_with("not profiled (run with --perf); see the analysis"), "{}", g.limits);
        assert!(!g.limits.contains("Tornado"), "the ratio was met: {}", g.limits);
    }

    #[test]
    fn fan_out_short_of_the_tornado_ratio_misses_and_names_the_fastest_cell() {
        let g = fanout_goal(&fanout(P99_US, OVER_TORNADO * 1_000.0 - 100.0, 1_000.0));
        assert_eq!(g.verdict.outcome, Outcome::Missed);
        assert!(g.limits.starts_with("only 49.9× Tornado: server used 99% of 1 core, client 50% of 1: server-bound"), "{}", g.limits);
    }

    #[test]
    fn fan_out_with_a_missed_delivery_misses_whatever_its_latency() {
        let mut r = fanout(1_000.0, 1_000_000.0, 1_000.0);
        let paced = r.suites.get_mut("fanout").unwrap().cells.iter_mut().find(|c| c.cell.id == "reactor@10000/paced").unwrap();
        paced.samples[0].metrics.insert("misses".into(), 3.0);
        paced.samples[0].problems.push("3 deliveries missing".into());
        let g = fanout_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::Missed);
        assert_eq!(g.limits, "not fully delivered: 3 deliveries missing");
    }

    #[test]
    fn fan_out_without_tornado_is_incomplete_unless_already_missed() {
        let mut r = fanout(P99_US, 1_000_000.0, 1_000.0);
        r.suites.get_mut("fanout").unwrap().cells.retain(|c| c.cell.series != "tornado");
        let g = fanout_goal(&r);
        assert_eq!(g.verdict.markdown(), "incomplete: no Tornado run at 10,000 to compare with");
        assert!(g.measured.ends_with("fastest back to back: reactor, no Tornado figure"), "{}", g.measured);
        let mut r = fanout(P99_US * 2.0, 1_000_000.0, 1_000.0);
        r.suites.get_mut("fanout").unwrap().cells.retain(|c| c.cell.series != "tornado");
        assert_eq!(fanout_goal(&r).verdict.outcome, Outcome::Missed);
    }

    #[test]
    fn fan_out_is_judged_at_the_top_size_and_not_measured_without_a_paced_run() {
        // The paced run at the top size is the one judged, not a faster one below it.
        let g = fanout_goal(&fanout(P99_US * 2.0, 1_000_000.0, 1_000.0));
        assert!(g.measured.starts_with("best paced: reactor, 100,000 of 100,000 delivered, p99 60.0 ms"), "{}", g.measured);
        let r = results("fanout", vec![fan("reactor@10000", 1_000_000.0, 1.0), fan("tornado@10000", 1.0, 1.0)]);
        let g = fanout_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::NotMeasured);
        assert_eq!(g.goal, fanout_text(FANOUT_SUBSCRIBERS), "the same goal as when it ran");
        assert_eq!(fanout_goal(&Results::default()).measured, "not measured: run the fanout suite");
    }

    fn ws(rate: f64) -> Results {
        let cells = vec![
            run("async@1000", &[("deliveries_per_s", rate), ("p99_us", 19_400.0), ("server_cpu_pct", 99.0), ("client_cpu_pct", 60.0)]),
            run("reactor@1000", &[("deliveries_per_s", rate / 2.0), ("p99_us", 1_000.0)]),
        ];
        results("ws", cells)
    }

    #[test]
    fn websocket_deliveries_at_the_constant_are_met_and_below_it_missed() {
        let g = ws_goal(&ws(WS_DELIVERIES_PER_S));
        assert_eq!(g.goal, "≥ 1,000,000 WebSocket deliveries per second");
        assert_eq!((g.verdict.outcome, g.limits.as_str()), (Outcome::Met, ""));
        assert_eq!(g.measured, "best: async with 1,000 subscribers, 1,000,000 deliveries/s (p99 19.4 ms)");
        let g = ws_goal(&ws(WS_DELIVERIES_PER_S - 1.0));
        assert_eq!(g.verdict.outcome, Outcome::Missed);
        assert_eq!(
            g.limits,
            "server used 99% of 1 core, client 60% of 1: server-bound; not profiled (run with --perf); see the analysis"
        );
    }

    #[test]
    fn websocket_deliveries_without_the_suite_are_not_measured() {
        let g = ws_goal(&Results::default());
        assert_eq!((g.verdict.outcome, g.measured.as_str()), (Outcome::NotMeasured, "not measured: run the ws suite"));
        // A cell that ran without a rate cannot be judged either.
        let g = ws_goal(&results("ws", vec![run("async@1000", &[("p99_us", 1.0)])]));
        assert_eq!(g.verdict.outcome, Outcome::NotMeasured);
    }
}
