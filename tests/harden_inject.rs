//! Issue 18, rows 1–3: no shell injection. A trainer command's placeholders are filled one
//! argument at a time and run without a shell (a `$(touch …)` in a path runs nothing, a space
//! splits nothing); `--trainer-shell` quotes every value it substitutes; an unsplittable
//! template is a config error naming the key; `mixatlas sbatch` quotes every value it writes
//! into a script and refuses values that would break out of an `#SBATCH` line. Each test
//! plants a canary command and asserts that its file was never created.

use std::path::{Path, PathBuf};
use std::process::Command;

use mixatlas::search::command::shell_line;
use mixatlas::search::exec::slurm::slurm_values;

use crate::cli::{bin, fails, ok, s, tiny_corpus};

/// The toy trainer (tests/toy_trainer.py) as a template prefix, its path quoted.
fn toy() -> String {
    format!(
        "python3 '{}/tests/toy_trainer.py'",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A directory name that runs `touch CANARY` (twice over) if a shell ever reads it.
fn hostile(tmp: &Path) -> (PathBuf, PathBuf) {
    let canary = tmp.join("CANARY");
    let name = format!("o $(touch {c});`touch {c}`'\"x", c = canary.display());
    (tmp.join(name), canary)
}

/// A two-trial search with `cmd` as the trainer, plus `extra` flags.
fn search(out: &Path, cmd: &str, extra: &[&str]) -> String {
    search_on(&tiny_corpus().2, out, cmd, extra)
}

/// [`search`] on `corpus`.
fn search_on(corpus: &Path, out: &Path, cmd: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "search",
        "--corpus",
        s(corpus),
        "--out",
        s(out),
        "--trainer-command",
        cmd,
        "-q",
        "2",
        "--max-trials",
        "2",
        "--quiet",
    ];
    a.extend_from_slice(extra);
    ok(&a)
}

/// What the trainer of trial `t0000`'s first attempt received, the attempt directory and
/// its blend.
fn received(out: &Path) -> (Vec<String>, String, String) {
    let dir = std::fs::canonicalize(out.join("trials/t0000/a1")).unwrap();
    let argv: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("argv.json")).expect("the trainer ran in its directory"),
    )
    .unwrap();
    let blend = std::fs::read_to_string(dir.join("blend.txt")).unwrap();
    (
        argv,
        dir.display().to_string(),
        blend.trim_end().to_string(),
    )
}

fn finished(out: &Path) -> usize {
    crate::search::events(out)
        .iter()
        .filter(|e| e["event"] == "finished")
        .count()
}

#[test]
fn issue18_row1_placeholder_values_never_reach_a_shell() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, canary) = hostile(tmp.path());
    // The corpus too (so every `{blend}` path holds the payload, as a hostile label would;
    // labels themselves are refused at `prepare`).
    let (corpus_dir, _) = hostile(&tmp.path().join("c"));
    std::fs::create_dir_all(&corpus_dir).unwrap();
    let corpus = corpus_dir.join("corpus");
    let cp = Command::new("cp")
        .arg("-a")
        .args([&tiny_corpus().2, &corpus])
        .status()
        .unwrap();
    assert!(cp.success(), "copying the corpus");
    let cmd = format!(
        "{} --record-argv --out {{trial_dir}} --mixture={{mixture}} --blend={{blend}} {{blend}}",
        toy()
    );
    search_on(&corpus, &out, &cmd, &[]);
    assert!(
        !canary.exists() && !tmp.path().join("c/CANARY").exists(),
        "a command in the search directory's or the corpus's name ran"
    );
    assert_eq!(finished(&out), 2);
    let (mut argv, dir, blend) = received(&out);
    let extra = argv.split_off(5);
    assert_eq!(
        argv,
        [
            "--record-argv".to_string(),
            "--out".into(),
            dir.clone(),
            format!("--mixture={dir}/mixture.json"),
            format!("--blend={blend}"),
        ],
        "every placeholder is exactly one argument (or part of one)"
    );
    // `{blend}` as a whole word is Megatron's `--data-path W1 P1 …`: one argument each
    // (a path with spaces stays one argument).
    assert_eq!(extra.join(" "), blend);
    assert!(extra.len() >= 4 && extra.len() % 2 == 0, "{extra:?}");
    for pair in extra.chunks(2) {
        assert!(pair[0].parse::<f64>().is_ok(), "{pair:?}");
        assert!(pair[1].starts_with(s(&corpus)), "{pair:?}");
    }
}

#[test]
fn issue18_row2_an_out_dir_with_a_space_is_one_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sp ace");
    search(
        &out,
        &format!(
            "{} --record-argv --out {{trial_dir}} --mixture {{mixture}}",
            toy()
        ),
        &[],
    );
    assert_eq!(finished(&out), 2);
    let (argv, dir, _) = received(&out);
    assert!(dir.contains("sp ace/trials/t0000/a1"), "{dir}");
    assert_eq!(argv[1..3], ["--out".to_string(), dir]);
}

