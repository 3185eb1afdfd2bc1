//! Mixture sampler: proportions, Megatron blending, rank split, restart, permutations, data
//! fidelity and bad input, each checked against an independent reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;
use mixatlas::data::corpus::{
    image_path, mask_path, Axes, CellEntry, ClusteringInfo, Corpus, DatasetEntry, DocumentStore,
    ImageSpec, Manifest, SpecialTokens, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
};
use mixatlas::data::megatron::{prefix_paths, DType, DatasetWriter, IndexedDataset};
use mixatlas::data::sampler::{
    blend_cell, iid_cell, weights_from_names, Batch, CellTable, Mode, Packing, PlacedDoc, Sampler,
    SamplerConfig, SamplerError, SamplerState,
};
use mixatlas::rng::SplitMix64;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Test corpora
// ---------------------------------------------------------------------------------------------

/// One cell to write: its documents' lengths.
struct CellSpec {
    lengths: Vec<usize>,
}

/// A small corpus on disk, opened as document stores.
struct TestCorpus {
    _dir: TempDir,
    prefixes: Vec<PathBuf>,
    cells: Vec<DocumentStore>,
    image: Option<ImageSpec>,
}

/// Random lengths in `lo..=hi`.
fn lengths(rng: &mut SplitMix64, docs: usize, lo: usize, hi: usize) -> CellSpec {
    CellSpec {
        lengths: (0..docs)
            .map(|_| lo + rng.below((hi - lo + 1) as u64) as usize)
            .collect(),
    }
}

