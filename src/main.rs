//! The `c10k` binary: `c10k serve` runs the chat server on the chosen concurrency model.
//!
//! Everything model-specific is behind `c10k_models::by_name`; this file parses flags,
//! opens the store, binds the listener, turns SIGINT/SIGTERM into a shutdown, and starts
//! the model: in this process, or with `--workers N` (and always for `prefork`) in worker
//! processes under the prefork master, which must fork before any thread exists.

mod admin;
mod signals;

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::info;

use c10k_core::chat::{App, Config};
use c10k_core::metrics::ServerInfo;
use c10k_core::ledger::{Ledger, Locking};
use c10k_core::limits::Limits;
use c10k_bus::{Both, Bus, LocalRelay};
use c10k_core::store::Store;
use c10k_models::event::PollerKind;
use c10k_models::{by_name, prefork, Context, DbMode, Model, ModelOptions, NativeDb, NativeDriver, Shutdown};
use c10k_store::{OffloadPool, StoreOptions};

/// One chat server, every concurrency model of the C10K talk, measured side by side.
#[derive(Parser, Debug)]
#[command(name = "c10k", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the chat server (open the printed URL in a browser).
    Serve(ServeArgs),
    /// Put load on a c10k server on this machine and report what it did (loopback only).
    Load(c10k_load::cli::LoadArgs),
    /// Fire concurrent withdrawals and transfers at a server's /api/bank and check that no
    /// money was lost or created (exit 1 and print each violation if some was).
    LedgerCheck(c10k_load::ledger::CheckArgs),
    /// Check that rooms shared by several nodes lose, double and reorder nothing: publishers
    /// and subscribers (long-poll, SSE, WebSocket, with random disconnects) spread over the
    /// nodes, every subscriber's sequence compared with the store's order (exit 1 and list
    /// each fault if one is found).
    QueueCheck(c10k_load::queue::QueueCheckArgs),
    /// Run the benchmark matrix (models, pollers, scenarios, sizes, peers) and write
    /// bench/RESULTS.md, plots and results.json.
    Bench(c10k_bench::cli::BenchArgs),
    /// Print the store's epoch, or give it a new one with --rotate: after restoring a
    /// backup or truncating the messages, so that clients resuming from ids they read
    /// before are told to start afresh instead of being given other messages under those
    /// ids (docs/protocol.md, "Epochs"). Servers read the epoch when they start: restart
    /// them after a rotation.
    Epoch(EpochArgs),
    /// Print the admin view of a server run with --admin-token: its nodes (every node of a
    /// cluster that shares a bus), what each serves, the rooms with their members and
    /// message rates, and the last errors.
    Admin(admin::AdminArgs),
    /// Make a token for `serve --auth-secret` (HS256, signed with the same secret): for
    /// trying private rooms, for tests, and as the model of what an application server
    /// hands its users. Prints the token.
    Token(TokenArgs),
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// The secret `serve` checks tokens with (or C10K_AUTH_SECRET).
    #[arg(long, env = "C10K_AUTH_SECRET", value_name = "SECRET", hide_env_values = true)]
    auth_secret: String,
    /// Who the token is for (`sub`).
    #[arg(long, value_name = "USER")]
    sub: String,
    /// The name its posts carry (`name`; default: the sub).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A room (or `prefix-*`, or `*`) and what the token may do there: `staff=read,post`,
    /// `news=read`; repeat it for more.
    #[arg(long = "room", value_name = "ROOM=PERMS", value_parser = parse_room_grant)]
    rooms: Vec<(String, Vec<String>)>,
    /// How long the token lasts (e.g. 15m, 1h, 3600).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    ttl: f64,
    /// The audience (`aud`), for a server run with --auth-audience.
    #[arg(long, value_name = "AUD")]
    audience: Option<String>,
}

/// `staff=read,post` as `--room` takes it.
fn parse_room_grant(text: &str) -> Result<(String, Vec<String>), String> {
    let Some((room, permissions)) = text.split_once('=') else {
        return Err(format!("'{text}': write ROOM=PERMS, e.g. staff=read,post or news=read"));
    };
    c10k_core::chat::auth::RoomPattern::parse(room)?;
    let permissions: Vec<String> = permissions.split(',').map(|p| p.trim().to_string()).collect();
    if let Some(other) = permissions.iter().find(|p| !matches!(p.as_str(), "read" | "post")) {
        return Err(format!("'{text}': unknown permission '{other}'; give read, post or read,post"));
    }
    Ok((room.to_string(), permissions))
}

/// The token `c10k token` prints.
fn token(args: &TokenArgs) -> Result<String, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
    let token = c10k_core::chat::auth::NewToken {
        sub: args.sub.clone(),
        name: args.name.clone(),
        rooms: args.rooms.iter().cloned().collect(),
        expires_s: now.as_secs() + args.ttl.ceil() as u64,
        audience: args.audience.clone(),
    };
    c10k_core::chat::auth::mint(args.auth_secret.as_bytes(), &token).map_err(|e| format!("--auth-secret: {e}"))
}

