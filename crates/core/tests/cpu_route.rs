//! `GET /cpu?cost=N`, the CPU-bound route of the benchmark's `cpu` scenario: it answers
//! the same hex digest for the same cost, refuses costs past its bound, and allows GET only.

use std::time::Instant;

use c10k_core::chat::{cpu_work, App, Config, Now, Outcome, MAX_CPU_COST};
use c10k_core::http::{Headers, Method, Request, Response};

fn get(app: &App, method: Method, target: &str) -> Response {
    let request = Request {
        method,
        target: target.to_string(),
        version_minor: 1,
        headers: Headers::new(),
        body: Vec::new(),
        keep_alive: true,
        peer: None,
    };
    match app.handle_request(request, Now { instant: Instant::now(), unix_ms: 0 }) {
        Outcome::Reply(response) => response,
        other => panic!("{target}: expected a reply, got {other:?}"),
    }
}

fn text(response: &Response) -> String {
    let mut out = Vec::new();
    response.encode_head("Thu, 01 Jan 1970 00:00:00 GMT", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_digest_depends_on_the_cost_only() {
    assert_eq!(cpu_work(1000), cpu_work(1000));
    assert_ne!(cpu_work(1000), cpu_work(1001));
    assert_ne!(cpu_work(0), cpu_work(1));
}

#[test]
fn get_cpu_answers_sixteen_hex_digits() {
    let app = App::new(Config::with_seed([7; 32]));
    let response = get(&app, Method::Get, "/cpu?cost=5000");
    let head = text(&response);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(response.body, format!("{:016x}\n", cpu_work(5000)).into_bytes());
    // No cost: the default of 1000 rounds.
    assert_eq!(get(&app, Method::Get, "/cpu").body, format!("{:016x}\n", cpu_work(1000)).into_bytes());
}

#[test]
fn a_cost_past_the_bound_or_not_a_number_is_400() {
    let app = App::new(Config::with_seed([7; 32]));
    for target in [format!("/cpu?cost={}", MAX_CPU_COST + 1), "/cpu?cost=-1".into(), "/cpu?cost=lots".into()] {
        let head = text(&get(&app, Method::Get, &target));
        assert!(head.starts_with("HTTP/1.1 400"), "{target}: {head}");
    }
}

#[test]
fn post_cpu_is_405() {
    let app = App::new(Config::with_seed([7; 32]));
    let head = text(&get(&app, Method::Post, "/cpu"));
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
}
