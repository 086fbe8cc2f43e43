//! The chat page and its assets, embedded in the binary (no build step, nothing fetched
//! from outside the machine). `index.html` is a template with three holes: `{{XSRF}}` (the
//! masked token, for the no-JavaScript form), `{{EPOCH}}` (the store's epoch, which the
//! script gives back when it resumes; empty for a store that keeps none) and `{{MESSAGES}}`
//! (room `main`'s cached messages as Tornado's HTML fragments, so the page shows history
//! before any script runs).

use std::sync::Arc;

use super::render::{escape_html, linkify, Rendered};
use crate::store::Message;
use crate::http::{Response, StatusCode};

const INDEX_HTML: &str = include_str!("../../../../web/index.html");
/// The page's script.
pub(crate) const CHAT_JS: (&str, &str) = (include_str!("../../../../web/chat.js"), "application/javascript; charset=utf-8");
/// The admin page's script.
pub(crate) const ADMIN_JS: (&str, &str) = (include_str!("../../../../web/admin.js"), "application/javascript; charset=utf-8");
const ADMIN_HTML: &str = include_str!("../../../../web/admin.html");

/// The admin page (`GET /admin`): static, with the same policy as the chat page.
pub(crate) fn admin() -> Response {
    Response::with_body(StatusCode::OK, "text/html; charset=UTF-8", ADMIN_HTML)
        .header("Cache-Control", "no-store")
        .header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "same-origin")
}

/// The page's style sheet.
pub(crate) const CHAT_CSS: (&str, &str) = (include_str!("../../../../web/chat.css"), "text/css; charset=utf-8");

/// Renders the page with a masked XSRF token, the store's epoch and the cached messages.
pub(crate) fn render(masked_token: &str, epoch: Option<&str>, messages: &[Arc<Rendered>]) -> Response {
    // One wrapper around them, so that without JavaScript the style sheet can open the
    // list scrolled to its end (a reversed flex column of one child); none when empty, so
    // that the box is `:empty` and says so.
    let mut html = String::new();
    if !messages.is_empty() {
        html.push_str("<div class=\"history\">\n");
        for m in messages {
            html.push_str(&message_html(&m.message));
        }
        html.push_str("</div>");
    }
    let page = INDEX_HTML
        .replacen("{{XSRF}}", &escape_html(masked_token), 1)
        .replacen("{{EPOCH}}", &escape_html(epoch.unwrap_or_default()), 1)
        .replacen("{{MESSAGES}}", &html, 1);
    Response::with_body(StatusCode::OK, "text/html; charset=UTF-8", page)
        .header("Cache-Control", "no-store")
        .header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "same-origin")
}

/// What the page may load and run: its own script and style sheet and nothing inline (a
/// message that slipped through escaping still could not run), its data: icon, requests
/// to this server only (`'self'` covers `ws:` to the same host, CSP Level 3), forms posted
/// here only, and no framing (clickjacking).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A static asset: (content, content type).
pub(crate) fn asset((content, content_type): (&'static str, &'static str)) -> Response {
    Response::with_body(StatusCode::OK, content_type, content.as_bytes().to_vec())
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff")
}

/// A message as the page shows it before any script runs: sender, time (UTC) and body,
/// in the shape chat.js renders (`.message` > `.meta` > `.from`, `time`; `.body`), with the
/// id Tornado's client looks for (`m17`). Body and sender get `dir="auto"`, so that
/// right-to-left text is laid out as such.
fn message_html(m: &Message) -> String {
    let from = if m.from.is_empty() { "anonymous" } else { m.from.as_str() };
    let (date, time, seconds) = utc(m.time_ms);
    format!(
        "<div class=\"message\" id=\"m{id}\"><div class=\"meta\"><span class=\"from\" dir=\"auto\">{from}</span> \
         <time datetime=\"{date}T{time}:{seconds:02}Z\">{date} {time} UTC</time></div>\
         <p class=\"body\" dir=\"auto\">{body}</p></div>\n",
        id = m.id,
        from = escape_html(from),
        body = linkify(&m.body),
    )
}

/// `(YYYY-MM-DD, HH:MM, seconds)` of a time in milliseconds since the Unix epoch, in UTC
/// (the proleptic Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn utc(time_ms: u64) -> (String, String, u64) {
    let secs = time_ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), format!("{:02}:{:02}", rest / 3600, rest % 3600 / 60), rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MessageId, RoomId};

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00".into(), 0));
        assert_eq!(utc(951_782_400_000), ("2000-02-29".into(), "00:00".into(), 0));
        assert_eq!(utc(1_764_140_000_000), ("2025-11-26".into(), "06:53".into(), 20));
    }

    #[test]
    fn a_message_shows_its_sender_time_and_escaped_body() {
        let m = Message {
            id: MessageId(3),
            room: RoomId::main(),
            body: "<b>hi</b> http://a.example".into(),
            from: "ann & bob".into(),
            time_ms: 1_764_140_000_000,
        };
        assert_eq!(
            message_html(&m),
            "<div class=\"message\" id=\"m3\"><div class=\"meta\"><span class=\"from\" dir=\"auto\">ann &amp; bob</span> \
             <time datetime=\"2025-11-26T06:53:20Z\">2025-11-26 06:53 UTC</time></div><p class=\"body\" dir=\"auto\">\
             &lt;b&gt;hi&lt;/b&gt; <a href=\"http://a.example\">http://a.example</a></p></div>\n"
        );
        let anonymous = Message { from: String::new(), ..m };
        assert!(message_html(&anonymous).contains("<span class=\"from\" dir=\"auto\">anonymous</span>"));
    }
}
