//! Issue 18, rows 7, 8, 9, 18 and 21 (search side): a search directory can always be resumed,
//! and `search` / `transfer` say so when they produce nothing. Each test runs the release
//! binary on the tiny corpus with a Python trainer and would fail on the code before the fix:
//!
//! - row 7: a trial id read back from `trials.jsonl` cannot name a directory outside it;
//! - row 8: a trainer without usable scores fails its attempts (never "finished"), and a
//!   directory holding such a "finished" record from an older version resumes (repaired);
//! - row 9: settings that would fail every trial are refused before anything runs; a search
//!   with no finished trial exits 2 naming the logs; a rerun retries the trials left out;
//! - row 18: trials scored on different benchmarks are not averaged; benchmarks take
//!   precedence over an explicit `objective` (docs/ask-tell.md);
//! - row 21: a relative `--out` resumes the directory an absolute one made.

use std::path::{Path, PathBuf};

use crate::cli::{bin, fails, ok, run, s, tiny_corpus};
use crate::search::{events, search_args, toy};

/// Writes `dir/trainer.py`, a trial-protocol trainer whose metrics are the Python expression
/// `metrics` (it may use `trial`, the trial id), and returns the command that runs it.
fn trainer(dir: &Path, metrics: &str) -> String {
    let path = dir.join("trainer.py");
    let body = format!(
        "import json, os\n\
         d = os.environ['MIXATLAS_TRIAL_DIR']\n\
         trial = os.environ['MIXATLAS_TRIAL_ID']\n\
         m = {metrics}\n\
         open(os.path.join(d, 'metrics.json'), 'w').write(json.dumps(m))\n"
    );
    std::fs::write(&path, body).unwrap();
    format!("python3 {}", path.display())
}

/// stdout and stderr of a run that must exit 2.
fn exits_2(args: &[&str]) -> String {
    let out = run(args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} must exit 2:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    text
}

fn count(ev: &[serde_json::Value], event: &str) -> usize {
    ev.iter().filter(|e| e["event"] == event).count()
}

/// Row 7: a `proposed` line whose trial id is a path is refused, naming the file, the line
/// and the value, and nothing outside the search directory is touched.
#[test]
fn issue18_a_trial_id_from_trials_jsonl_cannot_leave_the_search_directory() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = toy("");
    let args = ["-q", "1", "--max-trials", "1", "--method", "uniform"];
    ok(&search_args(s(corpus), s(&out), &cmd, &args));
    let victim = tmp.path().join("victim/a1");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious.txt"), "keep me").unwrap();
    let log = out.join("trials.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let forged = serde_json::json!({"event": "proposed", "trial": "../../victim", "round": 1,
        "mixture": first["mixture"], "reason": "forged"});
    text += &format!("{forged}\n");
    std::fs::write(&log, &text).unwrap();
    let more = ["-q", "1", "--max-trials", "3", "--method", "uniform"];
    let err = fails(&search_args(s(corpus), s(&out), &cmd, &more));
    assert!(
        err.contains("trials.jsonl")
            && err.contains(&format!("line {}", lines + 1))
            && err.contains("\"../../victim\""),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("precious.txt")).unwrap(),
        "keep me"
    );
    assert!(!victim.join("mixture.json").exists() && !victim.join("metrics.json").exists());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        text,
        "the log is left as it was"
    );
}

/// Rows 8 and 9: a trainer that writes `{"benchmarks": {}}` fails every attempt (retried,
/// then left out with the reason), the search exits 2 naming the logs, and once the trainer
/// is fixed a rerun of the same command retries those trials and finishes them.
#[test]
fn issue18_a_trainer_without_scores_fails_and_a_rerun_after_the_fix_retries() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = trainer(tmp.path(), "{'benchmarks': {}}");
    let args = ["-q", "2", "--max-trials", "2", "--method", "random"];
    let text = exits_2(&search_args(s(corpus), s(&out), &cmd, &args));
    assert!(
        text.contains("no trial finished")
            && text.contains("no scores")
            && text.contains("trial.log")
            && text.contains("rerun"),
        "{text}"
    );
    let ev = events(&out);
    assert_eq!((count(&ev, "finished"), count(&ev, "failed")), (0, 4));
    assert!(!out.join("recipe.json").exists());
    // The fix: a trainer that scores.
    trainer(tmp.path(), "{'benchmarks': {'alpha': 0.5, 'beta': 0.25}}");
    let text = ok(&search_args(s(corpus), s(&out), &cmd, &args));
    assert!(text.contains("2 trials finished"), "{text}");
    let ev = events(&out);
    assert_eq!((count(&ev, "finished"), count(&ev, "reopened")), (2, 2));
    assert!(out.join("recipe.json").is_file() && out.join("recipe.blend.txt").is_file());
}

