//! The I/O-based scheduler: coroutines parked on the event loop, resumed by its callbacks.
//!
//! The talk's "custom thread libraries: I/O-based schedulers" (eGroups, IronPort, EVE
//! Online; gevent on libevent). The scheduler is driven by the `Handler` callbacks of the
//! reactor's event loop: a coroutine is a [`Token`], and it suspends itself with a
//! [`Park`] that says what may resume it: its socket becoming ready (the poller), a
//! deadline (a loop timer), its waker (the loop's per-token waker, woken by the hub or the
//! offload pool from any thread). The loop calls back for that token; the scheduler turns
//! the callback into a [`Resumed`] and switches to the coroutine, which runs until it
//! parks again. So every resume runs inside one loop callback, timed by the loop's
//! watchdog, and the scheduler tells the watchdog which route the coroutine is serving.
//!
//! Parking is level-triggered like the poller: the socket interest registered is exactly
//! what the current park asks for (none while the coroutine waits for a store call), so a
//! readable socket nobody reads does not make the loop spin.
//!
//! A waker woken while its coroutine is parked for something else (its socket, say) is
//! remembered and ends the coroutine's next wakeable park at once, as an eventfd that was
//! rung stays rung for a thread: a wake-up is never lost, only sometimes early.
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use tracing::{debug, error, warn};

use super::coroutine::{Coroutine, Stacks, Step, Suspend};
use crate::event::event_loop::{Loop, TimerKey};
use crate::event::{Event, Interest, Token};

/// What a parked coroutine waits for; the first of them to happen resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Park {
    /// Readiness of its socket ([`Interest::NONE`]: the socket does not matter).
    pub(crate) socket: Interest,
    /// Readiness of another descriptor the coroutine is using for the moment (a database
    /// connection driven from the coroutine, `--db-mode native`). Registered only for the
    /// length of this park, so that the descriptor can move to another coroutine after.
    pub(crate) other: Option<(RawFd, Interest)>,
    /// A time to be resumed at, at the latest.
    pub(crate) deadline: Option<Instant>,
    /// Whether its waker ends this park (`false` while it waits for its socket only).
    pub(crate) wakeable: bool,
}

impl Park {
    /// Runnable again on the next tick, after the descriptors ready in that tick have had
    /// their turn (a timer due now runs in the tick's step 4, after step 3's dispatch).
    pub(crate) fn yield_now() -> Park {
        Park { socket: Interest::NONE, other: None, deadline: Some(Instant::now()), wakeable: false }
    }

    /// Parked on `fd` (not its own socket) becoming ready for `interest`, until `deadline`.
    pub(crate) fn other(fd: RawFd, interest: Interest, deadline: Instant) -> Park {
        Park { socket: Interest::NONE, other: Some((fd, interest)), deadline: Some(deadline), wakeable: false }
    }
}

/// Why a parked coroutine was resumed. Any of them may be spurious: re-check, park again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// Its socket is ready for (some of) the interest it parked with.
    Ready,
    /// Its deadline passed.
    Deadline,
    /// Its waker was woken.
    Woken,
}

/// What a coroutine says it is serving, for the watchdog.
#[derive(Debug, Default)]
pub(crate) struct Doing {
    what: RefCell<String>,
    note: Cell<&'static str>,
}

impl Doing {
    /// Replaces what it is doing (and drops the note).
    pub(crate) fn set(&self, what: std::fmt::Arguments<'_>) {
        let mut text = self.what.borrow_mut();
        text.clear();
        let _ = text.write_fmt(what);
        self.note.set("");
    }

    /// Adds a note until the next [`Doing::set`].
    pub(crate) fn note(&self, note: &'static str) {
        self.note.set(note);
    }

    fn describe(&self, token: Token) -> String {
        let what = self.what.borrow();
        let what = if what.is_empty() { "(no request yet)" } else { what.as_str() };
        format!("coroutine {} serving {what}{}", token.0, self.note.get())
    }
}

/// Successful socket operations a coroutine may make in a row before it yields to the
/// others (a client that pipelines without pause would otherwise never let go).
const BUDGET: u32 = 64;

/// The coroutine's side of the scheduler: how it parks, its waker, what it is doing.
pub(crate) struct Fiber<'a> {
    suspend: &'a Suspend<'a, Resumed, Park>,
    waker: Waker,
    fd: RawFd,
    doing: Rc<Doing>,
    budget: Cell<u32>,
}

