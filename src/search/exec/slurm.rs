//! The Slurm executor (`mixatlas search --executor slurm`): the pending trials of a round are
//! submitted as one job array (one trial per array task, throttled with `%`), and each task's
//! end is concluded from its trial directory (`metrics.json`) and its Slurm state. Job ids are
//! stored in `trials.jsonl` (`running` events), so a restarted controller re-attaches to tasks
//! still pending or running instead of submitting them again.
//!
//! Polling is built for arrays of hundreds of tasks: the controller keeps no process per
//! trial (one `sbatch` per round; the tasks are Slurm's), and every poll interval makes
//! **exactly one** scheduler query for all tasks of all arrays: a `squeue` call, or, in an
//! interval where some tasks left `squeue` without a conclusive trial directory, one batched
//! `sacct` call for those (then no `squeue` in that interval). Intervals grow from 0.5 s by
//! ×1.5 up to 10 s with ±20 % jitter drawn from the search's seed ([`Backoff`]), so any two
//! queries are at least [`MIN_INTERVAL`] apart. A failed `squeue` (slurmctld busy or
//! restarting) is retried at the next, longer interval; only [`MAX_QUERY_FAILURES`] failures
//! in a row end the search. Without an accounting database (`sacct` answers "accounting
//! storage is disabled") the tasks are concluded from their trial directories alone and
//! `sacct` is not asked again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Executor, Launched};
use crate::fsutil::{write_atomic, IoContext};
use crate::rng::SplitMix64;
use crate::search::attempt::{attempt_dir, check_metrics, log_tail, TrialJob};
use crate::search::command::{shell_line, Values};
use crate::search::config::{SearchConfigError, TrainerConfig};
use crate::search::error::ExecError;
use crate::search::plan::SearchPlan;
use crate::search::state::{Event, TrialState};
use crate::slurm::cmd::{sacct, sbatch_text, squeue, JobState};
use crate::slurm::sbatch::{render, shell_quote, JobCommon, TrialsArrayJob};

/// Whether array task `task` of `array` is covered by a pending-range entry such as
/// `123_[4-9%2]` or `123_[4,6-7]`.
fn in_pending_range(id: &str, array: &str, task: usize) -> bool {
    let Some(rest) = id.strip_prefix(&format!("{array}_[")) else {
        return false;
    };
    let body = rest.trim_end_matches(']');
    let body = body.split('%').next().unwrap_or("");
    body.split(',').any(|part| match part.split_once('-') {
        Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(a), Ok(b)) => a <= task && task <= b,
            _ => false,
        },
        None => part.parse::<usize>() == Ok(task),
    })
}

/// Where a submitted trial stands according to Slurm.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// Pending or running.
    Active,
    /// Ended in this state (or forgotten by Slurm: `None`).
    Ended(Option<JobState>),
}

fn status_of(states: &BTreeMap<String, JobState>, job: &str) -> Seen {
    // job = "ARRAY_TASK"
    let (array, task) = match job.split_once('_') {
        Some((a, t)) => (a, t.parse::<usize>().ok()),
        None => (job, None),
    };
    if let Some(st) = states.get(job) {
        return if st.is_terminal() {
            Seen::Ended(Some(st.clone()))
        } else {
            Seen::Active
        };
    }
    if let Some(task) = task {
        if states.keys().any(|id| in_pending_range(id, array, task)) {
            return Seen::Active;
        }
    }
    Seen::Ended(None)
}

/// A command trainer's placeholders in an array task's line: the trial's values from the
/// variables the template exports (`{blend}` as a whole word: `$MIXATLAS_BLEND` split at its
/// spaces, globbing off).
pub fn slurm_values(seed: u64) -> Values {
    Values {
        text: vec![
            ("trial_dir", "\"$MIXATLAS_TRIAL_DIR\"".to_string()),
            ("mixture", "\"$MIXATLAS_MIXTURE\"".to_string()),
            ("blend", "\"$MIXATLAS_BLEND\"".to_string()),
            ("seed", seed.to_string()),
        ],
        words: vec![("blend", vec!["$MIXATLAS_BLEND".to_string()])],
    }
}

/// An attempt handed to Slurm.
struct Active {
    trial: String,
    attempt: usize,
    /// `ARRAY_TASK`.
    job: String,
    dir: PathBuf,
    started: Instant,
}

