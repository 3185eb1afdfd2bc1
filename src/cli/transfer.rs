//! `mixatlas transfer`: train the larger model on each baseline and on the recipe with the
//! same settings and seeds and print the comparisons (one row per baseline: steps to its
//! loss, score gain; then the benchmark table of every arm).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use mixatlas::data::corpus::Corpus;
use mixatlas::train::trainer::read_mixture;
use mixatlas::train::TrainConfig;
use mixatlas::transfer::{
    parse_baselines, run_transfers, Baseline, Comparison, MultiTransferPlan, NamedBaseline,
    TransferSummary,
};

use super::runtime::{lock_on_lead, model_config_for, Dist};

/// `mixatlas transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Prepared corpus.
    #[arg(long)]
    pub corpus: PathBuf,
    /// The recipe (recipe.json or any mixture file).
    #[arg(long)]
    pub recipe: PathBuf,
    /// One baseline: uniform, natural or a mixture file (runs in `<out>/baseline/`; default
    /// natural when --baselines is not given either).
    #[arg(long, conflicts_with = "baselines")]
    pub baseline: Option<String>,
    /// Several baselines, comma-separated: uniform, natural, mixture files, each optionally
    /// named as NAME=… (`natural,uniform,regmix=search-regmix/recipe.json`); each runs in
    /// `<out>/<name>/`, the recipe once per seed in `<out>/recipe/`.
    #[arg(long)]
    pub baselines: Option<String>,
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
    /// Take --out's lock even though its record names a writer that may still run (never
    /// while another process holds the lock; docs/reliability.md).
    #[arg(long)]
    pub force_unlock: bool,
}

/// `transfer`: baseline vs recipe on the larger model.
pub fn run_transfer(a: TransferArgs) -> Result<()> {
    mixatlas::train::tune_allocator();
    preflight(&a)?;
    let dist = Dist::init(a.collective_timeout)?;
    let lead = dist.world.rank() == 0;
    let _lock = lock_on_lead(dist.world.as_ref(), &a.out, a.force_unlock)?;
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
    let baselines = match (&a.baselines, &a.baseline) {
        (Some(list), _) => parse_baselines(list)?,
        (None, b) => vec![NamedBaseline::legacy(Baseline::parse(
            b.as_deref().unwrap_or("natural"),
        ))],
    };
    let plan = MultiTransferPlan {
        corpus: &corpus,
        recipe,
        baselines,
        model: model_config_for(&corpus, &a.preset, None, &a.model_set)?,
        train: t.clone(),
        seeds: a.seeds,
        out: a.out.clone(),
        smoothing: a.smooth.parse()?,
        jobs: a.jobs.max(1),
    };
    if lead {
        eprintln!(
            "transfer: {} ({:.2} M parameters), {} steps × {} seed(s), recipe vs {} → {}",
            a.preset,
            plan.model.num_params() as f64 / 1e6,
            t.steps,
            a.seeds,
            plan.baselines
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            a.out.display()
        );
    }
    let quiet = a.quiet || !lead;
    let mut last = std::time::Instant::now();
    let s = run_transfers(&plan, dist.world.as_ref(), &mut |arm, seed, step, total| {
        if !quiet && (step == total || last.elapsed().as_secs_f64() > 5.0) {
            eprintln!("  {arm} seed {seed}: step {step}/{total}");
            last = std::time::Instant::now();
        }
    })?;
    if lead {
        print_comparisons(&s);
    }
    Ok(())
}

/// What can be checked before opening anything: at least one seed, and a recipe that exists
/// (when it is missing from a search directory, why: that search finished no trial yet).
fn preflight(a: &TransferArgs) -> Result<()> {
    if a.seeds == 0 {
        anyhow::bail!("--seeds 0: a transfer trains each arm once per seed; give at least 1");
    }
    if !a.recipe.exists() {
        let dir = a.recipe.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(std::path::Path::new("."));
        if dir.join("trials.jsonl").is_file() {
            anyhow::bail!(
                "{}: no recipe: the search in {} has written none (no trial finished yet; see \
                 {}/trials.jsonl and each attempt's {}/trials/<trial>/a<attempt>/trial.log, \
                 fix the cause and rerun the search)",
                a.recipe.display(),
                dir.display(),
                dir.display(),
                dir.display()
            );
        }
        anyhow::bail!("{}: no such recipe file", a.recipe.display());
    }
    Ok(())
}

