//! The hyperparameters in internal units ([`Hyp`]), the kernel matrix they define, and the log
//! marginal likelihood with its analytic gradient ([`lml_grad`]).
//!
//! The fit ([`super::fit`]) optimises [`lml_grad`] plus a prior; the model ([`super::gp`])
//! builds its kernel matrix with [`Hyp::kernel_matrix`] and exposes the likelihood through
//! [`super::Gp::lml_and_grad`].

use faer::Mat;

use super::error::GpError;
use super::kernel::{sq_dist, Kernel};
use super::linalg::{cholesky_inverse, dot, factor_with_jitter, par_for, solve_l, solve_lt};

/// `log(2π)`.
pub(crate) const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Hyperparameters in internal units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hyp {
    /// Lengthscales (internal input units).
    pub ls: Vec<f64>,
    /// Outputscale `s²` (standardised).
    pub os: f64,
    /// Noise variance `σ²` (standardised).
    pub noise: f64,
    /// Constant mean (standardised).
    pub mean: f64,
    /// Variance of the linear term `c · zᵀz'` (standardised; 0 for none).
    pub lin: f64,
}

impl Hyp {
    /// `[log ℓ₁ … log ℓ_d, log s², log σ², m]`, then `log c` when the linear term is on.
    pub fn to_log_params(&self) -> Vec<f64> {
        let mut p: Vec<f64> = self.ls.iter().map(|v| v.ln()).collect();
        p.extend([self.os.ln(), self.noise.ln(), self.mean]);
        if self.lin > 0.0 {
            p.push(self.lin.ln());
        }
        p
    }

    /// The inverse of [`Hyp::to_log_params`] (`d` lengthscales).
    pub fn from_log_params(p: &[f64], d: usize) -> Self {
        assert!(
            p.len() == d + 3 || p.len() == d + 4,
            "log_params must have d + 3 (or d + 4 with a linear term) entries"
        );
        Self {
            ls: p[..d].iter().map(|v| v.exp()).collect(),
            os: p[d].exp(),
            noise: p[d + 1].exp(),
            mean: p[d + 2],
            lin: p.get(d + 3).map_or(0.0, |v| v.exp()),
        }
    }

    /// Checks that every value is finite and in range.
    pub(crate) fn check(&self) -> Result<(), GpError> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !self.ls.iter().all(|&v| ok(v)) {
            return Err(GpError::BadHyperparameters(format!(
                "lengthscales must be finite and positive, got {:?}",
                self.ls
            )));
        }
        if !ok(self.os) {
            return Err(GpError::BadHyperparameters(format!(
                "outputscale must be finite and positive, got {}",
                self.os
            )));
        }
        if !self.lin.is_finite() || self.lin < 0.0 {
            return Err(GpError::BadHyperparameters(format!(
                "the linear variance must be finite and non-negative, got {}",
                self.lin
            )));
        }
        if !self.noise.is_finite() || self.noise < 0.0 || !self.mean.is_finite() {
            return Err(GpError::BadHyperparameters(format!(
                "noise must be finite and non-negative and the mean finite, got {} and {}",
                self.noise, self.mean
            )));
        }
        Ok(())
    }

    /// `K = s²Φ + c ZZᵀ + (σ² diagonal)` with `σ² = diag_extra` (`zl`: inputs over
    /// lengthscales, `z`: inputs, both `n × d` row-major; the linear term skipped when
    /// `c = 0`), and with `want_slopes` the matrix of slopes `φ'(r²)`.
    pub(crate) fn kernel_matrix(
        &self,
        kernel: Kernel,
        zl: &[f64],
        z: &[f64],
        diag_extra: f64,
        want_slopes: bool,
    ) -> (Mat<f64>, Option<Mat<f64>>) {
        let (d, os, lin) = (self.ls.len(), self.os, self.lin);
        let n = zl.len() / d;
        let mut k = Mat::<f64>::zeros(n, n);
        let mut s = want_slopes.then(|| Mat::<f64>::zeros(n, n));
        for j in 0..n {
            let zj = &zl[j * d..(j + 1) * d];
            let rj = &z[j * d..(j + 1) * d];
            k[(j, j)] = os + diag_extra + if lin > 0.0 { lin * dot(rj, rj) } else { 0.0 };
            if let Some(s) = s.as_mut() {
                s[(j, j)] = kernel.phi_and_slope(0.0).1;
            }
            for i in j + 1..n {
                let (phi, slope) = kernel.phi_and_slope(sq_dist(&zl[i * d..(i + 1) * d], zj));
                let mut v = os * phi;
                if lin > 0.0 {
                    v += lin * dot(&z[i * d..(i + 1) * d], rj);
                }
                k[(i, j)] = v;
                k[(j, i)] = v;
                if let Some(s) = s.as_mut() {
                    s[(i, j)] = slope;
                    s[(j, i)] = slope;
                }
            }
        }
        (k, s)
    }
}

