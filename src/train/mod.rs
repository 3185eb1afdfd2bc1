//! The built-in trainer: proxy and transfer runs of the [`model`](crate::model) on a prepared
//! corpus mixture, with AdamW, schedules, masked loss, per-benchmark evaluation and atomic
//! checkpoints that resume exactly.
//!
//! Parts are swappable as in torchtitan: [`loss`], [`optim`], [`schedule`], [`eval`],
//! [`checkpoint`], [`log`]; [`trainer`] composes them. Nothing here knows about ranks yet; the
//! data-parallel wrapper reduces the flat gradients [`optim::flat_grads`] returns.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod limits;
pub mod log;
pub mod loss;
pub mod optim;
pub mod parallel;
pub mod schedule;
pub mod trainer;
pub mod tune;

pub use config::TrainConfig;
pub use error::TrainError;
pub use trainer::{train, train_with, TrainOutcome, TrainPlan};
pub use tune::{tune_allocator, tune_threads};
