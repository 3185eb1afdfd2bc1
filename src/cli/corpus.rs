//! The corpus commands: `mixatlas synth` (the built-in synthetic corpus as raw JSONL),
//! `mixatlas prepare` (concepts by k-means, the (concept × task) cells in Megatron's format)
//! and `mixatlas inspect` (describe or verify a corpus or a Megatron prefix, print a document).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use mixatlas::config::Config;
use mixatlas::data::corpus::{Corpus, DocumentStore, Manifest};
use mixatlas::data::megatron::IndexedDataset;
use mixatlas::data::prepare::{self, PrepareConfig, PrepareReport, Progress};
use mixatlas::data::raw::OnError;
use mixatlas::data::sources::record::SourceKind;
use mixatlas::data::synth::{self, Composition, SynthConfig};

use mixatlas::fsutil::lock::DirLock;

use super::runtime::bar;

/// `mixatlas synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (created; must not exist unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// TOML config file; its `[synth]` table is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Preset: tiny (10k samples), standard (200k), large (1.5M) of the balanced
    /// composition; synth (50k, shaped like a real midtraining pool, the demo's) or balanced
    /// (50k).
    #[arg(long)]
    pub preset: Option<String>,
    /// Natural composition and benchmark suite: balanced or synth (overrides the preset's).
    #[arg(long, value_parser = ["balanced", "synth"])]
    pub composition: Option<String>,
    /// Number of training samples.
    #[arg(long)]
    pub samples: Option<u64>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of latent concepts (1..=10).
    #[arg(long)]
    pub concepts: Option<usize>,
    /// Samples per held-out benchmark.
    #[arg(long)]
    pub bench_samples: Option<u64>,
    /// Samples per JSONL shard.
    #[arg(long)]
    pub shard_samples: Option<u64>,
    /// Replace the output directory if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `mixatlas prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Raw samples: a .jsonl file or a directory of them (with optional `benchmarks/`).
    pub input: PathBuf,
    /// Output corpus directory.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML config file; its `[prepare]` table is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of concepts (k-means clusters).
    #[arg(long)]
    pub k: Option<usize>,
    /// k-means distance: cosine or euclidean.
    #[arg(long)]
    pub metric: Option<String>,
    /// k-means++ restarts.
    #[arg(long)]
    pub restarts: Option<usize>,
    /// Embeddings sampled to fit k-means on.
    #[arg(long)]
    pub fit_sample: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Malformed lines: fail (default) or skip.
    #[arg(long, value_enum)]
    pub on_error: Option<OnError>,
    /// Vocabulary size (default: from synth.json, else largest token id + 1).
    #[arg(long)]
    pub vocab_size: Option<u32>,
    /// Input kind: raw (MixAtlas JSONL), llava (JSON array or JSONL) or webdataset (tar
    /// shards). Default: raw without --tokenizer (but a .json / .tar file is llava /
    /// webdataset); with --tokenizer, webdataset for .tar files (or a directory holding
    /// them), else llava.
    #[arg(long, value_enum)]
    pub source: Option<SourceKind>,
    /// Directory that LLaVA `image` paths are relative to (recorded in the manifest).
    #[arg(long)]
    pub image_root: Option<PathBuf>,
    /// Hugging Face tokenizer directory: tokenizer.json (+ tokenizer_config.json with the
    /// chat template; Qwen2's ChatML when absent).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Task labels by source file, directory or dataset name (TOML or JSON table).
    #[arg(long)]
    pub task_map: Option<PathBuf>,
    /// Precomputed CLIP embeddings: .npy, .safetensors (tensor `embeddings`), or the
    /// directory `mixatlas embed --out` writes.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Image placeholder token (default <|image_pad|>).
    #[arg(long)]
    pub image_token: Option<String>,
    /// Placeholder tokens per image (default: the features' rows, else 1 for pooled).
    #[arg(long)]
    pub image_rows: Option<usize>,
    /// Assign to these existing centroids (safetensors) instead of fitting k-means.
    #[arg(long)]
    pub centroids: Option<PathBuf>,
    /// Replace the output directory if it exists.
    #[arg(long)]
    pub force: bool,
    /// Take the output's lock even though its record names a writer that may still run
    /// (never while another process holds the lock; docs/reliability.md).
    #[arg(long)]
    pub force_unlock: bool,
}