/// The log marginal likelihood and its gradient (internal units).
#[derive(Debug, Clone)]
pub(crate) struct LmlGrad {
    /// The log marginal likelihood.
    pub lml: f64,
    /// ∂/∂ log ℓ_k.
    pub d_log_ls: Vec<f64>,
    /// ∂/∂ log s².
    pub d_log_os: f64,
    /// ∂/∂σ² (not log).
    pub d_noise: f64,
    /// ∂/∂m.
    pub d_mean: f64,
    /// ∂/∂ log c (0 without a linear term).
    pub d_log_lin: f64,
}

/// Inputs divided by lengthscales (`n × d` row-major).
pub(crate) fn divide_ls(z: &[f64], ls: &[f64]) -> Vec<f64> {
    let d = ls.len();
    z.chunks_exact(d)
        .flat_map(|r| r.iter().zip(ls).map(|(v, l)| v / l))
        .collect()
}

/// Log marginal likelihood of standardised targets `ys` at inputs `z` (internal units, `n × d`
/// row-major) and, with `want_grad`, its gradient. Jitter is escalated as in the model.
pub(crate) fn lml_grad(
    z: &[f64],
    ys: &[f64],
    kernel: Kernel,
    hyp: &Hyp,
    want_grad: bool,
) -> Result<LmlGrad, GpError> {
    let d = hyp.ls.len();
    let n = ys.len();
    let zl = divide_ls(z, &hyp.ls);
    let (k, slopes) = hyp.kernel_matrix(kernel, &zl, z, hyp.noise, want_grad);
    let (l, _jitter) = factor_with_jitter(&k)?;
    let mut alpha: Vec<f64> = ys.iter().map(|v| v - hyp.mean).collect();
    solve_l(&l, &mut alpha);
    let quad: f64 = alpha.iter().map(|v| v * v).sum();
    solve_lt(&l, &mut alpha);
    let logdet_half: f64 = (0..n).map(|i| l[(i, i)].ln()).sum();
    let lml = -0.5 * quad - logdet_half - 0.5 * n as f64 * LN_2PI;
    if !want_grad {
        return Ok(LmlGrad {
            lml,
            d_log_ls: Vec::new(),
            d_log_os: 0.0,
            d_noise: 0.0,
            d_mean: 0.0,
            d_log_lin: 0.0,
        });
    }
    let slopes = slopes.expect("slopes requested");
    // K⁻¹ = L⁻ᵀ L⁻¹, then M = ααᵀ − K⁻¹; ∂LML/∂θ = ½ tr(M ∂K/∂θ).
    let par = par_for(n);
    let kinv = cholesky_inverse(&l, par);
    let mut d_log_ls = vec![0.0; d];
    let mut d_log_os = 0.0;
    let mut d_log_lin = 0.0;
    let mut trace_m = 0.0;
    let lin_on = hyp.lin > 0.0;
    for j in 0..n {
        let zj = &zl[j * d..(j + 1) * d];
        let rj = &z[j * d..(j + 1) * d];
        let mjj = alpha[j] * alpha[j] - kinv[(j, j)];
        trace_m += mjj;
        d_log_os += 0.5 * mjj * hyp.os;
        if lin_on {
            d_log_lin += 0.5 * mjj * hyp.lin * dot(rj, rj);
        }
        for i in j + 1..n {
            let mij = alpha[i] * alpha[j] - kinv[(i, j)];
            // Off-diagonal pairs count twice (M and K symmetric).
            let klin = if lin_on {
                hyp.lin * dot(&z[i * d..(i + 1) * d], rj)
            } else {
                0.0
            };
            d_log_lin += mij * klin;
            d_log_os += mij * (k[(i, j)] - klin);
            // ∂K_ij/∂log ℓ_k = s² φ'(r²) · (−2 Δ_k²/ℓ_k²).
            let a = -2.0 * hyp.os * mij * slopes[(i, j)];
            let zi = &zl[i * d..(i + 1) * d];
            for ((g, &u), &v) in d_log_ls.iter_mut().zip(zi).zip(zj) {
                let t = u - v;
                *g += a * t * t;
            }
        }
    }
    Ok(LmlGrad {
        lml,
        d_log_ls,
        d_log_os,
        d_noise: 0.5 * trace_m,
        d_mean: alpha.iter().sum(),
        d_log_lin,
    })
}
