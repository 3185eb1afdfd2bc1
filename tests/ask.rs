//! The ask/tell subcommands (`suggest`, `predict`, `recipe`) as real processes on real files.

use std::path::Path;
use std::process::{Command, Output};

use mixatlas::rng::SplitMix64;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mixatlas"))
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .expect("mixatlas runs")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "mixatlas {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "mixatlas {args:?} should fail with status 2"
    );
    String::from_utf8(out.stderr).unwrap()
}

const CELLS: [&str; 6] = ["a/ocr", "a/vqa", "b/ocr", "b/vqa", "c/ocr", "c/vqa"];

/// A known objective: higher when the mixture is near `TARGET`.
const TARGET: [f64; 6] = [0.05, 0.1, 0.4, 0.15, 0.2, 0.1];

fn objective(w: &[f64]) -> f64 {
    -w.iter()
        .zip(TARGET)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
}

fn setup(dir: &Path, n: usize) -> (String, String) {
    let space = dir.join("space.json");
    std::fs::write(
        &space,
        serde_json::json!({"kind": "joint", "cells": CELLS, "fixed": {"c/vqa": 0.1}}).to_string(),
    )
    .unwrap();
    let mut rng = SplitMix64::new(5);
    let mut lines = Vec::new();
    for i in 0..n {
        let mut w: Vec<f64> = (0..5).map(|_| -(1.0 - rng.next_f64()).ln()).collect();
        let s: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x *= 0.9 / s);
        w.push(0.1);
        let y = objective(&w);
        let mixture: serde_json::Map<String, serde_json::Value> = CELLS
            .iter()
            .zip(&w)
            .map(|(c, x)| (c.to_string(), (*x).into()))
            .collect();
        lines.push(
            serde_json::json!({"id": format!("t{i}"), "mixture": mixture,
                "benchmarks": {"near": y, "ocr": w[0] + w[2] + w[4]}})
            .to_string(),
        );
    }
    let trials = dir.join("trials.jsonl");
    std::fs::write(&trials, lines.join("\n")).unwrap();
    (
        space.to_str().unwrap().into(),
        trials.to_str().unwrap().into(),
    )
}

fn mixtures(json: &serde_json::Value) -> Vec<Vec<f64>> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            CELLS
                .iter()
                .map(|c| m[*c].as_f64().unwrap_or(0.0))
                .collect()
        })
        .collect()
}

fn assert_valid(ws: &[Vec<f64>]) {
    for w in ws {
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{w:?}");
        assert!(w.iter().all(|&x| x >= -1e-12));
        assert!((w[5] - 0.1).abs() < 1e-9, "fixed cell kept: {w:?}");
    }
}

#[test]
fn suggest_proposes_valid_distinct_deterministic_mixtures() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = setup(dir.path(), 20);
    // No trials: the initial design.
    let first =
        mixtures(&serde_json::from_str(&ok(&["suggest", "--space", &space, "-q", "3"])).unwrap());
    assert_eq!(first.len(), 3);
    assert_valid(&first);
    for method in ["gp-ucb", "regmix", "random", "uniform", "natural"] {
        let args = [
            "suggest",
            "--space",
            &space,
            "--trials",
            &trials,
            "--weights",
            "near=1",
            "-q",
            "4",
            "--method",
            method,
            "--seed",
            "3",
        ];
        let a = ok(&args);
        assert_eq!(a, ok(&args), "{method} is deterministic for a seed");
        let ws = mixtures(&serde_json::from_str(&a).unwrap());
        assert_valid(&ws);
        if matches!(method, "gp-ucb" | "random" | "regmix") {
            assert_eq!(ws.len(), 4);
            for i in 0..ws.len() {
                for j in 0..i {
                    let d: f64 = ws[i].iter().zip(&ws[j]).map(|(a, b)| (a - b).abs()).sum();
                    assert!(d > 1e-6, "{method}: proposals {i} and {j} coincide");
                }
            }
        }
    }
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "suggest",
        "--space",
        &space,
        "--trials",
        &trials,
        "--weights",
        "near=1",
        "-q",
        "2",
        "--json",
    ]))
    .unwrap();
    let gp = &v["gp"];
    assert_eq!(gp["d"], 5);
    assert_eq!(gp["lengthscales"].as_array().unwrap().len(), 5);
    for p in v["proposals"].as_array().unwrap() {
        let (m, s, u) = (
            p["mean"].as_f64().unwrap(),
            p["std"].as_f64().unwrap(),
            p["ucb"].as_f64().unwrap(),
        );
        assert!(s >= 0.0 && u >= m - 1e-12, "{p}");
    }
}

