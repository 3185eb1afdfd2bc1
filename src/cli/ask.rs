//! Ask/tell subcommands: `suggest`, `predict` and `recipe` over user-supplied trials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use mixatlas::acquisition::design::DesignStart;
use mixatlas::acquisition::multifidelity::{MfGpUcb, MfObservations};
use mixatlas::acquisition::ucb::{GpUcb, GpUcbConfig};
use mixatlas::acquisition::{
    Observations, Proposal, Proposer, SearchSpace, SpaceConstraints, SpaceKind,
};
use mixatlas::data::corpus::Manifest;
use mixatlas::fsutil::lock::DirLock;
use mixatlas::search::config::SearchConfig;
use mixatlas::search::fidelity::Fidelity;
use mixatlas::search::methods::Method;
use mixatlas::search::multifidelity::MultiFidelity;
use mixatlas::search::recipe::{Recipe, RecipeSource};
use mixatlas::search::trials::{load_trials, rescale_rounded, ObjectiveSpec, Trial};
use mixatlas::surrogate::gp::MAX_ABS_OBJECTIVE;
use mixatlas::surrogate::{FitStrategy, InputWarp, Posterior, PosteriorStrategy};
use serde::Deserialize;

use super::chameleon::ChameleonArgs;
use super::output;

/// The most mixtures one `suggest` proposes (`-q`): RegMix's 512 proxy runs fit in one call.
/// An initial design of that size takes a second; a GP-UCB batch takes minutes (each batch
/// point after the first conditions the GP on the pending ones and rescores the candidate
/// pool, so the work grows with `q × (trials + q)²`; `-v` logs the point it is choosing). A
/// larger batch is better asked for in several rounds.
pub const MAX_Q: usize = 512;

/// Where the search space comes from.
#[derive(Debug, Args)]
pub struct SpaceArgs {
    /// A prepared corpus: cells and natural proportions from its manifest.
    #[arg(long, conflicts_with = "space")]
    pub corpus: Option<PathBuf>,
    /// A space file (JSON: kind, cells, prior, lower, upper, fixed) instead of a corpus.
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// joint (one simplex over cells) or factorized (one simplex per axis).
    #[arg(long, value_parser = ["joint", "factorized"])]
    pub space_kind: Option<String>,
    /// Bounds and fixed cells (JSON: {"lower": {...}, "upper": {...}, "fixed": {...}}).
    #[arg(long)]
    pub constraints: Option<PathBuf>,
}

/// How trial scores become the objective.
#[derive(Debug, Args)]
pub struct ObjectiveArgs {
    /// Benchmark weights, e.g. `docvqa=2,pope=1` (default: all benchmarks equally).
    #[arg(long, value_delimiter = ',')]
    pub weights: Vec<String>,
    /// Normalise each benchmark by its score in this trial id.
    #[arg(long)]
    pub reference: Option<String>,
}

/// Multi-fidelity trials (each with a `fidelity`): the GP over mixture × fidelity.
#[derive(Debug, Args)]
pub struct FidelityArgs {
    /// Fidelities the trials ran at, `<preset>:<steps>` comma-separated (e.g.
    /// `mini:200,small:200`); with two or more every trial needs its `fidelity`.
    #[arg(long, value_delimiter = ',')]
    pub fidelities: Vec<String>,
    /// The fidelity predictions and recipes are for (one of --fidelities).
    #[arg(long)]
    pub target_fidelity: Option<String>,
}

/// The multi-fidelity setup of the fidelity flags (`None` without them).
fn multi_fidelity(
    a: &FidelityArgs,
    manifest: Option<&Manifest>,
    seed: u64,
    start: DesignStart,
) -> Result<Option<MultiFidelity>> {
    if a.fidelities.is_empty() && a.target_fidelity.is_none() {
        return Ok(None);
    }
    let parse = |flag: &str, v: &str| -> Result<Fidelity> {
        v.parse::<Fidelity>()
            .with_context(|| format!("{flag} {v:?}"))
    };
    let cfg = SearchConfig {
        fidelities: a
            .fidelities
            .iter()
            .map(|v| parse("--fidelities", v))
            .collect::<Result<_>>()?,
        target_fidelity: match &a.target_fidelity {
            Some(v) => Some(parse("--target-fidelity", v)?),
            None => None,
        },
        seed,
        start,
        ..SearchConfig::default()
    };
    cfg.validate().context("--fidelities / --target-fidelity")?;
    Ok(MultiFidelity::resolve_with(&cfg, manifest)?)
}

