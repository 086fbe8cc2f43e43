//! `longpoll-fanout`: N clients long-poll one room (`GET /api/rooms/{room}/messages?
//! after=ID&wait=30`, re-issued from the last id after each answer) while a poster posts
//! M messages. Each delivery's latency runs from the post being sent to the answer that
//! carries it; a message that arrives while its client is re-issuing waits for the next
//! request, which is the cost of long-polling this scenario exists to show.

use crate::LoadError;

use super::{broadcast, BroadcastConfig, Ctx, Findings, Via};

pub(crate) async fn run(ctx: &Ctx, config: &BroadcastConfig) -> Result<Findings, LoadError> {
    broadcast::run(ctx, Via::LongPoll, config).await
}
