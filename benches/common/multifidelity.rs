//! A two-fidelity synthetic objective with known optima, and the equal-cost harness that runs
//! multi-fidelity GP-UCB against single-fidelity GP-UCB on it (issue 17's known answer).
//!
//! [`TwoFidelity`]: the target fidelity is [`Quadratic`] `f(w) = 1 − (w − w*)ᵀA(w − w*)`
//! (regret units: a random mixture's expected regret is 1); the cheap fidelity is the same
//! curvature around a *different* optimum, lower everywhere:
//! `g(w) = 1 − offset − (w − w_c)ᵀA(w − w_c)` with `w_c = (1 − shift) w* + shift e` (`e` a
//! second flat-Dirichlet draw pulled 30 % towards the prior), so trusting the cheap fidelity
//! alone leaves the target regret `f* − f(w_c) = shift² (e − w*)ᵀA(e − w*)`. Both are observed
//! with the same Gaussian noise; a cheap trial costs `cheap_cost` target trials.
//!
//! [`run_two_fidelity`] spends a total cost (in target trials) with one of three methods, in
//! rounds of `q` proposals, stopping at the first proposal the remaining budget cannot pay
//! for, and scores the recommendation by its noise-free simple regret at the target.
//!
//! Benchmark support, not library code: included by path beside `objectives.rs` from
//! `benches/search_quality.rs` and `tests/search_quality.rs`.

use mixatlas::acquisition::multifidelity::{
    fidelity_features, FidelityLevel, MfGpUcb, MfGpUcbConfig, MfObservations,
};
use mixatlas::acquisition::ucb::{GpUcb, GpUcbConfig};
use mixatlas::acquisition::{Observations, Proposer, SearchSpace};
use mixatlas::rng::SplitMix64;

use super::objectives::{flat_dirichlet, Objective, Quadratic};

/// The two-fidelity objective (see the module documentation).
#[derive(Debug, Clone)]
pub struct TwoFidelity {
    /// The target fidelity's objective.
    pub target: Quadratic,
    /// The cheap fidelity's optimum `w_c`.
    pub w_cheap: Vec<f64>,
    /// How much lower the cheap fidelity is everywhere.
    pub offset: f64,
    /// Cost of a cheap trial in target trials.
    pub cheap_cost: f64,
}

impl TwoFidelity {
    /// An instance with `d` cells for `seed`: noise `noise_std`, the cheap optimum moved by
    /// `shift` of the way to another random mixture, offset 0.2, a cheap trial costing 1/8.
    pub fn new(d: usize, seed: u64, noise_std: f64, shift: f64) -> Self {
        let target = Quadratic::new(d, seed, noise_std);
        let mut rng = SplitMix64::derive(seed, 0x000C_4EA9);
        let e = flat_dirichlet(&mut rng, d);
        let prior = &target.space().prior;
        let w_cheap = (0..d)
            .map(|i| {
                let ei = 0.7 * e[i] + 0.3 * prior[i];
                (1.0 - shift) * target.w_star[i] + shift * ei
            })
            .collect();
        Self {
            target,
            w_cheap,
            offset: 0.2,
            cheap_cost: 0.125,
        }
    }

    /// Noise-free value at mixture `w` at fidelity 0 (cheap) or 1 (target).
    pub fn value(&self, w: &[f64], fidelity: usize) -> f64 {
        if fidelity == 1 {
            return self.target.value(w);
        }
        let d = w.len();
        let v: Vec<f64> = w.iter().zip(&self.w_cheap).map(|(a, b)| a - b).collect();
        let mut q = 0.0;
        for i in 0..d {
            q += v[i] * (0..d).map(|j| self.target.a[i * d + j] * v[j]).sum::<f64>();
        }
        1.0 - self.offset - q
    }

    /// Target regret of the cheap fidelity's optimum (the floor of trusting the cheap
    /// fidelity).
    pub fn cheap_optimum_regret(&self) -> f64 {
        self.target.regret(&self.w_cheap)
    }
}

