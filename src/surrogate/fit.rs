//! Hyperparameter fitting: maximum a posteriori under weak priors, by L-BFGS in log space.
//!
//! The settings of a fit ([`GpConfig`]) live here too. Internal units ([`super::gp`]): standardised objective, inputs centred and scaled to the
//! spread of the unit cube. The priors (densities of the hyperparameter values, as GPyTorch
//! evaluates them, so the log density includes the `−log v` Jacobian term):
//!
//! - lengthscales: `LogNormal(√2 + ½ log d, √3)` each (BoTorch's current default, Hvarfner et
//!   al. 2024; mode `exp(√2 + ½ log d − 3)`, e.g. 0.65 at d = 10, 1.45 at d = 50);
//! - outputscale `s²`: `LogNormal(1, 1)` (mode 1, the standardised variance; BoTorch's current
//!   default has no outputscale, older ones used `Gamma(2, 0.15)`);
//! - noise `σ²`: `σ² = 10⁻⁶ + e` with `e ~ LogNormal(−4, 1)` (BoTorch's default noise prior
//!   `LogNormal(−4, 1)`, mode ≈ 0.0067; the floor, like BoTorch's `GreaterThan(1e-4)`, keeps
//!   the factorisation well conditioned);
//! - constant mean: flat.
//!
//! The objective `−(log p(y | θ) + log p(θ))` is minimised from `1 + restarts` starts: the
//! prior modes (mean 0, noise 0.01), then random starts (a common log-lengthscale shift drawn
//! uniformly in `[−1.5, 2.5]` around the mode with per-coordinate jitter N(0, 0.3²), log
//! outputscale ~ N(0, 0.5²), noise log-uniform in `[1e-4, 0.2]`, mean ~ N(0, 0.25²)). Starts run
//! in parallel (rayon) and the best MAP value wins (ties to the earlier start), so the result
//! does not depend on the thread count.

use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::GpError;
use super::kernel::Kernel;
use super::lbfgs::{minimize, LbfgsConfig};
use super::likelihood::{lml_grad, Hyp};
use super::warp::InputWarp;
use crate::rng::SplitMix64;

/// Settings of the hyperparameter fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpConfig {
    /// Covariance function.
    pub kernel: Kernel,
    /// Random restarts of the optimiser in addition to the one from the default start.
    pub restarts: usize,
    /// L-BFGS iterations per start.
    pub max_iter: usize,
    /// Seed of the random restarts.
    pub seed: u64,
    /// Fixed observation-noise variance in objective units (squared objective units); `None`
    /// fits it.
    pub fixed_noise: Option<f64>,
    /// Adds a linear kernel `c · (x − x̄)ᵀ(x' − x̄)` to the stationary one (Bayesian linear
    /// regression on the coordinates, with a fitted variance `c`): the posterior mean can then
    /// follow a global trend and extrapolate it to the faces of the simplex.
    pub linear: bool,
    /// Warp applied to every input coordinate before the kernel (`u = ln(x + ε)` with
    /// [`InputWarp::Log`]; see [`super::warp`]); none by default.
    pub warp: InputWarp,
}

impl Default for GpConfig {
    fn default() -> Self {
        Self {
            kernel: Kernel::Matern52,
            restarts: 3,
            max_iter: 200,
            seed: 0,
            fixed_noise: None,
            linear: true,
            warp: InputWarp::None,
        }
    }
}

/// Lower bound on the fitted noise variance (standardised units).
pub const NOISE_FLOOR: f64 = 1e-6;
/// `σ` of the lengthscale prior (`√3`).
const LS_SIGMA: f64 = 1.732_050_807_568_877_2;
/// `μ` and `σ` of the outputscale prior.
const OS_PRIOR: (f64, f64) = (1.0, 1.0);
/// `μ` and `σ` of the noise prior (on the noise above the floor).
const NOISE_PRIOR: (f64, f64) = (-4.0, 1.0);
/// `σ` of the prior of the linear variance.
const LIN_SIGMA: f64 = 1.0;

