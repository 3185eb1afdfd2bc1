//! `mixatlas demo`: the whole pipeline on built-in data (synth, prepare, a sampling report,
//! GP-UCB against RegMix, the transfer, the report page). It drives the other commands' run
//! functions, the only command file that does. Its own reports: what the prepared corpus looks
//! like and how the mixture sampler realises requested mixtures on it, then GP-UCB against
//! RegMix with the same cost of proxy trials (the recipe as a concept × task grid,
//! marginals against natural proportions).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use mixatlas::data::corpus::{Corpus, Manifest};
use mixatlas::data::prepare::PrepareConfig;
use mixatlas::data::sampler::{Mode, Packing, Sampler, SamplerConfig};
use mixatlas::data::synth::SynthConfig;
use mixatlas::rng::SplitMix64;

use super::corpus::{prepare_with, synth_with};
use super::runtime::model_config_for;
use super::search::printer;
use super::transfer::print_comparisons;

/// `mixatlas demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the demo's corpus.
    #[arg(long, default_value = "mixatlas-demo")]
    pub out: PathBuf,
    /// A smaller, faster run (10k samples, 8 trials per method of 60-step proxies).
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// The longer proof run: 500-step transfers over 5 seeds, the search's target fidelity
    /// the same 500 steps (24 small:100 trials' cost; under an hour on 2 cores).
    #[arg(long)]
    pub full: bool,
    /// The built-in corpus: `synth` (shaped like a real midtraining pool) or `balanced`
    /// (docs/synthetic-corpus.md).
    #[arg(long, default_value = "synth", value_parser = ["synth", "balanced"])]
    pub corpus: String,
    /// Number of synthetic samples (default 50k, or 10k with --quick).
    #[arg(long)]
    pub samples: Option<u64>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `demo`: synth, prepare, sampling report, search comparison, transfer and report on
