//! Slurm: the job environment ([`env`], one table of `SLURM_*` variables), hostlists
//! ([`hostlist`]), sbatch scripts rendered from typed specs and the `slurm/` templates
//! ([`sbatch`]), the Slurm commands with typed job states ([`cmd`]), and preemption with
//! checkpoint and requeue ([`preempt`]). See `docs/slurm.md`.

pub mod cmd;
pub mod env;
pub mod hostlist;
pub mod preempt;
pub mod sbatch;

pub use cmd::{JobState, SlurmError};
pub use env::SlurmEnv;
pub use hostlist::{compress_hostlist, expand_hostlist, HostlistError};
pub use sbatch::{
    render, shell_join, shell_quote, ArraySpec, JobCommon, SbatchSpec, SearchJob, SignalSpec,
    TemplateKind, TransferJob, TrialsArrayJob,
};
