//! Stationary covariance functions with ARD lengthscales: Matérn-5/2 and RBF.
//!
//! A kernel here is `k(x, x') = s² · φ(r²)` with `r² = Σ_k ((x_k − x'_k) / ℓ_k)²`, an
//! outputscale `s²` and one lengthscale `ℓ_k` per input dimension (automatic relevance
//! determination). This file holds the correlation `φ` and its derivative with respect to `r²`;
//! everything else (gradients with respect to lengthscales or inputs) follows by the chain rule
//! in [`super::gp`], because `∂r²/∂ log ℓ_k = −2 (Δ_k/ℓ_k)²` and `∂r²/∂x_k = 2 Δ_k / ℓ_k²`.

use serde::{Deserialize, Serialize};

/// `√5`.
const SQRT5: f64 = 2.236_067_977_499_79;

/// The covariance function of a [`super::Gp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// Matérn with ν = 5/2: `φ(r) = (1 + √5 r + 5r²/3) exp(−√5 r)` (twice differentiable
    /// sample paths; BoTorch's default).
    #[default]
    Matern52,
    /// Squared exponential: `φ(r) = exp(−r²/2)` (infinitely smooth sample paths).
    Rbf,
}

impl Kernel {
    /// Correlation `φ(r²)` (1 at `r² = 0`).
    #[inline]
    pub fn phi(self, r2: f64) -> f64 {
        self.phi_and_slope(r2).0
    }

    /// `φ(r²)` and `dφ/d(r²)`, both finite at `r² = 0`.
    #[inline]
    pub fn phi_and_slope(self, r2: f64) -> (f64, f64) {
        let r2 = r2.max(0.0);
        match self {
            Kernel::Matern52 => {
                let r = r2.sqrt();
                let e = (-SQRT5 * r).exp();
                let phi = (1.0 + SQRT5 * r + (5.0 / 3.0) * r2) * e;
                // dφ/dr = −(5/3) r (1 + √5 r) e, and dφ/d(r²) = (dφ/dr) / (2r).
                let slope = -(5.0 / 6.0) * (1.0 + SQRT5 * r) * e;
                (phi, slope)
            }
            Kernel::Rbf => {
                let phi = (-0.5 * r2).exp();
                (phi, -0.5 * phi)
            }
        }
    }

    /// Lower-case name (`"matern52"`, `"rbf"`), as in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Matern52 => "matern52",
            Kernel::Rbf => "rbf",
        }
    }
}

/// Squared distance between two points already divided by their lengthscales.
#[inline]
pub(crate) fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let t = x - y;
            t * t
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_matches_finite_differences() {
        for k in [Kernel::Matern52, Kernel::Rbf] {
            assert_eq!(k.phi(0.0), 1.0);
            for &r2 in &[1e-3, 0.1, 0.7, 2.0, 9.0] {
                let h = 1e-6 * r2;
                let fd = (k.phi(r2 + h) - k.phi(r2 - h)) / (2.0 * h);
                let (_, s) = k.phi_and_slope(r2);
                assert!((fd - s).abs() < 1e-7 * s.abs().max(1e-3), "{k:?} r2 {r2}");
            }
            // Monotone decreasing, positive.
            let mut prev = 1.0;
            for i in 1..50 {
                let v = k.phi(i as f64 * 0.3);
                assert!(v > 0.0 && v < prev);
                prev = v;
            }
        }
    }

    #[test]
    fn matern_closed_form_values() {
        // r = 1: (1 + √5 + 5/3) e^{−√5}.
        let want = (1.0 + SQRT5 + 5.0 / 3.0) * (-SQRT5).exp();
        assert!((Kernel::Matern52.phi(1.0) - want).abs() < 1e-15);
        assert!((Kernel::Rbf.phi(2.0) - (-1.0f64).exp()).abs() < 1e-15);
        assert_eq!(
            serde_json::to_string(&Kernel::Matern52).unwrap(),
            "\"matern52\""
        );
        assert_eq!(
            serde_json::from_str::<Kernel>("\"rbf\"").unwrap(),
            Kernel::Rbf
        );
    }
}
