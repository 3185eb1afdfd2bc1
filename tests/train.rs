//! The built-in trainer as users run it: `mixatlas train` processes on a real synthetic
//! corpus: learning, exact resume (also after `kill -9`), divergence handling, bad input.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{bin, fails, ok, s, tiny_corpus};

/// (step, loss, lr, grad_norm) of every step record of a run's log (none while the log does
/// not exist yet; a line still being written is skipped).
pub(crate) fn steps(run: &Path) -> Vec<(u64, f64, f64, f64)> {
    let text = std::fs::read_to_string(run.join("train_log.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["lr"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn train_args<'a>(corpus: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--corpus",
        corpus,
        "--out",
        out,
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--seq-len",
        "64",
        "--eval-samples",
        "20",
        "--quiet",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn training_lowers_held_out_loss_and_writes_the_trial_protocol_files() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(&train_args(
        s(corpus),
        s(&out),
        &[
            "--steps",
            "120",
            "--eval-every",
            "50",
            "--lr",
            "3e-3",
            "--final-eval-samples",
            "30",
        ],
    ));
    let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("eval").is_some())
        .collect();
    assert_eq!(
        evals
            .iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 50, 100, 120]
    );
    // The curve's points, its last one at the final step too (120 is no multiple of 50), all
    // use the same 20 documents per benchmark; the final evaluation (30 documents, greedy
    // answers) is in metrics.json, not on the curve.
    for e in &evals {
        for (name, b) in e["eval"].as_object().unwrap() {
            assert_eq!(b["docs"], 20, "step {} {name}", e["step"]);
        }
    }
    let first = evals[0]["eval_loss"].as_f64().unwrap();
    let last = evals[3]["eval_loss"].as_f64().unwrap();
    // ln(V = 128) ≈ 4.85 at random init; a model that learned the answer grammar is far below.
    assert!(
        first > 4.0 && last < 0.6 * first,
        "eval loss {first} → {last}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["benchmarks"].as_object().unwrap().len(), 10);
    assert_eq!(metrics["benchmark_metric"]["nocaps"], "token_f1");
    assert_ne!(metrics["eval_loss"], evals[3]["eval_loss"]);
    assert!(metrics["train_loss"].as_f64().unwrap() < first);
    // The final checkpoint is a Hugging Face-style model directory `score` can read.
    let ckpt = out.join("checkpoints/step-00000120");
    assert!(ckpt.join("config.json").is_file() && ckpt.join("model.safetensors").is_file());
}

/// The end-of-run benchmark scores (greedy answers scored with each benchmark's metric) equal
/// an independent float64 re-computation (`tests/eval_ref.py`: the reference forward pass of
/// `tests/qwen2_ref.py`, one document at a time, and the metrics from their definitions), and
/// generation agrees with the teacher-forced exact match.
#[test]
fn end_of_run_scores_match_the_float64_reference_decoder() {
    let (_, raw, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // A model small enough for the pure-Python reference (H = 32, one layer), trained enough
    // that its answers are neither empty nor all alike.
    ok(&[
        "train",
        "--corpus",
        s(corpus),
        "--out",
        s(&out),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--seq-len",
        "64",
        "--steps",
        "600",
        "--lr",
        "1e-2",
        "--eval-samples",
        "8",
        "--model-set",
        "hidden_size=32",
        "--model-set",
        "intermediate_size=88",
        "--model-set",
        "num_hidden_layers=1",
        "--quiet",
    ]);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let py = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/eval_ref.py"))
        .args(["--checkpoint", s(&out.join("checkpoints/step-00000600"))])
        .args(["--raw", s(raw), "--samples", "8"])
        .args(["--vocab", s(&raw.join("vocab.json"))])
        .output()
        .expect("python3 runs");
    assert!(
        py.status.success(),
        "eval_ref.py: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    let names = reference["scores"].as_object().unwrap();
    assert_eq!(names.len(), 10);
    let mut partial = 0;
    for (name, want) in names {
        let got = metrics["benchmarks"][name].as_f64().unwrap();
        let want = want.as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-12,
            "{name}: trainer {got}, reference {want}; reference answers {}",
            reference["answers"][name]
        );
        assert_eq!(
            metrics["benchmark_metric"][name],
            reference["metrics"][name]
        );
        if reference["metrics"][name] == "exact_match" {
            // Greedy decoding reproduces the reference iff every teacher-forced arg-max does.
            assert_eq!(metrics["benchmark_accuracy"][name].as_f64().unwrap(), got);
        } else if want > 0.0 && want < 1.0 {
            partial += 1;
        }
    }
    // Partial credit is exercised: some ANLS/F1 score is strictly between 0 and 1.
    assert!(partial > 0, "no partial score: {}", reference["scores"]);
}

#[test]
fn resume_continues_exactly_loss_for_loss() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let split = tmp.path().join("split");
    let common = ["--steps", "12", "--seed", "5", "--micro-batch", "4"];
    ok(&train_args(s(corpus), s(&straight), &common));
    let mut first = common.to_vec();
    first.extend(["--stop-after", "6"]);
    ok(&train_args(s(corpus), s(&split), &first));
    assert!(!split.join("metrics.json").exists());
    assert_eq!(steps(&split).len(), 6);
    let mut second = common.to_vec();
    second.push("--resume");
    ok(&train_args(s(corpus), s(&split), &second));
    let (a, b) = (steps(&straight), steps(&split));
    assert_eq!(a.len(), 12);
    assert_eq!(
        a, b,
        "losses after resume differ from the uninterrupted run"
    );
    // The final evaluation agrees too.
    let m = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("metrics.json")).unwrap()).unwrap()
    };
    assert_eq!(m(&straight)["benchmark_loss"], m(&split)["benchmark_loss"]);
}

