//! Several independent nodes (`c10k serve` processes, each with its own port) on one
//! MariaDB or PostgreSQL store, sharing rooms through Redis or NATS, under `c10k
//! queue-check`: every subscriber sees its room's stored order once, through the faults a
//! deployment meets: a node killed with `kill -9` under load and started again, Redis
//! paused (SIGSTOP) for 5 s then killed and restarted, NATS restarted, the bus unreachable
//! when the nodes start. And the checker is shown to catch a node that drops bus messages
//! on purpose (`--bus-drop-every`).
//!
//! Each test starts its own redis-server or nats-server on a free loopback port
//! (support/bus.rs), so that it can kill or stop it.
//! Without the binaries, or without the database servers, a test says `skipped` and
//! passes, except under `C10K_E2E_REQUIRED=1`.

mod support;

use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use support::bus::{skipped_without_bus, BusKind, BusServer};
use support::*;

/// True (after saying so) when this test cannot run here; under `C10K_E2E_REQUIRED=1`
/// what is missing fails the test instead.
fn skipped(model: Model, bus: BusKind) -> bool {
    support::server::skipped_without_database(model) || skipped_without_bus(bus)
}

/// Two nodes of `model` on one scratch database, both on `bus`, plus `extra` for the second.
fn two_nodes(model: Model, bus: &str, extra: &[&str]) -> (Server, Server) {
    let args = ["--bus", bus, "--history", "5000"];
    let a = Server::start_with_args(model, &args);
    let db = a.db_arg().into_string().unwrap();
    let mut b_args = args.to_vec();
    b_args.extend_from_slice(extra);
    let b = Server::start_sharing(model, &b_args, &db);
    (a, b)
}

/// `c10k queue-check` against the nodes, on a thread; its output when it ends.
fn queue_check(nodes: &[&Server], db: &str, flags: &[&str]) -> thread::JoinHandle<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_c10k"));
    command.arg("queue-check").args(["--db", db, "--seed", "7"]);
    for node in nodes {
        command.args(["--target", &node.addr().to_string()]);
    }
    command.args(flags);
    thread::spawn(move || command.output().expect("run c10k queue-check"))
}

/// The checker's report, printed for the test log; whether it passed.
fn verdict(output: Output) -> (bool, String) {
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert_ne!(output.status.code(), Some(2), "the checker could not run: {}", String::from_utf8_lossy(&output.stderr));
    (output.status.success(), report)
}

/// A metric of a node's /metrics (0 when absent).
fn metric(node: &Server, name: &str) -> u64 {
    metric_total(&get(node.port(), "/metrics").text(), name)
}

/// Waits (bounded) until `node` has stored at least `n` posts: the load is under way.
fn until_posted(node: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(node, "c10k_messages_posted_total") < n {
        assert!(Instant::now() < deadline, "node on {} stored fewer than {n} posts in 30 s", node.port());
        thread::sleep(Duration::from_millis(50)); // poll the metric
    }
}

/// Load long enough for a fault in its middle: 4 publishers × 300 posts at 30/s (~10 s).
const UNDER_LOAD: &[&str] = &["--publishers", "4", "--messages", "300", "--rate", "30", "--subscribers", "6", "--drain", "30"];

fn passes_with_zero_lost_and_zero_doubled(model: Model, bus: BusKind) {
    let bus = BusServer::started(bus);
    let (a, b) = two_nodes(model, &bus.url(), &[]);
    let db = a.db_arg().into_string().unwrap();
    let (passed, report) = verdict(queue_check(&[&a, &b], &db, &["--messages", "60"]).join().unwrap());
    assert!(passed, "{report}");
    assert!(report.contains("lost 0, doubled 0, reordered 0"), "{report}");
    assert!(metric(&b, "c10k_bus_received_total") > 0, "node B heard the bus");
}

fn fails_against_a_node_that_drops_bus_messages(model: Model, bus: BusKind) {
    let bus = BusServer::started(bus);
    let (a, b) = two_nodes(model, &bus.url(), &["--bus-drop-every", "5"]);
    let db = a.db_arg().into_string().unwrap();
    // Posts only through A, no disconnects: B's subscribers depend on B's bus alone.
    let a_addr = a.addr().to_string();
    let flags = ["--messages", "60", "--disconnect-every", "0", "--drain", "3", "--publish-via", &a_addr];
    let (passed, report) = verdict(queue_check(&[&a, &b], &db, &flags).join().unwrap());
    assert!(!passed, "the checker must catch a node that drops every 5th bus message:\n{report}");
    assert!(report.contains("lost") && !report.contains("lost 0,"), "{report}");
}

