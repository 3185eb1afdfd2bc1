//! Host-side parameter packing of the fused sampling kernel (`kernels/fused_sample.cu`), and a
//! Rust emulation of what the kernel computes from those parameters.
//!
//! The kernel needs the corpus as flat device arrays and one step's generator state as a few
//! small arrays; building them is plain CPU work, kept here (compiled without the `cuda`
//! feature) so it is tested on every machine. [`emulate`] runs the kernel's algorithm over
//! the packed arrays, row by row: the tests check it against [`Sampler`] (so the packing is
//! right), and `tests/gpu.rs` checks the CUDA C source itself, built as host C++, against the
//! same reference. `docs/sampler.md` section 6 documents the layout.

use std::path::Path;

use crate::data::corpus::{mask_path, DocumentStore};
use crate::data::megatron::{DType, DatasetWriter};
use crate::data::sampler::{blend_cell, Mode, Packing, Sampler};
use crate::rng::SplitMix64;

use super::GpuError;

/// Every cell's token ids, concatenated, in the narrowest type that holds them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenBuf {
    /// 16-bit ids (every cell stores `u8` or `u16`): kernel `fused_sample_pad_u16`.
    U16(Vec<u16>),
    /// 32-bit ids: kernel `fused_sample_pad_u32`.
    U32(Vec<u32>),
}

impl TokenBuf {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            TokenBuf::U16(v) => v.len(),
            TokenBuf::U32(v) => v.len(),
        }
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per token (2 or 4).
    pub fn elem_bytes(&self) -> usize {
        match self {
            TokenBuf::U16(_) => 2,
            TokenBuf::U32(_) => 4,
        }
    }

    /// Token `i` widened to `u32`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            TokenBuf::U16(v) => v[i] as u32,
            TokenBuf::U32(v) => v[i],
        }
    }

    /// The kernel entry point for this token width.
    pub fn kernel_name(&self) -> &'static str {
        match self {
            TokenBuf::U16(_) => "fused_sample_pad_u16",
            TokenBuf::U32(_) => "fused_sample_pad_u32",
        }
    }
}

/// A corpus as the kernel reads it (device-resident once uploaded).
///
/// Document `doc` of cell `c` is tokens `doc_start[cell_doc_base[c] + doc] ..
/// doc_start[cell_doc_base[c] + doc + 1]` of [`CorpusLayout::tokens`]; its loss mask is the
/// same range of [`CorpusLayout::mask`] (all 1 for a cell without a `.mask` file). Each cell
/// has `cell_docs[c] + 1` entries in `doc_start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusLayout {
    /// All tokens, cell after cell, document after document.
    pub tokens: TokenBuf,
    /// One loss-mask byte per token.
    pub mask: Vec<u8>,
    /// Global token index of each document's first token, plus one end entry per cell.
    pub doc_start: Vec<u64>,
    /// Index of each cell's first entry in `doc_start`.
    pub cell_doc_base: Vec<u64>,
    /// Documents per cell.
    pub cell_docs: Vec<u64>,
}

impl CorpusLayout {
    /// Flattens `cells` (reading every document; names cells by index in errors).
    pub fn build(cells: &[DocumentStore]) -> Result<Self, GpuError> {
        let narrow = cells
            .iter()
            .all(|c| matches!(c.tokens.dtype(), DType::U8 | DType::U16));
        let total: u64 = cells.iter().map(|c| c.tokens.tokens()).sum();
        let mut wide: Vec<u32> = Vec::new();
        let mut short: Vec<u16> = Vec::new();
        if narrow {
            short.reserve(total as usize);
        } else {
            wide.reserve(total as usize);
        }
        let mut mask = Vec::with_capacity(total as usize);
        let mut doc_start = Vec::new();
        let mut cell_doc_base = Vec::with_capacity(cells.len());
        let mut cell_docs = Vec::with_capacity(cells.len());
        let mut doc = Vec::new();
        let mut at = 0u64;
        for (c, store) in cells.iter().enumerate() {
            cell_doc_base.push(doc_start.len() as u64);
            cell_docs.push(store.documents() as u64);
            for d in 0..store.documents() {
                doc_start.push(at);
                doc.clear();
                store
                    .tokens
                    .read_document(d, &mut doc)
                    .map_err(|source| GpuError::Document {
                        cell: c,
                        doc: d,
                        source,
                    })?;
                if narrow {
                    // u8/u16 storage: every id fits in 16 bits.
                    short.extend(doc.iter().map(|&t| t as u16));
                } else {
                    wide.extend_from_slice(&doc);
                }
                match store.mask(d) {
                    Some(m) => mask.extend_from_slice(m),
                    None => mask.resize(mask.len() + doc.len(), 1),
                }
                at += doc.len() as u64;
            }
            doc_start.push(at);
        }
        Ok(Self {
            tokens: if narrow {
                TokenBuf::U16(short)
            } else {
                TokenBuf::U32(wide)
            },
            mask,
            doc_start,
            cell_doc_base,
            cell_docs,
        })
    }

