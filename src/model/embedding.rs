//! Token embedding, the LM head (tied or untied) and the linear-layer helper every part uses.

use candle_core::{Result, Tensor};

use super::fused;

/// `x Wᵀ + b` for `x` of shape `[N, in]` and `W` of shape `[out, in]` (PyTorch layout).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// [`linear`] through the fused kernel ([`fused::linear`], CPU f32/f64 only) when `fused`.
pub fn linear_as(x: &Tensor, w: &Tensor, b: Option<&Tensor>, fused: bool) -> Result<Tensor> {
    match fused {
        true => fused::linear(x, w, b),
        false => linear(x, w, b),
    }
}

/// Embedding lookup: `ids` (u32, `[N]`) → rows of `table` (`[V, H]`) → `[N, H]`.
pub fn embed(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    table.index_select(ids, 0)
}

/// Logits `h Wᵀ` for hidden rows `h` (`[N, H]`) with the head `W` (`[V, H]`; the embedding
/// table when tied) → `[N, V]`.
pub fn lm_head(h: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear(h, w, None)
}
