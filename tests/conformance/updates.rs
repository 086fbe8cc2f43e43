//! `POST /a/message/updates`: the Tornado long-poll of room `main`.

use std::time::Duration;

use crate::support::*;

/// Long enough for a server to answer a poll it should not have answered; a correct
/// server never fails this check, however slow the machine.
const QUIET: Duration = Duration::from_millis(500);

/// Without a cursor: every cached message, oldest first, exactly as each post answered.
pub fn without_a_cursor_answer_the_whole_cache(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    let posted: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| tornado_post(port, &xsrf, b))
        .collect();

    let reply = updates_request(&xsrf, None).send(port);
    assert_eq!(updates_messages(&reply), posted, "{reply}");
}

/// With the id of an older message as cursor: only the messages after it.
pub fn with_a_cursor_answer_only_the_messages_after_it(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    let posted: Vec<Value> = ["one", "two", "three"]
        .iter()
        .map(|b| tornado_post(port, &xsrf, b))
        .collect();

    let reply = updates_request(&xsrf, Some("1")).send(port);
    assert_eq!(updates_messages(&reply), posted[1..], "{reply}");
}

/// With a cursor the cache does not hold: the whole cache (the client starts over).
pub fn with_an_unknown_cursor_answer_the_whole_cache(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    let posted: Vec<Value> = ["one", "two"]
        .iter()
        .map(|b| tornado_post(port, &xsrf, b))
        .collect();

    for cursor in ["999", "not-an-id", "0"] {
        let reply = updates_request(&xsrf, Some(cursor)).send(port);
        assert_eq!(
            updates_messages(&reply),
            posted,
            "cursor {cursor:?}:\n{reply}"
        );
    }
}

/// With the newest id as cursor there is nothing to send: the poll waits, and answers
/// with the next message as soon as another client posts it.
pub fn with_the_newest_cursor_wait_for_the_next_post(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    tornado_post(port, &xsrf, "before");

    let mut poll = start_request(port, &updates_request(&xsrf, Some("1")));
    poll.expect_no_response_within(QUIET, "a poll with the newest id as cursor must wait");

    let someone_else = Xsrf::fetch(port);
    let posted = tornado_post(port, &someone_else, "after");
    let reply = poll.read_response();
    assert_eq!(updates_messages(&reply), [posted], "{reply}");
}

/// On an empty cache without a cursor the list is empty too: the poll waits for the
/// first message.
pub fn on_an_empty_cache_wait_for_the_first_post(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);

    let mut poll = start_request(port, &updates_request(&xsrf, None));
    poll.expect_no_response_within(QUIET, "a poll on an empty cache must wait");

    let posted = tornado_post(port, &xsrf, "first");
    let reply = poll.read_response();
    assert_eq!(updates_messages(&reply), [posted], "{reply}");
}

/// After the long-poll wait (here `--longpoll-wait 1`) with nothing to send, the answer is
/// exactly `{}`: never `{"messages": []}`, on which Tornado's chat.js would throw and
/// back off for good.
pub fn time_out_with_exactly_an_empty_object(model: Model) {
    let server = Server::start_with_longpoll_wait(model, 1);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    tornado_post(port, &xsrf, "only");

    let reply = updates_request(&xsrf, Some("1")).send(port);
    reply.assert_status(200);
    assert_eq!(reply.text(), "{}", "{reply}");
}

/// A poller that disconnects while waiting is forgotten: later posts succeed and reach
/// the pollers still there.
pub fn a_poller_that_disconnects_does_not_break_later_posts(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);
    tornado_post(port, &xsrf, "first");

    for _ in 0..3 {
        let mut gone = start_request(port, &updates_request(&xsrf, Some("1")));
        gone.expect_no_response_within(QUIET / 5, "a poll with the newest id as cursor must wait");
        gone.shutdown();
    }
    let mut staying = start_request(port, &updates_request(&xsrf, Some("1")));
    staying.expect_no_response_within(QUIET, "a poll with the newest id as cursor must wait");

    let second = tornado_post(port, &xsrf, "second");
    assert_eq!(updates_messages(&staying.read_response()), [second]);

    let third = tornado_post(port, &xsrf, "third");
    let reply = updates_request(&xsrf, Some("2")).send(port);
    assert_eq!(updates_messages(&reply), [third], "{reply}");
}

/// The long-poll is a POST like any other: without a valid XSRF token it is 403.
pub fn require_the_xsrf_token(model: Model) {
    let server = Server::start(model);
    let port = server.port();
    let xsrf = Xsrf::fetch(port);

    let without_token = Request::post("/a/message/updates")
        .cookie(&xsrf.cookie_header())
        .form(&[]);
    without_token.send(port).assert_status(403);
    let without_cookie = Request::post("/a/message/updates").form(&[("_xsrf", &xsrf.field)]);
    without_cookie.send(port).assert_status(403);
}
