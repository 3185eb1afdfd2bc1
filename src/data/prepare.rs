//! `mixatlas prepare`: raw JSONL samples → a prepared corpus of (concept, task) cells.
//!
//! Two streaming passes keep memory bounded by the k-means fitting sample, whatever the
//! corpus size:
//!
//! 1. **Parse and spill.** Every valid sample is parsed (in parallel batches) and appended to
//!    spill files inside the staging directory (tokens as a Megatron dataset, loss masks,
//!    f16 image features, f32 embeddings, task and ground-truth labels); a reservoir sample of
//!    embeddings is kept for k-means.
//! 2. **Cluster and write cells.** k-means is fitted on the reservoir (or centroids are loaded
//!    with `--centroids`), the spilled embeddings are assigned in chunks, and each document is
//!    appended to its (concept, task) cell's `.bin`/`.idx`/`.mask`/`.img`; each cell's mean
//!    CLIP embedding (summed in f64 as the documents pass) goes into the manifest.
//!
//! Real-format sources ([`super::sources`]: LLaVA JSON/JSONL, WebDataset shards) are read
//! record by record, tokenised with a Hugging Face tokenizer and given precomputed embeddings,
//! then enter the same pipeline as raw samples.
//!
//! Held-out benchmarks (`benchmarks/*.jsonl` beside a directory input; for a real-format
//! source, `benchmarks/*.json|jsonl|tar` of the same kind, named by file stem) are written the
//! same way. The
//! whole corpus is built in a staging directory and renamed into place only when complete,
//! with `manifest.json` (counts and SHA-256 of every file) written last.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cluster_metrics;
use super::corpus::{
    cell_name, describe_files, image_path, mask_path, Axes, CellEmbedding, CellEntry,
    ClusteringInfo, CorpusError, DatasetEntry, ImageSpec, Manifest, SpecialTokens, TokenizerInfo,
    MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
};
use super::kmeans::{KMeans, KMeansConfig, KMeansError, Metric};
use super::label::{check_label, LabelError};
use super::megatron::{DType, DatasetWriter, IndexedDataset, MegatronError};
use super::raw::{self, ConceptLabel, OnError, RawError, RawSample, ReadRules, ReadStats, Shapes};
use super::sources::chat::DEFAULT_IMAGE_TOKEN;
use super::sources::embeddings::EmbeddingError;
use super::sources::read::{self as real, RealSource, SetupError, SourceOptions};
use super::sources::record::{self as source, SourceError, SourceKind};
use super::synth::{SynthMeta, TASKS};
use crate::fsutil::{write_atomic, IoContext, PathIoError, StagingDir};
use crate::rng::SplitMix64;

/// Configuration of `prepare` (TOML `[prepare]` or CLI flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrepareConfig {
    /// Number of concepts (k-means clusters).
    pub k: usize,
    /// Distance used by k-means (`cosine` suits CLIP embeddings).
    pub metric: Metric,
    /// k-means++ restarts; the best inertia wins.
    pub restarts: usize,
    /// Maximum Lloyd iterations per restart.
    pub max_iter: usize,
    /// Embeddings sampled (reservoir) to fit k-means on.
    pub fit_sample: usize,
    /// Seed for the reservoir and k-means.
    pub seed: u64,
    /// What to do with malformed lines.
    pub on_error: OnError,
    /// Vocabulary size; default: the tokenizer's, else from `synth.json` beside the input,
    /// else the largest token id + 1.
    pub vocab_size: Option<u32>,
    /// Kind of input (default: a `.tar` file → webdataset, `.json` → llava, `.jsonl` → llava
    /// when a tokenizer is given, else raw; a directory → raw without a tokenizer, with one
    /// webdataset when it holds `.tar` files, else llava).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceKind>,
    /// The directory LLaVA `image` paths are relative to (recorded; `prepare` reads
    /// precomputed embeddings, not the images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_root: Option<PathBuf>,
    /// Directory of the Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Task labels by source file or dataset name (TOML or JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_map: Option<PathBuf>,
    /// Precomputed CLIP embeddings (`.npy`, `.safetensors` or `mixatlas embed`'s directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<PathBuf>,
    /// The image placeholder token (default `<|image_pad|>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_token: Option<String>,
    /// Placeholder tokens per image (default: the features' rows, else 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_rows: Option<usize>,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        Self {
            k: 10,
            metric: Metric::Cosine,
            restarts: 3,
            max_iter: 100,
            fit_sample: 100_000,
            seed: 0,
            on_error: OnError::Fail,
            vocab_size: None,
            source: None,
            image_root: None,
            tokenizer: None,
            task_map: None,
            embeddings: None,
            image_token: None,
            image_rows: None,
        }
    }
}