#[test]
fn predict_and_recipe_use_the_trials() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = setup(dir.path(), 25);
    // Predict at two trial points: the GP (small noise) reproduces the observed objective.
    let lines: Vec<String> = std::fs::read_to_string(&trials)
        .unwrap()
        .lines()
        .take(2)
        .map(String::from)
        .collect();
    let at = dir.path().join("at.jsonl");
    std::fs::write(&at, lines.join("\n")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "predict",
        "--space",
        &space,
        "--trials",
        &trials,
        "--weights",
        "near=1",
        "--at",
        at.to_str().unwrap(),
    ]))
    .unwrap();
    for (line, p) in lines.iter().zip(v["predictions"].as_array().unwrap()) {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let y = t["benchmarks"]["near"].as_f64().unwrap();
        let m = p["mean"].as_f64().unwrap();
        assert!(
            (m - y).abs() < 0.05 * y.abs().max(0.01) + 1e-3,
            "predicted {m}, observed {y}"
        );
    }
    // Recipes: targeting "ocr" shifts weight to the ocr cells compared with "near".
    let out = dir.path().join("recipe.json");
    let o = out.to_str().unwrap();
    ok(&[
        "recipe", "--space", &space, "--trials", &trials, "--target", "near", "--out", o,
    ]);
    let near: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    ok(&[
        "recipe", "--space", &space, "--trials", &trials, "--target", "ocr", "--out", o,
    ]);
    let ocr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        ocr["task_marginals"]["ocr"].as_f64().unwrap()
            > near["task_marginals"]["ocr"].as_f64().unwrap()
    );
    assert_eq!(ocr["source"]["target"][0], "ocr");
    let sum: f64 = ocr["weights"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-9);
    let e = fails(&[
        "recipe", "--space", &space, "--trials", &trials, "--out", o, "--export", "megatron",
    ]);
    assert!(e.contains("--corpus"), "{e}");
}

