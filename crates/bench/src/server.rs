//! Server lifecycle: one fresh server per cell. A c10k model is started as `c10k serve
//! --listen 127.0.0.1:0` with a fresh database: a SQLite file in its own temporary
//! directory, or the scratch database on a MySQL or PostgreSQL server that the runner
//! made for the cell (`--db URL --db-sleep-ms MS`); a peer
//! through `bench/baselines/run.sh NAME 0 [WORKERS]`. Either way the bench reads the one
//! URL line from standard output, keeps the server's log in the temporary directory (its
//! tail goes into the error when the server will not start), and stops it with SIGTERM,
//! then SIGKILL for anything of its process tree still alive 15 s later.
//!
//! Pinning: with `taskset` present the server is started under `taskset -c CPUS`, and the
//! bench pins itself (all its threads, hence the load generator's runtime and worker
//! processes) to the other CPUs with `taskset -a -p` for the cell.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use c10k_store::testing::ScratchDatabase;

use crate::matrix::Subject;
use crate::BenchError;

/// How long a server may take to print its URL (prefork with 1,000 workers forks them all first).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `c10k` binary (servers and idle-capacity's client workers).
    pub c10k: PathBuf,
    /// `bench/baselines/run.sh`.
    pub run_sh: PathBuf,
    /// `taskset`, when installed.
    pub taskset: Option<PathBuf>,
    /// `wrk` on PATH, or what the report says instead (not installed, and how to get it).
    pub wrk: Result<PathBuf, String>,
}

