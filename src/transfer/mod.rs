//! Transfer: train the larger model on each baseline mixture and on the recipe with identical
//! settings and seeds (the recipe once per seed, however many baselines), evaluating on a
//! schedule, then compare the recipe with each baseline (steps to baseline loss on the
//! held-out loss, benchmark scores). Runs on one process or data-parallel under `mpirun`
//! (every rank calls [`run_transfers`] with the world communicator); a rerun skips finished runs
//! and resumes interrupted ones from their checkpoints.
//!
//! [`plan`] says what to run, [`run`] runs it, [`summary`] is the outcome (`transfer.json`),
//! [`error`] why it failed.

pub mod error;
pub mod plan;
pub mod run;
pub mod summary;

pub use error::{BaselineListError, TransferError};
pub use plan::{
    check_baselines, parse_baselines, run_dir, Baseline, MultiTransferPlan, NamedBaseline,
    LEGACY_BASELINE_ARM, RECIPE_ARM,
};
pub use run::run_transfers;
pub use summary::{BenchmarkRow, ComparedArm, Comparison, RunMetrics, TransferSummary};
