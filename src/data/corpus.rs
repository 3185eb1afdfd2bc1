//! The prepared corpus: `manifest.json` and a memory-mapped view of every cell.
//!
//! A corpus directory is the contract between `prepare` and everything that trains
//! (DESIGN.md §2). It holds one Megatron `.bin`/`.idx` pair per (concept, task) cell, a loss
//! mask beside each (`<prefix>.mask`, one byte per token, 1 = the token is trained on) and the
//! image features (`<prefix>.img`, little-endian f16, `documents × patches × dim`, row-major),
//! the same for each held-out benchmark, the k-means centroids (safetensors) and
//! `manifest.json` describing it all with a SHA-256 of every file.
//!
//! A manifest is checked when it is read as strictly as `prepare` checks its input: labels
//! are [safe](super::label), cells and benchmarks are unique, and every `prefix` stays inside
//! the corpus directory (relative, no `..`, no symlink leading out). The files
//! [`Corpus::verify`] checksums are found by the same resolution ([`resolve_prefix`] and
//! [`read_files`]) as the files [`Corpus::open`] maps, so a verified corpus is the corpus read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::label::check_label;
use super::megatron::{prefix_paths, DType, IndexedDataset, MegatronError};
use crate::fsutil::{IoContext, PathIoError};

/// Name of the manifest inside a corpus directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The `format` field of every manifest.
pub const MANIFEST_FORMAT: &str = "mixatlas-corpus";
/// Current manifest version; readers reject newer ones.
pub const MANIFEST_VERSION: u32 = 1;

/// What can go wrong opening or verifying a corpus.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// I/O on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A cell's Megatron files are invalid.
    #[error(transparent)]
    Megatron(#[from] MegatronError),
    /// `manifest.json` is not valid.
    #[error("{}: {problem}", path.display())]
    BadManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A side file (mask, image features) does not match its cell.
    #[error("{}: {problem}", path.display())]
    BadSideFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A file that readers open is not listed in the manifest, so it cannot be verified.
    #[error("{}: read as part of {dataset:?} but not listed in the manifest's `files`, so its checksum cannot be verified (re-run prepare, or remove the file)", path.display())]
    Unlisted {
        /// The file.
        path: PathBuf,
        /// The cell or benchmark it belongs to.
        dataset: String,
    },
    /// A file's content does not match the checksum recorded in the manifest.
    #[error("{}: checksum mismatch: manifest says sha256 {expected}, file has {actual} (corrupt or modified since prepare)", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Computed now.
        actual: String,
    },
}

/// Token ids with special meaning to the trainer and the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialTokens {
    /// Padding (never trained on).
    pub pad: u32,
    /// Beginning of sequence.
    pub bos: u32,
    /// End of sequence.
    pub eos: u32,
    /// Image placeholder: the projector's outputs replace these positions, one per patch.
    pub image: u32,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        Self {
            pad: 0,
            bos: 1,
            eos: 2,
            image: 3,
        }
    }
}

/// Shape and storage of the per-document image features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Patches per image (rows of the feature matrix).
    pub patches: usize,
    /// Feature dimension per patch.
    pub dim: usize,
    /// Element type on disk; always `"float16"` (little-endian) in version 1.
    pub dtype: String,
}

impl ImageSpec {
    /// Bytes of one document's features.
    pub fn bytes_per_doc(&self) -> usize {
        self.patches * self.dim * 2
    }
}

/// One file of a cell with its size and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the corpus directory.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// A dataset stored as Megatron files plus side files: a cell or a benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// `concept/task` for cells, the benchmark's name for benchmarks.
    pub name: String,
    /// Megatron prefix relative to the corpus directory (`cells/c03_ocr`).
    pub prefix: String,
    /// Number of documents.
    pub documents: u64,
    /// Number of tokens.
    pub tokens: u64,
    /// Number of tokens with loss mask 1.
    pub loss_tokens: u64,
    /// Every file of this dataset.
    pub files: Vec<FileEntry>,
}

