//! End-to-end tests of the `mixatlas` binary: real processes, real files on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mixatlas"));
    c.env("RUST_LOG", "warn");
    c
}

pub(crate) fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("mixatlas runs")
}

pub(crate) fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "mixatlas {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "mixatlas {args:?} should fail");
    assert_eq!(
        out.status.code(),
        Some(2),
        "errors exit with status 2, not a panic"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny corpus shared by the tests of this file (synth + prepare once per test binary).
pub(crate) fn tiny_corpus() -> &'static (tempfile::TempDir, PathBuf, PathBuf, String) {
    static CORPUS: std::sync::OnceLock<(tempfile::TempDir, PathBuf, PathBuf, String)> =
        std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let corpus = dir.path().join("corpus");
        ok(&[
            "synth",
            "--preset",
            "tiny",
            "--out",
            s(&raw),
            "--bench-samples",
            "100",
        ]);
        let report = ok(&["prepare", s(&raw), "--out", s(&corpus)]);
        (dir, raw, corpus, report)
    })
}

/// Runs the reference script `tests/<script>` with `python3` (scripts/test.sh installs what the
/// scripts import) and returns its stdout; panics with the script's stdout and stderr when it
/// fails.
pub(crate) fn python_script(script: &str, args: &[&str]) -> Vec<u8> {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{script} {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn synth_prepare_inspect_recovers_concepts() {
    let (_d, _raw, corpus, report) = tiny_corpus();
    let ari: f64 = report
        .split("adjusted Rand index ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .expect("prepare prints the adjusted Rand index")
        .trim()
        .parse()
        .unwrap();
    assert!(ari >= 0.8, "ARI {ari} below 0.8:\n{report}");
    let text = ok(&["inspect", s(corpus), "--verify"]);
    assert!(text.contains("all checksums match"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", s(corpus), "--json"])).unwrap();
    assert_eq!(v["documents"], 10_000);
    let cells = v["cells"].as_array().unwrap();
    assert!(cells.len() >= 30, "{} cells", cells.len());
    let share: f64 = cells
        .iter()
        .map(|c| c["token_share"].as_f64().unwrap())
        .sum();
    assert!((share - 1.0).abs() < 1e-9);
    assert_eq!(v["benchmarks"].as_array().unwrap().len(), 10);
}

#[test]
fn cells_parse_with_the_independent_python_reader() {
    let (_d, _raw, corpus, _) = tiny_corpus();
    let out = python_script("megatron_ref.py", &["verify-corpus", s(corpus)]);
    let summary: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(summary["documents"], 10_000);
    // Document-level agreement: mixatlas inspect vs the Python reader on one cell.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap())
            .unwrap();
    let cell = &manifest["cells"][0];
    let prefix = corpus.join(cell["prefix"].as_str().unwrap());
    let py = python_script("megatron_ref.py", &["read", s(&prefix), "--docs", "0,1,2"]);
    let py: serde_json::Value = serde_json::from_slice(&py).unwrap();
    let name = cell["name"].as_str().unwrap();
    for d in 0..3 {
        let ours: serde_json::Value = serde_json::from_str(&ok(&[
            "inspect",
            s(corpus),
            "--cell",
            name,
            "--doc",
            &d.to_string(),
            "--json",
        ]))
        .unwrap();
        assert_eq!(ours["tokens"], py["docs"][d], "document {d} of {name}");
    }
}

#[test]
fn prepare_with_existing_centroids_reproduces_the_cells() {
    let (dir, raw, corpus, _) = tiny_corpus();
    let again = dir.path().join("again");
    ok(&[
        "prepare",
        s(raw),
        "--out",
        s(&again),
        "--centroids",
        s(&corpus.join("centroids.safetensors")),
    ]);
    let load = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("manifest.json")).unwrap()).unwrap()
    };
    let (a, b) = (load(corpus), load(&again));
    for (x, y) in a["cells"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b["cells"].as_array().unwrap())
    {
        assert_eq!(x["name"], y["name"]);
        assert_eq!(x["files"], y["files"], "identical bytes for {}", x["name"]);
    }
    std::fs::remove_dir_all(&again).unwrap();
}

#[test]
fn malformed_input_fails_with_file_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    std::fs::create_dir(&raw).unwrap();
    let good = r#"{"task":"ocr","tokens":[1,5,2],"prompt_len":1,"clip":[0.1,0.2,0.3]}"#;
    let mut lines: Vec<String> = (0..40).map(|_| good.to_string()).collect();
    lines[16] = r#"{"task":"ocr","tokens":[1,5,2],"prompt_len":1,"clip":[0.1,0.2]}"#.into();
    lines[30] = "{not json".into();
    std::fs::write(raw.join("a.jsonl"), lines.join("\n")).unwrap();
    let out = dir.path().join("corpus");
    let err = fails(&["prepare", s(&raw), "--out", s(&out), "--k", "2"]);
    assert!(err.contains("a.jsonl:17") && err.contains("clip"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial directory left"
    );
    let report = ok(&[
        "prepare",
        s(&raw),
        "--out",
        s(&out),
        "--k",
        "2",
        "--on-error",
        "skip",
    ]);
    assert!(report.contains("skipped 2 malformed lines"), "{report}");
    assert!(report.contains("a.jsonl:31"), "{report}");
}

#[test]
fn corrupt_cells_are_named() {
    let (dir, _raw, corpus, _) = tiny_corpus();
    let copy = dir.path().join("corrupt");
    copy_dir(corpus, &copy);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.join("manifest.json")).unwrap())
            .unwrap();
    let prefix = m["cells"][1]["prefix"].as_str().unwrap().to_string();
    // Flip one byte of a .bin: only the checksum can notice.
    let bin = copy.join(format!("{prefix}.bin"));
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&bin, &bytes).unwrap();
    ok(&["inspect", s(&copy)]);
    let err = fails(&["inspect", s(&copy), "--verify"]);
    assert!(
        err.contains(&format!("{prefix}.bin")) && err.contains("checksum"),
        "{err}"
    );
    // Truncate an .idx: opening fails and names it.
    let idx = copy.join(format!("{prefix}.idx"));
    let bytes = std::fs::read(&idx).unwrap();
    std::fs::write(&idx, &bytes[..bytes.len() - 5]).unwrap();
    let err = fails(&["inspect", s(&copy)]);
    assert!(
        err.contains(&format!("{prefix}.idx")) && err.contains("truncated"),
        "{err}"
    );
    // A bare prefix that is not Megatron data.
    let err = fails(&["inspect", s(&copy.join("nothing"))]);
    assert!(err.contains("nothing"), "{err}");
    std::fs::remove_dir_all(&copy).unwrap();
}

