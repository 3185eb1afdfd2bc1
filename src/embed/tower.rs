//! The CLIP vision tower of Hugging Face `CLIPVisionModelWithProjection`, in candle: patch
//! embedding (a stride-`patch` convolution without bias, computed as a matmul over flattened
//! patches), class and position embeddings, `pre_layrnorm`, pre-norm encoder layers (attention
//! with biases, MLP with `hidden_act`), `post_layernorm` on the CLS token and the bias-free
//! `visual_projection`. Weights come from `model.safetensors` under HF's key names (F32, F16 or
//! BF16, computed in F32). On the CPU the forward pass is [`super::cpu_tower`]'s (the same
//! equations in fused parallel loops); on CUDA, and from [`ClipVision::load_candle`], candle ops.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::LayerNorm;
use safetensors::SafeTensors;

use super::config::{Activation, ClipVisionConfig};
use super::cpu_tower::{CpuLayer, CpuTower, Linear, Norm};
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
    device: Device,
    imp: Imp,
}

/// How the forward pass runs: fused loops on the CPU ([`super::cpu_tower`]), candle ops
/// elsewhere (CUDA) or when asked for ([`ClipVision::load_candle`]).
#[derive(Debug)]
enum Imp {
    Cpu(CpuTower),
    Candle(CandleTower),
}

/// The tower as candle tensors on its device.
#[derive(Debug)]
struct CandleTower {
    /// `[3·patch², hidden]`: the patch convolution as a matmul over flattened patches.
    patch_t: Tensor,
    /// `[1 + num_patches, hidden]`: position embeddings with the class embedding added to row 0.
    embed_add: Tensor,
    pre_ln: LayerNorm,
    layers: Vec<Layer>,
    post_ln: LayerNorm,
    /// `[hidden, projection_dim]`.
    proj_t: Tensor,
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
    /// Loads the tower from the bytes of `model.safetensors` (`path` names it in errors). On
    /// the CPU the forward pass runs [`super::cpu_tower`]'s fused loops, elsewhere candle ops.
    pub fn load(
        cfg: &ClipVisionConfig,
        bytes: &[u8],
        path: &Path,
        device: &Device,
    ) -> Result<Self, EmbedError> {
        let tower = CandleTower::load(cfg, bytes, path, device)?;
        let imp = if device.is_cpu() {
            Imp::Cpu(tower.into_cpu(cfg)?)
        } else {
            Imp::Candle(tower)
        };
        Ok(ClipVision {
            cfg: cfg.clone(),
            device: device.clone(),
            imp,
        })
    }

