//! Exact Gaussian-process regression on faer: the surrogate of the mixture search.
//!
//! Model (in internal units, see below): `y = m + f(x) + ε`, `f ~ GP(0, s²·φ(r²) + c·zᵀz')`
//! with a Matérn-5/2 or RBF correlation `φ` over ARD-scaled distances and an optional linear
//! term of variance `c` on the centred inputs `z` (`GpConfig::linear`), `ε ~ N(0, σ²)`, a
//! constant mean `m`. Inference is exact through a Cholesky factor `L` of `K + σ²I` (faer), with jitter
//! escalation (`1e-8 … 1e-2` × the mean diagonal) when the factorisation fails.
//!
//! Internal units: targets are standardised with the statistics of the data given at fit time
//! (mean and sample standard deviation; a constant objective uses standard deviation 1), and
//! inputs are centred and multiplied by one scalar so that their mean per-coordinate variance is
//! that of a uniform variable on `[0, 1]` (1/12). The scalar keeps the hyperparameter priors,
//! which are stated for inputs in the unit cube (BoTorch), meaningful on a simplex, where a
//! coordinate varies by about `1/d`. Both transforms are fixed at fit time and reused by
//! [`Gp::add_observation`]. Everything public (predictions, [`GpReport`],
//! [`Gp::lml`], [`GpHyperparameters`]) is in objective units and the space's coordinates;
//! only [`Gp::lml_and_grad`] and [`Gp::log_params`] work in internal units.
//!
//! Hyperparameters are fitted by [`Gp::fit`] (see [`super::fit`]): maximum a posteriori with
//! weak log-normal priors, L-BFGS in log space with analytic gradients, several restarts.
//! The Cholesky factorisation and solves live in `linalg.rs`, the internal
//! hyperparameters and the likelihood in `likelihood.rs`.

use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, Par};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::GpError;
use super::fit::{fit_hyperparameters, fit_subset, FitStart, GpConfig};
use super::kernel::{sq_dist, Kernel};
use super::likelihood::{divide_ls, lml_grad, Hyp, LN_2PI};
use super::linalg::{dot, factor_with_jitter, solve_l, solve_lt};
use super::posterior::{PointPosterior, Posterior};
use super::warp::InputWarp;

/// Query points per block in [`Gp::predict`] (blocks run in parallel).
const PREDICT_BLOCK: usize = 1024;

/// Mean and variance at the `m × d` points `x` in objective units: `block` predicts a block of
/// up to [`PREDICT_BLOCK`] points in internal units; blocks run in parallel, then `tf`'s target
/// standardisation is undone. Shared by the exact and the sparse posterior.
pub(crate) fn predict_blocked(
    x: &[f64],
    d: usize,
    tf: &Transform,
    block: impl Fn(&[f64], &mut [f64], &mut [f64]) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(x.len() % d, 0, "query points must be m × d");
    let m = x.len() / d;
    let mut mean = vec![0.0; m];
    let mut var = vec![0.0; m];
    x.par_chunks(PREDICT_BLOCK * d)
        .zip(mean.par_chunks_mut(PREDICT_BLOCK))
        .zip(var.par_chunks_mut(PREDICT_BLOCK))
        .for_each(|((xb, mb), vb)| block(xb, mb, vb));
    let (ym, ys) = (tf.y_mean, tf.y_std);
    mean.iter_mut().for_each(|v| *v = ym + ys * *v);
    var.iter_mut().for_each(|v| *v *= ys * ys);
    (mean, var)
}

/// Hyperparameters in objective units and the space's coordinates: enough, with the trials, to
/// rebuild a fitted GP without refitting ([`Gp::with_hyperparameters`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpHyperparameters {
    /// One lengthscale per coordinate (coordinate units).
    pub lengthscales: Vec<f64>,
    /// Signal variance `s²` (squared objective units).
    pub outputscale: f64,
    /// Observation-noise variance `σ²` (squared objective units).
    pub noise: f64,
    /// Constant prior mean (objective units).
    pub mean: f64,
    /// Variance `c` of the linear kernel term `c · (x − x̄)ᵀ(x' − x̄)` (squared objective units
    /// per squared coordinate unit; `x̄` is the mean of the trials); 0 (the default) for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub linear: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// What was fitted, for logs, `suggest --json` and the search's `gp.json` (read back with
/// serde to warm-start a resumed search: [`GpReport::hyperparameters`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpReport {
    /// Covariance function.
    pub kernel: Kernel,
    /// Input warp (omitted when none); the lengthscales are then in warped units.
    #[serde(default, skip_serializing_if = "InputWarp::is_none")]
    pub warp: InputWarp,
    /// One lengthscale per coordinate (coordinate units).
    pub lengthscales: Vec<f64>,
    /// Signal variance (squared objective units).
    pub outputscale: f64,
    /// Observation-noise variance (squared objective units).
    pub noise: f64,
    /// Constant prior mean (objective units).
    pub mean: f64,
    /// Variance of the linear kernel term (0 for none; see [`GpHyperparameters::linear`]).
    pub linear: f64,
    /// Log marginal likelihood of the objective values (objective units).
    pub log_marginal_likelihood: f64,
    /// Number of observations (including any added after the fit).
    pub n: usize,
    /// Input dimension.
    pub d: usize,
    /// The number of trials the hyperparameters were optimised on last (a refit schedule
    /// re-optimises them only after the trials grow; [`GpConfig::reoptimises`]), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_on: Option<usize>,
}