#[test]
fn issue18_trainer_shell_quotes_every_substituted_value() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, canary) = hostile(tmp.path());
    // A pipe and a redirection need the shell; the values stay single words inside it.
    let cmd = format!(
        "printf '%s\\n' {{trial_dir}} | cat > {{trial_dir}}/echo.txt && {} --record-argv --out {{trial_dir}} --mixture {{mixture}}",
        toy()
    );
    search(&out, &cmd, &["--trainer-shell"]);
    assert!(!canary.exists(), "a command in a quoted value ran");
    assert_eq!(finished(&out), 2);
    let (argv, dir, _) = received(&out);
    assert_eq!(argv[1..3], ["--out".to_string(), dir.clone()]);
    let echoed = std::fs::read_to_string(Path::new(&dir).join("echo.txt")).unwrap();
    assert_eq!(echoed, format!("{dir}\n"));
    // The same template without --trainer-shell is refused before anything runs.
    let (_, _, corpus, _) = tiny_corpus();
    let other = tmp.path().join("no-shell");
    let e = fails(&[
        "search",
        "--corpus",
        s(corpus),
        "--out",
        s(&other),
        "--trainer-command",
        &cmd,
    ]);
    assert!(
        e.contains("--trainer-command") && e.contains("--trainer-shell"),
        "{e}"
    );
    assert!(!other.exists(), "nothing written for a refused command");
    // And --trainer-shell needs a command.
    let e = fails(&["search", "--out", s(&other), "--trainer-shell"]);
    assert!(e.contains("--trainer-shell needs a trainer command"), "{e}");
}

