//! The raw sample format `prepare` reads: one JSON object per line (JSONL).
//!
//! ```json
//! {"id": "s1", "task": "ocr", "tokens": [1, 3, 3, 9, 4, 57, 2], "prompt_len": 5,
//!  "clip": [0.01, -0.2, …], "image": [[…], […]], "concept": "documents"}
//! ```
//!
//! | field | required | meaning |
//! | --- | --- | --- |
//! | `tokens` | yes | token ids (non-negative integers below the vocabulary size, and below 2^31) |
//! | `task` | yes | task label (`captioning`, `ocr`, `grounding`, `detection`, `vqa` or any other [safe label](super::label)) |
//! | `clip` | yes | pooled image embedding; every sample must have the same length |
//! | `prompt_len` *or* `loss_mask` | one of them | loss on `tokens[prompt_len..]`, or a 0/1 mask per token |
//! | `image` | if any sample has it | image patch features, `patches × dim`, the same shape for all, each value within float16's ±65504 |
//! | `concept` | no | ground-truth concept (string or integer), used only to score the clustering |
//! | `id` | no | shown in error messages |
//!
//! Other fields are ignored, so users can keep their own metadata in the file. Errors name the
//! file, the line and the field (never serde's internal type names); `OnError::Skip` skips bad
//! lines and counts them instead.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::label::{check_label, LABEL_RULE};
use crate::fsutil::{IoContext, PathIoError};

/// Token ids are stored at most as Megatron's int32: every id must be below 2^31.
pub const TOKEN_LIMIT: u64 = 1 << 31;

/// The largest finite float16 (image features are stored as float16).
pub const F16_MAX: f32 = 65504.0;

/// What a line is checked against besides its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRules {
    /// What to do with a malformed line.
    pub on_error: OnError,
    /// The vocabulary size, when known before reading: every token id must be below it
    /// (always below [`TOKEN_LIMIT`]).
    pub vocab_size: Option<u32>,
}

impl ReadRules {
    /// The exclusive upper bound of token ids, and what it is.
    fn token_limit(&self) -> (u64, &'static str) {
        match self.vocab_size {
            Some(v) if (v as u64) < TOKEN_LIMIT => (v as u64, "the vocabulary size"),
            _ => (TOKEN_LIMIT, "2^31: Megatron stores tokens as int32"),
        }
    }
}

/// What to do with a malformed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop at the first bad line with an error naming it.
    #[default]
    Fail,
    /// Skip bad lines, count them and report the first few.
    Skip,
}

/// A problem with the raw input.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// I/O on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A line is not a valid sample.
    #[error("{}:{line}: {problem}", path.display())]
    Line {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong and what was expected. Shown in the message, so not a `source`
        /// (the command line prints the source chain after the message).
        problem: LineError,
    },
    /// No input files were found.
    #[error("{}: no .jsonl files found (expected a .jsonl file or a directory of them)", path.display())]
    NoInput {
        /// The path given.
        path: PathBuf,
    },
}

/// The ground-truth concept of a sample, as a name or a number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConceptLabel {
    /// A numeric label.
    Id(u64),
    /// A named label.
    Name(String),
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    id: Option<serde_json::Value>,
    task: Option<String>,
    tokens: Option<Vec<i64>>,
    #[serde(default)]
    prompt_len: Option<i64>,
    #[serde(default)]
    loss_mask: Option<Vec<i64>>,
    clip: Option<Vec<f32>>,
    #[serde(default)]
    image: Option<Vec<Vec<f32>>>,
    #[serde(default)]
    concept: Option<ConceptLabel>,
}

/// A validated raw sample.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    /// Task label.
    pub task: String,
    /// Token ids.
    pub tokens: Vec<u32>,
    /// One byte per token, 1 where the loss applies.
    pub loss_mask: Vec<u8>,
    /// Pooled embedding.
    pub clip: Vec<f32>,
    /// Image features, flattened `patches × dim`, with the shape.
    pub image: Option<(Vec<f32>, usize, usize)>,
    /// Ground-truth concept, if given.
    pub concept: Option<ConceptLabel>,
}

/// How a line names its sample in messages: ` (id …)` after the field, or nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampleId(pub Option<serde_json::Value>);

impl std::fmt::Display for SampleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => write!(f, " (id {v})"),
            None => Ok(()),
        }
    }
}

