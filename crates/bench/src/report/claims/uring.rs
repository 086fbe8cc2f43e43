//! The goals of the `uring` model (issue 13): completion against readiness on the same
//! pinning. Fewer system calls per request than the epoll reactor, plaintext req/s ahead of
//! the reactor and async (one in flight and pipelined), and idle connections at or below
//! the reactor's memory.

use super::{Goal, Outcome, Verdict};
use crate::matrix::PIPELINE;
use crate::report::bytes;
use crate::report::thousands;
use crate::results::{CellResult, Results};

/// The model judged.
const URING: &str = "uring";
/// The readiness model it is judged against: the reactor on epoll.
const REACTOR: &str = "reactor";
/// The other single-threaded model it must beat on req/s: async on one worker.
const ASYNC: &str = "async";

/// uring's system calls per request must be below this share of the epoll reactor's.
const SYSCALLS_UNDER: f64 = 1.0;
/// uring's median req/s must exceed this many times each rival's.
const AHEAD: f64 = 1.0;
/// uring's PSS per idle connection must be at most this many times the reactor's, in the
/// same suite at the same count...
const MEMORY_AT_MOST: f64 = 1.0;
/// ...and at most the reactor's figure the issue names (KiB: its c1m run at 1,000,000).
const REACTOR_KIB: f64 = 1.8;

/// The plaintext runs compared: one in flight (cell `uring`), pipelined (`uring/pipelined16`).
fn runs() -> [(String, &'static str); 2] {
    [(String::new(), "one in flight"), (format!("/pipelined{PIPELINE}"), "pipelined")]
}

fn plaintext<'a>(r: &'a Results, model: &str, suffix: &str) -> Option<&'a CellResult> {
    r.cell("plaintext", &format!("{model}{suffix}"))
}

/// `1.92 (recvfrom 1.00, sendto 0.50, epoll_wait 0.40)`.
fn per_request_text(c: &CellResult) -> Option<(f64, String)> {
    let s = c.syscalls.as_ref()?;
    let v = s.per_request()?;
    let text = crate::syscalls::per_request_text;
    let top: Vec<String> = s.top(3).iter().map(|(k, v)| format!("{k} {}", text(*v))).collect();
    Some((v, format!("{} ({})", text(v), top.join(", "))))
}

/// Fewer system calls per request than epoll, judged on both plaintext runs; async's
/// figure beside them.
pub(super) fn uring_syscalls_goal(r: &Results) -> Goal {
    let goal = format!(
        "uring: fewer system calls per plaintext request than reactor (epoll){}, one in flight and pipelined",
        if SYSCALLS_UNDER == 1.0 { String::new() } else { format!(" (< {SYSCALLS_UNDER}×)") }
    );
    let mut measured = Vec::new();
    let mut fewer = Vec::new();
    let mut why_not = Vec::new();
    for (suffix, run) in runs() {
        let (Some(u), Some(e)) = (plaintext(r, URING, &suffix), plaintext(r, REACTOR, &suffix)) else { continue };
        match (per_request_text(u), per_request_text(e)) {
            (Some((uv, ut)), Some((ev, et))) => {
                let a = plaintext(r, ASYNC, &suffix)
                    .and_then(per_request_text)
                    .map_or(String::new(), |(_, t)| format!(", async {t}"));
                measured.push(format!("{run}: uring {ut} vs reactor {et} = {:.2}×{a}", uv / ev));
                fewer.push((run, uv < SYSCALLS_UNDER * ev));
            }
            (a, b) => {
                let missing = |c: &CellResult, ok: bool| {
                    (!ok).then(|| {
                        let why = c.syscalls.as_ref().and_then(|s| s.problems.first().cloned());
                        format!("{} {}", c.cell.id, why.unwrap_or_else(|| "not counted".into()))
                    })
                };
                why_not.extend(missing(u, a.is_some()));
                why_not.extend(missing(e, b.is_some()));
            }
        }
    }
    if fewer.is_empty() {
        return Goal {
            goal,
            measured: if why_not.is_empty() {
                "not measured: run the plaintext suite with uring and reactor".into()
            } else {
                why_not.join("; ")
            },
            verdict: Verdict::new(Outcome::NotMeasured),
            limits: String::new(),
        };
    }
    let missed: Vec<&str> = fewer.iter().filter(|f| !f.1).map(|f| f.0).collect();
    let verdict = match (missed.is_empty(), fewer.len()) {
        (false, _) => Verdict::scoped(Outcome::Missed, missed.join(" and ")),
        (true, 2) => Verdict::new(Outcome::Met),
        (true, _) => Verdict::because(Outcome::Incomplete, format!("only {} counted", fewer[0].0)),
    };
    Goal {
        goal,
        measured: measured.join("; "),
        verdict,
        limits: why_not.join("; "),
    }
}

