//! The search loop (`mixatlas search`): propose a round of mixtures, run them as trials
//! through the trial protocol, learn from the results, repeat; write the recipe after every
//! round. All state lives in the search directory and survives `kill -9`: rerunning the same
//! command resumes (finished trials are never re-run, interrupted ones are re-run, failed ones
//! retried up to `retries` times and then left out with their reason).
//!
//! This file is the loop only: attempts are prepared and recorded by [`super::attempt`], run
//! by an [`Executor`] from [`super::exec`], scored by [`super::objective`], and the recipe is
//! chosen by [`super::recommend`].

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::attempt::{Attempts, Ledger};
use super::config::ExecutorKind;
use super::config::SearchConfig;
use super::error::SearchError;
use super::exec::local::LocalExecutor;
use super::exec::mpi::{stop_workers, Groups, MpiExecutor};
use super::exec::slurm::SlurmExecutor;
use super::exec::Executor;
use super::multifidelity::{at_target, trial_cost, MultiFidelity};
use super::objective::{check_finished, trial_point};
use super::recommend::{recipe, save_recipe, write_recipe};
use super::state::{Event, EventLog, SearchState, Status, TrialState};
use crate::acquisition::space::SearchSpace;
use crate::acquisition::{Proposal, Proposer};
use crate::data::corpus::Manifest;
use crate::data::mixture::Mixture;
use crate::fsutil::IoContext;

// Kept at their former paths (`search::run::…`) for callers outside `search`.
pub use super::objective::observations;
pub use super::plan::{
    RoundTimes, SearchPlan, SearchProgress, SearchSummary, GP_FILE, RECIPE_FILE, RESOLVED_FILE,
};

/// Runs (or resumes) the search of `plan`.
pub fn run_search(
    plan: &SearchPlan,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    run_search_on(plan, None, progress)
}

/// [`run_search`] as rank 0 of an MPI search (`groups`: see [`super::exec::mpi`]): trials run
/// in waves on the rank groups instead of as local child processes; the other ranks run
/// [`super::exec::mpi::worker`]. Rank 0 tells them to stop when it returns, also on error.
pub fn run_search_on(
    plan: &SearchPlan,
    groups: Option<&Groups>,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    let result = search_loop(plan, Exec::Configured(groups), None, progress);
    if let Some(g) = groups {
        let stop = stop_workers(g);
        if let (Ok(_), Err(e)) = (&result, stop) {
            return Err(SearchError::StopWorkers(e));
        }
    }
    result
}

/// [`run_search`] on `exec` instead of the executor the configuration names (the simulated
/// executor of `mixatlas bench scale`, tests), and with `proposer` instead of the configured
/// method's when one is given (e.g. GP-UCB with cheaper fit settings). Everything else is
/// the real search: the same state, records, resume and recipe.
pub fn run_search_with<'a>(
    plan: &'a SearchPlan,
    exec: Box<dyn Executor + 'a>,
    proposer: Option<Box<dyn Proposer>>,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    search_loop(plan, Exec::Given(exec), proposer, progress)
}

/// Where the attempts of a search run.
enum Exec<'a> {
    /// The configured executor (with the rank groups of an MPI job, if any).
    Configured(Option<&'a Groups>),
    /// One the caller built.
    Given(Box<dyn Executor + 'a>),
}

/// What reopening a search directory costs (a rerun before it runs anything), in seconds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ResumeTimes {
    /// Checking the plan and the corpus, building the space ([`Setup`]).
    pub setup_s: f64,
    /// Reading `trials.jsonl` and replaying it.
    pub replay_s: f64,
    /// The loop's repairs of earlier records and reopening of left-out trials.
    pub repair_s: f64,
    /// Building the observations of every finished trial (what the first proposal needs).
    pub observations_s: f64,
    /// Events replayed (lines of `trials.jsonl`).
    pub events: usize,
    /// Trials in the state.
    pub trials: usize,
    /// Finished trials.
    pub finished: usize,
}

impl ResumeTimes {
    /// The whole reopening.
    pub fn total_s(&self) -> f64 {
        self.setup_s + self.replay_s + self.repair_s + self.observations_s
    }
}

