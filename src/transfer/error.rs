//! Why a transfer failed: a training run, a collective between runs, a run's `metrics.json` or
//! held-out curve that cannot be read, or the thread pool of concurrent runs; and why a
//! `--baselines` list was refused ([`BaselineListError`]).

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
    /// The plan's baselines are missing, or their names or directories clash.
    #[error(transparent)]
    Baselines(#[from] BaselineListError),
    /// The thread pool of a run trained concurrently (`jobs` > 1) could not be built.
    #[error("training config: thread pool of a concurrent run: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
}

/// A `--baselines` list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineListError {
    /// An entry (or the mixture after `NAME=`) is empty.
    #[error("--baselines {list:?}: an entry is empty; expected comma-separated uniform, natural, a mixture file, or NAME=any of them")]
    Empty {
        /// The whole list.
        list: String,
    },
    /// A name cannot be a directory name.
    #[error("--baselines: {item:?} is named {name:?}; a baseline's name is its run directory and must be 1-64 ASCII letters, digits, '.', '_' or '-', not starting with '.' or '-' (name it as NAME=...)")]
    Unsafe {
        /// The entry.
        item: String,
        /// The name it would get.
        name: String,
    },
    /// A baseline would be named `recipe`, the recipe's own directory.
    #[error("--baselines: {item:?} would be named \"recipe\", which is reserved for the recipe's runs; name it as NAME={item}")]
    Reserved {
        /// The entry.
        item: String,
    },
    /// Two baselines have the same name.
    #[error("--baselines: the name {name:?} twice ({first} and {second}); names must be unique: name one as NAME=...")]
    Duplicate {
        /// The name.
        name: String,
        /// What the first baseline of that name is.
        first: String,
        /// The second entry.
        second: String,
    },
    /// The list names no baseline.
    #[error("--baselines: no baseline given")]
    None,
}
