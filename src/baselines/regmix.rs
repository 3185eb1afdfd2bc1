//! RegMix (Liu et al. 2024, "RegMix: Data Mixture as Regression for Language Model
//! Pre-training"), as published in `sail-sg/regmix`, behind the [`Proposer`] interface.
//!
//! **Exploration** (`propose`): RegMix's proxy runs are random mixtures from its candidate
//! distribution (`mixture_config/synthesize_mixture.py`):
//!
//! 1. the prior is the natural token share `p`, tempered: `p^0.5`, renormalised;
//! 2. a strength `s` is picked uniformly from 15 values log-spaced over `[0.1, 5]`
//!    (`np.logspace(log10(0.1), log10(5), 15)`), and `u ~ Dirichlet(p^0.5 · s)`;
//! 3. draws with any `u_c > min(15 · p_c, 1)` (a cell used more than 15× its natural share,
//!    with `p` the *untempered* prior) are rejected and redrawn;
//! 4. weights below `2e-4` are set to zero and the rest renormalised.
//!
//! (The script then rounds to multiples of `2e-4` and de-duplicates for its YAML files; this
//! changes nothing measurable and is omitted.) In MixAtlas's space the distribution is applied
//! per block, to the block's share of the prior (a joint space without constraints: exactly
//! the above), scaled to the block's mass and projected onto its bounds. After
//! [`RegMixConfig::max_attempts`] rejections in a row the last draw is projected onto the
//! capped simplex instead (never reached at d = 15 and 50 with the synthetic priors).
//!
//! **Recommendation** (`recommend`): a regressor (ridge, or gradient-boosted trees as the
//! paper's LightGBM) is fitted on the finished trials; 100,000 fresh candidates from the same
//! distribution are scored and the mean of the 128 with the best prediction is the recipe
//! (the objective is maximised). Everything is deterministic for the seed, whatever the
//! thread count (candidates are drawn in fixed chunks, each from its own derived stream).

use rayon::prelude::*;

use super::coords::block_prior;
use super::error::FitError;
use super::gbdt::{Gbdt, GbdtConfig};
use super::ridge::{Ridge, RidgeConfig};
use crate::acquisition::space::project_bounded_simplex;
use crate::acquisition::{Observations, Proposal, ProposeError, Proposer, SearchSpace};
use crate::rng::SplitMix64;

/// The regression model RegMix fits to the finished trials.
#[derive(Debug, Clone, PartialEq)]
pub enum Regressor {
    /// Ridge regression on the coordinates, penalty by leave-one-out.
    Linear(RidgeConfig),
    /// Gradient-boosted trees (LightGBM-like).
    Gbdt(GbdtConfig),
}

impl Regressor {
    /// Short label: `linear` or `gbdt`.
    pub fn label(&self) -> &'static str {
        match self {
            Regressor::Linear(_) => "linear",
            Regressor::Gbdt(_) => "gbdt",
        }
    }
}

/// Settings of [`RegMix`]. `Default` is the published configuration with the GBDT regressor.
#[derive(Debug, Clone, PartialEq)]
pub struct RegMixConfig {
    /// Seed of all draws (exploration, simulation, tree subsampling).
    pub seed: u64,
    /// The regression model.
    pub regressor: Regressor,
    /// Prior temperature (the prior is raised to this power): 0.5.
    pub temperature: f64,
    /// Dirichlet strengths, one picked uniformly per draw: 15 values log-spaced over [0.1, 5].
    pub strengths: Vec<f64>,
    /// A cell may get at most this multiple of its natural share: 15.
    pub max_usage: f64,
    /// Weights below this are zeroed: 2e-4.
    pub minimum: f64,
    /// Candidates scored by the regressor for the recommendation: 100,000.
    pub n_candidates: usize,
    /// The recommendation is the mean of this many top-predicted candidates: 128.
    pub top_k: usize,
    /// Rejections in a row before a draw is projected onto the capped simplex instead.
    pub max_attempts: usize,
}

