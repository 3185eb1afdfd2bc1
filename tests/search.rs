//! `mixatlas search` end to end: real processes, real files. An external trainer written in
//! Python (`tests/toy_trainer.py`, a known optimum) plugs in through the trial protocol; the
//! search is killed with SIGKILL at random moments and resumed; failed trials are retried.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mixatlas::rng::SplitMix64;

use crate::cli::{bin, fails, ok, s, tiny_corpus};

fn toy(extra: &str) -> String {
    format!(
        "python3 {}/tests/toy_trainer.py {extra}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn score_of(mixture: &Path) -> f64 {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/toy_trainer.py"))
        .args(["--score-of", s(mixture)])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub(crate) fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line of trials.jsonl is complete JSON"))
        .collect()
}

fn search_args<'a>(corpus: &'a str, out: &'a str, cmd: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "search",
        "--corpus",
        corpus,
        "--out",
        out,
        "--trainer-command",
        cmd,
        "--quiet",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn an_external_python_trainer_plugs_in_and_the_search_finds_its_optimum() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = toy("--out {trial_dir} --mixture {mixture}");
    ok(&search_args(
        s(corpus),
        s(&out),
        &cmd,
        &[
            "-q",
            "4",
            "--max-trials",
            "48",
            "--parallel",
            "2",
            "--space",
            "factorized",
        ],
    ));
    let ev = events(&out);
    let finished = ev.iter().filter(|e| e["event"] == "finished").count();
    assert_eq!(finished, 48);
    // The recipe against the known optimum (score 1) and against the uniform mixture.
    let recipe_score = score_of(&out.join("recipe.json"));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap())
            .unwrap();
    let cells: Vec<String> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let uniform = tmp.path().join("uniform.json");
    let w: serde_json::Map<String, serde_json::Value> = cells
        .iter()
        .map(|c| (c.clone(), serde_json::json!(1.0 / cells.len() as f64)))
        .collect();
    std::fs::write(&uniform, serde_json::json!({ "weights": w }).to_string()).unwrap();
    let uniform_score = score_of(&uniform);
    let (regret, uniform_regret) = (1.0 - recipe_score, 1.0 - uniform_score);
    assert!(
        regret < 0.2 * uniform_regret,
        "recipe regret {regret:.4} vs uniform {uniform_regret:.4}"
    );
    // Every trial directory holds what the protocol promises.
    let a = out.join("trials/t0000/a1");
    assert!(a.join("mixture.json").is_file() && a.join("blend.txt").is_file());
    let blend = std::fs::read_to_string(a.join("blend.txt")).unwrap();
    assert!(blend.contains("cells/"), "{blend}");
    assert!(out.join("recipe.json").is_file() && out.join("search.json").is_file());
}

