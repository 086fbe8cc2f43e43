//! One group per claim: what confirms it, what falls short of its threshold, and what
//! happens without its cells.

use super::super::fixture::{add, results, run};
use super::*;

const KIB: f64 = 1024.0;

fn verdict(c: &Claim) -> String {
    c.verdict_markdown()
}

fn outcomes(c: &Claim) -> Vec<Outcome> {
    c.verdicts.iter().map(|v| v.outcome).collect()
}

/// Capacity: threads and prefork holding these many, async 18,000 at 2 KiB each, on a
/// machine with 8 GiB.
fn capacity(threads: f64, threads_pss: f64, prefork: f64) -> Results {
    let mut r = results(
        "capacity",
        vec![
            run("threads@18000", &[("held", threads), ("threads_peak", threads + 10.0), ("processes_peak", 1.0), ("pss_per_conn_bytes", threads_pss)]),
            run("prefork@2000", &[("held", prefork), ("processes_peak", prefork + 3.0), ("pss_total_per_conn_bytes", 484.0 * KIB)]),
            run("async@18000", &[("held", 18_000.0), ("pss_per_conn_bytes", 2.0 * KIB)]),
        ],
    );
    r.suites.get_mut("capacity").unwrap().machine.mem_total_kib = 8 * 1024 * 1024;
    r
}

#[test]
fn ten_thousand_threads_refute_the_claim_and_their_memory_is_compared() {
    let c = ten_thousand(&capacity(18_000.0, 28.0 * KIB, 2_000.0));
    assert_eq!(c.claim, "\"You can't have 10,000 threads or processes on the same box\"");
    assert_eq!(
        verdict(&c),
        "**Refuted** for threads here: 18,010 threads ran; processes: not run at 10,000, but 4.6 GiB for 10,000 \
         fits in this machine's 8.0 GiB; but each costs far more memory than an event-driven (async, reactor) \
         connection (threads 14×, processes 242× async's)"
    );
    assert!(c.measured.starts_with("threads: 18,000 connections held with 18,010 threads in 1 process (28.0 KiB PSS each)"), "{}", c.measured);
    // Ten thousand processes too.
    assert_eq!(outcomes(&ten_thousand(&capacity(18_000.0, 28.0 * KIB, TEN_THOUSAND))), [Outcome::Refuted, Outcome::Refuted]);
}

#[test]
fn threads_short_of_ten_thousand_confirm_it_and_memory_under_far_more_is_only_a_figure() {
    let c = ten_thousand(&capacity(TEN_THOUSAND - 1.0, FAR_MORE * 2.0 * KIB - 1.0, 2_000.0));
    assert_eq!(c.verdicts[0].markdown(), "**Confirmed** for threads here: they stopped at 9,999");
    assert_eq!(c.remarks[1], "memory per connection against async's: threads 4×, processes 242×");
    let c = ten_thousand(&capacity(TEN_THOUSAND, FAR_MORE * 2.0 * KIB, 2_000.0));
    assert_eq!(c.verdicts[0].outcome, Outcome::Refuted);
    assert!(c.remarks[1].starts_with("but each costs far more memory"), "{}", c.remarks[1]);
}

#[test]
fn ten_thousand_without_threads_or_processes_is_not_decided() {
    let c = ten_thousand(&Results::default());
    assert_eq!((verdict(&c).as_str(), c.measured.as_str()), ("not measured", "not measured: run the capacity suite"));
    assert_eq!(c.reproduce, ten_thousand(&capacity(1.0, 1.0, 1.0)).reproduce, "the same command either way");
    // An event-driven model alone says nothing about threads' memory.
    let c = ten_thousand(&results("c1m", vec![run("reactor@1000000", &[("held", 1e6), ("pss_per_conn_bytes", 1_843.0)])]));
    assert_eq!(verdict(&c), "incomplete");
}

/// The cpu suite: CPU-bound req/s and plaintext p99 (µs) of these cells.
fn cpu(ran: &[(&str, f64, f64)]) -> Results {
    let cells = ran.iter().map(|&(id, rps, p99)| run(id, &[("cpu_rps", rps), ("p99_us", p99), ("server_cpu_pct", 100.0)])).collect();
    results("cpu", cells)
}

