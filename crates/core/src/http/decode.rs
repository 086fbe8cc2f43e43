//! Request decoding: bytes in, [`Event`]s out (RFC 9112), after h11's `_readers.py`.
//!
//! The head is parsed by httparse once its blank line has arrived; the body is framed here
//! by `Content-Length` or by the chunked coding. Every bound of [`Limits`] that concerns a
//! request is checked as early as the bytes allow, so a peer never makes us buffer more than
//! one head (32 KiB) or one body (1 MiB) before we answer.
//!
//! Cost model: each received byte is looked at a constant number of times. The search for
//! the end of a head or of a chunk line resumes where the previous call stopped (`scan`),
//! so a head trickling in one byte at a time is not re-parsed from its start; consumed bytes
//! are dropped by moving an index, and the buffer is compacted only when the consumed part
//! is at least half of it, keeping its allocation for the next request.

use std::mem::{self, MaybeUninit};

use super::types::{Event, Headers, Method, ProtocolError, Request, StatusCode};
use crate::limits::Limits;

/// Header slots kept on the stack when `max_headers` allows (uninitialised, so free);
/// a larger configured limit puts the array on the heap for each parse.
const STACK_HEADERS: usize = 128;

/// Longest chunk-size line (size and extensions) we wait for. RFC 9112 sets no bound;
/// without one a peer could make us buffer an endless chunk extension.
const MAX_CHUNK_LINE: usize = 4096;

/// Incremental request decoder for one connection.
///
/// Call order: [`receive`](Self::receive) what the socket gave, then
/// [`next_event`](Self::next_event) until it answers [`Event::NeedData`] (or an error, after
/// which the connection must be answered and closed: the error is sticky). At end of file
/// call [`receive_eof`](Self::receive_eof). Between requests [`is_idle`](Self::is_idle)
/// says whether the idle timeout or the head timeout applies, and after an upgrade request
/// [`take_buffered`](Self::take_buffered) hands over the bytes that followed it.
///
/// After a request that does not keep the connection alive, nothing more is decoded
/// (RFC 9112 9.6: "The server MUST NOT process any further requests received on that
/// connection"): `next_event` answers `NeedData` and received bytes are discarded.
#[derive(Debug)]
pub struct RequestDecoder {
    caps: Caps,
    input: Input,
    /// How many bytes from the start of [`Input::available`] are known not to hold what
    /// the current state waits for (the end of a head, of a chunk line, of the trailers).
    scan: usize,
    /// Head state: whether the request line's LF has been seen (its target was checked).
    line_seen: bool,
    state: State,
}

/// The bounds of [`Limits`] that the decoder enforces.
#[derive(Debug, Clone, Copy)]
struct Caps {
    head: usize,
    field: usize,
    headers: usize,
    target: usize,
    body: usize,
}

/// Received bytes; those before `start` are consumed.
#[derive(Debug, Default)]
struct Input {
    buf: Vec<u8>,
    start: usize,
}

impl Input {
    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.len());
        if self.start == self.buf.len() {
            // The common case between requests: no copy, the allocation is kept.
            self.buf.clear();
            self.start = 0;
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        // Moving the unconsumed tail costs at most what was consumed since the last move,
        // so compaction is linear overall.
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// The head is parsed; its body is being framed.
    Body(Pending),
    /// The last request did not keep the connection alive: decode nothing more.
    Closed,
    /// The peer broke the protocol; every later call reports it again.
    Failed(ProtocolError),
}

/// A request whose head is parsed and whose body is still arriving.
#[derive(Debug)]
struct Pending {
    request: Request,
    framing: Framing,
    /// `Expect: 100-continue` was asked and `Event::Continue` has not been given yet.
    send_continue: bool,
}

#[derive(Debug)]
enum Framing {
    /// `Content-Length`: this many body bytes are still to come.
    Length(usize),
    /// The chunked coding, at this point of its grammar.
    Chunked(Chunk),
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Expecting `chunk-size [ chunk-ext ] CRLF`.
    Size,
    /// Inside `chunk-data`, this many bytes to go.
    Data(usize),
    /// Expecting the CRLF that ends `chunk-data`.
    DataEnd,
    /// After `last-chunk`: expecting `trailer-section CRLF`.
    Trailers,
}

/// Where the search for a blank line stopped.
enum Scan {
    /// The blank line ends just before this offset.
    End(usize),
    /// Not there yet; resume the search at this offset.
    More(usize),
}

