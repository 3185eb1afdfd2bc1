//! `--features`: the per-image rows kept for the built-in trainer besides the embedding —
//! none, the pooled image embedding (one row of `projection_dim`), or `P` rows of the last
//! hidden state's patch tokens average-pooled ([`super::tower::pool_patches`]).

use std::fmt;
use std::str::FromStr;

use super::error::EmbedError;

/// Which per-image feature rows to write (`part-NNNNNN.features.npy`, f16 `[n, P, F]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureSpec {
    /// No features file.
    #[default]
    None,
    /// One row: the image embedding (`F = projection_dim`).
    Pooled,
    /// `P` rows of pooled patch tokens (`F = hidden_size`).
    Patches(usize),
}

impl FeatureSpec {
    /// `(P, F)` for a tower with these widths, or `None` when no features are written.
    pub fn shape(self, projection_dim: usize, hidden_size: usize) -> Option<(usize, usize)> {
        match self {
            FeatureSpec::None => None,
            FeatureSpec::Pooled => Some((1, projection_dim)),
            FeatureSpec::Patches(p) => Some((p, hidden_size)),
        }
    }
}

impl FromStr for FeatureSpec {
    type Err = EmbedError;

    fn from_str(s: &str) -> Result<Self, EmbedError> {
        let bad = || EmbedError::FeatureSpec {
            value: s.to_string(),
        };
        match s {
            "none" => Ok(FeatureSpec::None),
            "pooled" => Ok(FeatureSpec::Pooled),
            _ => match s.strip_prefix("patches:").map(str::parse::<usize>) {
                Some(Ok(p)) if p >= 1 => Ok(FeatureSpec::Patches(p)),
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureSpec::None => write!(f, "none"),
            FeatureSpec::Pooled => write!(f, "pooled"),
            FeatureSpec::Patches(p) => write!(f, "patches:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips() {
        for s in ["none", "pooled", "patches:16", "patches:1"] {
            assert_eq!(s.parse::<FeatureSpec>().unwrap().to_string(), s);
        }
        for s in ["patches:0", "patches:", "patch:4", "", "Pooled"] {
            assert!(s.parse::<FeatureSpec>().is_err(), "{s}");
        }
    }
}
