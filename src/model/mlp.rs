//! The SwiGLU MLP of Qwen2: `down(silu(gate(x)) ⊙ up(x))`, no biases.

use candle_core::{Result, Tensor};

use super::embedding::linear;
use super::Params;

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

    /// `x`: `[N, H]` → `[N, H]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = candle_nn::ops::silu(&linear(x, &self.gate, None)?)?;
        let u = linear(x, &self.up, None)?;
        linear(&(g * u)?, &self.down, None)
    }
}
