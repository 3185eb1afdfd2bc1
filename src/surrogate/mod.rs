//! Surrogate models of the objective over the mixture space.
//!
//! The acquisition layer sees only a [`Posterior`] (BoTorch's three layers: model →
//! posterior → acquisition → optimiser).
//!
//! - [`gp`]: exact GP regression ([`Gp`]) on faer, with outcome standardisation, jitter
//!   escalation, rank-1 updates and analytic gradients of the marginal likelihood.
//! - [`kernel`]: Matérn-5/2 and RBF correlations with ARD lengthscales.
//! - [`fit`]: MAP hyperparameter fitting with BoTorch-style priors and restarts.
//! - [`lbfgs`]: the L-BFGS optimiser used by the fit.
//! - [`combination`]: [`LinearCombination`], the posterior of a weighted sum of independently
//!   modelled objectives (one GP per benchmark, combined for a targeted recipe).

pub mod combination;
pub mod fit;
pub mod gp;
pub mod kernel;
pub mod lbfgs;

pub use combination::LinearCombination;
pub use gp::{Gp, GpConfig, GpError, GpHyperparameters, GpReport};
pub use kernel::Kernel;

/// Mean, standard deviation and their gradients at one point (objective units).
#[derive(Debug, Clone, PartialEq)]
pub struct PointPosterior {
    /// Posterior mean μ(x).
    pub mean: f64,
    /// Posterior standard deviation σ(x) of the latent function (no observation noise).
    pub std: f64,
    /// ∇μ(x), length `d`.
    pub grad_mean: Vec<f64>,
    /// ∇σ(x), length `d`.
    pub grad_std: Vec<f64>,
}

/// What an acquisition function may ask of a fitted surrogate.
pub trait Posterior: Clone + Send + Sync {
    /// Input dimension `d`.
    fn dim(&self) -> usize;

    /// Posterior mean and variance of the latent function at `m` points (`x`: `m × d`
    /// row-major), in objective units.
    fn predict(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>);

    /// Mean, standard deviation and gradients at one point (`x`: length `d`).
    fn predict_point(&self, x: &[f64]) -> PointPosterior;

    /// Conditions on a hallucinated observation at `x` equal to the current posterior mean
    /// (GP-BUCB): the mean is unchanged, the variance shrinks around `x`.
    fn fantasize(&mut self, x: &[f64]);
}