impl Default for RegMixConfig {
    fn default() -> Self {
        let (lo, hi) = (0.1f64.log10(), 5f64.log10());
        Self {
            seed: 0,
            regressor: Regressor::Gbdt(GbdtConfig::default()),
            temperature: 0.5,
            strengths: (0..15)
                .map(|i| 10f64.powf(lo + (hi - lo) * i as f64 / 14.0))
                .collect(),
            max_usage: 15.0,
            minimum: 2e-4,
            n_candidates: 100_000,
            top_k: 128,
            max_attempts: 1000,
        }
    }
}

/// A regressor fitted by [`RegMix::fit`].
#[derive(Debug, Clone, PartialEq)]
pub enum FittedRegressor {
    /// Ridge.
    Linear(Ridge),
    /// Boosted trees.
    Gbdt(Gbdt),
}

impl FittedRegressor {
    /// Predicted objective at `x` (space coordinates).
    pub fn predict(&self, x: &[f64]) -> f64 {
        match self {
            FittedRegressor::Linear(m) => m.predict(x),
            FittedRegressor::Gbdt(m) => m.predict(x),
        }
    }
}

/// Per-block sampling parameters.
#[derive(Debug, Clone)]
struct BlockSampler {
    coords: Vec<usize>,
    mass: f64,
    /// Tempered, renormalised prior (Dirichlet base measure).
    alpha: Vec<f64>,
    /// `min(max_usage · p, 1)` per coordinate, as a fraction of the block's mass.
    cap: Vec<f64>,
}

/// The RegMix baseline.
#[derive(Debug, Clone)]
pub struct RegMix {
    /// Settings.
    pub cfg: RegMixConfig,
    name: String,
    /// The simulation candidates (they depend only on the space and the settings, not on the
    /// trials), kept between recommendations: (space, settings, `n × d` row-major).
    simulated: Option<(SearchSpace, RegMixConfig, Vec<f64>)>,
}

const STREAM_PROPOSE: u64 = 0x5245_474d_0000_0000;
const STREAM_SIMULATE: u64 = 0x5245_474d_5349_4d00;
const CHUNK: usize = 1024;

/// `ln Γ` draw for shape `a > 0` (Marsaglia–Tsang; for `a < 1`, `Γ(a+1) · U^{1/a}` in logs so
/// tiny shapes do not underflow to zero).
fn ln_gamma_draw(rng: &mut SplitMix64, a: f64) -> f64 {
    if a < 1.0 {
        let u = 1.0 - rng.next_f64(); // (0, 1]
        return ln_gamma_draw(rng, a + 1.0) + u.ln() / a;
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let z = rng.normal();
        let v = 1.0 + c * z;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = 1.0 - rng.next_f64();
        if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return (d * v).ln();
        }
    }
}

/// A Dirichlet draw with parameters `alpha` (zeros give zero weights) into `out`.
pub fn dirichlet(rng: &mut SplitMix64, alpha: &[f64], out: &mut [f64]) {
    assert_eq!(alpha.len(), out.len());
    let mut mx = f64::NEG_INFINITY;
    for (o, &a) in out.iter_mut().zip(alpha) {
        *o = if a > 0.0 {
            ln_gamma_draw(rng, a)
        } else {
            f64::NEG_INFINITY
        };
        mx = mx.max(*o);
    }
    if mx == f64::NEG_INFINITY {
        out.iter_mut().for_each(|o| *o = 1.0 / alpha.len() as f64);
        return;
    }
    let mut s = 0.0;
    for o in out.iter_mut() {
        *o = (*o - mx).exp();
        s += *o;
    }
    out.iter_mut().for_each(|o| *o /= s);
}

impl RegMix {
    /// RegMix with `cfg`.
    pub fn new(cfg: RegMixConfig) -> Self {
        let name = format!("regmix-{}", cfg.regressor.label());
        Self {
            cfg,
            name,
            simulated: None,
        }
    }