impl GpReport {
    /// The hyperparameters of the report (e.g. of a saved `gp.json`), to warm-start the next
    /// fit (`GpUcb::seed_hyperparameters`).
    pub fn hyperparameters(&self) -> GpHyperparameters {
        GpHyperparameters {
            lengthscales: self.lengthscales.clone(),
            outputscale: self.outputscale,
            noise: self.noise,
            mean: self.mean,
            linear: self.linear,
        }
    }
}

/// The fixed maps between objective units / coordinates and internal units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transform {
    /// Per-coordinate centre subtracted from inputs.
    pub x_center: Vec<f64>,
    /// Scalar multiplying centred inputs.
    pub x_scale: f64,
    /// Applied to every coordinate before centring (`GpConfig::warp`; none by default).
    pub warp: InputWarp,
    /// Subtracted from objectives.
    pub y_mean: f64,
    /// Objectives are divided by it.
    pub y_std: f64,
}

impl Transform {
    pub(crate) fn from_data(x: &[Vec<f64>], y: &[f64], warp: InputWarp) -> Self {
        let (n, d) = (x.len(), x[0].len());
        let nf = n as f64;
        let u = |r: &[f64], k: usize| warp.apply(r[k]);
        let x_center: Vec<f64> = (0..d)
            .map(|k| x.iter().map(|r| u(r, k)).sum::<f64>() / nf)
            .collect();
        let mean_var = (0..d)
            .map(|k| {
                x.iter()
                    .map(|r| (u(r, k) - x_center[k]).powi(2))
                    .sum::<f64>()
                    / nf
            })
            .sum::<f64>()
            / d as f64;
        let x_scale = if mean_var > 1e-300 && mean_var.is_finite() {
            (1.0 / (12.0 * mean_var)).sqrt()
        } else {
            1.0
        };
        let y_mean = y.iter().sum::<f64>() / nf;
        let var = y.iter().map(|v| (v - y_mean).powi(2)).sum::<f64>() / (nf - 1.0);
        let sd = var.sqrt();
        // A constant objective (up to rounding) keeps its scale: documented fallback.
        let y_std = if sd > 1e-12 * (1.0 + y_mean.abs()) {
            sd
        } else {
            1.0
        };
        Self {
            x_center,
            x_scale,
            warp,
            y_mean,
            y_std,
        }
    }

    /// `h` (objective units) in the internal units of this transform.
    pub(crate) fn internal_hyp(&self, h: &GpHyperparameters) -> Hyp {
        let v2 = self.y_std * self.y_std;
        Hyp {
            ls: h.lengthscales.iter().map(|l| l * self.x_scale).collect(),
            os: h.outputscale / v2,
            noise: h.noise / v2,
            mean: (h.mean - self.y_mean) / self.y_std,
            lin: h.linear / (v2 * self.x_scale * self.x_scale),
        }
    }

    /// `h` (internal units) in objective units.
    pub(crate) fn external_hyp(&self, h: &Hyp) -> GpHyperparameters {
        let v2 = self.y_std * self.y_std;
        GpHyperparameters {
            lengthscales: h.ls.iter().map(|l| l / self.x_scale).collect(),
            outputscale: h.os * v2,
            noise: h.noise * v2,
            mean: self.y_mean + self.y_std * h.mean,
            linear: h.lin * v2 * self.x_scale * self.x_scale,
        }
    }

    pub(crate) fn z(&self, x: &[f64], out: &mut Vec<f64>) {
        out.extend(
            x.iter()
                .zip(&self.x_center)
                .map(|(v, c)| (self.warp.apply(*v) - c) * self.x_scale),
        );
    }
}

/// An exact GP regression model, fitted or built from given hyperparameters.
#[derive(Debug, Clone)]
pub struct Gp {
    kernel: Kernel,
    d: usize,
    tf: Transform,
    hyp: Hyp,
    /// Absolute jitter on the diagonal (0 unless the factorisation needed it).
    jitter: f64,
    /// Training inputs in internal units (`n × d` row-major).
    z: Vec<f64>,
    /// The same divided by the lengthscales.
    zl: Vec<f64>,
    /// Standardised targets.
    ys: Vec<f64>,
    /// Lower Cholesky factor of `K + (σ² + jitter) I`.
    l: Mat<f64>,
    /// `(K + σ²I)⁻¹ (ys − m)`.
    alpha: Vec<f64>,
}