impl Fiber<'_> {
    /// Suspends this coroutine until `park` is satisfied; says why it was resumed.
    pub(crate) fn park(&self, park: Park) -> Resumed {
        self.budget.set(0);
        self.suspend.suspend(park)
    }

    /// Counts one socket operation that did not park, and yields once the budget is spent.
    pub(crate) fn spend(&self) {
        self.count();
        self.yield_if_spent();
    }

    /// Counts one socket operation that did not park, without yielding: for an operation
    /// whose caller may hold what another coroutine needs (the driver's shared read
    /// buffer); the caller yields later, through [`Fiber::yield_if_spent`].
    pub(crate) fn count(&self) {
        self.budget.set(self.budget.get() + 1);
    }

    /// Yields to the others if the budget of operations without parking is spent.
    pub(crate) fn yield_if_spent(&self) {
        if self.budget.get() >= BUDGET {
            self.park(Park::yield_now());
        }
    }

    /// The waker that resumes this coroutine from any thread.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The coroutine's socket: the only descriptor it can park on.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// What it is serving, for the watchdog's report.
    pub(crate) fn doing(&self) -> &Doing {
        &self.doing
    }
}

/// One coroutine and what it is parked on.
struct Task {
    // Declared first so it is dropped first: unwinding a suspended coroutine runs the
    // destructors on its stack while its socket (below) is still open.
    co: Coroutine<Resumed, Park>,
    fd: RawFd,
    /// Keeps the descriptor open until it has been deregistered (the coroutine holds
    /// another handle and drops it when it returns, before the scheduler hears of it).
    _socket: Rc<dyn AsRawFd>,
    registered: Interest,
    /// The other descriptor registered for the current park, if any.
    other_registered: Option<RawFd>,
    timer: Option<TimerKey>,
    /// Set while parked.
    park: Option<Park>,
    /// Its waker was woken while it was parked unwakeably.
    woken_meanwhile: bool,
    doing: Rc<Doing>,
}

/// The coroutines of one event loop, by token.
pub(crate) struct Scheduler {
    tasks: HashMap<Token, Task>,
    next_token: usize,
    stacks: Stacks,
}

impl Scheduler {
    /// A scheduler numbering its coroutines from `first_token` (never reused), running
    /// each on a stack from `stacks`.
    pub(crate) fn new(first_token: usize, stacks: Stacks) -> Scheduler {
        Scheduler { tasks: HashMap::new(), next_token: first_token, stacks }
    }

    /// How many coroutines are alive.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The usable size of each coroutine's stack.
    pub(crate) fn stack_size(&self) -> usize {
        self.stacks.size()
    }

    /// Starts a coroutine for `socket`, parked on `first`; `body` runs on its own stack
    /// from the first resume, with the reason for it. Fails, dropping `body` unrun, when
    /// no stack can be mapped or the poller refuses the descriptor.
    pub(crate) fn spawn<M: Send + 'static, S: AsRawFd + 'static>(
        &mut self,
        lp: &mut Loop<M>,
        socket: &Rc<S>,
        first: Park,
        body: impl FnOnce(&Fiber<'_>, Resumed) + 'static,
    ) -> io::Result<Token> {
        let stack = self.stacks.take()?;
        let token = Token(self.next_token);
        let fd = socket.as_raw_fd();
        if let Err(e) = lp.register(fd, token, first.socket) {
            drop(stack); // unmapped: this is the rare path (select past FD_SETSIZE)
            return Err(e);
        }
        self.next_token += 1;
        let waker = lp.waker(token);
        let doing = Rc::new(Doing::default());
        let fiber_doing = Rc::clone(&doing);
        let co = Coroutine::new(stack, move |suspend: &Suspend<'_, Resumed, Park>, why: Resumed| {
            let fiber = Fiber { suspend, waker, fd, doing: fiber_doing, budget: Cell::new(0) };
            body(&fiber, why);
        });
        let socket: Rc<dyn AsRawFd> = Rc::clone(socket) as Rc<dyn AsRawFd>;
        let mut task = Task {
            co,
            fd,
            _socket: socket,
            registered: first.socket,
            other_registered: None,
            timer: None,
            park: None,
            woken_meanwhile: false,
            doing,
        };
        task.park_on(lp, token, first);
        self.tasks.insert(token, task);
        Ok(token)
    }

