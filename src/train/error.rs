//! The error type of training: what can stop a run (model, corpus, sampler, filesystem,
//! configuration, checkpoint, collective, divergence). In its own file so every part of
//! `train/` can return it without importing the folder's `mod.rs`.

use std::path::PathBuf;

use thiserror::Error;

use crate::data::corpus::CorpusError;
use crate::data::sampler::SamplerError;
use crate::dist::DistError;
use crate::fsutil::PathIoError;
use crate::model::ModelError;

/// What can stop a training run.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Building, loading or running the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// The sampler rejected the mixture or configuration.
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// Filesystem error with its path.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A configuration value that cannot work.
    #[error("training config: {0}")]
    Config(String),
    /// The corpus and the model do not fit together (vocabulary, image shape).
    #[error("{0}")]
    Incompatible(String),
    /// A mixture file that cannot be used.
    #[error("{path}: {source}")]
    Mixture {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: crate::data::mixture::MixtureError,
    },
    /// A checkpoint that cannot be resumed from.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint file that does not parse as what it should hold.
    #[error("{path}: {what}: {source}")]
    CheckpointFile {
        /// The file.
        path: PathBuf,
        /// What it should be (e.g. `not a trainer state`).
        what: &'static str,
        /// The parser's or serialiser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A collective failed.
    #[error("distributed: {0}")]
    Dist(#[from] DistError),
    /// The loss became NaN or infinite; the run stopped, keeping its last good checkpoint if
    /// it had one.
    #[error("loss is {value} at step {step}; stopped ({})", kept_checkpoint(*.checkpoint))]
    NonFinite {
        /// The step whose loss was not finite.
        step: u64,
        /// The value (`NaN`, `inf`).
        value: f64,
        /// The step of the last checkpoint this run wrote or resumed from (`None`: none).
        checkpoint: Option<u64>,
    },
}

/// What a diverged run leaves to resume from, for [`TrainError::NonFinite`].
fn kept_checkpoint(checkpoint: Option<u64>) -> String {
    match checkpoint {
        Some(step) => format!("the last good checkpoint, of step {step}, is kept"),
        None => "no checkpoint was written, so there is nothing to resume from: lower the \
                 learning rate or check the data"
            .into(),
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(ModelError::Candle(e))
    }
}
