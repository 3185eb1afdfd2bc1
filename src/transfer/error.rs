//! Why a transfer failed: a training run, a collective between runs, a run's `metrics.json` or
//! held-out curve that cannot be read, or the thread pool of concurrent runs.

use std::path::PathBuf;

use crate::bench::steps_to_loss::LogError;
use crate::dist::DistError;
use crate::fsutil::PathIoError;
use crate::train::TrainError;

/// A transfer could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A training run failed, or the baseline's mixture file could not be used.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The barrier after a run failed.
    #[error("distributed: {0}")]
    Dist(#[from] DistError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A run's `metrics.json` is not the JSON the trainer writes.
    #[error("{}: {source}", path.display())]
    Metrics {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A run's held-out loss curve could not be read.
    #[error(transparent)]
    Curve(#[from] LogError),
    /// The thread pool of a run trained concurrently (`jobs` > 1) could not be built.
    #[error("training config: thread pool of a concurrent run: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}
