//! `sse-broadcast`: N clients hold a Server-Sent Events stream on one room
//! (`GET /api/rooms/{room}/events?after=ID`) while a poster posts M messages; each
//! `event: message` is a delivery. One connection and one response for the whole run.

use crate::LoadError;

use super::{broadcast, BroadcastConfig, Ctx, Findings, Via};

pub(crate) async fn run(ctx: &Ctx, config: &BroadcastConfig) -> Result<Findings, LoadError> {
    broadcast::run(ctx, Via::Sse, config).await
}