/// One comparison of req/s: uring against a rival in one run.
struct Race<'a> {
    run: &'static str,
    rival: &'a CellResult,
    uring: &'a CellResult,
}

impl Race<'_> {
    fn ratio(&self) -> Option<f64> {
        Some(self.uring.median("rps")? / self.rival.median("rps").filter(|v| *v > 0.0)?)
    }

    fn ahead(&self) -> bool {
        self.ratio().is_some_and(|x| x > AHEAD)
    }

    /// Ahead even from uring's slowest repeat to the rival's fastest.
    fn clearly(&self) -> bool {
        match (self.uring.range("rps"), self.rival.range("rps")) {
            (Some((u_lo, _)), Some((_, r_hi))) => u_lo > AHEAD * r_hi,
            _ => false,
        }
    }

    fn same_pinning(&self) -> bool {
        self.uring.server_cpus == self.rival.server_cpus && self.uring.client_cpus == self.rival.client_cpus
    }
}

/// Plaintext req/s ahead of the reactor (epoll) and async, one in flight and pipelined,
/// on the same pinning. Ahead by the medians but not from every repeat (the ranges
/// overlap) is not established: on a shared machine that is within the noise.
pub(super) fn uring_rps_goal(r: &Results) -> Goal {
    let goal = format!("uring: plaintext req/s ahead of reactor (epoll) and async ({ASYNC} --threads 1), one in flight and pipelined {PIPELINE}, on the same pinning");
    let mut races = Vec::new();
    let mut absent = Vec::new();
    for (suffix, run) in runs() {
        let Some(u) = plaintext(r, URING, &suffix) else {
            absent.push(format!("uring {run}"));
            continue;
        };
        for rival in [REACTOR, ASYNC] {
            match plaintext(r, rival, &suffix) {
                Some(c) => races.push(Race { run, rival: c, uring: u }),
                None => absent.push(format!("{rival} {run}")),
            }
        }
    }
    let races: Vec<Race> = races.into_iter().filter(|x| x.ratio().is_some()).collect();
    if races.is_empty() {
        return Goal::not_measured(goal, "the plaintext suite with uring, reactor and async");
    }
    let measured: Vec<String> = races
        .iter()
        .map(|x| {
            format!(
                "{}: uring {} vs {} {} = {:.2}×{}{}",
                x.run,
                thousands(x.uring.median("rps").unwrap_or(0.0)),
                x.rival.cell.subject.name(),
                thousands(x.rival.median("rps").unwrap_or(0.0)),
                x.ratio().unwrap_or(0.0),
                if x.ahead() && !x.clearly() { " (the repeats' ranges overlap)" } else { "" },
                if x.same_pinning() { "" } else { " (pinned differently)" }
            )
        })
        .collect();
    let behind: Vec<String> =
        races.iter().filter(|x| !x.ahead()).map(|x| format!("{} {}", x.rival.cell.subject.name(), x.run)).collect();
    let unclear = races.iter().any(|x| x.ahead() && !x.clearly());
    let pinned = races.iter().all(Race::same_pinning);
    let verdict = if !behind.is_empty() {
        Verdict::scoped(Outcome::Missed, format!("on {} of {}", behind.len(), races.len()))
            .and_because(format!("behind {}", behind.join(", ")))
    } else if !absent.is_empty() {
        Verdict::because(Outcome::Incomplete, format!("no {}", absent.join(", no ")))
    } else if !pinned {
        Verdict::because(Outcome::NotEstablished, "not every pair ran on the same pinning")
    } else if unclear {
        Verdict::because(Outcome::NotEstablished, "ahead by the medians, but the repeats' ranges overlap")
    } else {
        Verdict::new(Outcome::Met)
    };
    let limits: Vec<String> = races
        .iter()
        .filter(|x| !x.ahead())
        .map(|x| format!("{}: {}", x.uring.cell.id, super::limits::limit_text(r, "plaintext", &x.uring.cell.id)))
        .collect();
    Goal { goal, measured: measured.join("; "), verdict, limits: limits.join("; ") }
}

