//! The talk's claims, in its order, each judged on the cells that test it: one function
//! per claim, its thresholds named beside it.

mod database;
mod ledger;

use database::database;
use ledger::fine_grained;
use super::limits::machine_cpus;
use super::{m, most_held, Claim, Outcome, Verdict};
use crate::report::{bytes, thousands, us};
use crate::results::{CellResult, Results};

/// Every claim, in the order of the talk.
pub fn all(r: &Results) -> Vec<Claim> {
    vec![
        ten_thousand(r),
        giant_lock(r),
        fine_grained(r),
        database(r),
        nginx_apache(r),
        wedged(r),
        green_cores(r),
        pollers(r),
    ]
}

/// The talk's number of threads or processes.
const TEN_THOUSAND: f64 = 10_000.0;
/// Threads and processes cost "far more" memory per connection than an event-driven
/// connection when each costs at least this many times as much.
const FAR_MORE: f64 = 4.0;

fn ten_thousand(r: &Results) -> Claim {
    let claim = format!("\"You can't have {} threads or processes on the same box\"", thousands(TEN_THOUSAND));
    let reproduce = "`c10k bench --only capacity,c100k,c1m --models threads,prefork,async,reactor`".to_string();
    let ten = thousands(TEN_THOUSAND);
    let mut measured = Vec::new();
    let mut verdicts = Vec::new();
    let mut remarks = Vec::new();
    // Memory per connection, for the comparison with an event-driven one.
    let mut costs = Vec::new();
    let threads = most_held(r, &["capacity", "c100k"], "threads");
    let prefork = most_held(r, &["capacity"], "prefork");
    // The event-driven model that held the most (async or reactor).
    let asyn = ["async", "reactor"]
        .into_iter()
        .filter_map(|m| most_held(r, &["capacity", "c100k", "c1m"], m))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((c, held)) = threads {
        let processes = c.median("processes_peak");
        measured.push(format!(
            "threads: {} connections held with {} threads in {} process{} ({} PSS each)",
            thousands(held),
            c.median("threads_peak").map_or("?".into(), thousands),
            processes.map_or("?".into(), thousands),
            if processes == Some(1.0) { "" } else { "es" },
            c.median("pss_per_conn_bytes").map_or("?".into(), bytes)
        ));
        verdicts.push(if held >= TEN_THOUSAND {
            Verdict::scoped(Outcome::Refuted, "for threads here")
                .and_because(format!("{} threads ran", thousands(c.median("threads_peak").unwrap_or(held))))
        } else {
            Verdict::scoped(Outcome::Confirmed, "for threads here").and_because(format!("they stopped at {}", thousands(held)))
        });
        costs.extend(c.median("pss_per_conn_bytes").map(|p| ("threads", p)));
    }
    if let Some((c, held)) = prefork {
        // Its processes exist before their connections: the cost of one is the whole
        // tree's PSS over the connections held, not the growth while they opened.
        let per = c.median("pss_total_per_conn_bytes").or_else(|| c.median("pss_per_conn_bytes"));
        measured.push(format!(
            "prefork: {} processes held {} connections ({} PSS per process{})",
            c.median("processes_peak").map_or("?".into(), thousands),
            thousands(held),
            per.map_or("?".into(), bytes),
            per.map_or(String::new(), |p| format!("; {ten} would take {}", bytes(p * TEN_THOUSAND)))
        ));
        if held >= TEN_THOUSAND {
            verdicts.push(Verdict::scoped(Outcome::Refuted, "for processes too"));
        } else {
            let total = r.suites.values().next().map_or(0.0, |s| s.machine.mem_total_kib as f64 * 1024.0);
            remarks.push(match per {
                Some(p) if p * TEN_THOUSAND < total => format!(
                    "processes: not run at {ten}, but {} for {ten} fits in this machine's {}",
                    bytes(p * TEN_THOUSAND),
                    bytes(total)
                ),
                Some(p) => format!(
                    "processes: {ten} would need {}, more than this machine's {}",
                    bytes(p * TEN_THOUSAND),
                    bytes(total)
                ),
                None => "processes: no memory figure".into(),
            });
        }
        costs.extend(per.map(|p| ("processes", p)));
    }
    if let Some((c, held)) = asyn {
        let per = c.median("pss_per_conn_bytes");
        measured.push(format!(
            "{}: {} held at {} PSS each",
            c.cell.series,
            thousands(held),
            per.map_or("?".into(), bytes)
        ));
        if let Some(e) = per.filter(|e| *e > 0.0 && !costs.is_empty()) {
            let times: Vec<String> = costs.iter().map(|(n, p)| format!("{n} {:.0}×", p / e)).collect();
            remarks.push(if costs.iter().all(|(_, p)| *p >= FAR_MORE * e) {
                format!(
                    "but each costs far more memory than an event-driven (async, reactor) connection ({} {}'s)",
                    times.join(", "),
                    c.cell.series
                )
            } else {
                format!("memory per connection against {}'s: {}", c.cell.series, times.join(", "))
            });
        }
    }
    if measured.is_empty() {
        return Claim::not_measured(claim, "the capacity suite", reproduce);
    }
    if verdicts.is_empty() {
        verdicts.push(Verdict::new(Outcome::Incomplete));
    }
    Claim { claim, measured: measured.join("; "), verdicts, remarks, reproduce }
}

