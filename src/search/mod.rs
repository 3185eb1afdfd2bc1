//! The search: finished trials (ask/tell), objectives, methods and recipes, and the full
//! search loop with its configuration, crash-safe state and executors.
//!
//! `mixatlas suggest`, `predict` and `recipe` are built from the ask/tell parts ([`trials`],
//! [`methods`], [`recipe`]); `mixatlas search` ([`run`]) drives the same ones through the trial
//! protocol:
//!
//! - [`config`]: `[search]` (method, budget, objective, trainer, executor) and its checks;
//! - [`plan`]: the resolved run, its files in the search directory, progress and summary;
//! - [`preflight`]: the checks made before anything runs (corpus, preset, trainer, output);
//! - [`state`]: `trials.jsonl`, the fsync'd event log, and its replay;
//! - [`attempt`]: one attempt's directory and command, its metrics, its record in the log;
//! - [`command`]: trainer command templates, split into arguments (no shell unless asked);
//! - [`exec`]: where attempts run (local processes, MPI rank groups, Slurm arrays);
//! - [`fidelity`], [`multifidelity`]: a trial's fidelity (model preset × steps), and the
//!   multi-fidelity search's costs, proposals and target-fidelity recipe;
//! - [`objective`]: metrics → scores → objectives → observations of the space;
//! - [`curve`]: scoring a trial along its held-out curve (`last:K`, `auc`) instead of at its end;
//! - [`recommend`]: the recipe after every round;
//! - [`run`]: the loop; [`error`]: what stops a search or an executor.

pub mod attempt;
pub mod command;
pub mod config;
pub mod curve;
pub mod error;
pub mod exec;
pub mod fidelity;
pub mod methods;
pub mod multifidelity;
pub mod objective;
pub mod plan;
pub mod preflight;
pub mod recipe;
pub mod recommend;
pub mod run;
pub mod state;
pub mod trials;
