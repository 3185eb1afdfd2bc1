//! `mixatlas bench …`: steps to baseline loss of training logs, and the measurements that need
//! real processes (under `mpirun` or `srun`), where criterion cannot run: every collective of
//! the communicator against closed forms, and the all-reduce bandwidth of the bucketed gradient
//! path against a raw all-reduce of the same bytes, in the same job; `regmix-predict` (in
//! [`super::regmix`]) scores `predict`'s GP on RegMix's released proxy runs; `gp-scale` (in
//! [`super::gp_scale`]) measures the surrogate's scalable strategies; `scale` (in
//! [`super::scale`]) measures the search controller at 1,000 slots and 10,000 trials.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use mixatlas::bench::median;
use mixatlas::dist::{BufMut, ReduceOp};
use mixatlas::train::parallel::all_reduce_buckets;

use super::runtime::Dist;

/// `mixatlas bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchKind,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// Gradient all-reduce: bucketed path vs one raw all-reduce of the same bytes.
    Allreduce(AllreduceArgs),
    /// Checks every collective of the Communicator against closed forms (run under mpirun).
    Collectives,
    /// Steps to baseline loss: how many fewer steps candidates need to reach the baseline's
    /// final loss.
    StepsToLoss(StepsArgs),
    /// Held-out Spearman/Pearson/RMSE of `predict`'s GP on RegMix's released proxy runs
    /// (peer: benches/peers/regmix_lgbm.py).
    RegmixPredict(super::regmix::RegmixArgs),
    /// The GP surrogate at scale: fit and batch times of the default strategy, and held-out
    /// RMSE / Spearman of the scalable strategies against the exact GP and the truth.
    GpScale(super::gp_scale::GpScaleArgs),
    /// The search controller at scale: the real loop driven by a simulated executor with N
    /// slots (rank-0 time per round, proposals/s, CPU, RSS, state size, resume time).
    Scale(super::scale::ScaleArgs),
    /// Images/s of `embed` (decode, preprocess, CLIP tower) on a checkpoint and images
    /// (peer: benches/embed_peer.py).
    Embed(super::embed_bench::EmbedBenchArgs),
}

/// `mixatlas bench steps-to-loss`.
#[derive(Debug, Args)]
pub struct StepsArgs {
    /// Baseline run(s): a run directory or log file; several seeds as `a,b,c`.
    pub baseline: String,
    /// Candidate run(s), each like the baseline (seeds paired by position).
    #[arg(required = true)]
    pub candidates: Vec<String>,
    /// Loss series of MixAtlas logs: eval (held-out, default) or train.
    #[arg(long, default_value = "eval")]
    pub series: String,
    /// Smoothing: none, ema:ALPHA, window:N.
    #[arg(long, default_value = "none")]
    pub smooth: String,
    /// Step column (CSV header / JSON key) for other trainers' logs.
    #[arg(long)]
    pub step_col: Option<String>,
    /// Loss column for other trainers' logs.
    #[arg(long)]
    pub loss_col: Option<String>,
    /// Confidence level of the bootstrap interval over seeds.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mixatlas bench allreduce`.
#[derive(Debug, Args)]
pub struct AllreduceArgs {
    /// Gradient bytes in MiB (f32).
    #[arg(long, default_value_t = 64.0)]
    pub mb: f64,
    /// Bucket size in MiB (the trainer's default, `[train] bucket_mb`, is 4).
    #[arg(long, default_value_t = 4.0)]
    pub bucket_mb: f64,
    /// Timed repetitions (median reported) after one warm-up.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
}

/// Runs a benchmark.
pub fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        BenchKind::Allreduce(a) => allreduce(a),
        BenchKind::Collectives => collectives(),
        BenchKind::StepsToLoss(a) => steps(a),
        BenchKind::RegmixPredict(a) => super::regmix::run(a),
        BenchKind::GpScale(a) => super::gp_scale::run(a),
        BenchKind::Scale(a) => super::scale::run(a),
        BenchKind::Embed(a) => super::embed_bench::run(a),
    }
}

