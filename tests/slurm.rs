//! The Slurm layer against a real cluster (`scripts/slurm-local.sh`; the tests that need it
//! run when `MIXATLAS_SLURM=1` and print why they skip otherwise): hostlists agree with
//! `scontrol show hostnames`, the rendered templates match their snapshots and pass
//! `sbatch --test-only`, and a training job preempted with USR2 checkpoints, requeues itself
//! and finishes with the losses of an uninterrupted run. Without Slurm, the USR2 handler is
//! tested on a `mixatlas train` child process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mixatlas::slurm::cmd;
use mixatlas::slurm::hostlist::{compress_hostlist, expand_hostlist, CASES, INVALID};
use mixatlas::slurm::sbatch::{render, JobCommon, SearchJob, TransferJob, TrialsArrayJob};
use mixatlas::slurm::TemplateKind;

use mixatlas::search::exec::slurm::MIN_INTERVAL;

use crate::cli::{bin, ok, s, tiny_corpus};
use crate::search::{events, search_args, toy};

/// Whether a live cluster is available; prints why not.
fn slurm_up(test: &str) -> bool {
    if std::env::var("MIXATLAS_SLURM").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipping {test}: MIXATLAS_SLURM is not 1 (start a cluster with scripts/slurm-local.sh, or run scripts/test.sh)"
    );
    false
}

/// Tests that submit jobs hold this while they run: the local cluster has 2 CPUs, and a job
/// queued behind another test's 200-task array would miss its own test's deadlines.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The cluster to this test alone (see [`CLUSTER`]); a panicked holder does not poison it.
fn cluster() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use crate::train::steps;

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The three jobs with fixed, realistic settings (the snapshots).
fn snapshot_jobs() -> Vec<(&'static str, String)> {
    let mut common = JobCommon::new("mixatlas-search", Path::new("/scratch/search/slurm"));
    common.partition = Some("cpu".into());
    common.time_min = Some(24 * 60);
    common.cpus_per_task = Some(2);
    common.mem = Some("8G".into());
    common.setup = vec!["module load openmpi".into()];
    let search = SearchJob {
        common: common.clone(),
        workdir: "/scratch/search".into(),
        command: "mixatlas search --config search.toml --executor slurm".into(),
        max_requeues: 3,
    };
    let mut trial_common = JobCommon::new("mixatlas-trials-r2", Path::new("/scratch/search/slurm"));
    trial_common.partition = Some("gpu".into());
    trial_common.time_min = Some(60);
    trial_common.cpus_per_task = Some(8);
    trial_common.mem = Some("64G".into());
    trial_common.grace_s = 90;
    trial_common
        .extra
        .insert("qos".into(), Some("preemptible".into()));
    let trials = TrialsArrayJob {
        common: trial_common,
        manifest: "/scratch/search/slurm/round-0002.trials".into(),
        tasks: 16,
        throttle: Some(4),
        gpus_per_task: Some(1),
        command: "mixatlas train --corpus /data/corpus --preset tiny --resume --quiet".into(),
    };
    let mut transfer_common =
        JobCommon::new("mixatlas-transfer", Path::new("/scratch/transfer/slurm"));
    transfer_common.partition = Some("gpu".into());
    transfer_common.time_min = Some(48 * 60);
    transfer_common.cpus_per_task = Some(12);
    transfer_common.mem = Some("0".into());
    transfer_common.grace_s = 300;
    transfer_common.extra.insert("exclusive".into(), None);
    let transfer = TransferJob {
        common: transfer_common,
        nodes: 4,
        tasks_per_node: 8,
        gpus_per_task: Some(1),
        mpi: "pmix".into(),
        command: "mixatlas train --corpus /data/corpus --mixture /scratch/search/recipe.json --preset qwen2-0.5b --device cuda --out /scratch/transfer/recipe --resume --quiet".into(),
    };
    vec![
        ("search", render(&search.spec().unwrap())),
        ("trials-array", render(&trials.spec().unwrap())),
        ("transfer", render(&transfer.spec().unwrap())),
    ]
}

