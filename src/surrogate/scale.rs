//! The surrogate at scale: one [`Surrogate`] that is the exact GP or the sparse one as the
//! number of trials demands, and a [`FantasyPool`] that keeps a candidate pool's posterior
//! variances current under GP-BUCB's fantasies by rank-1 updates.
//!
//! Why: past a few hundred trials a batch of `q` proposals that rescored every candidate on a
//! freshly conditioned posterior cost `q` full predictions (O(q P n²) for `P` candidates);
//! with the pool's features computed once (`V = L⁻¹ K(X, C)`, blocked and parallel) each
//! pick costs O(P (r + q)) with `r` the feature length (`n` exact, `m` sparse), so `q = 64`
//! costs little more than `q = 8`.
//!
//! The update: write the covariance that fantasies change as `g(a, b)` (exact:
//! `k(a, b) − vₐᵀv_b`, the whole posterior covariance; sparse DTC: `ψₐᵀψ_b` with
//! `ψ = L_B⁻¹ L_m⁻¹ k_m`, the part carried by the inducing points). Conditioning on a pick
//! `x_j` with noise `σ²` subtracts `u_j(a) u_j(b)` with
//! `u_j(a) = g_{j−1}(a, x_j) / √(g_{j−1}(x_j, x_j) + σ²)` and
//! `g_{j−1}(a, x_j) = g₀(a, x_j) − Σ_{i<j} u_i(a) u_i(x_j)`; the variance of candidate `c`
//! drops by `u_j(c)²` and its mean is unchanged (the fantasy equals the mean).

use faer::Mat;
use rayon::prelude::*;

use super::error::GpError;
use super::fit::GpConfig;
use super::gp::{Gp, GpHyperparameters, GpReport};
use super::linalg::dot;
use super::posterior::{PointPosterior, Posterior};
use super::sparse::SparseGp;

/// Candidates per block when the pool's features are computed (blocks run in parallel).
const POOL_BLOCK: usize = 128;

/// The fitted surrogate: exact or sparse by `GpConfig::posterior`.
#[derive(Debug, Clone)]
pub enum Surrogate {
    /// The exact GP.
    Exact(Gp),
    /// The DTC sparse GP.
    Sparse(SparseGp),
}

impl Surrogate {
    /// Fits hyperparameters (`cfg.fit`, warm-started from `warm` above
    /// [`super::fit::SCALE_THRESHOLD`] trials) and builds the posterior of `cfg.posterior`.
    pub fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        cfg: &GpConfig,
        warm: Option<&GpHyperparameters>,
    ) -> Result<Surrogate, GpError> {
        let started = std::time::Instant::now();
        let s = match cfg.inducing(y.len()) {
            None => Gp::fit_warm(x, y, cfg, warm).map(Surrogate::Exact),
            Some(m) => {
                tracing::debug!(trials = y.len(), inducing = m, "GP: sparse posterior");
                SparseGp::fit(x, y, cfg, m, warm).map(Surrogate::Sparse)
            }
        }?;
        tracing::debug!(
            trials = y.len(),
            sparse = s.exact().is_none(),
            secs = started.elapsed().as_secs_f64(),
            "GP: fitted and built"
        );
        Ok(s)
    }

    /// The posterior of `cfg.posterior` conditioned on `x`, `y` with given hyperparameters
    /// (objective units; no optimisation, no input warp): the rounds between two
    /// re-optimisations of a refit schedule ([`GpConfig::reoptimises`]).
    pub fn with_hyperparameters(
        x: &[Vec<f64>],
        y: &[f64],
        cfg: &GpConfig,
        h: &GpHyperparameters,
    ) -> Result<Surrogate, GpError> {
        let started = std::time::Instant::now();
        let s = match cfg.inducing(y.len()) {
            None => Gp::with_hyperparameters(x, y, cfg.kernel, h).map(Surrogate::Exact),
            Some(m) => {
                SparseGp::with_hyperparameters(x, y, cfg.kernel, h, m).map(Surrogate::Sparse)
            }
        }?;
        tracing::debug!(
            trials = y.len(),
            sparse = s.exact().is_none(),
            secs = started.elapsed().as_secs_f64(),
            "GP: posterior rebuilt with the last hyperparameters"
        );
        Ok(s)
    }

    /// The exact GP, if this is one.
    pub fn exact(&self) -> Option<&Gp> {
        match self {
            Surrogate::Exact(g) => Some(g),
            Surrogate::Sparse(_) => None,
        }
    }

    /// Number of observations (including fantasies).
    pub fn n(&self) -> usize {
        match self {
            Surrogate::Exact(g) => g.n(),
            Surrogate::Sparse(g) => g.n(),
        }
    }

    /// Hyperparameters in objective units.
    pub fn hyperparameters(&self) -> GpHyperparameters {
        match self {
            Surrogate::Exact(g) => g.hyperparameters(),
            Surrogate::Sparse(g) => g.hyperparameters(),
        }
    }

    /// What was fitted.
    pub fn report(&self) -> GpReport {
        match self {
            Surrogate::Exact(g) => g.report(),
            Surrogate::Sparse(g) => g.report(),
        }
    }
}

