//! One connection on the ring: the core's machine, the operations in flight for it, and
//! what it received while it wanted nothing.
//!
//! A readiness driver asks "may I read?" before each read, and the machine's
//! [`interest`](Connection::interest) answers. A completion driver has asked in advance:
//! the multishot receive stays armed and the kernel delivers whenever bytes come, wanted or
//! not. So bytes that arrive while the machine wants none (an answer still unwritten, a
//! store call out) go to a stash and are given to the machine, in order and before the end
//! of the stream, once it wants them again. The stash is bounded: past [`STASH_CAP`] the
//! receive is cancelled, the kernel's socket buffer fills, and TCP pushes back on the
//! client, as it does when a reactor stops reading. A client that pipelines without reading
//! cannot make the server buffer without bound on this model either.

use std::mem;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use c10k_core::chat::{StoreCall, StoreDone};
use c10k_core::conn::{Action, Connection};
use tracing::debug;

use super::doorbell::Remote;
use super::ring::{Completion, Ring};
use super::{Op, Tag};
use crate::common::{now, ConnectionSlot};
use crate::event::event_loop::{TimerKey, Timers};
use crate::event::Token;
use crate::{Context, DbMode};

/// Bytes kept for a machine that wants none before the receive is cancelled (see the
/// module doc). A request head's limit's worth.
const STASH_CAP: usize = 16 * 1024;
/// The most of [`Connection::transmit`] one send carries (and copies): a larger output, a
/// history dump or a slow subscriber's backlog, goes out in several.
const SEND_CHUNK: usize = 64 * 1024;

/// The multishot receive of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// None in flight: armed again when the machine wants bytes.
    Off,
    /// In flight: completions bring bytes until one without `IORING_CQE_F_MORE`.
    Armed,
    /// A cancellation was asked for; the receive's last completion has not come yet. A new
    /// receive waits for it: two on one socket could deliver out of order.
    Cancelling,
}

/// What the connection's callbacks get besides the connection.
pub(crate) struct Cx<'a> {
    pub(crate) ring: &'a mut Ring,
    pub(crate) timers: &'a mut Timers,
    pub(crate) context: &'a Context,
    pub(crate) remote: &'a Remote<StoreDone>,
    /// Set when a store call ran inline, for the watchdog's report.
    pub(crate) inline_store: bool,
}

/// One client connection.
pub(crate) struct Conn {
    token: Token,
    /// The socket; taken when it is handed to the ring to close.
    socket: Option<OwnedFd>,
    fd: RawFd,
    machine: Connection,
    recv: Recv,
    /// A send is in flight (the ring owns its bytes).
    sending: bool,
    /// Operations in flight for this connection, cancellations included: the socket is
    /// closed only when none is left.
    ops: u32,
    /// Bytes received while the machine wanted none, oldest first.
    stash: Vec<u8>,
    /// The stream ended (or broke) while the machine wanted nothing: its end is given after
    /// the stash.
    stash_eof: bool,
    /// The receive saw the end of the stream or an error: never armed again.
    hung_up: bool,
    /// The machine said `Close`, or the socket broke: waiting for `ops` to reach zero.
    closing: bool,
    /// Everything in flight on the socket has been cancelled (once is enough).
    cancelled_all: bool,
    /// The loop timer for the machine's deadline.
    timer: Option<TimerKey>,
    _slot: ConnectionSlot,
}

impl Conn {
    /// A connection just accepted, with its machine.
    pub(crate) fn new(token: Token, stream: TcpStream, machine: Connection, slot: ConnectionSlot) -> Conn {
        let socket = OwnedFd::from(stream);
        let fd = socket.as_raw_fd();
        Conn {
            token,
            socket: Some(socket),
            fd,
            machine,
            recv: Recv::Off,
            sending: false,
            ops: 0,
            stash: Vec::new(),
            stash_eof: false,
            hung_up: false,
            closing: false,
            cancelled_all: false,
            timer: None,
            _slot: slot,
        }
    }

    /// The machine, for the inputs that come from elsewhere than the socket (a wake, a
    /// store result, a deadline), or `None` once the connection is closing.
    pub(crate) fn machine(&mut self) -> Option<&mut Connection> {
        (!self.closing).then_some(&mut self.machine)
    }

    /// What the watchdog reports this connection was doing.
    pub(crate) fn doing(&self) -> &str {
        match self.machine.serving() {
            "" => self.machine.doing(),
            serving => serving,
        }
    }

