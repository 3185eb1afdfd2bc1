//! Parameters: the list of named tensors a configuration implies, random initialisation, and
//! Hugging Face-style checkpoint directories (`config.json` + `model.safetensors`, or shards
//! listed in `model.safetensors.index.json`) in both directions.
//!
//! Parameters are candle `Var`s kept in the order of [`param_specs`], so initialisation,
//! optimiser state and checkpoints are deterministic. Loading checks every name and shape and
//! names the tensor and both shapes on a mismatch.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};

use super::config::Qwen2Config;
use super::error::ModelError;
use crate::fsutil::{IoContext, StagingDir};
use crate::rng::SplitMix64;

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// All zeros (biases).
    Zeros,
    /// All ones (RMSNorm gains).
    Ones,
}

/// One parameter's name (Hugging Face Qwen2 naming), shape and initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Safetensors name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape (`[out, in]` for linear weights, as PyTorch).
    pub shape: Vec<usize>,
    /// Initialisation.
    pub init: Init,
}

impl ParamSpec {
    /// Whether AdamW's weight decay applies (not to biases and norm gains: 1-D tensors).
    pub fn decays(&self) -> bool {
        self.shape.len() >= 2
    }

    /// Whether the parameter belongs to the vision projector.
    pub fn is_projector(&self) -> bool {
        self.name.starts_with("model.mm_projector.")
    }
}

/// Every parameter of `cfg`, in a fixed order.
pub fn param_specs(cfg: &Qwen2Config) -> Vec<ParamSpec> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let hd = cfg.head_dim();
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let std = Init::Normal(cfg.initializer_range);
    let mut out = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, init: Init| out.push(ParamSpec { name, shape, init });
    push("model.embed_tokens.weight".into(), vec![v, h], std);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        push(format!("{p}.input_layernorm.weight"), vec![h], Init::Ones);
        for (n, out_dim) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            push(format!("{p}.self_attn.{n}.weight"), vec![out_dim, h], std);
            push(
                format!("{p}.self_attn.{n}.bias"),
                vec![out_dim],
                Init::Zeros,
            );
        }
        push(format!("{p}.self_attn.o_proj.weight"), vec![h, q], std);
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Init::Ones,
        );
        push(format!("{p}.mlp.gate_proj.weight"), vec![i, h], std);
        push(format!("{p}.mlp.up_proj.weight"), vec![i, h], std);
        push(format!("{p}.mlp.down_proj.weight"), vec![h, i], std);
    }
    push("model.norm.weight".into(), vec![h], Init::Ones);
    if !cfg.tie_word_embeddings {
        push("lm_head.weight".into(), vec![v, h], std);
    }
    if let Some(d) = cfg.mm_hidden_size {
        push("model.mm_projector.0.weight".into(), vec![h, d], std);
        push("model.mm_projector.0.bias".into(), vec![h], Init::Zeros);
        push("model.mm_projector.2.weight".into(), vec![h, h], std);
        push("model.mm_projector.2.bias".into(), vec![h], Init::Zeros);
    }
    out
}

impl Qwen2Config {
    /// Number of parameters (the sizes of [`param_specs`]). Defined here, beside the
    /// parameter list, so that `config.rs` does not import this file.
    pub fn num_params(&self) -> usize {
        param_specs(self)
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    /// [`Qwen2Config::num_params`], or `None` when the count overflows `usize` (sizes no
    /// real model has: a corrupt or hostile `config.json`).
    pub fn checked_num_params(&self) -> Option<usize> {
        param_specs(self).iter().try_fold(0usize, |n, s| {
            n.checked_add(s.shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d))?)
        })
    }
}

/// The model's parameters: named `Var`s in [`param_specs`] order.
#[derive(Debug, Clone)]
pub struct Params {
    specs: Vec<ParamSpec>,
    vars: Vec<Var>,
    index: HashMap<String, usize>,
}

/// Draws the initial values of one parameter (f64, row-major) from `rng`.
fn init_values(spec: &ParamSpec, rng: &mut SplitMix64) -> Vec<f64> {
    let n: usize = spec.shape.iter().product();
    match spec.init {
        Init::Normal(std) => (0..n).map(|_| std * rng.normal()).collect(),
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
    }
}

impl Params {
    fn from_tensors(specs: Vec<ParamSpec>, tensors: Vec<Tensor>) -> Result<Self, ModelError> {
        let vars = tensors
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let index = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Ok(Self { specs, vars, index })
    }

    /// Random initialisation (`docs/model.md`): each parameter draws from its own stream
    /// derived from `seed` and its position, so the values do not depend on the dtype, the
    /// device or on which other parameters exist before it.
    pub fn init(
        cfg: &Qwen2Config,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        let specs = param_specs(cfg);
        let tensors = specs
            .iter()
            .map(|s| init_tensor(s, seed, dtype, device))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_tensors(specs, tensors)
    }