impl Posterior for Surrogate {
    fn dim(&self) -> usize {
        match self {
            Surrogate::Exact(g) => g.dim(),
            Surrogate::Sparse(g) => g.dim(),
        }
    }

    fn predict(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        match self {
            Surrogate::Exact(g) => g.predict(x),
            Surrogate::Sparse(g) => g.predict(x),
        }
    }

    fn predict_mean(&self, x: &[f64]) -> Vec<f64> {
        match self {
            Surrogate::Exact(g) => g.predict_mean(x),
            Surrogate::Sparse(g) => g.predict_mean(x),
        }
    }

    fn predict_point(&self, x: &[f64]) -> PointPosterior {
        match self {
            Surrogate::Exact(g) => g.predict_point(x),
            Surrogate::Sparse(g) => g.predict_point(x),
        }
    }

    fn fantasize(&mut self, x: &[f64]) {
        match self {
            Surrogate::Exact(g) => g.fantasize(x),
            Surrogate::Sparse(g) => g.fantasize(x),
        }
    }

    fn fantasize_many(&mut self, xs: &[f64]) {
        match self {
            Surrogate::Exact(g) => g.fantasize_many(xs),
            Surrogate::Sparse(g) => g.fantasize_many(xs),
        }
    }
}

/// One conditioned pick of a [`FantasyPool`].
#[derive(Debug, Clone)]
struct Pick {
    /// Internal coordinates.
    z: Vec<f64>,
    /// Its feature vector (length `r`).
    feat: Vec<f64>,
    /// `u_i(x_j)` for the earlier picks `i`.
    u: Vec<f64>,
    /// `√(g_{j−1}(x_j, x_j) + σ²)`.
    s: f64,
}

/// The posterior mean and variance of a fixed candidate pool under a surrogate, kept current
/// as the surrogate is conditioned on fantasies (see the module documentation). The
/// surrogate given to [`FantasyPool::condition`] must be the one the pool was built from
/// (before any fantasy).
#[derive(Debug, Clone)]
pub struct FantasyPool {
    /// Posterior means (objective units).
    mean: Vec<f64>,
    /// Posterior variances (objective units).
    var: Vec<f64>,
    /// Features of the candidates, `r × P`.
    feats: Mat<f64>,
    /// Candidates in internal units (`P × d`; exact only, for `k(c, x)`).
    pool_z: Vec<f64>,
    /// `u_j(c)` per pick.
    us: Vec<Vec<f64>>,
    picks: Vec<Pick>,
    /// `σ²` of a fantasy (internal units).
    noise: f64,
    /// Objective variance per internal unit (`y_std²`).
    scale2: f64,
}

