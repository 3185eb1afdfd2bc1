//! A sparse GP posterior for searches past a few thousand trials: the deterministic training
//! conditional (DTC; Seeger et al. 2003, Quiñonero-Candela & Rasmussen 2005) with `m`
//! inducing points chosen among the trials.
//!
//! The exact posterior needs a Cholesky factor of all `n` trials (O(n³) time, O(n²) memory)
//! and O(n²) per prediction; at n = 10,000 that is minutes per round. DTC approximates the
//! training covariance by `Q = K_nm K_mm⁻¹ K_mn` (rank `m`) and keeps the exact prior
//! variance at test points, so building costs O(n m²) and a prediction O(m²).
//!
//! In whitened form (as GPflow's SGPR): `A = L_m⁻¹ K_mn / σ` with `L_m` the Cholesky factor of
//! `K_mm`, `B = I + A Aᵀ = L_B L_Bᵀ`, `a(x) = L_m⁻¹ k_m(x)`; then
//!
//! - `μ(x) = m + a(x)ᵀ v̄` with `v̄ = L_B⁻ᵀ L_B⁻¹ A (y − m) / σ`,
//! - `σ²(x) = k(x, x) − |a(x)|² + |L_B⁻¹ a(x)|²`.
//!
//! `B ⪰ I`, so its factorisation is well conditioned however small the noise. A fantasy
//! observation at `x` equal to the posterior mean (GP-BUCB) leaves `v̄` unchanged and adds
//! `a(x) a(x)ᵀ / σ²` to `B`: a rank-1 update of `L_B` (O(m²)). With every trial an inducing
//! point the posterior equals the exact one (tested).
//!
//! Inducing points ([`inducing_points`]): the best quarter of the trials by objective (where
//! the acquisition's maximisers lie) then a greedy farthest-point (space-filling) choice among
//! the rest in lengthscale-scaled coordinates; deterministic.

use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Mat, Par};
use rayon::prelude::*;

use super::error::GpError;
use super::fit::GpConfig;
use super::gp::{
    basis_mean, cross_kernel, point_posterior, predict_blocked, Basis, Fitted, GpHyperparameters,
    GpReport, Transform,
};
use super::kernel::{sq_dist, Kernel};
use super::likelihood::{divide_ls, Hyp, LN_2PI};
use super::linalg::{cholesky_update, dot, factor_with_jitter, par_for, solve_l, solve_lt};
use super::posterior::{PointPosterior, Posterior};

/// A DTC sparse GP posterior (see the module documentation).
#[derive(Debug, Clone)]
pub struct SparseGp {
    kernel: Kernel,
    tf: Transform,
    hyp: Hyp,
    /// Inducing points in internal units (`m × d`).
    zu: Vec<f64>,
    /// The same over the lengthscales.
    zul: Vec<f64>,
    /// Cholesky factor of `K_mm` (+ jitter).
    lm: Mat<f64>,
    /// Cholesky factor of `B = I + A Aᵀ` (updated by fantasies).
    lb: Mat<f64>,
    /// `β = L_m⁻ᵀ v̄`: the mean is `m + k_m(x)ᵀ β`.
    beta: Vec<f64>,
    /// Noise variance `σ²` of the DTC likelihood (internal; at least a tiny floor).
    noise: f64,
    /// Observations, including fantasies.
    n: usize,
    /// Approximate (DTC) log marginal likelihood of the fitted trials, objective units.
    lml: f64,
}

/// `m` inducing points among `n` trials (indices into them): the best `m/4` by `ys` (ties to
/// the earlier trial), then greedy farthest-point selection in `zl` (`n × d`, lengthscale-
/// scaled) from those. Deterministic; `m ≥ n` returns every trial.
pub(crate) fn inducing_points(zl: &[f64], ys: &[f64], m: usize) -> Vec<usize> {
    let n = ys.len();
    if m >= n {
        return (0..n).collect();
    }
    let d = zl.len() / n;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| ys[b].total_cmp(&ys[a]).then(a.cmp(&b)));
    let mut chosen: Vec<usize> = order[..(m / 4).max(1)].to_vec();
    let mut taken = vec![false; n];
    let mut dmin = vec![f64::INFINITY; n];
    let row = |i: usize| &zl[i * d..(i + 1) * d];
    let relax = |dmin: &mut [f64], c: usize| {
        let zc = row(c);
        dmin.par_iter_mut().enumerate().for_each(|(i, v)| {
            *v = v.min(sq_dist(row(i), zc));
        });
    };
    for &c in &chosen {
        taken[c] = true;
        relax(&mut dmin, c);
    }
    while chosen.len() < m {
        let next = (0..n)
            .filter(|&i| !taken[i])
            .max_by(|&a, &b| dmin[a].total_cmp(&dmin[b]).then(b.cmp(&a)))
            .expect("fewer inducing points than trials");
        taken[next] = true;
        chosen.push(next);
        relax(&mut dmin, next);
    }
    chosen.sort_unstable();
    chosen
}

