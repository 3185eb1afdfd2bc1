//! Real-format records → validated [`RawSample`]s, the form `prepare`'s pipeline takes.
//!
//! Each record is checked (an assistant turn, the image marker), given its task
//! ([`TaskMap`]), its embedding row ([`EmbeddingStore`]), token ids and loss mask
//! ([`ChatTokenizer`]), and its per-image features when the embeddings carry them. Records
//! are read in order and converted in parallel batches; bad ones fail the run or are skipped
//! and counted (`--on-error`), named by their [`Location`].

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::super::raw::{
    check_shapes, LineError, OnError, RawSample, ReadRules, ReadStats, SampleId, Shapes,
};
use super::chat::{ChatError, ChatTokenizer};
use super::embeddings::{EmbeddingError, EmbeddingStore};
use super::llava;
use super::record::{Item, Location, Record, RecordProblem, SourceError, SourceKind};
use super::task_map::{TaskMap, TaskMapError};
use super::webdataset;

/// What `prepare` needs to read a real-format source.
#[derive(Debug, Clone, Copy)]
pub struct SourceOptions<'a> {
    /// LLaVA or WebDataset.
    pub kind: SourceKind,
    /// Directory of `tokenizer.json` (+ `tokenizer_config.json`).
    pub tokenizer: &'a Path,
    /// The image placeholder token (default `<|image_pad|>`).
    pub image_token: Option<&'a str>,
    /// `--task-map`.
    pub task_map: Option<&'a Path>,
    /// `--embeddings`.
    pub embeddings: &'a Path,
    /// Placeholder tokens per image (default: the features' rows `P`, else 1).
    pub image_rows: Option<usize>,
}

/// A real-format source that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The tokenizer.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The embeddings.
    #[error(transparent)]
    Embedding(#[from] EmbeddingError),
    /// The task map.
    #[error(transparent)]
    TaskMap(#[from] TaskMapError),
    /// `--image-rows` disagrees with the features' rows.
    #[error("--image-rows {flag}, but the per-image features of {} have {rows} rows; each image's placeholder tokens take one feature row each", path.display())]
    ImageRows {
        /// The flag.
        flag: usize,
        /// `P` of the features.
        rows: usize,
        /// The embeddings.
        path: PathBuf,
    },
    /// `--image-rows 0`.
    #[error("--image-rows must be at least 1")]
    ZeroImageRows,
}

/// A tokenizer, embeddings and task map, ready to convert records.
#[derive(Debug)]
pub struct RealSource {
    /// Which files.
    pub kind: SourceKind,
    /// The tokenizer and chat template.
    pub tokenizer: ChatTokenizer,
    /// The embeddings (and features).
    pub embeddings: EmbeddingStore,
    /// Tasks by source.
    pub tasks: TaskMap,
    /// Image placeholder tokens per image.
    pub image_rows: usize,
}

impl RealSource {
    /// Loads the tokenizer, the embeddings and the task map.
    pub fn open(o: &SourceOptions<'_>) -> Result<Self, SetupError> {
        let tokenizer = ChatTokenizer::load(o.tokenizer, o.image_token)?;
        let embeddings = EmbeddingStore::open(o.embeddings)?;
        let tasks = match o.task_map {
            Some(p) => TaskMap::load(p)?,
            None => TaskMap::default(),
        };
        let rows = embeddings.features().map(|(p, _)| p);
        let image_rows = match (o.image_rows, rows) {
            (Some(0), _) => return Err(SetupError::ZeroImageRows),
            (Some(flag), Some(rows)) if flag != rows => {
                return Err(SetupError::ImageRows {
                    flag,
                    rows,
                    path: o.embeddings.to_path_buf(),
                })
            }
            (Some(flag), _) => flag,
            (None, Some(rows)) => rows,
            (None, None) => 1,
        };
        Ok(Self {
            kind: o.kind,
            tokenizer,
            embeddings,
            tasks,
            image_rows,
        })
    }

    /// One record as a sample; `position` is its 0-based place among the source's records
    /// (the row in row-order embeddings).
    pub fn convert(
        &self,
        file: &Path,
        mut r: Record,
        position: u64,
    ) -> Result<RawSample, RecordProblem> {
        r.check_image_marker()?;
        let task = self.tasks.task(file, &r)?;
        let row = self.embeddings.row(r.id.as_deref(), position)?;
        let enc = self.tokenizer.encode(&r.turns, self.image_rows)?;
        let id = || SampleId(r.id.clone().map(serde_json::Value::String));
        let clip = self.embeddings.embedding(row);
        if let Some(index) = clip.iter().position(|x| !x.is_finite()) {
            return Err(LineError::ClipNotFinite { index, id: id() }.into());
        }
        let image = match (
            self.embeddings.image_features(row),
            self.embeddings.features(),
        ) {
            (Some(f), Some((p, d))) => {
                if let Some(i) = f.iter().position(|&x| !half::f16::from_f32(x).is_finite()) {
                    return Err(LineError::ImageNotFinite {
                        row: i / d,
                        col: i % d,
                        value: f[i],
                        id: id(),
                    }
                    .into());
                }
                Some((f, p, d))
            }
            _ => None,
        };
        Ok(RawSample {
            task,
            tokens: enc.tokens,
            loss_mask: enc.loss_mask,
            clip,
            image,
            concept: None,
        })
    }

    /// Calls `visit` with every record of `file`, in order.
    fn read_file<E: From<SourceError>>(
        &self,
        file: &Path,
        visit: &mut dyn FnMut(Item) -> Result<(), E>,
    ) -> Result<(), E> {
        match (self.kind, file.extension().and_then(|e| e.to_str())) {
            (SourceKind::Webdataset, _) => webdataset::read_shard(file, visit),
            (_, Some("jsonl")) => llava::read_jsonl(file, visit),
            _ => llava::read_json_array(file, visit),
        }
    }
}

/// The state of a [`read_samples`] pass shared by its batches.
struct Pass<'s, E, S> {
    source: &'s RealSource,
    on_error: OnError,
    shapes: &'s mut Option<Shapes>,
    stats: ReadStats,
    sink: S,
    /// Records seen so far (the next record's position).
    position: u64,
    _e: std::marker::PhantomData<E>,
}