#[test]
fn rendered_templates_match_their_snapshots() {
    for (name, text) in snapshot_jobs() {
        let path = repo()
            .join("tests/snapshots")
            .join(format!("{name}.sbatch"));
        if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
        assert_eq!(
            text,
            want,
            "{name}: rendering differs from {} (UPDATE_SNAPSHOTS=1 rewrites it after review)",
            path.display()
        );
        // Valid bash.
        let st = std::process::Command::new("bash")
            .args(["-n", s(&path)])
            .status()
            .unwrap();
        assert!(st.success(), "{name}: bash -n fails");
    }
    // The compiled-in templates are the files in slurm/.
    for kind in TemplateKind::ALL {
        let file = repo().join("slurm").join(kind.file_name());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), kind.source());
    }
}

#[test]
fn hostlists_agree_with_scontrol_show_hostnames() {
    for (list, want) in CASES {
        let ours = expand_hostlist(list).unwrap();
        let want: Vec<&str> = want.split_whitespace().collect();
        assert_eq!(ours, want, "{list}");
        assert_eq!(expand_hostlist(&compress_hostlist(&ours)).unwrap(), ours);
    }
    if !slurm_up("hostlists_agree_with_scontrol_show_hostnames") {
        return;
    }
    for (list, _) in CASES.iter().filter(|(l, _)| !l.is_empty()) {
        let theirs = cmd::show_hostnames(list).unwrap();
        assert_eq!(expand_hostlist(list).unwrap(), theirs, "{list}");
    }
    for list in INVALID {
        assert!(expand_hostlist(list).is_err(), "{list}");
        // scontrol prints "Invalid hostlist" and nothing on stdout (exit status 0).
        assert_eq!(
            cmd::show_hostnames(list).unwrap(),
            Vec::<String>::new(),
            "{list}"
        );
    }
}

#[test]
fn rendered_scripts_pass_sbatch_test_only() {
    if !slurm_up("rendered_scripts_pass_sbatch_test_only") {
        return;
    }
    // The snapshot jobs with the resources of the local one-node, CPU-only cluster.
    let tmp = tempfile::tempdir().unwrap();
    let mut common = JobCommon::new("mixatlas-test-only", tmp.path());
    common.time_min = Some(10);
    common.cpus_per_task = Some(1);
    common.mem = Some("100M".into());
    let jobs = [
        (
            "search",
            SearchJob {
                common: common.clone(),
                workdir: tmp.path().into(),
                command: "true".into(),
                max_requeues: 3,
            }
            .spec()
            .unwrap(),
        ),
        (
            "trials-array",
            TrialsArrayJob {
                common: common.clone(),
                manifest: tmp.path().join("trials"),
                tasks: 4,
                throttle: Some(2),
                gpus_per_task: None,
                command: "true".into(),
            }
            .spec()
            .unwrap(),
        ),
        (
            "transfer",
            TransferJob {
                common,
                nodes: 1,
                tasks_per_node: 2,
                gpus_per_task: None,
                mpi: "pmix".into(),
                command: "true".into(),
            }
            .spec()
            .unwrap(),
        ),
    ];
    for (name, spec) in jobs {
        let path = tmp.path().join(format!("{name}.sbatch"));
        std::fs::write(&path, render(&spec)).unwrap();
        cmd::sbatch_test_only(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn train_args(corpus: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--corpus",
        s(corpus),
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--seq-len",
        "64",
        "--eval-samples",
        "20",
        "--seed",
        "3",
        "--quiet",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

#[test]
fn usr2_stops_training_with_a_checkpoint_and_resume_matches() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let run = tmp.path().join("run");
    let common = ["--steps", "150"];
    let mut a = train_args(corpus, &common);
    a.extend(["--out".into(), s(&straight).into()]);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let mut a = train_args(corpus, &common);
    a.extend(["--out".into(), s(&run).into(), "--preemptible".into()]);
    let child = bin()
        .args(&a)
        .env_remove("SLURM_JOB_ID")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("3 logged steps", Duration::from_secs(120), || {
        steps(&run).len() >= 3
    });
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR2) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("preempted (SIGUSR2)"), "{err}");
    assert!(err.contains("not in a Slurm job"), "{err}");
    let stopped = steps(&run).len();
    assert!((3..150).contains(&stopped), "stopped after {stopped} steps");
    assert!(!run.join("metrics.json").exists());
    assert!(run.join(format!("checkpoints/step-{stopped:08}")).is_dir());

    let mut a = train_args(corpus, &common);
    a.extend(["--out".into(), s(&run).into(), "--resume".into()]);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(steps(&straight), steps(&run), "losses after resume differ");
}

/// Writes a uniform mixture over the corpus's cells.
fn uniform_mixture(corpus: &Path, path: &Path) {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap())
            .unwrap();
    let cells: Vec<&str> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let w: serde_json::Map<String, serde_json::Value> = cells
        .iter()
        .map(|c| (c.to_string(), serde_json::json!(1.0 / cells.len() as f64)))
        .collect();
    std::fs::write(path, serde_json::json!({ "weights": w }).to_string()).unwrap();
}