/// `μ` of the prior of the linear variance `c` at dimension `d`: `1 + log(12/d)`, so that the
/// linear term's prior variance at a typical point, `c · E|z|² = c · d/12`, has the outputscale's
/// prior `LogNormal(1, 1)`.
pub fn linear_prior_loc(d: usize) -> f64 {
    1.0 + (12.0 / d as f64).ln()
}

/// `μ` of the lengthscale prior at dimension `d`: `√2 + ½ log d`.
pub fn lengthscale_prior_loc(d: usize) -> f64 {
    std::f64::consts::SQRT_2 + 0.5 * (d as f64).ln()
}

/// Log density of `LogNormal(μ, σ)` at `v = exp(θ)` and its derivative with respect to `θ`.
fn log_normal(theta: f64, (mu, sigma): (f64, f64)) -> (f64, f64) {
    let t = (theta - mu) / sigma;
    let lp = -theta - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln() - 0.5 * t * t;
    (lp, -1.0 - t / sigma)
}

/// The optimisation variables: `[log ℓ (d), log s², (log(σ² − floor) if fitted), m]`.
struct Layout {
    d: usize,
    fixed_noise: Option<f64>,
    linear: bool,
}

impl Layout {
    fn len(&self) -> usize {
        self.d + if self.fixed_noise.is_some() { 2 } else { 3 } + usize::from(self.linear)
    }

    fn hyp(&self, p: &[f64]) -> Hyp {
        let d = self.d;
        let (noise, mean) = match self.fixed_noise {
            Some(v) => (v, p[d + 1]),
            None => (NOISE_FLOOR + p[d + 1].exp(), p[d + 2]),
        };
        Hyp {
            ls: p[..d].iter().map(|v| v.exp()).collect(),
            os: p[d].exp(),
            noise,
            mean,
            lin: if self.linear {
                p[self.len() - 1].exp()
            } else {
                0.0
            },
        }
    }

    /// `−(LML + log prior)` and its gradient.
    fn objective(
        &self,
        p: &[f64],
        z: &[f64],
        ys: &[f64],
        cfg: &GpConfig,
    ) -> Option<(f64, Vec<f64>)> {
        let d = self.d;
        if p.iter().any(|v| !v.is_finite() || v.abs() > 40.0) {
            return None;
        }
        let hyp = self.hyp(p);
        let g = lml_grad(z, ys, cfg.kernel, &hyp, true).ok()?;
        let mut f = g.lml;
        let mut grad = Vec::with_capacity(p.len());
        let ls_prior = (lengthscale_prior_loc(d), LS_SIGMA);
        for (k, &dk) in g.d_log_ls.iter().enumerate() {
            let (lp, dlp) = log_normal(p[k], ls_prior);
            f += lp;
            grad.push(dk + dlp);
        }
        let (lp, dlp) = log_normal(p[d], OS_PRIOR);
        f += lp;
        grad.push(g.d_log_os + dlp);
        if self.fixed_noise.is_none() {
            let e = p[d + 1].exp();
            let (lp, dlp) = log_normal(p[d + 1], NOISE_PRIOR);
            f += lp;
            grad.push(g.d_noise * e + dlp);
        }
        grad.push(g.d_mean);
        if self.linear {
            let (lp, dlp) = log_normal(p[self.len() - 1], (linear_prior_loc(d), LIN_SIGMA));
            f += lp;
            grad.push(g.d_log_lin + dlp);
        }
        Some((-f, grad.into_iter().map(|v| -v).collect()))
    }

