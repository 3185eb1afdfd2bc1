//! `recipe.json`: the mixture a search recommends, where it came from, and its Megatron
//! blend string.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fidelity::Fidelity;
use crate::acquisition::{Proposal, SearchSpace};
use crate::data::corpus::Manifest;
use crate::data::mixture::{by_name, megatron_blend};
use crate::fsutil::{sync_parent, temp_sibling, write_atomic, IoContext, PathIoError};

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

    /// Writes `dir/recipe.json` and its blend `dir/recipe.blend.txt` (and `extra` files,
    /// e.g. `gp.json`) so that a failure can never leave a new recipe beside an old blend:
    /// every file is first written to a temporary sibling and fsync'd (a full disk fails
    /// here, with the old files untouched), then the old blend is removed, then the files
    /// are renamed into place, recipe first. A crash between the renames leaves at worst the
    /// new recipe without a blend, never a blend of another recipe.
    pub fn save_with_blend(
        &self,
        dir: &Path,
        blend: &str,
        extra: &[(&str, String)],
    ) -> Result<(), PathIoError> {
        let recipe = serde_json::to_string_pretty(self).expect("recipe serialises");
        let mut files = vec![
            (dir.join(RECIPE_FILE_NAME), recipe),
            (dir.join(BLEND_FILE_NAME), format!("{blend}\n")),
        ];
        files.extend(extra.iter().map(|(n, t)| (dir.join(n), t.clone())));
        let mut written: Vec<PathBuf> = Vec::new();
        let staged = files.iter().try_for_each(|(path, text)| {
            let tmp = temp_sibling(path);
            written.push(tmp.clone());
            write_synced(&tmp, text.as_bytes())
        });
        if let Err(e) = staged {
            for tmp in &written {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
        let blend_path = dir.join(BLEND_FILE_NAME);
        match fs::remove_file(&blend_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).at("removing the old blend", &blend_path)?
            }
            _ => {}
        }
        for ((path, _), tmp) in files.iter().zip(&written) {
            fs::rename(tmp, path).at("renaming into place", path)?;
        }
        sync_parent(&blend_path)
    }
}

/// The recipe's file name in a search directory.
pub const RECIPE_FILE_NAME: &str = "recipe.json";
/// The recipe's Megatron blend's file name in a search directory.
pub const BLEND_FILE_NAME: &str = "recipe.blend.txt";

/// Creates `path` with `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PathIoError> {
    let mut f = fs::File::create(path).at("creating", path)?;
    f.write_all(bytes).at("writing", path)?;
    f.sync_all().at("syncing", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe {
            format: "mixatlas-recipe".into(),
            version: RECIPE_VERSION,
            weights: [("c0/ocr".to_string(), 1.0)].into(),
            concept_marginals: [("c0".to_string(), 1.0)].into(),
            task_marginals: [("ocr".to_string(), 1.0)].into(),
            source: RecipeSource {
                method: "uniform".into(),
                trials: 1,
                trial: Some("t0000".into()),
                target: vec![],
                predicted_mean: None,
                predicted_std: None,
                reason: "best observed trial".into(),
                fidelity: None,
            },
        }
    }

    /// Issue 18 row 21: a write that fails (a full disk, here a blocked temp file) leaves the
    /// old recipe and its blend together, and no temporary file behind.
    #[test]
    fn a_failed_write_never_leaves_a_new_recipe_beside_an_old_blend() {
        let dir = tempfile::tempdir().unwrap();
        let (rp, bp) = (
            dir.path().join(RECIPE_FILE_NAME),
            dir.path().join(BLEND_FILE_NAME),
        );
        fs::write(&rp, "old recipe").unwrap();
        fs::write(&bp, "old blend").unwrap();
        let blocker = temp_sibling(&bp);
        fs::create_dir(&blocker).unwrap();
        assert!(recipe()
            .save_with_blend(dir.path(), "1 cells/c0_ocr", &[])
            .is_err());
        assert_eq!(fs::read_to_string(&rp).unwrap(), "old recipe");
        assert_eq!(fs::read_to_string(&bp).unwrap(), "old blend");
        assert!(!temp_sibling(&rp).exists());
        fs::remove_dir(&blocker).unwrap();
        let extra = [("gp.json", "{}".to_string())];
        recipe()
            .save_with_blend(dir.path(), "1 cells/c0_ocr", &extra)
            .unwrap();
        let back: Recipe = serde_json::from_str(&fs::read_to_string(&rp).unwrap()).unwrap();
        assert_eq!(back, recipe());
        assert_eq!(fs::read_to_string(&bp).unwrap(), "1 cells/c0_ocr\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("gp.json")).unwrap(),
            "{}"
        );
    }
}
