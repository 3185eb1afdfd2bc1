//! Issue 18, guards and output: sizes checked before allocating, `eval_samples = 0` refused,
//! progress at `-v` and a bound on `-q`, a closed or full stdout, extreme scores, errors printed
//! once and `predict --json`. Each test runs the release binary as a user would.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{bin, fails, ok, s, tiny_corpus};

/// A `train` run on the shared tiny corpus with `[train]` settings `table`; `limit_kib` caps
/// the process's address space (`ulimit -v`) so that a run that allocates what it was asked
/// to cannot take the machine's memory.
fn train_with(table: &str, limit_kib: u64, env: &[(&str, &str)]) -> (std::process::Output, f64) {
    let (_, _, corpus, _) = tiny_corpus();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("train.toml");
    std::fs::write(&cfg, format!("[train]\n{table}\n")).unwrap();
    let out = dir.path().join("run");
    let script = format!(
        "ulimit -v {limit_kib}; exec \"$0\" train --corpus \"$1\" --config \"$2\" --out \"$3\" --quiet"
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_mixatlas"))
        .args([s(corpus), s(&cfg), s(&out)])
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    let t = Instant::now();
    let o = c.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        !out.join("metrics.json").exists(),
        "a refused run writes no metrics"
    );
    (o, secs)
}

/// Exit status 2 with one `error:` message and no panic or abort.
fn refused(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "status {:?}: {err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    err
}

const SMALL: &str = "steps = 2\nbatch_size = 2\nseq_len = 32\neval_batch = 4";

#[test]
fn issue18_eval_samples_zero_with_benchmarks_is_a_config_error() {
    let (o, _) = train_with(&format!("{SMALL}\neval_samples = 0"), 4 << 20, &[]);
    let err = refused(&o);
    assert!(
        err.contains("eval_samples = 0") && err.contains("benchmark"),
        "{err}"
    );
}

#[test]
fn issue18_seq_len_beyond_positions_is_refused_before_allocating() {
    // 4 GiB of address space: the old trainer allocated 12 GB here and aborted.
    let (o, secs) = train_with("seq_len = 100000000", 4 << 20, &[]);
    let err = refused(&o);
    assert!(
        err.contains("seq_len 100000000") && err.contains("max_position_embeddings 4096"),
        "{err}"
    );
    assert!(secs < 30.0, "took {secs} s");
}

#[test]
fn issue18_batch_beyond_memory_is_refused_before_allocating() {
    let (o, secs) = train_with("batch_size = 100000000", 4 << 20, &[]);
    let err = refused(&o);
    assert!(
        err.contains("batch_size 100000000")
            && err.contains("GiB is available")
            && err.contains("MIXATLAS_MEMORY_LIMIT"),
        "{err}"
    );
    assert!(secs < 30.0, "took {secs} s");
    // The limit can be set explicitly (here below what the small run needs).
    let (o, _) = train_with(SMALL, 4 << 20, &[("MIXATLAS_MEMORY_LIMIT", "1K")]);
    let err = refused(&o);
    assert!(
        err.contains("0.0 GiB is available (MIXATLAS_MEMORY_LIMIT)"),
        "{err}"
    );
    let (o, _) = train_with(SMALL, 4 << 20, &[("MIXATLAS_MEMORY_LIMIT", "lots")]);
    assert!(refused(&o).contains("MIXATLAS_MEMORY_LIMIT=\"lots\""));
}

const CELLS: [&str; 4] = ["a/ocr", "a/vqa", "b/ocr", "b/vqa"];

/// A space file and `n` trials on it (scores a smooth function of the mixture); trial `t0`
/// scores `first` on benchmark `near` when given.
fn ask_setup(dir: &Path, n: usize, first: Option<f64>) -> (String, String) {
    let space = dir.join("space.json");
    std::fs::write(&space, serde_json::json!({"cells": CELLS}).to_string()).unwrap();
    let mut rng = mixatlas::rng::SplitMix64::new(3);
    let mut lines = Vec::new();
    for i in 0..n {
        let mut w: Vec<f64> = (0..4).map(|_| -(1.0 - rng.next_f64()).ln()).collect();
        let sum: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= sum);
        let y = match (i, first) {
            (0, Some(v)) => v,
            _ => -(w[0] - 0.4).powi(2) - (w[3] - 0.1).powi(2),
        };
        let mixture: serde_json::Map<String, serde_json::Value> = CELLS
            .iter()
            .zip(&w)
            .map(|(c, x)| (c.to_string(), (*x).into()))
            .collect();
        lines.push(
            serde_json::json!({"id": format!("t{i}"), "mixture": mixture,
                "benchmarks": {"near": y}})
            .to_string(),
        );
    }
    let trials = dir.join("trials.jsonl");
    std::fs::write(&trials, lines.join("\n")).unwrap();
    (s(&space).into(), s(&trials).into())
}