/// Everything that can stop `prepare`.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// I/O on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// Bad raw input.
    #[error(transparent)]
    Raw(#[from] RawError),
    /// Bad real-format input.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The tokenizer, embeddings or task map of a real-format source.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The embeddings do not fit the records.
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
    /// A real-format source lacks an option it needs.
    #[error("--source {kind}: {option} is required ({why})")]
    NeedsOption {
        /// The source kind.
        kind: &'static str,
        /// The missing option.
        option: &'static str,
        /// What it is for.
        why: &'static str,
    },
    /// An option of real-format sources was given for raw JSONL.
    #[error("{option} applies to LLaVA and WebDataset sources, but the input is read as raw MixAtlas JSONL (pass --source llava or webdataset)")]
    NotForRaw {
        /// The option.
        option: &'static str,
    },
    /// `--vocab-size` is smaller than the tokenizer's vocabulary.
    #[error("--vocab-size {flag} is smaller than the tokenizer's vocabulary ({tokenizer} tokens)")]
    TokenizerVocab {
        /// The flag.
        flag: u32,
        /// The tokenizer's size.
        tokenizer: u32,
    },
    /// Writing or re-reading Megatron files failed.
    #[error(transparent)]
    Megatron(#[from] MegatronError),
    /// Corpus files failed validation.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// Clustering failed.
    #[error("k-means: {0}")]
    KMeans(#[from] KMeansError),
    /// `k` is 0.
    #[error("prepare: `k` must be at least 1")]
    ZeroK,
    /// `synth.json` beside the input is not valid synth metadata. The parse error is the
    /// source only (the command line prints it after this message, as before the error was
    /// typed).
    #[error("{}: invalid synth metadata", path.display())]
    SynthMeta {
        /// The `synth.json` file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// No line of the input is a valid sample.
    #[error("{}: no valid samples (skipped {skipped} malformed lines)", input.display())]
    NoSamples {
        /// The input given.
        input: PathBuf,
        /// Malformed lines skipped.
        skipped: u64,
    },
    /// A token id is not below the vocabulary size.
    #[error(
        "token id {max_token} is not below the vocabulary size {vocab_size} (set --vocab-size)"
    )]
    Vocabulary {
        /// The largest token id of the input.
        max_token: u32,
        /// The vocabulary size in force.
        vocab_size: u32,
    },
    /// Loaded centroids do not match the embeddings' dimension.
    #[error("{}: centroids have dimension {centroids}, the samples' `clip` has {clip}", path.display())]
    CentroidDim {
        /// The centroids file.
        path: PathBuf,
        /// Their dimension.
        centroids: usize,
        /// The samples' embedding dimension.
        clip: usize,
    },
    /// Fewer valid samples than concepts to fit.
    #[error("{samples} valid samples, fewer than k = {k} concepts")]
    TooFewSamples {
        /// Valid samples (in the fitting sample).
        samples: usize,
        /// Concepts asked for.
        k: usize,
    },
    /// A benchmark's file name is not a safe label (the name becomes a file name and a
    /// benchmark key everywhere).
    #[error("{}: benchmark name (the file name) {label}", path.display())]
    BenchmarkName {
        /// The benchmark file.
        path: PathBuf,
        /// The name and the rule (shown in the message, so not a `source`).
        label: LabelError,
    },
}

/// Progress events for a front end to display.
pub trait Progress: Sync {
    /// A new stage begins with `total` units (bytes or documents; 0 = unknown).
    fn stage(&self, name: &str, total: u64);
    /// `done` units of the current stage are complete.
    fn advance(&self, done: u64);
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// What `prepare` produced.
#[derive(Debug, Clone, Serialize)]
pub struct PrepareReport {
    /// The corpus directory.
    pub out: PathBuf,
    /// Documents written to cells.
    pub documents: u64,
    /// Tokens written to cells.
    pub tokens: u64,
    /// Malformed lines skipped (`--on-error skip`).
    pub skipped: u64,
    /// The first few skipped-line messages.
    pub first_errors: Vec<String>,
    /// Non-empty cells.
    pub cells: usize,
    /// `concept/task` cells with no documents (left out of the manifest).
    pub empty_cells: Vec<String>,
    /// Clustering summary (as in the manifest).
    pub clustering: ClusteringInfo,
    /// Benchmarks written, with document counts.
    pub benchmarks: Vec<(String, u64)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A buffered output file that remembers its path for error messages.
struct OutFile {
    path: PathBuf,
    w: BufWriter<File>,
}

impl OutFile {
    fn create(path: PathBuf) -> Result<Self, PathIoError> {
        let f = File::create(&path).at("creating", &path)?;
        Ok(Self {
            w: BufWriter::with_capacity(256 << 10, f),
            path,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), PathIoError> {
        self.w.write_all(bytes).at("writing", &self.path)
    }

    /// Flushes and fsyncs.
    fn finish(self) -> Result<(), PathIoError> {
        let f = self
            .w
            .into_inner()
            .map_err(|e| e.into_error())
            .at("flushing", &self.path)?;
        f.sync_all().at("syncing", &self.path)
    }
}

/// Spill files of pass 1, all inside the staging directory.
struct Spill {
    tokens: DatasetWriter,
    mask: OutFile,
    image: OutFile,
    clip: OutFile,
    labels: OutFile,
    /// Encoding buffer (f16 image features, f32 embeddings).
    scratch: Vec<u8>,
}

fn push_f16(out: &mut Vec<u8>, xs: &[f32]) {
    for &x in xs {
        out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes());
    }
}

/// Writers of one dataset (a cell or a benchmark).
struct DatasetFiles {
    prefix: PathBuf,
    tokens: DatasetWriter,
    mask: OutFile,
    image: Option<OutFile>,
    loss_tokens: u64,
}

impl DatasetFiles {
    fn create(prefix: PathBuf, dtype: DType, with_image: bool) -> Result<Self, PrepareError> {
        if let Some(p) = prefix.parent() {
            fs::create_dir_all(p).at("creating", p)?;
        }
        Ok(Self {
            tokens: DatasetWriter::create(&prefix, dtype)?,
            mask: OutFile::create(mask_path(&prefix))?,
            image: if with_image {
                Some(OutFile::create(image_path(&prefix))?)
            } else {
                None
            },
            loss_tokens: 0,
            prefix,
        })
    }

    fn add(
        &mut self,
        tokens: &[u32],
        mask: &[u8],
        image_f16: Option<&[u8]>,
    ) -> Result<(), PrepareError> {
        self.tokens.add_document(tokens)?;
        self.mask.write(mask)?;
        self.loss_tokens += mask.iter().map(|&m| m as u64).sum::<u64>();
        if let (Some(w), Some(b)) = (self.image.as_mut(), image_f16) {
            w.write(b)?;
        }
        Ok(())
    }

    /// Finishes the files and describes them for the manifest; removes them when empty.
    fn finish(self, root: &Path, name: String) -> Result<Option<DatasetEntry>, PrepareError> {
        let written = self.tokens.finish()?;
        self.mask.finish()?;
        if let Some(w) = self.image {
            w.finish()?;
        }
        let rel = self
            .prefix
            .strip_prefix(root)
            .unwrap_or(&self.prefix)
            .to_string_lossy()
            .into_owned();
        if written.documents == 0 {
            for p in describe_files(root, &rel)? {
                let full = root.join(&p.path);
                fs::remove_file(&full).at("removing", &full)?;
            }
            return Ok(None);
        }
        Ok(Some(DatasetEntry {
            name,
            prefix: rel,
            documents: written.documents,
            tokens: written.tokens,
            loss_tokens: self.loss_tokens,
            files: Vec::new(),
        }))
    }
}

/// A benchmark's name: its file's stem.
fn benchmark_name(f: &Path) -> String {
    f.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Canonical task order: the five known tasks first (in [`TASKS`] order), then others by name.
fn order_tasks(seen: &HashMap<String, u32>) -> Vec<String> {
    let mut known: Vec<String> = TASKS
        .iter()
        .filter(|t| seen.contains_key(**t))
        .map(|t| t.to_string())
        .collect();
    let mut other: Vec<String> = seen
        .keys()
        .filter(|t| !TASKS.contains(&t.as_str()))
        .cloned()
        .collect();
    other.sort();
    known.extend(other);
    known
}

/// The kind of input `cfg` asks for, or the one `input` implies (see
/// [`PrepareConfig::source`]): a file by its extension (`.jsonl` as LLaVA only with a
/// tokenizer); a directory is raw JSONL unless a tokenizer is given (raw directories hold
/// `synth.json` and `vocab.json` beside their shards), then WebDataset when it holds `.tar`
/// files, else LLaVA.
fn source_kind(input: &Path, cfg: &PrepareConfig) -> SourceKind {
    if let Some(k) = cfg.source {
        return k;
    }
    let tokenizer = cfg.tokenizer.is_some();
    if input.is_dir() {
        let has_tar = fs::read_dir(input).is_ok_and(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "tar"))
        });
        return match (tokenizer, has_tar) {
            (false, _) => SourceKind::Raw,
            (true, true) => SourceKind::Webdataset,
            (true, false) => SourceKind::Llava,
        };
    }
    match input.extension().and_then(|e| e.to_str()) {
        Some("tar") => SourceKind::Webdataset,
        Some("json") => SourceKind::Llava,
        Some("jsonl") if tokenizer => SourceKind::Llava,
        _ => SourceKind::Raw,
    }
}

/// The tokenizer, embeddings and task map of a real-format source; `None` for raw JSONL.
fn open_real(kind: SourceKind, cfg: &PrepareConfig) -> Result<Option<RealSource>, PrepareError> {
    let name = match kind {
        SourceKind::Raw => {
            let given = [
                ("--tokenizer", cfg.tokenizer.is_some()),
                ("--embeddings", cfg.embeddings.is_some()),
                ("--task-map", cfg.task_map.is_some()),
            ];
            return match given.iter().find(|(_, set)| *set) {
                Some((option, _)) => Err(PrepareError::NotForRaw { option }),
                None => Ok(None),
            };
        }
        SourceKind::Llava => "llava",
        SourceKind::Webdataset => "webdataset",
    };
    let tokenizer = cfg.tokenizer.as_deref().ok_or(PrepareError::NeedsOption {
        kind: name,
        option: "--tokenizer DIR",
        why: "token ids come from a Hugging Face tokenizer.json",
    })?;
    let embeddings = cfg.embeddings.as_deref().ok_or(PrepareError::NeedsOption {
        kind: name,
        option: "--embeddings PATH",
        why: "concepts are clusters of CLIP image embeddings; compute them with `mixatlas embed`",
    })?;
    let opts = SourceOptions {
        kind,
        tokenizer,
        image_token: cfg.image_token.as_deref(),
        task_map: cfg.task_map.as_deref(),
        embeddings,
        image_rows: cfg.image_rows,
    };
    Ok(Some(RealSource::open(&opts)?))
}

/// Runs `prepare`: reads `input` (a `.jsonl` file or a directory of them), writes the corpus
/// to `out`. With `centroids`, assigns to existing clusters instead of fitting.
///
/// The stages, in order (each a method of the private `Prepare`): open the staging directory,
/// read and spill the samples (pass 1), fix the vocabulary, fit or load the centroids, assign
/// and write the cells (pass 2), write the benchmarks, checksum, write the manifest, commit.
pub fn prepare(
    input: &Path,
    out: &Path,
    cfg: &PrepareConfig,
    centroids: Option<&Path>,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<PrepareReport, PrepareError> {
    let started = Instant::now();
    let job = Prepare::start(
        Request {
            input,
            out,
            cfg,
            centroids,
            progress,
        },
        overwrite,
    )?;
    let mut read = job.read_samples()?;
    let vocab = job.vocabulary(&read)?;
    let clusters = job.clusters(&mut read)?;
    let mut cells = job.write_cells(&read, &clusters, &vocab)?;
    let mut benchmarks =
        job.write_benchmarks(&read.shapes, &vocab, &clusters.model, &cells.axes)?;
    job.checksum(&mut cells.entries, &mut benchmarks.entries)?;
    let report = job.write_manifest(read, vocab, clusters, cells, benchmarks)?;
    job.stage.commit()?;
    Ok(PrepareReport {
        seconds: started.elapsed().as_secs_f64(),
        ..report
    })
}

/// The written benchmarks and each one's documents per cell.
#[derive(Default)]
struct Benchmarks {
    entries: Vec<DatasetEntry>,
    cells: BTreeMap<String, BTreeMap<String, u64>>,
}

/// What a benchmark's documents are: their embeddings (row-major) and tasks.
#[derive(Default)]
struct BenchmarkSeen {
    clips: Vec<f32>,
    tasks: Vec<String>,
}

impl BenchmarkSeen {
    /// Documents per `concept/task` cell: the embeddings assigned to `model`'s concepts, the
    /// tasks by name; documents of a task the training data does not have are left out, and
    /// so is everything when the embeddings do not match the model's dimension.
    fn cells(&self, model: &KMeans, axes: &Axes) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Ok(assignment) = model.try_assign(&self.clips) else {
            return out;
        };
        if assignment.labels.len() != self.tasks.len() {
            return out;
        }
        for (&c, task) in assignment.labels.iter().zip(&self.tasks) {
            if axes.tasks.contains(task) {
                let name = format!("{}/{task}", axes.concepts[c as usize]);
                *out.entry(name).or_insert(0) += 1;
            }
        }
        out
    }
}

/// The arguments of [`prepare`] that every stage reads.
struct Request<'a> {
    input: &'a Path,
    out: &'a Path,
    cfg: &'a PrepareConfig,
    centroids: Option<&'a Path>,
    progress: &'a dyn Progress,
}

/// A `prepare` run: the request, its input files and the staging directory it builds in.
struct Prepare<'a> {
    req: Request<'a>,
    /// The `.jsonl` files of the input.
    files: Vec<PathBuf>,
    /// The directory holding the input (where `synth.json`, `vocab.json` and `benchmarks/`
    /// are looked for).
    input_dir: PathBuf,
    /// `synth.json` beside the input, if present.
    synth_meta: Option<SynthMeta>,
    stage: StagingDir,
    /// The staging directory's path.
    root: PathBuf,
    /// Pass 1's spill files, inside `root`.
    spill_dir: PathBuf,
    /// The tokenizer, embeddings and task map of a real-format source (`None` for raw).
    real: Option<RealSource>,
}