/// MF-GP-UCB over `mf` (model costs) and the trials as its observations.
fn mf_proposer(
    mf: &MultiFidelity,
    space: &SearchSpace,
    trials: &[Trial],
    obs: Observations,
) -> Result<(MfGpUcb, MfObservations)> {
    let levels = mf.levels(&mf.model_costs(), space.dim())?;
    let p = MfGpUcb::new(mf.mf.clone(), levels, mf.target)?;
    let fidelity = mf.trial_indices(trials)?;
    Ok((p, MfObservations { obs, fidelity }))
}

/// Settings of the GP surrogate shared by `suggest`, `predict` and `recipe`.
#[derive(Debug, Args)]
pub struct SurrogateArgs {
    /// Warp of the GP's inputs: none, log (ln(w + 0.001)) or log:EPS. `log` suits mixtures
    /// whose weights span orders of magnitude (see docs/search-quality.md, RegMix's runs).
    #[arg(long, default_value = "none")]
    pub input_warp: InputWarp,
    /// Trials the GP's hyperparameters are fitted on: auto (all up to 512 trials, a subset of
    /// 384 above), exact (all) or subset:M (see docs/scale.md).
    #[arg(long, default_value = "auto")]
    pub gp_fit: FitStrategy,
    /// The GP's posterior: auto (exact up to 1024 trials, sparse with 512 inducing points
    /// above), exact, or sparse:M (M inducing points; see docs/scale.md).
    #[arg(long, default_value = "auto")]
    pub gp_posterior: PosteriorStrategy,
}

impl SurrogateArgs {
    /// GP-UCB's default settings, seeded, with these surrogate settings.
    fn config(&self, seed: u64) -> GpUcbConfig {
        let mut cfg = GpUcbConfig::seeded(seed);
        cfg.gp.warp = self.input_warp;
        cfg.gp.fit = self.gp_fit;
        cfg.gp.posterior = self.gp_posterior;
        cfg
    }
}

/// `mixatlas suggest`.
#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Finished trials (JSONL or .csv); omit for the initial design.
    #[arg(long)]
    pub trials: Option<PathBuf>,
    /// The space.
    #[command(flatten)]
    pub space: SpaceArgs,
    /// The objective.
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    /// The surrogate.
    #[command(flatten)]
    pub surrogate: SurrogateArgs,
    /// Number of mixtures to propose (1 to 512, see `MAX_Q`).
    #[arg(short, long, default_value_t = 1)]
    pub q: usize,
    /// Method.
    #[arg(long, value_enum, default_value_t = Method::GpUcb)]
    pub method: Method,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// First mixture of GP-UCB's initial design: centre (the uniform mixture) or natural.
    #[arg(long, value_enum, default_value_t = DesignStart::Centre)]
    pub start: DesignStart,
    /// Also report the fitted GP and each proposal's mean, std and UCB value.
    #[arg(long)]
    pub json: bool,
    /// Chameleon's settings (`--method chameleon`, which needs `--corpus`).
    #[command(flatten)]
    pub chameleon: ChameleonArgs,
    /// Multi-fidelity: each suggestion comes with the fidelity to run it at.
    #[command(flatten)]
    pub fidelity: FidelityArgs,
}

