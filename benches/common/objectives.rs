//! Synthetic objectives over the mixture simplex with known optima, and the harness that runs a
//! [`Proposer`] against them: how search quality is tested and benchmarked.
//!
//! Both objectives live on a joint [`SearchSpace`] over `d` (concept, task) cells with a skewed
//! prior (Zipf token shares, `p_c ∝ 1/rank`, ranks shuffled by the seed; RegMix samples around
//! it), are smooth with interactions between cells, are observed with Gaussian noise, and are
//! **normalised so that a flat-Dirichlet random mixture has an expected regret of exactly 1**
//! (quadratic: closed form; benchmark-like: 16,384 Monte-Carlo draws): regrets are comparable
//! across objectives and dimensions, and a method's regret reads as a fraction of the regret of
//! a random guess.
//!
//! - [`Quadratic`]: `f(w) = 1 − (w − w*)ᵀ A (w − w*)` with `A = Q diag(λ) Qᵀ` (`Q` a random
//!   rotation, `λ` log-uniform in `[0.1, 10]`: every pair of cells interacts) and an interior
//!   optimum `w* = 0.7 · Dirichlet(1, …, 1) + 0.3 · p`, so the optimum is `w*` with value 1 by
//!   construction.
//! - [`BenchmarkLike`]: `f(w) = s · (Σ_b v_b ln(1 + Σ_c A_bc w_c) − Σ_c h_c w_c)`: several
//!   benchmarks with saturating returns in the cells that feed them (each benchmark favours
//!   one task and a few concepts; cells feeding the same benchmark are substitutes), and a
//!   penalty on harmful cells (20 % of cells feed a tenth of what the others do and cost). The
//!   optimum uses only a few cells (a low face of the simplex). `f` is concave, so 24-start
//!   accelerated projected-gradient ascent, polished by Newton steps on the optimal face, finds
//!   its maximum; the Frank–Wolfe gap `max_c ∇f_c − wᵀ∇f ≥ f* − f(w)` certifies it
//!   ([`BenchmarkLike::optimum_gap`]: 0 to rounding on the benchmark's instances, < 1e-9
//!   required by the tests).
//!
//! [`run_harness`] runs rounds of `q` proposals, observes them with noise, and asks the method
//! for its recommendation; the *simple regret* is `f* − f(recommendation)` (noise-free).
//!
//! Benchmark support, not library code: `benches/search_quality.rs` and
//! `tests/search_quality.rs` include this file by path (`#[path] mod objectives;`), and each
//! uses only part of it.

use std::time::Instant;

use mixatlas::acquisition::space::project_bounded_simplex;
use mixatlas::acquisition::{
    Observations, ProposeError, Proposer, SearchSpace, SpaceConstraints, SpaceKind,
};
use mixatlas::rng::SplitMix64;

/// A synthetic objective over mixtures (one weight per cell, in the space's cell order);
/// higher is better.
pub trait Objective: Sync {
    /// Short name (`quadratic`, `benchmark`).
    fn name(&self) -> &str;
    /// The joint search space over the objective's cells, with its skewed prior.
    fn space(&self) -> &SearchSpace;
    /// Number of cells `d`.
    fn dim(&self) -> usize {
        self.space().cells()
    }
    /// Noise-free value at mixture `w`.
    fn value(&self, w: &[f64]) -> f64;
    /// Standard deviation of the observation noise.
    fn noise_std(&self) -> f64;
    /// A noisy observation at `w`: `value(w) + noise_std · N(0, 1)`.
    fn observe(&self, w: &[f64], rng: &mut SplitMix64) -> f64 {
        self.value(w) + self.noise_std() * rng.normal()
    }
    /// The maximum over the simplex.
    fn optimum(&self) -> f64;
    /// A maximiser.
    fn argmax(&self) -> &[f64];
    /// `optimum() − value(w)` (≥ 0 up to the optimum's accuracy).
    fn regret(&self, w: &[f64]) -> f64 {
        self.optimum() - self.value(w)
    }
}

const TASKS: [&str; 5] = ["captioning", "ocr", "grounding", "detection", "vqa"];

