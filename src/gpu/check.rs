//! `mixatlas gpu check`: the GPU machine's acceptance run, as one function with one table.
//!
//! On a fresh synthetic corpus it runs the fused sampling kernel into a poisoned output and
//! compares it bit for bit with the CPU sampler (i.i.d. and blend, u16 and u32 tokens, one
//! and two ranks, a `T` that is not a multiple of 4), times it with CUDA events against a
//! device-to-device `memcpy` moving the same bytes, runs an NCCL all-reduce on a 1-rank
//! communicator, and reads a training log from `--device cuda` when one is given.

use std::path::PathBuf;

use cudarc::driver::sys::CUevent_flags;

use super::device::{require_driver, GpuDevice};
use super::layout::{write_cells, CorpusLayout, StepParams};
use super::nccl::{nccl_present, NcclComm};
use super::sample::{DeviceBatch, DeviceCorpus, DeviceStep, FusedSampler};
use super::GpuError;
use crate::data::corpus::DocumentStore;
use crate::data::megatron::DType;
use crate::data::sampler::{Mode, Sampler, SamplerConfig};
use crate::dist::{LaunchEnv, ReduceOp, SingleProcess};
use crate::rng::SplitMix64;

/// What to run.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Directory for the synthetic corpora (created; removed by the caller).
    pub work_dir: PathBuf,
    /// Rows of the timed batch.
    pub batch: usize,
    /// Tokens per row of the timed batch.
    pub seq_len: usize,
    /// Timed repetitions (the median is reported).
    pub runs: usize,
    /// Seed of the corpora and the streams.
    pub seed: u64,
    /// Elements (f32) of the timed NCCL all-reduce.
    pub allreduce_elems: usize,
    /// A `train_log.jsonl` from `mixatlas train --device cuda`, reported when given.
    pub train_log: Option<PathBuf>,
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was checked.
    pub check: String,
    /// `PASS`, `FAIL`, `SKIP` or `INFO`.
    pub status: &'static str,
    /// Figures and reasons.
    pub detail: String,
}

/// The result table.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Lines in order.
    pub rows: Vec<Row>,
}

impl Report {
    fn push(&mut self, check: impl Into<String>, status: &'static str, detail: impl Into<String>) {
        let row = Row {
            check: check.into(),
            status,
            detail: detail.into(),
        };
        eprintln!("{:<44} {:<4}  {}", row.check, row.status, row.detail);
        self.rows.push(row);
    }

    /// Whether any line failed.
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.status == "FAIL")
    }

    /// The table as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| check | status | detail |\n| --- | --- | --- |\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                r.check,
                r.status,
                r.detail.replace('|', "\\|")
            ));
        }
        s
    }
}

/// Random mixture weights over `n` cells (one of them 0), summing to 1.
fn weights(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    let mut w: Vec<f64> = (0..n).map(|_| 0.05 + rng.next_f64()).collect();
    if n > 2 {
        w[1] = 0.0;
    }
    let s: f64 = w.iter().sum();
    w.iter_mut().for_each(|x| *x /= s);
    w
}

/// One synthetic corpus on the device, with what the comparisons need beside it.
struct Fixture<'a> {
    dev: &'a GpuDevice,
    kernel: &'a FusedSampler,
    corpus: &'a DeviceCorpus,
    cells: &'a [DocumentStore],
    /// Mixture weights over the cells.
    w: Vec<f64>,
}

