//! The training log: JSON lines (DESIGN.md §2), one record per logged step
//! (`step`, `tokens`, `loss`, `lr`, `grad_norm`, `tokens_per_s`) and one per evaluation
//! (`step`, `eval`: per-benchmark loss and accuracy).
//!
//! Records are appended and flushed as they come; on resume the log is cut back (atomically)
//! to the checkpoint's step so a resumed run's log reads as if it had never stopped.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::eval::BenchScore;
use crate::fsutil::{write_atomic, IoContext, PathIoError};

/// File name of the training log inside a run directory.
pub const LOG_FILE: &str = "train_log.jsonl";

/// One training-step record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step (1-based: the number of optimiser updates done).
    pub step: u64,
    /// Tokens seen so far (rows × seq_len).
    pub tokens: u64,
    /// Mean loss over the step's counted positions.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Throughput of this step.
    pub tokens_per_s: f64,
}

/// One evaluation record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Step at which the model was evaluated.
    pub step: u64,
    /// Mean answer loss over all benchmarks.
    pub eval_loss: f64,
    /// Per-benchmark scores.
    pub eval: BTreeMap<String, BenchScore>,
}

/// Append-only writer of the training log.
#[derive(Debug)]
pub struct TrainLog {
    path: PathBuf,
    file: File,
}

impl TrainLog {
    /// Opens `dir/train_log.jsonl` for appending, first keeping only records with
    /// `step ≤ keep_until` (all of them when `None`; a fresh run passes `Some(0)`).
    pub fn open(dir: &Path, keep_until: Option<u64>) -> Result<Self, PathIoError> {
        let path = dir.join(LOG_FILE);
        if let Some(limit) = keep_until {
            if path.exists() {
                let text = fs::read_to_string(&path).at("reading", &path)?;
                let kept: String = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= limit)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                write_atomic(&path, kept.as_bytes())?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at("opening", &path)?;
        Ok(Self { path, file })
    }

    /// Appends one record.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), PathIoError> {
        let mut line = serde_json::to_string(record).expect("log records serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .at("appending to", &self.path)
    }

    /// Flushes to disk (called at checkpoints and at the end).
    pub fn sync(&mut self) -> Result<(), PathIoError> {
        self.file.sync_data().at("syncing", &self.path)
    }
}

/// Reads the step records of a training log (eval records are skipped).
pub fn read_steps(path: &Path) -> Result<Vec<StepRecord>, PathIoError> {
    let text = fs::read_to_string(path).at("reading", path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepRecord>(l).ok())
        .collect())
}

/// Reads the evaluation records of a training log.
pub fn read_evals(path: &Path) -> Result<Vec<EvalRecord>, PathIoError> {
    let text = fs::read_to_string(path).at("reading", path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<EvalRecord>(l).ok())
        .collect())
}
