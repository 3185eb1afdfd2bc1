//! `mixatlas train` and `mixatlas score`: the built-in trainer as a command (also a trial
//! runner: the trial-protocol variables `MIXATLAS_*` fill in the flags) and per-token
//! log-probabilities of a checkpoint.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mixatlas::data::corpus::Corpus;
use mixatlas::dist::{Communicator, LaunchEnv, SingleProcess};
use mixatlas::model::weights::read_config;
use mixatlas::model::{ImageInput, Params, Qwen2Config, Qwen2Model};
use mixatlas::slurm::preempt::{self, Requeue};
use mixatlas::slurm::SlurmEnv;
use mixatlas::train::schedule::Schedule;
use mixatlas::train::trainer::{read_mixture, train_with, Progress, TrainPlan};
use mixatlas::train::TrainConfig;

/// `mixatlas train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Prepared corpus directory.
    #[arg(long, env = "MIXATLAS_CORPUS")]
    pub corpus: PathBuf,
    /// Mixture file (`{"weights": {"concept/task": w}}`, a recipe, or a trial's mixture.json);
    /// default: the corpus's natural proportions.
    #[arg(long, env = "MIXATLAS_MIXTURE")]
    pub mixture: Option<PathBuf>,
    /// Model preset: tiny, small, qwen2-0.5b, qwen2-1.5b, qwen2-7b, qwen2.5-7b.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Override model config fields (Hugging Face names), e.g. `--model-set hidden_size=128`.
    #[arg(long = "model-set", value_name = "FIELD=VALUE")]
    pub model_set: Vec<String>,
    /// Start from a Hugging Face-style checkpoint directory (its config.json wins over
    /// --preset).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Run directory (training log, checkpoints, metrics.json).
    #[arg(long, env = "MIXATLAS_TRIAL_DIR")]
    pub out: PathBuf,
    /// TOML config file; its `[train]` table is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Optimiser steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Rows per global batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Rows per forward pass (gradient accumulation over batch_size / micro_batch passes).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Tokens per row.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Final learning rate.
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// Warmup steps.
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Schedule after warmup: cosine, constant, or wsd:FRACTION (decay over the last fraction).
    #[arg(long)]
    pub schedule: Option<String>,
    /// Seed (model init and data order).
    #[arg(long, env = "MIXATLAS_SEED")]
    pub seed: Option<u64>,
    /// Evaluate every N steps (0 = at the end only).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Documents per benchmark per evaluation.
    #[arg(long)]
    pub eval_samples: Option<usize>,
    /// Documents per benchmark in the final evaluation (the scores the run ends with).
    #[arg(long)]
    pub final_eval_samples: Option<usize>,
    /// Checkpoint every N steps (0 = at the end only).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Stop after this many steps with a checkpoint (resume later with --resume).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Shard the optimiser state across data-parallel ranks (ZeRO-1).
    #[arg(long)]
    pub zero1: bool,
    /// Seconds a collective may take before the job is aborted (a rank died).
    #[arg(long, default_value_t = 300.0)]
    pub collective_timeout: f64,
    /// Parameter dtype: auto, f32, bf16.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Device: cpu, or cuda (needs a build with the `cuda-train` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Stop with a checkpoint on SIGUSR2 (on by default inside a Slurm job, `SLURM_JOB_ID`
    /// set); inside a Slurm job the job then requeues itself, see --max-requeues.
    #[arg(long)]
    pub preemptible: bool,
    /// On preemption inside a Slurm job, requeue it (`scontrol requeue`) while it has been
    /// restarted fewer than this many times (`SLURM_RESTART_COUNT`).
    #[arg(long, default_value_t = 3)]
    pub max_requeues: u32,
}

/// Resolves `--device`: `cpu`, or `cuda` (the GPU of this rank, by local rank) in a build
/// with the `cuda-train` feature.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda_device(),
        other => bail!("--device {other:?}: expected cpu or cuda"),
    }
}