fn survives_a_node_killed_and_restarted_under_load(model: Model, bus: BusKind) {
    let bus = BusServer::started(bus);
    let (a, mut b) = two_nodes(model, &bus.url(), &[]);
    let db = a.db_arg().into_string().unwrap();
    let check = queue_check(&[&a, &b], &db, UNDER_LOAD);
    until_posted(&b, 40);
    let port = b.port();
    b.kill_9();
    until_posted(&a, metric(&a, "c10k_messages_posted_total") + 40); // the load goes on without B
    b.restart_on_port(port);
    let (passed, report) = verdict(check.join().unwrap());
    assert!(passed, "{report}");
}

fn survives_the_bus_restarted_under_load(model: Model, kind: BusKind, pause_first: bool) {
    let mut bus = BusServer::started(kind);
    let (a, b) = two_nodes(model, &bus.url(), &[]);
    let db = a.db_arg().into_string().unwrap();
    let check = queue_check(&[&a, &b], &db, UNDER_LOAD);
    until_posted(&a, 30);
    if pause_first {
        bus.signal(libc::SIGSTOP);
        thread::sleep(Duration::from_secs(5)); // the length of the pause is the fault itself
    }
    bus.kill_9();
    let during = metric(&a, "c10k_messages_posted_total");
    until_posted(&a, during + 30); // nodes keep serving with the bus down
    bus.start();
    let (passed, report) = verdict(check.join().unwrap());
    assert!(passed, "{report}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&b, "c10k_bus_reconnects_total") == 0 {
        assert!(Instant::now() < deadline, "node B never counted its reconnection");
        thread::sleep(Duration::from_millis(50)); // poll the metric
    }
    for (name, node) in [("A", &a), ("B", &b)] {
        let figures: Vec<String> = ["published", "received", "gaps_filled", "resets", "reconnects"]
            .iter()
            .map(|m| format!("{m} {}", metric(node, &format!("c10k_bus_{m}_total"))))
            .collect();
        eprintln!("node {name}: {}", figures.join(", "));
    }
}

fn serves_with_the_bus_unreachable_at_start_and_catches_up(model: Model, kind: BusKind) {
    let mut bus = BusServer::reserve(kind);
    let (a, b) = two_nodes(model, &bus.url(), &[]);
    let db = a.db_arg().into_string().unwrap();
    assert_eq!(metric(&a, "c10k_bus_connected"), 0, "nothing listens on the bus's port yet");
    let check = queue_check(&[&a, &b], &db, UNDER_LOAD);
    until_posted(&a, 30);
    bus.start();
    let (passed, report) = verdict(check.join().unwrap());
    assert!(passed, "{report}");
    assert_eq!(metric(&a, "c10k_bus_connected"), 1);
}

/// `/readyz` of `node` until it answers `status` (bounded); its body then.
fn readyz_becomes(node: &Server, status: u16, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = get(node.port(), "/readyz");
        if reply.status == status {
            return reply.text();
        }
        assert!(Instant::now() < deadline, "/readyz did not become {status} within 30 s ({why}); last:\n{reply}");
        thread::sleep(Duration::from_millis(50)); // poll the route
    }
}

/// Readiness follows the bus: ready while connected, 503 naming the bus while it is down
/// (the node keeps serving its own clients: /healthz stays 200), ready again once it is back.
fn readiness_goes_red_while_the_bus_is_down(model: Model, kind: BusKind) {
    let mut bus = BusServer::started(kind);
    let node = Server::start_with_args(model, &["--bus", &bus.url()]);
    readyz_becomes(&node, 200, "the bus is up");
    bus.kill_9();
    let why = readyz_becomes(&node, 503, "the bus was killed");
    assert!(why.contains("the bus") && why.contains(kind.binary().trim_end_matches("-server")), "{why}");
    get(node.port(), "/healthz").assert_status(200);
    bus.start();
    readyz_becomes(&node, 200, "the bus was started again");
}

/// The names a presence snapshot lists.
fn present(snapshot: &Value) -> Vec<String> {
    snapshot["members"].as_array().map_or(Vec::new(), |m| m.iter().filter_map(|m| m["name"].as_str().map(String::from)).collect())
}