/// The largest objective magnitude a GP accepts. Objectives are standardised by their mean
/// and standard deviation, and posterior variances are returned in squared objective units:
/// beyond `1e100` (squares of `1e200`, with room for the fitted outputscale) a variance could
/// overflow to infinity and a prediction would not be a number. A larger value is an error
/// naming the trial, never a `null` mean.
pub const MAX_ABS_OBJECTIVE: f64 = 1e100;

/// Checks trials (finite coordinates, finite objectives within [`MAX_ABS_OBJECTIVE`]) and
/// returns `d`.
pub(crate) fn validate(x: &[Vec<f64>], y: &[f64]) -> Result<usize, GpError> {
    assert_eq!(
        x.len(),
        y.len(),
        "x and y must have the same number of trials"
    );
    if y.len() < 2 {
        return Err(GpError::TooFewPoints { n: y.len() });
    }
    let d = x[0].len();
    if d == 0 {
        return Err(GpError::BadInput {
            index: 0,
            reason: "no coordinates".into(),
        });
    }
    for (i, (xi, &yi)) in x.iter().zip(y).enumerate() {
        if xi.len() != d {
            return Err(GpError::BadInput {
                index: i,
                reason: format!("{} coordinates, expected {d}", xi.len()),
            });
        }
        if let Some(k) = xi.iter().position(|v| !v.is_finite()) {
            return Err(GpError::BadInput {
                index: i,
                reason: format!("coordinate {k} is {}", xi[k]),
            });
        }
        if !yi.is_finite() {
            return Err(GpError::NonFiniteY {
                index: i,
                value: yi,
            });
        }
        if yi.abs() > MAX_ABS_OBJECTIVE {
            return Err(GpError::BadInput {
                index: i,
                reason: format!(
                    "objective is {yi:e}; the GP accepts objectives within ±{MAX_ABS_OBJECTIVE:e} \
                     (beyond it the posterior variance overflows)"
                ),
            });
        }
    }
    Ok(d)
}

/// Trials in internal units with hyperparameters fitted to them (all trials, or the subset of
/// `GpConfig::fit`), shared by the exact and the sparse posterior.
pub(crate) struct Fitted {
    pub d: usize,
    pub tf: Transform,
    pub z: Vec<f64>,
    pub ys: Vec<f64>,
    pub hyp: Hyp,
}

impl Fitted {
    pub(crate) fn new(
        x: &[Vec<f64>],
        y: &[f64],
        cfg: &GpConfig,
        warm: Option<&GpHyperparameters>,
    ) -> Result<Self, GpError> {
        let d = validate(x, y)?;
        let warp = cfg
            .warp
            .check()
            .map_err(|e| GpError::BadHyperparameters(e.to_string()))?;
        let tf = Transform::from_data(x, y, warp);
        let (z, ys) = internal_data(&tf, x, y);
        let fixed_noise = match cfg.fixed_noise {
            Some(v) if !(v.is_finite() && v >= 0.0) => {
                return Err(GpError::BadHyperparameters(format!(
                    "fixed_noise must be finite and non-negative, got {v}"
                )))
            }
            Some(v) => Some(v / (tf.y_std * tf.y_std)),
            None => None,
        };
        let n = y.len();
        let warm = warm
            .filter(|h| cfg.scaled(n) && h.lengthscales.len() == d)
            .map(|h| tf.internal_hyp(h))
            .filter(|h| h.check().is_ok());
        let hyp = match cfg.fit.subset_size(n) {
            None => {
                let start = FitStart {
                    warm: warm.as_ref(),
                    scaled: cfg.scaled(n),
                };
                fit_hyperparameters(&z, &ys, d, cfg, fixed_noise, start)?
            }
            Some(m) => {
                let idx = fit_subset(y, m, cfg.seed);
                tracing::debug!(
                    trials = n,
                    subset = m,
                    "GP fit: hyperparameters on a subset"
                );
                let zs: Vec<f64> = idx
                    .iter()
                    .flat_map(|&i| z[i * d..(i + 1) * d].iter().copied())
                    .collect();
                let yss: Vec<f64> = idx.iter().map(|&i| ys[i]).collect();
                let start = FitStart {
                    warm: warm.as_ref(),
                    scaled: true,
                };
                fit_hyperparameters(&zs, &yss, d, cfg, fixed_noise, start)?
            }
        };
        Ok(Self { d, tf, z, ys, hyp })
    }
}

impl Gp {
    /// Fits the hyperparameters to trials `x` (`n` points of length `d`) with objectives `y`
    /// (MAP, L-BFGS, `1 + cfg.restarts` starts; see [`super::fit`]; above
    /// [`super::fit::SCALE_THRESHOLD`] trials on the subset of `cfg.fit`).
    pub fn fit(x: &[Vec<f64>], y: &[f64], cfg: &GpConfig) -> Result<Gp, GpError> {
        Self::fit_warm(x, y, cfg, None)
    }

