//! The LLaVA-1.5 vision projector (`mlp2x_gelu`): `linear → GELU (erf) → linear`, mapping image
//! patch features (`mm_hidden_size`) to the hidden size.

use candle_core::{Result, Tensor};

use super::embedding::linear_as;
use super::weights::Params;

/// Exact GELU, `x · ½ (1 + erf(x/√2))`, composed from `erf` because candle's fused
/// `gelu_erf` backward uses a 6-digit constant for 1/√(2π) (relative gradient error ~1e-6,
/// caught by the finite-difference test).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let cdf = ((x / std::f64::consts::SQRT_2)?.erf()? + 1.0)?;
    (x * 0.5)? * cdf
}

/// Projector weights (`model.mm_projector.{0,2}`).
#[derive(Debug, Clone)]
pub struct Projector {
    w0: Tensor,
    b0: Tensor,
    w2: Tensor,
    b2: Tensor,
}

impl Projector {
    /// The projector, when the configuration has one.
    pub fn new(params: &Params) -> Self {
        let p = |n: &str| params.get(&format!("model.mm_projector.{n}")).clone();
        Self {
            w0: p("0.weight"),
            b0: p("0.bias"),
            w2: p("2.weight"),
            b2: p("2.bias"),
        }
    }

    /// `features`: `[M, D]` → `[M, H]`; `fused` uses [`super::fused::linear`].
    pub fn forward(&self, features: &Tensor, fused: bool) -> Result<Tensor> {
        let h = gelu_erf(&linear_as(features, &self.w0, Some(&self.b0), fused)?)?;
        linear_as(&h, &self.w2, Some(&self.b2), fused)
    }
}
