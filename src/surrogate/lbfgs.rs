//! Limited-memory BFGS with a strong-Wolfe line search, for the GP's hyperparameter fit.
//!
//! Small and self-contained (the fit has tens of parameters): the two-loop recursion of
//! Nocedal & Wright (Algorithm 7.4) with the initial scaling `γ = sᵀy / yᵀy`, and their
//! line search (Algorithms 3.5/3.6) with safeguarded quadratic interpolation. The objective
//! may fail (return `None` or a non-finite value), e.g. when a kernel matrix cannot be
//! factorised; the line search then treats the point as infinitely bad and shrinks the step.

use std::collections::VecDeque;

/// Settings of [`minimize`].
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsConfig {
    /// Maximum number of iterations (line searches).
    pub max_iter: usize,
    /// Number of correction pairs kept.
    pub memory: usize,
    /// Stop when `‖g‖∞ ≤ gtol`.
    pub gtol: f64,
    /// Stop when an iteration decreases `f` by at most `ftol · max(|f|, 1)` (as SciPy's
    /// L-BFGS-B `ftol`).
    pub ftol: f64,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            max_iter: 200,
            memory: 10,
            gtol: 1e-5,
            ftol: 1e-10,
        }
    }
}

/// Outcome of [`minimize`].
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsResult {
    /// Best point found.
    pub x: Vec<f64>,
    /// Objective at `x`.
    pub f: f64,
    /// Gradient at `x`.
    pub grad: Vec<f64>,
    /// Iterations performed.
    pub iterations: usize,
    /// Objective evaluations.
    pub evaluations: usize,
    /// Whether a convergence test (`gtol` or `ftol`) was met, rather than `max_iter` or a
    /// failed line search.
    pub converged: bool,
}

