//! Typed configuration files (TOML, unknown keys rejected) and presets.
//!
//! A config file has one table per stage; every field is optional and defaults to the
//! preset's value, and CLI flags override the file field by field:
//!
//! ```toml
//! [synth]
//! samples = 50000
//! seed = 7
//!
//! [prepare]
//! k = 10
//! metric = "cosine"
//! ```
//!
//! `[train]` holds the built-in trainer's settings; later stages add their own tables.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::prepare::PrepareConfig;
use crate::data::synth::SynthConfig;
use crate::search::config::SearchConfig;
use crate::train::TrainConfig;

/// A whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[synth]`: the synthetic corpus.
    pub synth: SynthConfig,
    /// `[prepare]`: clustering and cell writing.
    pub prepare: PrepareConfig,
    /// `[train]`: the built-in trainer (defaults: the proxy-trial preset).
    pub train: TrainConfig,
    /// `[search]`: `mixatlas search` (method, budget, objective, trainer, executor).
    pub search: SearchConfig,
}

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for a config, or has an unknown key.
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
}

impl Config {
    /// Parses TOML text; `path` is used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Renders the config as TOML (used to record the resolved configuration).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tables_fill_in_defaults() {
        let c = Config::from_toml(
            "[synth]\nsamples = 5\n[prepare]\nk = 4\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.synth.samples, 5);
        assert_eq!(c.synth.clip_dim, SynthConfig::default().clip_dim);
        assert_eq!(c.prepare.k, 4);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = Config::from_toml("[synth]\nsamplez = 5\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("samplez") && e.contains("x.toml"), "{e}");
        let e = Config::from_toml("[synthh]\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("synthh"), "{e}");
    }

    #[test]
    fn search_start_parses_and_rejects_unknown_values() {
        use crate::acquisition::design::DesignStart;
        let c = Config::from_toml("[search]\nstart = \"natural\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.search.start, DesignStart::Natural);
        assert_eq!(Config::default().search.start, DesignStart::Centre);
        let e = Config::from_toml("[search]\nstart = \"middle\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("middle") && e.contains("x.toml"), "{e}");
    }

    #[test]
    fn the_search_writes_train_toml_as_a_whole_config() {
        let mut c = Config::default();
        c.train.steps = 7;
        c.train.warmup_steps = 1;
        assert_eq!(crate::search::plan::train_toml(&c.train), c.to_toml());
    }

    #[test]
    fn roundtrips_through_toml() {
        let c = Config::default();
        let back = Config::from_toml(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(c, back);
    }
}
