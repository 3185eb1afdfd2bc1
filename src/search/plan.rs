//! What a search run is given and what it reports: the resolved plan ([`SearchPlan`]), the
//! files it keeps in the search directory besides the event log (`search.json`, `train.toml`,
//! `recipe.json`, `gp.json`), its live progress events and its summary.
//!
//! `search.json` is written once and compared on resume, so a search directory is never
//! continued with other settings; `train.toml` is the `[train]` table the built-in trainer of
//! every trial reads.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::{SearchConfig, TrainerConfig};
use super::error::SearchError;
use super::fidelity::Fidelity;
use super::recipe::Recipe;
use crate::data::prepare::PrepareConfig;
use crate::data::synth::SynthConfig;
use crate::fsutil::{write_atomic, IoContext, PathIoError};
use crate::train::TrainConfig;

/// The resolved configuration file inside a search directory.
pub const RESOLVED_FILE: &str = "search.json";
/// The recipe inside a search directory.
pub const RECIPE_FILE: &str = super::recipe::RECIPE_FILE_NAME;
/// Fitted GP state inside a search directory.
pub const GP_FILE: &str = "gp.json";
/// The built-in trainer's `[train]` table inside a search directory.
pub const TRAIN_TOML_FILE: &str = "train.toml";

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
    /// Something the user should know that does not stop the search: a record repaired on
    /// resume, a left-out trial tried again, a check skipped.
    Warning {
        /// The message.
        message: String,
    },
    /// Where the controller's (rank 0's) time went since the previous round, reported right
    /// after a round was proposed and recorded.
    Timing(RoundTimes),
}

/// Rank 0's time between two proposal rounds, by component (seconds of wall time).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoundTimes {
    /// The round just proposed.
    pub round: usize,
    /// Trials it proposed.
    pub proposed: usize,
    /// Trials finished so far.
    pub finished: usize,
    /// Attempts running when it was proposed.
    pub running: usize,
    /// In the method's proposer (the surrogate's fit and the acquisition).
    pub propose_s: f64,
    /// Writing the recipe (its GP fit included).
    pub recipe_s: f64,
    /// In the executor's calls (submitting, polling; for a real executor this includes
    /// waiting for trials to end).
    pub exec_s: f64,
    /// Everything else: preparing attempt directories, appending and fsyncing events,
    /// scoring finished trials, building the observations.
    pub record_s: f64,
}

impl RoundTimes {
    /// Rank 0's time for the round, waiting on the executor excluded.
    pub fn controller_s(&self) -> f64 {
        self.propose_s + self.recipe_s + self.record_s
    }
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
    /// Best observed objective after each finished trial; in a multi-fidelity search after
    /// each finished trial at the target fidelity, among those only (a cheaper fidelity's
    /// objective is not on the target's scale).
    pub best_so_far: Vec<f64>,
    /// Total cost of the trials run or proposed, in units of one trial at the target
    /// fidelity (the number of trials in a single-fidelity search).
    pub cost: f64,
    /// The recipe.
    pub recipe: Option<Recipe>,
}

/// Settings of `[search]` that may differ on resume: the budget may grow, and the trial time
/// limit, the retries and the parallelism are how trials run, not what they compute (a rerun
/// after a too-short `trial_timeout_s` must be able to raise it). `out` is where
/// `search.json` lives, so it is the same directory however it is spelled.
const MAY_CHANGE: &[&[&str]] = &[
    &["budget", "max_trials"],
    &["budget", "max_cost"],
    &["budget", "trial_timeout_s"],
    &["budget", "retries"],
    &["budget", "asynchronous"],
    &["executor", "parallel"],
    &["out"],
];

