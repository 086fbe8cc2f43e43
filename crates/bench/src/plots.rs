//! The SVG plots (plotters, SVG backend only: no fonts or system libraries; text is SVG
//! text that the viewer renders). Each plot is drawn from results.json alone; a plot whose
//! suite has not run is not written.
//!
//! Log axes are drawn as log10 of the value on a linear axis, labelled with the value
//! itself, which keeps every chart on one coordinate type.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::results::{CellResult, Results};
use crate::BenchError;

const W: u32 = 960;
const H: u32 = 540;

/// Writes every plot whose data is there into `dir`; returns the files written.
pub fn write_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::Setup(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    let mut go = |name: &str, f: &dyn Fn(&Path) -> Result<bool, String>| -> Result<(), BenchError> {
        let path = dir.join(name);
        match f(&path) {
            Ok(true) => written.push(path),
            Ok(false) => {}
            Err(e) => return Err(BenchError::Setup(format!("cannot draw {}: {e}", path.display()))),
        }
        Ok(())
    };
    go("plaintext_rps.svg", &|p| plaintext(results, p))?;
    go("fanout_latency.svg", &|p| fanout(results, p))?;
    go("memory_per_connection.svg", &|p| memory(results, p))?;
    go("wakeup_cost.svg", &|p| wakeup(results, p))?;
    go("db_stall_p99.svg", &|p| db_stall(results, p))?;
    go("ledger_throughput.svg", &|p| ledger(results, p))?;
    go("most_held.svg", &|p| most_held(results, p))?;
    Ok(written)
}

fn color(i: usize) -> RGBColor {
    // Distinguishable on white, in this order.
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (214, 39, 40),
        (44, 160, 44),
        (255, 127, 14),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

fn e<T: std::fmt::Debug>(err: T) -> String {
    format!("{err:?}")
}

/// A value for an axis label: `1,000`, `10k`, `1.5M`.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// One horizontal bar per row, coloured by group; `log`: log10 axis.
struct Bars {
    title: String,
    x_desc: String,
    rows: Vec<(String, f64, usize)>,
    groups: Vec<String>,
    log: bool,
    fmt: fn(f64) -> String,
}

fn draw_bars(path: &Path, b: &Bars) -> Result<bool, String> {
    let rows: Vec<&(String, f64, usize)> = b.rows.iter().filter(|r| r.1.is_finite() && r.1 > 0.0).collect();
    if rows.is_empty() {
        return Ok(false);
    }
    let t = |v: f64| if b.log { v.max(1e-9).log10() } else { v };
    let max = rows.iter().map(|r| t(r.1)).fold(f64::MIN, f64::max);
    let min = if b.log {
        rows.iter().map(|r| t(r.1)).fold(f64::MAX, f64::min).floor() - 0.3
    } else {
        0.0
    };
    // Room on the right for the value labels and the legend.
    let hi = if b.log { max.ceil() + 1.6 } else { max * 1.3 };
    let height = (H as usize).max(90 + rows.len() * 30) as u32;
    // Wide enough for the longest row label at the 14 px font (about 7 px a character).
    let label_area = rows.iter().map(|r| r.0.chars().count() as u32 * 7 + 16).max().unwrap_or(0).max(190);
    let root = SVGBackend::new(path, (W, height)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let n = rows.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(&b.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(label_area)
        // A segmented range of 0..k has k + 1 segments.
        .build_cartesian_2d(min..hi, (0..n - 1).into_segmented())
        .map_err(e)?;
    let fmt = b.fmt;
    let log = b.log;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(b.x_desc.as_str())
        .x_labels(if log {
            ((hi - min).ceil() as usize + 1).max(2)
        } else {
            8
        })
        .x_label_formatter(&|v| if log { fmt(10f64.powf(*v)) } else { fmt(*v) })
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let c = color(r.2);
            let mut bar = Rectangle::new(
                [(min, SegmentValue::Exact(i)), (t(r.1), SegmentValue::Exact(i + 1))],
                c.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(e)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            Text::new(
                format!(" {}", fmt(r.1)),
                (t(r.1), SegmentValue::CenterOf(i)),
                ("sans-serif", 13).into_font().color(&BLACK),
            )
        }))
        .map_err(e)?;
    if b.groups.len() > 1 {
        for (gi, g) in b.groups.iter().enumerate() {
            let c = color(gi);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(min, SegmentValue::Exact(0)), (min, SegmentValue::Exact(0))],
                    c.filled(),
                )))
                .map_err(e)?
                .label(g.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(true)
}

