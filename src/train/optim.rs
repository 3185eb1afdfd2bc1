//! AdamW over flat f32 buffers, with f32 master weights, decoupled weight decay only on
//! matrices (not on biases and norm gains), and global-norm gradient clipping.
//!
//! candle's own `AdamW` has no parameter groups and no clipping (CRATES.md). Keeping the state
//! as one flat `Vec<f32>` per parameter also makes it trivial to checkpoint, and is the layout
//! bucketed all-reduce and ZeRO-1 sharding work on.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::{ModelError, Params};

/// AdamW hyperparameters (PyTorch names and defaults, except the LLM-usual β₂ and decay).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay (applied as `w ← w − lr·λ·w`).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// AdamW's constants for one update (bias corrections folded in), applied element by element
/// by both the replicated [`AdamW`] and the ZeRO-1 shards, so the two compute identical bits.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    bc2_sqrt: f32,
    decay: f32,
}

impl AdamWStep {
    /// The constants of update number `step` (1-based) with learning rate `lr`.
    pub fn new(c: &AdamWConfig, step: u64, lr: f64) -> Self {
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        Self {
            b1: c.beta1 as f32,
            b2: c.beta2 as f32,
            eps: c.eps as f32,
            step_size: (lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            decay: (1.0 - lr * c.weight_decay) as f32,
        }
    }

    /// Updates one weight `w` with moments `m`, `v` from gradient `g`; `decays` applies the
    /// decoupled weight decay.
    #[inline]
    pub fn apply(&self, w: &mut f32, m: &mut f32, v: &mut f32, g: f32, decays: bool) {
        *m = self.b1 * *m + (1.0 - self.b1) * g;
        *v = self.b2 * *v + (1.0 - self.b2) * g * g;
        let denom = v.sqrt() / self.bc2_sqrt + self.eps;
        let decay = if decays { self.decay } else { 1.0 };
        *w = *w * decay - self.step_size * *m / denom;
    }
}

/// Optimiser state: master weights and both moments, one flat buffer per parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Hyperparameters.
    pub config: AdamWConfig,
    /// Updates applied so far (for bias correction).
    pub step: u64,
    /// f32 master copy of every parameter.
    pub master: Vec<Vec<f32>>,
    /// First moments.
    pub exp_avg: Vec<Vec<f32>>,
    /// Second moments.
    pub exp_avg_sq: Vec<Vec<f32>>,
    decays: Vec<bool>,
}

/// Flattens the gradient of every parameter to f32 (zeros for a parameter the loss did not
/// reach, e.g. the projector of a text-only batch).
pub fn flat_grads(params: &Params, grads: &GradStore) -> Result<Vec<Vec<f32>>, ModelError> {
    params
        .vars()
        .iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => Ok(vec![0.0; v.elem_count()]),
        })
        .collect()
}

/// Adds `src` into `acc` element by element (gradient accumulation).
pub fn accumulate(acc: &mut [Vec<f32>], src: &[Vec<f32>]) {
    for (a, s) in acc.iter_mut().zip(src) {
        for (x, y) in a.iter_mut().zip(s) {
            *x += *y;
        }
    }
}

/// The global L2 norm of all gradients (accumulated in f64).
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt()
}

/// Scales the gradients so their global norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when that is below 1). Returns the
/// norm before clipping.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 {
        let f = max_norm / (norm + 1e-6);
        if f < 1.0 {
            for g in grads.iter_mut() {
                for x in g.iter_mut() {
                    *x = (*x as f64 * f) as f32;
                }
            }
        }
    }
    norm
}

