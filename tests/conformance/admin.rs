//! The admin view (`--admin-token`; crates/core/src/chat/admin.rs), the same on every
//! model: refused without the admin token, and with it the nodes (every worker process,
//! each telling the others over the relay), the rooms with their members and message
//! rates, and the last errors.

use std::time::{Duration, Instant};

use crate::support::*;

const ADMIN: &str = "an-admin-token-for-tests";

fn admin_view(port: u16) -> Response {
    Request::get("/api/admin").header("Authorization", &format!("Bearer {ADMIN}")).send(port)
}

/// Without the token or with another, 401 with a Bearer challenge; with it, the view lists
/// this server's processes (the model it runs, their connections), room `ops` with its one
/// member, its newest id and the message of the last minute, and an errors list; the page
/// at `/admin` is served with the chat page's strict policy.
pub fn the_admin_view_shows_the_nodes_and_rooms_to_the_admin_token_only(model: Model) {
    let server = Server::start_with_args(model, &["--admin-token", ADMIN]);
    let port = server.port();
    for (what, request) in [
        ("no token", Request::get("/api/admin")),
        ("another token", Request::get("/api/admin").header("Authorization", "Bearer not-the-admin-token")),
        ("a chat token's query form", Request::get(&format!("/api/admin?access_token={ADMIN}"))),
    ] {
        let refused = request.send(port);
        assert_eq!(refused.status, 401, "{what}:\n{refused}");
        assert_eq!(refused.header("WWW-Authenticate"), Some("Bearer realm=\"c10k-admin\""), "{refused}");
    }

    api_post(port, "ops", "hello ops");
    let mut member = Ws::connect(port, "/api/rooms/ops/ws?nick=operator");
    assert_eq!(member.next_message()["body"], "hello ops");
    let processes = workers_of(model).unwrap_or(1);
    let name = model[model.iter().position(|a| *a == "--model").expect("a --model") + 1];
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let response = admin_view(port);
        assert_eq!(response.status, 200, "{response}");
        let view = response.json();
        let ops = view["rooms"].as_array().expect("rooms").iter().find(|r| r["room"] == "ops").cloned();
        let nodes = view["nodes"].as_array().expect("nodes");
        // The member's WebSocket, counted on its node (another's summary is up to 5 s old).
        let ws: u64 = nodes.iter().map(|n| n["subscribers"]["ws"].as_u64().unwrap_or(0)).sum();
        if nodes.len() == processes && ws >= 1 && ops.as_ref().is_some_and(|ops| ops["users"] == 1) {
            break view;
        }
        assert!(Instant::now() < deadline, "the view did not show {processes} nodes, the member's WebSocket and room ops with its member: {view:#}");
        // Paced by the server: a presence change, or 2 s.
        let seen = api_messages(port, "ops", "?presence=0")["presence"]["version"].as_u64().unwrap_or(0);
        api_messages(port, "ops", &format!("?after=1&wait=2&presence={seen}"));
    };
    for node in view["nodes"].as_array().unwrap() {
        assert_eq!(node["model"], name, "{node}");
        assert!(node["pid"].as_u64().is_some() && node["node"].as_str().is_some_and(|n| !n.is_empty()), "{node}");
    }
    let ops = view["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "ops").unwrap();
    assert_eq!((ops["last_id"].as_u64(), ops["messages_last_minute"].as_u64()), (Some(1), Some(1)), "{ops}");
    assert!(view["errors"].is_array(), "{view}");

    let page = get(port, "/admin");
    assert_eq!(page.status, 200, "{page}");
    assert!(page.header("Content-Security-Policy").is_some_and(|c| c.contains("script-src 'self'")), "{page}");
    assert!(page.text().contains("/static/admin.js"), "{page}");
}