/// A joint space over `d` cells arranged as concepts × tasks (5 tasks if `d` is a multiple of 5,
/// else 3 if a multiple of 3, else 1), with a Zipf prior over a seeded permutation of ranks.
pub fn synthetic_space(d: usize, seed: u64) -> SearchSpace {
    assert!(d >= 2, "need at least 2 cells");
    let nt = if d % 5 == 0 {
        5
    } else if d % 3 == 0 {
        3
    } else {
        1
    };
    let nc = d / nt;
    let concepts: Vec<String> = (0..nc).map(|k| format!("c{k:02}")).collect();
    let tasks: Vec<String> = TASKS[..nt].iter().map(|t| t.to_string()).collect();
    let mut cells = Vec::with_capacity(d);
    let mut axes = Vec::with_capacity(d);
    for (k, c) in concepts.iter().enumerate() {
        for (t, tn) in tasks.iter().enumerate() {
            cells.push(format!("{c}/{tn}"));
            axes.push((k, t));
        }
    }
    let mut rank: Vec<usize> = (0..d).collect();
    SplitMix64::derive(seed, 0x50_5249_4f52).shuffle(&mut rank);
    let raw: Vec<f64> = rank.iter().map(|&r| 1.0 / (r + 1) as f64).collect();
    let z: f64 = raw.iter().sum();
    let prior = raw.iter().map(|v| v / z).collect();
    SearchSpace::new(
        SpaceKind::Joint,
        mixatlas::acquisition::space::SpaceCells {
            cells,
            cell_axes: axes,
            concepts,
            tasks,
            prior,
        },
        &SpaceConstraints::default(),
    )
    .expect("an unconstrained joint space is valid")
}

/// A flat-Dirichlet draw: a uniformly random mixture of `d` cells.
pub fn flat_dirichlet(rng: &mut SplitMix64, d: usize) -> Vec<f64> {
    let e: Vec<f64> = (0..d).map(|_| -(1.0 - rng.next_f64()).ln()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The concave quadratic `1 − (w − w*)ᵀA(w − w*)` with a known interior optimum.
#[derive(Debug, Clone)]
pub struct Quadratic {
    space: SearchSpace,
    /// `A` (`d × d`, row-major, symmetric positive definite, normalised).
    pub a: Vec<f64>,
    /// The optimum `w*`.
    pub w_star: Vec<f64>,
    noise_std: f64,
}

impl Quadratic {
    /// An instance with `d` cells for `seed`, observed with noise of standard deviation
    /// `noise_std` (in units of the expected regret of a random mixture).
    pub fn new(d: usize, seed: u64, noise_std: f64) -> Self {
        let space = synthetic_space(d, seed);
        let mut rng = SplitMix64::derive(seed, 0x5155_4144);
        // Random rotation: Gram–Schmidt on Gaussian columns.
        let mut q: Vec<Vec<f64>> = Vec::with_capacity(d);
        while q.len() < d {
            let mut v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
            for u in &q {
                let p: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, y)| *x -= p * y);
            }
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 1e-8 {
                q.push(v.into_iter().map(|x| x / n).collect());
            }
        }
        let lambda: Vec<f64> = (0..d)
            .map(|_| 10f64.powf(2.0 * rng.next_f64() - 1.0))
            .collect();
        let mut a = vec![0.0; d * d];
        for (u, &l) in q.iter().zip(&lambda) {
            for i in 0..d {
                for j in 0..d {
                    a[i * d + j] += l * u[i] * u[j];
                }
            }
        }
        // A typical point of the simplex (flat Dirichlet), pulled 30 % towards the prior so the
        // natural shares are informative but not the answer; interior since the prior is > 0.
        let e = flat_dirichlet(&mut rng, d);
        let w_star: Vec<f64> = (0..d).map(|i| 0.7 * e[i] + 0.3 * space.prior[i]).collect();
        // E over flat Dirichlet of (w−w*)ᵀA(w−w*) = tr(AC) + (m−w*)ᵀA(m−w*), with mean
        // m = 1/d and covariance C = (I/d − 11ᵀ/d²)/(d+1).
        let df = d as f64;
        let tr_a: f64 = (0..d).map(|i| a[i * d + i]).sum();
        let sum_a: f64 = a.iter().sum();
        let tr_ac = (tr_a / df - sum_a / (df * df)) / (df + 1.0);
        let dm: Vec<f64> = w_star.iter().map(|w| 1.0 / df - w).collect();
        let expected = tr_ac + quad_form(&a, &dm);
        a.iter_mut().for_each(|v| *v /= expected);
        Self {
            space,
            a,
            w_star,
            noise_std,
        }
    }
}