    /// [`Gp::fit`], warm-started from `warm` (e.g. the previous round's hyperparameters, in
    /// objective units) when there are more than [`super::fit::SCALE_THRESHOLD`] trials: the
    /// fit then runs from `warm` plus `cfg.warm_restarts` starts. At or below the threshold
    /// `warm` is ignored, so small fits are exactly [`Gp::fit`]'s.
    pub fn fit_warm(
        x: &[Vec<f64>],
        y: &[f64],
        cfg: &GpConfig,
        warm: Option<&GpHyperparameters>,
    ) -> Result<Gp, GpError> {
        let fitted = Fitted::new(x, y, cfg, warm)?;
        Self::build(
            cfg.kernel, fitted.d, fitted.tf, fitted.hyp, fitted.z, fitted.ys,
        )
    }

    /// A GP with given hyperparameters (objective units; no fitting), without an input warp.
    pub fn with_hyperparameters(
        x: &[Vec<f64>],
        y: &[f64],
        kernel: Kernel,
        h: &GpHyperparameters,
    ) -> Result<Gp, GpError> {
        let d = validate(x, y)?;
        if h.lengthscales.len() != d {
            return Err(GpError::BadHyperparameters(format!(
                "{} lengthscales for {d} coordinates",
                h.lengthscales.len()
            )));
        }
        let tf = Transform::from_data(x, y, InputWarp::None);
        let (z, ys) = internal_data(&tf, x, y);
        let hyp = tf.internal_hyp(h);
        hyp.check()?;
        Self::build(kernel, d, tf, hyp, z, ys)
    }

    fn build(
        kernel: Kernel,
        d: usize,
        tf: Transform,
        hyp: Hyp,
        z: Vec<f64>,
        ys: Vec<f64>,
    ) -> Result<Gp, GpError> {
        hyp.check()?;
        let zl = divide_ls(&z, &hyp.ls);
        let (k, _) = hyp.kernel_matrix(kernel, &zl, &z, hyp.noise, false);
        let (l, jitter) = factor_with_jitter(&k)?;
        let mut gp = Gp {
            kernel,
            d,
            tf,
            hyp,
            jitter,
            z,
            zl,
            ys,
            l,
            alpha: Vec::new(),
        };
        gp.update_alpha();
        Ok(gp)
    }

    fn update_alpha(&mut self) {
        let mut a: Vec<f64> = self.ys.iter().map(|v| v - self.hyp.mean).collect();
        solve_l(&self.l, &mut a);
        solve_lt(&self.l, &mut a);
        self.alpha = a;
    }

    /// Number of observations.
    pub fn n(&self) -> usize {
        self.ys.len()
    }

    /// The covariance function.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Absolute jitter added to the diagonal in internal (standardised) units; 0 unless the
    /// factorisation needed it.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Hyperparameters in objective units (feed to [`Gp::with_hyperparameters`]); with an
    /// input warp the lengthscales and the linear variance are in warped units, and
    /// `with_hyperparameters` (which builds an unwarped GP) does not rebuild it.
    pub fn hyperparameters(&self) -> GpHyperparameters {
        self.tf.external_hyp(&self.hyp)
    }

