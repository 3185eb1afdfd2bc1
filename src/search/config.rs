//! The search configuration (`search.toml`'s `[search]` table, plus `[train]` for the built-in
//! trainer), with defaults and validation. The resolved configuration is stored in the search
//! directory; rerunning with the same settings resumes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::curve::Curve;
use super::fidelity::{Fidelity, FidelityParseError};
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
    /// Total cost of the trials in units of one trial at the target fidelity (0 = no limit);
    /// the search stops before a round would exceed it (a single-fidelity trial costs 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_cost: f64,
    /// Asynchronous scheduling: propose (at most `q` at a time) whenever the executor has a
    /// free slot, conditioning on the trials still running, instead of waiting for the whole
    /// round to finish (docs/search.md). The executor's slots are then `executor.parallel`,
    /// not capped at `q`. Single-fidelity searches only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub asynchronous: bool,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            q: 4,
            max_trials: 16,
            trial_timeout_s: 0.0,
            retries: 1,
            max_cost: 0.0,
            asynchronous: false,
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
    /// `{blend}`, `{seed}` (also in `MIXATLAS_*` variables), split into words with shell-word
    /// rules and run directly, each placeholder filled inside its word (`search::command`).
    Command {
        /// The command template.
        command: String,
        /// Run the template through `sh -c` instead (pipes, redirections), every substituted
        /// value shell-quoted (`--trainer-shell`).
        #[serde(default, skip_serializing_if = "is_false")]
        shell: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TrainerConfig {
    /// Checks a command trainer's template (it splits into words, or is a non-empty shell
    /// command with `shell`).
    pub fn check(&self) -> Result<(), SearchConfigError> {
        match self {
            TrainerConfig::Builtin { .. } => Ok(()),
            TrainerConfig::Command { command, shell } => super::command::check(command, *shell)
                .map_err(|problem| SearchConfigError::TrainerCommand {
                    command: command.clone(),
                    problem,
                }),
        }
    }
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
    /// Fidelities trials may run at (`["mini:200", "small:200"]`: model preset and training
    /// steps); empty = single-fidelity (every trial at the trainer's preset and `[train]`
    /// steps). Two or more make the search multi-fidelity GP-UCB.
    #[serde(
        default,
        with = "super::fidelity::spelled",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub fidelities: Vec<Fidelity>,
    /// The fidelity recommendations are for (one of `fidelities`).
    #[serde(
        default,
        with = "super::fidelity::spelled_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_fidelity: Option<Fidelity>,
    /// What a trial at each fidelity costs: `model` or `measured`.
    #[serde(default, skip_serializing_if = "FidelityCost::is_model")]
    pub fidelity_cost: FidelityCost,
    /// `ξ` of MF-GP-UCB's threshold `γ(z) = ξ σ₀ (λ(z)/λ(T))^q` (None = its default, 0.2): a
    /// cheaper fidelity is run while the posterior σ there exceeds `γ`, so a larger `ξ` sends
    /// trials to the target sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity_xi: Option<f64>,
    /// Run the initial design's first point (the `start` mixture) at the target fidelity, so
    /// the surrogate has one target observation before the threshold rule would send a trial
    /// there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fidelity_target_start: bool,
}

/// How the cost of a trial at a fidelity is reckoned (normalised so a target trial costs 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FidelityCost {
    /// Model parameters × training steps (tokens per step are shared by all fidelities).
    #[default]
    Model,
    /// Mean wall time of the finished trials at each fidelity, once every fidelity has one
    /// (the model's costs before).
    Measured,
}

