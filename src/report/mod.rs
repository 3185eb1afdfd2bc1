//! `mixatlas report SEARCH_DIR [TRANSFER_DIR]`: one self-contained HTML page plus SVG figures
//! drawn with plotters: search convergence (every method found under SEARCH_DIR), the recipe
//! as a concept × task heat map, per-axis marginals against natural proportions, the GP
//! posterior mean ± 2σ along each axis, and, with a transfer directory, the held-out loss
//! curves of baseline and recipe with the steps-to-baseline marker and the benchmark table.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::acquisition::space::SearchSpace;
use crate::acquisition::ucb::{GpUcb, GpUcbConfig};
use crate::bench::steps_to_loss::{read_series, LogColumns, Series};
use crate::data::corpus::Manifest;
use crate::fsutil::{write_atomic, IoContext};
use crate::search::config::SearchConfig;
use crate::search::run::{observations, RECIPE_FILE, RESOLVED_FILE};
use crate::search::state::{SearchState, TRIALS_FILE};
use crate::surrogate::Posterior;
use crate::transfer::TransferSummary;

/// The report could not be made.
#[derive(Debug, thiserror::Error)]
#[error("report: {0}")]
pub struct ReportError(pub String);

fn err(e: impl std::fmt::Display) -> ReportError {
    ReportError(e.to_string())
}

/// One search found under the search directory.
struct Search {
    method: String,
    cfg: SearchConfig,
    dir: PathBuf,
    state: SearchState,
}

fn load_search(dir: &Path) -> Result<Search, ReportError> {
    let resolved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(RESOLVED_FILE))
            .map_err(|e| err(format!("{}: {e}", dir.join(RESOLVED_FILE).display())))?,
    )
    .map_err(err)?;
    let cfg: SearchConfig = serde_json::from_value(resolved["search"].clone()).map_err(err)?;
    let text = std::fs::read_to_string(dir.join(TRIALS_FILE)).map_err(err)?;
    let state = SearchState::replay(&text, cfg.budget.retries + 1).map_err(err)?;
    Ok(Search {
        method: cfg.method.name().to_string(),
        cfg,
        dir: dir.to_path_buf(),
        state,
    })
}

/// Searches in `dir` itself or in its sub-directories.
fn find_searches(dir: &Path) -> Result<Vec<Search>, ReportError> {
    if dir.join(TRIALS_FILE).is_file() {
        return Ok(vec![load_search(dir)?]);
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(TRIALS_FILE).is_file())
        .collect();
    subs.sort();
    if subs.is_empty() {
        return Err(err(format!(
            "{} holds no search (no trials.jsonl in it or its sub-directories)",
            dir.display()
        )));
    }
    subs.iter().map(|p| load_search(p)).collect()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn svg_err<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError(format!("drawing: {e:?}"))
}

/// The boxed legend of a chart at `pos` (plotters' own default is middle right).
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), ReportError>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(svg_err)
}

/// A legend sample for a 2-pixel line of colour `c`.
fn line_key<C: Color + Copy>(c: C) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
}

fn convergence(path: &Path, curves: &[(String, Vec<f64>)]) -> Result<(), ReportError> {
    let n = curves.iter().map(|c| c.1.len()).max().unwrap_or(1).max(2);
    let all: Vec<f64> = curves.iter().flat_map(|c| c.1.iter().copied()).collect();
    let (lo, hi) = bounds(&all);
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Search convergence: best objective after N trials",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..n as f64, lo..hi)
        .map_err(svg_err)?;
    chart
        .configure_mesh()
        .x_desc("trials")
        .y_desc("best objective")
        .draw()
        .map_err(svg_err)?;
    for (i, (name, ys)) in curves.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                ys.iter().enumerate().map(|(k, &y)| ((k + 1) as f64, y)),
                c.stroke_width(2),
            ))
            .map_err(svg_err)?
            .label(name.clone())
            .legend(line_key(c));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(svg_err)
}

/// The category name at an integer tick, nothing between ticks.
fn label_at(names: &[String], x: f64) -> String {
    let k = x.round();
    if (k - x).abs() > 0.01 || k < 0.0 {
        return String::new();
    }
    names.get(k as usize).cloned().unwrap_or_default()
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-6);
    (lo - pad, hi + pad)
}

