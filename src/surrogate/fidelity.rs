//! A GP over mixtures × fidelities, seen at one fidelity: [`AtFidelity`].
//!
//! Multi-fidelity search (Kandasamy et al. 2016, MF-GP-UCB; 2017, BOCA) models the objective
//! `g(x, z)` of a mixture `x` trained at fidelity `z` (model size, training length) with one
//! GP whose inputs are the mixture's coordinates followed by `p` *fidelity features* `u(z)`
//! (numbers chosen by the caller, 0 at the target fidelity; see
//! `acquisition::multifidelity::fidelity_features`). The [`Gp`] is the single-fidelity one,
//! fitted to the augmented inputs: its ARD kernel over `(x, u)` is, with [`super::Kernel::Rbf`],
//! exactly the product `k_x(x, x') · k_z(u, u')` of an RBF mixture kernel and an RBF fidelity
//! kernel (BoTorch's `SingleTaskMultiFidelityGP` multiplies a mixture kernel by a kernel over
//! the fidelity columns); with the default Matérn-5/2 it is a Matérn over the joint ARD
//! distance, as BoTorch's `SingleTaskGP` treats fidelity columns given as ordinary inputs.
//! The fidelity lengthscales are fitted with the others by maximum a posteriori; the linear
//! term, when on, carries a global trend along the fidelity features (e.g. a cheaper proxy's
//! higher loss everywhere).
//!
//! [`AtFidelity`] fixes `u` and is a [`Posterior`] over the mixture coordinates alone, so the
//! single-fidelity acquisition machinery (UCB maximisation, GP-BUCB fantasies, the μ − σ
//! recommendation) runs unchanged at the target fidelity. The single-fidelity search never
//! builds one: its numerics are untouched.

use super::gp::Gp;
use super::posterior::{PointPosterior, Posterior};

/// A GP fitted on `(x, u)` inputs, evaluated at fixed fidelity features `u`.
#[derive(Debug, Clone)]
pub struct AtFidelity {
    gp: Gp,
    u: Vec<f64>,
    d: usize,
}

/// `x` followed by `u`.
pub fn augment(x: &[f64], u: &[f64]) -> Vec<f64> {
    let mut v = Vec::with_capacity(x.len() + u.len());
    v.extend_from_slice(x);
    v.extend_from_slice(u);
    v
}

impl AtFidelity {
    /// The posterior of `gp` (inputs: `d + u.len()` coordinates) at fidelity features `u`.
    /// Panics if `gp` has no more inputs than `u` has features.
    pub fn new(gp: Gp, u: Vec<f64>) -> Self {
        let total = gp.dim();
        assert!(
            total > u.len(),
            "a GP of {total} inputs cannot take {} fidelity features",
            u.len()
        );
        Self {
            d: total - u.len(),
            gp,
            u,
        }
    }

    /// The underlying GP over `(x, u)`.
    pub fn gp(&self) -> &Gp {
        &self.gp
    }

    /// The fidelity features this posterior is evaluated at.
    pub fn features(&self) -> &[f64] {
        &self.u
    }

    /// The same GP (with any fantasies) evaluated at other fidelity features.
    pub fn at(&self, u: Vec<f64>) -> Self {
        assert_eq!(
            u.len(),
            self.u.len(),
            "fidelity features of the wrong length"
        );
        Self {
            gp: self.gp.clone(),
            u,
            d: self.d,
        }
    }

    /// Posterior mean and standard deviation of the latent function at mixture `x` and
    /// fidelity features `u`.
    pub fn mean_std_at(&self, x: &[f64], u: &[f64]) -> (f64, f64) {
        let (m, v) = self.gp.predict(&augment(x, u));
        (m[0], v[0].max(0.0).sqrt())
    }

    /// Conditions on a hallucinated observation at `(x, u)` equal to the posterior mean there
    /// (GP-BUCB's fantasy for a pending trial at another fidelity).
    pub fn fantasize_at(&mut self, x: &[f64], u: &[f64]) {
        self.gp.fantasize(&augment(x, u));
    }
}

impl Posterior for AtFidelity {
    fn dim(&self) -> usize {
        self.d
    }

    fn predict(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = self.d;
        assert_eq!(x.len() % d, 0, "query points must be m × d");
        let mut flat = Vec::with_capacity(x.len() / d * (d + self.u.len()));
        for r in x.chunks_exact(d) {
            flat.extend_from_slice(r);
            flat.extend_from_slice(&self.u);
        }
        self.gp.predict(&flat)
    }

    fn predict_point(&self, x: &[f64]) -> PointPosterior {
        assert_eq!(x.len(), self.d, "query point of the wrong dimension");
        let mut p = self.gp.predict_point(&augment(x, &self.u));
        p.grad_mean.truncate(self.d);
        p.grad_std.truncate(self.d);
        p
    }

