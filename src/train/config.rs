//! The trainer's configuration (`[train]` table and `train_config.json` in a run directory),
//! with presets for proxy and transfer runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::TrainError;
use super::eval::Metric;
use super::optim::AdamWConfig;
use super::schedule::Schedule;
use crate::data::sampler::{Mode, Packing};

/// Everything a run needs besides the model, the corpus and the mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: u64,
    /// Rows per global batch (each `seq_len` tokens).
    pub batch_size: usize,
    /// Rows per forward/backward pass; gradients of `batch_size / micro_batch` passes are
    /// accumulated. 0 = the whole batch at once.
    pub micro_batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// How documents fill rows.
    pub packing: Packing,
    /// How cells are drawn.
    pub mode: Mode,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Schedule after warmup.
    pub schedule: Schedule,
    /// AdamW.
    pub optimizer: AdamWConfig,
    /// Global gradient-norm clipping threshold (0 = off).
    pub grad_clip: f64,
    /// Seed of the model initialisation and of the data order.
    pub seed: u64,
    /// `f32`, `bf16` (where the device supports it) or `auto` (f32 on CPU, bf16 on CUDA).
    pub dtype: String,
    /// Evaluate every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Documents per benchmark in each evaluation (the first ones of each held-out set).
    pub eval_samples: usize,
    /// Documents per benchmark in the final evaluation (0 = `eval_samples`): more documents
    /// for the scores a run ends with, fewer for the curve along the way.
    pub final_eval_samples: usize,
    /// Rows per evaluation forward pass.
    pub eval_batch: usize,
    /// At the end of the run, also generate every answer greedily and score it with its
    /// benchmark's metric (`metrics.json`'s `benchmarks`; otherwise those are the exact-match
    /// accuracies, which need no generation).
    pub eval_generate: bool,
    /// Per-benchmark metric overrides (`{docvqa = "anls"}`); the others follow
    /// [`Metric::default_for`].
    pub eval_metrics: BTreeMap<String, Metric>,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept (the newest ones).
    pub keep_checkpoints: usize,
    /// Write a training-log record every this many steps.
    pub log_every: u64,
    /// Stop (with a checkpoint, exit status 0, no metrics) after this many steps of the
    /// schedule, e.g. to fit a Slurm time limit; `--resume` continues. 0 = run to `steps`.
    pub stop_after: u64,
    /// Shard the optimiser state across data-parallel ranks (ZeRO stage 1).
    pub zero1: bool,
    /// Gradient all-reduce bucket size in MiB (replicated optimiser). 4 MiB buckets beat both
    /// one large all-reduce and 25 MiB buckets over Open MPI's shared memory (cache-sized
    /// messages; see `docs/distributed.md`).
    pub bucket_mb: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::proxy()
    }
}

impl TrainConfig {
    /// Shortens a warmup that would not end before the last step to a tenth of the run, as
    /// every command does before training (a preset's warmup may exceed a short run).
    pub fn clamp_warmup(&mut self) {
        if self.warmup_steps >= self.steps {
            self.warmup_steps = self.steps / 10;
        }
    }

    /// A proxy trial for the `tiny` preset: seconds on 2 CPU cores.
    pub fn proxy() -> Self {
        Self {
            steps: 300,
            batch_size: 16,
            micro_batch: 0,
            seq_len: 128,
            packing: Packing::Pack,
            mode: Mode::Iid,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 30,
            schedule: Schedule::Cosine,
            optimizer: AdamWConfig::default(),
            grad_clip: 1.0,
            seed: 0,
            dtype: "auto".into(),
            eval_every: 0,
            eval_samples: 200,
            final_eval_samples: 0,
            eval_batch: 100,
            eval_generate: true,
            eval_metrics: BTreeMap::new(),
            checkpoint_every: 0,
            keep_checkpoints: 2,
            log_every: 1,
            stop_after: 0,
            zero1: false,
            bucket_mb: 4.0,
        }
    }

    /// A transfer run for the `small` preset.
    pub fn transfer() -> Self {
        Self {
            steps: 1000,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 50,
            eval_every: 100,
            checkpoint_every: 200,
            ..Self::proxy()
        }
    }

    /// Documents per benchmark in the final evaluation.
    pub fn final_samples(&self) -> usize {
        if self.final_eval_samples == 0 {
            self.eval_samples
        } else {
            self.final_eval_samples
        }
    }

    /// Rows per forward pass.
    pub fn micro_rows(&self) -> usize {
        if self.micro_batch == 0 {
            self.batch_size
        } else {
            self.micro_batch
        }
    }

    /// Checks the values fit together.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.steps == 0 || self.batch_size == 0 || self.seq_len < 2 {
            return bad("steps, batch_size must be ≥ 1 and seq_len ≥ 2".into());
        }
        if self.batch_size % self.micro_rows() != 0 {
            return bad(format!(
                "micro_batch {} does not divide batch_size {}",
                self.micro_rows(),
                self.batch_size
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 || self.min_lr > self.lr {
            return bad(format!(
                "need 0 ≤ min_lr ({}) ≤ lr ({}), lr > 0",
                self.min_lr, self.lr
            ));
        }
        if let Schedule::Wsd { decay_fraction } = self.schedule {
            if !(0.0..=1.0).contains(&decay_fraction) {
                return bad(format!(
                    "wsd decay_fraction {decay_fraction} is not in [0, 1]"
                ));
            }
        }
        if !matches!(self.dtype.as_str(), "auto" | "f32" | "bf16") {
            return bad(format!(
                "dtype {:?}: expected \"auto\", \"f32\" or \"bf16\"",
                self.dtype
            ));
        }
        if self.keep_checkpoints == 0 || self.eval_batch == 0 || self.log_every == 0 {
            return bad("keep_checkpoints, eval_batch and log_every must be ≥ 1".into());
        }
        Ok(())
    }
}