    /// The machine's deadline has come, if `timer` is still its timer.
    pub(crate) fn on_timer(&mut self) {
        if self.closing || self.timer.is_none_or(|key| key.at() > Instant::now()) {
            return;
        }
        self.timer = None;
        self.machine.handle_timeout(now());
    }

    /// A completion of one of this connection's operations.
    pub(crate) fn on_completion(&mut self, op: Op, c: Completion, cx: &mut Cx<'_>) {
        if !c.more() {
            self.ops -= 1;
        }
        match op {
            Op::Recv => self.on_recv(c, cx),
            Op::Send => self.on_sent(c),
            // Their outcome changes nothing: a shutdown that failed found the peer gone,
            // which the receive reports; a cancellation's targets post their own.
            Op::Shutdown | Op::Cancel => {}
            Op::Accept | Op::Doorbell | Op::Close | Op::Stop => unreachable!("not a connection's operation"),
        }
    }

    fn on_recv(&mut self, c: Completion, cx: &mut Cx<'_>) {
        if !c.more() {
            self.recv = Recv::Off;
        }
        match c.result {
            n if n > 0 => {
                let Some(bid) = c.buffer() else {
                    debug!(token = self.token.0, "a receive brought bytes without naming its buffer");
                    return self.break_off();
                };
                cx.ring.with_received(bid, n as usize, |bytes| self.received(bytes));
            }
            0 => self.ended(),
            // The buffer ring ran dry: armed again by `settle`, after this tick's
            // completions have given buffers back.
            e if e == -libc::ENOBUFS => {}
            // Ours: the stash is full, or the connection is closing.
            e if e == -libc::ECANCELED => {}
            e => {
                debug!(token = self.token.0, "receive: {}", std::io::Error::from_raw_os_error(-e));
                self.ended();
            }
        }
    }

    /// Bytes came: to the machine if it wants them and nothing older waits, else stashed.
    fn received(&mut self, bytes: &[u8]) {
        if self.closing {
            return;
        }
        if self.stash.is_empty() && !self.stash_eof && self.machine.interest().read {
            self.machine.handle_bytes(bytes, now());
        } else {
            self.stash.extend_from_slice(bytes);
        }
    }

    /// The stream ended, or the socket broke (treated alike, as the reactor does).
    fn ended(&mut self) {
        self.hung_up = true;
        if self.closing {
            return;
        }
        if self.stash.is_empty() && self.machine.interest().read {
            self.machine.handle_eof(now());
        } else {
            self.stash_eof = true;
        }
    }

    fn on_sent(&mut self, c: Completion) {
        self.sending = false;
        if self.closing {
            return;
        }
        match c.result {
            n if n > 0 => self.machine.consume(n as usize),
            // Nothing sent and no error: the peer cannot take more.
            0 => self.break_off(),
            e => {
                if e != -libc::ECANCELED {
                    debug!(token = self.token.0, "send: {}", std::io::Error::from_raw_os_error(-e));
                }
                self.break_off();
            }
        }
    }

    /// The socket cannot be used any more: close without the machine's close sequence.
    fn break_off(&mut self) {
        self.closing = true;
    }

