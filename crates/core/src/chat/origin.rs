//! Which web origins may use the chat's state-changing and streaming routes.
//!
//! A browser sends `Origin` with every WebSocket handshake, every POST and every cross-site
//! fetch. A page on another site can make a visitor's browser open a WebSocket here (the
//! same-origin policy does not apply to WebSockets), subscribe to an event stream or post a
//! form; the XSRF token stops the Tornado form, nothing else stopped the rest. So a request
//! that carries an `Origin` other than the server's own, or one named by
//! `--allow-origin`, is refused with 403 on every route but the page, its assets and the
//! health and metrics routes (Centrifugo's `allowed_origins`, Phoenix's `check_origin`).
//!
//! "The server's own" is the origin the request was addressed to: `http://` (or `https://`,
//! behind a TLS proxy) followed by its `Host`. A request without `Origin` (curl, `c10k
//! load`, a same-origin `EventSource` or `fetch` GET) is not a cross-site one and passes.
//! `Origin: null` (a sandboxed frame, a `file:` page) is foreign.

/// The origins allowed besides the request's own.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    /// Any origin at all (`--allow-origin '*'`): no protection.
    any: bool,
    /// Normalised `scheme://host:port`, lower case.
    listed: Vec<String>,
}

impl AllowedOrigins {
    /// Parses `--allow-origin` values: `*`, or origins such as `https://chat.example.org`
    /// (a scheme, a host, an optional port; no path).
    pub fn parse(values: &[String]) -> Result<AllowedOrigins, String> {
        let mut allowed = AllowedOrigins::default();
        for value in values {
            if value == "*" {
                allowed.any = true;
                continue;
            }
            let origin = normalise(value).ok_or_else(|| {
                format!("--allow-origin {value:?} is not an origin; write e.g. https://chat.example.org or http://localhost:3000")
            })?;
            allowed.listed.push(origin);
        }
        Ok(allowed)
    }

    /// Whether a request with this `Origin` (if any) and this `Host` may proceed.
    pub fn permits(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.any {
            return true;
        }
        let Some(origin) = normalise(origin) else { return false };
        if self.listed.contains(&origin) {
            return true;
        }
        let Some(host) = host else { return false };
        let host = host.trim().to_ascii_lowercase();
        // The request's own origin: http or https (a TLS proxy in front) and its Host, the
        // default port written or not.
        ["http", "https"].iter().any(|scheme| normalise(&format!("{scheme}://{host}")).as_deref() == Some(&origin))
    }
}

/// `scheme://host[:port]` in lower case with the port always written, or `None` if the
/// text is not an http(s) origin.
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match rest.rfind(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some(colon) if !rest[colon..].contains(']') => (&rest[..colon], &rest[colon + 1..]),
        _ => (rest, default_port),
    };
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{scheme}://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(values: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_requests_own_origin_passes_with_or_without_its_default_port() {
        let own = allowed(&[]);
        assert!(own.permits(Some("http://127.0.0.1:8888"), Some("127.0.0.1:8888")));
        assert!(own.permits(Some("HTTP://Chat.Example.org"), Some("chat.example.org")));
        assert!(own.permits(Some("http://chat.example.org"), Some("chat.example.org:80")));
        assert!(own.permits(Some("https://chat.example.org"), Some("chat.example.org")), "behind a TLS proxy");
        assert!(own.permits(Some("http://[::1]:8888"), Some("[::1]:8888")));
        assert!(own.permits(None, Some("127.0.0.1:8888")), "no Origin: not a cross-site request");
    }

    #[test]
    fn a_foreign_origin_is_refused() {
        let own = allowed(&[]);
        assert!(!own.permits(Some("http://evil.example"), Some("127.0.0.1:8888")));
        assert!(!own.permits(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8888")), "another port is another origin");
        assert!(!own.permits(Some("http://127.0.0.1.evil.example:8888"), Some("127.0.0.1:8888")));
        assert!(!own.permits(Some("null"), Some("127.0.0.1:8888")));
        assert!(!own.permits(Some("file://"), Some("127.0.0.1:8888")));
        assert!(!own.permits(Some("http://127.0.0.1:8888"), None), "no Host to compare with");
    }

    #[test]
    fn listed_origins_and_any_pass() {
        let listed = allowed(&["https://app.example.org", "http://localhost:3000/"]);
        assert!(listed.permits(Some("https://app.example.org"), Some("127.0.0.1:8888")));
        assert!(listed.permits(Some("https://app.example.org:443"), Some("127.0.0.1:8888")));
        assert!(listed.permits(Some("http://localhost:3000"), Some("127.0.0.1:8888")));
        assert!(!listed.permits(Some("http://app.example.org"), Some("127.0.0.1:8888")), "the scheme is part of it");
        assert!(allowed(&["*"]).permits(Some("null"), Some("x")));
    }

    #[test]
    fn a_value_that_is_not_an_origin_is_refused_with_what_to_write() {
        for bad in ["chat.example.org", "ftp://x", "https://x/path", "https://", "https://x:port"] {
            let err = AllowedOrigins::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains("https://chat.example.org"), "{bad}: {err}");
        }
    }
}
