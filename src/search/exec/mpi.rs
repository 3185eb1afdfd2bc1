//! The MPI search mode (`mpirun -np W mixatlas search --executor mpi --ranks-per-trial R`):
//! rank 0 runs the search (GP, proposals, state) and the other ranks form trial groups of R
//! that train one trial each, data-parallel, with the built-in trainer in-process. Only rank 0
//! writes search state; a failed trial is a result (recorded and retried), not a hang; a dead
//! rank ends the job (mpirun), a rank silent inside a collective trips the watchdog.
//!
//! Layout ([`Groups::split`]): when `W - 1` is a multiple of R (`-np 3`, `-np 5 --ranks-per-
//! trial 2`), rank 0 is a **dedicated controller** and ranks 1… form `(W - 1)/R` groups; else
//! (`-np 4 --ranks-per-trial 2`, `-np 1`) rank 0 also leads group 0 and trains its trials
//! **inline**, `W/R` groups.
//!
//! Messages are point to point, so rank 0 handles results in the order they arrive: it sends
//! each group leader one [`Order`] when the group is free, the leader passes it to its group
//! and, after training, sends a [`Report`] back; rank 0 records whichever report comes first
//! and at once hands that group the next pending trial, while the other groups go on
//! training. No group waits for another (inline, rank 0 cannot receive while it trains its own
//! group's trial: reports that arrived meanwhile are recorded right after it, and reports
//! already waiting are recorded before it starts).
//!
//! Rank 0's side is [`MpiExecutor`]; the other ranks run [`worker`].

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Executor;
use crate::data::corpus::Corpus;
use crate::dist::{recv_bytes, Communicator, DistError};
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

/// What rank 0 sends a group's leader (who passes it to the group's other ranks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Order {
    /// Train this trial.
    Run(Assignment),
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
    #[error("--ranks-per-trial {ranks_per_trial} divides neither the {world} ranks of the job nor the ranks after rank 0")]
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
    /// This rank's group communicator (rank 0 alone, when it is a dedicated controller).
    pub group: Box<dyn Communicator>,
    /// Ranks per group.
    pub ranks_per_trial: usize,
    /// Whether rank 0 is a controller outside every trial group.
    pub dedicated: bool,
}

impl Groups {
    /// Splits `world` into groups of `ranks_per_trial` consecutive ranks: ranks 1… when
    /// `W - 1` is a multiple of it (rank 0 then only controls), else ranks 0….
    pub fn split(world: Box<dyn Communicator>, ranks_per_trial: usize) -> Result<Self, MpiError> {
        let r = ranks_per_trial.max(1);
        let (dedicated, color) = layout(world.size(), r, world.rank())?;
        let group = world.split(color, world.rank())?;
        Ok(Self {
            world,
            group,
            ranks_per_trial: r,
            dedicated,
        })
    }

    /// Number of trial groups.
    pub fn count(&self) -> usize {
        if self.dedicated {
            (self.world.size() - 1) / self.ranks_per_trial
        } else {
            self.world.size() / self.ranks_per_trial
        }
    }

    /// The world rank that leads group `g` (receives its orders, sends its reports).
    pub fn leader(&self, g: usize) -> usize {
        usize::from(self.dedicated) + g * self.ranks_per_trial
    }

    /// This rank's trial group, `None` for a dedicated controller.
    pub fn index(&self) -> Option<usize> {
        let rank = self.world.rank();
        match (self.dedicated, rank) {
            (true, 0) => None,
            (true, _) => Some((rank - 1) / self.ranks_per_trial),
            (false, _) => Some(rank / self.ranks_per_trial),
        }
    }
}

/// The layout of `w` ranks in groups of `r` (see the module docs): whether rank 0 is a
/// dedicated controller, and the split colour of `rank` (rank 0 alone has colour 0 then).
fn layout(w: usize, r: usize, rank: usize) -> Result<(bool, usize), MpiError> {
    let dedicated = w > 1 && (w - 1) % r == 0;
    if !dedicated && w % r != 0 {
        return Err(MpiError::Uneven {
            ranks_per_trial: r,
            world: w,
        });
    }
    let color = match (dedicated, rank) {
        (true, 0) => 0,
        (true, _) => 1 + (rank - 1) / r,
        (false, _) => rank / r,
    };
    Ok((dedicated, color))
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

/// What a group leader sends rank 0 after training its trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The group.
    pub group: usize,
    /// Trial id.
    pub trial: String,
    /// Attempt number.
    pub attempt: usize,
    /// The outcome.
    pub outcome: Outcome,
}

