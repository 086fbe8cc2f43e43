//! [`Proxy`]: a TCP relay on loopback between a server and its database, which a test
//! can cut (every connection closed, new ones closed at once: the database crashed or is
//! down) or freeze (connections stay open and nothing passes: the database hangs, or the
//! network dropped it), and then restore.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const PASS: u8 = 0;
const CUT: u8 = 1;
const FROZEN: u8 = 2;
const STOPPED: u8 = 3;

/// A relay from an ephemeral port (on 127.0.0.1 unless asked otherwise) to `target`;
/// stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<AtomicU8>,
    /// Both ends of every relayed connection, to close them on a cut.
    open: Arc<Mutex<Vec<TcpStream>>>,
    listener: Option<TcpListener>,
}

impl Proxy {
    /// Starts relaying to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        Proxy::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), target)
    }

    /// Starts relaying to `target` from a port on `ip` (an address of this machine's that
    /// other hosts reach, such as a network namespace's bridge).
    pub fn start_on(ip: IpAddr, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((ip, 0)).expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AtomicU8::new(PASS));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepting = listener.try_clone().unwrap();
        let (state2, open2) = (Arc::clone(&state), Arc::clone(&open));
        thread::spawn(move || {
            for client in accepting.incoming() {
                let Ok(client) = client else { return };
                match state2.load(Ordering::SeqCst) {
                    STOPPED => return,
                    CUT => {
                        drop(client); // the database is down: closed at once
                        continue;
                    }
                    _ => {}
                }
                let Ok(upstream) = TcpStream::connect(target) else { continue };
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(upstream.try_clone().unwrap());
                }
                pump(client.try_clone().unwrap(), upstream.try_clone().unwrap(), Arc::clone(&state2));
                pump(upstream, client, Arc::clone(&state2));
            }
        });
        Proxy { addr, state, open, listener: Some(listener) }
    }

    /// The address to give instead of the database's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database is down: every connection is closed, and new ones are closed at once.
    pub fn cut(&self) {
        self.state.store(CUT, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// The database hangs: connections stay open, and nothing passes either way.
    pub fn freeze(&self) {
        self.state.store(FROZEN, Ordering::SeqCst);
    }

    /// The database is back: connections made from now on pass. (Frozen connections
    /// stay silent: a client must have given up on them.)
    pub fn restore(&self) {
        self.state.store(PASS, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.state.store(STOPPED, Ordering::SeqCst);
        // Wake the accept loop so that it sees it is stopped and ends.
        drop(self.listener.take());
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Copies `from` to `to` on a thread until either end closes; while frozen, holds what
/// it read and passes nothing, ever (a frozen connection never resumes).
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<AtomicU8>) {
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        let mut frozen = false;
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            frozen |= state.load(Ordering::SeqCst) == FROZEN;
            if frozen {
                continue;
            }
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The `host:port` a database URL names.
pub fn target(url: &str) -> SocketAddr {
    authority(url).to_socket_addrs().expect("a database address").next().expect("an address")
}

/// The `HOST:PORT` part of `scheme://user@HOST:PORT/db...`.
pub fn authority(url: &str) -> &str {
    let after_scheme = &url[url.find("://").expect("a URL") + 3..];
    let after_user = &after_scheme[after_scheme.find('@').map_or(0, |at| at + 1)..];
    &after_user[..after_user.find('/').unwrap_or(after_user.len())]
}

/// The same URL, pointing at `proxy` instead.
pub fn through(url: &str, proxy: SocketAddr) -> String {
    url.replacen(authority(url), &proxy.to_string(), 1)
}