impl SparseGp {
    /// Fits the hyperparameters (`cfg.fit`, as [`super::Gp::fit_warm`]) and builds the DTC
    /// posterior over all trials with `m` inducing points.
    pub fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        cfg: &GpConfig,
        m: usize,
        warm: Option<&GpHyperparameters>,
    ) -> Result<SparseGp, GpError> {
        let f = Fitted::new(x, y, cfg, warm)?;
        Self::build(cfg.kernel, f.tf, f.hyp, &f.z, &f.ys, m)
    }

    /// The DTC posterior of trials `x`, `y` with given hyperparameters (objective units; no
    /// fitting, no input warp) and `m` inducing points.
    pub fn with_hyperparameters(
        x: &[Vec<f64>],
        y: &[f64],
        kernel: Kernel,
        h: &GpHyperparameters,
        m: usize,
    ) -> Result<SparseGp, GpError> {
        let d = super::gp::validate(x, y)?;
        if h.lengthscales.len() != d {
            return Err(GpError::BadHyperparameters(format!(
                "{} lengthscales for {d} coordinates",
                h.lengthscales.len()
            )));
        }
        let tf = Transform::from_data(x, y, super::InputWarp::None);
        let (z, ys) = super::gp::internal_data(&tf, x, y);
        let hyp = tf.internal_hyp(h);
        Self::build(kernel, tf, hyp, &z, &ys, m)
    }

    fn build(
        kernel: Kernel,
        tf: Transform,
        hyp: Hyp,
        z: &[f64],
        ys: &[f64],
        m: usize,
    ) -> Result<SparseGp, GpError> {
        hyp.check()?;
        let d = hyp.ls.len();
        let n = ys.len();
        let zl = divide_ls(z, &hyp.ls);
        let idx = inducing_points(&zl, ys, m.max(1));
        let m = idx.len();
        let pick = |v: &[f64]| -> Vec<f64> {
            idx.iter()
                .flat_map(|&i| v[i * d..(i + 1) * d].iter().copied())
                .collect()
        };
        let (zu, zul) = (pick(z), pick(&zl));
        let (kmm, _) = hyp.kernel_matrix(kernel, &zul, &zu, 0.0, false);
        let (lm, _) = factor_with_jitter(&kmm)?;
        // A = L_m⁻¹ K_mn / σ, by column blocks in parallel.
        let noise = hyp.noise.max(1e-10);
        let sigma = noise.sqrt();
        let mut a = Mat::<f64>::zeros(m, n);
        const BLOCK: usize = 256;
        let blocks: Vec<(usize, Mat<f64>)> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
                let (mut k, _) = cross_kernel(kernel, &hyp, &zul, &zu, &z[lo * d..hi * d]);
                solve_lower_triangular_in_place(lm.as_ref(), k.as_mut(), Par::Seq);
                (lo, k)
            })
            .collect();
        for (lo, k) in blocks {
            for j in 0..k.ncols() {
                let dst = a.col_as_slice_mut(lo + j);
                for (t, s) in dst.iter_mut().zip(k.col_as_slice(j)) {
                    *t = s / sigma;
                }
            }
        }
        // B = I + A Aᵀ.
        let mut bmat = Mat::<f64>::identity(m, m);
        faer::linalg::matmul::matmul(
            bmat.as_mut(),
            faer::Accum::Add,
            a.as_ref(),
            a.as_ref().transpose(),
            1.0,
            par_for(m.max(n)),
        );
        let (lb, _) = factor_with_jitter(&bmat)?;
        // c = L_B⁻¹ A r / σ, v̄ = L_B⁻ᵀ c, β = L_m⁻ᵀ v̄.
        let r: Vec<f64> = ys.iter().map(|v| v - hyp.mean).collect();
        // Column by column (A is column-major).
        let mut c = vec![0.0; m];
        for (j, rj) in r.iter().enumerate() {
            c.iter_mut()
                .zip(a.col_as_slice(j))
                .for_each(|(ci, aij)| *ci += aij * rj);
        }
        c.iter_mut().for_each(|v| *v /= sigma);
        solve_l(&lb, &mut c);
        // DTC log likelihood: log N(r | 0, Q + σ²I) by Woodbury and the determinant lemma.
        let quad = dot(&r, &r) / noise - dot(&c, &c);
        let logdet_b: f64 = (0..m).map(|i| 2.0 * lb[(i, i)].ln()).sum();
        let logdet = n as f64 * noise.ln() + logdet_b;
        let lml = -0.5 * quad - 0.5 * logdet - 0.5 * n as f64 * LN_2PI - n as f64 * tf.y_std.ln();
        let mut beta = c;
        solve_lt(&lb, &mut beta);
        solve_lt(&lm, &mut beta);
        Ok(SparseGp {
            kernel,
            tf,
            hyp,
            zu,
            zul,
            lm,
            lb,
            beta,
            noise,
            n,
            lml,
        })
    }

    /// Number of observations (including fantasies).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of inducing points.
    pub fn inducing(&self) -> usize {
        self.beta.len()
    }

    /// Hyperparameters in objective units.
    pub fn hyperparameters(&self) -> GpHyperparameters {
        self.tf.external_hyp(&self.hyp)
    }

    /// What was fitted (the log marginal likelihood is DTC's approximation of the fitted
    /// trials).
    pub fn report(&self) -> GpReport {
        let h = self.hyperparameters();
        GpReport {
            kernel: self.kernel,
            warp: self.tf.warp,
            lengthscales: h.lengthscales,
            outputscale: h.outputscale,
            noise: h.noise,
            mean: h.mean,
            linear: h.linear,
            log_marginal_likelihood: self.lml,
            n: self.n,
            d: self.hyp.ls.len(),
            fitted_on: None,
        }
    }

    /// `a = L_m⁻¹ k_m(x)` and `b = L_B⁻¹ a` of query points `x` (`q × d` coordinates) as
    /// `m × q` matrices, the prior variances (internal units), and `k_m(x)ᵀβ`.
    pub(crate) fn features(&self, x: &[f64]) -> (Mat<f64>, Mat<f64>, Vec<f64>, Vec<f64>) {
        let d = self.hyp.ls.len();
        let mut zq = Vec::with_capacity(x.len());
        for xr in x.chunks_exact(d) {
            self.tf.z(xr, &mut zq);
        }
        let (mut a, prior) = cross_kernel(self.kernel, &self.hyp, &self.zul, &self.zu, &zq);
        let mk: Vec<f64> = (0..a.ncols())
            .map(|j| dot(a.col_as_slice(j), &self.beta))
            .collect();
        solve_lower_triangular_in_place(self.lm.as_ref(), a.as_mut(), Par::Seq);
        let mut b = a.clone();
        solve_lower_triangular_in_place(self.lb.as_ref(), b.as_mut(), Par::Seq);
        (a, b, prior, mk)
    }

    /// The transform to internal units.
    pub(crate) fn transform(&self) -> &Transform {
        &self.tf
    }

    /// The constant mean (internal units).
    pub(crate) fn hyp_mean(&self) -> f64 {
        self.hyp.mean
    }

    /// The DTC noise variance (internal units).
    pub(crate) fn noise_internal(&self) -> f64 {
        self.noise
    }

    fn predict_block(&self, x: &[f64], mean: &mut [f64], var: &mut [f64]) {
        let (a, b, prior, mk) = self.features(x);
        for j in 0..mean.len() {
            mean[j] = self.hyp.mean + mk[j];
            let sa: f64 = a.col_as_slice(j).iter().map(|t| t * t).sum();
            let sb: f64 = b.col_as_slice(j).iter().map(|t| t * t).sum();
            var[j] = (prior[j] - sa + sb).max(0.0);
        }
    }
}

