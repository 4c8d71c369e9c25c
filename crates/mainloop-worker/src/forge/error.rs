//! What can stop a forge step, by whose fault: the store (mainloop's own database), the
//! forge (an outage, a rate limit, a refusal), or something no retry can mend. Only the
//! forge's failures are told to the human as GitHub's; the store's retry the job quietly.

use mainloop_engine::JobError;
use mainloop_forge::ForgeError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FlowError {
    /// The store failed (it is away, or a write lost a race): retry the job.
    #[error("store: {0}")]
    Store(String),
    /// The forge failed or refused.
    #[error(transparent)]
    Forge(#[from] ForgeError),
    /// Nothing will make this work (bookkeeping that cannot be written, say).
    #[error("{0}")]
    Fatal(String),
}

impl FlowError {
    /// A store failure, from the job error the store helpers return.
    pub(crate) fn store(e: &JobError) -> Self {
        if e.retryable {
            Self::Store(e.message.clone())
        } else {
            Self::Fatal(e.message.clone())
        }
    }
}

impl From<JobError> for FlowError {
    fn from(e: JobError) -> Self {
        Self::store(&e)
    }
}
