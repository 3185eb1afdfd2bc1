//! The MPI search mode (`mpirun -np W mixatlas search --executor mpi --ranks-per-trial R`):
//! rank 0 runs the search (GP, proposals, state); the world is split into W/R groups; for
//! every wave of up to W/R pending trials rank 0 broadcasts the assignments, each group trains
//! its trial data-parallel with the built-in trainer in-process, and every group leader
//! broadcasts its result back. Only rank 0 writes search state; a failed trial is a result
//! (recorded and retried), not a hang; a dead or silent rank trips the collective watchdog.
//!
//! Rank 0's side is [`MpiExecutor`] (an [`Executor`] whose batches are waves); the other
//! ranks run [`worker`]; both train through [`run_wave`].

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Executor;
use crate::data::corpus::Corpus;
use crate::dist::{broadcast_value, Communicator, DistError};
use crate::model::{ModelError, Qwen2Config};
use crate::search::attempt::{check_metrics, TrialJob};
use crate::search::config::TrainerConfig;
use crate::search::error::ExecError;
use crate::search::plan::SearchPlan;
use crate::search::state::Event;
use crate::train::{train_with, TrainError, TrainPlan};

/// One trial given to one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The group that trains it.
    pub group: usize,
    /// Trial id.
    pub trial: String,
    /// Attempt number.
    pub attempt: usize,
    /// The attempt directory (shared filesystem).
    pub dir: PathBuf,
    /// Mixture weights in manifest cell order.
    pub weights: Vec<f64>,
}

/// What rank 0 broadcasts at the start of every wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Order {
    /// Train these trials (at most one per group).
    Run(Vec<Assignment>),
    /// The search is over.
    Stop,
}

/// Why a group's trial failed, as its leader sent it: the failure's message (the typed error
/// stays on the ranks that raised it; on the wire it is its text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
#[error("{message}")]
pub struct RemoteFailure {
    /// The failure's message.
    pub message: String,
}

impl RemoteFailure {
    /// The wire form of `e`.
    pub fn of(e: &dyn std::error::Error) -> Self {
        Self {
            message: e.to_string(),
        }
    }
}

/// A group's outcome: `metrics.json` or the failure's reason.
pub type Outcome = Result<serde_json::Value, RemoteFailure>;

