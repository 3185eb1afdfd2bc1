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
//!
//! At scale (more than [`SCALE_THRESHOLD`] trials; below it nothing here changes) each
//! likelihood evaluation of all `n` trials costs O(n³), so by default ([`FitStrategy::Auto`])
//! the hyperparameters are fitted on a deterministic subset of [`DEFAULT_FIT_SUBSET`] trials
//! ([`fit_subset`]: the best quarter by objective, the rest drawn with the fit's seed), and
//! a fit given the previous round's optimum (a warm start) runs from it plus
//! `GpConfig::warm_restarts` (default 0) of the usual starts instead of `1 + restarts`; a cold
//! fit there runs `1 + min(restarts, SCALED_RESTARTS)` starts (two, one per core).

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
    /// Which trials the hyperparameters are fitted on (`auto`: all of them up to
    /// [`SCALE_THRESHOLD`] trials, a subset of [`DEFAULT_FIT_SUBSET`] above).
    pub fit: FitStrategy,
    /// Which posterior is built with the fitted hyperparameters (`auto`: exact up to
    /// [`SPARSE_THRESHOLD`] trials, sparse with [`DEFAULT_INDUCING`] inducing points above).
    pub posterior: PosteriorStrategy,
    /// Starts besides the previous optimum when a fit is warm-started (above
    /// [`SCALE_THRESHOLD`] trials only).
    pub warm_restarts: usize,
    /// Refit schedule above [`SCALE_THRESHOLD`] trials: a fit that has the hyperparameters of
    /// an optimisation on `at` trials (more than [`SCALE_THRESHOLD`]) re-optimises them only
    /// once `n > at · (1 + refit_growth)`; until then it conditions the posterior on all `n`
    /// trials with those hyperparameters ([`GpConfig::reoptimises`]). 0 re-optimises every
    /// time. Default [`DEFAULT_REFIT_GROWTH`].
    pub refit_growth: f64,
    /// Trials pending besides the observations (running; set by GP-UCB, never read from a
    /// config): the scale of a fit counts them. With finished plus pending trials above
    /// [`SCALE_THRESHOLD`] warm starts, restarts capped at [`SCALED_RESTARTS`] and the
    /// refit schedule apply, and above [`SPARSE_THRESHOLD`] the posterior is sparse under
    /// [`PosteriorStrategy::Auto`] (the batch conditions on the pending trials too), as in
    /// an asynchronous search on many slots.
    #[serde(skip)]
    pub pending: usize,
}

/// Above this many trials the scalable strategies switch on: hyperparameters fitted on a
/// subset ([`FitStrategy::Auto`]), warm starts, and GP-UCB's batch selection by rank-1
/// updates of the candidates' variances. At or below it everything runs as it always has
/// (so the search-quality benchmark, n ≤ 128, is unchanged).
pub const SCALE_THRESHOLD: usize = 512;
/// Random restarts of a cold fit above [`SCALE_THRESHOLD`] trials (or on a subset), at most.
pub const SCALED_RESTARTS: usize = 1;
/// Trials in the hyperparameter fit's subset under [`FitStrategy::Auto`] above
/// [`SCALE_THRESHOLD`].
pub const DEFAULT_FIT_SUBSET: usize = 384;
/// Above this many trials [`PosteriorStrategy::Auto`] builds a sparse posterior.
pub const SPARSE_THRESHOLD: usize = 1024;
/// Inducing points of the sparse posterior under [`PosteriorStrategy::Auto`].
pub const DEFAULT_INDUCING: usize = 512;
/// Growth of the trials (a fraction) after which a warm GP re-optimises its hyperparameters
/// ([`GpConfig::refit_growth`]): 10 %, i.e. every 100 trials at n = 1,000 and every 1,000 at
/// n = 10,000; in between a round only rebuilds the posterior.
pub const DEFAULT_REFIT_GROWTH: f64 = 0.1;

impl GpConfig {
    /// Whether a fit of `n` trials re-optimises the hyperparameters when it has those of an
    /// optimisation on `at` trials (`None`: none): always at or below [`SCALE_THRESHOLD`]
    /// trials, with an input warp, without a previous optimisation above the threshold, when
    /// trials were removed, or once `n` exceeds `at · (1 + refit_growth)`.
    pub fn reoptimises(&self, n: usize, at: Option<usize>) -> bool {
        match at {
            Some(at) if self.scaled(n) && self.scaled(at) && n >= at => {
                !self.warp.is_none() || n as f64 > at as f64 * (1.0 + self.refit_growth.max(0.0))
            }
            _ => true,
        }
    }

