//! Measurements users make of training runs: steps-to-baseline-loss ([`steps_to_loss`]), the
//! number that says how much faster a mixture trains than the baseline.

pub mod steps_to_loss;
