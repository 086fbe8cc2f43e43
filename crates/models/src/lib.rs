//! The concurrency models of the C10K talk, each serving the same c10k application.
//!
//! A model owns the sockets and the waiting; the application (`c10k_core::chat::App`)
//! owns every decision. Each model turns the application's [`Outcome`]s into writes,
//! store calls and waits, in its own way:
//!
//! | model | talk | where it waits |
//! |---|---|---|
//! | `async` ([`async_tokio`]) | generator coroutines; Erlang's green threads on OS threads | a task returns `Pending`; tokio's scheduler runs another |
//! | `threads` ([`threads`]) | Apache 2: a thread per connection | the thread blocks in `read` or `poll(2)` |
//! | `pool` ([`pool`]) | Apache 2's worker MPM: a bounded pool | a worker blocks for its connection's life |
//! | `prefork` ([`prefork`]) | Apache 1: processes, prefork | a worker process blocks in `accept`, then on its one connection |
//! | `reactor` ([`reactor`], pollers and loop in [`event`]) | nginx, Twisted, Tornado: select/poll/epoll + callbacks | one thread waits in the poller; each connection is a callback |
//! | `green` ([`green`]) | Stackless, gevent: "custom thread libraries: I/O-based schedulers" | a coroutine parks on the reactor's loop; the thread waits in the poller |
//! | `uring` ([`uring`]) | "aio": completion, not readiness (io_uring) | one thread waits in `io_uring_enter` for operations the kernel has done |
//!
//! The blocking models share one connection driver (`blocking.rs`) written as straight-line
//! code; each supplies how it sleeps: an OS thread in `poll(2)` (`threads`, `pool`,
//! `prefork`), or a coroutine that yields to its scheduler (`green`).
//!
//! Any model runs as several processes with `--workers N` ("mix processes and threads"):
//! [`prefork::run_master`] forks them on one listening socket and relays messages between
//! them. Worker processes tag every response `X-C10k-Worker: PID`; a model encodes its
//! responses through `common::tagged` so that the tag is there.
//!
//! A model is chosen by name with [`by_name`]; the binary has one `match` and nothing else
//! model-specific.
//!
//! [`Outcome`]: c10k_core::chat::Outcome
#![deny(missing_docs)]

mod acceptor;
pub mod async_tokio;
mod blocking;
mod common;
pub mod event;
pub mod green;
pub mod pool;
pub mod prefork;
pub mod process;
pub mod reactor;
mod shutdown;
mod sys;
mod thread_wait;
pub mod threads;
pub mod uring;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use c10k_core::chat::App;
use c10k_core::store::{AsyncStore, Store};
use c10k_store::OffloadPool;

pub use shutdown::{Shutdown, Subscription, DEFAULT_DRAIN_TIMEOUT};

/// Where blocking store calls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbMode {
    /// On the offload pool; the serving thread goes on with other work meanwhile.
    Offload,
    /// On the serving thread itself: a slow query stalls everything that thread serves
    /// (the talk: "if you block while talking to a database, you block all the requests").
    Inline,
    /// Through a driver that cooperates with the model's own way of waiting, where the
    /// model has one ([`Model::native_db`]): an async driver awaited by the task (`async`),
    /// or the blocking driver on the connection's own thread (`threads`, `pool`,
    /// `prefork`, where blocking a thread is how everything waits).
    Native,
}

/// What `--db-mode native` means for a model ([`Model::native_db`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeDb {
    /// An async driver, awaited by the connection's task: [`Context::native`] must be set.
    Async,
    /// The blocking driver, called on the connection's own thread: the same as
    /// [`DbMode::Inline`], which for a thread per connection stalls no one else.
    OwnThread,
    /// A driver the model runs over its own scheduler (green: PostgreSQL over green
    /// sockets); [`Context::native`] must be [`NativeDriver::Cooperative`].
    Cooperative,
}

/// The driver of [`DbMode::Native`], as the binary opens it for the model.
#[derive(Clone)]
pub enum NativeDriver {
    /// An async driver (`mysql_async`, `tokio-postgres`) for a model that awaits.
    Async(Arc<dyn AsyncStore>),
    /// What each event loop of a cooperative model makes its own driver from (it is
    /// neither `Send` nor `Sync`, so it cannot be made once and shared).
    Cooperative {
        /// The `--db` URL.
        url: String,
        /// Its timeout, connections and demonstration sleep.
        options: c10k_store::StoreOptions,
    },
}