/// Lines with points, one per series; each axis linear or log10.
struct Lines {
    title: String,
    x_desc: String,
    y_desc: String,
    series: Vec<(String, Vec<(f64, f64)>)>,
    log_x: bool,
    log_y: bool,
    fx: fn(f64) -> String,
    fy: fn(f64) -> String,
    /// A horizontal line with its label (a goal).
    mark_y: Option<(f64, String)>,
}

fn draw_lines(path: &Path, l: &Lines) -> Result<bool, String> {
    let tx = |v: f64| if l.log_x { v.max(1e-9).log10() } else { v };
    let ty = |v: f64| if l.log_y { v.max(1e-9).log10() } else { v };
    let series: Vec<(String, Vec<(f64, f64)>)> = l
        .series
        .iter()
        .map(|(n, pts)| {
            let mut p: Vec<(f64, f64)> = pts
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!l.log_x || *x > 0.0) && (!l.log_y || *y > 0.0))
                .map(|(x, y)| (tx(*x), ty(*y)))
                .collect();
            p.sort_by(|a, b| a.0.total_cmp(&b.0));
            (n.clone(), p)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .chain(l.mark_y.iter().map(|m| (f64::NAN, ty(m.0))))
        .collect();
    let (mut x0, mut x1) = all
        .iter()
        .filter(|p| p.0.is_finite())
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (mut y0, mut y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if l.log_x {
        x0 = x0.floor();
        x1 = x1.ceil().max(x0 + 1.0);
    } else {
        let pad = ((x1 - x0) * 0.05).max(1.0);
        x0 = (x0 - pad).min(0.0);
        x1 += pad;
    }
    if l.log_y {
        y0 = y0.floor();
        y1 = y1.ceil().max(y0 + 1.0);
    } else {
        y0 = 0.0;
        y1 = if y1 > 0.0 { y1 * 1.15 } else { 1.0 };
    }
    let root = SVGBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&l.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let (fx, fy, lx, ly) = (l.fx, l.fy, l.log_x, l.log_y);
    chart
        .configure_mesh()
        .x_desc(l.x_desc.as_str())
        .y_desc(l.y_desc.as_str())
        .x_labels(if lx { (x1 - x0) as usize + 1 } else { 8 })
        .y_labels(if ly { (y1 - y0) as usize + 1 } else { 8 })
        .x_label_formatter(&|v| if lx { fx(10f64.powf(*v)) } else { fx(*v) })
        .y_label_formatter(&|v| if ly { fy(10f64.powf(*v)) } else { fy(*v) })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    if let Some((v, label)) = &l.mark_y {
        let y = ty(*v);
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(vec![(x0, y), (x1, y)], grey.stroke_width(1)))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                (x0, y),
                ("sans-serif", 13).into_font().color(&grey),
            )))
            .map_err(e)?;
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(true)
}

/// Series of a suite's cells: (series name, [(x, metric)]).
fn by_series(
    cells: &[&CellResult],
    metric: &str,
    keep: impl Fn(&CellResult) -> bool,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in cells.iter().filter(|c| keep(c)) {
        let (Some(x), Some(y)) = (c.cell.x, c.median(metric)) else {
            continue;
        };
        match out.iter_mut().find(|s| s.0 == c.cell.series) {
            Some(s) => s.1.push((x, y)),
            None => out.push((c.cell.series.clone(), vec![(x, y)])),
        }
    }
    out
}

fn us_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{} s", trim(v / 1e6))
    } else if v >= 1000.0 {
        format!("{} ms", trim(v / 1000.0))
    } else {
        format!("{} µs", trim(v))
    }
}

fn bytes_label(v: f64) -> String {
    if v >= 1048576.0 {
        format!("{} MiB", trim(v / 1048576.0))
    } else if v >= 1024.0 {
        format!("{} KiB", trim(v / 1024.0))
    } else {
        format!("{v:.0} B")
    }
}

