//! The outcome of a transfer ([`TransferSummary`], written as `transfer.json`): one
//! [`Comparison`] of the recipe with each baseline (steps to the baseline's loss per seed with
//! the mean speedup, each arm's benchmark scores and losses averaged over seeds, the paired
//! score gain), all computed by [`Comparison::compute`]; [`BenchmarkRow`] is one line of a
//! comparison's benchmark table as printed and as the report shows it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::bench::steps_to_loss::{bootstrap_mean, StepsToLoss};
use crate::train::eval::Metric;

use super::plan::{LEGACY_BASELINE_ARM, RECIPE_ARM};

/// The recipe against one baseline, over the same seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The baseline's name.
    pub baseline: String,
    /// Its run directory under the transfer's output (`<out>/<arm>/seed-<s>/`).
    pub arm: String,
    /// What it is: `uniform`, `natural` or the mixture file's path.
    #[serde(default)]
    pub source: String,
    /// Steps-to-baseline-loss per seed (held-out loss).
    pub per_seed: Vec<StepsToLoss>,
    /// Mean speedup over seeds and its 95 % percentile bootstrap interval (None when some
    /// seed never reached the baseline's loss).
    pub speedup: Option<(f64, f64, f64)>,
    /// Seeds in which the recipe never reached the baseline's final loss.
    #[serde(default)]
    pub never_reached: Vec<u64>,
    /// Mean per-benchmark score over seeds (`metrics.json`'s `benchmarks`): the baseline.
    pub baseline_benchmarks: BTreeMap<String, f64>,
    /// Mean per-benchmark score over seeds: the recipe.
    pub recipe_benchmarks: BTreeMap<String, f64>,
    /// The metric of each benchmark's score.
    #[serde(default)]
    pub benchmark_metric: BTreeMap<String, Metric>,
    /// Per seed, the recipe's mean benchmark score minus the baseline's.
    #[serde(default)]
    pub score_gain_per_seed: Vec<f64>,
    /// Mean of `score_gain_per_seed` with its 95 % percentile bootstrap interval.
    #[serde(default)]
    pub score_gain: Option<(f64, f64, f64)>,
    /// Seeds in which the recipe's mean benchmark score is above the baseline's.
    #[serde(default)]
    pub wins: usize,
    /// Mean per-benchmark exact-match accuracy over seeds: the baseline.
    #[serde(default)]
    pub baseline_benchmark_accuracy: BTreeMap<String, f64>,
    /// Mean per-benchmark exact-match accuracy over seeds: the recipe.
    #[serde(default)]
    pub recipe_benchmark_accuracy: BTreeMap<String, f64>,
    /// Mean per-benchmark answer loss over seeds: the baseline.
    pub baseline_benchmark_loss: BTreeMap<String, f64>,
    /// Mean per-benchmark answer loss over seeds: the recipe.
    pub recipe_benchmark_loss: BTreeMap<String, f64>,
}

/// The outcome (`transfer.json`). The fields before `comparisons` are the first comparison's
/// (as written before there were several baselines, so older readers keep working);
/// `comparisons` holds every baseline's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferSummary {
    /// Steps-to-baseline-loss per seed (held-out loss): first baseline.
    pub per_seed: Vec<StepsToLoss>,
    /// Mean speedup over seeds and its 95 % bootstrap interval: first baseline.
    pub speedup: Option<(f64, f64, f64)>,
    /// Mean per-benchmark score over seeds: first baseline.
    pub baseline_benchmarks: BTreeMap<String, f64>,
    /// Mean per-benchmark score over seeds: recipe.
    pub recipe_benchmarks: BTreeMap<String, f64>,
    /// The metric of each benchmark's score.
    #[serde(default)]
    pub benchmark_metric: BTreeMap<String, Metric>,
    /// Per seed, the recipe's mean benchmark score minus the first baseline's.
    #[serde(default)]
    pub score_gain_per_seed: Vec<f64>,
    /// Mean of `score_gain_per_seed` with its 95 % bootstrap interval.
    #[serde(default)]
    pub score_gain: Option<(f64, f64, f64)>,
    /// Mean per-benchmark exact-match accuracy over seeds: first baseline.
    #[serde(default)]
    pub baseline_benchmark_accuracy: BTreeMap<String, f64>,
    /// Mean per-benchmark exact-match accuracy over seeds: recipe.
    #[serde(default)]
    pub recipe_benchmark_accuracy: BTreeMap<String, f64>,
    /// Mean per-benchmark answer loss over seeds: first baseline.
    pub baseline_benchmark_loss: BTreeMap<String, f64>,
    /// Mean per-benchmark answer loss over seeds: recipe.
    pub recipe_benchmark_loss: BTreeMap<String, f64>,
    /// Run directories: (arm, seed, path).
    pub runs: Vec<(String, u64, PathBuf)>,
    /// The recipe against each baseline, in the order given (absent in summaries written
    /// before several baselines: read them with [`TransferSummary::comparisons`]).
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
}