    /// What was fitted, in objective units.
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
            log_marginal_likelihood: self.lml(),
            n: self.n(),
            d: self.d,
            fitted_on: None,
        }
    }

    /// Log marginal likelihood `log p(y | hyperparameters)` of the objective values in objective
    /// units, for the current observations (including added ones).
    pub fn lml(&self) -> f64 {
        let n = self.n();
        let mut u: Vec<f64> = self.ys.iter().map(|v| v - self.hyp.mean).collect();
        solve_l(&self.l, &mut u);
        let quad: f64 = u.iter().map(|v| v * v).sum();
        let logdet_half: f64 = (0..n).map(|i| self.l[(i, i)].ln()).sum();
        -0.5 * quad - logdet_half - 0.5 * n as f64 * LN_2PI - n as f64 * self.tf.y_std.ln()
    }

    /// The current hyperparameters in internal units as `[log ℓ₁ … log ℓ_d, log s², log σ²,
    /// m]`: lengthscales of the centred, scaled inputs, and outputscale, noise and mean of the
    /// standardised objective (the parameterisation of [`Gp::lml_and_grad`]).
    pub fn log_params(&self) -> Vec<f64> {
        self.hyp.to_log_params()
    }

    /// Log marginal likelihood of the standardised objective on this GP's observations, and
    /// its analytic gradient, at `log_params` (layout of [`Gp::log_params`]; no prior).
    pub fn lml_and_grad(&self, log_params: &[f64]) -> Result<(f64, Vec<f64>), GpError> {
        let hyp = Hyp::from_log_params(log_params, self.d);
        hyp.check()?;
        let g = lml_grad(&self.z, &self.ys, self.kernel, &hyp, true)?;
        let mut grad = g.d_log_ls;
        grad.extend([g.d_log_os, g.d_noise * hyp.noise, g.d_mean]);
        if hyp.lin > 0.0 {
            grad.push(g.d_log_lin);
        }
        Ok((g.lml, grad))
    }

    /// Adds one observation without refitting: extends the Cholesky factor by one row
    /// (O(n²)), keeping the hyperparameters and the standardisation of the fit.
    pub fn add_observation(&mut self, x: &[f64], y: f64) -> Result<(), GpError> {
        assert_eq!(x.len(), self.d, "observation of the wrong dimension");
        let n = self.n();
        if let Some(k) = x.iter().position(|v| !v.is_finite()) {
            return Err(GpError::BadInput {
                index: n,
                reason: format!("coordinate {k} is {}", x[k]),
            });
        }
        if !y.is_finite() {
            return Err(GpError::NonFiniteY { index: n, value: y });
        }
        if y.abs() > MAX_ABS_OBJECTIVE {
            return Err(GpError::BadInput {
                index: n,
                reason: format!("objective is {y:e}; expected within ±{MAX_ABS_OBJECTIVE:e}"),
            });
        }
        let mut z = Vec::with_capacity(self.d);
        self.tf.z(x, &mut z);
        let zl: Vec<f64> = z.iter().zip(&self.hyp.ls).map(|(v, l)| v / l).collect();
        let lin = self.hyp.lin;
        let mut row: Vec<f64> = self
            .zl
            .chunks_exact(self.d)
            .zip(self.z.chunks_exact(self.d))
            .map(|(zli, zi)| {
                let mut v = self.hyp.os * self.kernel.phi(sq_dist(zli, &zl));
                if lin > 0.0 {
                    v += lin * dot(zi, &z);
                }
                v
            })
            .collect();
        solve_l(&self.l, &mut row);
        let diag = self.hyp.os + lin * dot(&z, &z) + self.hyp.noise + self.jitter;
        let schur = diag - row.iter().map(|v| v * v).sum::<f64>();
        // Exactly, schur ≥ σ² + jitter; clamp rounding (a duplicate point with no noise).
        let lnn = schur.max(1e-12 * diag).sqrt();
        self.l.resize_with(n + 1, n + 1, |_, _| 0.0);
        for (j, v) in row.into_iter().enumerate() {
            self.l[(n, j)] = v;
        }
        self.l[(n, n)] = lnn;
        self.z.extend(z);
        self.zl.extend(zl);
        self.ys.push((y - self.tf.y_mean) / self.tf.y_std);
        self.update_alpha();
        Ok(())
    }

    /// Adds `p` observations at once without refitting (`xs`: `p × d` row-major): extends the
    /// Cholesky factor by a block, `[[L, 0], [Bᵀ, C]]` with `B = L⁻¹K(X, X')` and
    /// `C Cᵀ = K(X', X') + σ²I − BᵀB` (O(n²p + p³), one allocation), keeping the
    /// hyperparameters and the standardisation of the fit. Equal to `p` calls of
    /// [`Gp::add_observation`] up to rounding.
    pub fn add_observations(&mut self, xs: &[f64], ys: &[f64]) -> Result<(), GpError> {
        assert_eq!(
            xs.len(),
            ys.len() * self.d,
            "observations of the wrong dimension"
        );
        let (n, p) = (self.n(), ys.len());
        if p == 0 {
            return Ok(());
        }
        for (i, (x, &y)) in xs.chunks_exact(self.d).zip(ys).enumerate() {
            if let Some(k) = x.iter().position(|v| !v.is_finite()) {
                return Err(GpError::BadInput {
                    index: n + i,
                    reason: format!("coordinate {k} is {}", x[k]),
                });
            }
            if !y.is_finite() || y.abs() > MAX_ABS_OBJECTIVE {
                return Err(GpError::NonFiniteY {
                    index: n + i,
                    value: y,
                });
            }
        }
        let (b, _) = self.whitened_cross(xs);
        let mut z = Vec::with_capacity(xs.len());
        for x in xs.chunks_exact(self.d) {
            self.tf.z(x, &mut z);
        }
        let zl = divide_ls(&z, &self.hyp.ls);
        let (mut s, _) =
            self.hyp
                .kernel_matrix(self.kernel, &zl, &z, self.hyp.noise + self.jitter, false);
        matmul(
            s.as_mut(),
            Accum::Add,
            b.transpose(),
            b.as_ref(),
            -1.0,
            Par::rayon(0),
        );
        let (c, _) = factor_with_jitter(&s)?;
        let mut l = Mat::<f64>::zeros(n + p, n + p);
        l.as_mut()
            .submatrix_mut(0, 0, n, n)
            .copy_from(self.l.as_ref());
        l.as_mut()
            .submatrix_mut(n, 0, p, n)
            .copy_from(b.transpose());
        l.as_mut().submatrix_mut(n, n, p, p).copy_from(c.as_ref());
        self.l = l;
        self.z.extend(z);
        self.zl.extend(zl);
        self.ys
            .extend(ys.iter().map(|y| (y - self.tf.y_mean) / self.tf.y_std));
        self.update_alpha();
        Ok(())
    }

    /// Recomputes the Cholesky factor from scratch for the current observations and
    /// hyperparameters (same standardisation; jitter escalated from the current one). The
    /// result equals the rank-1 updated factor up to rounding.
    pub fn refactor(&mut self) -> Result<(), GpError> {
        let (k, _) = self.hyp.kernel_matrix(
            self.kernel,
            &self.zl,
            &self.z,
            self.hyp.noise + self.jitter,
            false,
        );
        let (l, extra) = factor_with_jitter(&k)?;
        self.jitter += extra;
        self.l = l;
        self.update_alpha();
        Ok(())
    }

    /// The Cholesky factor `L` (`n × n`, internal units), for tests.
    pub fn cholesky_factor(&self) -> &Mat<f64> {
        &self.l
    }

    /// Posterior mean and variance of a block of query points (standardised units).
    fn predict_block(&self, x: &[f64], mean: &mut [f64], var: &mut [f64]) {
        let mut zq = Vec::with_capacity(x.len());
        for xr in x.chunks_exact(self.d) {
            self.tf.z(xr, &mut zq);
        }
        let (mut kq, prior) = cross_kernel(self.kernel, &self.hyp, &self.zl, &self.z, &zq);
        for (j, mj) in mean.iter_mut().enumerate() {
            *mj = self.hyp.mean + dot(kq.col_as_slice(j), &self.alpha);
        }
        solve_lower_triangular_in_place(self.l.as_ref(), kq.as_mut(), Par::Seq);
        for (j, v) in var.iter_mut().enumerate() {
            let s: f64 = kq.col_as_slice(j).iter().map(|t| t * t).sum();
            *v = (prior[j] - s).max(0.0);
        }
    }

    /// `L⁻¹ K(X, x)` of query points `x` (`m × d` row-major, coordinates) as an `n × m`
    /// matrix, and their prior variances (internal units): the features of the covariance
    /// `k(a, b) − vₐᵀv_b` that [`super::scale::FantasyPool`] keeps current.
    pub(crate) fn whitened_cross(&self, x: &[f64]) -> (Mat<f64>, Vec<f64>) {
        let mut zq = Vec::with_capacity(x.len());
        for xr in x.chunks_exact(self.d) {
            self.tf.z(xr, &mut zq);
        }
        let (mut kq, prior) = cross_kernel(self.kernel, &self.hyp, &self.zl, &self.z, &zq);
        solve_lower_triangular_in_place(self.l.as_ref(), kq.as_mut(), Par::Seq);
        (kq, prior)
    }

    /// `L⁻¹ (ys − m)`: the mean at query points is `m + vᵀ` this, `v` from
    /// [`Gp::whitened_cross`].
    pub(crate) fn whitened_targets(&self) -> Vec<f64> {
        let mut a: Vec<f64> = self.ys.iter().map(|v| v - self.hyp.mean).collect();
        solve_l(&self.l, &mut a);
        a
    }

    /// The prior covariance `k(a, b)` of points given in internal units (`za`, `zb`).
    pub(crate) fn prior_cov_internal(&self, za: &[f64], zb: &[f64]) -> f64 {
        prior_cov(self.kernel, &self.hyp, za, zb)
    }

    /// The transform to internal units.
    pub(crate) fn transform(&self) -> &Transform {
        &self.tf
    }

    /// The hyperparameters in internal units.
    pub(crate) fn hyp(&self) -> &Hyp {
        &self.hyp
    }
}

