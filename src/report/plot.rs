//! `mixatlas plot`: the loss curves of several training runs as one SVG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::bench::steps_to_loss::{read_series, LogColumns};

use super::charts::{bounds, legend, line_key, COLORS};
use super::error::ReportError;

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
        series.push((name, read_series(r, &cols)?));
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
    root.fill(&WHITE).map_err(ReportError::draw)?;
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
        .map_err(ReportError::draw)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(ReportError::draw)?;
    for (i, (name, s)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.steps.iter().zip(&s.loss).map(|(&x, &y)| (x as f64, y)),
                c.stroke_width(2),
            ))
            .map_err(ReportError::draw)?
            .label(name.clone())
            .legend(line_key(c));
    }
    legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
    root.present().map_err(ReportError::draw)
}