#[test]
fn kill_9_mid_run_loses_no_checkpoint_and_resume_matches() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let killed = tmp.path().join("killed");
    let common = ["--steps", "40", "--seed", "9", "--checkpoint-every", "2"];
    ok(&train_args(s(corpus), s(&straight), &common));
    let mut child = bin()
        .args(train_args(s(corpus), s(&killed), &common))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once a few checkpoints exist (mid-write of a later one is likely).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = std::fs::read_dir(killed.join("checkpoints"))
            .map(|d| d.count())
            .unwrap_or(0);
        if n >= 2 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut resume = common.to_vec();
    resume.push("--resume");
    ok(&train_args(s(corpus), s(&killed), &resume));
    assert_eq!(steps(&straight), steps(&killed));
}

#[test]
fn divergence_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let err = fails(&train_args(
        s(corpus),
        s(&out),
        &[
            "--steps",
            "20",
            "--lr",
            "1e30",
            "--min-lr",
            "1e30",
            "--warmup-steps",
            "0",
            "--checkpoint-every",
            "1",
        ],
    ));
    assert!(err.contains("loss is") && err.contains("at step"), "{err}");
    let failed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("failed.json")).unwrap()).unwrap();
    let step = failed["step"].as_u64().unwrap();
    assert!(step >= 2, "{failed}");
    assert!(!out.join("metrics.json").exists());
    let kept = out.join(format!("checkpoints/step-{:08}", step - 1));
    assert!(kept.join("trainer_state.json").is_file(), "{kept:?}");
}

#[test]
fn bad_input_is_named_and_writes_nothing() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let mix = tmp.path().join("mix.json");
    std::fs::write(
        &mix,
        r#"{"weights": {"c00/captioning": 0.5, "c99/ocr": 0.5}}"#,
    )
    .unwrap();
    let out = tmp.path().join("a");
    let err = fails(&train_args(
        s(corpus),
        s(&out),
        &["--mixture", s(&mix), "--steps", "2"],
    ));
    assert!(err.contains("mix.json") && err.contains("c99/ocr"), "{err}");
    std::fs::write(&mix, r#"{"weights": {"c00/captioning": 0.5}}"#).unwrap();
    let err = fails(&train_args(
        s(corpus),
        s(&out),
        &["--mixture", s(&mix), "--steps", "2"],
    ));
    assert!(err.contains("sum to 0.5"), "{err}");
    let err = fails(&train_args(
        s(corpus),
        s(&out),
        &["--model-set", "vocab_size=16", "--steps", "2"],
    ));
    assert!(err.contains("vocabulary") && err.contains("16"), "{err}");
    let toml = tmp.path().join("metrics.toml");
    std::fs::write(
        &toml,
        "[train.eval_metrics]\nrefcoco = \"anls\"\nnosuch = \"anls\"\n",
    )
    .unwrap();
    let err = fails(&train_args(
        s(corpus),
        s(&out),
        &["--config", s(&toml), "--steps", "2"],
    ));
    assert!(
        err.contains("\"nosuch\"") && err.contains("refcoco"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "a failed start must not leave a run directory"
    );
    // Resuming a run with another model shape is refused with both shapes named.
    let run = tmp.path().join("run");
    ok(&train_args(s(corpus), s(&run), &["--steps", "2"]));
    let err = fails(&train_args(
        s(corpus),
        s(&run),
        &["--steps", "4", "--resume", "--model-set", "hidden_size=32"],
    ));
    assert!(
        err.contains("another shape or config") && err.contains("hidden 32"),
        "{err}"
    );
    // Starting over an existing run without --resume is refused.
    let err = fails(&train_args(s(corpus), s(&run), &["--steps", "2"]));
    assert!(err.contains("--resume"), "{err}");
}