/// Everything a model needs besides its listener.
#[derive(Clone)]
pub struct Context {
    /// The application.
    pub app: Arc<App>,
    /// Durable storage (blocking).
    pub store: Arc<dyn Store>,
    /// The pool that runs store calls in [`DbMode::Offload`].
    pub offload: Arc<OffloadPool>,
    /// Where store calls run.
    pub db_mode: DbMode,
    /// The driver of [`DbMode::Native`] for a model that has one besides its own thread.
    pub native: Option<NativeDriver>,
    /// Fires once when the process should stop.
    pub shutdown: Shutdown,
}

/// The model flags as given on the command line: `None` (or `false`) where a flag was not
/// given and the model's default applies. Each model says which it takes
/// ([`Model::flags`]); [`by_name`] refuses the others, naming the models that take them.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// `--threads`: serving threads, for the models that have a fixed number (`async`:
    /// tokio workers, default one per core; `pool`: workers, default 64).
    pub threads: Option<usize>,
    /// `--stack-size`: bytes of stack of each connection's thread or coroutine (`threads`,
    /// `pool`, `green`; default [`DEFAULT_STACK_SIZE`]).
    pub stack_size: Option<usize>,
    /// `--queue`: accepted connections that may wait for a `pool` worker before 503
    /// (default [`DEFAULT_QUEUE`]).
    pub queue: Option<usize>,
    /// `--giant-lock`: one global lock around all application handling (`threads`, `pool`).
    pub giant_lock: bool,
    /// `--poller`: the OS poller of the event loop (`reactor`, `green`; default epoll).
    pub poller: Option<event::PollerKind>,
    /// `--watchdog-ms`: callbacks (or coroutine resumes) that hold the event loop longer
    /// are logged and counted (`reactor`, `green`, `uring`; default [`DEFAULT_WATCHDOG_MS`]; 0: off).
    pub watchdog_ms: Option<u64>,
}

/// A model flag of [`ModelOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `--threads`.
    Threads,
    /// `--stack-size`.
    StackSize,
    /// `--queue`.
    Queue,
    /// `--giant-lock`.
    GiantLock,
    /// `--poller`.
    Poller,
    /// `--watchdog-ms`.
    WatchdogMs,
}

impl Flag {
    /// As written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Flag::Threads => "--threads",
            Flag::StackSize => "--stack-size",
            Flag::Queue => "--queue",
            Flag::GiantLock => "--giant-lock",
            Flag::Poller => "--poller",
            Flag::WatchdogMs => "--watchdog-ms",
        }
    }
}

/// The stack of a connection's thread or coroutine when `--stack-size` is not given.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;
/// How many connections may wait for a `pool` worker when `--queue` is not given.
pub const DEFAULT_QUEUE: usize = 1024;
/// The event loop's watchdog threshold when `--watchdog-ms` is not given.
pub const DEFAULT_WATCHDOG_MS: u64 = 100;

impl ModelOptions {
    /// The flags that were given.
    fn given(&self) -> Vec<Flag> {
        let mut given = Vec::new();
        let pairs = [
            (self.threads.is_some(), Flag::Threads),
            (self.stack_size.is_some(), Flag::StackSize),
            (self.queue.is_some(), Flag::Queue),
            (self.giant_lock, Flag::GiantLock),
            (self.poller.is_some(), Flag::Poller),
            (self.watchdog_ms.is_some(), Flag::WatchdogMs),
        ];
        for (is_given, flag) in pairs {
            if is_given {
                given.push(flag);
            }
        }
        given
    }

    fn stack_size(&self) -> usize {
        self.stack_size.unwrap_or(DEFAULT_STACK_SIZE)
    }

    fn poller(&self) -> event::PollerKind {
        self.poller.unwrap_or(event::PollerKind::Epoll)
    }

    fn watchdog(&self) -> Option<std::time::Duration> {
        match self.watchdog_ms.unwrap_or(DEFAULT_WATCHDOG_MS) {
            0 => None,
            ms => Some(std::time::Duration::from_millis(ms)),
        }
    }
}

/// A concurrency model: serves the application on a listener until shutdown.
pub trait Model {
    /// The name given to `--model`.
    fn name(&self) -> &'static str;

    /// Serves connections from `listener` until `context.shutdown` fires, then returns.
    fn serve(&self, listener: TcpListener, context: Context) -> io::Result<()>;

    /// What `--db-mode native` is on this model, or why it has no native way to talk to a
    /// database (the default: then the binary refuses the flag with that reason).
    fn native_db(&self) -> Result<NativeDb, String> {
        Err(format!(
            "the {} model has no database driver that cooperates with its way of waiting; use --db-mode \
             offload (the blocking driver on a thread pool) or inline",
            self.name()
        ))
    }

