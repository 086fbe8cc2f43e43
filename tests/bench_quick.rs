//! `c10k bench --quick` on a tiny corner of the matrix, so that the bench code (server
//! lifecycle, load runs, the idle holder, memory sampling, the report and the plots)
//! cannot rot. A smoke test, not a benchmark: it checks that files appear with the
//! expected structure, never the numbers (beyond wrk's req/s being positive). About 20 seconds.
//!
//! Peers that are not installed are skipped by the bench (`--no-install`) and named here.
//! wrk, the plaintext suite's cross-check, runs when it is on PATH (`.ci/run` installs it)
//! and must then give a positive req/s for every plaintext server; without it, every
//! plaintext cell must say it is missing and how to install it.

use std::path::PathBuf;
use std::process::Command;

const C10K: &str = env!("CARGO_BIN_EXE_c10k");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("c10k-bench-quick-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn quick_bench_writes_results_report_and_plots_and_regenerates_them() {
    let out = scratch("out");
    let status = Command::new(C10K)
        .args(["bench", "--quick", "--only", "plaintext,wakeup,idle", "--models", "async,reactor"])
        .args(["--peers", "nginx,raw", "--no-install", "--no-sysctl", "--out"])
        .arg(&out)
        .status()
        .expect("c10k bench runs");
    assert!(status.success(), "c10k bench --quick failed: {status}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let suites = json["suites"].as_object().unwrap();
    for suite in ["plaintext", "wakeup", "idle"] {
        let cells = suites[suite]["cells"].as_array().unwrap_or_else(|| panic!("suite {suite} missing"));
        assert!(!cells.is_empty(), "suite {suite} has no cells");
        for c in cells {
            let id = c["cell"]["id"].as_str().unwrap();
            if let Some(reason) = c["skipped"].as_str() {
                // Only a peer may be skipped, and only for not being installed.
                assert!(c["cell"]["subject"]["kind"] == "peer", "{suite}/{id} skipped: {reason}");
                eprintln!("skipping {suite}/{id}: {reason}");
                continue;
            }
            let samples = c["samples"].as_array().unwrap();
            assert_eq!(samples.len(), 1, "{suite}/{id}: --quick runs one repeat");
            assert!(!samples[0]["metrics"].as_object().unwrap().is_empty(), "{suite}/{id} measured nothing: {c}");
        }
    }
    let report = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    let models_ran = |suite: &str| {
        suites[suite]["cells"].as_array().unwrap().iter().filter(|c| c["skipped"].is_null()).count()
    };
    assert!(models_ran("plaintext") >= 2, "async and reactor always run");

    // wrk against the same servers: a real req/s where it is installed, a reason where not.
    let wrk_installed = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("wrk").is_file());
    for c in suites["plaintext"]["cells"].as_array().unwrap().iter().filter(|c| c["skipped"].is_null()) {
        let id = c["cell"]["id"].as_str().unwrap();
        // The server's system calls, counted in one extra run, or a plain reason why not
        // (perf and strace missing, or unable to attach).
        let sys = &c["syscalls"];
        let counted = sys["total"].as_f64().is_some_and(|v| v > 0.0) && sys["requests"].as_f64().is_some_and(|v| v > 0.0);
        let said = sys["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p.as_str().is_some_and(|p| p.starts_with("not measured: "))));
        assert!(counted || said, "{id}: system calls neither counted nor said why not: {sys}");
        let wrk = &c["wrk"];
        if c["cell"]["action"]["scenario"]["pipeline"].as_u64() == Some(16) {
            // wrk cannot pipeline: the pipelined cells are c10k load's alone.
            assert!(wrk.is_null(), "{id}: wrk ran on a pipelined cell: {wrk}");
            assert!(id.ends_with("/pipelined16"), "{id}");
            let load = c["load_command"].as_str().unwrap();
            assert!(load.contains("plaintext -c 8 --pipeline 16 "), "{id}: {load}");
            assert!(report.contains(&format!("load: `{load}`")), "{id}: RESULTS.md lists its command");
            let sample = &c["samples"][0];
            assert!(sample["metrics"]["rps"].as_f64().is_some_and(|v| v > 0.0), "{id}: {sample}");
            assert_eq!(sample["metrics"]["errors"].as_f64(), Some(0.0), "{id}: {sample}");
            continue;
        }
        let command = wrk["command"].as_str().unwrap_or_else(|| panic!("plaintext/{id} has no wrk run: {c}"));
        assert!(command.contains(" -c8 ") && command.contains("--latency"), "{id}: wrk has the cell's 8 connections: {command}");
        assert!(command.contains(" -d1s "), "{id}: --quick's 0.5 s rounds up to wrk's whole second: {command}");
        if let Some(cpus) = c["client_cpus"].as_str() {
            assert!(command.starts_with(&format!("taskset -c {cpus} wrk ")), "{id}: wrk pinned like the client: {command}");
        }
        let problems: Vec<&str> = wrk["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        if wrk_installed {
            let rps = wrk["metrics"]["rps"].as_f64().unwrap_or_else(|| panic!("{id}: no wrk req/s: {wrk}"));
            assert!(rps > 0.0, "{id}: wrk req/s {rps}");
            assert!(wrk["metrics"]["p99_us"].as_f64().is_some_and(|v| v > 0.0), "{id}: wrk p99 from --latency: {wrk}");
            assert!(wrk["errors"].get("non-2xx-3xx").is_none(), "{id}: wrk got error responses: {wrk}");
            assert!(
                report.contains(&format!("wrk, once after the repeats: `{command}`")),
                "{id}: RESULTS.md lists wrk's exact command"
            );
        } else {
            eprintln!("wrk is not on PATH: checking that plaintext/{id} says so");
            assert!(problems.iter().any(|p| p.starts_with("wrk not installed: apt-get install wrk")), "{id}: {problems:?}");
            assert!(report.contains("wrk not installed: apt-get install wrk"), "the table names the missing wrk");
        }
    }
    assert!(report.contains("| wrk req/s |") && report.contains("| c10k load / wrk |"), "the plaintext table has wrk's columns");
    assert!(report.contains("| syscalls / request | commonest syscalls / request |"), "and the system calls' columns");
    assert!(report.contains("uring: fewer system calls per plaintext request than reactor (epoll)"), "the uring goals are listed");
    assert!(report.contains("c10k load's plaintext req/s within 10% of wrk's"), "the goals say whether the generators agree");
    let pipelined: Vec<&serde_json::Value> = suites["plaintext"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell"]["id"].as_str().unwrap().ends_with("/pipelined16"))
        .collect();
    let ids: Vec<&str> = pipelined.iter().map(|c| c["cell"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["reactor/pipelined16", "async/pipelined16", "nginx/pipelined16", "raw/pipelined16"]);
    assert!(report.contains("**Pipelined 16**") && report.contains("| × raw (pipelined) |"), "the pipelined table");
    assert!(report.contains("| reactor (pipelined 16) <sub>--poller epoll</sub> |"), "its rows are marked pipelined");
    let ran = |id: &str| pipelined.iter().any(|c| c["cell"]["id"] == id && c["skipped"].is_null());
    if ran("nginx/pipelined16") && ran("raw/pipelined16") {
        assert!(
            report.contains("judged on the pipelined run, where the server's cost, not the client's syscalls, sets the rate"),
            "the plaintext goal is judged pipelined"
        );
    }
    if wrk_installed {
        assert!(report.contains("c10k load within "), "the agreement line is computed from both figures");
    }

    let claims = report.find("## The talk's claims").expect("claims first");
    let goals = report.find("## Goals").expect("then goals");
    let plaintext = report.find("## Suite `plaintext`").expect("then the suites");
    assert!(claims < goals && goals < plaintext);
    assert!(report.contains("## Machine") && report.contains("taskset"), "the machine section says whether it pinned");
    assert!(report.contains("c10k serve --listen 127.0.0.1:0"), "every cell's command is shown");
    for plot in ["plaintext_rps.svg", "wakeup_cost.svg", "most_held.svg"] {
        let svg = std::fs::read_to_string(out.join("plots").join(plot)).unwrap_or_else(|_| panic!("{plot} missing"));
        assert!(svg.starts_with("<svg") && svg.contains("<text"), "{plot} is not an SVG with text");
    }

    // Hand-written notes survive a regeneration from results.json.
    let noted = report.replace(
        "(Hand-written notes go here; `c10k bench` keeps them when it rewrites this file.)",
        "NOTE KEPT ACROSS REGENERATION",
    );
    std::fs::write(out.join("RESULTS.md"), noted).unwrap();
    let status = Command::new(C10K).args(["bench", "--report-only", "--out"]).arg(&out).status().unwrap();
    assert!(status.success());
    let again = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    assert!(again.contains("NOTE KEPT ACROSS REGENERATION"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn quick_ledger_suite_times_every_strategy_and_finds_no_violation_outside_none() {
    let out = scratch("ledger");
    let status = Command::new(C10K)
        .args(["bench", "--quick", "--only", "ledger", "--models", "async", "--no-install", "--no-sysctl", "--out"])
        .arg(&out)
        .status()
        .expect("c10k bench runs");
    assert!(status.success(), "c10k bench --quick --only ledger failed: {status}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let cells = json["suites"]["ledger"]["cells"].as_array().expect("the ledger suite ran");
    let ids: Vec<&str> = cells.iter().map(|c| c["cell"]["id"].as_str().unwrap()).collect();
    let strategies = ["none", "giant", "fine", "atomic", "db"];
    let expected: Vec<String> =
        [2, 64].iter().flat_map(|a| strategies.map(|l| format!("async/{l}@{a}"))).collect();
    assert_eq!(ids, expected, "every strategy on two hot accounts and on many");
    for c in cells {
        let id = c["cell"]["id"].as_str().unwrap();
        assert!(c["skipped"].is_null(), "{id} skipped: {}", c["skipped"]);
        let m = &c["samples"][0]["metrics"];
        assert!(m["ops_per_s"].as_f64().is_some_and(|v| v > 0.0), "{id}: {m}");
        assert!(m["p99_us"].as_f64().is_some_and(|v| v > 0.0), "{id}: {m}");
        assert_eq!(m["unanswered"].as_f64(), Some(0.0), "{id}: {m}");
        if !id.contains("/none@") {
            // The race is `none`'s alone: any other strategy caught has lost or created money.
            assert_eq!(m["violations"].as_f64(), Some(0.0), "{id}: {}", c["samples"][0]["problems"]);
            assert_eq!(m["race_won"].as_f64(), Some(1.0), "{id}: exactly one withdrawal of John's whole balance wins");
        }
        let load = c["load_command"].as_str().unwrap();
        assert!(load.contains("c10k ledger-check --target http://127.0.0.1:"), "{id}: {load}");
    }
    let report = std::fs::read_to_string(out.join("RESULTS.md")).unwrap();
    assert!(report.contains("## Suite `ledger`") && report.contains("**2 hot accounts**: operations per second"));
    assert!(report.contains("\"Fine grained has some real benefits, but can be hard and expensive\""), "the claim's row");
    let svg = std::fs::read_to_string(out.join("plots").join("ledger_throughput.svg")).expect("the ledger plot");
    assert!(svg.starts_with("<svg") && svg.contains("--locking fine"), "the plot's legend names the strategies");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn unknown_suites_and_models_are_refused_with_the_list() {
    let out = Command::new(C10K).args(["bench", "--only", "nope", "--list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown suite") && err.contains("plaintext"), "{err}");
    let out = Command::new(C10K).args(["bench", "--models", "fibers", "--list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown model"));
}
