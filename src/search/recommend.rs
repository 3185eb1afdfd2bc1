//! The recipe a search recommends, rewritten after every round: the mixture with the highest
//! GP posterior mean among the evaluated and proposed mixtures and the method's own
//! recommendation (DESIGN.md), or the best observed trial while fewer than 3 have finished;
//! written as `recipe.json`, `recipe.blend.txt` and the fitted GP's `gp.json`.

use std::path::Path;

use super::config::SearchConfig;
use super::error::SearchError;
use super::methods::Method;
use super::objective::{observations, trial_point, trial_weights};
use super::plan::GP_FILE;
use super::recipe::{Recipe, RecipeSource};
use super::state::{SearchState, Status, TrialState};
use crate::acquisition::space::SearchSpace;
use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
use crate::acquisition::{Observations, Proposal, Proposer};
use crate::data::corpus::Manifest;
use crate::data::mixture::Mixture;
use crate::surrogate::Posterior;

/// The id of the candidate that is the method's recommendation rather than a trial.
const RECOMMENDED: &str = "recommended";

/// The candidate picked: its index, the GP's mean and std there, the GP's report.
type Pick = (usize, Option<f64>, Option<f64>, Option<serde_json::Value>);

/// The recipe: the mixture with the highest GP posterior mean among the evaluated and
/// proposed points (DESIGN.md), with the mean ± std; with fewer than 3 finished trials the
/// best observed trial. Also returns the fitted GP's report.
pub fn recipe(
    space: &SearchSpace,
    state: &SearchState,
    cfg: &SearchConfig,
) -> Result<Option<(Recipe, Option<serde_json::Value>)>, SearchError> {
    let finished = state.finished();
    let (obs, ys) = observations(space, &finished, cfg)?;
    if obs.is_empty() {
        return Ok(None);
    }
    // One GP serves both the GP-UCB recommendation and the ranking of the candidates (the
    // second `fit` of the same observations reuses the first).
    let mut ucb = warm_gp_ucb(cfg);
    // A search with many trials pending (asynchronous, many slots) fits at scale.
    let live = state
        .trials
        .iter()
        .filter(|t| !matches!(t.status, Status::Abandoned { .. }))
        .count();
    ucb.assume_pending(live.saturating_sub(finished.len()));
    let candidates = candidates(space, state, cfg, &obs, &mut ucb)?;
    let candidates: Vec<&TrialState> = candidates.iter().collect();
    let (best, mean, std, gp_report) = if obs.len() >= 3 {
        pick_by_gp(space, &mut ucb, &obs, &candidates, &ys)?
    } else {
        best_observed(&candidates, &ys)
    };
    let t = candidates[best];
    let w = trial_weights(space, t)?;
    let trial = (t.id != RECOMMENDED).then(|| t.id.clone());
    let p = Proposal {
        x: trial_point(space, t)?,
        mixture: w,
        mean,
        std,
        acquisition: None,
        reason: if mean.is_some() {
            format!(
                "highest GP posterior mean among the evaluated and proposed mixtures and the {} recommendation",
                cfg.method.name()
            )
        } else {
            "best observed trial".into()
        },
    };
    let source = RecipeSource {
        method: cfg.method.name().into(),
        trials: obs.len(),
        trial,
        target: cfg.objective.weights.keys().cloned().collect(),
        predicted_mean: mean,
        predicted_std: std,
        reason: p.reason.clone(),
        fidelity: None,
    };
    Ok(Some((Recipe::from_proposal(space, &p, source), gp_report)))
}

/// Every trial not left out, and (from 3 finished trials on) the method's own
/// recommendation (GP-UCB: the highest lower confidence bound over the whole space, which
/// need not be a trial; made by `ucb`, whose fit the ranking then reuses).
fn candidates(
    space: &SearchSpace,
    state: &SearchState,
    cfg: &SearchConfig,
    obs: &Observations,
    ucb: &mut GpUcb,
) -> Result<Vec<TrialState>, SearchError> {
    let mut candidates: Vec<TrialState> = state
        .trials
        .iter()
        .filter(|t| !matches!(t.status, Status::Abandoned { .. }))
        .cloned()
        .collect();
    if obs.len() >= 3 {
        let recommended = match cfg.method {
            Method::GpUcb => ucb.recommend(space, obs),
            m => m.proposer_from(cfg.seed, cfg.start).recommend(space, obs),
        };
        if let Ok(p) = recommended {
            let mixture = Mixture::from_order(&space.cells, &p.mixture).map_err(|source| {
                SearchError::Mixture {
                    trial: RECOMMENDED.into(),
                    source,
                }
            })?;
            candidates.push(TrialState {
                id: RECOMMENDED.into(),
                round: 0,
                mixture: mixture.into_weights(),
                reason: p.reason,
                attempts: 0,
                failures: 0,
                last_failure: None,
                status: Status::Pending,
                job: None,
                fidelity: None,
            });
        }
    }
    Ok(candidates)
}

