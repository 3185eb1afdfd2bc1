//! The bounded fuzzing run of the test suite (issue 18): every kept input of every fuzz target
//! (the seed corpus `tests/fuzz/corpus/TARGET/` and the crashes found and fixed,
//! `tests/fuzz/regressions/TARGET/`) is replayed, then each target runs for a couple of
//! seconds of structure-aware mutations (`MIXATLAS_FUZZ_SECONDS`, default 2). The targets and
//! the mutation engine are those of the fuzz crate (`tests/fuzz`, run at length by
//! `scripts/fuzz.sh`), included by path. See docs/reliability.md, "Fuzzing".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mixatlas::rng::SplitMix64;

#[allow(dead_code)]
#[path = "fuzz/src/mutate.rs"]
mod mutate;
#[allow(dead_code)]
#[path = "fuzz/src/targets.rs"]
mod targets;

fn fuzz_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// Runs one input; on a panic or a broken invariant, keeps the input under the test temp
/// directory and fails naming it.
fn check(target: &str, input: &[u8], scratch: &targets::Scratch, what: &str) {
    let r = catch_unwind(AssertUnwindSafe(|| targets::run(target, input, scratch)));
    let problem = match r {
        Ok(Ok(())) => return,
        Ok(Err(m)) => m,
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into()),
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke");
    std::fs::create_dir_all(&dir).unwrap();
    let kept = dir.join(format!("{target}-{}", std::process::id()));
    std::fs::write(&kept, input).unwrap();
    panic!(
        "fuzz target {target} failed on {what} (input kept at {}; add it to tests/fuzz/regressions/{target}/ once fixed): {problem}",
        kept.display()
    );
}

#[test]
fn every_kept_fuzz_input_replays_cleanly() {
    let root = fuzz_root();
    let mut replayed = 0;
    for &target in targets::TARGETS {
        let scratch = targets::Scratch::new(&format!("smoke-replay-{target}"));
        for dir in ["corpus", "regressions"] {
            let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                check(
                    target,
                    &std::fs::read(&p).unwrap(),
                    &scratch,
                    &p.display().to_string(),
                );
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= targets::TARGETS.len(),
        "only {replayed} kept inputs found under {}",
        root.display()
    );
}

/// Mutates `target`'s kept inputs for the configured time.
fn mutate_for_a_while(target: &str) {
    let secs: f64 = std::env::var("MIXATLAS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let pool = targets::seeds(&fuzz_root(), target);
    let scratch = targets::Scratch::new(&format!("smoke-{target}"));
    let mut rng = SplitMix64::new(18);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut execs = 0u64;
    while Instant::now() < deadline {
        let base = &pool[(rng.next_u64() % pool.len() as u64) as usize];
        let input = mutate::mutate(target, base, &pool, &mut rng);
        check(target, &input, &scratch, &format!("mutation {execs}"));
        execs += 1;
    }
    eprintln!("fuzz smoke {target}: {execs} executions in {secs} s");
}

macro_rules! smoke {
    ($($name:ident => $target:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                mutate_for_a_while($target);
            }
        )*
        #[test]
        fn every_target_has_a_smoke_test() {
            let mut have = vec![$($target),*];
            have.sort();
            let mut want = targets::TARGETS.to_vec();
            want.sort();
            assert_eq!(have, want);
        }
    };
}

smoke! {
    fuzz_raw_jsonl => "raw",
    fuzz_manifest => "manifest",
    fuzz_megatron_idx => "megatron",
    fuzz_trials_jsonl => "trials_jsonl",
    fuzz_trials_csv => "trials_csv",
    fuzz_event_log => "events",
    fuzz_mixture_json => "mixture",
    fuzz_space_json => "space",
    fuzz_config_toml => "config",
    fuzz_steps_to_loss_log => "steps_log",
    fuzz_metrics_json => "metrics",
    fuzz_centroids_safetensors => "centroids",
    fuzz_model_config_json => "model_config",
}
