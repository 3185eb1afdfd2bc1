//! The search state: `trials.jsonl`, an append-only, fsync'd event log (DESIGN.md §2), and
//! its replay into the current status of every trial.
//!
//! Events: `proposed` (id, round, mixture, the surrogate's prediction), `running` (attempt,
//! executor job id), `finished` (metrics), `failed` (attempt, reason). A `kill -9` can at worst
//! leave a torn last line, which replay drops (and [`EventLog::open`] cuts off), so a trial is
//! never half-recorded: it is finished only once its `finished` line is complete on disk.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fidelity::Fidelity;
use crate::fsutil::{IoContext, PathIoError};

/// File name of the event log in a search directory.
pub const TRIALS_FILE: &str = "trials.jsonl";

/// One line of `trials.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A mixture was proposed and will be trained.
    Proposed {
        /// Trial id (`t0007`).
        trial: String,
        /// Proposal round (0-based).
        round: usize,
        /// Cell weights by name.
        mixture: BTreeMap<String, f64>,
        /// Why (initial design, ucb, regmix, …).
        reason: String,
        /// The surrogate's predicted mean at proposal time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean: Option<f64>,
        /// The surrogate's predicted standard deviation at proposal time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        std: Option<f64>,
        /// The fidelity to run it at (multi-fidelity searches only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fidelity: Option<Fidelity>,
    },
    /// An attempt started.
    Running {
        /// Trial id.
        trial: String,
        /// Attempt number (1-based).
        attempt: usize,
        /// Executor job id (a process id, a Slurm job id, …).
        job: String,
    },
    /// The trial finished with valid metrics.
    Finished {
        /// Trial id.
        trial: String,
        /// Attempt that succeeded.
        attempt: usize,
        /// The trial's `metrics.json`.
        metrics: serde_json::Value,
        /// Wall time of the attempt in seconds.
        wall_s: f64,
        /// The fidelity it ran at (multi-fidelity searches only; filled in by the ledger).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fidelity: Option<Fidelity>,
    },
    /// An attempt failed (after a `finished` line of the same trial: that record is revoked,
    /// see [`SearchState::apply`]).
    Failed {
        /// Trial id.
        trial: String,
        /// Attempt that failed.
        attempt: usize,
        /// Why (exit status, timeout, invalid metrics …).
        reason: String,
    },
    /// A trial left out by an earlier run is tried again (a rerun retries the trials it left
    /// out, with `retries + 1` fresh attempts: the cause may have been fixed since).
    Reopened {
        /// Trial id.
        trial: String,
        /// Why it had been left out.
        reason: String,
    },
}

impl Event {
    /// The trial the event is about.
    pub fn trial(&self) -> &str {
        match self {
            Event::Proposed { trial, .. }
            | Event::Running { trial, .. }
            | Event::Finished { trial, .. }
            | Event::Failed { trial, .. }
            | Event::Reopened { trial, .. } => trial,
        }
    }
}

