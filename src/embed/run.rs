//! `embed`: the [`ClipEmbedder`] (checkpoint directory → tower + preprocessing) and
//! [`embed_to_dir`], which embeds a stream of images into an embedding directory part by part
//! (docs/real-data.md): each batch decoded and preprocessed over the rayon pool, run through
//! the tower, each part written atomically and then listed in `embed.json`. A rerun checks the
//! settings, skips the complete parts (checking their ids against the input) and goes on.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::config::{ClipVisionConfig, Preprocess, ResizeTo};
use super::error::EmbedError;
use super::features::FeatureSpec;
use super::npy;
use super::output::{part_paths, read_ids, EmbedManifest, PartEntry, SkippedItem, FORMAT};
use super::preprocess::{decode_rgb, preprocess, Pixels};
use super::source::ImageItem;
use super::tower::{pool_patches, ClipVision};
use crate::fsutil::lock::{DirLock, LockError};
use crate::fsutil::{write_atomic, IoContext};

/// A CLIP checkpoint ready to embed images.
#[derive(Debug)]
pub struct ClipEmbedder {
    tower: ClipVision,
    preprocess: Preprocess,
    model_dir: PathBuf,
    config_hash: String,
}

impl ClipEmbedder {
    /// Loads `dir`: `config.json`, `preprocessor_config.json`, `model.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, EmbedError> {
        let cfg_path = dir.join("config.json");
        let pre_path = dir.join("preprocessor_config.json");
        let st_path = dir.join("model.safetensors");
        let cfg_text = std::fs::read(&cfg_path).at("reading", &cfg_path)?;
        let pre_text = std::fs::read(&pre_path).at("reading", &pre_path)?;
        let cfg = ClipVisionConfig::parse(&String::from_utf8_lossy(&cfg_text), &cfg_path)?;
        let pre = Preprocess::parse(&String::from_utf8_lossy(&pre_text), &pre_path)?;
        check_output_size(&cfg, &pre, &pre_path)?;
        let file = std::fs::File::open(&st_path).at("opening", &st_path)?;
        // SAFETY: the checkpoint is read-only input; a concurrent writer would be a user error,
        // as for every mmap'd checkpoint reader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.at("mapping", &st_path)?;
        let tower = ClipVision::load(&cfg, &mmap, &st_path, device)?;
        let mut h = Sha256::new();
        for part in [&cfg_text[..], &pre_text[..], &mmap[..]] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Ok(ClipEmbedder {
            tower,
            preprocess: pre,
            model_dir: dir.to_path_buf(),
            config_hash: format!("{:x}", h.finalize()),
        })
    }

    /// The tower's configuration.
    pub fn config(&self) -> &ClipVisionConfig {
        self.tower.config()
    }

    /// The preprocessing settings.
    pub fn preprocess_settings(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Width `D` of the embeddings.
    pub fn dim(&self) -> usize {
        self.config().projection_dim
    }

    /// SHA-256 over the checkpoint's three files.
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// Reads, decodes and preprocesses one image.
    pub fn prepare(&self, item: &ImageItem) -> Result<Pixels, EmbedError> {
        let bytes = item.load()?;
        let rgb = decode_rgb(&bytes, &item.id, &item.origin)?;
        Ok(preprocess(&rgb, &self.preprocess))
    }

    /// Embeds preprocessed images: `[n·D]` embeddings and, unless `features` is none,
    /// `[n·P·F]` feature rows.
    pub fn embed_pixels(
        &self,
        pixels: &[Pixels],
        features: FeatureSpec,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), EmbedError> {
        let s = self.config().image_size;
        if pixels.is_empty() {
            return Ok((Vec::new(), features.shape(1, 1).map(|_| Vec::new())));
        }
        let mut flat = Vec::with_capacity(pixels.len() * 3 * s * s);
        for p in pixels {
            flat.extend_from_slice(&p.data);
        }
        let x = Tensor::from_vec(flat, (pixels.len(), 3, s, s), self.tower.device())?;
        let out = self.tower.forward(&x)?;
        let embeds = out.image_embeds.flatten_all()?.to_vec1::<f32>()?;
        let feats = match features {
            FeatureSpec::None => None,
            FeatureSpec::Pooled => Some(embeds.clone()),
            FeatureSpec::Patches(rows) => {
                let (n, t, h) = out.last_hidden.dims3()?;
                let hidden = out.last_hidden.narrow(1, 1, t - 1)?.contiguous()?;
                let hidden = hidden.flatten_all()?.to_vec1::<f32>()?;
                let grid = self.config().grid();
                let per: Vec<Vec<f32>> = (0..n)
                    .into_par_iter()
                    .map(|i| {
                        pool_patches(
                            &hidden[i * (t - 1) * h..(i + 1) * (t - 1) * h],
                            grid,
                            h,
                            rows,
                        )
                    })
                    .collect();
                Some(per.concat())
            }
        };
        Ok((embeds, feats))
    }
}

