//! `plaintext`: keep-alive `GET /plaintext` (`Hello, World!`) on a fixed number of
//! connections, back to back: the raw request rate of a model, and its latency.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::client::http::get;
use crate::progress::Progress;

use super::requests::{run_loops, LoopSpec};
use super::{Ctx, Findings, PlaintextConfig};

pub(crate) async fn run(ctx: &Ctx, config: &PlaintextConfig) -> Findings {
    let answered = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        ctx.config.progress,
        "plaintext",
        Arc::clone(&answered),
        "req",
        config.requests,
        ctx.config.duration,
    );
    let spec = LoopSpec {
        name: "plaintext",
        request: get("/plaintext", &ctx.host).into(),
        expect: 200,
        connections: config.connections,
        limit: config.requests,
        rate: None,
    };
    let began = Instant::now();
    let stats = run_loops(ctx, spec, answered).await;
    progress.finish();
    Findings { measured: began.elapsed(), requests: vec![stats], ..Findings::default() }
}