#[test]
fn issue18_an_unsplittable_trainer_command_is_a_config_error_naming_the_key() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("search");
    let e = fails(&[
        "search",
        "--corpus",
        s(corpus),
        "--out",
        s(&out),
        "--trainer-command",
        "python3 'train.py --out {trial_dir}",
    ]);
    assert!(
        e.contains("[search.trainer] command (--trainer-command)") && e.contains("quote"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written for a refused command");
    // The same from a config file; `shell = true` there is --trainer-shell.
    let cfg = tmp.path().join("search.toml");
    let write = |command: &str, shell: bool| {
        std::fs::write(
            &cfg,
            format!(
                "[search.trainer]\nkind = \"command\"\ncommand = {command:?}\nshell = {shell}\n"
            ),
        )
        .unwrap()
    };
    write("python3 \"unclosed", false);
    let e = fails(&[
        "search",
        "--config",
        s(&cfg),
        "--corpus",
        s(corpus),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("[search.trainer] command"), "{e}");
    assert!(!out.exists());
    write(
        &format!("{} --record-argv > {{trial_dir}}/stdout.txt", toy()),
        true,
    );
    ok(&[
        "search",
        "--config",
        s(&cfg),
        "--corpus",
        s(corpus),
        "--out",
        s(&out),
        "-q",
        "1",
        "--max-trials",
        "1",
        "--quiet",
    ]);
    assert_eq!(finished(&out), 1);
    let resolved = std::fs::read_to_string(out.join("search.json")).unwrap();
    assert!(resolved.contains("\"shell\": true"), "{resolved}");
}

/// Runs `mixatlas sbatch ARGS` in `dir`; the output.
fn sbatch_in(dir: &Path, args: &[&str]) -> std::process::Output {
    bin()
        .arg("sbatch")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn issue18_row3_sbatch_quotes_the_config_path() {
    let tmp = tempfile::tempdir().unwrap();
    // The issue's own command: the path is one quoted word in the script.
    let out = sbatch_in(tmp.path(), &["search", "--config", "a b;$(id)/s.toml"]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    let line = script
        .lines()
        .find(|l| l.contains(" search --config "))
        .expect("the controller command line");
    assert!(
        line.ends_with(" search --config 'a b;$(id)/s.toml' &"),
        "{line}"
    );
    // A canary in the path: the whole script runs (the controller fails on the missing
    // config, naming the path it got), the canary is not created.
    let canary = tmp.path().join("CANARY");
    let cfg = format!("a b;$(touch {c});`touch {c}`/s.toml", c = canary.display());
    let out = sbatch_in(tmp.path(), &["search", "--config", &cfg]);
    assert!(out.status.success());
    let path = tmp.path().join("job.sbatch");
    std::fs::write(&path, &out.stdout).unwrap();
    let st = Command::new("bash")
        .args(["-n", s(&path)])
        .status()
        .unwrap();
    assert!(st.success(), "bash -n");
    let line = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.contains(" search --config "))
        .unwrap()
        .trim_end_matches(" &")
        .to_string();
    let words = Command::new("bash")
        .args(["-c", &format!("set -- {line}; printf '%s\\0' \"$@\"")])
        .output()
        .unwrap();
    let words: Vec<String> = String::from_utf8(words.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(String::from)
        .collect();
    assert_eq!(
        words,
        [
            env!("CARGO_BIN_EXE_mixatlas").to_string(),
            "search".into(),
            "--config".into(),
            cfg.clone()
        ]
    );
    let run = Command::new("bash")
        .arg(&path)
        .current_dir(tmp.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        err.contains(&cfg),
        "the controller got the whole path: {err}"
    );
    assert!(!canary.exists(), "a command in the config path ran");
}

#[test]
fn issue18_row3_sbatch_header_values_stay_on_their_line() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("CANARY");
    let evil = format!("x\ntouch {}", canary.display());
    for args in [
        vec!["search", "--partition", &evil],
        vec!["search", "--log-dir", &evil],
    ] {
        let out = sbatch_in(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot be written in an #SBATCH line") && err.contains("touch"),
            "{err}"
        );
    }
    let extra = format!("qos=x\ntouch {}", canary.display());
    let out = sbatch_in(tmp.path(), &["search", "--extra", &extra]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--qos"));
    let out = sbatch_in(tmp.path(), &["search", "--extra", "q os;id=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sbatch option name \"q os;id\""));
    // Spaces, quotes and '#' are quoted the way sbatch reads them.
    let out = sbatch_in(tmp.path(), &["search", "--extra", "comment=a b#c \"d\""]);
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("#SBATCH --comment=\"a b#c \\\"d\\\"\"\n"),
        "{script}"
    );
    assert!(!canary.exists());
}

/// The Slurm executor's trial line (values from the variables the array template exports):
/// run through bash with hostile values, each arrives as one argument and nothing runs.
#[test]
fn issue18_slurm_trial_lines_keep_each_value_one_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, canary) = hostile(tmp.path());
    let dir = dir.display().to_string();
    let values = slurm_values(7);
    let run = |line: &str| -> Vec<String> {
        let out = Command::new("bash")
            .args(["-c", line])
            .current_dir(tmp.path())
            .env("MIXATLAS_TRIAL_DIR", &dir)
            .env("MIXATLAS_MIXTURE", format!("{dir}/mixture.json"))
            .env("MIXATLAS_BLEND", "0.5 /c/* 0.5 /c/$(id)")
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(String::from)
            .collect()
    };
    let want = [
        format!("--out={dir}"),
        format!("{dir}/mixture.json"),
        "--b=0.5 /c/* 0.5 /c/$(id)".into(),
        "7".into(),
        "{preset}".into(),
        "0.5".into(),
        "/c/*".into(),
        "0.5".into(),
        "/c/$(id)".into(),
    ];
    let template = "printf '%s\\0' --out={trial_dir} {mixture} --b={blend} {seed} {preset} {blend}";
    assert_eq!(run(&shell_line(template, false, &values).unwrap()), want);
    let want_shell = [&want[..2], &want[3..]].concat();
    let template = "printf '%s\\0' --out={trial_dir} {mixture} {seed} {preset} {blend}";
    assert_eq!(
        run(&shell_line(template, true, &values).unwrap()),
        want_shell
    );
    assert!(!canary.exists());
}

/// A search started before `--trainer-shell` existed (its `search.json` has no `shell`) with
/// a template that needs a shell: a rerun without the flag is refused naming it, a rerun
/// with it resumes the search (the shell mode may change on resume, nothing else).
#[test]
fn issue18_a_search_from_before_trainer_shell_resumes_with_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("old");
    let cmd = format!(
        "{} --out {{trial_dir}} --mixture {{mixture}} > {{trial_dir}}/stdout.txt",
        toy()
    );
    let (_, _, corpus, _) = tiny_corpus();
    let run = |max: &str, extra: &[&str]| {
        let mut a = vec![
            "search",
            "--corpus",
            s(corpus),
            "--out",
            s(&out),
            "--trainer-command",
            &cmd,
            "-q",
            "1",
            "--max-trials",
            max,
            "--quiet",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let args = run("1", &["--trainer-shell"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(finished(&out), 1);
    // What an older version wrote: no `shell` key.
    let path = out.join("search.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["search"]["trainer"]["shell"], true);
    v["search"]["trainer"]
        .as_object_mut()
        .unwrap()
        .remove("shell");
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let args = run("2", &[]);
    let e = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("--trainer-shell"), "{e}");
    assert_eq!(finished(&out), 1, "nothing ran");
    let args = run("2", &["--trainer-shell"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(finished(&out), 2);
}