/// `mixatlas predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Finished trials (JSONL or .csv).
    #[arg(long)]
    pub trials: PathBuf,
    /// Mixtures to predict: JSONL of {"mixture": {...}} (or bare {cell: w} objects).
    #[arg(long)]
    pub at: PathBuf,
    /// The space.
    #[command(flatten)]
    pub space: SpaceArgs,
    /// The objective.
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    /// The surrogate.
    #[command(flatten)]
    pub surrogate: SurrogateArgs,
    /// Seed of the GP fit's restarts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Multi-fidelity: predict at the target fidelity (or --at-fidelity).
    #[command(flatten)]
    pub fidelity: FidelityArgs,
    /// Predict at this fidelity instead of the target (one of --fidelities).
    #[arg(long)]
    pub at_fidelity: Option<String>,
    /// The shape of `suggest --json`: also the method, the number of trials and, without
    /// fidelities, each prediction's UCB value (`mean + √β std`, β of the next proposal).
    #[arg(long)]
    pub json: bool,
}

/// `mixatlas recipe`.
#[derive(Debug, Args)]
pub struct RecipeArgs {
    /// Finished trials (JSONL or .csv).
    #[arg(long)]
    pub trials: PathBuf,
    /// The space.
    #[command(flatten)]
    pub space: SpaceArgs,
    /// The objective.
    #[command(flatten)]
    pub objective: ObjectiveArgs,
    /// The surrogate.
    #[command(flatten)]
    pub surrogate: SurrogateArgs,
    /// Optimise only these benchmarks (equal weights), from the same trials; with gp-ucb,
    /// one GP per benchmark, their posteriors combined.
    #[arg(long, value_delimiter = ',', conflicts_with = "weights")]
    pub target: Vec<String>,
    /// Method whose recommendation becomes the recipe.
    #[arg(long, value_enum, default_value_t = Method::GpUcb)]
    pub method: Method,
    /// Where to write recipe.json.
    #[arg(long, default_value = "recipe.json")]
    pub out: PathBuf,
    /// Also print the recipe: `json`, or `megatron` (a --data-path blend; needs --corpus).
    #[arg(long, value_parser = ["json", "megatron"])]
    pub export: Option<String>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Multi-fidelity: the recipe at the target fidelity.
    #[command(flatten)]
    pub fidelity: FidelityArgs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    #[serde(default)]
    kind: SpaceKind,
    cells: Vec<String>,
    #[serde(default)]
    prior: Option<Vec<f64>>,
    #[serde(flatten)]
    constraints: SpaceConstraints,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{what} {}: invalid", path.display()))
}

/// Builds the space (and the manifest when it came from a corpus).
fn load_space(a: &SpaceArgs) -> Result<(SearchSpace, Option<Manifest>)> {
    let kind = match a.space_kind.as_deref() {
        Some("factorized") => Some(SpaceKind::Factorized),
        Some(_) => Some(SpaceKind::Joint),
        None => None,
    };
    let constraints: SpaceConstraints = match &a.constraints {
        Some(p) => read_json(p, "constraints")?,
        None => SpaceConstraints::default(),
    };
    match (&a.corpus, &a.space) {
        (Some(dir), None) => {
            let m = Manifest::load(dir)?;
            let s = SearchSpace::from_manifest(&m, kind.unwrap_or_default(), &constraints)?;
            Ok((s, Some(m)))
        }
        (None, Some(p)) => {
            let f: SpaceFile = read_json(p, "space file")?;
            let mut concepts: Vec<String> = Vec::new();
            let mut tasks: Vec<String> = Vec::new();
            let mut axes = Vec::new();
            for c in &f.cells {
                let (con, task) = c.split_once('/').with_context(|| {
                    format!(
                        "space file {}: cell {c:?} is not `concept/task`",
                        p.display()
                    )
                })?;
                let ci = concepts.iter().position(|x| x == con).unwrap_or_else(|| {
                    concepts.push(con.to_string());
                    concepts.len() - 1
                });
                let ti = tasks.iter().position(|x| x == task).unwrap_or_else(|| {
                    tasks.push(task.to_string());
                    tasks.len() - 1
                });
                axes.push((ci, ti));
            }
            let n = f.cells.len();
            let prior = f.prior.unwrap_or_else(|| vec![1.0 / n as f64; n]);
            if prior.len() != n {
                bail!(
                    "space file {}: {} prior weights for {n} cells",
                    p.display(),
                    prior.len()
                );
            }
            let mut c = f.constraints;
            if a.constraints.is_some() {
                c = constraints;
            }
            let s = SearchSpace::new(
                kind.unwrap_or(f.kind),
                mixatlas::acquisition::space::SpaceCells {
                    cells: f.cells,
                    cell_axes: axes,
                    concepts,
                    tasks,
                    prior,
                },
                &c,
            )?;
            Ok((s, None))
        }
        _ => bail!("give the space with --corpus DIR or --space FILE"),
    }
}

