//! The MPI search mode (`mpirun -np W mixatlas search --executor mpi --ranks-per-trial R`):
//! rank 0 runs the search (GP, proposals, state); the world is split into W/R groups; for
//! every wave of up to W/R pending trials rank 0 broadcasts the assignments, each group trains
//! its trial data-parallel with the built-in trainer in-process, and every group leader
//! broadcasts its result back. Only rank 0 writes search state; a failed trial is a result
//! (recorded and retried), not a hang; a dead or silent rank trips the collective watchdog.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::run::SearchPlan;
use crate::data::corpus::Corpus;
use crate::dist::{broadcast_value, Communicator, DistError};
use crate::model::Qwen2Config;
use crate::train::{train_with, TrainPlan};

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

/// A group's outcome: `metrics.json` or the failure's reason.
pub type Outcome = Result<serde_json::Value, String>;

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
    pub fn split(world: Box<dyn Communicator>, ranks_per_trial: usize) -> Result<Self, String> {
        let (w, r) = (world.size(), ranks_per_trial.max(1));
        if w % r != 0 {
            return Err(format!(
                "--ranks-per-trial {r} does not divide the {w} ranks of the job"
            ));
        }
        let group = world
            .split(world.rank() / r, world.rank())
            .map_err(|e| e.to_string())?;
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
pub fn trial_model(corpus: &Corpus, preset: &str) -> Result<Qwen2Config, String> {
    let mut cfg = Qwen2Config::preset(preset).map_err(|e| e.to_string())?;
    cfg.adapt_to(&corpus.manifest);
    Ok(cfg)
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
        match train_with(&tp, groups.group.as_ref(), &mut |_| {}) {
            Ok(Some(o)) => serde_json::to_value(o).map_err(|e| e.to_string()),
            Ok(None) => Err("training stopped early".into()),
            Err(e) => Err(e.to_string()),
        }
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
        let o: Option<Outcome> = serde_json::from_slice(&bytes).map_err(|e| DistError::Codec {
            rank: groups.world.rank(),
            reason: e.to_string(),
        })?;
        all.push(o);
    }
    Ok(all)
}

/// The loop of ranks other than 0: follow rank 0's orders until it says stop.
pub fn worker(plan: &SearchPlan, groups: &Groups) -> Result<(), String> {
    let corpus = Corpus::open(&plan.search.corpus).map_err(|e| e.to_string())?;
    let preset = match &plan.search.trainer {
        super::config::TrainerConfig::Builtin { preset } => preset.clone(),
        _ => return Err("the MPI executor runs the built-in trainer only".into()),
    };
    loop {
        let order: Order =
            broadcast_value(groups.world.as_ref(), None, 0).map_err(|e| e.to_string())?;
        match order {
            Order::Stop => return Ok(()),
            Order::Run(wave) => {
                run_wave(plan, &corpus, &preset, groups, &wave).map_err(|e| e.to_string())?;
            }
        }
    }
}
