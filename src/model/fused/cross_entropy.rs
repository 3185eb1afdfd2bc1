//! The fused cross-entropy: the sum over rows of `logsumexp(z) − z[target]` of logits
//! `[N, V]` and its gradient `softmax(z) − onehot(target)`, in fixed row chunks.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{read, slice, ROWS_PER_TASK};
use super::real::Real;

/// Sum over rows of the cross-entropy `logsumexp(z) − z[target]` of logits `[N, V]`.
struct CrossEntropyOp;

impl CrossEntropyOp {
    /// Per-row `(max, log Σ e^(z − max))`.
    fn row_lse<T: Real>(z: &[T]) -> T {
        let mut m = z[0];
        for &x in z {
            if x > m {
                m = x;
            }
        }
        let mut s = T::from_f64(0.0);
        for &x in z {
            s += (x - m).exp_();
        }
        m + s.ln_()
    }

    fn forward<T: Real>(z: &[T], tgt: &[u32]) -> T {
        let v = z.len() / tgt.len();
        let rows: Vec<f64> = z
            .par_chunks(v * ROWS_PER_TASK)
            .zip(tgt.par_chunks(ROWS_PER_TASK))
            .flat_map_iter(|(zc, tc)| {
                zc.chunks(v)
                    .zip(tc)
                    .map(|(zr, &t)| (Self::row_lse(zr) - zr[t as usize]).to_f64())
                    .collect::<Vec<_>>()
            })
            .collect();
        T::from_f64(rows.iter().sum())
    }

    /// `dz = grad · (softmax(z) − onehot(target))`.
    fn backward<T: Real>(z: &[T], tgt: &[u32], grad: T) -> Vec<T> {
        let v = z.len() / tgt.len();
        let mut dz = vec![T::from_f64(0.0); z.len()];
        dz.par_chunks_mut(v * ROWS_PER_TASK)
            .zip(
                z.par_chunks(v * ROWS_PER_TASK)
                    .zip(tgt.par_chunks(ROWS_PER_TASK)),
            )
            .for_each(|(dc, (zc, tc))| {
                for ((dr, zr), &t) in dc.chunks_mut(v).zip(zc.chunks(v)).zip(tc) {
                    let l = Self::row_lse(zr);
                    for (d, &x) in dr.iter_mut().zip(zr) {
                        *d = (x - l).exp_() * grad;
                    }
                    dr[t as usize] -= grad;
                }
            });
        dz
    }
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let tgt: &[u32] = slice(s2, l2)?;
        let y = match s1.dtype() {
            DType::F32 => CpuStorage::F32(vec![Self::forward::<f32>(slice(s1, l1)?, tgt)]),
            DType::F64 => CpuStorage::F64(vec![Self::forward::<f64>(slice(s1, l1)?, tgt)]),
            dt => bail!("fused cross-entropy: unsupported dtype {dt:?}"),
        };
        Ok((y, Shape::from(())))
    }

    fn bwd(
        &self,
        z: &Tensor,
        tgt: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rz, rt) = (read(z)?, read(tgt)?);
        let t: &[u32] = rt.get()?;
        let dz = match z.dtype() {
            DType::F32 => {
                let g = grad.to_scalar::<f32>()?;
                Tensor::from_vec(
                    Self::backward::<f32>(rz.get()?, t, g),
                    z.shape(),
                    z.device(),
                )?
            }
            DType::F64 => {
                let g = grad.to_scalar::<f64>()?;
                Tensor::from_vec(
                    Self::backward::<f64>(rz.get()?, t, g),
                    z.shape(),
                    z.device(),
                )?
            }
            dt => bail!("fused cross-entropy: unsupported dtype {dt:?}"),
        };
        Ok((Some(dz), None))
    }
}

/// `Σ_n (logsumexp(logits[n]) − logits[n, targets[n]])` for logits `[N, V]` and u32 targets
/// `[N]`: a scalar. CPU f32/f64 only.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if targets.dims() != [n] || targets.dtype() != DType::U32 || n == 0 {
        bail!(
            "fused cross-entropy: {n} logit rows, targets {:?}",
            targets.shape()
        );
    }
    let tv: Vec<u32> = targets.to_vec1()?;
    if let Some(bad) = tv.iter().find(|&&x| x as usize >= v) {
        bail!("fused cross-entropy: target {bad} outside {v} classes");
    }
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropyOp)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, D};

    use super::cross_entropy_sum;
    use crate::model::fused::cpu::ROWS_PER_TASK;
    use crate::model::fused::test_support::{check, randn};
    use crate::rng::SplitMix64;

    #[test]
    fn cross_entropy_matches_composition() {
        let mut rng = SplitMix64::new(3);
        let (n, v) = (2 * ROWS_PER_TASK + 7, 19);
        let z = randn(&mut rng, &[n, v], 5.0);
        let tv: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
        let tgt = Tensor::from_vec(tv.clone(), n, &Device::Cpu).unwrap();
        let tgt2 = Tensor::from_vec(tv, (n, 1), &Device::Cpu).unwrap();
        check(
            &[&z],
            |x| cross_entropy_sum(&x[0], &tgt).unwrap(),
            |x| {
                candle_nn::ops::log_softmax(&x[0], D::Minus1)
                    .unwrap()
                    .gather(&tgt2, 1)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .neg()
                    .unwrap()
            },
            1e-12,
        );
        assert!(cross_entropy_sum(&z, &Tensor::new(&[0u32, 1], &Device::Cpu).unwrap()).is_err());
    }
}
