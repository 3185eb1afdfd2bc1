//! The report page, `index.html`, built section by section: search convergence, the recipe
//! (heat map and marginals), GP posterior slices along each axis, and the transfer (loss
//! curves of the recipe against every baseline, a row per baseline with its speedup and score
//! gain, the benchmark table). Each section draws its figures and returns its HTML.

use std::path::{Path, PathBuf};

use crate::acquisition::space::SearchSpace;
use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
use crate::bench::steps_to_loss::{read_series, LogColumns};
use crate::data::corpus::Manifest;
use crate::fsutil::{write_atomic, IoContext};
use crate::search::recipe::Recipe;
use crate::search::run::{observations, RECIPE_FILE};
use crate::surrogate::Posterior;
use crate::transfer::{run_dir, Comparison, TransferSummary, RECIPE_ARM};

use super::charts::{convergence, gp_slices, heat_map, loss_curves, marginal_bars, BaselineCurve};
use super::error::ReportError;
use super::searches::{find_searches, Search};

/// The page's head: title and style sheet.
const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>MixAtlas report</title>\n<style>body{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}</style>\n</head><body>\n<h1>MixAtlas report</h1>\n";

/// Writes `out/index.html` and its SVG figures; returns the page's path.
pub fn write_report(
    search_dir: &Path,
    transfer_dir: Option<&Path>,
    out: &Path,
) -> Result<PathBuf, ReportError> {
    std::fs::create_dir_all(out).at("creating", out)?;
    let searches = find_searches(search_dir)?;
    let mut html = String::from(HEAD);
    html += &search_section(&searches, out)?;
    // Recipe of the GP-UCB search (or the first).
    let main = searches
        .iter()
        .find(|s| s.method == "gp-ucb")
        .unwrap_or(&searches[0]);
    let recipe = RecipeView::load(main)?;
    html += &recipe.section(main, out)?;
    html += &gp_section(main, &recipe, out)?;
    if let Some(tdir) = transfer_dir {
        html += &transfer_section(tdir, out)?;
    }
    html += "</body></html>\n";
    let page = out.join("index.html");
    write_atomic(&page, html.as_bytes())?;
    Ok(page)
}

/// Convergence of every search (best objective after N trials) and the summary table.
fn search_section(searches: &[Search], out: &Path) -> Result<String, ReportError> {
    let mut curves = Vec::new();
    let mut summary_rows = String::new();
    for s in searches {
        let manifest = Manifest::load(&s.cfg.corpus)
            .map_err(|e| ReportError::search("the corpus manifest", &s.dir, e))?;
        let space = SearchSpace::from_manifest(&manifest, s.cfg.space, &s.cfg.constraints)
            .map_err(|e| ReportError::search("the search space", &s.dir, e))?;
        let (_, ys) = observations(&space, &s.state.finished(), &s.cfg)
            .map_err(|e| ReportError::search("the objectives", &s.dir, e))?;
        let mut best = Vec::new();
        for (_, y) in &ys {
            best.push(best.last().map_or(*y, |b: &f64| b.max(*y)));
        }
        summary_rows += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&s.method),
            ys.len(),
            best.last().map_or("–".into(), |b| format!("{b:.4}"))
        );
        curves.push((s.method.clone(), best));
    }
    convergence(&out.join("convergence.svg"), &curves)?;
    let mut html =
        String::from("<h2>Search</h2>\n<img src=\"convergence.svg\" alt=\"search convergence\">\n");
    html += &format!(
        "<table><tr><th>method</th><th>trials</th><th>best objective</th></tr>\n{summary_rows}</table>\n"
    );
    Ok(html)
}

/// The recipe of the main search over its corpus's cells.
struct RecipeView {
    manifest: Manifest,
    recipe: Recipe,
    /// The recipe's weight of each cell, in manifest order (0 where it has none).
    weights: Vec<f64>,
}

impl RecipeView {
    /// Reads the search's corpus manifest and `recipe.json`.
    fn load(main: &Search) -> Result<Self, ReportError> {
        let manifest = Manifest::load(&main.cfg.corpus)
            .map_err(|e| ReportError::search("the corpus manifest", &main.dir, e))?;
        let path = main.dir.join(RECIPE_FILE);
        let recipe: Recipe =
            serde_json::from_str(&std::fs::read_to_string(&path).at("reading", &path)?)
                .map_err(|source| ReportError::Json { path, source })?;
        let weights: Vec<f64> = manifest
            .cells
            .iter()
            .map(|c| recipe.weights.get(&c.data.name).copied().unwrap_or(0.0))
            .collect();
        Ok(Self {
            manifest,
            recipe,
            weights,
        })
    }