impl Fixture<'_> {
    /// Runs `steps` steps of `cfg` on the GPU for every rank of `world` and compares each
    /// slice with the CPU sampler; `Ok(None)` when all are bit-identical.
    fn compare(
        &self,
        cfg: &SamplerConfig,
        world: usize,
        steps: usize,
    ) -> Result<Option<String>, GpuError> {
        let dev = self.dev;
        let mut samplers = Vec::with_capacity(world);
        for _ in 0..world {
            samplers.push(Sampler::new(self.cells, &self.w, cfg.clone())?);
        }
        for step in 0..steps {
            for (rank, s) in samplers.iter_mut().enumerate() {
                let p = StepParams::for_step(s, rank, world)?;
                let d = DeviceStep::upload(dev, &p)?;
                let mut out = DeviceBatch::alloc(dev, p.rows as usize, p.seq_len as usize)?;
                out.poison(dev)?;
                self.kernel.launch(dev, self.corpus, &d, &mut out)?;
                let got = out.download(dev)?;
                let cpu = s.next_batch(rank, world)?;
                if let Some(diff) = got.first_difference(&cpu) {
                    return Ok(Some(format!("step {step} rank {rank}/{world}: {diff}")));
                }
            }
        }
        Ok(None)
    }

    /// The bit-exact rows: i.i.d. and blend, one and two ranks, and a `T` that is not a
    /// multiple of 4, each compared over 3 steps.
    fn bit_exact(&self, cfg: &CheckConfig, tag: &str, report: &mut Report) -> Result<(), GpuError> {
        for mode in [Mode::Iid, Mode::Blend] {
            for (world, batch, seq_len) in [
                (1, cfg.batch, cfg.seq_len),
                (2, cfg.batch, cfg.seq_len),
                (1, 24, 1001),
            ] {
                let mut sc = SamplerConfig::new(batch, seq_len);
                sc.seed = cfg.seed;
                sc.mode = mode;
                sc.pad_token = 3;
                let name = format!("bit-exact {tag} {mode} B={batch} T={seq_len} world={world}");
                match self.compare(&sc, world, 3)? {
                    None => report.push(name, "PASS", "3 steps identical to the CPU sampler"),
                    Some(diff) => report.push(name, "FAIL", diff),
                }
            }
        }
        Ok(())
    }

    /// The bandwidth rows: the timed batch against a memcpy moving the same bytes.
    fn bandwidth(&self, cfg: &CheckConfig, report: &mut Report) -> Result<(), GpuError> {
        let (dev, kernel, corpus) = (self.dev, self.kernel, self.corpus);
        for mode in [Mode::Iid, Mode::Blend] {
            let mut sc = SamplerConfig::new(cfg.batch, cfg.seq_len);
            sc.seed = cfg.seed;
            sc.mode = mode;
            let s = Sampler::new(self.cells, &self.w, sc)?;
            let p = StepParams::for_step(&s, 0, 1)?;
            let step = DeviceStep::upload(dev, &p)?;
            let mut out = DeviceBatch::alloc(dev, p.rows as usize, p.seq_len as usize)?;
            let kernel_ms = time_ms(dev, cfg.runs, || {
                kernel.launch(dev, corpus, &step, &mut out)
            })?;
            let docs = out.download(dev)?.docs;
            let placed: u64 = docs.chunks(4).map(|d| d[3]).sum();
            let written = p.out_elems() as u64 * 5 + 32 * p.rows as u64;
            let read = placed * (corpus.token_bytes as u64 + 1) + 16 * p.rows as u64;
            let traffic = written + read;
            let memcpy_ms = memcpy_ms(dev, cfg.runs, (traffic / 2).max(1) as usize)?;
            let gbs = |ms: f32| traffic as f64 / (ms as f64 * 1e-3) / 1e9;
            let ratio = memcpy_ms as f64 / kernel_ms as f64;
            report.push(
                format!("bandwidth {mode} B={} T={}", cfg.batch, cfg.seq_len),
                if ratio >= 0.7 { "PASS" } else { "FAIL" },
                format!(
                    "kernel {:.1} µs = {:.0} GB/s ({} MB read+written); memcpy of the same bytes {:.1} µs = {:.0} GB/s; {:.0}% of memcpy (target ≥ 70%), median of {} timings of {LAUNCHES_PER_TIMING} back-to-back launches",
                    kernel_ms * 1e3,
                    gbs(kernel_ms),
                    traffic / 1_000_000,
                    memcpy_ms * 1e3,
                    gbs(memcpy_ms),
                    100.0 * ratio,
                    cfg.runs
                ),
            );
        }
        Ok(())
    }
}

