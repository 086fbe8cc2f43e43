//! `POST /a/message/new`: the Tornado route that posts to room `main`, its XSRF check, its
//! `next` redirect, and the message it answers with.

use crate::support::xsrf::{hex, mask_token};
use crate::support::*;

const NEW: &str = "/a/message/new";

/// Room `main` holds nothing yet: what a refused post must leave behind.
fn assert_nothing_stored(port: u16) {
    let messages = api_messages(port, "main", "");
    assert_eq!(
        messages["last_id"], 0,
        "a refused post must not be stored: {messages}"
    );
}

/// A post without a `body` field is 400 (its XSRF token is fine).
pub fn without_a_body_is_400(model: Model) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let reply = Request::post(NEW)
        .cookie(&xsrf.cookie_header())
        .form(&[("_xsrf", &xsrf.field)])
        .send(server.port());
    reply.assert_status(400);
    assert_nothing_stored(server.port());
}

/// Without the token (in field or header), or without the cookie, the post is 403 and
/// nothing is stored.
pub fn without_the_xsrf_token_or_cookie_is_403(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);

    let no_token = Request::post(NEW)
        .cookie(&xsrf.cookie_header())
        .form(&[("body", "hi")]);
    let no_cookie = Request::post(NEW).form(&[("body", "hi"), ("_xsrf", &xsrf.field)]);
    let neither = Request::post(NEW).form(&[("body", "hi")]);
    for request in [no_token, no_cookie, neither] {
        request.send(port).assert_status(403);
    }
    assert_nothing_stored(port);
}

/// A token that unmasks to another token than the cookie's, or that is no token at all,
/// is 403 and nothing is stored.
pub fn with_a_wrong_xsrf_token_is_403(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let cookie = Xsrf::own(&[1; 16]).cookie_header();

    let other_token_masked = mask_token(&[2; 16], &[9, 8, 7, 6], 1_764_140_000);
    let other_token_plain = hex(&[2; 16]);
    for field in [
        other_token_masked.as_str(),
        &other_token_plain,
        "nonsense",
        "2|zz|zz|1",
        "",
    ] {
        let reply = Request::post(NEW)
            .cookie(&cookie)
            .form(&[("body", "hi"), ("_xsrf", field)])
            .send(port);
        assert_eq!(
            reply.status, 403,
            "_xsrf={field:?} with the cookie of another token:\n{reply}"
        );
    }
    // A header with the wrong token is refused just the same.
    let reply = Request::post(NEW)
        .cookie(&cookie)
        .header("X-Xsrftoken", &other_token_masked)
        .form(&[("body", "hi")])
        .send(port);
    reply.assert_status(403);
    assert_nothing_stored(port);
}

/// The masked token of the page's hidden input, sent back as the `_xsrf` field, is
/// accepted: 200, and the message is stored.
pub fn accepts_the_masked_token_in_the_xsrf_field(model: Model) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    assert!(
        xsrf.field.starts_with("2|"),
        "the page's token should be masked: {:?}",
        xsrf.field
    );
    let message = tornado_post(server.port(), &xsrf, "hello");
    assert_eq!(message["body"], "hello", "{message}");
}

/// The token may come in the `X-Xsrftoken` header instead of the field.
pub fn accepts_the_token_in_the_x_xsrftoken_header(model: Model) {
    accepts_the_token_in_a_header(model, "X-Xsrftoken");
}

/// ...or in the `X-Csrftoken` header.
pub fn accepts_the_token_in_the_x_csrftoken_header(model: Model) {
    accepts_the_token_in_a_header(model, "X-Csrftoken");
}

fn accepts_the_token_in_a_header(model: Model, header: &str) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let reply = Request::post(NEW)
        .cookie(&xsrf.cookie_header())
        .header(header, &xsrf.field)
        .form(&[("body", "by header")])
        .send(server.port());
    reply.assert_status(200);
    assert_eq!(reply.json()["body"], "by header", "{reply}");
}

/// The plain hex form of the token (Tornado's version 1) is accepted in the field.
pub fn accepts_the_plain_hex_token(model: Model) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let plain = Xsrf {
        cookie: xsrf.cookie.clone(),
        field: hex(&xsrf.token()),
    };
    let message = tornado_post(server.port(), &plain, "plain");
    assert_eq!(message["body"], "plain", "{message}");
}

