//! What the acquisition layer may ask of a fitted surrogate: the [`Posterior`] trait and the
//! [`PointPosterior`] it returns.
//!
//! Its own file so that the models ([`super::gp`], [`super::combination`]) implement it without
//! importing the module root that re-exports them.

/// Mean, standard deviation and their gradients at one point (objective units).
#[derive(Debug, Clone, PartialEq)]
pub struct PointPosterior {
    /// Posterior mean μ(x).
    pub mean: f64,
    /// Posterior standard deviation σ(x) of the latent function (no observation noise).
    pub std: f64,
    /// ∇μ(x), length `d`.
    pub grad_mean: Vec<f64>,
    /// ∇σ(x), length `d`.
    pub grad_std: Vec<f64>,
}

/// What an acquisition function may ask of a fitted surrogate.
pub trait Posterior: Clone + Send + Sync {
    /// Input dimension `d`.
    fn dim(&self) -> usize;

    /// Posterior mean and variance of the latent function at `m` points (`x`: `m × d`
    /// row-major), in objective units.
    fn predict(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>);

    /// The posterior mean alone at `m` points, equal to [`Posterior::predict`]'s; a model may
    /// compute it without the variance (O(n) or O(m_inducing) a point instead of O(n²)).
    fn predict_mean(&self, x: &[f64]) -> Vec<f64> {
        self.predict(x).0
    }

    /// Mean, standard deviation and gradients at one point (`x`: length `d`).
    fn predict_point(&self, x: &[f64]) -> PointPosterior;

    /// Conditions on a hallucinated observation at `x` equal to the current posterior mean
    /// (GP-BUCB): the mean is unchanged, the variance shrinks around `x`.
    fn fantasize(&mut self, x: &[f64]);

    /// [`Posterior::fantasize`] at each of several points (`xs`: `m × d` row-major), in
    /// order; a model may condition on them at once.
    fn fantasize_many(&mut self, xs: &[f64]) {
        let d = self.dim();
        for x in xs.chunks_exact(d) {
            self.fantasize(x);
        }
    }
}
