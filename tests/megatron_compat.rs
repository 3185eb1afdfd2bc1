//! Megatron compatibility, both ways, against an independent implementation.
//!
//! `tests/megatron_ref.py` is a standard-library-only Python reader/writer written from the
//! layout Megatron-LM publishes (`megatron/core/datasets/indexed_dataset.py`), sharing no code
//! with `mixatlas::data::megatron`. These tests check that files it writes (every dtype, empty
//! and multi-sequence documents, the multimodal sequence-modes trailer) read back exactly, that
//! files MixAtlas writes parse exactly in Python, and that damaged files are rejected with an
//! error naming the file.
//!
//! The tests need `python3` on `PATH` (or `MIXATLAS_PYTHON`); they fail, not skip, without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mixatlas::data::megatron::{prefix_paths, DType, DatasetWriter, IndexedDataset};
use mixatlas::rng::SplitMix64;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/megatron_ref.py");

/// Runs `megatron_ref.py` with `args`; panics with advice when Python cannot be started.
fn python(args: &[&str]) -> Output {
    let exe = std::env::var("MIXATLAS_PYTHON").unwrap_or_else(|_| "python3".into());
    // -I -S: ignore the user's environment and site-packages (the script is stdlib-only) and
    // start about twice as fast, which matters for the many short runs below.
    Command::new(&exe)
        .args(["-I", "-S", SCRIPT])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{exe} {SCRIPT}`: {e}\n\
                 The Megatron compatibility tests need Python 3 (standard library only, no \
                 numpy). Install python3 or point MIXATLAS_PYTHON at an interpreter."
            )
        })
}

/// Runs the script and returns its stdout, panicking with its stderr on failure.
fn python_ok(args: &[&str]) -> String {
    let out = python(args);
    assert!(
        out.status.success(),
        "megatron_ref.py {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("megatron_ref.py printed non-UTF-8")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Largest token id each dtype holds exactly when read back as `u32`.
fn max_token(dt: DType) -> u64 {
    match dt {
        DType::U8 => u8::MAX as u64,
        DType::I8 => i8::MAX as u64,
        DType::I16 => i16::MAX as u64,
        DType::U16 => u16::MAX as u64,
        DType::I32 => i32::MAX as u64,
        DType::I64 | DType::F64 => u32::MAX as u64,
        DType::F32 => 1 << 24,
    }
}

/// Random documents with edge cases: empty ones at even and odd positions (including the last
/// one), the extreme token ids, and one long document.
fn sample_docs(dt: DType, seed: u64) -> Vec<Vec<u32>> {
    let max = max_token(dt);
    let mut rng = SplitMix64::new(seed);
    let mut docs: Vec<Vec<u32>> = vec![
        vec![],
        vec![],
        vec![0],
        vec![max as u32],
        vec![max as u32, 0, (max - 1) as u32, 1],
    ];
    for _ in 0..20 {
        let len = if rng.chance(0.15) { 0 } else { rng.below(40) };
        docs.push((0..len).map(|_| rng.below(max + 1) as u32).collect());
    }
    docs.push((0..300).map(|_| rng.below(max + 1) as u32).collect());
    if docs.len() % 2 == 1 {
        docs.push(vec![1, 2]);
    }
    docs.push(vec![]); // even position: a trailing document with no sequence at all
    docs
}

/// Sequence lengths the Python writer's `--multi-sequence` rule gives document `k`
/// (pieces of 1, 2, 3, … elements; an empty document has no sequence at an even position and
/// one empty sequence at an odd one).
fn expected_pieces(k: usize, len: usize) -> Vec<usize> {
    if len == 0 {
        return if k % 2 == 0 { vec![] } else { vec![0] };
    }
    let mut pieces = Vec::new();
    let (mut pos, mut size) = (0, 1);
    while pos < len {
        pieces.push(size.min(len - pos));
        pos += size;
        size += 1;
    }
    pieces
}

/// Writes `docs` with the Python writer and returns its `{sequences, documents, tokens}`.
fn python_write(
    dir: &Path,
    name: &str,
    dt: DType,
    docs: &[Vec<u32>],
    flags: &[&str],
) -> (PathBuf, Value) {
    let json = dir.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_string(docs).unwrap()).unwrap();
    let prefix = dir.join(name);
    let mut args = vec![
        "write",
        s(&prefix),
        "--dtype",
        dt.name(),
        "--docs-json",
        s(&json),
    ];
    args.extend_from_slice(flags);
    let summary = serde_json::from_str(&python_ok(&args)).expect("write prints JSON");
    (prefix, summary)
}

#[test]
fn python_written_files_read_back_for_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let variants: [&[&str]; 4] = [
        &[],
        &["--multi-sequence"],
        &["--sequence-modes"],
        &["--multi-sequence", "--sequence-modes"],
    ];
    for (seed, dt) in DType::ALL.into_iter().enumerate() {
        let docs = sample_docs(dt, seed as u64);
        let total: usize = docs.iter().map(Vec::len).sum();
        for (v, flags) in variants.iter().enumerate() {
            let multi = flags.contains(&"--multi-sequence");
            let ctx = format!("dtype {dt}, flags {flags:?}");
            let (prefix, summary) =
                python_write(dir.path(), &format!("{dt}_{v}"), dt, &docs, flags);
            let pieces: Vec<Vec<usize>> = docs
                .iter()
                .enumerate()
                .map(|(k, d)| {
                    if multi {
                        expected_pieces(k, d.len())
                    } else {
                        vec![d.len()]
                    }
                })
                .collect();
            let sequences: usize = pieces.iter().map(Vec::len).sum();
            assert_eq!(summary["sequences"], sequences as u64, "{ctx}");
            if multi {
                assert!(sequences > docs.len(), "{ctx}: split into more sequences");
            }

            let ds = IndexedDataset::open(&prefix).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(ds.dtype(), dt, "{ctx}");
            assert_eq!(ds.documents(), docs.len(), "{ctx}");
            assert_eq!(ds.sequences(), sequences, "{ctx}");
            assert_eq!(ds.tokens(), total as u64, "{ctx}");
            let mut offset = 0u64;
            for (k, doc) in docs.iter().enumerate() {
                assert_eq!(ds.document(k).unwrap(), *doc, "{ctx}: document {k}");
                assert_eq!(ds.document_len(k), doc.len(), "{ctx}: document {k}");
                assert_eq!(ds.document_offset(k), offset, "{ctx}: document {k}");
                let lens: Vec<usize> = ds
                    .document_sequences(k)
                    .map(|i| ds.sequence_len(i))
                    .collect();
                assert_eq!(lens, pieces[k], "{ctx}: sequences of document {k}");
                offset += doc.len() as u64;
            }
            if dt == DType::U16 {
                let d = 4;
                let view: Vec<u32> = ds
                    .document_u16(d)
                    .unwrap()
                    .iter()
                    .map(|&t| t as u32)
                    .collect();
                assert_eq!(view, docs[d], "{ctx}: zero-copy view");
            }
        }
    }
}

/// Documents as the Python reader printed them.
fn json_docs(v: &Value) -> Vec<Vec<u64>> {
    v.as_array()
        .expect("docs is a list")
        .iter()
        .map(|d| {
            d.as_array()
                .expect("a document is a list")
                .iter()
                .map(|t| {
                    t.as_u64()
                        .unwrap_or_else(|| panic!("token {t} is not an id"))
                })
                .collect()
        })
        .collect()
}

fn widen(docs: &[Vec<u32>]) -> Vec<Vec<u64>> {
    docs.iter()
        .map(|d| d.iter().map(|&t| t as u64).collect())
        .collect()
}

fn mixatlas_write(prefix: &Path, dt: DType, docs: &[Vec<u32>]) {
    let mut w = DatasetWriter::create(prefix, dt).unwrap();
    for d in docs {
        w.add_document(d).unwrap();
    }
    let written = w.finish().unwrap();
    assert_eq!(written.documents, docs.len() as u64);
}

#[test]
fn mixatlas_written_files_parse_in_python() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, dt) in DType::ALL.into_iter().enumerate() {
        let docs = sample_docs(dt, 1000 + seed as u64);
        let prefix = dir.path().join(format!("mx_{dt}"));
        mixatlas_write(&prefix, dt, &docs);
        let out: Value = serde_json::from_str(&python_ok(&["read", s(&prefix)])).unwrap();
        let ctx = format!("dtype {dt}");
        assert_eq!(out["dtype"], dt.name(), "{ctx}");
        assert_eq!(
            out["sequences"],
            docs.len() as u64,
            "{ctx}: one sequence per document"
        );
        assert_eq!(out["documents"], docs.len() as u64, "{ctx}");
        let total: usize = docs.iter().map(Vec::len).sum();
        assert_eq!(out["tokens"], total as u64, "{ctx}");
        assert_eq!(out["sequence_modes"], false, "{ctx}");
        let lens: Vec<u64> = docs.iter().map(|d| d.len() as u64).collect();
        assert_eq!(out["doc_lengths"], serde_json::json!(lens), "{ctx}");
        assert_eq!(json_docs(&out["docs"]), widen(&docs), "{ctx}");
    }
}

/// A dataset the size of a small prepared cell, and the `--docs` subset a corpus check uses.
#[test]
fn python_reads_a_cell_sized_dataset_and_document_subsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(7);
    let docs: Vec<Vec<u32>> = (0..5000)
        .map(|_| {
            let len = rng.below(400);
            (0..len).map(|_| rng.below(32_000) as u32).collect()
        })
        .collect();
    let prefix = dir.path().join("cells").join("c03_ocr");
    std::fs::create_dir_all(prefix.parent().unwrap()).unwrap();
    mixatlas_write(&prefix, DType::U16, &docs);
    let out: Value =
        serde_json::from_str(&python_ok(&["read", s(&prefix), "--docs", "4999,0,17,17"])).unwrap();
    assert_eq!(out["documents"], 5000);
    let total: usize = docs.iter().map(Vec::len).sum();
    assert_eq!(out["tokens"], total as u64);
    assert_eq!(out["doc_ids"], serde_json::json!([4999, 0, 17, 17]));
    let want = widen(&[
        docs[4999].clone(),
        docs[0].clone(),
        docs[17].clone(),
        docs[17].clone(),
    ]);
    assert_eq!(json_docs(&out["docs"]), want);
    let lens: Vec<u64> = docs.iter().map(|d| d.len() as u64).collect();
    assert_eq!(out["doc_lengths"], serde_json::json!(lens));

    let bad = python(&["read", s(&prefix), "--docs", "5000"]);
    assert_eq!(
        bad.status.code(),
        Some(1),
        "out-of-range --docs is an error"
    );
}

#[test]
fn damaged_files_are_rejected_naming_the_file() {
    // (corruption, damaged file, phrase in MixAtlas's error)
    let cases = [
        ("truncate-bin", ".bin", "truncated .bin"),
        ("trailing-bin", ".bin", "trailing data"),
        ("truncate-idx", ".idx", "truncated or corrupt"),
        ("magic", ".idx", "bad magic"),
        ("version", ".idx", "unsupported version 2"),
        ("dtype", ".idx", "unknown dtype code 9"),
        ("negative-length", ".idx", "negative length"),
        ("pointer", ".idx", "does not follow the previous sequence"),
        ("doc-index", ".idx", "last document index"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let docs = vec![vec![5, 6], vec![7], vec![], vec![8, 9, 10, 11]];
    let variants: [&[&str]; 2] = [&[], &["--multi-sequence", "--sequence-modes"]];
    for (dt, flags) in [(DType::I32, variants[0]), (DType::U16, variants[1])] {
        let (good, _) = python_write(dir.path(), &format!("good_{dt}"), dt, &docs, flags);
        IndexedDataset::open(&good).unwrap_or_else(|e| panic!("{dt} {flags:?}: {e}"));
        let (good_bin, good_idx) = prefix_paths(&good);
        for (kind, ext, phrase) in cases {
            let ctx = format!("{kind} on {dt} {flags:?}");
            let prefix = dir.path().join(format!("bad_{dt}_{kind}"));
            let (bin, idx) = prefix_paths(&prefix);
            std::fs::copy(&good_bin, &bin).unwrap();
            std::fs::copy(&good_idx, &idx).unwrap();
            python_ok(&["corrupt", s(&prefix), "--kind", kind]);

            let file = if ext == ".bin" { bin } else { idx };
            let err = IndexedDataset::open(&prefix)
                .err()
                .unwrap_or_else(|| panic!("{ctx}: damaged file accepted"))
                .to_string();
            assert!(
                err.contains(s(&file)),
                "{ctx}: {err:?} does not name {file:?}"
            );
            assert!(err.contains(phrase), "{ctx}: {err:?} lacks {phrase:?}");

            // The reference reader must be just as strict, or the other direction proves little.
            let out = python(&["read", s(&prefix)]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{ctx}: Python accepted it");
            assert!(
                stderr.contains(s(&file)),
                "{ctx}: {stderr:?} does not name {file:?}"
            );
        }
    }
}

#[test]
fn python_writer_rejects_tokens_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("docs.json");
    std::fs::write(&json, "[[1, 256]]").unwrap();
    let prefix = dir.path().join("x");
    let out = python(&[
        "write",
        s(&prefix),
        "--dtype",
        "uint8",
        "--docs-json",
        s(&json),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("256 does not fit uint8"));
}