#[derive(Args, Debug)]
struct EpochArgs {
    /// The store, as `c10k serve --db` takes it (a SQLite path, a mysql:// or postgres://
    /// URL). Its tables are created if missing, as `serve` would.
    #[arg(long, default_value = "c10k.sqlite3", value_name = "PATH|URL")]
    db: String,
    /// Replace the epoch with a new random one, and print it.
    #[arg(long)]
    rotate: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on: IP:PORT (`127.0.0.1:8888`, `[::1]:8888`, `0.0.0.0:8888` for
    /// every interface), HOST:PORT (`localhost:8888`), or just the port (`8888`, `:8888`),
    /// which means loopback. Port 0 picks a free port (the URL printed says which).
    #[arg(long, default_value = "127.0.0.1:8888", value_name = "ADDR", value_parser = parse_listen)]
    listen: SocketAddr,

    /// Where messages are stored: a SQLite file path (created if missing), a MySQL or
    /// MariaDB database (`mysql://USER[:PASSWORD]@HOST:PORT/DATABASE`), or a PostgreSQL one
    /// (`postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`). c10k creates or migrates its
    /// tables (`c10k_*`) at start; several processes and machines may share one database.
    #[arg(long, default_value = "c10k.sqlite3", value_name = "PATH|URL")]
    db: String,

    /// Concurrency model: `async` (tokio tasks on a thread per core), `threads` (an OS
    /// thread per connection), `pool` (a fixed pool of worker threads and a queue),
    /// `prefork` (worker processes serving one connection each), `reactor` (one thread,
    /// an event loop over select/poll/epoll, callbacks), `green` (one thread, the same
    /// event loop, a stackful coroutine per connection running plain blocking code),
    /// `uring` (one thread, a proactor over io_uring: operations handed to the kernel and
    /// their completions handled; Linux 6.0 or later).
    #[arg(long, default_value = "async", value_name = "MODEL")]
    model: String,

    /// The event loop's OS poller (reactor, green): `select` (descriptors below 1024 only),
    /// `poll`, or `epoll` (the default: its cost follows activity, not the number of idle
    /// connections).
    #[arg(long, value_enum, value_name = "POLLER")]
    poller: Option<PollerArg>,

    /// The event loop's watchdog (reactor, green, uring): log and count
    /// (`c10k_slow_callbacks_total`) every callback or coroutine resume that holds the
    /// loop longer than this many milliseconds, with the route it was serving (default
    /// 100); 0 turns it off.
    #[arg(long, value_name = "MS")]
    watchdog_ms: Option<u64>,

    /// Worker processes, each running the model on the shared listening socket, under a
    /// master that restarts them and relays messages between them. Default 1 (this
    /// process serves alone); prefork's default is 32, one per client served at once (a
    /// browser tab holds up to three connections; the master warns when all are busy).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,

    /// Serving threads for models with a fixed number of them (async: tokio workers,
    /// default one per core; pool: workers, default 64).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Stack size of each connection's thread (threads, pool) or coroutine (green), e.g.
    /// 256k or 8m (default 256k). A coroutine's stack has a guard page below it:
    /// overflowing it kills the process with SIGSEGV (never corrupts memory); only touched
    /// pages use memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    stack_size: Option<usize>,

    /// Accepted connections that may wait for a pool worker (default 1024); beyond it,
    /// 503 at once.
    #[arg(long, value_name = "N")]
    queue: Option<usize>,

    /// One global lock around all application handling (threads, pool): the GIL, or
    /// FreeBSD's giant lock, to measure what it costs.
    #[arg(long)]
    giant_lock: bool,

    /// How the server talks to the database (the talk's "coping with MySQL"): `offload`
    /// (the blocking driver on a thread pool; the server keeps serving meanwhile),
    /// `inline` (the blocking driver on the serving thread, which stalls while the
    /// database works), or `native` (a driver that cooperates with the model: mysql_async
    /// or tokio-postgres awaited by async's tasks; on green, each coroutine driving its own
    /// PostgreSQL connection over a green socket (MySQL: refused); the blocking driver on
    /// the connection's own thread for threads, pool and prefork; refused on reactor and
    /// uring).
    #[arg(long, value_enum, default_value_t = DbModeArg::Offload)]
    db_mode: DbModeArg,

    /// Seconds any one wait on a database server may take (connecting, a query's round
    /// trip, a free connection). Past it the request gets 503, and while the database is
    /// unreachable requests that need it get 503 at once; it is tried again every second.
    #[arg(long, default_value_t = 5.0, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    db_timeout: f64,

    /// Seconds a post may wait in all, from its request to its commit: in the store's
    /// queue, for a connection, for the database's write lock (another process holding
    /// SQLite's, say). Past it the post is not stored and gets 503 with Retry-After; the
    /// store checks it inside the transaction, so a post answered 503 is never stored.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    db_post_timeout: f64,

    /// Connections to a database server each process keeps at most.
    #[arg(long, default_value_t = 16, value_name = "N")]
    db_connections: usize,

    /// A demonstration of a slow database: before each read and append, the server runs
    /// a query that takes this long on the database (`SELECT SLEEP`, `pg_sleep`).
    /// MySQL and PostgreSQL only (for SQLite, `--db slow:MILLIS:PATH` sleeps in c10k).
    #[arg(long, value_name = "MS")]
    db_sleep_ms: Option<u64>,

    /// Threads in the store's offload pool.
    #[arg(long, default_value_t = 4, value_name = "N")]
    store_threads: usize,

    /// Store calls that may wait for the offload pool before posts get 503.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    store_queue: usize,

    /// Messages kept in memory per room (history served to new readers and resumes).
    #[arg(long, default_value_t = 200, value_name = "N")]
    history: usize,

    /// Seconds a long-poll waits with nothing to send before answering (`{}` on Tornado's route).
    #[arg(long, default_value_t = 30.0, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    longpoll_wait: f64,

    /// Seconds an idle keep-alive connection is kept open. Default 75 (nginx's
    /// keepalive_timeout); prefork's is 5, Apache's KeepAliveTimeout, because there an idle
    /// connection holds a whole worker process.
    #[arg(long, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    idle_timeout: Option<f64>,

    /// Seconds a request, head and body, may take to arrive in full from its first byte
    /// (then 408): what stops slowloris and bodies that stop short.
    #[arg(long, default_value_t = 10.0, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    head_timeout: f64,

    /// On SIGTERM or SIGINT the server drains: it stops accepting, finishes the requests in
    /// flight (`Connection: close`), answers long-polls at once, ends event streams with a
    /// last event and WebSockets with close 1001, and exits when every connection is gone or
    /// after this many seconds, whichever is first (the connections left are then dropped;
    /// their clients resume from their cursors). With worker processes, the master kills a
    /// worker still running 3 s after it.
    #[arg(long, default_value_t = 10.0, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    drain_timeout: f64,

    /// A web origin, besides the server's own, whose pages may use the chat's WebSocket,
    /// event stream, long-poll and POST routes (e.g. `https://app.example.org`); repeat it
    /// for more. Requests from any other page's origin get 403. `*` allows every origin:
    /// any site's page can then chat as its visitors.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,

    /// Limit each client to COUNT posts at once and COUNT per PERIOD after that (e.g.
    /// `5/s`, `30/m`, `20/10s`), on every post route: over it, HTTP posts get 429 with
    /// Retry-After and a WebSocket is closed with 1008. A client is its address (an IPv6
    /// /64), or what a --trusted-proxy forwarded. Off by default, since `c10k load` and
    /// `c10k bench` post from one address as fast as they can. Each worker process
    /// (--workers) counts on its own.
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = c10k_core::chat::rate::Rate::parse)]
    post_rate: Option<c10k_core::chat::rate::Rate>,

    /// Limit each WebSocket connection to COUNT posts at once and COUNT per PERIOD after
    /// that, on top of --post-rate: over it, the socket is closed with 1008. Set it
    /// stricter than --post-rate when many people share one address (a NAT): one
    /// connection is one tab. Off by default.
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = c10k_core::chat::rate::Rate::parse)]
    connection_post_rate: Option<c10k_core::chat::rate::Rate>,

    /// Limit each client to COUNT new streams (SSE `GET .../events`, WebSocket `GET .../ws`)
    /// at once and COUNT per PERIOD after that: over it, the stream is refused before it
    /// starts with 429 and Retry-After (a reconnect loop, or one address opening thousands
    /// of sockets). Long-polls are not counted: their clients poll again after every
    /// message. A client is as for --post-rate. Off by default.
    #[arg(long, value_name = "COUNT/PERIOD", value_parser = c10k_core::chat::rate::Rate::parse)]
    connect_rate: Option<c10k_core::chat::rate::Rate>,

    /// The address of a proxy in front (e.g. nginx on 127.0.0.1, deploy/nginx.conf) whose
    /// `X-Forwarded-For` names the client for --post-rate and --connect-rate; repeat it for
    /// more. Anyone else's
    /// X-Forwarded-For is ignored.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,

    /// Also serve `GET /ws/echo`, a WebSocket endpoint that sends every message back as it
    /// came, for conformance tools that assume an echo server (bench/autobahn/run.sh runs
    /// the Autobahn TestSuite against it). Same framing, limits and close handling as the
    /// chat's endpoint. Off by default.
    #[arg(long)]
    websocket_echo: bool,

    /// Verify the JSON Web Tokens clients present (`Authorization: Bearer TOKEN`, or
    /// `?access_token=TOKEN` where a browser cannot set a header) with this HMAC secret
    /// (HS256/384/512, at least 32 bytes: `openssl rand -base64 32`). Give it in the
    /// environment, C10K_AUTH_SECRET, rather than on the command line, which others on the
    /// machine can read. Rooms stay open to all unless --private-room names them; a token's
    /// holder posts under its name and is rate-limited as one user. `c10k token` makes
    /// tokens; docs/protocol.md, "Tokens", says what they hold.
    #[arg(long, env = "C10K_AUTH_SECRET", value_name = "SECRET", hide_env_values = true, conflicts_with = "auth_jwks")]
    auth_secret: Option<String>,

    /// Verify tokens with the public keys of this JWK set (RFC 7517; RSA, EC P-256/P-384,
    /// Ed25519; a token's `kid` picks the key), as an identity provider publishes them. Each
    /// key accepts only its own algorithm.
    #[arg(long, value_name = "FILE")]
    auth_jwks: Option<std::path::PathBuf>,

    /// A room that only tokens granting it may read or post in (`staff`), every room with a
    /// prefix (`team-*`), or `*` for all; repeat it for more. Needs --auth-secret or
    /// --auth-jwks.
    #[arg(long = "private-room", value_name = "ROOM", value_parser = c10k_core::chat::auth::RoomPattern::parse)]
    private_rooms: Vec<c10k_core::chat::auth::RoomPattern>,

    /// The audience tokens must name in `aud`; without it, a token that has an `aud` is
    /// refused (it was made for another service).
    #[arg(long, value_name = "AUD")]
    auth_audience: Option<String>,

    /// Serve the admin view, `GET /admin` (a page) and `GET /api/admin` (JSON; `c10k
    /// admin` prints it), to requests with `Authorization: Bearer TOKEN`: the nodes, the
    /// rooms with their members and rates, the last errors. At least 16 characters; give
    /// it in the environment (C10K_ADMIN_TOKEN). Off by default.
    #[arg(long, env = "C10K_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Largest request body in bytes (then 413).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    max_body: usize,

    /// Most bytes a streaming subscriber (Server-Sent Events, WebSocket) may leave unread;
    /// the next message for one that has is not sent: it is disconnected with a reason (an
    /// `error` event, or close 1008) and resumes from its last id when it reconnects.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..))]
    max_outgoing: u64,

    /// The kernel's send buffer for each connection (`SO_SNDBUF`, as `getsockopt` reports
    /// it), set on the listener so that every accepted socket inherits it. It bounds what
    /// a subscriber that stopped reading holds in the kernel before `--max-outgoing` counts
    /// in user space: with the kernel's autotuning (0) that can be 4 MiB a socket
    /// (`net.ipv4.tcp_wmem`), all of it copied while the others wait. 256 KiB keeps a
    /// chat's messages flowing at loopback and LAN speeds; raise it for bulk transfers over
    /// long round trips.
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES", value_parser = parse_send_buffer)]
    send_buffer: u64,

    /// Most open connections in this process; the next ones get 503 and are closed.
    /// Default: the open-files limit (`ulimit -Hn`; the server raises its soft limit to
    /// it) minus a twentieth of it (32 to 1,000) kept for the store, the listener and the
    /// workers' pipes: 19,000 under a 20,000 limit. Past the limit, a new connection is
    /// answered 503 from a descriptor kept in reserve; the server warns if you ask for more.
    #[arg(long, value_name = "N", value_parser = parse_max_connections)]
    max_connections: Option<usize>,

    /// How the bank of /api/bank keeps concurrent operations apart: `none` (read, yield,
    /// write back: the race, on purpose), `giant` (one lock), `fine` (a lock per account),
    /// `atomic` (compare-and-swap), `db` (a transaction in the store; the only one that
    /// works across --workers, besides `none`, which then races in the store).
    #[arg(long, default_value = "db", value_name = "STRATEGY")]
    locking: String,

    /// Microseconds each in-memory ledger operation sleeps between its read and its write,
    /// after a store round trip (`none`'s race window; the locks are held across it).
    #[arg(long, default_value_t = 200, value_name = "MICROS")]
    ledger_think_us: u64,

    /// Share rooms with other c10k nodes (each its own `c10k serve`, on the same MySQL or
    /// PostgreSQL database) through `redis://HOST:PORT[/CHANNEL]` (Redis pub/sub) or
    /// `nats://HOST:PORT[/SUBJECT]` (core NATS); the channel or subject defaults to `c10k`.
    /// A bus unreachable at start is retried in the background; the node serves meanwhile.
    #[arg(long, value_name = "URL")]
    bus: Option<String>,

    /// Seconds between two catch-ups from the store while the bus is connected (it also
    /// catches up after every reconnection); 0: only after reconnections.
    #[arg(long, default_value_t = 30.0, value_name = "DURATION", value_parser = c10k_load::cli::parse_seconds)]
    bus_resync: f64,

    /// Test-only fault: drop every Nth message received from the bus and never fill a gap
    /// from the store, so that `c10k queue-check` can be shown to catch a lossy bus.
    #[arg(long, value_name = "N", hide = true)]
    bus_drop_every: Option<u64>,

    /// Listen backlog: connections the kernel queues before they are accepted.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    backlog: i32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PollerArg {
    Select,
    Poll,
    Epoll,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DbModeArg {
    Offload,
    Inline,
    Native,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = admin::ERRORS.set(Arc::default());
    tracing_subscriber::registry()
        // async-nats logs every reconnection attempt at info: the bus logs an outage once.
        .with(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,async_nats=warn".into()))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()))
        .with(admin::KeepErrors)
        .init();
    match cli.command {
        Command::Load(args) => c10k_load::cli::run(args),
        Command::Bench(args) => c10k_bench::cli::run(args),
        Command::LedgerCheck(args) => c10k_load::ledger::run_cli(args),
        Command::QueueCheck(args) => c10k_load::queue::run_cli(args),
        Command::Admin(args) => match admin::run(&args) {
            Ok(view) => {
                println!("{view}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("c10k admin: {message}");
                ExitCode::from(2)
            }
        },
        Command::Token(args) => match token(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("c10k token: {message}");
                ExitCode::from(2)
            }
        },
        Command::Epoch(args) => match epoch(&args) {
            Ok(epoch) => {
                println!("{epoch}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("c10k epoch: {message}");
                ExitCode::from(2)
            }
        },
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                // Once, plainly: standard error is also where the log goes.
                eprintln!("c10k: {message}");
                ExitCode::from(2)
            }
        },
    }
}