#[test]
fn failed_trials_are_retried_then_left_out_with_their_reason() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("retry");
    let cmd = toy("--fail-once");
    ok(&search_args(
        s(corpus),
        s(&out),
        &cmd,
        &["-q", "2", "--max-trials", "4", "--method", "random"],
    ));
    let ev = events(&out);
    assert_eq!(ev.iter().filter(|e| e["event"] == "failed").count(), 4);
    assert_eq!(ev.iter().filter(|e| e["event"] == "finished").count(), 4);
    // A trainer that always fails is given up after 1 + retries attempts, with the reason.
    let out = tmp.path().join("broken");
    let text = ok(&search_args(
        s(corpus),
        s(&out),
        "echo 'CUDA out of memory' >&2; exit 3",
        &["-q", "2", "--max-trials", "2", "--method", "random"],
    ));
    assert!(
        text.contains("left out t0000") && text.contains("exit status 3"),
        "{text}"
    );
    assert!(text.contains("CUDA out of memory"), "{text}");
    // Timeouts kill the trial.
    let out = tmp.path().join("slow");
    let text = ok(&search_args(
        s(corpus),
        s(&out),
        "sleep 30",
        &[
            "-q",
            "1",
            "--max-trials",
            "1",
            "--trial-timeout",
            "0.5",
            "--method",
            "uniform",
        ],
    ));
    assert!(text.contains("time limit"), "{text}");
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("crash");
    let cmd = toy("--sleep 0.15");
    let args = search_args(
        s(corpus),
        s(&out),
        &cmd,
        &["-q", "3", "--max-trials", "15", "--parallel", "3"],
    );
    let mut rng = SplitMix64::new(2026);
    for _ in 0..10 {
        let mut child = bin().args(&args).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(50 + rng.below(600)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    ok(&args);
    let ev = events(&out);
    let mut proposed = std::collections::BTreeMap::new();
    let mut finished = std::collections::BTreeMap::new();
    for e in &ev {
        let id = e["trial"].as_str().unwrap().to_string();
        match e["event"].as_str().unwrap() {
            "proposed" => {
                assert!(
                    proposed.insert(id.clone(), e["mixture"].clone()).is_none(),
                    "{id} proposed twice"
                )
            }
            "finished" => {
                assert!(
                    finished.insert(id.clone(), e.clone()).is_none(),
                    "{id} finished twice"
                )
            }
            _ => {}
        }
    }
    assert_eq!(proposed.len(), 15);
    assert_eq!(
        finished.len(),
        15,
        "every proposed trial finished exactly once"
    );
    // Each finished trial's score is the toy function of its own mixture (no mix-ups).
    for (id, e) in &finished {
        let m = tmp.path().join(format!("{id}.json"));
        std::fs::write(&m, serde_json::json!({"weights": proposed[id]}).to_string()).unwrap();
        let want = score_of(&m);
        let got = e["metrics"]["benchmarks"]["alpha"].as_f64().unwrap();
        assert!((want - got).abs() < 1e-12, "{id}: {got} vs {want}");
    }
    // Rerunning a finished search runs nothing new.
    let before = ev.len();
    ok(&args);
    assert_eq!(events(&out).len(), before);
}

#[test]
fn slurm_executor_runs_real_trials_and_a_restarted_controller_reattaches() {
    if std::env::var("MIXATLAS_SLURM").as_deref() != Ok("1") {
        eprintln!("skipping: no local Slurm cluster (scripts/slurm-local.sh; MIXATLAS_SLURM=1)");
        return;
    }
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("search.toml");
    std::fs::write(
        &cfg,
        "[train]\nsteps = 40\nbatch_size = 4\nseq_len = 64\neval_samples = 10\n",
    )
    .unwrap();
    let out = tmp.path().join("slurm-search");
    let args = [
        "search",
        "--config",
        s(&cfg),
        "--corpus",
        s(corpus),
        "--out",
        s(&out),
        "-q",
        "2",
        "--max-trials",
        "4",
        "--executor",
        "slurm",
        "--quiet",
    ];
    // Kill the controller once the first round's array is submitted.
    let mut child = bin().args(args).stderr(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(out.join("trials.jsonl"))
        .unwrap_or_default()
        .matches("\"running\"")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was submitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ok(&args);
    let ev = events(&out);
    let count = |kind: &str, id: &str| {
        ev.iter()
            .filter(|e| e["event"] == kind && e["trial"] == id)
            .count()
    };
    for id in ["t0000", "t0001", "t0002", "t0003"] {
        assert_eq!(count("finished", id), 1, "{id} finished once");
        assert_eq!(
            count("running", id),
            1,
            "{id} was submitted once (re-attached)"
        );
    }
    let first = ev.iter().find(|e| e["event"] == "running").unwrap();
    assert!(first["job"].as_str().unwrap().starts_with("slurm:"));
    let fin = ev.iter().find(|e| e["event"] == "finished").unwrap();
    assert!(
        fin["metrics"]["benchmark_loss"].is_object(),
        "real mixatlas train trials"
    );
}

/// The best objective `search` prints in its summary line.
fn best_objective(summary: &str) -> f64 {
    summary
        .split("best objective ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("search prints the best objective")
        .parse()
        .unwrap()
}

/// The toy score of every trial of a search (`trials/*/a1/mixture.json`).
fn trial_scores(out: &Path) -> Vec<f64> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(out.join("trials")).unwrap() {
        let m = e.unwrap().path().join("a1/mixture.json");
        if m.is_file() {
            v.push(score_of(&m));
        }
    }
    v
}

#[test]
fn objective_curve_scores_trials_along_their_held_out_curve() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let cmd = toy("--out {trial_dir} --mixture {mixture} --curve");
    // The toy curve is s - 0.3, s - 0.1, s at steps 10, 20, 40 (s: the trial's final score):
    // last:2 = s - 0.05, last:3 = s - 0.4 / 3, auc = (10 (2s - 0.4) / 2 + 20 (2s - 0.1) / 2) / 30
    // = s - 0.1, final = s.
    let cases = [
        ("last:2", 0.05),
        ("auc", 0.1),
        ("final", 0.0),
        ("last:3", 0.4 / 3.0),
    ];
    for (curve, offset) in cases {
        let out = tmp.path().join(curve.replace(':', "-"));
        let text = ok(&search_args(
            s(corpus),
            s(&out),
            &cmd,
            &["-q", "2", "--max-trials", "4", "--objective-curve", curve],
        ));
        let best = trial_scores(&out)
            .into_iter()
            .fold(f64::NEG_INFINITY, f64::max);
        let got = best_objective(&text);
        assert!(
            (got - (best - offset)).abs() < 1e-4,
            "{curve}: best objective {got}, expected {best} - {offset}"
        );
    }
    // A trainer that reports no curve: the error names the trial, the field and the log.
    let out = tmp.path().join("missing");
    let bare = toy("--out {trial_dir} --mixture {mixture}");
    let err = fails(&search_args(
        s(corpus),
        s(&out),
        &bare,
        &["-q", "1", "--max-trials", "1", "--objective-curve", "auc"],
    ));
    assert!(
        err.contains("t0000") && err.contains("no `curve`") && err.contains("train_log.jsonl"),
        "{err}"
    );
    let err = fails(&search_args(
        s(corpus),
        s(&out),
        &bare,
        &["--objective-curve", "last:0"],
    ));
    assert!(err.contains("last:K"), "{err}");
}

#[test]
fn chameleon_proposes_its_mixture_once_in_search_and_suggest() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let m = mixatlas::data::corpus::Manifest::load(corpus).unwrap();
    let params = mixatlas::baselines::ChameleonParams::default();
    let w = mixatlas::baselines::chameleon_weights(&m, &params).unwrap();
    let names: Vec<&str> = m.cells.iter().map(|c| c.data.name.as_str()).collect();
    // suggest: one mixture (whatever -q), the library's weights.
    let text = ok(&[
        "suggest",
        "--corpus",
        s(corpus),
        "--method",
        "chameleon",
        "-q",
        "3",
    ]);
    let v: Vec<std::collections::BTreeMap<String, f64>> = serde_json::from_str(&text).unwrap();
    assert_eq!(v.len(), 1, "{text}");
    for (n, x) in names.iter().zip(&w) {
        assert!((v[0][*n] - x).abs() < 1e-9, "{n}: {} vs {x}", v[0][*n]);
    }
    // search: one trial, then it stops; the recipe is that mixture.
    let out = tmp.path().join("search");
    let cmd = toy("--out {trial_dir} --mixture {mixture}");
    ok(&search_args(
        s(corpus),
        s(&out),
        &cmd,
        &["--method", "chameleon", "-q", "4", "--max-trials", "8"],
    ));
    let ev = events(&out);
    assert_eq!(ev.iter().filter(|e| e["event"] == "finished").count(), 1);
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("recipe.json")).unwrap()).unwrap();
    for (n, x) in names.iter().zip(&w) {
        let got = recipe["weights"][*n].as_f64().unwrap();
        assert!((got - x).abs() < 1e-6, "{n}: {got} vs {x}");
    }
    // A corpus whose manifest predates the embeddings: a clear error naming it.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    let mut mv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap())
            .unwrap();
    for c in mv["cells"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("embedding");
    }
    std::fs::write(old.join("manifest.json"), mv.to_string()).unwrap();
    let err = fails(&["suggest", "--corpus", s(&old), "--method", "chameleon"]);
    assert!(
        err.contains("old/manifest.json") && err.contains("re-run `mixatlas prepare`"),
        "{err}"
    );
}
