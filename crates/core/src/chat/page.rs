//! The chat page and its assets, embedded in the binary (no build step, nothing fetched
//! from outside the machine). `index.html` is a template with two holes: `{{XSRF}}` (the
//! masked token, for the no-JavaScript form) and `{{MESSAGES}}` (room `main`'s cached
//! messages as Tornado's HTML fragments, so the page shows history before any script runs).

use std::sync::Arc;

use super::render::{escape_html, Rendered};
use crate::http::{Response, StatusCode};

const INDEX_HTML: &str = include_str!("../../../../web/index.html");
/// The page's script.
pub(crate) const CHAT_JS: (&str, &str) = (include_str!("../../../../web/chat.js"), "application/javascript; charset=utf-8");
/// The page's style sheet.
pub(crate) const CHAT_CSS: (&str, &str) = (include_str!("../../../../web/chat.css"), "text/css; charset=utf-8");

/// Renders the page with a masked XSRF token and the cached messages.
pub(crate) fn render(masked_token: &str, messages: &[Arc<Rendered>]) -> Response {
    let html: String = messages.iter().map(|m| m.html.as_str()).collect();
    let page = INDEX_HTML.replacen("{{XSRF}}", &escape_html(masked_token), 1).replacen("{{MESSAGES}}", &html, 1);
    Response::with_body(StatusCode::OK, "text/html; charset=UTF-8", page).header("Cache-Control", "no-store")
}

/// A static asset: (content, content type).
pub(crate) fn asset((content, content_type): (&'static str, &'static str)) -> Response {
    Response::with_body(StatusCode::OK, content_type, content.as_bytes().to_vec()).header("Cache-Control", "no-cache")
}