/// Reopens the search directory of `plan` exactly as a rerun does before it runs anything
/// (setup, replay of `trials.jsonl`, repairs, observations) and reports what each step took
/// (`mixatlas bench scale`'s resume time). Repairs a rerun would append are appended.
pub fn reopen_search(
    plan: &SearchPlan,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<ResumeTimes, SearchError> {
    let cfg = &plan.search;
    let mut times = ResumeTimes::default();
    let t = Instant::now();
    let setup = Setup::open(plan, progress)?;
    times.setup_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let max_attempts = cfg.budget.retries + 1;
    let (log, state) = EventLog::open(&cfg.out, max_attempts)?;
    times.replay_s = t.elapsed().as_secs_f64();
    times.events = log.lines();
    let mut ledger = Ledger::new(log, state, max_attempts, &setup.space, cfg, progress);
    let t = Instant::now();
    repair(&mut ledger)?;
    reopen(&mut ledger)?;
    times.repair_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (obs, _) = observations(&setup.space, &ledger.state.finished(), cfg)?;
    times.observations_s = t.elapsed().as_secs_f64();
    times.trials = ledger.state.trials.len();
    times.finished = obs.len();
    Ok(times)
}

/// What a search works on, set up once (the directory, its resolved config, the space).
struct Setup {
    manifest: Manifest,
    space: SearchSpace,
    corpus: PathBuf,
    train_toml: PathBuf,
    kind: ExecutorKind,
    mf: Option<MultiFidelity>,
}

impl Setup {
    /// Checks the plan, reads the corpus's manifest, builds the space and prepares the search
    /// directory (`trials/`, `search.json` checked against an earlier run, `train.toml`).
    fn open(
        plan: &SearchPlan,
        progress: &mut dyn FnMut(SearchProgress),
    ) -> Result<Self, SearchError> {
        let cfg = &plan.search;
        cfg.validate()?;
        let kind = cfg.executor.parse_kind()?;
        plan.train.validate().map_err(SearchError::Train)?;
        for message in super::preflight::preflight(cfg, kind)?.notes {
            progress(SearchProgress::Warning { message });
        }
        let manifest = Manifest::load(&cfg.corpus)?;
        let mut space = SearchSpace::from_manifest(&manifest, cfg.space, &cfg.constraints)?;
        // `--start benchmarks` begins at the benchmarks' mixture under the objective's weights.
        space.benchmarks = manifest.benchmark_weights(&cfg.objective.weights);
        let mf = MultiFidelity::resolve(cfg, &manifest)?;
        if let Some(mf) = &mf {
            // Fidelities that cannot be told apart fail here, not after the first round.
            mf.levels(&mf.model_costs(), space.dim())?;
            for f in &mf.fidelities {
                super::plan::train_at(&plan.train, f)
                    .validate()
                    .map_err(SearchError::Train)?;
            }
        }
        let out = &cfg.out;
        fs::create_dir_all(out.join("trials")).at("creating", out)?;
        let corpus = fs::canonicalize(&cfg.corpus).at("resolving", &cfg.corpus)?;
        super::plan::write_resolved(plan)?;
        let train_toml = super::plan::write_train_toml(out, &plan.train)?;
        Ok(Self {
            manifest,
            space,
            corpus,
            train_toml,
            kind,
            mf,
        })
    }

    /// Writes the recipe of the search so far (of a multi-fidelity search: at the target
    /// fidelity).
    fn write_recipe(&self, state: &SearchState, cfg: &SearchConfig) -> Result<(), SearchError> {
        match &self.mf {
            Some(mf) => write_mf_recipe(mf, &self.space, state, cfg, &self.manifest),
            None => write_recipe(&cfg.out, &self.space, state, cfg, &self.manifest),
        }
    }

    /// The executor of the search: Slurm when configured, else the rank groups of an MPI
    /// job when there are any (only under `--executor mpi`), else local child processes.
    fn executor<'a>(
        &'a self,
        plan: &'a SearchPlan,
        groups: Option<&'a Groups>,
    ) -> Result<Box<dyn Executor + 'a>, SearchError> {
        Ok(match (self.kind, groups) {
            (ExecutorKind::Slurm, _) => {
                Box::new(SlurmExecutor::new(plan, &self.corpus, &self.train_toml)?)
            }
            (_, Some(g)) => Box::new(MpiExecutor::new(plan, g)?),
            (_, None) => Box::new(LocalExecutor::new(&plan.search.out, plan.search.parallel())),
        })
    }
}

