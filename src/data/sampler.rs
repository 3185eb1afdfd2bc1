//! The deterministic mixture sampler: per-cell weights + a seed → batches `[B, T]` of token
//! ids, loss mask and image features.
//!
//! A mixture is only as good as the batches it produces, and every consumer of those batches
//! (the proxy trainer, a multi-node transfer run, the later CUDA fused-sampling kernel) must see
//! exactly the same stream whatever the number of ranks and however often the job restarts.
//! So the stream is defined by a few small pure functions of integers, which this file is the
//! CPU reference for (`docs/sampler.md` states the definition precisely):
//!
//! 1. **Which cell** supplies global sample `g` (a `u64` counting documents from the start of
//!    training):
//!    - [`Mode::Iid`]: an i.i.d. categorical draw. 64 uniform bits come from Philox4x32-10 with
//!      key `philox_key(seed)` and counter `[g lo, g hi, STREAM_CELL, 0]` ([`sample_bits`]);
//!      the cell is looked up in a table of integer thresholds built once on the host from the
//!      weights ([`CellTable`]), so the device side is integer-only and bit-exact.
//!    - [`Mode::Blend`]: Megatron-LM's deterministic blending (`build_blending_indices` in
//!      `megatron/core/datasets/helpers.cpp`): the cell maximising
//!      `w_d · max(g, 1) − count_d` in `f64`, ties to the lowest index ([`blend_cell`]), over
//!      the cells of positive weight.
//! 2. **Which document**: the `j`-th sample cell `d` supplies (its ordinal, `j = count_d`
//!    before the draw) is position `j mod n_d` of epoch `j div n_d`, mapped through a
//!    pseudorandom permutation of `0..n_d` per (seed, cell, epoch): a Feistel network over
//!    the next power of two (4 rounds for large cells, more for small ones) with
//!    cycle-walking ([`permute`]). O(1), allocation-free, every document exactly once per
//!    epoch.
//! 3. **Rows**: [`Packing::Pad`] puts one document per row (truncated to `T`, padded with the
//!    pad token, loss mask 0 on padding); [`Packing::Pack`] concatenates consecutive documents
//!    of the stream greedily (a document that does not fit starts the next row; one longer
//!    than `T` is truncated). The packing depends only on `.idx` lengths. Every document
//!    brings its image (f16, in document order, [`Batch::images`]).
//!
//! Every rank plans the *whole* global batch (cell draws, ordinals, lengths: no token reads)
//! and gathers only its own contiguous share of rows, zero-copy from the memory maps. The
//! [`SamplerState`] (step, next sample, per-cell counts) is all a restart needs; without one,
//! [`Sampler::seek`] replays the plan from step 0.

use std::collections::BTreeMap;
use std::ops::Range;

use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{Corpus, DocumentStore, Manifest};
use super::megatron::DType;
use super::mixture::{in_order, manifest_cells, valid_sum, valid_weight};
use crate::rng::{philox4x32_10, philox_key};

/// Philox counter word 2 of the cell draw ("CELL").
pub const STREAM_CELL: u32 = 0x4345_4C4C;
/// Philox counter word 3 of the permutation round keys ("PERM").
pub const STREAM_PERM: u32 = 0x5045_524D;
pub use super::mixture::WEIGHT_SUM_TOLERANCE;
/// Version of the serialized [`SamplerState`].
pub const SAMPLER_STATE_VERSION: u32 = 1;
/// Below this many local tokens a batch is gathered on the calling thread.
pub const PARALLEL_MIN_TOKENS: usize = 1 << 20;

/// How the cell of each sample is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Independent categorical draws from a counter-based generator.
    #[default]
    Iid,
    /// Megatron-LM's deterministic greedy blending.
    Blend,
}

/// How documents become rows of `T` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// One document per row, truncated to `T`, padded with the pad token (loss mask 0).
    /// One image per row: the default for multimodal training.
    #[default]
    Pad,
    /// Consecutive documents concatenated greedily; a document that does not fit starts the
    /// next row, one longer than `T` is truncated.
    Pack,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Iid => "iid",
            Mode::Blend => "blend",
        })
    }
}

impl std::fmt::Display for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Packing::Pad => "pad",
            Packing::Pack => "pack",
        })
    }
}

/// What can go wrong configuring or running the sampler. Every variant names what was
/// expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// The weight vector and the cell list differ in length.
    #[error("{weights} weights given for {cells} cells; expected one weight per cell")]
    WeightCount {
        /// Weights given.
        weights: usize,
        /// Cells available.
        cells: usize,
    },
    /// A weight is negative, NaN or infinite.
    #[error("weight of {cell} is {value}; expected a finite, non-negative number")]
    BadWeight {
        /// The cell, by index and name.
        cell: String,
        /// The offending weight.
        value: f64,
    },
    /// There are no cells to sample from.
    #[error("no cells to sample from: the corpus has no non-empty concept/task cell (re-run prepare on an input with samples)")]
    NoCells,
    /// The weights do not sum to 1.
    #[error("weights sum to {sum}; expected 1 (within {WEIGHT_SUM_TOLERANCE})")]
    WeightSum {
        /// Their sum.
        sum: f64,
    },
    /// A cell with positive weight has no documents or no tokens to draw.
    #[error("{cell} has weight {weight} but is empty ({documents} documents, {tokens} tokens); give it weight 0 or drop it")]
    EmptyCell {
        /// The cell, by index and name.
        cell: String,
        /// Its weight.
        weight: f64,
        /// Its document count.
        documents: usize,
        /// Its token count.
        tokens: u64,
    },
    /// A mixture names a cell the corpus does not have.
    #[error("unknown cell {name:?}; expected a concept/task name such as {examples} ({cells} cells in the corpus)")]
    UnknownCell {
        /// The name given.
        name: String,
        /// A few valid names.
        examples: String,
        /// How many cells exist.
        cells: usize,
    },
    /// Batch size or sequence length out of range.
    #[error("{what} is {value}; expected {expected}")]
    BadShape {
        /// `batch size` or `sequence length`.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The valid range.
        expected: &'static str,
    },
    /// The global batch cannot be split evenly over the ranks.
    #[error("global batch size {batch} is not divisible by world size {world}; expected a multiple of {world}")]
    BatchNotDivisible {
        /// Global batch size.
        batch: usize,
        /// Number of ranks.
        world: usize,
    },
    /// A rank outside `0..world` (or an empty world).
    #[error("rank {rank} of world size {world}; expected 0 <= rank < world")]
    BadRank {
        /// The rank given.
        rank: usize,
        /// The world size given.
        world: usize,
    },
    /// Cells disagree on image features.
    #[error("{cell} has {found} image elements per document but {reference} has {expected}; expected every cell to carry the same image shape (or none)")]
    ImageMismatch {
        /// The disagreeing cell.
        cell: String,
        /// Its elements per document (0 = no image file).
        found: usize,
        /// The cell the shape was taken from.
        reference: String,
        /// Elements per document there.
        expected: usize,
    },
    /// A stored value is not a valid token id (negative or fractional).
    #[error("{cell} document {document} holds a value that is not a token id for dtype {dtype}; expected non-negative integers")]
    BadToken {
        /// The cell.
        cell: String,
        /// The document.
        document: u64,
        /// The dataset's dtype.
        dtype: DType,
    },
    /// A checkpointed state does not belong to this sampler's configuration.
    #[error("sampler state has {field} = {found}, but this sampler has {expected}; restore it with the configuration it was saved with")]
    StateMismatch {
        /// The field that differs.
        field: &'static str,
        /// The sampler's value.
        expected: String,
        /// The state's value.
        found: String,
    },
}

