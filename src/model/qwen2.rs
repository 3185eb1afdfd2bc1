//! The Qwen2 decoder with image patches placed at image-token positions: the composition of
//! [`embedding`](super::embedding), [`norm`](super::norm), [`attention`](super::attention),
//! [`mlp`](super::mlp) and [`projector`](super::projector) (`docs/model.md`).

use candle_core::{DType, Device, Tensor};

use super::attention::{causal_mask, Attention};
use super::config::Qwen2Config;
use super::embedding::{embed, lm_head};
use super::error::ModelError;
use super::fused;
use super::mlp::Mlp;
use super::norm::rms_norm;
use super::projector::Projector;
use super::rotary::RotaryTables;
use super::weights::Params;

/// Image patches to place into a batch: `features` `[M, D]` and, per patch, the flat position
/// (`row · T + t`) whose token is the image token.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// Patch features `[M, D]` (any float dtype; cast to the model's).
    pub features: Tensor,
    /// Flat position of each patch in the `[B, T]` batch.
    pub positions: Vec<u32>,
}

/// How the tokens given to [`ImageInput::sequential`] are laid out: `rows × seq_len` tokens,
/// the image token, and the width `dim` of one patch feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRows {
    /// Rows `B` of the batch.
    pub rows: usize,
    /// Tokens per row `T`.
    pub seq_len: usize,
    /// The token each image patch replaces.
    pub image_token: u32,
    /// Width `D` of one patch feature.
    pub dim: usize,
}

impl ImageInput {
    /// Applies the sequential convention of `docs/model.md`: in each row, the k-th occurrence
    /// of `image_token` takes the k-th patch of that row's images. `images[r]` holds row r's
    /// patches (`patches_r × D`, row-major, f32 or f64). Errors when a row has more image
    /// tokens than patches.
    pub fn sequential<T: candle_core::WithDType>(
        tokens: &[u32],
        layout: ImageRows,
        images: &[Vec<T>],
        device: &Device,
    ) -> Result<Self, ModelError> {
        let ImageRows {
            rows: b,
            seq_len: t,
            image_token,
            dim,
        } = layout;
        let mut feats = Vec::new();
        let mut positions = Vec::new();
        for r in 0..b {
            let patches = images.get(r).map_or(0, |v| v.len() / dim);
            let mut k = 0;
            for p in 0..t {
                if tokens[r * t + p] == image_token {
                    if k >= patches {
                        return Err(ModelError::Input(format!(
                            "row {r} has more image tokens than image patches ({patches})"
                        )));
                    }
                    feats.extend_from_slice(&images[r][k * dim..(k + 1) * dim]);
                    positions.push((r * t + p) as u32);
                    k += 1;
                }
            }
        }
        let m = positions.len();
        Ok(Self {
            features: Tensor::from_vec(feats, (m, dim), device)?,
            positions,
        })
    }
}

/// The decoder: parameters viewed as layers.
#[derive(Debug, Clone)]
pub struct Qwen2Model {
    cfg: Qwen2Config,
    embed: Tensor,
    layers: Vec<(Tensor, Attention, Tensor, Mlp)>,
    norm: Tensor,
    head: Tensor,
    projector: Option<Projector>,
    fused: bool,
}