#[test]
fn a_preempted_array_trial_requeues_itself_and_resumes_exactly() {
    if !slurm_up("a_preempted_array_trial_requeues_itself_and_resumes_exactly") {
        return;
    }
    let _cluster = cluster();
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let trial = tmp.path().join("trials/t0000/a0");
    std::fs::create_dir_all(&trial).unwrap();
    uniform_mixture(corpus, &trial.join("mixture.json"));
    let common = ["--steps", "100"];
    let mut a = train_args(corpus, &common);
    a.extend([
        "--out".into(),
        s(&straight).into(),
        "--mixture".into(),
        s(&trial.join("mixture.json")).into(),
    ]);
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    // One trial as a one-task job array, through the trials template.
    let manifest = tmp.path().join("round.trials");
    std::fs::write(&manifest, format!("{}\n", trial.display())).unwrap();
    let logs = tmp.path().join("slurm");
    std::fs::create_dir_all(&logs).unwrap();
    let mut jc = JobCommon::new("mixatlas-preempt-test", &logs);
    jc.time_min = Some(10);
    jc.cpus_per_task = Some(1);
    jc.mem = Some("2G".into());
    let mut a = train_args(corpus, &common);
    a.push("--resume".into());
    let command = std::iter::once(env!("CARGO_BIN_EXE_mixatlas").to_string())
        .chain(a)
        .collect::<Vec<_>>()
        .join(" ");
    let job = TrialsArrayJob {
        common: jc,
        manifest,
        tasks: 1,
        throttle: None,
        gpus_per_task: None,
        command,
    };
    let script = tmp.path().join("trials.sbatch");
    std::fs::write(&script, render(&job.spec().unwrap())).unwrap();
    let id = cmd::sbatch(&script, &[]).unwrap();
    let task = format!("{id}_0");
    let report = || {
        let log = std::fs::read_to_string(trial.join("trial.log")).unwrap_or_default();
        let out = std::fs::read_to_string(logs.join(format!("{id}_0.out"))).unwrap_or_default();
        let err = std::fs::read_to_string(logs.join(format!("{id}_0.err"))).unwrap_or_default();
        format!("trial.log:\n{log}\nbatch out:\n{out}\nbatch err:\n{err}")
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the trial to log 3 steps", Duration::from_secs(180), || {
            steps(&trial).len() >= 3
        });
        // What --signal=B:USR2@GRACE does at the time limit, now.
        cmd::scancel(&[&task], Some("USR2"), true).unwrap();
        wait_for(
            "the requeued trial to finish",
            Duration::from_secs(300),
            || trial.join("metrics.json").exists(),
        );
        wait_for("the job to complete", Duration::from_secs(60), || {
            let st = cmd::squeue(&[&task]).unwrap();
            st.get(&task)
                .is_none_or(|s| *s == mixatlas::slurm::JobState::Completed)
        });
    }));
    if result.is_err() {
        let _ = cmd::scancel(&[&id], None, false);
        panic!("{}", report());
    }
    let r = report();
    assert!(r.contains("preempted (SIGUSR2)"), "{r}");
    assert!(r.contains("requeued job"), "{r}");
    assert!(r.contains("restart 1):"), "no second run of the task:\n{r}");
    let job = cmd::show_job(&task).ok();
    if let Some(j) = job {
        // `Restarts=` (Slurm 22.05) or `RestartCnt=` (older).
        let restarts = j.get("Restarts").or_else(|| j.get("RestartCnt"));
        assert_eq!(restarts.map(String::as_str), Some("1"), "{j:?}");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(trial.join("metrics.json")).unwrap())
            .unwrap();
    assert!(metrics["resumed_from"].as_u64().unwrap() > 0, "{metrics}");
    assert_eq!(
        steps(&straight),
        steps(&trial),
        "losses of the preempted and requeued trial differ from an uninterrupted run\n{r}"
    );
}

