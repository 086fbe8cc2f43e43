//! The fuzz targets of c10k, as plain functions from bytes to nothing: each feeds its input
//! to one part of the sans-IO core and panics when a property the core promises fails.
//!
//! `fuzz_targets/*.rs` hand them to libFuzzer (`cargo fuzz run TARGET -s none`, see
//! fuzz/README.md); `crates/core/tests/fuzz_corpus.rs` in the main workspace includes this
//! very file and replays the committed corpus (`fuzz/corpus/TARGET/*`) through them, so CI
//! checks every seed and every crash found so far without cargo-fuzz.
//!
//! In every target the first byte of the input chooses how the rest is cut into reads (see
//! [`cut`]): a socket may deliver bytes in any pieces, and the core must decide the same
//! whatever they are.
//!
//! | target | what it feeds | what must hold |
//! |---|---|---|
//! | [`request_decoder`] | any bytes, as requests | the same events (requests and errors) in one read or in many; every limit kept |
//! | [`chunked_body`] | any bytes, as the body of a chunked POST | the above, and a body it accepts is what a plain RFC 9112 7.1 de-chunker makes of it |
//! | [`websocket_frames`] | any bytes, after a WebSocket upgrade | every server frame well-formed (RFC 6455 5.2), a close frame last, the machine never stuck |
//! | [`message_json`] | any bytes, as the JSON body of a native post | 201 only for an object with a string `body`, stored exactly; otherwise a 4xx with a JSON error |
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use c10k_core::chat::{App, Config, Now, Outcome};
use c10k_core::conn::{Action, Connection};
use c10k_core::http::{Event, ProtocolError, Request, RequestDecoder};
use c10k_core::limits::Limits;
use c10k_core::store::{MemoryStore, MessageId, RoomId, Store};

/// Limits well below the defaults, so that short inputs reach every bound (431, 414, 413).
fn small_limits() -> Limits {
    Limits {
        max_head_bytes: 2048,
        max_field_bytes: 512,
        max_headers: 16,
        max_target_bytes: 256,
        max_body_bytes: 4096,
        ..Limits::default()
    }
}

/// Cuts `input` into pieces whose lengths come from `seed` (a small xorshift): 0 gives one
/// piece, other seeds pieces of 1 to 64 bytes. Reads of one byte are where resumable scans
/// break; reads of a few dozen, where a boundary falls inside a CRLF or a frame header.
pub fn cut(seed: u8, input: &[u8]) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![input];
    }
    let mut state = u32::from(seed).wrapping_mul(0x9E37_79B9) | 1;
    let mut pieces = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = if seed & 1 == 1 { 1 + (state % 4) as usize } else { 1 + (state % 64) as usize };
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// What a decoder made of a byte stream: each request or the error that ended it, and
/// whether the end of the stream cut a request short.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    outcomes: Vec<Result<Request, ProtocolError>>,
    continues: usize,
    cut_short: Option<ProtocolError>,
}

fn decode(limits: &Limits, pieces: &[&[u8]]) -> Decoded {
    let mut decoder = RequestDecoder::new(limits);
    let mut decoded = Decoded { outcomes: Vec::new(), continues: 0, cut_short: None };
    for piece in pieces {
        decoder.receive(piece);
        loop {
            match decoder.next_event() {
                Ok(Event::Request(request)) => decoded.outcomes.push(Ok(request)),
                Ok(Event::Continue) => decoded.continues += 1,
                Ok(Event::NeedData) => break,
                Err(error) => {
                    // Sticky: asked again, the decoder says the same.
                    assert_eq!(decoder.next_event(), Err(error.clone()), "a decoder error must be sticky");
                    decoded.outcomes.push(Err(error));
                    return decoded;
                }
            }
        }
    }
    decoded.cut_short = decoder.receive_eof().err();
    decoded
}

