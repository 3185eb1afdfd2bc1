//! `mixatlas bench embed`: images per second of `embed`'s pipeline (read, decode, preprocess
//! over the rayon pool, then the tower) on a checkpoint and a set of images, after one warm-up
//! batch; the peer is benches/embed_peer.py (transformers on the same checkpoint and images).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mixatlas::embed::source::open_images;
use mixatlas::embed::{ClipEmbedder, FeatureSpec, ImageItem};
use rayon::prelude::*;

use super::runtime::device;

/// `mixatlas bench embed`.
#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    /// Checkpoint directory (as for `embed`).
    #[arg(long)]
    pub model: PathBuf,
    /// Images (as for `embed`).
    #[arg(long)]
    pub images: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Timed passes over the images (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Compute device: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One pass: `(seconds in decode/preprocess, seconds in the tower)`.
fn pass(emb: &ClipEmbedder, items: &[ImageItem], batch: usize) -> Result<(f64, f64)> {
    let (mut prep, mut fwd) = (0.0, 0.0);
    for chunk in items.chunks(batch.max(1)) {
        let t0 = Instant::now();
        let pixels = chunk
            .par_iter()
            .map(|it| emb.prepare(it))
            .collect::<Result<Vec<_>, _>>()?;
        let t1 = Instant::now();
        emb.embed_pixels(&pixels, FeatureSpec::None)?;
        prep += (t1 - t0).as_secs_f64();
        fwd += t1.elapsed().as_secs_f64();
    }
    Ok((prep, fwd))
}

/// Runs `mixatlas bench embed`.
pub fn run(a: EmbedBenchArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let emb = ClipEmbedder::load(&a.model, &dev)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let items = open_images(&a.images)?.collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!items.is_empty(), "{}: no images", a.images.display());
    // Warm-up: one batch (allocator, page cache).
    pass(&emb, &items[..a.batch.min(items.len())], a.batch)?;
    let mut runs = Vec::new();
    for _ in 0..a.repeats.max(1) {
        let t = Instant::now();
        let (prep, fwd) = pass(&emb, &items, a.batch)?;
        runs.push((t.elapsed().as_secs_f64(), prep, fwd));
    }
    runs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (total, prep, fwd) = runs[runs.len() / 2];
    let n = items.len() as f64;
    let threads = rayon::current_num_threads();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "images": items.len(), "batch": a.batch, "threads": threads,
                "seconds": total, "images_per_s": n / total,
                "preprocess_s": prep, "forward_s": fwd,
            })
        );
    } else {
        println!(
            "embed: {} images, batch {}, {threads} threads: {:.2} s, {:.1} images/s (preprocess {:.2} s, tower {:.2} s)",
            items.len(), a.batch, total, n / total, prep, fwd
        );
    }
    Ok(())
}
