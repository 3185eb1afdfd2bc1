//! `mixatlas bench regmix-predict`: how well `mixatlas predict`'s GP ranks real proxy runs.
//!
//! The data are RegMix's released 1M-parameter Pile runs (Liu et al., ICLR 2025;
//! `../shared/data/regmix/`): 512 training runs (`train_mixture_1m.csv` +
//! `train_pile_loss_1m.csv`) become ask/tell trials, 256 held-out runs (`test_*`) are predicted.
//! Each run's 17 domain weights are the mixture over cells `pile/<domain>`; its objective is
//! the negated validation loss on one Pile subset (default Pile-CC), since the search
//! maximises. The trials go through the trial-file reader ([`parse_csv`], whose rounded-weights
//! rule accepts RegMix's 3-decimal weights) and the GP is fitted exactly as `predict` fits it
//! (`GpUcb::new(GpUcbConfig::seeded(seed)).fit`, then `Gp::predict`).
//!
//! Printed: Spearman's ρ, Pearson's r and the RMSE between predicted and true held-out loss, the
//! fit's wall time and, with `--cv K`, the same figures for K-fold cross-validation over the 512
//! training runs only (out-of-fold predictions pooled), which is what settings are chosen on.
//! `--write DIR` also writes `trials.csv`, `space.json` and `at.jsonl` so that `mixatlas
//! predict --trials DIR/trials.csv --space DIR/space.json --at DIR/at.jsonl` can be run on the
//! same data. The LightGBM peer is `benches/peers/regmix_lgbm.py`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use mixatlas::acquisition::space::SpaceCells;
use mixatlas::acquisition::ucb::{GpUcb, GpUcbConfig};
use mixatlas::acquisition::{Observations, SearchSpace, SpaceConstraints, SpaceKind};
use mixatlas::bench::correlation::{pearson, rmse, spearman};
use mixatlas::rng::SplitMix64;
use mixatlas::search::trials::{parse_csv, ObjectiveSpec, Trial};
use mixatlas::surrogate::{InputWarp, Kernel, Posterior};

/// `mixatlas bench regmix-predict`.
#[derive(Debug, Args)]
pub struct RegmixArgs {
    /// Directory with RegMix's four CSV files (train/test mixture and loss, 1M models).
    #[arg(long, default_value = "../shared/data/regmix")]
    pub data: PathBuf,
    /// Pile subset whose validation loss is the objective (column
    /// `metric/the_pile_<TARGET>_val_loss`), e.g. pile_cc, github, arxiv.
    #[arg(long, default_value = "pile_cc")]
    pub target: String,
    /// Seed of the GP fit's restarts (as `predict --seed`) and of the CV folds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also K-fold cross-validation over the training runs only (0: none).
    #[arg(long, default_value_t = 0)]
    pub cv: usize,
    /// Skip the held-out test set (with --cv: choose settings without looking at it).
    #[arg(long)]
    pub no_test: bool,
    /// Variant for comparisons: the GP's kernel (predict's default: matern52).
    #[arg(long, value_parser = ["matern52", "rbf"])]
    pub kernel: Option<String>,
    /// Variant for comparisons: without the linear kernel term (predict's default has it).
    #[arg(long)]
    pub no_linear: bool,
    /// Variant for comparisons: random restarts of the hyperparameter fit (predict's default: 3).
    #[arg(long)]
    pub restarts: Option<usize>,
    /// The GP's input warp, as `predict --input-warp`: none, log (ln(w + 0.001)) or log:EPS.
    #[arg(long, default_value = "none")]
    pub input_warp: InputWarp,
    /// Write trials.csv, space.json and at.jsonl here (the same data for `mixatlas predict`).
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One split of RegMix's runs: mixtures (rows of weights in column order) and target losses.
struct Runs {
    domains: Vec<String>,
    ids: Vec<String>,
    weights: Vec<Vec<f64>>,
    loss: Vec<f64>,
}

fn read_table(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .with_context(|| format!("{}: empty, expected a CSV header", path.display()))?
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(|v| v.trim().to_string()).collect())
        .collect();
    for (i, r) in rows.iter().enumerate() {
        if r.len() != header.len() {
            bail!(
                "{}:{}: {} values for {} header columns",
                path.display(),
                i + 2,
                r.len(),
                header.len()
            );
        }
    }
    Ok((header, rows))
}

fn number(path: &Path, line: usize, col: &str, v: &str) -> Result<f64> {
    v.parse().with_context(|| {
        format!(
            "{}:{line}: column {col:?} value {v:?} is not a number",
            path.display()
        )
    })
}