    /// Like [`ClipVision::load`], but the forward pass runs candle ops on every device (what
    /// CUDA runs); a reference for the CPU path.
    pub fn load_candle(
        cfg: &ClipVisionConfig,
        bytes: &[u8],
        path: &Path,
        device: &Device,
    ) -> Result<Self, EmbedError> {
        Ok(ClipVision {
            cfg: cfg.clone(),
            device: device.clone(),
            imp: Imp::Candle(CandleTower::load(cfg, bytes, path, device)?),
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
        match &self.imp {
            Imp::Candle(t) => t.forward(&self.cfg, pixels),
            Imp::Cpu(t) => {
                let (b, _, _, _) = pixels.dims4()?;
                let px = pixels.flatten_all()?.to_vec1::<f32>()?;
                let (embeds, hidden) = t.forward(&px, b);
                let tokens = 1 + self.cfg.num_patches();
                Ok(TowerOutput {
                    image_embeds: Tensor::from_vec(
                        embeds,
                        (b, self.cfg.projection_dim),
                        &Device::Cpu,
                    )?,
                    last_hidden: Tensor::from_vec(
                        hidden,
                        (b, tokens, self.cfg.hidden_size),
                        &Device::Cpu,
                    )?,
                })
            }
        }
    }
}

impl CandleTower {
    fn load(
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
        Ok(CandleTower {
            patch_t,
            embed_add,
            pre_ln,
            layers,
            post_ln,
            proj_t: proj.t()?.contiguous()?,
        })
    }

    /// The same weights in plain vectors for [`CpuTower`], layer by layer (each layer's
    /// tensors are dropped once copied).
    fn into_cpu(self, cfg: &ClipVisionConfig) -> Result<CpuTower, EmbedError> {
        fn v(t: &Tensor) -> Result<Vec<f32>, EmbedError> {
            Ok(t.flatten_all()?.to_vec1::<f32>()?)
        }
        fn norm(n: &LayerNorm) -> Result<Norm, EmbedError> {
            let b = n
                .bias()
                .ok_or_else(|| candle_core::Error::Msg("layer norm without bias".into()))?;
            Ok(Norm {
                w: v(n.weight())?,
                b: v(b)?,
                eps: n.eps(),
            })
        }
        fn lin(w: &Tensor, b: &Tensor) -> Result<Linear, EmbedError> {
            let (inp, out) = w.dims2()?;
            Ok(Linear {
                w: v(w)?,
                b: v(b)?,
                inp,
                out,
            })
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in self.layers {
            layers.push(CpuLayer {
                ln1: norm(&l.ln1)?,
                qkv: lin(&l.qkv_t, &l.qkv_b)?,
                out: lin(&l.out_t, &l.out_b)?,
                ln2: norm(&l.ln2)?,
                fc1: lin(&l.fc1_t, &l.fc1_b)?,
                fc2: lin(&l.fc2_t, &l.fc2_b)?,
            });
        }
        Ok(CpuTower {
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            patch: cfg.patch_size,
            image_size: cfg.image_size,
            act: cfg.activation(),
            patch_w: v(&self.patch_t)?,
            embed_add: v(&self.embed_add)?,
            pre_ln: norm(&self.pre_ln)?,
            layers,
            post_ln: norm(&self.post_ln)?,
            proj: v(&self.proj_t)?,
            proj_dim: cfg.projection_dim,
        })
    }

    fn forward(&self, cfg: &ClipVisionConfig, pixels: &Tensor) -> Result<TowerOutput, EmbedError> {
        let (b, _, s, _) = pixels.dims4()?;
        let (p, h) = (cfg.patch_size, cfg.hidden_size);
        let g = s / p;
        // [B, 3, g, p, g, p] → [B, g, g, 3, p, p]: each row one patch in the conv weight's order.
        let patches = pixels
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, 3 * p * p))?;
        let emb = patches.matmul(&self.patch_t)?.reshape((b, g * g, h))?;
        let zeros = Tensor::zeros((b, 1, h), DType::F32, pixels.device())?;
        let x = Tensor::cat(&[&zeros, &emb], 1)?.broadcast_add(&self.embed_add)?;
        let mut x = self.pre_ln.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(cfg, &x)?;
        }
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.post_ln.forward(&cls)?;
        let image_embeds = pooled.matmul(&self.proj_t)?;
        Ok(TowerOutput {
            image_embeds,
            last_hidden: x,
        })
    }
}

