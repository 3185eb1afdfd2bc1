//! GP-UCB with batch proposals (GP-BUCB) over the mixture space.
//!
//! Three layers, as in BoTorch: the model ([`Gp`]) gives a [`Posterior`]; the acquisition
//! `UCB(x) = μ(x) + √β σ(x)` values points from the posterior alone; an optimiser maximises it
//! over the space. The optimiser scores many quasi-random candidates in one batched
//! `predict` (flat Dirichlet draws, a randomly shifted Kronecker low-discrepancy sequence
//! mapped to each simplex by uniform spacings, and perturbations of the best trials), then
//! runs projected-gradient ascent (analytic ∇μ and ∇σ, Euclidean projection onto the bounded
//! simplices, adaptive step with backtracking) from the best few, in parallel.
//!
//! A batch of `q` is chosen greedily (Desautels et al. 2014, GP-BUCB): after each pick the
//! posterior is conditioned on a hallucinated observation equal to its mean there, which
//! leaves μ unchanged and shrinks σ around the pick, so the next maximiser goes elsewhere.
//! Picks closer than `min_distance` to an earlier pick are skipped.
//!
//! Above [`SCALE_THRESHOLD`] trials, finished plus pending (and only there, so smaller
//! searches are unchanged), a batch is chosen at a cost nearly independent of `q`: the
//! candidate pool is scored once ([`FantasyPool`]: blocked, parallel), each pick updates every
//! candidate's variance by a rank-1 fantasy update instead of rescoring the pool, and only
//! the best [`SCALED_STARTS`] candidates are refined by [`SCALED_STEPS`] ascent steps on the
//! fantasized posterior. The surrogate there is a [`Surrogate`] (exact, or sparse past
//! [`crate::surrogate::fit::SPARSE_THRESHOLD`] trials). Above the threshold of finished
//! trials its fit is warm-started from the previous round's hyperparameters
//! ([`GpUcb::seed_hyperparameters`] seeds them on resume), and they are re-optimised only
//! after the trials grow by `GpConfig::refit_growth` (10 %); the rounds in between rebuild
//! the posterior with them.
//!
//! Before `initial_design` trials exist (and whenever the GP cannot be fitted) the proposals
//! are a maximin space-filling design ([`super::design`]).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::design::{maximin, DesignStart};
use super::proposer::{Observations, Proposal, ProposeError, Proposer};
use super::space::SearchSpace;
use crate::rng::SplitMix64;
use crate::surrogate::fit::{Heartbeat, SCALE_THRESHOLD};
use crate::surrogate::{
    FantasyPool, Gp, GpConfig, GpError, GpHyperparameters, LinearCombination, Posterior, Surrogate,
};

/// Ascent starts per batch point above [`SCALE_THRESHOLD`] trials.
pub const SCALED_STARTS: usize = 2;
/// Ascent steps per start above [`SCALE_THRESHOLD`] trials.
pub const SCALED_STEPS: usize = 12;

/// The exploration weight β of `μ + √β σ`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Beta {
    /// A constant β.
    Fixed(f64),
    /// Srinivas et al. (2010, Theorem 1, finite domain): `β_t = 2 log(d t² π² / (6δ))`, with
    /// `t` = number of observations + 1 and `d` the space's dimension, multiplied by `scale`.
    /// The theorem's β is known to over-explore in practice; implementations commonly scale it
    /// down (Kandasamy et al. use a fraction of it). `scale = 1` is the theorem's value.
    Srinivas {
        /// Failure probability δ ∈ (0, 1).
        delta: f64,
        /// Multiplier of the theoretical β (default 0.1).
        #[serde(default = "default_beta_scale")]
        scale: f64,
    },
}

fn default_beta_scale() -> f64 {
    0.1
}

impl Default for Beta {
    fn default() -> Self {
        Beta::Srinivas {
            delta: 0.1,
            scale: default_beta_scale(),
        }
    }
}

impl Beta {
    /// β for a space of dimension `d` when `n` observations exist (`t = n + 1`).
    pub fn value(&self, d: usize, n: usize) -> f64 {
        match *self {
            Beta::Fixed(b) => b,
            Beta::Srinivas { delta, scale } => {
                let t = (n + 1) as f64;
                let pi2 = std::f64::consts::PI * std::f64::consts::PI;
                scale * 2.0 * (d.max(1) as f64 * t * t * pi2 / (6.0 * delta)).ln()
            }
        }
    }
}

