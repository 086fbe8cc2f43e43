//! Every `c10k load` scenario, run at a tiny size against a real `c10k serve` on an
//! ephemeral port, so the benchmark code cannot rot: each report must be sane (requests
//! answered, every message delivered to every subscriber exactly once and in order), and
//! the generator must refuse any target off this machine.
//!
//! Most runs go through the binary (`c10k load ... --json`), as a person or `c10k bench`'s
//! scripts would; two go through the library API that `c10k bench` calls. The whole file
//! takes a few seconds.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use c10k_load::report::Report;
use c10k_load::scenarios::{BroadcastConfig, IdleConfig, PlaintextConfig, Via};
use c10k_load::{LoadConfig, LoadError, Scenario};

const C10K: &str = env!("CARGO_BIN_EXE_c10k");

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A `c10k serve --model async` on an ephemeral port with a database of its own, killed
/// and cleaned up when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts with extra `c10k serve` arguments.
    fn start_with(extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "c10k-load-scenarios-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let mut child = Command::new(C10K)
            .args(["serve", "--listen", "127.0.0.1:0", "--model", "async", "--longpoll-wait", "5", "--db"])
            .arg(dir.join("chat.sqlite3"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("c10k serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("c10k serve prints its address within 20 s");
        let addr = line
            .trim()
            .strip_prefix("c10k listening on http://")
            .and_then(|rest| rest.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from c10k serve: {line:?}"));
        Server { child, addr, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `c10k load ARGS --target SERVER --json --quiet` and parses its report; the run
/// must exit 0 (a sound report).
fn load(server: &Server, args: &[&str]) -> Report {
    let output = Command::new(C10K)
        .arg("load")
        .args(args)
        .args(["--target", &server.addr.to_string(), "--json", "--quiet", "--timeout", "30"])
        .output()
        .expect("c10k load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "c10k load {args:?} failed ({}):\n{stderr}\n{stdout}", output.status);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("c10k load {args:?}: not a JSON report ({e}):\n{stdout}"))
}

fn assert_sound(report: &Report) {
    assert!(report.problems.is_empty(), "problems: {:?}\n{}", report.problems, report.to_text());
    assert!(!report.timed_out, "{}", report.to_text());
}

/// Every subscriber got every message exactly once, in order.
fn assert_all_delivered(report: &Report, subscribers: usize, messages: u64) {
    assert_sound(report);
    let d = report.delivery.as_ref().expect("a delivery section");
    assert_eq!((d.subscribers, d.subscribed, d.messages), (subscribers, subscribers, messages), "{}", report.to_text());
    assert_eq!(d.expected, subscribers as u64 * messages);
    assert_eq!(d.delivered, d.expected, "{}", report.to_text());
    assert_eq!((d.misses, d.duplicates, d.out_of_order, d.resets), (0, 0, 0, 0), "{}", report.to_text());
    assert_eq!(d.latency.count, d.delivered, "one latency per delivery");
    assert!(d.per_second > 0.0 && d.latency.max_us > 0, "{}", report.to_text());
}

#[test]
fn plaintext_answers_requests_and_counts_them() {
    let server = Server::start();
    let report = load(&server, &["plaintext", "--connections", "4", "--duration", "0.5"]);
    assert_sound(&report);
    assert_eq!(report.scenario, Scenario::Plaintext(PlaintextConfig { connections: 4, requests: None, pipeline: 1 }));
    let class = &report.requests[0];
    assert_eq!(class.name, "plaintext");
    assert!(class.requests > 0 && class.per_second > 0.0, "{}", report.to_text());
    assert_eq!(class.errors, 0, "{:?}", report.errors);
    assert_eq!(class.latency.count, class.requests);
}

#[test]
fn plaintext_stops_at_the_request_count() {
    let server = Server::start();
    let report = load(&server, &["plaintext", "--connections", "3", "--requests", "50", "--duration", "20"]);
    assert_sound(&report);
    assert_eq!(report.requests[0].requests, 50);
    assert!(report.elapsed_secs < 10.0, "a count-bounded run ends at its count");
}

#[test]
fn plaintext_pipelined_sixteen_deep_gets_every_answer_checked() {
    let server = Server::start();
    let report = load(&server, &["plaintext", "--connections", "4", "--pipeline", "16", "--duration", "0.5"]);
    assert_sound(&report);
    assert_eq!(report.scenario, Scenario::Plaintext(PlaintextConfig { connections: 4, requests: None, pipeline: 16 }));
    let class = &report.requests[0];
    assert!(class.requests > 0 && class.per_second > 0.0, "{}", report.to_text());
    assert_eq!(class.errors, 0, "{:?}", report.errors);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(class.latency.count, class.requests, "one latency per answer, not per batch");
    assert!(report.to_text().contains("4 connections, 16 requests pipelined on each"), "{}", report.to_text());
}

#[test]
fn plaintext_pipelined_stops_at_the_request_count_mid_batch() {
    let server = Server::start();
    // 50 is three batches of 16 and one of 2.
    let report =
        load(&server, &["plaintext", "--connections", "3", "--pipeline", "16", "--requests", "50", "--duration", "20"]);
    assert_sound(&report);
    assert_eq!((report.requests[0].requests, report.requests[0].errors), (50, 0));
    assert!(report.elapsed_secs < 10.0, "a count-bounded run ends at its count");
}

#[test]
fn a_pipeline_depth_out_of_range_is_refused() {
    for depth in ["0", "257"] {
        let output = Command::new(C10K)
            .args(["load", "plaintext", "--pipeline", depth, "--target", "127.0.0.1:1", "--duration", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--pipeline {depth}: {stderr}");
        assert!(stderr.contains("--pipeline must be 1 to 256"), "{stderr}");
    }
}

#[test]
fn longpoll_fanout_delivers_every_message_once_in_order() {
    let server = Server::start();
    let report = load(&server, &["longpoll-fanout", "--subscribers", "10", "--messages", "20", "--duration", "5"]);
    assert_all_delivered(&report, 10, 20);
    assert_eq!(report.delivery.as_ref().unwrap().via, "longpoll");
}

#[test]
fn ws_broadcast_delivers_every_message_once_in_order() {
    let server = Server::start();
    let report = load(&server, &["ws-broadcast", "-n", "10", "-m", "20", "--rate", "200", "--duration", "5"]);
    assert_all_delivered(&report, 10, 20);
    assert_eq!(report.delivery.as_ref().unwrap().via, "ws");
}

#[test]
fn sse_broadcast_delivers_every_message_once_in_order() {
    let server = Server::start();
    let report = load(&server, &["sse-broadcast", "-n", "10", "-m", "20", "--duration", "5"]);
    assert_all_delivered(&report, 10, 20);
    assert_eq!(report.delivery.as_ref().unwrap().via, "sse");
}

#[test]
fn idle_capacity_spreads_over_workers_and_source_addresses() {
    let server = Server::start();
    let pid = server.pid().to_string();
    let report = load(
        &server,
        &[
            "idle-capacity",
            "--connections",
            "60",
            "--via",
            "sse",
            "--per-process",
            "25",
            "--source-addrs",
            "2",
            "--server-pid",
            &pid,
            "--duration",
            "5",
        ],
    );
    assert_all_delivered(&report, 60, 1);
    let c = report.capacity.as_ref().expect("a capacity section");
    assert_eq!((c.asked, c.held, c.failed), (60, 60, 0), "{}", report.to_text());
    assert_eq!((c.processes, c.source_addrs), (3, 2), "60 connections at 25 per process: 3 workers");
    assert!(c.server_rss_before_kib.is_some() && c.server_rss_after_kib.is_some(), "{}", report.to_text());
    assert!(c.rss_per_connection_bytes.is_some());
    assert!(c.broadcast_secs > 0.0);
}

#[test]
fn idle_capacity_over_long_poll_in_one_process() {
    let server = Server::start();
    let report = load(&server, &["idle-capacity", "--connections", "30", "--via", "longpoll", "--duration", "5"]);
    assert_all_delivered(&report, 30, 1);
    let c = report.capacity.as_ref().unwrap();
    assert_eq!((c.held, c.processes, c.source_addrs), (30, 1, 1));
    assert_eq!(c.server_rss_before_kib, None, "no --server-pid, no memory reading");
}

/// Regressions: at the server's connection cap the poster could not connect, so the
/// broadcast was never sent (it now connects before the subscribers); and workers reported
/// their errors twice (at `ready` and again at `done`).
#[test]
fn idle_capacity_reports_the_servers_cap_and_still_broadcasts() {
    let server = Server::start_with(&["--max-connections", "20"]);
    let report = load(
        &server,
        &["idle-capacity", "--connections", "30", "--per-process", "10", "--duration", "5", "--drain", "2"],
    );
    let c = report.capacity.as_ref().unwrap();
    // 20 connections: the poster's and 19 subscribers; the other 11 get 503.
    assert_eq!((c.held, c.failed), (19, 11), "{}", report.to_text());
    assert_eq!(report.errors.get("subscribe: status 503"), Some(&11), "{:?}", report.errors);
    let d = report.delivery.as_ref().unwrap();
    assert_eq!((d.messages, d.delivered, d.misses, d.duplicates), (1, 19, 0, 0), "{}", report.to_text());
    assert!(report.problems.is_empty(), "refusals are the finding, not a flaw: {:?}", report.problems);
}

#[test]
fn db_stall_measures_healthz_probes_beside_posts() {
    let server = Server::start();
    let report = load(
        &server,
        &[
            "db-stall",
            "--connections",
            "4",
            "--probe-rate",
            "200",
            "--posters",
            "2",
            "--post-rate",
            "20",
            "--duration",
            "1",
        ],
    );
    assert_sound(&report);
    let names: Vec<&str> = report.requests.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["healthz", "post"]);
    for class in &report.requests {
        assert!(class.requests > 0 && class.latency.p99_us > 0, "{}", report.to_text());
        assert_eq!(class.errors, 0, "{:?}", report.errors);
    }
    // Paced: about 200 probes in one second, not as many as the server can answer.
    assert!(report.requests[0].requests <= 260, "{}", report.to_text());
}

#[test]
fn cpu_mixes_hashing_with_plaintext() {
    let server = Server::start();
    let report =
        load(&server, &["cpu", "--connections", "4", "--cpu-connections", "2", "--cost", "20000", "--duration", "0.5"]);
    assert_sound(&report);
    let names: Vec<&str> = report.requests.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["plaintext", "cpu"]);
    assert!(report.requests.iter().all(|r| r.requests > 0 && r.errors == 0), "{}", report.to_text());
}

#[test]
fn the_library_api_runs_a_scenario_and_names_the_worker_program() {
    let server = Server::start();
    let mut config = LoadConfig::new(
        server.addr,
        Scenario::SseBroadcast(BroadcastConfig { subscribers: 5, messages: 10, ..BroadcastConfig::default() }),
    );
    config.duration = Duration::from_secs(5);
    config.timeout = Duration::from_secs(30);
    config.client_threads = 1;
    let report = c10k_load::run(&config).expect("the run starts");
    assert_all_delivered(&report, 5, 10);
    assert_eq!(report.client_threads, 1);

    // A test binary is not `c10k`: idle-capacity's workers must be named.
    let idle = IdleConfig {
        connections: 20,
        via: Via::Ws,
        per_process: Some(10),
        server_pid: Some(server.pid()),
        ..IdleConfig::default()
    };
    let mut config = LoadConfig::new(server.addr, Scenario::IdleCapacity(idle));
    config.timeout = Duration::from_secs(30);
    config.worker_program = Some(PathBuf::from(C10K));
    let report = c10k_load::run(&config).expect("the run starts");
    assert_all_delivered(&report, 20, 1);
    assert_eq!(report.capacity.as_ref().unwrap().processes, 2);
    // The report survives a round trip through JSON, as bench stores it.
    // (Floats may come back one ulp off: compare what is exact.)
    let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(back.scenario, report.scenario);
    assert_eq!(back.delivery.unwrap().delivered, 20);
    assert_eq!(back.capacity.unwrap().held, 20);
}

#[test]
fn targets_off_this_machine_are_refused() {
    for target in ["192.0.2.1:80", "10.0.0.1:8888", "http://93.184.216.34/"] {
        let output =
            Command::new(C10K).args(["load", "plaintext", "--target", target, "--duration", "1"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{target}: {stderr}");
        assert!(stderr.contains("only targets this machine"), "{target}: {stderr}");
    }
    let config = LoadConfig::new("192.0.2.1:80".parse().unwrap(), Scenario::Plaintext(PlaintextConfig::default()));
    assert!(matches!(c10k_load::run(&config), Err(LoadError::NotLoopback(_))));
}

#[test]
fn a_server_that_is_not_there_is_a_plain_error() {
    // Bind and drop: a port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = Command::new(C10K)
        .args(["load", "plaintext", "--target", &format!("127.0.0.1:{port}"), "--duration", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot reach a server"), "{stderr}");
}

#[test]
fn durations_are_written_as_wrk_writes_them() {
    let server = Server::start();
    let report = load(&server, &["plaintext", "--connections", "2", "--duration", "300ms"]);
    assert_sound(&report);
    assert!(
        (0.25..5.0).contains(&report.measured_secs),
        "--duration 300ms measured {} s:\n{}",
        report.measured_secs,
        report.to_text()
    );
    for bad in ["3x", "-1s", "soon"] {
        let output = Command::new(C10K)
            .args(["load", "plaintext", "--target", &server.addr.to_string(), &format!("--duration={bad}")])
            .output()
            .expect("c10k load runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--duration {bad}: {stderr}");
        assert!(stderr.contains("e.g. 3s, 500ms, 2m"), "--duration {bad} says how to write one: {stderr}");
    }
}

#[test]
fn the_text_report_says_where_its_messages_stay() {
    let server = Server::start();
    let output = Command::new(C10K)
        .args(["load", "ws-broadcast", "--subscribers", "2", "--messages", "3", "--quiet"])
        .args(["--target", &server.addr.to_string(), "--timeout", "30"])
        .output()
        .expect("c10k load runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find(|l| l.trim_start().starts_with("room ")).unwrap_or_else(|| panic!("no room line:\n{stdout}"));
    assert!(line.contains("load-") && line.contains("3 messages stay in the server's history"), "{line}");
}
