//! [`Nginx`]: a private nginx (`/usr/sbin/nginx`, never the machine's own instance) in front
//! of a test's c10k nodes, running deploy/nginx.conf itself: the file is read and only
//! what must differ on a test machine is rewritten (the upstream's nodes, the listening
//! port, and the pid, log and temporary paths, which go into a prefix of its own), so that
//! the test checks the file people deploy. Stopped and removed when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's nginx package puts the binary.
pub const NGINX: &str = "/usr/sbin/nginx";

/// How long nginx may take to listen.
const START: Duration = Duration::from_secs(10);

/// The deploy file, as committed.
fn deploy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf")
}

/// A running private nginx.
pub struct Nginx {
    child: Option<Child>,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    /// Whether nginx is installed here.
    pub fn installed() -> bool {
        Path::new(NGINX).exists()
    }

    /// Starts nginx with deploy/nginx.conf in front of `nodes`, listening on 127.0.0.1 on
    /// a free port, and returns once it accepts connections.
    pub fn in_front_of(nodes: &[SocketAddr]) -> Nginx {
        let port = super::bus::free_port_on(std::net::Ipv4Addr::LOCALHOST.into());
        let prefix = std::env::temp_dir().join(format!("c10k-nginx-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(&prefix).unwrap();
        let deploy = std::fs::read_to_string(deploy_file()).expect("read deploy/nginx.conf");
        let config = prefix.join("nginx.conf");
        std::fs::write(&config, for_test(&deploy, &prefix, port, nodes)).unwrap();
        let error_log = prefix.join("error.log");
        // In the foreground and as one process: the test owns it and its exit.
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&config)
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child: Some(child), prefix, port };
        let deadline = Instant::now() + START;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.as_mut().unwrap().try_wait() {
                panic!("nginx exited ({status}) at start:\n{}", nginx.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port} within {START:?}:\n{}", nginx.error_log());
            thread::sleep(Duration::from_millis(20)); // poll until it listens
        }
        nginx
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("--- nginx error log ---\n{}--- end ---", self.error_log());
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// deploy/nginx.conf for a test: its upstream's `server` lines replaced by `nodes`, its
/// `listen 80;` by `port` on loopback, and every file it writes under `prefix`. Panics
/// when the file no longer has the shape this relies on (two example nodes, one listen),
/// so that a change to it is looked at here too.
pub fn for_test(deploy: &str, prefix: &Path, port: u16, nodes: &[SocketAddr]) -> String {
    let p = prefix.display();
    let mut out = format!("pid {p}/nginx.pid;\nerror_log {p}/error.log info;\n");
    let (mut examples, mut listens) = (0, 0);
    for line in deploy.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.starts_with("server ") && code.contains(":8888") {
            examples += 1;
            if examples == 1 {
                for node in nodes {
                    out.push_str(&format!("        server {node} max_fails=3 fail_timeout=10s;\n"));
                }
            }
            continue;
        }
        if code == "listen 80;" {
            listens += 1;
            out.push_str(&format!("        listen 127.0.0.1:{port};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if code == "http {" {
            out.push_str(&format!(
                "    access_log {p}/access.log;\n    client_body_temp_path {p}/client_body;\n    proxy_temp_path {p}/proxy;\n    \
                 fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    scgi_temp_path {p}/scgi;\n"
            ));
        }
    }
    assert_eq!(examples, 2, "deploy/nginx.conf's upstream must name two example nodes on port 8888");
    assert_eq!(listens, 1, "deploy/nginx.conf must have one `listen 80;`");
    out
}
