//! Issue 18, rows 4–6: one writer per directory. Two real processes of the binary on one
//! `--out` at once (`search`, `train`, `prepare`): the second exits non-zero naming the holder,
//! the first finishes normally and its output stays usable; a holder killed with SIGKILL leaves
//! a lock the next run takes over.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mixatlas::fsutil::lock::{hostname, LOCK_FILE};

use crate::cli::{bin, fails, ok, s, tiny_corpus};
use crate::search::events;

/// The toy external trainer of the search tests, sleeping `sleep` seconds per trial.
fn toy(sleep: &str) -> String {
    format!(
        "python3 {}/tests/toy_trainer.py --sleep {sleep}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn search_args(corpus: &Path, out: &Path, cmd: &str) -> Vec<String> {
    [
        "search",
        "--corpus",
        s(corpus),
        "--out",
        s(out),
        "--trainer-command",
        cmd,
        "--quiet",
        "-q",
        "2",
        "--max-trials",
        "4",
        "--parallel",
        "2",
    ]
    .map(String::from)
    .to_vec()
}

fn spawn(args: &[String]) -> Child {
    bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mixatlas starts")
}

/// Waits until `child` has written its record into `lock`, then starts the second writer.
fn wait_for_lock(lock: &Path, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let record = std::fs::read_to_string(lock).unwrap_or_default();
        if record.contains(&format!("\"pid\":{}", child.id())) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the first run ended ({status}) before it took {}",
                lock.display()
            );
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no lock record");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The second writer's error names the directory and the holder: pid, host, command, since.
fn assert_names_holder(err: &str, dir: &Path, holder: &Child, command: &str) {
    for want in [
        "in use by another writer",
        &format!("pid {}", holder.id()),
        &format!("on host {}", hostname()),
        command,
        " since 2",
        s(dir),
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

fn finish(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first writer failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn str_args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn issue18_row4_a_second_search_on_one_out_fails_naming_the_first() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let args = search_args(corpus, &out, &toy("0.6"));
    let mut first = spawn(&args);
    wait_for_lock(&out.join(LOCK_FILE), &mut first);
    std::thread::sleep(Duration::from_millis(300));
    let err = fails(&str_args(&args));
    assert_names_holder(&err, &out, &first, "search --corpus");
    finish(first);
    // Each trial was proposed and finished exactly once, by the first search.
    let ev = events(&out);
    for kind in ["proposed", "finished"] {
        let mut ids: Vec<&str> = ev
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e["trial"].as_str().unwrap())
            .collect();
        let n = ids.len();
        ids.dedup();
        assert_eq!((n, ids.len()), (4, 4), "{kind}: {ids:?}");
    }
    // The directory stays usable: a report, and a rerun that has nothing left to do.
    ok(&["report", s(&out), "--out", s(&tmp.path().join("report"))]);
    ok(&str_args(&args));
    assert_eq!(events(&out).len(), ev.len());
    assert!(
        !out.join(LOCK_FILE).exists(),
        "a finished run removes its record"
    );
}

fn train_args(corpus: &Path, out: &Path, seed: &str) -> Vec<String> {
    [
        "train",
        "--corpus",
        s(corpus),
        "--out",
        s(out),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--seq-len",
        "64",
        "--eval-samples",
        "20",
        "--steps",
        "60",
        "--seed",
        seed,
        "--quiet",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn issue18_row5_a_second_train_on_one_out_fails_naming_the_first() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = spawn(&train_args(corpus, &out, "1"));
    wait_for_lock(&out.join(LOCK_FILE), &mut first);
    let err = fails(&str_args(&train_args(corpus, &out, "2")));
    assert_names_holder(&err, &out, &first, "train --corpus");
    finish(first);
    // Everything in the run directory is the first run's (seed 1).
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["train"]["seed"], 1, "{cfg}");
    assert!(out.join("metrics.json").is_file());
}

fn raw_input() -> PathBuf {
    tiny_corpus().1.clone()
}

#[test]
fn issue18_row6_a_second_prepare_to_one_out_fails_even_with_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("corpus");
    let raw = raw_input();
    let args = |force: bool| {
        let mut v = vec!["prepare".to_string(), s(&raw).into(), "--out".into()];
        v.push(s(&out).into());
        if force {
            v.push("--force".into());
        }
        v
    };
    let mut first = spawn(&args(false));
    wait_for_lock(&tmp.path().join(".corpus.mixatlas.lock"), &mut first);
    let err = fails(&str_args(&args(true)));
    assert_names_holder(&err, &out, &first, "prepare");
    finish(first);
    ok(&["inspect", s(&out), "--verify"]);
    // Once the first has finished, a second prepare without --force is refused.
    let err = fails(&str_args(&args(false)));
    assert!(err.contains("--force"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["corpus"], "no lock or partial files left behind");
}

#[test]
fn issue18_a_sigkilled_holders_lock_is_taken_over() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let lock = out.join(LOCK_FILE);
    let args = search_args(corpus, &out, &toy("0.3"));
    let mut first = spawn(&args);
    wait_for_lock(&lock, &mut first);
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let stale = std::fs::read_to_string(&lock).unwrap();
    assert!(
        stale.contains(&format!("\"pid\":{}", first.id())),
        "{stale}"
    );
    // The next run takes the lock over, finishes the search and removes the record.
    ok(&str_args(&args));
    assert_eq!(
        events(&out)
            .iter()
            .filter(|e| e["event"] == "finished")
            .count(),
        4
    );
    assert!(!lock.exists());
    // The same for a killed train: the rerun (fresh) takes its run directory over.
    let run = tmp.path().join("run");
    let mut killed = spawn(&train_args(corpus, &run, "1"));
    wait_for_lock(&run.join(LOCK_FILE), &mut killed);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let _ = std::fs::remove_dir_all(run.join("checkpoints"));
    ok(&str_args(&train_args(corpus, &run, "1")));
    assert!(run.join("metrics.json").is_file());
    assert!(!run.join(LOCK_FILE).exists());
}

#[test]
fn issue18_a_holder_whose_lock_is_taken_over_stops_and_a_remote_record_needs_force_unlock() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let lock = out.join(LOCK_FILE);
    let args = search_args(corpus, &out, &toy("0.5"));
    let mut first = bin()
        .args(&args)
        .env("MIXATLAS_LOCK_HEARTBEAT", "0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock(&lock, &mut first);
    // A writer on another node (a file system that shares no locks) replaces the record: the
    // holder notices at its next heartbeat and stops rather than write beside it.
    let remote = serde_json::json!({
        "pid": 4_194_304u32, "host": "node-elsewhere", "command": "mixatlas search --out search",
        "since": "2026-01-01T00:00:00Z",
    });
    std::fs::write(&lock, format!("{remote}\n")).unwrap();
    let t0 = Instant::now();
    let stopped = first.wait_with_output().unwrap();
    assert_eq!(
        stopped.status.code(),
        Some(3),
        "exit status of a fenced holder"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert!(
        err.contains("taken over by pid 4194304 on host node-elsewhere"),
        "{err}"
    );
    // Its record is fresh, so a run here refuses, naming it, until told --force-unlock.
    let err = fails(&str_args(&args));
    for want in ["node-elsewhere", "heartbeat", "--force-unlock"] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let mut forced = args.clone();
    forced.push("--force-unlock".into());
    ok(&str_args(&forced));
    assert_eq!(
        events(&out)
            .iter()
            .filter(|e| e["event"] == "finished")
            .count(),
        4
    );
    assert!(!lock.exists());
}