fn bad(reason: &'static str) -> ProtocolError {
    ProtocolError::new(StatusCode::BAD_REQUEST, reason)
}

fn too_large() -> ProtocolError {
    ProtocolError::new(StatusCode::CONTENT_TOO_LARGE, "request body is larger than the server accepts")
}

fn head_too_large() -> ProtocolError {
    ProtocolError::new(StatusCode::HEADER_FIELDS_TOO_LARGE, "request head is larger than the server accepts")
}

fn target_too_long() -> ProtocolError {
    ProtocolError::new(StatusCode::URI_TOO_LONG, "request target is longer than the server accepts")
}

impl RequestDecoder {
    /// A decoder enforcing the head, header count, target and body bounds of `limits`.
    pub fn new(limits: &Limits) -> Self {
        RequestDecoder {
            caps: Caps {
                head: limits.max_head_bytes,
                field: limits.max_field_bytes,
                headers: limits.max_headers,
                target: limits.max_target_bytes,
                body: limits.max_body_bytes,
            },
            input: Input::default(),
            scan: 0,
            line_seen: false,
            state: State::Head,
        }
    }

    /// Appends bytes read from the peer. Nothing is parsed until [`next_event`](Self::next_event).
    pub fn receive(&mut self, bytes: &[u8]) {
        match self.state {
            // Nothing after a failure or a closing request will be read: do not hoard it.
            State::Closed | State::Failed(_) => {}
            State::Head | State::Body(_) => self.input.extend(bytes),
        }
    }