impl Qwen2Model {
    /// Builds the model over `params` (which must have been made for `cfg`).
    pub fn new(cfg: &Qwen2Config, params: &Params) -> Self {
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                (
                    params.get(&format!("{p}.input_layernorm.weight")).clone(),
                    Attention::new(params, cfg, &format!("{p}.self_attn")),
                    params
                        .get(&format!("{p}.post_attention_layernorm.weight"))
                        .clone(),
                    Mlp::new(params, &format!("{p}.mlp")),
                )
            })
            .collect();
        let embed = params.get("model.embed_tokens.weight").clone();
        let head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            params.get("lm_head.weight").clone()
        };
        Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: params.get("model.norm.weight").clone(),
            head,
            projector: cfg.mm_hidden_size.map(|_| Projector::new(params)),
            fused: true,
        }
    }

    /// Chooses between the fused kernels of [`fused`] (the default) and the compositions of
    /// elementary candle ops they replace (kept as the reference the kernels are tested
    /// against). The fused kernels only serve CPU f32/f64 models; others always compose.
    pub fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    /// Whether forward and loss use the fused kernels (asked for, and CPU f32/f64).
    pub fn fused(&self) -> bool {
        self.fused && fused::supported(&self.embed)
    }

    /// The configuration.
    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    /// Final hidden states `[B·T, H]` (after the last RMSNorm) for token ids `tokens`
    /// (`B × T`, row-major) and optional image patches.
    pub fn hidden(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        images: Option<&ImageInput>,
    ) -> Result<Tensor, ModelError> {
        let cfg = &self.cfg;
        if tokens.len() != b * t {
            return Err(ModelError::Input(format!(
                "{} token ids for a {b} × {t} batch",
                tokens.len()
            )));
        }
        if t > cfg.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "sequence length {t} exceeds max_position_embeddings {}",
                cfg.max_position_embeddings
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= cfg.vocab_size) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the model's vocabulary of {}",
                cfg.vocab_size
            )));
        }
        let device = self.embed.device();
        let dtype = self.embed.dtype();
        let ids = Tensor::from_slice(tokens, b * t, device)?;
        let mut h = embed(&self.embed, &ids)?;
        if let Some(img) = images.filter(|i| !i.positions.is_empty()) {
            let proj = self.projector.as_ref().ok_or_else(|| {
                ModelError::Input("image input given to a text-only model".into())
            })?;
            let patches = proj.forward(&img.features.to_dtype(dtype)?, self.fused())?;
            let n = (b * t) as u32;
            let mut src: Vec<u32> = (0..n).collect();
            for (m, &p) in img.positions.iter().enumerate() {
                if p >= n {
                    return Err(ModelError::Input(format!(
                        "image position {p} is outside the {b} × {t} batch"
                    )));
                }
                src[p as usize] = n + m as u32;
            }
            h = if self.fused() {
                fused::place_rows(&h, &patches, &img.positions)?
            } else {
                let src = Tensor::from_vec(src, b * t, device)?;
                Tensor::cat(&[&h, &patches], 0)?.index_select(&src, 0)?
            };
        }
        let hd = cfg.head_dim();
        let rope = RotaryTables::new(hd, t, cfg.rope_theta, dtype, device)?;
        let group = cfg.num_attention_heads / cfg.num_key_value_heads;
        let use_fused = self.fused();
        let mask = match use_fused {
            true => None,
            false => Some(causal_mask(t, group, dtype, device)?),
        };
        let eps = cfg.rms_norm_eps;
        let norm = |x: &Tensor, g: &Tensor| match use_fused {
            true => fused::rms_norm(x, g, eps),
            false => rms_norm(x, g, eps),
        };
        for (g_in, attn, g_post, mlp) in &self.layers {
            let a = norm(&h, g_in)?;
            h = (h + attn.forward(&a, b, t, &rope, mask.as_ref())?)?;
            let m = norm(&h, g_post)?;
            h = (h + mlp.forward(&m, use_fused)?)?;
        }
        Ok(norm(&h, &self.norm)?)
    }

    /// Logits `[N, V]` of hidden rows `h` (`[N, H]`).
    pub fn logits(&self, h: &Tensor) -> Result<Tensor, ModelError> {
        Ok(match self.fused() {
            true => fused::linear(h, &self.head, None)?,
            false => lm_head(h, &self.head)?,
        })
    }

    /// Logits `[B·T, V]` of every position.
    pub fn forward(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        images: Option<&ImageInput>,
    ) -> Result<Tensor, ModelError> {
        self.logits(&self.hidden(tokens, b, t, images)?)
    }

    /// Data type of the parameters.
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
}
