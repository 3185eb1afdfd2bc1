//! Integration tests, built as one binary (see STYLE.md).

mod architecture;
mod ask;
mod cli;
#[cfg(feature = "mpi")]
mod dist;
mod embed;
mod fuzz_smoke;
mod gp;
mod gpu;
mod harden_data;
mod harden_guards;
mod harden_inject;
mod harden_lock;
mod harden_resume;
mod megatron_compat;
mod model;
mod real_data;
mod real_data_e2e;
mod report;
mod sampler;
mod search;
mod search_quality;
mod slurm;
mod steps_to_loss;
mod train;
mod transfer;