impl AdamW {
    /// Fresh state for `params` (moments zero, master = current values).
    pub fn new(params: &Params, config: AdamWConfig) -> Result<Self, ModelError> {
        let master = params
            .vars()
            .iter()
            .map(|v| Ok(v.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let zeros: Vec<Vec<f32>> = master.iter().map(|m| vec![0.0; m.len()]).collect();
        Ok(Self {
            config,
            step: 0,
            exp_avg: zeros.clone(),
            exp_avg_sq: zeros,
            master,
            decays: params.specs().iter().map(|s| s.decays()).collect(),
        })
    }

    /// Restores saved state (shapes checked against `params` by the caller's loader).
    pub fn from_parts(
        params: &Params,
        config: AdamWConfig,
        step: u64,
        master: Vec<Vec<f32>>,
        exp_avg: Vec<Vec<f32>>,
        exp_avg_sq: Vec<Vec<f32>>,
    ) -> Self {
        Self {
            config,
            step,
            master,
            exp_avg,
            exp_avg_sq,
            decays: params.specs().iter().map(|s| s.decays()).collect(),
        }
    }

    /// One update with learning rate `lr` from (already clipped) gradients, then writes the
    /// master weights back into the model's parameters (cast to their dtype).
    pub fn step(&mut self, params: &Params, grads: &[Vec<f32>], lr: f64) -> Result<(), ModelError> {
        self.step += 1;
        let k = AdamWStep::new(&self.config, self.step, lr);
        for (i, var) in params.vars().iter().enumerate() {
            let decays = self.decays[i];
            let (w, m, v, g) = (
                &mut self.master[i],
                &mut self.exp_avg[i],
                &mut self.exp_avg_sq[i],
                &grads[i],
            );
            // Elementwise, so splitting into chunks over threads changes no result.
            const CHUNK: usize = 1 << 14;
            w.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((w, m), v), g)| {
                    for j in 0..w.len() {
                        k.apply(&mut w[j], &mut m[j], &mut v[j], g[j], decays);
                    }
                });
            let t = Tensor::from_slice(w, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Qwen2Config;
    use candle_core::Device;

    /// Two AdamW steps on one scalar against the update rule written out in f64 (PyTorch's
    /// `torch.optim.AdamW` with `amsgrad=False`).
    #[test]
    fn matches_pytorch_update_rule() {
        let mut cfg = Qwen2Config::tiny();
        cfg.num_hidden_layers = 1;
        let params = Params::init(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
        let c = AdamWConfig::default();
        let mut opt = AdamW::new(&params, c).unwrap();
        let w0: Vec<Vec<f32>> = opt.master.clone();
        let grads: Vec<Vec<f32>> = w0
            .iter()
            .map(|w| {
                w.iter()
                    .enumerate()
                    .map(|(j, _)| 0.01 * (j % 7) as f32 - 0.03)
                    .collect()
            })
            .collect();
        let lrs = [1e-3, 5e-4];
        for lr in lrs {
            opt.step(&params, &grads, lr).unwrap();
        }
        for (i, spec) in params.specs().iter().enumerate() {
            for j in [0usize, w0[i].len() / 2, w0[i].len() - 1] {
                let g = grads[i][j] as f64;
                let (mut w, mut m, mut v) = (w0[i][j] as f64, 0.0, 0.0);
                for (k, lr) in lrs.iter().enumerate() {
                    let t = (k + 1) as i32;
                    if spec.decays() {
                        w *= 1.0 - lr * c.weight_decay;
                    }
                    m = c.beta1 * m + (1.0 - c.beta1) * g;
                    v = c.beta2 * v + (1.0 - c.beta2) * g * g;
                    let mh = m / (1.0 - c.beta1.powi(t));
                    let vh = v / (1.0 - c.beta2.powi(t));
                    w -= lr * mh / (vh.sqrt() + c.eps);
                }
                assert!(
                    (opt.master[i][j] as f64 - w).abs() < 1e-6,
                    "{} {j}",
                    spec.name
                );
            }
        }
        // The model's variables carry the master weights.
        let p0 = params.vars()[0]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(p0, opt.master[0]);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        let n = clip_global_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-9);
        assert!((global_norm(&g) - 1.0).abs() < 1e-5);
        let mut small = vec![vec![0.3f32]];
        clip_global_norm(&mut small, 1.0);
        assert_eq!(small[0][0], 0.3);
    }
}
