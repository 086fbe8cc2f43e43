//! The master's side of the local relay: one non-blocking socket per worker, lines read
//! from one copied to all the others (see the crate docs for the protocol).
//!
//! Sans-wait: the switchboard never blocks and never sleeps. The master's loop asks it
//! which sockets to poll ([`Switchboard::interests`]), and calls
//! [`Switchboard::readable`] / [`Switchboard::writable`] when `poll(2)` says so.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use tracing::warn;

/// A line longer than this is not a message (a chat message is at most 4096 characters);
/// the worker that sent it is out of step and its end is closed.
const MAX_LINE: usize = 1 << 20;

/// What the master learns from a worker's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The worker has loaded its history and is about to serve.
    Ready(u32),
    /// The worker's end is closed (it exited, or broke the protocol): forget it.
    Closed(u32),
}

#[derive(Debug)]
struct End {
    key: u32,
    stream: UnixStream,
    /// Bytes read, not yet a whole line.
    inbox: Vec<u8>,
    /// Bytes to send; `outbox[sent..]` is still unsent.
    outbox: Vec<u8>,
    sent: usize,
    /// Lines are being dropped for this worker because its outbox is full.
    dropping: bool,
}

/// The master's ends of the relay, one per worker, keyed by the worker's process id.
#[derive(Debug, Default)]
pub struct Switchboard {
    ends: Vec<End>,
}

impl Switchboard {
    /// The most bytes queued for one worker; beyond it, lines for that worker are dropped
    /// (it fills the gap from the store when the next message of the room arrives).
    pub const MAX_QUEUED: usize = 8 << 20;

    /// An empty switchboard.
    pub fn new() -> Switchboard {
        Switchboard::default()
    }

    /// A connected pair: the first end for the master ([`Switchboard::add`]), the second
    /// for the worker ([`crate::LocalRelay::new`]). Both close on exec.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        UnixStream::pair()
    }

    /// Starts relaying to and from the worker `key` through `stream`.
    pub fn add(&mut self, key: u32, stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        self.remove(key);
        self.ends.push(End { key, stream, inbox: Vec::new(), outbox: Vec::new(), sent: 0, dropping: false });
        Ok(())
    }

    /// Forgets worker `key`, closing the master's end. Returns whether it was known.
    pub fn remove(&mut self, key: u32) -> bool {
        let before = self.ends.len();
        self.ends.retain(|e| e.key != key);
        self.ends.len() != before
    }

    /// How many workers are connected.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no worker is connected.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// What to poll: each worker's key, its socket, and whether there is something to
    /// write to it (poll for writable too).
    pub fn interests(&self) -> Vec<(u32, RawFd, bool)> {
        self.ends.iter().map(|e| (e.key, e.stream.as_raw_fd(), e.sent < e.outbox.len())).collect()
    }

    /// Reads all that worker `key` sent, forwards its messages to every other worker, and
    /// reports what the master must know. Call when its socket is readable (or hung up).
    pub fn readable(&mut self, key: u32) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(at) = self.ends.iter().position(|e| e.key == key) else { return notices };
        let mut chunk = [0u8; 64 * 1024];
        let mut closed = false;
        loop {
            match (&self.ends[at].stream).read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.ends[at].inbox.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let inbox = std::mem::take(&mut self.ends[at].inbox);
        let mut start = 0;
        while let Some(len) = inbox[start..].iter().position(|&b| b == b'\n') {
            let line = &inbox[start..start + len + 1];
            start += len + 1;
            match line {
                b"ready\n" => notices.push(Notice::Ready(key)),
                [b'{', ..] => notices.extend(self.forward(key, line)),
                _ => warn!(worker = key, "relay: ignoring a line that is neither a message nor `ready`"),
            }
        }
        let rest = &inbox[start..];
        if rest.len() > MAX_LINE {
            warn!(worker = key, "relay: a line over {MAX_LINE} bytes; closing this worker's relay");
            closed = true;
        }
        if let Some(end) = self.ends.iter_mut().find(|e| e.key == key) {
            end.inbox = rest.to_vec();
        }
        if closed {
            self.remove(key);
            notices.push(Notice::Closed(key));
        }
        notices
    }

    /// Sends what is queued for worker `key`. Call when its socket is writable.
    pub fn writable(&mut self, key: u32) -> Option<Notice> {
        let end = self.ends.iter_mut().find(|e| e.key == key)?;
        if flush(end).is_err() {
            self.remove(key);
            return Some(Notice::Closed(key));
        }
        None
    }

    /// Queues `line` for every worker but `from`, and sends what can be sent now.
    fn forward(&mut self, from: u32, line: &[u8]) -> Vec<Notice> {
        let mut broken = Vec::new();
        for end in self.ends.iter_mut().filter(|e| e.key != from) {
            if end.outbox.len() - end.sent + line.len() > Self::MAX_QUEUED {
                if !end.dropping {
                    warn!(worker = end.key, "relay: this worker reads too slowly; dropping messages for it until it catches up (it fills gaps from the store)");
                    end.dropping = true;
                }
                continue;
            }
            end.outbox.extend_from_slice(line);
            if flush(end).is_err() {
                broken.push(end.key);
            }
        }
        broken
            .into_iter()
            .map(|key| {
                self.remove(key);
                Notice::Closed(key)
            })
            .collect()
    }
}

/// Writes as much of the outbox as the socket takes. `Err` when the worker's end is gone.
/// (Writing to a closed socket raises SIGPIPE, which Rust programs ignore from the start,
/// so this sees `EPIPE`.)
fn flush(end: &mut End) -> io::Result<()> {
    while end.sent < end.outbox.len() {
        match (&end.stream).write(&end.outbox[end.sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => end.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if end.sent == end.outbox.len() {
        end.outbox.clear();
        end.sent = 0;
        end.dropping = false;
    } else if end.sent > end.outbox.len() / 2 {
        end.outbox.drain(..end.sent);
        end.sent = 0;
    }
    Ok(())
}
