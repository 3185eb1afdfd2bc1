//! Megatron-LM `MMapIndexedDataset` files: the on-disk format of every prepared cell.
//!
//! Writing cells in Megatron's own layout lets Megatron's `--data-path W1 P1 W2 P2 …` read a
//! MixAtlas corpus directly, and lets MixAtlas read corpora Megatron's tools produced.
//!
//! Layout (all little-endian), as published in `megatron/core/datasets/indexed_dataset.py`:
//!
//! `<prefix>.idx`:
//! | field | type |
//! | --- | --- |
//! | magic `MMIDIDX\0\0` | 9 bytes |
//! | version (= 1) | u64 |
//! | dtype code ([`DType`]) | u8 |
//! | sequence count S | u64 |
//! | document-index count D (= documents + 1) | u64 |
//! | sequence lengths | S × i32 (in elements) |
//! | sequence pointers | S × i64 (byte offsets into `.bin`) |
//! | document indices | D × i64 (sequence index where each document starts; last = S) |
//!
//! `<prefix>.bin` is the concatenation of every sequence's elements in the chosen dtype.
//! Megatron-core may append S × i8 sequence modes for multimodal datasets; they are tolerated
//! (the file may be longer than the arrays above by exactly S bytes) and ignored.
//!
//! MixAtlas writes one sequence per document, so sequence index = document index. The reader
//! accepts multi-sequence documents and exposes both views.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::fsutil::{IoContext, PathIoError};

/// The 9-byte magic at the start of every `.idx` file.
pub const INDEX_MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only index version Megatron has published.
pub const INDEX_VERSION: u64 = 1;
/// Size of the fixed `.idx` header: magic + version + dtype + two counts.
pub const HEADER_LEN: usize = 9 + 8 + 1 + 8 + 8;