/// built-in data.
pub fn run_demo(a: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let mut scfg = if a.corpus == "balanced" {
        SynthConfig::balanced()
    } else {
        SynthConfig::synth()
    };
    scfg.samples = a.samples.unwrap_or(if a.quick { 10_000 } else { 50_000 });
    scfg.seed = a.seed;
    let budget = if a.quick {
        DemoSearch {
            trials: 8,
            q: 4,
            steps: 60,
            cheap_steps: 15,
            eval_samples: 50,
            target_start: false,
        }
    } else if a.full {
        // The target fidelity is the transfer's own run (small:500): a recipe recommended for
        // 200 steps lost to uniform at 500 (docs/transfer.md). 24 small:100 trials' cost
        // (4.8 target runs), the start mixture run at the target so that the recommendation
        // at 500 steps rests on one observation there.
        DemoSearch {
            trials: 24,
            q: 4,
            steps: 500,
            cheap_steps: 100,
            eval_samples: 100,
            target_start: true,
        }
    } else {
        DemoSearch {
            trials: 12,
            q: 4,
            steps: 200,
            cheap_steps: 50,
            eval_samples: 100,
            target_start: false,
        }
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let raw = a.out.join("raw");
    let corpus_dir = a.out.join("corpus");
    println!(
        "== 1/6 synth: built-in synthetic multimodal corpus ({})",
        a.corpus
    );
    synth_with(&scfg, &raw, true)?;
    println!("\n== 2/6 prepare: concepts by k-means, (concept × task) cells in Megatron format");
    let pcfg = PrepareConfig {
        seed: a.seed,
        ..PrepareConfig::default()
    };
    prepare_with(&raw, &corpus_dir, &pcfg, None, true)?;
    println!("\n== 3/6 sampling report");
    sampling_report(&corpus_dir, a.seed)?;
    println!("\n== 4/6 search: multi-fidelity GP-UCB, RegMix and Chameleon at the same cost");
    let others = search_comparison(&corpus_dir, &a.out, a.seed, &budget)?;
    println!(
        "\n== 5/6 transfer: the GP-UCB recipe against natural, uniform and the other methods' \
         recipes on the `small` model"
    );
    let transfer_budget = if a.quick {
        DemoTransfer {
            steps: 60,
            seeds: 2,
            eval_every: 10,
            eval_samples: 30,
            final_eval_samples: 30,
        }
    } else if a.full {
        // Five seeds and 2.5× the steps: long enough for the scores to leave chance.
        DemoTransfer {
            steps: 500,
            seeds: 5,
            eval_every: 25,
            eval_samples: 50,
            final_eval_samples: 200,
        }
    } else {
        DemoTransfer {
            steps: 200,
            seeds: 3,
            eval_every: 20,
            eval_samples: 50,
            // Every held-out document of the demo corpus (200 per benchmark), so that the
            // scores' seed-to-seed noise is below the differences between the arms.
            final_eval_samples: 200,
        }
    };
    // The demo transfers against natural, uniform and RegMix's recipe (Chameleon's recipe is
    // in the search table; its transfer would add a fifth of the run time).
    let others: Vec<_> = others
        .into_iter()
        .filter(|(name, _)| name == "regmix")
        .collect();
    transfer(&corpus_dir, &a.out, &transfer_budget, &others)?;
    println!("\n== 6/6 report");
    let page = mixatlas::report::write_report(
        &a.out,
        Some(&a.out.join("transfer")),
        &a.out.join("report"),
    )?;
    println!("  {}", page.display());
    println!(
        "\ndemo finished in {:.1} s; everything is under {}",
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// Per-axis marginals of a cell-weight vector: (concept shares, task shares).
fn marginals(m: &Manifest, w: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut c = vec![0.0; m.axes.concepts.len()];
    let mut t = vec![0.0; m.axes.tasks.len()];
    for (cell, &x) in m.cells.iter().zip(w) {
        c[cell.concept] += x;
        t[cell.task] += x;
    }
    (c, t)
}

fn print_grid(m: &Manifest, title: &str, w: &[f64]) {
    println!("  {title} (% per cell, concepts × tasks)");
    print!("  {:>6}", "");
    for t in &m.axes.tasks {
        print!(" {:>10}", t);
    }
    println!();
    for (ci, c) in m.axes.concepts.iter().enumerate() {
        print!("  {c:>6}");
        for ti in 0..m.axes.tasks.len() {
            match m.cells.iter().position(|x| x.concept == ci && x.task == ti) {
                Some(i) => print!(" {:>10.2}", 100.0 * w[i]),
                None => print!(" {:>10}", "-"),
            }
        }
        println!();
    }
}

/// Draws `steps` batches and returns the realised per-cell shares of documents.
fn realised(corpus: &Corpus, w: &[f64], cfg: SamplerConfig, steps: u64) -> Result<Vec<f64>> {
    let mut s = Sampler::for_corpus(corpus, w, cfg)?;
    for _ in 0..steps {
        s.next_batch(0, 1)?;
    }
    let supplied = s.supplied();
    let total: u64 = supplied.iter().sum();
    Ok(supplied.iter().map(|&x| x as f64 / total as f64).collect())
}

/// Prints the sampling report for the corpus at `dir`.
pub fn sampling_report(dir: &Path, seed: u64) -> Result<()> {
    let corpus = Corpus::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    let m = &corpus.manifest;
    let n = m.cells.len();
    let natural = m.natural_weights();
    let uniform = vec![1.0 / n as f64; n];
    // A random mixture (flat Dirichlet), as a search's first proposal would be.
    let mut rng = SplitMix64::derive(seed, 0xD1);
    let raw: Vec<f64> = (0..n).map(|_| -(1.0 - rng.next_f64()).ln()).collect();
    let sum: f64 = raw.iter().sum();
    let random: Vec<f64> = raw.iter().map(|x| x / sum).collect();

    print_grid(m, "natural proportions (documents)", &natural);
    let (nc, nt) = marginals(m, &natural);
    println!(
        "  concept marginals: {}",
        nc.iter()
            .map(|x| format!("{:.1}", 100.0 * x))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  task marginals:    {}",
        m.axes
            .tasks
            .iter()
            .zip(&nt)
            .map(|(t, x)| format!("{t} {:.1}", 100.0 * x))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("\n  realised vs requested cell shares over 200 steps × 64 rows (pad, T = 128):");
    println!(
        "  {:<10} {:<6} {:>12} {:>14} {:>12}",
        "mixture", "mode", "documents", "max |Δ| (pp)", "TV distance"
    );
    for (name, w) in [
        ("natural", &natural),
        ("uniform", &uniform),
        ("random", &random),
    ] {
        for mode in [Mode::Iid, Mode::Blend] {
            let cfg = SamplerConfig {
                seed,
                mode,
                pad_token: m.special_tokens.pad,
                ..SamplerConfig::new(64, 128)
            };
            let got = realised(&corpus, w, cfg, 200)?;
            let max = got
                .iter()
                .zip(w.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let tv: f64 = 0.5
                * got
                    .iter()
                    .zip(w.iter())
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f64>();
            println!(
                "  {:<10} {:<6} {:>12} {:>14.3} {:>12.4}",
                name,
                mode.to_string(),
                200 * 64,
                100.0 * max,
                tv
            );
        }
    }

    // Throughput of batch assembly (packing, Megatron-style rows).
    let cfg = SamplerConfig {
        seed,
        packing: Packing::Pack,
        pad_token: m.special_tokens.pad,
        ..SamplerConfig::new(64, 2048)
    };
    let mut s = Sampler::for_corpus(&corpus, &uniform, cfg)?;
    let steps = 20;
    let t0 = Instant::now();
    let mut tokens = 0usize;
    let mut docs = 0usize;
    for _ in 0..steps {
        let b = s.next_batch(0, 1)?;
        tokens += b.loss_mask.len();
        docs += b.docs.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "\n  packed batches (B = 64, T = 2048): {steps} steps, {docs} documents with images, {:.1} M tokens/s",
        tokens as f64 / secs / 1e6
    );

    // One example document per task, decoded.
    let vocab: Option<Vec<String>> = m.vocab.as_ref().and_then(|v| {
        std::fs::read_to_string(dir.join(v))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    });
    if let Some(vocab) = vocab {
        println!("\n  one document per task (loss on the part after <sep>):");
        for (ti, t) in m.axes.tasks.iter().enumerate() {
            if let Some(i) = m.cells.iter().position(|c| c.task == ti) {
                let toks = corpus.cells[i].tokens.document(0)?;
                let text: Vec<&str> = toks
                    .iter()
                    .filter(|&&x| x != m.special_tokens.image)
                    .map(|&x| vocab.get(x as usize).map_or("<unk>", |s| s.as_str()))
                    .collect();
                println!("  {t:>11} [{}]: {}", m.cells[i].data.name, text.join(" "));
            }
        }
    }
    Ok(())
}

/// The search budget and proxy of the demo.
pub struct DemoSearch {
    /// Trials per method at the cheap fidelity (GP-UCB gets the same total cost).
    pub trials: usize,
    /// Trials per round.
    pub q: usize,
    /// Steps of the target fidelity (the transfer's run).
    pub steps: u64,
    /// Steps of the cheap fidelity (a short run of the same model).
    pub cheap_steps: u64,
    /// Held-out documents per benchmark per trial.
    pub eval_samples: usize,
    /// GP-UCB's first design point (the start) runs at the target fidelity.
    pub target_start: bool,
}

/// Floors on the per-axis shares: every task ≥ 8 % and every concept ≥ 3 % of the mixture.
///
/// Without them UCB's exploration spends rounds on degenerate corners (one concept, one task)
/// that no midtraining run would use: in a 16-trial search with 200-step proxies, 8 of the 16
/// trials went to single-concept all-VQA mixtures scoring −4 to −6 against −1.4 near the
/// centre. Users set the same bounds in `[search.constraints.lower]`.
pub fn demo_floors(manifest: &Manifest) -> mixatlas::acquisition::space::SpaceConstraints {
    let mut c = mixatlas::acquisition::space::SpaceConstraints::default();
    for t in &manifest.axes.tasks {
        c.lower.insert(t.clone(), 0.08);
    }
    for k in &manifest.axes.concepts {
        c.lower.insert(k.clone(), 0.03);
    }
    c
}

/// What every search of the comparison shares.
struct SearchRun<'a> {
    manifest: &'a Manifest,
    corpus_dir: &'a Path,
    out: &'a Path,
    seed: u64,
    budget: &'a DemoSearch,
    train: mixatlas::train::TrainConfig,
    exe: PathBuf,
}

impl SearchRun<'_> {
    /// The plan of `method`: GP-UCB is multi-fidelity over short `small` runs
    /// (`budget.cheap_steps`) and the target, the transfer's run itself (`budget.steps`), at
    /// the same total cost (parameters × steps) as RegMix's `budget.trials` short runs;
    /// Chameleon's fixed mixture gets one short run.
    fn plan(
        &self,
        method: mixatlas::search::methods::Method,
    ) -> Result<mixatlas::search::run::SearchPlan> {
        use mixatlas::search::config::{Budget, SearchConfig, TrainerConfig};
        use mixatlas::search::fidelity::Fidelity;
        use mixatlas::search::methods::Method;
        let trials = if method == Method::Chameleon {
            1
        } else {
            self.budget.trials
        };
        let mf = method == Method::GpUcb;
        let cheap = Fidelity::new("small", self.budget.cheap_steps)?;
        let cheap_copy = cheap.clone();
        let target = Fidelity::new("small", self.budget.steps)?;
        Ok(mixatlas::search::run::SearchPlan {
            search: SearchConfig {
                fidelities: if mf {
                    vec![cheap, target.clone()]
                } else {
                    vec![]
                },
                target_fidelity: mf.then_some(target),
                // MF-GP-UCB runs a short trial while the posterior σ there exceeds
                // ξ·σ₀·(cost ratio)^q; ξ = 1 (chosen before any multi-fidelity run on the demo
                // corpus): the cheap fidelity explores where the GP knows little, the target
                // takes the rest. The default ξ = 0.2 never reaches the target within this
                // budget (docs/search.md).
                fidelity_xi: mf.then_some(1.0),
                fidelity_target_start: mf && self.budget.target_start,
                corpus: self.corpus_dir.to_path_buf(),
                out: self.out.join(format!("search-{}", method.name())),
                method,
                seed: self.seed,
                // GP-UCB searches the joint simplex over all cells, starting at the held-out
                // benchmarks' own mixture (their images assigned to the training concepts by
                // `prepare`, by task: the target-matched mixture). A concept share times a task
                // share cannot express it: the benchmarks pair tasks with concepts, and that
                // product loses to uniform (docs/transfer.md, "The ceiling on this corpus").
                // RegMix and Chameleon keep the factorized space under the floors, their
                // random mixtures drawn around the natural prior as RegMix publishes.
                space: if mf {
                    mixatlas::acquisition::space::SpaceKind::Joint
                } else {
                    mixatlas::acquisition::space::SpaceKind::Factorized
                },
                start: if mf {
                    mixatlas::acquisition::design::DesignStart::Benchmarks
                } else {
                    mixatlas::acquisition::design::DesignStart::Natural
                },
                constraints: if mf {
                    Default::default()
                } else {
                    demo_floors(self.manifest)
                },
                budget: Budget {
                    q: self.budget.q.min(trials),
                    // Under multi-fidelity the cost binds, not the trial count.
                    max_trials: if mf { 4 * trials } else { trials },
                    max_cost: if mf {
                        trials as f64 * self.cheap_cost()
                    } else {
                        0.0
                    },
                    ..Budget::default()
                },
                trainer: TrainerConfig::Builtin {
                    preset: "small".into(),
                },
                ..SearchConfig::default()
            },
            // The others run at the cheap fidelity: the short run's steps and warmup share.
            train: if mf {
                self.train.clone()
            } else {
                mixatlas::search::plan::train_at(&self.train, &cheap_copy)
            },
            exe: self.exe.clone(),
        })
    }

    /// The cost of a short run in target runs (same model: the ratio of steps).
    fn cheap_cost(&self) -> f64 {
        self.budget.cheap_steps as f64 / self.budget.steps as f64
    }
}

/// Runs GP-UCB (multi-fidelity) and RegMix with the same cost, and Chameleon, over the corpus
/// at `corpus_dir` and prints the comparison, the recipe grid and the marginals. Returns the
/// other methods' recipes, `(name, recipe.json)`, for the transfer.
pub fn search_comparison(
    corpus_dir: &Path,
    out: &Path,
    seed: u64,
    budget: &DemoSearch,
) -> Result<Vec<(String, PathBuf)>> {
    use mixatlas::search::methods::Method;
    use mixatlas::search::run::run_search;
    use mixatlas::train::TrainConfig;

    let manifest = Manifest::load(corpus_dir)?;
    // Every trial trains like the transfer (its learning rate, schedule and 8 × 128-token
    // batches), only on a smaller model or fewer steps: the target fidelity `small` is the
    // transfer's run itself.
    let mut train = TrainConfig::transfer();
    train.steps = budget.steps;
    train.warmup_steps = (budget.steps / 10).max(1);
    train.batch_size = 8;
    train.seq_len = 128;
    train.eval_every = 0;
    train.checkpoint_every = 0;
    train.eval_samples = budget.eval_samples;
    // The objective is the answer loss, so the proxies skip decoding answers (about 6 % of a
    // trial); the transfer runs decode them for the benchmark scores.
    train.eval_generate = false;
    let run = SearchRun {
        manifest: &manifest,
        corpus_dir,
        out,
        seed,
        budget,
        train,
        exe: std::env::current_exe().context("locating the mixatlas executable")?,
    };
    let mut results = Vec::new();
    for method in [Method::GpUcb, Method::Regmix, Method::Chameleon] {
        let plan = run.plan(method)?;
        let dir = &plan.search.out;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        if method == Method::GpUcb {
            println!(
                "\n-- gp-ucb, multi-fidelity: small:{} and small:{} trials, {} per round, \
                 total cost = {} small:{} trials = {:.2} small:{} trials",
                budget.cheap_steps,
                budget.steps,
                budget.q,
                budget.trials,
                budget.cheap_steps,
                plan.search.budget.max_cost,
                budget.steps
            );
        } else {
            println!(
                "\n-- {} ({} trial(s) of small:{})",
                method.name(),
                plan.search.budget.max_trials,
                budget.cheap_steps
            );
        }
        let started = Instant::now();
        let summary = run_search(&plan, &mut printer(false))?;
        println!(
            "   {} finished in {:.0} s",
            method.name(),
            started.elapsed().as_secs_f64()
        );
        results.push((method, summary));
    }
    print_search_table(&results, &run)?;
    if let Some(recipe) = &results[0].1.recipe {
        print_recipe(&manifest, recipe, out);
    }
    Ok(["regmix", "chameleon"]
        .iter()
        .map(|m| {
            (
                m.to_string(),
                out.join(format!("search-{m}")).join("recipe.json"),
            )
        })
        .collect())
}

/// One row per method: trials by fidelity, cost, best observed objective (at the target for
/// GP-UCB, at the short runs for the others) and the recipe's predicted objective. The
/// objectives of different fidelities are on different scales; the transfer compares the
/// recipes on one.
fn print_search_table(
    results: &[(
        mixatlas::search::methods::Method,
        mixatlas::search::plan::SearchSummary,
    )],
    run: &SearchRun<'_>,
) -> Result<()> {
    use mixatlas::search::methods::Method;
    let (short, long) = (run.budget.cheap_steps, run.budget.steps);
    println!(
        "\nObjective = mean over benchmarks of −answer loss (higher is better), at the \
         fidelity the trials ran at:"
    );
    println!(
        "  {:<10} {:>9} {:>9} {:>14} {:>20} {:>10}",
        "method",
        format!("small:{short}"),
        format!("small:{long}"),
        format!("cost (×{short})"),
        "best observed",
        "recipe μ"
    );
    for (method, s) in results {
        let at_target = if *method == Method::GpUcb {
            s.best_so_far.len()
        } else {
            0
        };
        let cheap = s.finished - at_target;
        let best = if at_target > 0 {
            s.best_so_far.last().copied().unwrap_or(f64::NAN)
        } else {
            s.objectives
                .iter()
                .map(|x| x.1)
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let mu = s
            .recipe
            .as_ref()
            .and_then(|r| r.source.predicted_mean)
            .map_or("-".into(), |m| format!("{m:.4}"));
        println!(
            "  {:<10} {:>9} {:>9} {:>14.1} {:>10.4} {:>9} {:>10}",
            method.name(),
            cheap,
            at_target,
            cheap as f64 + at_target as f64 / run.cheap_cost(),
            best,
            if at_target > 0 {
                format!("small:{long}")
            } else {
                format!("small:{short}")
            },
            mu
        );
    }
    Ok(())
}

/// The recipe as a concept × task grid and its marginals against the natural proportions.
fn print_recipe(manifest: &Manifest, recipe: &mixatlas::search::recipe::Recipe, out: &Path) {
    let w: Vec<f64> = manifest
        .cells
        .iter()
        .map(|c| recipe.weights.get(&c.data.name).copied().unwrap_or(0.0))
        .collect();
    println!();
    print_grid(manifest, "GP-UCB recipe", &w);
    let natural = manifest.natural_weights();
    let (rc, rt) = marginals(manifest, &w);
    let (nc, nt) = marginals(manifest, &natural);
    println!("\n  per-axis marginals, recipe vs natural proportions (%):");
    for (names, r, n) in [
        (&manifest.axes.concepts, &rc, &nc),
        (&manifest.axes.tasks, &rt, &nt),
    ] {
        for ((name, r), n) in names.iter().zip(r).zip(n) {
            println!("    {name:<12} {:>6.1} {:>6.1}", 100.0 * r, 100.0 * n);
        }
        println!();
    }
    println!(
        "  recipe: {} (Megatron blend: {})",
        out.join("search-gp-ucb/recipe.json").display(),
        out.join("search-gp-ucb/recipe.blend.txt").display()
    );
}

/// The transfer stage of the demo.
pub struct DemoTransfer {
    /// Steps per run.
    pub steps: u64,
    /// Seeds per arm.
    pub seeds: u64,
    /// Evaluation interval.
    pub eval_every: u64,
    /// Documents per benchmark per evaluation.
    pub eval_samples: usize,
    /// Documents per benchmark in the final evaluation (the benchmark scores).
    pub final_eval_samples: usize,
}

/// Trains `small` on the GP-UCB recipe and on every baseline (natural, uniform, and the
/// mixtures the other search methods recommended, `(name, recipe.json)`) with the same seeds,
/// and prints steps-to-baseline-loss and the paired score gain against each.
pub fn transfer(
    corpus_dir: &Path,
    out: &Path,
    t: &DemoTransfer,
    others: &[(String, PathBuf)],
) -> Result<()> {
    use mixatlas::dist::SingleProcess;
    use mixatlas::train::TrainConfig;
    use mixatlas::transfer::{run_transfers, Baseline, MultiTransferPlan, NamedBaseline};
    let corpus = Corpus::open(corpus_dir)?;
    let recipe_path = out.join("search-gp-ucb").join("recipe.json");
    let recipe = mixatlas::train::trainer::read_mixture(&recipe_path, &corpus.manifest)?;
    let mut train = TrainConfig::transfer();
    train.steps = t.steps;
    train.warmup_steps = (t.steps / 10).max(1);
    train.eval_every = t.eval_every;
    train.eval_samples = t.eval_samples;
    train.final_eval_samples = t.final_eval_samples;
    // 8 × 128 tokens a step: 200 steps of `small` take about 38 s on 2 cores.
    train.batch_size = 8;
    train.seq_len = 128;
    train.checkpoint_every = 0;
    let model = model_config_for(&corpus, "small", None, &[])?;
    let mut baselines = vec![
        NamedBaseline::new("natural", Baseline::Natural),
        NamedBaseline::new("uniform", Baseline::Uniform),
    ];
    for (name, path) in others {
        baselines.push(NamedBaseline::new(name, Baseline::File(path.clone())));
    }
    let names: Vec<String> = baselines.iter().map(|b| b.name.clone()).collect();
    let plan = MultiTransferPlan {
        corpus: &corpus,
        recipe,
        baselines,
        model,
        train,
        seeds: t.seeds,
        out: out.join("transfer"),
        smoothing: mixatlas::bench::steps_to_loss::Smoothing::None,
        // Two 1-thread runs at once: faster than one after another on 2 threads.
        jobs: 2,
    };
    let dir = &plan.out;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    println!(
        "  small ({:.2} M parameters), {} steps × {} seeds per arm, held-out eval every {} steps; \
         the recipe against {}",
        plan.model.num_params() as f64 / 1e6,
        t.steps,
        t.seeds,
        t.eval_every,
        names.join(", ")
    );
    let started = Instant::now();
    let mut last = Instant::now();
    let summary = run_transfers(&plan, &SingleProcess, &mut |arm, seed, step, total| {
        if step == total || last.elapsed().as_secs_f64() > 20.0 {
            println!(
                "  [{:6.1}s] {arm} seed {seed}: step {step}/{total}",
                started.elapsed().as_secs_f64()
            );
            last = Instant::now();
        }
    })?;
    println!();
    print_comparisons(&summary);
    Ok(())
}
