//! One attempt of a trial, from its start to its record in `trials.jsonl`: preparing its
//! directory (`mixture.json`, `blend.txt`) and the command that trains it ([`Attempts`]),
//! reading what it left behind ([`check_metrics`], [`log_tail`]), and recording its start and
//! end in the event log and the state ([`Ledger`]). Shared by every executor.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command::Values;
use super::config::{SearchConfig, SearchConfigError, TrainerConfig};
use super::error::SearchError;
use super::fidelity::Fidelity;
use super::multifidelity::at_target;
use super::objective::{check_finished, objective_of, observations, trial_point};
use super::plan::{write_fidelity_train_toml, SearchPlan, SearchProgress};
use super::state::{
    check_scores_present, Event, EventLog, RecordScoresError, SearchState, Status, TrialState,
};
use crate::acquisition::space::SearchSpace;
use crate::acquisition::Observations;
use crate::data::corpus::Manifest;
use crate::data::mixture::Mixture;
use crate::fsutil::{write_atomic, IoContext};

/// One attempt to run.
#[derive(Debug, Clone)]
pub struct TrialJob {
    /// Trial id.
    pub trial: String,
    /// Attempt number (1-based).
    pub attempt: usize,
    /// The trial's mixture.
    pub mixture: Mixture,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
}

impl TrialJob {
    /// The attempt's directory (where its log, `mixture.json` and `metrics.json` are).
    pub fn dir(&self) -> &Path {
        self.log.parent().expect("attempt dir")
    }
}

/// The directory of one attempt: `trials/<id>/a<attempt>` (a fresh one per attempt, so a
/// trainer left over from a killed controller can never write into a live attempt).
pub fn attempt_dir(out: &Path, trial: &str, attempt: usize) -> PathBuf {
    out.join("trials").join(trial).join(format!("a{attempt}"))
}

/// The placeholder values of a command trainer's attempt in `dir`: `{trial_dir}`,
/// `{mixture}`, `{blend}` (as a whole word, one argument per weight and per path:
/// `blend_words`), `{seed}`, and at a fidelity `{preset}` and `{steps}` (see
/// [`super::command`]).
pub fn placeholder_values(
    dir: &Path,
    blend: (&str, Vec<String>),
    seed: u64,
    fidelity: Option<&Fidelity>,
) -> Values {
    let mut text = vec![
        ("trial_dir", dir.display().to_string()),
        ("mixture", dir.join("mixture.json").display().to_string()),
        ("blend", blend.0.to_string()),
        ("seed", seed.to_string()),
    ];
    if let Some(f) = fidelity {
        text.push(("preset", f.preset.clone()));
        text.push(("steps", f.steps.to_string()));
    }
    Values {
        text,
        words: vec![("blend", blend.1)],
    }
}

/// The words of `mixture`'s Megatron blend (`W1 PREFIX1 W2 PREFIX2 …`, exactly the words of
/// [`Mixture::megatron_blend`], but a prefix with a space stays one word).
pub fn blend_words(mixture: &Mixture, manifest: &Manifest, corpus: &Path) -> Vec<String> {
    let w = mixture.weights();
    manifest
        .cells
        .iter()
        .filter_map(|c| w.get(&c.data.name).filter(|&&x| x > 0.0).map(|x| (c, x)))
        .flat_map(|(c, x)| {
            [
                format!("{x:.8}"),
                corpus.join(&c.data.prefix).display().to_string(),
            ]
        })
        .collect()
}

