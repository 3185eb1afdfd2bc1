//! The CLIP vision tower of Hugging Face `CLIPVisionModelWithProjection`, in candle: patch
//! embedding (a stride-`patch` convolution without bias, computed as a matmul over flattened
//! patches), class and position embeddings, `pre_layrnorm`, pre-norm encoder layers (attention
//! with biases, MLP with `hidden_act`), `post_layernorm` on the CLS token and the bias-free
//! `visual_projection`. Weights come from `model.safetensors` under HF's key names (F32, F16 or
//! BF16, computed in F32).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::LayerNorm;
use safetensors::SafeTensors;

use super::config::{Activation, ClipVisionConfig};
use super::error::EmbedError;

/// The tower's outputs for a batch.
#[derive(Debug)]
pub struct TowerOutput {
    /// `[B, projection_dim]`: HF's `image_embeds`.
    pub image_embeds: Tensor,
    /// `[B, 1 + num_patches, hidden_size]`: HF's `last_hidden_state` (before `post_layernorm`).
    pub last_hidden: Tensor,
}

/// One pre-norm encoder layer.
#[derive(Debug)]
struct Layer {
    ln1: LayerNorm,
    /// `[hidden, 3·hidden]`: q, k, v projections side by side (q pre-scaled by `head_dim^-½`).
    qkv_t: Tensor,
    qkv_b: Tensor,
    out_t: Tensor,
    out_b: Tensor,
    ln2: LayerNorm,
    fc1_t: Tensor,
    fc1_b: Tensor,
    fc2_t: Tensor,
    fc2_b: Tensor,
}

/// The vision tower with its projection.
#[derive(Debug)]
pub struct ClipVision {
    cfg: ClipVisionConfig,
    /// `[3·patch², hidden]`: the patch convolution as a matmul over flattened patches.
    patch_t: Tensor,
    /// `[1 + num_patches, hidden]`: position embeddings with the class embedding added to row 0.
    embed_add: Tensor,
    pre_ln: LayerNorm,
    layers: Vec<Layer>,
    post_ln: LayerNorm,
    /// `[hidden, projection_dim]`.
    proj_t: Tensor,
    device: Device,
}