fn search_loop(
    plan: &SearchPlan,
    exec: Exec<'_>,
    proposer: Option<Box<dyn Proposer>>,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    let cfg = &plan.search;
    let setup = Setup::open(plan, progress)?;
    let max_attempts = cfg.budget.retries + 1;
    let (log, state) = EventLog::open(&cfg.out, max_attempts)?;
    let mut ledger = Ledger::new(log, state, max_attempts, &setup.space, cfg, progress);
    repair(&mut ledger)?;
    reopen(&mut ledger)?;
    let mut proposer = match proposer {
        Some(p) => p,
        None => cfg
            .method
            .proposer_on(cfg.seed, cfg.start, &setup.manifest, &cfg.chameleon)
            .map_err(|source| SearchError::Chameleon {
                manifest: setup.corpus.join(crate::data::corpus::MANIFEST_FILE),
                source,
            })?,
    };
    let mut exec = match exec {
        Exec::Configured(groups) => setup.executor(plan, groups)?,
        Exec::Given(e) => e,
    };
    let attempts = Attempts {
        plan,
        space: &setup.space,
        manifest: &setup.manifest,
        corpus: &setup.corpus,
        train_toml: &setup.train_toml,
        timeout: (cfg.budget.trial_timeout_s > 0.0)
            .then(|| Duration::from_secs_f64(cfg.budget.trial_timeout_s)),
    };
    let mut clock = Clock::new();
    if cfg.budget.asynchronous {
        run_async(
            exec.as_mut(),
            &attempts,
            proposer.as_mut(),
            &setup,
            &mut ledger,
            &mut clock,
        )?;
    } else {
        loop {
            // 1. Run every pending trial (interrupted attempts and retries first, in order).
            run_pending(exec.as_mut(), &attempts, &mut ledger, &mut clock)?;
            let t = Instant::now();
            setup.write_recipe(&ledger.state, cfg)?;
            clock.recipe += t.elapsed();
            // 2. Propose the next round, or stop.
            let t = Instant::now();
            let q = cfg.budget.q;
            let proposed = propose_round(proposer.as_mut(), setup.mf.as_ref(), &mut ledger, q, None)?;
            clock.propose += t.elapsed();
            let Some((round, n)) = proposed else { break };
            clock.report(&mut ledger, round, n, exec.running());
        }
    }
    summary(&setup.space, setup.mf.as_ref(), &ledger)
}

/// Rank 0's time since the last reported round, by component (see [`RoundTimes`]).
struct Clock {
    since: Instant,
    propose: Duration,
    recipe: Duration,
    exec: Duration,
}

impl Clock {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            propose: Duration::ZERO,
            recipe: Duration::ZERO,
            exec: Duration::ZERO,
        }
    }

    /// Times one executor call.
    fn exec<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.exec += t.elapsed();
        out
    }

    /// Reports round `round` (`proposed` trials) and starts the next one.
    fn report(&mut self, ledger: &mut Ledger<'_>, round: usize, proposed: usize, running: usize) {
        let total = self.since.elapsed();
        let known = self.propose + self.recipe + self.exec;
        let times = RoundTimes {
            round,
            proposed,
            finished: ledger.state.finished_count(),
            running,
            propose_s: self.propose.as_secs_f64(),
            recipe_s: self.recipe.as_secs_f64(),
            exec_s: self.exec.as_secs_f64(),
            record_s: total.saturating_sub(known).as_secs_f64(),
        };
        (ledger.progress)(SearchProgress::Timing(times));
        *self = Clock::new();
    }
}