/// Settings of [`GpUcb`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpUcbConfig {
    /// The surrogate's fit.
    pub gp: GpConfig,
    /// Exploration weight.
    pub beta: Beta,
    /// Random and quasi-random candidates scored per pick.
    pub candidates: usize,
    /// Best candidates refined by projected-gradient ascent.
    pub starts: usize,
    /// Ascent iterations per start.
    pub ascent_steps: usize,
    /// Trials proposed by the space-filling design before the GP is used; `None` for
    /// `⌈d/2⌉` clamped to 2..=12 (at d = 50 a design of 25 left a 32-trial budget only one UCB round; see docs/search-quality.md).
    pub initial_design: Option<usize>,
    /// Two proposals of one batch closer than this (Euclidean, coordinates) count as
    /// duplicates.
    pub min_distance: f64,
    /// Seed of the candidates and the design (each round draws its own stream).
    pub seed: u64,
    /// First point of the initial design.
    pub start: DesignStart,
}

impl Default for GpUcbConfig {
    fn default() -> Self {
        Self {
            gp: GpConfig::default(),
            beta: Beta::default(),
            candidates: 2048,
            starts: 8,
            ascent_steps: 40,
            initial_design: None,
            min_distance: 1e-3,
            seed: 0,
            start: DesignStart::Centre,
        }
    }
}

impl GpUcbConfig {
    /// The default settings with every random stream (candidates, design, GP restarts)
    /// seeded by `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            gp: GpConfig {
                seed,
                ..GpConfig::default()
            },
            ..Self::default()
        }
    }

    /// Number of space-filling trials at dimension `d`.
    pub fn initial_design_size(&self, d: usize) -> usize {
        self.initial_design.unwrap_or(d.div_ceil(2).clamp(2, 12))
    }
}

/// The proposal for pick `p`, the batch's point `j + 1`, chosen given `given` pending points
/// (earlier picks and running trials): the mean and std of the unconditioned `gp` there.
fn ucb_proposal(
    space: &SearchSpace,
    gp: &Surrogate,
    p: &UcbPoint,
    beta: f64,
    j: usize,
    given: usize,
) -> Proposal {
    let pp = gp.predict_point(&p.x);
    Proposal {
        mixture: space.to_mixture(&p.x),
        x: p.x.clone(),
        mean: Some(pp.mean),
        std: Some(pp.std),
        acquisition: Some(p.value),
        reason: if given == 0 {
            format!("ucb (beta {beta:.3})")
        } else {
            format!(
                "ucb (beta {beta:.3}), batch point {} given {given} pending",
                j + 1
            )
        },
    }
}

/// What a batch is asked for: its size, given the points of trials still running.
struct BatchAsk<'a> {
    pending: &'a [Vec<f64>],
    q: usize,
}

/// GP-UCB proposer (see the module documentation).
#[derive(Debug, Clone)]
pub struct GpUcb {
    cfg: GpUcbConfig,
    /// The last fitted GP and the observations it was fitted to.
    last: Option<(Observations, Surrogate)>,
    /// Hyperparameters to warm-start the next fit from (the last fit's, or seeded).
    warm: Option<GpHyperparameters>,
    /// The number of trials `warm` was optimised on (the refit schedule,
    /// [`GpConfig::reoptimises`]).
    fitted_on: Option<usize>,
    /// Fit at scale whatever the number of finished trials ([`GpUcb::assume_scale`]).
    pending: usize,
}