#[test]
fn the_transfer_template_starts_mpi_ranks_through_srun_pmix() {
    if !slurm_up("the_transfer_template_starts_mpi_ranks_through_srun_pmix") {
        return;
    }
    let _cluster = cluster();
    if !cfg!(feature = "mpi") {
        eprintln!("skipping: built without the mpi feature");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut jc = JobCommon::new("mixatlas-transfer-test", tmp.path());
    jc.time_min = Some(5);
    jc.cpus_per_task = Some(1);
    jc.mem = Some("500M".into());
    let job = TransferJob {
        common: jc,
        nodes: 1,
        tasks_per_node: 2,
        gpus_per_task: None,
        mpi: "pmix".into(),
        command: format!("{} bench collectives", env!("CARGO_BIN_EXE_mixatlas")),
    };
    let script = tmp.path().join("transfer.sbatch");
    std::fs::write(&script, render(&job.spec().unwrap())).unwrap();
    let id = cmd::sbatch(&script, &[]).unwrap();
    let out = tmp.path().join(format!("{id}.out"));
    let done = || {
        cmd::squeue(&[&id])
            .unwrap()
            .get(&id)
            .is_none_or(|s| s.is_terminal())
    };
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the transfer job", Duration::from_secs(120), done)
    }));
    let text = std::fs::read_to_string(&out).unwrap_or_default()
        + &std::fs::read_to_string(tmp.path().join(format!("{id}.err"))).unwrap_or_default();
    if finished.is_err() {
        let _ = cmd::scancel(&[&id], None, false);
        panic!("job {id} did not finish:\n{text}");
    }
    let state = cmd::squeue(&[&id]).unwrap().get(&id).cloned();
    assert!(
        state.as_ref().is_none_or(|s| s.is_success()),
        "{state:?}\n{text}"
    );
    assert!(text.contains("\"ranks\":2"), "{text}");
}

/// The scheduler commands a controller calls, as a wrapper directory logs them: each line of
/// `calls.log` is `SECONDS.NANOS NAME`.
struct CallLog {
    dir: PathBuf,
    log: PathBuf,
}

impl CallLog {
    /// Writes `squeue`, `sacct` and `sbatch` wrappers into `root/bin` that log each call and
    /// exec the real command (found on the current PATH). `squeue_body` replaces the exec of
    /// the real `squeue` when given (fault injection: `$REAL` is the real command, `$N` the
    /// number of this squeue call, from 1).
    fn new(root: &Path, squeue_body: Option<&str>) -> Self {
        let dir = root.join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let log = root.join("calls.log");
        for name in ["squeue", "sacct", "sbatch"] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .unwrap();
            let real = String::from_utf8(out.stdout).unwrap().trim().to_string();
            assert!(!real.is_empty(), "{name} is not on PATH");
            let body = match (name, squeue_body) {
                ("squeue", Some(b)) => b.to_string(),
                _ => "exec \"$REAL\" \"$@\"".to_string(),
            };
            let script = format!(
                "#!/bin/bash\nREAL={real}\necho \"$(date +%s.%N) {name}\" >>{log}\nN=$(grep -c ' {name}$' {log})\n{body}\n",
                log = log.display()
            );
            let path = dir.join(name);
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { dir, log }
    }

    /// PATH with the wrappers first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Every call: (seconds since the epoch, command name), in order.
    fn calls(&self) -> Vec<(f64, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (t, name) = l.split_once(' ').unwrap();
                (t.parse().unwrap(), name.to_string())
            })
            .collect()
    }

    fn count(&self, name: &str) -> usize {
        self.calls().iter().filter(|(_, n)| n == name).count()
    }

    /// The scheduler queries (`squeue` and `sacct`) in call order, checked against the poll
    /// schedule: no two closer than the executor's shortest interval (less 0.1 s for the
    /// wrappers' own start-up), i.e. at most one query per poll interval.
    fn queries_one_per_interval(&self) -> Vec<f64> {
        let q: Vec<f64> = self
            .calls()
            .into_iter()
            .filter(|(_, n)| n == "squeue" || n == "sacct")
            .map(|(t, _)| t)
            .collect();
        let min = MIN_INTERVAL.as_secs_f64() - 0.1;
        for (i, w) in q.windows(2).enumerate() {
            assert!(
                w[1] - w[0] >= min,
                "queries {i} and {} only {:.3} s apart (shortest interval {min} s): {:?}",
                i + 1,
                w[1] - w[0],
                self.calls()
            );
        }
        q
    }
}

