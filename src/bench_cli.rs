//! `mixatlas bench …`: measurements that need real processes (under `mpirun` or `srun`), where
//! criterion cannot run: the all-reduce bandwidth of the bucketed gradient path against a raw
//! all-reduce of the same bytes, in the same job.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use mixatlas::dist::{BufMut, ReduceOp};
use mixatlas::train::parallel::all_reduce_buckets;

use crate::train_cli::Dist;

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
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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
        let (r, b) = (median(raw_t), median(buck_t));
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