/// The memory suites, in the order they are reported.
const MEMORY_SUITES: [&str; 4] = ["idle", "capacity", "c100k", "c1m"];

/// Idle connections at or below the reactor's memory: in every memory suite where both
/// ran, at the largest count both held, uring's PSS per connection against the reactor's.
pub(super) fn uring_idle_goal(r: &Results) -> Goal {
    let goal = format!(
        "uring: idle connections at or below the reactor's PSS each (and ≤ its {REACTOR_KIB} KiB), in every memory \
         suite both ran"
    );
    let mut compared = Vec::new();
    for suite in MEMORY_SUITES {
        let cells = r.cells(suite);
        let per = |series: &str, x: f64| {
            cells
                .iter()
                .find(|c| c.cell.series == series && c.cell.x == Some(x))
                .and_then(|c| Some((c.median("pss_per_conn_bytes")?, c.median("held")?)))
        };
        let top = cells
            .iter()
            .filter(|c| c.cell.series == URING)
            .filter_map(|c| c.cell.x)
            .filter(|x| per(URING, *x).is_some() && per(REACTOR, *x).is_some())
            .reduce(f64::max);
        if let Some(x) = top {
            let (u, uh) = per(URING, x).expect("filtered");
            let (e, eh) = per(REACTOR, x).expect("filtered");
            compared.push((suite, x, u, uh, e, eh));
        }
    }
    if compared.is_empty() {
        return Goal::not_measured(goal, "the idle suite (or capacity, c100k, c1m) with uring and reactor");
    }
    let measured: Vec<String> = compared
        .iter()
        .map(|&(suite, x, u, uh, e, eh)| {
            format!(
                "{suite} at {}: uring {} (held {}) vs reactor {} (held {})",
                thousands(x),
                bytes(u),
                thousands(uh),
                bytes(e),
                thousands(eh)
            )
        })
        .collect();
    let bound = REACTOR_KIB * 1024.0;
    let over: Vec<String> = compared
        .iter()
        .filter(|c| c.2 > MEMORY_AT_MOST * c.4 || c.2 > bound)
        .map(|&(suite, x, u, _, e, _)| {
            let also = if u > bound { format!(" and over the {REACTOR_KIB} KiB") } else { String::new() };
            format!("{suite} at {}: uring {} against the reactor's {}{also}", thousands(x), bytes(u), bytes(e))
        })
        .collect();
    let short: Vec<String> = compared
        .iter()
        .filter(|c| c.3 < c.1)
        .map(|&(suite, x, _, uh, _, _)| format!("{suite}: uring held {} of {}", thousands(uh), thousands(x)))
        .collect();
    let verdict = if !over.is_empty() {
        Verdict::scoped(Outcome::Missed, format!("in {} of {}", over.len(), compared.len()))
    } else if !short.is_empty() {
        Verdict::because(Outcome::Incomplete, "not every connection asked for was held")
    } else {
        Verdict::scoped(Outcome::Met, format!("in {} suite{}", compared.len(), if compared.len() == 1 { "" } else { "s" }))
    };
    Goal { goal, measured: measured.join("; "), verdict, limits: [over, short].concat().join("; ") }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{add, results, run, Run};
    use super::*;

    /// A plaintext cell with one repeat at `rps` (and the same pinning as the fixture's).
    fn at(id: &str, rps: f64) -> Run {
        run(id, &[("rps", rps), ("server_cpu_pct", 99.0), ("client_cpu_pct", 99.0)])
    }

    /// A plaintext cell whose extra run made `per` system calls per request, split as `calls`.
    fn counted(id: &str, per: f64, calls: &[(&str, f64)]) -> Run {
        let requests = 100_000.0;
        let by: Vec<(&str, f64)> = calls.iter().map(|(k, v)| (*k, v * requests)).collect();
        at(id, 100_000.0).syscalls(per * requests, requests, &by)
    }

    fn syscalls(uring: (f64, f64), reactor: (f64, f64)) -> Goal {
        let r = results(
            "plaintext",
            vec![
                counted("uring", uring.0, &[("io_uring_enter", uring.0)]),
                counted("reactor", reactor.0, &[("recvfrom", 1.0), ("sendto", 1.0), ("epoll_wait", reactor.0 - 2.0)]),
                counted("async", 2.5, &[("recvfrom", 1.0), ("sendto", 1.0), ("epoll_wait", 0.5)]),
                counted("uring/pipelined16", uring.1, &[("io_uring_enter", uring.1)]),
                counted("reactor/pipelined16", reactor.1, &[("recvfrom", reactor.1 / 2.0), ("sendto", reactor.1 / 2.0)]),
            ],
        );
        uring_syscalls_goal(&r)
    }

    #[test]
    fn fewer_system_calls_than_epoll_in_both_runs_is_met_and_names_the_calls() {
        let g = syscalls((0.30, 0.02), (2.60, 0.13));
        assert_eq!(g.goal, "uring: fewer system calls per plaintext request than reactor (epoll), one in flight and pipelined");
        assert_eq!(g.verdict, Verdict::new(Outcome::Met));
        assert!(
            g.measured.starts_with(
                "one in flight: uring 0.30 (io_uring_enter 0.30) vs reactor 2.60 (recvfrom 1.00, sendto 1.00, \
                 epoll_wait 0.60) = 0.12×, async 2.50 (recvfrom 1.00, sendto 1.00, epoll_wait 0.50); pipelined: uring \
                 0.02 (io_uring_enter 0.02) vs reactor 0.13"
            ),
            "{}",
            g.measured
        );
    }

    #[test]
    fn as_many_system_calls_as_epoll_misses_the_run_it_happens_in() {
        // Exactly the threshold is not fewer.
        let g = syscalls((0.30, SYSCALLS_UNDER * 0.13), (2.60, 0.13));
        assert_eq!(g.verdict.markdown(), "**missed** pipelined");
        let g = syscalls((2.61, 0.14), (2.60, 0.13));
        assert_eq!(g.verdict.markdown(), "**missed** one in flight and pipelined");
    }

    #[test]
    fn a_count_that_could_not_be_made_says_why_and_is_not_measured() {
        let mut r = results("plaintext", vec![at("uring", 1.0), at("reactor", 1.0)]);
        for c in &mut r.suites.get_mut("plaintext").expect("suite").cells {
            c.syscalls = Some(crate::syscalls::SyscallCount::not_measured("perf and strace missing"));
        }
        let g = uring_syscalls_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::NotMeasured);
        assert_eq!(g.measured, "uring not measured: perf and strace missing; reactor not measured: perf and strace missing");
        assert_eq!(uring_syscalls_goal(&Results::default()).verdict.outcome, Outcome::NotMeasured);
        // One run counted, the other not: incomplete, if fewer there.
        let r = results("plaintext", vec![counted("uring", 0.3, &[]), counted("reactor", 2.6, &[])]);
        assert_eq!(uring_syscalls_goal(&r).verdict.markdown(), "incomplete: only one in flight counted");
    }

    /// The plaintext suite with uring, reactor and async at these req/s: one in flight, then pipelined.
    fn rps(one: [f64; 3], pipelined: [f64; 3]) -> Results {
        let mut cells = Vec::new();
        for (suffix, v) in [("", one), ("/pipelined16", pipelined)] {
            for (model, x) in [("uring", v[0]), ("reactor", v[1]), ("async", v[2])] {
                cells.push(at(&format!("{model}{suffix}"), x));
            }
        }
        results("plaintext", cells)
    }

    #[test]
    fn ahead_of_both_rivals_in_both_runs_is_met() {
        let g = uring_rps_goal(&rps([230_000.0, 220_000.0, 215_000.0], [1_100_000.0, 950_000.0, 980_000.0]));
        assert_eq!(g.verdict, Verdict::new(Outcome::Met));
        assert!(
            g.measured.starts_with("one in flight: uring 230,000 vs reactor 220,000 = 1.05×; one in flight: uring 230,000 vs async 215,000 = 1.07×; pipelined: uring 1,100,000 vs reactor 950,000 = 1.16×"),
            "{}",
            g.measured
        );
        assert_eq!(g.limits, "");
    }

    #[test]
    fn level_with_a_rival_is_behind_it_and_named() {
        let g = uring_rps_goal(&rps([220_000.0 * AHEAD, 220_000.0, 215_000.0], [1_100_000.0, 950_000.0, 1_200_000.0]));
        assert_eq!(g.verdict.markdown(), "**missed** on 2 of 4: behind reactor one in flight, async pipelined");
        assert!(g.limits.starts_with("uring: server used 99% of 1 core"), "{}", g.limits);
    }

    #[test]
    fn ahead_by_the_medians_within_the_repeats_range_is_not_established() {
        let mut r = rps([230_000.0, 220_000.0, 215_000.0], [1_100_000.0, 950_000.0, 980_000.0]);
        // A second reactor repeat faster than uring's slowest.
        let reactor = r.suites.get_mut("plaintext").expect("suite").cells.iter_mut().find(|c| c.cell.id == "reactor").expect("cell");
        let mut fast = reactor.samples[0].clone();
        fast.metrics.insert("rps".into(), 235_000.0);
        reactor.samples.push(fast);
        let g = uring_rps_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::NotEstablished, "{}", g.verdict.markdown());
        assert!(g.measured.contains("uring 230,000 vs reactor 227,500 = 1.01× (the repeats' ranges overlap)"), "{}", g.measured);
    }

    #[test]
    fn without_a_rival_the_req_s_goal_is_incomplete_and_without_uring_not_measured() {
        let r = results("plaintext", vec![at("uring", 2.0), at("reactor", 1.0)]);
        let g = uring_rps_goal(&r);
        assert_eq!(g.verdict.outcome, Outcome::Incomplete);
        assert!(g.verdict.markdown().contains("no async one in flight"), "{}", g.verdict.markdown());
        assert_eq!(uring_rps_goal(&results("plaintext", vec![at("reactor", 1.0)])).verdict.outcome, Outcome::NotMeasured);
    }

    /// The idle suite at 1,000 and 10,000: (model, size, PSS per connection).
    fn idle(ran: &[(&str, u32, f64)]) -> Results {
        results(
            "idle",
            ran.iter()
                .map(|&(m, k, pss)| run(&format!("{m}@{k}"), &[("pss_per_conn_bytes", pss), ("held", k as f64)]))
                .collect(),
        )
    }

    #[test]
    fn idle_memory_at_or_below_the_reactors_is_met_at_the_largest_common_size() {
        let g = uring_idle_goal(&idle(&[("uring", 1000, 5_000.0), ("reactor", 1000, 1_000.0), ("uring", 10000, 1_500.0), ("reactor", 10000, 1_500.0)]));
        assert_eq!(g.verdict.markdown(), "**met** in 1 suite");
        assert_eq!(g.measured, "idle at 10,000: uring 1.5 KiB (held 10,000) vs reactor 1.5 KiB (held 10,000)");
    }

    #[test]
    fn idle_memory_over_the_reactors_or_its_bound_misses() {
        let g = uring_idle_goal(&idle(&[("uring", 10000, 1_501.0), ("reactor", 10000, 1_500.0)]));
        assert_eq!(g.verdict.markdown(), "**missed** in 1 of 1");
        // Under the reactor's, but over the 1.8 KiB both should keep.
        let over = REACTOR_KIB * 1024.0 + 100.0;
        let g = uring_idle_goal(&idle(&[("uring", 10000, over), ("reactor", 10000, over + 1.0)]));
        assert_eq!(g.verdict.outcome, Outcome::Missed);
        assert!(g.limits.contains("and over the 1.8 KiB"), "{}", g.limits);
    }

    #[test]
    fn every_memory_suite_both_ran_counts_and_without_one_it_is_not_measured() {
        let mut r = idle(&[("uring", 10000, 1_000.0), ("reactor", 10000, 1_500.0)]);
        add(&mut r, "capacity", vec![
            run("uring@18000", &[("pss_per_conn_bytes", 2_000.0), ("held", 18_000.0)]),
            run("reactor@18000", &[("pss_per_conn_bytes", 1_900.0), ("held", 18_000.0)]),
        ]);
        let g = uring_idle_goal(&r);
        assert_eq!(g.verdict.markdown(), "**missed** in 1 of 2");
        assert!(g.measured.ends_with("capacity at 18,000: uring 2.0 KiB (held 18,000) vs reactor 1.9 KiB (held 18,000)"), "{}", g.measured);
        assert_eq!(uring_idle_goal(&Results::default()).verdict.outcome, Outcome::NotMeasured);
        assert_eq!(uring_idle_goal(&idle(&[("uring", 10000, 1.0)])).verdict.outcome, Outcome::NotMeasured);
    }
}