/// Asynchronous scheduling (`budget.asynchronous`): keeps the executor full. Whenever it
/// has free slots and no attempt waits in the queue, the method proposes at most `q` more
/// trials (one round in the log) with [`Proposer::propose_pending`], given the points of the
/// trials proposed and not yet finished; then the loop waits for the next attempts to end.
/// The recipe is rewritten after every `q` finished trials and when the search stops. A
/// rerun resumes like a synchronous one: unfinished trials of earlier rounds run first.
fn run_async(
    exec: &mut dyn Executor,
    attempts: &Attempts<'_>,
    proposer: &mut dyn Proposer,
    setup: &Setup,
    ledger: &mut Ledger<'_>,
    clock: &mut Clock,
) -> Result<(), SearchError> {
    let cfg = ledger.cfg;
    let mut queue: Vec<TrialState> = ledger.state.pending().into_iter().cloned().collect();
    queue.reverse();
    queue.retain(|t| !clock.exec(|| exec.reattach(t)));
    let mut exhausted = false;
    let mut unwritten = 0usize;
    loop {
        submit_queued(exec, attempts, ledger, &mut queue, clock)?;
        let room = exec.room();
        if room > 0 && queue.is_empty() && !exhausted {
            let t = Instant::now();
            let pending = pending_points(ledger)?;
            let q = cfg.budget.q.min(room);
            let proposed = propose_round(proposer, None, ledger, q, Some(&pending))?;
            clock.propose += t.elapsed();
            match proposed {
                Some((round, 0)) => {
                    // Everything it proposed is already running (a fixed mixture): wait.
                    clock.report(ledger, round, 0, exec.running());
                    exhausted = true;
                }
                Some((round, n)) => {
                    let new = ledger.state.trials[ledger.state.trials.len() - n..].to_vec();
                    queue.splice(0..0, new.into_iter().rev());
                    submit_queued(exec, attempts, ledger, &mut queue, clock)?;
                    clock.report(ledger, round, n, exec.running());
                    continue;
                }
                None => exhausted = true,
            }
        }
        if exec.running() == 0 {
            // Nothing runs and nothing more can start (an executor without room when idle
            // would otherwise spin): the search is over.
            break;
        }
        for ev in clock.exec(|| exec.poll())? {
            unwritten += usize::from(matches!(ev, Event::Finished { .. }));
            ledger.ended(ev, &mut queue)?;
        }
        if unwritten >= cfg.budget.q {
            let t = Instant::now();
            setup.write_recipe(&ledger.state, cfg)?;
            clock.recipe += t.elapsed();
            unwritten = 0;
        }
    }
    let t = Instant::now();
    setup.write_recipe(&ledger.state, cfg)?;
    clock.recipe += t.elapsed();
    Ok(())
}

/// The points (space coordinates) of the trials proposed and not yet finished or left out:
/// what an asynchronous proposal must account for.
fn pending_points(ledger: &Ledger<'_>) -> Result<Vec<Vec<f64>>, SearchError> {
    ledger
        .state
        .trials
        .iter()
        .filter(|t| t.status == Status::Pending)
        .map(|t| trial_point(ledger.space, t).map_err(SearchError::from))
        .collect()
}

/// Prepares and submits queued attempts while the executor has room, then starts what it
/// took (recording every start).
fn submit_queued(
    exec: &mut dyn Executor,
    attempts: &Attempts<'_>,
    ledger: &mut Ledger<'_>,
    queue: &mut Vec<TrialState>,
    clock: &mut Clock,
) -> Result<(), SearchError> {
    while clock.exec(|| exec.room()) > 0 {
        let Some(t) = queue.pop() else { break };
        let attempt = t.attempts.saturating_add(1);
        let job = attempts.prepare(&t, attempt)?;
        if let Some(id) = clock.exec(|| exec.submit(job))? {
            ledger.started(&t.id, attempt, id)?;
        }
    }
    let serial = ledger.state.trials.iter().map(|t| t.attempts).sum();
    for l in clock.exec(|| exec.launch(serial))? {
        ledger.started(&l.trial, l.attempt, l.job)?;
    }
    Ok(())
}

