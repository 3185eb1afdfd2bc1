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
    let result = search_loop(plan, Exec::Configured(groups), Hooks::default(), progress);
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
    hooks: Hooks,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    search_loop(plan, Exec::Given(exec), hooks, progress)
}

/// What a caller of [`run_search_with`] may change in the loop (all `None`: the search as
/// configured).
#[derive(Default)]
pub struct Hooks {
    /// The proposer instead of the configured method's.
    pub proposer: Option<Box<dyn Proposer>>,
    /// Asynchronous scheduling: rewrite the recipe after every this many finished trials
    /// instead of every `q`. `Some(0)`, in either mode: never, not even at the end
    /// (`mixatlas bench scale` measures the controller without the recipe's GP fit this way).
    pub recipe_every: Option<usize>,
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
    hooks: Hooks,
    progress: &mut dyn FnMut(SearchProgress),
) -> Result<SearchSummary, SearchError> {
    let cfg = &plan.search;
    let setup = Setup::open(plan, progress)?;
    let max_attempts = cfg.budget.retries + 1;
    let (log, state) = EventLog::open(&cfg.out, max_attempts)?;
    let mut ledger = Ledger::new(log, state, max_attempts, &setup.space, cfg, progress);
    repair(&mut ledger)?;
    reopen(&mut ledger)?;
    let mut proposer = match hooks.proposer {
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
        let recipe_every = hooks.recipe_every.unwrap_or(cfg.budget.q);
        run_async(
            exec.as_mut(),
            &attempts,
            (proposer.as_mut(), recipe_every),
            &setup,
            &mut ledger,
            &mut clock,
        )?;
    } else {
        loop {
            // 1. Run every pending trial (interrupted attempts and retries first, in order).
            run_pending(exec.as_mut(), &attempts, &mut ledger, &mut clock)?;
            if hooks.recipe_every != Some(0) {
                let t = Instant::now();
                setup.write_recipe(&ledger.state, cfg)?;
                clock.recipe += t.elapsed();
            }
            // 2. Propose the next round, or stop.
            let q = cfg.budget.q;
            let proposed = propose_round(
                proposer.as_mut(),
                setup.mf.as_ref(),
                &mut ledger,
                (q, None),
                &mut clock.propose,
            )?;
            let Some((round, n)) = proposed else { break };
            clock.report(&mut ledger, round, n, exec.running());
        }
    }
    summary(
        &setup.space,
        setup.mf.as_ref(),
        &ledger,
        hooks.recipe_every != Some(0),
    )
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
/// The recipe is rewritten after every `recipe_every` (normally `q`) finished trials and
/// when the search stops (never with 0). A rerun resumes like a synchronous one: unfinished
/// trials of earlier rounds run first.
fn run_async(
    exec: &mut dyn Executor,
    attempts: &Attempts<'_>,
    (proposer, recipe_every): (&mut dyn Proposer, usize),
    setup: &Setup,
    ledger: &mut Ledger<'_>,
    clock: &mut Clock,
) -> Result<(), SearchError> {
    let cfg = ledger.cfg;
    let mut queue: Vec<TrialState> = ledger.state.pending().into_iter().cloned().collect();
    queue.reverse();
    queue.retain(|t| !clock.exec(|| exec.reattach(t)));
    let mut exhausted = false;
    // Everything the method proposed last was already running: ask again after a trial ends.
    let mut stalled = false;
    let mut unwritten = 0usize;
    loop {
        submit_queued(exec, attempts, ledger, &mut queue, clock)?;
        let room = exec.room();
        if room > 0 && queue.is_empty() && !exhausted && !stalled {
            let pending = pending_points(ledger)?;
            let q = cfg.budget.q.min(room);
            let proposed = propose_round(
                proposer,
                None,
                ledger,
                (q, Some(&pending)),
                &mut clock.propose,
            )?;
            match proposed {
                Some((round, 0)) => {
                    // Everything it proposed is already running (a fixed mixture): wait.
                    clock.report(ledger, round, 0, exec.running());
                    stalled = true;
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
            stalled = false;
        }
        if recipe_every > 0 && unwritten >= recipe_every {
            let t = Instant::now();
            setup.write_recipe(&ledger.state, cfg)?;
            clock.recipe += t.elapsed();
            unwritten = 0;
        }
    }
    if recipe_every > 0 {
        let t = Instant::now();
        setup.write_recipe(&ledger.state, cfg)?;
        clock.recipe += t.elapsed();
    }
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
    // First judge every finished trial against the ones accepted before it (no copies of
    // the state: this runs on every resume, at 10,000 trials too), then revoke.
    let mut revoked: Vec<(String, usize, String)> = Vec::new();
    let mut accepted: Vec<&TrialState> = Vec::new();
    for t in &ledger.state.trials {
        let Status::Finished { metrics, .. } = &t.status else {
            continue;
        };
        match check_finished(ledger.cfg, &accepted, t, metrics) {
            Ok(()) => accepted.push(t),
            Err(e) => revoked.push((t.id.clone(), t.attempts, e.to_string())),
        }
    }
    for (trial, attempt, e) in revoked {
        let reason = format!("recorded as finished but {e}");
        (ledger.progress)(SearchProgress::Warning {
            message: format!("{}: {trial} {reason}; retrying it", path.display()),
        });
        ledger.append(Event::Failed {
            trial,
            attempt,
            reason,
        })?;
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
/// The time spent in the method itself is added to `in_method`.
fn propose_round(
    proposer: &mut dyn Proposer,
    mf: Option<&MultiFidelity>,
    ledger: &mut Ledger<'_>,
    (q, pending): (usize, Option<&[Vec<f64>]>),
    in_method: &mut Duration,
) -> Result<Option<(usize, usize)>, SearchError> {
    let cfg = ledger.cfg;
    let space = ledger.space;
    let used = ledger.state.trials.len();
    if used >= cfg.budget.max_trials {
        return Ok(None);
    }
    let q = q.min(cfg.budget.max_trials - used);
    let round = ledger.state.next_round();
    let obs = ledger.observations()?;
    let t = Instant::now();
    let first = match pending {
        Some(pending) => proposer.propose_pending(space, &obs, pending, q, round),
        None => proposer.propose(space, &obs, q, round),
    }
    .map_err(|source| SearchError::Propose { round, source });
    *in_method += t.elapsed();
    let first = first?;
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
        Some(m) => {
            let t = Instant::now();
            let p = m.propose(space, &ledger.state, cfg, q, round);
            *in_method += t.elapsed();
            p?
        }
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
/// fidelity in a multi-fidelity search), abandoned trials and recipe (`with_recipe`).
fn summary(
    space: &SearchSpace,
    mf: Option<&MultiFidelity>,
    ledger: &Ledger<'_>,
    with_recipe: bool,
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
        _ if !with_recipe => None,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::acquisition::{Observations, ProposeError};
    use crate::baselines::RandomSearch;
    use crate::search::error::ExecError;
    use crate::search::exec::sim::{write_corpus, SimConfig, SimExecutor, SimObjective};
    use crate::search::methods::Method;

    fn plan(corpus: &Path, out: &Path, q: usize, trials: usize) -> SearchPlan {
        let mut search = SearchConfig {
            corpus: corpus.to_path_buf(),
            out: out.to_path_buf(),
            method: Method::Random,
            seed: 3,
            ..SearchConfig::default()
        };
        search.budget.q = q;
        search.budget.max_trials = trials;
        search.budget.retries = 2;
        search.budget.asynchronous = true;
        SearchPlan {
            search,
            train: crate::train::TrainConfig::default(),
            exe: "mixatlas".into(),
        }
    }

    fn sim(cells: &[String], slots: usize, seed: u64) -> SimExecutor {
        let cfg = SimConfig {
            slots,
            fail_rate: 0.15,
            poll_s: 0.0,
            seed,
            ..SimConfig::default()
        };
        SimExecutor::new(cfg, SimObjective::new(cells, 2, 0.01, 1))
    }

    /// Each line of `trials.jsonl`, parsed as plain JSON (not through `SearchState`).
    fn lines(out: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(super::super::state::TRIALS_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Random search that records, per call, how many pending points it was given and `q`.
    struct Recording {
        inner: RandomSearch,
        calls: std::rc::Rc<std::cell::RefCell<Vec<(usize, usize)>>>,
    }

    impl Proposer for Recording {
        fn name(&self) -> &str {
            "recording"
        }

        fn propose(
            &mut self,
            space: &SearchSpace,
            obs: &Observations,
            q: usize,
            round: usize,
        ) -> Result<Vec<Proposal>, ProposeError> {
            self.inner.propose(space, obs, q, round)
        }

        fn propose_pending(
            &mut self,
            space: &SearchSpace,
            obs: &Observations,
            pending: &[Vec<f64>],
            q: usize,
            round: usize,
        ) -> Result<Vec<Proposal>, ProposeError> {
            for x in pending {
                assert!(space.contains(x, 1e-6));
            }
            self.calls.borrow_mut().push((pending.len(), q));
            self.propose(space, obs, q, round)
        }
    }

    /// Issue 19: asynchronous scheduling keeps the slots full without ever exceeding them,
    /// proposes while trials run (given their points), and records every trial exactly once:
    /// each proposed once, finished at most once, every failure retried or left out.
    #[test]
    fn asynchronous_search_records_every_trial_once_within_the_slots() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        let cells = write_corpus(&corpus, 6).unwrap();
        let out = dir.path().join("search");
        let p = plan(&corpus, &out, 3, 40);
        let mut exec = sim(&cells, 5, 9);
        let calls = std::rc::Rc::default();
        let proposer = Recording {
            inner: RandomSearch::new(3),
            calls: std::rc::Rc::clone(&calls),
        };
        let mut timings = Vec::new();
        let mut reported = BTreeMap::new();
        let hooks = Hooks {
            proposer: Some(Box::new(proposer)),
            ..Hooks::default()
        };
        let summary = run_search_with(&p, Box::new(&mut exec), hooks, &mut |e| match e {
            SearchProgress::Timing(t) => timings.push(t),
            SearchProgress::Finished {
                trial, objective, ..
            } => {
                reported.insert(trial, objective.unwrap());
            }
            _ => {}
        })
        .unwrap();
        let st = exec.stats().clone();
        assert_eq!((st.max_running, st.oversubscribed), (5, 0), "{st:?}");
        // The log, read independently: 40 proposals, a `running` line per submission, at
        // most one `finished` per trial, and every trial finished or out of attempts.
        let log = lines(&out);
        let count = |ev: &str, trial: &str| {
            log.iter()
                .filter(|l| l["event"] == ev && l["trial"] == trial)
                .count()
        };
        let ids: Vec<String> = log
            .iter()
            .filter(|l| l["event"] == "proposed")
            .map(|l| l["trial"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 40);
        let running = log.iter().filter(|l| l["event"] == "running").count();
        assert_eq!(running, st.submitted);
        let mut finished = 0;
        for id in &ids {
            let (f, failed) = (count("finished", id), count("failed", id));
            assert!(f <= 1, "{id} finished {f} times");
            assert!(f == 1 || failed == 3, "{id}: {f} finished, {failed} failed");
            assert_eq!(count("running", id), f + failed, "{id}");
            finished += f;
        }
        assert_eq!(summary.finished, finished);
        assert_eq!(finished, st.finished);
        // Rounds of at most q, proposed with the running trials' points while they ran.
        let calls = calls.borrow();
        assert!(calls.iter().all(|&(pending, q)| q <= 3 && pending + q <= 5));
        assert!(calls.iter().filter(|c| c.0 > 0).count() > 5, "{calls:?}");
        assert!(timings.iter().filter(|t| t.running > 0).count() > 5);
        assert_eq!(timings.len(), calls.len());
        // The progress objectives (scored one trial at a time) are the summary's (all at once).
        let all: BTreeMap<String, f64> = summary.objectives.iter().cloned().collect();
        assert_eq!(reported, all);
        assert!(summary.recipe.is_some());
    }

    /// An executor that fails its `poll` number `stop_at` (an interrupted controller: every
    /// event before it is on disk, as after `kill -9`).
    struct Interrupted<'a> {
        inner: &'a mut SimExecutor,
        polls: usize,
        stop_at: usize,
    }

    impl Executor for Interrupted<'_> {
        fn room(&self) -> usize {
            self.inner.room()
        }
        fn submit(
            &mut self,
            job: super::super::attempt::TrialJob,
        ) -> Result<Option<String>, ExecError> {
            self.inner.submit(job)
        }
        fn running(&self) -> usize {
            self.inner.running()
        }
        fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
            self.polls += 1;
            if self.polls == self.stop_at {
                let e = std::io::Error::other("interrupted");
                return Err(ExecError::Io(crate::fsutil::PathIoError {
                    action: "polling",
                    path: "sim".into(),
                    source: e,
                }));
            }
            self.inner.poll()
        }
    }

    /// Issue 19: an asynchronous search interrupted mid-run (with a torn last line, as
    /// `kill -9` can leave) resumes: finished trials are never run again, the ones running
    /// at the interruption are re-run, and the budget ends exactly spent.
    #[test]
    fn asynchronous_search_resumes_after_an_interruption() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        let cells = write_corpus(&corpus, 4).unwrap();
        let out = dir.path().join("search");
        let p = plan(&corpus, &out, 2, 30);
        let mut first = sim(&cells, 4, 1);
        let interrupted = Interrupted {
            inner: &mut first,
            polls: 0,
            stop_at: 9,
        };
        assert!(run_search_with(&p, Box::new(interrupted), Hooks::default(), &mut |_| {}).is_err());
        let before = lines(&out);
        let done: Vec<String> = before
            .iter()
            .filter(|l| l["event"] == "finished")
            .map(|l| l["trial"].as_str().unwrap().to_string())
            .collect();
        assert!(!done.is_empty() && before.len() > 10);
        // A torn line after the last complete one.
        let path = out.join(super::super::state::TRIALS_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"event\":\"fin");
        std::fs::write(&path, text).unwrap();
        let mut second = sim(&cells, 4, 2);
        let summary =
            run_search_with(&p, Box::new(&mut second), Hooks::default(), &mut |_| {}).unwrap();
        let rerun: Vec<&String> = second.stats().submissions.iter().map(|s| &s.0).collect();
        for id in &done {
            assert!(!rerun.contains(&id), "{id} finished before and ran again");
        }
        let log = lines(&out);
        let proposed = log.iter().filter(|l| l["event"] == "proposed").count();
        assert_eq!(proposed, 30);
        let mut finished: Vec<&str> = log
            .iter()
            .filter(|l| l["event"] == "finished")
            .map(|l| l["trial"].as_str().unwrap())
            .collect();
        let n = finished.len();
        finished.sort();
        finished.dedup();
        assert_eq!(finished.len(), n, "a trial finished twice");
        assert_eq!(summary.finished, n);
        assert_eq!(summary.finished + summary.abandoned.len(), 30);
    }

    /// Issue 19: the ledger's cached observations (each finished trial adding its own) are
    /// those built from scratch from the replayed state, also after a record is revoked.
    #[test]
    fn cached_observations_match_a_full_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        let cells = write_corpus(&corpus, 5).unwrap();
        let out = dir.path().join("search");
        let p = plan(&corpus, &out, 4, 24);
        let mut exec = sim(&cells, 6, 4);
        run_search_with(&p, Box::new(&mut exec), Hooks::default(), &mut |_| {}).unwrap();
        let manifest = Manifest::load(&corpus).unwrap();
        let cfg = &p.search;
        let space = SearchSpace::from_manifest(&manifest, cfg.space, &cfg.constraints).unwrap();
        let (log, state) = EventLog::open(&out, 3).unwrap();
        let mut progress = |_: SearchProgress| {};
        let mut ledger = Ledger::new(log, state, 3, &space, cfg, &mut progress);
        let full = |l: &Ledger<'_>| observations(&space, &l.state.finished(), cfg).unwrap().0;
        assert_eq!(ledger.observations().unwrap(), full(&ledger));
        // New finished trials are added in trial order; a revoked record leaves.
        let id = format!("t{:04}", ledger.state.trials.len());
        let w = 1.0 / cells.len() as f64;
        ledger
            .append(Event::Proposed {
                trial: id.clone(),
                round: 99,
                mixture: cells.iter().map(|c| (c.clone(), w)).collect(),
                reason: "test".into(),
                mean: None,
                std: None,
                fidelity: None,
            })
            .unwrap();
        let metrics = serde_json::json!({"benchmarks": {"sim0": 0.25, "sim1": 0.5}});
        ledger
            .append(Event::Finished {
                trial: id,
                attempt: 1,
                metrics,
                wall_s: 1.0,
                fidelity: None,
            })
            .unwrap();
        let grown = ledger.observations().unwrap();
        assert_eq!(grown, full(&ledger));
        assert_eq!(grown.y.last(), Some(&0.375));
        let first = ledger.state.finished()[0].id.clone();
        ledger
            .append(Event::Failed {
                trial: first,
                attempt: 1,
                reason: "revoked".into(),
            })
            .unwrap();
        let fewer = ledger.observations().unwrap();
        assert_eq!(fewer, full(&ledger));
        assert_eq!(fewer.len() + 1, grown.len());
    }
}
