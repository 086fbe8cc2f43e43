//! A keep-alive HTTP/1.1 connection: write a request, read a `Content-Length` framed
//! response (parsed with httparse), or just a head when a stream follows.
//!
//! The read buffer lives in the connection, and every read appends to it, so the read
//! methods are cancel-safe: a future dropped half-way loses no bytes.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{connect, ClientError};

/// Headers we look at in a response; c10k sends fewer than ten.
const MAX_HEADERS: usize = 32;
/// A response body larger than this is refused (the largest c10k answer is a history of
/// 200 messages of 4 KiB).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// The parts of a response head the scenarios need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    /// The server will close after this response (`Connection: close`).
    pub close: bool,
    pub chunked: bool,
}

/// A complete response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub close: bool,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects (see [`connect`]).
    pub(crate) async fn open(addr: SocketAddr, source: Option<IpAddr>) -> Result<Conn, ClientError> {
        Ok(Conn { stream: connect(addr, source).await?, buf: Vec::with_capacity(4096) })
    }

    /// Writes `bytes` in full. Not cancel-safe: a dropped write leaves the connection
    /// unusable, so drop the connection with it.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await.map_err(ClientError::Io)
    }

    /// Writes what the socket takes of `bytes` now (at least one byte); cancel-safe.
    pub(crate) async fn write_some(&mut self, bytes: &[u8]) -> Result<usize, ClientError> {
        match self.stream.write(bytes).await {
            Ok(0) => Err(ClientError::Closed),
            Ok(n) => Ok(n),
            Err(e) => Err(ClientError::Io(e)),
        }
    }

    /// Sends a request and reads its response.
    pub(crate) async fn request(&mut self, bytes: &[u8]) -> Result<Reply, ClientError> {
        self.send(bytes).await?;
        self.reply().await
    }

    /// Reads one `Content-Length` framed response. Responses already read (pipelined
    /// answers that came in one read) are returned without reading again.
    pub(crate) async fn reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some(reply) = take_reply(&mut self.buf)? {
                return Ok(reply);
            }
            self.fill().await?;
        }
    }

    /// Reads a response head only; what follows stays in [`Conn::buffer`].
    pub(crate) async fn head(&mut self) -> Result<Head, ClientError> {
        loop {
            if let Some((head, head_len)) = parse_head(&self.buf)? {
                self.buf.drain(..head_len);
                return Ok(head);
            }
            self.fill().await?;
        }
    }

    /// Reads whatever the server sends next into the buffer; the server closing is
    /// [`ClientError::Closed`].
    pub(crate) async fn fill(&mut self) -> Result<(), ClientError> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8192);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(ClientError::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(ClientError::Io(e)),
        }
    }

    /// Bytes read and not yet consumed.
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > 64 * 1024 {
                return Err(ClientError::Protocol("response head over 64 KiB".into()));
            }
            return Ok(None);
        }
        Err(e) => return Err(ClientError::Protocol(format!("bad response head: {e}"))),
    };
    let mut head = Head { status: response.code.unwrap_or(0), content_length: None, close: false, chunked: false };
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse().ok());
            head.content_length = Some(value.ok_or_else(|| ClientError::Protocol("bad Content-Length".into()))?);
        } else if header.name.eq_ignore_ascii_case("connection") {
            head.close |= header.value.eq_ignore_ascii_case(b"close");
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked |= header.value.to_ascii_lowercase().ends_with(b"chunked");
        }
    }
    Ok(Some((head, head_len)))
}

/// Takes the first complete `Content-Length` framed response off the front of `buf`,
/// leaving whatever follows it (the start of the next response); `None` while the
/// response is still incomplete, with `buf` untouched.
pub(crate) fn take_reply(buf: &mut Vec<u8>) -> Result<Option<Reply>, ClientError> {
    let Some((head, head_len)) = parse_head(buf)? else { return Ok(None) };
    if head.chunked {
        return Err(ClientError::Protocol("chunked response (unsupported)".into()));
    }
    let length = match (head.content_length, head.status) {
        (Some(n), _) => n,
        (None, 204 | 304) | (None, 100..=199) => 0,
        (None, _) => return Err(ClientError::Protocol("response without Content-Length".into())),
    };
    if length > MAX_BODY {
        return Err(ClientError::Protocol(format!("response body of {length} bytes")));
    }
    if buf.len() < head_len + length {
        return Ok(None);
    }
    let body = buf[head_len..head_len + length].to_vec();
    buf.drain(..head_len + length);
    Ok(Some(Reply { status: head.status, body, close: head.close }))
}

/// `GET path` with the given `Host`.
pub(crate) fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

/// `POST path` with a JSON body.
pub(crate) fn post_json(path: &str, host: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_complete_head() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
        let (head, n) = parse_head(bytes).unwrap().unwrap();
        assert_eq!((head.status, head.content_length, head.close, head.chunked), (200, Some(13), true, false));
        assert_eq!(&bytes[n..], b"Hello, World!");
    }

    #[test]
    fn waits_for_the_rest_of_a_head() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Len").unwrap().is_none());
    }

    const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

    #[test]
    fn a_response_split_across_reads_is_taken_once_whole() {
        // Every split point: head cut short, body cut short, nothing of the body yet.
        for cut in 1..HELLO.len() {
            let mut buf = HELLO[..cut].to_vec();
            assert!(take_reply(&mut buf).unwrap().is_none(), "cut at {cut}");
            assert_eq!(buf, &HELLO[..cut], "an incomplete response leaves the buffer as it was");
            buf.extend_from_slice(&HELLO[cut..]);
            let reply = take_reply(&mut buf).unwrap().expect("complete now");
            assert_eq!((reply.status, reply.body.as_slice(), reply.close), (200, &b"Hello, World!"[..], false));
            assert!(buf.is_empty(), "cut at {cut}: {buf:?}");
        }
    }

    #[test]
    fn several_responses_in_one_read_are_taken_one_by_one() {
        let mut buf = Vec::new();
        for _ in 0..16 {
            buf.extend_from_slice(HELLO);
        }
        buf.extend_from_slice(&HELLO[..20]); // the start of a 17th
        for i in 0..16 {
            let reply = take_reply(&mut buf).unwrap().unwrap_or_else(|| panic!("response {i} is all there"));
            assert_eq!((reply.status, reply.body.as_slice()), (200, &b"Hello, World!"[..]), "response {i}");
        }
        assert!(take_reply(&mut buf).unwrap().is_none());
        assert_eq!(buf, &HELLO[..20], "the 17th's start is kept for the next read");
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(ClientError::Protocol(_))));
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), Err(ClientError::Protocol(_))));
    }
}
