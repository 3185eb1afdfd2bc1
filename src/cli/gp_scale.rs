//! `mixatlas bench gp-scale`: what the surrogate's scalable strategies cost and what they
//! lose, on a known objective over the 50-cell simplex (docs/scale.md, "Surrogate at
//! scale").
//!
//! For each number of trials it times the hyperparameter fit and a `q`-batch of GP-UCB
//! under the default (`auto`) strategy, and scores the held-out predictions of each strategy
//! (exact fit + exact posterior where affordable, subset fit + exact posterior, subset fit +
//! sparse posterior) against the truth and against the most exact strategy that ran at that
//! `n` (RMSE and Spearman ρ). The objective is the synthetic one of `/work/exp/scale/gen.py`:
//! `y = −50 |w − w*|² + N(0, 0.01²)` with `w` flat-Dirichlet draws.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mixatlas::acquisition::proposer::{Observations, Proposer};
use mixatlas::acquisition::space::{SearchSpace, SpaceConstraints};
use mixatlas::acquisition::ucb::{GpUcb, GpUcbConfig};
use mixatlas::bench::correlation::{rmse, spearman};
use mixatlas::rng::SplitMix64;
use mixatlas::surrogate::{FitStrategy, GpConfig, Posterior, PosteriorStrategy, Surrogate};

/// `mixatlas bench gp-scale`.
#[derive(Debug, Args)]
pub struct GpScaleArgs {
    /// Numbers of trials, comma-separated.
    #[arg(long, default_value = "500,1000,2000,4000", value_delimiter = ',')]
    pub n: Vec<usize>,
    /// Cells of the simplex.
    #[arg(long, default_value_t = 50)]
    pub d: usize,
    /// Batch size of the timed GP-UCB round.
    #[arg(short, long, default_value_t = 64)]
    pub q: usize,
    /// Held-out points scored.
    #[arg(long, default_value_t = 500)]
    pub test: usize,
    /// Largest n at which the exact hyperparameter fit (O(n³) per likelihood evaluation)
    /// runs as the reference.
    #[arg(long, default_value_t = 1000)]
    pub exact_fit_max: usize,
    /// Largest n at which the exact posterior runs.
    #[arg(long, default_value_t = 4000)]
    pub exact_posterior_max: usize,
    /// Seed of the data and the fits.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Flat-Dirichlet draws on the `d`-simplex.
fn dirichlet(rng: &mut SplitMix64, n: usize, d: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| {
            let w: Vec<f64> = (0..d).map(|_| -(1.0 - rng.next_f64()).ln()).collect();
            let s: f64 = w.iter().sum();
            w.into_iter().map(|v| v / s).collect()
        })
        .collect()
}

/// One strategy's held-out predictions and fit time.
struct Run {
    name: String,
    fit_s: f64,
    mean: Vec<f64>,
}

