//! The client side of the wire: a minimal HTTP/1.1 connection ([`http::Conn`]), the three
//! ways to subscribe to a room ([`feed::Feed`]), the SSE line parser, and the WebSocket
//! client ([`ws::WsConn`]).
//!
//! Only what the scenarios need: `Content-Length` framed responses (c10k always sends it),
//! an event stream read until the server closes it, and WebSocket text messages read in
//! place (tungstenite gives only the handshake's key helpers). No TLS, no redirects, no
//! chunked responses.

pub(crate) mod feed;
pub(crate) mod http;
pub(crate) mod sse;
pub(crate) mod ws;

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// Why one request or subscription failed. [`ClientError::kind`] is the short class under
/// which the report counts it.
#[derive(Debug)]
pub(crate) enum ClientError {
    /// `connect` (or binding the source address) failed.
    Connect(io::Error),
    /// Reading or writing failed.
    Io(io::Error),
    /// The server closed the connection where an answer was due.
    Closed,
    /// The server answered with a status the scenario did not expect.
    Status(u16),
    /// The server's bytes were not the protocol (bad head, bad JSON, missing length).
    Protocol(String),
    /// The run's hard deadline passed first.
    Timeout,
}

impl ClientError {
    /// The class this error is counted under in a report, e.g. `connect: connection refused`.
    pub(crate) fn kind(&self) -> String {
        match self {
            ClientError::Connect(e) => format!("connect: {}", describe(e)),
            ClientError::Io(e) => format!("i/o: {}", describe(e)),
            ClientError::Closed => "closed by server".into(),
            ClientError::Status(s) => format!("status {s}"),
            ClientError::Protocol(p) => format!("protocol: {p}"),
            ClientError::Timeout => "hard timeout".into(),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.kind())
    }
}

fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        // The two that matter most at scale, named so the report explains itself.
        Some(libc::EMFILE) => "too many open files (EMFILE)".into(),
        Some(libc::EADDRNOTAVAIL) => "no free source port (EADDRNOTAVAIL)".into(),
        _ => e.kind().to_string(),
    }
}

/// Connects to `addr`, from `source` if given (bind before connect, port chosen by the
/// kernel), with Nagle off: every request goes out in one write and should leave at once.
pub(crate) async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ClientError> {
    let stream = match source {
        None => TcpStream::connect(addr).await.map_err(ClientError::Connect)?,
        Some(ip) => {
            let socket =
                if ip.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(ClientError::Connect)?;
            socket.bind(SocketAddr::new(ip, 0)).map_err(ClientError::Connect)?;
            socket.connect(addr).await.map_err(ClientError::Connect)?
        }
    };
    stream.set_nodelay(true).map_err(ClientError::Connect)?;
    Ok(stream)
}