/// How a search spends its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfMethod {
    /// MF-GP-UCB over both fidelities, recommending at the target.
    MultiFidelity,
    /// Single-fidelity GP-UCB on the cheap fidelity only.
    CheapOnly,
    /// Single-fidelity GP-UCB on the target fidelity only.
    TargetOnly,
}

impl MfMethod {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            MfMethod::MultiFidelity => "mf-gp-ucb",
            MfMethod::CheapOnly => "gp-ucb (cheap only)",
            MfMethod::TargetOnly => "gp-ucb (target only)",
        }
    }
}

/// What one equal-cost search did.
#[derive(Debug, Clone, PartialEq)]
pub struct MfRun {
    /// Noise-free target regret of the recommendation.
    pub simple_regret: f64,
    /// Cost spent (target trials).
    pub cost: f64,
    /// Trials at the cheap and at the target fidelity.
    pub trials: [usize; 2],
}

/// Runs `method` on `obj` until `budget` (in target trials) is spent, in rounds of `q`, with
/// the noise stream and every random stream of the method seeded by `seed`; `xi` is
/// MF-GP-UCB's threshold factor ([`MfGpUcbConfig::xi`]).
pub fn run_two_fidelity(
    obj: &TwoFidelity,
    method: MfMethod,
    budget: f64,
    q: usize,
    seed: u64,
    xi: f64,
) -> MfRun {
    let space: &SearchSpace = obj.target.space();
    let mut noise = SplitMix64::derive(seed, 0x4e_4f49_5345);
    let sd = obj.target.noise_std();
    let costs = [obj.cheap_cost, 1.0];
    let mut spent = 0.0;
    let mut trials = [0usize; 2];
    let rec_x = match method {
        MfMethod::CheapOnly | MfMethod::TargetOnly => {
            let f = usize::from(method == MfMethod::TargetOnly);
            let n = (budget / costs[f] + 1e-9).floor() as usize;
            let mut gp = GpUcb::new(GpUcbConfig::seeded(seed));
            let mut obs = Observations::default();
            let mut round = 0;
            while obs.len() < n {
                let k = q.min(n - obs.len());
                for p in gp.propose(space, &obs, k, round).expect("propose") {
                    let w = space.to_mixture(&p.x);
                    obs.push(p.x, obj.value(&w, f) + sd * noise.normal());
                }
                round += 1;
            }
            trials[f] = n;
            spent = n as f64 * costs[f];
            gp.recommend(space, &obs).expect("recommend").x
        }
        MfMethod::MultiFidelity => {
            let u = fidelity_features(&[(1.0, 1.0), (1.0 / obj.cheap_cost, 1.0)], 1, space.dim())
                .expect("two distinct fidelities");
            let levels = vec![
                FidelityLevel {
                    name: "cheap".into(),
                    features: u[0].clone(),
                    cost: obj.cheap_cost,
                },
                FidelityLevel {
                    name: "target".into(),
                    features: u[1].clone(),
                    cost: 1.0,
                },
            ];
            let cfg = MfGpUcbConfig {
                ucb: GpUcbConfig::seeded(seed),
                xi,
                ..MfGpUcbConfig::default()
            };
            let mut mf = MfGpUcb::new(cfg, levels, 1).expect("valid levels");
            let mut obs = MfObservations::default();
            let mut round = 0;
            'search: loop {
                for p in mf.propose(space, &obs, q, round).expect("propose") {
                    let c = costs[p.fidelity];
                    if spent + c > budget + 1e-9 {
                        break 'search;
                    }
                    let w = space.to_mixture(&p.proposal.x);
                    let y = obj.value(&w, p.fidelity) + sd * noise.normal();
                    obs.obs.push(p.proposal.x, y);
                    obs.fidelity.push(p.fidelity);
                    trials[p.fidelity] += 1;
                    spent += c;
                }
                round += 1;
            }
            mf.recommend(space, &obs).expect("recommend").x
        }
    };
    MfRun {
        simple_regret: obj.target.regret(&space.to_mixture(&rec_x)),
        cost: spent,
        trials,
    }
}