/// Whether `id` is a trial id as the search writes them: `t` and ASCII digits (`t0007`).
/// Ids read back from `trials.jsonl` become directory names (`trials/<id>/a<n>`), so nothing
/// else (`../x`, `/abs`, `a/b`) is accepted.
pub fn is_trial_id(id: &str) -> bool {
    id.strip_prefix('t')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A `finished` record (or a trial's `metrics.json`) without any usable score.
#[derive(Debug, thiserror::Error)]
pub enum RecordScoresError {
    /// `benchmarks` or `benchmark_loss` is not a map of numbers.
    #[error("metrics `{key}` is not a map of numbers: {source}")]
    NotAMap {
        /// The key.
        key: String,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// A score is NaN or infinite.
    #[error("benchmark {benchmark:?} has a non-finite score {value}")]
    NonFinite {
        /// The benchmark.
        benchmark: String,
        /// The score.
        value: f64,
    },
    /// No score at all: `benchmarks` (and `benchmark_loss`) empty or missing, no `objective`.
    #[error(
        "metrics.json has no scores: `benchmarks` is empty or missing and there is no \
         `objective` (expected {{\"benchmarks\": {{\"name\": score, …}}}})"
    )]
    Empty,
    /// `objective` is not a finite number.
    #[error("metrics.json `objective` is {0}; expected a finite number")]
    BadObjective(String),
}

/// Checks that metrics hold some usable score, whatever the objective: `benchmarks` and
/// `benchmark_loss`, where present, maps of finite numbers; `objective`, where present, a
/// finite number; at least one score in all. `{"benchmarks": {}}` is refused.
pub fn check_scores_present(metrics: &serde_json::Value) -> Result<(), RecordScoresError> {
    let mut any = false;
    for key in ["benchmarks", "benchmark_loss"] {
        let Some(v) = metrics.get(key) else { continue };
        let table: BTreeMap<String, f64> =
            serde_json::from_value(v.clone()).map_err(|source| RecordScoresError::NotAMap {
                key: key.to_string(),
                source,
            })?;
        if let Some((k, v)) = table.iter().find(|(_, v)| !v.is_finite()) {
            return Err(RecordScoresError::NonFinite {
                benchmark: k.clone(),
                value: *v,
            });
        }
        any |= !table.is_empty();
    }
    if let Some(o) = metrics.get("objective") {
        match o.as_f64() {
            Some(x) if x.is_finite() => any = true,
            _ => return Err(RecordScoresError::BadObjective(o.to_string())),
        }
    }
    if any {
        Ok(())
    } else {
        Err(RecordScoresError::Empty)
    }
}

/// Where a trial stands after replaying the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Proposed, not started (or started by a controller that died: re-run).
    Pending,
    /// Finished with metrics.
    Finished {
        /// `metrics.json`.
        metrics: serde_json::Value,
        /// Wall time.
        wall_s: f64,
    },
    /// Given up after its attempts.
    Abandoned {
        /// The last failure's reason.
        reason: String,
    },
}

/// One trial as the log describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialState {
    /// Id.
    pub id: String,
    /// Proposal round.
    pub round: usize,
    /// Cell weights by name.
    pub mixture: BTreeMap<String, f64>,
    /// Why it was proposed.
    pub reason: String,
    /// Attempts started so far.
    pub attempts: usize,
    /// Failed attempts so far.
    pub failures: usize,
    /// The last failure's reason.
    pub last_failure: Option<String>,
    /// Current status.
    pub status: Status,
    /// Executor job id of the attempt in flight (set by `running`, cleared when it ends), so
    /// a restarted controller can re-attach to it instead of running it again.
    pub job: Option<String>,
    /// The fidelity it runs at (multi-fidelity searches; `None` otherwise).
    pub fidelity: Option<Fidelity>,
}

/// The replayed log: trials in proposal order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchState {
    /// Every proposed trial, in order.
    pub trials: Vec<TrialState>,
    /// Lines that could not be parsed (a torn last line after a crash), with line numbers.
    pub dropped: Vec<usize>,
    /// Trials whose `finished` line carries no usable scores (written by a version that
    /// accepted them, e.g. `{"benchmarks": {}}`): replayed as a failed attempt instead, with
    /// the reason; the search reports them as repaired.
    pub repaired: Vec<(String, String)>,
    /// Position in `trials` of every trial id (derived by [`SearchState::apply`], so that
    /// replaying and recording stay linear in the number of events at 10,000 trials).
    index: HashMap<String, usize>,
}

impl SearchState {
    /// Replays `text` with at most `max_attempts` attempts per trial.
    pub fn replay(text: &str, max_attempts: usize) -> Result<Self, ReplayError> {
        let mut st = SearchState::default();
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (i, raw) in lines.iter().enumerate() {
            let complete = raw.ends_with('\n');
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let ev: Event = match serde_json::from_str(line) {
                Ok(ev) if complete => ev,
                // Only the very last line may be torn by a crash; anything else is corruption.
                _ if i + 1 == lines.len() => {
                    st.dropped.push(i + 1);
                    continue;
                }
                Err(source) => {
                    return Err(ReplayError::Parse {
                        line: i + 1,
                        source,
                    })
                }
                Ok(_) => unreachable!("only the last line can lack its newline"),
            };
            st.apply(ev, max_attempts)
                .map_err(|source| ReplayError::Event {
                    line: i + 1,
                    source,
                })?;
        }
        Ok(st)
    }