    /// The peer closed its sending side. `Ok` if that happened between requests; an error
    /// (400) if a request was cut short, or the earlier error if the decoder had failed.
    pub fn receive_eof(&mut self) -> Result<(), ProtocolError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        if self.is_idle() {
            Ok(())
        } else {
            let e = bad("connection closed in the middle of a request");
            self.state = State::Failed(e.clone());
            Err(e)
        }
    }

    /// Whether no byte of a next request is buffered: the connection is between requests
    /// (idle timeout) rather than inside one (head timeout). Stray empty lines between
    /// requests, which RFC 9112 2.2 lets us ignore, do not count.
    pub fn is_idle(&self) -> bool {
        match self.state {
            State::Head => self.input.available().iter().all(|&b| b == b'\r' || b == b'\n'),
            State::Closed => true,
            State::Body(_) | State::Failed(_) => false,
        }
    }

    /// Frees the input buffer if it holds no undecoded byte, for a connection about to
    /// sleep for a long time (an idle keep-alive, a long-poll): with many thousands of
    /// them, a buffer kept for each is most of their memory. The next [`receive`]
    /// allocates again. Keeps the buffer if it holds the start of a next request.
    ///
    /// [`receive`]: Self::receive
    pub fn release_idle_buffer(&mut self) {
        if self.input.available().is_empty() {
            self.input = Input::default();
        }
    }

    /// The bytes of memory the input buffer holds (its capacity, not what it holds
    /// undecoded): 0 once [`release_idle_buffer`](Self::release_idle_buffer) freed it.
    pub fn held_capacity(&self) -> usize {
        self.input.buf.capacity()
    }

    /// The bytes received and not yet decoded: after an upgrade request, the first bytes
    /// of the new protocol.
    pub fn buffered(&self) -> &[u8] {
        self.input.available()
    }

    /// Takes the bytes received and not yet decoded (see [`buffered`](Self::buffered)),
    /// leaving the decoder empty. Meant for the moment a connection leaves HTTP/1.1.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let input = mem::take(&mut self.input);
        self.scan = 0;
        self.line_seen = false;
        let mut buf = input.buf;
        buf.drain(..input.start);
        buf
    }

    /// The next complete request, `Continue`, or `NeedData`. An error means the peer broke
    /// the protocol: answer with [`ProtocolError::response`] and close.
    pub fn next_event(&mut self) -> Result<Event, ProtocolError> {
        let result = self.step();
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
            self.input = Input::default();
        }
        result
    }

    fn step(&mut self) -> Result<Event, ProtocolError> {
        if let State::Head = self.state {
            match self.read_head()? {
                Some(pending) => self.state = State::Body(pending),
                None => return Ok(Event::NeedData),
            }
        }
        let pending = match &mut self.state {
            State::Body(pending) => pending,
            State::Closed => return Ok(Event::NeedData),
            State::Failed(e) => return Err(e.clone()),
            State::Head => unreachable!("a parsed head moves the decoder to Body"),
        };
        if !read_body(&mut self.input, &mut self.scan, self.caps, pending)? {
            if pending.send_continue {
                pending.send_continue = false;
                return Ok(Event::Continue);
            }
            return Ok(Event::NeedData);
        }
        let State::Body(pending) = mem::replace(&mut self.state, State::Head) else {
            unreachable!("checked above")
        };
        if !pending.request.keep_alive {
            self.state = State::Closed;
            self.input = Input::default();
        }
        Ok(Event::Request(pending.request))
    }

    /// The error for a head that goes past `caps.head` bytes, judged on those bytes alone
    /// (so the same whatever the reads were): a request line that has not ended within them
    /// and whose target already passes its own limit there is a long target (414), anything
    /// else a large head (431).
    fn over_the_head_limit(&self, avail: &[u8]) -> ProtocolError {
        let caps = self.caps;
        if !self.line_seen && target_len(&avail[..caps.head.min(avail.len())]) > caps.target {
            target_too_long()
        } else {
            head_too_large()
        }
    }

    /// Parses the head once it has all arrived; `None` until then.
    fn read_head(&mut self) -> Result<Option<Pending>, ProtocolError> {
        // RFC 9112 2.2: "In the interest of robustness, a server that is expecting to
        // receive and parse a request-line SHOULD ignore at least one empty line (CRLF)
        // received prior to the request-line."
        if self.scan == 0 {
            let avail = self.input.available();
            let mut skip = 0;
            loop {
                match &avail[skip..] {
                    [b'\n', ..] => skip += 1,
                    [b'\r', b'\n', ..] => skip += 2,
                    _ => break,
                }
            }
            self.input.consume(skip);
        }
        let caps = self.caps;
        let avail = self.input.available();
        if avail.is_empty() || avail == b"\r" {
            return Ok(None);
        }

        // RFC 9112 3: request-line = method SP request-target SP HTTP-version
        // RFC 9112 3.2: "A server that receives a request-target longer than any URI it
        // wishes to parse MUST respond with a 414 (URI Too Long) status code."
        // Checked as soon as the request line is complete, before the headers arrive.
        //
        // Only the first `caps.head` bytes are ever looked at for the line's end: what the
        // decoder answers must not depend on how the bytes were cut into reads, and a read
        // that brings the head past its limit may bring the line's end or not. A line that
        // does not end within the head limit is judged by [`Self::over_the_head_limit`].
        if !self.line_seen {
            let window = &avail[..avail.len().min(caps.head)];
            if let Some(lf) = find(window, self.scan, b'\n') {
                self.line_seen = true;
                if target_len(&avail[..lf]) > caps.target {
                    return Err(target_too_long());
                }
            }
        }

        // RFC 9112 2.1:
        //   HTTP-message   = start-line CRLF
        //                    *( field-line CRLF )
        //                    CRLF
        //                    [ message-body ]
        // RFC 9112 2.2: "a recipient MAY recognize a single LF as a line terminator and
        // ignore any preceding CR" (httparse does, so the search for the end does too).
        let end = match find_blank_line(avail, self.scan) {
            Scan::End(end) => end,
            Scan::More(resume) => {
                self.scan = resume;
                if avail.len() > caps.head {
                    return Err(self.over_the_head_limit(avail));
                }
                return Ok(None);
            }
        };
        if end > caps.head {
            return Err(self.over_the_head_limit(avail));
        }

        let pending = parse_head(&avail[..end], caps)?;
        self.input.consume(end);
        self.scan = 0;
        self.line_seen = false;
        Ok(Some(pending))
    }
}

