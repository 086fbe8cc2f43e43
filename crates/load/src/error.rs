//! The one error type of the load generator: why a run could not be carried out.

use thiserror::Error;

/// Why a run could not start or finish. Trouble *during* a run (failed requests, lost
/// messages) is not an error: it is counted in the report.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The target is not on this machine.
    #[error("{0}")]
    NotLoopback(String),
    /// A flag or config value is out of range.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached or answered the setup requests wrongly.
    #[error("{0}")]
    Server(String),
    /// Something on the client side (runtime, worker processes) would not start.
    #[error("{0}")]
    Setup(String),
}
