//! The embedding directory contract (docs/real-data.md), written by `embed` and read by
//! `prepare --embeddings`: `part-NNNNNN.npy` (f32 `[n, D]` image embeddings),
//! `part-NNNNNN.ids.txt` (the n ids, one per line), optionally `part-NNNNNN.features.npy`
//! (f16 `[n, P, F]`), and `embed.json`, whose `parts` list the complete parts in order. Each
//! file is written atomically and `embed.json` after the part's files: a part not listed
//! there does not exist.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::EmbedError;
use super::npy::{self, NpyArray};
use crate::fsutil::{write_atomic, IoContext};

/// The `format` value of `embed.json`.
pub const FORMAT: &str = "mixatlas-embed/1";

/// The manifest file of an embedding directory.
pub const MANIFEST: &str = "embed.json";

/// An input item left out of its part (`--on-error skip`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedItem {
    /// The sample id.
    pub id: String,
    /// Where it came from.
    pub origin: String,
    /// Why it was left out.
    pub error: String,
}

/// One complete part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    /// The part number (`part-{index:06}`), 0, 1, 2, … in order.
    pub index: usize,
    /// Rows written (`items` minus skipped).
    pub rows: usize,
    /// Input items the part covers, skipped ones included.
    pub items: usize,
    /// Items left out, in input order.
    #[serde(default)]
    pub skipped: Vec<SkippedItem>,
}

/// `embed.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedManifest {
    /// [`FORMAT`].
    pub format: String,
    /// The checkpoint directory, as given.
    pub model_dir: String,
    /// SHA-256 over `config.json`, `preprocessor_config.json` and `model.safetensors`.
    pub config_hash: String,
    /// Width `D` of the embeddings (`projection_dim`).
    pub dim: usize,
    /// The features spec: `none`, `pooled` or `patches:P`.
    pub features: String,
    /// `P` (0 without features).
    pub feature_rows: usize,
    /// `F` (0 without features).
    pub feature_dim: usize,
    /// Input items per part (the last part may hold fewer).
    pub part_size: usize,
    /// The complete parts, in order.
    pub parts: Vec<PartEntry>,
    /// Whether the input was exhausted (every item is in a part).
    pub finished: bool,
}

/// The file stem of part `index`.
pub fn part_stem(index: usize) -> String {
    format!("part-{index:06}")
}

/// The three files of part `index` in `dir`: embeddings, ids, features.
pub fn part_paths(dir: &Path, index: usize) -> (PathBuf, PathBuf, PathBuf) {
    let stem = part_stem(index);
    (
        dir.join(format!("{stem}.npy")),
        dir.join(format!("{stem}.ids.txt")),
        dir.join(format!("{stem}.features.npy")),
    )
}

impl EmbedManifest {
    /// Reads `dir/embed.json`, or `None` when there is none.
    pub fn read_opt(dir: &Path) -> Result<Option<Self>, EmbedError> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).at("reading", &path)?;
        let m: EmbedManifest =
            serde_json::from_str(&text).map_err(|e| EmbedError::json(&path, e))?;
        if m.format != FORMAT {
            return Err(EmbedError::BadPart {
                path,
                reason: format!("format {:?}, expected {FORMAT:?}", m.format),
            });
        }
        for (i, p) in m.parts.iter().enumerate() {
            if p.index != i {
                return Err(EmbedError::BadPart {
                    path,
                    reason: format!("parts[{i}] has index {}, expected {i}", p.index),
                });
            }
        }
        Ok(Some(m))
    }

    /// Writes `dir/embed.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<(), EmbedError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| EmbedError::json(dir, e))?;
        text.push('\n');
        Ok(write_atomic(&dir.join(MANIFEST), text.as_bytes())?)
    }
}

/// One part read back.
#[derive(Debug, Clone, PartialEq)]
pub struct PartData {
    /// The ids, one per row.
    pub ids: Vec<String>,
    /// `[n, D]` embeddings.
    pub embeds: NpyArray,
    /// `[n, P, F]` features, when the directory has them.
    pub features: Option<NpyArray>,
}

/// The ids of part `index` in `dir`.
pub fn read_ids(dir: &Path, index: usize) -> Result<Vec<String>, EmbedError> {
    let (_, ids_path, _) = part_paths(dir, index);
    let text = std::fs::read_to_string(&ids_path).at("reading", &ids_path)?;
    Ok(text.lines().map(str::to_string).collect())
}

/// Reads part `entry` of the directory `dir` described by `m`, checking its shapes.
pub fn read_part(dir: &Path, m: &EmbedManifest, entry: &PartEntry) -> Result<PartData, EmbedError> {
    let (npy_path, ids_path, feat_path) = part_paths(dir, entry.index);
    let ids = read_ids(dir, entry.index)?;
    let embeds = npy::read(&npy_path)?;
    let bad = |path: &Path, reason: String| EmbedError::BadPart {
        path: path.to_path_buf(),
        reason,
    };
    if ids.len() != entry.rows {
        return Err(bad(
            &ids_path,
            format!("{} ids, embed.json says {} rows", ids.len(), entry.rows),
        ));
    }
    if embeds.shape != [entry.rows, m.dim] {
        return Err(bad(
            &npy_path,
            format!(
                "shape {:?}, expected [{}, {}]",
                embeds.shape, entry.rows, m.dim
            ),
        ));
    }
    let features = if m.feature_rows > 0 {
        let f = npy::read(&feat_path)?;
        if f.shape != [entry.rows, m.feature_rows, m.feature_dim] {
            return Err(bad(
                &feat_path,
                format!(
                    "shape {:?}, expected [{}, {}, {}]",
                    f.shape, entry.rows, m.feature_rows, m.feature_dim
                ),
            ));
        }
        Some(f)
    } else {
        None
    };
    Ok(PartData {
        ids,
        embeds,
        features,
    })
}
