//! Precomputed CLIP embeddings for the concept axis (`prepare --embeddings PATH`), memory-mapped
//! so that only the rows being read are resident.
//!
//! `PATH` is one of:
//!
//! - an `.npy` file (NPY 1.0/2.0/3.0, little-endian `<f4`, `<f2` or `<f8`, C order, shape
//!   `[N, D]`);
//! - a `.safetensors` file whose tensor `embeddings` is `[N, D]` (F32, F16, BF16 or F64);
//! - a directory of parts `part-NNNNNN.npy` (`[n, D]`) + `part-NNNNNN.ids.txt`, with optional
//!   `part-NNNNNN.features.npy` (`<f2` or `<f4`, `[n, P, F]`: per-image features), read in
//!   name order: what `mixatlas embed --out DIR` writes.
//!
//! Rows are matched to records **by id** when ids exist (the parts' `.ids.txt`, or
//! `PATH.ids.txt` beside a single file: one id per line, row order), else **by row order**:
//! row `i` belongs to the `i`-th record of the source (counting every record, malformed ones
//! included, so a skipped record does not shift the rows after it), and the number of rows
//! must equal the number of records. Ids must be unique; a record whose id has no row is an
//! error naming the id (or is skipped with `--on-error skip`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::fsutil::{IoContext, PathIoError};

/// Embeddings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// I/O on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// A file is not a readable array of the expected kind.
    #[error("{}: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// An ids file does not have one line per row.
    #[error("{}: {lines} ids for the {rows} rows of {}; expected one id per row", ids.display(), rows_file.display())]
    IdCount {
        /// The ids file.
        ids: PathBuf,
        /// Lines in it.
        lines: u64,
        /// The array file.
        rows_file: PathBuf,
        /// Its rows.
        rows: u64,
    },
    /// An id appears twice.
    #[error("id {id:?} appears twice: {}:{first_line} and {}:{second_line}; expected unique ids", first.display(), second.display())]
    DuplicateId {
        /// The id.
        id: String,
        /// The first file.
        first: PathBuf,
        /// Its line (1-based).
        first_line: u64,
        /// The second file.
        second: PathBuf,
        /// Its line.
        second_line: u64,
    },
    /// Two arrays disagree on a dimension.
    #[error("{}: {what} is {got}; expected {want} like {}", path.display(), first.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Which dimension.
        what: &'static str,
        /// Its value.
        got: String,
        /// The value of the first part.
        want: String,
        /// The first part.
        first: PathBuf,
    },
    /// A directory holds no `part-NNNNNN.npy`.
    #[error("{}: no part-NNNNNN.npy files (expected the output directory of `mixatlas embed`)", dir.display())]
    NoParts {
        /// The directory.
        dir: PathBuf,
    },
    /// Row order: the rows and the records differ in number.
    #[error("{}: {rows} embedding rows for {records} records of the source; expected one row per record, in order (or ids in {}.ids.txt)", path.display(), path.display())]
    RowCount {
        /// The embeddings.
        path: PathBuf,
        /// Rows.
        rows: u64,
        /// Records read.
        records: u64,
    },
    /// The embeddings are keyed by row order, which benchmarks cannot share.
    #[error("{}: benchmarks need embeddings keyed by id (write {}.ids.txt, or use `mixatlas embed`'s directory); row order covers the training records only", path.display(), path.display())]
    BenchmarksNeedIds {
        /// The embeddings.
        path: PathBuf,
    },
}

/// Why one record has no embedding.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupProblem {
    /// The id is not in the embeddings.
    #[error("id {id:?} has no row in the embeddings {}", store.display())]
    MissingId {
        /// The id.
        id: String,
        /// The embeddings.
        store: PathBuf,
    },
    /// The record has no id but the embeddings are keyed by id.
    #[error("the record has no `id`, but the embeddings {} are keyed by id", store.display())]
    NoId {
        /// The embeddings.
        store: PathBuf,
    },
    /// Row order: more records than rows.
    #[error("record {position} has no row: the embeddings {} have {rows} rows", store.display())]
    PastEnd {
        /// 0-based record position.
        position: u64,
        /// Rows.
        rows: u64,
        /// The embeddings.
        store: PathBuf,
    },
}

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Float {
    F16,
    Bf16,
    F32,
    F64,
}

impl Float {
    fn size(self) -> usize {
        match self {
            Float::F16 | Float::Bf16 => 2,
            Float::F32 => 4,
            Float::F64 => 8,
        }
    }
}

