//! The proposer interface every search method implements ([`Proposer`]), the trials it reads
//! ([`Observations`], with the one check of trials every proposer uses), what it returns
//! ([`Proposal`]) and how it fails ([`ProposeError`]).

use crate::surrogate::GpError;

use super::space::{SearchSpace, SpaceError};

/// Finished trials in the space's coordinates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Coordinates of each trial (`n` vectors of length `d`).
    pub x: Vec<Vec<f64>>,
    /// Objective of each trial (higher is better).
    pub y: Vec<f64>,
}

impl Observations {
    /// Number of trials.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no trials.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Appends a trial.
    pub fn push(&mut self, x: Vec<f64>, y: f64) {
        self.x.push(x);
        self.y.push(y);
    }

    /// Checks that the trials are usable by any proposer: as many objectives as coordinate
    /// vectors, finite objectives, `space.dim()` finite coordinates each, and every point in
    /// the space. The error names the first bad trial.
    pub fn validate(&self, space: &SearchSpace) -> Result<(), ProposeError> {
        let bad = |m: String| Err(ProposeError::BadObservations(m));
        if self.x.len() != self.y.len() {
            return bad(format!(
                "{} coordinate vectors for {} objective values",
                self.x.len(),
                self.y.len()
            ));
        }
        for (i, (x, &y)) in self.x.iter().zip(&self.y).enumerate() {
            if !y.is_finite() {
                return bad(format!(
                    "trial {i}: objective is {y}; expected a finite number"
                ));
            }
            if x.len() != space.dim() {
                return bad(format!(
                    "trial {i}: {} coordinates, the space has {}",
                    x.len(),
                    space.dim()
                ));
            }
            if let Some(j) = x.iter().position(|v| !v.is_finite()) {
                return bad(format!(
                    "trial {i}: coordinate {:?} is {}",
                    space.coord_names[j], x[j]
                ));
            }
            if !space.contains(x, 1e-6) {
                return bad(format!(
                    "trial {i}: not a mixture of the search space (off the simplex or outside \
                     the bounds)"
                ));
            }
        }
        Ok(())
    }

    /// Index of the best trial, if any.
    pub fn best(&self) -> Option<usize> {
        (0..self.y.len()).max_by(|&a, &b| self.y[a].total_cmp(&self.y[b]))
    }
}

/// One proposed mixture.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Proposal {
    /// Coordinates in the space.
    pub x: Vec<f64>,
    /// Cell weights (sum 1), in the space's cell order.
    pub mixture: Vec<f64>,
    /// The surrogate's posterior mean at `x`, when the method has one.
    pub mean: Option<f64>,
    /// The surrogate's posterior standard deviation at `x`, when the method has one.
    pub std: Option<f64>,
    /// The acquisition value at `x` (e.g. UCB), when the method has one.
    pub acquisition: Option<f64>,
    /// Why this point: `"initial design"`, `"ucb"`, `"regmix"`, …
    pub reason: String,
}

impl Proposal {
    /// A proposal at `x` without surrogate figures (design points, baselines, the best trial).
    pub fn unscored(space: &SearchSpace, x: Vec<f64>, reason: impl Into<String>) -> Self {
        Self {
            mixture: space.to_mixture(&x),
            x,
            mean: None,
            std: None,
            acquisition: None,
            reason: reason.into(),
        }
    }
}

/// A proposer could not produce mixtures.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The observations are unusable (message names the trial and what is wrong).
    #[error("{0}")]
    BadObservations(String),
    /// The GP rejected the trials (a non-finite objective or coordinate, mismatched lengths):
    /// its error names the trial.
    #[error(transparent)]
    GpInput(GpError),
    /// The GP of one objective of a combination rejected that objective's scores.
    #[error("objective {objective}: {source}")]
    ObjectiveGpInput {
        /// Index of the objective in the combination.
        objective: usize,
        /// The GP's error (names the trial).
        #[source]
        source: GpError,
    },
    /// A surrogate model (e.g. RegMix's regressor) could not be fitted.
    #[error("surrogate: {model}: {source}")]
    Surrogate {
        /// The model's name (e.g. `regmix-gbdt`).
        model: String,
        /// The model's own error (e.g. `baselines::FitError`).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The search space is invalid.
    #[error(transparent)]
    Space(#[from] SpaceError),
}

/// Anything that proposes the next `q` mixtures from finished trials.
pub trait Proposer {
    /// Short name (`gp-ucb`, `regmix`, …).
    fn name(&self) -> &str;

    /// The next `q` distinct proposals. `round` counts proposal rounds from 0 (for β
    /// schedules and seeding); the result is deterministic for (`obs`, `q`, `round`, seed).
    fn propose(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError>;

    /// The next `q` proposals given `pending` points (proposed, not finished: running
    /// trials) that the batch must account for; the default ignores `pending`.
    fn propose_pending(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
        pending: &[Vec<f64>],
        q: usize,
        round: usize,
    ) -> Result<Vec<Proposal>, ProposeError> {
        let _ = pending;
        self.propose(space, obs, q, round)
    }

    /// The method's final recommendation from the trials so far (the recipe). The default is
    /// the best evaluated trial; model-based methods override it (GP-UCB: the highest lower
    /// confidence bound μ − σ; RegMix: the mean of the top predicted candidates).
    fn recommend(
        &mut self,
        space: &SearchSpace,
        obs: &Observations,
    ) -> Result<Proposal, ProposeError> {
        obs.validate(space)?;
        let i = obs.best().ok_or_else(|| {
            ProposeError::BadObservations("no finished trials to recommend from".into())
        })?;
        Ok(Proposal::unscored(
            space,
            obs.x[i].clone(),
            format!("best of {} trials", obs.len()),
        ))
    }
}
