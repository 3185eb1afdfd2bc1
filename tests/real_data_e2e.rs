//! Issue 20 end to end: a LLaVA-style pool whose images are drawn by the test →
//! `mixatlas embed` (a random CLIP checkpoint in Hugging Face layout) → `prepare` (a real
//! byte-level BPE tokenizer with Qwen2's chat template, the embeddings' directory, pooled
//! image features) → `inspect --verify` → a tiny `search` whose trials are real built-in
//! training runs on the prepared cells → `recipe --export megatron`.
//!
//! Needs `python3` with `numpy`, `pillow`, `tokenizers`, `transformers` and `jinja2`
//! (scripts/test.sh installs them): tests/clip_ref.py writes the checkpoint and the images,
//! tests/real_data_ref.py the tokenizer.

use std::path::Path;

use mixatlas::data::corpus::Corpus;
use serde_json::{json, Value};

use crate::cli::{ok, python_script, s};

/// Runs a test reference script with `args`, panicking with its output on failure.
fn python(script: &str, args: &[&str]) {
    python_script(script, args);
}

/// A LLaVA record for image `file` with id `id`: one user turn with the image, one answer.
fn record(k: usize, id: &str, file: &str) -> Value {
    const TASKS: [&str; 5] = ["captioning", "ocr", "grounding", "detection", "vqa"];
    json!({
        "id": id,
        "image": file,
        "task": TASKS[k % 5],
        "conversations": [
            {"from": "human", "value": format!("<image>\nWhat does picture {k} show?")},
            {"from": "gpt", "value": format!("Shape {} in colour {}, row {}.", k % 7, k % 3, k / 5)},
        ],
    })
}

fn write_json(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// The search's finished trials as ask/tell trials (`id`, `mixture`, `benchmarks`), read from
/// each trial's attempt directory as a user would.
fn finished_trials(search: &Path) -> String {
    let mut lines = String::new();
    let mut dirs: Vec<_> = std::fs::read_dir(search.join("trials"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for t in dirs {
        let a = t.join("a1");
        let mixture: Value =
            serde_json::from_slice(&std::fs::read(a.join("mixture.json")).unwrap()).unwrap();
        let metrics: Value =
            serde_json::from_slice(&std::fs::read(a.join("metrics.json")).unwrap()).unwrap();
        let id = t.file_name().unwrap().to_str().unwrap().to_string();
        let line =
            json!({"id": id, "mixture": mixture["weights"], "benchmarks": metrics["benchmarks"]});
        lines.push_str(&format!("{line}\n"));
    }
    lines
}

#[test]
fn issue20_a_llava_pool_with_images_goes_to_a_megatron_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    let (ck, im, tok) = (p("ck"), p("images"), p("tok"));
    python(
        "clip_ref.py",
        &["make-checkpoint", "--out", s(&ck), "--seed", "7"],
    );
    python(
        "clip_ref.py",
        &[
            "make-images",
            "--out",
            s(&im),
            "--seed",
            "3",
            "--count",
            "60",
        ],
    );
    python("real_data_ref.py", &["tokenizer", s(&tok)]);
    // 48 training samples in one LLaVA JSON array, 12 held out as two benchmarks.
    let list = std::fs::read_to_string(im.join("list.txt")).unwrap();
    let items: Vec<(String, String)> = list
        .lines()
        .map(|l| {
            let (id, f) = l.split_once('\t').unwrap();
            (id.to_string(), f.to_string())
        })
        .collect();
    assert_eq!(items.len(), 60);
    let recs = |r: std::ops::Range<usize>| -> Value {
        r.map(|k| record(k, &items[k].0, &items[k].1))
            .collect::<Vec<_>>()
            .into()
    };
    let pool = p("pool");
    write_json(&pool.join("pool.json"), &recs(0..48));
    write_json(&pool.join("benchmarks/docqa.json"), &recs(48..54));
    write_json(&pool.join("benchmarks/captions.json"), &recs(54..60));
    let emb = p("emb");
    ok(&[
        "embed",
        "--model",
        s(&ck),
        "--images",
        s(&im.join("list.txt")),
        "--out",
        s(&emb),
        "--features",
        "pooled",
    ]);
    let corpus = p("corpus");
    ok(&[
        "prepare",
        s(&pool),
        "--out",
        s(&corpus),
        "--source",
        "llava",
        "--tokenizer",
        s(&tok),
        "--embeddings",
        s(&emb),
        "--image-root",
        s(&im),
        "--k",
        "3",
        "--seed",
        "5",
    ]);
    ok(&["inspect", s(&corpus), "--verify"]);
    let m = Corpus::open(&corpus).unwrap().manifest;
    let docs: u64 = m.cells.iter().map(|c| c.data.documents).sum();
    assert_eq!(docs, 48, "every training sample in a cell");
    assert_eq!(m.benchmarks.len(), 2);
    let img = m.image.as_ref().expect("pooled features are the images");
    assert_eq!(img.patches, 1);
    // Trials are real training runs of the built-in trainer (its vocabulary widened to the
    // tokenizer's), run through the trial protocol as an external command.
    let cmd = format!(
        "{} train --corpus {} --out {{trial_dir}} --mixture {{mixture}} --preset tiny \
         --model-set vocab_size={} --steps 3 --seed {{seed}} --quiet",
        env!("CARGO_BIN_EXE_mixatlas"),
        s(&corpus),
        m.vocab_size
    );
    let search = p("search");
    ok(&[
        "search",
        "--corpus",
        s(&corpus),
        "--out",
        s(&search),
        "--trainer-command",
        &cmd,
        "--method",
        "random",
        "-q",
        "2",
        "--max-trials",
        "3",
        "--quiet",
    ]);
    let trials = finished_trials(&search);
    assert_eq!(trials.lines().count(), 3, "{trials}");
    for l in trials.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let b = v["benchmarks"].as_object().unwrap();
        assert!(b.contains_key("docqa") && b.contains_key("captions"), "{l}");
    }
    let tfile = p("trials.jsonl");
    std::fs::write(&tfile, trials).unwrap();
    let out = ok(&[
        "recipe",
        "--trials",
        s(&tfile),
        "--corpus",
        s(&corpus),
        "--out",
        s(&p("recipe.json")),
        "--export",
        "megatron",
    ]);
    // The blend: weight/prefix pairs over the corpus's cells, weights summing to 1, every
    // prefix an existing Megatron dataset.
    let words: Vec<&str> = out.split_whitespace().collect();
    assert!(words.len() >= 2 && words.len() % 2 == 0, "{out}");
    let mut total = 0.0;
    for pair in words.chunks(2) {
        total += pair[0].parse::<f64>().unwrap_or_else(|_| panic!("{out}"));
        assert!(
            Path::new(&format!("{}.bin", pair[1])).is_file(),
            "{}",
            pair[1]
        );
        assert!(
            Path::new(&format!("{}.idx", pair[1])).is_file(),
            "{}",
            pair[1]
        );
    }
    assert!((total - 1.0).abs() < 1e-6, "weights sum to {total}");
}