/// The processed image must be the tower's `image_size` square.
fn check_output_size(
    cfg: &ClipVisionConfig,
    pre: &Preprocess,
    path: &Path,
) -> Result<(), EmbedError> {
    let s = cfg.image_size;
    let (field, size) = match (pre.crop, pre.resize) {
        (Some(c), _) => ("crop_size", Some(c)),
        (None, Some(ResizeTo::Exact { height, width })) => ("size", Some((height, width))),
        _ => ("do_center_crop", None),
    };
    match size {
        Some((h, w)) if (h, w) == (s, s) => Ok(()),
        Some((h, w)) => Err(EmbedError::config(
            path,
            field,
            format!("{h}×{w}, the tower's image_size is {s}"),
        )),
        None => Err(EmbedError::config(
            path,
            field,
            format!("without a center crop or an exact resize the image is not {s}×{s}"),
        )),
    }
}

/// What to do with an image that cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with the error (default).
    #[default]
    Fail,
    /// Leave it out, recorded in its part's `skipped` list in `embed.json`.
    Skip,
}

/// Settings of [`embed_to_dir`].
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Images per forward pass.
    pub batch: usize,
    /// Input items per part.
    pub part_size: usize,
    /// Per-image feature rows to write.
    pub features: FeatureSpec,
    /// Bad images: fail or skip.
    pub on_error: OnError,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbedSummary {
    /// Parts complete at the end.
    pub parts: usize,
    /// Parts that were already complete (resumed past).
    pub resumed_parts: usize,
    /// Images embedded by this run.
    pub embedded: usize,
    /// Items skipped by this run (`--on-error skip`).
    pub skipped: usize,
}

impl From<LockError> for EmbedError {
    fn from(e: LockError) -> Self {
        EmbedError::Source(Box::new(e))
    }
}