/// The prior covariance `s² φ(r²) + c zₐᵀz_b` of two points in internal units (not divided by
/// the lengthscales).
pub(crate) fn prior_cov(kernel: Kernel, hyp: &Hyp, za: &[f64], zb: &[f64]) -> f64 {
    let r2: f64 = za
        .iter()
        .zip(zb)
        .zip(&hyp.ls)
        .map(|((a, b), l)| {
            let t = (a - b) / l;
            t * t
        })
        .sum();
    let mut v = hyp.os * kernel.phi(r2);
    if hyp.lin > 0.0 {
        v += hyp.lin * dot(za, zb);
    }
    v
}

/// The cross-covariance `K(P, Q)` (`n × m`, internal units) between points `P` (`zl`: over the
/// lengthscales, `z`: not, both `n × d` row-major) and query points `zq` (`m × d`, internal
/// units, not over the lengthscales), and the prior variances of the queries.
pub(crate) fn cross_kernel(
    kernel: Kernel,
    hyp: &Hyp,
    zl: &[f64],
    z: &[f64],
    zq: &[f64],
) -> (Mat<f64>, Vec<f64>) {
    let d = hyp.ls.len();
    let n = zl.len() / d;
    let m = zq.len() / d;
    let lin = hyp.lin;
    // Linear term: c zᵢᵀz* through one product, and the prior variances c |z*|².
    let (klin, qlin) = if lin > 0.0 {
        let a = Mat::from_fn(n, d, |i, k| z[i * d + k]);
        let b = Mat::from_fn(d, m, |k, j| zq[j * d + k]);
        let mut kl = Mat::<f64>::zeros(n, m);
        matmul(
            kl.as_mut(),
            Accum::Replace,
            a.as_ref(),
            b.as_ref(),
            lin,
            Par::Seq,
        );
        let q: Vec<f64> = zq.chunks_exact(d).map(|r| lin * dot(r, r)).collect();
        (Some(kl), q)
    } else {
        (None, vec![0.0; m])
    };
    let zql = divide_ls(zq, &hyp.ls);
    // Cross-distances through one product: r² = |a|² + |b|² − 2 a·b.
    let a = Mat::from_fn(n, d, |i, k| zl[i * d + k]);
    let b = Mat::from_fn(d, m, |k, j| zql[j * d + k]);
    let mut kq = Mat::<f64>::zeros(n, m);
    matmul(
        kq.as_mut(),
        Accum::Replace,
        a.as_ref(),
        b.as_ref(),
        -2.0,
        Par::Seq,
    );
    let sq_norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>();
    let na: Vec<f64> = zl.chunks_exact(d).map(sq_norm).collect();
    for j in 0..m {
        let nb = sq_norm(&zql[j * d..(j + 1) * d]);
        let col = kq.col_as_slice_mut(j);
        for (v, &ni) in col.iter_mut().zip(&na) {
            *v = hyp.os * kernel.phi(*v + ni + nb);
        }
        if let Some(kl) = klin.as_ref() {
            for (v, &t) in col.iter_mut().zip(kl.col_as_slice(j)) {
                *v += t;
            }
        }
    }
    let prior = qlin.iter().map(|q| hyp.os + q).collect();
    (kq, prior)
}

