//! The SwiGLU MLP of Qwen2: `down(silu(gate(x)) ⊙ up(x))`, no biases.

use candle_core::{Result, Tensor};

use super::embedding::linear_as;
use super::fused;
use super::weights::Params;

/// One layer's MLP weights.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

impl Mlp {
    /// The MLP under the parameter prefix `prefix` (e.g. `model.layers.0.mlp`).
    pub fn new(params: &Params, prefix: &str) -> Self {
        let w = |n: &str| params.get(&format!("{prefix}.{n}.weight")).clone();
        Self {
            gate: w("gate_proj"),
            up: w("up_proj"),
            down: w("down_proj"),
        }
    }

    /// `x`: `[N, H]` → `[N, H]`; `fused` uses [`fused::linear`] and computes `silu(g) ⊙ u`
    /// with [`fused::swiglu`] (CPU f32/f64 only).
    pub fn forward(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let g = linear_as(x, &self.gate, None, fused)?;
        let u = linear_as(x, &self.up, None, fused)?;
        let gu = if fused {
            fused::swiglu(&g, &u)?
        } else {
            (candle_nn::ops::silu(&g)? * u)?
        };
        linear_as(&gu, &self.down, None, fused)
    }
}