fn manifest_for(emb: &ClipEmbedder, opts: &EmbedOptions) -> Result<EmbedManifest, EmbedError> {
    let cfg = emb.config();
    let (p, f) = opts
        .features
        .shape(cfg.projection_dim, cfg.hidden_size)
        .unwrap_or((0, 0));
    if let FeatureSpec::Patches(rows) = opts.features {
        if rows > cfg.num_patches() {
            return Err(EmbedError::Setting {
                field: "features",
                value: opts.features.to_string(),
                reason: format!("the tower has {} patch tokens", cfg.num_patches()),
            });
        }
    }
    for (field, v) in [("batch", opts.batch), ("part_size", opts.part_size)] {
        if v == 0 {
            return Err(EmbedError::Setting {
                field,
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
    }
    Ok(EmbedManifest {
        format: FORMAT.into(),
        model_dir: emb.model_dir.display().to_string(),
        config_hash: emb.config_hash.clone(),
        dim: emb.dim(),
        features: opts.features.to_string(),
        feature_rows: p,
        feature_dim: f,
        part_size: opts.part_size,
        parts: Vec::new(),
        finished: false,
    })
}

/// Checks that `old` (on disk) was written with `new`'s settings; returns its parts.
fn check_resume(dir: &Path, old: &EmbedManifest, new: &EmbedManifest) -> Result<(), EmbedError> {
    let mismatch = |field: &'static str, found: String, expected: String| {
        Err(EmbedError::ResumeMismatch {
            path: dir.join(super::output::MANIFEST),
            field,
            found,
            expected,
        })
    };
    if old.config_hash != new.config_hash {
        return mismatch(
            "config_hash (the checkpoint)",
            format!("{} ({})", old.config_hash, old.model_dir),
            format!("{} ({})", new.config_hash, new.model_dir),
        );
    }
    if old.features != new.features {
        return mismatch("features", old.features.clone(), new.features.clone());
    }
    if old.part_size != new.part_size {
        return mismatch(
            "part_size",
            old.part_size.to_string(),
            new.part_size.to_string(),
        );
    }
    if (old.dim, old.feature_rows, old.feature_dim) != (new.dim, new.feature_rows, new.feature_dim)
    {
        return mismatch(
            "dim",
            format!("{}/{}x{}", old.dim, old.feature_rows, old.feature_dim),
            format!("{}/{}x{}", new.dim, new.feature_rows, new.feature_dim),
        );
    }
    Ok(())
}

/// Takes up to `n` items from `items`.
fn take_items(
    items: &mut dyn Iterator<Item = Result<ImageItem, EmbedError>>,
    n: usize,
) -> Result<Vec<ImageItem>, EmbedError> {
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for item in items.take(n) {
        out.push(item?);
    }
    Ok(out)
}

/// Skips the input items of a complete part, checking them against its ids file.
fn skip_part(dir: &Path, entry: &PartEntry, chunk: &[ImageItem]) -> Result<(), EmbedError> {
    let (_, ids_path, _) = part_paths(dir, entry.index);
    let ids = read_ids(dir, entry.index)?;
    let skipped: std::collections::HashSet<&str> =
        entry.skipped.iter().map(|s| s.id.as_str()).collect();
    let kept = chunk.iter().filter(|it| !skipped.contains(it.id.as_str()));
    let mut line = 0;
    for item in kept {
        line += 1;
        match ids.get(line - 1) {
            Some(id) if *id == item.id => {}
            found => {
                return Err(EmbedError::ResumeIds {
                    path: ids_path,
                    line,
                    found: found.cloned().unwrap_or_else(|| "(end of file)".into()),
                    expected: item.id.clone(),
                })
            }
        }
    }
    if chunk.len() != entry.items || line != ids.len() {
        return Err(EmbedError::BadPart {
            path: ids_path,
            reason: format!(
                "the part covers {} input items ({} rows); the input now gives {} there",
                entry.items,
                ids.len(),
                chunk.len()
            ),
        });
    }
    Ok(())
}

/// Embeds one part's items and writes its files; returns its manifest entry.
fn write_part(
    emb: &ClipEmbedder,
    dir: &Path,
    index: usize,
    chunk: &[ImageItem],
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<PartEntry, EmbedError> {
    let mut ids = Vec::with_capacity(chunk.len());
    let mut embeds = Vec::new();
    let mut feats = Vec::new();
    let mut skipped = Vec::new();
    for batch in chunk.chunks(opts.batch) {
        let prepared: Vec<Result<Pixels, EmbedError>> =
            batch.par_iter().map(|it| emb.prepare(it)).collect();
        let mut pixels = Vec::with_capacity(batch.len());
        for (item, r) in batch.iter().zip(prepared) {
            match r {
                Ok(p) => {
                    ids.push(item.id.clone());
                    pixels.push(p);
                }
                Err(e) if opts.on_error == OnError::Skip => {
                    tracing::warn!("skipping {}: {e}", item.origin);
                    skipped.push(SkippedItem {
                        id: item.id.clone(),
                        origin: item.origin.clone(),
                        error: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let (e, f) = emb.embed_pixels(&pixels, opts.features)?;
        embeds.extend_from_slice(&e);
        if let Some(f) = f {
            feats.extend_from_slice(&f);
        }
        progress(batch.len() as u64);
    }
    let rows = ids.len();
    let (npy_path, ids_path, feat_path) = part_paths(dir, index);
    if let Some((p, f)) = opts.features.shape(emb.dim(), emb.config().hidden_size) {
        write_atomic(&feat_path, &npy::encode_f16(&[rows, p, f], &feats))?;
    }
    let mut text = ids.join("\n");
    if rows > 0 {
        text.push('\n');
    }
    write_atomic(&ids_path, text.as_bytes())?;
    write_atomic(&npy_path, &npy::encode_f32(&[rows, emb.dim()], &embeds))?;
    Ok(PartEntry {
        index,
        rows,
        items: chunk.len(),
        skipped,
    })
}

/// Embeds `items` into the directory `out` (created if missing; resumed if it holds parts
/// written with the same checkpoint and settings). `progress` is called with the number of
/// items done since the last call (resumed items included).
pub fn embed_to_dir(
    emb: &ClipEmbedder,
    items: &mut dyn Iterator<Item = Result<ImageItem, EmbedError>>,
    out: &Path,
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<EmbedSummary, EmbedError> {
    let mut manifest = manifest_for(emb, opts)?;
    std::fs::create_dir_all(out).at("creating", out)?;
    let _lock = DirLock::acquire(out, false)?;
    let mut summary = EmbedSummary::default();
    if let Some(old) = EmbedManifest::read_opt(out)? {
        check_resume(out, &old, &manifest)?;
        for entry in &old.parts {
            let chunk = take_items(items, entry.items)?;
            skip_part(out, entry, &chunk)?;
            progress(chunk.len() as u64);
        }
        summary.resumed_parts = old.parts.len();
        manifest.parts = old.parts;
    }
    loop {
        let chunk = take_items(items, opts.part_size)?;
        if chunk.is_empty() {
            break;
        }
        let index = manifest.parts.len();
        let entry = write_part(emb, out, index, &chunk, opts, progress)?;
        summary.embedded += entry.rows;
        summary.skipped += entry.skipped.len();
        manifest.parts.push(entry);
        manifest.write(out)?;
    }
    manifest.finished = true;
    manifest.write(out)?;
    summary.parts = manifest.parts.len();
    Ok(summary)
}
