//! "If you block while talking to a database, you block all the requests", judged twice:
//! on the SQLite store that sleeps in c10k (inline against offload, by ratio), and on the
//! MySQL/MariaDB and PostgreSQL servers, whose every store call first waits on a slow
//! query there (inline, offload and native, each against the query's own time).

use crate::matrix::{Database, Subject};
use crate::report::claims::{m, Claim, Outcome, Verdict};
use crate::report::us;
use crate::results::{CellResult, Results};
use crate::runner::REFUSED;

/// An inline store call stalls the other requests when the probes' p99 with it is more
/// than this many times their p99 with the call offloaded...
const STALL_RATIO: f64 = 5.0;
/// ...and more than this (µs): below it, a ratio is noise over a fast server.
const STALL_MIN_US: f64 = 2_000.0;
/// On a database server, unrelated requests are stalled when their p99 reaches this share
/// of the query each store call waits on (`--db-sleep-ms`): they waited on a query they
/// had nothing to do with. One line for inline, offload and native alike, so that noise
/// of the shared machine cannot pass for a stall, nor the lack of one for a fix.
const STALL_QUERY_SHARE: f64 = 0.5;

/// The suite's models, those with one serving thread first.
const MODELS: [&str; 4] = ["reactor", "green", "async", "threads"];
/// The database cells' modes: the blocking one, then the two that should not block.
const MODES: [&str; 3] = ["inline", "offload", "native"];

/// What one store's cells say: numbers, verdicts, remarks.
#[derive(Default)]
struct Part {
    measured: Vec<String>,
    verdicts: Vec<Verdict>,
    remarks: Vec<String>,
}

pub(super) fn database(r: &Results) -> Claim {
    let claim = "\"If you block while talking to a database, you block all the requests\"".to_string();
    let reproduce = "`c10k bench --only dbstall`".to_string();
    let parts: Vec<Part> = std::iter::once(sqlite(r)).chain(Database::ALL.map(|d| on_server(r, d))).flatten().collect();
    if parts.is_empty() {
        return Claim::not_measured(claim, "the dbstall suite", reproduce);
    }
    let mut all = Part::default();
    for p in parts {
        all.measured.extend(p.measured);
        all.verdicts.extend(p.verdicts);
        all.remarks.extend(p.remarks);
    }
    Claim { claim, measured: all.measured.join("; "), verdicts: all.verdicts, remarks: all.remarks, reproduce }
}

/// The SQLite store sleeping in c10k: inline stalls a model when its probes' p99 is over
/// [`STALL_RATIO`]× offload's and over [`STALL_MIN_US`].
fn sqlite(r: &Results) -> Option<Part> {
    let mut measured = Vec::new();
    let mut stalls = Vec::new();
    let mut fine = Vec::new();
    for model in MODELS {
        let off = m(r, "dbstall", &format!("{model}/offload"), "p99_us");
        let inl = m(r, "dbstall", &format!("{model}/inline"), "p99_us");
        if let (Some(o), Some(i)) = (off, inl) {
            measured.push(format!("{model}: healthz p99 {} inline vs {} offload", us(i), us(o)));
            if i > STALL_RATIO * o && i > STALL_MIN_US {
                stalls.push(model);
            } else {
                fine.push(model);
            }
        }
    }
    if measured.is_empty() {
        return None;
    }
    let sleep = r.cells("dbstall").iter().find_map(|c| match &c.cell.subject {
        Subject::Model { db_slow_ms: Some(ms), .. } => Some(*ms),
        _ => None,
    });
    let store = sleep.map_or("SQLite".to_string(), |ms| format!("SQLite sleeping {ms} ms in c10k per store call"));
    let slow = r
        .cells("dbstall")
        .iter()
        .find_map(|c| c.notes.iter().find(|n| n.contains("slow store")).cloned())
        .map(|n| format!(" (note: {n})"))
        .unwrap_or_default();
    let mut part = Part { measured: vec![format!("{store}: {}", measured.join(", "))], ..Part::default() };
    if stalls.is_empty() {
        part.verdicts.push(Verdict::because(
            Outcome::NotSeen,
            format!(
                "on SQLite inline store calls did not stall unrelated requests (no inline p99 over {STALL_RATIO}× its \
                 offload's and {}){slow}",
                us(STALL_MIN_US)
            ),
        ));
        return Some(part);
    }
    part.verdicts.push(Verdict::scoped(
        Outcome::Confirmed,
        format!(
            "on SQLite for {} (one serving thread: an inline store call stalls every connection)",
            stalls.join(", ")
        ),
    ));
    if !fine.is_empty() {
        part.verdicts.push(Verdict::scoped(
            Outcome::NotSeen,
            format!("on SQLite for {} (a thread per connection blocks only its own)", fine.join(", ")),
        ));
    }
    part.remarks.push(format!("offload fixes it on SQLite{slow}"));
    Some(part)
}

