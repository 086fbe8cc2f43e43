//! A WebSocket client that writes its frames by hand (RFC 6455 5.2) on a plain `TcpStream`
//! after the upgrade, for the frames no well-behaved library sends: unmasked, with reserved
//! bits, bad UTF-8, oversized, fragmented control frames, floods. It reads the server's
//! frames whole and says how the server closed.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::http::{connect_with_receive_buffer, find, READ_TIMEOUT};

/// Opcodes (RFC 6455 5.2: "%x0 denotes a continuation frame ... %x1 a text frame ... %x2 a
/// binary frame ... %x8 a connection close ... %x9 a ping ... %xA a pong").
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// The mask every client frame of these tests carries, unless it is sent unmasked on
/// purpose.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame, as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    /// RSV1..RSV3 as the three low bits.
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
    pub masked: bool,
}

impl Frame {
    /// A final, masked frame: what a client sends.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame { fin: true, rsv: 0, opcode, payload: payload.into(), masked: true }
    }

    pub fn text(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(op::TEXT, payload)
    }

    /// A close frame with `code` and `reason` (raw bytes, so they may be invalid UTF-8).
    pub fn close(code: u16, reason: &[u8]) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        Frame::new(op::CLOSE, payload)
    }

    /// The same frame with FIN cleared: the first or a middle fragment.
    pub fn more(mut self) -> Frame {
        self.fin = false;
        self
    }

    pub fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }

    pub fn unmasked(mut self) -> Frame {
        self.masked = false;
        self
    }

    /// RFC 6455 5.2: FIN, RSV1-3, opcode; MASK and the 7-bit length, then 16 or 64 bits of
    /// extended length (126, 127); the masking key; the payload XORed with it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | ((self.rsv & 7) << 4) | (self.opcode & 0xF)];
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= 0xFFFF {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if self.masked {
            out.extend_from_slice(&MASK);
            out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        } else {
            out.extend_from_slice(&self.payload);
        }
        out
    }
}

/// How the server ended the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code (and reason), then the end of the stream.
    Code(u16, String),
    /// A close frame with no payload, then the end of the stream.
    NoCode,
    /// The stream ended (or was reset) with no close frame.
    Dropped,
}

/// An upgraded connection that sends and reads raw frames.
pub struct RawWs {
    stream: TcpStream,
    /// Bytes received and not yet taken as frames.
    buf: Vec<u8>,
    /// Every frame received so far, for failure messages.
    pub seen: Vec<Frame>,
}

impl RawWs {
    /// Upgrades `GET {path}` on 127.0.0.1:`port`; fails the test unless the answer is 101.
    pub fn connect(port: u16, path: &str) -> RawWs {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
        RawWs::upgrade(stream, port, path)
    }

    /// The same, on a socket whose receive buffer is asked to be `bytes` (the kernel doubles
    /// it, RFC 7323 window scaling aside): a subscriber that stops reading fills it soon.
    pub fn connect_with_receive_buffer(port: u16, path: &str, bytes: usize) -> RawWs {
        RawWs::upgrade(connect_with_receive_buffer(port, bytes), port, path)
    }

    fn upgrade(mut stream: TcpStream, port: u16, path: &str) -> RawWs {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut ws = RawWs { stream, buf: Vec::new(), seen: Vec::new() };
        let end = loop {
            if let Some(end) = find(&ws.buf, b"\r\n\r\n") {
                break end;
            }
            if !ws.fill().expect("reading the upgrade answer") {
                panic!("the server closed instead of answering the upgrade: {:?}", String::from_utf8_lossy(&ws.buf));
            }
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "the upgrade on {path} was refused:\n{head}");
        // RFC 6455 1.3: the accept value for the RFC's own sample key.
        assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "a wrong Sec-WebSocket-Accept:\n{head}");
        ws.buf.drain(..end + 4);
        ws
    }

    /// Writes `frames` back to back, in one write.
    pub fn send(&mut self, frames: &[Frame]) -> io::Result<()> {
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::to_bytes).collect();
        self.stream.write_all(&bytes)
    }

    /// The socket, for a second handle (a writer thread).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next frame from the server, `Ok(None)` at the end of the stream.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                self.seen.push(frame.clone());
                return Ok(Some(frame));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads until the server ends the connection, skipping its text frames and pongs, and
    /// says how it ended. A close frame must be the last thing on the stream.
    pub fn closed(&mut self) -> Closed {
        loop {
            let frame = match self.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Closed::Dropped,
                Err(e) if is_reset(&e) => return Closed::Dropped,
                Err(e) => panic!("no close from the server ({e}); frames so far: {:#?}", self.seen),
            };
            assert!(!frame.masked, "a server frame must not be masked (RFC 6455 5.1): {frame:?}");
            if frame.opcode != op::CLOSE {
                continue;
            }
            let closed = match frame.payload.len() {
                0 => Closed::NoCode,
                1 => panic!("a close frame with a one-byte payload (RFC 6455 5.5.1): {frame:?}"),
                _ => Closed::Code(
                    u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
                    String::from_utf8(frame.payload[2..].to_vec()).expect("the close reason is UTF-8"),
                ),
            };
            match self.next_frame() {
                Ok(None) => {}
                Err(e) if is_reset(&e) => {}
                Ok(Some(after)) => panic!("the server sent {after:?} after its close frame {frame:?}"),
                Err(e) => panic!("the server did not hang up after its close frame {frame:?}: {e}"),
            }
            return closed;
        }
    }

    /// Reads more bytes; `false` at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
}

/// One whole frame at the start of `buf`, and its length on the wire.
fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    let [first, second, ..] = *buf else { return None };
    let masked = second & 0x80 != 0;
    let (len, mut at) = match second & 0x7F {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let key = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let mut payload = buf.get(at..at + len)?.to_vec();
    if let Some(key) = mask {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
    }
    let frame = Frame { fin: first & 0x80 != 0, rsv: (first >> 4) & 7, opcode: first & 0xF, payload, masked };
    Some((frame, at + len))
}
