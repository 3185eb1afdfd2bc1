//! Multi-fidelity GP-UCB (MF-GP-UCB, Kandasamy et al. 2016; the fidelity rule of BOCA,
//! Kandasamy et al. 2017): choose a mixture by UCB at the target fidelity, then the cheapest
//! fidelity at which the surrogate is still uncertain enough there to be worth a trial.
//!
//! A *fidelity* is a way of running a trial (a model preset and a training length); the
//! *target* is the one recommendations are for. Each fidelity is described to the acquisition
//! by [`FidelityLevel`]: its name, its features `u(z)` (inputs of the GP beside the mixture's
//! coordinates, 0 at the target; [`fidelity_features`]) and its cost `λ(z)`.
//!
//! One round of `q` proposals (GP-BUCB batches, as [`super::ucb`]):
//!
//! 1. fit one GP to every finished trial on the inputs `(x, u(z))` ([`AtFidelity`]);
//! 2. `x` = the maximiser of `μ_T(x) + √β σ_T(x)`, the UCB at the target fidelity `T`;
//! 3. the trial's fidelity is the cheapest `z` with `λ(z) < λ(T)` whose posterior standard
//!    deviation at `(x, z)` exceeds its threshold
//!    `γ(z) = ξ · σ₀ · (λ(z) / λ(T))^q` (BOCA's `γ(z) = ξ(z) (λ(z)/λ(z•))^q` with
//!    `q = 1/(p + d + 2)`, `p` fidelity features, `d` mixture coordinates; `σ₀` the fitted
//!    outputscale's square root, so `ξ` is a fraction of the prior standard deviation), else
//!    `T`: a cheap trial is run only while it can still tell something about `x`, and as the
//!    cheap fidelity's uncertainty near `x` is used up the search moves to the target;
//! 4. condition on a fantasy at `(x, z)` equal to the posterior mean and repeat for the next
//!    batch point.
//!
//! Before `initial_design` trials exist the proposals are the space-filling design, run at the
//! cheapest fidelity (its first point, the start, at the target with
//! [`MfGpUcbConfig::target_start`]). The recommendation is made at the target fidelity: the highest lower
//! confidence bound `μ_T − σ_T` ([`recommend_lcb`]) over the trials' mixtures and the space.

use serde::{Deserialize, Serialize};

use super::design::maximin;
use super::proposer::{Observations, Proposal, ProposeError};
use super::space::SearchSpace;
use super::ucb::{candidates, maximize_ucb, recommend_lcb, GpUcbConfig, UcbSearch};
use crate::rng::SplitMix64;
use crate::surrogate::fidelity::augment;
use crate::surrogate::{AtFidelity, Gp, GpError, Posterior};

/// One fidelity as the acquisition sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidelityLevel {
    /// Display name (e.g. `mini:200`).
    pub name: String,
    /// Features `u(z)` appended to the mixture's coordinates (all 0 at the target).
    pub features: Vec<f64>,
    /// Cost `λ(z)` of one trial (any unit; only ratios matter).
    pub cost: f64,
}

/// A fidelity set that cannot be searched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FidelityError {
    /// Fewer than two fidelities.
    #[error("multi-fidelity search needs at least 2 fidelities, got {0}")]
    TooFew(usize),
    /// The target index is out of range.
    #[error("target fidelity {target} of {n} fidelities")]
    BadTarget {
        /// The index given.
        target: usize,
        /// Number of fidelities.
        n: usize,
    },
    /// A cost that is not finite and positive.
    #[error("fidelity {name}: cost {cost}; expected a finite positive number")]
    BadCost {
        /// The fidelity.
        name: String,
        /// Its cost.
        cost: f64,
    },
    /// Fidelities whose features are of different lengths or not finite.
    #[error("fidelity {name}: features {features:?}; expected {p} finite numbers")]
    BadFeatures {
        /// The fidelity.
        name: String,
        /// Its features.
        features: Vec<f64>,
        /// The expected length.
        p: usize,
    },
    /// Two fidelities with the same `(steps, parameters)`: nothing tells them apart.
    #[error("fidelities {0} and {1} have the same training steps and model size")]
    Duplicate(String, String),
}

