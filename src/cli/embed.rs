//! `mixatlas embed`: CLIP image embeddings (and per-image features) of an image list or an
//! image directory into a resumable embedding directory (docs/real-data.md).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mixatlas::embed::source::{dir_items, open_images};
use mixatlas::embed::{embed_to_dir, ClipEmbedder, EmbedOptions, FeatureSpec, OnError};

use super::runtime::{bar, device};

/// `--on-error` of `embed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnErrorArg {
    /// Stop at the first image that cannot be read or decoded.
    Fail,
    /// Leave it out (listed under its part's `skipped` in embed.json).
    Skip,
}

/// `mixatlas embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Hugging Face CLIP checkpoint directory: config.json, preprocessor_config.json,
    /// model.safetensors.
    #[arg(long)]
    pub model: PathBuf,
    /// Images: a text file of `id<TAB>path` lines (paths relative to its directory), or a
    /// directory of .png/.jpg/.jpeg/.webp files (id = file stem, sorted).
    #[arg(long)]
    pub images: PathBuf,
    /// Output directory (part-NNNNNN.npy, .ids.txt, .features.npy, embed.json); a rerun
    /// resumes it.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Input images per part (the unit of resumption).
    #[arg(long, default_value_t = 4096)]
    pub part_size: usize,
    /// Per-image features: none, pooled (the embedding, 1 row) or patches:P (P rows of
    /// average-pooled patch tokens of the last hidden state).
    #[arg(long, default_value = "none")]
    pub features: String,
    /// Images that cannot be read or decoded.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnErrorArg,
    /// Compute device: cpu, or cuda (a build with feature cuda-train).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `mixatlas embed`.
pub fn run_embed(a: EmbedArgs) -> Result<()> {
    let features: FeatureSpec = a.features.parse()?;
    let dev = device(&a.device)?;
    let emb = ClipEmbedder::load(&a.model, &dev)
        .with_context(|| format!("loading the CLIP checkpoint {}", a.model.display()))?;
    let total = if a.images.is_dir() {
        dir_items(&a.images)?.len()
    } else {
        let text = std::fs::read_to_string(&a.images)
            .with_context(|| format!("reading {}", a.images.display()))?;
        text.lines().filter(|l| !l.trim().is_empty()).count()
    };
    let mut items = open_images(&a.images)?;
    let opts = EmbedOptions {
        batch: a.batch,
        part_size: a.part_size,
        features,
        on_error: match a.on_error {
            OnErrorArg::Fail => OnError::Fail,
            OnErrorArg::Skip => OnError::Skip,
        },
    };
    let pb = bar(total as u64, "images");
    pb.set_message("embed");
    let summary = embed_to_dir(&emb, &mut items, &a.out, &opts, &mut |n| pb.inc(n))
        .with_context(|| format!("embedding into {}", a.out.display()))?;
    pb.finish_and_clear();
    tracing::info!(
        "embed: {} parts in {} ({} resumed), {} images embedded, {} skipped, D = {}",
        summary.parts,
        a.out.display(),
        summary.resumed_parts,
        summary.embedded,
        summary.skipped,
        emb.dim()
    );
    Ok(())
}
