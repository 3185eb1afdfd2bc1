//! Issue 18, data side: what `prepare` lets in and how corpora and mixture files are read
//! back (rows 1 (labels), 15, 16, 19, 20 and the data messages of 21). Each test runs the
//! release binary on small hand-made raw JSONL, manifests and mixture files and asserts the
//! error names the file (and line), the field and the value, and that nothing is written.

use std::path::{Path, PathBuf};

use crate::cli::{fails, ok, run, s};

/// One raw sample line: `task`, tokens, a 2-d `clip` near `(c, 1 − c)` and a 2 × 2 image.
fn sample(task: &str, tokens: &str, c: f64, image: &str) -> String {
    format!(
        r#"{{"task":{},"tokens":[{tokens}],"prompt_len":1,"clip":[{c},{}],"image":{image}}}"#,
        serde_json::Value::from(task),
        1.0 - c
    )
}

/// Twenty good samples over two tasks and two clusters.
fn good_lines() -> Vec<String> {
    (0..20)
        .map(|i| {
            let task = if i % 2 == 0 { "ocr" } else { "vqa" };
            let c = if i % 4 < 2 { 0.9 } else { 0.1 };
            sample(task, "1,5,6,7,2", c, "[[0.5,1],[2,-3]]")
        })
        .collect()
}

/// Writes `raw/a.jsonl` with `lines` under `dir`; returns the raw directory.
fn write_raw(dir: &Path, lines: &[String]) -> PathBuf {
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(raw.join("a.jsonl"), lines.join("\n") + "\n").unwrap();
    raw
}

/// `prepare` of `lines` must fail; returns the message, after checking nothing was written.
fn prepare_fails(lines: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let raw = write_raw(dir.path(), lines);
    let out = dir.path().join("corpus");
    let err = fails(&["prepare", s(&raw), "--out", s(&out), "--k", "2"]);
    assert!(!out.exists(), "no corpus written: {err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial directory left: {err}"
    );
    err
}

/// A prepared two-cluster corpus of `good_lines` (with one benchmark) in a fresh directory.
fn small_corpus() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let raw = write_raw(dir.path(), &good_lines());
    std::fs::create_dir_all(raw.join("benchmarks")).unwrap();
    std::fs::write(
        raw.join("benchmarks/docvqa.jsonl"),
        good_lines()[..4].join("\n"),
    )
    .unwrap();
    let corpus = dir.path().join("corpus");
    ok(&["prepare", s(&raw), "--out", s(&corpus), "--k", "2"]);
    (dir, corpus)
}

fn manifest(corpus: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap()).unwrap()
}

fn write_manifest(corpus: &Path, m: &serde_json::Value) {
    std::fs::write(
        corpus.join("manifest.json"),
        serde_json::to_string_pretty(m).unwrap(),
    )
    .unwrap();
}

