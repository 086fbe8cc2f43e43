//! [`Server`]: one `c10k serve` process on an ephemeral port, with a database of its own
//! in a fresh temporary directory, stopped (SIGTERM) and cleaned up when dropped.
//!
//! A model whose arguments say `--db mysql` or `--db postgres` gets a scratch database
//! of its own on the test server of that kind instead of a SQLite file (see
//! `c10k_store::testing`); [`skipped_without_database`] says whether such a test must
//! skip because no test server is given.
//!
//! A server can also run on another [`Host`]: in a network namespace the test made, with
//! an address of its own there (`ip netns exec NS c10k serve --listen IP:0`).

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use c10k_store::testing::{ScratchDatabase, ServerKind};

use super::Model;

/// The database server a model's arguments ask for (`--db mysql`, `--db postgres`), if any.
fn server_kind(model: Model) -> Option<ServerKind> {
    let at = model.iter().position(|a| *a == "--db")?;
    match model.get(at + 1).copied() {
        Some("mysql") => Some(ServerKind::MySql),
        Some("postgres") => Some(ServerKind::Postgres),
        other => panic!("a model's --db is `mysql` or `postgres` (a scratch database), not {other:?}"),
    }
}

/// The model's arguments without its `--db KIND` (the server passes the real `--db`).
fn model_args(model: Model) -> Vec<&'static str> {
    let mut args = Vec::new();
    let mut rest = model.iter();
    while let Some(arg) = rest.next() {
        if *arg == "--db" {
            rest.next();
        } else {
            args.push(*arg);
        }
    }
    args
}

/// True (after saying so) when `model` needs a database server that this run is not
/// given; such a test passes without running. Under `C10K_E2E_REQUIRED=1` a missing
/// server fails instead.
pub fn skipped_without_database(model: Model) -> bool {
    let Some(kind) = server_kind(model) else { return false };
    let var = kind.env_var();
    if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
        return false;
    }
    if c10k_store::testing::required() {
        panic!("{}: {var} is not set, and C10K_E2E_REQUIRED=1; set it, e.g. {var}={}", model.join(" "), kind.example_url());
    }
    eprintln!("skipped: `{}` needs a database server; set {var}, e.g. {var}={}", model.join(" "), kind.example_url());
    true
}

/// How long a server may take to print its `listening` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM or SIGKILL.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The `--longpoll-wait` of [`Server::start`]: longer than any test waits for a post, so
/// that a long-poll answering `{}` early shows up as a failure, not as a slow pass.
pub const LONGPOLL_WAIT_SECS: u64 = 30;

/// Where a server runs when not on this machine's loopback: a network namespace and the
/// address it has there (see tests/netns.rs).
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (`ip netns`).
    pub netns: String,
    /// The server's address in it, which the test reaches from outside.
    pub ip: Ipv4Addr,
}