impl Layer {
    fn forward(&self, cfg: &ClipVisionConfig, x: &Tensor) -> Result<Tensor, EmbedError> {
        let l = self;
        let (b, t, h) = x.dims3()?;
        let nh = cfg.num_attention_heads;
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
        let y = match cfg.activation() {
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
    use std::collections::HashMap;

    /// `n` values in [-scale, scale) from a 64-bit LCG.
    fn values(n: usize, seed: &mut u64, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// A random checkpoint of `cfg`'s shapes under HF's key names, as safetensors bytes.
    fn checkpoint(cfg: &ClipVisionConfig) -> Vec<u8> {
        let (h, i, p) = (cfg.hidden_size, cfg.intermediate_size, cfg.patch_size);
        let t = 1 + cfg.num_patches();
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.patch_embedding.weight".into(), vec![h, 3, p, p]),
            ("embeddings.class_embedding".into(), vec![h]),
            ("embeddings.position_embedding.weight".into(), vec![t, h]),
        ];
        for ln in ["pre_layrnorm", "post_layernorm"] {
            shapes.push((format!("{ln}.weight"), vec![h]));
            shapes.push((format!("{ln}.bias"), vec![h]));
        }
        for l in 0..cfg.num_hidden_layers {
            let pre = format!("encoder.layers.{l}");
            for (name, out, inp) in [
                ("self_attn.q_proj", h, h),
                ("self_attn.k_proj", h, h),
                ("self_attn.v_proj", h, h),
                ("self_attn.out_proj", h, h),
                ("mlp.fc1", i, h),
                ("mlp.fc2", h, i),
            ] {
                shapes.push((format!("{pre}.{name}.weight"), vec![out, inp]));
                shapes.push((format!("{pre}.{name}.bias"), vec![out]));
            }
            for ln in ["layer_norm1", "layer_norm2"] {
                shapes.push((format!("{pre}.{ln}.weight"), vec![h]));
                shapes.push((format!("{pre}.{ln}.bias"), vec![h]));
            }
        }
        let mut seed = 7u64;
        let mut tensors: HashMap<String, Tensor> = shapes
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product();
                let mut v = values(n, &mut seed, 0.3);
                if name.ends_with("norm.weight")
                    || name.contains("norm1.weight")
                    || name.contains("norm2.weight")
                {
                    v.iter_mut().for_each(|x| *x += 1.0);
                }
                let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
                (format!("vision_model.{name}"), t)
            })
            .collect();
        let proj = values(cfg.projection_dim * h, &mut seed, 0.3);
        tensors.insert(
            "visual_projection.weight".into(),
            Tensor::from_vec(proj, (cfg.projection_dim, h), &Device::Cpu).unwrap(),
        );
        safetensors::serialize(&tensors, None).unwrap()
    }

    fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        let scale = b.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max);
        a.iter()
            .zip(&b)
            .map(|(x, y)| f64::from((x - y).abs()))
            .fold(0.0, f64::max)
            / scale
    }

    /// The fused CPU forward pass equals the candle ops path (itself checked against numpy in
    /// tests/embed.rs) for every activation, on odd sizes: 3 images, 17 tokens, 4 heads.
    #[test]
    fn cpu_forward_equals_candle_ops() {
        for act in ["quick_gelu", "gelu", "gelu_pytorch_tanh"] {
            let cfg = ClipVisionConfig {
                hidden_size: 32,
                intermediate_size: 48,
                projection_dim: 24,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                image_size: 64,
                patch_size: 16,
                hidden_act: act.into(),
                ..ClipVisionConfig::default()
            };
            let bytes = checkpoint(&cfg);
            let path = Path::new("random.safetensors");
            let fast = ClipVision::load(&cfg, &bytes, path, &Device::Cpu).unwrap();
            let reference = ClipVision::load_candle(&cfg, &bytes, path, &Device::Cpu).unwrap();
            assert!(matches!(fast.imp, Imp::Cpu(_)));
            let mut seed = 11u64;
            let px = values(3 * 3 * 64 * 64, &mut seed, 2.0);
            let px = Tensor::from_vec(px, (3, 3, 64, 64), &Device::Cpu).unwrap();
            let (a, b) = (fast.forward(&px).unwrap(), reference.forward(&px).unwrap());
            assert_eq!(a.image_embeds.dims(), &[3, 24]);
            assert_eq!(a.last_hidden.dims(), &[3, 17, 32]);
            let e = rel_err(&a.image_embeds, &b.image_embeds);
            let hdn = rel_err(&a.last_hidden, &b.last_hidden);
            assert!(
                e < 1e-5 && hdn < 1e-5,
                "{act}: embeds {e:e}, hidden {hdn:e}"
            );
        }
    }

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
