//! Preemption: Slurm sends `SIGUSR2` ahead of a time limit or preemption (`#SBATCH
//! --signal=B:USR2@GRACE`, forwarded by the batch script to the command); the handler only
//! sets a flag, the training loop polls it after every step, checkpoints and stops, and the
//! job requeues itself with `scontrol requeue`, a bounded number of times. USR2, not USR1:
//! NCCL may catch USR1 (submitit's habit).

use std::sync::atomic::{AtomicBool, Ordering};

use super::cmd::{self, SlurmError};
use super::env::SlurmEnv;

/// Set by the signal handler; read with [`requested`].
static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store, nothing else.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for `SIGUSR2` and returns the flag it sets.
pub fn install() -> std::io::Result<&'static AtomicBool> {
    install_for(libc::SIGUSR2)
}

/// Installs the flag-setting handler for `signal` (e.g. `libc::SIGTERM` as well).
pub fn install_for(signal: libc::c_int) -> std::io::Result<&'static AtomicBool> {
    // SAFETY: a zeroed sigaction is valid; the handler only performs an atomic store, which is
    // async-signal-safe; SA_RESTART keeps interrupted system calls (file writes) transparent.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(signal, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(&REQUESTED)
}

/// The flag the handler sets (also usable before [`install`]: it then stays false).
pub fn flag() -> &'static AtomicBool {
    &REQUESTED
}

/// Whether a preemption signal has arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// What [`requeue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// `scontrol requeue` accepted the job; it will start again (restart count + 1).
    Requeued {
        /// The job.
        job_id: String,
        /// Its restart count after this requeue.
        restart: u32,
    },
    /// The job was already requeued `max_requeues` times; it is left to end.
    LimitReached {
        /// Restarts so far.
        restarts: u32,
    },
    /// Not inside a Slurm job: nothing to requeue.
    NotInJob,
}

/// Requeues the current job with `scontrol requeue` when it has been restarted fewer than
/// `max_requeues` times (`SLURM_RESTART_COUNT`). The job must be requeueable (`--requeue`,
/// which the templates set). Slurm then ends this allocation (checkpoint first!) and starts
/// the job again, where `--resume` continues from the checkpoint.
pub fn requeue(env: &SlurmEnv, max_requeues: u32) -> Result<Requeue, SlurmError> {
    let Some(job_id) = &env.job_id else {
        return Ok(Requeue::NotInJob);
    };
    if env.restart_count >= max_requeues {
        return Ok(Requeue::LimitReached {
            restarts: env.restart_count,
        });
    }
    cmd::requeue(job_id)?;
    Ok(Requeue::Requeued {
        job_id: job_id.clone(),
        restart: env.restart_count + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_is_bounded_and_needs_a_job() {
        let off = SlurmEnv::default();
        assert_eq!(requeue(&off, 3).unwrap(), Requeue::NotInJob);
        let at_limit = SlurmEnv {
            job_id: Some("7".into()),
            restart_count: 3,
            ..SlurmEnv::default()
        };
        assert_eq!(
            requeue(&at_limit, 3).unwrap(),
            Requeue::LimitReached { restarts: 3 }
        );
    }

    #[test]
    fn the_handler_only_sets_the_flag() {
        let flag = install().unwrap();
        assert!(!requested() || flag.load(Ordering::SeqCst));
        // SAFETY: raising a signal whose handler was just installed.
        unsafe {
            libc::raise(libc::SIGUSR2);
        }
        assert!(requested());
        REQUESTED.store(false, Ordering::SeqCst);
    }
}
