//! A deliberately tiny HTTP/1.1 client over a plain `TcpStream`: it sends exactly the bytes
//! a test asks for (so malformed requests can be sent too) and reads one response at a
//! time by `Content-Length`, keeping what follows for the next read (pipelining).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// How long any read waits for the server before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One connection to the server.
pub struct Conn {
    stream: TcpStream,
    /// Bytes received but not yet consumed by a read_* call.
    buf: Vec<u8>,
    addr: SocketAddr,
}

/// A socket to 127.0.0.1:`port` whose receive buffer is asked to be `bytes` before it
/// connects (so the window it offers is small from the start; Linux doubles the number).
pub fn connect_with_receive_buffer(port: u16, bytes: usize) -> TcpStream {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket.connect(&addr.into()).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    socket.into()
}

impl Conn {
    /// Connects to the server on 127.0.0.1:`port`.
    pub fn open(port: u16) -> Conn {
        Conn::open_to(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Connects to the server at `addr` (a node in a network namespace of the test's).
    pub fn open_to(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Conn::ready(stream, addr)
    }

    /// Connects to the server on 127.0.0.1:`port` from the loopback address `source`
    /// (127.0.0.2, ...): another client, as far as the server can tell.
    pub fn open_from(port: u16, source: Ipv4Addr) -> Conn {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
        socket.bind(&SocketAddr::from((source, 0)).into()).unwrap_or_else(|e| panic!("cannot bind to {source}: {e}"));
        socket.connect(&addr.into()).unwrap_or_else(|e| panic!("cannot connect to {addr} from {source}: {e}"));
        Conn::ready(socket.into(), addr)
    }

    /// Connects to 127.0.0.1:`port` with a receive buffer of about `bytes` (see
    /// [`connect_with_receive_buffer`]).
    pub fn open_with_receive_buffer(port: u16, bytes: usize) -> Conn {
        Conn::ready(connect_with_receive_buffer(port, bytes), SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    fn ready(stream: TcpStream, addr: SocketAddr) -> Conn {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            addr,
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The underlying socket (for a second handle, e.g. a writer thread).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing {} bytes to the server failed: {e}", bytes.len()));
    }

    /// Sends a request without reading the answer.
    pub fn send_request(&mut self, request: &Request) {
        let bytes = request.bytes_for(&self.addr.to_string());
        self.send(&bytes);
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, request: &Request) -> Response {
        self.send_request(request);
        self.read_response()
    }

    /// Reads one complete response. Every response but a 101 and an event stream must
    /// carry `Content-Length` (docs/protocol.md); for those two only the head is read and
    /// the rest stays on the connection.
    pub fn read_response(&mut self) -> Response {
        let mut response = self.read_head();
        if response.status == 101 || response.is_event_stream() {
            return response;
        }
        let Some(len) = response.content_length() else {
            panic!("a response without Content-Length (only 101 and event streams may omit it):\n{response}");
        };
        while self.buf.len() < len {
            self.fill(&format!(
                "the {len}-byte body of this response:\n{response}"
            ));
        }
        response.body = self.buf.drain(..len).collect();
        response
    }

    /// Reads a response's status line and headers only.
    pub fn read_head(&mut self) -> Response {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Response::parse_head(&head);
            }
            self.fill("a response head");
        }
    }

    /// Reads whatever arrives next (at least one byte), for streaming readers.
    pub fn read_more(&mut self, waiting_for: &str) -> Vec<u8> {
        if self.buf.is_empty() {
            self.fill(waiting_for);
        }
        std::mem::take(&mut self.buf)
    }

    /// Asserts that nothing arrives for `quiet`: the server is (still) waiting, e.g. in a
    /// long-poll. A correct server never fails this, however slow the machine is.
    pub fn expect_no_response_within(&mut self, quiet: Duration, why: &str) {
        assert!(
            self.buf.is_empty(),
            "{why}: the server had already sent {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let mut chunk = [0u8; 4096];
        let result = self.stream.read(&mut chunk);
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        match result {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("{why}: the server closed the connection instead of waiting"),
            Ok(n) => panic!(
                "{why}: the server answered within {quiet:?} instead of waiting:\n{}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) => panic!("{why}: reading failed ({e}) instead of waiting"),
        }
    }

    /// Asserts that the server closes the connection (EOF or reset) without sending
    /// anything more.
    pub fn expect_closed(&mut self, after: &str) {
        assert!(
            self.buf.is_empty(),
            "after {after} the server sent more than one response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {}
            Ok(n) => panic!(
                "after {after} the server must close the connection, but it sent more:\n{}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(e) if is_timeout(&e) => panic!(
                "after {after} the server must close the connection, but it kept it open for {READ_TIMEOUT:?}"
            ),
            Err(e) => panic!("after {after}: reading failed ({e}) instead of seeing a close"),
        }
    }

    /// Reads until the server ends the connection (end of stream, or a reset after it had
    /// sent everything), and returns what came; a server that keeps it open past the read
    /// timeout fails the test.
    pub fn read_to_close(&mut self, waiting_for: &str) -> Vec<u8> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return std::mem::take(&mut self.buf),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset) => return std::mem::take(&mut self.buf),
                Err(e) if is_timeout(&e) => panic!(
                    "the server kept the connection open past {READ_TIMEOUT:?} while we waited for {waiting_for}; received: {} bytes",
                    self.buf.len()
                ),
                Err(e) => panic!("reading failed ({e}) while we waited for {waiting_for}"),
            }
        }
    }

    /// Closes our side of the connection abruptly (both directions).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn fill(&mut self, waiting_for: &str) {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!(
                "the server closed the connection while we waited for {waiting_for}\nreceived so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => panic!(
                "nothing from the server for {READ_TIMEOUT:?} while we waited for {waiting_for}\nreceived so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!(
                "reading from the server failed ({e}) while we waited for {waiting_for}\nreceived so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One response. `Display` (and `Debug`) print it as it came over the wire, body
/// shortened, so that `assert!(..., "{response}")` shows what the server said.
#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn parse_head(head: &[u8]) -> Response {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts.next().and_then(|s| s.parse().ok());
        let reason = parts.next().unwrap_or("").to_string();
        let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
            panic!("not an HTTP/1.x status line: {status_line:?}\nwhole head: {text:?}");
        };
        let headers = lines
            .filter(|line| !line.is_empty())
            .map(|line| match line.split_once(':') {
                Some((name, value)) => (name.to_string(), value.trim().to_string()),
                None => panic!("a response header without ':': {line:?}\nwhole head: {text:?}"),
            })
            .collect();
        Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
        }
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `Content-Type`, or "" when there is none.
    pub fn content_type(&self) -> &str {
        self.header("Content-Type").unwrap_or("")
    }

    /// `Content-Length`, checked for being a number.
    pub fn content_length(&self) -> Option<usize> {
        let value = self.header("Content-Length")?;
        Some(
            value
                .parse()
                .unwrap_or_else(|_| panic!("bad Content-Length {value:?} in:\n{self}")),
        )
    }

    /// Whether this is a Server-Sent Events stream (no `Content-Length`, read as a stream).
    pub fn is_event_stream(&self) -> bool {
        self.content_type().starts_with("text/event-stream")
    }

    /// The body as text (lossily, so that a failure message can always show it).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; fails the test, showing the response, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}):\n{self}"))
    }

    /// Asserts the status code, showing the whole response when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Response {
        assert_eq!(
            self.status, status,
            "expected status {status}, got:\n{self}"
        );
        self
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} {}", self.version, self.status, self.reason)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        writeln!(f)?;
        const SHOWN: usize = 4000;
        let body = String::from_utf8_lossy(&self.body);
        if body.chars().count() > SHOWN {
            let cut: String = body.chars().take(SHOWN).collect();
            write!(f, "{cut}... ({} bytes in all)", self.body.len())
        } else {
            write!(f, "{body}")
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A request to be written byte for byte. `Host` is added first; `Content-Length` is
/// added for a body (or a POST) unless the test set it or `Transfer-Encoding` itself.
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            version: "HTTP/1.1".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn post(target: &str) -> Request {
        Request::new("POST", target)
    }

    /// The version in the request line, e.g. "HTTP/1.0".
    pub fn version(mut self, version: &str) -> Request {
        self.version = version.to_string();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A `Cookie` header, e.g. `cookie("_xsrf=...")`.
    pub fn cookie(self, cookie: &str) -> Request {
        self.header("Cookie", cookie)
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(self, fields: &[(&str, &str)]) -> Request {
        self.body(
            "application/x-www-form-urlencoded",
            form_encode(fields).into_bytes(),
        )
    }

    /// An `application/json` body.
    pub fn json(self, value: &Value) -> Request {
        self.body("application/json", value.to_string().into_bytes())
    }

    /// A body with its `Content-Type`.
    pub fn body(self, content_type: &str, body: impl Into<Vec<u8>>) -> Request {
        let mut request = self.header("Content-Type", content_type);
        request.body = body.into();
        request
    }

    /// A body written as is, with no `Content-Type` (and no `Content-Length` if the test
    /// set `Transfer-Encoding`).
    pub fn raw_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The request as it goes on the wire to a server on 127.0.0.1:`port`.
    pub fn to_bytes(&self, port: u16) -> Vec<u8> {
        self.bytes_for(&format!("127.0.0.1:{port}"))
    }

    /// The request as it goes on the wire, with `host` (`IP:PORT`) as its Host.
    pub fn bytes_for(&self, host: &str) -> Vec<u8> {
        let mut head = format!(
            "{} {} {}\r\nHost: {host}\r\n",
            self.method, self.target, self.version
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let framed = has("Content-Length") || has("Transfer-Encoding");
        if !framed && (!self.body.is_empty() || self.method == "POST") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Sends the request on a new connection and reads the response.
    pub fn send(&self, port: u16) -> Response {
        Conn::open(port).request(self)
    }

    /// Sends the request on a new connection to `addr` and reads the response.
    pub fn send_to(&self, addr: SocketAddr) -> Response {
        Conn::open_to(addr).request(self)
    }

    /// Sends the request on a new connection from the loopback address `source`.
    pub fn send_from(&self, port: u16, source: Ipv4Addr) -> Response {
        Conn::open_from(port, source).request(self)
    }
}

/// `GET path` on a new connection.
pub fn get(port: u16, path: &str) -> Response {
    Request::get(path).send(port)
}

/// Form encoding: unreserved characters as they are, everything else percent-encoded.
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
