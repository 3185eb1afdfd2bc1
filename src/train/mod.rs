//! The built-in trainer: proxy and transfer runs of the [`model`](crate::model) on a prepared
//! corpus mixture, with AdamW, schedules, masked loss, per-benchmark evaluation and atomic
//! checkpoints that resume exactly.
//!
//! Parts are swappable as in torchtitan: [`loss`], [`optim`], [`schedule`], [`eval`],
//! [`checkpoint`], [`log`]; [`trainer`] composes them. Nothing here knows about ranks yet; the
//! data-parallel wrapper reduces the flat gradients [`optim::flat_grads`] returns.

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod log;
pub mod loss;
pub mod optim;
pub mod parallel;
pub mod schedule;
pub mod trainer;

use std::path::PathBuf;

use thiserror::Error;

pub use config::TrainConfig;
pub use trainer::{train, train_with, TrainOutcome, TrainPlan};

use crate::data::corpus::CorpusError;
use crate::data::sampler::SamplerError;
use crate::fsutil::PathIoError;
use crate::model::ModelError;

/// Keeps candle's elementwise thread pool from fighting the compute threads for the cores.
///
/// candle 0.11 runs elementwise CPU ops (the gradient sums of backprop among them) on its own
/// "barrier pool" of `CANDLE_NUM_THREADS − 1` threads beside rayon's pool (matrix products and
/// our fused kernels). Its workers spin 25 000 times after every op before parking, and the
/// calling thread spins until they finish, so with as many threads as cores the spinning
/// threads and rayon's workers take turns on the same cores: on 2 busy cores a `small` step
/// took 1.2 s instead of 0.65 s (`docs/training-speed.md`). The elementwise ops are a few
/// percent of a step, so unless the user set `CANDLE_NUM_THREADS` or
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` this sets `CANDLE_NUM_THREADS=1`: no barrier pool, the
/// elementwise ops run on the calling thread and nothing spins. The pool reads it on first
/// use, so call this at process start, before any tensor op and before other threads exist.
pub fn tune_threads() {
    let set = |k: &str| std::env::var_os(k).is_some();
    if !set("CANDLE_NUM_THREADS") && !set("CANDLE_BARRIER_POOL_SPIN_LIMIT") {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Keeps freed memory in the process instead of returning it to the kernel after every
/// training step (glibc only; a no-op elsewhere). A step allocates and frees hundreds of
/// activation and gradient buffers of a few MB each; with glibc's defaults the large ones are
/// `mmap`ed and unmapped every time and the heap top is trimmed, so every step pays page
/// faults and zeroing again for the same memory. Raising the mmap threshold to its maximum
/// (32 MiB) and the trim threshold to 1 GiB makes the buffers recycle. Idempotent; call it
/// once at process start, before the allocations it should affect.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; valid at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

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
    #[error("{path}: {reason}")]
    Mixture {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint that cannot be resumed from.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A collective failed.
    #[error("distributed: {0}")]
    Dist(String),
    /// The loss became NaN or infinite; the run stopped and kept its last good checkpoint.
    #[error("loss is {value} at step {step}; stopped (the last good checkpoint is kept)")]
    NonFinite {
        /// The step whose loss was not finite.
        step: u64,
        /// The value (`NaN`, `inf`).
        value: f64,
    },
}

impl From<crate::dist::DistError> for TrainError {
    fn from(e: crate::dist::DistError) -> Self {
        TrainError::Dist(e.to_string())
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(ModelError::Candle(e))
    }
}