fn allreduce(a: AllreduceArgs) -> Result<()> {
    let dist = Dist::init(120.0)?;
    let comm = dist.world.as_ref();
    let (rank, world) = (comm.rank(), comm.size());
    let total = ((a.mb * 1024.0 * 1024.0) / 4.0) as usize;
    // Parameter-like pieces: large matrices, medium ones and small vectors.
    let sizes = [1 << 20, 1 << 18, 4096, 896];
    let mut parts = Vec::new();
    let mut left = total;
    let mut k = 0;
    while left > 0 {
        let n = sizes[k % sizes.len()].min(left);
        parts.push(n);
        left -= n;
        k += 1;
    }
    let base = |i: usize| ((i % 97) as f32) * 1e-3;
    let scale = (rank + 1) as f32;
    let make = || -> Vec<Vec<f32>> {
        let mut off = 0;
        parts
            .iter()
            .map(|&n| {
                let v = (off..off + n).map(|i| scale * base(i)).collect();
                off += n;
                v
            })
            .collect()
    };
    let want = (world * (world + 1) / 2) as f32;
    let bucket = ((a.bucket_mb * 1024.0 * 1024.0) / 4.0) as usize;
    let (mut raw_t, mut buck_t) = (Vec::new(), Vec::new());
    for it in 0..=a.iters {
        let mut flat: Vec<f32> = make().concat();
        comm.barrier()?;
        let t0 = Instant::now();
        comm.all_reduce(BufMut::F32(&mut flat), ReduceOp::Sum)?;
        let raw = t0.elapsed().as_secs_f64();
        let mut grads = make();
        comm.barrier()?;
        let t0 = Instant::now();
        all_reduce_buckets(comm, &mut grads, bucket)?;
        let buck = t0.elapsed().as_secs_f64();
        if it == 0 {
            // Check both against the closed form Σ_r (r + 1)·base(i) = base(i)·W(W+1)/2.
            let got = grads.concat();
            for (i, (&x, &y)) in flat.iter().zip(&got).enumerate() {
                let w = base(i) * want;
                if (x - w).abs() > 1e-4 * w.abs().max(1e-3) || x != y {
                    bail!("all-reduce result wrong at element {i}: raw {x}, bucketed {y}, expected {w}");
                }
            }
            continue;
        }
        raw_t.push(raw);
        buck_t.push(buck);
    }
    if rank == 0 {
        let bytes = (total * 4) as f64;
        let (r, b) = (median(&mut raw_t), median(&mut buck_t));
        let v = serde_json::json!({
            "ranks": world, "bytes": total * 4, "bucket_mb": a.bucket_mb,
            "raw_s": r, "bucketed_s": b,
            "raw_gb_s": bytes / r / 1e9, "bucketed_gb_s": bytes / b / 1e9,
            "ratio": r / b, "verified": true,
        });
        println!("{v}");
    }
    Ok(())
}

/// Every collective against its closed form on values that depend on the rank; prints one JSON
/// line on rank 0 with the checks that passed (an error names the first that failed).
fn collectives() -> Result<()> {
    use half::{bf16, f16};
    use mixatlas::dist::broadcast_value;
    let dist = Dist::init(60.0)?;
    let c = dist.world.as_ref();
    let (r, w) = (c.rank(), c.size());
    let tri = (w * (w - 1) / 2) as f64; // Σ ranks
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool| -> Result<()> {
        if !ok {
            bail!("collective check {name} failed on rank {r} of {w}");
        }
        checks.push(name.to_string());
        Ok(())
    };
    let mut f = vec![r as f32, 1.0, 2.5];
    c.all_reduce(BufMut::F32(&mut f), ReduceOp::Sum)?;
    check(
        "all_reduce f32 sum",
        f == [tri as f32, w as f32, 2.5 * w as f32],
    )?;
    let mut d = vec![r as f64 + 0.25];
    c.all_reduce(BufMut::F64(&mut d), ReduceOp::Mean)?;
    check(
        "all_reduce f64 mean",
        (d[0] - (tri / w as f64 + 0.25)).abs() < 1e-12,
    )?;
    let mut b = vec![bf16::from_f32(r as f32 + 1.0); 4];
    c.all_reduce(BufMut::BF16(&mut b), ReduceOp::Sum)?;
    check(
        "all_reduce bf16 sum",
        b.iter().all(|x| x.to_f32() == (tri + w as f64) as f32),
    )?;
    let mut h = vec![f16::from_f32(2.0 * r as f32); 3];
    c.all_reduce(BufMut::F16(&mut h), ReduceOp::Mean)?;
    check(
        "all_reduce f16 mean",
        h.iter()
            .all(|x| (x.to_f32() - (2.0 * tri / w as f64) as f32).abs() < 1e-3),
    )?;
    let v: Vec<String> =
        broadcast_value(c, (r == 0).then_some(&vec!["mixture".to_string(); 3]), 0)?;
    check("broadcast value", v == vec!["mixture".to_string(); 3])?;
    let mut bytes = if r == w - 1 {
        vec![7u8; 100_000]
    } else {
        vec![1u8]
    };
    c.broadcast_bytes(&mut bytes, w - 1)?;
    check(
        "broadcast bytes from last rank",
        bytes == vec![7u8; 100_000],
    )?;
    let mut all = vec![0.0f32; 2 * w];
    c.all_gather(&[r as f32, -(r as f32)], &mut all)?;
    check(
        "all_gather",
        (0..w).all(|k| all[2 * k] == k as f32 && all[2 * k + 1] == -(k as f32)),
    )?;
    let send: Vec<f32> = (0..2 * w).map(|i| (i + r) as f32).collect();
    let mut mine = vec![0.0f32; 2];
    c.reduce_scatter(&send, &mut mine, ReduceOp::Sum)?;
    let want = |i: usize| (w * i) as f32 + tri as f32;
    check("reduce_scatter", mine == [want(2 * r), want(2 * r + 1)])?;
    c.barrier()?;
    check("barrier", true)?;
    let sub = c.split(r % 2, r)?;
    let mut x = vec![1.0f32];
    sub.all_reduce(BufMut::F32(&mut x), ReduceOp::Sum)?;
    let group = (0..w).filter(|k| k % 2 == r % 2).count();
    check(
        "split",
        sub.size() == group && x[0] == group as f32 && sub.rank() == r / 2,
    )?;
    if r == 0 {
        println!("{}", serde_json::json!({"ranks": w, "passed": checks}));
    }
    Ok(())
}

