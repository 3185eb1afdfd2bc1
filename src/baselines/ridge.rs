//! Ridge regression with an unpenalised intercept, the penalty chosen by exact leave-one-out
//! error over a grid (as scikit-learn's `RidgeCV`): RegMix's "linear" regressor.
//!
//! RegMix's paper fits an ordinary linear regression on hundreds of proxy runs; at the small
//! budgets MixAtlas targets (often fewer trials than cells) ordinary least squares is
//! underdetermined, so the penalty is the minimum needed to make the baseline well-posed, and
//! choosing it by leave-one-out keeps the baseline as strong as the data allow.
//!
//! Model: `ŷ(x) = b + βᵀx`. With `X̄`, `ȳ` the column means and `Xc = X − 1X̄ᵀ`,
//! `β = (XcᵀXc + αI)⁻¹ Xcᵀ(y − ȳ)` and `b = ȳ − X̄ᵀβ`, which is exactly ridge with an
//! unpenalised intercept. Its hat matrix is `H = 11ᵀ/n + Xc(XcᵀXc + αI)⁻¹Xcᵀ`, so the
//! leave-one-out residuals are `rᵢ / (1 − Hᵢᵢ)` in closed form.

use super::error::FitError;

/// Settings of [`Ridge::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeConfig {
    /// Candidate penalties α (> 0); the one with the smallest leave-one-out squared error is
    /// used (ties: the larger α). A single value fixes α.
    pub alphas: Vec<f64>,
}

impl Default for RidgeConfig {
    /// α ∈ {1e-6, 1e-5.5, …, 1e2} (17 values).
    fn default() -> Self {
        Self {
            alphas: (0..17).map(|i| 10f64.powf(-6.0 + 0.5 * i as f64)).collect(),
        }
    }
}

/// A fitted ridge regression.
#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    /// Intercept `b`.
    pub intercept: f64,
    /// Coefficients `β` (length `d`).
    pub coef: Vec<f64>,
    /// The penalty used.
    pub alpha: f64,
    /// Mean squared leave-one-out error at that penalty.
    pub loo_mse: f64,
}

/// In-place Cholesky factorisation of the SPD `n × n` row-major `a` (lower triangle holds `L`).
pub(super) fn cholesky(a: &mut [f64], n: usize) -> Result<(), FitError> {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if s.is_nan() || s <= 0.0 || s.is_infinite() {
            return Err(FitError::NotPositiveDefinite { pivot: j, value: s });
        }
        let l = s.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let mut t = a[i * n + j];
            for k in 0..j {
                t -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = t / l;
        }
    }
    Ok(())
}

/// Solves `L Lᵀ z = b` in place given the factor from [`cholesky`].
pub(super) fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let mut t = b[i];
        for k in 0..i {
            t -= l[i * n + k] * b[k];
        }
        b[i] = t / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut t = b[i];
        for k in i + 1..n {
            t -= l[k * n + i] * b[k];
        }
        b[i] = t / l[i * n + i];
    }
}