fn quad_form(a: &[f64], v: &[f64]) -> f64 {
    let d = v.len();
    let mut s = 0.0;
    for i in 0..d {
        let row = &a[i * d..(i + 1) * d];
        s += v[i] * row.iter().zip(v).map(|(x, y)| x * y).sum::<f64>();
    }
    s
}

impl Objective for Quadratic {
    fn name(&self) -> &str {
        "quadratic"
    }
    fn space(&self) -> &SearchSpace {
        &self.space
    }
    fn value(&self, w: &[f64]) -> f64 {
        assert_eq!(w.len(), self.w_star.len(), "mixture of the wrong length");
        let v: Vec<f64> = w.iter().zip(&self.w_star).map(|(a, b)| a - b).collect();
        1.0 - quad_form(&self.a, &v)
    }
    fn noise_std(&self) -> f64 {
        self.noise_std
    }
    fn optimum(&self) -> f64 {
        1.0
    }
    fn argmax(&self) -> &[f64] {
        &self.w_star
    }
}

/// Saturating per-benchmark returns minus a penalty for harmful cells; optimum computed.
#[derive(Debug, Clone)]
pub struct BenchmarkLike {
    space: SearchSpace,
    /// Benchmark weights `v_b`.
    pub v: Vec<f64>,
    /// Returns matrix `A` (`B × d`, row-major).
    pub a: Vec<f64>,
    /// Penalty per cell `h_c` (0 for useful cells).
    pub h: Vec<f64>,
    /// Normalising scale `s`.
    pub scale: f64,
    argmax: Vec<f64>,
    optimum: f64,
    gap: f64,
    noise_std: f64,
}

impl BenchmarkLike {
    /// An instance with `d` cells for `seed`, observed with noise of standard deviation
    /// `noise_std` (in units of the expected regret of a random mixture).
    pub fn new(d: usize, seed: u64, noise_std: f64) -> Self {
        let space = synthetic_space(d, seed);
        let nt = space.tasks.len();
        let nc = space.concepts.len();
        let nb = nt + 2;
        let mut rng = SplitMix64::derive(seed, 0x42_454e_4348);
        let v: Vec<f64> = (0..nb).map(|_| 0.5 + rng.next_f64()).collect();
        let mut harmful = vec![false; d];
        let mut idx: Vec<usize> = (0..d).collect();
        rng.shuffle(&mut idx);
        for &c in &idx[..(d / 5).max(1)] {
            harmful[c] = true;
        }
        let mut a = vec![0.0; nb * d];
        for b in 0..nb {
            let main = b % nt;
            let tau: Vec<f64> = (0..nt)
                .map(|t| {
                    if t == main {
                        1.0
                    } else {
                        0.3 * rng.next_f64().powi(2)
                    }
                })
                .collect();
            let gamma: Vec<f64> = (0..nc)
                .map(|_| (-(1.0 - rng.next_f64()).ln()).powi(2))
                .collect();
            let row = &mut a[b * d..(b + 1) * d];
            for (c, &(k, t)) in space.cell_axes.iter().enumerate() {
                row[c] = tau[t] * gamma[k] * if harmful[c] { 0.1 } else { 1.0 };
            }
            // Saturation: Σ_c A_bc w_c = 5 at the uniform mixture.
            let at_uniform: f64 = row.iter().sum::<f64>() / d as f64;
            row.iter_mut().for_each(|x| *x *= 5.0 / at_uniform);
        }
        let mut obj = Self {
            space,
            v,
            a,
            h: vec![0.0; d],
            scale: 1.0,
            argmax: vec![],
            optimum: 0.0,
            gap: 0.0,
            noise_std,
        };
        // Harmful cells cost as much as an average cell's benefit at the uniform mixture.
        let g = obj.gradient(&vec![1.0 / d as f64; d]);
        let eta = g.iter().sum::<f64>() / d as f64;
        for (h, &bad) in obj.h.iter_mut().zip(&harmful) {
            if bad {
                *h = eta * (0.5 + rng.next_f64());
            }
        }
        let (w, f, gap) = obj.maximise(seed);
        // Normalise: expected regret of a flat-Dirichlet mixture = 1.
        let mut mc = SplitMix64::derive(seed, 0x4d43);
        let m = 16_384;
        let mean_regret = (0..m)
            .map(|_| f - obj.value(&flat_dirichlet(&mut mc, d)))
            .sum::<f64>()
            / m as f64;
        obj.scale = 1.0 / mean_regret;
        obj.optimum = f * obj.scale;
        obj.gap = gap * obj.scale;
        obj.argmax = w;
        obj
    }

