//! Issue 20, sources and tokenisation: `prepare` on a LLaVA-style pool (JSON array, JSONL)
//! and on WebDataset shards of the same samples, tokenised with a real byte-level BPE
//! tokenizer in Hugging Face format and given precomputed embeddings (`.npy` by id, a
//! directory of parts with per-image features).
//!
//! References are independent: tests/real_data_ref.py trains the tokenizer with the Python
//! `tokenizers` package, writes the embeddings with numpy, and tokenises every sample with
//! `transformers`' `AutoTokenizer.apply_chat_template`; the loss mask it derives from the
//! ChatML structure. The tests need `python3` with `tokenizers`, `transformers`, `jinja2` and
//! `numpy` (scripts/test.sh installs them; `MIXATLAS_PYTHON` names another interpreter).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mixatlas::data::corpus::Corpus;
use mixatlas::rng::SplitMix64;
use serde_json::{json, Value};

use crate::cli::{fails, ok, s};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/real_data_ref.py");

/// The user turn of a WebDataset caption sample (src/data/sources/webdataset.rs).
const CAPTION_PROMPT: &str = "Describe this image briefly.";

/// Runs real_data_ref.py with `args`, panicking with its output on failure.
fn python(args: &[&str]) {
    let exe = std::env::var("MIXATLAS_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&exe)
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{exe} {SCRIPT}`: {e} (needs python3 with tokenizers, transformers, jinja2, numpy)")
        });
    assert!(
        out.status.success(),
        "real_data_ref.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One sample of the test pool.
#[derive(Clone)]
struct Sample {
    id: String,
    /// LLaVA `image` path (`coco/…`), if the sample has an image.
    image: Option<String>,
    task: Option<String>,
    /// `(from, value)` turns, as in the LLaVA file.
    turns: Vec<(&'static str, String)>,
    /// A WebDataset caption sample: the caption text as stored in `KEY.txt`.
    caption: Option<String>,
}

impl Sample {
    fn llava(&self) -> Value {
        let conv: Vec<Value> = self
            .turns
            .iter()
            .map(|(f, v)| json!({"from": f, "value": v}))
            .collect();
        let mut o = json!({"id": self.id, "conversations": conv, "source_meta": {"kept": true}});
        if let Some(i) = &self.image {
            o["image"] = json!(i);
        }
        if let Some(t) = &self.task {
            o["task"] = json!(t);
        }
        o
    }

    /// The conversation as roles and texts after LLaVA's rule (an image without a marker gets
    /// `<image>\n` in front of the first user turn).
    fn messages(&self) -> Vec<(String, String)> {
        let role = |f: &'static str| match f {
            "human" => "user",
            "gpt" => "assistant",
            other => other,
        };
        let mut m: Vec<(String, String)> = self
            .turns
            .iter()
            .map(|(f, v)| (role(f).to_string(), v.clone()))
            .collect();
        let marked = m.iter().any(|(_, t)| t.contains("<image>"));
        if self.image.is_some() && !marked {
            let first = m.iter_mut().find(|(r, _)| r == "user").unwrap();
            first.1 = format!("<image>\n{}", first.1);
        }
        m
    }
}

const WORDS: &[&str] = &[
    "the",
    "sign",
    "says",
    "Stop",
    "a",
    "red",
    "bus",
    "at",
    "night",
    "with",
    "3",
    "people",
    "Où",
    "est",
    "la",
    "gare",
    "图片",
    "中",
    "invoice",
    "$1,234.56",
    "isn't",
    "it's",
    "dog's",
    "[12, 40, 200, 310]",
    "(left)",
    "—",
    "naïve",
    "café",
    "🙂",
    "OK.",
    "42",
    "2024-0017",
];

fn phrase(rng: &mut SplitMix64, n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        let sep = match rng.below(12) {
            0 if i > 0 => "\n",
            1 if i > 0 => "  ",
            2 if i > 0 => "\n\n",
            _ if i > 0 => " ",
            _ => "",
        };
        out.push_str(sep);
        out.push_str(w);
    }
    out
}

/// `n` samples: captions (every 9th), text-only ones, images without a marker, multi-turn
/// and system-prompted conversations, leading spaces and unicode.
fn pool(n: usize, seed: u64, prefix: &str) -> Vec<Sample> {
    let mut rng = SplitMix64::new(seed);
    let tasks = ["vqa", "ocr", "grounding", "detection"];
    (0..n)
        .map(|i| {
            let id = format!("{prefix}{i:05}");
            if i % 9 == 4 {
                let caption = phrase(&mut rng, 3 + i % 5);
                return Sample {
                    id,
                    image: Some(format!("coco/train2017/{i:012}.jpg")),
                    task: None,
                    turns: vec![
                        ("human", format!("<image>\n{CAPTION_PROMPT}")),
                        ("gpt", caption.trim().to_string()),
                    ],
                    caption: Some(format!("  {caption} \n")),
                };
            }
            let image = (i % 7 != 3).then(|| format!("textvqa/train_images/{i:06}.jpg"));
            let mut turns = Vec::new();
            if i % 5 == 1 {
                turns.push(("system", "Answer briefly.".to_string()));
            }
            for t in 0..1 + i % 3 {
                let mut q = phrase(&mut rng, 2 + t);
                if t == 0 && image.is_some() && i % 11 != 5 {
                    q = if i % 2 == 0 {
                        format!("<image>\n{q}")
                    } else {
                        format!("{q}\n<image>")
                    };
                }
                turns.push(("human", q));
                let mut a = phrase(&mut rng, 1 + (i + t) % 6);
                if i % 6 == 2 {
                    a = format!(" {a}");
                }
                turns.push(("gpt", a));
            }
            Sample {
                id,
                image,
                task: Some(tasks[i % tasks.len()].to_string()),
                turns,
                caption: None,
            }
        })
        .collect()
}

/// A tar member.
fn member(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}

/// A WebDataset shard of `samples`: `KEY.png` (bytes `prepare` does not read) and `KEY.txt`
/// for captions, `KEY.json` (the LLaVA record without `image`) for the others.
fn write_shard(path: &Path, samples: &[Sample]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for smp in samples {
        if smp.image.is_some() {
            member(&mut b, &format!("{}.png", smp.id), b"\x89PNG not decoded");
        }
        match &smp.caption {
            Some(c) => member(&mut b, &format!("{}.txt", smp.id), c.as_bytes()),
            None => {
                let mut v = smp.llava();
                v.as_object_mut().unwrap().remove("image");
                member(
                    &mut b,
                    &format!("{}.json", smp.id),
                    v.to_string().as_bytes(),
                );
            }
        }
    }
    b.finish().unwrap();
}

fn jsonl(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|x| x.llava().to_string() + "\n")
        .collect()
}

/// The three layouts of the same pool: `json/` (one array + benchmarks/docvqa.json), `jsonl/`
/// and `wds/` (two shards + benchmarks/docvqa.tar).
fn write_layouts(root: &Path, train: &[Sample], bench: &[Sample]) -> [PathBuf; 3] {
    let dirs = ["json", "jsonl", "wds"].map(|d| root.join(d));
    for d in &dirs {
        std::fs::create_dir_all(d.join("benchmarks")).unwrap();
    }
    let array = |x: &[Sample]| {
        serde_json::to_string_pretty(&x.iter().map(Sample::llava).collect::<Vec<_>>()).unwrap()
    };
    std::fs::write(dirs[0].join("pool.json"), array(train)).unwrap();
    std::fs::write(dirs[0].join("benchmarks/docvqa.json"), array(bench)).unwrap();
    std::fs::write(dirs[1].join("pool.jsonl"), jsonl(train)).unwrap();
    std::fs::write(dirs[1].join("benchmarks/docvqa.jsonl"), jsonl(bench)).unwrap();
    let half = train.len() / 2;
    write_shard(&dirs[2].join("shard-000000.tar"), &train[..half]);
    write_shard(&dirs[2].join("shard-000001.tar"), &train[half..]);
    write_shard(&dirs[2].join("benchmarks/docvqa.tar"), bench);
    dirs
}

/// Every file under `dir/cells` and `dir/benchmarks` by relative path, and the centroids.
fn corpus_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["cells", "benchmarks"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            out.insert(
                format!("{sub}/{}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    // The centroids' values (the file's metadata map is written in HashMap order).
    let bytes = std::fs::read(dir.join("centroids.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let c = st.tensor("centroids").unwrap();
    out.insert("centroids".into(), c.data().to_vec());
    out
}

/// `(tokens, mask)` of every document of the corpus (cells and benchmarks), sorted.
fn documents(dir: &Path) -> Vec<(Vec<u32>, Vec<u8>)> {
    let c = Corpus::open(dir).unwrap();
    let mut out = Vec::new();
    for store in c.cells.iter().chain(&c.benchmarks) {
        for d in 0..store.documents() {
            let t = store.tokens.document(d).unwrap();
            let m = store.mask(d).unwrap().to_vec();
            out.push((t, m));
        }
    }
    out.sort();
    out
}

/// The test tokenizer, written once per test binary by real_data_ref.py.
fn tokenizer() -> &'static Path {
    static DIR: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &DIR.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("tok");
        python(&["tokenizer", s(&p)]);
        (t, p)
    })
    .1
}

/// The vocabulary size of a `tokenizer.json` read as plain JSON: the largest id of the model's
/// vocabulary and the added tokens, plus one.
fn hf_vocab_size(dir: &Path) -> u32 {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let model = v["model"]["vocab"].as_object().unwrap().values();
    let added = v["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"]);
    model
        .chain(added)
        .map(|x| x.as_u64().unwrap() as u32)
        .max()
        .unwrap()
        + 1
}

/// `transformers`' token ids and loss masks of `samples` with `rows` placeholders per image.
fn reference(dir: &Path, samples: &[Sample], rows: usize) -> Vec<(Vec<u32>, Vec<u8>)> {
    let pool: Vec<Value> = samples
        .iter()
        .map(|x| json!({"turns": x.messages(), "rows": rows}))
        .collect();
    let (inp, out) = (dir.join("ref_in.json"), dir.join("ref_out.json"));
    std::fs::write(&inp, serde_json::to_string(&pool).unwrap()).unwrap();
    python(&["encode", s(tokenizer()), s(&inp), s(&out)]);
    let got: Vec<Value> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    got.iter()
        .map(|v| {
            let ids = v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32);
            let mask = v["mask"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u8);
            (ids.collect(), mask.collect())
        })
        .collect()
}

/// Embeddings by id for `samples`: numpy writes `emb.npy` (rows in a shuffled id order) and
/// its `emb.npy.ids.txt`.
fn embeddings_by_id(dir: &Path, samples: &[Sample], dim: usize) -> PathBuf {
    let mut ids: Vec<&str> = samples.iter().map(|x| x.id.as_str()).collect();
    let mut rng = SplitMix64::new(99);
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let npy = dir.join("emb.npy");
    let ids_path = dir.join("emb.npy.ids.txt");
    std::fs::write(&ids_path, ids.join("\n") + "\n").unwrap();
    python(&["embeddings", s(&ids_path), s(&npy), &dim.to_string(), "7"]);
    npy
}

fn task_map(dir: &Path) -> PathBuf {
    let p = dir.join("tasks.toml");
    std::fs::write(
        &p,
        "# captions carry no task field\n\"*\" = \"captioning\"\n",
    )
    .unwrap();
    p
}

fn prepare_args<'a>(input: &'a str, out: &'a str, emb: &'a str, map: &'a str) -> Vec<&'a str> {
    vec![
        "prepare",
        input,
        "--out",
        out,
        "--k",
        "3",
        "--tokenizer",
        s(tokenizer()),
        "--embeddings",
        emb,
        "--task-map",
        map,
        "--seed",
        "5",
    ]
}

/// The acceptance tests of the sources and the tokeniser: every token id and loss-mask entry
/// equals `transformers`' on every sample (training and benchmark), and the JSON, JSONL and
/// WebDataset layouts of the same samples give byte-identical cells, benchmarks and centroids.
#[test]
fn issue20_llava_json_jsonl_and_webdataset_agree_with_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let train = pool(150, 1, "s");
    let bench = pool(20, 2, "b");
    let dirs = write_layouts(tmp.path(), &train, &bench);
    let all: Vec<Sample> = train.iter().chain(&bench).cloned().collect();
    let emb = embeddings_by_id(tmp.path(), &all, 16);
    let map = task_map(tmp.path());
    let mut files = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let out = tmp.path().join(format!("corpus{i}"));
        // Each directory's kind is inferred (with a tokenizer: .tar → webdataset, else llava).
        let args = prepare_args(s(d), s(&out), s(&emb), s(&map));
        let report = ok(&args);
        assert!(report.contains("150 documents"), "{report}");
        ok(&["inspect", s(&out), "--verify"]);
        files.push(corpus_files(&out));
    }
    assert!(
        files[0].keys().any(|k| k.ends_with(".bin"))
            && files[0].contains_key("benchmarks/docvqa.bin")
    );
    for (i, f) in files.iter().enumerate().skip(1) {
        assert_eq!(
            f.keys().collect::<Vec<_>>(),
            files[0].keys().collect::<Vec<_>>(),
            "layout {i}"
        );
        for (k, v) in f {
            assert!(
                v == &files[0][k],
                "layout {i}: {k} differs from the JSON layout's"
            );
        }
    }
    // Qwen2's ChatML is the default template: without `chat_template`, the same corpus.
    let bare = tmp.path().join("tok-no-template");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(
        tokenizer().join("tokenizer.json"),
        bare.join("tokenizer.json"),
    )
    .unwrap();
    let cfg_path = tokenizer().join("tokenizer_config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(bare.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let out = tmp.path().join("corpus-default-template");
    let mut args = prepare_args(s(&dirs[0]), s(&out), s(&emb), s(&map));
    args[7] = s(&bare);
    ok(&args);
    assert!(
        corpus_files(&out) == files[0],
        "the default template is Qwen2's"
    );
    let mut want = reference(tmp.path(), &all, 1);
    want.sort();
    let got = documents(&tmp.path().join("corpus0"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "token ids");
        assert_eq!(g.1, w.1, "loss mask of {:?}", g.0);
    }
    let m = Corpus::open(&tmp.path().join("corpus0")).unwrap().manifest;
    let t = m.tokenizer.expect("the manifest records the tokenizer");
    let vocab = hf_vocab_size(tokenizer());
    assert_eq!(
        (t.vocab_size, m.vocab_size, t.image_rows),
        (vocab, vocab, 1)
    );
    assert!(m.image.is_none(), "no features given: no image features");
    assert!(m.axes.tasks.contains(&"captioning".to_string()));
    // The tiny model's vocabulary (128) is smaller than the tokenizer's: a clear error.
    let run = tmp.path().join("run");
    let err = fails(&[
        "train",
        "--corpus",
        s(&tmp.path().join("corpus0")),
        "--out",
        s(&run),
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--quiet",
    ]);
    assert!(
        err.contains("was tokenised with") && err.contains(&format!("at least {vocab}")),
        "{err}"
    );
}

/// `mixatlas embed`'s directory contract: parts in name order with ids and f16 per-image
/// features `[n, P, F]`. The features become the documents' images (P × F, f16, bit for bit)
/// and each image expands to P placeholder tokens.
#[test]
fn issue20_embedding_parts_with_features_become_images() {
    let tmp = tempfile::tempdir().unwrap();
    let train = pool(40, 3, "s");
    let dirs = write_layouts(tmp.path(), &train, &[]);
    std::fs::remove_dir_all(dirs[0].join("benchmarks")).unwrap();
    let parts = tmp.path().join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    let (p, f) = (4usize, 8usize);
    for (k, chunk) in train.chunks(25).enumerate() {
        let stem = parts.join(format!("part-{k:06}"));
        let ids = PathBuf::from(format!("{}.ids.txt", stem.display()));
        let ids_text: String = chunk.iter().map(|x| format!("{}\n", x.id)).collect();
        std::fs::write(&ids, ids_text).unwrap();
        let npy = format!("{}.npy", stem.display());
        let feats = format!("{}.features.npy", stem.display());
        python(&[
            "embeddings",
            s(&ids),
            &npy,
            "16",
            &k.to_string(),
            &feats,
            &p.to_string(),
            &f.to_string(),
        ]);
    }
    let out = tmp.path().join("corpus");
    let map = task_map(tmp.path());
    ok(&prepare_args(s(&dirs[0]), s(&out), s(&parts), s(&map)));
    let c = Corpus::open(&out).unwrap();
    let spec = c.manifest.image.clone().expect("features give images");
    assert_eq!((spec.patches, spec.dim), (p, f));
    assert_eq!(c.manifest.tokenizer.as_ref().unwrap().image_rows, p);
    let pad = c.manifest.special_tokens.image;
    // Every stored image is one of the features rows, bit for bit (numpy's f16).
    let mut want: Vec<Vec<u8>> = Vec::new();
    for k in 0..2 {
        let bytes = std::fs::read(parts.join(format!("part-{k:06}.features.npy"))).unwrap();
        let n = if k == 0 { 25 } else { 15 };
        let data = &bytes[bytes.len() - n * p * f * 2..];
        want.extend(data.chunks(p * f * 2).map(<[u8]>::to_vec));
    }
    let mut got = Vec::new();
    for store in &c.cells {
        for d in 0..store.documents() {
            got.push(store.image_bytes(d).unwrap().to_vec());
            let toks = store.tokens.document(d).unwrap();
            let n = toks.iter().filter(|&&t| t == pad).count();
            assert!(n == 0 || n == p, "{n} placeholders; expected 0 or {p}");
        }
    }
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

/// Bad records are named `file#element N`, `file:line` or `shard:key`, with the field and
/// the value: an image marker without an image (both layouts), an id missing from the
/// embeddings (fails, or is skipped with --on-error skip), a task that is not a safe label,
/// no task at all, embeddings of another dimension, row-order embeddings of the wrong length.
#[test]
fn issue20_bad_records_and_embeddings_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut train = pool(12, 4, "s");
    let emb = embeddings_by_id(d, &train, 16);
    let map = task_map(d);
    let run = |name: &str, samples: &[Sample], extra: &[&str]| -> String {
        let input = d.join(name);
        if name.ends_with(".tar") {
            write_shard(&input, samples);
        } else {
            std::fs::write(&input, jsonl(samples)).unwrap();
        }
        let out = d.join("out");
        let mut args = prepare_args(s(&input), s(&out), s(&emb), s(&map));
        args.extend([
            "--source",
            if name.ends_with(".tar") {
                "webdataset"
            } else {
                "llava"
            },
        ]);
        args.extend(extra);
        let err = fails(&args);
        assert!(!out.exists(), "{err}");
        err
    };
    // A marker but no image: LLaVA (no `image`), WebDataset (a caption without its image).
    let mut bad = train.clone();
    bad[2].image = None;
    bad[2].turns[0].1 = "<image>\nWhat is it?".into();
    let e = run("a.jsonl", &bad, &[]);
    assert!(e.contains("a.jsonl:3: `<image>` appears in the conversation but the record has no image (id \"s00002\")"), "{e}");
    let e = run("a.tar", &bad, &[]);
    assert!(e.contains("a.tar:s00002:"), "{e}");
    let mut no_image = train.clone();
    no_image[4].image = None; // a caption sample: KEY.txt without KEY.png
    let e = run("b.tar", &no_image, &[]);
    assert!(
        e.contains("b.tar:s00004: missing field `KEY.jpg|jpeg|png|webp member"),
        "{e}"
    );
    // An id without an embedding row.
    let mut extra = train.clone();
    extra[5].id = "nobody".into();
    let e = run("c.jsonl", &extra, &[]);
    assert!(
        e.contains("c.jsonl:6: id \"nobody\" has no row in the embeddings"),
        "{e}"
    );
    let out = d.join("skipped");
    let c = d.join("c.jsonl");
    std::fs::write(&c, jsonl(&extra)).unwrap();
    let mut args = prepare_args(s(&c), s(&out), s(&emb), s(&map));
    args.extend(["--on-error", "skip"]);
    let report = ok(&args);
    assert!(
        report.contains("11 documents") && report.contains("c.jsonl:6: id \"nobody\""),
        "{report}"
    );
    // Tasks: not a safe label; absent with no map entry.
    let mut bad_task = train.clone();
    bad_task[1].task = Some("$(rm -rf)".into());
    let e = run("d.jsonl", &bad_task, &[]);
    assert!(
        e.contains("d.jsonl:2: task \"$(rm -rf)\" (id \"s00001\") is not a safe label"),
        "{e}"
    );
    let input = d.join("e.json");
    std::fs::write(
        &input,
        serde_json::to_string(&train.iter().map(Sample::llava).collect::<Vec<_>>()).unwrap(),
    )
    .unwrap();
    let out = d.join("out");
    let tok = s(tokenizer());
    let e = fails(&[
        "prepare",
        s(&input),
        "--out",
        s(&out),
        "--tokenizer",
        tok,
        "--embeddings",
        s(&emb),
    ]);
    assert!(
        e.contains("e.json#element 4: no `task` field (id \"s00004\")") && e.contains("--task-map"),
        "{e}"
    );
    // Embeddings: parts of two dimensions; row order with one row too few.
    let parts = d.join("parts");
    std::fs::create_dir_all(&parts).unwrap();
    for (k, (chunk, dim)) in [(&train[..6], "16"), (&train[6..], "8")]
        .into_iter()
        .enumerate()
    {
        let ids = parts.join(format!("part-{k:06}.ids.txt"));
        std::fs::write(
            &ids,
            chunk
                .iter()
                .map(|x| format!("{}\n", x.id))
                .collect::<String>(),
        )
        .unwrap();
        python(&[
            "embeddings",
            s(&ids),
            s(&parts.join(format!("part-{k:06}.npy"))),
            dim,
            "1",
        ]);
    }
    let e = fails(&[
        "prepare",
        s(&input),
        "--out",
        s(&out),
        "--tokenizer",
        tok,
        "--embeddings",
        s(&parts),
        "--task-map",
        s(&map),
    ]);
    assert!(e.contains("part-000001.npy: D is 8; expected 16"), "{e}");
    let row_order = |rows: &[Sample]| -> String {
        let npy = d.join("rows.npy");
        let ids = d.join("rows-ids.txt"); // not `rows.npy.ids.txt`: rows are by order
        std::fs::write(
            &ids,
            rows.iter()
                .map(|x| format!("{}\n", x.id))
                .collect::<String>(),
        )
        .unwrap();
        python(&["embeddings", s(&ids), s(&npy), "16", "1"]);
        fails(&[
            "prepare",
            s(&input),
            "--out",
            s(&out),
            "--tokenizer",
            tok,
            "--embeddings",
            s(&npy),
            "--task-map",
            s(&map),
        ])
    };
    let e = row_order(&train[..11]);
    assert!(
        e.contains("e.json#element 11: record 11 has no row: the embeddings")
            && e.contains("have 11 rows"),
        "{e}"
    );
    train.push(train[0].clone());
    let e = row_order(&train);
    assert!(e.contains("13 embedding rows for 12 records"), "{e}");
}