/// The first wait between scheduler queries after a submission (before jitter).
pub const FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between scheduler queries (before jitter).
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// How much each wait grows.
pub const GROWTH: f64 = 1.5;
/// Relative jitter of every wait: a wait `w` becomes uniform in `[w (1 - J), w (1 + J)]`.
pub const JITTER: f64 = 0.2;
/// The shortest time between two scheduler queries: `FIRST_WAIT × (1 - JITTER)` = 0.4 s.
pub const MIN_INTERVAL: Duration = Duration::from_millis(400);
/// Scheduler queries failing in a row (`squeue` erring, e.g. slurmctld unreachable) before
/// the search gives up: with waits capped at 10 s, about 5 minutes of a dead controller.
pub const MAX_QUERY_FAILURES: usize = 30;
/// `sacct` failures in a row (other than "accounting storage is disabled") after which the
/// tasks waiting for it are concluded from their trial directories alone.
const MAX_SACCT_FAILURES: usize = 3;

/// The waits between scheduler queries: `FIRST_WAIT`, growing by `GROWTH` up to `MAX_WAIT`,
/// each with a relative jitter of ±`JITTER` from a seeded stream (so many controllers started
/// together do not query in step, and a test can replay the schedule).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    rng: SplitMix64,
}

impl Backoff {
    /// The schedule of a search seeded `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            base: FIRST_WAIT,
            rng: SplitMix64::derive(seed, 0x5151_u64),
        }
    }

    /// Starts again from `FIRST_WAIT` (after a submission).
    pub fn reset(&mut self) {
        self.base = FIRST_WAIT;
    }

    /// The next wait (jittered), then grows the base.
    pub fn next_wait(&mut self) -> Duration {
        let u = self.rng.next_f64() * 2.0 - 1.0;
        let wait = self.base.mul_f64(1.0 + JITTER * u);
        self.base = self.base.mul_f64(GROWTH).min(MAX_WAIT);
        wait.max(MIN_INTERVAL)
    }
}

/// Trials as Slurm job arrays: everything submitted before a launch goes out as one array;
/// every poll interval makes one scheduler query for all of them (see the module docs).
pub struct SlurmExecutor<'a> {
    plan: &'a SearchPlan,
    corpus: &'a Path,
    train_toml: &'a Path,
    slurm_dir: PathBuf,
    staged: Vec<(String, usize, PathBuf)>,
    /// Tasks pending or running as far as the last `squeue` knew.
    active: Vec<Active>,
    /// Tasks that left `squeue` without `metrics.json`: their end state is asked of `sacct`.
    unresolved: Vec<Active>,
    backoff: Backoff,
    /// False once `sacct` said the cluster has no accounting database.
    sacct_available: bool,
    /// Scheduler queries failed in a row.
    query_failures: usize,
    /// `sacct` calls failed in a row.
    sacct_failures: usize,
}

impl<'a> SlurmExecutor<'a> {
    /// The executor of the search of `plan` (corpus directory `corpus`, absolute; the
    /// built-in trainer's `train_toml`); creates `out/slurm` for scripts and array manifests.
    pub fn new(
        plan: &'a SearchPlan,
        corpus: &'a Path,
        train_toml: &'a Path,
    ) -> Result<Self, ExecError> {
        let slurm_dir = plan.search.out.join("slurm");
        fs::create_dir_all(&slurm_dir).at("creating", &slurm_dir)?;
        Ok(Self {
            plan,
            corpus,
            train_toml,
            slurm_dir,
            staged: Vec::new(),
            active: Vec::new(),
            unresolved: Vec::new(),
            backoff: Backoff::new(plan.search.seed),
            sacct_available: true,
            query_failures: 0,
            sacct_failures: 0,
        })
    }

    /// The shell command of one array task (run in the trial directory the task's line of
    /// the array manifest names): every value a quoted shell word, the trial's own values
    /// taken from the variables the template exports.
    fn task_command(&self) -> Result<String, ExecError> {
        let cfg = &self.plan.search;
        let q = |p: &Path| shell_quote(&p.to_string_lossy());
        Ok(match &cfg.trainer {
            TrainerConfig::Builtin { preset } => format!(
                "{} train --corpus {} --mixture \"$MIXATLAS_MIXTURE\" --out \"$MIXATLAS_TRIAL_DIR\" --preset {} --config {} --seed {} --quiet --resume",
                q(&self.plan.exe),
                q(self.corpus),
                shell_quote(preset),
                q(self.train_toml),
                cfg.seed
            ),
            TrainerConfig::Command { command, shell } => {
                let values = slurm_values(cfg.seed);
                shell_line(command, *shell, &values).map_err(|problem| {
                    SearchConfigError::TrainerCommand {
                        command: command.clone(),
                        problem,
                    }
                })?
            }
        })
    }

