//! `mixatlas search`: the search loop as a command, configured by `search.toml`
//! (`[search]` and `[train]` tables) with field-by-field overrides from flags.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mixatlas::acquisition::design::DesignStart;
use mixatlas::config::Config;
use mixatlas::dist::SingleProcess;
use mixatlas::fsutil::lock::DirLock;
use mixatlas::search::config::{ExecutorKind, FidelityCost, Metric, SearchConfig, TrainerConfig};
use mixatlas::search::exec::mpi::{worker, Groups};
use mixatlas::search::fidelity::Fidelity;
use mixatlas::search::methods::Method;
use mixatlas::search::run::{run_search, run_search_on, SearchPlan, SearchProgress, SearchSummary};

use super::chameleon::ChameleonArgs;
use super::runtime::{lock_on_lead, Dist};

/// `mixatlas search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// TOML config with `[search]` (and `[train]` for the built-in trainer) tables.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Prepared corpus.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Search directory (rerunning the same command resumes it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Method.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Space: joint or factorized.
    #[arg(long)]
    pub space: Option<String>,
    /// First mixture of GP-UCB's initial design: centre (uniform), natural, or benchmarks (the
    /// held-out benchmarks' own mixture that `prepare` records).
    #[arg(long, value_enum)]
    pub start: Option<DesignStart>,
    /// Mixtures per round.
    #[arg(short, long)]
    pub q: Option<usize>,
    /// Total trials.
    #[arg(long)]
    pub max_trials: Option<usize>,
    /// Asynchronous scheduling: propose (at most q at a time) whenever a slot is free,
    /// conditioning on the running trials, instead of in synchronous rounds
    /// (`[search.budget] asynchronous = true`).
    #[arg(long)]
    pub asynchronous: bool,
    /// Per-trial time limit in seconds.
    #[arg(long)]
    pub trial_timeout: Option<f64>,
    /// Trials at once.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// External trainer command template ({trial_dir}, {mixture}, {blend}, {seed}): split
    /// into arguments with shell-word rules and run directly, without a shell.
    #[arg(long)]
    pub trainer_command: Option<String>,
    /// Run the trainer command through `sh -c` (pipes, redirections), every substituted
    /// value shell-quoted.
    #[arg(long)]
    pub trainer_shell: bool,
    /// Built-in trainer preset.
    #[arg(long)]
    pub preset: Option<String>,
    /// Built-in trainer steps per trial.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Per-benchmark score: neg-loss or accuracy.
    #[arg(long)]
    pub metric: Option<String>,
    /// Where on the held-out curve a trial is scored: final (the final evaluation), last:K
    /// (mean of the last K evaluation points) or auc (area under the curve / steps).
    #[arg(long)]
    pub objective_curve: Option<String>,
    /// Chameleon's settings (`--method chameleon`).
    #[command(flatten)]
    pub chameleon: ChameleonArgs,
    /// Executor: local (child processes) or mpi (under mpirun: rank 0 searches, rank groups
    /// train).
    #[arg(long)]
    pub executor: Option<String>,
    /// Ranks that train one trial together (MPI executor).
    #[arg(long)]
    pub ranks_per_trial: Option<usize>,
    /// Seconds a collective may take before the job is aborted (MPI executor).
    #[arg(long, default_value_t = 600.0)]
    pub collective_timeout: f64,
    /// Print only the summary.
    #[arg(long)]
    pub quiet: bool,
    /// Fidelities trials may run at, `<preset>:<steps>` comma-separated (e.g.
    /// `mini:200,small:200`); two or more make the search multi-fidelity GP-UCB.
    #[arg(long, value_delimiter = ',')]
    pub fidelities: Option<Vec<String>>,
    /// The fidelity recommendations are for (one of --fidelities).
    #[arg(long)]
    pub target_fidelity: Option<String>,
    /// Cost budget in units of one trial at the target fidelity (0 = none).
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// How a fidelity's cost is reckoned: model (parameters × steps) or measured (mean wall
    /// time of its finished trials).
    #[arg(long, value_enum)]
    pub fidelity_cost: Option<FidelityCost>,
    /// MF-GP-UCB's threshold factor ξ (default 0.2; larger sends trials to the target sooner).
    #[arg(long)]
    pub fidelity_xi: Option<f64>,
    /// Run the design's first point (the --start mixture) at the target fidelity.
    #[arg(long)]
    pub fidelity_target_start: bool,
    /// Take --out's lock even though its record names a writer that may still run (never
    /// while another process holds the lock; docs/reliability.md).
    #[arg(long)]
    pub force_unlock: bool,
}

