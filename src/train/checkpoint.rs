//! Checkpoints: model (Hugging Face layout), optimiser state, schedule position, sampler
//! state and seeds, written as one directory that appears atomically
//! (`checkpoints/step-00000100/`, built as a `.partial` sibling, fsync'd, renamed), keeping the
//! newest K.
//!
//! A checkpoint directory is also a loadable model (`config.json` + `model.safetensors`), so
//! `mixatlas score --checkpoint` and `--init-from` accept it directly.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::error::TrainError;
use super::optim::{AdamW, AdamWConfig};
use crate::data::sampler::SamplerState;
use crate::fsutil::{IoContext, StagingDir};
use crate::model::{Params, Qwen2Config};

/// Directory (inside a run directory) holding the checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// Trainer state file inside a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// Optimiser state file inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Version of [`TrainerState`].
pub const CHECKPOINT_VERSION: u32 = 1;

/// Everything besides tensors needed to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// `"mixatlas-checkpoint"`.
    pub format: String,
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Optimiser updates done.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// The run's configuration (a resumed run must use the same).
    pub train: TrainConfig,
    /// The mixture weights in manifest cell order.
    pub weights: Vec<f64>,
    /// The sampler's position.
    pub sampler: SamplerState,
    /// AdamW hyperparameters and update count.
    pub optimizer: AdamWConfig,
    /// AdamW's update count.
    pub optimizer_step: u64,
}

/// `step-00000100`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes a checkpoint for `state.step` under `run_dir/checkpoints/` and removes all but the
/// newest `keep` complete checkpoints.
pub fn save(
    run_dir: &Path,
    cfg: &Qwen2Config,
    params: &Params,
    opt: &AdamW,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    let root = run_dir.join(CHECKPOINT_DIR);
    let target = root.join(step_dir_name(state.step));
    let staging = StagingDir::new(&target, true)?;
    let dir = staging.path();
    params.write_into(dir, cfg, DType::F32)?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (i, spec) in params.specs().iter().enumerate() {
        for (kind, buf) in [
            ("master", &opt.master[i]),
            ("exp_avg", &opt.exp_avg[i]),
            ("exp_avg_sq", &opt.exp_avg_sq[i]),
        ] {
            tensors.push((
                format!("{kind}.{}", spec.name),
                Tensor::from_slice(buf, spec.shape.as_slice(), &Device::Cpu)?,
            ));
        }
    }
    let path = dir.join(OPTIMIZER_FILE);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| TrainError::CheckpointFile {
            path: path.clone(),
            what: "serialising optimiser state",
            source: Box::new(e),
        })?;
    fs::write(&path, bytes).at("writing", &path)?;
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(state).expect("trainer state serialises");
    fs::write(&path, json).at("writing", &path)?;
    let done = staging.commit()?;
    prune(&root, keep)?;
    Ok(done)
}

/// Complete checkpoints under `run_dir/checkpoints/`, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let root = run_dir.join(CHECKPOINT_DIR);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(&root).at("listing", &root)? {
        let entry = entry.at("listing", &root)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if entry.path().join(STATE_FILE).is_file() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn prune(root: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list(root.parent().unwrap_or(root))?;
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        fs::remove_dir_all(path).at("removing old checkpoint", path)?;
    }
    Ok(())
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// Where it was read from.
    pub dir: PathBuf,
    /// The model configuration it holds.
    pub config: Qwen2Config,
    /// Parameters.
    pub params: Params,
    /// Optimiser.
    pub optimizer: AdamW,
    /// The rest of the state.
    pub state: TrainerState,
}

/// Reads the checkpoint in `dir` onto `device` with parameters in `dtype`.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Loaded, TrainError> {
    let bad = |path: PathBuf, reason: String| TrainError::Checkpoint { path, reason };
    let state_path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&state_path).at("reading", &state_path)?;
    let file = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |e: Box<dyn std::error::Error + Send + Sync>| TrainError::CheckpointFile {
            path,
            what,
            source: e,
        }
    };
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| file(&state_path, "not a trainer state")(Box::new(e)))?;
    if state.format != "mixatlas-checkpoint" || state.version > CHECKPOINT_VERSION {
        return Err(bad(
            state_path,
            format!(
                "format {:?} version {} is not a checkpoint this build reads",
                state.format, state.version
            ),
        ));
    }
    let config = crate::model::weights::read_config(dir)?;
    let params = Params::load(dir, &config, state.train.seed, dtype, device)?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let map: HashMap<String, Tensor> = candle_core::safetensors::load(&opt_path, &Device::Cpu)
        .map_err(|e| file(&opt_path, "unreadable optimiser state")(Box::new(e)))?;
    let mut parts: [Vec<Vec<f32>>; 3] = Default::default();
    for spec in params.specs() {
        for (k, kind) in ["master", "exp_avg", "exp_avg_sq"].iter().enumerate() {
            let name = format!("{kind}.{}", spec.name);
            let t = map
                .get(&name)
                .ok_or_else(|| bad(opt_path.clone(), format!("tensor {name:?} is missing")))?;
            if t.dims() != spec.shape.as_slice() {
                return Err(bad(
                    opt_path.clone(),
                    format!(
                        "tensor {name:?} has shape {:?}, the model needs {:?}",
                        t.dims(),
                        spec.shape
                    ),
                ));
            }
            parts[k].push(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    let [master, exp_avg, exp_avg_sq] = parts;
    let optimizer = AdamW::from_parts(
        &params,
        state.optimizer,
        state.optimizer_step,
        master,
        exp_avg,
        exp_avg_sq,
    );
    Ok(Loaded {
        dir: dir.to_path_buf(),
        config,
        params,
        optimizer,
        state,
    })
}
