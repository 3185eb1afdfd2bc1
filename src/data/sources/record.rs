//! The record every real-format reader yields, where it came from, and what can be wrong with
//! it.
//!
//! A record is one conversation about at most one image: LLaVA's `id`, `image` and
//! `conversations`, with an optional `task`. Readers yield each record with its
//! [`Location`] (`file:line` for JSONL, `file#element N` for a JSON array, 0-based like
//! Python's `data[N]`, `shard:key` for WebDataset) so every message can name it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chat::{Role, Turn, IMAGE_MARKER};
use crate::fsutil::{IoContext, PathIoError};

/// Which kind of files `prepare` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// MixAtlas's own raw JSONL (token ids, `clip`, image features): [`super::super::raw`].
    #[default]
    Raw,
    /// LLaVA-style JSON (one top-level array) or JSONL (one record per line).
    Llava,
    /// WebDataset tar shards.
    Webdataset,
}

impl SourceKind {
    /// The file extensions this kind reads.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            SourceKind::Raw => &["jsonl"],
            SourceKind::Llava => &["json", "jsonl"],
            SourceKind::Webdataset => &["tar"],
        }
    }

    /// The kind a file's extension implies: `.tar` → WebDataset, `.json` → LLaVA, anything
    /// else → raw (so an input that does not say keeps today's behaviour).
    pub fn infer(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("tar") => SourceKind::Webdataset,
            Some("json") => SourceKind::Llava,
            _ => SourceKind::Raw,
        }
    }
}

/// One sample of a real-format source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The sample id (LLaVA's `id`, a WebDataset key), the key into id-keyed embeddings.
    pub id: Option<String>,
    /// The image: a path relative to the image root (LLaVA) or the shard member (WebDataset).
    pub image: Option<String>,
    /// The conversation.
    pub turns: Vec<Turn>,
    /// The task, when the record says it.
    pub task: Option<String>,
}

impl Record {
    /// The dataset a LLaVA image path names: its first component (`coco` of
    /// `coco/train2017/1.jpg`), as LLaVA's mixtures lay out their images.
    pub fn dataset(&self) -> Option<&str> {
        let image = self.image.as_deref()?;
        let (first, _) = image.split_once('/')?;
        (!first.is_empty()).then_some(first)
    }
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Line `line` (1-based) of a JSONL file.
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
    },
    /// Element `index` (0-based) of a JSON file's top-level array.
    Element {
        /// The file.
        path: PathBuf,
        /// 0-based position in the array.
        index: u64,
    },
    /// The members named `key.*` of a WebDataset shard.
    Key {
        /// The shard.
        shard: PathBuf,
        /// The sample key.
        key: String,
    },
}

impl Location {
    /// The file the record is in.
    pub fn file(&self) -> &Path {
        match self {
            Location::Line { path, .. } | Location::Element { path, .. } => path,
            Location::Key { shard, .. } => shard,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line { path, line } => write!(f, "{}:{line}", path.display()),
            Location::Element { path, index } => write!(f, "{}#element {index}", path.display()),
            Location::Key { shard, key } => write!(f, "{}:{key}", shard.display()),
        }
    }
}

/// One record as a reader yields it.
#[derive(Debug)]
pub struct Item {
    /// Where it is.
    pub location: Location,
    /// The record, or why the text is not one.
    pub record: Result<Record, RecordProblem>,
    /// Bytes of the file read so far (for progress).
    pub bytes: u64,
}

impl Record {
    /// Checks the conversation against the image: at least one assistant turn; with an image,
    /// exactly one `<image>` marker (one is put in front of the first user turn, followed by
    /// a newline, when there is none, as LLaVA's preprocessing does); without one, none.
    pub fn check_image_marker(&mut self) -> Result<(), RecordProblem> {
        let id = || self.id.clone();
        if !self.turns.iter().any(|t| t.role == Role::Assistant) {
            return Err(RecordProblem::NoAnswer { id: id() });
        }
        let count: usize = self
            .turns
            .iter()
            .map(|t| t.text.matches(IMAGE_MARKER).count())
            .sum();
        match (self.image.is_some(), count) {
            (false, 0) | (true, 1) => Ok(()),
            (false, _) => Err(RecordProblem::MarkerWithoutImage { id: id() }),
            (true, 0) => {
                let first_user = self.turns.iter_mut().find(|t| t.role == Role::User);
                match first_user {
                    Some(t) => {
                        t.text = format!("{IMAGE_MARKER}\n{}", t.text);
                        Ok(())
                    }
                    None => Err(RecordProblem::Missing {
                        field: "conversations[…] with \"from\": \"human\" (the turn the image belongs to)",
                        id: id(),
                    }),
                }
            }
            (true, count) => Err(RecordProblem::ManyMarkers { count, id: id() }),
        }
    }
}

/// How a record names itself in messages: ` (id …)`, or nothing.
fn show_id(id: &Option<String>) -> String {
    id.as_ref()
        .map_or(String::new(), |i| format!(" (id {i:?})"))
}

