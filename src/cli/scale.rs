//! `mixatlas bench scale`: what the search controller (rank 0) costs at the scale of a large
//! allocation, measured on this machine. The real search loop (`search::run`, its event log,
//! attempt directories, observations, proposer and resume) is driven by the simulated
//! executor (`search::exec::sim`): N slots, a discrete-event clock, log-normal durations,
//! scores from a known objective, a few failures. It prints rank 0's time per round split by
//! component, proposals per second, controller CPU time and peak RSS, the state's size, and
//! the time to reopen the final state as a rerun would; `scale.json` holds the same figures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mixatlas::acquisition::space::SearchSpace;
use mixatlas::acquisition::ucb::{GpUcb, GpUcbConfig};
use mixatlas::acquisition::{Observations, Proposal, ProposeError, Proposer};
use mixatlas::search::config::SearchConfig;
use mixatlas::search::exec::sim::{write_corpus, SimConfig, SimExecutor, SimObjective};
use mixatlas::search::methods::Method;
use mixatlas::search::run::{
    reopen_search, run_search_with, Hooks, RoundTimes, SearchPlan, SearchProgress,
};
use mixatlas::surrogate::GpConfig;

/// `mixatlas bench scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Simulated slots (trials running at once).
    #[arg(long, default_value_t = 1000)]
    pub slots: usize,
    /// Trials in the campaign.
    #[arg(long, default_value_t = 10_000)]
    pub trials: usize,
    /// Most trials per proposal round.
    #[arg(short, long, default_value_t = 64)]
    pub q: usize,
    /// Cells of the (synthetic) corpus: the space's dimension.
    #[arg(long, default_value_t = 50)]
    pub dim: usize,
    /// Search method.
    #[arg(long, value_enum, default_value = "gp-ucb")]
    pub method: Method,
    /// Synchronous rounds (the default search) instead of asynchronous scheduling.
    #[arg(long)]
    pub synchronous: bool,
    /// Directory for the corpus, the search state and `scale.json` (its `search/` is
    /// replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the search and of the simulation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Median trial duration in simulated seconds (log-normal, σ = --sigma).
    #[arg(long, default_value_t = 3600.0)]
    pub median_s: f64,
    /// σ of the log-normal durations.
    #[arg(long, default_value_t = 0.5)]
    pub sigma: f64,
    /// Probability that an attempt fails.
    #[arg(long, default_value_t = 0.02)]
    pub fail_rate: f64,
    /// Simulated polling interval in seconds (ends within it are seen by one poll).
    #[arg(long, default_value_t = 60.0)]
    pub poll_s: f64,
    /// GP-UCB: fit the GP on the last this many finished trials only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub gp_window: usize,
    /// GP-UCB: L-BFGS iterations of the hyperparameter fit (default: the search's).
    #[arg(long, default_value_t = GpConfig::default().max_iter)]
    pub gp_iters: usize,
    /// GP-UCB: random restarts of a cold fit (default: the search's).
    #[arg(long, default_value_t = GpConfig::default().restarts)]
    pub gp_restarts: usize,
    /// GP-UCB: candidates scored per batch (default: the search's).
    #[arg(long, default_value_t = GpUcbConfig::default().candidates)]
    pub candidates: usize,
    /// GP-UCB: gradient-ascent steps per start (default: the search's).
    #[arg(long, default_value_t = GpUcbConfig::default().ascent_steps)]
    pub ascent_steps: usize,
    /// Rewrite the recipe after every this many finished trials (default: as the search
    /// does, every q; 0 = never, to measure the proposals alone).
    #[arg(long)]
    pub recipe_every: Option<usize>,
    /// Only reopen the state an earlier run with the same flags left in `--out` and print
    /// the resume time (nothing is run).
    #[arg(long)]
    pub resume_only: bool,
    /// Print every this many rounds (0 = the first three, then every 4 % of the trials).
    #[arg(long, default_value_t = 0)]
    pub every: usize,
}

/// Rank 0's CPU time (user + system, seconds) and peak resident set (bytes) so far.
fn usage() -> (f64, u64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        ru.ru_maxrss as u64 * 1024,
    )
}