    /// Applies one event (with at most `max_attempts` attempts per trial).
    pub fn apply(&mut self, ev: Event, max_attempts: usize) -> Result<(), EventError> {
        if !is_trial_id(ev.trial()) {
            return Err(EventError::BadTrialId(ev.trial().to_string()));
        }
        // A repaired trial that was run again since is no longer news.
        if !self.repaired.is_empty() {
            self.repaired.retain(|(t, _)| t != ev.trial());
        }
        let find = |st: &SearchState, id: &str| -> Result<usize, EventError> {
            st.position(id)
                .ok_or_else(|| EventError::NeverProposed(id.to_string()))
        };
        match ev {
            Event::Proposed {
                trial,
                round,
                mixture,
                reason,
                fidelity,
                ..
            } => {
                if self.position(&trial).is_some() {
                    return Err(EventError::ProposedTwice(trial));
                }
                self.index.insert(trial.clone(), self.trials.len());
                self.trials.push(TrialState {
                    id: trial,
                    round,
                    mixture,
                    reason,
                    attempts: 0,
                    failures: 0,
                    last_failure: None,
                    status: Status::Pending,
                    job: None,
                    fidelity,
                });
            }
            Event::Running {
                trial,
                attempt,
                job,
            } => {
                // Job ids go to `squeue`/`scancel` on re-attach: the executors' own spelling only.
                let ok = |b: u8| b.is_ascii_alphanumeric() || b":_.-".contains(&b);
                if job.is_empty() || !job.bytes().all(ok) {
                    return Err(EventError::BadJobId { trial, job });
                }
                let k = find(self, &trial)?;
                let t = &mut self.trials[k];
                t.attempts = t.attempts.max(attempt);
                t.job = Some(job);
            }
            Event::Finished {
                trial,
                attempt,
                metrics,
                wall_s,
                ..
            } => {
                let k = find(self, &trial)?;
                if matches!(self.trials[k].status, Status::Finished { .. }) {
                    return Err(EventError::FinishedTwice(trial));
                }
                if let Err(e) = check_scores_present(&metrics) {
                    // A record of a version that took unusable metrics as a success.
                    let reason = format!("recorded as finished but {e}");
                    self.repaired.push((trial.clone(), reason.clone()));
                    self.fail(k, attempt, reason, max_attempts);
                    return Ok(());
                }
                let t = &mut self.trials[k];
                t.attempts = t.attempts.max(attempt);
                t.status = Status::Finished { metrics, wall_s };
                t.job = None;
            }
            Event::Failed {
                trial,
                attempt,
                reason,
            } => {
                let k = find(self, &trial)?;
                self.fail(k, attempt, reason, max_attempts);
            }
            Event::Reopened { trial, .. } => {
                let k = find(self, &trial)?;
                let t = &mut self.trials[k];
                if !matches!(t.status, Status::Abandoned { .. }) {
                    return Err(EventError::NotLeftOut(trial));
                }
                t.failures = 0;
                t.status = Status::Pending;
            }
        }
        Ok(())
    }

    /// Records a failed attempt of trial `k`: back to pending while it has attempts left,
    /// else left out. A failure after a `finished` record revokes it (the search's repair of
    /// a trial whose scores turned out unusable).
    fn fail(&mut self, k: usize, attempt: usize, reason: String, max_attempts: usize) {
        let t = &mut self.trials[k];
        t.failures += 1;
        t.attempts = t.attempts.max(attempt);
        t.last_failure = Some(reason.clone());
        t.job = None;
        t.status = if t.failures >= max_attempts {
            Status::Abandoned { reason }
        } else {
            Status::Pending
        };
    }