/// The giant lock is seen when it leaves less than this share of the CPU-bound throughput.
const GIANT_LOCK_SLOWER: f64 = 0.8;

fn giant_lock(r: &Results) -> Claim {
    let get = |id: &str, metric: &str| m(r, "cpu", id, metric);
    let claim = "Threads make CPU-bound code slower under a global lock (GIL, FreeBSD's giant lock)".to_string();
    let reproduce = "`c10k bench --only cpu --models threads`".to_string();
    let (Some(f), Some(g)) = (get("threads", "cpu_rps"), get("threads+giant-lock", "cpu_rps")) else {
        return Claim::not_measured(claim, "the cpu suite", reproduce);
    };
    let ratio = g / f;
    let cpu = |id: &str| get(id, "server_cpu_pct").map_or("?".into(), |v| format!("{v:.0}%"));
    let p99 = |id: &str| get(id, "p99_us").map_or("?".into(), us);
    let measured = format!(
        "{} cores: threads {f:.0} CPU-bound req/s using {} CPU, with `--giant-lock` {g:.0} ({ratio:.2}×) using {}; \
         the plaintext client beside them: p99 {} without the lock, {} with it",
        machine_cpus(r, "cpu"),
        cpu("threads"),
        cpu("threads+giant-lock"),
        p99("threads"),
        p99("threads+giant-lock")
    );
    let verdict = if ratio < GIANT_LOCK_SLOWER {
        Verdict::because(
            Outcome::Confirmed,
            format!(
                "the lock lets one thread compute at a time, so the hashing gets one core, not all ({ratio:.2}× the \
                 throughput), and every other request queues behind it"
            ),
        )
    } else {
        Verdict::scoped(Outcome::NotSeen, format!("here ({ratio:.2}×, not below {GIANT_LOCK_SLOWER}×)"))
            .and_because("the CPU-bound requests did not get more than one core even without the lock")
    };
    Claim { claim, measured, verdicts: vec![verdict], remarks: Vec::new(), reproduce }
}

fn nginx_apache(r: &Results) -> Claim {
    let claim = "nginx (asynchronous) against Apache (processes, threads): throughput and idle connections".to_string();
    let reproduce = "`c10k bench --only plaintext,idle`".to_string();
    let rps = |s: &str| m(r, "plaintext", s, "rps");
    let mut measured = Vec::new();
    let names = ["nginx", "apache-prefork", "apache-event", "async", "threads", "prefork"];
    let shown: Vec<String> = names.iter().filter_map(|n| Some(format!("{n} {}", thousands(rps(n)?)))).collect();
    if !shown.is_empty() {
        measured.push(format!("plaintext req/s: {}", shown.join(", ")));
    }
    let idle: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let (c, held) = most_held(r, &["idle"], n)?;
            Some(format!(
                "{n} held {} of {} ({} each)",
                thousands(held),
                thousands(c.cell.x.unwrap_or(0.0)),
                c.median("pss_per_conn_bytes").map_or("?".into(), bytes)
            ))
        })
        .collect();
    if !idle.is_empty() {
        measured.push(format!("idle keep-alive: {}", idle.join(", ")));
    }
    if measured.is_empty() {
        return Claim::not_measured(claim, "the plaintext and idle suites", reproduce);
    }
    let nginx = rps("nginx");
    let apache = [rps("apache-prefork"), rps("apache-event")].into_iter().flatten().reduce(f64::max);
    let nginx_held = most_held(r, &["idle"], "nginx").map(|x| x.1);
    let prefork_held = most_held(r, &["idle"], "apache-prefork").map(|x| x.1);
    let mut verdicts = Vec::new();
    if let (Some(n), Some(a)) = (nginx, apache) {
        verdicts.push(if n > a {
            Verdict::scoped(Outcome::Confirmed, "for throughput").and_because(format!("nginx {:.1}× the better Apache", n / a))
        } else {
            Verdict::scoped(Outcome::NotSeen, "for throughput").and_because(format!("nginx {:.2}× the better Apache", n / a))
        });
    }
    if let (Some(n), Some(p)) = (nginx_held, prefork_held) {
        verdicts.push(if n > p {
            Verdict::scoped(Outcome::Confirmed, "for idle connections")
                .and_because(format!("Apache prefork holds one per process ({} here)", thousands(p)))
        } else {
            Verdict::scoped(Outcome::NotSeen, "for idle connections")
                .and_because(format!("nginx held {}, Apache prefork {}", thousands(n), thousands(p)))
        });
    }
    if verdicts.is_empty() {
        verdicts.push(Verdict::new(Outcome::Incomplete));
    }
    let remarks = match (rps("async"), rps("threads")) {
        (Some(a), Some(t)) => vec![format!("our async serves {:.2}× our threads", a / t)],
        _ => Vec::new(),
    };
    Claim { claim, measured: measured.join("; "), verdicts, remarks, reproduce }
}