/// Bytes and files under `dir`.
fn du(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// GP-UCB given only the last `window` finished trials (subset of data): the bench's way to
/// bound the exact GP's O(n³) fit until the surrogate scales by itself.
struct Windowed {
    inner: GpUcb,
    window: usize,
}

impl Windowed {
    fn cut<'a>(&self, obs: &'a Observations) -> std::borrow::Cow<'a, Observations> {
        if self.window == 0 || obs.len() <= self.window {
            return std::borrow::Cow::Borrowed(obs);
        }
        let from = obs.len() - self.window;
        std::borrow::Cow::Owned(Observations {
            x: obs.x[from..].to_vec(),
            y: obs.y[from..].to_vec(),
        })
    }
}

impl Proposer for Windowed {
    fn name(&self) -> &str {
        "gp-ucb"
    }

    fn propose(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        let obs = self.cut(obs).into_owned();
        self.inner.propose(space, &obs, q, round)
    }

    fn propose_pending(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
        pending: &[Vec<f64>],
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        let obs = self.cut(obs).into_owned();
        self.inner.propose_pending(space, &obs, pending, q, round)
    }
}

/// Percentiles of `v` (p50, p90, p99, max).
fn percentiles(v: &[f64]) -> [f64; 4] {
    if v.is_empty() {
        return [0.0; 4];
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    [at(0.5), at(0.9), at(0.99), s[s.len() - 1]]
}

/// The bench's GP-UCB (cheap fit settings, the window) or, for other methods, `None` (the
/// configured method's own proposer).
fn proposer_for(a: &ScaleArgs) -> Option<Box<dyn Proposer>> {
    match a.method {
        Method::GpUcb => Some(Box::new(Windowed {
            inner: GpUcb::new(GpUcbConfig {
                gp: GpConfig {
                    restarts: a.gp_restarts,
                    max_iter: a.gp_iters,
                    seed: a.seed,
                    ..GpConfig::default()
                },
                candidates: a.candidates,
                ascent_steps: a.ascent_steps,
                ..GpUcbConfig::seeded(a.seed)
            }),
            window: a.gp_window,
        })),
        _ => None,
    }
}

/// What the run left for the report.
struct Finished<'a> {
    plan: &'a SearchPlan,
    mode: &'a str,
    dim: usize,
    summary: &'a mixatlas::search::run::SearchSummary,
    exec: &'a SimExecutor,
    wall: f64,
    cpu0: f64,
}

