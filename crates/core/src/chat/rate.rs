//! The rate limits: posts per client (`--post-rate COUNT/PERIOD`), posts per WebSocket
//! connection (`--connection-post-rate`), and new streams per client (`--connect-rate`).
//!
//! Each is a token bucket (nginx's `limit_req`, Centrifugo's client message and connection
//! limits): a bucket holds at most COUNT tokens, a post (or a new stream) takes one, and
//! they come back at COUNT per PERIOD, so a burst of COUNT passes at once and then COUNT per
//! PERIOD for ever. Without a token:
//! - a post is refused: HTTP `429 Too Many Requests` with `Retry-After` (the seconds until
//!   a token is back), and over WebSocket the close code 1008 (policy violation, RFC 6455
//!   7.4.1) with the same reason, since a frame has no status of its own. Nothing is stored;
//! - a new stream (an SSE `GET .../events` or a WebSocket upgrade `GET .../ws`) is refused
//!   before it starts, with the same 429 and `Retry-After` (a WebSocket handshake answered
//!   with anything but 101 fails, RFC 6455 4.1). A long-poll is not a new stream: its client
//!   polls again after every message by design, and a limit on that would cut delivery.
//!
//! **Why both per client and per connection.** Many people may share one address (a
//! campus NAT, a mobile carrier's), so the per-client buckets are set generously; a single
//! WebSocket connection is one person's tab, so its own bucket can be strict. A connection
//! is also not free to hand back: a client that reconnects to get a fresh connection bucket
//! spends a connect token (with `--connect-rate` on). HTTP posts have no per-connection
//! bucket: a client chooses its HTTP connections, and replacing one costs nothing.
//!
//! **Who is a client.** The address the connection came from (an IPv6 address by its /64,
//! the block one subscriber is given), or, when that address is a proxy named by
//! `--trusted-proxy` (nginx in front, deploy/nginx.conf), the last address of the
//! `X-Forwarded-For` the proxy added. A connection whose driver gives no address (the
//! core's own tests) is not limited per client.
//!
//! **Bounds.** A per-client table holds at most [`MAX_CLIENTS`] buckets. A bucket that has
//! filled up again is the same as none, so when the table is full those are dropped first;
//! if every one is still in use, the new client is let through untracked (counted as
//! `rate_untracked` or `connect_untracked` in `/metrics`): a flood from that many addresses
//! is not one client going too fast, and no memory grows with it. A connection's bucket is
//! two numbers in its WebSocket session.
//!
//! **Off by default.** `c10k load` and `c10k bench` post and connect from one address as
//! fast as the server goes; a limit that is on by default would measure the limit. Each
//! worker process (`--workers N`) keeps its own tables, so one client's burst spread over N
//! workers may reach N × COUNT (the kernel spreads connections, not clients, over them).

use core::net::IpAddr;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most clients whose buckets are kept at once.
pub const MAX_CLIENTS: usize = 65_536;

/// `--post-rate`, `--connection-post-rate`, `--connect-rate`: at most `count` at once, and
/// `count` per `period` after that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// The bucket's size: the burst that passes at once.
    pub count: u32,
    /// The time in which `count` tokens come back.
    pub period: Duration,
}

impl Rate {
    /// Parses `COUNT/PERIOD`: `5/s`, `30/m`, `20/10s`, `100/1h` (a period as `--idle-timeout`
    /// takes it, or just a unit: `s`, `m`, `h`). The error says what to write (clap names
    /// the flag before it).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let explain = || format!("{text:?} is no rate: write COUNT/PERIOD, e.g. 5/s, 30/m or 20/10s");
        let (count, period) = text.split_once('/').ok_or_else(explain)?;
        let count: u32 = count.trim().parse().map_err(|_| explain())?;
        let period = period.trim();
        let period = match period {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => parse_period(period).ok_or_else(explain)?,
        };
        if count == 0 || period.is_zero() {
            return Err(format!("{text:?}: COUNT and PERIOD must be above zero (leave the flag out for no limit)"));
        }
        Ok(Rate { count, period })
    }

    /// How long one token takes to come back.
    fn refill(&self) -> Duration {
        self.period / self.count
    }
}

/// `500ms`, `10s`, `2m`, `1h` or plain seconds.
fn parse_period(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 = digits.parse().ok()?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// Who a client is, for the limit: an IPv4 address, or an IPv6 address's /64; or, when it
/// presents a token ([`super::auth`]), the token's user, wherever it connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// No token: the address.
    Address(IpAddr),
    /// A token's `sub`, hashed ([`super::auth::Grant::user_hash`]).
    User(u64),
}

