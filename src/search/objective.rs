//! From finished trials to what the method learns from: a trial's `metrics.json` becomes
//! per-benchmark scores ([`scores`], under the configured [`Metric`]), the scores of all
//! finished trials become objectives ([`ObjectiveSpec::evaluate`](super::trials::ObjectiveSpec::evaluate)),
//! and each trial's mixture becomes a point of the search space ([`observations`]).

use std::collections::BTreeMap;

use super::config::{Metric, SearchConfig};
use super::state::{Status, TrialState};
use super::trials::{ObjectiveError, Trial};
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

/// The finished trials cannot be turned into observations.
#[derive(Debug, thiserror::Error)]
pub enum ObservationError {
    /// A trial's metrics have no usable scores.
    #[error(transparent)]
    Scores(#[from] ScoresError),
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
        trials.push(Trial {
            id: t.id.clone(),
            line: i + 1,
            mixture: trial_weights(space, t)?,
            benchmarks: scores(metrics, cfg.objective.metric)?,
            objective: metrics.get("objective").and_then(|v| v.as_f64()),
            fidelity: t.fidelity.clone(),
        });
    }
    let y = cfg.objective.spec().evaluate(&trials)?;
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