#[test]
fn the_giant_lock_is_confirmed_below_its_ratio_and_not_seen_at_it() {
    let c = giant_lock(&cpu(&[("threads", 400.0), ("threads+giant-lock", 400.0 * GIANT_LOCK_SLOWER - 1.0)].map(|(i, r)| (i, r, 1_000.0))));
    assert_eq!(outcomes(&c), [Outcome::Confirmed]);
    assert!(verdict(&c).contains("(0.80× the throughput)"), "{}", verdict(&c));
    let c = giant_lock(&cpu(&[("threads", 400.0), ("threads+giant-lock", 400.0 * GIANT_LOCK_SLOWER)].map(|(i, r)| (i, r, 1_000.0))));
    assert!(verdict(&c).starts_with("**Not seen** here (0.80×, not below 0.8×): "), "{}", verdict(&c));
    assert_eq!(verdict(&giant_lock(&cpu(&[("threads", 400.0, 1_000.0)]))), "not measured");
    // The cores are those of the machine the suite ran on.
    let mut r = cpu(&[("threads", 400.0, 1_000.0), ("threads+giant-lock", 100.0, 1_000.0)]);
    r.suites.get_mut("cpu").unwrap().machine.cpus = 8;
    assert!(giant_lock(&r).measured.starts_with("8 cores: threads 400 CPU-bound req/s using 100% CPU"), "{}", giant_lock(&r).measured);
}

#[test]
fn a_loop_wedged_by_cpu_work_is_confirmed_above_its_ratio_to_threads() {
    let c = wedged(&cpu(&[("reactor", 1.0, 30_000.0), ("threads", 1.0, 1_000.0)]));
    assert_eq!(
        verdict(&c),
        "**Confirmed**: on the single-threaded loop every request waits behind the hashing (30× the threads model's p99)"
    );
    let c = wedged(&cpu(&[("green", 1.0, WEDGED_RATIO * 1_000.0), ("threads", 1.0, 1_000.0)]));
    assert_eq!(verdict(&c), "**Not clearly seen** (3.0× threads' p99, not above 3×)");
    assert_eq!(verdict(&wedged(&cpu(&[("reactor", 1.0, 30_000.0)]))), "incomplete");
    assert_eq!(verdict(&wedged(&Results::default())), "not measured");
}

#[test]
fn green_threads_on_one_core_are_confirmed_when_both_ways_out_scale_past_the_ratio() {
    let just = SCALING * 200.0;
    let c = green_cores(&cpu(&[("green", 200.0, 1.0), ("green×2", just + 1.0, 1.0), ("async", just + 1.0, 1.0)]));
    assert_eq!(outcomes(&c), [Outcome::Confirmed]);
    assert!(verdict(&c).contains("two processes (1.5×) or a work-stealing scheduler over OS threads (1.5×) use both"));
    let c = green_cores(&cpu(&[("green", 200.0, 1.0), ("green×2", just, 1.0), ("async", 400.0, 1.0)]));
    assert_eq!(verdict(&c), "**Not clearly seen**: green×2 1.50×, async 2.00× green (confirmed above 1.5× each)");
    assert_eq!(verdict(&green_cores(&cpu(&[("green", 200.0, 1.0)]))), "incomplete");
    assert_eq!(verdict(&green_cores(&cpu(&[("async", 200.0, 1.0)]))), "not measured");
}

#[test]
fn nginx_against_apache_judges_throughput_and_idle_connections_apart() {
    let mut r = results(
        "plaintext",
        ["nginx", "apache-prefork", "apache-event", "async", "threads"]
            .iter()
            .zip([200_000.0, 40_000.0, 50_000.0, 150_000.0, 100_000.0])
            .map(|(id, rps)| run(id, &[("rps", rps)]))
            .collect(),
    );
    add(&mut r, "idle", vec![run("nginx@10000", &[("held", 10_000.0)]), run("apache-prefork@10000", &[("held", 256.0)])]);
    assert_eq!(
        verdict(&nginx_apache(&r)),
        "**Confirmed** for throughput: nginx 4.0× the better Apache; **Confirmed** for idle connections: Apache \
         prefork holds one per process (256 here); our async serves 1.50× our threads"
    );
    let mut r = results("plaintext", vec![run("nginx", &[("rps", 50_000.0)]), run("apache-event", &[("rps", 50_000.0)])]);
    add(&mut r, "idle", vec![run("nginx@10000", &[("held", 256.0)]), run("apache-prefork@10000", &[("held", 256.0)])]);
    assert_eq!(
        verdict(&nginx_apache(&r)),
        "**Not seen** for throughput: nginx 1.00× the better Apache; **Not seen** for idle connections: nginx held \
         256, Apache prefork 256"
    );
    let r = results("plaintext", vec![run("async", &[("rps", 3.0)]), run("threads", &[("rps", 2.0)])]);
    assert_eq!(verdict(&nginx_apache(&r)), "incomplete; our async serves 1.50× our threads");
    assert_eq!(verdict(&nginx_apache(&Results::default())), "not measured");
}

