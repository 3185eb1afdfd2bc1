//! Running a transfer: every (arm, seed) run in a fixed order, several at once in one process
//! when asked (`jobs`), then the steps-to-loss comparison of each seed's held-out curves and
//! the summary that rank 0 writes as `transfer.json`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::bench::steps_to_loss::{read_series, steps_to_loss, LogColumns, StepsToLoss};
use crate::dist::{Communicator, SingleProcess};
use crate::fsutil::{write_atomic, IoContext};
use crate::train::trainer::METRICS_FILE;
use crate::train::{train_with, TrainPlan};

use super::error::TransferError;
use super::plan::{run_dir, TransferPlan};
use super::summary::{RunMetrics, TransferSummary};

/// The progress callback: (arm, seed, step, total steps).
type ProgressFn<'p> = dyn FnMut(&str, u64, u64, u64) + Send + 'p;

/// One training run of the transfer: an arm's weights at a seed.
#[derive(Clone, Copy)]
struct Run<'w> {
    arm: &'static str,
    seed: u64,
    weights: &'w [f64],
}

/// Trains both arms for every seed (skipping finished runs, resuming interrupted ones) and
/// compares them; rank 0 writes `transfer.json`.
pub fn run_transfer(
    plan: &TransferPlan<'_>,
    comm: &dyn Communicator,
    progress: &mut (dyn FnMut(&str, u64, u64, u64) + Send),
) -> Result<TransferSummary, TransferError> {
    let baseline = plan.baseline.weights(plan.corpus)?;
    let order = run_order(plan, &baseline);
    if plan.jobs > 1 && comm.size() == 1 {
        train_concurrently(plan, &order, progress)?;
    }
    let trained = train_in_order(plan, comm, &order, progress)?;
    let per_seed = compare_seeds(plan)?;
    let summary = TransferSummary::from_runs(per_seed, &trained.metrics, plan.seeds, trained.runs);
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

/// Every run, seed by seed, the baseline before the recipe.
fn run_order<'w>(plan: &'w TransferPlan<'_>, baseline: &'w [f64]) -> Vec<Run<'w>> {
    let arms: [(&'static str, &[f64]); 2] = [("baseline", baseline), ("recipe", &plan.recipe)];
    let mut order = Vec::new();
    for seed in 0..plan.seeds {
        for (arm, weights) in arms {
            order.push(Run { arm, seed, weights });
        }
    }
    order
}

/// The training plan of one run: the shared settings with the run's seed, resumed from its
/// directory.
fn train_plan<'a>(plan: &TransferPlan<'a>, run: Run<'_>) -> TrainPlan<'a> {
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
fn finished(plan: &TransferPlan<'_>, run: Run<'_>) -> bool {
    run_dir(&plan.out, run.arm, run.seed)
        .join(METRICS_FILE)
        .is_file()
}

/// Trains the unfinished runs `plan.jobs` at a time in this process, each on its share of the
/// threads; stops handing out runs after the first failure and returns it.
fn train_concurrently(
    plan: &TransferPlan<'_>,
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
    plan: &TransferPlan<'_>,
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

/// Steps to the baseline's final held-out loss, seed by seed.
fn compare_seeds(plan: &TransferPlan<'_>) -> Result<Vec<StepsToLoss>, TransferError> {
    let cols = LogColumns::eval();
    let mut per_seed = Vec::new();
    for seed in 0..plan.seeds {
        let read = |arm: &str| read_series(&run_dir(&plan.out, arm, seed), &cols);
        per_seed.push(steps_to_loss(
            &read("baseline")?,
            &read("recipe")?,
            plan.smoothing,
        ));
    }
    Ok(per_seed)
}
