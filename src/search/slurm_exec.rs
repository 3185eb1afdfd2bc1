//! The Slurm executor (`mixatlas search --executor slurm`): the pending trials of a round are
//! submitted as one job array (one trial per array task, throttled with `%`), all jobs are
//! polled with a single `squeue` call with backoff, and each task's end is concluded from its
//! trial directory (`metrics.json`) and its Slurm state. Job ids are stored in
//! `trials.jsonl` (`running` events), so a restarted controller re-attaches to tasks still
//! pending or running instead of submitting them again.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::config::TrainerConfig;
use super::run::{check_metrics, record, render_command, Attempts, SearchError, SearchProgress};
use super::state::{Event, EventLog, SearchState, Status, TrialState};
use crate::fsutil::{write_atomic, IoContext};
use crate::slurm::cmd::{sbatch_text, squeue, JobState};
use crate::slurm::sbatch::{render, JobCommon, TrialsArrayJob};

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

/// Runs every pending trial through Slurm job arrays (re-attaching to jobs recorded by an
/// earlier controller) until none is pending.
pub(crate) fn run_pending(
    attempts: &Attempts<'_>,
    log: &mut EventLog,
    state: &mut SearchState,
    max_attempts: usize,
    queue: &mut Vec<TrialState>,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<(), SearchError> {
    let (plan, space, corpus, train_toml) = (
        attempts.plan,
        attempts.space,
        attempts.corpus,
        attempts.train_toml,
    );
    let cfg = &plan.search;
    let out = &cfg.out;
    let slurm_dir = out.join("slurm");
    fs::create_dir_all(&slurm_dir).at("creating", &slurm_dir)?;
    let slurm_err = |e: crate::slurm::cmd::SlurmError| SearchError::Config(e.to_string());
    // (trial, attempt, job id, attempt dir, started)
    let mut active: Vec<(String, usize, String, std::path::PathBuf, Instant)> = Vec::new();
    // Re-attach to attempts an earlier controller submitted.
    queue.retain(
        |t| match t.job.as_deref().and_then(|j| j.strip_prefix("slurm:")) {
            Some(job) => {
                let dir = super::run::attempt_dir(out, &t.id, t.attempts);
                active.push((
                    t.id.clone(),
                    t.attempts,
                    job.to_string(),
                    dir,
                    Instant::now(),
                ));
                false
            }
            None => true,
        },
    );
    let mut wait = Duration::from_millis(500);
    loop {
        // Submit everything queued as one array.
        if !queue.is_empty() {
            let mut lines = String::new();
            let mut batch = Vec::new();
            while let Some(t) = queue.pop() {
                let attempt = t.attempts + 1;
                let job = attempts.prepare(&t, attempt)?;
                let dir = job.log.parent().expect("attempt dir").to_path_buf();
                lines += &format!("{}\n", dir.display());
                batch.push((t, attempt, dir));
            }
            let n = state.trials.iter().map(|t| t.attempts).sum::<usize>();
            let manifest_path = slurm_dir.join(format!("array-{n:05}.txt"));
            write_atomic(&manifest_path, lines.as_bytes())?;
            let command = match &cfg.trainer {
                TrainerConfig::Builtin { preset } => format!(
                    "{} train --corpus {} --mixture \"$MIXATLAS_MIXTURE\" --out \"$MIXATLAS_TRIAL_DIR\" --preset {} --config {} --seed {} --quiet --resume",
                    plan.exe.display(),
                    corpus.display(),
                    preset,
                    train_toml.display(),
                    cfg.seed
                ),
                TrainerConfig::Command { command } => render_command(
                    command,
                    Path::new("$MIXATLAS_TRIAL_DIR"),
                    "$MIXATLAS_BLEND",
                    cfg.seed,
                )
                .replace("$MIXATLAS_TRIAL_DIR/mixture.json", "$MIXATLAS_MIXTURE"),
            };
            let mut common = JobCommon::new("mixatlas-trials", &slurm_dir);
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
                format!("export MIXATLAS_CORPUS={}", corpus.display()),
            ];
            let job = TrialsArrayJob {
                common,
                manifest: manifest_path.clone(),
                tasks: batch.len(),
                throttle: cfg.executor.throttle,
                gpus_per_task: None,
                command,
            };
            let script = render(&job.spec().map_err(|e| SearchError::Config(e.to_string()))?);
            write_atomic(&manifest_path.with_extension("sbatch"), script.as_bytes())?;
            let array = sbatch_text(&script, &[]).map_err(slurm_err)?;
            for (i, (t, attempt, dir)) in batch.into_iter().enumerate() {
                let id = format!("{array}_{i}");
                super::run::record_running(
                    log,
                    state,
                    &t.id,
                    attempt,
                    format!("slurm:{id}"),
                    max_attempts,
                    progress,
                )?;
                active.push((t.id.clone(), attempt, id, dir, Instant::now()));
            }
            wait = Duration::from_millis(500);
        }
        if active.is_empty() {
            return Ok(());
        }
        std::thread::sleep(wait);
        wait = (wait.mul_f64(1.5)).min(Duration::from_secs(10));
        // One squeue call for every array involved.
        let mut arrays: Vec<&str> = active
            .iter()
            .map(|a| a.2.split('_').next().unwrap_or(&a.2))
            .collect();
        arrays.sort();
        arrays.dedup();
        let states = squeue(&arrays).map_err(slurm_err)?;
        let mut still = Vec::new();
        for a in active.drain(..) {
            match status_of(&states, &a.2) {
                Seen::Active => still.push(a),
                Seen::Ended(st) => {
                    let (trial, attempt, job, dir, started) = a;
                    let ev = match check_metrics(&dir) {
                        Ok(metrics) if st.as_ref().is_none_or(|s| s.is_success()) => {
                            Event::Finished {
                                trial: trial.clone(),
                                attempt,
                                metrics,
                                wall_s: started.elapsed().as_secs_f64(),
                            }
                        }
                        other => {
                            let tail = super::run::log_tail(&dir);
                            let why = match (&st, other) {
                                (Some(s), _) => format!("Slurm job {job} ended {s:?}"),
                                (None, Err(e)) => format!("Slurm job {job} ended: {e}"),
                                (None, Ok(_)) => format!("Slurm job {job} ended"),
                            };
                            Event::Failed {
                                trial: trial.clone(),
                                attempt,
                                reason: if tail.is_empty() {
                                    why
                                } else {
                                    format!("{why}: {tail}")
                                },
                            }
                        }
                    };
                    record(
                        log,
                        state,
                        ev,
                        max_attempts,
                        space,
                        &plan.search,
                        queue,
                        progress,
                    )?;
                }
            }
        }
        active = still;
        // Retried trials are back in the queue: they go out with the next array.
        queue.retain(|t| t.status == Status::Pending);
    }
}