    /// Gradient of `f` at `w` (current scale).
    pub fn gradient(&self, w: &[f64]) -> Vec<f64> {
        let d = w.len();
        let mut g: Vec<f64> = self.h.iter().map(|h| -h).collect();
        for (b, &vb) in self.v.iter().enumerate() {
            let row = &self.a[b * d..(b + 1) * d];
            let s: f64 = row.iter().zip(w).map(|(x, y)| x * y).sum();
            let k = vb / (1.0 + s);
            g.iter_mut().zip(row).for_each(|(gi, r)| *gi += k * r);
        }
        g.iter_mut().for_each(|x| *x *= self.scale);
        g
    }

    /// Frank–Wolfe gap `max_c ∇f_c − wᵀ∇f` at `w`: an upper bound on `f* − f(w)` (concavity).
    pub fn fw_gap(&self, w: &[f64]) -> f64 {
        let g = self.gradient(w);
        let mx = g.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        mx - g.iter().zip(w).map(|(a, b)| a * b).sum::<f64>()
    }

    /// Certified accuracy of [`Objective::optimum`]: `f*` lies in `[optimum, optimum + gap]`
    /// (the smallest `f(x_i) + FW gap(x_i)` over the starts bounds `f*` from above).
    pub fn optimum_gap(&self) -> f64 {
        self.gap
    }

    /// Many-start accelerated projected-gradient ascent (backtracking, adaptive restart), each
    /// result polished by Newton steps on its face; returns (argmax, value, certified bound on
    /// `f* − value`: the smallest `f(x_i) + gap_i` over the starts, minus the best value).
    fn maximise(&self, seed: u64) -> (Vec<f64>, f64, f64) {
        let d = self.dim();
        let mut rng = SplitMix64::derive(seed, 0x53_5441_5254);
        let mut starts = vec![vec![1.0 / d as f64; d], self.space.prior.clone()];
        while starts.len() < 24 {
            starts.push(flat_dirichlet(&mut rng, d));
        }
        let zeros = vec![0.0; d];
        let ones = vec![1.0; d];
        let project = |x: &mut Vec<f64>| {
            project_bounded_simplex(x, 1.0, &zeros, &ones);
        };
        let mut results: Vec<(Vec<f64>, f64, f64)> = Vec::new();
        for s in starts {
            let mut x = s;
            let mut y = x.clone();
            let mut t: f64 = 1.0;
            let mut step: f64 = 1.0;
            let mut fx = self.value(&x);
            for _ in 0..5_000 {
                let g = self.gradient(&y);
                let fy = self.value(&y);
                // Backtracking on the quadratic upper model around y.
                let mut xn;
                loop {
                    xn = y
                        .iter()
                        .zip(&g)
                        .map(|(a, b)| a + step * b)
                        .collect::<Vec<_>>();
                    project(&mut xn);
                    let diff: Vec<f64> = xn.iter().zip(&y).map(|(a, b)| a - b).collect();
                    let lin: f64 = diff.iter().zip(&g).map(|(a, b)| a * b).sum();
                    let sq: f64 = diff.iter().map(|a| a * a).sum();
                    if self.value(&xn) >= fy + lin - sq / (2.0 * step) - 1e-15 || step < 1e-12 {
                        break;
                    }
                    step *= 0.5;
                }
                let fxn = self.value(&xn);
                if fxn < fx {
                    // Adaptive restart: momentum made things worse.
                    t = 1.0;
                    y = x.clone();
                    step *= 1.5;
                    continue;
                }
                let tn = 0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt());
                y = xn
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| a + (t - 1.0) / tn * (a - b))
                    .collect();
                project(&mut y);
                t = tn;
                x = xn;
                fx = fxn;
                step *= 1.2;
                if self.fw_gap(&x) < 1e-10 {
                    break;
                }
            }
            let x = self.polish(x);
            let fx = self.value(&x);
            let gap = self.fw_gap(&x);
            results.push((x, fx, gap));
        }
        // f* ≥ max_i f(x_i), and f* ≤ f(x_i) + gap_i for every start (concavity).
        let best = results
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .cloned()
            .unwrap();
        let upper = results
            .iter()
            .map(|r| r.1 + r.2)
            .fold(f64::INFINITY, f64::min);
        (best.0, best.1, (upper - best.1).max(0.0))
    }
}

