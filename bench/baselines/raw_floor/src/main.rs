//! The physical floor for c10k's plaintext benchmark: the least work a loopback HTTP server
//! can do. One thread per core, each with its own `SO_REUSEPORT` listener and its own epoll
//! set; a connection's bytes are read and never parsed: for every `\r\n\r\n` seen (a request
//! head's end, counted across reads, so pipelined requests each get theirs) a fixed,
//! prebuilt `HTTP/1.1 200 OK` response with `Hello, World!` is written. Nothing else:
//! no `Date`, no routing, no request bodies (a POST body would be ignored or miscounted),
//! no timeouts. It is a measuring stick, not a server.
//!
//! `raw-floor [--port P] [--threads N]`: listens on 127.0.0.1:P (0 picks a free port)
//! with N threads (default: one per core) and prints one line,
//! `raw listening on http://127.0.0.1:PORT/`, once it accepts connections.

use std::io;
use std::os::raw::c_int;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: raw\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// Stop reading from a connection whose unsent responses exceed this (a client that
/// pipelines without reading); resume once it has drained.
const MAX_PENDING: usize = 256 * 1024;

const LISTENER: u64 = u64::MAX;

fn usage(problem: &str) -> ! {
    eprintln!("raw-floor: {problem}\nusage: raw-floor [--port P] [--threads N]");
    std::process::exit(2);
}

fn check(ret: c_int, what: &str) -> io::Result<c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

/// A non-blocking listening socket on 127.0.0.1:port with SO_REUSEPORT.
fn listen(port: u16) -> io::Result<c_int> {
    unsafe {
        let fd = check(
            libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0),
            "socket",
        )?;
        let one: c_int = 1;
        for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            check(
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    option,
                    &one as *const c_int as *const libc::c_void,
                    std::mem::size_of::<c_int>() as libc::socklen_t,
                ),
                "setsockopt",
            )?;
        }
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        check(
            libc::bind(
                fd,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            "bind",
        )?;
        check(libc::listen(fd, 4096), "listen")?;
        Ok(fd)
    }
}

fn local_port(fd: c_int) -> io::Result<u16> {
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        check(libc::getsockname(fd, &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr, &mut len), "getsockname")?;
        Ok(u16::from_be(addr.sin_port))
    }
}

/// One connection's state: how much of `\r\n\r\n` the last bytes matched, and the
/// responses not yet written.
#[derive(Default)]
struct Conn {
    matched: u8,
    out: Vec<u8>,
    sent: usize,
    want_write: bool,
}

impl Conn {
    /// Counts request ends in `bytes`, continuing the match from the previous read.
    fn count_ends(&mut self, bytes: &[u8]) -> usize {
        let mut ends = 0;
        let mut m = self.matched;
        for &b in bytes {
            m = match (b, m) {
                (b'\r', 2) => 3,
                (b'\r', _) => 1,
                (b'\n', 1) => 2,
                (b'\n', 3) => {
                    ends += 1;
                    0
                }
                _ => 0,
            };
        }
        self.matched = m;
        ends
    }
}

struct Worker {
    epoll: c_int,
    listener: c_int,
    conns: Vec<Option<Box<Conn>>>,
}

impl Worker {
    fn ctl(&self, op: c_int, fd: c_int, events: u32, token: u64) {
        let mut event = libc::epoll_event { events, u64: token };
        unsafe { libc::epoll_ctl(self.epoll, op, fd, &mut event) };
    }

    fn close(&mut self, fd: c_int) {
        if let Some(slot) = self.conns.get_mut(fd as usize) {
            *slot = None;
        }
        unsafe { libc::close(fd) };
    }