/// Row 8: a directory where an older version recorded `{"benchmarks": {}}` as finished
/// resumes: the record is replayed as a failed attempt (with a warning) and the trial re-run.
#[test]
fn issue18_a_finished_record_without_scores_is_repaired_on_resume() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = toy("");
    let args = ["-q", "2", "--max-trials", "2", "--method", "random"];
    ok(&search_args(s(corpus), s(&out), &cmd, &args));
    let log = out.join("trials.jsonl");
    let text: String = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let mut e: serde_json::Value = serde_json::from_str(l).unwrap();
            if e["event"] == "finished" && e["trial"] == "t0001" {
                e["metrics"] = serde_json::json!({"benchmarks": {}});
            }
            format!("{e}\n")
        })
        .collect();
    std::fs::write(&log, text).unwrap();
    let res = run(&search_args(s(corpus), s(&out), &cmd, &args));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("t0001") && stderr.contains("no scores"),
        "{stderr}"
    );
    let ev = events(&out);
    let t1: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["trial"] == "t0001" && e["event"] == "finished")
        .collect();
    assert_eq!(t1.len(), 2, "the repaired trial ran again");
    assert_eq!(t1[1]["attempt"], 2);
    assert!(t1[1]["metrics"]["benchmarks"]["alpha"].is_f64());
}

/// Row 9: an unknown preset, a trainer that does not exist, a corrupt corpus and an
/// unwritable --out are refused before anything is proposed or run.
#[test]
fn issue18_settings_that_would_fail_every_trial_are_refused_before_anything_runs() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let base = ["search", "--corpus", s(corpus), "--out", s(&out), "--quiet"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|x| x.to_string()).collect()
    };
    let check = |args: Vec<String>, want: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        for w in want {
            assert!(err.contains(w), "{err} lacks {w}");
        }
        assert!(!out.join("trials.jsonl").exists(), "nothing ran: {err}");
    };
    check(
        with(&["--preset", "nosuch"]),
        &["preset", "\"nosuch\"", "tiny"],
    );
    check(
        with(&["--trainer-command", "/no/such/trainer.sh {trial_dir}"]),
        &["/no/such/trainer.sh", "does not exist"],
    );
    check(
        with(&["--trainer-command", "no-such-trainer-xyz --out {trial_dir}"]),
        &["no-such-trainer-xyz", "PATH"],
    );
    // A corpus with one flipped byte in a cell.
    let bad = tmp.path().join("corpus");
    copy_dir(corpus, &bad);
    let bin_file = first_bin(&bad.join("cells"));
    let mut bytes = std::fs::read(&bin_file).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&bin_file, bytes).unwrap();
    let cmd = toy("");
    let err = fails(&search_args(s(&bad), s(&out), &cmd, &[]));
    let name = bin_file.file_name().unwrap().to_str().unwrap();
    assert!(err.contains("preflight") && err.contains(name), "{err}");
    assert!(!out.join("trials.jsonl").exists());
    // An --out below a regular file.
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let under = file.join("search");
    let err = fails(&search_args(s(corpus), s(&under), &cmd, &[]));
    assert!(err.contains(s(&under)), "{err}");
}

/// Row 9: every attempt past its time limit → exit 2 naming the reason and the logs; a
/// rerun with a larger limit (an allowed change on resume) retries the trial and finishes.
#[test]
fn issue18_a_search_with_no_finished_trial_exits_2_and_a_rerun_retries_it() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = toy("--sleep 1");
    let args = |t: &'static str| ["-q", "1", "--max-trials", "1", "--trial-timeout", t];
    let text = exits_2(&search_args(s(corpus), s(&out), &cmd, &args("0.2")));
    assert!(
        text.contains("no trial finished")
            && text.contains("time limit")
            && text.contains(&format!("{}/trials/<trial>/a<attempt>/trial.log", s(&out))),
        "{text}"
    );
    let text = ok(&search_args(s(corpus), s(&out), &cmd, &args("60")));
    assert!(text.contains("1 trials finished"), "{text}");
    let ev = events(&out);
    assert_eq!((count(&ev, "reopened"), count(&ev, "finished")), (1, 1));
}