/// The server checks tokens by unmasking, not by remembering what it handed out: a
/// cookie the browser chose (plain hex) with a copy the client masked itself is accepted.
pub fn accepts_a_token_the_client_masked_itself(model: Model) {
    let server = Server::start(model);
    let own = Xsrf::own(&[0x42; 16]);
    let message = tornado_post(server.port(), &own, "own token");
    assert_eq!(message["body"], "own token", "{message}");
}

/// With a local `next`, the answer is a 302 to it, and the message is stored.
pub fn with_a_local_next_redirects_with_302(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    for next in ["/", "/?room=main#bottom"] {
        let reply = Request::post(NEW)
            .cookie(&xsrf.cookie_header())
            .form(&[("body", "hi"), ("_xsrf", &xsrf.field), ("next", next)])
            .send(port);
        reply.assert_status(302);
        assert_eq!(reply.header("Location"), Some(next), "{reply}");
    }
    assert_eq!(api_messages(port, "main", "")["last_id"], 2);
}

/// `next` must be a local path (the open-redirect guard): `//host` and `/\host` (which
/// browsers read as `//host`), an absolute URL, or a relative path are 400.
pub fn with_a_next_that_is_not_a_local_path_is_400(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    for next in [
        "//evil.example",
        "//evil.example/",
        "/\\evil.example",
        "http://evil.example/",
        "evil",
    ] {
        let reply = Request::post(NEW)
            .cookie(&xsrf.cookie_header())
            .form(&[("body", "hi"), ("_xsrf", &xsrf.field), ("next", next)])
            .send(port);
        assert_eq!(reply.status, 400, "next={next:?} must be refused:\n{reply}");
        assert!(
            reply.header("Location").is_none(),
            "next={next:?} must not redirect:\n{reply}"
        );
    }
}

/// Without `next` the answer is the stored message as JSON, exactly
/// `{"id": "1", "body": ..., "html": "<div class=\"message\" id=\"m1\">...</div>\n"}`, with
/// `Content-Type: application/json; charset=UTF-8`. The id is a string.
pub fn answers_the_message_as_json(model: Model) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let reply = tornado_post_request(&xsrf, "hello world").send(server.port());
    reply.assert_status(200);
    assert_eq!(
        reply.header("Content-Type"),
        Some("application/json; charset=UTF-8"),
        "{reply}"
    );
    assert_eq!(
        reply.json(),
        json!({
            "id": "1",
            "body": "hello world",
            "html": "<div class=\"message\" id=\"m1\">hello world</div>\n",
        }),
        "{reply}"
    );
}

/// The body is HTML-escaped in `html`, so `<script>` never reaches the page as a tag; and
/// in the raw JSON every `</` is written `<\/`, so the JSON can sit inside a `<script>`.
pub fn escapes_html_in_the_body_and_lt_slash_in_the_json(model: Model) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let body = "<script>alert(1)</script> & more";
    let reply = tornado_post_request(&xsrf, body).send(server.port());
    reply.assert_status(200);

    let message = reply.json();
    assert_eq!(
        message["body"], body,
        "the body comes back as it was sent: {reply}"
    );
    assert_eq!(
        message["html"],
        "<div class=\"message\" id=\"m1\">&lt;script&gt;alert(1)&lt;/script&gt; &amp; more</div>\n",
        "{reply}"
    );
    let raw = reply.text();
    assert!(
        !raw.contains("</"),
        "the raw JSON must escape every `</` as `<\\/`:\n{raw}"
    );
    assert!(
        raw.contains(r"<\/script>") && raw.contains(r"<\/div>"),
        "{raw}"
    );
}

/// URLs in the body become links in `html` (Tornado's linkify).
pub fn linkifies_urls_in_the_html(model: Model) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let message = tornado_post(server.port(), &xsrf, "see http://example.com/path now");
    assert_eq!(
        message["html"],
        "<div class=\"message\" id=\"m1\">see <a href=\"http://example.com/path\">http://example.com/path</a> now</div>\n",
        "{message}"
    );
}

/// Ids start at 1 and increase by one per message; here they are the strings "1", "2", "3".
pub fn ids_start_at_1_and_increase_by_one(model: Model) {
    let server = Server::start(model);
    let xsrf = Xsrf::fetch(server.port());
    let ids: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|body| tornado_post(server.port(), &xsrf, body)["id"].clone())
        .collect();
    assert_eq!(ids, [json!("1"), json!("2"), json!("3")]);
}