    /// The heat map of the recipe and its concept and task marginals against the natural
    /// proportions.
    fn section(&self, main: &Search, out: &Path) -> Result<String, ReportError> {
        let manifest = &self.manifest;
        let w = &self.weights;
        heat_map(&out.join("recipe.svg"), manifest, w)?;
        let natural = manifest.natural_weights();
        let marg = |v: &[f64], concept: bool| -> Vec<f64> {
            let n = if concept {
                manifest.axes.concepts.len()
            } else {
                manifest.axes.tasks.len()
            };
            let mut out = vec![0.0; n];
            for (c, &x) in manifest.cells.iter().zip(v) {
                out[if concept { c.concept } else { c.task }] += x;
            }
            out
        };
        marginal_bars(
            &out.join("concepts.svg"),
            "Concept shares: recipe vs natural",
            &manifest.axes.concepts,
            &marg(w, true),
            &marg(&natural, true),
        )?;
        marginal_bars(
            &out.join("tasks.svg"),
            "Task shares: recipe vs natural",
            &manifest.axes.tasks,
            &marg(w, false),
            &marg(&natural, false),
        )?;
        Ok(format!(
            "<h2>Recipe ({})</h2>\n<p>{}</p>\n<img src=\"recipe.svg\" alt=\"recipe heat map\">\n<img src=\"concepts.svg\" alt=\"concept marginals\">\n<img src=\"tasks.svg\" alt=\"task marginals\">\n",
            esc(&main.method),
            esc(&self.recipe.source.reason)
        ))
    }
}

/// The GP posterior (mean ± 2σ) along each concept and each task through the recipe, when the
/// main search has at least three finished trials; empty otherwise.
fn gp_section(main: &Search, recipe: &RecipeView, out: &Path) -> Result<String, ReportError> {
    let manifest = &recipe.manifest;
    let space = SearchSpace::from_manifest(manifest, main.cfg.space, &main.cfg.constraints)
        .map_err(|e| ReportError::search("the search space", &main.dir, e))?;
    let (obs, _) = observations(&space, &main.state.finished(), &main.cfg)
        .map_err(|e| ReportError::search("the objectives", &main.dir, e))?;
    let mut html = String::new();
    if obs.len() < 3 {
        return Ok(html);
    }
    let mut ucb = GpUcb::new(GpUcbConfig::seeded(main.cfg.seed));
    let gp = ucb
        .fit(&obs)
        .map_err(|e| ReportError::search("the GP fit", &main.dir, e))?;
    for (concept, names, file) in [
        (true, &manifest.axes.concepts, "gp-concepts.svg"),
        (false, &manifest.axes.tasks, "gp-tasks.svg"),
    ] {
        let mut curves = Vec::new();
        for e in 0..names.len() {
            let mut pts = Vec::new();
            for k in 0..=20 {
                let share = k as f64 / 20.0;
                let mix = slice(manifest, &recipe.weights, concept, e, share);
                let Ok(x) = space.from_mixture(&mix) else {
                    continue;
                };
                let (m, v) = gp.predict(&x);
                pts.push((share, m[0], v[0].max(0.0).sqrt()));
            }
            curves.push(pts);
        }
        let title = if concept {
            "GP posterior along the concept axis"
        } else {
            "GP posterior along the task axis"
        };
        gp_slices(&out.join(file), title, names, &curves)?;
        html += &format!("<img src=\"{file}\" alt=\"{title}\">\n");
    }
    Ok(html)
}

/// The transfer in `tdir`: seed 0's held-out loss curves of the recipe against every
/// baseline with the steps-to-baseline markers, one summary row per baseline (speedup per
/// seed, mean with its interval, score gain with its interval, wins), the benchmark table of
/// the recipe and every baseline, and each score gain in words. A `transfer.json` written
/// before several baselines reads as one comparison against `baseline`.
fn transfer_section(tdir: &Path, out: &Path) -> Result<String, ReportError> {
    let path = tdir.join("transfer.json");
    let summary: TransferSummary =
        serde_json::from_str(&std::fs::read_to_string(&path).at("reading", &path)?)
            .map_err(|source| ReportError::Json { path, source })?;
    let comparisons = summary.comparisons();
    let rec = read_series(&run_dir(tdir, RECIPE_ARM, 0), &LogColumns::eval())?;
    let curves = comparisons
        .iter()
        .map(|c| read_series(&run_dir(tdir, &c.arm, 0), &LogColumns::eval()))
        .collect::<Result<Vec<_>, _>>()?;
    let lines: Vec<BaselineCurve<'_>> = comparisons
        .iter()
        .zip(&curves)
        .filter_map(|(c, series)| {
            let first = c.per_seed.first()?;
            Some(BaselineCurve {
                name: &c.baseline,
                series,
                target: first.target,
                reach: first.candidate_step,
            })
        })
        .collect();
    loss_curves(&out.join("loss.svg"), &rec, &lines)?;
    let mut html = String::from("<h2>Transfer</h2>\n<img src=\"loss.svg\" alt=\"loss curves\">\n");
    html += &comparison_table(&comparisons);
    html += &benchmark_table(&comparisons);
    for c in &comparisons {
        if let Some((m, lo, hi)) = c.score_gain {
            html += &format!(
                "<p>Mean benchmark score, recipe − {}: <b>{m:+.3}</b> (95&nbsp;% bootstrap interval {lo:+.3} to {hi:+.3}); higher in {} of {} seeds.</p>\n",
                esc(&c.baseline),
                c.wins,
                c.score_gain_per_seed.len()
            );
        }
    }
    Ok(html)
}