/// What pass 1 learnt about the samples, besides the spill files.
struct Read {
    stats: ReadStats,
    shapes: Shapes,
    labels: Labels,
    reservoir: Reservoir,
}

/// Task and ground-truth ids, in order of first appearance, and the largest token id.
struct Labels {
    tasks: HashMap<String, u32>,
    truth: HashMap<ConceptLabel, u32>,
    /// Whether every sample has a ground-truth concept.
    has_truth: bool,
    max_token: u32,
}

impl Labels {
    /// Notes one sample; returns its task id and ground-truth id (`u32::MAX` for none).
    fn note(&mut self, s: &RawSample) -> (u32, u32) {
        let task_count = self.tasks.len() as u32;
        let t = *self.tasks.entry(s.task.clone()).or_insert(task_count);
        let label = match &s.concept {
            Some(c) => {
                let n = self.truth.len() as u32;
                *self.truth.entry(c.clone()).or_insert(n)
            }
            None => {
                self.has_truth = false;
                u32::MAX
            }
        };
        self.max_token = self
            .max_token
            .max(s.tokens.iter().copied().max().unwrap_or(0));
        (t, label)
    }
}

/// Algorithm R reservoir sample of embeddings for the k-means fit.
struct Reservoir {
    /// Whether to sample at all (not when centroids are loaded).
    on: bool,
    capacity: usize,
    /// `n × dim` embeddings.
    data: Vec<f32>,
    n: usize,
    /// Samples offered so far.
    seen: u64,
    rng: SplitMix64,
}