/// Minimises `f` (returning value and gradient, or `None` where undefined) from `x0`.
/// Returns `None` when `f` is undefined at `x0`.
pub fn minimize<F>(mut f: F, x0: Vec<f64>, cfg: &LbfgsConfig) -> Option<LbfgsResult>
where
    F: FnMut(&[f64]) -> Option<(f64, Vec<f64>)>,
{
    let mut evaluations = 0usize;
    let mut eval = |x: &[f64]| -> Option<(f64, Vec<f64>)> {
        evaluations += 1;
        f(x).filter(|(v, g)| v.is_finite() && g.iter().all(|x| x.is_finite()))
    };
    let (mut fx, mut g) = eval(&x0)?;
    let mut x = x0;
    let n = x.len();
    let mut pairs: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::new(); // (s, y, 1/sᵀy)
    let mut converged = false;
    let mut iterations = 0;
    while iterations < cfg.max_iter {
        if norm_inf(&g) <= cfg.gtol {
            converged = true;
            break;
        }
        iterations += 1;
        let mut p = two_loop(&g, &pairs);
        let mut dg = dot(&p, &g);
        if dg.is_nan() || dg >= 0.0 {
            pairs.clear();
            p = g.iter().map(|v| -v).collect();
            dg = dot(&p, &g);
        }
        // Without curvature information, take a first step of length ≤ 1.
        let a0 = if pairs.is_empty() {
            (1.0 / norm2(&g)).min(1.0)
        } else {
            1.0
        };
        let Some((a, fa, ga)) = line_search(&mut eval, &x, fx, dg, &p, a0) else {
            if pairs.is_empty() {
                break;
            }
            pairs.clear();
            continue;
        };
        let x_new: Vec<f64> = x.iter().zip(&p).map(|(xi, pi)| xi + a * pi).collect();
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = ga.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * norm2(&s) * norm2(&y) && sy > 0.0 {
            if pairs.len() == cfg.memory.max(1) {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        let decrease = fx - fa;
        x = x_new;
        fx = fa;
        g = ga;
        if decrease <= cfg.ftol * fx.abs().max(1.0) {
            converged = true;
            break;
        }
    }
    debug_assert_eq!(x.len(), n);
    Some(LbfgsResult {
        x,
        f: fx,
        grad: g,
        iterations,
        evaluations,
        converged,
    })
}

/// `−H g` by the two-loop recursion (Nocedal & Wright, Algorithm 7.4).
fn two_loop(g: &[f64], pairs: &VecDeque<(Vec<f64>, Vec<f64>, f64)>) -> Vec<f64> {
    let mut q: Vec<f64> = g.to_vec();
    let mut alphas = Vec::with_capacity(pairs.len());
    for (s, y, rho) in pairs.iter().rev() {
        let a = rho * dot(s, &q);
        axpy(-a, y, &mut q);
        alphas.push(a);
    }
    if let Some((s, y, _)) = pairs.back() {
        let gamma = dot(s, y) / dot(y, y);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for ((s, y, rho), a) in pairs.iter().zip(alphas.into_iter().rev()) {
        let b = rho * dot(y, &q);
        axpy(a - b, s, &mut q);
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}

/// Strong-Wolfe line search along `p` (Nocedal & Wright, Algorithms 3.5 and 3.6). Returns the
/// step, the objective and the gradient there; `None` if no sufficient decrease was found.
fn line_search<E>(
    eval: &mut E,
    x: &[f64],
    f0: f64,
    d0: f64,
    p: &[f64],
    a0: f64,
) -> Option<(f64, f64, Vec<f64>)>
where
    E: FnMut(&[f64]) -> Option<(f64, Vec<f64>)>,
{
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    const MAX_EVALS: usize = 30;
    // φ(a) = f(x + a p), returning (φ, φ', gradient) or +∞ where f fails.
    let mut phi = |a: f64| -> (f64, f64, Vec<f64>) {
        let xa: Vec<f64> = x.iter().zip(p).map(|(xi, pi)| xi + a * pi).collect();
        match eval(&xa) {
            Some((v, g)) => (v, dot(&g, p), g),
            None => (f64::INFINITY, f64::NAN, Vec::new()),
        }
    };
    let armijo = |a: f64, v: f64| v <= f0 + C1 * a * d0;
    // Best point with sufficient decrease seen so far (fallback if Wolfe is never met).
    let mut best: Option<(f64, f64, Vec<f64>)> = None;
    let keep = |a: f64, v: f64, g: &Vec<f64>, best: &mut Option<(f64, f64, Vec<f64>)>| {
        if armijo(a, v) && best.as_ref().is_none_or(|b| v < b.1) {
            *best = Some((a, v, g.clone()));
        }
    };
    let (mut a_prev, mut f_prev, mut d_prev) = (0.0, f0, d0);
    let mut a = a0;
    let mut evals = 0;
    // Bracketing phase.
    let (mut lo, mut hi) = loop {
        let (fa, da, ga) = phi(a);
        evals += 1;
        keep(a, fa, &ga, &mut best);
        if !armijo(a, fa) || (evals > 1 && fa >= f_prev) {
            break ((a_prev, f_prev, d_prev), (a, fa, da));
        }
        if da.abs() <= -C2 * d0 {
            return Some((a, fa, ga));
        }
        if da >= 0.0 {
            break ((a, fa, da), (a_prev, f_prev, d_prev));
        }
        if evals >= MAX_EVALS {
            return best;
        }
        (a_prev, f_prev, d_prev) = (a, fa, da);
        a *= 2.0;
    };
    // Zoom phase: `lo` satisfies sufficient decrease and has the lower value.
    while evals < MAX_EVALS {
        let (a_lo, f_lo, d_lo) = lo;
        let (a_hi, f_hi, _) = hi;
        let width = (a_hi - a_lo).abs();
        if width < 1e-14 * a_lo.abs().max(1e-10) {
            break;
        }
        // Minimiser of the quadratic through (a_lo, f_lo, d_lo) and (a_hi, f_hi), kept
        // inside the middle 80 % of the interval; bisection when f_hi is not finite.
        let mut aj = if f_hi.is_finite() {
            let dx = a_hi - a_lo;
            let denom = 2.0 * (f_hi - f_lo - d_lo * dx);
            if denom > 0.0 {
                a_lo - d_lo * dx * dx / denom
            } else {
                0.5 * (a_lo + a_hi)
            }
        } else {
            0.5 * (a_lo + a_hi)
        };
        let (l, h) = (a_lo.min(a_hi), a_lo.max(a_hi));
        aj = aj.clamp(l + 0.1 * width, h - 0.1 * width);
        let (fj, dj, gj) = phi(aj);
        evals += 1;
        keep(aj, fj, &gj, &mut best);
        if !armijo(aj, fj) || fj >= f_lo {
            hi = (aj, fj, dj);
        } else {
            if dj.abs() <= -C2 * d0 {
                return Some((aj, fj, gj));
            }
            if dj * (a_hi - a_lo) >= 0.0 {
                hi = lo;
            }
            lo = (aj, fj, dj);
        }
    }
    best
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm2(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn norm_inf(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(yi, xi)| *yi += a * xi);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64]) -> Option<(f64, Vec<f64>)> {
        let n = x.len();
        let mut f = 0.0;
        let mut g = vec![0.0; n];
        for i in 0..n - 1 {
            let a = x[i + 1] - x[i] * x[i];
            let b = 1.0 - x[i];
            f += 100.0 * a * a + b * b;
            g[i] += -400.0 * x[i] * a - 2.0 * b;
            g[i + 1] += 200.0 * a;
        }
        Some((f, g))
    }

    #[test]
    fn rosenbrock_2d_and_10d() {
        let cfg = LbfgsConfig {
            max_iter: 500,
            gtol: 1e-8,
            ftol: 0.0,
            ..Default::default()
        };
        for x0 in [vec![-1.2, 1.0], vec![-1.0; 10], vec![2.0, -1.5, 0.3, 1.7]] {
            let r = minimize(rosenbrock, x0.clone(), &cfg).unwrap();
            assert!(r.converged, "{x0:?}: {r:?}");
            for v in &r.x {
                assert!((v - 1.0).abs() < 1e-6, "{x0:?}: {:?}", r.x);
            }
            assert!(r.f < 1e-12);
        }
        // The classic start needs a few dozen iterations, not hundreds.
        let r = minimize(rosenbrock, vec![-1.2, 1.0], &cfg).unwrap();
        // SciPy's L-BFGS-B needs about 36 iterations and 45 evaluations here.
        assert!(r.iterations < 60, "{} iterations", r.iterations);
    }

    #[test]
    fn ill_conditioned_quadratic() {
        // f = ½ Σ λ_i (x_i − c_i)², λ from 1 to 1e4.
        let n = 20;
        let lam: Vec<f64> = (0..n).map(|i| 10f64.powf(4.0 * i as f64 / 19.0)).collect();
        let c: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let f = |x: &[f64]| {
            let g: Vec<f64> = (0..n).map(|i| lam[i] * (x[i] - c[i])).collect();
            let v = 0.5 * (0..n).map(|i| g[i] * (x[i] - c[i])).sum::<f64>();
            Some((v, g))
        };
        // Unit steps satisfy the (loose, c2 = 0.9) Wolfe test, so this takes a few hundred
        // iterations rather than the ~40 of an exact line search.
        let cfg = LbfgsConfig {
            gtol: 1e-9,
            ftol: 0.0,
            max_iter: 2000,
            ..Default::default()
        };
        let r = minimize(f, vec![0.0; n], &cfg).unwrap();
        assert!(r.converged, "{r:?}");
        for (i, (x, c)) in r.x.iter().zip(&c).enumerate() {
            assert!((x - c).abs() < 1e-8, "{i}: {x} vs {c}");
        }
    }

    #[test]
    fn undefined_regions_shrink_the_step() {
        // f = x − log(x) for x > 0 (minimum at 1), undefined for x ≤ 0.
        let f = |x: &[f64]| (x[0] > 0.0).then(|| (x[0] - x[0].ln(), vec![1.0 - 1.0 / x[0]]));
        let r = minimize(f, vec![20.0], &LbfgsConfig::default()).unwrap();
        assert!((r.x[0] - 1.0).abs() < 1e-5, "{r:?}");
        assert!(minimize(f, vec![-1.0], &LbfgsConfig::default()).is_none());
    }
}
