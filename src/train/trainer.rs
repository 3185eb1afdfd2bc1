//! The training loop: sampler → micro-batches → masked loss → backward → accumulate → clip →
//! AdamW → log, with evaluation and checkpoints on a schedule and exact resume.
//!
//! One process, one device here; data parallelism wraps the same loop from outside by reducing
//! the flat gradients (see `src/dist/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::checkpoint::{self, TrainerState, CHECKPOINT_VERSION};
use super::config::TrainConfig;
use super::error::TrainError;
use super::eval::{BenchScore, EvalSet};
use super::limits::{self, check_eval_samples, check_sizes, MemoryEstimate};
use super::log::{EvalRecord, StepRecord, TrainLog};
use super::loss::{masked_loss, LossInput, Targets};
use super::optim::{accumulate, clip_global_norm, flat_grads, AdamW};
use super::parallel::{all_reduce_buckets, set_params, FlatLayout, ShardedAdamW};
use super::schedule::lr_at;
use crate::data::corpus::Corpus;
use crate::data::mixture::{manifest_cells, Mixture, MixtureError};
use crate::data::sampler::{Batch, Sampler, SamplerConfig};
use crate::dist::{BufMut, Communicator, ReduceOp, SingleProcess};
use crate::fsutil::{write_atomic, IoContext};
use crate::model::{ImageInput, Params, Qwen2Config, Qwen2Model};

/// File the trial protocol reads (DESIGN.md §2).
pub const METRICS_FILE: &str = "metrics.json";
/// Written instead of metrics when a run fails (`{"step", "reason"}`).
pub const FAILED_FILE: &str = "failed.json";

/// A resolved training run.
#[derive(Debug)]
pub struct TrainPlan<'a> {
    /// The prepared corpus.
    pub corpus: &'a Corpus,
    /// Mixture weights in manifest cell order.
    pub weights: Vec<f64>,
    /// Model configuration (already adapted to the corpus: vocabulary, image shape).
    pub model: Qwen2Config,
    /// Start from this Hugging Face-style checkpoint directory instead of random weights.
    pub init_from: Option<PathBuf>,
    /// Optimisation, data and schedule settings.
    pub train: TrainConfig,
    /// Run directory (created).
    pub out: PathBuf,
    /// Continue from the newest checkpoint in `out` if there is one.
    pub resume: bool,
    /// Device to train on.
    pub device: Device,
    /// Preemption flag (set by a signal handler, `crate::slurm::preempt`), polled after every
    /// step: once set, the run checkpoints and stops like `stop_after` (returns `None`). With
    /// several ranks rank 0's flag decides (broadcast every step); all ranks must pass `Some`
    /// or all `None`.
    pub preempt: Option<&'a AtomicBool>,
}

/// Live progress, reported after every step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Steps in the run.
    pub total: u64,
    /// This step's loss.
    pub loss: f64,
    /// This step's throughput.
    pub tokens_per_s: f64,
}

/// What a finished run reports (and writes as `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TrainOutcome {
    /// Per-benchmark score at the end (the trial protocol's scores): the benchmark's
    /// [`Metric`](super::eval::Metric) of greedily generated answers, or the exact-match
    /// accuracy when `eval_generate` is off.
    pub benchmarks: BTreeMap<String, f64>,
    /// Per-benchmark exact-match accuracy at the end.
    pub benchmark_accuracy: BTreeMap<String, f64>,
    /// The metric behind each of `benchmarks` (exact match throughout when `eval_generate`
    /// is off).
    pub benchmark_metric: BTreeMap<String, super::eval::Metric>,
    /// Per-benchmark answer loss at the end.
    pub benchmark_loss: BTreeMap<String, f64>,
    /// Mean training loss over the last 10 % of the steps (at least one).
    pub train_loss: f64,
    /// Mean answer loss over all benchmarks at the end.
    pub eval_loss: f64,
    /// Steps trained in total.
    pub steps: u64,
    /// Tokens seen in total.
    pub tokens: u64,
    /// Wall time of this invocation, seconds.
    pub wall_s: f64,
    /// Mean training throughput of this invocation.
    pub tokens_per_s: f64,
    /// The step this invocation resumed from (0 = fresh).
    pub resumed_from: u64,
    /// Parameters of the model.
    pub params: usize,
}

