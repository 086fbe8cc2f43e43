//! The rate limits' token buckets (`c10k_core::chat::rate`), on a clock that moves only
//! when told: the conformance suite checks the routes, this the arithmetic.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use c10k_core::chat::rate::{Admission, Bucket, ClientKey, Limited, Rate, RateLimiter, MAX_CLIENTS};

fn limiter(text: &str) -> RateLimiter {
    RateLimiter::new(Limited::Posts, Some(Rate::parse(text).unwrap()), vec!["127.0.0.1".parse().unwrap()])
}

fn key(address: &str) -> Option<ClientKey> {
    Some(ClientKey::of(address.parse().unwrap(), None, &[]))
}

#[test]
fn a_rate_is_count_per_period() {
    assert_eq!(Rate::parse("5/s"), Ok(Rate { count: 5, period: Duration::from_secs(1) }));
    assert_eq!(Rate::parse("30/m"), Ok(Rate { count: 30, period: Duration::from_secs(60) }));
    assert_eq!(Rate::parse("20/10s"), Ok(Rate { count: 20, period: Duration::from_secs(10) }));
    assert_eq!(Rate::parse("3/500ms"), Ok(Rate { count: 3, period: Duration::from_millis(500) }));
    for bad in ["5", "five/s", "0/s", "5/0s", "5/fortnight", "-1/s", "/s"] {
        let error = Rate::parse(bad).unwrap_err();
        assert!(error.contains(&format!("{bad:?}")) && error.contains("COUNT"), "{bad}: {error}");
    }
}

#[test]
fn a_burst_of_count_passes_then_one_per_refill() {
    let limiter = limiter("3/3s");
    let start = Instant::now();
    let client = key("192.0.2.7");
    for _ in 0..3 {
        assert_eq!(limiter.admit(client, start), Admission::Admit);
    }
    let Admission::Refuse(wait) = limiter.admit(client, start) else { panic!("the fourth post of a burst of 3") };
    assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "a token comes back each second: {wait:?}");
    let Admission::Refuse(wait) = limiter.admit(client, start + Duration::from_millis(999)) else { panic!("999 ms later") };
    assert!(wait <= Duration::from_millis(2), "the token is nearly back: {wait:?}");
    assert_eq!(limiter.admit(client, start + Duration::from_secs(1)), Admission::Admit);
    assert!(matches!(limiter.admit(client, start + Duration::from_secs(1)), Admission::Refuse(_)));
    // Another client has its own bucket.
    assert_eq!(limiter.admit(key("192.0.2.8"), start), Admission::Admit);
}

#[test]
fn no_rate_or_no_address_admits_everything() {
    let open = RateLimiter::new(Limited::Connects, None, Vec::new());
    let limited = limiter("1/h");
    let now = Instant::now();
    for _ in 0..100 {
        assert_eq!(open.admit(key("192.0.2.7"), now), Admission::Admit);
        assert_eq!(limited.admit(None, now), Admission::Admit);
    }
}

#[test]
fn a_client_is_its_address_its_v6_slash_64_or_what_a_trusted_proxy_forwarded() {
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let through = |peer: &str, header| ClientKey::of(peer.parse().unwrap(), header, &[proxy]);
    assert_eq!(through("127.0.0.1", Some("203.0.113.9")), through("203.0.113.9", None));
    assert_eq!(through("127.0.0.1", Some("10.0.0.1, 203.0.113.9")), through("203.0.113.9", None), "the proxy's own entry is last");
    assert_eq!(through("::ffff:127.0.0.1", Some("203.0.113.9")), through("203.0.113.9", None), "a mapped address is the IPv4 one");
    assert_eq!(through("198.51.100.1", Some("203.0.113.9")), through("198.51.100.1", None), "anyone else's header is ignored");
    assert_eq!(through("127.0.0.1", Some("not an address")), through("127.0.0.1", None));
    assert_eq!(through("2001:db8:1:2::5", None), through("2001:db8:1:2:ffff::1", None), "one /64 is one client");
    assert_ne!(through("2001:db8:1:2::5", None), through("2001:db8:1:3::5", None));
}

#[test]
fn the_table_is_bounded_and_drops_refilled_buckets_first() {
    let limiter = limiter("2/s");
    let start = Instant::now();
    for i in 0..MAX_CLIENTS as u32 {
        let address = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        assert_eq!(limiter.admit(Some(ClientKey::of(address, None, &[])), start), Admission::Admit);
    }
    assert_eq!(limiter.admit(key("192.0.2.1"), start), Admission::Untracked, "every bucket is mid-burst");
    // A second later every bucket is full again: the table makes room.
    assert_eq!(limiter.admit(key("192.0.2.1"), start + Duration::from_secs(1)), Admission::Admit);
    assert_eq!(limiter.clients(), 1);
}

#[test]
fn a_connections_own_bucket_refills_like_a_clients() {
    let rate = Rate::parse("2/2s").unwrap();
    let start = Instant::now();
    let mut bucket = Bucket::full(rate, start);
    assert_eq!(bucket.take(rate, start), Ok(()));
    assert_eq!(bucket.take(rate, start), Ok(()));
    let wait = bucket.take(rate, start).expect_err("the third of a burst of 2");
    assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "a token comes back each second: {wait:?}");
    assert_eq!(bucket.take(rate, start + Duration::from_secs(1)), Ok(()));
    assert!(bucket.take(rate, start + Duration::from_secs(1)).is_err());
    // Long unused, it holds no more than its size.
    let later = start + Duration::from_secs(3600);
    assert_eq!(bucket.take(rate, later), Ok(()));
    assert_eq!(bucket.take(rate, later), Ok(()));
    assert!(bucket.take(rate, later).is_err());
}

#[test]
fn a_refusal_says_what_was_too_fast_and_when_to_come_back() {
    let rate = Some(Rate::parse("3/m").unwrap());
    let posts = Limited::Posts.refusal(rate, Duration::from_millis(19_960));
    assert_eq!(posts, "posting too fast (at most 3 per 60s): try again in 20.0 s");
    let connects = Limited::Connects.refusal(rate, Duration::ZERO);
    assert_eq!(connects, "connecting too fast (at most 3 per 60s): try again in 0.1 s");
}
