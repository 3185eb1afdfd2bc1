//! From finished trials to what the method learns from: a trial's `metrics.json` becomes
//! per-benchmark scores ([`scores`], under the configured [`Metric`]), the scores of all
//! finished trials become objectives ([`ObjectiveSpec::evaluate`](super::trials::ObjectiveSpec::evaluate)),
//! and each trial's mixture becomes a point of the search space ([`observations`]).
//!
//! With an objective curve other than `final` ([`super::curve`]), a trial's scores are read
//! off its held-out curve ([`trial_curve`]): `metrics.json`'s `curve` when the trainer wrote
//! one, else the evaluation records of the attempt's `train_log.jsonl`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::config::{Metric, SearchConfig};
use super::curve::{aggregate, Curve, CurveError, CurvePoint};
use super::state::{check_scores_present, RecordScoresError, Status, TrialState};
use super::trials::{ObjectiveError, ObjectiveSpec, Trial};
use crate::acquisition::space::{SearchSpace, SpaceError};
use crate::acquisition::Observations;
use crate::data::mixture::{Mixture, MixtureError};

/// A trial's metrics carry no usable per-benchmark scores.
#[derive(Debug, thiserror::Error)]
pub enum ScoresError {
    /// `benchmarks` or `benchmark_loss` is not a map of numbers.
    #[error("metrics `{key}` is not a map of numbers: {source}")]
    NotAMap {
        /// The key.
        key: String,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// No `benchmarks` at all.
    #[error("metrics.json has no `benchmarks`")]
    NoBenchmarks,
    /// A score is NaN or infinite.
    #[error("benchmark {benchmark:?} has a non-finite score {value}")]
    NonFinite {
        /// The benchmark.
        benchmark: String,
        /// The score.
        value: f64,
    },
}

/// A trial's held-out curve is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum CurveReadError {
    /// Neither `metrics.json`'s `curve` nor evaluation records in the training log.
    #[error(
        "metrics.json has no `curve` and {} has no evaluation records; objective curve {curve} \
         needs the held-out curve (the built-in trainer logs it when [train] eval_every > 0; an \
         external trainer writes `curve` into metrics.json: docs/search.md)",
        log.display()
    )]
    Missing {
        /// The training log looked at.
        log: PathBuf,
        /// The scoring asked for.
        curve: Curve,
    },
    /// A point of `metrics.json`'s `curve` is not `{"step": N, "benchmarks" | "benchmark_loss":
    /// {name: number}}`.
    #[error("metrics.json `curve`[{index}]: {problem}")]
    BadPoint {
        /// Position in `curve`.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// The curve cannot be scored as asked.
    #[error(transparent)]
    Curve(#[from] CurveError),
}

/// The finished trials cannot be turned into observations.
#[derive(Debug, thiserror::Error)]
pub enum ObservationError {
    /// A trial's metrics have no usable scores.
    #[error(transparent)]
    Scores(#[from] ScoresError),
    /// A trial's held-out curve is missing or unusable (objective curve `last:K` or `auc`).
    #[error("trial {trial}: {source}")]
    Curve {
        /// The trial.
        trial: String,
        /// Why.
        #[source]
        source: CurveReadError,
    },
    /// The objective cannot be computed from the scores.
    #[error(transparent)]
    Objective(#[from] ObjectiveError),
    /// A trial's mixture is not one over the space's cells.
    #[error("trial {trial}: {source}")]
    Mixture {
        /// The trial.
        trial: String,
        /// Why.
        #[source]
        source: MixtureError,
    },
    /// A trial's mixture is not a point of the space.
    #[error("trial {trial}: {source}")]
    Space {
        /// The trial.
        trial: String,
        /// Why.
        #[source]
        source: SpaceError,
    },
    /// The trials are scored on different benchmark sets.
    #[error(transparent)]
    Sets(#[from] BenchmarkSetsError),
}

/// Trials scored on different sets of benchmarks, with no benchmark weights to say which
/// count: their objectives (each trial's mean over its own benchmarks) would not compare.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "trials are scored on different benchmark sets: {}; an objective over all benchmarks \
     would average different benchmarks per trial. Name the benchmarks to use \
     ([search.objective] weights, or --weights / --target for suggest, predict and recipe)",
    describe_sets(.sets)
)]
pub struct BenchmarkSetsError {
    /// Each set of benchmarks, with the trials scored on it (in order).
    pub sets: Vec<(BTreeSet<String>, Vec<String>)>,
}

fn describe_sets(sets: &[(BTreeSet<String>, Vec<String>)]) -> String {
    sets.iter()
        .map(|(set, trials)| {
            let names: Vec<&str> = set.iter().map(String::as_str).collect();
            let mut ids: Vec<&str> = trials.iter().take(6).map(String::as_str).collect();
            if trials.len() > 6 {
                ids.push("…");
            }
            format!(
                "{{{}}} ({} trial(s): {})",
                names.join(", "),
                trials.len(),
                ids.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A finished trial whose metrics the search's objective cannot use: recorded as a failed
/// attempt (retried, then left out with this reason), never as a finished trial.
#[derive(Debug, thiserror::Error)]
pub enum UnusableScores {
    /// No usable score at all.
    #[error(transparent)]
    Record(#[from] RecordScoresError),
    /// No usable scores (see [`ScoresError`]), or its curve cannot be scored.
    #[error(transparent)]
    Scores(#[from] ObservationError),
    /// Neither benchmark scores nor an `objective` under the configured metric and curve.
    #[error("metrics.json has no scores under the objective (metric {metric:?})")]
    NoScores {
        /// The configured metric.
        metric: Metric,
    },
    /// A benchmark the objective weights is missing.
    #[error(
        "no score for benchmark {benchmark:?}, which [search.objective] weights names \
         (scored: {})",
        list(.scored)
    )]
    Missing {
        /// The benchmark.
        benchmark: String,
        /// The benchmarks it has.
        scored: BTreeSet<String>,
    },
    /// Scored on other benchmarks than the trials finished before it.
    #[error(
        "scored on {{{}}} but trial {first} on {{{}}}: trials must be scored on the same \
         benchmarks (or name the ones to use in [search.objective] weights)",
        list(.scored),
        list(.first_scored)
    )]
    DifferentSet {
        /// Its benchmarks.
        scored: BTreeSet<String>,
        /// The first finished trial.
        first: String,
        /// Its benchmarks.
        first_scored: BTreeSet<String>,
    },
}

fn list(set: &BTreeSet<String>) -> String {
    set.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that finished trial `t` (with `metrics`, not yet recorded) can be scored by the
/// search's objective next to the trials in `finished`: scores under the configured metric
/// and curve (or an explicit `objective`), every weighted benchmark, and with no weights the
/// same benchmarks as the first of `finished` with benchmark scores.
pub fn check_finished(
    cfg: &SearchConfig,
    finished: &[&TrialState],
    t: &TrialState,
    metrics: &serde_json::Value,
) -> Result<(), UnusableScores> {
    check_scores_present(metrics)?;
    let scored = trial_scores(cfg, t, metrics)?;
    let objective = explicit_objective(cfg, metrics, &scored);
    if scored.is_empty() && objective.is_none() {
        return Err(UnusableScores::NoScores {
            metric: cfg.objective.metric,
        });
    }
    let names: BTreeSet<String> = scored.keys().cloned().collect();
    if let Some(b) = cfg.objective.weights.keys().find(|b| !names.contains(*b)) {
        return Err(UnusableScores::Missing {
            benchmark: b.clone(),
            scored: names,
        });
    }
    if !cfg.objective.weights.is_empty() || names.is_empty() {
        return Ok(());
    }
    for f in finished.iter().filter(|f| f.id != t.id) {
        let Status::Finished { metrics: m, .. } = &f.status else {
            continue;
        };
        let Ok(first) = trial_scores(cfg, f, m) else {
            continue;
        };
        if first.is_empty() {
            continue;
        }
        let first_scored: BTreeSet<String> = first.into_keys().collect();
        if first_scored != names {
            return Err(UnusableScores::DifferentSet {
                scored: names,
                first: f.id.clone(),
                first_scored,
            });
        }
        break;
    }
    Ok(())
}

/// A trial's explicit `objective`, used only on the final scores and only when it has no
/// benchmark scores (docs/ask-tell.md: "all benchmarks equally, or the trial's `objective`
/// when it has no benchmarks").
fn explicit_objective(
    cfg: &SearchConfig,
    metrics: &serde_json::Value,
    scored: &BTreeMap<String, f64>,
) -> Option<f64> {
    (cfg.objective.curve.is_final() && scored.is_empty())
        .then(|| metrics.get("objective").and_then(|v| v.as_f64()))
        .flatten()
}

/// The objective of every trial under `spec` (the ask/tell commands and the search share
/// it): a trial's explicit `objective` counts only when it has no benchmark scores (the
/// documented precedence: benchmarks first), and without benchmark weights every trial with
/// benchmark scores must have the same benchmarks ([`BenchmarkSetsError`] otherwise).
pub fn evaluate(spec: &ObjectiveSpec, trials: &[Trial]) -> Result<Vec<f64>, ObservationError> {
    if spec.weights.is_empty() {
        let mut sets: Vec<(BTreeSet<String>, Vec<String>)> = Vec::new();
        for t in trials.iter().filter(|t| !t.benchmarks.is_empty()) {
            let set: BTreeSet<String> = t.benchmarks.keys().cloned().collect();
            match sets.iter_mut().find(|(s, _)| *s == set) {
                Some((_, ids)) => ids.push(t.id.clone()),
                None => sets.push((set, vec![t.id.clone()])),
            }
        }
        if sets.len() > 1 {
            return Err(BenchmarkSetsError { sets }.into());
        }
    }
    let own: Vec<Trial> = trials
        .iter()
        .map(|t| Trial {
            objective: t.objective.filter(|_| t.benchmarks.is_empty()),
            ..t.clone()
        })
        .collect();
    Ok(spec.evaluate(&own)?)
}

/// The per-benchmark scores of a trial's metrics under `metric` (negative loss when the
/// metrics carry `benchmark_loss`, else the `benchmarks` as they are).
pub fn scores(
    metrics: &serde_json::Value,
    metric: Metric,
) -> Result<BTreeMap<String, f64>, ScoresError> {
    let table = |key: &str| -> Option<Result<BTreeMap<String, f64>, ScoresError>> {
        metrics.get(key).map(|v| {
            serde_json::from_value::<BTreeMap<String, f64>>(v.clone()).map_err(|source| {
                ScoresError::NotAMap {
                    key: key.to_string(),
                    source,
                }
            })
        })
    };
    let out = match (metric, table("benchmark_loss")) {
        (Metric::NegLoss, Some(l)) => l?.into_iter().map(|(k, v)| (k, -v)).collect(),
        _ => table("benchmarks").ok_or(ScoresError::NoBenchmarks)??,
    };
    if let Some((k, v)) = out.iter().find(|(_, v)| !v.is_finite()) {
        return Err(ScoresError::NonFinite {
            benchmark: k.clone(),
            value: *v,
        });
    }
    Ok(out)
}

/// The held-out curve of a finished trial under `metric`: `metrics.json`'s `curve` (a list of
/// `{"step": N, "benchmarks": {…}, "benchmark_loss": {…}}`, each point scored like the final
/// metrics by [`scores`]) when present, else the evaluation records of `train_log.jsonl` in
/// `attempt_dir` (negative answer loss, or the accuracy, per benchmark).
pub fn trial_curve(
    attempt_dir: &Path,
    metrics: &serde_json::Value,
    metric: Metric,
    curve: Curve,
) -> Result<Vec<CurvePoint>, CurveReadError> {
    if let Some(c) = metrics.get("curve") {
        let bad = |index: usize, problem: String| CurveReadError::BadPoint { index, problem };
        let points = c
            .as_array()
            .ok_or_else(|| bad(0, "`curve` is not a list of evaluation points".into()))?;
        return points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let step = p
                    .get("step")
                    .and_then(|s| s.as_u64())
                    .ok_or_else(|| bad(i, "no integer `step`".into()))?;
                let scores = scores(p, metric).map_err(|e| bad(i, e.to_string()))?;
                Ok(CurvePoint { step, scores })
            })
            .collect();
    }
    let log = attempt_dir.join(crate::train::log::LOG_FILE);
    let records = crate::train::log::read_evals(&log).unwrap_or_default();
    if records.is_empty() {
        return Err(CurveReadError::Missing { log, curve });
    }
    Ok(records
        .into_iter()
        .map(|r| CurvePoint {
            step: r.step,
            scores: r
                .eval
                .into_iter()
                .map(|(b, s)| {
                    let v = match metric {
                        Metric::NegLoss => -s.loss,
                        Metric::Accuracy => s.score.unwrap_or(s.accuracy),
                    };
                    (b, v)
                })
                .collect(),
        })
        .collect())
}

/// A finished trial's per-benchmark scores under the configured objective: the final
/// metrics' ([`scores`]) or, with an objective curve, its curve's ([`aggregate`]).
fn trial_scores(
    cfg: &SearchConfig,
    t: &TrialState,
    metrics: &serde_json::Value,
) -> Result<BTreeMap<String, f64>, ObservationError> {
    let curve = cfg.objective.curve;
    if curve.is_final() {
        return match scores(metrics, cfg.objective.metric) {
            // An external trainer may report only an `objective` (docs/search.md).
            Err(ScoresError::NoBenchmarks) if metrics.get("objective").is_some() => {
                Ok(BTreeMap::new())
            }
            r => Ok(r?),
        };
    }
    // The finished attempt's directory (`attempt::attempt_dir`, not imported: it imports
    // this file).
    let dir = cfg
        .out
        .join("trials")
        .join(&t.id)
        .join(format!("a{}", t.attempts));
    let wrap = |source: CurveReadError| ObservationError::Curve {
        trial: t.id.clone(),
        source,
    };
    let points = trial_curve(&dir, metrics, cfg.objective.metric, curve).map_err(wrap)?;
    aggregate(curve, &points).map_err(|e| wrap(e.into()))
}

/// A trial's mixture, checked against the space's cells.
pub fn trial_mixture(space: &SearchSpace, t: &TrialState) -> Result<Mixture, ObservationError> {
    Mixture::new(t.mixture.clone(), &space.cells).map_err(|source| ObservationError::Mixture {
        trial: t.id.clone(),
        source,
    })
}

/// A trial's mixture in the space's cell order.
pub fn trial_weights(space: &SearchSpace, t: &TrialState) -> Result<Vec<f64>, ObservationError> {
    trial_mixture(space, t)?
        .to_order(&space.cells)
        .map_err(|e| ObservationError::Mixture {
            trial: t.id.clone(),
            source: e.into(),
        })
}

/// A trial's mixture as a point of the space (its coordinates).
pub fn trial_point(space: &SearchSpace, t: &TrialState) -> Result<Vec<f64>, ObservationError> {
    space
        .from_mixture(&trial_weights(space, t)?)
        .map_err(|source| ObservationError::Space {
            trial: t.id.clone(),
            source,
        })
}

/// Observations (space coordinates, objective) of the finished trials, and every finished
/// trial's objective by id.
pub fn observations(
    space: &SearchSpace,
    finished: &[&TrialState],
    cfg: &SearchConfig,
) -> Result<(Observations, Vec<(String, f64)>), ObservationError> {
    let mut trials = Vec::new();
    for (i, t) in finished.iter().enumerate() {
        let Status::Finished { metrics, .. } = &t.status else {
            continue;
        };
        let benchmarks = trial_scores(cfg, t, metrics)?;
        trials.push(Trial {
            id: t.id.clone(),
            line: i + 1,
            mixture: trial_weights(space, t)?,
            // Along the curve, the scores are the curve's: a reported `objective` is ignored;
            // on the final scores it counts only for a trial without benchmark scores.
            objective: explicit_objective(cfg, metrics, &benchmarks),
            benchmarks,
            fidelity: t.fidelity.clone(),
        });
    }
    let y = evaluate(&cfg.objective.spec(), &trials)?;
    let mut obs = Observations::default();
    let mut ys = Vec::new();
    for (t, y) in trials.iter().zip(y) {
        obs.push(
            space
                .from_mixture(&t.mixture)
                .map_err(|source| ObservationError::Space {
                    trial: t.id.clone(),
                    source,
                })?,
            y,
        );
        ys.push((t.id.clone(), y));
    }
    Ok((obs, ys))
}

/// The objective of finished trial `t` alone: the same value [`observations`] gives it among
/// all finished trials of `state` (a trial's objective depends only on its own scores and,
/// with `[search.objective] reference`, on the reference trial's), at the cost of one trial.
pub fn objective_of(
    space: &SearchSpace,
    cfg: &SearchConfig,
    state: &super::state::SearchState,
    t: &TrialState,
) -> Result<f64, ObservationError> {
    let mut pair: Vec<&TrialState> = Vec::with_capacity(2);
    if let Some(r) = cfg.objective.reference.as_deref().filter(|r| *r != t.id) {
        if let Some(r) = state
            .get(r)
            .filter(|r| matches!(r.status, Status::Finished { .. }))
        {
            pair.push(r);
        }
    }
    pair.push(t);
    let (_, ys) = observations(space, &pair, cfg)?;
    Ok(ys.last().map_or(f64::NAN, |y| y.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(id: &str, benchmarks: &[(&str, f64)], objective: Option<f64>) -> Trial {
        Trial {
            id: id.into(),
            line: 1,
            mixture: vec![1.0],
            benchmarks: benchmarks
                .iter()
                .map(|(b, v)| (b.to_string(), *v))
                .collect(),
            objective,
            fidelity: None,
        }
    }

    /// Issue 18 row 18: benchmarks before an explicit objective (docs/ask-tell.md), and
    /// different benchmark sets an error naming sets and trials unless weights pick them.
    #[test]
    fn benchmarks_win_over_objective_and_sets_must_agree() {
        let spec = ObjectiveSpec::default();
        let t = [
            trial("a", &[("x", 0.2), ("y", 0.4)], Some(9.0)),
            trial("b", &[], Some(0.7)),
        ];
        let y = evaluate(&spec, &t).unwrap();
        assert!((y[0] - 0.3).abs() < 1e-12 && y[1] == 0.7, "{y:?}");
        let mixed = [
            trial("a", &[("x", 0.2), ("y", 0.4)], None),
            trial("b", &[("x", 0.5)], None),
            trial("c", &[("x", 0.1), ("y", 0.1)], None),
        ];
        let e = evaluate(&spec, &mixed).unwrap_err().to_string();
        assert!(
            e.contains("{x, y} (2 trial(s): a, c)") && e.contains("{x} (1 trial(s): b)"),
            "{e}"
        );
        let only_x = ObjectiveSpec::targeting(&["x".into()]);
        assert_eq!(evaluate(&only_x, &mixed).unwrap(), vec![0.2, 0.5, 0.1]);
    }

    /// The built-in trainer's curve: the eval records of `train_log.jsonl` (step records
    /// skipped), negative loss or accuracy per benchmark; a `curve` in metrics.json wins.
    #[test]
    fn the_curve_comes_from_metrics_or_the_training_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = [
            r#"{"step":5,"tokens":80,"loss":3.0,"lr":0.001,"grad_norm":1.0,"tokens_per_s":10.0}"#,
            r#"{"step":10,"eval_loss":2.0,"eval":{"a":{"loss":2.0,"accuracy":0.1,"docs":4}}}"#,
            r#"{"step":20,"eval_loss":1.5,"eval":{"a":{"loss":1.5,"accuracy":0.3,"docs":4}}}"#,
        ];
        let metrics = serde_json::json!({"benchmarks": {"a": 0.3}});
        let missing = trial_curve(dir.path(), &metrics, Metric::NegLoss, Curve::Auc).unwrap_err();
        assert!(
            missing.to_string().contains("train_log.jsonl") && missing.to_string().contains("auc"),
            "{missing}"
        );
        std::fs::write(dir.path().join("train_log.jsonl"), log.join("\n")).unwrap();
        let c = trial_curve(dir.path(), &metrics, Metric::NegLoss, Curve::Auc).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].step, c[0].scores["a"]), (10, -2.0));
        assert_eq!((c[1].step, c[1].scores["a"]), (20, -1.5));
        let acc = trial_curve(dir.path(), &metrics, Metric::Accuracy, Curve::Auc).unwrap();
        assert_eq!(acc[1].scores["a"], 0.3);
        // (10·(−2 − 1.5)/2) / 10 = −1.75.
        assert_eq!(aggregate(Curve::Auc, &c).unwrap()["a"], -1.75);
        let own = serde_json::json!({"benchmarks": {"a": 0.3},
            "curve": [{"step": 3, "benchmark_loss": {"a": 4.0}}]});
        let c = trial_curve(dir.path(), &own, Metric::NegLoss, Curve::Auc).unwrap();
        assert_eq!((c[0].step, c[0].scores["a"]), (3, -4.0));
        let bad = serde_json::json!({"curve": [{"benchmarks": {"a": 1.0}}]});
        let e = trial_curve(dir.path(), &bad, Metric::NegLoss, Curve::Auc).unwrap_err();
        assert!(
            e.to_string().contains("`curve`[0]: no integer `step`"),
            "{e}"
        );
    }
}
