//! The event machinery of the models that wait in one OS poller (`reactor`, `green`),
//! named for what it is, as nginx's `src/event/`: three pollers behind one contract, and
//! the event loop that drives them (`event_loop.rs`).
//!
//! The pollers are the ones the talk names: `select(2)` ([`Select`], `select.rs`),
//! `poll(2)` ([`PollPoller`], `poll.rs`) and `epoll(7)` ([`Epoll`], `epoll.rs`). Each is one
//! file of a few hundred lines behind the [`Poller`] trait, as nginx keeps one file per
//! event module (`src/event/modules/`) and mio one per OS (`sys/`).
//!
//! # The contract every [`Poller`] keeps
//!
//! **Registration.** A file descriptor is registered once ([`Poller::register`]) with a
//! [`Token`] and an [`Interest`], changed with [`Poller::reregister`], and removed with
//! [`Poller::deregister`] *before it is closed*: the pollers that index by descriptor
//! (select, poll) would otherwise watch whatever the kernel hands that number to next, and
//! epoll would keep reporting a descriptor whose file another process still holds open.
//! Registering a descriptor twice is an error (`AlreadyExists`); so is changing or removing
//! one that is not registered (`NotFound`).
//!
//! **Level-triggered.** All three report a descriptor as ready on every [`Poller::wait`]
//! for as long as it *is* ready (epoll is used without `EPOLLET`). So a handler need not
//! drain a socket to `WouldBlock`: it may read one chunk and return, and it will be called
//! again on the next tick; this is what keeps one busy client from starving the others.
//! The flip side: a handler that leaves a readable socket unread while it still asks for
//! [`Interest::READABLE`] is called again and again (a busy loop). A connection that does
//! not want to hear about its socket for a while (waiting for a store call, say) sets
//! [`Interest::NONE`]: then nothing at all is reported for it, not even hang-up or error,
//! until it asks again. (Plain epoll reports `EPOLLHUP`/`EPOLLERR` even with no events
//! asked for; `epoll.rs` takes such a descriptor out of the kernel's set to keep this
//! promise.)
//!
//! **Hang-up and error** are reported as readiness in the direction(s) the registration
//! asked for: the next `read` or `write` says which it was (0 bytes, or the error). No
//! poller reports them separately, so no handler needs a third code path.
//!
//! **Spurious readiness.** A reported event is a hint, never a promise: the descriptor may
//! give `WouldBlock` by the time it is read (another read took the data, or select's view
//! was stale), and an event may even name a token that the loop deregistered earlier in
//! the same batch. Every handler therefore confirms readiness with the system call itself
//! and treats `WouldBlock` as "not yet". Tokens are never reused by the loop, so a stale
//! event cannot reach a different connection.
//!
//! **Spurious wake-ups.** [`Poller::wait`] may return with no event at all: the timeout
//! passed, a signal interrupted it (`EINTR` is swallowed and reported as an empty wait),
//! or the [`Notifier`] rang. Callers recompute what to do after every wait.
//!
//! **Waking from another thread.** [`Poller::notifier`] gives a cloneable, thread-safe
//! handle whose [`Notifier::wake`] makes the current wait (or the next one, if none is in
//! progress) return promptly. It is an `eventfd(2)` registered by the poller itself under
//! a reserved token; the poller drains it inside `wait` and never reports it as an event.
//! Wakes coalesce: ten wakes before a wait cause one early return, not ten. What was woken
//! is for the caller to keep (the event loop's ready list); the notifier only rings.
//!
//! **Timeouts** round *up* to the poller's resolution ([`Capabilities::timeout_resolution`]):
//! a wait never returns early because of rounding, so a timer due at the end of a wait is
//! always due when the wait returns.
//!
//! **Capabilities are declared, not guessed** (nginx's `NGX_USE_*` flags): each poller
//! states in [`Capabilities`] the highest descriptor it can watch (select: `FD_SETSIZE`,
//! 1024 on Linux), how the cost of a wait grows, and its timeout resolution. A registration
//! beyond `max_fd` fails with `InvalidInput` and a message that says what to do; nothing is
//! ever written past the end of an `fd_set`.
//!
//! **Threads.** A poller is used by one thread (the loop's); only the [`Notifier`] crosses
//! threads. Pollers are `Send`, so the loop may be built on one thread and run on another.

mod epoll;
pub(crate) mod event_loop;
pub(crate) mod inbox;
pub(crate) mod shell;
mod poll;
mod select;

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::EventFd;

pub use epoll::Epoll;
pub use poll::PollPoller;
pub use select::Select;

/// Names what a registration belongs to (a connection, the listener). Chosen by the caller,
/// handed back with each [`Event`]. The event loop never reuses one. `Token(usize::MAX)`
/// is reserved for the pollers' own notifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// Which readiness a registration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interest {
    /// Report when reading would not block (data, end of stream, a pending accept).
    pub readable: bool,
    /// Report when writing would not block.
    pub writable: bool,
}