/// Checks what a decoder promises about one stream, read whole and read in pieces.
fn check_decoder(limits: &Limits, seed: u8, input: &[u8]) -> Decoded {
    let mut whole = decode(limits, &[input]);
    let mut pieces = decode(limits, &cut(seed, input));
    assert!(pieces.continues <= pieces.outcomes.len() + 1, "more than one 100 Continue per request: {pieces:?}");
    // `100 Continue` is owed only while a body is incomplete, so how many are given depends
    // on the reads; nothing else may.
    whole.continues = 0;
    pieces.continues = 0;
    assert_eq!(whole, pieces, "the same bytes read in other pieces decode differently");
    let piece_requests = pieces;
    for request in piece_requests.outcomes.iter().flatten() {
        assert!(request.body.len() <= limits.max_body_bytes, "a body over the limit: {}", request.body.len());
        assert!(request.target.len() <= limits.max_target_bytes, "a target over the limit: {}", request.target);
        assert!(request.headers.len() <= limits.max_headers, "more header fields than the limit");
        for (name, value) in request.headers.iter() {
            assert!(name.len() + value.len() <= limits.max_field_bytes, "a header field over the limit: {name}");
        }
    }
    piece_requests
}

/// Any bytes as a stream of HTTP/1.1 requests (RFC 9112).
pub fn request_decoder(data: &[u8]) {
    let Some((&seed, input)) = data.split_first() else { return };
    check_decoder(&small_limits(), seed, input);
}

/// The request head [`chunked_body`] puts before its input.
pub const CHUNKED_HEAD: &[u8] = b"POST /api/rooms/fuzz/messages HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Any bytes as the body of a chunked request (RFC 9112 7.1).
pub fn chunked_body(data: &[u8]) {
    let Some((&seed, body)) = data.split_first() else { return };
    let input = [CHUNKED_HEAD, body].concat();
    let limits = small_limits();
    let decoded = check_decoder(&limits, seed, &input);
    if let Some(Ok(request)) = decoded.outcomes.first() {
        let plain = dechunk(body).unwrap_or_else(|| {
            panic!("the decoder accepted a chunked body a plain de-chunker refuses: {:?}", String::from_utf8_lossy(body))
        });
        assert_eq!(request.body, plain, "the decoder de-chunked differently from RFC 9112 7.1.3");
    }
}

/// RFC 9112 7.1.3's decoding of chunked, as plainly as it can be written (and more lenient
/// than the decoder: it checks no limit and takes any chunk extension and trailer line):
///
/// ```text
/// read chunk-size, chunk-ext (if any), and CRLF
/// while (chunk-size > 0) {
///    read chunk-data and CRLF
///    append chunk-data to content
///    read chunk-size, chunk-ext (if any), and CRLF
/// }
/// read trailer field
/// while (trailer field is not empty) { ... read trailer field }
/// ```
fn dechunk(mut input: &[u8]) -> Option<Vec<u8>> {
    fn line<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
        let lf = input.iter().position(|&b| b == b'\n')?;
        let line = &input[..lf];
        *input = &input[lf + 1..];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
    let mut content = Vec::new();
    loop {
        let size_line = line(&mut input)?;
        // chunk-size = 1*HEXDIG; last-chunk = 1*("0"): any number of leading zeros.
        let digits = size_line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return None;
        }
        let significant = std::str::from_utf8(&size_line[..digits]).ok()?.trim_start_matches('0');
        let size = if significant.is_empty() { 0 } else { usize::from_str_radix(significant, 16).ok()? };
        if size == 0 {
            break;
        }
        content.extend_from_slice(input.get(..size)?);
        input = input.get(size..)?.strip_prefix(b"\r\n")?;
    }
    while !line(&mut input)?.is_empty() {}
    Some(content)
}

/// The upgrade request [`websocket_frames`] sends first (the sample key of RFC 6455 1.3).
pub const UPGRADE: &[u8] = b"GET /api/rooms/fuzz/ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A connection machine and what a driver that runs store calls inline and whose socket
/// takes every byte would see of it.
struct Driven {
    connection: Connection,
    store: MemoryStore,
    now: Now,
    sent: Vec<u8>,
    closed: bool,
}

