//! The Slurm executor (`mixatlas search --executor slurm`): the pending trials of a round are
//! submitted as one job array (one trial per array task, throttled with `%`), all jobs are
//! polled with a single `squeue` call with backoff, and each task's end is concluded from its
//! trial directory (`metrics.json`) and its Slurm state. Job ids are stored in
//! `trials.jsonl` (`running` events), so a restarted controller re-attaches to tasks still
//! pending or running instead of submitting them again.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Executor, Launched};
use crate::fsutil::{write_atomic, IoContext};
use crate::search::attempt::{attempt_dir, check_metrics, log_tail, TrialJob};
use crate::search::command::{shell_line, Values};
use crate::search::config::{SearchConfigError, TrainerConfig};
use crate::search::error::ExecError;
use crate::search::plan::SearchPlan;
use crate::search::state::{Event, TrialState};
use crate::slurm::cmd::{sbatch_text, squeue, JobState};
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

/// The first wait between `squeue` polls after a submission.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between `squeue` polls.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Trials as Slurm job arrays: everything submitted before a launch goes out as one array;
/// all arrays are polled with one `squeue` call, with a growing wait.
pub struct SlurmExecutor<'a> {
    plan: &'a SearchPlan,
    corpus: &'a Path,
    train_toml: &'a Path,
    slurm_dir: PathBuf,
    staged: Vec<(String, usize, PathBuf)>,
    active: Vec<Active>,
    wait: Duration,
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
            wait: FIRST_WAIT,
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
        self.wait = FIRST_WAIT;
        Ok(launched)
    }

    fn running(&self) -> usize {
        self.active.len()
    }

    fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
        std::thread::sleep(self.wait);
        self.wait = (self.wait.mul_f64(1.5)).min(MAX_WAIT);
        // One squeue call for every array involved.
        let mut arrays: Vec<&str> = self
            .active
            .iter()
            .map(|a| a.job.split('_').next().unwrap_or(&a.job))
            .collect();
        arrays.sort();
        arrays.dedup();
        let states = squeue(&arrays)?;
        let mut ended = Vec::new();
        let mut still = Vec::new();
        for a in self.active.drain(..) {
            match status_of(&states, &a.job) {
                Seen::Active => still.push(a),
                Seen::Ended(st) => ended.push(Self::conclude(a, st)),
            }
        }
        self.active = still;
        Ok(ended)
    }
}