    fn samplers(&self, space: &SearchSpace) -> Vec<BlockSampler> {
        let p = block_prior(space);
        space
            .blocks
            .iter()
            .map(|b| {
                let pb: Vec<f64> = b.coords.iter().map(|&c| p[c]).collect();
                let mut alpha: Vec<f64> = pb
                    .iter()
                    .map(|&v| {
                        if v > 0.0 {
                            v.powf(self.cfg.temperature)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let s: f64 = alpha.iter().sum();
                alpha.iter_mut().for_each(|a| *a /= s);
                let mut cap: Vec<f64> = pb
                    .iter()
                    .map(|&v| (self.cfg.max_usage * v).min(1.0))
                    .collect();
                if cap.iter().sum::<f64>() < 1.0 {
                    // A cap no mixture can meet (max_usage · Σp < 1): no cap.
                    cap.iter_mut().for_each(|c| *c = 1.0);
                }
                BlockSampler {
                    coords: b.coords.clone(),
                    mass: b.mass,
                    alpha,
                    cap,
                }
            })
            .collect()
    }

    /// One candidate (space coordinates) into `x`.
    fn draw(
        &self,
        space: &SearchSpace,
        samplers: &[BlockSampler],
        rng: &mut SplitMix64,
        x: &mut [f64],
    ) {
        let mut u = Vec::new();
        let mut a = Vec::new();
        for b in samplers {
            let k = b.coords.len();
            u.resize(k, 0.0);
            a.resize(k, 0.0);
            let mut accepted = false;
            for _ in 0..self.cfg.max_attempts.max(1) {
                let s = self.cfg.strengths[rng.below(self.cfg.strengths.len() as u64) as usize];
                for (ai, &al) in a.iter_mut().zip(&b.alpha) {
                    *ai = al * s;
                }
                dirichlet(rng, &a, &mut u);
                if u.iter().zip(&b.cap).all(|(v, c)| v <= c) {
                    accepted = true;
                    break;
                }
            }
            if !accepted {
                let zeros = vec![0.0; k];
                project_bounded_simplex(&mut u, 1.0, &zeros, &b.cap);
            }
            let mut s = 0.0;
            for v in u.iter_mut() {
                if *v < self.cfg.minimum {
                    *v = 0.0;
                }
                s += *v;
            }
            for (&c, &v) in b.coords.iter().zip(&u) {
                x[c] = b.mass * v / s;
            }
        }
        // Only where bounds or fixed cells need it: the projection's rounding fix-up could
        // turn an exact zero into 1e-16.
        if !space.contains(x, 1e-12) {
            space.project(x);
        }
    }

    /// `n` candidates from RegMix's distribution, from the stream `(seed, stream)`: drawn in
    /// chunks of 1024, chunk `j` from `SplitMix64::derive(seed ^ stream, j)`.
    pub fn sample_candidates(&self, space: &SearchSpace, stream: u64, n: usize) -> Vec<Vec<f64>> {
        let samplers = self.samplers(space);
        let chunks = n.div_ceil(CHUNK);
        (0..chunks)
            .into_par_iter()
            .flat_map_iter(|j| {
                let mut rng = SplitMix64::derive(self.cfg.seed ^ stream, j as u64);
                let m = CHUNK.min(n - j * CHUNK);
                let samplers = &samplers;
                (0..m)
                    .map(move |_| {
                        let mut x = vec![0.0; space.dim()];
                        self.draw(space, samplers, &mut rng, &mut x);
                        x
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Fits the regressor on the trials. Needs at least 2 trials with finite values.
    pub fn fit(
        &self,
        space: &SearchSpace,
        obs: &Observations,
    ) -> Result<FittedRegressor, ProposeError> {
        obs.validate(space)?;
        if obs.len() < 2 {
            return Err(ProposeError::BadObservations(format!(
                "RegMix needs at least 2 finished trials to fit its {} regressor; got {}",
                self.cfg.regressor.label(),
                obs.len()
            )));
        }
        let err = |e: FitError| ProposeError::Surrogate {
            model: self.name.clone(),
            source: Box::new(e),
        };
        Ok(match &self.cfg.regressor {
            Regressor::Linear(c) => {
                FittedRegressor::Linear(Ridge::fit(&obs.x, &obs.y, c).map_err(err)?)
            }
            Regressor::Gbdt(c) => {
                let c = GbdtConfig {
                    seed: c.seed ^ self.cfg.seed,
                    ..c.clone()
                };
                FittedRegressor::Gbdt(Gbdt::fit(&obs.x, &obs.y, &c).map_err(err)?)
            }
        })
    }
}

impl Proposer for RegMix {
    fn name(&self) -> &str {
        &self.name
    }

    /// `q` fresh draws from RegMix's candidate distribution (its exploration runs), from the
    /// stream of `round`; the trials are not used.
    fn propose(
        &mut self,
        space: &SearchSpace,
        _obs: &Observations,
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        let samplers = self.samplers(space);
        let mut rng = SplitMix64::derive(self.cfg.seed, STREAM_PROPOSE ^ round as u64);
        Ok((0..q)
            .map(|_| {
                let mut x = vec![0.0; space.dim()];
                self.draw(space, &samplers, &mut rng, &mut x);
                Proposal::unscored(space, x, "regmix candidate")
            })
            .collect())
    }

    /// Fits the regressor, scores `n_candidates` fresh candidates and returns the mean of the
    /// `top_k` best predicted (ties: earlier candidate first), projected into the space; `mean`
    /// holds the regressor's prediction there. Fewer than 2 trials: `BadObservations`.
    fn recommend(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
    ) -> Result<Proposal, ProposeError> {
        let model = self.fit(space, obs)?;
        let d = space.dim();
        let fresh = !matches!(&self.simulated, Some((s, c, _)) if s == space && c == &self.cfg);
        if fresh {
            let flat: Vec<f64> = self
                .sample_candidates(space, STREAM_SIMULATE, self.cfg.n_candidates)
                .into_iter()
                .flatten()
                .collect();
            self.simulated = Some((space.clone(), self.cfg.clone(), flat));
        }
        let cands = &self.simulated.as_ref().expect("just simulated").2;
        let n = cands.len() / d.max(1);
        let pred: Vec<f64> = cands.par_chunks(d).map(|x| model.predict(x)).collect();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| pred[b].total_cmp(&pred[a]).then(a.cmp(&b)));
        let k = self.cfg.top_k.clamp(1, n.max(1)).min(n);
        let mut x = vec![0.0; d];
        for &i in &idx[..k] {
            for (xi, ci) in x.iter_mut().zip(&cands[i * d..(i + 1) * d]) {
                *xi += ci / k as f64;
            }
        }
        space.project(&mut x);
        Ok(Proposal {
            mixture: space.to_mixture(&x),
            mean: Some(model.predict(&x)),
            x,
            std: None,
            acquisition: None,
            reason: format!(
                "regmix-{}: mean of the top {k} of {} predicted candidates",
                self.cfg.regressor.label(),
                n
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dirichlet moments: mean α/α₀, variance α(α₀−α)/(α₀²(α₀+1)), for small and large α.
    #[test]
    fn dirichlet_has_the_right_moments() {
        let mut rng = SplitMix64::new(21);
        for alpha in [vec![0.05, 0.02, 0.03], vec![2.0, 0.5, 7.5], vec![0.3; 5]] {
            let a0: f64 = alpha.iter().sum();
            let n = 200_000;
            let mut m = vec![0.0; alpha.len()];
            let mut v = vec![0.0; alpha.len()];
            let mut u = vec![0.0; alpha.len()];
            for _ in 0..n {
                dirichlet(&mut rng, &alpha, &mut u);
                assert!((u.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                for i in 0..u.len() {
                    m[i] += u[i] / n as f64;
                    v[i] += u[i] * u[i] / n as f64;
                }
            }
            for i in 0..alpha.len() {
                let mean = alpha[i] / a0;
                let var = alpha[i] * (a0 - alpha[i]) / (a0 * a0 * (a0 + 1.0));
                let sd_mean = (var / n as f64).sqrt();
                assert!(
                    (m[i] - mean).abs() < 5.0 * sd_mean,
                    "{alpha:?} {i}: {} {mean}",
                    m[i]
                );
                let got = v[i] - m[i] * m[i];
                assert!(
                    (got - var).abs() < 0.03 * var + 1e-6,
                    "{alpha:?} {i}: {got} {var}"
                );
            }
        }
    }

    #[test]
    fn strengths_are_the_published_grid() {
        let s = RegMixConfig::default().strengths;
        assert_eq!(s.len(), 15);
        assert!((s[0] - 0.1).abs() < 1e-15 && (s[14] - 5.0).abs() < 1e-12);
        for w in s.windows(3) {
            assert!((w[1] / w[0] - w[2] / w[1]).abs() < 1e-12);
        }
    }
}
