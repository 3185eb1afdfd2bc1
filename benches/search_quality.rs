//! Search quality: simple regret of GP-UCB against RegMix and the other baselines at the same
//! budget, on the synthetic objectives with known optima (`benches/common/objectives.rs`).
//!
//! Not a timing benchmark (`harness = false`, a plain `main` printing a Markdown table): for
//! each objective (quadratic, benchmark-like), dimension (15, 50) and seed (10), every method
//! runs one search of 64 evaluations in rounds of q = 8 with observation noise 0.1 (regret
//! units: a random mixture's expected regret is 1), recommending after 32 and after 64
//! evaluations. Each seed draws a new objective instance, prior and noise; all methods see the
//! same instance and the same noise stream. Reported: mean ± standard error over the seeds of
//! the simple regret of the recommendation (noise-free), and of the best observed trial's
//! regret (the incumbent a practitioner would pick from the noisy scores), then GP-UCB's regret
//! minus each other method's, paired by seed, with GP-UCB's wins.
//!
//! Run with `cargo bench --bench search_quality`; `SQ_SEEDS=3` (seeds), `SQ_DIMS=15`,
//! `SQ_OBJECTIVES=quadratic`, `SQ_METHODS=random,regmix-gbdt` narrow it down (`SQ_GP_WARP=log`
//! gives GP-UCB's GP the input warp of `predict --input-warp`). The table in
//! `docs/search-quality.md` comes from this program.
//!
//! `SQ_OBJECTIVES=two-fidelity` (not in the default list) runs the multi-fidelity known answer
//! instead (`benches/common/multifidelity.rs`): at an equal total cost of 6 target trials,
//! MF-GP-UCB against GP-UCB on the cheap fidelity only and on the target only, d from
//! `SQ_DIMS` (default 5), q = 4; `SQ_MF_BUDGET` (total cost) and `SQ_MF_XI` (MF-GP-UCB's ξ)
//! change the setting.

use std::collections::BTreeMap;
use std::time::Instant;

use mixatlas::acquisition::ucb::{GpUcb, GpUcbConfig};
use mixatlas::acquisition::Proposer;
use mixatlas::baselines::{
    GbdtConfig, Natural, RandomSearch, RegMix, RegMixConfig, Regressor, RidgeConfig, Uniform,
};

// The harness, shared with `tests/search_quality.rs` (each uses part of it).
#[allow(dead_code)]
#[path = "common/objectives.rs"]
mod objectives;

use objectives::{mean_se, run_harness_with, BenchmarkLike, HarnessConfig, Objective, Quadratic};

// The two-fidelity objective and its equal-cost harness (issue 17).
#[allow(dead_code)]
#[path = "common/multifidelity.rs"]
mod multifidelity;

use mixatlas::acquisition::multifidelity::MfGpUcbConfig;
use multifidelity::{run_two_fidelity, MfMethod, TwoFidelity};

/// Total cost of a two-fidelity search, in target-fidelity trials.
const MF_BUDGET: f64 = 6.0;
/// How far the cheap fidelity's optimum is moved towards another random mixture.
const MF_SHIFT: f64 = 0.7;

const NOISE: f64 = 0.1;
const Q: usize = 8;
const BUDGETS: [usize; 2] = [32, 64];