/// Parses a complete head (request line, fields, blank line) and decides its body framing.
fn parse_head(head: &[u8], caps: Caps) -> Result<Pending, ProtocolError> {
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_HEADERS];
    let mut heap;
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if caps.headers <= STACK_HEADERS {
        &mut stack[..caps.headers]
    } else {
        heap = vec![MaybeUninit::uninit(); caps.headers];
        &mut heap
    };
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(_)) => {}
        // The blank line is there, so httparse cannot want more: the head is malformed.
        Ok(httparse::Status::Partial) => return Err(bad("malformed request head")),
        Err(e) => return Err(head_error(e, head)),
    }
    let (Some(method), Some(target), Some(version_minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(bad("malformed request line"));
    };
    if target.len() > caps.target {
        return Err(target_too_long());
    }
    let mut headers = Headers::new();
    for field in parsed.headers.iter() {
        // nginx answers a field longer than one of its large_client_header_buffers (8k)
        // with 431 ("Request Header Or Cookie Too Large") too.
        if field.name.len() + 2 + field.value.len() > caps.field {
            return Err(ProtocolError::new(
                StatusCode::HEADER_FIELDS_TOO_LARGE,
                "a request header field is longer than the server accepts",
            ));
        }
        headers.push(field.name, field.value);
    }

    check_host(&headers, version_minor)?;
    let framing = framing(&headers, version_minor, caps)?;

    // RFC 9112 9.3:
    //   "If the "close" connection option is present (Section 9.6), the connection will
    //    not persist after the current response; else,
    //    If the received protocol is HTTP/1.1 (or later), the connection will persist
    //    after the current response; else,
    //    If the received protocol is HTTP/1.0, the "keep-alive" connection option is
    //    present, [...] the connection will persist after the current response;
    //    otherwise, The connection will close after the current response."
    let keep_alive = if headers.has_token("connection", "close") {
        false
    } else if version_minor >= 1 {
        true
    } else {
        headers.has_token("connection", "keep-alive")
    };

    // RFC 9110 10.1.1: Expect = #expectation; "The Expect field value is
    // case-insensitive." "A server that receives a 100-continue expectation in an
    // HTTP/1.0 request MUST ignore that expectation."
    let send_continue = version_minor >= 1 && headers.has_token("expect", "100-continue");

    let body_len = match framing {
        Framing::Length(n) => n,
        Framing::Chunked(_) => 0,
    };
    Ok(Pending {
        request: Request {
            method: Method::from_token(method),
            target: target.to_string(),
            version_minor,
            headers,
            body: Vec::with_capacity(body_len),
            keep_alive,
            peer: None,
        },
        framing,
        send_continue,
    })
}

/// Maps an httparse error to the status it deserves.
fn head_error(e: httparse::Error, head: &[u8]) -> ProtocolError {
    match e {
        httparse::Error::TooManyHeaders => ProtocolError::new(
            StatusCode::HEADER_FIELDS_TOO_LARGE,
            "request has more header fields than the server accepts",
        ),
        // RFC 9112 2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT
        //               HTTP-name    = %s"HTTP"
        // httparse knows only 1.0 and 1.1. A well-formed request line naming another
        // version gets 505 (RFC 9110 15.6.6); anything else in that place is bad syntax.
        httparse::Error::Version => {
            let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut parts = line.split(|&b| b == b' ');
            let well_formed = matches!(
                (parts.next(), parts.next(), parts.next(), parts.next()),
                (Some(m), Some(t), Some(v), None)
                    if !m.is_empty() && !t.is_empty() && is_http_version(v)
            );
            if well_formed {
                ProtocolError::new(
                    StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                    "only HTTP/1.0 and HTTP/1.1 are supported",
                )
            } else {
                bad("malformed HTTP version in the request line")
            }
        }
        httparse::Error::HeaderName => bad("invalid header field name"),
        httparse::Error::HeaderValue => bad("invalid header field value"),
        httparse::Error::NewLine => bad("invalid line ending in the request head"),
        httparse::Error::Token | httparse::Error::Status => bad("malformed request line"),
    }
}

/// `HTTP/` DIGIT `.` DIGIT.
fn is_http_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// RFC 9112 3.2: "A server MUST respond with a 400 (Bad Request) status code to any
/// HTTP/1.1 request message that lacks a Host header field and to any request message that
/// contains more than one Host header field line or a Host header field with an invalid
/// field value." HTTP/1.0 requests may leave it out.
fn check_host(headers: &Headers, version_minor: u8) -> Result<(), ProtocolError> {
    let mut hosts = headers.get_all("host");
    match (hosts.next(), hosts.next()) {
        (None, _) if version_minor >= 1 => Err(bad("an HTTP/1.1 request must have a Host header field")),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(bad("a request must not have more than one Host header field")),
        (Some(value), None) if is_valid_host(value) => Ok(()),
        (Some(_), None) => Err(bad("invalid Host header field value")),
    }
}