/// `c10k epoch`: the store's epoch, replaced first with `--rotate`.
fn epoch(args: &EpochArgs) -> Result<String, String> {
    let store = c10k_store::open(&args.db).map_err(|e| e.to_string())?;
    if args.rotate {
        let fresh = c10k_store::fresh_epoch();
        store.set_epoch(&fresh).map_err(|e| e.to_string())?;
        info!(db = %args.db, epoch = %fresh, "rotated the store's epoch; restart the servers on it");
    }
    store.epoch().map_err(|e| e.to_string())?.ok_or_else(|| format!("{} keeps no epoch", args.db))
}

/// Parses `--listen`: an IP:PORT, a HOST:PORT resolved now (its first IPv4 address, if
/// it has one: `localhost` is 127.0.0.1 even where it also names ::1), or a bare port
/// (`8888`, `:8888`) on loopback, the safe default a bare port in nginx's `listen` is not.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::{Ipv4Addr, ToSocketAddrs};
    let text = text.trim();
    let expected = "write IP:PORT (127.0.0.1:8888, [::1]:8888, 0.0.0.0:8888), HOST:PORT (localhost:8888) or a port";
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port = port_only.parse::<u16>().map_err(|_| format!("{text:?}: a port is 0 to 65535"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port; {expected}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{text:?} is not an address to listen on; {expected}"));
    }
    let found: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?} ({e}); {expected}"))?
        .collect();
    found
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("{host:?} has no address; {expected}"))
}