    /// Bytes of all device arrays together.
    pub fn device_bytes(&self) -> usize {
        self.tokens.len() * self.tokens.elem_bytes()
            + self.mask.len()
            + 8 * (self.doc_start.len() + self.cell_doc_base.len() + self.cell_docs.len())
    }
}

/// One step's kernel parameters for one slice of rows (`docs/sampler.md` section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepParams {
    /// 0 = i.i.d. (cells drawn in the kernel), 1 = blend (cells and ordinals given).
    pub mode: u32,
    /// The stream's seed.
    pub seed: u64,
    /// Global sample index of the step's global row 0 (`SamplerState::next_sample`).
    pub first_sample: u64,
    /// Global rows of the step (`B`).
    pub batch: u32,
    /// First global row of this slice.
    pub row0: u32,
    /// Rows of this slice.
    pub rows: u32,
    /// `T`.
    pub seq_len: u32,
    /// Token written into padding.
    pub pad_token: u32,
    /// Documents each cell supplied before the step (`SamplerState::cell_counts`).
    pub counts: Vec<u64>,
    /// [`CellTable::edges`](crate::data::sampler::CellTable::edges).
    pub edges: Vec<u64>,
    /// [`CellTable::cells`](crate::data::sampler::CellTable::cells) (`m` entries).
    pub table_cells: Vec<u32>,
    /// Blend only: the cell of each row of the slice (empty in i.i.d. mode).
    pub plan_cell: Vec<u32>,
    /// Blend only: that cell's ordinal (documents it supplied before this row).
    pub plan_ordinal: Vec<u64>,
}

impl StepParams {
    /// Parameters of `sampler`'s next step for rank `rank` of `world` (rows
    /// `rank · B/world ..`), without advancing it.
    ///
    /// Only [`Packing::Pad`] is supported on the device: packing is a sequential scan over
    /// document lengths, left to the host ([`Sampler::peek_plan`]).
    pub fn for_step(sampler: &Sampler<'_>, rank: usize, world: usize) -> Result<Self, GpuError> {
        let cfg = sampler.config();
        if cfg.packing != Packing::Pad {
            return Err(GpuError::Unsupported {
                what: format!("packing {}", cfg.packing),
                expected: "packing pad (pack mode is planned on the host)".into(),
            });
        }
        let b = cfg.batch_size;
        if world == 0 || rank >= world || b % world != 0 {
            return Err(GpuError::Unsupported {
                what: format!("rank {rank} of world {world} with batch {b}"),
                expected: "0 <= rank < world and batch divisible by world".into(),
            });
        }
        let (b32, t32) = (u32::try_from(b), u32::try_from(cfg.seq_len));
        let (Ok(batch), Ok(seq_len)) = (b32, t32) else {
            return Err(GpuError::Unsupported {
                what: format!("batch {b}, seq_len {}", cfg.seq_len),
                expected: "both below 2^32".into(),
            });
        };
        let local = b / world;
        let row0 = rank * local;
        let state = sampler.state();
        let table = sampler.cell_table();
        let (mut plan_cell, mut plan_ordinal) = (Vec::new(), Vec::new());
        if cfg.mode == Mode::Blend {
            let mut counts = state.cell_counts.clone();
            for row in 0..b {
                let c = blend_cell(sampler.weights(), &counts, state.next_sample + row as u64);
                if (row0..row0 + local).contains(&row) {
                    plan_cell.push(c);
                    plan_ordinal.push(counts[c as usize]);
                }
                counts[c as usize] += 1;
            }
        }
        Ok(Self {
            mode: match cfg.mode {
                Mode::Iid => 0,
                Mode::Blend => 1,
            },
            seed: cfg.seed,
            first_sample: state.next_sample,
            batch,
            row0: row0 as u32,
            rows: local as u32,
            seq_len,
            pad_token: cfg.pad_token,
            counts: state.cell_counts.clone(),
            edges: table.edges().to_vec(),
            table_cells: table.cells().to_vec(),
            plan_cell,
            plan_ordinal,
        })
    }