#[test]
fn bad_trials_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = setup(dir.path(), 5);
    let mut text = std::fs::read_to_string(&trials).unwrap();
    text.push_str("\n{\"mixture\": {\"z/ocr\": 1.0}, \"objective\": 1}\n");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, &text).unwrap();
    let e = fails(&[
        "suggest",
        "--space",
        &space,
        "--trials",
        bad.to_str().unwrap(),
    ]);
    assert!(e.contains("bad.jsonl:6") && e.contains("z/ocr"), "{e}");
    let e = fails(&[
        "suggest",
        "--space",
        &space,
        "--trials",
        &trials,
        "--weights",
        "missing=1",
    ]);
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn targeted_recipes_use_one_gp_per_benchmark() {
    // Benchmark A prefers cell 0, benchmark B cell 1 (both smooth, with an interior optimum).
    let dir = tempfile::tempdir().unwrap();
    let cells = ["a/x", "a/y", "b/x"];
    let space = dir.path().join("space.json");
    std::fs::write(
        &space,
        serde_json::json!({"kind": "joint", "cells": cells}).to_string(),
    )
    .unwrap();
    let mut rng = SplitMix64::new(11);
    let mut lines = Vec::new();
    for i in 0..24 {
        let mut w: Vec<f64> = (0..3).map(|_| -(1.0 - rng.next_f64()).ln()).collect();
        let s: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= s);
        let a = w[0] - 0.5 * w[0] * w[0] + 0.2 * w[2];
        let b = w[1] - 0.5 * w[1] * w[1] + 0.2 * w[2];
        let mixture: serde_json::Map<String, serde_json::Value> = cells
            .iter()
            .zip(&w)
            .map(|(c, x)| (c.to_string(), (*x).into()))
            .collect();
        lines.push(
            serde_json::json!({"id": format!("t{i}"), "mixture": mixture,
                "benchmarks": {"A": a, "B": b}})
            .to_string(),
        );
    }
    let trials = dir.path().join("trials.jsonl");
    std::fs::write(&trials, lines.join("\n")).unwrap();
    let (space, trials) = (space.to_str().unwrap(), trials.to_str().unwrap());
    let out = dir.path().join("recipe.json");
    let o = out.to_str().unwrap();
    let recipe = |target: &str| -> serde_json::Value {
        ok(&[
            "recipe", "--space", space, "--trials", trials, "--target", target, "--out", o,
        ]);
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
    };
    let (ra, rb, both) = (recipe("A"), recipe("B"), recipe("A,B"));
    let w = |r: &serde_json::Value, c: &str| r["weights"][c].as_f64().unwrap();
    assert!(
        w(&ra, "a/x") > w(&rb, "a/x") + 0.2,
        "--target A: {}, --target B: {}",
        ra["weights"],
        rb["weights"]
    );
    assert!(w(&rb, "a/y") > w(&ra, "a/y") + 0.2);
    // Two benchmarks: two GPs, combined; the recipe sits between the single targets.
    let reason = both["source"]["reason"].as_str().unwrap();
    assert!(reason.contains("2 per-objective GPs"), "{reason}");
    assert_eq!(both["source"]["target"], serde_json::json!(["A", "B"]));
    assert!(w(&both, "a/x") < w(&ra, "a/x") && w(&both, "a/y") < w(&rb, "a/y"));
    let m = both["source"]["predicted_mean"].as_f64().unwrap();
    assert!(m.is_finite() && both["source"]["predicted_std"].as_f64().unwrap() >= 0.0);
    // Without --target the aggregate keeps its single GP.
    ok(&["recipe", "--space", space, "--trials", trials, "--out", o]);
    let agg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let reason = agg["source"]["reason"].as_str().unwrap();
    assert!(!reason.contains("per-objective"), "{reason}");
}

