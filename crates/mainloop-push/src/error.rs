//! The push crate's one error type.

/// What can go wrong preparing a notification (delivery outcomes are [`crate::Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A key (ours or the browser's) is not what it must be.
    #[error("invalid key: {0}")]
    Key(String),
    /// The message does not fit one record of the encrypted content coding.
    #[error("the message is too large to push ({0} bytes)")]
    TooLarge(usize),
    #[error("encryption failed")]
    Crypto,
    #[error("invalid endpoint URL: {0}")]
    Endpoint(String),
    #[error("HTTP client: {0}")]
    Client(String),
}