#[cfg(feature = "cuda-train")]
fn cuda_device() -> Result<Device> {
    let count = mixatlas::gpu::device::device_count()?;
    if count == 0 {
        bail!("--device cuda: the CUDA driver reports no device");
    }
    let index = LaunchEnv::detect().device_index(count);
    Device::new_cuda(index).with_context(|| format!("--device cuda: opening CUDA device {index}"))
}

#[cfg(not(feature = "cuda-train"))]
fn cuda_device() -> Result<Device> {
    bail!(
        "--device cuda: this build has no CUDA training support; rebuild with --features cuda-train (candle's CUDA backend, needs nvcc from the CUDA toolkit)"
    )
}

fn parse_schedule(s: &str) -> Result<Schedule> {
    Ok(match s {
        "cosine" => Schedule::Cosine,
        "constant" => Schedule::Constant,
        _ => match s
            .strip_prefix("wsd:")
            .or(if s == "wsd" { Some("0.2") } else { None })
        {
            Some(f) => Schedule::Wsd {
                decay_fraction: f
                    .parse()
                    .with_context(|| format!("--schedule {s}: {f:?} is not a fraction"))?,
            },
            None => bail!("--schedule {s:?}: expected cosine, constant, wsd or wsd:FRACTION"),
        },
    })
}

/// Applies `FIELD=VALUE` overrides to a model config through its JSON form.
pub fn apply_model_overrides(cfg: &mut Qwen2Config, sets: &[String]) -> Result<()> {
    if sets.is_empty() {
        return Ok(());
    }
    let mut v = serde_json::to_value(&*cfg)?;
    for s in sets {
        let (k, val) = s
            .split_once('=')
            .with_context(|| format!("--model-set {s:?}: expected FIELD=VALUE"))?;
        let obj = v.as_object_mut().expect("config is an object");
        if !obj.contains_key(k)
            && !["mm_hidden_size", "image_token_index", "torch_dtype"].contains(&k)
        {
            bail!("--model-set: {k:?} is not a model config field");
        }
        let parsed: serde_json::Value =
            serde_json::from_str(val).unwrap_or(serde_json::Value::String(val.to_string()));
        obj.insert(k.to_string(), parsed);
    }
    *cfg = serde_json::from_value(v).context("--model-set produced an invalid config")?;
    cfg.validate()?;
    Ok(())
}

fn resolve_train(a: &TrainArgs) -> Result<TrainConfig> {
    let mut t = match &a.config {
        Some(p) => mixatlas::config::Config::load(p)?.train,
        None if a.preset == "tiny" => TrainConfig::proxy(),
        None => TrainConfig::transfer(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { t.$f = v; } )* };
    }
    set!(
        steps,
        batch_size,
        micro_batch,
        seq_len,
        lr,
        min_lr,
        warmup_steps,
        seed,
        eval_every,
        eval_samples,
        final_eval_samples,
        checkpoint_every,
        stop_after,
        dtype
    );
    if let Some(s) = &a.schedule {
        t.schedule = parse_schedule(s)?;
    }
    if a.zero1 {
        t.zero1 = true;
    }
    t.clamp_warmup();
    t.validate()?;
    Ok(t)
}

/// The model configuration for a corpus: preset (or `--init-from`'s config.json), overrides,
/// and the corpus's image shape and image token.
pub fn model_config_for(
    corpus: &Corpus,
    preset: &str,
    init_from: Option<&Path>,
    sets: &[String],
) -> Result<Qwen2Config> {
    let mut cfg = match init_from {
        Some(dir) => read_config(dir)?,
        None => Qwen2Config::preset(preset)?,
    };
    cfg.adapt_to(&corpus.manifest);
    cfg.torch_dtype = None;
    apply_model_overrides(&mut cfg, sets)?;
    Ok(cfg)
}

/// The distributed runtime of a command: MPI when launched by `mpirun`/`srun` with several
/// ranks (feature `mpi`), else the single process. Keep it alive for the whole command.
pub struct Dist {
    #[cfg(feature = "mpi")]
    _runtime: Option<mixatlas::dist::mpi::MpiRuntime>,
    /// The world communicator.
    pub world: Box<dyn Communicator>,
}