    fn accept_all(&mut self) {
        loop {
            let fd = unsafe {
                libc::accept4(
                    self.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => {}
                    _ => {
                        // EMFILE and the like: say so and back off instead of spinning.
                        eprintln!("raw-floor: accept: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
                return;
            }
            let one: c_int = 1;
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &one as *const c_int as *const libc::c_void,
                    std::mem::size_of::<c_int>() as libc::socklen_t,
                );
            }
            let index = fd as usize;
            if self.conns.len() <= index {
                self.conns.resize_with(index + 1, || None);
            }
            self.conns[index] = Some(Box::default());
            self.ctl(libc::EPOLL_CTL_ADD, fd, (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, fd as u64);
        }
    }

    /// Writes what is pending; returns false when the connection must be closed.
    fn flush(conn: &mut Conn, fd: c_int) -> bool {
        while conn.sent < conn.out.len() {
            let rest = &conn.out[conn.sent..];
            let n = unsafe { libc::write(fd, rest.as_ptr() as *const libc::c_void, rest.len()) };
            if n < 0 {
                return matches!(io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR));
            }
            conn.sent += n as usize;
        }
        conn.out.clear();
        conn.sent = 0;
        true
    }

    fn on_ready(&mut self, fd: c_int, events: u32, buf: &mut [u8]) {
        let Some(Some(conn)) = self.conns.get_mut(fd as usize) else { return };
        let mut alive = true;
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
            && conn.out.len() - conn.sent < MAX_PENDING
        {
            loop {
                let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                if n > 0 {
                    let ends = conn.count_ends(&buf[..n as usize]);
                    for _ in 0..ends {
                        conn.out.extend_from_slice(RESPONSE);
                    }
                    if (n as usize) < buf.len() || conn.out.len() - conn.sent >= MAX_PENDING {
                        break;
                    }
                } else if n == 0 {
                    alive = false;
                    break;
                } else {
                    alive = matches!(io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR));
                    break;
                }
            }
        }
        if alive {
            alive = Self::flush(conn, fd);
        }
        if !alive {
            self.close(fd);
            return;
        }
        // Interest: writable while responses are pending; readable unless too much is.
        let pending = conn.out.len() - conn.sent;
        let want_write = pending > 0;
        let want_read = pending < MAX_PENDING;
        if want_write != conn.want_write || !want_read {
            conn.want_write = want_write;
            let mut interest = libc::EPOLLRDHUP as u32;
            if want_read {
                interest |= libc::EPOLLIN as u32;
            }
            if want_write {
                interest |= libc::EPOLLOUT as u32;
            }
            self.ctl(libc::EPOLL_CTL_MOD, fd, interest, fd as u64);
        }
    }

    fn run(mut self) -> ! {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = unsafe { libc::epoll_wait(self.epoll, events.as_mut_ptr(), events.len() as c_int, -1) };
            if n < 0 {
                continue; // EINTR
            }
            for i in 0..n as usize {
                let (token, flags) = (events[i].u64, events[i].events);
                if token == LISTENER {
                    self.accept_all();
                } else {
                    self.on_ready(token as c_int, flags, &mut buf);
                }
            }
        }
    }
}

fn main() {
    let mut port: u16 = 8080;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--port" => port = value.parse().unwrap_or_else(|_| usage("bad --port")),
            "--threads" => threads = value.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| usage("bad --threads")),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    // The first listener fixes the port (0: the kernel's choice); the others share it.
    let first = listen(port).unwrap_or_else(|e| usage(&e.to_string()));
    let port = local_port(first).unwrap_or_else(|e| usage(&e.to_string()));
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listen(port).unwrap_or_else(|e| usage(&e.to_string())));
    }
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, "epoll_create1")
                .unwrap_or_else(|e| usage(&e.to_string()));
            let worker = Worker { epoll, listener, conns: Vec::new() };
            worker.ctl(libc::EPOLL_CTL_ADD, listener, libc::EPOLLIN as u32, LISTENER);
            std::thread::spawn(move || worker.run())
        })
        .collect();
    println!("raw listening on http://127.0.0.1:{port}/");
    for handle in handles {
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::Conn;

    #[test]
    fn counts_request_ends_across_reads() {
        let mut conn = Conn::default();
        assert_eq!(conn.count_ends(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r"), 1);
        assert_eq!(conn.count_ends(b"\n"), 1);
        assert_eq!(conn.count_ends(b"GET / HTTP/1.1\r\n\r\n\r\n\r\n"), 2);
        assert_eq!(conn.count_ends(b"\r\r\n\r\n"), 1);
    }
}
