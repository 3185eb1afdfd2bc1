//! Placement of image patches: rows of the hidden states replaced by rows of the projected
//! patches, with the gradient routed back to whichever input each row came from.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::cpu::{read, slice};
use super::real::Real;

/// Rows of `h` (`[N, H]`) replaced by rows of `patches` (`[M, H]`): `out[pos[m]] = patches[m]`
/// (a later patch wins on a repeated position, as with `cat + index_select`).
struct PlaceRowsOp {
    /// For each row of the output, `Some(m)` when it comes from patch `m`.
    src: Vec<Option<usize>>,
}

impl PlaceRowsOp {
    fn forward<T: Real>(&self, h: &[T], p: &[T]) -> Vec<T> {
        let w = h.len() / self.src.len();
        let mut out = h.to_vec();
        for (r, s) in self.src.iter().enumerate() {
            if let Some(m) = s {
                out[r * w..(r + 1) * w].copy_from_slice(&p[m * w..(m + 1) * w]);
            }
        }
        out
    }

    fn backward<T: Real>(&self, dy: &[T], m: usize) -> (Vec<T>, Vec<T>) {
        let w = dy.len() / self.src.len();
        let mut dh = dy.to_vec();
        let mut dp = vec![T::from_f64(0.0); m * w];
        for (r, s) in self.src.iter().enumerate() {
            if let Some(k) = s {
                dp[k * w..(k + 1) * w].copy_from_slice(&dy[r * w..(r + 1) * w]);
                dh[r * w..(r + 1) * w].fill(T::from_f64(0.0));
            }
        }
        (dh, dp)
    }
}

impl CustomOp2 for PlaceRowsOp {
    fn name(&self) -> &'static str {
        "fused-place-rows"
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
            dt => bail!("fused place_rows: unsupported dtype {dt:?}"),
        };
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let rd = read(&grad)?;
        let m = p.dim(0)?;
        macro_rules! run {
            ($t:ty) => {{
                let (dh, dp) = self.backward::<$t>(rd.get()?, m);
                (
                    Tensor::from_vec(dh, h.shape(), h.device())?,
                    Tensor::from_vec(dp, p.shape(), p.device())?,
                )
            }};
        }
        let (dh, dp) = match h.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused place_rows: unsupported dtype {dt:?}"),
        };
        Ok((Some(dh), Some(dp)))
    }
}

/// `h` (`[N, H]`) with row `positions[m]` replaced by row `m` of `patches` (`[M, H]`).
/// Positions must be below N. CPU f32/f64 only.
pub fn place_rows(h: &Tensor, patches: &Tensor, positions: &[u32]) -> Result<Tensor> {
    let (n, w) = h.dims2()?;
    if patches.dims2()? != (positions.len(), w) {
        bail!(
            "fused place_rows: {:?} patches for {} positions",
            patches.shape(),
            positions.len()
        );
    }
    let mut src = vec![None; n];
    for (m, &p) in positions.iter().enumerate() {
        match src.get_mut(p as usize) {
            Some(s) => *s = Some(m),
            None => bail!("fused place_rows: position {p} outside {n} rows"),
        }
    }
    h.contiguous()?
        .apply_op2(&patches.contiguous()?, PlaceRowsOp { src })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::place_rows;
    use crate::model::fused::test_support::{check, randn};
    use crate::rng::SplitMix64;

    #[test]
    fn place_rows_matches_cat_and_index_select() {
        let mut rng = SplitMix64::new(4);
        let h = randn(&mut rng, &[10, 6], 1.0);
        let p = randn(&mut rng, &[4, 6], 1.0);
        // Position 7 repeats: the later patch wins, the earlier gets no gradient.
        let positions = [2u32, 7, 0, 7];
        let mut src: Vec<u32> = (0..10).collect();
        for (m, &q) in positions.iter().enumerate() {
            src[q as usize] = 10 + m as u32;
        }
        let src = Tensor::from_vec(src, 10, &Device::Cpu).unwrap();
        check(
            &[&h, &p],
            |x| place_rows(&x[0], &x[1], &positions).unwrap(),
            |x| {
                Tensor::cat(&[&x[0], &x[1]], 0)
                    .unwrap()
                    .index_select(&src, 0)
                    .unwrap()
            },
            1e-15,
        );
        assert!(place_rows(&h, &p, &[0, 1, 2, 10]).is_err());
    }
}