    /// Token and mask elements of the slice's output (`rows · T`).
    pub fn out_elems(&self) -> usize {
        self.rows as usize * self.seq_len as usize
    }
}

/// What the kernel writes: `rows × T` tokens and mask, and per row
/// `[cell, document, epoch, placed tokens]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelOutput {
    /// Token ids, row-major.
    pub tokens: Vec<u32>,
    /// Loss mask, row-major.
    pub mask: Vec<u8>,
    /// `4 · rows` values: cell, document, epoch, tokens placed.
    pub docs: Vec<u64>,
}

impl KernelOutput {
    /// Compares with a CPU [`Batch`](crate::data::sampler::Batch) of the same rows; the first
    /// difference, described, or `None` when bit-identical.
    pub fn first_difference(&self, batch: &crate::data::sampler::Batch) -> Option<String> {
        if self.tokens.len() != batch.tokens.len() || self.mask.len() != batch.loss_mask.len() {
            return Some(format!(
                "shape: {} tokens / {} mask elements, CPU {} / {}",
                self.tokens.len(),
                self.mask.len(),
                batch.tokens.len(),
                batch.loss_mask.len()
            ));
        }
        for (row, d) in batch.docs.iter().enumerate() {
            let got = self.docs.get(4 * row..4 * row + 4);
            let want = [d.cell as u64, d.document, d.epoch, d.len as u64];
            if got != Some(&want[..]) {
                return Some(format!(
                    "row {row}: [cell, document, epoch, len] {got:?}, CPU {want:?}"
                ));
            }
        }
        let t = batch.seq_len.max(1);
        if let Some(i) = (0..self.tokens.len()).find(|&i| self.tokens[i] != batch.tokens[i]) {
            return Some(format!(
                "token at row {} position {}: {}, CPU {}",
                i / t,
                i % t,
                self.tokens[i],
                batch.tokens[i]
            ));
        }
        if let Some(i) = (0..self.mask.len()).find(|&i| self.mask[i] != batch.loss_mask[i]) {
            return Some(format!(
                "mask at row {} position {}: {}, CPU {}",
                i / t,
                i % t,
                self.mask[i],
                batch.loss_mask[i]
            ));
        }
        None
    }
}

/// The kernel's algorithm in Rust, serially over the rows, from the packed parameters only.
///
/// # Panics
/// If the parameters do not belong to the layout (programmer misuse).
pub fn emulate(layout: &CorpusLayout, p: &StepParams) -> KernelOutput {
    use crate::data::sampler::{document_for, sample_bits};
    let t = p.seq_len as usize;
    let mut out = KernelOutput {
        tokens: vec![0; p.out_elems()],
        mask: vec![0; p.out_elems()],
        docs: vec![0; 4 * p.rows as usize],
    };
    // CellTable::lookup over the packed arrays (what the kernel has), not over the weights.
    let lookup = |u: u64| -> u32 { p.table_cells[p.edges.partition_point(|&e| e <= u)] };
    for local in 0..p.rows as usize {
        let row = p.row0 as u64 + local as u64;
        let (cell, ordinal) = if p.mode == 0 {
            let bits = |g: u64| sample_bits(p.seed, g);
            let cell = lookup(bits(p.first_sample + row));
            let earlier = (0..row)
                .filter(|&k| lookup(bits(p.first_sample + k)) == cell)
                .count() as u64;
            (cell, p.counts[cell as usize] + earlier)
        } else {
            (p.plan_cell[local], p.plan_ordinal[local])
        };
        let n = layout.cell_docs[cell as usize];
        let (epoch, doc) = document_for(p.seed, cell, ordinal, n);
        let base = (layout.cell_doc_base[cell as usize] + doc) as usize;
        let (start, end) = (layout.doc_start[base], layout.doc_start[base + 1]);
        let placed = (end - start).min(t as u64) as usize;
        out.docs[4 * local..4 * local + 4].copy_from_slice(&[
            cell as u64,
            doc,
            epoch,
            placed as u64,
        ]);
        let s = start as usize;
        for i in 0..t {
            let o = local * t + i;
            if i < placed {
                out.tokens[o] = layout.tokens.get(s + i);
                out.mask[o] = layout.mask[s + i];
            } else {
                out.tokens[o] = p.pad_token;
                out.mask[o] = 0;
            }
        }
    }
    out
}

