//! The data that crosses the codec: requests in, responses out, and protocol errors.

use std::borrow::Cow;
use std::fmt;

/// An HTTP status code (RFC 9110, section 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode(pub u16);

impl StatusCode {
    /// 101 Switching Protocols (WebSocket upgrade).
    pub const SWITCHING_PROTOCOLS: StatusCode = StatusCode(101);
    /// 200 OK.
    pub const OK: StatusCode = StatusCode(200);
    /// 201 Created.
    pub const CREATED: StatusCode = StatusCode(201);
    /// 204 No Content.
    pub const NO_CONTENT: StatusCode = StatusCode(204);
    /// 302 Found.
    pub const FOUND: StatusCode = StatusCode(302);
    /// 400 Bad Request.
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    /// 401 Unauthorized: no credentials, or bad ones (RFC 9110 15.5.2).
    pub const UNAUTHORIZED: StatusCode = StatusCode(401);
    /// 403 Forbidden.
    pub const FORBIDDEN: StatusCode = StatusCode(403);
    /// 404 Not Found.
    pub const NOT_FOUND: StatusCode = StatusCode(404);
    /// 405 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: StatusCode = StatusCode(405);
    /// 409 Conflict (the ledger: an account that exists already).
    pub const CONFLICT: StatusCode = StatusCode(409);
    /// 408 Request Timeout.
    pub const REQUEST_TIMEOUT: StatusCode = StatusCode(408);
    /// 413 Content Too Large.
    pub const CONTENT_TOO_LARGE: StatusCode = StatusCode(413);
    /// 414 URI Too Long.
    pub const URI_TOO_LONG: StatusCode = StatusCode(414);
    /// 415 Unsupported Media Type.
    pub const UNSUPPORTED_MEDIA_TYPE: StatusCode = StatusCode(415);
    /// 426 Upgrade Required.
    pub const UPGRADE_REQUIRED: StatusCode = StatusCode(426);
    /// 422 Unprocessable Content (the ledger: insufficient funds).
    pub const UNPROCESSABLE_ENTITY: StatusCode = StatusCode(422);
    /// 429 Too Many Requests (the post rate limit).
    pub const TOO_MANY_REQUESTS: StatusCode = StatusCode(429);
    /// 431 Request Header Fields Too Large.
    pub const HEADER_FIELDS_TOO_LARGE: StatusCode = StatusCode(431);
    /// 500 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: StatusCode = StatusCode(500);
    /// 501 Not Implemented.
    pub const NOT_IMPLEMENTED: StatusCode = StatusCode(501);
    /// 503 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);
    /// 505 HTTP Version Not Supported.
    pub const HTTP_VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);

    /// The reason phrase sent on the status line.
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            101 => "Switching Protocols",
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            302 => "Found",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Content Too Large",
            414 => "URI Too Long",
            415 => "Unsupported Media Type",
            417 => "Expectation Failed",
            422 => "Unprocessable Content",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// The request method. Methods the router does not know are kept as `Other` so that it
/// can answer 405 (or 501) rather than the codec rejecting them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD: answered like GET, without the body.
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// Any other token.
    Other(String),
}

impl Method {
    /// Parses a method token as it appears on the request line (case-sensitive, RFC 9110 9.1).
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        }
    }

    /// The token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        }
    }
}

/// Request header fields in arrival order. Names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Headers::default()
    }

    /// Appends a field (the name as received; lookups ignore case).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.fields.push((name.into(), value.into()));
    }

    /// The first value of `name`, as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name`, if it is valid UTF-8 (trimmed of optional white space).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|s| s.trim_matches(|c| c == ' ' || c == '\t'))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether `name` holds `token` in its comma-separated list, ignoring case
    /// (for `Connection: keep-alive, Upgrade` and friends).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            std::str::from_utf8(v)
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// All fields in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// One complete request: head and de-framed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target exactly as sent (origin form: path and optional query).
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// The header fields.
    pub headers: Headers,
    /// The body, de-chunked; empty when there was none.
    pub body: Vec<u8>,
    /// Whether the connection may carry another request after this one (RFC 9112 9.3):
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// The address the connection came from, as the model's driver saw it (`None`: not
    /// known, as in the core's own tests). The decoder leaves it `None`; the connection
    /// machine fills it in. Used by the post rate limit (`chat::rate`).
    pub peer: Option<core::net::IpAddr>,
}

impl Request {
    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        match self.target.find('?') {
            Some(i) => &self.target[..i],
            None => &self.target,
        }
    }

    /// The query part of the target, without the `?` (empty when absent).
    pub fn query(&self) -> &str {
        match self.target.find('?') {
            Some(i) => &self.target[i + 1..],
            None => "",
        }
    }

    /// Whether this is a WebSocket opening handshake (RFC 6455 4.1): GET with
    /// `Upgrade: websocket` and `Connection: Upgrade`.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.method == Method::Get
            && self.headers.has_token("upgrade", "websocket")
            && self.headers.has_token("connection", "upgrade")
    }
}

/// What the decoder has for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete request.
    Request(Request),
    /// The head announced `Expect: 100-continue` and the body has not all arrived:
    /// write `HTTP/1.1 100 Continue\r\n\r\n` now, then keep feeding bytes. Given once per
    /// request.
    Continue,
    /// Nothing more can be decoded until more bytes arrive.
    NeedData,
}

/// The peer broke the protocol. Answer with [`ProtocolError::response`] and close: after a
/// framing error nothing that follows on the connection can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct ProtocolError {
    /// The status to answer with (400, 413, 414, 431, 501, 505...).
    pub status: StatusCode,
    /// What was wrong, for the log and the response body.
    pub reason: &'static str,
}

impl ProtocolError {
    /// A protocol error with this status and reason.
    pub fn new(status: StatusCode, reason: &'static str) -> Self {
        ProtocolError { status, reason }
    }

    /// The response to send before closing: the status, and the reason as plain text.
    pub fn response(&self) -> Response {
        Response::text(self.status, format!("{}\n", self.reason)).close()
    }
}

/// A response to encode. Bodies are complete byte strings; streams (SSE, WebSocket) write
/// their head with [`Response::encode_head`] and then write their own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// Header fields to send, besides `Content-Length`, `Date` and `Connection`, which
    /// `encode` writes itself.
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Close the connection after this response, whatever the request asked.
    pub close: bool,
    /// The route that produced it, for the latency histogram (`/metrics`); not sent.
    /// The application sets it ([`Response::timed`]); the model, once the response is
    /// ready to write, reports the time since the request was parsed under this name.
    pub route: Option<&'static str>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: StatusCode) -> Self {
        Response { status, headers: Vec::new(), body: Vec::new(), close: false, route: None }
    }

    /// A response with a body of the given content type.
    pub fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status).header("Content-Type", content_type).body(body)
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: StatusCode, body: impl Into<Vec<u8>>) -> Self {
        Response::with_body(status, "text/plain; charset=utf-8", body)
    }

    /// Adds a header field.
    pub fn header(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Marks the connection to be closed after this response.
    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// Names the route that produced it, for the latency histogram.
    pub fn timed(mut self, route: &'static str) -> Self {
        self.route = Some(route);
        self
    }
}