impl Programs {
    /// Finds them: this executable, `bench/baselines/run.sh` in the working directory or
    /// the source tree this crate was built from, `taskset` on the usual paths, and `wrk`
    /// on PATH.
    pub fn find() -> Result<Programs, BenchError> {
        let c10k =
            std::env::current_exe().map_err(|e| BenchError::Setup(format!("cannot find my own executable: {e}")))?;
        let candidates = [
            PathBuf::from("bench/baselines/run.sh"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/baselines/run.sh"),
        ];
        let run_sh = candidates
            .iter()
            .find(|p| p.exists())
            .cloned()
            .unwrap_or_else(|| candidates[0].clone());
        let run_sh = run_sh.canonicalize().unwrap_or(run_sh);
        let taskset = ["/usr/bin/taskset", "/bin/taskset", "/usr/local/bin/taskset"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let wrk = crate::wrk::find().ok_or_else(|| crate::wrk::NOT_INSTALLED.to_string());
        Ok(Programs {
            c10k,
            run_sh,
            taskset,
            wrk,
        })
    }
}

/// A started server.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process the bench started (c10k itself, or run.sh for a peer).
    pub pid: u32,
    /// The command line, as RESULTS.md shows it (temporary paths as `$TMP`).
    pub command: String,
    /// Something the start had to work around, for the report (e.g. no slow store).
    pub note: Option<String>,
    dir: PathBuf,
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory for one server.
fn temp_dir() -> Result<PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "c10k-bench-{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

impl Server {
    /// Starts `subject` pinned to `cpus` (when given and taskset exists) and waits for its
    /// URL. A subject on a database server is given `scratch`, its database for the cell.
    pub fn start(
        subject: &Subject,
        cpus: Option<&str>,
        programs: &Programs,
        scratch: Option<&ScratchDatabase>,
    ) -> Result<Server, BenchError> {
        if scratch.is_some() {
            return Server::start_once(subject, cpus, programs, None, scratch);
        }
        match subject {
            Subject::Model {
                db_slow_ms: Some(ms), ..
            } => {
                // A slow store is asked for as slow:MILLIS:PATH; a build without it refuses
                // the form, and the cell then measures the plain SQLite store (said so).
                match Server::start_once(subject, cpus, programs, Some(*ms), None) {
                    Ok(s) => Ok(s),
                    Err(BenchError::Server(e)) if e.contains("slow") || e.contains("scheme") => {
                        let mut s = Server::start_once(subject, cpus, programs, None, None)?;
                        s.note = Some(format!(
                            "this build has no slow store (--db slow:{ms}:PATH was refused), so posts cost only \
                             SQLite's own commit"
                        ));
                        Ok(s)
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Server::start_once(subject, cpus, programs, None, None),
        }
    }

    fn start_once(
        subject: &Subject,
        cpus: Option<&str>,
        programs: &Programs,
        slow: Option<u64>,
        scratch: Option<&ScratchDatabase>,
    ) -> Result<Server, BenchError> {
        let dir = temp_dir()?;
        let mut argv: Vec<String> = Vec::new();
        let mut shown: Vec<String> = Vec::new();
        if let (Some(cpus), Some(taskset)) = (cpus, &programs.taskset) {
            argv.extend([taskset.display().to_string(), "-c".into(), cpus.to_string()]);
            shown.extend(["taskset".into(), "-c".into(), cpus.to_string()]);
        }
        let expect_prefix = match subject {
            Subject::Model { model, args, db_server, .. } => {
                let db = dir.join("c10k.sqlite3").display().to_string();
                let db = match (slow, scratch) {
                    (_, Some(s)) => s.url().to_string(),
                    (Some(ms), None) => format!("slow:{ms}:{db}"),
                    (None, None) => db,
                };
                let mut rest: Vec<String> = vec![
                    "serve".into(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--db".into(),
                    db,
                    "--model".into(),
                    model.clone(),
                ];
                rest.extend(args.iter().cloned());
                if let Some(d) = db_server {
                    rest.extend(["--db-sleep-ms".into(), d.sleep_ms.to_string()]);
                }
                argv.push(programs.c10k.display().to_string());
                shown.push("c10k".into());
                for a in &rest {
                    argv.push(a.clone());
                    let a = a.replace(&dir.display().to_string(), "$TMP");
                    // The scratch database's name changes every run: shown as `$SCRATCH`.
                    shown.push(scratch.map_or(a.clone(), |s| a.replace(s.name(), "$SCRATCH")));
                }
                "c10k listening on ".to_string()
            }
            Subject::Peer { name, workers } => {
                argv.push(programs.run_sh.display().to_string());
                shown.push("bench/baselines/run.sh".into());
                for a in [Some(name.clone()), Some("0".into()), workers.map(|w| w.to_string())]
                    .into_iter()
                    .flatten()
                {
                    argv.push(a.clone());
                    shown.push(a);
                }
                format!("peer {name} listening on ")
            }
        };
        let log_path = dir.join("server.log");
        let log = File::create(&log_path)
            .map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", log_path.display())))?;
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        command.env("RUST_LOG", "warn");
        let shown = shown.join(" ");
        let mut child = command
            .spawn()
            .map_err(|e| BenchError::Server(format!("cannot start `{shown}`: {e}")))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep reading so that the server never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            command: shown,
            note: None,
            dir,
        };
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let tail = server.log_tail();
                server.stop();
                return Err(BenchError::Server(format!(
                    "`{}` printed no URL within {} s; its log ends:\n{tail}",
                    server.command,
                    READY_TIMEOUT.as_secs()
                )));
            }
        };
        let url = line.trim().strip_prefix(expect_prefix.as_str()).map(str::to_string);
        match url.and_then(|u| c10k_load::target::parse_target(&u).ok()) {
            Some(addr) => {
                server.addr = addr;
                Ok(server)
            }
            None => {
                std::thread::sleep(Duration::from_millis(200));
                let tail = server.log_tail();
                server.stop();
                Err(BenchError::Server(format!(
                    "`{}` did not start (it printed {:?}); its log ends:\n{tail}",
                    server.command,
                    line.trim()
                )))
            }
        }
    }

    /// The pids whose memory and threads count as the server's: the tree under the process
    /// started (run.sh's own shell included; it is constant, and deltas cancel it).
    pub fn root_pid(&self) -> u32 {
        self.pid
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }

    /// Whether the process the bench started is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait, then SIGKILL for the whole tree.
    pub fn stop(&mut self) {
        let pids = crate::procfs::tree(self.pid);
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Anything of the tree still alive (a peer's setsid'd group whose run.sh died).
        for p in pids {
            if p != self.pid && Path::new(&format!("/proc/{p}")).exists() {
                signal(p, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to `pid`.
#[allow(unsafe_code)]
fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a stale pid is
    // at worst an ESRCH, ignored.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Whether peer `name` can start without installing anything.
pub fn peer_installed(name: &str, programs: &Programs) -> bool {
    let baselines = programs.run_sh.parent().map(Path::to_path_buf).unwrap_or_default();
    let exists = |p: &str| Path::new(p).exists();
    match name {
        "nginx" => exists("/usr/sbin/nginx") || exists("/usr/bin/nginx"),
        "apache-prefork" | "apache-event" => exists("/usr/sbin/apache2"),
        "tornado" | "gevent" => Command::new("python3")
            .args(["-c", &format!("import {name}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
        "hyper" => baselines
            .join("hyper_plaintext/target/release/hyper-plaintext")
            .exists(),
        "raw" => baselines.join("raw_floor/target/release/raw-floor").exists(),
        _ => false,
    }
}

/// Pins every thread of this process to `cpus` (`None`: every CPU), with `taskset -a -p`.
/// Threads and processes started afterwards inherit it.
pub fn pin_self(cpus: Option<&str>, programs: &Programs) {
    let Some(taskset) = &programs.taskset else { return };
    let all = format!("0-{}", crate::machine::cpus().saturating_sub(1));
    let _ = Command::new(taskset)
        .args(["-a", "-p", "-c", cpus.unwrap_or(&all), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