/// Parses `--max-connections`: a count of at least 1 (0 would refuse everyone; leaving
/// the flag out is how to ask for the default).
fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("0 would refuse every connection; give at least 1, or leave the flag out for the \
                      open-files default"
            .into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a count of connections")),
    }
}

/// Parses a size like `65536`, `256k` or `8m` (powers of 1024).
fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (lower.as_str(), 1),
        },
    };
    let size = digits
        .parse::<usize>()
        .map_err(|_| format!("{text:?} is not a size; write bytes, or a number with k or m (e.g. 256k)"))?
        * unit;
    if size < 64 * 1024 {
        return Err(format!("{text:?} is too small a stack; use at least 64k"));
    }
    Ok(size)
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("--{name} must be a number of seconds >= 0, not {value}"))
    }
}

/// Descriptors each process keeps for other things than connections (the store's
/// database and WAL files, the listener, logs, pipes to the master): a twentieth of the
/// open-files limit, at least 32 and at most 1,000.
fn reserved_descriptors(limit: u64) -> u64 {
    (limit / 20).clamp(32, 1_000)
}

/// The `--max-connections` in force: the one asked for, or what the open-files limit
/// allows. Raises this process's soft open-files limit to the hard one (as Go's runtime
/// and nginx's `worker_rlimit_nofile` do), so the cap, not EMFILE, decides who gets 503.
fn connection_cap(asked: Option<usize>) -> usize {
    let limit = c10k_sys::raise_open_files_limit();
    let allowed = limit.map(|limit| limit.saturating_sub(reserved_descriptors(limit)).max(1));
    match (asked, allowed) {
        (Some(asked), Some(allowed)) if asked as u64 > allowed => {
            tracing::warn!(
                "--max-connections {asked} is more than the open-files limit allows ({allowed} after \
                 {} kept for files and pipes): past that, new connections get 503 from a reserve \
                 descriptor, or wait in the backlog when even that is taken; raise `ulimit -n` or \
                 lower --max-connections",
                reserved_descriptors(limit.unwrap_or(0))
            );
            asked
        }
        (Some(asked), _) => asked,
        (None, Some(allowed)) => allowed as usize,
        (None, None) => Limits::default().max_connections,
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let options = ModelOptions {
        threads: args.threads,
        stack_size: args.stack_size,
        queue: args.queue,
        giant_lock: args.giant_lock,
        poller: args.poller.map(|poller| match poller {
            PollerArg::Select => PollerKind::Select,
            PollerArg::Poll => PollerKind::Poll,
            PollerArg::Epoll => PollerKind::Epoll,
        }),
        watchdog_ms: args.watchdog_ms,
    };
    let model = by_name(&args.model, &options)?;
    let limits = Limits {
        longpoll_wait: seconds("longpoll-wait", args.longpoll_wait)?,
        idle_timeout: match args.idle_timeout {
            Some(asked) => seconds("idle-timeout", asked)?,
            None if model.forks() => prefork::IDLE_TIMEOUT,
            None => Limits::default().idle_timeout,
        },
        head_timeout: seconds("head-timeout", args.head_timeout)?,
        max_body_bytes: args.max_body,
        max_outgoing_bytes: usize::try_from(args.max_outgoing).unwrap_or(usize::MAX),
        max_connections: connection_cap(args.max_connections),
        post_timeout: seconds("db-post-timeout", args.db_post_timeout).and_then(|t| {
            if t.is_zero() { Err("--db-post-timeout must be more than 0 seconds".to_string()) } else { Ok(t) }
        })?,
        ..Limits::default()
    };
    if args.store_threads == 0 {
        return Err("--store-threads must be at least 1".into());
    }
    if args.db_connections == 0 {
        return Err("--db-connections must be at least 1".into());
    }
    seconds("db-timeout", args.db_timeout).and_then(|t| {
        if t.is_zero() { Err("--db-timeout must be more than 0 seconds".to_string()) } else { Ok(t) }
    })?;
    let native = match args.db_mode {
        DbModeArg::Native => Some(model.native_db().map_err(|why| format!("--db-mode native: {why}"))?),
        _ => None,
    };
    let native_driver = native.filter(|n| *n != NativeDb::OwnThread);

    let workers = args.workers.unwrap_or(if model.forks() { prefork::DEFAULT_WORKERS } else { 1 });
    if workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    // Refused here, before any worker is forked, so that none dies in a restart loop.
    let locking = Locking::parse(&args.locking)?;
    Ledger::check(locking, workers)?;
    if workers > 1 || model.forks() {
        return serve_workers(&args, &*model, &limits, workers, native_driver);
    }

    // Signals first: the handler thread must be the only one that receives them, so they
    // are blocked before any other thread (store pool, runtime) is started.
    let shutdown = Shutdown::with_drain_timeout(seconds("drain-timeout", args.drain_timeout)?);
    signals::forward_to(shutdown.clone()).map_err(|e| format!("cannot install signal handling: {e}"))?;

    let (store, app, offload, native) = start_app(&args, &limits, workers, native_driver)?;
    if let Some(bus) = network_bus(&args, &app)? {
        c10k_bus::attach_with(&app, &store, bus, args.bus_drop_every).map_err(|e| e.to_string())?;
    }

    let listener = bind(args.listen, args.backlog, args.send_buffer, false)?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    info!(model = model.name(), db = %args.db, "serving");
    announce(local);

    let context = Context { app, store, offload, db_mode: db_mode(&args), native, shutdown };
    model.serve(listener, context).map_err(|e| format!("the {} model failed: {e}", model.name()))?;
    info!("stopped");
    Ok(())
}

/// `--workers N` (and `prefork`): this process becomes the master, and each worker it
/// forks runs the single-process start above, minus the bind, plus the relay.
fn serve_workers(
    args: &ServeArgs,
    model: &dyn Model,
    limits: &Limits,
    workers: usize,
    native_driver: Option<NativeDb>,
) -> Result<(), String> {
    // Nothing here may start a thread before the master has forked: no signal thread, no
    // store, no pool, no runtime. Only the listeners, which the workers inherit: one
    // shared for prefork, one per worker otherwise (see c10k_models::prefork's docs).
    let listeners = if model.forks() {
        vec![bind(args.listen, args.backlog, args.send_buffer, false)?]
    } else {
        bind_per_worker(args.listen, args.backlog, args.send_buffer, workers)?
    };
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    info!(model = model.name(), db = %args.db, workers, "serving with worker processes");
    let drain_timeout = seconds("drain-timeout", args.drain_timeout)?;
    let mut worker = |listener: TcpListener, relay: LocalRelay| -> Result<(), String> {
        let shutdown = Shutdown::with_drain_timeout(drain_timeout);
        signals::forward_to(shutdown.clone()).map_err(|e| format!("cannot install signal handling: {e}"))?;
        let (store, app, offload, native) = start_app(args, limits, workers, native_driver)?;
        let relay = Arc::new(relay);
        let bus: Arc<dyn Bus> = match network_bus(args, &app)? {
            Some(network) => Arc::new(Both(Arc::clone(&relay) as Arc<dyn Bus>, network)),
            None => Arc::clone(&relay) as Arc<dyn Bus>,
        };
        c10k_bus::attach_with(&app, &store, bus, args.bus_drop_every).map_err(|e| e.to_string())?;
        relay.announce_ready().map_err(|e| format!("cannot reach the master: {e}"))?;
        let context = Context { app, store, offload, db_mode: db_mode(args), native, shutdown };
        model.serve(listener, context).map_err(|e| format!("the {} model failed: {e}", model.name()))
    };
    prefork::run_master(listeners, workers, drain_timeout, &mut || announce(local), &mut worker)
        .map_err(|e| format!("the master failed: {e}"))?;
    info!("stopped");
    Ok(())
}

/// The `--bus` of this process, if any; it connects in the background.
fn network_bus(args: &ServeArgs, app: &App) -> Result<Option<Arc<dyn Bus>>, String> {
    let Some(url) = &args.bus else { return Ok(None) };
    let resync = seconds("bus-resync", args.bus_resync)?;
    let options = c10k_bus::Options {
        resync_every: if resync.is_zero() { None } else { Some(resync) },
        drop_every: args.bus_drop_every,
    };
    let bus = c10k_bus::connect(url, app.metrics().bus.clone(), &options).map_err(|e| e.to_string())?;
    info!(bus = bus.name(), %url, "sharing rooms with other nodes");
    Ok(Some(bus))
}

/// What a serving process runs on: the store, the application, the offload pool, and
/// the driver of `--db-mode native` when the model has one besides its own thread.
type Started = (Arc<dyn Store>, Arc<App>, Arc<OffloadPool>, Option<NativeDriver>);

/// What `--db-timeout`, `--db-connections` and `--db-sleep-ms` say (checked in `serve`).
fn store_options(args: &ServeArgs) -> StoreOptions {
    StoreOptions {
        timeout: Duration::from_secs_f64(args.db_timeout),
        connections: args.db_connections,
        server_sleep: args.db_sleep_ms.map(Duration::from_millis),
    }
}

/// Opens the store (and the native driver), builds the application with its history and
/// ledger, and starts the offload pool.
fn start_app(args: &ServeArgs, limits: &Limits, processes: usize, native: Option<NativeDb>) -> Result<Started, String> {
    let options = store_options(args);
    let store = c10k_store::open_with(&args.db, &options).map_err(|e| e.to_string())?;
    let native = match native {
        Some(NativeDb::Async) => Some(NativeDriver::Async(
            c10k_store::open_native(&args.db, &options).map_err(|e| format!("--db-mode native: {e}"))?,
        )),
        Some(NativeDb::Cooperative) => {
            // Checked here (the URL's kind); each event loop makes its own from it.
            c10k_store::CooperativePostgres::new(&args.db, &options).map_err(|e| format!("--db-mode native: {e}"))?;
            Some(NativeDriver::Cooperative { url: args.db.clone(), options })
        }
        Some(NativeDb::OwnThread) | None => None,
    };
    let mut ledger = Ledger::new(Locking::parse(&args.locking)?, processes, &*store)?;
    if args.ledger_think_us > 0 {
        let think = Duration::from_micros(args.ledger_think_us);
        ledger = ledger.with_think(Arc::new(move || std::thread::sleep(think)));
    }
    let ledger = Arc::new(ledger);
    info!(locking = %ledger.locking(), balances = ledger.describe(), "ledger");
    let config = Config {
        limits: limits.clone(),
        history: args.history.max(1),
        seed: seed()?,
        ledger,
        server: server_info(args),
        process: Some(Arc::new(c10k_models::process::ProcSelf::new())),
        allowed_origins: c10k_core::chat::origin::AllowedOrigins::parse(&args.allow_origins)?,
        post_rate: args.post_rate,
        connection_post_rate: args.connection_post_rate,
        connect_rate: args.connect_rate,
        trusted_proxies: args.trusted_proxies.clone(),
        websocket_echo: args.websocket_echo,
        auth: auth(args)?,
        admin_token: admin_token(args)?,
        errors: admin::ERRORS.get().cloned(),
    };
    let app = Arc::new(App::new(config));
    app.load_history(&*store).map_err(|e| format!("cannot load history from {}: {e}", args.db))?;
    start_presence_ticker(&app)?;
    let offload = Arc::new(OffloadPool::new(args.store_threads, args.store_queue.max(1)));
    Ok((store, app, offload, native))
}

/// `--admin-token`, checked.
fn admin_token(args: &ServeArgs) -> Result<Option<String>, String> {
    match &args.admin_token {
        Some(token) if token.chars().count() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(
            "--admin-token must be at least 16 characters with no white space: make one with `openssl rand -hex 16`".to_string(),
        ),
        token => Ok(token.clone()),
    }
}

/// How often presence is flushed (each room at most once per
/// `c10k_core::presence::FLUSH_INTERVAL`).
const PRESENCE_TICK: Duration = Duration::from_millis(250);

/// Starts the thread that flushes presence: rooms' updates to their subscribers, this
/// process's reports to the bus (the core has no clock and no thread of its own).
fn start_presence_ticker(app: &Arc<App>) -> Result<(), String> {
    let app = Arc::downgrade(app);
    std::thread::Builder::new()
        .name("c10k-presence".into())
        .spawn(move || {
            while let Some(app) = app.upgrade() {
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                app.presence_tick(c10k_core::chat::Now { instant: std::time::Instant::now(), unix_ms });
                drop(app);
                std::thread::sleep(PRESENCE_TICK);
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the presence thread: {e}"))
}

/// The token checks `--auth-secret`, `--auth-jwks`, `--private-room` and `--auth-audience`
/// ask for, if any.
fn auth(args: &ServeArgs) -> Result<Option<Arc<c10k_core::chat::auth::Auth>>, String> {
    use c10k_core::chat::auth::Auth;
    let auth = match (&args.auth_secret, &args.auth_jwks) {
        (Some(secret), _) => Auth::with_secret(secret.as_bytes()).map_err(|e| format!("--auth-secret: {e}"))?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--auth-jwks {}: cannot read it: {e}", path.display()))?;
            Auth::with_jwks(&text).map_err(|e| format!("--auth-jwks {}: {e}", path.display()))?
        }
        (None, None) if !args.private_rooms.is_empty() || args.auth_audience.is_some() => {
            return Err("--private-room and --auth-audience need a key to check tokens with: \
                        give --auth-secret (or C10K_AUTH_SECRET) or --auth-jwks FILE"
                .to_string())
        }
        (None, None) => return Ok(None),
    };
    let auth = auth.with_private_rooms(args.private_rooms.clone()).with_audience(args.auth_audience.clone());
    info!(private_rooms = ?auth.private_rooms(), "checking tokens");
    Ok(Some(Arc::new(auth)))
}

/// What the info metric names: the model, its poller (the event-loop models' only), the
/// store's kind.
fn server_info(args: &ServeArgs) -> ServerInfo {
    let poller = match (args.model.as_str(), args.poller) {
        ("reactor" | "green", Some(PollerArg::Select)) => "select",
        ("reactor" | "green", Some(PollerArg::Poll)) => "poll",
        ("reactor" | "green", _) => "epoll",
        _ => "none",
    };
    ServerInfo { model: args.model.clone(), poller: poller.into(), store: c10k_store::kind_of(&args.db).into() }
}

/// The one line on standard output: tests and scripts read the port from it.
fn announce(local: SocketAddr) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "c10k listening on http://{local}/");
    let _ = stdout.flush();
}

fn db_mode(args: &ServeArgs) -> DbMode {
    match args.db_mode {
        DbModeArg::Offload => DbMode::Offload,
        DbModeArg::Inline => DbMode::Inline,
        DbModeArg::Native => DbMode::Native,
    }
}

/// Binds with a large backlog (std's 128 drops connections in a c10k burst).
/// `count` listeners on one address with `SO_REUSEPORT`, so the kernel spreads incoming
/// connections over them. Port 0 picks a free port for the first; the rest join it.
fn bind_per_worker(addr: SocketAddr, backlog: i32, send_buffer: u64, count: usize) -> Result<Vec<TcpListener>, String> {
    let first = bind(addr, backlog, send_buffer, true)?;
    let joined = first.local_addr().map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(joined, backlog, send_buffer, true)?);
    }
    Ok(listeners)
}