    fn start(&self, restart: usize, seed: u64) -> Vec<f64> {
        let d = self.d;
        let mode = lengthscale_prior_loc(d) - LS_SIGMA * LS_SIGMA;
        let mut p = Vec::with_capacity(self.len());
        if restart == 0 {
            p.extend(std::iter::repeat_n(mode, d));
            p.push(0.0);
            if self.fixed_noise.is_none() {
                p.push((0.01f64 - NOISE_FLOOR).ln());
            }
            p.push(0.0);
            if self.linear {
                p.push(linear_prior_loc(d) - LIN_SIGMA * LIN_SIGMA);
            }
            return p;
        }
        let mut rng = SplitMix64::derive(seed, restart as u64);
        let shift = -1.5 + 4.0 * rng.next_f64();
        p.extend((0..d).map(|_| mode + shift + 0.3 * rng.normal()));
        p.push(0.5 * rng.normal());
        if self.fixed_noise.is_none() {
            let lo = 1e-4f64.ln();
            let hi = 0.2f64.ln();
            p.push(lo + (hi - lo) * rng.next_f64());
        }
        p.push(0.25 * rng.normal());
        if self.linear {
            p.push(linear_prior_loc(d) - LIN_SIGMA * LIN_SIGMA + rng.normal());
        }
        p
    }
}

/// How often a long computation logs that it is still running (at debug level, `-v`).
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Counts the steps of a long computation and calls back every [`HEARTBEAT`] with the count
/// and the seconds since `started`, so `-v` shows progress within seconds.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    started: Instant,
    last: Instant,
    count: u64,
}

impl Heartbeat {
    /// A heartbeat of a computation that started at `started` (the first beat comes
    /// [`HEARTBEAT`] after it).
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last: started,
            count: 0,
        }
    }

    /// Counts one step; calls `log(steps so far, seconds since the start)` when the last
    /// beat was [`HEARTBEAT`] or longer ago.
    pub fn tick(&mut self, log: impl FnOnce(u64, f64)) {
        self.count += 1;
        if self.last.elapsed() >= HEARTBEAT {
            self.last = Instant::now();
            log(self.count, self.started.elapsed().as_secs_f64());
        }
    }
}

/// Fits hyperparameters (internal units) to inputs `z` (`n × d` row-major) and standardised
/// targets `ys`. `fixed_noise` is in standardised units.
pub(crate) fn fit_hyperparameters(
    z: &[f64],
    ys: &[f64],
    d: usize,
    cfg: &GpConfig,
    fixed_noise: Option<f64>,
) -> Result<Hyp, GpError> {
    let layout = Layout {
        d,
        fixed_noise,
        linear: cfg.linear,
    };
    let lcfg = LbfgsConfig {
        max_iter: cfg.max_iter,
        gtol: 1e-5,
        ftol: 1e-9,
        ..Default::default()
    };
    // Per start: (objective, parameters, iterations, converged), or None if it failed.
    type StartResult = Option<(f64, Vec<f64>, usize, bool)>;
    let started = Instant::now();
    tracing::debug!(
        trials = ys.len(),
        dim = d,
        starts = cfg.restarts + 1,
        max_iter = cfg.max_iter,
        "GP fit: starting (each likelihood evaluation is O(trials³))"
    );
    let results: Vec<StartResult> = (0..=cfg.restarts)
        .into_par_iter()
        .map(|r| {
            let p0 = layout.start(r, cfg.seed);
            let mut beat = Heartbeat::new(started);
            let objective = |p: &[f64]| {
                beat.tick(|evals, secs| {
                    tracing::debug!(restart = r, evals, secs, "GP fit: start still running")
                });
                layout.objective(p, z, ys, cfg)
            };
            let res = minimize(objective, p0, &lcfg)?;
            Some((res.f, res.x, res.iterations, res.converged))
        })
        .collect();
    let mut best: Option<(usize, f64, Vec<f64>)> = None;
    for (r, res) in results.into_iter().enumerate() {
        if let Some((f, x, iters, converged)) = res {
            tracing::debug!(restart = r, neg_map = f, iters, converged, "GP fit start");
            if best.as_ref().is_none_or(|b| f < b.1) {
                best = Some((r, f, x));
            }
        }
    }
    match best {
        Some((r, f, x)) => {
            let secs = started.elapsed().as_secs_f64();
            tracing::debug!(best_restart = r, neg_map = f, secs, "GP fit");
            Ok(layout.hyp(&x))
        }
        None => Err(GpError::NotPositiveDefinite {
            n: ys.len(),
            jitter: 1e-2,
        }),
    }
}