/// Waits until `node`'s `GET .../presence` of room `lobby` lists `names`, paced by
/// long-polls that a presence change answers.
fn presence_becomes(node: &Server, names: &[&str], within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let snapshot = get(node.port(), "/api/rooms/lobby/presence").json();
        if present(&snapshot) == names {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: node {} never listed {names:?}: {snapshot}", node.port());
        let seen = api_messages(node.port(), "lobby", "?presence=0")["presence"]["version"].as_u64().unwrap_or(0);
        api_messages(node.port(), "lobby", &format!("?after=0&wait=2&presence={seen}"));
    }
}

/// Presence across nodes: a member on each node is listed on both; one that leaves is
/// gone from both; the members of a node killed with `kill -9` leave the other's view
/// within the 30 s its reports count for; the admin view lists both nodes meanwhile.
fn presence_is_shared_by_the_nodes(model: Model, kind: BusKind) {
    let bus = BusServer::started(kind);
    let (a, mut b) = two_nodes(model, &bus.url(), &["--admin-token", "nodes-admin-token-0123"]);
    let _ann = Ws::connect(a.port(), "/api/rooms/lobby/ws?nick=ann");
    let bob = Ws::connect(b.port(), "/api/rooms/lobby/ws?nick=bob");
    let _cy = Ws::connect(b.port(), "/api/rooms/lobby/ws?nick=cy");
    for node in [&a, &b] {
        presence_becomes(node, &["ann", "bob", "cy"], Duration::from_secs(20), "a member on each node");
    }
    // Node a's summary reaches b within a tick of a hearing of b (paced here by 1 s
    // long-polls on an empty room).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = Request::get("/api/admin").header("Authorization", "Bearer nodes-admin-token-0123").send(b.port()).json();
        if view["nodes"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the admin view of {} does not list both nodes: {view:#}", b.port());
        api_messages(b.port(), "quiet", "?after=0&wait=1");
    }
    drop(bob);
    for node in [&a, &b] {
        presence_becomes(node, &["ann", "cy"], Duration::from_secs(20), "bob left node b");
    }
    b.kill_9();
    presence_becomes(&a, &["ann"], presence_ttl() + Duration::from_secs(15), "node b was killed");
}

/// How long a node's presence report counts (c10k_core::presence::REMOTE_TTL).
fn presence_ttl() -> Duration {
    c10k_core::presence::REMOTE_TTL
}

macro_rules! nodes {
    ($($name:ident: $model:expr, $bus:expr;)*) => {
        $(
            mod $name {
                use super::*;
                const MODEL: Model = $model;

                #[test]
                fn the_checker_passes_with_zero_lost_and_zero_doubled() {
                    if !skipped(MODEL, $bus) { passes_with_zero_lost_and_zero_doubled(MODEL, $bus) }
                }

                #[test]
                fn the_checker_fails_against_a_node_that_drops_bus_messages() {
                    if !skipped(MODEL, $bus) { fails_against_a_node_that_drops_bus_messages(MODEL, $bus) }
                }

                #[test]
                fn a_node_killed_with_kill_9_under_load_and_restarted_loses_nothing() {
                    if !skipped(MODEL, $bus) { survives_a_node_killed_and_restarted_under_load(MODEL, $bus) }
                }

                #[test]
                fn the_bus_killed_and_restarted_under_load_loses_nothing() {
                    if !skipped(MODEL, $bus) { survives_the_bus_restarted_under_load(MODEL, $bus, false) }
                }

                #[test]
                fn the_bus_paused_5_s_then_killed_and_restarted_loses_nothing() {
                    if !skipped(MODEL, $bus) { survives_the_bus_restarted_under_load(MODEL, $bus, true) }
                }

                #[test]
                fn readiness_goes_red_while_the_bus_is_down_and_green_after() {
                    if !skipped(MODEL, $bus) { readiness_goes_red_while_the_bus_is_down(MODEL, $bus) }
                }

                #[test]
                fn presence_is_shared_across_nodes_and_a_killed_nodes_members_expire() {
                    if !skipped(MODEL, $bus) { presence_is_shared_by_the_nodes(MODEL, $bus) }
                }

                #[test]
                fn a_bus_unreachable_at_start_is_caught_up_with_once_it_comes() {
                    if !skipped(MODEL, $bus) { serves_with_the_bus_unreachable_at_start_and_catches_up(MODEL, $bus) }
                }
            }
        )*
    };
}

nodes! {
    mariadb_redis: &["--model", "async", "--db", "mysql"], BusKind::Redis;
    postgres_nats: &["--model", "async", "--db", "postgres"], BusKind::Nats;
}