impl BenchmarkLike {
    /// Newton steps on the face of the simplex spanned by `x`'s support (equality-constrained
    /// KKT system, tiny damping for the flat directions of the rank-`B` Hessian), each kept
    /// only if it lowers the Frank–Wolfe gap without leaving the simplex.
    fn polish(&self, mut x: Vec<f64>) -> Vec<f64> {
        let d = x.len();
        'outer: for _ in 0..30 {
            let gap = self.fw_gap(&x);
            let support: Vec<usize> = (0..d).filter(|&c| x[c] > 1e-12).collect();
            let k = support.len();
            if gap < 1e-15 || k < 2 {
                break;
            }
            let g = self.gradient(&x);
            // Hessian on the support: −s Σ_b v_b a_b a_bᵀ / (1 + a_bᵀx)².
            let mut h = vec![0.0; k * k];
            for (b, &vb) in self.v.iter().enumerate() {
                let row = &self.a[b * d..(b + 1) * d];
                let s: f64 = row.iter().zip(&x).map(|(p, q)| p * q).sum();
                let c = self.scale * vb / ((1.0 + s) * (1.0 + s));
                for (i, &ci) in support.iter().enumerate() {
                    for (j, &cj) in support.iter().enumerate() {
                        h[i * k + j] -= c * row[ci] * row[cj];
                    }
                }
            }
            let norm = (0..k).map(|i| h[i * k + i].abs()).fold(0.0, f64::max);
            for damping in [1e-12, 1e-9, 1e-6, 1e-3] {
                // KKT system [H − μI, 1; 1ᵀ, 0] [Δ; ν] = [−g; 0], augmented column last.
                let w = k + 2;
                let mut m = vec![0.0; (k + 1) * w];
                for i in 0..k {
                    for j in 0..k {
                        m[i * w + j] = h[i * k + j];
                    }
                    m[i * w + i] -= damping * norm.max(1e-300);
                    m[i * w + k] = 1.0;
                    m[k * w + i] = 1.0;
                    m[i * w + k + 1] = -g[support[i]];
                }
                let Some(step) = solve_dense(&mut m, k + 1) else {
                    continue;
                };
                let mut t = 1.0;
                for _ in 0..40 {
                    let mut xn = x.clone();
                    for (i, &c) in support.iter().enumerate() {
                        xn[c] += t * step[i];
                    }
                    if xn.iter().all(|&v| v >= 0.0) {
                        let s: f64 = xn.iter().sum();
                        xn.iter_mut().for_each(|v| *v /= s);
                        if self.fw_gap(&xn) < gap && self.value(&xn) >= self.value(&x) - 1e-15 {
                            x = xn;
                            continue 'outer;
                        }
                    }
                    t *= 0.5;
                }
            }
            break;
        }
        x
    }
}

