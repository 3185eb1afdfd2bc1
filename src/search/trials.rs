//! Finished trials as users give them to `suggest`, `predict` and `recipe` (ask/tell).
//!
//! JSONL, one trial per line:
//! `{"mixture": {"c00/ocr": 0.2, …}, "benchmarks": {"docvqa": 0.41, …}}` or with
//! `"objective": 0.37` instead of (or besides) `"benchmarks"`; optional `"id"`. CSV is also
//! accepted: a header naming cells (`concept/task`) and score columns (`objective` or
//! benchmark names), one trial per row.
//!
//! Policies (documented in `docs/ask-tell.md`): cells a mixture omits have weight 0; weights
//! must be finite and non-negative; unknown cells, NaN or infinite scores are errors naming the
//! file, line and field; repeated mixtures are kept as repeated noisy observations (the GP's
//! noise term averages them).
//!
//! Rounded weights ([`rescale_rounded`]): a trial records a mixture that was already run, and
//! files often print its weights rounded (RegMix's released runs have 3 decimals, so a row sums
//! to 1 only within ±0.005). This is the policy of every mixture file
//! ([`crate::data::mixture::Renormalised`]): a mixture whose weights sum to 1 within
//! [`TRIAL_SUM_TOLERANCE`] (0.01) is divided by its sum and then checked as every mixture is
//! (sum 1 within 1e-6), with one warning per file counting such rows and the largest
//! deviation; one further off is an error naming the file, line and sum. The same rule applies
//! to `predict --at` mixtures. A key given twice (a cell, a benchmark, a CSV column) is an
//! error naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fidelity::Fidelity;
use crate::acquisition::SearchSpace;
use crate::data::mixture::{Mixture, MixtureError, Renormalised, UniqueMap, FILE_SUM_TOLERANCE};

/// A problem with a trials file.
#[derive(Debug, thiserror::Error)]
pub enum TrialsError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A trial is invalid.
    #[error("{}:{line}: {problem}", path.display())]
    Trial {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and what was expected.
        #[source]
        problem: TrialProblem,
    },
}

/// What is wrong with one trial of a trials file.
#[derive(Debug, thiserror::Error)]
pub enum TrialProblem {
    /// A JSONL line that is not a trial object (serde's message, with its internal type
    /// names replaced by the shape expected).
    #[error("invalid trial: {0}")]
    Json(String),
    /// A CSV header that names a column twice.
    #[error("column {0:?} appears twice in the header; expected every column once")]
    DuplicateColumn(String),
    /// A CSV row with the wrong number of values.
    #[error("{values} values for {columns} header columns")]
    Columns {
        /// Values in the row.
        values: usize,
        /// Columns in the header.
        columns: usize,
    },
    /// A CSV value that is not a number.
    #[error("column {column:?} value {value:?} is not a number")]
    NotANumber {
        /// The column.
        column: String,
        /// The value.
        value: String,
    },
    /// The mixture is not one over the space's cells.
    #[error(transparent)]
    Mixture(#[from] MixtureError),
    /// A benchmark score is NaN or infinite.
    #[error("benchmark {benchmark:?} score is {value}; expected a finite number")]
    BadScore {
        /// The benchmark.
        benchmark: String,
        /// The score.
        value: f64,
    },
    /// The explicit objective is NaN or infinite.
    #[error("objective is {0}; expected a finite number")]
    BadObjective(f64),
    /// Neither benchmarks nor an objective.
    #[error("no scores: expected \"benchmarks\" or \"objective\"")]
    NoScores,
    /// A fidelity that is not a known preset with steps ≥ 1, or only half of one in CSV.
    #[error("fidelity: {0}")]
    Fidelity(String),
}

/// The objective cannot be computed from the trials' scores.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveError {
    /// `reference` names a trial that is not there.
    #[error("reference trial {0:?} is not among the trials")]
    NoReference(String),
    /// A trial lacks a benchmark the objective needs.
    #[error("trial {trial} (line {line}) has no score for benchmark {benchmark:?}")]
    MissingScore {
        /// The trial.
        trial: String,
        /// Its line.
        line: usize,
        /// The benchmark.
        benchmark: String,
    },
    /// The reference trial lacks a benchmark the objective needs.
    #[error("reference trial {trial} has no score for {benchmark:?}")]
    ReferenceMissing {
        /// The reference trial.
        trial: String,
        /// The benchmark.
        benchmark: String,
    },
    /// The reference trial scores 0, so nothing can be divided by it.
    #[error("reference trial {trial} scores 0 on {benchmark:?}: cannot normalise")]
    ReferenceZero {
        /// The reference trial.
        trial: String,
        /// The benchmark.
        benchmark: String,
    },
    /// A trial has neither benchmarks nor an objective.
    #[error("trial {trial} (line {line}) has no scores")]
    NoScores {
        /// The trial.
        trial: String,
        /// Its line.
        line: usize,
    },
    /// The benchmark weights sum to 0 (or less).
    #[error("benchmark weights sum to 0")]
    ZeroWeights,
    /// An explicit objective where the objective must be split into benchmarks.
    #[error("trial {trial} (line {line}) gives an explicit objective, which cannot be split                      into benchmarks; name the benchmarks to target")]
    Explicit {
        /// The trial.
        trial: String,
        /// Its line.
        line: usize,
    },
}

