//! A WebSocket client: tungstenite's client handshake over a plain `TcpStream` that has a
//! read timeout, and JSON text frames both ways.

use std::io;
use std::net::TcpStream;

use serde_json::Value;
use tungstenite::{Error, HandshakeError, Message, WebSocket};

use super::http::READ_TIMEOUT;

/// An open WebSocket.
pub struct Ws {
    socket: WebSocket<TcpStream>,
    /// Every JSON frame received so far, for failure messages.
    seen: Vec<Value>,
}

impl Ws {
    /// Opens `ws://127.0.0.1:port{path}`; fails the test if the server refuses.
    pub fn connect(port: u16, path: &str) -> Ws {
        Ws::try_connect(port, path).unwrap_or_else(|(status, body)| {
            panic!("the WebSocket handshake on {path} was refused with {status}: {body}")
        })
    }

    /// Opens `ws://127.0.0.1:port{path}`, or returns the status and body of the refusal.
    pub fn try_connect(port: u16, path: &str) -> Result<Ws, (u16, String)> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://127.0.0.1:{port}{path}");
        match tungstenite::client(url.as_str(), stream) {
            Ok((socket, _response)) => Ok(Ws {
                socket,
                seen: Vec::new(),
            }),
            Err(HandshakeError::Failure(Error::Http(response))) => {
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                Err((response.status().as_u16(), body.into_owned()))
            }
            Err(HandshakeError::Interrupted(_)) => {
                panic!("no WebSocket handshake answer on {path} within {READ_TIMEOUT:?}")
            }
            Err(HandshakeError::Failure(e)) => {
                panic!("the WebSocket handshake on {path} failed: {e}")
            }
        }
    }

    /// Sends a text frame holding `value`.
    pub fn send_json(&mut self, value: &Value) {
        self.send(Message::text(value.to_string()));
    }

    /// Sends a text frame as is (it need not be JSON).
    pub fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_string()));
    }

    /// Sends any frame.
    pub fn send(&mut self, message: Message) {
        self.socket.send(message).unwrap_or_else(|e| {
            panic!(
                "sending a WebSocket frame failed: {e}; frames so far: {:#?}",
                self.seen
            )
        });
    }

    /// The next frame of any kind (pongs and close frames included).
    pub fn next_raw(&mut self) -> Message {
        match self.socket.read() {
            Ok(message) => message,
            Err(Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "no WebSocket frame for {READ_TIMEOUT:?}; frames so far: {:#?}",
                    self.seen
                )
            }
            Err(e) => panic!(
                "reading a WebSocket frame failed: {e}; frames so far: {:#?}",
                self.seen
            ),
        }
    }

    /// The next text frame, parsed as JSON (pings and pongs are skipped).
    pub fn next_frame(&mut self) -> Value {
        loop {
            match self.next_raw() {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!("a text frame that is not JSON ({e}): {:?}", text.as_str())
                    });
                    self.seen.push(value.clone());
                    return value;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!(
                    "expected a JSON text frame, got {other:?}; frames so far: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// The next frame, which must be `{"type": "message", "message": {...}}`: the message.
    pub fn next_message(&mut self) -> Value {
        let frame = self.next_frame();
        assert_eq!(
            frame["type"], "message",
            "expected a message frame, got {frame}; frames so far: {:#?}",
            self.seen
        );
        frame["message"].clone()
    }

    /// The ids of the next `n` message frames.
    pub fn next_ids(&mut self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let message = self.next_message();
                message["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("a message without a numeric id: {message}"))
            })
            .collect()
    }

    /// Every JSON frame received so far.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }
}