    /// The model flags this model takes ([`ModelOptions`]); [`by_name`] refuses the rest.
    fn flags(&self) -> &'static [Flag] {
        &[]
    }

    /// Whether the model only makes sense as worker processes under the prefork master
    /// (`prefork`: one connection per process), even with `--workers 1`.
    fn forks(&self) -> bool {
        false
    }
}

/// The names `--model` accepts, for `--help` and error messages.
pub const MODEL_NAMES: &[&str] = &["async", "threads", "pool", "prefork", "reactor", "green", "uring"];

/// The model called `name`, built from `options`: refused, saying what to do, when there
/// is no such model, when a flag was given that it does not take (naming the models that
/// take it), or when a value is out of range.
pub fn by_name(name: &str, options: &ModelOptions) -> Result<Box<dyn Model>, String> {
    let model = build(name, options)
        .ok_or_else(|| format!("unknown model {name:?}; choose one of: {}", MODEL_NAMES.join(", ")))?;
    for flag in options.given() {
        if !model.flags().contains(&flag) {
            let defaults = ModelOptions::default();
            let takers: Vec<&str> = MODEL_NAMES
                .iter()
                .copied()
                .filter(|other| build(other, &defaults).is_some_and(|m| m.flags().contains(&flag)))
                .collect();
            return Err(format!(
                "{} applies to the {} model{}, not {name:?}",
                flag.name(),
                join_and(&takers),
                if takers.len() == 1 { "" } else { "s" }
            ));
        }
    }
    if options.threads == Some(0) {
        return Err("--threads must be at least 1 (leave it out for the model's default)".into());
    }
    if options.queue == Some(0) {
        return Err("--queue must be at least 1".into());
    }
    Ok(model)
}

/// "a", "a and b", "a, b and c".
fn join_and(names: &[&str]) -> String {
    match names {
        [] => "no".to_string(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn build(name: &str, options: &ModelOptions) -> Option<Box<dyn Model>> {
    let threads = options.threads.unwrap_or(0);
    let stack_size = options.stack_size();
    Some(match name {
        "async" => Box::new(async_tokio::AsyncModel::new(threads)),
        "threads" => Box::new(threads::ThreadsModel::new(stack_size, options.giant_lock)),
        "pool" => Box::new(pool::PoolModel::new(
            threads,
            options.queue.unwrap_or(DEFAULT_QUEUE),
            stack_size,
            options.giant_lock,
        )),
        "prefork" => Box::new(prefork::PreforkModel::new()),
        "reactor" => Box::new(reactor::ReactorModel::new(options.poller(), options.watchdog())),
        "green" => Box::new(green::GreenModel::new(options.poller(), options.watchdog(), stack_size)),
        "uring" => Box::new(uring::UringModel::new(options.watchdog())),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_the_model_does_not_take_is_refused_naming_the_models_that_do() {
        let giant = ModelOptions { giant_lock: true, ..ModelOptions::default() };
        let err = by_name("reactor", &giant).err().expect("refused");
        assert_eq!(err, "--giant-lock applies to the threads and pool models, not \"reactor\"");
        let poller = ModelOptions { poller: Some(event::PollerKind::Poll), ..ModelOptions::default() };
        let err = by_name("async", &poller).err().expect("refused");
        assert_eq!(err, "--poller applies to the reactor and green models, not \"async\"");
        let queue = ModelOptions { queue: Some(8), ..ModelOptions::default() };
        assert_eq!(by_name("threads", &queue).err().unwrap(), "--queue applies to the pool model, not \"threads\"");
    }

    #[test]
    fn every_model_takes_its_own_flags_and_builds_with_none() {
        for name in MODEL_NAMES {
            let model = by_name(name, &ModelOptions::default()).expect("builds with defaults");
            assert_eq!(model.name(), *name);
        }
        let all = ModelOptions {
            threads: Some(2),
            stack_size: Some(128 * 1024),
            queue: Some(4),
            giant_lock: true,
            ..ModelOptions::default()
        };
        assert!(by_name("pool", &all).is_ok());
        let event = ModelOptions { poller: Some(event::PollerKind::Select), watchdog_ms: Some(0), stack_size: Some(65536), ..ModelOptions::default() };
        assert!(by_name("green", &event).is_ok());
    }

    #[test]
    fn unknown_models_and_zero_counts_say_what_to_do() {
        assert!(by_name("nosuch", &ModelOptions::default()).err().unwrap().contains("choose one of: async"));
        let zero = ModelOptions { threads: Some(0), ..ModelOptions::default() };
        assert!(by_name("async", &zero).err().unwrap().contains("at least 1"));
    }
}
