//! The search configuration (`search.toml`'s `[search]` table, plus `[train]` for the built-in
//! trainer), with defaults and validation. The resolved configuration is stored in the search
//! directory; rerunning with the same settings resumes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::curve::Curve;
use super::methods::Method;
use super::trials::ObjectiveSpec;
use crate::acquisition::design::DesignStart;
use crate::acquisition::space::{SpaceConstraints, SpaceKind};
use crate::baselines::chameleon::ChameleonParams;

/// Which per-benchmark number the objective uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// The benchmark scores (`metrics.json`'s `benchmarks`: each benchmark's metric of greedy
    /// answers from the built-in trainer, whatever score an external trainer reports).
    Accuracy,
    /// Negative answer loss (`-benchmark_loss`): smoother than accuracy for short proxies.
    #[default]
    NegLoss,
}

/// What the search maximises.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// Benchmark weights; empty = every benchmark with weight 1.
    pub weights: std::collections::BTreeMap<String, f64>,
    /// Normalise each benchmark by its score in this trial id first.
    pub reference: Option<String>,
    /// The per-benchmark score used (for the built-in trainer's metrics; external trainers'
    /// `benchmarks` are used as they are when `benchmark_loss` is absent).
    pub metric: Metric,
    /// Where on the held-out curve a trial is scored: `final` (the final evaluation, default),
    /// `last:K` (mean of the last K evaluation points) or `auc` (area under the curve divided
    /// by its steps); see `search::curve`.
    #[serde(skip_serializing_if = "Curve::is_final")]
    pub curve: Curve,
}

impl ObjectiveConfig {
    /// The weights and reference as the ask/tell objective.
    pub fn spec(&self) -> ObjectiveSpec {
        ObjectiveSpec {
            weights: self.weights.clone(),
            reference: self.reference.clone(),
        }
    }
}

/// How many trials, in which rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// Mixtures per round (trials that can run in parallel).
    pub q: usize,
    /// Total trials (the search stops when this many have finished or been given up).
    pub max_trials: usize,
    /// Wall-clock limit per trial attempt in seconds (0 = none); past it the trial is killed
    /// and the attempt recorded as failed.
    pub trial_timeout_s: f64,
    /// Attempts after the first for a failed trial before it is left out.
    pub retries: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            q: 4,
            max_trials: 16,
            trial_timeout_s: 0.0,
            retries: 1,
        }
    }
}

/// Who trains a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TrainerConfig {
    /// `mixatlas train` with the `[train]` table and this preset.
    Builtin {
        /// Model preset.
        #[serde(default = "default_preset")]
        preset: String,
    },
    /// Any command honouring the trial protocol: a template with `{trial_dir}`, `{mixture}`,
    /// `{blend}`, `{seed}` (also in `MIXATLAS_*` variables), run through `sh -c`.
    Command {
        /// The command template.
        command: String,
    },
}

fn default_preset() -> String {
    "tiny".into()
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig::Builtin {
            preset: default_preset(),
        }
    }
}

/// Where trials run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    /// `local` (child processes on this machine), `mpi` (rank groups of an `mpirun` job) or
    /// `slurm` (each round a job array).
    pub kind: String,
    /// Trials at once (0 = as many as fit: cores / threads_per_trial, at most q).
    pub parallel: usize,
    /// Threads each trial may use (`RAYON_NUM_THREADS`, `OMP_NUM_THREADS`).
    pub threads_per_trial: usize,
    /// Ranks that train one trial together (MPI executor).
    pub ranks_per_trial: usize,
    /// Slurm: partition (None = the cluster's default).
    pub partition: Option<String>,
    /// Slurm: time limit per trial task in minutes.
    pub time_min: Option<u32>,
    /// Slurm: array throttle (`--array=…%N`; None = all at once).
    pub throttle: Option<u32>,
    /// Slurm: extra sbatch options (`{"account": "proj"}`).
    pub sbatch_extra: std::collections::BTreeMap<String, String>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            parallel: 0,
            threads_per_trial: 1,
            ranks_per_trial: 1,
            partition: None,
            time_min: None,
            throttle: None,
            sbatch_extra: Default::default(),
        }
    }
}