    /// Position of trial `id` in `trials`: from the index, checked, else (a state whose
    /// `trials` were edited directly, so the index no longer covers them) by a scan.
    pub fn position(&self, id: &str) -> Option<usize> {
        match self.index.get(id) {
            Some(&k) if self.trials.get(k).is_some_and(|t| t.id == id) => Some(k),
            None if self.index.len() == self.trials.len() => None,
            _ => self.trials.iter().position(|t| t.id == id),
        }
    }

    /// Trial `id`, if it was proposed.
    pub fn get(&self, id: &str) -> Option<&TrialState> {
        self.position(id).map(|k| &self.trials[k])
    }

    /// Trials that still need an attempt, in order.
    pub fn pending(&self) -> Vec<&TrialState> {
        self.trials
            .iter()
            .filter(|t| t.status == Status::Pending)
            .collect()
    }

    /// Finished trials, in order.
    pub fn finished(&self) -> Vec<&TrialState> {
        self.trials
            .iter()
            .filter(|t| matches!(t.status, Status::Finished { .. }))
            .collect()
    }

    /// Number of finished trials.
    pub fn finished_count(&self) -> usize {
        self.trials
            .iter()
            .filter(|t| matches!(t.status, Status::Finished { .. }))
            .count()
    }

    /// The next proposal round.
    pub fn next_round(&self) -> usize {
        self.trials
            .iter()
            .map(|t| t.round.saturating_add(1))
            .max()
            .unwrap_or(0)
    }
}

/// The append-only writer of `trials.jsonl`.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: File,
    lines: usize,
}

impl EventLog {
    /// Opens (creating) `dir/trials.jsonl`, cutting off a torn last line left by a crash, and
    /// returns the log with its replayed state.
    pub fn open(dir: &Path, max_attempts: usize) -> Result<(Self, SearchState), LogError> {
        let path = dir.join(TRIALS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => Err(e).at("reading", &path)?,
        };
        let state =
            SearchState::replay(&text, max_attempts).map_err(|source| LogError::Corrupt {
                path: path.clone(),
                source,
            })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at("opening", &path)?;
        if !state.dropped.is_empty() {
            // Keep everything up to the last complete line.
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64)
                .at("truncating a torn line of", &path)?;
            file.sync_all().at("syncing", &path)?;
        }
        let kept = text.rfind('\n').map_or(0, |i| i + 1);
        let lines = text.as_bytes()[..kept]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Ok((Self { path, file, lines }, state))
    }

    /// Appends one event and fsyncs it.
    pub fn append(&mut self, ev: &Event) -> Result<(), PathIoError> {
        let mut line = serde_json::to_string(ev).expect("events serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .at("appending to", &self.path)?;
        self.lines += 1;
        self.file.sync_data().at("syncing", &self.path)
    }

    /// Complete lines in the log (events, blank lines included).
    pub fn lines(&self) -> usize {
        self.lines
    }
}

/// `trials.jsonl` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A line other than the last is not a valid event, or the events contradict each other.
    #[error("{path}: {source}")]
    Corrupt {
        /// The log.
        path: PathBuf,
        /// What is wrong (with the line number).
        #[source]
        source: ReplayError,
    },
}

/// An event that contradicts the log before it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// An event for a trial that no `proposed` line introduced.
    #[error("trial {0:?} was never proposed")]
    NeverProposed(String),
    /// A second `proposed` line for one trial id.
    #[error("trial {0:?} proposed twice")]
    ProposedTwice(String),
    /// A second `finished` line for one trial.
    #[error("trial {0:?} finished twice")]
    FinishedTwice(String),
    /// A trial id that the search does not write (it would become a path outside `trials/`).
    #[error(
        "trial id {0:?} is not one the search writes (`t` and digits, e.g. \"t0007\"); \
         refusing to use it as a directory name"
    )]
    BadTrialId(String),
    /// An executor job id with characters no executor writes.
    #[error(
        "trial {trial:?}: job id {job:?} is not one an executor writes (letters, digits, \
         `:_.-`, e.g. \"slurm:1234_0\")"
    )]
    BadJobId {
        /// The trial.
        trial: String,
        /// The job id.
        job: String,
    },
    /// A `reopened` line for a trial that is not left out.
    #[error("trial {0:?} reopened but it was not left out")]
    NotLeftOut(String),
}

