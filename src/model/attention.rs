//! Grouped-query causal self-attention with Qwen2's q/k/v biases.
//!
//! Query heads that share a key/value head are stacked along the sequence axis
//! (`[B, n_kv, g·T, hd]`), so keys and values are never repeated in memory and one batched
//! matmul per product serves a whole group. Softmax is candle's differentiable composition.
//! With `mask = None` everything between the projections and `o_proj` (head split, rope,
//! scores, causal softmax, weighted sum, head concatenation) is one fused kernel instead
//! ([`fused::attention`]), and the projections are [`fused::linear`].

use candle_core::{DType, Device, Result, Tensor, D};

use super::config::Qwen2Config;
use super::embedding::linear;
use super::fused;
use super::rotary::RotaryTables;
use super::weights::Params;

/// One layer's attention weights and shapes.
#[derive(Debug, Clone)]
pub struct Attention {
    wq: Tensor,
    bq: Tensor,
    wk: Tensor,
    bk: Tensor,
    wv: Tensor,
    bv: Tensor,
    wo: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// The additive causal mask for `group` query heads stacked along the sequence axis:
/// `[group·T, T]`, 0 where position `u ≤ t`, −∞ elsewhere.
pub fn causal_mask(t: usize, group: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut m = Vec::with_capacity(group * t * t);
    for _ in 0..group {
        for i in 0..t {
            m.extend((0..t).map(|j| if j <= i { 0.0f32 } else { f32::NEG_INFINITY }));
        }
    }
    Tensor::from_vec(m, (group * t, t), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

impl Attention {
    /// The attention of layer prefix `prefix` (e.g. `model.layers.0.self_attn`).
    pub fn new(params: &Params, cfg: &Qwen2Config, prefix: &str) -> Self {
        let p = |n: &str| params.get(&format!("{prefix}.{n}")).clone();
        Self {
            wq: p("q_proj.weight"),
            bq: p("q_proj.bias"),
            wk: p("k_proj.weight"),
            bk: p("k_proj.bias"),
            wv: p("v_proj.weight"),
            bv: p("v_proj.bias"),
            wo: p("o_proj.weight"),
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim(),
        }
    }

    /// `x`: normalised hidden states `[B·T, H]` of `b` rows → attention output `[B·T, H]`.
    /// `mask` comes from [`causal_mask`] with `group = heads / kv_heads` and selects the
    /// composition of elementary ops; `None` selects the fused kernel (CPU f32/f64 only, see
    /// [`fused::supported`]).
    pub fn forward(
        &self,
        x: &Tensor,
        b: usize,
        t: usize,
        rope: &RotaryTables,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (hd, nh, nkv) = (self.head_dim, self.heads, self.kv_heads);
        let Some(mask) = mask else {
            let q = fused::linear(x, &self.wq, Some(&self.bq))?;
            let k = fused::linear(x, &self.wk, Some(&self.bk))?;
            let v = fused::linear(x, &self.wv, Some(&self.bv))?;
            let (cos, sin) = rope.half_tables();
            let shape = fused::AttentionShape {
                batch: b,
                seq_len: t,
                heads: nh,
                kv_heads: nkv,
            };
            let o = fused::attention(&q, &k, &v, shape, cos, sin)?;
            return fused::linear(&o, &self.wo, None);
        };
        let group = nh / nkv;
        let split = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = split(linear(x, &self.wq, Some(&self.bq))?, nh)?;
        let k = split(linear(x, &self.wk, Some(&self.bk))?, nkv)?;
        let v = split(linear(x, &self.wv, Some(&self.bv))?, nkv)?;
        let q = rope.apply(&q)?.reshape((b, nkv, group * t, hd))?;
        let k = rope.apply(&k)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let o = probs
            .matmul(&v)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * t, nh * hd))?;
        linear(&o, &self.wo, None)
    }
}