#[test]
fn multi_fidelity_trials_give_suggestions_with_fidelities_and_predictions_at_each() {
    let dir = tempfile::tempdir().unwrap();
    let (space, trials) = setup(dir.path(), 30);
    // Every other trial ran at the cheap fidelity, where the objective is 0.01 lower.
    let text = std::fs::read_to_string(&trials).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut t: serde_json::Value = serde_json::from_str(l).unwrap();
            let (preset, steps) = if i % 2 == 0 {
                ("tiny", 20)
            } else {
                ("mini", 40)
            };
            if i % 2 == 0 {
                let y = t["benchmarks"]["near"].as_f64().unwrap();
                t["benchmarks"]["near"] = (y - 0.01).into();
            }
            t["fidelity"] = serde_json::json!({"preset": preset, "steps": steps});
            t.to_string()
        })
        .collect();
    let mf = dir.path().join("mf.jsonl");
    std::fs::write(&mf, lines.join("\n")).unwrap();
    let mf = mf.to_str().unwrap();
    let fid = [
        "--fidelities",
        "tiny:20,mini:40",
        "--target-fidelity",
        "mini:40",
    ];
    fn with<'a>(args: &[&'a str], fid: &[&'a str]) -> Vec<&'a str> {
        let mut v = args.to_vec();
        v.extend_from_slice(fid);
        v
    }
    // suggest: each mixture with its fidelity.
    let out: serde_json::Value = serde_json::from_str(&ok(&with(
        &[
            "suggest",
            "--space",
            &space,
            "--trials",
            mf,
            "-q",
            "3",
            "--weights",
            "near=1",
        ],
        &fid,
    )))
    .unwrap();
    let props = out.as_array().unwrap();
    assert_eq!(props.len(), 3);
    let ws: Vec<serde_json::Value> = props.iter().map(|p| p["mixture"].clone()).collect();
    assert_valid(&mixtures(&serde_json::Value::Array(ws)));
    for p in props {
        let f = (
            p["fidelity"]["preset"].as_str(),
            p["fidelity"]["steps"].as_u64(),
        );
        assert!(
            f == (Some("tiny"), Some(20)) || f == (Some("mini"), Some(40)),
            "{p}"
        );
    }
    // predict at the target (default) and at the cheap fidelity, at a trial of each.
    let at = dir.path().join("at.jsonl");
    std::fs::write(&at, lines[..2].join("\n")).unwrap();
    let predict = |extra: &[&str]| -> serde_json::Value {
        let mut a = with(
            &[
                "predict",
                "--space",
                &space,
                "--trials",
                mf,
                "--weights",
                "near=1",
                "--at",
                at.to_str().unwrap(),
            ],
            &fid,
        );
        a.extend_from_slice(extra);
        serde_json::from_str(&ok(&a)).unwrap()
    };
    let observed = |i: usize| {
        let t: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
        t["benchmarks"]["near"].as_f64().unwrap()
    };
    let target = predict(&[]);
    assert_eq!(target["fidelity"]["preset"], "mini");
    let cheap = predict(&["--at-fidelity", "tiny:20"]);
    assert_eq!(cheap["fidelity"]["preset"], "tiny");
    let close = |m: f64, y: f64| (m - y).abs() < 0.05 * y.abs().max(0.01) + 2e-3;
    // Trial 0 ran cheap, trial 1 at the target: each is reproduced at its own fidelity.
    let m0 = cheap["predictions"][0]["mean"].as_f64().unwrap();
    assert!(close(m0, observed(0)), "cheap {m0} vs {}", observed(0));
    let m1 = target["predictions"][1]["mean"].as_f64().unwrap();
    assert!(close(m1, observed(1)), "target {m1} vs {}", observed(1));
    // recipe: at the target.
    let out = dir.path().join("recipe.json");
    ok(&with(
        &[
            "recipe",
            "--space",
            &space,
            "--trials",
            mf,
            "--weights",
            "near=1",
            "--out",
            out.to_str().unwrap(),
        ],
        &fid,
    ));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        r["source"]["fidelity"],
        serde_json::json!({"preset": "mini", "steps": 40})
    );
    // A trial without a fidelity is named.
    let mut bad = lines.clone();
    let mut t: serde_json::Value = serde_json::from_str(&bad[3]).unwrap();
    t.as_object_mut().unwrap().remove("fidelity");
    bad[3] = t.to_string();
    let badp = dir.path().join("bad.jsonl");
    std::fs::write(&badp, bad.join("\n")).unwrap();
    let e = fails(&with(
        &[
            "suggest",
            "--space",
            &space,
            "--trials",
            badp.to_str().unwrap(),
        ],
        &fid,
    ));
    assert!(
        e.contains("t3 (line 4)") && e.contains("fidelity none"),
        "{e}"
    );
}