    /// The job array of `tasks` trials listed in `manifest`.
    fn array_job(&self, manifest: PathBuf, tasks: usize) -> Result<TrialsArrayJob, ExecError> {
        let cfg = &self.plan.search;
        let mut common = JobCommon::new("mixatlas-trials", &self.slurm_dir);
        common.partition = cfg.executor.partition.clone();
        common.time_min = cfg.executor.time_min;
        common.cpus_per_task = Some(cfg.executor.threads_per_trial as u32);
        common.extra = cfg
            .executor
            .sbatch_extra
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        common.setup = vec![
            format!(
                "export RAYON_NUM_THREADS={}",
                cfg.executor.threads_per_trial
            ),
            format!("export OMP_NUM_THREADS={}", cfg.executor.threads_per_trial),
            format!("export MIXATLAS_SEED={}", cfg.seed),
            format!(
                "export MIXATLAS_CORPUS={}",
                shell_quote(&self.corpus.to_string_lossy())
            ),
        ];
        Ok(TrialsArrayJob {
            common,
            manifest,
            tasks,
            throttle: cfg.executor.throttle,
            gpus_per_task: None,
            command: self.task_command()?,
        })
    }

    /// The event of an attempt Slurm reports ended (in state `st`, or forgotten: `None`).
    fn conclude(a: Active, st: Option<JobState>) -> Event {
        match check_metrics(&a.dir) {
            Ok(metrics) if st.as_ref().is_none_or(|s| s.is_success()) => Event::Finished {
                trial: a.trial,
                attempt: a.attempt,
                metrics,
                wall_s: a.started.elapsed().as_secs_f64(),
                fidelity: None,
            },
            other => {
                let tail = log_tail(&a.dir);
                let job = &a.job;
                let why = match (&st, other) {
                    (Some(s), _) => format!("Slurm job {job} ended {s:?}"),
                    (None, Err(e)) => format!("Slurm job {job} ended: {e}"),
                    (None, Ok(_)) => format!("Slurm job {job} ended"),
                };
                Event::Failed {
                    trial: a.trial,
                    attempt: a.attempt,
                    reason: if tail.is_empty() {
                        why
                    } else {
                        format!("{why}: {tail}")
                    },
                }
            }
        }
    }
}

impl Executor for SlurmExecutor<'_> {
    fn room(&self) -> usize {
        usize::MAX
    }

    fn reattach(&mut self, t: &TrialState) -> bool {
        let Some(job) = t.job.as_deref().and_then(|j| j.strip_prefix("slurm:")) else {
            return false;
        };
        self.active.push(Active {
            trial: t.id.clone(),
            attempt: t.attempts,
            job: job.to_string(),
            dir: attempt_dir(&self.plan.search.out, &t.id, t.attempts),
            started: Instant::now(),
        });
        true
    }

    fn submit(&mut self, job: TrialJob) -> Result<Option<String>, ExecError> {
        let dir = job.dir().to_path_buf();
        self.staged.push((job.trial, job.attempt, dir));
        Ok(None)
    }

    fn launch(&mut self, serial: usize) -> Result<Vec<Launched>, ExecError> {
        if self.staged.is_empty() {
            return Ok(Vec::new());
        }
        let lines: String = self
            .staged
            .iter()
            .map(|(_, _, dir)| format!("{}\n", dir.display()))
            .collect();
        let manifest = self.slurm_dir.join(format!("array-{serial:05}.txt"));
        write_atomic(&manifest, lines.as_bytes())?;
        let job = self.array_job(manifest.clone(), self.staged.len())?;
        let script = render(&job.spec()?);
        write_atomic(&manifest.with_extension("sbatch"), script.as_bytes())?;
        let array = sbatch_text(&script, &[])?;
        let mut launched = Vec::new();
        for (i, (trial, attempt, dir)) in self.staged.drain(..).enumerate() {
            let id = format!("{array}_{i}");
            launched.push(Launched {
                trial: trial.clone(),
                attempt,
                job: format!("slurm:{id}"),
            });
            self.active.push(Active {
                trial,
                attempt,
                job: id,
                dir,
                started: Instant::now(),
            });
        }
        self.backoff.reset();
        Ok(launched)
    }

    fn running(&self) -> usize {
        self.active.len() + self.unresolved.len()
    }

    fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
        loop {
            if self.running() == 0 {
                return Ok(Vec::new());
            }
            std::thread::sleep(self.backoff.next_wait());
            // Exactly one scheduler query in this interval.
            let ended = if !self.unresolved.is_empty() && self.sacct_available {
                self.ask_sacct()
            } else {
                self.ask_squeue()?
            };
            if !ended.is_empty() {
                return Ok(ended);
            }
        }
    }
}

/// The distinct array ids of `tasks` (`ARRAY` of `ARRAY_TASK`), sorted.
fn arrays_of(tasks: &[Active]) -> Vec<&str> {
    let mut arrays: Vec<&str> = tasks
        .iter()
        .map(|a| a.job.split('_').next().unwrap_or(&a.job))
        .collect();
    arrays.sort();
    arrays.dedup();
    arrays
}

