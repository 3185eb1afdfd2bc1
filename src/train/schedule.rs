//! Learning-rate schedules: linear warmup followed by cosine decay, or warmup-stable-decay
//! (WSD: constant after warmup, then a linear decay over the last fraction of the steps).

use serde::{Deserialize, Serialize};

/// Which schedule follows the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// Cosine from the peak down to the minimum at the last step.
    Cosine,
    /// Constant at the peak, then linear to the minimum over the last `decay_fraction` of the
    /// steps (MiniCPM's warmup-stable-decay).
    Wsd {
        /// Fraction of all steps spent decaying (0–1).
        decay_fraction: f64,
    },
    /// Constant at the peak after warmup.
    Constant,
}

/// The learning rate at `step` (0-based) of `total` steps: linear warmup from `peak/warmup`
/// to `peak` over `warmup` steps, then the schedule down to `min`.
pub fn lr_at(schedule: Schedule, step: u64, total: u64, warmup: u64, peak: f64, min: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let last = total.saturating_sub(1).max(warmup);
    match schedule {
        Schedule::Constant => peak,
        Schedule::Cosine => {
            let span = (last - warmup).max(1) as f64;
            let p = ((step - warmup) as f64 / span).min(1.0);
            min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * p).cos())
        }
        Schedule::Wsd { decay_fraction } => {
            let decay = ((total as f64 * decay_fraction).round() as u64).min(total - warmup);
            let start = total - decay;
            if step < start || decay == 0 {
                peak
            } else {
                let p = ((step - start + 1) as f64 / decay as f64).min(1.0);
                peak + (min - peak) * p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_endpoints() {
        let s = Schedule::Cosine;
        assert!((lr_at(s, 0, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(s, 9, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(s, 10, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(s, 99, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        // Halfway through the decay: the mean of peak and min.
        let mid = 10 + 89 / 2;
        let want = 0.1 + 0.45 * (1.0 + (std::f64::consts::PI * 44.0 / 89.0).cos());
        assert!((lr_at(s, mid, 100, 10, 1.0, 0.1) - want).abs() < 1e-12);
    }

    #[test]
    fn wsd_is_flat_then_linear() {
        let s = Schedule::Wsd {
            decay_fraction: 0.2,
        };
        assert_eq!(lr_at(s, 50, 100, 10, 1.0, 0.0), 1.0);
        assert_eq!(lr_at(s, 79, 100, 10, 1.0, 0.0), 1.0);
        assert!((lr_at(s, 80, 100, 10, 1.0, 0.0) - 0.95).abs() < 1e-12);
        assert!((lr_at(s, 99, 100, 10, 1.0, 0.0) - 0.0).abs() < 1e-12);
    }
}
