//! The multi-fidelity search (`[search] fidelities`, two or more): what each fidelity
//! costs, the MF-GP-UCB proposals with their fidelities, the cost budget, and the recipe at
//! the target fidelity.
//!
//! - Cost of a trial at fidelity `z = (preset, steps)`: by default the model's parameter
//!   count (the preset adapted to the corpus, as `mixatlas train` builds it) × steps, the
//!   tokens per step being shared by every fidelity of a search (one `[train]` table);
//!   with `fidelity_cost = "measured"`, the mean wall time of the finished trials at each
//!   fidelity once every fidelity has one. Either is normalised so a target trial costs 1.
//! - The GP's fidelity features are `acquisition::multifidelity::fidelity_features` of
//!   `(steps, parameters)`.
//! - Objectives of cheaper fidelities are not on the target's scale: the recipe is MF-GP-UCB's
//!   recommendation at the target, and "best so far" counts target-fidelity trials only.

use super::config::{FidelityCost, SearchConfig};
use super::error::SearchError;
use super::fidelity::Fidelity;
use super::objective::observations;
use super::recipe::{Recipe, RecipeSource};
use super::state::{SearchState, Status, TrialState};
use crate::acquisition::multifidelity::{
    fidelity_features, FidelityLevel, MfGpUcb, MfGpUcbConfig, MfObservations,
};
use crate::acquisition::space::SearchSpace;
use crate::acquisition::ucb::GpUcbConfig;
use crate::acquisition::Proposal;
use crate::data::corpus::Manifest;
use crate::model::config::Qwen2Config;

use super::config::SearchConfigError;

/// The fidelities of a multi-fidelity search, resolved against its corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiFidelity {
    /// The fidelities, in the configured order.
    pub fidelities: Vec<Fidelity>,
    /// Index of the target.
    pub target: usize,
    /// Parameters of each fidelity's model (its preset adapted to the corpus).
    pub params: Vec<usize>,
    /// How costs are reckoned.
    pub cost: FidelityCost,
    /// MF-GP-UCB's settings.
    pub mf: MfGpUcbConfig,
}

