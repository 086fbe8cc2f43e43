//! The per-client post rate limit (`--post-rate COUNT/PERIOD`).
//!
//! One token bucket per client (nginx's `limit_req`, Centrifugo's client message limits):
//! a client holds at most COUNT tokens, a post takes one, and they come back at COUNT per
//! PERIOD, so a client may post a burst of COUNT at once and then COUNT per PERIOD for
//! ever. A post without a token is refused: HTTP `429 Too Many Requests` with
//! `Retry-After` (the seconds until a token is back), and over WebSocket the close code
//! 1008 (policy violation, RFC 6455 7.4.1) with the same reason, since a frame has no
//! status of its own. Nothing is stored for a refused post.
//!
//! **Who is a client.** The address the connection came from (an IPv6 address by its /64,
//! the block one subscriber is given), or, when that address is a proxy named by
//! `--trusted-proxy` (nginx in front, deploy/nginx.conf), the last address of the
//! `X-Forwarded-For` the proxy added. A connection whose driver gives no address (the
//! core's own tests) is not limited.
//!
//! **Bounds.** The table holds at most [`MAX_CLIENTS`] buckets. A bucket that has filled up
//! again is the same as none, so when the table is full those are dropped first; if every
//! one is still in use, the new client is let through untracked (counted as
//! `rate_untracked` in `/metrics`): a flood from that many addresses is not one client
//! posting too fast, and no memory grows with it.
//!
//! **Off by default.** `c10k load` and `c10k bench` post from one address as fast as the
//! server goes; a limit that is on by default would measure the limit. Each worker process
//! (`--workers N`) keeps its own table, so one client's burst spread over N workers may
//! reach N × COUNT (the kernel spreads connections, not clients, over them).

use core::net::IpAddr;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most clients whose buckets are kept at once.
pub const MAX_CLIENTS: usize = 65_536;

/// `--post-rate`: at most `count` posts at once, and `count` per `period` after that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostRate {
    /// The bucket's size: the burst a client may post at once.
    pub count: u32,
    /// The time in which `count` tokens come back.
    pub period: Duration,
}

impl PostRate {
    /// Parses `COUNT/PERIOD`: `5/s`, `30/m`, `20/10s`, `100/1h` (a period as `--idle-timeout`
    /// takes it, or just a unit: `s`, `m`, `h`).
    pub fn parse(text: &str) -> Result<PostRate, String> {
        let explain = || format!("--post-rate {text:?}: write COUNT/PERIOD, e.g. 5/s, 30/m or 20/10s");
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
            return Err(format!("--post-rate {text:?}: COUNT and PERIOD must be above zero (leave the flag out for no limit)"));
        }
        Ok(PostRate { count, period })
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

/// Who a client is, for the limit: an IPv4 address, or an IPv6 address's /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

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
        ClientKey(match canonical(client) {
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

/// One client's bucket: the tokens it had at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What [`PostLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The post goes on (a token was taken, or the client is not tracked).
    Admit,
    /// The client is not tracked: the table was full of clients in the middle of a burst.
    Untracked,
    /// Too fast: the next token is back after this long.
    Refuse(Duration),
}

/// The buckets of every client, shared by every connection of the process.
#[derive(Debug)]
pub struct PostLimiter {
    rate: Option<PostRate>,
    trusted_proxies: Vec<IpAddr>,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

impl PostLimiter {
    /// A limiter at `rate` (`None`: every post is admitted), taking `X-Forwarded-For` from
    /// the `trusted_proxies` only.
    pub fn new(rate: Option<PostRate>, trusted_proxies: Vec<IpAddr>) -> PostLimiter {
        let trusted_proxies = trusted_proxies.into_iter().map(canonical).collect();
        PostLimiter { rate, trusted_proxies, buckets: Mutex::new(HashMap::new()) }
    }

    /// The limit, if any.
    pub fn rate(&self) -> Option<PostRate> {
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
        let per_token = rate.refill().as_secs_f64();
        let refilled = |bucket: &Bucket| (bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() / per_token).min(full);
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(&client) && buckets.len() >= MAX_CLIENTS {
            buckets.retain(|_, bucket| refilled(bucket) < full);
            if buckets.len() >= MAX_CLIENTS {
                return Admission::Untracked;
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket { tokens: full, at: now });
        let tokens = refilled(bucket);
        if tokens >= 1.0 {
            *bucket = Bucket { tokens: tokens - 1.0, at: now };
            Admission::Admit
        } else {
            *bucket = Bucket { tokens, at: now };
            Admission::Refuse(Duration::from_secs_f64((1.0 - tokens) * per_token))
        }
    }

    /// Why a post was refused, for the 429 body and the 1008 close reason.
    pub fn refusal(&self, wait: Duration) -> String {
        let rate = self.rate.map_or_else(String::new, |r| format!(" (at most {} per {:?})", r.count, r.period));
        format!("posting too fast{rate}: try again in {:.1} s", wait.as_secs_f64().max(0.1))
    }
}
