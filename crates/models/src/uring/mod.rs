//! `uring`: one thread, a proactor over io_uring, and the core's connection machines: the talk's "aio", done the
//! way Linux does it now. Every accept, receive, send, shutdown and close is an operation handed to the kernel,
//! which reports each back when it is done; the loop handles completions, not readiness.
//! Where it blocks: only in `io_uring_enter`, which submits the tick's operations and waits in one system call.
//! Cost: no thread or stack per connection, and no buffer while it is idle (receives land in one pool of buffers
//! the kernel picks from); one core per worker process. Hazard: the reactor's (a handler that blocks stalls every
//! connection: `--db-mode inline`, and the watchdog names it), plus memory that the kernel writes on its own
//! schedule: a buffer handed to an operation is the kernel's until that operation's completion has been reaped.
//!
//! # Readiness and completion, for a newcomer
//! **Readiness** (select, poll, epoll: the `reactor`): the kernel says "this socket would not block now", and the
//! program then makes the call itself, `read` into its buffer or `write` from it. The buffer is the program's the
//! whole time, because the call that uses it starts and ends inside one system call. Each ready socket costs the
//! wait plus one call per read or write, and a program that wants to read must keep a buffer to read into, so the
//! reactor keeps one for the whole loop and copies out of it at once.
//!
//! **Completion** (POSIX aio then, IOCP on Windows, io_uring now): the program describes the whole operation
//! (this socket, these bytes, this length), the kernel does it whenever it can, and a completion says what became
//! of it. Between the two, **the buffer belongs to the kernel**: it may read or write it at any moment, from
//! another CPU. The program must not free it, move it, or put anything else in it until the completion is in. In
//! Rust terms nothing that the connection owns may be handed over, since the connection can grow its output
//! `Vec` (which moves it) or be dropped: a send's bytes are copied into a buffer that the ring itself owns until
//! the completion (`ring.rs`), and receives go into buffers the ring owns too.
//!
//! **A cancelled read must still be reaped before its buffer is reused.** Cancelling is a request, not a stop:
//! the operation may be half done, or already done with its completion on the way. Only its completion
//! (`ECANCELED`, or the bytes it got first) says the kernel has let go. A buffer reused when the cancel was merely
//! asked for can be overwritten by a late receive, memory corruption that the kernel commits on the program's
//! behalf. Closing the socket does not stop it either: the ring holds its own reference to the file. So a
//! connection here ends in three steps: cancel what is in flight on its socket, reap every last completion
//! (counted per connection), and only then close the socket (on the ring), which also keeps the descriptor
//! number from being given to a new connection while an old operation still aims at it.
//!
//! **What the kernel does that epoll did not.** It does the I/O: it copies the received bytes into a buffer and
//! sends from ours, with no system call of ours per socket. It picks the buffer when bytes arrive, from a ring
//! of them we lent it once (provided buffers): with epoll, a program that wants to read a socket must hold a
//! buffer for it, here 10,000 idle connections hold none. One submission keeps working (multishot accept and
//! receive: one accept for every connection to come, one receive per connection for all its bytes, until the
//! stream ends). And it batches: one `io_uring_enter` submits everything queued in a tick and waits for the next
//! completions, where epoll needs `epoll_wait` plus one `accept`, `read` or `write` per ready socket.
//!
//! # Deadlines: one loop timeout, not ring timeouts
//! The machines' deadlines (idle keep-alive, request head, long-poll, heartbeat, close grace) live in an ordered
//! map in the loop, as the reactor's do, and the wait is given the nearest as its timeout (`IORING_ENTER_EXT_ARG`),
//! not armed as one `IORING_OP_TIMEOUT` per connection. Every request moves its connection's idle deadline: as
//! ring timeouts, that is an update submitted and a completion reaped per request, and a connection's timeout
//! would be one more operation to cancel and reap before its socket may close. The map costs a B-tree insert and
//! remove; the wait's timeout costs nothing, since the loop makes that system call anyway.
//!
//! # The tick
//! 1. The nearest deadline (zero while woken connections wait for their turn).
//! 2. Submit every operation queued since the last tick and wait for a completion or that deadline: one call.
//! 3. Handle the completions in the order the kernel posted them (accepts, bytes, sends done, the doorbell).
//! 4. Run the expired deadlines.
//! 5. Take the doorbell's inbox: store results, then at most [`WOKEN_PER_TICK`] woken connections.
//!
//! After each input, the connection's machine is settled at once (`conn.rs`): its actions, its next send, its
//! receive armed or cancelled, its deadline; what that queues goes to the kernel at the next step 2.
//!
//! # Stopping: a drain
//! When the shutdown fires (its waker rings the doorbell), the multishot accept is cancelled and the listener
//! closed, every connection is told once (`Connection::handle_shutdown`) and ends the way the machine says, and a
//! deadline is set at `--drain-timeout`. The loop ends when the last connection is gone (its last completion
//! reaped, its socket closed) or at that deadline, whichever is first; then everything still in flight is
//! cancelled and reaped before the ring's memory goes.

