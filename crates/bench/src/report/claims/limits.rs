//! What limits a cell, for the goals' "what limits it" column: which side ran out of CPU
//! (server, client, both, the machine) and the top of the server's perf profile.

use crate::results::{CellResult, Results};

/// The percent of each of its cores a side must use to count as having run out of CPU:
/// what a saturated process shows on a shared machine, where sampling and other work take
/// the rest.
pub(super) const SATURATED_PCT: f64 = 85.0;

/// Whether `cpu_pct` (percent of one core) saturates `cores` cores.
pub(super) fn saturates(cpu_pct: f64, cores: f64) -> bool {
    cpu_pct >= SATURATED_PCT * cores
}

/// CPUs of the machine `suite` ran on, as its results say: the machine writing the
/// report (`--report-only`) may be another. This one's for results that do not say.
pub(super) fn machine_cpus(r: &Results, suite: &str) -> usize {
    r.suites.get(suite).map(|s| s.machine.cpus).filter(|n| *n > 0).unwrap_or_else(crate::machine::cpus)
}

/// Cores in a pinning (`1`, `1-3`, `0,2`); all `cpus` of the machine when unpinned.
pub(super) fn cores(pin: &Option<String>, cpus: usize) -> f64 {
    match pin {
        None => cpus as f64,
        Some(p) => crate::machine::parse_cpu_list(p).map_or(1.0, |n| n as f64),
    }
}

/// `1 core`, `2 cores`.
pub(super) fn plural_core(n: f64) -> &'static str {
    if n == 1.0 {
        ""
    } else {
        "s"
    }
}

/// Which side ran out of CPU: the server's and the client's use against the cores each had,
/// on a machine with `cpus`.
pub(super) fn cpu_text(c: &CellResult, cpus: usize) -> String {
    let (Some(sv), Some(cl)) = (c.median("server_cpu_pct"), c.median("client_cpu_pct")) else {
        return String::new();
    };
    let (sc, cc) = (cores(&c.server_cpus, cpus), cores(&c.client_cpus, cpus));
    let pinned = c.server_cpus.is_some();
    let bound = if pinned && saturates(sv, sc) && saturates(cl, cc) {
        "both sides saturated their cores"
    } else if pinned && saturates(sv, sc) {
        "server-bound"
    } else if pinned && saturates(cl, cc) {
        "client-bound: the load generator ran out of CPU first"
    } else if !pinned && saturates(sv + cl, cpus as f64) {
        "the machine's CPUs were saturated (server and client share them)"
    } else {
        "neither side saturated its CPUs"
    };
    let paced = if c.cell.id.ends_with("/paced") {
        " (averaged over a paced run, which idles between posts: each post is a burst)"
    } else {
        ""
    };
    format!("server used {sv:.0}% of {sc:.0} core{}, client {cl:.0}% of {cc:.0}{paced}: {bound}", plural_core(sc))
}

/// What limits a cell: which side ran out of CPU, and the top of its perf profile.
pub(super) fn limit_text(r: &Results, suite: &str, id: &str) -> String {
    let Some(c) = r.suites.get(suite).and_then(|s| s.cells.iter().find(|c| c.cell.id == id)) else {
        return "see the analysis".into();
    };
    let cpu = cpu_text(c, machine_cpus(r, suite));
    let cpu = if cpu.is_empty() { String::new() } else { format!("{cpu}; ") };
    if c.profile.is_empty() {
        return format!("{cpu}not profiled (run with --perf); see the analysis");
    }
    let top: Vec<String> = c.profile.iter().take(4).map(|l| format!("`{l}`")).collect();
    format!("{cpu}hottest in the server: {} (see perf below and the analysis)", top.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{results, run};
    use super::*;

    fn cpu(server: f64, client: f64) -> String {
        let r = results("plaintext", vec![run("reactor", &[("server_cpu_pct", server), ("client_cpu_pct", client)])]);
        cpu_text(r.cell("plaintext", "reactor").unwrap(), 2)
    }

    #[test]
    fn a_side_is_the_limit_from_the_saturated_share_of_its_core() {
        let at = SATURATED_PCT;
        assert!(cpu(at, at - 1.0).ends_with(": server-bound"), "{}", cpu(at, at - 1.0));
        assert!(cpu(at - 1.0, at).ends_with(": client-bound: the load generator ran out of CPU first"));
        assert!(cpu(at, at).ends_with(": both sides saturated their cores"));
        assert!(cpu(at - 1.0, at - 1.0).ends_with(": neither side saturated its CPUs"));
        assert_eq!(cpu(99.0, 60.0), "server used 99% of 1 core, client 60% of 1: server-bound");
    }

    #[test]
    fn unpinned_cells_are_judged_on_the_cpus_of_the_machine_they_ran_on() {
        let mut r = results("cpu", vec![run("threads", &[("server_cpu_pct", 200.0), ("client_cpu_pct", 60.0)])]);
        r.suites.get_mut("cpu").unwrap().cells[0].server_cpus = None;
        r.suites.get_mut("cpu").unwrap().cells[0].client_cpus = None;
        assert!(
            limit_text(&r, "cpu", "threads").starts_with(
                "server used 200% of 2 cores, client 60% of 2: the machine's CPUs were saturated (server and client share them)"
            ),
            "{}",
            limit_text(&r, "cpu", "threads")
        );
        // Written elsewhere, the report still speaks of the machine that ran it.
        r.suites.get_mut("cpu").unwrap().machine.cpus = 64;
        assert!(limit_text(&r, "cpu", "threads").starts_with("server used 200% of 64 cores, client 60% of 64: neither side"));
    }

    #[test]
    fn the_limit_names_the_hottest_symbols_or_asks_for_a_profile() {
        let mut r = results("plaintext", vec![run("reactor", &[("server_cpu_pct", 99.0), ("client_cpu_pct", 50.0)])]);
        assert!(limit_text(&r, "plaintext", "reactor").ends_with("; not profiled (run with --perf); see the analysis"));
        r.suites.get_mut("plaintext").unwrap().cells[0].profile = (1..=5).map(|i| format!("sym{i}")).collect();
        assert!(
            limit_text(&r, "plaintext", "reactor")
                .ends_with("; hottest in the server: `sym1`, `sym2`, `sym3`, `sym4` (see perf below and the analysis)"),
            "{}",
            limit_text(&r, "plaintext", "reactor")
        );
        assert_eq!(limit_text(&r, "plaintext", "nope"), "see the analysis");
    }
}