    /// Loads a Hugging Face-style checkpoint directory for `cfg` (usually read from the same
    /// directory with [`read_config`]). Tensors are converted to `dtype`. A Qwen2 checkpoint
    /// without projector weights gets a freshly initialised projector (from `seed`); any other
    /// missing tensor, an unexpected one, or a shape mismatch is an error naming the tensor.
    pub fn load(
        dir: &Path,
        cfg: &Qwen2Config,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        let specs = param_specs(cfg);
        let files = weight_files(dir)?;
        let mut found: HashMap<String, (Tensor, PathBuf)> = HashMap::new();
        for file in &files {
            let map = candle_core::safetensors::load(file, &Device::Cpu).map_err(|source| {
                ModelError::Unreadable {
                    path: file.clone(),
                    source,
                }
            })?;
            for (name, t) in map {
                found.insert(name, (t, file.clone()));
            }
        }
        let want: HashMap<&str, &ParamSpec> = specs.iter().map(|s| (s.name.as_str(), s)).collect();
        // Sorted, so the first unexpected tensor reported is deterministic.
        let mut names: Vec<&String> = found.keys().collect();
        names.sort();
        for name in names {
            // Hugging Face keeps rotary tables as buffers in some exports; they are derived.
            if name.ends_with("rotary_emb.inv_freq") {
                continue;
            }
            if !want.contains_key(name.as_str()) {
                return Err(ModelError::UnexpectedTensor {
                    path: found[name].1.clone(),
                    name: name.clone(),
                });
            }
        }
        let mut tensors = Vec::with_capacity(specs.len());
        for spec in &specs {
            match found.remove(&spec.name) {
                Some((t, path)) => {
                    if t.dims() != spec.shape.as_slice() {
                        return Err(ModelError::ShapeMismatch {
                            path,
                            name: spec.name.clone(),
                            expected: spec.shape.clone(),
                            found: t.dims().to_vec(),
                        });
                    }
                    tensors.push(t.to_dtype(dtype)?.to_device(device)?);
                }
                None if spec.is_projector() => {
                    tensors.push(init_tensor(spec, seed, dtype, device)?);
                }
                None => {
                    return Err(ModelError::MissingTensor {
                        path: dir.to_path_buf(),
                        name: spec.name.clone(),
                    })
                }
            }
        }
        Self::from_tensors(specs, tensors)
    }

    /// The parameter specs, in order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The trainable variables, in [`Params::specs`] order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The tensor called `name`. Panics when the name does not exist (a programming error:
    /// names come from [`param_specs`]).
    #[track_caller]
    pub fn get(&self, name: &str) -> &Tensor {
        let i = *self
            .index
            .get(name)
            .unwrap_or_else(|| panic!("no parameter named {name:?}"));
        self.vars[i].as_tensor()
    }

    /// The parameters' dtype.
    pub fn dtype(&self) -> DType {
        self.vars[0].dtype()
    }

