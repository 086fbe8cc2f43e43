//! The claims of the talk and the project's goals, each turned into numbers from the
//! results and a verdict. The rules are written out here, in code, so that a verdict
//! cannot drift from the numbers beside it: where a cell is missing, the row says so.

use super::{bytes, thousands, us};
use crate::results::{CellResult, Results};

/// One row of the claims table.
pub struct Claim {
    /// The claim, quoted or paraphrased.
    pub claim: String,
    /// The numbers.
    pub measured: String,
    /// Confirmed, refuted, or not measured, with the reason.
    pub verdict: String,
    /// The bench command that reproduces it.
    pub reproduce: String,
}

/// One row of the goals table.
pub struct Goal {
    /// The goal.
    pub goal: String,
    /// The numbers.
    pub measured: String,
    /// met / missed / not measured.
    pub met: String,
    /// What limits it (measured), when missed.
    pub limits: String,
}

fn cell<'a>(r: &'a Results, suite: &str, id: &str) -> Option<&'a CellResult> {
    r.cell(suite, id)
}

fn m(r: &Results, suite: &str, id: &str, metric: &str) -> Option<f64> {
    cell(r, suite, id)?.median(metric)
}

/// The cell of `series` in `suite` that held the most, with that number.
fn most_held<'a>(r: &'a Results, suites: &[&str], series: &str) -> Option<(&'a CellResult, f64)> {
    suites
        .iter()
        .flat_map(|s| r.cells(s))
        .filter(|c| c.cell.series == series)
        .filter_map(|c| Some((c, c.median("held")?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn not_measured(what: &str) -> String {
    format!("not measured: run {what}")
}

/// Every claim, in the order of the talk.
pub fn all(r: &Results) -> Vec<Claim> {
    vec![
        ten_thousand(r),
        giant_lock(r),
        database(r),
        nginx_apache(r),
        wedged(r),
        green_cores(r),
        pollers(r),
    ]
}

fn ten_thousand(r: &Results) -> Claim {
    let mut measured = Vec::new();
    let mut verdict = Vec::new();
    let threads = most_held(r, &["capacity", "c100k"], "threads");
    let prefork = most_held(r, &["capacity"], "prefork");
    // The event-driven model that held the most (async or reactor).
    let asyn = ["async", "reactor"]
        .into_iter()
        .filter_map(|m| most_held(r, &["capacity", "c100k", "c1m"], m))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((c, held)) = threads {
        measured.push(format!(
            "threads: {} connections held with {} threads in {} process{} ({} PSS each)",
            thousands(held),
            c.median("threads_peak").map_or("?".into(), thousands),
            c.median("processes_peak").map_or("?".into(), thousands),
            if c.median("processes_peak") == Some(1.0) {
                ""
            } else {
                "es"
            },
            c.median("pss_per_conn_bytes").map_or("?".into(), bytes)
        ));
        verdict.push(if held >= 10_000.0 {
            format!(
                "**Refuted for threads** here: {} threads ran",
                thousands(c.median("threads_peak").unwrap_or(held))
            )
        } else {
            format!("threads stopped at {}", thousands(held))
        });
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
            per.map_or(String::new(), |p| format!(
                "; 10,000 would take {}",
                bytes(p * 10_000.0)
            ))
        ));
        verdict.push(if held >= 10_000.0 {
            "refuted for processes too".to_string()
        } else {
            let total = r
                .suites
                .values()
                .next()
                .map_or(0.0, |s| s.machine.mem_total_kib as f64 * 1024.0);
            match per {
                Some(p) if p * 10_000.0 < total => format!(
                    "processes: not run at 10,000, but {} for 10,000 fits in this machine's {}",
                    bytes(p * 10_000.0),
                    bytes(total)
                ),
                Some(p) => format!(
                    "processes: 10,000 would need {}, more than this machine's {}",
                    bytes(p * 10_000.0),
                    bytes(total)
                ),
                None => "processes: no memory figure".into(),
            }
        });
    }
    if let Some((c, held)) = asyn {
        measured.push(format!(
            "{}: {} held at {} PSS each",
            c.cell.series,
            thousands(held),
            c.median("pss_per_conn_bytes").map_or("?".into(), bytes)
        ));
    }
    if measured.is_empty() {
        return Claim {
            claim: "\"You can't have 10,000 threads or processes on the same box\"".into(),
            measured: not_measured("the capacity suite"),
            verdict: "not measured".into(),
            reproduce: "`c10k bench --only capacity,c100k`".into(),
        };
    }
    verdict.push("but each costs far more memory than an event-driven (async, reactor) connection".into());
    Claim {
        claim: "\"You can't have 10,000 threads or processes on the same box\"".into(),
        measured: measured.join("; "),
        verdict: verdict.join("; "),
        reproduce: "`c10k bench --only capacity,c100k,c1m --models threads,prefork,async,reactor`".into(),
    }
}

fn giant_lock(r: &Results) -> Claim {
    let get = |id: &str, metric: &str| m(r, "cpu", id, metric);
    let claim = "Threads make CPU-bound code slower under a global lock (GIL, FreeBSD's giant lock)".to_string();
    let reproduce = "`c10k bench --only cpu --models threads`".to_string();
    let (Some(f), Some(g)) = (get("threads", "cpu_rps"), get("threads+giant-lock", "cpu_rps")) else {
        return Claim { claim, measured: not_measured("the cpu suite"), verdict: "not measured".into(), reproduce };
    };
    let ratio = g / f;
    let cpu = |id: &str| get(id, "server_cpu_pct").map_or("?".into(), |v| format!("{v:.0}%"));
    let p99 = |id: &str| get(id, "p99_us").map_or("?".into(), us);
    let measured = format!(
        "{} cores: threads {f:.0} CPU-bound req/s using {} CPU, with `--giant-lock` {g:.0} ({ratio:.2}×) using {}; \
         the plaintext client beside them: p99 {} without the lock, {} with it",
        crate::machine::cpus(),
        cpu("threads"),
        cpu("threads+giant-lock"),
        p99("threads"),
        p99("threads+giant-lock")
    );
    let verdict = if ratio < 0.8 {
        format!("**Confirmed**: the lock lets one thread compute at a time, so the hashing gets one core, not all ({ratio:.2}× the throughput), and every other request queues behind it")
    } else {
        format!("**Not seen** here ({ratio:.2}×): the CPU-bound requests did not get more than one core even without the lock")
    };
    Claim { claim, measured, verdict, reproduce }
}

fn database(r: &Results) -> Claim {
    let claim = "\"If you block while talking to a database, you block all the requests\"".to_string();
    let reproduce = "`c10k bench --only dbstall`".to_string();
    let mut measured = Vec::new();
    let mut stalls = Vec::new();
    let mut fine = Vec::new();
    for model in ["reactor", "green", "async", "threads"] {
        let off = m(r, "dbstall", &format!("{model}/offload"), "p99_us");
        let inl = m(r, "dbstall", &format!("{model}/inline"), "p99_us");
        if let (Some(o), Some(i)) = (off, inl) {
            measured.push(format!("{model}: healthz p99 {} inline vs {} offload", us(i), us(o)));
            if i > 5.0 * o && i > 2000.0 {
                stalls.push(model);
            } else {
                fine.push(model);
            }
        }
    }
    if measured.is_empty() {
        return Claim {
            claim,
            measured: not_measured("the dbstall suite"),
            verdict: "not measured".into(),
            reproduce,
        };
    }
    let slow = r
        .cells("dbstall")
        .iter()
        .find_map(|c| c.notes.iter().find(|n| n.contains("slow store")).cloned())
        .map(|n| format!(" (note: {n})"))
        .unwrap_or_default();
    let verdict = match (stalls.is_empty(), fine.is_empty()) {
        (false, _) => format!(
            "**Confirmed** for {} (one serving thread: an inline store call stalls every connection){}; offload fixes it{}",
            stalls.join(", "),
            if fine.is_empty() { String::new() } else { format!("; not for {} (a thread per connection blocks only its own)", fine.join(", ")) },
            slow
        ),
        (true, _) => format!("**Not seen**: inline store calls did not stall unrelated requests here{slow}"),
    };
    Claim {
        claim,
        measured: measured.join("; "),
        verdict,
        reproduce,
    }
}

fn nginx_apache(r: &Results) -> Claim {
    let claim = "nginx (asynchronous) against Apache (processes, threads): throughput and idle connections".to_string();
    let reproduce = "`c10k bench --only plaintext,idle`".to_string();
    let rps = |s: &str| m(r, "plaintext", s, "rps");
    let mut measured = Vec::new();
    let names = ["nginx", "apache-prefork", "apache-event", "async", "threads", "prefork"];
    let shown: Vec<String> = names
        .iter()
        .filter_map(|n| Some(format!("{n} {}", thousands(rps(n)?))))
        .collect();
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
        return Claim {
            claim,
            measured: not_measured("the plaintext and idle suites"),
            verdict: "not measured".into(),
            reproduce,
        };
    }
    let nginx = rps("nginx");
    let apache = [rps("apache-prefork"), rps("apache-event")]
        .into_iter()
        .flatten()
        .reduce(f64::max);
    let nginx_held = most_held(r, &["idle"], "nginx").map(|x| x.1);
    let prefork_held = most_held(r, &["idle"], "apache-prefork").map(|x| x.1);
    let mut v = Vec::new();
    if let (Some(n), Some(a)) = (nginx, apache) {
        v.push(if n > a {
            format!("**Confirmed** for throughput: nginx {:.1}× the better Apache", n / a)
        } else {
            format!("**Not seen** for throughput: nginx {:.2}× the better Apache", n / a)
        });
    }
    if let (Some(n), Some(p)) = (nginx_held, prefork_held) {
        v.push(if n > p {
            format!(
                "**confirmed** for idle connections: Apache prefork holds one per process ({} here)",
                thousands(p)
            )
        } else {
            "idle: no difference seen".into()
        });
    }
    if let (Some(a), Some(t)) = (rps("async"), rps("threads")) {
        v.push(format!("our async serves {:.2}× our threads", a / t));
    }
    Claim {
        claim,
        measured: measured.join("; "),
        verdict: if v.is_empty() {
            "incomplete".into()
        } else {
            v.join("; ")
        },
        reproduce,
    }
}

fn wedged(r: &Results) -> Claim {
    let claim = "\"If one program gets wedged, the whole system is wedged\" (non-preemptive loops)".to_string();
    let reproduce = "`c10k bench --only cpu`".to_string();
    let p99 = |s: &str| m(r, "cpu", s, "p99_us");
    let shown: Vec<String> = ["reactor", "green", "threads", "async"]
        .iter()
        .filter_map(|s| Some(format!("{s} {}", us(p99(s)?))))
        .collect();
    if shown.is_empty() {
        return Claim {
            claim,
            measured: not_measured("the cpu suite"),
            verdict: "not measured".into(),
            reproduce,
        };
    }
    let measured = format!("plaintext p99 while `/cpu` requests run: {}", shown.join(", "));
    let verdict = match (p99("reactor").or(p99("green")), p99("threads")) {
        (Some(loop_p99), Some(t)) if loop_p99 > 3.0 * t => format!(
            "**Confirmed**: on the single-threaded loop every request waits behind the hashing ({:.0}× the threads model's p99)",
            loop_p99 / t
        ),
        (Some(loop_p99), Some(t)) => format!("**Not clearly seen** ({:.1}× threads' p99)", loop_p99 / t),
        _ => "incomplete".into(),
    };
    Claim {
        claim,
        measured,
        verdict,
        reproduce,
    }
}

fn green_cores(r: &Results) -> Claim {
    let claim = "Green threads can't use several CPUs; Erlang maps them onto OS threads".to_string();
    let reproduce = "`c10k bench --only cpu --models green,async`".to_string();
    let cpu = |s: &str| m(r, "cpu", s, "cpu_rps");
    match (cpu("green"), cpu("green×2"), cpu("async")) {
        (Some(g), g2, a) => {
            let measured = format!(
                "CPU-bound req/s on {} cores: green {g:.0}, green --workers 2 {}, async (2 threads) {}",
                crate::machine::cpus(),
                g2.map_or("?".into(), |v| format!("{v:.0}")),
                a.map_or("?".into(), |v| format!("{v:.0}"))
            );
            let verdict = match (g2, a) {
                (Some(g2), Some(a)) if g2 > 1.5 * g && a > 1.5 * g => format!(
                    "**Confirmed**: one loop uses one core; two processes ({:.1}×) or a work-stealing scheduler over OS threads ({:.1}×) use both",
                    g2 / g,
                    a / g
                ),
                (Some(g2), Some(a)) => format!("**Not clearly seen**: green×2 {:.2}×, async {:.2}× green", g2 / g, a / g),
                _ => "incomplete".into(),
            };
            Claim {
                claim,
                measured,
                verdict,
                reproduce,
            }
        }
        _ => Claim {
            claim,
            measured: not_measured("the cpu suite"),
            verdict: "not measured".into(),
            reproduce,
        },
    }
}

fn pollers(r: &Results) -> Claim {
    let claim = "select and poll cost grows with the connections watched; epoll's does not".to_string();
    let reproduce = "`c10k bench --only wakeup`".to_string();
    let per_req = |p: &str, k: usize| {
        m(r, "wakeup", &format!("{p}@{k}"), "rps")
            .filter(|v| *v > 0.0)
            .map(|v| 1e6 / v)
    };
    let mut measured = Vec::new();
    let mut growth = Vec::new();
    for p in ["select", "poll", "epoll"] {
        let cells: Vec<&CellResult> = r
            .cells("wakeup")
            .into_iter()
            .filter(|c| c.cell.series == format!("reactor/{p}"))
            .collect();
        let pts: Vec<String> = cells
            .iter()
            .filter_map(|c| {
                let k = c.cell.x? as usize;
                let v = per_req(p, k);
                let held = c.median("idle_held").unwrap_or(0.0);
                Some(if v.is_some() && held + 1.0 >= k as f64 {
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
            .filter(|c| {
                c.median("idle_held").unwrap_or(0.0) + 1.0 >= c.cell.x.unwrap_or(0.0)
                    && c.median("rps").unwrap_or(0.0) > 0.0
            })
            .filter_map(|c| c.cell.x)
            .fold(0.0, f64::max);
        if let (Some(z), Some(v)) = (per_req(p, 0), per_req(p, max_ok as usize)) {
            if max_ok > 0.0 {
                growth.push((p, (v - z) / max_ok * 1000.0, max_ok));
            }
        }
    }
    if measured.is_empty() {
        return Claim {
            claim,
            measured: not_measured("the wakeup suite"),
            verdict: "not measured".into(),
            reproduce,
        };
    }
    let g = |p: &str| growth.iter().find(|x| x.0 == p).map(|x| x.1);
    let mut v = Vec::new();
    for (p, ns, k) in &growth {
        v.push(format!(
            "{p} +{ns:.0} ns per request per 1,000 idle (to {})",
            thousands(*k)
        ));
    }
    let verdict = match (g("poll"), g("epoll")) {
        (Some(p), Some(e)) if p > 3.0 * e.max(10.0) => format!(
            "**Confirmed**: {}; select cannot go past 1,024 descriptors at all",
            v.join(", ")
        ),
        (Some(_), Some(_)) => format!("**Not clearly seen**: {}", v.join(", ")),
        _ => format!("incomplete: {}", v.join(", ")),
    };
    Claim {
        claim,
        measured: format!("µs per request on one busy connection: {}", measured.join("; ")),
        verdict,
        reproduce,
    }
}

/// The goals, each met or missed.
pub fn goals(r: &Results, baseline: &str) -> Vec<Goal> {
    let mut out = Vec::new();

    out.push(plaintext_goal(r, baseline));
    out.push(generators_agree(r));

    // Long-poll fan-out to 10,000.
    // The best of our models' paced runs at the top size (the lowest p99).
    let top = r
        .cells("fanout")
        .into_iter()
        .filter_map(|c| c.cell.x)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        .unwrap_or(10_000.0);
    let paced = r
        .cells("fanout")
        .into_iter()
        .filter(|c| c.cell.series.ends_with(" (paced)") && !c.cell.subject.is_peer() && c.cell.x == Some(top))
        .filter(|c| c.median("p99_us").is_some())
        .min_by(|a, b| a.median("p99_us").unwrap_or(f64::INFINITY).total_cmp(&b.median("p99_us").unwrap_or(f64::INFINITY)));
    let model = paced.map_or("async".to_string(), |p| p.cell.series.trim_end_matches(" (paced)").to_string());
    // The fastest of our models back to back at the top size, for the ratio to Tornado.
    let fastest = r
        .cells("fanout")
        .into_iter()
        .filter(|c| !c.cell.series.ends_with(" (paced)") && !c.cell.subject.is_peer() && c.cell.x == Some(top))
        .filter(|c| c.median("deliveries_per_s").is_some())
        .max_by(|a, b| a.median("deliveries_per_s").unwrap_or(0.0).total_cmp(&b.median("deliveries_per_s").unwrap_or(0.0)));
    let fastest_model = fastest.map_or(model.clone(), |c| c.cell.series.clone());
    let tornado = r
        .cells("fanout")
        .into_iter()
        .find(|c| c.cell.series == "tornado" && c.cell.x == Some(top));
    out.push(match paced {
        Some(p) => {
            let complete = p.median("misses") == Some(0.0) && p.problems().is_empty();
            let p99 = p.median("p99_us").unwrap_or(f64::INFINITY);
            let speed = match (
                fastest.and_then(|c| c.median("deliveries_per_s")),
                tornado.and_then(|c| c.median("deliveries_per_s")),
            ) {
                (Some(a), Some(t)) if t > 0.0 => Some((a, t, a / t)),
                _ => None,
            };
            let met = complete && p99 <= 30_000.0 && speed.is_some_and(|s| s.2 >= 50.0);
            let mut limits = Vec::new();
            if !complete {
                limits.push(format!("not fully delivered: {}", p.problems().join("; ")));
            }
            if p99 > 30_000.0 {
                // The floor set by the server's CPU: a paced delivery is one HTTP exchange on
                // a kept-alive connection (the response, then the client's next poll), the
                // work of one plaintext request; the 99th percentile subscriber of a post waits
                // behind 99% of the round. The plaintext cell of the same model gives the CPU
                // one exchange costs (one request in flight per connection, server saturated).
                let floor = r.cells("plaintext").into_iter().find(|c| c.cell.series == model).and_then(|c| {
                    let cpu = c.median("server_cpu_pct")? / 100.0;
                    let rate = c.median("rps")?;
                    (rate > 0.0).then(|| (cpu / rate * 1e6, cpu / rate * 0.99 * top * 1e6))
                });
                limits.push(format!(
                    "p99 {} > 30 ms: {}{}",
                    us(p99),
                    floor.map_or(String::new(), |(each, round)| format!(
                        "a paced delivery is one HTTP exchange (a response, then the next poll), and one \
                         exchange costs {model} {each:.1} µs of server CPU (its plaintext run), so the 99th \
                         percentile subscriber of one post waits behind at least {} of server work{}; ",
                        us(round),
                        if round > 30_000.0 { ", more than the goal by itself" } else { "" }
                    )),
                    limit_text(r, "fanout", &format!("{model}@{}/paced", top as u64))
                ));
            }
            if let Some((_, _, x)) = speed {
                if x < 50.0 {
                    limits.push(format!(
                        "only {x:.1}× Tornado: {}",
                        limit_text(r, "fanout", &format!("{fastest_model}@{}", top as u64))
                    ));
                }
            }
            Goal {
                goal: format!(
                    "long-poll fan-out to {} subscribers fully delivered, p99 ≤ 30 ms, ≥ 50× Tornado's deliveries/s",
                    thousands(top)
                ),
                measured: format!(
                    "best paced: {model}, {} of {} delivered, p99 {}; fastest back to back: {fastest_model}, {}",
                    p.median("delivered").map_or("?".into(), thousands),
                    p.median("expected").map_or("?".into(), thousands),
                    us(p99),
                    speed.map_or("no Tornado figure".into(), |(a, t, x)| format!(
                        "{} deliveries/s vs Tornado {} ({x:.0}×)",
                        thousands(a),
                        thousands(t)
                    ))
                ),
                met: if met { "**met**".into() } else { "**missed**".into() },
                limits: limits.join("; "),
            }
        }
        None => Goal {
            goal: "long-poll fan-out to 10,000 subscribers, p99 ≤ 30 ms, ≥ 50× Tornado".into(),
            measured: not_measured("the fanout suite"),
            met: "not measured".into(),
            limits: String::new(),
        },
    });

    // WebSocket deliveries.
    let ws = r
        .cells("ws")
        .into_iter()
        .filter_map(|c| Some((c, c.median("deliveries_per_s")?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    out.push(match ws {
        Some((c, v)) => Goal {
            goal: "≥ 1,000,000 WebSocket deliveries per second".into(),
            measured: format!(
                "best: {} with {} subscribers, {} deliveries/s (p99 {})",
                c.cell.series,
                thousands(c.cell.x.unwrap_or(0.0)),
                thousands(v),
                c.median("p99_us").map_or("?".into(), us)
            ),
            met: if v >= 1e6 {
                "**met**".into()
            } else {
                "**missed**".into()
            },
            limits: if v >= 1e6 {
                String::new()
            } else {
                limit_text(r, "ws", &c.cell.id)
            },
        },
        None => Goal {
            goal: "≥ 1,000,000 WebSocket deliveries per second".into(),
            measured: not_measured("the ws suite"),
            met: "not measured".into(),
            limits: String::new(),
        },
    });

    // 100,000 subscribers at ≤ 2 KiB each.
    let c100 = r.cells("c100k");
    let best = c100
        .iter()
        .filter_map(|c| Some((*c, c.median("held")?)))
        .max_by(|a, b| {
            let pa = a.0.median("pss_per_conn_bytes").unwrap_or(f64::INFINITY);
            let pb = b.0.median("pss_per_conn_bytes").unwrap_or(f64::INFINITY);
            a.1.total_cmp(&b.1).then(pb.total_cmp(&pa))
        });
    let furthest = r
        .cells("c1m")
        .into_iter()
        .chain(c100.iter().copied())
        .filter_map(|c| Some((c, c.median("held")?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    out.push(match best {
        Some((c, held)) => {
            let per = c.median("pss_per_conn_bytes").unwrap_or(f64::INFINITY);
            let met = held >= 100_000.0 && per <= 2048.0;
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
            Goal {
                goal: "100,000 concurrent subscribers at ≤ 2 KiB of user-space memory each; how far toward 1,000,000"
                    .into(),
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
                met: if met {
                    format!("**met** ({})", c.cell.series)
                } else {
                    "**missed**".into()
                },
                limits: {
                    // Per model: short of the count (and why), or over the memory.
                    let mut l = Vec::new();
                    for x in &c100 {
                        let (Some(h), Some(p)) = (x.median("held"), x.median("pss_per_conn_bytes")) else { continue };
                        if h < 100_000.0 {
                            let why: Vec<String> = x
                                .samples
                                .iter()
                                .flat_map(|s| s.errors.iter().map(|(k, v)| format!("{} {k}", thousands(*v as f64))))
                                .collect();
                            l.push(format!(
                                "{} held {} ({}): refused or failed connections, see the c100k table",
                                x.cell.series,
                                thousands(h),
                                why.join(", ")
                            ));
                        }
                        if p > 2048.0 {
                            l.push(format!("{} keeps {} per idle connection (see the analysis for where)", x.cell.series, bytes(p)));
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
                        l.push(format!("toward 1M: {}", stops.join("; ")));
                    }
                    l.join("; ")
                },
            }
        }
        None => Goal {
            goal: "100,000 concurrent subscribers at ≤ 2 KiB each".into(),
            measured: not_measured("the c100k suite"),
            met: "not measured".into(),
            limits: String::new(),
        },
    });
    out
}

/// The plaintext goal, from two runs of the plaintext suite: one request in flight per
/// connection and pipelined batches. Judged on the pipelined run when there is one: with
/// one request in flight, the client's write and read per request saturate its core
/// before the server's (the raw floor then comes out below nginx), so that run measures
/// the generator; pipelined, the server's own cost per request sets the rate.
fn plaintext_goal(r: &Results, baseline: &str) -> Goal {
    let goal = format!("plaintext ≥ 1.2× {baseline} and ≥ 0.85× the raw floor");
    let cells = r.cells("plaintext");
    // One run's figures: the best model, the baseline and the raw floor.
    let figures = |pipelined: bool| {
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
    let line = |((c, v), b, w): ((&CellResult, f64), f64, f64)| {
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
    let meets = |((_, v), b, w): ((&CellResult, f64), f64, f64)| v >= 1.2 * b && v >= 0.85 * w;
    match (figures(true), figures(false)) {
        (Some(p), one) => {
            let ((best, v), _, w) = p;
            let depth = best.cell.pipeline();
            let met = meets(p);
            let floor = floor_bound(&cells);
            // A raw figure below the floor's capacity cannot confirm the 0.85× part.
            let verdict = match (met, floor.is_empty()) {
                (true, false) => format!(
                    "**not established**: {:.2}× raw, but the raw figure is below what the floor can serve (see \
                     what limits it); judged on the pipelined run",
                    v / w
                ),
                (true, true) => "**met**, judged on the pipelined run".to_string(),
                (false, _) => "**missed**, judged on the pipelined run".to_string(),
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
                met: format!(
                    "{verdict}, where the server's cost, not the client's syscalls, sets the rate{}",
                    match one {
                        Some(o) if meets(o) != met => {
                            format!(" (one in flight it would be {})", if meets(o) { "met" } else { "missed" })
                        }
                        _ => String::new(),
                    }
                ),
                limits: format!(
                    "pipelined ({}): {}{}{one_limit}",
                    best.cell.id,
                    limit_text(r, "plaintext", &best.cell.id),
                    floor
                ),
            }
        }
        (None, Some(o)) => {
            let ((best, _), _, _) = o;
            let met = meets(o);
            Goal {
                goal,
                measured: format!("one in flight: {} (no pipelined run: the client may be the limit)", line(o)),
                met: if met { "**met**".into() } else { "**missed**".into() },
                limits: if met {
                    String::new()
                } else {
                    limit_text(r, "plaintext", &best.cell.id)
                },
            }
        }
        (None, None) => Goal {
            goal,
            measured: not_measured("the plaintext suite (with nginx and raw)"),
            met: "not measured".into(),
            limits: String::new(),
        },
    }
}

/// When the pipelined raw floor did not saturate its server core, its figure is not what
/// the floor can serve (its client ran out of CPU, or other work had the machine), so the
/// ratio to it is an upper bound; said with the CPU figures that show it.
fn floor_bound(cells: &[&CellResult]) -> String {
    let Some(raw) = cells.iter().find(|c| c.cell.pipeline() > 1 && c.cell.subject.name() == "raw") else {
        return String::new();
    };
    let (Some(sv), Some(cl)) = (raw.median("server_cpu_pct"), raw.median("client_cpu_pct")) else {
        return String::new();
    };
    let (sc, cc) = (cores(&raw.server_cpus), cores(&raw.client_cpus));
    if raw.server_cpus.is_none() || sv >= 85.0 * sc {
        return String::new();
    }
    let why = if cl >= 85.0 * cc {
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
fn generators_agree(r: &Results) -> Goal {
    let goal = format!(
        "c10k load's plaintext req/s within {:.0}% of wrk's on every server (the generator is not the limit)",
        AGREE * 100.0
    );
    let cells: Vec<&CellResult> = r.cells("plaintext").into_iter().filter(|c| c.wrk.is_some()).collect();
    if cells.is_empty() {
        return Goal {
            goal,
            measured: not_measured("the plaintext suite, which runs wrk against every server"),
            met: "not measured".into(),
            limits: String::new(),
        };
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
            met: "not measured".into(),
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
    let met = match (apart.is_empty(), missing.is_empty()) {
        (true, true) => "**met**".to_string(),
        (true, false) => format!("**met** on the {} servers with both figures", pairs.len()),
        (false, _) => format!("**missed** on {} of {}", apart.len(), pairs.len()),
    };
    let limits: Vec<String> = apart
        .iter()
        .map(|(c, ours, theirs, x)| {
            let w = c.wrk.as_ref().expect("filtered on wrk");
            let cc = cores(&c.client_cpus);
            let ours_cpu = c.median("client_cpu_pct");
            let wrk_cpu = w.metric("client_cpu_pct");
            let bound = |name: &str, v: Option<f64>| {
                v.filter(|v| *v >= 85.0 * cc)
                    .map(|v| format!("; {name} was client-bound ({v:.0}% of {cc:.0} core{})", if cc == 1.0 { "" } else { "s" }))
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
    Goal {
        goal,
        measured,
        met,
        limits: limits.join("; "),
    }
}

/// Cores in a pinning (`1`, `1-3`, `0,2`); all of the machine's when unpinned.
fn cores(pin: &Option<String>) -> f64 {
    match pin {
        None => crate::machine::cpus() as f64,
        Some(p) => crate::machine::parse_cpu_list(p).map_or(1.0, |n| n as f64),
    }
}

/// Which side ran out of CPU: the server's and the client's use against the cores each had.
fn cpu_text(c: &CellResult) -> String {
    let (Some(sv), Some(cl)) = (c.median("server_cpu_pct"), c.median("client_cpu_pct")) else {
        return String::new();
    };
    let (sc, cc) = (cores(&c.server_cpus), cores(&c.client_cpus));
    let pinned = c.server_cpus.is_some();
    let bound = if pinned && sv >= 85.0 * sc && cl >= 85.0 * cc {
        "both sides saturated their cores"
    } else if pinned && sv >= 85.0 * sc {
        "server-bound"
    } else if pinned && cl >= 85.0 * cc {
        "client-bound: the load generator ran out of CPU first"
    } else if !pinned && sv + cl >= 85.0 * crate::machine::cpus() as f64 {
        "the machine's CPUs were saturated (server and client share them)"
    } else {
        "neither side saturated its CPUs"
    };
    let paced = if c.cell.id.ends_with("/paced") {
        " (averaged over a paced run, which idles between posts: each post is a burst)"
    } else {
        ""
    };
    format!(
        "server used {sv:.0}% of {sc:.0} core{}, client {cl:.0}% of {cc:.0}{paced}: {bound}",
        if sc == 1.0 { "" } else { "s" }
    )
}

/// What limits a cell: which side ran out of CPU, and the top of its perf profile.
fn limit_text(r: &Results, suite: &str, id: &str) -> String {
    let Some(c) = r.suites.get(suite).and_then(|s| s.cells.iter().find(|c| c.cell.id == id)) else {
        return "see the analysis".into();
    };
    let cpu = cpu_text(c);
    let cpu = if cpu.is_empty() { String::new() } else { format!("{cpu}; ") };
    if c.profile.is_empty() {
        return format!("{cpu}not profiled (run with --perf); see the analysis");
    }
    let top: Vec<String> = c.profile.iter().take(4).map(|l| format!("`{l}`")).collect();
    format!("{cpu}hottest in the server: {} (see perf below and the analysis)", top.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{suites, Scale};
    use crate::results::{Sample, SuiteRun};

    /// The plaintext suite with these cells run: (id, req/s, server CPU %, client CPU %).
    fn plaintext(ran: &[(&str, f64, f64, f64)]) -> Results {
        let scale = Scale { quick: false, duration: 5.0, repeats: 3 };
        let cells = suites(scale)
            .into_iter()
            .filter(|c| c.suite == "plaintext")
            .filter_map(|cell| {
                let &(_, rps, server, client) = ran.iter().find(|r| r.0 == cell.id)?;
                let metrics = [("rps", rps), ("server_cpu_pct", server), ("client_cpu_pct", client)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                Some(CellResult {
                    cell,
                    server_command: None,
                    load_command: None,
                    server_cpus: Some("0".into()),
                    client_cpus: Some("1".into()),
                    skipped: None,
                    samples: vec![Sample { metrics, ..Sample::default() }],
                    notes: Vec::new(),
                    profile: Vec::new(),
                    loadavg: None,
                    started_unix_ms: 0,
                    wrk: None,
                })
            })
            .collect();
        let mut r = Results::default();
        r.merge(SuiteRun {
            suite: "plaintext".into(),
            quick: false,
            machine: Default::default(),
            command: String::new(),
            cells,
        });
        r
    }

    /// The numbers of issue 5: one in flight, the client's core runs out first.
    const ONE_IN_FLIGHT: [(&str, f64, f64, f64); 4] = [
        ("reactor", 146_907.0, 80.0, 99.0),
        ("async", 140_000.0, 85.0, 99.0),
        ("nginx", 148_617.0, 75.0, 99.0),
        ("raw", 125_296.0, 40.0, 99.0),
    ];

    #[test]
    fn the_plaintext_goal_is_judged_on_the_pipelined_run_and_reports_both() {
        let mut ran = ONE_IN_FLIGHT.to_vec();
        ran.extend([
            ("reactor/pipelined16", 600_000.0, 99.0, 60.0),
            ("async/pipelined16", 640_000.0, 99.0, 62.0),
            ("nginx/pipelined16", 250_000.0, 99.0, 30.0),
            ("raw/pipelined16", 700_000.0, 99.0, 70.0),
        ]);
        let g = plaintext_goal(&plaintext(&ran), "nginx");
        assert!(
            g.measured.starts_with(
                "pipelined 16 (16 requests in flight on each connection): best model async: 640,000 req/s = \
                 2.56× nginx (250,000), 0.91× raw (700,000); one in flight: best model reactor: 146,907 req/s = \
                 0.99× nginx (148,617), 1.17× raw (125,296)"
            ),
            "{}",
            g.measured
        );
        assert_eq!(
            g.met,
            "**met**, judged on the pipelined run, where the server's cost, not the client's syscalls, sets the \
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
    fn a_pipelined_model_short_of_the_raw_floor_misses() {
        let mut ran = ONE_IN_FLIGHT.to_vec();
        ran.extend([
            ("reactor/pipelined16", 600_000.0, 99.0, 60.0),
            ("nginx/pipelined16", 250_000.0, 99.0, 30.0),
            ("raw/pipelined16", 1_800_000.0, 70.0, 99.0),
        ]);
        let g = plaintext_goal(&plaintext(&ran), "nginx");
        assert!(
            g.measured.contains("best model reactor: 600,000 req/s = 2.40× nginx (250,000), 0.33× raw (1,800,000)"),
            "{}",
            g.measured
        );
        assert!(g.met.starts_with("**missed**, judged on the pipelined run"), "{}", g.met);
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
        let mut ran = ONE_IN_FLIGHT.to_vec();
        ran.extend([
            ("green/pipelined16", 1_026_023.0, 99.0, 66.0),
            ("nginx/pipelined16", 280_911.0, 99.0, 86.0),
            ("raw/pipelined16", 996_437.0, 45.0, 57.0),
        ]);
        let g = plaintext_goal(&plaintext(&ran), "nginx");
        assert!(g.met.starts_with("**not established**: 1.03× raw, but the raw figure is below"), "{}", g.met);
        assert!(g.limits.contains("other work on the machine had it"), "{}", g.limits);
    }

    #[test]
    fn without_a_pipelined_run_the_goal_falls_back_to_one_in_flight_and_says_so() {
        let g = plaintext_goal(&plaintext(&ONE_IN_FLIGHT), "nginx");
        assert!(g.measured.starts_with("one in flight: best model reactor: 146,907 req/s"), "{}", g.measured);
        assert!(g.measured.contains("no pipelined run"), "{}", g.measured);
        assert_eq!(g.met, "**missed**");
        assert!(g.limits.contains("client-bound"), "{}", g.limits);
        assert_eq!(plaintext_goal(&Results::default(), "nginx").met, "not measured");
    }
}
