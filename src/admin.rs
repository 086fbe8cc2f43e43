//! The binary's side of the admin view: the log layer that keeps this process's warnings
//! and errors for `GET /api/admin`, and `c10k admin`, which prints that view.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use c10k_core::chat::admin::{ErrorLog, LoggedError};
use clap::Args;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// This process's warnings and errors (the log writes them, the admin view reads them).
pub static ERRORS: OnceLock<Arc<ErrorLog>> = OnceLock::new();

/// A log layer that keeps every warning and error in [`ERRORS`].
pub struct KeepErrors;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for KeepErrors {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        let level = match *metadata.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARN",
            _ => return,
        };
        let Some(errors) = ERRORS.get() else { return };
        let mut text = Text::default();
        event.record(&mut text);
        let time_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        errors.push(LoggedError { time_ms, level, target: metadata.target().to_string(), message: text.0 });
    }
}

/// An event's message, then its other fields as `name=value`.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let fields = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            if !fields.is_empty() {
                self.0.push(' ');
                self.0.push_str(&fields);
            }
        } else {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The server, as `c10k serve` prints it (`http://127.0.0.1:8888/`); any node of a
    /// cluster shows them all.
    #[arg(long, default_value = "http://127.0.0.1:8888/", value_name = "URL")]
    url: String,
    /// The server's --admin-token (or C10K_ADMIN_TOKEN).
    #[arg(long, env = "C10K_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Print the view as JSON (what GET /api/admin answers), for scripts.
    #[arg(long)]
    json: bool,
}

/// `c10k admin`: the view, printed as tables or as JSON.
pub fn run(args: &AdminArgs) -> Result<String, String> {
    let view = fetch(&args.url, &args.admin_token)?;
    if args.json {
        return serde_json::to_string_pretty(&view).map_err(|e| e.to_string());
    }
    Ok(tables(&view))
}

/// `GET /api/admin` on the server at `url` (plain HTTP), as JSON.
fn fetch(url: &str, token: &str) -> Result<Value, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("--url {url}: give the server's http:// URL, as `c10k serve` prints it"))?;
    let host = rest.split('/').next().unwrap_or(rest);
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("--url {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {url}: {host} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("cannot connect to {host}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let request = format!("GET /api/admin HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send to {host}: {e}"))?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| format!("no answer from {host}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{host} answered no HTTP"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let json: Value = serde_json::from_str(body).map_err(|e| format!("{host} answered {status} with no JSON ({e})"))?;
    match status {
        "200" => Ok(json),
        _ => Err(format!("{host} answered {status}: {}", json["error"].as_str().unwrap_or(body))),
    }
}

/// The view as text tables.
fn tables(view: &Value) -> String {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut rows = vec![["node", "pid", "model", "store", "conns", "ws", "sse", "poll", "rooms", "bus", "errors"].map(String::from).to_vec()];
    for n in list(&view["nodes"]) {
        let bus = match (&n["bus"]["outage"], n["bus"]["connected"].as_bool()) {
            (Value::String(why), _) => format!("down: {why}"),
            (_, Some(true)) => "connected".into(),
            _ => "none".into(),
        };
        rows.push(vec![
            cell(&n["node"]),
            cell(&n["pid"]),
            cell(&n["model"]),
            cell(&n["store"]),
            cell(&n["connections"]),
            cell(&n["subscribers"]["ws"]),
            cell(&n["subscribers"]["sse"]),
            cell(&n["subscribers"]["longpoll"]),
            cell(&n["rooms"]),
            bus,
            cell(&n["errors"]),
        ]);
    }
    let mut out = format!("nodes ({}):\n{}", rows.len() - 1, aligned(&rows));
    let mut rows = vec![["room", "last id", "users", "conns", "msgs/min", "private"].map(String::from).to_vec()];
    for r in list(&view["rooms"]) {
        let private = if r["private"].as_bool() == Some(true) { "yes" } else { "" };
        rows.push(vec![cell(&r["room"]), cell(&r["last_id"]), cell(&r["users"]), cell(&r["connections"]), cell(&r["messages_last_minute"]), private.into()]);
    }
    out.push_str(&format!("\nrooms ({}):\n{}", rows.len() - 1, aligned(&rows)));
    let errors = list(&view["errors"]);
    out.push_str(&format!("\nlast errors of this node ({}):\n", errors.len()));
    for e in errors.iter().take(10) {
        let at = e["time"].as_u64().map_or_else(String::new, |ms| {
            c10k_core::http::http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms))
        });
        out.push_str(&format!("  {at} {} {}: {}\n", cell(&e["level"]), cell(&e["target"]), cell(&e["message"])));
    }
    out
}

fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        out.push_str("  ");
        for (c, text) in row.iter().enumerate() {
            out.push_str(text);
            if c + 1 < row.len() {
                out.push_str(&" ".repeat(widths[c] - text.chars().count() + 2));
            }
        }
        out.push('\n');
    }
    out
}