impl Dist {
    /// Sets up the runtime for the launch environment.
    pub fn init(timeout_s: f64) -> Result<Self> {
        let env = LaunchEnv::detect();
        let timeout = std::time::Duration::from_secs_f64(timeout_s.max(0.0));
        #[cfg(feature = "mpi")]
        if env.world > 1 {
            let rt = mixatlas::dist::mpi::MpiRuntime::init()
                .context("MPI was already initialised in this process")?;
            let world = Box::new(rt.world(timeout));
            return Ok(Self {
                world,
                _runtime: Some(rt),
            });
        }
        let _ = timeout;
        if env.world > 1 {
            bail!(
                "launched as rank {} of {} but this build has no MPI support (rebuild with --features mpi)",
                env.rank,
                env.world
            );
        }
        Ok(Self {
            #[cfg(feature = "mpi")]
            _runtime: None,
            world: Box::new(SingleProcess),
        })
    }
}

/// `train`: one training run.
pub fn run_train(a: TrainArgs) -> Result<()> {
    // An unusable --device fails before anything is read or started.
    let device = device(&a.device)?;
    let dist = Dist::init(a.collective_timeout)?;
    let lead = dist.world.rank() == 0;
    mixatlas::train::tune_allocator();
    let corpus = Corpus::open(&a.corpus)?;
    let weights = match &a.mixture {
        Some(p) => read_mixture(p, &corpus.manifest)?,
        None => corpus.manifest.natural_weights(),
    };
    let train_cfg = resolve_train(&a)?;
    let model = model_config_for(&corpus, &a.preset, a.init_from.as_deref(), &a.model_set)?;
    let slurm = SlurmEnv::detect().context("reading the Slurm job environment")?;
    // The handler only sets a flag; the trainer polls it after every step.
    let preempt_flag = if a.preemptible || slurm.in_job() {
        Some(preempt::install().context("installing the SIGUSR2 handler")?)
    } else {
        None
    };
    let plan = TrainPlan {
        corpus: &corpus,
        weights,
        model,
        init_from: a.init_from.clone(),
        train: train_cfg.clone(),
        out: a.out.clone(),
        resume: a.resume,
        device,
        preempt: preempt_flag,
    };
    if lead {
        eprintln!(
            "training {} ({:.2} M parameters) for {} steps of {} × {} tokens on {} rank(s) → {}",
            if a.init_from.is_some() {
                "from checkpoint"
            } else {
                a.preset.as_str()
            },
            plan.model.num_params() as f64 / 1e6,
            train_cfg.steps,
            train_cfg.batch_size,
            train_cfg.seq_len,
            dist.world.size(),
            a.out.display()
        );
    }
    let bar = if a.quiet || !lead || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(train_cfg.steps);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .expect("valid template"),
        );
        b
    };
    let mut report = |p: Progress| {
        bar.set_position(p.step);
        bar.set_message(format!("loss {:.4}  {:.0} tok/s", p.loss, p.tokens_per_s));
    };
    let out = train_with(&plan, dist.world.as_ref(), &mut report);
    bar.finish_and_clear();
    let Some(out) = out? else {
        if !lead {
            return Ok(());
        }
        let step = mixatlas::train::checkpoint::list(&a.out)?
            .last()
            .map_or(0, |(s, _)| *s);
        if !preempt::requested() {
            eprintln!("stopped after step {step} with a checkpoint; continue with --resume");
            return Ok(());
        }
        eprintln!("preempted (SIGUSR2): stopped after step {step} with a checkpoint");
        match preempt::requeue(&slurm, a.max_requeues).context("requeueing the job")? {
            Requeue::Requeued { job_id, restart } => eprintln!(
                "requeued job {job_id} (restart {restart} of at most {}); it continues with --resume",
                a.max_requeues
            ),
            Requeue::LimitReached { restarts } => eprintln!(
                "not requeued: the job was already restarted {restarts} times (--max-requeues {})",
                a.max_requeues
            ),
            Requeue::NotInJob => eprintln!("not in a Slurm job; continue with --resume"),
        }
        return Ok(());
    };
    if !lead {
        return Ok(());
    }
    eprintln!(
        "done: {} steps, train loss {:.4}, eval loss {:.4}, {:.0} tokens/s, {:.1} s",
        out.steps, out.train_loss, out.eval_loss, out.tokens_per_s, out.wall_s
    );
    for (name, score) in &out.benchmarks {
        eprintln!(
            "  {name:<14} {:<11} {score:.3}  loss {:.4}",
            out.benchmark_metric[name], out.benchmark_loss[name]
        );
    }
    Ok(())
}