/// RFC 9110 7.2: Host = uri-host [ ":" port ]; RFC 3986 3.2.2:
/// host = IP-literal / IPv4address / reg-name, reg-name = *( unreserved / pct-encoded /
/// sub-delims ), port = *DIGIT. An empty value is allowed (a target with no authority).
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else { return false };
        let (literal, rest) = value.split_at(close + 1);
        let inside = &literal[1..literal.len() - 1];
        if inside.is_empty() || !inside.iter().all(|&b| b.is_ascii_alphanumeric() || b == b':' || b == b'.') {
            return false;
        }
        match rest {
            [] => (&b""[..], &b""[..]),
            [b':', port @ ..] => (&b""[..], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon + 1..]),
            None => (value, &b""[..]),
        }
    };
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    host.iter().all(reg_name) && port.iter().all(u8::is_ascii_digit)
}

/// Decides how the body of a request is delimited (RFC 9112 6.3, items 3 to 7).
fn framing(headers: &Headers, version_minor: u8, caps: Caps) -> Result<Framing, ProtocolError> {
    let has_te = headers.get_bytes("transfer-encoding").is_some();
    let has_cl = headers.get_bytes("content-length").is_some();

    // RFC 9112 6.3 item 3: "If a message is received with both a Transfer-Encoding and a
    // Content-Length header field, the Transfer-Encoding overrides the Content-Length.
    // Such a message might indicate an attempt to perform request smuggling [...] and
    // ought to be handled as an error."
    if has_te && has_cl {
        return Err(bad("request has both Transfer-Encoding and Content-Length"));
    }

    if has_te {
        // RFC 9112 6.1: "A server or client that receives an HTTP/1.0 message containing
        // a Transfer-Encoding header field MUST treat the message as if the framing is
        // faulty".
        if version_minor == 0 {
            return Err(bad("Transfer-Encoding is not allowed in an HTTP/1.0 request"));
        }
        // RFC 9112 6.1: Transfer-Encoding = #transfer-coding
        // RFC 9110 10.1.4: transfer-coding = token *( OWS ";" OWS transfer-parameter )
        // RFC 9112 6.1: "A server that receives a request message with a transfer coding
        // it does not understand SHOULD respond with 501 (Not Implemented)."
        let mut chunked = 0;
        let mut chunked_last = false;
        for value in headers.get_all("transfer-encoding") {
            for element in value.split(|&b| b == b',') {
                let coding = element.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                if coding.is_empty() {
                    continue; // RFC 9110 5.6.1: empty list elements are ignored.
                }
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                if !chunked_last {
                    return Err(ProtocolError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        "only the chunked transfer coding is supported",
                    ));
                }
                chunked += 1;
            }
        }
        // RFC 9112 6.3 item 4: "If a Transfer-Encoding header field is present in a
        // request and the chunked transfer coding is not the final encoding, the message
        // body length cannot be determined reliably; the server MUST respond with the 400
        // (Bad Request) status code and then close the connection."
        // RFC 9112 7: "A sender MUST NOT apply the chunked coding more than once".
        if chunked != 1 || !chunked_last {
            return Err(bad("Transfer-Encoding must name chunked exactly once, last"));
        }
        return Ok(Framing::Chunked(Chunk::Size));
    }

    if has_cl {
        // RFC 9110 8.6: Content-Length = 1*DIGIT
        // RFC 9112 6.3 item 5: "If a message is received without Transfer-Encoding and
        // with an invalid Content-Length header field, then the message framing is invalid
        // [...], unless the field value can be successfully parsed as a comma-separated
        // list [...], all values in the list are valid, and all values in the list are the
        // same (in which case, the message is processed with that single value [...]). If
        // the unrecoverable error is in a request message, the server MUST respond with a
        // 400 (Bad Request) status code and then close the connection."
        //
        // We take the stricter road the RFC leaves open, as nginx does ("client sent
        // duplicate header line"): one field, one number. A list of equal values is what
        // a proxy that merged two fields would send, and two framings read two ways are
        // how a request is smuggled past one hop.
        let mut values = headers.get_all("content-length");
        let (Some(digits), None) = (values.next(), values.next()) else {
            return Err(bad("a request must give Content-Length once"));
        };
        let digits = digits.trim_ascii();
        if digits.contains(&b',') {
            return Err(bad("Content-Length must be one decimal number, not a list"));
        }
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("Content-Length must be a decimal number"));
        }
        // Too many digits for usize is still a valid number: a too large one.
        let n = digits
            .iter()
            .fold(0usize, |n, d| n.saturating_mul(10).saturating_add(usize::from(d - b'0')));
        // RFC 9112 6.3 item 6: "If a valid Content-Length header field is present without
        // Transfer-Encoding, its decimal value defines the expected message body length".
        // Refused before any of it is buffered.
        if n > caps.body {
            return Err(too_large());
        }
        return Ok(Framing::Length(n));
    }

    // RFC 9112 6.3 item 7: "If this is a request message and none of the above are true,
    // then the message body length is zero (no message body is present)."
    Ok(Framing::Length(0))
}