impl Driven {
    fn new() -> Driven {
        let app = Arc::new(App::new(Config::with_seed([7; 32])));
        let now = Now { instant: Instant::now(), unix_ms: 1_700_000_000_000 };
        let connection = Connection::new(app, Waker::noop().clone(), now);
        Driven { connection, store: MemoryStore::default(), now, sent: Vec::new(), closed: false }
    }

    /// Steps 1 and 2 of the driver's order (conn.rs), until there is nothing left to do;
    /// a wake after each store call, since the post it stored wakes this very socket.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            while let Some(action) = self.connection.poll_action() {
                busy = true;
                match action {
                    Action::Store(call) => {
                        let done = call.run(&self.store);
                        self.connection.handle_store_done(done, self.now);
                        self.connection.handle_wake(self.now);
                    }
                    Action::ShutdownWrite => {}
                    Action::Close => {
                        self.closed = true;
                        return;
                    }
                }
            }
            let out = self.connection.transmit(self.now.instant);
            if !out.is_empty() {
                busy = true;
                self.sent.extend_from_slice(out);
                let n = out.len();
                self.connection.consume(n);
            }
            if !busy {
                return;
            }
        }
        panic!("the connection machine never settles: {:?}", self.connection);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        if !self.closed {
            self.connection.handle_bytes(bytes, self.now);
            self.settle();
        }
    }

    fn eof(&mut self) {
        if !self.closed {
            self.connection.handle_eof(self.now);
            self.settle();
        }
    }

    /// Lets time pass by `secs`, as a driver would at the machine's deadline.
    fn wait(&mut self, secs: u64) {
        self.now = Now {
            instant: self.now.instant + Duration::from_secs(secs),
            unix_ms: self.now.unix_ms + secs * 1000,
        };
        if !self.closed {
            self.connection.handle_timeout(self.now);
            self.settle();
        }
    }
}

/// One server frame (RFC 6455 5.2) at the start of `bytes`, and its length on the wire;
/// `None` when the bytes end inside it.
fn server_frame(bytes: &[u8]) -> Option<(u8, bool, &[u8], usize)> {
    let [first, second, ..] = *bytes else { return None };
    assert_eq!(first & 0x70, 0, "a server frame with reserved bits set");
    assert_eq!(second & 0x80, 0, "RFC 6455 5.1: a server MUST NOT mask any frames");
    let (len, at): (usize, usize) = match second & 0x7F {
        126 => (u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?, 10),
        n => (usize::from(n), 2),
    };
    let payload = bytes.get(at..at.checked_add(len)?)?;
    Some((first & 0x0F, first & 0x80 != 0, payload, at + len))
}

