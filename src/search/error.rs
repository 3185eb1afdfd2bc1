//! What can stop a search ([`SearchError`]) and what can stop an executor ([`ExecError`]).
//!
//! Both live here, apart from the loop and the executors, so that every file of the search
//! can return them without importing the files that raise them (no import loops).

use std::path::PathBuf;

use super::config::SearchConfigError;
use super::objective::ObservationError;
use super::state::{EventError, LogError};
use crate::data::mixture::{MixtureError, UnknownCell};
use crate::dist::DistError;
use crate::fsutil::PathIoError;
use crate::slurm::sbatch::TemplateError;
use crate::slurm::SlurmError;
use crate::train::TrainError;

/// What can stop a search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The `[search]` configuration is unusable.
    #[error("search config: {0}")]
    Config(#[from] SearchConfigError),
    /// The `[train]` configuration is unusable.
    #[error("search config: {0}")]
    Train(#[source] TrainError),
    /// The stored resolved configuration is not JSON.
    #[error("search config: {}: {source}", path.display())]
    Resolved {
        /// `search.json`.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// The search directory was made with other settings.
    #[error("{path} was created with different settings ({what}); use a new --out or the same config to resume")]
    Mismatch {
        /// The resolved config file.
        path: PathBuf,
        /// Which part differs.
        what: String,
    },
    /// The event log is unusable.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An event contradicts the log (a bug: the loop writes only consistent events).
    #[error("search config: {0}")]
    Event(#[from] EventError),
    /// Filesystem error.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] crate::data::corpus::CorpusError),
    /// The space could not be built.
    #[error(transparent)]
    Space(#[from] crate::acquisition::space::SpaceError),
    /// The method could not propose.
    #[error("proposing round {round}: {source}")]
    Propose {
        /// The round.
        round: usize,
        /// Why.
        #[source]
        source: crate::acquisition::ProposeError,
    },
    /// Chameleon's mixture could not be computed from the corpus manifest.
    #[error("{}: {source}", manifest.display())]
    Chameleon {
        /// The corpus's `manifest.json`.
        manifest: PathBuf,
        /// Why.
        #[source]
        source: crate::baselines::chameleon::ChameleonError,
    },
    /// The objective could not be computed from the finished trials.
    #[error("objective: {0}")]
    Objective(#[from] ObservationError),
    /// A trial's mixture is not one over the space's cells.
    #[error("trial {trial}: {source}")]
    Mixture {
        /// The trial.
        trial: String,
        /// Why.
        #[source]
        source: MixtureError,
    },
    /// The executor failed (not a trial: trial failures are recorded and retried).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Rank 0 could not tell the MPI workers to stop.
    #[error("search config: stopping the MPI workers: {0}")]
    StopWorkers(#[source] DistError),
    /// The fidelities cannot be searched (e.g. two with the same steps and model size).
    #[error("search config: fidelities: {0}")]
    Fidelities(#[from] crate::acquisition::multifidelity::FidelityError),
    /// A setting that would fail every trial, found before anything ran.
    #[error(transparent)]
    Preflight(#[from] super::preflight::PreflightError),
    /// A trial of a multi-fidelity search whose fidelity is not among the search's.
    #[error("trial {trial}: fidelity {fidelity} is not among the search's fidelities")]
    TrialFidelity {
        /// The trial.
        trial: String,
        /// Its fidelity (`none` when it has none).
        fidelity: String,
    },
}

/// What can stop an executor (as opposed to one trial, whose failure is an event).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Filesystem error (logs, job scripts, array manifests).
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// The corpus could not be opened (the MPI executor trains in-process).
    #[error(transparent)]
    Corpus(#[from] crate::data::corpus::CorpusError),
    /// The MPI executor was given an external trainer command.
    #[error("search config: the MPI executor runs the built-in trainer only")]
    MpiNeedsBuiltin,
    /// A collective of the MPI executor failed.
    #[error("search config: {0}")]
    Dist(#[from] DistError),
    /// `sbatch` or `squeue` failed.
    #[error("search config: {0}")]
    Slurm(#[from] SlurmError),
    /// The trials' job array script could not be built.
    #[error("search config: {0}")]
    ArrayJob(#[from] TemplateError),
    /// The trainer command cannot be written into a job script (checked before a search
    /// starts, so not expected here).
    #[error("search config: {0}")]
    TrainerCommand(#[from] SearchConfigError),
    /// A trial's mixture names a cell the corpus does not have.
    #[error("trial {trial}: {source}")]
    Mixture {
        /// The trial.
        trial: String,
        /// Why.
        #[source]
        source: UnknownCell,
    },
}
