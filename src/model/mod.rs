//! The built-in model: a Qwen2-architecture decoder with a LLaVA-style vision projector, in
//! candle (see `docs/model.md` for the equations this code implements).
//!
//! One file per part, composed in [`qwen2`]. The model maps token ids (and image patch
//! features at given positions) to logits and knows nothing of ranks, devices or the corpus:
//! parallelism and data loading are applied from outside (`src/train/`).
//!
//! Only differentiable compositions are used in training paths: candle's fused norm, softmax
//! and rope kernels pass no gradient (see `../shared/CRATES.md`), so [`norm`], [`rotary`] and
//! [`attention`] are built from elementary ops or from custom ops with a hand-written backward.

pub mod attention;
pub mod config;
pub mod embedding;
pub mod error;
pub mod fused;
pub mod mlp;
pub mod norm;
pub mod projector;
pub mod qwen2;
pub mod rotary;
pub mod weights;

pub use config::Qwen2Config;
pub use error::ModelError;
pub use qwen2::{ImageInput, ImageRows, Qwen2Model};
pub use weights::{ParamSpec, Params};