/// Moves body bytes from `input` into the pending request; `true` once the body is whole.
fn read_body(
    input: &mut Input,
    scan: &mut usize,
    caps: Caps,
    pending: &mut Pending,
) -> Result<bool, ProtocolError> {
    let body = &mut pending.request.body;
    loop {
        let avail = input.available();
        match &mut pending.framing {
            Framing::Length(remaining) => {
                let n = (*remaining).min(avail.len());
                body.extend_from_slice(&avail[..n]);
                input.consume(n);
                *remaining -= n;
                return Ok(*remaining == 0);
            }
            Framing::Chunked(chunk) => match *chunk {
                // RFC 9112 7.1:
                //   chunked-body   = *chunk
                //                    last-chunk
                //                    trailer-section
                //                    CRLF
                //   chunk          = chunk-size [ chunk-ext ] CRLF
                //                    chunk-data CRLF
                //   chunk-size     = 1*HEXDIG
                //   last-chunk     = 1*("0") [ chunk-ext ] CRLF
                // Chunk framing takes CRLF strictly: the bare-LF leniency of RFC 9112 2.2
                // is for the start line and fields only.
                Chunk::Size => {
                    let Some(lf) = find(avail, *scan, b'\n') else {
                        if avail.len() > MAX_CHUNK_LINE {
                            return Err(bad("chunk size line is too long"));
                        }
                        *scan = avail.len();
                        return Ok(false);
                    };
                    if lf > MAX_CHUNK_LINE {
                        return Err(bad("chunk size line is too long"));
                    }
                    let Some(line) = avail[..lf].strip_suffix(b"\r") else {
                        return Err(bad("chunk size line must end with CRLF"));
                    };
                    let size = parse_chunk_line(line)?;
                    // RFC 9112 7.1: "The chunked coding does not define any parameter
                    // that can be used to indicate the length of the body; [...] the
                    // recipient MUST be prepared to receive chunks of any size." We refuse
                    // a chunk that would take the body past the limit before it arrives.
                    if size > caps.body - body.len() {
                        return Err(too_large());
                    }
                    input.consume(lf + 1);
                    *scan = 0;
                    *chunk = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                }
                // chunk-data = 1*OCTET ; a sequence of chunk-size octets
                Chunk::Data(remaining) => {
                    let n = remaining.min(avail.len());
                    body.extend_from_slice(&avail[..n]);
                    input.consume(n);
                    if n < remaining {
                        *chunk = Chunk::Data(remaining - n);
                        return Ok(false);
                    }
                    *chunk = Chunk::DataEnd;
                }
                // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                Chunk::DataEnd => match avail {
                    [b'\r', b'\n', ..] => {
                        input.consume(2);
                        *chunk = Chunk::Size;
                    }
                    [] | [b'\r'] => return Ok(false),
                    _ => return Err(bad("chunk data must be followed by CRLF")),
                },
                // RFC 9112 7.1.2: trailer-section = *( field-line CRLF )
                // RFC 9112 7.1.3: "while (chunk-size > 0) {...} read trailer field ...
                // Content-Length := length; Remove "chunked" from Transfer-Encoding".
                // Trailer fields are checked for syntax and dropped: nothing here uses them.
                Chunk::Trailers => match avail {
                    [b'\r', b'\n', ..] => {
                        input.consume(2);
                        *scan = 0;
                        return Ok(true);
                    }
                    [b'\n', ..] => {
                        input.consume(1);
                        *scan = 0;
                        return Ok(true);
                    }
                    [] | [b'\r'] => return Ok(false),
                    _ => match find_blank_line(avail, *scan) {
                        Scan::More(resume) => {
                            if avail.len() > caps.head {
                                return Err(head_too_large());
                            }
                            *scan = resume;
                            return Ok(false);
                        }
                        Scan::End(end) => {
                            if end > caps.head {
                                return Err(head_too_large());
                            }
                            check_trailers(&avail[..end], caps)?;
                            input.consume(end);
                            *scan = 0;
                            return Ok(true);
                        }
                    },
                },
            },
        }
    }
}

