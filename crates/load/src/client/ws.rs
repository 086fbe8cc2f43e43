//! The client side of a WebSocket (RFC 6455), as a subscriber needs it: the opening
//! handshake, then server frames parsed in place in the connection's read buffer.
//!
//! A broadcast run pushes every delivery through here, on one core shared by thousands of
//! subscribers, so reading a message costs one pass over its bytes: `read_buf` appends
//! into spare capacity (nothing is zero-filled), a whole text frame is handed out as a
//! `&str` borrowed from the buffer (nothing is copied or allocated), and only a message
//! split over several frames is assembled in a buffer of its own, reused. Every frame is
//! still checked as the RFC asks of a client: no reserved bits, no mask from the server,
//! control frames whole and short, continuations only inside a fragmented message, text
//! valid UTF-8.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};

use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::http::Conn;
use super::ClientError;

/// Headers we look at in the handshake answer.
const MAX_HEADERS: usize = 32;
/// A message larger than this is refused (the largest c10k frame is a message of 4,096
/// characters, under 30 KiB as JSON).
const MAX_MESSAGE: usize = 1024 * 1024;

// RFC 6455 §5.2: `%x0` continuation, `%x1` text, `%x2` binary, `%x8` close, `%x9` ping,
// `%xA` pong; the others are reserved.
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The fixed part of one frame, parsed from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    fin: bool,
    opcode: u8,
    /// Bytes of the head (2 to 10: a server frame has no masking key).
    head_len: usize,
    payload_len: usize,
}

/// Parses a frame head at the start of `buf`; `None` until enough bytes are there.
///
/// RFC 6455 §5.2:
/// ```text
/// FIN (1) RSV1 RSV2 RSV3 (1 each) opcode (4) MASK (1) Payload len (7)
/// Extended payload length (16/64), if payload len == 126/127
/// Masking-key (0 or 4 bytes)
/// ```
/// "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated" (we negotiate none);
/// "a client MUST close a connection if it detects a masked frame" (§5.1); "the most
/// significant bit MUST be 0" in a 64-bit length; "all control frames MUST have a payload
/// length of 125 bytes or less and MUST NOT be fragmented" (§5.5).
fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, ClientError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
    if b0 & 0x70 != 0 {
        return Err(protocol("a frame with reserved bits set (no extension was negotiated)"));
    }
    if b1 & 0x80 != 0 {
        return Err(protocol("a masked frame from the server"));
    }
    let (head_len, payload_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(protocol("a 64-bit frame length with its top bit set"));
                }
                (10, len)
            }
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    if opcode & 0x8 != 0 && (!fin || payload_len > 125) {
        return Err(protocol("a control frame fragmented or longer than 125 bytes"));
    }
    if payload_len > MAX_MESSAGE as u64 {
        return Err(protocol(&format!("a frame of {payload_len} bytes")));
    }
    Ok(Some(FrameHead { fin, opcode, head_len, payload_len: payload_len as usize }))
}

fn protocol(what: &str) -> ClientError {
    ClientError::Protocol(format!("WebSocket: {what}"))
}

/// A message that is ready, located without borrowing the connection.
enum Ready {
    /// A whole text frame: these bytes of the read buffer.
    Frame(std::ops::Range<usize>),
    /// A text message assembled from fragments, in `WsConn::assembled`.
    Assembled,
}

/// An open WebSocket, client side, reading text messages.
#[derive(Debug)]
pub(crate) struct WsConn {
    conn: Conn,
    /// Where unparsed bytes start in the read buffer; the bytes before it are dropped
    /// only before the next read, so a message handed out stays valid until then.
    start: usize,
    /// The opcode of the fragmented message in progress (text or binary), if any.
    fragmented: Option<u8>,
    /// The fragments of a text message so far.
    assembled: Vec<u8>,
    /// Control frames to send (pongs), written before anything more is read.
    out: Vec<u8>,
}

impl WsConn {
    /// Connects to `addr` (from `source` if given) and opens a WebSocket on `path`. A
    /// refusal is [`ClientError::Status`]; an answer that is not a valid acceptance is a
    /// protocol error.
    pub(crate) async fn open(addr: SocketAddr, source: Option<IpAddr>, path: &str) -> Result<WsConn, ClientError> {
        let mut conn = Conn::open(addr, source).await?;
        let key = generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        conn.send(request.as_bytes()).await?;
        let expected = derive_accept_key(key.as_bytes());
        loop {
            if let Some(head_len) = check_acceptance(conn.buffer(), &expected)? {
                return Ok(WsConn { conn, start: head_len, fragmented: None, assembled: Vec::new(), out: Vec::new() });
            }
            conn.fill().await?;
        }
    }

