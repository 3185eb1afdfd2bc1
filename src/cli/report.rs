//! `mixatlas report` (the HTML page with figures of searches and a transfer) and
//! `mixatlas plot` (loss curves of training runs as one SVG).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// `mixatlas report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A search directory, or a directory holding several (e.g. the demo's).
    pub search: PathBuf,
    /// A transfer directory (`mixatlas transfer --out`).
    pub transfer: Option<PathBuf>,
    /// Where the page and its figures go.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
}

/// `report`: the HTML page.
pub fn run_report(a: ReportArgs) -> Result<()> {
    let page = mixatlas::report::write_report(&a.search, a.transfer.as_deref(), &a.out)?;
    println!("{}", page.display());
    Ok(())
}

/// `mixatlas plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories (or log files).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output SVG.
    #[arg(long, default_value = "curves.svg")]
    pub out: PathBuf,
    /// Plot the training loss instead of the held-out loss.
    #[arg(long)]
    pub train: bool,
    /// Plot this log field instead (dotted paths reach nested fields: eval.refcoco.loss).
    #[arg(long)]
    pub metric: Option<String>,
}

/// `plot`: loss curves of runs as one SVG.
pub fn run_plot(a: PlotArgs) -> Result<()> {
    mixatlas::report::plot_runs(&a.out, &a.runs, a.train, a.metric.as_deref())?;
    println!("{}", a.out.display());
    Ok(())
}
