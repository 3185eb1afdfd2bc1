//! Dense linear algebra of the GP on faer: Cholesky factorisation with jitter escalation and
//! triangular solves.
//!
//! Shared by the likelihood ([`super::likelihood`]) and the model ([`super::gp`]); it knows
//! nothing of kernels or hyperparameters.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Mat, MatMut, Par};

use super::error::GpError;

/// Relative jitters tried in turn when a Cholesky factorisation fails (× mean diagonal).
const JITTERS: [f64; 8] = [0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2];

/// Parallelism for an `n × n` factorisation: sequential for small matrices (the fit already
/// runs its restarts in parallel).
pub(crate) fn par_for(n: usize) -> Par {
    if n >= 384 {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// Lower Cholesky factor of `a` (only its lower triangle is read), or `None` when `a` is not
/// positive definite to working precision.
fn cholesky_lower(a: &Mat<f64>) -> Option<Mat<f64>> {
    let n = a.nrows();
    let par = par_for(n);
    let mut l = a.clone();
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(n, par, Default::default()));
    let stack = MemStack::new(&mut mem);
    cholesky_in_place(
        l.as_mut(),
        Default::default(),
        par,
        stack,
        Default::default(),
    )
    .ok()?;
    for j in 1..n {
        for i in 0..j {
            l[(i, j)] = 0.0;
        }
    }
    // A pivot at the level of rounding error (n ε × the largest diagonal) means the matrix
    // is singular to working precision: treat it as a failure so jitter is added.
    let max_diag = (0..n).map(|i| a[(i, i)]).fold(0.0, f64::max);
    let tiny = 4.0 * n as f64 * f64::EPSILON * max_diag;
    (0..n)
        .all(|i| l[(i, i)].is_finite() && l[(i, i)] * l[(i, i)] > tiny)
        .then_some(l)
}

/// Factorises `k`, adding jitter to its diagonal when needed. Returns the factor and the
/// absolute jitter added (0 when none was needed).
pub(crate) fn factor_with_jitter(k: &Mat<f64>) -> Result<(Mat<f64>, f64), GpError> {
    let n = k.nrows();
    let mean_diag = (0..n).map(|i| k[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let mut kj = k.clone();
    for &rel in &JITTERS {
        let jitter = rel * mean_diag;
        if rel > 0.0 {
            for i in 0..n {
                kj[(i, i)] = k[(i, i)] + jitter;
            }
        }
        if let Some(l) = cholesky_lower(&kj) {
            if rel > 0.0 {
                tracing::debug!(n, rel, "Cholesky needed jitter");
            }
            return Ok((l, jitter));
        }
    }
    Err(GpError::NotPositiveDefinite {
        n,
        jitter: JITTERS[JITTERS.len() - 1],
    })
}

fn col_mut(v: &mut [f64]) -> MatMut<'_, f64> {
    let n = v.len();
    MatMut::from_column_major_slice_mut(v, n, 1)
}

/// `v ← L⁻¹ v`.
pub(crate) fn solve_l(l: &Mat<f64>, v: &mut [f64]) {
    solve_lower_triangular_in_place(l.as_ref(), col_mut(v), Par::Seq);
}

/// `v ← L⁻ᵀ v`.
pub(crate) fn solve_lt(l: &Mat<f64>, v: &mut [f64]) {
    solve_upper_triangular_in_place(l.as_ref().transpose(), col_mut(v), Par::Seq);
}

/// `L⁻ᵀ L⁻¹ = (LLᵀ)⁻¹`, the inverse of the factorised matrix (`par`: parallelism of the solves).
pub(crate) fn cholesky_inverse(l: &Mat<f64>, par: Par) -> Mat<f64> {
    let n = l.nrows();
    let mut kinv = Mat::<f64>::identity(n, n);
    solve_lower_triangular_in_place(l.as_ref(), kinv.as_mut(), par);
    solve_upper_triangular_in_place(l.as_ref().transpose(), kinv.as_mut(), par);
    kinv
}

/// `aᵀb`.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `L ← chol(LLᵀ + vvᵀ)`: the rank-1 update of a lower Cholesky factor in place (O(n²);
/// `v` is overwritten).
pub(crate) fn cholesky_update(l: &mut Mat<f64>, v: &mut [f64]) {
    let n = l.nrows();
    assert_eq!(v.len(), n, "update vector of the wrong length");
    for k in 0..n {
        let lkk = l[(k, k)];
        let r = lkk.hypot(v[k]);
        let (c, s) = (r / lkk, v[k] / lkk);
        l[(k, k)] = r;
        for i in k + 1..n {
            let lik = (l[(i, k)] + s * v[i]) / c;
            v[i] = c * v[i] - s * lik;
            l[(i, k)] = lik;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_one_update_matches_a_fresh_factor() {
        for n in [1, 2, 5, 17] {
            let a = Mat::<f64>::from_fn(n, n, |i, j| {
                let (x, y) = (i as f64, j as f64);
                (-(x - y).powi(2) / 8.0).exp() + if i == j { 0.5 } else { 0.0 }
            });
            let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin()).collect();
            let (mut l, _) = factor_with_jitter(&a).unwrap();
            let mut w = v.clone();
            cholesky_update(&mut l, &mut w);
            let b = Mat::<f64>::from_fn(n, n, |i, j| a[(i, j)] + v[i] * v[j]);
            let (lb, _) = factor_with_jitter(&b).unwrap();
            for i in 0..n {
                for j in 0..=i {
                    assert!((l[(i, j)] - lb[(i, j)]).abs() < 1e-12, "n {n} ({i}, {j})");
                }
            }
        }
    }
}