/// One row per baseline: steps-to-baseline-loss speedup per seed, its mean with the 95 %
/// bootstrap interval, the paired score gain with its interval, and the seeds won.
fn comparison_table(comparisons: &[Comparison]) -> String {
    let mut rows = String::new();
    for c in comparisons {
        let per: Vec<String> = c
            .per_seed
            .iter()
            .map(|r| r.speedup.map_or("never".into(), |x| format!("{x:.2}×")))
            .collect();
        let mean = match c.speedup {
            Some((m, lo, hi)) => format!("<b>{m:.2}×</b> [{lo:.2}, {hi:.2}]"),
            None => format!(
                "never reached in {} of {} seeds",
                c.never_reached.len(),
                c.per_seed.len()
            ),
        };
        let gain = c.score_gain.map_or("–".into(), |(m, lo, hi)| {
            format!("{m:+.3} [{lo:+.3}, {hi:+.3}]")
        });
        rows += &format!(
            "<tr><td>{}</td><td>{}</td><td>{mean}</td><td>{gain}</td><td>{} of {}</td></tr>\n",
            esc(&c.baseline),
            per.join(" "),
            c.wins,
            c.score_gain_per_seed.len()
        );
    }
    format!(
        "<p>Steps to each baseline's final held-out loss (speedup = the baseline's steps / the recipe's; mean over seeds with its 95&nbsp;% bootstrap interval) and the mean benchmark score gain, recipe − baseline, paired by seed.</p>\n<table><tr><th>baseline</th><th>speedup per seed</th><th>mean [95&nbsp;% CI]</th><th>score gain [95&nbsp;% CI]</th><th>wins</th></tr>\n{rows}</table>\n"
    )
}

/// Per benchmark: the metric, then the score and the answer loss of the recipe and of each
/// baseline (means over seeds).
fn benchmark_table(comparisons: &[Comparison]) -> String {
    let Some(first) = comparisons.first() else {
        return String::new();
    };
    let mut head = String::from("<tr><th>benchmark</th><th>metric</th><th>score, recipe</th>");
    for c in comparisons {
        head += &format!("<th>score, {}</th>", esc(&c.baseline));
    }
    head += "<th>loss, recipe</th>";
    for c in comparisons {
        head += &format!("<th>loss, {}</th>", esc(&c.baseline));
    }
    let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| {
        m.get(k).copied().unwrap_or(f64::NAN)
    };
    let mut rows = String::new();
    for r in first.table() {
        rows += &format!(
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td>",
            esc(&r.name),
            r.metric,
            r.score.1
        );
        for c in comparisons {
            rows += &format!("<td>{:.3}</td>", get(&c.baseline_benchmarks, &r.name));
        }
        rows += &format!("<td>{:.4}</td>", r.loss.1);
        for c in comparisons {
            rows += &format!("<td>{:.4}</td>", get(&c.baseline_benchmark_loss, &r.name));
        }
        rows += "</tr>\n";
    }
    format!("<table>{head}</tr>\n{rows}</table>\n")
}

/// Mixtures along one axis entry: its share goes from 0 to 1, the other entries of the axis
/// keep their proportions in `base`, and each entry's cells keep their proportions.
fn slice(m: &Manifest, base: &[f64], concept_axis: bool, entry: usize, share: f64) -> Vec<f64> {
    let key = |i: usize| {
        if concept_axis {
            m.cells[i].concept
        } else {
            m.cells[i].task
        }
    };
    let count = m
        .cells
        .iter()
        .enumerate()
        .filter(|(i, _)| key(*i) == entry)
        .count()
        .max(1);
    let inside: f64 = (0..m.cells.len())
        .filter(|&i| key(i) == entry)
        .map(|i| base[i])
        .sum();
    let outside: f64 = 1.0 - inside;
    (0..m.cells.len())
        .map(|i| {
            if key(i) == entry {
                if inside > 1e-12 {
                    base[i] / inside * share
                } else {
                    share / count as f64
                }
            } else if outside > 1e-12 {
                base[i] / outside * (1.0 - share)
            } else {
                0.0
            }
        })
        .collect()
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