    /// The socket of coroutine `event.token` is ready.
    pub(crate) fn on_ready<M: Send + 'static>(&mut self, lp: &mut Loop<M>, event: Event) {
        let Some(park) = self.parked(event.token) else { return };
        // An event for the token may be the other descriptor's: resume, the coroutine
        // re-checks (as for any spurious readiness).
        let wanted = park.other.is_some()
            || (park.socket.readable && event.readable)
            || (park.socket.writable && event.writable);
        if wanted {
            self.resume(lp, event.token, Resumed::Ready);
        }
    }

    /// The timer of coroutine `token` expired.
    pub(crate) fn on_timer<M: Send + 'static>(&mut self, lp: &mut Loop<M>, token: Token) {
        let Some(task) = self.tasks.get_mut(&token) else { return };
        // Only the current timer counts (a cancelled one never fires, but be sure).
        match task.timer {
            Some(key) if key.at() <= Instant::now() => task.timer = None,
            _ => return,
        }
        if task.park.is_some() {
            self.resume(lp, token, Resumed::Deadline);
        }
    }

    /// The waker of coroutine `token` was woken.
    pub(crate) fn on_woken<M: Send + 'static>(&mut self, lp: &mut Loop<M>, token: Token) {
        let Some(task) = self.tasks.get_mut(&token) else { return };
        match task.park {
            Some(park) if park.wakeable => self.resume(lp, token, Resumed::Woken),
            _ => task.woken_meanwhile = true,
        }
    }

    /// Wakes every coroutine, as if each one's waker had been woken.
    pub(crate) fn wake_all<M: Send + 'static>(&mut self, lp: &mut Loop<M>) {
        let tokens: Vec<Token> = self.tasks.keys().copied().collect();
        for token in tokens {
            self.on_woken(lp, token);
        }
    }

    fn parked(&self, token: Token) -> Option<Park> {
        self.tasks.get(&token).and_then(|task| task.park)
    }

    /// Switches to coroutine `token` until it parks again or ends, then tells the
    /// watchdog what it was serving.
    fn resume<M: Send + 'static>(&mut self, lp: &mut Loop<M>, token: Token, why: Resumed) {
        let Some(task) = self.tasks.get_mut(&token) else { return };
        let mut why = why;
        let finished = loop {
            task.park = None;
            task.forget_other(lp, token);
            if why == Resumed::Woken {
                task.woken_meanwhile = false;
            }
            match task.co.resume(why) {
                Step::Suspended(park) => {
                    if park.wakeable && task.woken_meanwhile {
                        // Woken while it was busy: this wait is over before it began.
                        why = Resumed::Woken;
                        continue;
                    }
                    break !task.park_on(lp, token, park);
                }
                Step::Finished => break true,
                Step::Panicked(message) => {
                    error!(token = token.0, doing = %task.doing.describe(token), "a coroutine panicked: {message}; its connection is closed");
                    break true;
                }
            }
        };
        lp.doing(task.doing.describe(token));
        if finished {
            self.end(lp, token);
        }
    }

    /// Forgets coroutine `token`: its timer, its registration (before its descriptor is
    /// closed, as the poller contract asks), its stack (kept for reuse), then its socket.
    fn end<M: Send + 'static>(&mut self, lp: &mut Loop<M>, token: Token) {
        let Some(mut task) = self.tasks.remove(&token) else { return };
        if let Some(key) = task.timer.take() {
            lp.cancel_timer(key);
        }
        task.forget_other(lp, token);
        if let Err(e) = lp.deregister(task.fd) {
            debug!(token = token.0, "deregister: {e}");
        }
        if task.co.is_finished() {
            let Task { co, _socket, .. } = task;
            self.stacks.recycle(co);
        }
        // An unfinished one (a failed reregister) is unwound here, when `task` drops.
    }
}

impl Task {
    /// Unregisters the other descriptor of the park that just ended, before the coroutine
    /// runs (and may hand the descriptor to another coroutine).
    fn forget_other<M: Send + 'static>(&mut self, lp: &mut Loop<M>, token: Token) {
        if let Some(fd) = self.other_registered.take() {
            if let Err(e) = lp.deregister(fd) {
                debug!(token = token.0, fd, "deregister the other descriptor: {e}");
            }
        }
    }

    /// Records `park` and makes the poller and the timers match it. False if the poller
    /// refused (the coroutine then ends).
    fn park_on<M: Send + 'static>(&mut self, lp: &mut Loop<M>, token: Token, park: Park) -> bool {
        if park.socket != self.registered {
            if let Err(e) = lp.reregister(self.fd, token, park.socket) {
                warn!(token = token.0, "cannot change what the poller watches: {e}; closing the connection");
                return false;
            }
            self.registered = park.socket;
        }
        if let Some((fd, interest)) = park.other {
            if let Err(e) = lp.register(fd, token, interest) {
                warn!(token = token.0, "cannot watch descriptor {fd} for its coroutine: {e}; closing the connection");
                return false;
            }
            self.other_registered = Some(fd);
        }
        if self.timer.map(TimerKey::at) != park.deadline {
            if let Some(key) = self.timer.take() {
                lp.cancel_timer(key);
            }
            self.timer = park.deadline.map(|at| lp.add_timer(at, token));
        }
        self.park = Some(park);
        true
    }
}
