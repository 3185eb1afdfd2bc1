//! The error type of `embed`: what can go wrong loading a CLIP checkpoint, decoding and
//! preprocessing an image, running the tower, or reading and writing an embedding directory.
//! In its own file so every part of `embed/` can return it without importing `mod.rs`.

use std::path::PathBuf;

use thiserror::Error;

use crate::fsutil::PathIoError;

/// What can go wrong in `embed`.
#[derive(Debug, Error)]
pub enum EmbedError {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A tensor operation failed (shapes, dtypes, device).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A JSON file that does not parse or lacks a field.
    #[error("{}: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong (serde's message names the line and column).
        reason: String,
    },
    /// A configuration field with a value this tower does not support.
    #[error("{}: field `{field}`: {reason}", path.display())]
    Config {
        /// The file (`config.json` or `preprocessor_config.json`).
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The safetensors file does not parse.
    #[error("{}: not a safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A checkpoint lacks a tensor the configuration needs.
    #[error("{}: tensor {name:?} is missing (a CLIPVisionModelWithProjection checkpoint has it)", path.display())]
    MissingTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A checkpoint tensor has the wrong shape for the configuration.
    #[error("{}: tensor {name:?} has shape {found:?}, config.json implies {expected:?}", path.display())]
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
    /// A checkpoint tensor in a dtype other than F32, F16 or BF16.
    #[error("{}: tensor {name:?} has dtype {dtype}, expected F32, F16 or BF16", path.display())]
    Dtype {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// An image that cannot be decoded.
    #[error("image {id:?} ({origin}): cannot decode: {reason}")]
    Decode {
        /// The sample id.
        id: String,
        /// Where the bytes came from (a path, `shard:key`, …).
        origin: String,
        /// The decoder's message.
        reason: String,
    },
    /// The image source failed (a list line, a shard, …).
    #[error("image source: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A bad line in an image list file.
    #[error("{}:{line}: {reason}", path.display())]
    ListLine {
        /// The list file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A `--features` value that does not parse.
    #[error("features {value:?}: expected none, pooled or patches:P with P ≥ 1")]
    FeatureSpec {
        /// The value given.
        value: String,
    },
    /// An invalid setting (batch size 0, part size 0, P larger than the patch count, …).
    #[error("{field} = {value}: {reason}")]
    Setting {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// An output directory written with other settings: a rerun must use the same ones.
    #[error("{}: written with {field} = {found}, this run has {expected}; use the same settings or another --out", path.display())]
    ResumeMismatch {
        /// The embed.json file.
        path: PathBuf,
        /// The setting that differs.
        field: &'static str,
        /// The value in embed.json.
        found: String,
        /// This run's value.
        expected: String,
    },
    /// An existing part whose ids differ from the ids this run's input puts there.
    #[error("{}: line {line} holds id {found:?}, the input has {expected:?} there; the image list changed since the part was written", path.display())]
    ResumeIds {
        /// The part's ids file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The id in the part.
        found: String,
        /// The input's id.
        expected: String,
    },
    /// An existing part that is damaged (missing file, wrong shape).
    #[error("{}: {reason}", path.display())]
    BadPart {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl EmbedError {
    /// A JSON error of `path`.
    pub(crate) fn json(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        EmbedError::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }

    /// A config error of `path`.
    pub(crate) fn config(path: &std::path::Path, field: &str, reason: impl Into<String>) -> Self {
        EmbedError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
