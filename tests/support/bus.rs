//! [`BusServer`]: a redis-server or nats-server of the test's own, on a free port that
//! survives its restarts (never the machine's shared instances, which other tests use),
//! so that a test can kill, pause and restart it. [`skipped_without_bus`] says whether its
//! binary is missing here.

use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a bus server may take to accept connections after it is started.
const BUS_START: Duration = Duration::from_secs(10);

/// Which bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// Redis pub/sub.
    Redis,
    /// Core NATS.
    Nats,
}

impl BusKind {
    /// Its server's program (and Debian package).
    pub fn binary(self) -> &'static str {
        match self {
            BusKind::Redis => "redis-server",
            BusKind::Nats => "nats-server",
        }
    }
}

/// A port nobody listens on now at `ip` (the kernel's pick, released at once).
pub fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// True (after saying so) when `bus`'s server is not installed; under
/// `C10K_E2E_REQUIRED=1` that fails the test instead.
pub fn skipped_without_bus(bus: BusKind) -> bool {
    let found = Command::new(bus.binary()).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_ok_and(|s| s.success()) {
        return false;
    }
    if c10k_store::testing::required() {
        panic!("{} is not on PATH, and C10K_E2E_REQUIRED=1; install it (apt-get install {})", bus.binary(), bus.binary());
    }
    eprintln!("skipped: needs {} on PATH", bus.binary());
    true
}

/// A bus server of the test's own; killed when dropped.
pub struct BusServer {
    kind: BusKind,
    ip: IpAddr,
    port: u16,
    child: Option<Child>,
}

impl BusServer {
    /// Reserves a port on loopback; the server is not started yet.
    pub fn reserve(kind: BusKind) -> BusServer {
        BusServer::reserve_on(kind, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Reserves a port on `ip` (an address of this machine's); not started yet.
    pub fn reserve_on(kind: BusKind, ip: IpAddr) -> BusServer {
        BusServer { kind, ip, port: free_port_on(ip), child: None }
    }

    /// Started on loopback.
    pub fn started(kind: BusKind) -> BusServer {
        BusServer::started_on(kind, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Started on `ip`.
    pub fn started_on(kind: BusKind, ip: IpAddr) -> BusServer {
        let mut server = BusServer::reserve_on(kind, ip);
        server.start();
        server
    }

    /// The `--bus` URL that reaches it.
    pub fn url(&self) -> String {
        match self.kind {
            BusKind::Redis => format!("redis://{}:{}", self.ip, self.port),
            BusKind::Nats => format!("nats://{}:{}", self.ip, self.port),
        }
    }

    /// Starts it on its port and returns once it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let (ip, port) = (self.ip.to_string(), self.port.to_string());
        let mut command = Command::new(self.kind.binary());
        match self.kind {
            // Protected mode refuses clients from other hosts without a password; the
            // hosts here are the test's own network namespaces.
            BusKind::Redis => command.args(["--port", &port, "--bind", &ip, "--protected-mode", "no", "--save", "", "--appendonly", "no"]),
            BusKind::Nats => command.args(["-a", &ip, "-p", &port]),
        };
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the bus server");
        self.child = Some(child);
        let deadline = Instant::now() + BUS_START;
        while TcpStream::connect((self.ip, self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen on {}:{} within {BUS_START:?}", self.kind.binary(), self.ip, self.port);
            thread::sleep(Duration::from_millis(20)); // poll until it listens
        }
    }

    /// Sends it `signal` (SIGSTOP, SIGCONT...).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our unreaped child.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// `kill -9`, and reaped.
    pub fn kill_9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.take().expect("running").wait();
    }
}

impl Drop for BusServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
