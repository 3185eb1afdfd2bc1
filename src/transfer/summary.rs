//! The outcome of a transfer ([`TransferSummary`], written as `transfer.json`): steps to the
//! baseline's loss per seed with the mean speedup, and each arm's benchmark scores and losses
//! averaged over seeds; [`BenchmarkRow`] is one line of the benchmark table as printed and as
//! the report shows it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::bench::steps_to_loss::{bootstrap_mean, StepsToLoss};
use crate::train::eval::Metric;

/// The outcome (`transfer.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferSummary {
    /// Steps-to-baseline-loss per seed (held-out loss).
    pub per_seed: Vec<StepsToLoss>,
    /// Mean speedup over seeds and its 95 % bootstrap interval (None when some seed never
    /// reached the baseline's loss).
    pub speedup: Option<(f64, f64, f64)>,
    /// Mean per-benchmark score over seeds (`metrics.json`'s `benchmarks`: the benchmark's
    /// metric of greedy answers): baseline.
    pub baseline_benchmarks: BTreeMap<String, f64>,
    /// Mean per-benchmark score over seeds: recipe.
    pub recipe_benchmarks: BTreeMap<String, f64>,
    /// The metric of each benchmark's score.
    #[serde(default)]
    pub benchmark_metric: BTreeMap<String, Metric>,
    /// Per seed, the recipe's mean benchmark score minus the baseline's.
    #[serde(default)]
    pub score_gain_per_seed: Vec<f64>,
    /// Mean of `score_gain_per_seed` with its 95 % bootstrap interval.
    #[serde(default)]
    pub score_gain: Option<(f64, f64, f64)>,
    /// Mean per-benchmark exact-match accuracy over seeds: baseline.
    #[serde(default)]
    pub baseline_benchmark_accuracy: BTreeMap<String, f64>,
    /// Mean per-benchmark exact-match accuracy over seeds: recipe.
    #[serde(default)]
    pub recipe_benchmark_accuracy: BTreeMap<String, f64>,
    /// Mean per-benchmark answer loss over seeds: baseline.
    pub baseline_benchmark_loss: BTreeMap<String, f64>,
    /// Mean per-benchmark answer loss over seeds: recipe.
    pub recipe_benchmark_loss: BTreeMap<String, f64>,
    /// Run directories: (arm, seed, path).
    pub runs: Vec<(String, u64, PathBuf)>,
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

impl TransferSummary {
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

    /// Seeds in which the recipe's mean benchmark score is above the baseline's.
    pub fn seeds_higher(&self) -> usize {
        self.score_gain_per_seed
            .iter()
            .filter(|&&g| g > 0.0)
            .count()
    }
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

/// The `metrics.json` of every finished run, keyed by (arm, seed).
pub type RunMetrics = BTreeMap<(String, u64), serde_json::Value>;

impl TransferSummary {
    /// Builds the summary from the steps-to-loss comparison of each seed and the
    /// `metrics.json` of every run: speedup and score gain with their 95 % bootstrap intervals
    /// over seeds, and each arm's benchmark figures averaged over seeds.
    pub fn from_runs(
        per_seed: Vec<StepsToLoss>,
        metrics: &RunMetrics,
        seeds: u64,
        runs: Vec<(String, u64, PathBuf)>,
    ) -> Self {
        let speeds: Vec<f64> = per_seed.iter().filter_map(|r| r.speedup).collect();
        let speedup = (speeds.len() == per_seed.len() && !speeds.is_empty())
            .then(|| bootstrap_mean(&speeds, 0.95, 10_000, 0));
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
            .filter_map(|s| Some(mean_score("recipe", s)? - mean_score("baseline", s)?))
            .collect();
        let score_gain = (!score_gain_per_seed.is_empty())
            .then(|| bootstrap_mean(&score_gain_per_seed, 0.95, 10_000, 0));
        let benchmark_metric = metrics
            .get(&("recipe".to_string(), 0))
            .and_then(|m| serde_json::from_value(m["benchmark_metric"].clone()).ok())
            .unwrap_or_default();
        TransferSummary {
            per_seed,
            speedup,
            baseline_benchmarks: table("baseline", "benchmarks"),
            recipe_benchmarks: table("recipe", "benchmarks"),
            benchmark_metric,
            score_gain_per_seed,
            score_gain,
            baseline_benchmark_accuracy: table("baseline", "benchmark_accuracy"),
            recipe_benchmark_accuracy: table("recipe", "benchmark_accuracy"),
            baseline_benchmark_loss: table("baseline", "benchmark_loss"),
            recipe_benchmark_loss: table("recipe", "benchmark_loss"),
            runs,
        }
    }
}
