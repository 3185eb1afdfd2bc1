//! Search methods by name: GP-UCB and the baselines behind one [`Proposer`] interface, so
//! baselines run through the identical pipeline with the same budget.

use serde::{Deserialize, Serialize};

use crate::acquisition::design::DesignStart;
use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
use crate::acquisition::Proposer;
use crate::baselines::chameleon::{Chameleon, ChameleonError, ChameleonParams};
use crate::baselines::regmix::{RegMix, RegMixConfig};
use crate::baselines::{Natural, RandomSearch, Uniform};
use crate::data::corpus::Manifest;

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
    /// Chameleon: kernel ridge leverage scores of the cells' mean CLIP embeddings (a fixed
    /// mixture from the corpus manifest, proposed once).
    Chameleon,
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
            Method::Chameleon => "chameleon",
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
            Method::Chameleon => Box::new(Chameleon::without_manifest()),
        }
    }

    /// [`Method::proposer_from`] for a search over `manifest`'s cells: Chameleon's mixture is
    /// computed from the manifest's cell embeddings under `chameleon` (an error when the
    /// corpus has none); the other methods do not read the manifest.
    pub fn proposer_on(
        self,
        seed: u64,
        start: DesignStart,
        manifest: &Manifest,
        chameleon: &ChameleonParams,
    ) -> Result<Box<dyn Proposer>, ChameleonError> {
        Ok(match self {
            Method::Chameleon => Box::new(Chameleon::from_manifest(manifest, chameleon)?),
            _ => self.proposer_from(seed, start),
        })
    }
}