/// One maximiser of the acquisition.
#[derive(Debug, Clone, PartialEq)]
pub struct UcbPoint {
    /// Coordinates.
    pub x: Vec<f64>,
    /// `μ + √β σ` there.
    pub value: f64,
    /// Posterior mean there.
    pub mean: f64,
    /// Posterior standard deviation there.
    pub std: f64,
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Kronecker (R_d) sequence of Roberts (2018): `frac(shift_k + i α_k)` with
/// `α_k = φ_D^{−k}`, `φ_D` the root of `x^{D+1} = x + 1`.
fn kronecker(n: usize, dim: usize, rng: &mut SplitMix64) -> Vec<Vec<f64>> {
    let mut phi = 2.0f64;
    for _ in 0..50 {
        phi = (1.0 + phi).powf(1.0 / (dim as f64 + 1.0));
    }
    let alpha: Vec<f64> = (1..=dim).map(|k| phi.powi(-(k as i32)).fract()).collect();
    let shift: Vec<f64> = (0..dim).map(|_| rng.next_f64()).collect();
    (0..n)
        .map(|i| {
            alpha
                .iter()
                .zip(&shift)
                .map(|(a, s)| (s + (i + 1) as f64 * a).fract())
                .collect()
        })
        .collect()
}

/// Candidate points: flat Dirichlet draws (half), a quasi-random simplex sequence (a quarter)
/// and perturbations of the best observed points (the rest).
pub fn candidates(
    space: &SearchSpace,
    obs: &Observations,
    n: usize,
    rng: &mut SplitMix64,
) -> Vec<Vec<f64>> {
    let d = space.dim();
    let n_quasi = n / 4;
    let n_local = if obs.is_empty() { 0 } else { n / 4 };
    let mut out = space.sample(rng, n - n_quasi - n_local);
    // Uniform spacings of sorted uniforms are uniform on the simplex.
    let free: usize = space
        .blocks
        .iter()
        .map(|b| b.coords.len().saturating_sub(1))
        .sum();
    if free > 0 {
        for u in kronecker(n_quasi, free, rng) {
            let mut x = vec![0.0; d];
            let mut off = 0;
            for b in &space.blocks {
                let k = b.coords.len();
                if k == 0 {
                    continue;
                }
                let mut cuts: Vec<f64> = u[off..off + k - 1].to_vec();
                off += k - 1;
                cuts.sort_by(f64::total_cmp);
                let mut prev = 0.0;
                for (j, &c) in b.coords.iter().enumerate() {
                    let next = if j + 1 < k { cuts[j] } else { 1.0 };
                    x[c] = b.mass * (next - prev);
                    prev = next;
                }
            }
            space.project(&mut x);
            out.push(x);
        }
    } else {
        out.extend(space.sample(rng, n_quasi));
    }
    if n_local > 0 {
        let mut order: Vec<usize> = (0..obs.len()).collect();
        order.sort_by(|&a, &b| obs.y[b].total_cmp(&obs.y[a]).then(a.cmp(&b)));
        let top = &order[..order.len().min(5)];
        let dirs = space.sample(rng, n_local);
        for (i, u) in dirs.into_iter().enumerate() {
            let base = &obs.x[top[i % top.len()]];
            // λ log-uniform in [0.01, 0.3]: convex combinations stay in the space.
            let lam = 0.01 * 30f64.powf(rng.next_f64());
            let mut x: Vec<f64> = base
                .iter()
                .zip(&u)
                .map(|(b, v)| (1.0 - lam) * b + lam * v)
                .collect();
            space.project(&mut x);
            out.push(x);
        }
    }
    out
}

/// Projected-gradient ascent of `μ + √β σ` from `x0`: steps along the gradient's direction,
/// projected onto the space, growing after a success and shrinking after a failure.
fn ascend<P: Posterior>(
    post: &P,
    space: &SearchSpace,
    x0: Vec<f64>,
    sqrt_beta: f64,
    steps: usize,
) -> UcbPoint {
    let eval = |x: &[f64]| {
        let p = post.predict_point(x);
        let g: Vec<f64> = p
            .grad_mean
            .iter()
            .zip(&p.grad_std)
            .map(|(a, b)| a + sqrt_beta * b)
            .collect();
        (p.mean + sqrt_beta * p.std, g, p.mean, p.std)
    };
    let mut x = x0;
    let (mut u, mut g, mut mean, mut std) = eval(&x);
    let mut step = 0.05 * (space.blocks.len().max(1) as f64).sqrt();
    for _ in 0..steps {
        let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        // (Also stops on a NaN gradient.)
        if gn.is_nan() || gn <= 0.0 || step < 1e-9 {
            break;
        }
        let mut y: Vec<f64> = x.iter().zip(&g).map(|(a, b)| a + step * b / gn).collect();
        space.project(&mut y);
        if dist2(&x, &y) < 1e-24 {
            break; // at a vertex/face where the gradient points outward
        }
        let (uy, gy, my, sy) = eval(&y);
        if uy > u {
            (x, u, g, mean, std) = (y, uy, gy, my, sy);
            step = (step * 1.5).min(1.0);
        } else {
            step *= 0.3;
        }
    }
    UcbPoint {
        x,
        value: u,
        mean,
        std,
    }
}

/// What [`maximize_ucb`] searches: the candidates, `β`, the ascent's effort, and the points
/// the result must keep away from.
#[derive(Debug, Clone, Copy)]
pub struct UcbSearch<'a> {
    /// Candidate points, scored in one batch.
    pub pool: &'a [Vec<f64>],
    /// Exploration weight `β` of `μ + √β σ` (negative values count as 0).
    pub beta: f64,
    /// How many of the best candidates (at least `min_distance` apart) start an ascent.
    pub starts: usize,
    /// Projected-gradient steps per ascent.
    pub steps: usize,
    /// Points the result must not be within `min_distance` of (e.g. the batch so far).
    pub exclude: &'a [Vec<f64>],
    /// The minimum distance to `exclude` and between starts.
    pub min_distance: f64,
}

