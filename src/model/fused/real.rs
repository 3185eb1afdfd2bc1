//! The float element types the fused kernels are written for ([`Real`]: f32 and f64) and the
//! few elementwise primitives they need in a fixed, vectorisable order: a library-free `e^x`
//! for f32 and an order-fixed sum, so results are the same bits every run.

use candle_core::WithDType;

/// Float element types the fused kernels are written for (f32 and f64).
pub trait Real: WithDType {
    /// `e^x`.
    fn exp_(self) -> Self;
    /// Natural logarithm.
    fn ln_(self) -> Self;
    /// Square root.
    fn sqrt_(self) -> Self;
    /// `x ← e^x` for every element (f32: a polynomial the compiler vectorises, ~1 ulp; f64:
    /// the standard library's).
    fn exp_slice(xs: &mut [Self]) {
        for x in xs {
            *x = x.exp_();
        }
    }
    /// Sum in a fixed order (eight interleaved partial sums, then those in order), so that it
    /// vectorises and still gives the same bits every run.
    fn sum_slice(xs: &[Self]) -> Self {
        let zero = Self::from_f64(0.0);
        let mut acc = [zero; 8];
        let mut chunks = xs.chunks_exact(8);
        for c in &mut chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        let mut s = zero;
        for a in acc {
            s += a;
        }
        for &x in chunks.remainder() {
            s += x;
        }
        s
    }
}

/// `e^x` in f32 without a library call (Cephes' `expf`: `x = n ln 2 + r`, degree-6 polynomial
/// in `r`, `2^n` from the exponent bits), within ~2 ulp of `f32::exp` on `[−87, 88]`;
/// clamped to that range (so `e^(−∞)` gives ~1e−38, not 0).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    // Round to nearest by adding and subtracting 1.5·2²³ (vectorises without SSE4.1).
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

impl Real for f32 {
    fn exp_(self) -> Self {
        self.exp()
    }
    fn exp_slice(xs: &mut [Self]) {
        for x in xs {
            *x = exp_f32(*x);
        }
    }
    fn ln_(self) -> Self {
        self.ln()
    }
    fn sqrt_(self) -> Self {
        self.sqrt()
    }
}

impl Real for f64 {
    fn exp_(self) -> Self {
        self.exp()
    }
    fn ln_(self) -> Self {
        self.ln()
    }
    fn sqrt_(self) -> Self {
        self.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::Real;

    #[test]
    fn fast_exp_is_within_a_few_ulp() {
        let mut worst = 0.0f64;
        let xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + i as f32 * 175.0 / 200_000.0)
            .collect();
        let mut ys = xs.clone();
        f32::exp_slice(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            worst = worst.max((y as f64 - want).abs() / want);
        }
        assert!(
            worst < 3.0 * f32::EPSILON as f64,
            "relative error {worst:e}"
        );
        let mut edge = [f32::NEG_INFINITY, -1e30, 0.0, 1e30];
        f32::exp_slice(&mut edge);
        assert!(edge[0] < 1e-37 && edge[1] < 1e-37 && edge[2] == 1.0 && edge[3] > 1e38);
    }
}