fn plaintext(r: &Results, path: &Path) -> Result<bool, String> {
    // One request in flight per connection, as the title says; the pipelined cells are a
    // different measurement (their table is in RESULTS.md).
    let mut rows: Vec<(String, f64, usize)> = r
        .cells("plaintext")
        .iter()
        .filter(|c| c.cell.pipeline() == 1)
        .filter_map(|c| {
            Some((
                c.cell.series.clone(),
                c.median("rps")?,
                usize::from(c.cell.subject.is_peer()),
            ))
        })
        .collect();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    draw_bars(
        path,
        &Bars {
            title: "plaintext: requests per second (one server core, 64 connections, one request in flight each)".into(),
            x_desc: "requests per second (median)".into(),
            rows,
            groups: vec!["c10k models".into(), "peers".into()],
            log: false,
            fmt: short,
        },
    )
}

fn fanout(r: &Results, path: &Path) -> Result<bool, String> {
    let cells = r.cells("fanout");
    let series = by_series(&cells, "p99_us", |c| !c.cell.id.ends_with("/paced"));
    draw_lines(
        path,
        &Lines {
            title: "long-poll fan-out: p99 delivery latency against subscribers (back-to-back posts)".into(),
            x_desc: "subscribers".into(),
            y_desc: "p99 latency, post to delivery".into(),
            series,
            log_x: true,
            log_y: true,
            fx: short,
            fy: us_label,
            mark_y: Some((30_000.0, " goal: 30 ms (paced, 10,000 subscribers)".into())),
        },
    )
}

fn memory(r: &Results, path: &Path) -> Result<bool, String> {
    let mut cells = r.cells("capacity");
    cells.extend(r.cells("c100k"));
    cells.extend(r.cells("c1m"));
    let series = by_series(&cells, "pss_per_conn_bytes", |c| c.median("held").unwrap_or(0.0) > 0.0);
    // x is what was held, not what was asked: a model that stopped early shows where.
    let series = series
        .into_iter()
        .map(|(n, pts)| {
            let held: Vec<(f64, f64)> = pts
                .iter()
                .map(|(x, y)| {
                    let h = cells
                        .iter()
                        .find(|c| c.cell.series == n && c.cell.x == Some(*x))
                        .and_then(|c| c.median("held"))
                        .unwrap_or(*x);
                    (h, *y)
                })
                .collect();
            (n, held)
        })
        .collect();
    draw_lines(
        path,
        &Lines {
            title: "user-space memory per idle connection (server PSS) against connections held".into(),
            x_desc: "connections held (idle SSE subscribers)".into(),
            y_desc: "PSS per connection".into(),
            series,
            log_x: true,
            log_y: true,
            fx: short,
            fy: bytes_label,
            mark_y: Some((2048.0, " goal: 2 KiB".into())),
        },
    )
}

fn wakeup(r: &Results, path: &Path) -> Result<bool, String> {
    let cells = r.cells("wakeup");
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in &cells {
        let (Some(x), Some(rps)) = (c.cell.x, c.median("rps")) else {
            continue;
        };
        // A poller that could not hold the idle connections has no point there.
        if rps <= 0.0 || c.median("idle_held").unwrap_or(0.0) + 1.0 < x {
            continue;
        }
        let y = 1e6 / rps;
        match series.iter_mut().find(|s| s.0 == c.cell.series) {
            Some(s) => s.1.push((x, y)),
            None => series.push((c.cell.series.clone(), vec![(x, y)])),
        }
    }
    draw_lines(
        path,
        &Lines {
            title: "cost per wake-up: one busy connection's time per request against idle connections".into(),
            x_desc: "idle keep-alive connections in the poller (select stops at 1,024)".into(),
            y_desc: "µs per request".into(),
            series,
            log_x: false,
            log_y: false,
            fx: short,
            fy: |v| format!("{} µs", trim(v)),
            mark_y: None,
        },
    )
}