/// Solves the `n × n` system stored row-major with its right-hand side as column `n` of an
/// `n × (n+1)` augmented matrix (Gaussian elimination, partial pivoting); `None` if singular.
fn solve_dense(m: &mut [f64], n: usize) -> Option<Vec<f64>> {
    let w = n + 1;
    for p in 0..n {
        let piv = (p..n).max_by(|&i, &j| m[i * w + p].abs().total_cmp(&m[j * w + p].abs()))?;
        if m[piv * w + p].abs() < 1e-300 {
            return None;
        }
        for j in 0..w {
            m.swap(p * w + j, piv * w + j);
        }
        for i in p + 1..n {
            let f = m[i * w + p] / m[p * w + p];
            for j in p..w {
                m[i * w + j] -= f * m[p * w + j];
            }
        }
    }
    let mut z = vec![0.0; n];
    for i in (0..n).rev() {
        let mut t = m[i * w + n];
        for j in i + 1..n {
            t -= m[i * w + j] * z[j];
        }
        z[i] = t / m[i * w + i];
    }
    Some(z)
}

impl Objective for BenchmarkLike {
    fn name(&self) -> &str {
        "benchmark"
    }
    fn space(&self) -> &SearchSpace {
        &self.space
    }
    fn value(&self, w: &[f64]) -> f64 {
        let d = self.h.len();
        assert_eq!(w.len(), d, "mixture of the wrong length");
        let mut f = -self.h.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
        for (b, &vb) in self.v.iter().enumerate() {
            let s: f64 = self.a[b * d..(b + 1) * d]
                .iter()
                .zip(w)
                .map(|(x, y)| x * y)
                .sum();
            f += vb * (1.0 + s).ln();
        }
        self.scale * f
    }
    fn noise_std(&self) -> f64 {
        self.noise_std
    }
    fn optimum(&self) -> f64 {
        self.optimum
    }
    fn argmax(&self) -> &[f64] {
        &self.argmax
    }
}

/// A harness run could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The method failed.
    #[error("{method}: {source}")]
    Propose {
        /// The method's name.
        method: String,
        /// What went wrong.
        source: ProposeError,
    },
    /// The method returned something invalid (wrong count, a point outside the space).
    #[error("{method}: {message}")]
    BadProposal {
        /// The method's name.
        method: String,
        /// What is wrong.
        message: String,
    },
}

/// Settings of [`run_harness_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct HarnessConfig {
    /// Total evaluations `N`.
    pub budget: usize,
    /// Proposals per round `q` (the last round may be smaller).
    pub q: usize,
    /// Seed of the observation noise.
    pub seed: u64,
    /// Numbers of evaluations after which to ask for a recommendation (the budget always is);
    /// a checkpoint between two rounds' counts is taken after the round that crosses it.
    pub recommend_at: Vec<usize>,
}

/// A recommendation made during a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Evaluations so far.
    pub evaluations: usize,
    /// `f* − f(recommendation)`, noise-free.
    pub simple_regret: f64,
    /// The recommended coordinates.
    pub x: Vec<f64>,
}

/// What happened in one search.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The method's name.
    pub method: String,
    /// Evaluations after each round.
    pub evaluations: Vec<usize>,
    /// After each round: regret of the trial with the best *observed* (noisy) value.
    pub incumbent_regret: Vec<f64>,
    /// After each round: smallest true regret among the evaluated trials.
    pub best_regret: Vec<f64>,
    /// Recommendations at the requested checkpoints and at the budget.
    pub checkpoints: Vec<Checkpoint>,
    /// Simple regret of the recommendation at the budget.
    pub simple_regret: f64,
    /// The trials (coordinates and noisy values).
    pub obs: Observations,
    /// Seconds spent in `propose`.
    pub propose_seconds: f64,
    /// Seconds spent in `recommend`.
    pub recommend_seconds: f64,
}

