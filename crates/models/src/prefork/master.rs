//! The master process: forks the workers, reaps them, starts a replacement for one that
//! dies, relays signals to them and chat messages between them (after nginx's
//! `ngx_master_process_cycle`).
//!
//! It stays single-threaded for its whole life, because it forks again whenever a worker
//! must be replaced and `fork` copies only the calling thread: a lock held by any other
//! thread (the allocator's, a logger's, the store's) would stay locked forever in the
//! child. So the master starts no thread, opens no store and runs no runtime; it checks
//! `/proc/self/task` before each fork and refuses to fork if that ever stops being true.
//!
//! Signals never interrupt it: SIGCHLD, SIGTERM, SIGINT and SIGHUP are blocked and read
//! from a `signalfd`, which `poll(2)` watches together with the relay sockets. One tick:
//! 1. compute the next deadline (a delayed restart, or the end of a stop's grace time);
//! 2. wait in `poll` for a signal, relay traffic, or that deadline;
//! 3. handle the signals, then reap every child that exited (`waitpid`, `WNOHANG`);
//! 4. move relay traffic; a worker's `ready` line may complete a generation;
//! 5. run the timers: kill the stragglers of a stop, start the missing workers;
//! 6. exit once stopping and no worker is left.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use c10k_bus::{LocalRelay, Notice, Switchboard};
use tracing::{error, info, warn};

use super::backlog::BacklogWatch;
use super::worker::{self, empty_sigset};
use crate::sys::{poll_timeout_ms, syscall};

/// What runs in each worker process once it is forked: the whole single-process start
/// (signal thread, store, application, model), given the shared listener and the worker's
/// end of the relay. Its `Err` is logged and becomes the worker's exit status 2.
pub type WorkerMain<'a> = dyn FnMut(TcpListener, LocalRelay) -> Result<(), String> + 'a;

/// How long stopping workers may take past their drain deadline before they are killed:
/// a worker ends its drain by itself at the deadline, so only one wedged (a store call that
/// never returns) is still there after this.
const KILL_MARGIN: Duration = Duration::from_secs(3);
/// The first delay before restarting a worker that died quickly; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between restarts of workers that keep dying.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that dies sooner than this after it was forked (or before it was ready)
/// counts as dying in a loop.
const QUICK_DEATH: Duration = Duration::from_secs(5);

/// Runs the master until it is told to stop and every worker has exited.
///
/// `workers` processes run `worker_main` on a listener of `listeners`: on the one shared
/// listener if there is one, else each worker on its own (one per worker slot, bound
/// with `SO_REUSEPORT`; see the module docs). `announce` is called once, when
/// every worker of the first generation has said it is ready. If one of those fails
/// before it is ready, the others are stopped and this returns an error, as a single
/// process that cannot start would.
///
/// The caller must be single-threaded (see the module docs); the listeners must be bound
/// and listening, since the workers accept on them. `drain_timeout` is the workers' own
/// (`--drain-timeout`): on SIGTERM the master closes its copies of the listeners, relays the
/// signal, and kills the workers still running [`KILL_MARGIN`] after it.
pub fn run_master(
    listeners: Vec<TcpListener>,
    workers: usize,
    drain_timeout: Duration,
    announce: &mut dyn FnMut(),
    worker_main: &mut WorkerMain<'_>,
) -> io::Result<()> {
    let workers = workers.max(1);
    if listeners.len() != 1 && listeners.len() != workers {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} listeners for {workers} workers: give one shared or one per worker", listeners.len()),
        ));
    }
    let signals = SignalFd::block_and_open(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP])?;
    let mut master = Master {
        listeners,
        workers,
        stop_grace: drain_timeout + KILL_MARGIN,
        signals: Some(signals),
        board: Switchboard::new(),
        children: Vec::new(),
        generation: 0,
        phase: Phase::Starting,
        failures: 0,
        restart_at: Instant::now(),
        failed: None,
        backlog: BacklogWatch::new(Instant::now()),
        announce,
        worker_main,
    };
    info!(workers = master.workers, "master: starting workers");
    master.run()
}

/// A relay end `poll` reported: its key, whether readable (or hung up), whether writable.
type RelayNews = (u32, bool, bool);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first generation is starting; nothing was announced yet.
    Starting,
    /// Serving; dead workers are replaced.
    Serving,
    /// Told to stop: workers have had SIGTERM, and get SIGKILL at `kill_at`.
    Stopping { kill_at: Instant, killed: bool },
}

