//! The search state: `trials.jsonl`, an append-only, fsync'd event log (DESIGN.md §2), and
//! its replay into the current status of every trial.
//!
//! Events: `proposed` (id, round, mixture, the surrogate's prediction), `running` (attempt,
//! executor job id), `finished` (metrics), `failed` (attempt, reason). A `kill -9` can at worst
//! leave a torn last line, which replay drops (and [`EventLog::open`] cuts off), so a trial is
//! never half-recorded: it is finished only once its `finished` line is complete on disk.

use std::collections::BTreeMap;
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
    /// An attempt failed.
    Failed {
        /// Trial id.
        trial: String,
        /// Attempt that failed.
        attempt: usize,
        /// Why (exit status, timeout, invalid metrics …).
        reason: String,
    },
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
        let find = |st: &SearchState, id: &str| -> Result<usize, EventError> {
            st.trials
                .iter()
                .position(|t| t.id == id)
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
                if self.trials.iter().any(|t| t.id == trial) {
                    return Err(EventError::ProposedTwice(trial));
                }
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
                let k = find(self, &trial)?;
                let t = &mut self.trials[k];
                t.attempts = t.attempts.max(attempt);
                t.job = Some(job);
            }
            Event::Finished {
                trial,
                metrics,
                wall_s,
                ..
            } => {
                let k = find(self, &trial)?;
                let t = &mut self.trials[k];
                if matches!(t.status, Status::Finished { .. }) {
                    return Err(EventError::FinishedTwice(trial));
                }
                t.status = Status::Finished { metrics, wall_s };
                t.job = None;
            }
            Event::Failed {
                trial,
                attempt,
                reason,
            } => {
                let k = find(self, &trial)?;
                let t = &mut self.trials[k];
                t.failures += 1;
                t.attempts = t.attempts.max(attempt);
                t.last_failure = Some(reason.clone());
                t.job = None;
                if t.failures >= max_attempts {
                    t.status = Status::Abandoned { reason };
                }
            }
        }
        Ok(())
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
        Ok((Self { path, file }, state))
    }

    /// Appends one event and fsyncs it.
    pub fn append(&mut self, ev: &Event) -> Result<(), PathIoError> {
        let mut line = serde_json::to_string(ev).expect("events serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .at("appending to", &self.path)?;
        self.file.sync_data().at("syncing", &self.path)
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
            metrics: serde_json::json!({"benchmarks": {}}),
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
}
