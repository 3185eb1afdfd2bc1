//! Baseline proposers with the same interface and budget as GP-UCB.
//!
//! The product claim is that GP-UCB finds a better mixture than these at the same number of
//! proxy runs, so they live behind the same [`Proposer`] trait and are run through the same
//! harness ([`crate::acquisition::objectives::run_search`]):
//!
//! - [`Uniform`]: every free coordinate gets the same share (per block); no search.
//! - [`Natural`]: the corpus's natural token shares (the space's `prior`); no search.
//! - [`RandomSearch`]: flat-Dirichlet draws from the space, recommending the best observed.
//! - [`RegMix`]: Liu et al. 2024: random mixtures around the tempered prior, a regression model
//!   (ridge, or gradient-boosted trees as the paper's LightGBM) fitted on the finished trials,
//!   and the mean of the top 128 of 100,000 predicted candidates as the recipe.
//!
//! The regressors are hand-written and small: [`ridge`] (closed form with leave-one-out choice
//! of the penalty) and [`gbdt`] (exact greedy, leaf-wise trees with LightGBM's defaults).

pub mod gbdt;
pub mod regmix;
pub mod ridge;

pub use gbdt::{Gbdt, GbdtConfig};
pub use regmix::{RegMix, RegMixConfig, Regressor};
pub use ridge::{Ridge, RidgeConfig};

use crate::acquisition::{Observations, Proposal, ProposeError, Proposer, SearchSpace, SpaceKind};
use crate::rng::SplitMix64;

/// A regression model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Too few training rows for the model.
    #[error("need at least {need} training rows, got {got}")]
    TooFewSamples {
        /// Minimum number of rows.
        need: usize,
        /// Rows given.
        got: usize,
    },
    /// A feature or target is NaN or infinite.
    #[error("training data contains a NaN or infinite value")]
    NonFinite,
    /// An invalid setting.
    #[error("invalid regressor setting: {0}")]
    Config(String),
    /// A numerical failure (e.g. a non-positive pivot).
    #[error("numerical failure: {0}")]
    Numerical(String),
}

/// Coordinates of a (possibly non-product, possibly off-bounds) mixture `w` (one weight per
/// cell): joint spaces take the free cells' weights, factorized ones the per-axis marginals;
/// each block is then rescaled to its mass and projected onto its bounds. Unlike
/// [`SearchSpace::from_mixture`] this never fails: fixed cells simply keep their fixed value.
pub fn coords_of_mixture(space: &SearchSpace, w: &[f64]) -> Vec<f64> {
    assert_eq!(w.len(), space.cells(), "mixture of the wrong length");
    let entries: Vec<f64> = match space.kind {
        SpaceKind::Joint => w.to_vec(),
        SpaceKind::Factorized => {
            let nc = space.concepts.len();
            let mut m = vec![0.0; nc + space.tasks.len()];
            for (&(c, t), &v) in space.cell_axes.iter().zip(w) {
                m[c] += v;
                m[nc + t] += v;
            }
            m
        }
    };
    let mut x: Vec<f64> = entries
        .iter()
        .enumerate()
        .filter(|(e, _)| !space.fixed.contains_key(e))
        .map(|(_, &v)| v.max(0.0))
        .collect();
    for b in &space.blocks {
        let s: f64 = b.coords.iter().map(|&c| x[c]).sum();
        for &c in &b.coords {
            x[c] = if s > 0.0 {
                x[c] * b.mass / s
            } else {
                b.mass / b.coords.len() as f64
            };
        }
    }
    space.project(&mut x);
    x
}

/// The prior (natural token shares) in the space's coordinates, each block normalised to sum
/// to 1 (before scaling by the block's mass): the per-block prior RegMix samples around.
pub fn block_prior(space: &SearchSpace) -> Vec<f64> {
    let x = coords_of_mixture(space, &space.prior);
    let mut p = x.clone();
    for b in &space.blocks {
        let s: f64 = b.coords.iter().map(|&c| x[c]).sum();
        for &c in &b.coords {
            p[c] = if s > 0.0 {
                x[c] / s
            } else {
                1.0 / b.coords.len() as f64
            };
        }
    }
    p
}

fn fixed_proposals(space: &SearchSpace, x: Vec<f64>, q: usize, reason: &str) -> Vec<Proposal> {
    vec![Proposal::unscored(space, x, reason); q]
}

/// The uniform mixture: every free coordinate of a block gets `mass / len` (projected onto
/// the bounds). It does not search: `propose` returns `q` replicates of the same mixture (the
/// one exception to "distinct proposals": repeated runs of a fixed baseline), and `recommend`
/// returns it whatever the trials.
#[derive(Debug, Clone, Default)]
pub struct Uniform;

impl Uniform {
    /// The uniform point of `space`.
    pub fn point(space: &SearchSpace) -> Vec<f64> {
        let mut x = vec![0.0; space.dim()];
        for b in &space.blocks {
            for &c in &b.coords {
                x[c] = b.mass / b.coords.len() as f64;
            }
        }
        space.project(&mut x);
        x
    }
}

impl Proposer for Uniform {
    fn name(&self) -> &str {
        "uniform"
    }

    fn propose(
        &mut self,
        space: &SearchSpace,
        _obs: &Observations,
        q: usize,
        _round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        Ok(fixed_proposals(space, Self::point(space), q, "uniform"))
    }

