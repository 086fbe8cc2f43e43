//! A completion driver arms its receive in advance, so the kernel delivers a client's bytes
//! whether the connection wants them or not. The proactor stashes what comes while an
//! answer is still unsent and, past a bound, cancels the receive and lets TCP push back, as
//! a reactor does by not reading. Without that bound, a client that pipelines requests and
//! never reads would make the server buffer them, and then their answers, without end.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use c10k_models::uring::UringModel;
use c10k_models::DbMode;
use c10k_store::SqliteStore;
use socket2::{Domain, Socket, Type};
use support::InProcess;

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\n";
/// More than any kernel buffers between the two ends can hold: a server that never stops
/// reading lets the client write this much.
const UNBOUNDED: usize = 256 * 1024 * 1024;
/// How long the client's socket must stay unwritable to count as pushed back. A server that
/// reads makes room within microseconds; only a failing test waits this long for nothing.
const PUSHED_BACK: Duration = Duration::from_secs(2);

/// Whether `stream` becomes writable within `timeout`.
fn writable(stream: &TcpStream, timeout: Duration) -> bool {
    let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: one live pollfd over a socket we own.
    let n = unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
    assert!(n >= 0, "poll: {}", io::Error::last_os_error());
    n == 1
}

/// A client with small socket buffers, so that pushing back shows after little data.
fn small_client(port: u16) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(support::READ_TIMEOUT)).unwrap();
    stream
}

#[test]
fn a_client_that_pipelines_without_reading_is_pushed_back_then_gets_every_answer() {
    let store = Arc::new(SqliteStore::open_memory().unwrap());
    let server = InProcess::serve(Box::new(UringModel::new(None)), DbMode::Offload, store);
    let client = small_client(server.port);

    // Pipeline requests, reading nothing, until the server stops taking them.
    let batch: Vec<u8> = REQUEST.iter().copied().cycle().take(REQUEST.len() * 1000).collect();
    client.set_nonblocking(true).unwrap();
    let mut written = 0usize;
    loop {
        assert!(written < UNBOUNDED, "wrote {written} bytes unread and the server still took more: it buffers without bound");
        let at = written % batch.len();
        match (&client).write(&batch[at..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !writable(&client, PUSHED_BACK) {
                    break;
                }
            }
            Err(e) => panic!("write: {e}"),
        }
    }

    // Now read: the server takes the rest as its answers drain, and answers every request
    // (the last one, cut short by the push-back, is finished by a writer thread).
    client.set_nonblocking(false).unwrap();
    let requests = written.div_ceil(REQUEST.len());
    let rest = match written % REQUEST.len() {
        0 => Vec::new(),
        cut => REQUEST[cut..].to_vec(),
    };
    let writer = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || {
            (&client).write_all(&rest).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut answers = 0usize;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&client).read(&mut buf).expect("the server stopped answering");
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        answers += carry.windows(ANSWER.len()).filter(|w| *w == ANSWER).count();
        // Keep only a tail too short to hold an answer line, so none is counted twice.
        let keep = carry.len().min(ANSWER.len() - 1);
        carry.drain(..carry.len() - keep);
    }
    writer.join().unwrap();
    assert!(requests > 1000, "pushed back after only {requests} requests: the test's buffers are too small to tell");
    assert_eq!(answers, requests, "every pipelined request is answered once, after the push-back");
}
