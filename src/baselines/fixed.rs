//! The fixed baselines: the [`Uniform`] mixture and the [`Natural`] proportions. Neither
//! searches; both propose `q` replicates of their one mixture and recommend it.

use super::coords::coords_of_mixture;
use crate::acquisition::{Observations, Proposal, ProposeError, Proposer, SearchSpace};

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