/// Maximises `μ + √β σ` of `post` over `space`: scores `search.pool` in one batch, refines the
/// best `search.starts` by projected-gradient ascent, and returns the best point not within
/// `search.min_distance` of any point in `search.exclude` (`None` if every candidate is).
pub fn maximize_ucb<P: Posterior>(
    post: &P,
    space: &SearchSpace,
    search: &UcbSearch,
) -> Option<UcbPoint> {
    let UcbSearch {
        pool,
        beta,
        starts,
        steps,
        exclude,
        min_distance,
    } = *search;
    let sb = beta.max(0.0).sqrt();
    let flat: Vec<f64> = pool.iter().flatten().copied().collect();
    let (mean, var) = post.predict(&flat);
    let score: Vec<f64> = mean
        .iter()
        .zip(&var)
        .map(|(m, v)| m + sb * v.max(0.0).sqrt())
        .collect();
    let md2 = min_distance * min_distance;
    let free = |x: &[f64]| exclude.iter().all(|e| dist2(x, e) >= md2);
    let mut order: Vec<usize> = (0..pool.len()).filter(|&i| free(&pool[i])).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    // Starts: the best candidates, at least `min_distance` apart.
    let mut picked: Vec<usize> = Vec::with_capacity(starts);
    for &i in &order {
        if picked.len() == starts {
            break;
        }
        if picked.iter().all(|&j| dist2(&pool[i], &pool[j]) >= md2) {
            picked.push(i);
        }
    }
    let refined: Vec<UcbPoint> = picked
        .par_iter()
        .map(|&i| ascend(post, space, pool[i].clone(), sb, steps))
        .collect();
    let mut best: Option<UcbPoint> = None;
    for p in refined.into_iter().filter(|p| free(&p.x)) {
        if best.as_ref().is_none_or(|b| p.value > b.value) {
            best = Some(p);
        }
    }
    // Ascent can only improve on its start, but may have walked onto an excluded point.
    best.or_else(|| {
        order.first().map(|&i| UcbPoint {
            x: pool[i].clone(),
            value: score[i],
            mean: mean[i],
            std: var[i].max(0.0).sqrt(),
        })
    })
}

/// GP-UCB's recommendation rule on any posterior of the objective: the highest lower
/// confidence bound `μ − σ` over the evaluated trials (`obs.x`), unless a search of the whole
/// space (candidates around the best trials by `obs.y`, then projected-gradient ascent of
/// `μ − σ`) finds a point whose `μ − σ` beats every trial's. `model` is appended to the
/// proposal's reason. `obs` must be valid and non-empty.
pub fn recommend_lcb<P: Posterior>(
    post: &P,
    space: &SearchSpace,
    obs: &Observations,
    cfg: &GpUcbConfig,
    model: &str,
) -> Proposal {
    let flat: Vec<f64> = obs.x.iter().flatten().copied().collect();
    let lcb = |m: f64, v: f64| m - v.max(0.0).sqrt();
    let (mean, var) = lcb_values(post, &flat, 1);
    let i = (0..mean.len())
        .max_by(|&a, &b| {
            lcb(mean[a], var[a])
                .total_cmp(&lcb(mean[b], var[b]))
                .then(b.cmp(&a))
        })
        .expect("non-empty");
    // Also search the whole space for the best lower confidence bound μ − σ: the GP may
    // be confident of a better mixture than any evaluated one (an interpolation between
    // good trials). It is taken only when its μ − σ beats the best evaluated trial's.
    let mut rng = SplitMix64::derive(cfg.seed, 0x5EC0 ^ obs.len() as u64);
    let mut pool = candidates(space, obs, cfg.candidates, &mut rng);
    pool.extend(obs.x.iter().cloned());
    let pflat: Vec<f64> = pool.iter().flatten().copied().collect();
    let (pm, pv) = lcb_values(post, &pflat, cfg.starts);
    let mut order: Vec<usize> = (0..pool.len()).collect();
    order.sort_by(|&a, &b| {
        lcb(pm[b], pv[b])
            .total_cmp(&lcb(pm[a], pv[a]))
            .then(a.cmp(&b))
    });
    let best_space = order
        .iter()
        .take(cfg.starts)
        .map(|&j| ascend(post, space, pool[j].clone(), -1.0, cfg.ascent_steps))
        .max_by(|a, b| a.value.total_cmp(&b.value));
    if let Some(p) = best_space {
        if p.value > lcb(mean[i], var[i]) + 1e-12 {
            return Proposal {
                mixture: space.to_mixture(&p.x),
                x: p.x,
                mean: Some(p.mean),
                std: Some(p.std),
                acquisition: Some(p.value),
                reason: format!(
                    "highest lower confidence bound (μ − σ) over the space, above every one \
                     of {} trials{model}",
                    obs.len()
                ),
            };
        }
    }
    Proposal {
        x: obs.x[i].clone(),
        mixture: space.to_mixture(&obs.x[i]),
        mean: Some(mean[i]),
        std: Some(var[i].max(0.0).sqrt()),
        acquisition: Some(lcb(mean[i], var[i])),
        reason: format!(
            "highest lower confidence bound (μ − σ) of {} trials (trial {i}){model}",
            obs.len()
        ),
    }
}

/// Above this many points [`lcb_values`] computes variances only where they can matter.
const LCB_PRUNE_MIN: usize = 1024;

