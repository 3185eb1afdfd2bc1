//! What the commands share: the distributed runtime ([`Dist`]: MPI under `mpirun`/`srun`,
//! else the single process), the compute device (`--device`), the model configuration for a
//! corpus (preset, checkpoint config, `--model-set` overrides) and the progress bar style.
//! Command files import this file, never one another.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use mixatlas::data::corpus::Corpus;
use mixatlas::dist::{broadcast_value, Communicator, LaunchEnv, SingleProcess};
use mixatlas::fsutil::lock::DirLock;
use mixatlas::model::weights::read_config;
use mixatlas::model::Qwen2Config;

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

/// Takes the writer lock of `dir` on rank 0, the rank that writes it, for as long as the
/// returned guard lives; the other ranks learn whether it was taken, so that every rank fails
/// at once rather than waiting in a collective for a rank 0 that has stopped.
pub fn lock_on_lead(
    world: &dyn Communicator,
    dir: &Path,
    force_unlock: bool,
) -> Result<Option<DirLock>> {
    let lead = world.rank() == 0;
    let taken = lead.then(|| DirLock::acquire(dir, force_unlock));
    if world.size() > 1 {
        let failed = taken
            .as_ref()
            .map(|r| r.as_ref().err().map(|e| e.to_string()));
        let failed: Option<String> = broadcast_value(world, failed.as_ref(), 0)?;
        if let (false, Some(e)) = (lead, failed) {
            bail!("rank 0 could not lock {}: {e}", dir.display());
        }
    }
    Ok(taken.transpose()?)
}

/// A progress bar of `total` items (`unit` "bytes" shows bytes and byte rates).
pub fn bar(total: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    let template = match unit {
        "bytes" => "{msg:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        _ => "{msg:>18} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}
