//! Transfer: train the larger model on the baseline mixture and on the recipe with identical
//! settings and seeds, evaluating on a schedule, then compare (steps to baseline loss on the
//! held-out loss, benchmark scores). Runs on one process or data-parallel under `mpirun`
//! (every rank calls [`run_transfer`] with the world communicator); a rerun skips finished runs
//! and resumes interrupted ones from their checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bench::steps_to_loss::{
    bootstrap_mean, read_series, steps_to_loss, LogColumns, Smoothing, StepsToLoss,
};
use crate::data::corpus::Corpus;
use crate::dist::Communicator;
use crate::fsutil::write_atomic;
use crate::model::Qwen2Config;
use crate::train::eval::Metric;
use crate::train::trainer::METRICS_FILE;
use crate::train::{train_with, TrainConfig, TrainError, TrainPlan};

/// The comparison target.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// Equal weight on every cell.
    Uniform,
    /// The corpus's natural proportions.
    Natural,
    /// A mixture file.
    File(PathBuf),
}

impl Baseline {
    /// Parses `uniform`, `natural` or a path.
    pub fn parse(s: &str) -> Self {
        match s {
            "uniform" => Baseline::Uniform,
            "natural" => Baseline::Natural,
            p => Baseline::File(PathBuf::from(p)),
        }
    }

    /// The weights over `corpus`'s cells.
    pub fn weights(&self, corpus: &Corpus) -> Result<Vec<f64>, TrainError> {
        let n = corpus.manifest.cells.len();
        Ok(match self {
            Baseline::Uniform => vec![1.0 / n as f64; n],
            Baseline::Natural => corpus.manifest.natural_weights(),
            Baseline::File(p) => crate::train::trainer::read_mixture(p, &corpus.manifest)?,
        })
    }

    /// A short name for directories and tables.
    pub fn name(&self) -> String {
        match self {
            Baseline::Uniform => "uniform".into(),
            Baseline::Natural => "natural".into(),
            Baseline::File(p) => p
                .file_stem()
                .map_or("baseline".into(), |s| s.to_string_lossy().into_owned()),
        }
    }
}

/// A resolved transfer.
#[derive(Debug)]
pub struct TransferPlan<'a> {
    /// The corpus.
    pub corpus: &'a Corpus,
    /// The recipe's weights.
    pub recipe: Vec<f64>,
    /// The baseline.
    pub baseline: Baseline,
    /// The larger model.
    pub model: Qwen2Config,
    /// Training settings shared by both arms (the seed is replaced per run).
    pub train: TrainConfig,
    /// Seeds `0..seeds`.
    pub seeds: u64,
    /// Output directory: `<out>/{baseline,recipe}/seed-<s>/`.
    pub out: PathBuf,
    /// Smoothing for steps-to-loss.
    pub smoothing: Smoothing,
    /// Runs trained at once in a single process, each on its share of the threads (1 = one
    /// after another on all of them). Small models train faster this way: the demo's six
    /// 200-step runs of `small` take 215 s as two 1-thread runs at a time against 274 s one
    /// after another on 2 threads. Ignored under MPI, where every rank joins each run.
    pub jobs: usize,
}

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