/// Means and variances at the points `flat` (`m × d`) for picking the `k` highest lower
/// confidence bounds `μ − σ`. Up to [`LCB_PRUNE_MIN`] points, [`Posterior::predict`] at all of
/// them. Beyond, the means of all (cheap, [`Posterior::predict_mean`]), then variances in
/// blocks by decreasing mean, stopping once the next mean is below the `k`-th best `μ − σ` so
/// far (σ ≥ 0, so no point left can enter the top `k`); the points never reached get an
/// infinite variance, so their `μ − σ` is −∞. The top `k` is exactly the full computation's.
fn lcb_values<P: Posterior>(post: &P, flat: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let d = post.dim();
    let m = flat.len() / d;
    if m <= LCB_PRUNE_MIN {
        return post.predict(flat);
    }
    let mean = post.predict_mean(flat);
    let mut var = vec![f64::INFINITY; m];
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| mean[b].total_cmp(&mean[a]).then(a.cmp(&b)));
    let mut best: Vec<f64> = Vec::new(); // the k highest μ − σ so far, descending
    for block in order.chunks(256) {
        if best.len() >= k.max(1) && mean[block[0]] < best[k.max(1) - 1] {
            break;
        }
        let pts: Vec<f64> = block
            .iter()
            .flat_map(|&i| flat[i * d..(i + 1) * d].iter().copied())
            .collect();
        let (_, v) = post.predict(&pts);
        for (&i, vi) in block.iter().zip(v) {
            var[i] = vi;
            best.push(mean[i] - vi.max(0.0).sqrt());
        }
        best.sort_by(|a, b| b.total_cmp(a));
        best.truncate(k.max(1));
    }
    (mean, var)
}

impl GpUcb {
    /// A proposer with these settings.
    pub fn new(cfg: GpUcbConfig) -> Self {
        Self {
            cfg,
            last: None,
            warm: None,
            fitted_on: None,
            pending: 0,
        }
    }

    /// Counts `pending` running trials in the scale of the next fits (`GpConfig::pending`:
    /// past [`SCALE_THRESHOLD`] finished plus pending trials, warm starts, capped restarts
    /// and the refit schedule; past the sparse threshold a sparse posterior): for the recipe
    /// of a search with many trials running. `propose_pending` counts its pending points by
    /// itself.
    pub fn assume_pending(&mut self, pending: usize) {
        self.pending = pending;
    }

    /// Warm-starts the next fit from `h` (e.g. the `gp.json` of an interrupted search):
    /// above [`SCALE_THRESHOLD`] trials the fit then runs from `h` plus
    /// `GpConfig::warm_restarts` starts; at or below it `h` is ignored.
    pub fn seed_hyperparameters(&mut self, h: GpHyperparameters) {
        self.warm = Some(h);
        self.fitted_on = None;
    }

    /// [`GpUcb::seed_hyperparameters`] from a saved report (e.g. `gp.json`): when it says how
    /// many trials they were optimised on, the refit schedule continues from there (a fit
    /// before the trials grow by `GpConfig::refit_growth` reuses them without optimising).
    pub fn seed_report(&mut self, r: &crate::surrogate::GpReport) {
        self.warm = Some(r.hyperparameters());
        self.fitted_on = r.fitted_on;
    }

    /// The number of trials the current hyperparameters were optimised on, if known.
    pub fn fitted_on(&self) -> Option<usize> {
        self.fitted_on
    }