/// `mixatlas inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A corpus directory, or a Megatron prefix (`dir/name` for name.bin / name.idx).
    pub path: PathBuf,
    /// Recompute every checksum listed in the manifest.
    #[arg(long)]
    pub verify: bool,
    /// Print document N (of --cell / --benchmark in a corpus, or of the prefix).
    #[arg(long)]
    pub doc: Option<usize>,
    /// The cell (`concept/task`) whose document to print.
    #[arg(long)]
    pub cell: Option<String>,
    /// The benchmark whose document to print.
    #[arg(long)]
    pub benchmark: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

/// Resolves `synth` flags against the config file and preset.
fn resolve_synth(a: &SynthArgs) -> Result<SynthConfig> {
    let mut cfg = match (&a.preset, &a.config) {
        (Some(_), Some(_)) => bail!("give either --preset or --config, not both"),
        (Some(p), None) => SynthConfig::preset(p).with_context(|| {
            format!("unknown preset {p:?}; expected tiny, standard, large, synth or balanced")
        })?,
        (None, c) => load_config(c.as_deref())?.synth,
    };
    if let Some(v) = a.samples {
        cfg.samples = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(v) = a.concepts {
        cfg.concepts = v;
    }
    if let Some(v) = a.bench_samples {
        cfg.bench_samples = v;
    }
    if let Some(v) = a.shard_samples {
        cfg.shard_samples = v;
    }
    if let Some(v) = &a.composition {
        cfg.composition = if v == "synth" {
            Composition::Synth
        } else {
            Composition::Balanced
        };
    }
    cfg.validate()?;
    Ok(cfg)
}

/// `synth`: the synthetic corpus from flags, config file and preset.
pub fn run_synth(a: SynthArgs) -> Result<synth::SynthSummary> {
    let cfg = resolve_synth(&a)?;
    synth_with(&cfg, &a.out, a.force)
}

/// Writes the synthetic corpus of `cfg` to `out` with a progress bar and prints the summary.
pub fn synth_with(cfg: &SynthConfig, out: &Path, force: bool) -> Result<synth::SynthSummary> {
    tracing::info!(samples = cfg.samples, seed = cfg.seed, out = %out.display(), "synthesising corpus");
    let started = Instant::now();
    let pb = bar(cfg.samples, "samples");
    pb.set_message("synth");
    let summary = synth::generate(cfg, out, force, &|n| pb.set_position(n))
        .with_context(|| format!("synth into {}", out.display()))?;
    pb.finish_and_clear();
    println!(
        "synth: {} samples, {} tokens, {} shards, {} benchmarks → {} ({:.1} s)",
        summary.samples,
        summary.tokens,
        summary.shards.len(),
        summary.benchmarks.len(),
        summary.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(summary)
}

/// Shows `prepare`'s stages as progress bars (hidden when stderr is not a terminal, where
/// each stage is logged instead).
struct BarProgress {
    current: std::sync::Mutex<Option<ProgressBar>>,
}

impl Progress for BarProgress {
    fn stage(&self, name: &str, total: u64) {
        tracing::info!("{name}");
        let mut cur = self.current.lock().expect("progress lock");
        if let Some(pb) = cur.take() {
            pb.finish_and_clear();
        }
        let unit = if name.starts_with("reading") {
            "bytes"
        } else {
            "items"
        };
        let pb = if total == 0 {
            let pb = ProgressBar::new_spinner();
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        } else {
            bar(total, unit)
        };
        pb.set_message(name.to_string());
        *cur = Some(pb);
    }

    fn advance(&self, done: u64) {
        if let Some(pb) = self.current.lock().expect("progress lock").as_ref() {
            pb.set_position(done);
        }
    }
}

impl BarProgress {
    fn new() -> Self {
        Self {
            current: std::sync::Mutex::new(None),
        }
    }

    fn finish(&self) {
        if let Some(pb) = self.current.lock().expect("progress lock").take() {
            pb.finish_and_clear();
        }
    }
}

fn resolve_prepare(a: &PrepareArgs) -> Result<PrepareConfig> {
    let mut cfg = load_config(a.config.as_deref())?.prepare;
    if let Some(v) = a.k {
        cfg.k = v;
    }
    if let Some(m) = &a.metric {
        cfg.metric = serde_json::from_value(serde_json::Value::String(m.clone()))
            .with_context(|| format!("--metric {m:?}: expected cosine or euclidean"))?;
    }
    if let Some(v) = a.restarts {
        cfg.restarts = v;
    }
    if let Some(v) = a.fit_sample {
        cfg.fit_sample = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(v) = a.on_error {
        cfg.on_error = v;
    }
    if a.vocab_size.is_some() {
        cfg.vocab_size = a.vocab_size;
    }
    let paths = [
        (&mut cfg.image_root, &a.image_root),
        (&mut cfg.tokenizer, &a.tokenizer),
        (&mut cfg.task_map, &a.task_map),
        (&mut cfg.embeddings, &a.embeddings),
    ];
    for (slot, flag) in paths {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    }
    if a.source.is_some() {
        cfg.source = a.source;
    }
    if a.image_token.is_some() {
        cfg.image_token.clone_from(&a.image_token);
    }
    if a.image_rows.is_some() {
        cfg.image_rows = a.image_rows;
    }
    Ok(cfg)
}

/// `prepare`: the cell corpus from raw samples.
pub fn run_prepare(a: PrepareArgs) -> Result<PrepareReport> {
    let cfg = resolve_prepare(&a)?;
    // One writer per corpus, held until the finished corpus is renamed into place.
    let _lock = DirLock::acquire_sibling(&a.out, a.force_unlock)?;
    prepare_with(&a.input, &a.out, &cfg, a.centroids.as_deref(), a.force)
}

/// Prepares `input` into the corpus `out` with progress bars and prints the report.
pub fn prepare_with(
    input: &Path,
    out: &Path,
    cfg: &PrepareConfig,
    centroids: Option<&Path>,
    force: bool,
) -> Result<PrepareReport> {
    let progress = BarProgress::new();
    let report = prepare::prepare(input, out, cfg, centroids, force, &progress)
        .with_context(|| format!("prepare {} → {}", input.display(), out.display()))?;
    progress.finish();
    print_prepare_report(&report);
    Ok(report)
}

fn print_prepare_report(r: &PrepareReport) {
    let c = &r.clustering;
    println!(
        "prepare: {} documents, {} tokens in {} cells → {} ({:.1} s)",
        r.documents,
        r.tokens,
        r.cells,
        r.out.display(),
        r.seconds
    );
    if r.skipped > 0 {
        println!("  skipped {} malformed lines, first:", r.skipped);
        for e in &r.first_errors {
            println!("    {e}");
        }
    }
    if c.inertia.is_finite() {
        println!(
            "  k-means ({}): k = {}, inertia {:.4} on {} sampled embeddings",
            c.metric,
            c.sizes.len(),
            c.inertia,
            c.fit_sample
        );
    } else {
        println!(
            "  assigned to existing centroids ({}), k = {}",
            c.metric,
            c.sizes.len()
        );
    }
    println!("  cluster sizes: {:?}", c.sizes);
    match (c.adjusted_rand_index, c.purity) {
        (Some(ari), Some(p)) => {
            println!("  against ground-truth concepts: adjusted Rand index {ari:.4}, purity {p:.4}")
        }
        _ => println!("  (no ground-truth concept labels: ARI and purity not computed)"),
    }
    if !r.empty_cells.is_empty() {
        println!(
            "  {} empty cells left out: {}",
            r.empty_cells.len(),
            r.empty_cells.join(", ")
        );
    }
    if !r.benchmarks.is_empty() {
        let list: Vec<String> = r
            .benchmarks
            .iter()
            .map(|(n, d)| format!("{n} ({d})"))
            .collect();
        println!("  benchmarks: {}", list.join(", "));
    }
}

/// `inspect`: a corpus directory or a bare Megatron prefix.
pub fn run_inspect(a: InspectArgs) -> Result<()> {
    if a.path.join(mixatlas::data::corpus::MANIFEST_FILE).is_file() {
        inspect_corpus(&a)
    } else {
        inspect_prefix(&a)
    }
}

fn doc_json(
    store: &DocumentStore,
    d: usize,
    vocab: Option<&[String]>,
) -> Result<serde_json::Value> {
    if d >= store.documents() {
        bail!(
            "document {d} out of range: the dataset has {} documents",
            store.documents()
        );
    }
    let tokens = store.tokens.document(d)?;
    let mut v = serde_json::json!({
        "document": d,
        "length": tokens.len(),
        "tokens": tokens,
    });
    if let Some(m) = store.mask(d) {
        v["loss_mask"] = serde_json::json!(m);
    }
    if let Some(img) = store.image_f32(d) {
        v["image"] = serde_json::json!(img);
    }
    if let Some(vocab) = vocab {
        let text: Vec<&str> = tokens
            .iter()
            .map(|&t| vocab.get(t as usize).map_or("<unk>", |s| s.as_str()))
            .collect();
        v["text"] = serde_json::json!(text.join(" "));
    }
    Ok(v)
}

fn inspect_corpus(a: &InspectArgs) -> Result<()> {
    let corpus =
        Corpus::open(&a.path).with_context(|| format!("opening corpus {}", a.path.display()))?;
    let m = &corpus.manifest;
    let vocab: Option<Vec<String>> = m.vocab.as_ref().and_then(|v| {
        std::fs::read_to_string(a.path.join(v))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    });
    if let Some(d) = a.doc {
        return print_corpus_doc(a, &corpus, d, vocab.as_deref());
    }
    if a.verify {
        verify_corpus(a, &corpus)?;
    }
    if a.json {
        return print_corpus_json(a, &corpus);
    }
    print_corpus_text(a, &corpus);
    Ok(())
}

/// `inspect --doc N` on a corpus: document N of `--cell` or `--benchmark` as JSON.
fn print_corpus_doc(
    a: &InspectArgs,
    corpus: &Corpus,
    d: usize,
    vocab: Option<&[String]>,
) -> Result<()> {
    let m = &corpus.manifest;
    let (store, what) = match (&a.cell, &a.benchmark) {
        (Some(c), None) => {
            let i = m.cell_index(c).with_context(|| {
                let names: Vec<&str> = m
                    .cells
                    .iter()
                    .take(5)
                    .map(|c| c.data.name.as_str())
                    .collect();
                format!(
                    "no cell {c:?} in {} (cells look like {})",
                    a.path.display(),
                    names.join(", ")
                )
            })?;
            (&corpus.cells[i], c.clone())
        }
        (None, Some(b)) => {
            let i = m
                .benchmarks
                .iter()
                .position(|x| &x.name == b)
                .with_context(|| format!("no benchmark {b:?} in {}", a.path.display()))?;
            (&corpus.benchmarks[i], b.clone())
        }
        _ => bail!("--doc needs exactly one of --cell CONCEPT/TASK or --benchmark NAME"),
    };
    let mut v = doc_json(store, d, vocab)?;
    v["dataset"] = serde_json::json!(what);
    if a.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

/// `inspect --verify` on a corpus: recomputes every checksum of the manifest.
fn verify_corpus(a: &InspectArgs, corpus: &Corpus) -> Result<()> {
    let total = corpus.checksummed_bytes();
    let pb = bar(total, "bytes");
    pb.set_message("verifying");
    let mut done = 0;
    let n = corpus
        .verify(|b| {
            done += b;
            pb.set_position(done);
        })
        .context("verification failed")?;
    pb.finish_and_clear();
    if !a.json {
        println!("verify: {n} files, {total} bytes: all checksums match");
    }
    Ok(())
}

/// `inspect --json` on a corpus: the manifest's figures as one JSON object.
fn print_corpus_json(a: &InspectArgs, corpus: &Corpus) -> Result<()> {
    let m = &corpus.manifest;
    let total_tokens: u64 = m.cells.iter().map(|c| c.data.tokens).sum();
    let total_docs: u64 = m.cells.iter().map(|c| c.data.documents).sum();
    let cells: Vec<serde_json::Value> = m
        .cells
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.data.name, "documents": c.data.documents, "tokens": c.data.tokens,
                "loss_tokens": c.data.loss_tokens,
                "token_share": c.data.tokens as f64 / total_tokens.max(1) as f64,
            })
        })
        .collect();
    let v = serde_json::json!({
        "path": a.path, "dtype": m.token_dtype.name(), "vocab_size": m.vocab_size,
        "concepts": m.axes.concepts, "tasks": m.axes.tasks, "documents": total_docs,
        "tokens": total_tokens, "cells": cells, "image": m.image,
        "clustering": m.clustering, "verified": a.verify,
        "benchmarks": m.benchmarks.iter().map(|b| serde_json::json!({"name": b.name, "documents": b.documents, "tokens": b.tokens})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `inspect` on a corpus: the summary, the token-share grid and the per-cell table.
fn print_corpus_text(a: &InspectArgs, corpus: &Corpus) {
    let m = &corpus.manifest;
    let total_tokens: u64 = m.cells.iter().map(|c| c.data.tokens).sum();
    let total_docs: u64 = m.cells.iter().map(|c| c.data.documents).sum();
    println!(
        "corpus {} (format {} v{})",
        a.path.display(),
        m.format,
        m.version
    );
    println!(
        "  {} documents, {} tokens ({}), vocab {}, {} concepts × {} tasks, {} non-empty cells",
        total_docs,
        total_tokens,
        m.token_dtype,
        m.vocab_size,
        m.axes.concepts.len(),
        m.axes.tasks.len(),
        m.cells.len()
    );
    if let Some(img) = &m.image {
        println!(
            "  image features: {} patches × {} ({})",
            img.patches, img.dim, img.dtype
        );
    }
    let c = &m.clustering;
    print!(
        "  concepts: k-means ({}) over {}-d embeddings",
        c.metric, c.embedding_dim
    );
    if let Some(ari) = c.adjusted_rand_index {
        print!(", ARI {ari:.4}");
    }
    if let Some(p) = c.purity {
        print!(", purity {p:.4}");
    }
    println!();
    print_share_grid(m, total_tokens);
    println!(
        "\n  {:<28} {:>9} {:>11} {:>11}",
        "cell", "documents", "tokens", "loss tokens"
    );
    for cell in &m.cells {
        println!(
            "  {:<28} {:>9} {:>11} {:>11}",
            cell.data.name, cell.data.documents, cell.data.tokens, cell.data.loss_tokens
        );
    }
    if !m.benchmarks.is_empty() {
        println!("\n  benchmarks:");
        for b in &m.benchmarks {
            println!("  {:<28} {:>9} {:>11}", b.name, b.documents, b.tokens);
        }
    }
}

/// The token share of every cell in percent, concepts × tasks, with row totals.
fn print_share_grid(m: &Manifest, total_tokens: u64) {
    println!("\n  token share by cell (%), concepts × tasks:");
    print!("  {:>8}", "");
    for t in &m.axes.tasks {
        print!(" {:>11}", t);
    }
    println!(" {:>9}", "total");
    for (ci, cname) in m.axes.concepts.iter().enumerate() {
        print!("  {cname:>8}");
        let mut row = 0u64;
        for ti in 0..m.axes.tasks.len() {
            match m.cells.iter().find(|x| x.concept == ci && x.task == ti) {
                Some(cell) => {
                    row += cell.data.tokens;
                    print!(
                        " {:>11.2}",
                        100.0 * cell.data.tokens as f64 / total_tokens.max(1) as f64
                    )
                }
                None => print!(" {:>11}", "-"),
            }
        }
        println!(" {:>9.2}", 100.0 * row as f64 / total_tokens.max(1) as f64);
    }
}

fn inspect_prefix(a: &InspectArgs) -> Result<()> {
    let ds = IndexedDataset::open(&a.path).with_context(|| {
        format!(
            "{} is neither a corpus directory (no manifest.json) nor a readable Megatron prefix",
            a.path.display()
        )
    })?;
    if a.verify {
        // A bare prefix has no recorded checksums: opening it already validated the structure.
        println!(
            "verify: no manifest with checksums; structure of {} is valid",
            a.path.display()
        );
    }
    if let Some(d) = a.doc {
        if d >= ds.documents() {
            bail!(
                "document {d} out of range: {} has {} documents",
                a.path.display(),
                ds.documents()
            );
        }
        let tokens = ds.document(d)?;
        let v = serde_json::json!({"document": d, "length": tokens.len(), "tokens": tokens});
        println!(
            "{}",
            if a.json {
                serde_json::to_string(&v)?
            } else {
                serde_json::to_string_pretty(&v)?
            }
        );
        return Ok(());
    }
    let n = ds.documents();
    let (mut min, mut max) = (usize::MAX, 0usize);
    for d in 0..n {
        let l = ds.document_len(d);
        min = min.min(l);
        max = max.max(l);
    }
    let mean = ds.tokens() as f64 / n.max(1) as f64;
    if a.json {
        let v = serde_json::json!({
            "prefix": a.path, "dtype": ds.dtype().name(), "dtype_code": ds.dtype().code(),
            "sequences": ds.sequences(), "documents": n, "tokens": ds.tokens(),
            "min_length": if n == 0 { 0 } else { min }, "max_length": max, "mean_length": mean,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("megatron dataset {}", a.path.display());
        println!(
            "  dtype {} (code {}), {} sequences, {} documents, {} tokens",
            ds.dtype(),
            ds.dtype().code(),
            ds.sequences(),
            n,
            ds.tokens()
        );
        if n > 0 {
            println!("  document length: min {min}, mean {mean:.1}, max {max}");
        }
    }
    Ok(())
}
