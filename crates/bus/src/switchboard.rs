//! The master's side of the local relay: one non-blocking socket per worker; a message
//! read from one is copied to all the others, and once they have all acknowledged it the
//! sender is told `done` (see the crate docs for the protocol).
//!
//! Sans-wait: the switchboard never blocks and never sleeps. The master's loop asks it
//! which sockets to poll ([`Switchboard::interests`]), and calls
//! [`Switchboard::readable`] / [`Switchboard::writable`] when `poll(2)` says so.

use std::collections::{HashMap, VecDeque};
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
    /// Message lines received from this worker so far: the sequence number of its last.
    received: u64,
    /// The fan-outs whose `ack` this worker owes, in the order it was sent them (a worker
    /// acknowledges in order, so the next `ack` is for the front one).
    owes: VecDeque<u64>,
}

/// One message on its way to the other workers.
#[derive(Debug)]
struct FanOut {
    origin: u32,
    /// The origin's sequence number for it, echoed in `done`.
    seq: u64,
    /// Workers that have not acknowledged it yet.
    remaining: usize,
}

/// The master's ends of the relay, one per worker, keyed by the worker's process id.
#[derive(Debug, Default)]
pub struct Switchboard {
    ends: Vec<End>,
    fan_outs: HashMap<u64, FanOut>,
    next_fan_out: u64,
}

impl Switchboard {
    /// The most bytes queued for one worker; beyond it, lines for that worker are dropped
    /// (it fills the gap from the store when the next message of the room arrives) and
    /// not waited for.
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
        self.ends.push(End {
            key,
            stream,
            inbox: Vec::new(),
            outbox: Vec::new(),
            sent: 0,
            dropping: false,
            received: 0,
            owes: VecDeque::new(),
        });
        Ok(())
    }

    /// Forgets worker `key`, closing the master's end; what it owed counts as
    /// acknowledged. Returns whether it was known.
    pub fn remove(&mut self, key: u32) -> bool {
        let Some(at) = self.ends.iter().position(|e| e.key == key) else { return false };
        let end = self.ends.remove(at);
        for fan_out in end.owes {
            self.acknowledged(fan_out);
        }
        true
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

    /// Reads all that worker `key` sent and acts on it: forwards its messages, counts its
    /// acknowledgements. Reports what the master must know. Call when its socket is
    /// readable (or hung up).
    pub fn readable(&mut self, key: u32) -> Vec<Notice> {
        let mut notices = Vec::new();
        let Some(end) = self.ends.iter_mut().find(|e| e.key == key) else { return notices };
        let mut chunk = [0u8; 64 * 1024];
        let mut closed = false;
        loop {
            match (&end.stream).read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => end.inbox.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let inbox = std::mem::take(&mut end.inbox);
        let mut start = 0;
        while let Some(len) = inbox[start..].iter().position(|&b| b == b'\n') {
            let line = &inbox[start..start + len + 1];
            start += len + 1;
            match line {
                b"ready\n" => notices.push(Notice::Ready(key)),
                b"ack\n" => {
                    let owed = self.end(key).and_then(|e| e.owes.pop_front());
                    match owed {
                        Some(fan_out) => self.acknowledged(fan_out),
                        None => warn!(worker = key, "relay: an `ack` for nothing; ignoring it"),
                    }
                }
                [b'{', ..] => self.forward(key, line),
                [b'P', b' ', ..] => self.broadcast(key, line),
                _ => warn!(worker = key, "relay: ignoring a line that is neither a message, `ack` nor `ready`"),
            }
        }
        let rest = &inbox[start..];
        if rest.len() > MAX_LINE {
            warn!(worker = key, "relay: a line over {MAX_LINE} bytes; closing this worker's relay");
            closed = true;
        }
        if let Some(end) = self.end(key) {
            end.inbox = rest.to_vec();
        }
        if closed {
            self.remove(key);
            notices.push(Notice::Closed(key));
        }
        notices.extend(self.flush_all());
        notices
    }

    /// Sends what is queued for worker `key`. Call when its socket is writable.
    pub fn writable(&mut self, key: u32) -> Option<Notice> {
        let end = self.end(key)?;
        if flush(end).is_err() {
            self.remove(key);
            return Some(Notice::Closed(key));
        }
        None
    }

    fn end(&mut self, key: u32) -> Option<&mut End> {
        self.ends.iter_mut().find(|e| e.key == key)
    }

    /// Queues message `line` from `origin` for every other worker, each of which then owes
    /// an `ack` for it. With nobody to wait for, the origin is told `done` at once.
    fn forward(&mut self, origin: u32, line: &[u8]) {
        let Some(from) = self.end(origin) else { return };
        from.received += 1;
        let seq = from.received;
        self.next_fan_out += 1;
        let id = self.next_fan_out;
        let mut remaining = 0;
        for end in self.ends.iter_mut().filter(|e| e.key != origin) {
            if end.outbox.len() - end.sent + line.len() > Self::MAX_QUEUED {
                if !end.dropping {
                    warn!(worker = end.key, "relay: this worker reads too slowly; dropping messages for it until it catches up (it fills gaps from the store)");
                    end.dropping = true;
                }
                continue;
            }
            end.outbox.extend_from_slice(line);
            end.owes.push_back(id);
            remaining += 1;
        }
        self.fan_outs.insert(id, FanOut { origin, seq, remaining: remaining + 1 });
        // The extra count, taken back here, keeps the fan-out alive while it is set up.
        self.acknowledged(id);
    }

    /// Copies presence `line` from `origin` to every other worker with room for it in its
    /// outbox; nothing is owed for it (presence is repeated, not acknowledged).
    fn broadcast(&mut self, origin: u32, line: &[u8]) {
        for end in self.ends.iter_mut().filter(|e| e.key != origin) {
            if end.outbox.len() - end.sent + line.len() <= Self::MAX_QUEUED {
                end.outbox.extend_from_slice(line);
            }
        }
    }

    /// One worker has a fan-out's message; when all have, its origin gets `done SEQ`.
    fn acknowledged(&mut self, id: u64) {
        let Some(fan_out) = self.fan_outs.get_mut(&id) else { return };
        fan_out.remaining -= 1;
        if fan_out.remaining > 0 {
            return;
        }
        let FanOut { origin, seq, .. } = self.fan_outs.remove(&id).expect("present above");
        if let Some(end) = self.end(origin) {
            end.outbox.extend_from_slice(format!("done {seq}\n").as_bytes());
        }
    }

    /// Sends what can be sent now to every worker; reports the ends found closed.
    fn flush_all(&mut self) -> Vec<Notice> {
        let broken: Vec<u32> = self.ends.iter_mut().filter_map(|e| flush(e).err().map(|_| e.key)).collect();
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
