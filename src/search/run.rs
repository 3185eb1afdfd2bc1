//! The search loop (`mixatlas search`): propose a round of mixtures, run them as trials
//! through the trial protocol, learn from the results, repeat; write the recipe after every
//! round. All state lives in the search directory and survives `kill -9`: rerunning the same
//! command resumes (finished trials are never re-run, interrupted ones are re-run, failed ones
//! retried up to `retries` times and then left out with their reason).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::config::{Metric, SearchConfig, TrainerConfig};
use super::executor::{Completion, Ended, LocalExecutor, TrialJob};
use super::recipe::{Recipe, RecipeSource};
use super::state::{Event, EventLog, LogError, SearchState, Status, TrialState};
use super::trials::Trial;
use crate::acquisition::space::SearchSpace;
use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
use crate::acquisition::{Observations, Proposal};
use crate::data::corpus::Manifest;
use crate::fsutil::{write_atomic, IoContext, PathIoError};
use crate::surrogate::Posterior;
use crate::train::TrainConfig;

/// The resolved configuration file inside a search directory.
pub const RESOLVED_FILE: &str = "search.json";
/// The recipe inside a search directory.
pub const RECIPE_FILE: &str = "recipe.json";
/// Fitted GP state inside a search directory.
pub const GP_FILE: &str = "gp.json";