/// How one model fared on a database server.
enum Fared {
    /// Inline stalled, and offload and native did not.
    Stalled,
    /// Inline did not stall.
    NotStalled,
    /// Inline stalled, but so did these non-blocking modes (mode, p99).
    AllStalled(Vec<(&'static str, f64)>),
}

/// A database server's cells: each mode stalls a model when the probes' p99 reaches
/// [`STALL_QUERY_SHARE`] of the query; the claim wants inline to, and offload and native not.
fn on_server(r: &Results, database: Database) -> Option<Part> {
    let prefix = format!("{}/", database.id());
    let cells: Vec<&CellResult> = r.suites.get("dbstall")?.cells.iter().filter(|c| c.cell.id.starts_with(&prefix)).collect();
    if cells.is_empty() {
        return None;
    }
    let name = cells.iter().find_map(|c| c.database.clone()).unwrap_or_else(|| database.title().to_string());
    if !cells.iter().any(|c| c.ran()) {
        let why = cells.iter().find_map(|c| c.skipped.clone()).unwrap_or_else(|| "no cell ran".into());
        let why = why.strip_prefix("not measured: ").unwrap_or(&why).to_string();
        return Some(Part {
            measured: vec![format!("{name}: not measured")],
            verdicts: vec![Verdict::scoped(Outcome::NotMeasured, format!("on {name}")).and_because(why)],
            remarks: Vec::new(),
        });
    }
    let sleep_ms = cells
        .iter()
        .find_map(|c| match &c.cell.subject {
            Subject::Model { db_server: Some(s), .. } => Some(s.sleep_ms),
            _ => None,
        })
        .unwrap_or(0);
    let line = sleep_ms as f64 * 1000.0 * STALL_QUERY_SHARE;
    let metric = |model: &str, mode: &str, metric: &str| m(r, "dbstall", &format!("{prefix}{model}/{mode}"), metric);
    let mut measured = Vec::new();
    let mut fared: Vec<(&str, Fared)> = Vec::new();
    let mut incomplete = Vec::new();
    for model in MODELS {
        let p99: Vec<(&'static str, f64)> =
            MODES.iter().filter_map(|&mode| Some((mode, metric(model, mode, "p99_us")?))).collect();
        if p99.is_empty() {
            continue;
        }
        let shown: Vec<String> = p99
            .iter()
            .map(|&(mode, p)| {
                let posts = metric(model, mode, "post_rps").map_or("?".into(), |v| format!("{v:.0}"));
                format!("{mode} {} at {posts} posts/s", us(p))
            })
            .collect();
        measured.push(format!("{model} p99 {}", shown.join(", ")));
        let inline = p99.iter().find(|x| x.0 == "inline").map(|x| x.1);
        let others: Vec<(&'static str, f64)> = p99.iter().copied().filter(|x| x.0 != "inline").collect();
        match inline {
            Some(_) if others.is_empty() => incomplete.push(model),
            None => incomplete.push(model),
            Some(i) if i < line => fared.push((model, Fared::NotStalled)),
            Some(_) => {
                let too: Vec<(&'static str, f64)> = others.into_iter().filter(|x| x.1 >= line).collect();
                fared.push((model, if too.is_empty() { Fared::Stalled } else { Fared::AllStalled(too) }));
            }
        }
    }
    let share = format!("{:.0}% of the {sleep_ms} ms query", STALL_QUERY_SHARE * 100.0);
    let which = |pick: fn(&Fared) -> bool| -> Vec<&str> { fared.iter().filter(|f| pick(&f.1)).map(|f| f.0).collect() };
    let mut part = Part {
        measured: vec![format!("{name}, each store call waiting on a {sleep_ms} ms query: {}", measured.join("; "))],
        ..Part::default()
    };
    let stalled = which(|f| matches!(f, Fared::Stalled));
    if !stalled.is_empty() {
        part.verdicts.push(
            Verdict::scoped(Outcome::Confirmed, format!("on {name} for {}", stalled.join(", "))).and_because(format!(
                "inline, unrelated requests' p99 reached {} ({share}); offloaded or native it stayed under",
                us(line)
            )),
        );
    }
    let fine = which(|f| matches!(f, Fared::NotStalled));
    if !fine.is_empty() {
        let own = if fine == ["threads"] { " (a thread per connection blocks only its own)" } else { "" };
        part.verdicts.push(
            Verdict::scoped(Outcome::NotSeen, format!("on {name} for {}", fine.join(", ")))
                .and_because(format!("inline p99 stayed under {} ({share}){own}", us(line))),
        );
    }
    let unclear: Vec<String> = fared
        .iter()
        .filter_map(|(model, f)| match f {
            Fared::AllStalled(too) => {
                Some(format!("{model} ({})", too.iter().map(|(mode, p)| format!("{mode} {}", us(*p))).collect::<Vec<_>>().join(", ")))
            }
            _ => None,
        })
        .collect();
    if !unclear.is_empty() {
        part.verdicts.push(Verdict::scoped(Outcome::NotClearlySeen, format!("on {name}")).and_because(format!(
            "inline stalled, but offload or native reached {} too: {}",
            us(line),
            unclear.join(", ")
        )));
    }
    if !incomplete.is_empty() {
        part.verdicts.push(Verdict::scoped(Outcome::Incomplete, format!("on {name} for {}", incomplete.join(", "))));
    }
    let refused: Vec<&str> = cells
        .iter()
        .filter(|c| c.skipped.as_deref().is_some_and(|s| s.starts_with(REFUSED)))
        .map(|c| c.cell.subject.name())
        .collect();
    if !refused.is_empty() {
        part.remarks.push(format!("{} refuse native on {name} (no driver for their loop)", refused.join(", ")));
    }
    Some(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::claims::fixture::{add, results, run, Run};

    fn verdict(c: &Claim) -> String {
        c.verdict_markdown()
    }

    fn outcomes(c: &Claim) -> Vec<Outcome> {
        c.verdicts.iter().map(|v| v.outcome).collect()
    }

    /// The SQLite cells: (model, healthz p99 inline, p99 offload), in µs.
    fn sqlite_cells(ran: &[(&str, f64, f64)]) -> Results {
        let cells = ran
            .iter()
            .flat_map(|&(model, inline, offload)| {
                [run(&format!("{model}/inline"), &[("p99_us", inline)]), run(&format!("{model}/offload"), &[("p99_us", offload)])]
            })
            .collect();
        results("dbstall", cells)
    }

    /// The query the database cells wait on, and the p99 at which they count as stalled.
    const QUERY_US: f64 = crate::matrix::DB_SLEEP_MS as f64 * 1000.0;
    const LINE: f64 = QUERY_US * STALL_QUERY_SHARE;

    /// Cells on `db` named `name`: (model, mode, healthz p99 µs, posts/s).
    fn server_cells(db: &str, name: &str, ran: &[(&str, &str, f64, f64)]) -> Vec<Run> {
        ran.iter()
            .map(|&(model, mode, p99, posts)| run(&format!("{db}/{model}/{mode}"), &[("p99_us", p99), ("post_rps", posts)]).on(name))
            .collect()
    }

    /// Both servers as the claim expects them: inline stalls the one-thread models, not threads.
    fn as_claimed() -> Results {
        let mut r = Results::default();
        for (db, name) in [("mysql", "MariaDB 10.11.19"), ("postgres", "PostgreSQL 15.20")] {
            let mut cells = server_cells(
                db,
                name,
                &[
                    ("reactor", "inline", 3_900_000.0, 19.0),
                    ("reactor", "offload", 1_200.0, 78.0),
                    ("async", "inline", 4_100_000.0, 19.0),
                    ("async", "offload", 1_100.0, 79.0),
                    ("async", "native", 900.0, 301.0),
                    ("threads", "inline", 800.0, 305.0),
                    ("threads", "offload", 850.0, 79.0),
                    ("threads", "native", 820.0, 306.0),
                ],
            );
            cells.push(run(&format!("{db}/reactor/native"), &[]).on(name).skipped("refused: no driver as callbacks"));
            add(&mut r, "dbstall", cells);
        }
        r
    }

    #[test]
    fn a_blocking_store_call_stalls_a_loop_only_past_both_thresholds() {
        let c = database(&sqlite_cells(&[("reactor", 20_800.0, 621.0), ("threads", 592.0, 585.0)]));
        assert_eq!(
            verdict(&c),
            "**Confirmed** on SQLite for reactor (one serving thread: an inline store call stalls every connection); \
             **Not seen** on SQLite for threads (a thread per connection blocks only its own); offload fixes it on SQLite"
        );
        assert!(c.measured.starts_with("SQLite sleeping 20 ms in c10k per store call: reactor: healthz p99 20.8 ms inline"), "{}", c.measured);
        // At the ratio, or past it under the floor: no stall.
        for (inline, offload) in [(STALL_RATIO * 1_000.0, 1_000.0), (STALL_MIN_US, 100.0)] {
            let c = database(&sqlite_cells(&[("reactor", inline, offload)]));
            assert_eq!(outcomes(&c), [Outcome::NotSeen], "{inline} vs {offload}");
            assert!(verdict(&c).contains("(no inline p99 over 5× its offload's and 2.0 ms)"), "{}", verdict(&c));
        }
        assert_eq!(verdict(&database(&Results::default())), "not measured");
    }

    #[test]
    fn on_the_database_servers_inline_stalls_the_loops_and_offload_and_native_do_not() {
        let c = database(&as_claimed());
        let each = |name: &str| {
            format!(
                "**Confirmed** on {name} for reactor, async: inline, unrelated requests' p99 reached 25.0 ms (50% of \
                 the 50 ms query); offloaded or native it stayed under; **Not seen** on {name} for threads: inline p99 \
                 stayed under 25.0 ms (50% of the 50 ms query) (a thread per connection blocks only its own)"
            )
        };
        let remark = |name: &str| format!("reactor refuse native on {name} (no driver for their loop)");
        assert_eq!(
            verdict(&c),
            [each("MariaDB 10.11.19"), each("PostgreSQL 15.20"), remark("MariaDB 10.11.19"), remark("PostgreSQL 15.20")].join("; ")
        );
        assert!(
            c.measured.contains(
                "MariaDB 10.11.19, each store call waiting on a 50 ms query: reactor p99 inline 3.90 s at 19 posts/s, \
                 offload 1.2 ms at 78 posts/s; async p99 inline 4.10 s at 19 posts/s"
            ),
            "{}",
            c.measured
        );
    }

    #[test]
    fn the_line_is_half_the_query_for_every_mode() {
        let one = |inline: f64, offload: f64| {
            database(&results("dbstall", server_cells("postgres", "PostgreSQL 15.20", &[("green", "inline", inline, 19.0), ("green", "offload", offload, 80.0)])))
        };
        // Inline at the line stalls; just under it does not.
        assert_eq!(outcomes(&one(LINE, 1_000.0)), [Outcome::Confirmed]);
        assert_eq!(outcomes(&one(LINE - 1.0, 1_000.0)), [Outcome::NotSeen]);
        // Offload at the line too: the stall is not the inline call's alone.
        let c = one(QUERY_US * 80.0, LINE);
        assert_eq!(
            verdict(&c),
            "**Not clearly seen** on PostgreSQL 15.20: inline stalled, but offload or native reached 25.0 ms too: green (offload 25.0 ms)"
        );
        // Inline without a non-blocking mode to set beside it decides nothing.
        let c = database(&results("dbstall", server_cells("mysql", "MariaDB 10.11.19", &[("green", "inline", QUERY_US * 80.0, 19.0)])));
        assert_eq!(verdict(&c), "incomplete on MariaDB 10.11.19 for green");
    }

    #[test]
    fn an_unreachable_database_server_is_not_measured_with_the_reason() {
        let why = "not measured: no scratch database on the MySQL/MariaDB server (cannot reach the MySQL server at \
                   mysql://root@127.0.0.1:1/test: connection refused); give its URL with --mysql";
        let mut r = as_claimed();
        r.suites.get_mut("dbstall").unwrap().cells.retain(|c| !c.cell.id.starts_with("mysql/"));
        add(&mut r, "dbstall", vec![run("mysql/async/inline", &[]).skipped(why), run("mysql/async/offload", &[]).skipped(why)]);
        let c = database(&r);
        assert!(
            verdict(&c).starts_with(
                "not measured on MySQL/MariaDB: no scratch database on the MySQL/MariaDB server (cannot reach the MySQL \
                 server at mysql://root@127.0.0.1:1/test: connection refused); give its URL with --mysql; **Confirmed** \
                 on PostgreSQL 15.20 for reactor, async"
            ),
            "{}",
            verdict(&c)
        );
        assert!(c.measured.starts_with("MySQL/MariaDB: not measured; PostgreSQL 15.20, each store call"), "{}", c.measured);
    }
}