/// The dtype a config string means on `device`.
pub fn resolve_dtype(name: &str, device: &Device) -> DType {
    match (name, device.is_cpu()) {
        ("bf16", _) => DType::BF16,
        ("auto", false) => DType::BF16,
        _ => DType::F32,
    }
}

/// Checks the corpus and the model fit together.
pub fn check_compatible(corpus: &Corpus, model: &Qwen2Config) -> Result<(), TrainError> {
    let m = &corpus.manifest;
    if let (Some(t), true) = (&m.tokenizer, m.vocab_size as usize > model.vocab_size) {
        return Err(TrainError::Incompatible(format!(
            "the corpus {} was tokenised with {} ({} tokens) but the model's vocab_size is {}; \
             use a model config whose vocab_size is at least {}",
            corpus.root.display(),
            t.path,
            m.vocab_size,
            model.vocab_size,
            m.vocab_size
        )));
    }
    if m.vocab_size as usize > model.vocab_size {
        return Err(TrainError::Incompatible(format!(
            "the corpus vocabulary ({} tokens, {}) is larger than the model's vocab_size {}",
            m.vocab_size,
            corpus.root.display(),
            model.vocab_size
        )));
    }
    if let Some(img) = &m.image {
        if model.mm_hidden_size != Some(img.dim) {
            return Err(TrainError::Incompatible(format!(
                "the corpus has image features of size {} but the model's mm_hidden_size is {:?}",
                img.dim, model.mm_hidden_size
            )));
        }
        if model.image_token_index != Some(m.special_tokens.image) {
            return Err(TrainError::Incompatible(format!(
                "the corpus's image token is {} but the model's image_token_index is {:?}",
                m.special_tokens.image, model.image_token_index
            )));
        }
    }
    Ok(())
}

/// Image patches of rows `r0..r1` of `batch`, placed at the image-token positions of each
/// document (relative to row `r0`).
pub fn batch_images(
    batch: &Batch,
    r0: usize,
    r1: usize,
    image_token: u32,
    dim: usize,
    device: &Device,
) -> Result<Option<ImageInput>, TrainError> {
    if batch.image_elems == 0 || dim == 0 {
        return Ok(None);
    }
    let t = batch.seq_len;
    let patches = batch.image_elems / dim;
    let mut feats = Vec::new();
    let mut positions = Vec::new();
    for (i, d) in batch.docs.iter().enumerate() {
        let row = d.row as usize;
        if row < r0 || row >= r1 {
            continue;
        }
        let img = batch.image(i);
        let mut k = 0;
        for p in d.start as usize..(d.start + d.len) as usize {
            if batch.tokens[row * t + p] == image_token && k < patches {
                feats.extend(img[k * dim..(k + 1) * dim].iter().map(|x| x.to_f32()));
                positions.push(((row - r0) * t + p) as u32);
                k += 1;
            }
        }
    }
    let m = positions.len();
    Ok(Some(ImageInput {
        features: Tensor::from_vec(feats, (m, dim), device)?,
        positions,
    }))
}

/// This rank's rows of a global batch: `rows × seq_len` tokens and their loss mask.
#[derive(Debug, Clone, Copy)]
pub struct GradBatch<'b> {
    /// Token ids, row-major.
    pub tokens: &'b [u32],
    /// Loss mask, one byte per token.
    pub mask: &'b [u8],
    /// Rows.
    pub rows: usize,
    /// Tokens per row.
    pub seq_len: usize,
}

