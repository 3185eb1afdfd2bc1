//! The fused SwiGLU gate `silu(a) ⊙ u`, elementwise, with its backward.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{read, slice};
use super::real::Real;

/// SwiGLU gate `silu(a) ⊙ u`, elementwise.
struct SwiGluOp;

impl SwiGluOp {
    fn forward<T: Real>(a: &[T], u: &[T]) -> Vec<T> {
        let one = T::from_f64(1.0);
        let mut y = vec![T::from_f64(0.0); a.len()];
        y.par_chunks_mut(4096)
            .zip(a.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(yc, (ac, uc))| {
                // yc first holds e^(−a).
                for (o, &x) in yc.iter_mut().zip(ac) {
                    *o = T::from_f64(0.0) - x;
                }
                T::exp_slice(yc);
                for ((o, &x), &w) in yc.iter_mut().zip(ac).zip(uc) {
                    *o = x / (one + *o) * w;
                }
            });
        y
    }

    /// `da = dy·u·σ(a)·(1 + a·(1 − σ(a)))`, `du = dy·silu(a)`.
    fn backward<T: Real>(a: &[T], u: &[T], dy: &[T]) -> (Vec<T>, Vec<T>) {
        let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
        let mut da = vec![zero; a.len()];
        let mut du = vec![zero; a.len()];
        da.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .zip(a.par_chunks(4096).zip(u.par_chunks(4096)))
            .zip(dy.par_chunks(4096))
            .for_each(|(((dac, duc), (ac, uc)), dyc)| {
                // dac first holds e^(−a).
                for (o, &x) in dac.iter_mut().zip(ac) {
                    *o = zero - x;
                }
                T::exp_slice(dac);
                for i in 0..ac.len() {
                    let x = ac[i];
                    let s = one / (one + dac[i]);
                    dac[i] = dyc[i] * uc[i] * s * (one + x * (one - s));
                    duc[i] = dyc[i] * x * s;
                }
            });
        (da, du)
    }
}

impl CustomOp2 for SwiGluOp {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = match s1.dtype() {
            DType::F32 => CpuStorage::F32(Self::forward::<f32>(slice(s1, l1)?, slice(s2, l2)?)),
            DType::F64 => CpuStorage::F64(Self::forward::<f64>(slice(s1, l1)?, slice(s2, l2)?)),
            dt => bail!("fused swiglu: unsupported dtype {dt:?}"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (ra, ru, rd) = (read(a)?, read(u)?, read(&grad)?);
        macro_rules! run {
            ($t:ty) => {{
                let (da, du) = Self::backward::<$t>(ra.get()?, ru.get()?, rd.get()?);
                (
                    Tensor::from_vec(da, a.shape(), a.device())?,
                    Tensor::from_vec(du, u.shape(), u.device())?,
                )
            }};
        }
        let (da, du) = match a.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused swiglu: unsupported dtype {dt:?}"),
        };
        Ok((Some(da), Some(du)))
    }
}

/// Fused `silu(a) ⊙ u` (same shapes). CPU f32/f64 only.
pub fn swiglu(a: &Tensor, u: &Tensor) -> Result<Tensor> {
    if a.shape() != u.shape() {
        bail!("fused swiglu: shapes {:?} and {:?}", a.shape(), u.shape());
    }
    a.contiguous()?.apply_op2(&u.contiguous()?, SwiGluOp)
}

#[cfg(test)]
mod tests {
    use super::swiglu;
    use crate::model::fused::test_support::{check, randn};
    use crate::rng::SplitMix64;

    #[test]
    fn swiglu_matches_composition() {
        let mut rng = SplitMix64::new(2);
        let a = randn(&mut rng, &[50, 200], 6.0);
        let u = randn(&mut rng, &[50, 200], 1.0);
        check(
            &[&a, &u],
            |x| swiglu(&x[0], &x[1]).unwrap(),
            |x| (candle_nn::ops::silu(&x[0]).unwrap() * &x[1]).unwrap(),
            1e-12,
        );
    }
}
