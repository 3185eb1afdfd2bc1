//! Scoring a trial along its held-out curve instead of at its end (`[search.objective] curve`,
//! `search --objective-curve`): [`Curve`] says how, [`aggregate`] turns a curve's points into
//! one score per benchmark, which then goes through the objective (weights, reference)
//! exactly like the final scores do.
//!
//! - `final` (default): the final evaluation (`metrics.json`'s scores), as before;
//! - `last:K`: each benchmark's mean score over the curve's last `K` evaluation points;
//! - `auc`: the area under each benchmark's curve by the trapezoid rule, divided by the steps
//!   it spans (`(s_last − s_first)`): the curve's mean level, so a mixture that gets there
//!   sooner scores higher.
//!
//! Where the points come from (the trial's `metrics.json` `curve`, else its training log) is
//! [`super::objective`]'s business; this file only does the arithmetic.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a trial's per-benchmark scores are read off its held-out curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Curve {
    /// The final evaluation only (`metrics.json`'s scores).
    #[default]
    Final,
    /// Mean over the last `K` evaluation points (`K ≥ 1`).
    Last(usize),
    /// Trapezoid area under the curve divided by the steps it spans.
    Auc,
}

impl Curve {
    /// Whether this is the default (`final`): then the config file leaves the key out.
    pub fn is_final(&self) -> bool {
        *self == Curve::Final
    }
}

/// A `curve` value that is not `final`, `last:K` (K ≥ 1) or `auc`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("objective curve {0:?}: expected \"final\", \"last:K\" (K an integer ≥ 1) or \"auc\"")]
pub struct CurveParseError(pub String);

impl FromStr for Curve {
    type Err = CurveParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "final" => Ok(Curve::Final),
            "auc" => Ok(Curve::Auc),
            _ => match s.strip_prefix("last:").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 1 => Ok(Curve::Last(k)),
                _ => Err(CurveParseError(s.to_string())),
            },
        }
    }
}

impl TryFrom<String> for Curve {
    type Error = CurveParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Curve> for String {
    fn from(c: Curve) -> String {
        c.to_string()
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Curve::Final => write!(f, "final"),
            Curve::Last(k) => write!(f, "last:{k}"),
            Curve::Auc => write!(f, "auc"),
        }
    }
}

/// One evaluation point of a held-out curve: the step and each benchmark's score there
/// (higher is better, under the objective's metric).
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// Training step of the evaluation.
    pub step: u64,
    /// Score per benchmark.
    pub scores: BTreeMap<String, f64>,
}

/// A curve that cannot be scored as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CurveError {
    /// Fewer evaluation points than the scoring needs.
    #[error(
        "objective curve {curve}: the held-out curve has {points} evaluation point(s), it needs \
         at least {need} (evaluate more often: [train] eval_every)"
    )]
    TooFewPoints {
        /// The scoring asked for.
        curve: Curve,
        /// Points found.
        points: usize,
        /// Points needed.
        need: usize,
    },
    /// The steps do not increase.
    #[error("held-out curve: step {step} follows step {previous}; expected increasing steps")]
    Steps {
        /// The offending step.
        step: u64,
        /// The step before it.
        previous: u64,
    },
    /// A benchmark of the last point is missing at an earlier point used.
    #[error("held-out curve: benchmark {benchmark:?} has no score at step {step}")]
    MissingBenchmark {
        /// The benchmark.
        benchmark: String,
        /// The step.
        step: u64,
    },
}