/// Validates a trailer section (field lines and the final blank line).
fn check_trailers(section: &[u8], caps: Caps) -> Result<(), ProtocolError> {
    let mut fields = vec![httparse::EMPTY_HEADER; caps.headers];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(bad("malformed trailer section")),
        Err(httparse::Error::TooManyHeaders) => Err(ProtocolError::new(
            StatusCode::HEADER_FIELDS_TOO_LARGE,
            "request has more trailer fields than the server accepts",
        )),
        Err(_) => Err(bad("malformed trailer field")),
    }
}

/// Parses a chunk-size line without its CRLF; returns the size (saturated when it does not
/// fit, which the body limit then refuses).
fn parse_chunk_line(line: &[u8]) -> Result<usize, ProtocolError> {
    // chunk-size = 1*HEXDIG
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad("chunk size must be hexadecimal digits"));
    }
    let size = line[..digits].iter().fold(0usize, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        n.saturating_mul(16).saturating_add(usize::from(v))
    });

    // RFC 9112 7.1.1:
    //   chunk-ext      = *( BWS ";" BWS chunk-ext-name
    //                       [ BWS "=" BWS chunk-ext-val ] )
    //   chunk-ext-name = token
    //   chunk-ext-val  = token / quoted-string
    // "A recipient MUST ignore unrecognized chunk extensions": we recognise none, so the
    // extensions are only checked for syntax. Leniency, after h11: white space is also
    // accepted at the end of the line.
    let mut rest = &line[digits..];
    loop {
        rest = skip_bws(rest);
        let Some(after_semi) = rest.strip_prefix(b";") else {
            return if rest.is_empty() { Ok(size) } else { Err(bad("malformed chunk extension")) };
        };
        rest = skip_token(skip_bws(after_semi)).ok_or_else(|| bad("malformed chunk extension name"))?;
        let after_bws = skip_bws(rest);
        if let Some(after_eq) = after_bws.strip_prefix(b"=") {
            let value = skip_bws(after_eq);
            rest = if value.first() == Some(&b'"') { skip_quoted_string(value) } else { skip_token(value) }
                .ok_or_else(|| bad("malformed chunk extension value"))?;
        }
    }
}

/// RFC 9110 5.6.3: BWS = OWS; OWS = *( SP / HTAB )
fn skip_bws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// RFC 9110 5.6.2: token = 1*tchar
///   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
///           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
fn skip_token(s: &[u8]) -> Option<&[u8]> {
    let n = s.iter().take_while(|&&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)).count();
    (n > 0).then(|| &s[n..])
}

/// RFC 9110 5.6.4:
///   quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
///   qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
///   quoted-pair    = "\" ( HTAB / SP / VCHAR / obs-text )
fn skip_quoted_string(s: &[u8]) -> Option<&[u8]> {
    let mut i = 1; // past the opening DQUOTE
    loop {
        match *s.get(i)? {
            b'"' => return Some(&s[i + 1..]),
            b'\\' => match *s.get(i + 1)? {
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => i += 2,
                _ => return None,
            },
            b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
}

/// The first `byte` at or after `from`.
fn find(haystack: &[u8], from: usize, byte: u8) -> Option<usize> {
    haystack.get(from..)?.iter().position(|&b| b == byte).map(|i| from + i)
}

/// Looks for the blank line ending a head or trailer section: an LF followed by LF or
/// CRLF, searching from `from`. The section must not start with the blank line itself.
fn find_blank_line(buf: &[u8], from: usize) -> Scan {
    let mut at = from;
    while let Some(lf) = find(buf, at, b'\n') {
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Scan::End(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Scan::End(lf + 3),
            // Cannot tell yet: look at this LF again when more bytes are in.
            (None, _) | (Some(b'\r'), None) => return Scan::More(lf),
            _ => at = lf + 1,
        }
    }
    Scan::More(buf.len())
}

/// The length of the request-target in a (possibly partial) request line: the bytes
/// between the first SP and the next SP or the end.
fn target_len(line: &[u8]) -> usize {
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return 0;
    };
    let rest = &line[sp + 1..];
    rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())
}