/// A single-threaded loop is wedged by CPU-bound requests when the plaintext p99 beside
/// them is more than this many times the threads model's.
const WEDGED_RATIO: f64 = 3.0;

fn wedged(r: &Results) -> Claim {
    let claim = "\"If one program gets wedged, the whole system is wedged\" (non-preemptive loops)".to_string();
    let reproduce = "`c10k bench --only cpu`".to_string();
    let p99 = |s: &str| m(r, "cpu", s, "p99_us");
    let shown: Vec<String> = ["reactor", "green", "threads", "async"]
        .iter()
        .filter_map(|s| Some(format!("{s} {}", us(p99(s)?))))
        .collect();
    if shown.is_empty() {
        return Claim::not_measured(claim, "the cpu suite", reproduce);
    }
    let measured = format!("plaintext p99 while `/cpu` requests run: {}", shown.join(", "));
    let verdict = match (p99("reactor").or(p99("green")), p99("threads")) {
        (Some(loop_p99), Some(t)) if loop_p99 > WEDGED_RATIO * t => Verdict::because(
            Outcome::Confirmed,
            format!(
                "on the single-threaded loop every request waits behind the hashing ({:.0}× the threads model's p99)",
                loop_p99 / t
            ),
        ),
        (Some(loop_p99), Some(t)) => Verdict::scoped(
            Outcome::NotClearlySeen,
            format!("({:.1}× threads' p99, not above {WEDGED_RATIO}×)", loop_p99 / t),
        ),
        _ => Verdict::new(Outcome::Incomplete),
    };
    Claim { claim, measured, verdicts: vec![verdict], remarks: Vec::new(), reproduce }
}

/// Several cores are used when the CPU-bound throughput is more than this many times one
/// green loop's.
const SCALING: f64 = 1.5;

fn green_cores(r: &Results) -> Claim {
    let claim = "Green threads can't use several CPUs; Erlang maps them onto OS threads".to_string();
    let reproduce = "`c10k bench --only cpu --models green,async`".to_string();
    let cpu = |s: &str| m(r, "cpu", s, "cpu_rps");
    let Some(g) = cpu("green") else {
        return Claim::not_measured(claim, "the cpu suite", reproduce);
    };
    let (g2, a) = (cpu("green×2"), cpu("async"));
    let measured = format!(
        "CPU-bound req/s on {} cores: green {g:.0}, green --workers 2 {}, async (2 threads) {}",
        machine_cpus(r, "cpu"),
        g2.map_or("?".into(), |v| format!("{v:.0}")),
        a.map_or("?".into(), |v| format!("{v:.0}"))
    );
    let verdict = match (g2, a) {
        (Some(g2), Some(a)) if g2 > SCALING * g && a > SCALING * g => Verdict::because(
            Outcome::Confirmed,
            format!(
                "one loop uses one core; two processes ({:.1}×) or a work-stealing scheduler over OS threads ({:.1}×) \
                 use both",
                g2 / g,
                a / g
            ),
        ),
        (Some(g2), Some(a)) => Verdict::because(
            Outcome::NotClearlySeen,
            format!("green×2 {:.2}×, async {:.2}× green (confirmed above {SCALING}× each)", g2 / g, a / g),
        ),
        _ => Verdict::new(Outcome::Incomplete),
    };
    Claim { claim, measured, verdicts: vec![verdict], remarks: Vec::new(), reproduce }
}