/// Why one record cannot become a sample. Every message names the field or member, the value
/// found and what was expected; the record's [`Location`] is put in front by
/// [`SourceError::Record`].
#[derive(Debug, thiserror::Error)]
pub enum RecordProblem {
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The JSON is not an object.
    #[error("the record is a JSON {found}; expected an object {{\"id\": …, \"image\": …, \"conversations\": […]}}")]
    NotObject {
        /// What was found.
        found: &'static str,
    },
    /// A field has the wrong type or value.
    #[error("field `{field}` is {found}{}; expected {expected}", show_id(id))]
    Field {
        /// The field (`conversations[2].from`, …).
        field: String,
        /// The value found, shortened.
        found: String,
        /// What the field holds.
        expected: &'static str,
        /// The record's id.
        id: Option<String>,
    },
    /// A required field is absent.
    #[error("missing field `{field}`{}", show_id(id))]
    Missing {
        /// The field.
        field: &'static str,
        /// The record's id.
        id: Option<String>,
    },
    /// The conversation has no assistant turn, so nothing to train on.
    #[error("`conversations` has no assistant turn (\"from\": \"gpt\"){}; expected at least one answer to train on", show_id(id))]
    NoAnswer {
        /// The record's id.
        id: Option<String>,
    },
    /// The image marker appears although the record has no image.
    #[error("`{IMAGE_MARKER}` appears in the conversation but the record has no image{}; expected an `image` field (LLaVA) or a KEY.jpg|jpeg|png|webp member (WebDataset)", show_id(id))]
    MarkerWithoutImage {
        /// The record's id.
        id: Option<String>,
    },
    /// More than one image marker.
    #[error(
        "`{IMAGE_MARKER}` appears {count} times{}; expected one image per sample",
        show_id(id)
    )]
    ManyMarkers {
        /// Markers found.
        count: usize,
        /// The record's id.
        id: Option<String>,
    },
    /// A WebDataset key has neither a `.json` nor a `.txt` member.
    #[error("no KEY.json or KEY.txt member (members: {members}); expected the sample's text beside its image")]
    NoText {
        /// The key's members.
        members: String,
    },
    /// A line or a WebDataset member is not UTF-8.
    #[error("{what} is not UTF-8 text")]
    NotUtf8 {
        /// The line or member.
        what: String,
    },
    /// A WebDataset key appears twice, not consecutively.
    #[error("the key appears again after other keys (members must be grouped by key, as WebDataset writes them)")]
    SplitKey,
    /// No task field, and the task map does not name the record's source.
    #[error("no `task` field{} and the task map has none of {tried}; add a `task` field or map one of these names with --task-map", show_id(id))]
    NoTask {
        /// The names looked up in the task map.
        tried: String,
        /// The record's id.
        id: Option<String>,
    },
    /// The task is not a safe label.
    #[error(
        "task {task:?}{} is not a safe label; expected {}",
        show_id(id),
        super::super::label::LABEL_RULE
    )]
    BadTask {
        /// The task found.
        task: String,
        /// The record's id.
        id: Option<String>,
    },
    /// The chat template or the tokenizer failed on this record.
    #[error("{0}")]
    Chat(#[from] super::chat::ChatProblem),
    /// The embeddings have no row for this record.
    #[error("{0}")]
    Embedding(#[from] super::embeddings::LookupProblem),
    /// The sample failed the checks every sample passes (token range, shapes).
    #[error("{0}")]
    Sample(#[from] super::super::raw::LineError),
}

/// A real-format source that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// I/O on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A record is not a valid sample (`--on-error fail`).
    #[error("{location}: {problem}")]
    Record {
        /// Where.
        location: Location,
        /// What is wrong (shown in the message; boxed to keep the error small).
        problem: Box<RecordProblem>,
    },
    /// The JSON file's syntax breaks off; nothing after it can be read.
    #[error("{}: after element {index}: {source}; expected a JSON array of records", path.display())]
    JsonSyntax {
        /// The file.
        path: PathBuf,
        /// Elements read before the break.
        index: u64,
        /// serde_json's error (with line and column).
        source: serde_json::Error,
    },
    /// A tar shard is malformed.
    #[error("{}: not a readable tar archive: {source}", path.display())]
    Tar {
        /// The shard.
        path: PathBuf,
        /// The I/O error of the tar reader.
        source: std::io::Error,
    },
    /// No input files of the kind were found.
    #[error("{}: no {} files found (expected such a file or a directory of them)", path.display(), exts.join(" or ."))]
    NoInput {
        /// The path given.
        path: PathBuf,
        /// The extensions looked for (`.json`, …).
        exts: Vec<String>,
    },
}

/// The input files of `kind` under `path`: the file itself, or the directory's top-level
/// files with the kind's extensions, in name order.
pub fn input_files(path: &Path, kind: SourceKind) -> Result<Vec<PathBuf>, SourceError> {
    let exts = kind.extensions();
    let meta = std::fs::metadata(path).at("reading", path)?;
    let files = if meta.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .at("listing", path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| exts.contains(&e))
            })
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(SourceError::NoInput {
            path: path.to_path_buf(),
            exts: exts.iter().map(|e| format!(".{e}")).collect(),
        });
    }
    Ok(files)
}

/// A JSON value for a message, cut to about 40 characters.
pub(crate) fn short_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