// ---------------------------------------------------------------------------------------------
// The pure core: what a CUDA kernel has to reproduce.
// ---------------------------------------------------------------------------------------------

/// 64 uniform bits for global sample `g`: Philox4x32-10 with key `philox_key(seed)` and
/// counter `[g as u32, (g >> 32) as u32, STREAM_CELL, 0]`, output words `(r0 << 32) | r1`.
#[inline]
pub fn sample_bits(seed: u64, g: u64) -> u64 {
    let r = philox4x32_10(
        [g as u32, (g >> 32) as u32, STREAM_CELL, 0],
        philox_key(seed),
    );
    ((r[0] as u64) << 32) | r[1] as u64
}

/// Checks a weight vector: finite, non-negative, summing to 1 within
/// [`WEIGHT_SUM_TOLERANCE`]. `label(i)` names cell `i` in errors. Returns the sum.
pub fn validate_weights(
    weights: &[f64],
    label: impl Fn(usize) -> String,
) -> Result<f64, SamplerError> {
    for (i, &w) in weights.iter().enumerate() {
        if !valid_weight(w) {
            return Err(SamplerError::BadWeight {
                cell: label(i),
                value: w,
            });
        }
    }
    if weights.is_empty() {
        return Err(SamplerError::NoCells);
    }
    let sum: f64 = weights.iter().sum();
    if !valid_sum(sum) {
        return Err(SamplerError::WeightSum { sum });
    }
    Ok(sum)
}

/// The i.i.d. mode's categorical distribution as integer thresholds, built once on the host.
///
/// With `p_0 … p_{m-1}` the cells of positive weight in index order, `S` the left-to-right
/// `f64` sum of their weights and `P_k = (w_{p_0} + … + w_{p_{k-1}}) / S` (left-to-right `f64`
/// sums), `edges[k-1] = min(floor(P_k · 2^64), 2^64 − 1)` for `k = 1 … m−1`. A draw `u` (64
/// bits) selects `cells[#{k : edges[k] ≤ u}]`. Only the construction uses floating point; the
/// lookup is integer-only, so a device given the same two arrays agrees bit for bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellTable {
    edges: Vec<u64>,
    cells: Vec<u32>,
}

impl CellTable {
    /// The table for `weights` (validated with [`validate_weights`]; cells are named by index).
    pub fn new(weights: &[f64]) -> Result<Self, SamplerError> {
        validate_weights(weights, |i| format!("cell {i}"))?;
        let cells: Vec<u32> = (0..weights.len() as u32)
            .filter(|&i| weights[i as usize] > 0.0)
            .collect();
        let total: f64 = cells.iter().map(|&c| weights[c as usize]).sum();
        let mut edges = Vec::with_capacity(cells.len().saturating_sub(1));
        let mut prefix = 0.0f64;
        for &c in &cells[..cells.len() - 1] {
            prefix += weights[c as usize];
            // `as` saturates, so P_k = 1 (rounding) gives 2^64 − 1.
            edges.push((prefix / total * 18_446_744_073_709_551_616.0) as u64);
        }
        Ok(Self { edges, cells })
    }

    /// Lower edges of cells `cells[1..]` (non-decreasing).
    pub fn edges(&self) -> &[u64] {
        &self.edges
    }

    /// The cells of positive weight, in index order.
    pub fn cells(&self) -> &[u32] {
        &self.cells
    }

    /// The cell selected by 64 uniform bits `u`.
    #[inline]
    pub fn lookup(&self, u: u64) -> u32 {
        // edges are sorted, so the partition point is the count of edges ≤ u.
        self.cells[self.edges.partition_point(|&e| e <= u)]
    }
}

/// The cell of global sample `g` in [`Mode::Iid`].
#[inline]
pub fn iid_cell(seed: u64, g: u64, table: &CellTable) -> u32 {
    table.lookup(sample_bits(seed, g))
}

/// The cell of global sample `g` in [`Mode::Blend`]: Megatron's greedy rule, given the number
/// of samples each cell supplied before `g` (`counts`, which sum to `g`).
///
/// `argmax_d (w_d · max(g, 1) − counts_d)` over the cells with `w_d > 0`, evaluated in `f64`
/// exactly as `build_blending_indices` does (`g` and `counts_d` converted to `f64` with
/// round-to-nearest, one multiply then one subtract, no fused multiply-add), strict `>` so ties
/// go to the lowest index. Cells of zero weight are never chosen: Megatron's loop would pick
/// them on a tie (`[0, 0.5, 0.5]` selects cell 0 at `g = 2`), so this is Megatron's rule applied
/// to the positive-weight cells, the blend one would hand Megatron.
///
/// # Panics
/// If `weights` and `counts` differ in length or no weight is positive (programmer misuse;
/// [`Sampler::new`] validates both).
#[inline]
#[track_caller]
pub fn blend_cell(weights: &[f64], counts: &[u64], g: u64) -> u32 {
    assert_eq!(weights.len(), counts.len(), "one count per weight");
    let x = (g as f64).max(1.0);
    let mut best = u32::MAX;
    let mut best_error = 0.0f64;
    for (d, (&w, &c)) in weights.iter().zip(counts).enumerate() {
        if w > 0.0 {
            let error = w * x - c as f64;
            if best == u32::MAX || error > best_error {
                best = d as u32;
                best_error = error;
            }
        }
    }
    assert!(best != u32::MAX, "blend_cell needs a positive weight");
    best
}