/// Poll's cost is seen to grow when its extra time per request per idle connection is
/// more than this many times epoll's...
const GROWTH_RATIO: f64 = 3.0;
/// ...or than this (ns), whichever is more: epoll's own growth is noise around zero.
const GROWTH_NOISE_NS: f64 = 10.0;

fn pollers(r: &Results) -> Claim {
    let claim = "select and poll cost grows with the connections watched; epoll's does not".to_string();
    let reproduce = "`c10k bench --only wakeup`".to_string();
    let per_req = |p: &str, k: usize| m(r, "wakeup", &format!("{p}@{k}"), "rps").filter(|v| *v > 0.0).map(|v| 1e6 / v);
    // Every idle connection asked for was held (the one busy connection aside).
    let all_held = |c: &CellResult| c.median("idle_held").unwrap_or(0.0) + 1.0 >= c.cell.x.unwrap_or(0.0);
    let mut measured = Vec::new();
    let mut growth = Vec::new();
    for p in ["select", "poll", "epoll"] {
        let cells: Vec<&CellResult> =
            r.cells("wakeup").into_iter().filter(|c| c.cell.series == format!("reactor/{p}")).collect();
        let pts: Vec<String> = cells
            .iter()
            .filter_map(|c| {
                let k = c.cell.x? as usize;
                let v = per_req(p, k);
                let held = c.median("idle_held").unwrap_or(0.0);
                Some(if v.is_some() && all_held(c) {
                    format!("{} idle: {:.1} µs", thousands(k as f64), v?)
                } else {
                    format!("{} idle: impossible (held {})", thousands(k as f64), thousands(held))
                })
            })
            .collect();
        if !pts.is_empty() {
            measured.push(format!("{p}: {}", pts.join(", ")));
        }
        let max_ok = cells
            .iter()
            .filter(|c| all_held(c) && c.median("rps").unwrap_or(0.0) > 0.0)
            .filter_map(|c| c.cell.x)
            .fold(0.0, f64::max);
        // µs per request over the idle connections, times 1,000: ns per idle connection.
        if let (Some(z), Some(v)) = (per_req(p, 0), per_req(p, max_ok as usize)) {
            if max_ok > 0.0 {
                growth.push((p, (v - z) / max_ok * 1000.0, max_ok));
            }
        }
    }
    if measured.is_empty() {
        return Claim::not_measured(claim, "the wakeup suite", reproduce);
    }
    let g = |p: &str| growth.iter().find(|x| x.0 == p).map(|x| x.1);
    let v: Vec<String> = growth
        .iter()
        .map(|(p, ns, k)| format!("{p} {} ns per request per idle connection (to {})", signed(*ns), thousands(*k)))
        .collect();
    let v = v.join(", ");
    let verdict = match (g("poll"), g("epoll")) {
        (Some(p), Some(e)) if p > GROWTH_RATIO * e.max(GROWTH_NOISE_NS) => {
            Verdict::because(Outcome::Confirmed, format!("{v}; select cannot go past 1,024 descriptors at all"))
        }
        (Some(_), Some(_)) => Verdict::because(
            Outcome::NotClearlySeen,
            format!("{v} (confirmed when poll's exceeds {GROWTH_RATIO}× epoll's and {GROWTH_RATIO}× {GROWTH_NOISE_NS} ns)"),
        ),
        _ if v.is_empty() => Verdict::new(Outcome::Incomplete),
        _ => Verdict::because(Outcome::Incomplete, v),
    };
    Claim {
        claim,
        measured: format!("µs per request on one busy connection: {}", measured.join("; ")),
        verdicts: vec![verdict],
        remarks: Vec::new(),
        reproduce,
    }
}

/// A whole number with its sign, zero as `+0`: `+119`, `+0`, `-12`.
fn signed(v: f64) -> String {
    let v = v.round();
    if v == 0.0 {
        "+0".into()
    } else {
        format!("{v:+.0}")
    }
}

#[cfg(test)]
mod tests;