impl Ridge {
    /// Fits on `n` rows `x` (each of length `d`) and targets `y`.
    ///
    /// Panics if the rows have different lengths or `x` and `y` differ in length; returns an
    /// error for fewer than 2 rows, non-finite values or a non-positive α.
    pub fn fit(x: &[Vec<f64>], y: &[f64], cfg: &RidgeConfig) -> Result<Self, FitError> {
        assert_eq!(x.len(), y.len(), "x and y differ in length");
        let n = y.len();
        if n < 2 {
            return Err(FitError::TooFewSamples { need: 2, got: n });
        }
        let d = x[0].len();
        assert!(x.iter().all(|r| r.len() == d), "rows of different lengths");
        if x.iter().flatten().chain(y).any(|v| !v.is_finite()) {
            return Err(FitError::NonFinite);
        }
        if cfg.alphas.is_empty()
            || cfg
                .alphas
                .iter()
                .any(|&a| a.is_nan() || a <= 0.0 || a.is_infinite())
        {
            return Err(FitError::RidgePenalties(cfg.alphas.clone()));
        }
        let xm: Vec<f64> = (0..d)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n as f64)
            .collect();
        let ym = y.iter().sum::<f64>() / n as f64;
        let xc: Vec<f64> = x
            .iter()
            .flat_map(|r| r.iter().zip(&xm).map(|(v, m)| v - m))
            .collect();
        let yc: Vec<f64> = y.iter().map(|v| v - ym).collect();
        // G = XcᵀXc, c = Xcᵀyc.
        let mut g = vec![0.0; d * d];
        let mut c = vec![0.0; d];
        for i in 0..n {
            let row = &xc[i * d..(i + 1) * d];
            for a in 0..d {
                c[a] += row[a] * yc[i];
                for b in 0..=a {
                    g[a * d + b] += row[a] * row[b];
                }
            }
        }
        for a in 0..d {
            for b in 0..a {
                g[b * d + a] = g[a * d + b];
            }
        }
        let mut best: Option<Ridge> = None;
        for &alpha in &cfg.alphas {
            let mut m = g.clone();
            for a in 0..d {
                m[a * d + a] += alpha;
            }
            cholesky(&mut m, d)?;
            let mut beta = c.clone();
            cholesky_solve(&m, d, &mut beta);
            let mut sse = 0.0;
            let mut z = vec![0.0; d];
            for i in 0..n {
                let row = &xc[i * d..(i + 1) * d];
                z.copy_from_slice(row);
                cholesky_solve(&m, d, &mut z);
                let h = 1.0 / n as f64 + row.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>();
                let r = yc[i] - row.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>();
                let e = r / (1.0 - h).max(1e-12);
                sse += e * e;
            }
            let loo_mse = sse / n as f64;
            if best.as_ref().is_none_or(|b| loo_mse <= b.loo_mse) {
                let intercept = ym - xm.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>();
                best = Some(Ridge {
                    intercept,
                    coef: beta,
                    alpha,
                    loo_mse,
                });
            }
        }
        Ok(best.expect("at least one penalty"))
    }

    /// Prediction at one point `x` (length `d`).
    pub fn predict(&self, x: &[f64]) -> f64 {
        assert_eq!(x.len(), self.coef.len(), "point of the wrong length");
        self.intercept + self.coef.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The closed form with the intercept as an explicit, unpenalised column, solved by
    /// Gauss–Jordan elimination (a different route than centring + Cholesky).
    fn reference(x: &[Vec<f64>], y: &[f64], alpha: f64) -> Vec<f64> {
        let d = x[0].len() + 1;
        let mut a = vec![vec![0.0; d + 1]; d];
        for (r, &t) in x.iter().zip(y) {
            let z: Vec<f64> = std::iter::once(1.0).chain(r.iter().copied()).collect();
            for i in 0..d {
                for j in 0..d {
                    a[i][j] += z[i] * z[j];
                }
                a[i][d] += z[i] * t;
            }
        }
        for (i, row) in a.iter_mut().enumerate().skip(1) {
            row[i] += alpha;
        }
        for p in 0..d {
            let piv = (p..d)
                .max_by(|&i, &j| a[i][p].abs().total_cmp(&a[j][p].abs()))
                .unwrap();
            a.swap(p, piv);
            let v = a[p][p];
            for e in a[p].iter_mut() {
                *e /= v;
            }
            for i in 0..d {
                if i != p {
                    let f = a[i][p];
                    let rp = a[p].clone();
                    for (e, q) in a[i].iter_mut().zip(rp) {
                        *e -= f * q;
                    }
                }
            }
        }
        a.iter().map(|r| r[d]).collect()
    }

    #[test]
    fn equals_the_closed_form() {
        let mut rng = SplitMix64::new(11);
        for (n, d) in [(5usize, 2usize), (8, 3), (6, 9), (40, 15)] {
            let x: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..d).map(|_| rng.next_f64()).collect())
                .collect();
            let y: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            for alpha in [1e-3, 0.3, 10.0] {
                let m = Ridge::fit(
                    &x,
                    &y,
                    &RidgeConfig {
                        alphas: vec![alpha],
                    },
                )
                .unwrap();
                let r = reference(&x, &y, alpha);
                assert!(
                    (m.intercept - r[0]).abs() < 1e-9,
                    "{} {}",
                    m.intercept,
                    r[0]
                );
                for (a, b) in m.coef.iter().zip(&r[1..]) {
                    assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{a} {b}");
                }
            }
        }
    }

    /// Leave-one-out by actually refitting n times equals the closed form.
    #[test]
    fn loo_error_equals_refitting() {
        let mut rng = SplitMix64::new(5);
        let (n, d) = (9, 4);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..d).map(|_| rng.next_f64()).collect())
            .collect();
        let y: Vec<f64> = x
            .iter()
            .map(|r| r[0] - 2.0 * r[1] + 0.1 * rng.normal())
            .collect();
        let cfg = RidgeConfig { alphas: vec![0.05] };
        let m = Ridge::fit(&x, &y, &cfg).unwrap();
        let mut sse = 0.0;
        for i in 0..n {
            let xs: Vec<Vec<f64>> = (0..n).filter(|&j| j != i).map(|j| x[j].clone()).collect();
            let ys: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| y[j]).collect();
            let mi = Ridge::fit(&xs, &ys, &cfg).unwrap();
            sse += (y[i] - mi.predict(&x[i])).powi(2);
        }
        assert!(
            (m.loo_mse - sse / n as f64).abs() < 1e-10,
            "{} {}",
            m.loo_mse,
            sse / n as f64
        );
    }

    #[test]
    fn recovers_a_linear_function_and_rejects_bad_input() {
        let mut rng = SplitMix64::new(2);
        let x: Vec<Vec<f64>> = (0..30)
            .map(|_| (0..3).map(|_| rng.next_f64()).collect())
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 1.0 + 2.0 * r[0] - r[2]).collect();
        let m = Ridge::fit(&x, &y, &RidgeConfig::default()).unwrap();
        assert!((m.predict(&[0.5, 0.5, 0.5]) - 1.5).abs() < 1e-4);
        assert_eq!(m.alpha, 1e-6);
        assert!(matches!(
            Ridge::fit(&x[..1], &y[..1], &RidgeConfig::default()),
            Err(FitError::TooFewSamples { need: 2, got: 1 })
        ));
        let mut yb = y.clone();
        yb[3] = f64::INFINITY;
        assert!(matches!(
            Ridge::fit(&x, &yb, &RidgeConfig::default()),
            Err(FitError::NonFinite)
        ));
    }
}
