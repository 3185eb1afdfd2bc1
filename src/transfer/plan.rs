//! What a transfer is asked to do: the baseline it compares against ([`Baseline`]), the resolved
//! [`TransferPlan`] (corpus, recipe, larger model, shared training settings, seeds) and where
//! each of its runs lives ([`run_dir`]).

use std::path::{Path, PathBuf};

use crate::bench::steps_to_loss::Smoothing;
use crate::data::corpus::Corpus;
use crate::model::Qwen2Config;
use crate::train::trainer::read_mixture;
use crate::train::{TrainConfig, TrainError};

/// The comparison target.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// Equal weight on every cell.
    Uniform,
    /// The corpus's natural proportions.
    Natural,
    /// A mixture file.
    File(PathBuf),
}

impl Baseline {
    /// Parses `uniform`, `natural` or a path.
    pub fn parse(s: &str) -> Self {
        match s {
            "uniform" => Baseline::Uniform,
            "natural" => Baseline::Natural,
            p => Baseline::File(PathBuf::from(p)),
        }
    }

    /// The weights over `corpus`'s cells.
    pub fn weights(&self, corpus: &Corpus) -> Result<Vec<f64>, TrainError> {
        let n = corpus.manifest.cells.len();
        Ok(match self {
            Baseline::Uniform => vec![1.0 / n as f64; n],
            Baseline::Natural => corpus.manifest.natural_weights(),
            Baseline::File(p) => read_mixture(p, &corpus.manifest)?,
        })
    }

    /// A short name for directories and tables.
    pub fn name(&self) -> String {
        match self {
            Baseline::Uniform => "uniform".into(),
            Baseline::Natural => "natural".into(),
            Baseline::File(p) => p
                .file_stem()
                .map_or("baseline".into(), |s| s.to_string_lossy().into_owned()),
        }
    }
}

/// A resolved transfer.
#[derive(Debug)]
pub struct TransferPlan<'a> {
    /// The corpus.
    pub corpus: &'a Corpus,
    /// The recipe's weights.
    pub recipe: Vec<f64>,
    /// The baseline.
    pub baseline: Baseline,
    /// The larger model.
    pub model: Qwen2Config,
    /// Training settings shared by both arms (the seed is replaced per run).
    pub train: TrainConfig,
    /// Seeds `0..seeds`.
    pub seeds: u64,
    /// Output directory: `<out>/{baseline,recipe}/seed-<s>/`.
    pub out: PathBuf,
    /// Smoothing for steps-to-loss.
    pub smoothing: Smoothing,
    /// Runs trained at once in a single process, each on its share of the threads (1 = one
    /// after another on all of them). Small models train faster this way: the demo's six
    /// 200-step runs of `small` take 215 s as two 1-thread runs at a time against 274 s one
    /// after another on 2 threads. Ignored under MPI, where every rank joins each run.
    pub jobs: usize,
}

/// The directory of one run.
pub fn run_dir(out: &Path, arm: &str, seed: u64) -> PathBuf {
    out.join(arm).join(format!("seed-{seed}"))
}
