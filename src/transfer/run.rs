//! Running a transfer: every (arm, seed) run in a fixed order (per seed, each baseline, then
//! the recipe once), several at once in one process when asked (`jobs`), then for each
//! baseline the steps-to-loss comparison of each seed's held-out curves and the figures of
//! [`Comparison::compute`], in the summary that rank 0 writes as `transfer.json`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::bench::steps_to_loss::{read_series, steps_to_loss, LogColumns, StepsToLoss};
use crate::dist::{Communicator, SingleProcess};
use crate::fsutil::{write_atomic, IoContext, PathIoError};
use crate::train::trainer::METRICS_FILE;
use crate::train::{train_with, TrainPlan};

use super::error::TransferError;
use super::plan::{check_baselines, run_dir, MultiTransferPlan, RECIPE_ARM};
use super::summary::{ComparedArm, Comparison, RunMetrics, TransferSummary};

/// The progress callback: (arm, seed, step, total steps).
type ProgressFn<'p> = dyn FnMut(&str, u64, u64, u64) + Send + 'p;

/// One training run of the transfer: an arm's weights at a seed.
#[derive(Clone, Copy)]
struct Run<'w> {
    arm: &'w str,
    seed: u64,
    weights: &'w [f64],
}

/// Trains the recipe once per seed and every baseline with the same seeds and settings
/// (skipping finished runs, resuming interrupted ones), then compares the recipe with each
/// baseline; rank 0 writes `transfer.json`. `progress` gets (arm, seed, step, total steps).
pub fn run_transfers(
    plan: &MultiTransferPlan<'_>,
    comm: &dyn Communicator,
    progress: &mut (dyn FnMut(&str, u64, u64, u64) + Send),
) -> Result<TransferSummary, TransferError> {
    check_baselines(&plan.baselines)?;
    let weights = plan
        .baselines
        .iter()
        .map(|b| b.baseline.weights(plan.corpus))
        .collect::<Result<Vec<_>, _>>()?;
    // Every setting is checked: the output must be writable before hours of training.
    check_writable(&plan.out)?;
    let order = run_order(plan, &weights);
    if plan.jobs > 1 && comm.size() == 1 {
        train_concurrently(plan, &order, progress)?;
    }
    let trained = train_in_order(plan, comm, &order, progress)?;
    let mut comparisons = Vec::new();
    for b in &plan.baselines {
        let against = ComparedArm {
            name: b.name.clone(),
            arm: b.arm.clone(),
            source: b.baseline.source(),
        };
        let per_seed = compare_seeds(plan, &b.arm)?;
        comparisons.push(Comparison::compute(
            &against,
            per_seed,
            &trained.metrics,
            plan.seeds,
        ));
    }
    let summary = TransferSummary::from_comparisons(comparisons, trained.runs);
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

/// Creates the transfer directory and writes (then removes) a probe file in it.
fn check_writable(out: &Path) -> Result<(), PathIoError> {
    std::fs::create_dir_all(out).at("creating the transfer directory", out)?;
    let probe = out.join(format!(".preflight.{}", std::process::id()));
    std::fs::write(&probe, b"ok").at("writing a probe file in", out)?;
    std::fs::remove_file(&probe).at("removing", &probe)
}

/// Every run, seed by seed: each baseline in order, then the recipe (once per seed).
fn run_order<'w>(plan: &'w MultiTransferPlan<'_>, weights: &'w [Vec<f64>]) -> Vec<Run<'w>> {
    let mut order = Vec::new();
    for seed in 0..plan.seeds {
        for (b, w) in plan.baselines.iter().zip(weights) {
            order.push(Run {
                arm: &b.arm,
                seed,
                weights: w,
            });
        }
        order.push(Run {
            arm: RECIPE_ARM,
            seed,
            weights: &plan.recipe,
        });
    }
    order
}