/// Loss and gradients of this rank's rows of a global batch, computed in micro-batches of
/// `micro` rows; `images(r0, r1)` supplies the image patches of rows `r0..r1`. Sums over
/// counted positions are divided by `denominator`, the number of counted positions of the
/// whole global batch, so summing the results of all ranks gives the mean loss and its
/// gradient. Zeros when this rank has no counted position.
pub fn batch_gradients(
    model: &Qwen2Model,
    params: &Params,
    batch: GradBatch<'_>,
    micro: usize,
    denominator: usize,
    images: &mut dyn FnMut(usize, usize) -> Result<Option<ImageInput>, TrainError>,
) -> Result<(f64, Vec<Vec<f32>>), TrainError> {
    let GradBatch {
        tokens,
        mask,
        rows,
        seq_len: t,
    } = batch;
    let mut grads: Option<Vec<Vec<f32>>> = None;
    let mut loss_value = 0.0;
    for r0 in (0..rows).step_by(micro.max(1)) {
        let r1 = (r0 + micro).min(rows);
        let tok = &tokens[r0 * t..r1 * t];
        let targets = Targets::from_mask(tok, &mask[r0 * t..r1 * t], r1 - r0, t);
        if targets.is_empty() {
            continue;
        }
        let img = images(r0, r1)?;
        let input = LossInput {
            tokens: tok,
            rows: r1 - r0,
            seq_len: t,
            images: img.as_ref(),
        };
        let loss = masked_loss(model, input, &targets, denominator)?;
        loss_value += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let g = flat_grads(params, &loss.backward()?)?;
        match grads.as_mut() {
            Some(acc) => accumulate(acc, &g),
            None => grads = Some(g),
        }
    }
    let grads = grads.unwrap_or_else(|| {
        params
            .vars()
            .iter()
            .map(|v| vec![0.0; v.elem_count()])
            .collect()
    });
    Ok((loss_value, grads))
}

/// Mean answer loss over the benchmarks.
fn mean_loss(scores: &BTreeMap<String, BenchScore>) -> f64 {
    scores.values().map(|s| s.loss).sum::<f64>() / scores.len().max(1) as f64
}

fn ignore_schedule_fields(t: &TrainConfig) -> TrainConfig {
    TrainConfig {
        steps: 0,
        eval_every: 0,
        eval_samples: 0,
        final_eval_samples: 0,
        eval_batch: 1,
        eval_generate: false,
        eval_metrics: BTreeMap::new(),
        checkpoint_every: 0,
        keep_checkpoints: 1,
        log_every: 1,
        stop_after: 0,
        zero1: false,
        bucket_mb: 0.0,
        ..t.clone()
    }
}

fn write_failure(out: &Path, step: u64, reason: &str) {
    let v = serde_json::json!({"status": "failed", "step": step, "reason": reason});
    let _ = write_atomic(&out.join(FAILED_FILE), v.to_string().as_bytes());
}