/// Prints a transfer summary: one row per baseline (speedup per seed, mean with its 95 %
/// bootstrap interval, score gain with its interval, seeds won), each seed's L* and step,
/// then the benchmark table of the recipe and every baseline.
pub fn print_comparisons(s: &TransferSummary) {
    print_table(&s.comparisons());
}

/// A speedup, or `never`.
fn speedup_text(sp: Option<f64>) -> String {
    sp.map_or("never".into(), |x| format!("{x:.2}×"))
}

fn print_table(cs: &[Comparison]) {
    let w = cs
        .iter()
        .map(|c| c.baseline.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let seeds = cs.first().map_or(0, |c| c.per_seed.len());
    println!(
        "recipe against each baseline over {seeds} seed(s): steps to the baseline's final held-out loss, and the mean benchmark score gain (recipe − baseline), paired by seed"
    );
    let per_w = (seeds * 7).max(16);
    println!(
        "  {:<w$}  {:<per_w$}  {:<22}  {:<26}  wins",
        "baseline", "speedup per seed", "mean [95 % CI]", "score gain [95 % CI]"
    );
    for c in cs {
        let per: Vec<String> = c.per_seed.iter().map(|r| speedup_text(r.speedup)).collect();
        let mean = match c.speedup {
            Some((m, lo, hi)) => format!("{m:.2}× [{lo:.2}, {hi:.2}]"),
            None => format!("never in {} of {}", c.never_reached.len(), c.per_seed.len()),
        };
        let gain = match c.score_gain {
            Some((m, lo, hi)) => format!("{m:+.3} [{lo:+.3}, {hi:+.3}]"),
            None => "–".into(),
        };
        println!(
            "  {:<w$}  {:<per_w$}  {mean:<22}  {gain:<26}  {}/{}",
            c.baseline,
            per.join(" "),
            c.wins,
            c.score_gain_per_seed.len()
        );
    }
    for c in cs {
        println!(
            "\n  {}: baseline L* (its final held-out loss) and where the recipe reaches it",
            c.baseline
        );
        for (i, r) in c.per_seed.iter().enumerate() {
            match r.candidate_step {
                Some(st) => println!(
                    "    seed {i}: L* = {:.4} at step {}; the recipe reaches it at step {st}: {}",
                    r.target,
                    r.baseline_steps,
                    speedup_text(r.speedup)
                ),
                None => println!(
                    "    seed {i}: L* = {:.4}; the recipe never reaches it (its own final: {:.4})",
                    r.target, r.candidate_final
                ),
            }
        }
    }
    print_benchmarks(cs);
}

/// The benchmark table: score then answer loss of the recipe and of each baseline, with the
/// mean over benchmarks.
fn print_benchmarks(cs: &[Comparison]) {
    type Map = BTreeMap<String, f64>;
    let Some(first) = cs.first() else { return };
    let mut scores: Vec<(&str, &Map)> = vec![("recipe", &first.recipe_benchmarks)];
    scores.extend(
        cs.iter()
            .map(|c| (c.baseline.as_str(), &c.baseline_benchmarks)),
    );
    let mut losses: Vec<(&str, &Map)> = vec![("recipe", &first.recipe_benchmark_loss)];
    losses.extend(
        cs.iter()
            .map(|c| (c.baseline.as_str(), &c.baseline_benchmark_loss)),
    );
    let w = cs
        .iter()
        .map(|c| c.baseline.len())
        .max()
        .unwrap_or(6)
        .max(6)
        + 6;
    let mut head = format!("\n  {:<14} {:<12}", "benchmark", "metric");
    for (n, _) in &scores {
        head += &format!(" {:>w$}", format!("score {n}"));
    }
    for (n, _) in &losses {
        head += &format!(" {:>w$}", format!("loss {n}"));
    }
    println!("{head}");
    let get = |m: &Map, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    let mean = |m: &Map| m.values().sum::<f64>() / m.len().max(1) as f64;
    let rows = first.table();
    let names = rows
        .iter()
        .map(|r| (r.name.as_str(), r.metric.to_string()))
        .chain(std::iter::once(("mean", String::new())));
    for (name, metric) in names {
        let mut line = format!("  {name:<14} {metric:<12}");
        for (_, m) in &scores {
            let v = if name == "mean" {
                mean(m)
            } else {
                get(m, name)
            };
            line += &format!(" {v:>w$.3}");
        }
        for (_, m) in &losses {
            let v = if name == "mean" {
                mean(m)
            } else {
                get(m, name)
            };
            line += &format!(" {v:>w$.4}");
        }
        println!("{line}");
    }
}
