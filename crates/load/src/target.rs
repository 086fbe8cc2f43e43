//! Where the load goes: parsing `--target` and refusing anything off this machine.
//!
//! A load generator pointed at someone else's server is an attack, so the check is not a
//! CLI nicety: [`crate::run`] and every worker call [`check_loopback`] themselves.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::LoadError;

/// Refuses any address outside 127.0.0.0/8 and ::1.
pub fn check_loopback(ip: IpAddr) -> Result<(), LoadError> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(LoadError::NotLoopback(format!(
            "refusing to load {ip}: c10k load only targets this machine (127.0.0.0/8 or ::1); \
             start the server with --listen 127.0.0.1:PORT and point --target at it"
        )))
    }
}

/// Parses `127.0.0.1:8888`, `http://127.0.0.1:8888/` (the line `c10k serve` prints),
/// `localhost:8888` or `[::1]:8888` into a loopback socket address. A host name must
/// resolve to loopback addresses only.
pub fn parse_target(text: &str) -> Result<SocketAddr, LoadError> {
    let trimmed = text.trim();
    if trimmed.starts_with("https://") {
        return Err(LoadError::Config(format!("{text:?}: c10k load speaks plain HTTP only (no TLS on loopback)")));
    }
    let (url, rest) = match trimmed.strip_prefix("http://") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(LoadError::Config(format!("{text:?} names no server; write HOST:PORT, e.g. 127.0.0.1:8888")));
    }
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        check_loopback(addr.ip())?;
        return Ok(addr);
    }
    // An address without a port: refuse it for what it is before asking for a port.
    if let Ok(ip) = authority.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        check_loopback(ip)?;
        if url {
            return Ok(SocketAddr::new(ip, 80));
        }
    }
    let authority = match (authority.contains(':') && !authority.ends_with(']'), url) {
        (true, _) => authority.to_string(),
        (false, true) => format!("{authority}:80"),
        (false, false) => {
            return Err(LoadError::Config(format!("{text:?} has no port; write HOST:PORT, e.g. 127.0.0.1:8888")))
        }
    };
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|e| LoadError::Config(format!("cannot resolve {authority:?}: {e}")))?
        .collect();
    let first = *addrs.first().ok_or_else(|| LoadError::Config(format!("{authority:?} resolves to nothing")))?;
    for addr in &addrs {
        check_loopback(addr.ip())?;
    }
    // Prefer IPv4: the source-address spreading of idle-capacity needs 127.0.0.x.
    Ok(addrs.iter().copied().find(SocketAddr::is_ipv4).unwrap_or(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        assert_eq!(parse_target("127.0.0.1:8888").unwrap(), "127.0.0.1:8888".parse().unwrap());
        assert_eq!(parse_target("http://127.0.0.1:4000/").unwrap(), "127.0.0.1:4000".parse().unwrap());
        assert_eq!(parse_target("127.9.8.7:1").unwrap(), "127.9.8.7:1".parse().unwrap());
        assert_eq!(parse_target("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert!(parse_target("localhost:8888").unwrap().ip().is_loopback());
        assert_eq!(parse_target("http://127.0.0.1/").unwrap(), "127.0.0.1:80".parse().unwrap());
        assert_eq!(parse_target("http://[::1]/").unwrap(), "[::1]:80".parse().unwrap());
    }

    #[test]
    fn refuses_other_machines() {
        for text in [
            "10.0.0.1:80",
            "192.168.1.1:80",
            "http://8.8.8.8:53/",
            "http://8.8.8.8/",
            "8.8.8.8",
            "[::ffff:127.0.0.1]:80",
            "0.0.0.0:80",
        ] {
            let error = parse_target(text).unwrap_err();
            assert!(matches!(error, LoadError::NotLoopback(_)), "{text}: {error}");
            assert!(error.to_string().contains("only targets this machine"), "{error}");
        }
    }

    #[test]
    fn explains_malformed_targets() {
        assert!(parse_target("127.0.0.1").unwrap_err().to_string().contains("no port"));
        assert!(parse_target("https://127.0.0.1:1/").unwrap_err().to_string().contains("TLS"));
        assert!(parse_target("").unwrap_err().to_string().contains("names no server"));
    }
}
