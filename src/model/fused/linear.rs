//! The fused linear layer `y = x Wᵀ (+ b)`: one gemm each way, the weight gradient computed
//! directly in `W`'s layout and the bias gradient as a column sum.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::cpu::{read, slice};
use super::real::Real;
use crate::strided::{mm_par, Dst, Src};

/// `y = x Wᵀ (+ b)` for `x` `[N, in]`, `W` `[out, in]`, `b` `[out]`: one gemm each way, with
/// the weight gradient computed directly in `W`'s layout and the bias gradient as a column sum
/// (candle's composition materialises a transposed copy, a broadcast and a zero-plus-add for
/// every node).
struct LinearOp;

impl LinearOp {
    fn forward<T: Real>(x: &[T], w: &[T], b: Option<&[T]>, out: usize) -> Vec<T> {
        let inp = w.len() / out;
        let n = x.len() / inp;
        let mut y = match b {
            Some(b) => b.repeat(n),
            None => vec![T::from_f64(0.0); n * out],
        };
        // SAFETY: y is n×out, x n×inp, w out×inp (read as its transpose).
        unsafe {
            mm_par(
                n,
                out,
                inp,
                Dst {
                    ptr: y.as_mut_ptr(),
                    rs: out,
                    accumulate: b.is_some(),
                },
                Src::rows(x.as_ptr(), inp),
                Src::cols(w.as_ptr(), inp),
            );
        }
        y
    }

    /// `(dx, dW, db)`: `dx = dy W` (when wanted), `dW = dyᵀ x`, `db = Σ_rows dy` (when wanted).
    fn backward<T: Real>(
        x: &[T],
        w: &[T],
        dy: &[T],
        out: usize,
        want_dx: bool,
        want_db: bool,
    ) -> (Option<Vec<T>>, Vec<T>, Option<Vec<T>>) {
        let inp = w.len() / out;
        let n = x.len() / inp;
        let zero = T::from_f64(0.0);
        let dx = want_dx.then(|| {
            let mut dx = vec![zero; n * inp];
            // SAFETY: dx n×inp, dy n×out, w out×inp.
            unsafe {
                mm_par(
                    n,
                    inp,
                    out,
                    Dst::set(dx.as_mut_ptr(), inp),
                    Src::rows(dy.as_ptr(), out),
                    Src::rows(w.as_ptr(), inp),
                );
            }
            dx
        });
        let mut dw = vec![zero; out * inp];
        // SAFETY: dw out×inp, dy read as its transpose out×n, x n×inp.
        unsafe {
            mm_par(
                out,
                inp,
                n,
                Dst::set(dw.as_mut_ptr(), inp),
                Src::cols(dy.as_ptr(), out),
                Src::rows(x.as_ptr(), inp),
            );
        }
        let db = want_db.then(|| {
            let mut db = vec![zero; out];
            for row in dy.chunks(out) {
                for (a, &g) in db.iter_mut().zip(row) {
                    *a += g;
                }
            }
            db
        });
        (dx, dw, db)
    }

    fn check(x: &Layout, w: &Layout) -> Result<usize> {
        match (x.dims(), w.dims()) {
            ([_, i], [o, i2]) if i == i2 => Ok(*o),
            _ => bail!("fused linear: input {:?}, weight {:?}", x.dims(), w.dims()),
        }
    }

    fn run_fwd(
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let out = Self::check(x.1, w.1)?;
        let shape = Shape::from((x.1.dims()[0], out));
        let y = match x.0.dtype() {
            DType::F32 => {
                let b = b.map(|b| slice::<f32>(b.0, b.1)).transpose()?;
                CpuStorage::F32(Self::forward(slice(x.0, x.1)?, slice(w.0, w.1)?, b, out))
            }
            DType::F64 => {
                let b = b.map(|b| slice::<f64>(b.0, b.1)).transpose()?;
                CpuStorage::F64(Self::forward(slice(x.0, x.1)?, slice(w.0, w.1)?, b, out))
            }
            dt => bail!("fused linear: unsupported dtype {dt:?}"),
        };
        Ok((y, shape))
    }

    fn run_bwd(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (rx, rw, rd) = (read(x)?, read(w)?, read(&grad)?);
        let out = w.dim(0)?;
        let want_dx = x.track_op();
        macro_rules! run {
            ($t:ty) => {{
                let (dx, dw, db) = Self::backward::<$t>(
                    rx.get()?,
                    rw.get()?,
                    rd.get()?,
                    out,
                    want_dx,
                    b.is_some(),
                );
                (
                    dx.map(|d| Tensor::from_vec(d, x.shape(), x.device()))
                        .transpose()?,
                    Tensor::from_vec(dw, w.shape(), w.device())?,
                    db.map(|d| Tensor::from_vec(d, out, w.device()))
                        .transpose()?,
                )
            }};
        }
        Ok(match x.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            dt => bail!("fused linear: unsupported dtype {dt:?}"),
        })
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::run_fwd((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Self::run_bwd(x, w, None, grad)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::run_fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = Self::run_bwd(x, w, Some(b), grad)?;
        Ok((dx, Some(dw), db))
    }
}

/// Fused `x Wᵀ + b` for `x` `[N, in]`, `W` `[out, in]` (PyTorch layout), `b` `[out]`.
/// CPU f32/f64 only.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => {
            if b.dims() != [w.dim(0)?] {
                bail!(
                    "fused linear: bias {:?} for weight {:?}",
                    b.shape(),
                    w.shape()
                );
            }
            x.apply_op3(&w, &b.contiguous()?, LinearOp)
        }
        None => x.apply_op2(&w, LinearOp),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::linear;
    use crate::model::fused::test_support::{check, randn};
    use crate::rng::SplitMix64;

    #[test]
    fn linear_matches_composition() {
        let mut rng = SplitMix64::new(6);
        let x = randn(&mut rng, &[37, 12], 2.0);
        let w = randn(&mut rng, &[9, 12], 1.0);
        let b = randn(&mut rng, &[9], 1.0);
        check(
            &[&x, &w, &b],
            |a| linear(&a[0], &a[1], Some(&a[2])).unwrap(),
            |a| crate::model::embedding::linear(&a[0], &a[1], Some(&a[2])).unwrap(),
            1e-12,
        );
        check(
            &[&x, &w],
            |a| linear(&a[0], &a[1], None).unwrap(),
            |a| crate::model::embedding::linear(&a[0], &a[1], None).unwrap(),
            1e-12,
        );
        // An input outside the graph gets no gradient computed.
        let c = Tensor::ones((4, 12), DType::F64, &Device::Cpu).unwrap();
        let g = linear(&c, &w, None)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&c).is_none() && g.get(&w).is_some());
        assert!(linear(&c, &b, None).is_err());
    }
}
