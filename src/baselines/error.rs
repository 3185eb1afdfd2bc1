//! How fitting a baseline's regression model fails ([`FitError`]): shared by the regressors
//! ([`super::ridge`], [`super::gbdt`]) and RegMix, which reports it as a surrogate failure.

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
    /// Ridge penalties that are not all finite and > 0 (or none at all).
    #[error("invalid regressor setting: ridge penalties must be finite and > 0; got {0:?}")]
    RidgePenalties(Vec<f64>),
    /// Boosting settings out of range (fewer than 2 leaves, an empty leaf, a non-positive or
    /// non-finite learning rate, a negative or non-finite L2 penalty, a sampling fraction
    /// outside `(0, 1]`); holds the settings as `{:?}` prints them.
    #[error("invalid regressor setting: {0}")]
    GbdtSettings(String),
    /// The ridge normal equations are not positive definite: the Cholesky pivot `pivot` is
    /// `value` (zero, negative or not finite).
    #[error(
        "numerical failure: ridge normal equations are not positive definite (pivot {pivot}: \
         {value})"
    )]
    NotPositiveDefinite {
        /// Index of the failing pivot.
        pivot: usize,
        /// Its value.
        value: f64,
    },
}