impl Reservoir {
    fn offer(&mut self, clip: &[f32]) {
        if self.on {
            let d = clip.len();
            if self.n < self.capacity {
                self.data.extend_from_slice(clip);
                self.n += 1;
            } else {
                let j = self.rng.below(self.seen + 1) as usize;
                if j < self.capacity {
                    self.data[j * d..(j + 1) * d].copy_from_slice(clip);
                }
            }
        }
        self.seen += 1;
    }
}

impl Spill {
    fn create(dir: &Path) -> Result<Self, PrepareError> {
        Ok(Self {
            tokens: DatasetWriter::create(&dir.join("tokens"), DType::I32)?,
            mask: OutFile::create(dir.join("mask"))?,
            image: OutFile::create(dir.join("image"))?,
            clip: OutFile::create(dir.join("clip"))?,
            labels: OutFile::create(dir.join("labels"))?,
            scratch: Vec::new(),
        })
    }

    /// Appends one sample with its task and ground-truth ids.
    fn add(&mut self, s: &RawSample, task: u32, label: u32) -> Result<(), PrepareError> {
        self.tokens.add_document(&s.tokens)?;
        self.mask.write(&s.loss_mask)?;
        if let Some((img, _, _)) = &s.image {
            self.scratch.clear();
            push_f16(&mut self.scratch, img);
            self.image.write(&self.scratch)?;
        }
        self.scratch.clear();
        self.scratch
            .extend(s.clip.iter().flat_map(|x| x.to_le_bytes()));
        self.clip.write(&self.scratch)?;
        let mut lb = [0u8; 8];
        lb[..4].copy_from_slice(&task.to_le_bytes());
        lb[4..].copy_from_slice(&label.to_le_bytes());
        self.labels.write(&lb)?;
        Ok(())
    }

    fn finish(self) -> Result<(), PrepareError> {
        self.tokens.finish()?;
        for f in [self.mask, self.image, self.clip, self.labels] {
            f.finish()?;
        }
        Ok(())
    }
}

/// The spill files of pass 1, mapped for pass 2.
struct SpillReader {
    tokens: IndexedDataset,
    mask: Mmap,
    image: Mmap,
    clip: Mmap,
    labels: Mmap,
}

impl SpillReader {
    fn open(dir: &Path) -> Result<Self, PrepareError> {
        let tokens = IndexedDataset::open(&dir.join("tokens"))?;
        let map = |name: &str| -> Result<Mmap, PathIoError> {
            let p = dir.join(name);
            let f = File::open(&p).at("opening", &p)?;
            // SAFETY: private spill file written and closed above, never modified again.
            unsafe { Mmap::map(&f) }.at("mapping", &p)
        };
        let (mask, image, clip, labels) =
            (map("mask")?, map("image")?, map("clip")?, map("labels")?);
        Ok(Self {
            tokens,
            mask,
            image,
            clip,
            labels,
        })
    }

    /// The embeddings of documents `start..end` (`dim` each).
    fn embeddings(&self, start: usize, end: usize, dim: usize) -> Vec<f32> {
        self.clip[start * dim * 4..end * dim * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// Document `d`'s task id and ground-truth id.
    fn labels(&self, d: usize) -> (u32, u32) {
        let lb = &self.labels[d * 8..d * 8 + 8];
        (
            u32::from_le_bytes(lb[..4].try_into().unwrap()),
            u32::from_le_bytes(lb[4..].try_into().unwrap()),
        )
    }
}

/// The vocabulary of the corpus.
struct Vocab {
    size: u32,
    dtype: DType,
    special_tokens: SpecialTokens,
}

/// The concept model and how it was obtained.
struct Clusters {
    model: KMeans,
    /// Inertia of the fit (NaN for loaded centroids).
    inertia: f64,
    /// Embeddings the fit used (0 for loaded centroids).
    fit_sample: u64,
}

/// Where the centroids are saved in the corpus.
const CENTROIDS_FILE: &str = "centroids.safetensors";

/// The outcome of pass 2.
struct Cells {
    axes: Axes,
    image_spec: Option<ImageSpec>,
    entries: Vec<CellEntry>,
    empty: Vec<String>,
    /// Documents per concept.
    sizes: Vec<u64>,
    /// Ground truth × concept counts (`truth.len().max(1) × k`).
    contingency: Vec<u64>,
}

/// The cells being written in pass 2: one writer per (concept, task), opened on first use.
struct CellWriters<'a> {
    root: &'a Path,
    axes: &'a Axes,
    dtype: DType,
    with_image: bool,
    writers: Vec<Option<DatasetFiles>>,
    /// Per-cell sums of the documents' CLIP embeddings (`cells × dim`, f64) for the means.
    clip_sums: Vec<f64>,
    /// CLIP embedding dimension.
    clip_dim: usize,
}

impl CellWriters<'_> {
    fn add(
        &mut self,
        (c, t): (usize, usize),
        tokens: &[u32],
        mask: &[u8],
        image_f16: Option<&[u8]>,
    ) -> Result<(), PrepareError> {
        let slot = &mut self.writers[c * self.axes.tasks.len() + t];
        if slot.is_none() {
            let prefix = self
                .root
                .join("cells")
                .join(format!("{}_{}", self.axes.concepts[c], self.axes.tasks[t]));
            *slot = Some(DatasetFiles::create(prefix, self.dtype, self.with_image)?);
        }
        slot.as_mut().unwrap().add(tokens, mask, image_f16)
    }