/// A memory-mapped little-endian float array.
struct Array {
    path: PathBuf,
    map: Mmap,
    offset: usize,
    dtype: Float,
    shape: Vec<usize>,
}

impl Array {
    /// The values `start..start + len` (in elements) as f32, appended to `out`.
    fn read(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        let s = self.dtype.size();
        let bytes = &self.map[self.offset + start * s..self.offset + (start + len) * s];
        match self.dtype {
            Float::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
            ),
            Float::F64 => out.extend(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
            ),
            Float::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            Float::Bf16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
        }
    }

    fn rows(&self) -> usize {
        self.shape[0]
    }

    /// Elements per row.
    fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

fn map_file(path: &Path) -> Result<Mmap, EmbeddingError> {
    let f = File::open(path).at("opening", path)?;
    // SAFETY: read-only input; the user must not modify it while `prepare` runs (as for every
    // memory-mapped input of the crate).
    Ok(unsafe { Mmap::map(&f) }.at("mapping", path)?)
}

/// The raw text of `'key': value` in an NPY header dict, up to the next top-level comma.
fn npy_field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        return rest.find(')').map(|end| &rest[..=end]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// Opens an `.npy` file of `ndim` dimensions whose dtype is one of `allowed`.
fn open_npy(path: &Path, ndim: usize, allowed: &[Float]) -> Result<Array, EmbeddingError> {
    let bad = |problem: String| EmbeddingError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let map = map_file(path)?;
    if map.len() < 10 || &map[..6] != b"\x93NUMPY" {
        return Err(bad("not an NPY file (no \\x93NUMPY magic)".into()));
    }
    let (header_len, start) = match map[6] {
        1 => (u16::from_le_bytes([map[8], map[9]]) as usize, 10),
        2 | 3 if map.len() >= 12 => (
            u32::from_le_bytes([map[8], map[9], map[10], map[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("NPY version {v}; expected 1, 2 or 3"))),
    };
    let header = map
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated or non-text NPY header".into()))?;
    let descr = npy_field(header, "descr")
        .map(|d| d.trim_matches(['\'', '"']))
        .ok_or_else(|| bad(format!("NPY header {header:?} has no 'descr'")))?;
    let dtype = match descr {
        "<f2" => Float::F16,
        "<f4" => Float::F32,
        "<f8" => Float::F64,
        other => None.ok_or_else(|| {
            bad(format!(
                "dtype {other:?}; expected little-endian float ('<f4', '<f2' or '<f8')"
            ))
        })?,
    };
    if !allowed.contains(&dtype) {
        return Err(bad(format!("dtype {descr:?} is not accepted here")));
    }
    if npy_field(header, "fortran_order") != Some("False") {
        return Err(bad(
            "Fortran order; expected C order (fortran_order: False)".into(),
        ));
    }
    let shape: Vec<usize> = npy_field(header, "shape")
        .map(|s| s.trim_matches(['(', ')']))
        .ok_or_else(|| bad(format!("NPY header {header:?} has no 'shape'")))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("NPY header {header:?}: unreadable shape")))?;
    if shape.len() != ndim {
        return Err(bad(format!(
            "shape {shape:?}; expected {ndim} dimensions ({})",
            if ndim == 2 { "[N, D]" } else { "[n, P, F]" }
        )));
    }
    let offset = start + header_len;
    let want = shape.iter().product::<usize>() * dtype.size();
    if map.len() - offset != want {
        return Err(bad(format!(
            "{} data bytes; shape {shape:?} of {descr} needs {want}",
            map.len() - offset
        )));
    }
    Ok(Array {
        path: path.to_path_buf(),
        map,
        offset,
        dtype,
        shape,
    })
}

/// Opens tensor `embeddings` of a safetensors file.
fn open_safetensors(path: &Path) -> Result<Array, EmbeddingError> {
    let bad = |problem: String| EmbeddingError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let map = map_file(path)?;
    let (header, meta) = safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let info = meta.info("embeddings").ok_or_else(|| {
        bad("no tensor `embeddings`; expected one [N, D] tensor of that name".into())
    })?;
    use safetensors::Dtype;
    let dtype = match info.dtype {
        Dtype::F32 => Float::F32,
        Dtype::F16 => Float::F16,
        Dtype::BF16 => Float::Bf16,
        Dtype::F64 => Float::F64,
        other => {
            return Err(bad(format!(
                "tensor `embeddings` is {other:?}; expected F32, F16, BF16 or F64"
            )))
        }
    };
    if info.shape.len() != 2 {
        return Err(bad(format!(
            "tensor `embeddings` has shape {:?}; expected [N, D]",
            info.shape
        )));
    }
    Ok(Array {
        path: path.to_path_buf(),
        offset: 8 + header + info.data_offsets.0,
        dtype,
        shape: info.shape.clone(),
        map,
    })
}

/// The ids of a part, one per line.
fn read_ids(path: &Path) -> Result<Vec<String>, EmbeddingError> {
    let text = std::fs::read_to_string(path).at("reading", path)?;
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect())
}