/// An attempt's `metrics.json` is missing or unusable (recorded as the attempt's failure).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Missing or unreadable.
    #[error("no readable metrics.json: {0}")]
    Unreadable(#[source] std::io::Error),
    /// Not JSON.
    #[error("metrics.json is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// Neither scores nor an objective.
    #[error("metrics.json has neither a `benchmarks` object nor an `objective`")]
    NoScores,
    /// Scores that cannot be used.
    #[error(transparent)]
    Scores(#[from] RecordScoresError),
}

/// Reads and checks `dir/metrics.json`: JSON with some usable score (a non-empty
/// `benchmarks` object of finite numbers, or a finite `objective`; see
/// [`check_scores_present`]). Whether the search's objective can use them is checked when the
/// attempt is recorded ([`Ledger::ended`]).
pub fn check_metrics(dir: &Path) -> Result<serde_json::Value, MetricsError> {
    let path = dir.join("metrics.json");
    let text = fs::read_to_string(&path).map_err(MetricsError::Unreadable)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(MetricsError::NotJson)?;
    let has_scores = v.get("benchmarks").is_some_and(|b| b.is_object())
        || v.get("benchmark_loss").is_some_and(|b| b.is_object())
        || v.get("objective").is_some();
    if !has_scores {
        return Err(MetricsError::NoScores);
    }
    check_scores_present(&v)?;
    Ok(v)
}

/// The last non-empty line of an attempt's `trial.log` (at most 300 characters), for failure
/// reasons.
pub fn log_tail(dir: &Path) -> String {
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

/// What every attempt of a search is prepared from (shared by the local, MPI and Slurm
/// executors).
pub struct Attempts<'a> {
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
    /// Creates attempt `attempt` of trial `t` (a fresh directory with `mixture.json` and
    /// `blend.txt`) and the job that runs it.
    pub fn prepare(&self, t: &TrialState, attempt: usize) -> Result<TrialJob, SearchError> {
        let cfg = &self.plan.search;
        let mixture = Mixture::new(t.mixture.clone(), &self.space.cells).map_err(|source| {
            SearchError::Mixture {
                trial: t.id.clone(),
                source,
            }
        })?;
        let dir = attempt_dir(&cfg.out, &t.id, attempt);
        if dir.exists() {
            fs::remove_dir_all(&dir).at("clearing", &dir)?;
        }
        fs::create_dir_all(&dir).at("creating", &dir)?;
        let dir = fs::canonicalize(&dir).at("resolving", &dir)?;
        let file = serde_json::json!({"trial": t.id, "weights": mixture});
        write_atomic(
            &dir.join("mixture.json"),
            serde_json::to_string_pretty(&file)
                .expect("mixture")
                .as_bytes(),
        )?;
        let blend = mixture.megatron_blend(self.manifest, self.corpus);
        write_atomic(&dir.join("blend.txt"), format!("{blend}\n").as_bytes())?;
        let fidelity = match &t.fidelity {
            Some(f) => {
                let toml = write_fidelity_train_toml(&dir, &self.plan.train, f)?;
                Some((f, toml))
            }
            None => None,
        };
        let fidelity = fidelity.as_ref().map(|(f, p)| (*f, p.as_path()));
        let mut env = self.env(&t.id, attempt, &dir, &blend);
        if let Some((f, _)) = fidelity {
            env.push(("MIXATLAS_PRESET".into(), f.preset.clone()));
            env.push(("MIXATLAS_STEPS".into(), f.steps.to_string()));
        }
        let argv = self.argv(&dir, (&mixture, &blend), fidelity)?;
        Ok(TrialJob {
            trial: t.id.clone(),
            attempt,
            mixture,
            argv,
            env,
            log: dir.join("trial.log"),
            timeout: self.timeout,
        })
    }

    /// The trial protocol's environment of an attempt.
    fn env(&self, trial: &str, attempt: usize, dir: &Path, blend: &str) -> Vec<(String, String)> {
        let cfg = &self.plan.search;
        let threads = cfg.executor.threads_per_trial.to_string();
        vec![
            ("MIXATLAS_TRIAL_DIR".into(), dir.display().to_string()),
            ("MIXATLAS_TRIAL_ID".into(), trial.to_string()),
            (
                "MIXATLAS_MIXTURE".into(),
                dir.join("mixture.json").display().to_string(),
            ),
            ("MIXATLAS_BLEND".into(), blend.to_string()),
            ("MIXATLAS_SEED".into(), cfg.seed.to_string()),
            ("MIXATLAS_CORPUS".into(), self.corpus.display().to_string()),
            ("MIXATLAS_ATTEMPT".into(), attempt.to_string()),
            ("RAYON_NUM_THREADS".into(), threads.clone()),
            ("OMP_NUM_THREADS".into(), threads),
        ]
    }

    /// The command of an attempt: the built-in trainer, or the user's template split into
    /// words with the placeholders filled per word (through `sh -c`, values quoted, only with
    /// `shell`); at a fidelity (its `train.toml` beside), the built-in trainer runs its preset
    /// and `train.toml`, and the template's `{preset}` and `{steps}` are its.
    fn argv(
        &self,
        dir: &Path,
        (mixture, blend): (&Mixture, &str),
        fidelity: Option<(&Fidelity, &Path)>,
    ) -> Result<Vec<String>, SearchError> {
        let cfg = &self.plan.search;
        let (preset, train_toml) = match (&cfg.trainer, fidelity) {
            (_, Some((f, toml))) => (f.preset.as_str(), toml),
            (TrainerConfig::Builtin { preset }, None) => (preset.as_str(), self.train_toml),
            (TrainerConfig::Command { .. }, None) => ("", self.train_toml),
        };
        Ok(match &cfg.trainer {
            TrainerConfig::Builtin { .. } => vec![
                self.plan.exe.display().to_string(),
                "train".into(),
                "--corpus".into(),
                self.corpus.display().to_string(),
                "--mixture".into(),
                dir.join("mixture.json").display().to_string(),
                "--out".into(),
                dir.display().to_string(),
                "--preset".into(),
                preset.to_string(),
                "--config".into(),
                train_toml.display().to_string(),
                "--seed".into(),
                cfg.seed.to_string(),
                "--quiet".into(),
            ],
            TrainerConfig::Command { command, shell } => {
                let words = blend_words(mixture, self.manifest, self.corpus);
                debug_assert_eq!(words.join(" "), blend);
                let values =
                    placeholder_values(dir, (blend, words), cfg.seed, fidelity.map(|f| f.0));
                super::command::argv(command, *shell, &values).map_err(|problem| {
                    SearchConfigError::TrainerCommand {
                        command: command.clone(),
                        problem,
                    }
                })?
            }
        })
    }
}

/// The event log and the replayed state of a running search, with the progress callback:
/// every event goes through here (appended and fsync'd, then applied, then reported).
pub struct Ledger<'a> {
    /// `trials.jsonl`.
    pub log: EventLog,
    /// The state the log describes.
    pub state: SearchState,
    /// Attempts per trial before it is left out.
    pub max_attempts: usize,
    /// The space (for objectives in progress reports).
    pub space: &'a SearchSpace,
    /// The search configuration.
    pub cfg: &'a SearchConfig,
    /// Where progress goes.
    pub progress: &'a mut dyn FnMut(SearchProgress),
    /// The best objective at the target fidelity so far, once computed (kept up to date as
    /// trials finish, so a progress report does not re-score every finished trial).
    best: Option<Option<f64>>,
    /// The observations of the finished trials (point, objective) by position in
    /// `state.trials`, once built: each finished trial adds its own, so a round at 10,000
    /// trials does not re-read every trial's metrics and mixture. Dropped when a record is
    /// revoked.
    obs: Option<BTreeMap<usize, (Vec<f64>, f64)>>,
}