/// Row 18: a trial scored on other benchmarks than the first is a failed attempt naming both
/// sets (never averaged in); ask/tell refuses such a trials file naming trials and sets; and
/// benchmarks take precedence over an explicit `objective` (docs/ask-tell.md).
#[test]
fn issue18_trials_on_different_benchmark_sets_are_not_averaged() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = trainer(
        tmp.path(),
        "{'benchmarks': {'alpha': 0.5} if trial == 't0001' else {'alpha': 0.5, 'beta': 0.1}}",
    );
    let args = [
        "-q",
        "2",
        "--max-trials",
        "2",
        "--parallel",
        "1",
        "--method",
        "random",
    ];
    let text = ok(&search_args(s(corpus), s(&out), &cmd, &args));
    assert!(
        text.contains("left out t0001")
            && text.contains("scored on {alpha} but trial t0000 on {alpha, beta}"),
        "{text}"
    );
    assert_eq!(count(&events(&out), "finished"), 1);
    // Ask/tell: the same mix in a trials file.
    let trials = tmp.path().join("trials.jsonl");
    let m = |c: usize| {
        let cells = cells(corpus);
        serde_json::json!({ cells[c].clone(): 1.0 })
    };
    let lines = [
        serde_json::json!({"id": "a", "mixture": m(0), "benchmarks": {"alpha": 0.5, "beta": 0.1}}),
        serde_json::json!({"id": "b", "mixture": m(1), "benchmarks": {"alpha": 0.4}}),
        serde_json::json!({"id": "c", "mixture": m(2), "benchmarks": {"alpha": 0.2, "beta": 0.3}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&trials, text).unwrap();
    let err = fails(&[
        "suggest",
        "--trials",
        s(&trials),
        "--corpus",
        s(corpus),
        "-q",
        "1",
    ]);
    assert!(
        err.contains("different benchmark sets")
            && err.contains("{alpha, beta} (2 trial(s): a, c)")
            && err.contains("{alpha} (1 trial(s): b)"),
        "{err}"
    );
    // With weights naming the benchmarks to use, the same file is fine.
    ok(&[
        "suggest",
        "--trials",
        s(&trials),
        "--corpus",
        s(corpus),
        "-q",
        "1",
        "--weights",
        "alpha=1",
    ]);
    // Precedence: a trainer reporting benchmarks and an objective is scored on its benchmarks.
    let dir = tmp.path().join("both");
    std::fs::create_dir_all(&dir).unwrap();
    let cmd = trainer(&dir, "{'benchmarks': {'alpha': 0.25}, 'objective': 99.0}");
    let out = dir.join("search");
    let args = ["-q", "1", "--max-trials", "1", "--method", "uniform"];
    let text = ok(&search_args(s(corpus), s(&out), &cmd, &args));
    assert!(text.contains("best objective 0.2500"), "{text}");
}

/// Row 21: the same directory spelled relative on resume is the same setting; a setting that
/// does differ is named with both values.
#[test]
fn issue18_a_relative_out_resumes_the_search_an_absolute_one_made() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let cmd = toy("");
    let args = |n: &'static str| ["-q", "1", "--max-trials", n, "--method", "random"];
    ok(&search_args(s(corpus), s(&out), &cmd, &args("1")));
    let res = bin()
        .current_dir(tmp.path())
        .args(search_args(s(corpus), "search", &cmd, &args("2")))
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(count(&events(&out), "finished"), 2);
    let mut seeded = search_args(s(corpus), s(&out), &cmd, &args("2"));
    seeded.extend(["--seed", "7"]);
    let err = fails(&seeded);
    assert!(err.contains("[search].seed: 0 before, 7 now"), "{err}");
}

/// Row 9 (transfer): a recipe missing from a search directory is explained (no trial
/// finished there), and `--seeds 0` is refused before training anything.
#[test]
fn issue18_transfer_without_a_recipe_or_seeds_fails_saying_why() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let search = tmp.path().join("search");
    let cmd = trainer(tmp.path(), "{'benchmarks': {}}");
    exits_2(&search_args(
        s(corpus),
        s(&search),
        &cmd,
        &["-q", "1", "--max-trials", "1"],
    ));
    let recipe = search.join("recipe.json");
    let out = tmp.path().join("transfer");
    let base = |seeds: &'static str| {
        vec![
            "transfer",
            "--corpus",
            s(corpus),
            "--recipe",
            s(&recipe),
            "--out",
            s(&out),
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--seeds",
            seeds,
        ]
    };
    let err = fails(&base("1"));
    assert!(
        err.contains("no recipe") && err.contains("trials.jsonl") && err.contains("trial.log"),
        "{err}"
    );
    assert!(!out.join("recipe").exists(), "nothing was trained");
    let err = fails(&base("0"));
    assert!(err.contains("--seeds 0"), "{err}");
}

fn cells(corpus: &Path) -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap())
            .unwrap();
    m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn first_bin(dir: &Path) -> PathBuf {
    let mut bins: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    bins.sort();
    bins.into_iter().next().expect("a cell .bin")
}
