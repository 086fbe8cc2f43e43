//! The progress bar of long runs, on standard error: drawn only when it is a terminal
//! and `--quiet` is not given, so `--json` output and logs stay clean.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar that follows a counter until [`Progress::finish`].
pub(crate) struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Shows `label` and how far `counter` has gone: out of `total` when the run is
    /// bounded by a count, otherwise by the time out of `duration`.
    pub(crate) fn start(
        enabled: bool,
        label: &str,
        counter: Arc<AtomicU64>,
        unit: &'static str,
        total: Option<u64>,
        duration: Duration,
    ) -> Progress {
        if !enabled {
            return Progress { bar: ProgressBar::hidden(), ticker: None };
        }
        let length = total.unwrap_or(duration.as_millis() as u64).max(1);
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr_with_hz(5));
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = counter.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                ticking.set_position(match total {
                    Some(_) => done,
                    None => start.elapsed().as_millis() as u64,
                });
                ticking.set_message(format!("{done} {unit}, {:.0} {unit}/s", done as f64 / secs));
            }
        });
        Progress { bar, ticker: Some(ticker) }
    }

    /// Stops and erases the bar.
    pub(crate) fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
