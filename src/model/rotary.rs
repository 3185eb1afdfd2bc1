//! Rotary position embeddings (Hugging Face Qwen2's `rotate_half` convention), differentiable.
//!
//! candle's fused rope kernels pass no gradient (CRATES.md); this applies the rotation with
//! elementary ops on precomputed cos/sin tables.

use candle_core::{DType, Device, Result, Tensor, D};

/// cos/sin tables for positions `0..T`, each `[T, head_dim]` (the half-size table repeated).
#[derive(Debug, Clone)]
pub struct RotaryTables {
    cos: Tensor,
    sin: Tensor,
    /// Half-size tables `[T, hd/2]` in f64 (the values `cos`/`sin` were cast from), for the
    /// fused attention kernel.
    cos_half: Vec<f64>,
    sin_half: Vec<f64>,
}

impl RotaryTables {
    /// Tables for `seq_len` positions with base `theta`, computed in f64 then cast to `dtype`.
    pub fn new(
        head_dim: usize,
        seq_len: usize,
        theta: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let mut cos_half = Vec::with_capacity(seq_len * half);
        let mut sin_half = Vec::with_capacity(seq_len * half);
        for t in 0..seq_len {
            for i in 0..half {
                let inv_freq = theta.powf(-2.0 * i as f64 / head_dim as f64);
                let a = t as f64 * inv_freq;
                cos_half.push(a.cos());
                sin_half.push(a.sin());
            }
        }
        let full = |h: &[f64]| -> Vec<f64> {
            h.chunks(half.max(1))
                .take(seq_len)
                .flat_map(|row| row.iter().chain(row.iter()).copied())
                .collect()
        };
        let (cos, sin) = (full(&cos_half), full(&sin_half));
        let mk = |v: Vec<f64>| {
            Tensor::from_vec(v, (seq_len, head_dim), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)
        };
        Ok(Self {
            cos: mk(cos)?,
            sin: mk(sin)?,
            cos_half,
            sin_half,
        })
    }

    /// Half-size cos/sin tables `[T, head_dim/2]`, row-major, in f64.
    pub fn half_tables(&self) -> (&[f64], &[f64]) {
        (&self.cos_half, &self.sin_half)
    }

    /// Number of positions covered.
    pub fn len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Whether the tables cover no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rotates `x` of shape `[B, heads, T, head_dim]` (T ≤ the tables' length).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(2)?;
        let hd = x.dim(D::Minus1)?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
        let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }
}
