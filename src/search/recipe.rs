//! `recipe.json`: the mixture a search recommends, where it came from, and its Megatron
//! blend string.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fidelity::Fidelity;
use crate::acquisition::{Proposal, SearchSpace};
use crate::data::corpus::Manifest;
use crate::data::mixture::{by_name, megatron_blend};
use crate::fsutil::{write_atomic, PathIoError};

/// Current recipe format version.
pub const RECIPE_VERSION: u32 = 1;

/// Where a recipe came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeSource {
    /// Method that produced it (`gp-ucb`, `regmix`, …).
    pub method: String,
    /// Number of finished trials it was built from.
    pub trials: usize,
    /// The evaluated trial it equals, if it is one.
    pub trial: Option<String>,
    /// Benchmarks the objective targeted (empty = all, or the explicit objective).
    pub target: Vec<String>,
    /// The surrogate's predicted objective mean at the recipe.
    pub predicted_mean: Option<f64>,
    /// The surrogate's predicted standard deviation at the recipe.
    pub predicted_std: Option<f64>,
    /// How it was chosen.
    pub reason: String,
    /// The fidelity the prediction is for (multi-fidelity searches: the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<Fidelity>,
}

/// A recommended mixture (DESIGN.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Always `"mixatlas-recipe"`.
    pub format: String,
    /// [`RECIPE_VERSION`].
    pub version: u32,
    /// Weight per cell (`concept/task` → weight), summing to 1.
    pub weights: BTreeMap<String, f64>,
    /// Concept shares (sum of the cells of each concept).
    pub concept_marginals: BTreeMap<String, f64>,
    /// Task shares.
    pub task_marginals: BTreeMap<String, f64>,
    /// Provenance.
    pub source: RecipeSource,
}

impl Recipe {
    /// Builds a recipe from a proposal over `space` (its mixture in the space's cell order).
    pub fn from_proposal(space: &SearchSpace, p: &Proposal, source: RecipeSource) -> Self {
        let weights = by_name(&space.cells, &p.mixture);
        let mut concepts: BTreeMap<String, f64> =
            space.concepts.iter().map(|c| (c.clone(), 0.0)).collect();
        let mut tasks: BTreeMap<String, f64> =
            space.tasks.iter().map(|t| (t.clone(), 0.0)).collect();
        for (&(c, t), &w) in space.cell_axes.iter().zip(&p.mixture) {
            *concepts.get_mut(&space.concepts[c]).expect("concept") += w;
            *tasks.get_mut(&space.tasks[t]).expect("task") += w;
        }
        Self {
            format: "mixatlas-recipe".into(),
            version: RECIPE_VERSION,
            weights,
            concept_marginals: concepts,
            task_marginals: tasks,
            source,
        }
    }

    /// Megatron's `--data-path` blend: `W1 PREFIX1 W2 PREFIX2 …` over cells with positive
    /// weight. Prefixes come from the manifest, joined to `corpus_dir` (as given).
    pub fn megatron_blend(&self, manifest: &Manifest, corpus_dir: &Path) -> String {
        megatron_blend(&self.weights, manifest, corpus_dir)
    }

    /// Writes the recipe atomically as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), PathIoError> {
        let text = serde_json::to_string_pretty(self).expect("recipe serialises");
        write_atomic(path, text.as_bytes())
    }
}
