//! The master's watch on prefork's shared listener: when every worker is busy, new
//! connections wait in the kernel's accept queue and nobody says so (the page sits at
//! "Connecting"). Apache logs "server reached MaxRequestWorkers setting"; this is the same
//! line for prefork.
//!
//! A worker that is free sits in `accept(2)` and empties the queue within microseconds, so
//! a queue that is not empty at two samples a second apart means every worker is serving.
//! The queue's length comes from `TCP_INFO` on the listening socket: for a socket in the
//! LISTEN state Linux reports the accept queue's length in `tcpi_unacked` and its bound
//! (the backlog) in `tcpi_sacked`.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::sys::syscall;

/// How often the master looks at the accept queue.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Connections waiting in `listener`'s accept queue, and the queue's bound.
pub(super) fn accept_queue(listener: &TcpListener) -> io::Result<(u32, u32)> {
    // SAFETY: tcp_info is plain data; getsockopt fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are live and exclusively borrowed; `len` is info's size.
    syscall!(getsockopt(
        listener.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        (&mut info as *mut libc::tcp_info).cast(),
        &mut len
    ))?;
    Ok((info.tcpi_unacked, info.tcpi_sacked))
}

/// Says once when connections start waiting for a worker, and once when they stop.
#[derive(Debug)]
pub(super) struct BacklogWatch {
    next_sample: Instant,
    /// The first sample of the current run of non-empty samples.
    waiting_since: Option<Instant>,
    /// The warning of the current episode was logged.
    warned: bool,
}

impl BacklogWatch {
    pub(super) fn new(now: Instant) -> BacklogWatch {
        BacklogWatch { next_sample: now + SAMPLE_EVERY, waiting_since: None, warned: false }
    }

    /// When the master should wake to sample.
    pub(super) fn deadline(&self) -> Instant {
        self.next_sample
    }

    /// Samples the queue if it is time; logs the start and the end of an episode.
    pub(super) fn on_timer(&mut self, now: Instant, listener: &TcpListener, workers: usize) {
        if now < self.next_sample {
            return;
        }
        self.next_sample = now + SAMPLE_EVERY;
        let Ok((queued, bound)) = accept_queue(listener) else { return };
        self.observe(now, queued, bound, workers);
    }

    fn observe(&mut self, now: Instant, queued: u32, bound: u32, workers: usize) -> Option<String> {
        if queued == 0 {
            self.waiting_since = None;
            if std::mem::take(&mut self.warned) {
                info!("prefork: a worker is free again; no connection is waiting");
                return Some("free".into());
            }
            return None;
        }
        let since = *self.waiting_since.get_or_insert(now);
        if self.warned || now.duration_since(since) < SAMPLE_EVERY {
            return None;
        }
        self.warned = true;
        let waiting = if queued == 1 { "1 connection is".to_string() } else { format!("{queued} connections are") };
        let line = format!(
            "prefork: all {workers} workers are busy and {waiting} waiting in the listen backlog (of \
             {bound}); each worker serves one client at a time and a browser tab holds up to three \
             (page, stream, post): raise --workers, or lower --idle-timeout"
        );
        warn!("{line}");
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_episode_after_two_non_empty_samples() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut watch = BacklogWatch::new(start);
        assert_eq!(watch.observe(at(1), 0, 128, 4), None);
        assert_eq!(watch.observe(at(2), 3, 128, 4), None, "one sample may be a connection about to be taken");
        let line = watch.observe(at(3), 5, 128, 4).expect("a second non-empty sample warns");
        assert!(line.contains("all 4 workers are busy and 5 connections are waiting"), "{line}");
        assert_eq!(watch.observe(at(4), 9, 128, 4), None, "once per episode");
        assert_eq!(watch.observe(at(5), 0, 128, 4).as_deref(), Some("free"));
        assert_eq!(watch.observe(at(6), 1, 128, 4), None);
        assert_eq!(watch.observe(at(7), 0, 128, 4), None, "an episode that never warned ends silently");
    }

    #[test]
    fn the_queue_of_a_listener_nobody_accepts_on_is_measured() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(accept_queue(&listener).unwrap().0, 0);
        let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        // connect() returns once the client has sent its ACK; the server side queues the
        // connection when that ACK is processed, which on loopback is at once or nearly:
        // look until all three are there (a bounded wait on the condition itself).
        let give_up = Instant::now() + Duration::from_secs(5);
        let (queued, bound) = loop {
            let (queued, bound) = accept_queue(&listener).unwrap();
            if queued == 3 || Instant::now() > give_up {
                break (queued, bound);
            }
            std::thread::yield_now();
        };
        assert_eq!(queued, 3);
        assert!(bound >= 3, "backlog bound {bound}");
        drop(clients);
    }
}
