//! Executors run the attempts of a search's trials somewhere: [`local`] as child processes of
//! this machine, [`mpi`] on the rank groups of an `mpirun` job, [`slurm`] as Slurm job arrays.
//!
//! They all follow one cycle, driven by the search loop (`search::run`), which prepares each
//! attempt and records every start and end in `trials.jsonl`:
//!
//! 1. [`Executor::reattach`]: once per round, attempts an earlier controller started and that
//!    may still run (their job ids are in the log) are taken back instead of being re-run.
//! 2. [`Executor::submit`] while [`Executor::room`] allows: each prepared attempt; the job id
//!    comes back at once when the executor knows it then (a process id, a rank group) …
//! 3. [`Executor::launch`]: … or when the batch is started (a Slurm array id).
//! 4. [`Executor::poll`]: waits until attempts end and returns the event of each.
//!
//! [`sim`] is a simulated executor (a discrete-event clock, no processes) for driving the
//! real controller at scale (`mixatlas bench scale`) and for tests.
//!
//! A new executor is one new file implementing [`Executor`] and one arm where the loop picks
//! it (`search::run`).

pub mod local;
pub mod mpi;
pub mod sim;
pub mod slurm;

use super::attempt::TrialJob;
use super::error::ExecError;
use super::state::{Event, TrialState};

/// An attempt whose job id became known when its batch started ([`Executor::launch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Launched {
    /// Trial id.
    pub trial: String,
    /// Attempt number.
    pub attempt: usize,
    /// The executor's job id (recorded in the `running` event).
    pub job: String,
}

/// Somewhere attempts run (see the module docs for the cycle).
pub trait Executor {
    /// How many more attempts it takes now.
    fn room(&self) -> usize;

    /// Takes back an attempt an earlier controller started if it belongs to this executor
    /// and may still run (`t.job` is its recorded job id); returns whether it did. The
    /// default takes none back: the attempt is run again.
    fn reattach(&mut self, _t: &TrialState) -> bool {
        false
    }

    /// Takes one prepared attempt; returns its job id when it is known now, else `None` (it
    /// comes from [`Executor::launch`]).
    fn submit(&mut self, job: TrialJob) -> Result<Option<String>, ExecError>;

    /// Starts what [`Executor::submit`] took without starting; returns the job ids learnt.
    /// `serial` is the number of attempts started so far (unique per launch). The default
    /// has nothing to start.
    fn launch(&mut self, _serial: usize) -> Result<Vec<Launched>, ExecError> {
        Ok(Vec::new())
    }

    /// Attempts taken and not yet ended.
    fn running(&self) -> usize;

    /// Waits until at least one attempt ends (only called while some run) and returns the
    /// `finished` or `failed` event of each one that did, in a deterministic order.
    fn poll(&mut self) -> Result<Vec<Event>, ExecError>;
}

/// A borrowed executor is one too (so a caller can hand the search `&mut` its executor and
/// read its state afterwards, as `mixatlas bench scale` does with the simulated one).
impl<E: Executor + ?Sized> Executor for &mut E {
    fn room(&self) -> usize {
        (**self).room()
    }

    fn reattach(&mut self, t: &TrialState) -> bool {
        (**self).reattach(t)
    }

    fn submit(&mut self, job: TrialJob) -> Result<Option<String>, ExecError> {
        (**self).submit(job)
    }

    fn launch(&mut self, serial: usize) -> Result<Vec<Launched>, ExecError> {
        (**self).launch(serial)
    }

    fn running(&self) -> usize {
        (**self).running()
    }

    fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
        (**self).poll()
    }
}
