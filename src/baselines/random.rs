//! Random search ([`RandomSearch`]): flat-Dirichlet draws, the best observed trial as the
//! recommendation.

use crate::acquisition::{Observations, Proposal, ProposeError, Proposer, SearchSpace};
use crate::rng::SplitMix64;

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
