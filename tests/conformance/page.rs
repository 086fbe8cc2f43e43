//! `GET /`: the chat page of room `main`, and the XSRF cookie it hands out.

use crate::support::xsrf::{decode_token, hidden_xsrf_input, xsrf_set_cookie};
use crate::support::*;

/// The page carries a masked token in a hidden input and sets the `_xsrf` cookie with
/// `Path=/; SameSite=Lax` but without `HttpOnly`, because Tornado's chat.js reads it from
/// `document.cookie`. Both unmask to the same token.
pub fn has_a_hidden_xsrf_input_and_sets_a_script_readable_cookie(model: Model) {
    let server = Server::start(model);
    let page = get(server.port(), "/");
    page.assert_status(200);
    assert!(
        page.content_type().starts_with("text/html"),
        "the page must be HTML:\n{page}"
    );

    let field = hidden_xsrf_input(&page.text())
        .unwrap_or_else(|| panic!("no <input type=\"hidden\" name=\"_xsrf\" value=...>:\n{page}"));
    let cookie =
        xsrf_set_cookie(&page).unwrap_or_else(|| panic!("no Set-Cookie: _xsrf=...:\n{page}"));
    assert_eq!(
        cookie.attribute("path"),
        Some("/"),
        "Set-Cookie: {}",
        cookie.raw
    );
    assert!(
        cookie
            .attribute("samesite")
            .is_some_and(|v| v.eq_ignore_ascii_case("lax")),
        "the cookie must be SameSite=Lax: {}",
        cookie.raw
    );
    assert!(
        cookie.attribute("httponly").is_none(),
        "the page's script must be able to read the cookie (no HttpOnly): {}",
        cookie.raw
    );
    let token = decode_token(&cookie.value)
        .unwrap_or_else(|| panic!("the cookie's value is not a token: {}", cookie.raw));
    assert_eq!(
        decode_token(&field),
        Some(token),
        "the hidden input {field:?} must unmask to the cookie's token ({:?})",
        cookie.value
    );
}

/// A browser that already has an `_xsrf` cookie keeps it: the page's hidden input holds
/// that cookie's token, and no new cookie is set.
pub fn keeps_the_xsrf_cookie_a_browser_already_has(model: Model) {
    let server = Server::start(model);
    let own = Xsrf::own(&[7; 16]);
    let page = Request::get("/")
        .cookie(&own.cookie_header())
        .send(server.port());
    page.assert_status(200);

    let field =
        hidden_xsrf_input(&page.text()).unwrap_or_else(|| panic!("no hidden _xsrf input:\n{page}"));
    assert_eq!(
        decode_token(&field),
        Some(vec![7; 16]),
        "the hidden input {field:?} must carry the token of the browser's cookie"
    );
    assert!(
        xsrf_set_cookie(&page).is_none(),
        "the cookie is set only when the request has none:\n{page}"
    );
}

/// Messages posted before the page is loaded are on it, oldest first, each with its id
/// (`m17`, as Tornado's client looks for), its sender (`anonymous` when none), its time
/// (UTC, and machine-readable in `datetime`) and its body, escaped and linkified; a
/// message posted through the native API to room `main` is among them.
pub fn shows_the_messages_posted_before_it_was_loaded(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    tornado_post(port, &xsrf, "first <b>message</b>");
    let second = Request::post("/api/rooms/main/messages")
        .json(&json!({"body": "second, see http://a.example", "from": "ann"}))
        .send(port)
        .json();

    let page = Request::get("/").cookie(&xsrf.cookie_header()).send(port);
    page.assert_status(200);
    let html = page.text();
    let first_html = r#"<div class="message" id="m1"><div class="meta"><span class="from" dir="auto">anonymous</span> "#;
    let first_at = html
        .find(first_html)
        .unwrap_or_else(|| panic!("the page must contain {first_html:?}:\n{page}"));
    assert!(html[first_at..].contains(r#"<p class="body" dir="auto">first &lt;b&gt;message&lt;/b&gt;</p>"#), "{page}");
    let time = second["time"].as_u64().unwrap() / 1000;
    let second_html = format!(
        r#"<div class="message" id="m2"><div class="meta"><span class="from" dir="auto">ann</span> <time datetime="{}"#,
        utc_date(time)
    );
    let second_at = html
        .find(&second_html)
        .unwrap_or_else(|| panic!("the page must contain {second_html:?}:\n{page}"));
    assert!(html[second_at..].contains(r#"second, see <a href="http://a.example">http://a.example</a></p>"#), "{page}");
    assert!(first_at < second_at, "messages must be oldest first:\n{page}");
}

/// `YYYY-MM-DD` (UTC) of seconds since the epoch, counted the slow, obvious way.
fn utc_date(secs: u64) -> String {
    let mut days = secs / 86_400;
    let mut year = 1970;
    // `%`, not is_multiple_of: the README promises Rust 1.80, which has no is_multiple_of.
    #[allow(clippy::manual_is_multiple_of)]
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [31, if leap(year) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    format!("{year:04}-{:02}-{:02}", month + 1, days + 1)
}