/// One finished trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Identifier (from the file, or `line N`).
    pub id: String,
    /// Line in the source file.
    pub line: usize,
    /// One weight per cell of the space, in the space's cell order.
    pub mixture: Vec<f64>,
    /// Benchmark scores by name.
    pub benchmarks: BTreeMap<String, f64>,
    /// An explicit objective, if given.
    pub objective: Option<f64>,
    /// The fidelity the trial ran at (`{"preset", "steps"}`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<Fidelity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTrial {
    #[serde(default)]
    id: Option<serde_json::Value>,
    mixture: UniqueMap<f64>,
    #[serde(default)]
    benchmarks: UniqueMap<f64>,
    #[serde(default)]
    objective: Option<f64>,
    #[serde(default)]
    fidelity: Option<Fidelity>,
    #[serde(default)]
    #[allow(dead_code)]
    meta: Option<serde_json::Value>,
}

/// Checks a trial's fidelity (a known preset, steps ≥ 1).
fn check_fidelity(f: &Option<Fidelity>) -> Result<(), TrialProblem> {
    match f {
        Some(f) => f.check().map_err(|e| TrialProblem::Fidelity(e.to_string())),
        None => Ok(()),
    }
}

/// How far the weights of a mixture in a trials file (or a `predict --at` file) may sum from 1:
/// such files record mixtures with rounded weights (see the module documentation). The one
/// tolerance of every mixture file, [`FILE_SUM_TOLERANCE`].
pub const TRIAL_SUM_TOLERANCE: f64 = FILE_SUM_TOLERANCE;

/// Applies the mixture-file policy ([`Renormalised::apply`]) to one mixture of a file, counting
/// it in `tally` (call [`Renormalised::warn`] once the file is read).
pub fn rescale_rounded(
    named: &mut BTreeMap<String, f64>,
    tally: &mut Renormalised,
) -> Result<(), TrialProblem> {
    Ok(tally.apply(named)?)
}

/// serde's message for a trial line, without its internal type names: a line that is JSON
/// but not an object says so.
fn trial_json_error(line: &str, e: serde_json::Error) -> TrialProblem {
    if !(e.is_syntax() || e.is_eof()) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if !v.is_object() {
                return TrialProblem::Json(format!(
                    "the line is {v}; expected a trial object {{\"mixture\": {{\"concept/task\": \
                     weight, …}}, \"benchmarks\": {{\"name\": score, …}}}}"
                ));
            }
        }
    }
    let msg = e.to_string();
    let msg = msg
        .replace("struct WireTrial", "a trial object")
        .replace("struct Fidelity", "{\"preset\": name, \"steps\": n}");
    TrialProblem::Json(msg)
}