mod conn;
mod doorbell;
mod ring;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use c10k_core::chat::StoreDone;
use tracing::{debug, error, info, warn};

use self::conn::{Conn, Cx};
use self::doorbell::{Doorbell, Remote};
use self::ring::{Completion, Ring};
use crate::acceptor::{keep_reserve_descriptor, refuse, refuse_with_reserve, Reserve};
use crate::common::{connection, is_fd_exhaustion, peer_of, ConnectionSlot, Open};
use crate::event::event_loop::{Timers, Watchdog, ACCEPT_PAUSE, WOKEN_PER_TICK};
use crate::event::Token;
use crate::{Context, Model};

/// The listener's token (its accept, and the timer that resumes accepting after EMFILE).
const LISTENER: Token = Token(0);
/// The doorbell's and the shutdown waker's token, and the drain deadline's timer.
const LOOP: Token = Token(1);
/// The first token of a connection; tokens are never reused, so a late completion or wake
/// for a connection that is gone finds nothing.
const FIRST_CONNECTION: usize = 2;
/// How long a stop waits for the kernel to give back every operation's memory.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// Connections answered 503 with the reserve descriptor per failed accept, at most.
const REFUSALS_PER_CALLBACK: usize = 128;

/// The `uring` model.
#[derive(Debug)]
pub struct UringModel {
    watchdog: Option<Duration>,
}

impl UringModel {
    /// A proactor reporting callbacks that hold the loop longer than `watchdog` (`None`: no
    /// watchdog).
    pub fn new(watchdog: Option<Duration>) -> UringModel {
        UringModel { watchdog }
    }
}

impl Model for UringModel {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn flags(&self) -> &'static [crate::Flag] {
        &[crate::Flag::WatchdogMs]
    }

    fn native_db(&self) -> Result<crate::NativeDb, String> {
        Err("the uring model has no database driver written as operations on its ring (the drivers are \
             blocking); use --db-mode offload, which delivers their results through the ring, or inline to \
             see the stall"
            .into())
    }

    fn serve(&self, listener: TcpListener, context: Context) -> io::Result<()> {
        // Non-blocking for the reserve descriptor's `accept4` (the ring's accepts do not care).
        listener.set_nonblocking(true)?;
        keep_reserve_descriptor();
        let ring = Ring::open()?;
        let app = Arc::clone(&context.app);
        let watchdog = Watchdog::new(self.watchdog, move |_| {
            app.metrics().slow_callbacks.inc();
        });
        let doorbell = Doorbell::new()?;
        let shutdown_waker = doorbell.waker(LOOP);
        if context.shutdown.poll(&shutdown_waker).is_ready() {
            return Ok(());
        }
        info!(
            db_mode = ?context.db_mode,
            watchdog_ms = self.watchdog.map(|w| w.as_millis() as u64),
            "uring model: one thread, a proactor over io_uring"
        );
        let mut proactor = Proactor {
            ring,
            listener: Some(listener),
            accepting: false,
            accept_paused: false,
            context,
            conns: HashMap::new(),
            next_token: FIRST_CONNECTION,
            timers: Timers::default(),
            remote: doorbell.remote(),
            doorbell,
            ringing: false,
            shutdown_waker,
            woken: VecDeque::new(),
            watchdog,
            open: Arc::new(Open::default()),
            stopped: false,
            failed: None,
        };
        proactor.run()
    }
}

/// What a completion's tag names: the operation, and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Doorbell,
    Recv,
    Send,
    Shutdown,
    Cancel,
    Close,
    /// The cancellation of everything, at a stop.
    Stop,
}

