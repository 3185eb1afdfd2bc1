//! `mixatlas train` and `mixatlas score`: the built-in trainer as a command (also a trial
//! runner: the trial-protocol variables `MIXATLAS_*` fill in the flags) and per-token
//! log-probabilities of a checkpoint.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mixatlas::data::corpus::Corpus;
use mixatlas::model::weights::read_config;
use mixatlas::model::{ImageInput, Params, Qwen2Model};
use mixatlas::slurm::preempt::{self, Requeue};
use mixatlas::slurm::SlurmEnv;
use mixatlas::train::schedule::Schedule;
use mixatlas::train::trainer::{read_mixture, train_with, Progress, TrainPlan};
use mixatlas::train::TrainConfig;

use super::runtime::{device, lock_on_lead, model_config_for, Dist};

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
    /// Take --out's lock even though its record names a writer that may still run (never
    /// while another process holds the lock; docs/reliability.md).
    #[arg(long)]
    pub force_unlock: bool,
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

/// `train`: one training run.
pub fn run_train(a: TrainArgs) -> Result<()> {
    // An unusable --device fails before anything is read or started.
    let device = device(&a.device)?;
    let dist = Dist::init(a.collective_timeout)?;
    let lead = dist.world.rank() == 0;
    let _lock = lock_on_lead(dist.world.as_ref(), &a.out, a.force_unlock)?;
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
                    ImageInput::sequential(
                        &seq.tokens,
                        mixatlas::model::qwen2::ImageRows {
                            rows: 1,
                            seq_len: t,
                            image_token: tok,
                            dim,
                        },
                        &[flat],
                        &Device::Cpu,
                    )
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