/// SplitMix64's finaliser (Stafford's Mix13): a cheap bijective 64-bit mixer.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The four Feistel round keys of the permutation of `cell`'s documents in `epoch`:
/// Philox4x32-10 with key `philox_key(seed)` and counter
/// `[epoch as u32, (epoch >> 32) as u32, cell, STREAM_PERM]`.
#[inline]
pub fn permutation_keys(seed: u64, cell: u32, epoch: u64) -> [u32; 4] {
    philox4x32_10(
        [epoch as u32, (epoch >> 32) as u32, cell, STREAM_PERM],
        philox_key(seed),
    )
}

#[inline]
fn low_mask(bits: u32) -> u64 {
    // bits ≤ 32 here.
    (1u64 << bits) - 1
}

/// Feistel rounds for a domain of `2^bits`: `2 · max(2, ceil(32 / bits))`.
///
/// Four rounds of a strong round function are plenty for wide domains (≥ 16 bits), but with
/// halves of a few bits each round function has few possible values and the permutation
/// family is far from uniform (a χ² test of where one position lands over many epochs rejects
/// 4 rounds badly below ~8 bits), so small domains get more rounds: 4 rounds from 16 bits,
/// 6 for 11–15, 8 for 8–10, … 22 for 3, 32 for 2 bits. Small cells are cheap anyway.
#[inline]
pub fn feistel_rounds(bits: u32) -> u32 {
    2 * 32u32.div_ceil(bits.max(1)).max(2)
}

/// An alternating (possibly unbalanced) Feistel bijection of `[0, 2^bits)`, `1 ≤ bits ≤ 64`,
/// with [`feistel_rounds`]`(bits)` rounds (always even).
///
/// `x` splits into `L = x >> b` (`a = bits / 2` bits) and `R = x & (2^b − 1)`
/// (`b = bits − a` bits). Round `r` uses the 32-bit key
/// `k_r = keys[r mod 4] ^ (floor(r / 4) · 0x9E3779B9 mod 2^32)`, computes
/// `F = mix64((k_r << 32) | R) & (2^{width(L)} − 1)` and sets `(L, R) ← (R, L ^ F)`, so the
/// widths swap every round; after an even number of rounds they are back to `(a, b)` and the
/// result is `(L << b) | R`.
#[inline]
pub fn feistel(x: u64, bits: u32, keys: &[u32; 4]) -> u64 {
    let a = bits / 2;
    let b = bits - a;
    let (mut l, mut r) = (x >> b, x & low_mask(b));
    let (mut wl, mut wr) = (a, b);
    for round in 0..feistel_rounds(bits) {
        let k = keys[(round & 3) as usize] ^ (round >> 2).wrapping_mul(0x9E37_79B9);
        let f = mix64(((k as u64) << 32) | r) & low_mask(wl);
        (l, r) = (r, l ^ f);
        (wl, wr) = (wr, wl);
    }
    (l << wr) | r
}

/// Position `position` of the pseudorandom permutation of `0..n` for (`seed`, `cell`,
/// `epoch`): [`feistel`] over `bits = ceil(log2 n)` with [`permutation_keys`], re-applied while
/// the value is `≥ n` (cycle-walking; fewer than 2 applications on average since `2^bits < 2n`).
///
/// # Panics
/// If `position >= n`.
#[inline]
#[track_caller]
pub fn permute(seed: u64, cell: u32, epoch: u64, position: u64, n: u64) -> u64 {
    assert!(position < n, "position {position} outside 0..{n}");
    if n == 1 {
        return 0;
    }
    permute_with_keys(&permutation_keys(seed, cell, epoch), position, n)
}

/// [`permute`] given the round keys (`permutation_keys(seed, cell, epoch)`), for callers that
/// draw many positions of one epoch.
///
/// # Panics
/// If `position >= n`.
#[inline]
#[track_caller]
pub fn permute_with_keys(keys: &[u32; 4], position: u64, n: u64) -> u64 {
    assert!(position < n, "position {position} outside 0..{n}");
    if n == 1 {
        return 0;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let mut x = feistel(position, bits, keys);
    while x >= n {
        x = feistel(x, bits, keys);
    }
    x
}

/// The document supplying the `ordinal`-th sample of a cell of `n` documents:
/// `(epoch, document) = (ordinal / n, permute(seed, cell, ordinal / n, ordinal % n, n))`.
#[inline]
#[track_caller]
pub fn document_for(seed: u64, cell: u32, ordinal: u64, n: u64) -> (u64, u64) {
    let epoch = ordinal / n;
    (epoch, permute(seed, cell, epoch, ordinal % n, n))
}

// ---------------------------------------------------------------------------------------------
// The sampler.
// ---------------------------------------------------------------------------------------------

/// Everything that defines a sample stream besides the corpus and the weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Seed of the cell draws and the per-epoch permutations.
    pub seed: u64,
    /// How cells are chosen.
    pub mode: Mode,
    /// How documents become rows.
    pub packing: Packing,
    /// Global batch size `B` (rows per step, all ranks together).
    pub batch_size: usize,
    /// Sequence length `T` (tokens per row).
    pub seq_len: usize,
    /// Token id written into padding.
    pub pad_token: u32,
}

impl SamplerConfig {
    /// Seed 0, i.i.d. draws, padding, pad token 0.
    pub fn new(batch_size: usize, seq_len: usize) -> Self {
        Self {
            seed: 0,
            mode: Mode::Iid,
            packing: Packing::Pad,
            batch_size,
            seq_len,
            pad_token: 0,
        }
    }

    /// As [`SamplerConfig::new`] with the manifest's pad token.
    pub fn for_manifest(manifest: &Manifest, batch_size: usize, seq_len: usize) -> Self {
        Self {
            pad_token: manifest.special_tokens.pad,
            ..Self::new(batch_size, seq_len)
        }
    }
}

/// Where a sampler is in its stream: all a checkpoint needs to continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerState {
    /// [`SAMPLER_STATE_VERSION`].
    pub version: u32,
    /// Seed of the stream (checked on restore).
    pub seed: u64,
    /// Mode of the stream (checked on restore).
    pub mode: Mode,
    /// Packing of the stream (checked on restore).
    pub packing: Packing,
    /// Global batch size (checked on restore).
    pub batch_size: usize,
    /// Sequence length (checked on restore).
    pub seq_len: usize,
    /// Steps (global batches) produced so far.
    pub step: u64,
    /// Global index of the next sample (document) of the stream.
    pub next_sample: u64,
    /// Documents each cell has supplied so far (= its next ordinal).
    pub cell_counts: Vec<u64>,
    /// Tokens each cell has supplied so far (after truncation).
    pub cell_tokens: Vec<u64>,
}