/// The wakeup suite: per poller, µs per request at 0 idle and at `k` idle, all held.
fn wakeup(ran: &[(&str, usize, f64, f64)]) -> Results {
    let cells = ran
        .iter()
        .flat_map(|&(p, k, zero, at_k)| {
            [
                run(&format!("{p}@0"), &[("rps", 1e6 / zero), ("idle_held", 0.0)]),
                run(&format!("{p}@{k}"), &[("rps", 1e6 / at_k), ("idle_held", k as f64)]),
            ]
        })
        .collect();
    results("wakeup", cells)
}

#[test]
fn poll_growing_past_the_ratio_to_epoll_confirms_it() {
    // 10,000 idle add 2,000 µs to poll's request: 200 ns per idle connection.
    let c = pollers(&wakeup(&[("poll", 10_000, 20.0, 2_020.0), ("epoll", 10_000, 17.6, 16.6)]));
    assert_eq!(
        verdict(&c),
        "**Confirmed**: poll +200 ns per request per idle connection (to 10,000), epoll +0 ns per request per idle \
         connection (to 10,000); select cannot go past 1,024 descriptors at all"
    );
    assert!(c.measured.contains("poll: 0 idle: 20.0 µs, 10,000 idle: 2020.0 µs"), "{}", c.measured);
}

#[test]
fn poll_growth_under_the_noise_floor_is_not_clearly_seen() {
    // epoll flat: poll must grow more than GROWTH_RATIO × GROWTH_NOISE_NS per idle connection.
    let edge = GROWTH_RATIO * GROWTH_NOISE_NS; // ns per idle connection
    let at = |ns: f64| 20.0 + ns * 10_000.0 / 1000.0;
    let c = pollers(&wakeup(&[("poll", 10_000, 20.0, at(edge + 1.0)), ("epoll", 10_000, 20.0, 20.0)]));
    assert_eq!(outcomes(&c), [Outcome::Confirmed]);
    let c = pollers(&wakeup(&[("poll", 10_000, 20.0, at(edge - 1.0)), ("epoll", 10_000, 20.0, 20.0)]));
    assert_eq!(outcomes(&c), [Outcome::NotClearlySeen]);
    assert!(verdict(&c).ends_with("(confirmed when poll's exceeds 3× epoll's and 3× 10 ns)"), "{}", verdict(&c));
}

#[test]
fn a_poller_that_could_not_hold_its_idle_connections_is_impossible_not_slow() {
    let mut r = wakeup(&[("select", 1_000, 20.0, 139.0)]);
    add(&mut r, "wakeup", vec![run("select@5000", &[("rps", 1.0), ("idle_held", 1_013.0)])]);
    let c = pollers(&r);
    assert!(c.measured.ends_with("select: 0 idle: 20.0 µs, 1,000 idle: 139.0 µs, 5,000 idle: impossible (held 1,013)"), "{}", c.measured);
    // Judged to the last size it held; without poll and epoll, incomplete.
    assert_eq!(verdict(&c), "incomplete: select +119 ns per request per idle connection (to 1,000)");
    assert_eq!(verdict(&pollers(&Results::default())), "not measured");
}

/// One model of the ledger suite: its name, then (fine, giant) operations per second on many
/// accounts, then on two hot ones.
type FineGiant<'a> = (&'a str, (f64, f64), (f64, f64));

/// The ledger suite with these models' fine and giant cells, no violation found.
fn ledger_suite(models: &[FineGiant]) -> Results {
    use crate::matrix::{HOT_ACCOUNTS, MANY_ACCOUNTS};
    let cells = models
        .iter()
        .flat_map(|&(model, (fine_many, giant_many), (fine_hot, giant_hot))| {
            [("fine", MANY_ACCOUNTS, fine_many), ("giant", MANY_ACCOUNTS, giant_many), ("fine", HOT_ACCOUNTS, fine_hot), ("giant", HOT_ACCOUNTS, giant_hot)]
                .map(|(locking, accounts, ops)| run(&format!("{model}/{locking}@{accounts}"), &[("ops_per_s", ops), ("violations", 0.0)]))
        })
        .collect();
    results("ledger", cells)
}