    /// The next text message, borrowed until the next call. Pings are answered, pongs and
    /// binary messages skipped; a close frame ends the socket with an error saying why.
    /// Cancel-safe: everything read stays in the buffer, and a pong half written goes on
    /// from where it stopped.
    pub(crate) async fn next_text(&mut self) -> Result<&str, ClientError> {
        loop {
            while !self.out.is_empty() {
                let n = self.conn.write_some(&self.out).await?;
                self.out.drain(..n);
            }
            if let Some(ready) = self.parse()? {
                let text = match ready {
                    Ready::Frame(range) => &self.conn.buffer()[range],
                    Ready::Assembled => &self.assembled[..],
                };
                return std::str::from_utf8(text).map_err(|_| protocol("a text message that is not UTF-8"));
            }
            if !self.out.is_empty() {
                continue; // a ping came: answer it before waiting for more
            }
            self.conn.buffer().drain(..self.start);
            self.start = 0;
            self.conn.fill().await?;
        }
    }

    /// Consumes the buffered frames up to the first text message that is complete.
    fn parse(&mut self) -> Result<Option<Ready>, ClientError> {
        loop {
            let buf = &self.conn.buffer()[self.start..];
            let Some(head) = parse_head(buf)? else { return Ok(None) };
            let total = head.head_len + head.payload_len;
            if buf.len() < total {
                return Ok(None);
            }
            let payload = self.start + head.head_len..self.start + total;
            self.start += total;
            match (head.opcode, self.fragmented) {
                (TEXT | BINARY, Some(_)) => return Err(protocol("a new message inside a fragmented one")),
                (TEXT, None) if head.fin => return Ok(Some(Ready::Frame(payload))),
                (TEXT | BINARY, None) => {
                    if !head.fin {
                        self.fragmented = Some(head.opcode);
                        self.assembled.clear();
                        self.assembled.extend_from_slice(&self.conn.buffer()[payload]);
                    }
                }
                (CONTINUATION, None) => return Err(protocol("a continuation frame outside a message")),
                (CONTINUATION, Some(opcode)) => {
                    if opcode == TEXT {
                        if self.assembled.len() + head.payload_len > MAX_MESSAGE {
                            return Err(protocol("a fragmented message over 1 MiB"));
                        }
                        self.assembled.extend_from_slice(&self.conn.buffer()[payload]);
                    }
                    if head.fin {
                        self.fragmented = None;
                        if opcode == TEXT {
                            return Ok(Some(Ready::Assembled));
                        }
                    }
                }
                (PING, _) => {
                    let payload = self.conn.buffer()[payload].to_vec();
                    push_frame(&mut self.out, PONG, &payload);
                }
                (PONG, _) => {}
                (CLOSE, _) => {
                    let body = &self.conn.buffer()[payload];
                    let why = match body {
                        [a, b, reason @ ..] => {
                            format!("{} {}", u16::from_be_bytes([*a, *b]), String::from_utf8_lossy(reason))
                        }
                        _ => String::new(),
                    };
                    return Err(ClientError::Protocol(format!("WebSocket closed by server {why}")));
                }
                (opcode, _) => return Err(protocol(&format!("reserved opcode {opcode:#x}"))),
            }
        }
    }
}

