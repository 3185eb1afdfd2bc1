//! Chameleon's flags (`--chameleon-mode`, `--chameleon-lambda`, `--chameleon-temperature`,
//! `--chameleon-task-scale`), shared by `suggest` and `search` like [`super::runtime`]: each
//! overrides one field of `ChameleonParams` (`[search.chameleon]` for `search`).

use clap::Args;
use mixatlas::baselines::chameleon::{ChameleonMode, ChameleonParams};

/// Chameleon's settings on the command line (used with `--method chameleon`).
#[derive(Debug, Args, Default)]
pub struct ChameleonArgs {
    /// Chameleon: pretrain (inverse leverage, common cells up) or finetune (leverage).
    #[arg(long, value_enum)]
    pub chameleon_mode: Option<ChameleonMode>,
    /// Chameleon: ridge λ of the leverage scores (times the number of cells).
    #[arg(long)]
    pub chameleon_lambda: Option<f64>,
    /// Chameleon: softmax temperature (default: 5 pretrain, 0.2 finetune).
    #[arg(long)]
    pub chameleon_temperature: Option<f64>,
    /// Chameleon: weight of a one-hot task indicator appended to each cell's mean CLIP
    /// embedding (0 = the embedding alone).
    #[arg(long)]
    pub chameleon_task_scale: Option<f64>,
}

impl ChameleonArgs {
    /// `base` with the flags given applied over it.
    pub fn apply(&self, mut base: ChameleonParams) -> ChameleonParams {
        if let Some(m) = self.chameleon_mode {
            base.mode = m;
        }
        if let Some(l) = self.chameleon_lambda {
            base.lambda = l;
        }
        if let Some(t) = self.chameleon_temperature {
            base.temperature = Some(t);
        }
        if let Some(s) = self.chameleon_task_scale {
            base.task_scale = s;
        }
        base
    }
}