fn objective_spec(a: &ObjectiveArgs, target: &[String]) -> Result<ObjectiveSpec> {
    let mut spec = if target.is_empty() {
        ObjectiveSpec::default()
    } else {
        ObjectiveSpec::targeting(target)
    };
    for w in &a.weights {
        let (b, v) = w
            .split_once('=')
            .with_context(|| format!("--weights entry {w:?}: expected BENCHMARK=WEIGHT"))?;
        let v: f64 = v
            .parse()
            .with_context(|| format!("--weights entry {w:?}: {v:?} is not a number"))?;
        if !(v >= 0.0 && v.is_finite()) {
            bail!("--weights entry {w:?}: weight must be finite and non-negative");
        }
        spec.weights.insert(b.to_string(), v);
    }
    spec.reference = a.reference.clone();
    Ok(spec)
}

fn observations(
    space: &SearchSpace,
    trials: &[Trial],
    spec: &ObjectiveSpec,
) -> Result<Observations> {
    // Benchmarks before an explicit objective, one benchmark set (docs/ask-tell.md).
    let y = mixatlas::search::objective::evaluate(spec, trials)?;
    let mut obs = Observations::default();
    for (t, y) in trials.iter().zip(y) {
        if y.is_finite() && y.abs() > MAX_ABS_OBJECTIVE {
            bail!(
                "trial {} (line {}): objective is {y:e} (from its scores); the GP accepts \
                 objectives within ±{MAX_ABS_OBJECTIVE:e}",
                t.id,
                t.line
            );
        }
        let x = space
            .from_mixture(&t.mixture)
            .with_context(|| format!("trial {} (line {})", t.id, t.line))?;
        obs.push(x, y);
    }
    Ok(obs)
}

/// Checks that the surrogate's figures of `what` are numbers: a posterior that is not (an
/// overflow, a degenerate fit) is an error, never a `null` in the JSON output.
fn check_finite(what: &str, figures: &[(&str, Option<f64>)]) -> Result<()> {
    for (name, v) in figures {
        if let Some(v) = v.filter(|v| !v.is_finite()) {
            bail!(
                "{what}: the GP's posterior {name} is {v}; the fit is unusable (check the \
                 trials' scores for extreme values)"
            );
        }
    }
    Ok(())
}

/// [`check_finite`] of each proposal's mean, std and acquisition value.
fn check_proposals<'a>(proposals: impl IntoIterator<Item = &'a Proposal>) -> Result<()> {
    for (i, p) in proposals.into_iter().enumerate() {
        check_finite(
            &format!("proposal {}", i + 1),
            &[("mean", p.mean), ("std", p.std), ("ucb", p.acquisition)],
        )?;
    }
    Ok(())
}

fn named(space: &SearchSpace, w: &[f64]) -> BTreeMap<String, f64> {
    mixatlas::data::mixture::by_name(&space.cells, w)
}

/// The proposer of a method other than GP-UCB; Chameleon's reads the corpus manifest.
fn method_proposer(a: &SuggestArgs, manifest: Option<&Manifest>) -> Result<Box<dyn Proposer>> {
    if a.method != Method::Chameleon {
        return Ok(a.method.proposer_from(a.seed, a.start));
    }
    let (Some(m), Some(dir)) = (manifest, &a.space.corpus) else {
        bail!("--method chameleon needs --corpus (the manifest's mean CLIP embedding per cell)");
    };
    let params = a.chameleon.apply(Default::default());
    a.method
        .proposer_on(a.seed, a.start, m, &params)
        .with_context(|| format!("{}", dir.join("manifest.json").display()))
}