fn heat_map(path: &Path, m: &Manifest, w: &[f64]) -> Result<(), ReportError> {
    let (nc, nt) = (m.axes.concepts.len(), m.axes.tasks.len());
    let root = SVGBackend::new(path, (720, 80 + 34 * nc as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Recipe: weight per (concept, task) cell",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..nt as f64 - 0.5, -0.5f64..nc as f64 - 0.5)
        .map_err(svg_err)?;
    let tasks = m.axes.tasks.clone();
    let concepts = m.axes.concepts.clone();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(nt + 1)
        .y_labels(nc + 1)
        .x_label_formatter(&|x| label_at(&tasks, *x))
        .y_label_formatter(&|y| {
            let k = y.round();
            if (k - y).abs() > 0.01 || k < 0.0 {
                return String::new();
            }
            concepts
                .get(nc.saturating_sub(1 + k as usize))
                .cloned()
                .unwrap_or_default()
        })
        .draw()
        .map_err(svg_err)?;
    let max = w.iter().copied().fold(1e-12, f64::max);
    for (cell, &x) in m.cells.iter().zip(w) {
        let (ci, ti) = (cell.concept, cell.task);
        let y0 = (nc - 1 - ci) as f64 - 0.5;
        let x0 = ti as f64 - 0.5;
        let color = ViridisRGB::get_color(x / max);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                color.filled(),
            )))
            .map_err(svg_err)?;
        let text_color = if x / max > 0.6 { BLACK } else { WHITE };
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.1}%", 100.0 * x),
                (x0 + 0.35, y0 + 0.6),
                ("sans-serif", 12).into_font().color(&text_color),
            )))
            .map_err(svg_err)?;
    }
    root.present().map_err(svg_err)
}

fn marginal_bars(
    path: &Path,
    title: &str,
    names: &[String],
    recipe: &[f64],
    natural: &[f64],
) -> Result<(), ReportError> {
    let n = names.len();
    let hi = recipe
        .iter()
        .chain(natural)
        .copied()
        .fold(0.0, f64::max)
        .max(1e-6)
        // Headroom above the tallest bar for the legend (upper right, ~15 % of the height).
        * 1.4;
    let root = SVGBackend::new(path, (720, 340)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..hi)
        .map_err(svg_err)?;
    let labels = names.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| label_at(&labels, *x))
        .y_desc("share")
        .draw()
        .map_err(svg_err)?;
    for (k, (vals, c, label)) in [
        (recipe, COLORS[0], "recipe"),
        (natural, COLORS[1], "natural"),
    ]
    .into_iter()
    .enumerate()
    {
        chart
            .draw_series(vals.iter().enumerate().map(|(i, &v)| {
                let x0 = i as f64 - 0.4 + 0.4 * k as f64;
                Rectangle::new([(x0, 0.0), (x0 + 0.38, v)], c.filled())
            }))
            .map_err(svg_err)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(svg_err)
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

fn gp_slices(
    path: &Path,
    title: &str,
    names: &[String],
    curves: &[Vec<(f64, f64, f64)>],
) -> Result<(), ReportError> {
    let all: Vec<f64> = curves
        .iter()
        .flatten()
        .flat_map(|&(_, m, s)| [m - 2.0 * s, m + 2.0 * s])
        .collect();
    let (lo, hi) = bounds(&all);
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, lo..hi)
        .map_err(svg_err)?;
    chart
        .configure_mesh()
        .x_desc("share of the entry (others keep the recipe's proportions)")
        .y_desc("GP posterior mean ± 2σ")
        .draw()
        .map_err(svg_err)?;
    for (i, (name, pts)) in names.iter().zip(curves).enumerate() {
        let c = Palette99::pick(i).to_rgba();
        let band: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(x, m, s)| (x, m + 2.0 * s))
            .chain(pts.iter().rev().map(|&(x, m, s)| (x, m - 2.0 * s)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(band, c.mix(0.12).filled())))
            .map_err(svg_err)?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, m, _)| (x, m)),
                c.stroke_width(2),
            ))
            .map_err(svg_err)?
            .label(name.clone())
            .legend(line_key(c));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(svg_err)
}