/// One document placed in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedDoc {
    /// Global sample index `g` in the stream.
    pub sample: u64,
    /// The cell it came from.
    pub cell: u32,
    /// Document index within the cell.
    pub document: u64,
    /// The cell's epoch this draw belongs to.
    pub epoch: u64,
    /// Row: within the global batch in plans, within the local rows in [`Batch::docs`].
    pub row: u32,
    /// First token position in the row.
    pub start: u32,
    /// Tokens placed (the document's length, or less when truncated to `T`).
    pub len: u32,
    /// The document's full length in tokens.
    pub doc_len: u64,
}

/// One rank's share of a global batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The step (global batch index, from 0) this batch belongs to.
    pub step: u64,
    /// Global index of this rank's first row.
    pub first_row: usize,
    /// Local rows.
    pub rows: usize,
    /// `T`.
    pub seq_len: usize,
    /// Token ids, `rows × seq_len`, row-major.
    pub tokens: Vec<u32>,
    /// Loss mask, `rows × seq_len`: the document's mask (1 everywhere when the cell has no
    /// `.mask` file), 0 on padding.
    pub loss_mask: Vec<u8>,
    /// The documents of the local rows in row order (`row` is local), with their cells.
    pub docs: Vec<PlacedDoc>,
    /// Image feature elements per document (`patches × dim`; 0 for text-only corpora).
    pub image_elems: usize,
    /// Image features, `docs.len() × image_elems` f16, in `docs` order (one image per
    /// document, also for documents truncated to nothing).
    pub images: Vec<f16>,
    /// Documents each cell supplied to the *global* batch (the same on every rank).
    pub supplied: Vec<u64>,
    /// Tokens each cell supplied to the global batch (after truncation).
    pub supplied_tokens: Vec<u64>,
}

impl Batch {
    /// The documents of local row `row`.
    pub fn row_docs(&self, row: usize) -> &[PlacedDoc] {
        let lo = self.docs.partition_point(|d| (d.row as usize) < row);
        let hi = self.docs.partition_point(|d| (d.row as usize) <= row);
        &self.docs[lo..hi]
    }

    /// Image features of `docs[i]`.
    pub fn image(&self, i: usize) -> &[f16] {
        &self.images[i * self.image_elems..(i + 1) * self.image_elems]
    }
}

/// Maps `concept/task` names to a weight vector in manifest cell order; cells not named get 0
/// ([`in_order`]). Values are not checked here ([`Sampler::new`] does).
pub fn weights_from_names(
    manifest: &Manifest,
    named: &BTreeMap<String, f64>,
) -> Result<Vec<f64>, SamplerError> {
    in_order(named, &manifest_cells(manifest)).map_err(|e| SamplerError::UnknownCell {
        name: e.name,
        examples: e.examples,
        cells: e.cells,
    })
}

/// The mixture sampler over a set of memory-mapped cells.
///
/// Every rank constructs the same sampler and calls [`Sampler::next_batch`] once per step
/// with its own `(rank, world)`; all ranks advance identically.
#[derive(Debug)]
pub struct Sampler<'a> {
    cells: &'a [DocumentStore],
    labels: Vec<String>,
    weights: Vec<f64>,
    table: CellTable,
    config: SamplerConfig,
    image_elems: usize,
    documents: Vec<u64>,
    state: SamplerState,
}

impl<'a> Sampler<'a> {
    /// A sampler over `cells` (named by index in errors) with one weight per cell.
    pub fn new(
        cells: &'a [DocumentStore],
        weights: &[f64],
        config: SamplerConfig,
    ) -> Result<Self, SamplerError> {
        let labels = (0..cells.len()).map(|i| format!("cell {i}")).collect();
        Self::with_labels(cells, labels, weights, config)
    }

    /// A sampler over a corpus's cells, named `cell i (concept/task)` in errors.
    pub fn for_corpus(
        corpus: &'a Corpus,
        weights: &[f64],
        config: SamplerConfig,
    ) -> Result<Self, SamplerError> {
        let labels = (0..corpus.cells.len())
            .map(|i| match corpus.manifest.cells.get(i) {
                Some(c) => format!("cell {i} ({})", c.data.name),
                None => format!("cell {i}"),
            })
            .collect();
        Self::with_labels(&corpus.cells, labels, weights, config)
    }

