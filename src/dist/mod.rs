//! Distributed runtime: the [`Communicator`] trait every collective goes through, the launch
//! environment (rank, world size, local rank from MPI, Open MPI or Slurm variables), and the
//! backends: [`single::SingleProcess`] (rank 0 of 1, no-ops), MPI through rsmpi behind the
//! `mpi` cargo feature, and NCCL (feature `cuda`) for device buffers, which lives with the
//! rest of the GPU path in `crate::gpu::nccl`.
//!
//! Model code never sees ranks (DESIGN.md): the trainer reduces flat gradient buffers and the
//! search broadcasts mixtures through this interface, and a watchdog turns a collective that
//! never completes (a dead rank) into a clear error naming the operation and the rank.

pub mod communicator;
pub mod env;
pub mod error;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod single;
pub mod watchdog;

/// For the NCCL backend (`crate::gpu::nccl`, feature `cuda`).
#[cfg(feature = "cuda")]
pub(crate) use communicator::check_chunks;
pub use communicator::{broadcast_value, recv_bytes, BufMut, Communicator, ReduceOp};
pub use env::LaunchEnv;
pub use error::DistError;
pub use single::SingleProcess;
