//! "Another machine", for real: two c10k nodes, each in a network namespace of its own
//! with its own address, on one MariaDB or PostgreSQL store and one Redis or NATS bus,
//! and a message posted on node A reaches a subscriber on node B.
//!
//! The test builds a small LAN on this machine ([`Lab`]): a bridge with a private address
//! (10.254.S.1/24, a subnet nothing on the machine uses) that stands for the services
//! host, and two namespaces plugged into it by veth pairs (10.254.S.2 and .3), the nodes'
//! hosts. The bus server listens on the bridge's address; the database servers listen on
//! loopback only, so a relay on the bridge's address stands for their network port. No
//! address outside this machine is ever used, and everything is removed when the lab is
//! dropped, after a failure too (and left-overs of a killed earlier run are swept first).
//!
//! It needs root and iproute2's `ip`; without them it says `skipped` and passes, except
//! under `C10K_E2E_REQUIRED=1` (as in CI, which runs as root), where it fails.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::bus::{skipped_without_bus, BusKind, BusServer};
use support::proxy::{target, through, Proxy};
use support::server::{skipped_without_database, Host};
use support::*;

/// The first two octets of every address the lab gives: private (RFC 1918), and checked
/// to be unused here before a /24 of it is taken.
const PREFIX: [u8; 2] = [10, 254];

/// How long a message posted on A may take to reach B's subscriber: the bus's hop and the
/// store write before it, with slack for a busy machine. Far less than a catch-up from the
/// store would take (the nodes run with `--bus-resync 0`: only the bus can bring it).
const DELIVERY: Duration = Duration::from_secs(10);

