//! The errors of k-means: fitting, assigning, saving and loading a model.
//!
//! Its own file so that every stage (preparation, seeding, Lloyd passes, assignment, I/O) can
//! return it without importing the module root.

use std::path::PathBuf;

use safetensors::SafeTensorError;

use crate::fsutil::PathIoError;

/// Errors from fitting, applying, saving or loading k-means.
#[derive(Debug, thiserror::Error)]
pub enum KMeansError {
    /// A configuration field is out of range.
    #[error("invalid k-means config: {field} {problem}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The input holds no points.
    #[error("no points to cluster (empty input)")]
    Empty,
    /// The dimension is zero.
    #[error("embedding dimension must be at least 1")]
    ZeroDim,
    /// The data is not a whole number of rows of the expected dimension.
    #[error("input of {len} values is not a whole number of {dim}-dimensional rows")]
    DimensionMismatch {
        /// The expected row length.
        dim: usize,
        /// The number of values given.
        len: usize,
    },
    /// More clusters were asked for than there are points.
    #[error("k = {k} exceeds the number of points ({n})")]
    TooFewPoints {
        /// Clusters asked for.
        k: usize,
        /// Points given.
        n: usize,
    },
    /// A value is NaN or infinite.
    #[error("row {row} holds a non-finite value (column {col})")]
    NonFinite {
        /// The first offending row.
        row: usize,
        /// The first offending column in that row.
        col: usize,
    },
    /// A row is all zeros, so cosine k-means cannot normalise it.
    #[error("row {row} is all zeros; cosine k-means cannot normalise it")]
    ZeroRow {
        /// The first all-zero row.
        row: usize,
    },
    /// A metric name is neither `euclidean` nor `cosine`.
    #[error("unknown metric {name:?} (expected \"euclidean\" or \"cosine\")")]
    UnknownMetric {
        /// The name given.
        name: String,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A file is not valid safetensors (or the tensors could not be serialised).
    #[error("{}: invalid safetensors: {source}", path.display())]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: SafeTensorError,
    },
    /// A safetensors file does not hold what a saved k-means model holds.
    #[error("{}: {problem}", path.display())]
    BadModelFile {
        /// The file concerned.
        path: PathBuf,
        /// What was expected and what was found.
        problem: String,
    },
    /// A saved model's `metric` metadata is not a metric name.
    #[error("{}: metadata \"metric\": {source}", path.display())]
    BadMetric {
        /// The file concerned.
        path: PathBuf,
        /// Why the name was rejected.
        #[source]
        source: Box<KMeansError>,
    },
    /// A saved model's centroids are not a valid model (non-finite values, too many rows).
    #[error("{}: {source}", path.display())]
    BadCentroids {
        /// The file concerned.
        path: PathBuf,
        /// Why the centroids were rejected.
        #[source]
        source: Box<KMeansError>,
    },
}