/// A listener on `addr`. `send_buffer` (bytes, 0: the kernel's autotuning) is set on the
/// listening socket, which Linux copies into every socket it accepts: no system call per
/// connection. The kernel doubles what it is given (the rest is its bookkeeping) and
/// reports the doubled size, so half is asked for; past `net.core.wmem_max` it caps it,
/// and the server says so.
fn bind(addr: SocketAddr, backlog: i32, send_buffer: u64, reuse_port: bool) -> Result<TcpListener, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let explain = |e: std::io::Error| {
        format!("cannot listen on {addr}: {e}; pick another address with --listen (port 0 picks a free one)")
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(explain)?;
    socket.set_reuse_address(true).map_err(explain)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(explain)?;
    }
    if send_buffer > 0 {
        let asked = usize::try_from(send_buffer / 2).unwrap_or(usize::MAX);
        socket.set_send_buffer_size(asked).map_err(|e| format!("cannot set --send-buffer {send_buffer}: {e}"))?;
        match socket.send_buffer_size() {
            Ok(got) if (got as u64) < send_buffer => tracing::warn!(
                asked = send_buffer,
                got,
                "the kernel capped --send-buffer at net.core.wmem_max; raise it (sysctl -w net.core.wmem_max=...) to get more"
            ),
            _ => {}
        }
    }
    socket.bind(&addr.into()).map_err(explain)?;
    socket.listen(backlog.max(1)).map_err(explain)?;
    Ok(socket.into())
}

