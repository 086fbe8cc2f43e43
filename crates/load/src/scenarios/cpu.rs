//! `cpu`: `GET /cpu?cost=N` (N rounds of a hash on the server) on some connections, mixed
//! with `GET /plaintext` on others. A model that runs handlers on few threads without
//! preemption (reactor, green, async on one core) makes the plaintext requests wait for
//! the hashing; a thread per connection shares the CPU out. Compare plaintext's latency
//! here with the `plaintext` scenario alone.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use crate::client::http::get;
use crate::progress::Progress;

use super::requests::{plaintext_loops, run_loops, LoopSpec};
use super::{CpuConfig, Ctx, Findings};

pub(crate) async fn run(ctx: &Ctx, config: &CpuConfig) -> Findings {
    let answered = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(ctx.config.progress, "cpu", Arc::clone(&answered), "req", None, ctx.config.duration);
    let plaintext = plaintext_loops(ctx, config.connections, config.requests);
    let cpu = LoopSpec {
        name: "cpu",
        request: get(&format!("/cpu?cost={}", config.cost), &ctx.host).into(),
        expect: 200,
        connections: config.cpu_connections,
        limit: config.requests,
        rate: None,
    };
    let began = Instant::now();
    let (plain, hashed) = tokio::join!(run_loops(ctx, plaintext, Arc::clone(&answered)), run_loops(ctx, cpu, answered));
    progress.finish();
    Findings { measured: began.elapsed(), requests: vec![plain, hashed], ..Findings::default() }
}