fn loss_curves(
    path: &Path,
    base: &Series,
    recipe: &Series,
    target: f64,
    reach: Option<u64>,
) -> Result<(), ReportError> {
    let all: Vec<f64> = base.loss.iter().chain(&recipe.loss).copied().collect();
    let (lo, hi) = bounds(&all);
    let x_hi = *base
        .steps
        .last()
        .unwrap_or(&1)
        .max(recipe.steps.last().unwrap_or(&1)) as f64;
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Held-out loss: baseline vs recipe (seed 0)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_hi.max(1.0), lo..hi)
        .map_err(svg_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("answer loss")
        .draw()
        .map_err(svg_err)?;
    for (i, (name, s)) in [("baseline", base), ("recipe", recipe)].iter().enumerate() {
        let c = COLORS[i];
        chart
            .draw_series(LineSeries::new(
                s.steps.iter().zip(&s.loss).map(|(&x, &y)| (x as f64, y)),
                c.stroke_width(2),
            ))
            .map_err(svg_err)?
            .label(*name)
            .legend(line_key(c));
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, target), (x_hi, target)],
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(svg_err)?
        .label("baseline's final loss L*")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
    if let Some(st) = reach {
        chart
            .draw_series(std::iter::once(Circle::new(
                (st as f64, target),
                6,
                COLORS[3].filled(),
            )))
            .map_err(svg_err)?
            .label(format!("recipe reaches L* at step {st}"))
            .legend(|(x, y)| Circle::new((x + 9, y), 4, COLORS[3].filled()));
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
    root.present().map_err(svg_err)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `out/index.html` and its SVG figures; returns the page's path.
pub fn write_report(
    search_dir: &Path,
    transfer_dir: Option<&Path>,
    out: &Path,
) -> Result<PathBuf, ReportError> {
    std::fs::create_dir_all(out)
        .at("creating", out)
        .map_err(err)?;
    let searches = find_searches(search_dir)?;
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>MixAtlas report</title>\n<style>body{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}</style>\n</head><body>\n<h1>MixAtlas report</h1>\n",
    );
    // Convergence.
    let mut curves = Vec::new();
    let mut summary_rows = String::new();
    for s in &searches {
        let manifest = Manifest::load(&s.cfg.corpus).map_err(err)?;
        let space =
            SearchSpace::from_manifest(&manifest, s.cfg.space, &s.cfg.constraints).map_err(err)?;
        let (_, ys) = observations(&space, &s.state.finished(), &s.cfg).map_err(err)?;
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
    html += "<h2>Search</h2>\n<img src=\"convergence.svg\" alt=\"search convergence\">\n";
    html += &format!(
        "<table><tr><th>method</th><th>trials</th><th>best objective</th></tr>\n{summary_rows}</table>\n"
    );
    // Recipe of the GP-UCB search (or the first).
    let main = searches
        .iter()
        .find(|s| s.method == "gp-ucb")
        .unwrap_or(&searches[0]);
    let manifest = Manifest::load(&main.cfg.corpus).map_err(err)?;
    let recipe: crate::search::recipe::Recipe =
        serde_json::from_str(&std::fs::read_to_string(main.dir.join(RECIPE_FILE)).map_err(err)?)
            .map_err(err)?;
    let w: Vec<f64> = manifest
        .cells
        .iter()
        .map(|c| recipe.weights.get(&c.data.name).copied().unwrap_or(0.0))
        .collect();
    heat_map(&out.join("recipe.svg"), &manifest, &w)?;
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
        &marg(&w, true),
        &marg(&natural, true),
    )?;
    marginal_bars(
        &out.join("tasks.svg"),
        "Task shares: recipe vs natural",
        &manifest.axes.tasks,
        &marg(&w, false),
        &marg(&natural, false),
    )?;
    html += &format!(
        "<h2>Recipe ({})</h2>\n<p>{}</p>\n<img src=\"recipe.svg\" alt=\"recipe heat map\">\n<img src=\"concepts.svg\" alt=\"concept marginals\">\n<img src=\"tasks.svg\" alt=\"task marginals\">\n",
        esc(&main.method),
        esc(&recipe.source.reason)
    );
    // GP slices.
    let space = SearchSpace::from_manifest(&manifest, main.cfg.space, &main.cfg.constraints)
        .map_err(err)?;
    let (obs, _) = observations(&space, &main.state.finished(), &main.cfg).map_err(err)?;
    if obs.len() >= 3 {
        let mut ucb = GpUcb::new(GpUcbConfig::seeded(main.cfg.seed));
        let gp = ucb.fit(&obs).map_err(err)?;
        for (concept, names, file) in [
            (true, &manifest.axes.concepts, "gp-concepts.svg"),
            (false, &manifest.axes.tasks, "gp-tasks.svg"),
        ] {
            let mut curves = Vec::new();
            for e in 0..names.len() {
                let mut pts = Vec::new();
                for k in 0..=20 {
                    let share = k as f64 / 20.0;
                    let mix = slice(&manifest, &w, concept, e, share);
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
    }
    // Transfer.
    if let Some(tdir) = transfer_dir {
        let summary: TransferSummary = serde_json::from_str(
            &std::fs::read_to_string(tdir.join("transfer.json"))
                .map_err(|e| err(format!("{}: {e}", tdir.join("transfer.json").display())))?,
        )
        .map_err(err)?;
        let base = read_series(
            &crate::transfer::run_dir(tdir, "baseline", 0),
            &LogColumns::eval(),
        )
        .map_err(err)?;
        let rec = read_series(
            &crate::transfer::run_dir(tdir, "recipe", 0),
            &LogColumns::eval(),
        )
        .map_err(err)?;
        let first = &summary.per_seed[0];
        loss_curves(
            &out.join("loss.svg"),
            &base,
            &rec,
            first.target,
            first.candidate_step,
        )?;
        html += "<h2>Transfer</h2>\n<img src=\"loss.svg\" alt=\"loss curves\">\n";
        html += &match summary.speedup {
            Some((m, lo, hi)) => format!(
                "<p>Steps to the baseline's final held-out loss: <b>{m:.2}×</b> fewer with the recipe (mean over {} seeds, 95&nbsp;% bootstrap interval {lo:.2}–{hi:.2}).</p>\n",
                summary.per_seed.len()
            ),
            None => "<p>The recipe did not reach the baseline's final loss in every seed.</p>\n".into(),
        };
        let mut rows = String::new();
        for r in summary.table() {
            rows += &format!(
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.4}</td><td>{:.4}</td></tr>\n",
                esc(&r.name),
                r.metric,
                r.score.0,
                r.score.1,
                r.loss.0,
                r.loss.1
            );
        }
        html += &format!(
            "<table><tr><th>benchmark</th><th>metric</th><th>score, baseline</th><th>score, recipe</th><th>loss, baseline</th><th>loss, recipe</th></tr>\n{rows}</table>\n"
        );
        if let Some((m, lo, hi)) = summary.score_gain {
            html += &format!(
                "<p>Mean benchmark score, recipe − baseline: <b>{m:+.3}</b> (95&nbsp;% bootstrap interval {lo:+.3} to {hi:+.3}); higher in {} of {} seeds.</p>\n",
                summary.seeds_higher(),
                summary.score_gain_per_seed.len()
            );
        }
    }
    html += "</body></html>\n";
    let page = out.join("index.html");
    write_atomic(&page, html.as_bytes()).map_err(err)?;
    Ok(page)
}

/// Plots the held-out loss curves of several training runs (`mixatlas plot`): one line per
/// run, named by its directory.
pub fn plot_runs(
    out: &Path,
    runs: &[PathBuf],
    train_loss: bool,
    metric: Option<&str>,
) -> Result<(), ReportError> {
    let mut cols = if train_loss {
        LogColumns::train()
    } else {
        LogColumns::eval()
    };
    if let Some(m) = metric {
        cols.loss = m.to_string();
    }
    let mut series = Vec::new();
    for r in runs {
        let name = r.file_name().map_or_else(
            || r.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        series.push((name, read_series(r, &cols).map_err(err)?));
    }
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.loss.iter().copied())
        .collect();
    let (lo, hi) = bounds(&all);
    let x_hi = series
        .iter()
        .filter_map(|s| s.1.steps.last().copied())
        .max()
        .unwrap_or(1) as f64;
    let root = SVGBackend::new(out, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(svg_err)?;
    let title = match (metric, train_loss) {
        (Some(m), _) => m.to_string(),
        (None, true) => "Training loss".into(),
        (None, false) => "Held-out answer loss (mean over benchmarks)".into(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_hi.max(1.0), lo..hi)
        .map_err(svg_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(svg_err)?;
    for (i, (name, s)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.steps.iter().zip(&s.loss).map(|(&x, &y)| (x as f64, y)),
                c.stroke_width(2),
            ))
            .map_err(svg_err)?
            .label(name.clone())
            .legend(line_key(c));
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
    root.present().map_err(svg_err)
}