#[test]
fn issue18_suggest_bounds_q_and_logs_progress_at_v() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = ask_setup(dir.path(), 40, None);
    let t = Instant::now();
    let err = fails(&[
        "suggest", "--space", &space, "--trials", &trials, "-q", "10000",
    ]);
    assert!(
        err.contains("-q 10000") && err.contains("1 to 512"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // At -v the GP fit announces itself before it starts (a long fit keeps logging).
    for cmd in ["suggest", "predict"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mixatlas"));
        c.args(["-v", cmd, "--space", &space, "--trials", &trials]);
        if cmd == "predict" {
            c.args(["--at", &trials]);
        }
        let started = Instant::now();
        let mut child = c
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = None;
        let mut text = String::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            if first.is_none() && line.contains("GP fit: starting") {
                first = Some(started.elapsed());
            }
            text.push_str(&line);
            text.push('\n');
        }
        assert!(child.wait().unwrap().success(), "{text}");
        let first = first.unwrap_or_else(|| panic!("{cmd}: no progress at -v:\n{text}"));
        assert!(
            first < Duration::from_secs(3),
            "{cmd}: first log after {first:?}"
        );
        assert!(text.contains("trials=40"), "{text}");
    }
}

#[test]
fn issue18_closed_stdout_ends_quietly() {
    let (_, _, corpus, _) = tiny_corpus();
    // The reader is gone before the command writes: every write fails with EPIPE.
    for args in [
        vec!["inspect", s(corpus)],
        vec!["suggest", "--corpus", s(corpus), "-q", "3"],
    ] {
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {:?} {err}", o.status);
        assert!(err.is_empty(), "{args:?}: quiet, got {err}");
    }
    // As typed in a shell: the first line arrives, nothing on stderr, the status is SIGPIPE's.
    let o = Command::new("bash")
        .arg("-c")
        .arg("\"$0\" inspect \"$1\" | head -1; exit ${PIPESTATUS[0]}")
        .arg(env!("CARGO_BIN_EXE_mixatlas"))
        .arg(s(corpus))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    assert!(!err.contains("panicked"), "{err}");
    assert!(matches!(o.status.code(), Some(0 | 141)), "{:?}", o.status);
}

#[test]
fn issue18_full_stdout_is_one_clear_error() {
    let (_, _, corpus, _) = tiny_corpus();
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = ask_setup(dir.path(), 12, None);
    for args in [
        vec!["inspect", s(corpus)],
        vec!["suggest", "--space", &space, "--trials", &trials],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = bin().args(&args).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {:?} {err}", o.status);
        assert_eq!(
            err.trim_end(),
            "error: writing to stdout: No space left on device (os error 28)",
            "{args:?}"
        );
    }
}

#[test]
fn issue18_extreme_scores_are_an_error_never_null() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = ask_setup(dir.path(), 12, Some(1e300));
    let recipe = dir.path().join("recipe.json");
    for args in [
        vec!["suggest", "--json"],
        vec!["predict", "--at", &trials],
        vec!["recipe", "--out", s(&recipe)],
    ] {
        let mut all = args.clone();
        all.extend(["--space", &space, "--trials", &trials]);
        let err = fails(&all);
        assert!(
            err.contains("trial t0") && err.contains("1e300") && err.contains("1e100"),
            "{all:?}: {err}"
        );
    }
    assert!(!recipe.exists(), "no recipe from an unusable fit");
    // The library refuses the value too, naming the trial's index; large finite scores within
    // the bound give finite posteriors.
    use mixatlas::surrogate::{Gp, GpConfig, GpError, Posterior};
    let x: Vec<Vec<f64>> = (0..8)
        .map(|i| vec![i as f64 / 7.0, 1.0 - i as f64 / 7.0])
        .collect();
    let mut y: Vec<f64> = (0..8).map(|i| (i as f64).sin()).collect();
    y[3] = 1e300;
    match Gp::fit(&x, &y, &GpConfig::default()) {
        Err(GpError::BadInput { index: 3, reason }) => assert!(reason.contains("1e300")),
        other => panic!("{other:?}"),
    }
    y[3] = 1e90;
    let gp = Gp::fit(&x, &y, &GpConfig::default()).unwrap();
    let (m, v) = gp.predict(&[0.5, 0.5, 0.2, 0.8]);
    assert!(m.iter().chain(&v).all(|v| v.is_finite()), "{m:?} {v:?}");
}

#[test]
fn issue18_os_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-corpus");
    let err = fails(&["inspect", s(&missing)]);
    let os = std::io::Error::from_raw_os_error(2).to_string();
    assert_eq!(err.matches(&os).count(), 1, "{err}");
    let err = fails(&["suggest", "--corpus", s(&missing)]);
    assert_eq!(err.matches(&os).count(), 1, "{err}");
}

#[test]
fn issue18_predict_json_has_suggest_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = ask_setup(dir.path(), 12, None);
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "predict", "--space", &space, "--trials", &trials, "--at", &trials, "--json",
    ]))
    .unwrap();
    let s: serde_json::Value = serde_json::from_str(&ok(&[
        "suggest", "--space", &space, "--trials", &trials, "--json",
    ]))
    .unwrap();
    for key in ["method", "trials", "gp"] {
        assert!(!v[key].is_null(), "predict --json lacks {key}: {v}");
        assert_eq!(
            std::mem::discriminant(&v[key]),
            std::mem::discriminant(&s[key]),
            "{key}"
        );
    }
    assert_eq!(v["method"], "gp-ucb");
    assert_eq!(v["trials"], 12);
    let p = &v["predictions"].as_array().unwrap()[0];
    let q = &s["proposals"].as_array().unwrap()[0];
    for key in ["mixture", "mean", "std", "ucb"] {
        assert!(p[key].is_object() || p[key].is_f64(), "{key}: {p}");
        assert!(q[key].is_object() || q[key].is_f64(), "{key}: {q}");
    }
    assert!(p["ucb"].as_f64().unwrap() >= p["mean"].as_f64().unwrap());
}