/// A (concept, task) cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellEntry {
    /// Index into [`Axes::concepts`].
    pub concept: usize,
    /// Index into [`Axes::tasks`].
    pub task: usize,
    /// Storage and counts.
    #[serde(flatten)]
    pub data: DatasetEntry,
    /// The cell's mean CLIP embedding, written by `prepare` (absent in manifests written
    /// before it was added: Chameleon, which needs it, then asks to re-run `prepare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<CellEmbedding>,
}

/// The mean of a cell's documents' CLIP embeddings (the `clip` field of the raw samples, as
/// given: not renormalised), accumulated in f64 and stored as f32: the cell's domain
/// embedding for Chameleon (`baselines::chameleon`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellEmbedding {
    /// Documents averaged (the cell's documents).
    pub count: u64,
    /// The mean, [`ClusteringInfo::embedding_dim`] values.
    pub mean: Vec<f32>,
}

/// The two axes of the mixture space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axes {
    /// Concept labels (k-means clusters), e.g. `c00` … `c09`.
    pub concepts: Vec<String>,
    /// Task labels, e.g. `captioning`, `ocr`, `grounding`, `detection`, `vqa`.
    pub tasks: Vec<String>,
}

/// How the concept axis was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusteringInfo {
    /// Path of the centroids (safetensors, tensor `centroids`, f32 `[k, dim]`).
    pub centroids: String,
    /// CLIP embedding dimension.
    pub embedding_dim: usize,
    /// `euclidean` or `cosine`.
    pub metric: String,
    /// Sum of squared distances of the fitting sample to its centroids.
    pub inertia: f64,
    /// Number of documents fitted on.
    pub fit_sample: u64,
    /// Documents per cluster over the whole corpus.
    pub sizes: Vec<u64>,
    /// Adjusted Rand index against ground-truth concept labels, when the samples had them.
    pub adjusted_rand_index: Option<f64>,
    /// Purity against ground-truth concept labels, when the samples had them.
    pub purity: Option<f64>,
}

/// The tokenizer of a corpus prepared from a real-format source (docs/real-data.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerInfo {
    /// The directory of `tokenizer.json`, as given to `prepare`.
    pub path: String,
    /// Its vocabulary size, added tokens included (the model's `vocab_size` must be at least
    /// this; `train` checks).
    pub vocab_size: u32,
    /// Where the chat template came from.
    pub chat_template: String,
    /// The image placeholder token.
    pub image_token: String,
    /// Placeholder tokens per image.
    pub image_rows: usize,
}

