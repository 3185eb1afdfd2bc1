//! A fixed linear combination of independent posteriors: the posterior of a weighted sum of
//! objectives, each with its own surrogate.
//!
//! With one GP per benchmark and the targeted objective `y = Σ_b w_b y_b` (a weighted mean of
//! benchmark scores), the combined posterior is
//!
//! ```text
//! μ(x) = Σ_b w_b μ_b(x),     σ²(x) = Σ_b w_b² σ_b²(x),
//! ```
//!
//! assuming the benchmarks' latent functions are independent a posteriori (their GPs are fitted
//! separately; correlations between benchmarks are ignored, which over- or under-states σ when
//! benchmarks co-vary). The gradients follow: `∇μ = Σ w_b ∇μ_b`, `∇σ = Σ w_b² σ_b ∇σ_b / σ`.
//! Fantasizing conditions every component on its own posterior mean at the point, so the
//! combined mean is unchanged and every component's variance shrinks.

use super::posterior::{PointPosterior, Posterior};

/// `Σ_b w_b f_b` of independent posteriors `f_b` (see the module documentation).
#[derive(Debug, Clone)]
pub struct LinearCombination<P: Posterior> {
    terms: Vec<(f64, P)>,
}

impl<P: Posterior> LinearCombination<P> {
    /// The combination of `(weight, posterior)` terms. Panics if `terms` is empty, if a weight
    /// is not finite, or if the posteriors' dimensions differ.
    pub fn new(terms: Vec<(f64, P)>) -> Self {
        assert!(!terms.is_empty(), "a linear combination needs a term");
        let d = terms[0].1.dim();
        for (w, p) in &terms {
            assert!(w.is_finite(), "weight {w} is not finite");
            assert_eq!(p.dim(), d, "posteriors of different dimensions");
        }
        Self { terms }
    }

    /// The terms, `(weight, posterior)`.
    pub fn terms(&self) -> &[(f64, P)] {
        &self.terms
    }
}

impl<P: Posterior> Posterior for LinearCombination<P> {
    fn dim(&self) -> usize {
        self.terms[0].1.dim()
    }

    fn predict(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let m = x.len() / self.dim().max(1);
        let mut mean = vec![0.0; m];
        let mut var = vec![0.0; m];
        for (w, p) in &self.terms {
            let (mb, vb) = p.predict(x);
            for ((a, b), (mu, v)) in mean.iter_mut().zip(var.iter_mut()).zip(mb.iter().zip(&vb)) {
                *a += w * mu;
                *b += w * w * v.max(0.0);
            }
        }
        (mean, var)
    }

    fn predict_point(&self, x: &[f64]) -> PointPosterior {
        let d = self.dim();
        let mut mean = 0.0;
        let mut var = 0.0;
        let mut grad_mean = vec![0.0; d];
        // Σ w² σ_b ∇σ_b = ½ ∇σ².
        let mut half_grad_var = vec![0.0; d];
        for (w, p) in &self.terms {
            let pb = p.predict_point(x);
            mean += w * pb.mean;
            var += w * w * pb.std * pb.std;
            for j in 0..d {
                grad_mean[j] += w * pb.grad_mean[j];
                half_grad_var[j] += w * w * pb.std * pb.grad_std[j];
            }
        }
        let std = var.max(0.0).sqrt();
        let grad_std = if std > 0.0 {
            half_grad_var.iter().map(|g| g / std).collect()
        } else {
            vec![0.0; d]
        };
        PointPosterior {
            mean,
            std,
            grad_mean,
            grad_std,
        }
    }

    fn fantasize(&mut self, x: &[f64]) {
        for (_, p) in &mut self.terms {
            p.fantasize(x);
        }
    }
}