/// `suggest`: the next q mixtures.
pub fn run_suggest(a: SuggestArgs) -> Result<()> {
    if a.q == 0 || a.q > MAX_Q {
        bail!(
            "-q {}: expected 1 to {MAX_Q} mixtures per call (ask for a larger batch in \
             several rounds)",
            a.q
        );
    }
    let (space, manifest) = load_space(&a.space)?;
    let trials = match &a.trials {
        Some(p) => load_trials(p, &space)?,
        None => Vec::new(),
    };
    let spec = objective_spec(&a.objective, &[])?;
    let obs = observations(&space, &trials, &spec)?;
    let round = obs.len();
    tracing::debug!(
        trials = obs.len(),
        dim = space.dim(),
        q = a.q,
        method = a.method.name(),
        "suggest: proposing"
    );
    if let Some(mf) = multi_fidelity(&a.fidelity, manifest.as_ref(), a.seed, a.start)? {
        if a.method != Method::GpUcb {
            bail!("--fidelities need --method gp-ucb (multi-fidelity GP-UCB)");
        }
        return suggest_mf(&a, &mf, &space, &trials, obs);
    }
    let (proposals, gp) = if a.method == Method::GpUcb {
        let mut ucb = GpUcb::new(GpUcbConfig {
            start: a.start,
            ..a.surrogate.config(a.seed)
        });
        let p = ucb.propose(&space, &obs, a.q, round)?;
        let report = ucb.gp().map(|g| g.report());
        (p, report)
    } else {
        (
            method_proposer(&a, manifest.as_ref())?.propose(&space, &obs, a.q, round)?,
            None,
        )
    };
    check_proposals(&proposals)?;
    if a.json {
        let props: Vec<serde_json::Value> = proposals
            .iter()
            .map(|p| {
                serde_json::json!({
                    "mixture": named(&space, &p.mixture),
                    "mean": p.mean, "std": p.std, "ucb": p.acquisition, "reason": p.reason,
                })
            })
            .collect();
        let v = serde_json::json!({
            "method": a.method.name(), "trials": obs.len(), "q": a.q,
            "proposals": props, "gp": gp,
        });
        output::print(serde_json::to_string_pretty(&v)?)?;
    } else {
        let mixtures: Vec<_> = proposals
            .iter()
            .map(|p| named(&space, &p.mixture))
            .collect();
        output::print(serde_json::to_string_pretty(&mixtures)?)?;
    }
    Ok(())
}

/// `suggest` with fidelities: each proposal with the fidelity MF-GP-UCB runs it at.
fn suggest_mf(
    a: &SuggestArgs,
    mf: &MultiFidelity,
    space: &SearchSpace,
    trials: &[Trial],
    obs: Observations,
) -> Result<()> {
    let round = obs.len();
    let (mut p, mfobs) = mf_proposer(mf, space, trials, obs)?;
    let proposals = p.propose(space, &mfobs, a.q, round)?;
    check_proposals(proposals.iter().map(|m| &m.proposal))?;
    let gp = if mfobs.obs.len() >= 2 {
        p.fit(&mfobs).ok().map(|post| post.gp().report())
    } else {
        None
    };
    let out: Vec<serde_json::Value> = proposals
        .iter()
        .map(|m| {
            let (f, p) = (&mf.fidelities[m.fidelity], &m.proposal);
            if a.json {
                serde_json::json!({
                    "mixture": named(space, &p.mixture), "fidelity": f,
                    "mean": p.mean, "std": p.std, "ucb": p.acquisition, "reason": p.reason,
                })
            } else {
                serde_json::json!({"mixture": named(space, &p.mixture), "fidelity": f})
            }
        })
        .collect();
    let v = if a.json {
        serde_json::json!({
            "method": a.method.name(), "trials": mfobs.obs.len(), "q": a.q,
            "target_fidelity": mf.fidelities[mf.target], "proposals": out, "gp": gp,
        })
    } else {
        serde_json::Value::Array(out)
    };
    output::print(serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

fn read_mixtures(path: &Path, space: &SearchSpace) -> Result<Vec<Vec<f64>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut tally = mixatlas::data::mixture::Renormalised::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut m = mixatlas::data::mixture::parse_weights(line)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        rescale_rounded(&mut m, &mut tally)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let w = mixatlas::data::mixture::in_order(&m, &space.cells)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        space
            .from_mixture(&w)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.push(w);
    }
    tally.warn(path, out.len());
    Ok(out)
}