impl ClientKey {
    /// The client behind `peer`: the peer itself, or, when the peer is a trusted proxy, the
    /// last address of `forwarded_for` (the one that proxy saw; those before it are the
    /// client's own say and could be anything).
    pub fn of(peer: IpAddr, forwarded_for: Option<&str>, trusted_proxies: &[IpAddr]) -> ClientKey {
        let client = match forwarded_for {
            Some(list) if trusted_proxies.contains(&canonical(peer)) => {
                list.rsplit(',').next().and_then(|last| last.trim().parse::<IpAddr>().ok()).unwrap_or(peer)
            }
            _ => peer,
        };
        ClientKey::Address(match canonical(client) {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
            v4 => v4,
        })
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's) as the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// One bucket: the tokens it had at `at`.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` at `now`.
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(rate.count), at: now }
    }

    /// The tokens it holds at `now`, refilled at `rate` since it was last used.
    fn tokens_at(&self, rate: Rate, now: Instant) -> f64 {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() / rate.refill().as_secs_f64();
        (self.tokens + refilled).min(f64::from(rate.count))
    }

    /// Takes a token at `now`, or says how long until there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let tokens = self.tokens_at(rate, now);
        if tokens >= 1.0 {
            *self = Bucket { tokens: tokens - 1.0, at: now };
            Ok(())
        } else {
            *self = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) * rate.refill().as_secs_f64()))
        }
    }
}

/// What a limiter counts, for its refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Posts, on every post route (`--post-rate`, `--connection-post-rate`).
    Posts,
    /// New streams: SSE and WebSocket subscriptions (`--connect-rate`).
    Connects,
}

impl Limited {
    /// Why a client was refused, for the 429 body and the 1008 close reason.
    pub fn refusal(self, rate: Option<Rate>, wait: Duration) -> String {
        let doing = match self {
            Limited::Posts => "posting",
            Limited::Connects => "connecting",
        };
        let rate = rate.map_or_else(String::new, |r| format!(" (at most {} per {:?})", r.count, r.period));
        format!("{doing} too fast{rate}: try again in {:.1} s", wait.as_secs_f64().max(0.1))
    }
}

/// What [`RateLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It goes on (a token was taken, or there is no limit or no address).
    Admit,
    /// The client is not tracked: the table was full of clients in the middle of a burst.
    Untracked,
    /// Too fast: the next token is back after this long.
    Refuse(Duration),
}

/// The buckets of every client for one limit, shared by every connection of the process.
#[derive(Debug)]
pub struct RateLimiter {
    limited: Limited,
    rate: Option<Rate>,
    trusted_proxies: Vec<IpAddr>,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

impl RateLimiter {
    /// A limiter of `limited` at `rate` (`None`: everything is admitted), taking
    /// `X-Forwarded-For` from the `trusted_proxies` only.
    pub fn new(limited: Limited, rate: Option<Rate>, trusted_proxies: Vec<IpAddr>) -> RateLimiter {
        let trusted_proxies = trusted_proxies.into_iter().map(canonical).collect();
        RateLimiter { limited, rate, trusted_proxies, buckets: Mutex::new(HashMap::new()) }
    }

    /// The limit, if any.
    pub fn rate(&self) -> Option<Rate> {
        self.rate
    }

    /// How many clients' buckets are kept now.
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// The key of the client that sent a request from `peer` with this `X-Forwarded-For`.
    pub fn client(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<ClientKey> {
        Some(ClientKey::of(peer?, forwarded_for, &self.trusted_proxies))
    }

    /// Takes one token of `client`'s bucket at `now`, or says how long until there is one.
    pub fn admit(&self, client: Option<ClientKey>, now: Instant) -> Admission {
        let (Some(rate), Some(client)) = (self.rate, client) else { return Admission::Admit };
        let full = f64::from(rate.count);
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(&client) && buckets.len() >= MAX_CLIENTS {
            buckets.retain(|_, bucket| bucket.tokens_at(rate, now) < full);
            if buckets.len() >= MAX_CLIENTS {
                return Admission::Untracked;
            }
        }
        match buckets.entry(client).or_insert_with(|| Bucket::full(rate, now)).take(rate, now) {
            Ok(()) => Admission::Admit,
            Err(wait) => Admission::Refuse(wait),
        }
    }

    /// Why a client was refused, for the 429 body and the 1008 close reason.
    pub fn refusal(&self, wait: Duration) -> String {
        self.limited.refusal(self.rate, wait)
    }
}