/// The training plan of one run: the shared settings with the run's seed, resumed from its
/// directory.
fn train_plan<'a>(plan: &MultiTransferPlan<'a>, run: Run<'_>) -> TrainPlan<'a> {
    let mut train = plan.train.clone();
    train.seed = run.seed;
    TrainPlan {
        corpus: plan.corpus,
        weights: run.weights.to_vec(),
        model: plan.model.clone(),
        init_from: None,
        train,
        out: run_dir(&plan.out, run.arm, run.seed),
        resume: true,
        device: candle_core::Device::Cpu,
        preempt: None,
    }
}

/// Whether the run has written its `metrics.json`.
fn finished(plan: &MultiTransferPlan<'_>, run: Run<'_>) -> bool {
    run_dir(&plan.out, run.arm, run.seed)
        .join(METRICS_FILE)
        .is_file()
}

/// Trains the unfinished runs `plan.jobs` at a time in this process, each on its share of the
/// threads; stops handing out runs after the first failure and returns it.
fn train_concurrently(
    plan: &MultiTransferPlan<'_>,
    order: &[Run<'_>],
    progress: &mut ProgressFn<'_>,
) -> Result<(), TransferError> {
    let pending: Vec<Run<'_>> = order
        .iter()
        .copied()
        .filter(|&run| !finished(plan, run))
        .collect();
    let threads = (rayon::current_num_threads() / plan.jobs).max(1);
    let next = AtomicUsize::new(0);
    let progress = Mutex::new(progress);
    let failure: Mutex<Option<TransferError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs.min(pending.len()) {
            scope.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(p) => p,
                    Err(e) => {
                        *failure.lock().unwrap() = Some(e.into());
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= pending.len() || failure.lock().unwrap().is_some() {
                        return;
                    }
                    let run = pending[i];
                    let tp = train_plan(plan, run);
                    let done = pool.install(|| {
                        train_with(&tp, &SingleProcess, &mut |p| {
                            (progress.lock().unwrap())(run.arm, run.seed, p.step, p.total)
                        })
                    });
                    if let Err(e) = done {
                        failure.lock().unwrap().get_or_insert(e.into());
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The finished runs: (arm, seed, directory) in order, and their `metrics.json`.
struct Trained {
    runs: Vec<(String, u64, PathBuf)>,
    metrics: RunMetrics,
}

/// Trains every run still unfinished on `comm` in order (all ranks join each run), then reads
/// each run's `metrics.json`.
fn train_in_order(
    plan: &MultiTransferPlan<'_>,
    comm: &dyn Communicator,
    order: &[Run<'_>],
    progress: &mut ProgressFn<'_>,
) -> Result<Trained, TransferError> {
    let mut runs = Vec::new();
    let mut metrics = RunMetrics::new();
    for &run in order {
        let Run { arm, seed, .. } = run;
        if !finished(plan, run) {
            let tp = train_plan(plan, run);
            train_with(&tp, comm, &mut |p| progress(arm, seed, p.step, p.total))?;
        }
        comm.barrier()?;
        let dir = run_dir(&plan.out, arm, seed);
        let metrics_path = dir.join(METRICS_FILE);
        let text = std::fs::read_to_string(&metrics_path).at("reading", &metrics_path)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| TransferError::Metrics {
                path: metrics_path.clone(),
                source,
            })?;
        metrics.insert((arm.to_string(), seed), v);
        runs.push((arm.to_string(), seed, dir));
    }
    Ok(Trained { runs, metrics })
}

/// Steps to the final held-out loss of the baseline in `arm`, seed by seed (the recipe's
/// curve against the baseline's, as `bench steps-to-loss` compares two runs).
fn compare_seeds(
    plan: &MultiTransferPlan<'_>,
    arm: &str,
) -> Result<Vec<StepsToLoss>, TransferError> {
    let cols = LogColumns::eval();
    let mut per_seed = Vec::new();
    for seed in 0..plan.seeds {
        let read = |arm: &str| read_series(&run_dir(&plan.out, arm, seed), &cols);
        per_seed.push(steps_to_loss(
            &read(arm)?,
            &read(RECIPE_ARM)?,
            plan.smoothing,
        ));
    }
    Ok(per_seed)
}