/// One row of the benchmark table: the metric, and each arm's score and answer loss.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkRow {
    /// Benchmark name.
    pub name: String,
    /// How its score is computed.
    pub metric: Metric,
    /// Mean score over seeds: (baseline, recipe).
    pub score: (f64, f64),
    /// Mean answer loss over seeds: (baseline, recipe).
    pub loss: (f64, f64),
}

/// The `metrics.json` of every finished run, keyed by (arm, seed).
pub type RunMetrics = BTreeMap<(String, u64), serde_json::Value>;

/// Who a [`Comparison`] is against: the baseline's name, run directory and source.
#[derive(Debug, Clone, PartialEq)]
pub struct ComparedArm {
    /// The baseline's name.
    pub name: String,
    /// Its run directory under the transfer's output.
    pub arm: String,
    /// `uniform`, `natural` or the mixture file's path.
    pub source: String,
}

fn mean_maps(maps: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for m in maps {
        for (k, v) in m {
            *out.entry(k.clone()).or_default() += v / maps.len() as f64;
        }
    }
    out
}

impl Comparison {
    /// The comparison of the recipe's runs (arm `recipe`) with the baseline's (arm
    /// `against.arm`) from the steps-to-loss comparison of each seed and the `metrics.json` of
    /// every run: speedup and score gain with their 95 % bootstrap intervals over seeds (10 000
    /// resamples, seed 0, as `bench steps-to-loss`), and each arm's benchmark figures averaged
    /// over seeds.
    pub fn compute(
        against: &ComparedArm,
        per_seed: Vec<StepsToLoss>,
        metrics: &RunMetrics,
        seeds: u64,
    ) -> Self {
        let base = against.arm.as_str();
        let speeds: Vec<f64> = per_seed.iter().filter_map(|r| r.speedup).collect();
        let speedup = (speeds.len() == per_seed.len() && !speeds.is_empty())
            .then(|| bootstrap_mean(&speeds, 0.95, 10_000, 0));
        let never_reached = (0..per_seed.len() as u64)
            .filter(|&s| per_seed[s as usize].speedup.is_none())
            .collect();
        let table = |arm: &str, key: &str| -> BTreeMap<String, f64> {
            let maps: Vec<BTreeMap<String, f64>> = (0..seeds)
                .filter_map(|s| metrics.get(&(arm.to_string(), s)))
                .filter_map(|m| serde_json::from_value(m[key].clone()).ok())
                .collect();
            mean_maps(&maps)
        };
        // Paired by seed: the recipe's mean benchmark score minus the baseline's.
        let mean_score = |arm: &str, s: u64| -> Option<f64> {
            let m: BTreeMap<String, f64> =
                serde_json::from_value(metrics.get(&(arm.to_string(), s))?["benchmarks"].clone())
                    .ok()?;
            (!m.is_empty()).then(|| m.values().sum::<f64>() / m.len() as f64)
        };
        let score_gain_per_seed: Vec<f64> = (0..seeds)
            .filter_map(|s| Some(mean_score(RECIPE_ARM, s)? - mean_score(base, s)?))
            .collect();
        let score_gain = (!score_gain_per_seed.is_empty())
            .then(|| bootstrap_mean(&score_gain_per_seed, 0.95, 10_000, 0));
        let benchmark_metric = metrics
            .get(&(RECIPE_ARM.to_string(), 0))
            .and_then(|m| serde_json::from_value(m["benchmark_metric"].clone()).ok())
            .unwrap_or_default();
        Comparison {
            baseline: against.name.clone(),
            arm: against.arm.clone(),
            source: against.source.clone(),
            per_seed,
            speedup,
            never_reached,
            baseline_benchmarks: table(base, "benchmarks"),
            recipe_benchmarks: table(RECIPE_ARM, "benchmarks"),
            benchmark_metric,
            wins: score_gain_per_seed.iter().filter(|&&g| g > 0.0).count(),
            score_gain_per_seed,
            score_gain,
            baseline_benchmark_accuracy: table(base, "benchmark_accuracy"),
            recipe_benchmark_accuracy: table(RECIPE_ARM, "benchmark_accuracy"),
            baseline_benchmark_loss: table(base, "benchmark_loss"),
            recipe_benchmark_loss: table(RECIPE_ARM, "benchmark_loss"),
        }
    }

