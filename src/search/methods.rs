//! Search methods by name: GP-UCB and the baselines behind one [`Proposer`] interface, so
//! baselines run through the identical pipeline with the same budget.

use serde::{Deserialize, Serialize};

use crate::acquisition::design::DesignStart;
use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
use crate::acquisition::Proposer;
use crate::baselines::regmix::{RegMix, RegMixConfig};
use crate::baselines::{Natural, RandomSearch, Uniform};

/// A search method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Gaussian process + upper confidence bound, batch by GP-BUCB.
    #[default]
    GpUcb,
    /// RegMix: random prior-based mixtures, then a regression model's best predicted mixture.
    Regmix,
    /// Random search (flat Dirichlet).
    Random,
    /// The uniform mixture.
    Uniform,
    /// Natural proportions (token shares).
    Natural,
}

impl Method {
    /// The method's name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::GpUcb => "gp-ucb",
            Method::Regmix => "regmix",
            Method::Random => "random",
            Method::Uniform => "uniform",
            Method::Natural => "natural",
        }
    }

    /// A proposer for this method, seeded.
    pub fn proposer(self, seed: u64) -> Box<dyn Proposer> {
        self.proposer_from(seed, DesignStart::Centre)
    }

    /// [`Method::proposer`] whose initial design (GP-UCB's) starts at `start`.
    pub fn proposer_from(self, seed: u64, start: DesignStart) -> Box<dyn Proposer> {
        match self {
            Method::GpUcb => Box::new(GpUcb::new(GpUcbConfig {
                start,
                ..GpUcbConfig::seeded(seed)
            })),
            Method::Regmix => Box::new(RegMix::new(RegMixConfig {
                seed,
                ..RegMixConfig::default()
            })),
            Method::Random => Box::new(RandomSearch::new(seed)),
            Method::Uniform => Box::new(Uniform),
            Method::Natural => Box::new(Natural),
        }
    }
}
