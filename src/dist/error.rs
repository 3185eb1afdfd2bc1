//! The error type of the collectives: a backend failure, a buffer of the wrong size or a
//! broadcast value that does not encode. In its own file so the backends and the trait can
//! both name it without importing the folder's `mod.rs`.

/// A collective failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The backend reported an error.
    #[error("{op} on rank {rank}: {reason}")]
    Backend {
        /// The collective.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// The backend's message.
        reason: String,
    },
    /// Buffers of the wrong size were passed (a programming error on one rank would hang the
    /// others, so it is reported before the collective starts).
    #[error("{op} on rank {rank}: {reason}")]
    Shape {
        /// The collective.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// What is wrong.
        reason: String,
    },
    /// A broadcast value could not be encoded or decoded.
    #[error("broadcast on rank {rank}: {reason}")]
    Codec {
        /// This rank.
        rank: usize,
        /// What is wrong.
        reason: String,
    },
    /// A broadcast value could not be encoded or decoded as JSON.
    #[error("broadcast on rank {rank}: {source}")]
    Json {
        /// This rank.
        rank: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A device backend (NCCL) reported an error.
    #[error("{op} on rank {rank}: {source}")]
    Device {
        /// The collective.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