    fn with_labels(
        cells: &'a [DocumentStore],
        labels: Vec<String>,
        weights: &[f64],
        config: SamplerConfig,
    ) -> Result<Self, SamplerError> {
        if weights.len() != cells.len() {
            return Err(SamplerError::WeightCount {
                weights: weights.len(),
                cells: cells.len(),
            });
        }
        validate_weights(weights, |i| labels[i].clone())?;
        for (i, (c, &w)) in cells.iter().zip(weights).enumerate() {
            if w > 0.0 && (c.documents() == 0 || c.tokens.tokens() == 0) {
                return Err(SamplerError::EmptyCell {
                    cell: labels[i].clone(),
                    weight: w,
                    documents: c.documents(),
                    tokens: c.tokens.tokens(),
                });
            }
        }
        if config.batch_size == 0 || config.batch_size > u32::MAX as usize {
            return Err(SamplerError::BadShape {
                what: "batch size",
                value: config.batch_size as u64,
                expected: "1 ..= 2^32 - 1",
            });
        }
        if config.seq_len == 0 || config.seq_len > u32::MAX as usize {
            return Err(SamplerError::BadShape {
                what: "sequence length",
                value: config.seq_len as u64,
                expected: "1 ..= 2^32 - 1",
            });
        }
        // Image shape: from the first non-empty cell; all others must agree.
        let mut image_ref: Option<(usize, usize)> = None;
        for (i, c) in cells.iter().enumerate() {
            if c.documents() == 0 {
                continue;
            }
            let elems = c.image_bytes(0).map_or(0, |b| b.len() / 2);
            match image_ref {
                None => image_ref = Some((i, elems)),
                Some((r, e)) if e != elems => {
                    return Err(SamplerError::ImageMismatch {
                        cell: labels[i].clone(),
                        found: elems,
                        reference: labels[r].clone(),
                        expected: e,
                    })
                }
                Some(_) => {}
            }
        }
        let image_elems = image_ref.map_or(0, |(_, e)| e);
        let table = CellTable::new(weights)?;
        let state = SamplerState {
            version: SAMPLER_STATE_VERSION,
            seed: config.seed,
            mode: config.mode,
            packing: config.packing,
            batch_size: config.batch_size,
            seq_len: config.seq_len,
            step: 0,
            next_sample: 0,
            cell_counts: vec![0; cells.len()],
            cell_tokens: vec![0; cells.len()],
        };
        Ok(Self {
            cells,
            labels,
            weights: weights.to_vec(),
            table,
            documents: cells.iter().map(|c| c.documents() as u64).collect(),
            config,
            image_elems,
            state,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The weights, one per cell.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The i.i.d. mode's threshold table (what a device kernel is given).
    pub fn cell_table(&self) -> &CellTable {
        &self.table
    }

    /// Image elements per document (0 without images).
    pub fn image_elems(&self) -> usize {
        self.image_elems
    }

    /// The current state (serialize it into checkpoints).
    pub fn state(&self) -> &SamplerState {
        &self.state
    }

    /// The next step to be produced.
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Documents each cell has supplied so far, cumulative over all steps.
    pub fn supplied(&self) -> &[u64] {
        &self.state.cell_counts
    }

    /// Tokens each cell has supplied so far (after truncation), cumulative over all steps.
    pub fn supplied_tokens(&self) -> &[u64] {
        &self.state.cell_tokens
    }

    /// Continues from a checkpointed state, checking that it belongs to this configuration.
    pub fn restore(&mut self, state: SamplerState) -> Result<(), SamplerError> {
        let c = &self.config;
        let checks: [(&'static str, String, String); 8] = [
            (
                "version",
                SAMPLER_STATE_VERSION.to_string(),
                state.version.to_string(),
            ),
            ("seed", c.seed.to_string(), state.seed.to_string()),
            ("mode", c.mode.to_string(), state.mode.to_string()),
            ("packing", c.packing.to_string(), state.packing.to_string()),
            (
                "batch_size",
                c.batch_size.to_string(),
                state.batch_size.to_string(),
            ),
            ("seq_len", c.seq_len.to_string(), state.seq_len.to_string()),
            (
                "cell_counts length",
                self.cells.len().to_string(),
                state.cell_counts.len().to_string(),
            ),
            (
                "cell_tokens length",
                self.cells.len().to_string(),
                state.cell_tokens.len().to_string(),
            ),
        ];
        for (field, expected, found) in checks {
            if expected != found {
                return Err(SamplerError::StateMismatch {
                    field,
                    expected,
                    found,
                });
            }
        }
        let drawn: u64 = state.cell_counts.iter().sum();
        if drawn != state.next_sample {
            return Err(SamplerError::StateMismatch {
                field: "next_sample",
                expected: format!("the sum of cell_counts ({drawn})"),
                found: state.next_sample.to_string(),
            });
        }
        self.state = state;
        Ok(())
    }

    /// Moves to the start of `step` without reading tokens: from the current state when
    /// `step` is ahead, else from step 0. Costs one plan (no data access) per skipped step.
    pub fn seek(&mut self, step: u64) {
        if step < self.state.step {
            self.state.step = 0;
            self.state.next_sample = 0;
            self.state.cell_counts.iter_mut().for_each(|c| *c = 0);
            self.state.cell_tokens.iter_mut().for_each(|c| *c = 0);
        }
        let mut plan = Vec::new();
        while self.state.step < step {
            let mut next = self.state.clone();
            self.plan_into(&mut next, &mut plan);
            self.state = next;
        }
    }

    /// Cell and (epoch, document) of global sample `g` given the counts before it; `keys`
    /// caches each cell's permutation keys for its latest epoch (same result as
    /// [`document_for`]).
    #[inline]
    fn draw(
        &self,
        g: u64,
        counts: &[u64],
        keys: &mut [Option<(u64, [u32; 4])>],
    ) -> (u32, u64, u64) {
        let cell = match self.config.mode {
            Mode::Iid => iid_cell(self.config.seed, g, &self.table),
            Mode::Blend => blend_cell(&self.weights, counts, g),
        };
        let n = self.documents[cell as usize];
        let ordinal = counts[cell as usize];
        let epoch = ordinal / n;
        let k = match keys[cell as usize] {
            Some((e, k)) if e == epoch => k,
            _ => {
                let k = permutation_keys(self.config.seed, cell, epoch);
                keys[cell as usize] = Some((epoch, k));
                k
            }
        };
        (cell, epoch, permute_with_keys(&k, ordinal % n, n))
    }

    /// Plans the global batch at `state` into `plan` (global rows) and advances `state`.
    fn plan_into(&self, state: &mut SamplerState, plan: &mut Vec<PlacedDoc>) {
        plan.clear();
        let t = self.config.seq_len;
        let b = self.config.batch_size;
        let mut g = state.next_sample;
        let mut keys = vec![None; self.cells.len()];
        let push = |state: &mut SamplerState,
                    plan: &mut Vec<PlacedDoc>,
                    g: u64,
                    (cell, epoch, doc): (u32, u64, u64),
                    doc_len: usize,
                    row: usize,
                    start: usize| {
            let len = doc_len.min(t - start);
            plan.push(PlacedDoc {
                sample: g,
                cell,
                document: doc,
                epoch,
                row: row as u32,
                start: start as u32,
                len: len as u32,
                doc_len: doc_len as u64,
            });
            state.cell_counts[cell as usize] += 1;
            state.cell_tokens[cell as usize] += len as u64;
            len
        };
        match self.config.packing {
            Packing::Pad => {
                for row in 0..b {
                    let d = self.draw(g, &state.cell_counts, &mut keys);
                    let doc_len = self.cells[d.0 as usize].tokens.document_len(d.2 as usize);
                    push(state, plan, g, d, doc_len, row, 0);
                    g += 1;
                }
            }
            Packing::Pack => {
                let (mut row, mut used) = (0usize, 0usize);
                loop {
                    let d = self.draw(g, &state.cell_counts, &mut keys);
                    let doc_len = self.cells[d.0 as usize].tokens.document_len(d.2 as usize);
                    if used > 0 && used + doc_len.min(t) > t {
                        row += 1;
                        used = 0;
                        if row == b {
                            break; // sample g opens the next batch
                        }
                    }
                    used += push(state, plan, g, d, doc_len, row, used);
                    g += 1;
                }
            }
        }
        state.next_sample = g;
        state.step += 1;
    }

    /// The plan of the next global batch (every rank's rows; `row` is global) without
    /// advancing: what a device kernel gathers from.
    pub fn peek_plan(&self) -> Vec<PlacedDoc> {
        let mut next = self.state.clone();
        let mut plan = Vec::new();
        self.plan_into(&mut next, &mut plan);
        plan
    }

    /// This rank's share of the next global batch; advances the stream (on every rank alike).
    pub fn next_batch(&mut self, rank: usize, world: usize) -> Result<Batch, SamplerError> {
        let mut b = Batch::default();
        self.next_batch_into(rank, world, &mut b)?;
        Ok(b)
    }

    /// As [`Sampler::next_batch`], reusing `out`'s buffers. On error the stream does not
    /// advance.
    pub fn next_batch_into(
        &mut self,
        rank: usize,
        world: usize,
        out: &mut Batch,
    ) -> Result<(), SamplerError> {
        let b = self.config.batch_size;
        if world == 0 || rank >= world {
            return Err(SamplerError::BadRank { rank, world });
        }
        if b % world != 0 {
            return Err(SamplerError::BatchNotDivisible { batch: b, world });
        }
        let local = b / world;
        let (r0, r1) = (rank * local, (rank + 1) * local);
        let mut next = self.state.clone();
        let mut plan = std::mem::take(&mut out.docs);
        self.plan_into(&mut next, &mut plan);
        out.supplied.clear();
        out.supplied.extend(
            next.cell_counts
                .iter()
                .zip(&self.state.cell_counts)
                .map(|(a, b)| a - b),
        );
        out.supplied_tokens.clear();
        out.supplied_tokens.extend(
            next.cell_tokens
                .iter()
                .zip(&self.state.cell_tokens)
                .map(|(a, b)| a - b),
        );
        // Keep only the local rows, renumbered from 0.
        let lo = plan.partition_point(|d| (d.row as usize) < r0);
        let hi = plan.partition_point(|d| (d.row as usize) < r1);
        plan.truncate(hi);
        plan.drain(..lo);
        for d in &mut plan {
            d.row -= r0 as u32;
        }
        out.docs = plan;
        out.step = self.state.step;
        out.first_row = r0;
        out.rows = local;
        out.seq_len = self.config.seq_len;
        self.gather(out)?;
        self.state = next;
        Ok(())
    }

    /// Fills `out`'s tokens, mask and images from `out.docs` (local rows).
    ///
    /// Reading is latency-bound: documents sit at random places in maps much larger than the
    /// caches, and a short document is a few cache lines of tokens, mask and image each. So
    /// the source spans of every document are resolved first; while one document is copied,
    /// the first 4 KiB of each span of the one [`PREFETCH_AHEAD`] places later are prefetched;
    /// and every copy goes through a small staging buffer with a plain `memcpy` (many loads
    /// in flight) before the element-wise widening, which then reads from L1.
    fn gather(&self, out: &mut Batch) -> Result<(), SamplerError> {
        let t = out.seq_len;
        let n = out.rows * t;
        let e = self.image_elems;
        // Every element is overwritten below, so resizing without clearing is enough.
        out.tokens.resize(n, 0);
        out.loss_mask.resize(n, 0);
        out.images.resize(out.docs.len() * e, f16::ZERO);
        out.image_elems = e;
        let spans: Vec<Span<'_>> = out.docs.iter().map(|d| self.span(d)).collect();
        // Document range and image slice of each row.
        let mut ranges = Vec::with_capacity(out.rows);
        let mut images = Vec::with_capacity(out.rows);
        let mut rest: &mut [f16] = &mut out.images;
        let mut i = 0;
        for row in 0..out.rows {
            let s = i;
            while i < out.docs.len() && out.docs[i].row as usize == row {
                i += 1;
            }
            ranges.push(s..i);
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut((i - s) * e);
            images.push(mine);
            rest = tail;
        }
        let docs = &out.docs;
        let spans = &spans[..];
        let pad = self.config.pad_token;
        type Row<'x> = (
            ((&'x mut [u32], &'x mut [u8]), &'x mut [f16]),
            &'x Range<usize>,
        );
        let fill_row = |(((tokens, mask), images), range): Row<'_>| -> Result<(), SamplerError> {
            let mut stage = [0u8; STAGE_BYTES];
            let mut end = 0usize;
            for (k, i) in range.clone().enumerate() {
                if let Some(ahead) = spans.get(i + PREFETCH_AHEAD) {
                    ahead.prefetch();
                }
                let d = &docs[i];
                let (s, x) = (d.start as usize, d.start as usize + d.len as usize);
                self.copy_tokens(d, &spans[i], &mut tokens[s..x], &mut mask[s..x], &mut stage)?;
                if let Some(src) = spans[i].image {
                    copy_f16(src, &mut images[k * e..(k + 1) * e], &mut stage);
                }
                end = x;
            }
            tokens[end..].fill(pad);
            mask[end..].fill(0);
            Ok(())
        };
        let rows = out
            .tokens
            .chunks_mut(t)
            .zip(out.loss_mask.chunks_mut(t))
            .zip(images)
            .zip(&ranges);
        if n >= PARALLEL_MIN_TOKENS && rayon::current_num_threads() > 1 {
            rows.collect::<Vec<_>>()
                .into_par_iter()
                .try_for_each(fill_row)
        } else {
            rows.into_iter().try_for_each(fill_row)
        }
    }

    /// Where document `d`'s tokens, mask and image live in the maps.
    #[inline]
    fn span(&self, d: &PlacedDoc) -> Span<'a> {
        let store = &self.cells[d.cell as usize];
        let doc = d.document as usize;
        Span {
            tokens: store.tokens.document_bytes(doc),
            mask: store.mask(doc),
            image: store.image_bytes(doc),
        }
    }

    /// Copies the first `tokens.len()` tokens and mask bytes of `d` into the slices.
    #[inline]
    fn copy_tokens(
        &self,
        d: &PlacedDoc,
        span: &Span<'_>,
        tokens: &mut [u32],
        mask: &mut [u8],
        stage: &mut [u8; STAGE_BYTES],
    ) -> Result<(), SamplerError> {
        let len = tokens.len();
        match span.mask {
            Some(m) => mask.copy_from_slice(&m[..len]),
            None => mask.fill(1),
        }
        let dtype = self.cells[d.cell as usize].tokens.dtype();
        let size = dtype.size();
        let mut ok = true;
        for (src, out) in span.tokens[..len * size]
            .chunks(STAGE_BYTES)
            .zip(tokens.chunks_mut(STAGE_BYTES / size))
        {
            let stage = &mut stage[..src.len()];
            stage.copy_from_slice(src);
            ok &= decode_tokens(dtype, stage, out);
        }
        if ok {
            Ok(())
        } else {
            Err(SamplerError::BadToken {
                cell: self.labels[d.cell as usize].clone(),
                document: d.document,
                dtype,
            })
        }
    }
}

/// Bytes staged at a time between a map and the output (a multiple of every element size).
const STAGE_BYTES: usize = 4096;
/// How many documents ahead of the one being copied are prefetched.
const PREFETCH_AHEAD: usize = 4;
/// How many bytes of each span of a document ahead are prefetched.
const PREFETCH_BYTES: usize = 4096;

/// A document's bytes in the maps.
struct Span<'m> {
    tokens: &'m [u8],
    mask: Option<&'m [u8]>,
    image: Option<&'m [u8]>,
}

impl Span<'_> {
    /// Prefetches the first [`PREFETCH_BYTES`] of tokens, mask and image (a whole typical
    /// document; the hardware prefetcher follows longer streams).
    #[inline]
    fn prefetch(&self) {
        prefetch(self.tokens, PREFETCH_BYTES);
        if let Some(m) = self.mask {
            prefetch(m, PREFETCH_BYTES / 2);
        }
        if let Some(i) = self.image {
            prefetch(i, PREFETCH_BYTES);
        }
    }
}