    /// The benchmark table in name order (NaN where an arm lacks a benchmark), as printed and
    /// as the report shows it.
    pub fn table(&self) -> Vec<BenchmarkRow> {
        let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        self.baseline_benchmarks
            .keys()
            .map(|k| BenchmarkRow {
                name: k.clone(),
                // Summaries written before metrics were recorded hold exact-match accuracies.
                metric: self.benchmark_metric.get(k).copied().unwrap_or_default(),
                score: (
                    get(&self.baseline_benchmarks, k),
                    get(&self.recipe_benchmarks, k),
                ),
                loss: (
                    get(&self.baseline_benchmark_loss, k),
                    get(&self.recipe_benchmark_loss, k),
                ),
            })
            .collect()
    }
}

impl TransferSummary {
    /// The summary of `comparisons` (at least one; the first fills the top-level fields) and
    /// the run directories.
    pub fn from_comparisons(
        comparisons: Vec<Comparison>,
        runs: Vec<(String, u64, PathBuf)>,
    ) -> Self {
        let c = comparisons
            .first()
            .expect("a transfer compares against at least one baseline")
            .clone();
        TransferSummary {
            per_seed: c.per_seed,
            speedup: c.speedup,
            baseline_benchmarks: c.baseline_benchmarks,
            recipe_benchmarks: c.recipe_benchmarks,
            benchmark_metric: c.benchmark_metric,
            score_gain_per_seed: c.score_gain_per_seed,
            score_gain: c.score_gain,
            baseline_benchmark_accuracy: c.baseline_benchmark_accuracy,
            recipe_benchmark_accuracy: c.recipe_benchmark_accuracy,
            baseline_benchmark_loss: c.baseline_benchmark_loss,
            recipe_benchmark_loss: c.recipe_benchmark_loss,
            runs,
            comparisons,
        }
    }

    /// Every comparison: `comparisons`, or for a summary written before several baselines,
    /// the one its top-level fields hold (the baseline named `baseline`, runs in
    /// `<out>/baseline/`).
    pub fn comparisons(&self) -> Vec<Comparison> {
        if !self.comparisons.is_empty() {
            return self.comparisons.clone();
        }
        vec![Comparison {
            baseline: LEGACY_BASELINE_ARM.into(),
            arm: LEGACY_BASELINE_ARM.into(),
            source: String::new(),
            per_seed: self.per_seed.clone(),
            speedup: self.speedup,
            never_reached: (0..self.per_seed.len() as u64)
                .filter(|&s| self.per_seed[s as usize].speedup.is_none())
                .collect(),
            baseline_benchmarks: self.baseline_benchmarks.clone(),
            recipe_benchmarks: self.recipe_benchmarks.clone(),
            benchmark_metric: self.benchmark_metric.clone(),
            score_gain_per_seed: self.score_gain_per_seed.clone(),
            score_gain: self.score_gain,
            wins: self.seeds_higher(),
            baseline_benchmark_accuracy: self.baseline_benchmark_accuracy.clone(),
            recipe_benchmark_accuracy: self.recipe_benchmark_accuracy.clone(),
            baseline_benchmark_loss: self.baseline_benchmark_loss.clone(),
            recipe_benchmark_loss: self.recipe_benchmark_loss.clone(),
        }]
    }

    /// The first comparison's benchmark table (see [`Comparison::table`]).
    pub fn table(&self) -> Vec<BenchmarkRow> {
        self.comparisons()[0].table()
    }

