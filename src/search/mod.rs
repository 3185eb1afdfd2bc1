//! The search: finished trials (ask/tell), objectives, methods and recipes, and the full
//! search loop with its configuration, crash-safe state and executors.
//!
//! `mixatlas suggest`, `predict` and `recipe` are built from the ask/tell parts;
//! `mixatlas search` ([`run`]) drives the same ones through the trial protocol.

pub mod config;
pub mod executor;
pub mod methods;
pub mod mpi_exec;
pub mod recipe;
pub mod run;
pub mod slurm_exec;
pub mod state;
pub mod trials;