impl FantasyPool {
    /// Scores `pool` (`P × d` row-major coordinates) under `post`, blocked and in parallel.
    pub fn new(post: &Surrogate, pool: &[f64]) -> Self {
        let d = post.dim();
        assert_eq!(pool.len() % d, 0, "pool must be P × d");
        let p = pool.len() / d;
        // Per block: features (r × b), means and variances (internal units).
        type Block = (Mat<f64>, Vec<f64>, Vec<f64>);
        let yt = post.exact().map(Gp::whitened_targets).unwrap_or_default();
        let blocks: Vec<Block> = pool
            .par_chunks(POOL_BLOCK * d)
            .map(|xb| match post {
                Surrogate::Exact(g) => {
                    let (v, prior) = g.whitened_cross(xb);
                    let m0 = g.hyp().mean;
                    let mean = (0..v.ncols())
                        .map(|j| m0 + dot(v.col_as_slice(j), &yt))
                        .collect();
                    let var = (0..v.ncols())
                        .map(|j| {
                            let s: f64 = v.col_as_slice(j).iter().map(|t| t * t).sum();
                            (prior[j] - s).max(0.0)
                        })
                        .collect();
                    (v, mean, var)
                }
                Surrogate::Sparse(g) => {
                    let (a, b, prior, mk) = g.features(xb);
                    let m0 = g.hyp_mean();
                    let mean = mk.iter().map(|v| m0 + v).collect();
                    let var = (0..a.ncols())
                        .map(|j| {
                            let sa: f64 = a.col_as_slice(j).iter().map(|t| t * t).sum();
                            let sb: f64 = b.col_as_slice(j).iter().map(|t| t * t).sum();
                            (prior[j] - sa + sb).max(0.0)
                        })
                        .collect();
                    (b, mean, var)
                }
            })
            .collect();
        let r = blocks.first().map_or(0, |b| b.0.nrows());
        let mut feats = Mat::<f64>::zeros(r, p);
        let (mut mean, mut var) = (Vec::with_capacity(p), Vec::with_capacity(p));
        let mut col = 0;
        for (f, m, v) in blocks {
            for j in 0..f.ncols() {
                feats
                    .col_as_slice_mut(col)
                    .copy_from_slice(f.col_as_slice(j));
                col += 1;
            }
            mean.extend(m);
            var.extend(v);
        }
        let (tf, noise) = match post {
            Surrogate::Exact(g) => (g.transform(), g.hyp().noise + g.jitter()),
            Surrogate::Sparse(g) => (g.transform(), g.noise_internal()),
        };
        let mut pool_z = Vec::new();
        if matches!(post, Surrogate::Exact(_)) {
            pool_z.reserve(pool.len());
            for xr in pool.chunks_exact(d) {
                tf.z(xr, &mut pool_z);
            }
        }
        let (ym, ys) = (tf.y_mean, tf.y_std);
        mean.iter_mut().for_each(|v| *v = ym + ys * *v);
        var.iter_mut().for_each(|v| *v *= ys * ys);
        FantasyPool {
            mean,
            var,
            feats,
            pool_z,
            us: Vec::new(),
            picks: Vec::new(),
            noise,
            scale2: ys * ys,
        }
    }

    /// Posterior means of the candidates (objective units; fantasies leave them unchanged).
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Posterior variances of the candidates given the fantasies so far (objective units).
    pub fn var(&self) -> &[f64] {
        &self.var
    }

