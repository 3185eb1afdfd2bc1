//! Fused CPU kernels with hand-written backward passes for the training hot spots: causal GQA
//! attention with rotary embeddings, RMSNorm, SwiGLU, masked cross-entropy and the placement of
//! image patches. candle differentiates a composition node by node, allocating a zero gradient
//! plus a sum for every node and materialising every `[B, heads, T, T]` intermediate of the
//! softmax; one custom op per block does the same arithmetic in a few passes (see the
//! "Performance" section of `docs/model.md`).
//!
//! Every op here is a `candle_core::CustomOp{1,2,3}` whose `bwd` is called by candle's
//! backprop. Only CPU f32/f64 tensors are served ([`supported`]); callers fall back to the
//! elementary compositions for other dtypes and devices. Work is split into a fixed partition
//! (per batch row and key/value head, or fixed row chunks) and every reduction is summed in a
//! fixed order, so results do not depend on thread scheduling (exact resume needs that).
//!
//! One file per op family, as candle keeps its kernels: `linear.rs`, `attention.rs`,
//! `rms_norm.rs`, `swiglu.rs`, `cross_entropy.rs` and `place_rows.rs`; `real.rs` holds the
//! element types ([`Real`]), `cpu.rs` storage access and `gemm.rs` the strided matrix products
//! they share.

mod attention;
mod cpu;
mod cross_entropy;
mod linear;
mod place_rows;
mod real;
mod rms_norm;
mod swiglu;
#[cfg(test)]
mod test_support;

pub use attention::{attention, AttentionShape};
pub use cpu::supported;
pub use cross_entropy::cross_entropy_sum;
pub use linear::linear;
pub use place_rows::place_rows;
pub use real::Real;
pub use rms_norm::rms_norm;
pub use swiglu::swiglu;