    /// Whether a fit of `n` trials runs at scale (warm-started, capped restarts).
    pub(crate) fn scaled(&self, n: usize) -> bool {
        n + self.pending > SCALE_THRESHOLD
    }

    /// The inducing points of the posterior of `n` observations (`None`: exact), counting
    /// the pending trials under [`PosteriorStrategy::Auto`]; never `n` or more.
    pub(crate) fn inducing(&self, n: usize) -> Option<usize> {
        self.posterior.inducing(n + self.pending).filter(|&m| m < n)
    }
}

/// Which trials the hyperparameters are fitted on. Written `auto`, `exact` or `subset:M`
/// (configs and `--gp-fit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FitStrategy {
    /// All trials up to [`SCALE_THRESHOLD`], [`DEFAULT_FIT_SUBSET`] of them above.
    #[default]
    Auto,
    /// Always all trials (each likelihood evaluation O(n³)).
    Exact,
    /// A subset of this many trials whenever there are more ([`fit_subset`]).
    Subset(usize),
}

impl FitStrategy {
    /// How many trials the fit uses out of `n`: `None` for all of them.
    pub fn subset_size(self, n: usize) -> Option<usize> {
        let m = match self {
            FitStrategy::Exact => return None,
            FitStrategy::Auto if n <= SCALE_THRESHOLD => return None,
            FitStrategy::Auto => DEFAULT_FIT_SUBSET,
            FitStrategy::Subset(m) => m,
        };
        (m < n).then_some(m)
    }
}

/// Which posterior is built. Written `auto`, `exact` or `sparse:M` (configs and
/// `--gp-posterior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PosteriorStrategy {
    /// Exact up to [`SPARSE_THRESHOLD`] trials, sparse with [`DEFAULT_INDUCING`] above.
    #[default]
    Auto,
    /// Always exact (a Cholesky factor of all `n` trials, O(n³)).
    Exact,
    /// Sparse (DTC, see [`super::sparse`]) with this many inducing points whenever there are
    /// more trials.
    Sparse(usize),
}

impl PosteriorStrategy {
    /// The number of inducing points for `n` trials: `None` for the exact posterior.
    pub fn inducing(self, n: usize) -> Option<usize> {
        let m = match self {
            PosteriorStrategy::Exact => return None,
            PosteriorStrategy::Auto if n <= SPARSE_THRESHOLD => return None,
            PosteriorStrategy::Auto => DEFAULT_INDUCING,
            PosteriorStrategy::Sparse(m) => m,
        };
        (m < n).then_some(m)
    }
}

/// A `--gp-fit` / `--gp-posterior` value (or config string) that is not a strategy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: expected auto, exact or {prefix}:M (M ≥ 2 trials)")]
pub struct StrategyError {
    /// What was given.
    pub text: String,
    /// `subset` or `sparse`.
    pub prefix: &'static str,
}

/// A parsed strategy: `None` for auto, `Some(None)` for exact, `Some(Some(M))` for `prefix:M`.
type ParsedStrategy = Option<Option<usize>>;

/// `"auto"`, `"exact"` or `"<prefix>:M"` with `M ≥ 2`.
fn parse_strategy(s: &str, prefix: &'static str) -> Result<ParsedStrategy, StrategyError> {
    match s.trim() {
        "auto" => Ok(None),
        "exact" => Ok(Some(None)),
        t => {
            let m = t
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|r| r.parse::<usize>().ok())
                .filter(|&m| m >= 2)
                .ok_or_else(|| StrategyError {
                    text: s.to_string(),
                    prefix,
                })?;
            Ok(Some(Some(m)))
        }
    }
}

impl std::str::FromStr for FitStrategy {
    type Err = StrategyError;
    fn from_str(s: &str) -> Result<Self, StrategyError> {
        Ok(match parse_strategy(s, "subset")? {
            None => FitStrategy::Auto,
            Some(None) => FitStrategy::Exact,
            Some(Some(m)) => FitStrategy::Subset(m),
        })
    }
}

impl std::fmt::Display for FitStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitStrategy::Auto => f.write_str("auto"),
            FitStrategy::Exact => f.write_str("exact"),
            FitStrategy::Subset(m) => write!(f, "subset:{m}"),
        }
    }
}