/// Timed device-to-device copies of `half` bytes (see [`time_ms`]).
fn memcpy_ms(dev: &GpuDevice, runs: usize, half: usize) -> Result<f32, GpuError> {
    let src = dev
        .stream
        .alloc_zeros::<u8>(half)
        .map_err(|e| GpuError::driver("allocating the memcpy source", e))?;
    let mut dst = dev
        .stream
        .alloc_zeros::<u8>(half)
        .map_err(|e| GpuError::driver("allocating the memcpy target", e))?;
    time_ms(dev, runs, || {
        dev.stream
            .memcpy_dtod(&src, &mut dst)
            .map_err(|e| GpuError::driver("memcpy", e))
    })
}

/// Launches queued back to back per timing, so the device never waits for the host between
/// them and the figure is the device's time, not the launch latency.
const LAUNCHES_PER_TIMING: usize = 10;

/// Median over `runs` timings (CUDA events) of the mean milliseconds of one execution of `f`,
/// each timing covering [`LAUNCHES_PER_TIMING`] executions queued back to back on `dev`'s
/// stream.
fn time_ms(
    dev: &GpuDevice,
    runs: usize,
    mut f: impl FnMut() -> Result<(), GpuError>,
) -> Result<f32, GpuError> {
    let ev = || {
        dev.ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| GpuError::driver("creating an event", e))
    };
    let (start, end) = (ev()?, ev()?);
    f()?; // warm-up
    dev.synchronize()?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        start
            .record(&dev.stream)
            .map_err(|e| GpuError::driver("recording an event", e))?;
        for _ in 0..LAUNCHES_PER_TIMING {
            f()?;
        }
        end.record(&dev.stream)
            .map_err(|e| GpuError::driver("recording an event", e))?;
        let total = start
            .elapsed_ms(&end)
            .map_err(|e| GpuError::driver("reading an event", e))?;
        ms.push(total / LAUNCHES_PER_TIMING as f32);
    }
    let mut ms: Vec<f64> = ms.into_iter().map(f64::from).collect();
    Ok(crate::bench::median(&mut ms) as f32)
}

/// Runs every check; the table is returned even when some line fails (see
/// [`Report::failed`]). Errors only when the device cannot be used at all.
pub fn run(cfg: &CheckConfig) -> Result<Report, GpuError> {
    require_driver()?;
    let env = LaunchEnv::detect();
    let dev = GpuDevice::for_rank(&env)?;
    let mut report = Report::default();
    let kernel = load_kernel(&dev, &env, &mut report)?;
    // Bit-exact comparisons with the CPU sampler, and the bandwidth on u16 tokens.
    let t = cfg.seq_len as u64;
    let sizes = [400, 3, 150, 1, 700, 60, 1200, 9, 300, 500];
    for (dtype, tag) in [(DType::U16, "u16"), (DType::I32, "u32")] {
        let dir = cfg.work_dir.join(tag);
        let cells = write_cells(&dir, dtype, &sizes, 2 * t, cfg.seed)?;
        let layout = CorpusLayout::build(&cells)?;
        let corpus = DeviceCorpus::upload(&dev, &layout)?;
        let fixture = Fixture {
            dev: &dev,
            kernel: &kernel,
            corpus: &corpus,
            cells: &cells,
            w: weights(cells.len(), cfg.seed),
        };
        fixture.bit_exact(cfg, tag, &mut report)?;
        if dtype == DType::U16 {
            fixture.bandwidth(cfg, &mut report)?;
        }
    }
    nccl_row(&dev, cfg, &mut report);
    train_log_row(cfg, &mut report);
    Ok(report)
}

/// The device row and the kernel-load row; the loaded kernel.
fn load_kernel(
    dev: &GpuDevice,
    env: &LaunchEnv,
    report: &mut Report,
) -> Result<FusedSampler, GpuError> {
    let (major, minor) = dev.compute_capability()?;
    report.push(
        "device",
        "INFO",
        format!(
            "{} (ordinal {}, sm_{major}{minor}), local rank {}",
            dev.name()?,
            dev.ordinal(),
            env.local_rank
        ),
    );
    let kernel = FusedSampler::load(dev)?;
    let nvrtc = match super::nvrtc::nvrtc_version() {
        Ok((major, minor)) => format!("NVRTC {major}.{minor}"),
        Err(_) => "no NVRTC".to_string(),
    };
    report.push(
        "kernel load",
        "PASS",
        format!(
            "{} for {}: {} ({nvrtc})",
            super::FUSED_SAMPLE.file,
            kernel.arch,
            kernel.loaded_as
        ),
    );
    Ok(kernel)
}