fn encode<T: Serialize>(comm: &dyn Communicator, value: &T) -> Result<Vec<u8>, DistError> {
    serde_json::to_vec(value).map_err(|source| DistError::Json {
        rank: comm.rank(),
        source,
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    comm: &dyn Communicator,
    bytes: &[u8],
) -> Result<T, DistError> {
    serde_json::from_slice(bytes).map_err(|source| DistError::Json {
        rank: comm.rank(),
        source,
    })
}

/// Passes an order's bytes from this group's leader to the group's other ranks.
fn pass_to_group(groups: &Groups, bytes: &[u8]) -> Result<(), DistError> {
    for r in 1..groups.group.size() {
        groups.group.send_bytes(bytes, r)?;
    }
    Ok(())
}

/// The loop of ranks other than 0: follow rank 0's orders until it says stop. A group's
/// leader receives them from rank 0 and passes them on; after each trial it reports back.
pub fn worker(plan: &SearchPlan, groups: &Groups) -> Result<(), MpiError> {
    let corpus = Corpus::open(&plan.search.corpus)?;
    let preset = builtin_preset(plan).ok_or(MpiError::NeedsBuiltin)?;
    let leader = groups.group.rank() == 0;
    loop {
        let bytes = if leader {
            let (_, bytes) = recv_bytes(groups.world.as_ref(), Some(0))?;
            pass_to_group(groups, &bytes)?;
            bytes
        } else {
            recv_bytes(groups.group.as_ref(), Some(0))?.1
        };
        match decode::<Order>(groups.world.as_ref(), &bytes)? {
            Order::Stop => return Ok(()),
            Order::Run(a) => {
                let outcome = train_assignment(plan, &corpus, &preset, groups, &a)
                    .map_err(|e| RemoteFailure::of(&e));
                if leader {
                    let report = Report {
                        group: a.group,
                        trial: a.trial,
                        attempt: a.attempt,
                        outcome,
                    };
                    let bytes = encode(groups.world.as_ref(), &report)?;
                    groups.world.send_bytes(&bytes, 0)?;
                }
            }
        }
    }
}

/// Rank 0 tells every group the search is over.
pub fn stop_workers(groups: &Groups) -> Result<(), DistError> {
    let bytes = encode(groups.world.as_ref(), &Order::Stop)?;
    for g in 0..groups.count() {
        if groups.dedicated || g > 0 {
            groups.world.send_bytes(&bytes, groups.leader(g))?;
        } else {
            pass_to_group(groups, &bytes)?;
        }
    }
    Ok(())
}

/// Rank 0's executor: each attempt goes to a free group at once; [`Executor::poll`]
/// returns the result of whichever group reports first (see the module docs).
pub struct MpiExecutor<'a> {
    plan: &'a SearchPlan,
    groups: &'a Groups,
    corpus: Corpus,
    preset: String,
    /// Per group: the attempt it trains.
    busy: Vec<Option<(Assignment, Instant)>>,
    /// Inline layout: group 0's attempt waits for rank 0 to train it.
    own_pending: bool,
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
            busy: vec![None; groups.count()],
            own_pending: false,
        })
    }

    /// The event of the attempt `a` given its group's outcome.
    fn conclude(a: &Assignment, outcome: Outcome, started: Instant) -> Event {
        let fail = |reason: String| Event::Failed {
            trial: a.trial.clone(),
            attempt: a.attempt,
            reason,
        };
        match outcome {
            Ok(metrics) => match check_metrics(&a.dir) {
                Ok(_) => Event::Finished {
                    trial: a.trial.clone(),
                    attempt: a.attempt,
                    metrics,
                    wall_s: started.elapsed().as_secs_f64(),
                    fidelity: None,
                },
                Err(e) => fail(e.to_string()),
            },
            Err(failure) => fail(failure.message),
        }
    }

    /// The event of a group's report; frees the group.
    fn take_report(&mut self, from: usize, bytes: &[u8]) -> Result<Event, ExecError> {
        let world = self.groups.world.as_ref();
        let report: Report = decode(world, bytes)?;
        let slot = self.busy.get_mut(report.group).and_then(Option::take);
        match slot {
            Some((a, started)) if a.trial == report.trial && a.attempt == report.attempt => {
                Ok(Self::conclude(&a, report.outcome, started))
            }
            other => Err(ExecError::Dist(DistError::Codec {
                rank: world.rank(),
                reason: format!(
                    "rank {from} reported {} attempt {} for group {}, which trains {:?}",
                    report.trial,
                    report.attempt,
                    report.group,
                    other.map(|(a, _)| (a.trial, a.attempt))
                ),
            })),
        }
    }

    /// Inline layout: rank 0's group trains its attempt now.
    fn train_own(&mut self) -> Result<Event, ExecError> {
        self.own_pending = false;
        let (a, started) = self.busy[0].take().expect("group 0 has an attempt");
        let bytes = encode(self.groups.world.as_ref(), &Order::Run(a.clone()))?;
        pass_to_group(self.groups, &bytes)?;
        let outcome = train_assignment(self.plan, &self.corpus, &self.preset, self.groups, &a)
            .map_err(|e| RemoteFailure::of(&e));
        Ok(Self::conclude(&a, outcome, started))
    }
}