/// Parses a `<preset>:<steps>` flag value, naming the flag in errors.
fn parse_fidelity(flag: &str, v: &str) -> Result<Fidelity> {
    v.parse::<Fidelity>()
        .with_context(|| format!("{flag} {v:?}"))
}

/// Applies the multi-fidelity flags.
fn resolve_fidelities(a: &SearchArgs, s: &mut SearchConfig) -> Result<()> {
    if let Some(list) = &a.fidelities {
        s.fidelities = list
            .iter()
            .filter(|v| !v.trim().is_empty())
            .map(|v| parse_fidelity("--fidelities", v))
            .collect::<Result<_>>()?;
    }
    if let Some(v) = &a.target_fidelity {
        s.target_fidelity = Some(parse_fidelity("--target-fidelity", v)?);
    }
    if let Some(v) = a.max_cost {
        s.budget.max_cost = v;
    }
    if let Some(v) = a.fidelity_cost {
        s.fidelity_cost = v;
    }
    if let Some(v) = a.fidelity_xi {
        s.fidelity_xi = Some(v);
    }
    if a.fidelity_target_start {
        s.fidelity_target_start = true;
    }
    Ok(())
}

/// Resolves flags over the config file.
pub fn resolve(a: &SearchArgs) -> Result<SearchPlan> {
    let cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let mut s = cfg.search;
    let mut t = cfg.train;
    if let Some(v) = &a.corpus {
        s.corpus = v.clone();
    }
    if let Some(v) = &a.out {
        s.out = v.clone();
    }
    if let Some(v) = a.method {
        s.method = v;
    }
    if let Some(v) = a.seed {
        s.seed = v;
    }
    if let Some(k) = &a.space {
        s.space = match k.as_str() {
            "joint" => mixatlas::acquisition::space::SpaceKind::Joint,
            "factorized" => mixatlas::acquisition::space::SpaceKind::Factorized,
            other => anyhow::bail!("--space {other:?}: expected joint or factorized"),
        };
    }
    if let Some(v) = a.start {
        s.start = v;
    }
    if let Some(v) = a.q {
        s.budget.q = v;
    }
    if let Some(v) = a.max_trials {
        s.budget.max_trials = v;
    }
    if a.asynchronous {
        s.budget.asynchronous = true;
    }
    if let Some(v) = a.trial_timeout {
        s.budget.trial_timeout_s = v;
    }
    if let Some(v) = &a.executor {
        s.executor.kind = v.clone();
    }
    if let Some(v) = a.ranks_per_trial {
        s.executor.ranks_per_trial = v;
    }
    if let Some(v) = a.parallel {
        s.executor.parallel = v;
    }
    if let Some(c) = &a.trainer_command {
        s.trainer = TrainerConfig::Command {
            command: c.clone(),
            shell: false,
        };
    }
    if let Some(p) = &a.preset {
        s.trainer = TrainerConfig::Builtin { preset: p.clone() };
    }
    if a.trainer_shell {
        match &mut s.trainer {
            TrainerConfig::Command { shell, .. } => *shell = true,
            TrainerConfig::Builtin { .. } => anyhow::bail!(
                "--trainer-shell needs a trainer command (--trainer-command, or [search.trainer] kind = \"command\"); the trainer is the built-in one"
            ),
        }
    }
    if let Some(v) = a.steps {
        t.steps = v;
        t.warmup_steps = t.warmup_steps.min(v / 10);
    }
    if let Some(m) = &a.metric {
        s.objective.metric = match m.as_str() {
            "neg-loss" => Metric::NegLoss,
            "accuracy" => Metric::Accuracy,
            other => anyhow::bail!("--metric {other:?}: expected neg-loss or accuracy"),
        };
    }
    if let Some(c) = &a.objective_curve {
        s.objective.curve = c
            .parse()
            .with_context(|| format!("--objective-curve {c:?}"))?;
    }
    s.chameleon = a.chameleon.apply(s.chameleon);
    resolve_fidelities(a, &mut s)?;
    let exe = std::env::current_exe().context("locating the mixatlas executable")?;
    Ok(SearchPlan {
        search: s,
        train: t,
        exe,
    })
}