/// What can stop a search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The configuration is unusable.
    #[error("search config: {0}")]
    Config(String),
    /// The search directory was made with other settings.
    #[error("{path} was created with different settings ({what}); use a new --out or the same config to resume")]
    Mismatch {
        /// The resolved config file.
        path: PathBuf,
        /// Which part differs.
        what: String,
    },
    /// The event log is unusable.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Filesystem error.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// The corpus could not be read.
    #[error(transparent)]
    Corpus(#[from] crate::data::corpus::CorpusError),
    /// The space could not be built.
    #[error(transparent)]
    Space(#[from] crate::acquisition::space::SpaceError),
    /// The method could not propose.
    #[error("proposing round {round}: {source}")]
    Propose {
        /// The round.
        round: usize,
        /// Why.
        #[source]
        source: crate::acquisition::ProposeError,
    },
    /// The objective could not be computed from the finished trials.
    #[error("objective: {0}")]
    Objective(String),
}

/// A resolved search run.
#[derive(Debug, Clone)]
pub struct SearchPlan {
    /// `[search]`.
    pub search: SearchConfig,
    /// `[train]` for the built-in trainer.
    pub train: TrainConfig,
    /// The `mixatlas` executable the built-in trainer runs as.
    pub exe: PathBuf,
}

/// Live events for progress displays.
#[derive(Debug, Clone)]
pub enum SearchProgress {
    /// A round was proposed.
    Proposed {
        /// Round.
        round: usize,
        /// Trial ids.
        trials: Vec<String>,
    },
    /// An attempt started.
    Started {
        /// Trial id.
        trial: String,
        /// Attempt.
        attempt: usize,
    },
    /// A trial finished.
    Finished {
        /// Trial id.
        trial: String,
        /// Its objective.
        objective: Option<f64>,
        /// Best objective so far.
        best: Option<f64>,
        /// Finished trials so far.
        done: usize,
        /// Budget.
        total: usize,
    },
    /// An attempt failed.
    Failed {
        /// Trial id.
        trial: String,
        /// Why.
        reason: String,
    },
}

/// What a finished search reports.
#[derive(Debug, Clone, Serialize)]
pub struct SearchSummary {
    /// Trials finished.
    pub finished: usize,
    /// Trials left out after all attempts, with reasons.
    pub abandoned: Vec<(String, String)>,
    /// Objective of every finished trial in order (id, objective).
    pub objectives: Vec<(String, f64)>,
    /// Best observed objective after each finished trial.
    pub best_so_far: Vec<f64>,
    /// The recipe.
    pub recipe: Option<Recipe>,
}

/// The per-benchmark scores of a trial's metrics under `metric` (negative loss when the
/// metrics carry `benchmark_loss`, else the `benchmarks` as they are).
pub fn scores(
    metrics: &serde_json::Value,
    metric: Metric,
) -> Result<BTreeMap<String, f64>, String> {
    let table = |key: &str| -> Option<Result<BTreeMap<String, f64>, String>> {
        metrics.get(key).map(|v| {
            serde_json::from_value::<BTreeMap<String, f64>>(v.clone())
                .map_err(|e| format!("metrics `{key}` is not a map of numbers: {e}"))
        })
    };
    let out = match (metric, table("benchmark_loss")) {
        (Metric::NegLoss, Some(l)) => l?.into_iter().map(|(k, v)| (k, -v)).collect(),
        _ => table("benchmarks").ok_or("metrics.json has no `benchmarks`")??,
    };
    if let Some((k, v)) = out.iter().find(|(_, v)| !v.is_finite()) {
        return Err(format!("benchmark {k:?} has a non-finite score {v}"));
    }
    Ok(out)
}

fn mixture_vec(space: &SearchSpace, named: &BTreeMap<String, f64>) -> Vec<f64> {
    space
        .cells
        .iter()
        .map(|c| named.get(c).copied().unwrap_or(0.0))
        .collect()
}

fn named(space: &SearchSpace, w: &[f64]) -> BTreeMap<String, f64> {
    space.cells.iter().cloned().zip(w.iter().copied()).collect()
}

/// Observations (space coordinates, objective) of the finished trials.
pub fn observations(
    space: &SearchSpace,
    finished: &[&TrialState],
    cfg: &SearchConfig,
) -> Result<(Observations, Vec<(String, f64)>), SearchError> {
    let mut trials = Vec::new();
    for (i, t) in finished.iter().enumerate() {
        let Status::Finished { metrics, .. } = &t.status else {
            continue;
        };
        trials.push(Trial {
            id: t.id.clone(),
            line: i + 1,
            mixture: mixture_vec(space, &t.mixture),
            benchmarks: scores(metrics, cfg.objective.metric).map_err(SearchError::Objective)?,
            objective: metrics.get("objective").and_then(|v| v.as_f64()),
        });
    }
    let y = cfg
        .objective
        .spec()
        .evaluate(&trials)
        .map_err(SearchError::Objective)?;
    let mut obs = Observations::default();
    let mut ys = Vec::new();
    for (t, y) in trials.iter().zip(y) {
        obs.push(
            space
                .from_mixture(&t.mixture)
                .map_err(|e| SearchError::Objective(format!("trial {}: {e}", t.id)))?,
            y,
        );
        ys.push((t.id.clone(), y));
    }
    Ok((obs, ys))
}

/// The recipe: the mixture with the highest GP posterior mean among the evaluated and
/// proposed points (DESIGN.md), with the mean ± std; with fewer than 3 finished trials the
/// best observed trial.
pub fn recipe(
    space: &SearchSpace,
    state: &SearchState,
    cfg: &SearchConfig,
) -> Result<Option<(Recipe, Option<serde_json::Value>)>, SearchError> {
    let finished = state.finished();
    let (obs, ys) = observations(space, &finished, cfg)?;
    if obs.is_empty() {
        return Ok(None);
    }
    let mut candidates: Vec<TrialState> = state
        .trials
        .iter()
        .filter(|t| !matches!(t.status, Status::Abandoned { .. }))
        .cloned()
        .collect();
    // The method's own recommendation joins the candidates (GP-UCB: the highest lower
    // confidence bound over the whole space, which need not be a trial).
    if obs.len() >= 3 {
        if let Ok(p) = cfg
            .method
            .proposer_from(cfg.seed, cfg.start)
            .recommend(space, &obs)
        {
            candidates.push(TrialState {
                id: "recommended".into(),
                round: 0,
                mixture: named(space, &p.mixture),
                reason: p.reason,
                attempts: 0,
                failures: 0,
                last_failure: None,
                status: Status::Pending,
                job: None,
            });
        }
    }
    let candidates: Vec<&TrialState> = candidates.iter().collect();
    let (best, mean, std, gp_report) = if obs.len() >= 3 {
        let mut ucb = GpUcb::new(GpUcbConfig::seeded(cfg.seed));
        match ucb.fit(&obs) {
            Ok(gp) => {
                let mut flat = Vec::new();
                for t in &candidates {
                    flat.extend(
                        space
                            .from_mixture(&mixture_vec(space, &t.mixture))
                            .map_err(|e| SearchError::Objective(e.to_string()))?,
                    );
                }
                let (m, v) = gp.predict(&flat);
                let k = (0..m.len()).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap();
                let report = serde_json::to_value(gp.report()).ok();
                (k, Some(m[k]), Some(v[k].max(0.0).sqrt()), report)
            }
            Err(_) => best_observed(&candidates, &ys),
        }
    } else {
        best_observed(&candidates, &ys)
    };
    let t = candidates[best];
    let w = mixture_vec(space, &t.mixture);
    let trial = (t.id != "recommended").then(|| t.id.clone());
    let p = Proposal {
        x: space
            .from_mixture(&w)
            .map_err(|e| SearchError::Objective(e.to_string()))?,
        mixture: w,
        mean,
        std,
        acquisition: None,
        reason: if mean.is_some() {
            format!(
                "highest GP posterior mean among the evaluated and proposed mixtures and the {} recommendation",
                cfg.method.name()
            )
        } else {
            "best observed trial".into()
        },
    };
    let source = RecipeSource {
        method: cfg.method.name().into(),
        trials: obs.len(),
        trial,
        target: cfg.objective.weights.keys().cloned().collect(),
        predicted_mean: mean,
        predicted_std: std,
        reason: p.reason.clone(),
    };
    Ok(Some((Recipe::from_proposal(space, &p, source), gp_report)))
}

fn best_observed(
    candidates: &[&TrialState],
    ys: &[(String, f64)],
) -> (usize, Option<f64>, Option<f64>, Option<serde_json::Value>) {
    let (id, _) = ys
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one observation");
    let k = candidates.iter().position(|t| &t.id == id).unwrap_or(0);
    (k, None, None, None)
}

pub(crate) fn check_metrics(dir: &Path) -> Result<serde_json::Value, String> {
    let path = dir.join("metrics.json");
    let text = fs::read_to_string(&path).map_err(|e| format!("no readable metrics.json: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("metrics.json is not JSON: {e}"))?;
    let has_scores = v.get("benchmarks").is_some_and(|b| b.is_object())
        || v.get("objective").is_some_and(|o| o.is_f64());
    if !has_scores {
        return Err("metrics.json has neither a `benchmarks` object nor an `objective`".into());
    }
    scores(&v, Metric::Accuracy).or_else(|e| {
        if v.get("objective").is_some() {
            Ok(BTreeMap::new())
        } else {
            Err(e)
        }
    })?;
    Ok(v)
}

/// The last non-empty line of an attempt's `trial.log` (at most 300 characters), for failure
/// reasons.
pub(crate) fn log_tail(dir: &Path) -> String {
    fs::read_to_string(dir.join("trial.log"))
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

/// Replaces `{trial_dir}`, `{mixture}`, `{blend}`, `{seed}` in a command template.
pub fn render_command(template: &str, trial_dir: &Path, blend: &str, seed: u64) -> String {
    template
        .replace("{trial_dir}", &trial_dir.display().to_string())
        .replace(
            "{mixture}",
            &trial_dir.join("mixture.json").display().to_string(),
        )
        .replace("{blend}", blend)
        .replace("{seed}", &seed.to_string())
}

/// Runs (or resumes) the search of `plan`.
pub fn run_search(
    plan: &SearchPlan,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    run_search_on(plan, None, progress)
}

/// [`run_search`] as rank 0 of an MPI search (`groups`: see [`super::mpi_exec`]): trials run
/// in waves on the rank groups instead of as local child processes; the other ranks run
/// [`super::mpi_exec::worker`]. Rank 0 tells them to stop when it returns, also on error.
pub fn run_search_on(
    plan: &SearchPlan,
    groups: Option<&super::mpi_exec::Groups>,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    let result = search_loop(plan, groups, progress);
    if let Some(g) = groups {
        let stop =
            crate::dist::broadcast_value(g.world.as_ref(), Some(&super::mpi_exec::Order::Stop), 0);
        if let (Ok(_), Err(e)) = (&result, stop) {
            return Err(SearchError::Config(format!(
                "stopping the MPI workers: {e}"
            )));
        }
    }
    result
}

fn search_loop(
    plan: &SearchPlan,
    groups: Option<&super::mpi_exec::Groups>,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    let cfg = &plan.search;
    cfg.validate().map_err(SearchError::Config)?;
    plan.train
        .validate()
        .map_err(|e| SearchError::Config(e.to_string()))?;
    let manifest = Manifest::load(&cfg.corpus)?;
    let space = SearchSpace::from_manifest(&manifest, cfg.space, &cfg.constraints)?;
    let out = &cfg.out;
    fs::create_dir_all(out.join("trials")).at("creating", out)?;
    let corpus_abs = fs::canonicalize(&cfg.corpus).at("resolving", &cfg.corpus)?;

    // The resolved configuration: written once, compared on resume.
    let resolved = serde_json::json!({
        "format": "mixatlas-search", "version": 1,
        "search": cfg, "train": plan.train,
    });
    let rpath = out.join(RESOLVED_FILE);
    if rpath.exists() {
        let old: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&rpath).at("reading", &rpath)?)
                .map_err(|e| SearchError::Config(format!("{}: {e}", rpath.display())))?;
        for key in ["search", "train"] {
            let (mut a, mut b) = (old[key].clone(), resolved[key].clone());
            // The budget may grow on resume; everything else must match.
            if key == "search" {
                a["budget"]["max_trials"] = serde_json::Value::Null;
                b["budget"]["max_trials"] = serde_json::Value::Null;
            }
            if a != b {
                return Err(SearchError::Mismatch {
                    path: rpath,
                    what: format!("[{key}]"),
                });
            }
        }
    }
    write_atomic(
        &rpath,
        serde_json::to_string_pretty(&resolved)
            .expect("config serialises")
            .as_bytes(),
    )?;
    let train_toml = out.join("train.toml");
    let table = crate::config::Config {
        train: plan.train.clone(),
        ..Default::default()
    };
    write_atomic(&train_toml, table.to_toml().as_bytes())?;

    let max_attempts = cfg.budget.retries + 1;
    let (mut log, mut state) = EventLog::open(out, max_attempts)?;
    let mut proposer = cfg.method.proposer_from(cfg.seed, cfg.start);
    let mut exec = LocalExecutor::new();
    let mpi_corpus = match groups {
        Some(_) => Some(crate::data::corpus::Corpus::open(&cfg.corpus)?),
        None => None,
    };
    let parallel = cfg.parallel();
    let timeout = (cfg.budget.trial_timeout_s > 0.0)
        .then(|| Duration::from_secs_f64(cfg.budget.trial_timeout_s));
    let attempts = Attempts {
        plan,
        space: &space,
        manifest: &manifest,
        corpus: &corpus_abs,
        train_toml: &train_toml,
        timeout,
    };

    loop {
        // 1. Run every pending trial (interrupted attempts and retries first, in order).
        let mut queue: Vec<TrialState> = state.pending().into_iter().cloned().collect();
        queue.reverse();
        if cfg.executor.kind == "slurm" {
            super::slurm_exec::run_pending(
                &attempts,
                &mut log,
                &mut state,
                max_attempts,
                &mut queue,
                progress,
            )?;
        } else if let Some(g) = groups {
            let corpus = mpi_corpus.as_ref().expect("opened for MPI");
            let preset = match &cfg.trainer {
                TrainerConfig::Builtin { preset } => preset.clone(),
                TrainerConfig::Command { .. } => {
                    return Err(SearchError::Config(
                        "the MPI executor runs the built-in trainer only".into(),
                    ))
                }
            };
            while !queue.is_empty() {
                let mut wave = Vec::new();
                let mut started = Vec::new();
                for group in 0..g.count() {
                    let Some(t) = queue.pop() else { break };
                    let attempt = t.attempts + 1;
                    let job = attempts.prepare(&t, attempt)?;
                    let dir = job.log.parent().expect("attempt dir").to_path_buf();
                    record_running(
                        &mut log,
                        &mut state,
                        &t.id,
                        attempt,
                        format!("mpi:group{group}"),
                        max_attempts,
                        progress,
                    )?;
                    wave.push(super::mpi_exec::Assignment {
                        group,
                        trial: t.id.clone(),
                        attempt,
                        dir,
                        weights: mixture_vec(&space, &t.mixture),
                    });
                    started.push(std::time::Instant::now());
                }
                crate::dist::broadcast_value(
                    g.world.as_ref(),
                    Some(&super::mpi_exec::Order::Run(wave.clone())),
                    0,
                )
                .map_err(|e| SearchError::Config(e.to_string()))?;
                let outcomes = super::mpi_exec::run_wave(plan, corpus, &preset, g, &wave)
                    .map_err(|e| SearchError::Config(e.to_string()))?;
                for (a, t0) in wave.iter().zip(&started) {
                    let ev = match outcomes.get(a.group).cloned().flatten() {
                        Some(Ok(metrics)) => match check_metrics(&a.dir) {
                            Ok(_) => Event::Finished {
                                trial: a.trial.clone(),
                                attempt: a.attempt,
                                metrics,
                                wall_s: t0.elapsed().as_secs_f64(),
                            },
                            Err(e) => Event::Failed {
                                trial: a.trial.clone(),
                                attempt: a.attempt,
                                reason: e,
                            },
                        },
                        Some(Err(reason)) => Event::Failed {
                            trial: a.trial.clone(),
                            attempt: a.attempt,
                            reason,
                        },
                        None => Event::Failed {
                            trial: a.trial.clone(),
                            attempt: a.attempt,
                            reason: format!("group {} returned no result", a.group),
                        },
                    };
                    record(
                        &mut log,
                        &mut state,
                        ev,
                        max_attempts,
                        &space,
                        cfg,
                        &mut queue,
                        progress,
                    )?;
                }
            }
        } else {
            while !queue.is_empty() || exec.running() > 0 {
                while exec.running() < parallel {
                    let Some(t) = queue.pop() else { break };
                    let attempt = t.attempts + 1;
                    let job = attempts.prepare(&t, attempt)?;
                    let pid = exec.submit(job)?;
                    record_running(
                        &mut log,
                        &mut state,
                        &t.id,
                        attempt,
                        format!("local:{pid}"),
                        max_attempts,
                        progress,
                    )?;
                }
                let Some(done) = exec.wait_any() else { break };
                let ev = conclude(out, &done);
                record(
                    &mut log,
                    &mut state,
                    ev,
                    max_attempts,
                    &space,
                    cfg,
                    &mut queue,
                    progress,
                )?;
            }
        }
        write_recipe(out, &space, &state, cfg, &manifest)?;

        // 2. Propose the next round, or stop.
        let used = state.trials.len();
        if used >= cfg.budget.max_trials {
            break;
        }
        let q = cfg.budget.q.min(cfg.budget.max_trials - used);
        let round = state.next_round();
        let (obs, _) = observations(&space, &state.finished(), cfg)?;
        let proposals = proposer
            .propose(&space, &obs, q, round)
            .map_err(|source| SearchError::Propose { round, source })?;
        let mut ids = Vec::new();
        for p in proposals {
            let id = format!("t{:04}", state.trials.len());
            let ev = Event::Proposed {
                trial: id.clone(),
                round,
                mixture: named(&space, &p.mixture),
                reason: p.reason.clone(),
                mean: p.mean,
                std: p.std,
            };
            log.append(&ev)?;
            state.apply(ev, max_attempts).map_err(SearchError::Config)?;
            ids.push(id);
        }
        progress(SearchProgress::Proposed { round, trials: ids });
    }
    let (_, objectives) = observations(&space, &state.finished(), cfg)?;
    let mut best_so_far = Vec::new();
    for (_, y) in &objectives {
        let b = best_so_far.last().map_or(*y, |b: &f64| b.max(*y));
        best_so_far.push(b);
    }
    Ok(SearchSummary {
        finished: objectives.len(),
        abandoned: state
            .trials
            .iter()
            .filter_map(|t| match &t.status {
                Status::Abandoned { reason } => Some((t.id.clone(), reason.clone())),
                _ => None,
            })
            .collect(),
        objectives,
        best_so_far,
        recipe: recipe(&space, &state, cfg)?.map(|r| r.0),
    })
}

/// Appends an attempt's start (with its executor job id) to the log and the state and
/// reports it.
pub(crate) fn record_running(
    log: &mut EventLog,
    state: &mut SearchState,
    trial: &str,
    attempt: usize,
    job: String,
    max_attempts: usize,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<(), SearchError> {
    let ev = Event::Running {
        trial: trial.to_string(),
        attempt,
        job,
    };
    log.append(&ev)?;
    state.apply(ev, max_attempts).map_err(SearchError::Config)?;
    progress(SearchProgress::Started {
        trial: trial.to_string(),
        attempt,
    });
    Ok(())
}

/// Appends an attempt's end to the log and the state, re-queues a failed trial that has
/// attempts left, and reports progress.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    log: &mut EventLog,
    state: &mut SearchState,
    ev: Event,
    max_attempts: usize,
    space: &SearchSpace,
    cfg: &SearchConfig,
    queue: &mut Vec<TrialState>,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<(), SearchError> {
    let trial = match &ev {
        Event::Finished { trial, .. } | Event::Failed { trial, .. } => trial.clone(),
        _ => String::new(),
    };
    let failed = match &ev {
        Event::Failed { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    log.append(&ev)?;
    state.apply(ev, max_attempts).map_err(SearchError::Config)?;
    if let Some(reason) = failed {
        progress(SearchProgress::Failed {
            trial: trial.clone(),
            reason,
        });
        if let Some(t) = state.trials.iter().find(|t| t.id == trial) {
            if t.status == Status::Pending {
                queue.insert(0, t.clone());
            }
        }
    } else {
        let (_, ys) = observations(space, &state.finished(), cfg)?;
        let objective = ys.iter().find(|(id, _)| *id == trial).map(|x| x.1);
        let best = ys
            .iter()
            .map(|x| x.1)
            .fold(None, |b: Option<f64>, y| Some(b.map_or(y, |b| b.max(y))));
        progress(SearchProgress::Finished {
            trial,
            objective,
            best,
            done: state.finished().len(),
            total: cfg.budget.max_trials,
        });
    }
    Ok(())
}

fn write_recipe(
    out: &Path,
    space: &SearchSpace,
    state: &SearchState,
    cfg: &SearchConfig,
    manifest: &Manifest,
) -> Result<(), SearchError> {
    if let Some((r, gp)) = recipe(space, state, cfg)? {
        r.save(&out.join(RECIPE_FILE))?;
        let blend = r.megatron_blend(manifest, &cfg.corpus);
        write_atomic(
            &out.join("recipe.blend.txt"),
            format!("{blend}\n").as_bytes(),
        )?;
        if let Some(gp) = gp {
            write_atomic(
                &out.join(GP_FILE),
                serde_json::to_string_pretty(&gp)
                    .expect("gp report")
                    .as_bytes(),
            )?;
        }
    }
    Ok(())
}

/// The directory of one attempt: `trials/<id>/a<attempt>` (a fresh one per attempt, so a
/// trainer left over from a killed controller can never write into a live attempt).
pub fn attempt_dir(out: &Path, trial: &str, attempt: usize) -> PathBuf {
    out.join("trials").join(trial).join(format!("a{attempt}"))
}

#[allow(clippy::too_many_arguments)]
/// What every attempt of a search is prepared from (shared by the local, MPI and Slurm
/// executors).
pub(crate) struct Attempts<'a> {
    /// The search.
    pub plan: &'a SearchPlan,
    /// The space (cell order).
    pub space: &'a SearchSpace,
    /// The corpus manifest (for blends).
    pub manifest: &'a Manifest,
    /// The corpus directory, absolute.
    pub corpus: &'a Path,
    /// The resolved `[train]` table for the built-in trainer.
    pub train_toml: &'a Path,
    /// Per-attempt time limit.
    pub timeout: Option<Duration>,
}

impl Attempts<'_> {
    /// Creates attempt `attempt` of trial `t` (its directory, `mixture.json`, `blend.txt`)
    /// and the job that runs it.
    pub(crate) fn prepare(&self, t: &TrialState, attempt: usize) -> Result<TrialJob, SearchError> {
        prepare_attempt(
            self.plan,
            self.space,
            self.manifest,
            self.corpus,
            self.train_toml,
            t,
            attempt,
            self.timeout,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn prepare_attempt(
    plan: &SearchPlan,
    space: &SearchSpace,
    manifest: &Manifest,
    corpus: &Path,
    train_toml: &Path,
    t: &TrialState,
    attempt: usize,
    timeout: Option<Duration>,
) -> Result<TrialJob, SearchError> {
    let cfg = &plan.search;
    let dir = attempt_dir(&cfg.out, &t.id, attempt);
    if dir.exists() {
        fs::remove_dir_all(&dir).at("clearing", &dir)?;
    }
    fs::create_dir_all(&dir).at("creating", &dir)?;
    let dir = fs::canonicalize(&dir).at("resolving", &dir)?;
    let mixture = serde_json::json!({"trial": t.id, "weights": t.mixture});
    write_atomic(
        &dir.join("mixture.json"),
        serde_json::to_string_pretty(&mixture)
            .expect("mixture")
            .as_bytes(),
    )?;
    let recipe_like = Recipe::from_proposal(
        space,
        &Proposal {
            x: Vec::new(),
            mixture: mixture_vec(space, &t.mixture),
            mean: None,
            std: None,
            acquisition: None,
            reason: String::new(),
        },
        RecipeSource {
            method: cfg.method.name().into(),
            trials: 0,
            trial: Some(t.id.clone()),
            target: Vec::new(),
            predicted_mean: None,
            predicted_std: None,
            reason: String::new(),
        },
    );
    let blend = recipe_like.megatron_blend(manifest, corpus);
    write_atomic(&dir.join("blend.txt"), format!("{blend}\n").as_bytes())?;
    let threads = cfg.executor.threads_per_trial.to_string();
    let env = vec![
        ("MIXATLAS_TRIAL_DIR".into(), dir.display().to_string()),
        ("MIXATLAS_TRIAL_ID".into(), t.id.clone()),
        (
            "MIXATLAS_MIXTURE".into(),
            dir.join("mixture.json").display().to_string(),
        ),
        ("MIXATLAS_BLEND".into(), blend.clone()),
        ("MIXATLAS_SEED".into(), cfg.seed.to_string()),
        ("MIXATLAS_CORPUS".into(), corpus.display().to_string()),
        ("MIXATLAS_ATTEMPT".into(), attempt.to_string()),
        ("RAYON_NUM_THREADS".into(), threads.clone()),
        ("OMP_NUM_THREADS".into(), threads),
    ];
    let argv = match &cfg.trainer {
        TrainerConfig::Builtin { preset } => vec![
            plan.exe.display().to_string(),
            "train".into(),
            "--corpus".into(),
            corpus.display().to_string(),
            "--mixture".into(),
            dir.join("mixture.json").display().to_string(),
            "--out".into(),
            dir.display().to_string(),
            "--preset".into(),
            preset.clone(),
            "--config".into(),
            train_toml.display().to_string(),
            "--seed".into(),
            cfg.seed.to_string(),
            "--quiet".into(),
        ],
        TrainerConfig::Command { command } => vec![
            "sh".into(),
            "-c".into(),
            render_command(command, &dir, &blend, cfg.seed),
        ],
    };
    Ok(TrialJob {
        trial: t.id.clone(),
        attempt,
        argv,
        env,
        log: dir.join("trial.log"),
        timeout,
    })
}

fn conclude(out: &Path, done: &Completion) -> Event {
    let dir = attempt_dir(out, &done.trial, done.attempt);
    let fail = |reason: String| Event::Failed {
        trial: done.trial.clone(),
        attempt: done.attempt,
        reason,
    };
    match &done.ended {
        Ended::TimedOut => fail(format!(
            "killed after the time limit ({:.0} s)",
            done.wall_s
        )),
        Ended::Exited { code: Some(0), .. } => match check_metrics(&dir) {
            Ok(metrics) => Event::Finished {
                trial: done.trial.clone(),
                attempt: done.attempt,
                metrics,
                wall_s: done.wall_s,
            },
            Err(e) => fail(format!("exit 0 but {e} ({})", dir.display())),
        },
        Ended::Exited { code, signal } => {
            let tail = log_tail(&dir);
            let how = match (code, signal) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "ended abnormally".into(),
            };
            fail(if tail.is_empty() {
                how
            } else {
                format!("{how}: {tail}")
            })
        }
    }
}