impl MultiFidelity {
    /// The multi-fidelity setup of `cfg` (`None` for a single-fidelity search). `cfg` must
    /// be valid ([`SearchConfig::validate`]).
    pub fn resolve(cfg: &SearchConfig, manifest: &Manifest) -> Result<Option<Self>, SearchError> {
        if !cfg.is_multi_fidelity() {
            return Ok(None);
        }
        let target = cfg.target_index().ok_or_else(|| {
            SearchConfigError::NoTarget(
                cfg.fidelities
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
        let mut params = Vec::new();
        for f in &cfg.fidelities {
            params.push(model_params(&f.preset, manifest)?);
        }
        Ok(Some(Self {
            fidelities: cfg.fidelities.clone(),
            target,
            params,
            cost: cfg.fidelity_cost,
            mf: MfGpUcbConfig {
                ucb: GpUcbConfig {
                    start: cfg.start,
                    ..GpUcbConfig::seeded(cfg.seed)
                },
                ..MfGpUcbConfig::default()
            },
        }))
    }

    /// Index of `f` among the fidelities.
    pub fn index(&self, f: &Fidelity) -> Option<usize> {
        self.fidelities.iter().position(|g| g == f)
    }

    /// The fidelity of a trial as an index (an error for a trial without one or with
    /// another).
    pub fn index_of(&self, t: &TrialState) -> Result<usize, SearchError> {
        t.fidelity
            .as_ref()
            .and_then(|f| self.index(f))
            .ok_or_else(|| SearchError::TrialFidelity {
                trial: t.id.clone(),
                fidelity: t.fidelity.as_ref().map_or("none".into(), |f| f.to_string()),
            })
    }

    /// The model's cost of each fidelity, parameters × steps, relative to the target's.
    pub fn model_costs(&self) -> Vec<f64> {
        let raw: Vec<f64> = self
            .fidelities
            .iter()
            .zip(&self.params)
            .map(|(f, &n)| n as f64 * f.steps as f64)
            .collect();
        let t = raw[self.target];
        raw.iter().map(|c| c / t).collect()
    }

    /// The cost of each fidelity relative to the target's, as configured: the model's, or
    /// (measured) the mean wall time of the finished trials at each fidelity once every
    /// fidelity has one.
    pub fn costs(&self, state: &SearchState) -> Vec<f64> {
        if self.cost == FidelityCost::Model {
            return self.model_costs();
        }
        let mut sum = vec![0.0; self.fidelities.len()];
        let mut n = vec![0usize; self.fidelities.len()];
        for t in &state.trials {
            if let (Status::Finished { wall_s, .. }, Some(i)) =
                (&t.status, t.fidelity.as_ref().and_then(|f| self.index(f)))
            {
                sum[i] += wall_s;
                n[i] += 1;
            }
        }
        let mean: Vec<f64> = sum.iter().zip(&n).map(|(s, &k)| s / k as f64).collect();
        if n.contains(&0) || mean.iter().any(|m| !(m.is_finite() && *m > 0.0)) {
            return self.model_costs();
        }
        mean.iter().map(|m| m / mean[self.target]).collect()
    }

    /// The levels MF-GP-UCB sees for a space of `d` coordinates at `costs`.
    pub fn levels(&self, costs: &[f64], d: usize) -> Result<Vec<FidelityLevel>, SearchError> {
        let pairs: Vec<(f64, f64)> = self
            .fidelities
            .iter()
            .zip(&self.params)
            .map(|(f, &n)| (f.steps as f64, n as f64))
            .collect();
        let features = fidelity_features(&pairs, self.target, d)?;
        Ok(self
            .fidelities
            .iter()
            .zip(features)
            .zip(costs)
            .map(|((f, features), &cost)| FidelityLevel {
                name: f.to_string(),
                features,
                cost,
            })
            .collect())
    }

    /// MF-GP-UCB over these fidelities at the costs `state` implies.
    pub fn proposer(
        &self,
        space: &SearchSpace,
        state: &SearchState,
    ) -> Result<MfGpUcb, SearchError> {
        let levels = self.levels(&self.costs(state), space.dim())?;
        Ok(MfGpUcb::new(self.mf.clone(), levels, self.target)?)
    }

    /// The finished trials as MF-GP-UCB's observations, with every trial's objective by id.
    pub fn observations(
        &self,
        space: &SearchSpace,
        state: &SearchState,
        cfg: &SearchConfig,
    ) -> Result<(MfObservations, Vec<(String, f64)>), SearchError> {
        let finished = state.finished();
        let (obs, ys) = observations(space, &finished, cfg)?;
        let fidelity = finished
            .iter()
            .map(|t| self.index_of(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((MfObservations { obs, fidelity }, ys))
    }

    /// The next `q` proposals with their fidelities.
    pub fn propose(
        &self,
        space: &SearchSpace,
        state: &SearchState,
        cfg: &SearchConfig,
        q: usize,
        round: usize,
    ) -> Result<Vec<(Proposal, Option<Fidelity>)>, SearchError> {
        let (obs, _) = self.observations(space, state, cfg)?;
        let mut mf = self.proposer(space, state)?;
        let props = mf
            .propose(space, &obs, q, round)
            .map_err(|source| SearchError::Propose { round, source })?;
        Ok(props
            .into_iter()
            .map(|p| (p.proposal, Some(self.fidelities[p.fidelity].clone())))
            .collect())
    }

    /// The recipe at the target fidelity (MF-GP-UCB's recommendation: the highest
    /// `μ_T − σ_T` over the trials' mixtures and the space) with the GP's report; `None`
    /// before any trial finished.
    pub fn recipe(
        &self,
        space: &SearchSpace,
        state: &SearchState,
        cfg: &SearchConfig,
    ) -> Result<Option<(Recipe, Option<serde_json::Value>)>, SearchError> {
        let (obs, _) = self.observations(space, state, cfg)?;
        if obs.obs.is_empty() {
            return Ok(None);
        }
        let mut mf = self.proposer(space, state)?;
        let p = mf
            .recommend(space, &obs)
            .map_err(|source| SearchError::Propose {
                round: state.next_round(),
                source,
            })?;
        let report = if obs.obs.len() >= 2 {
            mf.fit(&obs)
                .ok()
                .and_then(|post| serde_json::to_value(post.gp().report()).ok())
        } else {
            None
        };
        let finished = state.finished();
        let trial = finished
            .iter()
            .zip(&obs.fidelity)
            .zip(&obs.obs.x)
            .find(|((_, &f), x)| {
                f == self.target && x.iter().zip(&p.x).all(|(a, b)| (a - b).abs() < 1e-9)
            })
            .map(|((t, _), _)| t.id.clone());
        let target = self.fidelities[self.target].clone();
        let source = RecipeSource {
            method: cfg.method.name().into(),
            trials: obs.obs.len(),
            trial,
            target: cfg.objective.weights.keys().cloned().collect(),
            predicted_mean: p.mean,
            predicted_std: p.std,
            reason: p.reason.clone(),
            fidelity: Some(target),
        };
        Ok(Some((Recipe::from_proposal(space, &p, source), report)))
    }
}

/// Parameters of `preset`'s model adapted to the corpus of `manifest`.
pub fn model_params(preset: &str, manifest: &Manifest) -> Result<usize, SearchConfigError> {
    let mut cfg = Qwen2Config::preset(preset).map_err(|_| SearchConfigError::Fidelity {
        key: "fidelities",
        source: super::fidelity::FidelityParseError::UnknownPreset {
            value: preset.to_string(),
            preset: preset.to_string(),
            known: crate::model::config::PRESETS.join(", "),
        },
    })?;
    cfg.adapt_to(manifest);
    Ok(cfg.num_params())
}

/// The cost of trial `t` relative to a target trial (1 in a single-fidelity search).
pub fn trial_cost(mf: Option<&MultiFidelity>, costs: &[f64], t: &TrialState) -> f64 {
    match (mf, t.fidelity.as_ref()) {
        (Some(mf), Some(f)) => mf.index(f).map_or(1.0, |i| costs[i]),
        _ => 1.0,
    }
}

/// Whether `t` counts toward "best so far": every trial of a single-fidelity search, only
/// target-fidelity trials of a multi-fidelity one.
pub fn at_target(cfg: &SearchConfig, t: &TrialState) -> bool {
    !cfg.is_multi_fidelity() || t.fidelity.is_some() && t.fidelity == cfg.target_fidelity
}