#[test]
fn fine_locking_is_a_real_benefit_from_its_ratio_to_the_giant_lock_on_and_only_on_many_accounts() {
    use ledger::{fared, FineFared, Gains, FINE_BENEFIT};
    let just = FINE_BENEFIT;
    let below = FINE_BENEFIT - 0.01;
    assert_eq!(fared(Gains { many: just, hot: below }), FineFared::BenefitThatContentionTakes);
    assert_eq!(fared(Gains { many: just, hot: just }), FineFared::BenefitEverywhere);
    assert_eq!(fared(Gains { many: below, hot: 0.5 }), FineFared::NoBenefit);
    // Contention cannot give back a benefit many accounts did not show.
    assert_eq!(fared(Gains { many: below, hot: 3.0 }), FineFared::NoBenefit);
}

#[test]
fn fine_grained_is_confirmed_where_contention_takes_its_benefit_away() {
    let c = fine_grained(&ledger_suite(&[
        ("async", (9_454.0, 3_769.0), (3_934.0, 3_625.0)),
        ("threads", (8_542.0, 3_475.0), (3_509.0, 3_687.0)),
    ]));
    assert_eq!(outcomes(&c), [Outcome::Confirmed]);
    assert_eq!(
        c.verdicts[0].markdown(),
        "**Confirmed** for async, threads: on 64 accounts fine does 2.46–2.51× giant's operations per second (a real \
         benefit: 1.5× or more); on 2 hot accounts 0.95–1.09×, below 1.5×: every transfer still takes two locks and \
         waits behind the same two accounts, so the locks cost what the one giant lock did"
    );
    assert_eq!(
        c.measured,
        "fine / giant operations per second: async: 64 accounts 9,454 / 3,769 (2.51×), 2 hot 3,934 / 3,625 (1.09×); \
         threads: 64 accounts 8,542 / 3,475 (2.46×), 2 hot 3,509 / 3,687 (0.95×)"
    );
    assert!(c.remarks[0].starts_with("hard: not a number here; the shuttle model checks (crates/core/src/ledger/model_check.rs)"));
    assert_eq!(c.remarks.last().unwrap(), "ledger-check caught `none` losing or creating money in 0 of 0 cells and no other strategy in any of 8");
}

#[test]
fn fine_grained_keeping_its_benefit_on_hot_accounts_or_having_none_is_not_seen_by_part() {
    let c = fine_grained(&ledger_suite(&[
        ("async", (4_000.0, 1_000.0), (1_500.0, 1_000.0)),
        ("reactor", (1_400.0, 1_000.0), (1_000.0, 1_000.0)),
        ("green", (3_000.0, 1_000.0), (1_000.0, 1_000.0)),
    ]));
    assert_eq!(outcomes(&c), [Outcome::Confirmed, Outcome::NotSeen, Outcome::NotSeen]);
    assert_eq!(c.verdicts[0].scope.as_deref(), Some("for green"));
    assert_eq!(
        c.verdicts[1].markdown(),
        "**Not seen** for the expense on async: fine kept 1.50× giant's throughput even on 2 hot accounts (1.5× or more)"
    );
    assert_eq!(
        c.verdicts[2].markdown(),
        "**Not seen** for the benefit on reactor: fine did 1.40× giant's throughput on 64 accounts, below 1.5×"
    );
}

#[test]
fn fine_grained_names_the_models_it_could_not_judge_and_what_the_checker_found() {
    let mut r = ledger_suite(&[("async", (4_000.0, 1_000.0), (1_000.0, 1_000.0))]);
    add(
        &mut r,
        "ledger",
        vec![
            run("threads/fine@64", &[("ops_per_s", 4_000.0)]),
            run("async/none@2", &[("ops_per_s", 9_000.0), ("violations", 3.0)]),
            run("async/atomic@2", &[("ops_per_s", 2_000.0), ("violations", 1.0)]),
            run("async/atomic@64", &[("ops_per_s", 6_000.0), ("violations", 0.0)]),
        ],
    );
    let c = fine_grained(&r);
    assert_eq!(outcomes(&c), [Outcome::Confirmed, Outcome::Incomplete]);
    assert_eq!(c.verdicts[1].markdown(), "incomplete for threads");
    assert_eq!(c.remarks[1], "the lockless `atomic` did 1.50–2.00× fine's throughput");
    assert_eq!(
        c.remarks[2],
        "ledger-check caught `none` in 1 of 1 cells, and **found money lost or created** in async/atomic@2 (see the ledger table)"
    );
    assert_eq!(verdict(&fine_grained(&Results::default())), "not measured");
    assert_eq!(fine_grained(&Results::default()).measured, "not measured: run the ledger suite");
    let only_threads = results("ledger", vec![run("threads/fine@64", &[("ops_per_s", 4_000.0)])]);
    assert_eq!(outcomes(&fine_grained(&only_threads)), [Outcome::Incomplete]);
}