/// Reads `<split>_mixture_1m.csv` and `<split>_pile_loss_1m.csv`, joined on `index`.
fn read_runs(dir: &Path, split: &str, target: &str) -> Result<Runs> {
    let mpath = dir.join(format!("{split}_mixture_1m.csv"));
    let lpath = dir.join(format!("{split}_pile_loss_1m.csv"));
    let (mh, mrows) = read_table(&mpath)?;
    let (lh, lrows) = read_table(&lpath)?;
    let col = format!("metric/the_pile_{target}_val_loss");
    let Some(lc) = lh.iter().position(|c| *c == col) else {
        bail!(
            "{}: no column {col:?}; expected --target to be one of {}",
            lpath.display(),
            lh.iter()
                .filter_map(|c| c
                    .strip_prefix("metric/the_pile_")?
                    .strip_suffix("_val_loss"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if mh.first().map(String::as_str) != Some("index")
        || lh.first().map(String::as_str) != Some("index")
    {
        bail!(
            "{} and {}: expected an `index` first column",
            mpath.display(),
            lpath.display()
        );
    }
    let domains: Vec<String> = mh[1..]
        .iter()
        .map(|c| c.strip_prefix("train_the_pile_").unwrap_or(c).to_string())
        .collect();
    let mut loss_by_id = std::collections::HashMap::new();
    for (i, r) in lrows.iter().enumerate() {
        loss_by_id.insert(r[0].clone(), number(&lpath, i + 2, &col, &r[lc])?);
    }
    let mut runs = Runs {
        domains,
        ids: Vec::new(),
        weights: Vec::new(),
        loss: Vec::new(),
    };
    for (i, r) in mrows.iter().enumerate() {
        let Some(&l) = loss_by_id.get(&r[0]) else {
            bail!(
                "{}:{}: run index {} has no row in {}",
                mpath.display(),
                i + 2,
                r[0],
                lpath.display()
            );
        };
        let w = r[1..]
            .iter()
            .zip(&mh[1..])
            .map(|(v, c)| number(&mpath, i + 2, c, v))
            .collect::<Result<Vec<f64>>>()?;
        runs.ids.push(r[0].clone());
        runs.weights.push(w);
        runs.loss.push(l);
    }
    Ok(runs)
}

/// The runs as an ask/tell trials CSV: `id,pile/<domain>…,objective` with objective = −loss.
fn trials_csv(runs: &Runs) -> String {
    let mut s = String::from("id");
    for d in &runs.domains {
        let _ = write!(s, ",pile/{d}");
    }
    s.push_str(",objective\n");
    for ((id, w), l) in runs.ids.iter().zip(&runs.weights).zip(&runs.loss) {
        s.push_str(id);
        for v in w {
            let _ = write!(s, ",{v}");
        }
        let _ = writeln!(s, ",{}", -l);
    }
    s
}

fn space(domains: &[String]) -> Result<SearchSpace> {
    let n = domains.len();
    Ok(SearchSpace::new(
        SpaceKind::Joint,
        SpaceCells {
            cells: domains.iter().map(|d| format!("pile/{d}")).collect(),
            cell_axes: (0..n).map(|k| (0, k)).collect(),
            concepts: vec!["pile".into()],
            tasks: domains.to_vec(),
            prior: vec![1.0 / n as f64; n],
        },
        &SpaceConstraints::default(),
    )?)
}

/// The runs read back through the trial-file reader, as observations.
fn observations(
    space: &SearchSpace,
    runs: &Runs,
    name: &str,
) -> Result<(Vec<Trial>, Observations)> {
    let trials = parse_csv(&trials_csv(runs), Path::new(name), space)?;
    let y = ObjectiveSpec::default()
        .evaluate(&trials)
        .map_err(anyhow::Error::msg)?;
    let mut obs = Observations::default();
    for (t, y) in trials.iter().zip(y) {
        obs.push(space.from_mixture(&t.mixture)?, y);
    }
    Ok((trials, obs))
}

fn config(a: &RegmixArgs) -> GpUcbConfig {
    let mut cfg = GpUcbConfig::seeded(a.seed);
    cfg.gp.warp = a.input_warp;
    if let Some(k) = a.kernel.as_deref() {
        cfg.gp.kernel = if k == "rbf" {
            Kernel::Rbf
        } else {
            Kernel::Matern52
        };
    }
    if a.no_linear {
        cfg.gp.linear = false;
    }
    if let Some(r) = a.restarts {
        cfg.gp.restarts = r;
    }
    cfg
}

/// Fits `predict`'s GP to `train` and predicts the loss (−mean) at `at`; returns the
/// predictions and the fit's seconds.
fn fit_predict(
    cfg: &GpUcbConfig,
    train: &Observations,
    at: &[Vec<f64>],
) -> Result<(Vec<f64>, f64)> {
    let t0 = Instant::now();
    let mut ucb = GpUcb::new(cfg.clone());
    let gp = ucb.fit(train).context("fitting the GP to the trials")?;
    let secs = t0.elapsed().as_secs_f64();
    let flat: Vec<f64> = at.iter().flatten().copied().collect();
    let (mean, _) = gp.predict(&flat);
    Ok((mean.iter().map(|m| -m).collect(), secs))
}

fn figures(pred: &[f64], loss: &[f64], secs: f64) -> serde_json::Value {
    serde_json::json!({
        "spearman": spearman(pred, loss), "pearson": pearson(pred, loss),
        "rmse": rmse(pred, loss), "fit_seconds": secs, "n": loss.len(),
    })
}

/// K-fold cross-validation over `obs` (folds from a seeded shuffle): pooled out-of-fold figures
/// and the summed fit time.
fn cross_validate(
    cfg: &GpUcbConfig,
    obs: &Observations,
    k: usize,
    seed: u64,
) -> Result<serde_json::Value> {
    let n = obs.len();
    if k < 2 || k > n {
        bail!("--cv {k}: expected 2 to {n} folds");
    }
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::derive(seed, 0xcf).shuffle(&mut order);
    let mut pred = vec![0.0; n];
    let mut secs = 0.0;
    for f in 0..k {
        let held: Vec<usize> = order.iter().copied().skip(f).step_by(k).collect();
        let mut train = Observations::default();
        for (j, &i) in order.iter().enumerate() {
            if j % k != f {
                train.push(obs.x[i].clone(), obs.y[i]);
            }
        }
        let at: Vec<Vec<f64>> = held.iter().map(|&i| obs.x[i].clone()).collect();
        let (p, s) = fit_predict(cfg, &train, &at)?;
        secs += s;
        for (&i, v) in held.iter().zip(p) {
            pred[i] = v;
        }
    }
    let loss: Vec<f64> = obs.y.iter().map(|y| -y).collect();
    let mut v = figures(&pred, &loss, secs);
    v["folds"] = k.into();
    Ok(v)
}

fn write_files(dir: &Path, space: &SearchSpace, train: &Runs, test: &Runs) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    w("trials.csv", trials_csv(train))?;
    w(
        "space.json",
        serde_json::to_string_pretty(&serde_json::json!({"kind": "joint", "cells": space.cells}))?,
    )?;
    let mut at = String::new();
    for m in &test.weights {
        let named = mixatlas::data::mixture::by_name(&space.cells, m);
        let _ = writeln!(at, "{}", serde_json::json!({ "mixture": named }));
    }
    w("at.jsonl", at)?;
    w("test_loss.csv", trials_csv(test))
}

/// Runs the benchmark.
pub fn run(a: RegmixArgs) -> Result<()> {
    let train = read_runs(&a.data, "train", &a.target)?;
    let test = read_runs(&a.data, "test", &a.target)?;
    if train.domains != test.domains {
        bail!(
            "{}: train and test mixture files list different domains",
            a.data.display()
        );
    }
    let space = space(&train.domains)?;
    if let Some(dir) = &a.write {
        write_files(dir, &space, &train, &test)?;
    }
    let (_, obs) = observations(&space, &train, "train_mixture_1m.csv")?;
    let cfg = config(&a);
    let mut out = serde_json::json!({
        "target": a.target, "n_train": obs.len(), "n_test": test.loss.len(),
        "kernel": cfg.gp.kernel.name(), "linear": cfg.gp.linear, "restarts": cfg.gp.restarts,
        "input_warp": cfg.gp.warp.to_string(),
        "seed": a.seed,
    });
    if a.cv > 0 {
        out["cv"] = cross_validate(&cfg, &obs, a.cv, a.seed)?;
    }
    if !a.no_test {
        let (test_trials, _) = observations(&space, &test, "test_mixture_1m.csv")?;
        let at = test_trials
            .iter()
            .map(|t| Ok(space.from_mixture(&t.mixture)?))
            .collect::<Result<Vec<_>>>()?;
        let (pred, secs) = fit_predict(&cfg, &obs, &at)?;
        out["test"] = figures(&pred, &test.loss, secs);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "mixatlas predict's GP ({}{}, input warp {}, {} restarts, seed {}), {} loss, {} train / {} test runs",
        cfg.gp.kernel.name(),
        if cfg.gp.linear { " + linear" } else { "" },
        cfg.gp.warp,
        cfg.gp.restarts,
        a.seed,
        a.target,
        obs.len(),
        test.loss.len()
    );
    println!(
        "{:<14} {:>9} {:>9} {:>8} {:>8}",
        "set", "spearman", "pearson", "rmse", "fit s"
    );
    for (name, key) in [
        (format!("{}-fold CV", a.cv), "cv"),
        ("held-out".into(), "test"),
    ] {
        if let Some(f) = out.get(key) {
            println!(
                "{name:<14} {:>9.4} {:>9.4} {:>8.4} {:>8.2}",
                f["spearman"].as_f64().unwrap_or(f64::NAN),
                f["pearson"].as_f64().unwrap_or(f64::NAN),
                f["rmse"].as_f64().unwrap_or(f64::NAN),
                f["fit_seconds"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
