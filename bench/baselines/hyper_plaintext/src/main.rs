//! Baseline peer for c10k: the smallest idiomatic hyper 1.x server. HTTP/1.1 only, keep-alive,
//! no TLS; every request, whatever its path or method, gets `200 Hello, World!`
//! (`text/plain`, with the `Date` and `Content-Length` hyper adds).
//!
//! `hyper-plaintext [--port P] [--threads N]`: listens on 127.0.0.1:P (0 picks a free
//! port) with N tokio worker threads (default: one per core), and prints one line,
//! `hyper listening on http://127.0.0.1:PORT/`, once it accepts connections.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"Hello, World!";

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

struct Args {
    port: u16,
    threads: usize,
}

fn usage(problem: &str) -> ! {
    eprintln!("hyper-plaintext: {problem}\nusage: hyper-plaintext [--port P] [--threads N]");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = Args {
        port: 8080,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--port" => args.port = value().parse().unwrap_or_else(|_| usage("bad --port")),
            "--threads" => {
                args.threads = value().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| usage("bad --threads"))
            }
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(serve(args.port));
}

async fn serve(port: u16) {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .unwrap_or_else(|e| usage(&format!("cannot listen on 127.0.0.1:{port}: {e}")));
    let port = listener.local_addr().expect("local address").port();
    println!("hyper listening on http://127.0.0.1:{port}/");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: say so, and do not spin.
                eprintln!("hyper-plaintext: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            // Connection errors (a client that resets, say) end that connection only.
            let _ = http1::Builder::new().keep_alive(true).serve_connection(io, service_fn(hello)).await;
        });
    }
}