/// Prints one progress line per event.
pub fn printer(quiet: bool) -> impl FnMut(SearchProgress) {
    let start = Instant::now();
    move |p| {
        if let SearchProgress::Warning { message } = &p {
            // Warnings are not progress: shown even with --quiet.
            eprintln!("warning: {message}");
            return;
        }
        if quiet {
            return;
        }
        let t = start.elapsed().as_secs_f64();
        match p {
            SearchProgress::Proposed { round, trials } => {
                eprintln!("[{t:6.1}s] round {round}: proposed {}", trials.join(" "))
            }
            SearchProgress::Started { trial, attempt } if attempt > 1 => {
                eprintln!("[{t:6.1}s] {trial}: attempt {attempt}")
            }
            SearchProgress::Started { .. } => {}
            SearchProgress::Finished {
                trial,
                objective,
                best,
                done,
                total,
            } => eprintln!(
                "[{t:6.1}s] {trial} finished: objective {}  best {}  ({done}/{total})",
                objective.map_or("—".into(), |o| format!("{o:.4}")),
                best.map_or("—".into(), |o| format!("{o:.4}")),
            ),
            SearchProgress::Failed { trial, reason } => {
                eprintln!("[{t:6.1}s] {trial} failed: {reason}")
            }
            SearchProgress::Warning { .. } | SearchProgress::Timing(_) => {}
        }
    }
}

/// `search`.
pub fn run(a: SearchArgs) -> Result<()> {
    let plan = resolve(&a)?;
    if matches!(plan.search.executor.parse_kind(), Ok(ExecutorKind::Mpi)) {
        mixatlas::train::tune_allocator();
        let mut dist = Dist::init(a.collective_timeout)?;
        let _lock = lock_on_lead(dist.world.as_ref(), &plan.search.out, a.force_unlock)?;
        let world = std::mem::replace(&mut dist.world, Box::new(SingleProcess));
        let groups = Groups::split(world, plan.search.executor.ranks_per_trial)?;
        if groups.world.rank() != 0 {
            return Ok(worker(&plan, &groups)?);
        }
        eprintln!(
            "MPI search: {} ranks, {} trial groups of {}{}",
            groups.world.size(),
            groups.count(),
            groups.ranks_per_trial,
            if groups.dedicated {
                " (rank 0 controls only)"
            } else {
                " (rank 0 also trains group 0)"
            }
        );
        let summary = run_search_on(&plan, Some(&groups), &mut printer(a.quiet))?;
        print_summary(&plan, &summary);
        return outcome(&plan, &summary);
    }
    let _lock = DirLock::acquire(&plan.search.out, a.force_unlock)?;
    let summary = run_search(&plan, &mut printer(a.quiet))?;
    print_summary(&plan, &summary);
    outcome(&plan, &summary)
}

/// The exit status of a search that ran: an error (exit 2) when no trial finished or no
/// recipe was written, saying why and where the trials' logs are; a rerun of the same
/// command retries the trials left out.
fn outcome(plan: &SearchPlan, s: &SearchSummary) -> Result<()> {
    let out = plan.search.out.display();
    let why = match s.abandoned.first() {
        Some((id, reason)) => format!(
            "{} trial(s) left out, e.g. {id}: {reason}",
            s.abandoned.len()
        ),
        None => "no trial was run".into(),
    };
    let logs = format!(
        "each attempt's log is {out}/trials/<trial>/a<attempt>/trial.log and the record \
         {out}/trials.jsonl; fix the cause and rerun the same command to retry the trials \
         left out"
    );
    if s.finished == 0 {
        anyhow::bail!("search: no trial finished ({why}); {logs}");
    }
    if s.recipe.is_none() {
        let at = match &plan.search.target_fidelity {
            Some(t) if plan.search.is_multi_fidelity() => format!(" at the target fidelity {t}"),
            _ => String::new(),
        };
        anyhow::bail!(
            "search: no recipe was written ({} trial(s) finished, none{at} to recommend); {logs}",
            s.finished
        );
    }
    Ok(())
}

fn print_summary(plan: &SearchPlan, s: &SearchSummary) {
    let best = s
        .best_so_far
        .last()
        .map_or("—".into(), |b| format!("{b:.4}"));
    match &plan.search.target_fidelity {
        Some(t) if plan.search.is_multi_fidelity() => println!(
            "{} (multi-fidelity): {} trials finished, cost {:.2} target trials, best objective at {t} {best}",
            plan.search.method.name(),
            s.finished,
            s.cost,
        ),
        _ => println!(
            "{}: {} trials finished, best objective {best}",
            plan.search.method.name(),
            s.finished,
        ),
    }
    for (id, reason) in &s.abandoned {
        println!("  left out {id}: {reason}");
    }
    if let Some(r) = &s.recipe {
        println!(
            "recipe ({}): {}",
            r.source.reason,
            plan.search.out.join("recipe.json").display()
        );
    }
}