#[derive(Debug)]
struct Child {
    pid: libc::pid_t,
    /// Its place among the workers, 0 to `workers - 1` (a replacement takes the dead
    /// one's); with one listener per worker, the listener it accepts on.
    slot: usize,
    /// Bumped by every SIGHUP; older generations are stopped once the new one is ready.
    generation: u64,
    forked: Instant,
    ready: bool,
    told_to_stop: bool,
}

struct Master<'a, 'w> {
    /// One shared by every worker, or one per worker slot. The master keeps them all open
    /// for its whole life, so connections queued for a worker that dies wait for its
    /// replacement instead of being reset.
    listeners: Vec<TcpListener>,
    workers: usize,
    /// How long stopping workers may take before they are killed.
    stop_grace: Duration,
    /// `None` only in a child, which must not keep the master's descriptors.
    signals: Option<SignalFd>,
    board: Switchboard,
    /// Forked and not yet reaped: their ids cannot be reused, so signalling them is safe.
    children: Vec<Child>,
    generation: u64,
    phase: Phase,
    /// Workers in a row that died quickly; sets the restart delay.
    failures: u32,
    restart_at: Instant,
    failed: Option<String>,
    /// Says when connections wait for a worker (prefork's one shared listener only: the
    /// other models' workers each take many connections and have a listener of their own).
    backlog: BacklogWatch,
    announce: &'a mut dyn FnMut(),
    worker_main: &'a mut WorkerMain<'w>,
}

impl Master<'_, '_> {
    fn run(&mut self) -> io::Result<()> {
        self.start_missing();
        loop {
            // 1. The next deadline.
            let deadline = match self.phase {
                Phase::Stopping { kill_at, killed: false } => Some(kill_at),
                Phase::Stopping { .. } => None,
                _ if self.may_start_more() => Some(self.restart_at),
                _ => None,
            };
            let deadline = match (deadline, self.watches_backlog()) {
                (Some(d), true) => Some(d.min(self.backlog.deadline())),
                (None, true) => Some(self.backlog.deadline()),
                (d, false) => d,
            };
            // 2. Wait.
            let (signalled, relay) = self.wait(deadline)?;
            // 3. Signals, then reaping (every tick: SIGCHLDs coalesce).
            if signalled {
                for signal in self.signals.as_ref().map(SignalFd::drain).unwrap_or_default() {
                    self.on_signal(signal);
                }
            }
            self.reap();
            // 4. Relay traffic.
            for (key, readable, writable) in relay {
                let mut notices = Vec::new();
                if readable {
                    notices.extend(self.board.readable(key));
                }
                if writable {
                    notices.extend(self.board.writable(key));
                }
                for notice in notices {
                    if let Notice::Ready(pid) = notice {
                        self.on_ready(pid as libc::pid_t);
                    }
                }
            }
            // 5. Timers.
            self.on_timers();
            // 6. Done?
            if matches!(self.phase, Phase::Stopping { .. }) && self.children.is_empty() {
                return match self.failed.take() {
                    Some(why) => Err(io::Error::other(why)),
                    None => {
                        info!("master: every worker has exited");
                        Ok(())
                    }
                };
            }
        }
    }