    /// Does what the machine asks until it waits: actions, the stash once it wants bytes
    /// again, the next send, the receive armed or cancelled, its deadline. Returns false
    /// once the connection is over and no operation of it is in flight: the caller then
    /// forgets it and [`Conn::close`]s it.
    pub(crate) fn settle(&mut self, cx: &mut Cx<'_>) -> bool {
        while !self.closing {
            while let Some(action) = self.machine.poll_action() {
                match action {
                    Action::Store(call) => self.start_store(call, cx),
                    Action::ShutdownWrite => {
                        let tag = Tag::new(Op::Shutdown, self.token).bits();
                        match cx.ring.shutdown_write(self.fd, tag) {
                            Ok(()) => self.ops += 1,
                            Err(e) => debug!(token = self.token.0, "shutdown: {e}"),
                        }
                    }
                    Action::Close => {
                        self.closing = true;
                        break;
                    }
                }
            }
            if self.closing {
                break;
            }
            if self.machine.interest().read {
                if !self.stash.is_empty() {
                    let stash = mem::take(&mut self.stash);
                    self.machine.handle_bytes(&stash, now());
                    continue;
                }
                if self.stash_eof {
                    self.stash_eof = false;
                    self.machine.handle_eof(now());
                    continue;
                }
            }
            break;
        }
        if self.closing {
            return self.wind_down(cx);
        }
        // One send in flight at a time: the machine's bytes are taken (and its replies timed,
        // `transmit(now)`) only when the ring can take them.
        let pending = if self.sending { &[][..] } else { self.machine.transmit(Instant::now()) };
        if !pending.is_empty() {
            let mut bytes = cx.ring.send_buffer();
            bytes.extend_from_slice(&pending[..pending.len().min(SEND_CHUNK)]);
            match cx.ring.send(self.fd, bytes, Tag::new(Op::Send, self.token).bits()) {
                Ok(()) => {
                    self.sending = true;
                    self.ops += 1;
                }
                Err(e) => {
                    debug!(token = self.token.0, "cannot submit a send: {e}");
                    self.closing = true;
                    return self.wind_down(cx);
                }
            }
        }
        let wants = self.machine.interest().read;
        match self.recv {
            Recv::Off if wants && !self.hung_up => match cx.ring.recv_multishot(self.fd, Tag::new(Op::Recv, self.token).bits()) {
                Ok(()) => {
                    self.recv = Recv::Armed;
                    self.ops += 1;
                }
                Err(e) => {
                    debug!(token = self.token.0, "cannot submit a receive: {e}");
                    self.closing = true;
                    return self.wind_down(cx);
                }
            },
            Recv::Armed if !wants && self.stash.len() >= STASH_CAP => self.cancel_recv(cx),
            _ => {}
        }
        let deadline = self.machine.poll_timeout();
        if self.timer.map(TimerKey::at) != deadline {
            if let Some(key) = self.timer.take() {
                cx.timers.cancel(key);
            }
            self.timer = deadline.map(|at| cx.timers.add(at, self.token));
        }
        true
    }

    /// Cancels the receive (the stash is full). It stays marked until its last completion,
    /// so that no other is armed before.
    fn cancel_recv(&mut self, cx: &mut Cx<'_>) {
        let target = Tag::new(Op::Recv, self.token).bits();
        match cx.ring.cancel_op(target, Tag::new(Op::Cancel, self.token).bits()) {
            Ok(()) => {
                self.ops += 1;
                self.recv = Recv::Cancelling;
            }
            Err(e) => debug!(token = self.token.0, "cannot submit a cancellation: {e}"),
        }
    }

    /// The connection is over: its timer goes, what is in flight on the socket is
    /// cancelled (once), and it is done once every operation has posted its last
    /// completion.
    fn wind_down(&mut self, cx: &mut Cx<'_>) -> bool {
        if let Some(key) = self.timer.take() {
            cx.timers.cancel(key);
        }
        if !self.cancelled_all && (self.recv != Recv::Off || self.sending) {
            match cx.ring.cancel_fd(self.fd, Tag::new(Op::Cancel, self.token).bits()) {
                Ok(()) => {
                    self.ops += 1;
                    self.cancelled_all = true;
                }
                // Then the operations end with the client's hang-up or the close grace.
                Err(e) => debug!(token = self.token.0, "cannot submit a cancellation: {e}"),
            }
        }
        self.ops > 0
    }

    /// Runs a store call where `--db-mode` says: at once on this thread (inline: the loop
    /// stalls for as long as the store takes), or on the offload pool, which posts the
    /// result back to this connection's token through the doorbell.
    fn start_store(&mut self, call: StoreCall, cx: &mut Cx<'_>) {
        match cx.context.db_mode {
            // Native is refused for this model at start (`native_db`); inline is the nearest.
            DbMode::Inline | DbMode::Native => {
                cx.inline_store = true;
                let done = call.run(&*cx.context.store);
                self.machine.handle_store_done(done, now());
            }
            DbMode::Offload => {
                if !crate::common::offload_to_token(cx.context, cx.remote.clone(), self.token, call) {
                    self.machine.handle_store_busy(now());
                }
            }
        }
    }

    /// Closes the socket, on the ring. Only once no operation of it is in flight: one still
    /// running would go on with the next connection given the same descriptor number.
    pub(crate) fn close(mut self, ring: &mut Ring) {
        debug_assert_eq!(self.ops, 0);
        if let Some(socket) = self.socket.take() {
            ring.close(socket, Tag::new(Op::Close, self.token).bits());
        }
    }
}
