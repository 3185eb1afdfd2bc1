//! The errors of the surrogate: why a GP could not be built, fitted or updated.
//!
//! Its own file so that the model ([`super::gp`]), the likelihood (`likelihood.rs`), the
//! linear algebra (`linalg.rs`) and the fit ([`super::fit`]) can all return it without
//! importing one another.

/// A GP could not be built, fitted or updated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpError {
    /// Fewer observations than the model needs.
    #[error("a Gaussian process needs at least 2 trials, got {n}")]
    TooFewPoints {
        /// Number of trials given.
        n: usize,
    },
    /// An objective value is NaN or infinite.
    #[error("trial {index}: objective is {value}; expected a finite number")]
    NonFiniteY {
        /// Index of the trial.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A trial's coordinates are unusable (wrong length, NaN or infinite), or its objective is
    /// beyond [`super::gp::MAX_ABS_OBJECTIVE`].
    #[error("trial {index}: {reason}")]
    BadInput {
        /// Index of the trial.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The kernel matrix is not positive definite even with the largest jitter.
    #[error(
        "kernel matrix of {n} trials is not positive definite even with jitter {jitter:e} × \
         its mean diagonal"
    )]
    NotPositiveDefinite {
        /// Size of the matrix.
        n: usize,
        /// Largest relative jitter tried.
        jitter: f64,
    },
    /// Hyperparameters that are not finite and positive (or of the wrong length).
    #[error("invalid hyperparameters: {0}")]
    BadHyperparameters(String),
}