/// Why this rank's group could not train its trial (sent to rank 0 as a [`RemoteFailure`]).
#[derive(Debug, thiserror::Error)]
pub enum TrialRunError {
    /// The preset does not exist.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The outcome could not be written as metrics.
    #[error(transparent)]
    Metrics(#[from] serde_json::Error),
    /// Training returned without an outcome.
    #[error("training stopped early")]
    StoppedEarly,
}

/// What can stop the MPI mode outside rank 0's search loop.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// The world cannot be split into groups of the requested size.
    #[error("--ranks-per-trial {ranks_per_trial} does not divide the {world} ranks of the job")]
    Uneven {
        /// Ranks per group asked for.
        ranks_per_trial: usize,
        /// Ranks in the job.
        world: usize,
    },
    /// A collective failed.
    #[error(transparent)]
    Dist(#[from] DistError),
    /// The corpus could not be opened.
    #[error(transparent)]
    Corpus(#[from] crate::data::corpus::CorpusError),
    /// The search uses an external trainer command.
    #[error("the MPI executor runs the built-in trainer only")]
    NeedsBuiltin,
}

/// The groups of an MPI search: this rank's group and its communicator.
pub struct Groups {
    /// The world.
    pub world: Box<dyn Communicator>,
    /// This rank's group communicator.
    pub group: Box<dyn Communicator>,
    /// Ranks per group.
    pub ranks_per_trial: usize,
}

impl Groups {
    /// Splits `world` into groups of `ranks_per_trial` consecutive ranks.
    pub fn split(world: Box<dyn Communicator>, ranks_per_trial: usize) -> Result<Self, MpiError> {
        let (w, r) = (world.size(), ranks_per_trial.max(1));
        if w % r != 0 {
            return Err(MpiError::Uneven {
                ranks_per_trial: r,
                world: w,
            });
        }
        let group = world.split(world.rank() / r, world.rank())?;
        Ok(Self {
            world,
            group,
            ranks_per_trial: r,
        })
    }

    /// Number of groups.
    pub fn count(&self) -> usize {
        self.world.size() / self.ranks_per_trial
    }

    /// This rank's group index.
    pub fn index(&self) -> usize {
        self.world.rank() / self.ranks_per_trial
    }
}

/// The model configuration a trial uses: the preset adapted to the corpus (as `mixatlas
/// train` does).
pub fn trial_model(corpus: &Corpus, preset: &str) -> Result<Qwen2Config, ModelError> {
    let mut cfg = Qwen2Config::preset(preset)?;
    cfg.adapt_to(&corpus.manifest);
    Ok(cfg)
}

/// The built-in trainer's preset, or the MPI mode's refusal of an external command.
fn builtin_preset(plan: &SearchPlan) -> Option<String> {
    match &plan.search.trainer {
        TrainerConfig::Builtin { preset } => Some(preset.clone()),
        TrainerConfig::Command { .. } => None,
    }
}

/// Trains assignment `a` with this rank's group; returns its metrics.
fn train_assignment(
    plan: &SearchPlan,
    corpus: &Corpus,
    preset: &str,
    groups: &Groups,
    a: &Assignment,
) -> Result<serde_json::Value, TrialRunError> {
    let model = trial_model(corpus, preset)?;
    let mut train = plan.train.clone();
    train.seed = plan.search.seed;
    train.clamp_warmup();
    let tp = TrainPlan {
        corpus,
        weights: a.weights.clone(),
        model,
        init_from: None,
        train,
        out: a.dir.clone(),
        resume: false,
        device: candle_core::Device::Cpu,
        preempt: None,
    };
    match train_with(&tp, groups.group.as_ref(), &mut |_| {})? {
        Some(o) => Ok(serde_json::to_value(o)?),
        None => Err(TrialRunError::StoppedEarly),
    }
}

/// Trains this rank's part of `order` (if its group has an assignment), then exchanges every
/// group's outcome; all ranks return all outcomes in group order.
pub fn run_wave(
    plan: &SearchPlan,
    corpus: &Corpus,
    preset: &str,
    groups: &Groups,
    order: &[Assignment],
) -> Result<Vec<Option<Outcome>>, DistError> {
    let mine = order.iter().find(|a| a.group == groups.index());
    let outcome: Option<Outcome> = mine.map(|a| {
        train_assignment(plan, corpus, preset, groups, a).map_err(|e| RemoteFailure::of(&e))
    });
    let mut all = Vec::with_capacity(groups.count());
    for g in 0..groups.count() {
        let root = g * groups.ranks_per_trial;
        let mut bytes = if groups.world.rank() == root {
            serde_json::to_vec(&outcome).expect("outcomes serialise")
        } else {
            Vec::new()
        };
        groups.world.broadcast_bytes(&mut bytes, root)?;
        let o: Option<Outcome> =
            serde_json::from_slice(&bytes).map_err(|source| DistError::Json {
                rank: groups.world.rank(),
                source,
            })?;
        all.push(o);
    }
    Ok(all)
}

/// The loop of ranks other than 0: follow rank 0's orders until it says stop.
pub fn worker(plan: &SearchPlan, groups: &Groups) -> Result<(), MpiError> {
    let corpus = Corpus::open(&plan.search.corpus)?;
    let preset = builtin_preset(plan).ok_or(MpiError::NeedsBuiltin)?;
    loop {
        let order: Order = broadcast_value(groups.world.as_ref(), None, 0)?;
        match order {
            Order::Stop => return Ok(()),
            Order::Run(wave) => {
                run_wave(plan, &corpus, &preset, groups, &wave)?;
            }
        }
    }
}

/// Rank 0 tells the workers the search is over.
pub fn stop_workers(groups: &Groups) -> Result<(), DistError> {
    broadcast_value(groups.world.as_ref(), Some(&Order::Stop), 0).map(|_| ())
}

/// Rank 0's executor: attempts are gathered into a wave (one per group), which
/// [`Executor::poll`] broadcasts, trains (rank 0 trains its own group's trial) and concludes.
pub struct MpiExecutor<'a> {
    plan: &'a SearchPlan,
    groups: &'a Groups,
    corpus: Corpus,
    preset: String,
    wave: Vec<(Assignment, Instant)>,
}

impl<'a> MpiExecutor<'a> {
    /// Opens the corpus (the trials train in-process) for the search of `plan` on `groups`.
    pub fn new(plan: &'a SearchPlan, groups: &'a Groups) -> Result<Self, ExecError> {
        let corpus = Corpus::open(&plan.search.corpus)?;
        let preset = builtin_preset(plan).ok_or(ExecError::MpiNeedsBuiltin)?;
        Ok(Self {
            plan,
            groups,
            corpus,
            preset,
            wave: Vec::new(),
        })
    }

    /// The event of the attempt `a` given its group's outcome.
    fn conclude(a: &Assignment, outcome: Option<Outcome>, started: Instant) -> Event {
        let fail = |reason: String| Event::Failed {
            trial: a.trial.clone(),
            attempt: a.attempt,
            reason,
        };
        match outcome {
            Some(Ok(metrics)) => match check_metrics(&a.dir) {
                Ok(_) => Event::Finished {
                    trial: a.trial.clone(),
                    attempt: a.attempt,
                    metrics,
                    wall_s: started.elapsed().as_secs_f64(),
                    fidelity: None,
                },
                Err(e) => fail(e.to_string()),
            },
            Some(Err(failure)) => fail(failure.message),
            None => fail(format!("group {} returned no result", a.group)),
        }
    }
}

impl Executor for MpiExecutor<'_> {
    fn room(&self) -> usize {
        self.groups.count().saturating_sub(self.wave.len())
    }

    fn submit(&mut self, job: TrialJob) -> Result<Option<String>, ExecError> {
        let group = self.wave.len();
        let weights = job
            .mixture
            .in_manifest_order(&self.corpus.manifest)
            .map_err(|source| ExecError::Mixture {
                trial: job.trial.clone(),
                source,
            })?;
        let assignment = Assignment {
            group,
            trial: job.trial.clone(),
            attempt: job.attempt,
            dir: job.dir().to_path_buf(),
            weights,
        };
        self.wave.push((assignment, Instant::now()));
        Ok(Some(format!("mpi:group{group}")))
    }

    fn running(&self) -> usize {
        self.wave.len()
    }

    fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
        let wave: Vec<Assignment> = self.wave.iter().map(|(a, _)| a.clone()).collect();
        broadcast_value(
            self.groups.world.as_ref(),
            Some(&Order::Run(wave.clone())),
            0,
        )?;
        let outcomes = run_wave(self.plan, &self.corpus, &self.preset, self.groups, &wave)?;
        Ok(self
            .wave
            .drain(..)
            .map(|(a, started)| {
                let outcome = outcomes.get(a.group).cloned().flatten();
                Self::conclude(&a, outcome, started)
            })
            .collect())
    }
}