#[test]
fn inspect_reads_a_bare_megatron_prefix() {
    let (_d, _raw, corpus, _) = tiny_corpus();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap())
            .unwrap();
    let cell = &m["cells"][0];
    let prefix = corpus.join(cell["prefix"].as_str().unwrap());
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", s(&prefix), "--json"])).unwrap();
    assert_eq!(v["dtype"], "uint16");
    assert_eq!(v["documents"], cell["documents"]);
    assert_eq!(v["tokens"], cell["tokens"]);
}

#[test]
fn config_files_reject_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[synth]\nsamples = 100\nsed = 3\n").unwrap();
    let err = fails(&[
        "synth",
        "--config",
        s(&cfg),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert!(err.contains("sed") && err.contains("c.toml"), "{err}");
    std::fs::write(&cfg, "[synth]\nsamples = 300\nbench_samples = 5\n").unwrap();
    let out = dir.path().join("o");
    let text = ok(&["synth", "--config", s(&cfg), "--out", s(&out)]);
    assert!(text.contains("300 samples"), "{text}");
    let err = fails(&["synth", "--config", s(&cfg), "--out", s(&out)]);
    assert!(err.contains("--force"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

#[test]
fn kill_9_during_prepare_leaves_no_half_written_corpus() {
    let (dir, raw, _corpus, _) = tiny_corpus();
    let out = dir.path().join("killed");
    for delay_ms in [50u64, 250] {
        let mut child = bin()
            .args(["prepare", s(raw), "--out", s(&out), "--force"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Either the corpus is absent or it is complete and verifies.
        if out.exists() {
            ok(&["inspect", s(&out), "--verify"]);
        }
    }
    // A rerun succeeds and clears the killed runs' partial directories.
    ok(&["prepare", s(raw), "--out", s(&out), "--force"]);
    ok(&["inspect", s(&out), "--verify"]);
    let partials: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".killed.partial")
        })
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
    std::fs::remove_dir_all(&out).unwrap();
}
