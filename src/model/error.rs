//! The error type of the model: what can go wrong building, loading, saving or running a
//! model. In its own file so every part of `model/` can return it without importing the
//! folder's `mod.rs`.

use std::path::PathBuf;

use thiserror::Error;

use crate::fsutil::PathIoError;

/// What can go wrong building, loading, saving or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A tensor operation failed (shapes, dtypes, device).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A preset name that does not exist.
    #[error("unknown model preset {name:?} (known: {known})")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The known names.
        known: String,
    },
    /// A configuration field with an impossible value.
    #[error("model config field `{field}`: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint lacks a tensor the configuration needs.
    #[error("{path}: tensor {name:?} is missing")]
    MissingTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A checkpoint tensor has the wrong shape for the configuration.
    #[error("{path}: tensor {name:?} has shape {found:?}, the configuration needs {expected:?}")]
    ShapeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// Shape the configuration implies.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A checkpoint holds tensors the model does not have.
    #[error("{path}: unexpected tensor {name:?} (not part of a Qwen2 model with this config)")]
    UnexpectedTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A checkpoint file is malformed.
    #[error("{path}: {reason}")]
    BadCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint's JSON file does not parse as what it should hold.
    #[error("{path}: {what}: {source}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What the file should be (e.g. `not valid JSON`).
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint's safetensors file cannot be read.
    #[error("{path}: not a readable safetensors file: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// Parameters could not be serialised as safetensors.
    #[error("{path}: serialising: {source}")]
    Serialize {
        /// The file they were for.
        path: PathBuf,
        /// The serialiser's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// Invalid model input (token out of range, image count mismatch, too long).
    #[error("invalid model input: {0}")]
    Input(String),
    /// Filesystem error with its path.
    #[error(transparent)]
    Io(#[from] PathIoError),
}