/// Runs `proposer` for `budget` evaluations in rounds of `q` on `objective` over `space`
/// (which must have the objective's cells), noise seeded by `seed`, and recommends at the end.
pub fn run_harness(
    proposer: &mut dyn Proposer,
    space: &SearchSpace,
    objective: &dyn Objective,
    budget: usize,
    q: usize,
    seed: u64,
) -> Result<Trace, HarnessError> {
    run_harness_with(
        proposer,
        space,
        objective,
        &HarnessConfig {
            budget,
            q,
            seed,
            recommend_at: vec![],
        },
    )
}

/// [`run_harness`] with recommendations at intermediate checkpoints.
pub fn run_harness_with(
    proposer: &mut dyn Proposer,
    space: &SearchSpace,
    objective: &dyn Objective,
    cfg: &HarnessConfig,
) -> Result<Trace, HarnessError> {
    assert_eq!(
        space.cells,
        objective.space().cells,
        "the space and the objective have different cells"
    );
    assert!(cfg.q > 0 && cfg.budget > 0, "budget and q must be positive");
    let method = proposer.name().to_string();
    let bad = |message: String| HarnessError::BadProposal {
        method: method.clone(),
        message,
    };
    let perr = |source| HarnessError::Propose {
        method: method.clone(),
        source,
    };
    let mut noise = SplitMix64::derive(cfg.seed, 0x4e_4f49_5345);
    let mut obs = Observations::default();
    let mut true_regret: Vec<f64> = Vec::new();
    let mut trace = Trace {
        method: method.clone(),
        evaluations: vec![],
        incumbent_regret: vec![],
        best_regret: vec![],
        checkpoints: vec![],
        simple_regret: f64::NAN,
        obs: Observations::default(),
        propose_seconds: 0.0,
        recommend_seconds: 0.0,
    };
    let mut pending: Vec<usize> = cfg
        .recommend_at
        .iter()
        .copied()
        .filter(|&n| n > 0 && n < cfg.budget)
        .collect();
    pending.sort_unstable();
    pending.dedup();
    pending.push(cfg.budget);
    let mut round = 0;
    while obs.len() < cfg.budget {
        let k = cfg.q.min(cfg.budget - obs.len());
        let t0 = Instant::now();
        let props = proposer.propose(space, &obs, k, round).map_err(perr)?;
        trace.propose_seconds += t0.elapsed().as_secs_f64();
        if props.len() != k {
            return Err(bad(format!(
                "round {round}: asked for {k} proposals, got {}",
                props.len()
            )));
        }
        for (i, p) in props.into_iter().enumerate() {
            if !space.contains(&p.x, 1e-9) {
                return Err(bad(format!(
                    "round {round}, proposal {i} is outside the space: {:?}",
                    p.x
                )));
            }
            let w = space.to_mixture(&p.x);
            let y = objective.observe(&w, &mut noise);
            true_regret.push(objective.regret(&w));
            obs.push(p.x, y);
        }
        round += 1;
        let n = obs.len();
        trace.evaluations.push(n);
        let inc = obs.best().expect("non-empty");
        trace.incumbent_regret.push(true_regret[inc]);
        trace
            .best_regret
            .push(true_regret.iter().cloned().fold(f64::INFINITY, f64::min));
        while pending.first().is_some_and(|&c| c <= n) {
            pending.remove(0);
            let t0 = Instant::now();
            let r = proposer.recommend(space, &obs).map_err(perr)?;
            trace.recommend_seconds += t0.elapsed().as_secs_f64();
            if !space.contains(&r.x, 1e-9) {
                return Err(bad(format!("recommendation outside the space: {:?}", r.x)));
            }
            trace.checkpoints.push(Checkpoint {
                evaluations: n,
                simple_regret: objective.regret(&space.to_mixture(&r.x)),
                x: r.x,
            });
        }
    }
    trace.simple_regret = trace
        .checkpoints
        .last()
        .expect("budget checkpoint")
        .simple_regret;
    trace.obs = obs;
    Ok(trace)
}

/// Mean and standard error of the mean of `v` (standard error 0 for fewer than 2 values).
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}