/// Each benchmark's score of a curve under `curve` (not [`Curve::Final`], which has no curve:
/// it returns the last point's scores). The benchmarks are those of the last point; the
/// points must have increasing steps.
pub fn aggregate(curve: Curve, points: &[CurvePoint]) -> Result<BTreeMap<String, f64>, CurveError> {
    for w in points.windows(2) {
        if w[1].step <= w[0].step {
            return Err(CurveError::Steps {
                step: w[1].step,
                previous: w[0].step,
            });
        }
    }
    let need = match curve {
        Curve::Final => 1,
        Curve::Last(k) => k,
        Curve::Auc => 2,
    };
    if points.len() < need {
        return Err(CurveError::TooFewPoints {
            curve,
            points: points.len(),
            need,
        });
    }
    let used = match curve {
        Curve::Final => &points[points.len() - 1..],
        Curve::Last(k) => &points[points.len() - k..],
        Curve::Auc => points,
    };
    let last = &used[used.len() - 1];
    let mut out = BTreeMap::new();
    for name in last.scores.keys() {
        let ys = used
            .iter()
            .map(|p| {
                p.scores
                    .get(name)
                    .copied()
                    .ok_or_else(|| CurveError::MissingBenchmark {
                        benchmark: name.clone(),
                        step: p.step,
                    })
            })
            .collect::<Result<Vec<f64>, _>>()?;
        let v = match curve {
            Curve::Final | Curve::Last(_) => ys.iter().sum::<f64>() / ys.len() as f64,
            Curve::Auc => {
                let area: f64 = used
                    .windows(2)
                    .zip(ys.windows(2))
                    .map(|(p, y)| (p[1].step - p[0].step) as f64 * (y[0] + y[1]) / 2.0)
                    .sum();
                area / (last.step - used[0].step) as f64
            }
        };
        out.insert(name.clone(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(u64, f64, f64)]) -> Vec<CurvePoint> {
        points
            .iter()
            .map(|&(step, a, b)| CurvePoint {
                step,
                scores: [("a".to_string(), a), ("b".to_string(), b)].into(),
            })
            .collect()
    }

    #[test]
    fn parses_and_prints_every_form() {
        for (s, c) in [
            ("final", Curve::Final),
            ("last:3", Curve::Last(3)),
            ("auc", Curve::Auc),
        ] {
            assert_eq!(s.parse::<Curve>().unwrap(), c);
            assert_eq!(c.to_string(), s);
        }
        for bad in ["last:0", "last:", "last:x", "mean", ""] {
            let e = bad.parse::<Curve>().unwrap_err().to_string();
            assert!(e.contains("last:K"), "{bad}: {e}");
        }
        assert_eq!(Curve::default(), Curve::Final);
    }

    #[test]
    fn last_k_mean_and_trapezoid_auc_by_hand() {
        // Steps 10, 20, 40, 50; a = -3, -2, -1.5, -1; b = 1, 1, 1, 1.
        let pts = curve(&[
            (10, -3.0, 1.0),
            (20, -2.0, 1.0),
            (40, -1.5, 1.0),
            (50, -1.0, 1.0),
        ]);
        let l2 = aggregate(Curve::Last(2), &pts).unwrap();
        assert!((l2["a"] - (-1.25)).abs() < 1e-15 && (l2["b"] - 1.0).abs() < 1e-15);
        let l4 = aggregate(Curve::Last(4), &pts).unwrap();
        assert!((l4["a"] - (-7.5 / 4.0)).abs() < 1e-15);
        // Trapezoids: 10·(-2.5) + 20·(-1.75) + 10·(-1.25) = -72.5 over 40 steps.
        let auc = aggregate(Curve::Auc, &pts).unwrap();
        assert!((auc["a"] - (-72.5 / 40.0)).abs() < 1e-15, "{}", auc["a"]);
        assert!((auc["b"] - 1.0).abs() < 1e-15);
        assert_eq!(aggregate(Curve::Final, &pts).unwrap()["a"], -1.0);
    }

    #[test]
    fn short_or_unordered_curves_are_errors() {
        let pts = curve(&[(10, 1.0, 1.0), (20, 2.0, 2.0)]);
        let e = aggregate(Curve::Last(3), &pts).unwrap_err();
        assert_eq!(
            e,
            CurveError::TooFewPoints {
                curve: Curve::Last(3),
                points: 2,
                need: 3
            }
        );
        assert!(e.to_string().contains("eval_every"));
        assert!(aggregate(Curve::Auc, &pts[..1]).is_err());
        let back = curve(&[(20, 1.0, 1.0), (10, 2.0, 2.0)]);
        assert!(matches!(
            aggregate(Curve::Auc, &back),
            Err(CurveError::Steps { step: 10, .. })
        ));
        let mut gap = curve(&[(10, 1.0, 1.0), (20, 2.0, 2.0)]);
        gap[0].scores.remove("b");
        assert!(matches!(
            aggregate(Curve::Auc, &gap),
            Err(CurveError::MissingBenchmark { step: 10, .. })
        ));
    }
}