/// Row 1 (labels): a task label carrying a shell command substitution, spaces, quotes, a
/// newline or `..` is refused by `prepare`, naming file:line, the field and the value, and
/// no command ran. A benchmark file whose name is not a safe label is refused too.
#[test]
fn issue18_row1_unsafe_task_labels_are_refused_at_prepare() {
    let canary = std::env::temp_dir().join(format!("PWNED-{}", std::process::id()));
    let evil = format!("$(touch {});`id`", canary.display());
    for bad in [
        evil.as_str(),
        "has space",
        "quo\"te",
        "new\nline",
        "..",
        "a/b",
    ] {
        let mut lines = good_lines();
        lines[2] = sample(bad, "1,5,2", 0.9, "[[0.5,1],[2,-3]]");
        let err = prepare_fails(&lines);
        let shown = format!("{bad:?}");
        assert!(
            err.contains("a.jsonl:3")
                && err.contains("field `task`")
                && err.contains(&shown)
                && err.contains("A-Z a-z 0-9"),
            "{bad:?}: {err}"
        );
    }
    assert!(!canary.exists(), "no command ran");
    // A benchmark named by its file.
    let dir = tempfile::tempdir().unwrap();
    let raw = write_raw(dir.path(), &good_lines());
    std::fs::create_dir_all(raw.join("benchmarks")).unwrap();
    std::fs::write(raw.join("benchmarks/doc vqa.jsonl"), &good_lines()[0]).unwrap();
    let out = dir.path().join("corpus");
    let err = fails(&["prepare", s(&raw), "--out", s(&out), "--k", "2"]);
    assert!(
        err.contains("doc vqa.jsonl") && err.contains("benchmark name") && err.contains("A-Z"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Row 1 (labels), read back: a manifest whose axis labels, benchmark names or cells are not
/// safe or not unique is refused when it is read, naming the manifest and the label (row 16:
/// a duplicated cell).
#[test]
fn issue18_rows1_16_manifests_with_unsafe_or_repeated_names_are_refused() {
    let (_dir, corpus) = small_corpus();
    let good = manifest(&corpus);
    ok(&["inspect", s(&corpus)]);
    let mut m = good.clone();
    m["axes"]["tasks"][0] = "o cr;$(id)".into();
    write_manifest(&corpus, &m);
    let err = fails(&["inspect", s(&corpus)]);
    assert!(
        err.contains("manifest.json")
            && err.contains("axes.tasks")
            && err.contains("\"o cr;$(id)\""),
        "{err}"
    );
    let mut m = good.clone();
    m["benchmarks"][0]["name"] = "../x".into();
    write_manifest(&corpus, &m);
    let err = fails(&["inspect", s(&corpus)]);
    assert!(
        err.contains("manifest.json") && err.contains("\"../x\""),
        "{err}"
    );
    // Row 16: the same cell twice (trials would later fail with "weights sum to 0.98").
    let mut m = good.clone();
    let first = m["cells"][0].clone();
    m["cells"].as_array_mut().unwrap().push(first.clone());
    write_manifest(&corpus, &m);
    let err = fails(&["inspect", s(&corpus)]);
    let name = first["name"].as_str().unwrap();
    assert!(
        err.contains("manifest.json") && err.contains(&format!("cell {name:?} is listed twice")),
        "{err}"
    );
    // A manifest without cells says so (it used to end in "weights sum to -0").
    let mut m = good;
    m["cells"] = serde_json::json!([]);
    write_manifest(&corpus, &m);
    let out = corpus.parent().unwrap().join("run");
    let err = fails(&[
        "train",
        "--corpus",
        s(&corpus),
        "--out",
        s(&out),
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--quiet",
    ]);
    assert!(
        err.contains("manifest.json") && err.contains("lists no cells") && !err.contains("-0"),
        "{err}"
    );
}

/// Row 19: image values beyond float16's range (1e10 would be stored as inf) or not finite are
/// refused by `prepare`, naming file:line, the field and the value.
#[test]
fn issue18_row19_image_values_outside_f16_are_refused_at_prepare() {
    for (image, value) in [
        ("[[0.5,1],[1e10,-3]]", "10000000000"),
        ("[[0.5,1],[2,-65520]]", "-65520"),
    ] {
        let mut lines = good_lines();
        lines[6] = sample("ocr", "1,5,2", 0.9, image);
        let err = prepare_fails(&lines);
        assert!(
            err.contains("a.jsonl:7")
                && err.contains("field `image`[1]")
                && err.contains(value)
                && err.contains("65504"),
            "{err}"
        );
    }
    // The largest float16 is fine.
    let dir = tempfile::tempdir().unwrap();
    let mut lines = good_lines();
    lines[6] = sample("ocr", "1,5,2", 0.9, "[[0.5,1],[65504,-65504]]");
    let raw = write_raw(dir.path(), &lines);
    ok(&[
        "prepare",
        s(&raw),
        "--out",
        s(&dir.path().join("c")),
        "--k",
        "2",
    ]);
}

/// Row 15: a manifest `prefix` pointing outside the corpus (`..`, an absolute path, a symlink
/// leading out) is refused naming it, and `inspect --verify` checks exactly the files that
/// are read: it no longer says "all checksums match" while other tokens are read.
#[test]
fn issue18_row15_prefixes_stay_in_the_corpus_and_verify_checks_what_is_read() {
    let (dir, corpus) = small_corpus();
    let good = manifest(&corpus);
    let text = ok(&["inspect", s(&corpus), "--verify"]);
    assert!(text.contains("all checksums match"), "{text}");
    let prefix = good["cells"][0]["prefix"].as_str().unwrap().to_string();
    // An altered copy of the cell outside the corpus.
    let evil = dir.path().join("evil");
    std::fs::create_dir_all(evil.join("cells")).unwrap();
    for ext in ["bin", "idx", "mask", "img"] {
        let from = corpus.join(format!("{prefix}.{ext}"));
        let to = evil.join(format!("{prefix}.{ext}"));
        std::fs::copy(&from, &to).unwrap();
    }
    let bin = evil.join(format!("{prefix}.bin"));
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[2] ^= 1;
    std::fs::write(&bin, &bytes).unwrap();
    for bad in [
        format!("../evil/{prefix}"),
        s(&evil.join(&prefix)).to_string(),
    ] {
        let mut m = good.clone();
        m["cells"][0]["prefix"] = bad.clone().into();
        write_manifest(&corpus, &m);
        for args in [
            vec!["inspect", s(&corpus)],
            vec!["inspect", s(&corpus), "--verify"],
        ] {
            let err = fails(&args);
            assert!(
                err.contains("manifest.json")
                    && err.contains(&format!("{bad:?}"))
                    && err.contains("not inside the corpus directory"),
                "{err}"
            );
        }
    }
    write_manifest(&corpus, &good);
    // A symlink leading out of the corpus.
    let inside = corpus.join(format!("{prefix}.bin"));
    let kept = dir.path().join("kept.bin");
    std::fs::rename(&inside, &kept).unwrap();
    std::os::unix::fs::symlink(&bin, &inside).unwrap();
    let err = fails(&["inspect", s(&corpus), "--verify"]);
    assert!(
        err.contains(&format!("{prefix}.bin")) && err.contains("outside the corpus directory"),
        "{err}"
    );
    std::fs::remove_file(&inside).unwrap();
    std::fs::rename(&kept, &inside).unwrap();
    // `files[]` naming other files than the prefix's is refused; a read file that is not
    // listed cannot be verified.
    let mut m = good.clone();
    m["cells"][0]["files"][0]["path"] = "cells/other.bin".into();
    write_manifest(&corpus, &m);
    let err = fails(&["inspect", s(&corpus)]);
    assert!(
        err.contains("\"cells/other.bin\"") && err.contains("not one of its prefix's files"),
        "{err}"
    );
    let mut m = good.clone();
    let files = m["cells"][0]["files"].as_array_mut().unwrap();
    files.retain(|f| !f["path"].as_str().unwrap().ends_with(".mask"));
    write_manifest(&corpus, &m);
    let err = fails(&["inspect", s(&corpus), "--verify"]);
    assert!(
        err.contains(&format!("{prefix}.mask")) && err.contains("not listed"),
        "{err}"
    );
    // The other paths of a manifest are confined the same way.
    let mut m = good.clone();
    m["vocab"] = "/etc/passwd".into();
    write_manifest(&corpus, &m);
    let err = fails(&["inspect", s(&corpus)]);
    assert!(
        err.contains("`vocab` is \"/etc/passwd\", not inside the corpus directory"),
        "{err}"
    );
    write_manifest(&corpus, &good);
    ok(&["inspect", s(&corpus), "--verify"]);
}

/// `suggest --space` over `cells` with `trials`; returns the command's output.
fn suggest(dir: &Path, cells: &[String], trials_name: &str, trials: &str) -> std::process::Output {
    let space = dir.join("space.json");
    std::fs::write(
        &space,
        serde_json::json!({"kind": "joint", "cells": cells}).to_string(),
    )
    .unwrap();
    let t = dir.join(trials_name);
    std::fs::write(&t, trials).unwrap();
    run(&[
        "suggest",
        "--space",
        s(&space),
        "--trials",
        s(&t),
        "-q",
        "1",
    ])
}

/// Row 16: a key given twice in a mixture JSON (serde_json keeps the last one silently) is an
/// error naming the file and the key: in `train --mixture`, in trial files (JSONL keys and CSV
/// columns) and in `predict --at`.
#[test]
fn issue18_row16_duplicate_keys_in_mixture_files_are_refused() {
    let (dir, corpus) = small_corpus();
    let m = manifest(&corpus);
    let (a, b) = (
        m["cells"][0]["name"].as_str().unwrap().to_string(),
        m["cells"][1]["name"].as_str().unwrap().to_string(),
    );
    let mix = dir.path().join("mix.json");
    std::fs::write(
        &mix,
        format!(r#"{{"weights": {{"{a}": 0.5, "{b}": 0.25, "{b}": 0.25}}}}"#),
    )
    .unwrap();
    let out = dir.path().join("run");
    let err = fails(&[
        "train",
        "--corpus",
        s(&corpus),
        "--out",
        s(&out),
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--mixture",
        s(&mix),
        "--quiet",
    ]);
    assert!(
        err.contains("mix.json") && err.contains(&format!("{b:?} is given twice")),
        "{err}"
    );
    let cells: Vec<String> = ["p/a", "p/b", "p/c"].map(String::from).to_vec();
    let o = suggest(
        dir.path(),
        &cells,
        "t.jsonl",
        "{\"mixture\":{\"p/a\":0.5,\"p/b\":0.5},\"objective\":1}\n\
         {\"mixture\":{\"p/a\":0.5,\"p/b\":0.25,\"p/b\":0.25},\"objective\":2}\n",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("t.jsonl:2") && err.contains("\"p/b\" is given twice"),
        "{err}"
    );
    let o = suggest(
        dir.path(),
        &cells,
        "t.csv",
        "p/a,p/b,p/b,objective\n0.5,0.25,0.25,1\n",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("t.csv:1") && err.contains("\"p/b\" appears twice"),
        "{err}"
    );
}

/// RegMix's released runs as an ask/tell trials CSV (`pile/<domain>` cells, objective =
/// −Pile-CC loss, weights exactly as printed) and its space; returns (space, trials, rows).
fn regmix_trials(dir: &Path) -> (PathBuf, PathBuf, usize) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/regmix");
    let data = if data.exists() {
        data
    } else {
        PathBuf::from("/work/shared/data/regmix")
    };
    let read = |name: &str| std::fs::read_to_string(data.join(name)).unwrap();
    let (mix, loss) = (read("train_mixture_1m.csv"), read("train_pile_loss_1m.csv"));
    let mut mix = mix.lines();
    let header: Vec<&str> = mix.next().unwrap().split(',').collect();
    let cells: Vec<String> = header[1..]
        .iter()
        .map(|c| format!("pile/{}", c.trim_start_matches("train_the_pile_")))
        .collect();
    let mut loss = loss.lines();
    let lh: Vec<&str> = loss.next().unwrap().split(',').collect();
    let col = lh
        .iter()
        .position(|c| c.contains("pile_cc"))
        .expect("a Pile-CC column");
    let losses: std::collections::HashMap<String, String> = loss
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            (v[0].to_string(), v[col].to_string())
        })
        .collect();
    let mut csv = format!("id,{},objective\n", cells.join(","));
    let mut rows = 0;
    for l in mix {
        let (id, w) = l.split_once(',').unwrap();
        csv.push_str(&format!("r{id},{w},-{}\n", losses[id]));
        rows += 1;
    }
    let trials = dir.join("regmix.csv");
    std::fs::write(&trials, csv).unwrap();
    let space = dir.join("regmix-space.json");
    std::fs::write(
        &space,
        serde_json::json!({"kind": "joint", "cells": cells}).to_string(),
    )
    .unwrap();
    (space, trials, rows)
}

/// Row 20: one tolerance for every reader of mixtures. RegMix's own released runs (3-decimal
/// weights) load, with ONE warning counting the rows renormalised and the largest deviation;
/// `train --mixture` follows the same rule (0.996 loads with a warning, 0.98 is an error
/// naming the file and the sum).
#[test]
fn issue18_row20_rounded_weights_follow_one_policy_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials, rows) = regmix_trials(dir.path());
    let at = dir.path().join("at.jsonl");
    std::fs::write(
        &at,
        "{\"mixture\":{\"pile/pile_cc\":0.5,\"pile/github\":0.499}}\n",
    )
    .unwrap();
    let o = run(&[
        "predict",
        "--space",
        s(&space),
        "--trials",
        s(&trials),
        "--at",
        s(&at),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("renormalised")).collect();
    assert_eq!(warnings.len(), 2, "one per file:\n{err}");
    let w = warnings[0];
    assert!(
        w.contains("regmix.csv")
            && w.contains(&format!("of {rows} mixture"))
            && w.contains("largest deviation"),
        "{w}"
    );
    assert!(
        warnings[1].contains("at.jsonl") && warnings[1].contains("1 of 1"),
        "{}",
        warnings[1]
    );
    // train --mixture: the same rule.
    let (_d, corpus) = small_corpus();
    let m = manifest(&corpus);
    let (a, b) = (
        m["cells"][0]["name"].as_str().unwrap().to_string(),
        m["cells"][1]["name"].as_str().unwrap().to_string(),
    );
    let mix = dir.path().join("mix.json");
    let train = |out: &str| {
        run(&[
            "train",
            "--corpus",
            s(&corpus),
            "--out",
            s(&dir.path().join(out)),
            "--preset",
            "tiny",
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--eval-samples",
            "2",
            "--mixture",
            s(&mix),
            "--quiet",
        ])
    };
    std::fs::write(&mix, format!(r#"{{"{a}": 0.498, "{b}": 0.498}}"#)).unwrap();
    let o = train("ok");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("mix.json") && err.contains("renormalised 1 of 1"),
        "{err}"
    );
    std::fs::write(&mix, format!(r#"{{"{a}": 0.49, "{b}": 0.49}}"#)).unwrap();
    let o = train("bad");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("mix.json")
            && err.contains("sum to 0.98")
            && err.contains("within 0.01"),
        "{err}"
    );
}

/// Row 21 (data messages): token 2^32 − 1 fails the range check at `prepare` naming file:line
/// (not a spill file later); a benchmark token outside the vocabulary is found at `prepare`
/// naming its file:line; a line that is JSON but not an object says what a line should be
/// (never serde's "struct Wire with 8 elements").
#[test]
fn issue18_row21_prepare_messages_name_the_line() {
    let mut lines = good_lines();
    lines[1] = sample("ocr", "1,4294967295,2", 0.9, "[[0.5,1],[2,-3]]");
    let err = prepare_fails(&lines);
    assert!(
        err.contains("a.jsonl:2")
            && err.contains("field `tokens`[1] is 4294967295")
            && err.contains("0..2147483648")
            && !err.contains(".spill"),
        "{err}"
    );
    for (line, want) in [
        ("[]", "the line is a JSON array"),
        ("[1, 2]", "the line is a JSON array"),
        ("7", "the line is a JSON number"),
    ] {
        let mut lines = good_lines();
        lines[4] = line.into();
        let err = prepare_fails(&lines);
        assert!(
            err.contains("a.jsonl:5") && err.contains(want) && !err.contains("Wire"),
            "{err}"
        );
    }
    let mut lines = good_lines();
    lines[4] = r#"{"task":"ocr","tokens":[1,2],"prompt_len":"one","clip":[1,0]}"#.into();
    let err = prepare_fails(&lines);
    assert!(
        err.contains("a.jsonl:5")
            && err.contains("field `prompt_len` is \"one\"; expected an integer"),
        "{err}"
    );
    // Benchmark tokens outside the corpus vocabulary (the largest token id + 1 = 8).
    let dir = tempfile::tempdir().unwrap();
    let raw = write_raw(dir.path(), &good_lines());
    std::fs::create_dir_all(raw.join("benchmarks")).unwrap();
    let bench = [
        good_lines()[0].clone(),
        sample("ocr", "1,5,8,2", 0.9, "[[0.5,1],[2,-3]]"),
    ];
    std::fs::write(raw.join("benchmarks/docvqa.jsonl"), bench.join("\n")).unwrap();
    let out = dir.path().join("corpus");
    let err = fails(&["prepare", s(&raw), "--out", s(&out), "--k", "2"]);
    assert!(
        err.contains("docvqa.jsonl:2")
            && err.contains("`tokens`[2] is 8")
            && err.contains("vocabulary size"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Row 19 (the message): a run that diverges before writing any checkpoint says there is
/// nothing to resume from, instead of "the last good checkpoint is kept"; with a checkpoint
/// written it names that checkpoint's step, and the checkpoint is still there.
#[test]
fn issue18_row19_divergence_says_whether_a_checkpoint_was_kept() {
    let (dir, corpus) = small_corpus();
    let train = |out: &Path, every: &str| {
        run(&[
            "train",
            "--corpus",
            s(&corpus),
            "--out",
            s(out),
            "--preset",
            "tiny",
            "--steps",
            "30",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--eval-samples",
            "2",
            "--lr",
            "1e30",
            "--checkpoint-every",
            every,
            "--quiet",
        ])
    };
    let out = dir.path().join("none");
    let o = train(&out, "0");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("loss is")
            && err.contains("no checkpoint was written")
            && !err.contains("last good checkpoint"),
        "{err}"
    );
    assert!(out.join("failed.json").exists(), "{err}");
    let out = dir.path().join("kept");
    let o = train(&out, "1");
    let err = String::from_utf8_lossy(&o.stderr);
    let step: u64 = err
        .split("the last good checkpoint, of step ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("names the kept checkpoint: {err}"));
    assert!(!o.status.success() && step >= 1, "{err}");
    let kept = out.join(format!("checkpoints/step-{step:08}"));
    assert!(kept.is_dir(), "{} is kept: {err}", kept.display());
}