impl FidelityCost {
    fn is_model(&self) -> bool {
        *self == FidelityCost::Model
    }
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
            fidelities: Vec::new(),
            target_fidelity: None,
            fidelity_cost: FidelityCost::Model,
            fidelity_xi: None,
            fidelity_target_start: false,
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
    /// A negative or non-finite cost budget.
    #[error("budget.max_cost = {0}: expected a finite number ≥ 0 (0 = no limit)")]
    MaxCost(f64),
    /// Asynchronous scheduling asked for in a multi-fidelity search.
    #[error(
        "budget.asynchronous: a multi-fidelity search proposes in synchronous rounds only \
         (drop `fidelities` or `asynchronous`)"
    )]
    AsyncMultiFidelity,
    /// A fidelity that cannot be run.
    #[error("{key}: {source}")]
    Fidelity {
        /// `fidelities` or `target_fidelity`.
        key: &'static str,
        /// What is wrong.
        #[source]
        source: FidelityParseError,
    },
    /// Exactly one fidelity.
    #[error("fidelities = [{0}]: expected none (single-fidelity) or at least 2")]
    OneFidelity(String),
    /// The same fidelity twice.
    #[error("fidelities: {0} is listed twice")]
    DuplicateFidelity(String),
    /// Fidelities without a target.
    #[error("fidelities are set but target_fidelity is not: expected one of [{0}]")]
    NoTarget(String),
    /// A target that is not among the fidelities.
    #[error("target_fidelity = {target:?} is not among fidelities [{list}]")]
    TargetNotListed {
        /// The target.
        target: String,
        /// The fidelities.
        list: String,
    },
    /// Fidelities with a method that cannot use them.
    #[error("fidelities need method gp-ucb (multi-fidelity GP-UCB); method is {0}: remove the fidelities or use gp-ucb")]
    FidelityMethod(&'static str),
    /// A threshold factor that is not a positive number.
    #[error("fidelity_xi = {0}: expected a finite number > 0")]
    FidelityXi(f64),
    /// `fidelity_target_start` without fidelities.
    #[error(
        "fidelity_target_start = true needs a multi-fidelity search: set `fidelities` and \
         `target_fidelity` (--fidelities, --target-fidelity)"
    )]
    TargetStartWithoutFidelities,
    /// A trainer command that cannot be run.
    #[error("[search.trainer] command (--trainer-command) {command:?}: {problem}")]
    TrainerCommand {
        /// The template.
        command: String,
        /// What is wrong (in the message, not a separate cause: printed once).
        problem: super::command::CommandError,
    },
    /// Fidelities with an executor that cannot run them.
    #[error("fidelities run on the local executor only; executor.kind is {0:?}")]
    FidelityExecutor(String),
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
        let c = self.budget.max_cost;
        if !(c.is_finite() && c >= 0.0) {
            return Err(SearchConfigError::MaxCost(c));
        }
        self.trainer.check()?;
        if self.budget.asynchronous && self.is_multi_fidelity() {
            return Err(SearchConfigError::AsyncMultiFidelity);
        }
        self.validate_fidelities()
    }

    /// Whether the search is multi-fidelity (two or more fidelities).
    pub fn is_multi_fidelity(&self) -> bool {
        self.fidelities.len() >= 2
    }

    /// Index of the target fidelity in `fidelities` (multi-fidelity searches).
    pub fn target_index(&self) -> Option<usize> {
        let t = self.target_fidelity.as_ref()?;
        self.fidelities.iter().position(|f| f == t)
    }

    /// Checks `fidelities` and `target_fidelity` (see [`SearchConfigError`]).
    fn validate_fidelities(&self) -> Result<(), SearchConfigError> {
        let list = || {
            self.fidelities
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for f in &self.fidelities {
            f.check().map_err(|source| SearchConfigError::Fidelity {
                key: "fidelities",
                source,
            })?;
        }
        if let Some(t) = &self.target_fidelity {
            t.check().map_err(|source| SearchConfigError::Fidelity {
                key: "target_fidelity",
                source,
            })?;
        }
        match self.fidelities.len() {
            0 => {
                return match &self.target_fidelity {
                    Some(t) => Err(SearchConfigError::TargetNotListed {
                        target: t.to_string(),
                        list: String::new(),
                    }),
                    None if self.fidelity_target_start => {
                        Err(SearchConfigError::TargetStartWithoutFidelities)
                    }
                    None => Ok(()),
                }
            }
            1 => return Err(SearchConfigError::OneFidelity(list())),
            _ => {}
        }
        for (i, f) in self.fidelities.iter().enumerate() {
            if self.fidelities[..i].contains(f) {
                return Err(SearchConfigError::DuplicateFidelity(f.to_string()));
            }
        }
        let Some(t) = &self.target_fidelity else {
            return Err(SearchConfigError::NoTarget(list()));
        };
        if !self.fidelities.contains(t) {
            return Err(SearchConfigError::TargetNotListed {
                target: t.to_string(),
                list: list(),
            });
        }
        if self.method != Method::GpUcb {
            return Err(SearchConfigError::FidelityMethod(self.method.name()));
        }
        if let Some(xi) = self.fidelity_xi {
            if !(xi.is_finite() && xi > 0.0) {
                return Err(SearchConfigError::FidelityXi(xi));
            }
        }
        if self.executor.kind != "local" {
            return Err(SearchConfigError::FidelityExecutor(
                self.executor.kind.clone(),
            ));
        }
        Ok(())
    }

    /// Trials run at once (at most `q` in synchronous rounds).
    pub fn parallel(&self) -> usize {
        let p = if self.executor.parallel > 0 {
            self.executor.parallel
        } else {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / self.executor.threads_per_trial).max(1)
        };
        if self.budget.asynchronous {
            return p;
        }
        p.min(self.budget.q).max(1)
    }
}
