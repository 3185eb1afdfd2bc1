//! Batch assembly throughput of the mixture sampler against a plain memcpy of the same bytes.
//!
//! Target (issue): assembling a `B = 64, T = 2048` batch runs at ≥ 0.5× memcpy, in bytes of
//! `uint16` tokens (`B · T · 2` per batch for every benchmark, so figures compare directly).
//!
//! Corpora are built once under `<target>/bench-data/` and reused:
//! - `longdoc`: Megatron-style text, 10 cells, documents of 300–4000 `uint16` tokens,
//!   ≈ 50M tokens (≈ 100 MB), no loss mask (every token trained on);
//! - `shortdoc`: multimodal-like, 10 cells, documents of 30–120 tokens with a loss mask and
//!   8 × 64 f16 image features each (1 KiB per document), ≈ 3M tokens.
//!
//! References, in the same run: `memcpy_hot` copies one cache-resident `B · T · 2`-byte
//! buffer (an upper bound), `memcpy_gather` copies exactly the token spans of packed batches,
//! from the same memory maps, into one buffer (the fair reference for tokens), and
//! `memcpy_gather_all` (corpora with side files) also copies those documents' masks and
//! images. `pack` / `pad` are `next_batch_into` (rank 0 of 1; at this size the sampler
//! gathers on the calling thread), `pack_plan_only` is the planning part alone. The reference
//! plans use another seed than the measured sampler, so neither warms the other's cache.
//!
//! Run with `cargo bench --bench sampler` (`-- longdoc` or `-- shortdoc` to select).

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use half::f16;
use mixatlas::data::corpus::{image_path, mask_path, DocumentStore, ImageSpec};
use mixatlas::data::megatron::{DType, DatasetWriter};
use mixatlas::data::sampler::{Batch, Mode, Packing, PlacedDoc, Sampler, SamplerConfig};
use mixatlas::rng::SplitMix64;

const B: usize = 64;
const T: usize = 2048;
const CELLS: usize = 10;
const WEIGHTS: [f64; CELLS] = [0.05, 0.15, 0.1, 0.1, 0.05, 0.2, 0.05, 0.1, 0.1, 0.1];

/// Parameters of a benchmark corpus.
struct CorpusSpec {
    name: &'static str,
    tokens_per_cell: usize,
    min_len: usize,
    max_len: usize,
    mask: bool,
    image: Option<ImageSpec>,
}

fn data_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-data")
}

/// Builds the corpus unless a complete copy (marker file with the same parameters) exists.
fn ensure_corpus(spec: &CorpusSpec) -> Vec<PathBuf> {
    let dir = data_root().join(spec.name);
    let prefixes: Vec<PathBuf> = (0..CELLS)
        .map(|c| dir.join(format!("cell{c:02}")))
        .collect();
    let stamp = format!(
        "v1 {} {} {} {} {:?}",
        spec.tokens_per_cell, spec.min_len, spec.max_len, spec.mask, spec.image
    );
    let marker = dir.join("READY");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(stamp.as_str()) {
        return prefixes;
    }
    eprintln!("building benchmark corpus {} …", dir.display());
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = SplitMix64::new(2024);
    for prefix in &prefixes {
        let mut w = DatasetWriter::create(prefix, DType::U16).unwrap();
        let mut mask = Vec::new();
        let mut img = Vec::new();
        let mut written = 0;
        let mut doc = Vec::new();
        while written < spec.tokens_per_cell {
            let len = spec.min_len + rng.below((spec.max_len - spec.min_len + 1) as u64) as usize;
            doc.clear();
            doc.extend((0..len).map(|_| 4 + rng.below(50_000) as u32));
            w.add_document(&doc).unwrap();
            if spec.mask {
                mask.extend((0..len).map(|i| (i >= len / 4) as u8));
            }
            if let Some(s) = &spec.image {
                for _ in 0..s.patches * s.dim {
                    img.extend_from_slice(&f16::from_f32(rng.normal() as f32).to_le_bytes());
                }
            }
            written += len;
        }
        w.finish().unwrap();
        if spec.mask {
            std::fs::write(mask_path(prefix), &mask).unwrap();
        }
        if spec.image.is_some() {
            std::fs::write(image_path(prefix), &img).unwrap();
        }
    }
    std::fs::write(&marker, stamp).unwrap();
    prefixes
}

fn open(spec: &CorpusSpec) -> Vec<DocumentStore> {
    ensure_corpus(spec)
        .iter()
        .map(|p| DocumentStore::open(p, spec.image.as_ref()).unwrap())
        .collect()
}

fn config(packing: Packing, seq_len: usize) -> SamplerConfig {
    SamplerConfig {
        seed: 7,
        mode: Mode::Iid,
        packing,
        batch_size: B,
        seq_len,
        pad_token: 0,
    }
}