/// The mixture of a trial in the space's cell order: rounded weights rescaled
/// ([`rescale_rounded`], counted in `tally`), then checked ([`Mixture::new`]).
fn check_mixture(
    space: &SearchSpace,
    mut named: BTreeMap<String, f64>,
    tally: &mut Renormalised,
) -> Result<Vec<f64>, TrialProblem> {
    rescale_rounded(&mut named, tally)?;
    let mixture = Mixture::new(named, &space.cells)?;
    Ok(mixture.to_order(&space.cells).map_err(MixtureError::from)?)
}

fn check_scores(
    benchmarks: &BTreeMap<String, f64>,
    objective: Option<f64>,
) -> Result<(), TrialProblem> {
    for (b, &v) in benchmarks {
        if !v.is_finite() {
            return Err(TrialProblem::BadScore {
                benchmark: b.clone(),
                value: v,
            });
        }
    }
    if let Some(o) = objective {
        if !o.is_finite() {
            return Err(TrialProblem::BadObjective(o));
        }
    }
    if benchmarks.is_empty() && objective.is_none() {
        return Err(TrialProblem::NoScores);
    }
    Ok(())
}

/// Reads trials (JSONL, or CSV when the file ends in `.csv`) against a space.
pub fn load_trials(path: &Path, space: &SearchSpace) -> Result<Vec<Trial>, TrialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        parse_csv(&text, path, space)
    } else {
        parse_jsonl(&text, path, space)
    }
}

/// Parses JSONL trials; `path` names the source in errors.
pub fn parse_jsonl(
    text: &str,
    path: &Path,
    space: &SearchSpace,
) -> Result<Vec<Trial>, TrialsError> {
    let mut out = Vec::new();
    let mut tally = Renormalised::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |problem: TrialProblem| TrialsError::Trial {
            path: path.to_path_buf(),
            line: i + 1,
            problem,
        };
        let w: WireTrial =
            serde_json::from_str(line).map_err(|e| err(trial_json_error(line, e)))?;
        let mixture = check_mixture(space, w.mixture.0, &mut tally).map_err(err)?;
        let benchmarks = w.benchmarks.0;
        check_scores(&benchmarks, w.objective).map_err(err)?;
        check_fidelity(&w.fidelity).map_err(err)?;
        let id = match w.id {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => format!("line {}", i + 1),
        };
        out.push(Trial {
            id,
            line: i + 1,
            mixture,
            benchmarks,
            objective: w.objective,
            fidelity: w.fidelity,
        });
    }
    tally.warn(path, out.len());
    Ok(out)
}

/// Parses CSV trials: header of cell names and score columns.
pub fn parse_csv(text: &str, path: &Path, space: &SearchSpace) -> Result<Vec<Trial>, TrialsError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_line, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = cols.iter().find(|c| !seen.insert(c.as_str())) {
        return Err(TrialsError::Trial {
            path: path.to_path_buf(),
            line: header_line + 1,
            problem: TrialProblem::DuplicateColumn(c.clone()),
        });
    }
    let mut out = Vec::new();
    let mut tally = Renormalised::default();
    for (i, line) in lines {
        let err = |problem: TrialProblem| TrialsError::Trial {
            path: path.to_path_buf(),
            line: i + 1,
            problem,
        };
        let vals: Vec<&str> = line.split(',').map(|v| v.trim()).collect();
        if vals.len() != cols.len() {
            return Err(err(TrialProblem::Columns {
                values: vals.len(),
                columns: cols.len(),
            }));
        }
        let mut mixture = BTreeMap::new();
        let mut benchmarks = BTreeMap::new();
        let mut objective = None;
        let mut id = None;
        let (mut preset, mut steps) = (None, None);
        for (c, v) in cols.iter().zip(&vals) {
            if c == "id" {
                id = Some(v.to_string());
                continue;
            }
            if c == "fidelity_preset" {
                preset = Some(v.trim_matches('"').to_string());
                continue;
            }
            if c == "fidelity_steps" {
                steps = Some(v.parse::<u64>().map_err(|_| {
                    err(TrialProblem::Fidelity(format!(
                        "fidelity_steps {v:?}: expected an integer ≥ 1"
                    )))
                })?);
                continue;
            }
            let x: f64 = v.parse().map_err(|_| {
                err(TrialProblem::NotANumber {
                    column: c.clone(),
                    value: v.to_string(),
                })
            })?;
            if c.contains('/') {
                mixture.insert(c.clone(), x);
            } else if c == "objective" {
                objective = Some(x);
            } else {
                benchmarks.insert(c.clone(), x);
            }
        }
        let mixture = check_mixture(space, mixture, &mut tally).map_err(err)?;
        check_scores(&benchmarks, objective).map_err(err)?;
        let fidelity = match (preset, steps) {
            (Some(preset), Some(steps)) => Some(Fidelity { preset, steps }),
            (None, None) => None,
            _ => {
                return Err(err(TrialProblem::Fidelity(
                    "expected both fidelity_preset and fidelity_steps columns".into(),
                )))
            }
        };
        check_fidelity(&fidelity).map_err(err)?;
        out.push(Trial {
            id: id.unwrap_or_else(|| format!("line {}", i + 1)),
            line: i + 1,
            mixture,
            benchmarks,
            objective,
            fidelity,
        });
    }
    tally.warn(path, out.len());
    Ok(out)
}

