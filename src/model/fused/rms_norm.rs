//! Fused RMSNorm over the last dimension with its gain, `y = x · r · g`,
//! `r = 1/√(mean(x²) + ε)`; the gain gradient is summed from per-chunk partials in chunk order.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{read, slice, ROWS_PER_TASK};
use super::real::Real;

/// RMSNorm over the last dimension, `y = x · r · g` with `r = 1/√(mean(x²) + ε)`.
struct RmsNormOp {
    eps: f64,
}

impl RmsNormOp {
    fn forward<T: Real>(&self, x: &[T], g: &[T]) -> Vec<T> {
        let h = g.len();
        let mut y = vec![T::from_f64(0.0); x.len()];
        let eps = T::from_f64(self.eps);
        let n = T::from_f64(h as f64);
        y.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(h).zip(xc.chunks(h)) {
                    let mut ss = T::from_f64(0.0);
                    for &v in xr {
                        ss += v * v;
                    }
                    let r = T::from_f64(1.0) / (ss / n + eps).sqrt_();
                    for ((o, &v), &gv) in yr.iter_mut().zip(xr).zip(g) {
                        *o = v * r * gv;
                    }
                }
            });
        y
    }

    /// `dx = r·(dy·g − x̂·mean(dy·g·x̂))`, `dg = Σ_rows dy·x̂` (per-chunk partials summed in
    /// chunk order).
    fn backward<T: Real>(&self, x: &[T], g: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
        let h = g.len();
        let zero = T::from_f64(0.0);
        let eps = T::from_f64(self.eps);
        let n = T::from_f64(h as f64);
        let mut dx = vec![zero; x.len()];
        let partials: Vec<Vec<T>> = dx
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .zip(dy.par_chunks(h * ROWS_PER_TASK))
            .map(|((dxc, xc), dyc)| {
                let mut dg = vec![zero; h];
                for ((dxr, xr), dyr) in dxc.chunks_mut(h).zip(xc.chunks(h)).zip(dyc.chunks(h)) {
                    let mut ss = zero;
                    for &v in xr {
                        ss += v * v;
                    }
                    let r = T::from_f64(1.0) / (ss / n + eps).sqrt_();
                    let mut dot = zero;
                    for c in 0..h {
                        let xh = xr[c] * r;
                        dg[c] += dyr[c] * xh;
                        dot += dyr[c] * g[c] * xh;
                    }
                    let mean = dot / n;
                    for c in 0..h {
                        dxr[c] = r * (dyr[c] * g[c] - xr[c] * r * mean);
                    }
                }
                dg
            })
            .collect();
        let mut dg = vec![zero; h];
        for p in &partials {
            for (a, &b) in dg.iter_mut().zip(p) {
                *a += b;
            }
        }
        (dx, dg)
    }
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match s1.dtype() {
            DType::F32 => CpuStorage::F32(self.forward::<f32>(slice(s1, l1)?, slice(s2, l2)?)),
            DType::F64 => CpuStorage::F64(self.forward::<f64>(slice(s1, l1)?, slice(s2, l2)?)),
            dt => bail!("fused rms_norm: unsupported dtype {dt:?}"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (rx, rg, rd) = (read(x)?, read(g)?, read(&grad)?);
        macro_rules! run {
            ($t:ty) => {{
                let (dx, dg) = self.backward::<$t>(rx.get()?, rg.get()?, rd.get()?);
                (
                    Tensor::from_vec(dx, x.shape(), x.device())?,
                    Tensor::from_vec(dg, g.shape(), g.device())?,
                )
            }};
        }
        let (dx, dg) = match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused rms_norm: unsupported dtype {dt:?}"),
        };
        Ok((Some(dx), Some(dg)))
    }
}

/// Fused RMSNorm of `x` (`[…, H]`) with gain `g` (`[H]`). CPU f32/f64 only.
pub fn rms_norm(x: &Tensor, g: &Tensor, eps: f64) -> Result<Tensor> {
    if g.rank() != 1 || x.dim(candle_core::D::Minus1)? != g.dim(0)? {
        bail!(
            "fused rms_norm: gain {:?} for input {:?}",
            g.shape(),
            x.shape()
        );
    }
    x.contiguous()?
        .apply_op2(&g.contiguous()?, RmsNormOp { eps })
}

#[cfg(test)]
mod tests {
    use super::rms_norm;
    use crate::model::fused::cpu::ROWS_PER_TASK;
    use crate::model::fused::test_support::{check, randn};
    use crate::model::norm;
    use crate::rng::SplitMix64;

    #[test]
    fn rms_norm_matches_composition() {
        let mut rng = SplitMix64::new(1);
        // More rows than one task holds, so the gain gradient sums several partials.
        let x = randn(&mut rng, &[3 * ROWS_PER_TASK + 5, 24], 3.0);
        let g = randn(&mut rng, &[24], 1.0);
        check(
            &[&x, &g],
            |a| rms_norm(&a[0], &a[1], 1e-6).unwrap(),
            |a| norm::rms_norm(&a[0], &a[1], 1e-6).unwrap(),
            1e-12,
        );
    }
}