impl SlurmExecutor<'_> {
    /// One `squeue` call for every array with an active task; returns the events of the
    /// tasks that ended. A task `squeue` no longer lists is concluded from its trial directory
    /// when that holds valid metrics, else it waits for `sacct` (when the cluster has one).
    /// A failed call ends nothing and is retried at the next interval, up to
    /// [`MAX_QUERY_FAILURES`] in a row.
    fn ask_squeue(&mut self) -> Result<Vec<Event>, ExecError> {
        let states = match squeue(&arrays_of(&self.active)) {
            Ok(states) => {
                self.query_failures = 0;
                states
            }
            Err(e) if e.is_transient() && self.query_failures + 1 < MAX_QUERY_FAILURES => {
                self.query_failures += 1;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut ended = Vec::new();
        let mut still = Vec::new();
        for a in self.active.drain(..) {
            match status_of(&states, &a.job) {
                Seen::Active => still.push(a),
                Seen::Ended(Some(st)) => ended.push(Self::conclude(a, Some(st))),
                Seen::Ended(None) => {
                    if self.sacct_available && check_metrics(&a.dir).is_err() {
                        self.unresolved.push(a);
                    } else {
                        ended.push(Self::conclude(a, None));
                    }
                }
            }
        }
        self.active = still;
        Ok(ended)
    }

    /// One batched `sacct` call for the tasks that left `squeue` without metrics; returns
    /// the events of those it settles. Tasks `sacct` reports pending or running go back to
    /// `squeue`; tasks it does not know are concluded from their trial directories, as are
    /// all of them when the cluster has no accounting database (then `sacct` is not asked
    /// again) or after [`MAX_SACCT_FAILURES`] failed calls in a row.
    fn ask_sacct(&mut self) -> Vec<Event> {
        let answer = sacct(&arrays_of(&self.unresolved));
        let states = match answer {
            Ok(states) => {
                self.sacct_failures = 0;
                states
            }
            Err(e) => {
                self.sacct_failures += 1;
                if e.is_accounting_disabled() {
                    self.sacct_available = false;
                } else if self.sacct_failures < MAX_SACCT_FAILURES {
                    return Vec::new();
                }
                BTreeMap::new()
            }
        };
        let mut ended = Vec::new();
        for a in self.unresolved.drain(..) {
            match states.get(&a.job).map(|(st, _)| st) {
                Some(st) if !st.is_terminal() => self.active.push(a),
                st => ended.push(Self::conclude(a, st.cloned())),
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_bounded_jitter_and_replay_from_the_seed() {
        let mut b = Backoff::new(7);
        let waits: Vec<Duration> = (0..40).map(|_| b.next_wait()).collect();
        let mut base = FIRST_WAIT;
        for w in &waits {
            let (lo, hi) = (base.mul_f64(1.0 - JITTER), base.mul_f64(1.0 + JITTER));
            assert!(lo <= *w && *w <= hi, "{w:?} outside [{lo:?}, {hi:?}]");
            assert!(*w >= MIN_INTERVAL);
            base = base.mul_f64(GROWTH).min(MAX_WAIT);
        }
        // Jittered: not all waits at the cap are equal.
        assert!(waits[30..].windows(2).any(|p| p[0] != p[1]));
        // Deterministic per seed, different across seeds.
        let mut again = Backoff::new(7);
        assert!(waits.iter().all(|w| *w == again.next_wait()));
        let mut other = Backoff::new(8);
        assert!(waits.iter().any(|w| *w != other.next_wait()));
        // A submission starts the schedule again.
        b.reset();
        let w = b.next_wait();
        assert!(w <= FIRST_WAIT.mul_f64(1.0 + JITTER));
    }

    #[test]
    fn pending_ranges_cover_their_tasks() {
        assert!(in_pending_range("12_[4-9%2]", "12", 4));
        assert!(in_pending_range("12_[4-9%2]", "12", 9));
        assert!(!in_pending_range("12_[4-9%2]", "12", 10));
        assert!(in_pending_range("12_[1,6-7]", "12", 7));
        assert!(!in_pending_range("12_[1,6-7]", "13", 7));
        let mut states = BTreeMap::new();
        states.insert("12_0".to_string(), JobState::Completed);
        states.insert("12_1".to_string(), JobState::Running);
        states.insert("12_[2-199%2]".to_string(), JobState::Pending);
        assert_eq!(
            status_of(&states, "12_0"),
            Seen::Ended(Some(JobState::Completed))
        );
        assert_eq!(status_of(&states, "12_1"), Seen::Active);
        assert_eq!(status_of(&states, "12_150"), Seen::Active);
        assert_eq!(status_of(&states, "13_0"), Seen::Ended(None));
    }
}