/// Repairs the records of an earlier run that the objective cannot use (logged as warnings):
/// `finished` lines without any usable score are already replayed as failed attempts
/// ([`SearchState::repaired`]); a finished trial whose scores this search's objective cannot
/// use (a weighted benchmark missing, other benchmarks than the trials before it, no curve
/// for `last:K`/`auc`) gets a `failed` line that revokes it. Both are then retried like any
/// failed attempt, so a directory written by an older version always resumes.
fn repair(ledger: &mut Ledger<'_>) -> Result<(), SearchError> {
    let path = ledger.cfg.out.join(super::state::TRIALS_FILE);
    for (trial, reason) in std::mem::take(&mut ledger.state.repaired) {
        (ledger.progress)(SearchProgress::Warning {
            message: format!("{}: {trial} {reason}; retrying it", path.display()),
        });
    }
    let finished: Vec<TrialState> = ledger.state.finished().into_iter().cloned().collect();
    let mut accepted: Vec<&TrialState> = Vec::with_capacity(finished.len());
    for t in &finished {
        let Status::Finished { metrics, .. } = &t.status else {
            continue;
        };
        match check_finished(ledger.cfg, &accepted, t, metrics) {
            Ok(()) => accepted.push(t),
            Err(e) => {
                let reason = format!("recorded as finished but {e}");
                (ledger.progress)(SearchProgress::Warning {
                    message: format!("{}: {} {reason}; retrying it", path.display(), t.id),
                });
                ledger.append(Event::Failed {
                    trial: t.id.clone(),
                    attempt: t.attempts,
                    reason,
                })?;
            }
        }
    }
    Ok(())
}