/// How trial scores become the scalar the search maximises.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveSpec {
    /// Benchmark weights; empty = every benchmark with weight 1.
    pub weights: BTreeMap<String, f64>,
    /// Normalise each benchmark by its score in this trial (an id), e.g. the uniform or
    /// natural mixture's trial, so benchmarks on different scales count alike.
    pub reference: Option<String>,
}

impl ObjectiveSpec {
    /// A spec targeting the given benchmarks with equal weights.
    pub fn targeting(benchmarks: &[String]) -> Self {
        Self {
            weights: benchmarks.iter().map(|b| (b.clone(), 1.0)).collect(),
            reference: None,
        }
    }

    fn reference_trial<'a>(
        &self,
        trials: &'a [Trial],
    ) -> Result<Option<&'a Trial>, ObjectiveError> {
        match &self.reference {
            None => Ok(None),
            Some(id) => trials
                .iter()
                .find(|t| &t.id == id)
                .map(Some)
                .ok_or_else(|| ObjectiveError::NoReference(id.clone())),
        }
    }

    /// Trial `t`'s score on `b`, divided by the reference trial's when there is one.
    fn score(t: &Trial, b: &str, reference: Option<&Trial>) -> Result<f64, ObjectiveError> {
        let s = *t
            .benchmarks
            .get(b)
            .ok_or_else(|| ObjectiveError::MissingScore {
                trial: t.id.clone(),
                line: t.line,
                benchmark: b.to_string(),
            })?;
        match reference {
            Some(r) => {
                let rs = *r
                    .benchmarks
                    .get(b)
                    .ok_or_else(|| ObjectiveError::ReferenceMissing {
                        trial: r.id.clone(),
                        benchmark: b.to_string(),
                    })?;
                if rs == 0.0 {
                    return Err(ObjectiveError::ReferenceZero {
                        trial: r.id.clone(),
                        benchmark: b.to_string(),
                    });
                }
                Ok(s / rs)
            }
            None => Ok(s),
        }
    }

    /// The objective of every trial: the weighted mean of its (normalised) benchmark scores,
    /// or its explicit `objective` when no benchmark weights are given and it has one.
    /// Errors name the trial that lacks a needed score.
    pub fn evaluate(&self, trials: &[Trial]) -> Result<Vec<f64>, ObjectiveError> {
        let reference = self.reference_trial(trials)?;
        trials
            .iter()
            .map(|t| {
                if self.weights.is_empty() {
                    if let Some(o) = t.objective {
                        return Ok(o);
                    }
                    if t.benchmarks.is_empty() {
                        return Err(ObjectiveError::NoScores {
                            trial: t.id.clone(),
                            line: t.line,
                        });
                    }
                }
                let names: Vec<(&String, f64)> = if self.weights.is_empty() {
                    t.benchmarks.keys().map(|b| (b, 1.0)).collect()
                } else {
                    self.weights.iter().map(|(b, &w)| (b, w)).collect()
                };
                let mut num = 0.0;
                let mut den = 0.0;
                for (b, w) in names {
                    num += w * Self::score(t, b, reference)?;
                    den += w;
                }
                if den <= 0.0 {
                    return Err(ObjectiveError::ZeroWeights);
                }
                Ok(num / den)
            })
            .collect()
    }

    /// The objective split into its benchmarks, for one surrogate per benchmark: each
    /// benchmark with positive weight, its weight divided by the weights' sum, and every
    /// trial's (normalised) score on it, so that `Σ weight · scores[i]` is
    /// [`evaluate`](Self::evaluate)'s value for trial `i`. With no weights, every benchmark
    /// any trial names, equally weighted (each trial must score all of them; explicit
    /// `objective`s cannot be split and are an error).
    pub fn components(&self, trials: &[Trial]) -> Result<Vec<Component>, ObjectiveError> {
        let reference = self.reference_trial(trials)?;
        let weights: Vec<(String, f64)> = if self.weights.is_empty() {
            if let Some(t) = trials.iter().find(|t| t.objective.is_some()) {
                return Err(ObjectiveError::Explicit {
                    trial: t.id.clone(),
                    line: t.line,
                });
            }
            let names: std::collections::BTreeSet<&String> =
                trials.iter().flat_map(|t| t.benchmarks.keys()).collect();
            names.into_iter().map(|b| (b.clone(), 1.0)).collect()
        } else {
            self.weights.iter().map(|(b, &w)| (b.clone(), w)).collect()
        };
        let den: f64 = weights.iter().map(|(_, w)| w).sum();
        if den <= 0.0 {
            return Err(ObjectiveError::ZeroWeights);
        }
        weights
            .into_iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|(benchmark, w)| {
                let scores = trials
                    .iter()
                    .map(|t| Self::score(t, &benchmark, reference))
                    .collect::<Result<Vec<f64>, ObjectiveError>>()?;
                Ok(Component {
                    benchmark,
                    weight: w / den,
                    scores,
                })
            })
            .collect()
    }
}

