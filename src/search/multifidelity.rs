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
use super::trials::Trial;
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
        Self::resolve_with(cfg, Some(manifest))
    }

    /// [`MultiFidelity::resolve`] with the models' parameters counted for `manifest`'s corpus,
    /// or for the bare presets (text only) without one (ask/tell over a space file).
    pub fn resolve_with(
        cfg: &SearchConfig,
        manifest: Option<&Manifest>,
    ) -> Result<Option<Self>, SearchError> {
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
                xi: cfg.fidelity_xi.unwrap_or(MfGpUcbConfig::default().xi),
                target_start: cfg.fidelity_target_start,
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

    /// The fidelity index of each ask/tell trial (every one must have one of these).
    pub fn trial_indices(&self, trials: &[Trial]) -> Result<Vec<usize>, SearchError> {
        trials
            .iter()
            .map(|t| {
                t.fidelity
                    .as_ref()
                    .and_then(|f| self.index(f))
                    .ok_or_else(|| SearchError::TrialFidelity {
                        trial: format!("{} (line {})", t.id, t.line),
                        fidelity: t.fidelity.as_ref().map_or("none".into(), |f| f.to_string()),
                    })
            })
            .collect()
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

/// Parameters of `preset`'s model adapted to the corpus of `manifest` (the bare preset
/// without one).
pub fn model_params(preset: &str, manifest: Option<&Manifest>) -> Result<usize, SearchConfigError> {
    let mut cfg = Qwen2Config::preset(preset).map_err(|_| SearchConfigError::Fidelity {
        key: "fidelities",
        source: super::fidelity::FidelityParseError::UnknownPreset {
            value: preset.to_string(),
            preset: preset.to_string(),
            known: crate::model::config::PRESETS.join(", "),
        },
    })?;
    if let Some(m) = manifest {
        cfg.adapt_to(m);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::methods::Method;
    use crate::search::state::Event;

    fn f(s: &str) -> Fidelity {
        s.parse().unwrap()
    }

    fn mf_cfg() -> SearchConfig {
        SearchConfig {
            fidelities: vec![f("tiny:20"), f("mini:40")],
            target_fidelity: Some(f("mini:40")),
            ..SearchConfig::default()
        }
    }

    #[test]
    fn fidelity_settings_are_checked_with_the_key_and_value_named() {
        assert!(SearchConfig::default().validate().is_ok());
        assert!(mf_cfg().validate().is_ok());
        let err = |c: SearchConfig| c.validate().unwrap_err().to_string();
        let mut c = mf_cfg();
        c.target_fidelity = Some(f("tiny:40"));
        let e = err(c);
        assert!(
            e.contains("target_fidelity") && e.contains("tiny:40"),
            "{e}"
        );
        let mut c = mf_cfg();
        c.target_fidelity = None;
        assert!(err(c).contains("target_fidelity is not"));
        let mut c = mf_cfg();
        c.fidelities.push(f("tiny:20"));
        assert!(err(c).contains("tiny:20 is listed twice"));
        let mut c = mf_cfg();
        c.fidelities.truncate(1);
        assert!(err(c).contains("at least 2"));
        let mut c = mf_cfg();
        c.method = Method::Regmix;
        assert!(err(c).contains("method is regmix"));
        let mut c = mf_cfg();
        c.executor.kind = "slurm".into();
        assert!(err(c).contains("local executor"));
        let mut c = mf_cfg();
        c.fidelities[0].preset = "huge".into();
        let e = err(c);
        assert!(e.starts_with("fidelities:") && e.contains("huge"), "{e}");
        let mut c = mf_cfg();
        c.fidelities[1].steps = 0;
        assert!(err(c).contains("mini:0"));
        let mut c = mf_cfg();
        c.fidelity_xi = Some(0.0);
        assert!(err(c).contains("fidelity_xi = 0"));
        let mut c = mf_cfg();
        c.fidelity_target_start = true;
        assert!(c.validate().is_ok());
        let c = SearchConfig {
            fidelity_target_start: true,
            ..SearchConfig::default()
        };
        assert!(err(c).contains("fidelity_target_start = true needs"));
        let mut c = mf_cfg();
        c.budget.max_cost = -1.0;
        assert!(err(c).contains("budget.max_cost"));
        // A target without fidelities is a mistake, not ignored.
        let c = SearchConfig {
            target_fidelity: Some(f("mini:40")),
            ..SearchConfig::default()
        };
        assert!(err(c).contains("not among"));
    }

    #[test]
    fn config_spells_fidelities_as_strings_and_defaults_write_nothing_new() {
        #[derive(serde::Deserialize)]
        struct File {
            search: SearchConfig,
        }
        let text = r#"
            [search]
            fidelities = ["tiny:20", "mini:40"]
            target_fidelity = "mini:40"
            fidelity_cost = "measured"
            [search.budget]
            max_cost = 6.5
        "#;
        let c = toml::from_str::<File>(text).unwrap().search;
        assert_eq!(c.fidelities, vec![f("tiny:20"), f("mini:40")]);
        assert_eq!(c.target_fidelity, Some(f("mini:40")));
        assert_eq!(c.fidelity_cost, FidelityCost::Measured);
        assert_eq!(c.budget.max_cost, 6.5);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json["fidelities"],
            serde_json::json!(["tiny:20", "mini:40"])
        );
        assert_eq!(json["target_fidelity"], "mini:40");
        let back: SearchConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let bad = toml::from_str::<File>("[search]\nfidelities = [\"mini:0\"]\n");
        let e = bad.err().unwrap().to_string();
        assert!(e.contains("mini:0") && e.contains("fidelities"), "{e}");
        // Single-fidelity configurations serialise exactly as before the keys existed.
        let d = serde_json::to_string(&SearchConfig::default()).unwrap();
        for key in [
            "fidelities",
            "target_fidelity",
            "fidelity_cost",
            "fidelity_xi",
            "fidelity_target_start",
            "max_cost",
        ] {
            assert!(!d.contains(key), "{key} in {d}");
        }
    }

    #[test]
    fn events_carry_the_fidelity_only_when_there_is_one() {
        let ev = |fidelity| Event::Proposed {
            trial: "t0000".into(),
            round: 0,
            mixture: [("a/b".to_string(), 1.0)].into(),
            reason: "x".into(),
            mean: None,
            std: None,
            fidelity,
        };
        let old =
            r#"{"event":"proposed","trial":"t0000","round":0,"mixture":{"a/b":1.0},"reason":"x"}"#;
        assert_eq!(serde_json::to_string(&ev(None)).unwrap(), old);
        assert_eq!(serde_json::from_str::<Event>(old).unwrap(), ev(None));
        let new = serde_json::to_string(&ev(Some(f("mini:200")))).unwrap();
        assert!(
            new.ends_with(r#","fidelity":{"preset":"mini","steps":200}}"#),
            "{new}"
        );
        assert_eq!(
            serde_json::from_str::<Event>(&new).unwrap(),
            ev(Some(f("mini:200")))
        );
    }

    /// A search state with finished trials at the given fidelities and wall times.
    fn state(trials: &[(&str, f64)]) -> SearchState {
        let mut st = SearchState::default();
        for (i, &(fid, wall_s)) in trials.iter().enumerate() {
            let id = format!("t{i}");
            st.apply(
                Event::Proposed {
                    trial: id.clone(),
                    round: 0,
                    mixture: [("a/b".to_string(), 1.0)].into(),
                    reason: String::new(),
                    mean: None,
                    std: None,
                    fidelity: Some(f(fid)),
                },
                1,
            )
            .unwrap();
            st.apply(
                Event::Finished {
                    trial: id,
                    attempt: 1,
                    // Some score: a record without one replays as a failure.
                    metrics: serde_json::json!({"objective": 0.0}),
                    wall_s,
                    fidelity: Some(f(fid)),
                },
                1,
            )
            .unwrap();
        }
        st
    }

    #[test]
    fn costs_are_parameters_times_steps_or_measured_wall_time_relative_to_the_target() {
        let mut mf = MultiFidelity {
            fidelities: vec![f("tiny:20"), f("mini:40"), f("small:40")],
            target: 2,
            params: vec![1_000, 3_000, 12_000],
            cost: FidelityCost::Model,
            mf: MfGpUcbConfig::default(),
        };
        // 20·1000 / (40·12000), 40·3000 / (40·12000), 1.
        let model = vec![20_000.0 / 480_000.0, 0.25, 1.0];
        assert_eq!(mf.model_costs(), model);
        let st = state(&[("tiny:20", 2.0), ("mini:40", 3.0), ("tiny:20", 4.0)]);
        assert_eq!(mf.costs(&st), model);
        mf.cost = FidelityCost::Measured;
        // The target has no finished trial yet: the model's costs.
        assert_eq!(mf.costs(&st), model);
        let st = state(&[
            ("tiny:20", 2.0),
            ("mini:40", 3.0),
            ("tiny:20", 4.0),
            ("small:40", 12.0),
        ]);
        assert_eq!(mf.costs(&st), vec![3.0 / 12.0, 3.0 / 12.0, 1.0]);
        // Spent cost and the target-only best: trial t3 is the only target trial.
        assert_eq!(trial_cost(Some(&mf), &mf.costs(&st), &st.trials[1]), 0.25);
        assert_eq!(trial_cost(None, &[], &st.trials[1]), 1.0);
        let cfg = SearchConfig {
            fidelities: mf.fidelities.clone(),
            target_fidelity: Some(f("small:40")),
            ..SearchConfig::default()
        };
        let at: Vec<bool> = st.trials.iter().map(|t| at_target(&cfg, t)).collect();
        assert_eq!(at, vec![false, false, false, true]);
        assert!(at_target(&SearchConfig::default(), &st.trials[0]));
    }
}
