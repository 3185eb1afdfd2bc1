//! `mixatlas gpu`: compile every kernel of `kernels/` with NVRTC (CI, no GPU needed) and the
//! GPU machine's acceptance check (`scripts/gpu-check.sh`). A build without the `cuda`
//! feature keeps the subcommand and says which feature it needs.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

/// `mixatlas gpu`.
#[derive(Debug, Args)]
pub struct GpuArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: GpuCommand,
}

/// The `gpu` subcommands.
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Compile every kernels/*.cu to PTX and CUBIN with NVRTC and check the result (needs
    /// libnvrtc, no GPU).
    CompileKernels(CompileArgs),
    /// On a GPU: fused sampling kernel vs the CPU sampler (bit for bit), its bandwidth
    /// against a device memcpy, an NCCL all-reduce; prints one table.
    Check(CheckArgs),
}

/// `mixatlas gpu compile-kernels`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Comma-separated real architectures.
    #[arg(long, default_value = "sm_80,sm_90", value_delimiter = ',')]
    pub arch: Vec<String>,
    /// Directory for `<kernel>.<arch>.ptx`, `.cubin` and `<kernel>.sha256` (a
    /// MIXATLAS_KERNEL_DIR for GPU machines without NVRTC); nothing written when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `mixatlas gpu check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rows of the timed batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Tokens per row of the timed batch.
    #[arg(long, default_value_t = 4096)]
    pub seq_len: usize,
    /// Timed repetitions (median reported; at least 20).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Seed of the synthetic corpora and streams.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// f32 elements of the timed NCCL all-reduce.
    #[arg(long, default_value_t = 64 << 20)]
    pub allreduce_elems: usize,
    /// A train_log.jsonl of `mixatlas train --device cuda` to report.
    #[arg(long)]
    pub train_log: Option<PathBuf>,
    /// Also write the table as markdown here.
    #[arg(long)]
    pub out_md: Option<PathBuf>,
    /// Where the synthetic corpora go (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Runs `mixatlas gpu …`.
pub fn run(a: GpuArgs) -> Result<()> {
    match a.command {
        GpuCommand::CompileKernels(c) => compile_kernels(c),
        GpuCommand::Check(c) => check(c),
    }
}

#[cfg(not(feature = "cuda"))]
fn compile_kernels(_: CompileArgs) -> Result<()> {
    anyhow::bail!("this build has no GPU support; rebuild with --features cuda")
}

#[cfg(not(feature = "cuda"))]
fn check(_: CheckArgs) -> Result<()> {
    anyhow::bail!("this build has no GPU support; rebuild with --features cuda")
}

#[cfg(feature = "cuda")]
fn compile_kernels(a: CompileArgs) -> Result<()> {
    use anyhow::{bail, Context};
    use mixatlas::gpu::{nvrtc, KERNELS};
    let (major, minor) = nvrtc::nvrtc_version()?;
    println!("NVRTC {major}.{minor}");
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut failures = 0;
    for k in KERNELS {
        for arch in &a.arch {
            let c = nvrtc::compile(k, arch)?;
            match c.validate(k) {
                Ok(()) => println!(
                    "ok   {} {arch}: PTX {} bytes (.target {arch}; entries {}), CUBIN {} bytes",
                    k.file,
                    c.ptx.len(),
                    k.entries.join(", "),
                    c.cubin.len()
                ),
                Err(e) => {
                    failures += 1;
                    println!("FAIL {e}");
                }
            }
            if let Some(dir) = &a.out {
                let stem = k.stem();
                for (ext, bytes) in [("ptx", c.ptx.as_bytes()), ("cubin", &c.cubin[..])] {
                    let p = dir.join(format!("{stem}.{arch}.{ext}"));
                    std::fs::write(&p, bytes)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
            }
        }
    }
    if let Some(dir) = &a.out {
        for k in KERNELS {
            let p = dir.join(format!("{}.sha256", k.stem()));
            std::fs::write(&p, k.source_sha256() + "\n")
                .with_context(|| format!("writing {}", p.display()))?;
        }
        println!(
            "wrote PTX, CUBIN and source hashes to {} (usable as MIXATLAS_KERNEL_DIR)",
            dir.display()
        );
    }
    if failures > 0 {
        bail!("{failures} kernel compilations did not produce the expected PTX/CUBIN");
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn check(a: CheckArgs) -> Result<()> {
    use anyhow::{bail, Context};
    use mixatlas::gpu::check::{run, CheckConfig};
    if a.runs < 20 {
        bail!("--runs {}: expected at least 20", a.runs);
    }
    let tmp;
    let work_dir = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    let cfg = CheckConfig {
        work_dir: work_dir.clone(),
        batch: a.batch,
        seq_len: a.seq_len,
        runs: a.runs,
        seed: a.seed,
        allreduce_elems: a.allreduce_elems,
        train_log: a.train_log.clone(),
    };
    let result = run(&cfg);
    if a.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let report = result?;
    let md = report.markdown();
    println!("{md}");
    if let Some(p) = &a.out_md {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    if report.failed() {
        bail!("some GPU checks failed (see the table)");
    }
    Ok(())
}

/// A fresh directory under the system temporary directory.
#[cfg(feature = "cuda")]
fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("mixatlas-gpu-check-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