    fn recommend(
        &mut self,
        space: &SearchSpace,
        _obs: &Observations,
    ) -> Result<Proposal, ProposeError> {
        Ok(fixed_proposals(space, Self::point(space), 1, "uniform").remove(0))
    }
}

/// The natural proportions (token shares, the space's `prior`), mapped into the space by
/// [`coords_of_mixture`]. Like [`Uniform`], a fixed mixture: `q` replicates, same recommendation.
#[derive(Debug, Clone, Default)]
pub struct Natural;

impl Natural {
    /// The natural point of `space`.
    pub fn point(space: &SearchSpace) -> Vec<f64> {
        coords_of_mixture(space, &space.prior)
    }
}

impl Proposer for Natural {
    fn name(&self) -> &str {
        "natural"
    }

    fn propose(
        &mut self,
        space: &SearchSpace,
        _obs: &Observations,
        q: usize,
        _round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        Ok(fixed_proposals(space, Self::point(space), q, "natural"))
    }

    fn recommend(
        &mut self,
        space: &SearchSpace,
        _obs: &Observations,
    ) -> Result<Proposal, ProposeError> {
        Ok(fixed_proposals(space, Self::point(space), 1, "natural").remove(0))
    }
}

/// Random search: `q` flat-Dirichlet draws per round ([`SearchSpace::sample`]) from a stream
/// derived from (`seed`, `round`), so a round is reproducible on its own; the recommendation is
/// the best observed trial (the trait's default).
#[derive(Debug, Clone)]
pub struct RandomSearch {
    /// Seed of the draws.
    pub seed: u64,
}

impl RandomSearch {
    /// Random search with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl Proposer for RandomSearch {
    fn name(&self) -> &str {
        "random"
    }

    fn propose(
        &mut self,
        space: &SearchSpace,
        _obs: &Observations,
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        let mut rng = SplitMix64::derive(self.seed, 0x5241_4e44_0000_0000 ^ round as u64);
        Ok(space
            .sample(&mut rng, q)
            .into_iter()
            .map(|x| Proposal::unscored(space, x, "random"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquisition::SpaceConstraints;

    fn space(kind: SpaceKind, c: &SpaceConstraints) -> SearchSpace {
        let concepts = vec!["c0".to_string(), "c1".into(), "c2".into()];
        let tasks = vec!["ocr".to_string(), "vqa".into()];
        let mut cells = Vec::new();
        let mut axes = Vec::new();
        for (ci, cn) in concepts.iter().enumerate() {
            for (ti, tn) in tasks.iter().enumerate() {
                cells.push(format!("{cn}/{tn}"));
                axes.push((ci, ti));
            }
        }
        let prior = vec![0.4, 0.2, 0.15, 0.1, 0.1, 0.05];
        SearchSpace::new(kind, cells, axes, concepts, tasks, prior, c).unwrap()
    }

    #[test]
    fn fixed_baselines_are_their_mixtures() {
        let s = space(SpaceKind::Joint, &SpaceConstraints::default());
        let obs = Observations::default();
        let p = Uniform.propose(&s, &obs, 3, 0).unwrap();
        assert_eq!(p.len(), 3);
        for w in &p[0].mixture {
            assert!((w - 1.0 / 6.0).abs() < 1e-15);
        }
        let r = Natural.recommend(&s, &obs).unwrap();
        for (a, b) in r.mixture.iter().zip(&s.prior) {
            assert!((a - b).abs() < 1e-15);
        }
        // Factorized: the natural point is the prior's marginals.
        let f = space(SpaceKind::Factorized, &SpaceConstraints::default());
        let x = Natural::point(&f);
        let want = [0.6, 0.25, 0.15, 0.65, 0.35];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{x:?}");
        }
    }

    #[test]
    fn fixed_cells_and_bounds_are_respected() {
        let mut c = SpaceConstraints::default();
        c.fixed.insert("c0/ocr".into(), 0.1);
        c.upper.insert("c0/vqa".into(), 0.05);
        let s = space(SpaceKind::Joint, &c);
        for x in [Uniform::point(&s), Natural::point(&s)] {
            assert!(s.contains(&x, 1e-12), "{x:?}");
            assert!((s.to_mixture(&x)[0] - 0.1).abs() < 1e-12);
        }
        let p = block_prior(&s);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn random_search_is_seeded_per_round() {
        let s = space(SpaceKind::Factorized, &SpaceConstraints::default());
        let obs = Observations::default();
        let a = RandomSearch::new(7).propose(&s, &obs, 4, 2).unwrap();
        let b = RandomSearch::new(7).propose(&s, &obs, 4, 2).unwrap();
        let c = RandomSearch::new(7).propose(&s, &obs, 4, 3).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        for p in &a {
            assert!(s.contains(&p.x, 1e-12));
        }
    }

    #[test]
    fn bad_observations_are_named() {
        let s = space(SpaceKind::Joint, &SpaceConstraints::default());
        let mut obs = Observations::default();
        obs.push(vec![1.0 / 6.0; 6], 0.5);
        obs.push(vec![1.0 / 6.0; 6], f64::NAN);
        let e = obs.validate(&s).unwrap_err().to_string();
        assert!(e.contains("trial 1") && e.contains("NaN"), "{e}");
        let mut obs = Observations::default();
        obs.push(vec![0.5; 3], 0.5);
        let e = obs.validate(&s).unwrap_err().to_string();
        assert!(e.contains("trial 0") && e.contains("3 coordinates"), "{e}");
    }
}