    /// Waits for a signal, relay traffic or the deadline. Returns whether the signalfd is
    /// readable, and the relay ends with news.
    fn wait(&self, deadline: Option<Instant>) -> io::Result<(bool, Vec<RelayNews>)> {
        let interests = self.board.interests();
        let mut fds = Vec::with_capacity(1 + interests.len());
        let signal_fd = self.signals.as_ref().map_or(-1, |s| s.fd.as_raw_fd());
        fds.push(libc::pollfd { fd: signal_fd, events: libc::POLLIN, revents: 0 });
        for &(_, fd, wants_write) in &interests {
            let events = if wants_write { libc::POLLIN | libc::POLLOUT } else { libc::POLLIN };
            fds.push(libc::pollfd { fd, events, revents: 0 });
        }
        // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()` pollfd.
        match syscall!(poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, poll_timeout_ms(deadline))) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok((false, Vec::new())),
            Err(e) => return Err(e),
        }
        let relay = interests
            .iter()
            .zip(&fds[1..])
            .filter(|(_, p)| p.revents != 0)
            .map(|(&(key, _, _), p)| {
                let readable = p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
                (key, readable, p.revents & libc::POLLOUT != 0)
            })
            .collect();
        Ok((fds[0].revents != 0, relay))
    }

    fn on_signal(&mut self, signal: libc::c_int) {
        match signal {
            libc::SIGTERM | libc::SIGINT => self.stop(),
            libc::SIGHUP => self.replace(),
            _ => {} // SIGCHLD: every tick reaps.
        }
    }

    /// Stop: close the master's copies of the listeners (once the workers close theirs,
    /// new connections are refused rather than queued for nobody), SIGTERM to every worker
    /// now (each drains its connections), SIGKILL to those left after the grace time.
    fn stop(&mut self) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        info!("master: stopping the workers");
        self.listeners.clear();
        self.phase = Phase::Stopping { kill_at: Instant::now() + self.stop_grace, killed: false };
        for child in &mut self.children {
            signal(child.pid, libc::SIGTERM);
            child.told_to_stop = true;
        }
    }

    /// SIGHUP: start a new generation; the old one is stopped once all of it is ready, so
    /// the listener is never without workers.
    fn replace(&mut self) {
        if self.phase != Phase::Serving {
            info!("master: SIGHUP ignored while starting or stopping");
            return;
        }
        self.generation += 1;
        self.failures = 0;
        self.restart_at = Instant::now();
        info!(generation = self.generation, "master: SIGHUP, replacing every worker");
    }

    fn reap(&mut self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: `status` is a live out-pointer; WNOHANG makes waitpid return at once.
            match syscall!(waitpid(-1, &mut status, libc::WNOHANG)) {
                Ok(0) => return,
                Ok(pid) => self.on_exit(pid, status),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // ECHILD: no children at all.
            }
        }
    }

    fn on_exit(&mut self, pid: libc::pid_t, status: libc::c_int) {
        let Some(at) = self.children.iter().position(|c| c.pid == pid) else { return };
        let child = self.children.remove(at);
        self.board.remove(pid as u32);
        let how = describe(status);
        if child.told_to_stop {
            info!(pid, "worker {how}");
            return;
        }
        if self.phase == Phase::Starting && !child.ready {
            // Like a single process that cannot start: give up, the error is logged above.
            error!(pid, "worker {how} before it was ready; stopping");
            self.failed = Some(format!("a worker {how} while starting; its error is logged above"));
            self.stop();
            return;
        }
        let quick = !child.ready || child.forked.elapsed() < QUICK_DEATH;
        self.failures = if quick { self.failures.saturating_add(1) } else { 0 };
        let delay = backoff(self.failures);
        self.restart_at = Instant::now() + delay;
        warn!(pid, "worker {how}; starting another in {delay:?}");
    }

    fn on_ready(&mut self, pid: libc::pid_t) {
        let Some(child) = self.children.iter_mut().find(|c| c.pid == pid) else { return };
        child.ready = true;
        let generation = self.generation;
        let ready = self.children.iter().filter(|c| c.generation == generation && c.ready).count();
        if ready < self.workers {
            return;
        }
        if self.phase == Phase::Starting {
            self.phase = Phase::Serving;
            (self.announce)();
        }
        for old in self.children.iter_mut().filter(|c| c.generation < generation && !c.told_to_stop) {
            info!(pid = old.pid, "master: stopping a worker of the previous generation");
            signal(old.pid, libc::SIGTERM);
            old.told_to_stop = true;
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Stopping { kill_at, killed: false } if now >= kill_at => {
                for child in &self.children {
                    warn!(pid = child.pid, "worker still running {:?} after SIGTERM; killing it", self.stop_grace);
                    signal(child.pid, libc::SIGKILL);
                }
                self.phase = Phase::Stopping { kill_at, killed: true };
            }
            Phase::Stopping { .. } => {}
            _ if now >= self.restart_at => self.start_missing(),
            _ => {}
        }
        if self.watches_backlog() {
            self.backlog.on_timer(now, &self.listeners[0], self.workers);
        }
    }

    /// Whether the accept queue is watched: while serving, on one shared listener.
    fn watches_backlog(&self) -> bool {
        self.phase == Phase::Serving && self.listeners.len() == 1
    }

    fn current_workers(&self) -> usize {
        self.children.iter().filter(|c| c.generation == self.generation).count()
    }

    /// Whether a worker is missing and may be forked (once `restart_at` has passed).
    ///
    /// The first worker starts alone: it creates the database (schema, WAL mode) and the
    /// others open it once it is ready. Two processes switching a fresh SQLite file to WAL
    /// at the same moment can fail with "database is locked" at once, whatever the busy
    /// timeout, and one failing worker would fail the whole start.
    fn may_start_more(&self) -> bool {
        let current = self.current_workers();
        let first_pending = self.phase == Phase::Starting && current >= 1 && !self.children.iter().any(|c| c.ready);
        current < self.workers && !first_pending
    }

    fn start_missing(&mut self) {
        while self.may_start_more() {
            if let Err(e) = self.spawn() {
                if self.phase == Phase::Starting {
                    error!("cannot start a worker: {e}");
                    self.failed = Some(format!("cannot start a worker: {e}"));
                    self.stop();
                    return;
                }
                self.failures = self.failures.saturating_add(1);
                let delay = backoff(self.failures);
                self.restart_at = Instant::now() + delay;
                warn!("cannot start a worker: {e}; trying again in {delay:?}");
                return;
            }
        }
    }

    /// The slot a new worker of the current generation takes, 0 to `workers - 1`: one no
    /// other worker of this generation holds (a dead worker's replacement takes over its
    /// slot). With one listener per slot it is also the listener's index.
    fn free_slot(&self) -> usize {
        (0..self.workers)
            .find(|slot| !self.children.iter().any(|c| c.generation == self.generation && c.slot == *slot))
            .unwrap_or(0)
    }

    fn spawn(&mut self) -> io::Result<()> {
        ensure_single_threaded()?;
        let slot = self.free_slot();
        let (master_end, worker_end) = Switchboard::pair()?;
        let master = std::process::id() as libc::pid_t;
        // SAFETY: fork has no memory preconditions, and the child may run arbitrary code
        // afterwards because this process is single-threaded (checked just above): no
        // other thread can have held a lock that the child inherits locked.
        let pid = syscall!(fork())?;
        if pid == 0 {
            // The child: drop the master's descriptors (this copy only), then be a worker.
            drop(master_end);
            self.board = Switchboard::new();
            self.signals = None;
            let code = self.be_worker(master, worker_end, slot);
            std::process::exit(code);
        }
        drop(worker_end);
        self.children.push(Child {
            pid,
            slot,
            generation: self.generation,
            forked: Instant::now(),
            ready: false,
            told_to_stop: false,
        });
        info!(pid, slot, generation = self.generation, "worker started");
        self.board.add(pid as u32, master_end)
    }

    /// The rest of a child's life. Returns its exit status.
    fn be_worker(&mut self, master: libc::pid_t, relay: UnixStream, slot: usize) -> i32 {
        // Keep only this worker's listener: the others' copies would only cost descriptors.
        let mut listeners = std::mem::take(&mut self.listeners);
        let listener = listeners.swap_remove(if listeners.len() == 1 { 0 } else { slot });
        let result = worker::after_fork(master)
            .and_then(|()| Ok((listener, LocalRelay::new(relay)?)))
            .map_err(|e| format!("cannot start the worker: {e}"))
            .and_then(|(listener, relay)| (self.worker_main)(listener, relay));
        match result {
            Ok(()) => 0,
            Err(message) => {
                error!("{message}");
                eprintln!("c10k worker {}: {message}", std::process::id());
                2
            }
        }
    }
}