/// The basis of a posterior mean `m + k(x)ᵀα` over points `P` (internal units): what
/// [`point_posterior`] needs besides the query.
pub(crate) struct Basis<'a> {
    /// Covariance function.
    pub kernel: Kernel,
    /// The transform from coordinates to internal units.
    pub tf: &'a Transform,
    /// Hyperparameters (internal units).
    pub hyp: &'a Hyp,
    /// Points over the lengthscales (`n × d`).
    pub zl: &'a [f64],
    /// Points (`n × d`).
    pub z: &'a [f64],
    /// Weights of the mean.
    pub alpha: &'a [f64],
}

/// The mean `m + k(x)ᵀα` of a posterior at the points `x` (`q × d`, objective units), in
/// parallel blocks: [`Posterior::predict_mean`] of the exact and the sparse GP, the same
/// values as their `predict`'s means.
pub(crate) fn basis_mean(b: &Basis<'_>, x: &[f64]) -> Vec<f64> {
    let d = b.hyp.ls.len();
    predict_blocked(x, d, b.tf, |xb, mb, _| {
        let mut zq = Vec::with_capacity(xb.len());
        for xr in xb.chunks_exact(d) {
            b.tf.z(xr, &mut zq);
        }
        let (kq, _) = cross_kernel(b.kernel, b.hyp, b.zl, b.z, &zq);
        for (j, mj) in mb.iter_mut().enumerate() {
            *mj = b.hyp.mean + dot(kq.col_as_slice(j), b.alpha);
        }
    })
    .0
}