fn db_stall(r: &Results, path: &Path) -> Result<bool, String> {
    let modes = ["offload", "inline", "native"];
    let rows: Vec<(String, f64, usize)> = r
        .cells("dbstall")
        .iter()
        .filter_map(|c| {
            let mode = c.cell.series.rsplit('/').next()?;
            Some((c.cell.series.clone(), c.median("p99_us")?, modes.iter().position(|m| *m == mode)?))
        })
        .collect();
    draw_bars(
        path,
        &Bars {
            title: "db-stall: p99 of unrelated GET /healthz while posts wait on a slow store".into(),
            x_desc: "healthz p99 (log scale); SQLite sleeping in c10k, or mysql/postgres with a 50 ms query per store call"
                .into(),
            rows,
            groups: vec![
                "offload (store calls on a pool)".into(),
                "inline (on the serving thread)".into(),
                "native (a driver the model awaits, or the connection's own thread)".into(),
            ],
            log: true,
            fmt: us_label,
        },
    )
}

/// The ledger suite: one bar per cell, grouped by model and contention, coloured by
/// strategy, so that each group reads none, giant, fine, atomic, db from the top.
fn ledger(r: &Results, path: &Path) -> Result<bool, String> {
    use crate::matrix::LEDGER_LOCKINGS;
    use crate::report::ledger::{contention, key};
    let cells = r.cells("ledger");
    let mut keyed: Vec<((usize, usize, usize), String, f64)> = cells
        .iter()
        .filter_map(|c| {
            let (model, locking, accounts) = key(c)?;
            let strategy = LEDGER_LOCKINGS.iter().position(|l| *l == locking)?;
            let order = cells.iter().position(|o| key(o).is_some_and(|k| k.0 == model)).unwrap_or(0);
            let p99 = c.median("p99_us").map_or(String::new(), |v| format!(", p99 {}", us_label(v)));
            let label = format!("{model}, {}: {locking}{p99}", contention(accounts));
            Some(((order, accounts, strategy), label, c.median("ops_per_s")?))
        })
        .collect();
    // Bars are drawn bottom-up: the reverse order reads top-down.
    keyed.sort_by_key(|k| std::cmp::Reverse(k.0));
    let rows = keyed.into_iter().map(|((_, _, strategy), label, v)| (label, v, strategy)).collect();
    let connections = cells.iter().find_map(|c| match c.cell.action {
        crate::matrix::Action::Ledger { connections, .. } => Some(connections),
        _ => None,
    });
    draw_bars(
        path,
        &Bars {
            title: "ledger: operations per second per locking strategy, on 2 hot accounts and on 64".into(),
            x_desc: format!(
                "answered operations per second (median), c10k ledger-check with {} connections",
                connections.unwrap_or(0)
            ),
            rows,
            groups: LEDGER_LOCKINGS.iter().map(|l| format!("--locking {l}")).collect(),
            log: false,
            fmt: short,
        },
    )
}

fn most_held(r: &Results, path: &Path) -> Result<bool, String> {
    let mut rows = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for suite in ["capacity", "c100k", "c1m", "idle"] {
        for c in r.cells(suite) {
            if !names.contains(&c.cell.series) {
                names.push(c.cell.series.clone());
            }
        }
    }
    for n in &names {
        let cells: Vec<&CellResult> = ["capacity", "c100k", "c1m", "idle"]
            .iter()
            .flat_map(|s| r.cells(s))
            .filter(|c| &c.cell.series == n)
            .collect();
        let held = cells.iter().filter_map(|c| c.median("held")).fold(0.0, f64::max);
        let threads = cells
            .iter()
            .filter_map(|c| c.median("threads_peak"))
            .fold(0.0, f64::max);
        let procs = cells
            .iter()
            .filter_map(|c| c.median("processes_peak"))
            .fold(0.0, f64::max);
        rows.push((format!("{n}: connections"), held, 0));
        rows.push((format!("{n}: threads"), threads, 1));
        rows.push((format!("{n}: processes"), procs, 2));
    }
    draw_bars(
        path,
        &Bars {
            title: "the most connections held, and the threads and processes it took".into(),
            x_desc: "count (log scale), across the idle, capacity, c100k and c1m suites".into(),
            rows,
            groups: vec![
                "connections held".into(),
                "threads (peak)".into(),
                "processes (peak)".into(),
            ],
            log: true,
            fmt: short,
        },
    )
}
