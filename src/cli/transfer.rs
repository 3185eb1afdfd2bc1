//! `mixatlas transfer`: train the larger model on the baseline and on the recipe with the
//! same settings and seeds and print the comparison (steps to baseline loss, benchmark table).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mixatlas::data::corpus::Corpus;
use mixatlas::train::trainer::read_mixture;
use mixatlas::train::TrainConfig;
use mixatlas::transfer::{run_transfer as transfer, Baseline, TransferPlan, TransferSummary};

use super::runtime::{model_config_for, Dist};

/// `mixatlas transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Prepared corpus.
    #[arg(long)]
    pub corpus: PathBuf,
    /// The recipe (recipe.json or any mixture file).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Baseline: uniform, natural or a mixture file.
    #[arg(long, default_value = "natural")]
    pub baseline: String,
    /// The larger model's preset.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Override model config fields (`FIELD=VALUE`).
    #[arg(long = "model-set", value_name = "FIELD=VALUE")]
    pub model_set: Vec<String>,
    /// Steps per run.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Seeds (runs per arm).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Output directory.
    #[arg(long, default_value = "transfer")]
    pub out: PathBuf,
    /// TOML config; its `[train]` table (default: the transfer preset).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Rows per global batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Tokens per row.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Evaluate every N steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Documents per benchmark per evaluation.
    #[arg(long)]
    pub eval_samples: Option<usize>,
    /// Documents per benchmark in the final evaluation (the scores the run ends with).
    #[arg(long)]
    pub final_eval_samples: Option<usize>,
    /// Runs trained at once (single process only), each on its share of the threads: faster
    /// for small models, whose steps do not keep every core busy.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Smoothing of the held-out loss for steps-to-loss: none, ema:ALPHA, window:N.
    #[arg(long, default_value = "none")]
    pub smooth: String,
    /// Seconds a collective may take before the job is aborted.
    #[arg(long, default_value_t = 300.0)]
    pub collective_timeout: f64,
    /// No per-step progress.
    #[arg(long)]
    pub quiet: bool,
}

/// `transfer`: baseline vs recipe on the larger model.
pub fn run_transfer(a: TransferArgs) -> Result<()> {
    mixatlas::train::tune_allocator();
    let dist = Dist::init(a.collective_timeout)?;
    let lead = dist.world.rank() == 0;
    let corpus = Corpus::open(&a.corpus)?;
    let recipe = read_mixture(&a.recipe, &corpus.manifest)?;
    let mut t = match &a.config {
        Some(p) => mixatlas::config::Config::load(p)?.train,
        None => TrainConfig::transfer(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { t.$f = v; } )* };
    }
    set!(
        steps,
        batch_size,
        seq_len,
        lr,
        eval_every,
        eval_samples,
        final_eval_samples
    );
    t.clamp_warmup();
    if t.eval_every == 0 || t.eval_every > t.steps {
        t.eval_every = (t.steps / 10).max(1);
    }
    t.validate()?;
    let plan = TransferPlan {
        corpus: &corpus,
        recipe,
        baseline: Baseline::parse(&a.baseline),
        model: model_config_for(&corpus, &a.preset, None, &a.model_set)?,
        train: t.clone(),
        seeds: a.seeds,
        out: a.out.clone(),
        smoothing: a.smooth.parse()?,
        jobs: a.jobs.max(1),
    };
    if lead {
        eprintln!(
            "transfer: {} ({:.2} M parameters), {} steps × {} seed(s), baseline {} vs recipe → {}",
            a.preset,
            plan.model.num_params() as f64 / 1e6,
            t.steps,
            a.seeds,
            plan.baseline.name(),
            a.out.display()
        );
    }
    let quiet = a.quiet || !lead;
    let mut last = std::time::Instant::now();
    let s = transfer(&plan, dist.world.as_ref(), &mut |arm, seed, step, total| {
        if !quiet && (step == total || last.elapsed().as_secs_f64() > 5.0) {
            eprintln!("  {arm} seed {seed}: step {step}/{total}");
            last = std::time::Instant::now();
        }
    })?;
    if lead {
        print_transfer(&s, &plan.baseline.name());
    }
    Ok(())
}

/// Prints a transfer summary: speedup per seed and overall, then the benchmark table.
pub fn print_transfer(s: &TransferSummary, baseline: &str) {
    println!("steps to the baseline's final held-out loss ({baseline} → recipe):");
    for (i, r) in s.per_seed.iter().enumerate() {
        match r.speedup {
            Some(sp) => println!(
                "  seed {i}: baseline L* = {:.4} at step {}; recipe reaches it at step {}: {sp:.2}×",
                r.target,
                r.baseline_steps,
                r.candidate_step.unwrap_or(0)
            ),
            None => println!(
                "  seed {i}: the recipe never reaches the baseline's final loss {:.4} (its own final: {:.4})",
                r.target, r.candidate_final
            ),
        }
    }
    match s.speedup {
        Some((m, lo, hi)) => println!(
            "  speedup {m:.2}× (mean over {} seeds; 95 % bootstrap interval {lo:.2}–{hi:.2})",
            s.per_seed.len()
        ),
        None => {
            println!("  no speedup: the recipe did not reach the baseline's loss in every seed")
        }
    }
    println!(
        "\n  {:<14} {:<12} {:>10} {:>12} {:>10} {:>11}",
        "benchmark", "metric", "score base", "score recipe", "loss base", "loss recipe"
    );
    for r in s.table() {
        println!(
            "  {:<14} {:<12} {:>10.3} {:>12.3} {:>10.4} {:>11.4}",
            r.name, r.metric, r.score.0, r.score.1, r.loss.0, r.loss.1
        );
    }
    let mean = |m: &std::collections::BTreeMap<String, f64>| {
        m.values().sum::<f64>() / m.len().max(1) as f64
    };
    println!(
        "  {:<14} {:<12} {:>10.3} {:>12.3} {:>10.4} {:>11.4}",
        "mean",
        "",
        mean(&s.baseline_benchmarks),
        mean(&s.recipe_benchmarks),
        mean(&s.baseline_benchmark_loss),
        mean(&s.recipe_benchmark_loss)
    );
    if let Some((m, lo, hi)) = s.score_gain {
        println!(
            "  mean benchmark score, recipe − baseline: {m:+.3} (95 % bootstrap interval {lo:+.3} to {hi:+.3}); higher in {} of {} seeds",
            s.seeds_higher(),
            s.score_gain_per_seed.len()
        );
    }
}