/// Mean, standard deviation and their gradients at `x` (objective units) of a posterior with
/// mean `m + k(x)ᵀα` and variance `k(x, x) − k(x)ᵀW k(x)`: `explain(k)` replaces `k` by
/// `W k` and returns `k(x)ᵀW k(x)`.
pub(crate) fn point_posterior(
    b: &Basis,
    x: &[f64],
    explain: impl FnOnce(&mut Vec<f64>) -> f64,
) -> PointPosterior {
    let Basis {
        kernel,
        tf,
        hyp,
        zl,
        z,
        alpha,
    } = *b;
    let d = hyp.ls.len();
    assert_eq!(x.len(), d, "query point of the wrong dimension");
    let mut zq = Vec::with_capacity(d);
    tf.z(x, &mut zq);
    let zraw = zq.clone();
    let lin = hyp.lin;
    zq.iter_mut().zip(&hyp.ls).for_each(|(v, l)| *v /= l);
    let n = alpha.len();
    let mut k = vec![0.0; n];
    // c_i = ∂k_i/∂r² (times 2, the derivative of r² being 2Δ/ℓ in zl units).
    let mut c = vec![0.0; n];
    for (i, zi) in zl.chunks_exact(d).enumerate() {
        let (phi, slope) = kernel.phi_and_slope(sq_dist(zi, &zq));
        k[i] = hyp.os * phi;
        c[i] = 2.0 * hyp.os * slope;
    }
    if lin > 0.0 {
        for (ki, zi) in k.iter_mut().zip(z.chunks_exact(d)) {
            *ki += lin * dot(zi, &zraw);
        }
    }
    let mean_s = hyp.mean + dot(&k, alpha);
    let mut w = k;
    let explained = explain(&mut w); // w = W k*
    let prior_var = hyp.os + lin * dot(&zraw, &zraw);
    let var_s = (prior_var - explained).max(0.0);
    // ∂k_i/∂zq_j = c_i (zq_j − zl_ij); chain to x: × x_scale / ℓ_j.
    let mut gm = vec![0.0; d];
    let mut gv = vec![0.0; d];
    let (mut sa, mut sw) = (0.0, 0.0);
    for (i, zi) in zl.chunks_exact(d).enumerate() {
        let (a, b) = (alpha[i] * c[i], w[i] * c[i]);
        sa += a;
        sw += b;
        for ((gmj, gvj), &zij) in gm.iter_mut().zip(gv.iter_mut()).zip(zi) {
            *gmj -= a * zij;
            *gvj -= b * zij;
        }
    }
    let (ym, ysd) = (tf.y_mean, tf.y_std);
    let std_s = var_s.sqrt();
    // Linear term: ∂k_i/∂z*_j = c z_ij, and the prior variance's 2c z*_j.
    let (mut lm, mut lv) = (vec![0.0; d], vec![0.0; d]);
    if lin > 0.0 {
        for (i, zi) in z.chunks_exact(d).enumerate() {
            let (a, b) = (lin * alpha[i], lin * w[i]);
            for ((lmj, lvj), &zij) in lm.iter_mut().zip(lv.iter_mut()).zip(zi) {
                *lmj += a * zij;
                *lvj += b * zij;
            }
        }
    }
    let mut grad_mean = vec![0.0; d];
    let mut grad_std = vec![0.0; d];
    for j in 0..d {
        // x → warped u → z: dz/dx = x_scale · du/dx.
        let xs = tf.x_scale * tf.warp.slope(x[j]);
        let chain = xs / hyp.ls[j];
        let dm = (gm[j] + sa * zq[j]) * chain + lm[j] * xs;
        let dv = -2.0 * (gv[j] + sw * zq[j]) * chain + 2.0 * (lin * zraw[j] - lv[j]) * xs;
        grad_mean[j] = ysd * dm;
        grad_std[j] = if std_s > 1e-12 * hyp.os.sqrt() {
            ysd * dv / (2.0 * std_s)
        } else {
            0.0
        };
    }
    PointPosterior {
        mean: ym + ysd * mean_s,
        std: ysd * std_s,
        grad_mean,
        grad_std,
    }
}

pub(crate) fn internal_data(tf: &Transform, x: &[Vec<f64>], y: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut z = Vec::with_capacity(x.len() * x[0].len());
    for xi in x {
        tf.z(xi, &mut z);
    }
    let ys = y.iter().map(|v| (v - tf.y_mean) / tf.y_std).collect();
    (z, ys)
}

impl Gp {
    /// The mean's basis (`m + k(x)ᵀalpha` over the trials) for
    /// [`basis_mean`] and [`point_posterior`].
    fn basis(&self) -> Basis<'_> {
        Basis {
            kernel: self.kernel,
            tf: &self.tf,
            hyp: &self.hyp,
            zl: &self.zl,
            z: &self.z,
            alpha: &self.alpha,
        }
    }
}

impl Posterior for Gp {
    fn dim(&self) -> usize {
        self.d
    }

    fn predict(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        predict_blocked(x, self.d, &self.tf, |xb, mb, vb| {
            self.predict_block(xb, mb, vb)
        })
    }

    fn predict_mean(&self, x: &[f64]) -> Vec<f64> {
        let basis = self.basis();
        basis_mean(&basis, x)
    }

    fn predict_point(&self, x: &[f64]) -> PointPosterior {
        let basis = self.basis();
        point_posterior(&basis, x, |w| {
            solve_l(&self.l, w);
            let s = w.iter().map(|v| v * v).sum::<f64>();
            solve_lt(&self.l, w); // w = K⁻¹ k*
            s
        })
    }

    fn fantasize(&mut self, x: &[f64]) {
        let mu = self.predict_point(x).mean;
        if let Err(e) = self.add_observation(x, mu) {
            tracing::warn!("could not condition on a pending point: {e}");
        }
    }

    fn fantasize_many(&mut self, xs: &[f64]) {
        // Fantasies at the mean leave the mean unchanged, so conditioning on all of them at
        // their present means equals conditioning on them one by one.
        let (mu, _) = self.predict(xs);
        if let Err(e) = self.add_observations(xs, &mu) {
            tracing::warn!("could not condition on the pending points: {e}");
        }
    }
}