/// NCCL: a communicator over this process's ranks (1 rank here), device and host paths.
fn nccl_row(dev: &GpuDevice, cfg: &CheckConfig, report: &mut Report) {
    if !nccl_present() {
        report.push(
            "NCCL all-reduce",
            "SKIP",
            "NCCL (libnccl.so) not found on the library path",
        );
    } else {
        match nccl_check(dev, cfg) {
            Ok(detail) => report.push("NCCL all-reduce (1 rank)", "PASS", detail),
            Err(e) => report.push("NCCL all-reduce (1 rank)", "FAIL", e.to_string()),
        }
    }
}

/// The row of a `--device cuda` training log, when one is given.
fn train_log_row(cfg: &CheckConfig, report: &mut Report) {
    match &cfg.train_log {
        None => report.push(
            "train --device cuda",
            "SKIP",
            "no training log given (needs a build with --features cuda-train, i.e. nvcc)",
        ),
        Some(path) => match crate::train::log::read_steps(path) {
            Ok(steps) if !steps.is_empty() => {
                let (first, last) = (&steps[0], &steps[steps.len() - 1]);
                let ok = last.loss.is_finite() && last.loss < first.loss;
                report.push(
                    "train --device cuda",
                    if ok { "PASS" } else { "FAIL" },
                    format!(
                        "{} steps, loss {:.3} → {:.3}, {:.0} tokens/s at the last step",
                        steps.len(),
                        first.loss,
                        last.loss,
                        last.tokens_per_s
                    ),
                );
            }
            Ok(_) => report.push(
                "train --device cuda",
                "FAIL",
                format!("{}: no steps", path.display()),
            ),
            Err(e) => report.push("train --device cuda", "FAIL", e.to_string()),
        },
    }
}

fn nccl_check(dev: &GpuDevice, cfg: &CheckConfig) -> Result<String, GpuError> {
    use crate::dist::{BufMut, Communicator};
    let comm = NcclComm::new(Box::new(SingleProcess), dev)?;
    // Host path (what the CPU trainer calls).
    let mut host: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
    let want = host.clone();
    comm.all_reduce(BufMut::F32(&mut host), ReduceOp::Sum)?;
    if host != want {
        return Err(GpuError::Nccl {
            op: "all_reduce (host buffer)",
            rank: 0,
            reason: "a 1-rank sum changed the values".into(),
        });
    }
    // Device path, timed.
    let n = cfg.allreduce_elems.max(1);
    let mut buf = dev
        .stream
        .clone_htod(&vec![1.0f32; n])
        .map_err(|e| GpuError::driver("allocating the all-reduce buffer", e))?;
    let ms = time_ms(dev, cfg.runs, || {
        comm.all_reduce_device(&mut buf, ReduceOp::Sum)
    })?;
    let back = dev
        .stream
        .clone_dtoh(&buf)
        .map_err(|e| GpuError::driver("reading the all-reduce back", e))?;
    dev.synchronize()?;
    if back.iter().any(|&x| x != 1.0) {
        return Err(GpuError::Nccl {
            op: "all_reduce (device buffer)",
            rank: 0,
            reason: "a 1-rank sum changed the values".into(),
        });
    }
    let bytes = 4.0 * n as f64;
    Ok(format!(
        "{:.1} MB f32 in {:.1} µs = {:.0} GB/s algorithm bandwidth (median of {} timings of {LAUNCHES_PER_TIMING}); host-buffer path exact",
        bytes / 1e6,
        ms * 1e3,
        bytes / (ms as f64 * 1e-3) / 1e9,
        cfg.runs
    ))
}
