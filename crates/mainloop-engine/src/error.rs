//! The engine's one error type; the API maps each kind to a status code.

use mainloop_domain::question::AnswerError;
use mainloop_domain::task::TransitionError;
use mainloop_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The thing does not exist, or belongs to another user (indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is well-formed but its content is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The task's state does not allow this action.
    #[error(transparent)]
    WrongState(#[from] TransitionError),
    #[error("invalid answers: {0}")]
    Answers(#[from] AnswerError),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A runner is not connected, or its connection ended: what ran there is gone, and
    /// the work resumes elsewhere.
    #[error("{0}")]
    RunnerLost(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