impl<E: From<SourceError>, S: FnMut(RawSample) -> Result<(), E>> Pass<'_, E, S> {
    /// Converts a batch in parallel and hands the samples to the sink in order.
    fn flush(&mut self, batch: &mut Vec<(Item, u64)>) -> Result<(), E> {
        let source = self.source;
        let converted: Vec<(Location, Result<RawSample, RecordProblem>)> = std::mem::take(batch)
            .into_par_iter()
            .map(|(item, position)| {
                let r = item
                    .record
                    .and_then(|rec| source.convert(item.location.file(), rec, position));
                (item.location, r)
            })
            .collect();
        for (location, r) in converted {
            let checked = r.and_then(|s| check_shapes(s, self.shapes).map_err(RecordProblem::from));
            match checked {
                Ok(s) => {
                    self.stats.samples += 1;
                    (self.sink)(s)?;
                }
                Err(problem) => {
                    if self.on_error == OnError::Fail {
                        let problem = Box::new(problem);
                        return Err(SourceError::Record { location, problem }.into());
                    }
                    self.stats.skipped += 1;
                    if self.stats.first_errors.len() < 5 {
                        self.stats
                            .first_errors
                            .push(format!("{location}: {problem}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Streams every record of `files` in order, converts them in parallel batches and calls
/// `sink` for each valid sample; like [`raw::read_samples`](super::super::raw::read_samples)
/// for raw JSONL (`shapes` fixed by the first valid sample, `progress` given bytes read).
/// `stats.samples + stats.skipped` is the number of records read.
pub fn read_samples<E: From<SourceError>>(
    source: &RealSource,
    files: &[PathBuf],
    rules: &ReadRules,
    shapes: &mut Option<Shapes>,
    sink: impl FnMut(RawSample) -> Result<(), E>,
    progress: &dyn Fn(u64),
) -> Result<ReadStats, E> {
    const BATCH: usize = 1024;
    let mut pass = Pass {
        source,
        on_error: rules.on_error,
        shapes,
        stats: ReadStats::default(),
        sink,
        position: 0,
        _e: std::marker::PhantomData,
    };
    let mut done_bytes = 0u64;
    let mut batch: Vec<(Item, u64)> = Vec::with_capacity(BATCH);
    for file in files {
        let mut file_bytes = 0;
        source.read_file::<E>(file, &mut |item: Item| {
            file_bytes = item.bytes;
            let position = pass.position;
            pass.position += 1;
            batch.push((item, position));
            if batch.len() == BATCH {
                pass.flush(&mut batch)?;
                progress(done_bytes + file_bytes);
            }
            Ok(())
        })?;
        pass.flush(&mut batch)?;
        done_bytes += std::fs::metadata(file).map_or(file_bytes, |m| m.len());
        progress(done_bytes);
    }
    pass.stats.bytes = done_bytes;
    Ok(pass.stats)
}
