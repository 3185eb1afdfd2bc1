//! `mixatlas search` end to end: real processes, real files. An external trainer written in
//! Python (`tests/toy_trainer.py`, a known optimum) plugs in through the trial protocol; the
//! search is killed with SIGKILL at random moments and resumed; failed trials are retried.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mixatlas::rng::SplitMix64;

use crate::cli::{bin, fails, ok, s, tiny_corpus};

pub(crate) fn toy(extra: &str) -> String {
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

pub(crate) fn search_args<'a>(
    corpus: &'a str,
    out: &'a str,
    cmd: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
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
    let text = left_out(&search_args(
        s(corpus),
        s(&out),
        "echo 'CUDA out of memory' >&2; exit 3",
        &[
            "-q",
            "2",
            "--max-trials",
            "2",
            "--method",
            "random",
            "--trainer-shell",
        ],
    ));
    assert!(
        text.contains("left out t0000") && text.contains("exit status 3"),
        "{text}"
    );
    assert!(text.contains("CUDA out of memory"), "{text}");
    // Timeouts kill the trial.
    let out = tmp.path().join("slow");
    let text = left_out(&search_args(
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

/// Runs a search in which no trial finishes: it exits 2 (issue 18); its stdout and stderr.
fn left_out(args: &[&str]) -> String {
    let out = crate::cli::run(args);
    assert_eq!(out.status.code(), Some(2), "no trial finished: exit 2");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
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

/// `(preset, steps)` of an event's `fidelity`.
fn fidelity_of(e: &serde_json::Value) -> (String, u64) {
    let f = &e["fidelity"];
    (
        f["preset"].as_str().expect("a fidelity preset").to_string(),
        f["steps"].as_u64().expect("fidelity steps"),
    )
}

/// Checks a finished multi-fidelity search (fidelities tiny:20 and mini:40, target mini:40)
/// against its files; returns its finished trial ids.
fn check_mf_search(corpus: &Path, out: &Path, max_cost: f64) -> Vec<String> {
    use mixatlas::data::corpus::Manifest;
    use mixatlas::model::config::Qwen2Config;
    let manifest = Manifest::load(corpus).unwrap();
    let params = |preset: &str| {
        let mut c = Qwen2Config::preset(preset).unwrap();
        c.adapt_to(&manifest);
        c.num_params() as f64
    };
    let ev = events(out);
    let proposed: std::collections::BTreeMap<String, (String, u64)> = ev
        .iter()
        .filter(|e| e["event"] == "proposed")
        .map(|e| (e["trial"].as_str().unwrap().to_string(), fidelity_of(e)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut cost = 0.0;
    for (preset, steps) in proposed.values() {
        assert!(
            [("tiny", 20), ("mini", 40)].contains(&(preset.as_str(), *steps)),
            "{preset}:{steps}"
        );
        seen.insert(preset.clone());
        // The model cost, parameters × steps, in units of a mini:40 trial.
        cost += params(preset) * *steps as f64 / (params("mini") * 40.0);
    }
    assert_eq!(seen.len(), 2, "trials at both fidelities: {proposed:?}");
    assert!(cost <= max_cost + 1e-9, "cost {cost} > {max_cost}");
    // The search stopped for its cost budget: any further trial would have exceeded it.
    assert!(cost > max_cost - 1.0, "cost {cost} of {max_cost}");
    let mut finished = Vec::new();
    for e in ev.iter().filter(|e| e["event"] == "finished") {
        let id = e["trial"].as_str().unwrap();
        let (preset, steps) = fidelity_of(e);
        assert_eq!(proposed[id], (preset.clone(), steps), "{id}");
        // The trial's train.toml and what the trainer actually ran.
        let dir = out
            .join("trials")
            .join(id)
            .join(format!("a{}", e["attempt"]));
        let toml: toml::Value =
            toml::from_str(&std::fs::read_to_string(dir.join("train.toml")).unwrap()).unwrap();
        assert_eq!(toml["train"]["steps"].as_integer(), Some(steps as i64));
        assert!(toml["train"]["warmup_steps"].as_integer().unwrap() < steps as i64);
        assert_eq!(toml["search"]["trainer"]["preset"].as_str(), Some(&*preset));
        assert_eq!(e["metrics"]["steps"].as_u64(), Some(steps), "{id}");
        assert_eq!(
            e["metrics"]["params"].as_f64(),
            Some(params(&preset)),
            "{id}"
        );
        finished.push(id.to_string());
    }
    assert_eq!(finished.len(), proposed.len(), "every trial finished once");
    let recipe: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(
        recipe["source"]["fidelity"],
        serde_json::json!({"preset": "mini", "steps": 40})
    );
    finished
}

#[test]
fn multi_fidelity_search_runs_trials_at_their_fidelities_within_the_cost_budget_and_resumes() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cfg = tmp.path().join("search.toml");
    // ξ = 10: after the initial design (at the cheap fidelity) the trials go to the target.
    std::fs::write(
        &cfg,
        r#"
[search]
fidelities = ["tiny:20", "mini:40"]
target_fidelity = "mini:40"
fidelity_xi = 10.0
space = "factorized"
[search.budget]
q = 2
max_trials = 40
[train]
batch_size = 4
seq_len = 64
eval_samples = 5
"#,
    )
    .unwrap();
    let args = |max_cost: &'static str| {
        vec![
            "search".to_string(),
            "--config".into(),
            s(&cfg).into(),
            "--corpus".into(),
            s(corpus).into(),
            "--out".into(),
            s(&out).into(),
            "--parallel".into(),
            "2".into(),
            "--max-cost".into(),
            max_cost.into(),
        ]
    };
    let run = |max_cost| {
        let a = args(max_cost);
        ok(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>())
    };
    let summary = run("3.5");
    assert!(summary.contains("multi-fidelity"), "{summary}");
    assert!(summary.contains("at mini:40"), "{summary}");
    let first = check_mf_search(corpus, &out, 3.5);
    assert!(first.len() < 40);
    // Resume with a larger budget: the log grows, nothing earlier is re-run or rewritten.
    let before = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    run("5.5");
    let after = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    assert!(after.starts_with(&before));
    let second = check_mf_search(corpus, &out, 5.5);
    assert!(second.len() > first.len() && second.starts_with(&first));
    // Other fidelities in the same directory are refused.
    let mut a = args("5.5");
    a.extend(["--target-fidelity".into(), "mini:80".into()]);
    a.extend(["--fidelities".into(), "tiny:20,mini:80".into()]);
    let e = crate::cli::fails(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>());
    assert!(e.contains("different settings"), "{e}");
}

#[test]
fn bad_fidelity_settings_fail_naming_the_key_and_value() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let base = ["search", "--corpus", s(corpus), "--out", s(&out)];
    let with = |extra: &[&'static str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        crate::cli::fails(&v)
    };
    let e = with(&[
        "--fidelities",
        "tiny:20,mini:0",
        "--target-fidelity",
        "mini:40",
    ]);
    assert!(e.contains("--fidelities") && e.contains("mini:0"), "{e}");
    let e = with(&[
        "--fidelities",
        "tiny:20,huge:40",
        "--target-fidelity",
        "tiny:20",
    ]);
    assert!(e.contains("unknown model preset \"huge\""), "{e}");
    let e = with(&[
        "--fidelities",
        "tiny:20,mini:40",
        "--target-fidelity",
        "small:40",
    ]);
    assert!(
        e.contains("target_fidelity") && e.contains("small:40"),
        "{e}"
    );
    let e = with(&["--fidelities", "tiny:20,mini:40"]);
    assert!(e.contains("target_fidelity is not"), "{e}");
    let e = with(&[
        "--fidelities",
        "tiny:20,mini:40",
        "--target-fidelity",
        "mini:40",
        "--method",
        "regmix",
    ]);
    assert!(e.contains("method gp-ucb"), "{e}");
    assert!(!out.exists(), "nothing written for a refused configuration");
}

#[test]
fn an_external_trainer_gets_each_trials_preset_and_steps() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = format!(
        "echo {{preset}} {{steps}} $MIXATLAS_PRESET $MIXATLAS_STEPS > {{trial_dir}}/fidelity.txt && {}",
        toy("--out {trial_dir} --mixture {mixture}")
    );
    ok(&search_args(
        s(corpus),
        s(&out),
        &cmd,
        &[
            "-q",
            "2",
            "--max-trials",
            "12",
            "--space",
            "factorized",
            "--fidelities",
            "tiny:20,mini:40",
            "--target-fidelity",
            "mini:40",
            "--fidelity-xi",
            "10",
            "--trainer-shell",
        ],
    ));
    let ev = events(&out);
    let mut at = std::collections::BTreeSet::new();
    for e in ev.iter().filter(|e| e["event"] == "finished") {
        let (preset, steps) = fidelity_of(e);
        let dir = out
            .join("trials")
            .join(e["trial"].as_str().unwrap())
            .join(format!("a{}", e["attempt"]));
        let got = std::fs::read_to_string(dir.join("fidelity.txt")).unwrap();
        assert_eq!(got.trim(), format!("{preset} {steps} {preset} {steps}"));
        at.insert(preset);
    }
    assert_eq!(at.len(), 2, "{at:?}");
}
