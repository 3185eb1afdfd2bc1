//! A trial's *fidelity*: the model preset and training length it is run at, spelled
//! `<preset>:<steps>` in `[search] fidelities`, `target_fidelity` and on the command line
//! (`mini:200`), and written as `{"preset": "mini", "steps": 200}` in `trials.jsonl` and
//! `recipe.json`. How a multi-fidelity search uses them is in [`super::multifidelity`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::config::PRESETS;

/// One fidelity: a model preset trained for a number of steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fidelity {
    /// Model preset (one of `model::config::PRESETS`).
    pub preset: String,
    /// Training steps (≥ 1).
    pub steps: u64,
}

/// A fidelity string that is not `<preset>:<steps>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FidelityParseError {
    /// No `:` between the preset and the steps.
    #[error("fidelity {0:?}: expected \"<model preset>:<training steps>\", e.g. \"mini:200\"")]
    Form(String),
    /// A preset that does not exist.
    #[error("fidelity {value:?}: unknown model preset {preset:?} (known: {known})")]
    UnknownPreset {
        /// The whole value.
        value: String,
        /// The preset named.
        preset: String,
        /// The known presets.
        known: String,
    },
    /// Steps that are not a positive integer.
    #[error("fidelity {0:?}: training steps must be an integer ≥ 1")]
    Steps(String),
}

impl Fidelity {
    /// A fidelity, checked (known preset, steps ≥ 1).
    pub fn new(preset: &str, steps: u64) -> Result<Self, FidelityParseError> {
        let f = Self {
            preset: preset.to_string(),
            steps,
        };
        f.check()?;
        Ok(f)
    }

    /// Checks the preset is known and the steps ≥ 1.
    pub fn check(&self) -> Result<(), FidelityParseError> {
        if !PRESETS.contains(&self.preset.as_str()) {
            return Err(FidelityParseError::UnknownPreset {
                value: self.to_string(),
                preset: self.preset.clone(),
                known: PRESETS.join(", "),
            });
        }
        if self.steps == 0 {
            return Err(FidelityParseError::Steps(self.to_string()));
        }
        Ok(())
    }
}

impl fmt::Display for Fidelity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.preset, self.steps)
    }
}

impl FromStr for Fidelity {
    type Err = FidelityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = s.trim();
        let (preset, steps) = v
            .rsplit_once(':')
            .ok_or_else(|| FidelityParseError::Form(v.to_string()))?;
        let steps: u64 = steps
            .trim()
            .parse()
            .map_err(|_| FidelityParseError::Steps(v.to_string()))?;
        let f = Self {
            preset: preset.trim().to_string(),
            steps,
        };
        f.check()?;
        Ok(f)
    }
}

/// Serde for `Vec<Fidelity>` spelled as strings (`["mini:200", "small:200"]`).
pub mod spelled {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Fidelity;

    /// Writes each fidelity as `<preset>:<steps>`.
    pub fn serialize<S: Serializer>(v: &[Fidelity], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|f| f.to_string()))
    }

    /// Reads a list of `<preset>:<steps>` strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Fidelity>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| s.parse().map_err(D::Error::custom))
            .collect()
    }
}

/// Serde for `Option<Fidelity>` spelled as a string (`"small:200"`).
pub mod spelled_opt {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Fidelity;

    /// Writes the fidelity as `<preset>:<steps>` (only called when present).
    pub fn serialize<S: Serializer>(v: &Option<Fidelity>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(f) => s.serialize_str(&f.to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads a `<preset>:<steps>` string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Fidelity>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_preset_colon_steps() {
        let f: Fidelity = "mini:200".parse().unwrap();
        assert_eq!(
            f,
            Fidelity {
                preset: "mini".into(),
                steps: 200
            }
        );
        assert_eq!(f.to_string(), "mini:200");
        assert_eq!(" small : 40 ".parse::<Fidelity>().unwrap().steps, 40);
        assert!(matches!(
            "mini".parse::<Fidelity>(),
            Err(FidelityParseError::Form(_))
        ));
        assert!(matches!(
            "mini:0".parse::<Fidelity>(),
            Err(FidelityParseError::Steps(_))
        ));
        assert!(matches!(
            "mini:-3".parse::<Fidelity>(),
            Err(FidelityParseError::Steps(_))
        ));
        let e = "huge:10".parse::<Fidelity>().unwrap_err().to_string();
        assert!(e.contains("\"huge\"") && e.contains("tiny"), "{e}");
        // The event form is an object.
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"preset":"mini","steps":200}"#
        );
    }
}