/// One file of rows (a part, or the single file).
struct Part {
    embeddings: Array,
    features: Option<Array>,
}

/// Precomputed embeddings, and per-image features when given (see the module
/// documentation).
pub struct EmbeddingStore {
    path: PathBuf,
    parts: Vec<Part>,
    /// First global row of each part.
    starts: Vec<u64>,
    rows: u64,
    dim: usize,
    features: Option<(usize, usize)>,
    ids: Option<HashMap<String, u64>>,
}

impl std::fmt::Debug for EmbeddingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingStore")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("dim", &self.dim)
            .field("features", &self.features)
            .field("by_id", &self.ids.is_some())
            .finish_non_exhaustive()
    }
}

/// Adds the ids of the last part (its rows start at `starts.last()`; `files[i]` is part
/// `i`'s ids file) to `map` (id → global row), refusing duplicates.
fn index_ids(
    map: &mut HashMap<String, u64>,
    files: &[PathBuf],
    starts: &[u64],
    ids: Vec<String>,
) -> Result<(), EmbeddingError> {
    let file = starts.len() - 1;
    let first = starts[file];
    for (line, id) in ids.into_iter().enumerate() {
        if let Some(prev) = map.insert(id.clone(), first + line as u64) {
            let prev_file = starts.partition_point(|&s| s <= prev) - 1;
            return Err(EmbeddingError::DuplicateId {
                id,
                first: files[prev_file].clone(),
                first_line: prev - starts[prev_file] + 1,
                second: files[file].clone(),
                second_line: line as u64 + 1,
            });
        }
    }
    Ok(())
}

