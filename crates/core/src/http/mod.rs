//! HTTP/1.1 as bytes in, events out (RFC 9110, RFC 9112), after h11.
//!
//! Call order for one connection: feed what the socket gave with
//! [`RequestDecoder::receive`], then call [`RequestDecoder::next_event`] until it answers
//! [`Event::NeedData`]. Each [`Event::Request`] is one complete request (head and body);
//! pipelined requests come out one by one, in order. Answer each with a [`Response`]
//! encoded by [`Response::encode`]. An `Err(ProtocolError)` means the peer broke the
//! protocol: write `error.response()` and close.
//!
//! Nothing here reads a clock: the head deadline and the idle timeout are enforced by the
//! concurrency model, which asks [`RequestDecoder::is_idle`] which of the two applies.

mod decode;
mod encode;
mod types;

pub use decode::RequestDecoder;
pub use encode::{http_date, Encoding};
pub use types::{Event, Headers, Method, ProtocolError, Request, Response, StatusCode};
