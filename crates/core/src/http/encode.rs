//! Response encoding: a [`Response`] to the bytes of an HTTP/1.1 response (RFC 9112 4).
//!
//! The codec owns the framing fields: `encode` writes `Date`, `Content-Length` and
//! `Connection` itself, and skips same-named fields a route may have set, so that a
//! response can never carry two different framings. The date string is passed in, because
//! the core reads no clock: models format it with [`http_date`] about once a second.

use std::time::SystemTime;

use super::types::{Method, Request, Response, StatusCode};

/// How to encode one response: what the request allowed, and the current date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding<'a> {
    /// The request let the connection persist ([`Request::keep_alive`]).
    pub keep_alive: bool,
    /// The request was HEAD: send the head (with the body's `Content-Length`), no body.
    pub head_only: bool,
    /// The request was HTTP/1.0: a persisting connection must be announced with
    /// `Connection: keep-alive` (RFC 9112 9.3 and appendix C.2.2).
    pub http10: bool,
    /// The `Date` field value, as made by [`http_date`].
    pub date: &'a str,
}

impl<'a> Encoding<'a> {
    /// How to answer `req`, stamped with `date`.
    pub fn for_request(req: &Request, date: &'a str) -> Self {
        Encoding {
            keep_alive: req.keep_alive,
            head_only: req.method == Method::Head,
            http10: req.version_minor == 0,
            date,
        }
    }
}

/// Formats `t` as an IMF-fixdate for the `Date` field (RFC 9110 5.6.7), e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

impl Response {
    /// Appends the whole response to `out`: status line, the response's fields, `Date`,
    /// `Content-Length`, `Connection` when needed, blank line, then the body unless the
    /// request was HEAD. Returns whether the connection stays open afterwards.
    ///
    /// `Content-Length` is always sent, for HEAD too (the length GET would have had),
    /// except on 1xx and 204, where RFC 9110 8.6 forbids it (and a body).
    pub fn encode(&self, how: &Encoding<'_>, out: &mut Vec<u8>) -> bool {
        let keep_alive = how.keep_alive && !self.close;
        // RFC 9110 8.6: "A server MUST NOT send a Content-Length header field in any
        // response with a status code of 1xx (Informational) or 204 (No Content)."
        let bodiless = self.status.0 < 200 || self.status == StatusCode::NO_CONTENT;
        out.reserve(128 + self.headers.len() * 32 + self.body.len());
        self.write_status_line(out);
        for (name, value) in &self.headers {
            if ["content-length", "connection", "date", "transfer-encoding"]
                .iter()
                .any(|own| name.eq_ignore_ascii_case(own))
            {
                continue;
            }
            write_field(out, name, value);
        }
        write_field(out, "Date", how.date);
        if !bodiless {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, self.body.len());
            out.extend_from_slice(b"\r\n");
        }
        // RFC 9112 9.6: "The server SHOULD send a "close" connection option in its final
        // response on that connection." RFC 9112 C.2.2: an HTTP/1.0 client needs
        // "keep-alive" to know the connection persists.
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if how.http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !how.head_only && !bodiless {
            out.extend_from_slice(&self.body);
        }
        keep_alive
    }

    /// Appends only the head: status line, the response's fields as given, `Date`, blank
    /// line. No `Content-Length`, no `Connection`: for 101 Switching Protocols and event
    /// streams, which set their own fields and then write their own bytes.
    pub fn encode_head(&self, date: &str, out: &mut Vec<u8>) {
        self.write_status_line(out);
        for (name, value) in &self.headers {
            write_field(out, name, value);
        }
        write_field(out, "Date", date);
        out.extend_from_slice(b"\r\n");
    }

    /// RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    fn write_status_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, usize::from(self.status.0));
        out.push(b' ');
        out.extend_from_slice(self.status.reason().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// RFC 9112 5: field-line = field-name ":" OWS field-value OWS
fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through `fmt` (this is on every response).
fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