/// The `user_data` of a submission: the operation in the low byte, the token above. A
/// connection has at most one operation of each kind in flight, so a tag names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    op: Op,
    token: Token,
}

impl Tag {
    fn new(op: Op, token: Token) -> Tag {
        Tag { op, token }
    }

    fn bits(self) -> u64 {
        ((self.token.0 as u64) << 8) | self.op as u64
    }

    fn from_bits(bits: u64) -> Option<Tag> {
        let op = match bits & 0xff {
            1 => Op::Accept,
            2 => Op::Doorbell,
            3 => Op::Recv,
            4 => Op::Send,
            5 => Op::Shutdown,
            6 => Op::Cancel,
            7 => Op::Close,
            8 => Op::Stop,
            _ => return None,
        };
        Some(Tag { op, token: Token((bits >> 8) as usize) })
    }
}

/// The loop and everything it serves.
struct Proactor {
    ring: Ring,
    /// `None` once the drain began.
    listener: Option<TcpListener>,
    /// The multishot accept is in flight.
    accepting: bool,
    /// Out of descriptors with no reserve: accepting resumes on the listener's timer.
    accept_paused: bool,
    context: Context,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    timers: Timers,
    doorbell: Doorbell<StoreDone>,
    /// What the offload pool's jobs post their results through.
    remote: Remote<StoreDone>,
    /// The doorbell's read is in flight.
    ringing: bool,
    shutdown_waker: Waker,
    /// Woken connections not called back yet, in the order they were woken.
    woken: VecDeque<Token>,
    watchdog: Watchdog,
    open: Arc<Open>,
    stopped: bool,
    /// Why the loop stopped on its own, if it did.
    failed: Option<io::Error>,
}

