//! Input warping of the GP: a fixed, monotone map applied to every coordinate before the kernel
//! sees it ([`InputWarp`], `GpConfig::warp`).
//!
//! Mixture weights span orders of magnitude (RegMix's Pile domains from 0.001 to 0.8), and a
//! domain's effect on a loss is closer to linear in the log of its share than in the share
//! itself (a loss falls steeply as a domain goes from 0.1 % to 1 % of the data and barely
//! from 40 % to 41 %). A stationary kernel on raw weights must use one lengthscale for both
//! regimes; on `ln(w + ε)` it need not. `ε` keeps zero weights finite and sets where the
//! map turns from logarithmic to flat: weights well below `ε` are all alike.
//!
//! The warp is applied inside the GP (its input transform), so predictions, gradients (by the
//! chain rule, `∂/∂w = ∂/∂u · 1/(w + ε)`) and GP-BUCB fantasies all take raw coordinates.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The default `ε` of [`InputWarp::Log`]: the resolution at which mixtures are usually written
/// (3 decimals), chosen by 5-fold cross-validation on RegMix's 512 training runs
/// (`docs/search-quality.md`).
pub const DEFAULT_LOG_EPS: f64 = 1e-3;

/// A per-coordinate input warp.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields, tag = "kind")]
pub enum InputWarp {
    /// The coordinates as they are.
    #[default]
    None,
    /// `u = ln(x + eps)`, `eps > 0`.
    Log {
        /// Offset added before the logarithm.
        eps: f64,
    },
}

/// An input warp that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WarpError {
    /// Not one of the known forms.
    #[error("input warp {0:?}: expected none, log or log:EPS (EPS > 0, e.g. log:0.001)")]
    Unknown(String),
    /// `eps` is not a positive finite number.
    #[error("input warp log:{0}: expected EPS to be a positive, finite number")]
    BadEps(String),
}

impl InputWarp {
    /// Checks the parameters (`eps` positive and finite).
    pub fn check(self) -> Result<Self, WarpError> {
        match self {
            InputWarp::Log { eps } if !(eps.is_finite() && eps > 0.0) => {
                Err(WarpError::BadEps(eps.to_string()))
            }
            w => Ok(w),
        }
    }

    /// The warped value of one coordinate.
    #[inline]
    pub fn apply(self, x: f64) -> f64 {
        match self {
            InputWarp::None => x,
            // max(0): a coordinate a hair below 0 from rounding stays finite.
            InputWarp::Log { eps } => (x.max(0.0) + eps).ln(),
        }
    }

    /// `du/dx` at `x`.
    #[inline]
    pub fn slope(self, x: f64) -> f64 {
        match self {
            InputWarp::None => 1.0,
            InputWarp::Log { eps } => 1.0 / (x.max(0.0) + eps),
        }
    }

    /// Whether this is the identity.
    pub fn is_none(&self) -> bool {
        matches!(self, InputWarp::None)
    }
}

impl FromStr for InputWarp {
    type Err = WarpError;

    /// `none`, `log` (ε = [`DEFAULT_LOG_EPS`]) or `log:EPS`.
    fn from_str(s: &str) -> Result<Self, WarpError> {
        match s.trim() {
            "none" => Ok(InputWarp::None),
            "log" => Ok(InputWarp::Log {
                eps: DEFAULT_LOG_EPS,
            }),
            t => match t.strip_prefix("log:") {
                Some(e) => {
                    let eps: f64 = e.parse().map_err(|_| WarpError::BadEps(e.to_string()))?;
                    InputWarp::Log { eps }.check()
                }
                None => Err(WarpError::Unknown(t.to_string())),
            },
        }
    }
}

impl fmt::Display for InputWarp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputWarp::None => write!(f, "none"),
            InputWarp::Log { eps } => write!(f, "log:{eps}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("none".parse::<InputWarp>().unwrap(), InputWarp::None);
        assert_eq!(
            "log".parse::<InputWarp>().unwrap(),
            InputWarp::Log { eps: 1e-3 }
        );
        let w: InputWarp = "log:0.01".parse().unwrap();
        assert_eq!(w, InputWarp::Log { eps: 0.01 });
        assert_eq!(w.to_string(), "log:0.01");
        for bad in ["sqrt", "log:0", "log:-1", "log:x", "log:inf"] {
            let e = bad.parse::<InputWarp>().unwrap_err().to_string();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn slope_is_the_derivative() {
        let w = InputWarp::Log { eps: 1e-3 };
        assert_eq!(w.apply(0.0), 1e-3f64.ln());
        for x in [0.0, 0.004, 0.3, 0.9] {
            let h = 1e-7;
            let fd = (w.apply(x + h) - w.apply(x)) / h;
            assert!((fd - w.slope(x)).abs() < 1e-3 * w.slope(x), "{x}: {fd}");
        }
        assert_eq!(InputWarp::None.apply(0.25), 0.25);
        assert_eq!(InputWarp::None.slope(0.25), 1.0);
    }
}