/// Above this many candidates the recipe ranks them by the posterior mean alone.
const MEAN_ONLY_MIN: usize = 1024;

/// The candidate with the highest GP posterior mean (the best observed one if the GP cannot
/// be fitted).
fn pick_by_gp(
    space: &SearchSpace,
    ucb: &mut GpUcb,
    obs: &Observations,
    candidates: &[&TrialState],
    ys: &[(String, f64)],
) -> Result<Pick, SearchError> {
    let mut flat = Vec::new();
    for t in candidates {
        flat.extend(trial_point(space, t)?);
    }
    let scored = ucb.fit(obs).ok().map(|gp| {
        let d = space.dim();
        // Many candidates (a large search): rank by the mean alone (the same values), then
        // the variance of the one picked.
        let (m, v) = if candidates.len() > MEAN_ONLY_MIN {
            let m = gp.predict_mean(&flat);
            (m, Vec::new())
        } else {
            gp.predict(&flat)
        };
        let k = (0..m.len()).max_by(|&a, &b| m[a].total_cmp(&m[b])).unwrap();
        let vk = match v.get(k) {
            Some(&vk) => vk,
            None => gp.predict(&flat[k * d..(k + 1) * d]).1[0],
        };
        (k, m[k], vk.max(0.0).sqrt(), gp.report())
    });
    Ok(match scored {
        Some((k, mean, std, mut report)) => {
            report.fitted_on = ucb.fitted_on();
            (k, Some(mean), Some(std), serde_json::to_value(report).ok())
        }
        None => best_observed(candidates, ys),
    })
}

/// The recipe's GP-UCB (the search's seed, default settings), warm-started from the last
/// recipe's `gp.json` (used only past the size where fits are warm-started, so small
/// searches are unchanged); an unreadable file is ignored.
fn warm_gp_ucb(cfg: &SearchConfig) -> GpUcb {
    let mut ucb = GpUcb::new(GpUcbConfig {
        start: cfg.start,
        ..GpUcbConfig::seeded(cfg.seed)
    });
    if let Some(r) = std::fs::read(cfg.out.join(GP_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::surrogate::GpReport>(&b).ok())
    {
        ucb.seed_report(&r);
    }
    ucb
}

fn best_observed(candidates: &[&TrialState], ys: &[(String, f64)]) -> Pick {
    let (id, _) = ys
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least one observation");
    let k = candidates.iter().position(|t| &t.id == id).unwrap_or(0);
    (k, None, None, None)
}

/// Writes `recipe.json`, `recipe.blend.txt` and `gp.json` into `out` (nothing before the
/// first trial finishes), never a new recipe beside an old blend
/// ([`Recipe::save_with_blend`]).
pub fn write_recipe(
    out: &Path,
    space: &SearchSpace,
    state: &SearchState,
    cfg: &SearchConfig,
    manifest: &Manifest,
) -> Result<(), SearchError> {
    if let Some((r, gp)) = recipe(space, state, cfg)? {
        save_recipe(out, &r, gp.as_ref(), manifest, cfg)?;
    }
    Ok(())
}

/// Writes a search's recipe, its blend (prefixes under `cfg.corpus`) and the GP's report.
pub fn save_recipe(
    out: &Path,
    r: &Recipe,
    gp: Option<&serde_json::Value>,
    manifest: &Manifest,
    cfg: &SearchConfig,
) -> Result<(), SearchError> {
    let blend = r.megatron_blend(manifest, &cfg.corpus);
    let gp: Vec<(&str, String)> = gp
        .map(|g| (GP_FILE, serde_json::to_string_pretty(g).expect("gp report")))
        .into_iter()
        .collect();
    r.save_with_blend(out, &blend, &gp)?;
    Ok(())
}