    /// Conditions the pool on a fantasy at `x` (coordinates, length `d`), as
    /// `post.fantasize(x)` would condition `post` (the surrogate the pool was built from,
    /// unconditioned).
    pub fn condition(&mut self, post: &Surrogate, x: &[f64]) {
        let d = post.dim();
        assert_eq!(x.len(), d, "pick of the wrong dimension");
        let mut zx = Vec::with_capacity(d);
        let (feat, prior_x) = match post {
            Surrogate::Exact(g) => {
                g.transform().z(x, &mut zx);
                let (v, prior) = g.whitened_cross(x);
                (v.col_as_slice(0).to_vec(), prior[0])
            }
            Surrogate::Sparse(g) => {
                g.transform().z(x, &mut zx);
                let (_, b, _, _) = g.features(x);
                (b.col_as_slice(0).to_vec(), 0.0)
            }
        };
        let exact = matches!(post, Surrogate::Exact(_));
        // g₀(a, x) from features (and, exact, the prior covariance).
        let g0 = |za: &[f64], fa: &[f64]| -> f64 {
            let f = dot(fa, &feat);
            match post {
                Surrogate::Exact(g) => g.prior_cov_internal(za, &zx) - f,
                Surrogate::Sparse(_) => f,
            }
        };
        // u_i(x) for the earlier picks.
        let mut ux: Vec<f64> = Vec::with_capacity(self.picks.len());
        for pk in &self.picks {
            let mut gi = g0(&pk.z, &pk.feat);
            gi -= dot(&pk.u, &ux);
            ux.push(gi / pk.s);
        }
        let gxx0 = if exact {
            prior_x - dot(&feat, &feat)
        } else {
            dot(&feat, &feat)
        };
        let gxx = gxx0 - dot(&ux, &ux);
        let s = (gxx.max(0.0) + self.noise).max(1e-300).sqrt();
        // u_j(c) over the pool.
        let p = self.mean.len();
        let us = &self.us;
        let feats = &self.feats;
        let pool_z = &self.pool_z;
        let uj: Vec<f64> = (0..p)
            .into_par_iter()
            .map(|c| {
                let zc = if exact {
                    &pool_z[c * d..(c + 1) * d]
                } else {
                    &[][..]
                };
                let mut gc = g0(zc, feats.col_as_slice(c));
                for (ui, uix) in us.iter().zip(&ux) {
                    gc -= ui[c] * uix;
                }
                gc / s
            })
            .collect();
        let scale2 = self.scale2;
        self.var
            .iter_mut()
            .zip(&uj)
            .for_each(|(v, u)| *v = (*v - scale2 * u * u).max(0.0));
        self.us.push(uj);
        self.picks.push(Pick {
            z: zx,
            feat,
            u: ux,
            s,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surrogate::Kernel;

    fn data(n: usize, d: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..d).map(|_| rng.next_f64()).collect())
            .collect();
        let y = x
            .iter()
            .map(|r| (3.0 * r[0]).sin() + r[1] * r[1] - 0.5 * r[d - 1] + 0.05 * rng.normal())
            .collect();
        (x, y)
    }

    fn hyp(d: usize, linear: f64) -> GpHyperparameters {
        GpHyperparameters {
            lengthscales: (0..d).map(|k| 0.4 + 0.1 * k as f64).collect(),
            outputscale: 1.3,
            noise: 0.01,
            mean: 0.2,
            linear,
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
    }

    /// The rank-1 updated pool variances equal a fresh posterior conditioned on the picks.
    #[test]
    fn pool_variances_match_a_conditioned_posterior() {
        let d = 3;
        let (x, y) = data(25, d, 1);
        let (c, _) = data(40, d, 2);
        let (picks, _) = data(6, d, 3);
        let pool: Vec<f64> = c.iter().flatten().copied().collect();
        for linear in [0.0, 0.3] {
            let h = hyp(d, linear);
            let exact = Gp::with_hyperparameters(&x, &y, Kernel::Matern52, &h).unwrap();
            let sparse = SparseGp::with_hyperparameters(&x, &y, Kernel::Rbf, &h, 12).unwrap();
            for post in [Surrogate::Exact(exact), Surrogate::Sparse(sparse)] {
                let mut fp = FantasyPool::new(&post, &pool);
                let mut cond = post.clone();
                let (m0, v0) = post.predict(&pool);
                for (a, b) in fp.mean().iter().zip(&m0) {
                    assert!(close(*a, *b, 1e-10), "mean {a} vs {b}");
                }
                for (a, b) in fp.var().iter().zip(&v0) {
                    assert!(close(*a, *b, 1e-9), "var {a} vs {b}");
                }
                for pk in &picks {
                    fp.condition(&post, pk);
                    cond.fantasize(pk);
                    let (m, v) = cond.predict(&pool);
                    for (a, b) in fp.mean().iter().zip(&m) {
                        assert!(close(*a, *b, 1e-9), "mean {a} vs {b}");
                    }
                    for (a, b) in fp.var().iter().zip(&v) {
                        assert!(close(*a, *b, 1e-9), "{post:?} var {a} vs {b}");
                    }
                }
            }
        }
    }

    /// With every trial an inducing point, the sparse posterior is the exact one.
    #[test]
    fn sparse_with_all_trials_is_exact() {
        let d = 4;
        let (x, y) = data(30, d, 7);
        let (q, _) = data(20, d, 8);
        let flat: Vec<f64> = q.iter().flatten().copied().collect();
        for (kernel, linear) in [(Kernel::Matern52, 0.0), (Kernel::Rbf, 0.5)] {
            let h = hyp(d, linear);
            let mut e = Gp::with_hyperparameters(&x, &y, kernel, &h).unwrap();
            let mut s = SparseGp::with_hyperparameters(&x, &y, kernel, &h, 30).unwrap();
            assert_eq!(s.inducing(), 30);
            let (re, rs) = (e.report(), s.report());
            assert!(close(
                re.log_marginal_likelihood,
                rs.log_marginal_likelihood,
                1e-8
            ));
            for round in 0..2 {
                let (me, ve) = e.predict(&flat);
                let (ms, vs) = s.predict(&flat);
                for i in 0..q.len() {
                    assert!(close(me[i], ms[i], 1e-8), "mean {} vs {}", me[i], ms[i]);
                    assert!(close(ve[i], vs[i], 1e-7), "var {} vs {}", ve[i], vs[i]);
                }
                for xq in &q[..3] {
                    let (pe, ps) = (e.predict_point(xq), s.predict_point(xq));
                    assert!(close(pe.mean, ps.mean, 1e-8));
                    assert!(close(pe.std, ps.std, 1e-7));
                    for k in 0..d {
                        assert!((pe.grad_mean[k] - ps.grad_mean[k]).abs() < 1e-6);
                        assert!((pe.grad_std[k] - ps.grad_std[k]).abs() < 1e-6);
                    }
                }
                if round == 0 {
                    // A fantasy at an inducing point keeps them equal (elsewhere DTC sees
                    // it only through the inducing points).
                    e.fantasize(&x[5]);
                    s.fantasize(&x[5]);
                }
            }
        }
    }

    /// Sparse gradients match finite differences of its own mean and standard deviation.
    #[test]
    fn sparse_gradients_match_finite_differences() {
        let d = 3;
        let (x, y) = data(40, d, 11);
        let s = SparseGp::with_hyperparameters(&x, &y, Kernel::Matern52, &hyp(d, 0.2), 10).unwrap();
        let x0 = vec![0.3, 0.6, 0.2];
        let p = s.predict_point(&x0);
        for k in 0..d {
            let h = 1e-6;
            let (mut a, mut b) = (x0.clone(), x0.clone());
            a[k] += h;
            b[k] -= h;
            let (pa, pb) = (s.predict_point(&a), s.predict_point(&b));
            let gm = (pa.mean - pb.mean) / (2.0 * h);
            let gs = (pa.std - pb.std) / (2.0 * h);
            assert!(
                (gm - p.grad_mean[k]).abs() < 1e-5 * (1.0 + gm.abs()),
                "{gm} {k}"
            );
            assert!(
                (gs - p.grad_std[k]).abs() < 1e-5 * (1.0 + gs.abs()),
                "{gs} {k}"
            );
        }
    }

    /// At or below the threshold a warm start is ignored: the fit is exactly `Gp::fit`'s, so
    /// small searches (the search-quality benchmark) are unchanged.
    #[test]
    fn warm_start_is_ignored_at_small_n() {
        use crate::acquisition::proposer::{Observations, Proposer};
        use crate::acquisition::space::{SearchSpace, SpaceConstraints};
        use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
        let (x, y) = data(40, 3, 5);
        let cfg = GpConfig::default();
        let cold = Gp::fit(&x, &y, &cfg).unwrap();
        let odd = hyp(3, 0.7);
        let warm = Gp::fit_warm(&x, &y, &cfg, Some(&odd)).unwrap();
        assert_eq!(cold.hyperparameters(), warm.hyperparameters());
        let space = SearchSpace::simplex(3, &SpaceConstraints::default()).unwrap();
        let obs = Observations {
            x: x.iter()
                .map(|r| {
                    let s: f64 = r.iter().sum();
                    r.iter().map(|v| v / s).collect()
                })
                .collect(),
            y,
        };
        let mut a = GpUcb::new(GpUcbConfig::seeded(2));
        let mut b = GpUcb::new(GpUcbConfig::seeded(2));
        b.seed_hyperparameters(odd);
        let pa = a.propose(&space, &obs, 4, 1).unwrap();
        let pb = b.propose(&space, &obs, 4, 1).unwrap();
        assert_eq!(pa, pb);
    }

    /// Above the threshold: the batch is q distinct valid mixtures, the next round's fit is
    /// warm-started from this one, and a sparse posterior serves the same way.
    #[test]
    fn scaled_rounds_propose_valid_batches() {
        use crate::acquisition::proposer::{Observations, Proposer};
        use crate::acquisition::space::{SearchSpace, SpaceConstraints};
        use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
        use crate::surrogate::{FitStrategy, PosteriorStrategy};
        let d = 4;
        let space = SearchSpace::simplex(d, &SpaceConstraints::default()).unwrap();
        let mut rng = crate::rng::SplitMix64::new(9);
        let xs = space.sample(&mut rng, 600);
        let f = |w: &[f64]| -(w[0] - 0.4).powi(2) - (w[1] - 0.3).powi(2) + 0.1 * w[2];
        let obs = Observations {
            y: xs.iter().map(|w| f(w)).collect(),
            x: xs,
        };
        for posterior in [PosteriorStrategy::Exact, PosteriorStrategy::Sparse(60)] {
            let mut cfg = GpUcbConfig::seeded(1);
            cfg.candidates = 256;
            cfg.gp.fit = FitStrategy::Subset(80);
            cfg.gp.posterior = posterior;
            // Re-optimise at every fit (the schedule has its own test).
            cfg.gp.refit_growth = 0.0;
            let mut ucb = GpUcb::new(cfg);
            let q = 12;
            let props = ucb.propose(&space, &obs, q, 0).unwrap();
            assert_eq!(props.len(), q);
            for (i, p) in props.iter().enumerate() {
                assert!(space.contains(&p.x, 1e-9), "{posterior}: {:?}", p.x);
                assert!(p.mean.unwrap().is_finite() && p.std.unwrap() >= 0.0);
                for o in &props[..i] {
                    assert!(dist(&o.x, &p.x) >= 1e-3, "duplicate in the batch");
                }
            }
            assert_eq!(
                ucb.gp().unwrap().exact().is_none(),
                posterior != PosteriorStrategy::Exact
            );
            let h = ucb.warm_hyperparameters().unwrap().clone();
            assert_eq!(h, ucb.gp().unwrap().hyperparameters());
            // The next round starts from it and lands at (about) the same optimum.
            let mut more = obs.clone();
            more.x.push(props[0].x.clone());
            more.y.push(f(&props[0].x));
            let h2 = ucb.fit(&more).unwrap().hyperparameters();
            assert!((h2.noise.ln() - h.noise.ln()).abs() < 1.0, "{h:?} {h2:?}");
        }
    }

    /// Conditioning on many pending points at once (a block extension of the Cholesky
    /// factor) equals conditioning on them one at a time: the posterior mean and variance
    /// at fresh points agree to rounding, and the mean is unchanged by the fantasies.
    #[test]
    fn block_fantasies_equal_one_at_a_time() {
        let (x, y) = data(60, 3, 8);
        let gp = Gp::with_hyperparameters(&x, &y, Kernel::Matern52, &hyp(3, 0.3)).unwrap();
        let (pending, _) = data(40, 3, 9);
        let (query, _) = data(25, 3, 10);
        let (q, p) = (query.concat(), pending.concat());
        let mut one = gp.clone();
        for x in &pending {
            one.fantasize(x);
        }
        let mut block = gp.clone();
        block.fantasize_many(&p);
        assert_eq!(block.n(), 100);
        let (m0, _) = gp.predict(&q);
        let (m1, v1) = one.predict(&q);
        let (m2, v2) = block.predict(&q);
        for i in 0..q.len() / 3 {
            assert!(
                close(m1[i], m2[i], 1e-9) && close(m0[i], m2[i], 1e-9),
                "mean {i}"
            );
            assert!(
                (v1[i] - v2[i]).abs() <= 1e-9 * v1[i].abs().max(1e-6),
                "var {i}"
            );
        }
        // Through the surrogate: the same for the sparse posterior's default (one at a time).
        let mut s = Surrogate::Exact(gp);
        s.fantasize_many(&p);
        let (m3, v3) = s.predict(&q);
        assert_eq!((m3, v3), (m2, v2));
    }

    /// The refit schedule: when it re-optimises, by the rule of `GpConfig::reoptimises`.
    #[test]
    fn refit_schedule_rule() {
        let mut cfg = GpConfig::default();
        assert!(cfg.reoptimises(600, None), "no previous optimisation");
        assert!(cfg.reoptimises(500, Some(490)), "at or below the threshold");
        assert!(
            cfg.reoptimises(600, Some(500)),
            "last optimised at or below the threshold"
        );
        assert!(!cfg.reoptimises(600, Some(600)));
        assert!(!cfg.reoptimises(660, Some(600)));
        assert!(cfg.reoptimises(661, Some(600)), "grown by more than 10 %");
        assert!(cfg.reoptimises(590, Some(600)), "trials removed");
        cfg.refit_growth = 0.0;
        assert!(!cfg.reoptimises(600, Some(600)) && cfg.reoptimises(601, Some(600)));
        cfg.refit_growth = 0.1;
        cfg.warp = crate::surrogate::InputWarp::Log { eps: 1e-3 };
        assert!(
            cfg.reoptimises(601, Some(600)),
            "a warped GP is always re-optimised"
        );
        // Pending trials count in the scale: 200 finished + 1,000 running fit at scale.
        let mut cfg = GpConfig::default();
        assert!(cfg.reoptimises(210, Some(200)) && cfg.inducing(600).is_none());
        cfg.pending = 1000;
        assert!(cfg.scaled(200) && !cfg.reoptimises(210, Some(200)));
        assert_eq!(
            cfg.inducing(600),
            Some(crate::surrogate::fit::DEFAULT_INDUCING)
        );
        assert_eq!(
            cfg.inducing(400),
            None,
            "never as many inducing points as trials"
        );
    }

    /// Above the threshold a GP-UCB keeps its hyperparameters while the trials grow by less
    /// than `refit_growth`, and its posterior then conditions on every trial (the mean moves
    /// to the new trials' values); past the growth it re-optimises.
    #[test]
    fn refit_schedule_reuses_hyperparameters_until_the_trials_grow() {
        use crate::acquisition::proposer::Observations;
        use crate::acquisition::space::{SearchSpace, SpaceConstraints};
        use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
        use crate::surrogate::{FitStrategy, PosteriorStrategy};
        let d = 4;
        let space = SearchSpace::simplex(d, &SpaceConstraints::default()).unwrap();
        let mut rng = crate::rng::SplitMix64::new(11);
        let f = |w: &[f64]| -(w[0] - 0.4).powi(2) - (w[1] - 0.3).powi(2) + 0.1 * w[2];
        let take = |xs: Vec<Vec<f64>>| Observations {
            y: xs.iter().map(|w| f(w)).collect(),
            x: xs,
        };
        let mut obs = take(space.sample(&mut rng, 600));
        let mut cfg = GpUcbConfig::seeded(3);
        cfg.gp.fit = FitStrategy::Subset(80);
        cfg.gp.posterior = PosteriorStrategy::Exact;
        let mut ucb = GpUcb::new(cfg);
        let h = ucb.fit(&obs).unwrap().hyperparameters();
        assert_eq!(ucb.fitted_on(), Some(600));
        // 50 trials far from the function: a posterior on all trials moves towards them.
        let extra = space.sample(&mut rng, 50);
        let before = ucb.gp().unwrap().predict(&extra.concat()).0;
        obs.x.extend(extra.iter().cloned());
        obs.y.extend(extra.iter().map(|w| f(w) + 1.0));
        let gp = ucb.fit(&obs).unwrap();
        let h2 = gp.hyperparameters();
        let after = gp.predict(&extra.concat()).0;
        assert_eq!(ucb.fitted_on(), Some(600), "650 ≤ 660: not re-optimised");
        for (a, b) in h.lengthscales.iter().zip(&h2.lengthscales) {
            assert!(close(*a, *b, 1e-9), "{a} {b}");
        }
        assert!(close(h.noise, h2.noise, 1e-9) && close(h.outputscale, h2.outputscale, 1e-9));
        for (i, (a, b)) in before.iter().zip(&after).enumerate() {
            assert!(
                b > a,
                "trial {i}: mean {a} → {b}, observed {}",
                obs.y[600 + i]
            );
        }
        let shift = after.iter().zip(&before).map(|(b, a)| b - a).sum::<f64>() / 50.0;
        assert!(shift > 0.1, "mean shift {shift}");
        // Past 660 trials the hyperparameters are optimised again.
        let more = space.sample(&mut rng, 20);
        obs.y.extend(more.iter().map(|w| f(w)));
        obs.x.extend(more);
        let h3 = ucb.fit(&obs).unwrap().hyperparameters();
        assert_eq!(ucb.fitted_on(), Some(670));
        assert_ne!(h3, h2);
    }

    /// A saved `gp.json` (the serialised report) gives back the hyperparameters to seed a
    /// resumed search with.
    #[test]
    fn gp_json_round_trips_to_hyperparameters() {
        let (x, y) = data(20, 3, 4);
        let gp = Gp::with_hyperparameters(&x, &y, Kernel::Matern52, &hyp(3, 0.2)).unwrap();
        let text = serde_json::to_string_pretty(&gp.report()).unwrap();
        let back: GpReport = serde_json::from_str(&text).unwrap();
        let (h, want) = (back.hyperparameters(), gp.hyperparameters());
        assert_eq!(h.lengthscales.len(), 3);
        for (a, b) in h.lengthscales.iter().zip(&want.lengthscales) {
            assert!(close(*a, *b, 1e-12));
        }
        assert!(close(h.outputscale, want.outputscale, 1e-12));
        assert!(close(h.noise, want.noise, 1e-12) && close(h.linear, want.linear, 1e-12));
    }

    fn dist(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt()
    }
}