/// `--send-buffer`: 0 (the kernel's autotuning) or at least 8 KiB.
fn parse_send_buffer(text: &str) -> Result<u64, String> {
    let bytes: u64 = text.parse().map_err(|_| format!("'{text}' is not a number of bytes (e.g. 262144, or 0 for the kernel's autotuning)"))?;
    if bytes != 0 && bytes < 8 * 1024 {
        return Err(format!("{bytes} bytes is too small a send buffer: give at least 8192, or 0 for the kernel's autotuning"));
    }
    Ok(bytes)
}

/// 32 bytes from the kernel's random source, for XSRF tokens.
fn seed() -> Result<[u8; 32], String> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| format!("cannot read /dev/urandom for XSRF tokens: {e}"))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts one connection on `listener` and says what send buffer the kernel gave it.
    fn accepted_send_buffer(listener: &TcpListener) -> usize {
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        socket2::SockRef::from(&accepted).send_buffer_size().unwrap()
    }

    #[test]
    fn every_accepted_socket_inherits_the_listeners_send_buffer() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let fixed = bind(loopback, 16, 64 * 1024, false).unwrap();
        assert_eq!(accepted_send_buffer(&fixed), 64 * 1024, "the size asked for, as getsockopt reports it");
        let autotuned = bind(loopback, 16, 0, false).unwrap();
        assert_ne!(accepted_send_buffer(&autotuned), 64 * 1024, "0 leaves the kernel's default");
        for listener in bind_per_worker(loopback, 16, 32 * 1024, 2).unwrap() {
            assert_eq!(socket2::SockRef::from(&listener).send_buffer_size().unwrap(), 32 * 1024);
        }
    }

    #[test]
    fn a_send_buffer_is_zero_or_at_least_8_kib() {
        assert_eq!(parse_send_buffer("0"), Ok(0));
        assert_eq!(parse_send_buffer("262144"), Ok(262_144));
        assert!(parse_send_buffer("4096").unwrap_err().contains("at least 8192"));
        assert!(parse_send_buffer("lots").unwrap_err().contains("not a number"));
    }
}
