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
//! | `reactor` ([`reactor_model`], pollers in [`reactor`]) | nginx, Twisted, Tornado: select/poll/epoll + callbacks | one thread waits in the poller; each connection is a callback |
//! | `green` ([`green`]) | Stackless, gevent: "custom thread libraries: I/O-based schedulers" | a coroutine parks on the reactor's loop; the thread waits in the poller |
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
pub mod green;
pub mod pool;
pub mod prefork;
pub mod process;
pub mod reactor;
pub mod reactor_model;
mod shutdown;
mod sys;
mod thread_wait;
pub mod threads;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use c10k_core::chat::App;
use c10k_core::store::{AsyncStore, Store};
use c10k_store::OffloadPool;

pub use shutdown::Shutdown;

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

/// Options every model understands; each takes what applies to it.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Serving threads, for the models that have a fixed number (`async`: tokio workers,
    /// `pool`: workers). 0 picks the model's default.
    pub threads: usize,
    /// Stack size in bytes of each connection's thread or coroutine (`threads`, `pool`,
    /// `green`).
    pub stack_size: usize,
    /// Accepted connections that may wait for a `pool` worker before 503.
    pub queue: usize,
    /// One global lock around all application handling (`threads`, `pool`).
    pub giant_lock: bool,
    /// The OS poller of the event loop (`reactor`, `green`).
    pub poller: reactor::PollerKind,
    /// Callbacks (or coroutine resumes) that hold the event loop longer than this are
    /// logged and counted (`reactor`, `green`); `None` turns the watchdog off.
    pub watchdog: Option<std::time::Duration>,
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

    /// Whether the model only makes sense as worker processes under the prefork master
    /// (`prefork`: one connection per process), even with `--workers 1`.
    fn forks(&self) -> bool {
        false
    }
}

/// The names `--model` accepts, for `--help` and error messages.
pub const MODEL_NAMES: &[&str] = &["async", "threads", "pool", "prefork", "reactor", "green"];

/// The model called `name`, or `None` if there is no such model.
pub fn by_name(name: &str, options: &ModelOptions) -> Option<Box<dyn Model>> {
    match name {
        "async" => Some(Box::new(async_tokio::AsyncModel::new(options.threads))),
        "threads" => Some(Box::new(threads::ThreadsModel::new(options.stack_size, options.giant_lock))),
        "pool" => Some(Box::new(pool::PoolModel::new(
            options.threads,
            options.queue,
            options.stack_size,
            options.giant_lock,
        ))),
        "prefork" => Some(Box::new(prefork::PreforkModel::new())),
        "reactor" => Some(Box::new(reactor_model::ReactorModel::new(options.poller, options.watchdog))),
        "green" => Some(Box::new(green::GreenModel::new(options.poller, options.watchdog, options.stack_size))),
        _ => None,
    }
}