/// The directory of one run.
pub fn run_dir(out: &Path, arm: &str, seed: u64) -> PathBuf {
    out.join(arm).join(format!("seed-{seed}"))
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

/// Trains both arms for every seed (skipping finished runs, resuming interrupted ones) and
/// compares them; rank 0 writes `transfer.json`.
pub fn run_transfer(
    plan: &TransferPlan<'_>,
    comm: &dyn Communicator,
    progress: &mut (dyn FnMut(&str, u64, u64, u64) + Send),
) -> Result<TransferSummary, TrainError> {
    let baseline = plan.baseline.weights(plan.corpus)?;
    let arms = [("baseline", &baseline), ("recipe", &plan.recipe)];
    let mut order = Vec::new();
    for seed in 0..plan.seeds {
        for (arm, weights) in arms {
            order.push((arm, seed, weights));
        }
    }
    let train_plan = |arm: &str, seed: u64, weights: &[f64]| {
        let mut train = plan.train.clone();
        train.seed = seed;
        TrainPlan {
            corpus: plan.corpus,
            weights: weights.to_vec(),
            model: plan.model.clone(),
            init_from: None,
            train,
            out: run_dir(&plan.out, arm, seed),
            resume: true,
            device: candle_core::Device::Cpu,
            preempt: None,
        }
    };
    let finished =
        |arm: &str, seed: u64| run_dir(&plan.out, arm, seed).join(METRICS_FILE).is_file();
    if plan.jobs > 1 && comm.size() == 1 {
        let pending: Vec<_> = order
            .iter()
            .filter(|(arm, seed, _)| !finished(arm, *seed))
            .collect();
        let threads = (rayon::current_num_threads() / plan.jobs).max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let progress = std::sync::Mutex::new(&mut *progress);
        let failure: std::sync::Mutex<Option<TrainError>> = std::sync::Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..plan.jobs.min(pending.len()) {
                scope.spawn(|| {
                    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                        Ok(p) => p,
                        Err(e) => {
                            *failure.lock().unwrap() = Some(TrainError::Config(e.to_string()));
                            return;
                        }
                    };
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= pending.len() || failure.lock().unwrap().is_some() {
                            return;
                        }
                        let (arm, seed, weights) = *pending[i];
                        let tp = train_plan(arm, seed, weights);
                        let single = crate::dist::SingleProcess;
                        let done = pool.install(|| {
                            train_with(&tp, &single, &mut |p| {
                                (progress.lock().unwrap())(arm, seed, p.step, p.total)
                            })
                        });
                        if let Err(e) = done {
                            failure.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap() {
            return Err(e);
        }
    }
    let mut runs = Vec::new();
    let mut metrics: BTreeMap<(String, u64), serde_json::Value> = BTreeMap::new();
    for (arm, seed, weights) in order {
        if !finished(arm, seed) {
            let tp = train_plan(arm, seed, weights);
            train_with(&tp, comm, &mut |p| progress(arm, seed, p.step, p.total))?;
        }
        comm.barrier()?;
        let dir = run_dir(&plan.out, arm, seed);
        let metrics_path = dir.join(METRICS_FILE);
        let text = std::fs::read_to_string(&metrics_path)
            .map_err(|e| TrainError::Config(format!("{}: {e}", metrics_path.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", metrics_path.display())))?;
        metrics.insert((arm.to_string(), seed), v);
        runs.push((arm.to_string(), seed, dir));
    }
    let cols = LogColumns::eval();
    let mut per_seed = Vec::new();
    for seed in 0..plan.seeds {
        let read = |arm: &str| {
            read_series(&run_dir(&plan.out, arm, seed), &cols)
                .map_err(|e| TrainError::Config(e.to_string()))
        };
        per_seed.push(steps_to_loss(
            &read("baseline")?,
            &read("recipe")?,
            plan.smoothing,
        ));
    }
    let speeds: Vec<f64> = per_seed.iter().filter_map(|r| r.speedup).collect();
    let speedup = (speeds.len() == per_seed.len() && !speeds.is_empty())
        .then(|| bootstrap_mean(&speeds, 0.95, 10_000, 0));
    let table = |arm: &str, key: &str| -> BTreeMap<String, f64> {
        let maps: Vec<BTreeMap<String, f64>> = (0..plan.seeds)
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
    let score_gain_per_seed: Vec<f64> = (0..plan.seeds)
        .filter_map(|s| Some(mean_score("recipe", s)? - mean_score("baseline", s)?))
        .collect();
    let score_gain = (!score_gain_per_seed.is_empty())
        .then(|| bootstrap_mean(&score_gain_per_seed, 0.95, 10_000, 0));
    let benchmark_metric = metrics
        .get(&("recipe".to_string(), 0))
        .and_then(|m| serde_json::from_value(m["benchmark_metric"].clone()).ok())
        .unwrap_or_default();
    let summary = TransferSummary {
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
    };
    if comm.rank() == 0 {
        write_atomic(
            &plan.out.join("transfer.json"),
            serde_json::to_string_pretty(&summary)
                .expect("summary serialises")
                .as_bytes(),
        )?;
    }
    Ok(summary)
}
