//! Transfer: train the larger model on the baseline mixture and on the recipe with identical
//! settings and seeds, evaluating on a schedule, then compare (steps to baseline loss on the
//! held-out loss, benchmark scores). Runs on one process or data-parallel under `mpirun`
//! (every rank calls [`run_transfer`] with the world communicator); a rerun skips finished runs
//! and resumes interrupted ones from their checkpoints.
//!
//! [`plan`] says what to run, [`run`] runs it, [`summary`] is the outcome (`transfer.json`),
//! [`error`] why it failed.

pub mod error;
pub mod plan;
pub mod run;
pub mod summary;

pub use error::TransferError;
pub use plan::{run_dir, Baseline, TransferPlan};
pub use run::run_transfer;
pub use summary::{BenchmarkRow, RunMetrics, TransferSummary};