/// `mixatlas score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Checkpoint directory (config.json + model.safetensors; a run's checkpoints/step-N).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// JSON input: `{"sequences": [{"tokens": [...], "images": [[[D floats] × patches], …]}]}`.
    #[arg(long)]
    pub input: PathBuf,
    /// Also print the full logits.
    #[arg(long)]
    pub logits: bool,
    /// Compute in f32 (default) or f64.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreInput {
    sequences: Vec<ScoreSeq>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreSeq {
    tokens: Vec<u32>,
    #[serde(default)]
    images: Vec<Vec<Vec<f64>>>,
}

/// `score`: per-token log-probabilities (and optionally logits) as JSON on stdout.
pub fn run_score(a: ScoreArgs) -> Result<()> {
    let dtype = match a.dtype.as_str() {
        "f32" => DType::F32,
        "f64" => DType::F64,
        other => bail!("--dtype {other:?}: expected f32 or f64"),
    };
    let cfg = read_config(&a.checkpoint)?;
    let params = Params::load(&a.checkpoint, &cfg, 0, dtype, &Device::Cpu)?;
    let model = Qwen2Model::new(&cfg, &params);
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("reading {}", a.input.display()))?;
    let input: ScoreInput = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"sequences\": [{{\"tokens\": [...], \"images\": [...]}}]}}",
            a.input.display()
        )
    })?;
    let mut all_logprobs = Vec::new();
    let mut all_logits = Vec::new();
    for (i, seq) in input.sequences.iter().enumerate() {
        let t = seq.tokens.len();
        if t == 0 {
            bail!("{}: sequence {i} is empty", a.input.display());
        }
        let images = match (cfg.image_token_index, cfg.mm_hidden_size) {
            (Some(tok), Some(dim)) if seq.tokens.contains(&tok) => {
                let mut flat = Vec::new();
                for (j, img) in seq.images.iter().enumerate() {
                    for p in img {
                        if p.len() != dim {
                            bail!(
                                "{}: sequence {i} image {j} has a patch of {} values, the model expects mm_hidden_size {dim}",
                                a.input.display(),
                                p.len()
                            );
                        }
                        flat.extend_from_slice(p);
                    }
                }
                Some(
                    ImageInput::sequential(&seq.tokens, 1, t, tok, &[flat], dim, &Device::Cpu)
                        .with_context(|| format!("{}: sequence {i}", a.input.display()))?,
                )
            }
            _ => None,
        };
        let logits = model
            .forward(&seq.tokens, 1, t, images.as_ref())
            .with_context(|| format!("{}: sequence {i}", a.input.display()))?
            .to_dtype(DType::F64)?;
        let logp = candle_nn::ops::log_softmax(&logits, 1)?.to_vec2::<f64>()?;
        let lp: Vec<f64> = (0..t - 1)
            .map(|p| logp[p][seq.tokens[p + 1] as usize])
            .collect();
        all_logprobs.push(lp);
        if a.logits {
            all_logits.push(logits.to_vec2::<f64>()?);
        }
    }
    let mut out = serde_json::json!({ "logprobs": all_logprobs });
    if a.logits {
        out["logits"] = serde_json::json!(all_logits);
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

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
    use mixatlas::transfer::{run_transfer as transfer, Baseline, TransferPlan};
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
        smoothing: a.smooth.parse().map_err(anyhow::Error::msg)?,
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
pub fn print_transfer(s: &mixatlas::transfer::TransferSummary, baseline: &str) {
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