impl EmbeddingStore {
    /// Opens `path` (see the module documentation).
    pub fn open(path: &Path) -> Result<Self, EmbeddingError> {
        let meta = std::fs::metadata(path).at("reading", path)?;
        // (part, its ids file if any)
        let mut found: Vec<(Part, Option<PathBuf>)> = Vec::new();
        if meta.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(path)
                .at("listing", path)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_prefix("part-")
                        .and_then(|r| r.strip_suffix(".npy"))
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
                .collect();
            names.sort();
            if names.is_empty() {
                return Err(EmbeddingError::NoParts {
                    dir: path.to_path_buf(),
                });
            }
            for n in names {
                let stem = n.trim_end_matches(".npy");
                let emb = open_npy(&path.join(&n), 2, &[Float::F16, Float::F32, Float::F64])?;
                let fpath = path.join(format!("{stem}.features.npy"));
                let features = if fpath.exists() {
                    Some(open_npy(&fpath, 3, &[Float::F16, Float::F32])?)
                } else {
                    None
                };
                let part = Part {
                    embeddings: emb,
                    features,
                };
                found.push((part, Some(path.join(format!("{stem}.ids.txt")))));
            }
        } else {
            let is_st = path.extension().is_some_and(|e| e == "safetensors");
            let emb = if is_st {
                open_safetensors(path)?
            } else {
                open_npy(path, 2, &[Float::F16, Float::F32, Float::F64])?
            };
            let ids = PathBuf::from(format!("{}.ids.txt", path.display()));
            let ids = ids.exists().then_some(ids);
            found.push((
                Part {
                    embeddings: emb,
                    features: None,
                },
                ids,
            ));
        }
        Self::assemble(path, found)
    }

    /// Checks the parts agree with each other and with their ids, and indexes the ids.
    fn assemble(path: &Path, found: Vec<(Part, Option<PathBuf>)>) -> Result<Self, EmbeddingError> {
        let first = &found[0].0;
        let dim = first.embeddings.shape[1];
        let features = first.features.as_ref().map(|f| (f.shape[1], f.shape[2]));
        let first_path = first.embeddings.path.clone();
        let by_id = found[0].1.is_some();
        let mut parts = Vec::with_capacity(found.len());
        let mut starts = Vec::with_capacity(found.len());
        let mut id_files = Vec::new();
        let mut index: HashMap<String, u64> = HashMap::new();
        let mut rows = 0u64;
        for (part, ids) in found {
            let e = &part.embeddings;
            let mismatch = |what, got: String, want: String, p: &Path| EmbeddingError::Mismatch {
                path: p.to_path_buf(),
                what,
                got,
                want,
                first: first_path.clone(),
            };
            if e.shape[1] != dim {
                return Err(mismatch(
                    "D",
                    e.shape[1].to_string(),
                    dim.to_string(),
                    &e.path,
                ));
            }
            let here = part.features.as_ref().map(|f| (f.shape[1], f.shape[2]));
            let show = |x: Option<(usize, usize)>| {
                x.map_or("absent".to_string(), |(p, f)| format!("[n, {p}, {f}]"))
            };
            if here != features {
                let p = part.features.as_ref().map_or(&e.path, |f| &f.path);
                return Err(mismatch(
                    "per-image features",
                    show(here),
                    show(features),
                    p,
                ));
            }
            if let Some(f) = &part.features {
                if f.rows() != e.rows() {
                    return Err(mismatch(
                        "the number of feature rows",
                        f.rows().to_string(),
                        format!("{} (the rows of {})", e.rows(), e.path.display()),
                        &f.path,
                    ));
                }
            }
            if by_id {
                let ids_path = ids.expect("every part of a directory has an ids path");
                let list = read_ids(&ids_path)?;
                if list.len() != e.rows() {
                    return Err(EmbeddingError::IdCount {
                        ids: ids_path,
                        lines: list.len() as u64,
                        rows_file: e.path.clone(),
                        rows: e.rows() as u64,
                    });
                }
                id_files.push(ids_path);
                starts.push(rows);
                index_ids(&mut index, &id_files, &starts, list)?;
            } else {
                starts.push(rows);
            }
            rows += e.rows() as u64;
            parts.push(part);
        }
        let ids = by_id.then_some(index);
        Ok(Self {
            path: path.to_path_buf(),
            parts,
            starts,
            rows,
            dim,
            features,
            ids,
        })
    }

    /// The embeddings' path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows in all.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Embedding dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `(P, F)` of the per-image features, when given.
    pub fn features(&self) -> Option<(usize, usize)> {
        self.features
    }

    /// Whether rows are found by id (else by row order).
    pub fn by_id(&self) -> bool {
        self.ids.is_some()
    }

    /// The row of a record: by `id`, or by its 0-based `position` in the source.
    pub fn row(&self, id: Option<&str>, position: u64) -> Result<u64, LookupProblem> {
        let store = || self.path.clone();
        match (&self.ids, id) {
            (Some(map), Some(id)) => map
                .get(id)
                .copied()
                .ok_or_else(|| LookupProblem::MissingId {
                    id: id.to_string(),
                    store: store(),
                }),
            (Some(_), None) => Err(LookupProblem::NoId { store: store() }),
            (None, _) if position < self.rows => Ok(position),
            (None, _) => Err(LookupProblem::PastEnd {
                position,
                rows: self.rows,
                store: store(),
            }),
        }
    }

    /// In row order, checks that `records` records used up every row.
    pub fn check_row_count(&self, records: u64) -> Result<(), EmbeddingError> {
        if self.ids.is_none() && records != self.rows {
            return Err(EmbeddingError::RowCount {
                path: self.path.clone(),
                rows: self.rows,
                records,
            });
        }
        Ok(())
    }

    /// The part holding global `row`, and the row within it.
    fn locate(&self, row: u64) -> (&Part, usize) {
        let p = self.starts.partition_point(|&s| s <= row) - 1;
        (&self.parts[p], (row - self.starts[p]) as usize)
    }

    /// Row `row`'s embedding (`D` values).
    pub fn embedding(&self, row: u64) -> Vec<f32> {
        let (part, r) = self.locate(row);
        let mut out = Vec::with_capacity(self.dim);
        part.embeddings.read(r * self.dim, self.dim, &mut out);
        out
    }

    /// Row `row`'s per-image features (`P × F` values, row-major), when given.
    pub fn image_features(&self, row: u64) -> Option<Vec<f32>> {
        let (part, r) = self.locate(row);
        let f = part.features.as_ref()?;
        let n = f.row_len();
        let mut out = Vec::with_capacity(n);
        f.read(r * n, n, &mut out);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NPY v1.0 file of little-endian f32 (`descr` `<f4`) with `shape`.
    fn npy(path: &Path, descr: &str, shape: &[usize], bytes: &[u8]) {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let tuple = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(bytes);
        std::fs::write(path, out).unwrap();
    }

    fn f32s(x: &[f32]) -> Vec<u8> {
        x.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn npy_by_row_and_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.npy");
        npy(&p, "<f4", &[3, 2], &f32s(&[1., 2., 3., 4., 5., 6.]));
        let s = EmbeddingStore::open(&p).unwrap();
        assert!(!s.by_id());
        assert_eq!(s.embedding(s.row(None, 2).unwrap()), vec![5., 6.]);
        assert!(s.row(None, 3).is_err());
        assert!(s
            .check_row_count(2)
            .unwrap_err()
            .to_string()
            .contains("3 embedding rows for 2 records"));
        std::fs::write(dir.path().join("e.npy.ids.txt"), "a\nb\nc\n").unwrap();
        let s = EmbeddingStore::open(&p).unwrap();
        assert_eq!(s.embedding(s.row(Some("b"), 0).unwrap()), vec![3., 4.]);
        let e = s.row(Some("zz"), 0).unwrap_err().to_string();
        assert!(e.contains("id \"zz\" has no row"), "{e}");
        std::fs::write(dir.path().join("e.npy.ids.txt"), "a\nb\na\n").unwrap();
        let e = EmbeddingStore::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("id \"a\" appears twice")
                && e.contains(":1 and")
                && e.ends_with(":3; expected unique ids"),
            "{e}"
        );
        npy(&p, "<i4", &[3, 2], &f32s(&[0.; 6]));
        let e = EmbeddingStore::open(&p).unwrap_err().to_string();
        assert!(e.contains("dtype \"<i4\""), "{e}");
        npy(&p, "<f4", &[6], &f32s(&[0.; 6]));
        let e = EmbeddingStore::open(&p).unwrap_err().to_string();
        assert!(e.contains("expected 2 dimensions"), "{e}");
    }

    #[test]
    fn safetensors_tensor_embeddings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.safetensors");
        let vals = [0.5f32, -1.0, 2.0, 4.0, 0.25, 8.0];
        let bytes: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let write = |name: &str, shape: Vec<usize>| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape, &bytes)
                    .unwrap();
            let file = safetensors::serialize([(name, view)], None).unwrap();
            std::fs::write(&p, file).unwrap();
        };
        write("embeddings", vec![3, 2]);
        let s = EmbeddingStore::open(&p).unwrap();
        assert_eq!((s.rows(), s.dim()), (3, 2));
        assert_eq!(s.embedding(1), vec![2.0, 4.0]);
        write("clip", vec![3, 2]);
        let e = EmbeddingStore::open(&p).unwrap_err().to_string();
        assert!(e.contains("no tensor `embeddings`"), "{e}");
        write("embeddings", vec![6]);
        let e = EmbeddingStore::open(&p).unwrap_err().to_string();
        assert!(e.contains("shape [6]; expected [N, D]"), "{e}");
    }

    #[test]
    fn parts_in_name_order_with_features() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        npy(&d.join("part-000001.npy"), "<f4", &[1, 2], &f32s(&[7., 8.]));
        std::fs::write(d.join("part-000001.ids.txt"), "z\n").unwrap();
        npy(
            &d.join("part-000000.npy"),
            "<f4",
            &[2, 2],
            &f32s(&[1., 2., 3., 4.]),
        );
        std::fs::write(d.join("part-000000.ids.txt"), "x\ny\n").unwrap();
        let s = EmbeddingStore::open(d).unwrap();
        assert_eq!((s.rows(), s.dim(), s.features()), (3, 2, None));
        assert_eq!(s.embedding(s.row(Some("z"), 0).unwrap()), vec![7., 8.]);
        let f16s = |x: &[f32]| -> Vec<u8> {
            x.iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect()
        };
        npy(
            &d.join("part-000000.features.npy"),
            "<f2",
            &[2, 1, 3],
            &f16s(&[1., 2., 3., 4., 5., 6.]),
        );
        let e = EmbeddingStore::open(d).unwrap_err().to_string();
        assert!(
            e.contains("part-000001.npy: per-image features is absent; expected [n, 1, 3]"),
            "{e}"
        );
        npy(
            &d.join("part-000001.features.npy"),
            "<f2",
            &[1, 1, 3],
            &f16s(&[7., 8., 9.]),
        );
        let s = EmbeddingStore::open(d).unwrap();
        assert_eq!(
            s.image_features(s.row(Some("y"), 0).unwrap()),
            Some(vec![4., 5., 6.])
        );
        npy(
            &d.join("part-000001.npy"),
            "<f4",
            &[1, 3],
            &f32s(&[7., 8., 9.]),
        );
        let e = EmbeddingStore::open(d).unwrap_err().to_string();
        assert!(e.contains("D is 3; expected 2"), "{e}");
    }
}