/// Fidelity features of levels given as `(training steps, model parameters)`, for a search over
/// `d` mixture coordinates: `1 − steps/steps_T` (training length; BoTorch's `s`, flipped so the
/// target is 0) when the steps differ, and `ln(N_T / N)` (model size) when the sizes differ,
/// each divided by its largest magnitude over the levels and multiplied by `1/d` (a mixture
/// coordinate varies by about `1/d`, so the GP's common input scaling keeps its priors
/// meaningful for the mixture coordinates). The target's features are all 0.
pub fn fidelity_features(
    levels: &[(f64, f64)],
    target: usize,
    d: usize,
) -> Result<Vec<Vec<f64>>, FidelityError> {
    if target >= levels.len() {
        return Err(FidelityError::BadTarget {
            target,
            n: levels.len(),
        });
    }
    for (i, a) in levels.iter().enumerate() {
        for (j, b) in levels.iter().enumerate().skip(i + 1) {
            if a == b {
                return Err(FidelityError::Duplicate(i.to_string(), j.to_string()));
            }
        }
    }
    let (st, nt) = levels[target];
    let cols: [Vec<f64>; 2] = [
        levels.iter().map(|&(s, _)| 1.0 - s / st).collect(),
        levels.iter().map(|&(_, n)| (nt / n).ln()).collect(),
    ];
    let mut out = vec![Vec::new(); levels.len()];
    for c in cols {
        let m = c.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if m > 0.0 && m.is_finite() {
            for (o, v) in out.iter_mut().zip(&c) {
                o.push(v / m / d.max(1) as f64);
            }
        }
    }
    Ok(out)
}

/// Settings of [`MfGpUcb`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfGpUcbConfig {
    /// GP-UCB's settings (GP fit, β, candidates, design), used at the target fidelity.
    pub ucb: GpUcbConfig,
    /// `ξ` of the threshold `γ(z) = ξ σ₀ (λ(z)/λ(T))^q`.
    pub xi: f64,
    /// `q` of the threshold; `None` for BOCA's `1/(p + d + 2)`.
    pub q: Option<f64>,
    /// Run the design's first point (the start) at the target fidelity instead of the
    /// cheapest: one observation at the target anchors the fidelity kernel there before any
    /// recommendation is made (otherwise the first target trial waits for the threshold rule).
    pub target_start: bool,
}

impl Default for MfGpUcbConfig {
    fn default() -> Self {
        Self {
            ucb: GpUcbConfig::default(),
            xi: 0.2,
            q: None,
            target_start: false,
        }
    }
}

/// Finished trials of a multi-fidelity search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MfObservations {
    /// Mixtures and objectives, as for single-fidelity search.
    pub obs: Observations,
    /// Fidelity of each trial (index into the levels).
    pub fidelity: Vec<usize>,
}

/// One multi-fidelity proposal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MfProposal {
    /// The mixture (figures at the target fidelity).
    pub proposal: Proposal,
    /// The fidelity to run it at (index into the levels).
    pub fidelity: usize,
}

/// MF-GP-UCB (see the module documentation).
#[derive(Debug, Clone)]
pub struct MfGpUcb {
    cfg: MfGpUcbConfig,
    levels: Vec<FidelityLevel>,
    target: usize,
    last: Option<(MfObservations, Gp)>,
}