fn steps(a: StepsArgs) -> Result<()> {
    use mixatlas::bench::steps_to_loss::{
        bootstrap_mean, read_series, steps_to_loss, LogColumns, Smoothing,
    };
    use std::path::Path;
    let smoothing: Smoothing = a.smooth.parse()?;
    let mut cols = match a.series.as_str() {
        "eval" => LogColumns::eval(),
        "train" => LogColumns::train(),
        other => bail!("--series {other:?}: expected eval or train"),
    };
    if let Some(c) = &a.step_col {
        cols.step = c.clone();
    }
    if let Some(c) = &a.loss_col {
        cols.loss = c.clone();
    }
    let load = |list: &str| -> Result<Vec<_>> {
        list.split(',')
            .map(|p| Ok(read_series(Path::new(p.trim()), &cols)?))
            .collect()
    };
    let base = load(&a.baseline)?;
    let mut report = Vec::new();
    for cand in &a.candidates {
        let runs = load(cand)?;
        let per_seed: Vec<_> = runs
            .iter()
            .enumerate()
            .map(|(i, c)| steps_to_loss(&base[i.min(base.len() - 1)], c, smoothing))
            .collect();
        let reached: Vec<f64> = per_seed.iter().filter_map(|r| r.speedup).collect();
        let summary = if reached.len() == per_seed.len() {
            let (m, lo, hi) = bootstrap_mean(&reached, a.level, 10_000, 0);
            Some((m, lo, hi))
        } else {
            None
        };
        if !a.json {
            println!("{cand}");
            for (i, r) in per_seed.iter().enumerate() {
                match (r.candidate_step, r.speedup) {
                    (Some(st), Some(sp)) => println!(
                        "  seed {i}: baseline reaches L* = {:.4} at step {}; candidate at step {st}: speedup {sp:.2}×",
                        r.target, r.baseline_steps
                    ),
                    _ => println!(
                        "  seed {i}: candidate never reaches the baseline's final loss L* = {:.4} (its final loss {:.4})",
                        r.target, r.candidate_final
                    ),
                }
            }
            match summary {
                Some((m, lo, hi)) => println!(
                    "  speedup {m:.2}× (mean over {} seed(s); {:.0} % bootstrap interval {lo:.2}–{hi:.2})",
                    reached.len(),
                    100.0 * a.level
                ),
                None => println!(
                    "  no speedup: the candidate did not reach L* in {} of {} seed(s)",
                    per_seed.len() - reached.len(),
                    per_seed.len()
                ),
            }
        }
        report.push(serde_json::json!({
            "candidate": cand, "per_seed": per_seed,
            "speedup": summary.map(|s| s.0), "interval": summary.map(|s| [s.1, s.2]),
        }));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