/// A line of `trials.jsonl` (other than a torn last one) that cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The line is not a valid event.
    #[error("line {line}: {source}")]
    Parse {
        /// 1-based line.
        line: usize,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// The event contradicts the lines before it.
    #[error("line {line}: {source}")]
    Event {
        /// 1-based line.
        line: usize,
        /// What it contradicts.
        #[source]
        source: EventError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposed(id: &str) -> String {
        serde_json::to_string(&Event::Proposed {
            trial: id.into(),
            round: 0,
            mixture: [("a/b".to_string(), 1.0)].into(),
            reason: "x".into(),
            mean: None,
            std: None,
            fidelity: None,
        })
        .unwrap()
    }

    /// Issue 19: the id index (what keeps replay linear at 10,000 trials) changes nothing:
    /// random event streams (ids in no particular order, events for unknown trials,
    /// duplicates, retries, reopenings) replay to the same state and the same errors as
    /// with every lookup a scan of the trials (the index dropped before each event).
    #[test]
    fn indexed_replay_matches_replay_by_scanning() {
        use crate::rng::SplitMix64;
        for seed in 0..20u64 {
            let mut rng = SplitMix64::new(seed);
            let mut indexed = SearchState::default();
            let mut scanned = SearchState::default();
            let mut ids: Vec<String> = Vec::new();
            for _ in 0..600 {
                let id = if ids.is_empty() || rng.chance(0.3) {
                    let id = format!("t{}", rng.below(400));
                    ids.push(id.clone());
                    id
                } else {
                    ids[rng.below(ids.len() as u64) as usize].clone()
                };
                let attempt = 1 + rng.below(3) as usize;
                let ev = match rng.below(6) {
                    0 | 1 => serde_json::from_str(&proposed(&id)).unwrap(),
                    2 => Event::Running {
                        trial: id,
                        attempt,
                        job: format!("sim:{attempt}"),
                    },
                    3 => Event::Finished {
                        trial: id,
                        attempt,
                        metrics: serde_json::json!({"objective": rng.next_f64()}),
                        wall_s: 1.0,
                        fidelity: None,
                    },
                    4 => Event::Failed {
                        trial: id,
                        attempt,
                        reason: "x".into(),
                    },
                    _ => Event::Reopened {
                        trial: id,
                        reason: "x".into(),
                    },
                };
                scanned.index.clear();
                let a = indexed.apply(ev.clone(), 2);
                let b = scanned.apply(ev, 2);
                assert_eq!(a, b);
                assert_eq!(indexed.trials, scanned.trials);
            }
            assert!(indexed.trials.len() > 20, "{}", indexed.trials.len());
            for t in &indexed.trials {
                assert_eq!(indexed.get(&t.id), Some(t));
            }
            assert_eq!(indexed.get("t999999"), None);
        }
    }

    /// Fuzz finding (issue 18): a trial of round `usize::MAX` must not overflow `next_round`
    /// (a panic with overflow checks, round 0 again without).
    #[test]
    fn next_round_saturates_at_usize_max() {
        let text = include_str!("../../tests/fuzz/regressions/events/round_usize_max.jsonl");
        let st = SearchState::replay(text, 3).unwrap();
        assert_eq!(st.next_round(), usize::MAX);
    }

    #[test]
    fn replay_tracks_status_and_drops_only_a_torn_last_line() {
        let fin = serde_json::to_string(&Event::Finished {
            trial: "t1".into(),
            attempt: 1,
            metrics: serde_json::json!({"benchmarks": {"b": 0.5}}),
            wall_s: 1.0,
            fidelity: None,
        })
        .unwrap();
        let fail = |a: usize| {
            serde_json::to_string(&Event::Failed {
                trial: "t2".into(),
                attempt: a,
                reason: "exit 1".into(),
            })
            .unwrap()
        };
        let text = format!(
            "{}\n{}\n{fin}\n{}\n{}\n{{\"event\":\"fin",
            proposed("t1"),
            proposed("t2"),
            fail(1),
            fail(2)
        );
        let st = SearchState::replay(&text, 2).unwrap();
        assert_eq!(st.dropped, vec![6]);
        assert!(matches!(st.trials[0].status, Status::Finished { .. }));
        assert!(matches!(st.trials[1].status, Status::Abandoned { .. }));
        let st = SearchState::replay(&text, 3).unwrap();
        assert_eq!(st.pending().len(), 1);
        // A broken line in the middle is corruption, not a crash artefact.
        let bad = format!("{}\ngarbage\n{}\n", proposed("t1"), proposed("t2"));
        assert!(SearchState::replay(&bad, 1)
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        let twice = format!("{}\n{}\n", proposed("t1"), proposed("t1"));
        assert!(SearchState::replay(&twice, 1).is_err());
    }

    /// Issue 18 row 7: ids read back become paths and command arguments, so only the
    /// search's own spelling is accepted, with the line and the value in the error.
    #[test]
    fn only_the_searchs_own_trial_and_job_ids_replay() {
        for id in ["t0", "t0007", "t12345"] {
            assert!(is_trial_id(id), "{id}");
        }
        for id in [
            "",
            "t",
            "../../victim",
            "t1/../x",
            "/t1",
            "T1",
            "t-1",
            "t1 ",
        ] {
            assert!(!is_trial_id(id), "{id}");
            let e = SearchState::replay(&format!("{}\n", proposed(id)), 1)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("line 1") && e.contains(&format!("{id:?}")),
                "{e}"
            );
        }
        let running = |job: &str| {
            let ev = Event::Running {
                trial: "t1".into(),
                attempt: 1,
                job: job.into(),
            };
            format!(
                "{}\n{}\n",
                proposed("t1"),
                serde_json::to_string(&ev).unwrap()
            )
        };
        assert!(SearchState::replay(&running("slurm:12_3"), 1).is_ok());
        let e = SearchState::replay(&running("1; rm -rf x"), 1).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    /// Issue 18 row 8: a `finished` line without any usable score replays as a failed
    /// attempt (repaired), and a `failed` line after `finished` revokes it.
    #[test]
    fn finished_lines_without_scores_replay_as_failures() {
        let fin = |metrics: serde_json::Value| {
            serde_json::to_string(&Event::Finished {
                trial: "t1".into(),
                attempt: 1,
                metrics,
                wall_s: 1.0,
                fidelity: None,
            })
            .unwrap()
        };
        for bad in [
            serde_json::json!({"benchmarks": {}}),
            serde_json::json!({"train_loss": 1.0}),
            serde_json::json!({"benchmarks": {"a": "x"}}),
        ] {
            let st = SearchState::replay(&format!("{}\n{}\n", proposed("t1"), fin(bad.clone())), 2)
                .unwrap();
            assert_eq!(st.trials[0].status, Status::Pending);
            assert_eq!(st.repaired.len(), 1);
            let again = serde_json::to_string(&Event::Running {
                trial: "t1".into(),
                attempt: 2,
                job: "local:1".into(),
            })
            .unwrap();
            let text = format!("{}\n{}\n{again}\n", proposed("t1"), fin(bad));
            assert!(SearchState::replay(&text, 2).unwrap().repaired.is_empty());
        }
        let good = fin(serde_json::json!({"objective": 0.5}));
        let revoke = serde_json::to_string(&Event::Failed {
            trial: "t1".into(),
            attempt: 1,
            reason: "repaired".into(),
        })
        .unwrap();
        let text = format!("{}\n{good}\n{revoke}\n{good}\n", proposed("t1"));
        let st = SearchState::replay(&text, 2).unwrap();
        assert!(matches!(st.trials[0].status, Status::Finished { .. }));
        assert_eq!(st.trials[0].failures, 1);
    }
}