impl MfGpUcb {
    /// A proposer over `levels` recommending at `levels[target]`.
    pub fn new(
        cfg: MfGpUcbConfig,
        levels: Vec<FidelityLevel>,
        target: usize,
    ) -> Result<Self, FidelityError> {
        if levels.len() < 2 {
            return Err(FidelityError::TooFew(levels.len()));
        }
        if target >= levels.len() {
            return Err(FidelityError::BadTarget {
                target,
                n: levels.len(),
            });
        }
        let p = levels[0].features.len();
        for l in &levels {
            if !(l.cost.is_finite() && l.cost > 0.0) {
                return Err(FidelityError::BadCost {
                    name: l.name.clone(),
                    cost: l.cost,
                });
            }
            if l.features.len() != p || p == 0 || !l.features.iter().all(|v| v.is_finite()) {
                return Err(FidelityError::BadFeatures {
                    name: l.name.clone(),
                    features: l.features.clone(),
                    p: p.max(1),
                });
            }
        }
        Ok(Self {
            cfg,
            levels,
            target,
            last: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &MfGpUcbConfig {
        &self.cfg
    }

    /// The fidelities.
    pub fn levels(&self) -> &[FidelityLevel] {
        &self.levels
    }

    /// Index of the target fidelity.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Index of the cheapest fidelity (the earliest on ties).
    pub fn cheapest(&self) -> usize {
        (0..self.levels.len())
            .min_by(|&a, &b| self.levels[a].cost.total_cmp(&self.levels[b].cost))
            .expect("at least 2 levels")
    }

    /// The threshold `γ(z)` of every fidelity for a GP of outputscale `s²` over `d` mixture
    /// coordinates (the target's is unused: it is the fallback).
    pub fn thresholds(&self, outputscale: f64, d: usize) -> Vec<f64> {
        let p = self.levels[0].features.len();
        let q = self.cfg.q.unwrap_or(1.0 / (p + d + 2) as f64);
        let ct = self.levels[self.target].cost;
        self.levels
            .iter()
            .map(|l| self.cfg.xi * outputscale.sqrt() * (l.cost / ct).powf(q))
            .collect()
    }

    fn check(&self, space: &SearchSpace, obs: &MfObservations) -> Result<(), ProposeError> {
        obs.obs.validate(space)?;
        if obs.fidelity.len() != obs.obs.len() {
            return Err(ProposeError::BadObservations(format!(
                "{} fidelities for {} trials",
                obs.fidelity.len(),
                obs.obs.len()
            )));
        }
        if let Some(i) = obs.fidelity.iter().position(|&f| f >= self.levels.len()) {
            return Err(ProposeError::BadObservations(format!(
                "trial {i}: fidelity {} of {} fidelities",
                obs.fidelity[i],
                self.levels.len()
            )));
        }
        Ok(())
    }

    /// Fits the GP over `(x, u)` to `obs` (reusing the last fit when `obs` is unchanged) and
    /// returns its posterior at the target fidelity. `obs` must be valid.
    pub fn fit(&mut self, obs: &MfObservations) -> Result<AtFidelity, GpError> {
        let fresh = !matches!(&self.last, Some((o, _)) if o == obs);
        if fresh {
            let x: Vec<Vec<f64>> = obs
                .obs
                .x
                .iter()
                .zip(&obs.fidelity)
                .map(|(x, &f)| augment(x, &self.levels[f].features))
                .collect();
            let gp = Gp::fit(&x, &obs.obs.y, &self.cfg.ucb.gp)?;
            self.last = Some((obs.clone(), gp));
        }
        let gp = self.last.as_ref().expect("just fitted").1.clone();
        Ok(AtFidelity::new(
            gp,
            self.levels[self.target].features.clone(),
        ))
    }

    fn design(
        &self,
        space: &SearchSpace,
        obs: &MfObservations,
        q: usize,
        rng: &mut SplitMix64,
        reason: &str,
    ) -> Vec<MfProposal> {
        let c = &self.cfg.ucb;
        let cheap = self.cheapest();
        // The very first design point is the start (`maximin` puts it first on an empty
        // design); with `target_start` it runs at the target.
        let first = obs.obs.x.is_empty() && self.cfg.target_start;
        maximin(space, &obs.obs.x, q, c.candidates.max(4 * q), rng, c.start)
            .into_iter()
            .enumerate()
            .map(|(j, x)| {
                let (f, what) = if first && j == 0 {
                    (self.target, "the start")
                } else {
                    (cheap, "")
                };
                let reason = if what.is_empty() {
                    format!("{reason}, at {}", self.levels[f].name)
                } else {
                    format!("{reason}, {what} at the target {}", self.levels[f].name)
                };
                MfProposal {
                    proposal: Proposal::unscored(space, x, reason),
                    fidelity: f,
                }
            })
            .collect()
    }

    /// The fidelity for a trial at `x`: the cheapest cheaper-than-target level whose σ at
    /// `(x, z)` exceeds `γ(z)`, else the target; with the σ and γ that decided.
    fn choose_fidelity(&self, post: &AtFidelity, x: &[f64], gamma: &[f64]) -> (usize, String) {
        let ct = self.levels[self.target].cost;
        let mut order: Vec<usize> = (0..self.levels.len())
            .filter(|&i| i != self.target && self.levels[i].cost < ct)
            .collect();
        order.sort_by(|&a, &b| {
            self.levels[a]
                .cost
                .total_cmp(&self.levels[b].cost)
                .then(a.cmp(&b))
        });
        let mut why = Vec::new();
        for i in order {
            let (_, s) = post.mean_std_at(x, &self.levels[i].features);
            if s > gamma[i] {
                let note = format!("σ {s:.4} > γ {:.4} at {}", gamma[i], self.levels[i].name);
                return (i, note);
            }
            why.push(format!(
                "σ {s:.4} ≤ γ {:.4} at {}",
                gamma[i], self.levels[i].name
            ));
        }
        (self.target, why.join(", "))
    }

    /// The next `q` proposals with their fidelities (deterministic for `obs`, `q`, `round` and
    /// the seed).
    pub fn propose(
        &mut self,
        space: &SearchSpace,
        obs: &MfObservations,
        q: usize,
        round: usize,
    ) -> Result<Vec<MfProposal>, ProposeError> {
        self.check(space, obs)?;
        let ucb = self.cfg.ucb.clone();
        let mut rng = SplitMix64::derive(ucb.seed, round as u64);
        let n0 = ucb.initial_design_size(space.dim());
        if obs.obs.len() < n0.max(2) {
            return Ok(self.design(space, obs, q, &mut rng, "initial design"));
        }
        let post = match self.fit(obs) {
            Ok(p) => p,
            Err(e @ (GpError::NonFiniteY { .. } | GpError::BadInput { .. })) => {
                return Err(ProposeError::GpInput(e))
            }
            Err(e) => {
                tracing::warn!("GP fit failed ({e}); proposing a space-filling design");
                let reason = format!("space-filling (GP fit failed: {e})");
                return Ok(self.design(space, obs, q, &mut rng, &reason));
            }
        };
        let gamma = self.thresholds(post.gp().hyperparameters().outputscale, space.dim());
        let beta = ucb.beta.value(space.dim(), obs.obs.len());
        let pool = candidates(space, &obs.obs, ucb.candidates.max(q), &mut rng);
        let mut cond = post.clone();
        let mut out: Vec<MfProposal> = Vec::with_capacity(q);
        let mut chosen: Vec<Vec<f64>> = Vec::with_capacity(q);
        for j in 0..q {
            let search = UcbSearch {
                pool: &pool,
                beta,
                starts: ucb.starts.max(1),
                steps: ucb.ascent_steps,
                exclude: &chosen,
                min_distance: ucb.min_distance,
            };
            let Some(p) = maximize_ucb(&cond, space, &search) else {
                let mut rest = obs.clone();
                rest.obs.x.extend(chosen.iter().cloned());
                let mut more = self.design(space, &rest, q - j, &mut rng, "space-filling");
                out.append(&mut more);
                break;
            };
            let (f, why) = self.choose_fidelity(&cond, &p.x, &gamma);
            let pp = post.predict_point(&p.x);
            out.push(MfProposal {
                proposal: Proposal {
                    mixture: space.to_mixture(&p.x),
                    x: p.x.clone(),
                    mean: Some(pp.mean),
                    std: Some(pp.std),
                    acquisition: Some(p.value),
                    reason: format!(
                        "mf-ucb at the target {} (beta {beta:.3}); run at {} ({why})",
                        self.levels[self.target].name, self.levels[f].name
                    ),
                },
                fidelity: f,
            });
            if j + 1 < q {
                cond.fantasize_at(&p.x, &self.levels[f].features);
            }
            chosen.push(p.x);
        }
        Ok(out)
    }

    /// The recommendation at the target fidelity: the highest `μ_T − σ_T` over the trials'
    /// mixtures and the space ([`recommend_lcb`]); with fewer than 2 trials or no GP, the best
    /// trial at the target fidelity (or, if none ran there, the best trial).
    pub fn recommend(
        &mut self,
        space: &SearchSpace,
        obs: &MfObservations,
    ) -> Result<Proposal, ProposeError> {
        self.check(space, obs)?;
        if obs.obs.is_empty() {
            return Err(ProposeError::BadObservations(
                "no finished trials to recommend from".into(),
            ));
        }
        let fitted = if obs.obs.len() >= 2 {
            self.fit(obs).ok()
        } else {
            None
        };
        let Some(post) = fitted else {
            let at_target: Vec<usize> = (0..obs.obs.len())
                .filter(|&i| obs.fidelity[i] == self.target)
                .collect();
            let pool = if at_target.is_empty() {
                (0..obs.obs.len()).collect()
            } else {
                at_target
            };
            let i = *pool
                .iter()
                .max_by(|&&a, &&b| obs.obs.y[a].total_cmp(&obs.obs.y[b]))
                .expect("non-empty");
            return Ok(Proposal::unscored(
                space,
                obs.obs.x[i].clone(),
                format!("best of {} trials (no GP)", obs.obs.len()),
            ));
        };
        // The trials' mixtures, scored by the posterior mean at the target (a cheap trial's
        // own objective is not on the target's scale).
        let flat: Vec<f64> = obs.obs.x.iter().flatten().copied().collect();
        let (mean, _) = post.predict(&flat);
        let at_target = Observations {
            x: obs.obs.x.clone(),
            y: mean,
        };
        let model = format!(", at the target fidelity {}", self.levels[self.target].name);
        Ok(recommend_lcb(
            &post,
            space,
            &at_target,
            &self.cfg.ucb,
            &model,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquisition::SpaceConstraints;

    fn levels() -> Vec<FidelityLevel> {
        let f = fidelity_features(&[(100.0, 1e6), (200.0, 1e6), (200.0, 8e6)], 2, 3).unwrap();
        let names = ["mini:100", "mini:200", "small:200"];
        let costs = [1.0, 2.0, 16.0];
        (0..3)
            .map(|i| FidelityLevel {
                name: names[i].into(),
                features: f[i].clone(),
                cost: costs[i],
            })
            .collect()
    }

    #[test]
    fn features_are_zero_at_the_target_and_scaled_by_the_dimension() {
        let f = fidelity_features(&[(100.0, 1e6), (200.0, 1e6), (200.0, 8e6)], 2, 3).unwrap();
        // steps: 1 − s/200 = [0.5, 0, 0] → /0.5 → [1, 0, 0]; size: ln(8) → [1, 1, 0]; /3.
        let t = 1.0 / 3.0;
        assert_eq!(f, vec![vec![t, t], vec![0.0, t], vec![0.0, 0.0]]);
        // Only the steps vary: one feature.
        let g = fidelity_features(&[(50.0, 1.0), (200.0, 1.0)], 1, 1).unwrap();
        assert_eq!(g, vec![vec![1.0], vec![0.0]]);
        assert!(matches!(
            fidelity_features(&[(50.0, 1.0), (50.0, 1.0)], 1, 1),
            Err(FidelityError::Duplicate(..))
        ));
        assert!(matches!(
            fidelity_features(&[(50.0, 1.0)], 3, 1),
            Err(FidelityError::BadTarget { .. })
        ));
    }

    #[test]
    fn thresholds_follow_the_cost_ratio_power() {
        let mf = MfGpUcb::new(MfGpUcbConfig::default(), levels(), 2).unwrap();
        let g = mf.thresholds(4.0, 3);
        let q = 1.0 / 7.0; // p = 2, d = 3
        let want = |c: f64| 0.2 * 2.0 * (c / 16.0f64).powf(q);
        for (gi, c) in g.iter().zip([1.0, 2.0, 16.0]) {
            assert!((gi - want(c)).abs() < 1e-15);
        }
        assert!(g[0] < g[1] && g[1] < g[2]);
        assert_eq!(mf.cheapest(), 0);
    }

    #[test]
    fn bad_levels_are_rejected() {
        let mut l = levels();
        l[1].cost = 0.0;
        assert!(matches!(
            MfGpUcb::new(MfGpUcbConfig::default(), l, 2),
            Err(FidelityError::BadCost { .. })
        ));
        assert!(matches!(
            MfGpUcb::new(MfGpUcbConfig::default(), levels(), 5),
            Err(FidelityError::BadTarget { .. })
        ));
        assert!(matches!(
            MfGpUcb::new(MfGpUcbConfig::default(), levels()[..1].to_vec(), 0),
            Err(FidelityError::TooFew(1))
        ));
    }

    #[test]
    fn target_start_runs_only_the_first_design_point_at_the_target() {
        let space = SearchSpace::simplex(3, &SpaceConstraints::default()).unwrap();
        let cfg = MfGpUcbConfig {
            target_start: true,
            ..MfGpUcbConfig::default()
        };
        let mut mf = MfGpUcb::new(cfg, levels(), 2).unwrap();
        let mut plain = MfGpUcb::new(MfGpUcbConfig::default(), levels(), 2).unwrap();
        let obs = MfObservations::default();
        let first = mf.propose(&space, &obs, 3, 0).unwrap();
        let fids: Vec<usize> = first.iter().map(|p| p.fidelity).collect();
        assert_eq!(fids, [2, 0, 0]);
        assert!(first[0]
            .proposal
            .reason
            .contains("the start at the target small:200"));
        // The same mixtures as without the option; only the first one's fidelity differs.
        let same = plain.propose(&space, &obs, 3, 0).unwrap();
        for (a, b) in first.iter().zip(&same) {
            assert_eq!(a.proposal.x, b.proposal.x);
        }
        // The start is the centre of the simplex (the default start).
        for v in &first[0].proposal.mixture {
            assert!((v - 1.0 / 3.0).abs() < 1e-12, "{v}");
        }
        // Later design rounds stay at the cheapest fidelity.
        let mut later = obs.clone();
        later.obs.push(first[0].proposal.x.clone(), -1.0);
        later.fidelity.push(2);
        assert!(mf
            .propose(&space, &later, 2, 1)
            .unwrap()
            .iter()
            .all(|p| p.fidelity == 0));
    }

    #[test]
    fn design_runs_cheap_then_the_rule_picks_fidelities_by_their_thresholds() {
        let space = SearchSpace::simplex(3, &SpaceConstraints::default()).unwrap();
        let mut mf = MfGpUcb::new(MfGpUcbConfig::default(), levels(), 2).unwrap();
        let mut obs = MfObservations::default();
        let first = mf.propose(&space, &obs, 2, 0).unwrap();
        assert!(first.iter().all(|p| p.fidelity == 0));
        // A smooth objective, lower at cheaper fidelities.
        let f = |x: &[f64], l: usize| -(x[0] - 0.5).powi(2) - 0.2 * (2 - l) as f64;
        let mut rng = SplitMix64::new(3);
        for x in space.sample(&mut rng, 10) {
            for l in 0..3 {
                obs.obs.push(x.clone(), f(&x, l));
                obs.fidelity.push(l);
            }
        }
        let mut again = mf.clone();
        let props = mf.propose(&space, &obs, 3, 1).unwrap();
        assert_eq!(props, again.propose(&space, &obs, 3, 1).unwrap());
        let post = mf.fit(&obs).unwrap();
        let gamma = mf.thresholds(post.gp().hyperparameters().outputscale, 3);
        // The first pick's fidelity is the rule applied to the fitted (unconditioned) GP.
        let p0 = &props[0];
        let s: Vec<f64> = mf
            .levels()
            .iter()
            .map(|l| post.mean_std_at(&p0.proposal.x, &l.features).1)
            .collect();
        let want = if s[0] > gamma[0] {
            0
        } else if s[1] > gamma[1] {
            1
        } else {
            2
        };
        assert_eq!(p0.fidelity, want, "σ {s:?} γ {gamma:?}");
        // Thresholds above every σ send the trial to the target; below, to the cheapest.
        let mut hi = mf.clone();
        hi.cfg.xi = 1e6;
        assert!(hi
            .propose(&space, &obs, 2, 1)
            .unwrap()
            .iter()
            .all(|p| p.fidelity == 2));
        let mut lo = mf.clone();
        lo.cfg.xi = 0.0;
        assert!(lo
            .propose(&space, &obs, 2, 1)
            .unwrap()
            .iter()
            .all(|p| p.fidelity == 0));
        let rec = mf.recommend(&space, &obs).unwrap();
        assert!(
            rec.reason.contains("target fidelity small:200"),
            "{}",
            rec.reason
        );
        assert!((rec.x[0] - 0.5).abs() < 0.15, "{:?}", rec.x);
    }
}