impl SparseGp {
    /// The mean's basis (`m + k(x)ᵀbeta` over the inducing points) for
    /// [`basis_mean`] and [`point_posterior`].
    fn basis(&self) -> Basis<'_> {
        Basis {
            kernel: self.kernel,
            tf: &self.tf,
            hyp: &self.hyp,
            zl: &self.zul,
            z: &self.zu,
            alpha: &self.beta,
        }
    }
}

impl Posterior for SparseGp {
    fn dim(&self) -> usize {
        self.hyp.ls.len()
    }

    fn predict(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        predict_blocked(x, self.dim(), &self.tf, |xb, mb, vb| {
            self.predict_block(xb, mb, vb)
        })
    }

    fn predict_mean(&self, x: &[f64]) -> Vec<f64> {
        let basis = self.basis();
        basis_mean(&basis, x)
    }

    fn predict_point(&self, x: &[f64]) -> PointPosterior {
        let basis = self.basis();
        // W = K_mm⁻¹ − L_m⁻ᵀ B⁻¹ L_m⁻¹: W k = L_m⁻ᵀ (a − L_B⁻ᵀ L_B⁻¹ a), a = L_m⁻¹ k.
        point_posterior(&basis, x, |w| {
            solve_l(&self.lm, w);
            let mut b = w.clone();
            solve_l(&self.lb, &mut b);
            let s = dot(w, w) - dot(&b, &b);
            solve_lt(&self.lb, &mut b);
            w.iter_mut().zip(&b).for_each(|(v, t)| *v -= t);
            solve_lt(&self.lm, w);
            s
        })
    }

    fn fantasize(&mut self, x: &[f64]) {
        // The mean is unchanged (see the module documentation); B gains a aᵀ/σ².
        let (a, _, _, _) = self.features(x);
        let s = self.noise.sqrt();
        let mut v: Vec<f64> = a.col_as_slice(0).iter().map(|t| t / s).collect();
        cholesky_update(&mut self.lb, &mut v);
        self.n += 1;
    }
}