/// `[search]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Prepared corpus (cells, natural proportions, benchmarks).
    pub corpus: PathBuf,
    /// Search directory (state, trials, recipe).
    pub out: PathBuf,
    /// `gp-ucb`, `regmix`, `random`, `uniform`, `natural`, `chameleon`.
    pub method: Method,
    /// Seed of the method and of every trial's training.
    pub seed: u64,
    /// `joint` or `factorized`.
    pub space: SpaceKind,
    /// First point of GP-UCB's initial design: `centre` (the uniform mixture) or `natural`
    /// (the corpus's natural proportions, the usual incumbent).
    pub start: DesignStart,
    /// Per-cell (joint) or per-axis-entry (factorized) bounds and fixed values.
    pub constraints: SpaceConstraints,
    /// The objective.
    pub objective: ObjectiveConfig,
    /// The budget.
    pub budget: Budget,
    /// The trainer.
    pub trainer: TrainerConfig,
    /// The executor.
    pub executor: ExecutorConfig,
    /// Chameleon's settings (`method = "chameleon"`): mode, λ, temperature.
    #[serde(skip_serializing_if = "ChameleonParams::is_default")]
    pub chameleon: ChameleonParams,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            corpus: PathBuf::from("corpus"),
            out: PathBuf::from("search"),
            method: Method::GpUcb,
            seed: 0,
            space: SpaceKind::Joint,
            start: DesignStart::Centre,
            constraints: SpaceConstraints::default(),
            objective: ObjectiveConfig::default(),
            budget: Budget::default(),
            trainer: TrainerConfig::default(),
            executor: ExecutorConfig::default(),
            chameleon: ChameleonParams::default(),
        }
    }
}

/// Where trials run, parsed from [`ExecutorConfig::kind`] (the file keeps the string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Child processes on this machine.
    Local,
    /// Rank groups of an `mpirun` job.
    Mpi,
    /// One Slurm job array per round.
    Slurm,
}

/// A `[search]` value that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchConfigError {
    /// No trials to run.
    #[error("budget.q and budget.max_trials must be ≥ 1")]
    EmptyBudget,
    /// An executor kind this build does not know.
    #[error("executor.kind {0:?}: expected \"local\", \"mpi\" or \"slurm\"")]
    ExecutorKind(String),
    /// Trials with no thread.
    #[error("executor.threads_per_trial must be ≥ 1")]
    NoThreads,
    /// A negative or NaN time limit.
    #[error("budget.trial_timeout_s must be ≥ 0")]
    Timeout,
}

impl ExecutorConfig {
    /// The executor [`ExecutorConfig::kind`] names (the one place the string is read).
    pub fn parse_kind(&self) -> Result<ExecutorKind, SearchConfigError> {
        match self.kind.as_str() {
            "local" => Ok(ExecutorKind::Local),
            "mpi" => Ok(ExecutorKind::Mpi),
            "slurm" => Ok(ExecutorKind::Slurm),
            other => Err(SearchConfigError::ExecutorKind(other.to_string())),
        }
    }
}

impl SearchConfig {
    /// Checks values that would otherwise fail late.
    pub fn validate(&self) -> Result<(), SearchConfigError> {
        if self.budget.q == 0 || self.budget.max_trials == 0 {
            return Err(SearchConfigError::EmptyBudget);
        }
        self.executor.parse_kind()?;
        if self.executor.threads_per_trial == 0 {
            return Err(SearchConfigError::NoThreads);
        }
        if self.budget.trial_timeout_s.is_nan() || self.budget.trial_timeout_s < 0.0 {
            return Err(SearchConfigError::Timeout);
        }
        Ok(())
    }

    /// Trials run at once.
    pub fn parallel(&self) -> usize {
        let p = if self.executor.parallel > 0 {
            self.executor.parallel
        } else {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / self.executor.threads_per_trial).max(1)
        };
        p.min(self.budget.q).max(1)
    }
}