/// 0 after a worker that lived, then 100 ms, 200 ms, ... up to 10 s for workers dying in a
/// loop (a broken database, a full disk): restarts must not become a fork bomb.
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF.saturating_mul(1 << (n - 1).min(10)).min(MAX_BACKOFF),
    }
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended (wait status {status})")
    }
}

/// Sends `sig` to a child that has not been reaped (so its id is still ours).
fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill reads no memory; callers pass only unreaped children of this process.
    let _ = syscall!(kill(pid, sig));
}

/// Refuses to fork a multi-threaded process (see the module docs).
fn ensure_single_threaded() -> io::Result<()> {
    // Without /proc there is nothing to check; the code's structure is the guarantee.
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Ok(()) };
    match tasks.count() {
        1 => Ok(()),
        n => Err(io::Error::other(format!(
            "the master has {n} threads and must fork while single-threaded (a bug: something started a thread in the master)"
        ))),
    }
}

/// Signals read as data from a descriptor, instead of interrupting the process.
struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` in this (single) thread and opens a non-blocking signalfd for them.
    fn block_and_open(signals: &[libc::c_int]) -> io::Result<SignalFd> {
        let mut set = empty_sigset();
        for &signal in signals {
            // SAFETY: `set` is an initialised sigset_t, exclusively borrowed.
            unsafe { libc::sigaddset(&mut set, signal) };
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: `set` is initialised and outlives the call; -1 asks for a new descriptor.
        let fd = syscall!(signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
        // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
        Ok(SignalFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// The signals that arrived since the last call.
    fn drain(&self) -> Vec<libc::c_int> {
        let mut signals = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data; an all-zero value is valid.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into a live signalfd_siginfo.
            match syscall!(read(self.fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size)) {
                Ok(n) if n as usize == size => signals.push(info.ssi_signo as libc::c_int),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return signals,
            }
        }
    }
}