impl Interest {
    /// Nothing: the descriptor stays registered but nothing is reported, not even hang-up.
    pub const NONE: Interest = Interest { readable: false, writable: false };
    /// Readable only.
    pub const READABLE: Interest = Interest { readable: true, writable: false };
    /// Writable only.
    pub const WRITABLE: Interest = Interest { readable: false, writable: true };
    /// Both.
    pub const BOTH: Interest = Interest { readable: true, writable: true };

    /// Whether nothing is asked for.
    pub fn is_none(self) -> bool {
        !self.readable && !self.writable
    }
}

/// One readiness report from [`Poller::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The registration's token.
    pub token: Token,
    /// Reading would not block (or the peer hung up, or there is an error). Only ever
    /// set if the registration asked for [`Interest::readable`].
    pub readable: bool,
    /// Writing would not block (or the peer hung up, or there is an error). Only ever set
    /// if the registration asked for [`Interest::writable`].
    pub writable: bool,
}

/// How the cost of one wait grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCost {
    /// With the number of registered descriptors (select, poll: the whole set is handed to
    /// the kernel and scanned on every call).
    PerRegistered,
    /// With the number of ready descriptors (epoll: the interest set lives in the kernel).
    PerReady,
}

/// What a poller can do, declared by the poller (never probed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The name given to `--poller`.
    pub name: &'static str,
    /// Descriptors at or above this cannot be registered (`None`: only the process's file
    /// limit bounds them).
    pub max_fd: Option<RawFd>,
    /// Whether readiness is reported once per change (edge) rather than while it lasts
    /// (level). False for all three here; see the module docs.
    pub edge_triggered: bool,
    /// How a wait's cost grows.
    pub cost: WaitCost,
    /// The finest timeout the system call takes; timeouts round up to it.
    pub timeout_resolution: Duration,
}

/// The cross-thread doorbell of a poller: [`Notifier::wake`] makes its current or next
/// [`Poller::wait`] return. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Notifier(Arc<EventFd>);

impl Notifier {
    fn new() -> io::Result<Notifier> {
        Ok(Notifier(Arc::new(EventFd::new()?)))
    }

    /// Rings the bell. Never blocks; wakes coalesce.
    pub fn wake(&self) {
        self.0.ring();
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// The eventfd itself, for the loop's inbox to ring.
    pub(crate) fn bell(&self) -> Arc<EventFd> {
        Arc::clone(&self.0)
    }

    /// Silences the bell after a wait saw it ring.
    fn drain(&self) {
        self.0.drain();
    }
}

/// The token pollers use internally for their own notifier; never reported.
const NOTIFIER_TOKEN: Token = Token(usize::MAX);

/// An OS readiness poller. See the module docs for the contract (level-triggered, spurious
/// readiness and wake-ups, hang-up as readable, deregister before close).
pub trait Poller: Send {
    /// A new poller with its notifier registered. Fails if the OS refuses the descriptors.
    fn new() -> io::Result<Self>
    where
        Self: Sized;

    /// What this poller can do.
    fn capabilities(&self) -> Capabilities;

    /// Starts watching `fd` for `interest`, reporting it as `token`.
    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;

    /// Changes what `fd` is watched for (and its token).
    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;

    /// Stops watching `fd`. Call it before closing `fd`.
    fn deregister(&mut self, fd: RawFd) -> io::Result<()>;

    /// Waits until some registered descriptor is ready, the notifier rings, or `timeout`
    /// passes (`None`: no timeout), and appends the ready ones to `events`. May append
    /// nothing (see "spurious wake-ups").
    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;

    /// The handle other threads use to interrupt [`Poller::wait`].
    fn notifier(&self) -> Notifier;
}

/// The pollers `--poller` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollerKind {
    /// `select(2)`: descriptors below 1024 only.
    Select,
    /// `poll(2)`.
    Poll,
    /// `epoll(7)` (the default: its cost grows with activity, not with idle connections).
    #[default]
    Epoll,
}

impl PollerKind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [PollerKind; 3] = [PollerKind::Select, PollerKind::Poll, PollerKind::Epoll];

    /// The name given to `--poller`.
    pub fn name(self) -> &'static str {
        match self {
            PollerKind::Select => "select",
            PollerKind::Poll => "poll",
            PollerKind::Epoll => "epoll",
        }
    }

    /// A new poller of this kind.
    pub fn open(self) -> io::Result<Box<dyn Poller>> {
        Ok(match self {
            PollerKind::Select => Box::new(Select::new()?),
            PollerKind::Poll => Box::new(PollPoller::new()?),
            PollerKind::Epoll => Box::new(Epoll::new()?),
        })
    }
}

impl fmt::Display for PollerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PollerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<PollerKind, String> {
        PollerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown poller {s:?}; choose one of: select, poll, epoll"))
    }
}

/// Milliseconds for `poll(2)`/`epoll_wait(2)`, rounded up so a wait never ends early;
/// -1 (forever) for no timeout; capped to fit an `int`.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    }
}

fn not_registered(fd: RawFd) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("fd {fd} is not registered with this poller"))
}

fn already_registered(fd: RawFd) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("fd {fd} is already registered with this poller; use reregister to change its interest"),
    )
}