/// Any bytes from a client, after a WebSocket upgrade.
pub fn websocket_frames(data: &[u8]) {
    let Some((&seed, input)) = data.split_first() else { return };
    let mut driven = Driven::new();
    driven.bytes(UPGRADE);
    let head_end = driven.sent.windows(4).position(|w| w == b"\r\n\r\n").expect("the upgrade is answered") + 4;
    assert!(driven.sent.starts_with(b"HTTP/1.1 101 "), "the upgrade is accepted: {:?}", String::from_utf8_lossy(&driven.sent));
    for piece in cut(seed, input) {
        driven.bytes(piece);
    }
    // Whatever the bytes were, the client hanging up ends the connection within the close
    // grace, and never a panic on the way.
    driven.eof();
    driven.wait(60);
    assert!(driven.closed, "the connection is not closed after the client hung up and the grace passed");

    let mut frames = &driven.sent[head_end..];
    let mut closed = false;
    while !frames.is_empty() {
        let (opcode, fin, payload, len) =
            server_frame(frames).unwrap_or_else(|| panic!("the server's bytes end inside a frame: {frames:?}"));
        assert!(!closed, "a frame after the server's close frame");
        assert!(fin, "the server fragments nothing");
        match opcode {
            0x1 => {
                let text = std::str::from_utf8(payload).expect("a text frame is UTF-8 (RFC 6455 5.6)");
                let _: serde_json::Value = serde_json::from_str(text).expect("every text frame is JSON");
            }
            0x8 => {
                closed = true;
                assert_ne!(payload.len(), 1, "a close payload has a code (RFC 6455 5.5.1)");
                assert!(payload.len() <= 125, "a control frame of 125 bytes at most (RFC 6455 5.5)");
                if payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    // RFC 6455 7.4.1 defines 1000-1003 and 1007-1011; IANA's WebSocket Close
                    // Code Number registry adds 1012 (service restart), 1013 (try again
                    // later) and 1014 (bad gateway); the server echoes a client's code
                    // (RFC 6455 5.5.1), so a client that sends 1012 hears 1012 back.
                    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                    assert!(sendable, "close code {code} is not one an endpoint may send (RFC 6455 7.4, IANA registry)");
                    std::str::from_utf8(&payload[2..]).expect("a close reason is UTF-8");
                }
            }
            0xA => assert!(payload.len() <= 125, "a pong of 125 bytes at most"),
            other => panic!("the server sent opcode {other:#x}"),
        }
        frames = &frames[len..];
    }
}

/// The request head [`message_json`] puts before its input (with its `Content-Length`).
pub fn post_head(len: usize) -> Vec<u8> {
    format!(
        "POST /api/rooms/fuzz/messages HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

/// Any bytes as the JSON body of `POST /api/rooms/{room}/messages`.
pub fn message_json(data: &[u8]) {
    let app = App::new(Config::with_seed([7; 32]));
    let store = MemoryStore::default();
    let now = Now { instant: Instant::now(), unix_ms: 1_700_000_000_000 };
    let mut decoder = RequestDecoder::new(app.limits());
    decoder.receive(&[post_head(data.len()), data.to_vec()].concat());
    let request = match decoder.next_event() {
        Ok(Event::Request(request)) => request,
        other => panic!("the post's head is well-formed: {other:?}"),
    };
    let response = match app.handle_request(request, now) {
        Outcome::Reply(response) => response,
        Outcome::Store(call) => app.finish_store(call.run(&store)),
        other => panic!("a post is answered or stored: {other:?}"),
    };
    let status = response.status.0;
    let answer: serde_json::Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("the {status} answer is not JSON ({e}): {:?}", String::from_utf8_lossy(&response.body)));
    let stored = store.after(&RoomId::new("fuzz").expect("a room name"), MessageId(0), usize::MAX).expect("the memory store answers");
    if status != 201 {
        assert!((400..500).contains(&status), "a post is stored (201) or refused with 4xx, not {status}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "a refusal says why: {answer}");
        assert!(stored.is_empty(), "a refused post stored {stored:?}");
        return;
    }
    // docs/protocol.md: the body is a JSON object `{"body", "from"}`, all of it valid JSON.
    let posted: serde_json::Value = serde_json::from_slice(data).expect("a stored post is valid JSON");
    let body = posted.get("body").and_then(|b| b.as_str());
    assert!(posted.is_object() && body.is_some(), "stored a post that is not an object with a string body: {posted}");
    assert_eq!(stored.len(), 1, "one post, one message");
    // docs/protocol.md, "Message text": no store is handed a NUL (PostgreSQL cannot keep one).
    assert!(!stored[0].body.contains('\0') && !stored[0].from.contains('\0'), "stored a NUL: {:?}", stored[0]);
    assert_eq!(Some(stored[0].body.as_str()), body, "the body is stored exactly");
    assert_eq!(answer["body"].as_str(), body, "the answer carries the stored body: {answer}");
    let from = posted.get("from").and_then(|f| f.as_str()).unwrap_or("");
    assert_eq!(stored[0].from, from, "the sender is stored exactly");
}