/// Writes `search.json` (the resolved `[search]` and `[train]`, with the corpus and the
/// search directory as absolute paths), first checking that an existing one was made with
/// the same settings (see [`MAY_CHANGE`]; paths are compared canonicalised, so a relative
/// and an absolute spelling of one directory are the same setting).
pub fn write_resolved(plan: &SearchPlan) -> Result<(), SearchError> {
    let mut resolved = serde_json::json!({
        "format": "mixatlas-search", "version": 1,
        "search": plan.search, "train": plan.train,
    });
    for key in ["corpus", "out"] {
        let p = canonical(&resolved["search"][key]);
        resolved["search"][key] = p;
    }
    let rpath = plan.search.out.join(RESOLVED_FILE);
    if rpath.exists() {
        let mut old: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(&rpath).at("reading", &rpath)?,
        )
        .map_err(|source| SearchError::Resolved {
            path: rpath.clone(),
            source,
        })?;
        old["search"]["corpus"] = canonical(&old["search"]["corpus"]);
        for key in ["search", "train"] {
            let (mut a, mut b) = (old[key].clone(), resolved[key].clone());
            // The budget may grow on resume, and a command trainer may opt in to a shell
            // (a search from before `shell` existed ran its template through `sh -c`);
            // everything else must match.
            if key == "search" {
                for path in MAY_CHANGE {
                    forget(&mut a, path);
                    forget(&mut b, path);
                }
                for t in [&mut a, &mut b] {
                    if let Some(t) = t["trainer"].as_object_mut() {
                        t.remove("shell");
                    }
                }
            }
            let mut diffs = Vec::new();
            differences(&a, &b, key, &mut diffs);
            if !diffs.is_empty() {
                return Err(SearchError::Mismatch {
                    path: rpath,
                    what: diffs.join("; "),
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
    Ok(())
}

/// A path value made absolute and canonical when it names an existing file (else as it was).
fn canonical(v: &serde_json::Value) -> serde_json::Value {
    match v.as_str().map(fs::canonicalize) {
        Some(Ok(p)) => serde_json::Value::String(p.display().to_string()),
        _ => v.clone(),
    }
}

/// Sets the value at `path` (object keys) to null.
fn forget(v: &mut serde_json::Value, path: &[&str]) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        cur = &mut cur[*k];
    }
    if let Some(o) = cur.as_object_mut() {
        o.insert(path[path.len() - 1].to_string(), serde_json::Value::Null);
    }
}

/// The dotted keys where `old` and `new` differ, with both values (`[search].seed: 0 → 1`).
fn differences(old: &serde_json::Value, new: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match (old, new) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let null = serde_json::Value::Null;
            for k in keys {
                let (x, y) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
                differences(x, y, &format!("{at}.{k}"), out);
            }
        }
        (a, b) if a != b => {
            let short = |v: &serde_json::Value| {
                let t = v.to_string();
                if t.chars().count() > 80 {
                    format!("{}…", t.chars().take(80).collect::<String>())
                } else {
                    t
                }
            };
            let (head, tail) = at.split_once('.').unwrap_or((at, ""));
            out.push(format!(
                "[{head}].{tail}: {} before, {} now",
                short(a),
                short(b)
            ));
        }
        _ => {}
    }
}

/// A whole configuration file holding `train` and every other table at its default: the
/// tables of `config::Config`, in its order, so `train.toml` is a complete config that
/// `mixatlas train --config` reads. (The search sits below `config` in the layers and so
/// writes the same TOML without naming it; a test in `config` checks the two agree.)
#[derive(Serialize)]
struct TrainToml<'a> {
    synth: SynthConfig,
    prepare: PrepareConfig,
    train: &'a TrainConfig,
    search: SearchConfig,
}

/// The text of `train.toml` for `train`.
pub fn train_toml(train: &TrainConfig) -> String {
    let file = TrainToml {
        synth: SynthConfig::default(),
        prepare: PrepareConfig::default(),
        train,
        search: SearchConfig::default(),
    };
    toml::to_string_pretty(&file).expect("config serialises")
}

/// The `[train]` table of a trial at fidelity `f`: `train` with `f`'s steps, its warmup
/// scaled to keep its share of the run (then clamped as every command does).
pub fn train_at(train: &TrainConfig, f: &Fidelity) -> TrainConfig {
    let mut t = train.clone();
    // The same schedule over a shorter or longer run: the warmup keeps its share of the steps.
    t.warmup_steps = (u128::from(train.warmup_steps) * u128::from(f.steps)
        / u128::from(train.steps.max(1))) as u64;
    t.steps = f.steps;
    t.clamp_warmup();
    t
}

/// Writes `dir/train.toml` for a trial at fidelity `f` ([`train_at`]; its
/// `[search.trainer]` names `f`'s preset, which the trial's command passes as `--preset`)
/// and returns its path.
pub fn write_fidelity_train_toml(
    dir: &Path,
    train: &TrainConfig,
    f: &Fidelity,
) -> Result<PathBuf, PathIoError> {
    let train = train_at(train, f);
    let file = TrainToml {
        synth: SynthConfig::default(),
        prepare: PrepareConfig::default(),
        train: &train,
        search: SearchConfig {
            trainer: TrainerConfig::Builtin {
                preset: f.preset.clone(),
            },
            ..SearchConfig::default()
        },
    };
    let path = dir.join(TRAIN_TOML_FILE);
    write_atomic(
        &path,
        toml::to_string_pretty(&file)
            .expect("config serialises")
            .as_bytes(),
    )?;
    Ok(path)
}

/// Writes `dir/train.toml` for `train` and returns its path.
pub fn write_train_toml(dir: &Path, train: &TrainConfig) -> Result<PathBuf, PathIoError> {
    let path = dir.join(TRAIN_TOML_FILE);
    write_atomic(&path, train_toml(train).as_bytes())?;
    Ok(path)
}