/// Every method, constructed for one seed.
fn methods(seed: u64) -> Vec<Box<dyn Proposer>> {
    vec![
        Box::new(GpUcb::new({
            let mut c = GpUcbConfig {
                seed,
                ..GpUcbConfig::default()
            };
            // SQ_GP_WARP=log (or log:EPS): GP-UCB with the GP's input warp.
            if let Ok(w) = std::env::var("SQ_GP_WARP") {
                c.gp.warp = w.parse().expect("SQ_GP_WARP: none, log or log:EPS");
            }
            c
        })),
        Box::new(RegMix::new(RegMixConfig {
            seed,
            regressor: Regressor::Gbdt(GbdtConfig::default()),
            ..RegMixConfig::default()
        })),
        Box::new(RegMix::new(RegMixConfig {
            seed,
            regressor: Regressor::Linear(RidgeConfig::default()),
            ..RegMixConfig::default()
        })),
        Box::new(RandomSearch::new(seed)),
        Box::new(Uniform),
        Box::new(Natural),
    ]
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let seeds: u64 = std::env::var("SQ_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dims: Vec<usize> = env_list("SQ_DIMS")
        .map(|v| {
            v.iter()
                .map(|s| s.parse().expect("SQ_DIMS: integers"))
                .collect()
        })
        .unwrap_or(vec![15, 50]);
    let objectives =
        env_list("SQ_OBJECTIVES").unwrap_or(vec!["quadratic".into(), "benchmark".into()]);
    let only = env_list("SQ_METHODS");
    if objectives.iter().any(|o| o == "two-fidelity") {
        let dims = env_list("SQ_DIMS").map_or(vec![5], |_| dims.clone());
        two_fidelity_table(seeds, &dims);
    }
    let objectives: Vec<String> = objectives
        .into_iter()
        .filter(|o| o != "two-fidelity")
        .collect();
    if objectives.is_empty() {
        return;
    }
    let started = Instant::now();
    // (objective, d, method) → per-budget lists of (simple regret, incumbent regret), seconds.
    type Key = (String, usize, String);
    let mut simple: BTreeMap<(Key, usize), Vec<f64>> = BTreeMap::new();
    let mut incumbent: BTreeMap<(Key, usize), Vec<f64>> = BTreeMap::new();
    let mut seconds: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut gaps: Vec<f64> = Vec::new();
    for name in &objectives {
        for &d in &dims {
            for seed in 0..seeds {
                let obj: Box<dyn Objective> = match name.as_str() {
                    "quadratic" => Box::new(Quadratic::new(d, seed, NOISE)),
                    "benchmark" => {
                        let b = BenchmarkLike::new(d, seed, NOISE);
                        gaps.push(b.optimum_gap());
                        Box::new(b)
                    }
                    other => panic!("unknown objective {other:?}"),
                };
                let space = obj.space().clone();
                for mut m in methods(seed) {
                    let method = m.name().to_string();
                    if only.as_ref().is_some_and(|o| !o.contains(&method)) {
                        continue;
                    }
                    if !order.contains(&method) {
                        order.push(method.clone());
                    }
                    let t0 = Instant::now();
                    let cfg = HarnessConfig {
                        budget: *BUDGETS.last().unwrap(),
                        q: Q,
                        seed,
                        recommend_at: BUDGETS.to_vec(),
                    };
                    let trace = run_harness_with(m.as_mut(), &space, obj.as_ref(), &cfg)
                        .unwrap_or_else(|e| panic!("{name} d={d} seed={seed}: {e}"));
                    let secs = t0.elapsed().as_secs_f64();
                    let key = (name.clone(), d, method.clone());
                    for c in &trace.checkpoints {
                        let round = trace
                            .evaluations
                            .iter()
                            .position(|&n| n == c.evaluations)
                            .expect("checkpoint after a round");
                        simple
                            .entry((key.clone(), c.evaluations))
                            .or_default()
                            .push(c.simple_regret);
                        incumbent
                            .entry((key.clone(), c.evaluations))
                            .or_default()
                            .push(trace.incumbent_regret[round]);
                    }
                    seconds.entry(key).or_default().push(secs);
                    eprintln!(
                        "[{:6.1}s] {name:9} d={d:2} seed={seed} {method:13} regret@{}: {}  ({secs:.2}s)",
                        started.elapsed().as_secs_f64(),
                        BUDGETS.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("/"),
                        trace
                            .checkpoints
                            .iter()
                            .map(|c| format!("{:.4}", c.simple_regret))
                            .collect::<Vec<_>>()
                            .join(" / "),
                    );
                }
            }
        }
    }
    println!(
        "\nSimple regret (mean ± s.e. over {seeds} seeds; noise σ = {NOISE}; q = {Q}; a random \
         mixture's expected regret is 1). In brackets: regret of the best observed trial.\n"
    );
    for name in &objectives {
        for &d in &dims {
            println!("**{name}, d = {d}**\n");
            let head: Vec<String> = BUDGETS.iter().map(|b| format!("N = {b}")).collect();
            println!("| method | {} | s / run |", head.join(" | "));
            println!("| --- |{} --- |", " --- |".repeat(BUDGETS.len()));
            for method in &order {
                let key = (name.clone(), d, method.clone());
                let Some(secs) = seconds.get(&key) else {
                    continue;
                };
                let cells: Vec<String> = BUDGETS
                    .iter()
                    .map(|&b| {
                        let (m, se) = mean_se(&simple[&(key.clone(), b)]);
                        let (mi, sei) = mean_se(&incumbent[&(key.clone(), b)]);
                        format!("{m:.3} ± {se:.3} [{mi:.3} ± {sei:.3}]")
                    })
                    .collect();
                println!(
                    "| {method} | {} | {:.2} |",
                    cells.join(" | "),
                    mean_se(secs).0
                );
            }
            println!();
        }
    }
    // Paired differences: every method saw the same instances and noise, seed by seed.
    if order.iter().any(|m| m == "gp-ucb") {
        println!(
            "GP-UCB's simple regret minus each method's, paired by seed (mean ± s.e.; negative \
             favours GP-UCB), and GP-UCB's wins out of {seeds}:\n"
        );
        let others: Vec<&String> = order.iter().filter(|m| *m != "gp-ucb").collect();
        let head: Vec<String> = others.iter().map(|m| m.to_string()).collect();
        println!("| objective, d, N | {} |", head.join(" | "));
        println!("| --- |{}", " --- |".repeat(others.len()));
        for name in &objectives {
            for &d in &dims {
                for &b in &BUDGETS {
                    let gp = &simple[&((name.clone(), d, "gp-ucb".to_string()), b)];
                    let cells: Vec<String> = others
                        .iter()
                        .map(|m| {
                            let o = &simple[&((name.clone(), d, m.to_string()), b)];
                            let diff: Vec<f64> = gp.iter().zip(o).map(|(a, b)| a - b).collect();
                            let wins = diff.iter().filter(|&&x| x < 0.0).count();
                            let (m, se) = mean_se(&diff);
                            format!("{m:+.3} ± {se:.3} ({wins})")
                        })
                        .collect();
                    println!("| {name}, {d}, {b} | {} |", cells.join(" | "));
                }
            }
        }
        println!();
    }
    if !gaps.is_empty() {
        let worst = gaps.iter().cloned().fold(0.0, f64::max);
        println!(
            "Benchmark-like optima: certified to within {worst:.1e} over all {} instances \
             (the Frank–Wolfe bound on f* − f(argmax); 0 means below rounding).",
            gaps.len()
        );
    }
    eprintln!("total {:.1}s", started.elapsed().as_secs_f64());
}

/// The multi-fidelity known answer: simple regret at the target of each method at equal cost,
/// mean ± s.e. over `seeds`, and MF-GP-UCB's paired differences and wins.
fn two_fidelity_table(seeds: u64, dims: &[usize]) {
    let methods = [
        MfMethod::MultiFidelity,
        MfMethod::CheapOnly,
        MfMethod::TargetOnly,
    ];
    let var = |k: &str, default: f64| {
        std::env::var(k)
            .ok()
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let budget = var("SQ_MF_BUDGET", MF_BUDGET);
    let xi = var("SQ_MF_XI", MfGpUcbConfig::default().xi);
    for &d in dims {
        let started = Instant::now();
        let mut regret: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
        let mut trials: Vec<[usize; 2]> = Vec::new();
        let mut floor = Vec::new();
        for seed in 0..seeds {
            let obj = TwoFidelity::new(d, seed, NOISE, MF_SHIFT);
            floor.push(obj.cheap_optimum_regret());
            for (k, &m) in methods.iter().enumerate() {
                let r = run_two_fidelity(&obj, m, budget, 4, seed, xi);
                eprintln!(
                    "[{:6.1}s] two-fidelity d={d} seed={seed} {:22} regret {:.4} cost {:.3} \
                     trials cheap/target {}/{}",
                    started.elapsed().as_secs_f64(),
                    m.name(),
                    r.simple_regret,
                    r.cost,
                    r.trials[0],
                    r.trials[1]
                );
                regret[k].push(r.simple_regret);
                if m == MfMethod::MultiFidelity {
                    trials.push(r.trials);
                }
            }
        }
        let (fm, fse) = mean_se(&floor);
        let avg = |i: usize| trials.iter().map(|t| t[i] as f64).sum::<f64>() / trials.len() as f64;
        println!(
            "\n**two-fidelity quadratic, d = {d}**: total cost {budget} target trials, a cheap \
             trial costs 1/8, q = 4, noise σ = {NOISE}, {seeds} seeds; the cheap optimum's target \
             regret {fm:.3} ± {fse:.3}; MF-GP-UCB ran {:.1} cheap and {:.1} target trials on \
             average.\n",
            avg(0),
            avg(1)
        );
        println!("| method | simple regret at the target | MF-GP-UCB minus it (wins) |");
        println!("| --- | --- | --- |");
        for (k, m) in methods.iter().enumerate() {
            let (mean, se) = mean_se(&regret[k]);
            let paired = if k == 0 {
                "".to_string()
            } else {
                let diff: Vec<f64> = regret[0]
                    .iter()
                    .zip(&regret[k])
                    .map(|(a, b)| a - b)
                    .collect();
                let wins = diff.iter().filter(|&&x| x < 0.0).count();
                let (dm, dse) = mean_se(&diff);
                format!("{dm:+.3} ± {dse:.3} ({wins}/{seeds})")
            };
            println!("| {} | {mean:.3} ± {se:.3} | {paired} |", m.name());
        }
        println!();
    }
}