/// Hints the CPU to load the first `max` bytes of `bytes` into cache.
#[inline(always)]
fn prefetch(bytes: &[u8], max: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let n = bytes.len().min(max);
        for off in (0..n).step_by(64) {
            // SAFETY: a prefetch is only a hint and never faults; the address is inside
            // `bytes`; SSE is part of the x86_64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(off) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, max);
}

/// Converts little-endian f16 bytes into `out`, staged like the tokens.
#[inline]
fn copy_f16(src: &[u8], out: &mut [f16], stage: &mut [u8; STAGE_BYTES]) {
    for (src, out) in src.chunks(STAGE_BYTES).zip(out.chunks_mut(STAGE_BYTES / 2)) {
        let stage = &mut stage[..src.len()];
        stage.copy_from_slice(src);
        for (o, c) in out.iter_mut().zip(stage.chunks_exact(2)) {
            *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]]));
        }
    }
}

/// Decodes the first `out.len()` elements of little-endian `bytes` as token ids; `false` if
/// any is not a valid id.
fn decode_tokens(dtype: DType, bytes: &[u8], out: &mut [u32]) -> bool {
    let n = out.len();
    match dtype {
        DType::U8 => {
            for (o, &v) in out.iter_mut().zip(&bytes[..n]) {
                *o = v as u32;
            }
            true
        }
        DType::U16 => {
            for (o, c) in out.iter_mut().zip(bytes[..2 * n].chunks_exact(2)) {
                *o = u16::from_le_bytes([c[0], c[1]]) as u32;
            }
            true
        }
        DType::I32 => {
            let mut negative = false;
            for (o, c) in out.iter_mut().zip(bytes[..4 * n].chunks_exact(4)) {
                let v = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                negative |= v < 0;
                *o = v as u32;
            }
            !negative
        }
        _ => {
            for (i, o) in out.iter_mut().enumerate() {
                match dtype.decode(bytes, i) {
                    Some(v) => *o = v,
                    None => return false,
                }
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_a_bijection_for_many_sizes() {
        for n in (1..=70u64).chain([127, 128, 129, 1000, 1023, 1024, 1025, 4097]) {
            for epoch in 0..3 {
                let mut seen = vec![false; n as usize];
                for p in 0..n {
                    let x = permute(7, 3, epoch, p, n);
                    assert!(x < n, "n {n}: {x}");
                    assert!(!seen[x as usize], "n {n} epoch {epoch}: {x} twice");
                    seen[x as usize] = true;
                }
            }
        }
    }

    #[test]
    fn feistel_is_a_bijection_of_the_power_of_two() {
        for bits in 1..=12u32 {
            let keys = permutation_keys(11, 0, bits as u64);
            let mut seen = vec![false; 1 << bits];
            for x in 0..1u64 << bits {
                let y = feistel(x, bits, &keys);
                assert!(y < 1 << bits);
                assert!(!seen[y as usize]);
                seen[y as usize] = true;
            }
        }
        // Wide domains stay in range.
        let keys = permutation_keys(1, 2, 3);
        for bits in [33u32, 47, 63, 64] {
            for x in [0u64, 1, 12_345, (1u64 << (bits - 1)) + 17] {
                let y = feistel(x, bits, &keys);
                assert!(bits == 64 || y < 1u64 << bits);
            }
        }
    }

    #[test]
    fn permutations_differ_between_epochs_cells_and_seeds() {
        let n = 100;
        let p = |seed, cell, epoch| -> Vec<u64> {
            (0..n).map(|i| permute(seed, cell, epoch, i, n)).collect()
        };
        let base = p(1, 0, 0);
        assert_ne!(base, p(1, 0, 1));
        assert_ne!(base, p(1, 1, 0));
        assert_ne!(base, p(2, 0, 0));
        assert_ne!(base, (0..n).collect::<Vec<_>>());
    }

    /// χ² statistic of `hist` against a uniform expectation.
    fn chi2_uniform(hist: &[u32]) -> f64 {
        let total: u32 = hist.iter().sum();
        let expect = total as f64 / hist.len() as f64;
        hist.iter()
            .map(|&h| (h as f64 - expect).powi(2) / expect)
            .sum()
    }

    #[test]
    fn permutation_family_is_close_to_uniform_for_small_cells() {
        // Where one position lands, and where two adjacent positions land jointly, over many
        // epochs. Small domains are where a Feistel network is weakest.
        // χ² 0.999 quantiles (NIST/SEMATECH e-Handbook 1.3.6.7.4, upper-tail critical values
        // of the chi-square distribution): df 4: 18.467, df 9: 27.877, df 29: 58.301.
        let epochs = 30_000u64;
        for (n, crit) in [(5u64, 18.467), (10, 27.877)] {
            let mut hist = vec![0u32; n as usize];
            for e in 0..epochs {
                hist[permute(5, 0, e, n / 2, n) as usize] += 1;
            }
            let chi2 = chi2_uniform(&hist);
            assert!(chi2 < crit, "n {n}: {hist:?} χ² {chi2}");
        }
        let n = 6u64;
        let mut pairs = vec![0u32; 30];
        for e in 0..epochs {
            let (x, y) = (permute(9, 2, e, 2, n), permute(9, 2, e, 3, n));
            let k = x * n + y;
            pairs[(k - k / (n + 1) - 1) as usize] += 1; // ordered pairs x ≠ y, 0..30
        }
        let chi2 = chi2_uniform(&pairs);
        assert!(chi2 < 58.301, "{pairs:?} χ² {chi2}");
    }

    #[test]
    fn cell_table_thresholds() {
        let t = CellTable::new(&[0.0, 0.25, 0.0, 0.75, 0.0]).unwrap();
        assert_eq!(t.cells(), &[1, 3]);
        assert_eq!(t.edges(), &[1u64 << 62]);
        assert_eq!(t.lookup(0), 1);
        assert_eq!(t.lookup((1 << 62) - 1), 1);
        assert_eq!(t.lookup(1 << 62), 3);
        assert_eq!(t.lookup(u64::MAX), 3);
        let one = CellTable::new(&[0.0, 1.0]).unwrap();
        assert!(one.edges().is_empty());
        assert_eq!(one.lookup(u64::MAX), 1);
        assert!(CellTable::new(&[0.5, 0.6]).is_err());
        assert!(CellTable::new(&[]).is_err());
    }

    #[test]
    fn sample_bits_are_philox_words() {
        let r = philox4x32_10([5, 1, STREAM_CELL, 0], philox_key(99));
        assert_eq!(
            sample_bits(99, (1 << 32) | 5),
            ((r[0] as u64) << 32) | r[1] as u64
        );
    }

    #[test]
    fn blend_cell_skips_zero_weights_and_breaks_ties_low() {
        // Megatron's raw loop would pick the zero-weight cell 0 at g = 2 here.
        let w = [0.0, 0.5, 0.5];
        let mut counts = [0u64; 3];
        let mut seq = Vec::new();
        for g in 0..6 {
            let c = blend_cell(&w, &counts, g);
            counts[c as usize] += 1;
            seq.push(c);
        }
        assert_eq!(seq, [1, 2, 1, 2, 1, 2]);
        assert_eq!(blend_cell(&[0.5, 0.5], &[0, 0], 0), 0);
    }

    #[test]
    fn decode_rejects_negative_ids() {
        let bytes: Vec<u8> = [5i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0u32; 2];
        assert!(!decode_tokens(DType::I32, &bytes, &mut out));
        assert!(decode_tokens(DType::I32, &bytes[..4], &mut out[..1]));
        assert_eq!(out[0], 5);
        let bytes: Vec<u8> = [7i64, -3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(!decode_tokens(DType::I64, &bytes, &mut out));
    }

    /// Pins the CPU reference (the definition the CUDA kernel reproduces, docs/sampler.md):
    /// the first 16 (cell, document) draws of seed 7 in both modes and a digest of whole
    /// batches. Any change to the stream fails here; change these values only together with
    /// a deliberate, documented change of the definition (and the kernel).
    #[test]
    fn pinned_reference_stream() {
        use sha2::{Digest, Sha256};
        let sizes = [5u64, 1, 0, 17, 300, 2];
        let weights = [0.3, 0.1, 0.0, 0.25, 0.3, 0.05];
        let table = CellTable::new(&weights).unwrap();
        let mut out = String::new();
        for mode in [Mode::Iid, Mode::Blend] {
            let mut counts = [0u64; 6];
            let mut pairs = Vec::new();
            for g in 0..16u64 {
                let cell = match mode {
                    Mode::Iid => iid_cell(7, g, &table),
                    Mode::Blend => blend_cell(&weights, &counts, g),
                };
                let (_, doc) = document_for(7, cell, counts[cell as usize], sizes[cell as usize]);
                counts[cell as usize] += 1;
                pairs.push((cell, doc));
            }
            out.push_str(&format!("{mode}: {pairs:?}\n"));
        }
        // Whole batches over a deterministic corpus: sha256 of tokens (u32 LE) then mask.
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::rng::SplitMix64::new(7);
        let cells: Vec<DocumentStore> = sizes
            .iter()
            .enumerate()
            .map(|(c, &n)| {
                let prefix = dir.path().join(format!("c{c}"));
                let mut w =
                    crate::data::megatron::DatasetWriter::create(&prefix, DType::U16).unwrap();
                let mut mask = Vec::new();
                for _ in 0..n {
                    let len = rng.below(48) as usize;
                    let toks: Vec<u32> = (0..len).map(|_| rng.below(50_000) as u32).collect();
                    mask.extend((0..len).map(|_| (rng.below(3) != 0) as u8));
                    w.add_document(&toks).unwrap();
                }
                w.finish().unwrap();
                if c % 2 == 0 {
                    std::fs::write(crate::data::corpus::mask_path(&prefix), &mask).unwrap();
                }
                DocumentStore::open(&prefix, None).unwrap()
            })
            .collect();
        for mode in [Mode::Iid, Mode::Blend] {
            let mut cfg = SamplerConfig::new(16, 40);
            cfg.seed = 7;
            cfg.mode = mode;
            cfg.pad_token = 2;
            let mut s = Sampler::new(&cells, &weights, cfg).unwrap();
            let mut h = Sha256::new();
            for _ in 0..3 {
                let b = s.next_batch(0, 1).unwrap();
                for t in &b.tokens {
                    h.update(t.to_le_bytes());
                }
                h.update(&b.loss_mask);
            }
            out.push_str(&format!(
                "{mode} batches: {}\n",
                crate::data::corpus::hex(&h.finalize())
            ));
        }
        let expected = "\
iid: [(4, 186), (0, 2), (0, 3), (5, 0), (0, 0), (3, 12), (0, 1), (0, 4), (5, 1), (4, 61), (0, 1), (0, 4), (0, 3), (3, 4), (0, 2), (4, 152)]
blend: [(0, 2), (4, 186), (3, 12), (1, 0), (5, 0), (0, 3), (4, 61), (3, 4), (0, 0), (4, 152), (3, 10), (0, 1), (4, 280), (1, 0), (3, 6), (0, 4)]
iid batches: 4e9a26b0b10748fe8f0ff8e558a9940004074ab737c94108253c1c58e92a8ac6
blend batches: 0b039af6a586c177a4d312db1b0d1b211652e8b40b35d4be6f214605e60adbc0
";
        assert_eq!(out, expected, "the CPU reference stream changed:\n{out}");
    }
}