/// The document spans of `batches` consecutive packed batches, as in the sampler's plans.
fn planned_spans(cells: &[DocumentStore], batches: usize) -> Vec<Vec<PlacedDoc>> {
    let cfg = SamplerConfig {
        seed: 8,
        ..config(Packing::Pack, T)
    };
    let mut s = Sampler::new(cells, &WEIGHTS, cfg).unwrap();
    (0..batches)
        .map(|_| {
            let plan = s.peek_plan();
            s.seek(s.step() + 1);
            plan
        })
        .collect()
}

fn bench_corpus(c: &mut Criterion, spec: &CorpusSpec) {
    let cells = open(spec);
    let bytes = (B * T * 2) as u64;
    let mut group = c.benchmark_group(spec.name);
    group.throughput(Throughput::BytesDecimal(bytes));

    // Reference 1: one cache-resident buffer.
    let src: Vec<u8> = (0..B * T * 2).map(|i| i as u8).collect();
    let src = &src[..];
    let mut dst = vec![0u8; B * T * 2];
    group.bench_function("memcpy_hot", |b| {
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(src));
            std::hint::black_box(&dst);
        })
    });

    // Reference 2: the packed batches' own document bytes, from the maps.
    let plans = planned_spans(&cells, 256);
    let mut k = 0;
    group.bench_function("memcpy_gather", |b| {
        b.iter(|| {
            let mut at = 0;
            for d in &plans[k % plans.len()] {
                let n = d.len as usize * 2;
                let s = &cells[d.cell as usize]
                    .tokens
                    .document_bytes(d.document as usize)[..n];
                dst[at..at + n].copy_from_slice(s);
                at += n;
            }
            k += 1;
            std::hint::black_box(&dst);
        })
    });
    if spec.mask || spec.image.is_some() {
        // Reference 3: the same documents' tokens, masks and images.
        let mut side = vec![0u8; 8 << 20];
        group.bench_function("memcpy_gather_all", |b| {
            b.iter(|| {
                let (mut at, mut at_side) = (0, 0);
                for d in &plans[k % plans.len()] {
                    let store = &cells[d.cell as usize];
                    let doc = d.document as usize;
                    let n = d.len as usize * 2;
                    dst[at..at + n].copy_from_slice(&store.tokens.document_bytes(doc)[..n]);
                    at += n;
                    for src in [store.mask(doc).map(|m| &m[..n / 2]), store.image_bytes(doc)]
                        .into_iter()
                        .flatten()
                    {
                        side[at_side..at_side + src.len()].copy_from_slice(src);
                        at_side += src.len();
                    }
                }
                k += 1;
                std::hint::black_box((&dst, &side));
            })
        });
    }

    // Pad rows of short multimodal documents are short: they get their own group, with
    // `B · 128 · 2` bytes per batch.
    let pad_len = if spec.image.is_some() { 128 } else { T };
    assemble(&mut group, &cells, Packing::Pack, T);
    if pad_len == T {
        assemble(&mut group, &cells, Packing::Pad, T);
    }
    let mut s = Sampler::new(&cells, &WEIGHTS, config(Packing::Pack, T)).unwrap();
    group.bench_function("pack_plan_only", |b| {
        b.iter(|| {
            let step = s.step();
            s.seek(step + 1);
        })
    });
    group.finish();
    if pad_len != T {
        let mut group = c.benchmark_group(format!("{}_pad{pad_len}", spec.name));
        group.throughput(Throughput::BytesDecimal((B * pad_len * 2) as u64));
        assemble(&mut group, &cells, Packing::Pad, pad_len);
        group.finish();
    }
}

/// Benchmarks `next_batch_into` (rank 0 of 1, buffers reused).
fn assemble(
    group: &mut BenchmarkGroup<'_, WallTime>,
    cells: &[DocumentStore],
    packing: Packing,
    seq_len: usize,
) {
    let mut s = Sampler::new(cells, &WEIGHTS, config(packing, seq_len)).unwrap();
    let mut batch = Batch::default();
    group.bench_function(packing.to_string(), |b| {
        b.iter(|| s.next_batch_into(0, 1, &mut batch).unwrap())
    });
}

fn longdoc(c: &mut Criterion) {
    bench_corpus(
        c,
        &CorpusSpec {
            name: "longdoc",
            tokens_per_cell: 5_000_000,
            min_len: 300,
            max_len: 4000,
            mask: false,
            image: None,
        },
    );
}

fn shortdoc(c: &mut Criterion) {
    bench_corpus(
        c,
        &CorpusSpec {
            name: "shortdoc",
            tokens_per_cell: 300_000,
            min_len: 30,
            max_len: 120,
            mask: true,
            image: Some(ImageSpec {
                patches: 8,
                dim: 64,
                dtype: "float16".into(),
            }),
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = longdoc, shortdoc
}
criterion_main!(benches);
