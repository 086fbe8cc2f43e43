//! `ws-broadcast`: N WebSocket clients on one room (`GET /api/rooms/{room}/ws?after=ID`)
//! while a poster posts M messages over HTTP; each `{"type":"message","message":{...}}`
//! frame is a delivery.

use crate::LoadError;

use super::{broadcast, BroadcastConfig, Ctx, Findings, Via};

pub(crate) async fn run(ctx: &Ctx, config: &BroadcastConfig) -> Result<Findings, LoadError> {
    broadcast::run(ctx, Via::Ws, config).await
}
