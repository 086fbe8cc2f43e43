//! Request decoding. (Being written.)
use super::types::*;
use crate::limits::Limits;
/// Incremental request decoder. (Being written.)
pub struct RequestDecoder;
impl RequestDecoder {
    /// A decoder.
    pub fn new(_limits: &Limits) -> Self { RequestDecoder }
    /// Feed bytes.
    pub fn receive(&mut self, _bytes: &[u8]) {}
    /// Next event.
    pub fn next_event(&mut self) -> Result<Event, ProtocolError> { Ok(Event::NeedData) }
}