/// Runs `ip ARGS`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip {}: {e}", args.join(" ")));
    assert!(out.status.success(), "ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

/// Runs `ip ARGS`; its standard output, or `None` when it failed.
fn ip_output(args: &[&str]) -> Option<String> {
    let out = Command::new("ip").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the effective user is root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Why this machine cannot build a lab, if it cannot.
fn cannot_build_a_lab() -> Option<String> {
    if !is_root() {
        return Some("needs root to create network namespaces (ip netns add)".into());
    }
    if ip_output(&["-V"]).is_none() {
        return Some("needs iproute2's `ip` on PATH (apt-get install iproute2)".into());
    }
    None
}

/// Labs of this process, for unique names (`c10k-PID-N-a`).
static LABS: AtomicUsize = AtomicUsize::new(0);
/// Held while a lab picks its subnet and claims it, so two labs of one run never share one.
static CLAIMING: Mutex<()> = Mutex::new(());

/// Two hosts (network namespaces) and a services host (the bridge, in this namespace) on
/// one private /24. Dropping it deletes what it made.
struct Lab {
    /// `c10k-PID-N`: the namespaces are `{tag}-a` and `{tag}-b`.
    tag: String,
    /// `c10kbPIDxN`.
    bridge: String,
    /// Namespaces made so far.
    namespaces: Vec<String>,
    /// The third octet of its subnet.
    subnet: u8,
}

impl Lab {
    /// A lab with two hosts, or `None` (after saying why) when this machine cannot make
    /// one; under `C10K_E2E_REQUIRED=1` that fails instead.
    fn set_up() -> Option<Lab> {
        if let Some(why) = cannot_build_a_lab() {
            if c10k_store::testing::required() {
                panic!("tests/netns.rs {why}, and C10K_E2E_REQUIRED=1");
            }
            eprintln!("skipped: tests/netns.rs {why}");
            return None;
        }
        sweep_left_overs();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        assert!(n < 10, "one digit of lab number keeps the link names within 15 characters");
        let pid = std::process::id();
        let _claiming = CLAIMING.lock().unwrap_or_else(|e| e.into_inner());
        let subnet = free_subnet();
        // Made before anything else, so that a failure below still removes what was made.
        let mut lab = Lab { tag: format!("c10k-{pid}-{n}"), bridge: format!("c10kb{pid}x{n}"), namespaces: Vec::new(), subnet };
        ip(&["link", "add", "name", &lab.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{}/24", lab.services()), "dev", &lab.bridge]);
        ip(&["link", "set", &lab.bridge, "up"]);
        for (i, side) in ["a", "b"].into_iter().enumerate() {
            let ns = format!("{}-{side}", lab.tag);
            ip(&["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            let veth = format!("c10kv{pid}x{n}{side}");
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["link", "set", &veth, "master", &lab.bridge, "up"]);
            let addr = format!("{}/24", lab.host(i).ip);
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", "eth0"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"]);
        }
        Some(lab)
    }

    /// The services host's address: the bridge's, where the bus and the database relay listen.
    fn services(&self) -> Ipv4Addr {
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.subnet, 1)
    }

    /// Host `i` (0: node A's, 1: node B's).
    fn host(&self, i: usize) -> Host {
        Host {
            netns: format!("{}-{}", self.tag, ["a", "b"][i]),
            ip: Ipv4Addr::new(PREFIX[0], PREFIX[1], self.subnet, 2 + i as u8),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// A /24 of [`PREFIX`] that no address or route of this machine touches.
fn free_subnet() -> u8 {
    let addrs = ip_output(&["-4", "-o", "addr", "show"]).unwrap_or_default();
    let routes = ip_output(&["-4", "route", "show", "table", "all"]).unwrap_or_default();
    let taken = |s: u8| {
        let net = format!("{}.{}.{s}.", PREFIX[0], PREFIX[1]);
        addrs.contains(&net) || routes.contains(&net)
    };
    let start = (std::process::id() % 250) as u8;
    (0..250u8)
        .map(|i| 1 + (start + i) % 250)
        .find(|s| !taken(*s))
        .unwrap_or_else(|| panic!("every 10.254.x.0/24 is in use on this machine"))
}

/// Deletes namespaces and bridges that a run killed before its clean-up left behind (their
/// process is gone).
fn sweep_left_overs() {
    let gone = |pid: &str| pid.parse::<u32>().is_ok_and(|p| p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists());
    for line in ip_output(&["netns", "list"]).unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = name.strip_prefix("c10k-").and_then(|r| r.split('-').next()) {
            if gone(pid) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    for line in ip_output(&["-o", "link", "show", "type", "bridge"]).unwrap_or_default().lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if let Some(pid) = name.strip_prefix("c10kb").and_then(|r| r.split('x').next()) {
            if gone(pid) {
                let _ = Command::new("ip").args(["link", "del", name]).output();
            }
        }
    }
}

/// The network namespace a process is in (`net:[4026531840]`).
fn netns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// A counter of a node's /metrics (0 when absent).
fn metric(node: &Server, name: &str) -> u64 {
    let text = Request::get("/metrics").send_to(node.addr()).text();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap_or(0.0) as u64
}

fn skipped(model: Model, bus: BusKind) -> bool {
    skipped_without_database(model) || skipped_without_bus(bus)
}

fn a_message_posted_on_a_reaches_a_subscriber_on_b(model: Model, kind: BusKind) {
    let Some(lab) = Lab::set_up() else { return };
    let services = IpAddr::V4(lab.services());
    let bus = BusServer::started_on(kind, services);
    // Only the bus carries messages between the nodes: no periodic catch-up from the store.
    let args = ["--bus", &bus.url(), "--bus-resync", "0"];
    let mut relay = None;
    let a = Server::start_via_on(Some(lab.host(0)), model, &args, |url| {
        let started = Proxy::start_on(services, target(url));
        let url = through(url, started.addr());
        relay = Some(started);
        url
    });
    let db = a.db_arg().into_string().unwrap();
    let b = Server::start_sharing_on(Some(lab.host(1)), model, &args, &db);
    let _relay = relay.expect("the database relay started");

    // Three hosts: the test's, A's and B's, each its own network namespace and address.
    let here = netns_of(std::process::id());
    let (ns_a, ns_b) = (netns_of(a.pid()), netns_of(b.pid()));
    assert!(!ns_a.is_empty() && ns_a != here && ns_b != here && ns_a != ns_b, "{here} {ns_a} {ns_b}");
    assert_ne!(a.ip(), b.ip());
    assert!(db.contains(&services.to_string()), "the nodes reach the store over the lab's network: {db}");

    // A node serves before its bus connection is up, and catches up from the store when it
    // comes: wait for both, so that what follows can only have crossed on the bus.
    let deadline = Instant::now() + DELIVERY;
    for node in [&a, &b] {
        while metric(node, "c10k_bus_connected") != 1 {
            assert!(Instant::now() < deadline, "node {} did not reach the bus at {} within {DELIVERY:?}", node.addr(), bus.url());
            std::thread::sleep(Duration::from_millis(20)); // poll the gauge
        }
    }

    let room = "across-hosts";
    let mut sse = EventStream::open_at(Conn::open_to(b.addr()), &format!("/api/rooms/{room}/events"), None);
    let mut longpoll = Conn::open_to(b.addr());
    longpoll.send_request(&Request::get(&format!("/api/rooms/{room}/messages?after=0&wait=20")));
    let began = Instant::now();
    let posted = Request::post(&format!("/api/rooms/{room}/messages"))
        .json(&json!({"body": "posted on A, read on B", "from": "netns"}))
        .send_to(a.addr());
    posted.assert_status(201);
    let posted = posted.json();

    let seen = sse.next_message();
    let took = began.elapsed();
    assert_eq!((&seen["id"], &seen["body"]), (&posted["id"], &posted["body"]), "B's SSE subscriber got A's message");
    assert!(took < DELIVERY, "A's message took {took:?} to reach B's subscriber (at most {DELIVERY:?})");
    let answer = longpoll.read_response();
    answer.assert_status(200);
    let ids = api_ids(&answer.json()["messages"]);
    assert_eq!(ids, [posted["id"].as_u64().unwrap()], "B's long-poll got A's message: {answer}");
    assert!(metric(&b, "c10k_bus_received_total") >= 1, "B heard it on the bus");
    assert!(metric(&a, "c10k_bus_published_total") >= 1, "A published it on the bus");
    eprintln!("A {} ({ns_a}) → {} bus on {services} → B {} ({ns_b}): {took:?}", a.addr(), kind.binary(), b.addr());
}

/// A lab is gone once dropped, and when the test that made it panics too.
#[test]
fn the_lab_leaves_no_namespace_or_link_behind_even_after_a_failure() {
    let names = |lab: &Lab| (lab.namespaces.clone(), lab.bridge.clone());
    let exists = |(namespaces, bridge): &(Vec<String>, String)| {
        let list = ip_output(&["netns", "list"]).unwrap_or_default();
        let ns = namespaces.iter().any(|n| list.lines().any(|l| l.split_whitespace().next() == Some(n)));
        ns || ip_output(&["link", "show", bridge]).is_some()
    };
    let Some(lab) = Lab::set_up() else { return };
    let made = names(&lab);
    assert_eq!(made.0.len(), 2);
    assert!(exists(&made));
    drop(lab);
    assert!(!exists(&made), "a dropped lab left {made:?}");

    let failed = std::panic::catch_unwind(|| {
        let lab = Lab::set_up().expect("the first lab was made here");
        let made = names(&lab);
        std::panic::panic_any(made);
    });
    let made = *failed.expect_err("the closure panics").downcast::<(Vec<String>, String)>().unwrap();
    assert!(!exists(&made), "a lab whose test panicked left {made:?}");
}

macro_rules! netns {
    ($($name:ident: $model:expr, $bus:expr;)*) => {
        $(
            mod $name {
                use super::*;

                #[test]
                fn a_message_posted_on_node_a_reaches_a_subscriber_on_node_b_in_another_namespace() {
                    const MODEL: Model = $model;
                    if !skipped(MODEL, $bus) {
                        a_message_posted_on_a_reaches_a_subscriber_on_b(MODEL, $bus)
                    }
                }
            }
        )*
    };
}

netns! {
    mariadb_redis: &["--model", "async", "--db", "mysql"], BusKind::Redis;
    postgres_nats: &["--model", "async", "--db", "postgres"], BusKind::Nats;
}
