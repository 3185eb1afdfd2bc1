//! The SVG figures of the report, drawn with plotters: search convergence, the recipe's heat
//! map, marginal bars, GP posterior slices and loss curves, with the shared palette, legend
//! and axis helpers.

use std::path::Path;

use plotters::prelude::*;

use crate::bench::steps_to_loss::Series;
use crate::data::corpus::Manifest;

use super::error::ReportError;

/// The palette of lines and bars, in the order series are drawn.
pub(super) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The boxed legend of a chart at `pos` (plotters' own default is middle right).
pub(super) fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), ReportError>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(ReportError::draw)
}

/// A legend sample for a 2-pixel line of colour `c`.
pub(super) fn line_key<C: Color + Copy>(c: C) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
}

/// The best objective after N trials of each search, one line per method.
pub(super) fn convergence(path: &Path, curves: &[(String, Vec<f64>)]) -> Result<(), ReportError> {
    let n = curves.iter().map(|c| c.1.len()).max().unwrap_or(1).max(2);
    let all: Vec<f64> = curves.iter().flat_map(|c| c.1.iter().copied()).collect();
    let (lo, hi) = bounds(&all);
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(ReportError::draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Search convergence: best objective after N trials",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(1f64..n as f64, lo..hi)
        .map_err(ReportError::draw)?;
    chart
        .configure_mesh()
        .x_desc("trials")
        .y_desc("best objective")
        .draw()
        .map_err(ReportError::draw)?;
    for (i, (name, ys)) in curves.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                ys.iter().enumerate().map(|(k, &y)| ((k + 1) as f64, y)),
                c.stroke_width(2),
            ))
            .map_err(ReportError::draw)?
            .label(name.clone())
            .legend(line_key(c));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(ReportError::draw)
}

/// The category name at an integer tick, nothing between ticks.
pub(super) fn label_at(names: &[String], x: f64) -> String {
    let k = x.round();
    if (k - x).abs() > 0.01 || k < 0.0 {
        return String::new();
    }
    names.get(k as usize).cloned().unwrap_or_default()
}

/// The y range of `v` with 8 % padding ((0, 1) when `v` has no finite values).
pub(super) fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-6);
    (lo - pad, hi + pad)
}

/// The recipe as a concept × task grid of cells coloured by weight, with percentages.
pub(super) fn heat_map(path: &Path, m: &Manifest, w: &[f64]) -> Result<(), ReportError> {
    let (nc, nt) = (m.axes.concepts.len(), m.axes.tasks.len());
    let root = SVGBackend::new(path, (720, 80 + 34 * nc as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(ReportError::draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Recipe: weight per (concept, task) cell",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..nt as f64 - 0.5, -0.5f64..nc as f64 - 0.5)
        .map_err(ReportError::draw)?;
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
        .map_err(ReportError::draw)?;
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
            .map_err(ReportError::draw)?;
        let text_color = if x / max > 0.6 { BLACK } else { WHITE };
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{:.1}%", 100.0 * x),
                (x0 + 0.35, y0 + 0.6),
                ("sans-serif", 12).into_font().color(&text_color),
            )))
            .map_err(ReportError::draw)?;
    }
    root.present().map_err(ReportError::draw)
}

/// Paired bars per axis entry: the recipe's share against the natural share.
pub(super) fn marginal_bars(
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
    root.fill(&WHITE).map_err(ReportError::draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..hi)
        .map_err(ReportError::draw)?;
    let labels = names.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| label_at(&labels, *x))
        .y_desc("share")
        .draw()
        .map_err(ReportError::draw)?;
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
            .map_err(ReportError::draw)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(ReportError::draw)
}

/// The GP posterior mean with a ±2σ band along each entry of one axis.
pub(super) fn gp_slices(
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
    root.fill(&WHITE).map_err(ReportError::draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, lo..hi)
        .map_err(ReportError::draw)?;
    chart
        .configure_mesh()
        .x_desc("share of the entry (others keep the recipe's proportions)")
        .y_desc("GP posterior mean ± 2σ")
        .draw()
        .map_err(ReportError::draw)?;
    for (i, (name, pts)) in names.iter().zip(curves).enumerate() {
        let c = Palette99::pick(i).to_rgba();
        let band: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(x, m, s)| (x, m + 2.0 * s))
            .chain(pts.iter().rev().map(|&(x, m, s)| (x, m - 2.0 * s)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(band, c.mix(0.12).filled())))
            .map_err(ReportError::draw)?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, m, _)| (x, m)),
                c.stroke_width(2),
            ))
            .map_err(ReportError::draw)?
            .label(name.clone())
            .legend(line_key(c));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(ReportError::draw)
}

/// One baseline's curve in [`loss_curves`]: its name, held-out loss, final loss L* and the
/// step where the recipe reaches it (None: never).
pub(super) struct BaselineCurve<'s> {
    /// The baseline's name.
    pub name: &'s str,
    /// Its held-out loss curve.
    pub series: &'s Series,
    /// L*: its final (smoothed) loss.
    pub target: f64,
    /// The first step where the recipe's loss is at or below L*.
    pub reach: Option<u64>,
}

/// Held-out loss of the recipe against every baseline: each baseline's curve, its final loss
/// L* as a thin line of its colour, and a marker of its colour where the recipe reaches it.
pub(super) fn loss_curves(
    path: &Path,
    recipe: &Series,
    baselines: &[BaselineCurve<'_>],
) -> Result<(), ReportError> {
    let all: Vec<f64> = baselines
        .iter()
        .flat_map(|b| b.series.loss.iter())
        .chain(&recipe.loss)
        .copied()
        .collect();
    let (lo, hi) = bounds(&all);
    let x_hi = baselines
        .iter()
        .filter_map(|b| b.series.steps.last())
        .chain(recipe.steps.last())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(ReportError::draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Held-out loss: recipe against each baseline (seed 0)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_hi, lo..hi)
        .map_err(ReportError::draw)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("answer loss")
        .draw()
        .map_err(ReportError::draw)?;
    let line = |s: &Series| -> Vec<(f64, f64)> {
        s.steps
            .iter()
            .zip(&s.loss)
            .map(|(&x, &y)| (x as f64, y))
            .collect()
    };
    chart
        .draw_series(LineSeries::new(line(recipe), COLORS[0].stroke_width(3)))
        .map_err(ReportError::draw)?
        .label("recipe")
        .legend(line_key(COLORS[0]));
    for (i, b) in baselines.iter().enumerate() {
        let c = COLORS[(i + 1) % COLORS.len()];
        chart
            .draw_series(LineSeries::new(line(b.series), c.stroke_width(2)))
            .map_err(ReportError::draw)?
            .label(b.name.to_string())
            .legend(line_key(c));
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, b.target), (x_hi, b.target)],
                c.mix(0.6).stroke_width(1),
            ))
            .map_err(ReportError::draw)?;
        let label = match b.reach {
            Some(st) => format!("recipe reaches {}'s L* at step {st}", b.name),
            None => format!("recipe never reaches {}'s L* = {:.3}", b.name, b.target),
        };
        let marker = b
            .reach
            .map(|st| Circle::new((st as f64, b.target), 6, c.filled()));
        chart
            .draw_series(marker)
            .map_err(ReportError::draw)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(ReportError::draw)
}