    /// The parameters' device.
    pub fn device(&self) -> &Device {
        self.vars[0].device()
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// Serialises the parameters as one safetensors file (Hugging Face's `{"format": "pt"}`
    /// metadata), in `dtype`.
    pub fn to_safetensors(&self, dtype: DType) -> Result<Vec<u8>, ModelError> {
        let tensors = self
            .vars
            .iter()
            .map(|v| {
                v.as_tensor()
                    .to_dtype(dtype)
                    .and_then(|t| t.to_device(&Device::Cpu))
                    .and_then(|t| t.contiguous())
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let data: Vec<(&str, &Tensor)> = self
            .specs
            .iter()
            .map(|s| s.name.as_str())
            .zip(tensors.iter())
            .collect();
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        safetensors::serialize(data, Some(meta)).map_err(|source| ModelError::Serialize {
            path: PathBuf::from("model.safetensors"),
            source,
        })
    }

    /// Writes `config.json` and `model.safetensors` into the existing directory `dir` (a
    /// staging directory: callers make the directory appear atomically).
    pub fn write_into(
        &self,
        dir: &Path,
        cfg: &Qwen2Config,
        dtype: DType,
    ) -> Result<(), ModelError> {
        let mut cfg = cfg.clone();
        cfg.torch_dtype = Some(torch_dtype_name(dtype).to_string());
        let json = serde_json::to_vec_pretty(&cfg).expect("config serialises");
        let path = dir.join("config.json");
        fs::write(&path, json).at("writing", &path)?;
        let path = dir.join("model.safetensors");
        fs::write(&path, self.to_safetensors(dtype)?).at("writing", &path)?;
        Ok(())
    }

    /// Saves a Hugging Face-style checkpoint directory atomically (built beside `dir`, fsync'd,
    /// renamed into place; an existing `dir` is replaced).
    pub fn save(&self, dir: &Path, cfg: &Qwen2Config, dtype: DType) -> Result<(), ModelError> {
        let staging = StagingDir::new(dir, true)?;
        self.write_into(staging.path(), cfg, dtype)?;
        staging.commit()?;
        Ok(())
    }
}

fn init_tensor(
    spec: &ParamSpec,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor, ModelError> {
    // A stream per parameter name (FNV-1a), independent of order and of the other parameters.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = SplitMix64::derive(seed, h);
    let values = init_values(spec, &mut rng);
    Ok(
        Tensor::from_vec(values, spec.shape.as_slice(), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?,
    )
}

/// The Hugging Face `torch_dtype` name of a candle dtype.
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

/// Reads `DIR/config.json`, accepting what Hugging Face transformers 4.x and 5.x write: θ as a
/// top-level `rope_theta` or inside `rope_parameters` (5.x), `num_key_value_heads` defaulting
/// to the head count. Sliding-window attention, rope scaling and a `head_dim` other than
/// `hidden_size / num_attention_heads` are rejected with the field named.
pub fn read_config(dir: &Path) -> Result<Qwen2Config, ModelError> {
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path).at("reading", &path)?;
    let bad = |reason: String| ModelError::BadCheckpoint {
        path: path.clone(),
        reason,
    };
    let json = |what: &'static str| {
        let path = path.clone();
        move |source| ModelError::BadJson { path, what, source }
    };
    let mut v: serde_json::Value = serde_json::from_str(&text).map_err(json("not valid JSON"))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| bad("expected a JSON object".into()))?;
    if let Some(rp) = obj.get("rope_parameters").cloned() {
        let kind = rp
            .get("rope_type")
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        if kind != "default" {
            return Err(bad(format!(
                "rope_parameters.rope_type {kind:?} is not supported (only plain RoPE)"
            )));
        }
        if !obj.contains_key("rope_theta") {
            if let Some(theta) = rp.get("rope_theta") {
                obj.insert("rope_theta".into(), theta.clone());
            }
        }
    }
    if obj.get("rope_scaling").is_some_and(|r| !r.is_null()) {
        return Err(bad("rope_scaling is not supported (only plain RoPE)".into()));
    }
    if obj.get("use_sliding_window").and_then(|x| x.as_bool()) == Some(true) {
        return Err(bad(
            "use_sliding_window = true is not supported (full causal attention only)".into(),
        ));
    }
    if !obj.contains_key("num_key_value_heads") {
        if let Some(h) = obj.get("num_attention_heads").cloned() {
            obj.insert("num_key_value_heads".into(), h);
        }
    }
    let head_dim = obj.get("head_dim").and_then(|x| x.as_u64());
    let cfg: Qwen2Config = serde_json::from_value(v).map_err(json("not a Qwen2 config.json"))?;
    if cfg.model_type != "qwen2" {
        return Err(bad(format!(
            "model_type is {:?}; only \"qwen2\" is supported",
            cfg.model_type
        )));
    }
    if let Some(hd) = head_dim {
        if hd as usize != cfg.hidden_size / cfg.num_attention_heads.max(1) {
            return Err(bad(format!(
                "head_dim {hd} differs from hidden_size / num_attention_heads; not supported"
            )));
        }
    }
    cfg.validate()?;
    if cfg.checked_num_params().is_none() {
        return Err(bad(format!(
            "vocab_size {}, hidden_size {}, intermediate_size {} and num_hidden_layers {} give \
             more than {} parameters",
            cfg.vocab_size,
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_hidden_layers,
            usize::MAX
        )));
    }
    Ok(cfg)
}

/// The safetensors files of a checkpoint directory: `model.safetensors`, or the shards of
/// `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(ModelError::BadCheckpoint {
            path: dir.to_path_buf(),
            reason: "no model.safetensors or model.safetensors.index.json".into(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = fs::read_to_string(&index).at("reading", &index)?;
    let idx: Index = serde_json::from_str(&text).map_err(|source| ModelError::BadJson {
        path: index.clone(),
        what: "not a safetensors index (expected a \"weight_map\")",
        source,
    })?;
    let mut files: Vec<String> = idx.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
    for f in &files {
        if !f.is_file() {
            return Err(ModelError::BadCheckpoint {
                path: index.clone(),
                reason: format!("names shard {} which does not exist", f.display()),
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz findings (issue 18): a `config.json` whose layer count sizes the parameter list
    /// without bound (it hung building it), or whose sizes overflow the parameter count, is a
    /// typed error naming the field, not a hang or a wrapped count.
    #[test]
    fn huge_config_sizes_are_typed_errors() {
        for (text, field) in [
            (
                include_str!("../../tests/fuzz/regressions/model_config/layers_1e18.json"),
                "num_hidden_layers",
            ),
            (
                include_str!("../../tests/fuzz/regressions/model_config/param_count_overflow.json"),
                "vocab_size 1099511627776",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("config.json"), text).unwrap();
            let msg = read_config(dir.path()).unwrap_err().to_string();
            assert!(msg.contains(field), "{msg}");
        }
        let preset = Qwen2Config::preset("qwen2-7b").unwrap();
        assert_eq!(preset.checked_num_params(), Some(preset.num_params()));
    }
}