/// Prints the totals, reopens the final state twice (resume time) and writes `scale.json`.
fn report(a: &ScaleArgs, f: &Finished<'_>, rounds: &[(RoundTimes, f64, u64)]) -> Result<()> {
    let (plan, mode, summary, exec, wall, cpu0) =
        (f.plan, f.mode, f.summary, f.exec, f.wall, f.cpu0);
    let out = &a.out;
    let search_dir = &plan.search.out;
    let (cpu, rss) = usage();
    let cpu = cpu - cpu0;
    let st = exec.stats().clone();
    let rank0: Vec<f64> = rounds
        .iter()
        .map(|(t, ..)| t.controller_s() + t.exec_s)
        .collect();
    let propose: Vec<f64> = rounds.iter().map(|(t, ..)| t.propose_s).collect();
    let record: Vec<f64> = rounds.iter().map(|(t, ..)| t.record_s).collect();
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let proposals: usize = rounds.iter().map(|(t, ..)| t.proposed).sum();
    let log = search_dir.join(mixatlas::search::state::TRIALS_FILE);
    let log_bytes = std::fs::metadata(&log).map_or(0, |m| m.len());
    let (trial_bytes, trial_files) = du(&search_dir.join("trials"));
    // Resume: reopen the final state as a rerun would (twice: the second is warm).
    let resume = reopen_search(plan, &mut |_| {}).context("reopening the final state")?;
    let resume_warm = reopen_search(plan, &mut |_| {}).context("reopening the final state")?;
    let [p50, p90, p99, max] = percentiles(&rank0);
    let [pp50, _, _, pmax] = percentiles(&propose);
    let [r50, _, _, rmax] = percentiles(&record);
    println!();
    println!(
        "{} rounds, {} proposals, {} finished, {} failed attempts, {} abandoned; simulated \
         campaign {:.1} h on {} slots ({:.0} % busy)",
        rounds.len(),
        proposals,
        summary.finished,
        st.failed,
        summary.abandoned.len(),
        exec.now() / 3600.0,
        a.slots,
        100.0 * st.busy_s / (exec.now().max(1e-9) * a.slots as f64)
    );
    println!(
        "rank-0 time per round (s): p50 {p50:.4}  p90 {p90:.4}  p99 {p99:.4}  max {max:.4}  \
         (propose p50 {pp50:.4} max {pmax:.4}; record p50 {r50:.4} max {rmax:.4})"
    );
    println!(
        "rank-0 total {:.1} s wall = propose {:.1} + record {:.1} + executor (simulated) {:.1} \
         + recipe {:.1}; {:.0} proposals/s; CPU {:.1} s; peak RSS {:.1} MiB",
        wall,
        sum(&propose),
        sum(&record),
        rounds.iter().map(|(t, ..)| t.exec_s).sum::<f64>(),
        rounds.iter().map(|(t, ..)| t.recipe_s).sum::<f64>(),
        proposals as f64 / wall.max(1e-9),
        cpu,
        rss as f64 / (1 << 20) as f64
    );
    println!(
        "state: trials.jsonl {:.1} MiB; trials/ {:.1} MiB in {} files",
        log_bytes as f64 / (1 << 20) as f64,
        trial_bytes as f64 / (1 << 20) as f64,
        trial_files
    );
    for (name, r) in [("resume", &resume), ("resume (warm)", &resume_warm)] {
        println!(
            "{name}: {:.3} s for {} events / {} trials = setup {:.3} + replay {:.3} + repair \
             {:.3} + observations {:.3}",
            r.total_s(),
            r.events,
            r.trials,
            r.setup_s,
            r.replay_s,
            r.repair_s,
            r.observations_s
        );
    }
    let json = serde_json::json!({
        "slots": a.slots, "trials": a.trials, "q": a.q, "dim": f.dim,
        "method": a.method.name(), "mode": mode, "seed": a.seed,
        "gp": {"window": a.gp_window, "iters": a.gp_iters, "restarts": a.gp_restarts,
               "candidates": a.candidates, "ascent_steps": a.ascent_steps},
        "recipe_every": a.recipe_every,
        "rounds": rounds.len(), "proposals": proposals, "finished": summary.finished,
        "failed_attempts": st.failed, "abandoned": summary.abandoned.len(),
        "max_running": st.max_running, "oversubscribed": st.oversubscribed,
        "simulated_hours": exec.now() / 3600.0,
        "rank0_s": {"p50": p50, "p90": p90, "p99": p99, "max": max, "total": wall},
        "propose_s": {"total": sum(&propose), "p50": pp50, "max": pmax},
        "record_s": {"total": sum(&record), "p50": r50, "max": rmax},
        "proposals_per_s": proposals as f64 / wall.max(1e-9),
        "cpu_s": cpu, "peak_rss_bytes": rss,
        "state": {"trials_jsonl_bytes": log_bytes, "trials_dir_bytes": trial_bytes,
                  "trials_dir_files": trial_files},
        "resume": resume, "resume_warm": resume_warm,
        "per_round": rounds.iter().map(|(t, cpu, rss)| serde_json::json!({
            "round": t.round, "proposed": t.proposed, "finished": t.finished,
            "running": t.running, "propose_s": t.propose_s, "record_s": t.record_s,
            "exec_s": t.exec_s, "recipe_s": t.recipe_s, "cpu_s": cpu, "rss_bytes": rss,
        })).collect::<Vec<_>>(),
    });
    let path = out.join("scale.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The search the bench runs (and `--resume-only` reopens): the flags' method, seed, q,
/// trials, scheduling and slots on the corpus at `corpus`, state in `search_dir`.
fn plan_for(a: &ScaleArgs, corpus: &Path, search_dir: &Path) -> Result<SearchPlan> {
    let mut search = SearchConfig {
        corpus: corpus.to_path_buf(),
        out: search_dir.to_path_buf(),
        method: a.method,
        seed: a.seed,
        ..SearchConfig::default()
    };
    search.budget.q = a.q;
    search.budget.max_trials = a.trials;
    search.budget.asynchronous = !a.synchronous;
    search.executor.parallel = a.slots;
    Ok(SearchPlan {
        search,
        train: mixatlas::train::TrainConfig::default(),
        exe: std::env::current_exe().context("locating the mixatlas executable")?,
    })
}

/// `--resume-only`: reopens `search_dir` as a rerun of the same flags would, three times.
fn resume_only(a: &ScaleArgs, corpus: &Path, search_dir: &Path) -> Result<()> {
    let plan = plan_for(a, corpus, search_dir)?;
    for _ in 0..3 {
        let r = reopen_search(&plan, &mut |_| {}).context("reopening the state")?;
        println!(
            "resume: {:.3} s for {} events / {} trials = setup {:.3} + replay {:.3} + repair \
             {:.3} + observations {:.3}",
            r.total_s(),
            r.events,
            r.trials,
            r.setup_s,
            r.replay_s,
            r.repair_s,
            r.observations_s
        );
    }
    Ok(())
}

/// Runs the benchmark.
pub fn run(a: ScaleArgs) -> Result<()> {
    let out = a.out.clone();
    let corpus = out.join("corpus");
    let search_dir = out.join("search");
    if a.resume_only {
        return resume_only(&a, &corpus, &search_dir);
    }
    if search_dir.exists() {
        std::fs::remove_dir_all(&search_dir)
            .with_context(|| format!("clearing {}", search_dir.display()))?;
    }
    if corpus.exists() {
        std::fs::remove_dir_all(&corpus)
            .with_context(|| format!("clearing {}", corpus.display()))?;
    }
    let cells = write_corpus(&corpus, a.dim).context("writing the synthetic corpus")?;
    let plan = plan_for(&a, &corpus, &search_dir)?;
    let sim = SimConfig {
        slots: a.slots,
        median_s: a.median_s,
        sigma: a.sigma,
        fail_rate: a.fail_rate,
        poll_s: a.poll_s,
        seed: a.seed,
    };
    let objective = SimObjective::new(&cells, 2, 0.01, a.seed);
    let mut exec = SimExecutor::new(sim, objective);
    let proposer = proposer_for(&a);
    let mode = if a.synchronous {
        "synchronous"
    } else {
        "asynchronous"
    };
    println!(
        "bench scale: {} slots, {} trials, q = {}, d = {}, {}, {mode}, seed {}",
        a.slots,
        a.trials,
        a.q,
        cells.len(),
        a.method.name(),
        a.seed
    );
    if a.method == Method::GpUcb {
        println!(
            "  GP-UCB: window {}, fit {} iterations × {} restarts, {} candidates, {} ascent steps",
            if a.gp_window == 0 {
                "all".to_string()
            } else {
                a.gp_window.to_string()
            },
            a.gp_iters,
            1 + a.gp_restarts,
            a.candidates,
            a.ascent_steps
        );
    }
    // Print every `every`-th round, or (by default) the first three rounds and then each
    // time another 4 % of the trials have finished.
    let step = (a.trials / 25).max(1);
    let mut next_print = 0usize;
    println!(
        "{:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "round",
        "props",
        "done",
        "run",
        "rank0_s",
        "propose",
        "record",
        "exec",
        "recipe",
        "cpu_s",
        "rss_MiB"
    );
    let mut rounds: Vec<(RoundTimes, f64, u64)> = Vec::new();
    let started = Instant::now();
    let cpu0 = usage().0;
    let hooks = Hooks {
        proposer,
        recipe_every: a.recipe_every,
    };
    let summary = run_search_with(&plan, Box::new(&mut exec), hooks, &mut |p| {
        let SearchProgress::Timing(t) = p else {
            return;
        };
        let (cpu, rss) = usage();
        let rank0 = t.controller_s() + t.exec_s;
        let show = if a.every > 0 {
            rounds.len() % a.every == 0
        } else {
            rounds.len() < 3 || t.finished >= next_print
        };
        if show {
            if a.every == 0 && t.finished >= next_print {
                next_print = (t.finished / step + 1) * step;
            }
            println!(
                "{:>6} {:>6} {:>6} {:>6} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>8.1} {:>8.1}",
                t.round,
                t.proposed,
                t.finished,
                t.running,
                rank0,
                t.propose_s,
                t.record_s,
                t.exec_s,
                t.recipe_s,
                cpu - cpu0,
                rss as f64 / (1 << 20) as f64
            );
        }
        rounds.push((t, cpu - cpu0, rss));
    })
    .context("running the simulated search")?;
    let wall = started.elapsed().as_secs_f64();
    let ctx = Finished {
        plan: &plan,
        mode,
        dim: cells.len(),
        summary: &summary,
        exec: &exec,
        wall,
        cpu0,
    };
    report(&a, &ctx, &rounds)?;
    Ok(())
}