    /// The hyperparameters the next fit is warm-started from, if any.
    pub fn warm_hyperparameters(&self) -> Option<&GpHyperparameters> {
        self.warm.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &GpUcbConfig {
        &self.cfg
    }

    /// The GP of the last `propose`/`recommend`/`fit` call, if one was fitted.
    pub fn gp(&self) -> Option<&Surrogate> {
        self.last.as_ref().map(|(_, gp)| gp)
    }

    /// Fits the GP to `obs` (reusing the last fit when `obs` is unchanged). Above
    /// [`SCALE_THRESHOLD`] trials the fit is warm-started from the previous one, and between
    /// re-optimisations of the refit schedule ([`GpConfig::reoptimises`]) only the posterior
    /// is rebuilt, with the last hyperparameters.
    pub fn fit(&mut self, obs: &Observations) -> Result<&Surrogate, GpError> {
        self.fit_at(obs, self.pending)
    }

    /// [`GpUcb::fit`] with `pending` running trials counted in its scale
    /// (`GpConfig::pending`).
    fn fit_at(&mut self, obs: &Observations, pending: usize) -> Result<&Surrogate, GpError> {
        let fresh = !matches!(&self.last, Some((o, _)) if o == obs);
        if fresh {
            let n = obs.len();
            let mut cfg = self.cfg.gp.clone();
            cfg.pending = pending;
            let reuse = match &self.warm {
                Some(h) if !cfg.reoptimises(n, self.fitted_on) => Some(h),
                _ => None,
            };
            let gp = match reuse {
                Some(h) => Surrogate::with_hyperparameters(&obs.x, &obs.y, &cfg, h)?,
                None => {
                    let gp = Surrogate::fit(&obs.x, &obs.y, &cfg, self.warm.as_ref())?;
                    self.warm = Some(gp.hyperparameters());
                    self.fitted_on = Some(n);
                    gp
                }
            };
            self.last = Some((obs.clone(), gp));
        }
        Ok(&self.last.as_ref().expect("just fitted").1)
    }

    /// A batch of `q` above [`SCALE_THRESHOLD`] trials (see the module documentation).
    fn propose_scaled(
        &self,
        space: &SearchSpace,
        obs: &Observations,
        gp: &Surrogate,
        ask: BatchAsk<'_>,
        rng: &mut SplitMix64,
    ) -> Vec<Proposal> {
        let BatchAsk { pending, q } = ask;
        let started = std::time::Instant::now();
        let beta = self.cfg.beta.value(space.dim(), obs.len());
        let pool = candidates(space, obs, self.cfg.candidates.max(q), rng);
        let flat: Vec<f64> = pool.iter().flatten().copied().collect();
        // Pending trials (running, not finished) are fantasized like earlier batch points,
        // all at once, before the pool is scored.
        let mut base = gp.clone();
        base.fantasize_many(&pending.concat());
        let mut fp = FantasyPool::new(&base, &flat);
        tracing::debug!(
            candidates = pool.len(),
            secs = started.elapsed().as_secs_f64(),
            "GP-UCB: scored the candidate pool"
        );
        let sb = beta.max(0.0).sqrt();
        let md2 = self.cfg.min_distance * self.cfg.min_distance;
        let mut cond = base.clone();
        let mut out: Vec<Proposal> = Vec::with_capacity(q);
        let mut chosen: Vec<Vec<f64>> = pending.to_vec();
        // Candidates at least `min_distance` from every pending and chosen point, kept up to
        // date pick by pick (not rechecked against all of them at every pick).
        let mut open: Vec<bool> = pool
            .par_iter()
            .map(|c| chosen.iter().all(|e| dist2(c, e) >= md2))
            .collect();
        let mut beat = Heartbeat::new(started);
        for j in 0..q {
            beat.tick(|point, secs| {
                tracing::debug!(point, q, secs, "GP-UCB: choosing batch point")
            });
            let score: Vec<f64> = fp
                .mean()
                .iter()
                .zip(fp.var())
                .map(|(m, v)| m + sb * v.max(0.0).sqrt())
                .collect();
            let free = |x: &[f64]| chosen.iter().all(|e| dist2(x, e) >= md2);
            let mut order: Vec<usize> = (0..pool.len()).filter(|&i| open[i]).collect();
            order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
            let mut starts: Vec<usize> = Vec::with_capacity(SCALED_STARTS);
            for &i in &order {
                if starts.len() == SCALED_STARTS.min(self.cfg.starts.max(1)) {
                    break;
                }
                if starts.iter().all(|&k| dist2(&pool[i], &pool[k]) >= md2) {
                    starts.push(i);
                }
            }
            let steps = SCALED_STEPS.min(self.cfg.ascent_steps);
            let refined: Vec<UcbPoint> = starts
                .par_iter()
                .map(|&i| ascend(&cond, space, pool[i].clone(), sb, steps))
                .collect();
            let mut best: Option<UcbPoint> = None;
            for p in refined.into_iter().filter(|p| free(&p.x)) {
                if best.as_ref().is_none_or(|b| p.value > b.value) {
                    best = Some(p);
                }
            }
            let best = best.or_else(|| {
                order.first().map(|&i| UcbPoint {
                    x: pool[i].clone(),
                    value: score[i],
                    mean: fp.mean()[i],
                    std: fp.var()[i].max(0.0).sqrt(),
                })
            });
            let Some(p) = best else {
                let mut existing = obs.x.clone();
                existing.extend(chosen.iter().cloned());
                let extra = Observations {
                    x: existing,
                    y: Vec::new(),
                };
                out.append(&mut self.design(space, &extra, q - j, rng, "space-filling"));
                break;
            };
            out.push(ucb_proposal(space, gp, &p, beta, j, chosen.len()));
            if j + 1 < q {
                cond.fantasize(&p.x);
                fp.condition(&base, &p.x);
            }
            for (o, c) in open.iter_mut().zip(&pool) {
                *o = *o && dist2(c, &p.x) >= md2;
            }
            chosen.push(p.x);
        }
        tracing::debug!(
            q,
            secs = started.elapsed().as_secs_f64(),
            "GP-UCB: batch chosen"
        );
        out
    }

    /// The recommendation for the objective `Σ_b w_b y_b` from one GP per component: each
    /// `(w_b, y_b)` of `columns` (e.g. a benchmark's scores, one per trial of `x`, and its
    /// weight in a weighted mean) gets its own GP, fitted with this proposer's GP settings on
    /// its own standardised scores; their posteriors are combined linearly
    /// ([`LinearCombination`]: `μ = Σ w_b μ_b`, `σ² = Σ w_b² σ_b²`, independence assumed) and
    /// the combination is recommended by the rule of [`Proposer::recommend`]
    /// ([`recommend_lcb`]). With fewer than two trials, or when a GP cannot be fitted, the
    /// recommendation is the trial with the best combined score.
    pub fn recommend_combined(
        &self,
        space: &SearchSpace,
        x: &[Vec<f64>],
        columns: &[(f64, Vec<f64>)],
    ) -> Result<Proposal, ProposeError> {
        if columns.is_empty() {
            return Err(ProposeError::BadObservations(
                "no objectives to combine".into(),
            ));
        }
        if let Some((b, c)) = columns
            .iter()
            .enumerate()
            .find(|(_, (_, c))| c.len() != x.len())
        {
            return Err(ProposeError::BadObservations(format!(
                "objective {b} has {} scores for {} trials",
                c.1.len(),
                x.len()
            )));
        }
        let obs = Observations {
            x: x.to_vec(),
            y: (0..x.len())
                .map(|i| columns.iter().map(|(w, c)| w * c[i]).sum())
                .collect(),
        };
        obs.validate(space)?;
        if obs.is_empty() {
            return Err(ProposeError::BadObservations(
                "no finished trials to recommend from".into(),
            ));
        }
        let best_trial = |why: String| {
            let i = obs.best().expect("non-empty");
            Proposal::unscored(
                space,
                obs.x[i].clone(),
                format!("best of {} trials ({why})", obs.len()),
            )
        };
        if obs.len() < 2 {
            return Ok(best_trial("no GP".into()));
        }
        let mut terms = Vec::with_capacity(columns.len());
        for (b, (w, y)) in columns.iter().enumerate() {
            match Gp::fit(x, y, &self.cfg.gp) {
                Ok(gp) => terms.push((*w, gp)),
                Err(e @ (GpError::NonFiniteY { .. } | GpError::BadInput { .. })) => {
                    return Err(ProposeError::ObjectiveGpInput {
                        objective: b,
                        source: e,
                    })
                }
                Err(e) => {
                    tracing::warn!("GP of objective {b} failed ({e}); recommending a trial");
                    return Ok(best_trial(format!("no GP for objective {b}: {e}")));
                }
            }
        }
        let k = terms.len();
        let post = LinearCombination::new(terms);
        Ok(recommend_lcb(
            &post,
            space,
            &obs,
            &self.cfg,
            &format!(", weighted sum of {k} per-objective GPs"),
        ))
    }

    fn design(
        &self,
        space: &SearchSpace,
        obs: &Observations,
        q: usize,
        rng: &mut SplitMix64,
        reason: &str,
    ) -> Vec<Proposal> {
        maximin(
            space,
            &obs.x,
            q,
            self.cfg.candidates.max(4 * q),
            rng,
            self.cfg.start,
        )
        .into_iter()
        .map(|x| Proposal::unscored(space, x, reason))
        .collect()
    }
}

impl Proposer for GpUcb {
    fn name(&self) -> &str {
        "gp-ucb"
    }

