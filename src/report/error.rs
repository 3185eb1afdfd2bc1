//! Why the report could not be made. Messages start with `report:`; the source error, where
//! there is one, follows in the error chain.

use std::path::PathBuf;

use crate::bench::steps_to_loss::LogError;
use crate::fsutil::PathIoError;

/// Any error, as a boxed source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or directory could not be read or written.
    #[error("report")]
    Io(#[from] PathIoError),
    /// A JSON file (`resolved.json`, `recipe.json`, `transfer.json`) did not parse into what it
    /// should hold.
    #[error("report: {}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The search directory holds no search.
    #[error(
        "report: {} holds no search (no trials.jsonl in it or its sub-directories)",
        dir.display()
    )]
    NoSearch {
        /// The directory given.
        dir: PathBuf,
    },
    /// A search's trial log, corpus, space, objective or surrogate could not be rebuilt.
    #[error("report: {what} of the search in {}", dir.display())]
    Search {
        /// What was being rebuilt.
        what: &'static str,
        /// The search directory.
        dir: PathBuf,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// A held-out loss curve could not be read.
    #[error("report")]
    Curve(#[from] LogError),
    /// plotters could not draw a figure.
    #[error("report: drawing")]
    Draw(#[source] BoxError),
}

impl ReportError {
    /// Wraps a plotters error.
    pub fn draw<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        ReportError::Draw(Box::new(e))
    }

    /// A failure while rebuilding `what` of the search in `dir`.
    pub fn search(what: &'static str, dir: &std::path::Path, e: impl Into<BoxError>) -> Self {
        ReportError::Search {
            what,
            dir: dir.to_path_buf(),
            source: e.into(),
        }
    }
}
