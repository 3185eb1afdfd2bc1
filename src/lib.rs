//! MixAtlas: find the best multimodal midtraining data mixture with small proxy runs and a
//! Gaussian-process surrogate, then transfer the recipe to a large run.
//!
//! This crate is the library behind the `mixatlas` binary. The data layer ([`data`]) turns raw
//! multimodal samples into a prepared corpus of (concept, task) cells stored in Megatron-LM's
//! indexed-dataset format and draws deterministic mixture batches from it; [`config`] holds the
//! typed configurations and presets. See `docs/architecture.md` for the module map.

pub mod acquisition;
pub mod baselines;
pub mod bench;
pub mod config;
pub mod data;
pub mod dist;
pub mod embed;
pub mod fsutil;
pub mod gpu;
pub mod model;
pub mod report;
pub mod rng;
pub mod search;
pub mod slurm;
pub(crate) mod strided;
pub mod surrogate;
pub mod train;
pub mod transfer;