    fn propose(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        self.propose_pending(space, obs, &[], q, round)
    }

    /// GP-UCB given running trials: the initial design spreads away from them, and the GP
    /// conditions on each as a fantasy (an observation at its posterior mean, as for earlier
    /// points of a GP-BUCB batch) before the batch is chosen, which is kept at least
    /// `min_distance` from them. With no pending points this is [`Proposer::propose`].
    fn propose_pending(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
        pending: &[Vec<f64>],
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        obs.validate(space)?;
        if let Some(x) = pending.iter().find(|x| x.len() != space.dim()) {
            return Err(ProposeError::BadObservations(format!(
                "a pending point has {} coordinates; the space has {}",
                x.len(),
                space.dim()
            )));
        }
        let mut rng = SplitMix64::derive(self.cfg.seed, round as u64);
        let n0 = self.cfg.initial_design_size(space.dim());
        if obs.len() < n0.max(2) {
            if pending.is_empty() {
                return Ok(self.design(space, obs, q, &mut rng, "initial design"));
            }
            let mut existing = obs.x.clone();
            existing.extend(pending.iter().cloned());
            let taken = Observations {
                x: existing,
                y: Vec::new(),
            };
            return Ok(self.design(space, &taken, q, &mut rng, "initial design"));
        }
        // The fantasized GP conditions on the pending points too: past the threshold with
        // them (an asynchronous search on many slots) the fit and the batch run at scale.
        let waiting = self.pending.max(pending.len());
        let at_scale = obs.len() + waiting > SCALE_THRESHOLD;
        let gp = match self.fit_at(obs, waiting) {
            Ok(gp) => gp.clone(),
            Err(e @ (GpError::NonFiniteY { .. } | GpError::BadInput { .. })) => {
                return Err(ProposeError::GpInput(e))
            }
            Err(e) => {
                tracing::warn!("GP fit failed ({e}); proposing a space-filling design");
                let reason = format!("space-filling (GP fit failed: {e})");
                return Ok(self.design(space, obs, q, &mut rng, &reason));
            }
        };
        let beta = self.cfg.beta.value(space.dim(), obs.len());
        if at_scale {
            return Ok(self.propose_scaled(space, obs, &gp, BatchAsk { pending, q }, &mut rng));
        }
        let pool = candidates(space, obs, self.cfg.candidates.max(q), &mut rng);
        let mut cond = gp.clone();
        for x in pending {
            cond.fantasize(x);
        }
        let mut out: Vec<Proposal> = Vec::with_capacity(q);
        let mut chosen: Vec<Vec<f64>> = pending.to_vec();
        let mut beat = Heartbeat::new(std::time::Instant::now());
        for j in 0..q {
            beat.tick(|point, secs| {
                tracing::debug!(point, q, secs, "GP-UCB: choosing batch point")
            });
            let search = UcbSearch {
                pool: &pool,
                beta,
                starts: self.cfg.starts.max(1),
                steps: self.cfg.ascent_steps,
                exclude: &chosen,
                min_distance: self.cfg.min_distance,
            };
            let Some(p) = maximize_ucb(&cond, space, &search) else {
                // Every candidate is a duplicate (tiny spaces): fill with a design.
                let mut existing = obs.x.clone();
                existing.extend(chosen.iter().cloned());
                let extra = Observations {
                    x: existing,
                    y: Vec::new(),
                };
                let mut rest = self.design(space, &extra, q - j, &mut rng, "space-filling");
                out.append(&mut rest);
                break;
            };
            out.push(ucb_proposal(space, &gp, &p, beta, j, chosen.len()));
            if j + 1 < q {
                cond.fantasize(&p.x);
            }
            chosen.push(p.x);
        }
        Ok(out)
    }

