//! The built-in model: a Qwen2-architecture decoder with a LLaVA-style vision projector, in
//! candle (see `docs/model.md` for the equations this code implements).
//!
//! One file per part, composed in [`qwen2`]. The model maps token ids (and image patch
//! features at given positions) to logits and knows nothing of ranks, devices or the corpus:
//! parallelism and data loading are applied from outside (`src/train/`).
//!
//! Only differentiable compositions are used in training paths: candle's fused norm, softmax
//! and rope kernels pass no gradient (see `../shared/CRATES.md`), so [`norm`], [`rotary`] and
//! [`attention`] are built from elementary ops or from custom ops with a hand-written backward.

pub mod attention;
pub mod config;
pub mod embedding;
pub mod fused;
pub mod mlp;
pub mod norm;
pub mod projector;
pub mod qwen2;
pub mod rotary;
pub mod weights;

use std::path::PathBuf;

use thiserror::Error;

pub use config::Qwen2Config;
pub use qwen2::{ImageInput, Qwen2Model};
pub use weights::{ParamSpec, Params};

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
    /// Invalid model input (token out of range, image count mismatch, too long).
    #[error("invalid model input: {0}")]
    Input(String),
    /// Filesystem error with its path.
    #[error(transparent)]
    Io(#[from] PathIoError),
}