/// `bench gp-scale`.
pub fn run(a: GpScaleArgs) -> Result<()> {
    let d = a.d;
    let space = SearchSpace::simplex(d, &SpaceConstraints::default())?;
    let mut rng = SplitMix64::derive(a.seed, 0x6C5);
    let opt = {
        let w: Vec<f64> = (0..d).map(|_| rng.next_f64()).collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect::<Vec<f64>>()
    };
    let truth = |w: &[f64]| {
        -50.0
            * w.iter()
                .zip(&opt)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
    };
    let test = dirichlet(&mut rng, a.test, d);
    let test_flat: Vec<f64> = test.iter().flatten().copied().collect();
    let test_y: Vec<f64> = test.iter().map(|w| truth(w)).collect();
    let nmax = a.n.iter().copied().max().unwrap_or(0);
    let x_all = dirichlet(&mut rng, nmax, d);
    let y_all: Vec<f64> = x_all
        .iter()
        .map(|w| truth(w) + 0.01 * rng.normal())
        .collect();
    println!(
        "# gp-scale: d = {d}, q = {}, {} held-out points, threads = {}",
        a.q,
        a.test,
        rayon::current_num_threads()
    );
    let mut timing = Vec::new();
    let mut quality = Vec::new();
    for &n in &a.n {
        let obs = Observations {
            x: x_all[..n].to_vec(),
            y: y_all[..n].to_vec(),
        };
        // The default strategy, timed as `suggest` runs it: fit, then a batch of q.
        let cfg = GpUcbConfig::seeded(a.seed);
        let mut ucb = GpUcb::new(cfg.clone());
        let t = Instant::now();
        ucb.fit(&obs).context("auto fit")?;
        let fit_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ucb.propose(&space, &obs, a.q, n)?;
        let batch_s = t.elapsed().as_secs_f64();
        // The next round, warm-started: q more trials.
        let extra = dirichlet(&mut rng, a.q, d);
        let mut obs2 = obs.clone();
        for w in extra {
            obs2.y.push(truth(&w) + 0.01 * rng.normal());
            obs2.x.push(w);
        }
        let t = Instant::now();
        ucb.fit(&obs2).context("warm fit")?;
        let warm_s = t.elapsed().as_secs_f64();
        let auto = auto_name(&cfg.gp, n);
        timing.push(format!(
            "| {n} | {auto} | {fit_s:.2} | {batch_s:.2} | {:.2} | {warm_s:.2} |",
            fit_s + batch_s
        ));
        // Held-out quality of each strategy.
        let mut runs: Vec<Run> = Vec::new();
        let mut strategies: Vec<(String, FitStrategy, PosteriorStrategy)> = Vec::new();
        if n <= a.exact_fit_max {
            strategies.push((
                "exact fit, exact posterior".into(),
                FitStrategy::Exact,
                PosteriorStrategy::Exact,
            ));
        }
        let sub = FitStrategy::Subset(mixatlas::surrogate::fit::DEFAULT_FIT_SUBSET);
        if n <= a.exact_posterior_max {
            strategies.push((
                format!("{sub} fit, exact posterior"),
                sub,
                PosteriorStrategy::Exact,
            ));
        }
        let m = mixatlas::surrogate::fit::DEFAULT_INDUCING;
        strategies.push((
            format!("{sub} fit, sparse:{m} posterior"),
            sub,
            PosteriorStrategy::Sparse(m),
        ));
        for (name, fit, posterior) in strategies {
            let gcfg = GpConfig {
                fit,
                posterior,
                ..cfg.gp.clone()
            };
            let t = Instant::now();
            let s = Surrogate::fit(&obs.x, &obs.y, &gcfg, None).context("fit")?;
            let fit_s = t.elapsed().as_secs_f64();
            let (mean, _) = s.predict(&test_flat);
            runs.push(Run { name, fit_s, mean });
        }
        let reference = &runs[0];
        for r in &runs {
            quality.push(format!(
                "| {n} | {} | {:.2} | {:.4} | {:.3} | {:.4} | {:.3} |",
                r.name,
                r.fit_s,
                rmse(&r.mean, &test_y),
                spearman(&r.mean, &test_y),
                rmse(&r.mean, &reference.mean),
                spearman(&r.mean, &reference.mean),
            ));
        }
        quality.push(format!(
            "|  | (reference at n = {n}: {}) |  |  |  |  |  |",
            reference.name
        ));
        eprintln!("n = {n} done");
    }
    println!(
        "\n| n | auto strategy | fit (s) | batch q = {} (s) | round (s) | warm refit, n + q (s) |",
        a.q
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    timing.iter().for_each(|l| println!("{l}"));
    println!("\n| n | strategy | fit + build (s) | RMSE vs truth | ρ vs truth | RMSE vs reference | ρ vs reference |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    quality.iter().for_each(|l| println!("{l}"));
    Ok(())
}

/// What `auto` resolves to at `n` trials.
fn auto_name(cfg: &GpConfig, n: usize) -> String {
    let fit = match cfg.fit.subset_size(n) {
        Some(m) => format!("subset:{m}"),
        None => "exact".into(),
    };
    let post = match cfg.posterior.inducing(n) {
        Some(m) => format!("sparse:{m}"),
        None => "exact".into(),
    };
    format!("fit {fit}, posterior {post}")
}