    /// Finishes every cell: the non-empty ones' entries, and the names of the empty ones.
    fn finish(self) -> Result<(Vec<CellEntry>, Vec<String>), PrepareError> {
        let n_tasks = self.axes.tasks.len();
        let mut cells = Vec::new();
        let mut empty_cells = Vec::new();
        for (i, w) in self.writers.into_iter().enumerate() {
            let (c, t) = (i / n_tasks, i % n_tasks);
            let name = cell_name(&self.axes.concepts[c], &self.axes.tasks[t]);
            match w {
                Some(w) => {
                    if let Some(data) = w.finish(self.root, name.clone())? {
                        let d = self.clip_dim;
                        let n = data.documents.max(1) as f64;
                        let mean = self.clip_sums[i * d..(i + 1) * d]
                            .iter()
                            .map(|s| (s / n) as f32)
                            .collect();
                        cells.push(CellEntry {
                            concept: c,
                            task: t,
                            embedding: Some(CellEmbedding {
                                count: data.documents,
                                mean,
                            }),
                            data,
                        });
                    }
                }
                None => empty_cells.push(name),
            }
        }
        Ok((cells, empty_cells))
    }
}

impl<'a> Prepare<'a> {
    /// Checks the request, finds the input files and `synth.json`, opens the staging
    /// directory.
    fn start(req: Request<'a>, overwrite: bool) -> Result<Self, PrepareError> {
        if req.cfg.k == 0 {
            return Err(PrepareError::ZeroK);
        }
        let kind = source_kind(req.input, req.cfg);
        let real = open_real(kind, req.cfg)?;
        let files = match kind {
            SourceKind::Raw => raw::input_files(req.input)?,
            _ => source::input_files(req.input, kind)?,
        };
        let input_dir = if req.input.is_dir() {
            req.input.to_path_buf()
        } else {
            req.input
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        let synth_meta: Option<SynthMeta> = {
            let p = input_dir.join("synth.json");
            match fs::read_to_string(&p) {
                Ok(s) => Some(
                    serde_json::from_str(&s)
                        .map_err(|source| PrepareError::SynthMeta { path: p, source })?,
                ),
                Err(_) => None,
            }
        };
        let stage = StagingDir::new(req.out, overwrite)?;
        let root = stage.path().to_path_buf();
        let spill_dir = root.join(".spill");
        fs::create_dir_all(&spill_dir).at("creating", &spill_dir)?;
        Ok(Self {
            req,
            files,
            input_dir,
            synth_meta,
            stage,
            root,
            spill_dir,
            real,
        })
    }

    /// Pass 1: parses every sample, spills it, notes its labels and reservoir-samples its
    /// embedding.
    fn read_samples(&self) -> Result<Read, PrepareError> {
        let cfg = self.req.cfg;
        let total_bytes: u64 = self
            .files
            .iter()
            .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        self.req.progress.stage("reading samples", total_bytes);
        let mut spill = Spill::create(&self.spill_dir)?;
        let mut shapes: Option<Shapes> = None;
        let mut labels = Labels {
            tasks: HashMap::new(),
            truth: HashMap::new(),
            has_truth: true,
            max_token: 0,
        };
        let mut reservoir = Reservoir {
            on: self.req.centroids.is_none(),
            capacity: cfg.fit_sample,
            data: Vec::new(),
            n: 0,
            seen: 0,
            rng: SplitMix64::derive(cfg.seed, 0x5E5E),
        };
        let rules = ReadRules {
            on_error: cfg.on_error,
            vocab_size: cfg
                .vocab_size
                .or(self.synth_meta.as_ref().map(|m| m.vocab_size)),
        };
        let sink = |s: RawSample| -> Result<(), PrepareError> {
            let (t, label) = labels.note(&s);
            spill.add(&s, t, label)?;
            reservoir.offer(&s.clip);
            Ok(())
        };
        let progress = |b| self.req.progress.advance(b);
        let stats = match &self.real {
            None => raw::read_samples(&self.files, &rules, &mut shapes, sink, &progress)?,
            Some(src) => {
                let stats =
                    real::read_samples(src, &self.files, &rules, &mut shapes, sink, &progress)?;
                src.embeddings
                    .check_row_count(stats.samples + stats.skipped)?;
                stats
            }
        };
        spill.finish()?;
        let shapes = shapes.ok_or_else(|| PrepareError::NoSamples {
            input: self.req.input.to_path_buf(),
            skipped: stats.skipped,
        })?;
        Ok(Read {
            stats,
            shapes,
            labels,
            reservoir,
        })
    }

    /// The vocabulary size (flag, else `synth.json`, else the largest token id + 1), checked
    /// against the tokens, and the token dtype.
    fn vocabulary(&self, read: &Read) -> Result<Vocab, PrepareError> {
        let max_token = read.labels.max_token;
        if let Some(src) = &self.real {
            let tok = &src.tokenizer;
            let size = match self.req.cfg.vocab_size {
                Some(flag) if flag < tok.vocab_size => {
                    return Err(PrepareError::TokenizerVocab {
                        flag,
                        tokenizer: tok.vocab_size,
                    })
                }
                Some(flag) => flag,
                None => tok.vocab_size,
            };
            let sp = tok.special;
            return Ok(Vocab {
                size,
                dtype: DType::for_vocab(size as usize),
                special_tokens: SpecialTokens {
                    pad: sp.pad,
                    bos: sp.bos,
                    eos: sp.eos,
                    image: sp.image,
                },
            });
        }
        let size = self
            .req
            .cfg
            .vocab_size
            .or(self.synth_meta.as_ref().map(|m| m.vocab_size))
            .unwrap_or(max_token + 1);
        if max_token >= size {
            return Err(PrepareError::Vocabulary {
                max_token,
                vocab_size: size,
            });
        }
        Ok(Vocab {
            size,
            dtype: DType::for_vocab(size as usize),
            special_tokens: self
                .synth_meta
                .as_ref()
                .map(|m| m.special_tokens)
                .unwrap_or_default(),
        })
    }

    /// Fits k-means on the reservoir (then frees it) or loads `--centroids`, and saves the
    /// centroids into the corpus.
    fn clusters(&self, read: &mut Read) -> Result<Clusters, PrepareError> {
        let cfg = self.req.cfg;
        let dim = read.shapes.clip_dim;
        let clusters = match self.req.centroids {
            Some(p) => {
                let m = KMeans::load_safetensors(p)?;
                if m.dim() != dim {
                    return Err(PrepareError::CentroidDim {
                        path: p.to_path_buf(),
                        centroids: m.dim(),
                        clip: dim,
                    });
                }
                Clusters {
                    model: m,
                    inertia: f64::NAN,
                    fit_sample: 0,
                }
            }
            None => {
                let n = read.reservoir.n;
                if n < cfg.k {
                    return Err(PrepareError::TooFewSamples {
                        samples: n,
                        k: cfg.k,
                    });
                }
                self.req.progress.stage("fitting k-means", 0);
                let kcfg = KMeansConfig {
                    k: cfg.k,
                    max_iter: cfg.max_iter,
                    restarts: cfg.restarts,
                    seed: cfg.seed,
                    metric: cfg.metric,
                    ..KMeansConfig::default()
                };
                let (m, report) = KMeans::fit(&read.reservoir.data, dim, &kcfg)?;
                // Name clusters by size (c00 = largest in the sample) so labels are stable.
                Clusters {
                    model: m.sorted_by_size(&report.sizes),
                    inertia: report.inertia,
                    fit_sample: n as u64,
                }
            }
        };
        read.reservoir.data = Vec::new();
        clusters
            .model
            .save_safetensors(&self.root.join(CENTROIDS_FILE))?;
        Ok(clusters)
    }

    /// Pass 2: assigns the spilled embeddings to concepts in chunks and appends each document
    /// to its (concept, task) cell; removes the spill files.
    fn write_cells(
        &self,
        read: &Read,
        clusters: &Clusters,
        vocab: &Vocab,
    ) -> Result<Cells, PrepareError> {
        const CHUNK: usize = 65_536;
        let n_docs = read.stats.samples;
        self.req.progress.stage("writing cells", n_docs);
        let model = &clusters.model;
        let (k, dim) = (model.k(), read.shapes.clip_dim);
        let tasks = order_tasks(&read.labels.tasks);
        let task_pos: HashMap<u32, usize> = read
            .labels
            .tasks
            .iter()
            .map(|(name, &id)| (id, tasks.iter().position(|n| n == name).unwrap()))
            .collect();
        let axes = Axes {
            concepts: (0..k).map(|c| format!("c{c:02}")).collect(),
            tasks,
        };
        let image_spec = read.shapes.image.map(|(patches, dim)| ImageSpec {
            patches,
            dim,
            dtype: "float16".into(),
        });
        let spill = SpillReader::open(&self.spill_dir)?;
        let img_bytes = image_spec.as_ref().map_or(0, |s| s.bytes_per_doc());
        let mut writers = CellWriters {
            root: &self.root,
            axes: &axes,
            dtype: vocab.dtype,
            with_image: image_spec.is_some(),
            writers: (0..k * axes.tasks.len()).map(|_| None).collect(),
            clip_sums: vec![0.0; k * axes.tasks.len() * dim],
            clip_dim: dim,
        };
        let has_truth = read.labels.has_truth;
        let mut contingency = vec![0u64; read.labels.truth.len().max(1) * k];
        let mut sizes = vec![0u64; k];
        let mut tok = Vec::new();
        let mut start = 0usize;
        while start < n_docs as usize {
            let end = (start + CHUNK).min(n_docs as usize);
            let emb = spill.embeddings(start, end, dim);
            let assignment = model.assign(&emb);
            for (i, d) in (start..end).enumerate() {
                let c = assignment.labels[i] as usize;
                let (task_id, truth_id) = spill.labels(d);
                let t = task_pos[&task_id];
                let cell = c * writers.axes.tasks.len() + t;
                for (s, &x) in writers.clip_sums[cell * dim..(cell + 1) * dim]
                    .iter_mut()
                    .zip(&emb[i * dim..(i + 1) * dim])
                {
                    *s += x as f64;
                }
                if has_truth {
                    contingency[truth_id as usize * k + c] += 1;
                }
                sizes[c] += 1;
                tok.clear();
                spill.tokens.read_document(d, &mut tok)?;
                let off = spill.tokens.document_offset(d) as usize;
                let mask = &spill.mask[off..off + tok.len()];
                let img = (img_bytes > 0).then(|| &spill.image[d * img_bytes..(d + 1) * img_bytes]);
                writers.add((c, t), &tok, mask, img)?;
            }
            start = end;
            self.req.progress.advance(start as u64);
        }
        drop(spill);
        let (entries, empty) = writers.finish()?;
        fs::remove_dir_all(&self.spill_dir).at("removing", &self.spill_dir)?;
        Ok(Cells {
            axes,
            image_spec,
            entries,
            empty,
            sizes,
            contingency,
        })
    }

    /// Writes each `benchmarks/*.jsonl` beside a directory input as one dataset, with the
    /// corpus's shapes and vocabulary.
    fn write_benchmarks(
        &self,
        shapes: &Shapes,
        vocab: &Vocab,
        model: &KMeans,
        axes: &Axes,
    ) -> Result<Benchmarks, PrepareError> {
        let bench_dir = self.input_dir.join("benchmarks");
        let mut benchmarks = Benchmarks::default();
        if !(self.req.input.is_dir() && bench_dir.is_dir()) {
            return Ok(benchmarks);
        }
        let bench_files = match &self.real {
            None => raw::input_files(&bench_dir)?,
            Some(src) => {
                if !src.embeddings.by_id() {
                    return Err(EmbeddingError::BenchmarksNeedIds {
                        path: src.embeddings.path().to_path_buf(),
                    }
                    .into());
                }
                source::input_files(&bench_dir, src.kind)?
            }
        };
        for f in &bench_files {
            check_label(&benchmark_name(f)).map_err(|label| PrepareError::BenchmarkName {
                path: f.clone(),
                label,
            })?;
        }
        self.req
            .progress
            .stage("writing benchmarks", bench_files.len() as u64);
        for (i, f) in bench_files.iter().enumerate() {
            let mut seen = BenchmarkSeen::default();
            if let Some(entry) = self.write_benchmark(f, shapes, vocab, &mut seen)? {
                let cells = seen.cells(model, axes);
                if !cells.is_empty() {
                    benchmarks.cells.insert(entry.name.clone(), cells);
                }
                benchmarks.entries.push(entry);
            }
            self.req.progress.advance(i as u64 + 1);
        }
        Ok(benchmarks)
    }

    /// One benchmark file; `None` when it has no documents. Each document's embedding and
    /// task go into `seen`.
    fn write_benchmark(
        &self,
        f: &Path,
        shapes: &Shapes,
        vocab: &Vocab,
        seen: &mut BenchmarkSeen,
    ) -> Result<Option<DatasetEntry>, PrepareError> {
        let name = benchmark_name(f);
        let prefix = self.root.join("benchmarks").join(&name);
        let mut w = DatasetFiles::create(prefix, vocab.dtype, shapes.image.is_some())?;
        let mut bench_shapes = Some(*shapes);
        let mut scratch: Vec<u8> = Vec::new(); // f16 image features
                                               // Token ids at or above the corpus's vocabulary are refused line by line.
        let rules = ReadRules {
            on_error: self.req.cfg.on_error,
            vocab_size: Some(vocab.size),
        };
        let sink = |s: RawSample| -> Result<(), PrepareError> {
            seen.clips.extend_from_slice(&s.clip);
            seen.tasks.push(s.task.clone());
            scratch.clear();
            if let Some((img, _, _)) = &s.image {
                push_f16(&mut scratch, img);
            }
            w.add(
                &s.tokens,
                &s.loss_mask,
                s.image.as_ref().map(|_| scratch.as_slice()),
            )
        };
        let files = [f.to_path_buf()];
        match &self.real {
            None => raw::read_samples(&files, &rules, &mut bench_shapes, sink, &|_| {})?,
            Some(src) => real::read_samples(src, &files, &rules, &mut bench_shapes, sink, &|_| {})?,
        };
        w.finish(&self.root, name)
    }

    /// Lists every file of every dataset with its size and SHA-256, in parallel.
    fn checksum(
        &self,
        cells: &mut [CellEntry],
        benchmarks: &mut [DatasetEntry],
    ) -> Result<(), PrepareError> {
        let progress = self.req.progress;
        progress.stage("checksumming", (cells.len() + benchmarks.len()) as u64);
        let done = std::sync::atomic::AtomicU64::new(0);
        let describe = |e: &mut DatasetEntry| -> Result<(), PathIoError> {
            e.files = describe_files(&self.root, &e.prefix)?;
            progress.advance(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            Ok(())
        };
        cells
            .par_iter_mut()
            .try_for_each(|c| describe(&mut c.data))?;
        benchmarks.par_iter_mut().try_for_each(describe)?;
        Ok(())
    }

    /// The clustering summary: sizes, and agreement with the ground truth when every sample
    /// had one.
    fn clustering_info(
        &self,
        read: &Read,
        clusters: &Clusters,
        cells: &mut Cells,
    ) -> ClusteringInfo {
        let labels = &read.labels;
        let k = clusters.model.k();
        let (ari, purity) = if labels.has_truth && !labels.truth.is_empty() {
            let table = cluster_metrics::Contingency::from_counts(
                labels.truth.len().max(1),
                k,
                std::mem::take(&mut cells.contingency),
            );
            (Some(table.adjusted_rand_index()), Some(table.purity()))
        } else {
            (None, None)
        };
        ClusteringInfo {
            centroids: CENTROIDS_FILE.into(),
            embedding_dim: read.shapes.clip_dim,
            metric: clusters.model.metric().name().into(),
            inertia: clusters.inertia,
            fit_sample: clusters.fit_sample,
            sizes: std::mem::take(&mut cells.sizes),
            adjusted_rand_index: ari,
            purity,
        }
    }

    /// The manifest's record of a real-format source's tokenizer.
    fn tokenizer_info(&self) -> Option<TokenizerInfo> {
        let src = self.real.as_ref()?;
        let cfg = self.req.cfg;
        Some(TokenizerInfo {
            path: cfg.tokenizer.as_ref()?.display().to_string(),
            vocab_size: src.tokenizer.vocab_size,
            chat_template: src.tokenizer.template_origin.clone(),
            image_token: cfg
                .image_token
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE_TOKEN.to_string()),
            image_rows: src.image_rows,
        })
    }

    /// Copies `vocab.json` beside the input, if any, into the corpus.
    fn copy_vocab(&self) -> Result<Option<String>, PrepareError> {
        if !self.input_dir.join("vocab.json").is_file() {
            return Ok(None);
        }
        let src = self.input_dir.join("vocab.json");
        let dst = self.root.join("vocab.json");
        fs::copy(&src, &dst).at("copying", &src)?;
        Ok(Some("vocab.json".to_string()))
    }

    /// Writes `manifest.json` (last, so a corpus with a manifest is complete) and builds the
    /// report (its `seconds` left at 0).
    fn write_manifest(
        &self,
        read: Read,
        vocab: Vocab,
        clusters: Clusters,
        mut cells: Cells,
        benchmarks: Benchmarks,
    ) -> Result<PrepareReport, PrepareError> {
        let clustering = self.clustering_info(&read, &clusters, &mut cells);
        let vocab_file = self.copy_vocab()?;
        let mut source = BTreeMap::new();
        source.insert("input".into(), self.req.input.display().to_string());
        source.insert("mixatlas".into(), env!("CARGO_PKG_VERSION").into());
        source.insert("seed".into(), self.req.cfg.seed.to_string());
        let cfg = self.req.cfg;
        if let Some(src) = &self.real {
            let kind = serde_json::to_value(src.kind).expect("kind serialises");
            source.insert("kind".into(), kind.as_str().unwrap_or_default().into());
            for (key, p) in [
                ("embeddings", &cfg.embeddings),
                ("task_map", &cfg.task_map),
                ("image_root", &cfg.image_root),
            ] {
                if let Some(p) = p {
                    source.insert(key.into(), p.display().to_string());
                }
            }
        }
        if let Some(p) = self.req.centroids {
            source.insert("centroids_from".into(), p.display().to_string());
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            axes: cells.axes,
            vocab_size: vocab.size,
            token_dtype: vocab.dtype,
            special_tokens: vocab.special_tokens,
            image: cells.image_spec,
            clustering: clustering.clone(),
            cells: cells.entries,
            benchmarks: benchmarks.entries,
            benchmark_cells: benchmarks.cells,
            tokenizer: self.tokenizer_info(),
            vocab: vocab_file,
            source,
        };
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        write_atomic(&self.root.join(MANIFEST_FILE), text.as_bytes())?;
        Ok(PrepareReport {
            out: self.req.out.to_path_buf(),
            documents: manifest.cells.iter().map(|c| c.data.documents).sum(),
            tokens: manifest.cells.iter().map(|c| c.data.tokens).sum(),
            skipped: read.stats.skipped,
            first_errors: read.stats.first_errors,
            cells: manifest.cells.len(),
            empty_cells: cells.empty,
            clustering,
            benchmarks: manifest
                .benchmarks
                .iter()
                .map(|b| (b.name.clone(), b.documents))
                .collect(),
            seconds: 0.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Benchmarks are assigned to the training data's concepts: two clusters (near (10, 0)
    /// → c00 with 4 samples, near (0, 10) → c01 with 2), benchmark `a` with 3 documents near
    /// c00 (2 vqa, 1 ocr) and 1 near c01 (vqa), benchmark `b` with 2 near c01 (ocr) and one
    /// of a task the training data lacks (left out). Its mixture is the mean of the two
    /// benchmarks' shares, by hand.
    #[test]
    fn benchmarks_record_their_documents_per_cell() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        fs::create_dir_all(raw.join("benchmarks")).unwrap();
        let line = |c: [f32; 2], t: &str| {
            format!(
                "{{\"task\":\"{t}\",\"tokens\":[1,5,6,2],\"prompt_len\":2,\"clip\":[{},{}]}}\n",
                c[0], c[1]
            )
        };
        let train: String = [
            ([10.0, 0.0], "ocr"),
            ([11.0, 1.0], "vqa"),
            ([9.0, -1.0], "ocr"),
            ([10.5, 0.5], "vqa"),
            ([0.0, 10.0], "ocr"),
            ([1.0, 11.0], "vqa"),
        ]
        .iter()
        .map(|(c, t)| line(*c, t))
        .collect();
        fs::write(raw.join("train-00000.jsonl"), train).unwrap();
        let a: String = [
            ([9.0, 0.5], "vqa"),
            ([10.0, 1.0], "vqa"),
            ([11.0, 0.0], "ocr"),
            ([0.5, 9.0], "vqa"),
        ]
        .iter()
        .map(|(c, t)| line(*c, t))
        .collect();
        fs::write(raw.join("benchmarks/a.jsonl"), a).unwrap();
        let b: String = [
            ([0.0, 11.0], "ocr"),
            ([1.0, 10.0], "ocr"),
            ([10.0, 0.0], "grounding"),
        ]
        .iter()
        .map(|(c, t)| line(*c, t))
        .collect();
        fs::write(raw.join("benchmarks/b.jsonl"), b).unwrap();
        let out = dir.path().join("corpus");
        let cfg = PrepareConfig {
            k: 2,
            metric: Metric::Euclidean,
            ..PrepareConfig::default()
        };
        prepare(&raw, &out, &cfg, None, false, &NoProgress).unwrap();
        let m = Manifest::load(&out).unwrap();
        let got = |b: &str, cell: &str| m.benchmark_cells[b].get(cell).copied().unwrap_or(0);
        assert_eq!(got("a", "c00/vqa"), 2);
        assert_eq!(got("a", "c00/ocr"), 1);
        assert_eq!(got("a", "c01/vqa"), 1);
        assert_eq!(got("b", "c01/ocr"), 2);
        assert_eq!(m.benchmark_cells["b"].len(), 1, "{:?}", m.benchmark_cells);
        // Equal weights: a gives c00/vqa 1/2, c00/ocr 1/4, c01/vqa 1/4; b gives c01/ocr 1.
        let w = m.benchmark_weights(&BTreeMap::new()).unwrap();
        let want = [
            ("c00/ocr", 0.125),
            ("c00/vqa", 0.25),
            ("c01/ocr", 0.5),
            ("c01/vqa", 0.125),
        ];
        for (cell, x) in want {
            let i = m.cell_index(cell).unwrap();
            assert!((w[i] - x).abs() < 1e-12, "{cell}: {} vs {x}", w[i]);
        }
        // Weights by name: only `a` counts.
        let only_a = m
            .benchmark_weights(&BTreeMap::from([("a".to_string(), 1.0)]))
            .unwrap();
        assert!((only_a[m.cell_index("c00/vqa").unwrap()] - 0.5).abs() < 1e-12);
        assert_eq!(only_a[m.cell_index("c01/ocr").unwrap()], 0.0);
    }

    /// Two well-separated clusters of 2-d embeddings (7 and 5 samples), two tasks: each
    /// cell's manifest embedding is the hand-computed mean of its samples' `clip`, and a
    /// manifest without embeddings (written before they existed) still loads.
    #[test]
    fn cells_record_their_mean_clip_embedding() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.jsonl");
        // (clip, task): cluster A near (10, 0) (7 samples → c00), B near (0, 10) (5 → c01).
        let samples: Vec<([f32; 2], &str)> = vec![
            ([10.0, 0.0], "ocr"),
            ([11.0, 1.0], "ocr"),
            ([9.0, -1.0], "ocr"),
            ([10.5, 0.5], "vqa"),
            ([9.5, 0.25], "vqa"),
            ([10.0, 2.0], "vqa"),
            ([12.0, 0.0], "vqa"),
            ([0.0, 10.0], "ocr"),
            ([1.0, 11.0], "ocr"),
            ([-1.0, 9.0], "vqa"),
            ([0.5, 10.0], "vqa"),
            ([0.0, 12.5], "vqa"),
        ];
        let text: String = samples
            .iter()
            .map(|(c, t)| {
                format!(
                    "{{\"task\":\"{t}\",\"tokens\":[1,5,6,2],\"prompt_len\":2,\"clip\":[{},{}]}}\n",
                    c[0], c[1]
                )
            })
            .collect();
        fs::write(&raw, text).unwrap();
        let out = dir.path().join("corpus");
        let cfg = PrepareConfig {
            k: 2,
            metric: Metric::Euclidean,
            ..PrepareConfig::default()
        };
        prepare(&raw, &out, &cfg, None, false, &NoProgress).unwrap();
        let m = Manifest::load(&out).unwrap();
        let expect = |lo: usize, hi: usize, task: &str| -> (u64, [f64; 2]) {
            let s: Vec<_> = samples[lo..hi].iter().filter(|(_, t)| *t == task).collect();
            let n = s.len() as f64;
            let mean = [
                s.iter().map(|(c, _)| c[0] as f64).sum::<f64>() / n,
                s.iter().map(|(c, _)| c[1] as f64).sum::<f64>() / n,
            ];
            (s.len() as u64, mean)
        };
        let want = [
            ("c00/ocr", expect(0, 7, "ocr")),
            ("c00/vqa", expect(0, 7, "vqa")),
            ("c01/ocr", expect(7, 12, "ocr")),
            ("c01/vqa", expect(7, 12, "vqa")),
        ];
        assert_eq!(m.cells.len(), 4);
        for (name, (count, mean)) in want {
            let c = &m.cells[m.cell_index(name).expect(name)];
            let e = c.embedding.as_ref().expect("prepare records the embedding");
            assert_eq!(e.count, count, "{name}");
            assert_eq!(c.data.documents, count, "{name}");
            for (got, want) in e.mean.iter().zip(mean) {
                assert!((*got as f64 - want).abs() < 1e-6, "{name}: {got} vs {want}");
            }
        }
        // An older manifest (no `embedding`) loads, with none.
        let path = out.join(MANIFEST_FILE);
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        for c in v["cells"].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("embedding");
        }
        fs::write(&path, v.to_string()).unwrap();
        let old = Manifest::load(&out).unwrap();
        assert!(old.cells.iter().all(|c| c.embedding.is_none()));
        // A mean of the wrong length is rejected, naming the cell and the expected length.
        v["cells"][0]["embedding"] = serde_json::json!({"count": 3, "mean": [1.0]});
        fs::write(&path, v.to_string()).unwrap();
        let err = Manifest::load(&out).unwrap_err().to_string();
        assert!(
            err.contains("embedding.mean") && err.contains("embedding_dim = 2"),
            "{err}"
        );
    }
}