/// `manifest.json`: everything a reader needs to know about a prepared corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// [`MANIFEST_VERSION`] at writing time.
    pub version: u32,
    /// Concept and task labels.
    pub axes: Axes,
    /// Vocabulary size (all token ids are below it).
    pub vocab_size: u32,
    /// Element type of every `.bin`.
    pub token_dtype: DType,
    /// Special token ids.
    pub special_tokens: SpecialTokens,
    /// Image feature shape, or `None` for text-only corpora.
    pub image: Option<ImageSpec>,
    /// Concept clustering details.
    pub clustering: ClusteringInfo,
    /// One entry per non-empty cell, concept-major.
    pub cells: Vec<CellEntry>,
    /// Held-out evaluation benchmarks.
    pub benchmarks: Vec<DatasetEntry>,
    /// Each benchmark's documents per cell (`concept/task` → count): its images assigned to
    /// the same k-means concepts as the training data, by their task. Written by `prepare`
    /// for benchmarks whose samples carry embeddings; the benchmarks' own mixture
    /// ([`Manifest::benchmark_weights`], the search's `--start benchmarks`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub benchmark_cells: BTreeMap<String, BTreeMap<String, u64>>,
    /// The Hugging Face tokenizer a real-format source was tokenised with (absent for raw
    /// samples and for manifests written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerInfo>,
    /// Token-id → string table relative to the corpus (`vocab.json`), if known.
    pub vocab: Option<String>,
    /// Free-form provenance (source paths, tool version, seed).
    pub source: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, CorpusError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).at("reading", &path)?;
        let bad = |problem: String| CorpusError::BadManifest {
            path: path.clone(),
            problem,
        };
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid manifest: {e}")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {MANIFEST_FORMAT:?}",
                m.format
            )));
        }
        if m.version > MANIFEST_VERSION {
            return Err(bad(format!(
                "version {} is newer than this mixatlas understands ({MANIFEST_VERSION})",
                m.version
            )));
        }
        m.check_names(&path)?;
        for e in m.datasets() {
            check_dataset_files(e, &path)?;
        }
        let other_paths = [
            ("vocab", m.vocab.as_deref()),
            (
                "clustering.centroids",
                Some(m.clustering.centroids.as_str()),
            ),
        ];
        for (field, p) in other_paths {
            if let Some(p) = p.filter(|p| !plain_relative(p)) {
                return Err(bad(format!(
                    "`{field}` is {p:?}, not inside the corpus directory; expected a relative \
                     path without '..'"
                )));
            }
        }
        // Readers sum these counts (natural weights, token shares): they must not overflow.
        let sums = m.cells.iter().try_fold((0u64, 0u64), |(d, t), c| {
            Some((
                d.checked_add(c.data.documents)?,
                t.checked_add(c.data.tokens)?,
            ))
        });
        if sums.is_none() {
            return Err(bad(
                "the cells' `documents` or `tokens` sum past 2^64 (corrupt counts)".into(),
            ));
        }
        for c in &m.cells {
            if c.concept >= m.axes.concepts.len() || c.task >= m.axes.tasks.len() {
                return Err(bad(format!(
                    "cell {:?} points at concept {} / task {} outside the axes",
                    c.data.name, c.concept, c.task
                )));
            }
            if let Some(e) = &c.embedding {
                if e.mean.len() != m.clustering.embedding_dim {
                    return Err(bad(format!(
                        "cell {:?}: `embedding.mean` has {} values, expected clustering.embedding_dim = {}",
                        c.data.name,
                        e.mean.len(),
                        m.clustering.embedding_dim
                    )));
                }
                if let Some(i) = e.mean.iter().position(|v| !v.is_finite()) {
                    return Err(bad(format!(
                        "cell {:?}: `embedding.mean`[{i}] is {}, expected a finite number",
                        c.data.name, e.mean[i]
                    )));
                }
            }
            let want = cell_name(&m.axes.concepts[c.concept], &m.axes.tasks[c.task]);
            if c.data.name != want {
                return Err(bad(format!(
                    "cell named {:?} but its indices say {want:?}",
                    c.data.name
                )));
            }
        }
        if let Some(img) = &m.image {
            if img.dtype != "float16" {
                return Err(bad(format!(
                    "image dtype {:?} unsupported, expected \"float16\"",
                    img.dtype
                )));
            }
        }
        Ok(m)
    }

    /// Checks the labels and the uniqueness of axes, cells and benchmarks, and that there is at
    /// least one cell.
    fn check_names(&self, path: &Path) -> Result<(), CorpusError> {
        let bad = |problem: String| CorpusError::BadManifest {
            path: path.to_path_buf(),
            problem,
        };
        if self.cells.is_empty() {
            return Err(bad(
                "the manifest lists no cells; expected at least one (prepare writes one per \
                 non-empty concept/task cell: re-run it on a non-empty input)"
                    .into(),
            ));
        }
        let axes = [
            ("axes.concepts", &self.axes.concepts),
            ("axes.tasks", &self.axes.tasks),
        ];
        for (field, labels) in axes {
            for l in labels {
                check_label(l).map_err(|e| bad(format!("`{field}`: {e}")))?;
            }
            if let Some(d) = first_repeat(labels.iter().map(String::as_str)) {
                return Err(bad(format!(
                    "`{field}` lists {d:?} twice; expected every label once"
                )));
            }
        }
        for b in &self.benchmarks {
            check_label(&b.name).map_err(|e| bad(format!("benchmark name {e}")))?;
        }
        if let Some(d) = first_repeat(self.cells.iter().map(|c| c.data.name.as_str())) {
            return Err(bad(format!(
                "cell {d:?} is listed twice in `cells`; expected every cell once"
            )));
        }
        if let Some(d) = first_repeat(self.benchmarks.iter().map(|b| b.name.as_str())) {
            return Err(bad(format!(
                "benchmark {d:?} is listed twice in `benchmarks`; expected every benchmark once"
            )));
        }
        Ok(())
    }

    /// Every dataset of the corpus: the cells, then the benchmarks.
    pub fn datasets(&self) -> impl Iterator<Item = &DatasetEntry> {
        self.cells
            .iter()
            .map(|c| &c.data)
            .chain(self.benchmarks.iter())
    }

    /// Index of the cell named `concept/task`, if present.
    pub fn cell_index(&self, name: &str) -> Option<usize> {
        self.cells.iter().position(|c| c.data.name == name)
    }

    /// Natural proportions: each cell's share of documents.
    pub fn natural_weights(&self) -> Vec<f64> {
        let total: u64 = self.cells.iter().map(|c| c.data.documents).sum();
        self.cells
            .iter()
            .map(|c| c.data.documents as f64 / total.max(1) as f64)
            .collect()
    }

    /// The held-out benchmarks' own mixture over the cells, in cell order: the mean over
    /// benchmarks (weighted by `weights` by name, equal weights when it is empty or names
    /// none of them) of each benchmark's share of documents per cell, counting only cells
    /// the corpus has. `None` without [`Manifest::benchmark_cells`] or when no benchmark
    /// document falls in a cell.
    pub fn benchmark_weights(&self, weights: &BTreeMap<String, f64>) -> Option<Vec<f64>> {
        let index: BTreeMap<&str, usize> = self
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.data.name.as_str(), i))
            .collect();
        let named = self
            .benchmark_cells
            .keys()
            .any(|b| weights.get(b).is_some_and(|&w| w > 0.0));
        let mut out = vec![0.0; self.cells.len()];
        for (bench, counts) in &self.benchmark_cells {
            let w = if named {
                weights.get(bench).copied().unwrap_or(0.0).max(0.0)
            } else {
                1.0
            };
            let inside: Vec<(usize, u64)> = counts
                .iter()
                .filter_map(|(cell, &n)| index.get(cell.as_str()).map(|&i| (i, n)))
                .collect();
            let total: u64 = inside.iter().map(|x| x.1).sum();
            if w == 0.0 || total == 0 {
                continue;
            }
            for (i, n) in inside {
                out[i] += w * n as f64 / total as f64;
            }
        }
        let sum: f64 = out.iter().sum();
        (sum > 0.0).then(|| out.iter().map(|x| x / sum).collect())
    }
}