/// Why one line is not a valid sample (the `problem` of [`RawError::Line`]). Every message
/// names the field, the value found and what was expected; `{id}` is the sample's
/// [`SampleId`].
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is not JSON.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The line is JSON but not an object.
    #[error("the line is a JSON {found}; expected one sample per line as an object {{\"task\": …, \"tokens\": […], \"clip\": […], …}}")]
    NotObject {
        /// What was found (`array`, `number`, …).
        found: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` is {found}{id}; expected {expected}")]
    FieldType {
        /// The field.
        field: &'static str,
        /// The value found, shortened.
        found: String,
        /// What the field holds.
        expected: &'static str,
        /// The sample.
        id: SampleId,
    },
    /// The line is not UTF-8 text.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// A required field is absent.
    #[error("missing field `{field}`{id}")]
    Missing {
        /// The field.
        field: &'static str,
        /// The sample.
        id: SampleId,
    },
    /// `task` is not a safe label ([`super::label`]).
    #[error("field `task` is {task:?}{id}; expected {LABEL_RULE}")]
    Task {
        /// The label found.
        task: String,
        /// The sample.
        id: SampleId,
    },
    /// `tokens` is empty.
    #[error("field `tokens` is empty{id}; expected at least one token")]
    NoTokens {
        /// The sample.
        id: SampleId,
    },
    /// A token id is negative or too large.
    #[error(
        "field `tokens`[{index}] is {value}{id}; expected a token id in 0..{limit} (below {of})"
    )]
    Token {
        /// Position in `tokens`.
        index: usize,
        /// The value found.
        value: i64,
        /// The exclusive upper bound.
        limit: u64,
        /// What the bound is.
        of: &'static str,
        /// The sample.
        id: SampleId,
    },
    /// Both `prompt_len` and `loss_mask` are given.
    #[error("both `prompt_len` and `loss_mask` given{id}; expected exactly one")]
    BothMasks {
        /// The sample.
        id: SampleId,
    },
    /// Neither `prompt_len` nor `loss_mask` is given.
    #[error("missing field `prompt_len` or `loss_mask`{id} (which tokens are trained on)")]
    NoMask {
        /// The sample.
        id: SampleId,
    },
    /// `prompt_len` is negative or leaves no token to train on.
    #[error(
        "field `prompt_len` is {value}{id}; expected 0..{tokens} (less than the {tokens} tokens)"
    )]
    PromptLen {
        /// The value found.
        value: i64,
        /// Number of tokens.
        tokens: usize,
        /// The sample.
        id: SampleId,
    },
    /// `loss_mask` is not one entry per token.
    #[error(
        "field `loss_mask` has {len} entries but `tokens` has {tokens}{id}; expected one per token"
    )]
    MaskLength {
        /// Entries in `loss_mask`.
        len: usize,
        /// Number of tokens.
        tokens: usize,
        /// The sample.
        id: SampleId,
    },
    /// A `loss_mask` entry is neither 0 nor 1.
    #[error("field `loss_mask`[{index}] is {value}{id}; expected 0 or 1")]
    MaskValue {
        /// Position in `loss_mask`.
        index: usize,
        /// The value found.
        value: i64,
        /// The sample.
        id: SampleId,
    },
    /// `clip` is empty.
    #[error("field `clip` is empty{id}; expected the image embedding")]
    EmptyClip {
        /// The sample.
        id: SampleId,
    },
    /// A `clip` value is NaN or infinite.
    #[error("field `clip`[{index}] is not finite{id}")]
    ClipNotFinite {
        /// Position in `clip`.
        index: usize,
        /// The sample.
        id: SampleId,
    },
    /// `image` has no patches or no values.
    #[error("field `image` is empty{id}; expected patches × dim numbers")]
    EmptyImage {
        /// The sample.
        id: SampleId,
    },
    /// `image` rows differ in length.
    #[error(
        "field `image` row {row} has {len} values, row 0 has {dim}{id}; expected a rectangular patches × dim array"
    )]
    RaggedImage {
        /// The row.
        row: usize,
        /// Its length.
        len: usize,
        /// The length of row 0.
        dim: usize,
        /// The sample.
        id: SampleId,
    },
    /// An `image` value is NaN, infinite or beyond float16's range.
    #[error("field `image`[{row}][{col}] is {value}{id}; expected a finite number within ±65504 (image features are stored as float16)")]
    ImageNotFinite {
        /// The row.
        row: usize,
        /// The column.
        col: usize,
        /// The value found.
        value: f32,
        /// The sample.
        id: SampleId,
    },
    /// `clip` has another length than the first sample's.
    #[error("field `clip` has {got} values; expected {want} like the first sample")]
    ClipDim {
        /// Length found.
        got: usize,
        /// Length of the first sample's.
        want: usize,
    },
    /// `image` has another shape than the first sample's (or one has none).
    #[error("field `image` is {}; expected {} like the first sample", show_image(*got), show_image(*want))]
    ImageShape {
        /// `(patches, dim)` found, `None` for no image.
        got: Option<(usize, usize)>,
        /// The first sample's.
        want: Option<(usize, usize)>,
    },
}

fn show_image(x: Option<(usize, usize)>) -> String {
    x.map_or("no image".to_string(), |(p, d)| format!("{p} × {d}"))
}

/// Parses and validates one line (without cross-line shape checks); token ids must be below
/// `token_limit` (see [`ReadRules`]).
pub fn parse_line(text: &str, rules: &ReadRules) -> Result<RawSample, LineError> {
    let w: Wire = serde_json::from_str(text).map_err(|e| shape_error(text, e))?;
    let id = SampleId(w.id);
    let missing = |field: &'static str| LineError::Missing {
        field,
        id: id.clone(),
    };
    let task = w.task.ok_or_else(|| missing("task"))?;
    if check_label(&task).is_err() {
        return Err(LineError::Task { task, id });
    }
    let raw_tokens = w.tokens.ok_or_else(|| missing("tokens"))?;
    let tokens = token_ids(&raw_tokens, rules.token_limit(), &id)?;
    let loss_mask = loss_mask(w.prompt_len, w.loss_mask, tokens.len(), &id)?;
    let clip = w.clip.ok_or_else(|| missing("clip"))?;
    if clip.is_empty() {
        return Err(LineError::EmptyClip { id });
    }
    if let Some(index) = clip.iter().position(|x| !x.is_finite()) {
        return Err(LineError::ClipNotFinite { index, id });
    }
    let image = match w.image {
        None => None,
        Some(rows) => Some(image(&rows, &id)?),
    };
    Ok(RawSample {
        task,
        tokens,
        loss_mask,
        clip,
        image,
        concept: w.concept,
    })
}

/// `tokens` as ids: non-empty, each in `0..limit` (`limit` ≤ 2^31, with what it is).
fn token_ids(
    raw: &[i64],
    (limit, of): (u64, &'static str),
    id: &SampleId,
) -> Result<Vec<u32>, LineError> {
    if raw.is_empty() {
        return Err(LineError::NoTokens { id: id.clone() });
    }
    let mut tokens = Vec::with_capacity(raw.len());
    for (index, &value) in raw.iter().enumerate() {
        if value < 0 || value as u64 >= limit {
            return Err(LineError::Token {
                index,
                value,
                limit,
                of,
                id: id.clone(),
            });
        }
        tokens.push(value as u32);
    }
    Ok(tokens)
}

/// A readable message for a line serde could not deserialise as a sample: the JSON error
/// itself for text that is not JSON, else the shape that was expected or the field of the
/// wrong type (serde's own message would name the private `Wire` struct).
fn shape_error(text: &str, e: serde_json::Error) -> LineError {
    use serde_json::Value;
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return LineError::Json(e),
    };
    let Value::Object(map) = &v else {
        return LineError::NotObject {
            found: json_kind(&v),
        };
    };
    let id = SampleId(map.get("id").cloned());
    let fits = |field: &str, v: &Value| -> bool {
        let v = v.clone();
        match field {
            "task" => serde_json::from_value::<Option<String>>(v).is_ok(),
            "tokens" | "loss_mask" => serde_json::from_value::<Option<Vec<i64>>>(v).is_ok(),
            "prompt_len" => serde_json::from_value::<Option<i64>>(v).is_ok(),
            "clip" => serde_json::from_value::<Option<Vec<f32>>>(v).is_ok(),
            "image" => serde_json::from_value::<Option<Vec<Vec<f32>>>>(v).is_ok(),
            "concept" => serde_json::from_value::<Option<ConceptLabel>>(v).is_ok(),
            _ => true,
        }
    };
    const EXPECTED: [(&str, &str); 7] = [
        ("task", "a string"),
        ("tokens", "a list of integers"),
        ("prompt_len", "an integer"),
        ("loss_mask", "a list of 0/1 integers"),
        ("clip", "a list of numbers"),
        ("image", "a list of rows of numbers (patches × dim)"),
        ("concept", "a string or a non-negative integer"),
    ];
    for (field, expected) in EXPECTED {
        if let Some(value) = map.get(field) {
            if !fits(field, value) {
                return LineError::FieldType {
                    field,
                    found: short_json(value),
                    expected,
                    id,
                };
            }
        }
    }
    LineError::Json(e)
}

/// The kind of a JSON value, for messages (also the LLaVA reader's).
pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON value for a message, cut to about 40 characters.
fn short_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The 0/1 loss mask from exactly one of `prompt_len` and `loss_mask`.
fn loss_mask(
    prompt_len: Option<i64>,
    mask: Option<Vec<i64>>,
    n_tokens: usize,
    id: &SampleId,
) -> Result<Vec<u8>, LineError> {
    let id = id.clone();
    match (prompt_len, mask) {
        (Some(_), Some(_)) => Err(LineError::BothMasks { id }),
        (None, None) => Err(LineError::NoMask { id }),
        (Some(p), None) => {
            if p < 0 || p as usize >= n_tokens {
                return Err(LineError::PromptLen {
                    value: p,
                    tokens: n_tokens,
                    id,
                });
            }
            let mut m = vec![0u8; n_tokens];
            m[p as usize..].fill(1);
            Ok(m)
        }
        (None, Some(m)) => {
            if m.len() != n_tokens {
                return Err(LineError::MaskLength {
                    len: m.len(),
                    tokens: n_tokens,
                    id,
                });
            }
            let mut out = Vec::with_capacity(m.len());
            for (index, value) in m.into_iter().enumerate() {
                match value {
                    0 | 1 => out.push(value as u8),
                    _ => return Err(LineError::MaskValue { index, value, id }),
                }
            }
            Ok(out)
        }
    }
}

/// `image` flattened to `patches × dim` values, with the shape: non-empty, rectangular, finite.
fn image(rows: &[Vec<f32>], id: &SampleId) -> Result<(Vec<f32>, usize, usize), LineError> {
    let p = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    if p == 0 || d == 0 {
        return Err(LineError::EmptyImage { id: id.clone() });
    }
    let mut flat = Vec::with_capacity(p * d);
    for (row, r) in rows.iter().enumerate() {
        if r.len() != d {
            return Err(LineError::RaggedImage {
                row,
                len: r.len(),
                dim: d,
                id: id.clone(),
            });
        }
        // Exactly the values float16 can hold without overflowing to infinity.
        if let Some(col) = r.iter().position(|&x| !half::f16::from_f32(x).is_finite()) {
            return Err(LineError::ImageNotFinite {
                row,
                col,
                value: r[col],
                id: id.clone(),
            });
        }
        flat.extend_from_slice(r);
    }
    Ok((flat, p, d))
}

/// The `.jsonl` files under `path` (the file itself, or the directory's top-level `*.jsonl`
/// files in name order).
pub fn input_files(path: &Path) -> Result<Vec<PathBuf>, RawError> {
    let meta = std::fs::metadata(path).at("reading", path)?;
    let files = if meta.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .at("listing", path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(RawError::NoInput {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

/// Shapes every sample must share, fixed by the first valid sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shapes {
    /// Embedding length.
    pub clip_dim: usize,
    /// `(patches, dim)` of the image features, if samples have them.
    pub image: Option<(usize, usize)>,
}

/// Counts of what a [`read_samples`] pass saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Lines that became samples.
    pub samples: u64,
    /// Lines skipped as malformed (with `OnError::Skip`).
    pub skipped: u64,
    /// Blank lines ignored.
    pub blank: u64,
    /// The first few skipped-line messages.
    pub first_errors: Vec<String>,
    /// Bytes read.
    pub bytes: u64,
}

/// Streams every sample of `files` in order, parsing batches of lines in parallel, and calls
/// `sink` for each valid sample. `shapes` is fixed by the first valid sample if `None`, and
/// every later sample must match it; `rules` says what else is checked. `progress` receives
/// bytes read.
pub fn read_samples<E: From<RawError>>(
    files: &[PathBuf],
    rules: &ReadRules,
    shapes: &mut Option<Shapes>,
    mut sink: impl FnMut(RawSample) -> Result<(), E>,
    progress: &dyn Fn(u64),
) -> Result<ReadStats, E> {
    const BATCH: usize = 4096;
    let on_error = rules.on_error;
    let mut stats = ReadStats::default();
    for path in files {
        let f = File::open(path)
            .at("opening", path)
            .map_err(RawError::from)?;
        let mut reader = BufReader::with_capacity(1 << 22, f);
        let mut line_no: u64 = 0;
        loop {
            let mut lines: Vec<(u64, String)> = Vec::with_capacity(BATCH);
            while lines.len() < BATCH {
                let mut s = String::new();
                let n = match reader.read_line(&mut s) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        line_no += 1;
                        let problem = LineError::NotUtf8;
                        if on_error == OnError::Fail {
                            return Err(RawError::Line {
                                path: path.clone(),
                                line: line_no,
                                problem,
                            }
                            .into());
                        }
                        note_skip(&mut stats, path, line_no, &problem);
                        // Skip the rest of the offending line.
                        let mut junk = Vec::new();
                        reader
                            .read_until(b'\n', &mut junk)
                            .at("reading", path)
                            .map_err(RawError::from)?;
                        continue;
                    }
                    Err(e) => {
                        return Err(RawError::from(PathIoError {
                            action: "reading",
                            path: path.clone(),
                            source: e,
                        })
                        .into())
                    }
                };
                if n == 0 {
                    break;
                }
                stats.bytes += n as u64;
                line_no += 1;
                if s.trim().is_empty() {
                    stats.blank += 1;
                    continue;
                }
                lines.push((line_no, s));
            }
            if lines.is_empty() {
                break;
            }
            let parsed: Vec<(u64, Result<RawSample, LineError>)> = lines
                .par_iter()
                .map(|(n, s)| (*n, parse_line(s, rules)))
                .collect();
            for (line, r) in parsed {
                let checked = r.and_then(|s| check_shapes(s, shapes));
                match checked {
                    Ok(s) => {
                        stats.samples += 1;
                        sink(s)?;
                    }
                    Err(problem) => {
                        if on_error == OnError::Fail {
                            return Err(RawError::Line {
                                path: path.clone(),
                                line,
                                problem,
                            }
                            .into());
                        }
                        note_skip(&mut stats, path, line, &problem);
                    }
                }
            }
            progress(stats.bytes);
        }
    }
    Ok(stats)
}

fn note_skip(stats: &mut ReadStats, path: &Path, line: u64, problem: &LineError) {
    stats.skipped += 1;
    if stats.first_errors.len() < 5 {
        stats
            .first_errors
            .push(format!("{}:{line}: {problem}", path.display()));
    }
}

/// Checks `s` against the shapes of the first valid sample (fixing them if `shapes` is
/// `None`).
pub fn check_shapes(s: RawSample, shapes: &mut Option<Shapes>) -> Result<RawSample, LineError> {
    let here = Shapes {
        clip_dim: s.clip.len(),
        image: s.image.as_ref().map(|(_, p, d)| (*p, *d)),
    };
    match shapes {
        None => {
            *shapes = Some(here);
            Ok(s)
        }
        Some(want) => {
            if here.clip_dim != want.clip_dim {
                return Err(LineError::ClipDim {
                    got: here.clip_dim,
                    want: want.clip_dim,
                });
            }
            if here.image != want.image {
                return Err(LineError::ImageShape {
                    got: here.image,
                    want: want.image,
                });
            }
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: ReadRules = ReadRules {
        on_error: OnError::Fail,
        vocab_size: None,
    };

    #[test]
    fn parses_prompt_len_and_mask() {
        let s = parse_line(
            r#"{"task":"ocr","tokens":[1,2,3,4],"prompt_len":2,"clip":[0.5,1],"extra":7}"#,
            &RULES,
        )
        .unwrap();
        assert_eq!(s.loss_mask, vec![0, 0, 1, 1]);
        assert_eq!(s.image, None);
        let s = parse_line(r#"{"task":"vqa","tokens":[1,2],"loss_mask":[1,0],"clip":[1],"image":[[1,2],[3,4]],"concept":3}"#, &RULES).unwrap();
        assert_eq!(s.loss_mask, vec![1, 0]);
        assert_eq!(s.image, Some((vec![1.0, 2.0, 3.0, 4.0], 2, 2)));
        assert_eq!(s.concept, Some(ConceptLabel::Id(3)));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"tokens":[1],"prompt_len":0,"clip":[1]}"#,
                "missing field `task`",
            ),
            (
                r#"{"task":"a","prompt_len":0,"clip":[1]}"#,
                "missing field `tokens`",
            ),
            (
                r#"{"task":"a","tokens":[1,2],"clip":[1]}"#,
                "`prompt_len` or `loss_mask`",
            ),
            (
                r#"{"task":"a","tokens":[1,2],"prompt_len":2,"clip":[1]}"#,
                "`prompt_len` is 2",
            ),
            (
                r#"{"task":"a","tokens":[1,-2],"prompt_len":0,"clip":[1]}"#,
                "`tokens`[1] is -2",
            ),
            (
                r#"{"task":"a","tokens":[1,2],"loss_mask":[1],"clip":[1]}"#,
                "`loss_mask` has 1",
            ),
            (
                r#"{"task":"a","tokens":[1,2],"loss_mask":[1,2],"clip":[1]}"#,
                "`loss_mask`[1] is 2",
            ),
            (
                r#"{"task":"a","tokens":[1],"prompt_len":0,"clip":[1],"image":[[1,2],[3]]}"#,
                "row 1 has 1",
            ),
            (
                r#"{"task":"a","tokens":[1],"prompt_len":0}"#,
                "missing field `clip`",
            ),
            (
                r#"{"task":"a/b","tokens":[1],"prompt_len":0,"clip":[1]}"#,
                "A-Z a-z 0-9",
            ),
            (
                r#"{"task":"$(id)","tokens":[1],"prompt_len":0,"clip":[1]}"#,
                "field `task` is \"$(id)\"",
            ),
            (
                r#"{"task":"a","tokens":[4294967295],"prompt_len":0,"clip":[1]}"#,
                "`tokens`[0] is 4294967295; expected a token id in 0..2147483648",
            ),
            (
                r#"{"task":"a","tokens":[1],"prompt_len":0,"clip":[1],"image":[[1e10]]}"#,
                "`image`[0][0] is 10000000000; expected a finite number within ±65504",
            ),
            (r#"{"task":"a","tokens":[1],"#, "invalid JSON"),
            ("[1, 2, 3]", "the line is a JSON array; expected one sample"),
            ("[]", "the line is a JSON array"),
            (
                r#"{"id":7,"task":"a","tokens":"1 2","prompt_len":0,"clip":[1]}"#,
                "field `tokens` is \"1 2\" (id 7); expected a list of integers",
            ),
            (
                r#"{"task":["a"],"tokens":[1],"prompt_len":0,"clip":[1]}"#,
                "field `task` is [\"a\"]; expected a string",
            ),
        ];
        for (line, want) in cases {
            let e = parse_line(line, &RULES).unwrap_err().to_string();
            assert!(!e.contains("Wire"), "{e}");
            assert!(e.contains(want), "{line}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn read_reports_line_numbers_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let good = r#"{"task":"a","tokens":[1,2],"prompt_len":1,"clip":[1,0]}"#;
        let wrong_dim = r#"{"task":"a","tokens":[1,2],"prompt_len":1,"clip":[1,0,0]}"#;
        std::fs::write(&p, format!("{good}\n\n{wrong_dim}\nnot json\n{good}\n")).unwrap();
        let files = input_files(dir.path()).unwrap();
        let mut shapes = None;
        let err = read_samples::<RawError>(&files, &RULES, &mut shapes, |_| Ok(()), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.jsonl:3:") && err.contains("expected 2"),
            "{err}"
        );
        let mut shapes = None;
        let mut n = 0;
        let stats = read_samples::<RawError>(
            &files,
            &ReadRules {
                on_error: OnError::Skip,
                vocab_size: None,
            },
            &mut shapes,
            |_| {
                n += 1;
                Ok(())
            },
            &|_| {},
        )
        .unwrap();
        assert_eq!((stats.samples, stats.skipped, stats.blank, n), (2, 2, 1, 2));
        assert!(stats.first_errors[1].contains("a.jsonl:4:"));
    }

    #[test]
    fn a_known_vocabulary_bounds_tokens_per_line() {
        let rules = ReadRules {
            on_error: OnError::Fail,
            vocab_size: Some(10),
        };
        let line = r#"{"task":"a","tokens":[1,9,10],"prompt_len":0,"clip":[1]}"#;
        let e = parse_line(line, &rules).unwrap_err().to_string();
        assert!(
            e.contains(
                "`tokens`[2] is 10; expected a token id in 0..10 (below the vocabulary size)"
            ),
            "{e}"
        );
        parse_line(line, &RULES).unwrap();
    }
}