/// Writes each cell's `.bin`/`.idx`, a `.mask` (when `mask`) and an `.img` (when `image`).
fn build(
    specs: &[CellSpec],
    dtype: DType,
    mask: bool,
    image: Option<(usize, usize)>,
    seed: u64,
) -> TestCorpus {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(seed);
    let image = image.map(|(patches, dim)| ImageSpec {
        patches,
        dim,
        dtype: "float16".into(),
    });
    let max_token = if dtype == DType::U8 { 250 } else { 60_000 };
    let mut prefixes = Vec::new();
    for (c, spec) in specs.iter().enumerate() {
        let prefix = dir.path().join(format!("cell{c}"));
        let mut w = DatasetWriter::create(&prefix, dtype).unwrap();
        let mut mask_bytes = Vec::new();
        let mut img_bytes = Vec::new();
        for &len in &spec.lengths {
            let toks: Vec<u32> = (0..len).map(|_| 4 + rng.below(max_token) as u32).collect();
            w.add_document(&toks).unwrap();
            mask_bytes.extend((0..len).map(|_| (rng.below(4) != 0) as u8));
            if let Some(s) = &image {
                for _ in 0..s.patches * s.dim {
                    let v = f16::from_f32(rng.normal() as f32);
                    img_bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        w.finish().unwrap();
        if mask {
            std::fs::write(mask_path(&prefix), &mask_bytes).unwrap();
        }
        if image.is_some() {
            std::fs::write(image_path(&prefix), &img_bytes).unwrap();
        }
        prefixes.push(prefix);
    }
    let cells = prefixes
        .iter()
        .map(|p| DocumentStore::open(p, image.as_ref()).unwrap())
        .collect();
    TestCorpus {
        _dir: dir,
        prefixes,
        cells,
        image,
    }
}

/// Five multimodal cells of different sizes (docs of 0..=40 tokens, 2×3 image features).
fn multimodal(dtype: DType, seed: u64) -> TestCorpus {
    let mut rng = SplitMix64::new(seed ^ 0xABCD);
    let specs: Vec<CellSpec> = [13, 29, 7, 50, 21]
        .iter()
        .map(|&n| lengths(&mut rng, n, 0, 40))
        .collect();
    build(&specs, dtype, true, Some((2, 3)), seed)
}

fn config(mode: Mode, packing: Packing, batch: usize, seq: usize) -> SamplerConfig {
    SamplerConfig {
        seed: 1234,
        mode,
        packing,
        batch_size: batch,
        seq_len: seq,
        pad_token: 0,
    }
}

const MODES: [Mode; 2] = [Mode::Iid, Mode::Blend];
const PACKINGS: [Packing; 2] = [Packing::Pad, Packing::Pack];
const WEIGHTS5: [f64; 5] = [0.1, 0.3, 0.05, 0.35, 0.2];

// ---------------------------------------------------------------------------------------------
// 1. Proportions
// ---------------------------------------------------------------------------------------------

/// Upper-tail 0.999 quantiles of χ² with `df` degrees of freedom, from the NIST/SEMATECH
/// e-Handbook of Statistical Methods, table 1.3.6.7.4 ("Critical values of the chi-square
/// distribution", column 0.001).
fn chi2_critical_999(df: usize) -> f64 {
    match df {
        1 => 10.828,
        2 => 13.816,
        3 => 16.266,
        4 => 18.467,
        5 => 20.515,
        6 => 22.458,
        7 => 24.322,
        8 => 26.124,
        9 => 27.877,
        10 => 29.588,
        _ => panic!("no critical value for df {df}"),
    }
}

/// Pearson's χ² of observed counts against `weights` over the cells of positive weight; cells
/// of weight 0 must have no draws. Returns (statistic, degrees of freedom).
fn chi2_against(counts: &[u64], weights: &[f64]) -> (f64, usize) {
    let total: u64 = counts.iter().sum();
    let mut stat = 0.0;
    let mut k = 0;
    for (&c, &w) in counts.iter().zip(weights) {
        if w == 0.0 {
            assert_eq!(c, 0, "a zero-weight cell supplied samples");
            continue;
        }
        let e = w * total as f64;
        stat += (c as f64 - e).powi(2) / e;
        k += 1;
    }
    (stat, k - 1)
}

#[test]
fn iid_proportions_pass_chi_square_through_the_sampler() {
    let corpus = multimodal(DType::U16, 1);
    let weights = [0.1, 0.0, 0.15, 0.5, 0.25];
    for packing in PACKINGS {
        let mut s =
            Sampler::new(&corpus.cells, &weights, config(Mode::Iid, packing, 64, 64)).unwrap();
        let mut per_batch = vec![0u64; 5];
        for _ in 0..400 {
            let b = s.next_batch(0, 1).unwrap();
            for (t, x) in per_batch.iter_mut().zip(&b.supplied) {
                *t += x;
            }
        }
        assert_eq!(
            per_batch,
            s.supplied(),
            "batch reports sum to the cumulative"
        );
        let (stat, df) = chi2_against(s.supplied(), &weights);
        assert_eq!(df, 3);
        assert!(
            stat < chi2_critical_999(df),
            "{packing}: χ² {stat} over {:?}",
            s.supplied()
        );
    }
}

#[test]
fn iid_cell_proportions_pass_chi_square_over_ten_cells() {
    let weights = [0.02, 0.08, 0.1, 0.05, 0.15, 0.2, 0.1, 0.1, 0.15, 0.05];
    let table = CellTable::new(&weights).unwrap();
    let mut counts = [0u64; 10];
    for g in 0..1_000_000u64 {
        counts[iid_cell(42, g, &table) as usize] += 1;
    }
    let (stat, df) = chi2_against(&counts, &weights);
    assert!(stat < chi2_critical_999(df), "χ² {stat} over {counts:?}");
    // A different seed gives a different stream.
    let differs = (0..64).any(|g| iid_cell(42, g, &table) != iid_cell(43, g, &table));
    assert!(differs);
}

// ---------------------------------------------------------------------------------------------
// 2. Megatron blending
// ---------------------------------------------------------------------------------------------

/// `build_blending_indices` from Megatron-LM's `megatron/core/datasets/helpers.cpp`,
/// transcribed loop for loop, applied to the cells of positive weight (the blend one would
/// pass to Megatron); returns the cell of each sample.
fn megatron_blending_reference(weights: &[f64], size: usize) -> Vec<u32> {
    let active: Vec<usize> = (0..weights.len()).filter(|&d| weights[d] > 0.0).collect();
    let w: Vec<f64> = active.iter().map(|&d| weights[d]).collect();
    let mut current_samples = vec![0i64; w.len()];
    let mut dataset_index = Vec::with_capacity(size);
    for sample_idx in 0..size as i64 {
        let sample_idx_double = f64::max(sample_idx as f64, 1.0);
        let mut max_error_index = 0;
        let mut max_error = w[0] * sample_idx_double - current_samples[0] as f64;
        for dataset_idx in 1..w.len() {
            let error = w[dataset_idx] * sample_idx_double - current_samples[dataset_idx] as f64;
            if error > max_error {
                max_error = error;
                max_error_index = dataset_idx;
            }
        }
        dataset_index.push(active[max_error_index] as u32);
        current_samples[max_error_index] += 1;
    }
    dataset_index
}

fn blend_weight_cases() -> Vec<Vec<f64>> {
    vec![
        vec![0.2; 5],                                    // all tied
        vec![0.5, 0.5, 0.0, 0.0, 0.0],                   // tie of two
        vec![1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0], // ties with rounding
        vec![0.1, 0.2, 0.3, 0.4, 0.0],
        vec![0.0, 0.5, 0.5, 0.0, 0.0], // zero-weight cell first
        vec![0.7, 0.0, 0.3, 0.0, 0.0],
        vec![0.05, 0.05, 0.3, 0.3, 0.3], // pairwise ties
        vec![0.0, 0.0, 0.0, 0.0, 1.0],
        WEIGHTS5.to_vec(),
    ]
}

#[test]
fn blend_cell_reproduces_megatron_greedy_rule() {
    for weights in blend_weight_cases() {
        let reference = megatron_blending_reference(&weights, 20_000);
        let mut counts = vec![0u64; weights.len()];
        for (g, &want) in reference.iter().enumerate() {
            let got = blend_cell(&weights, &counts, g as u64);
            assert_eq!(got, want, "weights {weights:?} sample {g}");
            counts[got as usize] += 1;
        }
    }
}

#[test]
fn blend_mode_batches_follow_megatron_order() {
    let corpus = multimodal(DType::U16, 2);
    for packing in PACKINGS {
        for weights in blend_weight_cases() {
            let mut s =
                Sampler::new(&corpus.cells, &weights, config(Mode::Blend, packing, 7, 48)).unwrap();
            let mut cells = Vec::new();
            for _ in 0..30 {
                let b = s.next_batch(0, 1).unwrap();
                cells.extend(b.docs.iter().map(|d| d.cell));
            }
            let reference = megatron_blending_reference(&weights, cells.len());
            assert_eq!(cells, reference, "{packing} weights {weights:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Rank split
// ---------------------------------------------------------------------------------------------

/// Rank batches glued back into one global batch (rows renumbered globally).
fn concat(parts: &[Batch]) -> Batch {
    let mut out = Batch {
        step: parts[0].step,
        seq_len: parts[0].seq_len,
        image_elems: parts[0].image_elems,
        supplied: parts[0].supplied.clone(),
        supplied_tokens: parts[0].supplied_tokens.clone(),
        ..Batch::default()
    };
    for p in parts {
        assert_eq!(p.step, out.step);
        assert_eq!(p.first_row, out.rows, "ranks own contiguous rows");
        assert_eq!(
            p.supplied, out.supplied,
            "every rank reports the global counts"
        );
        assert_eq!(p.supplied_tokens, out.supplied_tokens);
        out.tokens.extend_from_slice(&p.tokens);
        out.loss_mask.extend_from_slice(&p.loss_mask);
        out.images.extend_from_slice(&p.images);
        out.docs.extend(p.docs.iter().map(|d| PlacedDoc {
            row: d.row + p.first_row as u32,
            ..*d
        }));
        out.rows += p.rows;
    }
    out
}

#[test]
fn ranks_together_draw_the_single_rank_stream() {
    let corpus = multimodal(DType::U16, 3);
    for mode in MODES {
        for packing in PACKINGS {
            let cfg = config(mode, packing, 8, 48);
            let mut single = Sampler::new(&corpus.cells, &WEIGHTS5, cfg.clone()).unwrap();
            for world in [2usize, 4] {
                let mut ranks: Vec<Sampler> = (0..world)
                    .map(|_| Sampler::new(&corpus.cells, &WEIGHTS5, cfg.clone()).unwrap())
                    .collect();
                single.seek(0);
                for step in 0..12 {
                    let plan = single.peek_plan();
                    let want = single.next_batch(0, 1).unwrap();
                    assert_eq!(plan, want.docs, "the plan is what the batch holds");
                    let parts: Vec<Batch> = ranks
                        .iter_mut()
                        .enumerate()
                        .map(|(r, s)| s.next_batch(r, world).unwrap())
                        .collect();
                    let got = concat(&parts);
                    assert_eq!(got, want, "{mode}/{packing} world {world} step {step}");
                    for s in &ranks {
                        assert_eq!(s.state(), single.state());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Restart
// ---------------------------------------------------------------------------------------------

#[test]
fn restart_from_seek_or_saved_state_reproduces_batches() {
    let corpus = multimodal(DType::U16, 4);
    for mode in MODES {
        for packing in PACKINGS {
            let cfg = config(mode, packing, 6, 40);
            let mut s = Sampler::new(&corpus.cells, &WEIGHTS5, cfg.clone()).unwrap();
            let mut batches = Vec::new();
            let mut states = Vec::new();
            for _ in 0..15 {
                states.push(serde_json::to_string(s.state()).unwrap());
                batches.push(s.next_batch(1, 3).unwrap());
            }
            for k in [0usize, 1, 7, 14] {
                let mut fresh = Sampler::new(&corpus.cells, &WEIGHTS5, cfg.clone()).unwrap();
                fresh.seek(k as u64);
                let state: SamplerState = serde_json::from_str(&states[k]).unwrap();
                assert_eq!(fresh.state(), &state, "{mode}/{packing} seek {k}");
                let mut restored = Sampler::new(&corpus.cells, &WEIGHTS5, cfg.clone()).unwrap();
                restored.restore(state).unwrap();
                for (i, want) in batches.iter().enumerate().skip(k) {
                    assert_eq!(&fresh.next_batch(1, 3).unwrap(), want, "seek {k} step {i}");
                    assert_eq!(&restored.next_batch(1, 3).unwrap(), want, "restore {k}");
                }
            }
            // Seeking backwards replays from 0.
            s.seek(3);
            assert_eq!(s.next_batch(1, 3).unwrap(), batches[3]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Permutations and data fidelity
// ---------------------------------------------------------------------------------------------

#[test]
fn every_document_once_per_epoch_and_epochs_differ() {
    let corpus = multimodal(DType::U16, 5);
    let n: Vec<usize> = corpus.cells.iter().map(|c| c.documents()).collect();
    for mode in MODES {
        let mut s =
            Sampler::new(&corpus.cells, &WEIGHTS5, config(mode, Packing::Pad, 16, 8)).unwrap();
        let mut drawn: Vec<Vec<u64>> = vec![Vec::new(); 5];
        let mut epochs: Vec<Vec<u64>> = vec![Vec::new(); 5];
        for _ in 0..200 {
            for d in s.next_batch(0, 1).unwrap().docs {
                drawn[d.cell as usize].push(d.document);
                epochs[d.cell as usize].push(d.epoch);
            }
        }
        for c in 0..5 {
            let full = drawn[c].len() / n[c];
            assert!(full >= 3, "cell {c}: only {full} epochs drawn");
            let mut orders = Vec::new();
            for e in 0..full {
                let chunk = &drawn[c][e * n[c]..(e + 1) * n[c]];
                let mut sorted = chunk.to_vec();
                sorted.sort_unstable();
                assert_eq!(
                    sorted,
                    (0..n[c] as u64).collect::<Vec<_>>(),
                    "cell {c} epoch {e}"
                );
                assert!(epochs[c][e * n[c]..(e + 1) * n[c]]
                    .iter()
                    .all(|&x| x == e as u64));
                orders.push(chunk.to_vec());
            }
            if n[c] > 2 {
                for w in orders.windows(2) {
                    assert_ne!(w[0], w[1], "cell {c}: consecutive epochs in the same order");
                }
            }
        }
    }
}

/// Reads document `d`'s mask and image straight from the side files, using offsets summed
/// from the token index.
fn side_data(corpus: &TestCorpus, cell: usize, d: usize) -> (Vec<u8>, Vec<f16>) {
    let prefix = &corpus.prefixes[cell];
    let ds = IndexedDataset::open(prefix).unwrap();
    let offset: usize = (0..d).map(|i| ds.document(i).unwrap().len()).sum();
    let len = ds.document(d).unwrap().len();
    let mask = std::fs::read(mask_path(prefix)).unwrap()[offset..offset + len].to_vec();
    let img = match &corpus.image {
        Some(s) => {
            let e = s.patches * s.dim;
            std::fs::read(image_path(prefix)).unwrap()[d * e * 2..(d + 1) * e * 2]
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect()
        }
        None => Vec::new(),
    };
    (mask, img)
}

/// Checks every row of `b` against documents read back through `IndexedDataset::document`
/// and the raw side files.
fn check_against_files(corpus: &TestCorpus, b: &Batch, pad: u32) {
    let t = b.seq_len;
    for row in 0..b.rows {
        let toks = &b.tokens[row * t..(row + 1) * t];
        let mask = &b.loss_mask[row * t..(row + 1) * t];
        let mut end = 0;
        for d in b.row_docs(row) {
            let ds = IndexedDataset::open(&corpus.prefixes[d.cell as usize]).unwrap();
            let want = ds.document(d.document as usize).unwrap();
            assert_eq!(d.doc_len as usize, want.len());
            let (s, len) = (d.start as usize, d.len as usize);
            assert_eq!(s, end, "documents are contiguous in a row");
            assert_eq!(len, want.len().min(t - s));
            assert_eq!(&toks[s..s + len], &want[..len]);
            let (want_mask, _) = side_data(corpus, d.cell as usize, d.document as usize);
            assert_eq!(&mask[s..s + len], &want_mask[..len]);
            end = s + len;
        }
        assert!(toks[end..].iter().all(|&x| x == pad), "padding");
        assert!(mask[end..].iter().all(|&x| x == 0), "no loss on padding");
    }
    assert_eq!(b.images.len(), b.docs.len() * b.image_elems);
    for (i, d) in b.docs.iter().enumerate() {
        let (_, img) = side_data(corpus, d.cell as usize, d.document as usize);
        assert_eq!(b.image(i), &img[..], "image of doc {i}");
    }
}

#[test]
fn gathered_rows_equal_documents_read_back_for_every_dtype() {
    for dtype in [DType::U16, DType::I32, DType::U8, DType::I64, DType::F32] {
        let corpus = multimodal(dtype, 6);
        for packing in PACKINGS {
            let mut cfg = config(Mode::Iid, packing, 4, 32);
            cfg.pad_token = 3;
            let mut s = Sampler::new(&corpus.cells, &WEIGHTS5, cfg).unwrap();
            for _ in 0..12 {
                let b = s.next_batch(1, 2).unwrap();
                assert_eq!(b.rows, 2);
                assert_eq!(b.tokens.len(), 2 * 32);
                check_against_files(&corpus, &b, 3);
            }
        }
    }
}

#[test]
fn missing_mask_means_every_token_is_trained() {
    let mut rng = SplitMix64::new(7);
    let specs = vec![lengths(&mut rng, 9, 1, 20)];
    let corpus = build(&specs, DType::U16, false, None, 7);
    let mut s = Sampler::new(
        &corpus.cells,
        &[1.0],
        config(Mode::Iid, Packing::Pad, 4, 24),
    )
    .unwrap();
    let b = s.next_batch(0, 1).unwrap();
    assert_eq!(b.image_elems, 0);
    assert!(b.images.is_empty());
    for (row, d) in b.docs.iter().enumerate() {
        let m = &b.loss_mask[row * 24..(row + 1) * 24];
        assert!(m[..d.len as usize].iter().all(|&x| x == 1));
        assert!(m[d.len as usize..].iter().all(|&x| x == 0));
    }
}

#[test]
fn pack_rows_are_greedy_and_lose_no_document() {
    // Lengths straddling T so that truncation, exact fits and overflow all happen.
    let mut rng = SplitMix64::new(8);
    let specs = vec![lengths(&mut rng, 40, 1, 60), lengths(&mut rng, 25, 0, 12)];
    let corpus = build(&specs, DType::U16, true, None, 8);
    let t = 32;
    let mut s = Sampler::new(
        &corpus.cells,
        &[0.6, 0.4],
        config(Mode::Iid, Packing::Pack, 4, t),
    )
    .unwrap();
    let mut all: Vec<(u64, u64, PlacedDoc)> = Vec::new(); // (step, global row, doc)
    for _ in 0..40 {
        let b = s.next_batch(0, 1).unwrap();
        all.extend(b.docs.iter().map(|d| (b.step, d.row as u64, *d)));
    }
    // The stream is consumed without gaps or repeats.
    for (i, (_, _, d)) in all.iter().enumerate() {
        assert_eq!(d.sample, i as u64);
    }
    assert_eq!(s.state().next_sample, all.len() as u64);
    for w in all.windows(2) {
        let ((s0, r0, a), (s1, r1, b)) = (w[0], w[1]);
        let fits = a.start as usize + a.len as usize + (b.doc_len as usize).min(t) <= t;
        if (s0, r0) == (s1, r1) {
            assert_eq!(b.start, a.start + a.len);
            assert!(fits);
        } else {
            assert_eq!(b.start, 0);
            assert!(!fits, "a document that fits must not open a new row");
        }
        // Only a document alone at the start of a row is truncated.
        if b.len as u64 != b.doc_len {
            assert_eq!((b.start, b.len as usize), (0, t));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input
// ---------------------------------------------------------------------------------------------

fn err_of(r: Result<Sampler<'_>, SamplerError>) -> SamplerError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn bad_weights_are_named_errors() {
    let corpus = multimodal(DType::U16, 9);
    let cells = &corpus.cells;
    let cfg = config(Mode::Iid, Packing::Pad, 4, 8);
    let e = err_of(Sampler::new(cells, &[0.5, 0.5], cfg.clone()));
    assert_eq!(
        e,
        SamplerError::WeightCount {
            weights: 2,
            cells: 5
        }
    );
    assert!(e.to_string().contains("2 weights given for 5 cells"), "{e}");

    let e = err_of(Sampler::new(
        cells,
        &[0.5, -0.1, 0.3, 0.2, 0.1],
        cfg.clone(),
    ));
    assert!(
        matches!(&e, SamplerError::BadWeight { cell, value } if cell == "cell 1" && *value == -0.1)
    );
    assert!(e.to_string().contains("non-negative"), "{e}");
    let e = err_of(Sampler::new(
        cells,
        &[f64::NAN, 0.5, 0.5, 0.0, 0.0],
        cfg.clone(),
    ));
    assert!(matches!(e, SamplerError::BadWeight { .. }), "{e}");
    let e = err_of(Sampler::new(
        cells,
        &[0.0, f64::INFINITY, 0.0, 0.0, 0.0],
        cfg.clone(),
    ));
    assert!(
        e.to_string().contains("cell 1") && e.to_string().contains("finite"),
        "{e}"
    );

    let e = err_of(Sampler::new(cells, &[0.5, 0.4, 0.0, 0.0, 0.0], cfg.clone()));
    assert!(matches!(e, SamplerError::WeightSum { sum } if (sum - 0.9).abs() < 1e-12));
    assert!(e.to_string().contains("sum to 0.9"), "{e}");
    // Within the tolerance is fine.
    Sampler::new(cells, &[0.5, 0.5 + 5e-7, 0.0, 0.0, 0.0], cfg).unwrap();
}

#[test]
fn empty_cells_need_zero_weight() {
    let mut rng = SplitMix64::new(10);
    let specs = vec![
        lengths(&mut rng, 5, 1, 9),
        CellSpec { lengths: vec![] },
        CellSpec {
            lengths: vec![0, 0],
        }, // documents but no tokens
    ];
    let corpus = build(&specs, DType::U16, true, Some((1, 2)), 10);
    let cfg = config(Mode::Blend, Packing::Pack, 2, 8);
    let e = err_of(Sampler::new(&corpus.cells, &[0.5, 0.5, 0.0], cfg.clone()));
    assert!(
        matches!(&e, SamplerError::EmptyCell { cell, documents: 0, .. } if cell == "cell 1"),
        "{e}"
    );
    let e = err_of(Sampler::new(&corpus.cells, &[0.5, 0.0, 0.5], cfg.clone()));
    assert!(
        e.to_string().contains("cell 2") && e.to_string().contains("0 tokens"),
        "{e}"
    );
    // Weight 0 on empty cells is the documented policy: they are never drawn.
    let mut s = Sampler::new(&corpus.cells, &[1.0, 0.0, 0.0], cfg).unwrap();
    for _ in 0..10 {
        let b = s.next_batch(0, 1).unwrap();
        assert!(b.docs.iter().all(|d| d.cell == 0));
        assert_eq!(&b.supplied[1..], &[0, 0]);
    }
}

#[test]
fn bad_shapes_ranks_and_states_are_named_errors() {
    let corpus = multimodal(DType::U16, 11);
    let cells = &corpus.cells;
    let e = err_of(Sampler::new(
        cells,
        &WEIGHTS5,
        config(Mode::Iid, Packing::Pad, 0, 8),
    ));
    assert!(e.to_string().contains("batch size is 0"), "{e}");
    let e = err_of(Sampler::new(
        cells,
        &WEIGHTS5,
        config(Mode::Iid, Packing::Pad, 4, 0),
    ));
    assert!(e.to_string().contains("sequence length is 0"), "{e}");

    let mut s = Sampler::new(cells, &WEIGHTS5, config(Mode::Iid, Packing::Pad, 6, 8)).unwrap();
    let e = s.next_batch(0, 4).unwrap_err();
    assert_eq!(e, SamplerError::BatchNotDivisible { batch: 6, world: 4 });
    assert!(
        e.to_string().contains("not divisible by world size 4"),
        "{e}"
    );
    assert_eq!(
        s.next_batch(2, 2).unwrap_err(),
        SamplerError::BadRank { rank: 2, world: 2 }
    );
    assert_eq!(
        s.next_batch(0, 0).unwrap_err(),
        SamplerError::BadRank { rank: 0, world: 0 }
    );
    assert_eq!(s.step(), 0, "failed calls do not advance the stream");
    s.next_batch(1, 3).unwrap();

    let mut state = s.state().clone();
    state.seed += 1;
    let mut fresh = Sampler::new(cells, &WEIGHTS5, config(Mode::Iid, Packing::Pad, 6, 8)).unwrap();
    let e = fresh.restore(state).unwrap_err();
    assert!(e.to_string().contains("seed"), "{e}");
    let mut state = s.state().clone();
    state.packing = Packing::Pack;
    assert!(matches!(
        fresh.restore(state),
        Err(SamplerError::StateMismatch {
            field: "packing",
            ..
        })
    ));
    let mut state = s.state().clone();
    state.cell_counts.pop();
    assert!(fresh.restore(state).is_err());
    let mut state = s.state().clone();
    state.next_sample += 1;
    assert!(fresh.restore(state).is_err());
    assert_eq!(fresh.step(), 0);
}

#[test]
fn inconsistent_images_and_bad_tokens_are_named_errors() {
    let mut rng = SplitMix64::new(12);
    let specs = vec![lengths(&mut rng, 4, 1, 9), lengths(&mut rng, 4, 1, 9)];
    let with = build(&specs, DType::I32, true, Some((2, 2)), 12);
    // The second cell opened without its image features.
    let cells = vec![
        DocumentStore::open(&with.prefixes[0], with.image.as_ref()).unwrap(),
        DocumentStore::open(&with.prefixes[1], None).unwrap(),
    ];
    let e = err_of(Sampler::new(
        &cells,
        &[0.5, 0.5],
        config(Mode::Iid, Packing::Pad, 2, 8),
    ));
    assert!(
        matches!(
            e,
            SamplerError::ImageMismatch {
                found: 0,
                expected: 4,
                ..
            }
        ),
        "{e}"
    );

    // A negative int32 token id.
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("neg");
    let mut w = DatasetWriter::create(&prefix, DType::I32).unwrap();
    w.add_document(&[5, 6, 7]).unwrap();
    w.finish().unwrap();
    let bin = prefix_paths(&prefix).0;
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[4..8].copy_from_slice(&(-1i32).to_le_bytes());
    std::fs::write(&bin, &bytes).unwrap();
    let cells = vec![DocumentStore::open(&prefix, None).unwrap()];
    let mut s = Sampler::new(&cells, &[1.0], config(Mode::Iid, Packing::Pad, 1, 8)).unwrap();
    let e = s.next_batch(0, 1).unwrap_err();
    assert!(
        matches!(
            e,
            SamplerError::BadToken {
                document: 0,
                dtype: DType::I32,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(s.step(), 0);
}

// ---------------------------------------------------------------------------------------------
// Corpus-level entry points
// ---------------------------------------------------------------------------------------------

/// Writes a manifest for a `TestCorpus` of two cells named `c00/ocr` and `c01/vqa` (only
/// the fields `Corpus::open` checks are meaningful).
fn write_manifest(dir: &Path, corpus: &TestCorpus) {
    let entry = |c: usize, name: &str| {
        let store = &corpus.cells[c];
        DatasetEntry {
            name: name.into(),
            prefix: corpus.prefixes[c]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            documents: store.documents() as u64,
            tokens: store.tokens.tokens(),
            loss_tokens: 0,
            files: vec![],
        }
    };
    let m = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        axes: Axes {
            concepts: vec!["c00".into(), "c01".into()],
            tasks: vec!["ocr".into(), "vqa".into()],
        },
        vocab_size: 65_000,
        token_dtype: DType::U16,
        special_tokens: SpecialTokens {
            pad: 9,
            ..SpecialTokens::default()
        },
        image: corpus.image.clone(),
        clustering: ClusteringInfo {
            centroids: "centroids.safetensors".into(),
            embedding_dim: 4,
            metric: "euclidean".into(),
            inertia: 0.0,
            fit_sample: 0,
            sizes: vec![],
            adjusted_rand_index: None,
            purity: None,
        },
        cells: vec![
            CellEntry {
                concept: 0,
                task: 0,
                data: entry(0, "c00/ocr"),
                embedding: None,
            },
            CellEntry {
                concept: 1,
                task: 1,
                data: entry(1, "c01/vqa"),
                embedding: None,
            },
        ],
        benchmarks: vec![],
        benchmark_cells: Default::default(),
        tokenizer: None,
        vocab: None,
        source: BTreeMap::new(),
    };
    std::fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
}

#[test]
fn named_weights_and_corpus_entry_point() {
    let mut rng = SplitMix64::new(13);
    let specs = vec![lengths(&mut rng, 6, 1, 9), CellSpec { lengths: vec![] }];
    let corpus = build(&specs, DType::U16, true, Some((1, 2)), 13);
    let dir = corpus.prefixes[0].parent().unwrap().to_path_buf();
    write_manifest(&dir, &corpus);
    let opened = Corpus::open(&dir).unwrap();
    let m = &opened.manifest;

    let named = BTreeMap::from([("c00/ocr".to_string(), 1.0)]);
    let w = weights_from_names(m, &named).unwrap();
    assert_eq!(w, vec![1.0, 0.0]);
    let e = weights_from_names(m, &BTreeMap::from([("c09/ocr".to_string(), 1.0)])).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("c09/ocr") && msg.contains("\"c00/ocr\""),
        "{msg}"
    );

    let cfg = SamplerConfig::for_manifest(m, 2, 16);
    assert_eq!(cfg.pad_token, 9);
    let mut s = Sampler::for_corpus(&opened, &w, cfg.clone()).unwrap();
    let b = s.next_batch(0, 1).unwrap();
    assert!(
        b.tokens.contains(&9),
        "rows are padded with the manifest's pad token"
    );
    assert_eq!(b.image_elems, 2);
    // Errors name the cell by its concept/task name.
    let e = err_of(Sampler::for_corpus(&opened, &[0.5, 0.5], cfg));
    assert!(e.to_string().contains("cell 1 (c01/vqa)"), "{e}");
}

#[test]
fn parallel_gather_equals_single_thread_gather() {
    // B × T at the sampler's parallel threshold (2^20 tokens), so the rayon path runs when the
    // pool has more than one thread.
    let corpus = multimodal(DType::U16, 14);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for packing in PACKINGS {
        let cfg = config(Mode::Iid, packing, 256, 4096);
        let mut a = Sampler::new(&corpus.cells, &WEIGHTS5, cfg.clone()).unwrap();
        let mut b = Sampler::new(&corpus.cells, &WEIGHTS5, cfg).unwrap();
        for _ in 0..2 {
            let x = one.install(|| a.next_batch(0, 1)).unwrap();
            let y = four.install(|| b.next_batch(0, 1)).unwrap();
            assert_eq!(x, y, "{packing}");
            if packing == Packing::Pad {
                check_against_files(&corpus, &y, 0);
            }
        }
    }
}