/// Trial files with rounded weights (3 decimals, rows summing to 1 ± 0.005, like RegMix's
/// released runs) are read, rescaled to sum 1; `--input-warp log` fits the GP on ln(w + ε): on
/// an objective linear in ln(w_a + 0.001) it predicts held-out points far better than the
/// unwarped GP. A sum off by more than 0.01, and a bad warp, are refused naming them.
#[test]
fn predict_reads_rounded_weights_and_warps_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let space = dir.path().join("space.json");
    let cells = ["p/a", "p/b", "p/c", "p/d"];
    std::fs::write(&space, serde_json::json!({"cells": cells}).to_string()).unwrap();
    let truth = |w: &[f64]| (w[0] + 0.001).ln() + 0.5 * w[1];
    let mut rng = SplitMix64::new(11);
    // Skewed mixtures: weights from 0.001 to ~0.9, rounded to 3 decimals.
    let mut draw = || -> Vec<f64> {
        loop {
            let w: Vec<f64> = (0..4).map(|_| rng.next_f64().powi(4)).collect();
            let s: f64 = w.iter().sum();
            let r: Vec<f64> = w
                .iter()
                .map(|v| (v / s * 1000.0).round() / 1000.0)
                .collect();
            let t: f64 = r.iter().sum();
            if (t - 1.0).abs() > 1e-9 {
                return r;
            }
        }
    };
    let mut csv = String::from("p/a,p/b,p/c,p/d,objective\n");
    for _ in 0..40 {
        let w = draw();
        let s: f64 = w.iter().sum();
        let exact: Vec<f64> = w.iter().map(|v| v / s).collect();
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            w[0],
            w[1],
            w[2],
            w[3],
            truth(&exact)
        ));
    }
    let trials = dir.path().join("trials.csv");
    std::fs::write(&trials, csv).unwrap();
    let mut at = String::new();
    let mut want = Vec::new();
    for _ in 0..30 {
        let w = draw();
        let s: f64 = w.iter().sum();
        want.push(truth(&w.iter().map(|v| v / s).collect::<Vec<_>>()));
        let m: serde_json::Map<String, serde_json::Value> = cells
            .iter()
            .zip(&w)
            .map(|(c, v)| (c.to_string(), (*v).into()))
            .collect();
        at.push_str(&format!("{}\n", serde_json::json!({ "mixture": m })));
    }
    let atp = dir.path().join("at.jsonl");
    std::fs::write(&atp, at).unwrap();
    let (s, t, a) = (
        space.to_str().unwrap(),
        trials.to_str().unwrap(),
        atp.to_str().unwrap(),
    );
    let rms = |warp: &str| -> f64 {
        let v: serde_json::Value = serde_json::from_str(&ok(&[
            "predict",
            "--space",
            s,
            "--trials",
            t,
            "--at",
            a,
            "--input-warp",
            warp,
        ]))
        .unwrap();
        let p = v["predictions"].as_array().unwrap();
        let e: f64 = p
            .iter()
            .zip(&want)
            .map(|(p, y)| (p["mean"].as_f64().unwrap() - y).powi(2))
            .sum();
        (e / want.len() as f64).sqrt()
    };
    let (warped, plain) = (rms("log:0.001"), rms("none"));
    let spread = {
        let m = want.iter().sum::<f64>() / want.len() as f64;
        (want.iter().map(|y| (y - m).powi(2)).sum::<f64>() / want.len() as f64).sqrt()
    };
    assert!(
        warped < 0.05 * spread && warped < 0.5 * plain,
        "warped rmse {warped}, unwarped {plain}, spread {spread}"
    );
    // Beyond 0.01 from 1: refused, naming the line and the rule.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "p/a,p/b,p/c,p/d,objective\n0.5,0.3,0.1,0.08,1\n").unwrap();
    let e = fails(&[
        "predict",
        "--space",
        s,
        "--trials",
        bad.to_str().unwrap(),
        "--at",
        a,
    ]);
    assert!(
        e.contains("bad.csv:2") && e.contains("sum to 0.98") && e.contains("within 0.01"),
        "{e}"
    );
    let e = fails(&[
        "predict",
        "--space",
        s,
        "--trials",
        t,
        "--at",
        a,
        "--input-warp",
        "log:0",
    ]);
    assert!(e.contains("log:0") && e.contains("positive"), "{e}");
}