/// Loads named tensors from one safetensors file, checking shapes and dtypes.
struct Weights<'a> {
    st: SafeTensors<'a>,
    path: &'a Path,
    device: &'a Device,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, EmbedError> {
        let view = self
            .st
            .tensor(name)
            .map_err(|_| EmbedError::MissingTensor {
                path: self.path.to_path_buf(),
                name: name.to_string(),
            })?;
        if view.shape() != shape {
            return Err(EmbedError::ShapeMismatch {
                path: self.path.to_path_buf(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(EmbedError::Dtype {
                    path: self.path.to_path_buf(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, shape, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }

    fn layer_norm(&self, prefix: &str, hidden: usize, eps: f64) -> Result<LayerNorm, EmbedError> {
        let w = self.get(&format!("{prefix}.weight"), &[hidden])?;
        let b = self.get(&format!("{prefix}.bias"), &[hidden])?;
        Ok(LayerNorm::new(w, b, eps))
    }

    /// A linear layer's transposed weight `[in, out]` and bias `[out]`.
    fn linear(&self, prefix: &str, out: usize, inp: usize) -> Result<(Tensor, Tensor), EmbedError> {
        let w = self.get(&format!("{prefix}.weight"), &[out, inp])?;
        let b = self.get(&format!("{prefix}.bias"), &[out])?;
        Ok((w.t()?.contiguous()?, b))
    }
}

impl ClipVision {
    /// Loads the tower from the bytes of `model.safetensors` (`path` names it in errors).
    pub fn load(
        cfg: &ClipVisionConfig,
        bytes: &[u8],
        path: &Path,
        device: &Device,
    ) -> Result<Self, EmbedError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| EmbedError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let w = Weights { st, path, device };
        let (h, p, eps) = (cfg.hidden_size, cfg.patch_size, cfg.layer_norm_eps);
        let t = 1 + cfg.num_patches();
        let pre = "vision_model";
        let conv = w.get(
            &format!("{pre}.embeddings.patch_embedding.weight"),
            &[h, 3, p, p],
        )?;
        let patch_t = conv.reshape((h, 3 * p * p))?.t()?.contiguous()?;
        let class = w.get(&format!("{pre}.embeddings.class_embedding"), &[h])?;
        let pos = w.get(
            &format!("{pre}.embeddings.position_embedding.weight"),
            &[t, h],
        )?;
        let cls_row = (pos.narrow(0, 0, 1)? + class.reshape((1, h))?)?;
        let embed_add = Tensor::cat(&[&cls_row, &pos.narrow(0, 1, t - 1)?], 0)?;
        let pre_ln = w.layer_norm(&format!("{pre}.pre_layrnorm"), h, eps)?;
        let post_ln = w.layer_norm(&format!("{pre}.post_layernorm"), h, eps)?;
        let scale = 1.0 / ((h / cfg.num_attention_heads) as f64).sqrt();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{pre}.encoder.layers.{i}");
            let (q_t, q_b) = w.linear(&format!("{l}.self_attn.q_proj"), h, h)?;
            let (k_t, k_b) = w.linear(&format!("{l}.self_attn.k_proj"), h, h)?;
            let (v_t, v_b) = w.linear(&format!("{l}.self_attn.v_proj"), h, h)?;
            let (out_t, out_b) = w.linear(&format!("{l}.self_attn.out_proj"), h, h)?;
            let (fc1_t, fc1_b) = w.linear(&format!("{l}.mlp.fc1"), cfg.intermediate_size, h)?;
            let (fc2_t, fc2_b) = w.linear(&format!("{l}.mlp.fc2"), h, cfg.intermediate_size)?;
            layers.push(Layer {
                ln1: w.layer_norm(&format!("{l}.layer_norm1"), h, eps)?,
                qkv_t: Tensor::cat(&[&(q_t * scale)?, &k_t, &v_t], 1)?.contiguous()?,
                qkv_b: Tensor::cat(&[&(q_b * scale)?, &k_b, &v_b], 0)?,
                out_t,
                out_b,
                ln2: w.layer_norm(&format!("{l}.layer_norm2"), h, eps)?,
                fc1_t,
                fc1_b,
                fc2_t,
                fc2_b,
            });
        }
        let proj = w.get("visual_projection.weight", &[cfg.projection_dim, h])?;
        Ok(ClipVision {
            cfg: cfg.clone(),
            patch_t,
            embed_add,
            pre_ln,
            layers,
            post_ln,
            proj_t: proj.t()?.contiguous()?,
            device: device.clone(),
        })
    }

    /// The configuration the tower was built from.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the tower on `pixels`: `[B, 3, image_size, image_size]` float32.
    pub fn forward(&self, pixels: &Tensor) -> Result<TowerOutput, EmbedError> {
        let (b, _, s, _) = pixels.dims4()?;
        let (p, h) = (self.cfg.patch_size, self.cfg.hidden_size);
        let g = s / p;
        // [B, 3, g, p, g, p] → [B, g, g, 3, p, p]: each row one patch in the conv weight's order.
        let patches = pixels
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, 3 * p * p))?;
        let emb = patches.matmul(&self.patch_t)?.reshape((b, g * g, h))?;
        let zeros = Tensor::zeros((b, 1, h), DType::F32, &self.device)?;
        let x = Tensor::cat(&[&zeros, &emb], 1)?.broadcast_add(&self.embed_add)?;
        let mut x = self.pre_ln.forward(&x)?;
        for layer in &self.layers {
            x = self.layer(layer, &x)?;
        }
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.post_ln.forward(&cls)?;
        let image_embeds = pooled.matmul(&self.proj_t)?;
        Ok(TowerOutput {
            image_embeds,
            last_hidden: x,
        })
    }

    fn layer(&self, l: &Layer, x: &Tensor) -> Result<Tensor, EmbedError> {
        let (b, t, h) = x.dims3()?;
        let nh = self.cfg.num_attention_heads;
        let hd = h / nh;
        let y = l.ln1.forward(x)?.reshape((b * t, h))?;
        let qkv = y.matmul(&l.qkv_t)?.broadcast_add(&l.qkv_b)?;
        let heads = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(1, i * h, h)?
                .reshape((b, t, nh, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let scores = q.matmul(&k.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let attn = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * t, h))?;
        let attn = attn.matmul(&l.out_t)?.broadcast_add(&l.out_b)?;
        let x = (x + attn.reshape((b, t, h))?)?;
        let y = l.ln2.forward(&x)?.reshape((b * t, h))?;
        let y = y.matmul(&l.fc1_t)?.broadcast_add(&l.fc1_b)?;
        let y = match self.cfg.activation() {
            Activation::QuickGelu => (&y * candle_nn::ops::sigmoid(&(&y * 1.702)?)?)?,
            Activation::Gelu => y.gelu_erf()?,
            Activation::GeluTanh => y.gelu()?,
        };
        let y = y.matmul(&l.fc2_t)?.broadcast_add(&l.fc2_b)?;
        Ok((x + y.reshape((b, t, h))?)?)
    }
}

/// Row-wise mean of `last_hidden`'s patch tokens pooled to `rows` rows: a square `rows = q²`
/// pools the `g × g` grid adaptively to `q × q` (PyTorch's `adaptive_avg_pool2d` cells, row
/// major); any other `rows` pools the raster sequence adaptively (`adaptive_avg_pool1d`).
/// `patches` is one image's `[g·g, F]` rows; the result is `[rows, F]`.
pub fn pool_patches(patches: &[f32], grid: usize, dim: usize, rows: usize) -> Vec<f32> {
    let q = (rows as f64).sqrt().round() as usize;
    let mut out = vec![0f32; rows * dim];
    let mut add_rows = |dst: usize, idx: &mut dyn Iterator<Item = usize>| {
        let mut acc = vec![0f64; dim];
        let mut count = 0usize;
        for r in idx {
            for (a, v) in acc.iter_mut().zip(&patches[r * dim..(r + 1) * dim]) {
                *a += f64::from(*v);
            }
            count += 1;
        }
        for (o, a) in out[dst * dim..(dst + 1) * dim].iter_mut().zip(&acc) {
            *o = (a / count.max(1) as f64) as f32;
        }
    };
    if q * q == rows && q <= grid {
        for i in 0..q {
            let (y0, y1) = (i * grid / q, ((i + 1) * grid).div_ceil(q));
            for j in 0..q {
                let (x0, x1) = (j * grid / q, ((j + 1) * grid).div_ceil(q));
                let mut idx = (y0..y1).flat_map(|y| (x0..x1).map(move |x| y * grid + x));
                add_rows(i * q + j, &mut idx);
            }
        }
    } else {
        let n = grid * grid;
        for i in 0..rows {
            let (s, e) = (i * n / rows, ((i + 1) * n).div_ceil(rows));
            add_rows(i, &mut (s..e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_square_and_raster() {
        // 2×2 grid, F = 1, values 0..4.
        let p = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(pool_patches(&p, 2, 1, 1), vec![1.5]);
        assert_eq!(pool_patches(&p, 2, 1, 4), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(pool_patches(&p, 2, 1, 2), vec![0.5, 2.5]);
        assert_eq!(pool_patches(&p, 2, 1, 3), vec![0.5, 1.5, 2.5]);
    }
}