    fn fantasize(&mut self, x: &[f64]) {
        let u = self.u.clone();
        self.fantasize_at(x, &u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surrogate::{GpConfig, GpHyperparameters, Kernel};

    fn data() -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..12 {
            let a = (i as f64 * 0.37).fract();
            let u = if i % 3 == 0 { 0.0 } else { 0.2 };
            x.push(vec![a, 1.0 - a, u]);
            y.push((3.0 * a).sin() - u);
        }
        (x, y)
    }

    #[test]
    fn predictions_equal_the_augmented_gp_and_gradients_match_finite_differences() {
        let (x, y) = data();
        let gp = Gp::fit(&x, &y, &GpConfig::default()).unwrap();
        let at = AtFidelity::new(gp.clone(), vec![0.2]);
        assert_eq!(at.dim(), 2);
        let q = [0.3, 0.7, 0.55, 0.45];
        let (m, v) = at.predict(&q);
        let (m2, v2) = gp.predict(&[0.3, 0.7, 0.2, 0.55, 0.45, 0.2]);
        assert_eq!((m, v), (m2, v2));
        let p = at.predict_point(&[0.3, 0.7]);
        assert_eq!(p.grad_mean.len(), 2);
        let h = 1e-6;
        for k in 0..2 {
            let mut a = vec![0.3, 0.7];
            let mut b = a.clone();
            a[k] += h;
            b[k] -= h;
            let fd = (at.predict_point(&a).mean - at.predict_point(&b).mean) / (2.0 * h);
            assert!(
                (fd - p.grad_mean[k]).abs() < 1e-5 * (1.0 + fd.abs()),
                "{fd} {p:?}"
            );
            let fs = (at.predict_point(&a).std - at.predict_point(&b).std) / (2.0 * h);
            assert!(
                (fs - p.grad_std[k]).abs() < 1e-5 * (1.0 + fs.abs()),
                "{fs} {p:?}"
            );
        }
        let (mu, sd) = at.mean_std_at(&[0.3, 0.7], &[0.2]);
        assert_eq!(mu, p.mean);
        assert!((sd - p.std).abs() < 1e-12);
    }

    #[test]
    fn rbf_kernel_over_augmented_inputs_is_the_product_of_the_two_kernels() {
        // Closed form with two trials: the prior covariance between (x, u) and (x', u') under
        // an RBF with ARD lengthscales is s² exp(−Δx²/2ℓx²) · exp(−Δu²/2ℓu²); with one
        // observation, σ²(q) = k(q,q) − k(q,a)²/(k(a,a)+σ²).
        let x = vec![vec![0.1, 0.0], vec![0.9, 0.5]];
        let y = vec![0.0, 1.0];
        let h = GpHyperparameters {
            lengthscales: vec![0.4, 0.3],
            outputscale: 2.0,
            noise: 0.01,
            mean: 0.5,
            linear: 0.0,
        };
        let gp = Gp::with_hyperparameters(&x, &y, Kernel::Rbf, &h).unwrap();
        let at = AtFidelity::new(gp, vec![0.5]);
        let k = |a: &[f64], b: &[f64]| {
            let kx = (-(a[0] - b[0]).powi(2) / (2.0 * 0.16)).exp();
            let ku = (-(a[1] - b[1]).powi(2) / (2.0 * 0.09)).exp();
            2.0 * kx * ku
        };
        // Full 2×2 solve in float64.
        let (a, b) = (&x[0], &x[1]);
        let (kaa, kab, kbb) = (k(a, a) + 0.01, k(a, b), k(b, b) + 0.01);
        let det = kaa * kbb - kab * kab;
        let q = [0.6, 0.5];
        let (ka, kb) = (k(&q, a), k(&q, b));
        let ra = y[0] - 0.5;
        let rb = y[1] - 0.5;
        let alpha_a = (kbb * ra - kab * rb) / det;
        let alpha_b = (kaa * rb - kab * ra) / det;
        let mean = 0.5 + ka * alpha_a + kb * alpha_b;
        let quad = (ka * (kbb * ka - kab * kb) + kb * (kaa * kb - kab * ka)) / det;
        let var = 2.0 - quad;
        let (m, v) = at.predict(&[0.6]);
        assert!((m[0] - mean).abs() < 1e-10, "{} vs {mean}", m[0]);
        assert!((v[0] - var).abs() < 1e-10, "{} vs {var}", v[0]);
    }

    #[test]
    fn fantasy_at_a_cheap_fidelity_shrinks_the_target_variance_less_than_one_at_the_target() {
        let (x, y) = data();
        let gp = Gp::fit(&x, &y, &GpConfig::default()).unwrap();
        let at = AtFidelity::new(gp, vec![0.0]);
        let q = [0.5, 0.5];
        let s0 = at.predict_point(&q).std;
        let mut cheap = at.clone();
        cheap.fantasize_at(&q, &[0.2]);
        let mut target = at.clone();
        target.fantasize(&q);
        let (sc, st) = (cheap.predict_point(&q).std, target.predict_point(&q).std);
        assert!(st < sc && sc <= s0 + 1e-12, "{s0} {sc} {st}");
    }
}