    /// Seeds in which the recipe's mean benchmark score is above the first baseline's.
    pub fn seeds_higher(&self) -> usize {
        self.score_gain_per_seed
            .iter()
            .filter(|&&g| g > 0.0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_metrics(scores: &[(&str, u64, [f64; 2])]) -> RunMetrics {
        scores
            .iter()
            .map(|&(arm, s, [a, b])| {
                let v = serde_json::json!({
                    "benchmarks": {"a": a, "b": b},
                    "benchmark_loss": {"a": 1.0 + a, "b": 2.0 + b},
                    "benchmark_metric": {"a": "anls", "b": "exact_match"},
                });
                ((arm.to_string(), s), v)
            })
            .collect()
    }

    fn stl(speedup: Option<f64>) -> StepsToLoss {
        StepsToLoss {
            target: 1.0,
            baseline_steps: 10,
            candidate_step: speedup.map(|s| (10.0 / s) as u64),
            speedup,
            candidate_final: 1.0,
        }
    }

    #[test]
    fn a_comparison_pairs_its_own_arm_with_the_recipe_by_seed() {
        let m = run_metrics(&[
            ("recipe", 0, [0.5, 0.3]),
            ("recipe", 1, [0.4, 0.2]),
            ("natural", 0, [0.3, 0.3]),
            ("natural", 1, [0.5, 0.3]),
            ("uniform", 0, [0.1, 0.1]),
            ("uniform", 1, [0.1, 0.3]),
        ]);
        let against = |n: &str| ComparedArm {
            name: n.into(),
            arm: n.into(),
            source: n.into(),
        };
        let nat = Comparison::compute(&against("natural"), vec![stl(Some(2.0)), stl(None)], &m, 2);
        // Per seed: (0.4 − 0.3) and (0.3 − 0.4), by hand.
        assert!((nat.score_gain_per_seed[0] - 0.1).abs() < 1e-12);
        assert!((nat.score_gain_per_seed[1] + 0.1).abs() < 1e-12);
        assert_eq!(nat.wins, 1);
        assert_eq!(nat.never_reached, vec![1]);
        assert_eq!(nat.speedup, None);
        assert!((nat.baseline_benchmarks["a"] - 0.4).abs() < 1e-12);
        assert!((nat.recipe_benchmarks["a"] - 0.45).abs() < 1e-12);
        assert!((nat.baseline_benchmark_loss["b"] - 2.3).abs() < 1e-12);
        let uni = Comparison::compute(
            &against("uniform"),
            vec![stl(Some(2.0)), stl(Some(1.0))],
            &m,
            2,
        );
        assert_eq!(uni.wins, 2);
        let (mean, lo, hi) = uni.speedup.unwrap();
        assert!((mean - 1.5).abs() < 1e-12 && lo >= 1.0 && hi <= 2.0 && lo <= hi);
        let s = TransferSummary::from_comparisons(vec![uni.clone(), nat], Vec::new());
        assert_eq!(s.score_gain_per_seed, uni.score_gain_per_seed);
        assert_eq!(s.comparisons().len(), 2);
        assert_eq!(s.table(), uni.table());
        assert_eq!(s.table()[0].metric, Metric::Anls);
    }

    #[test]
    fn a_summary_without_comparisons_reads_as_one_against_its_baseline_dir() {
        let m = run_metrics(&[("recipe", 0, [0.5, 0.3]), ("baseline", 0, [0.3, 0.3])]);
        let legacy = ComparedArm {
            name: "baseline".into(),
            arm: "baseline".into(),
            source: String::new(),
        };
        let c = Comparison::compute(&legacy, vec![stl(Some(1.25))], &m, 1);
        let mut v = serde_json::to_value(TransferSummary::from_comparisons(
            vec![c.clone()],
            Vec::new(),
        ))
        .unwrap();
        v.as_object_mut().unwrap().remove("comparisons");
        let old: TransferSummary = serde_json::from_value(v).unwrap();
        let back = old.comparisons();
        assert_eq!(back.len(), 1);
        assert_eq!(
            serde_json::to_value(&back[0]).unwrap(),
            serde_json::to_value(&c).unwrap()
        );
    }
}