/// Writes `sizes.len()` cells of random documents (lengths `1 ..= max_len`, a few empty) under
/// `dir` with `dtype`; cells with an even index get a loss mask. The inputs of `mixatlas gpu
/// check` and of the kernel's tests (any corpus serves: outputs are compared with the sampler).
pub fn write_cells(
    dir: &Path,
    dtype: DType,
    sizes: &[usize],
    max_len: u64,
    seed: u64,
) -> Result<Vec<DocumentStore>, GpuError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GpuError::LayoutIo { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut rng = SplitMix64::new(seed);
    let vocab = if dtype == DType::U16 { 65_535 } else { 150_000 };
    let mut cells = Vec::with_capacity(sizes.len());
    let mut toks = Vec::new();
    for (c, &n) in sizes.iter().enumerate() {
        let prefix = dir.join(format!("cell{c:02}"));
        let mut w = DatasetWriter::create(&prefix, dtype)?;
        let mut mask = Vec::new();
        for _ in 0..n {
            let len = if rng.below(50) == 0 {
                0
            } else {
                1 + rng.below(max_len) as usize
            };
            toks.clear();
            toks.extend((0..len).map(|_| rng.below(vocab) as u32));
            w.add_document(&toks)?;
            mask.extend((0..len).map(|_| (rng.below(5) != 0) as u8));
        }
        w.finish()?;
        if c % 2 == 0 {
            let p = mask_path(&prefix);
            std::fs::write(&p, &mask).map_err(io(&p))?;
        }
        cells.push(DocumentStore::open(&prefix, None)?);
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sampler::SamplerConfig;

    #[test]
    fn emulation_of_packed_parameters_equals_the_sampler() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [DType::U16, DType::I32] {
            let sub = dir.path().join(format!("{dtype:?}"));
            let cells = write_cells(&sub, dtype, &[3, 40, 0, 7, 1], 50, 3).unwrap();
            let layout = CorpusLayout::build(&cells).unwrap();
            assert_eq!(
                matches!(layout.tokens, TokenBuf::U16(_)),
                dtype == DType::U16
            );
            let weights = [0.3, 0.25, 0.0, 0.25, 0.2];
            for mode in [Mode::Iid, Mode::Blend] {
                for world in [1usize, 2] {
                    let mut cfg = SamplerConfig::new(8, 24);
                    cfg.seed = 11;
                    cfg.mode = mode;
                    cfg.pad_token = 9;
                    let mut sampler = Sampler::new(&cells, &weights, cfg.clone()).unwrap();
                    let mut others: Vec<Sampler<'_>> = (1..world)
                        .map(|_| Sampler::new(&cells, &weights, cfg.clone()).unwrap())
                        .collect();
                    for step in 0..6 {
                        for rank in 0..world {
                            let s = if rank == 0 {
                                &mut sampler
                            } else {
                                &mut others[rank - 1]
                            };
                            let p = StepParams::for_step(s, rank, world).unwrap();
                            let got = emulate(&layout, &p);
                            let batch = s.next_batch(rank, world).unwrap();
                            assert_eq!(
                                got.first_difference(&batch),
                                None,
                                "{dtype:?} {mode} world {world} rank {rank} step {step}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pack_mode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cells = write_cells(dir.path(), DType::U16, &[5], 10, 3).unwrap();
        let mut cfg = SamplerConfig::new(2, 8);
        cfg.packing = Packing::Pack;
        let s = Sampler::new(&cells, &[1.0], cfg).unwrap();
        let e = StepParams::for_step(&s, 0, 1).unwrap_err();
        assert!(e.to_string().contains("pack"), "{e}");
    }
}