/// The first name that occurs twice, if any.
fn first_repeat<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}

/// The file extensions of a dataset, in the order readers open them.
pub const DATASET_EXTENSIONS: [&str; 4] = [".bin", ".idx", ".mask", ".img"];

/// Checks a dataset entry's `prefix` (relative, only plain components: no `..`, `.`, root or
/// drive) and that each of its `files` is one of the prefix's files, listed once.
fn check_dataset_files(e: &DatasetEntry, manifest: &Path) -> Result<(), CorpusError> {
    let bad = |problem: String| CorpusError::BadManifest {
        path: manifest.to_path_buf(),
        problem,
    };
    if !plain_relative(&e.prefix) {
        return Err(bad(format!(
            "{:?}: prefix {:?} is not inside the corpus directory; expected a relative path \
             without '..' (such as \"cells/c00_ocr\")",
            e.name, e.prefix
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &e.files {
        let ours = DATASET_EXTENSIONS
            .iter()
            .any(|ext| f.path.strip_suffix(ext) == Some(e.prefix.as_str()));
        if !ours {
            return Err(bad(format!(
                "{:?}: file {:?} is not one of its prefix's files; expected {:?} + one of {}",
                e.name,
                f.path,
                e.prefix,
                DATASET_EXTENSIONS.join(" ")
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(bad(format!(
                "{:?}: file {:?} is listed twice",
                e.name, f.path
            )));
        }
    }
    Ok(())
}

/// Whether `p` is a non-empty relative path of plain components (no `..`, `.`, root, drive
/// or backslash): a path that stays inside the directory it is joined to.
fn plain_relative(p: &str) -> bool {
    use std::path::Component;
    !p.is_empty()
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The full path of a dataset's prefix inside the corpus at `root` (`canonical_root` is
/// `root` canonicalised): the manifest's `prefix` was checked to be a plain relative path
/// when the manifest was loaded; here every file of it that exists must also resolve, through
/// any symlinks, to a path inside the corpus directory.
pub fn resolve_prefix(
    root: &Path,
    canonical_root: &Path,
    e: &DatasetEntry,
) -> Result<PathBuf, CorpusError> {
    let full = root.join(&e.prefix);
    for ext in DATASET_EXTENSIONS {
        let p = side_path(&full, ext);
        if p.symlink_metadata().is_err() {
            continue;
        }
        // A dangling link fails to open later, naming the file.
        if let Ok(real) = p.canonicalize() {
            if !real.starts_with(canonical_root) {
                return Err(CorpusError::BadManifest {
                    path: root.join(MANIFEST_FILE),
                    problem: format!(
                        "{:?}: {} resolves to {}, outside the corpus directory {}; expected \
                         every file of a corpus inside it",
                        e.name,
                        p.display(),
                        real.display(),
                        canonical_root.display()
                    ),
                });
            }
        }
    }
    Ok(full)
}

/// The files of the dataset at `full` (a resolved prefix) that [`DocumentStore::open`]
/// reads, with their extensions: `.bin` and `.idx`, `.mask` when present, `.img` when the
/// corpus has image features.
pub fn read_files(full: &Path, image: bool) -> Vec<(&'static str, PathBuf)> {
    DATASET_EXTENSIONS
        .iter()
        .map(|&ext| (ext, side_path(full, ext)))
        .filter(|(ext, p)| match *ext {
            ".mask" => p.exists(),
            ".img" => image,
            _ => true,
        })
        .collect()
}

/// The canonical `concept/task` name of a cell.
pub fn cell_name(concept: &str, task: &str) -> String {
    format!("{concept}/{task}")
}

/// A memory-mapped dataset: Megatron tokens plus optional loss mask and image features.
#[derive(Debug)]
pub struct DocumentStore {
    /// The tokens.
    pub tokens: IndexedDataset,
    mask: Option<Mmap>,
    images: Option<Mmap>,
    image_bytes_per_doc: usize,
}

fn side_path(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// `<prefix>.mask`.
pub fn mask_path(prefix: &Path) -> PathBuf {
    side_path(prefix, ".mask")
}

/// `<prefix>.img`.
pub fn image_path(prefix: &Path) -> PathBuf {
    side_path(prefix, ".img")
}

fn map_optional(path: &Path) -> Result<Option<Mmap>, PathIoError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at("opening", path),
    };
    // SAFETY: read-only map of a file MixAtlas never modifies in place (memmap2 maps empty
    // files as empty slices).
    Ok(Some(unsafe { Mmap::map(&f) }.at("mapping", path)?))
}

impl DocumentStore {
    /// Opens `<prefix>.{bin,idx}` and, if present, `<prefix>.mask` and `<prefix>.img`,
    /// checking the side files' sizes against the token index.
    pub fn open(prefix: &Path, image: Option<&ImageSpec>) -> Result<Self, CorpusError> {
        let tokens = IndexedDataset::open(prefix)?;
        let mpath = mask_path(prefix);
        let mask = map_optional(&mpath)?;
        if let Some(m) = &mask {
            if m.len() as u64 != tokens.tokens() {
                return Err(CorpusError::BadSideFile {
                    path: mpath,
                    problem: format!(
                        "loss mask has {} bytes, expected one per token ({})",
                        m.len(),
                        tokens.tokens()
                    ),
                });
            }
        }
        let ipath = image_path(prefix);
        let images = match image {
            Some(spec) => {
                let m = map_optional(&ipath)?.ok_or_else(|| CorpusError::BadSideFile {
                    path: ipath.clone(),
                    problem: "missing image features (the manifest declares an image shape)".into(),
                })?;
                let want = tokens.documents() as u64 * spec.bytes_per_doc() as u64;
                if m.len() as u64 != want {
                    return Err(CorpusError::BadSideFile {
                        path: ipath,
                        problem: format!(
                            "image features are {} bytes, expected {} documents × {} patches × {} dims × 2 bytes = {want}",
                            m.len(),
                            tokens.documents(),
                            spec.patches,
                            spec.dim
                        ),
                    });
                }
                Some(m)
            }
            None => None,
        };
        Ok(Self {
            tokens,
            mask,
            images,
            image_bytes_per_doc: image.map_or(0, |s| s.bytes_per_doc()),
        })
    }

    /// Number of documents.
    #[inline]
    pub fn documents(&self) -> usize {
        self.tokens.documents()
    }

    /// Document `d`'s loss mask (one byte per token), or `None` when the dataset has no mask
    /// (then every token is trained on).
    #[inline]
    pub fn mask(&self, d: usize) -> Option<&[u8]> {
        let m = self.mask.as_ref()?;
        let start = self.tokens.document_offset(d) as usize;
        Some(&m[start..start + self.tokens.document_len(d)])
    }

    /// Document `d`'s image features as raw little-endian f16 bytes (`patches × dim`).
    #[inline]
    pub fn image_bytes(&self, d: usize) -> Option<&[u8]> {
        let m = self.images.as_ref()?;
        let s = d * self.image_bytes_per_doc;
        Some(&m[s..s + self.image_bytes_per_doc])
    }

    /// Document `d`'s image features converted to f32.
    pub fn image_f32(&self, d: usize) -> Option<Vec<f32>> {
        self.image_bytes(d).map(|b| {
            b.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        })
    }
}

/// An opened corpus: its manifest, cells and benchmarks, all memory-mapped.
#[derive(Debug)]
pub struct Corpus {
    /// The corpus directory.
    pub root: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// One store per manifest cell, in manifest order.
    pub cells: Vec<DocumentStore>,
    /// One store per benchmark, in manifest order.
    pub benchmarks: Vec<DocumentStore>,
}

impl Corpus {
    /// Opens `dir`, validating the manifest and every cell's files (sizes, headers; not
    /// checksums: see [`Corpus::verify`]).
    pub fn open(dir: &Path) -> Result<Self, CorpusError> {
        let manifest = Manifest::load(dir)?;
        let canonical_root = dir.canonicalize().at("resolving", dir)?;
        let open = |e: &DatasetEntry| -> Result<DocumentStore, CorpusError> {
            let prefix = resolve_prefix(dir, &canonical_root, e)?;
            let store = DocumentStore::open(&prefix, manifest.image.as_ref())?;
            if store.documents() as u64 != e.documents || store.tokens.tokens() != e.tokens {
                return Err(CorpusError::BadManifest {
                    path: dir.join(MANIFEST_FILE),
                    problem: format!(
                        "{:?} lists {} documents / {} tokens but {} has {} / {}",
                        e.name,
                        e.documents,
                        e.tokens,
                        e.prefix,
                        store.documents(),
                        store.tokens.tokens()
                    ),
                });
            }
            if store.tokens.dtype() != manifest.token_dtype {
                return Err(CorpusError::BadManifest {
                    path: dir.join(MANIFEST_FILE),
                    problem: format!(
                        "token dtype is {} but {} stores {}",
                        manifest.token_dtype,
                        e.prefix,
                        store.tokens.dtype()
                    ),
                });
            }
            Ok(store)
        };
        let cells = manifest
            .cells
            .iter()
            .map(|c| open(&c.data))
            .collect::<Result<Vec<_>, _>>()?;
        let benchmarks = manifest
            .benchmarks
            .iter()
            .map(open)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            root: dir.to_path_buf(),
            manifest,
            cells,
            benchmarks,
        })
    }

    /// Recomputes the SHA-256 of every file listed in the manifest and compares; calls
    /// `progress(bytes)` as it goes. Returns the number of files checked.
    ///
    /// The files are found as [`Corpus::open`] finds them ([`resolve_prefix`], then the
    /// prefix's files; the manifest's `files[].path` must be those, see [`Manifest::load`]),
    /// and a file that is read but not listed is an error: what is verified is what is read.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<usize, CorpusError> {
        let canonical_root = self.root.canonicalize().at("resolving", &self.root)?;
        let image = self.manifest.image.is_some();
        let mut n = 0;
        for e in self.manifest.datasets() {
            let full = resolve_prefix(&self.root, &canonical_root, e)?;
            let listed = |ext: &str| {
                e.files
                    .iter()
                    .find(|f| f.path.strip_suffix(ext) == Some(e.prefix.as_str()))
            };
            for (ext, path) in read_files(&full, image) {
                if listed(ext).is_none() {
                    return Err(CorpusError::Unlisted {
                        path,
                        dataset: e.name.clone(),
                    });
                }
            }
            for ext in DATASET_EXTENSIONS {
                let Some(f) = listed(ext) else { continue };
                let path = side_path(&full, ext);
                let actual = sha256_file(&path, &mut progress)?;
                if actual != f.sha256 {
                    return Err(CorpusError::Checksum {
                        path,
                        expected: f.sha256.clone(),
                        actual,
                    });
                }
                n += 1;
            }
        }
        Ok(n)
    }

    /// Total bytes covered by [`Corpus::verify`].
    pub fn checksummed_bytes(&self) -> u64 {
        self.manifest
            .datasets()
            .flat_map(|e| e.files.iter())
            .map(|f| f.bytes)
            .sum()
    }
}

/// Lower-case hex SHA-256 of a file, streaming; `progress` receives byte counts.
pub fn sha256_file(path: &Path, mut progress: impl FnMut(u64)) -> Result<String, PathIoError> {
    let mut f = File::open(path).at("opening", path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at("reading", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress(n as u64);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Describes the files of the dataset at `dir/prefix` for the manifest (sizes, checksums).
pub fn describe_files(dir: &Path, prefix: &str) -> Result<Vec<FileEntry>, PathIoError> {
    let full = dir.join(prefix);
    let (bin, idx) = prefix_paths(&full);
    let mut out = Vec::new();
    for p in [bin, idx, mask_path(&full), image_path(&full)] {
        if !p.exists() {
            continue;
        }
        let bytes = std::fs::metadata(&p).at("reading metadata of", &p)?.len();
        let sha256 = sha256_file(&p, |_| {})?;
        let rel = p
            .strip_prefix(dir)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        out.push(FileEntry {
            path: rel,
            bytes,
            sha256,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p, |_| {}).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Fuzz finding (issue 18): cell counts whose sum overflows u64 are a typed error naming
    /// the manifest, not a wrapped total (or an overflow panic) in the readers that sum them.
    #[test]
    fn counts_summing_past_u64_are_rejected() {
        for text in [
            include_str!("../../tests/fuzz/regressions/manifest/documents_sum_overflow.json"),
            include_str!("../../tests/fuzz/regressions/manifest/tokens_sum_overflow.json"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
            let err = Manifest::load(dir.path()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CorpusError::BadManifest { .. }), "{msg}");
            assert!(msg.contains("sum past 2^64"), "{msg}");
            assert!(msg.contains(MANIFEST_FILE), "{msg}");
        }
    }
}
