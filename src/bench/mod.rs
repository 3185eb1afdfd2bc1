//! Measurements users make of training runs: steps-to-baseline-loss ([`steps_to_loss`]), the
//! number that says how much faster a mixture trains than the baseline, and [`correlation`]
//! (Spearman, Pearson, RMSE) for scoring a surrogate's held-out predictions.

pub mod correlation;
pub mod steps_to_loss;

/// The upper median of `v` (the middle element after sorting; for an even length the larger of
/// the two middle ones), as the benchmarks report timings. Sorts `v` in place.
///
/// Panics when `v` is empty.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
