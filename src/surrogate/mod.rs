//! Surrogate models of the objective over the mixture space.
//!
//! The acquisition layer sees only a [`Posterior`] (BoTorch's three layers: model →
//! posterior → acquisition → optimiser).
//!
//! - [`posterior`]: the [`Posterior`] trait and [`PointPosterior`].
//! - [`gp`]: exact GP regression ([`Gp`]) on faer, with outcome standardisation, rank-1
//!   updates and predictions.
//! - `likelihood`: the internal hyperparameters, the kernel matrix, and the log marginal
//!   likelihood with its analytic gradient.
//! - `linalg`: Cholesky factorisation with jitter escalation, triangular solves.
//! - [`kernel`]: Matérn-5/2 and RBF correlations with ARD lengthscales.
//! - [`fit`]: [`GpConfig`] and MAP hyperparameter fitting with BoTorch-style priors and
//!   restarts.
//! - [`fidelity`]: [`AtFidelity`], a GP over mixtures × fidelity features seen at one
//!   fidelity (multi-fidelity search).
//! - [`sparse`]: [`SparseGp`], the DTC sparse posterior with inducing points among the trials
//!   (past a few thousand trials).
//! - [`scale`]: [`Surrogate`] (exact or sparse by the number of trials) and [`FantasyPool`],
//!   a candidate pool's variances kept current under fantasies by rank-1 updates.
//! - [`error`]: the error type, [`GpError`].
//! - [`lbfgs`]: the L-BFGS optimiser used by the fit.
//! - [`warp`]: [`InputWarp`], a fixed per-coordinate input warp (`ln(x + ε)`) of the GP.
//! - [`combination`]: [`LinearCombination`], the posterior of a weighted sum of independently
//!   modelled objectives (one GP per benchmark, combined for a targeted recipe).

pub mod combination;
pub mod error;
pub mod fidelity;
pub mod fit;
pub mod gp;
pub mod kernel;
pub mod lbfgs;
mod likelihood;
mod linalg;
pub mod posterior;
pub mod scale;
pub mod sparse;
pub mod warp;

pub use combination::LinearCombination;
pub use error::GpError;
pub use fidelity::AtFidelity;
pub use fit::{FitStrategy, GpConfig, PosteriorStrategy};
pub use gp::{Gp, GpHyperparameters, GpReport};
pub use kernel::Kernel;
pub use posterior::{PointPosterior, Posterior};
pub use scale::{FantasyPool, Surrogate};
pub use sparse::SparseGp;
pub use warp::InputWarp;