impl Proactor {
    /// Ticks until the shutdown fires, then gets every operation's memory back.
    fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        self.arm_doorbell();
        while !self.stopped {
            // 1. The nearest deadline; none at all while woken connections wait.
            let timeout = match self.woken.is_empty() {
                true => self.timers.nearest().map(|at| at.saturating_duration_since(Instant::now())),
                false => Some(Duration::ZERO),
            };
            // 2. Submit and wait, in one call.
            self.ring.submit_and_wait(timeout)?;
            // 3. Completions, in the kernel's order.
            let reaped = self.ring.reap();
            for &completion in &reaped {
                self.dispatch(completion);
            }
            self.ring.recycle(reaped);
            // 4. Expired deadlines (only those set before this step: no livelock).
            let (now, before) = (Instant::now(), self.timers.mark());
            while let Some(token) = self.timers.pop_expired(now, before) {
                if token == LISTENER {
                    self.accept_paused = false;
                    self.arm_accept();
                } else if token == LOOP {
                    // The drain deadline.
                    self.stopped = true;
                } else {
                    self.with_conn(token, "timer", |conn, _| conn.on_timer());
                }
            }
            // 5. The inbox: results, then a budget of woken connections.
            let inbox = self.doorbell.take();
            for (token, done) in inbox.posted {
                self.with_conn(token, "message", |conn, _| {
                    if let Some(machine) = conn.machine() {
                        machine.handle_store_done(done, crate::common::now());
                    }
                });
            }
            self.woken.extend(inbox.woken);
            for _ in 0..WOKEN_PER_TICK {
                let Some(token) = self.woken.pop_front() else { break };
                if token == LOOP {
                    if self.listener.is_some() && self.context.shutdown.poll(&self.shutdown_waker).is_ready() {
                        self.start_draining();
                    }
                    continue;
                }
                self.with_conn(token, "woken", |conn, _| {
                    if let Some(machine) = conn.machine() {
                        machine.handle_wake(crate::common::now());
                    }
                });
            }
            // Draining, and the last connection is gone (its last completion reaped).
            if self.listener.is_none() && self.conns.is_empty() {
                self.stopped = true;
            }
        }
        match self.conns.len() {
            0 => info!("uring model: stopped; every connection has drained"),
            open => warn!(open, "uring model: the drain deadline passed; closing the connections still open"),
        }
        self.stop();
        self.failed.take().map_or(Ok(()), Err)
    }

    /// The process is stopping: the multishot accept is cancelled and the listener closed
    /// (the ring holds its own reference until the cancelled accept's last completion, so
    /// no accept is left aiming at a reused descriptor), every connection is told, and the
    /// drain deadline is set; the loop stops when the last connection is gone or then.
    fn start_draining(&mut self) {
        if self.accepting {
            let target = Tag::new(Op::Accept, LISTENER).bits();
            if let Err(e) = self.ring.cancel_op(target, Tag::new(Op::Cancel, LISTENER).bits()) {
                debug!("cannot cancel the accept: {e}");
            }
        }
        self.listener = None;
        info!(open = self.conns.len(), "uring model: stopped accepting; draining the open connections");
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            self.with_conn(token, "shutdown", |conn, _| {
                if let Some(machine) = conn.machine() {
                    machine.handle_shutdown(crate::common::now());
                }
            });
        }
        let deadline = self.context.shutdown.drain_deadline().unwrap_or_else(Instant::now);
        self.timers.add(deadline, LOOP);
    }

    fn dispatch(&mut self, completion: Completion) {
        let Some(tag) = Tag::from_bits(completion.user_data) else { return };
        match tag.op {
            Op::Accept => self.on_accept(completion),
            Op::Doorbell => {
                self.ringing = false;
                match completion.result {
                    8 => self.arm_doorbell(),
                    e if e == -libc::ECANCELED && self.stopped => {}
                    // Without its doorbell the loop would not hear the hub or the store:
                    // stop, saying why, rather than serve deaf.
                    other => {
                        let why = match other {
                            e if e < 0 => io::Error::from_raw_os_error(-e),
                            n => io::Error::other(format!("a read of {n} bytes")),
                        };
                        self.failed = Some(io::Error::other(format!("the doorbell's read on the ring failed: {why}")));
                        self.stopped = true;
                    }
                }
            }
            // A connection's close, or the stop's cancellation: nothing waits for them.
            Op::Close | Op::Stop => {}
            op => {
                let kind = match op {
                    Op::Recv => "received",
                    Op::Send => "sent",
                    _ => "completion",
                };
                let found = self.with_conn(tag.token, kind, |conn, cx| conn.on_completion(op, completion, cx));
                if let (false, Some(bid)) = (found, completion.buffer()) {
                    // Bytes for a connection that is gone: the buffer goes back.
                    self.ring.give_back(bid);
                }
            }
        }
    }

    /// Runs one callback of connection `token`, settles it, and forgets and closes it once
    /// it is over. Timed by the watchdog, which names what the connection was serving.
    /// False if there is no such connection (any more).
    fn with_conn(&mut self, token: Token, kind: &'static str, callback: impl FnOnce(&mut Conn, &mut Cx<'_>)) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else { return false };
        let started = self.watchdog.is_on().then(Instant::now);
        let mut cx = Cx {
            ring: &mut self.ring,
            timers: &mut self.timers,
            context: &self.context,
            remote: &self.remote,
            inline_store: false,
        };
        callback(conn, &mut cx);
        let alive = conn.settle(&mut cx);
        let inline = cx.inline_store;
        if let Some(started) = started {
            self.watchdog.observe(kind, token, started, || match inline {
                true => format!("{} (store call inline, on the loop thread)", conn.doing()),
                false => conn.doing().to_string(),
            });
        }
        if !alive {
            if let Some(conn) = self.conns.remove(&token) {
                conn.close(&mut self.ring);
            }
        }
        true
    }

    /// A completion of the multishot accept: a connection, or why there is none.
    fn on_accept(&mut self, c: Completion) {
        if !c.more() {
            self.accepting = false;
        }
        let started = self.watchdog.is_on().then(Instant::now);
        match c.result {
            fd if fd >= 0 => {
                // SAFETY: a successful accept's result is a new descriptor, owned by nobody else.
                let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
                self.on_accepted(stream);
            }
            e if e == -libc::ECANCELED => {}
            // The client gave up before it was accepted: the next one may be waiting.
            e if e == -libc::ECONNABORTED || e == -libc::EINTR => {}
            e => {
                let error = io::Error::from_raw_os_error(-e);
                if is_fd_exhaustion(&error) {
                    self.out_of_descriptors(&error);
                } else {
                    // Armed again at once, an accept that fails at once would spin.
                    warn!("accept: {error}; accepting again in 100 ms");
                    self.pause_accepting();
                }
            }
        }
        if let Some(started) = started {
            self.watchdog.observe("accept", LISTENER, started, || "accept".to_string());
        }
        self.arm_accept();
    }

    /// Starts serving a connection: a slot under `--max-connections` (else 503), its
    /// machine, and its first settle, which arms its receive and its idle deadline.
    fn on_accepted(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let Some(slot) = ConnectionSlot::take(&self.open, &self.context.app) else {
            refuse(stream, &self.context.app.busy("too many connections; try again shortly"));
            return;
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        let machine = connection(&self.context.app, self.doorbell.waker(token), peer_of(&stream));
        self.conns.insert(token, Conn::new(token, stream, machine, slot));
        // Accepted by the cancelled accept before its cancellation took: drained like the others.
        let draining = self.listener.is_none();
        self.with_conn(token, "accept", |conn, _| {
            if let (true, Some(machine)) = (draining, conn.machine()) {
                machine.handle_shutdown(crate::common::now());
            }
        });
    }

    /// Out of descriptors: answer the waiting connections 503 with the reserve descriptor
    /// while it lasts; when it cannot be had, stop accepting for a while (an accept that
    /// fails at once, again and again, would be a spin).
    fn out_of_descriptors(&mut self, error: &io::Error) {
        let Some(listener) = self.listener.as_ref().map(AsRawFd::as_raw_fd) else { return };
        for _ in 0..REFUSALS_PER_CALLBACK {
            match refuse_with_reserve(listener, &self.context.app) {
                Reserve::Refused => {}
                Reserve::Drained => return,
                Reserve::Unavailable => {
                    warn!("accept: {error}; pausing accepts for 100 ms (raise the file limit or lower --max-connections)");
                    if self.accepting {
                        let target = Tag::new(Op::Accept, LISTENER).bits();
                        if let Err(e) = self.ring.cancel_op(target, Tag::new(Op::Cancel, LISTENER).bits()) {
                            error!("cannot pause accepting: {e}");
                        }
                    }
                    return self.pause_accepting();
                }
            }
        }
    }

    /// Cancels everything in flight and reaps until the kernel has let go of all of it
    /// (bounded by [`STOP_GRACE`]; past it the ring's memory is leaked rather than freed
    /// under the kernel: see `ring.rs`). The sockets then close as the connections drop.
    fn stop(&mut self) {
        if let Err(e) = self.ring.cancel_everything(Tag::new(Op::Stop, LOOP).bits()) {
            debug!("cannot cancel the operations in flight: {e}");
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.ring.in_flight() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.ring.submit_and_wait(Some(left)).is_err() {
                break;
            }
            let reaped = self.ring.reap();
            for bid in reaped.iter().filter_map(Completion::buffer) {
                self.ring.give_back(bid);
            }
            self.ring.recycle(reaped);
        }
    }

    fn arm_accept(&mut self) {
        let Some(listener) = &self.listener else { return };
        if self.accepting || self.accept_paused || self.stopped {
            return;
        }
        match self.ring.accept_multishot(listener.as_raw_fd(), Tag::new(Op::Accept, LISTENER).bits()) {
            Ok(()) => self.accepting = true,
            Err(e) => {
                warn!("cannot submit the accept: {e}; trying again in 100 ms");
                self.pause_accepting();
            }
        }
    }

    fn pause_accepting(&mut self) {
        self.accept_paused = true;
        self.timers.add(Instant::now() + ACCEPT_PAUSE, LISTENER);
    }

    fn arm_doorbell(&mut self) {
        if self.ringing || self.stopped {
            return;
        }
        match self.ring.read_doorbell(self.doorbell.fd(), Tag::new(Op::Doorbell, LOOP).bits()) {
            Ok(()) => self.ringing = true,
            // The next tick tries again; meanwhile the inbox is still taken every tick.
            Err(e) => warn!("cannot submit the doorbell's read: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_names_its_operation_and_token_and_foreign_tags_name_nothing() {
        for op in [Op::Accept, Op::Doorbell, Op::Recv, Op::Send, Op::Shutdown, Op::Cancel, Op::Close, Op::Stop] {
            for token in [LISTENER, LOOP, Token(FIRST_CONNECTION), Token(1 << 40)] {
                assert_eq!(Tag::from_bits(Tag::new(op, token).bits()), Some(Tag::new(op, token)));
            }
        }
        assert_eq!(Tag::from_bits(0), None);
        assert_eq!(Tag::from_bits(u64::MAX), None, "the ring's own start-up check");
    }
}