/// One benchmark's part of an objective ([`ObjectiveSpec::components`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// The benchmark.
    pub benchmark: String,
    /// Its weight in the objective (the weights sum to 1).
    pub weight: f64,
    /// Every trial's score on it (normalised by the reference trial's, if any).
    pub scores: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquisition::{SpaceConstraints, SpaceKind};

    fn space() -> SearchSpace {
        SearchSpace::new(
            SpaceKind::Joint,
            crate::acquisition::space::SpaceCells {
                cells: vec!["a/x".into(), "a/y".into(), "b/x".into()],
                cell_axes: vec![(0, 0), (0, 1), (1, 0)],
                concepts: vec!["a".into(), "b".into()],
                tasks: vec!["x".into(), "y".into()],
                prior: vec![0.5, 0.3, 0.2],
            },
            &SpaceConstraints::default(),
        )
        .unwrap()
    }

    #[test]
    fn jsonl_and_csv_agree() {
        let s = space();
        let j = "{\"id\":\"t1\",\"mixture\":{\"a/x\":0.5,\"b/x\":0.5},\"benchmarks\":{\"q\":0.2,\"r\":0.4}}\n\n{\"mixture\":{\"a/y\":1.0},\"objective\":0.9}\n";
        let t = parse_jsonl(j, Path::new("t.jsonl"), &s).unwrap();
        assert_eq!(t[0].mixture, vec![0.5, 0.0, 0.5]);
        assert_eq!(t[1].id, "line 3");
        let c = "id,a/x,a/y,b/x,q,r\nt1,0.5,0,0.5,0.2,0.4\n";
        let t2 = parse_csv(c, Path::new("t.csv"), &s).unwrap();
        assert_eq!(t2[0].mixture, t[0].mixture);
        assert_eq!(t2[0].benchmarks, t[0].benchmarks);
        let y = ObjectiveSpec::default().evaluate(&t).unwrap();
        assert!((y[0] - 0.3).abs() < 1e-15 && y[1] == 0.9);
        let spec = ObjectiveSpec {
            weights: [("r".to_string(), 3.0), ("q".to_string(), 1.0)].into(),
            reference: None,
        };
        assert!((spec.evaluate(&t[..1]).unwrap()[0] - (0.2 + 1.2) / 4.0).abs() < 1e-15);
        let e = spec.evaluate(&t).unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("\"q\"") || e.contains("\"r\""),
            "{e}"
        );
    }

    #[test]
    fn fidelities_read_alike_from_jsonl_and_csv() {
        let s = space();
        let j = "{\"mixture\":{\"a/x\":1.0},\"objective\":0.1,\"fidelity\":{\"preset\":\"mini\",\"steps\":200}}\n{\"mixture\":{\"a/y\":1.0},\"objective\":0.2}\n";
        let t = parse_jsonl(j, Path::new("t.jsonl"), &s).unwrap();
        let mini = Fidelity::new("mini", 200).unwrap();
        assert_eq!(t[0].fidelity, Some(mini.clone()));
        assert_eq!(t[1].fidelity, None);
        let c = "a/x,a/y,b/x,objective,fidelity_preset,fidelity_steps\n1,0,0,0.1,mini,200\n";
        let t2 = parse_csv(c, Path::new("t.csv"), &s).unwrap();
        assert_eq!(t2[0].fidelity, Some(mini));
        assert_eq!(t2[0].objective, Some(0.1));
        let half = "a/x,a/y,b/x,objective,fidelity_preset\n1,0,0,0.1,mini\n";
        let e = parse_csv(half, Path::new("t.csv"), &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:2") && e.contains("fidelity_steps"), "{e}");
        let bad = "{\"mixture\":{\"a/x\":1.0},\"objective\":0.1,\"fidelity\":{\"preset\":\"huge\",\"steps\":2}}\n";
        let e = parse_jsonl(bad, Path::new("t.jsonl"), &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.jsonl:1") && e.contains("huge"), "{e}");
    }

    #[test]
    fn components_sum_to_the_objective() {
        let s = space();
        let j = "{\"id\":\"u\",\"mixture\":{\"a/x\":0.5,\"b/x\":0.5},\"benchmarks\":{\"q\":0.2,\"r\":0.4,\"z\":1}}\n\
                 {\"mixture\":{\"a/y\":1.0},\"benchmarks\":{\"q\":0.5,\"r\":0.1,\"z\":2}}\n";
        let t = parse_jsonl(j, Path::new("t.jsonl"), &s).unwrap();
        for spec in [
            ObjectiveSpec {
                weights: [
                    ("r".to_string(), 3.0),
                    ("q".to_string(), 1.0),
                    ("z".to_string(), 0.0),
                ]
                .into(),
                reference: Some("u".into()),
            },
            ObjectiveSpec::default(),
            ObjectiveSpec::targeting(&["q".into()]),
        ] {
            let y = spec.evaluate(&t).unwrap();
            let c = spec.components(&t).unwrap();
            assert!(c.iter().all(|c| c.weight > 0.0));
            assert!((c.iter().map(|c| c.weight).sum::<f64>() - 1.0).abs() < 1e-15);
            for (i, y) in y.iter().enumerate() {
                let s: f64 = c.iter().map(|c| c.weight * c.scores[i]).sum();
                assert!((s - y).abs() < 1e-12, "{s} vs {y}");
            }
        }
        let explicit = parse_jsonl(
            "{\"mixture\":{\"a/y\":1.0},\"objective\":0.9}",
            Path::new("t.jsonl"),
            &s,
        )
        .unwrap();
        let e = ObjectiveSpec::default()
            .components(&explicit)
            .unwrap_err()
            .to_string();
        assert!(e.contains("explicit objective"), "{e}");
    }

    #[test]
    fn rounded_weights_are_rescaled() {
        let s = space();
        // RegMix-style 3-decimal weights: 0.333 + 0.333 + 0.333 = 0.999, within 0.01 of 1.
        let t = parse_csv(
            "a/x,a/y,b/x,objective\n0.333,0.333,0.333,1\n0.5,0.5,0.004,2\n",
            Path::new("t.csv"),
            &s,
        )
        .unwrap();
        for (x, y) in t[0].mixture.iter().zip([1.0 / 3.0; 3]) {
            assert!((x - y).abs() < 1e-15, "{x} vs {y}");
        }
        let want = [0.5 / 1.004, 0.5 / 1.004, 0.004 / 1.004];
        for (x, y) in t[1].mixture.iter().zip(want) {
            assert!((x - y).abs() < 1e-15, "{x} vs {y}");
        }
        // Exact mixtures are unchanged.
        let t = parse_jsonl(
            "{\"mixture\":{\"a/x\":0.25,\"b/x\":0.75},\"objective\":1}",
            Path::new("t.jsonl"),
            &s,
        )
        .unwrap();
        assert_eq!(t[0].mixture, vec![0.25, 0.0, 0.75]);
        // Beyond 0.01 it is an error naming the sum and the rule.
        for (row, sum) in [("0.33,0.33,0.32", "0.98"), ("0.5,0.5,0.0101", "1.0101")] {
            let e = parse_csv(
                &format!("a/x,a/y,b/x,objective\n{row},1\n"),
                Path::new("t.csv"),
                &s,
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("t.csv:2")
                    && e.contains(&format!("sum to {sum}"))
                    && e.contains("within 0.01"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_trials_are_named() {
        let s = space();
        let cases = [
            (
                "{\"mixture\":{\"z/x\":1.0},\"objective\":1}",
                "unknown cell \"z/x\"",
            ),
            ("{\"mixture\":{\"a/x\":0.7},\"objective\":1}", "sum to 0.7"),
            (
                "{\"mixture\":{\"a/x\":1.0},\"objective\":NaN}",
                "invalid trial",
            ),
            ("{\"mixture\":{\"a/x\":1.0},\"benchmarks\":{}}", "no scores"),
            (
                "{\"mixture\":{\"a/x\":1.0,\"a/y\":-0.0001,\"b/x\":0.0001},\"objective\":1}",
                "non-negative",
            ),
        ];
        for (line, want) in cases {
            let e = parse_jsonl(&format!("\n{line}\n"), Path::new("t.jsonl"), &s)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("t.jsonl:2") && e.contains(want),
                "{e} lacks {want}"
            );
        }
        let e = parse_csv("a/x,a/y,b/x,q\n1,0,0,inf\n", Path::new("t.csv"), &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv:2") && e.contains("finite"), "{e}");
    }

    #[test]
    fn repeated_keys_and_non_objects_are_named() {
        let s = space();
        for (text, want) in [
            (
                "{\"mixture\":{\"a/x\":0.5,\"a/x\":0.5},\"objective\":1}",
                "\"a/x\" is given twice",
            ),
            (
                "{\"mixture\":{\"a/x\":1},\"benchmarks\":{\"q\":1,\"q\":2}}",
                "\"q\" is given twice",
            ),
            ("[1, 2]", "the line is [1,2]; expected a trial object"),
            (
                "{\"mixture\":{\"a/x\":1},\"objective\":1,\"fidelity\":3}",
                "\"preset\"",
            ),
        ] {
            let e = parse_jsonl(text, Path::new("t.jsonl"), &s)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("t.jsonl:1") && e.contains(want),
                "{e} lacks {want}"
            );
            assert!(!e.contains("Wire") && !e.contains("struct"), "{e}");
        }
        let e = parse_csv("a/x,q,a/x\n0.5,1,0.5\n", Path::new("t.csv"), &s)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.csv:1") && e.contains("\"a/x\" appears twice"),
            "{e}"
        );
        let e = parse_jsonl("{\"mixture\":{},\"objective\":1}", Path::new("t.jsonl"), &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no weights given") && !e.contains("-0"), "{e}");
    }
}