/// Children of process `pid` now (from `/proc/*/stat`).
fn children_of(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|st| {
                    // "PID (COMM) STATE PPID …": COMM may hold spaces and parentheses.
                    let rest = &st[st.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .count()
}

/// What a controller run measured.
struct Controller {
    success: bool,
    stderr: String,
    /// Peak resident set size in KiB (`getrusage` of the reaped child: `ru_maxrss`).
    max_rss_kib: i64,
    /// Most child processes seen at once (sampled).
    max_children: usize,
    wall_s: f64,
}

/// Runs `mixatlas ARGS` with `path` as PATH to the end, sampling its children; reaps it with
/// `wait4` for its peak RSS. Cancels the arrays it submitted if it runs past `limit`.
#[allow(clippy::zombie_processes)] // reaped by `wait4` (std's `wait` gives no rusage)
fn run_controller(args: &[&str], path: &str, stderr: &Path, limit: Duration) -> Controller {
    let t0 = Instant::now();
    let child = bin()
        .args(args)
        .env("PATH", path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut max_children = 0;
    loop {
        let mut status = 0;
        // SAFETY: reaping our own child; `ru` is a plain C struct the call fills.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut ru) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid as i32 {
            return Controller {
                success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                stderr: std::fs::read_to_string(stderr).unwrap_or_default(),
                max_rss_kib: ru.ru_maxrss,
                max_children,
                wall_s: t0.elapsed().as_secs_f64(),
            };
        }
        max_children = max_children.max(children_of(pid));
        if t0.elapsed() > limit {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = std::process::Command::new("scancel")
                .args(["--me", "--name", "mixatlas-trials"])
                .status();
            panic!(
                "the search ran past {limit:?}:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 19: a round of 200 trials is one job array; the controller polls it with at most
/// one `squeue`/`sacct` call per poll interval (two `squeue` calls failing on the way, as a
/// busy slurmctld's would, are retried, not fatal), keeps no process per trial, and records
/// every task's result exactly once. Prints the figures (calls, intervals, peak RSS, wall).
#[test]
fn issue19_a_200_task_array_is_polled_with_one_query_per_interval() {
    if !slurm_up("issue19_a_200_task_array_is_polled_with_one_query_per_interval") {
        return;
    }
    let _cluster = cluster();
    const N: usize = 200;
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    // squeue calls 2 and 3 fail as a busy slurmctld's do.
    let calls = CallLog::new(
        tmp.path(),
        Some(
            "if [ \"$N\" = 2 ] || [ \"$N\" = 3 ]; then\n  echo 'squeue: error: slurm_load_jobs error: Socket timed out on send/recv operation' >&2\n  exit 1\nfi\nexec \"$REAL\" \"$@\"",
        ),
    );
    let out = tmp.path().join("search");
    let trainer = toy("");
    let n = N.to_string();
    let args = search_args(
        s(corpus),
        s(&out),
        &trainer,
        &[
            "--method",
            "random",
            "-q",
            &n,
            "--max-trials",
            &n,
            "--executor",
            "slurm",
        ],
    );
    let c = run_controller(
        &args,
        &calls.path(),
        &tmp.path().join("controller.err"),
        Duration::from_secs(900),
    );
    assert!(c.success, "the search failed:\n{}", c.stderr);

    // One sbatch for the round's array, nothing per trial.
    assert_eq!(calls.count("sbatch"), 1, "{:?}", calls.calls());
    let queries = calls.queries_one_per_interval();
    assert!(
        calls.count("squeue") > 3,
        "the failed squeue calls were retried"
    );
    // Every task stayed visible to squeue (MinJobAge) with metrics: sacct was never needed.
    assert_eq!(calls.count("sacct"), 0);
    assert!(
        c.max_children <= 1,
        "{} child processes at once",
        c.max_children
    );

    let ev = events(&out);
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        ev.iter().filter(|e| e["event"] == kind).collect()
    };
    let finished = of("finished");
    assert_eq!(finished.len(), N, "one finished line per trial");
    let ids: std::collections::BTreeSet<&str> = finished
        .iter()
        .map(|e| e["trial"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), N, "every trial finished exactly once");
    assert!(of("failed").is_empty(), "{:?}", of("failed"));
    let running = of("running");
    assert_eq!(running.len(), N);
    let arrays: std::collections::BTreeSet<&str> = running
        .iter()
        .map(|e| {
            let job = e["job"].as_str().unwrap();
            job.strip_prefix("slurm:")
                .unwrap()
                .split('_')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(arrays.len(), 1, "one array for the round: {arrays:?}");

    let sbatch_at = calls.calls().iter().find(|(_, n)| n == "sbatch").unwrap().0;
    let span = queries.last().unwrap() - sbatch_at;
    eprintln!(
        "issue19 figures: {N} tasks, 1 sbatch, {} squeue + {} sacct calls (2 squeue failures injected) = {} poll intervals over {span:.1} s after sbatch (one query each); controller peak RSS {} KiB ({:.1} MiB), at most {} child process(es) at once; wall {:.1} s",
        calls.count("squeue"),
        calls.count("sacct"),
        queries.len(),
        c.max_rss_kib,
        c.max_rss_kib as f64 / 1024.0,
        c.max_children,
        c.wall_s,
    );
}

/// Issue 19: tasks that leave `squeue` (here a wrapper hides ended tasks, as `MinJobAge`
/// expiry would) are concluded from their trial directories; one whose directory has no
/// metrics is asked of `sacct` in an interval of its own; a cluster without accounting
/// (`sacct`: "accounting storage is disabled") concludes it failed from the directory, never
/// asks `sacct` again, and the retry finishes.
#[test]
fn issue19_tasks_squeue_forgot_are_settled_by_one_sacct_call_or_their_directory() {
    if !slurm_up("issue19_tasks_squeue_forgot_are_settled_by_one_sacct_call_or_their_directory") {
        return;
    }
    let _cluster = cluster();
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let calls = CallLog::new(
        tmp.path(),
        Some("set -o pipefail\n\"$REAL\" \"$@\" | { grep -v -E ' (COMPLETED|FAILED|CANCELLED|TIMEOUT)$' || true; }"),
    );
    let out = tmp.path().join("search");
    // t0001's first attempt fails without metrics.
    let trainer = format!(
        "case \"$MIXATLAS_TRIAL_DIR\" in */t0001/a1) exit 3;; esac; {}",
        toy("")
    );
    let args = search_args(
        s(corpus),
        s(&out),
        &trainer,
        &[
            "--method",
            "random",
            "-q",
            "4",
            "--max-trials",
            "4",
            "--executor",
            "slurm",
            "--trainer-shell",
        ],
    );
    let c = run_controller(
        &args,
        &calls.path(),
        &tmp.path().join("controller.err"),
        Duration::from_secs(300),
    );
    assert!(c.success, "the search failed:\n{}", c.stderr);
    let accounting = std::process::Command::new("sacct")
        .args(["-n", "-j", "1"])
        .output()
        .unwrap();
    let disabled = String::from_utf8_lossy(&accounting.stderr).contains("disabled");
    if disabled {
        assert_eq!(calls.count("sacct"), 1, "{:?}", calls.calls());
    } else {
        assert!(calls.count("sacct") >= 1, "{:?}", calls.calls());
    }
    calls.queries_one_per_interval();
    // The round's array, then the retry's.
    assert_eq!(calls.count("sbatch"), 2, "{:?}", calls.calls());
    let ev = events(&out);
    let count = |kind: &str, id: &str| {
        ev.iter()
            .filter(|e| e["event"] == kind && e["trial"] == id)
            .count()
    };
    for id in ["t0000", "t0001", "t0002", "t0003"] {
        assert_eq!(count("finished", id), 1, "{id}: {ev:?}");
    }
    assert_eq!(count("failed", "t0001"), 1, "{ev:?}");
    let failed = ev.iter().find(|e| e["event"] == "failed").unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("Slurm job"),
        "{failed}"
    );
}