    fn recommend(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
    ) -> Result<Proposal, ProposeError> {
        obs.validate(space)?;
        if obs.is_empty() {
            return Err(ProposeError::BadObservations(
                "no finished trials to recommend from".into(),
            ));
        }
        let fitted = if obs.len() >= 2 {
            self.fit(obs).ok()
        } else {
            None
        };
        let Some(gp) = fitted else {
            let i = obs.best().expect("non-empty");
            return Ok(Proposal::unscored(
                space,
                obs.x[i].clone(),
                format!("best of {} trials (no GP)", obs.len()),
            ));
        };
        let gp = gp.clone();
        Ok(recommend_lcb(&gp, space, obs, &self.cfg, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surrogate::{Gp, Kernel, SparseGp};

    fn points(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..n * d).map(|_| rng.next_f64()).collect()
    }

    /// Pruned variances pick the same top `k` lower confidence bounds as computing them all,
    /// and the mean alone equals `predict`'s mean (exact and sparse posteriors).
    #[test]
    fn pruned_lcb_matches_the_full_computation() {
        let d = 3;
        let x: Vec<Vec<f64>> = points(80, d, 1).chunks(d).map(|r| r.to_vec()).collect();
        let y: Vec<f64> = x.iter().map(|r| (3.0 * r[0]).sin() + r[1] * r[2]).collect();
        let h = crate::surrogate::GpHyperparameters {
            lengthscales: vec![0.3; d],
            outputscale: 1.0,
            noise: 1e-3,
            mean: 0.0,
            linear: 0.0,
        };
        let exact = Gp::with_hyperparameters(&x, &y, Kernel::Matern52, &h).unwrap();
        let sparse = SparseGp::with_hyperparameters(&x, &y, Kernel::Matern52, &h, 30).unwrap();
        let q = points(3000, d, 2);
        let lcb = |m: &[f64], v: &[f64]| -> Vec<usize> {
            let mut o: Vec<usize> = (0..m.len()).collect();
            let f = |i: usize| m[i] - v[i].max(0.0).sqrt();
            o.sort_by(|&a, &b| f(b).total_cmp(&f(a)).then(a.cmp(&b)));
            o
        };
        for post in [Surrogate::Exact(exact), Surrogate::Sparse(sparse)] {
            let (m, v) = post.predict(&q);
            assert_eq!(post.predict_mean(&q), m);
            let full = lcb(&m, &v);
            for k in [1, 8] {
                let (pm, pv) = lcb_values(&post, &q, k);
                let computed = pv.iter().filter(|v| v.is_finite()).count();
                assert!(computed < 3000, "k = {k}: pruned nothing");
                assert_eq!(lcb(&pm, &pv)[..k], full[..k], "k = {k}");
            }
        }
    }
}