impl Executor for MpiExecutor<'_> {
    fn room(&self) -> usize {
        self.busy.iter().filter(|b| b.is_none()).count()
    }

    fn submit(&mut self, job: TrialJob) -> Result<Option<String>, ExecError> {
        let group = self
            .busy
            .iter()
            .position(Option::is_none)
            .expect("submit is called only while room() > 0");
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
        if self.groups.dedicated || group > 0 {
            let world = self.groups.world.as_ref();
            let bytes = encode(world, &Order::Run(assignment.clone()))?;
            world.send_bytes(&bytes, self.groups.leader(group))?;
        } else {
            self.own_pending = true;
        }
        self.busy[group] = Some((assignment, Instant::now()));
        Ok(Some(format!("mpi:group{group}")))
    }

    fn running(&self) -> usize {
        self.busy.iter().filter(|b| b.is_some()).count()
    }

    fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
        let world = self.groups.world.as_ref();
        if self.own_pending {
            // Reports already here are recorded before rank 0 starts training.
            let mut events = Vec::new();
            while let Some((from, bytes)) = match self.groups.count() {
                1 => None,
                _ => world.try_recv_bytes(None)?,
            } {
                events.push(self.take_report(from, &bytes)?);
            }
            if events.is_empty() {
                events.push(self.train_own()?);
            }
            return Ok(events);
        }
        let (from, bytes) = recv_bytes(world, None)?;
        Ok(vec![self.take_report(from, &bytes)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_0_controls_alone_when_the_other_ranks_split_evenly() {
        let colors = |w, r| -> Vec<usize> { (0..w).map(|k| layout(w, r, k).unwrap().1).collect() };
        // -np 3: a controller and two one-rank groups.
        assert!(layout(3, 1, 0).unwrap().0);
        assert_eq!(colors(3, 1), [0, 1, 2]);
        // -np 5 --ranks-per-trial 2: a controller and two groups of two.
        assert_eq!(colors(5, 2), [0, 1, 1, 2, 2]);
        // -np 4 --ranks-per-trial 2: rank 0 leads group 0 (inline).
        assert!(!layout(4, 2, 0).unwrap().0);
        assert_eq!(colors(4, 2), [0, 0, 1, 1]);
        // One process trains inline.
        assert_eq!(layout(1, 1, 0).unwrap(), (false, 0));
        // Neither W nor W - 1 a multiple of R.
        assert!(matches!(layout(6, 4, 0), Err(MpiError::Uneven { .. })));
    }
}