/// Runs (or resumes) a training run; writes `train_config.json`, the training log,
/// checkpoints and, at the end, `metrics.json` into `plan.out`.
///
/// Returns `None` when the run stopped early at `stop_after` or on preemption (checkpointed,
/// resumable).
pub fn train(
    plan: &TrainPlan<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<TrainOutcome>, TrainError> {
    train_with(plan, &SingleProcess, progress)
}

/// The log, written by rank 0 only.
struct LeadLog(Option<TrainLog>);

impl LeadLog {
    fn write<T: Serialize>(&mut self, r: &T) -> Result<(), TrainError> {
        if let Some(l) = self.0.as_mut() {
            l.write(r)?;
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), TrainError> {
        if let Some(l) = self.0.as_mut() {
            l.sync()?;
        }
        Ok(())
    }
}

/// The optimiser: replicated on every rank, or sharded (ZeRO-1).
enum Optim {
    Full(AdamW),
    Sharded(ShardedAdamW),
}

/// Where a run starts: fresh (or `init_from`) parameters, or a checkpoint's state.
struct Start {
    params: Params,
    opt: AdamW,
    step: u64,
    tokens: u64,
}

/// What one optimiser step reports.
#[derive(Debug, Clone, Copy)]
struct StepStats {
    loss: f64,
    lr: f64,
    grad_norm: f64,
}

/// Clocks and counters of one invocation, for the throughput in `metrics.json`.
#[derive(Debug, Clone, Copy)]
struct Timing {
    started: Instant,
    train_secs: f64,
    run_tokens_start: u64,
}

/// One training run on the ranks of a communicator: everything [`train_with`] steps
/// through, from the resolved start to the final metrics.
struct Trainer<'p, 'a> {
    plan: &'p TrainPlan<'a>,
    comm: &'p dyn Communicator,
    rank: usize,
    world: usize,
    lead: bool,
    evalset: EvalSet,
    sampler: Sampler<'a>,
    params: Params,
    layout: FlatLayout,
    optim: Optim,
    model: Qwen2Model,
    log: LeadLog,
    start_step: u64,
    /// The step of the last checkpoint written or resumed from (`None`: none yet).
    checkpointed: Option<u64>,
    tokens_seen: u64,
    bucket_elems: usize,
    /// The latest held-out evaluation of the curve, with its step.
    last_scores: Option<(u64, BTreeMap<String, BenchScore>)>,
    /// Training losses of this invocation's steps.
    recent: Vec<f64>,
}

/// [`train`] on the ranks of `comm`, data-parallel: each rank draws its share of every global
/// batch, gradients are summed across ranks (bucketed all-reduce, or reduce-scatter into
/// ZeRO-1 shards), and only rank 0 writes the log, checkpoints and metrics. With one rank this
/// is exactly [`train`].
pub fn train_with(
    plan: &TrainPlan<'_>,
    comm: &dyn Communicator,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<TrainOutcome>, TrainError> {
    let started = Instant::now();
    let tc = &plan.train;
    let mut run = Trainer::build(plan, comm)?;
    if run.start_step == 0 && tc.eval_every > 0 {
        run.evaluate(0, true, tc.eval_samples, false)?;
    }
    let run_tokens_start = run.tokens_seen;
    let train_started = Instant::now();
    let end = run.run_steps(progress)?;
    let timing = Timing {
        started,
        train_secs: train_started.elapsed().as_secs_f64(),
        run_tokens_start,
    };
    if end < tc.steps {
        run.pause(end)?;
        return Ok(None);
    }
    let scores = run.final_scores()?;
    run.finish(&scores, timing).map(Some)
}

impl<'p, 'a> Trainer<'p, 'a> {
    /// Checks the plan, reads the evaluation set, refuses to overwrite checkpoints without
    /// `resume`, resolves the start (checkpoint or fresh), writes `train_config.json` and opens
    /// the log.
    fn build(plan: &'p TrainPlan<'a>, comm: &'p dyn Communicator) -> Result<Self, TrainError> {
        let tc = &plan.train;
        let (rank, world) = (comm.rank(), comm.size());
        let lead = rank == 0;
        tc.validate()?;
        plan.model.validate()?;
        // Sizes against limits before anything is allocated (docs/reliability.md).
        let estimate = MemoryEstimate::of(tc, &plan.model, plan.device.is_cpu(), world);
        check_sizes(tc, &plan.model, &estimate, limits::memory_limit()?.as_ref())?;
        check_eval_samples(tc, plan.corpus.manifest.benchmarks.len())?;
        check_compatible(plan.corpus, &plan.model)?;
        // Read (and check the metric overrides) before anything is written.
        let evalset = EvalSet::from_corpus(plan.corpus, tc.eval_samples.max(tc.final_samples()))?
            .with_metrics(&tc.eval_metrics)?;
        std::fs::create_dir_all(&plan.out).at("creating", &plan.out)?;
        let existing = checkpoint::list(&plan.out)?;
        if !plan.resume && !existing.is_empty() {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints; pass --resume to continue it or choose a new --out",
                plan.out.display()
            )));
        }
        let sampler_cfg = SamplerConfig {
            seed: tc.seed,
            mode: tc.mode,
            packing: tc.packing,
            batch_size: tc.batch_size,
            seq_len: tc.seq_len,
            pad_token: plan.corpus.manifest.special_tokens.pad,
        };
        let mut sampler = Sampler::for_corpus(plan.corpus, &plan.weights, sampler_cfg)?;
        let start = match existing.last() {
            Some((_, dir)) if plan.resume => resume(plan, dir, &mut sampler)?,
            _ => fresh(plan)?,
        };
        let log = open_log(plan, world, lead, start.step)?;
        let layout = FlatLayout::of(&start.params);
        let optim = if tc.zero1 && world > 1 {
            Optim::Sharded(ShardedAdamW::from_full(&start.opt, &layout, rank, world))
        } else {
            Optim::Full(start.opt)
        };
        Ok(Self {
            plan,
            comm,
            rank,
            world,
            lead,
            evalset,
            sampler,
            model: Qwen2Model::new(&plan.model, &start.params),
            params: start.params,
            layout,
            optim,
            log,
            start_step: start.step,
            checkpointed: (start.step > 0).then_some(start.step),
            tokens_seen: start.tokens,
            bucket_elems: ((tc.bucket_mb * 1024.0 * 1024.0 / 4.0) as usize).max(1024),
            last_scores: None,
            recent: Vec::new(),
        })
    }

    /// Trains from `start_step` to `stop_after` (or `steps`), or until preempted; returns
    /// the step it stopped after.
    fn run_steps(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<u64, TrainError> {
        let tc = &self.plan.train;
        let mut end = if tc.stop_after > 0 {
            tc.stop_after.min(tc.steps)
        } else {
            tc.steps
        };
        for step in self.start_step..end {
            let step_start = Instant::now();
            let stats = self.step(step)?;
            self.record(step + 1, stats, step_start, progress)?;
            let done = step + 1;
            if self.preempted()? && done < end {
                end = done;
                break;
            }
        }
        Ok(end)
    }

    /// One optimiser step (step index `step`, 0-based): this rank's share of the batch, the
    /// loss and gradients reduced across ranks, clipping and AdamW. Stops the run when the
    /// loss or the gradient norm is not finite.
    fn step(&mut self, step: u64) -> Result<StepStats, TrainError> {
        let plan = self.plan;
        let tc = &plan.train;
        let t = tc.seq_len;
        let manifest = &plan.corpus.manifest;
        let image_token = manifest.special_tokens.image;
        let image_dim = manifest.image.as_ref().map_or(0, |i| i.dim);
        let batch = self.sampler.next_batch(self.rank, self.world)?;
        let local = Targets::from_mask(&batch.tokens, &batch.loss_mask, batch.rows, t).len();
        let mut count = [local as f64];
        self.comm
            .all_reduce(BufMut::F64(&mut count), ReduceOp::Sum)?;
        let denom = count[0] as usize;
        if denom == 0 {
            return Err(TrainError::Config(format!(
                "step {}: the batch has no loss-masked token (is the mixture only on cells without answers?)",
                step + 1
            )));
        }
        let rows = GradBatch {
            tokens: &batch.tokens,
            mask: &batch.loss_mask,
            rows: batch.rows,
            seq_len: t,
        };
        let (local_loss, mut grads) = batch_gradients(
            &self.model,
            &self.params,
            rows,
            tc.micro_rows(),
            denom,
            &mut |r0, r1| batch_images(&batch, r0, r1, image_token, image_dim, &plan.device),
        )?;
        let mut loss_buf = [local_loss];
        self.comm
            .all_reduce(BufMut::F64(&mut loss_buf), ReduceOp::Sum)?;
        let loss = loss_buf[0];
        if !loss.is_finite() {
            return Err(self.diverged(step + 1, &format!("loss is {loss}"), loss));
        }
        let lr = lr_at(
            tc.schedule,
            step,
            tc.steps,
            tc.warmup_steps,
            tc.lr,
            tc.min_lr,
        );
        let grad_norm = self.apply(&mut grads, lr)?;
        if !grad_norm.is_finite() {
            let reason = format!("gradient norm is {grad_norm}");
            return Err(self.diverged(step + 1, &reason, grad_norm));
        }
        Ok(StepStats {
            loss,
            lr,
            grad_norm,
        })
    }

    /// Reduces `grads` across ranks, clips them to the global norm and updates the parameters
    /// (replicated AdamW, or this rank's ZeRO-1 shard then an all-gather); returns the norm
    /// before clipping (no update when it is not finite).
    fn apply(&mut self, grads: &mut [Vec<f32>], lr: f64) -> Result<f64, TrainError> {
        let tc = &self.plan.train;
        let (comm, world) = (self.comm, self.world);
        Ok(match &mut self.optim {
            Optim::Full(opt) => {
                all_reduce_buckets(comm, grads, self.bucket_elems)?;
                let norm = clip_global_norm(grads, tc.grad_clip);
                if norm.is_finite() {
                    opt.step(&self.params, grads, lr)?;
                }
                norm
            }
            Optim::Sharded(opt) => {
                let s = self.layout.shard_len(world);
                let flat = self.layout.flatten(grads, s * world);
                let mut shard = vec![0.0f32; s];
                comm.reduce_scatter(&flat, &mut shard, ReduceOp::Sum)?;
                let mut sq = [shard.iter().map(|&x| x as f64 * x as f64).sum::<f64>()];
                comm.all_reduce(BufMut::F64(&mut sq), ReduceOp::Sum)?;
                let norm = sq[0].sqrt();
                if norm.is_finite() {
                    let f = tc.grad_clip / (norm + 1e-6);
                    if tc.grad_clip > 0.0 && f < 1.0 {
                        shard.iter_mut().for_each(|x| *x = (*x as f64 * f) as f32);
                    }
                    opt.step(&shard, lr);
                    let mut full = vec![0.0f32; s * world];
                    comm.all_gather(&opt.master, &mut full)?;
                    set_params(&self.params, &self.layout.unflatten(&full))?;
                }
                norm
            }
        })
    }

    /// The error that stops a diverged run at step `step` (1-based), after rank 0 wrote
    /// `failed.json` and the log was synced (an error syncing the log is returned instead).
    fn diverged(&mut self, step: u64, reason: &str, value: f64) -> TrainError {
        if self.lead {
            write_failure(&self.plan.out, step, reason);
        }
        if let Err(e) = self.log.sync() {
            return e;
        }
        TrainError::NonFinite {
            step,
            value,
            checkpoint: self.checkpointed,
        }
    }

    /// After step `done` (1-based): counts its tokens, logs it, reports progress, and runs
    /// the scheduled evaluation and checkpoint.
    fn record(
        &mut self,
        done: u64,
        stats: StepStats,
        step_start: Instant,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), TrainError> {
        let tc = &self.plan.train;
        let t = tc.seq_len;
        self.tokens_seen += (tc.batch_size * t) as u64;
        let tps = (tc.batch_size * t) as f64 / step_start.elapsed().as_secs_f64();
        self.recent.push(stats.loss);
        if done % tc.log_every == 0 || done == tc.steps {
            self.log.write(&StepRecord {
                step: done,
                tokens: self.tokens_seen,
                loss: stats.loss,
                lr: stats.lr,
                grad_norm: stats.grad_norm,
                tokens_per_s: tps,
            })?;
        }
        if self.lead {
            progress(Progress {
                step: done,
                total: tc.steps,
                loss: stats.loss,
                tokens_per_s: tps,
            });
        }
        if tc.eval_every > 0 && done % tc.eval_every == 0 {
            let scores = self.evaluate(done, true, tc.eval_samples, false)?;
            self.last_scores = Some((done, scores));
        }
        if tc.checkpoint_every > 0 && done % tc.checkpoint_every == 0 && done < tc.steps {
            self.log.sync()?;
            self.save(done)?;
            self.checkpointed = Some(done);
        }
        Ok(())
    }

    /// Whether the run was asked to stop (rank 0's preemption flag, broadcast to every rank).
    fn preempted(&self) -> Result<bool, TrainError> {
        let Some(flag) = self.plan.preempt else {
            return Ok(false);
        };
        let mine = flag.load(Ordering::SeqCst);
        Ok(if self.world > 1 {
            crate::dist::broadcast_value(self.comm, self.lead.then_some(&mine), 0)?
        } else {
            mine
        })
    }

    /// One evaluation of the first `samples` documents per benchmark (rank 0 only; other
    /// ranks get an empty map), logged when `logged`.
    fn evaluate(
        &mut self,
        step: u64,
        logged: bool,
        samples: usize,
        generate: bool,
    ) -> Result<BTreeMap<String, BenchScore>, TrainError> {
        if !self.lead {
            return Ok(BTreeMap::new());
        }
        let plan = self.plan;
        let scores = self.evalset.evaluate(
            &self.model,
            plan.train.eval_batch,
            &plan.device,
            samples,
            generate,
        )?;
        if logged {
            self.log.write(&EvalRecord {
                step,
                eval_loss: mean_loss(&scores),
                eval: scores.clone(),
            })?;
        }
        Ok(scores)
    }

    /// Writes a checkpoint of step `step` (rank 0; a ZeRO-1 optimiser is gathered on every
    /// rank first).
    fn save(&self, step: u64) -> Result<PathBuf, TrainError> {
        let (plan, tc) = (self.plan, &self.plan.train);
        let gathered;
        let opt = match &self.optim {
            Optim::Full(o) => o,
            Optim::Sharded(s) => {
                gathered = s.gather(self.comm, &self.layout, &self.params)?;
                &gathered
            }
        };
        if !self.lead {
            return Ok(PathBuf::new());
        }
        let state = TrainerState {
            format: "mixatlas-checkpoint".into(),
            version: CHECKPOINT_VERSION,
            step,
            tokens: self.tokens_seen,
            train: tc.clone(),
            weights: plan.weights.clone(),
            sampler: self.sampler.state().clone(),
            optimizer: opt.config,
            optimizer_step: opt.step,
        };
        checkpoint::save(
            &plan.out,
            &plan.model,
            &self.params,
            opt,
            &state,
            tc.keep_checkpoints,
        )
    }

    /// Stops early after step `end` (`stop_after`, preemption): a checkpoint of `end` unless
    /// one exists.
    fn pause(&mut self, end: u64) -> Result<(), TrainError> {
        self.log.sync()?;
        if checkpoint::list(&self.plan.out)?.last().map(|(s, _)| *s) != Some(end) {
            self.save(end)?;
        }
        Ok(())
    }

    /// The end-of-run scores metrics.json reports.
    ///
    /// The held-out curve (`eval_every > 0`) ends with a point at the last step on the same
    /// `eval_samples` documents as its other points, so steps-to-loss compares like with like.
    /// The final evaluation (`final_eval_samples` documents, greedy answers) is what
    /// metrics.json reports; it is logged only when there is no curve.
    fn final_scores(&mut self) -> Result<BTreeMap<String, BenchScore>, TrainError> {
        let tc = &self.plan.train;
        if tc.eval_every == 0 {
            return self.evaluate(tc.steps, true, tc.final_samples(), tc.eval_generate);
        }
        let curve = match self.last_scores.take() {
            Some((s, scores)) if s == tc.steps => scores,
            _ => self.evaluate(tc.steps, true, tc.eval_samples, false)?,
        };
        if tc.final_samples() == tc.eval_samples && !tc.eval_generate {
            Ok(curve)
        } else {
            self.evaluate(tc.steps, false, tc.final_samples(), tc.eval_generate)
        }
    }

    /// Mean training loss over the last 10 % of this invocation's steps (at least one), or,
    /// resumed at the end, of the log's.
    fn train_loss(&self) -> Result<f64, TrainError> {
        let recent = &self.recent;
        let tail = (recent.len() / 10).max(1).min(recent.len());
        Ok(if recent.is_empty() {
            // Resumed at the end: read the tail of the log instead.
            let steps = super::log::read_steps(&self.plan.out.join(super::log::LOG_FILE))?;
            let k = (steps.len() / 10).max(1).min(steps.len()).max(1);
            steps.iter().rev().take(k).map(|r| r.loss).sum::<f64>() / k as f64
        } else {
            recent[recent.len() - tail..].iter().sum::<f64>() / tail as f64
        })
    }

    /// The final checkpoint (unless it exists) and `metrics.json` (rank 0).
    fn finish(
        mut self,
        scores: &BTreeMap<String, BenchScore>,
        timing: Timing,
    ) -> Result<TrainOutcome, TrainError> {
        let tc = &self.plan.train;
        self.log.sync()?;
        if checkpoint::list(&self.plan.out)?.last().map(|(s, _)| *s) != Some(tc.steps) {
            self.save(tc.steps)?;
        }
        let outcome = TrainOutcome {
            benchmarks: scores
                .iter()
                .map(|(k, v)| (k.clone(), v.score.unwrap_or(v.accuracy)))
                .collect(),
            benchmark_accuracy: scores
                .iter()
                .map(|(k, v)| (k.clone(), v.accuracy))
                .collect(),
            benchmark_metric: scores
                .iter()
                .map(|(k, v)| (k.clone(), v.metric.unwrap_or_default()))
                .collect(),
            benchmark_loss: scores.iter().map(|(k, v)| (k.clone(), v.loss)).collect(),
            train_loss: self.train_loss()?,
            eval_loss: mean_loss(scores),
            steps: tc.steps,
            tokens: self.tokens_seen,
            wall_s: timing.started.elapsed().as_secs_f64(),
            tokens_per_s: (self.tokens_seen - timing.run_tokens_start) as f64
                / timing.train_secs.max(1e-9),
            resumed_from: self.start_step,
            params: self.params.count(),
        };
        if self.lead {
            write_atomic(
                &self.plan.out.join(METRICS_FILE),
                serde_json::to_string_pretty(&outcome)
                    .expect("metrics serialise")
                    .as_bytes(),
            )?;
        }
        Ok(outcome)
    }
}

/// The start of a run resumed from the checkpoint in `dir`, which must hold the same model,
/// training settings (up to the schedule fields) and mixture; restores the sampler.
fn resume(
    plan: &TrainPlan<'_>,
    dir: &Path,
    sampler: &mut Sampler<'_>,
) -> Result<Start, TrainError> {
    let tc = &plan.train;
    let dtype = resolve_dtype(&tc.dtype, &plan.device);
    let loaded = checkpoint::load(dir, dtype, &plan.device)?;
    let same = Qwen2Config {
        torch_dtype: None,
        ..loaded.config.clone()
    } == Qwen2Config {
        torch_dtype: None,
        ..plan.model.clone()
    };
    if !same {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "holds a model of another shape or config ({} layers, hidden {}, vocab {}) than requested ({} layers, hidden {}, vocab {})",
                loaded.config.num_hidden_layers, loaded.config.hidden_size, loaded.config.vocab_size,
                plan.model.num_hidden_layers, plan.model.hidden_size, plan.model.vocab_size
            ),
        });
    }
    if ignore_schedule_fields(&loaded.state.train) != ignore_schedule_fields(tc) {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: "was written with different training settings (batch, sequence, optimiser, schedule or seed); resume with the run's train_config.json".into(),
        });
    }
    if loaded.state.weights != plan.weights {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: "was trained on a different mixture".into(),
        });
    }
    sampler.restore(loaded.state.sampler.clone())?;
    Ok(Start {
        params: loaded.params,
        opt: loaded.optimizer,
        step: loaded.state.step,
        tokens: loaded.state.tokens,
    })
}

