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
//!    appended to its (concept, task) cell's `.bin`/`.idx`/`.mask`/`.img`.
//!
//! Held-out benchmarks (`benchmarks/*.jsonl` beside the input) are written the same way. The
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
    cell_name, describe_files, image_path, mask_path, Axes, CellEntry, ClusteringInfo, CorpusError,
    DatasetEntry, ImageSpec, Manifest, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
};
use super::kmeans::{KMeans, KMeansConfig, KMeansError, Metric};
use super::megatron::{DType, DatasetWriter, IndexedDataset, MegatronError};
use super::raw::{self, ConceptLabel, OnError, RawError, RawSample, Shapes};
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
    /// Vocabulary size; default: from `synth.json` beside the input, else the largest token
    /// id + 1.
    pub vocab_size: Option<u32>,
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
    /// Writing or re-reading Megatron files failed.
    #[error(transparent)]
    Megatron(#[from] MegatronError),
    /// Corpus files failed validation.
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    /// Clustering failed.
    #[error("k-means: {0}")]
    KMeans(#[from] KMeansError),
    /// The input or options are inconsistent.
    #[error("{0}")]
    Invalid(String),
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

/// Runs `prepare`: reads `input` (a `.jsonl` file or a directory of them), writes the corpus
/// to `out`. With `centroids`, assigns to existing clusters instead of fitting.
pub fn prepare(
    input: &Path,
    out: &Path,
    cfg: &PrepareConfig,
    centroids: Option<&Path>,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<PrepareReport, PrepareError> {
    let started = Instant::now();
    if cfg.k == 0 {
        return Err(PrepareError::Invalid(
            "prepare: `k` must be at least 1".into(),
        ));
    }
    let files = raw::input_files(input)?;
    let input_dir = if input.is_dir() {
        input.to_path_buf()
    } else {
        input.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let synth_meta: Option<SynthMeta> = {
        let p = input_dir.join("synth.json");
        match fs::read_to_string(&p) {
            Ok(s) => Some(serde_json::from_str(&s).map_err(|e| {
                PrepareError::Invalid(format!("{}: invalid synth metadata: {e}", p.display()))
            })?),
            Err(_) => None,
        }
    };
    let stage = StagingDir::new(out, overwrite)?;
    let root = stage.path().to_path_buf();
    let spill_dir = root.join(".spill");
    fs::create_dir_all(&spill_dir).at("creating", &spill_dir)?;

    // ---- Pass 1: parse, spill, reservoir-sample embeddings.
    let total_bytes: u64 = files
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    progress.stage("reading samples", total_bytes);
    let mut spill = Spill {
        tokens: DatasetWriter::create(&spill_dir.join("tokens"), DType::I32)?,
        mask: OutFile::create(spill_dir.join("mask"))?,
        image: OutFile::create(spill_dir.join("image"))?,
        clip: OutFile::create(spill_dir.join("clip"))?,
        labels: OutFile::create(spill_dir.join("labels"))?,
    };
    let mut shapes: Option<Shapes> = None;
    let mut tasks: HashMap<String, u32> = HashMap::new();
    let mut truth: HashMap<ConceptLabel, u32> = HashMap::new();
    let mut has_truth = true;
    let mut max_token = 0u32;
    let mut reservoir: Vec<f32> = Vec::new();
    let mut reservoir_n = 0usize;
    let mut seen = 0u64;
    let mut rng = SplitMix64::derive(cfg.seed, 0x5E5E);
    let mut scratch: Vec<u8> = Vec::new(); // f16 image features, f32 embeddings
    let fitting = centroids.is_none();
    let stats = raw::read_samples::<PrepareError>(
        &files,
        cfg.on_error,
        &mut shapes,
        |s: RawSample| {
            let task_count = tasks.len() as u32;
            let t = *tasks.entry(s.task.clone()).or_insert(task_count);
            let label = match &s.concept {
                Some(c) => {
                    let n = truth.len() as u32;
                    *truth.entry(c.clone()).or_insert(n)
                }
                None => {
                    has_truth = false;
                    u32::MAX
                }
            };
            max_token = max_token.max(s.tokens.iter().copied().max().unwrap_or(0));
            spill.tokens.add_document(&s.tokens)?;
            spill.mask.write(&s.loss_mask)?;
            if let Some((img, _, _)) = &s.image {
                scratch.clear();
                push_f16(&mut scratch, img);
                spill.image.write(&scratch)?;
            }
            scratch.clear();
            scratch.extend(s.clip.iter().flat_map(|x| x.to_le_bytes()));
            spill.clip.write(&scratch)?;
            let mut lb = [0u8; 8];
            lb[..4].copy_from_slice(&t.to_le_bytes());
            lb[4..].copy_from_slice(&label.to_le_bytes());
            spill.labels.write(&lb)?;
            // Algorithm R reservoir sampling of embeddings for the k-means fit.
            if fitting {
                let d = s.clip.len();
                if reservoir_n < cfg.fit_sample {
                    reservoir.extend_from_slice(&s.clip);
                    reservoir_n += 1;
                } else {
                    let j = rng.below(seen + 1) as usize;
                    if j < cfg.fit_sample {
                        reservoir[j * d..(j + 1) * d].copy_from_slice(&s.clip);
                    }
                }
            }
            seen += 1;
            Ok(())
        },
        &|b| progress.advance(b),
    )?;
    spill.tokens.finish()?;
    for f in [spill.mask, spill.image, spill.clip, spill.labels] {
        f.finish()?;
    }
    let shapes = shapes.ok_or_else(|| {
        PrepareError::Invalid(format!(
            "{}: no valid samples (skipped {} malformed lines)",
            input.display(),
            stats.skipped
        ))
    })?;
    let dim = shapes.clip_dim;

    // ---- Vocabulary and dtype.
    let vocab_size = cfg
        .vocab_size
        .or(synth_meta.as_ref().map(|m| m.vocab_size))
        .unwrap_or(max_token + 1);
    if max_token >= vocab_size {
        return Err(PrepareError::Invalid(format!(
            "token id {max_token} is not below the vocabulary size {vocab_size} (set --vocab-size)"
        )));
    }
    let dtype = DType::for_vocab(vocab_size as usize);
    let special_tokens = synth_meta
        .as_ref()
        .map(|m| m.special_tokens)
        .unwrap_or_default();

    // ---- Fit or load centroids.
    let (model, fit_inertia, fit_sample) = match centroids {
        Some(p) => {
            let m = KMeans::load_safetensors(p)?;
            if m.dim() != dim {
                return Err(PrepareError::Invalid(format!(
                    "{}: centroids have dimension {}, the samples' `clip` has {dim}",
                    p.display(),
                    m.dim()
                )));
            }
            (m, f64::NAN, 0u64)
        }
        None => {
            if reservoir_n < cfg.k {
                return Err(PrepareError::Invalid(format!(
                    "{} valid samples, fewer than k = {} concepts",
                    reservoir_n, cfg.k
                )));
            }
            progress.stage("fitting k-means", 0);
            let kcfg = KMeansConfig {
                k: cfg.k,
                max_iter: cfg.max_iter,
                restarts: cfg.restarts,
                seed: cfg.seed,
                metric: cfg.metric,
                ..KMeansConfig::default()
            };
            let (m, report) = KMeans::fit(&reservoir, dim, &kcfg)?;
            // Name clusters by size (c00 = largest in the sample) so labels are stable.
            let m = m.sorted_by_size(&report.sizes);
            (m, report.inertia, reservoir_n as u64)
        }
    };
    drop(reservoir);
    let k = model.k();
    let centroids_rel = "centroids.safetensors";
    model.save_safetensors(&root.join(centroids_rel))?;

    // ---- Pass 2: assign and write cells.
    let n_docs = stats.samples;
    progress.stage("writing cells", n_docs);
    let task_names = order_tasks(&tasks);
    let task_pos: HashMap<u32, usize> = tasks
        .iter()
        .map(|(name, &id)| (id, task_names.iter().position(|n| n == name).unwrap()))
        .collect();
    let concept_names: Vec<String> = (0..k).map(|c| format!("c{c:02}")).collect();
    let image_spec = shapes.image.map(|(patches, dim)| ImageSpec {
        patches,
        dim,
        dtype: "float16".into(),
    });
    let spill_tok = IndexedDataset::open(&spill_dir.join("tokens"))?;
    let map = |name: &str| -> Result<Mmap, PathIoError> {
        let p = spill_dir.join(name);
        let f = File::open(&p).at("opening", &p)?;
        // SAFETY: private spill file written and closed above, never modified again.
        unsafe { Mmap::map(&f) }.at("mapping", &p)
    };
    let (mask_m, image_m, clip_m, label_m) =
        (map("mask")?, map("image")?, map("clip")?, map("labels")?);
    let img_bytes = image_spec.as_ref().map_or(0, |s| s.bytes_per_doc());
    let mut writers: Vec<Option<DatasetFiles>> = (0..k * task_names.len()).map(|_| None).collect();
    let n_truth = truth.len().max(1);
    let mut contingency = vec![0u64; n_truth * k];
    let mut sizes = vec![0u64; k];
    let mut tok = Vec::new();
    const CHUNK: usize = 65_536;
    let mut start = 0usize;
    while start < n_docs as usize {
        let end = (start + CHUNK).min(n_docs as usize);
        let emb: Vec<f32> = clip_m[start * dim * 4..end * dim * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let assignment = model.assign(&emb);
        for (i, d) in (start..end).enumerate() {
            let c = assignment.labels[i] as usize;
            let lb = &label_m[d * 8..d * 8 + 8];
            let t = task_pos[&u32::from_le_bytes(lb[..4].try_into().unwrap())];
            let truth_id = u32::from_le_bytes(lb[4..].try_into().unwrap());
            if has_truth {
                contingency[truth_id as usize * k + c] += 1;
            }
            sizes[c] += 1;
            tok.clear();
            spill_tok.read_document(d, &mut tok)?;
            let off = spill_tok.document_offset(d) as usize;
            let mask = &mask_m[off..off + tok.len()];
            let img = (img_bytes > 0).then(|| &image_m[d * img_bytes..(d + 1) * img_bytes]);
            let slot = &mut writers[c * task_names.len() + t];
            if slot.is_none() {
                let prefix = root
                    .join("cells")
                    .join(format!("{}_{}", concept_names[c], task_names[t]));
                *slot = Some(DatasetFiles::create(prefix, dtype, image_spec.is_some())?);
            }
            slot.as_mut().unwrap().add(&tok, mask, img)?;
        }
        start = end;
        progress.advance(start as u64);
    }
    drop((mask_m, image_m, clip_m, label_m, spill_tok));
    let mut cells = Vec::new();
    let mut empty_cells = Vec::new();
    for (i, w) in writers.into_iter().enumerate() {
        let (c, t) = (i / task_names.len(), i % task_names.len());
        let name = cell_name(&concept_names[c], &task_names[t]);
        match w {
            Some(w) => {
                if let Some(data) = w.finish(&root, name.clone())? {
                    cells.push(CellEntry {
                        concept: c,
                        task: t,
                        data,
                    });
                }
            }
            None => empty_cells.push(name),
        }
    }
    fs::remove_dir_all(&spill_dir).at("removing", &spill_dir)?;

    // ---- Benchmarks.
    let bench_dir = input_dir.join("benchmarks");
    let mut benchmarks = Vec::new();
    if input.is_dir() && bench_dir.is_dir() {
        let bench_files = raw::input_files(&bench_dir)?;
        progress.stage("writing benchmarks", bench_files.len() as u64);
        for (i, f) in bench_files.iter().enumerate() {
            let name = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let prefix = root.join("benchmarks").join(&name);
            let mut w = DatasetFiles::create(prefix, dtype, image_spec.is_some())?;
            let mut bench_shapes = Some(shapes);
            raw::read_samples::<PrepareError>(
                std::slice::from_ref(f),
                cfg.on_error,
                &mut bench_shapes,
                |s| {
                    if let Some(&bad) = s.tokens.iter().find(|&&t| t >= vocab_size) {
                        return Err(PrepareError::Invalid(format!(
                            "{}: token id {bad} is not below the vocabulary size {vocab_size}",
                            f.display()
                        )));
                    }
                    scratch.clear();
                    if let Some((img, _, _)) = &s.image {
                        push_f16(&mut scratch, img);
                    }
                    w.add(
                        &s.tokens,
                        &s.loss_mask,
                        s.image.as_ref().map(|_| scratch.as_slice()),
                    )
                },
                &|_| {},
            )?;
            if let Some(entry) = w.finish(&root, name)? {
                benchmarks.push(entry);
            }
            progress.advance(i as u64 + 1);
        }
    }

    // ---- Checksums and manifest.
    progress.stage("checksumming", (cells.len() + benchmarks.len()) as u64);
    let done = std::sync::atomic::AtomicU64::new(0);
    let describe = |e: &mut DatasetEntry| -> Result<(), PathIoError> {
        e.files = describe_files(&root, &e.prefix)?;
        progress.advance(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
        Ok(())
    };
    cells
        .par_iter_mut()
        .try_for_each(|c| describe(&mut c.data))?;
    benchmarks.par_iter_mut().try_for_each(describe)?;

    let (ari, purity) = if has_truth && !truth.is_empty() {
        let table = cluster_metrics::Contingency::from_counts(n_truth, k, contingency);
        (Some(table.adjusted_rand_index()), Some(table.purity()))
    } else {
        (None, None)
    };
    let clustering = ClusteringInfo {
        centroids: centroids_rel.into(),
        embedding_dim: dim,
        metric: model.metric().name().into(),
        inertia: fit_inertia,
        fit_sample,
        sizes,
        adjusted_rand_index: ari,
        purity,
    };
    let vocab = if input_dir.join("vocab.json").is_file() {
        let src = input_dir.join("vocab.json");
        let dst = root.join("vocab.json");
        fs::copy(&src, &dst).at("copying", &src)?;
        Some("vocab.json".to_string())
    } else {
        None
    };
    let mut source = BTreeMap::new();
    source.insert("input".into(), input.display().to_string());
    source.insert("mixatlas".into(), env!("CARGO_PKG_VERSION").into());
    source.insert("seed".into(), cfg.seed.to_string());
    if let Some(p) = centroids {
        source.insert("centroids_from".into(), p.display().to_string());
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        axes: Axes {
            concepts: concept_names,
            tasks: task_names,
        },
        vocab_size,
        token_dtype: dtype,
        special_tokens,
        image: image_spec,
        clustering: clustering.clone(),
        cells,
        benchmarks,
        vocab,
        source,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    write_atomic(&root.join(MANIFEST_FILE), text.as_bytes())?;
    let report = PrepareReport {
        out: out.to_path_buf(),
        documents: manifest.cells.iter().map(|c| c.data.documents).sum(),
        tokens: manifest.cells.iter().map(|c| c.data.tokens).sum(),
        skipped: stats.skipped,
        first_errors: stats.first_errors,
        cells: manifest.cells.len(),
        empty_cells,
        clustering,
        benchmarks: manifest
            .benchmarks
            .iter()
            .map(|b| (b.name.clone(), b.documents))
            .collect(),
        seconds: 0.0,
    };
    stage.commit()?;
    Ok(PrepareReport {
        seconds: started.elapsed().as_secs_f64(),
        ..report
    })
}