impl<'a> Ledger<'a> {
    /// The ledger of `log` and its replayed `state`.
    pub fn new(
        log: EventLog,
        state: SearchState,
        max_attempts: usize,
        space: &'a SearchSpace,
        cfg: &'a SearchConfig,
        progress: &'a mut dyn FnMut(SearchProgress),
    ) -> Self {
        Self {
            log,
            state,
            max_attempts,
            space,
            cfg,
            progress,
            best: None,
            obs: None,
        }
    }
}

impl Ledger<'_> {
    /// Appends `ev` to the log, then applies it to the state.
    pub fn append(&mut self, ev: Event) -> Result<(), SearchError> {
        self.log.append(&ev)?;
        let finished = |st: &SearchState, id: &str| {
            st.get(id)
                .is_some_and(|t| matches!(t.status, Status::Finished { .. }))
        };
        let revokes = matches!(ev, Event::Failed { .. } | Event::Reopened { .. })
            && finished(&self.state, ev.trial());
        let adds = matches!(ev, Event::Finished { .. }).then(|| ev.trial().to_string());
        self.state.apply(ev, self.max_attempts)?;
        if revokes {
            self.obs = None;
        }
        if let (Some(id), Some(_)) = (adds, &self.obs) {
            self.observe(&id)?;
        }
        Ok(())
    }

    /// Adds finished trial `id` to the cached observations.
    fn observe(&mut self, id: &str) -> Result<(), SearchError> {
        let Some(t) = self.state.get(id) else {
            return Ok(());
        };
        if !matches!(t.status, Status::Finished { .. }) {
            return Ok(());
        }
        let k = self.state.position(id);
        let x = trial_point(self.space, t)?;
        let y = objective_of(self.space, self.cfg, &self.state, t)?;
        if let (Some(obs), Some(k)) = (self.obs.as_mut(), k) {
            obs.insert(k, (x, y));
        }
        Ok(())
    }

    /// The observations of every finished trial, in trial order: what
    /// [`observations`] gives for `state.finished()`, kept up to date as trials finish.
    pub fn observations(&mut self) -> Result<Observations, SearchError> {
        if self.obs.is_none() {
            let finished = self.state.finished();
            let (obs, _) = observations(self.space, &finished, self.cfg)?;
            let mut by_pos = BTreeMap::new();
            let mut ix = self
                .state
                .trials
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t.status, Status::Finished { .. }))
                .map(|(k, _)| k);
            for (x, y) in obs.x.into_iter().zip(obs.y) {
                by_pos.insert(ix.next().expect("one per finished trial"), (x, y));
            }
            self.obs = Some(by_pos);
        }
        let mut out = Observations::default();
        for (x, y) in self.obs.as_ref().expect("built").values() {
            out.push(x.clone(), *y);
        }
        Ok(out)
    }

    /// `ev`, or for a `finished` event whose scores the objective cannot use (none, a
    /// weighted benchmark missing, other benchmarks than the trials before it) the `failed`
    /// event of that attempt with the reason: such a trial is retried, then left out, and
    /// never recorded as finished (a record the search could not replay into an objective).
    fn usable(&self, ev: Event) -> Event {
        let Event::Finished {
            trial,
            attempt,
            metrics,
            ..
        } = &ev
        else {
            return ev;
        };
        let Some(t) = self.state.get(trial) else {
            return ev;
        };
        let mut t = t.clone();
        t.attempts = t.attempts.max(*attempt);
        match check_finished(self.cfg, &self.state.finished(), &t, metrics) {
            Ok(()) => ev,
            Err(e) => Event::Failed {
                reason: format!(
                    "exit 0 but {e} ({})",
                    attempt_dir(&self.cfg.out, trial, *attempt).display()
                ),
                trial: trial.clone(),
                attempt: *attempt,
            },
        }
    }

    /// Records an attempt's start (with its executor job id) and reports it.
    pub fn started(&mut self, trial: &str, attempt: usize, job: String) -> Result<(), SearchError> {
        self.append(Event::Running {
            trial: trial.to_string(),
            attempt,
            job,
        })?;
        (self.progress)(SearchProgress::Started {
            trial: trial.to_string(),
            attempt,
        });
        Ok(())
    }

    /// Records an attempt's end, re-queues a failed trial that has attempts left (`queue` is
    /// popped from its end, so the retry runs after the trials already queued) and reports
    /// progress.
    pub fn ended(&mut self, mut ev: Event, queue: &mut Vec<TrialState>) -> Result<(), SearchError> {
        if let Event::Finished {
            trial, fidelity, ..
        } = &mut ev
        {
            if let Some(t) = self.state.get(trial) {
                fidelity.clone_from(&t.fidelity);
            }
        }
        ev = self.usable(ev);
        let trial = match &ev {
            Event::Finished { trial, .. } | Event::Failed { trial, .. } => trial.clone(),
            _ => String::new(),
        };
        let failed = match &ev {
            Event::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        self.append(ev)?;
        if let Some(reason) = failed {
            (self.progress)(SearchProgress::Failed {
                trial: trial.clone(),
                reason,
            });
            if let Some(t) = self.state.get(&trial) {
                if t.status == Status::Pending {
                    queue.insert(0, t.clone());
                }
            }
            // A revoked record may have been the best: score everything again when needed.
            self.best = None;
        } else {
            let (objective, best) = self.best_after(&trial)?;
            (self.progress)(SearchProgress::Finished {
                trial,
                objective,
                best,
                done: self.state.finished_count(),
                total: self.cfg.budget.max_trials,
            });
        }
        Ok(())
    }

    /// The objective of `trial` (just recorded as finished) and the best objective at the
    /// target fidelity so far. The first call scores every finished trial; later ones score
    /// only `trial` (its objective depends on its own scores and the reference trial's, see
    /// [`objective_of`]), so a search of n trials costs O(n) here, not O(n²).
    fn best_after(&mut self, trial: &str) -> Result<(Option<f64>, Option<f64>), SearchError> {
        let max = |b: Option<f64>, y: f64| Some(b.map_or(y, |b: f64| b.max(y)));
        if let Some(best) = self.best {
            let Some(t) = self.state.get(trial) else {
                return Ok((None, best));
            };
            let y = objective_of(self.space, self.cfg, &self.state, t)?;
            let best = if at_target(self.cfg, t) {
                max(best, y)
            } else {
                best
            };
            self.best = Some(best);
            return Ok((Some(y), best));
        }
        let finished = self.state.finished();
        let (_, ys) = observations(self.space, &finished, self.cfg)?;
        let objective = ys.iter().find(|(id, _)| *id == trial).map(|x| x.1);
        let best = ys
            .iter()
            .zip(&finished)
            .filter(|(_, t)| at_target(self.cfg, t))
            .map(|x| x.0 .1)
            .fold(None, max);
        self.best = Some(best);
        Ok((objective, best))
    }
}