/// Distinguishes the temporary directories of the servers of one test process.
static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A running `c10k serve`. Dropping it stops the process with SIGTERM (SIGKILL if it does
/// not exit within 10 s) and removes its directory. When the test is failing, the server's
/// standard error is printed, so the test output shows what the server logged.
pub struct Server {
    model: Model,
    longpoll_wait_secs: u64,
    extra_args: Vec<String>,
    /// An open-files limit (soft and hard) for the server process, if not the default.
    file_limit: Option<u64>,
    dir: PathBuf,
    /// The scratch database of a `--db mysql|postgres` model; outlives restarts.
    database: Option<ScratchDatabase>,
    /// The `--db` to give instead of the scratch database's own URL (a proxy to it).
    db_url: Option<String>,
    /// Where it runs; `None`: this machine, on 127.0.0.1.
    host: Option<Host>,
    process: Option<Process>,
}

struct Process {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts `model` on a fresh database with a long-poll wait of [`LONGPOLL_WAIT_SECS`].
    pub fn start(model: Model) -> Server {
        Server::start_with_longpoll_wait(model, LONGPOLL_WAIT_SECS)
    }

    /// Starts `model` on a fresh database with `--longpoll-wait SECS`.
    pub fn start_with_longpoll_wait(model: Model, secs: u64) -> Server {
        Server::start_with(model, secs, &[])
    }

    /// Starts `model` on a fresh database with more flags, e.g. `&["--history", "3"]`.
    pub fn start_with_args(model: Model, extra_args: &[&str]) -> Server {
        Server::start_with(model, LONGPOLL_WAIT_SECS, extra_args)
    }

    fn start_with(model: Model, longpoll_wait_secs: u64, extra_args: &[&str]) -> Server {
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let dir = fresh_dir();
        let mut server = Server {
            model,
            longpoll_wait_secs,
            extra_args,
            file_limit: None,
            database: scratch_database(model),
            db_url: None,
            host: None,
            dir,
            process: None,
        };
        server.spawn();
        server
    }

    /// Starts `model` with its open-files limit (soft and hard) set to `limit`, so that a
    /// test can run it out of descriptors with a few hundred connections.
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub fn start_with_file_limit(model: Model, limit: u64, extra_args: &[&str]) -> Server {
        let mut server = Server {
            model,
            longpoll_wait_secs: LONGPOLL_WAIT_SECS,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            file_limit: Some(limit),
            database: scratch_database(model),
            db_url: None,
            host: None,
            dir: fresh_dir(),
            process: None,
        };
        server.spawn();
        server
    }

    /// Starts a `--db mysql|postgres` model on its scratch database reached through the
    /// URL `via` makes of the scratch database's (e.g. with a proxy's address in it).
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub fn start_via(model: Model, extra_args: &[&str], via: impl FnOnce(&str) -> String) -> Server {
        Server::start_via_on(None, model, extra_args, via)
    }

    /// [`Server::start_via`] on `host` (this machine's loopback when `None`).
    pub fn start_via_on(host: Option<Host>, model: Model, extra_args: &[&str], via: impl FnOnce(&str) -> String) -> Server {
        let database = scratch_database(model).expect("start_via is for --db mysql|postgres models");
        let db_url = Some(via(database.url()));
        let mut server = Server {
            model,
            longpoll_wait_secs: LONGPOLL_WAIT_SECS,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            file_limit: None,
            database: Some(database),
            db_url,
            host,
            dir: fresh_dir(),
            process: None,
        };
        server.spawn();
        server
    }

    /// Starts `model` (its `--db KIND` ignored) on a database another server already
    /// uses, e.g. a second node on the first node's [`Server::db_arg`].
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub fn start_sharing(model: Model, extra_args: &[&str], db_url: &str) -> Server {
        Server::start_sharing_on(None, model, extra_args, db_url)
    }

    /// [`Server::start_sharing`] on `host` (this machine's loopback when `None`).
    pub fn start_sharing_on(host: Option<Host>, model: Model, extra_args: &[&str], db_url: &str) -> Server {
        let mut server = Server {
            model,
            longpoll_wait_secs: LONGPOLL_WAIT_SECS,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            file_limit: None,
            database: None,
            db_url: Some(db_url.into()),
            host,
            dir: fresh_dir(),
            process: None,
        };
        server.spawn();
        server
    }

    /// The port of the running process (it changes on [`Server::restart`]).
    pub fn port(&self) -> u16 {
        self.running().port
    }

    /// The address of the running process.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip(), self.port()))
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.running().child.id()
    }

    /// The address it listens on: its host's, or 127.0.0.1.
    pub fn ip(&self) -> Ipv4Addr {
        self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, |h| h.ip)
    }

    /// The database file, which outlives restarts.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("chat.sqlite3")
    }

    /// What the server is given as `--db`: the SQLite file, or the scratch database's URL.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match (&self.db_url, &self.database) {
            (Some(url), _) => url.into(),
            (None, Some(database)) => database.url().into(),
            (None, None) => self.db_path().into(),
        }
    }

    /// The scratch database of a `--db mysql|postgres` model.
    pub fn database(&self) -> Option<&ScratchDatabase> {
        self.database.as_ref()
    }

    /// What the server has written to standard error so far.
    pub fn stderr(&self) -> String {
        match &self.process {
            Some(p) => String::from_utf8_lossy(&p.stderr.lock().unwrap()).into_owned(),
            None => String::new(),
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    /// Sends SIGTERM and returns at once: the server drains meanwhile (see
    /// [`Server::wait_exit`]).
    pub fn send_sigterm(&self) {
        let process = self.process.as_ref().expect("send_sigterm: the server is not running");
        signal(process.child.id() as libc::pid_t, libc::SIGTERM);
    }

    /// Waits for the process to exit (after [`Server::send_sigterm`]), at most
    /// [`EXIT_TIMEOUT`]; returns its exit status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut process = self
            .process
            .take()
            .expect("wait_exit: the server is not running");
        match wait_with_timeout(&mut process.child, EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let stderr = String::from_utf8_lossy(&process.stderr.lock().unwrap()).into_owned();
                kill_group(&mut process.child);
                panic!(
                    "the server did not exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{stderr}"
                );
            }
        }
    }

    /// Kills the process and every process it started (its process group) with SIGKILL,
    /// as a crash or a power cut would, and waits for it.
    pub fn kill_9(&mut self) {
        let mut process = self
            .process
            .take()
            .expect("kill_9: the server is not running");
        kill_group(&mut process.child);
    }

    /// Starts the server again on the same database and with the same arguments. The
    /// previous process must have been stopped or killed first.
    pub fn restart(&mut self) {
        assert!(
            self.process.is_none(),
            "restart: stop or kill the running server first"
        );
        self.spawn();
    }

    /// Like [`Server::restart`], but listening on `port` (e.g. the port it had before,
    /// saved with [`Server::port`] before stopping it), as a real restart does: clients
    /// that reconnect to the old address find the new process there.
    pub fn restart_on_port(&mut self, port: u16) {
        assert!(
            self.process.is_none(),
            "restart_on_port: stop or kill the running server first"
        );
        self.spawn_listening(&format!("{}:{port}", self.ip()));
        assert_eq!(
            self.port(),
            port,
            "the server did not listen on the port asked for"
        );
    }

    fn running(&self) -> &Process {
        self.process
            .as_ref()
            .expect("the server is not running (stopped or killed, not restarted)")
    }

    fn spawn(&mut self) {
        self.spawn_listening(&format!("{}:0", self.ip()));
    }

    fn spawn_listening(&mut self, listen: &str) {
        let db = self.db_arg();
        let c10k = env!("CARGO_BIN_EXE_c10k");
        let mut command = match &self.host {
            // `ip netns exec` enters the namespace and execs c10k: the child is c10k itself.
            Some(host) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &host.netns, c10k]);
                command
            }
            None => Command::new(c10k),
        };
        command
            .arg("serve")
            .args(["--listen", listen])
            .arg("--db")
            .arg(&db)
            .args(["--longpoll-wait", &self.longpoll_wait_secs.to_string()])
            .args(model_args(self.model))
            .args(&self.extra_args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that kill_9 reaches workers of multi-process models.
            .process_group(0);
        if let Some(limit) = self.file_limit {
            // SAFETY: the closure runs in the forked child before exec and only calls
            // setrlimit, which is async-signal-safe; it touches no memory of the parent's.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command));
        let stderr = collect(child.stderr.take().unwrap());
        let lines = forward_lines(child.stdout.take().unwrap());

        // The contract: exactly one line, and it is this one.
        let port = match lines.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => match parse_listening_line(&line, self.ip()) {
                Some(port) => port,
                None => {
                    kill_group(&mut child);
                    panic!(
                        "the first line on stdout must be `c10k listening on \
                         http://{}:PORT/`, got {line:?}\n{}",
                        self.ip(),
                        describe(&command, &stderr)
                    );
                }
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(&mut child);
                panic!(
                    "no `c10k listening on` line within {STARTUP_TIMEOUT:?}\n{}",
                    describe(&command, &stderr)
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_with_timeout(&mut child, EXIT_TIMEOUT);
                if status.is_none() {
                    kill_group(&mut child);
                }
                panic!(
                    "the server closed stdout (exit status {status:?}) before printing \
                     `c10k listening on`\n{}",
                    describe(&command, &stderr)
                );
            }
        };
        self.process = Some(Process {
            child,
            port,
            stderr,
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if thread::panicking() && self.process.is_some() {
            eprintln!(
                "--- c10k {} standard error ---\n{}--- end of standard error ---",
                self.model.join(" "),
                self.stderr()
            );
        }
        if let Some(mut process) = self.process.take() {
            signal(process.child.id() as libc::pid_t, libc::SIGTERM);
            if wait_with_timeout(&mut process.child, EXIT_TIMEOUT).is_none() {
                kill_group(&mut process.child);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `c10k listening on http://IP:PORT/` -> PORT, for the `ip` it was told to listen on.
fn parse_listening_line(line: &str, ip: Ipv4Addr) -> Option<u16> {
    line.strip_prefix(&format!("c10k listening on http://{ip}:"))?
        .strip_suffix('/')?
        .parse()
        .ok()
}

fn describe(command: &Command, stderr: &Arc<Mutex<Vec<u8>>>) -> String {
    format!(
        "command: {command:?}\nstderr:\n{}",
        String::from_utf8_lossy(&stderr.lock().unwrap())
    )
}

/// A scratch database for a `--db mysql|postgres` model, named after the test.
fn scratch_database(model: Model) -> Option<ScratchDatabase> {
    let kind = server_kind(model)?;
    let test = thread::current().name().unwrap_or("test").rsplit("::").take(2).collect::<Vec<_>>().join("_");
    let database = ScratchDatabase::create(kind, &test);
    assert!(database.is_some(), "call skipped_without_database first: {} needs {}", model.join(" "), kind.env_var());
    database
}

/// A new empty directory under the system's temporary directory, named after the test.
fn fresh_dir() -> PathBuf {
    let test = thread::current()
        .name()
        .unwrap_or("test")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>();
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("c10k-test-{}-{n}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Reads stdout line by line on a thread and hands each line over; keeps draining after
/// the receiver is gone so that the server never blocks on a full pipe.
fn forward_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Collects everything the server writes to stderr (its logs).
fn collect(mut stderr: ChildStderr) -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buffer);
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match stderr.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buffer
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child we spawned and
    // have not reaped yet, so the id cannot belong to anyone else.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGKILL to the child's whole process group (it leads one: `process_group(0)`), then
/// reap the child. The group is signalled before the reap, while its id is still ours.
fn kill_group(child: &mut Child) {
    signal(-(child.id() as libc::pid_t), libc::SIGKILL);
    if wait_with_timeout(child, EXIT_TIMEOUT).is_none() {
        panic!("the server did not die within {EXIT_TIMEOUT:?} of SIGKILL");
    }
}

/// Waits for the child to exit, polling: std has no wait with a timeout.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid failed") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