impl TryFrom<String> for FitStrategy {
    type Error = StrategyError;
    fn try_from(s: String) -> Result<Self, StrategyError> {
        s.parse()
    }
}

impl From<FitStrategy> for String {
    fn from(s: FitStrategy) -> String {
        s.to_string()
    }
}

impl std::str::FromStr for PosteriorStrategy {
    type Err = StrategyError;
    fn from_str(s: &str) -> Result<Self, StrategyError> {
        Ok(match parse_strategy(s, "sparse")? {
            None => PosteriorStrategy::Auto,
            Some(None) => PosteriorStrategy::Exact,
            Some(Some(m)) => PosteriorStrategy::Sparse(m),
        })
    }
}

impl std::fmt::Display for PosteriorStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PosteriorStrategy::Auto => f.write_str("auto"),
            PosteriorStrategy::Exact => f.write_str("exact"),
            PosteriorStrategy::Sparse(m) => write!(f, "sparse:{m}"),
        }
    }
}

impl TryFrom<String> for PosteriorStrategy {
    type Error = StrategyError;
    fn try_from(s: String) -> Result<Self, StrategyError> {
        s.parse()
    }
}

impl From<PosteriorStrategy> for String {
    fn from(s: PosteriorStrategy) -> String {
        s.to_string()
    }
}