/// The start of a new run: random parameters (or `init_from`'s) and a fresh optimiser.
fn fresh(plan: &TrainPlan<'_>) -> Result<Start, TrainError> {
    let tc = &plan.train;
    let dtype = resolve_dtype(&tc.dtype, &plan.device);
    let params = match &plan.init_from {
        Some(dir) => Params::load(dir, &plan.model, tc.seed, dtype, &plan.device)?,
        None => Params::init(&plan.model, tc.seed, dtype, &plan.device)?,
    };
    let opt = AdamW::new(&params, tc.optimizer)?;
    Ok(Start {
        params,
        opt,
        step: 0,
        tokens: 0,
    })
}

/// Rank 0 writes the resolved `train_config.json` and opens the log (cut back to
/// `start_step`); other ranks log nothing.
fn open_log(
    plan: &TrainPlan<'_>,
    world: usize,
    lead: bool,
    start_step: u64,
) -> Result<LeadLog, TrainError> {
    if !lead {
        return Ok(LeadLog(None));
    }
    let resolved = serde_json::json!({
        "train": plan.train, "model": plan.model, "weights": plan.weights,
        "corpus": plan.corpus.root, "init_from": plan.init_from, "ranks": world,
    });
    write_atomic(
        &plan.out.join("train_config.json"),
        serde_json::to_string_pretty(&resolved)
            .expect("config serialises")
            .as_bytes(),
    )?;
    Ok(LeadLog(Some(TrainLog::open(&plan.out, Some(start_step))?)))
}

/// Reads a mixture file: a recipe (`{"weights": {cell: w}}`), a trial mixture
/// (`{"mixture": {cell: w}}`) or a plain `{cell: w}` object, with cells named `concept/task`,
/// checked once by [`Mixture`]. Returns the weights in manifest cell order (cells not named
/// get 0), renormalised exactly (they must sum to 1 within 0.01, the policy of every mixture
/// file: see [`crate::data::mixture::Renormalised`]).
pub fn read_mixture(
    path: &Path,
    manifest: &crate::data::corpus::Manifest,
) -> Result<Vec<f64>, TrainError> {
    let bad = |source: MixtureError| TrainError::Mixture {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).at("reading", path)?;
    let m = Mixture::from_json(&text, path, &manifest_cells(manifest)).map_err(bad)?;
    m.normalised_in(manifest).map_err(|e| bad(e.into()))
}
