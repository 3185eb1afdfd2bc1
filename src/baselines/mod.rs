//! Baseline proposers with the same interface and budget as GP-UCB.
//!
//! The product claim is that GP-UCB finds a better mixture than these at the same number of
//! proxy runs, so they live behind the same [`Proposer`](crate::acquisition::Proposer) trait
//! and are run through the same harness (`benches/common/objectives.rs`):
//!
//! - [`Uniform`]: every free coordinate gets the same share (per block); no search.
//! - [`Natural`]: the corpus's natural token shares (the space's `prior`); no search.
//! - [`RandomSearch`]: flat-Dirichlet draws from the space, recommending the best observed.
//! - [`RegMix`]: Liu et al. 2024: random mixtures around the tempered prior, a regression model
//!   (ridge, or gradient-boosted trees as the paper's LightGBM) fitted on the finished trials,
//!   and the mean of the top 128 of 100,000 predicted candidates as the recipe.
//! - [`Chameleon`]: Xie et al. 2025: a fixed mixture from kernel ridge leverage scores of the
//!   cells' mean CLIP embeddings (the manifest's); no search.
//!
//! The regressors are hand-written and small: [`ridge`] (closed form with leave-one-out choice
//! of the penalty) and [`gbdt`] (exact greedy, leaf-wise trees with LightGBM's defaults).
//! Their [`FitError`] is in [`error`]; [`coords`] maps any mixture into a space's coordinates
//! (the natural point, RegMix's prior).

pub mod chameleon;
pub mod coords;
pub mod error;
pub mod fixed;
pub mod gbdt;
pub mod random;
pub mod regmix;
pub mod ridge;
#[cfg(test)]
mod tests;

pub use chameleon::{chameleon_weights, Chameleon, ChameleonError, ChameleonMode, ChameleonParams};
pub use coords::{block_prior, coords_of_mixture};
pub use error::FitError;
pub use fixed::{Natural, Uniform};
pub use gbdt::{Gbdt, GbdtConfig};
pub use random::RandomSearch;
pub use regmix::{RegMix, RegMixConfig, Regressor};
pub use ridge::{Ridge, RidgeConfig};
