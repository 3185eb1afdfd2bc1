//! `mixatlas report SEARCH_DIR [TRANSFER_DIR]`: one self-contained HTML page plus SVG figures
//! drawn with plotters: search convergence (every method found under SEARCH_DIR), the recipe
//! as a concept × task heat map, per-axis marginals against natural proportions, the GP
//! posterior mean ± 2σ along each axis, and, with a transfer directory, the held-out loss
//! curves of the recipe against every baseline with the steps-to-baseline markers, a row per
//! baseline (speedup and score gain with their intervals) and the benchmark table.
//!
//! [`searches`] finds and loads the searches, [`page`] builds the page section by section,
//! [`charts`] draws the figures, [`plot`] is `mixatlas plot`, [`error`] says what failed.

pub mod charts;
pub mod error;
pub mod page;
pub mod plot;
pub mod searches;

pub use error::ReportError;
pub use page::write_report;
pub use plot::plot_runs;