/// The trials of a hyperparameter fit on a subset of `m` of the `y.len()` trials: the best
/// `m/4` by objective (ties to the earlier trial), then the rest drawn uniformly without
/// replacement with `seed`. Sorted indices; deterministic.
pub fn fit_subset(y: &[f64], m: usize, seed: u64) -> Vec<usize> {
    let n = y.len();
    if m >= n {
        return (0..n).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| y[b].total_cmp(&y[a]).then(a.cmp(&b)));
    let top = m / 4;
    let mut rest: Vec<usize> = order[top..].to_vec();
    rest.sort_unstable();
    let mut rng = SplitMix64::derive(seed, 0x5_0B5E7);
    // Partial Fisher–Yates: the first m − top of `rest` become a uniform draw.
    for i in 0..m - top {
        let j = i + rng.below((rest.len() - i) as u64) as usize;
        rest.swap(i, j);
    }
    let mut out: Vec<usize> = order[..top].to_vec();
    out.extend_from_slice(&rest[..m - top]);
    out.sort_unstable();
    out
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
            fit: FitStrategy::Auto,
            posterior: PosteriorStrategy::Auto,
            warm_restarts: 0,
            refit_growth: DEFAULT_REFIT_GROWTH,
            pending: 0,
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

    /// The optimisation variables of `h` (the inverse of [`Layout::hyp`]), clamped to the
    /// range the objective accepts; a missing linear variance starts at its prior's mode.
    fn params_of(&self, h: &Hyp) -> Vec<f64> {
        let d = self.d;
        let clamp = |v: f64| {
            if v.is_finite() {
                v.clamp(-39.0, 39.0)
            } else {
                0.0
            }
        };
        let mut p: Vec<f64> = h.ls.iter().map(|v| clamp(v.ln())).collect();
        p.push(clamp(h.os.ln()));
        if self.fixed_noise.is_none() {
            p.push(clamp((h.noise - NOISE_FLOOR).max(1e-12).ln()));
        }
        p.push(clamp(h.mean));
        if self.linear {
            p.push(if h.lin > 0.0 {
                clamp(h.lin.ln())
            } else {
                linear_prior_loc(d) - LIN_SIGMA * LIN_SIGMA
            });
        }
        p
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

/// Where a fit starts: from a previous optimum (`warm`, internal units), and whether it runs
/// at scale (`scaled`: on a subset, so a cold fit caps its restarts at [`SCALED_RESTARTS`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FitStart<'a> {
    pub warm: Option<&'a Hyp>,
    pub scaled: bool,
}

/// Fits hyperparameters (internal units) to inputs `z` (`n × d` row-major) and standardised
/// targets `ys`. `fixed_noise` is in standardised units. With `start.warm` (the previous optimum,
/// internal units) the starts are `warm` then the first `cfg.warm_restarts` usual starts;
/// more than [`SCALE_THRESHOLD`] trials or `scaled` (a subset) cap a cold fit's random
/// restarts at [`SCALED_RESTARTS`].
pub(crate) fn fit_hyperparameters(
    z: &[f64],
    ys: &[f64],
    d: usize,
    cfg: &GpConfig,
    fixed_noise: Option<f64>,
    start: FitStart,
) -> Result<Hyp, GpError> {
    let FitStart { warm, scaled } = start;
    let layout = Layout {
        d,
        fixed_noise,
        linear: cfg.linear,
    };
    // Above the threshold a cold fit runs only 1 + SCALED_RESTARTS starts (two, one per
    // core): at scale each start costs seconds.
    let restarts = if ys.len() > SCALE_THRESHOLD || scaled {
        cfg.restarts.min(SCALED_RESTARTS)
    } else {
        cfg.restarts
    };
    let starts: Vec<Vec<f64>> = match warm {
        Some(h) if h.ls.len() == d => std::iter::once(layout.params_of(h))
            .chain((0..cfg.warm_restarts).map(|r| layout.start(r, cfg.seed)))
            .collect(),
        _ => (0..=restarts).map(|r| layout.start(r, cfg.seed)).collect(),
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
        starts = starts.len(),
        warm = warm.is_some(),
        max_iter = cfg.max_iter,
        "GP fit: starting (each likelihood evaluation is O(trials³))"
    );
    let results: Vec<StartResult> = starts
        .into_par_iter()
        .enumerate()
        .map(|(r, p0)| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_print_and_resolve() {
        for (text, fit) in [
            ("auto", FitStrategy::Auto),
            ("exact", FitStrategy::Exact),
            ("subset:300", FitStrategy::Subset(300)),
        ] {
            assert_eq!(text.parse::<FitStrategy>().unwrap(), fit);
            assert_eq!(fit.to_string(), text);
            let json = serde_json::to_string(&fit).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<FitStrategy>(&json).unwrap(), fit);
        }
        assert_eq!(
            "sparse:1024".parse::<PosteriorStrategy>().unwrap(),
            PosteriorStrategy::Sparse(1024)
        );
        for bad in ["subset", "subset:1", "subset:x", "sparse:64", "fast"] {
            let e = bad.parse::<FitStrategy>().unwrap_err().to_string();
            assert!(e.contains("auto, exact or subset:M"), "{e}");
        }
        assert!("subset:64".parse::<PosteriorStrategy>().is_err());
        // Auto: nothing changes up to the thresholds.
        assert_eq!(FitStrategy::Auto.subset_size(SCALE_THRESHOLD), None);
        assert_eq!(
            FitStrategy::Auto.subset_size(SCALE_THRESHOLD + 1),
            Some(DEFAULT_FIT_SUBSET)
        );
        assert_eq!(FitStrategy::Subset(100).subset_size(80), None);
        assert_eq!(FitStrategy::Exact.subset_size(100_000), None);
        assert_eq!(PosteriorStrategy::Auto.inducing(SPARSE_THRESHOLD), None);
        assert_eq!(
            PosteriorStrategy::Auto.inducing(SPARSE_THRESHOLD + 1),
            Some(DEFAULT_INDUCING)
        );
        assert_eq!(PosteriorStrategy::Sparse(64).inducing(10), None);
        // A config without the keys is the default; with them, they are read.
        let c: GpConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, GpConfig::default());
        let c: GpConfig =
            serde_json::from_str(r#"{"fit": "subset:200", "posterior": "sparse:256"}"#).unwrap();
        assert_eq!(
            (c.fit, c.posterior),
            (FitStrategy::Subset(200), PosteriorStrategy::Sparse(256))
        );
        assert!(serde_json::from_str::<GpConfig>(r#"{"fit": "some"}"#).is_err());
    }

    #[test]
    fn fit_subset_keeps_the_best_quarter_and_is_deterministic() {
        let y: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64).collect();
        let s = fit_subset(&y, 100, 3);
        assert_eq!(s, fit_subset(&y, 100, 3));
        assert_ne!(s, fit_subset(&y, 100, 4));
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        // The 25 best (y = 975..999) are all in.
        let best: Vec<usize> = (0..1000).filter(|&i| y[i] >= 975.0).collect();
        assert!(best.iter().all(|i| s.contains(i)));
        assert_eq!(fit_subset(&y[..50], 100, 0), (0..50).collect::<Vec<_>>());
    }
}