/// Gives every trial an earlier run left out fresh attempts (a `reopened` line each): a
/// rerun is how a user retries after fixing the cause (a trainer, a full disk, a time limit).
fn reopen(ledger: &mut Ledger<'_>) -> Result<(), SearchError> {
    let left_out: Vec<(String, String)> = ledger
        .state
        .trials
        .iter()
        .filter_map(|t| match &t.status {
            Status::Abandoned { reason } => Some((t.id.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    for (trial, reason) in left_out {
        (ledger.progress)(SearchProgress::Warning {
            message: format!("{trial} was left out ({reason}); trying it again"),
        });
        ledger.append(Event::Reopened { trial, reason })?;
    }
    Ok(())
}

/// Runs every pending trial on `exec` until none is pending or running: attempts an
/// earlier controller left running are taken back when the executor can, the others are
/// prepared and submitted as the executor has room, and every end is recorded (a failed
/// trial with attempts left goes back into the queue).
fn run_pending(
    exec: &mut dyn Executor,
    attempts: &Attempts<'_>,
    ledger: &mut Ledger<'_>,
    clock: &mut Clock,
) -> Result<(), SearchError> {
    let mut queue: Vec<TrialState> = ledger.state.pending().into_iter().cloned().collect();
    queue.reverse();
    queue.retain(|t| !clock.exec(|| exec.reattach(t)));
    loop {
        submit_queued(exec, attempts, ledger, &mut queue, clock)?;
        if exec.running() == 0 {
            return Ok(());
        }
        for ev in clock.exec(|| exec.poll())? {
            ledger.ended(ev, &mut queue)?;
        }
    }
}

/// Proposes the next round (at most `q` trials, within the budget) and records it; returns
/// the round and how many trials it proposed, or `None` when the budget is spent or the
/// method has nothing more to propose (a fixed mixture already tried: Chameleon). With
/// `pending` (asynchronous scheduling) the method is asked with
/// [`Proposer::propose_pending`], given those points. A multi-fidelity search (`mf`)
/// proposes with MF-GP-UCB, each trial with its fidelity; under `max_cost` the round keeps
/// the proposals (in order) that fit the cost left and the search stops when none does.
fn propose_round(
    proposer: &mut dyn Proposer,
    mf: Option<&MultiFidelity>,
    ledger: &mut Ledger<'_>,
    q: usize,
    pending: Option<&[Vec<f64>]>,
) -> Result<Option<(usize, usize)>, SearchError> {
    let cfg = ledger.cfg;
    let space = ledger.space;
    let used = ledger.state.trials.len();
    if used >= cfg.budget.max_trials {
        return Ok(None);
    }
    let q = q.min(cfg.budget.max_trials - used);
    let round = ledger.state.next_round();
    let (obs, _) = observations(space, &ledger.state.finished(), cfg)?;
    let first = match pending {
        Some(pending) => proposer.propose_pending(space, &obs, pending, q, round),
        None => proposer.propose(space, &obs, q, round),
    }
    .map_err(|source| SearchError::Propose { round, source })?;
    if first.is_empty() {
        return Ok(None);
    }
    // Asynchronously, a method that ignores the running trials may propose one again (a
    // fixed mixture): never run a mixture twice at once.
    let first: Vec<Proposal> = match pending {
        Some(pending) => first
            .into_iter()
            .filter(|p| !pending.iter().any(|x| same_point(x, &p.x)))
            .collect(),
        None => first,
    };
    if first.is_empty() {
        return Ok(Some((round, 0)));
    }
    let costs = mf.map_or_else(Vec::new, |m| m.costs(&ledger.state));
    let spent = spent_cost(mf, &costs, &ledger.state);
    let max_cost = cfg.budget.max_cost;
    let cheapest = costs.iter().copied().fold(1.0f64, f64::min);
    if max_cost > 0.0 && spent + cheapest > max_cost * (1.0 + 1e-9) {
        return Ok(None);
    }
    let mut proposals = match mf {
        Some(m) => m.propose(space, &ledger.state, cfg, q, round)?,
        // The proposal is deterministic in (observations, q, round): use the one made.
        None => first.into_iter().map(|p| (p, None)).collect(),
    };
    if max_cost > 0.0 {
        let mut total = spent;
        let fits = proposals.iter().take_while(|(_, f)| {
            let c = match (mf, f) {
                (Some(m), Some(f)) => m.index(f).map_or(1.0, |i| costs[i]),
                _ => 1.0,
            };
            total += c;
            total <= max_cost * (1.0 + 1e-9)
        });
        let keep = fits.count();
        proposals.truncate(keep);
        if proposals.is_empty() {
            return Ok(None);
        }
    }
    let mut ids = Vec::new();
    for (p, fidelity) in proposals {
        let id = format!("t{:04}", ledger.state.trials.len());
        let mixture = Mixture::from_order(&space.cells, &p.mixture).map_err(|source| {
            SearchError::Mixture {
                trial: id.clone(),
                source,
            }
        })?;
        ledger.append(Event::Proposed {
            trial: id.clone(),
            round,
            mixture: mixture.into_weights(),
            reason: p.reason.clone(),
            mean: p.mean,
            std: p.std,
            fidelity,
        })?;
        ids.push(id);
    }
    let n = ids.len();
    (ledger.progress)(SearchProgress::Proposed { round, trials: ids });
    Ok(Some((round, n)))
}

/// Whether two points of the space are the same mixture (up to rounding).
fn same_point(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

/// The cost of every trial proposed so far (run, running or left out), in target-trial
/// units.
fn spent_cost(mf: Option<&MultiFidelity>, costs: &[f64], state: &SearchState) -> f64 {
    state.trials.iter().map(|t| trial_cost(mf, costs, t)).sum()
}

/// Writes the recipe of a multi-fidelity search (at the target fidelity), its blend and
/// `gp.json`.
fn write_mf_recipe(
    mf: &MultiFidelity,
    space: &SearchSpace,
    state: &SearchState,
    cfg: &SearchConfig,
    manifest: &Manifest,
) -> Result<(), SearchError> {
    if let Some((r, gp)) = mf.recipe(space, state, cfg)? {
        save_recipe(&cfg.out, &r, gp.as_ref(), manifest, cfg)?;
    }
    Ok(())
}

/// The summary of a search that stopped: its objectives, best-so-far curve (at the target
/// fidelity in a multi-fidelity search), abandoned trials and recipe.
fn summary(
    space: &SearchSpace,
    mf: Option<&MultiFidelity>,
    ledger: &Ledger<'_>,
) -> Result<SearchSummary, SearchError> {
    let (cfg, state) = (ledger.cfg, &ledger.state);
    let finished = state.finished();
    let (_, objectives) = observations(space, &finished, cfg)?;
    let mut best_so_far = Vec::new();
    for ((_, y), t) in objectives.iter().zip(&finished) {
        if !at_target(cfg, t) {
            continue;
        }
        let b = best_so_far.last().map_or(*y, |b: &f64| b.max(*y));
        best_so_far.push(b);
    }
    let costs = mf.map_or_else(Vec::new, |m| m.costs(state));
    let recipe = match mf {
        Some(m) => m.recipe(space, state, cfg)?,
        None => recipe(space, state, cfg)?,
    };
    Ok(SearchSummary {
        finished: objectives.len(),
        abandoned: state
            .trials
            .iter()
            .filter_map(|t| match &t.status {
                Status::Abandoned { reason } => Some((t.id.clone(), reason.clone())),
                _ => None,
            })
            .collect(),
        objectives,
        best_so_far,
        cost: spent_cost(mf, &costs, state),
        recipe: recipe.map(|r| r.0),
    })
}
