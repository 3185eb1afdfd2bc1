//! RMSNorm, `x / √(mean(x²) + ε) · g`, differentiable.
//!
//! candle's fused `rms_norm` passes no gradient (CRATES.md), so this is a composition of
//! elementary ops, computed in f32 for half-precision inputs (as Hugging Face does).

use candle_core::{DType, Result, Tensor, D};

/// RMSNorm over the last dimension of `x` with gain `g` (`[H]`).
pub fn rms_norm(x: &Tensor, g: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = match dtype {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    };
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.to_dtype(dtype)?.broadcast_mul(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_definition_and_passes_gradient() {
        let dev = Device::Cpu;
        let xs = [1.0f64, -2.0, 3.0, 0.5, 0.0, 4.0];
        let x = Var::from_vec(xs.to_vec(), (2, 3), &dev).unwrap();
        let g = Var::from_vec(vec![1.0f64, 2.0, -1.0], 3, &dev).unwrap();
        let y = rms_norm(&x, &g, 1e-6).unwrap();
        let got: Vec<Vec<f64>> = y.to_vec2().unwrap();
        for r in 0..2 {
            let row = &xs[r * 3..r * 3 + 3];
            let ms = row.iter().map(|v| v * v).sum::<f64>() / 3.0;
            for c in 0..3 {
                let want = row[c] / (ms + 1e-6).sqrt() * [1.0, 2.0, -1.0][c];
                assert!((got[r][c] - want).abs() < 1e-12);
            }
        }
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_some() && grads.get(&g).is_some());
    }
}