/// Element types of a `.bin` file and their Megatron dtype codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// code 1
    #[serde(rename = "uint8")]
    U8,
    /// code 2
    #[serde(rename = "int8")]
    I8,
    /// code 3
    #[serde(rename = "int16")]
    I16,
    /// code 4
    #[serde(rename = "int32")]
    I32,
    /// code 5
    #[serde(rename = "int64")]
    I64,
    /// code 6
    #[serde(rename = "float64")]
    F64,
    /// code 7
    #[serde(rename = "float32")]
    F32,
    /// code 8
    #[serde(rename = "uint16")]
    U16,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 8] = [
        DType::U8,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F64,
        DType::F32,
        DType::U16,
    ];

    /// The Megatron dtype code.
    pub fn code(self) -> u8 {
        match self {
            DType::U8 => 1,
            DType::I8 => 2,
            DType::I16 => 3,
            DType::I32 => 4,
            DType::I64 => 5,
            DType::F64 => 6,
            DType::F32 => 7,
            DType::U16 => 8,
        }
    }

    /// The dtype for a Megatron code, if known.
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// NumPy's name for the dtype.
    pub fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::U16 => "uint16",
        }
    }

    /// The smallest dtype Megatron's preprocessing would pick for `vocab_size` token ids
    /// (uint16 below 65 500, else int32).
    pub fn for_vocab(vocab_size: usize) -> DType {
        if vocab_size < 65_500 {
            DType::U16
        } else {
            DType::I32
        }
    }

    /// Largest token id this dtype can store (for integer dtypes).
    fn max_token(self) -> u64 {
        match self {
            DType::U8 => u8::MAX as u64,
            DType::I8 => i8::MAX as u64,
            DType::I16 => i16::MAX as u64,
            DType::U16 => u16::MAX as u64,
            DType::I32 => i32::MAX as u64,
            DType::I64 => u32::MAX as u64,
            DType::F32 => 1 << 24,
            DType::F64 => u32::MAX as u64,
        }
    }

    /// Decodes element `i` of `bytes` (little-endian) as a token id; `None` if the stored
    /// value is negative, fractional or does not fit in `u32`.
    #[inline]
    pub fn decode(self, bytes: &[u8], i: usize) -> Option<u32> {
        let s = self.size();
        let b = &bytes[i * s..i * s + s];
        match self {
            DType::U8 => Some(b[0] as u32),
            DType::I8 => u32::try_from(b[0] as i8).ok(),
            DType::I16 => u32::try_from(i16::from_le_bytes([b[0], b[1]])).ok(),
            DType::U16 => Some(u16::from_le_bytes([b[0], b[1]]) as u32),
            DType::I32 => u32::try_from(i32::from_le_bytes(b.try_into().unwrap())).ok(),
            DType::I64 => u32::try_from(i64::from_le_bytes(b.try_into().unwrap())).ok(),
            DType::F32 => {
                let v = f32::from_le_bytes(b.try_into().unwrap());
                (v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f32).then_some(v as u32)
            }
            DType::F64 => {
                let v = f64::from_le_bytes(b.try_into().unwrap());
                (v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f64).then_some(v as u32)
            }
        }
    }

    /// Appends token `t` encoded in this dtype to `out`.
    #[inline]
    fn encode(self, t: u32, out: &mut Vec<u8>) {
        match self {
            DType::U8 => out.push(t as u8),
            DType::I8 => out.push(t as i8 as u8),
            DType::I16 => out.extend_from_slice(&(t as i16).to_le_bytes()),
            DType::U16 => out.extend_from_slice(&(t as u16).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(t as i32).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&(t as i64).to_le_bytes()),
            DType::F32 => out.extend_from_slice(&(t as f32).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&(t as f64).to_le_bytes()),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong reading or writing a Megatron indexed dataset.
#[derive(Debug, thiserror::Error)]
pub enum MegatronError {
    /// An I/O failure on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// The `.idx` file is not a Megatron MMapIndexedDataset index or is damaged.
    #[error("{}: {problem}", path.display())]
    BadIndex {
        /// The `.idx` file.
        path: PathBuf,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// The `.bin` file does not match its index.
    #[error("{}: {problem}", path.display())]
    BadData {
        /// The `.bin` file.
        path: PathBuf,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A token id does not fit the dataset's dtype.
    #[error("{}: token id {token} does not fit dtype {dtype}", path.display())]
    TokenOutOfRange {
        /// The `.bin` being written.
        path: PathBuf,
        /// The offending id.
        token: u32,
        /// The dataset's dtype.
        dtype: DType,
    },
}

/// `<prefix>.bin` and `<prefix>.idx` for a prefix such as `corpus/cells/c03_ocr`.
pub fn prefix_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let s = prefix.as_os_str().to_owned();
    let mut bin = s.clone();
    bin.push(".bin");
    let mut idx = s;
    idx.push(".idx");
    (PathBuf::from(bin), PathBuf::from(idx))
}

/// Summary of a finished `.bin`/`.idx` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenDataset {
    /// Number of documents (= sequences).
    pub documents: u64,
    /// Number of elements (tokens) in `.bin`.
    pub tokens: u64,
}

/// Streams documents into a new `.bin` and writes the `.idx` on [`finish`](Self::finish).
///
/// Memory stays constant however many documents are written: tokens go straight to a
/// buffered `.bin` and the per-document lengths to a temporary `<prefix>.idx.lengths` file
/// that [`finish`](Self::finish) streams into the index and removes.
pub struct DatasetWriter {
    bin_path: PathBuf,
    idx_path: PathBuf,
    lengths_path: PathBuf,
    dtype: DType,
    bin: BufWriter<File>,
    lengths: BufWriter<File>,
    documents: u64,
    tokens: u64,
    scratch: Vec<u8>,
}

impl DatasetWriter {
    /// Creates `<prefix>.bin` (and later `<prefix>.idx`) with elements of `dtype`.
    pub fn create(prefix: &Path, dtype: DType) -> Result<Self, MegatronError> {
        let (bin_path, idx_path) = prefix_paths(prefix);
        let bin = File::create(&bin_path).at("creating", &bin_path)?;
        let mut lengths_path = idx_path.clone().into_os_string();
        lengths_path.push(".lengths");
        let lengths_path = PathBuf::from(lengths_path);
        let lengths = File::create(&lengths_path).at("creating", &lengths_path)?;
        Ok(Self {
            bin: BufWriter::with_capacity(256 << 10, bin),
            lengths: BufWriter::with_capacity(64 << 10, lengths),
            bin_path,
            idx_path,
            lengths_path,
            dtype,
            documents: 0,
            tokens: 0,
            scratch: Vec::new(),
        })
    }

    /// The element dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Documents written so far.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Tokens written so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Appends one document (a single sequence) of token ids.
    pub fn add_document(&mut self, tokens: &[u32]) -> Result<(), MegatronError> {
        let max = self.dtype.max_token();
        self.scratch.clear();
        for &t in tokens {
            if t as u64 > max {
                return Err(MegatronError::TokenOutOfRange {
                    path: self.bin_path.clone(),
                    token: t,
                    dtype: self.dtype,
                });
            }
            self.dtype.encode(t, &mut self.scratch);
        }
        let len = i32::try_from(tokens.len()).map_err(|_| MegatronError::BadData {
            path: self.bin_path.clone(),
            problem: format!("document of {} tokens exceeds i32 lengths", tokens.len()),
        })?;
        self.bin
            .write_all(&self.scratch)
            .at("writing", &self.bin_path)?;
        self.lengths
            .write_all(&len.to_le_bytes())
            .at("writing", &self.lengths_path)?;
        self.documents += 1;
        self.tokens += tokens.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs `.bin`, then writes and fsyncs `.idx`.
    pub fn finish(self) -> Result<WrittenDataset, MegatronError> {
        let DatasetWriter {
            bin_path,
            idx_path,
            lengths_path,
            dtype,
            bin,
            lengths,
            documents,
            tokens,
            ..
        } = self;
        let f = bin
            .into_inner()
            .map_err(|e| e.into_error())
            .at("flushing", &bin_path)?;
        f.sync_all().at("syncing", &bin_path)?;
        lengths
            .into_inner()
            .map_err(|e| e.into_error())
            .at("flushing", &lengths_path)?;
        let read_lengths = || -> Result<_, PathIoError> {
            let f = File::open(&lengths_path).at("opening", &lengths_path)?;
            let mut r = std::io::BufReader::with_capacity(64 << 10, f);
            let path = lengths_path.clone();
            Ok(std::iter::from_fn(move || {
                let mut b = [0u8; 4];
                match std::io::Read::read_exact(&mut r, &mut b) {
                    Ok(()) => Some(Ok(i32::from_le_bytes(b))),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
                    Err(e) => Some(Err(e).at("reading", &path)),
                }
            }))
        };
        write_index_streamed(&idx_path, dtype, documents, read_lengths)?;
        std::fs::remove_file(&lengths_path).at("removing", &lengths_path)?;
        Ok(WrittenDataset { documents, tokens })
    }
}

/// Writes a `.idx` for one-sequence-per-document data with the given element lengths.
pub fn write_index(idx_path: &Path, dtype: DType, lengths: &[i32]) -> Result<(), MegatronError> {
    write_index_streamed(idx_path, dtype, lengths.len() as u64, || {
        Ok(lengths.iter().map(|&l| Ok(l)))
    })
}

/// Writes a `.idx` from `n` lengths produced (twice: once for the lengths, once for the
/// pointers) by `lengths`, so the lengths need not fit in memory.
fn write_index_streamed<I>(
    idx_path: &Path,
    dtype: DType,
    n: u64,
    lengths: impl Fn() -> Result<I, PathIoError>,
) -> Result<(), MegatronError>
where
    I: Iterator<Item = Result<i32, PathIoError>>,
{
    let f = File::create(idx_path).at("creating", idx_path)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut head = Vec::with_capacity(HEADER_LEN);
    head.extend_from_slice(INDEX_MAGIC);
    head.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    head.push(dtype.code());
    head.extend_from_slice(&n.to_le_bytes());
    head.extend_from_slice(&(n + 1).to_le_bytes());
    w.write_all(&head).at("writing", idx_path)?;
    for l in lengths()? {
        w.write_all(&l?.to_le_bytes()).at("writing", idx_path)?;
    }
    let mut ptr: i64 = 0;
    for l in lengths()? {
        w.write_all(&ptr.to_le_bytes()).at("writing", idx_path)?;
        ptr += l? as i64 * dtype.size() as i64;
    }
    for d in 0..=n {
        w.write_all(&(d as i64).to_le_bytes())
            .at("writing", idx_path)?;
    }
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .at("flushing", idx_path)?;
    f.sync_all().at("syncing", idx_path)?;
    Ok(())
}

/// A read-only, memory-mapped Megatron indexed dataset.
///
/// Opening validates the header and every array against the file lengths, so later accesses
/// are plain slicing of the maps (no copies, no I/O errors).
#[derive(Debug)]
pub struct IndexedDataset {
    prefix: PathBuf,
    dtype: DType,
    idx: Mmap,
    bin: Option<Mmap>,
    sequences: usize,
    doc_index_len: usize,
    tokens: u64,
}

fn map_file(path: &Path) -> Result<Option<Mmap>, PathIoError> {
    let f = File::open(path).at("opening", path)?;
    let len = f.metadata().at("reading metadata of", path)?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the maps are read-only; MixAtlas never writes files it has mapped, and readers
    // of a corpus being replaced see the old inode (corpora are renamed into place).
    let m = unsafe { Mmap::map(&f) }.at("mapping", path)?;
    Ok(Some(m))
}

impl IndexedDataset {
    /// Opens and validates `<prefix>.idx` / `<prefix>.bin`.
    pub fn open(prefix: &Path) -> Result<Self, MegatronError> {
        let (bin_path, idx_path) = prefix_paths(prefix);
        let bad = |problem: String| MegatronError::BadIndex {
            path: idx_path.clone(),
            problem,
        };
        let idx = map_file(&idx_path)?.ok_or_else(|| bad("file is empty".into()))?;
        if idx.len() < HEADER_LEN {
            return Err(bad(format!(
                "truncated header: {} bytes, expected at least {HEADER_LEN}",
                idx.len()
            )));
        }
        if &idx[..9] != INDEX_MAGIC {
            return Err(bad(format!(
                "bad magic {:?}, expected \"MMIDIDX\\x00\\x00\" (not a Megatron MMapIndexedDataset index)",
                String::from_utf8_lossy(&idx[..9])
            )));
        }
        let version = u64::from_le_bytes(idx[9..17].try_into().unwrap());
        if version != INDEX_VERSION {
            return Err(bad(format!(
                "unsupported version {version}, expected {INDEX_VERSION}"
            )));
        }
        let code = idx[17];
        let dtype = DType::from_code(code)
            .ok_or_else(|| bad(format!("unknown dtype code {code}, expected 1..=8")))?;
        let sequences = u64::from_le_bytes(idx[18..26].try_into().unwrap());
        let doc_index_len = u64::from_le_bytes(idx[26..34].try_into().unwrap());
        let expected =
            (HEADER_LEN as u128) + sequences as u128 * (4 + 8) + doc_index_len as u128 * 8;
        let actual = idx.len() as u128;
        // Megatron-core appends S int8 sequence modes for multimodal datasets.
        if actual != expected && actual != expected + sequences as u128 {
            return Err(bad(format!(
                "file is {actual} bytes but its header ({sequences} sequences, {doc_index_len} document indices) needs {expected} (truncated or corrupt)"
            )));
        }
        let sequences = sequences as usize;
        let doc_index_len = doc_index_len as usize;
        let bin = map_file(&bin_path)?;
        let mut ds = IndexedDataset {
            prefix: prefix.to_path_buf(),
            dtype,
            idx,
            bin,
            sequences,
            doc_index_len,
            tokens: 0,
        };
        ds.validate(&idx_path, &bin_path)?;
        Ok(ds)
    }

    fn validate(&mut self, idx_path: &Path, bin_path: &Path) -> Result<(), MegatronError> {
        let bad_idx = |problem: String| MegatronError::BadIndex {
            path: idx_path.to_path_buf(),
            problem,
        };
        let bin_len = self.bin.as_ref().map_or(0, |b| b.len()) as u64;
        let size = self.dtype.size() as u64;
        let mut expect_ptr: u64 = 0;
        let mut tokens: u64 = 0;
        for i in 0..self.sequences {
            let len = self.raw_len(i);
            let ptr = self.raw_ptr(i);
            if len < 0 {
                return Err(bad_idx(format!("sequence {i} has negative length {len}")));
            }
            if ptr < 0 || ptr as u64 % size != 0 {
                return Err(bad_idx(format!(
                    "sequence {i} pointer {ptr} is not a non-negative multiple of the {}-byte element size",
                    size
                )));
            }
            let end = ptr as u64 + len as u64 * size;
            if end > bin_len {
                return Err(MegatronError::BadData {
                    path: bin_path.to_path_buf(),
                    problem: format!(
                        "file is {bin_len} bytes but sequence {i} ends at byte {end} (truncated .bin or wrong index)"
                    ),
                });
            }
            if ptr as u64 != expect_ptr {
                // Megatron writes contiguous sequences; gaps or overlaps mean corruption.
                return Err(bad_idx(format!(
                    "sequence {i} pointer {ptr} does not follow the previous sequence (expected {expect_ptr})"
                )));
            }
            expect_ptr = end;
            tokens += len as u64;
        }
        if expect_ptr != bin_len {
            return Err(MegatronError::BadData {
                path: bin_path.to_path_buf(),
                problem: format!(
                    "file is {bin_len} bytes but the index accounts for {expect_ptr} (trailing data or wrong index)"
                ),
            });
        }
        if self.doc_index_len == 0 {
            return Err(bad_idx(
                "document index is empty (expected at least the leading 0)".into(),
            ));
        }
        let mut prev = -1i64;
        for d in 0..self.doc_index_len {
            let v = self.raw_doc(d);
            if (d == 0 && v != 0) || v < prev || v as u64 > self.sequences as u64 {
                return Err(bad_idx(format!(
                    "document index {d} is {v}; expected a non-decreasing list from 0 to {}",
                    self.sequences
                )));
            }
            prev = v;
        }
        if prev as usize != self.sequences {
            return Err(bad_idx(format!(
                "last document index is {prev}, expected the sequence count {}",
                self.sequences
            )));
        }
        self.tokens = tokens;
        Ok(())
    }

    #[inline]
    fn raw_len(&self, i: usize) -> i32 {
        let o = HEADER_LEN + i * 4;
        i32::from_le_bytes(self.idx[o..o + 4].try_into().unwrap())
    }

    #[inline]
    fn raw_ptr(&self, i: usize) -> i64 {
        let o = HEADER_LEN + self.sequences * 4 + i * 8;
        i64::from_le_bytes(self.idx[o..o + 8].try_into().unwrap())
    }

    #[inline]
    fn raw_doc(&self, d: usize) -> i64 {
        let o = HEADER_LEN + self.sequences * 12 + d * 8;
        i64::from_le_bytes(self.idx[o..o + 8].try_into().unwrap())
    }

    /// The prefix this dataset was opened from.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Element dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of sequences (MixAtlas writes one per document).
    pub fn sequences(&self) -> usize {
        self.sequences
    }

    /// Number of documents.
    pub fn documents(&self) -> usize {
        self.doc_index_len - 1
    }

    /// Total number of elements in `.bin`.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Length in elements of sequence `i`.
    #[inline]
    pub fn sequence_len(&self, i: usize) -> usize {
        assert!(i < self.sequences, "sequence {i} out of range");
        self.raw_len(i) as usize
    }

    /// Element offset (not bytes) of sequence `i` in `.bin`.
    #[inline]
    pub fn sequence_offset(&self, i: usize) -> u64 {
        assert!(i < self.sequences, "sequence {i} out of range");
        self.raw_ptr(i) as u64 / self.dtype.size() as u64
    }

    /// Raw little-endian bytes of sequence `i`, zero-copy.
    #[inline]
    pub fn sequence_bytes(&self, i: usize) -> &[u8] {
        let start = self.raw_ptr(i) as usize;
        let len = self.sequence_len(i) * self.dtype.size();
        match &self.bin {
            Some(b) => &b[start..start + len],
            None => &[],
        }
    }

    /// The range of sequences forming document `d`.
    #[inline]
    pub fn document_sequences(&self, d: usize) -> std::ops::Range<usize> {
        assert!(d < self.documents(), "document {d} out of range");
        self.raw_doc(d) as usize..self.raw_doc(d + 1) as usize
    }

    /// Raw bytes of document `d` (its sequences are contiguous), zero-copy.
    #[inline]
    pub fn document_bytes(&self, d: usize) -> &[u8] {
        let r = self.document_sequences(d);
        if r.is_empty() {
            return &[];
        }
        let start = self.raw_ptr(r.start) as usize;
        let last = r.end - 1;
        let end = self.raw_ptr(last) as usize + self.sequence_len(last) * self.dtype.size();
        match &self.bin {
            Some(b) => &b[start..end],
            None => &[],
        }
    }

    /// Element offset of document `d` in `.bin` (for side files indexed like the tokens).
    #[inline]
    pub fn document_offset(&self, d: usize) -> u64 {
        let r = self.document_sequences(d);
        if r.is_empty() {
            // An empty document sits where the next sequence would start.
            return if r.start < self.sequences {
                self.sequence_offset(r.start)
            } else {
                self.tokens
            };
        }
        self.sequence_offset(r.start)
    }

    /// Length in elements of document `d`.
    #[inline]
    pub fn document_len(&self, d: usize) -> usize {
        self.document_bytes(d).len() / self.dtype.size()
    }

    /// Appends document `d`'s token ids to `out`; errors name the dataset and position of a
    /// value that is not a valid token id (negative or fractional).
    pub fn read_document(&self, d: usize, out: &mut Vec<u32>) -> Result<(), MegatronError> {
        let bytes = self.document_bytes(d);
        let n = bytes.len() / self.dtype.size();
        out.reserve(n);
        for i in 0..n {
            match self.dtype.decode(bytes, i) {
                Some(t) => out.push(t),
                None => {
                    return Err(MegatronError::BadData {
                        path: prefix_paths(&self.prefix).0,
                        problem: format!(
                            "document {d} element {i} is not a valid token id for dtype {}",
                            self.dtype
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    /// Token ids of document `d` as a new vector.
    pub fn document(&self, d: usize) -> Result<Vec<u32>, MegatronError> {
        let mut v = Vec::new();
        self.read_document(d, &mut v)?;
        Ok(v)
    }

    /// Document `d` as `u16` tokens, zero-copy, when the dtype is `uint16`.
    #[inline]
    pub fn document_u16(&self, d: usize) -> Option<&[u16]> {
        if self.dtype != DType::U16 {
            return None;
        }
        let b = self.document_bytes(d);
        // SAFETY: the map is page-aligned and pointers are multiples of 2 (validated), so the
        // slice is 2-byte aligned; u16 has no invalid bit patterns; the platform is checked
        // to be little-endian below.
        let (pre, mid, post) = unsafe { b.align_to::<u16>() };
        (cfg!(target_endian = "little") && pre.is_empty() && post.is_empty()).then_some(mid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, dtype: DType, docs: &[Vec<u32>]) -> PathBuf {
        let prefix = dir.join(name);
        let mut w = DatasetWriter::create(&prefix, dtype).unwrap();
        for d in docs {
            w.add_document(d).unwrap();
        }
        let s = w.finish().unwrap();
        assert_eq!(s.documents, docs.len() as u64);
        prefix
    }

    #[test]
    fn roundtrip_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let docs = vec![vec![1, 2, 3], vec![], vec![100, 0, 7, 9], vec![42]];
        for dt in DType::ALL {
            let p = write(dir.path(), dt.name(), dt, &docs);
            let ds = IndexedDataset::open(&p).unwrap();
            assert_eq!(ds.dtype(), dt);
            assert_eq!(ds.documents(), 4);
            assert_eq!(ds.tokens(), 8);
            for (i, d) in docs.iter().enumerate() {
                assert_eq!(&ds.document(i).unwrap(), d, "dtype {dt}");
                assert_eq!(ds.document_len(i), d.len());
            }
            assert_eq!(ds.document_offset(2), 3);
            assert_eq!(ds.document_offset(3), 7);
        }
    }

    #[test]
    fn index_bytes_match_published_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x", DType::U16, &[vec![5, 6], vec![7]]);
        let idx = std::fs::read(prefix_paths(&p).1).unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(b"MMIDIDX\x00\x00");
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(8);
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&2i32.to_le_bytes());
        want.extend_from_slice(&1i32.to_le_bytes());
        want.extend_from_slice(&0i64.to_le_bytes());
        want.extend_from_slice(&4i64.to_le_bytes());
        for d in 0..3i64 {
            want.extend_from_slice(&d.to_le_bytes());
        }
        assert_eq!(idx, want);
        let bin = std::fs::read(prefix_paths(&p).0).unwrap();
        assert_eq!(bin, [5, 0, 6, 0, 7, 0]);
    }

    #[test]
    fn corrupt_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x", DType::I32, &[vec![5, 6], vec![7]]);
        let (bin, idx) = prefix_paths(&p);
        let good_idx = std::fs::read(&idx).unwrap();
        let good_bin = std::fs::read(&bin).unwrap();
        let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
            (
                good_idx[..20].to_vec(),
                good_bin.clone(),
                "truncated header",
            ),
            (
                good_idx[..good_idx.len() - 3].to_vec(),
                good_bin.clone(),
                "truncated or corrupt",
            ),
            (
                [b"NOTANIDX\x00".as_slice(), &good_idx[9..]].concat(),
                good_bin.clone(),
                "bad magic",
            ),
            (good_idx.clone(), good_bin[..8].to_vec(), "truncated .bin"),
            (
                good_idx.clone(),
                [good_bin.as_slice(), &[0, 0, 0, 0]].concat(),
                "trailing data",
            ),
            (
                {
                    let mut v = good_idx.clone();
                    v[17] = 9;
                    v
                },
                good_bin.clone(),
                "unknown dtype code 9",
            ),
            (
                {
                    let mut v = good_idx.clone();
                    v[9] = 2;
                    v
                },
                good_bin.clone(),
                "unsupported version 2",
            ),
        ];
        for (i, b, want) in cases {
            std::fs::write(&idx, &i).unwrap();
            std::fs::write(&bin, &b).unwrap();
            let err = IndexedDataset::open(&p).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(err.contains("x.idx") || err.contains("x.bin"), "{err}");
        }
    }

    #[test]
    fn token_out_of_range_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(&dir.path().join("x"), DType::U16).unwrap();
        let err = w.add_document(&[70_000]).unwrap_err().to_string();
        assert!(err.contains("70000") && err.contains("uint16"), "{err}");
    }

    #[test]
    fn zero_copy_u16_view() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x", DType::U16, &[vec![1, 2], vec![3, 65535]]);
        let ds = IndexedDataset::open(&p).unwrap();
        assert_eq!(ds.document_u16(1).unwrap(), &[3, 65535]);
    }
}