/// Checks the handshake answer at the start of `buf` (RFC 6455 §4.1: status 101,
/// `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Accept` derived from our
/// key). Returns the head's length once it is complete.
fn check_acceptance(buf: &[u8], expected_accept: &str) -> Result<Option<usize>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => {
            return Err(ClientError::Protocol("handshake answer head over 64 KiB".into()))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Protocol(format!("bad handshake answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(ClientError::Status(status));
    }
    let header = |name: &str| response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    let connection = header("connection")
        .is_some_and(|v| v.split(|b| *b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
    if !upgrade || !connection {
        return Err(protocol("a 101 answer without Upgrade: websocket and Connection: Upgrade"));
    }
    if header("sec-websocket-accept") != Some(expected_accept.as_bytes()) {
        return Err(protocol("a 101 answer whose Sec-WebSocket-Accept does not match our key"));
    }
    Ok(Some(head_len))
}

/// Appends a client frame (FIN, masked, as §5.3 requires of a client) of `opcode` with
/// `payload` (control frames only: at most 125 bytes).
fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= 125);
    // The key must be unpredictable to the network in between (§10.3); on loopback any
    // fresh random value will do, and RandomState draws one per process and per call.
    let mask = (RandomState::new().build_hasher().finish() as u32).to_be_bytes();
    out.push(0x80 | opcode);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fin: bool, opcode: u8, head_len: usize, payload_len: usize) -> Option<FrameHead> {
        Some(FrameHead { fin, opcode, head_len, payload_len })
    }

    #[test]
    fn frame_heads_byte_by_byte() {
        let mut long = vec![0x81, 127];
        long.extend_from_slice(&70_000u64.to_be_bytes());
        let cases: &[(&[u8], Option<FrameHead>)] = &[
            (b"", None),
            (b"\x81", None),
            (b"\x81\x05hello", head(true, TEXT, 2, 5)),
            (b"\x01\x03hel", head(false, TEXT, 2, 3)),
            (b"\x80\x02lo", head(true, CONTINUATION, 2, 2)),
            (b"\x81\x7e\x01", None),
            (b"\x81\x7e\x01\x00", head(true, TEXT, 4, 256)),
            (b"\x81\x7f\x00\x00\x00\x00", None),
            (&long, head(true, TEXT, 10, 70_000)),
            (b"\x89\x00", head(true, PING, 2, 0)),
            (b"\x88\x02\x03\xe8", head(true, CLOSE, 2, 2)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse_head(bytes).ok(), Some(*expected), "{bytes:x?}");
        }
    }

    #[test]
    fn refuses_what_a_client_must_refuse() {
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        let cases: &[&[u8]] = &[
            b"\xc1\x00",         // RSV1 set
            b"\x81\x85abcd",     // masked by the server
            b"\x09\x00",         // a fragmented ping
            b"\x89\x7e\x00\x7e", // a ping of 126 bytes
            &huge,               // the top bit of a 64-bit length
            b"\x81\x7f\x00\x00\x00\x00\x00\x20\x00\x00", // 2 MiB: over the limit
        ];
        for bytes in cases {
            assert!(matches!(parse_head(bytes), Err(ClientError::Protocol(_))), "{bytes:x?}");
        }
    }

    #[test]
    fn pongs_are_masked_and_carry_the_ping_payload() {
        let mut out = Vec::new();
        push_frame(&mut out, PONG, b"are you there");
        assert_eq!(out[0], 0x8A);
        assert_eq!(out[1], 0x80 | 13);
        let mask = &out[2..6];
        let unmasked: Vec<u8> = out[6..].iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m).collect();
        assert_eq!(unmasked, b"are you there");
    }

    /// A scripted server: the handshake answer and frames in pieces, a ping inside a
    /// fragmented message, a binary message to skip, and a close with a reason.
    #[tokio::test]
    async fn reads_messages_whole_and_in_fragments_answers_pings_and_reports_the_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                request.push(socket.read_u8().await.unwrap());
            }
            let request = String::from_utf8(request).unwrap();
            assert!(request.starts_with("GET /ws?after=3 HTTP/1.1\r\n"), "{request}");
            let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
            let mut first = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            first.extend_from_slice(b"\x81\x03one");
            first.extend_from_slice(b"\x01\x02tw\x89\x01p\x80\x01o"); // "two", a ping inside
            first.extend_from_slice(b"\x82\x01\x00"); // binary: skipped
            first.extend_from_slice(b"\x81\x05th"); // "three", in two writes
            socket.write_all(&first).await.unwrap();
            // The pong comes before the rest is sent: the client answered while waiting.
            let mut pong = [0u8; 7];
            socket.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong[..2], b"\x8a\x81", "a masked pong of one byte");
            assert_eq!(pong[6] ^ pong[2], b'p', "the ping's payload, unmasked");
            socket.write_all(b"ree\x88\x0a\x03\xf0too slow").await.unwrap();
        });
        let mut ws = WsConn::open(addr, None, "/ws?after=3").await.unwrap();
        assert_eq!(ws.next_text().await.unwrap(), "one");
        assert_eq!(ws.next_text().await.unwrap(), "two");
        assert_eq!(ws.next_text().await.unwrap(), "three");
        match ws.next_text().await {
            Err(ClientError::Protocol(why)) => assert_eq!(why, "WebSocket closed by server 1008 too slow"),
            other => panic!("expected the close, got {other:?}"),
        }
        server.await.unwrap();
    }

    #[test]
    fn the_acceptance_must_match_the_key() {
        // The example of RFC 6455 §1.3.
        let accept = derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        assert_eq!(check_acceptance(good, &accept).unwrap(), Some(good.len() - 2));
        assert_eq!(check_acceptance(&good[..40], &accept).unwrap(), None);
        let wrong_key = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
                          Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        assert!(matches!(check_acceptance(wrong_key, &accept), Err(ClientError::Protocol(_))));
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(check_acceptance(refused, &accept), Err(ClientError::Status(404))));
    }
}
