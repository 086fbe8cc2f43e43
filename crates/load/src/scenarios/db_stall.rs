//! `db-stall`: posts at a steady rate (each one a store call, which a server started with
//! a slow store, `--db slow:MILLIS:PATH`, makes take that long) while `GET /healthz`
//! probes go out at a steady rate on other connections. The probes touch no store: their
//! p99 shows whether waiting on the store holds up unrelated requests — it should not
//! with `--db-mode offload`, and does with `--db-mode inline` ("if you block while
//! talking to a database, you block all the requests").

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::client::http::{get, post_json};
use crate::progress::Progress;

use super::requests::{run_loops, LoopSpec};
use super::{Ctx, DbStallConfig, Findings};

pub(crate) async fn run(ctx: &Ctx, config: &DbStallConfig) -> Findings {
    let room = ctx.room(&config.room);
    let answered = Arc::new(AtomicU64::new(0));
    let progress =
        Progress::start(ctx.config.progress, "db-stall", Arc::clone(&answered), "req", None, ctx.config.duration);
    let probes = LoopSpec {
        name: "healthz",
        request: get("/healthz", &ctx.host).into(),
        expect: 200,
        connections: config.connections,
        limit: None,
        rate: Some(config.probe_rate),
    };
    let body = serde_json::json!({"body": "db-stall", "from": "c10k-load"}).to_string();
    let posts = LoopSpec {
        name: "post",
        request: post_json(&format!("/api/rooms/{room}/messages"), &ctx.host, &body).into(),
        expect: 201,
        connections: config.posters,
        limit: None,
        rate: Some(config.post_rate),
    };
    let began = Instant::now();
    let (healthz, posted) =
        tokio::join!(run_loops(ctx, probes, Arc::clone(&answered)), run_loops(ctx, posts, answered));
    progress.finish();
    Findings { measured: began.elapsed(), requests: vec![healthz, posted], ..Findings::default() }
}