/// `predict`: posterior mean and std at given mixtures.
pub fn run_predict(a: PredictArgs) -> Result<()> {
    let (space, manifest) = load_space(&a.space)?;
    let trials = load_trials(&a.trials, &space)?;
    let spec = objective_spec(&a.objective, &[])?;
    let obs = observations(&space, &trials, &spec)?;
    let mf = multi_fidelity(&a.fidelity, manifest.as_ref(), a.seed, DesignStart::Centre)?;
    if let Some(mf) = mf {
        return predict_mf(&a, &mf, &space, &trials, obs);
    }
    if a.at_fidelity.is_some() {
        bail!("--at-fidelity needs --fidelities and --target-fidelity");
    }
    let mixtures = read_mixtures(&a.at, &space)?;
    tracing::debug!(
        trials = obs.len(),
        dim = space.dim(),
        at = mixtures.len(),
        "predict: fitting the GP"
    );
    let mut ucb = GpUcb::new(a.surrogate.config(a.seed));
    let sqrt_beta = ucb
        .config()
        .beta
        .value(space.dim(), obs.len())
        .max(0.0)
        .sqrt();
    let gp = ucb.fit(&obs).context("fitting the GP to the trials")?;
    let mut flat = Vec::new();
    for w in &mixtures {
        flat.extend(space.from_mixture(w)?);
    }
    let (mean, var) = gp.predict(&flat);
    let mut out: Vec<serde_json::Value> = Vec::with_capacity(mixtures.len());
    for (i, (w, (&m, &v))) in mixtures.iter().zip(mean.iter().zip(&var)).enumerate() {
        let std = v.max(0.0).sqrt();
        let what = format!("{}: mixture {}", a.at.display(), i + 1);
        check_finite(&what, &[("mean", Some(m)), ("variance", Some(v))])?;
        let mut p = serde_json::json!({"mixture": named(&space, w), "mean": m, "std": std});
        if a.json {
            p["ucb"] = (m + sqrt_beta * std).into();
        }
        out.push(p);
    }
    let v = if a.json {
        serde_json::json!({
            "method": Method::GpUcb.name(), "trials": obs.len(), "predictions": out,
            "gp": gp.report(),
        })
    } else {
        serde_json::json!({"gp": gp.report(), "predictions": out})
    };
    output::print(serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

/// `predict` with fidelities: the GP over mixture × fidelity, read at the target (or
/// `--at-fidelity`).
fn predict_mf(
    a: &PredictArgs,
    mf: &MultiFidelity,
    space: &SearchSpace,
    trials: &[Trial],
    obs: Observations,
) -> Result<()> {
    let (mut p, mfobs) = mf_proposer(mf, space, trials, obs)?;
    let at = match &a.at_fidelity {
        Some(v) => {
            let f: Fidelity = v.parse().with_context(|| format!("--at-fidelity {v:?}"))?;
            mf.index(&f)
                .with_context(|| format!("--at-fidelity {v:?} is not among --fidelities"))?
        }
        None => mf.target,
    };
    let post = p.fit(&mfobs).context("fitting the GP to the trials")?;
    let u = p.levels()[at].features.clone();
    let out: Vec<serde_json::Value> = read_mixtures(&a.at, space)?
        .iter()
        .enumerate()
        .map(|(i, w)| -> Result<serde_json::Value> {
            let (m, s) = post.mean_std_at(&space.from_mixture(w)?, &u);
            let what = format!("{}: mixture {}", a.at.display(), i + 1);
            check_finite(&what, &[("mean", Some(m)), ("std", Some(s))])?;
            Ok(serde_json::json!({"mixture": named(space, w), "mean": m, "std": s}))
        })
        .collect::<Result<_>>()?;
    let mut v = serde_json::json!({
        "gp": post.gp().report(), "fidelity": mf.fidelities[at], "predictions": out,
    });
    if a.json {
        v["method"] = Method::GpUcb.name().into();
        v["trials"] = mfobs.obs.len().into();
    }
    output::print(serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

/// `recipe`: the recommended mixture as recipe.json (and a Megatron blend).
pub fn run_recipe(a: RecipeArgs) -> Result<()> {
    let (space, manifest) = load_space(&a.space)?;
    let trials = load_trials(&a.trials, &space)?;
    let spec = objective_spec(&a.objective, &a.target)?;
    let obs = observations(&space, &trials, &spec)?;
    let mf = multi_fidelity(&a.fidelity, manifest.as_ref(), a.seed, DesignStart::Centre)?;
    let p = if let Some(mf) = &mf {
        if a.method != Method::GpUcb || !a.target.is_empty() {
            bail!("--fidelities need --method gp-ucb and no --target (one GP over all benchmarks)");
        }
        let (mut p, mfobs) = mf_proposer(mf, &space, &trials, obs.clone())?;
        p.recommend(&space, &mfobs)?
    } else if !a.target.is_empty() && a.method == Method::GpUcb {
        // One GP per targeted benchmark, their posteriors combined linearly.
        let columns: Vec<(f64, Vec<f64>)> = spec
            .components(&trials)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|c| (c.weight, c.scores))
            .collect();
        GpUcb::new(a.surrogate.config(a.seed)).recommend_combined(&space, &obs.x, &columns)?
    } else if a.method == Method::GpUcb {
        GpUcb::new(a.surrogate.config(a.seed)).recommend(&space, &obs)?
    } else {
        a.method.proposer(a.seed).recommend(&space, &obs)?
    };
    check_proposals([&p])?;
    // In a multi-fidelity recipe only a trial at the target fidelity is the recipe.
    let at_target = |t: &Trial| {
        mf.as_ref()
            .is_none_or(|m| t.fidelity.as_ref() == Some(&m.fidelities[m.target]))
    };
    let trial = trials
        .iter()
        .filter(|t| at_target(t))
        .find(|t| {
            t.mixture
                .iter()
                .zip(&p.mixture)
                .all(|(x, y)| (x - y).abs() < 1e-9)
        })
        .map(|t| t.id.clone());
    let recipe = Recipe::from_proposal(
        &space,
        &p,
        RecipeSource {
            method: a.method.name().into(),
            trials: obs.len(),
            trial,
            target: a.target.clone(),
            predicted_mean: p.mean,
            predicted_std: p.std,
            reason: p.reason.clone(),
            fidelity: mf.as_ref().map(|m| m.fidelities[m.target].clone()),
        },
    );
    // The directory may be a search's: write only while no other process writes it.
    let dir = a.out.parent().filter(|p| !p.as_os_str().is_empty());
    let lock = DirLock::acquire(dir.unwrap_or(Path::new(".")), false)?;
    recipe.save(&a.out)?;
    drop(lock);
    eprintln!("recipe written to {}", a.out.display());
    match a.export.as_deref() {
        Some("megatron") => {
            let (m, dir) = match (&manifest, &a.space.corpus) {
                (Some(m), Some(d)) => (m, d),
                _ => bail!("--export megatron needs --corpus (the cells' file prefixes)"),
            };
            output::print(recipe.megatron_blend(m, dir))?;
        }
        Some(_) => output::print(serde_json::to_string_pretty(&recipe)?)?,
        None => {}
    }
    Ok(())
}
